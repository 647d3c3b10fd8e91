"""Rekor v1 (upstream Rekor's REST API) on its own transparency log.

The v1 log is a separate :class:`~sigstack.log.engine.TransparencyLog` (own tree,
own key) whose checkpoints the stack signs with an ECDSA P-256
:class:`~sigstack.core.note.EcdsaNoteSigner` named after the host, over the origin
``"<host> - <tree_id>"`` (a v1 origin must end in `` - <digits>``: Go clients
treat any other origin as Rekor v2). The same key signs each entry's Signed
Entry Timestamp; the log ID is SHA-256 of its DER SubjectPublicKeyInfo.

Guarantees
----------
* An entry is logged only if :func:`~sigstack.services.rekor.v1_types.canonicalize`
  accepts it (signatures verified, structure and sizes checked), and the Merkle
  leaf is the canonical body upstream would store, so its leaf hash is
  upstream's UUID.
* ``integratedTime`` is chosen (from the injected clock) when the entry is
  submitted and stored with it in the entry-bundle record (see
  :func:`encode_record`): every later read answers the same time, and the Signed
  Entry Timestamp, ``ECDSA-SHA256(JCS({body, integratedTime, logID, logIndex}))``,
  verifies for every answer.
* An entry identical to a logged one is not logged again: the submission fails
  with :class:`EntryExists` (409) whose ``Location`` names the existing entry.
* Every entry answer carries an inclusion proof against a checkpoint the log has
  durably committed, that checkpoint's signed note, and leaf hash == UUID (a
  record whose body does not hash to the UUID it was found under is refused as
  :class:`~sigstack.core.errors.LogIntegrityError`).
* Entry IDs are answered as upstream's 80-hex ``entryUUID`` (16 hex digits of the
  tree ID, then the 64-hex leaf hash); reads accept that form and the plain UUID.
* Search (``/api/v1/index/retrieve``) is answered from the log's entry index,
  whose keys :func:`index_keys` derives from each stored record alone (so the
  engine can rebuild the index from the entry bundles).

Reads do storage I/O and are synchronous; the HTTP layer runs them in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sigstack.core.clock import Clock, utc, utcnow
from sigstack.core.encoding import b64, canonical_json
from sigstack.core.errors import (
    ConfigError,
    Conflict,
    InvalidRequest,
    LogIntegrityError,
    NotFound,
)
from sigstack.core.keys import spki_der
from sigstack.core.merkle import leaf_hash, root_from_inclusion_proof
from sigstack.core.tiles import HASH_SIZE, TILE_WIDTH, tile_for
from sigstack.log.engine import LEAF_NAMESPACE, Checkpoint, Entry, TransparencyLog
from sigstack.services.rekor import v1_types
from sigstack.services.rekor.material import load_pem_verifier

__all__ = [
    "MAX_SEARCH_QUERIES",
    "EntryExists",
    "RekorV1Service",
    "TooManyQueries",
    "decode_record",
    "encode_record",
    "index_keys",
    "leaf_of",
]

MAX_SEARCH_QUERIES = 10
"""Most entryUUIDs + logIndexes + entries one ``entries/retrieve`` may ask for (upstream)."""

MAX_TREE_ID = 2**63 - 1

NS_HASH = "hash"
"""Index namespace: ``"<alg>:<lowercase hex>"`` artifact/payload digests (ASCII)."""
NS_KEY = "key"
"""Index namespace: SHA-256 of a verifier's canonical PEM (32 bytes)."""
NS_SAN = "san"
"""Index namespace: SHA-256 of a lowercased subject alternative name (32 bytes)."""

_RECORD_VERSION = 1
_UUID = re.compile(r"[0-9a-fA-F]{64}")
_ENTRY_ID = re.compile(r"[0-9a-fA-F]{80}")
_SEARCH_HASH = re.compile(
    r"(?:(sha1|sha256|sha384|sha512):)?([0-9a-fA-F]{40}|[0-9a-fA-F]{64}|[0-9a-fA-F]{96}|[0-9a-fA-F]{128})"
)
_HASH_BY_LENGTH = {40: "sha1", 64: "sha256", 96: "sha384", 128: "sha512"}


