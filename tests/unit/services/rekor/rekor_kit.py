"""Helpers for the Rekor tests: a v1 log, a Fulcio-like signer, and the clients' oracles.

(A uniquely named module rather than conftest.py, so test modules can import it.)

Entries are built the way each client builds them: sigstore-python's own request
builders (``RekorClient._build_hashed_rekord_request`` / ``_build_dsse_request``,
``sigstore.dsse._sign``), sigstore-js's shapes for ``intoto`` 0.0.2 and
``dsseRequestV002`` (from ``@sigstore/sign`` ``witness/tlog/entry.js``), and answers
are checked with sigstore-python's parsers and verifiers.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import rfc8785
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from sigstore import dsse as sigstore_dsse
from sigstore._internal.rekor.client import RekorClient
from sigstore._internal.trust import Keyring, RekorKeyring
from sigstore.hashes import Hashed
from sigstore.models import TransparencyLogEntry
from sigstore_models.common.v1 import HashAlgorithm, LogId, PublicKey, PublicKeyDetails
from sigstore_models.rekor import v1 as rekor_v1
from starlette.types import ASGIApp

from sigstack.core import note, pki
from sigstack.core.keys import spki_der
from sigstack.log.engine import BatchPolicy, TransparencyLog
from sigstack.log.memory import MemoryStorage
from sigstack.services.rekor import v1 as rekor_v1_service
from sigstack.services.rekor.v1 import RekorV1Service

HOST = "rekor.example.test"
TREE_ID = 1193050959916656506
ORIGIN = f"{HOST} - {TREE_ID}"
T0 = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
DATA = Path(__file__).resolve().parent / "data"

# A client object only used for its request builders (no request is sent).
PY_CLIENT = RekorClient("http://unused.invalid")


class MutableClock:
    """A clock the test moves by hand."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class V1Log:
    """A Rekor v1 service over an in-memory log, and what a verifier needs to trust it."""

    service: RekorV1Service
    tlog: TransparencyLog
    key: ec.EllipticCurvePrivateKey
    clock: MutableClock
    storage: MemoryStorage

    @property
    def keyring(self) -> RekorKeyring:
        return keyring_for(self.key.public_key())

    def add(self, body: dict[str, Any] | bytes) -> tuple[str, dict[str, Any]]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return asyncio.run(self.service.create_entry(raw))


def open_v1_log(
    key: ec.EllipticCurvePrivateKey, clock: MutableClock, storage: MemoryStorage | None = None
) -> V1Log:
    """An opened v1 log (new unless ``storage`` holds one): ECDSA checkpoints named after
    the host, origin '<host> - <tree>', the service's index_keys wired in."""
    signer = note.EcdsaNoteSigner(HOST, key)
    if storage is None:
        storage = MemoryStorage()
        TransparencyLog.create(storage, signer, ORIGIN)
    tlog = TransparencyLog(
        storage,
        signer,
        ORIGIN,
        verifier=signer.verifier(),
        policy=BatchPolicy(max_age=0.001),
        index_keys=rekor_v1_service.index_keys,
    )
    tlog.open()
    return V1Log(RekorV1Service(tlog, key, TREE_ID, clock=clock), tlog, key, clock, storage)


def keyring_for(public_key: ec.EllipticCurvePublicKey) -> RekorKeyring:
    """sigstore-python's keyring, built as from a trusted root's tlog entry."""
    public = PublicKey(
        raw_bytes=base64.b64encode(spki_der(public_key)),
        key_details=PublicKeyDetails.PKIX_ECDSA_P256_SHA_256,
    )
    return RekorKeyring(Keyring([public]))


@dataclass
class Signer:
    """A Fulcio-like signing identity: a P-256 key and a short-lived certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def hashed(self, artifact: bytes) -> Hashed:
        return Hashed(algorithm=HashAlgorithm.SHA2_256, digest=hashlib.sha256(artifact).digest())

    def sign_artifact(self, artifact: bytes) -> bytes:
        return self.key.sign(artifact, ec.ECDSA(hashes.SHA256()))

    def hashedrekord(self, artifact: bytes) -> tuple[dict[str, Any], bytes]:
        """sigstore-python's hashedrekord 0.0.1 request for ``artifact`` and its signature."""
        signature = self.sign_artifact(artifact)
        request = PY_CLIENT._build_hashed_rekord_request(
            self.hashed(artifact), signature, self.cert
        )
        return dict(request), signature

    def envelope(self, subject_digest: str = "ab" * 32) -> sigstore_dsse.Envelope:
        """A DSSE envelope over an in-toto statement, signed as sigstore-python signs it."""
        statement = (
            sigstore_dsse.StatementBuilder()
            .subjects([sigstore_dsse.Subject(name="artifact", digest={"sha256": subject_digest})])  # type: ignore[arg-type]
            .predicate_type("https://slsa.dev/provenance/v1")
            .predicate({"buildDefinition": {"buildType": "https://example.test/build"}})
            .build()
        )
        return sigstore_dsse._sign(self.key, statement)

    def dsse(
        self, subject_digest: str = "ab" * 32
    ) -> tuple[dict[str, Any], sigstore_dsse.Envelope]:
        """sigstore-python's dsse 0.0.1 request."""
        envelope = self.envelope(subject_digest)
        return dict(PY_CLIENT._build_dsse_request(envelope, self.cert)), envelope


