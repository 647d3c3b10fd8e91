"""Durable, atomic file operations shared by the keystore, the log backend and TUF.

* ``write_temp`` writes data to a fresh temporary file beside its destination and
  fsyncs it: the building block of every atomic write here.
* ``atomic_write`` guarantees that after it returns the file holds exactly ``data``
  and survives a power loss, and that a concurrent reader sees either the old content
  or the new, never a torn mix (temp file, fsync, rename, fsync of the directory).
  ``exclusive=True`` refuses to replace an existing file (trust material and
  published TUF versions are never overwritten): the file is hard-linked into place,
  which fails atomically if it exists. On a file system without hard links it falls
  back to check-then-rename, which is only race-free under the caller's writer lock.
* ``make_dirs`` creates missing directories and fsyncs each parent it changed.
* ``open_lock``/``locked`` take an exclusive ``flock`` on a lock file: advisory,
  released when the descriptor closes (so also when the process dies).

Failures of the disk are ``StorageError`` naming the path; an existing file where an
exclusive write was asked for is a ``StateError``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from sigstack.core.errors import Conflict, StateError, StorageError

_NO_HARD_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP)


def fsync_dir(path: Path | str) -> None:
    """fsync a directory so entries created or renamed in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_quietly(path: Path | str) -> None:
    """Remove ``path`` if it exists; ignore every error (used to clean up temp files)."""
    with contextlib.suppress(OSError):
        os.unlink(path)


def make_dirs(path: Path, mode: int = 0o755) -> None:
    """Create ``path`` and missing parents, fsyncing each parent whose entries changed."""
    missing = []
    probe = path
    while not probe.is_dir():
        if probe.exists():
            raise StateError(probe, "exists but is not a directory")
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=mode)
        except FileExistsError:
            if not directory.is_dir():
                raise StateError(directory, "exists but is not a directory") from None
            continue
        except OSError as exc:
            raise StorageError(f"could not create {directory}: {exc.strerror or exc}") from exc
        fsync_dir(directory.parent)


def fsync_path(path: Path | str) -> None:
    """fsync the file at ``path`` (written earlier without ``sync``)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp(path: Path | str, data: bytes, mode: int = 0o644, *, sync: bool = True) -> str:
    """A new temporary file holding ``data`` in ``path``'s directory, fsynced unless
    ``sync`` is false (the caller then fsyncs it with :func:`fsync_path` before relying
    on it). Paths are handled as strings: the log writes a dozen files per batch."""
    directory, name = os.path.split(os.fspath(path))
    tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fchmod(fd, mode)  # the creation mode is filtered by the umask
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(tmp)
        raise
    os.close(fd)
    return tmp


def atomic_write(path: Path, data: bytes, mode: int = 0o644, *, exclusive: bool = False) -> None:
    """Durably and atomically make ``path`` hold ``data`` (see the module docstring)."""
    exists = StateError(path, "already exists and is never overwritten")
    if exclusive and path.exists():
        raise exists
    try:
        tmp = write_temp(path, data, mode)
        try:
            if not exclusive:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise exists from None
                except OSError as exc:
                    if exc.errno not in _NO_HARD_LINKS:
                        raise
                    if path.exists():
                        raise exists from None
                    os.replace(tmp, path)
        finally:
            unlink_quietly(tmp)
        fsync_dir(path.parent)
    except OSError as exc:
        raise StorageError(f"could not write {path}: {exc.strerror or exc}") from exc


def read_file(path: Path, *, what: str = "file") -> bytes:
    """Read ``path``; a missing or unreadable file is a ``StateError`` naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise StateError(path, f"{what} is missing") from exc
    except IsADirectoryError as exc:
        raise StateError(path, f"{what} is a directory, expected a file") from exc
    except OSError as exc:
        raise StateError(path, f"{what} is unreadable: {exc.strerror or exc}") from exc


def open_lock(path: Path, *, blocking: bool = True, holder: str = "another process") -> int:
    """Open ``path`` and take an exclusive flock on it; return the descriptor to close.

    Non-blocking contention raises ``Conflict`` naming the lock and ``holder``.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StorageError(f"could not open the lock {path}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        raise Conflict(f"{path} is held by {holder}") from None
    except OSError as exc:
        os.close(fd)
        raise StorageError(f"could not lock {path}: {exc.strerror or exc}") from exc
    return fd


@contextlib.contextmanager
def locked(path: Path, *, blocking: bool = True, holder: str = "another process") -> Iterator[int]:
    """Hold an exclusive flock on ``path`` for the block (see ``open_lock``)."""
    fd = open_lock(path, blocking=blocking, holder=holder)
    try:
        yield fd
    finally:
        os.close(fd)  # closing releases the flock
