"""Genesis entries: the first entry of every Rekor log sigstack creates.

Why: sigstore-js re-serializes bundles in proto3 JSON, which drops fields holding
their default value, so the bundle of the entry at index 0 has no ``logIndex`` (and,
in a tree of one, no ``hashes``); sigstore-python's strict models then refuse that
bundle. On a public log nobody signs entry 0, but on a fresh private stack it is the
user's first signature. So each new Rekor log starts with one entry of its own at
index 0, and no client's entry is ever there.

What: a hashedrekord over a statement naming the log and its creation time, signed
by a throw-away P-256 key (its public key is in the entry; the private key is
discarded), submitted through the service's own request path, so it is an ordinary,
valid entry that every verifier and monitor understands.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from sigstack.core.clock import rfc3339
from sigstack.core.encoding import b64
from sigstack.core.keys import spki_der
from sigstack.services.rekor.service import RekorService
from sigstack.services.rekor.v1 import RekorV1Service


def statement(origin: str, created: dt.datetime) -> bytes:
    """The signed statement: which log this is and when it was created."""
    return f"sigstack genesis entry\nlog: {origin}\ncreated: {rfc3339(created)}\n".encode()


def _signed(data: bytes) -> tuple[ec.EllipticCurvePrivateKey, bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(data).digest()
    return key, digest, key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def v2_request(origin: str, created: dt.datetime) -> bytes:
    """A Rekor v2 ``CreateEntryRequest`` for the genesis statement."""
    key, digest, signature = _signed(statement(origin, created))
    return json.dumps(
        {
            "hashedRekordRequestV002": {
                "digest": b64(digest),
                "signature": {
                    "content": b64(signature),
                    "verifier": {
                        "publicKey": {"rawBytes": b64(spki_der(key.public_key()))},
                        "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    },
                },
            }
        }
    ).encode()


def v1_request(origin: str, created: dt.datetime) -> bytes:
    """A Rekor v1 hashedrekord 0.0.1 proposed entry for the genesis statement."""
    key, digest, signature = _signed(statement(origin, created))
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return json.dumps(
        {
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "signature": {"content": b64(signature), "publicKey": {"content": b64(pem)}},
                "data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
            },
        }
    ).encode()


def write(service: RekorService | RekorV1Service, origin: str, created: dt.datetime) -> None:
    """Log the genesis entry through ``service`` (whose log must be open and empty)."""
    log = service.transparency_log
    if log.checkpoint().size != 0:
        return
    if isinstance(service, RekorV1Service):
        asyncio.run(service.create_entry(v1_request(origin, created)))
    else:
        asyncio.run(service.create_entry(v2_request(origin, created)))
