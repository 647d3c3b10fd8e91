"""RFC 6962 / RFC 9162 Merkle tree hashing, compact ranges and proofs.

Pure and I/O-free. What this module guarantees:

* Hashing is exactly RFC 6962 section 2.1 with SHA-256: ``leaf_hash(d) =
  SHA-256(0x00 || d)``, ``node_hash(l, r) = SHA-256(0x01 || l || r)`` and the
  root of the empty tree is ``SHA-256("")``.
* Proofs are generated from *complete* nodes only: callers pass ``node(level,
  index)`` returning the hash of the complete subtree covering leaves
  ``[index * 2**level, (index + 1) * 2**level)``. Nodes on the tree's right border
  that are not complete ("ephemeral" nodes) are derived here by folding complete
  nodes, which gives the RFC 6962 ``PATH`` / ``SUBPROOF`` results exactly. That is
  what lets a tiled log (where only complete nodes are stored) serve classic proofs.
* ``verify_inclusion`` and ``verify_consistency`` implement RFC 9162 sections
  2.1.3.2 and 2.1.4.2 and raise :class:`~sigstack.core.errors.VerificationError`
  when a proof does not verify; they never return a bool.
* :class:`CompactRange` is the right edge of a tree of any size: the hashes of the
  complete subtrees that make up ``[0, size)``. Appending emits every node that
  becomes complete (leaves included), so a log can fill its tiles from the same
  hashing work (one leaf hash plus about one node hash per leaf), and
  :meth:`AppendedNodes.inclusion_proofs` turns that same work into the inclusion
  proofs of every appended leaf without touching storage.

Sizes and indexes are Python ints; everything is bounded to 2**64 leaves, the
RFC 6962 limit, so a hostile "size" cannot make a verifier loop for long.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sigstack.core.errors import InvalidRequest, VerificationError

HASH_SIZE = 32
"""Size in bytes of every hash in the tree (SHA-256)."""

MAX_TREE_SIZE = 2**64 - 1
"""Largest tree size accepted anywhere (RFC 6962 tree sizes are uint64)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root hash of the empty tree: SHA-256 of the empty string (RFC 6962 2.1)."""

NodeFunc = Callable[[int, int], bytes]
"""``node(level, index) -> hash`` of a complete subtree."""

Node = tuple[int, int, bytes]
"""A node as ``(level, index, hash)``."""

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def root_from_leaves(leaves: Sequence[bytes]) -> bytes:
    """Reference Merkle Tree Hash of ``leaves`` (leaf *data*, not hashes).

    Straightforward level-by-level construction, O(n) memory; meant for tests
    and tools, not for the log's hot path.
    """
    if not leaves:
        return EMPTY_ROOT
    level = [leaf_hash(leaf) for leaf in leaves]
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def range_nodes(size: int) -> list[tuple[int, int]]:
    """The complete subtrees that make up ``[0, size)``, left to right.

    Each is ``(level, index)``; there is one per set bit of ``size``, largest
    first. Their hashes are exactly what :class:`CompactRange` holds.
    """
    _check_size(size, "size")
    out = []
    for level in range(size.bit_length() - 1, -1, -1):
        if (size >> level) & 1:
            out.append((level, (size >> level) - 1))
    return out


# --- compact ranges ------------------------------------------------------------------------


@dataclass(frozen=True)
class AppendedNodes:
    """Every node completed by appending leaves ``[start, end)`` to a tree.

    ``levels[l]`` holds, in index order, the nodes at level ``l`` that became
    complete; the first of them has index ``start >> l`` (tiles are filled from
    ``levels[0]``, ``levels[8]``, ``levels[16]``...). ``before`` and ``after`` are the
    compact-range hashes of ``[0, start)`` and ``[0, end)``.
    """

    start: int
    end: int
    levels: tuple[list[bytes], ...]
    before: tuple[bytes, ...]
    after: tuple[bytes, ...]

    def at_level(self, level: int) -> list[bytes]:
        """Nodes completed at ``level`` (index ``start >> level`` first); may be empty."""
        return self.levels[level] if level < len(self.levels) else []

    def inclusion_proofs(self) -> list[list[bytes]]:
        """Inclusion proof of every appended leaf in the tree of size ``end``.

        Uses only the nodes recorded here: the left neighbours come from
        ``before``, the complete nodes from ``levels`` and the ephemeral right-border
        nodes are folded from ``after`` (O(log n) hashes for the whole batch).
        Element ``i`` is the proof of leaf ``start + i``.
        """
        a, n = self.start, self.end
        if a >= n:
            return []
        depth = (n - 1).bit_length()
        before = _by_level(a, self.before)
        after = _by_level(n, self.after)

        # windows[l] holds every level-l node an appended leaf's proof can use,
        # indexes bases[l]..lasts[l] of the tree of size n:
        #   * the left sibling of the first appended node, when (a >> l) is odd: it is
        #     the old compact range's node at level l;
        #   * the nodes this append completed at level l (first index a >> l);
        #   * when 2**l does not divide n, the ephemeral right-border node covering
        #     [(n >> l) << l, n), folded from the new range's nodes below level l.
        windows: list[list[bytes]] = []
        bases: list[int] = []
        lasts: list[int] = []
        ephemeral: bytes | None = None
        for level in range(depth):
            if level and (n >> (level - 1)) & 1:
                below = after[level - 1]
                ephemeral = below if ephemeral is None else node_hash(below, ephemeral)
            window: list[bytes] = []
            if (a >> level) & 1:
                window.append(before[level])
            window.extend(self.at_level(level))
            if n & ((1 << level) - 1):
                assert ephemeral is not None
                window.append(ephemeral)
            base = (a >> level) & ~1
            last = (n - 1) >> level
            if len(window) != last - base + 1:  # pragma: no cover - internal invariant
                raise VerificationError(
                    f"appended nodes at level {level} do not cover [{base}, {last}]"
                )
            windows.append(window)
            bases.append(base)
            lasts.append(last)

        # A proof's hashes at levels >= k depend only on leaf >> k, so the upper
        # parts are built once per 2**k leaves and shared: levels [mid, depth) once
        # per 2**mid leaves (themselves sharing [top, depth) per 2**top leaves),
        # and only the lowest `mid` levels are looked up per leaf.
        mid, top = min(4, depth), min(8, depth)

        def hashes_for(m: int, lo: int, hi: int) -> list[bytes]:
            out = []
            for level in range(lo, hi):
                sibling = (m >> level) ^ 1
                if sibling <= lasts[level]:
                    out.append(windows[level][sibling - bases[level]])
            return out

        low_levels = [(lv, windows[lv], bases[lv], lasts[lv]) for lv in range(mid)]
        tops: dict[int, list[bytes]] = {}
        tails: dict[int, list[bytes]] = {}
        proofs: list[list[bytes]] = []
        append = proofs.append
        for m in range(a, n):
            tail = tails.get(m >> mid)
            if tail is None:
                upper = tops.get(m >> top)
                if upper is None:
                    upper = tops[m >> top] = hashes_for(m, top, depth)
                tail = tails[m >> mid] = hashes_for(m, mid, top) + upper
            proof = []
            for level, window, base, last in low_levels:
                sibling = (m >> level) ^ 1
                if sibling <= last:
                    proof.append(window[sibling - base])
            append(proof + tail)
        return proofs


def _by_level(size: int, hashes: Sequence[bytes]) -> dict[int, bytes]:
    """Map level -> hash for the compact range of ``[0, size)``."""
    levels = [level for level, _ in range_nodes(size)]
    return dict(zip(levels, hashes, strict=True))


class CompactRange:
    """The right edge of a Merkle tree: hashes of the complete subtrees of ``[0, size)``.

    O(log n) memory. ``append``/``extend`` cost one leaf-independent merge per
    completed node (about one node hash per leaf on average) and report every
    node that became complete, leaves included.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_hashes(cls, size: int, hashes: Sequence[bytes]) -> CompactRange:
        """Rebuild the range of a tree of ``size`` from its complete-subtree hashes.

        ``hashes`` are the nodes listed by :func:`range_nodes` (largest first), for
        example read back from tiles when a log restarts.
        """
        _check_size(size, "size")
        want = bin(size).count("1")
        if len(hashes) != want:
            raise InvalidRequest(
                f"a compact range of size {size} has {want} hashes, got {len(hashes)}"
            )
        for h in hashes:
            _check_hash(h, "compact range hash", InvalidRequest)
        rng = cls()
        rng._size = size
        rng._hashes = [bytes(h) for h in hashes]
        return rng

    @property
    def size(self) -> int:
        """Number of leaves covered."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The complete-subtree hashes, largest (leftmost) first."""
        return tuple(self._hashes)

    def copy(self) -> CompactRange:
        """An independent copy."""
        return CompactRange.from_hashes(self._size, self._hashes)

    def append(self, leaf: bytes) -> list[Node]:
        """Append one leaf *hash*; return every node it completed, leaf first.

        Nodes are ``(level, index, hash)``; the leaf itself is ``(0, old_size, leaf)``.
        """
        _check_hash(leaf, "leaf hash", InvalidRequest)
        if self._size >= MAX_TREE_SIZE:
            raise InvalidRequest("the tree is full (2**64 - 1 leaves)")
        index = self._size
        out: list[Node] = [(0, index, leaf)]
        h = leaf
        size = index
        level = 0
        hashes = self._hashes
        while size & 1:
            h = _sha256(b"\x01" + hashes.pop() + h).digest()
            level += 1
            size >>= 1
            out.append((level, index >> level, h))
        hashes.append(h)
        self._size = index + 1
        return out

    def extend(self, leaves: Sequence[bytes]) -> AppendedNodes:
        """Append many leaf *hashes*; return the completed nodes grouped by level."""
        for leaf in leaves:
            if type(leaf) is not bytes or len(leaf) != HASH_SIZE:
                _check_hash(leaf, "leaf hash", InvalidRequest)
        start = self._size
        if start + len(leaves) > MAX_TREE_SIZE:
            raise InvalidRequest("the tree would exceed 2**64 - 1 leaves")
        before = tuple(self._hashes)
        hashes = self._hashes
        levels: list[list[bytes]] = [list(leaves)]
        size = start
        sha = _sha256
        for h in leaves:
            s = size
            level = 0
            while s & 1:
                h = sha(b"\x01" + hashes.pop() + h).digest()
                level += 1
                if level == len(levels):
                    levels.append([])
                levels[level].append(h)
                s >>= 1
            hashes.append(h)
            size += 1
        self._size = size
        return AppendedNodes(start, size, tuple(levels), before, tuple(hashes))

    def root(self) -> bytes:
        """Merkle Tree Hash of ``[0, size)``: the range folded right to left."""
        if not self._hashes:
            return EMPTY_ROOT
        h = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            h = node_hash(left, h)
        return h


