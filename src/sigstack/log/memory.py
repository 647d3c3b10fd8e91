"""In-memory log storage for tests, with fault injection.

Contract (see :mod:`sigstack.log.storage`): a dict guarded by a lock. "Durable"
means "in the dict": nothing survives the process, which is what tests want.
Each object is replaced atomically (a dict assignment under the lock);
``put_many`` writes objects one by one in the mapping's order, so a fault in the
middle leaves a prefix written, exactly the partial outcome a real backend may
produce. ``swap_checkpoint`` is a true compare-and-swap under the lock, and records the
new checkpoint as the high-water mark in the same step (``set_checkpoint``, the
tamper helper, changes the checkpoint alone, as an operator restoring a file would).

Fault injection: ``fault`` is a hook consulted before every operation, with the
protocol and the :class:`Fault` semantics of :mod:`sigstack.log.faults` (which
wraps any other backend the same way): ``Fault.FAIL`` raises
:class:`StorageError` without performing the operation, ``Fault.FAIL_PERSISTED``
performs the write, then raises. :class:`FaultPlan` is a ready-made hook.

The writer lease is a flag on this object: ``check_writer`` raises ``Conflict``
unless it is held (a lease that cannot be lost while held).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from sigstack.core.errors import Conflict
from sigstack.log.faults import (
    INDEX_KEY,
    LEASE_KEY,
    Fault,
    FaultHook,
    FaultPlan,
    fault_after,
    fault_before,
)
from sigstack.log.storage import (
    CHECKPOINT_KEY,
    IndexRow,
    LogStorage,
    validate_index_rows,
    validate_key,
)

__all__ = ["INDEX_KEY", "Fault", "FaultHook", "FaultPlan", "MemoryStorage"]


class MemoryStorage(LogStorage):
    """Dict-backed :class:`LogStorage` for tests; see the module docstring."""

    def __init__(self, fault: FaultHook | None = None) -> None:
        self.fault = fault
        self._objects: dict[str, bytes] = {}
        self._checkpoint: bytes | None = None
        self._high_water: bytes | None = None
        self._index: dict[tuple[str, bytes], set[int]] = {}
        self._lock = threading.Lock()
        self._writer = False
        self.writes = 0
        """Objects written so far (checkpoint swaps included); for tests."""

    # -- faults ---------------------------------------------------------------------

    def _check(self, operation: str, key: str) -> Fault | None:
        return fault_before(self.fault, operation, key)

    @staticmethod
    def _after(fault: Fault | None, operation: str, key: str) -> None:
        fault_after(fault, operation, key)

    # -- LogStorage -----------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        validate_key(key)
        self._check("get", key)
        with self._lock:
            return self._objects.get(key)

    def put_many(self, items: Mapping[str, bytes]) -> None:
        for key in items:
            validate_key(key)
        for key, data in items.items():
            fault = self._check("put", key)
            with self._lock:
                self._objects[key] = bytes(data)
                self.writes += 1
            self._after(fault, "put", key)

    def read_checkpoint(self) -> bytes | None:
        self._check("read_checkpoint", CHECKPOINT_KEY)
        with self._lock:
            return self._checkpoint

    def swap_checkpoint(self, old: bytes | None, new: bytes) -> None:
        fault = self._check("swap_checkpoint", CHECKPOINT_KEY)
        with self._lock:
            if self._checkpoint != old:
                raise Conflict(
                    "the stored checkpoint is not the one this writer last saw; "
                    "another writer changed the log"
                )
            self._checkpoint = self._high_water = bytes(new)
            self.writes += 1
        self._after(fault, "swap_checkpoint", CHECKPOINT_KEY)

    def read_high_water(self) -> bytes | None:
        self._check("read_high_water", CHECKPOINT_KEY)
        with self._lock:
            return self._high_water

    def index_add(self, rows: Sequence[IndexRow]) -> None:
        validate_index_rows(rows)
        fault = self._check("index_add", INDEX_KEY)
        with self._lock:
            for namespace, key, position in rows:
                self._index.setdefault((namespace, key), set()).add(position)
        self._after(fault, "index_add", INDEX_KEY)

    def index_lookup(
        self, namespace: str, keys: Sequence[bytes], below: int
    ) -> dict[bytes, list[int]]:
        self._check("index_lookup", INDEX_KEY)
        found: dict[bytes, list[int]] = {}
        with self._lock:
            for key in keys:
                positions = sorted(p for p in self._index.get((namespace, key), ()) if p < below)
                if positions:
                    found[key] = positions
        return found

    def index_truncate(self, size: int) -> None:
        fault = self._check("index_truncate", INDEX_KEY)
        with self._lock:
            for positions in self._index.values():
                positions.difference_update([p for p in positions if p >= size])
        self._after(fault, "index_truncate", INDEX_KEY)

    def acquire_writer(self) -> None:
        with self._lock:
            if self._writer:
                raise Conflict("another log instance is already writing to this memory storage")
            self._writer = True

    def release_writer(self) -> None:
        with self._lock:
            self._writer = False

    def check_writer(self) -> None:
        self._check("check_writer", LEASE_KEY)
        with self._lock:
            if not self._writer:
                raise Conflict("this memory storage's writer lease is not held")

    def describe(self, key: str) -> str:
        return f"memory:{key}"

    # -- test helpers ---------------------------------------------------------------

    def keys(self) -> list[str]:
        """Every object key, sorted."""
        with self._lock:
            return sorted(self._objects)

    def set_object(self, key: str, data: bytes | None) -> None:
        """Overwrite or delete an object behind the engine's back (tamper tests)."""
        validate_key(key)
        with self._lock:
            if data is None:
                self._objects.pop(key, None)
            else:
                self._objects[key] = bytes(data)

    def set_checkpoint(self, data: bytes | None) -> None:
        """Overwrite the checkpoint behind the engine's back (tamper tests)."""
        with self._lock:
            self._checkpoint = None if data is None else bytes(data)
