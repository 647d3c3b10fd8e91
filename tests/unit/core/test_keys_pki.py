"""Key naming, signature checks and CA profiles: each refusal is a named test."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, utils
from cryptography.x509.oid import ExtendedKeyUsageOID

from sigstack.core import keys, pki
from sigstack.core.errors import VerificationError

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
LATER = NOW + dt.timedelta(days=1)


@pytest.mark.parametrize(
    ("key", "details"),
    [
        (ec.generate_private_key(ec.SECP256R1()), "PKIX_ECDSA_P256_SHA_256"),
        (ec.generate_private_key(ec.SECP384R1()), "PKIX_ECDSA_P384_SHA_384"),
        (ec.generate_private_key(ec.SECP521R1()), "PKIX_ECDSA_P521_SHA_512"),
        (ed25519.Ed25519PrivateKey.generate(), "PKIX_ED25519"),
        (rsa.generate_private_key(65537, 2048), "PKIX_RSA_PKCS1V15_2048_SHA256"),
    ],
)
def test_sign_verify_and_details(key, details: str) -> None:  # type: ignore[no-untyped-def]
    public = key.public_key()
    assert keys.key_details(public) == details
    sig = keys.sign(key, b"message")
    keys.verify_signature(public, sig, b"message")
    with pytest.raises(VerificationError):
        keys.verify_signature(public, sig, b"other message")


def test_unsupported_keys_are_refused() -> None:
    with pytest.raises(VerificationError, match="RSA key size"):
        keys.key_details(rsa.generate_private_key(65537, 1024).public_key())  # noqa: S505
    with pytest.raises(VerificationError, match="curve"):
        keys.key_details(ec.generate_private_key(ec.SECP256K1()).public_key())
    with pytest.raises(VerificationError):
        keys.load_spki(b"not a key")


def test_prehashed_checks_length_and_refuses_ed25519() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(b"x").digest()
    sig = key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    keys.verify_prehashed(key.public_key(), sig, digest, hashes.SHA256())
    with pytest.raises(VerificationError, match="digest is 31 bytes"):
        keys.verify_prehashed(key.public_key(), sig, digest[:31], hashes.SHA256())
    with pytest.raises(VerificationError, match="Ed25519"):
        keys.verify_prehashed(
            ed25519.Ed25519PrivateKey.generate().public_key(), b"s", digest, hashes.SHA256()
        )


def test_ca_profiles_are_what_clients_require() -> None:
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = pki.build_root_ca(root_key, pki.name("o", "root"), NOW, LATER)
    bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = root.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign
    inter_key = ec.generate_private_key(ec.SECP384R1())
    inter = pki.build_intermediate_ca(
        inter_key.public_key(), pki.name("o", "i"), root, root_key, NOW, LATER
    )
    eku = inter.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert not eku.critical and ExtendedKeyUsageOID.CODE_SIGNING in eku.value
    pki.check_issued_by(inter, root)
    tsa = pki.build_tsa_certificate(
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        pki.name("o", "tsa"),
        root,
        root_key,
        NOW,
        LATER,
    )
    tsa_eku = tsa.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert tsa_eku.critical and list(tsa_eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    assert len(pki.cert_der(tsa)) > 0 and pki.load_pem_chain(pki.pem_chain([tsa, root])) == [
        tsa,
        root,
    ]


def test_ed25519_cannot_be_a_ca() -> None:
    with pytest.raises(VerificationError, match="ECDSA"):
        pki.build_root_ca(ed25519.Ed25519PrivateKey.generate(), pki.name("o", "r"), NOW, LATER)


def test_check_issued_by_rejects_a_stranger() -> None:
    a_key, b_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    a = pki.build_root_ca(a_key, pki.name("o", "root"), NOW, LATER)
    impostor = pki.build_root_ca(b_key, pki.name("o", "root"), NOW, LATER)  # same name, other key
    child = pki.build_intermediate_ca(
        ec.generate_private_key(ec.SECP384R1()).public_key(),
        pki.name("o", "i"),
        a,
        a_key,
        NOW,
        LATER,
    )
    with pytest.raises(VerificationError, match="does not verify"):
        pki.check_issued_by(child, impostor)
    with pytest.raises(VerificationError, match="does not match"):
        pki.check_issued_by(a, child)


def test_pem_chain_errors() -> None:
    with pytest.raises(VerificationError, match=r"no certificate|not valid PEM"):
        pki.load_pem_chain("")
    with pytest.raises(VerificationError):
        pki.load_der_certificate(b"junk")
