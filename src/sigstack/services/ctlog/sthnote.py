"""RFC 6962 tree-head signatures as C2SP note signatures (c2sp.org/static-ct-api).

The log engine signs checkpoints through a ``NoteSigner``. For the CT log that
signer produces the static-ct-api ``RFC6962NoteSignature``::

    struct {
        uint64 timestamp;
        TreeHeadSignature signature;   // DigitallySigned over RFC 6962 3.5
    } RFC6962NoteSignature;

so an RFC 6962 ``get-sth`` answer is derived from the stored checkpoint without the
private key, and the two can never disagree.

Guarantees:

* Key ID (static-ct-api, "Checkpoints"): the first four bytes of
  ``SHA-256(key name || 0x0A || 0x05 || LogID)`` where LogID is SHA-256 of the log's
  DER SPKI. The key name is the checkpoint origin.
* The signer only signs a checkpoint body of exactly three lines (origin, decimal
  size, base64 32-byte root) whose origin is its own name: static-ct-api forbids
  extension lines under this signature type, and a ``TreeHeadSignature`` does not
  cover the origin, so we refuse to sign a body naming another log. The key never
  signs anything but RFC 6962 tree heads.
* Timestamps come from a :class:`MillisClock` shared with SCT issuance: never lower
  than any timestamp issued before (by this process, or seen in a stored
  checkpoint via :meth:`MillisClock.observe`), even if the wall clock steps back.
* The verifier and :func:`sth_from_checkpoint` raise ``VerificationError`` naming
  the problem; nothing returns a bool.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
import threading
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from sigstack.core.clock import Clock, utcnow
from sigstack.core.encoding import b64
from sigstack.core.errors import InvalidRequest, VerificationError
from sigstack.core.keys import spki_sha256
from sigstack.core.note import (
    CheckpointBody,
    check_key_name,
    open_note,
    parse_checkpoint,
    parse_note,
)
from sigstack.core.sct import (
    decode_digitally_signed,
    sign_digitally,
    tree_head_signed_data,
    verify_digitally,
)

SIGNATURE_TYPE_RFC6962 = 0x05
"""c2sp.org/signed-note signature type byte of RFC 6962 ``TreeHeadSignature``s."""

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)
_MAX_U64 = (1 << 64) - 1


def to_millis(when: dt.datetime) -> int:
    """Milliseconds since the Unix epoch of an aware ``datetime`` (naive means UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return (when - _EPOCH) // _MS


class MillisClock:
    """A millisecond clock that never goes backwards.

    One instance is shared by everything that issues timestamps for a log (SCTs
    and tree heads), so a tree head is never older than an SCT it covers and no
    timestamp is lower than one issued before it. Thread-safe: the engine may sign
    checkpoints on its own thread while requests issue SCTs.
    """

    def __init__(self, clock: Clock = utcnow) -> None:
        self._clock = clock
        self._last = 0
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        """The wall-clock time as the injected clock gives it (may step back)."""
        return self._clock()

    def now_ms(self) -> int:
        """Current time in ms since the epoch, never lower than any earlier answer."""
        wall = to_millis(self._clock())
        with self._lock:
            if wall > self._last:
                self._last = wall
            return self._last

    def observe(self, timestamp_ms: int) -> None:
        """Raise the floor to ``timestamp_ms`` (a timestamp issued before, e.g. stored)."""
        if not 0 <= timestamp_ms <= _MAX_U64:
            raise VerificationError(f"timestamp {timestamp_ms} is not a uint64")
        with self._lock:
            if timestamp_ms > self._last:
                self._last = timestamp_ms


def rfc6962_key_id(name: str, log_id: bytes) -> bytes:
    """The 4-byte note key ID of an RFC 6962 note signature (static-ct-api)."""
    if len(log_id) != 32:
        raise VerificationError(f"RFC 6962 LogID must be 32 bytes, not {len(log_id)}")
    material = name.encode("utf-8") + b"\n" + bytes([SIGNATURE_TYPE_RFC6962]) + log_id
    return hashlib.sha256(material).digest()[:4]


def parse_checkpoint_body(text: bytes) -> CheckpointBody:
    """Parse a checkpoint body that an RFC 6962 note signature may cover.

    Exactly ``origin\\nsize\\nbase64(root)\\n`` (c2sp.org/tlog-checkpoint, parsed
    strictly by :func:`sigstack.core.note.parse_checkpoint`) and no extension lines,
    which static-ct-api forbids for this signature type: the returned body's
    ``extensions`` is always empty.
    """
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VerificationError("checkpoint is not valid UTF-8") from exc
    body = parse_checkpoint(decoded)
    if body.extensions:
        raise VerificationError(
            f"a checkpoint signed with an RFC 6962 signature must have exactly 3 lines "
            f"(origin, size, root hash); found {len(body.extensions)} extension line(s)"
        )
    return body


def encode_note_signature(timestamp_ms: int, digitally_signed: bytes) -> bytes:
    """``RFC6962NoteSignature``: timestamp(u64) || TreeHeadSignature DigitallySigned."""
    if not 0 <= timestamp_ms <= _MAX_U64:
        raise InvalidRequest(f"timestamp {timestamp_ms} is not a uint64")
    decode_digitally_signed(digitally_signed)
    return struct.pack(">Q", timestamp_ms) + digitally_signed


def decode_note_signature(signature: bytes) -> tuple[int, bytes]:
    """Split an ``RFC6962NoteSignature`` into (timestamp ms, DigitallySigned)."""
    if len(signature) < 8 + 4:
        raise VerificationError(f"RFC 6962 note signature is truncated ({len(signature)} bytes)")
    timestamp = struct.unpack(">Q", signature[:8])[0]
    digitally_signed = signature[8:]
    decode_digitally_signed(digitally_signed)  # raises on a malformed structure
    return timestamp, digitally_signed


class RFC6962NoteSigner:
    """``NoteSigner`` producing static-ct-api RFC 6962 note signatures.

    ``name`` is the log origin; ``key_hash`` is the 4-byte key ID (also available
    as the big-endian integer ``key_id``). ``sign(message)`` takes the checkpoint
    body and returns ``timestamp || DigitallySigned(TreeHeadSignature)``.
    """

    def __init__(
        self, origin: str, private_key: ec.EllipticCurvePrivateKey, clock: MillisClock
    ) -> None:
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or (
            private_key.curve.name != "secp256r1"
        ):
            raise VerificationError("RFC 6962 note signatures need an ECDSA P-256 key")
        check_key_name(origin)
        self._origin = origin
        self._key = private_key
        self._clock = clock
        self._log_id = spki_sha256(private_key.public_key())
        self._key_hash = rfc6962_key_id(origin, self._log_id)

    @property
    def name(self) -> str:
        """The key name: the checkpoint origin."""
        return self._origin

    @property
    def key_hash(self) -> bytes:
        """The 4-byte key ID."""
        return self._key_hash

    @property
    def key_id(self) -> int:
        """The key ID as a big-endian uint32."""
        return int.from_bytes(self._key_hash, "big")

    @property
    def log_id(self) -> bytes:
        """RFC 6962 LogID (SHA-256 of the DER SPKI)."""
        return self._log_id

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The log's public key."""
        return self._key.public_key()

    def sign(self, message: bytes) -> bytes:
        """Sign a checkpoint body; the timestamp is taken now, monotonically."""
        head = parse_checkpoint_body(message)
        if head.origin != self._origin:
            raise VerificationError(
                f"refusing to sign a checkpoint for origin {head.origin!r}: "
                f"this key signs for {self._origin!r}"
            )
        timestamp = self._clock.now_ms()
        data = tree_head_signed_data(timestamp, head.size, head.root_hash)
        return encode_note_signature(timestamp, sign_digitally(self._key, data))

    def __repr__(self) -> str:
        return f"RFC6962NoteSigner(name={self._origin!r}, key_id={self._key_hash.hex()})"


class RFC6962NoteVerifier:
    """``NoteVerifier`` for :class:`RFC6962NoteSigner` signatures.

    ``verify(message, signature)`` raises ``VerificationError`` unless the
    signature is a valid ``RFC6962NoteSignature`` over the checkpoint ``message``
    whose origin is this verifier's name. Verified timestamps are fed to the
    optional ``clock`` so a reopened log never issues an older timestamp.
    """

    def __init__(
        self,
        origin: str,
        public_key: ec.EllipticCurvePublicKey,
        clock: MillisClock | None = None,
    ) -> None:
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or (
            public_key.curve.name != "secp256r1"
        ):
            raise VerificationError("RFC 6962 note signatures need an ECDSA P-256 key")
        check_key_name(origin)
        self._origin = origin
        self._public_key = public_key
        self._clock = clock
        self._key_hash = rfc6962_key_id(origin, spki_sha256(public_key))

    @property
    def name(self) -> str:
        """The key name: the checkpoint origin."""
        return self._origin

    @property
    def key_hash(self) -> bytes:
        """The 4-byte key ID."""
        return self._key_hash

    @property
    def key_id(self) -> int:
        """The key ID as a big-endian uint32."""
        return int.from_bytes(self._key_hash, "big")

    def verify_timestamped(self, message: bytes, signature: bytes) -> tuple[CheckpointBody, int]:
        """Verify and return the tree head and the signature's timestamp (ms)."""
        head = parse_checkpoint_body(message)
        if head.origin != self._origin:
            raise VerificationError(
                f"checkpoint origin {head.origin!r} is not this log ({self._origin!r})"
            )
        timestamp, digitally_signed = decode_note_signature(signature)
        data = tree_head_signed_data(timestamp, head.size, head.root_hash)
        try:
            verify_digitally(self._public_key, digitally_signed, data)
        except VerificationError as exc:
            raise VerificationError(
                f"RFC 6962 tree head signature of {self._origin!r} does not verify: {exc}"
            ) from exc
        if self._clock is not None:
            self._clock.observe(timestamp)
        return head, timestamp

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise ``VerificationError`` unless ``signature`` is valid over ``message``."""
        self.verify_timestamped(message, signature)

    def __repr__(self) -> str:
        return f"RFC6962NoteVerifier(name={self._origin!r}, key_id={self._key_hash.hex()})"


@dataclass(frozen=True)
class SignedTreeHead:
    """An RFC 6962 signed tree head (``get-sth``)."""

    tree_size: int
    timestamp_ms: int
    root_hash: bytes
    tree_head_signature: bytes  # TLS DigitallySigned

    def to_json(self) -> dict[str, Any]:
        """The RFC 6962 section 4.3 ``get-sth`` response body."""
        return {
            "tree_size": self.tree_size,
            "timestamp": self.timestamp_ms,
            "sha256_root_hash": b64(self.root_hash),
            "tree_head_signature": b64(self.tree_head_signature),
        }

    def verify(self, public_key: ec.EllipticCurvePublicKey) -> None:
        """Raise ``VerificationError`` unless the tree head signature verifies."""
        data = tree_head_signed_data(self.timestamp_ms, self.tree_size, self.root_hash)
        verify_digitally(public_key, self.tree_head_signature, data)


def sth_from_checkpoint(note: bytes, verifier: RFC6962NoteVerifier) -> SignedTreeHead:
    """Turn a stored checkpoint note into the RFC 6962 ``get-sth`` structure.

    The note's RFC 6962 signature (name and key ID of ``verifier``) is verified
    first; other signatures (e.g. witness cosignatures) are ignored, as
    c2sp.org/signed-note requires of unknown keys.
    """
    text, _ = open_note(note, [verifier])  # verifies every signature by the log key
    _, signatures = parse_note(note)
    mine = [
        sig.signature
        for sig in signatures
        if sig.name == verifier.name and sig.key_hash == verifier.key_hash
    ]
    if len(mine) != 1:
        raise VerificationError(
            f"checkpoint must carry exactly one signature by {verifier.name!r} "
            f"(key ID {verifier.key_hash.hex()}), found {len(mine)}"
        )
    head, timestamp = verifier.verify_timestamped(text.encode("utf-8"), mine[0])
    _, digitally_signed = decode_note_signature(mine[0])
    return SignedTreeHead(head.size, timestamp, head.root_hash, digitally_signed)
