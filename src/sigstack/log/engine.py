"""The transparency-log engine shared by Rekor v2 and the CT log.

One :class:`TransparencyLog` owns one log in one :class:`~sigstack.log.storage.LogStorage`:
it sequences submitted entries in batches, stores them as C2SP tiles and entry
bundles, signs a C2SP checkpoint over each new tree and hands every submitter its
index, the checkpoint and an inclusion proof. It also serves proofs and the
static read path (checkpoint, tiles, bundles).

Guarantees
----------
* An entry is acknowledged (its future resolves) only after the tiles and bundle
  holding it AND a checkpoint covering it are durable.
* A checkpoint is signed only after everything it commits to is durable, and
  the engine never publishes two checkpoints that are inconsistent: every new
  tree is the previous tree plus a batch, and after any storage failure the
  engine re-derives its state from the durable checkpoint (verifying it) before
  it signs anything again.
* ``open()`` fails closed: a missing, unverifiable or foreign checkpoint, or
  tiles that do not add up to its root, raise
  :class:`~sigstack.core.errors.LogIntegrityError` naming what disagrees. So does
  a checkpoint rolled back behind the storage's high-water mark (an older
  checkpoint restored while the log was stopped) or forking from it: the mark is
  the last checkpoint the log committed (``LogStorage.read_high_water``), and
  signing on from an older one would publish a tree inconsistent with it.
* ``open()`` also proves that the signer holds the verifier's private key (it
  re-signs the body of the checkpoint it just verified and checks the signature)
  before anything new is signed.
* Exactly one sequencer thread mutates the log; ``storage.acquire_writer`` keeps a
  second engine (or process) off the same storage, and the engine calls
  ``storage.check_writer`` right before it signs each checkpoint: it never signs
  while it does not hold the lease. A log that loses its lease stops signing
  (alone: for good, ``Unavailable`` naming why; shared: it becomes a follower).

Commit protocol (one batch, leaves ``[a, n)``) and what a crash at each step means
---------------------------------------------------------------------------------
1. **Sequence.** Take up to ``max_size`` pending entries (group commit: under load,
   what accumulated during the previous batch is the next batch); assign indexes
   ``a..n-1`` in arrival order, in memory only.
   *Crash:* nothing is stored; no entry was acknowledged; clients retry.
2. **Hash.** Leaf hashes go through the in-memory :class:`CompactRange`; every node
   it completes at a tile level (0, 8, 16...) is appended to that level's
   rightmost tile, and every tile it fills gets its inner nodes (sublevels 1-7,
   :func:`inner_nodes_path`) from the same hashes; entries are appended to the
   rightmost entry bundle. The new
   root and every entry's inclusion proof are derived from the same nodes, and
   one proof is checked against the root before anything is written.
   *Crash:* as in 1.
3. **Store data.** ``put_many`` writes the tiles, inner nodes and bundles the
   batch completed and the new partial ones, then ``index_add`` records each entry's leaf hash
   (and the log's search keys); both return once durable.
   *Crash or error:* storage may hold objects and index rows no checkpoint covers
   (names beyond the checkpoint, partial widths never checkpointed, positions past
   its size; the index is truncated to the checkpoint whenever it is reloaded).
   They are never served (``read`` only serves what the current checkpoint
   covers) and the next batch rewrites them. An object covered by the old
   checkpoint is only ever rewritten with identical bytes (its content is a
   function of covered entries), so the old checkpoint stays valid. Entries are not acknowledged.
4. **Sign** the checkpoint ``(origin, n, root)`` with the signer, in memory, after
   ``check_writer`` confirmed the lease (a lost lease fails the batch unsigned).
   *Crash:* as in 3; the signed note never left the process.
5. **Commit.** ``swap_checkpoint(old, new)``: compare-and-swap, durable on return.
   *Crash:* the stored checkpoint is the old or the new one, both consistent with
   everything stored. If it is the new one, the entries are logged although
   their submitters got no answer (a retry may log a duplicate).
   *Error:* the batch fails; the engine reloads whatever checkpoint storage now
   holds (old or new) and re-persists it before going on, so a checkpoint that
   readers might have seen is durable before the tree grows past it.
6. **Publish.** The in-memory current checkpoint becomes the new one (reads and
   proofs now see size ``n``) and each future resolves with
   ``Integrated(index, checkpoint, proof)``.

After a failure in 3-5 the batch's futures fail with
:class:`~sigstack.core.errors.StorageError`; if storage is still failing, later
batches fail fast (with a growing pause) until it recovers. If the reloaded state
does not add up (``LogIntegrityError``), the engine stops: it refuses to sign over
state it cannot verify, and ``submit`` raises ``Unavailable`` naming the problem.

Several processes, one log (shared mode)
----------------------------------------
With ``shared=`` (a :class:`~sigstack.log.storage.SharedQueue`, e.g. PostgreSQL's),
any number of processes open the same log; exactly one of them, the holder of the
writer lease, sequences. Every process:

* accepts entries: ``submit`` queues them in the shared queue (grouped: what
  accumulates while one insert is in flight goes in the next) and the future
  resolves once a checkpoint covering the entry is committed, read back from the
  queue in one snapshot with that checkpoint (see ``SharedQueue.results``), with
  an inclusion proof this process derives from the stored tiles, after checking
  that the stored leaf at that position is the entry's. An entry not integrated
  within ``ClusterPolicy.wait_timeout`` fails with ``Unavailable`` (it may still be
  logged later; identical entries are deduplicated when they are ``dedup``);
* serves reads and proofs from storage at its view of the checkpoint, which it
  refreshes when notified (or every ``ClusterPolicy.refresh`` seconds). It adopts a
  stored checkpoint only after verifying its signature and origin AND that the
  checkpoint it served before is a prefix of it (recomputed from the stored
  tiles): a process never serves two inconsistent checkpoints, and stops
  (``LogIntegrityError``) if storage ever shows it a fork or a rollback;
* as a follower, tries to take the lease every ``ClusterPolicy.lease_retry``
  seconds. The one that gets it recovers exactly like ``open()`` (verify the
  checkpoint and tiles, check it is consistent with what it served, re-persist
  the checkpoint through the lease, truncate the index and reset provisional queue
  assignments), then a pump thread claims queued entries into the sequencer's
  batches. Before the checkpoint of a batch is signed, each queued entry's
  position is recorded in the queue (provisional until that checkpoint commits).
  A sequencer that loses its lease (``check_writer`` says so, before a batch or on
  the idle heartbeat) stops sequencing, drops what it had claimed (the next term
  claims it again) and becomes a follower.

Crash of a frontend: its queued entries are still logged; its submitters get no
answer. Crash of the sequencer: the database session ends, the lease is free, a
follower takes it within about ``lease_retry`` seconds and resumes from the last
committed checkpoint; entries of the lost batch were never acknowledged and are
sequenced again from the queue.

Performance: per batch, one ``put_many`` (a handful of objects) and one
checkpoint swap; hashing is about two SHA-256 per entry plus O(log n) per batch;
proofs for a batch cost O(batch * log n) list lookups and no I/O. Nothing is
O(tree size). Proofs requested later (``inclusion_proof``, ``consistency_proof``)
read tiles through an LRU cache of expanded tiles (level 0 and the levels above
apart). A full tile that is not cached is read with its stored inner nodes, so
loading it costs two reads and one hash (its root, compared with the hash the
parent tile records; inner nodes that disagree, or a log written before they
were stored, fall back to hashing the tile: 255 hashes). An inclusion proof
looks each tile up once, not once per node.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sigstack.core.errors import (
    ConfigError,
    Conflict,
    InvalidRequest,
    LogIntegrityError,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    SigstackError,
    StorageError,
    Unavailable,
    VerificationError,
)
from sigstack.core.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    AppendedNodes,
    CompactRange,
    consistency_proof,
    leaf_hash,
    node_hash,
    range_nodes,
    subtree_hash,
    verify_inclusion,
)
from sigstack.core.note import (
    CheckpointBody,
    NoteSigner,
    NoteVerifier,
    format_checkpoint,
    open_note,
    parse_checkpoint,
    sign_note,
)
from sigstack.core.tiles import (
    INNER_NODES_BYTES,
    MAX_ENTRY_SIZE,
    TILE_HEIGHT,
    TILE_WIDTH,
    TileRef,
    bundle_for,
    decode_bundle,
    entries_path,
    inner_nodes_path,
    parse_path,
    partial_width,
    tile_for,
    tile_levels,
    tile_path,
    tile_width,
)
from sigstack.log.receipt import Receipt, fail_all, finish_all, start_all, wait_async
from sigstack.log.storage import (
    BACKGROUND_YIELD_SECONDS,
    CHECKPOINT_EVENT,
    CHECKPOINT_KEY,
    ENTRIES_EVENT,
    LEAF_NAMESPACE,
    Assignment,
    IndexRow,
    LogStorage,
    PackBuffer,
    QueuedEntry,
    SharedQueue,
    TilePack,
)

__all__ = [
    "LEAF_NAMESPACE",
    "BatchPolicy",
    "Checkpoint",
    "ClusterPolicy",
    "Entry",
    "Integrated",
    "TransparencyLog",
]

_log = logging.getLogger(__name__)


IndexKeys = Callable[[bytes], Sequence[tuple[str, bytes]]]
"""A log's search keys for one stored bundle record: ``[(namespace, key), ...]``."""

_REINDEX_CHUNK = 64 * TILE_WIDTH

_RIGHT_NODES = 256
"""Incomplete right-subtree hashes remembered (a few tree sizes' worth)."""

_BACKOFF_MIN = 0.05
_BACKOFF_MAX = 1.0


# --- public value types --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry.

    ``leaf`` is the Merkle leaf data (leaf hash = SHA-256(0x00 || leaf));
    ``bundle`` is what the C2SP entry bundle stores for it (default: ``leaf``),
    at most 65535 bytes. With ``dedup``, an entry whose leaf is already in the log
    is not appended again: it answers with the position it already has.
    """

    leaf: bytes
    bundle: bytes | None = None
    dedup: bool = False


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed tree head: origin, size, root hash and the full signed note."""

    origin: str
    size: int
    root_hash: bytes
    note: bytes


@dataclass(slots=True)
class Integrated:
    """Where an entry landed: its index, the checkpoint that covers it and the
    inclusion proof (leaf hash -> ``checkpoint.root_hash``, RFC 6962 order)."""

    index: int
    checkpoint: Checkpoint
    proof: list[bytes]
    duplicate: bool = False
    """True when a ``dedup`` entry was already in the log (nothing was appended)."""


