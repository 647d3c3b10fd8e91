"""Fixtures for the Rekor tests (the helpers live in rekor_kit.py).

The project runs pytest with ``--import-mode=importlib``, which does not put test
directories on ``sys.path``; this directory is added explicitly so test modules can
``import rekor_kit`` (a name unique to these tests) whatever the import mode.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from rekor_kit import MutableClock, Signer, V1Log, closing, make_signer, open_v1_log  # noqa: E402


@pytest.fixture
def v1_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def clock() -> MutableClock:
    return MutableClock()


@pytest.fixture
def v1(v1_key: ec.EllipticCurvePrivateKey, clock: MutableClock) -> Iterator[V1Log]:
    yield from closing(open_v1_log(v1_key, clock))


@pytest.fixture(scope="session")
def signer() -> Signer:
    return make_signer()
