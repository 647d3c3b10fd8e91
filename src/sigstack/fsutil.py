"""Durable, atomic file operations.

``atomic_write`` guarantees that after it returns the file holds exactly ``data`` and
survives a power loss, and that a concurrent reader sees either the old content or
the new, never a torn mix: the data goes to a temporary file in the same directory,
is fsynced, renamed over the target, and the directory is fsynced so the rename
itself is durable. ``exclusive=True`` refuses to replace an existing file (used for
trust material, which is never overwritten).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from sigstack.core.errors import StateError


def fsync_dir(path: Path) -> None:
    """fsync a directory so entries created or renamed in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path, mode: int = 0o755) -> None:
    """Create ``path`` and missing parents, fsyncing each parent whose entries changed."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=mode)
        except FileExistsError:
            continue
        os.chmod(d, mode)  # mkdir's mode is filtered by the umask
        fsync_dir(d.parent)


def atomic_write(path: Path, data: bytes, mode: int = 0o644, *, exclusive: bool = False) -> None:
    """Durably and atomically make ``path`` hold ``data`` (see the module docstring)."""
    if exclusive and path.exists():
        raise StateError(path, "already exists and is never overwritten")
    directory = path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            # link() fails if the target exists: no window where we could clobber it.
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
        fsync_dir(directory)
    except FileExistsError as exc:
        raise StateError(path, "already exists and is never overwritten") from exc
    except OSError as exc:
        raise StateError(path, f"cannot write: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


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
