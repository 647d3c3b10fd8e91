"""PostgreSQL log storage: one log shared by several sigstack processes.

:class:`PostgresStorage` implements :class:`~sigstack.log.storage.LogStorage` in a
PostgreSQL database (15 or later is what CI runs; 14 is the oldest with
``idle_session_timeout``), and :class:`PostgresQueue` the
:class:`~sigstack.log.storage.SharedQueue` through which processes that do not
hold the writer lease (frontends) hand entries to the one that does (the
sequencer). One database holds any number of logs, told apart by ``log_name``.

Durability and consistency contract (how :mod:`sigstack.log.storage` is met)
---------------------------------------------------------------------------
* Durability: every write is one transaction committed with
  ``synchronous_commit = on`` (set on every connection this module opens), so it
  returns once the server has flushed it to its write-ahead log. That survives a
  crash of the server or of the machine as far as the server's own settings allow:
  run it with ``fsync = on`` and ``full_page_writes = on`` (the defaults). With
  synchronous replicas, ``synchronous_standby_names`` decides whether a commit
  also waits for a standby; the contract is met by the primary's flush.
* Atomicity: each object is one row replaced by one statement; readers (any
  process) see the old row or the new one. ``put_many`` is in fact atomic as a
  whole (one transaction), which is more than the contract asks.
* Compare-and-swap: ``swap_checkpoint`` is a conditional ``UPDATE`` (or, for the
  first checkpoint, an ``INSERT ... ON CONFLICT DO NOTHING``) and raises
  ``Conflict`` when no row matched, in one transaction that also notifies
  listeners (``pg_notify``) of the new checkpoint.
* High-water mark: the same transaction as the swap upserts the new checkpoint
  into ``sigstack_objects`` under the key ``.high-water`` (a name no object key
  can have), so the mark always equals the checkpoint the log committed; a
  checkpoint row set back to an older one (an edited or restored
  ``sigstack_checkpoints``) no longer matches it and the engine refuses to open
  the log. A restore of the whole database restores the mark too and is not
  detected.
* Entry index: rows in ``sigstack_entry_index``; ``index_add`` and
  ``index_truncate`` are single transactions, durable on return.
* Reads use pooled autocommit connections: each statement sees everything
  committed before it started (READ COMMITTED).

The writer lease, and fencing
-----------------------------
``acquire_writer`` opens a dedicated connection and takes the session-level
advisory lock ``pg_try_advisory_lock(K)``, K being 64 bits of SHA-256 of the log
name (a collision between two log names would make them share a lease: safe, never
two writers, and astronomically unlikely). In the same session it increments the
log's lease *epoch* in ``sigstack_leases`` (a term number: each acquisition gets a
larger one) and records who holds it (host, pid, a label), which the ``Conflict``
raised to the next candidate names.

While the lease is held, EVERY write of this storage object (objects, index,
checkpoint, queue assignments) goes through that one connection. The lock lives
exactly as long as the session: if the process dies, the server ends the session
and releases the lock, and a transaction in flight is rolled back. So a sequencer
that lost its lease can no longer write anything, not even a checkpoint it signed
before it noticed: the session is the fence, and the compare-and-swap remains the
final guard. Sessions end on their own when the holder is gone or stuck:

* process killed or crashed: the kernel closes the socket, the server sees it at
  once;
* host lost or network partition: TCP keepalives on both ends
  (``keepalives_idle=5``/``tcp_keepalives_idle=5``, interval 2 s, 3 probes) end the
  session within about 11 seconds;
* process frozen (stopped, swapping, deadlocked): ``idle_session_timeout`` on the
  lease session (``lease_timeout``, default 10 s) ends it, because a live holder
  uses the session at least every ``lease_heartbeat`` (``lease_timeout / 4``)
  seconds: the engine calls ``check_writer`` that often when idle.

``check_writer`` verifies that the lease connection is alive and that its session
still holds the lock (``pg_locks``); if the connection is broken it raises
``Conflict`` (the lease is gone); if the check itself fails it raises
``StorageError`` (the engine signs nothing either way).

Writes made by an object that does not hold the lease go through pooled
connections and are not fenced: that is for tools and tests, never the engine,
which takes the lease before it writes.

Schema (created idempotently at the first connection to a database that lacks it,
under a transaction-level advisory lock so that concurrent first starts do not race:
that start needs CREATE on the schema, later ones only SELECT, INSERT, UPDATE and
DELETE on the tables; version recorded in ``sigstack_schema``; a newer version than
this code knows is refused; one database holds any number of logs)::

    sigstack_objects      (log text, key text, data bytea)        PK (log, key)
    sigstack_checkpoints  (log text PK, data bytea)
    sigstack_entry_index  (log text, ns text, key bytea, pos bigint)
                          PK (log, ns, key, pos); index (log, pos)
    sigstack_leases       (log text PK, epoch bigint, holder text, acquired timestamptz)
    sigstack_pending      (id bigserial PK, log text, leaf bytea, record bytea NULL,
                           dedup bool, submitted timestamptz, claimed bigint NULL,
                           position bigint NULL, duplicate bool NULL, batch_end bigint NULL)
                          partial index (log, id) WHERE batch_end IS NULL;
                          partial index (log, batch_end) WHERE batch_end IS NOT NULL

The shared queue (:class:`PostgresQueue`) and what a crash at each step means
-------------------------------------------------------------------------------
1. A frontend INSERTs its entries into ``sigstack_pending`` (one transaction per
   group of submissions, ``synchronous_commit = off``: nothing is acknowledged
   yet, so a row lost in a server crash is an entry whose submitter gets no
   answer) and notifies ``sigstack_entries``.
   *Crash of the frontend after the commit:* the entry is still sequenced; its
   submitter never hears of it (a retry is deduplicated for dedup entries).
2. The sequencer's pump claims waiting rows (``UPDATE ... SET claimed = epoch``
   over ``SELECT ... FOR UPDATE SKIP LOCKED``, oldest first). Rows claimed in an
   older epoch and never assigned are claimable again.
   *Crash of the sequencer:* the rows stay unassigned; the next sequencer (a larger
   epoch) claims them.
3. The sequencer writes the batch's tiles, bundles and index rows, then (through
   the lease connection) each row's ``position``, ``duplicate`` and ``batch_end``
   (the size of the tree its checkpoint will commit) in one transaction.
   *Crash:* the assignments are provisional (``batch_end`` beyond the committed
   checkpoint). Whoever takes the lease next reloads the checkpoint and
   ``reset``-s them (unassigned, unclaimed) before sequencing anything; they are
   claimed again and may land at other positions.
4. The sequencer checks its lease, signs and swaps the checkpoint (notifying
   ``sigstack_checkpoint``). *Crash:* the swap committed or it did not; the
   assignments are final exactly when it did.
5. Frontends, woken by the notification (or by polling when notifications are
   lost), read the committed checkpoint and the rows assigned since the size they
   last saw in ONE statement (one snapshot), and acknowledge their rows whose
   ``batch_end`` that checkpoint covers.
   A provisional row seen with an older checkpoint is never acknowledged, and a
   newer checkpoint is only ever committed after the provisional rows were reset.
6. The sequencer deletes final rows older than the retention (``purge``).

Secrets: the DSN's password is never logged nor put into an error message
(:func:`redact_dsn`); prefer ``PGPASSWORD`` or a ``~/.pgpass`` file to a password
in the URL, which other users of the machine can read in the process list.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from sigstack.core.errors import ConfigError, Conflict, InvalidRequest, StorageError

try:
    import psycopg
    from psycopg import conninfo as pg_conninfo
    from psycopg.pq import TransactionStatus
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ConfigError(
        "PostgreSQL log storage needs the psycopg driver: pip install 'sigstack[postgres]'"
    ) from exc

from sigstack.log.storage import (
    CHECKPOINT_EVENT,
    CHECKPOINT_KEY,
    ENTRIES_EVENT,
    Assignment,
    IndexRow,
    LogStorage,
    QueuedEntry,
    SharedQueue,
    validate_index_rows,
    validate_key,
)

__all__ = ["PostgresQueue", "PostgresStorage", "is_postgres_url", "redact_dsn"]

_log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
ENTRIES_CHANNEL = "sigstack_entries"
CHECKPOINT_CHANNEL = "sigstack_checkpoint"
HIGH_WATER_KEY = ".high-water"
"""Key of the high-water mark in ``sigstack_objects`` (``validate_key`` refuses it)."""
_SCHEMA_LOCK = 0x5369_6753_7461_636B  # "SigStack": serializes schema creation
_LOG_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")
_MAX_LOG_NAME = 64

_TABLES = (
    "sigstack_schema",
    "sigstack_objects",
    "sigstack_checkpoints",
    "sigstack_entry_index",
    "sigstack_leases",
    "sigstack_pending",
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sigstack_schema (
    id integer PRIMARY KEY CHECK (id = 1),
    version integer NOT NULL
);
CREATE TABLE IF NOT EXISTS sigstack_objects (
    log text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (log, key)
);
CREATE TABLE IF NOT EXISTS sigstack_checkpoints (
    log text COLLATE "C" PRIMARY KEY,
    data bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS sigstack_entry_index (
    log text COLLATE "C" NOT NULL,
    ns text COLLATE "C" NOT NULL,
    key bytea NOT NULL,
    pos bigint NOT NULL,
    PRIMARY KEY (log, ns, key, pos)
);
CREATE INDEX IF NOT EXISTS sigstack_entry_index_pos ON sigstack_entry_index (log, pos);
CREATE TABLE IF NOT EXISTS sigstack_leases (
    log text COLLATE "C" PRIMARY KEY,
    epoch bigint NOT NULL,
    holder text NOT NULL,
    acquired timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS sigstack_pending (
    id bigserial PRIMARY KEY,
    log text COLLATE "C" NOT NULL,
    leaf bytea NOT NULL,
    record bytea,
    dedup boolean NOT NULL,
    submitted timestamptz NOT NULL DEFAULT now(),
    claimed bigint,
    position bigint,
    duplicate boolean,
    batch_end bigint
);
CREATE INDEX IF NOT EXISTS sigstack_pending_waiting
    ON sigstack_pending (log, id) WHERE batch_end IS NULL;
CREATE INDEX IF NOT EXISTS sigstack_pending_assigned
    ON sigstack_pending (log, batch_end) WHERE batch_end IS NOT NULL;
"""

