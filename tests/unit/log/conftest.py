"""Fixtures for the log tests (helpers live in log_kit.py).

The project runs pytest with ``--import-mode=importlib``, which does not put test
directories on ``sys.path``; this directory is added explicitly so test modules can
``import log_kit`` (a name unique to these tests).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sigstack.log import FilesystemStorage, LogStorage, MemoryStorage

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(params=["memory", "fs", "postgres"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], LogStorage]:
    """A factory returning the same log's storage (a new object for fs and postgres)."""
    if request.param == "memory":
        shared = MemoryStorage()
        return lambda: shared
    if request.param == "postgres":  # skipped without a server (see tests/conftest.py)
        make: Callable[[], LogStorage] = request.getfixturevalue("postgres_storage")
        return make
    return lambda: FilesystemStorage(tmp_path / "log")
