"""The filesystem entry index: buffer, durable watermark, epochs, filters, migration.

Epochs and chunks are shrunk (monkeypatched module constants) so that a few hundred
rows cross several epochs and flushes.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from sigstack.core.errors import InvalidRequest, StorageError
from sigstack.core.merkle import leaf_hash
from sigstack.core.note import Ed25519NoteSigner, Ed25519NoteVerifier
from sigstack.log import fsindex
from sigstack.log.engine import LEAF_NAMESPACE, BatchPolicy, Entry, TransparencyLog
from sigstack.log.fs import FilesystemStorage
from sigstack.log.fsck import fsck, storage_reader
from sigstack.log.storage import IndexRow

ORIGIN = "fsindex.example.test"
KEY = ed25519.Ed25519PrivateKey.generate()
WAIT = 10


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fsindex, "EPOCH", 64)
    monkeypatch.setattr(fsindex, "CHUNK_ROWS", 50)


@pytest.fixture
def rebuild(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[fsindex.EntryIndex], None]]:
    """Hold the flusher's background filter rebuild until the test has looked at the state
    before it; yields the real rebuild for the test to run when it chooses."""
    real = fsindex.EntryIndex._rebuild_one_bloom
    release = threading.Event()

    def held(self: fsindex.EntryIndex) -> None:
        if self._pending_blooms:
            release.wait(WAIT)
        real(self)

    def run(index: fsindex.EntryIndex) -> None:
        real(index)
        release.set()

    monkeypatch.setattr(fsindex.EntryIndex, "_rebuild_one_bloom", held)
    try:
        yield run
    finally:
        release.set()


def _key(i: int) -> bytes:
    return leaf_hash(b"entry %d" % i)


def _rows(start: int, end: int) -> list[IndexRow]:
    return [(LEAF_NAMESPACE, _key(i), i) for i in range(start, end)]


def _writer(root: Path) -> FilesystemStorage:
    storage = FilesystemStorage(root)
    storage.acquire_writer()
    return storage


def _flush(storage: FilesystemStorage) -> None:
    """Write everything buffered now (what the flusher does in the background)."""
    index = storage._index
    assert index is not None
    with index._lock:
        index._freeze()
    index._flush_all()


def _verifiers() -> list[Ed25519NoteVerifier]:
    return [Ed25519NoteSigner(ORIGIN, KEY).verifier()]


def _tables(root: Path) -> set[str]:
    with sqlite3.connect(root / fsindex.INDEX_FILE) as db:
        return {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _spy_queries(index: fsindex.EntryIndex) -> list[int]:
    """The epochs whose tables ``index`` queries from now on, one item per query."""
    queried: list[int] = []
    real = index._query

    def spy(db: sqlite3.Connection, epoch: int, *args: object) -> None:
        queried.append(epoch)
        real(db, epoch, *args)  # type: ignore[arg-type]

    index._query = spy  # type: ignore[method-assign]
    return queried


def _forget_partial_filters(root: Path) -> None:
    with sqlite3.connect(root / fsindex.INDEX_FILE) as db:
        db.execute("DELETE FROM partial_bloom")


def _log(root: Path) -> TransparencyLog:
    storage = FilesystemStorage(root)
    signer = Ed25519NoteSigner(ORIGIN, KEY)
    if storage.read_checkpoint() is None:
        TransparencyLog.create(storage, signer, ORIGIN)
    log = TransparencyLog(
        storage, signer, ORIGIN, verifier=signer.verifier(), policy=BatchPolicy(max_age=0.001)
    )
    log.open()
    return log


@pytest.mark.usefixtures("small")
def test_rows_span_epochs_and_are_found_before_and_after_flushing(tmp_path: Path) -> None:
    storage = _writer(tmp_path)
    for start in range(0, 300, 30):  # batches, as the engine adds them
        storage.index_add(_rows(start, start + 30))
    keys = [_key(i) for i in range(300)]
    expected = {k: [i] for i, k in enumerate(keys)}
    assert storage.index_lookup(LEAF_NAMESPACE, keys, 300) == expected  # buffer and tables
    assert storage.index_lookup(LEAF_NAMESPACE, keys, 100) == {
        k: v for k, v in expected.items() if v[0] < 100
    }
    storage.release_writer()
    assert {f"idx_{n}" for n in range(5)} <= _tables(tmp_path)  # 300 positions / 64
    reader = FilesystemStorage(tmp_path)
    assert reader.index_complete_to() == 300
    assert reader.index_lookup(LEAF_NAMESPACE, keys, 300) == expected
    assert reader.index_lookup(LEAF_NAMESPACE, [_key(300)], 300) == {}
    reader.close()


@pytest.mark.usefixtures("small")
def test_leaf_runs_gaps_and_other_rows_are_flushed_alike(tmp_path: Path) -> None:
    # A flush writes each epoch's run of consecutive leaf rows from one blob and the
    # rest row by row: both kinds must land, with the right positions.
    storage = _writer(tmp_path)
    short = b"\x01" * 20  # a leaf key that is not a SHA-256 (rows row by row)
    rows: list[IndexRow] = [
        *_rows(0, 40),
        ("search", b"sha256:aa", 3),
        *_rows(41, 100),  # a gap at 40: the run restarts, crossing epoch 1 at 64
        (LEAF_NAMESPACE, _key(5), 100),  # the same leaf at a second position
        ("search", b"sha256:aa", 101),
        (LEAF_NAMESPACE, short, 102),
    ]
    storage.index_add(rows)
    storage.release_writer()
    reader = FilesystemStorage(tmp_path)
    keys = [_key(i) for i in range(100)]
    expected = {k: [i] for i, k in enumerate(keys) if i != 40}
    expected[_key(5)] = [5, 100]
    assert reader.index_lookup(LEAF_NAMESPACE, keys, 103) == expected
    assert reader.index_lookup(LEAF_NAMESPACE, [short], 103) == {short: [102]}
    assert reader.index_lookup("search", [b"sha256:aa"], 103) == {b"sha256:aa": [3, 101]}
    assert reader.index_complete_to() == 103
    with sqlite3.connect(tmp_path / fsindex.INDEX_FILE) as db:
        stored = sorted(db.execute("SELECT pos FROM idx_1 WHERE ns = 'leaf'"))
    assert stored == [(p,) for p in [*range(64, 101), 102]]
    reader.close()


@pytest.mark.usefixtures("small")
def test_filters_are_stored_for_complete_epochs_and_rebuilt_for_the_rest(tmp_path: Path) -> None:
    storage = _writer(tmp_path)
    storage.index_add(_rows(0, 150))
    storage.release_writer()
    with sqlite3.connect(tmp_path / fsindex.INDEX_FILE) as db:
        stored = {e for (e,) in db.execute("SELECT epoch FROM bloom")}
    assert stored == {0, 1}  # epoch 2 (positions 128..191) is not complete
    _forget_partial_filters(tmp_path)  # as after a crash: close did not save epoch 2's
    again = _writer(tmp_path)
    index = again._index
    assert index is not None
    # The writer answers from the stored filters and the rebuilt one alike: no false negatives.
    keys = [_key(i) for i in range(150)]
    assert again.index_lookup(LEAF_NAMESPACE, keys, 150) == {k: [i] for i, k in enumerate(keys)}
    index._rebuild_one_bloom()  # what the flusher does when idle
    assert set(index._blooms) == {0, 1, 2} and not index._pending_blooms
    assert again.index_lookup(LEAF_NAMESPACE, keys, 150) == {k: [i] for i, k in enumerate(keys)}
    again.release_writer()


def test_a_miss_queries_no_table_when_the_filters_rule_it_out(
    tmp_path: Path, rebuild: Callable[[fsindex.EntryIndex], None]
) -> None:
    storage = _writer(tmp_path)
    storage.index_add(_rows(0, 1000))
    storage.release_writer()
    _forget_partial_filters(tmp_path)  # as after a crash
    storage = _writer(tmp_path)
    index = storage._index
    assert index is not None
    assert index._pending_blooms == [0]  # an incomplete epoch: its filter is rebuilt
    queried = _spy_queries(index)
    misses = [leaf_hash(b"never %d" % i) for i in range(1000)]
    assert storage.index_lookup(LEAF_NAMESPACE, misses, 1000) == {}
    assert queried == [0]  # without a filter the epoch is queried
    rebuild(index)  # what the flusher does when idle
    queried.clear()
    assert storage.index_lookup(LEAF_NAMESPACE, misses, 1000) == {}
    assert queried == []  # a single false positive would be one query (p ~ 2e-6 here)
    assert storage.index_lookup(LEAF_NAMESPACE, [_key(7)], 1000) == {_key(7): [7]}
    assert queried == [0]
    storage.release_writer()


@pytest.mark.usefixtures("small")
def test_a_clean_close_saves_the_filters_of_incomplete_epochs(tmp_path: Path) -> None:
    storage = _writer(tmp_path)
    storage.index_add(_rows(0, 150))
    storage.release_writer()
    with sqlite3.connect(tmp_path / fsindex.INDEX_FILE) as db:
        saved = list(db.execute("SELECT epoch, durable FROM partial_bloom"))
    assert saved == [(2, 150)]  # epoch 2 holds 128..149; exact while D is 150
    again = _writer(tmp_path)
    index = again._index
    assert index is not None
    assert set(index._blooms) == {0, 1, 2} and not index._pending_blooms
    queried = _spy_queries(index)
    keys = [_key(i) for i in range(150)]
    assert again.index_lookup(LEAF_NAMESPACE, keys, 150) == {k: [i] for i, k in enumerate(keys)}
    misses = [leaf_hash(b"never %d" % i) for i in range(200)]
    queried.clear()
    assert again.index_lookup(LEAF_NAMESPACE, misses, 150) == {}
    assert 2 not in queried  # the saved filter answers for epoch 2
    again.release_writer()


@pytest.mark.usefixtures("small")
def test_a_saved_filter_is_not_trusted_once_more_rows_were_flushed(
    tmp_path: Path, rebuild: Callable[[fsindex.EntryIndex], None]
) -> None:
    storage = _writer(tmp_path)
    storage.index_add(_rows(0, 150))
    storage.release_writer()  # saves epoch 2's filter at D = 150
    with sqlite3.connect(tmp_path / fsindex.INDEX_FILE) as db:
        # What a writer that flushed more rows of epoch 2 and then crashed leaves.
        db.execute("INSERT INTO idx_2 (ns, key, pos) VALUES (?, ?, ?)", _rows(150, 151)[0])
        db.execute("UPDATE meta SET value = 151 WHERE name = 'durable'")
    again = _writer(tmp_path)
    index = again._index
    assert index is not None
    assert index._pending_blooms == [2]  # the saved filter lacks row 150: rebuilt instead
    assert again.index_lookup(LEAF_NAMESPACE, [_key(150)], 151) == {_key(150): [150]}
    rebuild(index)
    assert again.index_lookup(LEAF_NAMESPACE, [_key(150)], 151) == {_key(150): [150]}
    again.release_writer()


@pytest.mark.usefixtures("small")
def test_truncate_drops_rows_in_the_buffer_and_in_the_tables(tmp_path: Path) -> None:
    storage = _writer(tmp_path)
    storage.index_add(_rows(0, 200))
    _flush(storage)
    storage.index_add(_rows(200, 230))  # still buffered
    storage.index_truncate(100)
    assert storage.index_complete_to() == 100
    keys = [_key(i) for i in range(230)]
    assert storage.index_lookup(LEAF_NAMESPACE, keys, 1000) == {
        k: [i] for i, k in enumerate(keys) if i < 100
    }
    storage.index_add(_rows(100, 110))  # the log goes on from 100
    storage.release_writer()
    assert not {"idx_2", "idx_3"} & _tables(tmp_path)
    reader = FilesystemStorage(tmp_path)
    assert reader.index_complete_to() == 110
    assert reader.index_lookup(LEAF_NAMESPACE, keys, 1000) == {
        k: [i] for i, k in enumerate(keys) if i < 110
    }


@pytest.mark.usefixtures("small")
def test_batches_of_leaf_hashes_with_repeats_gaps_and_a_truncation(tmp_path: Path) -> None:
    # The engine's path: index_add_batch. A leaf hash at two positions (an entry not
    # deduplicated), a batch that does not continue the buffered run, a truncation
    # in the middle of the run: every row is found in the buffer, after a flush (where
    # the filters must hold it) and by another process.
    storage = _writer(tmp_path)
    storage.index_add_batch(0, [_key(i) for i in range(30)], [("search", b"s", 2)])
    storage.index_add_batch(30, [_key(i) for i in range(30, 45)] + [_key(3)], [])  # 3 at 45
    storage.index_add_batch(50, [_key(i) for i in range(50, 60)], [])  # 46..49 never added
    keys = [_key(i) for i in range(60)]
    expected = {k: [i] for i, k in enumerate(keys) if not 46 <= i < 50 and i != 45}
    expected[_key(3)] = [3, 45]
    assert storage.index_lookup(LEAF_NAMESPACE, keys, 60) == expected
    assert storage.index_lookup(LEAF_NAMESPACE, keys, 40) == {
        k: [p for p in v if p < 40] for k, v in expected.items() if v[0] < 40
    }
    storage.index_truncate(55)
    storage.index_add_batch(55, [_key(i) for i in range(155, 160)], [])
    del expected[_key(55)], expected[_key(56)], expected[_key(57)], expected[_key(58)]
    del expected[_key(59)]
    expected.update({_key(i + 100): [i] for i in range(55, 60)})
    everything = [*keys, *(_key(i) for i in range(155, 160))]
    assert storage.index_lookup(LEAF_NAMESPACE, everything, 60) == expected
    _flush(storage)
    assert storage.index_lookup(LEAF_NAMESPACE, everything, 60) == expected
    assert storage.index_lookup("search", [b"s"], 60) == {b"s": [2]}
    storage.release_writer()
    reader = FilesystemStorage(tmp_path)
    assert reader.index_lookup(LEAF_NAMESPACE, everything, 60) == expected
    reader.close()
    with pytest.raises(InvalidRequest):
        FilesystemStorage(tmp_path).index_add_batch(0, [b"short"], [])


def test_a_failed_flush_is_reported_then_reset_by_truncate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = _writer(tmp_path)
    storage.index_add(_rows(0, 10))
    _flush(storage)
    storage.index_add(_rows(10, 20))
    index = storage._index
    assert index is not None

    def broken(*args: object) -> None:
        raise StorageError("disk full (test)")

    monkeypatch.setattr(index, "_write", broken)
    with index._lock:
        index._freeze()
    with pytest.raises(StorageError, match="disk full"):
        index._flush_all()
    with pytest.raises(StorageError, match="disk full"):
        storage.index_add(_rows(20, 30))
    with pytest.raises(StorageError, match="disk full"):
        storage.index_lookup(LEAF_NAMESPACE, [_key(1)], 20)
    monkeypatch.undo()
    storage.index_truncate(20)  # what the engine does when it recovers
    assert storage.index_complete_to() == 10  # rows 10..19 were lost with the buffer
    assert storage.index_lookup(LEAF_NAMESPACE, [_key(1), _key(15)], 20) == {_key(1): [1]}
    storage.release_writer()


def test_an_index_from_an_older_sigstack_is_replaced_and_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = _log(tmp_path)
    try:
        for f in [log.submit(Entry(b"entry %d" % i)) for i in range(20)]:
            f.result(WAIT)
    finally:
        log.close()
    os.unlink(tmp_path / fsindex.INDEX_FILE)
    legacy = tmp_path / fsindex.LEGACY_INDEX_FILE
    with sqlite3.connect(legacy) as db:
        db.execute("CREATE TABLE entry_index (ns TEXT, key BLOB, pos INTEGER)")
    with caplog.at_level(logging.WARNING):
        log = _log(tmp_path)
    try:
        assert not legacy.exists()
        assert "rebuilding" in caplog.text
        assert log.lookup(LEAF_NAMESPACE, leaf_hash(b"entry 19")) == [19]
    finally:
        log.close()


def test_entries_past_the_durable_watermark_are_indexed_again_on_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash loses the buffer: the engine re-adds [D, size) from the tiles."""
    log = _log(tmp_path)
    try:
        for f in [log.submit(Entry(b"entry %d" % i)) for i in range(40)]:
            f.result(WAIT)
    finally:
        log.close()
    with sqlite3.connect(tmp_path / fsindex.INDEX_FILE) as db:  # as if rows 25.. never flushed
        db.execute("DELETE FROM idx_0 WHERE pos >= 25")
        db.execute("UPDATE meta SET value = 25 WHERE name = 'durable'")
    reader = FilesystemStorage(tmp_path)
    report = fsck(
        storage_reader(reader), [Ed25519NoteSigner(ORIGIN, KEY).verifier()], storage=reader
    )
    reader.close()
    assert report.ok and report.index_checked and report.index_pending == 15
    with caplog.at_level(logging.INFO):
        log = _log(tmp_path)
    try:
        assert "indexing entries 25 to 39" in caplog.text
        for i in (0, 24, 25, 39):
            assert log.lookup(LEAF_NAMESPACE, leaf_hash(b"entry %d" % i)) == [i]
        again = log.submit(Entry(b"entry 30", dedup=True)).result(WAIT)
        assert again.duplicate and again.index == 30
    finally:
        log.close()
    reader = FilesystemStorage(tmp_path)
    report = fsck(
        storage_reader(reader), [Ed25519NoteSigner(ORIGIN, KEY).verifier()], storage=reader
    )
    reader.close()
    assert report.ok and report.index_pending == 0


def test_only_the_writer_adds_or_truncates(tmp_path: Path) -> None:
    reader = FilesystemStorage(tmp_path)
    with pytest.raises(StorageError, match="writer lease"):
        reader.index_add(_rows(0, 1))
    with pytest.raises(StorageError, match="writer lease"):
        reader.index_truncate(0)
    assert reader.index_lookup(LEAF_NAMESPACE, [_key(0)], 10) == {}
    reader.close()


def test_a_buffered_chunk_is_flushed_by_the_background_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fsindex, "FLUSH_AFTER", 0.05)
    storage = _writer(tmp_path)
    storage.index_add(_rows(0, 5))
    reader = FilesystemStorage(tmp_path)
    index = storage._index
    assert index is not None
    with index._lock:  # wait for the flusher, not for a clock
        while index._durable < 5:
            assert index._lock.wait(WAIT)
    assert reader.index_complete_to() == 5
    assert reader.index_lookup(LEAF_NAMESPACE, [_key(4)], 5) == {_key(4): [4]}
    reader.close()
    storage.release_writer()
