"""Fixtures for the TUF repository tests (the helpers live in tuf_testing.py).

The project runs pytest with ``--import-mode=importlib``, which does not put test
directories on ``sys.path``; this directory is added explicitly so test modules can
``import tuf_testing`` (a name unique to these tests; NOT a package named ``tuf``,
which would shadow python-tuf) whatever the import mode.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from sigstack.services.tuf import TufKeys  # noqa: E402


@pytest.fixture
def keys() -> TufKeys:
    return TufKeys.generate()


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    return tmp_path / "repository"
