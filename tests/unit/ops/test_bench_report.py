"""Benchmark percentiles are nearest-rank: every figure is an observed sample."""

from __future__ import annotations

import pytest

from sigstack.ops.bench.report import host_speed, percentile, percentile_ms, print_table


def test_nearest_rank_percentiles() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 50) == 50
    assert percentile(samples, 99) == 99
    assert percentile(samples, 100) == 100
    assert percentile(samples, 0) == 1
    assert percentile([7.0], 99) == 7
    assert percentile([], 50) is None
    assert percentile_ms([0.0123456], 50) == 12.35


def test_table_flattens_nested_figures(capsys: pytest.CaptureFixture[str]) -> None:
    print_table({"a": 1, "phase": {"b": None, "c": [1, 2]}})
    assert capsys.readouterr().out.splitlines() == ["a        1", "phase.b  -", "phase.c  1; 2"]


def test_host_speed_counts_digests_for_the_time_asked() -> None:
    # A rate, not a time: at least the 1,000 digests of one round in 0.05 s, and
    # fewer than a billion a second (a broken clock or loop would show here).
    assert 1_000 / 0.05 <= host_speed(0.05) < 1_000_000_000
    with pytest.raises(ValueError):
        host_speed(0)