@dataclass(frozen=True)
class BatchPolicy:
    """How the sequencer forms batches.

    ``max_size`` (default 1024)
        Most entries integrated (and covered by one checkpoint) at once. Larger
        batches mean fewer storage round trips and signatures per entry.
    ``max_age`` (default 0.010 s)
        Once the sequencer holds at least one entry, it waits at most this long
        (measured from the oldest pending entry's arrival) for the batch to fill.
        Under load entries that arrived during the previous integration are
        already older than this, so the next batch starts at once (group commit).
    ``max_pending`` (default 50,000)
        Entries that may wait to be sequenced; ``submit`` raises ``Overloaded``
        beyond it (a second of load at the engine's target rate).
    """

    max_size: int = 1024
    max_age: float = 0.010
    max_pending: int = 50_000

    def __post_init__(self) -> None:
        if not isinstance(self.max_size, int) or self.max_size < 1:
            raise ConfigError(f"batch max_size must be a positive integer, not {self.max_size!r}")
        if not isinstance(self.max_age, int | float) or not 0 <= self.max_age <= 60:
            raise ConfigError(f"batch max_age must be 0..60 seconds, not {self.max_age!r}")
        if not isinstance(self.max_pending, int) or self.max_pending < 1:
            raise ConfigError(
                f"batch max_pending must be a positive integer, not {self.max_pending!r}"
            )


