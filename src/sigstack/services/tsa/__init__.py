"""RFC 3161 timestamp authority (sigstore/timestamp-authority compatible).

``config.TSAConfig`` (validated signer key and chain, fails closed),
``service.TimestampAuthority`` (request parsing, token issuance, rejections; no web
framework) and ``api.create_app`` (the HTTP routes). This package imports only the
framework-free layers; import ``sigstack.services.tsa.api`` for the ASGI app.
"""

from sigstack.services.tsa.config import DEFAULT_POLICY_OID, TSAConfig
from sigstack.services.tsa.service import (
    FailureInfo,
    TimestampAuthority,
    TimestampRejected,
    TimestampReply,
)

__all__ = [
    "DEFAULT_POLICY_OID",
    "FailureInfo",
    "TSAConfig",
    "TimestampAuthority",
    "TimestampRejected",
    "TimestampReply",
]
