"""Rekor v1 HTTP routes (upstream Rekor's OpenAPI), served beside Rekor v2.

Routes (base URL = the Rekor ``baseUrl``; see :data:`OPENAPI_PATHS`):

* ``POST /api/v1/log/entries`` -> 201 ``{entryUUID: LogEntry}`` with ``Location`` and
  ``ETag``; 400 invalid entry or signature, 409 duplicate (``Location`` of the
  existing entry), 413 body over :data:`MAX_ENTRY_BYTES` (upstream's 100 KB cap).
* ``GET /api/v1/log/entries?logIndex=N``, ``GET /api/v1/log/entries/{entryUUID}``
  -> 200 ``{entryUUID: LogEntry}``; 400 malformed, 404 unknown.
* ``POST /api/v1/log/entries/retrieve`` (also with a trailing slash, as
  sigstore-python calls it) -> 200 ``[{entryUUID: LogEntry}, ...]``; 400, 422 (> 10 items).
* ``POST /api/v1/index/retrieve`` -> 200 ``[entryUUID, ...]``; 400.
* ``GET /api/v1/log`` (LogInfo), ``GET /api/v1/log/publicKey`` (PEM),
  ``GET /api/v1/log/proof?firstSize=&lastSize=`` (ConsistencyProof); 400 on bad sizes.

Handlers only translate HTTP to :class:`~sigstack.services.rekor.v1.RekorV1Service`
calls; reads (storage I/O) run in a worker thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sigstack.core.errors import InvalidRequest
from sigstack.services.http import error_spec, json_response, read_body
from sigstack.services.rekor.v1 import RekorV1Service

MAX_ENTRY_BYTES = 100 * 1024
"""Largest ``POST /api/v1/log/entries`` body (upstream's attestation limit)."""

MAX_QUERY_BYTES = 1024 * 1024
"""Largest ``entries/retrieve`` body: up to 10 proposed entries of 100 KB."""

MAX_INDEX_QUERY_BYTES = 64 * 1024
"""Largest ``index/retrieve`` body."""

_ENTRY_ID_PATTERN = "^([0-9a-fA-F]{64}|[0-9a-fA-F]{80})$"


def _int_param(request: Request, name: str, *, default: int | None = None) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        if default is None:
            raise InvalidRequest(f"query parameter {name} is required")
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise InvalidRequest(f"query parameter {name} must be a non-negative integer")
    return int(text)


def v1_routes(service: RekorV1Service) -> list[Route]:
    """The Rekor v1 routes over ``service``."""

    async def create_entry(request: Request) -> Response:
        body = await read_body(request, MAX_ENTRY_BYTES)
        entry_id, answer = await service.create_entry(body)
        return json_response(
            answer,
            status=201,
            headers={"Location": f"/api/v1/log/entries/{entry_id}", "ETag": entry_id},
        )

    async def entry_by_index(request: Request) -> Response:
        index = _int_param(request, "logIndex")
        return json_response(await asyncio.to_thread(service.entry_by_index, index))

    async def entry_by_uuid(request: Request) -> Response:
        entry_id = request.path_params["entry_uuid"]
        return json_response(await asyncio.to_thread(service.entry_by_uuid, entry_id))

    async def retrieve(request: Request) -> Response:
        body = await read_body(request, MAX_QUERY_BYTES)
        return json_response(await asyncio.to_thread(service.retrieve, body))

    async def search_index(request: Request) -> Response:
        body = await read_body(request, MAX_INDEX_QUERY_BYTES)
        return json_response(await asyncio.to_thread(service.search_index, body))

    async def log_info(_: Request) -> Response:
        return json_response(service.log_info())

    async def public_key(request: Request) -> Response:
        pem = service.public_key_pem(request.query_params.get("treeID"))
        return Response(pem, media_type="application/x-pem-file")

    async def proof(request: Request) -> Response:
        first = _int_param(request, "firstSize", default=1)
        last = _int_param(request, "lastSize")
        tree_id = request.query_params.get("treeID")
        return json_response(
            await asyncio.to_thread(service.consistency_proof, first, last, tree_id)
        )

    return [
        Route("/api/v1/log/entries", create_entry, methods=["POST"]),
        Route("/api/v1/log/entries", entry_by_index, methods=["GET"]),
        Route("/api/v1/log/entries/retrieve", retrieve, methods=["POST"]),
        Route("/api/v1/log/entries/retrieve/", retrieve, methods=["POST"]),
        Route("/api/v1/log/entries/{entry_uuid}", entry_by_uuid, methods=["GET"]),
        Route("/api/v1/index/retrieve", search_index, methods=["POST"]),
        Route("/api/v1/log", log_info, methods=["GET"]),
        Route("/api/v1/log/publicKey", public_key, methods=["GET"]),
        Route("/api/v1/log/proof", proof, methods=["GET"]),
    ]


def _json_body(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "description": description, **(schema or {})}
            }
        },
    }


def _ok(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema or {"type": "object"}}},
    }


