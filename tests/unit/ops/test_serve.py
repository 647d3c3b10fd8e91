"""`sigstack serve rekor`: where the log lives, and creating it in PostgreSQL only once.

The real processes are in tests/e2e/test_serve_postgres.py; here, the rules for
creating the database log from the stack's filesystem log, against a real server
(skipped without one: see tests/conftest.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "psycopg",
    reason="PostgreSQL tests skipped: install the driver (pip install -e '.[test]'); see "
    "tests/conftest.py",
)

from sigstack.core.errors import ConfigError, StateError
from sigstack.log.engine import Entry, TransparencyLog
from sigstack.log.fs import FilesystemStorage
from sigstack.log.fsck import fsck, storage_reader
from sigstack.log.postgres import PostgresStorage
from sigstack.log.storage import LogStorage
from sigstack.ops.serve import V1_LOG, add_arguments, ensure_database_log, run_serve
from sigstack.services.rekor import v1 as rekor_v1
from sigstack.services.rekor.v1 import EntryExists, RekorV1Service
from sigstack.stack import bootstrap, genesis
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


# --- the Rekor v1 log ------------------------------------------------------------------------


def _v1_service(material: bootstrap.Material, storage: LogStorage) -> RekorV1Service:
    """The stack's Rekor v1 service over ``storage``, wired as `sigstack serve` wires it."""
    signer = material.rekor_v1_signer()
    log = TransparencyLog(
        storage,
        signer,
        material.log_origin(V1_LOG),
        signer.verifier(),
        index_keys=rekor_v1.index_keys,
    )
    log.open()
    return RekorV1Service(log, material.ecdsa(V1_LOG), material.rekor_v1_tree_id())


def _hashedrekord(n: int) -> tuple[bytes, str, str]:
    """A distinct hashedrekord 0.0.1 entry signed by a throw-away key (as the genesis
    entry is built): ``(request, artifact sha256 hex, base64 PEM key)``."""
    created = dt.datetime(2030, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=n)
    request = genesis.v1_request("a test", created)
    digest = hashlib.sha256(genesis.statement("a test", created)).hexdigest()
    key = json.loads(request)["spec"]["signature"]["publicKey"]["content"]
    return request, digest, key


def _search(service: RekorV1Service, query: dict[str, Any]) -> list[str]:
    return service.search_index(json.dumps(query).encode())


def test_the_rekor_v1_log_is_copied_to_the_database_and_stays_searchable(
    fresh_material: bootstrap.Material, db: Callable[[], PostgresStorage]
) -> None:
    """The v1 log moves like the v2 log, and its search index is rows of the same database."""
    requests = [_hashedrekord(i) for i in range(3)]
    fs_service = _v1_service(
        fresh_material, FilesystemStorage(fresh_material.state.log_dir(V1_LOG))
    )
    try:
        ids = [asyncio.run(fs_service.create_entry(body))[0] for body, _, _ in requests]
        note = fs_service.transparency_log.checkpoint().note
    finally:
        fs_service.transparency_log.close()

    storage = db()
    with pytest.raises(ConfigError, match=r"Rekor v1 log .* holds"):  # served: ask first
        ensure_database_log(storage, fresh_material, copy_filesystem_log=False, log=V1_LOG)
    said: list[str] = []
    ensure_database_log(
        storage, fresh_material, copy_filesystem_log=True, say=said.append, log=V1_LOG
    )
    assert storage.read_checkpoint() == note  # the same tree, under the same key
    assert any(line.startswith("copied the Rekor v1 log") for line in said), said
    assert "moved_to" in fresh_material.state.moved_marker(V1_LOG).read_text()
    assert not fresh_material.state.moved_marker("rekor").exists()  # only what moved

    # Opening the copy rebuilds the search index (it is not an object of the log) in
    # PostgreSQL, from the copied entries. (Search by email over PostgreSQL: see
    # tests/e2e/test_serve_postgres.py.)
    service = _v1_service(fresh_material, db())
    try:
        for entry_id, (_, digest, key) in zip(ids, requests, strict=True):
            logged = json.loads(base64.b64decode(service.entry_by_uuid(entry_id)[entry_id]["body"]))
            assert logged["spec"]["data"]["hash"]["value"] == digest
            assert _search(service, {"hash": f"sha256:{digest}"}) == [entry_id]
            assert _search(service, {"publicKey": {"format": "x509", "content": key}}) == [entry_id]
        assert _search(service, {"hash": "00" * 32}) == []

        # The copy is the log: a copied entry is a duplicate, a new one is found at once.
        with pytest.raises(EntryExists) as info:
            asyncio.run(service.create_entry(requests[0][0]))
        assert info.value.entry_id == ids[0]
        body, digest, key = _hashedrekord(len(ids))
        new_id, answer = asyncio.run(service.create_entry(body))
        assert answer[new_id]["logIndex"] == len(ids) + 1  # after the genesis entry and the copies
        query = {"hash": digest, "publicKey": {"format": "x509", "content": key}, "operator": "and"}
        assert _search(service, query) == [new_id]
    finally:
        service.transparency_log.close()


def _serve_args(material: bootstrap.Material) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(
        ["rekor", "--data-dir", str(material.state.root), "--port", str(_free_port())]
    )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("log", ["rekor", V1_LOG])
def test_serving_a_moved_filesystem_log_is_refused(
    fresh_material: bootstrap.Material, log: str
) -> None:
    """Without --log-storage, a log that lives in PostgreSQL now would be forked."""
    marker = fresh_material.state.moved_marker(log)
    marker.write_text('{"moved_to": "postgresql://db/sigstack"}\n')
    with pytest.raises(StateError, match="moved to PostgreSQL") as info:
        run_serve(_serve_args(fresh_material))
    assert info.value.path == marker


def test_a_stack_from_before_rekor_v1_is_told_to_run_init(
    fresh_material: bootstrap.Material,
) -> None:
    """Serving only v2 would leave the v1 URL of the trusted root unanswered: refuse."""
    manifest = fresh_material.state.manifest_path
    doc = json.loads(manifest.read_text())
    del doc["logs"][V1_LOG]  # as a stack made before Rekor v1 existed
    manifest.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="sigstack init --data-dir") as info:
        run_serve(_serve_args(fresh_material))
    assert "log rekor-v1" in str(info.value)
