"""A minimal keep-alive HTTP/1.1 client on asyncio streams, for load generation.

Why not httpx: the load generator must spend its one core on requests, not on
client machinery. Measured on this project's 2-core machine (Python 3.11, httpx
0.28; one process POSTing 700-byte bodies as fast as it can to a trivial
fixed-answer asyncio server in another process; ``python -m
sigstack.ops.bench.httpclient`` re-measures):

=========================================  ==============  ===================
client, 64 concurrent connections           requests/s      client CPU/request
=========================================  ==============  ===================
``httpx.AsyncClient``, one shared pool      ~130            ~7,900 us
``httpx.AsyncClient``, one per connection   ~1,100          ~900 us
:class:`HttpConnection` (this module)       ~19,000         ~51 us
=========================================  ==============  ===================

(With one connection: httpx ~1,050/s, this client ~5,200/s, latency-bound.) A
shared httpx pool degrades as concurrency grows, and even one client per
connection costs ~0.9 ms of CPU per request (request/response objects, URL
parsing, anyio locks, the h11 state machine), which caps a one-core generator
near 1,100 requests/s, below the rates this benchmark must offer. This client
costs ~50 us, so the generator reaches several thousand writes/s on one core
with CPU to spare for readers.

What it does, and no more:

* one connection = one request at a time (HTTP/1.1 keep-alive, no pipelining);
  a load generator runs one :class:`HttpConnection` per concurrent writer or reader;
* ``Host`` is always sent as given at construction (sigstack services refuse a
  ``Host`` that is not their own);
* answers framed by ``Content-Length``, ``Transfer-Encoding: chunked`` or the end
  of the connection; a ``Connection: close`` answer closes the socket and the next
  request reconnects;
* a GET that fails because a kept-alive connection was closed under it is retried
  once on a fresh connection; a POST is never retried (it may have been applied).

Every failure (refused, reset, timed out, malformed answer) raises
:class:`~sigstack.core.errors.UpstreamError` naming the target and the cause;
HTTP error statuses are returned, not raised: the caller decides what they mean.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sigstack.core.errors import InvalidRequest, UpstreamError

MAX_HEADER_BYTES = 64 * 1024
"""Largest answer head (status line and headers) accepted."""

MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest answer body accepted."""

