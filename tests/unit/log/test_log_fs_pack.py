"""Tile packs of the filesystem backend: each full tile's inner nodes, with a copy of
the tile, as one fixed-size record of ``.inner-<L>.pack`` (see sigstack.log.fs)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from sigstack.core.merkle import inclusion_proof, leaf_hash, node_hash
from sigstack.core.note import Ed25519NoteSigner
from sigstack.core.tiles import FULL_TILE_BYTES, INNER_NODES_BYTES, inner_nodes_path
from sigstack.log import BatchPolicy, Entry, FilesystemStorage, TransparencyLog, fs
from sigstack.log import engine as engine_module
from sigstack.log.engine import derive_inner_nodes
from sigstack.log.fsck import fsck, storage_reader

ORIGIN = "log.example/tile-packs"
SIGNER = Ed25519NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
VERIFIER = SIGNER.verifier()
WAIT = 60  # seconds; a safety net against hangs, never a performance assertion
COUNT = 3 * 256 + 10  # tiles 0..2 full, tile 3 partial


def data(i: int) -> bytes:
    return b"packed entry %d" % i


def hashes(count: int = COUNT) -> list[bytes]:
    return [leaf_hash(data(i)) for i in range(count)]


def reference(count: int = COUNT):  # type: ignore[no-untyped-def]
    leaves = hashes(count)

    def node(level: int, index: int) -> bytes:
        nodes = leaves[index << level : (index + 1) << level]
        while len(nodes) > 1:
            nodes = [node_hash(nodes[i], nodes[i + 1]) for i in range(0, len(nodes), 2)]
        return nodes[0]

    return node


def open_log(root: Path, resident_bytes: int | None = None, **kwargs: object) -> TransparencyLog:
    storage = (
        FilesystemStorage(root)
        if resident_bytes is None
        else FilesystemStorage(root, resident_bytes=resident_bytes)
    )
    log = TransparencyLog(storage, SIGNER, ORIGIN, VERIFIER, **kwargs)  # type: ignore[arg-type]
    log.open()
    return log


def prepared(log: TransparencyLog) -> None:
    """Wait for the background load and check of the packs that open() started."""
    assert log._pack_thread is not None, "open() started no pack check"
    assert log.wait_prepared(WAIT)


def append(log: TransparencyLog, start: int, count: int) -> None:
    for receipt in [log.submit(Entry(data(i))) for i in range(start, start + count)]:
        receipt.result(WAIT)


def grow(root: Path, count: int = COUNT) -> None:
    TransparencyLog.create(FilesystemStorage(root), SIGNER, ORIGIN)
    log = open_log(root, policy=BatchPolicy(max_size=100, max_age=0))
    try:
        append(log, 0, count)
    finally:
        log.close()


def tile(index: int) -> bytes:
    return b"".join(hashes()[index * 256 : (index + 1) * 256])


def check(root: Path):  # type: ignore[no-untyped-def]
    storage = FilesystemStorage(root)
    try:
        return fsck(storage_reader(storage), [VERIFIER], origin=ORIGIN, storage=storage)
    finally:
        storage.close()


def assert_clean(root: Path, *, inner_checked: int) -> None:
    """fsck finds nothing wrong and checked this many full tiles' inner nodes."""
    report = check(root)
    assert report.ok, report.problems
    assert report.inner_checked == inner_checked


