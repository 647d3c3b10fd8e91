"""HTTP face of the TUF repository: serves its directory read-only, nothing else.

Routes, exactly the files a TUF client with consistent snapshots fetches:

* ``GET /{N}.root.json``, ``/{N}.snapshot.json``, ``/{N}.targets.json``: immutable,
  ``Cache-Control: public, max-age=31536000, immutable``.
* ``GET /targets/{sha256}.{name}``: immutable (content-addressed), same caching.
* ``GET /root.json``, ``/timestamp.json``: change over time, ``max-age=60``.
* ``GET /healthz`` (503 when a client would find expired metadata), ``/openapi.json``,
  ``/metrics`` (``sigstack.services.http``).

Everything else is 404, including a version that does not exist yet: a client
probes ``{N+1}.root.json`` and must get 404 (served with ``Cache-Control: no-store``
so no cache remembers it). Paths are validated by pattern before the file system
is touched (no traversal, no directories, no dotfiles, no symlinks): see
``TufRepository.read_public``. No request can change the repository.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from sigstack.core.errors import NotFound
from sigstack.services.http import create_app as create_service_app
from sigstack.services.http import error_spec, openapi_document
from sigstack.services.tuf.repository import ROOT_FILE, TIMESTAMP_FILE, TufRepository

SERVICE_NAME = "tuf"
IMMUTABLE = "public, max-age=31536000, immutable"
MUTABLE = "public, max-age=60"
NOT_FOUND = "no-store"


def _cache_control(relative: str) -> str:
    return MUTABLE if relative in (ROOT_FILE, TIMESTAMP_FILE) else IMMUTABLE


def openapi() -> dict[str, Any]:
    """The OpenAPI document of the TUF repository app."""

    def file_route(summary: str, params: list[str]) -> dict[str, Any]:
        return {
            "get": {
                "summary": summary,
                "parameters": [
                    {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                    for p in params
                ],
                "responses": {
                    "200": {"description": "the file, byte for byte"},
                    "404": error_spec("no such file"),
                },
            }
        }

    paths = {
        "/root.json": file_route("Latest root metadata (trust bootstrap copy)", []),
        "/timestamp.json": file_route("Timestamp metadata", []),
        "/{version}.root.json": file_route("Root metadata, by version", ["version"]),
        "/{version}.snapshot.json": file_route("Snapshot metadata, by version", ["version"]),
        "/{version}.targets.json": file_route("Targets metadata, by version", ["version"]),
        "/targets/{filename}": file_route(
            "Target file, as {sha256}.{name} (consistent snapshots)", ["filename"]
        ),
    }
    return openapi_document(
        "sigstack TUF repository",
        "Read-only TUF repository distributing trusted_root.json and signing_config.v0.2.json.",
        paths,
    )


def create_app(repo: TufRepository) -> ASGIApp:
    """The repository's read-only ASGI app."""

    async def serve(relative: str) -> Response:
        try:
            data = await run_in_threadpool(repo.read_public, relative)
        except NotFound as exc:
            # Answered by the shared error handler, with a header no cache may ignore.
            raise NotFound(exc.message, headers={"Cache-Control": NOT_FOUND}) from None
        media_type = (
            "application/json" if relative.endswith(".json") else "application/octet-stream"
        )
        return Response(
            data,
            media_type=media_type,
            headers={
                "Cache-Control": _cache_control(relative),
                "X-Content-Type-Options": "nosniff",
            },
        )

    def fixed(name: str) -> Route:
        async def handler(_: Request) -> Response:
            return await serve(name)

        return Route(f"/{name}", handler, methods=["GET"])

    def versioned(role: str) -> Route:
        async def handler(request: Request) -> Response:
            return await serve(f"{request.path_params['version']}.{role}.json")

        return Route(f"/{{version}}.{role}.json", handler, methods=["GET"])

    async def target(request: Request) -> Response:
        return await serve(f"targets/{request.path_params['filename']}")

    async def health() -> None:
        await run_in_threadpool(repo.check_health)

    routes = [
        fixed(ROOT_FILE),
        fixed(TIMESTAMP_FILE),
        versioned("root"),
        versioned("snapshot"),
        versioned("targets"),
        Route("/targets/{filename}", target, methods=["GET"]),
    ]
    return create_service_app(SERVICE_NAME, routes, openapi=openapi(), health=health)
