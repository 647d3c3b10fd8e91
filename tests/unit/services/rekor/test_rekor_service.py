"""Rekor v2: entries are verified before logging, and answers pass sigstore-python's checks.

The oracle is sigstore-python 4.5 itself: its TransparencyLogEntry model (strict
proto-JSON), its Merkle inclusion verifier, its checkpoint verifier with a keyring
built exactly as from a trusted root, and its entry-body consistency check.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils
from sigstore._internal.merkle import verify_merkle_inclusion
from sigstore._internal.rekor.checkpoint import verify_checkpoint
from sigstore._internal.trust import Keyring, RekorKeyring
from sigstore.errors import VerificationError as SigstoreVerificationError
from sigstore.models import TransparencyLogEntry
from sigstore_models.common.v1 import PublicKey, PublicKeyDetails
from sigstore_models.rekor.v1 import TransparencyLogEntry as TLEModel
from sigstore_models.rekor.v2.entry import Entry as EntryModel

from sigstack.core import note, pki
from sigstack.core.errors import InvalidRequest, VerificationError
from sigstack.core.keys import spki_der
from sigstack.core.merkle import leaf_hash, verify_inclusion
from sigstack.log.engine import BatchPolicy, TransparencyLog
from sigstack.log.memory import MemoryStorage
from sigstack.services.rekor.api import create_rekor_app
from sigstack.services.rekor.service import RekorService

ORIGIN = "rekor.example.test"


@pytest.fixture
def log_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def service(log_key: ed25519.Ed25519PrivateKey) -> Iterator[RekorService]:
    storage = MemoryStorage()
    signer = note.Ed25519NoteSigner(ORIGIN, log_key)
    TransparencyLog.create(storage, signer, ORIGIN)
    tlog = TransparencyLog(
        storage, signer, ORIGIN, verifier=signer.verifier(), policy=BatchPolicy(max_age=0.001)
    )
    tlog.open()
    try:
        yield RekorService(tlog, signer.verifier().key_id)
    finally:
        tlog.close()


def _cert(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(pki.name("test", "signer"))
        .issuer_name(pki.name("test", "signer"))
        .public_key(key.public_key())
        .serial_number(pki.random_serial())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(minutes=10))
        .sign(key, hashes.SHA256())
    )


def _request(
    key: ec.EllipticCurvePrivateKey,
    artifact: bytes = b"hello",
    *,
    details: str = "PKIX_ECDSA_P256_SHA_256",
    digest: bytes | None = None,
    signature: bytes | None = None,
    use_public_key: bool = False,
    snake_case: bool = False,
) -> bytes:
    digest = hashlib.sha256(artifact).digest() if digest is None else digest
    if signature is None:
        signature = key.sign(
            hashlib.sha256(artifact).digest(), ec.ECDSA(utils.Prehashed(hashes.SHA256()))
        )
    if use_public_key:
        verifier: dict[str, Any] = {
            "publicKey": {"rawBytes": base64.b64encode(spki_der(key.public_key())).decode()}
        }
    else:
        der = _cert(key).public_bytes(serialization.Encoding.DER)
        verifier = {"x509Certificate": {"rawBytes": base64.b64encode(der).decode()}}
    verifier["keyDetails"] = details
    body = {
        "hashedRekordRequestV002": {
            "digest": base64.b64encode(digest).decode(),
            "signature": {"content": base64.b64encode(signature).decode(), "verifier": verifier},
        }
    }
    text = json.dumps(body)
    if snake_case:
        for camel, snake in [
            ("hashedRekordRequestV002", "hashed_rekord_request_v002"),
            ("x509Certificate", "x509_certificate"),
            ("rawBytes", "raw_bytes"),
            ("keyDetails", "key_details"),
        ]:
            text = text.replace(camel, snake)
    return text.encode()


def _keyring(log_key: ed25519.Ed25519PrivateKey) -> RekorKeyring:
    public = PublicKey(
        raw_bytes=base64.b64encode(spki_der(log_key.public_key())),
        key_details=PublicKeyDetails.PKIX_ED25519,
    )
    return RekorKeyring(Keyring([public]))


def _add(service: RekorService, body: bytes) -> dict[str, Any]:
    return asyncio.run(service.create_entry(body))


def test_entry_answer_passes_sigstore_python_verification(
    service: RekorService, log_key: ed25519.Ed25519PrivateKey
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    answer = _add(service, _request(key))
    # Proto-JSON rules clients depend on.
    assert answer["logIndex"] == "0" and answer["integratedTime"] == "0"
    assert answer["inclusionProof"]["treeSize"] == "1" and answer["inclusionProof"]["hashes"] == []
    assert answer["kindVersion"] == {"kind": "hashedrekord", "version": "0.0.2"}
    entry = TransparencyLogEntry(TLEModel.from_dict(answer))  # strict, extra="forbid"
    verify_merkle_inclusion(entry)
    verify_checkpoint(_keyring(log_key), entry)
    # The logged body is what the verifier rebuilds from the bundle's materials.
    body = EntryModel.from_json(base64.b64decode(answer["canonicalizedBody"]))
    assert body.spec.hashed_rekord_v002 is not None
    assert body.spec.hashed_rekord_v002.data.digest == hashlib.sha256(b"hello").digest()


def test_later_entries_get_later_indexes_and_valid_proofs(
    service: RekorService, log_key: ed25519.Ed25519PrivateKey
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    for i in range(5):
        answer = _add(service, _request(key, f"artifact {i}".encode()))
        assert answer["logIndex"] == str(i)
        entry = TransparencyLogEntry(TLEModel.from_dict(answer))
        verify_merkle_inclusion(entry)
        verify_checkpoint(_keyring(log_key), entry)


def test_checkpoint_from_another_key_fails_the_oracle(service: RekorService) -> None:
    """Proves the oracle bites: the same answer does not verify under a different log key."""
    answer = _add(service, _request(ec.generate_private_key(ec.SECP256R1())))
    entry = TransparencyLogEntry(TLEModel.from_dict(answer))
    with pytest.raises(SigstoreVerificationError, match="checkpoint"):
        verify_checkpoint(_keyring(ed25519.Ed25519PrivateKey.generate()), entry)


def test_snake_case_and_public_key_verifiers_are_accepted(service: RekorService) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    assert _add(service, _request(key, snake_case=True))["logIndex"] == "0"
    answer = _add(service, _request(key, b"other", use_public_key=True))
    body = json.loads(base64.b64decode(answer["canonicalizedBody"]))
    verifier = body["spec"]["hashedRekordV002"]["signature"]["verifier"]
    assert set(verifier) == {"publicKey", "keyDetails"}


def test_bad_signature_is_refused_and_not_logged(service: RekorService) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    forged = other.sign(
        hashlib.sha256(b"hello").digest(), ec.ECDSA(utils.Prehashed(hashes.SHA256()))
    )
    with pytest.raises(VerificationError, match="does not verify"):
        _add(service, _request(key, signature=forged))
    assert service.transparency_log.checkpoint().size == 0


def test_signature_over_another_digest_is_refused(service: RekorService) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(VerificationError):
        _add(service, _request(key, digest=hashlib.sha256(b"not what was signed").digest()))


def test_wrong_digest_length_is_refused(service: RekorService) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(VerificationError, match="digest"):
        _add(service, _request(key, digest=b"\x00" * 20))


def test_key_details_must_match_the_key(service: RekorService) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(InvalidRequest, match="keyDetails"):
        _add(service, _request(key, details="PKIX_ECDSA_P384_SHA_384"))


def test_dsse_request_without_signatures_is_refused(service: RekorService) -> None:
    """dsseRequestV002 is accepted (test_rekor_v2_dsse.py), but never without signatures."""
    body = json.dumps(
        {
            "dsseRequestV002": {
                "envelope": {"payload": "", "payloadType": "x", "signatures": []},
                "verifiers": [],
            }
        }
    )
    with pytest.raises(InvalidRequest):
        _add(service, body.encode())


@pytest.mark.parametrize(
    "body",
    [b"{}", b"[]", b'{"hashedRekordRequestV002": {}}', b'{"unknown": 1}', b"not json"],
)
def test_malformed_requests_are_400(service: RekorService, body: bytes) -> None:
    with pytest.raises(InvalidRequest):
        _add(service, body)


def test_garbage_certificate_is_refused(service: RekorService) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    body = json.loads(_request(key))
    body["hashedRekordRequestV002"]["signature"]["verifier"]["x509Certificate"]["rawBytes"] = (
        base64.b64encode(b"not a certificate").decode()
    )
    with pytest.raises(InvalidRequest, match="certificate"):
        _add(service, json.dumps(body).encode())


def test_ed25519_keys_cannot_sign_digests(service: RekorService) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    spki = base64.b64encode(spki_der(key.public_key())).decode()
    body = {
        "hashedRekordRequestV002": {
            "digest": base64.b64encode(hashlib.sha256(b"x").digest()).decode(),
            "signature": {
                "content": base64.b64encode(key.sign(b"x")).decode(),
                "verifier": {"publicKey": {"rawBytes": spki}, "keyDetails": "PKIX_ED25519"},
            },
        }
    }
    with pytest.raises(InvalidRequest, match="Ed25519"):
        _add(service, json.dumps(body).encode())


# --- HTTP --------------------------------------------------------------------------------


async def _http(service: RekorService, method: str, path: str, **kw: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_rekor_app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://rekor.test") as client:
        return await client.request(method, path, **kw)


def test_http_create_entry_is_201_and_errors_name_the_problem(service: RekorService) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    resp = asyncio.run(_http(service, "POST", "/api/v2/log/entries", content=_request(key)))
    assert resp.status_code == 201, resp.text
    bad = asyncio.run(
        _http(
            service,
            "POST",
            "/api/v2/log/entries",
            content=_request(key, details="PKIX_ECDSA_P384_SHA_384"),
        )
    )
    assert bad.status_code == 400 and "keyDetails" in bad.json()["message"]
    huge = asyncio.run(_http(service, "POST", "/api/v2/log/entries", content=b"x" * (200 * 1024)))
    assert huge.status_code == 413


def test_http_read_path(service: RekorService) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    for i in range(3):
        _add(service, _request(key, bytes([i])))
    checkpoint = asyncio.run(_http(service, "GET", "/api/v2/checkpoint"))
    assert checkpoint.status_code == 200 and checkpoint.headers["cache-control"] == "no-cache"
    assert checkpoint.text.split("\n")[:2] == [ORIGIN, "3"]
    bundle = asyncio.run(_http(service, "GET", "/api/v2/tile/entries/000.p/3"))
    # Only tiles a checkpoint covers are served, so even partial ones never change.
    assert bundle.status_code == 200 and "immutable" in bundle.headers["cache-control"]
    tile = asyncio.run(_http(service, "GET", "/api/v2/tile/0/000.p/3"))
    assert tile.status_code == 200 and len(tile.content) == 3 * 32
    assert tile.headers["cache-control"] == "public, max-age=31536000, immutable"
    # Not covered by the checkpoint yet, and malformed paths.
    assert asyncio.run(_http(service, "GET", "/api/v2/tile/0/000.p/4")).status_code == 404
    assert asyncio.run(_http(service, "GET", "/api/v2/tile/0/000")).status_code == 404
    assert asyncio.run(_http(service, "GET", "/api/v2/tile/0/0")).status_code == 400
    assert asyncio.run(_http(service, "GET", "/api/v2/tile/../../etc/passwd")).status_code in (
        400,
        404,
    )


def test_tampered_proof_fails_the_oracle(service: RekorService) -> None:
    """Proves the inclusion oracle bites: a proof hash flipped by one bit is rejected."""
    key = ec.generate_private_key(ec.SECP256R1())
    answer = {}
    for i in range(3):
        answer = _add(service, _request(key, bytes([i])))
    proof = answer["inclusionProof"]
    first = bytearray(base64.b64decode(proof["hashes"][0]))
    first[0] ^= 1
    proof["hashes"][0] = base64.b64encode(bytes(first)).decode()
    with pytest.raises(SigstoreVerificationError, match="inclusion proof"):
        verify_merkle_inclusion(TransparencyLogEntry(TLEModel.from_dict(answer)))


def test_health_fails_once_the_log_stops_accepting(service: RekorService) -> None:
    ok = asyncio.run(_http(service, "GET", "/healthz"))
    assert ok.status_code == 200
    service.transparency_log.close()
    down = asyncio.run(_http(service, "GET", "/healthz"))
    assert down.status_code == 503 and "not open" in down.json()["reason"]


def test_an_identical_entry_answers_with_the_index_it_has(
    service: RekorService, log_key: ed25519.Ed25519PrivateKey
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    body = _request(key, b"once")
    first = _add(service, body)
    _add(service, _request(key, b"something else"))
    again = _add(service, body)
    assert again["logIndex"] == first["logIndex"] == "0"
    assert again["inclusionProof"]["treeSize"] == "2"
    assert service.transparency_log.checkpoint().size == 2
    entry = TransparencyLogEntry(TLEModel.from_dict(again))
    verify_merkle_inclusion(entry)
    verify_checkpoint(_keyring(log_key), entry)


def _resigned(body: bytes, key: ec.EllipticCurvePrivateKey, artifact: bytes) -> dict[str, Any]:
    """``body`` (its verifier kept byte for byte) over another artifact."""
    doc = json.loads(body)
    hr = doc["hashedRekordRequestV002"]
    digest = hashlib.sha256(artifact).digest()
    signature = key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    hr["digest"] = base64.b64encode(digest).decode()
    hr["signature"]["content"] = base64.b64encode(signature).decode()
    return dict(doc)


def test_a_parsed_verifier_is_reused_but_every_signature_and_key_details_still_checked(
    service: RekorService,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    first = _request(key, b"one")
    index = int(_add(service, first)["logIndex"])
    again = _resigned(first, key, b"two")
    assert _add(service, json.dumps(again).encode())["logIndex"] == str(index + 1)
    # The same certificate with a signature that does not verify is still refused ...
    forged = _resigned(first, ec.generate_private_key(ec.SECP256R1()), b"three")
    with pytest.raises(VerificationError):
        _add(service, json.dumps(forged).encode())
    # ... and so is the same certificate claiming another key type.
    wrong = _resigned(first, key, b"four")
    wrong["hashedRekordRequestV002"]["signature"]["verifier"]["keyDetails"] = (
        "PKIX_ECDSA_P384_SHA_384"
    )
    with pytest.raises(InvalidRequest, match="keyDetails"):
        _add(service, json.dumps(wrong).encode())


def test_the_json_answer_is_compact_and_holds_what_create_entry_returns(
    service: RekorService,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    bodies = [_request(key, b"artifact %d" % i) for i in range(5)]

    async def main() -> list[bytes]:
        return await asyncio.gather(*(service.create_entry_json(b) for b in bodies))

    answers = asyncio.run(main())
    for body, raw in zip(bodies, answers, strict=True):
        doc = json.loads(raw)
        assert raw == json.dumps(doc, separators=(",", ":")).encode()
        proof = doc["inclusionProof"]
        size = int(proof["treeSize"])
        assert proof["logIndex"] == doc["logIndex"] and int(doc["logIndex"]) < size
        leaf = base64.b64decode(doc["canonicalizedBody"])
        assert service.canonical_entry(body)[1] == leaf
        verify_inclusion(
            leaf_hash(leaf),
            int(doc["logIndex"]),
            size,
            [base64.b64decode(h) for h in proof["hashes"]],
            base64.b64decode(proof["rootHash"]),
        )
        assert f"\n{size}\n" in proof["checkpoint"]["envelope"]
        # A resubmission is deduplicated and answered through the dict API identically.
        assert _add(service, body)["canonicalizedBody"] == doc["canonicalizedBody"]
        assert _add(service, body)["logIndex"] == doc["logIndex"]
