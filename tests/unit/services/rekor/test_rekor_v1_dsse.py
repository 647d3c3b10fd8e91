"""Rekor v1 dsse 0.0.1: every envelope signature is verified, the body is upstream's.

Requests come from sigstore-python (``sigstore.dsse._sign`` +
``RekorClient._build_dsse_request``) and from envelopes signed by upstream Rekor's own
test tooling (``data/``, see PROVENANCE.md). Answers are judged by sigstore-python's
``TransparencyLogEntry._from_v1_response`` + ``_verify`` and its
``_validate_dsse_v001_entry_body``, and bodies parsed with ``rekor_types.Dsse``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
import rekor_types
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rekor_kit import (
    Signer,
    V1Log,
    body_of,
    make_signer,
    only_entry,
    upstream_envelope,
    upstream_pem,
)
from sigstore.errors import VerificationError as SigstoreVerificationError
from sigstore.models import Bundle, TransparencyLogEntry
from sigstore.verify.verifier import _validate_dsse_v001_entry_body

from sigstack.core.errors import InvalidRequest, VerificationError
from sigstack.services.rekor import dsse as dsse_mod
from sigstack.services.rekor.v1 import EntryExists


def _standard_pem(pem: bytes) -> bytes:
    key = serialization.load_pem_public_key(pem)
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _dsse_request(envelope: str, *pems: bytes) -> dict[str, Any]:
    return {
        "apiVersion": "0.0.1",
        "kind": "dsse",
        "spec": {
            "proposedContent": {
                "envelope": envelope,
                "verifiers": [base64.b64encode(p).decode() for p in pems],
            }
        },
    }


def test_sigstore_python_attestation_passes_its_own_checks(v1: V1Log, signer: Signer) -> None:
    request, envelope = signer.dsse()
    _, answer = v1.add(request)
    tle = TransparencyLogEntry._from_v1_response(answer)
    tle._verify(v1.keyring)
    bundle = Bundle._from_parts(signer.cert, envelope, tle)
    _validate_dsse_v001_entry_body(bundle)  # payload hash and [signature, verifier] list


def test_body_is_upstreams_canonical_form(v1: V1Log, signer: Signer) -> None:
    request, envelope = signer.dsse()
    _, answer = v1.add(request)
    raw = base64.b64decode(only_entry(answer)[1]["body"])
    parsed = rekor_types.Dsse.model_validate_json(raw)
    assert parsed.spec.root.proposed_content is None
    body = json.loads(raw)
    envelope_text = request["spec"]["proposedContent"]["envelope"]
    assert body == {
        "apiVersion": "0.0.1",
        "kind": "dsse",
        "spec": {
            "envelopeHash": {
                "algorithm": "sha256",
                "value": hashlib.sha256(envelope_text.encode()).hexdigest(),
            },
            "payloadHash": {
                "algorithm": "sha256",
                "value": hashlib.sha256(envelope._inner.payload).hexdigest(),
            },
            "signatures": [
                {
                    "signature": json.loads(envelope_text)["signatures"][0]["sig"],
                    "verifier": base64.b64encode(signer.cert_pem).decode(),
                }
            ],
        },
    }
    assert raw == json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def test_upstream_envelope_is_verified_and_key_pem_canonicalized(v1: V1Log) -> None:
    """An envelope signed by upstream's tooling; its PEM (no final newline) is re-encoded."""
    envelope = upstream_envelope()
    pem = upstream_pem()
    assert not pem.endswith(b"\n")
    _, answer = v1.add(_dsse_request(envelope, pem))
    spec = body_of(answer)["spec"]
    assert spec["signatures"] == [
        {
            "signature": json.loads(envelope)["signatures"][0]["sig"],
            "verifier": base64.b64encode(_standard_pem(pem)).decode(),
        }
    ]
    payload = base64.b64decode(json.loads(envelope)["payload"])
    assert spec["payloadHash"]["value"] == hashlib.sha256(payload).hexdigest()
    TransparencyLogEntry._from_v1_response(answer)._verify(v1.keyring)


def test_upstream_multi_signature_envelope_sorts_signatures(v1: V1Log) -> None:
    """Two signatures (ECDSA and RSA-2048): stored sorted by their base64 text."""
    envelope = upstream_envelope("upstream_intoto_multi_dsse.json")
    ec_pem, rsa_pem = upstream_pem(), upstream_pem("upstream_intoto_multi_pub2.pem")
    _, answer = v1.add(_dsse_request(envelope, rsa_pem, ec_pem))
    signatures = body_of(answer)["spec"]["signatures"]
    texts = [s["sig"] for s in json.loads(envelope)["signatures"]]
    assert [s["signature"] for s in signatures] == sorted(texts)
    by_sig = {s["signature"]: base64.b64decode(s["verifier"]) for s in signatures}
    assert by_sig[texts[0]] == _standard_pem(ec_pem)
    assert by_sig[texts[1]] == _standard_pem(rsa_pem)


def test_in_toto_subjects_are_kept_for_search(v1: V1Log, signer: Signer) -> None:
    request, _ = signer.dsse(subject_digest="cd" * 32)
    v1.add(request)
    found = v1.service.search_index(json.dumps({"hash": "sha256:" + "cd" * 32}).encode())
    assert len(found) == 1


def test_duplicate_attestation_is_409(v1: V1Log, signer: Signer) -> None:
    request, _ = signer.dsse()
    v1.add(request)
    with pytest.raises(EntryExists):
        v1.add(request)


def test_tampered_payload_hash_fails_the_body_oracle(v1: V1Log, signer: Signer) -> None:
    """Proves the body oracle bites."""
    request, envelope = signer.dsse()
    _, answer = v1.add(request)
    other = signer.envelope(subject_digest="ef" * 32)
    bundle = Bundle._from_parts(signer.cert, other, TransparencyLogEntry._from_v1_response(answer))
    with pytest.raises(SigstoreVerificationError, match="payload hash"):
        _validate_dsse_v001_entry_body(bundle)
    assert envelope != other


