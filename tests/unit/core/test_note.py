"""C2SP signed notes and checkpoints (sigstack.core.note)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from sigstack.core.errors import InvalidRequest, VerificationError
from sigstack.core.keys import spki_der
from sigstack.core.merkle import EMPTY_ROOT
from sigstack.core.note import (
    MAX_SIGNATURES,
    CheckpointBody,
    EcdsaNoteSigner,
    EcdsaNoteVerifier,
    Ed25519NoteSigner,
    Ed25519NoteVerifier,
    encode_vkey,
    format_checkpoint,
    key_hash_ecdsa,
    key_id_ed25519,
    open_note,
    parse_checkpoint,
    parse_note,
    parse_vkey,
    sign_note,
)

VECTORS = Path(__file__).parents[2] / "vectors" / "note"
SUMDB = json.loads((VECTORS / "sumdb_note.json").read_text())
REKOR = json.loads((VECTORS / "rekor_checkpoints.json").read_text())
KEY_IDS = json.loads((VECTORS / "rekor_v2_key_ids.json").read_text())
C2SP = json.loads((VECTORS / "c2sp_examples.json").read_text())

TEXT: str = SUMDB["text"]
PETER_SIG: str = SUMDB["peter_sig_line"]
ENOCH_SIG: str = SUMDB["enoch_sig_line"]


def _peter_signer() -> Ed25519NoteSigner:
    # "PRIVATE+KEY+<name>+<hash>+<base64(0x01 || seed)>"
    _, _, name, _, blob = SUMDB["peter_skey"].split("+", 4)
    seed = base64.b64decode(blob)
    assert seed[0] == 1
    return Ed25519NoteSigner(name, ed25519.Ed25519PrivateKey.from_private_bytes(seed[1:]))


@pytest.fixture
def peter() -> Ed25519NoteVerifier:
    return parse_vkey(SUMDB["peter_vkey"])


@pytest.fixture
def enoch() -> Ed25519NoteVerifier:
    return parse_vkey(SUMDB["enoch_vkey"])


# --- sumdb vectors ---------------------------------------------------------------------------


def test_sumdb_sign_reproduces_published_note() -> None:
    signer = _peter_signer()
    assert signer.key_hash.hex() == "c74f20a3"
    assert sign_note(TEXT, [signer]).decode() == TEXT + "\n" + PETER_SIG


def test_sumdb_vkey_parses_and_round_trips(peter: Ed25519NoteVerifier) -> None:
    assert peter.name == "PeterNeumann"
    assert peter.key_hash.hex() == "c74f20a3"
    assert peter.vkey == SUMDB["peter_vkey"]
    assert _peter_signer().verifier().vkey == SUMDB["peter_vkey"]


def test_sumdb_note_opens(peter: Ed25519NoteVerifier) -> None:
    text, verified = open_note((TEXT + "\n" + PETER_SIG).encode(), [peter])
    assert text == TEXT
    assert verified == [peter]


def test_sumdb_two_signatures_one_known(peter: Ed25519NoteVerifier) -> None:
    text, verified = open_note((TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode(), [peter])
    assert text == TEXT and verified == [peter]


def test_sumdb_two_signatures_both_known(
    peter: Ed25519NoteVerifier, enoch: Ed25519NoteVerifier
) -> None:
    _, verified = open_note((TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode(), [peter, enoch])
    assert verified == [peter, enoch]


def test_duplicate_signature_lines_are_accepted_once(peter: Ed25519NoteVerifier) -> None:
    _, verified = open_note((TEXT + "\n" + PETER_SIG + PETER_SIG).encode(), [peter])
    assert verified == [peter]


@pytest.mark.parametrize("name", sorted(SUMDB["bad_vkeys"]))
def test_sumdb_bad_vkeys_rejected(name: str) -> None:
    with pytest.raises(VerificationError):
        parse_vkey(SUMDB["bad_vkeys"][name])


def test_every_truncation_and_mutation_of_a_vkey_is_rejected() -> None:
    vkey = SUMDB["peter_vkey"]
    for i in range(len(vkey)):
        for j in range(i + 1, len(vkey) + 1):
            if (i, j) != (0, len(vkey)):
                with pytest.raises(VerificationError):
                    parse_vkey(vkey[i:j])
    for i in range(len(vkey)):
        mutated = vkey[:i] + chr(ord(vkey[i]) + 1) + vkey[i + 1 :]
        with pytest.raises(VerificationError):
            parse_vkey(mutated)


# --- open_note: named negatives -------------------------------------------------------------


def test_wrong_key_with_same_name_rejected() -> None:
    other = Ed25519NoteVerifier("PeterNeumann", ed25519.Ed25519PrivateKey.generate().public_key())
    with pytest.raises(VerificationError, match="no signature from a trusted key"):
        open_note((TEXT + "\n" + PETER_SIG).encode(), [other])


def test_modified_text_rejected(peter: Ed25519NoteVerifier) -> None:
    note = (TEXT.replace("answer", "question") + "\n" + PETER_SIG).encode()
    with pytest.raises(VerificationError, match="does not verify"):
        open_note(note, [peter])


def test_missing_trailing_newline_rejected(peter: Ed25519NoteVerifier) -> None:
    with pytest.raises(VerificationError, match="newline"):
        open_note((TEXT + "\n" + PETER_SIG[:-1]).encode(), [peter])


def test_unknown_key_only_rejected(peter: Ed25519NoteVerifier) -> None:
    with pytest.raises(VerificationError, match="no signature from a trusted key"):
        open_note((TEXT + "\n" + ENOCH_SIG).encode(), [peter])


def test_no_verifiers_rejected() -> None:
    with pytest.raises(VerificationError, match="no signature from a trusted key"):
        open_note((TEXT + "\n" + PETER_SIG).encode(), [])


def test_malformed_base64_rejected(peter: Ed25519NoteVerifier) -> None:
    for bad in ("— PeterNeumann x08go/ZJ!!\n", "— PeterNeumann x08go/ZJkuBS9UG\n"):
        with pytest.raises(VerificationError, match="base64"):
            open_note((TEXT + "\n" + bad).encode(), [peter])


def test_too_many_signatures_rejected(peter: Ed25519NoteVerifier) -> None:
    note = (TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1)).encode()
    with pytest.raises(VerificationError, match="more than 100"):
        open_note(note, [peter])
    open_note((TEXT + "\n" + PETER_SIG * MAX_SIGNATURES).encode(), [peter])


def test_known_key_with_bad_signature_rejects_whole_note(
    peter: Ed25519NoteVerifier, enoch: Ed25519NoteVerifier
) -> None:
    broken = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(VerificationError, match="does not verify"):
        open_note((TEXT + "\n" + ENOCH_SIG + broken).encode(), [peter, enoch])


def test_ambiguous_verifiers_rejected(peter: Ed25519NoteVerifier) -> None:
    twin = parse_vkey(SUMDB["peter_vkey"])
    with pytest.raises(VerificationError, match="ambiguous"):
        open_note((TEXT + "\n" + PETER_SIG).encode(), [peter, twin])


@pytest.mark.parametrize(
    "note",
    [
        TEXT,  # no signatures
        TEXT + "\n",  # blank line but no signatures
        "\x01" + TEXT + "\n" + PETER_SIG,  # control character
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        TEXT + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNX"
        "gKvqfqdngotpRZb6KE6RyyBwJnAM=\n",
        TEXT + "\n" + PETER_SIG.replace("\u2014", "-"),  # hyphen instead of em dash
        TEXT + "\n" + PETER_SIG.replace(" ", "  ", 1),
        TEXT + "\n" + "— PeterNeumann AAAA\n",  # shorter than key hash + signature
        TEXT + "\n" + "— Peter+Neumann x08go/ZJ\n",
    ],
)
def test_malformed_notes_rejected(note: str, peter: Ed25519NoteVerifier) -> None:
    with pytest.raises(VerificationError):
        open_note(note.encode(), [peter])


def test_invalid_utf8_rejected(peter: Ed25519NoteVerifier) -> None:
    with pytest.raises(VerificationError, match="UTF-8"):
        open_note(b"\xff" + (TEXT + "\n" + PETER_SIG).encode(), [peter])


def test_text_may_contain_blank_lines() -> None:
    signer = Ed25519NoteSigner("example.com/x", ed25519.Ed25519PrivateKey.generate())
    text = "first\n\nthird\n"
    assert open_note(sign_note(text, [signer]), [signer.verifier()])[0] == text


def test_c2sp_signed_note_example_parses() -> None:
    text, sigs = parse_note(C2SP["signed_note"].encode())
    assert text == C2SP["signed_note_text"]
    assert [s.name for s in sigs] == ["quasimodo.example/salvatore"]


# --- sign_note ------------------------------------------------------------------------------


def test_sign_note_refuses_malformed_text() -> None:
    signer = _peter_signer()
    for text in ("", "no newline", "bad\x00char\n"):
        with pytest.raises(InvalidRequest):
            sign_note(text, [signer])
    with pytest.raises(InvalidRequest):
        sign_note(TEXT, [])


def test_sign_note_refuses_duplicate_signers() -> None:
    signer = _peter_signer()
    with pytest.raises(InvalidRequest, match="twice"):
        sign_note(TEXT, [signer, signer])


@pytest.mark.parametrize("name", ["", "a+b", "a b", "a\tb", "a\u00a0b", "a\nb"])
def test_bad_key_names_refused(name: str) -> None:
    with pytest.raises(InvalidRequest):
        Ed25519NoteSigner(name, ed25519.Ed25519PrivateKey.generate())


def test_multiple_signers() -> None:
    a = Ed25519NoteSigner("a.example", ed25519.Ed25519PrivateKey.generate())
    b = EcdsaNoteSigner("b.example", ec.generate_private_key(ec.SECP256R1()))
    note = sign_note(TEXT, [a, b])
    assert open_note(note, [b.verifier()])[1][0].name == "b.example"
    assert len(open_note(note, [a.verifier(), b.verifier()])[1]) == 2


# --- key IDs --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", KEY_IDS["cases"], ids=lambda c: c["base_url"])
def test_rekor_v2_log_ids(case: dict[str, str]) -> None:
    host = urlparse(case["base_url"]).hostname
    assert host is not None
    key = serialization.load_der_public_key(base64.b64decode(case["public_key_spki_b64"]))
    assert isinstance(key, ed25519.Ed25519PublicKey)
    want = base64.b64decode(case["key_id_b64"])
    assert key_id_ed25519(host, key) == want
    verifier = Ed25519NoteVerifier(host, key)
    assert verifier.key_id == want and verifier.key_hash == want[:4]


def test_ed25519_key_id_definition() -> None:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    want = hashlib.sha256(b"log.example\n\x01" + raw).digest()
    assert key_id_ed25519("log.example", key) == want == key_id_ed25519("log.example", raw)
    assert encode_vkey("log.example", key).startswith(f"log.example+{want[:4].hex()}+")


def test_ecdsa_key_hash_is_spki_hash() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    assert (
        key_hash_ecdsa(key.public_key()) == hashlib.sha256(spki_der(key.public_key())).digest()[:4]
    )


# --- real Rekor checkpoints -----------------------------------------------------------------


def _rekor_verifier(case: dict[str, Any]) -> Ed25519NoteVerifier | EcdsaNoteVerifier:
    key = serialization.load_der_public_key(base64.b64decode(str(case["public_key_spki_b64"])))
    name = str(case["key_name"])
    if isinstance(key, ed25519.Ed25519PublicKey):
        return Ed25519NoteVerifier(name, key)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return EcdsaNoteVerifier(name, key)


@pytest.mark.parametrize("case", REKOR["cases"], ids=lambda c: c["name"])
def test_real_rekor_checkpoints_verify_and_parse(case: dict[str, Any]) -> None:
    verifier = _rekor_verifier(case)
    assert verifier.key_hash == base64.b64decode(str(case["log_id_b64"]))[:4]
    text, verified = open_note(str(case["note"]).encode(), [verifier])
    assert verified == [verifier]
    body = parse_checkpoint(text)
    assert body == CheckpointBody(
        str(case["origin"]),
        int(case["size"]),
        base64.b64decode(str(case["root_b64"])),
    )


@pytest.mark.parametrize("case", REKOR["cases"], ids=lambda c: c["name"])
def test_real_rekor_checkpoint_with_changed_size_rejected(case: dict[str, Any]) -> None:
    note = str(case["note"]).replace(f"\n{case['size']}\n", f"\n{int(case['size']) + 1}\n")
    with pytest.raises(VerificationError, match="does not verify"):
        open_note(note.encode(), [_rekor_verifier(case)])


def test_ecdsa_note_round_trip_and_wrong_key() -> None:
    signer = EcdsaNoteSigner("rekor.example", ec.generate_private_key(ec.SECP256R1()))
    note = sign_note(TEXT, [signer])
    open_note(note, [signer.verifier()])
    impostor = EcdsaNoteVerifier(
        "rekor.example", ec.generate_private_key(ec.SECP256R1()).public_key()
    )
    with pytest.raises(VerificationError, match="no signature from a trusted key"):
        open_note(note, [impostor])


# --- checkpoints ----------------------------------------------------------------------------


def test_checkpoint_round_trip() -> None:
    text = format_checkpoint("example.com/log", 42, EMPTY_ROOT, ["ext one"])
    assert text == f"example.com/log\n42\n{base64.b64encode(EMPTY_ROOT).decode()}\next one\n"
    assert parse_checkpoint(text) == CheckpointBody("example.com/log", 42, EMPTY_ROOT, ("ext one",))


def test_c2sp_checkpoint_example_parses() -> None:
    text, _ = parse_note(C2SP["checkpoint_note"].encode())
    want = C2SP["checkpoint"]
    body = parse_checkpoint(text)
    assert (body.origin, body.size, body.root_hash) == (
        want["origin"],
        want["size"],
        base64.b64decode(want["root_b64"]),
    )


def test_rekor_v1_origin_with_spaces_is_accepted() -> None:
    text = format_checkpoint("rekor.example - 1234", 0, EMPTY_ROOT)
    assert parse_checkpoint(text).origin == "rekor.example - 1234"


ROOT_B64 = base64.b64encode(EMPTY_ROOT).decode()


@pytest.mark.parametrize(
    "text",
    [
        f"origin\n01\n{ROOT_B64}\n",  # leading zero
        f"origin\n+1\n{ROOT_B64}\n",
        f"origin\n 1\n{ROOT_B64}\n",
        f"origin\n1_000\n{ROOT_B64}\n",
        f"origin\n\u0661\n{ROOT_B64}\n",  # non-ASCII digit
        f"origin\n-1\n{ROOT_B64}\n",
        f"origin\n{2**64}\n{ROOT_B64}\n",
        f"origin\n\n{ROOT_B64}\n",
        f"\n1\n{ROOT_B64}\n",  # empty origin
        f"origin\n1\n{ROOT_B64}",  # no trailing newline
        "origin\n1\n",  # no root
        f"origin\n1\n{base64.b64encode(EMPTY_ROOT[:31]).decode()}\n",  # 31-byte root
        f"origin\n1\n{ROOT_B64[:-2]}9=\n",  # non-canonical base64
        f"origin\n1\n{ROOT_B64.rstrip('=')}\n",  # missing padding
        f"origin\n1\n{ROOT_B64}\n\n",  # empty extension line
    ],
)
def test_parse_checkpoint_rejects_malformed(text: str) -> None:
    with pytest.raises(VerificationError, match="malformed checkpoint"):
        parse_checkpoint(text)


def test_format_checkpoint_rejects_bad_fields() -> None:
    for args in (
        ("", 1, EMPTY_ROOT),
        ("a\nb", 1, EMPTY_ROOT),
        ("origin", -1, EMPTY_ROOT),
        ("origin", 2**64, EMPTY_ROOT),
        ("origin", 1, EMPTY_ROOT[:31]),
    ):
        with pytest.raises(InvalidRequest):
            format_checkpoint(*args)
    with pytest.raises(InvalidRequest):
        format_checkpoint("origin", 1, EMPTY_ROOT, [""])
