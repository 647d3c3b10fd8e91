"""Rekor v1 intoto 0.0.2 (what ``@sigstore/cli attest`` uploads): verified, stored as upstream.

Requests are shaped as sigstore-js's ``toProposedIntotoEntry`` builds them (payload
and signature base64-encoded twice, the PEM key once, a client-computed envelope
hash), over envelopes signed by upstream Rekor's own test tooling (``data/``) and
by sigstore-python. Answers are judged by sigstore-python's entry verification
(inclusion proof, checkpoint, SET), the body is parsed with ``rekor_types.Intoto``
and checked the way sigstore-js's ``verifyIntoto002TLogBody`` checks it.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from typing import Any

import pytest
import rekor_types
from rekor_kit import (
    Signer,
    V1Log,
    body_of,
    js_intoto_entry,
    make_signer,
    only_entry,
    tle_any_kind,
    upstream_envelope,
    upstream_pem,
)

from sigstack.core.errors import InvalidRequest, VerificationError
from sigstack.services.rekor.v1 import EntryExists


def _js_checks(answer: dict[str, Any], envelope: dict[str, Any]) -> None:
    """sigstore-js's verifyIntoto002TLogBody: one signature, equal sig, equal payload digest."""
    body = body_of(answer)
    signatures = body["spec"]["content"]["envelope"]["signatures"]
    assert len(signatures) == 1
    tlog_sig = base64.b64decode(base64.b64decode(signatures[0]["sig"]))
    assert tlog_sig == base64.b64decode(envelope["signatures"][0]["sig"])
    digest = bytes.fromhex(body["spec"]["content"]["payloadHash"]["value"])
    assert digest == hashlib.sha256(base64.b64decode(envelope["payload"])).digest()


def test_upstream_envelope_as_sigstore_js_uploads_it(v1: V1Log) -> None:
    envelope = json.loads(upstream_envelope())
    request = js_intoto_entry(envelope, upstream_pem())
    _, answer = v1.add(request)
    tle_any_kind(answer)._verify(v1.keyring)
    _js_checks(answer, envelope)
    raw = base64.b64decode(only_entry(answer)[1]["body"])
    parsed = rekor_types.Intoto.model_validate_json(raw)
    assert parsed.api_version == "0.0.2"
    # Stored as upstream stores it: no payload, signatures and key as sent, the
    # client's envelope hash, the log's payload hash.
    content = json.loads(raw)["spec"]["content"]
    sent = request["spec"]["content"]
    assert "payload" not in content["envelope"]
    assert content["envelope"]["signatures"] == sent["envelope"]["signatures"]
    assert content["hash"] == sent["hash"]
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()


def test_sigstore_python_envelope_with_a_certificate(v1: V1Log, signer: Signer) -> None:
    envelope = json.loads(signer.envelope().to_json())
    _, answer = v1.add(js_intoto_entry(envelope, signer.cert_pem))
    tle_any_kind(answer)._verify(v1.keyring)
    _js_checks(answer, envelope)
    # Findable by the certificate's email (case-insensitive) and the statement's subject.
    for query in ({"email": "alice@example.com"}, {"hash": "ab" * 32}):
        assert len(v1.service.search_index(json.dumps(query).encode())) == 1


def test_keyid_is_kept_when_present(v1: V1Log) -> None:
    envelope = json.loads(upstream_envelope())
    envelope["signatures"][0]["keyid"] = "my-key"
    request = js_intoto_entry(envelope, upstream_pem())
    _, answer = v1.add(request)
    stored = body_of(answer)["spec"]["content"]["envelope"]["signatures"][0]
    assert stored["keyid"] == "my-key"


def test_client_payload_hash_is_replaced_by_the_logs(v1: V1Log) -> None:
    envelope = json.loads(upstream_envelope())
    request = js_intoto_entry(envelope, upstream_pem())
    request["spec"]["content"]["payloadHash"]["value"] = "00" * 32
    _, answer = v1.add(request)
    payload = base64.b64decode(envelope["payload"])
    stored = body_of(answer)["spec"]["content"]["payloadHash"]["value"]
    assert stored == hashlib.sha256(payload).hexdigest()


