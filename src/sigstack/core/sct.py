"""RFC 6962 certificate-transparency structures: SCTs, leaves, tree heads.

Pure encoding and signature code shared by the CT log (which signs SCTs and tree
heads) and Fulcio (which embeds the SCT it receives in the final certificate).

Wire formats (RFC 6962 section 3):

* ``TimestampedEntry``: timestamp(u64 ms) || entry_type(u16) || signed_entry ||
  extensions(opaque<0..2^16-1>); ``signed_entry`` is ``ASN.1Cert<1..2^24-1>`` for
  ``x509_entry`` or ``issuer_key_hash[32] || TBSCertificate<1..2^24-1>`` for
  ``precert_entry``.
* The SCT signature covers ``sct_version(0) || signature_type(0) || TimestampedEntry``.
* ``MerkleTreeLeaf``: version(0) || leaf_type(0 = timestamped_entry) || TimestampedEntry.
* SCT: version(0) || log_id[32] || timestamp || extensions || DigitallySigned, where
  ``DigitallySigned`` is hash_alg(u8) || sig_alg(u8) || signature<0..2^16-1>.
* The embedded SCT list extension (OID 1.3.6.1.4.1.11129.2.4.2) holds an OCTET
  STRING whose content is ``SignedCertificateTimestampList``: a u16-length list of
  u16-length serialized SCTs.
* ``TreeHeadSignature``: version(0) || signature_type(1) || timestamp || tree_size(u64)
  || sha256_root_hash[32].

Only SHA-256 with ECDSA (the clients' requirement) is produced; RSA/SHA-256 can be
verified.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass
from typing import Any

from asn1crypto import core as asn1_core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sigstack.core.errors import InvalidRequest, VerificationError
from sigstack.core.keys import PrivateKey, PublicKey, sign, spki_der, verify_signature

SCT_LIST_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
PRECERT_POISON_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.3")

ENTRY_TYPE_X509 = 0
ENTRY_TYPE_PRECERT = 1

HASH_SHA256 = 4  # TLS HashAlgorithm.sha256
SIG_RSA = 1  # TLS SignatureAlgorithm.rsa
SIG_ECDSA = 3  # TLS SignatureAlgorithm.ecdsa

_MAX_U24 = (1 << 24) - 1
_MAX_U16 = (1 << 16) - 1


def _u24(data: bytes) -> bytes:
    if not 0 < len(data) <= _MAX_U24:
        raise InvalidRequest(f"opaque<1..2^24-1> field has invalid length {len(data)}")
    return len(data).to_bytes(3, "big") + data


def _u16(data: bytes) -> bytes:
    if len(data) > _MAX_U16:
        raise InvalidRequest(f"opaque<0..2^16-1> field is too long ({len(data)} bytes)")
    return len(data).to_bytes(2, "big") + data


class _Reader:
    """Bounds-checked TLS presentation-language reader."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def take(self, n: int) -> bytes:
        if self._pos + n > len(self._data):
            raise VerificationError(f"{self._what} is truncated")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def opaque(self, len_bytes: int) -> bytes:
        return self.take(self.uint(len_bytes))

    def done(self) -> None:
        if self._pos != len(self._data):
            raise VerificationError(
                f"{self._what} has {len(self._data) - self._pos} trailing bytes"
            )


# --- entries and leaves -------------------------------------------------------------------


def issuer_key_hash(issuer_public_key: PublicKey) -> bytes:
    """SHA-256 of the issuer's DER SPKI, as bound into a precert entry."""
    return hashlib.sha256(spki_der(issuer_public_key)).digest()


def x509_timestamped_entry(timestamp_ms: int, cert_der: bytes, extensions: bytes = b"") -> bytes:
    """``TimestampedEntry`` for an ``x509_entry``."""
    return struct.pack(">QH", timestamp_ms, ENTRY_TYPE_X509) + _u24(cert_der) + _u16(extensions)


def precert_timestamped_entry(
    timestamp_ms: int, issuer_key_sha256: bytes, tbs_der: bytes, extensions: bytes = b""
) -> bytes:
    """``TimestampedEntry`` for a ``precert_entry``."""
    if len(issuer_key_sha256) != 32:
        raise InvalidRequest("issuer_key_hash must be 32 bytes")
    return (
        struct.pack(">QH", timestamp_ms, ENTRY_TYPE_PRECERT)
        + issuer_key_sha256
        + _u24(tbs_der)
        + _u16(extensions)
    )