# --- refusals -------------------------------------------------------------------------------


def test_bad_signature_is_refused(v1: V1Log, signer: Signer) -> None:
    envelope = json.loads(upstream_envelope())
    sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    sig[-1] ^= 1
    envelope["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(VerificationError, match="does not verify"):
        v1.add(_dsse_request(json.dumps(envelope), upstream_pem()))
    assert v1.tlog.checkpoint().size == 0


def test_a_signature_no_verifier_verifies_is_refused(v1: V1Log) -> None:
    """Multi-signature envelope with only the ECDSA key: the RSA signature is unaccounted for."""
    envelope = upstream_envelope("upstream_intoto_multi_dsse.json")
    with pytest.raises(VerificationError, match="signature 1 does not verify"):
        v1.add(_dsse_request(envelope, upstream_pem()))


def test_a_verifier_that_verifies_nothing_is_refused(v1: V1Log) -> None:
    stranger = make_signer().cert_pem
    with pytest.raises(VerificationError, match="verifier 1 does not verify"):
        v1.add(_dsse_request(upstream_envelope(), upstream_pem(), stranger))


def test_the_wrong_key_is_refused(v1: V1Log, signer: Signer) -> None:
    with pytest.raises(VerificationError):
        v1.add(_dsse_request(upstream_envelope(), signer.cert_pem))


def test_payload_type_is_signed(v1: V1Log) -> None:
    envelope = json.loads(upstream_envelope())
    envelope["payloadType"] = "application/vnd.other+json"
    with pytest.raises(VerificationError):
        v1.add(_dsse_request(json.dumps(envelope), upstream_pem()))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["spec"].update(signatures=[]), "computed by the log"),
        (lambda r: r["spec"].update(payloadHash={}), "computed by the log"),
        (lambda r: r["spec"].pop("proposedContent"), "proposedContent is missing"),
        (lambda r: r["spec"]["proposedContent"].update(envelope="{"), "not valid JSON"),
        (lambda r: r["spec"]["proposedContent"].update(envelope="[]"), "must be a JSON object"),
        (lambda r: r["spec"]["proposedContent"].update(verifiers=[]), "verifiers is empty"),
        (lambda r: r["spec"]["proposedContent"].update(verifiers=["%%%"]), "not valid base64"),
        (
            lambda r: r["spec"]["proposedContent"].update(
                verifiers=[base64.b64encode(b"no pem").decode()]
            ),
            "not valid PEM",
        ),
        (lambda r: r.update(apiVersion="0.0.2"), "unsupported dsse version"),
    ],
)
def test_malformed_requests_are_named(v1: V1Log, mutate: Any, message: str) -> None:
    request = _dsse_request(upstream_envelope(), upstream_pem())
    mutate(request)
    with pytest.raises(InvalidRequest, match=message):
        v1.add(request)


def test_envelope_fields_are_checked(v1: V1Log) -> None:
    good = json.loads(upstream_envelope())
    changes: list[tuple[dict[str, Any], str]] = [
        ({"payloadType": None}, "payloadType is missing"),
        ({"payload": "@@@"}, "payload is not valid base64"),
        ({"signatures": []}, "signatures is empty"),
        ({"signatures": [{"keyid": ""}]}, "sig is missing"),
        ({"signatures": [{"sig": 5}]}, "must be a string"),
    ]
    for change, message in changes:
        envelope = {**good, **change}
        envelope = {k: v for k, v in envelope.items() if v is not None}
        with pytest.raises(InvalidRequest, match=message):
            v1.add(_dsse_request(json.dumps(envelope), upstream_pem()))


def test_lone_surrogates_are_400_not_500(v1: V1Log) -> None:
    envelope = upstream_envelope().replace(
        '"application/vnd.in-toto+json"', '"application/\\ud800"'
    )
    assert "\\ud800" in envelope
    with pytest.raises(InvalidRequest, match="not valid Unicode"):
        v1.add(_dsse_request(envelope, upstream_pem()))


def test_signature_and_verifier_counts_are_bounded(v1: V1Log) -> None:
    good = json.loads(upstream_envelope())
    many = {**good, "signatures": good["signatures"] * (dsse_mod.MAX_SIGNATURES + 1)}
    with pytest.raises(InvalidRequest, match="at most 10"):
        v1.add(_dsse_request(json.dumps(many), upstream_pem()))
    with pytest.raises(InvalidRequest, match="at most 10"):
        v1.add(_dsse_request(upstream_envelope(), *[upstream_pem()] * 11))


def test_url_safe_envelope_base64_is_accepted(v1: V1Log) -> None:
    """DSSE implementations decode standard base64, then URL-safe (go-securesystemslib)."""
    key = ec.generate_private_key(ec.SECP256R1())
    payload = b'{"_type":"x"}' + bytes([0xFB, 0xFF])  # encodes with '+' / '/' characters
    sig = key.sign(dsse_mod.pae("application/x", payload), ec.ECDSA(hashes.SHA256()))
    envelope: dict[str, Any] = {
        "payloadType": "application/x",
        "payload": base64.urlsafe_b64encode(payload).decode(),
        "signatures": [{"sig": base64.urlsafe_b64encode(sig).decode()}],
    }
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _, answer = v1.add(_dsse_request(json.dumps(envelope), pem))
    spec = body_of(answer)["spec"]
    assert spec["payloadHash"]["value"] == hashlib.sha256(payload).hexdigest()
    assert spec["signatures"][0]["signature"] == envelope["signatures"][0]["sig"]
