"""Run several ASGI services in one process, each on its own port, with readiness gates.

Guarantees:

* Every listening socket is bound before anything starts, so a busy port is a clear
  error naming the service and the flag that moves it, and nothing is half-started.
* Services start in the order given; a service counts as started only when its
  ``GET /healthz`` answers 200 over real HTTP on its own socket (the check ignores
  proxy settings in the environment: these are loopback calls to ourselves). The
  supervisor reports the first failure with the service's name and reason.
* ``stop()`` shuts services down in dependency waves: first every service no other
  running service depends on, then their dependencies, and so on; each wave stops
  concurrently and lets in-flight requests finish (bounded by a grace period). So a
  request in flight through a service never finds its dependency gone. Safe to call
  more than once.
* Each server accepts at most ``MAX_CONNECTIONS`` concurrent connections and answers
  503 beyond that, so one flooded service cannot starve the process of descriptors.

HTTP/1.1 is parsed by httptools (llhttp, in C) rather than h11, with a bounded request
head and a deadline for receiving it (:mod:`sigstack.stack.httpproto`): at full load
h11 was a quarter of Rekor's request CPU, and the C parser lifted the most entries/s
one process sustains from about 1,850 to about 2,450.

uvicorn normally installs its own signal handlers per server; with several servers
in one loop they would fight, so servers here never touch signals: the owner of the
loop (``sigstack up``) handles SIGINT/SIGTERM and calls ``stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass

import httpx
import uvicorn
from starlette.types import ASGIApp

from sigstack.core.errors import ConfigError, Unavailable
from sigstack.stack.httpproto import BoundedHttpToolsProtocol

log = logging.getLogger("sigstack.supervisor")

HEALTH_TIMEOUT = 20.0
GRACE_PERIOD = 5
MAX_CONNECTIONS = 4096


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the supervisor."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind_socket(service: str, host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket for ``service`` on host:port, or a ConfigError saying why not.

    With ``reuse_port`` other sockets of this user may listen on the same port too
    (``SO_REUSEPORT``): the kernel spreads new connections over them (Rekor's
    frontend processes, :mod:`sigstack.stack.frontend`).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve host {host!r} for {service}: {exc}") from exc
    family, socktype, proto, _, address = infos[0]
    # The protocol must be IPPROTO_TCP, not 0: asyncio disables Nagle's algorithm on
    # accepted connections only when it is. With Nagle on, an answer written as two
    # segments (head, then body) on a kept-alive connection waits ~40 ms for the
    # client's delayed ACK.
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is already in use (needed by {service}); stop whatever "
                f"holds it or pick another port with --{service}-port or --base-port"
            ) from exc
        raise ConfigError(f"cannot listen on {host}:{port} for {service}: {exc.strerror}") from exc
    return sock


def server_config(app: ASGIApp, *, access_log: bool) -> uvicorn.Config:
    """How every sigstack HTTP server runs (in this process or a Rekor frontend)."""
    return uvicorn.Config(
        app,
        log_level="info" if access_log else "warning",
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=GRACE_PERIOD,
        server_header=False,
        # Only the access log shows the client address that X-Forwarded-For rewrites;
        # without it, that middleware is per-request work for nothing.
        proxy_headers=access_log,
        limit_concurrency=MAX_CONNECTIONS,
        http=BoundedHttpToolsProtocol,  # see the module docstring
    )


@dataclass
class _Running:
    name: str
    url: str
    server: QuietServer
    task: asyncio.Task[None]
    sock: socket.socket
    depends_on: frozenset[str]


class Supervisor:
    """Starts ASGI apps on pre-bound sockets and stops them in reverse order."""

    def __init__(self, *, access_log: bool = False) -> None:
        self._running: list[_Running] = []
        self._access_log = access_log
        self._client: httpx.AsyncClient | None = None

    async def start(
        self,
        name: str,
        app: ASGIApp,
        sock: socket.socket,
        url: str,
        depends_on: Iterable[str] = (),
    ) -> float:
        """Serve ``app`` on ``sock`` and wait until ``url``/healthz answers 200.

        ``depends_on`` names started services this one calls; they are stopped after
        it. Returns the seconds it took. Raises ``Unavailable`` if the service dies or
        never becomes healthy.
        """
        deps = frozenset(depends_on)
        unknown = deps - {r.name for r in self._running}
        if unknown:
            raise Unavailable(f"{name} depends on {', '.join(sorted(unknown))}, not started yet")
        started_at = time.perf_counter()
        server = QuietServer(server_config(app, access_log=self._access_log))
        task = asyncio.create_task(self._serve(server, sock), name=f"serve-{name}")
        self._running.append(_Running(name, url, server, task, sock, deps))
        await self._wait_healthy(name, url, task)
        return time.perf_counter() - started_at

    @staticmethod
    async def _serve(server: QuietServer, sock: socket.socket) -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:  # uvicorn exits on lifespan startup failure
            raise Unavailable(f"server exited during startup (code {exc.code})") from None

    async def _wait_healthy(self, name: str, url: str, task: asyncio.Task[None]) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT
        last = "no answer yet"
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=2.0, trust_env=False)
        client = self._client
        while time.monotonic() < deadline:
            if task.done():
                exc = task.exception()
                raise Unavailable(f"{name} stopped while starting: {exc or 'exited'}")
            try:
                resp = await client.get(f"{url}/healthz")
                if resp.status_code == 200:
                    return
                last = f"/healthz answered {resp.status_code}: {resp.text[:200]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.02)
        raise Unavailable(f"{name} did not become healthy within {HEALTH_TIMEOUT:.0f}s ({last})")

    async def wait_any_exit(self) -> str | None:
        """Wait until one server task ends on its own; return its name."""
        if not self._running:
            return None
        done, _ = await asyncio.wait(
            [r.task for r in self._running], return_when=asyncio.FIRST_COMPLETED
        )
        for r in self._running:
            if r.task in done:
                return r.name
        return None

    async def stop(self) -> None:
        """Stop every started service in dependency waves (see the module docstring)."""
        running, self._running = self._running, []
        while running:
            needed = set().union(*(r.depends_on for r in running))
            wave = [r for r in running if r.name not in needed]
            running = [r for r in running if r.name in needed]
            await self._stop_wave(wave)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @staticmethod
    async def _stop_wave(wave: list[_Running]) -> None:
        for r in wave:
            r.server.should_exit = True
        results = await asyncio.gather(
            *(asyncio.wait_for(r.task, timeout=GRACE_PERIOD + 5) for r in wave),
            return_exceptions=True,
        )
        for r, result in zip(wave, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                # A crashed server must not block the others' shutdown; say what happened.
                log.warning("%s stopped with an error: %s", r.name, result)
            r.sock.close()