def make_signer(
    email: str = "Alice@Example.COM",
    uri: str = "https://github.com/org/repo/.github/workflows/ci.yml@refs/heads/main",
) -> Signer:
    ca_key = ec.generate_private_key(ec.SECP384R1())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(pki.name("sigstack test", "test CA"))
        .public_key(key.public_key())
        .serial_number(pki.random_serial())
        .not_valid_before(T0 - dt.timedelta(minutes=1))
        .not_valid_after(T0 + dt.timedelta(minutes=10))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.RFC822Name(email), x509.UniformResourceIdentifier(uri)]
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    return Signer(key, cert)


# --- sigstore-js request shapes ----------------------------------------------------------


def js_intoto_entry(
    envelope: dict[str, Any], public_key_pem: bytes, *, signature_index: int = 0
) -> dict[str, Any]:
    """An intoto 0.0.2 proposed entry shaped as @sigstore/sign's toProposedIntotoEntry.

    ``envelope`` is the DSSE envelope in JSON form (base64 payload and signatures).
    Payload and signature are base64-encoded a second time, the key once; ``hash``
    is the JCS digest sigstore-js computes, ``payloadHash`` the client's own.
    """
    sig = envelope["signatures"][signature_index]
    keyid = sig.get("keyid") or ""
    pem_text = public_key_pem.decode()
    hashed_sig: dict[str, Any] = {"sig": sig["sig"], "publicKey": pem_text}
    entry_sig: dict[str, Any] = {
        "sig": base64.b64encode(sig["sig"].encode()).decode(),
        "publicKey": base64.b64encode(public_key_pem).decode(),
    }
    if keyid:
        hashed_sig["keyid"] = keyid
        entry_sig["keyid"] = keyid
    envelope_hash = hashlib.sha256(
        rfc8785.dumps(
            {
                "payloadType": envelope["payloadType"],
                "payload": envelope["payload"],
                "signatures": [hashed_sig],
            }
        )
    ).hexdigest()
    payload = base64.b64decode(envelope["payload"])
    return {
        "apiVersion": "0.0.2",
        "kind": "intoto",
        "spec": {
            "content": {
                "envelope": {
                    "payloadType": envelope["payloadType"],
                    "payload": base64.b64encode(envelope["payload"].encode()).decode(),
                    "signatures": [entry_sig],
                },
                "hash": {"algorithm": "sha256", "value": envelope_hash},
                "payloadHash": {
                    "algorithm": "sha256",
                    "value": hashlib.sha256(payload).hexdigest(),
                },
            }
        },
    }


def upstream_envelope(name: str = "upstream_intoto_dsse.json") -> str:
    return (DATA / name).read_text()


def upstream_pem(name: str = "upstream_intoto_dsse.pem") -> bytes:
    return (DATA / name).read_bytes()


# --- oracles -----------------------------------------------------------------------------


def tle_any_kind(answer: dict[str, Any]) -> TransparencyLogEntry:
    """sigstore-python's TransparencyLogEntry for a v1 answer of ANY kind.

    ``TransparencyLogEntry._from_v1_response`` only admits hashedrekord and dsse; for
    intoto this maps the same fields the same way, so its ``_verify`` (Merkle
    inclusion, checkpoint, SET) can judge the answer.
    """
    ((_, entry),) = answer.items()
    body = json.loads(base64.b64decode(entry["body"]))
    proof = entry["verification"]["inclusionProof"]
    inner = rekor_v1.TransparencyLogEntry(
        log_index=str(entry["logIndex"]),  # type: ignore[arg-type]
        log_id=LogId(key_id=base64.b64encode(bytes.fromhex(entry["logID"]))),
        kind_version=rekor_v1.KindVersion(kind=body["kind"], version=body["apiVersion"]),
        integrated_time=str(entry["integratedTime"]),  # type: ignore[arg-type]
        inclusion_promise=rekor_v1.InclusionPromise(
            signed_entry_timestamp=entry["verification"]["signedEntryTimestamp"]
        ),
        inclusion_proof=rekor_v1.InclusionProof(
            log_index=str(proof["logIndex"]),  # type: ignore[arg-type]
            root_hash=base64.b64encode(bytes.fromhex(proof["rootHash"])),
            tree_size=str(proof["treeSize"]),  # type: ignore[arg-type]
            hashes=[base64.b64encode(bytes.fromhex(h)) for h in proof["hashes"]],
            checkpoint=rekor_v1.Checkpoint(envelope=proof["checkpoint"]),
        ),
        canonicalized_body=entry["body"],
    )
    return TransparencyLogEntry(inner)


def only_entry(answer: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    ((entry_id, entry),) = answer.items()
    return entry_id, entry


def body_of(answer: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(base64.b64decode(only_entry(answer)[1]["body"]))
    return body


# --- HTTP ----------------------------------------------------------------------------------


async def _request(app: ASGIApp, method: str, path: str, **kw: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{HOST}") as client:
        return await client.request(method, path, **kw)


def http(app: ASGIApp, method: str, path: str, **kw: Any) -> httpx.Response:
    """One request to ``app`` in-process."""
    return asyncio.run(_request(app, method, path, **kw))


class LoopbackServer:
    """uvicorn serving ``app`` on 127.0.0.1:<free port> in a background thread.

    The socket is bound and listening before the thread starts, so clients connect
    at once (the kernel queues them until the server accepts): no polling.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()
        assert not self._thread.is_alive(), "uvicorn did not stop"


def closing(v1: V1Log) -> Iterator[V1Log]:
    try:
        yield v1
    finally:
        v1.tlog.close()
