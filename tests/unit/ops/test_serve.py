"""`sigstack serve rekor`: where the log lives, and creating it in PostgreSQL only once.

The real processes are in tests/e2e/test_serve_postgres.py; here, the rules for
creating the database log from the stack's filesystem log, against a real server
(skipped without one: see tests/conftest.py).
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip(
    "psycopg",
    reason="PostgreSQL tests skipped: install the driver (pip install -e '.[test]'); see "
    "tests/conftest.py",
)

from sigstack.core.errors import ConfigError
from sigstack.log.engine import Entry, TransparencyLog
from sigstack.log.fs import FilesystemStorage
from sigstack.log.fsck import fsck, storage_reader
from sigstack.log.postgres import PostgresStorage
from sigstack.ops.serve import add_arguments, ensure_database_log
from sigstack.stack import bootstrap
from sigstack.stack.config import Endpoints
from sigstack.stack.state import StateDir

WAIT = 60


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> bootstrap.Material:
    state = StateDir(tmp_path_factory.mktemp("stack") / "state")
    return bootstrap.initialize(state, Endpoints.default(), None)


@pytest.fixture
def fresh_material(tmp_path: Path) -> bootstrap.Material:
    return bootstrap.initialize(StateDir(tmp_path / "state"), Endpoints.default(), None)


def _grow_filesystem_log(material: bootstrap.Material, count: int) -> bytes:
    signer = material.rekor_signer()
    log = TransparencyLog(
        FilesystemStorage(material.state.log_dir("rekor")),
        signer,
        material.log_origin("rekor"),
        signer.verifier(),
    )
    log.open()
    try:
        for f in [log.submit(Entry(b"fs entry %d" % i)) for i in range(count)]:
            f.result(WAIT)
        return log.checkpoint().note
    finally:
        log.close()


def _open(storage: PostgresStorage, material: bootstrap.Material) -> TransparencyLog:
    signer = material.rekor_signer()
    log = TransparencyLog(storage, signer, material.log_origin("rekor"), signer.verifier())
    log.open()
    return log


@pytest.fixture
def db(
    postgres_storage: Callable[..., PostgresStorage],
) -> Iterator[Callable[[], PostgresStorage]]:
    yield postgres_storage


def test_the_command_line(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["rekor", "--port", "8080", "--log-storage", "postgresql://u@h/db", "--data-dir", "d"]
    )
    assert (args.service, args.port, args.log_name) == ("rekor", 8080, "rekor")
    assert not args.copy_filesystem_log
    with pytest.raises(SystemExit):
        parser.parse_args(["ctlog", "--port", "1"])


def test_a_new_stack_log_is_continued_in_the_database_once(
    material: bootstrap.Material, db: Callable[[], PostgresStorage]
) -> None:
    said: list[str] = []
    storage = db()
    fs_note = FilesystemStorage(material.state.log_dir("rekor")).read_checkpoint()
    ensure_database_log(storage, material, copy_filesystem_log=False, say=said.append)
    assert storage.read_checkpoint() == fs_note  # the same tree (its genesis entry, if any)
    assert any("copied" in line for line in said)
    marker = material.state.moved_marker("rekor")
    assert "moved_to" in marker.read_text()  # `sigstack up` will refuse the old copy
    ensure_database_log(db(), material, copy_filesystem_log=False, say=said.append)
    assert storage.read_checkpoint() == fs_note  # never created over
    log = _open(db(), material)
    try:
        size = log.checkpoint().size
        assert size <= 1
        assert log.submit(Entry(b"first")).result(WAIT).index == size
    finally:
        log.close()


def test_a_stack_without_a_log_checkpoint_gets_an_empty_database_log(
    fresh_material: bootstrap.Material, db: Callable[[], PostgresStorage]
) -> None:
    shutil.rmtree(fresh_material.state.log_dir("rekor"))
    storage = db()
    ensure_database_log(storage, fresh_material, copy_filesystem_log=False, say=print)
    log = _open(db(), fresh_material)
    try:
        assert log.checkpoint().size == 0
    finally:
        log.close()


def test_a_stack_log_with_entries_is_not_forked_into_the_database(
    fresh_material: bootstrap.Material, db: Callable[[], PostgresStorage]
) -> None:
    _grow_filesystem_log(fresh_material, 3)  # it has been served
    storage = db()
    with pytest.raises(ConfigError, match="--copy-filesystem-log") as info:
        ensure_database_log(storage, fresh_material, copy_filesystem_log=False, say=print)
    assert "split view" in str(info.value)
    assert storage.read_checkpoint() is None


def test_copying_the_stack_log_continues_the_same_tree(
    fresh_material: bootstrap.Material, db: Callable[[], PostgresStorage]
) -> None:
    note = _grow_filesystem_log(fresh_material, 300)
    said: list[str] = []
    storage = db()
    ensure_database_log(storage, fresh_material, copy_filesystem_log=True, say=said.append)
    assert storage.read_checkpoint() == note
    assert any("copied" in line for line in said)
    log = _open(db(), fresh_material)  # verifies tiles; rebuilds the entry index
    try:
        copied = log.checkpoint().size
        assert copied >= 300
        assert log.submit(Entry(b"next")).result(WAIT).index == copied
    finally:
        log.close()
    verifier = fresh_material.rekor_signer().verifier()
    report = fsck(storage_reader(storage), [verifier], storage=storage)
    assert report.ok and report.size == copied + 1, report.problems


def test_copying_refuses_while_the_stack_log_is_written(
    fresh_material: bootstrap.Material, db: Callable[[], PostgresStorage]
) -> None:
    _grow_filesystem_log(fresh_material, 2)
    busy = FilesystemStorage(fresh_material.state.log_dir("rekor"))
    busy.acquire_writer()  # as `sigstack up` would
    try:
        storage = db()
        with pytest.raises(ConfigError, match="being written"):
            ensure_database_log(storage, fresh_material, copy_filesystem_log=True, say=print)
        assert storage.read_checkpoint() is None
    finally:
        busy.release_writer()
