"""Command-line options of ``sigstack fsck`` (see :mod:`sigstack.ops.fsck`).

Kept apart from the checker so that building the CLI parser imports neither the
log code nor an HTTP client.
"""

from __future__ import annotations

import argparse
from pathlib import Path

LOGS = ("rekor", "ctlog", "rekor-v1")
"""The logs of a stack, checked at rest."""
HTTP_LOGS = ("rekor", "ctlog")
"""The logs with a tile read path, checked over HTTP (Rekor v1 has none)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``sigstack fsck``."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="stack state directory, checked at rest "
        "(default: $SIGSTACK_DATA_DIR or ~/.local/share/sigstack)",
    )
    parser.add_argument(
        "--log", choices=[*LOGS, "all"], default=None, help="which log (default: all at rest)"
    )
    parser.add_argument(
        "--url",
        default=None,
        help="check the log served at this base URL instead (Rekor: the service's base "
        "URL; CT: the log's URL prefix)",
    )
    parser.add_argument(
        "--trusted-root",
        type=Path,
        default=None,
        help="trusted_root.json or a client trust config naming the log's key (with --url)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