@dataclass(frozen=True)
class ClusterPolicy:
    """How a log shared by several processes (``shared=``) behaves.

    ``lease_retry`` (default 1.0 s)
        How often a follower tries to take the writer lease: after a sequencer
        dies, another process sequences within about this long.
    ``refresh`` (default 1.0 s)
        Longest pause between two reads of the stored checkpoint and of the
        results of queued entries when notifications are lost (they usually wake
        the process at once).
    ``wait_timeout`` (default 30 s)
        How long a submitted entry may wait in the queue before ``submit``'s future
        fails with ``Unavailable`` (no sequencer, or a backlog).
    ``retention`` (default 300 s)
        Answered queue rows are deleted after this (longer than ``wait_timeout``).
    ``claim_size`` (default 4096)
        Most queued entries the sequencer claims at once.
    """

    lease_retry: float = 1.0
    refresh: float = 1.0
    wait_timeout: float = 30.0
    retention: float = 300.0
    claim_size: int = 4096

    def __post_init__(self) -> None:
        for name in ("lease_retry", "refresh"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.01 <= value <= 600:
                raise ConfigError(f"cluster {name} must be 0.01..600 seconds, not {value!r}")
        if not isinstance(self.wait_timeout, int | float) or not 0.1 <= self.wait_timeout <= 3600:
            raise ConfigError(
                f"cluster wait_timeout must be 0.1..3600 seconds, not {self.wait_timeout!r}"
            )
        if not isinstance(self.retention, int | float) or self.retention <= self.wait_timeout:
            raise ConfigError("cluster retention must be longer than wait_timeout")
        if not isinstance(self.claim_size, int) or self.claim_size < 1:
            raise ConfigError(f"cluster claim_size must be positive, not {self.claim_size!r}")


SEQUENCER = "sequencer"
"""Role of the process that holds the writer lease (``TransparencyLog.role``)."""
FOLLOWER = "follower"
"""Role of a process of a shared log that does not hold the lease."""
STOPPED = "stopped"
"""Role of a log that stopped for good (fatal error) or was closed."""

RoleCallback = Callable[[str], None]
"""``on_role(role)``: called (from an engine thread) whenever the role changes."""


# --- internals -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    entry: Entry
    record: bytes
    future: Receipt[Integrated]
    arrival: float
    ticket: int | None = None  # shared mode: the entry's row in the shared queue


@dataclass(slots=True)
class _Waiter:
    """A submission of this process waiting in the shared queue."""

    leaf_hash: bytes
    future: Receipt[Integrated]
    deadline: float


class _LeaseLost(Unavailable):
    """The writer lease is gone: nothing may be signed (internal)."""


@dataclass(slots=True)
class _Edge:
    """The sequencer's view of the right edge of the tree (owned by one thread)."""

    size: int
    rng: CompactRange
    tiles: list[bytearray] = field(default_factory=list)  # partial tile content per level
    bundle: bytearray = field(default_factory=bytearray)  # partial entry bundle content
    # Per tile level, the complete nodes at sublevels 1..7 of its rightmost unfinished
    # tile (index 0 is sublevel 1): what inner_nodes_path stores once the tile fills.
    inner: list[list[bytearray]] = field(default_factory=list)


def _sublevel_offsets(width: int) -> tuple[int, ...]:
    """Byte offset of each sublevel 0..8 in a ``_Tile``'s ``nodes``, then the end."""
    offsets = [0]
    for sub in range(TILE_HEIGHT + 1):
        offsets.append(offsets[-1] + (width >> sub) * HASH_SIZE)
    return tuple(offsets)


_FULL_OFFSETS = _sublevel_offsets(TILE_WIDTH)
_PACKED_OFFSETS = (*_FULL_OFFSETS[: TILE_HEIGHT + 1], _FULL_OFFSETS[TILE_HEIGHT])
"""A ``TilePack`` record: sublevels 0..7 as in a full tile, no root (sublevel 8 empty)."""


@dataclass(slots=True)
class _Tile:
    """One hash tile and every complete node under it, in one buffer.

    ``nodes[base:]`` is sublevel 0 (the tile itself), then 1, ... 8 (the root, if
    the tile is full), each left to right; ``offsets[s]`` is where sublevel ``s``
    starts, counted from ``base``. ``nodes`` is the tile's own bytes (``base`` 0) or
    the buffer of a ``TilePack`` that holds many tiles.
    """

    nodes: PackBuffer  # slices are bytes
    offsets: tuple[int, ...]
    base: int = 0

    def node(self, sublevel: int, position: int) -> bytes | None:
        """The node ``position`` from the left at ``sublevel``; None if incomplete."""
        start = self.offsets[sublevel] + position * HASH_SIZE
        if start >= self.offsets[sublevel + 1]:
            return None
        start += self.base
        return self.nodes[start : start + HASH_SIZE]

    def sublevel(self, sublevel: int) -> bytes:
        """Every complete node at ``sublevel``, concatenated."""
        base = self.base
        return self.nodes[base + self.offsets[sublevel] : base + self.offsets[sublevel + 1]]


_CHECK_YIELD_MASK = 63
"""The background check of tile packs sleeps every 64 records (see
:data:`~sigstack.log.storage.BACKGROUND_YIELD_SECONDS`)."""

_TileKey = tuple[int, int, int]  # (level, index, width): one tile as one tree size has it


class _TileCache:
    """Thread-safe LRU of expanded hash tiles, keyed by ``(level, index, width)``.

    Tiles above level 0 have an LRU of their own (``upper``): there are 256 times
    fewer of them and every proof at a tree size needs the same few, so random
    lookups over a large log, which miss on level 0, do not evict them (at 10
    million entries all 154 of them fit; the default of 1,024 covers 67 million).

    Tiles covered by a published checkpoint never change content, so entries
    never go stale; the cache is still cleared after a failed batch because
    objects written by it (never published) may be rewritten.
    """

    def __init__(self, capacity: int, upper: int) -> None:
        self._capacity = (capacity, upper)
        self._items: tuple[
            collections.OrderedDict[_TileKey, _Tile], collections.OrderedDict[_TileKey, _Tile]
        ] = (collections.OrderedDict(), collections.OrderedDict())
        self._lock = threading.Lock()

    def get(self, key: _TileKey) -> _Tile | None:
        items = self._items[key[0] > 0]
        with self._lock:
            tile = items.get(key)
            if tile is not None:
                items.move_to_end(key)
            return tile

    def put(self, key: _TileKey, tile: _Tile) -> None:
        upper = key[0] > 0
        capacity, items = self._capacity[upper], self._items[upper]
        if capacity <= 0:
            return
        with self._lock:
            items[key] = tile
            items.move_to_end(key)
            while len(items) > capacity:
                items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            for items in self._items:
                items.clear()


def _expand(raw: bytes, width: int) -> _Tile:
    """A tile with all its complete nodes derived by hashing (255 SHA-256 when full)."""
    level = [raw[i : i + HASH_SIZE] for i in range(0, width * HASH_SIZE, HASH_SIZE)]
    parts = [raw]
    for _ in range(TILE_HEIGHT):
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        parts.append(b"".join(level))
    offsets = _FULL_OFFSETS if width == TILE_WIDTH else _sublevel_offsets(width)
    return _Tile(b"".join(parts), offsets)


def derive_inner_nodes(tile: bytes) -> bytes:
    """What ``inner_nodes_path`` should hold for the full tile ``tile``, derived by
    hashing it (as proofs do without the object; fsck compares the stored one)."""
    expanded = _expand(tile, TILE_WIDTH)
    return expanded.nodes[expanded.offsets[1] : expanded.offsets[TILE_HEIGHT]]


def _pair_hash(buffer: PackBuffer, start: int) -> bytes:
    """The parent of the two hashes at ``buffer[start:]`` (a tile's root, from sublevel 7)."""
    return node_hash(
        buffer[start : start + HASH_SIZE], buffer[start + HASH_SIZE : start + 2 * HASH_SIZE]
    )


def _record_root(buffer: PackBuffer, base: int) -> bytes:
    """The root of the tile whose pack record starts at ``buffer[base:]``."""
    return _pair_hash(buffer, base + _PACKED_OFFSETS[TILE_HEIGHT - 1])


def _from_inner(raw: bytes, inner: bytes) -> _Tile:
    """A full tile with its stored inner nodes (sublevels 1..7): one hash, for the root."""
    root = _pair_hash(inner, len(inner) - 2 * HASH_SIZE)
    return _Tile(b"".join((raw, inner, root)), _FULL_OFFSETS)


def _append_items(
    buf: bytearray,
    count: int,
    items: list[bytes],
    path_of: Callable[[int, int], str],
    writes: dict[str, bytes],
) -> None:
    """Append ``items`` to the partial tile/bundle ``buf`` holding ``count % 256`` items.

    Every tile completed on the way and the final partial one go into ``writes``.
    """
    pos = 0
    while pos < len(items):
        room = TILE_WIDTH - count % TILE_WIDTH
        chunk = items[pos : pos + room]
        buf += b"".join(chunk)
        pos += len(chunk)
        count += len(chunk)
        if count % TILE_WIDTH == 0:
            writes[path_of(count // TILE_WIDTH - 1, TILE_WIDTH)] = bytes(buf)
            buf.clear()
    if count % TILE_WIDTH:
        writes[path_of(count // TILE_WIDTH, count % TILE_WIDTH)] = bytes(buf)


def _take(batch: list[_Pending]) -> list[_Pending]:
    """Mark the batch's receipts running; the entries not cancelled meanwhile."""
    started = start_all([p.future for p in batch])
    if len(started) == len(batch):
        return batch
    kept = {id(r) for r in started}
    return [p for p in batch if id(p.future) in kept]


def _no_inner() -> list[bytearray]:
    """``_Edge.inner`` buffers of a level whose rightmost tile has no node yet."""
    return [bytearray() for _ in range(1, TILE_HEIGHT)]


def _append_inner(
    bufs: list[bytearray], level: int, start: int, nodes: AppendedNodes, writes: dict[str, bytes]
) -> None:
    """Add the nodes at sublevels 1..7 of tile ``level`` completed by appending from
    ``start``; each tile they complete goes into ``writes`` (``inner_nodes_path``)."""
    base = TILE_HEIGHT * level
    for sub, buf in enumerate(bufs, 1):
        buf += b"".join(nodes.at_level(base + sub))
    # A tile is complete once both halves are (2 nodes at sublevel 7): all lower nodes
    # of the tile completed before them, so every buffer starts with that tile.
    index = start >> (base + TILE_HEIGHT)
    top = bufs[-1]
    while len(top) >= 2 * HASH_SIZE:
        parts = []
        for sub, buf in enumerate(bufs, 1):
            cut = (TILE_WIDTH >> sub) * HASH_SIZE
            parts.append(bytes(buf[:cut]))
            del buf[:cut]
        writes[inner_nodes_path(level, index)] = b"".join(parts)
        index += 1


# --- the engine ----------------------------------------------------------------------------


class TransparencyLog:
    """A tiled transparency log (see the module docstring for the contract).

    ``signer`` signs checkpoints; ``verifier`` must verify them (checked at
    ``open()``) and is used to verify the stored checkpoint. ``cache_tiles`` is
    the number of expanded level-0 tiles kept for proof generation (about 45 KiB
    each), ``cache_upper_tiles`` the same for the tiles above level 0; full tiles
    the storage keeps in a tile pack are read from the pack, not cached.
    ``check_packs`` (default on) has the packs loaded and their records checked
    against their parent tiles in the background after ``open()``, instead of on
    each record's first use by a proof.
    ``index_keys`` gives a stored bundle record's search keys (beyond the leaf
    hash every entry is indexed under); it must be a pure function of the record,
    since the index is rebuilt from the bundles when it is missing.

    ``shared`` (a :class:`~sigstack.log.storage.SharedQueue` of the same log)
    makes this one of several processes serving the log (see "Several processes,
    one log" in the module docstring), tuned by ``cluster``; ``on_role`` is told
    of every role change (``SEQUENCER``, ``FOLLOWER``, ``STOPPED``).
    """

    def __init__(
        self,
        storage: LogStorage,
        signer: NoteSigner,
        origin: str,
        verifier: NoteVerifier,
        policy: BatchPolicy | None = None,
        *,
        cache_tiles: int = 256,
        cache_upper_tiles: int = 1024,
        index_keys: IndexKeys | None = None,
        shared: SharedQueue | None = None,
        cluster: ClusterPolicy | None = None,
        on_role: RoleCallback | None = None,
        check_packs: bool = True,
    ) -> None:
        format_checkpoint(origin, 0, EMPTY_ROOT)  # validates the origin
        self._storage = storage
        self._signer = signer
        self._origin = origin
        self._verifier = verifier
        self._policy = policy if policy is not None else BatchPolicy()
        self._cache = _TileCache(cache_tiles, cache_upper_tiles)
        self._packs: dict[int, TilePack | None] = {}  # tile level -> storage.tile_pack(level)
        self._pack_ok: dict[int, bytearray] = {}  # tile level -> bit per record checked
        self._check_packs = check_packs
        self._pack_thread: threading.Thread | None = None
        # (size, level, index) -> hash of an incomplete right subtree (_right_subtree).
        self._right_nodes: dict[tuple[int, int, int], bytes] = {}
        self._index_keys = index_keys

        self._cond = threading.Condition()
        self._pending: collections.deque[_Pending] = collections.deque()
        self._opened = False
        self._closing = False
        self._closed = False
        self._fatal: SigstackError | None = None
        self._thread: threading.Thread | None = None
        self._wakeup = threading.Event()

        self._current: Checkpoint | None = None  # published state; replaced atomically
        self._edge: _Edge | None = None  # sequencer-owned
        self._needs_recovery = False
        self._backoff = 0.0
        self._lease_used = 0.0  # monotonic time the lease was last used (heartbeat)

        # Shared mode (None/unused otherwise).
        self._shared = shared
        self._cluster = cluster if cluster is not None else ClusterPolicy()
        self._on_role = on_role
        self._role = ""
        self._term_over = False  # the current sequencer term must end (lease lost)
        self._started = False
        self._publish_lock = threading.Lock()
        self._pump: threading.Thread | None = None
        self._pump_lock = threading.Lock()  # a claim and its push vs. releasing claims
        self._inflight: set[int] = set()  # tickets claimed by this term and still in hand
        self._orphans = False  # some claims of this term may be in no one's hands
        self._fe_cond = threading.Condition()
        self._outbox: collections.deque[_Pending] = collections.deque()
        self._waiting: dict[int, _Waiter] = {}
        self._answered = 0  # results up to this committed size were read (under _refresh_lock)
        self._refresh_lock = threading.Lock()
        self._floor: int | None = None  # committed size known before the latest queueing
        self._fe_closing = False
        self._inserter: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._next_takeover = 0.0

    # -- creation and lifecycle --------------------------------------------------------

    @classmethod
    def create(cls, storage: LogStorage, signer: NoteSigner, origin: str) -> None:
        """Create a new empty log: store a signed checkpoint of size 0.

        Raises :class:`Conflict` if the storage already holds a checkpoint (the
        existing log is kept untouched).
        """
        where = storage.describe(CHECKPOINT_KEY)
        exists = Conflict(
            f"a log already exists at {where}; it was kept (nothing was written). "
            "Open it instead, or choose another location."
        )
        storage.acquire_writer()
        try:
            if storage.read_checkpoint() is not None:
                raise exists
            storage.check_writer()
            note = sign_note(format_checkpoint(origin, 0, EMPTY_ROOT), [signer])
            try:
                storage.swap_checkpoint(None, note)
            except Conflict as exc:
                raise exists from exc
        finally:
            storage.release_writer()

    def open(self) -> None:
        """Verify the stored log, rebuild the right edge and start the sequencer.

        Raises :class:`LogIntegrityError` (missing checkpoint, bad signature,
        wrong origin, tiles that do not match the root), :class:`ConfigError`
        (signer and verifier disagree) or :class:`Conflict` (another writer).
        """
        with self._cond:
            if self._closing:
                raise Unavailable("this log object was closed; open a new TransparencyLog")
            if self._opened:
                raise Conflict("this log is already open")
            self._opened = True
        if self._shared is not None:
            self._open_shared()
            return
        try:
            self._check_signer()
            self._storage.acquire_writer()
        except BaseException:
            with self._cond:
                self._opened = False
            raise
        try:
            edge, current = self._load_state()
            self._check_signer_key(current)
            self._sync_index(current)
        except BaseException:
            self._storage.release_writer()
            with self._cond:
                self._opened = False
            raise
        self._edge, self._current = edge, current
        self._role = SEQUENCER
        self._lease_used = time.monotonic()
        self._thread = threading.Thread(
            target=self._run, name=f"sigstack-log-sequencer[{self._origin}]", daemon=True
        )
        self._thread.start()
        self._started = True
        self._start_pack_check(current.size)
        _log.info("log %s opened at size %d", self._origin, current.size)

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting entries, integrate what is pending, stop the sequencer.

        Idempotent. With ``timeout``, waits at most that long for the sequencer;
        if it is still busy (storage hanging), the writer lease is kept.
        """
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._cond.notify_all()
        self._wakeup.set()
        if self._shared is not None:
            self._close_shared(timeout)
            return
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                _log.warning("log %s: sequencer still busy after close timeout", self._origin)
                return
        if self._pack_thread is not None:
            self._pack_thread.join(timeout)  # it stops within one group of records
        with self._cond:
            if self._closed:
                return
            self._closed = True
            opened = self._opened
        if opened:
            self._storage.release_writer()

    def __enter__(self) -> TransparencyLog:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def wait_prepared(self, timeout: float | None = None) -> bool:
        """Wait until the background work ``open()`` started is done (the storage's
        tile packs loaded into memory and their records checked; see ``check_packs``);
        whether it is (True at once when there was none). Proofs and writes do not
        need it: they are only faster afterwards, and writes slower while it runs."""
        thread = self._pack_thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def check_accepting(self) -> None:
        """Raise :class:`Unavailable` unless the log is open and accepting entries.

        A log stops accepting after ``close()`` or after a fatal error (stored state
        that no longer adds up); health checks use this so such a log is reported
        unhealthy rather than merely failing every submission.
        """
        with self._cond:
            if self._fatal is not None:
                raise Unavailable(f"the log {self._origin} stopped: {self._fatal}")
            if self._closing or not self._started:
                raise Unavailable(f"the log {self._origin} is not open")

    @property
    def role(self) -> str:
        """``SEQUENCER`` (holds the writer lease), ``FOLLOWER`` (shared mode, does
        not), ``STOPPED`` (closed or stopped for good), or ``""`` before ``open()``."""
        with self._cond:
            return self._role

    def status(self) -> dict[str, object]:
        """Role, published tree size and mode, for health checks."""
        current = self._current
        with self._cond:
            status: dict[str, object] = {
                "role": self._role,
                "size": current.size if current is not None else None,
                "shared": self._shared is not None,
            }
            if self._fatal is not None:
                status["error"] = str(self._fatal)
        return status

    # -- submitting ------------------------------------------------------------------------

    def submit(self, entry: Entry) -> Receipt[Integrated]:
        """Queue ``entry``; the future resolves once it is durably logged.

        Raises :class:`InvalidRequest` (bad entry), :class:`Overloaded` (more than
        ``max_pending`` waiting) or :class:`Unavailable` (not open, closed or
        stopped). The future fails with :class:`StorageError` if its batch could
        not be committed.
        """
        if not isinstance(entry, Entry) or not isinstance(entry.leaf, bytes):
            raise InvalidRequest("a log entry needs leaf bytes")
        record = entry.leaf if entry.bundle is None else entry.bundle
        if not isinstance(record, bytes):
            raise InvalidRequest("a log entry's bundle data must be bytes")
        if len(record) > MAX_ENTRY_SIZE:
            raise PayloadTooLarge(
                f"entry is {len(record)} bytes; the log stores entries of at most "
                f"{MAX_ENTRY_SIZE} bytes"
            )
        future: Receipt[Integrated] = Receipt()
        pending = _Pending(entry, record, future, time.monotonic())
        if self._shared is not None:
            return self._submit_shared(pending)
        with self._cond:
            self.check_accepting()
            queued = len(self._pending)
            if queued >= self._policy.max_pending:
                raise Overloaded(
                    f"the log {self._origin} has {queued} entries waiting; retry shortly",
                    retry_after=1,
                )
            self._pending.append(pending)
            if queued == 0 or queued + 1 >= self._policy.max_size:
                self._cond.notify()
        return future

    async def add(self, entry: Entry) -> Integrated:
        """``submit`` for asyncio callers: await the integrated entry."""
        return await wait_async(self.submit(entry))

    # -- reading ---------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        """The checkpoint origin line of this log."""
        return self._origin

    def checkpoint(self) -> Checkpoint:
        """The latest published checkpoint."""
        return self._published()

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Inclusion proof of leaf ``index`` in the tree of ``size`` (<= current size)."""
        current = self._published()
        if not isinstance(index, int) or not isinstance(size, int):
            raise InvalidRequest("leaf index and tree size must be integers")
        if not 0 < size <= current.size:
            raise InvalidRequest(
                f"tree size {size} is not between 1 and the current size {current.size}"
            )
        if not 0 <= index < size:
            raise InvalidRequest(f"leaf index {index} is not in a tree of size {size}")
        return self._inclusion_proof(index, size, current.size)

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """Consistency proof between tree sizes ``old <= new <= current size``."""
        current = self._published()
        if not isinstance(old, int) or not isinstance(new, int):
            raise InvalidRequest("tree sizes must be integers")
        if not 0 <= new <= current.size:
            raise InvalidRequest(
                f"tree size {new} is not between 0 and the current size {current.size}"
            )
        if not 0 <= old <= new:
            raise InvalidRequest(f"old tree size {old} is not between 0 and {new}")
        return consistency_proof(old, new, self._node_reader(current.size))

    def read(self, path: str) -> bytes | None:
        """A C2SP resource: ``checkpoint``, ``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/...``.

        Returns ``None`` for a well-formed path the current checkpoint does not
        cover (404); raises :class:`InvalidRequest` for a malformed one.
        """
        current = self._published()
        if path == CHECKPOINT_KEY:
            return current.note
        ref = parse_path(path)
        if ref.min_tree_size > current.size:
            return None
        return self._storage.get(ref.path)

    def lookup(self, namespace: str, key: bytes) -> list[int]:
        """Positions the current checkpoint covers that are indexed under ``key``.

        Namespace ``leaf`` holds every entry's leaf hash; others are the search keys
        of the log's ``index_keys`` function.
        """
        current = self._published()
        return self._storage.index_lookup(namespace, [key], current.size).get(key, [])

    def entry(self, index: int) -> bytes:
        """The entry-bundle record stored for position ``index``."""
        current = self._published()
        if not isinstance(index, int) or not 0 <= index < current.size:
            raise NotFound(f"no entry at index {index}: the log has {current.size} entries")
        ref = bundle_for(index // TILE_WIDTH, current.size)
        return self._bundle_records(ref)[index % TILE_WIDTH]

    def _bundle_records(self, ref: TileRef) -> list[bytes]:
        data = self._storage.get(ref.path)
        if data is None:
            raise LogIntegrityError(self._storage.describe(ref.path), "entry bundle missing")
        try:
            return decode_bundle(data, ref.width)
        except InvalidRequest as exc:
            raise LogIntegrityError(self._storage.describe(ref.path), str(exc)) from exc

    def _sync_index(self, current: Checkpoint) -> None:
        """Make the entry index match ``current``.

        Rows of batches that never committed are dropped; if the index does not
        reach the checkpoint's last entry (deleted, or from an older sigstack), it is
        rebuilt from the tiles and entry bundles, which it is derived from.
        """
        size = current.size
        self._storage.index_truncate(size)
        if self._shared is not None:
            self._shared.reset(size)
        if size == 0:
            return
        node = self._node_reader(size)
        complete = self._storage.index_complete_to()
        if complete is None:  # rows are durable on return: check that the last one is there
            last = node(0, size - 1)
            indexed = self._storage.index_lookup(LEAF_NAMESPACE, [last], size).get(last, [])
            complete = size if size - 1 in indexed else 0
        if complete >= size:
            return
        if complete == 0:
            _log.warning(
                "log %s: the entry index does not reach the checkpoint (size %d); rebuilding it",
                self._origin,
                size,
            )
        else:
            _log.info(
                "log %s: indexing entries %d to %d (not yet in the index)",
                self._origin,
                complete,
                size - 1,
            )
        self._reindex(node, complete, size)

    def _reindex(self, node: Callable[[int, int], bytes], begin: int, size: int) -> None:
        """Add the index rows of positions ``begin .. size-1`` from the tiles and bundles."""
        for start in range(begin, size, _REINDEX_CHUNK):
            end = min(size, start + _REINDEX_CHUNK)
            leaves = [node(0, i) for i in range(start, end)]
            rows: list[IndexRow] = []
            if self._index_keys is not None:
                first = start - start % TILE_WIDTH
                for bundle_start in range(first, end, TILE_WIDTH):
                    records = self._bundle_records(bundle_for(bundle_start // TILE_WIDTH, size))
                    for offset, record in enumerate(records):
                        position = bundle_start + offset
                        if start <= position < end:
                            rows.extend((ns, key, position) for ns, key in self._index_keys(record))
            self._storage.index_add_batch(start, leaves, rows)
        _log.info("log %s: entry index complete (%d entries)", self._origin, size)

    def _published(self) -> Checkpoint:
        current = self._current
        if current is None:
            raise Unavailable(f"the log {self._origin} is not open")
        return current

    # -- tiles and nodes -------------------------------------------------------------------

    def _node_reader(self, size: int) -> Callable[[int, int], bytes]:
        """``node(level, index)`` for complete nodes of the tree of ``size``, from tiles.

        The reader remembers the last tile it used at each tile level: a proof asks
        for up to 8 nodes of the same tile in a row, and those cost no cache lookup.
        """
        last: list[tuple[int, _Tile] | None] = []  # per tile level: (tile index, tile)

        def node(level: int, index: int) -> bytes:
            tile_level, sublevel = divmod(level, TILE_HEIGHT)
            first = index << sublevel
            tile_index = first >> TILE_HEIGHT
            while len(last) <= tile_level:
                last.append(None)
            held = last[tile_level]
            if held is not None and held[0] == tile_index:
                tile = held[1]
            else:
                tile = self._tile_at(tile_level, tile_index, size, (level, index))
                last[tile_level] = (tile_index, tile)
            found = tile.node(sublevel, (first % TILE_WIDTH) >> sublevel)
            if found is None:
                raise self._too_narrow(tile_level, tile_index, size, (level, index))
            return found

        return node

    def _tile_at(
        self, tile_level: int, tile_index: int, size: int, wanted: tuple[int, int]
    ) -> _Tile:
        """Tile ``(tile_level, tile_index)`` as the tree of ``size`` has it, for node
        ``wanted`` (named in the error if the tree has no such tile)."""
        # A hit builds no TileRef: this runs for every tile of every proof. A full
        # tile comes from the storage's pack when it has one (held in memory, as
        # cheap as a cache hit), so the cache keeps the tiles a pack does not hold.
        width = tile_width(tile_level, tile_index, size)
        if width == TILE_WIDTH:
            tile = self._packed(tile_level, tile_index, size)
            if tile is not None:
                return tile
        tile = self._cache.get((tile_level, tile_index, width)) if width > 0 else None
        if tile is not None:
            return tile
        try:
            ref = tile_for(tile_level, tile_index, size)
        except InvalidRequest as exc:
            raise LogIntegrityError(
                self._storage.describe(tile_path(tile_level, tile_index)),
                f"node {wanted} is not in a tree of size {size}",
            ) from exc
        return self._tile(ref, size)

    def _too_narrow(
        self, tile_level: int, tile_index: int, size: int, wanted: tuple[int, int]
    ) -> LogIntegrityError:
        width = tile_width(tile_level, tile_index, size)
        return LogIntegrityError(
            self._storage.describe(tile_path(tile_level, tile_index, width)),
            f"tile too narrow for node {wanted} of tree size {size}",
        )

    def _inclusion_proof(self, index: int, size: int, current: int) -> list[bytes]:
        """``inclusion_proof(index, size, node)`` from the tiles of tree ``current``,
        fetching each tile once: the path's nodes at tile level ``t`` all lie in
        tile ``index >> 8 (t + 1)`` (they differ from the leaf's ancestors in their
        lowest bit only), so this costs one cache lookup per tile level and a slice
        per node (the hot path of every proof request).

        The path is :func:`~sigstack.core.merkle.path_nodes`' (the sibling of each
        ancestor below the level where ``index`` and the last leaf part, then the
        left siblings above it), walked inline: a proof on a large log has two dozen
        nodes, and a call per node was most of its price.
        """
        proof: list[bytes] = []
        last = size - 1
        split = (index ^ last).bit_length()
        levels = [*range(split), *(lv for lv in range(split, last.bit_length()) if index >> lv & 1)]
        held = -1
        nodes: PackBuffer = b""
        offsets: tuple[int, ...] = ()
        base = 0
        tile_index = 0
        for level in levels:
            position = (index >> level) ^ 1
            if (position + 1) << level > size:  # the incomplete right subtree
                proof.append(self._right_subtree(level, position, size, current))
                continue
            tile_level, sublevel = level >> 3, level & 7
            if tile_level != held:
                tile_index = index >> (TILE_HEIGHT * (tile_level + 1))
                tile = self._tile_at(tile_level, tile_index, current, (level, position))
                nodes, offsets, base, held = tile.nodes, tile.offsets, tile.base, tile_level
            start = offsets[sublevel] + (position & ((TILE_WIDTH >> sublevel) - 1)) * HASH_SIZE
            if start >= offsets[sublevel + 1]:
                raise self._too_narrow(tile_level, tile_index, current, (level, position))
            start += base
            proof.append(nodes[start : start + HASH_SIZE])
        return proof

    def _right_subtree(self, level: int, index: int, size: int, current: int) -> bytes:
        """``subtree_hash`` of the incomplete subtree ``(level, index)`` of tree ``size``.

        Every proof in a tree has one such node (unless the tree is a perfect one);
        for one tree there are at most ``log2(size)`` of them, remembered here.
        """
        key = (size, level, index)
        found = self._right_nodes.get(key)
        if found is None:
            found = subtree_hash(level, index, size, self._node_reader(current))
            if len(self._right_nodes) >= _RIGHT_NODES:
                self._right_nodes.clear()
            self._right_nodes[key] = found
        return found

    def _pack(self, level: int) -> TilePack | None:
        if level not in self._packs:
            self._packs[level] = self._storage.tile_pack(level)
        return self._packs[level]

    def _start_pack_check(self, size: int) -> None:
        """Start :meth:`_prepare_packs` for the tree of ``size`` if the storage packs tiles."""
        if not self._check_packs or size < TILE_WIDTH or self._pack(0) is None:
            return
        self._pack_thread = threading.Thread(
            target=self._prepare_packs,
            args=(size,),
            name=f"sigstack-log-packs[{self._origin}]",
            daemon=True,
        )
        self._pack_thread.start()

    def _prepare_packs(self, size: int) -> None:
        """In the background after ``open()``: have each tile pack loaded into memory
        (``TilePack.load``), then check the root of every full tile's record in it
        against the parent tile, 256 records per parent, and remember them as
        checked: otherwise the first proof through each record pays that hash and
        the parent lookup on the request path (on a log of 10 million entries, the
        first tens of thousands of random proofs). Records it cannot check (none,
        or a root the parent does not record) are left to the check on first use,
        which falls back to the objects. Runs at a lower priority; stops at close.
        """
        with contextlib.suppress(OSError, AttributeError):  # Linux: this thread only
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        try:
            levels = 0
            while size >> (TILE_HEIGHT * (levels + 1)):  # levels with a full tile
                levels += 1
            for level in reversed(range(levels)):  # parents before their children
                pack = self._pack(level)
                if pack is None:
                    continue
                while not pack.load(0.1):
                    if self._closing:
                        return
                full = size >> (TILE_HEIGHT * (level + 1))
                for parent in range(-(-full >> TILE_HEIGHT)):
                    if self._closing:
                        return
                    self._check_records(pack, level, parent, full, size)
        except Exception as exc:  # only speed is at stake: proofs check records anyway
            _log.warning("log %s: checking the tile packs stopped: %s", self._origin, exc)

    def _check_records(self, pack: TilePack, level: int, parent: int, full: int, size: int) -> None:
        """Check and mark the records of level ``level`` under tile ``parent`` of the
        level above (at most 256; ``full`` is the level's count of full tiles)."""
        row = self._tile_at(
            level + 1, parent, size, (TILE_HEIGHT * (level + 1), parent << TILE_HEIGHT)
        ).sublevel(0)
        first = parent << TILE_HEIGHT
        last = min(full, first + TILE_WIDTH)
        checked = self._checked_bits(level, last - 1)
        for index in range(first, last):
            if not index & _CHECK_YIELD_MASK:
                time.sleep(BACKGROUND_YIELD_SECONDS)
            if checked[index >> 3] & 1 << (index & 7):
                continue
            found = pack.record(index)
            if found is None:
                continue
            at = (index - first) * HASH_SIZE
            if _record_root(*found) == row[at : at + HASH_SIZE]:
                checked[index >> 3] |= 1 << (index & 7)

    def _checked_bits(self, level: int, index: int) -> bytearray:
        """The level's bitmap of records checked against their parent (``_pack_ok``),
        long enough to hold ``index``'s bit."""
        checked = self._pack_ok.setdefault(level, bytearray())
        if index >> 3 >= len(checked):
            checked.extend(bytes((index >> 3) + 1 - len(checked) + 4096))
        return checked

    def _packed(self, level: int, index: int, size: int) -> _Tile | None:
        """Full tile ``(level, index)`` read in place from the storage's tile pack, or
        None (no pack, no valid record, or a record whose root the parent tile does
        not record: the caller then reads the objects, which says what is wrong).

        Nothing is copied: the tile's nodes are sliced from the pack's buffer when a
        proof asks for them. A record's root is checked against the parent tile the
        first time the record is used (one hash), then remembered as checked.
        """
        pack = self._pack(level)
        if pack is None:
            return None
        found = pack.record(index)
        if found is None:
            return None
        buffer, base = found
        tile = _Tile(buffer, _PACKED_OFFSETS, base)
        checked = self._checked_bits(level, index)
        byte, bit = index >> 3, 1 << (index & 7)
        if not checked[byte] & bit:
            if not self._parent_records(level, index, size, _record_root(buffer, base)):
                return None
            checked[byte] |= bit
        return tile

    def _tile(self, ref: TileRef, size: int) -> _Tile:
        key = (ref.level, ref.index, ref.width)
        tile = self._cache.get(key)
        if tile is not None:
            return tile
        if ref.width == TILE_WIDTH:  # the tile and its inner nodes, in one round trip
            path = inner_nodes_path(ref.level, ref.index)
            raw, inner = self._storage.get_many([ref.path, path])
            raw = self._checked_tile(ref, raw, size)
            tile = self._with_inner(ref, raw, path, inner, size) if inner is not None else None
        else:
            raw = self._read_tile(ref, size)
            tile = None
        if tile is None:
            tile = _expand(raw, ref.width)
        self._cache.put(key, tile)
        return tile

    def _read_tile(self, ref: TileRef, size: int) -> bytes:
        """The stored tile ``ref``, or ``LogIntegrityError`` if missing or of the wrong size."""
        return self._checked_tile(ref, self._storage.get(ref.path), size)

    def _checked_tile(self, ref: TileRef, raw: bytes | None, size: int) -> bytes:
        path = ref.path
        if raw is None:
            raise LogIntegrityError(
                self._storage.describe(path), f"tile missing (needed by tree size {size})"
            )
        if len(raw) != ref.byte_size:
            raise LogIntegrityError(
                self._storage.describe(path),
                f"tile is {len(raw)} bytes; a tile of width {ref.width} is {ref.byte_size}",
            )
        return raw

    def _parent_records(self, level: int, index: int, size: int, root: bytes | None) -> bool:
        """Whether ``root`` is the hash the tree of ``size`` records for full tile
        ``(level, index)`` (in its parent tile): the check before stored inner nodes
        are trusted."""
        return root == self._node_reader(size)(TILE_HEIGHT * (level + 1), index)

    def _with_inner(
        self, ref: TileRef, raw: bytes, path: str, inner: bytes, size: int
    ) -> _Tile | None:
        """The full tile ``ref`` with its inner nodes ``inner`` (stored at ``path``), if
        their root is the one the parent tile records (None: derive them instead).

        Logs written before inner nodes were stored have none for older tiles (the
        caller derives them); anything else wrong (a wrong size, a root the parent
        does not record) is logged as a warning, since only corrupted storage can
        cause it (fsck says which).
        """
        if len(inner) == INNER_NODES_BYTES:
            tile = _from_inner(raw, inner)
            if self._parent_records(ref.level, ref.index, size, tile.node(TILE_HEIGHT, 0)):
                return tile
            problem = "their root is not the hash its parent tile records"
        else:
            problem = f"they are {len(inner)} bytes, not {INNER_NODES_BYTES}"
        _log.warning(
            "log %s: ignoring the stored inner nodes %s (%s); deriving them from the tile. "
            "Run fsck on this log.",
            self._origin,
            self._storage.describe(path),
            problem,
        )
        return None

    # -- loading and verifying stored state -------------------------------------------------

    def _check_signer(self) -> None:
        """Refuse a signer whose key name or key hash differs from the verifier's."""
        signer, verifier = self._signer, self._verifier
        if signer.name != verifier.name or bytes(signer.key_hash) != bytes(verifier.key_hash):
            raise ConfigError(
                f"the checkpoint signer ({signer.name}+{bytes(signer.key_hash).hex()}) and "
                f"verifier ({verifier.name}+{bytes(verifier.key_hash).hex()}) are different keys"
            )

    def _check_signer_key(self, current: Checkpoint) -> None:
        """Prove the signer holds the verifier's private key before it signs anything new.

        It re-signs the body of the checkpoint just verified (a tree head this log
        already committed to, so the signature commits to nothing new) and checks
        the signature with the verifier.
        """
        body = format_checkpoint(current.origin, current.size, current.root_hash).encode()
        try:
            self._verifier.verify(body, self._signer.sign(body))
        except VerificationError as exc:
            raise ConfigError(
                f"the checkpoint signer's signatures do not verify with the verifier for "
                f"{self._verifier.name}: the two keys do not match ({exc})"
            ) from exc

    def _load_state(self) -> tuple[_Edge, Checkpoint]:
        """Read and verify the stored checkpoint and rebuild the right edge from tiles."""
        storage = self._storage
        where = storage.describe(CHECKPOINT_KEY)
        # The mark first: a writer may commit in between, and a checkpoint read after
        # the mark is at least as new as the mark was (see _check_high_water).
        mark = storage.read_high_water()
        note = storage.read_checkpoint()
        if note is None:
            raise LogIntegrityError(
                where, "no checkpoint: the log was never created here (TransparencyLog.create)"
            )
        try:
            text, _ = open_note(note, [self._verifier])
        except VerificationError as exc:
            raise LogIntegrityError(
                where,
                f"checkpoint signature does not verify with the configured key "
                f"{self._verifier.name}+{bytes(self._verifier.key_hash).hex()}: {exc}",
            ) from exc
        try:
            body = parse_checkpoint(text)
        except VerificationError as exc:
            raise LogIntegrityError(where, str(exc)) from exc
        if body.origin != self._origin:
            raise LogIntegrityError(
                where,
                f"checkpoint origin is {body.origin!r}, but this log's origin is {self._origin!r}",
            )
        size = body.size
        node = self._node_reader(size)
        rng = CompactRange.from_hashes(size, [node(lv, ix) for lv, ix in range_nodes(size)])
        if rng.root() != body.root_hash:
            partials = ", ".join(
                storage.describe(tile_path(t, (size >> (TILE_HEIGHT * t)) // TILE_WIDTH, w))
                for t in range(tile_levels(size))
                if (w := partial_width(t, size))
            )
            raise LogIntegrityError(
                where,
                f"the tiles do not add up to the checkpoint: the root recomputed from the "
                f"tiles at the right edge ({partials or 'full tiles only'}) is "
                f"{rng.root().hex()}, the checkpoint says {body.root_hash.hex()}",
            )
        self._verify_full_edge(size, node)

        edge = _Edge(size, rng)
        for level in range(tile_levels(size)):
            width = partial_width(level, size)
            if width:
                count = size >> (TILE_HEIGHT * level)
                tile = self._tile(TileRef(level, count // TILE_WIDTH, width), size)
                edge.tiles.append(bytearray(tile.sublevel(0)))
                edge.inner.append([bytearray(tile.sublevel(s)) for s in range(1, TILE_HEIGHT)])
            else:
                edge.tiles.append(bytearray())
                edge.inner.append(_no_inner())
        width = size % TILE_WIDTH
        if width:
            path = entries_path(size // TILE_WIDTH, width)
            data = storage.get(path)
            if data is None:
                raise LogIntegrityError(storage.describe(path), "entry bundle missing")
            try:
                decode_bundle(data, width)
            except InvalidRequest as exc:
                raise LogIntegrityError(storage.describe(path), str(exc)) from exc
            edge.bundle = bytearray(data)
        current = Checkpoint(self._origin, size, body.root_hash, note)
        self._check_high_water(current, mark)
        return edge, current

    def _check_high_water(self, current: Checkpoint, mark: bytes | None) -> None:
        """Raise ``LogIntegrityError`` unless ``current`` is at or past the storage's
        high-water ``mark`` and its stored tree extends the mark's (the mark may lag
        the checkpoint by one swap, see the storage contract).

        ``mark`` must have been read BEFORE ``current``: another process may commit
        between the two reads (a follower of a shared log), which makes a mark read
        afterwards newer than ``current`` without any rollback.
        """
        if mark is None or mark == current.note:
            return
        body = self._verified(mark, "the storage's high-water mark")
        marked = Checkpoint(self._origin, body.size, body.root_hash, mark)
        self._check_consistent(marked, current, seen="the last one this log committed")

    def _verified(self, note: bytes, what: str) -> CheckpointBody:
        """``note`` opened with the log's key and parsed, for this origin, or
        ``LogIntegrityError`` naming ``what`` it is."""
        where = self._storage.describe(CHECKPOINT_KEY)
        try:
            text, _ = open_note(note, [self._verifier])
            body = parse_checkpoint(text)
        except VerificationError as exc:
            raise LogIntegrityError(
                where, f"{what} does not verify with the log's key: {exc}"
            ) from exc
        if body.origin != self._origin:
            raise LogIntegrityError(where, f"{what}'s origin is {body.origin!r}")
        return body

    def _verify_full_edge(self, size: int, node: Callable[[int, int], bytes]) -> None:
        """Check the most recent full tile of each level against its parent hash."""
        for level in range(tile_levels(size) - 1):
            count = size >> (TILE_HEIGHT * level)
            if count < TILE_WIDTH:
                continue
            index = count // TILE_WIDTH - 1
            ref = TileRef(level, index)
            # Derived from the tile itself, not from stored inner nodes.
            tile_root = _expand(self._read_tile(ref, size), TILE_WIDTH).sublevel(TILE_HEIGHT)
            parent = node(TILE_HEIGHT * (level + 1), index)
            if tile_root != parent:
                parent_ref = tile_for(level + 1, index // TILE_WIDTH, size)
                raise LogIntegrityError(
                    self._storage.describe(ref.path),
                    f"tile hashes to {tile_root.hex()}, but its parent tile "
                    f"{self._storage.describe(parent_ref.path)} records {parent.hex()}",
                )

    # -- the sequencer ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                if not batch:
                    self._heartbeat()
                    continue
                self._process(batch)
        except BaseException as exc:  # a bug: never leave futures hanging
            _log.exception("log %s: sequencer crashed", self._origin)
            self._stop(
                exc
                if isinstance(exc, SigstackError)
                else Unavailable(f"the log's sequencer crashed: {exc!r}")
            )

    def _next_batch(self) -> list[_Pending] | None:
        """The next batch; ``[]`` when the lease needs a heartbeat; None to stop."""
        policy = self._policy
        heartbeat = self._storage.lease_heartbeat
        with self._cond:
            while not self._pending:
                if self._closing or self._fatal is not None or self._term_over:
                    return None
                if heartbeat is None:
                    self._cond.wait()
                    continue
                remaining = self._lease_used + heartbeat - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
            if self._term_over:
                return None
            deadline = self._pending[0].arrival + policy.max_age
            while len(self._pending) < policy.max_size and not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            take = min(len(self._pending), policy.max_size)
            return [self._pending.popleft() for _ in range(take)]

    def _heartbeat(self) -> None:
        """Keep (and check) the writer lease of an idle sequencer."""
        self._lease_used = time.monotonic()
        try:
            self._storage.check_writer()
        except Conflict as exc:
            self._lease_lost(exc)
            return
        except SigstackError as exc:
            _log.warning("log %s: could not check the writer lease: %s", self._origin, exc)
            return
        if self._needs_recovery:
            self._recover()
        elif self._orphans:
            self._release_orphans()

    def _process(self, batch: list[_Pending]) -> None:
        try:
            self._process_live(batch)
        finally:
            if self._shared is not None:
                with self._cond:
                    self._inflight.difference_update(p.ticket for p in batch)

    def _process_live(self, batch: list[_Pending]) -> None:
        live = _take(batch)
        if not live:
            return
        if self._needs_recovery and not self._recover():
            if self._fatal is not None:
                error: SigstackError = Unavailable(f"the log stopped: {self._fatal}")
            else:
                error = StorageError(
                    "the log's storage is failing; the entry was not logged, retry later"
                )
            with self._cond:
                if self._closing:  # shutting down: do not retry batch after batch
                    live += self._pending
                    self._pending.clear()
            self._fail(live, error)
            if not self._term_over:
                self._wakeup.wait(self._backoff)
            return
        try:
            results = self._integrate(live)
        except _LeaseLost as exc:
            # Stop (or demote) first: a submitter told its entry failed for a lost
            # lease must find the log already refusing entries, not a window where
            # check_accepting() still says it accepts them.
            self._lease_lost(exc)
            self._fail(live, exc)
            return
        except Exception as exc:
            _log.error("log %s: batch of %d entries failed: %s", self._origin, len(live), exc)
            error = (
                exc
                if isinstance(exc, StorageError)
                else StorageError(f"the entry was not logged: {exc}")
            )
            if error is not exc:
                error.__cause__ = exc
            self._fail(live, error)
            self._needs_recovery = True
            self._recover()
            return
        finish_all([p.future for p in live], results)

    def _fail(self, batch: list[_Pending], error: SigstackError) -> None:
        """Fail a batch's futures; queued entries of a shared log are released instead."""
        tickets = [p.ticket for p in batch if p.ticket is not None]
        if tickets:
            with self._cond:
                self._inflight.difference_update(tickets)
            self._orphans = True  # no longer in hand: released after recovery
        fail_all((p.future for p in batch), error)

    def _integrate(self, batch: list[_Pending]) -> list[Integrated]:
        """Steps 2-6 of the commit protocol for one batch (see the module docstring).

        ``dedup`` entries whose leaf is already logged (or earlier in this batch)
        are not appended: they answer with the existing position and a proof
        against the checkpoint this batch produces. Entries from the shared queue
        get their position recorded there before the checkpoint is signed (their
        submitters, in whatever process, build their own answers).
        """
        current = self._current
        assert self._edge is not None and current is not None
        start = self._edge.size
        hashes = [leaf_hash(p.entry.leaf) for p in batch]
        known = self._known_leaves(
            [h for p, h in zip(batch, hashes, strict=True) if p.entry.dedup], start
        )
        fresh: list[_Pending] = []
        leaves: list[bytes] = []
        first: dict[bytes, int] = {}
        plan: list[tuple[int, bool]] = []  # (position, duplicate) per batch entry
        for p, h in zip(batch, hashes, strict=True):
            if p.entry.dedup and h in known:
                plan.append((known[h], True))
            elif p.entry.dedup and h in first:
                plan.append((start + first[h], True))
            else:
                first.setdefault(h, len(leaves))
                plan.append((start + len(leaves), False))
                fresh.append(p)
                leaves.append(h)
        end = start + len(leaves)
        assignments = [
            Assignment(p.ticket, position, duplicate, end)
            for p, (position, duplicate) in zip(batch, plan, strict=True)
            if p.ticket is not None
        ]
        if leaves:
            checkpoint, proofs = self._append(fresh, leaves, assignments)
        else:
            checkpoint, proofs = current, []
            if assignments:
                assert self._shared is not None
                self._shared.assign(assignments, committed=True)
                self._lease_used = time.monotonic()
        if len(fresh) == len(batch) and not assignments:
            # The usual batch: no duplicates, no shared-queue entries.
            return [Integrated(start + i, checkpoint, proof) for i, proof in enumerate(proofs)]
        results = []
        for p, (position, duplicate) in zip(batch, plan, strict=True):
            if p.ticket is not None:  # answered by its frontend from the shared queue
                results.append(Integrated(position, checkpoint, [], duplicate))
                continue
            if position >= start:
                proof = proofs[position - start]
            else:
                proof = self._inclusion_proof(position, checkpoint.size, checkpoint.size)
            results.append(Integrated(position, checkpoint, proof, duplicate))
        return results

    def _known_leaves(self, hashes: list[bytes], below: int) -> dict[bytes, int]:
        """Committed positions of these leaf hashes, confirmed against the level-0 tiles."""
        if not hashes or below == 0:
            return {}
        found = self._storage.index_lookup(LEAF_NAMESPACE, hashes, below)
        node = self._node_reader(below)
        known = {}
        for key, positions in found.items():
            for position in positions:
                if node(0, position) == key:  # the index is a hint; the tree is the truth
                    known[key] = position
                    break
        return known

    def _append(
        self, batch: list[_Pending], leaves: list[bytes], assignments: list[Assignment]
    ) -> tuple[Checkpoint, list[list[bytes]]]:
        """Append ``batch`` (with its leaf hashes): store, index, sign, commit, publish."""
        edge = self._edge
        current = self._current
        assert edge is not None and current is not None
        start = edge.size
        nodes = edge.rng.extend(leaves)
        end = nodes.end

        writes: dict[str, bytes] = {}
        for level in range(tile_levels(end)):
            if level == len(edge.tiles):
                edge.tiles.append(bytearray())
                edge.inner.append(_no_inner())
            new = nodes.at_level(TILE_HEIGHT * level)
            if new:
                _append_items(
                    edge.tiles[level],
                    start >> (TILE_HEIGHT * level),
                    new,
                    functools.partial(tile_path, level),
                    writes,
                )
                _append_inner(edge.inner[level], level, start, nodes, writes)
        # Records were size-checked by submit(): a uint16 length prefix each.
        records = [len(p.record).to_bytes(2, "big") + p.record for p in batch]
        _append_items(edge.bundle, start, records, entries_path, writes)
        rows: list[IndexRow] = []  # search keys; the leaf hashes go as they are
        if self._index_keys is not None:
            for i, p in enumerate(batch):
                rows.extend((ns, key, start + i) for ns, key in self._index_keys(p.record))

        root = edge.rng.root()
        proofs = nodes.inclusion_proofs()
        try:
            verify_inclusion(leaves[-1], end - 1, end, proofs[-1], root)
        except VerificationError as exc:  # pragma: no cover - internal invariant
            raise LogIntegrityError(
                self._storage.describe(CHECKPOINT_KEY), f"refusing to sign: {exc}"
            ) from exc

        self._storage.put_many(writes)
        self._storage.index_add_batch(start, leaves, rows)
        if assignments:
            assert self._shared is not None
            self._shared.assign(assignments, committed=False)
        self._check_lease()
        note = sign_note(format_checkpoint(self._origin, end, root), [self._signer])
        self._storage.swap_checkpoint(current.note, note)
        self._lease_used = time.monotonic()

        checkpoint = Checkpoint(self._origin, end, root, note)
        edge.size = end
        self._publish(checkpoint)
        self._backoff = 0.0
        return checkpoint, proofs

    def _check_lease(self) -> None:
        """Raise ``_LeaseLost`` unless storage confirms the writer lease right now."""
        try:
            self._storage.check_writer()
        except Conflict as exc:
            raise _LeaseLost(
                f"the log {self._origin} lost its writer lease and stopped signing: {exc}"
            ) from exc

    def _reload(self) -> tuple[_Edge, Checkpoint]:
        """Under the lease, re-derive state from the durable checkpoint for sequencing
        on: consistent with what was published, made durable, the index synced."""
        self._cache.clear()
        self._pack_ok.clear()  # records of the failed batch's tiles may be rewritten
        self._check_lease()
        edge, current = self._load_state()
        published = self._current
        if published is not None:
            self._check_consistent(published, current)
        # Whatever checkpoint readers may have seen must be durable before the
        # tree grows past it (a failed swap may have left it visible only).
        self._storage.swap_checkpoint(current.note, current.note)
        self._sync_index(current)
        return edge, current

    def _recover(self) -> bool:
        """Re-derive state from the durable checkpoint; True when the log can go on."""
        try:
            edge, current = self._reload()
        except _LeaseLost as exc:
            self._lease_lost(exc)
            return False
        except LogIntegrityError as exc:
            _log.error("log %s: stored state does not add up, stopping: %s", self._origin, exc)
            self._stop(exc)
            return False
        except Exception as exc:
            self._backoff = min(max(self._backoff * 2, _BACKOFF_MIN), _BACKOFF_MAX)
            _log.warning(
                "log %s: recovery failed (%s); retrying in %.2fs", self._origin, exc, self._backoff
            )
            return False
        self._edge = edge
        self._publish(current)
        self._needs_recovery = False
        self._lease_used = time.monotonic()
        if self._orphans:
            self._release_orphans()
        _log.info("log %s: recovered at size %d", self._origin, current.size)
        return True

    def _release_orphans(self) -> None:
        """Make this term's claims that no one holds claimable again (shared mode).

        Entries of failed batches, and entries whose claim committed although its
        answer was lost. The pump lock keeps a claim from landing between the
        snapshot of what is in hand and the release.
        """
        shared = self._shared
        assert shared is not None
        with self._pump_lock:
            with self._cond:
                keep = sorted(self._inflight)
            self._orphans = False
            try:
                shared.release(keep)
            except SigstackError as exc:
                self._orphans = True
                _log.warning("log %s: could not release queued entries: %s", self._origin, exc)

    def _lease_lost(self, exc: SigstackError) -> None:
        """The lease is gone: stop signing (alone: for good; shared: become a follower)."""
        if self._shared is None:
            error = (
                exc
                if isinstance(exc, _LeaseLost)
                else _LeaseLost(
                    f"the log {self._origin} lost its writer lease and stopped signing: {exc}"
                )
            )
            _log.error("log %s: %s", self._origin, error)
            self._stop(error)
            return
        self._demote(exc)

    def _stop(self, error: SigstackError) -> None:
        """Stop for good: fail everything pending and refuse new entries."""
        with self._cond:
            if self._fatal is None:
                self._fatal = error
            pending = list(self._pending)
            self._pending.clear()
            changed = self._role != STOPPED
            self._role = STOPPED
            self._cond.notify_all()
        failure = Unavailable(f"the log {self._origin} stopped: {error}")
        fail_all((p.future for p in pending), failure)
        if self._shared is not None:
            self._wakeup.set()
            self._shared.wake()
            with self._fe_cond:
                waiting = [w.future for w in self._waiting.values()]
                waiting += [p.future for p in self._outbox]
                self._waiting.clear()
                self._outbox.clear()
                self._fe_cond.notify_all()
            fail_all(waiting, failure)
            # Another process may be able to go on (or will stop on the same problem).
            self._storage.release_writer()
            if changed:
                self._announce(STOPPED)

    def _publish(self, checkpoint: Checkpoint) -> None:
        """Make ``checkpoint`` the published one unless a larger one already is."""
        with self._publish_lock:
            current = self._current
            if current is None or checkpoint.size >= current.size:
                self._current = checkpoint

    def _check_consistent(
        self, old: Checkpoint, new: Checkpoint, seen: str = "one this process already served"
    ) -> None:
        """Raise ``LogIntegrityError`` unless the tree of ``old`` (``seen``, for the
        message) is a prefix of ``new``'s.

        The check recomputes the root of ``old.size`` from the stored tiles of
        ``new``'s tree, so it proves what storage holds, not what it claims.
        """
        where = self._storage.describe(CHECKPOINT_KEY)
        if new.size < old.size:
            raise LogIntegrityError(
                where,
                f"the stored checkpoint (size {new.size}) is older than {seen} (size "
                f"{old.size}): storage went back in time (a checkpoint rolled back to a "
                "backup, or a failover that lost commits); refusing to serve or sign over it",
            )
        if new.size == old.size:
            if new.root_hash != old.root_hash:
                raise LogIntegrityError(
                    where,
                    f"the stored checkpoint has size {new.size} like {seen}, but root "
                    f"{new.root_hash.hex()} instead of {old.root_hash.hex()}: "
                    "a fork; refusing to serve or sign over it",
                )
            return
        if old.size == 0:
            return
        node = self._node_reader(new.size)
        rng = CompactRange.from_hashes(old.size, [node(lv, ix) for lv, ix in range_nodes(old.size)])
        if rng.root() != old.root_hash:
            raise LogIntegrityError(
                where,
                f"the stored tree of size {new.size} does not extend the tree of size "
                f"{old.size}, {seen} (its first {old.size} entries hash "
                f"to {rng.root().hex()}, not {old.root_hash.hex()}): a fork; refusing to serve "
                "or sign over it",
            )

    def _announce(self, role: str) -> None:
        callback = self._on_role
        if callback is None:
            return
        try:
            callback(role)
        except Exception:  # a broken observer must not break the log
            _log.exception("log %s: role callback failed", self._origin)

    # -- shared mode: roles ------------------------------------------------------------------

    def _open_shared(self) -> None:
        """``open()`` of a shared log: verify it, start as a follower, try to sequence."""
        try:
            self._check_signer()
            _, current = self._load_state()  # read-only: fails closed like open()
            self._check_signer_key(current)
        except BaseException:
            with self._cond:
                self._opened = False
            raise
        self._current = current
        self._answered = current.size
        with self._cond:
            self._role = FOLLOWER
            self._started = True
        self._inserter = threading.Thread(
            target=self._insert_loop, name=f"sigstack-log-queue[{self._origin}]", daemon=True
        )
        self._inserter.start()
        self._try_takeover()
        self._watcher = threading.Thread(
            target=self._watch_loop, name=f"sigstack-log-watch[{self._origin}]", daemon=True
        )
        self._watcher.start()
        _log.info("log %s opened (shared) at size %d as %s", self._origin, current.size, self.role)

    def _try_takeover(self) -> bool:
        """Take the writer lease and recover like ``open()``; True if now the sequencer."""
        for thread in (self._thread, self._pump):  # the previous term must have ended
            if thread is not None and thread.is_alive():
                return False
        with self._cond:
            if self._closing or self._fatal is not None or self._role != FOLLOWER:
                return False
        try:
            self._storage.acquire_writer()
        except Conflict:
            return False
        except SigstackError as exc:
            _log.warning("log %s: could not try the writer lease: %s", self._origin, exc)
            return False
        try:
            edge, current = self._reload()
        except LogIntegrityError as exc:
            _log.error("log %s: stored state does not add up, stopping: %s", self._origin, exc)
            self._stop(exc)
            return False
        except Exception as exc:
            self._storage.release_writer()
            _log.warning("log %s: taking over as sequencer failed: %s", self._origin, exc)
            return False
        with self._cond:
            if self._closing or self._fatal is not None:
                self._storage.release_writer()
                return False
            self._edge = edge
            self._publish(current)
            self._role = SEQUENCER
            self._term_over = False
            self._needs_recovery = False
            self._backoff = 0.0
            self._inflight.clear()
            self._orphans = False
            self._lease_used = time.monotonic()
            self._thread = threading.Thread(
                target=self._run, name=f"sigstack-log-sequencer[{self._origin}]", daemon=True
            )
            self._pump = threading.Thread(
                target=self._pump_loop, name=f"sigstack-log-pump[{self._origin}]", daemon=True
            )
            self._thread.start()
            self._pump.start()
        _log.info("log %s: this process is now the sequencer (size %d)", self._origin, current.size)
        self._announce(SEQUENCER)
        return True

    def _demote(self, reason: SigstackError) -> None:
        """End this sequencer term: drop claimed entries, release the lease, follow."""
        with self._cond:
            if self._role != SEQUENCER:
                return
            self._role = FOLLOWER
            self._term_over = True
            dropped = list(self._pending)
            self._pending.clear()
            self._inflight.clear()
            self._cond.notify_all()
        self._storage.release_writer()
        if self._shared is not None:
            self._shared.wake()  # the pump ends its term now
        # Queued entries: the next term claims them again.
        fail_all((p.future for p in dropped), Unavailable("the sequencer lost its lease"))
        self._next_takeover = time.monotonic() + self._cluster.lease_retry
        _log.error(
            "log %s: stopped sequencing (%s); serving as a follower, will try to take the "
            "lease again",
            self._origin,
            reason,
        )
        self._announce(FOLLOWER)

    def _pump_loop(self) -> None:
        """Sequencer term: claim queued entries into the batches, purge answered rows."""
        shared = self._shared
        assert shared is not None
        cluster = self._cluster
        seen = -1
        last_purge = time.monotonic()
        pause = _BACKOFF_MIN
        while True:
            with self._cond:
                if self._closing or self._term_over or self._fatal is not None:
                    return
                room = self._policy.max_pending - len(self._pending)
            if room <= 0:
                self._wakeup.wait(0.005)
                continue
            limit = min(room, cluster.claim_size)
            if self._orphans:
                self._release_orphans()
            try:
                with self._pump_lock:
                    claimed = shared.claim(limit)
                    self._push_claimed(claimed)
            except Conflict:
                return  # the lease is gone; the sequencer thread finds out and demotes
            except SigstackError as exc:
                # The claim may have committed without its answer: release it later.
                self._orphans = True
                _log.warning("log %s: claiming queued entries failed: %s", self._origin, exc)
                self._wakeup.wait(pause)
                pause = min(pause * 2, _BACKOFF_MAX)
                continue
            pause = _BACKOFF_MIN
            if len(claimed) == limit:
                continue  # more are waiting
            now = time.monotonic()
            if now - last_purge >= cluster.retention / 10:
                last_purge = now
                current = self._current
                try:
                    if current is not None:
                        shared.purge(current.size, cluster.retention)
                except SigstackError as exc:
                    _log.warning("log %s: purging the queue failed: %s", self._origin, exc)
            seen = shared.wait(ENTRIES_EVENT, seen, cluster.refresh)

    def _push_claimed(self, claimed: list[QueuedEntry]) -> None:
        if not claimed:
            return
        now = time.monotonic()
        items = [
            _Pending(
                Entry(q.leaf, None if q.record == q.leaf else q.record, q.dedup),
                q.record,
                Receipt(),
                now,
                q.ticket,
            )
            for q in claimed
        ]
        with self._cond:
            if self._term_over or self._fatal is not None:
                return  # the next term claims them again
            queued = len(self._pending)
            self._pending.extend(items)
            self._inflight.update(q.ticket for q in claimed)
            if queued == 0 or len(self._pending) >= self._policy.max_size:
                self._cond.notify()

    # -- shared mode: frontends --------------------------------------------------------------

    def _submit_shared(self, pending: _Pending) -> Receipt[Integrated]:
        with self._fe_cond:
            self.check_accepting()
            queued = len(self._outbox) + len(self._waiting)
            if queued >= self._policy.max_pending:
                raise Overloaded(
                    f"the log {self._origin} has {queued} entries waiting here; retry shortly",
                    retry_after=1,
                )
            self._outbox.append(pending)
            if len(self._outbox) == 1:
                self._fe_cond.notify_all()
        return pending.future

    def _insert_loop(self) -> None:
        """Queue submissions in the shared queue, grouped (one insert per group)."""
        shared = self._shared
        assert shared is not None
        while True:
            with self._fe_cond:
                while not self._outbox and not self._fe_closing:
                    self._fe_cond.wait()
                if not self._outbox:
                    return
                group = [self._outbox.popleft() for _ in range(min(len(self._outbox), 1000))]
            live = _take(group)
            if not live:
                continue
            # Their positions will be assigned in trees at least this large (see results).
            floor = self._published().size
            try:
                tickets = shared.enqueue([(p.entry.leaf, p.record, p.entry.dedup) for p in live])
            except Exception as exc:
                error = StorageError(
                    f"queueing the entry failed ({exc}); it may or may not be logged: retry "
                    "(identical entries are deduplicated)"
                )
                fail_all((p.future for p in live), error)
                continue
            deadline = time.monotonic() + self._cluster.wait_timeout
            with self._fe_cond:
                for p, ticket in zip(live, tickets, strict=True):
                    self._waiting[ticket] = _Waiter(leaf_hash(p.entry.leaf), p.future, deadline)
                self._floor = floor if self._floor is None else min(self._floor, floor)

    def _watch_loop(self) -> None:
        """Refresh the checkpoint, answer waiting submissions, expire them, take over."""
        shared = self._shared
        assert shared is not None
        seen = -1
        while True:
            with self._cond:
                if self._closing or self._fatal is not None:
                    return
            seen = shared.wait(CHECKPOINT_EVENT, seen, self._cluster.refresh)
            with self._cond:
                if self._closing or self._fatal is not None:
                    return
            try:
                self._refresh()
            except LogIntegrityError as exc:
                _log.error("log %s: %s", self._origin, exc)
                self._stop(exc)
                return
            except Exception as exc:
                _log.warning("log %s: refreshing from storage failed: %s", self._origin, exc)
            self._expire_waiters()
            if self.role == FOLLOWER and time.monotonic() >= self._next_takeover:
                if not self._try_takeover():
                    self._next_takeover = time.monotonic() + self._cluster.lease_retry

    def _refresh(self) -> None:
        """Adopt the stored checkpoint and answer this process's committed submissions.

        Reads the assignments made since the last snapshot's size (or since the size
        committed before the latest queueing, if lower): each entry's assignment is
        read at least once in the snapshot where it became final. Cost: the rows
        answered since the last refresh, however many entries are waiting here.
        """
        with self._refresh_lock:
            self._refresh_locked()

    def _refresh_locked(self) -> None:
        shared = self._shared
        assert shared is not None
        with self._fe_cond:
            floor, self._floor = self._floor, None
            waiting = bool(self._waiting)
        since = self._answered if floor is None else min(self._answered, floor)
        try:
            if waiting or floor is not None:
                note, assigned = shared.results(since)
            else:
                note, assigned = self._storage.read_checkpoint(), []
            if note is None:
                raise LogIntegrityError(
                    self._storage.describe(CHECKPOINT_KEY),
                    "the checkpoint disappeared from storage",
                )
            snapshot = self._adopt(note)
        except BaseException:
            if floor is not None:  # ask from there again next time
                with self._fe_cond:
                    self._floor = floor if self._floor is None else min(self._floor, floor)
            raise
        # Provisional rows (past this snapshot) have sizes above it: asked for again.
        self._answered = snapshot.size
        final = [a for a in assigned if a.size <= snapshot.size]
        if not final:
            return
        current = self._published()
        node = self._node_reader(current.size)
        for a in final:
            with self._fe_cond:
                waiter = self._waiting.pop(a.ticket, None)
            if waiter is None:
                continue
            try:
                if node(0, a.position) != waiter.leaf_hash:
                    raise LogIntegrityError(
                        self._storage.describe(CHECKPOINT_KEY),
                        f"the queue says entry {a.ticket} is at {a.position}, but the tree holds "
                        "another leaf there",
                    )
                proof = self._inclusion_proof(a.position, current.size, current.size)
            except SigstackError as exc:
                _log.error("log %s: cannot answer a queued entry: %s", self._origin, exc)
                waiter.future.set_exception(
                    Unavailable(f"the entry's answer is unavailable: {exc}")
                )
                continue
            waiter.future.set_result(Integrated(a.position, current, proof, a.duplicate))

    def _adopt(self, note: bytes) -> Checkpoint:
        """Verify a stored checkpoint against the published one; publish it if newer."""
        current = self._published()
        if note == current.note:
            return current
        body = self._verified(note, "the stored checkpoint")
        stored = Checkpoint(self._origin, body.size, body.root_hash, note)
        if stored.size >= current.size:
            self._check_consistent(current, stored)
            self._publish(stored)
        else:
            self._check_consistent(stored, current)
        return stored

    def _expire_waiters(self) -> None:
        now = time.monotonic()
        with self._fe_cond:
            expired = [t for t, w in self._waiting.items() if w.deadline <= now]
            futures = [self._waiting.pop(t).future for t in expired]
        if not futures:
            return
        error = Unavailable(
            f"the entry was queued but not integrated within {self._cluster.wait_timeout:g}s "
            "(no sequencer, or a backlog); it may still be logged: retry (identical entries "
            "are deduplicated)"
        )
        fail_all(futures, error)

    def _close_shared(self, timeout: float | None) -> None:
        """``close()`` of a shared log: flush, drain, answer what committed, release."""
        assert self._shared is not None
        with self._fe_cond:
            self._fe_closing = True
            self._fe_cond.notify_all()
        self._shared.wake()
        for thread in (self._inserter, self._thread, self._pump):
            if thread is not None:
                thread.join(timeout)
        self._shared.wake()
        if self._fatal is None:
            try:
                self._refresh()
            except Exception as exc:
                _log.warning("log %s: final refresh failed: %s", self._origin, exc)
        if self._watcher is not None:
            self._watcher.join(timeout)
        with self._fe_cond:
            left = [w.future for w in self._waiting.values()]
            left += [p.future for p in self._outbox]
            self._waiting.clear()
            self._outbox.clear()
        error = Unavailable(
            f"the log {self._origin} closed here before the entry was integrated; it may "
            "still be logged by another process"
        )
        fail_all(left, error)
        with self._cond:
            self._closed = True
            self._role = STOPPED
        self._storage.release_writer()
