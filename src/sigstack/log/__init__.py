"""The transparency-log engine that Rekor v2 and the CT log sit on.

``engine`` sequences entries into C2SP tiles and signs checkpoints; ``storage``
states the contract a backend must honour; ``fs`` and ``memory`` are backends.
This package imports no service, web framework or storage driver beyond its own.
"""

from sigstack.log.engine import BatchPolicy, Checkpoint, Entry, Integrated, TransparencyLog
from sigstack.log.fs import FilesystemStorage
from sigstack.log.memory import Fault, FaultPlan, MemoryStorage
from sigstack.log.storage import LogStorage, validate_key

__all__ = [
    "BatchPolicy",
    "Checkpoint",
    "Entry",
    "Fault",
    "FaultPlan",
    "FilesystemStorage",
    "Integrated",
    "LogStorage",
    "MemoryStorage",
    "TransparencyLog",
    "validate_key",
]
