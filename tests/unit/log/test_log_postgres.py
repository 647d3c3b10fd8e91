"""PostgreSQL storage and shared logs, against a real server (skipped without one).

What only PostgreSQL has: a writer lease that lives exactly as long as a database
session (and fences every write of a holder that lost it), several processes serving
one log through the shared queue, failover, and the queue's own fault cases. Several
``TransparencyLog`` objects, each with its own ``PostgresStorage`` (its own
connections and session), stand for several processes; tests/e2e runs real ones.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip(
    "psycopg",
    reason="PostgreSQL tests skipped: install the driver (pip install -e '.[test]'); see "
    "tests/conftest.py",
)

import psycopg
from cryptography.hazmat.primitives.asymmetric import ed25519

from sigstack.core.errors import (
    ConfigError,
    Conflict,
    SigstackError,
    StorageError,
    Unavailable,
)
from sigstack.core.merkle import leaf_hash, root_from_leaves, verify_consistency, verify_inclusion
from sigstack.core.note import Ed25519NoteSigner
from sigstack.log.engine import (
    FOLLOWER,
    LEAF_NAMESPACE,
    SEQUENCER,
    STOPPED,
    BatchPolicy,
    Checkpoint,
    ClusterPolicy,
    Entry,
    Integrated,
    TransparencyLog,
)
from sigstack.log.faults import (
    Fault,
    FaultHook,
    FaultInjectingQueue,
    FaultInjectingStorage,
    FaultPlan,
)
from sigstack.log.fsck import fsck, storage_reader
from sigstack.log.postgres import PostgresStorage, _lock_key, redact_dsn
from sigstack.log.storage import LogStorage

ORIGIN = "postgres.example.test"
SIGNER = Ed25519NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
VERIFIER = SIGNER.verifier()
WAIT = 60  # a safety net against hangs, never a performance assertion
FAST = ClusterPolicy(lease_retry=0.05, refresh=0.2, wait_timeout=30)

Make = Callable[..., PostgresStorage]


def eventually(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll ``check`` until true (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def lease_backend(dsn: str, log_name: str) -> int | None:
    """The server pid of the session holding ``log_name``'s writer lease."""
    key = _lock_key(log_name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::bigint::oid "
            "AND objid = %s::bigint::oid AND objsubid = 1 AND granted",
            ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
        ).fetchone()
    return None if row is None else int(row[0])


def kill_lease_session(dsn: str, log_name: str) -> None:
    """End the lease holder's database session from outside (a network cut, a DBA)."""
    pid = lease_backend(dsn, log_name)
    assert pid is not None, "nobody holds the lease"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    eventually(lambda: lease_backend(dsn, log_name) != pid, "the lease session to end")


def check_fsck(storage: LogStorage, size: int) -> None:
    report = fsck(storage_reader(storage), [VERIFIER], origin=ORIGIN, storage=storage)
    assert report.ok, report.problems
    assert report.size == size and report.index_checked


def shared_log(
    storage: PostgresStorage,
    *,
    cluster: ClusterPolicy = FAST,
    fault_storage: FaultInjectingStorage | None = None,
    fault_queue: FaultInjectingQueue | None = None,
    roles: list[str] | None = None,
) -> TransparencyLog:
    if storage.read_checkpoint() is None:
        try:
            TransparencyLog.create(storage, SIGNER, ORIGIN)
        except Conflict:
            pass  # another "process" created it first
    log = TransparencyLog(
        fault_storage or storage,
        SIGNER,
        ORIGIN,
        VERIFIER,
        policy=BatchPolicy(max_age=0.002),
        shared=fault_queue or storage.shared_queue(),
        cluster=cluster,
        on_role=None if roles is None else roles.append,
    )
    log.open()
    return log


@pytest.fixture
def cluster(postgres_storage: Make) -> Iterator[list[TransparencyLog]]:
    """Three "processes" serving one log; the first one opened is the sequencer."""
    logs = [shared_log(postgres_storage()) for _ in range(3)]
    yield logs
    for log in logs:
        log.close(timeout=WAIT)


def results_of(futures: list[Future[Integrated]]) -> list[Integrated]:
    return [f.result(WAIT) for f in futures]


