"""C2SP signed notes and transparency-log checkpoints.

Pure and I/O-free; follows https://c2sp.org/signed-note and
https://c2sp.org/tlog-checkpoint. What it guarantees:

* :func:`sign_note` only signs well-formed text (non-empty, ending in a newline,
  no control characters other than newline) and emits signature lines
  ``"— <name> <base64(key hash || signature)>\\n"`` (U+2014 em dash).
* :func:`open_note` parses exactly that format (the text ends at the last blank
  line; every line after it is a signature line; at most
  :data:`MAX_SIGNATURES` of them) and returns the text only if at least one
  signature from the given verifiers verifies. Signatures from unknown keys
  (name *and* key hash unknown) are ignored; a signature from a known key that
  does not verify rejects the whole note. Everything else raises
  :class:`~sigstack.core.errors.VerificationError`.
* Key hashes: Ed25519 ``SHA-256(name || 0x0A || 0x01 || pub)[:4]`` (the full
  32 bytes, :func:`key_id_ed25519`, are Rekor v2's log ID); ECDSA as Rekor v1 and
  the witness ecosystem use it, ``SHA-256(DER SPKI)[:4]``, signatures ASN.1 DER
  ECDSA over the note text with SHA-256.
* :func:`parse_checkpoint` is strict: origin non-empty, decimal size without
  leading zeroes below 2**64, root the canonical base64 of exactly 32 bytes,
  extension lines non-empty.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from sigstack.core.errors import InvalidRequest, VerificationError
from sigstack.core.keys import spki_der

MAX_SIGNATURES = 100
"""Most signature lines :func:`open_note` accepts (the spec requires at least 16)."""

MAX_NOTE_SIZE = 1 << 20
"""Largest note :func:`open_note` parses, in bytes."""

ALG_ED25519 = 0x01
"""Signed-note signature type byte for Ed25519."""

EM_DASH = "\u2014"

_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
_HEX8 = re.compile(r"[0-9a-f]{8}")


class NoteSigner(Protocol):
    """Signs note text under a key name; ``key_hash`` is the 4-byte key ID."""

    @property
    def name(self) -> str: ...

    @property
    def key_hash(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes:
        """Signature over ``message`` (the note text, UTF-8)."""
        ...


class NoteVerifier(Protocol):
    """Verifies note signatures of one key; ``verify`` raises ``VerificationError``."""

    @property
    def name(self) -> str: ...

    @property
    def key_hash(self) -> bytes: ...

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise :class:`VerificationError` unless ``signature`` is valid over ``message``."""
        ...


# --- key names and IDs --------------------------------------------------------------------


def check_key_name(name: str) -> None:
    """Raise :class:`InvalidRequest` unless ``name`` is a valid note key name.

    Non-empty, no Unicode whitespace, no ``+``, no control characters.
    """
    if (
        not isinstance(name, str)
        or not name
        or "+" in name
        or any(c.isspace() for c in name)
        or _CONTROL.search(name)
    ):
        raise InvalidRequest(
            f"note key name {name!r} must be non-empty, without spaces, '+' or control characters"
        )


def _ed25519_raw(public_key: ed25519.Ed25519PublicKey | bytes) -> bytes:
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if isinstance(public_key, bytes | bytearray) and len(public_key) == 32:
        return bytes(public_key)
    raise InvalidRequest("an Ed25519 public key is 32 raw bytes")


def key_id_ed25519(name: str, public_key: ed25519.Ed25519PublicKey | bytes) -> bytes:
    """Full 32-byte key ID: SHA-256(name || 0x0A || 0x01 || raw public key).

    Rekor v2 publishes this as its ``logId`` / checkpoint key ID; the note key
    hash is its first four bytes.
    """
    check_key_name(name)
    raw = _ed25519_raw(public_key)
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + raw).digest()


