"""Stored inner nodes of full tiles (``inner/<L>/<N>``): written with the tiles, used by
proofs instead of hashing a cold tile, never trusted over the tiles, checked by fsck.

Memory, filesystem and PostgreSQL storage (PostgreSQL cases are skipped without a
server: see tests/conftest.py).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from log_kit import CountingStorage, rewrite_packed_inner

from sigstack.core.errors import InvalidRequest
from sigstack.core.merkle import inclusion_proof, leaf_hash, node_hash
from sigstack.core.note import Ed25519NoteSigner
from sigstack.core.tiles import INNER_NODES_BYTES, inner_nodes_path
from sigstack.log import (
    BatchPolicy,
    Entry,
    FilesystemStorage,
    LogStorage,
    MemoryStorage,
    TransparencyLog,
)
from sigstack.log.fsck import fsck, storage_reader

ORIGIN = "log.example/inner-nodes"
SIGNER = Ed25519NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
VERIFIER = SIGNER.verifier()
WAIT = 60  # seconds; a safety net against hangs, never a performance assertion


def data(i: int) -> bytes:
    return b"inner-node entry %d" % i


def expected_inner(leaves: list[bytes]) -> bytes:
    """Sublevels 1..7 of a full tile of these leaf hashes, derived the slow way."""
    parts = []
    nodes = leaves
    for _ in range(7):
        nodes = [node_hash(nodes[i], nodes[i + 1]) for i in range(0, len(nodes), 2)]
        parts.append(b"".join(nodes))
    return b"".join(parts)


def reference_node(hashes: list[bytes]) -> Callable[[int, int], bytes]:
    """``node(level, index)`` computed from the leaf hashes, independent of the engine."""

    def node(level: int, index: int) -> bytes:
        start = index << level
        nodes = hashes[start : start + (1 << level)]
        assert len(nodes) == 1 << level, "asked for an incomplete node"
        while len(nodes) > 1:
            nodes = [node_hash(nodes[i], nodes[i + 1]) for i in range(0, len(nodes), 2)]
        return nodes[0]

    return node


def _open(storage: LogStorage, **kwargs: object) -> TransparencyLog:
    log = TransparencyLog(storage, SIGNER, ORIGIN, VERIFIER, **kwargs)  # type: ignore[arg-type]
    log.open()
    return log


def _append(log: TransparencyLog, start: int, count: int) -> None:
    for f in [log.submit(Entry(data(i))) for i in range(start, start + count)]:
        f.result(WAIT)


def _grow(storage: LogStorage, count: int, policy: BatchPolicy | None = None) -> None:
    """Create a log in ``storage`` holding entries ``0..count-1``."""
    TransparencyLog.create(storage, SIGNER, ORIGIN)
    log = _open(storage, policy=policy)
    try:
        _append(log, 0, count)
    finally:
        log.close()


def _rewrite(storage: LogStorage, key: str, value: bytes | None) -> None:
    if isinstance(storage, MemoryStorage):
        storage.set_object(key, value)
    elif isinstance(storage, FilesystemStorage):
        if key.startswith("inner/"):  # kept in a tile pack: damage the record
            rewrite_packed_inner(storage, key, value)
        elif value is None:
            (storage.root / key).unlink()
        else:
            (storage.root / key).write_bytes(value)
    else:  # PostgreSQL: an unfenced write (this object holds no lease once the log closed)
        assert value is not None
        storage.put_many({key: value})


def _fsck(storage: LogStorage):  # type: ignore[no-untyped-def]
    return fsck(storage_reader(storage), [VERIFIER], origin=ORIGIN, storage=storage)


def test_every_full_tile_gets_its_inner_nodes_across_batches_and_reopens(
    reopen: Callable[[], LogStorage],
) -> None:
    """Batches of odd sizes (one leaf, many tiles at once) and reopens in the middle of
    a tile: the stored inner nodes are always those of the tile, and only full tiles
    have them."""
    storage = reopen()
    TransparencyLog.create(storage, SIGNER, ORIGIN)
    written = 0
    for policy, count in [
        (BatchPolicy(max_size=1, max_age=0), 3),  # single-leaf batches
        (BatchPolicy(max_size=100, max_age=0), 300),  # completes tile 0 mid-batch
        (BatchPolicy(max_size=1000, max_age=0), 700),  # several tiles in one batch
        (BatchPolicy(max_size=7, max_age=0), 60),  # reopened in the middle of tile 3
    ]:
        log = _open(reopen(), policy=policy)
        try:
            _append(log, written, count)
        finally:
            log.close()
        written += count
    assert written == 1063  # tiles 0..3 full, tile 4 partial (width 39)

    hashes = [leaf_hash(data(i)) for i in range(written)]
    storage = reopen()
    for index in range(4):
        leaves = hashes[index * 256 : (index + 1) * 256]
        assert storage.get(f"tile/0/{index:03d}") == b"".join(leaves)
        stored = storage.get(inner_nodes_path(0, index))
        assert stored is not None and len(stored) == INNER_NODES_BYTES
        assert stored == expected_inner(leaves)
    assert storage.get(inner_nodes_path(0, 4)) is None  # partial: derived on demand
    assert storage.get(inner_nodes_path(1, 0)) is None  # level 1 is far from full

    report = _fsck(storage)
    assert report.ok, report.problems
    assert report.inner_checked == 4


def test_proofs_match_the_reference_for_every_leaf_and_older_size() -> None:
    """The engine's tile-at-a-time proofs against the reference algorithm, for every
    leaf of several tree sizes, with the cache on and off (off: every node is read
    through the generic reader)."""
    storage = MemoryStorage()
    count = 2 * 256 + 77
    _grow(storage, count, BatchPolicy(max_size=50, max_age=0))
    hashes = [leaf_hash(data(i)) for i in range(count)]
    ref = reference_node(hashes)
    for cache in ({}, {"cache_tiles": 0, "cache_upper_tiles": 0}, {"cache_tiles": 1}):
        log = _open(storage, **cache)
        try:
            for size in (1, 2, 3, 255, 256, 257, 511, 512, 513, count):
                for index in range(size):
                    assert log.inclusion_proof(index, size) == inclusion_proof(index, size, ref), (
                        cache,
                        index,
                        size,
                    )
        finally:
            log.close()


def test_level_one_tiles_get_inner_nodes_too() -> None:
    storage = MemoryStorage()
    TransparencyLog.create(storage, SIGNER, ORIGIN)
    count = 65_536 + 300
    log = _open(storage, policy=BatchPolicy(max_size=4096, max_age=0))
    try:
        _append(log, 0, count)
        hashes = [leaf_hash(data(i)) for i in range(count)]
        tile_roots = [root_from_leaves_hashes(hashes[i * 256 : (i + 1) * 256]) for i in range(256)]
        assert storage.get("tile/1/000") == b"".join(tile_roots)
        assert storage.get(inner_nodes_path(1, 0)) == expected_inner(tile_roots)
        rng = random.Random(5)
        for index in [0, 65_535, 65_536, count - 1] + [rng.randrange(count) for _ in range(50)]:
            proof = log.inclusion_proof(index, count)
            assert proof == inclusion_proof(index, count, reference_node(hashes))
    finally:
        log.close()


def root_from_leaves_hashes(hashes: list[bytes]) -> bytes:
    nodes = hashes
    while len(nodes) > 1:
        nodes = [node_hash(nodes[i], nodes[i + 1]) for i in range(0, len(nodes), 2)]
    return nodes[0]


def test_a_cold_proof_reads_the_inner_nodes_instead_of_hashing_the_tile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the objects are for: loading a full tile that is not cached costs one hash
    (its root, checked against the parent tile), not 255."""
    storage = CountingStorage()
    count = 3 * 256 + 10
    _grow(storage, count, BatchPolicy(max_size=count, max_age=0))
    ref = reference_node([leaf_hash(data(i)) for i in range(count)])
    calls = Counter[str]()

    def counting(left: bytes, right: bytes) -> bytes:
        calls["node_hash"] += 1
        return node_hash(left, right)

    monkeypatch.setattr("sigstack.log.engine.node_hash", counting)
    for tile, leaf in ((1, 300), (2, 600)):
        if tile == 2:  # as in a log written before inner nodes were stored
            storage.set_object(inner_nodes_path(0, 2), None)
        log = _open(storage)
        try:
            log.inclusion_proof(5, count)  # caches tile 0, the upper tile, the right edge
            storage.reads.clear()
            calls.clear()
            proof = log.inclusion_proof(leaf, count)
        finally:
            log.close()
        assert proof == inclusion_proof(leaf, count, ref)
        assert storage.reads[f"tile/0/{tile:03d}"] == 1
        if tile == 1:
            assert storage.reads[inner_nodes_path(0, 1)] == 1
            assert calls["node_hash"] == 1
        else:
            assert storage.reads[inner_nodes_path(0, 2)] == 1  # looked for, not found
            assert calls["node_hash"] == 255