def test_full_tiles_are_packed_with_their_inner_nodes(tmp_path: Path) -> None:
    root = tmp_path / "log"
    grow(root)
    pack = root / ".inner-0.pack"
    assert pack.stat().st_size == 3 * fs._RECORD
    assert not (root / "inner").exists()  # no inner-node files at all
    storage = FilesystemStorage(root)
    try:
        for index in range(3):
            key = inner_nodes_path(0, index)
            assert storage.get(key) == derive_inner_nodes(tile(index))
            assert storage.get_many([f"tile/0/{index:03d}", key]) == [
                tile(index),
                derive_inner_nodes(tile(index)),
            ]
            assert storage.get(f"tile/0/{index:03d}") == tile(index)  # the C2SP file stays
            assert f"record {index}" in storage.describe(key)
        assert storage.get(inner_nodes_path(0, 3)) is None  # partial tile: no record
        assert storage.get(inner_nodes_path(0, 400)) is None  # beyond the pack
        assert storage.get(inner_nodes_path(1, 0)) is None  # no level-1 pack yet
    finally:
        storage.close()
    assert_clean(root, inner_checked=3)


def test_a_cold_full_tile_is_read_in_place_from_the_mapped_pack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proof that misses the tile cache opens no file and makes no read call: its
    nodes are sliced from the pack (held in memory, or mapped)."""
    root = tmp_path / "log"
    grow(root)
    files = Counter[str]()
    preads = Counter[int]()
    read_file, pread = FilesystemStorage._read, os.pread

    def counting_read(path: Path | str) -> bytes | None:
        files[os.path.relpath(path, root)] += 1
        return read_file(path)

    def counting_pread(fd: int, size: int, offset: int) -> bytes:
        preads[offset // fs._RECORD] += 1
        return pread(fd, size, offset)

    log = open_log(root)
    try:
        log.inclusion_proof(5, COUNT)  # caches tile 0, the upper levels, the right edge
        monkeypatch.setattr(FilesystemStorage, "_read", staticmethod(counting_read))
        monkeypatch.setattr(os, "pread", counting_pread)
        proof = log.inclusion_proof(300, COUNT)
    finally:
        monkeypatch.undo()
        log.close()
    assert proof == inclusion_proof(300, COUNT, reference())
    assert files == Counter()
    assert preads == Counter()


def hash_counter() -> tuple[Counter[str], Callable[[bytes, bytes], bytes]]:
    """A node_hash that counts its calls (in ``calls["node_hash"]``)."""
    calls = Counter[str]()

    def counting(left: bytes, right: bytes) -> bytes:
        calls["node_hash"] += 1
        return node_hash(left, right)

    return calls, counting


def test_a_record_is_checked_against_its_parent_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first use of a record hashes its root and compares it with the parent
    tile; later uses (the tile cache off, so every proof reloads it) do not. (The
    background check after open() is off here: it would check them first.)"""
    size = 3 * 256  # no incomplete subtree: proofs themselves hash nothing
    root = tmp_path / "log"
    grow(root, size)
    calls, counting = hash_counter()
    log = open_log(root, cache_tiles=0, check_packs=False)
    try:
        log.inclusion_proof(5, size)  # checks record 0, caches the level-1 tile
        monkeypatch.setattr(engine_module, "node_hash", counting)
        ref = reference(size)
        assert log.inclusion_proof(300, size) == inclusion_proof(300, size, ref)
        assert calls["node_hash"] == 1  # record 1's root
        for index in (301, 5, 511, 300):
            assert log.inclusion_proof(index, size) == inclusion_proof(index, size, ref)
        assert calls["node_hash"] == 1
    finally:
        log.close()


def test_records_added_after_the_pack_was_mapped_are_found(tmp_path: Path) -> None:
    """The pack grows under its mapping: a record beyond it maps the file again."""
    root = tmp_path / "log"
    grow(root)
    log = open_log(root, cache_tiles=0)
    try:
        log.inclusion_proof(5, COUNT)  # maps the pack (three records)
        append(log, COUNT, 5 * 256 - COUNT)  # tiles 3 and 4 fill
        size = 5 * 256
        ref = reference(size)
        for index in (5, 800, 1100, 1279):
            assert log.inclusion_proof(index, size) == inclusion_proof(index, size, ref)
    finally:
        log.close()
    storage = FilesystemStorage(root)
    try:
        pack = storage.tile_pack(0)
        assert pack is not None
        for index in range(5):
            found = pack.record(index)
            assert found is not None
            buffer, base = found
            assert buffer[base : base + FULL_TILE_BYTES] == tile_of(hashes(size), index)
        assert pack.record(5) is None
    finally:
        storage.close()


