"""DSSE envelopes as Rekor verifies them: PAE, signature matching, in-toto digests.

Shared by Rekor v1's ``dsse`` 0.0.1 and ``intoto`` 0.0.2 kinds and Rekor v2's
``dsseRequestV002``. Guarantees:

* :func:`pae` is DSSE's pre-authentication encoding
  ``"DSSEv1" SP len(type) SP type SP len(body) SP body`` (byte lengths, decimal).
* :func:`match_signatures` accepts an envelope only if EVERY signature verifies
  under at least one of the given verifiers AND every verifier verifies at least
  one signature (a verifier that signs nothing is refused, as upstream's
  per-verifier threshold of one does); it returns, for each signature, the first
  verifier (in the given order) that verifies it. Anything else raises
  :class:`~sigstack.core.errors.VerificationError` naming the signature or
  verifier at fault. Envelope key IDs are hints only and are not consulted.
* Work is bounded: at most :data:`MAX_SIGNATURES` signatures and
  :data:`MAX_VERIFIERS` verifiers (upstream rekor-tiles' limits), so at most 100
  signature checks per envelope.
* :func:`in_toto_digests` extracts the artifact digests an in-toto statement
  names (``subject[].digest`` and SLSA ``predicate.materials[].digest``) as
  ``"<alg>:<lowercase hex>"`` for the search index; it never raises, keeps only
  well-formed SHA-1/SHA-2 digests and at most :data:`MAX_INDEXED_DIGESTS` of them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from sigstack.core import keys
from sigstack.core.errors import InvalidRequest, VerificationError

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"

MAX_SIGNATURES = 10
"""Most signatures an envelope may carry."""

MAX_VERIFIERS = 10
"""Most verifiers (keys or certificates) a request may offer."""

MAX_INDEXED_DIGESTS = 64
"""Most in-toto subject/material digests indexed for one entry."""

DIGEST_HEX_LENGTHS = {"sha1": 40, "sha256": 64, "sha384": 96, "sha512": 128}
"""Digest algorithms the search index knows, with their hex lengths."""

_HEX = re.compile(r"[0-9a-fA-F]+")

Verify = Callable[[bytes, bytes], None]
"""``verify(signature, message)``: raise :class:`VerificationError` unless valid."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of ``(payload_type, payload)``."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def decode_envelope_b64(text: str, what: str) -> bytes:
    """Decode an envelope field as DSSE implementations do: standard base64, else URL-safe.

    Padding is required in both alphabets; anything else raises ``InvalidRequest``.
    """
    if not isinstance(text, str):
        raise InvalidRequest(f"{what} must be a base64 string")
    raw = text.encode("ascii", errors="replace")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        pass
    if re.fullmatch(rb"[A-Za-z0-9_-]*={0,2}", raw) and len(raw) % 4 == 0:
        try:
            return base64.urlsafe_b64decode(raw)
        except (binascii.Error, ValueError):
            pass
    raise InvalidRequest(f"{what} is not valid base64")


def verify_v1(public_key: keys.PublicKey) -> Verify:
    """Rekor v1's DSSE signature check for ``public_key``.

    Upstream loads every DSSE verifier with SHA-256 whatever the key: ECDSA (any
    supported curve) with SHA-256, RSA PKCS#1 v1.5 with SHA-256, pure Ed25519.
    """
    keys.require_supported(public_key)

    def verify(signature: bytes, message: bytes) -> None:
        try:
            if isinstance(public_key, ec.EllipticCurvePublicKey):
                public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            elif isinstance(public_key, rsa.RSAPublicKey):
                public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            elif isinstance(public_key, ed25519.Ed25519PublicKey):
                public_key.verify(signature, message)
            else:  # pragma: no cover - require_supported refused it
                raise VerificationError("unsupported public key type")
        except InvalidSignature as exc:
            raise VerificationError("signature does not verify") from exc

    return verify


def verify_v2(public_key: keys.PublicKey) -> Verify:
    """Rekor v2's DSSE signature check: the key's own scheme (``keyDetails``'s hash)."""

    def verify(signature: bytes, message: bytes) -> None:
        keys.verify_signature(public_key, signature, message)

    return verify


def match_signatures(
    message: bytes, signatures: Sequence[bytes], verifiers: Sequence[Verify]
) -> list[int]:
    """For each signature, the index of the first verifier it verifies under (see above)."""
    if not signatures:
        raise InvalidRequest("the DSSE envelope has no signatures")
    if len(signatures) > MAX_SIGNATURES:
        raise InvalidRequest(
            f"the DSSE envelope has {len(signatures)} signatures; at most {MAX_SIGNATURES} "
            "are accepted"
        )
    if not verifiers:
        raise InvalidRequest("no verifiers (public keys or certificates) were given")
    if len(verifiers) > MAX_VERIFIERS:
        raise InvalidRequest(
            f"{len(verifiers)} verifiers were given; at most {MAX_VERIFIERS} are accepted"
        )
    for i, signature in enumerate(signatures):
        if not signature:
            raise InvalidRequest(f"DSSE signature {i} is empty")
    assigned: list[int | None] = [None] * len(signatures)
    for v, verify in enumerate(verifiers):
        verified_any = False
        for s, signature in enumerate(signatures):
            try:
                verify(signature, message)
            except VerificationError:
                continue
            verified_any = True
            if assigned[s] is None:
                assigned[s] = v
        if not verified_any:
            raise VerificationError(
                f"verifier {v} does not verify any signature of the DSSE envelope"
            )
    missing = [s for s, v in enumerate(assigned) if v is None]
    if missing:
        raise VerificationError(
            f"DSSE signature {missing[0]} does not verify with any of the given verifiers"
        )
    return [v for v in assigned if v is not None]


def in_toto_digests(payload_type: str, payload: bytes) -> list[str]:
    """Artifact digests named by an in-toto statement (see the module docstring)."""
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        return []
    try:
        statement = json.loads(payload)
    except (ValueError, RecursionError):
        return []
    if not isinstance(statement, dict):
        return []
    found: list[str] = []
    _collect(statement.get("subject"), found)
    predicate = statement.get("predicate")
    if isinstance(predicate, dict):
        _collect(predicate.get("materials"), found)
    unique = list(dict.fromkeys(found))
    return unique[:MAX_INDEXED_DIGESTS]


def _collect(items: Any, found: list[str]) -> None:
    if not isinstance(items, list):
        return
    for item in items:
        if len(found) >= 4 * MAX_INDEXED_DIGESTS:
            return
        digest = item.get("digest") if isinstance(item, dict) else None
        if not isinstance(digest, dict):
            continue
        for alg, value in digest.items():
            length = DIGEST_HEX_LENGTHS.get(alg.lower()) if isinstance(alg, str) else None
            if (
                length is not None
                and isinstance(value, str)
                and len(value) == length
                and _HEX.fullmatch(value)
            ):
                found.append(f"{alg.lower()}:{value.lower()}")
