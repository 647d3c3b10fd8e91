"""Rekor v2 (rekor-tiles) domain logic: validate an entry, log it, answer with a proof.

``create_entry`` accepts a ``CreateEntryRequest`` (proto-JSON, camelCase or
snake_case names) carrying either

* ``hashedRekordRequestV002``: logged only if its signature verifies over the
  digest with the key in the request (sigstore-python 4.5 and sigstore-go also
  send DSSE this way, as a hashedrekord over the digest of the envelope's PAE); or
* ``dsseRequestV002`` (sigstore-js 5, cosign <= 3.0): logged only if EVERY
  envelope signature verifies over the DSSE PAE under one of the verifiers
  (each verifier's ``keyDetails`` must match its key and names the hash) and
  every verifier verifies one; at most 10 signatures and 10 verifiers, no
  duplicate verifier. The entry stored is rekor-tiles' ``dsse`` 0.0.2:
  ``spec.dsseV002{payloadHash: SHA2_256 of the payload, signatures: [{content,
  verifier}]}`` with signatures sorted by their raw bytes, each with the verifier
  (as sent) that verified it.

It guarantees that its answer is a ``TransparencyLogEntry`` the clients accept:
``logIndex``, ``treeSize`` and ``integratedTime`` as strings, ``integratedTime``
"0" (v2 entries carry no signed integration time; a nonzero one makes cosign
demand a SET), ``kindVersion`` naming the stored kind (``hashedrekord`` or
``dsse``, version 0.0.2), the inclusion proof against a checkpoint that is
durable and signed, and the canonicalized body (RFC 8785 JSON of the proto-JSON
``Entry``) whose leaf hash the proof starts from.

An entry identical to one already logged is not logged again: the answer carries
the index it already has (with a proof against the current checkpoint).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import ValidationError
from sigstore_models.intoto import Envelope
from sigstore_models.rekor.v2.dsse import DSSERequestV002
from sigstore_models.rekor.v2.entry import CreateEntryRequest
from sigstore_models.rekor.v2.hashedrekord import HashedRekordRequestV002
from sigstore_models.rekor.v2.verifier import Verifier

from sigstack.core import keys, pki
from sigstack.core.encoding import b64, canonical_json
from sigstack.core.errors import ConfigError, InvalidRequest, NotFound, VerificationError
from sigstack.core.offload import run_check
from sigstack.log.engine import Checkpoint, Entry, Integrated, TransparencyLog
from sigstack.services.rekor import dsse

log = logging.getLogger("sigstack.rekor")

ENTRY_API_VERSION = "0.0.2"
HASHEDREKORD = "hashedrekord"
DSSE = "dsse"
_HASH_NAMES = {"sha256": "SHA2_256", "sha384": "SHA2_384", "sha512": "SHA2_512"}


class EntryLog(Protocol):
    """What Rekor's write path needs of a log: :meth:`TransparencyLog.add`."""

    async def add(self, entry: Entry) -> Integrated: ...


