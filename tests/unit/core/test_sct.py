"""RFC 6962 SCT encoding: round trips, independent parsers agree, and every check bites.

Independent oracles: pyca/cryptography's own SCT parser (the embedded-SCT extension
of a certificate) and sigstore-python's ``verify_sct``, which is what clients run.
"""

from __future__ import annotations

import base64
import datetime as dt
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.certificate_transparency import LogEntryType
from sigstore._internal.sct import verify_sct
from sigstore._internal.trust import CTKeyring, Keyring
from sigstore.errors import VerificationError as SigstoreVerificationError
from sigstore_models.common.v1 import PublicKey, PublicKeyDetails

from sigstack.core import pki, sct
from sigstack.core.errors import InvalidRequest, VerificationError
from sigstack.core.keys import spki_der, spki_sha256

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    return key, pki.build_root_ca(key, pki.name("t", "root"), NOW, NOW + dt.timedelta(days=1))


@pytest.fixture(scope="module")
def log_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _builder(issuer: x509.Certificate, serial: int) -> x509.CertificateBuilder:
    leaf = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer.subject)
        .public_key(leaf.public_key())
        .serial_number(serial)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(minutes=10))
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name("a@example.com")]), critical=True
        )
    )


def _issue(ca, log_key):  # type: ignore[no-untyped-def]
    """A precert and the final certificate carrying a real SCT over it."""
    key, root = ca
    builder = _builder(root, pki.random_serial())
    precert = builder.add_extension(x509.PrecertPoison(), critical=True).sign(key, hashes.SHA384())
    tbs = sct.tbs_without_extension(pki.cert_der(precert), sct.PRECERT_POISON_OID)
    entry = sct.precert_timestamped_entry(
        1_700_000_000_123, sct.issuer_key_hash(root.public_key()), tbs
    )
    signed = sct.sign_sct(log_key, spki_sha256(log_key.public_key()), entry)
    final = builder.add_extension(sct.sct_list_extension([signed]), critical=False).sign(
        key, hashes.SHA384()
    )
    return precert, final, entry, signed


def _keyring(log_key: ec.EllipticCurvePrivateKey) -> CTKeyring:
    public = PublicKey(
        raw_bytes=base64.b64encode(spki_der(log_key.public_key())),
        key_details=PublicKeyDetails.PKIX_ECDSA_P256_SHA_256,
    )
    return CTKeyring(Keyring([public]))


def test_embedded_sct_is_what_cryptography_parses_and_sigstore_verifies(ca, log_key) -> None:  # type: ignore[no-untyped-def]
    _, final, _, signed = _issue(ca, log_key)
    (parsed,) = final.extensions.get_extension_for_class(
        x509.PrecertificateSignedCertificateTimestamps
    ).value
    assert parsed.log_id == signed.log_id
    assert parsed.entry_type == LogEntryType.PRE_CERTIFICATE
    assert int(parsed.timestamp.replace(tzinfo=dt.UTC).timestamp() * 1000) == 1_700_000_000_123
    verify_sct(final, [ca[1]], _keyring(log_key))


def test_final_tbs_without_scts_equals_precert_tbs_without_poison(ca, log_key) -> None:  # type: ignore[no-untyped-def]
    precert, final, _, _ = _issue(ca, log_key)
    assert final.tbs_precertificate_bytes == sct.tbs_without_extension(
        pki.cert_der(precert), sct.PRECERT_POISON_OID
    )


def test_sct_from_another_log_key_fails_the_client_check(ca, log_key) -> None:  # type: ignore[no-untyped-def]
    _, final, _, _ = _issue(ca, log_key)
    with pytest.raises(SigstoreVerificationError):
        verify_sct(final, [ca[1]], _keyring(ec.generate_private_key(ec.SECP256R1())))


def test_sct_round_trips(ca, log_key) -> None:  # type: ignore[no-untyped-def]
    _, _, entry, signed = _issue(ca, log_key)
    assert sct.SignedCertificateTimestamp.decode(signed.encode()) == signed
    assert sct.SignedCertificateTimestamp.from_json(signed.to_json()) == signed
    assert sct.decode_sct_list(sct.encode_sct_list([signed, signed])) == [signed, signed]
    signed.verify(log_key.public_key(), entry)


