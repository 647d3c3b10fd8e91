"""The bounded HTTP protocol, over real loopback sockets: head size and head deadline."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest
import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from uvicorn.server import ServerState

from sigstack.services.http import create_app
from sigstack.stack import supervisor as sup
from sigstack.stack.httpproto import MAX_HEAD_BYTES, BoundedHttpToolsProtocol

Scenario = Callable[[int], Awaitable[None]]


async def _hello(_: Request) -> Response:
    return Response("hello")


async def _slow(_: Request) -> Response:
    await asyncio.sleep(0.6)
    return Response("slow")


async def _echo(request: Request) -> Response:
    return Response(str(len(await request.body())))


def _serve(scenario: Scenario) -> None:
    """Run ``scenario(port)`` against a supervised server with the three routes."""

    async def main() -> None:
        app = create_app(
            "proto",
            [
                Route("/", _hello),
                Route("/slow", _slow),
                Route("/echo", _echo, methods=["POST"]),
            ],
            openapi={},
        )
        supervisor = sup.Supervisor()
        sock = sup.bind_socket("proto", "127.0.0.1", 0)
        port = sock.getsockname()[1]
        try:
            await supervisor.start("proto", app, sock, f"http://127.0.0.1:{port}")
            await asyncio.wait_for(scenario(port), timeout=30)
        finally:
            await supervisor.stop()

    asyncio.run(main())


def _get(port: int, path: str = "/", extra: bytes = b"") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n" % (path.encode(), port, extra)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


async def _closed(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(), timeout=5) == b""


def test_a_large_but_bounded_head_is_served() -> None:
    async def scenario(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        filler = b"x-filler: " + b"a" * (MAX_HEAD_BYTES - 1024) + b"\r\n"
        writer.write(_get(port, extra=filler))
        assert await _read_response(reader) == (200, b"hello")
        writer.close()

    _serve(scenario)


def test_an_oversized_head_is_refused_with_431_and_the_connection_closed() -> None:
    async def scenario(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = asyncio.create_task(reader.read())
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nx-endless: " % port)
        with contextlib.suppress(ConnectionError):
            while not answer.done():  # an endless header, until the server answers
                writer.write(b"a" * 65536)
                await writer.drain()
                await asyncio.sleep(0)
        data = await answer  # everything up to the server's end of stream
        assert data.startswith(b"HTTP/1.1 431 "), data[:100]
        assert data.endswith(b"Request Header Fields Too Large")
        writer.close()

    _serve(scenario)


class _Transport(asyncio.Transport):
    """Just enough transport for the protocol: records what is written and closed."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.eof = False
        self.closed = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed or self.eof

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_the_head_limit_is_enforced_at_the_first_read_that_crosses_it() -> None:
    async def scenario() -> None:
        config = uvicorn.Config(create_app("proto", [Route("/", _hello)], openapi={}))
        config.load()
        protocol = BoundedHttpToolsProtocol(config, ServerState(), {})
        transport = _Transport()
        protocol.connection_made(transport)
        first = b"GET / HTTP/1.1\r\nHost: a\r\nx-long: "
        protocol.data_received(first)
        fed = len(first)
        while fed <= MAX_HEAD_BYTES:
            assert not transport.eof, f"refused after only {fed} bytes"
            protocol.data_received(b"a" * 4096)
            fed += 4096
        assert transport.eof and transport.written.startswith(b"HTTP/1.1 431 ")
        protocol.data_received(b"a" * 4096)  # discarded, not parsed
        protocol.connection_lost(None)

    asyncio.run(scenario())


def test_a_slow_head_is_answered_408_and_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(BoundedHttpToolsProtocol, "head_timeout", 0.3)

    async def scenario(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port)  # never finished
        assert await _read_response(reader) == (408, b"Request Timeout")
        assert await _closed(reader)
        # A connection that never sends anything is closed too.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        status, _ = await _read_response(reader)
        assert status == 408 and await _closed(reader)

    _serve(scenario)


def test_the_deadline_restarts_for_each_request_on_a_kept_alive_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(BoundedHttpToolsProtocol, "head_timeout", 0.4)

    async def scenario(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):  # 3 x 0.25 s > one deadline: each request gets its own
            await asyncio.sleep(0.25)
            writer.write(_get(port))
            assert await _read_response(reader) == (200, b"hello")
        writer.close()

    _serve(scenario)


def test_a_kept_alive_connection_idle_after_its_answers_is_answered_408(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(BoundedHttpToolsProtocol, "head_timeout", 0.3)

    async def scenario(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):  # the timer armed for the first head outlives these requests
            writer.write(_get(port))
            assert await _read_response(reader) == (200, b"hello")
        started = asyncio.get_running_loop().time()
        assert await _read_response(reader) == (408, b"Request Timeout")
        assert asyncio.get_running_loop().time() - started >= 0.25  # a whole deadline
        assert await _closed(reader)

    _serve(scenario)


def test_a_pipelined_request_waits_for_a_slow_response_without_timing_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(BoundedHttpToolsProtocol, "head_timeout", 0.2)

    async def scenario(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_get(port, "/slow") + _get(port))  # /slow outlasts the deadline
        assert await _read_response(reader) == (200, b"slow")
        assert await _read_response(reader) == (200, b"hello")
        writer.close()

    _serve(scenario)


def test_a_large_body_and_a_pipelined_request_in_one_write_are_both_served() -> None:
    async def scenario(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = b"b" * (3 * MAX_HEAD_BYTES)
        post = b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1:%d\r\ncontent-length: %d\r\n\r\n" % (
            port,
            len(body),
        )
        writer.write(post + body + _get(port))
        assert await _read_response(reader) == (200, str(len(body)).encode())
        assert await _read_response(reader) == (200, b"hello")
        writer.close()

    _serve(scenario)
