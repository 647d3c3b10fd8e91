"""The built-in OIDC issuer: mints ES256 identity tokens and publishes their keys.

Guarantees:

* Every token carries ``iss`` (the configured issuer URL, byte for byte), ``sub``,
  ``aud``, ``iat``, ``nbf`` (= ``iat``), ``exp`` and a random 128-bit ``jti``; with an
  email also ``email`` and ``email_verified: true`` (Sigstore clients sign the
  proof of possession over ``email`` and refuse an unverified one). The header
  names the key (``kid``) and ``alg: ES256``.
* Inputs are validated before anything is signed: an implausible email, an empty
  subject or audience, a lifetime outside ``[MIN_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME]``,
  or extra claims that would override a registered one raise ``InvalidRequest``.
* ``kid`` is ``hex(SHA-256(SPKI DER)[:16])`` (32 hex digits): stable for a key, and
  different keys get different ids, so verifiers can cache the JWKS across restarts.
* Time comes from the injected clock; nothing here sleeps or reads the wall clock
  directly. Tokens are never logged.

This module knows nothing about HTTP; ``api.py`` maps it to routes.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from sigstack.core.clock import Clock, utcnow
from sigstack.core.errors import AuthenticationError, ConfigError, InvalidRequest
from sigstack.core.keys import spki_sha256
from sigstack.core.net import check_email
from sigstack.services.oidc.config import OIDCConfig, check_audience, check_lifetime

ALGORITHM = "ES256"
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/keys"
TOKEN_PATH = "/token"  # noqa: S105 (a URL path, not a secret)

#: Claims the issuer sets itself; ``extra_claims`` may not override them.
REGISTERED_CLAIMS = frozenset(
    {"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "email", "email_verified"}
)
#: Claims every token carries (``email`` and ``email_verified`` only with an email).
CLAIMS_SUPPORTED = ("iss", "sub", "aud", "iat", "nbf", "exp", "jti", "email", "email_verified")

_MAX_EXTRA_CLAIMS_BYTES = 8192
_MAX_SUBJECT_LENGTH = 255


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """The JWKS ``kid`` of ``public_key``: hex of the first 16 bytes of SHA-256(SPKI DER)."""
    return spki_sha256(public_key)[:16].hex()


def _check_subject(subject: str) -> None:
    if not isinstance(subject, str) or not subject:
        raise InvalidRequest("subject must be a non-empty string")
    if len(subject) > _MAX_SUBJECT_LENGTH:
        raise InvalidRequest(f"subject is longer than {_MAX_SUBJECT_LENGTH} characters")
    if not subject.isprintable() or subject != subject.strip():
        raise InvalidRequest("subject must not contain control characters or surrounding spaces")


def _check_extra_claims(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise InvalidRequest("extra_claims must be a mapping of claim name to value")
    for name in extra:
        if not isinstance(name, str) or not name:
            raise InvalidRequest("extra claim names must be non-empty strings")
    overridden = sorted(REGISTERED_CLAIMS.intersection(extra))
    if overridden:
        raise InvalidRequest(
            f"extra_claims may not set {', '.join(overridden)}: the issuer sets those itself"
        )
    try:
        encoded = json.dumps(dict(extra), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"extra_claims are not JSON-serializable: {exc}") from exc
    if len(encoded) > _MAX_EXTRA_CLAIMS_BYTES:
        raise InvalidRequest(f"extra_claims exceed {_MAX_EXTRA_CLAIMS_BYTES} bytes of JSON")
    return dict(extra)


def _b64url_uint(value: int, size: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode()


class OIDCIssuer:
    """Mints identity tokens and answers the discovery and JWKS documents."""

    def __init__(self, config: OIDCConfig, clock: Clock = utcnow) -> None:
        self._config = config
        self._clock = clock
        self._public_key = config.signing_key.public_key()
        self._kid = key_id(self._public_key)

    @property
    def config(self) -> OIDCConfig:
        return self._config

    @property
    def issuer_url(self) -> str:
        return self._config.issuer_url

    @property
    def kid(self) -> str:
        return self._kid

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    @property
    def token_endpoint_enabled(self) -> bool:
        return self._config.allow_token_endpoint

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ConfigError("the OIDC issuer clock returned a naive datetime; it must be aware")
        return now

    def mint(
        self,
        email: str | None = None,
        subject: str | None = None,
        audience: str | None = None,
        lifetime: timedelta | None = None,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed JWT for ``email`` (and/or ``subject``, which defaults to the email).

        Raises ``InvalidRequest`` naming the first input that is wrong.
        """
        if email is None and subject is None:
            raise InvalidRequest("give an email or a subject to mint a token for")
        if email is not None:
            check_email(email)
        sub = subject if subject is not None else email
        assert sub is not None
        _check_subject(sub)
        aud = audience if audience is not None else self._config.default_audience
        life = lifetime if lifetime is not None else self._config.default_lifetime
        check_audience(aud)
        check_lifetime(life)
        claims = _check_extra_claims(extra_claims)

        issued_at = int(self._now().timestamp())
        claims.update(
            iss=self._config.issuer_url,
            sub=sub,
            aud=aud,
            iat=issued_at,
            nbf=issued_at,
            exp=issued_at + int(life.total_seconds()),
            jti=secrets.token_hex(16),
        )
        if email is not None:
            claims["email"] = email
            claims["email_verified"] = True
        return jwt.encode(
            claims,
            self._config.signing_key,
            algorithm=ALGORITHM,
            headers={"kid": self._kid, "typ": "JWT"},
        )

    def verify(self, token: str, audience: str | None = None) -> dict[str, Any]:
        """The claims of ``token`` if THIS issuer signed it and it is valid now.

        Checks the signature, ``kid``, ``iss``, ``aud`` (default: the configured
        audience) and ``nbf <= now < exp`` against the injected clock. Raises
        ``AuthenticationError`` saying which check failed.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"token is not a JWT: {exc}") from exc
        if header.get("kid") != self._kid:
            raise AuthenticationError("token was not signed by this issuer's key (kid differs)")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._public_key,
                algorithms=[ALGORITHM],
                audience=audience if audience is not None else self._config.default_audience,
                issuer=self._config.issuer_url,
                options={
                    "require": ["iss", "sub", "aud", "iat", "nbf", "exp"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidSignatureError as exc:
            raise AuthenticationError(
                "token signature does not verify with the issuer key"
            ) from exc
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"token rejected: {exc}") from exc
        now = self._now().timestamp()
        if not claims["nbf"] <= now < claims["exp"]:
            raise AuthenticationError("token is not within its validity period")
        return claims

    def discovery(self) -> dict[str, Any]:
        """The OpenID Provider configuration document (OpenID Connect Discovery 1.0)."""
        base = self._config.issuer_url
        doc: dict[str, Any] = {
            "issuer": base,
            "jwks_uri": base + JWKS_PATH,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "claims_supported": list(CLAIMS_SUPPORTED),
        }
        if self._config.allow_token_endpoint:
            doc["token_endpoint"] = base + TOKEN_PATH
            doc["token_endpoint_auth_methods_supported"] = ["none"]
        return doc

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set holding the one signing key."""
        numbers = self._public_key.public_numbers()
        return {
            "keys": [
                {
                    "kty": "EC",
                    "crv": "P-256",
                    "x": _b64url_uint(numbers.x, 32),
                    "y": _b64url_uint(numbers.y, 32),
                    "kid": self._kid,
                    "alg": ALGORITHM,
                    "use": "sig",
                }
            ]
        }
