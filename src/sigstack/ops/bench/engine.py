"""``sigstack bench engine``: the transparency-log engine alone, without HTTP.

Drives :class:`~sigstack.log.engine.TransparencyLog` through its public API only
(``create``, ``open``, ``submit``, ``checkpoint``, ``inclusion_proof``, ``close``)
with an Ed25519 checkpoint signer, on the filesystem backend (what ``sigstack up``
uses; in a temporary directory) or the in-memory one.

What it measures, per log size ("phase"):

* **writes/s**: ``--entries`` distinct entries (``--entry-bytes`` each, the entry
  index in the first 8 bytes), each marked ``dedup`` as Rekor marks its entries (so
  every batch looks its leaf hashes up in the entry index), submitted from one
  thread that keeps up to ``ENGINE_WINDOW`` submissions in flight (as many
  concurrent submitters would),
  with the engine's default :class:`~sigstack.log.engine.BatchPolicy` (with
  ``--prefill``, in ``ROUNDS`` slices, see below); the clock runs from the first
  ``submit`` to the last acknowledged entry (of each slice, then pauses
  ``SETTLE_SECONDS`` so that the entry index's background flush does not land in
  the other log's slice). The number of
  distinct checkpoints in the answers is the number of batches. The process CPU
  over the slices is reported too (above 100%: more than one core busy).
* **proof lookups**: ``TransparencyLog.inclusion_proof(i, size)`` latency, p50 and
  p99 over ``--proofs`` lookups of uniformly random leaves ("random": mostly tile
  cache misses on a large log, so they read storage) and of leaves among the
  newest 1,000 ("recent": what clients ask right after logging). A sample of the
  proofs is verified against the checkpoint root (a wrong proof fails the run).
* **open**: how long ``open()`` takes on the log at that size (it verifies the
  stored checkpoint and rebuilds the right edge), then ``prepared_s``, how much
  longer the background work it starts takes (the tile packs loaded into memory
  and checked: :meth:`~sigstack.log.engine.TransparencyLog.wait_prepared`). The
  writes start once it is done, so that they measure the log's steady state, not
  its first second after a restart (writes measured about a tenth slower while
  that work ran).
* **memory**: the process's resident memory (``VmRSS``) once the log is open and
  prepared, in MiB (the filesystem backend holds the level-0 tile pack in memory,
  64 bytes per entry; with ``--prefill`` the large log is opened second, so its
  figure includes the small one's).

With ``--prefill M`` a log of 1,000 entries ("at_1000") and a second one grown to
``M`` entries through a fast path (batches of ``ENGINE_PREFILL_BATCH``), closed and
reopened with the default policy ("at_prefill"), are open side by side and measured
in alternation: a slice of writes to one, then to the other, ``ROUNDS`` times, then
the proof lookups the same way. On a shared machine whose speed drifts over
minutes (this one's halved and recovered within a run), measuring one log after the
other compared two moments as much as two sizes; ``write_ratio`` and the
proof-latency ratios compare the two. Without ``--prefill`` one log is measured
from empty ("empty").

Defaults are in :mod:`sigstack.ops.bench.options` and ``--help``: 100,000 entries,
fs storage, no prefill, 768-byte entries, 2,000 proof lookups. Output: a table, or
one JSON object with ``--json``. ``host_sha256_per_s`` is the machine's single-core
speed when the run started (:func:`~sigstack.ops.bench.report.host_speed`): compare
runs only at similar values of it.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from sigstack.core.errors import InvalidRequest, Overloaded, Unavailable, VerificationError
from sigstack.core.merkle import leaf_hash, verify_inclusion
from sigstack.core.note import Ed25519NoteSigner
from sigstack.log.engine import BatchPolicy, Entry, Integrated, TransparencyLog
from sigstack.log.receipt import Receipt
from sigstack.log.storage import LogStorage
from sigstack.ops.bench.options import (
    ENGINE_BASELINE,
    ENGINE_PREFILL_BATCH,
    ENGINE_WINDOW,
)
from sigstack.ops.bench.procs import read_memory_kib
from sigstack.ops.bench.report import host_speed, percentile, print_table
from sigstack.runtime import tune_gc

ORIGIN = "bench.sigstack.local/engine"
PREFILL_POLICY = BatchPolicy(max_size=ENGINE_PREFILL_BATCH, max_age=0.05, max_pending=1 << 20)
PREFILL_WINDOW = 8 * ENGINE_PREFILL_BATCH
RECENT = 1_000
""""Recent" proof lookups pick among this many newest leaves."""
VERIFIED_PROOFS = 50
"""Proofs per phase checked against the checkpoint root."""
ROUNDS = 4
"""Slices the writes and the proof lookups are cut into, alternating between the logs."""
SETTLE_SECONDS = 1.5
"""Pause after each write slice, longer than the entry index's flush delay (1 s)."""
ACK_TIMEOUT = 300.0
"""Seconds the oldest submission may wait before the run is declared stuck."""

