"""Fault injection for log storage, for every backend: "failed" and "failed but persisted".

:class:`FaultInjectingStorage` wraps any :class:`~sigstack.log.storage.LogStorage`
(memory, filesystem, PostgreSQL...) and consults a hook before every operation, so
the same fault matrix runs against every backend. :class:`~sigstack.log.memory.MemoryStorage`
uses the same hook protocol natively (its ``fault`` attribute).

The hook is called as ``hook(operation, key)`` where operation is one of

* ``"get"`` (key: the object key), ``"put"`` (once per object of ``put_many``, in
  the mapping's order),
* ``"read_checkpoint"``, ``"swap_checkpoint"``, ``"read_high_water"`` (key
  ``"checkpoint"``; the swap writes the checkpoint and the high-water mark),
* ``"index_add"``, ``"index_lookup"``, ``"index_truncate"`` (key ``"index"``;
  ``index_add`` is all-or-nothing, like one database transaction),
* ``"check_writer"`` (key ``"lease"``),

and, for :class:`FaultInjectingQueue` (a :class:`~sigstack.log.storage.SharedQueue`),
``"enqueue"``, ``"results"``, ``"claim"``, ``"release"``, ``"assign"``, ``"reset"``,
``"purge"`` (key ``"queue"``; each is one transaction, all-or-nothing),

and returns ``None`` to let the operation proceed, or a :class:`Fault`:

* ``Fault.FAIL``: raise :class:`~sigstack.core.errors.StorageError` without
  performing the operation ("failed, not persisted");
* ``Fault.FAIL_PERSISTED``: perform the write, then raise ``StorageError``
  ("failed but persisted"); for reads it behaves like ``FAIL``.

``put_many`` with a fault on its k-th object writes the objects before it (one
``put_many`` of the inner storage), plus the k-th itself for ``FAIL_PERSISTED``,
then raises: the partial outcome a real backend may produce, and exactly what
``MemoryStorage`` does. The writer lease (``acquire_writer``/``release_writer``)
is never faulted: a lost lease is simulated by ``check_writer`` raising.

:class:`FaultPlan` is a ready-made hook for the common cases. Everything here is
thread-safe as long as the hook is.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from sigstack.core.errors import StorageError
from sigstack.log.storage import (
    CHECKPOINT_KEY,
    Assignment,
    IndexRow,
    LogStorage,
    QueuedEntry,
    SharedQueue,
    validate_key,
)

_T = TypeVar("_T")

__all__ = [
    "INDEX_KEY",
    "LEASE_KEY",
    "Fault",
    "FaultHook",
    "FaultInjectingQueue",
    "FaultInjectingStorage",
    "FaultPlan",
    "fault_after",
    "fault_before",
]

INDEX_KEY = "index"
"""The key fault hooks see for index operations."""

LEASE_KEY = "lease"
"""The key fault hooks see for ``check_writer``."""

QUEUE_KEY = "queue"
"""The key fault hooks see for shared-queue operations."""

READS = frozenset(
    {"get", "read_checkpoint", "read_high_water", "index_lookup", "check_writer", "results"}
)
"""Operations that write nothing: ``FAIL_PERSISTED`` behaves like ``FAIL`` for them."""


class Fault(enum.Enum):
    """What an injected fault does."""

    FAIL = "fail"
    """Raise without performing the operation (failed, not persisted)."""

    FAIL_PERSISTED = "fail-persisted"
    """Perform the write, then raise (failed but persisted)."""


FaultHook = Callable[[str, str], Fault | None]
"""``hook(operation, key) -> Fault | None``."""


class FaultPlan:
    """A fault hook that fires on matching operations.

    ``FaultPlan(fault, operation="put", key_prefix="tile/0/", after=0, times=1)``
    lets ``after`` matching operations through, then injects ``fault`` into the
    next ``times`` matching ones (``times=None``: forever). ``fired`` counts
    injections. Thread-safe.
    """

    def __init__(
        self,
        fault: Fault,
        operation: str | None = None,
        key_prefix: str = "",
        after: int = 0,
        times: int | None = 1,
    ) -> None:
        self.fault = fault
        self.operation = operation
        self.key_prefix = key_prefix
        self._skip = after
        self._left = times
        self.fired = 0
        self._lock = threading.Lock()

    def __call__(self, operation: str, key: str) -> Fault | None:
        if self.operation is not None and operation != self.operation:
            return None
        if not key.startswith(self.key_prefix):
            return None
        with self._lock:
            if self._skip > 0:
                self._skip -= 1
                return None
            if self._left is not None:
                if self._left <= 0:
                    return None
                self._left -= 1
            self.fired += 1
            return self.fault


def fault_before(hook: FaultHook | None, operation: str, key: str) -> Fault | None:
    """Consult ``hook``; raise now for ``FAIL`` (and for any fault on a read).

    Returns the fault the caller must honour after performing the write
    (``FAIL_PERSISTED``), or ``None``.
    """
    fault = hook(operation, key) if hook is not None else None
    if fault is Fault.FAIL or (fault is Fault.FAIL_PERSISTED and operation in READS):
        raise StorageError(f"injected fault: {operation} {key} failed (not persisted)")
    return fault


def fault_after(fault: Fault | None, operation: str, key: str) -> None:
    """Raise for ``FAIL_PERSISTED`` once the write was performed."""
    if fault is Fault.FAIL_PERSISTED:
        raise StorageError(f"injected fault: {operation} {key} failed (but was persisted)")


class FaultInjectingStorage(LogStorage):
    """Any storage, with the faults ``fault`` (a hook, settable at any time) injects.

    See the module docstring for the hook protocol. ``inner`` is the wrapped
    storage: tests write through it to tamper with stored data behind the engine's
    back. Every other attribute of the contract (the lease, ``describe``, the
    heartbeat) is the inner storage's.
    """

    def __init__(self, inner: LogStorage, fault: FaultHook | None = None) -> None:
        self.inner = inner
        self.fault = fault

    def get(self, key: str) -> bytes | None:
        fault_before(self.fault, "get", key)
        return self.inner.get(key)

    def put_many(self, items: Mapping[str, bytes]) -> None:
        for key in items:
            validate_key(key)
        written: dict[str, bytes] = {}
        for key, data in items.items():
            fault = fault_before_put(self.fault, key, lambda: self.inner.put_many(written))
            written[key] = data
            if fault is not None:
                self.inner.put_many(written)
                fault_after(fault, "put", key)
        self.inner.put_many(written)

    def read_checkpoint(self) -> bytes | None:
        fault_before(self.fault, "read_checkpoint", CHECKPOINT_KEY)
        return self.inner.read_checkpoint()

    def read_high_water(self) -> bytes | None:
        fault_before(self.fault, "read_high_water", CHECKPOINT_KEY)
        return self.inner.read_high_water()

    def swap_checkpoint(self, old: bytes | None, new: bytes) -> None:
        fault = fault_before(self.fault, "swap_checkpoint", CHECKPOINT_KEY)
        self.inner.swap_checkpoint(old, new)
        fault_after(fault, "swap_checkpoint", CHECKPOINT_KEY)

    def acquire_writer(self) -> None:
        self.inner.acquire_writer()

    def release_writer(self) -> None:
        self.inner.release_writer()

    def check_writer(self) -> None:
        fault_before(self.fault, "check_writer", LEASE_KEY)
        self.inner.check_writer()

    @property
    def lease_heartbeat(self) -> float | None:
        return self.inner.lease_heartbeat

    def index_add(self, rows: Sequence[IndexRow]) -> None:
        fault = fault_before(self.fault, "index_add", INDEX_KEY)
        self.inner.index_add(rows)
        fault_after(fault, "index_add", INDEX_KEY)

    def index_lookup(
        self, namespace: str, keys: Sequence[bytes], below: int
    ) -> dict[bytes, list[int]]:
        fault_before(self.fault, "index_lookup", INDEX_KEY)
        return self.inner.index_lookup(namespace, keys, below)

    def index_truncate(self, size: int) -> None:
        fault = fault_before(self.fault, "index_truncate", INDEX_KEY)
        self.inner.index_truncate(size)
        fault_after(fault, "index_truncate", INDEX_KEY)

    def index_complete_to(self) -> int | None:
        return self.inner.index_complete_to()

    def describe(self, key: str) -> str:
        return self.inner.describe(key)

    def close(self) -> None:
        self.inner.close()


def fault_before_put(hook: FaultHook | None, key: str, flush: Callable[[], None]) -> Fault | None:
    """``fault_before`` for one object of ``put_many``: on ``FAIL``, ``flush`` the
    objects before it (they were "written" before the failing one) and raise."""
    try:
        return fault_before(hook, "put", key)
    except StorageError:
        flush()
        raise


class FaultInjectingQueue(SharedQueue):
    """A shared queue with the faults ``fault`` (a hook, settable at any time) injects.

    ``FAIL_PERSISTED`` on ``enqueue`` or ``claim`` performs the operation and loses
    its answer: the rows exist (or are claimed) although the caller got an error,
    which is exactly what a connection lost during the commit's acknowledgement does.
    """

    def __init__(self, inner: SharedQueue, fault: FaultHook | None = None) -> None:
        self.inner = inner
        self.fault = fault

    def _run(self, operation: str, call: Callable[[], _T]) -> _T:
        fault = fault_before(self.fault, operation, QUEUE_KEY)
        result = call()
        fault_after(fault, operation, QUEUE_KEY)
        return result

    def enqueue(self, entries: Sequence[tuple[bytes, bytes, bool]]) -> list[int]:
        return self._run("enqueue", lambda: self.inner.enqueue(entries))

    def results(self, since: int) -> tuple[bytes | None, list[Assignment]]:
        return self._run("results", lambda: self.inner.results(since))

    def wait(self, event: str, seen: int, timeout: float) -> int:
        return self.inner.wait(event, seen, timeout)

    def claim(self, limit: int) -> list[QueuedEntry]:
        return self._run("claim", lambda: self.inner.claim(limit))

    def release(self, keep: Sequence[int]) -> None:
        self._run("release", lambda: self.inner.release(keep))

    def assign(self, assignments: Sequence[Assignment], *, committed: bool) -> None:
        self._run("assign", lambda: self.inner.assign(assignments, committed=committed))

    def reset(self, size: int) -> None:
        self._run("reset", lambda: self.inner.reset(size))

    def purge(self, size: int, older_than: float) -> int:
        return self._run("purge", lambda: self.inner.purge(size, older_than))

    def wake(self) -> None:
        self.inner.wake()

    def close(self) -> None:
        self.inner.close()
