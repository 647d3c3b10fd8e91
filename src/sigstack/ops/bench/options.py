"""Command-line options of ``sigstack bench rekor`` and ``sigstack bench engine``.

Kept apart from the scenarios so that building the CLI parser imports neither the
log engine nor the load generator. Every default is defined here once, used by
the scenario modules and shown in ``--help``.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

# --- sigstack bench rekor --------------------------------------------------------------

REKOR_RATE = 1000.0
"""Offered entries/s across all writers (0 = as fast as possible, closed loop)."""
REKOR_DURATION = 10.0
"""Seconds of measured load."""
REKOR_WRITERS = 128
"""Writer connections, one request in flight each."""
REKOR_READERS = 2
"""Reader tasks verifying proofs."""
REKOR_READ_RATE = 20.0
"""Inclusion proofs/s the readers verify together (0 = as fast as they can)."""
REKOR_MAX_RATE_POOL_PER_S = 10_000
"""Entries signed per second of ``--duration`` when ``--rate 0``."""

REKOR_DESCRIPTION = f"""\
Load Rekor v2 over HTTP, in the spirit of Tessera's hammer. Writers submit real
signed hashedrekord entries (ECDSA P-256, x509 certificate verifier, all distinct,
signed before the window) at an offered rate, open loop; Rekor v2 answers once an
entry is integrated, so the latency from a request's due time to its 201 is the
time-to-integrate. Readers fetch checkpoints (verifying their signature when the
log key is known), prove each consistent with the previous one, and verify
inclusion proofs of random acknowledged entries built client-side from the served
tiles and entry bundles. A proof that fails verification is reported on stderr
and the exit status is 1.

Without --url a throw-away `sigstack up` (temporary directory, free loopback
ports) is started and its Rekor v2 loaded; server CPU (% of one core, from
/proc/PID/stat over the window) and memory (VmRSS, VmHWM) are reported for it,
or for --server-pid with --url.

Defaults: --rate {REKOR_RATE:g}, --duration {REKOR_DURATION:g} s, --writers {REKOR_WRITERS},
--readers {REKOR_READERS}, --read-rate {REKOR_READ_RATE:g} proofs/s, --pool rate x duration
+ 5% + writers ({REKOR_MAX_RATE_POOL_PER_S:,} x duration with --rate 0).
"""

# --- sigstack bench engine -------------------------------------------------------------

ENGINE_ENTRIES = 100_000
"""Entries appended in the measured write phase."""
ENGINE_STORAGE = "fs"
"""Storage backend: ``fs`` (what ``sigstack up`` uses) or ``memory``."""
ENGINE_ENTRY_BYTES = 768
"""Bytes per entry: about a Rekor v2 hashedrekord body with a small certificate."""
ENGINE_WINDOW = 16_384
"""Submissions in flight at once (the "many concurrent submitters")."""
ENGINE_PROOFS = 2_000
"""Inclusion-proof lookups timed per log size."""
ENGINE_BASELINE = 1_000
"""Log size the --prefill figures are compared with."""
ENGINE_PREFILL_BATCH = 16_384
"""Batch size (BatchPolicy.max_size) of the prefill fast path."""

ENGINE_DESCRIPTION = f"""\
Measure the transparency-log engine alone, without HTTP: append --entries distinct
entries through TransparencyLog.submit with up to {ENGINE_WINDOW:,} submissions in
flight (so batches fill), with the engine's default BatchPolicy, and time
inclusion-proof lookups (uniformly random leaves, and leaves among the newest
{ENGINE_BASELINE:,}) at the final size.

With --prefill M the log is first grown to M entries through the fast path
(batches of {ENGINE_PREFILL_BATCH:,}), closed and reopened (the reopen time is
reported), then the same figures are taken at that size and, on a second log, at
{ENGINE_BASELINE:,} entries, with the ratios between them; the two logs are
measured in alternating slices, so that a machine whose speed drifts affects both.

