"""Rekor frontend processes: more than one core for Rekor's HTTP on one machine.

One Python process serves at most about 2,200 Rekor v2 writes/s on this project's
2-core benchmark machine: its event loop (HTTP parsing, the ASGI app) is the
bottleneck, not the log. ``sigstack up --rekor-frontends N`` starts N more
processes that listen on Rekor's port beside the main process (``SO_REUSEPORT``:
the kernel spreads new connections over the N+1 sockets). A frontend:

* answers ``POST /api/v2/log/entries`` itself: parses the request and verifies its
  signatures with the same code as the main process (:class:`RekorWriter`), then
  sends the verified canonical entry over its private channel
  (:mod:`sigstack.stack.logchannel`) to the main process, which logs it; the 201,
  with its inclusion proof and checkpoint, is built in the frontend;
* forwards every other request (Rekor v1, the v2 read path, ``/healthz``,
  ``/metrics``, ``/openapi.json``) unchanged to the main process's Rekor app on a
  private loopback listener, and relays the answer;
* holds no key and no log state: the main process alone sequences, stores and
  signs, so the log's guarantees are the same with or without frontends.

The main process (:class:`FrontendPool`) starts the frontends once its own Rekor
serves, waits until each says it serves (``sigstack up`` fails if one cannot
start), restarts one that dies (with a growing pause, logged; meanwhile the main
process still serves the port), and stops them before the logs close: SIGTERM,
in-flight requests finish, then the channel closes. A frontend exits when its
channel closes (the main process is gone) and ignores SIGINT (Ctrl-C reaches the
whole process group; the main process stops it in order).

``/metrics`` is the main process's: entry writes answered by frontends are not
counted there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from sigstack.core.errors import SigstackError, Unavailable
from sigstack.log.engine import TransparencyLog
from sigstack.services.http import (
    FastRoute,
    HostGuard,
    error_response,
    receive_body,
    with_fast_routes,
)
from sigstack.services.rekor.api import MAX_ENTRY_BYTES
from sigstack.services.rekor.service import RekorWriter
from sigstack.stack.logchannel import LogChannelServer, RemoteLog
from sigstack.stack.supervisor import GRACE_PERIOD, QuietServer, bind_socket, server_config

log = logging.getLogger("sigstack.frontend")

START_TIMEOUT = 30.0
"""Seconds a frontend may take to say it serves."""
RESTART_PAUSES = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Pauses before restarting a frontend that died, growing while it keeps dying."""
STABLE_AFTER = 60.0
"""A frontend that ran this long before dying is restarted after the shortest pause."""
PROXY_BODY_LIMIT = 2 * 1024 * 1024
"""Largest request body a frontend forwards (every Rekor route takes at most 1 MiB)."""
PROXY_TIMEOUT = 120.0
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


# --- inside a frontend process ---------------------------------------------------------------


class _Forward:
    """ASGI app relaying requests to the main process's private Rekor listener."""

    def __init__(self, base_url: str) -> None:
        self._base_url = base_url
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            body = await receive_body(scope, receive, PROXY_BODY_LIMIT)
        except SigstackError as exc:
            await error_response(exc)(scope, receive, send)
            return
        if body is None:  # the client went away
            return
        target = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP]
        client = self._client
        assert client is not None, "lifespan startup opens the client"
        request = client.build_request(scope["method"], target, headers=headers, content=body)
        try:
            upstream = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            log.warning("frontend: the main Rekor process did not answer: %s", exc)
            await error_response(Unavailable("Rekor is restarting or overloaded; retry shortly"))(
                scope, receive, send
            )
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": upstream.status_code,
                    "headers": [
                        (k.lower(), v)
                        for k, v in upstream.headers.raw
                        if k.lower() not in HOP_BY_HOP
                    ],
                }
            )
            async for chunk in upstream.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await upstream.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._client = httpx.AsyncClient(
                    base_url=self._base_url, timeout=PROXY_TIMEOUT, trust_env=False
                )
                # Only what the client sent goes upstream: no added User-Agent or
                # Accept-Encoding (an answer compressed for a client that did not
                # ask for it would be relayed as is).
                self._client.headers.clear()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def frontend_app(
    remote: RemoteLog, log_id: bytes, upstream: str, allowed_hosts: Sequence[str]
) -> ASGIApp:
    """A frontend's ASGI app (see the module docstring)."""
    writer = RekorWriter(remote, log_id)
    fast = FastRoute(
        "/api/v2/log/entries", writer.create_entry_json, status=201, body_limit=MAX_ENTRY_BYTES
    )
    return HostGuard(with_fast_routes(_Forward(upstream), "rekor", [fast]), allowed_hosts)