def test_packs_are_held_in_memory_and_checked_in_the_background_after_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """open() has every record loaded into memory and its root checked against the
    parent tile in the background: afterwards proofs hash nothing, read no file and
    never map the pack; tiles that fill later are held as they are written."""
    size = 3 * 256  # no incomplete subtree: proofs themselves hash nothing
    root = tmp_path / "log"
    grow(root, size)
    calls, counting = hash_counter()
    log = open_log(root, cache_tiles=0)
    try:
        prepared(log)
        pack = log._packs[0]
        assert isinstance(pack, fs._MappedPack)
        assert pack.resident() >= 3
        monkeypatch.setattr(engine_module, "node_hash", counting)
        ref = reference(size)
        for index in (0, 300, 767, 5):
            assert log.inclusion_proof(index, size) == inclusion_proof(index, size, ref)
        assert calls["node_hash"] == 0
        monkeypatch.undo()
        append(log, size, 2 * 256)  # tiles 3 and 4 fill
        grown = 5 * 256
        ref = reference(grown)
        for index in (1000, 1279, 10):
            assert log.inclusion_proof(index, grown) == inclusion_proof(index, grown, ref)
        assert pack._map is None  # every record came from memory
        for index in range(5):
            found = pack.record(index)
            assert found is not None
            buffer, base = found
            assert buffer[base : base + FULL_TILE_BYTES] == tile_of(hashes(grown), index)
    finally:
        log.close()


