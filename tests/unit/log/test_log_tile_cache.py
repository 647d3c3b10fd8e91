"""Proof generation keeps the tiles above level 0 apart from the level-0 LRU, so
lookups spread over a large log (every one a level-0 miss) do not re-read them."""

from __future__ import annotations

import random

from cryptography.hazmat.primitives.asymmetric import ed25519
from log_kit import CountingStorage

from sigstack.core.merkle import leaf_hash, verify_inclusion
from sigstack.core.note import Ed25519NoteSigner
from sigstack.log import BatchPolicy, Entry, TransparencyLog

ORIGIN = "log.example/tile-cache"
SIGNER = Ed25519NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
SIZE = 4 * 256 + 17  # four full level-0 tiles and a partial one; a level-1 tile of width 4


def _log(storage: CountingStorage, **cache: int) -> TransparencyLog:
    TransparencyLog.create(storage, SIGNER, ORIGIN)
    log = TransparencyLog(
        storage,
        SIGNER,
        ORIGIN,
        verifier=SIGNER.verifier(),
        policy=BatchPolicy(max_size=SIZE),
        **cache,
    )
    log.open()
    futures = [log.submit(Entry(b"entry %d" % i)) for i in range(SIZE)]
    for f in futures:
        f.result(60)
    return log


def _prove_everywhere(log: TransparencyLog, storage: CountingStorage) -> None:
    size = log.checkpoint().size
    root = log.checkpoint().root_hash
    storage.reads.clear()
    rng = random.Random(7)
    for _ in range(200):
        i = rng.randrange(size)
        verify_inclusion(leaf_hash(b"entry %d" % i), i, size, log.inclusion_proof(i, size), root)


def test_upper_tiles_survive_level_0_misses() -> None:
    storage = CountingStorage()
    log = _log(storage, cache_tiles=1)  # every jump to another level-0 tile misses
    try:
        _prove_everywhere(log, storage)
    finally:
        log.close()
    level0 = sum(n for path, n in storage.reads.items() if path.startswith("tile/0/"))
    assert level0 > 20  # the level-0 LRU of one tile really thrashed
    assert storage.reads["tile/1/000.p/4"] <= 1  # read at most once, then kept


def test_without_an_upper_cache_the_upper_tiles_are_read_again() -> None:
    """The counterpart: the count above is what the separate cache buys."""
    storage = CountingStorage()
    log = _log(storage, cache_tiles=1, cache_upper_tiles=0)
    try:
        _prove_everywhere(log, storage)
    finally:
        log.close()
    assert storage.reads["tile/1/000.p/4"] > 20
