"""HTTP face of the built-in OIDC issuer.

Routes (relative to where the app is mounted, which must be the issuer URL's path):

* ``GET /.well-known/openid-configuration``: the discovery document.
* ``GET /keys``: the JWKS (the discovery document's ``jwks_uri``).
* ``POST /token`` (JSON object or ``application/x-www-form-urlencoded``) and
  ``GET /token?email=...``: mint a token. Fields: ``email``, ``subject``,
  ``audience``, ``lifetime_seconds`` (at least one of email/subject). Answer:
  ``{"access_token", "id_token", "token_type": "Bearer", "expires_in"}`` with
  ``Cache-Control: no-store``; both token fields hold the same JWT (sigstore-python
  reads ``access_token``, CI scripts usually ``id_token``).
* ``GET /healthz``, ``GET /openapi.json``, ``GET /metrics`` (``sigstack.services.http``).

SECURITY: ``/token`` hands out a token for ANY identity to anyone who can reach it,
so Fulcio will certify any identity for them. It exists for test and CI stacks
only. It is served only when ``OIDCConfig.allow_token_endpoint`` is true (otherwise
it answers 404 and the discovery document omits it), and the stack binds it to
loopback by default. Never enable it on an issuer that a production Fulcio trusts.
Tokens are never logged; the body limit on ``/token`` is small.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from sigstack.core.errors import InvalidRequest
from sigstack.core.net import is_loopback_host
from sigstack.services.http import create_app as create_service_app
from sigstack.services.http import error_spec, json_response, openapi_document, read_body, read_json
from sigstack.services.oidc.service import (
    ALGORITHM,
    DISCOVERY_PATH,
    JWKS_PATH,
    TOKEN_PATH,
    OIDCIssuer,
)

log = logging.getLogger("sigstack.oidc")

SERVICE_NAME = "oidc"
TOKEN_BODY_LIMIT = 4096
TOKEN_FIELDS = ("email", "subject", "audience", "lifetime_seconds")
_PUBLIC_CACHE = {"Cache-Control": "public, max-age=300"}
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _single_values(pairs: list[tuple[str, str]], where: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, value in pairs:
        if name in fields:
            raise InvalidRequest(f"{where} field {name!r} is given more than once")
        fields[name] = value
    return fields


async def _token_fields(request: Request) -> dict[str, Any]:
    """The token request's fields from the query string (GET) or the body (POST)."""
    if request.method == "GET":
        return _single_values(request.query_params.multi_items(), "query")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        body = await read_json(request, TOKEN_BODY_LIMIT)
        if not isinstance(body, dict):
            raise InvalidRequest("token request body must be a JSON object")
        return body
    if content_type == "application/x-www-form-urlencoded":
        raw = await read_body(request, TOKEN_BODY_LIMIT)
        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidRequest(f"token request form is malformed: {exc}") from exc
        return _single_values(pairs, "form")
    raise InvalidRequest(
        "token request must be JSON (application/json) or a form "
        "(application/x-www-form-urlencoded)"
    )


def _optional_str(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string")
    return value


def _lifetime(fields: dict[str, Any]) -> timedelta | None:
    value = fields.get("lifetime_seconds")
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest("lifetime_seconds must be a whole number of seconds")
    return timedelta(seconds=value)


def openapi(issuer: OIDCIssuer) -> dict[str, Any]:
    """The OpenAPI document of this app (the token endpoint only when enabled)."""
    json_object = {"content": {"application/json": {"schema": {"type": "object"}}}}
    paths: dict[str, Any] = {
        DISCOVERY_PATH: {
            "get": {
                "summary": "OpenID Provider configuration (OpenID Connect Discovery 1.0)",
                "responses": {"200": {"description": "discovery document", **json_object}},
            }
        },
        JWKS_PATH: {
            "get": {
                "summary": f"JSON Web Key Set with the {ALGORITHM} token signing key",
                "responses": {"200": {"description": "JWKS", **json_object}},
            }
        },
    }
    if issuer.token_endpoint_enabled:
        token_props = {
            "email": {"type": "string", "format": "email"},
            "subject": {"type": "string", "description": "defaults to the email"},
            "audience": {"type": "string", "default": issuer.config.default_audience},
            "lifetime_seconds": {
                "type": "integer",
                "default": int(issuer.config.default_lifetime.total_seconds()),
            },
        }
        token_schema = {"type": "object", "properties": token_props, "additionalProperties": False}
        token_response = {
            "description": "a freshly minted identity token",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["access_token", "id_token", "token_type", "expires_in"],
                        "properties": {
                            "access_token": {"type": "string"},
                            "id_token": {"type": "string"},
                            "token_type": {"const": "Bearer"},
                            "expires_in": {"type": "integer"},
                        },
                    }
                }
            },
        }
        responses = {"200": token_response, "400": error_spec("invalid request")}
        paths[TOKEN_PATH] = {
            "get": {
                "summary": "Mint a token for any identity (TEST/CI STACKS ONLY)",
                "parameters": [
                    {"name": name, "in": "query", "schema": schema}
                    for name, schema in token_props.items()
                ],
                "responses": responses,
            },
            "post": {
                "summary": "Mint a token for any identity (TEST/CI STACKS ONLY)",
                "requestBody": {
                    "content": {
                        "application/json": {"schema": token_schema},
                        "application/x-www-form-urlencoded": {"schema": token_schema},
                    }
                },
                "responses": responses,
            },
        }
    return openapi_document(
        "sigstack OIDC issuer",
        "Built-in OpenID Connect issuer for test and CI stacks.",
        paths,
    )


def create_app(issuer: OIDCIssuer) -> ASGIApp:
    """The issuer's ASGI app (discovery, JWKS and, when enabled, the CI token endpoint)."""

    async def discovery(_: Request) -> Response:
        return json_response(issuer.discovery(), headers=_PUBLIC_CACHE)

    async def jwks(_: Request) -> Response:
        return json_response(issuer.jwks(), headers=_PUBLIC_CACHE)

    async def token(request: Request) -> Response:
        fields = await _token_fields(request)
        unknown = sorted(set(fields) - set(TOKEN_FIELDS))
        if unknown:
            raise InvalidRequest(
                f"unknown token request field(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(TOKEN_FIELDS)}"
            )
        lifetime = _lifetime(fields)
        minted = issuer.mint(
            email=_optional_str(fields, "email"),
            subject=_optional_str(fields, "subject"),
            audience=_optional_str(fields, "audience"),
            lifetime=lifetime,
        )
        effective = lifetime if lifetime is not None else issuer.config.default_lifetime
        body = {
            "access_token": minted,
            "id_token": minted,
            "token_type": "Bearer",
            "expires_in": int(effective.total_seconds()),
        }
        return json_response(body, headers=_NO_STORE)

    routes = [
        Route(DISCOVERY_PATH, discovery, methods=["GET"]),
        Route(JWKS_PATH, jwks, methods=["GET"]),
    ]
    if issuer.token_endpoint_enabled:
        routes.append(Route(TOKEN_PATH, token, methods=["GET", "POST"]))
        if not is_loopback_host(urlsplit(issuer.issuer_url).hostname or ""):
            log.warning(
                "OIDC token endpoint is enabled on non-loopback issuer %s: anyone who can "
                "reach it can obtain a token for any identity (test/CI stacks only)",
                issuer.issuer_url,
            )
    return create_service_app(SERVICE_NAME, routes, openapi=openapi(issuer))
