"""An independent client of a C2SP tlog-tiles log: checkpoints, tiles, entries, proofs.

The benchmark's readers and the crash test judge the server with this module, so
it deliberately shares no Merkle code with the log engine: tree hashing, tile
geometry, tile names, entry-bundle decoding, proof construction (RFC 6962
``PATH`` and ``SUBPROOF``, written recursively, straight from the RFC's
definitions) and proof verification are implemented here from the specs
(RFC 6962 section 2.1, https://c2sp.org/tlog-tiles). Only signed-note parsing and
signature checks come from :mod:`sigstack.core.note`. Every proof this module
builds is verified twice: by its own recursive verifier and by
:mod:`sigstack.core.merkle`'s RFC 9162 iterative one; if the two ever disagreed,
that disagreement is reported as a failure too.

What a successful check means:

* :meth:`LogClient.verify_inclusion`: the entry bundle served for ``index`` holds
  exactly the expected bytes, and the served tiles prove that leaf into the
  signed checkpoint's root;
* :meth:`LogClient.verify_consistency`: the served tiles of the newer tree prove
  that the older signed tree is a prefix of it (no fork);
* :meth:`LogClient.audit`: every entry bundle and every tile of the tree a
  checkpoint names is re-derived from the entries and matches, byte for byte,
  and the entries hash to the signed root (an ``fsck`` over HTTP).

Any mismatch raises :class:`~sigstack.core.errors.VerificationError` saying what
disagreed; a resource the checkpoint covers but the server does not serve raises
:class:`~sigstack.core.errors.NotFound`.

Reads go through ``fetch(path) -> bytes | None`` (``None`` for 404) with C2SP
paths relative to the log's base URL (``checkpoint``, ``tile/0/x001/234.p/7``,
``tile/entries/000``). Tiles are cached by name (a name's content never
changes); a partial tile or bundle that is no longer served is replaced by the
full one, whose prefix it is.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import load_der_public_key

from sigstack.core import merkle as core_merkle
from sigstack.core.errors import ConfigError, NotFound, VerificationError
from sigstack.core.note import (
    Ed25519NoteVerifier,
    NoteVerifier,
    open_note,
    parse_checkpoint,
    parse_note,
)

Fetch = Callable[[str], Awaitable[bytes | None]]
"""``fetch(path)``: the bytes at a C2SP path below the log's base URL, None for 404."""

NodeFunc = Callable[[int, int], bytes]
"""``node(level, index)``: hash of the complete subtree of leaves
``[index * 2**level, (index + 1) * 2**level)``."""

T = TypeVar("T")

HEIGHT = 8
WIDTH = 1 << HEIGHT
HASH = 32
_ZERO = bytes(HASH)


# --- RFC 6962 hashing and proofs, recursively from the definitions ---------------------


