"""Client compatibility: sigstore-python and sigstore-js sign, attest and verify each
other's bundles against one sigstack instance, on Rekor v1 and v2.

Every bundle either client makes is verified by both clients (through TUF and, for
Python, through --trust-config too; for JS, by the library and by the `@sigstore/cli
verify` command), and each verifier is shown to refuse a wrong identity, a wrong
issuer, a tampered artifact and a tampered bundle. Where a
client cannot verify an entry kind at all (sigstore-python 4.5 has no verifier for
intoto 0.0.2 or dsse 0.0.2 entries), the test pins that refusal and its reason, so a
client upgrade that adds support shows up here.

The JS clients come from tests/interop/js (pinned in its lockfile; `npm ci` runs once
per session when node_modules is missing).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import SERVICES, StackProcess, client_env, free_ports, run_sigstore

pytestmark = pytest.mark.e2e

JS_DIR = Path(__file__).parent.parent / "interop" / "js"
ALICE = "alice@example.com"


@pytest.fixture(scope="module")
def js() -> Path:
    """The JS clients, installed from the lockfile (skipped only where node is absent)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the sigstore-js suite (install Node.js >= 20)")
    if not (JS_DIR / "node_modules" / "sigstore").exists():
        res = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert res.returncode == 0, f"npm ci failed:\n{res.stdout}\n{res.stderr}"
    return JS_DIR


@dataclass
class Instance:
    stack: StackProcess
    work: Path
    token: str

    @property
    def trust_config(self) -> Path:
        return self.stack.data_dir / "client" / "trust_config.json"

    @property
    def issuer(self) -> str:
        return self.stack.url("oidc")

    def js_env(self) -> dict[str, str]:
        return {
            **self.stack.env,
            "FULCIO_URL": self.stack.url("fulcio"),
            "REKOR_URL": self.stack.url("rekor"),
            "TSA_URL": self.stack.url("tsa") + "/api/v1/timestamp",
            "OIDC_TOKEN": self.token,
            "TUF_MIRROR": self.stack.url("tuf"),
            "TUF_ROOT": str(self.stack.data_dir / "client" / "root.json"),
            "TUF_CACHE": str(self.work / "js-tuf-cache"),
            "CI": "true",
            "SIGSTORE_ID_TOKEN": self.token,
        }


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    root = tmp_path_factory.mktemp("compat")
    ports = dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
    env = {**client_env(root), "COLUMNS": "1000"}  # no wrapped client error messages
    stack = StackProcess(root / "state", ports, env)
    stack.start()
    try:
        inst = Instance(stack, root, stack.token(ALICE))
        res = run_sigstore(
            stack.env,
            "--instance",
            stack.url("tuf"),
            "trust-instance",
            str(root / "state" / "client" / "root.json"),
        )
        assert res.returncode == 0, res.stderr
        yield inst
    finally:
        stack.stop()


# --- the two clients ---------------------------------------------------------------------


def _artifact(inst: Instance, name: str) -> Path:
    path = inst.work / f"{name}.txt"
    path.write_text(f"artifact {name}\n")
    return path


def py_sign(
    inst: Instance, name: str, rekor: int, attest: bool = False, *, tuf: bool = False
) -> tuple[Path, Path]:
    """Sign (or attest) with the sigstore-python CLI, through TUF or the trust config."""
    artifact = _artifact(inst, name)
    bundle = inst.work / f"{name}.sigstore.json"
    if tuf:
        args = ["--instance", inst.stack.url("tuf")]
    else:
        args = ["--trust-config", str(inst.trust_config)]
    if attest:
        predicate = inst.work / f"{name}.predicate.json"
        predicate.write_text(
            json.dumps(
                {
                    "buildDefinition": {
                        "buildType": "https://example.com/b",
                        "externalParameters": {},
                    },
                    "runDetails": {"builder": {"id": "https://example.com/builder"}},
                }
            )
        )
        args += [
            "attest",
            "--predicate",
            str(predicate),
            "--predicate-type",
            "https://slsa.dev/provenance/v1",
        ]
    else:
        args += ["sign"]
    args += [
        "--rekor-version",
        str(rekor),
        "--identity-token",
        inst.token,
        "--bundle",
        str(bundle),
        str(artifact),
    ]
    res = run_sigstore(inst.stack.env, *args)
    assert res.returncode == 0, res.stdout + res.stderr
    return artifact, bundle


def py_verify(
    inst: Instance,
    bundle: Path,
    artifact: Path,
    *,
    identity: str = ALICE,
    issuer: str | None = None,
    tuf: bool = False,
) -> subprocess.CompletedProcess[str]:
    instance = (
        ["--instance", inst.stack.url("tuf")] if tuf else ["--trust-config", str(inst.trust_config)]
    )
    return run_sigstore(
        inst.stack.env,
        *instance,
        "verify",
        "identity",
        "--bundle",
        str(bundle),
        "--cert-identity",
        identity,
        "--cert-oidc-issuer",
        issuer or inst.issuer,
        str(artifact),
    )


