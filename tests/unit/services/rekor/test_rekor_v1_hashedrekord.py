"""Rekor v1 hashedrekord 0.0.1: entries are verified, stored as upstream stores them,
and every answer passes sigstore-python's own checks.

Requests come from sigstore-python's ``RekorClient._build_hashed_rekord_request``;
answers are judged by ``TransparencyLogEntry._from_v1_response`` + ``_verify``
(Merkle inclusion, ECDSA checkpoint through a trusted-root keyring, SET) and by
``_validate_hashedrekord_v001_entry_body`` (the log body equals what the verifier
rebuilds from the bundle's certificate, signature and artifact digest).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from typing import Any

import pytest
import rekor_types
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, padding, rsa, utils
from rekor_kit import TREE_ID, Signer, V1Log, body_of, make_signer, only_entry
from sigstore.errors import VerificationError as SigstoreVerificationError
from sigstore.models import Bundle, TransparencyLogEntry
from sigstore.verify.verifier import _validate_hashedrekord_v001_entry_body

from sigstack.core.errors import ConfigError, InvalidRequest, VerificationError
from sigstack.core.keys import spki_der
from sigstack.core.merkle import leaf_hash
from sigstack.log.engine import TransparencyLog
from sigstack.services.rekor.v1 import EntryExists, RekorV1Service


def _with(request: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``request`` with the dotted ``path`` set to ``value`` (None deletes)."""
    out = copy.deepcopy(request)
    *parents, last = path.split(".")
    node = out
    for name in parents:
        node = node[name]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return out


def test_answer_passes_sigstore_python_verification(v1: V1Log, signer: Signer) -> None:
    request, signature = signer.hashedrekord(b"hello")
    entry_id, answer = v1.add(request)
    uuid, entry = only_entry(answer)
    assert uuid == entry_id
    # The oracle: sigstore-python's parser and its full log-entry verification.
    tle = TransparencyLogEntry._from_v1_response(answer)
    tle._verify(v1.keyring)  # inclusion proof, checkpoint signature, SET
    bundle = Bundle.from_parts(signer.cert, signature, tle)
    _validate_hashedrekord_v001_entry_body(bundle, signer.hashed(b"hello"))
    # Upstream's answer shape.
    assert entry["logIndex"] == 0 and entry["verification"]["inclusionProof"]["treeSize"] == 1
    assert entry["logID"] == hashlib.sha256(spki_der(v1.key.public_key())).hexdigest()
    assert entry["integratedTime"] == int(v1.clock.now.timestamp())


def test_entry_id_is_tree_id_then_leaf_hash(v1: V1Log, signer: Signer) -> None:
    request, _ = signer.hashedrekord(b"uuid")
    entry_id, answer = v1.add(request)
    body = base64.b64decode(only_entry(answer)[1]["body"])
    assert entry_id == f"{TREE_ID:016x}" + leaf_hash(body).hex()


def test_body_is_upstreams_canonical_form(v1: V1Log, signer: Signer) -> None:
    request, signature = signer.hashedrekord(b"canonical")
    _, answer = v1.add(request)
    raw = base64.b64decode(only_entry(answer)[1]["body"])
    parsed = rekor_types.Hashedrekord.model_validate_json(raw)
    # RFC 8785 (keys sorted, no whitespace) of kind, apiVersion, spec.
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    assert parsed.spec.root.signature.content == base64.b64encode(signature).decode()
    assert parsed.spec.root.signature.public_key is not None
    pem = base64.b64decode(str(parsed.spec.root.signature.public_key.content))
    assert pem == signer.cert.public_bytes(serialization.Encoding.PEM)


def test_nonstandard_pem_is_stored_as_standard_pem(v1: V1Log, signer: Signer) -> None:
    """A key sent with CRLF, 76-column lines and no final newline is stored re-encoded."""
    request, _ = signer.hashedrekord(b"pem")
    der = signer.cert.public_bytes(serialization.Encoding.DER)
    body = base64.encodebytes(der).decode().replace("\n", "\r\n")
    odd = f"-----BEGIN CERTIFICATE-----\r\n{body}-----END CERTIFICATE-----".encode()
    request = _with(request, "spec.signature.publicKey.content", base64.b64encode(odd).decode())
    _, answer = v1.add(request)
    stored = base64.b64decode(body_of(answer)["spec"]["signature"]["publicKey"]["content"])
    assert stored == signer.cert.public_bytes(serialization.Encoding.PEM)


