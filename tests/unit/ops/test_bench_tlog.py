"""The bench's independent tlog-tiles verifier agrees with the engine and catches lies."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from sigstack.core import merkle
from sigstack.core.errors import VerificationError
from sigstack.core.note import Ed25519NoteSigner, format_checkpoint, sign_note
from sigstack.log.engine import BatchPolicy, Entry, TransparencyLog
from sigstack.log.memory import MemoryStorage
from sigstack.ops.bench import tlog
from sigstack.ops.bench.tlog import LogClient, LogKey, SignedCheckpoint

ORIGIN = "bench-tlog.example.test"
KEY = ed25519.Ed25519PrivateKey.generate()
SIGNER = Ed25519NoteSigner(ORIGIN, KEY)


def _data(n: int) -> list[bytes]:
    return [b"leaf %d" % i for i in range(n)]


def _nodes(data: list[bytes]) -> Callable[[int, int], bytes]:
    def node(level: int, index: int) -> bytes:
        return merkle.root_from_leaves(data[index << level : (index + 1) << level])

    return node


@pytest.mark.parametrize("n", [*range(1, 40), 64, 65, 100, 255, 256, 257])
def test_recursive_proofs_match_rfc9162_verification(n: int) -> None:
    data = _data(n)
    node = _nodes(data)
    root = merkle.root_from_leaves(data)
    assert tlog.subtree_hash(0, n, node) == root
    for m in range(n):
        path = tlog.inclusion_path(m, 0, n, node)
        leaf = tlog.leaf_hash(data[m])
        merkle.verify_inclusion(leaf, m, n, path, root)
        assert tlog.root_from_inclusion(leaf, m, n, path) == root
    for old in range(1, n + 1):
        path = tlog.consistency_path(old, 0, n, node)
        old_root = merkle.root_from_leaves(data[:old])
        merkle.verify_consistency(old, n, old_root, root, path)
        assert tlog.roots_from_consistency(old, n, path, old_root) == (old_root, root)


def test_wrong_proofs_are_refused() -> None:
    data = _data(13)
    leaves = [tlog.leaf_hash(d) for d in data]
    path = tlog.inclusion_path(5, 0, 13, _nodes(data))
    root = merkle.root_from_leaves(data)
    assert tlog.root_from_inclusion(leaves[4], 5, 13, path) != root
    with pytest.raises(VerificationError):
        tlog.root_from_inclusion(leaves[5], 5, 13, path[:-1])
    with pytest.raises(VerificationError):
        tlog.root_from_inclusion(leaves[5], 5, 13, [*path, root])


def test_tile_and_bundle_names_follow_c2sp() -> None:
    assert tlog.tile_name(0, 1234067, 256) == "tile/0/x001/x234/067"
    assert tlog.tile_name(1, 0, 17) == "tile/1/000.p/17"
    assert tlog.bundle_name(1000, 3) == "tile/entries/x001/000.p/3"


class _Served:
    """An engine log grown in random batches, every checkpoint along the way kept."""

    def __init__(self, total: int, seed: int) -> None:
        rng = random.Random(seed)
        self.storage = MemoryStorage()
        TransparencyLog.create(self.storage, SIGNER, ORIGIN)
        self.log = TransparencyLog(
            self.storage,
            SIGNER,
            ORIGIN,
            verifier=SIGNER.verifier(),
            policy=BatchPolicy(max_size=4096, max_age=0.0),
        )
        self.log.open()
        self.entries: list[bytes] = []
        self.checkpoints: list[SignedCheckpoint] = []
        while len(self.entries) < total:
            batch = [b"entry %d" % (len(self.entries) + i) for i in range(rng.randint(1, 700))]
            futures = [self.log.submit(Entry(e)) for e in batch]
            for f in futures:
                f.result(30)
            self.entries += batch
            cp = self.log.checkpoint()
            self.checkpoints.append(tlog.parse_signed_checkpoint(cp.note, self.key))
        self.tamper: Callable[[str, bytes | None], bytes | None] = lambda path, data: data

    @property
    def key(self) -> LogKey:
        return LogKey(KEY.public_key(), SIGNER.key_id)

    async def fetch(self, path: str) -> bytes | None:
        return self.tamper(path, self.log.read(path))

    def close(self) -> None:
        self.log.close()


@pytest.fixture(scope="module")
def served() -> object:
    log = _Served(3000, seed=7)
    yield log
    log.close()


def test_the_verifier_agrees_with_the_engine_at_every_checkpoint(served: _Served) -> None:
    rng = random.Random(1)

    async def run() -> None:
        client = LogClient(served.fetch, key=served.key, cache_tiles=64)
        latest = await client.checkpoint()
        assert latest == served.checkpoints[-1]
        previous = None
        for cp in served.checkpoints:
            for index in rng.sample(range(cp.size), min(cp.size, 10)):
                await client.verify_inclusion(index, served.entries[index], cp)
                path = await client._compute(
                    cp.size, lambda node, i=index, n=cp.size: tlog.inclusion_path(i, 0, n, node)
                )
                assert path == served.log.inclusion_proof(index, cp.size)
            if previous is not None:
                await client.verify_consistency(previous, cp)
                assert await client.root(previous.size, cp.size) == previous.root
            previous = cp
        assert await client.audit(latest) == served.entries

    asyncio.run(run())


def test_a_changed_entry_tile_or_checkpoint_is_caught(served: _Served) -> None:
    cp = served.checkpoints[-1]
    target = 768  # the first entry of bundle 3; leaf 769 is its sibling

    def flip(name: str, at: int) -> Callable[[str, bytes | None], bytes | None]:
        def tamper(path: str, data: bytes | None) -> bytes | None:
            if data is not None and path.startswith(name):
                return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
            return data

        return tamper

    async def check(tamper: Callable[[str, bytes | None], bytes | None]) -> None:
        served.tamper = tamper
        try:
            with pytest.raises(VerificationError):
                await LogClient(served.fetch, key=served.key).verify_inclusion(
                    target, served.entries[target], cp
                )
            with pytest.raises(VerificationError):
                await LogClient(served.fetch, key=served.key).audit(cp)
        finally:
            served.tamper = lambda path, data: data

    asyncio.run(check(flip("tile/entries/003", 3)))  # entry 768 itself
    asyncio.run(check(flip("tile/0/003", 40)))  # leaf hash 769
    asyncio.run(check(flip("tile/1/000", 40)))  # node (8, 1), inside node (9, 0)

    async def forged() -> None:
        client = LogClient(served.fetch, key=served.key)
        other = Ed25519NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
        note = sign_note(format_checkpoint(ORIGIN, cp.size, bytes(32)), [other])
        with pytest.raises(VerificationError):
            tlog.parse_signed_checkpoint(note, served.key)
        fork = SignedCheckpoint(ORIGIN, cp.size, bytes(32), b"")
        with pytest.raises(VerificationError, match="fork"):
            await client.verify_consistency(served.checkpoints[0], fork)
        with pytest.raises(VerificationError, match="fork"):
            await client.verify_consistency(fork, cp)
        with pytest.raises(VerificationError, match="shrank"):
            await client.verify_consistency(cp, served.checkpoints[0])

    asyncio.run(forged())


def test_a_partial_tile_no_longer_served_is_read_from_the_full_one(served: _Served) -> None:
    """C2SP lets a log drop partial tiles once the full tile exists; readers cope."""
    cp = served.checkpoints[-1]
    old = next(c for c in served.checkpoints if c.size % 256 and c.size < cp.size - 256)

    def superseded_partials_gone(path: str, data: bytes | None) -> bytes | None:
        if ".p/" in path and served.log.read(path.partition(".p/")[0]) is not None:
            return None
        return data

    served.tamper = superseded_partials_gone
    try:

        async def run() -> None:
            client = LogClient(served.fetch, key=served.key)
            index = old.size - 1
            await client.verify_inclusion(index, served.entries[index], old)
            await client.verify_consistency(old, cp)
            await client.verify_inclusion(cp.size - 1, served.entries[-1], cp)
            assert client.fetches > len(client._cache)  # some partial fetches were refused

        asyncio.run(run())
    finally:
        served.tamper = lambda path, data: data
