"""The transparency-log engine (sigstack.log.engine) on memory, filesystem and PostgreSQL
storage (PostgreSQL cases are skipped without a server: see tests/conftest.py)."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from sigstack.core.errors import (
    ConfigError,
    Conflict,
    InvalidRequest,
    LogIntegrityError,
    Overloaded,
    PayloadTooLarge,
    StorageError,
    Unavailable,
)
from sigstack.core.merkle import (
    EMPTY_ROOT,
    leaf_hash,
    node_hash,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)
from sigstack.core.note import (
    EM_DASH,
    EcdsaNoteSigner,
    Ed25519NoteSigner,
    open_note,
    parse_checkpoint,
    parse_note,
)
from sigstack.log import (
    BatchPolicy,
    Checkpoint,
    Entry,
    Fault,
    FaultPlan,
    FilesystemStorage,
    Integrated,
    LogStorage,
    MemoryStorage,
    TransparencyLog,
)

ORIGIN = "log.example/test"
SIGNER = Ed25519NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
VERIFIER = SIGNER.verifier()
WAIT = 60  # seconds; a safety net against hangs, never a performance assertion


def data(i: int) -> bytes:
    return b"entry-%d" % i


def mth(hashes: list[bytes]) -> bytes:
    """Naive RFC 6962 MTH over leaf hashes, written independently of the engine."""
    if not hashes:
        return EMPTY_ROOT
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return node_hash(mth(hashes[:k]), mth(hashes[k:]))


def split_hashes(tile: bytes | None) -> list[bytes]:
    assert tile is not None and len(tile) % 32 == 0
    return [tile[i : i + 32] for i in range(0, len(tile), 32)]


def split_bundle(bundle: bytes | None) -> list[bytes]:
    assert bundle is not None
    out, pos = [], 0
    while pos < len(bundle):
        n = int.from_bytes(bundle[pos : pos + 2], "big")
        out.append(bundle[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out


def level0_hashes(read: Callable[[str], bytes | None], size: int) -> list[bytes]:
    """Leaf hashes of a tree of ``size`` (< 256,000) from its served level-0 tiles."""
    hashes: list[bytes] = []
    for n in range(size // 256):
        hashes += split_hashes(read(f"tile/0/{n:03d}"))
    if size % 256:
        hashes += split_hashes(read(f"tile/0/{size // 256:03d}.p/{size % 256}"))
    return hashes


def collect(futures: list[Future[Integrated]]) -> list[Integrated]:
    return [f.result(timeout=WAIT) for f in futures]


def check_integrated(results: list[Integrated], datas: list[bytes]) -> None:
    for r, d in zip(results, datas, strict=True):
        cp = r.checkpoint
        verify_inclusion(leaf_hash(d), r.index, cp.size, r.proof, cp.root_hash)
        text, _ = open_note(cp.note, [VERIFIER])
        body = parse_checkpoint(text)
        assert (body.origin, body.size, body.root_hash) == (cp.origin, cp.size, cp.root_hash)


@pytest.fixture
def storage(reopen: Callable[[], LogStorage]) -> LogStorage:
    st = reopen()
    TransparencyLog.create(st, SIGNER, ORIGIN)
    return st


@pytest.fixture
def log(storage: LogStorage) -> Iterator[TransparencyLog]:
    tl = TransparencyLog(storage, SIGNER, ORIGIN, VERIFIER)
    tl.open()
    yield tl
    tl.close()


def memory_log(policy: BatchPolicy | None = None) -> tuple[MemoryStorage, TransparencyLog]:
    st = MemoryStorage()
    TransparencyLog.create(st, SIGNER, ORIGIN)
    tl = TransparencyLog(st, SIGNER, ORIGIN, VERIFIER, policy)
    tl.open()
    return st, tl


class Gate:
    """A fault hook that holds the sequencer inside its first ``put`` until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, operation: str, key: str) -> Fault | None:
        if operation == "put":
            self.entered.set()
            assert self.release.wait(WAIT)
        return None


# --- creation -----------------------------------------------------------------------------