def leaf_hash(entry: bytes) -> bytes:
    """MTH of one entry: SHA-256(0x00 || entry)."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree_hash(lo: int, hi: int, node: NodeFunc) -> bytes:
    """MTH(D[lo:hi]) for a range whose left end is aligned as RFC 6962 recursion leaves it."""
    n = hi - lo
    if n & (n - 1) == 0 and lo % n == 0:
        return node(n.bit_length() - 1, lo // n)
    k = _split(n)
    return node_hash(subtree_hash(lo, lo + k, node), subtree_hash(lo + k, hi, node))


def inclusion_path(m: int, lo: int, hi: int, node: NodeFunc) -> list[bytes]:
    """RFC 6962 ``PATH(m, D[lo:hi])``, bottom-up."""
    n = hi - lo
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*inclusion_path(m, lo, lo + k, node), subtree_hash(lo + k, hi, node)]
    return [*inclusion_path(m - k, lo + k, hi, node), subtree_hash(lo, lo + k, node)]


def consistency_path(m: int, lo: int, hi: int, node: NodeFunc, whole: bool = True) -> list[bytes]:
    """RFC 6962 ``SUBPROOF(m, D[lo:hi], whole)``."""
    n = hi - lo
    if m == n:
        return [] if whole else [subtree_hash(lo, hi, node)]
    k = _split(n)
    if m <= k:
        return [*consistency_path(m, lo, lo + k, node, whole), subtree_hash(lo + k, hi, node)]
    return [*consistency_path(m - k, lo + k, hi, node, False), subtree_hash(lo, lo + k, node)]


def root_from_inclusion(leaf: bytes, m: int, n: int, path: list[bytes]) -> bytes:
    """The root ``path`` proves for leaf hash ``leaf`` at ``m`` in a tree of ``n``."""
    if n == 1:
        if path:
            raise VerificationError(f"inclusion proof is {len(path)} hashes too long")
        return leaf
    if not path:
        raise VerificationError("inclusion proof is too short")
    k = _split(n)
    sibling, rest = path[-1], path[:-1]
    if m < k:
        return node_hash(root_from_inclusion(leaf, m, k, rest), sibling)
    return node_hash(sibling, root_from_inclusion(leaf, m - k, n - k, rest))


def roots_from_consistency(
    m: int, n: int, path: list[bytes], old_root: bytes, whole: bool = True
) -> tuple[bytes, bytes]:
    """The (old, new) roots a ``SUBPROOF(m, D[n])`` path implies (RFC 6962 2.1.2)."""
    if m == n:
        if whole:
            if path:
                raise VerificationError(f"consistency proof is {len(path)} hashes too long")
            return old_root, old_root
        if len(path) != 1:
            raise VerificationError("consistency proof has the wrong length")
        return path[0], path[0]
    if not path:
        raise VerificationError("consistency proof is too short")
    k = _split(n)
    sibling, rest = path[-1], path[:-1]
    if m <= k:
        old, new = roots_from_consistency(m, k, rest, old_root, whole)
        return old, node_hash(new, sibling)
    old, new = roots_from_consistency(m - k, n - k, rest, old_root, False)
    return node_hash(sibling, old), node_hash(sibling, new)


# --- C2SP tile names and bundles -------------------------------------------------------


def _index_path(index: int) -> str:
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(groups))


def tile_name(level: int, index: int, width: int) -> str:
    """``tile/<L>/<N>[.p/<W>]``."""
    suffix = "" if width == WIDTH else f".p/{width}"
    return f"tile/{level}/{_index_path(index)}{suffix}"


def bundle_name(index: int, width: int) -> str:
    """``tile/entries/<N>[.p/<W>]``."""
    suffix = "" if width == WIDTH else f".p/{width}"
    return f"tile/entries/{_index_path(index)}{suffix}"


def split_bundle(data: bytes, expected: int, where: str) -> list[bytes]:
    """The entries of a bundle (uint16 big-endian length prefixes), exactly ``expected``."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise VerificationError(f"{where}: truncated length prefix at byte {pos}")
        size = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if pos + size > len(data):
            raise VerificationError(f"{where}: entry {len(out)} is truncated")
        out.append(data[pos : pos + size])
        pos += size
    if len(out) < expected:
        raise VerificationError(f"{where}: holds {len(out)} entries, expected {expected}")
    return out[:expected] if len(out) > expected else out


def _width(count: int, index: int) -> int:
    """Width of tile ``index`` when its level holds ``count`` hashes."""
    return min(WIDTH, count - index * WIDTH)


# --- checkpoints -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A parsed (and, when a key is known, verified) checkpoint."""

    origin: str
    size: int
    root: bytes
    note: bytes


