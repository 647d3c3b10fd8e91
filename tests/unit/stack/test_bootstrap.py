"""Initialization is idempotent, and broken state is a clear error naming the file.

These exercise the scaffolding exactly as `sigstack init` / `sigstack up` run it
(bootstrap, TUF publication, client files, opening the logs), without HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import stat
from pathlib import Path

import pytest
from sigstore_models.trustroot.v1 import ClientTrustConfig, SigningConfig, TrustedRoot

from sigstack.core.errors import ConfigError, LogIntegrityError, StateError
from sigstack.stack import bootstrap
from sigstack.stack.config import SERVICES, Endpoints
from sigstack.stack.state import PASSPHRASE_ENV, StateDir
from sigstack.stack.up import open_services, open_tuf, run_init

BASE_PORT = 27700


def _args(data_dir: Path, **overrides: object) -> argparse.Namespace:
    ns = argparse.Namespace(
        data_dir=data_dir,
        passphrase_file=None,
        host=None,
        base_port=BASE_PORT,
        oidc_port=None,
        ctlog_port=None,
        fulcio_port=None,
        rekor_port=None,
        tsa_port=None,
        tuf_port=None,
    )
    for k, v in overrides.items():
        setattr(ns, k, v)
    return ns


def _snapshot(root: Path) -> dict[str, str]:
    """SHA-256 of every file except the run lock and the (freshly minted) env token."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and str(rel) not in ("run/lock", "client/sigstack.env"):
            out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(autouse=True)
def _no_env_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)


@pytest.fixture
def initialized(tmp_path: Path) -> Path:
    data = tmp_path / "state"
    assert run_init(_args(data)) == 0
    return data


def test_new_rekor_logs_start_with_a_genesis_entry(initialized: Path) -> None:
    """No client entry sits at index 0 (sigstore-js drops logIndex 0 from bundles)."""
    import base64

    from sigstack.core.clock import parse_rfc3339
    from sigstack.core.tiles import decode_bundle
    from sigstack.stack import genesis

    manifest = json.loads((initialized / "sigstack.json").read_text())
    for name in ("rekor", "rekor-v1"):
        log_dir = initialized / "logs" / name
        assert (log_dir / "checkpoint").read_text().split("\n")[1] == "1"
        (record,) = decode_bundle((log_dir / "tile" / "entries" / "000.p" / "1").read_bytes())
        record_doc = manifest["logs"][name]
        created = parse_rfc3339(record_doc.get("created", manifest["created"]))
        digest = hashlib.sha256(genesis.statement(record_doc["origin"], created)).digest()
        if name == "rekor":
            data = json.loads(record)["spec"]["hashedRekordV002"]["data"]
            assert data == {"algorithm": "SHA2_256", "digest": base64.b64encode(digest).decode()}
        else:
            body = json.loads(base64.b64decode(json.loads(record)["body"]))
            assert body["kind"] == "hashedrekord"
            assert body["spec"]["data"]["hash"] == {"algorithm": "sha256", "value": digest.hex()}
    assert (initialized / "logs" / "ctlog" / "checkpoint").read_text().split("\n")[1] == "0"


