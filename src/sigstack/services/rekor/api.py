"""Rekor HTTP API: Rekor v2 (rekor-tiles) and, when configured, Rekor v1 at one base URL.

Rekor v2 routes (base URL = the tlog ``baseUrl`` in the trusted root):

* ``POST /api/v2/log/entries`` -> 201 ``TransparencyLogEntry`` (proto-JSON)
* ``GET /api/v2/checkpoint`` -> the signed checkpoint (``Cache-Control: no-cache``)
* ``GET /api/v2/tile/{L}/{N}[.p/{W}]`` and ``/api/v2/tile/entries/{N}[.p/{W}]`` ->
  tiles and entry bundles, immutable (only what a checkpoint covers is served).

Rekor v1 routes (``/api/v1/...``, upstream Rekor's API on its own log) are listed in
:mod:`sigstack.services.rekor.v1_api`. ``/healthz`` fails unless every configured
log accepts entries; ``/openapi.json`` documents every route served.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from sigstack.services.http import (
    CHECKPOINT_CACHE_CONTROL,
    TILE_CACHE_CONTROL,
    FastRoute,
    create_app,
    error_spec,
    openapi_document,
    read_body,
)
from sigstack.services.rekor.service import RekorService
from sigstack.services.rekor.v1 import RekorV1Service
from sigstack.services.rekor.v1_api import OPENAPI_PATHS as V1_OPENAPI_PATHS
from sigstack.services.rekor.v1_api import v1_routes

MAX_ENTRY_BYTES = 128 * 1024

OPENAPI_PATHS = {
    "/api/v2/log/entries": {
        "post": {
            "summary": "Add a hashedrekord or dsse entry; answers once it is integrated",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "description": "dev.sigstore.rekor.v2.CreateEntryRequest (proto-JSON): "
                            "exactly one of hashedRekordRequestV002, dsseRequestV002",
                            "properties": {
                                "hashedRekordRequestV002": {"type": "object"},
                                "dsseRequestV002": {"type": "object"},
                            },
                        }
                    }
                },
            },
            "responses": {
                "201": {
                    "description": "dev.sigstore.rekor.v1.TransparencyLogEntry (proto-JSON)",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "400": error_spec("invalid entry or signature"),
                "413": error_spec("entry too large"),
                "503": error_spec("log overloaded; retry after Retry-After"),
            },
        }
    },
    "/api/v2/checkpoint": {
        "get": {
            "summary": "Latest signed checkpoint (C2SP tlog-checkpoint)",
            "responses": {"200": {"description": "signed note", "content": {"text/plain": {}}}},
        }
    },
    "/api/v2/tile/{path}": {
        "get": {
            "summary": "C2SP tlog-tiles hash tile or entry bundle",
            "parameters": [
                {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {"description": "tile bytes", "content": {"application/octet-stream": {}}},
                "400": error_spec("malformed tile path"),
                "404": error_spec("no such tile yet"),
            },
        }
    },
}

OPENAPI = openapi_document(
    "sigstack Rekor v2",
    "Signature transparency log (rekor-tiles API) on the sigstack log engine.",
    OPENAPI_PATHS,
)

OPENAPI_WITH_V1 = openapi_document(
    "sigstack Rekor",
    "Signature transparency logs on the sigstack log engine: Rekor v2 (rekor-tiles API, "
    "/api/v2) and Rekor v1 (upstream Rekor API, /api/v1, its own log and key).",
    {**OPENAPI_PATHS, **V1_OPENAPI_PATHS},
)


def create_rekor_app(v2: RekorService, v1: RekorV1Service | None = None) -> ASGIApp:
    """The Rekor ASGI app: Rekor v2, plus Rekor v1 at the same base URL when ``v1`` is given."""
    service = v2

    async def create_entry(request: Request) -> Response:
        body = await read_body(request, MAX_ENTRY_BYTES)
        answer = await service.create_entry_json(body)
        return Response(answer, status_code=201, media_type="application/json")

    async def checkpoint(_: Request) -> Response:
        return Response(
            service.checkpoint(),
            media_type="text/plain; charset=utf-8",
            headers={"Cache-Control": CHECKPOINT_CACHE_CONTROL},
        )

    async def tile(request: Request) -> Response:
        data = await asyncio.to_thread(service.tile, request.path_params["path"])
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"Cache-Control": TILE_CACHE_CONTROL},
        )

    async def health() -> None:
        service.transparency_log.check_accepting()
        if v1 is not None:
            v1.transparency_log.check_accepting()

    routes = [
        Route("/api/v2/log/entries", create_entry, methods=["POST"]),
        Route("/api/v2/checkpoint", checkpoint, methods=["GET"]),
        Route("/api/v2/tile/{path:path}", tile, methods=["GET"]),
    ]
    if v1 is not None:
        routes.extend(v1_routes(v1))
    return create_app(
        "rekor",
        routes,
        openapi=OPENAPI if v1 is None else OPENAPI_WITH_V1,
        health=health,
        # The write path skips Starlette's machinery (same answers; see FastRoute).
        fast_routes=[
            FastRoute(
                "/api/v2/log/entries",
                service.create_entry_json,
                status=201,
                body_limit=MAX_ENTRY_BYTES,
            )
        ],
    )
