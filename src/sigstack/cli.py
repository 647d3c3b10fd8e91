"""The ``sigstack`` command line.

    sigstack up     [--data-dir DIR] [--host H] [--base-port N] [--<service>-port N] ...
    sigstack init   [--data-dir DIR] ...        create (or verify) the state, serve nothing
    sigstack token  [--data-dir DIR] --email E  print a fresh ID token from the built-in issuer
    sigstack bench stack [--runs N] [--json]    measure start-up, sign, verify and memory
    sigstack bench rekor [--url URL] [--rate R] [--duration S] [--writers W] [--readers N] [--json]
                                                load Rekor v2 over HTTP: writes/s, time-to-integrate
    sigstack bench engine [--entries N] [--storage memory|fs] [--prefill M] [--json]
                                                the log engine alone: entries/s, proof latency
    sigstack serve rekor [--data-dir DIR] --port N [--log-storage postgresql://...] ...
                                                serve Rekor alone, one of many frontends
    sigstack fsck   [--data-dir DIR] [--log NAME|all] [--url URL --trusted-root F] [--json]
                                                check a log: tiles, bundles and signed root
    sigstack version

Exit status: 0 on success, 1 on an error sigstack explains (the message names what is
wrong and what to do), 2 on bad usage, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from sigstack import __version__
from sigstack.core.errors import SigstackError
from sigstack.core.net import port_number
from sigstack.stack.config import SERVICES

DATA_DIR_ENV = "SIGSTACK_DATA_DIR"


def default_data_dir() -> Path:
    """``$SIGSTACK_DATA_DIR``, else ``$XDG_DATA_HOME/sigstack``, else ~/.local/share/sigstack."""
    if env := os.environ.get(DATA_DIR_ENV):
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "sigstack"


def _add_state_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"state directory (default: ${DATA_DIR_ENV} or ~/.local/share/sigstack)",
    )
    p.add_argument(
        "--passphrase-file",
        type=Path,
        default=None,
        help="file holding the key passphrase (default: $SIGSTACK_PASSPHRASE, or a "
        "passphrase generated into DIR/secrets at first init)",
    )


def _add_network_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host",
        default=None,
        help="loopback address to serve on and put in URLs: 127.0.0.1 (default), ::1, localhost",
    )
    p.add_argument(
        "--base-port", type=port_number, default=None, help="first port of the block (default 7700)"
    )
    for service in SERVICES:
        p.add_argument(
            f"--{service}-port", type=port_number, default=None, help=f"port for {service}"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sigstack", description="A complete private Sigstore in one command."
    )
    parser.add_argument("--version", action="version", version=f"sigstack {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="create the stack on first run, then serve every service")
    _add_state_options(up)
    _add_network_options(up)
    up.add_argument("--verbose", "-v", action="store_true", help="log requests and details")
    up.add_argument(
        "--rekor-frontends",
        type=int,
        default=0,
        metavar="N",
        help="serve Rekor's port from N more processes beside this one; they verify "
        "entries and hand them to this process, the only one that sequences and signs "
        "the log: more cores for Rekor (default 0)",
    )

    init = sub.add_parser("init", help="create the state if absent (or verify it) and exit")
    _add_state_options(init)
    _add_network_options(init)

    token = sub.add_parser("token", help="print an ID token from the built-in OIDC issuer")
    _add_state_options(token)
    token.add_argument("--email", help="identity (email claim, and sub unless --subject)")
    token.add_argument("--subject", help="sub claim (default: the email)")
    token.add_argument("--audience", default="sigstore", help="aud claim (default: sigstore)")
    token.add_argument("--lifetime", type=int, default=None, help="seconds until expiry")

    bench = sub.add_parser(
        "bench", help="benchmarks: stack, rekor, engine (see `sigstack bench SCENARIO -h`)"
    )
    bench_sub = bench.add_subparsers(dest="scenario", required=True)
    stack_bench = bench_sub.add_parser(
        "stack", help="time to ready, sign and verify with sigstore-python, resident memory"
    )
    stack_bench.add_argument("--runs", type=int, default=5, help="sign/verify rounds (median)")
    stack_bench.add_argument("--json", action="store_true", help="print one JSON object")
    from sigstack.ops.bench import options as bench_options

    bench_options.add_rekor_parser(bench_sub)
    bench_options.add_engine_parser(bench_sub)

    from sigstack.ops import fsck_options
    from sigstack.ops import serve as serve_cmd

    serve_cmd.add_arguments(
        sub.add_parser(
            "serve",
            help="serve one service of an existing stack on its own (Rekor, on PostgreSQL)",
            description="Serve one service of an existing stack, as one of many frontends.",
        )
    )
    fsck_options.add_arguments(
        sub.add_parser(
            "fsck",
            help="check a log at rest or served: every tile, bundle and the signed root",
            description="Re-derive a log's tiles and root from its entries and verify them.",
        )
    )

    sub.add_parser("version", help="print the version")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"sigstack {__version__}")
        return 0
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if getattr(args, "data_dir", "") is None:
        args.data_dir = default_data_dir()
    try:
        if args.command == "bench":
            from sigstack.ops import bench

            runner = {
                "stack": bench.run_stack_bench,
                "rekor": bench.run_rekor_bench,
                "engine": bench.run_engine_bench,
            }[args.scenario]
            return runner(args)
        if args.command == "up":
            from sigstack.stack.up import run_up

            return asyncio.run(run_up(args))
        if args.command == "init":
            from sigstack.stack.up import run_init

            return run_init(args)
        if args.command == "serve":
            from sigstack.ops.serve import run_serve

            return run_serve(args)
        if args.command == "fsck":
            from sigstack.ops.fsck import run_fsck

            return run_fsck(args)
        if args.command == "token":
            from sigstack.stack.up import run_token

            return run_token(args)
    except SigstackError as exc:
        print(f"sigstack: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
