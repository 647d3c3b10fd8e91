"""TimestampAuthority: granted tokens checked by independent verifiers, and every refusal.

Oracles: rfc3161-client used exactly as sigstore-python uses it (request builder, decoder,
``VerifierBuilder().tsa_certificate(leaf).add_root_certificate(root)``), ``openssl ts
-verify``, ``cryptography`` for the raw signature, asn1crypto for structure. A tampered
token is shown to FAIL both verifiers, so a passing verification means something.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms, tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from rfc3161_client import (
    HashAlgorithm,
    TimestampRequestBuilder,
    VerificationError,
    VerifierBuilder,
    decode_timestamp_response,
)

from sigstack.core import pki
from sigstack.core.errors import InvalidRequest, Unavailable
from sigstack.services.tsa.config import DEFAULT_POLICY_OID
from sigstack.services.tsa.service import FailureInfo, TimestampRejected

SIGNATURE = b"an artifact signature, as a Sigstore client timestamps it"
SHA256 = hashlib.sha256(SIGNATURE).digest()

DerRequest = Callable[..., bytes]


def python_client_request(
    message: bytes = SIGNATURE, algorithm: HashAlgorithm = HashAlgorithm.SHA256
) -> Any:
    """The request sigstore-python sends: SHA-256 imprint, nonce, certReq."""
    return (
        TimestampRequestBuilder().hash_algorithm(algorithm).data(message).nonce(nonce=True).build()
    )


def signer_info(response: tsp.TimeStampResp) -> cms.SignerInfo:
    infos = response["time_stamp_token"]["content"]["signer_infos"]
    assert len(infos) == 1
    return infos[0]


def tst_info(response: tsp.TimeStampResp) -> tsp.TSTInfo:
    return response["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed


# --- granted tokens against independent verifiers ---------------------------------------


def test_sigstore_python_request_verifies_with_rfc3161_client(tsa_kit: Any) -> None:
    service = tsa_kit.service()
    request = python_client_request()
    der = service.timestamp(request.as_bytes()).der

    response = decode_timestamp_response(der)
    assert response.status == 0
    tsa_kit.rfc3161_verify(der, SIGNATURE)
    # The stricter form: bound to the request's nonce and to our policy.
    VerifierBuilder.from_request(request).tsa_certificate(tsa_kit.leaf).add_root_certificate(
        tsa_kit.root
    ).build().verify_message(response, SIGNATURE)
    VerifierBuilder(policy_id=x509.ObjectIdentifier(DEFAULT_POLICY_OID)).tsa_certificate(
        tsa_kit.leaf
    ).add_root_certificate(tsa_kit.root).build().verify_message(response, SIGNATURE)


def test_sha512_request_verifies_with_rfc3161_client(tsa_kit: Any) -> None:
    request = python_client_request(algorithm=HashAlgorithm.SHA512)
    der = tsa_kit.service().timestamp(request.as_bytes()).der
    tsa_kit.rfc3161_verify(der, SIGNATURE)
    imprint = tst_info(tsa_kit.token(der))["message_imprint"]
    assert imprint["hash_algorithm"]["algorithm"].native == "sha512"


def test_openssl_verifies_token(tsa_kit: Any) -> None:
    der = tsa_kit.service().timestamp(python_client_request().as_bytes()).der
    result = tsa_kit.openssl_verify(der, SIGNATURE)
    assert result.returncode == 0, result.stderr
    assert "Verification: OK" in result.stdout


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
def test_openssl_verifies_each_supported_imprint(
    tsa_kit: Any, der_request: DerRequest, algorithm: str
) -> None:
    digest = hashlib.new(algorithm, SIGNATURE).digest()
    der = tsa_kit.service().timestamp(der_request(digest, algorithm=algorithm, nonce=99)).der
    result = tsa_kit.openssl_verify(der, SIGNATURE)
    assert result.returncode == 0, result.stderr


def test_openssl_checks_the_request_too(tsa_kit: Any) -> None:
    """``openssl ts -verify -queryfile`` also matches nonce, imprint and policy."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not on PATH: the OpenSSL oracle cannot run")
    request = python_client_request()
    der = tsa_kit.service().timestamp(request.as_bytes()).der
    tmp: Path = tsa_kit.tmp
    (tmp / "q.tsq").write_bytes(request.as_bytes())
    (tmp / "r.tsr").write_bytes(der)
    (tmp / "root.pem").write_text(pki.cert_pem(tsa_kit.root))
    result = subprocess.run(
        [openssl, "ts", "-verify", "-queryfile", str(tmp / "q.tsq"), "-in", str(tmp / "r.tsr"),
         "-CAfile", str(tmp / "root.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    # No -untrusted: the leaf must come from the token itself (certReq was set).
    assert result.returncode == 0, result.stderr


def test_chain_with_intermediate_verifies(tsa_kit: Any) -> None:
    inter_key = ec.generate_private_key(ec.SECP384R1())
    intermediate = pki.build_intermediate_ca(
        inter_key.public_key(),
        pki.name("sigstack", "tsa intermediate"),
        tsa_kit.root,
        tsa_kit.root_key,
        tsa_kit.root.not_valid_before_utc,
        tsa_kit.root.not_valid_after_utc,
        extended_key_usages=(ExtendedKeyUsageOID.TIME_STAMPING,),
    )
    leaf = tsa_kit.leaf_for(
        tsa_kit.leaf_key.public_key(), issuer=intermediate, issuer_key=inter_key
    )
    service = tsa_kit.service(cert_chain=(leaf, intermediate, tsa_kit.root))
    der = service.timestamp(python_client_request().as_bytes()).der
    tsa_kit.rfc3161_verify(der, SIGNATURE, leaf=leaf, intermediates=(intermediate,))
    result = tsa_kit.openssl_verify(der, SIGNATURE, untrusted=(leaf, intermediate))
    assert result.returncode == 0, result.stderr
    certs = tsa_kit.token(der)["time_stamp_token"]["content"]["certificates"]
    # A DER SET OF: sorted by encoding, not in chain order (verifiers pick the leaf by sid).
    assert sorted(c.chosen.dump() for c in certs) == sorted(
        pki.cert_der(c) for c in (leaf, intermediate, tsa_kit.root)
    )


def test_p384_signer_uses_sha384_and_verifies(tsa_kit: Any) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    leaf = tsa_kit.leaf_for(key.public_key())
    service = tsa_kit.service(signer_key=key, cert_chain=(leaf, tsa_kit.root))
    der = service.timestamp(python_client_request().as_bytes()).der
    info = signer_info(tsa_kit.token(der))
    assert info["signature_algorithm"]["algorithm"].native == "sha384_ecdsa"
    assert info["digest_algorithm"]["algorithm"].native == "sha384"
    tsa_kit.rfc3161_verify(der, SIGNATURE, leaf=leaf)
    assert tsa_kit.openssl_verify(der, SIGNATURE, untrusted=(leaf,)).returncode == 0


def test_sigstore_js_parser_verifies_token(tsa_kit: Any) -> None:
    """Optional third oracle: @sigstore/core's RFC 3161 verifier (as npm vendors it)."""
    node = shutil.which("node")
    module = Path("/usr/lib/node_modules/npm/node_modules/@sigstore/core")
    if node is None or not module.is_dir():
        pytest.skip("node or npm's vendored @sigstore/core is absent: JS oracle cannot run")
    tmp: Path = tsa_kit.tmp
    body = json.dumps(
        {"artifactHash": base64.b64encode(SHA256).decode(), "hashAlgorithm": "sha256"}
    ).encode()
    (tmp / "resp.tsr").write_bytes(tsa_kit.service().timestamp_json(body))
    (tmp / "data.bin").write_bytes(SIGNATURE)
    (tmp / "leaf.pem").write_text(pki.cert_pem(tsa_kit.leaf))
    script = (
        f"const core = require({json.dumps(str(module))});\n"
        "const fs = require('fs');\n"
        "const [der, data, pem] = process.argv.slice(1);\n"
        "const leaf = core.X509Certificate.parse(fs.readFileSync(pem, 'utf8'));\n"
        "const ts = core.RFC3161Timestamp.parse(fs.readFileSync(der));\n"
        "ts.verify(fs.readFileSync(data), core.crypto.createPublicKey(leaf.publicKey));\n"
        "if (ts.status !== 0n) throw new Error('status ' + ts.status);\n"
        "console.log(ts.signingTime.toISOString());\n"
    )
    result = subprocess.run(
        [node, "-e", script, str(tmp / "resp.tsr"), str(tmp / "data.bin"), str(tmp / "leaf.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = tsa_kit.clock.now.replace(microsecond=0)
    assert result.stdout.strip() == expected.strftime("%Y-%m-%dT%H:%M:%S.000Z")


# --- the oracles bite ------------------------------------------------------------------


def test_tampered_token_fails_rfc3161_client_and_openssl(tsa_kit: Any) -> None:
    der = tsa_kit.service().timestamp(python_client_request().as_bytes()).der
    at = der.index(SHA256)  # the messageImprint inside the signed TSTInfo
    tampered = der[:at] + bytes([der[at] ^ 0x01]) + der[at + 1 :]
    # Re-targeting the imprint at the tampered digest still fails: the signature breaks.
    with pytest.raises(VerificationError):
        VerifierBuilder().tsa_certificate(tsa_kit.leaf).add_root_certificate(
            tsa_kit.root
        ).build().verify(decode_timestamp_response(tampered), tampered[at : at + 32])
    with pytest.raises(VerificationError):
        tsa_kit.rfc3161_verify(tampered, SIGNATURE)
    assert tsa_kit.openssl_verify(tampered, SIGNATURE).returncode != 0


def test_tampered_signature_fails_verification(tsa_kit: Any) -> None:
    der = tsa_kit.service().timestamp(python_client_request().as_bytes()).der
    signature = signer_info(tsa_kit.token(der))["signature"].native
    at = der.rindex(signature) + len(signature) - 1
    tampered = der[:at] + bytes([der[at] ^ 0x01]) + der[at + 1 :]
    with pytest.raises(VerificationError):
        tsa_kit.rfc3161_verify(tampered, SIGNATURE)
    assert tsa_kit.openssl_verify(tampered, SIGNATURE).returncode != 0


def test_other_message_and_other_root_fail_verification(tsa_kit: Any) -> None:
    der = tsa_kit.service().timestamp(python_client_request().as_bytes()).der
    with pytest.raises(VerificationError):
        tsa_kit.rfc3161_verify(der, SIGNATURE + b"!")
    _, other_root = tsa_kit.new_root()
    with pytest.raises(VerificationError):
        tsa_kit.rfc3161_verify(der, SIGNATURE, root=other_root)
    assert tsa_kit.openssl_verify(der, SIGNATURE, root=other_root).returncode != 0


# --- structure (RFC 3161, RFC 5652, RFC 5816) ----------------------------------------


def test_token_structure(tsa_kit: Any, der_request: DerRequest) -> None:
    service = tsa_kit.service()
    der = service.timestamp(der_request(SHA256, nonce=12345, cert_req=True)).der
    response = tsa_kit.token(der)
    assert response["status"]["status"].native == "granted"
    token = response["time_stamp_token"]
    assert token["content_type"].native == "signed_data"
    signed = token["content"]
    assert signed["version"].native == "v3"
    assert [a["algorithm"].native for a in signed["digest_algorithms"]] == ["sha256"]
    encap = signed["encap_content_info"]
    assert encap["content_type"].native == "tst_info"

    info = encap["content"].parsed
    assert info["version"].native == "v1"
    assert info["policy"].dotted == DEFAULT_POLICY_OID
    assert info["message_imprint"]["hashed_message"].native == SHA256
    serial = info["serial_number"].native
    assert serial > 0 and (serial.bit_length() + 7) // 8 <= 20
    assert info["gen_time"].native == tsa_kit.clock.now.replace(microsecond=0)
    assert info["accuracy"].native == {"seconds": 1, "millis": None, "micros": None}
    assert info["nonce"].native == 12345
    assert info["ordering"].native is False
    tst_der = encap["content"].contents
    assert b"\x01\x01\x00" not in tst_der[-10:]  # DEFAULT FALSE ordering is omitted

    si = signer_info(response)
    assert si["version"].native == "v1"
    sid = si["sid"]
    assert sid.name == "issuer_and_serial_number"
    leaf = tsa_kit.leaf
    assert sid.chosen["serial_number"].native == leaf.serial_number
    assert sid.chosen["issuer"].dump() == leaf.issuer.public_bytes()
    assert si["digest_algorithm"]["algorithm"].native == "sha256"
    assert si["signature_algorithm"]["algorithm"].dotted == "1.2.840.10045.4.3.2"

    attrs = {a["type"].native: a["values"] for a in si["signed_attrs"]}
    assert set(attrs) == {
        "content_type",
        "signing_time",
        "message_digest",
        "signing_certificate_v2",
    }
    assert attrs["content_type"][0].native == "tst_info"
    assert attrs["signing_time"][0].native == info["gen_time"].native
    assert attrs["message_digest"][0].native == hashlib.sha256(tst_der).digest()
    ess = attrs["signing_certificate_v2"][0]["certs"][0]
    assert ess["cert_hash"].native == hashlib.sha256(pki.cert_der(leaf)).digest()
    assert ess["hash_algorithm"]["algorithm"].native == "sha256"
    assert ess["issuer_serial"]["serial_number"].native == leaf.serial_number
    issuer_name = ess["issuer_serial"]["issuer"][0]
    assert issuer_name.name == "directory_name"
    assert issuer_name.chosen.untag().dump() == leaf.issuer.public_bytes()

    # The signature covers the signed attributes re-tagged as a SET OF (RFC 5652 5.4).
    signed_attrs = si["signed_attrs"].dump()
    assert signed_attrs[0] == 0xA0
    leaf_key = leaf.public_key()
    assert isinstance(leaf_key, ec.EllipticCurvePublicKey)
    leaf_key.verify(si["signature"].native, b"\x31" + signed_attrs[1:], ec.ECDSA(hashes.SHA256()))
    # DER SET OF order.
    encoded = [a.dump() for a in si["signed_attrs"]]
    assert encoded == sorted(encoded)

    certs = [c.chosen.dump() for c in signed["certificates"]]
    assert sorted(certs) == sorted([pki.cert_der(leaf), pki.cert_der(tsa_kit.root)])


def test_gen_time_is_whole_seconds_generalized_time(tsa_kit: Any, der_request: DerRequest) -> None:
    """sigstore-js parses only YYYYMMDDhhmmss[.fff]Z; we send whole seconds."""
    der = tsa_kit.service().timestamp(der_request(SHA256)).der
    gen_time = tst_info(tsa_kit.token(der))["gen_time"]
    assert gen_time.tag == 24  # GeneralizedTime
    assert gen_time.contents == tsa_kit.clock.now.strftime("%Y%m%d%H%M%SZ").encode()


def test_serials_differ(tsa_kit: Any, der_request: DerRequest) -> None:
    service = tsa_kit.service()
    serials = {
        tst_info(tsa_kit.token(service.timestamp(der_request(SHA256)).der))["serial_number"].native
        for _ in range(8)
    }
    assert len(serials) == 8


def test_accuracy_is_configurable_and_omittable(tsa_kit: Any, der_request: DerRequest) -> None:
    fine = tsa_kit.service(accuracy=dt.timedelta(seconds=2, milliseconds=5, microseconds=7))
    info = tst_info(tsa_kit.token(fine.timestamp(der_request(SHA256)).der))
    assert info["accuracy"].native == {"seconds": 2, "millis": 5, "micros": 7}
    none = tsa_kit.service(accuracy=None)
    der = none.timestamp(der_request(SHA256)).der
    assert tst_info(tsa_kit.token(der))["accuracy"].native is None
    tsa_kit.rfc3161_verify(der, SIGNATURE)


@pytest.mark.parametrize(
    "nonce", [0, 1, 2**63 - 1, 2**64 - 1, 2**64, 2**255 + 12345, 2**511 + 1, -5]
)
def test_nonce_echoed_exactly(tsa_kit: Any, der_request: DerRequest, nonce: int) -> None:
    der = tsa_kit.service().timestamp(der_request(SHA256, nonce=nonce)).der
    assert tst_info(tsa_kit.token(der))["nonce"].native == nonce
    if nonce >= 0:  # rfc3161-client's VerifierBuilder refuses negative nonces
        VerifierBuilder(nonce=nonce).tsa_certificate(tsa_kit.leaf).add_root_certificate(
            tsa_kit.root
        ).build().verify_message(decode_timestamp_response(der), SIGNATURE)


def test_nonce_absent_when_not_requested(tsa_kit: Any, der_request: DerRequest) -> None:
    der = tsa_kit.service().timestamp(der_request(SHA256)).der
    assert tst_info(tsa_kit.token(der))["nonce"].native is None


def test_oversized_nonce_rejected(tsa_kit: Any, der_request: DerRequest) -> None:
    der = tsa_kit.service().timestamp(der_request(SHA256, nonce=2**600)).der
    info = tsa_kit.status_info(der)
    assert info["status"] == "rejection"
    assert info["fail_info"] == {"bad_request"}


def test_cert_req_false_omits_certificates(tsa_kit: Any, der_request: DerRequest) -> None:
    """sigstore-go asks without certReq; the token then carries no certificates."""
    der = tsa_kit.service().timestamp(der_request(SHA256, cert_req=False)).der
    signed = tsa_kit.token(der)["time_stamp_token"]["content"]
    assert signed["certificates"].native is None
    assert decode_timestamp_response(der).signed_data.certificates == set()
    # Verifiers that know the leaf (from the trusted root) still accept it.
    tsa_kit.rfc3161_verify(der, SIGNATURE)
    assert tsa_kit.openssl_verify(der, SIGNATURE).returncode == 0


def test_policy_matching_ours_is_granted(tsa_kit: Any, der_request: DerRequest) -> None:
    der = tsa_kit.service().timestamp(der_request(SHA256, policy=DEFAULT_POLICY_OID)).der
    assert tsa_kit.status_info(der)["status"] == "granted"
    custom = tsa_kit.service(policy_oid="1.3.6.1.4.1.99999.1")
    der = custom.timestamp(der_request(SHA256, policy="1.3.6.1.4.1.99999.1")).der
    assert tst_info(tsa_kit.token(der))["policy"].dotted == "1.3.6.1.4.1.99999.1"


def test_chain_pem_is_leaf_first(tsa_kit: Any) -> None:
    pem = tsa_kit.service().chain_pem()
    assert pem.startswith("-----BEGIN CERTIFICATE-----\n")
    assert x509.load_pem_x509_certificates(pem.encode()) == [tsa_kit.leaf, tsa_kit.root]


# --- refusals: never a granted token ---------------------------------------------------


def assert_rejected(tsa_kit: Any, der: bytes, failure: str) -> None:
    info = tsa_kit.status_info(der)
    assert info["status"] == "rejection"
    assert info["fail_info"] == {failure}
    assert info["status_string"] and info["status_string"][0]
    assert len(tsa_kit.status_info(der)) == 3
    with pytest.raises(ValueError):  # no token at all
        tsa_kit.token(der)["time_stamp_token"].native  # noqa: B018


@pytest.mark.parametrize(
    ("algorithm", "size"),
    [("sha1", 20), ("md5", 16), ("sha224", 28), ("sha3_256", 32)],
)
def test_unsupported_hash_rejected_bad_alg(
    tsa_kit: Any, der_request: DerRequest, algorithm: str, size: int
) -> None:
    der = tsa_kit.service().timestamp(der_request(b"\x11" * size, algorithm=algorithm)).der
    assert_rejected(tsa_kit, der, "bad_alg")


def test_unknown_hash_oid_rejected_bad_alg(tsa_kit: Any, der_request: DerRequest) -> None:
    der = tsa_kit.service().timestamp(der_request(SHA256, algorithm="1.2.3.4.5")).der
    assert_rejected(tsa_kit, der, "bad_alg")


def test_hash_parameters_other_than_null_rejected(tsa_kit: Any, der_request: DerRequest) -> None:
    good = der_request(SHA256)  # 30 LL | 02 01 01 | 30 31 [30 0d 06 09 <sha256> 05 00] 04 20 ...
    null_params = b"\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00"
    int_params = b"\x30\x0e\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x02\x01\x05"
    assert good[5:7] == b"\x30\x31" and good[7:22] == null_params
    bad = bytes([0x30, good[1] + 1]) + good[2:5] + b"\x30\x32" + int_params + good[22:]
    der = tsa_kit.service().timestamp(bad).der
    # SHA-2 AlgorithmIdentifier parameters are NULL or absent; anything else is malformed.
    assert_rejected(tsa_kit, der, "bad_data_format")


def test_null_hash_parameters_accepted(tsa_kit: Any, der_request: DerRequest) -> None:
    from asn1crypto import core

    der = tsa_kit.service().timestamp(der_request(SHA256, parameters=core.Null())).der
    assert tsa_kit.status_info(der)["status"] == "granted"


@pytest.mark.parametrize(
    ("algorithm", "size"),
    [("sha256", 20), ("sha256", 48), ("sha384", 32), ("sha512", 32), ("sha256", 0)],
)
def test_wrong_digest_length_rejected(
    tsa_kit: Any, der_request: DerRequest, algorithm: str, size: int
) -> None:
    der = tsa_kit.service().timestamp(der_request(b"\x22" * size, algorithm=algorithm)).der
    assert_rejected(tsa_kit, der, "bad_data_format")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00",
        b"not der at all",
        b"\x30\x82\xff\xff\x02\x01\x01",  # length beyond the data
        b"\x04\x03abc",  # an OCTET STRING, not a SEQUENCE
    ],
)
def test_garbage_rejected_bad_data_format(tsa_kit: Any, body: bytes) -> None:
    der = tsa_kit.service().timestamp(body).der
    assert_rejected(tsa_kit, der, "bad_data_format")


def test_truncated_and_trailing_bytes_rejected(tsa_kit: Any, der_request: DerRequest) -> None:
    good = der_request(SHA256, nonce=7)
    service = tsa_kit.service()
    assert_rejected(tsa_kit, service.timestamp(good[:-1]).der, "bad_data_format")
    assert_rejected(tsa_kit, service.timestamp(good + b"\x00").der, "bad_data_format")


def test_wrong_policy_rejected_unaccepted_policy(tsa_kit: Any, der_request: DerRequest) -> None:
    der = tsa_kit.service().timestamp(der_request(SHA256, policy="1.2.3.4")).der
    assert_rejected(tsa_kit, der, "unaccepted_policy")
    text = tsa_kit.openssl_text(der)  # OpenSSL reads our rejection the same way
    assert "Status: Rejected." in text
    assert "the requested TSA policy is not supported by the TSA" in text


def test_wrong_version_rejected_bad_request(tsa_kit: Any, der_request: DerRequest) -> None:
    der = tsa_kit.service().timestamp(der_request(SHA256, version=2)).der
    assert_rejected(tsa_kit, der, "bad_request")


def test_extensions_rejected(tsa_kit: Any, der_request: DerRequest) -> None:
    ext = {"extn_id": "1.2.3.4", "critical": False, "extn_value": b"\x05\x00"}
    der = tsa_kit.service().timestamp(der_request(SHA256, extensions=[ext])).der
    assert_rejected(tsa_kit, der, "unaccepted_extensions")


def test_rejection_carries_the_typed_refusal(tsa_kit: Any, der_request: DerRequest) -> None:
    reply = tsa_kit.service().timestamp(der_request(b"\x00" * 20, algorithm="sha1"))
    assert not reply.granted
    rejection = reply.rejection
    assert isinstance(rejection, TimestampRejected)
    assert rejection.failure is FailureInfo.BAD_ALG
    assert isinstance(rejection, InvalidRequest) and rejection.http_status == 400
    assert "sha1" in rejection.message
    assert reply.der == rejection.response_der()


def test_granted_reply_has_no_rejection(tsa_kit: Any, der_request: DerRequest) -> None:
    reply = tsa_kit.service().timestamp(der_request(SHA256))
    assert reply.granted and reply.rejection is None
    assert tsa_kit.status_info(reply.der)["status"] == "granted"


# --- DER, exactly: re-encoding the parsed request must reproduce the input ------------------


def _with_message_imprint(good: bytes, transform: Callable[[bytes], bytes]) -> bytes:
    """``good`` (short-form lengths) with its MessageImprint contents rewritten."""
    assert good[0] == 0x30 and good[1] < 0x80 and good[5] == 0x30 and good[6] < 0x80
    imprint = transform(good[7 : 7 + good[6]])
    rest = good[2:5] + bytes([0x30, len(imprint)]) + imprint + good[7 + good[6] :]
    assert len(rest) < 0x80
    return bytes([0x30, len(rest)]) + rest


def test_extra_element_in_message_imprint_rejected(tsa_kit: Any, der_request: DerRequest) -> None:
    good = der_request(SHA256, nonce=7)
    bad = _with_message_imprint(good, lambda contents: contents + b"\x05\x00")
    assert tsa_kit.service().timestamp(good).granted
    reply = tsa_kit.service().timestamp(bad)
    assert not reply.granted
    assert_rejected(tsa_kit, reply.der, "bad_data_format")


def test_indefinite_length_rejected(tsa_kit: Any, der_request: DerRequest) -> None:
    good = der_request(SHA256, nonce=7)  # 30 L | 02 01 01 | 30 m <imprint> | nonce
    assert good[1] < 0x80 and good[5] == 0x30 and good[6] < 0x80
    imprint_end = 7 + good[6]
    outer = b"\x30\x80" + good[2:] + b"\x00\x00"  # BER indefinite length, TimeStampReq
    inner = (  # BER indefinite length, MessageImprint
        bytes([0x30, good[1] + 2])
        + good[2:5]
        + b"\x30\x80"
        + good[7:imprint_end]
        + b"\x00\x00"
        + good[imprint_end:]
    )
    for bad in (outer, inner):
        assert_rejected(tsa_kit, tsa_kit.service().timestamp(bad).der, "bad_data_format")


@pytest.mark.parametrize(
    ("name", "mutate"),
    [
        ("non-minimal length", lambda g: bytes([0x30, g[1] + 1]) + b"\x02\x81\x01" + g[4:]),
        ("non-minimal integer", lambda g: bytes([0x30, g[1] + 1]) + b"\x02\x02\x00\x01" + g[5:]),
        ("explicit default certReq", lambda g: bytes([0x30, g[1] + 3]) + g[2:] + b"\x01\x01\x00"),
    ],
)
def test_other_non_der_encodings_rejected(
    tsa_kit: Any, der_request: DerRequest, name: str, mutate: Callable[[bytes], bytes]
) -> None:
    good = der_request(SHA256, cert_req=False)
    assert tsa_kit.service().timestamp(good).granted
    assert_rejected(tsa_kit, tsa_kit.service().timestamp(mutate(good)).der, "bad_data_format")


def test_rejection_decodes_with_rfc3161_client(tsa_kit: Any, der_request: DerRequest) -> None:
    der = tsa_kit.service().timestamp(der_request(SHA256, algorithm="sha1")).der
    response = decode_timestamp_response(der)
    assert response.status == 2
    assert "SHA-256" in response.status_string[0]


# --- time -----------------------------------------------------------------------------


def test_no_token_outside_signer_validity(tsa_kit: Any, der_request: DerRequest) -> None:
    service = tsa_kit.service()
    tsa_kit.clock.now = tsa_kit.leaf.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(Unavailable, match="not valid"):
        service.timestamp(der_request(SHA256))
    with pytest.raises(Unavailable):
        service.check_ready()
    tsa_kit.clock.now = tsa_kit.leaf.not_valid_before_utc - dt.timedelta(seconds=1)
    with pytest.raises(Unavailable):
        service.timestamp_json(
            json.dumps(
                {"artifactHash": base64.b64encode(SHA256).decode(), "hashAlgorithm": "sha256"}
            ).encode()
        )
    tsa_kit.clock.now = tsa_kit.leaf.not_valid_before_utc  # the first valid second
    service.check_ready()
    der = service.timestamp(der_request(SHA256)).der
    assert tst_info(tsa_kit.token(der))["gen_time"].native == tsa_kit.leaf.not_valid_before_utc


def test_naive_clock_is_refused(tsa_kit: Any, der_request: DerRequest) -> None:
    """A clock without a zone is a programming error; guessing UTC could misdate tokens."""
    tsa_kit.clock.now = tsa_kit.clock.now.replace(tzinfo=None)
    with pytest.raises(TypeError, match="naive"):
        tsa_kit.service().timestamp(der_request(SHA256))


# --- the JSON form (sigstore-js) --------------------------------------------------------


def json_body(**fields: Any) -> bytes:
    doc: dict[str, Any] = {
        "artifactHash": base64.b64encode(SHA256).decode(),
        "hashAlgorithm": "sha256",
    }
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


def test_json_request_as_sigstore_js_sends_it(tsa_kit: Any) -> None:
    der = tsa_kit.service().timestamp_json(json_body())
    tsa_kit.rfc3161_verify(der, SIGNATURE)
    assert tsa_kit.openssl_verify(der, SIGNATURE).returncode == 0
    signed = tsa_kit.token(der)["time_stamp_token"]["content"]
    assert signed["certificates"].native is None  # upstream default: certificates false
    assert tst_info(tsa_kit.token(der))["nonce"].native is None


def test_json_request_with_every_field(tsa_kit: Any) -> None:
    digest = hashlib.sha384(SIGNATURE).digest()
    nonce = 2**200 + 3
    body = json_body(
        artifactHash=base64.b64encode(digest).decode(),
        hashAlgorithm="SHA384",
        nonce=nonce,
        certificates=True,
        tsaPolicyOID=DEFAULT_POLICY_OID,
        somethingElse="ignored, as upstream ignores unknown fields",
    )
    der = tsa_kit.service().timestamp_json(body)
    info = tst_info(tsa_kit.token(der))
    assert info["nonce"].native == nonce
    assert info["message_imprint"]["hashed_message"].native == digest
    assert tsa_kit.token(der)["time_stamp_token"]["content"]["certificates"].native is not None
    VerifierBuilder(nonce=nonce).tsa_certificate(tsa_kit.leaf).add_root_certificate(
        tsa_kit.root
    ).build().verify_message(decode_timestamp_response(der), SIGNATURE)


B64_20 = base64.b64encode(b"x" * 20).decode()
UNPADDED = base64.b64encode(SHA256).decode().rstrip("=")  # Go's StdEncoding refuses it too
HUGE_NONCE = b'{"artifactHash": "x", "hashAlgorithm": "sha256", "nonce": ' + b"9" * 5000 + b"}"


@pytest.mark.parametrize(
    ("body", "failure"),
    [
        (json_body(hashAlgorithm="sha1", artifactHash=B64_20), "bad_alg"),
        (json_body(hashAlgorithm="md5"), "bad_alg"),
        (json_body(hashAlgorithm=...), "bad_alg"),
        (json_body(hashAlgorithm=256), "bad_alg"),
        (json_body(artifactHash=B64_20), "bad_data_format"),
        (json_body(artifactHash="not base64!"), "bad_data_format"),
        (json_body(artifactHash=UNPADDED), "bad_data_format"),
        (json_body(artifactHash=...), "bad_data_format"),
        (json_body(tsaPolicyOID="1.2.3.4"), "unaccepted_policy"),
        (json_body(tsaPolicyOID=5), "bad_request"),
        (json_body(nonce=True), "bad_request"),
        (json_body(nonce=1.5), "bad_request"),
        (json_body(nonce="12"), "bad_request"),
        (json_body(certificates="yes"), "bad_request"),
        (HUGE_NONCE, "bad_request"),
        (b'{"nonce": NaN}', "bad_data_format"),
        (b"[1, 2]", "bad_data_format"),
        (b"{not json", "bad_data_format"),
        (b"\xff\xfe", "bad_data_format"),
        (b"", "bad_data_format"),
        (b"[" * 100_000 + b"]" * 100_000, "bad_data_format"),  # RecursionError, not a 500
    ],
)  # fmt: skip
def test_json_refusals(tsa_kit: Any, body: bytes, failure: str) -> None:
    with pytest.raises(TimestampRejected) as caught:
        tsa_kit.service().timestamp_json(body)
    assert caught.value.failure == failure
    assert caught.value.http_status == 400
    assert caught.value.message


def test_config_repr_does_not_show_the_private_key(tsa_kit: Any) -> None:
    text = repr(tsa_kit.config())
    assert "signer_key" not in text
    assert "EllipticCurvePrivateKey" not in text
