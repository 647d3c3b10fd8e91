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

Single writer
    ``acquire_writer`` takes an exclusive lease on the log for one engine (across
    processes where the backend can), raising ``Conflict`` if another holder has
    it; ``release_writer`` gives it back. Reads need no lease.

Entry index
    A multimap ``(namespace, key) -> log positions``: every entry's leaf hash
    (namespace ``leaf``), and whatever search keys a log adds (an artifact
    digest, a public key...). It is derived data, written with a batch's objects
    BEFORE its checkpoint, so after a crash it may hold rows for positions no
    checkpoint covers: ``index_lookup`` therefore takes ``below`` (the committed
    size) and ignores rows at or past it, and the engine calls
    ``index_truncate(size)`` whenever it (re)loads a checkpoint, before it
    sequences anything, so the next batch never finds rows of a batch that was
    lost. ``index_add`` is durable on return and idempotent (adding a row that
    exists is a no-op). Namespaces are ``[a-z0-9_-]{1,32}``; keys are at most
    ``MAX_INDEX_KEY`` bytes.

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

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

from sigstack.core.errors import InvalidRequest

CHECKPOINT_KEY = "checkpoint"
"""Name of the checkpoint object (read and written only through the checkpoint calls)."""

MAX_KEY_LENGTH = 255
MAX_INDEX_KEY = 256

IndexRow = tuple[str, bytes, int]
"""``(namespace, key, log position)``."""

_SEGMENT = re.compile(r"[a-z0-9_-][a-z0-9._-]*")
_NAMESPACE = re.compile(r"[a-z0-9_-]{1,32}")


def validate_index_row(namespace: str, key: bytes) -> None:
    """Raise :class:`InvalidRequest` unless ``(namespace, key)`` may be indexed."""
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise InvalidRequest(f"index namespace {namespace!r} must match [a-z0-9_-]{{1,32}}")
    if not isinstance(key, bytes) or not 0 < len(key) <= MAX_INDEX_KEY:
        raise InvalidRequest(f"index keys are 1 to {MAX_INDEX_KEY} bytes")


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise :class:`InvalidRequest`."""
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


class LogStorage(ABC):
    """Where a transparency log keeps its tiles, bundles and checkpoint.

    See the module docstring for the durability, atomicity and compare-and-swap
    contract every implementation must honour. Implementations are thread-safe.
    """

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The object stored under ``key``, or ``None`` if there is none."""

    @abstractmethod
    def put_many(self, items: Mapping[str, bytes]) -> None:
        """Store every object durably; each one replaced atomically (see contract)."""

    @abstractmethod
    def read_checkpoint(self) -> bytes | None:
        """The current checkpoint, or ``None`` if no log was ever created here."""

    @abstractmethod
    def swap_checkpoint(self, old: bytes | None, new: bytes) -> None:
        """Durably replace the checkpoint if it is ``old``; raise ``Conflict`` otherwise."""

    @abstractmethod
    def acquire_writer(self) -> None:
        """Take the exclusive writer lease, or raise ``Conflict`` if someone holds it."""

    @abstractmethod
    def release_writer(self) -> None:
        """Give the writer lease back (idempotent)."""

    @abstractmethod
    def index_add(self, rows: Sequence[IndexRow]) -> None:
        """Durably add index rows (existing rows are left as they are)."""

    @abstractmethod
    def index_lookup(
        self, namespace: str, keys: Sequence[bytes], below: int
    ) -> dict[bytes, list[int]]:
        """Positions ``< below`` indexed under each key, ascending; keys without any omitted."""

    @abstractmethod
    def index_truncate(self, size: int) -> None:
        """Durably remove every index row whose position is ``>= size``."""

    def describe(self, key: str) -> str:
        """Where ``key`` lives, for error messages (a file path, a URL...)."""
        return key
