"""How `sigstack up` behaves as a process: environment proxies, repeated signals."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import StackProcess, run_sigstore

pytestmark = pytest.mark.e2e


def test_proxy_settings_do_not_break_calls_between_services(
    stack_factory: StackProcess, tmp_path: Path
) -> None:
    """With HTTP_PROXY pointing nowhere, the stack starts and Fulcio still reaches the CT log."""
    stack = stack_factory
    dead_proxy = "http://127.0.0.1:9"
    stack.start(extra_env={"HTTP_PROXY": dead_proxy, "http_proxy": dead_proxy})
    artifact = tmp_path / "a.txt"
    artifact.write_text("through no proxy\n")
    config = str(stack.data_dir / "client" / "trust_config.json")
    res = run_sigstore(
        stack.env,
        "--trust-config",
        config,
        "sign",
        "--identity-token",
        stack.token("alice@example.com"),
        "--bundle",
        str(tmp_path / "a.json"),
        str(artifact),
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_repeated_sigterm_still_stops_cleanly(stack_factory: StackProcess) -> None:
    stack = stack_factory
    stack.start()
    assert stack.stop(signals=2) == 0, "".join(stack.output)
    assert any("stopped cleanly" in line for line in stack.output)