def test_create_writes_a_signed_empty_checkpoint(storage: LogStorage) -> None:
    note = storage.read_checkpoint()
    assert note is not None
    text, _ = open_note(note, [VERIFIER])
    body = parse_checkpoint(text)
    assert (body.origin, body.size, body.root_hash) == (ORIGIN, 0, EMPTY_ROOT)


def test_create_over_an_existing_log_is_a_conflict(storage: LogStorage) -> None:
    before = storage.read_checkpoint()
    other = Ed25519NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(Conflict, match="already exists") as info:
        TransparencyLog.create(storage, other, ORIGIN)
    assert "kept" in str(info.value)
    assert storage.read_checkpoint() == before


def test_open_without_a_log_fails(reopen: Callable[[], LogStorage]) -> None:
    tl = TransparencyLog(reopen(), SIGNER, ORIGIN, VERIFIER)
    with pytest.raises(LogIntegrityError, match="never created"):
        tl.open()
    with pytest.raises(Unavailable):
        tl.checkpoint()


def test_empty_log_serves_its_checkpoint(log: TransparencyLog) -> None:
    cp = log.checkpoint()
    assert (cp.size, cp.root_hash) == (0, EMPTY_ROOT)
    assert log.read("checkpoint") == cp.note
    assert log.read("tile/0/000.p/1") is None
    assert log.consistency_proof(0, 0) == []


# --- appending ----------------------------------------------------------------------------


def test_many_batches_across_tile_boundaries(log: TransparencyLog) -> None:
    waves = [1, 254, 1, 256, 300, 700]  # crosses the 256 and 512 boundaries and level 1
    results: list[Integrated] = []
    datas: list[bytes] = []
    for wave in waves:
        batch = [data(len(datas) + i) for i in range(wave)]
        got = collect([log.submit(Entry(d)) for d in batch])
        check_integrated(got, batch)
        results += got
        datas += batch
    assert [r.index for r in results] == list(range(len(datas)))
    final = log.checkpoint()
    assert final.size == len(datas) == 1512
    assert final.root_hash == root_from_leaves(datas)

    # Every checkpoint handed out is consistent with every later one.
    checkpoints = sorted(
        {r.checkpoint.size: r.checkpoint for r in results}.values(), key=lambda c: c.size
    )
    assert len(checkpoints) >= len(waves)
    for old, new in zip(checkpoints, [*checkpoints[1:], final], strict=True):
        proof = log.consistency_proof(old.size, new.size)
        verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
    for old in checkpoints[::3]:
        verify_consistency(
            old.size,
            final.size,
            old.root_hash,
            final.root_hash,
            log.consistency_proof(old.size, final.size),
        )

    # Proofs served later for an old tree size equal the ones handed out then.
    for r in results[::37]:
        assert log.inclusion_proof(r.index, r.checkpoint.size) == r.proof
        proof = log.inclusion_proof(r.index, final.size)
        verify_inclusion(leaf_hash(datas[r.index]), r.index, final.size, proof, final.root_hash)


