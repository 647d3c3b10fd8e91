"""`sigstack bench rekor`: a load generator for Rekor v2, in the spirit of Tessera's hammer.

Writers submit real signed entries over HTTP to ``POST /api/v2/log/entries``;
readers verify inclusion proofs against checkpoints from the C2SP read path.
Without ``--url`` it starts a throw-away ``sigstack up`` (temporary state
directory, free loopback ports) and targets its Rekor v2.

What it measures
----------------
* **Writes.** Open loop at the offered rate ``--rate`` (entries/s across all
  writers): request ``i`` is due at ``t0 + i / rate`` whether or not earlier ones
  were answered; ``--writers`` keep-alive connections each carry one request at a
  time and take the next due request. Rekor v2 answers 201 only once the entry is
  integrated (durable and covered by a signed checkpoint), so *time-to-integrate*
  is measured from when a request was **due** to when its 201 arrived: time spent
  waiting for a free writer counts (no coordinated omission). ``--rate 0`` runs
  closed loop instead, every writer submitting its next entry as soon as the
  previous one is answered (as fast as possible; latency then starts at sending).
  *writes/s* counts 201 answers that arrived within the ``--duration`` window;
  requests due in the window but still unsent at its end are reported as
  ``unsent`` (more writers needed), requests in flight then are awaited (up to 30 s)
  for the latency figures.
* **Rejections.** A 503 with ``Retry-After`` is a rejection (the log's queue is
  full): the writer that got it pauses for that long; the entry is not retried.
  Any other failure (other status, connection error, timeout) is an *error*.
* **Readers.** ``--readers`` tasks loop, verifying ``--read-rate`` inclusion
  proofs/s between them (0: as fast as they can): fetch ``/api/v2/checkpoint`` (verify its
  signature when the log key is known: always for a spawned stack, with
  ``--trust-config`` otherwise) and prove it consistent with the previous
  checkpoint they saw (same size: same root); then pick random acknowledged
  entries it covers, check the proof their 201 carried against the checkpoint it
  came with, fetch their entry bundles and the tiles needed, check the bundle
  holds exactly the acknowledged bytes, build the inclusion proof client-side and
  verify it against the latest checkpoint root (:mod:`sigstack.ops.bench.tlog`,
  which shares no Merkle code with the server). A check that fails (inclusion,
  consistency, checkpoint signature) is a **finding**: it is printed loudly on
  stderr and the command exits 1.
* **CPU and memory.** Server CPU as % of one core from ``/proc/<pid>/stat``
  (utime + stime) over the window, server ``VmRSS`` and ``VmHWM`` at the end,
  and the generator's own CPU %. The server figures are summed over the server
  process and its children (the Rekor frontends of ``--rekor-frontends``; how many
  processes were measured is ``server_processes``). With ``--url`` the server
  figures need ``--server-pid``.
* **Frontends.** ``--rekor-frontends N`` starts the throw-away stack with N more
  processes serving Rekor's port (:mod:`sigstack.stack.frontend`).

Entries are signed before the window (:mod:`sigstack.ops.bench.entries`), all
distinct; the HTTP client is :mod:`sigstack.ops.bench.httpclient` (see there for
why not httpx).

Defaults (defined in :mod:`sigstack.ops.bench.options`): ``--rate 1000``,
``--duration 10`` s, ``--writers 128``, ``--readers 2``, ``--read-rate 20``,
``--pool`` = rate x duration + 5% + writers (``--rate 0``: 10,000 x duration).
Output: a table, or with ``--json`` one JSON object with the same figures (keys
in :data:`REPORT_KEYS`; absent figures are ``null``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import tempfile
import time
from binascii import a2b_base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sigstack.core.errors import (
    InvalidRequest,
    NotFound,
    Overloaded,
    SigstackError,
    UpstreamError,
    VerificationError,
)
from sigstack.ops.bench.entries import CONTENT_TYPE, EntryPool
from sigstack.ops.bench.httpclient import HttpConnection, split_url
from sigstack.ops.bench.options import (
    REKOR_DURATION,
    REKOR_MAX_RATE_POOL_PER_S,
    REKOR_RATE,
    REKOR_READ_RATE,
    REKOR_READERS,
    REKOR_WRITERS,
)
from sigstack.ops.bench.procs import ProcessMeter, ThrowawayStack, tree_memory_kib
from sigstack.ops.bench.report import host_speed, percentile_ms, print_table
from sigstack.ops.bench.tlog import (
    LogClient,
    LogKey,
    SignedCheckpoint,
    check_inclusion_proof,
    parse_signed_checkpoint,
)

DRAIN_TIMEOUT = 30.0
"""Seconds to wait for requests still in flight when the window closes."""
PROOFS_PER_CHECKPOINT = 4
"""Inclusion proofs a reader verifies per checkpoint it fetches."""
ERROR_SAMPLES = 5

ENTRIES_PATH = "/api/v2/log/entries"

REPORT_KEYS = (
    "host_sha256_per_s",
    "target",
    "spawned_stack",
    "offered_rate",
    "duration_s",
    "writers",
    "readers",
    "read_rate",
    "writes_acknowledged",
    "writes_per_s",
    "tti_p50_ms",
    "tti_p99_ms",
    "tti_max_ms",
    "tti_mean_ms",
    "rejections",
    "errors",
    "error_samples",
    "unsent",
    "pool_exhausted",
    "checkpoints_read",
    "consistency_verified",
    "proofs_verified",
    "proofs_per_s",
    "proof_failures",
    "failures",
    "log_size",
    "server_pid",
    "server_processes",
    "server_cpu_percent",
    "server_rss_mib",
    "server_peak_rss_mib",
    "generator_cpu_percent",
)
"""Every key of the report, in the order the table prints them."""


# --- a Rekor v2 client -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ack:
    """An acknowledged entry: where the log put it, its canonical bytes, the signed
    checkpoint of the answer and the inclusion proof against it (as answered)."""

    index: int
    body: bytes
    checkpoint: bytes
    proof: tuple[bytes, ...]


class RekorClient:
    """Rekor v2 write and read path over one keep-alive connection.

    ``submit`` returns the :class:`Ack` of a 201, raises :class:`Overloaded` for a 503
    with ``Retry-After`` and :class:`UpstreamError` for anything else.
    """

    def __init__(self, url: str, *, timeout: float = 60.0) -> None:
        host, port, host_header, prefix = split_url(url)
        self.url = url.rstrip("/")
        self._conn = HttpConnection(host, port, host_header, timeout=timeout)
        self._prefix = prefix + "/api/v2/"

    async def connect(self) -> None:
        await self._conn.connect()

    async def close(self) -> None:
        await self._conn.close()

    async def submit(self, body: bytes) -> Ack:
        resp = await self._conn.post(self._prefix + "log/entries", body, CONTENT_TYPE)
        if resp.status == 201:
            return parse_ack(resp.body)
        if resp.status == 503 and "retry-after" in resp.headers:
            try:
                retry = max(0, int(resp.headers["retry-after"]))
            except ValueError:
                retry = 1
            raise Overloaded(f"{self.url} is shedding load", retry_after=retry)
        raise UpstreamError(f"{self.url}{ENTRIES_PATH} answered {resp.status}: {resp.body[:200]!r}")

    async def fetch(self, path: str) -> bytes | None:
        """A C2SP resource below ``/api/v2/`` (``checkpoint``, ``tile/...``); None on 404."""
        resp = await self._conn.get(self._prefix + path)
        if resp.status == 200:
            return resp.body
        if resp.status == 404:
            return None
        raise UpstreamError(f"{self.url}/api/v2/{path} answered {resp.status}: {resp.body[:200]!r}")


def parse_ack(raw: bytes) -> Ack:
    """The :class:`Ack` in a 201 ``TransparencyLogEntry``; UpstreamError if malformed."""
    try:
        doc = json.loads(raw)
        index = int(doc["logIndex"])
        # binascii's strict mode is what base64.b64decode(validate=True) runs, one call less.
        body = a2b_base64(doc["canonicalizedBody"], strict_mode=True)
        inclusion = doc["inclusionProof"]
        checkpoint = inclusion["checkpoint"]["envelope"].encode()
        proof = tuple([a2b_base64(h, strict_mode=True) for h in inclusion["hashes"]])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UpstreamError(f"malformed TransparencyLogEntry: {exc!r}") from exc
    return Ack(index, body, checkpoint, proof)


# --- the load generator ----------------------------------------------------------------


@dataclass
class LoadConfig:
    """One run of the generator (see the module docstring for the meaning)."""

    url: str
    rate: float = REKOR_RATE
    duration: float = REKOR_DURATION
    writers: int = REKOR_WRITERS
    readers: int = REKOR_READERS
    read_rate: float = REKOR_READ_RATE
    pool: int | None = None
    key: LogKey | None = None
    server_pid: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.rate < 0 or not math.isfinite(self.rate):
            raise InvalidRequest(f"--rate must be 0 (as fast as possible) or positive: {self.rate}")
        if self.duration <= 0:
            raise InvalidRequest(f"--duration must be positive: {self.duration}")
        if self.writers < 1 or self.readers < 0:
            raise InvalidRequest("--writers must be at least 1 and --readers at least 0")
        if self.read_rate < 0 or not math.isfinite(self.read_rate):
            raise InvalidRequest(f"--read-rate must be 0 (unlimited) or positive: {self.read_rate}")

    def pool_size(self) -> int:
        if self.pool is not None:
            return self.pool
        if self.rate == 0:
            return int(REKOR_MAX_RATE_POOL_PER_S * self.duration)
        return math.ceil(self.rate * self.duration * 1.05) + self.writers


@dataclass
class _State:
    window_end: float = 0.0
    closed: bool = False
    acks: list[Ack] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    in_window: int = 0
    rejections: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    unsent: int = 0
    pool_exhausted: bool = False
    checkpoints: int = 0
    consistency: int = 0
    proofs: int = 0
    failures: list[str] = field(default_factory=list)

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < ERROR_SAMPLES and message not in self.error_samples:
            self.error_samples.append(message)


class LoadGenerator:
    """Writers and readers against one Rekor v2 (see the module docstring)."""

    def __init__(self, config: LoadConfig, pool: EntryPool) -> None:
        self.config = config
        self.pool = pool
        self.state = _State()
        self._rng = random.Random(config.seed)  # noqa: S311 - sampling, not security
        self._queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        self._next_read = 0.0
        self._host_speed = 0
        self._meter: ProcessMeter | None = None

    async def run(self) -> dict[str, Any]:
        cfg, st = self.config, self.state
        self._host_speed = host_speed()  # before any load: the machine's speed right now
        writers = [RekorClient(cfg.url) for _ in range(cfg.writers)]
        readers = [RekorClient(cfg.url) for _ in range(cfg.readers)]
        await asyncio.gather(*(c.connect() for c in writers + readers))
        self._meter = meter = ProcessMeter(cfg.server_pid) if cfg.server_pid else None
        if meter:
            meter.start()
        cpu0 = time.process_time()
        t0 = time.monotonic()
        st.window_end = t0 + cfg.duration
        if cfg.rate > 0:
            writer_tasks = [asyncio.create_task(self._open_writer(c)) for c in writers]
            dispatcher = asyncio.create_task(self._dispatch(t0))
        else:
            writer_tasks = [asyncio.create_task(self._closed_writer(c)) for c in writers]
            dispatcher = None
        reader_tasks = [asyncio.create_task(self._reader(c)) for c in readers]

        await asyncio.sleep(max(0.0, st.window_end - time.monotonic()))
        st.closed = True
        generator_cpu = (time.process_time() - cpu0) / (time.monotonic() - t0) * 100
        server_cpu = meter.cpu_percent() if meter else None
        for task in reader_tasks:
            task.cancel()
        if dispatcher is not None:
            await dispatcher
        while not self._queue.empty():  # due in the window, never sent
            if self._queue.get_nowait() is not None:
                st.unsent += 1
        for _ in writer_tasks:
            self._queue.put_nowait(None)
        _, late = await asyncio.wait(writer_tasks, timeout=DRAIN_TIMEOUT)
        for task in late:
            task.cancel()
        outcomes = await asyncio.gather(*reader_tasks, *late, return_exceptions=True)
        for task in writer_tasks:
            if not task.cancelled() and task.exception() is not None:
                outcomes.append(task.exception())
        for outcome in outcomes:  # a bug in the generator itself: do not hide it
            if isinstance(outcome, Exception) and not isinstance(outcome, asyncio.CancelledError):
                raise outcome

        log_size = None
        probe = RekorClient(cfg.url)
        try:
            note = await probe.fetch("checkpoint")
            if note is not None:
                log_size = parse_signed_checkpoint(note, cfg.key).size
        except SigstackError as exc:
            st.error(f"final checkpoint: {exc}")
        finally:
            await probe.close()
        await asyncio.gather(*(c.close() for c in writers + readers))
        return self._report(generator_cpu, server_cpu, log_size, late_drained=len(late))

    # -- writers --------------------------------------------------------------------------

    async def _dispatch(self, t0: float) -> None:
        """Queue request ``i`` at ``t0 + i / rate`` until the window closes."""
        st, rate, queue = self.state, self.config.rate, self._queue
        i = 0
        while not st.closed:
            now = time.monotonic()
            due = min(int((now - t0) * rate) + 1, math.ceil((st.window_end - t0) * rate))
            while i < due:
                body = self.pool.next()
                if body is None:
                    st.pool_exhausted = True
                    return
                queue.put_nowait((t0 + i / rate, body))
                i += 1
            if now >= st.window_end:
                return
            await asyncio.sleep(max(0.0005, t0 + i / rate - time.monotonic()))

    async def _open_writer(self, client: RekorClient) -> None:
        while (item := await self._queue.get()) is not None:
            due, body = item
            await self._submit(client, body, due)

    async def _closed_writer(self, client: RekorClient) -> None:
        st = self.state
        while not st.closed:
            body = self.pool.next()
            if body is None:
                st.pool_exhausted = True
                return
            await self._submit(client, body, time.monotonic())

    async def _submit(self, client: RekorClient, body: bytes, due: float) -> None:
        st = self.state
        try:
            ack = await client.submit(body)
        except Overloaded as exc:
            st.rejections += 1
            await asyncio.sleep(exc.retry_after)
            return
        except SigstackError as exc:
            st.error(str(exc))
            await asyncio.sleep(0.05)  # a broken server must not turn writers into a busy loop
            return
        done = time.monotonic()
        st.latencies.append(done - due)
        st.acks.append(ack)
        if done <= st.window_end:
            st.in_window += 1

    # -- readers --------------------------------------------------------------------------

    async def _reader(self, client: RekorClient) -> None:
        st, rng = self.state, self._rng
        log = LogClient(client.fetch, key=self.config.key)
        previous: SignedCheckpoint | None = None
        while not st.closed:
            try:
                cp = await log.checkpoint()
                st.checkpoints += 1
                if previous is not None:
                    await log.verify_consistency(previous, cp)  # equal sizes: equal roots
                    st.consistency += previous.size != cp.size
                previous = cp
                acks = st.acks
                picks = [rng.choice(acks) for _ in range(16)] if acks else []
                covered = [a for a in picks if a.index < cp.size]
                if not covered:
                    await asyncio.sleep(0.01)
                    continue
                for ack in covered[:PROOFS_PER_CHECKPOINT]:
                    await self._read_slot()
                    # The proof the 201 carried, against the checkpoint it came with...
                    answered = parse_signed_checkpoint(ack.checkpoint, self.config.key)
                    check_inclusion_proof(ack.body, ack.index, ack.proof, answered)
                    # ...and one built from the served tiles, against the latest checkpoint.
                    await log.verify_inclusion(ack.index, ack.body, cp)
                    st.proofs += 1
            except (VerificationError, NotFound) as exc:
                st.failures.append(str(exc))
                print(f"sigstack bench: PROOF FAILURE: {exc}", file=sys.stderr, flush=True)
                await asyncio.sleep(0.1)
            except SigstackError as exc:
                st.error(f"reader: {exc}")
                await asyncio.sleep(0.05)

    async def _read_slot(self) -> None:
        """Wait for the readers' next slot at ``read_rate`` proofs/s (shared by all)."""
        rate = self.config.read_rate
        if rate <= 0:
            return
        now = time.monotonic()
        slot = max(now, self._next_read)
        self._next_read = slot + 1 / rate
        if slot > now:
            await asyncio.sleep(slot - now)

    # -- the report -----------------------------------------------------------------------

    def _report(
        self,
        generator_cpu: float,
        server_cpu: float | None,
        log_size: int | None,
        late_drained: int,
    ) -> dict[str, Any]:
        cfg, st = self.config, self.state
        lat = sorted(st.latencies)
        memory = tree_memory_kib(cfg.server_pid) if cfg.server_pid else {}
        if late_drained:
            st.error(f"{late_drained} writers still waiting {DRAIN_TIMEOUT:.0f}s after the window")
        report: dict[str, Any] = {
            "host_sha256_per_s": self._host_speed,
            "target": cfg.url,
            "spawned_stack": False,
            "offered_rate": cfg.rate,
            "duration_s": cfg.duration,
            "writers": cfg.writers,
            "readers": cfg.readers,
            "read_rate": cfg.read_rate,
            "writes_acknowledged": len(st.acks),
            "writes_per_s": round(st.in_window / cfg.duration, 1),
            "tti_p50_ms": percentile_ms(lat, 50),
            "tti_p99_ms": percentile_ms(lat, 99),
            "tti_max_ms": percentile_ms(lat, 100),
            "tti_mean_ms": round(sum(lat) / len(lat) * 1000, 2) if lat else None,
            "rejections": st.rejections,
            "errors": st.errors,
            "error_samples": st.error_samples,
            "unsent": st.unsent,
            "pool_exhausted": st.pool_exhausted,
            "checkpoints_read": st.checkpoints,
            "consistency_verified": st.consistency,
            "proofs_verified": st.proofs,
            "proofs_per_s": round(st.proofs / cfg.duration, 1),
            "proof_failures": len(st.failures),
            "failures": st.failures[:ERROR_SAMPLES],
            "log_size": log_size,
            "server_pid": cfg.server_pid,
            "server_processes": self._meter.processes if self._meter else None,
            "server_cpu_percent": server_cpu,
            "server_rss_mib": round(memory["VmRSS"] / 1024, 1) if "VmRSS" in memory else None,
            "server_peak_rss_mib": round(memory["VmHWM"] / 1024, 1) if "VmHWM" in memory else None,
            "generator_cpu_percent": round(generator_cpu, 1),
        }
        assert tuple(report) == REPORT_KEYS
        return report


