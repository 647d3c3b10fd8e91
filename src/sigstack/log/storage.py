"""The storage contract the log engine relies on, and key validation.

A log is a set of immutable-by-name objects (tiles and entry bundles, keyed by
their C2SP path such as ``tile/0/x001/234`` or ``tile/entries/000.p/7``) plus one
mutable object, the checkpoint. Every driver (:mod:`sigstack.log.fs`,
:mod:`sigstack.log.memory`, future object stores) implements :class:`LogStorage`
and MUST honour this contract, which the engine's crash safety is built on:

Durability
    ``put_many`` returns only once every object it was given is durable (survives
    a crash or power loss). ``swap_checkpoint`` returns only once the new
    checkpoint is durable.

Atomicity
    Each object is replaced atomically: a reader (this process or another) sees
    the old bytes or the new bytes, never a mix, a prefix or an empty object.
    ``put_many`` as a whole is NOT atomic: if it raises, any subset of its objects
    may have been written (each one whole). The engine copes because a checkpoint
    is only written after ``put_many`` succeeded, and because an object's content
    is a pure function of the entries of the checkpoint that covers it.

Compare-and-swap
    ``swap_checkpoint(old, new)`` replaces the checkpoint only if the stored one is
    byte-for-byte ``old`` (``None``: no checkpoint yet), and raises
    :class:`~sigstack.core.errors.Conflict` otherwise, leaving it untouched.

High-water mark (checkpoint rollback)
    ``swap_checkpoint`` also records ``new`` as the log's high-water mark, in a
    place apart from the checkpoint (a hidden file, another row) so that an
    operator who restores an older checkpoint (a file from a backup, an edited
    row) while the log is stopped does not restore the mark with it. The mark
    is written only once the checkpoint itself is durable, so after a crash it is
    never newer than the checkpoint; it may be older (by the last swap) where the
    backend says so. ``read_high_water`` returns it, or ``None`` when none was
    recorded (a log written by an older sigstack, or a backend that keeps none).
    The engine refuses to open or sign over a checkpoint that is older than the
    mark or forks from it (see :mod:`sigstack.log.engine`): a checkpoint newer
    than the stored one was published, and signing on from the older one would
    be a split view.

Single writer
    ``acquire_writer`` takes an exclusive lease on the log for one engine (across
    processes where the backend can), raising ``Conflict`` if another holder has
    it; ``release_writer`` gives it back. Reads need no lease.
    ``check_writer`` raises ``Conflict`` unless this object holds the lease at
    that moment (``StorageError`` if it cannot tell); the engine calls it right
    before it signs a checkpoint, and signs nothing when it raises. Backends
    whose lease cannot be lost while held (an ``flock``, a process-local flag)
    may keep the default, which checks nothing; a backend whose lease can be
    lost (a database session that dies, a lease that expires) must check, and
    SHOULD make its writes fail once the lease is lost (fencing) so that the
    checkpoint compare-and-swap stays the final guard. If ``lease_heartbeat``
    is a number, the lease expires unless used: the engine calls
    ``check_writer`` at least that often (seconds) while it holds the lease.

Entry index
    A multimap ``(namespace, key) -> log positions``: every entry's leaf hash
    (namespace ``leaf``), and whatever search keys a log adds (an artifact
    digest, a public key...). It is derived data, written with a batch's objects
    BEFORE its checkpoint, so after a crash it may hold rows for positions no
    checkpoint covers: ``index_lookup`` therefore takes ``below`` (the committed
    size) and ignores rows at or past it, and the engine calls
    ``index_truncate(size)`` whenever it (re)loads a checkpoint, before it
    sequences anything, so the next batch never finds rows of a batch that was
    lost. ``index_add`` is idempotent (adding a row that exists is a no-op) and,
    unless the backend says otherwise through ``index_complete_to``, durable on
    return. A backend that buffers rows (the filesystem one) returns from
    ``index_complete_to`` a position below which every row added is in the index,
    durably so for a new storage object; the engine re-adds rows for the positions
    from there to the checkpoint's size when it (re)loads a checkpoint, after
    ``index_truncate``. ``release_writer`` makes every row added durable.
    Namespaces are ``[a-z0-9_-]{1,32}``; keys are at most ``MAX_INDEX_KEY`` bytes.
    The engine adds a batch's rows with ``index_add_batch(start, leaves, rows)``: the
    leaf hashes of positions ``start ..`` and the search-key rows; its default is one
    ``index_add``, and a backend may store the leaf hashes without a row tuple each.

Shared queue (optional)
    A backend that several processes can share (PostgreSQL) also offers a
    :class:`SharedQueue`: frontends that do not hold the lease queue entries in
    it, and the lease holder sequences them. See :class:`SharedQueue` for its
    contract; :mod:`sigstack.log.engine` for how the engine uses it.

Errors
    Backend failures raise :class:`~sigstack.core.errors.StorageError` (or
    ``StateError`` for local files), naming the object or file at fault. A failed
    write may or may not have been persisted; callers must re-read to know.

Keys are relative C2SP paths: lowercase ``[a-z0-9._-]`` segments separated by
``/``, no empty, ``.`` or ``..`` segments, no segment starting with ``.``, at most
255 characters. ``checkpoint`` is reserved for the checkpoint and is refused by
``get``/``put_many``.
"""