T = TypeVar("T")
Connection = psycopg.Connection[Any]


def is_postgres_url(value: str) -> bool:
    """True for ``postgresql://...`` and ``postgres://...`` URLs."""
    return value.startswith(("postgresql://", "postgres://"))


def redact_dsn(dsn: str) -> str:
    """``postgresql://user@host:port/dbname`` for messages: never the password.

    Raises :class:`ConfigError` (without echoing the DSN) if it does not parse.
    """
    try:
        params = pg_conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        raise ConfigError(
            "the PostgreSQL connection string does not parse (expected "
            "postgresql://USER@HOST:PORT/DBNAME or key=value pairs)"
        ) from None
    user = str(params.get("user") or os.environ.get("PGUSER") or "")
    host = str(params.get("host") or os.environ.get("PGHOST") or "localhost")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    db = str(params.get("dbname") or os.environ.get("PGDATABASE") or user)
    if ":" in host and not host.startswith("/"):
        host = f"[{host}]"
    return f"postgresql://{user + '@' if user else ''}{host}:{port}/{db}"


def _validate_log_name(name: str) -> str:
    if (
        not isinstance(name, str)
        or not 0 < len(name) <= _MAX_LOG_NAME
        or not set(name) <= _LOG_NAME_CHARS
        or name[0] in "._-"
    ):
        raise ConfigError(
            f"invalid log name {name!r}: 1 to {_MAX_LOG_NAME} characters of [a-z0-9._-], "
            "starting with a letter or digit"
        )
    return name


