"""RFC 6962 Merkle hashing, compact ranges and proofs (sigstack.core.merkle)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sigstack.core.errors import InvalidRequest, VerificationError
from sigstack.core.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    range_nodes,
    root_from_inclusion_proof,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).parents[2] / "vectors" / "merkle"
TD = json.loads((VECTORS / "rfc6962_transparency_dev.json").read_text())
SIGSTORE = json.loads((VECTORS / "sigstore_inclusion_proofs.json").read_text())

TD_LEAVES = [bytes.fromhex(x) for x in TD["leaf_inputs_hex"]]
TD_ROOTS = [bytes.fromhex(x) for x in TD["roots_by_size"]]
TD_NODES = [[bytes.fromhex(x) for x in level] for level in TD["node_hashes"]]


def _mth(hashes: list[bytes]) -> bytes:
    """Naive recursive RFC 6962 MTH over leaf hashes (the spec's definition)."""
    if not hashes:
        return EMPTY_ROOT
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return node_hash(_mth(hashes[:k]), _mth(hashes[k:]))


def _ref_path(m: int, hashes: list[bytes]) -> list[bytes]:
    """RFC 6962 section 2.1.1 PATH(m, D[n]), recursive, as the RFC states it."""
    n = len(hashes)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*_ref_path(m, hashes[:k]), _mth(hashes[k:])]
    return [*_ref_path(m - k, hashes[k:]), _mth(hashes[:k])]


def _ref_subproof(m: int, hashes: list[bytes], whole: bool) -> list[bytes]:
    """RFC 6962 section 2.1.2 SUBPROOF(m, D[n], b)."""
    n = len(hashes)
    if m == n:
        return [] if whole else [_mth(hashes)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*_ref_subproof(m, hashes[:k], whole), _mth(hashes[k:])]
    return [*_ref_subproof(m - k, hashes[k:], False), _mth(hashes[:k])]


def _tree(n: int) -> tuple[list[bytes], Callable[[int, int], bytes]]:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]

    def node(level: int, index: int) -> bytes:
        start, end = index << level, (index + 1) << level
        assert end <= n, f"node ({level}, {index}) is not complete in a tree of {n}"
        return _mth(leaves[start:end])

    return leaves, node


# --- hashing and published vectors ---------------------------------------------------------


def test_empty_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == TD["roots_by_size"][0]
    assert root_from_leaves([]) == EMPTY_ROOT
    assert CompactRange().root() == EMPTY_ROOT


