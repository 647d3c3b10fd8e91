"""The transparency-log engine that Rekor v2 and the CT log sit on.

``engine`` sequences entries into C2SP tiles and signs checkpoints; ``storage``
states the contract a backend must honour; ``fs``, ``memory`` and ``postgres``
(several processes, one log) are backends; ``faults`` injects storage failures
into any of them.

The names below are exported lazily (module ``__getattr__``): importing
``sigstack.log.engine`` (which imports this package first) loads no storage driver,
and ``from sigstack.log import FilesystemStorage`` loads only that one (architecture
rule 1).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sigstack.log.engine import (
        BatchPolicy,
        Checkpoint,
        ClusterPolicy,
        Entry,
        Integrated,
        TransparencyLog,
    )
    from sigstack.log.faults import Fault, FaultInjectingStorage, FaultPlan
    from sigstack.log.fs import FilesystemStorage
    from sigstack.log.memory import MemoryStorage
    from sigstack.log.postgres import PostgresStorage
    from sigstack.log.storage import LogStorage, SharedQueue, validate_key

_EXPORTS = {
    "BatchPolicy": "engine",
    "Checkpoint": "engine",
    "ClusterPolicy": "engine",
    "Entry": "engine",
    "Integrated": "engine",
    "TransparencyLog": "engine",
    "FilesystemStorage": "fs",
    "Fault": "faults",
    "FaultInjectingStorage": "faults",
    "FaultPlan": "faults",
    "MemoryStorage": "memory",
    "PostgresStorage": "postgres",
    "LogStorage": "storage",
    "SharedQueue": "storage",
    "validate_key": "storage",
}

__all__ = [
    "BatchPolicy",
    "Checkpoint",
    "ClusterPolicy",
    "Entry",
    "Fault",
    "FaultInjectingStorage",
    "FaultPlan",
    "FilesystemStorage",
    "Integrated",
    "LogStorage",
    "MemoryStorage",
    "PostgresStorage",
    "SharedQueue",
    "TransparencyLog",
    "validate_key",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
