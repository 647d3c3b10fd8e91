"""The private channel between Rekor frontend processes and the process that logs.

With ``sigstack up --rekor-frontends N``, N-1 extra processes answer Rekor's HTTP
port beside the main one (:mod:`sigstack.stack.frontend`). A frontend parses and
verifies each Rekor v2 entry itself; only the verified, canonical entry crosses
this channel to the main process, which holds the log (its sequencer, storage and
signing key) and answers with where the entry landed. Keys never leave the main
process.

The channel is one end of a ``socketpair`` that the main process created and
handed to exactly one child (no path in the filesystem, no port): whatever comes
over it was verified by sigstack code in a process sigstack started, so the main
process logs it as is, as it logs entries its own HTTP server verified.

Wire format: frames of a 4-byte big-endian length, then a 1-byte kind, a 4-byte
request id and the payload (the length counts kind, id and payload).

frontend -> main
  ``ADD``: the payload is an entry's leaf (its canonical bytes), logged with
  ``dedup`` as Rekor v2 logs entries. ``READY`` (id 0, no payload): the frontend
  serves HTTP.
main -> frontend
  ``CHECKPOINT`` (id 0): tree size (8) | root hash (32) | signed note. Sent before
  the first answer that names it.
  ``ADDED``: index (8) | checkpoint size (8) | duplicate (1) | proof hashes (32 each).
  ``FAILED``: JSON ``{"status", "message", "headers"}``: the error the log raised,
  answered over HTTP by the frontend exactly as the main process would answer it
  (503 with ``Retry-After`` when the log's queue is full, and so on).

Answers are written in batches: whatever became ready in one turn of the event
loop goes out in one write. A malformed frame ends the connection (the main
process then restarts that frontend).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections.abc import Callable
from typing import Any

from sigstack.core.errors import InvalidRequest, SigstackError, Unavailable
from sigstack.log.engine import Checkpoint, Entry, Integrated, TransparencyLog
from sigstack.log.receipt import loop_future

log = logging.getLogger("sigstack.frontend")

ADD = 1
CHECKPOINT = 2
ADDED = 3
FAILED = 4
READY = 5

HEADER = 4
"""Bytes of the length prefix."""
MAX_FRAME = 1 << 20
"""Largest frame accepted (an entry is at most 64 KiB; a checkpoint a few hundred bytes)."""
HASH = 32
KEPT_CHECKPOINTS = 64
"""Checkpoints a frontend remembers for answers still on their way."""


def frame(kind: int, request: int, payload: bytes = b"") -> bytes:
    """One frame of the wire format (see the module docstring)."""
    return (
        (5 + len(payload)).to_bytes(HEADER, "big")
        + kind.to_bytes(1, "big")
        + request.to_bytes(4, "big")
        + payload
    )


class _Framed(asyncio.Protocol):
    """Splits the byte stream into frames; batches outgoing frames per loop turn."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._inbox = bytearray()
        self._outbox: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        inbox = self._inbox
        inbox += data
        pos = 0
        while len(inbox) - pos >= HEADER:
            size = int.from_bytes(inbox[pos : pos + HEADER], "big")
            if not 5 <= size <= MAX_FRAME:
                self._broken(f"a frame of {size} bytes")
                return
            end = pos + HEADER + size
            if len(inbox) < end:
                break
            kind = inbox[pos + HEADER]
            request = int.from_bytes(inbox[pos + HEADER + 1 : pos + HEADER + 5], "big")
            payload = bytes(inbox[pos + HEADER + 5 : end])
            pos = end
            try:
                self.received(kind, request, payload)
            except _Malformed as exc:
                self._broken(str(exc))
                return
        del inbox[:pos]

    def received(self, kind: int, request: int, payload: bytes) -> None:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        if self.closed or self._transport is None:
            return
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(data)

    def _flush(self) -> None:
        out, self._outbox = self._outbox, []
        if out and not self.closed and self._transport is not None:
            self._transport.write(b"".join(out))

    def _broken(self, what: str) -> None:
        log.error("log channel: %s; closing the channel", what)
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def close(self) -> None:
        self._flush()
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


class _Malformed(Exception):
    pass


# --- the main process's side ---------------------------------------------------------------


