"""HTTP mapping of the CT log service (RFC 6962 section 4 and c2sp.org/static-ct-api).

Submission and RFC 6962 reads (JSON):

* ``POST /ct/v1/add-chain``      ``{"chain": [b64 DER, ...]}`` -> 200 SCT
* ``POST /ct/v1/add-pre-chain``  ``{"chain": [b64 DER, ...]}`` -> 200 SCT
* ``GET  /ct/v1/get-roots``      -> ``{"certificates": [b64 DER, ...]}``
* ``GET  /ct/v1/get-sth``        -> ``{tree_size, timestamp, sha256_root_hash,
  tree_head_signature}``
* ``GET  /ct/v1/get-sth-consistency?first=&second=`` -> ``{"consistency": [b64...]}``
* ``GET  /ct/v1/get-entries?start=&end=`` -> ``{"entries": [{leaf_input, extra_data}]}``
  (at most 256 per answer)
* ``GET  /ct/v1/get-proof-by-hash?hash=&tree_size=`` -> ``{leaf_index, audit_path}``
* ``GET  /ct/v1/get-entry-and-proof?leaf_index=&tree_size=`` -> ``{leaf_input,
  extra_data, audit_path}``

Monitoring (static-ct-api layout, monitoring prefix = submission prefix):
``GET /checkpoint``, ``GET /tile/<L>/<N>[.p/<W>]``, ``GET /tile/data/<N>[.p/<W>]``
(TileLeaf records), ``GET /issuer/<hex sha256>``. RFC 6962 ``get-entries`` and
``get-proof-by-hash`` are not served: monitors read the tiles.

Plus ``/healthz`` (503 while the log is closed or its checkpoint does not verify),
``/openapi.json`` and ``/metrics`` from :func:`sigstack.services.http.create_app`.
Reads that may touch storage run in a worker thread, never on the event loop.

Guarantees: request bodies are capped at ``config.max_body_bytes`` (413 above it);
every malformed request is answered 400 with a message naming the field at fault
(``chain[3] is not valid base64``); errors use the shared ``{"code", "message"}``
body. This module holds no domain logic: it decodes, calls the service, encodes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from sigstack.core.encoding import b64, b64decode
from sigstack.core.errors import InvalidRequest
from sigstack.services import http
from sigstack.services.ctlog.service import CTLogService

SERVICE_NAME = "ctlog"
PREFIX = "/ct/v1"


def parse_chain_request(body: Any) -> list[bytes]:
    """Decode an ``add-(pre-)chain`` body into DER certificates, leaf first.

    Only the encoding is checked here; the chain's length (empty, longer than
    ``max_chain_length``) and content are the service's ``validate_chain``'s concern.
    The body is already capped at ``max_body_bytes``, so decoding it is bounded.
    """
    if not isinstance(body, dict):
        raise InvalidRequest('request body must be a JSON object {"chain": [...]}')
    if "chain" not in body:
        raise InvalidRequest('request body has no "chain" field')
    chain = body["chain"]
    if not isinstance(chain, list):
        raise InvalidRequest('"chain" must be a list of base64-encoded DER certificates')
    out: list[bytes] = []
    for i, item in enumerate(chain):
        if not isinstance(item, str):
            raise InvalidRequest(f"chain[{i}] must be a base64 string, not {type(item).__name__}")
        der = b64decode(item, what=f"chain[{i}]")
        if not der:
            raise InvalidRequest(f"chain[{i}] is empty")
        out.append(der)
    return out


_IMMUTABLE = {"Cache-Control": http.TILE_CACHE_CONTROL}
_MAX_U64 = (1 << 64) - 1


def _size_param(request: Request, name: str) -> int:
    """A tree-size query parameter: a decimal uint64."""
    raw = request.query_params.get(name)
    if raw is None:
        raise InvalidRequest(f"query parameter {name!r} is required")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 20 or int(raw) > _MAX_U64:
        raise InvalidRequest(f"query parameter {name!r} must be a decimal tree size")
    return int(raw)


def _read_op(summary: str, params: tuple[str, ...], properties: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI for an RFC 6962 GET taking query parameters and answering a JSON object."""
    return {
        "get": {
            "summary": summary,
            "parameters": [
                {"name": n, "in": "query", "required": True, "schema": {"type": "string"}}
                for n in params
            ],
            "responses": {
                "200": {
                    "description": "the answer",
                    "content": {
                        "application/json": {"schema": {"type": "object", "properties": properties}}
                    },
                },
                "400": http.error_spec("parameters missing, malformed or beyond the tree"),
                "404": http.error_spec("no such entry"),
            },
        }
    }


def _hash_param(request: Request) -> bytes:
    """The ``hash`` query parameter: a base64 SHA-256 leaf hash."""
    raw = request.query_params.get("hash")
    if raw is None:
        raise InvalidRequest("query parameter 'hash' is required")
    return b64decode(raw, what="hash")