class RekorWriter:
    """Rekor v2's write path: validate a request, log it on ``log``, answer with a proof.

    ``log`` is the :class:`TransparencyLog` itself, or in a frontend process the
    channel to the process that holds it (:mod:`sigstack.stack.logchannel`).
    """

    def __init__(self, log: EntryLog, log_id: bytes) -> None:
        if len(log_id) != 32:
            raise ConfigError("a Rekor v2 log ID is 32 bytes")
        self._writes_to = log
        self.log_id = log_id
        self._log_id_b64 = b64(log_id)
        # The last answer's checkpoint, and the JSON before and after its proof hashes.
        self._cp_json: tuple[Checkpoint | None, str, str] = (None, "", "")

    async def create_entry(self, raw_body: bytes) -> dict[str, Any]:
        """Validate, log and answer a ``CreateEntryRequest`` (see the module docstring)."""
        result = json.loads(await self.create_entry_json(raw_body))
        assert isinstance(result, dict)
        return result

    async def create_entry_json(self, raw_body: bytes) -> bytes:
        """:meth:`create_entry`'s answer as compact JSON: what the HTTP API sends.

        Entries sequenced in one batch share their checkpoint, so its part of the
        answer is encoded once per checkpoint, not once per entry.
        """
        kind, canonical = await self._checked_entry(raw_body)
        result = await self._writes_to.add(Entry(leaf=canonical, dedup=True))
        cp = result.checkpoint
        answered, head, tail = self._cp_json  # one read: another thread may replace it
        if answered is not cp:
            head = f'"rootHash":"{b64(cp.root_hash)}","treeSize":"{cp.size}","hashes":['
            tail = f'],"checkpoint":{{"envelope":{json.dumps(cp.note.decode())}}}'
            self._cp_json = (cp, head, tail)
        index = result.index
        hashes = ",".join([f'"{b64(h)}"' for h in result.proof])
        return (
            f'{{"logIndex":"{index}","logId":{{"keyId":"{self._log_id_b64}"}},'
            f'"kindVersion":{{"kind":"{kind}","version":"{ENTRY_API_VERSION}"}},'
            f'"integratedTime":"0","inclusionProof":{{"logIndex":"{index}",'
            f"{head}{hashes}{tail}}},"
            f'"canonicalizedBody":"{b64(canonical)}"}}'
        ).encode()

    def canonical_entry(self, raw_body: bytes) -> tuple[str, bytes]:
        """``(kind, RFC 8785 bytes of the log entry)`` for a valid request, or a 400-class error."""
        kind, verified_entry = _parse(raw_body)
        return kind, canonical_json(verified_entry())

    async def _checked_entry(self, raw_body: bytes) -> tuple[str, bytes]:
        """:meth:`canonical_entry`, verifying the request's signatures off this thread."""
        kind, verified_entry = _parse(raw_body)
        return kind, canonical_json(await run_check(verified_entry))


class RekorService(RekorWriter):
    """Rekor v2 over a ``TransparencyLog`` whose checkpoints carry ``log_id``'s key."""

    def __init__(self, log: TransparencyLog, log_id: bytes) -> None:
        super().__init__(log, log_id)
        self._log = log

    @property
    def transparency_log(self) -> TransparencyLog:
        return self._log

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


EntryCheck = Callable[[], dict[str, Any]]
"""Verifies a request's signatures (raising ``VerificationError`` or ``InvalidRequest``)
and returns its log entry. Everything else about the request was checked before."""