class LogChannelServer(_Framed):
    """The main process's end of one frontend's channel: logs what it sends.

    ``on_ready`` is called when the frontend says it serves; ``on_lost`` when the
    channel closes (the frontend exited or broke the protocol).
    """

    def __init__(
        self,
        log: TransparencyLog,
        *,
        on_ready: Callable[[], None] | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._log = log
        self._on_ready = on_ready
        self._on_lost = on_lost
        self._sent: Checkpoint | None = None

    def received(self, kind: int, request: int, payload: bytes) -> None:
        if kind == ADD:
            self._add(request, payload)
        elif kind == READY:
            if self._on_ready is not None:
                self._on_ready()
        else:
            raise _Malformed(f"a frame of unknown kind {kind} from a frontend")

    def _add(self, request: int, leaf: bytes) -> None:
        try:
            receipt = self._log.submit(Entry(leaf, dedup=True))
        except SigstackError as exc:
            self._failed(request, exc)
            return
        loop_future(receipt).add_done_callback(lambda done: self._answer(request, done))

    def _answer(self, request: int, done: asyncio.Future[Integrated]) -> None:
        if self.closed:
            return
        if done.cancelled():
            self._failed(request, Unavailable("the log is shutting down; retry shortly"))
            return
        error = done.exception()
        if error is not None:
            if not isinstance(error, SigstackError):
                log.error("log channel: the log failed an entry: %r", error)
                error = SigstackError("internal server error")
            self._failed(request, error)
            return
        result = done.result()
        cp = result.checkpoint
        if cp is not self._sent:
            self._sent = cp
            self.send(frame(CHECKPOINT, 0, cp.size.to_bytes(8, "big") + cp.root_hash + cp.note))
        self.send(
            frame(
                ADDED,
                request,
                b"".join(
                    (
                        result.index.to_bytes(8, "big"),
                        cp.size.to_bytes(8, "big"),
                        b"\x01" if result.duplicate else b"\x00",
                        *result.proof,
                    )
                ),
            )
        )

    def _failed(self, request: int, error: SigstackError) -> None:
        doc = {"status": error.http_status, "message": error.message, "headers": error.headers}
        self.send(frame(FAILED, request, json.dumps(doc).encode()))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._on_lost is not None:
            self._on_lost()


# --- a frontend's side ---------------------------------------------------------------------


class RelayedError(SigstackError):
    """An error the main process's log raised for an entry a frontend sent it."""

    def __init__(self, status: int, message: str, headers: dict[str, str]) -> None:
        super().__init__(message, headers=headers)
        self.http_status = status


class RemoteLog(_Framed):
    """A frontend's end of the channel: ``add`` as :meth:`TransparencyLog.add` does,
    for Rekor v2 entries (leaf only, ``dedup``), answered by the main process.

    ``on_lost`` is called once the channel closes; every entry still waiting then
    fails with :class:`Unavailable` (its fate in the log is unknown to this process).
    """

    def __init__(self, *, on_lost: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._on_lost = on_lost
        self._waiting: dict[int, asyncio.Future[Integrated]] = {}
        self._checkpoints: collections.OrderedDict[int, Checkpoint] = collections.OrderedDict()
        self._next = 0

    def ready(self) -> None:
        """Tell the main process this frontend serves."""
        self.send(frame(READY, 0))

    async def add(self, entry: Entry) -> Integrated:
        if entry.bundle is not None or not entry.dedup:
            raise InvalidRequest("a frontend logs Rekor entries only (leaf, dedup)")
        if self.closed:
            raise Unavailable("the Rekor log process is not reachable; retry shortly")
        self._next = request = (self._next + 1) & 0xFFFFFFFF
        waiter: asyncio.Future[Integrated] = asyncio.get_running_loop().create_future()
        self._waiting[request] = waiter
        self.send(frame(ADD, request, entry.leaf))
        try:
            return await waiter
        finally:
            self._waiting.pop(request, None)

    def received(self, kind: int, request: int, payload: bytes) -> None:
        if kind == CHECKPOINT:
            self._checkpoint(payload)
            return
        if kind not in (ADDED, FAILED):
            raise _Malformed(f"a frame of unknown kind {kind} from the log process")
        # Parsed first: a malformed answer leaves its entry waiting, failed with the rest.
        if kind == ADDED:
            result = self._added(payload)
            waiter = self._waiting.pop(request, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(result)
        else:
            error = _relayed(payload)
            waiter = self._waiting.pop(request, None)
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)

    def _checkpoint(self, payload: bytes) -> None:
        if len(payload) < 8 + HASH:
            raise _Malformed("a short checkpoint frame")
        size = int.from_bytes(payload[:8], "big")
        note = payload[8 + HASH :]
        origin = note.split(b"\n", 1)[0].decode("utf-8", "replace")
        self._checkpoints[size] = Checkpoint(origin, size, payload[8 : 8 + HASH], note)
        self._checkpoints.move_to_end(size)
        while len(self._checkpoints) > KEPT_CHECKPOINTS:
            self._checkpoints.popitem(last=False)

    def _added(self, payload: bytes) -> Integrated:
        if len(payload) < 17 or (len(payload) - 17) % HASH:
            raise _Malformed(f"an answer of {len(payload)} bytes")
        index = int.from_bytes(payload[:8], "big")
        cp = self._checkpoints.get(int.from_bytes(payload[8:16], "big"))
        if cp is None or index >= cp.size:
            raise _Malformed("an answer naming a checkpoint never sent")
        proof = [payload[i : i + HASH] for i in range(17, len(payload), HASH)]
        return Integrated(index, cp, proof, payload[16] == 1)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            if not waiter.done():
                waiter.set_exception(
                    Unavailable("the Rekor log process went away; the entry may not be logged")
                )
        if self._on_lost is not None:
            self._on_lost()


def _relayed(payload: bytes) -> RelayedError:
    try:
        doc: Any = json.loads(payload)
        status, message, headers = int(doc["status"]), str(doc["message"]), doc["headers"]
        if not 400 <= status <= 599 or not isinstance(headers, dict):
            raise ValueError(status)
        return RelayedError(status, message, {str(k): str(v) for k, v in headers.items()})
    except (ValueError, KeyError, TypeError) as exc:
        raise _Malformed(f"a malformed error frame: {exc!r}") from exc
