"""Helpers shared by the log tests (``import log_kit``; see conftest.py)."""

from __future__ import annotations

from collections import Counter

from sigstack.core.tiles import FULL_TILE_BYTES, INNER_NODES_BYTES, parse_inner_nodes_path
from sigstack.log import FilesystemStorage, MemoryStorage, fs


class CountingStorage(MemoryStorage):
    """In-memory storage that counts the reads of each object."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()

    def get(self, key: str) -> bytes | None:
        self.reads[key] += 1
        return super().get(key)


def rewrite_packed_inner(storage: FilesystemStorage, key: str, value: bytes | None) -> None:
    """Replace (or with None remove) the inner-nodes object ``key`` of a filesystem log,
    as damage on disk would: in its tile-pack record when it has the right size, else
    by invalidating the record and leaving a file of that content (as a log written
    before tile packs would have)."""
    level, index = parse_inner_nodes_path(key) or (None, None)
    assert level is not None and index is not None, key
    pack = storage.root / fs._pack_name(level)
    offset = index * fs._RECORD
    with open(pack, "r+b") as f:
        if value is not None and len(value) == INNER_NODES_BYTES:
            f.seek(offset + FULL_TILE_BYTES)
            f.write(value)
            return
        f.seek(offset + FULL_TILE_BYTES + INNER_NODES_BYTES)
        f.write(bytes(fs._TRAILER.size))  # no longer names itself: ignored
    path = storage.root / key
    if value is None:
        path.unlink(missing_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(value)
