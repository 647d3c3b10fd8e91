"""Fixtures for Fulcio tests (the helpers live in fulcio_kit.py).

The project runs pytest with ``--import-mode=importlib``, which does not put test
directories on ``sys.path``; this directory is added explicitly so test modules can
``import fulcio_kit`` (a name unique to these tests) whatever the import mode.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from fulcio_kit import CA, FakeClock, Kit, make_ca, make_kit  # noqa: E402


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def ca_material() -> CA:
    return make_ca()


@pytest.fixture
def kit(clock: FakeClock, ca_material: CA) -> Kit:
    return make_kit(clock, ca_material)