def key_hash_ecdsa(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """4-byte key hash of an ECDSA note key: SHA-256(DER SPKI)[:4] (Rekor v1)."""
    return hashlib.sha256(spki_der(public_key)).digest()[:4]


def encode_vkey(name: str, public_key: ed25519.Ed25519PublicKey | bytes) -> str:
    """Verifier key string ``<name>+<hex key hash>+<base64(0x01 || pub)>``."""
    raw = _ed25519_raw(public_key)
    key_hash = key_id_ed25519(name, raw)[:4]
    blob = base64.b64encode(bytes([ALG_ED25519]) + raw).decode()
    return f"{name}+{key_hash.hex()}+{blob}"


def parse_vkey(vkey: str) -> Ed25519NoteVerifier:
    """Parse a verifier key string (Ed25519 only), checking the embedded key hash."""
    parts = vkey.split("+") if isinstance(vkey, str) else []
    if len(parts) != 3:
        raise VerificationError("verifier key must be <name>+<hash>+<key>")
    name, hash_hex, blob = parts
    try:
        check_key_name(name)
    except InvalidRequest as exc:
        raise VerificationError(f"verifier key: {exc.message}") from exc
    if not _HEX8.fullmatch(hash_hex):
        raise VerificationError("verifier key hash must be 8 lowercase hex digits")
    key = _b64decode(blob, "verifier key")
    if len(key) < 1 or key[0] != ALG_ED25519:
        raise VerificationError("verifier key is not an Ed25519 (type 0x01) key")
    if len(key) != 33:
        raise VerificationError(f"Ed25519 verifier key is {len(key) - 1} bytes, expected 32")
    verifier = Ed25519NoteVerifier(name, ed25519.Ed25519PublicKey.from_public_bytes(key[1:]))
    if verifier.key_hash.hex() != hash_hex:
        raise VerificationError(
            f"verifier key hash {hash_hex} does not match the key ({verifier.key_hash.hex()})"
        )
    return verifier


# --- signers and verifiers ----------------------------------------------------------------


class Ed25519NoteSigner:
    """Ed25519 note signer (signature type 0x01)."""

    def __init__(self, name: str, private_key: ed25519.Ed25519PrivateKey) -> None:
        check_key_name(name)
        self._name = name
        self._key = private_key
        self._key_id = key_id_ed25519(name, private_key.public_key())

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_hash(self) -> bytes:
        return self._key_id[:4]

    @property
    def key_id(self) -> bytes:
        """The full 32-byte key ID (Rekor v2 log ID)."""
        return self._key_id

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def verifier(self) -> Ed25519NoteVerifier:
        """The matching verifier."""
        return Ed25519NoteVerifier(self._name, self._key.public_key())

    def __repr__(self) -> str:
        return f"Ed25519NoteSigner({self._name!r}, {self.key_hash.hex()})"


class Ed25519NoteVerifier:
    """Ed25519 note verifier (signature type 0x01)."""

    def __init__(self, name: str, public_key: ed25519.Ed25519PublicKey) -> None:
        check_key_name(name)
        self._name = name
        self._key = public_key
        self._key_id = key_id_ed25519(name, public_key)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_hash(self) -> bytes:
        return self._key_id[:4]

    @property
    def key_id(self) -> bytes:
        """The full 32-byte key ID (Rekor v2 log ID)."""
        return self._key_id

    @property
    def vkey(self) -> str:
        """The verifier key string ``<name>+<hash>+<key>``."""
        return encode_vkey(self._name, self._key)

    def verify(self, message: bytes, signature: bytes) -> None:
        try:
            self._key.verify(signature, message)
        except InvalidSignature as exc:
            raise VerificationError(
                f"Ed25519 signature by {self._name}+{self.key_hash.hex()} does not verify"
            ) from exc

    def __repr__(self) -> str:
        return f"Ed25519NoteVerifier({self._name!r}, {self.key_hash.hex()})"


class EcdsaNoteSigner:
    """ECDSA note signer as Rekor v1 uses it: key hash SHA-256(SPKI)[:4], ECDSA-SHA256."""

    def __init__(self, name: str, private_key: ec.EllipticCurvePrivateKey) -> None:
        check_key_name(name)
        self._name = name
        self._key = private_key
        self._key_hash = key_hash_ecdsa(private_key.public_key())

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_hash(self) -> bytes:
        return self._key_hash

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))

    def verifier(self) -> EcdsaNoteVerifier:
        """The matching verifier."""
        return EcdsaNoteVerifier(self._name, self._key.public_key())

    def __repr__(self) -> str:
        return f"EcdsaNoteSigner({self._name!r}, {self._key_hash.hex()})"