_CHAIN_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["chain"],
                "properties": {
                    "chain": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "string", "contentEncoding": "base64"},
                        "description": "DER certificates, base64, leaf first; the last "
                        "one is an accepted root or is issued by one.",
                    }
                },
            }
        }
    },
}

_SCT_SCHEMA = {
    "type": "object",
    "required": ["sct_version", "id", "timestamp", "extensions", "signature"],
    "properties": {
        "sct_version": {"type": "integer", "const": 0},
        "id": {"type": "string", "description": "base64 LogID (SHA-256 of the log's SPKI)"},
        "timestamp": {"type": "integer", "description": "milliseconds since the epoch"},
        "extensions": {"type": "string", "description": "base64 CtExtensions"},
        "signature": {"type": "string", "description": "base64 TLS DigitallySigned"},
    },
}


def _submission(summary: str, rfc_section: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": f"RFC 6962 section {rfc_section}. The SCT is returned only "
            "once the entry is durably in the log (zero merge delay).",
            "requestBody": _CHAIN_BODY,
            "responses": {
                "200": {
                    "description": "the SCT",
                    "content": {"application/json": {"schema": _SCT_SCHEMA}},
                },
                "400": http.error_spec("malformed request or a chain that does not validate"),
                "413": http.error_spec("request body too large"),
                "503": http.error_spec("the log is overloaded or not serving; retry"),
            },
        }
    }


def _static(summary: str, media_type: str, param: str | None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {"description": summary, "content": {media_type: {}}},
            "400": http.error_spec("malformed path"),
            "404": http.error_spec("not covered by the current checkpoint"),
        },
    }
    if param is not None:
        op["parameters"] = [
            {"name": param, "in": "path", "required": True, "schema": {"type": "string"}}
        ]
    return {"get": op}


