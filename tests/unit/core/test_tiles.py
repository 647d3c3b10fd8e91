"""C2SP tlog-tiles names, geometry and entry bundles (sigstack.core.tiles)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sigstack.core import tiles
from sigstack.core.errors import InvalidRequest
from sigstack.core.tiles import (
    FULL_TILE_BYTES,
    MAX_ENTRY_SIZE,
    MAX_TILE_LEVEL,
    TileRef,
    bundle_for,
    decode_bundle,
    encode_bundle,
    encode_index,
    entries_path,
    node_location,
    parse_index,
    parse_path,
    partial_tiles,
    partial_width,
    tile_for,
    tile_levels,
    tile_path,
)

SPEC = json.loads(
    (Path(__file__).parents[2] / "vectors" / "tiles" / "tlog_tiles_spec.json").read_text()
)


# --- index and path encoding ----------------------------------------------------------------


@pytest.mark.parametrize("case", SPEC["index_encoding"], ids=lambda c: str(c["index"]))
def test_spec_index_encoding_example(case: dict[str, Any]) -> None:
    assert encode_index(int(case["index"])) == case["encoded"]
    assert parse_index(str(case["encoded"])) == case["index"]


@pytest.mark.parametrize(
    ("index", "encoded"),
    [
        (0, "000"),
        (7, "007"),
        (999, "999"),
        (1000, "x001/000"),
        (1234, "x001/234"),
        (1_000_000, "x001/x000/000"),
        (2**56 - 1, "x072/x057/x594/x037/x927/935"),
    ],
)
def test_index_encoding(index: int, encoded: str) -> None:
    assert encode_index(index) == encoded
    assert parse_index(encoded) == index


def test_index_round_trip_over_a_range() -> None:
    for index in [*range(0, 5000, 7), *range(999_990, 1_000_010)]:
        assert parse_index(encode_index(index)) == index


def test_spec_path_examples() -> None:
    assert tile_path(0, 1234) == "tile/0/x001/234"
    assert tile_path(0, 1234, 17) == "tile/0/x001/234.p/17"
    assert tile_path(2, 1234067) == "tile/2/x001/x234/067"
    assert entries_path(0, 7) == "tile/entries/000.p/7"
    assert entries_path(1234067) == "tile/entries/x001/x234/067"


@pytest.mark.parametrize(
    ("path", "ref"),
    [
        ("tile/0/000", TileRef(0, 0)),
        ("tile/0/x001/234", TileRef(0, 1234)),
        ("tile/0/x001/234.p/17", TileRef(0, 1234, 17)),
        ("tile/63/000.p/1", TileRef(63, 0, 1)),
        ("tile/1/x001/x234/067.p/255", TileRef(1, 1234067, 255)),
        ("tile/entries/000", TileRef(0, 0, entries=True)),
        ("tile/entries/x001/234.p/5", TileRef(0, 1234, 5, entries=True)),
        ("tile/0/x072/x057/x594/x037/x927/935", TileRef(0, 2**56 - 1)),
    ],
)
def test_parse_path_accepts_canonical_paths(path: str, ref: TileRef) -> None:
    assert parse_path(path) == ref
    assert ref.path == path


@pytest.mark.parametrize(
    "path",
    [
        "checkpoint",
        "tile",
        "tile/0",
        "tile/0/",
        "tile/0/1234",  # 4 digits in one element
        "tile/0/01",  # 2 digits
        "tile/0/x001",  # last element with x
        "tile/0/001/234",  # non-last element without x
        "tile/0/x000/001",  # leading zero element
        "tile/0/x001/x002",
        "tile/0/000/",
        "tile/00/000",  # level with leading zero
        "tile/01/000",
        "tile/64/000",  # level beyond 63
        "tile/-1/000",
        "tile/+1/000",
        "tile/0/000.p/0",  # width 0
        "tile/0/000.p/256",  # width 256 is a full tile, never .p
        "tile/0/000.p/007",  # width with leading zeroes
        "tile/0/000.p/",
        "tile/0/000.p",
        "tile/0/000.p/1/2",
        "tile/entries/000.p/0",
        "tile/entries/000.p/300",
        "/tile/0/000",
        "tile/0/../000",
        "tile//0/000",
        "tile/0/ 000",
        "tile/0/\u0661\u0662\u0663",  # non-ASCII digits
        "tile/x/000",
        "tiles/0/000",
        "tile/0/x072/x057/x594/x037/x927/936",  # beyond 2**64 leaves
        "tile/8/001",  # level 8 has only tile 0 below 2**64 leaves
        "tile/0/x001/x002/x003/x004/x005/x006/x007/008",  # too many elements
    ],
)
def test_parse_path_rejects_non_canonical_paths(path: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_path(path)


def test_tile_path_rejects_bad_arguments() -> None:
    with pytest.raises(InvalidRequest):
        tile_path(0, 1, 0)
    with pytest.raises(InvalidRequest):
        tile_path(0, 1, 257)
    with pytest.raises(InvalidRequest):
        tile_path(MAX_TILE_LEVEL + 1, 0)
    with pytest.raises(InvalidRequest):
        encode_index(-1)
    with pytest.raises(InvalidRequest):
        TileRef(1, 0, entries=True)


# --- geometry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", SPEC["tree_shapes"], ids=lambda c: str(c["size"]))
def test_spec_tree_shapes(case: dict[str, Any]) -> None:
    size = int(case["size"])
    full: dict[str, int] = case["full_tiles"]
    widths: dict[str, int] = case["partial_widths"]
    assert tile_levels(size) == len(widths)
    for level_text, want in full.items():
        level = int(level_text)
        assert (size >> (8 * level)) // 256 == want
    for level_text, want in widths.items():
        assert partial_width(int(level_text), size) == want
    assert [(t.level, t.width) for t in partial_tiles(size)] == [
        (int(lv), w) for lv, w in widths.items() if w
    ]


def test_spec_limits() -> None:
    limits = SPEC["limits"]
    assert MAX_TILE_LEVEL == limits["max_level"]
    assert FULL_TILE_BYTES == limits["full_tile_bytes"]
    assert TileRef(0, 0).byte_size == FULL_TILE_BYTES


def test_tile_for_full_partial_and_missing() -> None:
    assert tile_for(0, 0, 256) == TileRef(0, 0)
    assert tile_for(0, 1, 300) == TileRef(0, 1, 44)
    assert tile_for(1, 0, 70_000) == TileRef(1, 0)
    assert tile_for(1, 1, 70_000) == TileRef(1, 1, 17)
    assert tile_for(2, 0, 70_000) == TileRef(2, 0, 1)
    with pytest.raises(InvalidRequest):
        tile_for(0, 2, 300)
    assert bundle_for(1, 300) == TileRef(0, 1, 44, entries=True)


def test_min_tree_size() -> None:
    assert TileRef(0, 0).min_tree_size == 256
    assert TileRef(0, 1, 44).min_tree_size == 300
    assert TileRef(1, 0, 17).min_tree_size == 17 * 256
    assert TileRef(1, 0).min_tree_size == 65536


def test_node_location() -> None:
    assert node_location(0, 1234) == (0, 4, 0, 210)
    assert node_location(3, 40) == (0, 1, 3, 8)  # leaves 320..327: tile 1, entries 64..71
    assert node_location(8, 5) == (1, 0, 0, 5)
    assert node_location(9, 300) == (1, 2, 1, 44)


# --- entry bundles ---------------------------------------------------------------------------


def test_bundle_round_trip() -> None:
    entries = [b"", b"a", b"\x00" * 300, b"z" * MAX_ENTRY_SIZE]
    data = encode_bundle(entries)
    assert data[:2] == b"\x00\x00" and data[2:5] == b"\x00\x01a"
    assert decode_bundle(data) == entries
    assert decode_bundle(data, expected=4) == entries


def test_bundle_entry_too_large_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="65535"):
        encode_bundle([b"x" * (MAX_ENTRY_SIZE + 1)])


def test_bundle_truncated_is_refused() -> None:
    data = encode_bundle([b"hello", b"world"])
    for cut in (1, 3, len(data) - 1):
        with pytest.raises(InvalidRequest, match="truncated"):
            decode_bundle(data[:cut])


def test_bundle_wrong_count_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="expected 3"):
        decode_bundle(encode_bundle([b"a", b"b"]), expected=3)


def test_bundle_more_than_256_entries_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="more than 256"):
        decode_bundle(encode_bundle([b"x"] * 257))


def test_inner_nodes_paths_round_trip_and_refuse_other_spellings() -> None:
    for level, index in [(0, 0), (0, 7), (2, 1234067), (63, 1)]:
        key = tiles.inner_nodes_path(level, index)
        assert tiles.parse_inner_nodes_path(key) == (level, index)
    assert tiles.inner_nodes_path(1, 1234067) == "inner/1/x001/x234/067"
    for other in [
        "tile/0/000",
        "inner/0",
        "inner/00/001",  # leading zero in the level
        "inner/64/001",  # beyond the highest level
        "inner/0/1",  # index not in 3-digit groups
        "inner/0/x000/001",  # leading zero group
        "inner/0/001.p/3",
        "inner/a/001",
    ]:
        assert tiles.parse_inner_nodes_path(other) is None, other
    with pytest.raises(InvalidRequest):
        tiles.inner_nodes_path(64, 0)
    assert tiles.INNER_NODES_BYTES == 254 * tiles.HASH_SIZE
