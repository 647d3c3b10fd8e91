"""Idempotent initialization: create every key, CA, log and TUF root exactly once.

``ensure(...)`` is what every start calls:

* an empty state directory is initialized: keys, the Fulcio CA (root + intermediate),
  the TSA chain, the Rekor and CT logs (each an empty signed checkpoint) and the TUF
  repository (version 1 of every role, targeting the trusted root and the signing
  config) are all created inside a private staging directory, moved into place,
  and only then is the manifest ``sigstack.json`` written. A crash before that last
  step leaves no manifest, which the next start reports (nothing half-made is ever
  served or silently completed);
* an initialized directory is loaded and VERIFIED: every key decrypts and matches
  its recorded fingerprint, every certificate matches its record and its key. It is
  never modified: a re-run cannot mint a new CA or log key (the seed deployments'
  worst outage), so the trusted root and every public key stay byte-identical.

This is the scaffolding's "CreateCerts" + "CreateTree" + TUF jobs as one function
that is safe to run a hundred times.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from sigstack.core import note, pki
from sigstack.core.clock import Clock, parse_rfc3339, rfc3339, utcnow, whole_seconds
from sigstack.core.encoding import json_document
from sigstack.core.errors import SigstackError, StateError
from sigstack.core.keys import PrivateKey, spki_sha256
from sigstack.fsutil import atomic_write, fsync_dir, make_dirs
from sigstack.log.engine import TransparencyLog
from sigstack.log.fs import FilesystemStorage
from sigstack.services.ctlog.config import CTLogConfig, origin_from_url
from sigstack.services.ctlog.service import create_ctlog
from sigstack.services.rekor import v1 as rekor_v1
from sigstack.services.rekor.service import RekorService
from sigstack.services.rekor.v1 import RekorV1Service
from sigstack.services.tuf import TufKeys, TufRepository
from sigstack.stack import genesis, trust
from sigstack.stack.config import Endpoints
from sigstack.stack.state import (
    ADDED_KEYS,
    ADDED_LOGS,
    CERT_NAMES,
    KEY_ALGORITHMS,
    Keystore,
    Manifest,
    Passphrase,
    StateDir,
    derive_secret,
    generate_key,
    load_cert,
    new_generated_passphrase,
    new_salt,
    write_cert,
)

CA_LIFETIME = dt.timedelta(days=3650)
ORGANIZATION = "sigstack"

Report = Callable[[str], None]


def _nothing(_: str) -> None:
    pass


@dataclass
class Material:
    """The loaded, verified trust material of a stack."""

    state: StateDir
    manifest: Manifest
    keys: dict[str, PrivateKey]
    certs: dict[str, x509.Certificate]

    @property
    def created(self) -> dt.datetime:
        return self.manifest.created

    @property
    def fulcio_chain(self) -> list[x509.Certificate]:
        """Intermediate first, root last (the order trusted roots and clients use)."""
        return [self.certs["fulcio-intermediate"], self.certs["fulcio-root"]]

    @property
    def tsa_chain(self) -> list[x509.Certificate]:
        """Signer first, root last."""
        return [self.certs["tsa-signer"], self.certs["tsa-root"]]

    def log_origin(self, name: str) -> str:
        return self.manifest.logs[name]["origin"]

    def log_created(self, name: str) -> dt.datetime:
        """When a log was created (logs added by an upgrade are younger than the stack)."""
        created = self.manifest.logs[name].get("created")
        return parse_rfc3339(created) if created else self.created

    def missing(self) -> list[str]:
        """Pieces a later sigstack added that this state does not have yet."""
        return sorted(
            {f"key {n}" for n in ADDED_KEYS if n not in self.manifest.keys}
            | {f"log {n}" for n in ADDED_LOGS if n not in self.manifest.logs}
        )

    def ed25519(self, name: str) -> ed25519.Ed25519PrivateKey:
        key = self.keys[name]
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return key

    def ecdsa(self, name: str) -> ec.EllipticCurvePrivateKey:
        key = self.keys[name]
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    def trust_inputs(self, endpoints: Endpoints) -> trust.TrustInputs:
        return trust.TrustInputs(
            endpoints=endpoints,
            created=self.created,
            fulcio_chain=self.fulcio_chain,
            ctlog_key=self.ecdsa("ctlog").public_key(),
            rekor_key=self.ed25519("rekor").public_key(),
            rekor_origin=self.log_origin("rekor"),
            rekor_v1_key=self.ecdsa("rekor-v1").public_key(),
            rekor_v1_created=self.log_created("rekor-v1"),
            tsa_chain=self.tsa_chain,
        )

    def tuf_keys(self) -> TufKeys:
        return TufKeys(
            root=self.ed25519("tuf-root"),
            targets=self.ed25519("tuf-targets"),
            snapshot=self.ed25519("tuf-snapshot"),
            timestamp=self.ed25519("tuf-timestamp"),
        )

    def ctlog_config(self) -> CTLogConfig:
        return CTLogConfig(
            origin=self.log_origin("ctlog"),
            private_key=self.ecdsa("ctlog"),
            roots=[self.certs["fulcio-root"]],
        )

    def rekor_signer(self) -> note.Ed25519NoteSigner:
        return note.Ed25519NoteSigner(self.log_origin("rekor"), self.ed25519("rekor"))

    def rekor_v1_signer(self) -> note.EcdsaNoteSigner:
        """The Rekor v1 log's checkpoint signer: ECDSA, named by the host alone.

        Rekor v1 checkpoints carry the origin "<host> - <tree ID>" but sign as "<host>".
        """
        host = self.log_origin("rekor-v1").rpartition(" - ")[0]
        return note.EcdsaNoteSigner(host, self.ecdsa("rekor-v1"))

    def rekor_v1_tree_id(self) -> int:
        return int(self.manifest.logs["rekor-v1"]["tree_id"])


def trust_targets(material: Material, endpoints: Endpoints) -> dict[str, bytes]:
    """The TUF targets: trusted_root.json and signing_config.v0.2.json."""
    inputs = material.trust_inputs(endpoints)
    return {
        trust.TRUSTED_ROOT_TARGET: json_document(trust.trusted_root(inputs)),
        trust.SIGNING_CONFIG_TARGET: json_document(trust.signing_config(inputs)),
    }


def ensure(
    state: StateDir,
    endpoints: Endpoints,
    passphrase: Passphrase | None,
    *,
    report: Report = _nothing,
    clock: Clock = utcnow,
) -> tuple[Material, bool]:
    """Load and verify the stack's state, creating it first if the directory is empty.

    Returns the material and whether it was created now.
    """
    state.check_not_partial()
    if state.is_initialized():
        material = load(state, passphrase)
        if material.missing():
            material = upgrade(material, endpoints, passphrase, report=report, clock=clock)
        return material, False
    return initialize(state, endpoints, passphrase, report=report, clock=clock), True


def load(state: StateDir, passphrase: Passphrase | None) -> Material:
    """Load every key and certificate, verifying each against the manifest."""
    manifest = state.read_manifest()
    unlock = state.passphrase_for(manifest, passphrase)
    keystore = Keystore(state, derive_secret(unlock.value, manifest.kdf_salt), unlock.source)
    keys = {
        name: keystore.load(name, manifest.keys[name])
        for name in KEY_ALGORITHMS
        if name in manifest.keys
    }
    certs = {name: load_cert(state, name, manifest.certs[name]) for name in CERT_NAMES}
    for name in CERT_NAMES:
        if spki_sha256(certs[name].public_key()) != spki_sha256(keys[name].public_key()):  # type: ignore[arg-type]
            raise StateError(state.cert_path(name), f"is not the certificate of the {name} key")
    return Material(state, manifest, keys, certs)


def _origins(endpoints: Endpoints) -> dict[str, str]:
    # Go clients require a Rekor v2 checkpoint origin equal to the host of the tlog's
    # baseUrl (no port); the CT log's name is its submission prefix without scheme.
    return {"rekor": endpoints.host, "ctlog": origin_from_url(endpoints.url("ctlog"))}


def _rekor_v1_record(endpoints: Endpoints, now: dt.datetime) -> dict[str, str]:
    """A new Rekor v1 log's manifest record: a random tree ID in its origin.

    Rekor v1 checkpoints are named "<host> - <tree ID>" (Go clients tell v1 from v2
    logs by that suffix).
    """
    tree_id = secrets.randbelow((1 << 63) - 1) + 1
    return {
        "origin": f"{endpoints.host} - {tree_id}",
        "storage": "logs/rekor-v1",
        "tree_id": str(tree_id),
        "created": rfc3339(now),
    }


def upgrade(
    material: Material,
    endpoints: Endpoints,
    passphrase: Passphrase | None,
    *,
    report: Report = _nothing,
    clock: Clock = utcnow,
) -> Material:
    """Add the pieces a later sigstack introduced (see ``state.ADDED_KEYS``/``ADDED_LOGS``).

    Nothing that exists is touched: keys are created with an exclusive write, logs with
    ``TransparencyLog.create``, and the manifest is rewritten last with every existing
    record unchanged (its rewrite is the upgrade's commit point). A piece left by an
    upgrade that crashed before that point was never published: it is adopted if it
    verifies (the key decrypts, the log is the empty log of that key), else the error
    names it.
    """
    state, manifest = material.state, material.manifest
    now = whole_seconds(clock())
    unlock = state.passphrase_for(manifest, passphrase)
    keystore = Keystore(state, derive_secret(unlock.value, manifest.kdf_salt), unlock.source)
    for name in sorted(ADDED_KEYS - manifest.keys.keys()):
        report(f"adding the {name} key (new in this version)")
        path = state.key_path(name)
        if path.exists():  # written by an interrupted upgrade, never published
            key = keystore.load_unrecorded(name, KEY_ALGORITHMS[name])
            manifest.keys[name] = keystore.record(name, key)
        else:
            key = generate_key(KEY_ALGORITHMS[name])
            manifest.keys[name] = keystore.write(name, key)
        material.keys[name] = key
    if "rekor-v1" not in manifest.logs:
        report("adding the Rekor v1 log (new in this version)")
        storage = FilesystemStorage(state.log_dir("rekor-v1"))
        existing = storage.read_checkpoint()
        if existing is None:
            record = _rekor_v1_record(endpoints, now)
            manifest.logs["rekor-v1"] = record
            TransparencyLog.create(storage, material.rekor_v1_signer(), record["origin"])
        else:
            manifest.logs["rekor-v1"] = _adopt_empty_log(state, material, existing, now)
        write_genesis(material, "rekor-v1")
    atomic_write(state.manifest_path, manifest.to_json(), 0o644)
    return material


def write_genesis(material: Material, name: str) -> None:
    """Open a new Rekor log and log its genesis entry (see ``stack.genesis``)."""
    storage = FilesystemStorage(material.state.log_dir(name))
    origin = material.log_origin(name)
    service: RekorService | RekorV1Service
    if name == "rekor":
        v2_signer = material.rekor_signer()
        log = TransparencyLog(storage, v2_signer, origin, verifier=v2_signer.verifier())
        service = RekorService(log, v2_signer.verifier().key_id)
    else:
        v1_signer = material.rekor_v1_signer()
        log = TransparencyLog(
            storage,
            v1_signer,
            origin,
            verifier=v1_signer.verifier(),
            index_keys=rekor_v1.index_keys,
        )
        service = RekorV1Service(log, material.ecdsa(name), material.rekor_v1_tree_id())
    log.open()
    try:
        genesis.write(service, origin, material.log_created(name))
    finally:
        log.close()


def _adopt_empty_log(
    state: StateDir, material: Material, note_bytes: bytes, now: dt.datetime
) -> dict[str, str]:
    """The manifest record of the Rekor v1 log an interrupted upgrade created (empty, or
    holding only its genesis entry)."""
    key = material.ecdsa("rekor-v1")
    where = state.log_dir("rekor-v1") / "checkpoint"
    try:
        text, _ = note.parse_note(note_bytes)
        host = text.split("\n", 1)[0].rpartition(" - ")[0]
        note.open_note(note_bytes, [note.EcdsaNoteVerifier(host, key.public_key())])
        body = note.parse_checkpoint(text)
    except SigstackError as exc:
        raise StateError(
            where, f"exists but is not a checkpoint of the rekor-v1 key ({exc}); remove it"
        ) from exc
    _, _, tree_id = body.origin.rpartition(" - ")
    if body.size > 1 or not tree_id.isdigit():
        raise StateError(where, "is not the new log an interrupted upgrade left: remove it")
    return {
        "origin": body.origin,
        "storage": "logs/rekor-v1",
        "tree_id": tree_id,
        "created": rfc3339(now),
    }


def initialize(
    state: StateDir,
    endpoints: Endpoints,
    passphrase: Passphrase | None,
    *,
    report: Report = _nothing,
    clock: Clock = utcnow,
) -> Material:
    """Create a new stack in the (empty) state directory. See the module docstring."""
    make_dirs(state.root, 0o755)
    # Staging directories of inits that were interrupted were never served (the
    # manifest is written last), and may hold a generated passphrase: remove them.
    for stale in state.root.glob(".init-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = StateDir(state.root / f".init-{secrets.token_hex(6)}")
    make_dirs(staging.root, 0o700)
    try:
        material = _create(staging, endpoints, passphrase, report, clock)
        report("moving the new state into place")
        for entry in StateDir.INIT_ENTRIES:
            src = staging.root / entry
            if src.exists():
                os.rename(src, state.root / entry)
        fsync_dir(state.root)
        atomic_write(state.manifest_path, material.manifest.to_json(), 0o644, exclusive=True)
    finally:
        shutil.rmtree(staging.root, ignore_errors=True)
    material.state = state
    return material


def _create(
    staging: StateDir,
    endpoints: Endpoints,
    passphrase: Passphrase | None,
    report: Report,
    clock: Clock,
) -> Material:
    now = whole_seconds(clock())
    until = now + CA_LIFETIME

    if passphrase is None:
        secret_value = new_generated_passphrase()
        make_dirs(staging.secrets_dir, 0o700)
        atomic_write(staging.passphrase_path(), secret_value + b"\n", 0o600, exclusive=True)
        mode = "generated"
    else:
        secret_value, mode = passphrase.value, "external"
    salt = new_salt()
    keystore = Keystore(staging, derive_secret(secret_value, salt))

    report("generating keys")
    keys: dict[str, Any] = {name: generate_key(alg) for name, alg in KEY_ALGORITHMS.items()}
    key_records = {name: keystore.write(name, key) for name, key in keys.items()}

    report("creating the Fulcio CA and the TSA certificates")
    fulcio_root = pki.build_root_ca(
        keys["fulcio-root"], pki.name(ORGANIZATION, "sigstack Fulcio root"), now, until
    )
    fulcio_intermediate = pki.build_intermediate_ca(
        keys["fulcio-intermediate"].public_key(),
        pki.name(ORGANIZATION, "sigstack Fulcio intermediate"),
        fulcio_root,
        keys["fulcio-root"],
        now,
        until,
    )
    tsa_root = pki.build_root_ca(
        keys["tsa-root"], pki.name(ORGANIZATION, "sigstack TSA root"), now, until, path_length=0
    )
    tsa_signer = pki.build_tsa_certificate(
        keys["tsa-signer"].public_key(),
        pki.name(ORGANIZATION, "sigstack TSA"),
        tsa_root,
        keys["tsa-root"],
        now,
        until,
    )
    certs = {
        "fulcio-root": fulcio_root,
        "fulcio-intermediate": fulcio_intermediate,
        "tsa-root": tsa_root,
        "tsa-signer": tsa_signer,
    }
    cert_records = {name: write_cert(staging, name, cert) for name, cert in certs.items()}

    origins = _origins(endpoints)
    logs = {name: {"origin": origin, "storage": f"logs/{name}"} for name, origin in origins.items()}
    logs["rekor-v1"] = _rekor_v1_record(endpoints, now)
    manifest = Manifest(
        created=now,
        passphrase=mode,
        kdf_salt=salt,
        keys=key_records,
        certs=cert_records,
        logs=logs,
    )
    material = Material(staging, manifest, keys, certs)

    report("creating the Rekor and CT logs")
    make_dirs(staging.logs_dir, 0o755)
    TransparencyLog.create(
        FilesystemStorage(staging.log_dir("rekor")), material.rekor_signer(), origins["rekor"]
    )
    create_ctlog(material.ctlog_config(), FilesystemStorage(staging.log_dir("ctlog")))
    TransparencyLog.create(
        FilesystemStorage(staging.log_dir("rekor-v1")),
        material.rekor_v1_signer(),
        logs["rekor-v1"]["origin"],
    )
    write_genesis(material, "rekor")
    write_genesis(material, "rekor-v1")

    report("creating the TUF repository")
    TufRepository.create(
        staging.tuf_dir, material.tuf_keys(), trust_targets(material, endpoints), now
    )
    return material
