"""The certificate-transparency log service: RFC 6962 submissions on the shared log engine.

:class:`CTLogService` is the domain logic behind ``/ct/v1/*`` (no web framework):

* ``add_chain`` / ``add_pre_chain`` validate a chain (see
  :mod:`sigstack.services.ctlog.submission`), pick a timestamp, append the entry to
  the transparency log and only then sign and return the SCT;
* ``get_roots`` lists the accepted roots; ``get_sth`` derives the RFC 6962 signed
  tree head from the latest stored checkpoint (:mod:`.sthnote`);
  ``get_sth_consistency`` proves two tree heads consistent;
* ``read_checkpoint``, ``read_tile``, ``read_data_tile`` and ``get_issuer`` serve
  the c2sp.org/static-ct-api monitoring read path from the engine and storage.

Guarantees:

* An SCT is signed only after ``TransparencyLog.add`` has returned, i.e. after the
  entry is durably sequenced and covered by a signed checkpoint (architecture rule
  4): a client never holds an SCT for an entry the log could lose. The merge delay is
  therefore zero.
* The Merkle leaf is RFC 6962's ``MerkleTreeLeaf`` over the ``TimestampedEntry`` the
  SCT signs, so the SCT, the tree and the tiles agree byte for byte. The entry
  bundle holds the static-ct-api ``TileLeaf`` (entry, precertificate, issuer
  fingerprints).
* Every issuer a ``TileLeaf`` names is durably written under ``issuer/<hex sha256>``
  in the log's storage BEFORE the entry is submitted (static-ct-api "Issuers").
  Issuer objects are content-addressed, so a rewrite is idempotent, a failed
  submission leaves only harmless objects behind, and each one is written once per
  process.
* Timestamps come from the log's :class:`~.sthnote.MillisClock`, shared with the
  checkpoint signer: an SCT or tree head never carries a timestamp lower than one
  issued before it, even when the wall clock steps back, and a tree head is never
  older than an SCT for an entry it covers.
* Failures are ``SigstackError`` subclasses: invalid submissions raise
  ``InvalidRequest``/``VerificationError`` (400); engine back-pressure
  ``Overloaded`` (503, ``Retry-After``); a closed or stopped log, or a storage
  failure (nothing was logged, retry), ``Unavailable`` (503); a stored checkpoint
  that does not verify ``LogIntegrityError`` (500).

Construction: the stack calls :func:`create_ctlog` once at init time (a new empty
log; an error if one exists) and :func:`open_ctlog` on every start; see their
docstrings. Both wire the same RFC 6962 signer, verifier and clock the service uses.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sigstack.core.clock import Clock
from sigstack.core.errors import (
    InvalidRequest,
    LogIntegrityError,
    NotFound,
    SigstackError,
    StorageError,
    Unavailable,
    VerificationError,
)
from sigstack.core.pki import cert_der
from sigstack.core.sct import SignedCertificateTimestamp, merkle_tree_leaf, sign_sct
from sigstack.core.tiles import TILE_WIDTH, bundle_for, decode_bundle
from sigstack.log.engine import LEAF_NAMESPACE, Entry, TransparencyLog
from sigstack.log.storage import LogStorage
from sigstack.services.ctlog.config import CTLogConfig
from sigstack.services.ctlog.sthnote import (
    MillisClock,
    RFC6962NoteSigner,
    RFC6962NoteVerifier,
    SignedTreeHead,
    sth_from_checkpoint,
)
from sigstack.services.ctlog.submission import (
    ValidatedChain,
    issuer_objects,
    tile_leaf,
    tile_leaf_parts,
    timestamped_entry,
    validate_chain,
)

log = logging.getLogger("sigstack.ctlog")


_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Accepted:
    """The outcome of an accepted submission."""

    sct: SignedCertificateTimestamp
    index: int
    """0-based index of the entry in the log."""
    timestamped_entry: bytes
    """The RFC 6962 ``TimestampedEntry`` the SCT signs."""
    leaf: bytes
    """The Merkle leaf data (``MerkleTreeLeaf``); its hash is SHA-256(0x00 || leaf)."""


MAX_GET_ENTRIES = 256
"""Most entries one get-entries answer holds (clients page with start/end)."""


def _u24(data: bytes) -> bytes:
    return len(data).to_bytes(3, "big") + data


def log_signer(config: CTLogConfig, timestamps: MillisClock) -> RFC6962NoteSigner:
    """The checkpoint signer of the CT log described by ``config``."""
    return RFC6962NoteSigner(config.origin, config.private_key, timestamps)


def log_verifier(config: CTLogConfig, timestamps: MillisClock | None = None) -> RFC6962NoteVerifier:
    """The checkpoint verifier of the CT log; verified timestamps feed ``timestamps``."""
    return RFC6962NoteVerifier(config.origin, config.public_key, timestamps)


class CTLogService:
    """RFC 6962 submission and read logic over an open :class:`TransparencyLog`.

    ``log`` must have been built with :func:`log_signer` over the same ``timestamps``
    clock passed here (use :func:`open_ctlog`, which does both); the wall clock inside
    ``timestamps`` also decides certificate expiry. ``storage`` is the log's storage:
    issuer certificates are written to and served from it (without it, no issuer
    objects are kept and ``get_issuer`` finds nothing).
    """

    def __init__(
        self,
        config: CTLogConfig,
        log: TransparencyLog,
        *,
        timestamps: MillisClock | None = None,
        storage: LogStorage | None = None,
    ) -> None:
        self._config = config
        self._log = log
        self._timestamps = timestamps if timestamps is not None else MillisClock()
        self._verifier = log_verifier(config, self._timestamps)
        self._roots_der = tuple(cert_der(r) for r in config.roots)
        self._storage = storage
        self._stored_issuers: set[str] = set()  # keys known durable in this process
        self._issuer_cache: dict[str, bytes] = {}
        self._closed = False
        self._sth_cache: tuple[bytes, SignedTreeHead] | None = None

    # --- properties the API layer and the stack use ------------------------------------

    @property
    def config(self) -> CTLogConfig:
        """The service's configuration."""
        return self._config

    @property
    def log(self) -> TransparencyLog:
        """The underlying transparency log."""
        return self._log

    # --- RFC 6962 operations -----------------------------------------------------------

    async def add_chain(self, chain: Sequence[bytes]) -> SignedCertificateTimestamp:
        """RFC 6962 4.1: log a final certificate chain (DER, leaf first); return its SCT."""
        return (await self.submit(chain, precert=False)).sct

    async def add_pre_chain(self, chain: Sequence[bytes]) -> SignedCertificateTimestamp:
        """RFC 6962 4.2: log a precertificate chain (DER, leaf first); return its SCT."""
        return (await self.submit(chain, precert=True)).sct

    async def submit(self, chain: Sequence[bytes], *, precert: bool) -> Accepted:
        """Validate, log and sign one submission; the SCT exists only once it is logged."""
        self._require_open()
        validated = self.validate(chain, precert=precert)
        timestamp = self._timestamps.now_ms()
        entry_bytes = timestamped_entry(validated, timestamp)
        leaf = merkle_tree_leaf(entry_bytes)
        await self._store_issuers(validated)
        try:
            integrated = await self._log.add(
                Entry(leaf=leaf, bundle=tile_leaf(validated, entry_bytes))
            )
        except StorageError as exc:
            # Transient by the engine's contract: nothing was acknowledged; retryable.
            raise Unavailable(f"the CT log could not record the entry: {exc.message}") from exc
        except SigstackError:
            raise
        except Exception as exc:
            log.exception("ctlog: the log engine failed to integrate an entry")
            raise Unavailable("the CT log could not record the entry; retry later") from exc
        sct = sign_sct(self._config.private_key, self._config.log_id, entry_bytes)
        return Accepted(sct, integrated.index, entry_bytes, leaf)

    def validate(self, chain: Sequence[bytes], *, precert: bool) -> ValidatedChain:
        """Validate a submission without logging it (raises on any problem)."""
        return validate_chain(
            chain,
            precert=precert,
            roots=self._config.roots,
            now=self._now(),
            max_length=self._config.max_chain_length,
        )

    def get_roots(self) -> list[bytes]:
        """RFC 6962 4.7: DER of every accepted root, in configuration order."""
        return list(self._roots_der)

    def get_sth(self) -> SignedTreeHead:
        """RFC 6962 4.3: the latest signed tree head, read from the stored checkpoint."""
        self._require_open()
        note = self._log.checkpoint().note
        cached = self._sth_cache
        if cached is not None and cached[0] == note:
            return cached[1]
        try:
            sth = sth_from_checkpoint(note, self._verifier)
        except VerificationError as exc:
            log.error("ctlog: the stored checkpoint does not verify: %s", exc.message)
            raise LogIntegrityError("checkpoint", exc.message) from exc
        self._sth_cache = (note, sth)  # a note verified once stays verified
        return sth

    def get_sth_consistency(self, first: int, second: int) -> list[bytes]:
        """RFC 6962 4.4: consistency proof between tree sizes ``first <= second``."""
        self._require_open()
        return self._log.consistency_proof(first, second)

    def get_entries(self, start: int, end: int) -> list[tuple[bytes, bytes]]:
        """RFC 6962 4.6: ``(leaf_input, extra_data)`` of entries ``start..end`` (inclusive).

        At most ``MAX_GET_ENTRIES`` are returned (the RFC lets a log return fewer);
        ``end`` past the tree is clamped to its last entry. Reads each entry bundle
        once.
        """
        self._require_open()
        size = self._log.checkpoint().size
        if start < 0 or end < start:
            raise InvalidRequest(f"start={start} and end={end} must satisfy 0 <= start <= end")
        if start >= size:
            raise InvalidRequest(f"start={start} is not below the tree size {size}")
        end = min(end, size - 1, start + MAX_GET_ENTRIES - 1)
        entries = []
        for bundle in range(start // TILE_WIDTH, end // TILE_WIDTH + 1):
            records = self._bundle(bundle, size)
            first = max(start, bundle * TILE_WIDTH)
            last = min(end, bundle * TILE_WIDTH + len(records) - 1)
            for position in range(first, last + 1):
                entries.append(
                    self._rfc6962_entry(records[position - bundle * TILE_WIDTH], position)
                )
        return entries

    def get_proof_by_hash(self, leaf_hash: bytes, tree_size: int) -> tuple[int, list[bytes]]:
        """RFC 6962 4.5: the first position of ``leaf_hash`` in the tree of ``tree_size``
        and its audit path."""
        self._require_open()
        if len(leaf_hash) != 32:
            raise InvalidRequest("hash must be a 32-byte SHA-256 leaf hash")
        size = self._log.checkpoint().size
        if not 1 <= tree_size <= size:
            raise InvalidRequest(f"tree_size={tree_size} is not between 1 and {size}")
        positions = [p for p in self._log.lookup(LEAF_NAMESPACE, leaf_hash) if p < tree_size]
        if not positions:
            raise NotFound(f"no entry with that leaf hash in the tree of size {tree_size}")
        return positions[0], self._log.inclusion_proof(positions[0], tree_size)

    def get_entry_and_proof(
        self, leaf_index: int, tree_size: int
    ) -> tuple[bytes, bytes, list[bytes]]:
        """RFC 6962 4.8: ``(leaf_input, extra_data, audit_path)`` of one entry."""
        self._require_open()
        size = self._log.checkpoint().size
        if not 1 <= tree_size <= size or not 0 <= leaf_index < tree_size:
            raise InvalidRequest(
                f"need 0 <= leaf_index < tree_size <= {size} (got {leaf_index}, {tree_size})"
            )
        records = self._bundle(leaf_index // TILE_WIDTH, size)
        leaf, extra = self._rfc6962_entry(records[leaf_index % TILE_WIDTH], leaf_index)
        return leaf, extra, self._log.inclusion_proof(leaf_index, tree_size)

    def _bundle(self, bundle: int, size: int) -> list[bytes]:
        ref = bundle_for(bundle, size)
        data = self._log.read(ref.path)
        if data is None:
            raise LogIntegrityError(ref.path, "entry bundle missing")
        try:
            return decode_bundle(data, ref.width)
        except InvalidRequest as exc:
            raise LogIntegrityError(ref.path, exc.message) from exc

    def _rfc6962_entry(self, record: bytes, position: int) -> tuple[bytes, bytes]:
        """``(leaf_input, extra_data)`` for a stored TileLeaf (RFC 6962 4.6)."""
        try:
            parts = tile_leaf_parts(record)
        except VerificationError as exc:
            raise LogIntegrityError(f"entry {position}", exc.message) from exc
        chain = b"".join(_u24(self._issuer_der(fp, position)) for fp in parts.issuer_fingerprints)
        if parts.precertificate is None:
            extra = _u24(chain)  # certificate_chain
        else:
            extra = _u24(parts.precertificate) + _u24(chain)  # PrecertChainEntry
        return merkle_tree_leaf(parts.timestamped_entry), extra

    def _issuer_der(self, fingerprint: bytes, position: int) -> bytes:
        key = f"issuer/{fingerprint.hex()}"
        cached = self._issuer_cache.get(key)
        if cached is not None:
            return cached
        der = self._storage.get(key) if self._storage is not None else None
        if der is None:
            raise LogIntegrityError(key, f"issuer certificate of entry {position} is missing")
        self._issuer_cache[key] = der
        return der

    # --- static-ct-api monitoring reads (c2sp.org/static-ct-api) --------------------------

    def read_checkpoint(self) -> bytes:
        """The latest checkpoint note (the static-ct-api ``/checkpoint``)."""
        self._require_open()
        return self._log.checkpoint().note

    def read_tile(self, path: str) -> bytes:
        """A Merkle hash tile, ``tile/<L>/<N>[.p/<W>]``; ``NotFound`` beyond the tree."""
        self._require_open()
        if not path.startswith("tile/") or path.startswith("tile/entries/"):
            raise InvalidRequest(f"{path!r} is not a hash tile path (tile/<L>/<N>[.p/<W>])")
        data = self._log.read(path)
        if data is None:
            raise NotFound(f"{path} is not covered by the current checkpoint")
        return data

    def read_data_tile(self, index_path: str) -> bytes:
        """The static-ct-api data tile ``tile/data/<index_path>``: TileLeaf records.

        The engine stores entry bundles with C2SP tlog-tiles uint16 length prefixes;
        a static-ct-api data tile is the same TileLeaf records concatenated (each is
        self-delimiting), so the prefixes are stripped here.
        """
        self._require_open()
        bundle = self._log.read(f"tile/entries/{index_path}")
        if bundle is None:
            raise NotFound(f"tile/data/{index_path} is not covered by the current checkpoint")
        try:
            records = decode_bundle(bundle)
        except InvalidRequest as exc:
            raise LogIntegrityError(f"tile/entries/{index_path}", exc.message) from exc
        return b"".join(records)

    def get_issuer(self, fingerprint_hex: str) -> bytes:
        """DER of the issuer whose SHA-256 is ``fingerprint_hex`` (lowercase hex)."""
        if not _HEX64.fullmatch(fingerprint_hex):
            raise InvalidRequest("an issuer fingerprint is 64 lowercase hex digits")
        storage = self._storage
        der = storage.get(f"issuer/{fingerprint_hex}") if storage is not None else None
        if der is None:
            raise NotFound(f"no issuer certificate with fingerprint {fingerprint_hex}")
        return der

    async def check_health(self) -> None:
        """Raise ``Unavailable`` unless the log accepts entries and its checkpoint verifies."""
        self._require_open()
        self._log.check_accepting()
        try:
            self.get_sth()
        except SigstackError as exc:
            raise Unavailable(f"CT log is not serving: {exc.message}") from exc
        except Exception as exc:
            raise Unavailable("CT log is not serving: its checkpoint cannot be read") from exc

    async def close(self) -> None:
        """Stop accepting submissions and close the log (idempotent).

        The caller of :func:`open_ctlog` owns the service and calls this; the HTTP app
        never does.
        """
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._log.close)

    # --- internals ---------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._closed:
            raise Unavailable("CT log is closed")

    def _now(self) -> dt.datetime:
        now = self._timestamps.now()
        if now.tzinfo is None:
            now = now.replace(tzinfo=dt.UTC)
        return now

    async def _store_issuers(self, validated: ValidatedChain) -> None:
        storage = self._storage
        if storage is None:
            return
        objects = {
            k: v for k, v in issuer_objects(validated).items() if k not in self._stored_issuers
        }
        if not objects:
            return
        try:
            await asyncio.to_thread(storage.put_many, objects)
        except StorageError as exc:
            raise Unavailable(
                f"the CT log could not store the issuer certificates: {exc.message}"
            ) from exc
        except SigstackError:
            raise
        except Exception as exc:
            log.exception("ctlog: storing issuer certificates failed")
            raise Unavailable("the log could not store the issuer certificates") from exc
        self._stored_issuers.update(objects)


def create_ctlog(config: CTLogConfig, storage: LogStorage, *, clock: Clock | None = None) -> None:
    """Create the CT log in ``storage`` (once, at init time; an error if one exists)."""
    timestamps = MillisClock(clock) if clock is not None else MillisClock()
    TransparencyLog.create(storage, log_signer(config, timestamps), config.origin)


async def open_ctlog(
    config: CTLogConfig,
    storage: LogStorage,
    *,
    clock: Clock | None = None,
    **log_options: Any,
) -> CTLogService:
    """Open the existing CT log in ``storage`` and return the service over it.

    Verifies the stored state (the engine fails closed), raises the timestamp floor
    to the stored checkpoint's timestamp so a clock that stepped back across a
    restart cannot produce older SCTs or tree heads, and starts the sequencer.
    ``log_options`` go to ``TransparencyLog`` (e.g. ``policy=BatchPolicy(...)``).
    """
    timestamps = MillisClock(clock) if clock is not None else MillisClock()
    transparency_log = TransparencyLog(
        storage,
        log_signer(config, timestamps),
        config.origin,
        verifier=log_verifier(config, timestamps),
        **log_options,
    )
    await asyncio.to_thread(transparency_log.open)
    service = CTLogService(config, transparency_log, timestamps=timestamps, storage=storage)
    try:
        service.get_sth()  # verifies the checkpoint and raises the clock's floor
    except BaseException:
        await service.close()
        raise
    return service
