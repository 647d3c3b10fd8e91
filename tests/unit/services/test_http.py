"""The shared HTTP layer: error mapping, body limits, JSON parsing and the Host guard."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from prometheus_client import REGISTRY
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from sigstack.core.errors import Overloaded
from sigstack.services.http import FastRoute, HostGuard, create_app, json_response, read_json


async def _boom(_: Request) -> Response:
    raise RuntimeError("secret internal detail /srv/keys/ca.pem")


async def _busy(_: Request) -> Response:
    raise Overloaded("queue full", retry_after=7)


async def _echo(request: Request) -> Response:
    return json_response({"got": await read_json(request, limit=1 << 20)})


def _app() -> ASGIApp:
    return create_app(
        "test",
        [
            Route("/boom", _boom),
            Route("/busy", _busy),
            Route("/echo", _echo, methods=["POST"]),
        ],
        openapi={"openapi": "3.1.0"},
    )


def _call(app: ASGIApp, method: str, path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc.test") as client:
            return await client.request(method, path, **kw)

    return asyncio.run(go())


def test_unexpected_errors_are_500_without_internals() -> None:
    resp = _call(_app(), "GET", "/boom")
    assert resp.status_code == 500
    assert resp.json() == {"code": 500, "message": "internal server error"}
    assert "secret" not in resp.text


def test_overload_answers_503_with_retry_after() -> None:
    resp = _call(_app(), "GET", "/busy")
    assert resp.status_code == 503 and resp.headers["retry-after"] == "7"
    assert resp.json()["message"] == "queue full"


def test_pathological_json_is_400_not_500() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert _call(_app(), "POST", "/echo", content=deep).status_code == 400
    huge_int = b'{"a": ' + b"9" * 5000 + b"}"
    assert _call(_app(), "POST", "/echo", content=huge_int).status_code == 400
    assert _call(_app(), "POST", "/echo", content=b"\xff\xfe").status_code == 400
    assert _call(_app(), "POST", "/echo", content=b'{"ok": 1}').json() == {"got": {"ok": 1}}


def test_host_guard_refuses_foreign_host_headers() -> None:
    guarded = HostGuard(_app(), ["127.0.0.1:7701", "localhost:7701"])
    ok = _call(guarded, "GET", "/healthz", headers={"Host": "127.0.0.1:7701"})
    assert ok.status_code == 200
    assert _call(guarded, "GET", "/healthz", headers={"Host": "LOCALHOST:7701"}).status_code == 200
    for host in ("attacker.example:7701", "127.0.0.1:7702", "127.0.0.1", ""):
        resp = _call(guarded, "GET", "/healthz", headers={"Host": host})
        assert resp.status_code == 400, host


# -- FastRoute: the write path answered without Starlette ----------------------------------


async def _fast_echo(body: bytes) -> bytes:
    if body == b"busy":
        raise Overloaded("queue full", retry_after=3)
    if body == b"boom":
        raise RuntimeError("secret internal detail /srv/keys/ca.pem")
    return b'{"length":%d}' % len(body)


async def _slow_echo(request: Request) -> Response:
    return json_response({"via": "starlette", "length": len(await request.body())})


def _fast_app() -> ASGIApp:
    return create_app(
        "fast",
        [Route("/entries", _slow_echo, methods=["POST", "GET"])],
        openapi={"openapi": "3.1.0"},
        fast_routes=[FastRoute("/entries", _fast_echo, status=201, body_limit=100)],
    )


def _counted(route: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "sigstack_http_requests_total", {"service": "fast", "route": route, "status": status}
    )
    return value or 0.0


def test_a_fast_route_answers_posts_with_its_status_and_json() -> None:
    before = _counted("/entries", "201")
    resp = _call(_fast_app(), "POST", "/entries", content=b"x" * 40)
    assert resp.status_code == 201
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["content-length"] == str(len(resp.content))
    assert resp.json() == {"length": 40}
    assert _counted("/entries", "201") == before + 1  # labelled with the route's path
    # Other methods on the same path are Starlette's.
    assert _call(_fast_app(), "GET", "/entries").json() == {"via": "starlette", "length": 0}


def test_a_fast_route_maps_errors_as_every_other_route_does() -> None:
    busy = _call(_fast_app(), "POST", "/entries", content=b"busy")
    assert busy.status_code == 503 and busy.headers["retry-after"] == "3"
    assert busy.json() == {"code": 503, "message": "queue full"}
    boom = _call(_fast_app(), "POST", "/entries", content=b"boom")
    assert boom.status_code == 500
    assert boom.json() == {"code": 500, "message": "internal server error"}
    assert "secret" not in boom.text


def test_a_fast_route_enforces_its_body_limit() -> None:
    assert _call(_fast_app(), "POST", "/entries", content=b"x" * 100).status_code == 201
    declared = _call(_fast_app(), "POST", "/entries", content=b"x" * 101)
    assert declared.status_code == 413
    assert "100-byte limit" in declared.json()["message"]
    bad = _call(_fast_app(), "POST", "/entries", content=b"x", headers={"Content-Length": "x1"})
    assert bad.status_code == 400

    async def chunks() -> Any:  # no Content-Length: the limit applies as the body streams
        for _ in range(3):
            yield b"y" * 40

    streamed = _call(_fast_app(), "POST", "/entries", content=chunks())
    assert streamed.status_code == 413


def test_a_fast_route_sends_nothing_to_a_client_gone_before_its_body() -> None:
    sent: list[Any] = []
    messages = iter([{"type": "http.request", "body": b"ab", "more_body": True}])

    async def receive() -> Any:
        return next(messages, {"type": "http.disconnect"})

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/entries",
        "headers": [],
        "query_string": b"",
    }
    asyncio.run(_fast_app()(scope, receive, send))
    assert sent == []