PHASE_KEYS = (
    "size",
    "prefill_s",
    "open_s",
    "prepared_s",
    "writes_per_s",
    "write_s",
    "write_cpu_percent",
    "batches",
    "mean_batch",
    "final_size",
    "proof_random_p50_us",
    "proof_random_p99_us",
    "proof_recent_p50_us",
    "proof_recent_p99_us",
    "rss_mib",
)
"""Keys of one phase's figures."""


class _Entries:
    """Distinct entries of a fixed size: the index in 8 bytes, then fixed random padding."""

    def __init__(self, size: int) -> None:
        if size < 8:
            raise InvalidRequest("--entry-bytes must be at least 8 (the entry index is in them)")
        self._pad = os.urandom(size - 8)

    def leaf(self, index: int) -> bytes:
        return index.to_bytes(8, "big") + self._pad


def _append(
    log: TransparencyLog, entries: _Entries, start: int, count: int, window: int
) -> set[int]:
    """Submit entries ``start .. start+count-1``, at most ``window`` in flight; return the
    distinct checkpoint sizes (batches) that acknowledged them."""
    pending: collections.deque[Receipt[Integrated]] = collections.deque()
    sizes: set[int] = set()

    def settle() -> None:
        try:
            result = pending.popleft().result(ACK_TIMEOUT)
        except TimeoutError as exc:
            raise Unavailable(
                f"the engine acknowledged no entry for {ACK_TIMEOUT:.0f} s; it is stuck"
            ) from exc
        sizes.add(result.checkpoint.size)

    for index in range(start, start + count):
        entry = Entry(entries.leaf(index), dedup=True)
        while True:
            try:
                pending.append(log.submit(entry))
                break
            except Overloaded:
                if not pending:
                    raise
                settle()
        if len(pending) >= window:
            settle()
    while pending:
        settle()
    return sizes


def _proof_latencies(log: TransparencyLog, indexes: list[int], size: int) -> list[float]:
    samples = []
    for index in indexes:
        t = time.perf_counter()
        log.inclusion_proof(index, size)
        samples.append(time.perf_counter() - t)
    return samples


def _us(samples: list[float], q: float) -> float | None:
    value = percentile(sorted(samples), q)
    return None if value is None else round(value * 1e6, 1)


@dataclass
class _Run:
    """One log under measurement: opened, then written to and proved in slices."""

    log: TransparencyLog
    prefill: int
    prefill_s: float
    open_s: float
    prepared_s: float
    rss_kib: int | None
    written: int = 0
    write_s: float = 0.0
    cpu_s: float = 0.0
    sizes: set[int] = field(default_factory=set)
    random_lat: list[float] = field(default_factory=list)
    recent_lat: list[float] = field(default_factory=list)


def _start(storage: LogStorage, signer: Ed25519NoteSigner, entries: _Entries, prefill: int) -> _Run:
    """Create a log, grow it to ``prefill`` (fast path), reopen it and wait until it is
    prepared (see module doc)."""
    TransparencyLog.create(storage, signer, ORIGIN)
    verifier = signer.verifier()
    t = time.perf_counter()
    if prefill:
        log = TransparencyLog(storage, signer, ORIGIN, verifier=verifier, policy=PREFILL_POLICY)
        log.open()
        try:
            _append(log, entries, 0, prefill, PREFILL_WINDOW)
        finally:
            log.close()
    prefill_s = time.perf_counter() - t
    log = TransparencyLog(storage, signer, ORIGIN, verifier=verifier)
    t = time.perf_counter()
    log.open()
    open_s = time.perf_counter() - t
    if not log.wait_prepared(ACK_TIMEOUT):
        log.close()
        raise Unavailable(f"the log was not prepared within {ACK_TIMEOUT:.0f} s")
    prepared_s = time.perf_counter() - t - open_s
    rss = read_memory_kib(os.getpid()).get("VmRSS")
    return _Run(log, prefill, prefill_s, open_s, prepared_s, rss)


def _write_slice(run: _Run, entries: _Entries, count: int) -> None:
    cpu, t = time.process_time(), time.perf_counter()
    run.sizes |= _append(run.log, entries, run.prefill + run.written, count, ENGINE_WINDOW)
    run.write_s += time.perf_counter() - t
    run.cpu_s += time.process_time() - cpu
    run.written += count


