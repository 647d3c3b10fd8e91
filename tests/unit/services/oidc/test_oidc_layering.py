"""Shared primitives and layering: one loopback test, one email syntax, no web framework
under ``service``, typed errors from the configuration checks.

(``is_loopback_host`` and ``check_email`` live in ``sigstack.core.net``; they are tested
here with the services that use them.)
"""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from sigstack.core.errors import ConfigError, InvalidRequest
from sigstack.core.net import check_email
from sigstack.services.oidc.config import OIDCConfig, check_audience, check_lifetime


def test_builtin_issuer_uses_the_shared_email_check() -> None:
    from sigstack.services.oidc import service

    assert service.check_email is check_email


# --- typed errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lifetime", [timedelta(seconds=30), timedelta(days=2), timedelta(seconds=61.5), 600]
)
def test_check_lifetime_raises_invalid_request(lifetime: timedelta) -> None:
    with pytest.raises(InvalidRequest, match="lifetime"):
        check_lifetime(lifetime)


@pytest.mark.parametrize("audience", ["", " sigstore", "a\x00b", "x" * 256, None])
def test_check_audience_raises_invalid_request(audience: str) -> None:
    with pytest.raises(InvalidRequest, match="audience"):
        check_audience(audience)


def test_bad_defaults_are_config_errors_naming_the_configuration() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ConfigError, match="OIDC configuration: token lifetime"):
        OIDCConfig("http://127.0.0.1:1", key, default_lifetime=timedelta(days=2))
    with pytest.raises(ConfigError, match="OIDC configuration: audience"):
        OIDCConfig("http://127.0.0.1:1", key, default_audience=" x")


# --- the token endpoint warning uses the shared loopback test -----------------------------


@pytest.mark.parametrize(
    ("url", "warns"),
    [
        ("http://127.0.0.1:8080", False),
        ("http://127.0.0.5:8080", False),
        ("http://[::1]:8080", False),
        ("http://localhost:8080", False),
        ("https://oidc.example.com", True),
        ("http://dev.localhost:8080", True),
    ],
)
def test_token_endpoint_warning_off_loopback(
    caplog: pytest.LogCaptureFixture, url: str, warns: bool
) -> None:
    from sigstack.services.oidc import OIDCIssuer, create_app

    issuer = OIDCIssuer(
        OIDCConfig(url, ec.generate_private_key(ec.SECP256R1()), allow_token_endpoint=True)
    )
    with caplog.at_level(logging.WARNING, logger="sigstack.oidc"):
        create_app(issuer)
    assert any("non-loopback" in r.getMessage() for r in caplog.records) is warns


# --- layering -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    [
        "sigstack.services.oidc",
        "sigstack.services.oidc.config",
        "sigstack.services.oidc.service",
        "sigstack.services.fulcio",
        "sigstack.services.fulcio.config",
        "sigstack.services.fulcio.service",
    ],
)
def test_domain_modules_do_not_import_the_web_framework(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "web = sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn'))\n"
        "assert not web, web\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_package_names_stay_importable_lazily() -> None:
    code = (
        "from sigstack.services.fulcio import (FulcioConfig, FulcioService, HttpCTSubmitter,\n"
        "    IssuerAllowList, TokenVerifier, builtin_issuer, create_app)\n"
        "from sigstack.services.oidc import OIDCConfig, OIDCIssuer, create_app as oidc_app\n"
        "import sigstack.services.fulcio as f, sigstack.services.oidc as o\n"
        "for pkg in (f, o):\n"
        "    for name in pkg.__all__:\n"
        "        assert getattr(pkg, name) is not None, name\n"
        "try:\n"
        "    f.nope\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('unknown names must raise AttributeError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