def test_a_memory_budget_holds_the_newest_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With room for one chunk (two records here), the newest one is held, older
    records are read through the mapping, and a chunk the writer starts replaces the
    oldest one held; proofs are right whichever way a record is read."""
    monkeypatch.setattr(fs, "_CHUNK_SHIFT", 1)
    root = tmp_path / "log"
    grow(root)  # records 0..2: chunks {0, 1} and {2}
    log = open_log(root, resident_bytes=2 * fs._RECORD, cache_tiles=0)
    try:
        prepared(log)
        pack = log._packs[0]
        assert isinstance(pack, fs._MappedPack)
        assert pack.resident() == 2  # chunk 1 only: record 2 (and the slot of 3)
        ref = reference()
        for index in (0, 300, 600):
            assert log.inclusion_proof(index, COUNT) == inclusion_proof(index, COUNT, ref)

        def held(index: int) -> bool:
            found = pack.record(index)
            assert found is not None
            return found[0] is not pack._map

        assert [held(i) for i in range(3)] == [False, False, True]
        append(log, COUNT, 5 * 256 - COUNT)  # tile 3 joins chunk 1; tile 4 starts chunk 2
        grown = 5 * 256
        ref = reference(grown)
        for index in (0, 600, 900, 1100, 1279):
            assert log.inclusion_proof(index, grown) == inclusion_proof(index, grown, ref)
        assert pack.resident() == 2
        assert [held(i) for i in range(5)] == [False, False, False, False, True]
    finally:
        log.close()


def tile_of(leaves: list[bytes], index: int) -> bytes:
    return b"".join(leaves[index * 256 : (index + 1) * 256])


@pytest.mark.parametrize("damage", ["hole", "another record", "torn"])
def test_records_that_do_not_name_themselves_are_ignored(tmp_path: Path, damage: str) -> None:
    """A record of zeros, one copied from another slot, or half of one: the tile is
    hashed instead, proofs stay right, and fsck has nothing to complain of."""
    root = tmp_path / "log"
    grow(root)
    pack = root / ".inner-0.pack"
    with open(pack, "r+b") as f:
        if damage == "hole":
            f.seek(fs._RECORD)
            f.write(bytes(fs._RECORD))
        elif damage == "another record":
            f.seek(2 * fs._RECORD)
            other = f.read(fs._RECORD)
            f.seek(fs._RECORD)
            f.write(other)
        else:
            f.truncate(fs._RECORD + fs._RECORD // 2)
    storage = FilesystemStorage(root)
    try:
        assert storage.get(inner_nodes_path(0, 1)) is None
        assert storage.get_many(["tile/0/001", inner_nodes_path(0, 1)]) == [tile(1), None]
    finally:
        storage.close()
    log = open_log(root, cache_tiles=0)
    try:
        for index in (256, 300, 511, 600):
            assert log.inclusion_proof(index, COUNT) == inclusion_proof(index, COUNT, reference())
    finally:
        log.close()
    assert_clean(root, inner_checked=(2 if damage != "torn" else 1))


def test_a_damaged_tile_copy_is_reported_by_fsck(tmp_path: Path) -> None:
    """The copy of the tile in a record is what proofs use: fsck compares it with the
    tile re-derived from the entries, and names the pack."""
    root = tmp_path / "log"
    grow(root)
    with open(root / ".inner-0.pack", "r+b") as f:
        f.seek(fs._RECORD + 32)
        f.write(bytes(32))  # leaf 257's hash in the copy of tile 1
    report = check(root)
    assert not report.ok
    assert [p for p in report.problems if "copy of the tile" in p and ".inner-0.pack" in p]
    assert not [p for p in report.problems if "tile/0/001" in p and "differs" in p.split(":")[0]]


def test_a_record_torn_by_a_crash_is_rewritten_when_its_tile_fills(tmp_path: Path) -> None:
    """A batch that wrote half of tile 1's record and never committed: the record lies
    beyond the checkpoint, so nothing reads it, and the batch that fills tile 1 again
    (with other entries) rewrites it whole."""
    root = tmp_path / "log"
    grow(root, 300)  # tile 1 is partial (44 entries)
    with open(root / ".inner-0.pack", "r+b") as f:
        f.seek(fs._RECORD)
        f.write(os.urandom(fs._RECORD // 2))
    log = open_log(root)
    try:
        append(log, 300, COUNT - 300)
        for index in (0, 256, 300, 511, COUNT - 1):
            assert log.inclusion_proof(index, COUNT) == inclusion_proof(index, COUNT, reference())
    finally:
        log.close()
    storage = FilesystemStorage(root)
    try:
        assert storage.get(inner_nodes_path(0, 1)) == derive_inner_nodes(tile(1))
    finally:
        storage.close()
    assert_clean(root, inner_checked=3)


def test_inner_nodes_without_a_stored_tile_go_to_a_file(tmp_path: Path) -> None:
    """put_many packs inner nodes when their tile is in the same call or already
    stored; otherwise (and for objects of another size) it writes the plain file,
    which get reads as it read every inner-node object before packs existed."""
    root = tmp_path / "log"
    storage = FilesystemStorage(root)
    try:
        lone = bytes(range(256)) * (INNER_NODES_BYTES // 256) + bytes(INNER_NODES_BYTES % 256)
        storage.put_many({inner_nodes_path(0, 7): lone})
        assert (root / "inner/0/007").read_bytes() == lone
        assert storage.get(inner_nodes_path(0, 7)) == lone
        assert not (root / ".inner-0.pack").exists()

        full = os.urandom(FULL_TILE_BYTES)
        storage.put_many({"tile/0/008": full})
        storage.put_many({inner_nodes_path(0, 8): lone})  # tile already stored: packed
        assert storage.get_many(["tile/0/008", inner_nodes_path(0, 8)]) == [full, lone]
        assert not (root / "inner/0/008").exists()

        odd = b"not inner nodes"
        storage.put_many({"tile/0/009": full, inner_nodes_path(0, 9): odd})
        assert storage.get(inner_nodes_path(0, 9)) == odd  # wrong size: a plain file
    finally:
        storage.close()


def test_a_log_with_inner_node_files_still_proves_from_them(tmp_path: Path) -> None:
    """A log written before packs: its inner-node files are read (one hash per cold
    tile) and checked by fsck; tiles filled from now on are packed."""
    root = tmp_path / "log"
    grow(root)
    (root / ".inner-0.pack").unlink()
    for index in range(3):
        path = root / inner_nodes_path(0, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(derive_inner_nodes(tile(index)))
    log = open_log(root, cache_tiles=0)
    try:
        for index in (0, 300, 700):
            assert log.inclusion_proof(index, COUNT) == inclusion_proof(index, COUNT, reference())
        append(log, COUNT, 4 * 256 - COUNT)  # fills tile 3
    finally:
        log.close()
    assert (root / ".inner-0.pack").stat().st_size == 4 * fs._RECORD  # record 3 only
    assert_clean(root, inner_checked=4)


def test_full_entry_bundles_are_not_kept_in_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After its fsync, a full entry bundle's pages are released (POSIX_FADV_DONTNEED)
    so that they do not push tile packs and the entry index out of the cache; partial
    bundles, tiles and everything else keep theirs."""
    if not hasattr(os, "posix_fadvise"):
        pytest.skip("no posix_fadvise on this platform")
    released: list[str] = []
    real = os.posix_fadvise

    def recording(fd: int, offset: int, length: int, advice: int) -> None:
        if advice == os.POSIX_FADV_DONTNEED:
            released.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", recording)
    root = tmp_path / "log"
    grow(root, 2 * 256 + 3)
    assert released, "no bundle was released"
    names = {os.path.basename(path) for path in released}
    # Written as temporary files beside their targets: ".<name>.<random>.tmp".
    assert {name.split(".")[1] for name in names} == {"000", "001"}
    assert all(os.path.dirname(path) == str(root / "tile/entries") for path in released)
    storage = FilesystemStorage(root)
    try:
        records = storage.get("tile/entries/001")
        assert records is not None and len(records) > 256 * 2  # still stored, just not cached
    finally:
        storage.close()


