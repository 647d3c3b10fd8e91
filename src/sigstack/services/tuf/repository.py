"""The TUF repository that distributes sigstack's root of trust.

A directory laid out for TUF clients with consistent snapshots (what sigstore-python,
sigstore-js and cosign fetch)::

    1.root.json 2.root.json ...   every root version ever published, never modified
    root.json                     copy of the latest root (for ``--root URL/root.json``)
    timestamp.json                the only other mutable file; written LAST (commit point)
    {N}.snapshot.json             snapshot versions, never modified
    {N}.targets.json              targets versions, never modified
    targets/{sha256}.{name}       target files, content-addressed, never modified
    .lock                         flock(2) serialising writers (not served)
    .timestamp-high-water.json    highest timestamp version ever written (not served)

Metadata is built and signed with python-tuf's Metadata API and securesystemslib's
``CryptoSigner``; this module adds the lifecycle around it. Guarantees:

* **Verified on open, fail closed.** ``open`` checks the whole root chain (each
  version signed by its predecessor's root keys and by its own, versions contiguous,
  no stray higher version), that the keys handed in are exactly the ones the latest
  root names for each role, then timestamp -> snapshot -> targets (signatures by the
  keys root names, versions, lengths and hashes) and every target file. Anything
  wrong raises ``StateError`` naming the file. Nothing is regenerated to paper over
  damage; expiry is NOT an open error (``refresh`` exists to fix it).
* **Crash-safe writes.** Every file is written to a temp file, fsynced, moved into
  place and its directory fsynced. Immutable files are linked into place so an
  existing one is never replaced (refused with ``StateError``). A change is written
  bottom-up (target files, targets, snapshot, then timestamp.json), so a client (or
  ``open``) at any instant sees the old consistent state or the new one. Versions of
  targets and snapshot skip past any orphan left by a crash.
* **No needless churn.** ``publish`` with unchanged content and ``refresh`` with
  nothing near expiry write nothing: every file stays byte-identical.
* **Roots never lapse.** ``refresh`` renews root as version N+1 with the same keys
  when it nears expiry (see ``ExpiryPolicy``); clients chain-update N -> N+1, even
  from an expired N. ``N.root.json`` is never rewritten.
* **Single writer at a time.** Writers take an exclusive ``flock`` on ``.lock``; a
  writer that finds the repository changed by another process since it last looked
  re-verifies it from disk before writing.
* **Versions never go backwards.** A new root, targets or snapshot version is always
  above every version of that role on disk (a lower or equal one is refused with
  ``StateError``, whatever the loaded state says). ``timestamp.json`` has no versioned
  files, so its high-water mark is kept durably in ``.timestamp-high-water.json``
  (``MARK_FILE``; not served: ``check_public_path`` only admits TUF file names). It
  records the highest timestamp version ever signed for writing and the SHA-256 of
  the ``timestamp.json`` bytes ``open`` may find. Write order: the mark (naming both
  the current and the new ``timestamp.json``), then ``timestamp.json`` (the commit
  point), then the mark again naming only the new one; each write crash-safe. So a
  crash anywhere leaves the mark at or above the file and naming its bytes: ``open``
  accepts the old file after a crash before the commit (that version was never
  served) and the next timestamp goes above the mark, never re-using a number.
  ``open`` (and a writer re-verifying) refuses with ``StateError`` a ``timestamp.json``
  below the mark, or at a recorded version with other bytes (rolled back or replaced),
  and never re-signs from it; each object also remembers the highest timestamp it
  loaded or wrote, in case the mark itself is removed while it runs. A
  ``timestamp.json`` above the mark (written by a sigstack predating it) is accepted,
  its signature verified, and the mark raised. A repository without the mark (created
  before it existed) is opened as it is and the mark created from its
  ``timestamp.json``; that migration cannot know versions served earlier. Limits: the
  mark lives in the repository directory, so a rollback of the whole directory,
  mark included (e.g. a file-system snapshot), is not detected; and a mark that is
  deleted is re-created as for a repository predating it (do not delete it to get
  past a refusal). A deliberate restore of an older ``timestamp.json`` is accepted
  only with ``open(..., accept_restored_timestamp=True)``, which keeps the mark and at
  once signs a timestamp above it, so clients that saw the higher version move on.

Not handled here (see the ops commands as they come): rotating a role's key,
deleting old versions.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

# Both libraries re-export these names without marking them explicit for mypy.
from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]
from tuf.api.exceptions import LengthOrHashMismatchError, UnsignedMetadataError
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Metadata,
    MetaFile,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError, SerializationError
from tuf.api.serialization.json import JSONSerializer

from sigstack.core.clock import Clock, utcnow, whole_seconds
from sigstack.core.errors import (
    ConfigError,
    Conflict,
    InvalidRequest,
    NotFound,
    StateError,
    StorageError,
    Unavailable,
)
from sigstack.fsutil import atomic_write, locked, read_file
from sigstack.services.tuf.config import (
    ROLES,
    ROOT,
    SNAPSHOT,
    TARGETS,
    TIMESTAMP,
    ExpiryPolicy,
    TufKeys,
)

S = TypeVar("S", Root, Targets, Snapshot, Timestamp)

ROOT_FILE = "root.json"
TIMESTAMP_FILE = "timestamp.json"
TARGETS_DIR = "targets"
LOCK_FILE = ".lock"
# The durable timestamp high-water mark (see the module docstring). A dotfile: never
# served (check_public_path admits only TUF file names), never a temp file's name.
MARK_FILE = ".timestamp-high-water.json"
MARK_FORMAT = 1

HASH_ALGORITHM = "sha256"
MAX_TARGET_BYTES = 16 << 20
MAX_TARGETS = 1000

_TARGET_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}"
_TARGET_NAME_RE = re.compile(_TARGET_NAME)
_VERSIONED_RE = re.compile(r"(?P<version>[1-9][0-9]{0,17})\.(?P<role>root|snapshot|targets)\.json")
_TARGET_FILE_RE = re.compile(r"(?P<digest>[0-9a-f]{64})\.(?P<name>" + _TARGET_NAME + ")")
_TEMP_RE = re.compile(r"\..+\.tmp")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")

_SERIALIZER = JSONSerializer(compact=False)


def _utc(when: datetime) -> datetime:
    """``when`` in UTC to the second; naive datetimes are refused (no guessing zones)."""
    if not isinstance(when, datetime):
        raise ConfigError(f"TUF times must be timezone-aware datetimes, not {when!r}")
    try:
        return whole_seconds(when)
    except TypeError:
        raise ConfigError(
            "TUF times must be timezone-aware datetimes (use sigstack.core.clock.utcnow())"
        ) from None


def check_target_name(name: str) -> None:
    """Raise ``InvalidRequest`` unless ``name`` is a plain file name a client can fetch.

    Letters, digits, ``.``, ``_`` and ``-``; starting with a letter or digit; at most
    200 characters. No directories: ``trusted_root.json`` and
    ``signing_config.v0.2.json`` are what Sigstore clients need.
    """
    if not isinstance(name, str) or _TARGET_NAME_RE.fullmatch(name) is None:
        raise InvalidRequest(
            f"TUF target name {name!r} is not allowed: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit (at most 200 characters, no directories)"
        )


def _check_targets(targets: Mapping[str, bytes]) -> dict[str, bytes]:
    if not isinstance(targets, Mapping) or not targets:
        raise InvalidRequest("a TUF repository needs at least one target")
    if len(targets) > MAX_TARGETS:
        raise InvalidRequest(f"at most {MAX_TARGETS} TUF targets are supported")
    checked: dict[str, bytes] = {}
    for name, data in targets.items():
        check_target_name(name)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidRequest(f"TUF target {name!r} content must be bytes")
        content = bytes(data)
        if len(content) > MAX_TARGET_BYTES:
            raise InvalidRequest(f"TUF target {name!r} exceeds {MAX_TARGET_BYTES} bytes")
        checked[name] = content
    return checked


def target_file_name(target: TargetFile) -> str:
    """Where a consistent-snapshot client fetches ``target``: ``targets/{sha256}.{name}``."""
    return f"{TARGETS_DIR}/{target.hashes[HASH_ALGORITHM]}.{target.path}"


def check_public_path(relative: str) -> None:
    """Raise ``NotFound`` unless ``relative`` names a file a TUF client may fetch.

    Accepted: ``root.json``, ``timestamp.json``, ``{N}.root.json``,
    ``{N}.snapshot.json``, ``{N}.targets.json`` and ``targets/{sha256}.{name}``.
    Everything else (traversal, directories, dotfiles, the lock) is "not found".
    """
    if relative in (ROOT_FILE, TIMESTAMP_FILE) or _VERSIONED_RE.fullmatch(relative):
        return
    head, sep, tail = relative.partition("/")
    if sep and head == TARGETS_DIR and _TARGET_FILE_RE.fullmatch(tail):
        return
    raise NotFound(f"{relative!r} is not a file of this TUF repository")


# --- file system helpers --------------------------------------------------------------------


def _writer_lock(directory: Path) -> contextlib.AbstractContextManager[int]:
    """The writers' exclusive lock on ``directory/.lock`` (blocking)."""
    return locked(directory / LOCK_FILE, holder="another TUF repository writer")


