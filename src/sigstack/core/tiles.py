"""C2SP tlog-tiles: tile and entry-bundle names, bundle encoding, tile geometry.

Pure and I/O-free; follows https://c2sp.org/tlog-tiles. What it guarantees:

* Tiles have height 8 and width 256: the tile at level ``L``, index ``N`` holds the
  hashes of tree nodes at level ``8 * L`` with indexes ``[256 * N, 256 * N + W)``.
* :func:`tile_path` and :func:`entries_path` produce the one canonical name of a
  resource; :func:`parse_path` accepts exactly those names and nothing else
  (no leading zeroes, no ``x000`` groups, widths 1..255 on ``.p/``, levels
  0..63, nothing beyond 2**64 leaves) and raises
  :class:`~sigstack.core.errors.InvalidRequest` naming what is wrong. A path that
  parses is therefore safe to use as a storage key.
* Entry bundles are big-endian uint16 length-prefixed entries; an entry longer
  than 65535 bytes cannot be encoded and is refused with ``InvalidRequest``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sigstack.core.errors import InvalidRequest

TILE_HEIGHT = 8
"""Tree levels spanned by one tile."""

TILE_WIDTH = 1 << TILE_HEIGHT
"""Hashes (or entries) in a full tile (or bundle): 256."""

HASH_SIZE = 32
"""Bytes per hash in a tile."""

FULL_TILE_BYTES = TILE_WIDTH * HASH_SIZE
"""Size of a full hash tile: 8192 bytes."""

MAX_TILE_LEVEL = 63
"""Highest tile level a path may name (the spec's limit)."""

MAX_ENTRY_SIZE = 0xFFFF
"""Largest entry an entry bundle can hold (uint16 length prefix)."""

_MAX_LEAVES = 2**64

_LEVEL = re.compile(r"0|[1-9][0-9]{0,1}")
_WIDTH = re.compile(r"[1-9][0-9]{0,2}")
_GROUP = re.compile(r"[0-9]{3}")


@dataclass(frozen=True)
class TileRef:
    """One tile or entry bundle.

    ``level`` is the tile level (always 0 for entry bundles), ``index`` the tile
    index within its level, ``width`` the number of hashes or entries (256 for a
    full tile, 1..255 for a partial one).
    """

    level: int
    index: int
    width: int = TILE_WIDTH
    entries: bool = False

    def __post_init__(self) -> None:
        if self.entries and self.level != 0:
            raise InvalidRequest("entry bundles are at level 0")
        _check_level(self.level)
        if not 1 <= self.width <= TILE_WIDTH:
            raise InvalidRequest(f"tile width {self.width} is not between 1 and {TILE_WIDTH}")
        if not 0 <= self.index <= _max_index(self.level):
            raise InvalidRequest(
                f"tile index {self.index} at level {self.level} is beyond 2**64 leaves"
            )

    @property
    def partial(self) -> int:
        """Width of a partial tile, or 0 for a full one."""
        return 0 if self.width == TILE_WIDTH else self.width

    @property
    def path(self) -> str:
        """The canonical C2SP path (``tile/0/x001/234.p/17``, ``tile/entries/000``)."""
        if self.entries:
            return entries_path(self.index, self.width)
        return tile_path(self.level, self.index, self.width)

    @property
    def min_tree_size(self) -> int:
        """Smallest tree size whose tiles include this one (exactly as wide)."""
        return (self.index * TILE_WIDTH + self.width) << (TILE_HEIGHT * self.level)

    @property
    def byte_size(self) -> int:
        """Exact size in bytes of a hash tile of this width (not meaningful for bundles)."""
        return self.width * HASH_SIZE


def encode_index(index: int) -> str:
    """Encode a tile index as zero-padded 3-digit groups, all but the last ``x``-prefixed.

    ``1234067 -> "x001/x234/067"``, ``0 -> "000"``.
    """
    if not isinstance(index, int) or index < 0:
        raise InvalidRequest(f"tile index {index!r} must be a non-negative integer")
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(groups))


