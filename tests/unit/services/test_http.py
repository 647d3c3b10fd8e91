"""The shared HTTP layer: error mapping, body limits, JSON parsing and the Host guard."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from sigstack.core.errors import Overloaded
from sigstack.services.http import HostGuard, create_app, json_response, read_json


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
