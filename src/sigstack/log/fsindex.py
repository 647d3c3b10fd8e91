"""The filesystem backend's entry index: a write buffer in memory over SQLite tables.

Why not one SQLite table: entries' keys are hashes, so every insert lands on a random
page of one B-tree. Once the table outgrows a batch, each row rewrites a page of its own
(4 KiB of WAL per 40-byte row), and the log slows as it grows (measured: 52k rows/s
into an empty table, 27k at 3 million rows). This index keeps the random writes small
and off the sequencer's path:

* **Buffer.** ``add`` puts rows into an in-memory buffer (chunks of ``CHUNK_ROWS``
  rows) and returns; lookups read the buffer first. A chunk keeps the leaf hashes of
  consecutive positions (what the engine adds for every entry) as a run: a list and a
  dict filled at C speed, no tuple per row; other rows one by one. A background thread
  (the *flusher*) writes each full chunk, or whatever is buffered after
  ``FLUSH_AFTER`` seconds, to SQLite in one transaction, sorted (a run by SQLite
  itself, from one blob). ``add`` waits when
  more than ``MAX_CHUNKS`` chunks are waiting (backpressure), so memory is bounded.
* **Epochs.** Rows go to one table per *epoch* of ``EPOCH`` log positions
  (``idx_<n>`` for positions ``n*EPOCH .. (n+1)*EPOCH-1``). Only the newest epoch
  receives rows, so inserts never touch a B-tree bigger than one epoch, however long
  the log; truncation drops whole epochs and trims one.
* **Bloom filters.** Every epoch has a Bloom filter over its keys (``BLOOM_BITS``
  bits, four probes taken from the key's hash), kept in
  memory by the writer and stored in the database when its epoch is complete. The
  flusher sets a chunk's bits just before it writes the chunk (rows are found in the
  buffer until it leaves), so the sequencer does not pay for them. A
  lookup queries only the epochs whose filter may hold the key, so a miss (every new
  entry's deduplication check) costs no SQL at all, at any log size. ``close``
  stores the filters of incomplete epochs too (table ``partial_bloom``, with the
  durable watermark they cover), and the next writer uses them only if ``D`` is still
  that watermark: after a clean stop they are exact, after a crash (or a flush by
  another version) they are not trusted, and the flusher rebuilds them from the
  tables; until then those epochs are always queried (at 10 million entries,
  querying the newest epoch for every key made deduplication 7 times slower).
  Processes that only read (fsck) use no filters.

Durability contract (what :meth:`complete_to` reports to the engine): ``add`` is NOT
durable on return. The table ``meta`` holds ``durable = D``: every row of every
position below ``D`` is in SQLite, committed with ``synchronous=FULL``. Rows reach
the buffer in position order (all of a position's rows in one ``add``), so each flush
advances ``D`` to the end of what it wrote. After a crash the engine re-adds rows for
``[D, size)`` from the tiles and entry bundles, which the index is derived from.
``close`` flushes everything. A failed flush is reported by the next call and the
buffer is discarded: ``truncate`` (which the engine calls when it recovers) resets
the failure, and ``complete_to`` then tells the engine what to re-add.

The database is ``<root>/.index2.sqlite3`` (WAL mode). An index from an older sigstack
(``.index.sqlite3``) is deleted when a writer opens the log; the engine rebuilds the
index from the tiles.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sigstack.core.errors import StorageError
from sigstack.fsutil import unlink_quietly
from sigstack.log.storage import IndexRow

_log = logging.getLogger(__name__)

INDEX_FILE = ".index2.sqlite3"
LEGACY_INDEX_FILE = ".index.sqlite3"
FORMAT = 2

EPOCH = 1 << 20
"""Log positions per epoch table."""
CHUNK_ROWS = 32768
"""Rows per buffered chunk (one flush transaction)."""
MAX_CHUNKS = 4
"""Full chunks that may wait for the flusher before ``add`` waits."""
FLUSH_AFTER = 1.0
"""Seconds after which a partial chunk is flushed anyway."""
BLOOM_BITS = 1 << 24
"""Bits per epoch filter (2 MiB): 16 per row for an epoch of leaf hashes, four probes
each (about 0.2% false positives); fewer per row where logs add search keys."""

_LOOKUP_CHUNK = 500  # keys per SELECT (SQLite's default variable limit is 999)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS bloom (epoch INTEGER PRIMARY KEY, bits BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS partial_bloom (
    epoch INTEGER PRIMARY KEY, durable INTEGER NOT NULL, bits BLOB NOT NULL
);
"""