def test_first_run_creates_a_complete_private_state(initialized: Path) -> None:
    sd = StateDir(initialized)
    assert sd.is_initialized()
    assert not list(initialized.glob(".init-*")), "staging directory left behind"
    for key in sd.keys_dir.iterdir():
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes()
    assert stat.S_IMODE(sd.keys_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(sd.passphrase_path().stat().st_mode) == 0o600
    assert stat.S_IMODE((sd.client_dir / "sigstack.env").stat().st_mode) == 0o600
    # Client files parse with the strict models sigstore-python uses.
    ClientTrustConfig.model_validate_json((sd.client_dir / "trust_config.json").read_bytes())
    targets = {p.name.split(".", 1)[1]: p for p in (sd.tuf_dir / "targets").iterdir()}
    root = TrustedRoot.model_validate_json(targets["trusted_root.json"].read_bytes())
    assert [t.public_key.key_details.value for t in root.tlogs] == [
        "PKIX_ED25519",  # Rekor v2
        "PKIX_ECDSA_P256_SHA_256",  # Rekor v1
    ]
    assert len(root.ctlogs) == 1
    assert len(root.certificate_authorities[0].cert_chain.certificates) == 2
    assert len(root.timestamp_authorities[0].cert_chain.certificates) == 2
    config = SigningConfig.model_validate_json(targets["signing_config.v0.2.json"].read_bytes())
    assert [s.major_api_version for s in config.rekor_tlog_urls] == [2, 1]
    env = (sd.client_dir / "sigstack.env").read_text()
    for name in (
        "TUF_MIRROR",
        "FULCIO_URL",
        "REKOR_URL",
        "CTLOG_URL",
        "TSA_URL",
        "ISSUER_URL",
        "OIDC_TOKEN",
    ):
        assert f"export {name}=" in env


def test_a_hundred_reruns_change_nothing(initialized: Path) -> None:
    before = _snapshot(initialized)
    for _ in range(100):
        assert run_init(_args(initialized)) == 0
    assert _snapshot(initialized) == before


def test_moved_ports_publish_new_targets_but_keep_every_key(initialized: Path) -> None:
    sd = StateDir(initialized)
    keys_before = {p.name: p.read_bytes() for p in sd.keys_dir.iterdir()}
    certs_before = {p.name: p.read_bytes() for p in sd.certs_dir.iterdir()}
    root_before = (sd.client_dir / "root.json").read_bytes()
    assert run_init(_args(initialized, rekor_port=BASE_PORT + 50)) == 0
    config = json.loads((sd.client_dir / "trust_config.json").read_text())
    assert config["trustedRoot"]["tlogs"][0]["baseUrl"].endswith(f":{BASE_PORT + 50}")
    assert {p.name: p.read_bytes() for p in sd.keys_dir.iterdir()} == keys_before
    assert {p.name: p.read_bytes() for p in sd.certs_dir.iterdir()} == certs_before
    assert (sd.client_dir / "root.json").read_bytes() == root_before
    assert len(list((sd.tuf_dir / "targets").glob("*.trusted_root.json"))) == 2


def _load(data: Path) -> None:
    sd = StateDir(data)
    endpoints = Endpoints.load(sd.stack_config_path)
    material, created = bootstrap.ensure(sd, endpoints, None)
    assert not created
    trusted = open_tuf(material, endpoints)

    async def open_and_close() -> None:
        services = await open_services(material, endpoints, trusted.repo)
        await services.close()

    asyncio.run(open_and_close())


def test_intact_state_loads_and_opens(initialized: Path) -> None:
    _load(initialized)


def test_missing_key_names_the_file_and_regenerates_nothing(initialized: Path) -> None:
    path = initialized / "keys" / "fulcio-intermediate.pem"
    path.unlink()
    with pytest.raises(StateError) as info:
        _load(initialized)
    assert info.value.path == path
    assert not path.exists()


def test_replaced_key_is_refused(initialized: Path) -> None:
    # Swap two keys of the same algorithm: both decrypt, neither matches its record.
    a, b = initialized / "keys" / "ctlog.pem", initialized / "keys" / "oidc.pem"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    with pytest.raises(StateError, match="was replaced"):
        _load(initialized)


def test_corrupt_certificate_names_the_file(initialized: Path) -> None:
    path = initialized / "certs" / "fulcio-root.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(StateError) as info:
        _load(initialized)
    assert info.value.path == path


def test_unreadable_key_permissions_are_refused(initialized: Path) -> None:
    path = initialized / "keys" / "rekor.pem"
    os.chmod(path, 0o640)
    with pytest.raises(StateError, match="chmod 600"):
        _load(initialized)


def test_missing_generated_passphrase_names_the_file(initialized: Path) -> None:
    path = initialized / "secrets" / "passphrase"
    path.unlink()
    with pytest.raises(StateError) as info:
        _load(initialized)
    assert info.value.path == path


def test_corrupt_manifest_names_the_file(initialized: Path) -> None:
    path = initialized / "sigstack.json"
    path.write_text("{ truncated")
    with pytest.raises(StateError) as info:
        _load(initialized)
    assert info.value.path == path


def test_tampered_log_checkpoint_refuses_to_open(initialized: Path) -> None:
    path = initialized / "logs" / "rekor" / "checkpoint"
    lines = path.read_text().split("\n")
    lines[1] = str(int(lines[1]) + 1)  # claim one more entry than was signed
    path.write_text("\n".join(lines))
    with pytest.raises(LogIntegrityError):
        _load(initialized)


def test_missing_tuf_metadata_names_the_file(initialized: Path) -> None:
    (initialized / "tuf" / "1.root.json").unlink()
    with pytest.raises(StateError, match=r"root\.json"):
        _load(initialized)


def test_interrupted_init_is_reported_not_completed(tmp_path: Path) -> None:
    data = tmp_path / "state"
    (data / "keys").mkdir(parents=True)
    with pytest.raises(StateError, match="interrupted"):
        run_init(_args(data))
    assert not (data / "sigstack.json").exists()


def test_external_passphrase_is_never_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "state"
    monkeypatch.setenv(PASSPHRASE_ENV, "a passphrase from the operator")
    assert run_init(_args(data)) == 0
    assert not (data / "secrets").exists()
    for path in data.rglob("*"):
        if path.is_file():
            assert b"a passphrase from the operator" not in path.read_bytes()
    monkeypatch.setenv(PASSPHRASE_ENV, "the wrong one")
    with pytest.raises(StateError, match=r"passphrase \(SIGSTACK_PASSPHRASE\) is wrong"):
        run_init(_args(data))
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(StateError, match=PASSPHRASE_ENV):
        run_init(_args(data))


def test_non_loopback_host_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    data = tmp_path / "state"
    with pytest.raises(ConfigError, match="not a loopback address"):
        run_init(_args(data, host="192.0.2.10"))
    assert not (data / "sigstack.json").exists() and not (data / "keys").exists()


def test_host_cannot_change_once_the_logs_exist(initialized: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot\s+change"):
        run_init(_args(initialized, host="localhost"))


def test_certificate_swapped_together_with_its_manifest_record_is_refused(
    initialized: Path,
) -> None:
    """Even a consistent manifest edit cannot pair a certificate with another key."""
    sd = StateDir(initialized)
    other = sd.cert_path("fulcio-root").read_bytes()  # a real CA certificate, wrong key
    sd.cert_path("tsa-root").write_bytes(other)
    manifest = json.loads(sd.manifest_path.read_text())
    manifest["certs"]["tsa-root"]["sha256"] = json.loads(sd.manifest_path.read_text())["certs"][
        "fulcio-root"
    ]["sha256"]
    sd.manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(StateError, match="not the certificate of the tsa-root key"):
        _load(initialized)


def test_malformed_manifest_record_names_the_manifest(initialized: Path) -> None:
    sd = StateDir(initialized)
    manifest = json.loads(sd.manifest_path.read_text())
    manifest["keys"]["oidc"] = "keys/oidc.pem"
    sd.manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(StateError, match=r"keys\.oidc") as info:
        _load(initialized)
    assert info.value.path == sd.manifest_path


def test_generated_passphrase_with_loose_mode_is_refused(initialized: Path) -> None:
    os.chmod(initialized / "secrets" / "passphrase", 0o644)
    with pytest.raises(StateError, match="chmod 600"):
        _load(initialized)


def test_conflicting_passphrase_is_named(
    initialized: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "not the generated one")
    with pytest.raises(StateError, match=PASSPHRASE_ENV):
        run_init(_args(initialized))


def test_empty_passphrase_variable_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "")
    with pytest.raises(ConfigError, match="empty"):
        run_init(_args(tmp_path / "state"))
    assert not (tmp_path / "state" / "secrets").exists()


def test_stale_staging_directories_are_removed_at_init(tmp_path: Path) -> None:
    data = tmp_path / "state"
    stale = data / ".init-0123456789ab"
    (stale / "secrets").mkdir(parents=True)
    (stale / "secrets" / "passphrase").write_text("left behind by a crash")
    assert run_init(_args(data)) == 0
    assert not stale.exists()


def test_a_second_stack_on_the_same_directory_is_refused(initialized: Path) -> None:
    from sigstack.stack.up import locked

    with locked(StateDir(initialized)), pytest.raises(StateError, match="in use by another"):
        run_init(_args(initialized))


def test_failed_start_releases_ports_and_logs(initialized: Path) -> None:
    """A bad issuers file stops `up` after the state loads: nothing it opened stays open."""
    from sigstack.log.engine import TransparencyLog
    from sigstack.log.fs import FilesystemStorage
    from sigstack.stack.supervisor import bind_socket
    from sigstack.stack.up import run_up

    sd = StateDir(initialized)
    sd.config_dir.mkdir(exist_ok=True)
    (sd.config_dir / "fulcio-issuers.json").write_text(
        '{"OIDCIssuers": {"https://x.example": {"Type": "nope"}}}'
    )
    socks = [socket.socket() for _ in range(6)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    free = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    ports = {f"{name}_port": port for name, port in zip(SERVICES, free, strict=True)}
    with pytest.raises(ConfigError, match=r"fulcio-issuers\.json"):
        asyncio.run(run_up(_args(initialized, base_port=None, **ports)))
    endpoints = Endpoints.load(sd.stack_config_path)
    for service, port in endpoints.ports.items():
        bind_socket(service, "127.0.0.1", port).close()
    material = bootstrap.load(sd, None)
    signer = material.rekor_signer()
    tlog = TransparencyLog(
        FilesystemStorage(sd.log_dir("rekor")), signer, "127.0.0.1", verifier=signer.verifier()
    )
    tlog.open()  # the writer lock was released
    tlog.close()


def _as_before_rekor_v1(data: Path) -> None:
    """Make a state look like one created before the Rekor v1 log existed."""
    sd = StateDir(data)
    manifest = json.loads(sd.manifest_path.read_text())
    del manifest["keys"]["rekor-v1"]
    del manifest["logs"]["rekor-v1"]
    sd.manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    sd.key_path("rekor-v1").unlink()
    for path in sorted(sd.log_dir("rekor-v1").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    sd.log_dir("rekor-v1").rmdir()


def test_upgrade_adds_the_rekor_v1_log_and_keeps_everything_else(initialized: Path) -> None:
    _as_before_rekor_v1(initialized)
    sd = StateDir(initialized)
    keys_before = {p.name: p.read_bytes() for p in sd.keys_dir.iterdir()}
    certs_before = {p.name: p.read_bytes() for p in sd.certs_dir.iterdir()}
    manifest_before = json.loads(sd.manifest_path.read_text())
    assert run_init(_args(initialized)) == 0
    manifest = json.loads(sd.manifest_path.read_text())
    for section in ("keys", "certs"):
        for name, record in manifest_before[section].items():
            assert manifest[section][name] == record  # untouched
    assert manifest["logs"]["rekor-v1"]["origin"].startswith("127.0.0.1 - ")
    assert {
        n: b
        for n, b in ((p.name, p.read_bytes()) for p in sd.keys_dir.iterdir())
        if n in keys_before
    } == keys_before
    assert {p.name: p.read_bytes() for p in sd.certs_dir.iterdir()} == certs_before
    config = json.loads((sd.client_dir / "trust_config.json").read_text())
    assert len(config["trustedRoot"]["tlogs"]) == 2
    _load(initialized)  # the new log opens and verifies
    again = _snapshot(initialized)
    assert run_init(_args(initialized)) == 0
    assert _snapshot(initialized) == again  # the upgrade happens once


def test_an_interrupted_upgrade_is_adopted_not_repeated(initialized: Path) -> None:
    """The key (and empty log) written before the manifest commit are picked up, once."""
    _as_before_rekor_v1(initialized)
    sd = StateDir(initialized)
    manifest_path = sd.manifest_path
    original = manifest_path.read_bytes()
    assert run_init(_args(initialized)) == 0
    upgraded = json.loads(manifest_path.read_text())
    key_bytes = sd.key_path("rekor-v1").read_bytes()
    manifest_path.write_bytes(original)  # as if the upgrade crashed before its commit
    assert run_init(_args(initialized)) == 0
    adopted = json.loads(manifest_path.read_text())
    assert sd.key_path("rekor-v1").read_bytes() == key_bytes
    assert adopted["keys"]["rekor-v1"] == upgraded["keys"]["rekor-v1"]
    assert adopted["logs"]["rekor-v1"]["origin"] == upgraded["logs"]["rekor-v1"]["origin"]


@pytest.mark.parametrize("log", ["rekor", "rekor-v1"])
def test_up_refuses_a_log_that_was_moved_to_postgresql(initialized: Path, log: str) -> None:
    """Appending to the old filesystem copy would fork the log the database continues."""
    sd = StateDir(initialized)
    sd.moved_marker(log).write_text('{"moved_to": "postgresql://db/sigstack"}\n')
    with pytest.raises(StateError, match="moved to PostgreSQL") as info:
        _load(initialized)
    assert info.value.path == sd.moved_marker(log)
