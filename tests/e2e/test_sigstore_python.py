"""sigstore-python 4.5 signs and verifies against a real `sigstack up`, unmodified.

Covers both ways a client is pointed at a private instance: TUF (`--instance URL`
after `trust-instance root.json`) and `--trust-config`. Each positive verification
is paired with negatives that must fail: a wrong identity, a wrong issuer, a
modified artifact.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import httpx
import pytest

from .conftest import StackProcess, run_sigstore

pytestmark = pytest.mark.e2e

ALICE = "alice@example.com"


def _sign(
    env: dict[str, str], instance: list[str], token: str, artifact: Path, bundle: Path
) -> None:
    res = run_sigstore(
        env, *instance, "sign", "--identity-token", token, "--bundle", str(bundle), str(artifact)
    )
    assert res.returncode == 0, f"sign failed:\n{res.stdout}\n{res.stderr}"
    assert bundle.exists()


def _verify(
    env: dict[str, str],
    instance: list[str],
    bundle: Path,
    artifact: Path,
    identity: str,
    issuer: str,
) -> tuple[int, str]:
    res = run_sigstore(
        env,
        *instance,
        "verify",
        "identity",
        "--bundle",
        str(bundle),
        "--cert-identity",
        identity,
        "--cert-oidc-issuer",
        issuer,
        str(artifact),
    )
    return res.returncode, res.stdout + res.stderr


def _log_entry(bundle: Path) -> dict:
    doc = json.loads(bundle.read_text())
    (entry,) = doc["verificationMaterial"]["tlogEntries"]
    return entry


def _check_sign_and_verify(stack: StackProcess, tmp_path: Path, instance: list[str]) -> None:
    artifact = tmp_path / "artifact.txt"
    artifact.write_text("hello from sigstack\n")
    bundle = tmp_path / "artifact.sigstore.json"
    issuer = stack.url("oidc")

    _sign(stack.env, instance, stack.token(ALICE), artifact, bundle)

    entry = _log_entry(bundle)
    # Rekor v2 is what the client picked: hashedrekord 0.0.2 with no SET.
    assert entry["kindVersion"] == {"kind": "hashedrekord", "version": "0.0.2"}
    assert "inclusionPromise" not in entry
    doc = json.loads(bundle.read_text())
    assert doc["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"], (
        "Rekor v2 bundles need a TSA timestamp"
    )

    code, out = _verify(stack.env, instance, bundle, artifact, ALICE, issuer)
    assert code == 0, f"verification failed:\n{out}"

    code, out = _verify(stack.env, instance, bundle, artifact, "mallory@example.com", issuer)
    assert code != 0 and "SAN" in out, f"wrong identity was accepted:\n{out}"

    code, out = _verify(stack.env, instance, bundle, artifact, ALICE, "https://issuer.example.com")
    assert code != 0, f"wrong issuer was accepted:\n{out}"

    tampered = tmp_path / "tampered.txt"
    tampered.write_text("hello from sigstack!\n")
    code, out = _verify(stack.env, instance, bundle, tampered, ALICE, issuer)
    assert code != 0, f"modified artifact was accepted:\n{out}"


def test_sign_and_verify_through_tuf(stack_factory: StackProcess, tmp_path: Path) -> None:
    stack = stack_factory
    stack.start()
    tuf = stack.url("tuf")
    res = run_sigstore(
        stack.env, "--instance", tuf, "trust-instance", str(stack.data_dir / "client" / "root.json")
    )
    assert res.returncode == 0, res.stderr
    _check_sign_and_verify(stack, tmp_path, ["--instance", tuf])


def test_sign_and_verify_with_trust_config(stack_factory: StackProcess, tmp_path: Path) -> None:
    stack = stack_factory
    stack.start()
    config = str(stack.data_dir / "client" / "trust_config.json")
    _check_sign_and_verify(stack, tmp_path, ["--trust-config", config])


def _tile_index(n: int) -> str:
    """C2SP tlog-tiles path encoding of a tile index (written independently of sigstack)."""
    digits = f"{n:03d}"
    while len(digits) % 3:
        digits = "0" + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([f"x{g}" for g in groups[:-1]] + [groups[-1]])


def _served_entry(rekor: str, index: int) -> bytes:
    """Entry ``index`` as served in Rekor's entry bundles for the current checkpoint."""
    checkpoint = httpx.get(f"{rekor}/api/v2/checkpoint").text
    size = int(checkpoint.split("\n")[1])
    bundle_index = index // 256
    width = min(256, size - bundle_index * 256)
    path = f"{rekor}/api/v2/tile/entries/{_tile_index(bundle_index)}"
    if width < 256:
        path += f".p/{width}"
    resp = httpx.get(path)
    assert resp.status_code == 200, resp.text
    data, entries = resp.content, []
    while data:
        length = int.from_bytes(data[:2], "big")
        entries.append(data[2 : 2 + length])
        data = data[2 + length :]
    assert len(entries) == width
    return entries[index % 256]


