"""fsck for transparency logs: re-derive everything from the entries and compare.

``fsck`` reads a log through a ``Reader`` (a function from a C2SP path to bytes,
``"checkpoint"`` included), so the same check runs on a log at rest
(:func:`storage_reader`) or on one served over HTTP (:func:`http_reader`). It:

1. verifies the checkpoint's signature with the log's key and parses it;
2. streams every entry bundle the checkpoint covers, turns each record into its
   Merkle leaf (``leaf_of``: the identity for Rekor v2, the ``MerkleTreeLeaf`` of a
   static-ct-api ``TileLeaf`` for the CT log) and hashes it;
3. recomputes every hash tile, at every level, full and partial, from those
   leaves and compares it byte for byte with the stored or served tile; at rest,
   it also compares each full tile's stored inner nodes (the engine's
   ``inner_nodes_path`` objects, which proofs read instead of hashing the tile)
   with the ones re-derived. Logs written before those objects existed have none
   for their older tiles: a missing one is not a problem, a wrong one is;
4. compares the recomputed root with the checkpoint's root;
5. at rest, checks the checkpoint against the storage's high-water mark (the last
   checkpoint the log committed, see :mod:`sigstack.log.storage`): a checkpoint
   older than the mark was rolled back, one whose tree does not extend the mark's
   is a fork; the engine refuses to open either;
6. optionally checks the entry index: every entry is findable by its leaf hash at
   its position (at rest only). A backend that buffers index rows (filesystem) may
   not have the newest entries in its durable index yet (a writer still running, or
   one that crashed: the engine adds them when it next opens the log); those are
   counted as ``index_pending``, not as problems.

Memory stays bounded by one tile per level whatever the log's size; time is one
pass over the entries. Problems are collected (up to ``max_problems``) rather than
stopping at the first, each naming the path at fault, so one run says everything
that is wrong. Nothing is ever written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from sigstack.core.errors import InvalidRequest, SigstackError, VerificationError
from sigstack.core.merkle import EMPTY_ROOT, CompactRange, leaf_hash
from sigstack.core.note import CheckpointBody, NoteVerifier, open_note, parse_checkpoint
from sigstack.core.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    bundle_for,
    decode_bundle,
    inner_nodes_path,
    tile_for,
)
from sigstack.log.engine import LEAF_NAMESPACE, derive_inner_nodes
from sigstack.log.storage import CHECKPOINT_KEY, LogStorage

Reader = Callable[[str], bytes | None]
"""``read(path) -> bytes | None``: ``"checkpoint"`` or a C2SP tile/bundle path."""

Progress = Callable[[int, int], None]
"""``progress(entries_done, total)``."""


def _identity(record: bytes) -> bytes:
    return record


@dataclass
class FsckReport:
    """What fsck checked and what it found wrong."""

    origin: str = ""
    size: int = 0
    root_hash: bytes = b""
    entries_checked: int = 0
    tiles_checked: int = 0
    inner_checked: int = 0  # full tiles whose stored inner nodes were checked
    index_checked: bool = False
    index_pending: int = 0  # newest entries not in the durable index yet (see step 5)
    problems: list[str] = field(default_factory=list)
    truncated: bool = False  # more problems than max_problems were found

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "origin": self.origin,
            "size": self.size,
            "root_hash": self.root_hash.hex(),
            "entries_checked": self.entries_checked,
            "tiles_checked": self.tiles_checked,
            "inner_checked": self.inner_checked,
            "index_checked": self.index_checked,
            "index_pending": self.index_pending,
            "problems": self.problems,
            "truncated": self.truncated,
        }


class _Problems:
    def __init__(self, report: FsckReport, limit: int) -> None:
        self._report = report
        self._limit = limit

    def add(self, where: str, what: str) -> None:
        if len(self._report.problems) < self._limit:
            self._report.problems.append(f"{where}: {what}")
        else:
            self._report.truncated = True

    @property
    def full(self) -> bool:
        return self._report.truncated


def storage_reader(storage: LogStorage) -> Reader:
    """Read a log at rest through its storage driver."""

    def read(path: str) -> bytes | None:
        return storage.read_checkpoint() if path == CHECKPOINT_KEY else storage.get(path)

    return read


def http_reader(base_url: str, client: httpx.Client) -> Reader:
    """Read a served log: ``base_url`` + ``/checkpoint`` or ``/tile/...`` (404 is absent)."""
    base = base_url.rstrip("/")

    def read(path: str) -> bytes | None:
        resp = client.get(f"{base}/{path}")
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise VerificationError(f"{base}/{path} answered HTTP {resp.status_code}")
        return resp.content

    return read


def fsck(
    read: Reader,
    verifiers: Sequence[NoteVerifier],
    *,
    origin: str | None = None,
    leaf_of: Callable[[bytes], bytes] = _identity,
    storage: LogStorage | None = None,
    progress: Progress | None = None,
    max_problems: int = 100,
) -> FsckReport:
    """Check a log (see the module docstring). ``storage`` enables the index check."""
    report = FsckReport()
    problems = _Problems(report, max_problems)
    # The mark before the checkpoint: a running writer may commit between the two
    # reads, and a checkpoint read after the mark is at least as new as it.
    mark = _high_water(storage, verifiers, problems) if storage is not None else None
    note = read(CHECKPOINT_KEY)
    if note is None:
        problems.add(CHECKPOINT_KEY, "missing: there is no log here")
        return report
    try:
        text, _ = open_note(note, verifiers)
        body = parse_checkpoint(text)
    except VerificationError as exc:
        problems.add(CHECKPOINT_KEY, f"does not verify with the log's key: {exc}")
        return report
    report.origin, report.size, report.root_hash = body.origin, body.size, body.root_hash
    if origin is not None and body.origin != origin:
        problems.add(CHECKPOINT_KEY, f"origin is {body.origin!r}, expected {origin!r}")
    size = body.size
    mark_root = EMPTY_ROOT

    rng = CompactRange()
    pending: list[list[bytes]] = []  # per tile level: hashes of its rightmost, unfinished tile
    for bundle in range(-(-size // TILE_WIDTH)):
        if problems.full:
            break
        leaves = _bundle_leaves(read, bundle, size, leaf_of, problems)
        if leaves is None:
            return report  # without a bundle the rest of the tree cannot be derived
        if mark is not None and rng.size < mark.size <= rng.size + len(leaves):
            probe = rng.copy()
            probe.extend(leaves[: mark.size - rng.size])
            mark_root = probe.root()
        appended = rng.extend(leaves)
        level = 0
        while True:
            hashes = appended.at_level(TILE_HEIGHT * level)
            if not hashes:
                break
            if level == len(pending):
                pending.append([])
            pending[level].extend(hashes)
            while len(pending[level]) >= TILE_WIDTH:
                count = (rng.size >> (TILE_HEIGHT * level)) - len(pending[level])
                _check_tile(
                    read,
                    level,
                    count // TILE_WIDTH,
                    pending[level][:TILE_WIDTH],
                    size,
                    problems,
                    report,
                    inner=storage,
                )
                del pending[level][:TILE_WIDTH]
            level += 1
        report.entries_checked += len(leaves)
        if progress is not None:
            progress(report.entries_checked, size)
    if problems.full:
        return report
    for level, hashes in enumerate(pending):
        if hashes:  # the partial tile at the right edge of this level
            index = (size >> (TILE_HEIGHT * level)) // TILE_WIDTH
            _check_tile(read, level, index, hashes, size, problems, report, inner=None)
    if rng.root() != body.root_hash:
        problems.add(
            CHECKPOINT_KEY,
            f"root {body.root_hash.hex()} is not the root of the logged entries "
            f"({rng.root().hex()})",
        )
    if mark is not None:
        _compare_high_water(storage, body.size, mark, mark_root, problems)
    if storage is not None and not problems.full:
        complete = storage.index_complete_to()
        checked = size if complete is None else min(complete, size)
        report.index_pending = size - checked
        _check_index(read, storage, checked, size, leaf_of, problems)
        report.index_checked = True
    return report


def _high_water(
    storage: LogStorage, verifiers: Sequence[NoteVerifier], problems: _Problems
) -> CheckpointBody | None:
    """The storage's high-water mark, verified (None: none, or reported as a problem)."""
    where = storage.describe(".high-water")
    try:
        note = storage.read_high_water()
        if note is None:
            return None
        text, _ = open_note(note, verifiers)
        return parse_checkpoint(text)
    except SigstackError as exc:
        problems.add(where, f"the high-water mark is not a checkpoint of this log: {exc}")
        return None