def test_leaf_and_node_hashes_match_published_node_hashes() -> None:
    assert [leaf_hash(x) for x in TD_LEAVES] == TD_NODES[0]
    for level in range(1, len(TD_NODES)):
        below = TD_NODES[level - 1]
        assert [node_hash(below[2 * i], below[2 * i + 1]) for i in range(len(below) // 2)] == (
            TD_NODES[level]
        )


def test_roots_for_every_size_match_published_roots() -> None:
    rng = CompactRange()
    for size, want in enumerate(TD_ROOTS):
        assert root_from_leaves(TD_LEAVES[:size]) == want
        assert rng.root() == want
        if size < len(TD_LEAVES):
            rng.append(leaf_hash(TD_LEAVES[size]))


def test_compact_range_hashes_are_the_published_complete_subtrees() -> None:
    rng = CompactRange()
    for size in range(1, len(TD_LEAVES) + 1):
        rng.append(leaf_hash(TD_LEAVES[size - 1]))
        assert list(rng.hashes) == [TD_NODES[lv][ix] for lv, ix in range_nodes(size)]


@pytest.mark.parametrize("case", TD["inclusion"], ids=lambda c: f"{c['index']}-of-{c['size']}")
def test_published_inclusion_proofs(case: dict[str, Any]) -> None:
    index, size = int(case["index"]), int(case["size"])
    want = [bytes.fromhex(h) for h in case["proof"]]
    leaves = [leaf_hash(x) for x in TD_LEAVES[:size]]
    got = inclusion_proof(index, size, lambda lv, ix: TD_NODES[lv][ix])
    assert got == want
    verify_inclusion(leaves[index], index, size, want, TD_ROOTS[size])


@pytest.mark.parametrize("case", TD["consistency"], ids=lambda c: f"{c['old']}-to-{c['new']}")
def test_published_consistency_proofs(case: dict[str, Any]) -> None:
    old, new = int(case["old"]), int(case["new"])
    want = [bytes.fromhex(h) for h in case["proof"]]
    got = consistency_proof(old, new, lambda lv, ix: TD_NODES[lv][ix])
    assert got == want
    verify_consistency(old, new, TD_ROOTS[old], TD_ROOTS[new], want)


@pytest.mark.parametrize("case", SIGSTORE["cases"], ids=lambda c: c["name"])
def test_real_rekor_inclusion_proofs_verify(case: dict[str, Any]) -> None:
    leaf = leaf_hash(base64.b64decode(case["leaf_b64"]))
    proof = [base64.b64decode(h) for h in case["proof_b64"]]
    root = base64.b64decode(case["root_b64"])
    index, size = int(case["index"]), int(case["size"])
    verify_inclusion(leaf, index, size, proof, root)
    with pytest.raises(VerificationError):
        verify_inclusion(leaf, index + 1, size, proof, root)


# --- generated proofs against the RFC's own definitions ----------------------------------


@pytest.mark.parametrize("size", range(1, 71))
def test_every_inclusion_proof_matches_rfc_path_and_verifies(size: int) -> None:
    leaves, node = _tree(size)
    root = _mth(leaves)
    for index in range(size):
        proof = inclusion_proof(index, size, node)
        assert proof == _ref_path(index, leaves)
        verify_inclusion(leaves[index], index, size, proof, root)


@pytest.mark.parametrize("new", range(1, 71))
def test_every_consistency_proof_matches_rfc_subproof_and_verifies(new: int) -> None:
    leaves, node = _tree(new)
    new_root = _mth(leaves)
    for old in range(0, new + 1):
        proof = consistency_proof(old, new, node)
        if 0 < old < new:
            assert proof == _ref_subproof(old, leaves, True)
        else:
            assert proof == []
        verify_consistency(old, new, _mth(leaves[:old]), new_root, proof)


def test_batch_inclusion_proofs_equal_single_proofs() -> None:
    for end in range(1, 48):
        leaves, node = _tree(end)
        for start in range(end):
            rng = CompactRange.from_hashes(start, [node(lv, ix) for lv, ix in range_nodes(start)])
            appended = rng.extend(leaves[start:])
            assert rng.root() == _mth(leaves)
            proofs = appended.inclusion_proofs()
            assert proofs == [inclusion_proof(i, end, node) for i in range(start, end)]


def test_batch_inclusion_proofs_across_a_large_tile_boundary() -> None:
    end = 70_000
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(end)]
    rng = CompactRange()
    rng.extend(leaves[:65_530])
    appended = rng.extend(leaves[65_530:])
    proofs = appended.inclusion_proofs()
    root = rng.root()
    assert root == root_from_leaves([i.to_bytes(4, "big") for i in range(end)])
    for offset in (0, 1, 5, 6, 100, len(proofs) - 1):
        index = 65_530 + offset
        verify_inclusion(leaves[index], index, end, proofs[offset], root)


# --- compact ranges ------------------------------------------------------------------------


def test_append_emits_every_completed_node_exactly_once() -> None:
    n = 100
    leaves, node = _tree(n)
    rng = CompactRange()
    emitted: dict[tuple[int, int], bytes] = {}
    for i, h in enumerate(leaves):
        nodes = rng.append(h)
        assert nodes[0] == (0, i, h)
        for level, index, value in nodes:
            assert (level, index) not in emitted
            emitted[(level, index)] = value
    complete = {(lv, ix) for lv in range(8) for ix in range(n >> lv)}
    assert set(emitted) == complete
    for (lv, ix), value in emitted.items():
        assert value == node(lv, ix)


def test_extend_records_the_same_nodes_as_append() -> None:
    leaves, _ = _tree(77)
    one, many = CompactRange(), CompactRange()
    one.extend(leaves[:13])
    many.extend(leaves[:13])
    by_level: dict[int, list[bytes]] = {}
    for h in leaves[13:]:
        for level, _index, value in one.append(h):
            by_level.setdefault(level, []).append(value)
    appended = many.extend(leaves[13:])
    assert {lv: appended.at_level(lv) for lv in by_level} == by_level
    assert appended.at_level(40) == []
    assert one.hashes == many.hashes == appended.after
    assert appended.start == 13 and appended.end == 77


def test_from_hashes_round_trip() -> None:
    rng = CompactRange()
    rng.extend(_tree(45)[0])
    again = CompactRange.from_hashes(45, rng.hashes)
    assert again.root() == rng.root() and again.size == 45


def test_from_hashes_rejects_wrong_number_of_hashes() -> None:
    with pytest.raises(InvalidRequest, match="has 3 hashes"):
        CompactRange.from_hashes(7, [EMPTY_ROOT] * 2)