def check_answers(answers: list[tuple[bytes, Integrated]], final: Checkpoint) -> None:
    """Each answer proves its entry into a signed checkpoint consistent with ``final``."""
    for data, r in answers:
        cp = r.checkpoint
        verify_inclusion(leaf_hash(data), r.index, cp.size, r.proof, cp.root_hash)
        assert cp.size <= final.size


# --- the storage itself -------------------------------------------------------------------


def test_dsn_password_never_appears(postgres_dsn: str) -> None:
    dsn = "postgresql://someone:hunter2-secret@127.0.0.1:1/nowhere"
    assert redact_dsn(dsn) == "postgresql://someone@127.0.0.1:1/nowhere"
    storage = PostgresStorage(dsn, "x", connect_timeout=1)
    assert "hunter2" not in storage.describe("tile/0/000")
    with pytest.raises(StorageError) as info:
        storage.get("tile/0/000")
    assert "hunter2" not in str(info.value) and "127.0.0.1:1" in str(info.value)
    with pytest.raises(ConfigError) as bad:
        redact_dsn("postgresql://u:hunter2@[bad")
    assert "hunter2" not in str(bad.value)


@pytest.mark.parametrize("name", ["", "Rekor", "-x", "a/b", "a b", "x" * 65, "é"])
def test_invalid_log_names_are_refused(postgres_dsn: str, name: str) -> None:
    with pytest.raises(ConfigError, match="log name"):
        PostgresStorage(postgres_dsn, name)


def test_logs_in_one_database_are_separate(postgres_storage: Make, postgres_dsn: str) -> None:
    other_name = postgres_storage().log_name + "-other"
    other = PostgresStorage(postgres_dsn, other_name)
    try:
        mine = postgres_storage()
        mine.put_many({"tile/0/000": b"mine"})
        mine.swap_checkpoint(None, b"cp")
        assert other.get("tile/0/000") is None and other.read_checkpoint() is None
        mine.acquire_writer()
        other.acquire_writer()  # a different lease
        other.release_writer()
        mine.release_writer()
    finally:
        other.destroy()
        other.close()