def parse_index(text: str) -> int:
    """Inverse of :func:`encode_index`; refuses every non-canonical spelling."""
    parts = text.split("/")
    if len(parts) > 7:  # 2**64 has 20 digits; 7 groups hold 21
        raise InvalidRequest(f"tile index {text!r} has too many path elements")
    value = 0
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        digits = part if last else part[1:]
        if not last and not part.startswith("x"):
            raise InvalidRequest(f"tile index element {part!r} must start with 'x'")
        if not _GROUP.fullmatch(digits):
            raise InvalidRequest(f"tile index element {part!r} must be 3 decimal digits")
        if i == 0 and len(parts) > 1 and digits == "000":
            raise InvalidRequest(f"tile index {text!r} has a leading zero element")
        value = value * 1000 + int(digits)
    return value


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    """Path of a hash tile: ``tile/<L>/<N>`` or ``tile/<L>/<N>.p/<W>`` for partial ones."""
    _check_level(level)
    return f"tile/{level}/{encode_index(index)}{_suffix(width)}"


def entries_path(index: int, width: int = TILE_WIDTH) -> str:
    """Path of an entry bundle: ``tile/entries/<N>`` or ``tile/entries/<N>.p/<W>``."""
    return f"tile/entries/{encode_index(index)}{_suffix(width)}"


INNER_NODES_BYTES = (TILE_WIDTH - 2) * HASH_SIZE
"""Size of a full tile's inner-node object: sublevels 1..7, 254 hashes (8,128 bytes)."""


def inner_nodes_path(level: int, index: int) -> str:
    """Storage key of the inner nodes of the full hash tile ``tile/<level>/<index>``.

    The object holds the tile's nodes at sublevels 1 to 7 (128, 64, ... 2 hashes,
    left to right, lowest sublevel first): everything between the tile's 256
    hashes and its root, which would otherwise take 255 SHA-256 to derive. The log
    engine writes it with the tile, covered by the same checkpoint, checks it against
    the tile's parent hash when read, and fsck re-derives it. It is not a C2SP
    resource: the log never serves it.
    """
    _check_level(level)
    return f"inner/{level}/{encode_index(index)}"


def parse_inner_nodes_path(key: str) -> tuple[int, int] | None:
    """``(level, index)`` of an :func:`inner_nodes_path` key spelled canonically, else None."""
    if not key.startswith("inner/"):
        return None
    level_text, sep, index_text = key[len("inner/") :].partition("/")
    if not sep or not _LEVEL.fullmatch(level_text) or int(level_text) > MAX_TILE_LEVEL:
        return None
    try:
        return int(level_text), parse_index(index_text)
    except InvalidRequest:
        return None


def parse_path(path: str) -> TileRef:
    """Parse a tile or entry-bundle path, strictly (see the module docstring).

    ``path`` is relative to the log prefix (``tile/0/x001/234.p/17``); the
    ``checkpoint`` is not a tile and is refused here.
    """
    if not isinstance(path, str) or not path.isascii() or len(path) > 64:
        raise InvalidRequest(f"{path!r} is not a tile path")
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise InvalidRequest(f"{path!r} is not a tile path (tile/<L>/<N>[.p/<W>])")
    kind, rest = parts[1], parts[2:]
    width = TILE_WIDTH
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        w = rest[-1]
        if not _WIDTH.fullmatch(w) or not 1 <= int(w) < TILE_WIDTH:
            raise InvalidRequest(
                f"partial tile width {w!r} in {path!r} must be 1..255 without leading zeroes"
            )
        width = int(w)
        rest = [*rest[:-2], rest[-2][:-2]]
    index = parse_index("/".join(rest))
    if kind == "entries":
        return TileRef(0, index, width, entries=True)
    if not _LEVEL.fullmatch(kind):
        raise InvalidRequest(
            f"tile level {kind!r} in {path!r} must be a decimal number without leading zeroes"
        )
    return TileRef(int(kind), index, width)


def _suffix(width: int) -> str:
    if width == TILE_WIDTH:
        return ""
    if not isinstance(width, int) or not 1 <= width < TILE_WIDTH:
        raise InvalidRequest(f"tile width {width!r} is not between 1 and {TILE_WIDTH}")
    return f".p/{width}"


def _check_level(level: int) -> None:
    if not isinstance(level, int) or not 0 <= level <= MAX_TILE_LEVEL:
        raise InvalidRequest(f"tile level {level!r} is not between 0 and {MAX_TILE_LEVEL}")


def _max_index(level: int) -> int:
    shift = TILE_HEIGHT * (level + 1)
    return (_MAX_LEAVES - 1) >> shift if shift < 64 else 0