class EntryExists(Conflict):
    """An equivalent entry is already logged (HTTP 409, ``Location`` names it)."""

    def __init__(self, entry_id: str) -> None:
        super().__init__(
            f"an equivalent entry already exists in the transparency log with UUID {entry_id}",
            headers={"Location": f"/api/v1/log/entries/{entry_id}"},
        )
        self.entry_id = entry_id


class TooManyQueries(InvalidRequest):
    """A search asked for more than :data:`MAX_SEARCH_QUERIES` items (HTTP 422, as upstream)."""

    http_status = 422


# --- the stored record ------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """What the entry bundle stores for one v1 entry."""

    body: bytes
    integrated_time: int
    digests: tuple[str, ...] = ()


def encode_record(body: bytes, integrated_time: int, digests: Sequence[str] = ()) -> bytes:
    """The entry-bundle record: RFC 8785 JSON of ``{"v": 1, "body", "integratedTime", "digests"}``.

    ``body`` is base64 of the canonical body (the Merkle leaf), ``integratedTime``
    the Unix time chosen at submission; ``digests`` is left out when empty.

    ``digests`` are the in-toto subject digests of a DSSE payload (not part of the
    body, which stores only the payload's hash), kept so the search index can be
    rebuilt from the records.
    """
    doc: dict[str, Any] = {
        "v": _RECORD_VERSION,
        "body": b64(body),
        "integratedTime": integrated_time,
    }
    if digests:
        doc["digests"] = list(digests)
    return canonical_json(doc)


def decode_record(record: bytes) -> Record:
    """Parse a record written by :func:`encode_record`; ``ValueError`` if it is not one."""
    doc = json.loads(record)
    if not isinstance(doc, dict) or doc.get("v") != _RECORD_VERSION:
        raise ValueError("not a Rekor v1 entry record (version 1)")
    body_text = doc.get("body")
    integrated_time = doc.get("integratedTime")
    digests = doc.get("digests", [])
    if not isinstance(body_text, str) or not body_text:
        raise ValueError("record body is missing")
    if isinstance(integrated_time, bool) or not isinstance(integrated_time, int):
        raise ValueError("record integratedTime is not an integer")
    if not isinstance(digests, list) or not all(isinstance(d, str) for d in digests):
        raise ValueError("record digests are not a list of strings")
    try:
        body = base64.b64decode(body_text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"record body is not base64: {exc}") from exc
    return Record(body, integrated_time, tuple(digests))


def leaf_of(record: bytes) -> bytes:
    """The Merkle leaf of a stored record (its canonical body), for fsck."""
    return decode_record(record).body


def _san_key(value: str) -> bytes:
    return hashlib.sha256(value.lower().encode("utf-8", errors="surrogatepass")).digest()


def _hash_key(value: str) -> bytes:
    return value.lower().encode("ascii", errors="replace")


def index_keys(record: bytes) -> list[tuple[str, bytes]]:
    """Search keys of a stored record, for ``TransparencyLog(index_keys=...)``.

    A pure function of the record: artifact/payload digests (namespace
    ``hash``), SHA-256 of each verifier's canonical PEM (``key``) and SHA-256 of
    each lowercased certificate SAN (``san``). A record it cannot parse yields no
    keys (it never raises: it runs inside the sequencer).
    """
    try:
        parsed = decode_record(record)
    except (ValueError, RecursionError):
        return []
    found = v1_types.body_search_keys(parsed.body)
    keys: list[tuple[str, bytes]] = []
    for text in [*found.hashes, *parsed.digests]:
        if text.isascii() and 0 < len(text) <= 200:
            keys.append((NS_HASH, _hash_key(text)))
    keys.extend((NS_KEY, digest) for digest in found.key_hashes)
    keys.extend((NS_SAN, _san_key(value)) for value in found.subjects)
    return list(dict.fromkeys(keys))


# --- the service --------------------------------------------------------------------------


