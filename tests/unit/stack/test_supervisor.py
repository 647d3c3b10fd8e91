"""The supervisor: readiness gates, crash detection, and stopping in dependency waves."""

from __future__ import annotations

import asyncio
import socket

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from sigstack.core.errors import Unavailable
from sigstack.services.http import create_app
from sigstack.stack import supervisor as sup


def _app(name: str, *, healthy: bool = True, stopped: list[str] | None = None) -> ASGIApp:
    async def hello(_: Request) -> Response:
        return Response(name)

    async def health() -> None:
        if not healthy:
            raise Unavailable(f"{name} is not ready yet")

    async def record_stop() -> None:
        if stopped is not None:
            stopped.append(name)

    return create_app(
        name, [Route("/", hello)], openapi={}, health=health, on_shutdown=[record_stop]
    )


def _socket() -> tuple[socket.socket, str]:
    sock = sup.bind_socket("test", "127.0.0.1", 0)
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_unhealthy_service_fails_the_gate_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sup, "HEALTH_TIMEOUT", 1.0)

    async def scenario() -> None:
        supervisor = sup.Supervisor()
        sock, url = _socket()
        try:
            with pytest.raises(Unavailable, match="not ready yet"):
                await supervisor.start("broken", _app("broken", healthy=False), sock, url)
        finally:
            await supervisor.stop()

    asyncio.run(scenario())


def test_unknown_dependency_is_refused() -> None:
    async def scenario() -> None:
        supervisor = sup.Supervisor()
        sock, url = _socket()
        try:
            with pytest.raises(Unavailable, match="not started"):
                await supervisor.start("fulcio", _app("fulcio"), sock, url, depends_on=["ctlog"])
        finally:
            sock.close()
            await supervisor.stop()

    asyncio.run(scenario())


def test_dependents_stop_before_their_dependencies() -> None:
    stopped: list[str] = []

    async def scenario() -> None:
        supervisor = sup.Supervisor()
        for name, deps in [("ctlog", ()), ("fulcio", ("ctlog",)), ("rekor", ())]:
            sock, url = _socket()
            await supervisor.start(name, _app(name, stopped=stopped), sock, url, depends_on=deps)
        await supervisor.stop()
        await supervisor.stop()  # idempotent

    asyncio.run(scenario())
    assert sorted(stopped) == ["ctlog", "fulcio", "rekor"]
    assert stopped.index("fulcio") < stopped.index("ctlog")


def test_a_server_that_dies_is_reported() -> None:
    async def scenario() -> str | None:
        supervisor = sup.Supervisor()
        sock, url = _socket()
        await supervisor.start("victim", _app("victim"), sock, url)
        running = supervisor._running[0]
        running.task.cancel()  # the server task ends on its own, as a crash would
        try:
            return await asyncio.wait_for(supervisor.wait_any_exit(), timeout=5)
        finally:
            await supervisor.stop()

    assert asyncio.run(scenario()) == "victim"


def test_health_checks_ignore_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback calls to ourselves must not go through an HTTP_PROXY from the environment."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setattr(sup, "HEALTH_TIMEOUT", 5.0)

    async def scenario() -> None:
        supervisor = sup.Supervisor()
        sock, url = _socket()
        try:
            await supervisor.start("svc", _app("svc"), sock, url)
        finally:
            await supervisor.stop()

    asyncio.run(scenario())


def test_accepted_connections_disable_nagle() -> None:
    """Kept-alive answers must not wait ~40 ms for the client's delayed ACK."""

    async def scenario() -> int:
        sock, _ = _socket()
        seen: list[int] = []

        async def handle(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted = writer.get_extra_info("socket")
            seen.append(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()
        return seen[0]

    assert asyncio.run(scenario()) != 0
