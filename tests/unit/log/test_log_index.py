"""The entry index and deduplication: lookups, dedup answers, truncation and rebuilds."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from sigstack.core.errors import NotFound, StorageError
from sigstack.core.merkle import leaf_hash, verify_inclusion
from sigstack.core.note import Ed25519NoteSigner
from sigstack.log.engine import LEAF_NAMESPACE, BatchPolicy, Entry, TransparencyLog
from sigstack.log.fs import FilesystemStorage
from sigstack.log.memory import Fault, FaultPlan, MemoryStorage
from sigstack.log.storage import LogStorage

ORIGIN = "index.example.test"
WAIT = 10
KEY = ed25519.Ed25519PrivateKey.generate()


def _log(storage: LogStorage, **kwargs: object) -> TransparencyLog:
    signer = Ed25519NoteSigner(ORIGIN, KEY)
    if storage.read_checkpoint() is None:
        TransparencyLog.create(storage, signer, ORIGIN)
    log = TransparencyLog(
        storage,
        signer,
        ORIGIN,
        verifier=signer.verifier(),
        policy=BatchPolicy(max_age=0.001),
        **kwargs,
    )
    log.open()
    return log


def _by_prefix(record: bytes) -> list[tuple[str, bytes]]:
    """A toy search key: the record's first byte, in namespace 'first'."""
    return [("first", record[:1])]


def test_every_entry_is_indexed_by_its_leaf_hash_and_readable() -> None:
    log = _log(MemoryStorage())
    try:
        results = [
            log.submit(Entry(b"entry %d" % i, bundle=b"bundle %d" % i)).result(WAIT)
            for i in range(5)
        ]
        for i, r in enumerate(results):
            assert log.lookup(LEAF_NAMESPACE, leaf_hash(b"entry %d" % i)) == [r.index]
            assert log.entry(r.index) == b"bundle %d" % i
        assert log.lookup(LEAF_NAMESPACE, leaf_hash(b"never logged")) == []
        with pytest.raises(NotFound):
            log.entry(5)
    finally:
        log.close()


def test_dedup_entry_answers_with_the_position_it_has() -> None:
    log = _log(MemoryStorage())
    try:
        first = log.submit(Entry(b"same", dedup=True)).result(WAIT)
        log.submit(Entry(b"other")).result(WAIT)
        again = log.submit(Entry(b"same", dedup=True)).result(WAIT)
        assert not first.duplicate and again.duplicate and again.index == first.index
        assert log.checkpoint().size == 2  # nothing was appended for the duplicate
        verify_inclusion(
            leaf_hash(b"same"),
            again.index,
            again.checkpoint.size,
            again.proof,
            again.checkpoint.root_hash,
        )
    finally:
        log.close()


def test_duplicates_within_one_batch_are_appended_once() -> None:
    log = _log(MemoryStorage())
    try:
        futures = [log.submit(Entry(b"twice", dedup=True)) for _ in range(3)]
        results = [f.result(WAIT) for f in futures]
        assert {r.index for r in results} == {0}
        assert [r.duplicate for r in results].count(False) == 1
        assert log.checkpoint().size == 1
    finally:
        log.close()


def test_without_dedup_identical_entries_are_both_logged() -> None:
    """RFC 6962 logs may hold duplicates; only entries that ask for dedup get it."""
    log = _log(MemoryStorage())
    try:
        a = log.submit(Entry(b"same")).result(WAIT)
        b = log.submit(Entry(b"same")).result(WAIT)
        assert (a.index, b.index) == (0, 1)
        assert log.lookup(LEAF_NAMESPACE, leaf_hash(b"same")) == [0, 1]
    finally:
        log.close()


def test_search_keys_are_indexed() -> None:
    log = _log(MemoryStorage(), index_keys=_by_prefix)
    try:
        for record in (b"apple", b"avocado", b"banana"):
            log.submit(Entry(record)).result(WAIT)
        assert log.lookup("first", b"a") == [0, 1]
        assert log.lookup("first", b"b") == [2]
    finally:
        log.close()


def test_rows_of_a_lost_batch_are_dropped_and_never_dedup() -> None:
    """index_add landed but the checkpoint swap did not: those rows must not survive."""
    storage = MemoryStorage()
    log = _log(storage)
    try:
        log.submit(Entry(b"kept")).result(WAIT)
        storage.fault = FaultPlan(Fault.FAIL, operation="swap_checkpoint")
        with pytest.raises(StorageError):
            log.submit(Entry(b"lost", dedup=True)).result(WAIT)
        assert log.lookup(LEAF_NAMESPACE, leaf_hash(b"lost")) == []
        retry = log.submit(Entry(b"lost", dedup=True)).result(WAIT)
        assert not retry.duplicate and retry.index == 1
    finally:
        log.close()


def test_a_stale_index_row_is_not_trusted_for_dedup() -> None:
    """The index is a hint: a row pointing at another leaf is checked against the tree."""
    storage = MemoryStorage()
    log = _log(storage)
    try:
        log.submit(Entry(b"real")).result(WAIT)
        storage.index_add([(LEAF_NAMESPACE, leaf_hash(b"imposter"), 0)])
        answer = log.submit(Entry(b"imposter", dedup=True)).result(WAIT)
        assert not answer.duplicate and answer.index == 1
    finally:
        log.close()


def test_missing_index_is_rebuilt_from_the_tiles(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "log"
    log = _log(FilesystemStorage(root), index_keys=_by_prefix)
    records = [bytes([65 + i % 3]) + b"-entry-%d" % i for i in range(600)]
    try:
        for f in [log.submit(Entry(r)) for r in records]:
            f.result(WAIT)
    finally:
        log.close()
    for path in root.glob(".index2.sqlite3*"):
        path.unlink()
    with caplog.at_level(logging.WARNING):
        log = _log(FilesystemStorage(root), index_keys=_by_prefix)
    try:
        assert "rebuilding" in caplog.text
        assert log.lookup(LEAF_NAMESPACE, leaf_hash(records[599])) == [599]
        assert log.lookup("first", b"A") == list(range(0, 600, 3))
        again = log.submit(Entry(records[10], dedup=True)).result(WAIT)
        assert again.duplicate and again.index == 10
    finally:
        log.close()


def test_filesystem_index_survives_reopen(tmp_path: Path) -> None:
    root = tmp_path / "log"
    log = _log(FilesystemStorage(root))
    try:
        log.submit(Entry(b"durable", dedup=True)).result(WAIT)
    finally:
        log.close()
    log = _log(FilesystemStorage(root))
    try:
        assert log.submit(Entry(b"durable", dedup=True)).result(WAIT).duplicate
    finally:
        log.close()
