"""Fulcio: the certificate authority that binds OIDC identities to short-lived signing keys.

Wiring (what ``sigstack.stack`` does with loaded state)::

    builtin = builtin_issuer("http://127.0.0.1:PORT", jwks=oidc_issuer.jwks())  # no fetch
    issuers = IssuerAllowList.of([builtin])
    issuers = issuers.merged(IssuerAllowList.load(user_file))        # optional
    config = FulcioConfig(issuers=issuers)
    verifier = TokenVerifier.from_config(config)
    ct = HttpCTSubmitter(ct_base_url, ct_public_key, timeout=config.fetch_timeout)
    service = FulcioService(config, intermediate_key, [intermediate, root], ct, verifier)
    app = create_app(service)    # its shutdown closes the service (and so ct's connections)

Modules: ``config`` (issuer allow-list, limits), ``identity`` (issuer types and the
claim-to-certificate mapping), ``oidc`` (token verification, JWKS), ``ctclient``
(precertificate submission, SCT checks), ``service`` (issuance), ``api`` (HTTP).

The names below are imported lazily, so importing this package, ``config`` or
``service`` never imports the web framework; only ``create_app`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_MODULES = {
    "FulcioConfig": "config",
    "IssuerAllowList": "config",
    "MetaIssuer": "config",
    "OIDCIssuer": "config",
    "builtin_issuer": "config",
    "CTSubmitter": "ctclient",
    "HttpCTSubmitter": "ctclient",
    "HttpxFetcher": "oidc",
    "TokenVerifier": "oidc",
    "VerifiedToken": "oidc",
    "FulcioService": "service",
    "IssuedCertificate": "service",
    "create_app": "api",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