def test_a_chunk_written_while_it_loads_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background load reads a chunk without the pack's lock: a record the writer
    replaces meanwhile marks the chunk, and the load reads it again instead of
    holding what it read before the write."""
    monkeypatch.setattr(fs, "_CHUNK_SHIFT", 1)  # two records per chunk

    def put(storage: FilesystemStorage, index: int, tile: bytes) -> None:
        storage.put_many({f"tile/0/{index:03d}": tile, inner_nodes_path(0, index): inner(tile)})

    def inner(tile: bytes) -> bytes:
        return derive_inner_nodes(tile)

    root = tmp_path / "log"
    storage = FilesystemStorage(root)
    try:
        tiles = [os.urandom(FULL_TILE_BYTES) for _ in range(3)]
        for index, data_ in enumerate(tiles):
            put(storage, index, data_)
        pack = storage.tile_pack(0)
        assert isinstance(pack, fs._MappedPack)
        replacement = os.urandom(FULL_TILE_BYTES)
        reads: list[int] = []
        read_chunk = pack._read_chunk

        def writing_meanwhile(fd: int, number: int) -> fs._Chunk:
            chunk = read_chunk(fd, number)
            reads.append(number)
            if reads == [1, 0]:  # the first read of chunk 0: record 1 changes after it
                put(storage, 1, replacement)
            return chunk

        monkeypatch.setattr(pack, "_read_chunk", writing_meanwhile)
        assert pack.load(WAIT)
        assert reads == [1, 0, 0]  # newest chunk first; chunk 0 read again
        found = pack.record(1)
        assert found is not None and found[0] is not pack._map
        buffer, base = found
        assert buffer[base : base + FULL_TILE_BYTES] == replacement
        assert pack.resident() == 4
    finally:
        storage.close()
