"""Fulcio: the certificate authority that binds OIDC identities to short-lived signing keys.

Wiring (what ``sigstack.stack`` does with loaded state)::

    issuers = IssuerAllowList.of([builtin_issuer("http://127.0.0.1:PORT")])
    issuers = issuers.merged(IssuerAllowList.load(user_file))        # optional
    config = FulcioConfig(issuers=issuers)
    verifier = TokenVerifier.from_config(config)
    ct = HttpCTSubmitter(ct_base_url, ct_public_key, timeout=config.fetch_timeout)
    service = FulcioService(config, intermediate_key, [intermediate, root], ct, verifier)
    app = create_app(service)

Modules: ``config`` (issuer allow-list, limits), ``identity`` (issuer types and the
claim-to-certificate mapping), ``oidc`` (token verification, JWKS), ``ctclient``
(precertificate submission, SCT checks), ``service`` (issuance), ``api`` (HTTP).
"""

from sigstack.services.fulcio.api import create_app
from sigstack.services.fulcio.config import (
    FulcioConfig,
    IssuerAllowList,
    MetaIssuer,
    OIDCIssuer,
    builtin_issuer,
)
from sigstack.services.fulcio.ctclient import CTSubmitter, HttpCTSubmitter
from sigstack.services.fulcio.oidc import HttpxFetcher, TokenVerifier, VerifiedToken
from sigstack.services.fulcio.service import FulcioService, IssuedCertificate

__all__ = [
    "CTSubmitter",
    "FulcioConfig",
    "FulcioService",
    "HttpCTSubmitter",
    "HttpxFetcher",
    "IssuedCertificate",
    "IssuerAllowList",
    "MetaIssuer",
    "OIDCIssuer",
    "TokenVerifier",
    "VerifiedToken",
    "builtin_issuer",
    "create_app",
]
