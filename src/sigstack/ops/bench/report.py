"""How the benchmarks summarise samples and print their figures.

Percentiles are nearest-rank (the smallest sample with at least q% of samples at
or below it; q=100 is the maximum), so every reported latency is one that was
actually observed. Reports are flat dicts (nested dicts are printed with dotted
keys); the table prints one ``key  value`` line each, ``--json`` the dict as one
JSON object.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from typing import Any

CALIBRATION_SECONDS = 0.3
"""How long :func:`host_speed` hashes."""


def percentile(samples: Sequence[float], q: float) -> float | None:
    """Nearest-rank ``q``-th percentile of **sorted** ``samples`` (None if empty)."""
    if not samples:
        return None
    rank = max(1, math.ceil(q / 100 * len(samples)))
    return samples[min(rank, len(samples)) - 1]


def percentile_ms(samples: Sequence[float], q: float, digits: int = 2) -> float | None:
    """:func:`percentile` of sorted samples in seconds, in milliseconds."""
    value = percentile(samples, q)
    return None if value is None else round(value * 1000, digits)


def host_speed(seconds: float = CALIBRATION_SECONDS) -> int:
    """This machine's single-core speed right now: 64-byte SHA-256 digests per second.

    The same code measured up to twice as fast at one time as at another on the
    same (shared) machine; this figure, taken at the start of each run, tells runs
    taken at different times apart. It is the operation the logs repeat most
    (RFC 6962 node hashes are 65 bytes), called from Python as the logs call it.
    """
    if seconds <= 0:
        raise ValueError("calibration needs a positive duration")
    sha256 = hashlib.sha256
    block = bytes(64)
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(1000):
            sha256(block).digest()
        count += 1000
        now = time.perf_counter()
        if now >= deadline:
            return round(count / (now - start))


def _flatten(report: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in report.items():
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{prefix}{key}."))
        else:
            rows.append((prefix + key, value))
    return rows


def print_table(report: dict[str, Any]) -> None:
    """Print ``report`` as aligned ``key  value`` lines (absent values as ``-``)."""
    rows = _flatten(report)
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        if value is None:
            text = "-"
        elif isinstance(value, list):
            text = "; ".join(str(v) for v in value) or "-"
        else:
            text = str(value)
        print(f"{key:<{width}}  {text}")
