"""Checkpoint rollback: the storage's durable high-water mark refuses an older checkpoint.

An operator who restores an older checkpoint (a file from a backup, an edited row)
while the log is stopped would make the engine sign a new tree over the older one:
a tree inconsistent with the checkpoint clients and monitors already hold. Every
backend records the last committed checkpoint as a high-water mark apart from the
checkpoint (``LogStorage.read_high_water``), and the engine refuses to open over a
checkpoint behind it or forking from it, with an error that says so. Each test runs
on memory, the filesystem and PostgreSQL (skipped without a server, see
tests/conftest.py), except those about the filesystem's own write order.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from sigstack.core.errors import LogIntegrityError, StorageError
from sigstack.core.merkle import root_from_leaves
from sigstack.core.note import Ed25519NoteSigner
from sigstack.log.engine import BatchPolicy, Checkpoint, Entry, TransparencyLog
from sigstack.log.faults import FaultInjectingStorage
from sigstack.log.fs import FilesystemStorage
from sigstack.log.fsck import fsck, storage_reader
from sigstack.log.memory import MemoryStorage
from sigstack.log.storage import LogStorage

if TYPE_CHECKING:
    from sigstack.log.postgres import PostgresStorage as PostgresStorageType

ORIGIN = "rollback.example.test"
KEY = ed25519.Ed25519PrivateKey.generate()
SIGNER = Ed25519NoteSigner(ORIGIN, KEY)
WAIT = 10
MARK_FILE = ".checkpoint-high-water"


class Backend:
    """One log's storage, reopenable, with a way to restore its checkpoint by hand."""

    def __init__(
        self,
        reopen: Callable[[], LogStorage],
        restore: Callable[[bytes], object],
    ) -> None:
        self.reopen = reopen
        self.restore = restore