def _parse_json(raw: bytes, what: str) -> Any:
    if not raw:
        raise InvalidRequest(f"{what} is empty; expected JSON")
    try:
        return json.loads(raw)
    except RecursionError as exc:
        raise InvalidRequest(f"{what} is not valid JSON: nested too deeply") from exc
    except ValueError as exc:
        raise InvalidRequest(f"{what} is not valid JSON: {exc}") from exc


def _canonicalize(raw_body: bytes) -> v1_types.Canonical:
    return v1_types.canonicalize(_parse_json(raw_body, "the proposed entry"))


class RekorV1Service:
    """Rekor v1 over ``log``; ``signing_key`` signs its checkpoints (via the stack) and SETs.

    ``log``'s origin must be ``"<host> - <tree_id>"``; ``signing_key`` must be
    ECDSA P-256 (the key the trusted root lists for this log). ``clock`` gives
    each entry's ``integratedTime``.
    """

    def __init__(
        self,
        log: TransparencyLog,
        signing_key: ec.EllipticCurvePrivateKey,
        tree_id: int,
        clock: Clock = utcnow,
    ) -> None:
        if not isinstance(signing_key, ec.EllipticCurvePrivateKey) or not isinstance(
            signing_key.curve, ec.SECP256R1
        ):
            raise ConfigError("the Rekor v1 signing key must be an ECDSA P-256 private key")
        if isinstance(tree_id, bool) or not isinstance(tree_id, int):
            raise ConfigError("the Rekor v1 tree ID must be an integer")
        if not 0 < tree_id <= MAX_TREE_ID:
            raise ConfigError(f"the Rekor v1 tree ID must be between 1 and {MAX_TREE_ID}")
        suffix = f" - {tree_id}"
        if not log.origin.endswith(suffix) or not log.origin[: -len(suffix)]:
            raise ConfigError(
                f"the Rekor v1 log's origin must be '<host>{suffix}' (clients read the tree "
                f"ID from it); it is {log.origin!r}"
            )
        self._log = log
        self._key = signing_key
        self._tree_id = tree_id
        self._clock = clock
        public = signing_key.public_key()
        self._log_id = hashlib.sha256(spki_der(public)).digest()
        self._public_pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    # -- identity ----------------------------------------------------------------------

    @property
    def transparency_log(self) -> TransparencyLog:
        return self._log

    @property
    def log_id(self) -> bytes:
        """SHA-256 of the log key's DER SPKI: ``logID`` (hex) and the trusted root's keyId."""
        return self._log_id

    @property
    def tree_id(self) -> int:
        return self._tree_id

    def entry_id(self, uuid: bytes) -> str:
        """Upstream's 80-hex entryUUID: 16 hex digits of the tree ID, then the leaf hash."""
        return f"{self._tree_id:016x}{uuid.hex()}"

    def parse_entry_id(self, text: str) -> bytes:
        """The leaf hash named by a 64-hex UUID or an 80-hex entryUUID of this tree.

        Raises :class:`InvalidRequest` if malformed, :class:`NotFound` for another tree.
        """
        if not isinstance(text, str):
            raise InvalidRequest("an entry UUID is a hex string")
        if _UUID.fullmatch(text):
            return bytes.fromhex(text)
        if _ENTRY_ID.fullmatch(text):
            tree = int(text[:16], 16)
            if tree not in (0, self._tree_id):  # upstream reads tree ID 0 as "no tree"
                raise NotFound(f"entry {text} is not in tree {self._tree_id}")
            return bytes.fromhex(text[16:])
        raise InvalidRequest(
            f"invalid entry UUID {text[:100]!r}: expected 64 hex digits (UUID) or 80 "
            "(tree ID and UUID)"
        )

    # -- writing -----------------------------------------------------------------------

    async def create_entry(self, raw_body: bytes) -> tuple[str, dict[str, Any]]:
        """Validate and log a proposed entry; return ``(entryUUID, LogEntry answer)``.

        Raises ``InvalidRequest``/``VerificationError`` (400), :class:`EntryExists`
        (409), ``PayloadTooLarge`` (413, record beyond the log's entry size) or the
        log's ``Overloaded``/``Unavailable`` (503).
        """
        # Parsing and signature checks are CPU work (up to 100 signature checks for a
        # DSSE entry): keep them off the event loop.
        canonical = await asyncio.to_thread(_canonicalize, raw_body)
        integrated_time = int(utc(self._clock()).timestamp())
        record = encode_record(canonical.body, integrated_time, canonical.digests)
        result = await self._log.add(Entry(leaf=canonical.body, bundle=record, dedup=True))
        entry_id = self.entry_id(leaf_hash(canonical.body))
        if result.duplicate:
            raise EntryExists(entry_id)
        answer = self._log_entry(
            result.index, canonical.body, integrated_time, result.checkpoint, result.proof
        )
        return entry_id, {entry_id: answer}

    # -- entries -----------------------------------------------------------------------

    def _log_entry(
        self,
        index: int,
        body: bytes,
        integrated_time: int,
        checkpoint: Checkpoint,
        proof: Sequence[bytes],
    ) -> dict[str, Any]:
        anon: dict[str, Any] = {
            "body": b64(body),
            "integratedTime": integrated_time,
            "logID": self._log_id.hex(),
            "logIndex": index,
        }
        set_signature = self._key.sign(canonical_json(anon), ec.ECDSA(hashes.SHA256()))
        anon["verification"] = {
            "inclusionProof": {
                "checkpoint": checkpoint.note.decode("utf-8"),
                "hashes": [h.hex() for h in proof],
                "logIndex": index,
                "rootHash": checkpoint.root_hash.hex(),
                "treeSize": checkpoint.size,
            },
            "signedEntryTimestamp": b64(set_signature),
        }
        return anon

    def _read(
        self, index: int, checkpoint: Checkpoint, uuid: bytes | None = None
    ) -> dict[str, Any]:
        record = self._log.entry(index)
        try:
            parsed = decode_record(record)
        except (ValueError, RecursionError) as exc:
            raise LogIntegrityError(f"entry {index}", f"unreadable Rekor v1 record: {exc}") from exc
        actual = leaf_hash(parsed.body)
        if uuid is not None and actual != uuid:
            raise LogIntegrityError(
                f"entry {index}", f"its body hashes to {actual.hex()}, not {uuid.hex()}"
            )
        proof = self._log.inclusion_proof(index, checkpoint.size)
        entry = self._log_entry(index, parsed.body, parsed.integrated_time, checkpoint, proof)
        return {self.entry_id(actual): entry}

    def entry_by_index(self, index: int) -> dict[str, Any]:
        """``GET /api/v1/log/entries?logIndex=N``: 404 beyond the tree."""
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise InvalidRequest("logIndex must be a non-negative integer")
        checkpoint = self._log.checkpoint()
        if index >= checkpoint.size:
            raise NotFound(f"no entry at index {index}: the log has {checkpoint.size} entries")
        return self._read(index, checkpoint)

    def _find(self, uuid: bytes, checkpoint: Checkpoint) -> int | None:
        positions = [p for p in self._log.lookup(LEAF_NAMESPACE, uuid) if p < checkpoint.size]
        return positions[0] if positions else None

    def entry_by_uuid(self, entry_id: str) -> dict[str, Any]:
        """``GET /api/v1/log/entries/{entryUUID}``: 400 if malformed, 404 if unknown."""
        uuid = self.parse_entry_id(entry_id)
        checkpoint = self._log.checkpoint()
        index = self._find(uuid, checkpoint)
        if index is None:
            raise NotFound(f"no entry with UUID {uuid.hex()} in this log")
        return self._read(index, checkpoint, uuid)

    def retrieve(self, raw_body: bytes) -> list[dict[str, Any]]:
        """``POST /api/v1/log/entries/retrieve``: entries by entryUUIDs, entries or logIndexes.

        Entries not in the log are left out (not an error), as upstream does.
        """
        query = _parse_json(raw_body, "the search query")
        if not isinstance(query, dict):
            raise InvalidRequest("the search query must be a JSON object")
        unknown = sorted(set(query) - {"entryUUIDs", "logIndexes", "entries"})
        if unknown:
            raise InvalidRequest(
                f"unknown field {unknown[0]!r} in the search query (expected entryUUIDs, "
                "logIndexes or entries)"
            )
        lists: dict[str, list[Any]] = {}
        for name in ("entryUUIDs", "logIndexes", "entries"):
            value = query.get(name)
            if value is None:
                continue
            if not isinstance(value, list):
                raise InvalidRequest(f"{name} must be a JSON array")
            lists[name] = value
        total = sum(len(v) for v in lists.values())
        if total == 0:
            raise InvalidRequest("the search query names no entryUUIDs, logIndexes or entries")
        if total > MAX_SEARCH_QUERIES:
            raise TooManyQueries(
                f"the search query names {total} items; at most {MAX_SEARCH_QUERIES} are allowed"
            )
        uuids = [self._uuid_or_none(text) for text in lists.get("entryUUIDs", [])]
        for i, item in enumerate(lists.get("entries", [])):
            try:
                uuids.append(leaf_hash(v1_types.canonicalize(item, insert=False).body))
            except InvalidRequest as exc:
                raise InvalidRequest(f"entries[{i}]: {exc.message}") from exc
        indexes = []
        for value in lists.get("logIndexes", []):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidRequest("logIndexes must hold non-negative integers")
            indexes.append(value)
        checkpoint = self._log.checkpoint()
        results = []
        for uuid in uuids:
            index = self._find(uuid, checkpoint) if uuid is not None else None
            if index is not None:
                results.append(self._read(index, checkpoint, uuid))
        for index in indexes:
            if index < checkpoint.size:
                results.append(self._read(index, checkpoint))
        return results

    def _uuid_or_none(self, text: Any) -> bytes | None:
        try:
            return self.parse_entry_id(text)
        except NotFound:
            return None  # another tree: not here

    # -- search index ------------------------------------------------------------------

    def search_index(self, raw_body: bytes) -> list[str]:
        """``POST /api/v1/index/retrieve``: entryUUIDs matching hash, publicKey, email, subject.

        ``operator`` ``"or"`` (default) unites the criteria, ``"and"`` intersects
        them. Results are in log order.
        """
        query = _parse_json(raw_body, "the search query")
        if not isinstance(query, dict):
            raise InvalidRequest("the search query must be a JSON object")
        unknown = sorted(set(query) - {"hash", "publicKey", "email", "subject", "operator"})
        if unknown:
            raise InvalidRequest(
                f"unknown field {unknown[0]!r} in the search query (expected hash, publicKey, "
                "email, subject, operator)"
            )
        operator = query.get("operator") or "or"
        if operator not in ("and", "or"):
            raise InvalidRequest("operator must be 'and' or 'or'")
        criteria: list[tuple[str, bytes]] = []
        if query.get("hash") not in (None, ""):
            criteria.append((NS_HASH, _hash_key(_search_hash(query["hash"]))))
        if query.get("publicKey") is not None:
            criteria.append((NS_KEY, _search_key(query["publicKey"])))
        for name in ("email", "subject"):
            value = query.get(name)
            if value in (None, ""):
                continue
            if not isinstance(value, str) or len(value) > 512:
                raise InvalidRequest(f"{name} must be a string of at most 512 characters")
            if name == "email" and not re.fullmatch(r"[^@\s]+@[^@\s]+", value):
                raise InvalidRequest(f"email {value!r} is not an email address")
            criteria.append((NS_SAN, _san_key(value)))
        if not criteria:
            raise InvalidRequest(
                "the search query needs at least one of hash, publicKey, email or subject"
            )
        checkpoint = self._log.checkpoint()
        found: set[int] | None = None
        for namespace, key in criteria:
            positions = {p for p in self._log.lookup(namespace, key) if p < checkpoint.size}
            if found is None:
                found = positions
            elif operator == "and":
                found &= positions
            else:
                found |= positions
        ordered = sorted(found or ())
        return [self.entry_id(h) for h in self._leaf_hashes(ordered, checkpoint.size)]

    def _leaf_hashes(self, positions: Sequence[int], size: int) -> list[bytes]:
        """Leaf hashes at ``positions`` (ascending, < size), read from level-0 tiles."""
        out: list[bytes] = []
        tile_index, data = -1, b""
        for position in positions:
            if position // TILE_WIDTH != tile_index:
                tile_index = position // TILE_WIDTH
                ref = tile_for(0, tile_index, size)
                read = self._log.read(ref.path)
                if read is None or len(read) != ref.byte_size:
                    raise LogIntegrityError(ref.path, "level-0 tile missing or truncated")
                data = read
            offset = (position % TILE_WIDTH) * HASH_SIZE
            out.append(data[offset : offset + HASH_SIZE])
        return out

    # -- tree --------------------------------------------------------------------------

    def log_info(self) -> dict[str, Any]:
        """``GET /api/v1/log``: size, root, signed checkpoint and tree ID."""
        checkpoint = self._log.checkpoint()
        return {
            "rootHash": checkpoint.root_hash.hex(),
            "signedTreeHead": checkpoint.note.decode("utf-8"),
            "treeID": str(self._tree_id),
            "treeSize": checkpoint.size,
        }

    def public_key_pem(self, tree_id: str | None = None) -> bytes:
        """``GET /api/v1/log/publicKey``: the PEM key verifying checkpoints and SETs."""
        if tree_id not in (None, "") and tree_id != str(self._tree_id):
            raise InvalidRequest(
                f"unknown tree ID {str(tree_id)[:40]!r}; this log is {self._tree_id}"
            )
        return self._public_pem

    def consistency_proof(
        self, first_size: int, last_size: int, tree_id: str | None = None
    ) -> dict[str, Any]:
        """``GET /api/v1/log/proof``: hashes proving ``first_size`` is a prefix of ``last_size``."""
        if tree_id not in (None, "") and tree_id != str(self._tree_id):
            raise InvalidRequest(
                f"unknown tree ID {str(tree_id)[:40]!r}; this log is {self._tree_id}"
            )
        if first_size < 1 or last_size < 1:
            raise InvalidRequest("firstSize and lastSize must be at least 1")
        if first_size > last_size:
            raise InvalidRequest(
                f"firstSize({first_size}) must be less than or equal to lastSize({last_size})"
            )
        checkpoint = self._log.checkpoint()
        if last_size > checkpoint.size:
            raise InvalidRequest(
                f"lastSize({last_size}) is greater than the log's size ({checkpoint.size})"
            )
        hashes = self._log.consistency_proof(first_size, last_size)
        if last_size == checkpoint.size:
            root = checkpoint.root_hash
        else:
            (last_leaf,) = self._leaf_hashes([last_size - 1], checkpoint.size)
            path = self._log.inclusion_proof(last_size - 1, last_size)
            root = root_from_inclusion_proof(last_leaf, last_size - 1, last_size, path)
        return {"hashes": [h.hex() for h in hashes], "rootHash": root.hex()}


