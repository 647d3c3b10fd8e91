"""`sigstack fsck` as a user runs it: over HTTP against a running stack, then at rest.

The logs are filled by the real sigstore-python client (a signature puts a
certificate in the CT log and an entry in Rekor v2), then damaged on disk to show
that the command notices and says where.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sigstack.core.note import Ed25519NoteVerifier

from .conftest import StackProcess, run_sigstore

pytestmark = pytest.mark.e2e


def _fsck(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any] | None, str]:
    """Run `sigstack fsck ... --json`: (exit status, parsed JSON or None, stderr)."""
    res = subprocess.run(
        [sys.executable, "-m", "sigstack", "fsck", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(res.stdout) if res.stdout.strip() else None
    return res.returncode, report, res.stderr


def _sign(stack: StackProcess, tmp_path: Path, n: int) -> None:
    config = str(stack.data_dir / "client" / "trust_config.json")
    token = stack.token("fsck@example.com")
    for i in range(n):
        artifact = tmp_path / f"artifact-{i}.txt"
        artifact.write_text(f"checked by fsck {i}\n")
        res = run_sigstore(
            stack.env,
            "--trust-config",
            config,
            "sign",
            "--identity-token",
            token,
            "--bundle",
            str(tmp_path / f"artifact-{i}.json"),
            str(artifact),
        )
        assert res.returncode == 0, res.stdout + res.stderr


def _ct_url(trust_config: Path) -> str:
    root = json.loads(trust_config.read_text())["trustedRoot"]
    (ctlog,) = root["ctlogs"]
    return str(ctlog["baseUrl"])


def test_fsck_checks_served_and_resting_logs_and_finds_damage(
    stack_factory: StackProcess, tmp_path: Path
) -> None:
    stack = stack_factory
    stack.start()
    _sign(stack, tmp_path, 3)
    trust_config = stack.data_dir / "client" / "trust_config.json"

    code, report, err = _fsck(
        stack.env, "--url", stack.url("rekor"), "--trusted-root", str(trust_config)
    )
    assert code == 0, err
    assert report is not None and report["ok"] is True
    served_rekor = report["logs"]["rekor"]
    assert served_rekor["size"] >= 4  # the genesis entry and three signatures
    assert served_rekor["problems"] == []

    code, report, err = _fsck(
        stack.env,
        "--url",
        _ct_url(trust_config),
        "--log",
        "ctlog",
        "--trusted-root",
        str(trust_config),
    )
    assert code == 0, err
    assert report is not None and report["ok"] is True
    served_ct = report["logs"]["ctlog"]
    assert served_ct["size"] >= 3  # one precertificate per signature

    assert stack.stop() == 0
    code, report, err = _fsck(stack.env, "--data-dir", str(stack.data_dir))
    assert code == 0, err
    assert report is not None and report["ok"] is True
    assert set(report["logs"]) == {"rekor", "ctlog", "rekor-v1"}
    assert report["logs"]["rekor"]["size"] == served_rekor["size"]
    assert report["logs"]["rekor"]["root_hash"] == served_rekor["root_hash"]
    assert report["logs"]["ctlog"]["root_hash"] == served_ct["root_hash"]
    assert report["logs"]["rekor"]["index_checked"] is True

    # Damage the level-0 tile the checkpoint covers (a new stack's log is smaller than
    # one full tile, so it is the partial tile of its size): fsck must fail and name it.
    size = served_rekor["size"]
    assert size < 256
    tile = stack.data_dir / "logs" / "rekor" / "tile" / "0" / "000.p" / str(size)
    data = bytearray(tile.read_bytes())
    data[0] ^= 0x01
    tile.write_bytes(bytes(data))
    code, report, _ = _fsck(stack.env, "--data-dir", str(stack.data_dir), "--log", "rekor")
    assert code == 1
    assert report is not None and report["ok"] is False
    problems = report["logs"]["rekor"]["problems"]
    assert problems and any(p.startswith(f"tile/0/000.p/{size}") for p in problems), problems


def test_fsck_over_http_refuses_a_key_the_log_does_not_sign_with(
    stack_factory: StackProcess, tmp_path: Path
) -> None:
    stack = stack_factory
    stack.start()
    trust_config = stack.data_dir / "client" / "trust_config.json"

    code, report, err = _fsck(stack.env, "--url", stack.url("rekor"))
    assert code == 1 and report is None
    assert "--url needs --trusted-root" in err

    code, report, err = _fsck(
        stack.env,
        "--url",
        stack.url("rekor"),
        "--log",
        "rekor-v1",
        "--trusted-root",
        str(trust_config),
    )
    assert code == 1 and "tile read path" in err

    # The same trust config with the Rekor v2 key (and its log ID) swapped for a
    # stranger's: the served checkpoint must not verify.
    doc = json.loads(trust_config.read_text())
    stranger = Ed25519PrivateKey.generate().public_key()
    spki = stranger.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    origin = httpx.get(stack.url("rekor") + "/api/v2/checkpoint", trust_env=False).text.split(
        "\n", 1
    )[0]
    key_id = Ed25519NoteVerifier(origin, stranger).key_id
    for tlog in doc["trustedRoot"]["tlogs"]:
        if tlog["publicKey"]["keyDetails"] == "PKIX_ED25519":
            tlog["publicKey"]["rawBytes"] = base64.b64encode(spki).decode()
            tlog["logId"]["keyId"] = base64.b64encode(key_id).decode()
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(doc))
    code, report, err = _fsck(stack.env, "--url", stack.url("rekor"), "--trusted-root", str(forged))
    assert code == 1, err
    assert report is not None and report["ok"] is False
    (problem,) = report["logs"]["rekor"]["problems"]
    assert problem.startswith("checkpoint: does not verify with the log's key"), problem