def test_from_hashes_rejects_short_hash() -> None:
    with pytest.raises(InvalidRequest, match="32 bytes"):
        CompactRange.from_hashes(1, [b"short"])


def test_append_rejects_non_hash() -> None:
    with pytest.raises(InvalidRequest):
        CompactRange().append(b"not a hash")


def test_range_nodes() -> None:
    assert range_nodes(0) == []
    assert range_nodes(6) == [(2, 0), (1, 2)]
    assert range_nodes(7) == [(2, 0), (1, 2), (0, 6)]


# --- generation arguments --------------------------------------------------------------------


def test_inclusion_proof_rejects_index_outside_tree() -> None:
    _, node = _tree(4)
    with pytest.raises(InvalidRequest):
        inclusion_proof(4, 4, node)
    with pytest.raises(InvalidRequest):
        inclusion_proof(-1, 4, node)


def test_consistency_proof_rejects_old_larger_than_new() -> None:
    _, node = _tree(4)
    with pytest.raises(InvalidRequest):
        consistency_proof(5, 4, node)


# --- inclusion: named negative cases ---------------------------------------------------------

N = 13
InclusionCase = tuple[bytes, int, int, list[bytes], bytes]
ConsistencyCase = tuple[int, int, bytes, bytes, list[bytes]]


@pytest.fixture
def inclusion_case() -> InclusionCase:
    leaves, node = _tree(N)
    index = 6
    return leaves[index], index, N, inclusion_proof(index, N, node), _mth(leaves)


def test_inclusion_tampered_hash_fails(inclusion_case: InclusionCase) -> None:
    leaf, index, size, proof, root = inclusion_case
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
        with pytest.raises(VerificationError):
            verify_inclusion(leaf, index, size, bad, root)


def test_inclusion_wrong_index_fails(inclusion_case: InclusionCase) -> None:
    leaf, index, size, proof, root = inclusion_case
    for wrong in (index - 1, index + 1, index ^ 2):
        with pytest.raises(VerificationError):
            verify_inclusion(leaf, wrong, size, proof, root)


def test_inclusion_wrong_size_fails(inclusion_case: InclusionCase) -> None:
    leaf, index, size, proof, root = inclusion_case
    # A neighbouring size can share the proof's shape (the signed checkpoint binds
    # the size), so probe sizes that change the tree's height.
    for wrong in (size * 2, size // 2, 1):
        with pytest.raises(VerificationError):
            verify_inclusion(leaf, index, wrong, proof, root)


def test_inclusion_extra_hash_fails(inclusion_case: InclusionCase) -> None:
    leaf, index, size, proof, root = inclusion_case
    with pytest.raises(VerificationError, match="too many"):
        verify_inclusion(leaf, index, size, [*proof, root], root)
    with pytest.raises(VerificationError):
        verify_inclusion(leaf, index, size, [root, *proof], root)


def test_inclusion_missing_hash_fails(inclusion_case: InclusionCase) -> None:
    leaf, index, size, proof, root = inclusion_case
    with pytest.raises(VerificationError, match="too few"):
        verify_inclusion(leaf, index, size, proof[:-1], root)
    with pytest.raises(VerificationError):
        verify_inclusion(leaf, index, size, proof[1:], root)


def test_inclusion_wrong_root_fails(inclusion_case: InclusionCase) -> None:
    leaf, index, size, proof, _ = inclusion_case
    for wrong in (EMPTY_ROOT, leaf, bytes(32)):
        with pytest.raises(VerificationError, match="expected root"):
            verify_inclusion(leaf, index, size, proof, wrong)


def test_inclusion_wrong_leaf_fails(inclusion_case: InclusionCase) -> None:
    _, index, size, proof, root = inclusion_case
    with pytest.raises(VerificationError):
        verify_inclusion(leaf_hash(b"other"), index, size, proof, root)


def test_inclusion_index_not_below_size_fails() -> None:
    leaf = leaf_hash(b"x")
    for index, size in ((0, 0), (1, 1), (2, 1)):
        with pytest.raises(VerificationError, match="not in a tree"):
            verify_inclusion(leaf, index, size, [], leaf)


def test_inclusion_malformed_hash_lengths_fail(inclusion_case: InclusionCase) -> None:
    leaf, index, size, proof, root = inclusion_case
    with pytest.raises(VerificationError, match="32 bytes"):
        verify_inclusion(leaf, index, size, [*proof[:-1], b""], root)
    with pytest.raises(VerificationError, match="32 bytes"):
        verify_inclusion(leaf[:31], index, size, proof, root)
    with pytest.raises(VerificationError, match="32 bytes"):
        verify_inclusion(leaf, index, size, proof, b"")


def test_inclusion_absurd_tree_size_fails() -> None:
    with pytest.raises(VerificationError, match="out of range"):
        root_from_inclusion_proof(EMPTY_ROOT, 0, 2**64, [])


def test_single_leaf_tree_root_is_the_leaf() -> None:
    leaf = leaf_hash(b"data")
    verify_inclusion(leaf, 0, 1, [], leaf)
    with pytest.raises(VerificationError):
        verify_inclusion(leaf, 0, 1, [], EMPTY_ROOT)


def test_every_single_bit_flip_in_small_proofs_fails() -> None:
    for size in range(2, 20):
        leaves, node = _tree(size)
        root = _mth(leaves)
        for index in range(size):
            proof = inclusion_proof(index, size, node)
            for i in range(len(proof)):
                bad = list(proof)
                bad[i] = bad[i][:31] + bytes([bad[i][31] ^ 0x80])
                with pytest.raises(VerificationError):
                    verify_inclusion(leaves[index], index, size, bad, root)


# --- consistency: named negative cases -------------------------------------------------------


@pytest.fixture
def consistency_case() -> ConsistencyCase:
    leaves, node = _tree(N)
    old = 6
    return old, N, _mth(leaves[:old]), _mth(leaves), consistency_proof(old, N, node)


def test_consistency_tampered_hash_fails(consistency_case: ConsistencyCase) -> None:
    old, new, r1, r2, proof = consistency_case
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 0x10]) + bad[i][1:]
        with pytest.raises(VerificationError):
            verify_consistency(old, new, r1, r2, bad)