def _search_hash(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidRequest("hash must be a string")
    match = _SEARCH_HASH.fullmatch(value)
    if match is None:
        raise InvalidRequest(
            "hash must be a hex digest, optionally prefixed 'sha256:', 'sha384:', "
            "'sha512:' or 'sha1:'"
        )
    algorithm, digest = match.group(1), match.group(2)
    implied = _HASH_BY_LENGTH[len(digest)]
    if algorithm is not None and algorithm != implied:
        raise InvalidRequest(f"a {algorithm} digest is not {len(digest)} hex digits")
    return f"{implied}:{digest.lower()}"


def _search_key(value: Any) -> bytes:
    if not isinstance(value, dict):
        raise InvalidRequest("publicKey must be an object {format, content}")
    unknown = sorted(set(value) - {"format", "content", "url"})
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r} in publicKey")
    fmt = value.get("format")
    if fmt != "x509":
        raise InvalidRequest(
            f"publicKey.format {fmt!r} is not supported: this log holds x509 keys and "
            "certificates only"
        )
    content = value.get("content")
    if not isinstance(content, str) or not content:
        raise InvalidRequest("publicKey.content must be the base64 of a PEM key or certificate")
    try:
        pem = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest("publicKey.content is not valid base64") from exc
    return load_pem_verifier(pem, "publicKey.content").key_hash