def test_bare_public_key_entries_are_accepted(v1: V1Log) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    digest = hashlib.sha384(b"x").digest()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    request = {
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha384", "value": digest.hex()}},
            "signature": {
                "content": base64.b64encode(
                    key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA384())))
                ).decode(),
                "publicKey": {"content": base64.b64encode(pem).decode()},
            },
        },
    }
    _, answer = v1.add(request)
    TransparencyLogEntry._from_v1_response(answer)._verify(v1.keyring)


def test_rsa_keys_are_accepted(v1: V1Log) -> None:
    key = rsa.generate_private_key(65537, 2048)
    digest = hashlib.sha256(b"rsa").digest()
    signature = key.sign(
        digest,
        padding.PKCS1v15(),
        utils.Prehashed(hashes.SHA256()),
    )
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    request = {
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
            "signature": {
                "content": base64.b64encode(signature).decode(),
                "publicKey": {"content": base64.b64encode(pem).decode()},
            },
        },
    }
    assert only_entry(v1.add(request)[1])[1]["logIndex"] == 0


def test_integrated_time_is_stored_with_the_entry(v1: V1Log, signer: Signer) -> None:
    request, _ = signer.hashedrekord(b"time")
    entry_id, answer = v1.add(request)
    first = only_entry(answer)[1]["integratedTime"]
    v1.clock.now = v1.clock.now.replace(year=2031)
    again = v1.service.entry_by_uuid(entry_id)
    assert only_entry(again)[1]["integratedTime"] == first
    TransparencyLogEntry._from_v1_response(again)._verify(v1.keyring)


def test_duplicate_is_409_naming_the_existing_entry(v1: V1Log, signer: Signer) -> None:
    request, _ = signer.hashedrekord(b"twice")
    entry_id, _ = v1.add(request)
    v1.add(signer.hashedrekord(b"other")[0])
    with pytest.raises(EntryExists) as caught:
        v1.add(request)
    assert caught.value.http_status == 409
    assert caught.value.headers["Location"] == f"/api/v1/log/entries/{entry_id}"
    assert v1.tlog.checkpoint().size == 2


def test_set_from_another_key_fails_the_oracle(v1: V1Log, signer: Signer) -> None:
    """Proves the oracle bites: the answer does not verify under another log key."""
    from rekor_kit import keyring_for

    _, answer = v1.add(signer.hashedrekord(b"oracle")[0])
    tle = TransparencyLogEntry._from_v1_response(answer)
    other = keyring_for(ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(SigstoreVerificationError):
        tle._verify(other)


def test_tampered_integrated_time_fails_the_set(v1: V1Log, signer: Signer) -> None:
    _, answer = v1.add(signer.hashedrekord(b"set")[0])
    only_entry(answer)[1]["integratedTime"] += 1
    with pytest.raises(SigstoreVerificationError):
        TransparencyLogEntry._from_v1_response(answer)._verify(v1.keyring)


def test_body_for_another_artifact_fails_the_body_oracle(v1: V1Log, signer: Signer) -> None:
    request, signature = signer.hashedrekord(b"mine")
    _, answer = v1.add(request)
    bundle = Bundle.from_parts(
        signer.cert, signature, TransparencyLogEntry._from_v1_response(answer)
    )
    with pytest.raises(SigstoreVerificationError, match="inconsistent"):
        _validate_hashedrekord_v001_entry_body(bundle, signer.hashed(b"not mine"))


# --- refusals -------------------------------------------------------------------------------


def test_bad_signature_is_refused_and_not_logged(v1: V1Log, signer: Signer) -> None:
    request, _ = signer.hashedrekord(b"signed")
    other = make_signer().sign_artifact(b"signed")
    with pytest.raises(VerificationError, match="signature"):
        v1.add(_with(request, "spec.signature.content", base64.b64encode(other).decode()))
    assert v1.tlog.checkpoint().size == 0


def test_signature_over_another_digest_is_refused(v1: V1Log, signer: Signer) -> None:
    request, _ = signer.hashedrekord(b"signed")
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(VerificationError):
        v1.add(_with(request, "spec.data.hash.value", wrong))


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("spec.signature", None, "spec.signature is missing"),
        ("spec.signature.content", None, "content is missing"),
        ("spec.signature.content", "", "content is empty"),
        ("spec.signature.content", "not base64!", "not valid base64"),
        ("spec.signature.publicKey", None, "publicKey is missing"),
        ("spec.data", None, "spec.data is missing"),
        ("spec.data.hash.algorithm", "md5", "algorithm must be one of"),
        ("spec.data.hash.algorithm", None, "algorithm is missing"),
        ("spec.data.hash.value", "abc", "lowercase hex"),
        ("spec.data.hash.value", "AB" * 32, "lowercase hex"),
        ("spec", [], "spec must be a JSON object"),
    ],
)
def test_malformed_fields_are_named(
    v1: V1Log, signer: Signer, path: str, value: Any, message: str
) -> None:
    request, _ = signer.hashedrekord(b"fields")
    with pytest.raises(InvalidRequest, match=message):
        v1.add(_with(request, path, value))


