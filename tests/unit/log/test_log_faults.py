"""The fault matrix: a storage failure at every write point, "failed and not persisted"
and "failed but persisted", against the outcome each must have.

Each case starts from a log of ``BASE`` entries, injects one fault while entry X is
integrated, then clears the fault and submits entry Y. The table says whether X is
acknowledged, whether X is in the log anyway, and whether the log makes progress (Y
is logged) or stops for good. Whatever the case, invariants must hold afterwards:
every acknowledged entry is in the log at its index with its content, the final
checkpoint is consistent with every checkpoint published before, and the entry
index holds exactly the committed entries.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from sigstack.core.errors import SigstackError, Unavailable
from sigstack.core.merkle import leaf_hash, root_from_leaves, verify_consistency
from sigstack.core.note import Ed25519NoteSigner
from sigstack.log.engine import LEAF_NAMESPACE, BatchPolicy, Checkpoint, Entry, TransparencyLog
from sigstack.log.memory import Fault, FaultPlan, MemoryStorage

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
    # Stored state that no longer adds up: the log must stop, never sign over it.
    "a committed tile changes during a failed batch": Case(
        "put", FAIL, "tile/0/", tamper=True, progress=False
    ),
}


def _started() -> tuple[MemoryStorage, TransparencyLog, list[bytes], list[Checkpoint]]:
    storage = MemoryStorage()
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
def test_fault_matrix(name: str) -> None:
    case = MATRIX[name]
    storage, log, logged, seen = _started()
    try:
        plan = FaultPlan(
            case.fault, operation=case.operation, key_prefix=case.key_prefix, times=case.times
        )
        if case.operation in ("read_checkpoint", "index_truncate", "get") or (
            case.operation == "swap_checkpoint" and case.times > 1
        ):
            # Recovery faults: make the batch itself fail first, then fault recovery.
            trigger = FaultPlan(Fault.FAIL, operation="put")
            storage.fault = lambda op, key: (
                trigger(op, key) or (plan(op, key) if trigger.fired else None)
            )
        elif case.tamper:

            def tamper(op: str, key: str) -> Fault | None:
                fault = plan(op, key)
                if fault is not None:
                    storage.set_object(f"tile/0/000.p/{BASE}", b"\x07" * 32 * BASE)
                return fault

            storage.fault = tamper
        else:
            storage.fault = plan
        x_ok, x_checkpoint = _attempt(log, b"entry X")
        assert x_ok == case.x_acknowledged, name
        if x_checkpoint is not None:
            seen.append(x_checkpoint)

        y_ok, y_checkpoint = False, None
        for _ in range(8):  # recovery may need a few batches (and backoff) to succeed
            y_ok, y_checkpoint = _attempt(log, b"entry Y")
            if y_ok:
                break
        storage.fault = None
        assert plan.fired >= 1, f"{name}: the fault was never injected (the case tests nothing)"
        if not y_ok:
            y_ok, y_checkpoint = _attempt(log, b"entry Y")
        if not case.progress:
            assert not y_ok
            with pytest.raises(Unavailable):
                log.check_accepting()
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
    finally:
        log.close()


def test_the_matrix_covers_every_write_point() -> None:
    """A new storage write point must get rows in the matrix."""
    covered = {c.operation for c in MATRIX.values()}
    assert {
        "put",
        "index_add",
        "swap_checkpoint",
        "index_truncate",
        "read_checkpoint",
        "get",
    } <= covered
    assert {(c.operation, c.fault) for c in MATRIX.values()} >= {
        ("put", FAIL),
        ("put", PERSISTED),
        ("index_add", FAIL),
        ("index_add", PERSISTED),
        ("swap_checkpoint", FAIL),
        ("swap_checkpoint", PERSISTED),
    }
