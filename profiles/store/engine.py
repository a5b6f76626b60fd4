"""Connecting to the state store's database: URLs, engines and write transactions.

Two backends: SQLite (a file, the default) and PostgreSQL through psycopg 3. Every write
transaction holds the store's single writer lock for its whole life, so migrations, run
ledger updates and identity saves never interleave, across processes too:

* SQLite: `BEGIN IMMEDIATE` (the sqlite3 driver's own BEGIN handling is switched off, as the
  SQLAlchemy docs recommend, so reads get a real `BEGIN` and DDL is transactional);
* PostgreSQL: `pg_advisory_xact_lock` on a key derived from the schema name.

Waiting for the lock, like connecting, is bounded by the store's `connect_timeout`
(SQLite busy timeout; PostgreSQL `lock_timeout`), so a stuck writer makes others fail with a
retryable StoreError instead of hanging.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, Engine, create_engine, event, exc, func, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from profiles.files import private_folder
from profiles.store.errors import StoreError

Backend = Literal["sqlite", "postgresql"]

SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_WRITE_OPTION = "enrich_write"
SQLITE_PAGE_SIZE = 16384
"""Page size of new SQLite stores (an existing file keeps the one it was created with)."""


@dataclass(frozen=True)
class Target:
    """A parsed state store URL: what to connect to and how to name it in messages."""

    url: URL
    backend: Backend
    schema: str | None

    @property
    def masked(self) -> str:
        """The URL with any password replaced by `***`."""
        return self.url.render_as_string(hide_password=True)

    @property
    def where(self) -> str:
        """Short name for messages: `host:port/db` for PostgreSQL, the file for SQLite."""
        if self.backend == "postgresql":
            where = f"{self.url.host or 'localhost'}:{self.url.port or 5432}/{self.url.database}"
            return where if self.schema is None else f"{where} (schema {self.schema})"
        return self.url.database or ":memory:"

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database file, or None for an in-memory database or PostgreSQL."""
        if self.backend != "sqlite" or self.url.database in (None, "", ":memory:"):
            return None
        return Path(self.url.database)


def parse_url(url: str, schema: str | None) -> Target:
    """Parse and check a state store URL; `schema` is kept for PostgreSQL only."""
    try:
        parsed = make_url(url)
    except (exc.ArgumentError, ValueError):
        # the text itself may hold a password, so it is not repeated
        raise StoreError("state store URL is not a valid SQLAlchemy URL") from None
    backend = parsed.get_backend_name()
    driver = parsed.get_driver_name() if "+" in parsed.drivername else None
    if backend == "sqlite":
        if driver not in (None, "pysqlite"):
            raise StoreError(
                f"state store: SQLite driver {driver!r} is not supported (use sqlite:///)"
            )
        return Target(parsed, "sqlite", None)
    if backend == "postgresql":
        if driver not in (None, "psycopg"):
            raise StoreError(
                f"state store: PostgreSQL driver {driver!r} is not supported "
                "(use postgresql+psycopg://)"
            )
        if schema is not None and not SCHEMA_NAME.match(schema):
            raise StoreError("state store: schema must be a lower-case SQL identifier")
        return Target(parsed.set(drivername="postgresql+psycopg"), "postgresql", schema)
    raise StoreError(f"state store: backend {backend!r} is not supported (sqlite or postgresql)")


def lock_key(target: Target) -> int:
    """The PostgreSQL advisory lock key of a store: one per schema, a signed 64-bit int."""
    digest = hashlib.blake2b(f"enrich-state/{target.schema or ''}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def _prepare_sqlite_file(path: Path) -> None:
    """Create a missing parent directory (mode 0700) and a missing database file (mode 0600):
    the store maps pseudonyms to profiles and holds consents, for its owner's eyes only.

    SQLite gives the -wal and -shm files it creates beside the database the database file's
    mode, so they are private too. An existing file keeps the mode it has.
    """
    private_folder(path.parent)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)


@dataclass(frozen=True)
class Database:
    """An engine plus what its transactions need: the parsed target and the timeout."""

    engine: Engine
    target: Target
    connect_timeout: float

    @classmethod
    def connect(cls, target: Target, connect_timeout: float) -> Database:
        """Build the engine for `target`; nothing is connected until the first transaction."""
        if target.backend == "sqlite":
            engine = _sqlite_engine(target, connect_timeout)
        else:
            engine = _postgresql_engine(target, connect_timeout)
        return cls(engine, target, connect_timeout)

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A write transaction holding the store's writer lock; commits unless the block raises."""
        with self.engine.connect() as conn:
            conn.execution_options(**{_WRITE_OPTION: True})
            with conn.begin():
                if self.target.backend == "postgresql":
                    timeout_ms = max(1, int(self.connect_timeout * 1000))
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {timeout_ms}")
                    conn.execute(select(func.pg_advisory_xact_lock(lock_key(self.target))))
                yield conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read transaction: one snapshot on SQLite, read committed on PostgreSQL."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _postgresql_engine(target: Target, connect_timeout: float) -> Engine:
    args: dict[str, Any] = {
        # libpq takes whole seconds and treats anything below 2 as 2
        "connect_timeout": max(2, math.ceil(connect_timeout)),
        "application_name": "enrich-state",
    }
    if target.schema is not None:
        # a startup parameter, so it holds for every pooled connection and for raw SQL (COPY)
        args["options"] = f"-c search_path={target.schema}"
    # hide_parameters: SQLAlchemy's own messages and logs must not show pseudonyms either
    return create_engine(target.url, connect_args=args, pool_pre_ping=True, hide_parameters=True)


def _sqlite_engine(target: Target, connect_timeout: float) -> Engine:
    path = target.sqlite_path
    args: dict[str, Any] = {"timeout": connect_timeout, "check_same_thread": False}
    if path is None:
        # one shared connection, or every connection would see its own empty database
        engine = create_engine(
            "sqlite://", connect_args=args, poolclass=StaticPool, hide_parameters=True
        )
    else:
        _prepare_sqlite_file(path)
        engine = create_engine(target.url, connect_args=args, hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy, not the sqlite3 driver, emits BEGIN (see the module docstring)
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Takes effect only while the file is empty (a new store). Measured on a night of a
        # million rows, bulk saves spend ~15% less time in SQLite than with 4 KiB pages.
        cursor.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")
        if path is not None:
            _use_wal(cursor, connect_timeout)
        cursor.execute("PRAGMA temp_store = MEMORY")  # staging tables of a save
        cursor.execute("PRAGMA cache_size = -65536")  # 64 MiB: a million-row upsert fits
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE_OPTION)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _use_wal(cursor: sqlite3.Cursor, timeout: float) -> None:
    """Switch the database to write-ahead logging, so readers keep reading during a save.

    The switch needs an exclusive lock, and two connections switching a new file at once can
    deadlock; SQLite then fails one at once instead of calling the busy handler. The mode is
    persistent, so retrying until either connection has switched it is enough.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def ensure_schema(conn: Connection, target: Target) -> None:
    """Create the PostgreSQL schema of the store if it is missing (inside a write transaction)."""
    if target.backend != "postgresql" or target.schema is None:
        return
    exists = conn.execute(
        text("SELECT 1 FROM pg_namespace WHERE nspname = :name"), {"name": target.schema}
    ).first()
    if exists is None:
        # the name matched SCHEMA_NAME, so it needs no quoting
        conn.execute(text(f"CREATE SCHEMA {target.schema}"))
