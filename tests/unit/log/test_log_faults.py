"""The fault matrix: a storage failure at every write point, "failed and not persisted"
and "failed but persisted", against the outcome each must have, on EVERY backend:
memory (its native fault hook), the filesystem and PostgreSQL (each wrapped in
:class:`~sigstack.log.faults.FaultInjectingStorage`). PostgreSQL cases are skipped
without a server (see tests/conftest.py for how to enable them).

Each case starts from a log of ``BASE`` entries, injects one fault while entry X is
integrated, then clears the fault and submits entry Y. The table says whether X is
acknowledged, whether X is in the log anyway, and whether the log makes progress (Y
is logged) or stops for good. Whatever the case, invariants must hold afterwards:
every acknowledged entry is in the log at its index with its content, the final
checkpoint is consistent with every checkpoint published before, and the entry
index holds exactly the committed entries. Then fsck re-derives every tile and the
root from the stored entries and checks the index: clean, except where the case
tampered with a committed tile (and the log stopped), which fsck must report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from sigstack.core.errors import SigstackError, Unavailable
from sigstack.core.merkle import leaf_hash, root_from_leaves, verify_consistency
from sigstack.core.note import Ed25519NoteSigner
from sigstack.log.engine import LEAF_NAMESPACE, BatchPolicy, Checkpoint, Entry, TransparencyLog
from sigstack.log.faults import FaultHook, FaultInjectingStorage
from sigstack.log.fs import FilesystemStorage
from sigstack.log.fsck import fsck, storage_reader
from sigstack.log.memory import Fault, FaultPlan, MemoryStorage
from sigstack.log.storage import LogStorage

ORIGIN = "faults.example.test"
BASE = 10
WAIT = 10
KEY = ed25519.Ed25519PrivateKey.generate()


@dataclass(frozen=True)
class Case:
    operation: str
    fault: Fault
    key_prefix: str = ""
    times: int = 1
    x_acknowledged: bool = False
    x_logged: bool = False
    progress: bool = True
    tamper: bool = False  # also overwrite a committed tile while the fault fires


FAIL, PERSISTED = Fault.FAIL, Fault.FAIL_PERSISTED

MATRIX = {
    # Step 3: data objects (tiles first, then bundles, in put_many order).
    "hash tile write fails": Case("put", FAIL, "tile/0/"),
    "hash tile write fails but lands": Case("put", PERSISTED, "tile/0/"),
    "entry bundle write fails": Case("put", FAIL, "tile/entries/"),
    "entry bundle write fails but lands": Case("put", PERSISTED, "tile/entries/"),
    # Step 3: the entry index.
    "index write fails": Case("index_add", FAIL),
    "index write fails but lands": Case("index_add", PERSISTED),
    # Step 5: the commit point.
    "checkpoint swap fails": Case("swap_checkpoint", FAIL),
    "checkpoint swap fails but lands": Case("swap_checkpoint", PERSISTED, x_logged=True),
    # Recovery after a failed batch (the batch fails on its data write, then recovery
    # itself hits the fault and is retried on the next batch).
    "recovery cannot read the checkpoint": Case("read_checkpoint", FAIL, times=2),
    "recovery cannot re-persist the checkpoint": Case("swap_checkpoint", FAIL, times=2),
    "recovery cannot truncate the index": Case("index_truncate", FAIL),
    "recovery truncation fails but lands": Case("index_truncate", PERSISTED),
    "recovery cannot read tiles": Case("get", FAIL, "tile/0/", times=3),
    "recovery cannot read the high-water mark": Case("read_high_water", FAIL, times=2),
    # Step 4: the lease check before signing cannot be completed (not "lease lost").
    "lease check fails": Case("check_writer", FAIL),
    # Stored state that no longer adds up: the log must stop, never sign over it.
    "a committed tile changes during a failed batch": Case(
        "put", FAIL, "tile/0/", tamper=True, progress=False
    ),
}


Faultable = MemoryStorage | FaultInjectingStorage


@pytest.fixture(params=["memory", "fs", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Faultable]:
    """A fresh storage whose ``fault`` hook can be set: memory natively, others wrapped."""
    if request.param == "memory":
        yield MemoryStorage()
        return
    if request.param == "fs":
        yield FaultInjectingStorage(FilesystemStorage(tmp_path / "log"))
        return
    make: Callable[[], LogStorage] = request.getfixturevalue("postgres_storage")
    storage = FaultInjectingStorage(make())
    yield storage
    storage.close()


def _set_fault(storage: Faultable, hook: FaultHook | None) -> None:
    storage.fault = hook


def _tamper(storage: Faultable, key: str, data: bytes) -> None:
    """Overwrite a stored object behind the engine's back (and around the fault hook)."""
    if isinstance(storage, MemoryStorage):
        storage.set_object(key, data)
    else:
        storage.inner.put_many({key: data})


def _started(
    storage: Faultable,
) -> tuple[Faultable, TransparencyLog, list[bytes], list[Checkpoint]]:
    signer = Ed25519NoteSigner(ORIGIN, KEY)
    TransparencyLog.create(storage, signer, ORIGIN)
    log = TransparencyLog(
        storage, signer, ORIGIN, verifier=signer.verifier(), policy=BatchPolicy(max_age=0.001)
    )
    log.open()
    logged = [b"base %d" % i for i in range(BASE)]
    seen = [log.submit(Entry(d)).result(WAIT).checkpoint for d in logged]
    return storage, log, logged, seen