def _versions_on_disk(directory: Path, role: str) -> list[int]:
    found = []
    try:
        for entry in directory.iterdir():
            match = _VERSIONED_RE.fullmatch(entry.name)
            if match and match["role"] == role:
                found.append(int(match["version"]))
    except OSError as exc:
        raise StateError(directory, f"cannot be listed: {exc}") from exc
    return sorted(found)


# --- metadata helpers -----------------------------------------------------------------------


def _parse(path: Path, data: bytes, kind: type[S]) -> Metadata[S]:
    try:
        md: Metadata[Any] = Metadata.from_bytes(data)
    except DeserializationError as exc:
        raise StateError(path, f"is not valid TUF metadata: {exc}") from exc
    if not isinstance(md.signed, kind):
        raise StateError(path, f"holds {md.signed.type} metadata, expected {kind.type}")
    return md


def _check_signed(root: Root, role: str, md: Metadata[Any], path: Path) -> None:
    try:
        root.verify_delegate(role, md.signed_bytes, md.signatures)
    except (UnsignedMetadataError, ValueError) as exc:
        raise StateError(
            path, f"{role} signatures do not verify with the keys the root names: {exc}"
        ) from exc


def _check_meta(meta: MetaFile | TargetFile, data: bytes, path: Path, referrer: str) -> None:
    try:
        meta.verify_length_and_hashes(data)
    except LengthOrHashMismatchError as exc:
        raise StateError(path, f"does not match its length or hash in {referrer}: {exc}") from exc