Defaults: --entries {ENGINE_ENTRIES:,}, --storage {ENGINE_STORAGE}, --prefill 0 (none),
--entry-bytes {ENGINE_ENTRY_BYTES}, --proofs {ENGINE_PROOFS:,}; fs logs go to a
temporary directory (--dir to choose where), deleted afterwards.
"""


def _reflow(text: str) -> str:
    """Fill each blank-line-separated paragraph to 80 columns."""
    return "\n\n".join(
        textwrap.fill(" ".join(paragraph.split()), 80) for paragraph in text.split("\n\n")
    )


def _subparser(sub: Any, name: str, help_text: str, description: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=_reflow(description),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def add_rekor_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``rekor`` to the ``bench`` subcommands."""
    p = _subparser(
        sub,
        "rekor",
        "load Rekor v2 over HTTP: writes/s, time-to-integrate, verified proofs, CPU, memory",
        REKOR_DESCRIPTION,
    )
    p.add_argument(
        "--url",
        help="Rekor v2 base URL to load (default: start a throw-away `sigstack up`)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=REKOR_RATE,
        help=f"offered entries/s across all writers; 0 = as fast as possible "
        f"(default {REKOR_RATE:g})",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=REKOR_DURATION,
        help=f"seconds of measured load (default {REKOR_DURATION:g})",
    )
    p.add_argument(
        "--writers",
        type=int,
        default=REKOR_WRITERS,
        help=f"writer connections, one request in flight each (default {REKOR_WRITERS})",
    )
    p.add_argument(
        "--readers",
        type=int,
        default=REKOR_READERS,
        help=f"reader tasks verifying proofs (default {REKOR_READERS})",
    )
    p.add_argument(
        "--read-rate",
        type=float,
        default=REKOR_READ_RATE,
        help="inclusion proofs/s the readers verify together, so reading does not starve "
        f"writing; 0 = as fast as they can (default {REKOR_READ_RATE:g})",
    )
    p.add_argument(
        "--pool",
        type=int,
        default=None,
        help="entries signed before the window (default rate x duration + 5%% + writers, "
        f"or {REKOR_MAX_RATE_POOL_PER_S:,} x duration with --rate 0)",
    )
    p.add_argument(
        "--server-pid",
        type=int,
        default=None,
        help="with --url: PID of the server process, for its CPU and memory",
    )
    p.add_argument(
        "--trust-config",
        type=Path,
        default=None,
        help="with --url: trust_config.json or trusted_root.json with the log's key, so "
        "readers verify checkpoint signatures (default: signatures unchecked)",
    )
    p.add_argument(
        "--rekor-frontends",
        type=int,
        default=0,
        metavar="N",
        help="start the throw-away stack with `sigstack up --rekor-frontends N`: N more "
        "processes serve Rekor's port beside its main process (default 0)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the readers' random picks")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def add_engine_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``engine`` to the ``bench`` subcommands."""
    p = _subparser(
        sub,
        "engine",
        "the log engine alone (no HTTP): entries/s and proof lookups, empty and at size",
        ENGINE_DESCRIPTION,
    )
    p.add_argument(
        "--entries",
        type=int,
        default=ENGINE_ENTRIES,
        help=f"entries appended in the measured phase (default {ENGINE_ENTRIES:,})",
    )
    p.add_argument(
        "--storage",
        choices=("memory", "fs"),
        default=ENGINE_STORAGE,
        help=f"storage backend (default {ENGINE_STORAGE})",
    )
    p.add_argument(
        "--prefill",
        type=int,
        default=0,
        help="first grow the log to this many entries, then measure at that size and "
        f"compare with {ENGINE_BASELINE:,} (default 0: no prefill)",
    )
    p.add_argument(
        "--entry-bytes",
        type=int,
        default=ENGINE_ENTRY_BYTES,
        help=f"bytes per entry (default {ENGINE_ENTRY_BYTES})",
    )
    p.add_argument(
        "--proofs",
        type=int,
        default=ENGINE_PROOFS,
        help=f"inclusion-proof lookups timed per size (default {ENGINE_PROOFS:,})",
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="with --storage fs: directory for the logs (default: a temporary one)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p