class LogKey:
    """A Rekor v2 checkpoint key: Ed25519 public key plus its 32-byte key ID.

    The key ID commits to the origin (SHA-256(origin || 0x0A || 0x01 || key)), so a
    checkpoint verifies only under the origin the trusted root was made for.
    """

    def __init__(self, public_key: ed25519.Ed25519PublicKey, key_id: bytes | None = None) -> None:
        self.public_key = public_key
        self.key_id = key_id
        self._verifiers: dict[str, NoteVerifier] = {}

    @classmethod
    def from_trust_config(cls, path: Path, base_url: str | None = None) -> LogKey:
        """The key of the Rekor v2 log in a ``trust_config.json`` or ``trusted_root.json``.

        With several logs, ``base_url`` picks one (else the only Ed25519 one).
        """
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the trust configuration {path}: {exc}") from exc
        root = doc.get("trustedRoot", doc)
        candidates = [
            t
            for t in root.get("tlogs", [])
            if t.get("publicKey", {}).get("keyDetails") == "PKIX_ED25519"
            and (base_url is None or t.get("baseUrl", "").rstrip("/") == base_url.rstrip("/"))
        ]
        if len(candidates) != 1:
            raise ConfigError(
                f"{path} has {len(candidates)} Ed25519 transparency logs"
                + (f" for {base_url}" if base_url else "")
                + "; expected exactly one"
            )
        tlog = candidates[0]
        key = load_der_public_key(base64.b64decode(tlog["publicKey"]["rawBytes"]))
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ConfigError(f"{path}: the Rekor v2 key is not an Ed25519 key")
        key_id = tlog.get("checkpointKeyId", tlog.get("logId", {})).get("keyId")
        return cls(key, base64.b64decode(key_id) if key_id else None)

    def verifier(self, origin: str) -> NoteVerifier:
        """The note verifier for ``origin``; refuses an origin the key ID was not made for."""
        verifier = self._verifiers.get(origin)
        if verifier is None:
            ed = Ed25519NoteVerifier(origin, self.public_key)
            if self.key_id is not None and ed.key_id != self.key_id:
                raise VerificationError(
                    f"checkpoint origin {origin!r} does not match the trusted log ID "
                    f"{base64.b64encode(self.key_id).decode()}"
                )
            self._verifiers[origin] = verifier = ed
        return verifier


def parse_signed_checkpoint(note: bytes, key: LogKey | None) -> SignedCheckpoint:
    """Parse a checkpoint note; with ``key``, its signature must verify (else raises)."""
    text, _ = parse_note(note)
    if key is not None:
        text, _ = open_note(note, [key.verifier(text.split("\n", 1)[0])])
    body = parse_checkpoint(text)
    return SignedCheckpoint(body.origin, body.size, body.root_hash, bytes(note))


def check_inclusion_proof(
    entry: bytes, index: int, proof: Sequence[bytes], cp: SignedCheckpoint
) -> None:
    """A proof as a log answered it (leaf ``entry`` at ``index`` under ``cp``) verifies."""
    if not 0 <= index < cp.size:
        raise VerificationError(f"entry {index} is not in the answered tree of size {cp.size}")
    root = root_from_inclusion(leaf_hash(entry), index, cp.size, list(proof))
    if root != cp.root:
        raise VerificationError(
            f"the inclusion proof answered for entry {index} does not lead to the root of "
            f"the checkpoint answered with it (tree size {cp.size})"
        )


# --- the client ------------------------------------------------------------------------


def expand_tile(data: bytes) -> list[list[bytes]]:
    """Every complete node a hash tile determines: ``[s][i]`` is the ``i``-th node at
    sublevel ``s`` (0: the tile's own hashes; up to 8: the tile's root)."""
    level = [data[i : i + HASH] for i in range(0, len(data), HASH)]
    levels = [level]
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        levels.append(level)
    return levels


class _Tiles:
    """Tile bytes for one computation: the shared caches plus what this one fetched."""

    def __init__(self, client: LogClient, size: int) -> None:
        self.client = client
        self.local: dict[str, bytes] = {}
        self.size = size
        self.missing: set[str] = set()
        self.strict = False

    def node(self, level: int, index: int) -> bytes:
        tile_level, sub = divmod(level, HEIGHT)
        first = index << sub
        tile_index, start = divmod(first, WIDTH)
        width = _width(self.size >> (HEIGHT * tile_level), tile_index)
        if start + (1 << sub) > width:
            raise VerificationError(
                f"node ({level}, {index}) is not complete in a tree of size {self.size}"
            )
        name = tile_name(tile_level, tile_index, width)
        levels = self.client._expanded(name, self.local.get(name))
        if levels is None:
            if self.strict:
                raise NotFound(f"{name} was not served")
            self.missing.add(name)
            return _ZERO
        return levels[sub][start >> sub]


