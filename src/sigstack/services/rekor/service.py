"""Rekor v2 (rekor-tiles) domain logic: validate an entry, log it, answer with a proof.

``create_entry`` accepts a ``CreateEntryRequest`` carrying ``hashedRekordRequestV002``
(proto-JSON, camelCase or snake_case names), and guarantees that it only logs an
entry whose signature verifies over the digest with the key in the request, and
that its answer is a ``TransparencyLogEntry`` the clients accept: ``logIndex``,
``treeSize`` and ``integratedTime`` as strings, ``integratedTime`` "0" (v2 entries
carry no signed integration time; a nonzero one makes cosign demand a SET), the
inclusion proof against a checkpoint that is durable and signed, and the
canonicalized body (RFC 8785 JSON of the proto-JSON ``Entry``) whose leaf hash the
proof starts from.

An entry identical to one already logged is not logged again: the answer carries
the index it already has (with a proof against the current checkpoint).

DSSE entries: sigstore-python 4.5 and sigstore-go send DSSE as a hashedrekord over
SHA-256(PAE), which this accepts. ``dsseRequestV002`` (sigstore-js 5, cosign <= 3.0)
is refused with a clear message until the entry kind is added.
"""

from __future__ import annotations

import logging
from typing import Any

import rfc8785
from pydantic import ValidationError
from sigstore_models.rekor.v2.entry import CreateEntryRequest

from sigstack.core import keys, pki
from sigstack.core.encoding import b64
from sigstack.core.errors import ConfigError, InvalidRequest, NotFound, VerificationError
from sigstack.log.engine import Entry, TransparencyLog

log = logging.getLogger("sigstack.rekor")

ENTRY_API_VERSION = "0.0.2"
_HASH_NAMES = {"sha256": "SHA2_256", "sha384": "SHA2_384", "sha512": "SHA2_512"}


class RekorService:
    """Rekor v2 over a ``TransparencyLog`` whose checkpoints carry ``log_id``'s key."""

    def __init__(self, log: TransparencyLog, log_id: bytes) -> None:
        if len(log_id) != 32:
            raise ConfigError("a Rekor v2 log ID is 32 bytes")
        self._log = log
        self._log_id = log_id

    @property
    def transparency_log(self) -> TransparencyLog:
        return self._log

    async def create_entry(self, raw_body: bytes) -> dict[str, Any]:
        """Validate, log and answer a ``CreateEntryRequest`` (see the module docstring)."""
        canonical = self.canonical_entry(raw_body)
        result = await self._log.add(Entry(leaf=canonical, dedup=True))
        cp = result.checkpoint
        return {
            "logIndex": str(result.index),
            "logId": {"keyId": b64(self._log_id)},
            "kindVersion": {"kind": "hashedrekord", "version": ENTRY_API_VERSION},
            "integratedTime": "0",
            "inclusionProof": {
                "logIndex": str(result.index),
                "rootHash": b64(cp.root_hash),
                "treeSize": str(cp.size),
                "hashes": [b64(h) for h in result.proof],
                "checkpoint": {"envelope": cp.note.decode()},
            },
            "canonicalizedBody": b64(canonical),
        }

    def canonical_entry(self, raw_body: bytes) -> bytes:
        """The RFC 8785 bytes of the log entry for a valid request, or a 400-class error."""
        try:
            request = CreateEntryRequest.model_validate_json(raw_body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "body"
            raise InvalidRequest(
                f"invalid CreateEntryRequest at {where}: {first.get('msg')}"
            ) from exc
        if request.dsse_request_v002 is not None:
            raise InvalidRequest(
                "dsseRequestV002 entries are not supported yet; upload DSSE as a "
                "hashedRekordRequestV002 over the digest of the envelope's PAE"
            )
        hr = request.hashed_rekord_request_v002
        assert hr is not None  # the model guarantees exactly one request kind
        if not hr.signature.content:
            raise InvalidRequest("signature.content is empty")
        verifier = hr.signature.verifier
        details = verifier.key_details.value
        if verifier.x509_certificate is not None:
            der = verifier.x509_certificate.raw_bytes
            try:
                cert = pki.load_der_certificate(der, what="verifier certificate")
                public_key = keys.require_supported(cert.public_key())
            except VerificationError as exc:
                raise InvalidRequest(exc.message) from exc
            verifier_json: dict[str, Any] = {"x509Certificate": {"rawBytes": b64(der)}}
        else:
            assert verifier.public_key is not None
            try:
                public_key = keys.load_spki(verifier.public_key.raw_bytes)
            except VerificationError as exc:
                raise InvalidRequest(f"verifier public key: {exc.message}") from exc
            verifier_json = {"publicKey": {"rawBytes": b64(keys.spki_der(public_key))}}
        verifier_json["keyDetails"] = details
        try:
            keys.check_key_details(public_key, details)
        except VerificationError as exc:
            raise InvalidRequest(exc.message) from exc
        algorithm = keys.hash_for_key(public_key)
        if algorithm is None:
            raise InvalidRequest(
                "Ed25519 keys cannot sign a prehashed digest; hashedrekord needs ECDSA or RSA"
            )
        # verify_prehashed checks the digest length against the key's hash first.
        keys.verify_prehashed(public_key, hr.signature.content, hr.digest, algorithm)
        entry: dict[str, Any] = {
            "apiVersion": ENTRY_API_VERSION,
            "kind": "hashedrekord",
            "spec": {
                "hashedRekordV002": {
                    "data": {"algorithm": _HASH_NAMES[algorithm.name], "digest": b64(hr.digest)},
                    "signature": {"content": b64(hr.signature.content), "verifier": verifier_json},
                }
            },
        }
        return rfc8785.dumps(entry)

    def checkpoint(self) -> bytes:
        """The latest signed checkpoint (C2SP signed note)."""
        return self._log.checkpoint().note

    def tile(self, path: str) -> bytes:
        """A tile or entry bundle by its C2SP path below ``tile/`` (reads storage)."""
        key = "tile/" + path
        data = self._log.read(key)  # raises InvalidRequest for malformed paths
        if data is None:
            raise NotFound(f"{key} does not exist (yet)")
        return data
