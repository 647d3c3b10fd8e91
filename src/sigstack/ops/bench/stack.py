"""``sigstack bench stack``: how fast a stack starts, signs and verifies, and its memory.

Measured on a throw-away stack (a temporary state directory, free loopback ports),
driven the way users drive it:

* time from launching ``sigstack up`` to its "ready" line, on the first run (which
  creates all trust material) and on a restart (which loads and verifies it);
* one sign and one verify with the real sigstore-python client, both as CLI
  processes (what a user waits for, interpreter start-up included) and as library
  calls in this process (the round trips to the stack: Fulcio, CT log, TSA, Rekor);
* the stack process's resident memory (VmRSS) and peak (VmHWM) after signing.

Client figures need sigstore-python (``pip install sigstore``); without it they are
reported as absent, never guessed. Prints a table, or one JSON object with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sigstack.ops.bench.procs import ThrowawayStack
from sigstack.ops.bench.report import print_table


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 1)


def _client_figures(stack: ThrowawayStack, runs: int, token: str) -> dict[str, Any]:
    try:
        from sigstore.models import Bundle, ClientTrustConfig
        from sigstore.oidc import IdentityToken
        from sigstore.sign import SigningContext
        from sigstore.verify import Verifier
        from sigstore.verify.policy import Identity
    except ImportError:
        return {"client": "sigstore-python not installed; no client figures"}
    trust_config = stack.data_dir / "client" / "trust_config.json"
    issuer = f"http://127.0.0.1:{stack.ports['oidc']}"
    work = Path(tempfile.mkdtemp(prefix="sigstack-bench-"))
    env = {
        **os.environ,
        "HOME": str(work),
        "XDG_CACHE_HOME": str(work / "c"),
        "XDG_DATA_HOME": str(work / "d"),
    }

    def cli(*arguments: str) -> float:
        """Seconds one ``sigstore`` CLI process takes (it must succeed)."""
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "sigstore", "--trust-config", str(trust_config), *arguments],
            env=env,
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - t

    cli_sign, cli_verify = [], []
    for i in range(runs):
        artifact = work / f"artifact-{i}.txt"
        artifact.write_text(f"benchmark artifact {i}\n")
        bundle = str(work / f"artifact-{i}.sigstore.json")
        cli_sign.append(cli("sign", "--identity-token", token, "--bundle", bundle, str(artifact)))
        cli_verify.append(
            cli(
                "verify",
                "identity",
                "--bundle",
                bundle,
                "--cert-identity",
                "bench@example.com",
                "--cert-oidc-issuer",
                issuer,
                str(artifact),
            )
        )

    config = ClientTrustConfig.from_json(trust_config.read_text())
    context = SigningContext.from_trust_config(config)
    verifier = Verifier(trusted_root=config.trusted_root)
    policy = Identity(identity="bench@example.com", issuer=issuer)
    lib_sign, lib_verify = [], []
    for i in range(runs):
        payload = f"library artifact {i}".encode()
        t = time.perf_counter()
        with context.signer(IdentityToken(token)) as signer:
            signed = signer.sign_artifact(payload)
        lib_sign.append(time.perf_counter() - t)
        parsed = Bundle.from_json(signed.to_json())
        t = time.perf_counter()
        verifier.verify_artifact(payload, parsed, policy)
        lib_verify.append(time.perf_counter() - t)
    return {
        "runs": runs,
        "cli_sign_ms": _median_ms(cli_sign),
        "cli_verify_ms": _median_ms(cli_verify),
        "library_sign_ms": _median_ms(lib_sign),
        "library_verify_ms": _median_ms(lib_verify),
    }


def run_stack_bench(args: argparse.Namespace) -> int:
    """Run the benchmark and print its figures."""
    runs = max(1, args.runs)
    with tempfile.TemporaryDirectory(prefix="sigstack-bench-") as tmp:
        stack = ThrowawayStack(Path(tmp) / "state")
        result: dict[str, Any] = {}
        try:
            result["first_start_to_ready_s"] = round(stack.start(), 3)
            result["stop_s"] = round(stack.stop(), 3)
            restarts = []
            for _ in range(3):
                restarts.append(stack.start())
                if len(restarts) < 3:
                    stack.stop()
            result["restart_to_ready_s"] = round(statistics.median(restarts), 3)
            token = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "sigstack",
                    "token",
                    "--data-dir",
                    str(stack.data_dir),
                    "--email",
                    "bench@example.com",
                    "--lifetime",
                    "3600",
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            result.update(_client_figures(stack, runs, token))
            memory = stack.memory_kib()
            result["stack_rss_mib"] = round(memory["VmRSS"] / 1024, 1)
            result["stack_peak_rss_mib"] = round(memory["VmHWM"] / 1024, 1)
        finally:
            stack.stop()
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0