def merkle_tree_leaf(timestamped_entry: bytes) -> bytes:
    """``MerkleTreeLeaf`` (v1, timestamped_entry) wrapping ``timestamped_entry``."""
    return b"\x00\x00" + timestamped_entry


def sct_signed_data(timestamped_entry: bytes) -> bytes:
    """The bytes an SCT signature covers (RFC 6962 3.2 ``digitally-signed`` struct)."""
    return b"\x00\x00" + timestamped_entry


def tree_head_signed_data(timestamp_ms: int, tree_size: int, root_hash: bytes) -> bytes:
    """``TreeHeadSignature`` input (RFC 6962 3.5)."""
    if len(root_hash) != 32:
        raise InvalidRequest("root hash must be 32 bytes")
    return struct.pack(">BBQQ", 0, 1, timestamp_ms, tree_size) + root_hash


# --- DigitallySigned ----------------------------------------------------------------------


def _sig_alg_for(public_key: PublicKey) -> int:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return SIG_ECDSA
    if isinstance(public_key, rsa.RSAPublicKey):
        return SIG_RSA
    raise VerificationError("CT signatures use ECDSA or RSA keys")


def encode_digitally_signed(hash_alg: int, sig_alg: int, signature: bytes) -> bytes:
    """TLS ``DigitallySigned``: hash_alg || sig_alg || signature<0..2^16-1>."""
    return bytes([hash_alg, sig_alg]) + _u16(signature)


def decode_digitally_signed(data: bytes) -> tuple[int, int, bytes]:
    """Parse a TLS ``DigitallySigned`` into (hash_alg, sig_alg, signature)."""
    r = _Reader(data, "DigitallySigned")
    hash_alg, sig_alg = r.uint(1), r.uint(1)
    sig = r.opaque(2)
    r.done()
    return hash_alg, sig_alg, sig


def sign_digitally(private_key: PrivateKey, data: bytes) -> bytes:
    """Sign ``data`` with SHA-256 and wrap it as a ``DigitallySigned``."""
    public = private_key.public_key()
    sig_alg = _sig_alg_for(public)
    if isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name != "secp256r1":
        raise VerificationError("CT logs sign with ECDSA P-256 (SHA-256 only)")
    return encode_digitally_signed(HASH_SHA256, sig_alg, sign(private_key, data))


def verify_digitally(public_key: PublicKey, digitally_signed: bytes, data: bytes) -> None:
    """Verify a ``DigitallySigned`` over ``data``; SHA-256 only."""
    hash_alg, sig_alg, sig = decode_digitally_signed(digitally_signed)
    if hash_alg != HASH_SHA256:
        raise VerificationError(f"unsupported CT hash algorithm {hash_alg}: only SHA-256")
    if sig_alg != _sig_alg_for(public_key):
        raise VerificationError("CT signature algorithm does not match the log key")
    verify_signature(public_key, sig, data)


