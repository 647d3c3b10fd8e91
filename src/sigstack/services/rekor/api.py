"""Rekor v2 HTTP API: the rekor-tiles write path and the C2SP tlog-tiles read path.

Routes (base URL = the tlog ``baseUrl`` in the trusted root):

* ``POST /api/v2/log/entries`` -> 201 ``TransparencyLogEntry`` (proto-JSON)
* ``GET /api/v2/checkpoint`` -> the signed checkpoint (``Cache-Control: no-cache``)
* ``GET /api/v2/tile/{L}/{N}[.p/{W}]`` and ``/api/v2/tile/entries/{N}[.p/{W}]`` ->
  tiles and entry bundles; full ones are immutable and cached for a year.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from sigstack.services.http import create_app, json_response, openapi_document, read_body
from sigstack.services.rekor.service import RekorService

MAX_ENTRY_BYTES = 128 * 1024
IMMUTABLE = "public, max-age=31536000, immutable"
PARTIAL = "public, max-age=60"

_ERR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

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
                "400": {"description": "invalid entry or signature", **_ERR},
                "413": {"description": "entry too large", **_ERR},
                "503": {"description": "log overloaded; retry after Retry-After", **_ERR},
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
                "400": {"description": "malformed tile path", **_ERR},
                "404": {"description": "no such tile yet", **_ERR},
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
            headers={"Cache-Control": "no-cache"},
        )

    async def tile(request: Request) -> Response:
        found = service.tile(request.path_params["path"])
        return Response(
            found.data,
            media_type="application/octet-stream",
            headers={"Cache-Control": IMMUTABLE if found.immutable else PARTIAL},
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