def _trust_material(data_dir: Path) -> dict[str, str]:
    """Fingerprints of everything clients trust, and of every key's public half."""
    out = {}
    tuf_targets = data_dir / "tuf" / "targets"
    for path in sorted(
        [
            data_dir / "client" / "root.json",
            data_dir / "sigstack.json",
            *(data_dir / "certs").glob("*.pem"),
            *tuf_targets.glob("*.trusted_root.json"),
        ]
    ):
        out[str(path.relative_to(data_dir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    # sigstack.json pins every key's SPKI fingerprint, so equal manifests mean equal keys.
    return out


def test_restart_keeps_trust_and_old_bundles_verify(
    stack_factory: StackProcess, tmp_path: Path
) -> None:
    stack = stack_factory
    stack.start()
    config = ["--trust-config", str(stack.data_dir / "client" / "trust_config.json")]
    artifact = tmp_path / "first.txt"
    artifact.write_text("signed before the restart\n")
    first = tmp_path / "first.sigstore.json"
    _sign(stack.env, config, stack.token(ALICE), artifact, first)
    before = _trust_material(stack.data_dir)
    trust_config_before = (stack.data_dir / "client" / "trust_config.json").read_bytes()

    assert stack.stop() == 0, "sigstack up did not exit cleanly on SIGTERM"
    stack.start()

    assert _trust_material(stack.data_dir) == before
    assert (stack.data_dir / "client" / "trust_config.json").read_bytes() == trust_config_before
    code, out = _verify(stack.env, config, first, artifact, ALICE, stack.url("oidc"))
    assert code == 0, f"a bundle from before the restart no longer verifies:\n{out}"

    second_artifact = tmp_path / "second.txt"
    second_artifact.write_text("signed after the restart\n")
    second = tmp_path / "second.sigstore.json"
    _sign(stack.env, config, stack.token(ALICE), second_artifact, second)
    assert int(_log_entry(second)["logIndex"]) > int(_log_entry(first)["logIndex"])

    # The first entry is still in the log as served after the restart (C2SP read path).
    body = base64.b64decode(_log_entry(first)["canonicalizedBody"])
    assert _served_entry(stack.url("rekor"), int(_log_entry(first)["logIndex"])) == body
    code, out = _verify(stack.env, config, second, second_artifact, ALICE, stack.url("oidc"))
    assert code == 0, out


SLSA_PREDICATE = {
    "buildDefinition": {"buildType": "https://example.com/build", "externalParameters": {}},
    "runDetails": {"builder": {"id": "https://example.com/builder"}},
}


def test_attest_dsse_through_rekor_v2(stack_factory: StackProcess, tmp_path: Path) -> None:
    """DSSE the way sigstore-python sends it to Rekor v2: a hashedrekord over the PAE."""
    stack = stack_factory
    stack.start()
    config = ["--trust-config", str(stack.data_dir / "client" / "trust_config.json")]
    artifact = tmp_path / "built.tar.gz"
    artifact.write_bytes(b"pretend this is a release\n")
    predicate = tmp_path / "provenance.json"
    predicate.write_text(json.dumps(SLSA_PREDICATE))
    bundle = tmp_path / "built.intoto.sigstore.json"
    res = run_sigstore(
        stack.env,
        *config,
        "attest",
        "--predicate",
        str(predicate),
        "--predicate-type",
        "https://slsa.dev/provenance/v1",
        "--identity-token",
        stack.token(ALICE),
        "--bundle",
        str(bundle),
        str(artifact),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(bundle.read_text())
    assert "dsseEnvelope" in doc
    assert _log_entry(bundle)["kindVersion"] == {"kind": "hashedrekord", "version": "0.0.2"}

    code, out = _verify(stack.env, config, bundle, artifact, ALICE, stack.url("oidc"))
    assert code == 0, out
    other = tmp_path / "other.tar.gz"
    other.write_bytes(b"a different release\n")
    code, out = _verify(stack.env, config, bundle, other, ALICE, stack.url("oidc"))
    assert code != 0, f"attestation verified for the wrong artifact:\n{out}"