class LogClient:
    """Read and verify a tiled log through ``fetch`` (see the module docstring)."""

    def __init__(self, fetch: Fetch, *, key: LogKey | None = None, cache_tiles: int = 4096) -> None:
        self._fetch = fetch
        self.key = key
        self._cache: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._levels: collections.OrderedDict[str, list[list[bytes]]] = collections.OrderedDict()
        self._capacity = cache_tiles
        self.fetches = 0
        """Resources fetched (cache misses)."""

    async def checkpoint(self) -> SignedCheckpoint:
        """The log's current checkpoint, parsed and (with a key) verified."""
        note = await self._fetch("checkpoint")
        if note is None:
            raise NotFound("the log serves no checkpoint")
        self.fetches += 1
        return parse_signed_checkpoint(note, self.key)

    # -- resources ----------------------------------------------------------------------

    async def _resource(self, name: str, full: str, expected: int) -> bytes:
        """``name`` (a tile or bundle), or the prefix of ``full`` if ``name`` is gone."""
        data = self._cache.get(name)
        if data is not None:
            self._cache.move_to_end(name)
            return data
        self.fetches += 1
        data = await self._fetch(name)
        if data is None and full != name:
            self.fetches += 1
            data = await self._fetch(full)
        if data is None:
            raise NotFound(f"{name} is covered by the checkpoint but is not served")
        if expected >= 0:
            if len(data) < expected:
                raise VerificationError(
                    f"{name} is {len(data)} bytes, a tile of that width is {expected}"
                )
            data = data[:expected]
        self._cache[name] = data
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return data

    def _expanded(self, name: str, fetched: bytes | None) -> list[list[bytes]] | None:
        """The expanded tile ``name`` (LRU-cached), or None if it was never fetched."""
        levels = self._levels.get(name)
        if levels is not None:
            self._levels.move_to_end(name)
            return levels
        data = fetched if fetched is not None else self._cache.get(name)
        if data is None:
            return None
        levels = self._levels[name] = expand_tile(data)
        if len(self._levels) > self._capacity // 8:  # ~45 KiB each, against 8 KiB raw
            self._levels.popitem(last=False)
        return levels

    async def _tile(self, name: str) -> bytes:
        level_str, _, rest = name[len("tile/") :].partition("/")
        index_part, _, width_str = rest.partition(".p/")
        width = int(width_str) if width_str else WIDTH
        full = f"tile/{level_str}/{index_part}"
        return await self._resource(name, full, width * HASH)

    async def _compute(self, size: int, fn: Callable[[NodeFunc], T]) -> T:
        """Run ``fn(node)`` over the tiles of ``size``: a dry run finds the tiles it
        needs, they are fetched, then it runs for real."""
        tiles = _Tiles(self, size)
        fn(tiles.node)
        for name in sorted(tiles.missing):
            tiles.local[name] = await self._tile(name)
        tiles.strict = True
        return fn(tiles.node)

    async def entry(self, index: int, size: int) -> bytes:
        """The bytes logged at ``index`` (from the entry bundle of tree ``size``)."""
        if not 0 <= index < size:
            raise VerificationError(f"entry {index} is not in a tree of size {size}")
        bundle, pos = divmod(index, WIDTH)
        width = _width(size, bundle)
        name = bundle_name(bundle, width)
        data = await self._resource(name, bundle_name(bundle, WIDTH), -1)
        return split_bundle(data, width, name)[pos]

    # -- verification -------------------------------------------------------------------

    async def root(self, size: int, tree_size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves, from the tiles of ``tree_size`` (>= size)."""
        if size == 0:
            return hashlib.sha256(b"").digest()
        return await self._compute(tree_size or size, lambda node: subtree_hash(0, size, node))

    async def verify_inclusion(self, index: int, expected: bytes, cp: SignedCheckpoint) -> None:
        """The log holds ``expected`` at ``index`` under ``cp`` (see the module docstring)."""
        stored = await self.entry(index, cp.size)
        if stored != expected:
            raise VerificationError(
                f"entry {index} of tree size {cp.size} is not the acknowledged entry "
                f"({len(stored)} bytes served, {len(expected)} acknowledged, "
                f"sha256 {hashlib.sha256(stored).hexdigest()[:16]} != "
                f"{hashlib.sha256(expected).hexdigest()[:16]})"
            )
        path = await self._compute(cp.size, lambda node: inclusion_path(index, 0, cp.size, node))
        leaf = leaf_hash(stored)
        mine = root_from_inclusion(leaf, index, cp.size, path)
        try:
            core_merkle.verify_inclusion(leaf, index, cp.size, path, cp.root)
            core_ok = True
        except VerificationError:
            core_ok = False
        if mine != cp.root or not core_ok:
            raise VerificationError(
                f"inclusion of entry {index} in tree size {cp.size} does not verify against "
                f"the checkpoint root {cp.root.hex()} (recomputed {mine.hex()}; "
                f"RFC 9162 verifier {'agrees' if core_ok else 'also fails'})"
            )

    async def verify_consistency(self, old: SignedCheckpoint, new: SignedCheckpoint) -> None:
        """``new``'s tree extends ``old``'s (from ``new``'s tiles): no fork."""
        if old.origin != new.origin:
            raise VerificationError(f"checkpoints of two logs: {old.origin!r}, {new.origin!r}")
        if old.size > new.size:
            raise VerificationError(
                f"the log shrank: a checkpoint of size {old.size} was followed by {new.size}"
            )
        if old.size == new.size:
            if old.root != new.root:
                raise VerificationError(
                    f"fork: two checkpoints of size {old.size} with different roots "
                    f"{old.root.hex()} and {new.root.hex()}"
                )
            return
        if old.size == 0:
            if old.root != hashlib.sha256(b"").digest():
                raise VerificationError("the empty tree's checkpoint has a non-empty root")
            return
        path = await self._compute(
            new.size, lambda node: consistency_path(old.size, 0, new.size, node)
        )
        mine_old, mine_new = roots_from_consistency(old.size, new.size, path, old.root)
        try:
            core_merkle.verify_consistency(old.size, new.size, old.root, new.root, path)
            core_ok = True
        except VerificationError:
            core_ok = False
        if mine_old != old.root or mine_new != new.root or not core_ok:
            raise VerificationError(
                f"fork: the tree of size {new.size} (root {new.root.hex()}) is not an "
                f"extension of the tree of size {old.size} (root {old.root.hex()}); from the "
                f"served tiles the old root is {mine_old.hex()} and the new {mine_new.hex()} "
                f"(RFC 9162 verifier {'agrees' if core_ok else 'also fails'})"
            )

    async def audit(self, cp: SignedCheckpoint) -> list[bytes]:
        """Re-derive the whole tree of ``cp`` from its entries; return the entries.

        Checks every entry bundle, every hash tile (full and right-edge partial)
        and the root against the checkpoint.
        """
        entries: list[bytes] = []
        for bundle in range((cp.size + WIDTH - 1) // WIDTH):
            width = _width(cp.size, bundle)
            name = bundle_name(bundle, width)
            data = await self._resource(name, bundle_name(bundle, WIDTH), -1)
            entries.extend(split_bundle(data, width, name))
        levels = [[leaf_hash(e) for e in entries]]
        while len(levels[-1]) > 1:
            below = levels[-1]
            levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
        for tile_level in range(0, len(levels), HEIGHT):
            hashes = levels[tile_level]
            for index in range((len(hashes) + WIDTH - 1) // WIDTH):
                width = _width(len(hashes), index)
                name = tile_name(tile_level // HEIGHT, index, width)
                expected = b"".join(hashes[index * WIDTH : index * WIDTH + width])
                served = await self._tile(name)
                if served != expected:
                    raise VerificationError(
                        f"{name} does not match the entries it covers (tree size {cp.size})"
                    )
        root = (
            subtree_hash(0, cp.size, lambda level, index: levels[level][index])
            if cp.size
            else hashlib.sha256(b"").digest()
        )
        if root != cp.root:
            raise VerificationError(
                f"the entries of tree size {cp.size} hash to {root.hex()}, "
                f"the checkpoint says {cp.root.hex()}"
            )
        return entries