OPENAPI = http.openapi_document(
    "sigstack CT log",
    "RFC 6962 certificate transparency log (submission API); the Merkle tree and "
    "checkpoints follow c2sp.org/static-ct-api.",
    {
        f"{PREFIX}/add-chain": _submission("Log a certificate chain", "4.1"),
        f"{PREFIX}/add-pre-chain": _submission("Log a precertificate chain", "4.2"),
        f"{PREFIX}/get-roots": {
            "get": {
                "summary": "Accepted root certificates",
                "description": "RFC 6962 section 4.7.",
                "responses": {
                    "200": {
                        "description": "base64 DER roots",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["certificates"],
                                    "properties": {
                                        "certificates": {
                                            "type": "array",
                                            "items": {"type": "string"},
                                        }
                                    },
                                }
                            }
                        },
                    }
                },
            }
        },
        f"{PREFIX}/get-sth-consistency": {
            "get": {
                "summary": "Consistency proof between two tree sizes",
                "description": "RFC 6962 section 4.4.",
                "parameters": [
                    {"name": n, "in": "query", "required": True, "schema": {"type": "integer"}}
                    for n in ("first", "second")
                ],
                "responses": {
                    "200": {
                        "description": "the proof, base64 hashes",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["consistency"],
                                    "properties": {
                                        "consistency": {
                                            "type": "array",
                                            "items": {"type": "string"},
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "400": http.error_spec("sizes missing, malformed or beyond the tree"),
                },
            }
        },
        f"{PREFIX}/get-entries": _read_op(
            "Entries start..end (inclusive), at most 256 per answer (RFC 6962 4.6)",
            ("start", "end"),
            {"entries": {"type": "array", "items": {"type": "object"}}},
        ),
        f"{PREFIX}/get-proof-by-hash": _read_op(
            "Audit path of the first entry with this leaf hash (RFC 6962 4.5)",
            ("hash", "tree_size"),
            {"leaf_index": {"type": "integer"}, "audit_path": {"type": "array"}},
        ),
        f"{PREFIX}/get-entry-and-proof": _read_op(
            "One entry and its audit path (RFC 6962 4.8)",
            ("leaf_index", "tree_size"),
            {
                "leaf_input": {"type": "string"},
                "extra_data": {"type": "string"},
                "audit_path": {"type": "array"},
            },
        ),
        "/checkpoint": _static(
            "Latest checkpoint (static-ct-api)", "text/plain; charset=utf-8", None
        ),
        "/tile/{path}": _static(
            "Merkle hash tile tile/<L>/<N>[.p/<W>] (static-ct-api)",
            "application/octet-stream",
            "path",
        ),
        "/tile/data/{path}": _static(
            "Data tile of TileLeaf records tile/data/<N>[.p/<W>] (static-ct-api)",
            "application/octet-stream",
            "path",
        ),
        "/issuer/{fingerprint}": _static(
            "Issuer certificate by lowercase hex SHA-256 (static-ct-api)",
            "application/pkix-cert",
            "fingerprint",
        ),
        f"{PREFIX}/get-sth": {
            "get": {
                "summary": "Latest signed tree head",
                "description": "RFC 6962 section 4.3, derived from the stored checkpoint.",
                "responses": {
                    "200": {
                        "description": "the signed tree head",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": [
                                        "tree_size",
                                        "timestamp",
                                        "sha256_root_hash",
                                        "tree_head_signature",
                                    ],
                                    "properties": {
                                        "tree_size": {"type": "integer"},
                                        "timestamp": {"type": "integer"},
                                        "sha256_root_hash": {"type": "string"},
                                        "tree_head_signature": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                    "503": http.error_spec("the log is not serving"),
                },
            }
        },
    },
)


def create_app(service: CTLogService) -> ASGIApp:
    """The CT log's ASGI app.

    The app does not own ``service``: whoever opened it (``open_ctlog``) closes it
    with ``await service.close()``; shutting the app down leaves it open.
    """
    limit = service.config.max_body_bytes

    async def add_chain(request: Request) -> Response:
        chain = parse_chain_request(await http.read_json(request, limit))
        sct = await service.add_chain(chain)
        return http.json_response(sct.to_json())

    async def add_pre_chain(request: Request) -> Response:
        chain = parse_chain_request(await http.read_json(request, limit))
        sct = await service.add_pre_chain(chain)
        return http.json_response(sct.to_json())

    async def get_roots(_: Request) -> Response:
        return http.json_response({"certificates": [b64(d) for d in service.get_roots()]})

    async def get_sth(_: Request) -> Response:
        return http.json_response(
            service.get_sth().to_json(), headers={"Cache-Control": "no-store"}
        )

    async def get_sth_consistency(request: Request) -> Response:
        first = _size_param(request, "first")
        second = _size_param(request, "second")
        proof = await asyncio.to_thread(service.get_sth_consistency, first, second)
        return http.json_response({"consistency": [b64(h) for h in proof]})

    async def get_entries(request: Request) -> Response:
        start, end = _size_param(request, "start"), _size_param(request, "end")
        entries = await asyncio.to_thread(service.get_entries, start, end)
        return http.json_response(
            {
                "entries": [
                    {"leaf_input": b64(leaf), "extra_data": b64(extra)} for leaf, extra in entries
                ]
            }
        )

    async def get_proof_by_hash(request: Request) -> Response:
        leaf_hash, tree_size = _hash_param(request), _size_param(request, "tree_size")
        index, path = await asyncio.to_thread(service.get_proof_by_hash, leaf_hash, tree_size)
        return http.json_response({"leaf_index": index, "audit_path": [b64(h) for h in path]})

    async def get_entry_and_proof(request: Request) -> Response:
        index, tree_size = _size_param(request, "leaf_index"), _size_param(request, "tree_size")
        leaf, extra, path = await asyncio.to_thread(service.get_entry_and_proof, index, tree_size)
        return http.json_response(
            {
                "leaf_input": b64(leaf),
                "extra_data": b64(extra),
                "audit_path": [b64(h) for h in path],
            }
        )

    async def checkpoint(_: Request) -> Response:
        return Response(
            service.read_checkpoint(),
            media_type="text/plain; charset=utf-8",
            headers={"Cache-Control": http.CHECKPOINT_CACHE_CONTROL},
        )

    async def data_tile(request: Request) -> Response:
        data = await asyncio.to_thread(service.read_data_tile, request.path_params["rest"])
        return Response(data, media_type="application/octet-stream", headers=_IMMUTABLE)

    async def hash_tile(request: Request) -> Response:
        data = await asyncio.to_thread(service.read_tile, "tile/" + request.path_params["rest"])
        return Response(data, media_type="application/octet-stream", headers=_IMMUTABLE)

    async def issuer(request: Request) -> Response:
        der = await asyncio.to_thread(service.get_issuer, request.path_params["fingerprint"])
        return Response(der, media_type="application/pkix-cert", headers=_IMMUTABLE)

    routes = [
        Route(f"{PREFIX}/add-chain", add_chain, methods=["POST"]),
        Route(f"{PREFIX}/add-pre-chain", add_pre_chain, methods=["POST"]),
        Route(f"{PREFIX}/get-roots", get_roots, methods=["GET"]),
        Route(f"{PREFIX}/get-sth", get_sth, methods=["GET"]),
        Route(f"{PREFIX}/get-sth-consistency", get_sth_consistency, methods=["GET"]),
        Route(f"{PREFIX}/get-entries", get_entries, methods=["GET"]),
        Route(f"{PREFIX}/get-proof-by-hash", get_proof_by_hash, methods=["GET"]),
        Route(f"{PREFIX}/get-entry-and-proof", get_entry_and_proof, methods=["GET"]),
        Route("/checkpoint", checkpoint, methods=["GET"]),
        Route("/tile/data/{rest:path}", data_tile, methods=["GET"]),
        Route("/tile/{rest:path}", hash_tile, methods=["GET"]),
        Route("/issuer/{fingerprint}", issuer, methods=["GET"]),
    ]
    return http.create_app(
        SERVICE_NAME,
        routes,
        openapi=OPENAPI,
        health=service.check_health,
    )
