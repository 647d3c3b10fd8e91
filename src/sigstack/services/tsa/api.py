"""HTTP front of the timestamp authority, shaped like sigstore/timestamp-authority.

Routes (besides ``/healthz``, ``/openapi.json`` and ``/metrics`` from ``services.http``):

* ``POST /api/v1/timestamp``
  - ``Content-Type: application/timestamp-query``: a DER ``TimeStampReq`` (sigstore-python,
    sigstore-go, ``openssl ts``). Granted: 200 with the DER ``TimeStampResp``. Refused:
    400 with the DER rejection ``TimeStampResp`` (status 2 and its PKIFailureInfo), so
    RFC 3161 tools can read why.
  - ``Content-Type: application/json``: upstream's JSON form (sigstore-js). Granted: 200 with
    the DER ``TimeStampResp``. Refused: 400 ``{"code", "message"}``.
  - Any other media type: 415. A body over the configured limit: 413.
  Granted answers are ``application/timestamp-reply``.
* ``GET /api/v1/timestamp/certchain``: the PEM chain, leaf first
  (``application/pem-certificate-chain``).

Status 200 for a granted timestamp: upstream's default since v2.0.0 (``--use-http-201`` is
the opt-in legacy); sigstore-python calls ``raise_for_status``, sigstore-go accepts 200 or 201,
and sigstore-js accepts any 2xx.

``/healthz`` fails (503) while the signer certificate is not valid, since nothing can be
issued then.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from sigstack.core.errors import InvalidRequest
from sigstack.services.http import create_app as create_http_app
from sigstack.services.http import error_spec, openapi_document, read_body
from sigstack.services.tsa.service import TIMESTAMP_QUERY, TIMESTAMP_REPLY, TimestampAuthority

TIMESTAMP_PATH = "/api/v1/timestamp"
CERTCHAIN_PATH = "/api/v1/timestamp/certchain"
PEM_CHAIN = "application/pem-certificate-chain"
JSON = "application/json"


class UnsupportedMediaType(InvalidRequest):
    """The request's Content-Type is not one this endpoint reads (HTTP 415)."""

    http_status = 415


def _media_type(request: Request) -> str:
    header = request.headers.get("content-type", "")
    return header.split(";", 1)[0].strip().lower()


def _reply(der: bytes, status: int = 200) -> Response:
    return Response(der, status_code=status, media_type=TIMESTAMP_REPLY)


def _binary(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {TIMESTAMP_REPLY: {"schema": {"type": "string", "format": "binary"}}},
    }


def _openapi(body_limit: int) -> dict[str, Any]:
    json_request = {
        "type": "object",
        "required": ["artifactHash", "hashAlgorithm"],
        "properties": {
            "artifactHash": {
                "type": "string",
                "description": "standard base64 of the digest to timestamp",
            },
            "hashAlgorithm": {"type": "string", "enum": ["sha256", "sha384", "sha512"]},
            "nonce": {"type": "integer", "description": "echoed in the token"},
            "certificates": {
                "type": "boolean",
                "default": False,
                "description": "embed the certificate chain in the token",
            },
            "tsaPolicyOID": {
                "type": "string",
                "description": "must be this TSA's policy if given",
            },
        },
    }
    paths = {
        TIMESTAMP_PATH: {
            "post": {
                "operationId": "getTimestampResponse",
                "summary": "Issue an RFC 3161 timestamp token",
                "description": (
                    f"Request bodies are limited to {body_limit} bytes. A refused DER request "
                    "is answered 400 with a DER TimeStampResp whose status is rejection."
                ),
                "requestBody": {
                    "required": True,
                    "content": {
                        TIMESTAMP_QUERY: {"schema": {"type": "string", "format": "binary"}},
                        JSON: {"schema": json_request},
                    },
                },
                "responses": {
                    "200": _binary("a granted DER TimeStampResp"),
                    "400": {
                        "description": (
                            "refused: a DER rejection TimeStampResp for DER requests, "
                            "an Error for JSON requests"
                        ),
                        "content": {
                            TIMESTAMP_REPLY: {"schema": {"type": "string", "format": "binary"}},
                            JSON: {"schema": {"$ref": "#/components/schemas/Error"}},
                        },
                    },
                    "413": error_spec("request body too large"),
                    "415": error_spec("unsupported Content-Type"),
                    "503": error_spec("the signer certificate is not valid now"),
                },
            }
        },
        CERTCHAIN_PATH: {
            "get": {
                "operationId": "getTimestampCertChain",
                "summary": "The TSA certificate chain, signer leaf first, root last",
                "responses": {
                    "200": {
                        "description": "PEM certificate chain",
                        "content": {PEM_CHAIN: {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }
    return openapi_document(
        "sigstack timestamp authority",
        "RFC 3161 timestamp authority compatible with sigstore/timestamp-authority.",
        paths,
    )


def create_app(service: TimestampAuthority) -> ASGIApp:
    """The TSA's ASGI application."""

    async def timestamp(request: Request) -> Response:
        media = _media_type(request)
        if media not in (TIMESTAMP_QUERY, JSON):
            raise UnsupportedMediaType(
                f"Content-Type {media or '(none)'!r} is not supported; send a DER "
                f"TimeStampReq as {TIMESTAMP_QUERY} or the JSON form as {JSON}"
            )
        body = await read_body(request, service.body_limit)
        if media == JSON:
            # TimestampRejected is an InvalidRequest: mapped to 400 {"code", "message"}.
            return _reply(service.timestamp_json(body))
        answer = service.timestamp(body)
        return _reply(answer.der, 200 if answer.granted else 400)

    async def certchain(_: Request) -> Response:
        return Response(service.chain_pem(), media_type=PEM_CHAIN)

    async def health() -> None:
        service.check_ready()

    return create_http_app(
        "tsa",
        [
            Route(TIMESTAMP_PATH, timestamp, methods=["POST"]),
            Route(CERTCHAIN_PATH, certchain, methods=["GET"]),
        ],
        openapi=_openapi(service.body_limit),
        health=health,
    )
