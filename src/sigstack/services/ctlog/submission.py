"""Validation of ``add-chain`` / ``add-pre-chain`` submissions and their log entries.

Pure functions (no I/O, no log engine): the CT log service calls
:func:`validate_chain` on every submission, then encodes the accepted chain with
:func:`timestamped_entry`, :func:`tile_leaf` and :func:`issuer_objects`.

What :func:`validate_chain` guarantees of a chain it returns (RFC 6962 sections
3.1 and 4.1-4.2; anything else raises ``InvalidRequest`` or ``VerificationError``,
both HTTP 400, with a message naming the certificate at fault as ``chain[i]``):

* 1 to ``max_length`` certificates, each a well-formed DER X.509 certificate;
* for ``add-pre-chain`` the leaf carries the precertificate poison extension
  (1.3.6.1.4.1.11129.2.4.3) and it is CRITICAL; for ``add-chain`` the leaf carries
  no poison;
* the leaf has not expired (``notAfter`` is not before the log's clock);
* each certificate is signed by the next one (names chain and the signature
  verifies), and the last one either IS an accepted root (byte-equal DER) or is
  signed by one, which is then appended: the returned path always ends at a root;
* every issuer in the path is a CA (BasicConstraints ``ca=True``), may sign
  certificates (keyCertSign if it has a KeyUsage) and respects its path length;
* no issuer is a precertificate signing certificate (EKU 1.3.6.1.4.1.11129.2.4.4):
  this log does not support RFC 6962's delegated precertificate issuance;
* a precertificate has an issuer (the path has at least two certificates), whose
  key hash binds the entry.

Entry encodings:

* ``TimestampedEntry`` (RFC 6962 3.4) via ``sigstack.core.sct``; for a
  precertificate the TBS is the leaf's without the poison and the issuer key hash is
  SHA-256 of the issuer's DER SPKI.
* ``TileLeaf`` (c2sp.org/static-ct-api, "Log entries"): TimestampedEntry, then the
  precertificate DER for a ``precert_entry``, then the SHA-256 fingerprints of the
  issuers (the submitted chain minus the leaf, plus the root if it was appended).
  It must fit an entry-bundle record (c2sp.org/tlog-tiles: at most 65535 bytes).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from sigstack.core.errors import InvalidRequest, SigstackError, VerificationError
from sigstack.core.pki import cert_der, check_issued_by, load_der_certificate
from sigstack.core.sct import (
    PRECERT_POISON_OID,
    issuer_key_hash,
    merkle_tree_leaf,
    precert_timestamped_entry,
    tbs_without_extension,
    x509_timestamped_entry,
)
from sigstack.core.tiles import MAX_ENTRY_SIZE

PRECERT_SIGNING_EKU = ExtendedKeyUsageOID.CERTIFICATE_TRANSPARENCY
"""EKU 1.3.6.1.4.1.11129.2.4.4 of an RFC 6962 Precertificate Signing Certificate."""

_MAX_U16 = (1 << 16) - 1


@dataclass(frozen=True)
class ValidatedChain:
    """A submission that passed :func:`validate_chain`.

    ``certificates`` and ``ders`` run leaf first and always end at an accepted
    root; ``ders`` holds the bytes exactly as submitted (plus the root's DER when
    the log appended it). ``root_appended`` says whether it did.
    """

    certificates: tuple[x509.Certificate, ...]
    ders: tuple[bytes, ...]
    precert: bool
    root_appended: bool

    @property
    def leaf(self) -> x509.Certificate:
        """The submitted certificate or precertificate."""
        return self.certificates[0]

    @property
    def leaf_der(self) -> bytes:
        """DER of the leaf exactly as submitted."""
        return self.ders[0]

    @property
    def issuer_ders(self) -> tuple[bytes, ...]:
        """DER of every issuer in the path, root last."""
        return self.ders[1:]


def _label(index: int, cert: x509.Certificate | None = None) -> str:
    if cert is None:
        return f"chain[{index}]"
    subject = cert.subject.rfc4514_string() or "empty subject"
    return f"chain[{index}] ({subject})"


def _extension(
    cert: x509.Certificate, index: int, oid: x509.ObjectIdentifier
) -> x509.Extension[x509.ExtensionType] | None:
    try:
        return cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:  # duplicate or malformed extensions
        raise VerificationError(f"{_label(index)} has malformed extensions: {exc}") from exc


def _check_leaf(cert: x509.Certificate, *, precert: bool, now: dt.datetime) -> None:
    poison = _extension(cert, 0, PRECERT_POISON_OID)
    if precert:
        if poison is None:
            raise InvalidRequest(
                f"{_label(0, cert)} is not a precertificate: it lacks the poison extension "
                f"{PRECERT_POISON_OID.dotted_string}; submit final certificates to add-chain"
            )
        if not poison.critical:
            raise InvalidRequest(
                f"{_label(0, cert)} has a NON-critical poison extension "
                f"{PRECERT_POISON_OID.dotted_string}; RFC 6962 requires it to be critical"
            )
    elif poison is not None:
        raise InvalidRequest(
            f"{_label(0, cert)} is a precertificate (it carries the poison extension "
            f"{PRECERT_POISON_OID.dotted_string}); submit it to add-pre-chain"
        )
    not_after = cert.not_valid_after_utc
    if not_after < now:
        raise InvalidRequest(
            f"{_label(0, cert)} expired at {not_after.isoformat()}; "
            "this log does not accept expired certificates"
        )


def _check_issuer(cert: x509.Certificate, index: int, ca_depth: int) -> None:
    """Raise unless ``cert`` (at ``index``) may issue the ``ca_depth``-th step of the path.

    ``ca_depth`` counts the CA certificates below ``cert`` in the path (0 for the
    leaf's direct issuer), the quantity BasicConstraints pathLenConstraint bounds.
    """
    bc_ext = _extension(cert, index, x509.oid.ExtensionOID.BASIC_CONSTRAINTS)
    if bc_ext is None:
        raise VerificationError(
            f"{_label(index, cert)} issues a certificate but has no BasicConstraints: "
            "it is not a CA"
        )
    bc = bc_ext.value
    assert isinstance(bc, x509.BasicConstraints)
    if not bc.ca:
        raise VerificationError(
            f"{_label(index, cert)} issues a certificate but is not a CA "
            "(BasicConstraints ca=False)"
        )
    if bc.path_length is not None and ca_depth > bc.path_length:
        raise VerificationError(
            f"{_label(index, cert)} has path length {bc.path_length} but {ca_depth} "
            "CA certificates below it"
        )
    ku_ext = _extension(cert, index, x509.oid.ExtensionOID.KEY_USAGE)
    if ku_ext is not None:
        ku = ku_ext.value
        assert isinstance(ku, x509.KeyUsage)
        if not ku.key_cert_sign:
            raise VerificationError(
                f"{_label(index, cert)} is a CA whose KeyUsage lacks keyCertSign"
            )
    eku_ext = _extension(cert, index, x509.oid.ExtensionOID.EXTENDED_KEY_USAGE)
    if eku_ext is not None:
        eku = eku_ext.value
        assert isinstance(eku, x509.ExtendedKeyUsage)
        if PRECERT_SIGNING_EKU in eku:
            raise InvalidRequest(
                f"{_label(index, cert)} is a precertificate signing certificate (EKU "
                f"{PRECERT_SIGNING_EKU.dotted_string}); this log does not accept them: "
                "have the CA sign the precertificate directly"
            )


def _check_signed(child: x509.Certificate, index: int, issuer: x509.Certificate, what: str) -> None:
    try:
        check_issued_by(child, issuer)
    except VerificationError as exc:
        raise VerificationError(f"{_label(index, child)} is not signed by {what}: {exc}") from exc


def _anchor(
    last: x509.Certificate,
    last_der: bytes,
    index: int,
    roots: Sequence[x509.Certificate],
    root_ders: Sequence[bytes],
) -> tuple[x509.Certificate, bytes] | None:
    """The accepted root to append after ``last``; None if ``last`` is a root itself."""
    if last_der in root_ders:
        return None
    failures: list[str] = []
    for root, der in zip(roots, root_ders, strict=True):
        if root.subject != last.issuer:
            continue
        try:
            check_issued_by(last, root)
        except VerificationError as exc:
            failures.append(str(exc))
            continue
        return root, der
    detail = f" ({'; '.join(failures)})" if failures else ""
    raise VerificationError(
        f"chain does not lead to an accepted root: {_label(index, last)}, issued by "
        f"{last.issuer.rfc4514_string()!r}, is neither an accepted root nor signed by one"
        f"{detail}; GET /ct/v1/get-roots lists the accepted roots"
    )


def validate_chain(
    chain: Sequence[bytes],
    *,
    precert: bool,
    roots: Sequence[x509.Certificate],
    now: dt.datetime,
    max_length: int,
) -> ValidatedChain:
    """Validate a submitted chain (leaf first) and complete it to an accepted root."""
    if not isinstance(chain, Sequence) or isinstance(chain, bytes | str):
        raise InvalidRequest("chain must be a list of DER certificates")
    if not chain:
        raise InvalidRequest("chain is empty: submit the certificate followed by its issuers")
    if len(chain) > max_length:
        raise InvalidRequest(
            f"chain has {len(chain)} certificates; this log accepts at most {max_length}"
        )
    ders: list[bytes] = []
    certs: list[x509.Certificate] = []
    for i, der in enumerate(chain):
        if not isinstance(der, bytes):
            raise InvalidRequest(f"chain[{i}] must be DER bytes, not {type(der).__name__}")
        certs.append(load_der_certificate(der, what=f"chain[{i}]"))
        ders.append(der)
    try:
        _check_leaf(certs[0], precert=precert, now=now)
        for i in range(len(certs) - 1):
            _check_issuer(certs[i + 1], i + 1, i)
            _check_signed(certs[i], i, certs[i + 1], f"chain[{i + 1}]")
        root_ders = [cert_der(r) for r in roots]
        anchor = _anchor(certs[-1], ders[-1], len(certs) - 1, roots, root_ders)
        if anchor is not None:
            root, root_der = anchor
            _check_issuer(root, len(certs), len(certs) - 1)
            certs.append(root)
            ders.append(root_der)
    except SigstackError:
        raise
    except ValueError as exc:  # cryptography parsing lazily, e.g. a malformed extension
        raise VerificationError(f"chain contains a malformed certificate: {exc}") from exc
    if precert and len(certs) < 2:
        raise InvalidRequest(
            "a precertificate needs its issuer in the chain (RFC 6962 3.2 binds its key hash)"
        )
    return ValidatedChain(tuple(certs), tuple(ders), precert, anchor is not None)


def timestamped_entry(chain: ValidatedChain, timestamp_ms: int, extensions: bytes = b"") -> bytes:
    """The RFC 6962 ``TimestampedEntry`` for ``chain`` at ``timestamp_ms``."""
    if chain.precert:
        issuer = chain.certificates[1]
        tbs = tbs_without_extension(chain.leaf_der, PRECERT_POISON_OID)
        return precert_timestamped_entry(
            timestamp_ms,
            issuer_key_hash(issuer.public_key()),  # type: ignore[arg-type]
            tbs,
            extensions,
        )
    return x509_timestamped_entry(timestamp_ms, chain.leaf_der, extensions)


def fingerprint(der: bytes) -> bytes:
    """SHA-256 of a certificate's DER: its static-ct-api issuer fingerprint."""
    return hashlib.sha256(der).digest()


def tile_leaf(chain: ValidatedChain, timestamped: bytes) -> bytes:
    """The static-ct-api ``TileLeaf`` stored in the entry bundle for ``chain``."""
    out = bytearray(timestamped)
    if chain.precert:
        leaf = chain.leaf_der
        if not 0 < len(leaf) < (1 << 24):
            raise InvalidRequest("precertificate is too large for an RFC 6962 entry")
        out += len(leaf).to_bytes(3, "big") + leaf
    fingerprints = b"".join(fingerprint(der) for der in chain.issuer_ders)
    if len(fingerprints) > _MAX_U16:
        raise InvalidRequest("too many issuers for a static-ct-api entry")
    out += len(fingerprints).to_bytes(2, "big") + fingerprints
    if len(out) > MAX_ENTRY_SIZE:
        raise InvalidRequest(
            f"the log entry for this chain would be {len(out)} bytes; entry bundles hold at "
            f"most {MAX_ENTRY_SIZE} bytes per entry (the certificate is too large)"
        )
    return bytes(out)


def issuer_objects(chain: ValidatedChain) -> dict[str, bytes]:
    """The static-ct-api issuer objects of ``chain``: ``issuer/<hex sha256>`` -> DER."""
    return {f"issuer/{fingerprint(der).hex()}": der for der in chain.issuer_ders}


def _tile_leaf_bounds(data: bytes, start: int) -> tuple[int, int]:
    """(end of the ``TimestampedEntry``, end of the ``TileLeaf``) for the one at ``start``."""

    def u(at: int, n: int) -> int:
        if at + n > len(data):
            raise VerificationError("TileLeaf is truncated")
        return int.from_bytes(data[at : at + n], "big")

    at = start + 8  # timestamp
    entry_type = u(at, 2)
    at += 2
    if entry_type == 1:  # precert_entry: issuer_key_hash[32] then TBSCertificate<1..2^24-1>
        at += 32
    elif entry_type != 0:
        raise VerificationError(f"TileLeaf has unknown entry type {entry_type}")
    at += 3 + u(at, 3)  # the certificate or TBS
    at += 2 + u(at, 2)  # extensions
    timestamped_end = at
    if entry_type == 1:
        at += 3 + u(at, 3)  # the precertificate
    at += 2 + u(at, 2)  # issuer fingerprints
    if at > len(data):
        raise VerificationError("TileLeaf is truncated")
    return timestamped_end, at


def merkle_leaf_from_tile_leaf(record: bytes) -> bytes:
    """The RFC 6962 ``MerkleTreeLeaf`` of a stored static-ct-api ``TileLeaf``.

    A ``TileLeaf`` starts with the ``TimestampedEntry`` the leaf wraps; its length is
    read from the entry's own length prefixes. Raises ``VerificationError`` if the
    record does not parse or carries trailing bytes.
    """
    timestamped_end, end = _tile_leaf_bounds(record, 0)
    if end != len(record):
        raise VerificationError("TileLeaf has trailing bytes")
    return merkle_tree_leaf(record[:timestamped_end])


@dataclass(frozen=True)
class TileLeafParts:
    """A stored ``TileLeaf`` taken apart."""

    timestamped_entry: bytes
    precertificate: bytes | None  # the precert's DER, for precert entries
    issuer_fingerprints: tuple[bytes, ...]  # SHA-256 of each chain certificate, leaf's issuer first


def tile_leaf_parts(record: bytes) -> TileLeafParts:
    """Parse a stored ``TileLeaf`` (``VerificationError`` if malformed)."""
    timestamped_end, end = _tile_leaf_bounds(record, 0)
    if end != len(record):
        raise VerificationError("TileLeaf has trailing bytes")
    at = timestamped_end
    precert = None
    if int.from_bytes(record[8:10], "big") == 1:
        length = int.from_bytes(record[at : at + 3], "big")
        precert = record[at + 3 : at + 3 + length]
        at += 3 + length
    length = int.from_bytes(record[at : at + 2], "big")
    fingerprints = record[at + 2 : at + 2 + length]
    if length % 32:
        raise VerificationError("TileLeaf issuer fingerprints are not 32-byte hashes")
    return TileLeafParts(
        record[:timestamped_end],
        precert,
        tuple(fingerprints[i : i + 32] for i in range(0, length, 32)),
    )


def split_tile_leaves(data: bytes) -> list[bytes]:
    """The ``TileLeaf`` records of a static-ct-api data tile (they are self-delimiting)."""
    records = []
    at = 0
    while at < len(data):
        _, end = _tile_leaf_bounds(data, at)
        records.append(data[at:end])
        at = end
    return records