def test_malformed_pem_is_refused(v1: V1Log, signer: Signer) -> None:
    request, _ = signer.hashedrekord(b"pem")
    for bad, message in [
        (b"not pem at all", "not valid PEM"),
        (b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "not valid PEM"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a valid X.509"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "PRIVATE KEY"),
        (signer.cert_pem + b"trailing", "unexpected data"),
        (signer.cert_pem + signer.cert_pem, "chains are not supported"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            v1.add(
                _with(request, "spec.signature.publicKey.content", base64.b64encode(bad).decode())
            )


def _key_request(public_pem: bytes, signature: bytes, digest: bytes, alg: str = "sha256") -> bytes:
    return json.dumps(
        {
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": alg, "value": digest.hex()}},
                "signature": {
                    "content": base64.b64encode(signature).decode(),
                    "publicKey": {"content": base64.b64encode(public_pem).decode()},
                },
            },
        }
    ).encode()


def _spki_pem(public_key: Any) -> bytes:
    pem: bytes = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


def test_wrong_key_types_are_refused(v1: V1Log) -> None:
    digest = hashlib.sha256(b"k").digest()
    secp256k1 = ec.generate_private_key(ec.SECP256K1())
    small_rsa = rsa.generate_private_key(65537, 1024)  # noqa: S505 (must be refused)
    dsa_key = dsa.generate_private_key(2048)
    for public, what in [
        (secp256k1.public_key(), "curve"),
        (small_rsa.public_key(), "RSA key size"),
        (dsa_key.public_key(), "unsupported public key type"),
    ]:
        with pytest.raises(InvalidRequest, match=what):
            v1.add(_key_request(_spki_pem(public), b"\x30\x00", digest))


def test_ed25519_hashedrekord_is_refused_with_guidance(v1: V1Log) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    digest = hashlib.sha256(b"e").digest()
    with pytest.raises(InvalidRequest, match="Ed25519ph"):
        v1.add(_key_request(_spki_pem(key.public_key()), key.sign(digest), digest))


def test_hash_algorithm_must_be_the_keys(v1: V1Log) -> None:
    """Upstream's algorithm registry: a P-256 key signs SHA-256 digests only."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha384(b"a").digest()
    signature = key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA384())))
    with pytest.raises(InvalidRequest, match="algorithm not allowed"):
        v1.add(_key_request(_spki_pem(key.public_key()), signature, digest, "sha384"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "rekord"}, "unsupported entry kind 'rekord'"),
        ({"kind": "cose"}, "unsupported entry kind"),
        ({"apiVersion": "0.0.2"}, "unsupported hashedrekord version '0.0.2'"),
        ({"apiVersion": None}, "apiVersion is missing"),
        ({"kind": None}, "kind is missing"),
        ({"extra": 1}, "unknown field 'extra'"),
    ],
)
def test_unknown_kind_or_version_is_refused(
    v1: V1Log, signer: Signer, change: dict[str, Any], message: str
) -> None:
    request, _ = signer.hashedrekord(b"kinds")
    for name, value in change.items():
        request = _with(request, name, value)
    with pytest.raises(InvalidRequest, match=message):
        v1.add(request)


@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b"null", b'"x"'])
def test_non_object_bodies_are_400(v1: V1Log, raw: bytes) -> None:
    with pytest.raises(InvalidRequest):
        v1.add(raw)


# --- configuration ---------------------------------------------------------------------


def test_service_refuses_a_v2_style_origin_and_wrong_keys(v1: V1Log) -> None:
    with pytest.raises(ConfigError, match="origin"):
        RekorV1Service(v1.tlog, v1.key, TREE_ID + 1)
    with pytest.raises(ConfigError, match="P-256"):
        RekorV1Service(v1.tlog, ec.generate_private_key(ec.SECP384R1()), TREE_ID)
    for bad in (0, -1, 2**63, True):
        with pytest.raises(ConfigError, match="tree ID"):
            RekorV1Service(v1.tlog, v1.key, bad)
    assert isinstance(v1.tlog, TransparencyLog)


def test_certificate_with_unsupported_key_is_refused(v1: V1Log) -> None:
    import datetime as dt

    from sigstack.core import pki

    key = ec.generate_private_key(ec.SECP256K1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(pki.name("t", "t"))
        .issuer_name(pki.name("t", "t"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(minutes=1))
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(InvalidRequest, match="curve"):
        v1.add(_key_request(pem, b"\x30\x00", hashlib.sha256(b"c").digest()))
