"""Harness for end-to-end tests: a real `sigstack up` process and the real client CLIs.

`sigstack up` runs as a subprocess on free loopback ports in a temporary directory;
clients run as subprocesses with HOME/XDG dirs pointed into the test's own directory,
so their TUF caches never leak between tests or into the user's home.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sigstack.ops.bench.procs import free_ports

SERVICES = ("oidc", "ctlog", "fulcio", "rekor", "tsa", "tuf")
READY_TIMEOUT = 90.0


@dataclass
class StackProcess:
    """One `sigstack up` subprocess and what it printed."""

    data_dir: Path
    ports: dict[str, int]
    env: dict[str, str]
    proc: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    ready_seconds: float = 0.0

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def start(
        self, extra_env: dict[str, str] | None = None, extra_args: tuple[str, ...] = ()
    ) -> None:
        """Start `sigstack up`; ``extra_env`` is added to the stack's environment only,
        ``extra_args`` to its command line."""
        args = [
            sys.executable,
            "-m",
            "sigstack",
            "up",
            "--data-dir",
            str(self.data_dir),
            "--host",
            "127.0.0.1",
        ]
        for service, port in self.ports.items():
            args += [f"--{service}-port", str(port)]
        args += extra_args
        started = time.monotonic()
        self.output = []
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**self.env, "COLUMNS": "200", "NO_COLOR": "1", **(extra_env or {})},
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                if "sigstack is ready" in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = started + READY_TIMEOUT
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("sigstack up did not become ready:\n" + "".join(self.output))
        self.ready_seconds = time.monotonic() - started

    def stop(self, signals: int = 1) -> int:
        """SIGTERM the stack (``signals`` times, 50 ms apart) and return its exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            for i in range(signals):
                if i:
                    time.sleep(0.05)
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL the stack (a crash: nothing gets to clean up) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc = None

    def sigstack(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sigstack", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def token(self, email: str) -> str:
        res = self.sigstack("token", "--data-dir", str(self.data_dir), "--email", email)
        assert res.returncode == 0, res.stderr
        token = res.stdout.strip()
        assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", token), "token is not a compact JWT"
        return token


def client_env(root: Path) -> dict[str, str]:
    """An environment whose HOME and XDG dirs live under ``root``."""
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGSTORE_", "SIGSTACK_"))}
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_CONFIG_HOME=str(home / ".config"),
    )
    return env


def run_sigstore(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real sigstore-python CLI (installed in this environment)."""
    return subprocess.run(
        [sys.executable, "-m", "sigstore", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
    )


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[StackProcess]:
    ports = dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
    stack = StackProcess(tmp_path / "state", ports, client_env(tmp_path))
    try:
        yield stack
    finally:
        stack.stop()
