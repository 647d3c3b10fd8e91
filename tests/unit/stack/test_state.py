"""The keystore and manifest: keys are encrypted, 0600, written once, and checked on load."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from sigstack.core.errors import StateError
from sigstack.stack import state as st


def _keystore(
    tmp_path: Path, passphrase: bytes = b"correct horse"
) -> tuple[st.StateDir, st.Keystore, bytes]:
    sd = st.StateDir(tmp_path)
    salt = st.new_salt()
    return sd, st.Keystore(sd, st.derive_secret(passphrase, salt)), salt


def test_key_round_trip_is_encrypted_and_private(tmp_path: Path) -> None:
    sd, ks, _ = _keystore(tmp_path)
    key = st.generate_key("ecdsa-p256")
    record = ks.write("ctlog", key)
    path = sd.key_path("ctlog")
    pem = path.read_bytes()
    assert b"BEGIN ENCRYPTED PRIVATE KEY" in pem
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(sd.keys_dir.stat().st_mode) == 0o700
    # Unreadable without the secret.
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, password=None)
    loaded = ks.load("ctlog", record)
    assert loaded.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_key_is_never_overwritten(tmp_path: Path) -> None:
    sd, ks, _ = _keystore(tmp_path)
    ks.write("rekor", st.generate_key("ed25519"))
    before = sd.key_path("rekor").read_bytes()
    with pytest.raises(StateError, match="never overwritten"):
        ks.write("rekor", st.generate_key("ed25519"))
    assert sd.key_path("rekor").read_bytes() == before


def test_wrong_passphrase_names_the_file(tmp_path: Path) -> None:
    sd, ks, salt = _keystore(tmp_path)
    record = ks.write("oidc", st.generate_key("ecdsa-p256"))
    other = st.Keystore(sd, st.derive_secret(b"wrong", salt))
    with pytest.raises(StateError, match=r"passphrase \(.*\) is wrong") as info:
        other.load("oidc", record)
    assert info.value.path == sd.key_path("oidc")


def test_substituted_key_is_refused(tmp_path: Path) -> None:
    sd, ks, _ = _keystore(tmp_path)
    record = ks.write("ctlog", st.generate_key("ecdsa-p256"))
    sd.key_path("ctlog").unlink()
    ks.write("ctlog", st.generate_key("ecdsa-p256"))  # an attacker's (or a buggy job's) key
    with pytest.raises(StateError, match="was replaced"):
        ks.load("ctlog", record)


def test_missing_key_is_an_error_not_a_regeneration(tmp_path: Path) -> None:
    sd, ks, _ = _keystore(tmp_path)
    record = ks.write("tsa-signer", st.generate_key("ecdsa-p256"))
    sd.key_path("tsa-signer").unlink()
    with pytest.raises(StateError, match="missing"):
        ks.load("tsa-signer", record)
    assert not sd.key_path("tsa-signer").exists()


def test_loose_permissions_are_refused(tmp_path: Path) -> None:
    sd, ks, _ = _keystore(tmp_path)
    record = ks.write("oidc", st.generate_key("ecdsa-p256"))
    os.chmod(sd.key_path("oidc"), 0o644)
    with pytest.raises(StateError, match="chmod 600"):
        ks.load("oidc", record)


def test_corrupt_key_file_names_the_file(tmp_path: Path) -> None:
    sd, ks, _ = _keystore(tmp_path)
    record = ks.write("oidc", st.generate_key("ecdsa-p256"))
    sd.key_path("oidc").write_bytes(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\ngarbage\n")
    with pytest.raises(StateError) as info:
        ks.load("oidc", record)
    assert info.value.path == sd.key_path("oidc")


def _manifest() -> st.Manifest:
    m = st.Manifest(
        created=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        passphrase="generated",
        kdf_salt=b"\x01" * 16,
    )
    m.keys = {
        n: {"file": f"keys/{n}.pem", "algorithm": a, "spki_sha256": "00"}
        for n, a in st.KEY_ALGORITHMS.items()
    }
    m.certs = {n: {"file": f"certs/{n}.pem", "sha256": "00"} for n in st.CERT_NAMES}
    m.logs = {n: {"origin": "127.0.0.1", "storage": f"logs/{n}"} for n in st.LOG_NAMES}
    return m


def test_manifest_round_trip(tmp_path: Path) -> None:
    m = _manifest()
    again = st.Manifest.from_json(tmp_path / "m", m.to_json())
    assert again.to_json() == m.to_json()


@pytest.mark.parametrize(
    "data",
    [b"{not json", b"{}", b'{"format": 99}', b'{"format": 1, "kdf": {"algorithm": "pbkdf2"}}'],
)
def test_corrupt_manifest_is_a_clear_error(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(StateError) as info:
        st.Manifest.from_json(tmp_path / "sigstack.json", data)
    assert info.value.path == tmp_path / "sigstack.json"


def test_manifest_missing_a_key_record_is_refused(tmp_path: Path) -> None:
    m = _manifest()
    del m.keys["rekor"]
    with pytest.raises(StateError, match="rekor"):
        st.Manifest.from_json(tmp_path / "m", m.to_json())


def test_interrupted_init_is_detected(tmp_path: Path) -> None:
    sd = st.StateDir(tmp_path)
    sd.check_not_partial()  # empty: fine
    (tmp_path / "keys").mkdir()
    with pytest.raises(StateError, match="interrupted"):
        sd.check_not_partial()


def test_external_passphrase_required_when_not_stored(tmp_path: Path) -> None:
    sd = st.StateDir(tmp_path)
    m = _manifest()
    m.passphrase = "external"
    with pytest.raises(StateError, match="SIGSTACK_PASSPHRASE"):
        sd.passphrase_for(m, None)
    assert sd.passphrase_for(m, st.Passphrase(b"x", "env")).value == b"x"


def test_passphrase_file_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(st.PASSPHRASE_ENV, "from-env")
    assert st.resolve_passphrase(None) == st.Passphrase(b"from-env", st.PASSPHRASE_ENV)
    f = tmp_path / "pp"
    f.write_bytes(b"from-file\n")
    resolved = st.resolve_passphrase(f)
    assert resolved is not None and resolved.value == b"from-file"
    f.write_bytes(b"\n")
    with pytest.raises(StateError, match="empty"):
        st.resolve_passphrase(f)


def test_passphrase_never_appears_in_repr() -> None:
    assert "hunter2" not in repr(st.Passphrase(b"hunter2", "env"))
