"""`sigstack bench stack`: how fast a stack starts, signs and verifies, and its memory.

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
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sigstack.core.errors import Unavailable
from sigstack.stack.config import SERVICES

READY_LINE = "sigstack is ready"


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class _Stack:
    def __init__(self, data_dir: Path, ports: dict[str, int]) -> None:
        self.data_dir = data_dir
        self.ports = ports
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 120.0) -> float:
        args = [sys.executable, "-m", "sigstack", "up", "--data-dir", str(self.data_dir)]
        for service, port in self.ports.items():
            args += [f"--{service}-port", str(port)]
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "NO_COLOR": "1"},
        )
        ready = threading.Event()
        output: list[str] = []

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                output.append(line)
                if READY_LINE in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        while not ready.wait(0.01):
            if self.proc.poll() is not None or time.perf_counter() - started > timeout:
                self.stop()
                raise Unavailable("sigstack up did not become ready:\n" + "".join(output[-20:]))
        return time.perf_counter() - started

    def memory_kib(self) -> dict[str, int]:
        assert self.proc is not None
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
        return fields

    def stop(self) -> float:
        if self.proc is None:
            return 0.0
        started = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        return time.perf_counter() - started


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 1)


def _client_figures(stack: _Stack, runs: int, token: str) -> dict[str, Any]:
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

    cli_sign, cli_verify = [], []
    for i in range(runs):
        artifact = work / f"artifact-{i}.txt"
        artifact.write_text(f"benchmark artifact {i}\n")
        bundle = work / f"artifact-{i}.sigstore.json"
        t = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "sigstore",
                "--trust-config",
                str(trust_config),
                "sign",
                "--identity-token",
                token,
                "--bundle",
                str(bundle),
                str(artifact),
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        cli_sign.append(time.perf_counter() - t)
        t = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "sigstore",
                "--trust-config",
                str(trust_config),
                "verify",
                "identity",
                "--bundle",
                str(bundle),
                "--cert-identity",
                "bench@example.com",
                "--cert-oidc-issuer",
                issuer,
                str(artifact),
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        cli_verify.append(time.perf_counter() - t)

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
        stack = _Stack(
            Path(tmp) / "state", dict(zip(SERVICES, _free_ports(len(SERVICES)), strict=True))
        )
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
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
    return 0
