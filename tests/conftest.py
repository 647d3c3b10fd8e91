"""Fixtures shared by every test directory: a real PostgreSQL server, when there is one.

PostgreSQL tests talk to the server named by ``SIGSTACK_TEST_POSTGRES_DSN``
(default ``postgresql://postgres@127.0.0.1:5432/test``). Without the ``psycopg``
driver or a reachable server they are SKIPPED with a message saying how to enable
them; with ``SIGSTACK_TEST_REQUIRE_POSTGRES=1`` (set it in CI, which has the
server) they FAIL instead, so a broken CI database cannot pass silently.

Each test gets its own log (a unique ``log_name``), deleted afterwards, so tests
never see each other's rows and can run against a shared database.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

POSTGRES_DSN_ENV = "SIGSTACK_TEST_POSTGRES_DSN"
REQUIRE_POSTGRES_ENV = "SIGSTACK_TEST_REQUIRE_POSTGRES"
DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
_TABLES = (
    "sigstack_objects",
    "sigstack_checkpoints",
    "sigstack_entry_index",
    "sigstack_pending",
    "sigstack_leases",
)


def _unavailable(reason: str) -> None:
    message = (
        f"PostgreSQL tests skipped: {reason}. To run them, install the driver "
        f"(pip install -e '.[test]'), start PostgreSQL and set {POSTGRES_DSN_ENV} "
        f"(default {DEFAULT_POSTGRES_DSN})"
    )
    if os.environ.get(REQUIRE_POSTGRES_ENV):
        pytest.fail(f"{message}; {REQUIRE_POSTGRES_ENV} is set, so this is a failure")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The DSN of a reachable PostgreSQL server (skips the test when there is none)."""
    dsn = os.environ.get(POSTGRES_DSN_ENV, DEFAULT_POSTGRES_DSN)
    if importlib.util.find_spec("psycopg") is None:
        _unavailable("the psycopg driver is not installed")
    import psycopg

    from sigstack.log.postgres import redact_dsn

    try:
        psycopg.connect(dsn, connect_timeout=5).close()
    except psycopg.Error as exc:
        _unavailable(f"no PostgreSQL server at {redact_dsn(dsn)} ({str(exc).strip()[:200]})")
    return dsn


def drop_postgres_log(dsn: str, log_name: str) -> None:
    """Delete every row of ``log_name`` (test cleanup; works even if a test leaked a lease)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('sigstack_objects') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return
        for table in _TABLES:
            conn.execute(f"DELETE FROM {table} WHERE log = %s", (log_name,))  # noqa: S608


@pytest.fixture
def postgres_log_name(postgres_dsn: str) -> Iterator[str]:
    """A fresh, unique log name, whose rows are deleted after the test."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    yield name
    drop_postgres_log(postgres_dsn, name)


@pytest.fixture
def postgres_storage(postgres_dsn: str, postgres_log_name: str) -> Iterator[Callable[..., Any]]:
    """``make(**kwargs)``: a new ``PostgresStorage`` object on this test's log (closed after)."""
    from sigstack.log.postgres import PostgresStorage

    made: list[PostgresStorage] = []

    def make(**kwargs: Any) -> PostgresStorage:
        storage = PostgresStorage(postgres_dsn, postgres_log_name, **kwargs)
        made.append(storage)
        return storage

    yield make
    for storage in made:
        storage.close()
