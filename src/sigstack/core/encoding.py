"""Byte and document encodings shared across services: base64 and on-disk JSON.

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

from sigstack.core.errors import InvalidRequest, SigstackError


def b64(data: bytes) -> str:
    """Standard base64 of ``data`` as text."""
    return base64.b64encode(data).decode("ascii")


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
