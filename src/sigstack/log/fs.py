"""Filesystem log storage (POSIX).

Layout: ``<root>/checkpoint`` and ``<root>/<key>`` for every object, so ``root``
can be served as static files by any web server (``tile/0/x001/234``,
``tile/0/x001/234.p/17``, ``tile/entries/000``...). The engine also keeps each
full tile's inner nodes (``inner/<L>/<N>``, derived data, not a C2SP resource: a
static server need not serve it). Files are 0644 (the data is public),
directories 0755, both subject to the umask.

Tile packs: the inner nodes of full tile ``N`` at level ``L`` are stored, with a
copy of the tile, as record ``N`` of ``<root>/.inner-<L>.pack``: 16,384 bytes at
offset ``N * 16384`` (the tile's 8,192 bytes, the 8,128 bytes of inner nodes, then
a trailer naming the level and index). The engine reads proof nodes straight from
the pack (``tile_pack``: see :class:`_MappedPack`), held in process memory up to
``resident_bytes`` (default :data:`RESIDENT_PACK_BYTES`) and read through a mapping
of the file beyond that, instead of opening and reading two files per tile its
cache misses, which was most of the price of a random proof on a large log;
``get_many([tile/<L>/<N>, inner/<L>/<N>])`` answers both from one ``pread`` of the
record. ``put_many`` writes an inner-nodes object as a record when the tile is in
the same call (as the engine writes them) or already stored, else as the file
``inner/<L>/<N>``; ``get`` prefers a valid record, then the file (logs written
before packs existed). A record is only ever read for a tile a
checkpoint covers, and it is written and fsynced with that tile, before the
checkpoint: a record torn by a crash belongs to a batch that never committed, and
is rewritten whole when its tile fills again. A record whose trailer does not
match (a hole, a torn or foreign record) is ignored. The packs are derived data:
deleting them (while no writer runs) costs proofs speed, not correctness; the
engine then hashes tiles instead, and fsck checks the records' copies of the tiles.

Contract (see :mod:`sigstack.log.storage`), and how it is met:

* Atomic replacement: every object and the checkpoint are written to a
  uniquely named temporary file in the target's own directory (names start
  with ``.``, which no key can), ``fsync``-ed, then renamed over the target with
  ``os.replace``. Readers see the old or the new file, never a partial one.
* Durability: ``put_many`` writes every file, fsyncs them all (concurrently,
  so the file system can commit one journal transaction for many), renames them, then fsyncs each
  directory that received a rename; new directories are created one level at
  a time and their parent fsynced. When ``put_many`` or ``swap_checkpoint``
  returns, the data and the names survive power loss (on filesystems that
  honour ``fsync``; do not mount with ``nobarrier`` or similar).
* Page cache: a full entry bundle's pages are released once it is fsynced
  (``POSIX_FADV_DONTNEED``): bundles are most of a log's bytes and are read rarely,
  while proofs and writes read the tile packs and the entry index all the time.
* Compare-and-swap: ``swap_checkpoint`` holds an in-process lock and an
  exclusive ``flock`` on ``<root>/.checkpoint.lock`` while it compares and
  replaces, so it is atomic across processes sharing the directory.
* High-water mark: ``swap_checkpoint`` writes the new checkpoint to
  ``<root>/.checkpoint-high-water`` too. Both files are written and fsynced side by
  side; the mark is renamed into place only after the checkpoint's rename and
  directory fsync, so the mark is never newer than the checkpoint. Its rename
  becomes durable with the next swap's directory fsync: a power loss may leave it
  one swap behind (the safe direction: it never makes a good log look rolled
  back), a killed process cannot. Restoring an older ``checkpoint`` file while the
  log is stopped is then refused when the log opens (see :mod:`sigstack.log.engine`);
  restoring the whole directory, mark included, is not detected.
* Single writer: ``acquire_writer`` takes a non-blocking exclusive ``flock`` on
  ``<root>/.writer.lock`` and keeps it until ``release_writer`` (or process
  exit); a second writer gets ``Conflict`` instead of corrupting the log. It
  creates ``root`` (durably) if it does not exist yet.
* Entry index: see :mod:`sigstack.log.fsindex`. Only the writer (the object holding
  the lease) adds and truncates; ``index_add`` buffers rows in memory and a background
  thread writes them to SQLite, so they are NOT durable on return:
  ``index_complete_to`` says up to which position they are, and the engine re-adds the
  rest from the tiles when it opens the log. ``release_writer`` flushes the buffer.
  Other processes may read the index while the writer writes (fsck). It is derived
  data: the engine rebuilds it from the tiles if it is missing.

Errors are :class:`StorageError` naming the file; a directory where a file
should be is a :class:`StateError`. Temporary files left by a crash
(``.<name>.<random>.tmp``) are harmless (hidden, never read) and may be deleted
at any time while no writer runs; so may the tile packs (see above). The other
dotfiles (locks, the high-water mark) must be kept.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sigstack.core.errors import Conflict, StateError, StorageError
from sigstack.core.tiles import (
    FULL_TILE_BYTES,
    INNER_NODES_BYTES,
    TILE_HEIGHT,
    parse_inner_nodes_path,
    tile_path,
)
from sigstack.fsutil import (
    fsync_dir,
    fsync_path,
    locked,
    make_dirs,
    open_lock,
    unlink_quietly,
    write_temp,
)
from sigstack.log.fsindex import EntryIndex
from sigstack.log.storage import (
    BACKGROUND_YIELD_SECONDS,
    CHECKPOINT_KEY,
    IndexRow,
    LogStorage,
    PackBuffer,
    TilePack,
    validate_index_rows,
    validate_key,
    validate_leaves,
)

_log = logging.getLogger(__name__)

_FILE_MODE = 0o644
_DIR_MODE = 0o755
_WRITER_LOCK = ".writer.lock"
_CHECKPOINT_LOCK = ".checkpoint.lock"
_HIGH_WATER = ".checkpoint-high-water"

_RECORD = 16384
_TRAILER = struct.Struct(">8sQQ")
_MAGIC = b"sgstkpk1"
_PAD = bytes(_RECORD - FULL_TILE_BYTES - INNER_NODES_BYTES - _TRAILER.size)


def _fsync_uncached(path: Path | str) -> None:
    """fsync ``path``, then tell the kernel its pages need not stay cached.

    Full entry bundles are written once and read rarely (an entry lookup, a
    monitor's single pass): left in the page cache they push out what every proof
    and write reads (tile packs, the entry index) on a machine whose cache holds
    less than the log. Once fsynced the pages are clean, so dropping them costs a
    disk read only if the bundle is read again.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
        with contextlib.suppress(OSError, AttributeError):  # advisory; not on every OS
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _pack_name(level: int) -> str:
    return f".inner-{level}.pack"


def _record(level: int, index: int, tile: bytes, inner: bytes) -> bytes:
    return b"".join((tile, inner, _TRAILER.pack(_MAGIC, level, index), _PAD))


def _names_itself(buffer: PackBuffer, start: int, level: int, index: int) -> bool:
    """Whether the record at ``buffer[start:]`` carries the trailer of ``(level, index)``."""
    end = start + FULL_TILE_BYTES + INNER_NODES_BYTES
    return buffer[end : end + _TRAILER.size] == _TRAILER.pack(_MAGIC, level, index)


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_FLUSHERS = 8


def _in_parallel(
    flush: Callable[[str], None], paths: Sequence[Path | str], fds: Sequence[int] = ()
) -> None:
    """``flush`` every path and fsync every descriptor, concurrently when there are
    several; the first error raises."""
    global _POOL
    jobs: list[tuple[Callable[[Any], None], Any]] = [(flush, path) for path in paths]
    jobs += [(os.fsync, fd) for fd in fds]
    if len(jobs) <= 1:
        for job, arg in jobs:
            job(arg)
        return
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(_FLUSHERS, thread_name_prefix="sigstack-fsync")
        pool = _POOL
    for future in [pool.submit(job, arg) for job, arg in jobs]:
        future.result()


def _write_checkpoint(path: Path, mark: Path, data: bytes) -> None:
    """Durably replace the checkpoint ``path``, then the high-water ``mark`` (never
    before it; see the module docstring), both with ``data``."""
    staged: list[str] = []
    current = path
    try:
        staged.append(write_temp(path, data, _FILE_MODE, sync=False))
        current = mark
        staged.append(write_temp(mark, data, _FILE_MODE, sync=False))
        _in_parallel(fsync_path, staged)
        current = path
        os.replace(staged[0], path)
        fsync_dir(path.parent)
        current = mark
        os.replace(staged[1], mark)
    except OSError as exc:
        raise StorageError(f"could not write {current}: {exc.strerror or exc}") from exc
    finally:
        for tmp in staged:
            unlink_quietly(tmp)


_CHUNK_SHIFT = 8  # a chunk held in memory is 256 records (4 MiB)
RESIDENT_PACK_BYTES = 1 << 30
"""Default memory for the resident copy of a log's level-0 tile pack: 1 GiB holds
the records of 16.7 million entries (64 bytes each); see :class:`_MappedPack`."""


class _Chunk:
    """Records ``256 n .. 256 n + 255`` of a pack in anonymous memory, and which of
    them name themselves (are valid)."""

    __slots__ = ("data", "valid")

    def __init__(self, records: int) -> None:
        # Private anonymous memory (not shared memory, which costs more to fill),
        # its pages allocated when mapped (MAP_POPULATE, where there is one): filling
        # them one fault per 4 KiB page was most of the price of loading a pack.
        # (Huge pages were cheaper still when the kernel had them at hand, and took
        # seconds of compaction when it did not.)
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
        self.data = mmap.mmap(-1, records * _RECORD, flags=flags)
        self.valid = bytearray(records)


class _MappedPack(TilePack):
    """A tile pack held in process memory, read through a mapping of the file where
    it is not (yet).

    Proofs read a pack at random: on a large log most of their reads touch a record
    no proof touched for minutes, and a page cache under pressure (or one the host
    trims, as virtual machines' often are) has dropped it, so a proof waited for
    the disk. The pack is therefore copied, 256 records (4 MiB) at a time, into
    anonymous memory that the kernel cannot drop (it is only ever swapped): a
    background thread at low priority loads it from the newest records to the
    oldest, started by ``load`` (the engine calls it when it opens the log) or by
    the first ``record`` it does not hold, until ``limit`` chunks are held (then
    the oldest chunk is dropped whenever the writer starts a new one, so the newest
    records stay resident). Records not held are read through a read-only shared
    mapping of the whole file, mapped again when the file grew.

    Consistency with the file: ``written`` (called by the writer after its
    ``pwrite``) copies each record into its chunk if the chunk is held, under the
    pack's lock, and otherwise marks the chunk written; the background load reads a
    chunk without the lock (the writer never waits for a disk read), then holds it
    under the lock only if no ``written`` marked it meanwhile (else it reads it
    again). So a held record is never older than the file's once ``written``
    returned. The load sleeps for a moment between chunks (see
    :data:`~sigstack.log.storage.BACKGROUND_YIELD_SECONDS`).

    The pack is only ever extended, never truncated, by sigstack: a file truncated
    by hand while mapped would make the next read of a lost page fail with SIGBUS
    (the process dies; no wrong data is served).
    """

    def __init__(self, storage: FilesystemStorage, level: int, limit: int) -> None:
        self._storage = storage
        self._level = level
        self._map: mmap.mmap | None = None
        self._lock = threading.Lock()
        self._shift = _CHUNK_SHIFT
        self._mask = (1 << _CHUNK_SHIFT) - 1
        self._limit = limit  # chunks held at most
        self._chunks: list[_Chunk | None] = []  # by chunk number
        self._held = 0
        self._lowest = 0  # no chunk below this number is held
        self._started = False  # the background load was asked for
        self._warming: threading.Thread | None = None
        self._top: int | None = None  # chunks the warmer loads: those below this number
        self._marked: set[int] = set()  # chunks written to since the warmer read them
        self._closed = False

    def record(self, index: int) -> tuple[PackBuffer, int] | None:
        number = index >> self._shift
        chunks = self._chunks
        if number < len(chunks):
            chunk = chunks[number]
            if chunk is not None and chunk.valid[index & self._mask]:
                return chunk.data, (index & self._mask) * _RECORD
        if not self._started:
            self._start_warming()
        start = index * _RECORD
        mapped = self._map
        if mapped is None or start + _RECORD > len(mapped):
            mapped = self._remap(start + _RECORD)
            if mapped is None:
                return None
        if not _names_itself(mapped, start, self._level, index):
            return None
        return mapped, start

    def resident(self) -> int:
        """How many records' chunks are held in memory (for tests and figures)."""
        return self._held << self._shift

    def load(self, timeout: float) -> bool:
        if not self._started:
            self._start_warming()
        thread = self._warming
        if thread is None:
            return True  # nothing to hold (no budget) or closed
        thread.join(timeout)
        return not thread.is_alive()

    def close(self) -> None:
        """Stop loading; held chunks stay valid for whoever holds a buffer. (No lock:
        the storage calls this holding its pack lock, which ``_remap`` takes inside
        this pack's; the load checks the flag before each chunk.)"""
        self._closed = True

    def written(self, fd: int, records: Sequence[tuple[int, bytes]]) -> None:
        """The writer stored ``(index, record)`` pairs (whole, self-naming records)
        through ``fd``: copy them into the chunks held, and hold new chunks beyond
        what the background load covers (read from ``fd``)."""
        if self._warming is None:
            return  # nothing is held and nothing is being loaded
        with self._lock:
            if self._closed or self._top is None:
                return  # the load has not looked at the file yet: it will see these
            for index, record in sorted(records):
                number, slot = index >> self._shift, index & self._mask
                chunk = self._chunks[number] if number < len(self._chunks) else None
                if chunk is not None:
                    chunk.data[slot * _RECORD : (slot + 1) * _RECORD] = record
                    chunk.valid[slot] = 1
                elif number >= self._top:
                    self._hold(number, self._read_chunk(fd, number))
                else:
                    self._marked.add(number)

    def _start_warming(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            if self._closed or self._limit <= 0:
                return
            self._warming = threading.Thread(
                target=self._warm, name=f"sigstack-pack-{self._level}", daemon=True
            )
            self._warming.start()

    def _warm(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # Linux: this thread only
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        path = self._storage.root / _pack_name(self._level)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = -1  # no pack yet: the writer holds the chunks it starts
        except OSError as exc:
            _log.warning("not loading %s into memory: %s", path, exc.strerror or exc)
            return
        try:
            with self._lock:
                records = -(-os.fstat(fd).st_size // _RECORD) if fd >= 0 else 0
                self._top = -(-records >> self._shift)
                top = self._top
            for number in range(top - 1, -1, -1):
                while True:
                    with self._lock:
                        if self._closed or self._held >= self._limit:
                            return
                        if number < len(self._chunks) and self._chunks[number] is not None:
                            break
                        self._marked.discard(number)
                    chunk = self._read_chunk(fd, number)
                    with self._lock:
                        if number not in self._marked:  # else written meanwhile: again
                            self._hold(number, chunk)
                            break
                time.sleep(BACKGROUND_YIELD_SECONDS)
        except OSError as exc:
            _log.warning("stopped loading %s into memory: %s", path, exc.strerror or exc)
        finally:
            if fd >= 0:
                os.close(fd)

    def _read_chunk(self, fd: int, number: int) -> _Chunk:
        """Chunk ``number`` as ``fd`` has it now, its valid records marked."""
        chunk = _Chunk(1 << self._shift)
        with memoryview(chunk.data) as view:
            got = _read_fully(fd, view, len(view) * number)
        first = number << self._shift
        for slot in range(got // _RECORD):
            chunk.valid[slot] = _names_itself(chunk.data, slot * _RECORD, self._level, first + slot)
        return chunk

    def _hold(self, number: int, chunk: _Chunk) -> None:
        """Hold ``chunk`` as chunk ``number`` (caller holds the lock), dropping the
        oldest chunk held if that makes one too many."""
        chunks = self._chunks
        if number >= len(chunks):
            chunks.extend([None] * (number + 1 - len(chunks)))
        if chunks[number] is None:
            self._held += 1
        chunks[number] = chunk  # the list only grows: readers index it without the lock
        while self._held > self._limit:
            while chunks[self._lowest] is None:
                self._lowest += 1
            chunks[self._lowest] = None
            self._held -= 1
        self._lowest = min(self._lowest, number)

    def _remap(self, needed: int) -> mmap.mmap | None:
        with self._lock:
            mapped = self._map
            if mapped is not None and needed <= len(mapped):
                return mapped
            fd = self._storage._pack(self._level, create=False)
            if fd is None:
                return None
            try:
                size = os.fstat(fd).st_size
                if size < needed:
                    return None
                # The old mapping stays valid for whoever still holds it; it is
                # unmapped when the last reference goes.
                mapped = self._map = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as exc:
                raise StorageError(
                    f"could not map {self._storage.root / _pack_name(self._level)}: {exc}"
                ) from exc
            return mapped


def _read_fully(fd: int, view: memoryview, offset: int) -> int:
    """Read into ``view`` from ``offset`` until it is full or the file ends; bytes read."""
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            break
        done += got
    return done


class FilesystemStorage(LogStorage):
    """A log stored in a directory tree; see the module docstring for guarantees."""

    def __init__(self, root: Path | str, *, resident_bytes: int = RESIDENT_PACK_BYTES) -> None:
        self.root = Path(root)
        self._root_str = os.fspath(self.root)
        self._resident_bytes = resident_bytes
        self._known_dirs: set[str] = set()
        self._dir_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._writer_fd: int | None = None
        self._index: EntryIndex | None = None
        self._packs: dict[int, int] = {}  # tile level -> descriptor of its pack
        self._packs_writable = False
        self._retired: list[int] = []  # read-only descriptors replaced by writable ones
        self._views: dict[int, _MappedPack] = {}
        self._pack_lock = threading.Lock()

    def describe(self, key: str) -> str:
        where = parse_inner_nodes_path(key)
        if where is not None and self._read_record(*where) is not None:
            return f"{self.root / _pack_name(where[0])} (record {where[1]}, {key})"
        return str(self.root / key)

    # -- reads ----------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        # A plain string join: pathlib's parsing costs more than the read of a tile.
        validate_key(key)
        if key.startswith("inner/"):
            where = parse_inner_nodes_path(key)
            if where is not None:
                record = self._read_record(*where)
                if record is not None:
                    return record[FULL_TILE_BYTES : FULL_TILE_BYTES + INNER_NODES_BYTES]
        return self._read(os.path.join(self.root, key))

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        # The engine's cold full tile: the tile and its inner nodes, from one record.
        if len(keys) == 2 and keys[1].startswith("inner/"):
            where = parse_inner_nodes_path(keys[1])
            if where is not None and keys[0] == tile_path(*where):
                record = self._read_record(*where)
                if record is not None:
                    return [
                        record[:FULL_TILE_BYTES],
                        record[FULL_TILE_BYTES : FULL_TILE_BYTES + INNER_NODES_BYTES],
                    ]
        return [self.get(key) for key in keys]

    def tile_pack(self, level: int) -> TilePack | None:
        with self._pack_lock:
            view = self._views.get(level)
            if view is None:
                view = self._views[level] = _MappedPack(self, level, self._chunk_limit(level))
            return view

    def _chunk_limit(self, level: int) -> int:
        """Chunks of the level's pack held in memory: the budget covers as many
        entries at every level (a level-1 record covers 256 level-0 ones), and a
        level above 0 always gets one chunk (4 MiB covers 16.7 million entries)."""
        chunks = (self._resident_bytes >> (TILE_HEIGHT * level)) // (_RECORD << _CHUNK_SHIFT)
        return max(chunks, 1 if level and self._resident_bytes > 0 else 0)

    def _read_record(self, level: int, index: int) -> bytes | None:
        """Record ``index`` of the level's tile pack, if it is there and names itself."""
        fd = self._pack(level, create=False)
        if fd is None:
            return None
        try:
            record = os.pread(fd, _RECORD, index * _RECORD)
        except OSError as exc:
            raise StorageError(
                f"could not read {self.root / _pack_name(level)}: {exc.strerror or exc}"
            ) from exc
        if len(record) != _RECORD or not _names_itself(record, 0, level, index):
            return None
        return record

    def _pack(self, level: int, *, create: bool) -> int | None:
        """The descriptor of the level's pack (opened for writing with ``create``);
        None if it does not exist and ``create`` is false."""
        fd = self._packs.get(level)
        if fd is not None and (self._packs_writable or not create):
            return fd
        with self._pack_lock:
            if create and not self._packs_writable:
                # Read-only descriptors are reopened for writing; a reader may still be
                # using one, so they are closed with the storage, not now.
                self._retired += self._packs.values()
                self._packs.clear()
                self._packs_writable = True
            fd = self._packs.get(level)
            if fd is not None:
                return fd
            path = self.root / _pack_name(level)
            try:
                if create:
                    existed = path.exists()
                    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
                    if not existed:
                        fsync_dir(self.root)
                else:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise StorageError(f"could not open {path}: {exc.strerror or exc}") from exc
            self._packs[level] = fd
            return fd

    def __del__(self) -> None:  # a storage dropped without close(): no descriptor leaks
        for fd in [*getattr(self, "_packs", {}).values(), *getattr(self, "_retired", [])]:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _close_packs(self) -> None:
        """Close every pack descriptor (caller holds ``_pack_lock``)."""
        for fd in [*self._packs.values(), *self._retired]:
            os.close(fd)
        for view in self._views.values():
            view.close()  # stops its background load (which reads its own descriptor)
        self._views.clear()  # their mappings go with the last reference
        self._packs.clear()
        self._retired.clear()
        self._packs_writable = False

    def read_checkpoint(self) -> bytes | None:
        return self._read(self.root / CHECKPOINT_KEY)

    def read_high_water(self) -> bytes | None:
        return self._read(self.root / _HIGH_WATER)

    @staticmethod
    def _read(path: Path | str) -> bytes | None:
        try:
            with open(path, "rb", buffering=0) as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except IsADirectoryError as exc:
            raise StateError(path, "is a directory where a log object was expected") from exc
        except OSError as exc:
            raise StorageError(f"could not read {path}: {exc.strerror or exc}") from exc

    # -- writes ---------------------------------------------------------------------

    def put_many(self, items: Mapping[str, bytes]) -> None:
        # Paths are strings here, not Path objects: a batch writes a dozen files, and
        # Path arithmetic was a tenth of this method's time.
        root = self._root_str
        targets = []  # (path, data, released from the page cache once fsynced)
        records: list[tuple[int, int, bytes]] = []  # (level, index, record) for the packs
        for key, data in items.items():
            validate_key(key)
            if key.startswith("inner/") and len(data) == INNER_NODES_BYTES:
                where = parse_inner_nodes_path(key)
                if where is not None:
                    tile_key = tile_path(*where)
                    tile = items.get(tile_key)
                    if tile is None:
                        tile = self._read(os.path.join(root, tile_key))
                    if tile is not None and len(tile) == FULL_TILE_BYTES:
                        records.append((*where, _record(*where, tile, data)))
                        continue
            # Full entry bundles (not partial ones: the next batch rewrites those).
            bundle = key.startswith("tile/entries/") and ".p/" not in key
            targets.append((os.path.join(root, key), data, bundle))
        staged: list[tuple[str, str]] = []
        current = root
        try:
            for path, _data, _bundle in targets:
                current = path
                self._ensure_dir(os.path.dirname(path))
            # Every file is written before any is flushed, and the flushes run side
            # by side: the file system commits its journal once for many of them.
            cold: set[str] = set()  # temporary files of full bundles
            for path, data, bundle in targets:
                current = path
                staged.append((write_temp(path, data, _FILE_MODE, sync=False), path))
                if bundle:
                    cold.add(staged[-1][0])
            packs: dict[int, int] = {}
            for level, index, record in records:
                current = os.path.join(root, _pack_name(level))
                if level not in packs:
                    self._ensure_dir(root)
                    fd = self._pack(level, create=True)
                    assert fd is not None
                    packs[level] = fd
                if os.pwrite(packs[level], record, index * _RECORD) != len(record):
                    raise OSError(f"short write of record {index}")
            for level, fd in packs.items():
                current = os.path.join(root, _pack_name(level))
                view = self._views.get(level)
                if view is not None:
                    view.written(fd, [(index, rec) for lv, index, rec in records if lv == level])
            current = root
            _in_parallel(
                lambda tmp: _fsync_uncached(tmp) if tmp in cold else fsync_path(tmp),
                [tmp for tmp, _ in staged],
                list(packs.values()),
            )
            dirs: dict[str, None] = {}
            while staged:
                tmp, path = staged[0]
                current = path
                os.replace(tmp, path)
                staged.pop(0)
                dirs[os.path.dirname(path)] = None
            current = root
            _in_parallel(fsync_dir, list(dirs))
        except OSError as exc:
            raise StorageError(f"could not write {current}: {exc.strerror or exc}") from exc
        finally:
            for tmp, _ in staged:
                unlink_quietly(tmp)

    def swap_checkpoint(self, old: bytes | None, new: bytes) -> None:
        path = self.root / CHECKPOINT_KEY
        with self._swap_lock:
            self._ensure_dir(self.root)
            # Blocking: a concurrent swap in another process waits, then compares.
            with locked(self.root / _CHECKPOINT_LOCK, holder="another checkpoint swap"):
                current = self._read(path)
                if current != old:
                    raise Conflict(
                        f"{path} is not the checkpoint this writer last saw; "
                        "another writer changed the log"
                    )
                _write_checkpoint(path, self.root / _HIGH_WATER, new)

    def _ensure_dir(self, directory: Path | str) -> None:
        """Create ``directory`` and missing parents, fsyncing each new entry's parent."""
        directory = os.fspath(directory)
        if directory in self._known_dirs:
            return
        with self._dir_lock:
            try:
                make_dirs(Path(directory), _DIR_MODE)
            except OSError as exc:  # fsync of a parent; make_dirs wraps mkdir itself
                raise StorageError(f"could not create {directory}: {exc.strerror or exc}") from exc
            self._known_dirs.add(directory)

    # -- entry index ----------------------------------------------------------------

    def _entry_index(self) -> EntryIndex:
        """The writer's index (buffered, see :mod:`sigstack.log.fsindex`) or a reader's."""
        with self._swap_lock:
            index = self._index
            if index is None:
                self._ensure_dir(self.root)
                index = self._index = EntryIndex(self.root, writer=False)
            return index

    def index_add(self, rows: Sequence[IndexRow]) -> None:
        validate_index_rows(rows)
        if rows:
            self._writer_index("add to").add(rows)

    def index_add_batch(
        self, start: int, leaves: Sequence[bytes], rows: Sequence[IndexRow]
    ) -> None:
        validate_leaves(start, leaves)
        validate_index_rows(rows)
        if leaves or rows:
            self._writer_index("add to").add(rows, start, leaves)

    def index_lookup(
        self, namespace: str, keys: Sequence[bytes], below: int
    ) -> dict[bytes, list[int]]:
        if not keys or below <= 0:
            return {}
        return self._entry_index().lookup(namespace, keys, below)

    def index_truncate(self, size: int) -> None:
        self._writer_index("truncate").truncate(size)

    def index_complete_to(self) -> int | None:
        return self._entry_index().complete_to()

    def _writer_index(self, action: str) -> EntryIndex:
        index = self._index
        if index is None or self._writer_fd is None:
            raise StorageError(
                f"cannot {action} the entry index of {self.root} without the writer lease"
            )
        return index

    # -- writer lease ---------------------------------------------------------------

    def acquire_writer(self) -> None:
        with self._swap_lock:
            if self._writer_fd is not None:
                raise Conflict(f"{self.root} is already opened for writing by this storage object")
            self._ensure_dir(self.root)
            # Non-blocking: a second writer gets Conflict ("<lock> is held by ...").
            self._writer_fd = open_lock(
                self.root / _WRITER_LOCK,
                blocking=False,
                holder=f"another process or log instance writing the log in {self.root}; "
                "stop it first",
            )
            try:
                reader, self._index = self._index, EntryIndex(self.root, writer=True)
            except BaseException:
                os.close(self._writer_fd)
                self._writer_fd = None
                raise
        if reader is not None:
            reader.close()

    def release_writer(self) -> None:
        with self._swap_lock:
            fd, self._writer_fd = self._writer_fd, None
            index, self._index = (self._index, None) if fd is not None else (None, self._index)
        if index is not None:
            index.close()  # flushes the buffered rows while the lease is still held
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    def close(self) -> None:
        self.release_writer()
        with self._swap_lock:
            index, self._index = self._index, None
        if index is not None:
            index.close()
        with self._pack_lock:
            self._close_packs()