def _compare_high_water(
    storage: LogStorage | None,
    size: int,
    mark: CheckpointBody,
    mark_root: bytes,
    problems: _Problems,
) -> None:
    """Report a checkpoint behind the mark (rolled back) or not extending it (fork)."""
    where = CHECKPOINT_KEY if storage is None else storage.describe(CHECKPOINT_KEY)
    if mark.size > size:
        problems.add(
            where,
            f"size {size} is older than the high-water mark (the last checkpoint the log "
            f"committed), of size {mark.size}: the checkpoint was rolled back",
        )
    elif mark_root != mark.root_hash:
        problems.add(
            where,
            f"the tree of size {size} does not extend the high-water mark of size "
            f"{mark.size} (root {mark.root_hash.hex()}): a fork",
        )


def _bundle_leaves(
    read: Reader, bundle: int, size: int, leaf_of: Callable[[bytes], bytes], problems: _Problems
) -> list[bytes] | None:
    ref = bundle_for(bundle, size)
    data = read(ref.path)
    if data is None:
        problems.add(ref.path, "entry bundle missing")
        return None
    try:
        records = decode_bundle(data, ref.width)
    except InvalidRequest as exc:
        problems.add(ref.path, str(exc))
        return None
    leaves = []
    for offset, record in enumerate(records):
        try:
            leaves.append(leaf_hash(leaf_of(record)))
        except SigstackError as exc:
            problems.add(ref.path, f"entry {bundle * TILE_WIDTH + offset} does not parse: {exc}")
            return None
    return leaves