# --- proof generation ----------------------------------------------------------------------


def inclusion_proof(index: int, size: int, node: NodeFunc) -> list[bytes]:
    """RFC 6962 ``PATH(index, D[size])`` from complete nodes.

    ``node(level, index)`` must return complete-subtree hashes; right-border
    nodes are folded here. Raises :class:`InvalidRequest` unless
    ``0 <= index < size``.
    """
    _check_size(size, "tree size")
    if not 0 <= index < size:
        raise InvalidRequest(f"leaf index {index} is not in a tree of size {size}")
    return _path(0, index, size, node)


def consistency_proof(old_size: int, new_size: int, node: NodeFunc) -> list[bytes]:
    """RFC 6962 ``PROOF(old_size, D[new_size])`` from complete nodes.

    Empty when ``old_size`` is 0 or equals ``new_size`` (nothing to prove).
    Raises :class:`InvalidRequest` unless ``0 <= old_size <= new_size``.
    """
    _check_size(new_size, "new tree size")
    if not 0 <= old_size <= new_size:
        raise InvalidRequest(f"cannot prove consistency from size {old_size} to size {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    # The old tree's rightmost complete subtree is the "seed"; the proof is the
    # seed (unless it is the whole old tree) followed by the seed's path to the
    # new root.
    level = (old_size & -old_size).bit_length() - 1
    index = (old_size >> level) - 1
    proof = _path(level, index, new_size, node)
    if index:
        proof.insert(0, node(level, index))
    return proof


def path_nodes(level: int, index: int, size: int) -> list[tuple[int, int]]:
    """The nodes of the audit path from the complete node ``(level, index)`` to the
    root of the tree of ``size``, in proof order, as ``(level, index)``.

    Every one is a complete node of that tree except possibly the top inner
    sibling (the right subtree holding the last leaf): it is incomplete when
    ``(index + 1) << level > size``, and its hash is :func:`subtree_hash`'s.
    """
    last = (size - 1) >> level
    inner = (index ^ last).bit_length()
    out = [(level + i, (index >> i) ^ 1) for i in range(inner)]
    out.extend(
        (level + i, (index >> i) ^ 1) for i in range(inner, last.bit_length()) if (index >> i) & 1
    )
    return out


def _path(level: int, index: int, size: int, node: NodeFunc) -> list[bytes]:
    """Audit path from the complete node ``(level, index)`` to the root of ``size``."""
    return [subtree_hash(lv, ix, size, node) for lv, ix in path_nodes(level, index, size)]


def subtree_hash(level: int, index: int, size: int, node: NodeFunc) -> bytes:
    """MTH of leaves ``[index << level, min((index + 1) << level, size))``: the node
    itself when complete, else folded from the complete nodes that make it up."""
    start = index << level
    end = min((index + 1) << level, size)
    if end - start == 1 << level:
        return node(level, index)
    # Split [start, end) into complete subtrees, largest first, then fold right to left.
    parts: list[bytes] = []
    pos = start
    for sub in range(level - 1, -1, -1):
        if ((end - start) >> sub) & 1:
            parts.append(node(sub, pos >> sub))
            pos += 1 << sub
    h = parts[-1]
    for left in reversed(parts[:-1]):
        h = node_hash(left, h)
    return h


# --- verification (RFC 9162 2.1.3.2 and 2.1.4.2) ------------------------------------------


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """Root implied by an inclusion proof (RFC 9162 2.1.3.2), or raise.

    Raises :class:`VerificationError` when the proof has the wrong shape for
    ``(index, size)``. A matching root still has to be compared by the caller;
    :func:`verify_inclusion` does both.
    """
    _check_hash(leaf, "leaf hash", VerificationError)
    if not 0 <= size <= MAX_TREE_SIZE:
        raise VerificationError(f"tree size {size} is out of range")
    if not 0 <= index < size:
        raise VerificationError(f"leaf index {index} is not in a tree of size {size}")
    fn, sn = index, size - 1
    r = leaf
    for i, p in enumerate(proof):
        _check_hash(p, f"inclusion proof hash {i}", VerificationError)
        if sn == 0:
            raise VerificationError(
                f"inclusion proof has {len(proof)} hashes; too many for leaf {index} of {size}"
            )
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError(
            f"inclusion proof has {len(proof)} hashes; too few for leaf {index} of {size}"
        )
    return r


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` (a leaf *hash*) is at ``index`` in the tree ``(size, root)``.

    Raises :class:`VerificationError` on any mismatch.
    """
    _check_hash(root, "root hash", VerificationError)
    computed = root_from_inclusion_proof(leaf, index, size, proof)
    if computed != root:
        raise VerificationError(
            f"inclusion proof for leaf {index} of tree size {size} does not lead to the "
            f"expected root (computed {computed.hex()}, expected {root.hex()})"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that tree ``(new_size, new_root)`` extends tree ``(old_size, old_root)``.

    RFC 9162 2.1.4.2. The empty tree is a prefix of every tree (its root must be
    :data:`EMPTY_ROOT` and the proof empty); equal sizes need equal roots and an
    empty proof. Raises :class:`VerificationError` on any mismatch.
    """
    _check_hash(old_root, "old root hash", VerificationError)
    _check_hash(new_root, "new root hash", VerificationError)
    if not 0 <= new_size <= MAX_TREE_SIZE:
        raise VerificationError(f"tree size {new_size} is out of range")
    if not 0 <= old_size <= new_size:
        raise VerificationError(
            f"old tree size {old_size} is larger than new tree size {new_size}"
            if old_size > new_size
            else f"tree size {old_size} is out of range"
        )
    if old_size == 0:
        if proof:
            raise VerificationError("a consistency proof from the empty tree must be empty")
        if old_root != EMPTY_ROOT:
            raise VerificationError("the root of an empty tree must be SHA-256 of nothing")
        return
    if old_size == new_size:
        if proof:
            raise VerificationError("a consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise VerificationError(
                f"two different roots for the same tree size {old_size}: "
                f"{old_root.hex()} and {new_root.hex()}"
            )
        return
    if not proof:
        raise VerificationError(f"empty consistency proof between sizes {old_size} and {new_size}")
    for i, p in enumerate(proof):
        _check_hash(p, f"consistency proof hash {i}", VerificationError)

    path = list(proof)
    if old_size & (old_size - 1) == 0:  # exact power of two: the old root is a node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError(
                f"consistency proof has {len(proof)} hashes; too many for sizes "
                f"{old_size} -> {new_size}"
            )
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError(
            f"consistency proof has {len(proof)} hashes; too few for sizes {old_size} -> {new_size}"
        )
    if fr != old_root:
        raise VerificationError(
            f"consistency proof does not match the old root of size {old_size} "
            f"(computed {fr.hex()}, expected {old_root.hex()})"
        )
    if sr != new_root:
        raise VerificationError(
            f"consistency proof does not match the new root of size {new_size} "
            f"(computed {sr.hex()}, expected {new_root.hex()})"
        )


# --- helpers -------------------------------------------------------------------------------


def _check_size(size: int, what: str) -> None:
    if not isinstance(size, int) or not 0 <= size <= MAX_TREE_SIZE:
        raise InvalidRequest(f"{what} {size!r} is not between 0 and 2**64 - 1")


def _check_hash(value: bytes, what: str, error: type[InvalidRequest | VerificationError]) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        got = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise error(f"{what} must be {HASH_SIZE} bytes (got {got})")
