"""Crash test: SIGKILL `sigstack up` at random moments under concurrent load, many times.

Each iteration loads Rekor v2 with concurrent writers (real signed entries) and a
checkpoint poller, SIGKILLs the whole stack at a random moment, checks the log at
rest with fsck, restarts the stack on the same state directory and checks, over
the HTTP read path and with the bench's independent verifier
(:mod:`sigstack.ops.bench.tlog`):

* not one acknowledged entry is lost: every 201 ever received names an index
  whose entry bundle holds exactly the acknowledged ``canonicalizedBody``, and no
  two different entries were acknowledged at one index;
* no fork: the checkpoint after the restart is signed by the log's key (the one in
  the trusted root) and is consistent with every checkpoint seen before, whether
  in a 201 answer or from ``GET /api/v2/checkpoint`` (consistency proofs built from
  the served tiles; consistency is transitive, so each iteration checks what it
  saw against the last checkpoint already proven, which covers all history);
* the served log adds up: every tile and the root re-derived from the entries;
* the entry index survived: acknowledged entries resubmitted (the newest, which the
  index had likely not flushed before the kill, and a random few) are answered with
  the index they already have;
* the log goes on: new writes get indexes after everything acknowledged.

``SIGSTACK_CRASH_ITERATIONS`` (default 8) sets the number of crashes and
``SIGSTACK_CRASH_SEED`` replays a run (the seed is printed, and named in every
failure message).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sigstack.core.errors import Overloaded, SigstackError
from sigstack.ops.bench.entries import EntryPool
from sigstack.ops.bench.rekor import Ack, RekorClient
from sigstack.ops.bench.tlog import (
    LogClient,
    LogKey,
    SignedCheckpoint,
    check_inclusion_proof,
    parse_signed_checkpoint,
)

from .conftest import StackProcess

pytestmark = pytest.mark.e2e

ITERATIONS = int(os.environ.get("SIGSTACK_CRASH_ITERATIONS", "8"))
SEED = int(os.environ.get("SIGSTACK_CRASH_SEED", str(random.SystemRandom().randrange(2**32))))
WRITERS = 32
KILL_AFTER = (0.0, 2.0)
"""The kill lands uniformly at random this many seconds into the load."""
POOL_HEADROOM = 6_000
"""Signed entries kept ready before each iteration (more than one iteration uses)."""
NEW_WRITES = 3
INCLUSION_SAMPLES = 20
DEDUP_SAMPLES = 5


@dataclass
class Ledger:
    """Everything the clients were told, across all crashes."""

    seed: int
    acked: dict[int, bytes] = field(default_factory=dict)
    seen: set[bytes] = field(default_factory=set)
    """Checkpoint notes seen since ``proven`` was established."""
    proven: SignedCheckpoint | None = None
    """The latest checkpoint proven consistent with everything seen before it."""
    answers: list[Ack] = field(default_factory=list)
    """Answers received since the last check (their proofs are checked then)."""
    requests: dict[int, bytes] = field(default_factory=dict)
    """The request body each acknowledged index was answered for (resubmitted to test
    deduplication, i.e. the entry index, after a crash)."""
    errors_before_kill: list[str] = field(default_factory=list)

    def record(self, ack: Ack) -> None:
        known = self.acked.setdefault(ack.index, ack.body)
        assert known == ack.body, (
            f"seed {self.seed}: two different entries were acknowledged at index {ack.index}"
        )
        self.seen.add(ack.checkpoint)
        self.answers.append(ack)


async def _load_until_killed(
    stack: StackProcess, pool: EntryPool, ledger: Ledger, kill_after: float
) -> int:
    """Writers and a checkpoint poller until the stack is SIGKILLed; return the acks."""
    url = stack.url("rekor")
    killed = asyncio.Event()
    acks = 0

    async def writer() -> None:
        nonlocal acks
        client = RekorClient(url, timeout=10.0)
        try:
            while not killed.is_set() and (body := pool.next()) is not None:
                try:
                    ack = await client.submit(body)
                except Overloaded as exc:
                    await asyncio.sleep(min(exc.retry_after, 0.2))
                    continue
                except SigstackError as exc:
                    if not killed.is_set():
                        ledger.errors_before_kill.append(str(exc))
                    return
                ledger.record(ack)  # a 201 is an acknowledgement, even one read after the kill
                ledger.requests[ack.index] = body
                acks += 1
        finally:
            await client.close()

    async def poller() -> None:
        client = RekorClient(url, timeout=10.0)
        try:
            while not killed.is_set():
                try:
                    note = await client.fetch("checkpoint")
                except SigstackError:
                    return
                if note is not None:
                    ledger.seen.add(note)
                await asyncio.sleep(0.005)
        finally:
            await client.close()

    tasks = [asyncio.create_task(writer()) for _ in range(WRITERS)]
    tasks.append(asyncio.create_task(poller()))
    await asyncio.sleep(kill_after)
    killed.set()
    stack.kill()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    return acks


def _fsck_at_rest(stack: StackProcess, capsys: pytest.CaptureFixture[str], seed: int) -> None:
    from sigstack.ops.fsck import run_fsck

    args = argparse.Namespace(
        data_dir=stack.data_dir, log="rekor", url=None, trusted_root=None, json=True
    )
    code = run_fsck(args)
    out = capsys.readouterr().out
    assert code == 0, f"seed {seed}: fsck of the killed stack's Rekor log failed:\n{out}"


def _check_answers(ledger: Ledger, key: LogKey) -> None:
    """Every 201's own inclusion proof verifies against the signed checkpoint it came with."""
    checkpoints: dict[bytes, SignedCheckpoint] = {}
    for ack in ledger.answers:
        cp = checkpoints.get(ack.checkpoint)
        if cp is None:
            cp = checkpoints[ack.checkpoint] = parse_signed_checkpoint(ack.checkpoint, key)
        check_inclusion_proof(ack.body, ack.index, ack.proof, cp)
    ledger.answers.clear()


