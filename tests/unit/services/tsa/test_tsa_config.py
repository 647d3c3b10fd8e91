"""TSAConfig fails closed: one named test per check, plus the happy paths."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from sigstack.core import pki
from sigstack.core.errors import ConfigError
from sigstack.services.tsa.config import DEFAULT_BODY_LIMIT, DEFAULT_POLICY_OID, TSAConfig


def custom_leaf(
    kit: Any,
    *,
    eku: list[x509.ObjectIdentifier] | None = None,
    eku_critical: bool = True,
    ca: bool = False,
    key_usage: x509.KeyUsage | None = None,
    public_key: Any = None,
) -> x509.Certificate:
    """A leaf signed by the kit's root with exactly the extensions asked for."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(pki.name("sigstack", "custom tsa leaf"))
        .issuer_name(kit.root.subject)
        .public_key(public_key or kit.leaf_key.public_key())
        .serial_number(pki.random_serial())
        .not_valid_before(kit.root.not_valid_before_utc)
        .not_valid_after(kit.root.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=eku_critical)
    return builder.sign(kit.root_key, hashes.SHA384())


def test_valid_config_and_defaults(tsa_kit: Any) -> None:
    config = tsa_kit.config(cert_chain=[tsa_kit.leaf, tsa_kit.root])
    assert config.cert_chain == (tsa_kit.leaf, tsa_kit.root)  # stored immutably
    assert config.signer_certificate == tsa_kit.leaf
    assert config.policy_oid == DEFAULT_POLICY_OID == "1.3.6.1.4.1.57264.2"
    assert config.accuracy == dt.timedelta(seconds=1)
    assert config.body_limit == DEFAULT_BODY_LIMIT


def test_custom_leaf_helper_builds_an_acceptable_leaf(tsa_kit: Any) -> None:
    """The helper below is only meaningful if its baseline passes."""
    leaf = custom_leaf(tsa_kit, eku=[ExtendedKeyUsageOID.TIME_STAMPING])
    tsa_kit.config(cert_chain=(leaf, tsa_kit.root))


# --- the leaf ---------------------------------------------------------------------------


def test_rejects_non_critical_timestamping_eku(tsa_kit: Any) -> None:
    leaf = custom_leaf(tsa_kit, eku=[ExtendedKeyUsageOID.TIME_STAMPING], eku_critical=False)
    with pytest.raises(ConfigError, match="not critical"):
        tsa_kit.config(cert_chain=(leaf, tsa_kit.root))


def test_rejects_missing_eku(tsa_kit: Any) -> None:
    leaf = custom_leaf(tsa_kit, eku=None)
    with pytest.raises(ConfigError, match="no ExtendedKeyUsage"):
        tsa_kit.config(cert_chain=(leaf, tsa_kit.root))


@pytest.mark.parametrize(
    "usages",
    [
        [ExtendedKeyUsageOID.CODE_SIGNING],
        [ExtendedKeyUsageOID.TIME_STAMPING, ExtendedKeyUsageOID.CODE_SIGNING],
        [ExtendedKeyUsageOID.TIME_STAMPING, x509.ObjectIdentifier("1.2.3.4")],
    ],
)
def test_rejects_eku_other_than_only_timestamping(
    tsa_kit: Any, usages: list[x509.ObjectIdentifier]
) -> None:
    leaf = custom_leaf(tsa_kit, eku=usages)
    with pytest.raises(ConfigError, match="only id-kp-timeStamping"):
        tsa_kit.config(cert_chain=(leaf, tsa_kit.root))


def test_rejects_ca_leaf(tsa_kit: Any) -> None:
    leaf = custom_leaf(tsa_kit, eku=[ExtendedKeyUsageOID.TIME_STAMPING], ca=True)
    with pytest.raises(ConfigError, match="CA certificate"):
        tsa_kit.config(cert_chain=(leaf, tsa_kit.root))


def test_rejects_key_usage_without_digital_signature(tsa_kit: Any) -> None:
    ku = x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=True,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    leaf = custom_leaf(tsa_kit, eku=[ExtendedKeyUsageOID.TIME_STAMPING], key_usage=ku)
    with pytest.raises(ConfigError, match="digitalSignature"):
        tsa_kit.config(cert_chain=(leaf, tsa_kit.root))


def test_rejects_mismatched_key(tsa_kit: Any) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ConfigError, match="does not certify the signer private key"):
        tsa_kit.config(signer_key=other)


def test_rejects_ed25519_signer(tsa_kit: Any) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    leaf = tsa_kit.leaf_for(key.public_key())  # a well-formed TSA cert for an Ed25519 key
    with pytest.raises(ConfigError, match="must be ECDSA"):
        tsa_kit.config(signer_key=key, cert_chain=(leaf, tsa_kit.root))


def test_rejects_rsa_signer(tsa_kit: Any) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = tsa_kit.leaf_for(key.public_key())
    with pytest.raises(ConfigError, match="must be ECDSA"):
        tsa_kit.config(signer_key=key, cert_chain=(leaf, tsa_kit.root))


def test_rejects_unsupported_curve(tsa_kit: Any) -> None:
    key = ec.generate_private_key(ec.SECP256K1())
    leaf = tsa_kit.leaf_for(key.public_key())
    with pytest.raises(ConfigError, match="curve secp256k1"):
        tsa_kit.config(signer_key=key, cert_chain=(leaf, tsa_kit.root))


# --- the chain --------------------------------------------------------------------------


def test_rejects_chain_of_one(tsa_kit: Any) -> None:
    with pytest.raises(ConfigError, match="holds 1 certificate"):
        tsa_kit.config(cert_chain=(tsa_kit.leaf,))