_LOG_ENTRY = {
    "type": "object",
    "description": "{entryUUID: {body, integratedTime, logID, logIndex, verification: "
    "{inclusionProof: {checkpoint, hashes, logIndex, rootHash, treeSize}, "
    "signedEntryTimestamp}}}",
}
_ENTRY_UUID_PARAM = {
    "name": "entryUUID",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": _ENTRY_ID_PATTERN},
}
_TREE_ID_PARAM = {
    "name": "treeID",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}

OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/log/entries": {
        "post": {
            "summary": "Add a hashedrekord 0.0.1, dsse 0.0.1 or intoto 0.0.2 entry (Rekor v1)",
            "requestBody": _json_body("ProposedEntry {kind, apiVersion, spec}"),
            "responses": {
                "201": {
                    **_ok("the logged entry, its signed entry timestamp and inclusion proof"),
                    "headers": {
                        "Location": {"schema": {"type": "string"}},
                        "ETag": {"schema": {"type": "string"}},
                    },
                },
                "400": error_spec(
                    "invalid entry, unsupported kind or signature that does not verify"
                ),
                "409": {
                    **error_spec("an equivalent entry is already logged"),
                    "headers": {"Location": {"schema": {"type": "string"}}},
                },
                "413": error_spec("entry larger than 100 KiB"),
                "503": error_spec("log overloaded or unavailable; retry after Retry-After"),
            },
        },
        "get": {
            "summary": "An entry and its inclusion proof by log index",
            "parameters": [
                {
                    "name": "logIndex",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0},
                },
            ],
            "responses": {
                "200": _ok("the entry", _LOG_ENTRY),
                "400": error_spec("logIndex missing or malformed"),
                "404": error_spec("no entry at that index"),
            },
        },
    },
    "/api/v1/log/entries/{entryUUID}": {
        "get": {
            "summary": "An entry and its inclusion proof by UUID (64 hex) or entryUUID (80 hex)",
            "parameters": [_ENTRY_UUID_PARAM],
            "responses": {
                "200": _ok("the entry", _LOG_ENTRY),
                "400": error_spec("malformed UUID"),
                "404": error_spec("no such entry"),
            },
        },
    },
    "/api/v1/log/entries/retrieve": {
        "post": {
            "summary": "Entries by entryUUIDs, logIndexes or proposed entries (also served "
            "with a trailing slash)",
            "requestBody": _json_body(
                "SearchLogQuery",
                {
                    "properties": {
                        "entryUUIDs": {"type": "array", "items": {"type": "string"}},
                        "logIndexes": {"type": "array", "items": {"type": "integer"}},
                        "entries": {"type": "array", "items": {"type": "object"}},
                    }
                },
            ),
            "responses": {
                "200": _ok("the entries found", {"type": "array", "items": _LOG_ENTRY}),
                "400": error_spec("malformed query or entry"),
                "422": error_spec("more than 10 items asked for"),
            },
        },
    },
    "/api/v1/index/retrieve": {
        "post": {
            "summary": "entryUUIDs by artifact hash, public key, email or SAN subject",
            "requestBody": _json_body(
                "SearchIndex",
                {
                    "properties": {
                        "hash": {"type": "string"},
                        "publicKey": {
                            "type": "object",
                            "properties": {
                                "format": {"type": "string", "enum": ["x509"]},
                                "content": {"type": "string", "format": "byte"},
                            },
                        },
                        "email": {"type": "string"},
                        "subject": {"type": "string"},
                        "operator": {"type": "string", "enum": ["and", "or"]},
                    }
                },
            ),
            "responses": {
                "200": _ok(
                    "matching entryUUIDs in log order",
                    {"type": "array", "items": {"type": "string", "pattern": _ENTRY_ID_PATTERN}},
                ),
                "400": error_spec("malformed query"),
            },
        },
    },
    "/api/v1/log": {
        "get": {
            "summary": "Tree size, root hash, signed checkpoint and tree ID (LogInfo)",
            "responses": {"200": _ok("LogInfo {rootHash, treeSize, signedTreeHead, treeID}")},
        },
    },
    "/api/v1/log/publicKey": {
        "get": {
            "summary": "The PEM public key verifying checkpoints and signed entry timestamps",
            "parameters": [_TREE_ID_PARAM],
            "responses": {
                "200": {"description": "PEM", "content": {"application/x-pem-file": {}}},
                "400": error_spec("unknown tree ID"),
            },
        },
    },
    "/api/v1/log/proof": {
        "get": {
            "summary": "Consistency proof between two tree sizes (ConsistencyProof)",
            "parameters": [
                {
                    "name": "firstSize",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "default": 1},
                },
                {
                    "name": "lastSize",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1},
                },
                _TREE_ID_PARAM,
            ],
            "responses": {
                "200": _ok("ConsistencyProof {rootHash, hashes}"),
                "400": error_spec("sizes missing, malformed, out of order or beyond the tree"),
            },
        },
    },
}