def test_multi_signature_envelope_with_one_key_per_signature(v1: V1Log) -> None:
    envelope = json.loads(upstream_envelope("upstream_intoto_multi_dsse.json"))
    request = js_intoto_entry(envelope, upstream_pem())
    second = js_intoto_entry(
        envelope, upstream_pem("upstream_intoto_multi_pub2.pem"), signature_index=1
    )
    request["spec"]["content"]["envelope"]["signatures"].append(
        second["spec"]["content"]["envelope"]["signatures"][0]
    )
    _, answer = v1.add(request)
    stored = body_of(answer)["spec"]["content"]["envelope"]["signatures"]
    assert stored == request["spec"]["content"]["envelope"]["signatures"]  # order as sent
    tle_any_kind(answer)._verify(v1.keyring)


def test_duplicate_is_409(v1: V1Log) -> None:
    request = js_intoto_entry(json.loads(upstream_envelope()), upstream_pem())
    v1.add(request)
    with pytest.raises(EntryExists):
        v1.add(request)


# --- refusals -------------------------------------------------------------------------------


def _request() -> dict[str, Any]:
    return js_intoto_entry(json.loads(upstream_envelope()), upstream_pem())


def test_bad_signature_is_refused(v1: V1Log) -> None:
    envelope = json.loads(upstream_envelope())
    sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    sig[10] ^= 1
    envelope["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(VerificationError):
        v1.add(js_intoto_entry(envelope, upstream_pem()))
    assert v1.tlog.checkpoint().size == 0


def test_wrong_key_is_refused(v1: V1Log) -> None:
    with pytest.raises(VerificationError):
        v1.add(js_intoto_entry(json.loads(upstream_envelope()), make_signer().cert_pem))


def test_payload_must_be_double_encoded(v1: V1Log) -> None:
    request = _request()
    envelope = json.loads(upstream_envelope())
    request["spec"]["content"]["envelope"]["payload"] = envelope["payload"]  # encoded once
    with pytest.raises((InvalidRequest, VerificationError)):
        v1.add(request)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("spec.content.hash", None, "hash is missing"),
        ("spec.content.hash.algorithm", "sha512", "must be 'sha256'"),
        ("spec.content.hash.value", "xyz", "64 lowercase hex"),
        ("spec.content.envelope.payload", None, "payload is missing"),
        ("spec.content.envelope.payload", "!!", "not valid base64"),
        ("spec.content.envelope.payloadType", None, "payloadType is missing"),
        ("spec.content.envelope.payloadType", "", "payloadType is empty"),
        ("spec.content.envelope.signatures", [], "signatures is empty"),
        ("spec.content.envelope.signatures.0.publicKey", None, "publicKey is missing"),
        ("spec.content.envelope.signatures.0.sig", None, "sig is missing"),
        ("spec.content.envelope.signatures.0.keyid", 7, "keyid must be a string"),
        ("spec.content", None, "content is missing"),
        ("apiVersion", "0.0.1", "unsupported intoto version '0.0.1'"),
    ],
)
def test_malformed_fields_are_named(v1: V1Log, path: str, value: Any, message: str) -> None:
    request = copy.deepcopy(_request())
    *parents, last = path.split(".")
    node: Any = request
    for name in parents:
        node = node[int(name)] if isinstance(node, list) else node[name]
    if value is None:
        del node[last]
    else:
        node[last] = value
    with pytest.raises(InvalidRequest, match=message):
        v1.add(request)


def test_malformed_pem_is_refused(v1: V1Log) -> None:
    request = _request()
    bad = base64.b64encode(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    request["spec"]["content"]["envelope"]["signatures"][0]["publicKey"] = bad.decode()
    with pytest.raises(InvalidRequest, match="public key"):
        v1.add(request)
