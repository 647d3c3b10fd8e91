"""fsck re-derives every tile and the root from the entries; each kind of damage is found."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from sigstack.core.merkle import EMPTY_ROOT
from sigstack.core.note import Ed25519NoteSigner, format_checkpoint, sign_note
from sigstack.log.engine import BatchPolicy, Entry, TransparencyLog
from sigstack.log.fs import FilesystemStorage
from sigstack.log.fsck import fsck, storage_reader
from sigstack.log.memory import MemoryStorage
from sigstack.log.storage import LogStorage

ORIGIN = "fsck.example.test"
KEY = ed25519.Ed25519PrivateKey.generate()
SIGNER = Ed25519NoteSigner(ORIGIN, KEY)
WAIT = 30


def _filled(storage: LogStorage, count: int) -> None:
    TransparencyLog.create(storage, SIGNER, ORIGIN)
    log = TransparencyLog(
        storage,
        SIGNER,
        ORIGIN,
        verifier=SIGNER.verifier(),
        policy=BatchPolicy(max_size=4096, max_age=0.001),
    )
    log.open()
    try:
        futures = [log.submit(Entry(b"entry %d" % i)) for i in range(count)]
        for f in futures:
            f.result(WAIT)
    finally:
        log.close()


def _check(storage: LogStorage, **kwargs: object):  # type: ignore[no-untyped-def]
    return fsck(
        storage_reader(storage), [SIGNER.verifier()], origin=ORIGIN, storage=storage, **kwargs
    )


def test_a_healthy_log_is_clean(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path / "log")
    _filled(storage, 700)
    seen: list[int] = []
    report = _check(storage, progress=lambda done, total: seen.append(done))
    assert report.ok, report.problems
    assert (report.size, report.entries_checked) == (700, 700)
    # level 0: 2 full + 1 partial; level 1: 1 partial (3 hashes)
    assert report.tiles_checked == 4 and report.index_checked
    assert seen[-1] == 700


def test_an_empty_log_is_clean() -> None:
    storage = MemoryStorage()
    _filled(storage, 0)
    report = _check(storage)
    assert report.ok and report.size == 0 and report.root_hash == EMPTY_ROOT


def test_a_changed_entry_is_found() -> None:
    storage = MemoryStorage()
    _filled(storage, 300)
    bundle = bytearray(storage.get("tile/entries/000") or b"")
    bundle[5] ^= 1
    storage.set_object("tile/entries/000", bytes(bundle))
    report = _check(storage)
    assert any("tile/0/000: hash tile differs" in p for p in report.problems), report.problems


def test_a_changed_hash_tile_is_found() -> None:
    storage = MemoryStorage()
    _filled(storage, 300)
    storage.set_object("tile/0/001.p/44", b"\x00" * 32 * 44)
    report = _check(storage)
    assert report.problems == [
        "tile/0/001.p/44: hash tile differs from the one re-derived from the entries"
    ]


def test_a_missing_bundle_is_found() -> None:
    storage = MemoryStorage()
    _filled(storage, 300)
    storage.set_object("tile/entries/001.p/44", None)
    report = _check(storage)
    assert any("tile/entries/001.p/44: entry bundle missing" in p for p in report.problems)


def test_a_checkpoint_from_another_key_is_found() -> None:
    storage = MemoryStorage()
    _filled(storage, 10)
    other = Ed25519NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
    report = fsck(storage_reader(storage), [other.verifier()], origin=ORIGIN)
    assert report.problems and "does not verify" in report.problems[0]


def test_a_signed_checkpoint_over_the_wrong_root_is_found() -> None:
    """Even a validly signed checkpoint is refused if the entries do not hash to it."""
    storage = MemoryStorage()
    _filled(storage, 10)
    lying = sign_note(format_checkpoint(ORIGIN, 10, b"\x11" * 32), [SIGNER])
    storage.set_checkpoint(lying)
    report = _check(storage)
    assert any("is not the root of the logged entries" in p for p in report.problems), (
        report.problems
    )


def test_a_missing_index_row_is_found() -> None:
    storage = MemoryStorage()
    _filled(storage, 10)
    storage.index_truncate(9)  # drop the last entry's row behind the log's back
    report = _check(storage)
    assert any("entry 9 is not indexed" in p for p in report.problems)


@pytest.mark.parametrize("count", [65_537])
def test_higher_level_tiles_are_rederived(count: int) -> None:
    """Past 65,536 entries a level-1 tile is full and a level-2 tile exists."""
    storage = MemoryStorage()
    _filled(storage, count)
    assert _check(storage).ok
    storage.set_object("tile/1/000", b"\x01" * 32 * 256)
    report = _check(storage)
    assert report.problems == [
        "tile/1/000: hash tile differs from the one re-derived from the entries"
    ]
