"""canonical_json must produce exactly rfc8785's bytes (or its errors) for any document."""

from __future__ import annotations

import random
from typing import Any

import pytest
import rfc8785

from sigstack.core.encoding import canonical_json

# Every character class where JSON encoders disagree: controls (short and \u forms),
# quote and backslash, DEL, the slash, line/paragraph separators, BMP private use
# above the surrogates, astral characters, and lone surrogates.
_CHARS = [chr(c) for c in range(0x20)] + list('"\\/\x7f\u2028\u2029é€\ue000\uffff😀\ud800\udfff')
_CHARS += list("abcXYZ019 +=-_")


def _string(rng: random.Random) -> str:
    return "".join(rng.choice(_CHARS) for _ in range(rng.randrange(0, 12)))


def _key(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.7:
        return "".join(rng.choice("abcdefghABCD_0123") for _ in range(rng.randrange(1, 8)))
    return _string(rng)  # non-ASCII keys: UTF-16 order differs from code-point order


def _value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(9 if depth < 4 else 7)
    if kind == 0:
        return _string(rng)
    if kind == 1:
        return rng.choice([0, 1, -1, 2**53 - 1, -(2**53 - 1), 2**53, -(2**53), 10**30])
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return rng.choice([0.5, 1e21, -0.0, 1.0, 3.14159, 5e-324])
    if kind in (4, 5, 6):
        return rng.randrange(-1000, 1000)
    if kind == 7:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {_key(rng): _value(rng, depth + 1) for _ in range(rng.randrange(0, 5))}


def _reference(doc: Any) -> bytes | type[Exception]:
    try:
        return rfc8785.dumps(doc)
    except Exception as exc:
        return type(exc)


@pytest.mark.parametrize("seed", range(20))
def test_random_documents_match_rfc8785_byte_for_byte(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(250):
        doc = _value(rng, 0)
        expected = _reference(doc)
        if isinstance(expected, bytes):
            assert canonical_json(doc) == expected, doc
        else:
            with pytest.raises(expected):
                canonical_json(doc)


def test_a_log_entry_takes_the_fast_path_and_sorts_keys() -> None:
    entry = {
        "spec": {"b": "x", "a": ["\n", "é"]},
        "kind": "hashedrekord",
        "apiVersion": "0.0.2",
    }
    assert canonical_json(entry) == (
        b'{"apiVersion":"0.0.2","kind":"hashedrekord","spec":{"a":["\\n","\xc3\xa9"],"b":"x"}}'
    )


@pytest.mark.parametrize(
    "doc",
    [
        "\ud800",
        {"k": "\udfff"},
        2**53,
        {"k": [-(2**53)]},
        float("nan"),
    ],
)
def test_what_rfc8785_refuses_is_refused(doc: Any) -> None:
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical_json(doc)
