"""RFC 6962 note signatures (c2sp.org/static-ct-api) and the get-sth conversion.

The key ID rule and the signature layout are checked against values computed here
independently from the spec text, and the tree head signature is verified with
``cryptography`` directly, not with the code under test.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sigstack.core.errors import VerificationError
from sigstack.services.ctlog.sthnote import (
    MillisClock,
    RFC6962NoteSigner,
    RFC6962NoteVerifier,
    parse_checkpoint_body,
    rfc6962_key_id,
    sth_from_checkpoint,
    to_millis,
)

ROOT = bytes(range(32))


def body(origin: str, size: int = 7, root: bytes = ROOT) -> bytes:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n".encode()


def note(text: bytes, name: str, key_hash: bytes, sig: bytes) -> bytes:
    line = f"\u2014 {name} {base64.b64encode(key_hash + sig).decode()}\n".encode()
    return text + b"\n" + line


@pytest.fixture
def mclock(clock: Any) -> MillisClock:
    return MillisClock(clock)


@pytest.fixture
def signer(log_key: ec.EllipticCurvePrivateKey, mclock: MillisClock, kit: Any) -> RFC6962NoteSigner:
    return RFC6962NoteSigner(kit.ORIGIN, log_key, mclock)


@pytest.fixture
def verifier(log_key: ec.EllipticCurvePrivateKey, kit: Any) -> RFC6962NoteVerifier:
    return RFC6962NoteVerifier(kit.ORIGIN, log_key.public_key())


def test_key_id_follows_static_ct_api(
    log_key: ec.EllipticCurvePrivateKey, signer: Any, kit: Any
) -> None:
    spki = log_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    log_id = hashlib.sha256(spki).digest()
    expected = hashlib.sha256(kit.ORIGIN.encode() + b"\x0a\x05" + log_id).digest()[:4]
    assert signer.key_hash == expected
    assert rfc6962_key_id(kit.ORIGIN, log_id) == expected
    assert signer.key_id == int.from_bytes(expected, "big")
    assert signer.name == kit.ORIGIN


def test_signature_is_timestamp_then_digitally_signed_tree_head(
    signer: RFC6962NoteSigner, log_key: ec.EllipticCurvePrivateKey, kit: Any
) -> None:
    sig = signer.sign(body(kit.ORIGIN, 7))
    (ts,) = struct.unpack(">Q", sig[:8])
    assert ts == to_millis(kit.NOW)
    # DigitallySigned: sha256(4), ecdsa(3), u16 length, DER signature
    assert sig[8:10] == b"\x04\x03"
    (n,) = struct.unpack(">H", sig[10:12])
    assert len(sig) == 12 + n
    signed = struct.pack(">BBQQ", 0, 1, ts, 7) + ROOT  # RFC 6962 3.5 TreeHeadSignature
    log_key.public_key().verify(sig[12:], signed, ec.ECDSA(hashes.SHA256()))


def test_verifier_accepts_signer_output(
    signer: Any, verifier: RFC6962NoteVerifier, kit: Any
) -> None:
    text = body(kit.ORIGIN, 3)
    verifier.verify(text, signer.sign(text))


def test_verifier_rejects_other_tree_size(signer: Any, verifier: Any, kit: Any) -> None:
    sig = signer.sign(body(kit.ORIGIN, 3))
    with pytest.raises(VerificationError, match="does not verify"):
        verifier.verify(body(kit.ORIGIN, 4), sig)


def test_verifier_rejects_changed_timestamp(signer: Any, verifier: Any, kit: Any) -> None:
    text = body(kit.ORIGIN, 3)
    sig = bytearray(signer.sign(text))
    sig[7] ^= 1
    with pytest.raises(VerificationError, match="does not verify"):
        verifier.verify(text, bytes(sig))


def test_verifier_rejects_other_key(signer: Any, kit: Any) -> None:
    other = RFC6962NoteVerifier(kit.ORIGIN, ec.generate_private_key(ec.SECP256R1()).public_key())
    text = body(kit.ORIGIN, 3)
    with pytest.raises(VerificationError, match="does not verify"):
        other.verify(text, signer.sign(text))


def test_verifier_rejects_truncated_signature(verifier: Any, kit: Any) -> None:
    with pytest.raises(VerificationError, match="truncated"):
        verifier.verify(body(kit.ORIGIN), b"\x00" * 9)


def test_signer_refuses_other_origin(signer: Any) -> None:
    with pytest.raises(VerificationError, match="refusing to sign"):
        signer.sign(body("other.example"))


def test_signer_refuses_extension_lines(signer: Any, kit: Any) -> None:
    with pytest.raises(VerificationError, match="exactly 3 lines"):
        signer.sign(body(kit.ORIGIN) + b"extension line\n")


@pytest.mark.parametrize(
    "text",
    [
        b"o\n7\n" + base64.b64encode(ROOT),  # no final newline
        b"o\n07\n" + base64.b64encode(ROOT) + b"\n",
        b"o\n-7\n" + base64.b64encode(ROOT) + b"\n",
        b"o\n7\n" + base64.b64encode(ROOT[:31]) + b"\n",
        b"o\n7\n!!!!\n",
        b"\n7\n" + base64.b64encode(ROOT) + b"\n",
        b"\xff\n7\n" + base64.b64encode(ROOT) + b"\n",
    ],
    ids=["no-newline", "leading-zero", "negative", "short-root", "bad-b64", "no-origin", "utf8"],
)
def test_malformed_checkpoint_bodies_rejected(text: bytes) -> None:
    with pytest.raises(VerificationError):
        parse_checkpoint_body(text)


def test_signer_rejects_non_p256_key(mclock: MillisClock, kit: Any) -> None:
    with pytest.raises(VerificationError, match="P-256"):
        RFC6962NoteSigner(kit.ORIGIN, ec.generate_private_key(ec.SECP384R1()), mclock)


def test_timestamps_never_decrease_when_wall_clock_steps_back(
    signer: RFC6962NoteSigner, clock: Any, kit: Any
) -> None:
    first = struct.unpack(">Q", signer.sign(body(kit.ORIGIN, 1))[:8])[0]
    clock.advance(hours=-1)
    second = struct.unpack(">Q", signer.sign(body(kit.ORIGIN, 2))[:8])[0]
    assert second >= first
    clock.advance(hours=2)
    third = struct.unpack(">Q", signer.sign(body(kit.ORIGIN, 3))[:8])[0]
    assert third == to_millis(kit.NOW + dt.timedelta(hours=1))


def test_clock_observe_raises_the_floor(clock: Any, kit: Any) -> None:
    mc = MillisClock(clock)
    future = to_millis(kit.NOW) + 60_000
    mc.observe(future)
    assert mc.now_ms() == future
    mc.observe(5)  # lower observations never lower the floor
    assert mc.now_ms() == future
    with pytest.raises(VerificationError):
        mc.observe(-1)


def test_verifier_feeds_clock(signer: Any, log_key: Any, kit: Any, clock: Any) -> None:
    text = body(kit.ORIGIN, 9)
    sig = signer.sign(text)
    clock.advance(days=-1)
    fresh = MillisClock(clock)
    RFC6962NoteVerifier(kit.ORIGIN, log_key.public_key(), fresh).verify(text, sig)
    assert fresh.now_ms() == struct.unpack(">Q", sig[:8])[0]


def test_to_millis_treats_naive_as_utc() -> None:
    assert to_millis(dt.datetime(1970, 1, 1, 0, 0, 1)) == 1000


# --- get-sth -------------------------------------------------------------------------------


def test_sth_from_checkpoint_verifies_independently(
    signer: RFC6962NoteSigner, verifier: RFC6962NoteVerifier, log_key: Any, kit: Any
) -> None:
    text = body(kit.ORIGIN, 42)
    n = note(text, kit.ORIGIN, signer.key_hash, signer.sign(text))
    sth = sth_from_checkpoint(n, verifier).to_json()
    assert set(sth) == {"tree_size", "timestamp", "sha256_root_hash", "tree_head_signature"}
    assert sth["tree_size"] == 42
    assert base64.b64decode(sth["sha256_root_hash"]) == ROOT
    ds = base64.b64decode(sth["tree_head_signature"])
    assert ds[:2] == b"\x04\x03"
    signed = struct.pack(">BBQQ", 0, 1, sth["timestamp"], 42) + ROOT
    log_key.public_key().verify(ds[4:], signed, ec.ECDSA(hashes.SHA256()))


def test_sth_ignores_unknown_signatures(signer: Any, verifier: Any, kit: Any) -> None:
    text = body(kit.ORIGIN, 1)
    n = note(text, kit.ORIGIN, signer.key_hash, signer.sign(text))
    witness = f"\u2014 witness.example {base64.b64encode(b'abcd' + b'x' * 64).decode()}\n"
    sth = sth_from_checkpoint(n + witness.encode(), verifier)
    assert sth.tree_size == 1


def test_sth_without_log_signature_rejected(signer: Any, verifier: Any, kit: Any) -> None:
    text = body(kit.ORIGIN, 1)
    n = note(text, kit.ORIGIN, b"\x00\x00\x00\x00", signer.sign(text))
    with pytest.raises(VerificationError, match="no signature from a trusted key"):
        sth_from_checkpoint(n, verifier)


def test_sth_with_forged_signature_rejected(signer: Any, verifier: Any, kit: Any) -> None:
    text = body(kit.ORIGIN, 1)
    n = note(body(kit.ORIGIN, 2), kit.ORIGIN, signer.key_hash, signer.sign(text))
    with pytest.raises(VerificationError, match="does not verify"):
        sth_from_checkpoint(n, verifier)


@pytest.mark.parametrize(
    "raw",
    [
        b"no signatures\n",
        b"a\n1\nAA==\n\nnot a signature line\n",
        "a\n\n\u2014 a !!!\n".encode(),
    ],
    ids=["no-block", "bad-line", "bad-b64"],
)
def test_malformed_notes_rejected(raw: bytes, verifier: Any) -> None:
    with pytest.raises(VerificationError):
        sth_from_checkpoint(raw, verifier)


def test_core_note_round_trip(
    signer: RFC6962NoteSigner, verifier: RFC6962NoteVerifier, kit: Any
) -> None:
    from sigstack.core.note import format_checkpoint, open_note, sign_note

    text = format_checkpoint(kit.ORIGIN, 12, ROOT)
    signed = sign_note(text, [signer])
    opened, verified = open_note(signed, [verifier])
    assert opened == text and verified == [verifier]
    sth = sth_from_checkpoint(signed, verifier)
    assert (sth.tree_size, sth.root_hash) == (12, ROOT)


def test_sth_with_two_log_signatures_rejected(signer: Any, verifier: Any, kit: Any) -> None:
    text = body(kit.ORIGIN, 1)
    n = note(text, kit.ORIGIN, signer.key_hash, signer.sign(text))
    second = (
        f"\u2014 {kit.ORIGIN} {base64.b64encode(signer.key_hash + signer.sign(text)).decode()}\n"
    )
    with pytest.raises(VerificationError, match="exactly one signature"):
        sth_from_checkpoint(n + second.encode(), verifier)


def test_checkpoint_with_extension_line_rejected_by_verifier(
    signer: Any, verifier: Any, kit: Any
) -> None:
    from sigstack.core.note import format_checkpoint

    text = format_checkpoint(kit.ORIGIN, 1, ROOT, ["ext"]).encode()
    with pytest.raises(VerificationError, match="extension line"):
        verifier.verify(text, signer.sign(body(kit.ORIGIN, 1)))


@pytest.mark.parametrize("message", [b"hello\n", b"sigstack log key check", b""])
def test_signer_refuses_arbitrary_text(signer: RFC6962NoteSigner, message: bytes) -> None:
    with pytest.raises(VerificationError):
        signer.sign(message)


# --- published vectors ----------------------------------------------------------------------
#
# Provenance: real production CT log outputs, as recorded in transparency-dev/formats
# note/note_rfc6962_test.go (Apache-2.0): a checkpoint of the Sunlight log
# rome.ct.filippo.io/2024h1 with its public key and RFC 6962 note key hash 78f4abae,
# and a get-sth answer of Google's Argon 2024 (us1) log with key hash 7deb49d0.

ROME_ORIGIN = "rome.ct.filippo.io/2024h1"
ROME_CP = (
    "rome.ct.filippo.io/2024h1\n115474666\n2q1K6aiIJR+F7TyhiWOghoWOjY0/3dVBLsBbAvB4xCw=\n\n"
    "\u2014 rome.ct.filippo.io/2024h1 ePSrrgAAAY5+gVlSBAMARzBFAiEAv8bOMzo3Ed/GbU9fzzJvaStX6i8x"
    "TsmEF+NqvpGhIO0CIEn1X+zzVEerdix64GEn97XCXObA2G5JQ8UDDqCKdG5m\n"
).encode()
ROME_PK = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEAXM8Ld9qn64g1zVFDh5FtgxS3zj5sqQDwYMs3wrBV3MCBiFhK/iR"
    "LxdKF4YsAcJaEglMlu4Lewvzxs0xO2uwEw=="
)
ARGON_ORIGIN = "ct.googleapis.com/logs/us1/argon2024"
ARGON_PK = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEHblsqctplMVc5ramA7vSuNxUQxcomQwGAVAdnWTAWUYr3MgDHQW0"
    "LagJ95lB7QT75Ve6JgT2EVLOFGU7L3YrwA=="
)
ARGON_STH: dict[str, Any] = {
    "tree_size": 1267285836,
    "timestamp": 1711642477482,
    "sha256_root_hash": "SHySaYoaGIV5oCMANTytRfUjfzXb7wvO9xQiGkDJlfQ=",
    "tree_head_signature": "BAMARzBFAiAQWbsL/MbJdeR4jk8xYKWDBDGHyDcntBim9Jr1BvwPnAIhAMedQo0YuBo"
    "+ajNd9xyVOMvhOdVAeJYgOhBLQn8rca94",
}


def _p256(b64: str) -> ec.EllipticCurvePublicKey:
    key = serialization.load_der_public_key(base64.b64decode(b64))
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def test_vector_key_hashes() -> None:
    assert RFC6962NoteVerifier(ROME_ORIGIN, _p256(ROME_PK)).key_hash.hex() == "78f4abae"
    assert RFC6962NoteVerifier(ARGON_ORIGIN, _p256(ARGON_PK)).key_hash.hex() == "7deb49d0"


def test_vector_rome_checkpoint_to_sth() -> None:
    verifier = RFC6962NoteVerifier(ROME_ORIGIN, _p256(ROME_PK))
    sth = sth_from_checkpoint(ROME_CP, verifier)
    assert sth.tree_size == 115474666
    assert sth.root_hash == base64.b64decode("2q1K6aiIJR+F7TyhiWOghoWOjY0/3dVBLsBbAvB4xCw=")
    assert sth.timestamp_ms == 0x18E7E815952  # the first 8 bytes after the key hash
    sth.verify(_p256(ROME_PK))


def test_vector_rome_tampered_rejected() -> None:
    verifier = RFC6962NoteVerifier(ROME_ORIGIN, _p256(ROME_PK))
    with pytest.raises(VerificationError):
        sth_from_checkpoint(ROME_CP.replace(b"115474666", b"115474667"), verifier)


def test_vector_argon_sth_verifies() -> None:
    from sigstack.services.ctlog.sthnote import SignedTreeHead

    sth = SignedTreeHead(
        ARGON_STH["tree_size"],
        ARGON_STH["timestamp"],
        base64.b64decode(ARGON_STH["sha256_root_hash"]),
        base64.b64decode(ARGON_STH["tree_head_signature"]),
    )
    assert sth.to_json() == ARGON_STH
    sth.verify(_p256(ARGON_PK))
    with pytest.raises(VerificationError):
        SignedTreeHead(
            sth.tree_size + 1, sth.timestamp_ms, sth.root_hash, sth.tree_head_signature
        ).verify(_p256(ARGON_PK))
