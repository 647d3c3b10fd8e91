"""The state directory: layout, the encrypted keystore, and the manifest that pins it.

Layout of ``DIR`` (``--data-dir``)::

    sigstack.json           the manifest, written LAST at init: what was created, with
                            fingerprints of every key and certificate (public, 0644)
    stack.json              network settings (host, ports); changes publish new targets
    keys/<name>.pem         private keys: encrypted PKCS#8, 0600, directory 0700
    certs/<name>.pem        CA and TSA certificates (public)
    secrets/passphrase      only when sigstack generated the passphrase (0600, dir 0700)
    config/                 operator-editable configuration (extra OIDC issuers, ...)
    logs/rekor, logs/ctlog  the transparency logs (tiles, entry bundles, checkpoints)
    tuf/                    the TUF repository served to clients
    client/                 files for clients: root.json, trust_config.json, sigstack.env
    run/                    the lock that keeps two stacks off one directory

Guarantees:

* Trust material is created once. Key and certificate files are written with an
  exclusive create and never overwritten; on every start each one is loaded and
  checked against the fingerprint the manifest recorded. A missing, unreadable,
  undecryptable, loosely-permissioned or substituted file is a ``StateError`` naming
  it; nothing is ever regenerated to paper over it.
* Keys at rest are PKCS#8 encrypted (PBES2, AES-256-CBC) under a key-encryption
  secret derived from the stack passphrase with scrypt (N=2^15, r=8, p=1; the salt is
  in the manifest), so a weak human passphrase still costs an attacker scrypt work
  per guess. The files stay standard: ``openssl pkcs8`` can read them given the
  derived secret.
* The passphrase comes from ``SIGSTACK_PASSPHRASE``, a ``--passphrase-file``, or, for
  a zero-setup laptop stack, is generated at init into ``secrets/passphrase``. When
  supplied externally at init it is never written to disk.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from sigstack.core.clock import parse_rfc3339, rfc3339
from sigstack.core.encoding import json_document
from sigstack.core.errors import ConfigError, StateError, VerificationError
from sigstack.core.keys import PrivateKey, spki_sha256
from sigstack.core.pki import cert_der, cert_pem, load_pem_chain
from sigstack.fsutil import atomic_write, make_dirs, read_file

MANIFEST = "sigstack.json"
FORMAT_VERSION = 1
PASSPHRASE_ENV = "SIGSTACK_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)

# name -> algorithm. The order is the order init creates them in.
KEY_ALGORITHMS: dict[str, str] = {
    "oidc": "ecdsa-p256",
    "fulcio-root": "ecdsa-p384",
    "fulcio-intermediate": "ecdsa-p384",
    "ctlog": "ecdsa-p256",
    "rekor": "ed25519",
    "rekor-v1": "ecdsa-p256",
    "tsa-root": "ecdsa-p384",
    "tsa-signer": "ecdsa-p256",
    "tuf-root": "ed25519",
    "tuf-targets": "ed25519",
    "tuf-snapshot": "ed25519",
    "tuf-timestamp": "ed25519",
}
CERT_NAMES = ("fulcio-root", "fulcio-intermediate", "tsa-root", "tsa-signer")
LOG_NAMES = ("rekor", "ctlog", "rekor-v1")

# Pieces added after the first release: a state created before them lacks them, and
# ``bootstrap.upgrade`` adds them (it never touches anything that exists). Everything
# else must be in every manifest.
ADDED_KEYS = frozenset({"rekor-v1"})
ADDED_LOGS = frozenset({"rekor-v1"})

_SCRYPT = {"n": 1 << 15, "r": 8, "p": 1}


def generate_key(algorithm: str) -> PrivateKey:
    """A fresh private key of one of the ``KEY_ALGORITHMS`` kinds."""
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ConfigError(f"unknown key algorithm {algorithm!r}")


def _algorithm_of(key: PrivateKey) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384"}.get(key.curve.name, "?")
    return "?"


def derive_secret(passphrase: bytes, salt: bytes) -> bytes:
    """The key-encryption secret for the keystore (scrypt of the passphrase)."""
    raw = hashlib.scrypt(passphrase, salt=salt, maxmem=64 * 1024 * 1024, dklen=32, **_SCRYPT)
    return base64.b64encode(raw)


@dataclass(frozen=True)
class Passphrase:
    """An externally supplied passphrase and where it came from (for messages)."""

    value: bytes = field(repr=False)
    source: str


def resolve_passphrase(passphrase_file: Path | None) -> Passphrase | None:
    """The externally supplied passphrase, if any (``--passphrase-file`` wins over env)."""
    if passphrase_file is not None:
        data = read_file(passphrase_file, what="passphrase file").strip()
        if not data:
            raise StateError(passphrase_file, "passphrase file is empty")
        return Passphrase(data, str(passphrase_file))
    env = os.environ.get(PASSPHRASE_ENV)
    if env is None:
        return None
    if not env:
        # A secret that failed to inject must not silently become "generate one".
        raise ConfigError(
            f"{PASSPHRASE_ENV} is set but empty; give the passphrase, or unset it to use "
            "the passphrase generated into the state directory"
        )
    return Passphrase(env.encode(), PASSPHRASE_ENV)


@dataclass
class Manifest:
    """What init created, pinned by fingerprint. Serialized as ``sigstack.json``."""

    created: dt.datetime
    passphrase: str  # "generated" or "external"
    kdf_salt: bytes
    keys: dict[str, dict[str, str]] = field(default_factory=dict)
    certs: dict[str, dict[str, str]] = field(default_factory=dict)
    logs: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT_VERSION,
            "created": rfc3339(self.created),
            "passphrase": self.passphrase,
            "kdf": {"algorithm": "scrypt", **_SCRYPT, "salt": self.kdf_salt.hex()},
            "keys": self.keys,
            "certs": self.certs,
            "logs": self.logs,
        }
        return json_document(doc)

    @classmethod
    def from_json(cls, path: Path, data: bytes) -> Manifest:
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT_VERSION:
                raise StateError(
                    path,
                    f"state format {doc.get('format')!r} is not supported by this sigstack "
                    f"(expected {FORMAT_VERSION})",
                )
            kdf = doc["kdf"]
            if kdf.get("algorithm") != "scrypt" or any(kdf.get(k) != v for k, v in _SCRYPT.items()):
                raise StateError(path, "unsupported key-derivation parameters")
            created = parse_rfc3339(doc["created"])
            manifest = cls(
                created=created,
                passphrase=doc["passphrase"],
                kdf_salt=bytes.fromhex(kdf["salt"]),
                keys=dict(doc["keys"]),
                certs=dict(doc["certs"]),
                logs=dict(doc["logs"]),
            )
        except StateError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateError(
                path, f"manifest is corrupt ({exc.__class__.__name__}: {exc})"
            ) from exc
        if manifest.passphrase not in ("generated", "external"):
            raise StateError(path, f"unknown passphrase mode {manifest.passphrase!r}")
        key_fields = ("file", "algorithm", "spki_sha256")
        _check_records(path, "keys", manifest.keys, KEY_ALGORITHMS, key_fields, ADDED_KEYS)
        _check_records(path, "certs", manifest.certs, CERT_NAMES, ("file", "sha256"))
        _check_records(path, "logs", manifest.logs, LOG_NAMES, ("origin",), ADDED_LOGS)
        return manifest


def _check_records(
    path: Path,
    section: str,
    records: object,
    names: Iterable[str],
    fields: Iterable[str],
    optional: frozenset[str] = frozenset(),
) -> None:
    """Raise unless ``records[name][field]`` is a string for every name and field.

    Names in ``optional`` may be absent (added by an upgrade), but are checked if present.
    """
    if not isinstance(records, dict):
        raise StateError(path, f"manifest section {section!r} is not an object")
    for name in names:
        record = records.get(name)
        if record is None and name in optional:
            continue
        if not isinstance(record, dict):
            raise StateError(path, f"manifest does not record {section}.{name}")
        for f in fields:
            if not isinstance(record.get(f), str):
                raise StateError(path, f"manifest record {section}.{name} has no {f!r} string")


class StateDir:
    """Paths inside a state directory and the operations on them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifest_path = root / MANIFEST
        self.stack_config_path = root / "stack.json"
        self.keys_dir = root / "keys"
        self.certs_dir = root / "certs"
        self.secrets_dir = root / "secrets"
        self.config_dir = root / "config"
        self.logs_dir = root / "logs"
        self.tuf_dir = root / "tuf"
        self.client_dir = root / "client"
        self.run_dir = root / "run"

    # Entries whose presence without a manifest means an interrupted init.
    INIT_ENTRIES = ("keys", "certs", "secrets", "logs", "tuf")

    def key_path(self, name: str) -> Path:
        return self.keys_dir / f"{name}.pem"

    def cert_path(self, name: str) -> Path:
        return self.certs_dir / f"{name}.pem"

    def passphrase_path(self) -> Path:
        return self.secrets_dir / "passphrase"

    def log_dir(self, name: str) -> Path:
        return self.logs_dir / name

    def moved_marker(self, name: str) -> Path:
        """Written when a log was moved out of this directory (to PostgreSQL)."""
        return self.log_dir(name) / "MOVED.json"

    def is_initialized(self) -> bool:
        return self.manifest_path.exists()

    def check_not_partial(self) -> None:
        """Raise if ``root`` holds sigstack state without a manifest (interrupted init)."""
        present = [e for e in self.INIT_ENTRIES if (self.root / e).exists()]
        if present and not self.is_initialized():
            raise StateError(
                self.manifest_path,
                "is missing but "
                + ", ".join(str(self.root / e) for e in present)
                + " exist: an earlier init was interrupted before it finished. Nothing was "
                "ever served from this state, so it is safe to delete those entries and run "
                "again; sigstack will not guess which pieces to keep.",
            )

    def read_manifest(self) -> Manifest:
        return Manifest.from_json(
            self.manifest_path, read_file(self.manifest_path, what="manifest")
        )

    def passphrase_for(self, manifest: Manifest, external: Passphrase | None) -> Passphrase:
        """The passphrase that unlocks this state's keys, and where it came from."""
        if manifest.passphrase == "external":  # noqa: S105 (a mode name)
            if external is None:
                raise StateError(
                    self.keys_dir,
                    "keys are encrypted with a passphrase that is not stored in the state "
                    f"directory; set {PASSPHRASE_ENV} or pass --passphrase-file",
                )
            return external
        path = self.passphrase_path()
        _check_private_mode(path)
        stored = read_file(path, what="generated passphrase").strip()
        if not stored:
            raise StateError(path, "passphrase file is empty")
        if external is not None and external.value != stored:
            raise StateError(
                path,
                f"holds the passphrase this state was created with, but a different one was "
                f"given ({external.source}); unset it or pass the stored one",
            )
        return Passphrase(stored, str(path))


