"""Byte and document encodings shared across services: base64, canonical and on-disk JSON.

``b64decode`` is strict (standard alphabet, padding required, no stray characters)
and raises the caller's error type with a message naming what was being decoded,
so each boundary reports bad input in its own terms (400 for a request field,
``VerificationError`` for a structure being verified).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import rfc8785

from sigstack.core.errors import InvalidRequest, SigstackError

_MAX_SAFE_INTEGER = 2**53 - 1
_canonical_encoder = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)


def b64(data: bytes) -> str:
    """Standard base64 of ``data`` as text."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def b64decode(
    text: str | bytes, *, what: str, error: type[SigstackError] = InvalidRequest
) -> bytes:
    """Strictly decode standard base64, raising ``error`` naming ``what`` on bad input."""
    if not isinstance(text, str | bytes):
        raise error(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise error(f"{what} is not valid base64: {exc}") from exc


def json_document(doc: Any) -> bytes:
    """The on-disk form of a JSON document: 2-space indented, trailing newline.

    Deterministic for a given document, so rewriting an unchanged document leaves the
    file byte-identical.
    """
    return (json.dumps(doc, indent=2) + "\n").encode()


def _fast_canonical(doc: Any) -> bool:
    """True when the C JSON encoder's output for ``doc`` is its RFC 8785 form.

    That holds for strings, booleans, null, integers within I-JSON's safe range,
    arrays, and objects whose keys are ASCII (so code-point order is UTF-16 order).
    Python's string escaping matches RFC 8785's exactly (``\\"``, ``\\\\``, the short
    forms ``\\b \\t \\n \\f \\r``, other controls as lowercase ``\\u00xx``, the rest
    literal); lone surrogates are caught when the text is encoded.
    """
    # Plain dicts and lists (every entry sigstack builds) are walked with loops, not
    # generators, and string values are not recursed into: this runs once per entry.
    kind = type(doc)
    if kind is dict:
        for key, value in doc.items():
            if type(key) is not str or not key.isascii():
                return False
            if type(value) is not str and not _fast_canonical(value):
                return False
        return True
    if kind is list:
        for item in doc:
            if type(item) is not str and not _fast_canonical(item):
                return False
        return True
    if isinstance(doc, str) or doc is None or isinstance(doc, bool):
        return True
    if isinstance(doc, int):
        return -_MAX_SAFE_INTEGER <= doc <= _MAX_SAFE_INTEGER
    if isinstance(doc, dict):
        return all(
            isinstance(key, str) and key.isascii() and _fast_canonical(value)
            for key, value in doc.items()
        )
    if isinstance(doc, list):
        return all(_fast_canonical(item) for item in doc)
    return False


def canonical_json(doc: Any) -> bytes:
    """The RFC 8785 (JCS) bytes of ``doc``, as :func:`rfc8785.dumps` computes them.

    Documents made only of strings, safe integers, booleans, null, arrays and
    ASCII-keyed objects (every log entry sigstack builds) are encoded by the C JSON
    encoder, several times faster; anything else (floats, non-ASCII keys, lone
    surrogates, huge integers) goes through ``rfc8785``, which also raises its
    errors for what cannot be canonicalized.
    """
    if _fast_canonical(doc):
        try:
            return _canonical_encoder.encode(doc).encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: rfc8785 refuses it with its own error
    return rfc8785.dumps(doc)
