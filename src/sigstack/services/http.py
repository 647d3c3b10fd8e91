"""Thin HTTP conventions shared by every sigstack service.

Each service has three layers: ``config`` (documented, fails closed), ``service``
(domain logic, no web framework) and ``api`` (this module's helpers mapping
requests to service calls and ``SigstackError`` subclasses to status codes).

Every app built with :func:`create_app` serves, besides its own routes:

* ``GET /healthz``: 200 ``{"status": "ok"}`` when the service's health check passes,
  503 with the reason otherwise. The supervisor gates readiness on it.
* ``GET /openapi.json``: the service's OpenAPI 3.1 document.
* ``GET /metrics``: Prometheus metrics (request counts and latencies by route).

Errors are answered as ``{"code": <status>, "message": "<what was wrong>"}``, the
shape upstream Sigstore services use and clients parse. Unexpected exceptions are
logged with their traceback and answered 500 with a generic message: internals and
secrets never reach the client.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sigstack.core.errors import InvalidRequest, PayloadTooLarge, SigstackError

log = logging.getLogger("sigstack.http")

HealthCheck = Callable[[], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]

DEFAULT_BODY_LIMIT = 1 << 20  # 1 MiB unless a route says otherwise

# Every tile or entry bundle a log serves is covered by a checkpoint, so its bytes at
# that path (full, or partial of width W) never change; the checkpoint always may.
TILE_CACHE_CONTROL = "public, max-age=31536000, immutable"
CHECKPOINT_CACHE_CONTROL = "no-cache"

REQUESTS = Counter(
    "sigstack_http_requests_total",
    "HTTP requests answered, by service, route and status code.",
    ["service", "route", "status"],
)
LATENCY = Histogram(
    "sigstack_http_request_seconds",
    "HTTP request latency by service and route.",
    ["service", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A compact JSON response."""
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def error_response(exc: SigstackError) -> Response:
    """Map a ``SigstackError`` to its status code, headers and a ``{code, message}`` body."""
    return json_response(
        {"code": exc.http_status, "message": exc.message}, exc.http_status, exc.headers
    )


async def read_body(request: Request, limit: int = DEFAULT_BODY_LIMIT) -> bytes:
    """The request body, refusing more than ``limit`` bytes without buffering them all."""
    _check_declared_length(request.headers.get("content-length"), limit)
    return await _join_within(request.stream(), limit)


async def _join_within(chunks: AsyncIterable[bytes], limit: int) -> bytes:
    """The chunks joined, refusing (before buffering) more than ``limit`` bytes in all."""
    parts = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit}-byte limit")
        parts.append(chunk)
    return b"".join(parts)


def _check_declared_length(declared: str | None, limit: int) -> None:
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"request body exceeds the {limit}-byte limit")
        except ValueError as exc:
            raise InvalidRequest("Content-Length is not a number") from exc


async def read_json(request: Request, limit: int = DEFAULT_BODY_LIMIT) -> Any:
    """The request body parsed as JSON, or ``InvalidRequest`` saying why not."""
    body = await read_body(request, limit)
    if not body:
        raise InvalidRequest("request body is empty; expected JSON")
    try:
        return json.loads(body)
    except RecursionError as exc:
        raise InvalidRequest("request body is not valid JSON: nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, undecodable bytes, absurdly long integers
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from exc


def openapi_document(
    title: str, description: str, paths: dict[str, Any], version: str | None = None
) -> dict[str, Any]:
    """An OpenAPI 3.1 document with the error schema every service shares."""
    from sigstack import __version__

    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version or __version__, "description": description},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "integer"},
                        "message": {"type": "string"},
                    },
                }
            }
        },
    }


def error_spec(description: str) -> dict[str, Any]:
    """An OpenAPI response object for an error answered with the shared Error schema."""
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


class _ClientGone(Exception):
    """The client disconnected before its request body arrived: nothing to answer."""


@dataclass(frozen=True)
class FastRoute:
    """A POST route whose whole answer is JSON bytes, served without Starlette.

    Starlette's routing, request and response objects and its two exception
    middlewares cost about as much per request as a log write does. A route on the
    write path of a log can be answered directly instead: the body is read (at most
    ``body_limit`` bytes, as :func:`read_body` does), ``handler`` makes the answer,
    and errors are mapped exactly as :func:`create_app` maps them for other routes.
    The same path should also be a Starlette route (same handler), which answers when
    this one does not match (another method, a mounted prefix).
    """

    path: str
    handler: Callable[[bytes], Awaitable[bytes]]
    status: int = 200
    body_limit: int = DEFAULT_BODY_LIMIT