_Key = tuple[str, bytes]
_K = TypeVar("_K", bytes, _Key)


def _table(epoch: int) -> str:
    return f"idx_{epoch}"


def _create(epoch: int) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {_table(epoch)} (ns TEXT NOT NULL, key BLOB NOT NULL, "
        "pos INTEGER NOT NULL, PRIMARY KEY (ns, key, pos)) WITHOUT ROWID"
    )


_LEAF_BYTES = 32


def _insert_leaves(table: str) -> str:
    """Insert ``?2`` rows ``("leaf", key, ?3 + i)``, key ``i`` being bytes ``32 i ..
    32 i + 31`` of the blob ``?1``, in key order (the B-tree's order)."""
    return (
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?2) "  # noqa: S608 (only the table name is interpolated)
        f"INSERT OR IGNORE INTO {table} (ns, key, pos) "
        f"SELECT 'leaf', substr(?1, i * {_LEAF_BYTES} + 1, {_LEAF_BYTES}), ?3 + i FROM n "
        "ORDER BY 2, 3"
    )


def _probes(namespace: str, key: bytes) -> tuple[int, int, int, int]:
    """The filter's bit numbers for ``(namespace, key)``: four 24-bit fields of a digest.

    Leaf hashes are SHA-256 outputs already, so their own bytes serve (a key chosen to
    collide only costs its submitter an SQL query); other keys are hashed with BLAKE2b.
    """
    if namespace == "leaf" and len(key) >= 12:
        digest = key
    else:
        digest = hashlib.blake2b(namespace.encode() + b"\0" + key, digest_size=12).digest()
    v = int.from_bytes(digest[:12], "big")
    return (v >> 72, (v >> 48) & 0xFFFFFF, (v >> 24) & 0xFFFFFF, v & 0xFFFFFF)


def _place(positions: dict[_K, int | list[int]], key: _K, position: int) -> bool:
    """Record ``position`` for ``key`` as ``_Chunk`` keeps them (an int, a list once
    there are several); False if it was there already."""
    known = positions.get(key)
    if known is None:
        positions[key] = position
    elif isinstance(known, int):
        if known == position:
            return False
        positions[key] = [known, position]
    elif position in known:
        return False
    else:
        known.append(position)
    return True


def _found(
    found: dict[bytes, set[int]], key: bytes, positions: int | list[int], below: int
) -> None:
    """Record a buffer hit: ``positions`` of ``key`` (as ``_Chunk`` keeps them) below ``below``."""
    if isinstance(positions, int):
        if positions < below:
            found.setdefault(key, set()).add(positions)
    else:
        found.setdefault(key, set()).update(p for p in positions if p < below)


def _bloom_add(bits: bytearray, probes: tuple[int, ...]) -> None:
    for bit in probes:
        bits[bit >> 3] |= 1 << (bit & 7)