async def _run_frontend(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    lost = asyncio.Event()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    channel = socket.socket(fileno=args.channel_fd)
    channel.setblocking(False)
    _, remote = await loop.connect_accepted_socket(lambda: RemoteLog(on_lost=lost.set), channel)
    sock = bind_socket("rekor", args.host, args.port, reuse_port=True)
    app = frontend_app(remote, bytes.fromhex(args.log_id), args.upstream, args.allowed_host)
    server = QuietServer(server_config(app, access_log=args.verbose))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done() or lost.is_set():
            break
        await asyncio.sleep(0.01)
    else:
        remote.ready()
    waits = [asyncio.create_task(e.wait()) for e in (stop, lost)]
    await asyncio.wait([serving, *waits], return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()
    server.should_exit = True
    try:
        await asyncio.wait_for(serving, GRACE_PERIOD + 5)
    except (TimeoutError, SystemExit):
        return 1
    finally:
        remote.close()
        sock.close()
    return 0 if stop.is_set() else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of a frontend process (started by :class:`FrontendPool`)."""
    parser = argparse.ArgumentParser(prog="sigstack-rekor-frontend")
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--log-id", required=True)
    parser.add_argument("--allowed-host", action="append", default=[])
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format=f"%(asctime)s %(levelname)s %(name)s[{os.getpid()}]: %(message)s",
    )
    from sigstack.runtime import tune_gc

    tune_gc()
    return asyncio.run(_run_frontend(args))


# --- in the main process ---------------------------------------------------------------------


@dataclass(frozen=True)
class FrontendSpec:
    """What every frontend of one stack is told (see :func:`main`)."""

    host: str
    port: int
    upstream: str
    log_id: bytes
    allowed_hosts: tuple[str, ...]
    verbose: bool = False

    def argv(self, channel_fd: int) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "sigstack.stack.frontend",
            "--channel-fd",
            str(channel_fd),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--upstream",
            self.upstream,
            "--log-id",
            self.log_id.hex(),
        ]
        for host in self.allowed_hosts:
            args += ["--allowed-host", host]
        if self.verbose:
            args.append("--verbose")
        return args


class _Frontend:
    """One frontend process and its channel."""

    def __init__(self, proc: asyncio.subprocess.Process, channel: LogChannelServer) -> None:
        self.proc = proc
        self.channel = channel
        self.started = time.monotonic()


class FrontendPool:
    """Starts, restarts and stops ``count`` frontend processes for ``log``."""

    def __init__(self, log: TransparencyLog, spec: FrontendSpec, count: int) -> None:
        self._log = log
        self._spec = spec
        self._count = count
        self._running: dict[int, _Frontend] = {}
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        return [f.proc.pid for f in self._running.values()]

    async def start(self) -> None:
        """Start every frontend; raise ``Unavailable`` if one does not come up."""
        for slot in range(self._count):
            self._running[slot] = await self._spawn(slot)
            self._watchers.append(asyncio.create_task(self._watch(slot)))

    async def _spawn(self, slot: int) -> _Frontend:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        ready = asyncio.Event()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._spec.argv(theirs.fileno()), pass_fds=(theirs.fileno(),)
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        _, channel = await loop.connect_accepted_socket(
            lambda: LogChannelServer(self._log, on_ready=ready.set), ours
        )
        waits = [asyncio.create_task(ready.wait()), asyncio.create_task(proc.wait())]
        try:
            await asyncio.wait(waits, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            if not ready.is_set():  # failed, timed out, or stopping meanwhile: no orphan
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        if not ready.is_set():
            await proc.wait()
            channel.close()
            raise Unavailable(
                f"Rekor frontend {slot + 1} did not start (exit status {proc.returncode}); "
                "see its messages above"
            )
        return _Frontend(proc, channel)

    async def _watch(self, slot: int) -> None:
        failures = 0
        while not self._stopping:
            frontend = self._running[slot]
            code = await frontend.proc.wait()
            frontend.channel.close()
            if self._stopping:
                return
            if time.monotonic() - frontend.started >= STABLE_AFTER:
                failures = 0
            pause = RESTART_PAUSES[min(failures, len(RESTART_PAUSES) - 1)]
            failures += 1
            log.warning(
                "Rekor frontend %d (pid %d) exited with status %s; restarting in %.0f s",
                slot + 1,
                frontend.proc.pid,
                code,
                pause,
            )
            await asyncio.sleep(pause)
            while not self._stopping:
                try:
                    self._running[slot] = await self._spawn(slot)
                    break
                except (Unavailable, OSError) as exc:
                    log.warning("restarting Rekor frontend %d failed: %s", slot + 1, exc)
                    await asyncio.sleep(RESTART_PAUSES[-1])

    async def stop(self) -> None:
        """SIGTERM every frontend, let in-flight requests finish, then close the channels."""
        self._stopping = True
        for task in self._watchers:
            task.cancel()
        frontends = list(self._running.values())
        for f in frontends:
            if f.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    f.proc.send_signal(signal.SIGTERM)
        for f in frontends:
            try:
                await asyncio.wait_for(f.proc.wait(), GRACE_PERIOD + 5)
            except TimeoutError:
                log.warning("Rekor frontend pid %d did not stop; killing it", f.proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    f.proc.kill()
                await f.proc.wait()
            f.channel.close()
        self._running.clear()


if __name__ == "__main__":
    sys.exit(main())