def _attempt(log: TransparencyLog, data: bytes) -> tuple[bool, Checkpoint | None]:
    try:
        return True, log.submit(Entry(data)).result(WAIT).checkpoint
    except SigstackError:
        return False, None


@pytest.mark.parametrize("name", list(MATRIX))
def test_fault_matrix(name: str, backend: Faultable) -> None:
    case = MATRIX[name]
    storage, log, logged, seen = _started(backend)
    try:
        plan = FaultPlan(
            case.fault, operation=case.operation, key_prefix=case.key_prefix, times=case.times
        )
        if case.operation in ("read_checkpoint", "read_high_water", "index_truncate", "get") or (
            case.operation == "swap_checkpoint" and case.times > 1
        ):
            # Recovery faults: make the batch itself fail first, then fault recovery.
            trigger = FaultPlan(Fault.FAIL, operation="put")
            _set_fault(
                storage,
                lambda op, key: trigger(op, key) or (plan(op, key) if trigger.fired else None),
            )
        elif case.tamper:

            def tamper(op: str, key: str) -> Fault | None:
                fault = plan(op, key)
                if fault is not None:
                    _tamper(storage, f"tile/0/000.p/{BASE}", b"\x07" * 32 * BASE)
                return fault

            _set_fault(storage, tamper)
        else:
            _set_fault(storage, plan)
        x_ok, x_checkpoint = _attempt(log, b"entry X")
        assert x_ok == case.x_acknowledged, name
        if x_checkpoint is not None:
            seen.append(x_checkpoint)

        y_ok, y_checkpoint = False, None
        for _ in range(8):  # recovery may need a few batches (and backoff) to succeed
            y_ok, y_checkpoint = _attempt(log, b"entry Y")
            if y_ok:
                break
        _set_fault(storage, None)
        assert plan.fired >= 1, f"{name}: the fault was never injected (the case tests nothing)"
        if not y_ok:
            y_ok, y_checkpoint = _attempt(log, b"entry Y")
        if not case.progress:
            assert not y_ok
            with pytest.raises(Unavailable):
                log.check_accepting()
            report = _fsck(storage)
            assert not report.ok and f"tile/0/000.p/{BASE}" in " ".join(report.problems)
            return
        assert y_ok, f"{name}: the log made no progress after the fault cleared"
        assert y_checkpoint is not None
        seen.append(y_checkpoint)

        expected = [*logged, b"entry X", b"entry Y"] if case.x_logged else [*logged, b"entry Y"]
        final = log.checkpoint()
        assert [log.entry(i) for i in range(final.size)] == expected
        assert final.root_hash == root_from_leaves(expected)
        for earlier in seen:
            proof = log.consistency_proof(earlier.size, final.size)
            verify_consistency(earlier.size, final.size, earlier.root_hash, final.root_hash, proof)
        for i, data in enumerate(expected):
            assert log.lookup(LEAF_NAMESPACE, leaf_hash(data)) == [i]
        if not case.x_logged:
            assert log.lookup(LEAF_NAMESPACE, leaf_hash(b"entry X")) == []
        log.close()
        report = _fsck(storage)
        assert report.ok, report.problems
        assert report.size == len(expected) and report.index_checked
    finally:
        log.close()


def _fsck(storage: LogStorage):  # type: ignore[no-untyped-def]
    return fsck(
        storage_reader(storage),
        [Ed25519NoteSigner(ORIGIN, KEY).verifier()],
        origin=ORIGIN,
        storage=storage,
    )


def test_the_matrix_covers_every_write_point() -> None:
    """A new storage write point must get rows in the matrix."""
    covered = {c.operation for c in MATRIX.values()}
    assert {
        "put",
        "index_add",
        "swap_checkpoint",
        "index_truncate",
        "read_checkpoint",
        "read_high_water",
        "get",
        "check_writer",
    } <= covered
    assert {(c.operation, c.fault) for c in MATRIX.values()} >= {
        ("put", FAIL),
        ("put", PERSISTED),
        ("index_add", FAIL),
        ("index_add", PERSISTED),
        ("swap_checkpoint", FAIL),
        ("swap_checkpoint", PERSISTED),
    }


def test_a_log_that_loses_its_lease_stops_signing() -> None:
    """Lost lease (check_writer says so before signing): nothing is signed, ever again."""
    storage, log, logged, _ = _started(MemoryStorage())
    try:
        before = storage.read_checkpoint()
        storage.release_writer()  # behind the engine's back: the lease is gone
        with pytest.raises(Unavailable, match="lost its writer lease"):
            log.submit(Entry(b"entry X")).result(WAIT)
        with pytest.raises(Unavailable, match="lease"):
            log.check_accepting()
        assert storage.read_checkpoint() == before
        assert log.checkpoint().size == len(logged)
    finally:
        log.close()
    report = _fsck(storage)
    assert report.ok, report.problems