from __future__ import annotations

import mmap
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sigstack.core.errors import InvalidRequest

CHECKPOINT_KEY = "checkpoint"
"""Name of the checkpoint object (read and written only through the checkpoint calls)."""

MAX_KEY_LENGTH = 255
MAX_INDEX_KEY = 256

IndexRow = tuple[str, bytes, int]
"""``(namespace, key, log position)``."""

LEAF_NAMESPACE = "leaf"
"""Index namespace of every entry's Merkle leaf hash."""
LEAF_HASH_SIZE = 32

PackBuffer = bytes | mmap.mmap
"""What a :class:`TilePack` record lives in: slicing it gives ``bytes``."""

_SEGMENT = re.compile(r"[a-z0-9_-][a-z0-9._-]*")
_KEY = re.compile(r"[a-z0-9_-][a-z0-9._-]*(?:/[a-z0-9_-][a-z0-9._-]*)*")
_NAMESPACE = re.compile(r"[a-z0-9_-]{1,32}")


def _validate_namespace(namespace: str) -> None:
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise InvalidRequest(f"index namespace {namespace!r} must match [a-z0-9_-]{{1,32}}")


def validate_index_row(namespace: str, key: bytes) -> None:
    """Raise :class:`InvalidRequest` unless ``(namespace, key)`` may be indexed."""
    _validate_namespace(namespace)
    if not isinstance(key, bytes) or not 0 < len(key) <= MAX_INDEX_KEY:
        raise InvalidRequest(f"index keys are 1 to {MAX_INDEX_KEY} bytes")


def validate_index_rows(rows: Sequence[IndexRow]) -> None:
    """:func:`validate_index_row` for every row (each namespace checked once)."""
    namespaces: set[str] = set()
    for namespace, key, _ in rows:
        if (
            type(namespace) is not str
            or type(key) is not bytes
            or not 0 < len(key) <= MAX_INDEX_KEY
        ):
            validate_index_row(namespace, key)  # raises
        namespaces.add(namespace)
    for namespace in namespaces:
        _validate_namespace(namespace)