# --- the timestamp high-water mark ----------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class _Mark:
    """The content of ``MARK_FILE``: ``timestamp.json``'s durable high-water mark.

    ``highest`` is the highest timestamp version ever signed to be written (the next
    one must be above it); ``accepted`` the (version, sha256) of each ``timestamp.json``
    that ``open`` may find: one when settled, two (current and new) while a write is
    in flight. Every accepted version is at most ``highest``.
    """

    highest: int
    accepted: tuple[tuple[int, str], ...]

    def accepts(self, version: int, digest: str) -> bool:
        return (version, digest) in self.accepted

    def to_bytes(self) -> bytes:
        document = {
            "format": MARK_FORMAT,
            "highest_version": self.highest,
            "accepted": [{"version": v, "sha256": d} for v, d in sorted(self.accepted)],
        }
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def parse(cls, path: Path, data: bytes) -> _Mark:
        """Parse and check a mark; anything unexpected is a ``StateError`` naming it."""

        def version(value: object) -> int:
            if type(value) is not int or value < 1:
                raise ValueError(f"{value!r} is not a version")
            return value

        try:
            document = json.loads(data)
            if not isinstance(document, dict) or set(document) != {
                "format",
                "highest_version",
                "accepted",
            }:
                raise ValueError("expected exactly format, highest_version and accepted")
            if document["format"] != MARK_FORMAT:
                raise ValueError(f"unknown format {document['format']!r}")
            highest = version(document["highest_version"])
            entries = document["accepted"]
            if not isinstance(entries, list) or not 1 <= len(entries) <= 2:
                raise ValueError("accepted must list one or two timestamp files")
            accepted = []
            for entry in entries:
                if not isinstance(entry, dict) or set(entry) != {"version", "sha256"}:
                    raise ValueError("each accepted entry needs exactly version and sha256")
                accepted_version = version(entry["version"])
                digest = entry["sha256"]
                if not isinstance(digest, str) or _SHA256_RE.fullmatch(digest) is None:
                    raise ValueError(f"{digest!r} is not a lowercase hex SHA-256")
                if accepted_version > highest:
                    raise ValueError(f"accepted version {accepted_version} is above highest")
                accepted.append((accepted_version, digest))
            if len({v for v, _ in accepted}) != len(accepted):
                raise ValueError("accepted versions must differ")
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise StateError(
                path,
                f"is not a valid timestamp high-water mark ({exc}); sigstack writes it "
                "atomically, so it was edited or damaged: restore it from a backup taken "
                f"with this repository. Only if none exists, remove it: the next open "
                f"re-creates it from {TIMESTAMP_FILE}, forgetting any higher version served",
            ) from None
        return cls(highest, tuple(sorted(accepted)))


@dataclass(frozen=True)
class _State:
    """The verified current metadata, with the exact bytes served for each."""

    root: Metadata[Root]
    root_bytes: bytes
    targets: Metadata[Targets]
    targets_bytes: bytes
    snapshot: Metadata[Snapshot]
    snapshot_bytes: bytes
    timestamp: Metadata[Timestamp]
    timestamp_bytes: bytes

    def signed(self, role: str) -> Signed:
        md: Metadata[Any] = getattr(self, role)
        signed: Signed = md.signed
        return signed


def _role_file(role: str, version: int) -> str:
    return TIMESTAMP_FILE if role == TIMESTAMP else f"{version}.{role}.json"


@dataclass(frozen=True)
class RoleStatus:
    """One role's current metadata: version, file, expiry and when it will be re-signed."""

    version: int
    filename: str
    expires: datetime
    renew_after: datetime
    expired: bool


@dataclass(frozen=True)
class RepositoryStatus:
    """What ``sigstack doctor`` and the health check show about the repository."""

    directory: Path
    roles: dict[str, RoleStatus]
    targets: dict[str, str]  # name -> sha256