def test_consistency_wrong_old_size_fails(consistency_case: ConsistencyCase) -> None:
    old, new, r1, r2, proof = consistency_case
    for wrong in (old - 1, old + 1, old ^ 2):
        with pytest.raises(VerificationError):
            verify_consistency(wrong, new, r1, r2, proof)


def test_consistency_wrong_new_size_fails(consistency_case: ConsistencyCase) -> None:
    old, new, r1, r2, proof = consistency_case
    for wrong in (new * 2, new // 2, old):
        with pytest.raises(VerificationError):
            verify_consistency(old, wrong, r1, r2, proof)


def test_consistency_extra_hash_fails(consistency_case: ConsistencyCase) -> None:
    old, new, r1, r2, proof = consistency_case
    for bad in ([*proof, r1], [*proof, r2], [r1, *proof], [proof[0], *proof]):
        with pytest.raises(VerificationError):
            verify_consistency(old, new, r1, r2, bad)


def test_consistency_missing_hash_fails(consistency_case: ConsistencyCase) -> None:
    old, new, r1, r2, proof = consistency_case
    for bad in (proof[:-1], proof[1:], []):
        with pytest.raises(VerificationError):
            verify_consistency(old, new, r1, r2, bad)


def test_consistency_wrong_roots_fail(consistency_case: ConsistencyCase) -> None:
    old, new, r1, r2, proof = consistency_case
    with pytest.raises(VerificationError, match="old root"):
        verify_consistency(old, new, bytes(32), r2, proof)
    with pytest.raises(VerificationError, match="new root"):
        verify_consistency(old, new, r1, bytes(32), proof)
    with pytest.raises(VerificationError):
        verify_consistency(old, new, r2, r1, proof)


def test_consistency_old_larger_than_new_fails(consistency_case: ConsistencyCase) -> None:
    old, new, r1, r2, proof = consistency_case
    with pytest.raises(VerificationError, match="larger"):
        verify_consistency(new, old, r2, r1, proof)


def test_consistency_equal_sizes() -> None:
    root = leaf_hash(b"x")
    verify_consistency(1, 1, root, root, [])
    with pytest.raises(VerificationError, match="two different roots"):
        verify_consistency(1, 1, root, EMPTY_ROOT, [])
    with pytest.raises(VerificationError, match="must be empty"):
        verify_consistency(1, 1, root, root, [root])


def test_consistency_from_empty_tree() -> None:
    root = leaf_hash(b"x")
    verify_consistency(0, 1, EMPTY_ROOT, root, [])
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(VerificationError, match="must be empty"):
        verify_consistency(0, 1, EMPTY_ROOT, root, [root])
    with pytest.raises(VerificationError, match="empty tree"):
        verify_consistency(0, 1, root, root, [])


def test_consistency_malformed_hash_fails(consistency_case: ConsistencyCase) -> None:
    old, new, r1, r2, proof = consistency_case
    with pytest.raises(VerificationError, match="32 bytes"):
        verify_consistency(old, new, r1, r2, [*proof[:-1], proof[-1][:16]])