def validate_leaves(start: int, leaves: Sequence[bytes]) -> None:
    """Raise :class:`InvalidRequest` unless ``leaves`` are leaf hashes from position
    ``start`` (checked at C speed: this runs for every batch)."""
    if type(start) is not int or start < 0:
        raise InvalidRequest(f"a batch's first position must be a natural number, not {start!r}")
    if leaves and (set(map(type, leaves)) != {bytes} or set(map(len, leaves)) != {LEAF_HASH_SIZE}):
        raise InvalidRequest(f"leaf hashes are {LEAF_HASH_SIZE} bytes")


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise :class:`InvalidRequest`."""
    # Fast path (every tile read goes through here): one match for the whole key.
    if type(key) is str and len(key) <= MAX_KEY_LENGTH and _KEY.fullmatch(key):
        if key != CHECKPOINT_KEY:
            return key
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidRequest(f"storage key {key!r} is empty or too long")
    if key == CHECKPOINT_KEY:
        raise InvalidRequest("the checkpoint is read and written with the checkpoint calls only")
    for segment in key.split("/"):
        if not _SEGMENT.fullmatch(segment):
            raise InvalidRequest(
                f"storage key {key!r} has an invalid segment {segment!r} "
                "(allowed: [a-z0-9._-], not empty, not starting with '.')"
            )
    return key


BACKGROUND_YIELD_SECONDS = 0.0002
"""How long background work that only speeds things up (loading and checking tile
packs) sleeps between small units of it: a busy Python thread keeps the interpreter
lock from the sequencer for up to 5 ms at a time (the switch interval), and writes
measured a quarter slower while such work ran without pauses."""


class TilePack(ABC):
    """Full tiles of one level, each with its inner nodes, in one byte buffer.

    Record ``index`` is the tile's 256 hashes followed by the 254 hashes of its
    sublevels 1..7 (what ``inner/<L>/<N>`` holds), 16,320 bytes in all, at
    ``buffer[offset:]``. The engine reads proof nodes straight from the buffer. The
    same trust rules apply as to ``get_many``: the engine checks a record's root
    against the parent tile before it uses the record.
    """

    @abstractmethod
    def record(self, index: int) -> tuple[PackBuffer, int] | None:
        """``(buffer, offset)`` of tile ``index``'s record, or None if the pack holds
        no valid record for it (the engine then reads the objects)."""

    def load(self, timeout: float) -> bool:
        """Bring the records into memory ahead of the proofs that will read them, if
        the backend does that, waiting at most ``timeout`` seconds; whether it is
        done (True at once where there is nothing to do)."""
        return True


class LogStorage(ABC):
    """Where a transparency log keeps its tiles, bundles and checkpoint.

    See the module docstring for the durability, atomicity and compare-and-swap
    contract every implementation must honour. Implementations are thread-safe.
    """

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The object stored under ``key``, or ``None`` if there is none."""

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """``[get(key) for key in keys]``. Backends where every read is a round trip
        fetch them together; no atomicity across the keys is promised."""
        return [self.get(key) for key in keys]

    def tile_pack(self, level: int) -> TilePack | None:
        """Direct access to the full tiles of ``level`` with their inner nodes, for a
        backend that keeps them packed in local memory-mappable files (the
        filesystem); None (the default) where reads go through ``get_many``."""
        return None

    @abstractmethod
    def put_many(self, items: Mapping[str, bytes]) -> None:
        """Store every object durably; each one replaced atomically (see contract)."""

    @abstractmethod
    def read_checkpoint(self) -> bytes | None:
        """The current checkpoint, or ``None`` if no log was ever created here."""

    @abstractmethod
    def swap_checkpoint(self, old: bytes | None, new: bytes) -> None:
        """Durably replace the checkpoint if it is ``old``; raise ``Conflict`` otherwise."""

    def read_high_water(self) -> bytes | None:
        """The checkpoint recorded as the high-water mark, or None (see "High-water mark").

        The default records none: a backend that keeps no mark cannot detect a
        restored older checkpoint, and must say so in its docstring.
        """
        return None

    @abstractmethod
    def acquire_writer(self) -> None:
        """Take the exclusive writer lease, or raise ``Conflict`` if someone holds it."""

    @abstractmethod
    def release_writer(self) -> None:
        """Give the writer lease back (idempotent)."""

    @abstractmethod
    def index_add(self, rows: Sequence[IndexRow]) -> None:
        """Durably add index rows (existing rows are left as they are)."""

    def index_add_batch(
        self, start: int, leaves: Sequence[bytes], rows: Sequence[IndexRow]
    ) -> None:
        """``index_add`` of the rows ``(LEAF_NAMESPACE, leaves[i], start + i)``, then ``rows``."""
        leaf_rows: list[IndexRow] = [(LEAF_NAMESPACE, h, start + i) for i, h in enumerate(leaves)]
        self.index_add([*leaf_rows, *rows])

    @abstractmethod
    def index_lookup(
        self, namespace: str, keys: Sequence[bytes], below: int
    ) -> dict[bytes, list[int]]:
        """Positions ``< below`` indexed under each key, ascending; keys without any omitted."""

    @abstractmethod
    def index_truncate(self, size: int) -> None:
        """Durably remove every index row whose position is ``>= size``."""

    def index_complete_to(self) -> int | None:
        """Every position below this has all its rows in the index; None when every
        ``index_add`` is durable on return (see "Entry index" in the module docstring)."""
        return None

    def check_writer(self) -> None:  # noqa: B027 (optional: see the docstring)
        """Raise ``Conflict`` unless this object holds the writer lease right now.

        The default checks nothing: it suits backends whose lease cannot be lost
        while held (see "Single writer" in the module docstring).
        """

    @property
    def lease_heartbeat(self) -> float | None:
        """Seconds between ``check_writer`` calls that keep the lease alive, or None."""
        return None

    def describe(self, key: str) -> str:
        """Where ``key`` lives, for error messages (a file path, a URL...)."""
        return key

    def close(self) -> None:  # noqa: B027 (optional hook: most backends hold nothing)
        """Release connections and threads; the object is unusable afterwards."""


# --- the shared queue ---------------------------------------------------------------------

ENTRIES_EVENT = "entries"
"""``SharedQueue.wait`` event: entries were queued."""

CHECKPOINT_EVENT = "checkpoint"
"""``SharedQueue.wait`` event: a checkpoint was committed (or a batch of duplicates answered)."""


