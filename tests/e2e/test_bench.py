"""`sigstack bench stack` runs end to end and reports every figure it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from sigstack.ops.bench.engine import PHASE_KEYS

pytestmark = pytest.mark.e2e


def test_bench_stack_reports_real_figures() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "sigstack", "bench", "stack", "--runs", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    figures = json.loads(res.stdout)
    for key in (
        "first_start_to_ready_s",
        "restart_to_ready_s",
        "stop_s",
        "cli_sign_ms",
        "cli_verify_ms",
        "library_sign_ms",
        "library_verify_ms",
        "stack_rss_mib",
        "stack_peak_rss_mib",
    ):
        assert isinstance(figures[key], int | float) and figures[key] > 0, key
    assert figures["stack_peak_rss_mib"] >= figures["stack_rss_mib"]


def _bench(*args: str) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, "-m", "sigstack", "bench", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    figures: dict[str, Any] = json.loads(res.stdout)
    return figures


def test_bench_rekor_loads_a_throwaway_stack_and_verifies_proofs() -> None:
    from sigstack.ops.bench.rekor import REPORT_KEYS

    figures = _bench("rekor", "--duration", "2", "--rate", "50", "--writers", "8")
    assert tuple(figures) == REPORT_KEYS
    assert figures["host_sha256_per_s"] > 0
    assert figures["spawned_stack"] is True
    assert figures["offered_rate"] == 50 and figures["duration_s"] == 2
    assert figures["writes_acknowledged"] > 0 and figures["writes_per_s"] > 0
    assert 0 < figures["tti_p50_ms"] <= figures["tti_p99_ms"] <= figures["tti_max_ms"]
    assert figures["tti_mean_ms"] > 0
    assert figures["errors"] == 0 and figures["error_samples"] == []
    assert figures["proofs_verified"] > 0 and figures["proofs_per_s"] > 0
    assert figures["checkpoints_read"] > 0
    assert figures["proof_failures"] == 0 and figures["failures"] == []
    assert figures["log_size"] >= figures["writes_acknowledged"]
    assert figures["server_pid"] > 0 and figures["server_processes"] == 1
    assert figures["server_cpu_percent"] > 0 and figures["generator_cpu_percent"] > 0
    assert 0 < figures["server_rss_mib"] <= figures["server_peak_rss_mib"]


def test_bench_rekor_with_frontends_measures_every_server_process() -> None:
    figures = _bench(
        "rekor", "--duration", "2", "--rate", "100", "--writers", "16", "--rekor-frontends", "1"
    )
    assert figures["server_processes"] == 2
    assert figures["writes_acknowledged"] > 0 and figures["errors"] == 0
    assert figures["proofs_verified"] > 0 and figures["proof_failures"] == 0
    assert figures["log_size"] >= figures["writes_acknowledged"]
    assert figures["server_cpu_percent"] > 0
    assert 0 < figures["server_rss_mib"] <= figures["server_peak_rss_mib"]


def _check_phase(phase: dict[str, Any], size: int, entries: int) -> None:
    assert tuple(phase) == PHASE_KEYS
    assert phase["size"] == size and phase["final_size"] == size + entries
    assert phase["writes_per_s"] > 0 and phase["write_s"] > 0 and phase["open_s"] >= 0
    assert phase["prepared_s"] >= 0
    assert 1 <= phase["batches"] <= entries and phase["mean_batch"] >= 1
    for kind in ("random", "recent"):
        assert 0 < phase[f"proof_{kind}_p50_us"] <= phase[f"proof_{kind}_p99_us"]
    assert phase["rss_mib"] > 0


@pytest.mark.parametrize("storage", ["memory", "fs"])
def test_bench_engine_appends_and_proves(storage: str) -> None:
    figures = _bench("engine", "--entries", "2000", "--storage", storage, "--proofs", "200")
    assert (figures["storage"], figures["entries"], figures["prefill"]) == (storage, 2000, 0)
    assert figures["host_sha256_per_s"] > 0
    assert figures["entry_bytes"] > 0
    _check_phase(figures["empty"], 0, 2000)


def test_bench_engine_prefill_compares_with_a_small_log() -> None:
    figures = _bench(
        "engine", "--entries", "2000", "--prefill", "5000", "--storage", "memory", "--proofs", "200"
    )
    assert figures["prefill"] == 5000 and figures["prefill_entries_per_s"] > 0
    _check_phase(figures["at_prefill"], 5000, 2000)
    _check_phase(figures["at_1000"], 1000, 2000)
    for key in ("write_ratio", "proof_random_p50_ratio", "proof_random_p99_ratio"):
        assert figures[key] > 0