class EcdsaNoteVerifier:
    """ECDSA note verifier as Rekor v1 uses it: key hash SHA-256(SPKI)[:4], ECDSA-SHA256."""

    def __init__(self, name: str, public_key: ec.EllipticCurvePublicKey) -> None:
        check_key_name(name)
        self._name = name
        self._key = public_key
        self._key_hash = key_hash_ecdsa(public_key)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_hash(self) -> bytes:
        return self._key_hash

    def verify(self, message: bytes, signature: bytes) -> None:
        try:
            self._key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError) as exc:
            raise VerificationError(
                f"ECDSA signature by {self._name}+{self._key_hash.hex()} does not verify"
            ) from exc

    def __repr__(self) -> str:
        return f"EcdsaNoteVerifier({self._name!r}, {self._key_hash.hex()})"


# --- notes --------------------------------------------------------------------------------


def _check_text(text: str) -> None:
    if not isinstance(text, str) or not text:
        raise InvalidRequest("note text must be a non-empty string")
    if not text.endswith("\n"):
        raise InvalidRequest("note text must end with a newline")
    if _CONTROL.search(text):
        raise InvalidRequest("note text must not contain control characters other than newline")


def sign_note(text: str, signers: Sequence[NoteSigner]) -> bytes:
    """Sign ``text`` with every signer; return the signed note (UTF-8 bytes)."""
    _check_text(text)
    if not signers:
        raise InvalidRequest("a note needs at least one signer")
    if len(signers) > MAX_SIGNATURES:
        raise InvalidRequest(f"a note carries at most {MAX_SIGNATURES} signatures")
    message = text.encode()
    seen: set[tuple[str, bytes]] = set()
    lines = []
    for signer in signers:
        check_key_name(signer.name)
        key_hash = bytes(signer.key_hash)
        if len(key_hash) != 4:
            raise InvalidRequest(f"signer {signer.name!r} has a key hash that is not 4 bytes")
        if (signer.name, key_hash) in seen:
            raise InvalidRequest(f"signer {signer.name}+{key_hash.hex()} is listed twice")
        seen.add((signer.name, key_hash))
        signature = signer.sign(message)
        blob = base64.b64encode(key_hash + signature).decode()
        lines.append(f"{EM_DASH} {signer.name} {blob}\n")
    return (text + "\n" + "".join(lines)).encode()


@dataclass(frozen=True)
class NoteSignature:
    """One parsed signature line."""

    name: str
    key_hash: bytes
    signature: bytes


def parse_note(note: bytes) -> tuple[str, list[NoteSignature]]:
    """Split a signed note into its text and signature lines WITHOUT verifying.

    Exposed for tools that display notes; anything that trusts the text must use
    :func:`open_note`. Raises :class:`VerificationError` if the note is malformed.
    """
    if not isinstance(note, bytes | bytearray):
        raise VerificationError("a signed note is bytes")
    if len(note) > MAX_NOTE_SIZE:
        raise VerificationError(f"signed note is larger than {MAX_NOTE_SIZE} bytes")
    try:
        decoded = bytes(note).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VerificationError("malformed note: not valid UTF-8") from exc
    if _CONTROL.search(decoded):
        raise VerificationError("malformed note: control character other than newline")
    if not decoded.endswith("\n"):
        raise VerificationError("malformed note: does not end with a newline")
    split = decoded.rfind("\n\n")
    if split < 0:
        raise VerificationError("malformed note: no blank line before the signatures")
    text = decoded[: split + 1]
    block = decoded[split + 2 :]
    if not block:
        raise VerificationError("malformed note: no signature lines")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise VerificationError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    sigs = []
    for i, line in enumerate(lines):
        prefix = EM_DASH + " "
        if not line.startswith(prefix):
            raise VerificationError(
                f"malformed note: signature line {i + 1} does not start with an em dash and a space"
            )
        fields = line[len(prefix) :].split(" ")
        if len(fields) != 2:
            raise VerificationError(
                f"malformed note: signature line {i + 1} is not '— <name> <signature>'"
            )
        name, blob = fields
        try:
            check_key_name(name)
        except InvalidRequest as exc:
            raise VerificationError(f"malformed note: signature line {i + 1}: {exc}") from exc
        raw = _b64decode(blob, f"malformed note: signature line {i + 1}")
        if len(raw) < 5:
            raise VerificationError(f"malformed note: signature line {i + 1} is too short")
        sigs.append(NoteSignature(name, raw[:4], raw[4:]))
    return text, sigs


