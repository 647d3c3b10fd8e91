"""CTLogConfig fails closed: every rejected input is a named test."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from sigstack.core.errors import ConfigError
from sigstack.core.keys import spki_der
from sigstack.core.pki import cert_der
from sigstack.services.ctlog.config import (
    DEFAULT_MAX_BODY_BYTES,
    CTLogConfig,
    origin_from_url,
)


def test_valid_config_exposes_log_id_and_key(config: CTLogConfig) -> None:
    der = spki_der(config.private_key.public_key())
    assert config.public_key_der == der
    assert config.log_id == hashlib.sha256(der).digest()
    assert config.max_chain_length == 10
    assert config.max_body_bytes == DEFAULT_MAX_BODY_BYTES
    assert isinstance(config.roots, tuple)


def test_private_key_not_in_repr(config: CTLogConfig) -> None:
    assert "private_key" not in repr(config)


@pytest.mark.parametrize(
    "origin",
    [
        "",
        "https://ct.example.com",
        "ct.example.com/",
        "ct example.com",
        "ct+log.example",
        "ct.example.com\n",
        "ct\u00a0example",
    ],
)
def test_bad_origin_rejected(
    origin: str, log_key: ec.EllipticCurvePrivateKey, fulcio_pki: Any
) -> None:
    with pytest.raises(ConfigError, match="origin"):
        CTLogConfig(origin=origin, private_key=log_key, roots=[fulcio_pki.root])


def test_origin_with_path_accepted(log_key: ec.EllipticCurvePrivateKey, fulcio_pki: Any) -> None:
    cfg = CTLogConfig(origin="example.com/ct/2025", private_key=log_key, roots=[fulcio_pki.root])
    assert cfg.origin == "example.com/ct/2025"


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: ec.generate_private_key(ec.SECP384R1()),
        lambda: ed25519.Ed25519PrivateKey.generate(),
        lambda: rsa.generate_private_key(65537, 2048),
    ],
    ids=["p384", "ed25519", "rsa"],
)
def test_non_p256_log_key_rejected(make_key: Any, fulcio_pki: Any, kit: Any) -> None:
    with pytest.raises(ConfigError, match="P-256"):
        CTLogConfig(origin=kit.ORIGIN, private_key=make_key(), roots=[fulcio_pki.root])


def test_public_key_instead_of_private_rejected(
    log_key: ec.EllipticCurvePrivateKey, fulcio_pki: Any, kit: Any
) -> None:
    with pytest.raises(ConfigError, match="P-256 private key"):
        public: Any = log_key.public_key()
        CTLogConfig(origin=kit.ORIGIN, private_key=public, roots=[fulcio_pki.root])


def test_empty_roots_rejected(log_key: ec.EllipticCurvePrivateKey, kit: Any) -> None:
    with pytest.raises(ConfigError, match="at least one accepted root"):
        CTLogConfig(origin=kit.ORIGIN, private_key=log_key, roots=[])


def test_single_certificate_instead_of_list_rejected(
    log_key: ec.EllipticCurvePrivateKey, fulcio_pki: Any, kit: Any
) -> None:
    with pytest.raises(ConfigError, match="list"):
        CTLogConfig(origin=kit.ORIGIN, private_key=log_key, roots=fulcio_pki.root)


def test_der_bytes_as_root_rejected(
    log_key: ec.EllipticCurvePrivateKey, fulcio_pki: Any, kit: Any
) -> None:
    with pytest.raises(ConfigError, match=r"not an x509\.Certificate"):
        roots: Any = [cert_der(fulcio_pki.root)]
        CTLogConfig(origin=kit.ORIGIN, private_key=log_key, roots=roots)


def test_non_ca_root_rejected(
    log_key: ec.EllipticCurvePrivateKey, fulcio_pki: Any, kit: Any
) -> None:
    leaf = fulcio_pki.leaf()
    with pytest.raises(ConfigError, match=r"not a CA|no BasicConstraints"):
        CTLogConfig(origin=kit.ORIGIN, private_key=log_key, roots=[leaf])


def test_ca_false_root_rejected(
    log_key: ec.EllipticCurvePrivateKey, fulcio_pki: Any, kit: Any
) -> None:
    from cryptography import x509

    key = ec.generate_private_key(ec.SECP256R1())
    cert = kit.build_cert(
        subject=fulcio_pki.root.subject,
        public_key=key.public_key(),
        issuer=fulcio_pki.root,
        issuer_key=fulcio_pki.root_key,
        extensions=[(x509.BasicConstraints(ca=False, path_length=None), True)],
    )
    with pytest.raises(ConfigError, match="ca=False"):
        CTLogConfig(origin=kit.ORIGIN, private_key=log_key, roots=[cert])


def test_duplicate_root_rejected(
    log_key: ec.EllipticCurvePrivateKey, fulcio_pki: Any, kit: Any
) -> None:
    with pytest.raises(ConfigError, match="twice"):
        CTLogConfig(origin=kit.ORIGIN, private_key=log_key, roots=[fulcio_pki.root] * 2)


@pytest.mark.parametrize("value", [0, -1, 65, True, "10", 2.5])
def test_bad_max_chain_length_rejected(
    value: Any, log_key: ec.EllipticCurvePrivateKey, fulcio_pki: Any, kit: Any
) -> None:
    with pytest.raises(ConfigError, match="max_chain_length"):
        CTLogConfig(
            origin=kit.ORIGIN, private_key=log_key, roots=[fulcio_pki.root], max_chain_length=value
        )


@pytest.mark.parametrize("value", [0, 100, 1 << 30, True, None])
def test_bad_max_body_bytes_rejected(
    value: Any, log_key: ec.EllipticCurvePrivateKey, fulcio_pki: Any, kit: Any
) -> None:
    with pytest.raises(ConfigError, match="max_body_bytes"):
        CTLogConfig(
            origin=kit.ORIGIN, private_key=log_key, roots=[fulcio_pki.root], max_body_bytes=value
        )


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://ct.example.com/2025/", "ct.example.com/2025"),
        ("https://ct.example.com", "ct.example.com"),
        ("http://127.0.0.1:8083/", "127.0.0.1:8083"),
    ],
)
def test_origin_from_url(url: str, origin: str) -> None:
    assert origin_from_url(url) == origin


@pytest.mark.parametrize(
    "url",
    ["ct.example.com", "ftp://ct.example.com", "https://u:p@ct.example.com", "https://x/?a=1"],
)
def test_origin_from_bad_url_rejected(url: str) -> None:
    with pytest.raises(ConfigError):
        origin_from_url(url)