@dataclass(frozen=True, slots=True)
class QueuedEntry:
    """An entry waiting in a :class:`SharedQueue`, as the sequencer claims it."""

    ticket: int
    leaf: bytes
    record: bytes
    dedup: bool


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where the sequencer put a queued entry: its ``position`` (an existing one for a
    ``duplicate``) in the tree of ``size`` that the batch's checkpoint commits."""

    ticket: int
    position: int
    duplicate: bool
    size: int


class SharedQueue(ABC):
    """Entries waiting to be sequenced, shared by every frontend of one log.

    Frontends (any process, lease or not) ``enqueue`` entries and receive
    tickets; the lease holder ``claim``s them, sequences them and ``assign``s each
    its position before it commits the checkpoint of the batch; frontends then read
    ``results``. The contract every implementation must honour:

    * ``enqueue`` returns once the entries are stored where the sequencer will
      find them (they need not survive a crash of the backend: no entry is
      acknowledged before its checkpoint is committed, and a lost entry is one
      its submitter gets no answer for).
    * ``claim(limit)`` hands out entries not assigned and not claimed by this
      lease term, oldest first. Entries claimed in an earlier term (a
      sequencer that died) are claimable again; entries this term claimed are
      not handed out twice unless ``release``-d. ``release(keep)`` makes every
      entry this term claimed, that is unassigned and not in ``keep`` (the
      tickets the sequencer still holds), claimable again: entries of a batch
      that failed, and entries whose claim committed although its answer was
      lost.
    * ``assign`` is durable on return and, like the entry index, written BEFORE
      the checkpoint that commits it: an assignment whose ``size`` exceeds the
      committed checkpoint's size is provisional. It requires the writer lease
      and fails once the lease is lost. ``reset(size)`` drops provisional
      assignments (``size`` greater than the committed size) and makes those
      entries claimable again; the engine calls it whenever it (re)loads the
      checkpoint, before it sequences anything, right after ``index_truncate``.
    * ``results(since)`` reads the committed checkpoint AND every assignment whose
      ``size`` is at least ``since`` in ONE consistent snapshot; an assignment is
      final exactly when its ``size`` is at most that checkpoint's size. (Reading
      them separately could pair a provisional assignment with a later
      checkpoint.) An assignment's ``size`` is never below the size committed when
      its entry was queued, so a frontend that asks from the committed size it
      knew before queueing, and then from each snapshot's size, sees every
      assignment of its entries become final.
    * ``wait(event, seen, timeout)`` blocks until the counter of ``event``
      (:data:`ENTRIES_EVENT`, :data:`CHECKPOINT_EVENT`) differs from ``seen`` or
      ``timeout`` passes, and returns the counter. Notifications are best effort:
      callers poll at their timeout.
    """

    # -- frontends -------------------------------------------------------------------

    @abstractmethod
    def enqueue(self, entries: Sequence[tuple[bytes, bytes, bool]]) -> list[int]:
        """Queue ``(leaf, record, dedup)`` entries; return their tickets, in order."""

    @abstractmethod
    def results(self, since: int) -> tuple[bytes | None, list[Assignment]]:
        """The committed checkpoint and the assignments of ``size >= since``, in one snapshot."""

    @abstractmethod
    def wait(self, event: str, seen: int, timeout: float) -> int:
        """Block until ``event``'s counter differs from ``seen`` or ``timeout``; return it."""

    # -- the lease holder --------------------------------------------------------------

    @abstractmethod
    def claim(self, limit: int) -> list[QueuedEntry]:
        """Up to ``limit`` waiting entries, oldest first, now claimed by this lease term."""

    @abstractmethod
    def release(self, keep: Sequence[int]) -> None:
        """Make this term's claimed, unassigned entries not in ``keep`` claimable again."""

    @abstractmethod
    def assign(self, assignments: Sequence[Assignment], *, committed: bool) -> None:
        """Durably record positions (before the checkpoint swap; needs the lease).

        ``committed``: every ``size`` is already covered by the committed
        checkpoint (a batch of duplicates only), so waiters are notified now.
        """

    @abstractmethod
    def reset(self, size: int) -> None:
        """Drop assignments past the committed ``size``; their entries wait again."""

    @abstractmethod
    def purge(self, size: int, older_than: float) -> int:
        """Delete final assignments (``size`` at most ``size``) queued over
        ``older_than`` seconds ago; return how many."""

    def wake(self) -> None:  # noqa: B027 (optional: waits end at their timeout anyway)
        """Make every ``wait`` in progress return now (the caller is shutting down)."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Stop notification threads and release connections."""
