"""Configuration of the built-in OIDC issuer (fails closed).

``OIDCConfig`` is validated on construction: an unusable issuer URL, a signing key
that is not ECDSA P-256, an empty audience or a default token lifetime outside
``[MIN_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME]`` raise ``ConfigError`` before any
service starts. The signing key never appears in ``repr`` (and so never in logs).

The CI token endpoint, which mints a token for any identity on request, is OFF
unless ``allow_token_endpoint=True``: a stack that exposes it must be a test or CI
stack (see ``sigstack.services.oidc.api``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

from sigstack.core.errors import ConfigError, InvalidRequest

#: Shortest lifetime a token may be minted with.
MIN_TOKEN_LIFETIME = timedelta(minutes=1)
#: Longest lifetime a token may be minted with.
MAX_TOKEN_LIFETIME = timedelta(hours=24)
#: Lifetime of a token when the caller does not ask for one (what upstream CI tokens use).
DEFAULT_TOKEN_LIFETIME = timedelta(minutes=10)
#: The audience Sigstore clients request (their OAuth client id).
DEFAULT_AUDIENCE = "sigstore"


def check_lifetime(lifetime: timedelta) -> None:
    """Raise ``InvalidRequest`` unless ``lifetime`` is whole seconds within the allowed bounds.

    ``OIDCConfig`` turns it into a ``ConfigError`` for the configured default.
    """
    if not isinstance(lifetime, timedelta):
        raise InvalidRequest(f"token lifetime must be a timedelta, not {type(lifetime).__name__}")
    if lifetime.microseconds:
        raise InvalidRequest("token lifetime must be a whole number of seconds")
    if not MIN_TOKEN_LIFETIME <= lifetime <= MAX_TOKEN_LIFETIME:
        low, high = int(MIN_TOKEN_LIFETIME.total_seconds()), int(MAX_TOKEN_LIFETIME.total_seconds())
        raise InvalidRequest(
            f"token lifetime {int(lifetime.total_seconds())} s is outside the allowed range "
            f"{low}..{high} s"
        )


def check_audience(audience: str) -> None:
    """Raise ``InvalidRequest`` unless ``audience`` is a non-empty printable string.

    ``OIDCConfig`` turns it into a ``ConfigError`` for the configured default.
    """
    if not isinstance(audience, str) or not audience or len(audience) > 255:
        raise InvalidRequest("audience must be a non-empty string of at most 255 characters")
    if not audience.isprintable() or audience != audience.strip():
        raise InvalidRequest("audience must not contain control characters or surrounding spaces")


def _check_issuer_url(url: str) -> None:
    if not isinstance(url, str) or not url:
        raise ConfigError("OIDC issuer_url is required")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"OIDC issuer_url {url!r} must be an http:// or https:// URL")
    if not parts.hostname:
        raise ConfigError(f"OIDC issuer_url {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"OIDC issuer_url {url!r} must not carry credentials")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConfigError(f"OIDC issuer_url {url!r} must not have a query or fragment")
    if url.endswith("/"):
        # Token "iss" claims are compared byte for byte (Fulcio, clients): one spelling only.
        raise ConfigError(f"OIDC issuer_url {url!r} must not end with '/'")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ConfigError(f"OIDC issuer_url {url!r} has an invalid port") from exc


@dataclass(frozen=True)
class OIDCConfig:
    """Everything the built-in OIDC issuer needs; validated on construction.

    Attributes:
        issuer_url: the ``iss`` of every token and the base of every endpoint URL in the
            discovery document, e.g. ``http://127.0.0.1:8080``. No trailing slash, query or
            fragment. If it has a path, mount the app at that path.
        signing_key: ECDSA P-256 private key; tokens are signed ES256.
        default_audience: ``aud`` when the caller does not ask for one.
        default_lifetime: token lifetime when the caller does not ask for one.
        allow_token_endpoint: serve ``/token``, which mints a token for ANY identity on
            request. For test and CI stacks only; off by default.
    """

    issuer_url: str
    signing_key: ec.EllipticCurvePrivateKey = field(repr=False)
    default_audience: str = DEFAULT_AUDIENCE
    default_lifetime: timedelta = DEFAULT_TOKEN_LIFETIME
    allow_token_endpoint: bool = False

    def __post_init__(self) -> None:
        _check_issuer_url(self.issuer_url)
        if not isinstance(self.signing_key, ec.EllipticCurvePrivateKey):
            raise ConfigError(
                "OIDC signing_key must be an ECDSA P-256 private key, not "
                f"{type(self.signing_key).__name__}"
            )
        if not isinstance(self.signing_key.curve, ec.SECP256R1):
            raise ConfigError(
                f"OIDC signing_key must be on P-256 (ES256), not {self.signing_key.curve.name}"
            )
        try:
            check_audience(self.default_audience)
            check_lifetime(self.default_lifetime)
        except InvalidRequest as exc:
            raise ConfigError(f"OIDC configuration: {exc.message}") from exc
        if not isinstance(self.allow_token_endpoint, bool):
            raise ConfigError("OIDC allow_token_endpoint must be true or false")