def _check_private_mode(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError as exc:
        raise StateError(path, "is missing") from exc
    if mode & 0o077:
        raise StateError(
            path,
            f"is readable or writable by other users (mode {mode:04o}); "
            f"secrets must be 0600: run `chmod 600 {path}`",
        )


class Keystore:
    """Encrypted private keys in ``keys/``. Keys are written once and never replaced."""

    def __init__(self, state: StateDir, secret: bytes, source: str = "the passphrase") -> None:
        self._state = state
        self._secret = secret
        self._source = source

    def record(self, name: str, key: PrivateKey) -> dict[str, str]:
        """The manifest record of ``key`` stored as ``keys/<name>.pem``."""
        return {
            "file": str(self._state.key_path(name).relative_to(self._state.root)),
            "algorithm": _algorithm_of(key),
            "spki_sha256": spki_sha256(key.public_key()).hex(),
        }

    def load_unrecorded(self, name: str, algorithm: str) -> PrivateKey:
        """Load a key file no manifest records yet (left by an interrupted upgrade).

        It must decrypt with this stack's secret and be of ``algorithm``; there is no
        fingerprint to check it against, which is why only never-published keys (an
        upgrade's, before its manifest commit) are ever loaded this way.
        """
        key = self._decrypt(name)
        if _algorithm_of(key) != algorithm:
            raise StateError(self._state.key_path(name), f"is not an {algorithm} key; remove it")
        return key

    def write(self, name: str, key: PrivateKey) -> dict[str, str]:
        """Store ``key`` as ``keys/<name>.pem`` (exclusive create); return its manifest record."""
        make_dirs(self._state.keys_dir, 0o700)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._secret),
        )
        atomic_write(self._state.key_path(name), pem, 0o600, exclusive=True)
        return self.record(name, key)

    def load(self, name: str, record: dict[str, str]) -> PrivateKey:
        """Load, decrypt and check ``keys/<name>.pem`` against its manifest record."""
        path = self._state.key_path(name)
        key = self._decrypt(name)
        if _algorithm_of(key) != record.get("algorithm"):
            raise StateError(path, f"is not the {record.get('algorithm')} key recorded at init")
        if spki_sha256(key.public_key()).hex() != record.get("spki_sha256"):
            raise StateError(
                path,
                "does not match the key recorded at init (its fingerprint differs): the key "
                "was replaced. sigstack never replaces trust material; restore the original "
                "file from a backup",
            )
        return key

    def _decrypt(self, name: str) -> PrivateKey:
        path = self._state.key_path(name)
        data = read_file(path, what=f"{name} private key")
        _check_private_mode(path)
        try:
            key = serialization.load_pem_private_key(data, password=self._secret)
        except (ValueError, TypeError) as exc:
            raise StateError(
                path,
                f"cannot be decrypted: the passphrase ({self._source}) is wrong or the file "
                "is corrupt (sigstack will not generate a replacement)",
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise StateError(path, f"holds an unsupported key type {type(key).__name__}")
        return key


def write_cert(state: StateDir, name: str, cert: x509.Certificate) -> dict[str, str]:
    """Store a certificate (exclusive create); return its manifest record."""
    make_dirs(state.certs_dir, 0o755)
    path = state.cert_path(name)
    atomic_write(path, cert_pem(cert).encode(), 0o644, exclusive=True)
    return {
        "file": str(path.relative_to(state.root)),
        "sha256": hashlib.sha256(cert_der(cert)).hexdigest(),
    }


def load_cert(state: StateDir, name: str, record: dict[str, str]) -> x509.Certificate:
    """Load ``certs/<name>.pem`` and check it against its manifest record."""
    path = state.cert_path(name)
    data = read_file(path, what=f"{name} certificate")
    try:
        certs = load_pem_chain(data, what=f"{name} certificate")
    except VerificationError as exc:
        raise StateError(path, exc.message) from exc
    if len(certs) != 1:
        raise StateError(path, f"holds {len(certs)} certificates; expected one")
    cert = certs[0]
    if hashlib.sha256(cert_der(cert)).hexdigest() != record.get("sha256"):
        raise StateError(
            path,
            "does not match the certificate recorded at init: it was replaced. Restore the "
            "original from a backup; sigstack never replaces trust material",
        )
    return cert


def new_salt() -> bytes:
    """A fresh scrypt salt."""
    return secrets.token_bytes(16)


def new_generated_passphrase() -> bytes:
    """A random passphrase for stacks that were not given one."""
    return secrets.token_urlsafe(32).encode()