class TufRepository:
    """A TUF repository on disk with its four online role keys.

    Build one with ``create`` (new repository) or ``open`` (existing one); see the
    module docstring for what each operation guarantees.
    """

    def __init__(
        self,
        directory: Path,
        keys: TufKeys,
        *,
        policy: ExpiryPolicy,
        clock: Clock,
    ) -> None:
        if not isinstance(keys, TufKeys):
            raise ConfigError("TUF keys must be a TufKeys")
        if not isinstance(policy, ExpiryPolicy):
            raise ConfigError("TUF policy must be an ExpiryPolicy")
        self._dir = Path(directory)
        self._policy = policy
        self._clock = clock
        self._signers = {role: CryptoSigner(keys.for_role(role)) for role in ROLES}
        self._public = {role: self._signers[role].public_key for role in ROLES}
        self._state: _State | None = None
        self._stale = False
        # The highest timestamp version this object has loaded or written, with its
        # bytes: timestamp.json is never accepted below it (see the module docstring).
        self._timestamp_seen: tuple[int, bytes] | None = None
        # The high-water mark as last read from or written to MARK_FILE, and its bytes
        # (None: no mark file); a change on disk makes the next writer re-verify.
        self._mark: _Mark | None = None
        self._mark_bytes: bytes | None = None

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        directory: Path | str,
        keys: TufKeys,
        targets: Mapping[str, bytes],
        now: datetime | None = None,
        *,
        policy: ExpiryPolicy | None = None,
        clock: Clock = utcnow,
    ) -> TufRepository:
        """Create version 1 of every role in ``directory`` (absent or empty).

        Raises ``Conflict`` if the directory holds anything (a repository is never
        created over existing files), ``InvalidRequest`` for bad targets.
        """
        files = _check_targets(targets)
        repo = cls(Path(directory), keys, policy=policy or ExpiryPolicy(), clock=clock)
        when = _utc(now if now is not None else clock())
        try:
            repo._dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        except FileExistsError:
            raise Conflict(f"{repo._dir} exists and is not a directory") from None
        except OSError as exc:
            raise StorageError(f"could not create {repo._dir}: {exc}") from exc
        with _writer_lock(repo._dir):
            existing = sorted(p.name for p in repo._dir.iterdir() if p.name != LOCK_FILE)
            if existing:
                shown = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
                raise Conflict(
                    f"{repo._dir} is not empty ({shown}): a TUF repository is never created "
                    "over existing files; open the existing one or choose an empty directory"
                )
            repo._state = repo._write_initial(files, when)
        return repo

    @classmethod
    def open(
        cls,
        directory: Path | str,
        keys: TufKeys,
        *,
        policy: ExpiryPolicy | None = None,
        clock: Clock = utcnow,
        accept_restored_timestamp: bool = False,
    ) -> TufRepository:
        """Load and verify the repository in ``directory`` (``StateError`` naming the file).

        Rollback: ``timestamp.json`` is checked against the high-water mark
        (``MARK_FILE``, see the module docstring). One below the mark, or at a recorded
        version with other bytes, is refused with a ``StateError`` naming it and saying
        how to recover. A mark left by a crash in the middle of a timestamp write is
        completed, and a repository without a mark gets one from its current
        ``timestamp.json``.

        ``accept_restored_timestamp=True`` is the recovery after an older
        ``timestamp.json`` was restored on purpose (e.g. from a backup): everything is
        verified as usual, but a ``timestamp.json`` below the mark (or replaced at its
        version) is accepted, the mark's highest version is kept, and a new timestamp
        is signed at once above it, so clients that saw the higher version accept the
        restored state without waiting and no version number is ever re-used. Without
        a rollback it changes nothing.
        """
        repo = cls(Path(directory), keys, policy=policy or ExpiryPolicy(), clock=clock)
        if not repo._dir.is_dir():
            raise StateError(repo._dir, "is not a TUF repository directory (missing)")
        with _writer_lock(repo._dir):
            repo._remove_temp_files()
            state, restored = repo._load_checked(accept_restored=accept_restored_timestamp)
            if restored:
                # Move clients past the version they saw now (never re-using it).
                state = repo._sign_timestamp(state, repo._now(None))
            repo._state = state
        return repo

    # --- public API -----------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def policy(self) -> ExpiryPolicy:
        return self._policy

    def publish(self, targets: Mapping[str, bytes], now: datetime | None = None) -> bool:
        """Make ``targets`` the complete set of targets; return whether anything changed.

        Unchanged content (same names, same bytes) writes nothing. Otherwise writes the
        new target files, then targets N+1, snapshot N+1 and timestamp N+1.
        """
        files = _check_targets(targets)
        with self._locked() as state:
            wanted = {
                name: TargetFile.from_data(name, data, [HASH_ALGORITHM])
                for name, data in files.items()
            }
            if wanted == state.targets.signed.targets:
                return False
            when = self._now(now)
            for name, data in files.items():
                self._store_target(wanted[name], data)
            state = self._sign_targets(state, wanted, when)
            state = self._sign_snapshot(state, when)
            self._state = self._sign_timestamp(state, when)
            return True

    def refresh(self, now: datetime | None = None) -> list[str]:
        """Re-sign every role near expiry (see ``ExpiryPolicy``); return the roles re-signed.

        Root is renewed as version N+1 with the same keys. Re-signing targets implies
        a new snapshot and timestamp; re-signing snapshot implies a new timestamp.
        Nothing near expiry: nothing is written, and ``[]`` is returned.
        """
        with self._locked() as state:
            when = self._now(now)
            due = {role: self._due(state.signed(role), role, when) for role in ROLES}
            renewed: list[str] = []
            if due[ROOT]:
                state = self._renew_root(state, when)
                renewed.append(ROOT)
            redo_targets = due[TARGETS]
            redo_snapshot = redo_targets or due[SNAPSHOT]
            if redo_targets:
                state = self._sign_targets(state, dict(state.targets.signed.targets), when)
                renewed.append(TARGETS)
            if redo_snapshot:
                state = self._sign_snapshot(state, when)
                renewed.append(SNAPSHOT)
            if redo_snapshot or due[TIMESTAMP]:
                state = self._sign_timestamp(state, when)
                renewed.append(TIMESTAMP)
            self._state = state
            return renewed

    def latest_root_bytes(self) -> bytes:
        """The latest ``{N}.root.json`` exactly as served: a client's trust bootstrap file."""
        with self._locked() as state:
            return state.root_bytes

    def status(self, now: datetime | None = None) -> RepositoryStatus:
        """Versions, files and expiries of every role, and the current targets."""
        with self._locked() as state:
            when = self._now(now)
            roles = {}
            for role in ROLES:
                signed = state.signed(role)
                roles[role] = RoleStatus(
                    version=signed.version,
                    filename=_role_file(role, signed.version),
                    expires=signed.expires,
                    renew_after=signed.expires - self._policy.renew_margin(role),
                    expired=signed.is_expired(when),
                )
            targets = {
                name: target.hashes[HASH_ALGORITHM]
                for name, target in state.targets.signed.targets.items()
            }
            return RepositoryStatus(self._dir, roles, targets)

    def check_health(self, now: datetime | None = None) -> None:
        """Raise ``Unavailable`` if a client refreshing now would find expired metadata."""
        status = self.status(now)
        expired = [
            f"{s.filename} expired at {s.expires.isoformat()}"
            for s in status.roles.values()
            if s.expired
        ]
        if expired:
            raise Unavailable(
                "TUF metadata expired: " + "; ".join(expired) + " (is refresh() running?)"
            )

    def read_public(self, relative: str) -> bytes:
        """The bytes of a servable file (``check_public_path``), else ``NotFound``.

        Opens without following symlinks, and only regular files: the HTTP layer
        serves exactly what this repository wrote.
        """
        check_public_path(relative)
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
        dir_fd = -1
        fd = -1
        try:
            dir_fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            head, sep, tail = relative.partition("/")
            if sep:
                sub_fd = os.open(head, flags | os.O_DIRECTORY, dir_fd=dir_fd)
                os.close(dir_fd)
                dir_fd = sub_fd
                name = tail
            else:
                name = relative
            fd = os.open(name, flags, dir_fd=dir_fd)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise NotFound(f"{relative!r} is not a file of this TUF repository")
            with os.fdopen(fd, "rb") as handle:
                fd = -1
                return handle.read()
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EISDIR):
                raise NotFound(f"{relative!r} does not exist in this TUF repository") from None
            raise StorageError(f"could not read {relative!r}: {exc.strerror}") from exc
        finally:
            if fd >= 0:
                os.close(fd)
            if dir_fd >= 0:
                os.close(dir_fd)

    # --- internals: time, locking, loading --------------------------------------------------

    def _now(self, now: datetime | None) -> datetime:
        return _utc(now if now is not None else self._clock())

    def _due(self, signed: Signed, role: str, when: datetime) -> bool:
        return signed.expires - when < self._policy.renew_margin(role)

    def _require_state(self) -> _State:
        if self._state is None:
            raise StateError(self._dir, "repository is not loaded; use create() or open()")
        return self._state

    @contextlib.contextmanager
    def _locked(self) -> Iterator[_State]:
        """Hold the writers' lock; re-verify from disk if another writer changed it
        (timestamp.json, the high-water mark, or a new root)."""
        with _writer_lock(self._dir):
            state = self._require_state()
            timestamp_path = self._dir / TIMESTAMP_FILE
            next_root = self._dir / f"{state.root.signed.version + 1}.root.json"
            if (
                self._stale
                or read_file(timestamp_path, what="timestamp metadata") != state.timestamp_bytes
                or self._read_mark_bytes() != self._mark_bytes
                or next_root.exists()
            ):
                self._stale = True
                state = self._state = self._load()
                self._stale = False
            try:
                yield state
            except BaseException:
                # A write may have half-happened: trust only the disk from now on.
                self._stale = True
                raise

    def _remove_temp_files(self) -> None:
        for directory in (self._dir, self._dir / TARGETS_DIR):
            if not directory.is_dir():
                continue
            for entry in directory.iterdir():
                if _TEMP_RE.fullmatch(entry.name) and entry.is_file():
                    with contextlib.suppress(FileNotFoundError):
                        entry.unlink()

    def _load(self) -> _State:
        state, _ = self._load_checked(accept_restored=False)
        return state

    def _load_checked(self, *, accept_restored: bool) -> tuple[_State, bool]:
        """Verify everything on disk; return the state and whether ``timestamp.json`` was
        a restored older one, accepted only because ``accept_restored`` was given."""
        root, root_bytes, root_path = self._load_root_chain()
        self._check_keys(root.signed, root_path)
        self._check_root_copy(root_bytes, root_path, root.signed.version)

        ts_path = self._dir / TIMESTAMP_FILE
        if not ts_path.exists():
            raise StateError(
                ts_path,
                "is missing: the repository is incomplete (interrupted creation?); "
                "it was never served, remove the directory and create it again",
            )
        ts_bytes = read_file(ts_path, what="timestamp metadata")
        timestamp = _parse(ts_path, ts_bytes, Timestamp)
        _check_signed(root.signed, TIMESTAMP, timestamp, ts_path)
        self._check_timestamp_not_rolled_back(timestamp.signed.version, ts_bytes, ts_path)
        mark, restored = self._check_mark(
            timestamp.signed.version, ts_bytes, ts_path, accept_restored=accept_restored
        )

        snap_meta = timestamp.signed.snapshot_meta
        snap_path = self._dir / f"{snap_meta.version}.snapshot.json"
        snap_bytes = read_file(snap_path, what="snapshot metadata")
        _check_meta(snap_meta, snap_bytes, snap_path, TIMESTAMP_FILE)
        snapshot = _parse(snap_path, snap_bytes, Snapshot)
        _check_signed(root.signed, SNAPSHOT, snapshot, snap_path)
        if snapshot.signed.version != snap_meta.version:
            raise StateError(snap_path, f"has version {snapshot.signed.version}")

        targets_meta = snapshot.signed.meta.get("targets.json")
        if targets_meta is None:
            raise StateError(snap_path, "does not list targets.json")
        targets_path = self._dir / f"{targets_meta.version}.targets.json"
        targets_bytes = read_file(targets_path, what="targets metadata")
        _check_meta(targets_meta, targets_bytes, targets_path, snap_path.name)
        targets = _parse(targets_path, targets_bytes, Targets)
        _check_signed(root.signed, TARGETS, targets, targets_path)
        if targets.signed.version != targets_meta.version:
            raise StateError(targets_path, f"has version {targets.signed.version}")
        if targets.signed.delegations is not None:
            raise StateError(targets_path, "has delegations, which sigstack does not use")

        for name, target in targets.signed.targets.items():
            if _TARGET_NAME_RE.fullmatch(name) is None or HASH_ALGORITHM not in target.hashes:
                raise StateError(targets_path, f"lists target {name!r} sigstack cannot serve")
            target_path = self._dir / target_file_name(target)
            _check_meta(
                target, read_file(target_path, what="target file"), target_path, targets_path.name
            )

        self._write_mark(mark)  # only once everything verified; no-op if unchanged
        self._saw_timestamp(timestamp.signed.version, ts_bytes)
        state = _State(
            root, root_bytes, targets, targets_bytes, snapshot, snap_bytes, timestamp, ts_bytes
        )
        return state, restored

    def _load_root_chain(self) -> tuple[Metadata[Root], bytes, Path]:
        """Verify 1.root.json -> N.root.json as a client would; return the latest."""
        path = self._dir / "1.root.json"
        data = read_file(path, what="root metadata")
        root = _parse(path, data, Root)
        if root.signed.version != 1:
            raise StateError(path, f"has version {root.signed.version}, expected 1")
        _check_signed(root.signed, ROOT, root, path)
        while True:
            next_path = self._dir / f"{root.signed.version + 1}.root.json"
            if not next_path.exists():
                break
            next_data = read_file(next_path, what="root metadata")
            new = _parse(next_path, next_data, Root)
            if new.signed.version != root.signed.version + 1:
                raise StateError(next_path, f"has version {new.signed.version}")
            _check_signed(root.signed, ROOT, new, next_path)  # trusted by its predecessor
            _check_signed(new.signed, ROOT, new, next_path)  # and by itself
            root, data, path = new, next_data, next_path
        if not root.signed.consistent_snapshot:
            raise StateError(path, "does not enable consistent_snapshot, which sigstack requires")
        newest = _versions_on_disk(self._dir, ROOT)[-1]
        if newest != root.signed.version:
            raise StateError(
                self._dir / f"{newest}.root.json",
                f"is not reachable from {path.name} (versions must be contiguous)",
            )
        return root, data, path

    def _check_keys(self, root: Root, path: Path) -> None:
        """The configured keys must be exactly the keys ``root`` names (threshold 1)."""
        for role in ROLES:
            expected = self._public[role]
            delegation = root.roles[role]
            if delegation.keyids != [expected.keyid] or delegation.threshold != 1:
                raise StateError(
                    path,
                    f"the {role} role names key(s) {', '.join(delegation.keyids) or 'none'} "
                    f"(threshold {delegation.threshold}), but the configured {role} key is "
                    f"{expected.keyid}: was a key file or the repository replaced?",
                )
            if root.keys.get(expected.keyid) != expected:
                raise StateError(path, f"the {role} key entry differs from the configured key")

    def _check_root_copy(self, root_bytes: bytes, root_path: Path, latest: int) -> None:
        """root.json must equal the latest root; finish an interrupted renewal."""
        copy_path = self._dir / ROOT_FILE
        current = read_file(copy_path, what="root metadata copy")
        if current == root_bytes:
            return
        for version in range(1, latest):
            if current == read_file(self._dir / f"{version}.root.json", what="root metadata"):
                # Crash between writing N+1.root.json and root.json: complete it.
                atomic_write(copy_path, root_bytes)
                return
        raise StateError(copy_path, f"differs from {root_path.name} and from every older root")

    # --- internals: signing and writing -----------------------------------------------------

    def _sign(self, signed: S) -> tuple[Metadata[S], bytes]:
        md = Metadata(signed)
        try:
            md.sign(self._signers[signed.type])
            return md, md.to_bytes(_SERIALIZER)
        except (UnsignedMetadataError, SerializationError) as exc:
            raise StorageError(f"could not sign {signed.type} metadata: {exc}") from exc

    def _next_version(self, role: str, current: int) -> int:
        return max([current, *_versions_on_disk(self._dir, role)]) + 1

    def _check_new_version(self, role: str, version: int) -> None:
        """Refuse to write ``version`` of ``role`` unless it is above every one on disk."""
        newest = max(_versions_on_disk(self._dir, role), default=0)
        if version <= newest:
            raise StateError(
                self._dir / f"{newest}.{role}.json",
                f"exists, so {role} version {version} would reuse or go below a version "
                "already published; refusing to write it",
            )

    def _check_timestamp_not_rolled_back(self, version: int, data: bytes, path: Path) -> None:
        """Refuse a timestamp.json older than (or replacing) one this object has seen."""
        seen = self._timestamp_seen
        if seen is None:
            return
        if version < seen[0]:
            raise StateError(
                path,
                f"has version {version}, but version {seen[0]} was already loaded or "
                "written by this process: timestamp.json was rolled back; refusing to "
                "serve or re-sign an older state",
            )
        if version == seen[0] and data != seen[1]:
            raise StateError(
                path,
                f"was replaced by different metadata with the same version {version}; "
                "refusing to continue from it",
            )

    def _read_mark_bytes(self) -> bytes | None:
        """The bytes of ``MARK_FILE``, None if there is none."""
        path = self._dir / MARK_FILE
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(
                path, f"timestamp high-water mark is unreadable: {exc.strerror or exc}"
            ) from exc

    def _read_mark(self) -> _Mark | None:
        """Read and parse ``MARK_FILE`` from disk (remembering it); None if there is none."""
        data = self._read_mark_bytes()
        mark = None if data is None else _Mark.parse(self._dir / MARK_FILE, data)
        self._mark, self._mark_bytes = mark, data
        return mark

    def _write_mark(self, mark: _Mark) -> None:
        """Durably make ``MARK_FILE`` hold ``mark``; nothing is written if it already does
        (``_mark_bytes`` is always what was last read from or written to disk)."""
        data = mark.to_bytes()
        if data != self._mark_bytes:
            atomic_write(self._dir / MARK_FILE, data)
        self._mark, self._mark_bytes = mark, data

    def _check_mark(
        self, version: int, data: bytes, path: Path, *, accept_restored: bool
    ) -> tuple[_Mark, bool]:
        """Check timestamp.json (``version``, ``data``) against the high-water mark.

        Returns the settled mark to write once everything is verified, and whether the
        file is a rolled-back one accepted only because ``accept_restored`` was given.
        """
        remembered = self._mark
        mark = self._read_mark()
        digest = _sha256(data)
        settled = ((version, digest),)
        if mark is None:
            # A repository from before the mark: start it from timestamp.json (keeping
            # what this object knows, should the mark have been removed while it ran).
            known = remembered.highest if remembered is not None else 0
            return _Mark(max(version, known), settled), False
        if mark.accepts(version, digest):
            # The normal case, or a crash during a timestamp write (before or after its
            # commit): keep the highest version, forget the file not found.
            return _Mark(mark.highest, settled), False
        if version > mark.highest:
            # Newer than the mark (written by a sigstack predating it), signature
            # verified: raise the mark.
            return _Mark(version, settled), False
        if accept_restored:
            return _Mark(mark.highest, settled), True
        recorded_version, recorded_digest = mark.accepted[-1]
        if version == mark.highest or any(v == version for v, _ in mark.accepted):
            problem = (
                f"has version {version} but not the content {MARK_FILE} records for "
                "that version: timestamp.json was replaced"
            )
        else:
            problem = (
                f"has version {version}, but {MARK_FILE} records that version "
                f"{mark.highest} was already written: timestamp.json was rolled back"
            )
        raise StateError(
            path,
            f"{problem}; refusing to serve or re-sign it. The recorded timestamp.json is "
            f"version {recorded_version} with sha256 {recorded_digest}: put that file "
            "back if you have it. If the older state was restored on purpose (e.g. from a "
            "backup), open with TufRepository.open(..., accept_restored_timestamp=True): "
            f"it keeps the mark and signs a new timestamp above version {mark.highest}, "
            f"so clients that saw it move on. Do not delete {MARK_FILE} to get past this: "
            "the next timestamps would re-use versions clients already saw, and they "
            "would refuse them as a rollback",
        )

    def _saw_timestamp(self, version: int, data: bytes) -> None:
        if self._timestamp_seen is None or version >= self._timestamp_seen[0]:
            self._timestamp_seen = (version, data)

    def _next_timestamp_version(self, current: int) -> int:
        seen = self._timestamp_seen[0] if self._timestamp_seen is not None else 0
        marked = self._mark.highest if self._mark is not None else 0
        return max(current, seen, marked) + 1

    def _store_target(self, target: TargetFile, data: bytes) -> None:
        path = self._dir / target_file_name(target)
        if path.exists():
            _check_meta(
                target, read_file(path, what="target file"), path, "the content being published"
            )
            return
        atomic_write(path, data, exclusive=True)

    def _write_initial(self, files: dict[str, bytes], when: datetime) -> _State:
        try:
            (self._dir / TARGETS_DIR).mkdir(mode=0o755)
        except OSError as exc:
            raise StorageError(f"could not create {self._dir / TARGETS_DIR}: {exc}") from exc
        wanted = {}
        for name, data in files.items():
            wanted[name] = TargetFile.from_data(name, data, [HASH_ALGORITHM])
            self._store_target(wanted[name], data)
        root = Root(version=1, expires=when + self._policy.root, consistent_snapshot=True)
        for role in ROLES:
            root.add_key(self._public[role], role)
        root_md, root_bytes = self._write_root(root)
        targets_md, targets_bytes = self._write_targets(1, wanted, when)
        snapshot_md, snapshot_bytes = self._write_snapshot(1, 1, targets_bytes, when)
        timestamp_md, timestamp_bytes = self._write_timestamp(1, 1, snapshot_bytes, when, None)
        return _State(
            root_md,
            root_bytes,
            targets_md,
            targets_bytes,
            snapshot_md,
            snapshot_bytes,
            timestamp_md,
            timestamp_bytes,
        )

    # Each _write_* signs one role's metadata and writes it; each _sign_* derives the
    # next version from the current state and returns the state with it.

    def _write_root(self, root: Root) -> tuple[Metadata[Root], bytes]:
        self._check_new_version(ROOT, root.version)
        md, data = self._sign(root)
        atomic_write(
            self._dir / f"{root.version}.root.json", data, exclusive=True
        )  # clients see it now
        atomic_write(self._dir / ROOT_FILE, data)
        return md, data

    def _write_targets(
        self, version: int, targets: dict[str, TargetFile], when: datetime
    ) -> tuple[Metadata[Targets], bytes]:
        self._check_new_version(TARGETS, version)
        md, data = self._sign(
            Targets(version=version, expires=when + self._policy.targets, targets=targets)
        )
        atomic_write(self._dir / f"{version}.targets.json", data, exclusive=True)
        return md, data

    def _write_snapshot(
        self, version: int, targets_version: int, targets_bytes: bytes, when: datetime
    ) -> tuple[Metadata[Snapshot], bytes]:
        self._check_new_version(SNAPSHOT, version)
        targets_meta = MetaFile.from_data(targets_version, targets_bytes, [HASH_ALGORITHM])
        md, data = self._sign(
            Snapshot(
                version=version,
                expires=when + self._policy.snapshot,
                meta={"targets.json": targets_meta},
            )
        )
        atomic_write(self._dir / f"{version}.snapshot.json", data, exclusive=True)
        return md, data

    def _write_timestamp(
        self,
        version: int,
        snapshot_version: int,
        snapshot_bytes: bytes,
        when: datetime,
        replacing: tuple[int, bytes] | None,
    ) -> tuple[Metadata[Timestamp], bytes]:
        """Sign and write timestamp ``version``, replacing ``replacing`` (version, bytes:
        the timestamp.json on disk, verified under the lock; None when creating).

        Order: mark naming both files, timestamp.json (commit point), mark naming the
        new file only. Whatever a crash interrupts, ``open`` finds the mark at or above
        timestamp.json and naming its bytes.
        """
        if self._timestamp_seen is not None and version <= self._timestamp_seen[0]:
            raise StateError(
                self._dir / TIMESTAMP_FILE,
                f"version {self._timestamp_seen[0]} was already written or loaded; refusing "
                f"to write version {version}",
            )
        mark = self._read_mark()  # from disk, whatever the loaded state says
        if mark is not None and version <= mark.highest:
            raise StateError(
                self._dir / MARK_FILE,
                f"records timestamp version {mark.highest} as already written; refusing "
                f"to write version {version}",
            )
        snapshot_meta = MetaFile.from_data(snapshot_version, snapshot_bytes, [HASH_ALGORITHM])
        md, data = self._sign(
            Timestamp(
                version=version,
                expires=when + self._policy.timestamp,
                snapshot_meta=snapshot_meta,
            )
        )
        new = (version, _sha256(data))
        in_flight = (new,) if replacing is None else ((replacing[0], _sha256(replacing[1])), new)
        self._write_mark(_Mark(version, in_flight))
        atomic_write(self._dir / TIMESTAMP_FILE, data)  # commit point
        self._saw_timestamp(version, data)
        self._write_mark(_Mark(version, (new,)))
        return md, data

    def _renew_root(self, state: _State, when: datetime) -> _State:
        renewed = copy.deepcopy(state.root.signed)
        renewed.version += 1
        renewed.expires = when + self._policy.root
        md, data = self._write_root(renewed)
        return replace(state, root=md, root_bytes=data)

    def _sign_targets(
        self, state: _State, targets: dict[str, TargetFile], when: datetime
    ) -> _State:
        version = self._next_version(TARGETS, state.targets.signed.version)
        md, data = self._write_targets(version, targets, when)
        return replace(state, targets=md, targets_bytes=data)

    def _sign_snapshot(self, state: _State, when: datetime) -> _State:
        version = self._next_version(SNAPSHOT, state.snapshot.signed.version)
        md, data = self._write_snapshot(
            version, state.targets.signed.version, state.targets_bytes, when
        )
        return replace(state, snapshot=md, snapshot_bytes=data)

    def _sign_timestamp(self, state: _State, when: datetime) -> _State:
        md, data = self._write_timestamp(
            self._next_timestamp_version(state.timestamp.signed.version),
            state.snapshot.signed.version,
            state.snapshot_bytes,
            when,
            (state.timestamp.signed.version, state.timestamp_bytes),
        )
        return replace(state, timestamp=md, timestamp_bytes=data)