def _lock_key(log_name: str) -> int:
    """The advisory-lock key of a log: 64 bits of SHA-256, as a signed bigint."""
    digest = hashlib.sha256(b"sigstack-log-lease\x00" + log_name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _Pool:
    """A small thread-safe pool of autocommit connections (at most ``size`` at once)."""

    def __init__(self, connect: Callable[[], Connection], size: int) -> None:
        self._connect = connect
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)
        self._closed = False

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        self._slots.acquire()
        try:
            with self._lock:
                if self._closed:
                    raise StorageError("the PostgreSQL storage was closed")
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._connect()
            try:
                yield conn
            finally:
                healthy = (
                    not conn.closed
                    and not conn.broken
                    and conn.info.transaction_status == TransactionStatus.IDLE
                )
                with self._lock:
                    keep = healthy and not self._closed
                    if keep:
                        self._idle.append(conn)
                if not keep:
                    conn.close()
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class PostgresStorage(LogStorage):
    """A log in PostgreSQL; see the module docstring for the contract and schema.

    ``dsn`` is a libpq connection string or URL (its password is never logged);
    ``log_name`` tells this log apart from others in the same database.
    ``holder`` describes this process in the lease table (default: host and pid).
    ``lease_timeout`` bounds how long a frozen lease holder keeps the lease.
    Thread-safe. Connections open lazily; ``close()`` releases them (and the lease).
    """

    def __init__(
        self,
        dsn: str,
        log_name: str,
        *,
        holder: str | None = None,
        pool_size: int = 8,
        lease_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        statement_timeout: float = 60.0,
    ) -> None:
        self._dsn = dsn
        self.url = redact_dsn(dsn)
        self.log_name = _validate_log_name(log_name)
        if not 1 <= lease_timeout <= 3600:
            raise ConfigError(f"lease_timeout must be 1..3600 seconds, not {lease_timeout!r}")
        self.holder = holder or f"{socket.gethostname()} pid {os.getpid()}"
        self._lease_timeout = float(lease_timeout)
        self._connect_timeout = max(1, int(connect_timeout))
        self._statement_timeout_ms = int(statement_timeout * 1000)
        self._password = str(pg_conninfo.conninfo_to_dict(dsn).get("password") or "")
        self._key = _lock_key(self.log_name)
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._pool = _Pool(self._connect, pool_size)
        self._lease: Connection | None = None
        self._lease_lock = threading.RLock()
        self.epoch = 0
        """The lease term of the current (or last) acquisition; 0 before any."""
        self._queue: PostgresQueue | None = None

    # -- connections ----------------------------------------------------------------------

    def _clean(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text

    def _error(self, what: str, exc: BaseException) -> StorageError:
        return StorageError(
            self._clean(f"PostgreSQL {what} failed ({self.url}, log {self.log_name!r}): ")
            + self._clean(_first_line(exc))
        )

    def _connect(self, *, lease: bool = False) -> Connection:
        params = pg_conninfo.conninfo_to_dict(self._dsn)
        extra: dict[str, Any] = {"connect_timeout": self._connect_timeout}
        for name, value in (
            ("application_name", "sigstack"),
            ("keepalives", 1),
            ("keepalives_idle", 5),
            ("keepalives_interval", 2),
            ("keepalives_count", 3),
        ):
            if name not in params:
                extra[name] = value
        try:
            conn = psycopg.connect(self._dsn, autocommit=True, **extra)
        except psycopg.Error as exc:
            raise StorageError(
                self._clean(f"could not connect to PostgreSQL at {self.url}: ")
                + self._clean(_first_line(exc))
            ) from None
        try:
            conn.execute("SET synchronous_commit = on")
            conn.execute(f"SET statement_timeout = {self._statement_timeout_ms}")
            if lease:
                conn.execute("SET tcp_keepalives_idle = 5")
                conn.execute("SET tcp_keepalives_interval = 2")
                conn.execute("SET tcp_keepalives_count = 3")
                timeout_ms = int(self._lease_timeout * 1000)
                try:
                    conn.execute(f"SET idle_session_timeout = {timeout_ms}")
                except psycopg.errors.UndefinedObject:  # PostgreSQL < 14
                    _log.warning(
                        "PostgreSQL at %s has no idle_session_timeout (version < 14): a frozen "
                        "lease holder keeps the lease until its connection dies",
                        self.url,
                    )
            self._ensure_schema(conn)
        except psycopg.Error as exc:
            conn.close()
            raise self._error("session setup", exc) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _ensure_schema(self, conn: Connection) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            present = conn.execute(
                "SELECT count(to_regclass(t)) FROM unnest(%s::text[]) AS t", (list(_TABLES),)
            ).fetchone()
            if not present or present[0] != len(_TABLES):
                # First start on this database: needs CREATE on the schema (later starts
                # need only SELECT, INSERT, UPDATE and DELETE on these tables).
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                    conn.execute(_SCHEMA)
                    conn.execute(
                        "INSERT INTO sigstack_schema (id, version) VALUES (1, %s) "
                        "ON CONFLICT (id) DO NOTHING",
                        (SCHEMA_VERSION,),
                    )
            row = conn.execute("SELECT version FROM sigstack_schema WHERE id = 1").fetchone()
            version = row[0] if row else SCHEMA_VERSION
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"the sigstack tables in {self.url} are schema version {version}, newer "
                    f"than this sigstack supports ({SCHEMA_VERSION}); upgrade sigstack"
                )
            fsync = conn.execute("SHOW fsync").fetchone()
            if fsync and fsync[0] != "on":
                _log.warning(
                    "PostgreSQL at %s runs with fsync=%s: the log is NOT crash-safe there",
                    self.url,
                    fsync[0],
                )
            self._schema_ready = True

    def _read(self, what: str, run: Callable[[Connection], T]) -> T:
        try:
            with self._pool.connection() as conn:
                return run(conn)
        except psycopg.Error as exc:
            raise self._error(what, exc) from None

    def _write(self, what: str, run: Callable[[Connection], T], *, lease: bool = False) -> T:
        """Run ``run`` in one transaction: on the lease connection when the lease is
        held (fenced), else on a pooled one. ``lease=True``: the lease is required."""
        with self._lease_lock:
            conn = self._lease
            if conn is not None:
                if conn.closed or conn.broken:
                    raise StorageError(
                        f"PostgreSQL {what} failed ({self.url}, log {self.log_name!r}): the "
                        "writer lease's connection is lost"
                    )
                try:
                    with conn.transaction():
                        return run(conn)
                except psycopg.Error as exc:
                    raise self._error(what, exc) from None
        if lease:
            raise Conflict(
                f"{what} needs the writer lease of log {self.log_name!r} at {self.url}, "
                "which this process does not hold"
            )
        try:
            with self._pool.connection() as pooled, pooled.transaction():
                return run(pooled)
        except psycopg.Error as exc:
            raise self._error(what, exc) from None

    def describe(self, key: str) -> str:
        return f"{self.url} (log {self.log_name!r}) {key}"

    # -- objects ---------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        return self._object(validate_key(key))

    def _object(self, key: str) -> bytes | None:
        def run(conn: Connection) -> bytes | None:
            row = conn.execute(
                "SELECT data FROM sigstack_objects WHERE log = %s AND key = %s",
                (self.log_name, key),
            ).fetchone()
            return None if row is None else bytes(row[0])

        return self._read(f"read of {key}", run)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        wanted = [validate_key(key) for key in keys]
        if len(wanted) <= 1:
            return [self._object(key) for key in wanted]

        def run(conn: Connection) -> list[bytes | None]:
            rows = conn.execute(
                "SELECT key, data FROM sigstack_objects WHERE log = %s AND key = ANY(%s)",
                (self.log_name, wanted),
            ).fetchall()
            found = {key: bytes(data) for key, data in rows}
            return [found.get(key) for key in wanted]

        return self._read(f"read of {wanted[0]} and {len(wanted) - 1} more objects", run)

    def put_many(self, items: Mapping[str, bytes]) -> None:
        keys = [validate_key(key) for key in items]
        if not keys:
            return
        datas = [bytes(items[key]) for key in keys]

        def run(conn: Connection) -> None:
            conn.execute(
                "INSERT INTO sigstack_objects (log, key, data) "
                "SELECT %s, k, d FROM unnest(%s::text[], %s::bytea[]) AS u(k, d) "
                "ON CONFLICT (log, key) DO UPDATE SET data = EXCLUDED.data",
                (self.log_name, keys, datas),
            )

        what = f"write of {keys[0]}" + (f" and {len(keys) - 1} more objects" if keys[1:] else "")
        self._write(what, run)

    def read_checkpoint(self) -> bytes | None:
        def run(conn: Connection) -> bytes | None:
            row = conn.execute(
                "SELECT data FROM sigstack_checkpoints WHERE log = %s", (self.log_name,)
            ).fetchone()
            return None if row is None else bytes(row[0])

        return self._read("read of the checkpoint", run)

    def swap_checkpoint(self, old: bytes | None, new: bytes) -> None:
        def run(conn: Connection) -> None:
            if old is None:
                cur = conn.execute(
                    "INSERT INTO sigstack_checkpoints (log, data) VALUES (%s, %s) "
                    "ON CONFLICT (log) DO NOTHING",
                    (self.log_name, bytes(new)),
                )
            else:
                cur = conn.execute(
                    "UPDATE sigstack_checkpoints SET data = %s WHERE log = %s AND data = %s",
                    (bytes(new), self.log_name, bytes(old)),
                )
            if cur.rowcount != 1:
                raise Conflict(
                    f"{self.describe(CHECKPOINT_KEY)} is not the checkpoint this writer last "
                    "saw; another writer changed the log"
                )
            conn.execute(
                "INSERT INTO sigstack_objects (log, key, data) VALUES (%s, %s, %s) "
                "ON CONFLICT (log, key) DO UPDATE SET data = EXCLUDED.data",
                (self.log_name, HIGH_WATER_KEY, bytes(new)),
            )
            conn.execute("SELECT pg_notify(%s, %s)", (CHECKPOINT_CHANNEL, self.log_name))

        self._write("checkpoint swap", run)

    def read_high_water(self) -> bytes | None:
        return self._object(HIGH_WATER_KEY)

    # -- entry index -----------------------------------------------------------------------

    def index_add(self, rows: Sequence[IndexRow]) -> None:
        validate_index_rows(rows)
        if not rows:
            return
        namespaces = [r[0] for r in rows]
        keys = [r[1] for r in rows]
        positions = [r[2] for r in rows]

        def run(conn: Connection) -> None:
            conn.execute(
                "INSERT INTO sigstack_entry_index (log, ns, key, pos) "
                "SELECT %s, n, k, p FROM unnest(%s::text[], %s::bytea[], %s::bigint[]) "
                "AS u(n, k, p) ON CONFLICT DO NOTHING",
                (self.log_name, namespaces, keys, positions),
            )

        self._write("entry index update", run)

    def index_lookup(
        self, namespace: str, keys: Sequence[bytes], below: int
    ) -> dict[bytes, list[int]]:
        if not keys:
            return {}

        def run(conn: Connection) -> dict[bytes, list[int]]:
            found: dict[bytes, list[int]] = {}
            # One primary-key probe per key: O(keys * log n) whatever the planner
            # thinks of the table (OFFSET 0 keeps it from flattening the LATERAL
            # subquery into a scan of every position of the log).
            cur = conn.execute(
                "SELECT k.key, e.pos FROM unnest(%s::bytea[]) AS k(key) "
                "CROSS JOIN LATERAL (SELECT pos FROM sigstack_entry_index "
                "WHERE log = %s AND ns = %s AND key = k.key AND pos < %s::bigint OFFSET 0) AS e "
                "ORDER BY e.pos",
                (list(keys), self.log_name, namespace, below),
            )
            for key, position in cur:
                found.setdefault(bytes(key), []).append(int(position))
            return found

        return self._read("entry index lookup", run)

    def index_truncate(self, size: int) -> None:
        def run(conn: Connection) -> None:
            conn.execute(
                "DELETE FROM sigstack_entry_index WHERE log = %s AND pos >= %s::bigint",
                (self.log_name, size),
            )

        self._write("entry index truncation", run)

    # -- writer lease ----------------------------------------------------------------------

    @property
    def lease_heartbeat(self) -> float:
        return self._lease_timeout / 4

    @property
    def holds_lease(self) -> bool:
        """True while this object holds a lease connection (which may have died since)."""
        return self._lease is not None

    def acquire_writer(self) -> None:
        with self._lease_lock:
            if self._lease is not None:
                raise Conflict(
                    f"this storage object already holds the writer lease of log "
                    f"{self.log_name!r} at {self.url}"
                )
            conn = self._connect(lease=True)
            try:
                got = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
                if not got or not got[0]:
                    row = conn.execute(
                        "SELECT holder, epoch, acquired FROM sigstack_leases WHERE log = %s",
                        (self.log_name,),
                    ).fetchone()
                    who = (
                        f"{row[0]} (term {row[1]}, since {row[2]:%Y-%m-%d %H:%M:%S%z})"
                        if row
                        else "another session"
                    )
                    raise Conflict(
                        f"the writer lease of log {self.log_name!r} at {self.url} is held by "
                        f"{who}; another sigstack process is writing this log"
                    )
                with conn.transaction():
                    row = conn.execute(
                        "INSERT INTO sigstack_leases (log, epoch, holder, acquired) "
                        "VALUES (%s, 1, %s, now()) ON CONFLICT (log) DO UPDATE SET "
                        "epoch = sigstack_leases.epoch + 1, holder = EXCLUDED.holder, "
                        "acquired = EXCLUDED.acquired RETURNING epoch",
                        (self.log_name, self.holder),
                    ).fetchone()
            except psycopg.Error as exc:
                conn.close()
                raise self._error("writer lease acquisition", exc) from None
            except BaseException:
                conn.close()
                raise
            assert row is not None
            self._lease = conn
            self.epoch = int(row[0])
        _log.info("log %r at %s: writer lease taken (term %d)", self.log_name, self.url, self.epoch)

    def release_writer(self) -> None:
        with self._lease_lock:
            conn, self._lease = self._lease, None
        if conn is None:
            return
        try:
            if not conn.closed and not conn.broken:
                # Synchronously: closing alone lets the server release it a moment later.
                conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
        except psycopg.Error:
            pass  # the session is going away anyway, and the lock with it
        finally:
            conn.close()  # ending the session releases the advisory lock in any case

    def check_writer(self) -> None:
        with self._lease_lock:
            conn = self._lease
            if conn is None:
                raise Conflict(
                    f"this process does not hold the writer lease of log {self.log_name!r} "
                    f"at {self.url}"
                )
            lost = Conflict(
                f"the writer lease of log {self.log_name!r} at {self.url} was lost: its "
                "database session ended (network, server restart, or idle too long)"
            )
            if conn.closed or conn.broken:
                raise lost
            hi, lo = (self._key >> 32) & 0xFFFFFFFF, self._key & 0xFFFFFFFF
            try:
                row = conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                    "AND pid = pg_backend_pid() AND classid = %s::bigint::oid "
                    "AND objid = %s::bigint::oid AND objsubid = 1 AND granted)",
                    (hi, lo),
                ).fetchone()
            except psycopg.Error as exc:
                if conn.closed or conn.broken:
                    raise lost from None
                raise self._error("writer lease check", exc) from None
            if not row or not row[0]:
                raise Conflict(
                    f"the writer lease of log {self.log_name!r} at {self.url} is no longer "
                    "held by this session"
                )

    def lease_holder(self) -> tuple[str, int] | None:
        """``(holder, term)`` recorded by the last acquisition of this log's lease."""

        def run(conn: Connection) -> tuple[str, int] | None:
            row = conn.execute(
                "SELECT holder, epoch FROM sigstack_leases WHERE log = %s", (self.log_name,)
            ).fetchone()
            return None if row is None else (str(row[0]), int(row[1]))

        return self._read("lease lookup", run)

    # -- queue, lifecycle ------------------------------------------------------------------

    def shared_queue(self) -> PostgresQueue:
        """The shared entry queue of this log (one per storage object)."""
        if self._queue is None:
            self._queue = PostgresQueue(self)
        return self._queue

    def destroy(self) -> None:
        """Delete this log from the database: objects, checkpoint, index, queue, lease.

        For tests and deliberate removal. Takes the writer lease first, so it raises
        ``Conflict`` while any process is writing the log.
        """
        self.acquire_writer()
        try:

            def run(conn: Connection) -> None:
                for table in (
                    "sigstack_objects",
                    "sigstack_checkpoints",
                    "sigstack_entry_index",
                    "sigstack_pending",
                    "sigstack_leases",
                ):
                    conn.execute(
                        f"DELETE FROM {table} WHERE log = %s",  # noqa: S608 (fixed names)
                        (self.log_name,),
                    )

            self._write("log deletion", run, lease=True)
        finally:
            self.release_writer()

    def close(self) -> None:
        if self._queue is not None:
            self._queue.close()
        self.release_writer()
        self._pool.close()

    # -- used by PostgresQueue -------------------------------------------------------------

    def _queue_read(self, what: str, run: Callable[[Connection], T]) -> T:
        return self._read(what, run)

    def _queue_write(self, what: str, run: Callable[[Connection], T], *, lease: bool) -> T:
        return self._write(what, run, lease=lease)

    def _listen_connection(self) -> Connection:
        return self._connect()