@pytest.mark.parametrize("damage", ["garbage", "truncated", "another tile's"])
def test_damaged_inner_nodes_are_not_trusted(
    reopen: Callable[[], LogStorage], damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Inner nodes whose root is not the one the parent tile records, or of the wrong
    size, are ignored with a warning: proofs stay right. fsck names the object."""
    storage = reopen()
    count = 3 * 256 + 5
    _grow(storage, count, BatchPolicy(max_size=count, max_age=0))
    good = storage.get(inner_nodes_path(0, 1))
    assert good is not None
    other = storage.get(inner_nodes_path(0, 2))
    assert other is not None
    bad = {"garbage": bytes(INNER_NODES_BYTES), "truncated": good[:-32], "another tile's": other}
    _rewrite(storage, inner_nodes_path(0, 1), bad[damage])

    hashes = [leaf_hash(data(i)) for i in range(count)]
    ref = reference_node(hashes)
    with caplog.at_level(logging.WARNING, logger="sigstack.log.engine"):
        log = _open(reopen())
        try:
            for index in (256, 300, 511):
                assert log.inclusion_proof(index, count) == inclusion_proof(index, count, ref)
        finally:
            log.close()
    assert "ignoring the stored inner nodes" in caplog.text
    assert "inner/0/001" in caplog.text

    report = _fsck(reopen())
    assert not report.ok
    assert [p for p in report.problems if "inner/0/001" in p and "inner nodes differ" in p]


def test_inner_nodes_are_not_served() -> None:
    storage = MemoryStorage()
    TransparencyLog.create(storage, SIGNER, ORIGIN)
    log = _open(storage)
    try:
        _append(log, 0, 256)
        assert storage.get(inner_nodes_path(0, 0)) is not None
        with pytest.raises(InvalidRequest):
            log.read(inner_nodes_path(0, 0))
    finally:
        log.close()


def test_a_log_without_inner_nodes_is_fsck_clean_and_proves() -> None:
    """Logs written before inner nodes were stored: nothing to check, nothing wrong."""
    storage = MemoryStorage()
    TransparencyLog.create(storage, SIGNER, ORIGIN)
    count = 600
    log = _open(storage)
    try:
        _append(log, 0, count)
    finally:
        log.close()
    for index in range(2):
        storage.set_object(inner_nodes_path(0, index), None)
    report = _fsck(storage)
    assert report.ok and report.inner_checked == 0
    hashes = [leaf_hash(data(i)) for i in range(count)]
    log = _open(storage)
    try:
        assert log.inclusion_proof(10, count) == inclusion_proof(10, count, reference_node(hashes))
        _append(log, count, 200)  # completes tile 2, which gets its inner nodes
    finally:
        log.close()
    assert _fsck(storage).inner_checked == 1