DEFAULT_TIMEOUT = 60.0
"""Seconds a request may take, connection included (default of ``HttpConnection``)."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """An HTTP answer: status code, lower-cased header names, body."""

    status: int
    headers: dict[str, str]
    body: bytes


def split_url(url: str) -> tuple[str, int, str, str]:
    """``http://host:port/prefix`` -> ``(host, port, host_header, path_prefix)``.

    Only plain ``http`` is supported (the load generator targets loopback stacks).
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise InvalidRequest(f"{url!r} is not an http://host[:port] URL")
    port = parts.port or 80
    host_header = parts.netloc.rpartition("@")[2]
    return parts.hostname, port, host_header, parts.path.rstrip("/")


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; see the module docstring."""

    def __init__(
        self, host: str, port: int, host_header: str, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.host = host
        self.port = port
        self._host_header = host_header
        self._timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.requests = 0
        """Requests answered on this object (all connections)."""

    @classmethod
    def for_url(cls, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> tuple[HttpConnection, str]:
        """A connection to ``url``'s host and the URL's path prefix (no trailing slash)."""
        host, port, host_header, prefix = split_url(url)
        return cls(host, port, host_header, timeout=timeout), prefix

    async def connect(self) -> None:
        """Open the connection now (requests also open it on demand)."""
        if self._writer is None:
            try:
                self._reader, self._writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port, limit=MAX_HEADER_BYTES),
                    self._timeout,
                )
            except (OSError, TimeoutError) as exc:
                raise UpstreamError(
                    f"cannot connect to {self.host}:{self.port}: {_describe(exc)}"
                ) from exc

    async def close(self) -> None:
        """Close the connection (idempotent; the object may be reused)."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def get(self, path: str) -> HttpResponse:
        """GET ``path``; retried once on a fresh connection if a stale one failed."""
        reused = self._writer is not None
        try:
            return await self.request("GET", path)
        except UpstreamError:
            if not reused:
                raise
        return await self.request("GET", path)

    async def post(self, path: str, body: bytes, content_type: str) -> HttpResponse:
        """POST ``body`` to ``path`` (never retried)."""
        return await self.request("POST", path, body, content_type)

    async def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> HttpResponse:
        """Send one request and read its answer; raises ``UpstreamError`` on failure."""
        head = f"{method} {path} HTTP/1.1\r\nHost: {self._host_header}\r\n"
        if body is not None:
            head += f"Content-Length: {len(body)}\r\n"
            if content_type:
                head += f"Content-Type: {content_type}\r\n"
        data = (head + "\r\n").encode("latin-1")
        if body:
            data += body
        try:
            async with asyncio.timeout(self._timeout):  # unlike wait_for, no task per request
                return await self._exchange(data)
        except UpstreamError:
            await self.close()
            raise
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            await self.close()
            raise UpstreamError(
                f"{method} http://{self._host_header}{path} failed: {_describe(exc)}"
            ) from exc

    async def _exchange(self, data: bytes) -> HttpResponse:
        await self.connect()
        reader, writer = self._reader, self._writer
        assert reader is not None and writer is not None
        writer.write(data)
        await writer.drain()
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise UpstreamError(
                f"http://{self._host_header}: answer head is over {MAX_HEADER_BYTES} bytes"
            ) from exc
        lines = raw[:-4].decode("latin-1").split("\r\n")
        status_line = lines[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
            raise UpstreamError(f"http://{self._host_header}: not an HTTP/1.x answer: {lines[0]!r}")
        status = int(status_line[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise UpstreamError(f"http://{self._host_header}: malformed header {line!r}")
            headers[name.strip().lower()] = value.strip()
        length = headers.get("content-length")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked(reader)
        elif length is not None:
            size = int(length)
            if not 0 <= size <= MAX_BODY_BYTES:
                raise UpstreamError(f"http://{self._host_header}: body of {size} bytes refused")
            body = await reader.readexactly(size) if size else b""
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            body = await reader.read(MAX_BODY_BYTES + 1)
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            await self.close()
        self.requests += 1
        return HttpResponse(status, headers, body)

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                raise UpstreamError(f"http://{self._host_header}: chunked body too large")
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed before the answer was complete"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


# --- measuring this client against httpx: python -m sigstack.ops.bench.httpclient ------------

_FIXED_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def _fixed_server(conn: Any) -> None:  # pragma: no cover - runs in a child process
    """Answer every request with the same 200, as cheaply as asyncio allows."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":", 1)[1]))
                writer.write(_FIXED_ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        conn.send(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    asyncio.run(main())


async def _drive(calls: list[Callable[[], Awaitable[object]]], seconds: float) -> dict[str, float]:
    """Run each call in a loop concurrently for ``seconds``; requests/s and CPU per request."""
    stop = time.monotonic() + seconds
    count = 0

    async def loop(call: Callable[[], Awaitable[object]]) -> None:
        nonlocal count
        while time.monotonic() < stop:
            await call()
            count += 1

    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.gather(*(loop(c) for c in calls))
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    return {"requests_per_s": round(count / wall), "cpu_us_per_request": round(cpu / count * 1e6)}


async def measure_clients(port: int, connections: int, seconds: float) -> dict[str, Any]:
    """POST a 700-byte body to ``127.0.0.1:port`` over ``connections`` connections with
    httpx (one shared pooled client; one client per connection) and with this client."""
    import httpx  # only for the comparison

    body, url = b"x" * 700, f"http://127.0.0.1:{port}/"
    headers = {"content-type": "application/json"}
    results: dict[str, Any] = {"connections": connections}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, trust_env=False) as shared:
        results["httpx_shared_client"] = await _drive(
            [lambda: shared.post(url, content=body, headers=headers)] * connections, seconds
        )
    clients = [httpx.AsyncClient(trust_env=False) for _ in range(connections)]
    results["httpx_client_per_connection"] = await _drive(
        [functools.partial(c.post, url, content=body, headers=headers) for c in clients], seconds
    )
    for c in clients:
        await c.aclose()
    conns = [HttpConnection("127.0.0.1", port, f"127.0.0.1:{port}") for _ in range(connections)]
    results["asyncio_streams"] = await _drive(
        [functools.partial(c.post, "/", body, "application/json") for c in conns], seconds
    )
    for conn in conns:
        await conn.close()
    return results


def main() -> None:  # pragma: no cover - a measurement, run by hand
    import json
    import multiprocessing

    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_fixed_server, args=(child,), daemon=True)
    server.start()
    try:
        port = parent.recv()
        for connections in (1, 16, 64):
            print(json.dumps(asyncio.run(measure_clients(port, connections, 3.0))))
    finally:
        server.kill()


if __name__ == "__main__":  # pragma: no cover
    main()
