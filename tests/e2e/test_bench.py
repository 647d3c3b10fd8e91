"""`sigstack bench stack` runs end to end and reports every figure it promises."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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
