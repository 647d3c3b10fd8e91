"""Process-wide settings for sigstack's long-running processes.

:func:`tune_gc` sets CPython's cyclic garbage collector for a server that is done
starting. Every logged entry allocates a few dozen short-lived container objects
(futures, proofs, request objects), so with the default thresholds (700, 10, 10)
the collector runs every few entries, and its older generations keep re-scanning
everything that start-up imported and built (keys, services, the modules of
``cryptography`` and Starlette), which lives until exit. Measured with
``sigstack bench engine --storage memory`` on the 2-core development machine:
about 30k entries/s with the defaults, 40-46k after ``tune_gc``, 45-51k with the
collector off. Reference cycles are still collected, only in larger steps.

What it does:

* ``gc.collect()`` then ``gc.freeze()``: what start-up built moves to the
  permanent generation and is never scanned again (it is not garbage);
* the young generation's threshold becomes ``GEN0_THRESHOLD``: a young collection
  every ``GEN0_THRESHOLD`` net allocations instead of 700 (a few MiB of young objects
  at most, collected in one pass); the older generations' thresholds are kept.

Call it once, after start-up and before serving; calling it again is harmless (it
freezes what was built since, and sets the same thresholds).
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 20_000
"""Net container allocations between two young-generation collections."""


def tune_gc() -> None:
    """Freeze what start-up built and raise the young-generation threshold."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, older, oldest)