@dataclass
class _Chunk:
    """Buffered rows: a run of leaf hashes of consecutive positions (what the engine
    adds for every entry, kept without a tuple per row) and any other rows."""

    first: int = 0  # leaves[i] is the leaf hash of position first + i
    leaves: list[bytes] = field(default_factory=list)
    # A key's position, or its positions when it has several (rare: a search key
    # shared by entries, an entry logged twice). A plain int for the usual single
    # one: one object less per row, and the buffer holds rows by the hundred thousand.
    leaf_keys: dict[bytes, int | list[int]] = field(default_factory=dict)
    rows: list[IndexRow] = field(default_factory=list)
    keys: dict[_Key, int | list[int]] = field(default_factory=dict)
    mixed: bool = False  # some leaf rows are in ``rows`` (off the run)
    end: int = 0  # positions below this have all their rows here or earlier

    def __len__(self) -> int:
        return len(self.leaves) + len(self.rows)

    def add_leaves(self, start: int, leaves: Sequence[bytes]) -> bool:
        """Extend the run with ``leaves`` at ``start ..``; False (nothing done) when
        they do not continue it."""
        run = self.leaves
        if run:
            if self.first + len(run) != start:
                return False
        else:
            self.first = start
        fresh = dict(zip(leaves, range(start, start + len(leaves)), strict=True))
        known = self.leaf_keys
        if len(fresh) == len(leaves) and fresh.keys().isdisjoint(known.keys()):
            known.update(fresh)  # the usual case, at C speed
        else:
            for offset, key in enumerate(leaves, start):
                _place(known, key, offset)
        run.extend(leaves)
        return True

    def add(self, row: IndexRow) -> bool:
        """Add one row; False if it was already here."""
        namespace, key, position = row
        if namespace == "leaf" and len(key) == _LEAF_BYTES:
            if self.add_leaves(position, [key]):
                return True
            self.mixed = True
        if not _place(self.keys, (namespace, key), position):
            return False
        self.rows.append(row)
        return True

    def all_rows(self) -> Iterator[IndexRow]:
        for offset, key in enumerate(self.leaves, self.first):
            yield ("leaf", key, offset)
        yield from self.rows

    def leaf_runs(self) -> Iterator[tuple[int, int, list[bytes]]]:
        """The run cut at epoch boundaries: ``(epoch, first position, leaf hashes)``."""
        position, run = self.first, self.leaves
        done = 0
        while done < len(run):
            epoch = (position + done) // EPOCH
            take = min(len(run) - done, (epoch + 1) * EPOCH - position - done)
            yield epoch, position + done, run[done : done + take]
            done += take

    def truncated(self, size: int) -> _Chunk:
        chunk = _Chunk(end=min(self.end, size))
        keep = max(0, min(len(self.leaves), size - self.first))
        if keep:
            chunk.add_leaves(self.first, self.leaves[:keep])
        for row in self.rows:
            if row[2] < size:
                chunk.add(row)
        return chunk