def test_sct_verify_rejects_other_entries_keys_and_timestamps(ca, log_key) -> None:  # type: ignore[no-untyped-def]
    _, _, entry, signed = _issue(ca, log_key)
    with pytest.raises(VerificationError, match="log_id"):
        signed.verify(ec.generate_private_key(ec.SECP256R1()).public_key(), entry)
    later = struct.pack(">Q", signed.timestamp_ms + 1) + entry[8:]
    with pytest.raises(VerificationError, match="timestamp"):
        signed.verify(log_key.public_key(), later)
    tampered = entry[:-3] + bytes([entry[-3] ^ 1]) + entry[-2:]
    with pytest.raises(VerificationError, match="does not verify"):
        signed.verify(log_key.public_key(), tampered)


def test_sct_decode_rejects_truncation_trailing_bytes_and_v2(ca, log_key) -> None:  # type: ignore[no-untyped-def]
    raw = _issue(ca, log_key)[3].encode()
    with pytest.raises(VerificationError, match="truncated"):
        sct.SignedCertificateTimestamp.decode(raw[:-1])
    with pytest.raises(VerificationError, match="trailing"):
        sct.SignedCertificateTimestamp.decode(raw + b"\x00")
    with pytest.raises(VerificationError, match="v1"):
        sct.SignedCertificateTimestamp.decode(b"\x01" + raw[1:])


def test_only_sha256_digitally_signed_is_accepted(log_key) -> None:  # type: ignore[no-untyped-def]
    data = b"tree head"
    _, sig_alg, sig = sct.decode_digitally_signed(sct.sign_digitally(log_key, data))
    sha1 = sct.encode_digitally_signed(2, sig_alg, sig)
    with pytest.raises(VerificationError, match="SHA-256"):
        sct.verify_digitally(log_key.public_key(), sha1, data)
    rsa_labelled = sct.encode_digitally_signed(sct.HASH_SHA256, sct.SIG_RSA, sig)
    with pytest.raises(VerificationError, match="algorithm"):
        sct.verify_digitally(log_key.public_key(), rsa_labelled, data)


def test_only_p256_logs_sign() -> None:
    with pytest.raises(VerificationError, match="P-256"):
        sct.sign_digitally(ec.generate_private_key(ec.SECP384R1()), b"x")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"sct_version": 1, "id": "", "timestamp": 0, "signature": ""},
        {"sct_version": 0, "id": "AAAA", "timestamp": 0, "signature": "BAMAAA=="},
        {
            "sct_version": 0,
            "id": base64.b64encode(b"\x00" * 32).decode(),
            "timestamp": -1,
            "signature": "BAMAAA==",
        },
        {"sct_version": 0, "id": "!!", "timestamp": 0, "signature": ""},
    ],
)
def test_malformed_sct_json_is_refused(body: dict[str, object]) -> None:
    with pytest.raises(VerificationError):
        sct.SignedCertificateTimestamp.from_json(body)


def test_entry_field_limits() -> None:
    with pytest.raises(InvalidRequest):
        sct.x509_timestamped_entry(0, b"")
    with pytest.raises(InvalidRequest):
        sct.precert_timestamped_entry(0, b"\x00" * 31, b"tbs")
    with pytest.raises(InvalidRequest):
        sct.encode_sct_list([])
    with pytest.raises(InvalidRequest):
        sct.tree_head_signed_data(0, 0, b"short")


def test_tree_head_signed_data_layout() -> None:
    root = bytes(range(32))
    data = sct.tree_head_signed_data(0x0102030405060708, 5, root)
    assert data == b"\x00\x01" + bytes.fromhex("0102030405060708") + (5).to_bytes(8, "big") + root


def test_stripping_an_absent_extension_is_an_error(ca) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(VerificationError, match="no extension"):
        sct.tbs_without_extension(pki.cert_der(ca[1]), sct.PRECERT_POISON_OID)
    with pytest.raises(VerificationError):
        sct.tbs_without_extension(b"garbage", sct.PRECERT_POISON_OID)
