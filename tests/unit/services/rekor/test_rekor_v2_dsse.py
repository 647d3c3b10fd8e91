"""Rekor v2 dsseRequestV002 (sigstore-js 5, cosign <= 3.0): verified, stored as rekor-tiles.

Requests are shaped as ``@sigstore/sign``'s ``toCreateEntryRequestDSSE`` (envelope in
proto-JSON, one x509Certificate verifier with keyDetails). The expected stored entry
is built independently with ``sigstore_models.rekor.v2`` (``Entry`` / ``Spec`` /
``DSSELogEntryV002``) and compared byte for byte; answers are judged by
sigstore-python's TransparencyLogEntry model, inclusion and checkpoint verifiers.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from rekor_kit import Signer, make_signer
from sigstore._internal.merkle import verify_merkle_inclusion
from sigstore._internal.rekor.checkpoint import verify_checkpoint
from sigstore._internal.trust import Keyring, RekorKeyring
from sigstore.models import TransparencyLogEntry
from sigstore_models.common.v1 import (
    HashAlgorithm,
    HashOutput,
    PublicKey,
    PublicKeyDetails,
    X509Certificate,
)
from sigstore_models.rekor.v1 import TransparencyLogEntry as TLEModel
from sigstore_models.rekor.v2 import dsse as v2_dsse
from sigstore_models.rekor.v2 import entry as v2_entry
from sigstore_models.rekor.v2 import verifier as v2_verifier

from sigstack.core import note
from sigstack.core.errors import InvalidRequest, VerificationError
from sigstack.core.keys import spki_der
from sigstack.log.engine import BatchPolicy, TransparencyLog
from sigstack.log.memory import MemoryStorage
from sigstack.services.rekor import dsse
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


def _keyring(log_key: ed25519.Ed25519PrivateKey) -> RekorKeyring:
    public = PublicKey(
        raw_bytes=base64.b64encode(spki_der(log_key.public_key())),
        key_details=PublicKeyDetails.PKIX_ED25519,
    )
    return RekorKeyring(Keyring([public]))


PAYLOAD_TYPE = "application/vnd.in-toto+json"
PAYLOAD = json.dumps({"_type": "https://in-toto.io/Statement/v1", "subject": []}).encode()


def _cert_verifier(signer: Signer, details: str = "PKIX_ECDSA_P256_SHA_256") -> dict[str, Any]:
    der = signer.cert.public_bytes(serialization.Encoding.DER)
    return {"x509Certificate": {"rawBytes": base64.b64encode(der).decode()}, "keyDetails": details}


def _sig(key: Any, payload: bytes = PAYLOAD, payload_type: str = PAYLOAD_TYPE) -> bytes:
    message = dsse.pae(payload_type, payload)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    return bytes(key.sign(message, ec.ECDSA(hashes.SHA256())))


def _request(
    signatures: list[bytes], verifiers: list[dict[str, Any]], payload: bytes = PAYLOAD
) -> bytes:
    return json.dumps(
        {
            "dsseRequestV002": {
                "envelope": {
                    "payload": base64.b64encode(payload).decode(),
                    "payloadType": PAYLOAD_TYPE,
                    "signatures": [
                        {"sig": base64.b64encode(s).decode(), "keyid": ""} for s in signatures
                    ],
                },
                "verifiers": verifiers,
            }
        }
    ).encode()


def _add(service: RekorService, body: bytes) -> dict[str, Any]:
    return asyncio.run(service.create_entry(body))


def test_js_shaped_request_is_stored_as_rekor_tiles_stores_it(
    service: RekorService, log_key: ed25519.Ed25519PrivateKey
) -> None:
    signer = make_signer()
    signature = _sig(signer.key)
    answer = _add(service, _request([signature], [_cert_verifier(signer)]))
    assert answer["kindVersion"] == {"kind": "dsse", "version": "0.0.2"}
    assert answer["integratedTime"] == "0"
    entry = TransparencyLogEntry(TLEModel.from_dict(answer))
    verify_merkle_inclusion(entry)
    verify_checkpoint(_keyring(log_key), entry)
    der = signer.cert.public_bytes(serialization.Encoding.DER)
    expected = v2_entry.Entry(
        kind="dsse",
        api_version="0.0.2",
        spec=v2_entry.Spec(
            dsse_v002=v2_dsse.DSSELogEntryV002(
                payload_hash=HashOutput(
                    algorithm=HashAlgorithm.SHA2_256,
                    digest=base64.b64encode(hashlib.sha256(PAYLOAD).digest()),
                ),
                signatures=[
                    v2_verifier.Signature(
                        content=base64.b64encode(signature),
                        verifier=v2_verifier.Verifier(
                            x509_certificate=X509Certificate(raw_bytes=base64.b64encode(der)),
                            key_details=PublicKeyDetails.PKIX_ECDSA_P256_SHA_256,
                        ),
                    )
                ],
            )
        ),
    )
    body = base64.b64decode(answer["canonicalizedBody"])
    assert body == rfc8785.dumps(expected.to_dict())
    assert v2_entry.Entry.from_json(body) == expected


def test_signatures_are_sorted_by_raw_bytes(service: RekorService) -> None:
    one, two = make_signer(), make_signer()
    sigs = [_sig(one.key), _sig(two.key)]
    answer = _add(service, _request(sigs, [_cert_verifier(two), _cert_verifier(one)]))
    body = v2_entry.Entry.from_json(base64.b64decode(answer["canonicalizedBody"]))
    assert body.spec.dsse_v002 is not None
    stored = body.spec.dsse_v002.signatures
    assert [s.content for s in stored] == sorted(sigs)
    owner = {s.content: s.verifier.x509_certificate.raw_bytes for s in stored}  # type: ignore[union-attr]
    assert owner[sigs[0]] == one.cert.public_bytes(serialization.Encoding.DER)


def test_public_key_and_ed25519_verifiers(service: RekorService) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    verifier = {
        "publicKey": {"rawBytes": base64.b64encode(spki_der(key.public_key())).decode()},
        "keyDetails": "PKIX_ED25519",
    }
    answer = _add(service, _request([_sig(key)], [verifier]))
    assert answer["kindVersion"]["kind"] == "dsse"


def test_identical_request_answers_with_the_index_it_has(service: RekorService) -> None:
    signer = make_signer()
    body = _request([_sig(signer.key)], [_cert_verifier(signer)])
    first = _add(service, body)
    again = _add(service, body)
    assert first["logIndex"] == again["logIndex"] == "0"


# --- refusals -------------------------------------------------------------------------------


def test_bad_signature_is_refused_and_not_logged(service: RekorService) -> None:
    signer = make_signer()
    forged = _sig(make_signer().key)
    with pytest.raises(VerificationError, match="does not verify"):
        _add(service, _request([forged], [_cert_verifier(signer)]))
    assert service.transparency_log.checkpoint().size == 0


def test_signature_over_another_payload_is_refused(service: RekorService) -> None:
    signer = make_signer()
    with pytest.raises(VerificationError):
        _add(service, _request([_sig(signer.key, b"other")], [_cert_verifier(signer)]))


def test_key_details_must_match_the_key(service: RekorService) -> None:
    signer = make_signer()
    with pytest.raises(InvalidRequest, match="keyDetails"):
        _add(
            service,
            _request([_sig(signer.key)], [_cert_verifier(signer, "PKIX_ECDSA_P384_SHA_384")]),
        )


def test_every_signature_and_every_verifier_must_be_accounted_for(service: RekorService) -> None:
    one, two = make_signer(), make_signer()
    with pytest.raises(VerificationError, match="signature 1"):
        _add(service, _request([_sig(one.key), _sig(two.key)], [_cert_verifier(one)]))
    with pytest.raises(VerificationError, match="verifier 1"):
        _add(service, _request([_sig(one.key)], [_cert_verifier(one), _cert_verifier(two)]))


def test_duplicate_verifiers_are_refused(service: RekorService) -> None:
    signer = make_signer()
    with pytest.raises(InvalidRequest, match="duplicates"):
        _add(service, _request([_sig(signer.key)], [_cert_verifier(signer)] * 2))


def test_counts_are_bounded(service: RekorService) -> None:
    signer = make_signer()
    with pytest.raises(InvalidRequest, match="at most 10"):
        _add(service, _request([_sig(signer.key)] * 11, [_cert_verifier(signer)]))
    many = [_cert_verifier(make_signer()) for _ in range(11)]
    with pytest.raises(InvalidRequest, match="at most 10"):
        _add(service, _request([_sig(signer.key)], many))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r["dsseRequestV002"].update(verifiers=[]),
        lambda r: r["dsseRequestV002"]["envelope"].update(signatures=[]),
        lambda r: r["dsseRequestV002"]["envelope"]["signatures"][0].update(sig=""),
        lambda r: r["dsseRequestV002"].pop("envelope"),
        lambda r: r["dsseRequestV002"]["verifiers"][0].pop("keyDetails"),
        lambda r: r.update(hashedRekordRequestV002={}),
    ],
)
def test_malformed_dsse_requests_are_400(service: RekorService, mutate: Any) -> None:
    signer = make_signer()
    request = json.loads(_request([_sig(signer.key)], [_cert_verifier(signer)]))
    mutate(request)
    with pytest.raises(InvalidRequest):
        _add(service, json.dumps(request).encode())


def test_envelope_signatures_are_verified_on_the_check_thread_not_the_event_loop(
    service: RekorService, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    real = dsse.match_signatures

    def recorded(*args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(dsse, "match_signatures", recorded)
    signer = make_signer()
    answer = _add(service, _request([_sig(signer.key)], [_cert_verifier(signer)]))
    assert answer["kindVersion"]["kind"] == "dsse"
    assert threads == ["sigstack-checks"]
    # A signature that does not verify is still refused, from that thread.
    other = make_signer()
    with pytest.raises(VerificationError):
        _add(service, _request([_sig(other.key)], [_cert_verifier(signer)]))
    assert threads == ["sigstack-checks", "sigstack-checks"]
