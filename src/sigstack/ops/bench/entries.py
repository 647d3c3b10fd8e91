"""Real, distinct Rekor v2 entries, signed before any measurement starts.

Every request is a ``CreateEntryRequest`` with a ``hashedRekordRequestV002``: a
random SHA-256 digest (so no two entries are alike and a deduplicating log
appends every one), an ECDSA P-256 signature over it, and an ``x509Certificate``
verifier (a self-signed certificate for the signing key, ``keyDetails``
``PKIX_ECDSA_P256_SHA_256``), exactly what Rekor v2 validates before logging.

A pool uses a handful of keys (certificate creation costs far more than a
signature) and signs each digest once; the request bodies are ready-to-send
bytes, so the load generator spends its CPU on HTTP, not on cryptography.
Making one request costs about 30 us of CPU.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
from collections.abc import Iterator

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.x509.oid import NameOID

from sigstack.core.errors import InvalidRequest

KEY_DETAILS = "PKIX_ECDSA_P256_SHA_256"
CONTENT_TYPE = "application/json"
DEFAULT_KEYS = 8
"""Signing keys (and certificates) per pool."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class _Signer:
    """One P-256 key, its self-signed certificate and a request-body template."""

    def __init__(self, number: int) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sigstack bench {number}")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        # The body with two placeholders, so each request is one string format.
        self._template = json.dumps(
            {
                "hashedRekordRequestV002": {
                    "digest": "@DIGEST@",
                    "signature": {
                        "content": "@SIG@",
                        "verifier": {
                            "x509Certificate": {"rawBytes": _b64(self.cert_der)},
                            "keyDetails": KEY_DETAILS,
                        },
                    },
                }
            },
            separators=(",", ":"),
        )
        self._algorithm = ec.ECDSA(utils.Prehashed(hashes.SHA256()))

    def request(self, digest: bytes) -> bytes:
        signature = self.key.sign(digest, self._algorithm)
        return (
            self._template.replace("@DIGEST@", _b64(digest))
            .replace("@SIG@", _b64(signature))
            .encode("ascii")
        )


class EntryPool:
    """Pre-signed, distinct ``CreateEntryRequest`` bodies, handed out once each.

    ``EntryPool(count)`` signs ``count`` requests at once (about 30 us each);
    ``next()`` returns the next unused one and ``None`` when the pool is used up;
    ``extend(n)`` signs ``n`` more (outside a measured window).
    """

    def __init__(self, count: int, *, keys: int = DEFAULT_KEYS) -> None:
        if count < 0 or keys < 1:
            raise InvalidRequest("an entry pool needs a non-negative size and at least one key")
        self._signers = [_Signer(i) for i in range(keys)]
        self._bodies: list[bytes] = []
        self._next = 0
        self.extend(count)

    def extend(self, count: int) -> None:
        """Sign ``count`` more distinct requests."""
        signers = self._signers
        start = len(self._bodies)
        self._bodies.extend(
            signers[(start + i) % len(signers)].request(os.urandom(32)) for i in range(count)
        )

    def next(self) -> bytes | None:
        """The next unused request body, or None when the pool is exhausted."""
        i = self._next
        if i >= len(self._bodies):
            return None
        self._next = i + 1
        return self._bodies[i]

    def __iter__(self) -> Iterator[bytes]:
        while (body := self.next()) is not None:
            yield body

    @property
    def used(self) -> int:
        return self._next

    @property
    def remaining(self) -> int:
        return len(self._bodies) - self._next

    def __len__(self) -> int:
        return len(self._bodies)