# --- SCTs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedCertificateTimestamp:
    """An RFC 6962 v1 SCT."""

    log_id: bytes
    timestamp_ms: int
    extensions: bytes
    digitally_signed: bytes

    def encode(self) -> bytes:
        """The serialized ``SignedCertificateTimestamp`` struct."""
        if len(self.log_id) != 32:
            raise InvalidRequest("SCT log_id must be 32 bytes")
        return (
            b"\x00"
            + self.log_id
            + struct.pack(">Q", self.timestamp_ms)
            + _u16(self.extensions)
            + self.digitally_signed
        )

    @classmethod
    def decode(cls, data: bytes) -> SignedCertificateTimestamp:
        """Parse a serialized SCT; only v1 is accepted."""
        r = _Reader(data, "SCT")
        if r.uint(1) != 0:
            raise VerificationError("only v1 SCTs are supported")
        log_id = r.take(32)
        ts = r.uint(8)
        ext = r.opaque(2)
        hash_alg, sig_alg = r.uint(1), r.uint(1)
        sig = r.opaque(2)
        r.done()
        return cls(log_id, ts, ext, encode_digitally_signed(hash_alg, sig_alg, sig))

    def to_json(self) -> dict[str, Any]:
        """The RFC 6962 ``add-chain`` / ``add-pre-chain`` response body."""
        return {
            "sct_version": 0,
            "id": base64.b64encode(self.log_id).decode(),
            "timestamp": self.timestamp_ms,
            "extensions": base64.b64encode(self.extensions).decode(),
            "signature": base64.b64encode(self.digitally_signed).decode(),
        }

    @classmethod
    def from_json(cls, body: Any) -> SignedCertificateTimestamp:
        """Parse an ``add-(pre-)chain`` response; raise ``VerificationError`` if malformed."""
        try:
            if body["sct_version"] != 0:
                raise VerificationError("only v1 SCTs are supported")
            log_id = base64.b64decode(body["id"], validate=True)
            ts = body["timestamp"]
            ext = base64.b64decode(body.get("extensions", "") or "", validate=True)
            ds = base64.b64decode(body["signature"], validate=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise VerificationError(f"malformed SCT response: {exc}") from exc
        if not isinstance(ts, int) or ts < 0 or len(log_id) != 32:
            raise VerificationError("malformed SCT response: bad timestamp or log id")
        decode_digitally_signed(ds)
        return cls(log_id, ts, ext, ds)

    def verify(self, log_public_key: PublicKey, timestamped_entry: bytes) -> None:
        """Verify this SCT against the entry it claims to cover."""
        from sigstack.core.keys import spki_sha256

        if spki_sha256(log_public_key) != self.log_id:
            raise VerificationError("SCT log_id is not the SHA-256 of the log's key")
        ts = struct.unpack(">Q", timestamped_entry[:8])[0] if len(timestamped_entry) >= 8 else -1
        if ts != self.timestamp_ms:
            raise VerificationError("SCT timestamp differs from the entry's timestamp")
        verify_digitally(log_public_key, self.digitally_signed, sct_signed_data(timestamped_entry))


def sign_sct(
    log_private_key: PrivateKey, log_id: bytes, timestamped_entry: bytes
) -> SignedCertificateTimestamp:
    """Sign an SCT over ``timestamped_entry`` (whose timestamp and extensions it repeats)."""
    r = _Reader(timestamped_entry, "TimestampedEntry")
    ts = r.uint(8)
    entry_type = r.uint(2)
    if entry_type == ENTRY_TYPE_PRECERT:
        r.take(32)
    elif entry_type != ENTRY_TYPE_X509:
        raise InvalidRequest(f"unknown CT entry type {entry_type}")
    r.opaque(3)
    extensions = r.opaque(2)
    r.done()
    ds = sign_digitally(log_private_key, sct_signed_data(timestamped_entry))
    return SignedCertificateTimestamp(log_id, ts, extensions, ds)


def encode_sct_list(scts: list[SignedCertificateTimestamp]) -> bytes:
    """TLS ``SignedCertificateTimestampList``."""
    if not scts:
        raise InvalidRequest("an SCT list needs at least one SCT")
    body = b"".join(_u16(s.encode()) for s in scts)
    return _u16(body)


def decode_sct_list(data: bytes) -> list[SignedCertificateTimestamp]:
    """Parse a TLS ``SignedCertificateTimestampList``."""
    r = _Reader(data, "SCT list")
    body = r.opaque(2)
    r.done()
    inner = _Reader(body, "SCT list")
    out = []
    while True:
        try:
            item = inner.opaque(2)
        except VerificationError:
            break
        out.append(SignedCertificateTimestamp.decode(item))
    inner.done()
    return out


def sct_list_extension(scts: list[SignedCertificateTimestamp]) -> x509.UnrecognizedExtension:
    """The embedded-SCT X.509 extension (its value is an OCTET STRING of the TLS list)."""
    value = asn1_core.OctetString(encode_sct_list(scts)).dump()
    return x509.UnrecognizedExtension(SCT_LIST_OID, value)


def tbs_without_extension(cert_der: bytes, oid: x509.ObjectIdentifier) -> bytes:
    """DER TBSCertificate of ``cert_der`` with the extension ``oid`` removed.

    A CT log uses this to strip the poison extension from a precertificate; the
    result must equal the final certificate's TBS without its SCT list.
    """
    try:
        cert = asn1_x509.Certificate.load(cert_der)
        tbs = cert["tbs_certificate"].copy()
        exts = tbs["extensions"]
        kept = [e for e in exts if e["extn_id"].dotted != oid.dotted_string]
        if len(kept) == len(exts):
            raise VerificationError(f"certificate has no extension {oid.dotted_string}")
        tbs["extensions"] = kept if kept else None
        return bytes(tbs.dump(force=True))
    except VerificationError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise VerificationError(f"cannot parse certificate TBS: {exc}") from exc
