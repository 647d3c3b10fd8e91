"""X.509 building blocks: CA, intermediate and TSA certificates, PEM chains, names.

Profiles follow what Sigstore clients enforce (see ../shared/interop.md section 3
and section 7):

* CA certificates: v3, BasicConstraints CRITICAL with ``ca=True``, KeyUsage
  CRITICAL with keyCertSign (+ cRLSign), SKI, AKI (self for a root), ECDSA only
  (clients reject Ed25519 CAs). An intermediate may carry a NON-critical EKU.
* TSA signing certificate: KeyUsage digitalSignature, EKU timeStamping CRITICAL.
* Serial numbers are positive and at most 20 bytes (RFC 5280 4.1.2.2).

Everything here is pure: keys and times come in, certificates come out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sigstack.core.errors import VerificationError
from sigstack.core.keys import PrivateKey, PublicKey, hash_for_key


def name(organization: str, common_name: str) -> x509.Name:
    """A distinguished name with O and CN, as the trusted root's ``subject`` records it."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def name_parts(n: x509.Name) -> tuple[str, str]:
    """(organization, commonName) of ``n``; empty strings where absent."""

    def first(oid: x509.ObjectIdentifier) -> str:
        attrs = n.get_attributes_for_oid(oid)
        return str(attrs[0].value) if attrs else ""

    return first(NameOID.ORGANIZATION_NAME), first(NameOID.COMMON_NAME)


def random_serial() -> int:
    """A random positive serial that encodes in at most 20 bytes."""
    return x509.random_serial_number()


def signing_hash(issuer_key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
    """The hash an issuer key signs certificates with (its curve's hash)."""
    algo = hash_for_key(issuer_key.public_key())
    if isinstance(algo, hashes.SHA256 | hashes.SHA384 | hashes.SHA512):
        return algo
    raise VerificationError("Ed25519 keys cannot issue certificates clients accept; use ECDSA")


def _ski(public_key: PublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def _aki(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def digital_signature_usage() -> x509.KeyUsage:
    """KeyUsage with only digitalSignature set (leaf signing certificates)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _require_ecdsa_ca(key: PrivateKey) -> None:
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise VerificationError("CA keys must be ECDSA: clients reject Ed25519 and we avoid RSA")


def build_root_ca(
    key: PrivateKey,
    subject: x509.Name,
    not_before: dt.datetime,
    not_after: dt.datetime,
    path_length: int | None = 1,
) -> x509.Certificate:
    """A self-signed root CA certificate."""
    _require_ecdsa_ca(key)
    public = key.public_key()
    ski = _ski(public)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(random_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    return builder.sign(key, signing_hash(key))


def _issue(
    public_key: PublicKey,
    subject: x509.Name,
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    """A certificate for ``public_key`` issued by ``issuer_cert``'s key: the given
    (extension, critical) pairs, then SKI and AKI."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    builder = builder.add_extension(_ski(public_key), critical=False)
    builder = builder.add_extension(_aki(issuer_cert), critical=False)
    return builder.sign(issuer_key, signing_hash(issuer_key))


def build_intermediate_ca(
    public_key: PublicKey,
    subject: x509.Name,
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    extended_key_usages: Sequence[x509.ObjectIdentifier] = (ExtendedKeyUsageOID.CODE_SIGNING,),
) -> x509.Certificate:
    """An intermediate CA (path length 0) signed by ``issuer_key``."""
    _require_ecdsa_ca(issuer_key)
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (_ca_key_usage(), True),
    ]
    if extended_key_usages:
        extensions.append((x509.ExtendedKeyUsage(list(extended_key_usages)), False))
    return _issue(public_key, subject, issuer_cert, issuer_key, not_before, not_after, extensions)


def build_tsa_certificate(
    public_key: PublicKey,
    subject: x509.Name,
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    """A timestamping leaf: digitalSignature, EKU timeStamping CRITICAL (RFC 3161 2.3)."""
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (digital_signature_usage(), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), True),
    ]
    return _issue(public_key, subject, issuer_cert, issuer_key, not_before, not_after, extensions)


def authority_key_identifier(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """AKI extension value pointing at ``issuer_cert``'s SKI."""
    return _aki(issuer_cert)


def subject_key_identifier(public_key: PublicKey) -> x509.SubjectKeyIdentifier:
    """SKI extension value for ``public_key`` (RFC 5280 method 1)."""
    return _ski(public_key)


def cert_der(cert: x509.Certificate) -> bytes:
    """DER encoding of ``cert``."""
    return cert.public_bytes(serialization.Encoding.DER)


def cert_pem(cert: x509.Certificate) -> str:
    """Standard 64-column PEM of ``cert`` (byte-identical to Go's encoder)."""
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def pem_chain(certs: Iterable[x509.Certificate]) -> str:
    """Concatenated PEM of ``certs`` in the given order."""
    return "".join(cert_pem(c) for c in certs)


def load_pem_chain(data: bytes | str, *, what: str = "certificate chain") -> list[x509.Certificate]:
    """Parse one or more PEM certificates; raise ``VerificationError`` if there are none."""
    raw = data.encode("ascii") if isinstance(data, str) else data
    try:
        certs = x509.load_pem_x509_certificates(raw)
    except ValueError as exc:
        raise VerificationError(f"{what} is not valid PEM: {exc}") from exc
    if not certs:
        raise VerificationError(f"{what} holds no certificate")
    return certs


def load_der_certificate(data: bytes, *, what: str = "certificate") -> x509.Certificate:
    """Parse a DER certificate; raise ``VerificationError`` on garbage."""
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise VerificationError(f"{what} is not a valid DER certificate: {exc}") from exc


def check_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    """Raise unless ``issuer``'s key signed ``cert`` and the names chain."""
    if cert.issuer != issuer.subject:
        raise VerificationError(
            f"certificate issuer {cert.issuer.rfc4514_string()!r} does not match "
            f"{issuer.subject.rfc4514_string()!r}"
        )
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError) as exc:
        raise VerificationError(f"certificate was not issued by the given issuer: {exc}") from exc
    except Exception as exc:  # cryptography raises InvalidSignature
        raise VerificationError("certificate signature does not verify with its issuer") from exc