def test_root_reconstructed_from_served_tiles(log: TransparencyLog) -> None:
    datas = [data(i) for i in range(1100)]
    collect([log.submit(Entry(d)) for d in datas])
    cp = log.checkpoint()
    hashes = level0_hashes(log.read, cp.size)
    assert hashes == [leaf_hash(d) for d in datas]
    assert mth(hashes) == cp.root_hash
    # Level-1 tile: each hash is the MTH of one full level-0 tile.
    level1 = split_hashes(log.read(f"tile/1/000.p/{cp.size // 256}"))
    assert level1 == [mth(hashes[i * 256 : (i + 1) * 256]) for i in range(cp.size // 256)]
    # Entry bundles hold the entries, in order.
    entries: list[bytes] = []
    for n in range(cp.size // 256):
        entries += split_bundle(log.read(f"tile/entries/{n:03d}"))
    entries += split_bundle(log.read(f"tile/entries/{cp.size // 256:03d}.p/{cp.size % 256}"))
    assert entries == datas


def test_read_only_serves_what_the_checkpoint_covers(log: TransparencyLog) -> None:
    collect([log.submit(Entry(data(i))) for i in range(300)])
    assert log.read("checkpoint") == log.checkpoint().note
    assert log.read("tile/0/000") is not None
    assert log.read("tile/0/001.p/44") is not None
    assert log.read("tile/entries/001.p/44") is not None
    assert log.read("tile/0/001") is None  # not full yet
    assert log.read("tile/0/001.p/45") is None  # beyond the tree
    assert log.read("tile/1/000") is None
    for bad in ("tile/0/1", "tile/0/000.p/0", "../checkpoint", "tile/entries/000.p/256"):
        with pytest.raises(InvalidRequest):
            log.read(bad)


def test_checkpoint_is_only_swapped_over_durable_tiles() -> None:
    """Rule 4: at every swap, the stored tiles already add up to the new root."""

    class CheckingStorage(MemoryStorage):
        swaps = 0

        def swap_checkpoint(self, old: bytes | None, new: bytes) -> None:
            text, _ = parse_note(new)
            body = parse_checkpoint(text)
            assert mth(level0_hashes(self.get, body.size)) == body.root_hash
            self.swaps += 1
            super().swap_checkpoint(old, new)

    st = CheckingStorage()
    TransparencyLog.create(st, SIGNER, ORIGIN)
    tl = TransparencyLog(st, SIGNER, ORIGIN, VERIFIER, BatchPolicy(max_size=50))
    tl.open()
    try:
        collect([tl.submit(Entry(data(i))) for i in range(600)])
    finally:
        tl.close()
    assert st.swaps >= 12


def test_batches_respect_max_size() -> None:
    _, tl = memory_log(BatchPolicy(max_size=10, max_age=0.05))
    try:
        results = collect([tl.submit(Entry(data(i))) for i in range(95)])
    finally:
        tl.close()
    per_checkpoint: dict[int, int] = {}
    for r in results:
        per_checkpoint[r.checkpoint.size] = per_checkpoint.get(r.checkpoint.size, 0) + 1
    assert max(per_checkpoint.values()) <= 10
    assert sorted(per_checkpoint) == sorted(set(per_checkpoint))
    check_integrated(results, [data(i) for i in range(95)])


def test_bundle_can_differ_from_leaf(log: TransparencyLog) -> None:
    r = log.submit(Entry(b"merkle leaf", bundle=b"bundle record")).result(timeout=WAIT)
    verify_inclusion(leaf_hash(b"merkle leaf"), 0, 1, r.proof, r.checkpoint.root_hash)
    assert split_bundle(log.read("tile/entries/000.p/1")) == [b"bundle record"]


def test_oversized_entry_is_refused(log: TransparencyLog) -> None:
    with pytest.raises(PayloadTooLarge):
        log.submit(Entry(b"x" * 65536))
    with pytest.raises(InvalidRequest):
        log.submit(Entry(b"small", bundle=b"x" * 65536))
    with pytest.raises(InvalidRequest):
        log.submit(Entry("text"))  # type: ignore[arg-type]
    log.submit(Entry(b"x" * 65535)).result(timeout=WAIT)


def test_add_for_asyncio_callers(log: TransparencyLog) -> None:
    async def main() -> list[Integrated]:
        return await asyncio.gather(*(log.add(Entry(data(i))) for i in range(20)))

    results = asyncio.run(main())
    assert sorted(r.index for r in results) == list(range(20))
    check_integrated(sorted(results, key=lambda r: r.index), [data(i) for i in range(20)])


def test_ecdsa_signed_log() -> None:
    signer = EcdsaNoteSigner("ct.example", ec.generate_private_key(ec.SECP256R1()))
    st = MemoryStorage()
    TransparencyLog.create(st, signer, "ct.example/2025")
    tl = TransparencyLog(st, signer, "ct.example/2025", signer.verifier())
    tl.open()
    try:
        r = tl.submit(Entry(b"precert")).result(timeout=WAIT)
    finally:
        tl.close()
    open_note(r.checkpoint.note, [signer.verifier()])


# --- proofs API -----------------------------------------------------------------------------


def test_proof_arguments_are_validated(log: TransparencyLog) -> None:
    collect([log.submit(Entry(data(i))) for i in range(10)])
    for index, size in ((10, 10), (0, 11), (0, 0), (-1, 5)):
        with pytest.raises(InvalidRequest):
            log.inclusion_proof(index, size)
    for old, new in ((5, 4), (0, 11), (-1, 3)):
        with pytest.raises(InvalidRequest):
            log.consistency_proof(old, new)
    assert log.consistency_proof(0, 10) == [] and log.consistency_proof(10, 10) == []


# --- reopening ------------------------------------------------------------------------------


def test_reopen_keeps_checkpoint_and_proofs(reopen: Callable[[], LogStorage]) -> None:
    TransparencyLog.create(reopen(), SIGNER, ORIGIN)
    first = TransparencyLog(reopen(), SIGNER, ORIGIN, VERIFIER)
    first.open()
    datas = [data(i) for i in range(600)]
    results = collect([first.submit(Entry(d)) for d in datas])
    before = first.checkpoint()
    first.close()

    second = TransparencyLog(reopen(), SIGNER, ORIGIN, VERIFIER)
    second.open()
    try:
        assert second.checkpoint() == before
        for r in results[::29]:
            assert second.inclusion_proof(r.index, r.checkpoint.size) == r.proof
        more = [data(600 + i) for i in range(300)]
        later = collect([second.submit(Entry(d)) for d in more])
        assert [r.index for r in later] == list(range(600, 900))
        check_integrated(later, more)
        after = second.checkpoint()
        verify_consistency(
            before.size,
            after.size,
            before.root_hash,
            after.root_hash,
            second.consistency_proof(before.size, after.size),
        )
        assert after.root_hash == root_from_leaves(datas + more)
    finally:
        second.close()


def test_second_writer_is_refused(reopen: Callable[[], LogStorage]) -> None:
    TransparencyLog.create(reopen(), SIGNER, ORIGIN)
    first = TransparencyLog(reopen(), SIGNER, ORIGIN, VERIFIER)
    first.open()
    try:
        with pytest.raises(Conflict):
            TransparencyLog(reopen(), SIGNER, ORIGIN, VERIFIER).open()
    finally:
        first.close()
    again = TransparencyLog(reopen(), SIGNER, ORIGIN, VERIFIER)
    again.open()
    again.close()


# --- failing closed at open ---------------------------------------------------------------


def _grown(storage: LogStorage, n: int) -> Checkpoint:
    tl = TransparencyLog(storage, SIGNER, ORIGIN, VERIFIER)
    tl.open()
    try:
        collect([tl.submit(Entry(data(i))) for i in range(n)])
        return tl.checkpoint()
    finally:
        tl.close()


def _open(storage: LogStorage, **kwargs: object) -> None:
    args: dict[str, Any] = {"signer": SIGNER, "origin": ORIGIN, "verifier": VERIFIER, **kwargs}
    TransparencyLog(storage, **args).open()


def _rewrite(storage: LogStorage, key: str, data_: bytes) -> None:
    if isinstance(storage, MemoryStorage):
        storage.set_object(key, data_)
    elif isinstance(storage, FilesystemStorage):
        (storage.root / key).write_bytes(data_)
    else:  # PostgreSQL: an unfenced write (this object holds no lease once the log closed)
        storage.put_many({key: data_})


def _delete(storage: LogStorage, key: str) -> None:
    if isinstance(storage, MemoryStorage):
        storage.set_object(key, None)
    elif isinstance(storage, FilesystemStorage):
        (storage.root / key).unlink()
    else:
        import psycopg

        from sigstack.log.postgres import PostgresStorage

        assert isinstance(storage, PostgresStorage)
        with psycopg.connect(storage._dsn, autocommit=True) as conn:
            conn.execute(
                "DELETE FROM sigstack_objects WHERE log = %s AND key = %s",
                (storage.log_name, key),
            )


def test_tampered_checkpoint_signature_is_refused(storage: LogStorage) -> None:
    _grown(storage, 10)
    note = storage.read_checkpoint()
    assert note is not None
    text, sigs = parse_note(note)
    sig = sigs[0]
    bad = base64.b64encode(sig.key_hash + bytes([sig.signature[0] ^ 1]) + sig.signature[1:])
    forged = f"{text}\n{EM_DASH} {sig.name} {bad.decode()}\n".encode()
    storage.swap_checkpoint(note, forged)
    with pytest.raises(LogIntegrityError, match="signature does not verify"):
        _open(storage)


def test_checkpoint_signed_by_another_key_is_refused(storage: LogStorage) -> None:
    _grown(storage, 10)
    other = Ed25519NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(LogIntegrityError, match="configured key"):
        _open(storage, signer=other, verifier=other.verifier())


def test_checkpoint_of_another_origin_is_refused(storage: LogStorage) -> None:
    _grown(storage, 10)
    with pytest.raises(LogIntegrityError, match="origin"):
        _open(storage, origin="other.example/log")


def test_signer_and_verifier_must_match(storage: LogStorage) -> None:
    other = Ed25519NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(ConfigError):
        _open(storage, verifier=other.verifier())


def test_signer_without_the_verifiers_private_key_is_refused(storage: LogStorage) -> None:
    class Impostor:
        """Claims SIGNER's name and key hash but signs with another key."""

        name = SIGNER.name
        key_hash = SIGNER.key_hash
        _key = ed25519.Ed25519PrivateKey.generate()

        def sign(self, message: bytes) -> bytes:
            return self._key.sign(message)

    with pytest.raises(ConfigError, match="do not match"):
        _open(storage, signer=Impostor())
    assert _grown(storage, 1).size == 1  # the writer lease was released


def test_tampered_partial_tile_is_refused(storage: LogStorage) -> None:
    _grown(storage, 300)
    _rewrite(storage, "tile/0/001.p/44", b"\x01" * 44 * 32)
    with pytest.raises(LogIntegrityError, match="do not add up") as info:
        _open(storage)
    assert "tile/0/001.p/44" in str(info.value)


def test_tampered_last_full_tile_is_refused(storage: LogStorage) -> None:
    _grown(storage, 600)
    _rewrite(storage, "tile/0/001", b"\x02" * 256 * 32)
    with pytest.raises(LogIntegrityError, match="parent") as info:
        _open(storage)
    assert "tile/0/001" in str(info.value)


def test_missing_tile_is_refused(storage: LogStorage) -> None:
    _grown(storage, 300)
    _delete(storage, "tile/0/001.p/44")
    with pytest.raises(LogIntegrityError, match="missing"):
        _open(storage)


def test_truncated_tile_is_refused(storage: LogStorage) -> None:
    _grown(storage, 300)
    _rewrite(storage, "tile/0/001.p/44", b"\x00" * 40)
    with pytest.raises(LogIntegrityError, match="bytes"):
        _open(storage)


def test_truncated_entry_bundle_is_refused(storage: LogStorage) -> None:
    _grown(storage, 300)
    _rewrite(storage, "tile/entries/001.p/44", b"\x00\x05abc")
    with pytest.raises(LogIntegrityError, match="truncated"):
        _open(storage)


# --- concurrency and back-pressure ----------------------------------------------------------


def test_concurrent_submits_get_distinct_indexes(log: TransparencyLog) -> None:
    threads, per_thread = 8, 250
    barrier = threading.Barrier(threads)
    futures: list[list[tuple[bytes, Future[Integrated]]]] = [[] for _ in range(threads)]

    def worker(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            d = b"t%d-%d" % (t, i)
            futures[t].append((d, log.submit(Entry(d))))

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    by_index: dict[int, bytes] = {}
    for submitted in futures:
        for d, f in submitted:
            r = f.result(timeout=WAIT)
            assert r.index not in by_index
            by_index[r.index] = d
            verify_inclusion(
                leaf_hash(d), r.index, r.checkpoint.size, r.proof, r.checkpoint.root_hash
            )
    assert sorted(by_index) == list(range(threads * per_thread))
    assert log.checkpoint().root_hash == root_from_leaves(
        [by_index[i] for i in range(len(by_index))]
    )


def test_overloaded_when_too_many_are_pending() -> None:
    gate = Gate()
    st, tl = memory_log(BatchPolicy(max_size=1, max_age=0, max_pending=3))
    st.fault = gate
    try:
        first = tl.submit(Entry(b"first"))
        assert gate.entered.wait(WAIT)  # the sequencer holds "first" inside put_many
        queued = [tl.submit(Entry(data(i))) for i in range(3)]
        with pytest.raises(Overloaded) as info:
            tl.submit(Entry(b"one too many"))
        assert info.value.retry_after == 1
        gate.release.set()
        assert [f.result(timeout=WAIT).index for f in [first, *queued]] == [0, 1, 2, 3]
    finally:
        gate.release.set()
        tl.close()


def test_cancelled_entry_is_not_logged() -> None:
    gate = Gate()
    st, tl = memory_log(BatchPolicy(max_size=1, max_age=0))
    st.fault = gate
    try:
        first = tl.submit(Entry(b"first"))
        assert gate.entered.wait(WAIT)
        cancelled = tl.submit(Entry(b"cancelled"))
        kept = tl.submit(Entry(b"kept"))
        assert cancelled.cancel()
        gate.release.set()
        assert first.result(timeout=WAIT).index == 0
        assert kept.result(timeout=WAIT).index == 1
    finally:
        gate.release.set()
        tl.close()
    assert tl.checkpoint().root_hash == root_from_leaves([b"first", b"kept"])


def test_close_drains_pending_entries_and_is_idempotent(log: TransparencyLog) -> None:
    futures = [log.submit(Entry(data(i))) for i in range(500)]
    log.close()
    log.close()
    assert [f.result(timeout=0).index for f in futures] == list(range(500))
    with pytest.raises(Unavailable):
        log.submit(Entry(b"late"))


def test_submit_before_open_is_unavailable(storage: LogStorage) -> None:
    tl = TransparencyLog(storage, SIGNER, ORIGIN, VERIFIER)
    with pytest.raises(Unavailable):
        tl.submit(Entry(b"x"))


def test_batch_policy_is_validated() -> None:
    for bad in ({"max_size": 0}, {"max_age": -1}, {"max_pending": 0}):
        with pytest.raises(ConfigError):
            BatchPolicy(**bad)


# --- storage failures -----------------------------------------------------------------------


def _started(n: int = 10) -> tuple[MemoryStorage, TransparencyLog, list[bytes]]:
    st, tl = memory_log(BatchPolicy(max_size=64, max_age=0))
    datas = [data(i) for i in range(n)]
    collect([tl.submit(Entry(d)) for d in datas])
    return st, tl, datas


def _finish(tl: TransparencyLog, logged: list[bytes], before: Checkpoint) -> None:
    after = tl.checkpoint()
    assert after.size == len(logged)
    assert after.root_hash == root_from_leaves(logged)
    proof = tl.consistency_proof(before.size, after.size)
    verify_consistency(before.size, after.size, before.root_hash, after.root_hash, proof)


@pytest.mark.parametrize("operation", ["put", "swap_checkpoint"])
def test_failure_not_persisted_fails_the_batch_and_the_log_recovers(operation: str) -> None:
    st, tl, logged = _started()
    before = tl.checkpoint()
    try:
        st.fault = FaultPlan(Fault.FAIL, operation=operation)
        with pytest.raises(StorageError):
            tl.submit(Entry(b"lost")).result(timeout=WAIT)
        more = [data(100 + i) for i in range(300)]
        results = collect([tl.submit(Entry(d)) for d in more])
        assert [r.index for r in results] == list(range(10, 310))
        check_integrated(results, more)
        _finish(tl, logged + more, before)
    finally:
        tl.close()


def test_put_failure_persisted_fails_the_batch_and_the_log_recovers() -> None:
    st, tl, logged = _started()
    before = tl.checkpoint()
    try:
        st.fault = FaultPlan(Fault.FAIL_PERSISTED, operation="put")
        with pytest.raises(StorageError):
            tl.submit(Entry(b"orphan tiles")).result(timeout=WAIT)
        more = [data(100 + i) for i in range(5)]
        results = collect([tl.submit(Entry(d)) for d in more])
        assert [r.index for r in results] == list(range(10, 15))
        _finish(tl, logged + more, before)
    finally:
        tl.close()


def test_checkpoint_failure_persisted_is_adopted() -> None:
    """The swap failed but landed: the entry is in the log though its submitter saw an error."""
    st, tl, logged = _started()
    before = tl.checkpoint()
    try:
        st.fault = FaultPlan(Fault.FAIL_PERSISTED, operation="swap_checkpoint")
        with pytest.raises(StorageError):
            tl.submit(Entry(b"logged anyway")).result(timeout=WAIT)
        after = tl.submit(Entry(b"next")).result(timeout=WAIT)
        assert after.index == 11
        _finish(tl, [*logged, b"logged anyway", b"next"], before)
    finally:
        tl.close()


def test_recovery_retries_until_storage_comes_back() -> None:
    st, tl, logged = _started()
    before = tl.checkpoint()
    put_fault = FaultPlan(Fault.FAIL, operation="put")
    read_fault = FaultPlan(Fault.FAIL, operation="read_checkpoint", times=2)
    st.fault = lambda op, key: put_fault(op, key) or read_fault(op, key)
    try:
        with pytest.raises(StorageError):
            tl.submit(Entry(b"lost 1")).result(timeout=WAIT)  # put fails, recovery fails
        with pytest.raises(StorageError, match="storage is failing"):
            tl.submit(Entry(b"lost 2")).result(timeout=WAIT)  # recovery fails again
        r = tl.submit(Entry(b"kept")).result(timeout=WAIT)  # recovery succeeds
        assert r.index == 10 and read_fault.fired == 2
        _finish(tl, [*logged, b"kept"], before)
    finally:
        tl.close()


def test_log_stops_if_storage_does_not_add_up_after_a_failure() -> None:
    st, tl, _ = _started()

    def tamper_then_fail(operation: str, key: str) -> Fault | None:
        if operation == "put":
            st.set_object("tile/0/000.p/10", b"\x07" * 10 * 32)
            return Fault.FAIL
        return None

    st.fault = tamper_then_fail
    try:
        with pytest.raises(StorageError):
            tl.submit(Entry(b"x")).result(timeout=WAIT)
        with pytest.raises(Unavailable, match="do not add up"):
            tl.submit(Entry(b"y")).result(timeout=WAIT)
        with pytest.raises(Unavailable, match="stopped"):
            tl.submit(Entry(b"z"))
        with pytest.raises(Unavailable, match="stopped"):
            tl.check_accepting()  # what health checks report
    finally:
        tl.close()


def test_tree_with_level_two_tiles_reopens_and_proves() -> None:
    """Past 65,536 entries the tree has level-2 tiles; state must survive a reopen."""
    st, tl = memory_log(BatchPolicy(max_size=4096, max_age=0))
    count = 66_000
    datas = [data(i) for i in range(count)]
    try:
        results = collect([tl.submit(Entry(d)) for d in datas[:65_536]])
        results += collect([tl.submit(Entry(d)) for d in datas[65_536:]])
    finally:
        tl.close()
    assert st.get("tile/2/000.p/1") is not None
    assert st.get("tile/1/000") is not None
    check_integrated(results[::997], datas[::997])

    again = TransparencyLog(st, SIGNER, ORIGIN, VERIFIER)
    again.open()
    try:
        cp = again.checkpoint()
        assert cp.size == count and cp.root_hash == root_from_leaves(datas)
        for index in (0, 255, 256, 65_535, 65_536, count - 1):
            proof = again.inclusion_proof(index, count)
            verify_inclusion(leaf_hash(datas[index]), index, count, proof, cp.root_hash)
        for old in (1, 256, 4096, 65_536, 65_537):
            verify_consistency(
                old,
                count,
                root_from_leaves(datas[:old]),
                cp.root_hash,
                again.consistency_proof(old, count),
            )
        r = again.submit(Entry(b"after reopen")).result(timeout=WAIT)
        assert r.index == count
    finally:
        again.close()


def test_close_with_storage_down_fails_what_is_pending() -> None:
    st, tl, _ = _started()
    st.fault = FaultPlan(Fault.FAIL, times=None)  # every operation fails from now on
    futures = [tl.submit(Entry(data(100 + i))) for i in range(2000)]
    tl.close()
    for f in futures:
        assert isinstance(f.exception(timeout=WAIT), StorageError)