def _parse(raw_body: bytes) -> tuple[str, EntryCheck]:
    """``(kind, its EntryCheck)`` for a well-formed request body; a 400-class error if not."""
    try:
        request = CreateEntryRequest.model_validate_json(raw_body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidRequest(f"invalid CreateEntryRequest at {where}: {first.get('msg')}") from exc
    if request.dsse_request_v002 is not None:
        return DSSE, _dsse_entry(request.dsse_request_v002)
    hr = request.hashed_rekord_request_v002
    assert hr is not None  # the model guarantees exactly one request kind
    return HASHEDREKORD, _hashedrekord_entry(hr)


VERIFIER_CACHE_SIZE = 1024
"""Verifier keys kept parsed, by their bytes: a signer sends the same certificate or
key with every entry it logs for a while, and parsing one costs as much as half a
signature check. Signatures are still verified on every request."""
VERIFIER_CACHE_MAX_BYTES = 8192
"""Larger key material is parsed every time, so the cache stays under ~10 MB."""


def _verifier_key(
    is_certificate: bool, raw: bytes, details: str, where: str
) -> tuple[keys.PublicKey, str]:
    """``(key, base64 of the bytes the entry records)`` for a verifier's key material,
    checked against its ``keyDetails``; ``InvalidRequest`` if unusable (never cached)."""
    if len(raw) > VERIFIER_CACHE_MAX_BYTES:
        return _load_verifier_key(is_certificate, raw, details, where)
    return _cached_verifier_key(is_certificate, raw, details, where)


def _load_verifier_key(
    is_certificate: bool, raw: bytes, details: str, where: str
) -> tuple[keys.PublicKey, str]:
    if is_certificate:
        try:
            cert = pki.load_der_certificate(raw, what=f"{where} certificate")
            public_key = keys.require_supported(cert.public_key())
        except VerificationError as exc:
            raise InvalidRequest(exc.message) from exc
        except ValueError as exc:  # an unsupported key algorithm in a valid certificate
            raise InvalidRequest(f"{where} certificate: unsupported public key ({exc})") from exc
        recorded = raw
    else:
        try:
            public_key = keys.load_spki(raw)
        except VerificationError as exc:
            raise InvalidRequest(f"{where} public key: {exc.message}") from exc
        recorded = keys.spki_der(public_key)
    try:
        keys.check_key_details(public_key, details)
    except VerificationError as exc:
        raise InvalidRequest(f"{where}: {exc.message}") from exc
    return public_key, b64(recorded)


_cached_verifier_key = functools.lru_cache(maxsize=VERIFIER_CACHE_SIZE)(_load_verifier_key)


def _verifier(verifier: Verifier, where: str) -> tuple[keys.PublicKey, dict[str, Any]]:
    """The key of a request's verifier (checked against its ``keyDetails``) and its JSON."""
    details = verifier.key_details.value
    if verifier.x509_certificate is not None:
        public_key, recorded = _verifier_key(
            True, verifier.x509_certificate.raw_bytes, details, where
        )
        verifier_json: dict[str, Any] = {"x509Certificate": {"rawBytes": recorded}}
    else:
        assert verifier.public_key is not None
        public_key, recorded = _verifier_key(False, verifier.public_key.raw_bytes, details, where)
        verifier_json = {"publicKey": {"rawBytes": recorded}}
    verifier_json["keyDetails"] = details
    return public_key, verifier_json


def _hashedrekord_entry(hr: HashedRekordRequestV002) -> EntryCheck:
    if not hr.signature.content:
        raise InvalidRequest("signature.content is empty")
    public_key, verifier_json = _verifier(hr.signature.verifier, "verifier")
    algorithm = keys.hash_for_key(public_key)
    if algorithm is None:
        raise InvalidRequest(
            "Ed25519 keys cannot sign a prehashed digest; hashedrekord needs ECDSA or RSA"
        )
    signature, digest = hr.signature.content, hr.digest
    entry = {
        "apiVersion": ENTRY_API_VERSION,
        "kind": HASHEDREKORD,
        "spec": {
            "hashedRekordV002": {
                "data": {"algorithm": _HASH_NAMES[algorithm.name], "digest": b64(hr.digest)},
                "signature": {"content": b64(hr.signature.content), "verifier": verifier_json},
            }
        },
    }

    def verified() -> dict[str, Any]:  # verify_prehashed checks the digest length first
        keys.verify_prehashed(public_key, signature, digest, algorithm)
        return entry

    return verified


def _dsse_entry(request: DSSERequestV002) -> EntryCheck:
    envelope = request.envelope
    if not request.verifiers:
        raise InvalidRequest("dsseRequestV002.verifiers is empty")
    if len(request.verifiers) > dsse.MAX_VERIFIERS:
        raise InvalidRequest(
            f"{len(request.verifiers)} verifiers were given; at most {dsse.MAX_VERIFIERS} "
            "are accepted"
        )
    seen: set[bytes] = set()
    parsed = []
    for i, verifier in enumerate(request.verifiers):
        raw = (
            verifier.x509_certificate.raw_bytes
            if verifier.x509_certificate is not None
            else verifier.public_key.raw_bytes
            if verifier.public_key is not None
            else b""
        )
        if not raw:
            raise InvalidRequest(f"verifiers[{i}] has no key or certificate bytes")
        if raw in seen:
            raise InvalidRequest(f"verifiers[{i}] duplicates an earlier verifier")
        seen.add(raw)
        parsed.append(_verifier(verifier, f"verifiers[{i}]"))
    signatures = [s.sig for s in envelope.signatures]
    return lambda: _dsse_verified(envelope, signatures, parsed)


def _dsse_verified(
    envelope: Envelope, signatures: list[bytes], parsed: list[tuple[keys.PublicKey, dict[str, Any]]]
) -> dict[str, Any]:
    """The dsse entry once every signature verified under one of the ``parsed`` verifiers."""
    owners = dsse.match_signatures(
        dsse.pae(envelope.payload_type, envelope.payload),
        signatures,
        [dsse.verify_v2(public_key) for public_key, _ in parsed],
    )
    by_sig: dict[bytes, dict[str, Any]] = {}
    for signature, owner in zip(signatures, owners, strict=True):
        by_sig.setdefault(signature, parsed[owner][1])
    return {
        "apiVersion": ENTRY_API_VERSION,
        "kind": DSSE,
        "spec": {
            "dsseV002": {
                "payloadHash": {
                    "algorithm": "SHA2_256",
                    "digest": b64(hashlib.sha256(envelope.payload).digest()),
                },
                "signatures": [
                    {"content": b64(signature), "verifier": by_sig[signature]}
                    for signature in sorted(by_sig)
                ],
            }
        },
    }