def _slices(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` nearly equal positive counts (fewer if it is small)."""
    parts = max(1, min(parts, total))
    return [total // parts + (i < total % parts) for i in range(parts)]


def _figures(run: _Run, entries: _Entries, sample: list[int]) -> dict[str, Any]:
    """A run's figures, after checking its size and a sample of its proofs."""
    cp = run.log.checkpoint()
    size = cp.size
    if size != run.prefill + run.written:
        raise VerificationError(
            f"the log holds {size} entries, expected {run.prefill + run.written}"
        )
    for index in sample:
        proof = run.log.inclusion_proof(index, size)
        verify_inclusion(leaf_hash(entries.leaf(index)), index, size, proof, cp.root_hash)
    batches = len(run.sizes)
    figures = {
        "size": run.prefill,
        "prefill_s": round(run.prefill_s, 2),
        "open_s": round(run.open_s, 3),
        "prepared_s": round(run.prepared_s, 3),
        "writes_per_s": round(run.written / run.write_s),
        "write_s": round(run.write_s, 3),
        "write_cpu_percent": round(run.cpu_s / run.write_s * 100, 1),
        "batches": batches,
        "mean_batch": round(run.written / batches, 1) if batches else None,
        "final_size": size,
        "proof_random_p50_us": _us(run.random_lat, 50),
        "proof_random_p99_us": _us(run.random_lat, 99),
        "proof_recent_p50_us": _us(run.recent_lat, 50),
        "proof_recent_p99_us": _us(run.recent_lat, 99),
        "rss_mib": round(run.rss_kib / 1024, 1) if run.rss_kib is not None else None,
    }
    assert tuple(figures) == PHASE_KEYS
    return figures


def _measure(
    runs: list[_Run], entries: _Entries, count: int, proofs: int, rng: random.Random
) -> list[dict[str, Any]]:
    """Write ``count`` entries to every run and time ``proofs`` lookups on each, in
    ``ROUNDS`` slices that alternate between the runs (see module doc); a single run
    is measured in one go, as before there were two."""
    rounds = ROUNDS if len(runs) > 1 else 1
    for part in _slices(count, rounds):
        for run in runs:
            _write_slice(run, entries, part)
            if rounds > 1:
                time.sleep(SETTLE_SECONDS)  # its index flush must not land in the next slice
    plans = []
    for run in runs:
        size = run.prefill + run.written
        uniform = [rng.randrange(size) for _ in range(proofs)]
        recent = [rng.randrange(max(0, size - RECENT), size) for _ in range(proofs)]
        plans.append((size, uniform, recent))
    done = 0
    for part in _slices(proofs, rounds):
        for run, (size, uniform, recent) in zip(runs, plans, strict=True):
            run.random_lat += _proof_latencies(run.log, uniform[done : done + part], size)
            run.recent_lat += _proof_latencies(run.log, recent[done : done + part], size)
        done += part
    return [
        _figures(run, entries, uniform[:VERIFIED_PROOFS])
        for run, (_, uniform, _) in zip(runs, plans, strict=True)
    ]


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def run_engine_bench(args: argparse.Namespace) -> int:
    """Run ``sigstack bench engine`` and print its figures."""
    if args.entries < 1 or args.prefill < 0 or args.proofs < 1:
        raise InvalidRequest("--entries and --proofs must be positive, --prefill not negative")
    signer = Ed25519NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
    entries = _Entries(args.entry_bytes)
    tune_gc()  # as 'sigstack up' and 'sigstack serve' run the engine
    rng = random.Random()  # noqa: S311 - sampling, not security
    with tempfile.TemporaryDirectory(prefix="sigstack-bench-engine-", dir=args.dir) as tmp:

        def storage(name: str) -> LogStorage:
            if args.storage == "memory":
                from sigstack.log.memory import MemoryStorage

                return MemoryStorage()
            from sigstack.log.fs import FilesystemStorage

            return FilesystemStorage(Path(tmp) / name)

        report: dict[str, Any] = {
            "host_sha256_per_s": host_speed(),
            "storage": args.storage,
            "entries": args.entries,
            "entry_bytes": args.entry_bytes,
            "prefill": args.prefill,
        }
        runs: list[_Run] = []
        try:
            if not args.prefill:
                runs.append(_start(storage("empty"), signer, entries, 0))
                (report["empty"],) = _measure(runs, entries, args.entries, args.proofs, rng)
            else:
                runs.append(_start(storage("baseline"), signer, entries, ENGINE_BASELINE))
                gc.collect()  # what the prefill leaves must not burden the measured writes
                runs.append(_start(storage("prefill"), signer, entries, args.prefill))
                gc.collect()
                baseline, at_prefill = _measure(runs, entries, args.entries, args.proofs, rng)
        finally:
            for run in runs:
                run.log.close()
    if args.prefill:
        report["prefill_entries_per_s"] = round(args.prefill / at_prefill["prefill_s"])
        report["at_1000"] = baseline
        report["at_prefill"] = at_prefill
        report["write_ratio"] = _ratio(at_prefill["writes_per_s"], baseline["writes_per_s"])
        for key in ("proof_random_p50_us", "proof_random_p99_us"):
            report[key.replace("_us", "_ratio")] = _ratio(at_prefill[key], baseline[key])
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    return 0
