"""Fixtures for the OIDC issuer tests."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

ISSUER_URL = "http://127.0.0.1:8080"


@pytest.fixture(scope="session")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def other_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())