# --- geometry ------------------------------------------------------------------------------


def tile_levels(size: int) -> int:
    """Number of tile levels a tree of ``size`` has (levels with at least one hash)."""
    levels = 0
    while size >> (TILE_HEIGHT * levels):
        levels += 1
    return levels


def partial_width(level: int, size: int) -> int:
    """Width of the partial tile at ``level`` for a tree of ``size`` (0: none)."""
    return (size >> (TILE_HEIGHT * level)) % TILE_WIDTH


def tile_width(level: int, index: int, size: int) -> int:
    """How many hashes the tile at ``(level, index)`` holds in a tree of ``size``:
    ``TILE_WIDTH`` when full, less for the rightmost partial tile, 0 or less when
    the tree has no hash in it (no checks, no objects: proofs call this per node)."""
    return min((size >> (TILE_HEIGHT * level)) - index * TILE_WIDTH, TILE_WIDTH)


def tile_for(level: int, index: int, size: int) -> TileRef:
    """The tile at ``(level, index)`` as it exists in a tree of ``size``.

    Full if the tree has filled it, otherwise the rightmost partial tile.
    Raises :class:`InvalidRequest` if the tree has no hash in that tile.
    """
    width = tile_width(level, index, size)
    if width <= 0:
        raise InvalidRequest(f"a tree of size {size} has no tile {index} at level {level}")
    return TileRef(level, index, width)


def bundle_for(index: int, size: int) -> TileRef:
    """The entry bundle ``index`` as it exists in a tree of ``size`` (full or partial)."""
    ref = tile_for(0, index, size)
    return TileRef(0, ref.index, ref.width, entries=True)


def partial_tiles(size: int) -> list[TileRef]:
    """The partial hash tiles of a tree of ``size``, lowest level first."""
    out = []
    for level in range(tile_levels(size)):
        width = partial_width(level, size)
        if width:
            out.append(TileRef(level, (size >> (TILE_HEIGHT * level)) // TILE_WIDTH, width))
    return out


def node_location(level: int, index: int) -> tuple[int, int, int, int]:
    """Where tree node ``(level, index)`` lives in the tiles.

    Returns ``(tile_level, tile_index, sublevel, position)``: the node is at
    ``sublevel`` (0..7) inside that tile, ``position`` nodes from the tile's left
    at that sublevel, and it is the hash of tile entries
    ``[position << sublevel, (position + 1) << sublevel)``.
    """
    tile_level, sublevel = divmod(level, TILE_HEIGHT)
    first = index << sublevel
    return tile_level, first >> TILE_HEIGHT, sublevel, (first % TILE_WIDTH) >> sublevel


# --- entry bundles -------------------------------------------------------------------------


def encode_entry(entry: bytes) -> bytes:
    """One length-prefixed bundle record."""
    if len(entry) > MAX_ENTRY_SIZE:
        raise InvalidRequest(
            f"entry is {len(entry)} bytes; entry bundles hold at most {MAX_ENTRY_SIZE}"
        )
    return len(entry).to_bytes(2, "big") + entry


def encode_bundle(entries: Iterable[bytes]) -> bytes:
    """Encode entries as a C2SP entry bundle (uint16 big-endian length prefixes)."""
    return b"".join(encode_entry(e) for e in entries)


def decode_bundle(data: bytes, expected: int | None = None) -> list[bytes]:
    """Decode an entry bundle; with ``expected``, require exactly that many entries.

    Raises :class:`InvalidRequest` on truncation, trailing bytes or a wrong count,
    and on more than 256 entries.
    """
    out: list[bytes] = []
    pos, end = 0, len(data)
    view = memoryview(data)
    while pos < end:
        if end - pos < 2:
            raise InvalidRequest(f"entry bundle is truncated at byte {pos} (length prefix)")
        n = (data[pos] << 8) | data[pos + 1]
        pos += 2
        if end - pos < n:
            raise InvalidRequest(
                f"entry bundle is truncated at byte {pos}: entry {len(out)} needs {n} bytes"
            )
        out.append(bytes(view[pos : pos + n]))
        pos += n
        if len(out) > TILE_WIDTH:
            raise InvalidRequest(f"entry bundle has more than {TILE_WIDTH} entries")
    if expected is not None and len(out) != expected:
        raise InvalidRequest(f"entry bundle has {len(out)} entries, expected {expected}")
    return out