def test_rejects_empty_chain(tsa_kit: Any) -> None:
    with pytest.raises(ConfigError, match="holds 0 certificate"):
        tsa_kit.config(cert_chain=())


def test_rejects_non_certificate_in_chain(tsa_kit: Any) -> None:
    with pytest.raises(ConfigError, match="not a certificate"):
        tsa_kit.config(cert_chain=(tsa_kit.leaf, pki.cert_pem(tsa_kit.root)))


def test_rejects_broken_chain_link(tsa_kit: Any) -> None:
    _, other_root = tsa_kit.new_root("sigstack tsa root")  # same name, different key
    with pytest.raises(ConfigError, match="chain is broken between certificate 0"):
        tsa_kit.config(cert_chain=(tsa_kit.leaf, other_root))


def test_rejects_chain_in_wrong_order(tsa_kit: Any) -> None:
    with pytest.raises(ConfigError):
        tsa_kit.config(cert_chain=(tsa_kit.root, tsa_kit.leaf))


def test_rejects_chain_not_ending_in_a_root(tsa_kit: Any) -> None:
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
    tsa_kit.config(cert_chain=(leaf, intermediate, tsa_kit.root))  # complete: accepted
    with pytest.raises(ConfigError, match="not a self-signed root"):
        tsa_kit.config(cert_chain=(leaf, intermediate))


def test_rejects_intermediate_whose_eku_excludes_timestamping(tsa_kit: Any) -> None:
    inter_key = ec.generate_private_key(ec.SECP384R1())
    intermediate = pki.build_intermediate_ca(  # default EKU: codeSigning (Fulcio's profile)
        inter_key.public_key(),
        pki.name("sigstack", "fulcio-style intermediate"),
        tsa_kit.root,
        tsa_kit.root_key,
        tsa_kit.root.not_valid_before_utc,
        tsa_kit.root.not_valid_after_utc,
    )
    leaf = tsa_kit.leaf_for(
        tsa_kit.leaf_key.public_key(), issuer=intermediate, issuer_key=inter_key
    )
    with pytest.raises(ConfigError, match="without timeStamping"):
        tsa_kit.config(cert_chain=(leaf, intermediate, tsa_kit.root))


def test_rejects_issuer_that_is_not_a_ca(tsa_kit: Any) -> None:
    # A leaf "issued" by another end-entity certificate whose key signed it.
    issuer_key = ec.generate_private_key(ec.SECP384R1())
    fake_issuer = custom_leaf(
        tsa_kit, eku=[ExtendedKeyUsageOID.TIME_STAMPING], public_key=issuer_key.public_key()
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(pki.name("sigstack", "leaf under non-CA"))
        .issuer_name(fake_issuer.subject)
        .public_key(tsa_kit.leaf_key.public_key())
        .serial_number(pki.random_serial())
        .not_valid_before(tsa_kit.root.not_valid_before_utc)
        .not_valid_after(tsa_kit.root.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .sign(issuer_key, hashes.SHA384())
    )
    with pytest.raises(ConfigError, match="is not a CA certificate"):
        tsa_kit.config(cert_chain=(leaf, fake_issuer, tsa_kit.root))


# --- scalar settings --------------------------------------------------------------------


@pytest.mark.parametrize(
    "oid", ["", "1", "1.", "abc", "3.1.2", "1.40.5", "1.2.-3", "1.02.3", " 1.2.3", 123]
)
def test_rejects_malformed_policy_oid(tsa_kit: Any, oid: Any) -> None:
    with pytest.raises(ConfigError, match="OID"):
        tsa_kit.config(policy_oid=oid)


def test_accepts_custom_policy_oid(tsa_kit: Any) -> None:
    assert tsa_kit.config(policy_oid="2.999.1").policy_oid == "2.999.1"


@pytest.mark.parametrize("accuracy", [dt.timedelta(0), dt.timedelta(seconds=-1)])
def test_rejects_non_positive_accuracy(tsa_kit: Any, accuracy: dt.timedelta) -> None:
    with pytest.raises(ConfigError, match="accuracy"):
        tsa_kit.config(accuracy=accuracy)


@pytest.mark.parametrize("limit", [0, -1, True, 1.5])
def test_rejects_bad_body_limit(tsa_kit: Any, limit: Any) -> None:
    with pytest.raises(ConfigError, match="body limit"):
        tsa_kit.config(body_limit=limit)


# --- from_pem ---------------------------------------------------------------------------


def test_from_pem_with_encrypted_key(tsa_kit: Any) -> None:
    passphrase = b"correct horse battery staple"
    key_pem = tsa_kit.leaf_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    chain_pem = pki.pem_chain((tsa_kit.leaf, tsa_kit.root))
    config = TSAConfig.from_pem(key_pem, chain_pem, passphrase=passphrase)
    assert config.cert_chain == (tsa_kit.leaf, tsa_kit.root)

    with pytest.raises(ConfigError, match="passphrase") as caught:
        TSAConfig.from_pem(key_pem, chain_pem, passphrase=b"wrong passphrase")
    assert "wrong passphrase" not in str(caught.value)
    assert caught.value.__cause__ is None  # nothing from the key loader is chained


def test_from_pem_rejects_garbage(tsa_kit: Any) -> None:
    key_pem = tsa_kit.leaf_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ConfigError, match="private key"):
        TSAConfig.from_pem(b"not a key", pki.pem_chain((tsa_kit.leaf, tsa_kit.root)))
    with pytest.raises(ConfigError, match="TSA certificate chain"):
        TSAConfig.from_pem(key_pem, "no certificates here")