async def _check_after_restart(
    stack: StackProcess, key: LogKey, pool: EntryPool, ledger: Ledger, rng: random.Random
) -> SignedCheckpoint:
    seed = ledger.seed
    client = RekorClient(stack.url("rekor"), timeout=30.0)
    try:
        log = LogClient(client.fetch, key=key, cache_tiles=1 << 16)
        cp = await log.checkpoint()  # signature checked with the trusted root's key

        _check_answers(ledger, key)

        # No fork: consistent with every checkpoint seen since the last proven one,
        # and with that one (which was consistent with everything before it).
        history = [parse_signed_checkpoint(note, key) for note in ledger.seen]
        if ledger.proven is not None:
            history.append(ledger.proven)
        by_size: dict[int, bytes] = {}
        for old in history:
            other = by_size.setdefault(old.size, old.root)
            assert other == old.root, f"seed {seed}: two checkpoints of size {old.size} disagree"
            assert old.size <= cp.size, (
                f"seed {seed}: after the restart the log has {cp.size} entries, but a "
                f"checkpoint of size {old.size} had been published"
            )
            await log.verify_consistency(old, cp)

        # Not one acknowledged entry lost, and everything served adds up.
        entries = await log.audit(cp)
        for index, body in ledger.acked.items():
            assert index < cp.size, (
                f"seed {seed}: entry {index} was acknowledged, the log now has {cp.size}"
            )
            assert entries[index] == body, (
                f"seed {seed}: entry {index} is not the acknowledged entry"
            )
        for index in rng.sample(sorted(ledger.acked), min(INCLUSION_SAMPLES, len(ledger.acked))):
            await log.verify_inclusion(index, ledger.acked[index], cp)

        # The entry index survived: acknowledged entries, the newest (written just before
        # the kill, past what the index had flushed) and older ones, are found again.
        acked = sorted(ledger.requests)
        sample = set(acked[-DEDUP_SAMPLES:]) | set(
            rng.sample(acked, min(DEDUP_SAMPLES, len(acked)))
        )
        for index in sorted(sample):
            again = await client.submit(ledger.requests[index])
            assert again.index == index, (
                f"seed {seed}: entry {index} resubmitted after the restart got index "
                f"{again.index}; deduplication should have answered {index}"
            )

        # The log goes on after everything it acknowledged.
        highest = max(ledger.acked, default=-1)
        for _ in range(NEW_WRITES):
            body = pool.next()
            assert body is not None
            ack = await client.submit(body)
            assert ack.index >= cp.size and ack.index > highest, (
                f"seed {seed}: a new entry got index {ack.index}; the log had {cp.size} "
                f"entries and {highest} was acknowledged before"
            )
            highest = ack.index
            ledger.record(ack)
        latest = parse_signed_checkpoint(ack.checkpoint, key)
        await log.verify_consistency(cp, latest)
    finally:
        await client.close()
    _check_answers(ledger, key)
    ledger.seen.clear()
    ledger.proven = latest
    return cp


def test_sigkill_under_load_loses_no_acknowledged_entry_and_never_forks(
    stack_factory: StackProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = SEED
    print(f"crash test: seed {seed}, {ITERATIONS} iterations (SIGSTACK_CRASH_SEED={seed})")
    rng = random.Random(seed)
    stack = stack_factory
    stack.start()
    key = LogKey.from_trust_config(
        Path(stack.data_dir) / "client" / "trust_config.json", stack.url("rekor")
    )
    pool = EntryPool(POOL_HEADROOM)
    ledger = Ledger(seed)
    log_lines = []
    for iteration in range(ITERATIONS):
        if pool.remaining < POOL_HEADROOM:
            pool.extend(POOL_HEADROOM - pool.remaining)
        kill_after = rng.uniform(*KILL_AFTER)
        acks = asyncio.run(_load_until_killed(stack, pool, ledger, kill_after))
        assert not ledger.errors_before_kill, (
            f"seed {seed}: requests failed before the kill: {ledger.errors_before_kill[:3]}"
        )
        killed = time.monotonic()
        _fsck_at_rest(stack, capsys, seed)
        checked = time.monotonic()
        stack.start()
        restarted = time.monotonic()
        try:
            cp = asyncio.run(_check_after_restart(stack, key, pool, ledger, rng))
        except SigstackError as exc:  # a proof or read failed: name the seed to replay it
            pytest.fail(f"seed {seed}, iteration {iteration}: {exc}")
        log_lines.append(
            f"iteration {iteration}: killed after {kill_after:.3f}s, {acks} acks, "
            f"size after restart {cp.size}; fsck {checked - killed:.1f}s, "
            f"restart {restarted - checked:.1f}s, checks {time.monotonic() - restarted:.1f}s"
        )
    assert stack.stop() == 0, "".join(stack.output)
    _fsck_at_rest(stack, capsys, seed)
    print("\n".join(log_lines))
    print(f"crash test: seed {seed}: {len(ledger.acked)} acknowledged entries, none lost")