async def _receive_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body (``receive`` messages), refusing more than ``limit`` bytes."""
    declared = None
    for key, value in scope["headers"]:
        if key == b"content-length":
            declared = value.decode("latin-1")
            break
    _check_declared_length(declared, limit)
    return await _join_within(_body_chunks(receive), limit)


async def receive_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """A raw ASGI request's body, refusing more than ``limit`` bytes (as
    :func:`read_body` does); None if the client went away before sending it."""
    try:
        return await _receive_body(scope, receive, limit)
    except _ClientGone:
        return None


async def _body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


class _FastRoutes:
    """ASGI middleware answering :class:`FastRoute` POSTs; everything else passes on."""

    def __init__(self, app: ASGIApp, service: str, routes: Sequence[FastRoute]) -> None:
        self.app = app
        self.service = service
        self.routes = {route.path: route for route in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = None
        if scope["type"] == "http" and scope["method"] == "POST":
            route = self.routes.get(scope["path"])
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # its path labels the request's metrics, as a Route's does
        try:
            body = await _receive_body(scope, receive, route.body_limit)
            payload = await route.handler(body)
        except _ClientGone:
            return
        except SigstackError as exc:
            await _sigstack_error(self.service, exc)(scope, receive, send)
            return
        except Exception as exc:
            await _unexpected(self.service, exc)(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": route.status,
                "headers": [
                    (b"content-length", str(len(payload)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def with_fast_routes(app: ASGIApp, service_name: str, routes: Sequence[FastRoute]) -> ASGIApp:
    """``app`` with ``routes`` answered first (as :func:`create_app` serves them), for
    an app not built by :func:`create_app` (a Rekor frontend's proxy)."""
    return _FastRoutes(app, service_name, routes)


def _sigstack_error(service_name: str, exc: SigstackError) -> Response:
    if exc.http_status >= 500:
        log.warning("%s: %s", service_name, exc.message)
    return error_response(exc)


def _unexpected(service_name: str, exc: Exception) -> Response:
    log.exception("%s: unexpected error", service_name, exc_info=exc)
    return json_response({"code": 500, "message": "internal server error"}, 500)


class HostGuard:
    """ASGI middleware refusing requests whose ``Host`` is not one the service answers to.

    A service bound to loopback is still reachable from a browser through DNS
    rebinding (a page on attacker.example resolving to 127.0.0.1); such requests carry
    the attacker's host name, and are refused here before reaching any route.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        self.app = app
        self.allowed = frozenset(h.lower() for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = next((v for k, v in scope["headers"] if k == b"host"), b"")
            if host.decode("latin-1").lower() not in self.allowed:
                answer = json_response(
                    {
                        "code": 400,
                        "message": "unexpected Host header: this service is not served here",
                    },
                    400,
                )
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _Metrics:
    """ASGI middleware counting requests and timing them by route template."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        # The metric children by (route, status): labels() takes a lock and builds a key.
        self._counters: dict[tuple[str, int], Any] = {}
        self._timers: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status_holder = {"status": 500}

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            status = status_holder["status"]
            counter = self._counters.get((path, status))
            if counter is None:
                counter = REQUESTS.labels(self.service, path, str(status))
                self._counters[path, status] = counter
            counter.inc()
            timer = self._timers.get(path)
            if timer is None:
                timer = self._timers[path] = LATENCY.labels(self.service, path)
            timer.observe(time.perf_counter() - start)


def create_app(
    service_name: str,
    routes: Sequence[BaseRoute],
    *,
    openapi: dict[str, Any],
    health: HealthCheck | None = None,
    on_startup: Sequence[Hook] = (),
    on_shutdown: Sequence[Hook] = (),
    fast_routes: Sequence[FastRoute] = (),
) -> ASGIApp:
    """Build a service's ASGI app with health, OpenAPI, metrics and error mapping."""

    async def healthz(_: Request) -> Response:
        if health is not None:
            try:
                await health()
            except SigstackError as exc:
                return json_response({"status": "unavailable", "reason": exc.message}, 503)
        return json_response({"status": "ok"})

    async def openapi_route(_: Request) -> Response:
        return json_response(openapi)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def sigstack_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, SigstackError)
        return _sigstack_error(service_name, exc)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return json_response(
            {"code": exc.status_code, "message": exc.detail or "error"}, exc.status_code
        )

    async def unexpected(_: Request, exc: Exception) -> Response:
        return _unexpected(service_name, exc)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        for hook in on_startup:
            await hook()
        try:
            yield
        finally:
            for hook in on_shutdown:
                await hook()

    app = Starlette(
        routes=[
            *routes,
            Route("/healthz", healthz, methods=["GET"]),
            Route("/openapi.json", openapi_route, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        exception_handlers={
            SigstackError: sigstack_error,
            HTTPException: http_error,
            Exception: unexpected,
        },
        lifespan=lifespan,
    )
    if fast_routes:
        return _Metrics(_FastRoutes(app, service_name, fast_routes), service_name)
    return _Metrics(app, service_name)
