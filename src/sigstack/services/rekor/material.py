"""Verification material inside Rekor v1 entries: PEM keys and certificates.

Rekor v1 bodies carry a signer's public key or X.509 certificate as base64 of PEM.
Upstream Rekor stores them re-encoded ("canonicalized") from the parsed DER, and
clients compare those bytes with what they rebuild (sigstore-python base64-encodes
``cert.public_bytes(PEM)`` and compares), so this module guarantees:

* :func:`load_pem_verifier` accepts exactly one PEM block (surrounding whitespace
  allowed) of type ``CERTIFICATE`` or ``PUBLIC KEY`` whose base64 body is strict
  and whose DER parses; anything else raises
  :class:`~sigstack.core.errors.InvalidRequest` naming the problem. Several
  concatenated certificates (a chain) are refused with a message saying so.
* :attr:`PemVerifier.canonical_pem` is the standard encoding of what was parsed:
  64-column base64 lines, ``\\n`` line ends, a final newline; for a certificate its
  DER exactly as received, for a key the re-encoded DER SubjectPublicKeyInfo. Two
  different spellings of one key or certificate give the same bytes.
* Only key types sigstack supports are accepted (ECDSA P-256/P-384/P-521, Ed25519,
  RSA 2048/3072/4096); others are refused as a wrong key type.
* :func:`san_values` lists a certificate's subject alternative names as text
  (emails, URIs, DNS names, IP addresses, Fulcio's username otherName), the
  values Rekor's search by email or subject matches; it never raises.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from asn1crypto.core import UTF8String
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from sigstack.core import keys
from sigstack.core.errors import InvalidRequest, VerificationError

CERTIFICATE = "CERTIFICATE"
PUBLIC_KEY = "PUBLIC KEY"

FULCIO_USERNAME_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.7")
"""Fulcio's otherName SAN for usernames (UTF8String)."""

MAX_PEM_BYTES = 64 * 1024
"""Largest PEM document parsed (a certificate is a few KiB)."""

_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]{1,64})-----\r?\n([A-Za-z0-9+/=\r\n \t]*?)-----END \1-----"
)


@dataclass(frozen=True)
class PemVerifier:
    """A parsed public key or certificate and its canonical PEM."""

    public_key: keys.PublicKey
    canonical_pem: bytes
    certificate: x509.Certificate | None = None

    @property
    def key_hash(self) -> bytes:
        """SHA-256 of the canonical PEM: Rekor's search key for this verifier."""
        return hashlib.sha256(self.canonical_pem).digest()


def load_pem_verifier(data: bytes, what: str) -> PemVerifier:
    """Parse a PEM public key or certificate (see the module docstring)."""
    if not isinstance(data, bytes) or not data.strip():
        raise InvalidRequest(f"{what} is empty; expected a PEM public key or certificate")
    if len(data) > MAX_PEM_BYTES:
        raise InvalidRequest(f"{what} is larger than {MAX_PEM_BYTES} bytes")
    text = data.strip()
    match = _BLOCK.match(text)
    if match is None:
        raise InvalidRequest(
            f"{what} is not valid PEM: expected one '-----BEGIN CERTIFICATE-----' or "
            "'-----BEGIN PUBLIC KEY-----' block"
        )
    rest = text[match.end() :].strip()
    if rest:
        if rest.startswith(b"-----BEGIN"):
            raise InvalidRequest(
                f"{what} holds more than one PEM block; certificate chains are not "
                "supported, send the signing certificate alone"
            )
        raise InvalidRequest(f"{what} is not valid PEM: unexpected data after the PEM block")
    label = match.group(1).decode("ascii")
    body = re.sub(rb"\s+", b"", match.group(2))
    try:
        der = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"{what} is not valid PEM: bad base64 ({exc})") from exc
    if not der:
        raise InvalidRequest(f"{what} is not valid PEM: the block is empty")
    if label == CERTIFICATE:
        return _certificate(der, what)
    if label == PUBLIC_KEY:
        return _public_key(der, what)
    raise InvalidRequest(f"{what} is a PEM {label!r} block; expected a CERTIFICATE or a PUBLIC KEY")


def _certificate(der: bytes, what: str) -> PemVerifier:
    try:
        cert = x509.load_der_x509_certificate(der)
        # Parse every extension now so a malformed one is a 400 here, not later.
        _ = list(cert.extensions)
    except ValueError as exc:
        raise InvalidRequest(f"{what} is not a valid X.509 certificate: {exc}") from exc
    try:
        public_key = keys.require_supported(cert.public_key())
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise InvalidRequest(f"{what}: unsupported public key type ({exc})") from exc
    except VerificationError as exc:
        raise InvalidRequest(f"{what}: {exc.message}") from exc
    return PemVerifier(public_key, cert.public_bytes(serialization.Encoding.PEM), cert)


def _public_key(der: bytes, what: str) -> PemVerifier:
    try:
        public_key = keys.load_spki(der)
    except VerificationError as exc:
        raise InvalidRequest(f"{what}: {exc.message}") from exc
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return PemVerifier(public_key, pem)


def san_values(cert: x509.Certificate) -> list[str]:
    """The certificate's subject alternative names as text (never raises)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    out: list[str] = []
    for name in san:
        if isinstance(name, x509.RFC822Name | x509.DNSName | x509.UniformResourceIdentifier):
            out.append(name.value)
        elif isinstance(name, x509.IPAddress):
            out.append(str(name.value))
        elif isinstance(name, x509.OtherName) and name.type_id == FULCIO_USERNAME_OID:
            try:
                value = UTF8String.load(name.value).native
            except ValueError:
                continue
            if isinstance(value, str):
                out.append(value)
    return out
