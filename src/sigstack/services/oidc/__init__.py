"""Built-in OIDC issuer for test and CI stacks.

``OIDCIssuer`` (service) mints ES256 identity tokens that Fulcio and Sigstore
clients accept; ``create_app`` (api) serves discovery, JWKS and, only when
``OIDCConfig.allow_token_endpoint`` is set, a token endpoint that mints a token for
any identity. Production stacks point Fulcio at a real identity provider instead.

The names below are imported lazily, so importing ``config`` or ``service`` (or this
package) never imports the web framework; only ``create_app`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sigstack.services.oidc.api import create_app
    from sigstack.services.oidc.config import (
        DEFAULT_AUDIENCE,
        DEFAULT_TOKEN_LIFETIME,
        MAX_TOKEN_LIFETIME,
        MIN_TOKEN_LIFETIME,
        OIDCConfig,
    )
    from sigstack.services.oidc.service import OIDCIssuer, key_id

__all__ = [
    "DEFAULT_AUDIENCE",
    "DEFAULT_TOKEN_LIFETIME",
    "MAX_TOKEN_LIFETIME",
    "MIN_TOKEN_LIFETIME",
    "OIDCConfig",
    "OIDCIssuer",
    "create_app",
    "key_id",
]

_CONFIG = frozenset(
    {
        "DEFAULT_AUDIENCE",
        "DEFAULT_TOKEN_LIFETIME",
        "MAX_TOKEN_LIFETIME",
        "MIN_TOKEN_LIFETIME",
        "OIDCConfig",
    }
)


def __getattr__(name: str) -> Any:
    if name in _CONFIG:
        from sigstack.services.oidc import config

        return getattr(config, name)
    if name in ("OIDCIssuer", "key_id"):
        from sigstack.services.oidc import service

        return getattr(service, name)
    if name == "create_app":
        from sigstack.services.oidc.api import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
