"""Processes for the benchmarks: a throw-away ``sigstack up`` and /proc readings.

:class:`ThrowawayStack` runs ``sigstack up`` as a child process on free loopback
ports in a state directory of the caller's choosing, reports when it printed its
ready line, and stops it with SIGTERM (clean) or SIGKILL (a crash, for the crash
test). :class:`ProcessMeter` reads a process's CPU time (``utime + stime`` from
``/proc/<pid>/stat``) and memory (``VmRSS``, ``VmHWM`` from ``/proc/<pid>/status``)
so a benchmark can report CPU as a percentage of one core over its measured
window. Linux only; elsewhere the readings are absent (``None``), never guessed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from sigstack.core.errors import Unavailable
from sigstack.stack.config import SERVICES

READY_LINE = "sigstack is ready"
"""What ``sigstack up`` prints once every service answers its health check."""

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports that were free on 127.0.0.1 a moment ago."""
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


class ThrowawayStack:
    """One ``sigstack up`` child process on loopback (see the module docstring)."""

    def __init__(
        self,
        data_dir: Path,
        ports: dict[str, int] | None = None,
        env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        self.extra_args = extra_args
        self.ports = ports or dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def url(self, service: str) -> str:
        """Base URL of ``service`` (``http://127.0.0.1:<port>``)."""
        return f"http://127.0.0.1:{self.ports[service]}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise Unavailable("the stack is not running")
        return self.proc.pid

    def start(self, timeout: float = 120.0) -> float:
        """Launch ``sigstack up``; return the seconds until it printed its ready line.

        Raises :class:`Unavailable` with the last lines it printed if it exits or
        is not ready within ``timeout``.
        """
        args = [sys.executable, "-m", "sigstack", "up", "--data-dir", str(self.data_dir)]
        for service, port in self.ports.items():
            args += [f"--{service}-port", str(port)]
        args += self.extra_args
        started = time.perf_counter()
        self.output = []
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**(self.env if self.env is not None else os.environ), "NO_COLOR": "1"},
        )
        ready = threading.Event()
        proc, output = self.proc, self.output

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                output.append(line)
                if READY_LINE in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        while not ready.wait(0.01):
            if proc.poll() is not None or time.perf_counter() - started > timeout:
                self.kill()
                raise Unavailable("sigstack up did not become ready:\n" + "".join(output[-20:]))
        return time.perf_counter() - started

    def memory_kib(self) -> dict[str, int]:
        """``VmRSS`` and ``VmHWM`` of the stack process, in KiB."""
        return read_memory_kib(self.pid)

    def stop(self) -> float:
        """SIGTERM the stack and wait (SIGKILL after 30 s); return the seconds it took."""
        if self.proc is None:
            return 0.0
        started = time.perf_counter()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        return time.perf_counter() - started

    def kill(self) -> None:
        """SIGKILL the stack (a crash: nothing gets to clean up) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc = None


def read_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds the process has used (``/proc/<pid>/stat``)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = raw.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def read_memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` in KiB from ``/proc/<pid>/status`` (empty if unreadable)."""
    fields: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def child_pids(pid: int) -> list[int]:
    """The child processes of ``pid`` (``/proc/<pid>/task/*/children``; [] if unreadable)."""
    children: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return children
    for task in tasks:
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (a stack's Rekor frontends are its children)."""
    return [pid, *child_pids(pid)]


def tree_memory_kib(pid: int) -> dict[str, int]:
    """:func:`read_memory_kib` summed over ``pid`` and its children."""
    total: dict[str, int] = {}
    for member in process_tree(pid):
        for key, value in read_memory_kib(member).items():
            total[key] = total.get(key, 0) + value
    return total


class ProcessMeter:
    """CPU use of a process and its children over a window, as a percentage of one
    core (above 100: more than one core busy)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._cpu0: dict[int, float] = {}
        self._wall0 = 0.0
        self.processes = 0
        """Processes measured (the last reading)."""

    def _readings(self) -> dict[int, float]:
        readings = {}
        for member in process_tree(self.pid):
            cpu = read_cpu_seconds(member)
            if cpu is not None:
                readings[member] = cpu
        return readings

    def start(self) -> None:
        self._cpu0 = self._readings()
        self._wall0 = time.monotonic()

    def cpu_percent(self) -> float | None:
        """CPU% since ``start()`` (100 = one core busy), or None if unreadable.

        A child that started during the window counts with all its CPU; one that
        ended during it counts with none (its time is no longer readable).
        """
        readings = self._readings()
        wall = time.monotonic() - self._wall0
        self.processes = len(readings)
        if self.pid not in readings or self.pid not in self._cpu0 or wall <= 0:
            return None
        used = sum(cpu - self._cpu0.get(member, 0.0) for member, cpu in readings.items())
        return round(used / wall * 100, 1)
