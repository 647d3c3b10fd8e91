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
  with the engine's default :class:`~sigstack.log.engine.BatchPolicy`; the clock
  runs from the first ``submit`` to the last acknowledged entry. The number of
  distinct checkpoints in the answers is the number of batches. The process CPU
  over the phase is reported too (above 100%: more than one core busy).
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
* **memory**: the process's resident memory (``VmRSS``) at the end of the phase,
  in MiB (the filesystem backend holds the level-0 tile pack in memory, 64 bytes
  per entry; phases run in one process, so a later phase's figure includes what
  an earlier one left).

With ``--prefill M`` a log is first measured at 1,000 entries ("at_1000"), then a
second one is grown to ``M`` entries through a fast path (batches of
``ENGINE_PREFILL_BATCH``), closed, reopened with the default policy and measured
("at_prefill"); ``write_ratio`` and the proof-latency ratios compare the two.
Without ``--prefill`` one log is measured from empty ("empty").

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


def _append(log: TransparencyLog, entries: _Entries, start: int, count: int, window: int) -> int:
    """Submit entries ``start .. start+count-1``, at most ``window`` in flight; return the
    number of distinct checkpoints (batches) that acknowledged them."""
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
    return len(sizes)


def _proof_latencies(log: TransparencyLog, indexes: list[int], size: int) -> list[float]:
    samples = []
    for index in indexes:
        t = time.perf_counter()
        log.inclusion_proof(index, size)
        samples.append(time.perf_counter() - t)
    samples.sort()
    return samples


def _us(samples: list[float], q: float) -> float | None:
    value = percentile(samples, q)
    return None if value is None else round(value * 1e6, 1)


def _phase(
    storage: LogStorage,
    signer: Ed25519NoteSigner,
    entries: _Entries,
    *,
    prefill: int,
    count: int,
    proofs: int,
    rng: random.Random,
) -> dict[str, Any]:
    """Create a log, grow it to ``prefill`` (fast path), reopen it, measure (see module doc)."""
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
    try:
        if not log.wait_prepared(ACK_TIMEOUT):
            raise Unavailable(f"the log was not prepared within {ACK_TIMEOUT:.0f} s")
        prepared_s = time.perf_counter() - t - open_s
        cpu, t = time.process_time(), time.perf_counter()
        batches = _append(log, entries, prefill, count, ENGINE_WINDOW)
        write_s = time.perf_counter() - t
        cpu = time.process_time() - cpu
        cp = log.checkpoint()
        size = cp.size
        if size != prefill + count:
            raise VerificationError(f"the log holds {size} entries, expected {prefill + count}")
        uniform = [rng.randrange(size) for _ in range(proofs)]
        recent = [rng.randrange(max(0, size - RECENT), size) for _ in range(proofs)]
        random_lat = _proof_latencies(log, uniform, size)
        recent_lat = _proof_latencies(log, recent, size)
        for index in uniform[:VERIFIED_PROOFS]:
            proof = log.inclusion_proof(index, size)
            verify_inclusion(leaf_hash(entries.leaf(index)), index, size, proof, cp.root_hash)
        rss = read_memory_kib(os.getpid()).get("VmRSS")
    finally:
        log.close()
    figures = {
        "size": prefill,
        "prefill_s": round(prefill_s, 2),
        "open_s": round(open_s, 3),
        "prepared_s": round(prepared_s, 3),
        "writes_per_s": round(count / write_s),
        "write_s": round(write_s, 3),
        "write_cpu_percent": round(cpu / write_s * 100, 1),
        "batches": batches,
        "mean_batch": round(count / batches, 1) if batches else None,
        "final_size": size,
        "proof_random_p50_us": _us(random_lat, 50),
        "proof_random_p99_us": _us(random_lat, 99),
        "proof_recent_p50_us": _us(recent_lat, 50),
        "proof_recent_p99_us": _us(recent_lat, 99),
        "rss_mib": round(rss / 1024, 1) if rss is not None else None,
    }
    assert tuple(figures) == PHASE_KEYS
    return figures


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

        def phase(name: str, prefill: int) -> dict[str, Any]:
            return _phase(
                storage(name),
                signer,
                entries,
                prefill=prefill,
                count=args.entries,
                proofs=args.proofs,
                rng=rng,
            )

        report: dict[str, Any] = {
            "host_sha256_per_s": host_speed(),
            "storage": args.storage,
            "entries": args.entries,
            "entry_bytes": args.entry_bytes,
            "prefill": args.prefill,
        }
        if not args.prefill:
            report["empty"] = phase("empty", 0)
        else:
            baseline = phase("baseline", ENGINE_BASELINE)
            gc.collect()  # the baseline's objects must not burden the large log's phase
            at_prefill = phase("prefill", args.prefill)
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
