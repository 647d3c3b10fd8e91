"""``sigstack bench``: the project's own benchmarks (figures are printed, never asserted).

Scenarios, one module each:

* ``stack`` (:mod:`.stack`): start-up, sign and verify with sigstore-python, memory;
* ``rekor`` (:mod:`.rekor`): a load generator for Rekor v2 over HTTP (writers at an
  offered rate, readers verifying proofs), with server CPU and memory;
* ``engine`` (:mod:`.engine`): the transparency-log engine alone, without HTTP.

The pieces are reusable as a library (the crash test drives them): a minimal
HTTP/1.1 client (:mod:`.httpclient`), pre-signed Rekor entries (:mod:`.entries`),
an independent tlog-tiles verifier (:mod:`.tlog`), a throw-away ``sigstack up``
and /proc readings (:mod:`.procs`), and report formatting (:mod:`.report`).
Modules are imported by the command that needs them, so ``bench stack`` does not
load the engine and ``bench engine`` does not load the HTTP client.
"""

from __future__ import annotations

import argparse


def run_stack_bench(args: argparse.Namespace) -> int:
    """``sigstack bench stack``."""
    from sigstack.ops.bench.stack import run_stack_bench as run

    return run(args)


def run_rekor_bench(args: argparse.Namespace) -> int:
    """``sigstack bench rekor``."""
    from sigstack.ops.bench.rekor import run_rekor_bench as run

    return run(args)


def run_engine_bench(args: argparse.Namespace) -> int:
    """``sigstack bench engine``."""
    from sigstack.ops.bench.engine import run_engine_bench as run

    return run(args)