def run_js(inst: Instance, js: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(js / "sigstack-js.mjs"), *args],
        env=inst.js_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )


def js_sign(inst: Instance, js: Path, name: str, how: str) -> tuple[Path, Path]:
    artifact = _artifact(inst, name)
    bundle = inst.work / f"{name}.sigstore.json"
    config = inst.work / "signing_config.json"
    config.write_text(json.dumps(json.loads(inst.trust_config.read_text())["signingConfig"]))
    statement = inst.work / f"{name}.statement.json"
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    statement.write_text(
        json.dumps(
            {
                "_type": "https://in-toto.io/Statement/v1",
                "subject": [{"name": artifact.name, "digest": {"sha256": digest}}],
                "predicateType": "https://example.com/predicate/v1",
                "predicate": {"built": True},
            }
        )
    )
    intoto = "application/vnd.in-toto+json"
    if how == "sign":
        res = run_js(inst, js, "sign", str(artifact), str(bundle))
    elif how == "attest":
        res = run_js(inst, js, "attest", str(statement), intoto, str(bundle))
    elif how == "sign-sc":
        res = run_js(inst, js, "sign-sc", str(config), str(artifact), str(bundle))
    elif how == "attest-sc":
        res = run_js(inst, js, "attest-sc", str(config), str(statement), intoto, str(bundle))
    else:  # the @sigstore/cli command
        env = inst.js_env()
        res = subprocess.run(
            [
                str(js / "node_modules" / ".bin" / "sigstore"),
                "attest",
                str(statement),
                "--fulcio-url",
                env["FULCIO_URL"],
                "--rekor-url",
                env["REKOR_URL"],
                "--tsa-server-url",
                env["TSA_URL"],
                "--timeout",
                "30",
                "-o",
                str(bundle),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert res.returncode == 0, res.stdout + res.stderr
    return artifact, bundle


def js_verify(
    inst: Instance,
    js: Path,
    bundle: Path,
    artifact: Path | None,
    *,
    identity: str = ALICE,
    issuer: str | None = None,
    cli: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Verify with the sigstore-js library or, with ``cli``, `@sigstore/cli verify` (TUF)."""
    if not cli:
        return run_js(
            inst,
            js,
            "verify",
            str(bundle),
            str(artifact) if artifact else "-",
            identity,
            issuer or inst.issuer,
        )
    env = inst.js_env()
    blob = ["--blob-file", str(artifact)] if artifact else []
    return subprocess.run(
        [
            str(js / "node_modules" / ".bin" / "sigstore"),
            "verify",
            str(bundle),
            *blob,
            "--certificate-identity-email",
            identity,
            "--certificate-issuer",
            issuer or inst.issuer,
            "--tuf-mirror-url",
            env["TUF_MIRROR"],
            "--tuf-root-path",
            env["TUF_ROOT"],
            "--tuf-cache-path",
            str(inst.work / "js-cli-tuf-cache"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def check_js_verifiers(
    inst: Instance, js: Path, bundle: Path, artifact: Path, *, attest: bool
) -> None:
    """Both JS verifiers accept ``bundle`` and refuse each negative case.

    For an attestation the JS verifiers take no artifact (they do not check the
    statement's subject), so there is no tampered-artifact case for them.
    """
    blob = None if attest else artifact
    for cli in (False, True):
        res = js_verify(inst, js, bundle, blob, cli=cli)
        assert res.returncode == 0, res.stdout + res.stderr
        if cli:
            assert "Verification succeeded" in res.stderr, res.stderr
        wrong_identity = js_verify(inst, js, bundle, blob, identity="mallory@example.com", cli=cli)
        assert wrong_identity.returncode != 0
        wrong_issuer = js_verify(
            inst, js, bundle, blob, issuer="https://issuer.example.com", cli=cli
        )
        assert wrong_issuer.returncode != 0
        assert js_verify(inst, js, tampered(bundle), blob, cli=cli).returncode != 0
        if not attest:
            other = _artifact(inst, bundle.name.replace(".sigstore.json", "-other"))
            assert js_verify(inst, js, bundle, other, cli=cli).returncode != 0


def check_python_negatives(inst: Instance, bundle: Path, artifact: Path) -> None:
    """sigstore-python refuses a wrong identity, issuer, artifact and a tampered bundle."""
    other = _artifact(inst, bundle.name.replace(".sigstore.json", "-other"))
    assert py_verify(inst, bundle, artifact, identity="mallory@example.com").returncode != 0
    assert py_verify(inst, bundle, artifact, issuer="https://issuer.example.com").returncode != 0
    assert py_verify(inst, bundle, other).returncode != 0
    assert py_verify(inst, tampered(bundle), artifact).returncode != 0


def kind(bundle: Path) -> tuple[str, str]:
    entry = json.loads(bundle.read_text())["verificationMaterial"]["tlogEntries"][0]
    return entry["kindVersion"]["kind"], entry["kindVersion"]["version"]


def tampered(bundle: Path) -> Path:
    """A copy whose signature has one bit flipped."""
    doc = json.loads(bundle.read_text())
    holder = doc.get("messageSignature") or doc["dsseEnvelope"]["signatures"][0]
    field = "signature" if "messageSignature" in doc else "sig"
    raw = bytearray(base64.b64decode(holder[field]))
    raw[-1] ^= 1
    holder[field] = base64.b64encode(bytes(raw)).decode()
    out = bundle.with_name(bundle.name.replace(".sigstore.json", ".tampered.json"))
    out.write_text(json.dumps(doc))
    return out


# --- sigstore-python makes, both verify ----------------------------------------------------


# name: (Rekor version, attest, signed through TUF (else --trust-config), entry kind)
PY_CASES = {
    "py-sign-v1": (1, False, True, ("hashedrekord", "0.0.1")),
    "py-sign-v2": (2, False, False, ("hashedrekord", "0.0.2")),
    "py-attest-v1": (1, True, False, ("dsse", "0.0.1")),
    "py-attest-v2": (2, True, True, ("hashedrekord", "0.0.2")),
}


@pytest.mark.parametrize("name", list(PY_CASES))
def test_python_bundles_verify_in_both_clients(instance: Instance, js: Path, name: str) -> None:
    rekor, attest, tuf, expected_kind = PY_CASES[name]
    artifact, bundle = py_sign(instance, name, rekor, attest, tuf=tuf)
    assert kind(bundle) == expected_kind
    for tuf in (False, True):
        res = py_verify(instance, bundle, artifact, tuf=tuf)
        assert res.returncode == 0, res.stdout + res.stderr
    check_python_negatives(instance, bundle, artifact)
    check_js_verifiers(instance, js, bundle, artifact, attest=attest)


# --- sigstore-js makes, both verify -----------------------------------------------------------


# name: (how JS makes it, entry kind, why sigstore-python 4.5 cannot verify it or None)
JS_CASES = {
    "js-sign-v1": ("sign", ("hashedrekord", "0.0.1"), None),
    "js-attest-v1": ("attest", ("dsse", "0.0.1"), None),
    "js-cli-attest-v1": (
        "cli-attest",
        ("intoto", "0.0.2"),
        "Integrated time only supported for dsse/hashedrekord 0.0.1 types",
    ),
    "js-signing-config-sign-v2": ("sign-sc", ("hashedrekord", "0.0.2"), None),
    "js-signing-config-attest-v2": (
        "attest-sc",
        ("dsse", "0.0.2"),
        "Unsupported DSSE log entry type: dsse/0.0.2",
    ),
}


@pytest.mark.parametrize("name", list(JS_CASES))
def test_js_bundles_verify_in_both_clients(instance: Instance, js: Path, name: str) -> None:
    how, expected_kind, python_refusal = JS_CASES[name]
    artifact, bundle = js_sign(instance, js, name, how)
    assert kind(bundle) == expected_kind
    attest = how != "sign" and how != "sign-sc"
    check_js_verifiers(instance, js, bundle, artifact, attest=attest)

    res = py_verify(instance, bundle, artifact)
    if python_refusal is None:
        assert res.returncode == 0, res.stdout + res.stderr
        check_python_negatives(instance, bundle, artifact)
    else:
        # A client limitation, not a sigstack one: pin the reason so an upgrade shows.
        assert res.returncode != 0
        assert python_refusal in res.stdout + res.stderr, res.stdout + res.stderr


def test_the_suite_covers_every_kind_each_client_makes() -> None:
    kinds = {c[3] for c in PY_CASES.values()} | {c[1] for c in JS_CASES.values()}
    assert kinds == {
        ("hashedrekord", "0.0.1"),
        ("hashedrekord", "0.0.2"),
        ("dsse", "0.0.1"),
        ("dsse", "0.0.2"),
        ("intoto", "0.0.2"),
    }
    # sigstore-python: sign and attest on each Rekor version, signing through TUF and
    # through --trust-config (every bundle is verified through both).
    assert {(c[0], c[1]) for c in PY_CASES.values()} == {
        (1, False),
        (1, True),
        (2, False),
        (2, True),
    }
    assert {c[2] for c in PY_CASES.values()} == {True, False}