class PostgresQueue(SharedQueue):
    """The shared entry queue of one :class:`PostgresStorage` log (see the module
    docstring for the steps and what a crash at each means).

    Notifications: one background thread per queue LISTENs on the two channels
    (started by the first ``wait``) and reconnects with a growing pause when its
    connection fails; meanwhile waiters simply reach their timeout (polling).
    """

    def __init__(self, storage: PostgresStorage) -> None:
        self._storage = storage
        self._log = storage.log_name
        self._cond = threading.Condition()
        self._counters = {ENTRIES_EVENT: 0, CHECKPOINT_EVENT: 0}
        self._wakes = 0
        self._listener: threading.Thread | None = None
        self._closing = False
        self._listen_conn: Connection | None = None

    # -- frontends -------------------------------------------------------------------------

    def enqueue(self, entries: Sequence[tuple[bytes, bytes, bool]]) -> list[int]:
        if not entries:
            return []
        leaves = [leaf for leaf, _, _ in entries]
        records = [None if record == leaf else record for leaf, record, _ in entries]
        dedups = [dedup for _, _, dedup in entries]

        def run(conn: Connection) -> list[int]:
            conn.execute("SET LOCAL synchronous_commit = off")
            # Ticket numbers first (ascending, in submission order: claims go oldest
            # first), then one INSERT of every row.
            rows = conn.execute(
                "SELECT nextval(pg_get_serial_sequence('sigstack_pending', 'id')) "
                "FROM generate_series(1, %s)",
                (len(entries),),
            ).fetchall()
            tickets = sorted(int(r[0]) for r in rows)
            conn.execute(
                "INSERT INTO sigstack_pending (id, log, leaf, record, dedup) "
                "SELECT i, %s, l, r, d FROM unnest(%s::bigint[], %s::bytea[], %s::bytea[], "
                "%s::boolean[]) AS u(i, l, r, d)",
                (self._log, tickets, leaves, records, dedups),
            )
            conn.execute("SELECT pg_notify(%s, %s)", (ENTRIES_CHANNEL, self._log))
            return tickets

        # Frontends queue entries whether or not they hold the lease: a pooled connection.
        return self._pooled_write("queueing of entries", run)

    def results(self, since: int) -> tuple[bytes | None, list[Assignment]]:
        def run(conn: Connection) -> tuple[bytes | None, list[Assignment]]:
            # One statement, hence one snapshot: the checkpoint and the rows agree.
            cur = conn.execute(
                "SELECT NULL::bigint, NULL::bigint, NULL::boolean, NULL::bigint, data "
                "FROM sigstack_checkpoints WHERE log = %(log)s "
                "UNION ALL "
                "SELECT id, position, duplicate, batch_end, NULL::bytea FROM sigstack_pending "
                "WHERE log = %(log)s AND batch_end >= %(since)s::bigint",
                {"log": self._log, "since": since},
            )
            note: bytes | None = None
            assigned: list[Assignment] = []
            for ticket, position, duplicate, size, data in cur:
                if ticket is None:
                    note = bytes(data)
                else:
                    assigned.append(
                        Assignment(int(ticket), int(position), bool(duplicate), int(size))
                    )
            return note, assigned

        return self._storage._queue_read("read of queued entries", run)

    # -- the lease holder ------------------------------------------------------------------

    def claim(self, limit: int) -> list[QueuedEntry]:
        if limit <= 0:
            return []
        epoch = self._storage.epoch

        def run(conn: Connection) -> list[QueuedEntry]:
            cur = conn.execute(
                "UPDATE sigstack_pending SET claimed = %(epoch)s WHERE id IN ("
                "SELECT id FROM sigstack_pending WHERE log = %(log)s AND batch_end IS NULL "
                "AND (claimed IS NULL OR claimed < %(epoch)s) ORDER BY id LIMIT %(n)s "
                "FOR UPDATE SKIP LOCKED) RETURNING id, leaf, record, dedup",
                {"epoch": epoch, "log": self._log, "n": limit},
            )
            rows = sorted(cur.fetchall(), key=lambda r: int(r[0]))
            return [
                QueuedEntry(int(i), bytes(leaf), bytes(leaf if rec is None else rec), bool(dd))
                for i, leaf, rec, dd in rows
            ]

        if not self._storage.holds_lease:
            raise Conflict(f"claiming queued entries of log {self._log!r} needs the writer lease")
        return self._pooled_write("claim of queued entries", run)

    def release(self, keep: Sequence[int]) -> None:
        epoch = self._storage.epoch

        def run(conn: Connection) -> None:
            conn.execute(
                "UPDATE sigstack_pending SET claimed = NULL WHERE log = %s AND claimed = %s "
                "AND batch_end IS NULL AND NOT (id = ANY(%s::bigint[]))",
                (self._log, epoch, list(keep)),
            )

        self._pooled_write("release of queued entries", run)

    def assign(self, assignments: Sequence[Assignment], *, committed: bool) -> None:
        if not assignments:
            return
        ids = [a.ticket for a in assignments]
        positions = [a.position for a in assignments]
        duplicates = [a.duplicate for a in assignments]
        sizes = [a.size for a in assignments]

        def run(conn: Connection) -> None:
            conn.execute(
                "UPDATE sigstack_pending AS p SET position = v.pos, duplicate = v.dup, "
                "batch_end = v.size FROM unnest(%s::bigint[], %s::bigint[], %s::boolean[], "
                "%s::bigint[]) AS v(id, pos, dup, size) WHERE p.id = v.id AND p.log = %s",
                (ids, positions, duplicates, sizes, self._log),
            )
            if committed:
                conn.execute("SELECT pg_notify(%s, %s)", (CHECKPOINT_CHANNEL, self._log))

        self._storage._queue_write("assignment of queued entries", run, lease=True)

    def reset(self, size: int) -> None:
        def run(conn: Connection) -> None:
            conn.execute(
                "UPDATE sigstack_pending SET position = NULL, duplicate = NULL, "
                "batch_end = NULL, claimed = NULL WHERE log = %s AND batch_end > %s",
                (self._log, size),
            )

        self._storage._queue_write("reset of provisional assignments", run, lease=True)

    def purge(self, size: int, older_than: float) -> int:
        def run(conn: Connection) -> int:
            cur = conn.execute(
                "DELETE FROM sigstack_pending WHERE log = %s AND batch_end <= %s "
                "AND submitted < now() - make_interval(secs => %s)",
                (self._log, size, float(older_than)),
            )
            return int(cur.rowcount)

        return self._pooled_write("purge of answered entries", run)

    def _pooled_write(self, what: str, run: Callable[[Connection], T]) -> T:
        storage = self._storage
        try:
            with storage._pool.connection() as conn, conn.transaction():
                return run(conn)
        except psycopg.Error as exc:
            raise storage._error(what, exc) from None

    # -- notifications ---------------------------------------------------------------------

    def wait(self, event: str, seen: int, timeout: float) -> int:
        if event not in self._counters:
            raise InvalidRequest(f"unknown queue event {event!r}")
        self._start_listener()
        with self._cond:
            wakes = self._wakes
            self._cond.wait_for(
                lambda: self._counters[event] != seen or self._closing or self._wakes != wakes,
                timeout,
            )
            return self._counters[event]

    def wake(self) -> None:
        with self._cond:
            self._wakes += 1
            self._cond.notify_all()

    def _bump(self, *events: str) -> None:
        with self._cond:
            for event in events:
                self._counters[event] += 1
            self._cond.notify_all()

    def _start_listener(self) -> None:
        with self._cond:
            if self._listener is not None or self._closing:
                return
            self._listener = threading.Thread(
                target=self._listen, name=f"sigstack-pg-listen[{self._log}]", daemon=True
            )
            self._listener.start()

    def _listen(self) -> None:
        pause = 0.1
        channels = {ENTRIES_CHANNEL: ENTRIES_EVENT, CHECKPOINT_CHANNEL: CHECKPOINT_EVENT}
        while not self._closing:
            try:
                conn = self._storage._listen_connection()
            except Exception as exc:
                _log.warning("queue notifications for log %r unavailable: %s", self._log, exc)
                time.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            try:
                with self._cond:
                    if self._closing:
                        return
                    self._listen_conn = conn
                for channel in channels:
                    conn.execute(f"LISTEN {channel}")
                pause = 0.1
                self._bump(*channels.values())  # anything may have happened meanwhile
                while not self._closing:
                    for note in conn.notifies(timeout=0.5):
                        if note.payload == self._log and note.channel in channels:
                            self._bump(channels[note.channel])
            except psycopg.Error as exc:
                if not self._closing:
                    _log.warning(
                        "queue notifications for log %r interrupted: %s",
                        self._log,
                        self._storage._clean(_first_line(exc)),
                    )
                    time.sleep(pause)
            finally:
                with self._cond:
                    self._listen_conn = None
                conn.close()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            listener = self._listener
        if listener is not None:
            listener.join(5)