def _check_tile(
    read: Reader,
    level: int,
    index: int,
    hashes: list[bytes],
    size: int,
    problems: _Problems,
    report: FsckReport,
    *,
    inner: LogStorage | None,
) -> None:
    ref = tile_for(level, index, size)
    stored = read(ref.path)
    report.tiles_checked += 1
    expected = b"".join(hashes)
    if stored is None:
        problems.add(ref.path, "hash tile missing")
    elif stored != expected:
        problems.add(ref.path, "hash tile differs from the one re-derived from the entries")
    if inner is not None and ref.width == TILE_WIDTH:
        _check_inner(inner, ref.path, stored, level, index, expected, problems, report)


def _check_inner(
    storage: LogStorage,
    tile_key: str,
    tile: bytes | None,
    level: int,
    index: int,
    expected: bytes,
    problems: _Problems,
    report: FsckReport,
) -> None:
    """Compare a full tile's stored inner nodes (if any) with the re-derived ones.

    They are read as proofs read them, with the tile (``get_many``): a backend that
    keeps a copy of the tile beside them (the filesystem's tile packs) answers with
    that copy, which is checked too.
    """
    path = inner_nodes_path(level, index)
    copy, stored = storage.get_many([tile_key, path])
    if stored is None:
        return  # written before inner nodes were stored: proofs hash the tile instead
    report.inner_checked += 1
    if stored != derive_inner_nodes(expected):
        problems.add(
            path,
            "inner nodes differ from the ones re-derived from the entries: proofs "
            f"built from them are wrong (delete {storage.describe(path)}: the engine "
            "then derives the nodes from the tile)",
        )
    elif copy != expected and copy != tile:  # a wrong tile itself is reported already
        problems.add(
            path,
            "the copy of the tile stored with the inner nodes differs from the tile "
            f"re-derived from the entries: proofs use it (delete {storage.describe(path)})",
        )


def _check_index(
    read: Reader,
    storage: LogStorage,
    checked: int,
    size: int,
    leaf_of: Callable[[bytes], bytes],
    problems: _Problems,
) -> None:
    """Every entry below ``checked`` must be indexed by its leaf hash."""
    for bundle in range(-(-checked // TILE_WIDTH)):
        ref = bundle_for(bundle, size)
        data = read(ref.path)
        if data is None:
            return  # already reported
        hashes = [leaf_hash(leaf_of(r)) for r in decode_bundle(data, ref.width)]
        found = storage.index_lookup(LEAF_NAMESPACE, hashes, size)
        for offset, h in enumerate(hashes):
            position = bundle * TILE_WIDTH + offset
            if position >= checked:
                break
            if position not in found.get(h, []):
                problems.add(
                    storage.describe(".index"), f"entry {position} is not indexed by its leaf hash"
                )
                if problems.full:
                    return
