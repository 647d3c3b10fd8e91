"""Built-in OIDC issuer for test and CI stacks.

``OIDCIssuer`` (service) mints ES256 identity tokens that Fulcio and Sigstore
clients accept; ``create_app`` (api) serves discovery, JWKS and, only when
``OIDCConfig.allow_token_endpoint`` is set, a token endpoint that mints a token for
any identity. Production stacks point Fulcio at a real identity provider instead.
"""

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
