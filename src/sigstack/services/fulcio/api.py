"""Fulcio's HTTP API: a thin mapping of upstream's REST routes onto :class:`FulcioService`.

Routes (served at the root of the origin: sigstore-python ignores a path prefix):

* ``POST /api/v2/signingCert``: both request shapes real clients send (interop.md
  section 3). The token comes from ``credentials.oidcIdentityToken`` or an
  ``Authorization: Bearer`` header (two different tokens are refused). The key comes
  from ``certificateSigningRequest`` (base64 of a PEM CSR, sigstore-python) or
  ``publicKeyRequest {publicKey {algorithm, content}, proofOfPossession}`` (sigstore-js
  and sigstore-go). protojson's snake_case spellings are accepted too. Answers exactly
  200 ``{"signedCertificateEmbeddedSct": {"chain": {"certificates": [leaf, ..., root]}}}``
  with standard 64-column PEM strings.
* ``GET /api/v2/trustBundle``, ``GET /api/v2/configuration``, ``GET /api/v1/rootCert``.
* ``POST /api/v1/signingCert``: upstream's legacy API (cosign v2):
  ``{"publicKey": {"content": base64 DER or PEM, "algorithm"}, "signedEmailAddress":
  base64 signature over the email (else sub)}`` with the token as ``Authorization:
  Bearer``; answers 201 with the PEM chain (leaf first) as
  ``application/pem-certificate-chain``. The SCT is embedded in the certificate, so no
  detached ``SCT`` header is sent.
* ``GET /healthz``, ``GET /openapi.json``, ``GET /metrics`` (from ``services.http``).

Errors are ``{"code", "message"}`` with the status of the ``SigstackError`` raised; the
token is never part of a message. Bodies larger than ``FulcioConfig.max_body_bytes`` are
refused with 413 before they are buffered.

Lifecycle: the app's shutdown runs ``FulcioService.aclose()``, which closes the CT
submitter's connection pool.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from sigstack.core.encoding import b64, b64decode
from sigstack.core.errors import AuthenticationError, InvalidRequest
from sigstack.services.fulcio.service import FulcioService, IssuedCertificate
from sigstack.services.http import create_app as create_http_app
from sigstack.services.http import (
    error_spec,
    json_response,
    openapi_document,
    read_json,
)

PEM_CHAIN_MEDIA_TYPE = "application/pem-certificate-chain"


def _field(obj: dict[str, Any], camel: str, snake: str) -> Any:
    """A protojson field under its JSON name or its proto name."""
    if camel in obj:
        return obj[camel]
    return obj.get(snake)


def _protojson_bytes(value: Any, what: str) -> bytes:
    """A protojson ``bytes`` field: standard or URL-safe base64, padding optional.

    protojson accepts both alphabets with or without padding, so the text is normalized
    to padded standard base64 and then decoded strictly (``core.encoding.b64decode``).
    """
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{what} must be a non-empty base64 string")
    text = "".join(value.split()).replace("-", "+").replace("_", "/")
    return b64decode(text + "=" * (-len(text) % 4), what=what)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthenticationError("the Authorization header must be 'Bearer <OIDC token>'")
    return value.strip()


def _token(request: Request, body: dict[str, Any]) -> str:
    from_header = _bearer(request)
    credentials = body.get("credentials")
    from_body: Any = None
    if credentials is not None:
        if not isinstance(credentials, dict):
            raise InvalidRequest("credentials must be an object")
        from_body = _field(credentials, "oidcIdentityToken", "oidc_identity_token")
        if from_body is not None and not isinstance(from_body, str):
            raise InvalidRequest("credentials.oidcIdentityToken must be a string")
    if from_body and from_header and from_body.strip() != from_header:
        raise InvalidRequest(
            "two different identity tokens were sent (Authorization header and credentials); "
            "send one"
        )
    token = from_body or from_header
    if not token:
        raise AuthenticationError(
            "no OIDC identity token: send it as 'Authorization: Bearer <token>' or in "
            "credentials.oidcIdentityToken"
        )
    return str(token)


def _signing_cert_response(issued: IssuedCertificate) -> Response:
    return json_response(
        {"signedCertificateEmbeddedSct": {"chain": {"certificates": issued.pem_chain()}}},
        status=200,
    )


def create_app(service: FulcioService) -> ASGIApp:
    """The Fulcio ASGI app for ``service``."""
    limit = service.config.max_body_bytes

    async def signing_cert(request: Request) -> Response:
        body = await read_json(request, limit)
        if not isinstance(body, dict):
            raise InvalidRequest("the request body must be a JSON object")
        token = _token(request, body)
        csr = _field(body, "certificateSigningRequest", "certificate_signing_request")
        pkr = _field(body, "publicKeyRequest", "public_key_request")
        if csr is not None and pkr is not None:
            raise InvalidRequest(
                "send either certificateSigningRequest or publicKeyRequest, not both"
            )
        if csr is not None:
            issued = await service.issue_from_csr(
                token, _protojson_bytes(csr, "certificateSigningRequest")
            )
            return _signing_cert_response(issued)
        if pkr is None:
            raise InvalidRequest(
                "the request needs certificateSigningRequest (base64 PEM CSR) or "
                "publicKeyRequest {publicKey {content}, proofOfPossession}"
            )
        if not isinstance(pkr, dict):
            raise InvalidRequest("publicKeyRequest must be an object")
        public_key = _field(pkr, "publicKey", "public_key")
        if not isinstance(public_key, dict):
            raise InvalidRequest("publicKeyRequest.publicKey must be an object")
        content = public_key.get("content")
        if not isinstance(content, str) or not content:
            raise InvalidRequest("publicKeyRequest.publicKey.content must be a PEM public key")
        proof = _protojson_bytes(
            _field(pkr, "proofOfPossession", "proof_of_possession"),
            "publicKeyRequest.proofOfPossession",
        )
        issued = await service.issue_from_public_key(token, content, proof)
        return _signing_cert_response(issued)

    async def legacy_signing_cert(request: Request) -> Response:
        body = await read_json(request, limit)
        if not isinstance(body, dict):
            raise InvalidRequest("the request body must be a JSON object")
        token = _bearer(request)
        if not token:
            raise AuthenticationError(
                "no OIDC identity token: send 'Authorization: Bearer <token>'"
            )
        public_key = _field(body, "publicKey", "public_key")
        if not isinstance(public_key, dict):
            raise InvalidRequest("publicKey must be an object {content, algorithm}")
        content = _protojson_bytes(public_key.get("content"), "publicKey.content")
        if not content.lstrip().startswith(b"-----BEGIN"):
            content = b64(content).encode()  # DER: load_public_key takes base64 DER text
        proof = _protojson_bytes(
            _field(body, "signedEmailAddress", "signed_email_address"), "signedEmailAddress"
        )
        issued = await service.issue_from_public_key(token, content, proof)
        return Response(
            "".join(issued.pem_chain()), status_code=201, media_type=PEM_CHAIN_MEDIA_TYPE
        )

    async def trust_bundle(_: Request) -> Response:
        return json_response(service.trust_bundle())

    async def configuration(_: Request) -> Response:
        return json_response(service.configuration())

    async def root_cert(_: Request) -> Response:
        return Response(service.root_cert_chain_pem(), media_type=PEM_CHAIN_MEDIA_TYPE)

    routes = [
        Route("/api/v2/signingCert", signing_cert, methods=["POST"]),
        Route("/api/v2/trustBundle", trust_bundle, methods=["GET"]),
        Route("/api/v2/configuration", configuration, methods=["GET"]),
        Route("/api/v1/rootCert", root_cert, methods=["GET"]),
        Route("/api/v1/signingCert", legacy_signing_cert, methods=["POST"]),
    ]
    return create_http_app(
        "fulcio", routes, openapi=OPENAPI, health=service.health, on_shutdown=[service.aclose]
    )


_ERRORS = {
    str(code): error_spec(text)
    for code, text in (
        (400, "malformed request, unparsable key or CSR, failed proof of possession"),
        (401, "missing or invalid identity token (the message names the failed check)"),
        (413, "request body too large"),
        (502, "the CT log failed or returned an invalid SCT"),
        (503, "the CA cannot issue now (certificate chain not valid for a full lifetime)"),
    )
}

_CHAIN = {
    "type": "object",
    "required": ["certificates"],
    "properties": {"certificates": {"type": "array", "items": {"type": "string"}}},
}

OPENAPI: dict[str, Any] = openapi_document(
    "sigstack Fulcio",
    "Issues short-lived code-signing certificates for OIDC identities, with an embedded SCT.",
    {
        "/api/v2/signingCert": {
            "post": {
                "summary": "Issue a signing certificate",
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "credentials": {
                                        "type": "object",
                                        "properties": {"oidcIdentityToken": {"type": "string"}},
                                    },
                                    "certificateSigningRequest": {
                                        "type": "string",
                                        "description": "base64 of a PEM CSR",
                                    },
                                    "publicKeyRequest": {
                                        "type": "object",
                                        "properties": {
                                            "publicKey": {
                                                "type": "object",
                                                "properties": {
                                                    "algorithm": {"type": "string"},
                                                    "content": {"type": "string"},
                                                },
                                            },
                                            "proofOfPossession": {
                                                "type": "string",
                                                "description": "base64 signature over the "
                                                "token's email claim, else its sub",
                                            },
                                        },
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "leaf, intermediates and root as PEM strings",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "signedCertificateEmbeddedSct": {
                                            "type": "object",
                                            "properties": {"chain": _CHAIN},
                                        }
                                    },
                                }
                            }
                        },
                    },
                    **_ERRORS,
                },
            }
        },
        "/api/v2/trustBundle": {
            "get": {
                "summary": "The CA certificate chains",
                "responses": {
                    "200": {
                        "description": "chains of PEM certificates",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"chains": {"type": "array", "items": _CHAIN}},
                                }
                            }
                        },
                    }
                },
            }
        },
        "/api/v2/configuration": {
            "get": {
                "summary": "The OIDC issuers this Fulcio accepts",
                "responses": {
                    "200": {
                        "description": "issuers with audience, type and challenge claim",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "issuers": {"type": "array", "items": {"type": "object"}}
                                    },
                                }
                            }
                        },
                    }
                },
            }
        },
        "/api/v1/rootCert": {
            "get": {
                "summary": "The CA chain as concatenated PEM",
                "responses": {
                    "200": {
                        "description": "PEM chain, issuing CA first",
                        "content": {PEM_CHAIN_MEDIA_TYPE: {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/api/v1/signingCert": {
            "post": {
                "summary": "Legacy signing certificate API (cosign v2)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["publicKey", "signedEmailAddress"],
                                "properties": {
                                    "publicKey": {
                                        "type": "object",
                                        "properties": {
                                            "content": {"type": "string"},
                                            "algorithm": {"type": "string"},
                                        },
                                    },
                                    "signedEmailAddress": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": {
                        "description": "PEM chain, leaf first (SCT embedded)",
                        "content": {PEM_CHAIN_MEDIA_TYPE: {"schema": {"type": "string"}}},
                    },
                    "400": error_spec("malformed request, key or proof of possession"),
                    "401": error_spec("missing or invalid identity token"),
                },
            }
        },
    },
)
