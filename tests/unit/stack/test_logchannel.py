"""The channel between Rekor frontend processes and the log: a real log on one end,
the frontend's RemoteLog on the other, over a real socketpair; and the pool that
starts real frontend processes."""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from sigstack.core.errors import Overloaded, SigstackError, Unavailable
from sigstack.core.merkle import leaf_hash, verify_inclusion
from sigstack.core.note import Ed25519NoteSigner
from sigstack.log.engine import Entry, TransparencyLog
from sigstack.log.memory import MemoryStorage
from sigstack.stack import logchannel
from sigstack.stack.frontend import FrontendPool, FrontendSpec
from sigstack.stack.logchannel import LogChannelServer, RelayedError, RemoteLog

ORIGIN = "rekor.example.test"


def _sync(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in its own event loop (fixtures pass through)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


@asynccontextmanager
async def _channel(
    log: Any, on_lost: Callable[[], None] | None = None
) -> AsyncIterator[tuple[LogChannelServer, RemoteLog]]:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    ready = asyncio.Event()
    _, server = await loop.connect_accepted_socket(
        lambda: LogChannelServer(log, on_ready=ready.set), ours
    )
    _, remote = await loop.connect_accepted_socket(lambda: RemoteLog(on_lost=on_lost), theirs)
    remote.ready()
    await asyncio.wait_for(ready.wait(), 5)
    try:
        yield server, remote
    finally:
        remote.close()
        server.close()


@pytest.fixture
def tlog() -> Any:
    storage = MemoryStorage()
    signer = Ed25519NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
    TransparencyLog.create(storage, signer, ORIGIN)
    log = TransparencyLog(storage, signer, ORIGIN, verifier=signer.verifier())
    log.open()
    yield log
    log.close()


@_sync
async def test_entries_sent_by_a_frontend_are_logged_with_proofs_that_verify(tlog: Any) -> None:
    async with _channel(tlog) as (_, remote):
        leaves = [f"entry {i}".encode() for i in range(200)]
        results = await asyncio.gather(*(remote.add(Entry(leaf, dedup=True)) for leaf in leaves))
        assert sorted(r.index for r in results) == list(range(200))
        for leaf, result in zip(leaves, results, strict=True):
            cp = result.checkpoint
            assert cp.origin == ORIGIN and not result.duplicate
            verify_inclusion(leaf_hash(leaf), result.index, cp.size, result.proof, cp.root_hash)
        # Entries of one batch share one checkpoint object (Rekor caches its JSON by identity).
        by_size = {r.checkpoint.size: r.checkpoint for r in results}
        assert all(r.checkpoint is by_size[r.checkpoint.size] for r in results)
        assert tlog.checkpoint().size == 200

        again = await remote.add(Entry(leaves[7], dedup=True))
        first = next(r for r in results if r.index == again.index)
        assert again.duplicate and first is not again
        assert tlog.checkpoint().size == 200  # nothing appended


@_sync
async def test_the_logs_errors_reach_the_frontend_with_their_status_and_headers() -> None:
    class Full:
        def submit(self, entry: Entry) -> Any:
            raise Overloaded("the log has 50000 entries waiting; retry shortly", retry_after=3)

    async with _channel(Full()) as (_, remote):
        with pytest.raises(RelayedError) as caught:
            await remote.add(Entry(b"x", dedup=True))
    assert caught.value.http_status == 503
    assert caught.value.headers == {"Retry-After": "3"}
    assert "retry shortly" in caught.value.message


@_sync
async def test_a_frontend_only_sends_rekor_entries() -> None:
    async with _channel(object()) as (_, remote):
        for entry in (Entry(b"x"), Entry(b"x", bundle=b"y", dedup=True)):
            with pytest.raises(SigstackError, match="Rekor entries only"):
                await remote.add(entry)


@_sync
async def test_waiting_entries_fail_as_unavailable_when_the_log_process_goes_away() -> None:
    submitted = asyncio.Event()

    class Stuck:
        def submit(self, entry: Entry) -> Any:
            submitted.set()
            from sigstack.log.receipt import Receipt

            return Receipt()  # never settled

    lost = asyncio.Event()
    async with _channel(Stuck(), on_lost=lost.set) as (server, remote):
        waiting = asyncio.create_task(remote.add(Entry(b"x", dedup=True)))
        await asyncio.wait_for(submitted.wait(), 5)
        server.close()  # the main process exits
        with pytest.raises(Unavailable, match="went away"):
            await asyncio.wait_for(waiting, 5)
        await asyncio.wait_for(lost.wait(), 5)
        with pytest.raises(Unavailable, match="not reachable"):
            await remote.add(Entry(b"y", dedup=True))


@pytest.mark.parametrize(
    "garbage",
    [
        (0).to_bytes(4, "big"),  # a frame too short to hold its kind and id
        (logchannel.MAX_FRAME + 1).to_bytes(4, "big"),  # larger than any entry
        logchannel.frame(99, 1, b"?"),  # an unknown kind
    ],
)
@_sync
async def test_a_malformed_frame_closes_the_channel(tlog: Any, garbage: bytes) -> None:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    lost = asyncio.Event()
    await loop.connect_accepted_socket(lambda: LogChannelServer(tlog, on_lost=lost.set), ours)
    try:
        await loop.sock_sendall(theirs, garbage)
        await asyncio.wait_for(lost.wait(), 5)
        theirs.setblocking(False)
        assert await loop.sock_recv(theirs, 10) == b""  # closed on the frontend too
    finally:
        theirs.close()
    assert tlog.checkpoint().size == 0


@_sync
async def test_a_frontend_refuses_an_answer_naming_a_checkpoint_never_sent() -> None:
    lost = asyncio.Event()
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    _, remote = await loop.connect_accepted_socket(lambda: RemoteLog(on_lost=lost.set), theirs)
    waiting = asyncio.create_task(remote.add(Entry(b"x", dedup=True)))
    await asyncio.sleep(0)
    payload = (0).to_bytes(8, "big") + (5).to_bytes(8, "big") + b"\x00"
    await loop.sock_sendall(ours, logchannel.frame(logchannel.ADDED, 1, payload))
    with pytest.raises(Unavailable):
        await asyncio.wait_for(waiting, 5)
    assert lost.is_set()
    ours.close()


def test_a_frontend_that_cannot_listen_fails_the_start_and_leaves_no_process(tlog: Any) -> None:
    # A port held without SO_REUSEPORT: the frontend cannot share it.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    spec = FrontendSpec(
        host="127.0.0.1",
        port=port,
        upstream="http://127.0.0.1:1",
        log_id=bytes(32),
        allowed_hosts=(f"127.0.0.1:{port}",),
    )

    async def scenario() -> list[int]:
        pool = FrontendPool(tlog, spec, 1)
        try:
            with pytest.raises(Unavailable, match="frontend 1 did not start") as caught:
                await pool.start()
            assert "exit status 1" in str(caught.value)
            return pool.pids
        finally:
            await pool.stop()

    try:
        assert asyncio.run(scenario()) == []
    finally:
        holder.close()