# --- the command -----------------------------------------------------------------------


async def _load(config: LoadConfig) -> dict[str, Any]:
    pool = EntryPool(config.pool_size())
    return await LoadGenerator(config, pool).run()


def run_rekor_bench(args: argparse.Namespace) -> int:
    """Run ``sigstack bench rekor``; exit 1 if any proof failed to verify."""
    options = {
        "rate": args.rate,
        "duration": args.duration,
        "writers": args.writers,
        "readers": args.readers,
        "read_rate": args.read_rate,
        "pool": args.pool,
        "seed": args.seed,
    }
    if args.url and args.rekor_frontends:
        raise InvalidRequest("--rekor-frontends starts a throw-away stack: not with --url")
    if args.url:
        key = LogKey.from_trust_config(args.trust_config, args.url) if args.trust_config else None
        config = LoadConfig(args.url, key=key, server_pid=args.server_pid, **options)
        report = asyncio.run(_load(config))
    else:
        with tempfile.TemporaryDirectory(prefix="sigstack-bench-") as tmp:
            frontends = ("--rekor-frontends", str(args.rekor_frontends))
            stack = ThrowawayStack(Path(tmp) / "state", extra_args=frontends)
            stack.start()
            try:
                key = LogKey.from_trust_config(
                    stack.data_dir / "client" / "trust_config.json", stack.url("rekor")
                )
                config = LoadConfig(stack.url("rekor"), key=key, server_pid=stack.pid, **options)
                report = asyncio.run(_load(config))
                report["spawned_stack"] = True
            finally:
                stack.stop()
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    if report["proof_failures"]:
        print(
            f"sigstack bench: {report['proof_failures']} PROOF FAILURE(S): the log served "
            "data that does not verify; first: " + report["failures"][0],
            file=sys.stderr,
        )
        return 1
    return 0