class EntryIndex:
    """The entry index of one :class:`~sigstack.log.fs.FilesystemStorage` (see module doc).

    ``writer`` is true for the object that holds the log's writer lease: only it adds,
    truncates, keeps filters and runs a flusher. Thread-safe.
    """

    def __init__(self, root: Path, *, writer: bool) -> None:
        self._path = root / INDEX_FILE
        self._writer = writer
        self._local = threading.local()
        self._lock = threading.Condition()
        self._flush_lock = threading.Lock()  # held while SQLite is written
        self._active = _Chunk()
        self._frozen: list[_Chunk] = []
        self._active_since = 0.0
        self._failure: StorageError | None = None
        self._closed = False
        self._epochs: set[int] = set()
        self._blooms: dict[int, bytearray] = {}
        self._pending_blooms: list[int] = []  # epochs whose filter the flusher rebuilds
        self._stored_blooms: set[int] = set()  # epochs whose filter is in SQLite
        self._durable = 0
        self._thread: threading.Thread | None = None
        if writer:
            for suffix in ("", "-wal", "-shm", "-journal"):
                unlink_quietly(root / (LEGACY_INDEX_FILE + suffix))
            self._load()
            self._thread = threading.Thread(
                target=self._run, name=f"sigstack-index {root.name}", daemon=True
            )
            self._thread.start()

    # -- SQLite -------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self._path, timeout=30, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.executescript(_SCHEMA)
            except sqlite3.Error as exc:
                raise StorageError(f"could not open the entry index {self._path}: {exc}") from exc
            self._local.conn = conn
        return conn

    def _error(self, action: str, exc: sqlite3.Error) -> StorageError:
        return StorageError(f"could not {action} the entry index {self._path}: {exc}")

    @contextlib.contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` .. ``COMMIT`` on this thread's connection; an SQLite
        error rolls back and becomes a ``StorageError`` saying what failed."""
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise self._error(action, exc) from exc

    def _read_epochs(self, db: sqlite3.Connection) -> set[int]:
        names = db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'idx_[0-9]*'"
        )
        return {int(name[4:]) for (name,) in names}

    def _read_durable(self, db: sqlite3.Connection) -> int:
        row = db.execute("SELECT value FROM meta WHERE name = 'durable'").fetchone()
        return int(row[0]) if row else 0

    def _load(self) -> None:
        """Writer start: check the format, read the epochs, D and the stored filters."""
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT value FROM meta WHERE name = 'format'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta (name, value) VALUES ('format', ?)", (FORMAT,))
            elif row[0] != FORMAT:
                raise StorageError(
                    f"the entry index {self._path} has format {row[0]}, this sigstack reads "
                    f"format {FORMAT}; delete the file (it is rebuilt from the log) or upgrade"
                )
            db.execute("COMMIT")
            self._epochs = self._read_epochs(db)
            self._durable = self._read_durable(db)
            stored = dict(db.execute("SELECT epoch, bits FROM bloom"))
            # Filters of incomplete epochs, saved by a clean close: exact only while
            # nothing was flushed since (D unchanged), see the module docstring.
            partial = {
                epoch: bits
                for epoch, durable, bits in db.execute(
                    "SELECT epoch, durable, bits FROM partial_bloom"
                )
                if durable == self._durable
            }
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise self._error("open", exc) from exc
        size = BLOOM_BITS // 8
        for epoch in sorted(self._epochs):
            bits = stored.get(epoch)
            if bits is not None and len(bits) == size:
                self._blooms[epoch] = bytearray(bits)
                self._stored_blooms.add(epoch)
            elif (bits := partial.get(epoch)) is not None and len(bits) == size:
                self._blooms[epoch] = bytearray(bits)
            else:
                self._pending_blooms.append(epoch)
        self._active = _Chunk(end=self._durable)

    # -- the writer's side ----------------------------------------------------------------

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise StorageError(f"the entry index {self._path} is closed")

    def add(self, rows: Sequence[IndexRow], start: int = 0, leaves: Sequence[bytes] = ()) -> None:
        """Buffer the leaf hashes ``leaves`` (of positions ``start ..``), then ``rows``."""
        if not self._writer:
            raise StorageError(f"the entry index {self._path} is open read-only")
        with self._lock:
            while len(self._frozen) >= MAX_CHUNKS and self._failure is None and not self._closed:
                self._lock.wait()
            self._check()
            active = self._active
            if not len(active):
                self._active_since = time.monotonic()
                self._lock.notify_all()  # the flusher starts the FLUSH_AFTER clock
            end = low = active.end
            if leaves:
                low = min(low, start)
                if not active.add_leaves(start, leaves):  # off the run (not from the engine)
                    for offset, key in enumerate(leaves, start):
                        active.add(("leaf", key, offset))
                end = max(end, start + len(leaves))
            # Search keys (the engine's leaf hashes came as ``leaves``, above).
            for row in rows:
                active.add(row)
                position = row[2]
                if position >= end:
                    end = position + 1
                elif position < low:
                    low = position
            # Every epoch the buffer reaches has a filter (empty until the flusher
            # sets the bits of the rows it writes): lookups test only known epochs.
            for epoch in range(low // EPOCH, (end - 1) // EPOCH + 1 if end else 0):
                if epoch not in self._epochs:
                    self._blooms[epoch] = bytearray(BLOOM_BITS // 8)
                    self._epochs.add(epoch)
            active.end = end
            if len(active) >= CHUNK_ROWS:
                self._freeze()

    def _set_bits(self, chunk: _Chunk) -> None:
        """Add ``chunk``'s rows to their epochs' filters (the flusher, before the rows
        leave the buffer: until then lookups find them there). An epoch whose filter
        is being rebuilt has none yet; the rebuild adds the buffered rows."""
        with self._lock:
            filters = dict(self._blooms)
        for epoch, _first, run in chunk.leaf_runs():
            bits = filters.get(epoch)
            if bits is None:
                continue
            for key in run:  # _probes of a leaf hash, inlined: this runs for every entry
                v = int.from_bytes(key[:12], "big")
                p = v >> 72
                bits[p >> 3] |= 1 << (p & 7)
                p = v >> 48 & 0xFFFFFF
                bits[p >> 3] |= 1 << (p & 7)
                p = v >> 24 & 0xFFFFFF
                bits[p >> 3] |= 1 << (p & 7)
                p = v & 0xFFFFFF
                bits[p >> 3] |= 1 << (p & 7)
        for namespace, key, position in chunk.rows:
            bits = filters.get(position // EPOCH)
            if bits is not None:
                _bloom_add(bits, _probes(namespace, key))

    def _freeze(self) -> None:
        """Move the active chunk to the flusher's queue (caller holds the lock)."""
        if len(self._active):
            self._frozen.append(self._active)
            self._active = _Chunk(end=self._active.end)
            self._lock.notify_all()

    def complete_to(self) -> int:
        """Every position below this has all its rows in the index (buffered or durable)."""
        with self._lock:
            if not self._writer:
                return self._read_durable(self._db())
            return self._active.end

    def truncate(self, size: int) -> None:
        """Drop rows of positions ``>= size``; reset a failed flush (see module doc)."""
        if not self._writer:
            raise StorageError(f"the entry index {self._path} is open read-only")
        with self._flush_lock, self._lock:
            if self._closed:
                raise StorageError(f"the entry index {self._path} is closed")
            db = self._db()
            if self._failure is not None:  # forget the buffer: the engine re-adds from D
                self._failure = None
                self._frozen = []
                try:
                    self._durable = self._read_durable(db)
                    self._epochs = self._read_epochs(db)
                except sqlite3.Error as exc:
                    raise self._error("read", exc) from exc
                self._active = _Chunk(end=self._durable)
            else:
                self._frozen = [c.truncated(size) for c in self._frozen]
                self._frozen = [c for c in self._frozen if len(c)]
                self._active = self._active.truncated(size)
            if self._frozen:
                self._active.end = max(self._active.end, self._frozen[-1].end)
            self._lock.notify_all()
            first = size // EPOCH
            try:
                durable = self._read_durable(db)
                # Every row in SQLite is below D (a flush writes rows and D together), and
                # so is every stored filter's epoch: when D <= size there is nothing to
                # drop, and opening a large log needs no scan of its newest epoch.
                if durable > size:
                    self._truncate_tables(db, first, size)
                    durable = size
                    self._stored_blooms = {e for e in self._stored_blooms if e < first}
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise self._error("truncate", exc) from exc
            self._durable = durable
            self._active.end = min(self._active.end, size)
            for epoch in [e for e in self._epochs if e > first]:
                self._epochs.discard(epoch)
                self._blooms.pop(epoch, None)
            self._pending_blooms = [e for e in self._pending_blooms if e in self._epochs]

    def _truncate_tables(self, db: sqlite3.Connection, first: int, size: int) -> None:
        """Drop the rows of positions ``>= size`` (in epoch ``first`` and later) and D."""
        db.execute("BEGIN IMMEDIATE")
        for epoch in sorted(e for e in self._epochs if e > first):
            db.execute(f"DROP TABLE IF EXISTS {_table(epoch)}")
        if first in self._epochs:
            db.execute(_create(first))
            db.execute(f"DELETE FROM {_table(first)} WHERE pos >= ?", (size,))  # noqa: S608 (table names are generated)
        db.execute("DELETE FROM bloom WHERE epoch >= ?", (first,))
        db.execute("DELETE FROM partial_bloom")
        db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('durable', ?)", (size,))
        db.execute("COMMIT")

    def close(self) -> None:
        """Flush everything buffered (writer), stop the flusher, close connections."""
        if self._writer and not self._closed:
            with self._lock:
                self._freeze()
            try:
                self._flush_all()
                self._save_partial_blooms()
            except StorageError as exc:  # nothing is lost: the next writer re-adds from D
                _log.warning("entry index: buffered rows not flushed at close: %s", exc)
            finally:
                with self._lock:
                    self._closed = True
                    self._lock.notify_all()
                if self._thread is not None:
                    self._thread.join(timeout=30)
        self._closed = True
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            self._local.conn = None

    def _save_partial_blooms(self) -> None:
        """At close, with everything flushed: store the filters of incomplete epochs
        with the watermark they are exact for (see the module docstring)."""
        with self._flush_lock, self._lock:
            if self._failure is not None or self._frozen or len(self._active):
                return  # not everything is in SQLite: the next writer rebuilds them
            durable = self._durable
            partial = [
                (epoch, durable, bytes(bits))
                for epoch, bits in self._blooms.items()
                if epoch not in self._stored_blooms and epoch not in self._pending_blooms
            ]
        with self._transaction("save the filters of") as db:
            if self._read_durable(db) == durable:
                db.execute("DELETE FROM partial_bloom")
                db.executemany(
                    "INSERT INTO partial_bloom (epoch, durable, bits) VALUES (?, ?, ?)", partial
                )

    # -- the flusher -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._closed:
                        return
                    timeout = None
                    if self._failure is None:  # a failure waits for truncate to reset it
                        if self._frozen or self._pending_blooms:
                            break
                        if len(self._active):
                            timeout = self._active_since + FLUSH_AFTER - time.monotonic()
                            if timeout <= 0:
                                self._freeze()
                                break
                    self._lock.wait(timeout)
            try:
                if not self._flush_all():
                    self._rebuild_one_bloom()
            except StorageError:
                pass  # recorded in _failure and reported by the next call
            except Exception:  # pragma: no cover - a bug; keep the process alive and say so
                _log.exception("entry index flusher failed")
                time.sleep(1.0)

    def _flush_all(self) -> bool:
        """Write every frozen chunk; True when there was any."""
        wrote = False
        while True:
            with self._flush_lock:
                with self._lock:
                    if self._failure is not None:
                        raise self._failure
                    if not self._frozen:
                        return wrote
                    chunk = self._frozen[0]
                self._set_bits(chunk)
                with self._lock:
                    # Filters of epochs this chunk completes, each stored once (a copy
                    # of 2 MiB: not repeated for every flush).
                    blooms = {
                        e: bytes(b)
                        for e, b in self._blooms.items()
                        if (e + 1) * EPOCH <= chunk.end
                        and e not in self._stored_blooms
                        and e not in self._pending_blooms
                    }
                try:
                    self._write(chunk, blooms)
                except StorageError as exc:
                    with self._lock:
                        self._failure = exc
                        self._lock.notify_all()
                    _log.error("%s", exc)
                    raise
                with self._lock:
                    if self._frozen and self._frozen[0] is chunk:
                        self._frozen.pop(0)
                    self._durable = max(self._durable, chunk.end)
                    self._stored_blooms.update(blooms)
                    self._lock.notify_all()
                wrote = True

    def _write(self, chunk: _Chunk, blooms: dict[int, bytes]) -> None:
        leaves = {epoch: (first, keys) for epoch, first, keys in chunk.leaf_runs()}
        by_epoch: dict[int, list[IndexRow]] = {}
        for row in chunk.rows:
            by_epoch.setdefault(row[2] // EPOCH, []).append(row)
        with self._transaction("update") as db:
            for epoch in sorted(leaves.keys() | by_epoch.keys()):
                table = _table(epoch)
                db.execute(_create(epoch))
                if epoch in leaves:
                    first, keys = leaves[epoch]
                    # SQLite cuts the blob, numbers and sorts the rows: no Python per row,
                    # so the flush holds the GIL for microseconds, not for every row.
                    db.execute(_insert_leaves(table), (b"".join(keys), len(keys), first))
                rows = by_epoch.get(epoch)
                if rows:
                    rows.sort()
                    db.executemany(
                        f"INSERT OR IGNORE INTO {table} (ns, key, pos) VALUES (?, ?, ?)",  # noqa: S608 (table names are generated)
                        rows,
                    )
            durable = max(self._read_durable(db), chunk.end)
            db.execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES ('durable', ?)", (durable,)
            )
            db.executemany(
                "INSERT OR REPLACE INTO bloom (epoch, bits) VALUES (?, ?)", blooms.items()
            )

    def _rebuild_one_bloom(self) -> None:
        """Rebuild the filter of one epoch that has none (after a restart)."""
        with self._lock:
            if not self._pending_blooms:
                return
            epoch = self._pending_blooms[0]
        bits = bytearray(BLOOM_BITS // 8)
        db = self._db()
        with self._flush_lock:  # no flush between the scan and publishing the filter
            try:
                for namespace, key in db.execute(f"SELECT ns, key FROM {_table(epoch)}"):  # noqa: S608 (table names are generated)
                    _bloom_add(bits, _probes(namespace, key))
            except sqlite3.Error as exc:
                _log.warning("entry index: could not rebuild a filter: %s", exc)
                return
            with self._lock:
                if epoch in self._pending_blooms:
                    self._pending_blooms.remove(epoch)
                    # rows added to the buffer meanwhile: they are not in SQLite yet
                    for chunk in [*self._frozen, self._active]:
                        for namespace, key, position in chunk.all_rows():
                            if position // EPOCH == epoch:
                                _bloom_add(bits, _probes(namespace, key))
                    self._blooms[epoch] = bits

    # -- lookups ------------------------------------------------------------------------

    def lookup(self, namespace: str, keys: Sequence[bytes], below: int) -> dict[bytes, list[int]]:
        found: dict[bytes, set[int]] = {}
        to_query: dict[int, list[bytes]] = {}
        with self._lock:
            self._check()
            chunks = [*self._frozen, self._active]
            if self._writer:
                filters = [
                    (e, self._blooms.get(e)) for e in sorted(self._epochs) if e * EPOCH < below
                ]
                leaf = namespace == "leaf"
                wanted = set(keys)
                for chunk in chunks:
                    if leaf:  # the run's keys: one set operation finds the hits
                        run = chunk.leaf_keys
                        for key in run.keys() & wanted:
                            _found(found, key, run[key], below)
                        if not chunk.mixed:
                            continue
                    for key in wanted:
                        positions = chunk.keys.get((namespace, key))
                        if positions is not None:
                            _found(found, key, positions, below)
                if filters:
                    for key in keys:
                        # A Bloom test, unrolled: every key is tested against every epoch's
                        # filter (ten at 10 million entries), so byte offsets and masks are
                        # worked out once per key.
                        if leaf and len(key) >= 12:  # _probes, inlined
                            v = int.from_bytes(key[:12], "big")
                            p0, p1, p2, p3 = (
                                v >> 72,
                                v >> 48 & 0xFFFFFF,
                                v >> 24 & 0xFFFFFF,
                                v & 0xFFFFFF,
                            )
                        else:
                            p0, p1, p2, p3 = _probes(namespace, key)
                        b0, b1, b2, b3 = p0 >> 3, p1 >> 3, p2 >> 3, p3 >> 3
                        m0, m1, m2, m3 = 1 << (p0 & 7), 1 << (p1 & 7), 1 << (p2 & 7), 1 << (p3 & 7)
                        for epoch, bits in filters:
                            if bits is not None and not (
                                bits[b0] & m0 and bits[b1] & m1 and bits[b2] & m2 and bits[b3] & m3
                            ):
                                continue
                            to_query.setdefault(epoch, []).append(key)
        if not self._writer:
            db = self._db()
            try:
                epochs = sorted(e for e in self._read_epochs(db) if e * EPOCH < below)
            except sqlite3.Error as exc:
                raise self._error("read", exc) from exc
            every = list(keys)
            to_query = {epoch: every for epoch in epochs}
        if to_query:
            db = self._db()
            for epoch, batch in to_query.items():
                try:
                    self._query(db, epoch, namespace, batch, below, found)
                except sqlite3.OperationalError as exc:
                    if "no such table" not in str(exc):  # else: not flushed yet, or truncated
                        raise self._error("read", exc) from exc
                except sqlite3.Error as exc:
                    raise self._error("read", exc) from exc
        return {key: sorted(positions) for key, positions in found.items() if positions}

    @staticmethod
    def _query(
        db: sqlite3.Connection,
        epoch: int,
        namespace: str,
        keys: Sequence[bytes],
        below: int,
        found: dict[bytes, set[int]],
    ) -> None:
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = list(keys[start : start + _LOOKUP_CHUNK])
            marks = ",".join("?" * len(chunk))
            cursor = db.execute(
                f"SELECT key, pos FROM {_table(epoch)} WHERE ns = ? AND key IN ({marks}) "  # noqa: S608 (only generated names and "?" marks are interpolated)
                "AND pos < ?",
                [namespace, *chunk, below],
            )
            for key, position in cursor:
                found.setdefault(bytes(key), set()).add(position)
