"""`sigstack serve rekor`: serve one service of an existing stack on its own, as one of many.

    sigstack serve rekor [--data-dir DIR] [--passphrase-file F] [--host H] --port N
                         [--log-storage postgresql://USER@HOST:PORT/DBNAME] [--log-name NAME]
                         [--copy-filesystem-log] [--verbose]

Serves Rekor at one base URL, as ``sigstack up`` does: Rekor v2 (write path,
tlog-tiles read path) and Rekor v1 (upstream Rekor's API: entries, proofs, search by
hash, key and email), each on its own log with its own key, plus /healthz and
/metrics, with the keys of the stack in ``DIR`` (loaded and verified exactly as
``sigstack up`` loads them; nothing in ``DIR`` is written but the moved markers
below).

Where the logs live:

* default: the stack's own filesystem logs ``DIR/logs/rekor`` and ``DIR/logs/rekor-v1``.
  One process at a time (a second one, or ``sigstack up`` on the same directory, is
  refused);
* ``--log-storage postgresql://...``: the logs live in PostgreSQL, Rekor v2 under
  ``--log-name`` (default ``rekor``) and Rekor v1 under that name with ``-v1`` appended
  (default ``rekor-v1``), each with its entry index (the v1 search index is rows of
  the same database), and any number of ``sigstack serve rekor`` processes (on any
  machines reaching the database) serve them together: each accepts entries and
  serves reads; for each log, exactly one process at a time, the holder of that log's
  writer lease, sequences and signs (see :mod:`sigstack.log.postgres` and
  :mod:`sigstack.log.engine`). If the process that sequences dies, another takes over
  within about a second. Every role change is printed (``sigstack serve rekor: role
  sequencer (lease term 3)`` for Rekor v2, ``sigstack serve rekor: v1 role ...`` for
  Rekor v1) and ``/healthz`` reports ``role``, ``size`` and the lease term of the v2
  log, and the same for the v1 log under ``v1``.

Creating a log in PostgreSQL: the first process finds no log under that name and
creates it, once, as the continuation of the stack's filesystem log of that name.
Whatever the key has signed must stay one tree, so the database log is that log's
copy (objects first, checkpoint last, under the filesystem log's writer lock so that
no ``sigstack up`` appends meanwhile; the entry index is rebuilt from the copied
entries when the log opens), never a new tree under the same key and origin (a split
view):

* a new stack's log (empty, or holding only the genesis entry sigstack logs at init)
  is copied without asking;
* a log holding more (it has been served) is copied only with
  ``--copy-filesystem-log``: moving a served log is the operator's decision;
* an existing database log is never created over: it is opened and verified (its
  checkpoint must verify with the stack's Rekor key and name its origin).

Once a log is in PostgreSQL, its filesystem copy gets a ``MOVED.json`` marker, and
neither ``sigstack up`` nor ``sigstack serve`` without ``--log-storage`` serves it any
more: two logs growing apart under one key are a fork.

The service listens on loopback only and answers only to its own ``Host`` (like
``sigstack up``); put a TLS proxy in front to serve a network. Give the database
password with ``PGPASSWORD`` or ``~/.pgpass`` rather than in the URL (the process list
shows command lines); it is never printed.

SIGINT/SIGTERM stop the process cleanly: the HTTP server drains, the log integrates
what it holds, the lease is released (a follower takes over at once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sigstack.core.errors import ConfigError, Conflict, SigstackError, StateError
from sigstack.core.net import port_number
from sigstack.runtime import tune_gc

if TYPE_CHECKING:  # the command line imports this module to build its parser: keep it light
    from starlette.types import ASGIApp, Receive, Scope, Send

    from sigstack.core.note import EcdsaNoteSigner, Ed25519NoteSigner
    from sigstack.log.engine import TransparencyLog
    from sigstack.log.fs import FilesystemStorage
    from sigstack.log.storage import LogStorage, SharedQueue
    from sigstack.stack import bootstrap
    from sigstack.stack.state import StateDir

__all__ = ["add_arguments", "run_serve"]

log = logging.getLogger("sigstack.serve")

SERVICES = ("rekor",)
READY_LINE = "sigstack serve rekor is ready"
"""Printed (followed by the URL) once /healthz answers."""
ROLE_LINE = "sigstack serve rekor: role"
"""Printed (followed by the Rekor v2 log's role) at start and at every role change."""
V1_ROLE_LINE = "sigstack serve rekor: v1 role"
"""The same for the Rekor v1 log."""
DEFAULT_LOG_NAME = "rekor"
V1_LOG_SUFFIX = "-v1"
"""The Rekor v1 log's database name is ``--log-name`` followed by this."""
V2_LOG = "rekor"
V1_LOG = "rekor-v1"
"""The stack's names of its two Rekor logs (manifest records, ``DIR/logs/<name>``)."""
_LABELS = {V2_LOG: "Rekor v2", V1_LOG: "Rekor v1"}
_COPY_CHUNK = 256
_NEW_LOG_SIZE = 1
"""Entries a new stack's Rekor log holds: its genesis entry (see ``stack.genesis``)."""
_CREATE_ATTEMPTS = 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``sigstack serve`` (see the module docstring)."""
    parser.add_argument("service", choices=SERVICES, help="the service to serve")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="state directory of the stack whose keys to use "
        "(default: $SIGSTACK_DATA_DIR or ~/.local/share/sigstack)",
    )
    parser.add_argument(
        "--passphrase-file",
        type=Path,
        default=None,
        help="file holding the key passphrase (default: $SIGSTACK_PASSPHRASE, or the "
        "passphrase generated into DIR/secrets at init)",
    )
    parser.add_argument(
        "--host",
        default=None,
        help="loopback address to listen on (default: the stack's host, else 127.0.0.1)",
    )
    parser.add_argument("--port", type=port_number, required=True, help="port to listen on")
    parser.add_argument(
        "--log-storage",
        default=None,
        metavar="URL",
        help="put the log in PostgreSQL (postgresql://USER@HOST:PORT/DBNAME; give the "
        "password with PGPASSWORD or ~/.pgpass); default: the stack's filesystem log",
    )
    parser.add_argument(
        "--log-name",
        default=DEFAULT_LOG_NAME,
        help=f"name of the Rekor v2 log in the database (default: {DEFAULT_LOG_NAME}); the "
        f"Rekor v1 log is this name followed by {V1_LOG_SUFFIX!r}",
    )
    parser.add_argument(
        "--copy-filesystem-log",
        action="store_true",
        help="when the database has no log yet and the stack's filesystem log of the same "
        "name has been served (holds more than its genesis entry), copy it into the database "
        "(without this, that case is refused)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log requests and details")


# --- the log --------------------------------------------------------------------------------


def _signer(material: bootstrap.Material, name: str) -> Ed25519NoteSigner | EcdsaNoteSigner:
    """The checkpoint signer of the stack's log ``name`` (:data:`V2_LOG` or :data:`V1_LOG`)."""
    if name == V2_LOG:
        return material.rekor_signer()
    if name == V1_LOG:
        return material.rekor_v1_signer()
    raise ValueError(f"not a Rekor log of the stack: {name!r}")


def _checkpoint_size(note: bytes, verifier: Any, where: str, label: str) -> int:
    from sigstack.core.errors import VerificationError
    from sigstack.core.note import open_note, parse_checkpoint

    try:
        text, _ = open_note(note, [verifier])
        return parse_checkpoint(text).size
    except VerificationError as exc:
        raise StateError(
            where, f"checkpoint does not verify with the stack's {label} key: {exc}"
        ) from exc


def _stored_keys(root: Path) -> Iterator[str]:
    """Every object key of a filesystem log (hidden files and the checkpoint excluded)."""
    from sigstack.log.storage import CHECKPOINT_KEY

    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not any(p.startswith(".") for p in rel.parts):
            key = rel.as_posix()
            if key != CHECKPOINT_KEY:
                yield key


def _copy_log(source: FilesystemStorage, target: LogStorage, note: bytes) -> int:
    """Copy every object of ``source`` to ``target``, then its checkpoint ``note``."""

    keys = list(_stored_keys(source.root))
    for start in range(0, len(keys), _COPY_CHUNK):
        chunk = keys[start : start + _COPY_CHUNK]
        items: dict[str, bytes] = {}
        for key in chunk:
            data = source.get(key)
            if data is not None:
                items[key] = data
        target.put_many(items)
    target.check_writer()
    target.swap_checkpoint(None, note)
    return len(keys)


def ensure_database_log(
    storage: LogStorage,
    material: bootstrap.Material,
    *,
    copy_filesystem_log: bool,
    say: Callable[[str], None] = print,
    log: str = V2_LOG,
) -> None:
    """Create the database log once, as the continuation of the stack's filesystem log.

    ``log`` names which of the stack's logs ``storage`` holds (:data:`V2_LOG` or
    :data:`V1_LOG`). See the module docstring. Several processes starting at once are
    fine: one creates, the others find the log (while the creator holds the writer
    lease they wait and look again).
    """
    from sigstack.log.engine import TransparencyLog
    from sigstack.log.fs import FilesystemStorage

    signer = _signer(material, log)
    label = _LABELS[log]
    verifier = signer.verifier()
    origin = material.log_origin(log)
    fs_root = material.state.log_dir(log)
    where = _where(storage)
    for _ in range(_CREATE_ATTEMPTS):
        if storage.read_checkpoint() is not None:
            return
        source = FilesystemStorage(fs_root)
        fs_note = source.read_checkpoint()
        fs_size = 0 if fs_note is None else _checkpoint_size(fs_note, verifier, str(fs_root), label)
        if fs_size > _NEW_LOG_SIZE and not copy_filesystem_log:
            raise ConfigError(
                f"{where} does not exist yet, and this stack's {label} log at {fs_root} holds "
                f"{fs_size} entries signed with the same key: the database log must continue "
                "that tree (a new one would be a second, inconsistent log under that key: a "
                "split view). Pass --copy-filesystem-log to copy it into the database"
            )
        try:
            if fs_note is None:
                TransparencyLog.create(storage, signer, origin)
                say(f"created the {label} log at {where}")
            else:
                count = _copy_locked(source, storage, fs_note, label)
                if count is None:
                    return  # another process copied it meanwhile
                say(
                    f"copied the {label} log ({fs_size} entries, {count} objects) from "
                    f"{fs_root} to {where}"
                )
            _mark_moved(material.state.moved_marker(log), where)
            say(
                f"do not serve {fs_root} with `sigstack up` any more: the log lives in the database"
            )
            return
        except Conflict:
            if storage.read_checkpoint() is not None:
                return  # another process created it meanwhile
            time.sleep(0.1)  # its creator holds the lease: look again
    raise Conflict(
        f"could not create {where}: its writer lease stayed busy; is another process creating it?"
    )


def _mark_moved(marker: Path, where: str) -> None:
    """Leave a record in the filesystem log that it now lives elsewhere.

    ``sigstack up`` refuses to serve a log with this marker: appending to the old copy
    would fork the tree that the database log continues.
    """
    from sigstack.core.clock import rfc3339, utcnow
    from sigstack.core.encoding import json_document
    from sigstack.fsutil import atomic_write, make_dirs

    make_dirs(marker.parent)
    atomic_write(marker, json_document({"moved_to": where, "at": rfc3339(utcnow())}), 0o644)


def _copy_locked(
    source: FilesystemStorage, target: LogStorage, note: bytes, label: str
) -> int | None:
    """Copy under both writer locks; None if the target log appeared meanwhile.

    The database lease first: it serializes the processes that start together (the
    others get ``Conflict`` and look again); then the filesystem log's writer lock,
    so that no ``sigstack up`` appends while we copy.
    """
    target.acquire_writer()
    try:
        if target.read_checkpoint() is not None:
            return None
        try:
            source.acquire_writer()
        except Conflict as exc:
            raise ConfigError(
                f"the stack's {label} log at {source.root} is being written (is `sigstack up` "
                "running on this directory?); stop it before copying the log"
            ) from exc
        try:
            if source.read_checkpoint() != note:
                raise ConfigError(
                    f"the stack's {label} log at {source.root} changed while it was being "
                    "copied; try again"
                )
            return _copy_log(source, target, note)
        finally:
            source.release_writer()
    finally:
        target.release_writer()


# --- HTTP -----------------------------------------------------------------------------------


class _HealthWithRole:
    """``GET /healthz`` with each log's role, size and lease term (other paths pass through).

    ``logs`` are ``(key, log, storage)``: the details of the log whose key is None are
    at the top level (Rekor v2), the others under their key (``"v1"``). The answer is
    503 when any log does not accept entries.
    """

    def __init__(
        self, app: ASGIApp, logs: Sequence[tuple[str | None, TransparencyLog, LogStorage]]
    ) -> None:
        self.app = app
        self.logs = list(logs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from sigstack.log.engine import SEQUENCER
        from sigstack.services.http import json_response

        if scope["type"] == "http" and scope["path"] == "/healthz" and scope["method"] == "GET":
            answer: dict[str, Any] = {"status": "ok"}
            reasons: list[str] = []
            for key, tlog, storage in self.logs:
                details: dict[str, Any] = dict(tlog.status())
                term = getattr(storage, "epoch", None)
                if term and details.get("role") == SEQUENCER:
                    details["lease_term"] = term
                try:
                    tlog.check_accepting()
                except SigstackError as exc:
                    reasons.append(exc.message if key is None else f"{key}: {exc.message}")
                if key is None:
                    answer.update(details)
                else:
                    answer[key] = details
            if reasons:
                answer["status"] = "unavailable"
                answer["reason"] = "; ".join(reasons)
                response = json_response(answer, 503)
            else:
                response = json_response(answer)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _where(storage: LogStorage) -> str:
    """Where the log lives, for people (never the database password)."""
    from sigstack.log.fs import FilesystemStorage

    if isinstance(storage, FilesystemStorage):
        return str(storage.root)
    return f"{getattr(storage, 'url', '?')}, log {getattr(storage, 'log_name', '?')!r}"


def _allowed_hosts(host: str, port: int) -> list[str]:
    url_host = f"[{host}]" if ":" in host else host
    names = {url_host, "127.0.0.1", "localhost", "[::1]"}
    return sorted(f"{name}:{port}" for name in names)


# --- the command ----------------------------------------------------------------------------


def _default_host(state: StateDir) -> str:
    from sigstack.stack.config import DEFAULT_HOST, Endpoints

    if state.stack_config_path.exists():
        return Endpoints.load(state.stack_config_path).host
    return DEFAULT_HOST


def _open_storage(
    args: argparse.Namespace, state: StateDir, host: str, name: str
) -> tuple[LogStorage, SharedQueue | None]:
    """The storage of the stack's log ``name``, and its shared queue when it is in PostgreSQL.

    The filesystem log is refused once it was moved to PostgreSQL (serving the old
    copy would fork the log).
    """
    from sigstack.log.fs import FilesystemStorage

    url = args.log_storage
    if url is None:
        moved = state.moved_marker(name)
        if moved.exists():
            raise StateError(
                moved,
                f"this stack's {_LABELS[name]} log was moved to PostgreSQL; serve it with "
                "`sigstack serve rekor --log-storage ...` (serving the old copy would fork "
                "the log)",
            )
        return FilesystemStorage(state.log_dir(name)), None
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            "--log-storage must be a postgresql:// URL (the filesystem log is the default)"
        )
    from sigstack.log.postgres import PostgresStorage

    log_name = args.log_name if name == V2_LOG else args.log_name + V1_LOG_SUFFIX
    holder = f"sigstack serve rekor on {host}:{args.port}, {socket.gethostname()} pid {os.getpid()}"
    storage = PostgresStorage(url, log_name, holder=holder)
    return storage, storage.shared_queue()


def _check_complete(material: bootstrap.Material) -> None:
    """Refuse a stack that lacks what a later sigstack added (the Rekor v1 log, its key)."""
    missing = material.missing()
    if missing:
        root = material.state.root
        raise ConfigError(
            f"the stack in {root} has no {', '.join(missing)} yet (added by a later "
            f"sigstack); run `sigstack init --data-dir {root}` once to add them"
        )


async def _serve(args: argparse.Namespace) -> int:
    from sigstack.core.net import is_loopback_host
    from sigstack.log.engine import SEQUENCER, ClusterPolicy, TransparencyLog
    from sigstack.services.http import HostGuard
    from sigstack.services.rekor import v1 as rekor_v1
    from sigstack.services.rekor.api import create_rekor_app
    from sigstack.services.rekor.service import RekorService
    from sigstack.services.rekor.v1 import RekorV1Service
    from sigstack.stack import bootstrap
    from sigstack.stack.state import StateDir, resolve_passphrase
    from sigstack.stack.supervisor import Supervisor, bind_socket

    state = StateDir(Path(args.data_dir).resolve())
    if not state.is_initialized():
        state.check_not_partial()
        raise StateError(
            state.manifest_path, "no sigstack state here; create it with `sigstack init` first"
        )
    host = args.host or _default_host(state)
    if not is_loopback_host(host):
        raise ConfigError(
            f"host {host!r} is not a loopback address: `sigstack serve` serves plain HTTP for "
            "one machine; serving a network needs TLS in front of it"
        )
    url = f"http://{'[' + host + ']' if ':' in host else host}:{args.port}"
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def say(line: str) -> None:
        print(f"sigstack serve rekor: {line}", flush=True)

    def announcer(prefix: str, storage: LogStorage) -> Callable[[str], None]:
        def on_role(role: str) -> None:
            term = getattr(storage, "epoch", None)
            suffix = f" (lease term {term})" if term and role == SEQUENCER else ""
            print(f"{prefix} {role}{suffix}", flush=True)

        return on_role

    async with contextlib.AsyncExitStack() as resources:
        sock = bind_socket("rekor", host, args.port)
        resources.callback(sock.close)
        # Accepted connections inherit this (Linux). bind_socket's socket has proto 0, for
        # which asyncio does not set TCP_NODELAY itself: every answer on a kept-alive
        # connection would wait ~40 ms for a delayed ACK (Nagle).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        material = await asyncio.to_thread(
            bootstrap.load, state, resolve_passphrase(args.passphrase_file)
        )
        _check_complete(material)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
            resources.callback(loop.remove_signal_handler, sig)
        # One log per Rekor API, each with its own key: v2 first, then v1.
        opened: dict[str, tuple[TransparencyLog, LogStorage]] = {}
        for name, prefix in ((V2_LOG, ROLE_LINE), (V1_LOG, V1_ROLE_LINE)):
            storage, shared = _open_storage(args, state, host, name)
            resources.callback(storage.close)
            signer = _signer(material, name)
            if shared is not None:
                await asyncio.to_thread(
                    ensure_database_log,
                    storage,
                    material,
                    copy_filesystem_log=args.copy_filesystem_log,
                    say=say,
                    log=name,
                )
            on_role = announcer(prefix, storage)
            tlog = TransparencyLog(
                storage,
                signer,
                material.log_origin(name),
                verifier=signer.verifier(),
                index_keys=rekor_v1.index_keys if name == V1_LOG else None,
                shared=shared,
                cluster=ClusterPolicy(),
                on_role=on_role,
            )
            await asyncio.to_thread(tlog.open)
            resources.push_async_callback(asyncio.to_thread, tlog.close)
            if shared is None or tlog.role != SEQUENCER:  # a shared sequencer said so already
                on_role(tlog.role)
            opened[name] = (tlog, storage)
        v2_log, v2_storage = opened[V2_LOG]
        v1_log, v1_storage = opened[V1_LOG]
        v2_signer = material.rekor_signer()
        app = create_rekor_app(
            RekorService(v2_log, v2_signer.verifier().key_id),
            RekorV1Service(v1_log, material.ecdsa(V1_LOG), material.rekor_v1_tree_id()),
        )
        health = _HealthWithRole(app, [(None, v2_log, v2_storage), ("v1", v1_log, v1_storage)])
        guarded = HostGuard(health, _allowed_hosts(host, args.port))
        supervisor = Supervisor(access_log=args.verbose)
        resources.push_async_callback(supervisor.stop)
        await supervisor.start("rekor", guarded, sock, url)
        print(
            f"{READY_LINE} on {url} (Rekor v2 log at {_where(v2_storage)}, role {v2_log.role}; "
            f"Rekor v1 log at {_where(v1_storage)}, role {v1_log.role})",
            flush=True,
        )
        tune_gc()
        stop_task = asyncio.create_task(stop.wait())
        exit_task = asyncio.create_task(supervisor.wait_any_exit())
        done, _ = await asyncio.wait({stop_task, exit_task}, return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        exit_task.cancel()
        crashed = exit_task in done
        say("stopping")
    if crashed:
        say("the HTTP server stopped unexpectedly")
        return 1
    say("stopped cleanly")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    """``sigstack serve`` (see the module docstring). Returns the exit status."""
    if args.data_dir is None:
        from sigstack.cli import default_data_dir

        args.data_dir = default_data_dir()
    return asyncio.run(_serve(args))