def open_note(note: bytes, verifiers: Sequence[NoteVerifier]) -> tuple[str, list[NoteVerifier]]:
    """Verify a signed note; return its text and the verifiers whose signature verified.

    Raises :class:`VerificationError` if the note is malformed, if a signature by
    a known key (same name and key hash) fails, if two verifiers claim the same
    name and key hash, or if no signature from ``verifiers`` verifies.
    """
    text, sigs = parse_note(note)
    message = text.encode()
    verified: list[NoteVerifier] = []
    done: set[tuple[str, bytes, bytes]] = set()
    for sig in sigs:
        matches = [v for v in verifiers if v.name == sig.name and bytes(v.key_hash) == sig.key_hash]
        if not matches:
            continue  # unknown key: ignored, as the spec requires
        if len(matches) > 1:
            raise VerificationError(f"ambiguous key {sig.name}+{sig.key_hash.hex()}: two verifiers")
        ident = (sig.name, sig.key_hash, sig.signature)
        if ident in done:
            continue
        matches[0].verify(message, sig.signature)
        done.add(ident)
        if not any(v is matches[0] for v in verified):
            verified.append(matches[0])
    if not verified:
        known = ", ".join(f"{v.name}+{bytes(v.key_hash).hex()}" for v in verifiers) or "none"
        found = ", ".join(f"{s.name}+{s.key_hash.hex()}" for s in sigs)
        raise VerificationError(
            f"note has no signature from a trusted key (trusted: {known}; signed by: {found})"
        )
    return text, verified


def _b64decode(blob: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VerificationError(f"{what}: not valid base64") from exc
    if base64.b64encode(raw).decode() != blob:
        raise VerificationError(f"{what}: not canonical base64")
    return raw


# --- checkpoints --------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointBody:
    """The text of a checkpoint: origin, tree size, root hash and extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()


def format_checkpoint(
    origin: str, size: int, root_hash: bytes, extension_lines: Sequence[str] = ()
) -> str:
    """Checkpoint note text: ``origin\\nsize\\nbase64(root)\\n[extension lines\\n]``."""
    if not isinstance(origin, str) or not origin or "\n" in origin or _CONTROL.search(origin):
        raise InvalidRequest("checkpoint origin must be a non-empty single line")
    if not isinstance(size, int) or not 0 <= size < 2**64:
        raise InvalidRequest(f"checkpoint tree size {size!r} is not between 0 and 2**64 - 1")
    if not isinstance(root_hash, bytes | bytearray) or len(root_hash) != 32:
        raise InvalidRequest("checkpoint root hash must be 32 bytes")
    for line in extension_lines:
        if not isinstance(line, str) or not line or "\n" in line or _CONTROL.search(line):
            raise InvalidRequest("checkpoint extension lines must be non-empty single lines")
    lines = [origin, str(size), base64.b64encode(root_hash).decode(), *extension_lines]
    return "\n".join(lines) + "\n"


def parse_checkpoint(text: str) -> CheckpointBody:
    """Parse checkpoint note text strictly; raise :class:`VerificationError` if malformed."""
    if not isinstance(text, str) or not text.endswith("\n"):
        raise VerificationError("malformed checkpoint: text must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise VerificationError("malformed checkpoint: needs origin, size and root hash lines")
    origin, size_line, root_line, *extensions = lines
    if not origin:
        raise VerificationError("malformed checkpoint: empty origin line")
    if not _SIZE.fullmatch(size_line) or int(size_line) >= 2**64:
        raise VerificationError(
            f"malformed checkpoint: tree size {size_line!r} is not a decimal number "
            "below 2**64 without leading zeroes"
        )
    root = _b64decode(root_line, "malformed checkpoint: root hash")
    if len(root) != 32:
        raise VerificationError(f"malformed checkpoint: root hash is {len(root)} bytes, not 32")
    for line in extensions:
        if not line:
            raise VerificationError("malformed checkpoint: empty extension line")
    return CheckpointBody(origin, int(size_line), root, tuple(extensions))