def test_schema_creation_is_idempotent_and_concurrent(postgres_dsn: str) -> None:
    errors: list[BaseException] = []

    def first_use(i: int) -> None:
        storage = PostgresStorage(postgres_dsn, f"schema-{i}")
        try:
            storage.get("tile/0/000")
        except BaseException as exc:
            errors.append(exc)
        finally:
            storage.close()

    threads = [threading.Thread(target=first_use, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_lease_conflict_names_the_holder_and_terms_increase(postgres_storage: Make) -> None:
    first, second = postgres_storage(holder="first frontend"), postgres_storage()
    first.acquire_writer()
    term = first.epoch
    with pytest.raises(Conflict, match="first frontend") as info:
        second.acquire_writer()
    assert f"term {term}" in str(info.value)
    assert second.lease_holder() == ("first frontend", term)
    first.release_writer()
    second.acquire_writer()
    assert second.epoch == term + 1
    with pytest.raises(Conflict):
        second.acquire_writer()  # already held by this object
    second.release_writer()


def test_a_lost_session_loses_the_lease_and_fences_writes(
    postgres_storage: Make, postgres_dsn: str
) -> None:
    holder, other = postgres_storage(), postgres_storage()
    holder.acquire_writer()
    holder.put_many({"tile/0/000": b"before"})
    kill_lease_session(postgres_dsn, holder.log_name)
    with pytest.raises(Conflict, match="lost"):
        holder.check_writer()
    # Every write of the former holder fails: nothing lands after the lease is gone.
    writes: list[Callable[[], None]] = [
        lambda: holder.put_many({"tile/0/000": b"after"}),
        lambda: holder.swap_checkpoint(None, b"cp"),
        lambda: holder.index_add([("leaf", b"\x01" * 32, 0)]),
        lambda: holder.index_truncate(0),
    ]
    for write in writes:
        with pytest.raises(StorageError, match="lease"):
            write()
    assert other.get("tile/0/000") == b"before" and other.read_checkpoint() is None
    other.acquire_writer()  # the lease is free
    other.release_writer()
    holder.release_writer()  # and the loser can take it again later
    holder.acquire_writer()
    holder.check_writer()


def test_the_lease_dies_with_its_process(postgres_storage: Make, postgres_dsn: str) -> None:
    name = postgres_storage().log_name
    code = (
        "import sys, time\n"
        "from sigstack.log.postgres import PostgresStorage\n"
        f"s = PostgresStorage({postgres_dsn!r}, {name!r}, holder='doomed')\n"
        "s.acquire_writer()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        storage = postgres_storage()
        with pytest.raises(Conflict, match="doomed"):
            storage.acquire_writer()
        proc.kill()
        proc.wait()

        def taken() -> bool:
            try:
                storage.acquire_writer()
            except Conflict:
                return False
            return True

        eventually(taken, "the dead process's lease to be released")
        storage.check_writer()
    finally:
        proc.kill()
        proc.wait()


def test_an_unused_lease_expires(postgres_storage: Make, postgres_dsn: str) -> None:
    storage = postgres_storage(lease_timeout=1)
    storage.acquire_writer()
    # Watched from another session: checking through the lease's own would keep it busy.
    eventually(
        lambda: lease_backend(postgres_dsn, storage.log_name) is None,
        "idle_session_timeout to end the idle lease session",
    )
    with pytest.raises(Conflict, match="lost"):
        storage.check_writer()


def test_destroy_refuses_while_a_writer_is_active(postgres_storage: Make) -> None:
    writer, other = postgres_storage(), postgres_storage()
    writer.put_many({"tile/0/000": b"x"})
    writer.acquire_writer()
    with pytest.raises(Conflict):
        other.destroy()
    writer.release_writer()
    other.destroy()
    assert writer.get("tile/0/000") is None


# --- the engine alone on PostgreSQL -------------------------------------------------------


def test_engine_heartbeat_keeps_a_short_lease(postgres_storage: Make) -> None:
    storage = postgres_storage(lease_timeout=1)
    TransparencyLog.create(storage, SIGNER, ORIGIN)
    log = TransparencyLog(storage, SIGNER, ORIGIN, VERIFIER)
    log.open()
    try:
        term = storage.epoch
        log.submit(Entry(b"first")).result(WAIT)
        time.sleep(2.5)  # idle for longer than the lease would survive without heartbeats
        assert log.submit(Entry(b"second")).result(WAIT).index == 1
        assert storage.epoch == term
    finally:
        log.close()


def test_engine_that_loses_its_lease_stops_signing(
    postgres_storage: Make, postgres_dsn: str
) -> None:
    storage = postgres_storage()
    TransparencyLog.create(storage, SIGNER, ORIGIN)
    log = TransparencyLog(storage, SIGNER, ORIGIN, VERIFIER)
    log.open()
    try:
        log.submit(Entry(b"before")).result(WAIT)
        stored = postgres_storage().read_checkpoint()
        kill_lease_session(postgres_dsn, storage.log_name)
        with pytest.raises(SigstackError):
            log.submit(Entry(b"after")).result(WAIT)
        eventually(lambda: log.role == STOPPED, "the log to stop")
        with pytest.raises(Unavailable, match="lease"):
            log.check_accepting()
        assert postgres_storage().read_checkpoint() == stored  # nothing was signed
    finally:
        log.close()
    check_fsck(postgres_storage(), 1)


# --- several processes, one log -------------------------------------------------------------


def test_three_frontends_one_sequencer(cluster: list[TransparencyLog]) -> None:
    assert [log.role for log in cluster] == [SEQUENCER, FOLLOWER, FOLLOWER]
    datas = [b"entry %d" % i for i in range(300)]
    futures = [cluster[i % 3].submit(Entry(d, dedup=True)) for i, d in enumerate(datas)]
    results = results_of(futures)
    assert sorted(r.index for r in results) == list(range(300))
    assert not any(r.duplicate for r in results)
    final = cluster[0].checkpoint()
    check_answers(list(zip(datas, results, strict=True)), final)
    by_index = {r.index: d for d, r in zip(datas, results, strict=True)}
    assert final.root_hash == root_from_leaves([by_index[i] for i in range(300)])
    # A follower's view may trail the sequencer's final checkpoint (its own entries
    # may all be in earlier batches): it proves only up to what it has adopted.
    eventually(lambda: cluster[1].checkpoint().size == final.size, "the follower to catch up")
    for cp in {r.checkpoint.size: r.checkpoint for r in results}.values():
        proof = cluster[1].consistency_proof(cp.size, final.size)
        verify_consistency(cp.size, final.size, cp.root_hash, final.root_hash, proof)
    for log in cluster:  # followers catch up and serve the same log

        def caught_up(log: TransparencyLog = log) -> bool:
            return log.checkpoint().size == 300

        eventually(caught_up, "followers to catch up")
        assert log.checkpoint() == final
        assert log.entry(299) == by_index[299]
        assert log.lookup(LEAF_NAMESPACE, leaf_hash(datas[7])) == [results[7].index]
        assert log.read("checkpoint") == final.note


def test_identical_entries_through_two_frontends_are_logged_once(
    cluster: list[TransparencyLog],
) -> None:
    entry = Entry(b"the same entry", dedup=True)
    results = results_of([cluster[1].submit(entry), cluster[2].submit(entry)])
    assert results[0].index == results[1].index == 0
    assert sorted(r.duplicate for r in results) == [False, True]
    again = cluster[0].submit(entry).result(WAIT)
    assert again.index == 0 and again.duplicate
    eventually(lambda: cluster[2].checkpoint().size == 1, "the follower to see one entry")


def test_a_follower_takes_over_when_the_sequencer_closes(
    cluster: list[TransparencyLog],
) -> None:
    first = results_of([cluster[i % 3].submit(Entry(b"a%d" % i)) for i in range(30)])
    cluster[0].close(timeout=WAIT)
    eventually(lambda: SEQUENCER in (cluster[1].role, cluster[2].role), "a follower to take over")
    assert (cluster[1].role, cluster[2].role).count(SEQUENCER) == 1
    later = results_of([cluster[1 + i % 2].submit(Entry(b"b%d" % i)) for i in range(30)])
    assert sorted(r.index for r in first + later) == list(range(60))


def test_a_sequencer_that_loses_its_session_steps_down(
    postgres_storage: Make, postgres_dsn: str
) -> None:
    roles: list[str] = []
    storages = [postgres_storage() for _ in range(2)]
    first = shared_log(storages[0], roles=roles)
    second = shared_log(storages[1])
    try:
        assert first.role == SEQUENCER and second.role == FOLLOWER
        before = results_of([second.submit(Entry(b"x%d" % i)) for i in range(20)])
        kill_lease_session(postgres_dsn, storages[0].log_name)
        # Entries keep coming through both frontends while the lease moves.
        during = [f.submit(Entry(b"y%d" % i)) for i in range(20) for f in (first, second)]
        after = results_of(during)
        eventually(lambda: second.role == SEQUENCER or first.role == SEQUENCER, "a sequencer")
        assert roles[:2] == [SEQUENCER, FOLLOWER]  # it noticed, and stepped down
        indexes = sorted(r.index for r in before + after)
        assert indexes == list(range(60))
        final = second.checkpoint()
        for r in before + after:
            verify_consistency(
                r.checkpoint.size,
                max(final.size, r.checkpoint.size),
                r.checkpoint.root_hash,
                second.checkpoint().root_hash,
                second.consistency_proof(r.checkpoint.size, second.checkpoint().size),
            )
    finally:
        first.close(timeout=WAIT)
        second.close(timeout=WAIT)
    check_fsck(postgres_storage(), 60)


@pytest.mark.parametrize("held_in", ["put", "swap_checkpoint"])
def test_a_sequencer_that_lost_its_lease_mid_batch_never_publishes(
    held_in: str, postgres_storage: Make, postgres_dsn: str
) -> None:
    """A sequencer held inside its batch (writing data; or signed, before its swap) while
    its lease session dies and another takes over: its late writes are fenced, its
    signed checkpoint is never published, and it steps down."""
    entered, release = threading.Event(), threading.Event()
    armed = threading.Event()

    def gate(operation: str, key: str) -> Fault | None:
        if operation == held_in and armed.is_set():
            armed.clear()
            entered.set()
            assert release.wait(WAIT)
        return None

    storage_a = postgres_storage()
    faulty = FaultInjectingStorage(storage_a, gate)
    roles: list[str] = []
    a = shared_log(storage_a, fault_storage=faulty, roles=roles)
    b = shared_log(postgres_storage())
    try:
        assert a.role == SEQUENCER and b.role == FOLLOWER
        base = results_of([b.submit(Entry(b"base %d" % i, dedup=True)) for i in range(5)])
        stored_before = postgres_storage().read_checkpoint()
        armed.set()
        x = b.submit(Entry(b"entry X", dedup=True))
        assert entered.wait(WAIT)  # A is inside its batch, holding X
        kill_lease_session(postgres_dsn, storage_a.log_name)
        eventually(lambda: b.role == SEQUENCER, "B to take over")
        y = b.submit(Entry(b"entry Y", dedup=True)).result(WAIT)
        x_result = x.result(WAIT)  # sequenced again, by B
        release.set()  # A's swap now runs on its dead lease session: fenced
        eventually(lambda: FOLLOWER in roles, "A to step down")
        final = b.checkpoint()
        assert final.size == 7 and stored_before is not None
        assert {b.entry(i) for i in range(7)} == {
            *(b"base %d" % i for i in range(5)),
            b"entry X",
            b"entry Y",
        }
        for r in [*base, x_result, y]:  # every answer is a prefix of the final tree
            proof = b.consistency_proof(r.checkpoint.size, final.size)
            verify_consistency(
                r.checkpoint.size, final.size, r.checkpoint.root_hash, final.root_hash, proof
            )
        assert postgres_storage().read_checkpoint() == final.note
    finally:
        release.set()
        a.close(timeout=WAIT)
        b.close(timeout=WAIT)
    check_fsck(postgres_storage(), 7)


def test_without_a_sequencer_entries_time_out_and_are_logged_later(
    postgres_storage: Make,
) -> None:
    blocker = postgres_storage()
    TransparencyLog.create(blocker, SIGNER, ORIGIN)
    blocker.acquire_writer()  # holds the lease without sequencing
    log = shared_log(postgres_storage(), cluster=ClusterPolicy(0.05, 0.1, wait_timeout=0.3))
    try:
        assert log.role == FOLLOWER
        with pytest.raises(Unavailable, match="not integrated within"):
            log.submit(Entry(b"patient", dedup=True)).result(WAIT)
        blocker.release_writer()
        eventually(lambda: log.role == SEQUENCER, "the follower to take the free lease")
        eventually(
            lambda: log.lookup(LEAF_NAMESPACE, leaf_hash(b"patient")) == [0],
            "the timed-out entry to be logged anyway",
        )
        again = log.submit(Entry(b"patient", dedup=True)).result(WAIT)
        assert again.index == 0 and again.duplicate  # the client's retry is deduplicated
    finally:
        log.close(timeout=WAIT)


def test_a_follower_refuses_a_forked_log(postgres_storage: Make, postgres_dsn: str) -> None:
    writer = shared_log(postgres_storage())
    reader_storage = postgres_storage()
    reader = shared_log(reader_storage)
    name = reader_storage.log_name
    fork_name = name + "-fork"
    fork_storage = PostgresStorage(postgres_dsn, fork_name)
    try:
        results_of([writer.submit(Entry(b"real %d" % i)) for i in range(5)])
        eventually(lambda: reader.checkpoint().size == 5, "the follower to catch up")
        writer.close(timeout=WAIT)
        # Another tree under the same key and origin, larger, with valid tiles.
        TransparencyLog.create(fork_storage, SIGNER, ORIGIN)
        fork = TransparencyLog(fork_storage, SIGNER, ORIGIN, VERIFIER)
        fork.open()
        results_of([fork.submit(Entry(b"fake %d" % i)) for i in range(9)])
        fork.close()
        with psycopg.connect(postgres_dsn, autocommit=True) as conn, conn.transaction():
            conn.execute("DELETE FROM sigstack_objects WHERE log = %s", (name,))
            conn.execute(
                "INSERT INTO sigstack_objects (log, key, data) SELECT %s, key, data "
                "FROM sigstack_objects WHERE log = %s",
                (name, fork_name),
            )
            conn.execute(
                "UPDATE sigstack_checkpoints SET data = (SELECT data FROM sigstack_checkpoints "
                "WHERE log = %s) WHERE log = %s",
                (fork_name, name),
            )
            conn.execute("SELECT pg_notify('sigstack_checkpoint', %s)", (name,))
        eventually(lambda: reader.role == STOPPED, "the follower to stop on the fork")
        with pytest.raises(Unavailable, match="fork"):
            reader.check_accepting()
        assert reader.checkpoint().size == 5  # it never served the forked tree
    finally:
        writer.close(timeout=WAIT)
        reader.close(timeout=WAIT)
        fork_storage.destroy()
        fork_storage.close()


# --- the fault matrix of a shared log ------------------------------------------------------


@dataclass(frozen=True)
class SharedCase:
    target: str  # "storage" or "queue"
    operation: str
    fault: Fault
    acknowledged: bool = True  # X's submitter gets its index
    logged: bool = True  # X ends up in the log (exactly once)
    trigger: bool = False  # fail a batch first, so that recovery hits the fault


FAIL, PERSISTED = Fault.FAIL, Fault.FAIL_PERSISTED

SHARED_MATRIX = {
    # A failed batch is not the end of its queued entries: they are sequenced again.
    "tile write fails": SharedCase("storage", "put", FAIL),
    "index write fails": SharedCase("storage", "index_add", FAIL),
    "lease check fails": SharedCase("storage", "check_writer", FAIL),
    "checkpoint swap fails": SharedCase("storage", "swap_checkpoint", FAIL),
    "checkpoint swap fails but lands": SharedCase("storage", "swap_checkpoint", PERSISTED),
    "assignment fails": SharedCase("queue", "assign", FAIL),
    "assignment fails but lands": SharedCase("queue", "assign", PERSISTED),
    "claim answer lost": SharedCase("queue", "claim", PERSISTED),
    "claim fails": SharedCase("queue", "claim", FAIL),
    "result read fails": SharedCase("queue", "results", FAIL),
    "recovery cannot reset the queue": SharedCase("queue", "reset", FAIL, trigger=True),
    "releasing claims fails": SharedCase("queue", "release", FAIL, trigger=True),
    # Queueing itself fails: the submitter is told, the entry may or may not be logged.
    "queueing fails": SharedCase("queue", "enqueue", FAIL, acknowledged=False, logged=False),
    "queueing fails but lands": SharedCase("queue", "enqueue", PERSISTED, acknowledged=False),
}


@pytest.mark.parametrize("name", list(SHARED_MATRIX))
def test_shared_fault_matrix(name: str, postgres_storage: Make) -> None:
    case = SHARED_MATRIX[name]
    storage = postgres_storage()
    faulty_storage = FaultInjectingStorage(storage)
    faulty_queue = FaultInjectingQueue(storage.shared_queue())
    log = shared_log(storage, fault_storage=faulty_storage, fault_queue=faulty_queue)
    follower = shared_log(postgres_storage())
    try:
        base = [b"base %d" % i for i in range(5)]
        results_of([log.submit(Entry(d, dedup=True)) for d in base])
        plan = FaultPlan(case.fault, operation=case.operation)
        hook: FaultHook = plan
        if case.trigger:
            trigger = FaultPlan(Fault.FAIL, operation="put")

            def storage_hook(op: str, key: str) -> Fault | None:
                return trigger(op, key)

            faulty_storage.fault = storage_hook
            hook = lambda op, key: plan(op, key) if trigger.fired else None  # noqa: E731
            faulty_queue.fault = hook
        elif case.target == "storage":
            faulty_storage.fault = hook
        else:
            faulty_queue.fault = hook
        x: Any
        try:
            x = log.submit(Entry(b"entry X", dedup=True)).result(WAIT)
        except SigstackError as exc:
            x = exc
        y = follower.submit(Entry(b"entry Y", dedup=True)).result(WAIT)
        faulty_storage.fault = faulty_queue.fault = None
        assert plan.fired >= 1, f"{name}: the fault was never injected"
        assert isinstance(x, Integrated) == case.acknowledged, (name, x)

        expected = [*base, b"entry Y"]
        if case.logged:
            eventually(
                lambda: bool(log.lookup(LEAF_NAMESPACE, leaf_hash(b"entry X"))),
                "entry X to be logged",
            )
            expected.append(b"entry X")
        final_size = len(expected)
        eventually(lambda: log.checkpoint().size >= final_size, "the log to reach its size")
        final = log.checkpoint()
        assert final.size == final_size
        stored = sorted(log.entry(i) for i in range(final.size))
        assert stored == sorted(expected)  # each entry exactly once
        if isinstance(x, Integrated):
            assert log.entry(x.index) == b"entry X"
            verify_inclusion(
                leaf_hash(b"entry X"), x.index, x.checkpoint.size, x.proof, x.checkpoint.root_hash
            )
        assert log.entry(y.index) == b"entry Y"
    finally:
        log.close(timeout=WAIT)
        follower.close(timeout=WAIT)
    check_fsck(storage, final_size)
