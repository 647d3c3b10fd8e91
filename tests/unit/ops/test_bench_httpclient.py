"""The load generator's minimal HTTP/1.1 client: framing, keep-alive, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from sigstack.core.errors import InvalidRequest, UpstreamError
from sigstack.ops.bench.httpclient import HttpConnection, split_url

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length) if length else b""


def test_split_url() -> None:
    assert split_url("http://127.0.0.1:7704/") == ("127.0.0.1", 7704, "127.0.0.1:7704", "")
    assert split_url("http://localhost/x/") == ("localhost", 80, "localhost", "/x")
    with pytest.raises(InvalidRequest):
        split_url("https://example.com")


def test_keep_alive_framing_and_host_header() -> None:
    seen: list[bytes] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        head, body = await _read_request(reader)
        seen.append(head + body)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello")
        head, _ = await _read_request(reader)
        seen.append(head)
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"
        )
        await _read_request(reader)
        writer.write(b"HTTP/1.1 503 Busy\r\nRetry-After: 2\r\nConnection: close\r\n\r\n")
        writer.close()

    async def run() -> None:
        server, port = await _serve(handler)
        async with server:
            conn = HttpConnection("127.0.0.1", port, f"127.0.0.1:{port}")
            resp = await conn.post("/api/v2/log/entries", b'{"a":1}', "application/json")
            assert (resp.status, resp.body, resp.headers["x-a"]) == (201, b"hello", "b")
            resp = await conn.get("/api/v2/checkpoint")
            assert (resp.status, resp.body) == (200, b"abcde")
            resp = await conn.get("/x")
            assert (resp.status, resp.body, resp.headers["retry-after"]) == (503, b"", "2")
            await conn.close()
        assert connections == 1
        assert seen[0].startswith(b"POST /api/v2/log/entries HTTP/1.1\r\nHost: 127.0.0.1:")
        assert b"Content-Type: application/json" in seen[0] and seen[0].endswith(b'{"a":1}')
        assert seen[1].startswith(b"GET /api/v2/checkpoint HTTP/1.1\r\n")

    asyncio.run(run())


def test_a_get_on_a_connection_closed_while_idle_is_retried_once() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # closes the kept-alive connection without saying so

    async def run() -> None:
        server, port = await _serve(handler)
        async with server:
            conn = HttpConnection("127.0.0.1", port, "h")
            assert (await conn.get("/")).body == b"ok"
            await asyncio.sleep(0.05)
            assert (await conn.get("/")).body == b"ok"
            await asyncio.sleep(0.05)
            with pytest.raises(UpstreamError):  # a POST is never resent
                await conn.post("/", b"x", "text/plain")
            await conn.close()
        assert connections == 2

    asyncio.run(run())


def test_failures_are_upstream_errors() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    async def run() -> None:
        server, port = await _serve(garbage)
        async with server:
            conn = HttpConnection("127.0.0.1", port, "h")
            with pytest.raises(UpstreamError, match="not an HTTP"):
                await conn.get("/")
        server, port = await _serve(silent)
        async with server:
            conn = HttpConnection("127.0.0.1", port, "h", timeout=0.2)
            with pytest.raises(UpstreamError, match="timed out"):
                await conn.post("/", b"x", "text/plain")
        server.close()
        with pytest.raises(UpstreamError, match="cannot connect"):
            await HttpConnection("127.0.0.1", port, "h").get("/")

    asyncio.run(run())
