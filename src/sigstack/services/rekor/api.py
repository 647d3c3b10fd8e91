"""Rekor v2 HTTP API: the rekor-tiles write path and the C2SP tlog-tiles read path.

Routes (base URL = the tlog ``baseUrl`` in the trusted root):

* ``POST /api/v2/log/entries`` -> 201 ``TransparencyLogEntry`` (proto-JSON)
* ``GET /api/v2/checkpoint`` -> the signed checkpoint (``Cache-Control: no-cache``)
* ``GET /api/v2/tile/{L}/{N}[.p/{W}]`` and ``/api/v2/tile/entries/{N}[.p/{W}]`` ->
  tiles and entry bundles, immutable (only what a checkpoint covers is served).
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
    create_app,
    error_spec,
    json_response,
    openapi_document,
    read_body,
)
from sigstack.services.rekor.service import RekorService

MAX_ENTRY_BYTES = 128 * 1024

OPENAPI_PATHS = {
    "/api/v2/log/entries": {
        "post": {
            "summary": "Add a hashedrekord entry; answers once it is integrated",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "description": "dev.sigstore.rekor.v2.CreateEntryRequest (proto-JSON)",
                            "properties": {"hashedRekordRequestV002": {"type": "object"}},
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


def create_rekor_app(service: RekorService) -> ASGIApp:
    """The Rekor v2 ASGI app."""

    async def create_entry(request: Request) -> Response:
        body = await read_body(request, MAX_ENTRY_BYTES)
        return json_response(await service.create_entry(body), status=201)

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

    return create_app(
        "rekor",
        [
            Route("/api/v2/log/entries", create_entry, methods=["POST"]),
            Route("/api/v2/checkpoint", checkpoint, methods=["GET"]),
            Route("/api/v2/tile/{path:path}", tile, methods=["GET"]),
        ],
        openapi=OPENAPI,
        health=health,
    )