@pytest.fixture(params=["memory", "fs", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "memory":
        shared = MemoryStorage()
        return Backend(lambda: shared, shared.set_checkpoint)
    if request.param == "fs":
        root = tmp_path / "log"
        return Backend(lambda: FilesystemStorage(root), (root / "checkpoint").write_bytes)
    make: Callable[[], LogStorage] = request.getfixturevalue("postgres_storage")
    dsn: str = request.getfixturevalue("postgres_dsn")
    name: str = request.getfixturevalue("postgres_log_name")

    def restore(note: bytes) -> None:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            cur = conn.execute(
                "UPDATE sigstack_checkpoints SET data = %s WHERE log = %s", (note, name)
            )
            assert cur.rowcount == 1

    return Backend(make, restore)


def _open(storage: LogStorage) -> TransparencyLog:
    log = TransparencyLog(
        storage, SIGNER, ORIGIN, SIGNER.verifier(), policy=BatchPolicy(max_age=0.001)
    )
    log.open()
    return log


def _grow(storage: LogStorage, datas: list[bytes]) -> list[Checkpoint]:
    """Open, log each entry in its own batch, close; every checkpoint committed."""
    log = _open(storage)
    try:
        return [log.submit(Entry(d)).result(WAIT).checkpoint for d in datas]
    finally:
        log.close()
        storage.close()


def _created(backend: Backend, datas: list[bytes]) -> list[Checkpoint]:
    storage = backend.reopen()
    TransparencyLog.create(storage, SIGNER, ORIGIN)
    return _grow(storage, datas)


def _fsck(storage: LogStorage):  # type: ignore[no-untyped-def]
    return fsck(storage_reader(storage), [SIGNER.verifier()], origin=ORIGIN, storage=storage)


def test_a_restored_older_checkpoint_is_refused_until_the_newest_is_back(
    backend: Backend,
) -> None:
    datas = [b"entry %d" % i for i in range(5)]
    seen = _created(backend, datas)
    older, newest = seen[0], seen[-1]

    backend.restore(older.note)  # the operator restores a backup while the log is stopped
    storage = backend.reopen()
    with pytest.raises(LogIntegrityError, match="rolled back") as info:
        _open(storage)
    message = str(info.value)
    assert "size 1" in message and "size 5" in message
    assert storage.read_checkpoint() == older.note, "nothing was signed over the rollback"
    report = _fsck(storage)
    assert not report.ok and "rolled back" in " ".join(report.problems)
    storage.close()

    backend.restore(newest.note)
    storage = backend.reopen()
    more = _grow(storage, [b"after"])
    assert more[-1].size == 6
    assert more[-1].root_hash == root_from_leaves([*datas, b"after"])
    assert _fsck(backend.reopen()).ok


def test_a_checkpoint_of_another_tree_past_the_mark_is_refused_as_a_fork(
    backend: Backend,
) -> None:
    """The same key signed another tree (a second log, a copied directory): the tiles
    and the checkpoint agree with each other, but not with what this log committed."""
    _created(backend, [b"ours %d" % i for i in range(5)])
    other = MemoryStorage()
    TransparencyLog.create(other, SIGNER, ORIGIN)
    theirs = _grow(other, [b"theirs %d" % i for i in range(7)])[-1]

    storage = backend.reopen()
    storage.acquire_writer()  # write as the engine would (PostgreSQL fences writes)
    storage.put_many({key: other.get(key) or b"" for key in other.keys()})
    storage.release_writer()
    backend.restore(theirs.note)
    storage = backend.reopen()
    with pytest.raises(LogIntegrityError, match="fork") as info:
        _open(storage)
    assert "size 5" in str(info.value)


def test_a_checkpoint_of_the_same_size_and_another_root_is_refused_as_a_fork(
    backend: Backend,
) -> None:
    _created(backend, [b"ours %d" % i for i in range(3)])
    other = MemoryStorage()
    TransparencyLog.create(other, SIGNER, ORIGIN)
    theirs = _grow(other, [b"theirs %d" % i for i in range(3)])[-1]

    storage = backend.reopen()
    storage.acquire_writer()
    storage.put_many({key: other.get(key) or b"" for key in other.keys()})
    storage.release_writer()
    backend.restore(theirs.note)
    with pytest.raises(LogIntegrityError, match="fork"):
        _open(backend.reopen())


# --- the filesystem's mark file ---------------------------------------------------------


def test_fs_mark_behind_the_checkpoint_is_accepted_and_catches_up(tmp_path: Path) -> None:
    """A power loss may lose the mark's last rename: one swap behind is not a rollback."""
    root = tmp_path / "log"
    storage = FilesystemStorage(root)
    TransparencyLog.create(storage, SIGNER, ORIGIN)
    seen = _grow(storage, [b"a", b"b", b"c"])
    (root / MARK_FILE).write_bytes(seen[0].note)

    more = _grow(FilesystemStorage(root), [b"d"])
    assert more[-1].size == 4
    assert (root / MARK_FILE).read_bytes() == (root / "checkpoint").read_bytes() == more[-1].note


def test_fs_log_without_a_mark_opens_and_gets_one(tmp_path: Path) -> None:
    """Logs written before the mark existed open as they are; the next swap records it."""
    root = tmp_path / "log"
    storage = FilesystemStorage(root)
    TransparencyLog.create(storage, SIGNER, ORIGIN)
    _grow(storage, [b"a"])
    (root / MARK_FILE).unlink()
    more = _grow(FilesystemStorage(root), [b"b"])
    assert (root / MARK_FILE).read_bytes() == more[-1].note


def test_fs_mark_that_is_not_a_checkpoint_of_the_log_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "log"
    storage = FilesystemStorage(root)
    TransparencyLog.create(storage, SIGNER, ORIGIN)
    _grow(storage, [b"a"])
    stranger = Ed25519NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
    other = MemoryStorage()
    TransparencyLog.create(other, stranger, ORIGIN)
    (root / MARK_FILE).write_bytes(other.read_checkpoint() or b"")
    with pytest.raises(LogIntegrityError, match="high-water mark"):
        _open(FilesystemStorage(root))


def test_fs_mark_is_renamed_only_after_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A swap that fails between the two renames leaves the mark behind, never ahead,
    so the log opens at the new checkpoint (the failed swap did land)."""
    root = tmp_path / "log"
    storage = FilesystemStorage(root)
    TransparencyLog.create(storage, SIGNER, ORIGIN)
    _grow(storage, [b"a"])
    before = (root / MARK_FILE).read_bytes()
    real_replace = os.replace
    renamed: list[str] = []

    def replace(src: str | Path, dst: str | Path) -> None:
        renamed.append(Path(dst).name)
        if Path(dst).name == MARK_FILE:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    storage = FilesystemStorage(root)
    log = _open(storage)
    monkeypatch.setattr(os, "replace", replace)
    try:
        with pytest.raises(StorageError):
            log.submit(Entry(b"b")).result(WAIT)
        # While renames of the mark fail, it stays behind the checkpoint that landed.
        assert renamed[renamed.index("checkpoint") + 1] == MARK_FILE
        assert (root / "checkpoint").read_bytes().split(b"\n")[1] == b"2"
        assert (root / MARK_FILE).read_bytes() == before
    finally:
        monkeypatch.undo()
        log.close()
        storage.close()
    assert [p.name for p in root.iterdir() if p.name.endswith(".tmp")] == []

    log = _open(FilesystemStorage(root))
    try:
        assert log.checkpoint().size == 2  # the checkpoint landed; the mark lagged
        assert log.submit(Entry(b"c")).result(WAIT).checkpoint.size == 3
    finally:
        log.close()
    assert (root / MARK_FILE).read_bytes() == (root / "checkpoint").read_bytes()


# --- a commit between reading the mark and the checkpoint is not a rollback ---------------


class CommitBetweenReads:
    """A fault hook that lets a writer commit one more entry right before the second of
    the two reads (mark and checkpoint), whichever order the reader uses."""

    def __init__(self, writer: TransparencyLog) -> None:
        self.writer = writer
        self.reads = 0
        self.committed: Checkpoint | None = None

    def __call__(self, operation: str, key: str) -> None:
        if operation in ("read_checkpoint", "read_high_water"):
            self.reads += 1
            if self.reads == 2:
                self.committed = self.writer.submit(Entry(b"meanwhile")).result(WAIT).checkpoint


def test_fsck_of_a_running_log_reads_the_mark_first() -> None:
    storage = MemoryStorage()
    TransparencyLog.create(storage, SIGNER, ORIGIN)
    writer = _open(storage)
    try:
        writer.submit(Entry(b"a")).result(WAIT)
        hook = CommitBetweenReads(writer)
        report = _fsck(FaultInjectingStorage(storage, hook))
        assert hook.committed is not None and hook.committed.size == 2
        assert report.ok, report.problems
    finally:
        writer.close()


def test_a_follower_opening_while_the_sequencer_commits_sees_no_rollback(
    postgres_storage: Callable[[], PostgresStorageType],
) -> None:
    """Several processes share a PostgreSQL log: one that starts while the sequencer
    commits must not mistake the newer mark for a rollback of the checkpoint."""
    first = postgres_storage()
    TransparencyLog.create(first, SIGNER, ORIGIN)
    sequencer = TransparencyLog(
        first, SIGNER, ORIGIN, SIGNER.verifier(), shared=first.shared_queue()
    )
    sequencer.open()
    try:
        sequencer.submit(Entry(b"a")).result(WAIT)
        hook = CommitBetweenReads(sequencer)
        second = postgres_storage()
        follower = TransparencyLog(
            FaultInjectingStorage(second, hook),
            SIGNER,
            ORIGIN,
            SIGNER.verifier(),
            shared=second.shared_queue(),
        )
        follower.open()
        try:
            assert hook.committed is not None and hook.committed.size == 2
            assert follower.role == "follower"
            assert follower.checkpoint().size == 2
        finally:
            follower.close(timeout=WAIT)
    finally:
        sequencer.close(timeout=WAIT)
