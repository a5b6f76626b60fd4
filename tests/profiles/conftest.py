"""State store backends for tests: SQLite in a temporary folder, PostgreSQL in a throwaway schema.

`store_backend` is parametrized with ids "sqlite" and "postgresql", so a test using it runs on
both. PostgreSQL comes from `ENRICH_TEST_PG_URL` (default: the local server, database `test`);
each test gets a fresh schema `enrich_test_<random>`, dropped with CASCADE afterwards. If the
server is unreachable the PostgreSQL tests fail with instructions; they never skip or hang.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from profiles.store import StateStore, default_url

PG_URL_VARIABLE = "ENRICH_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
START_POSTGRESQL = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


@dataclass
class StoreBackend:
    """Where a test's store lives; `open` opens it and closes it again after the test."""

    name: str
    url: str
    schema: str | None
    opened: list[StateStore] = field(default_factory=list)

    def open(self, **kwargs: Any) -> StateStore:
        """Open (and migrate) the store; keyword arguments go to `StateStore.open`."""
        store = StateStore.open(self.url, schema=self.schema, **kwargs)
        self.opened.append(store)
        return store

    def close_all(self) -> None:
        """Close every store this backend opened."""
        for store in self.opened:
            store.close()


@pytest.fixture(scope="session")
def postgresql_url() -> str:
    """URL of the test PostgreSQL server, checked once per session with a 3 s timeout."""
    url = os.environ.get(PG_URL_VARIABLE, DEFAULT_PG_URL)
    masked = make_url(url).render_as_string(hide_password=True)
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    cause = None
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        cause = type(getattr(exc, "orig", None) or exc).__name__
    finally:
        engine.dispose()
    if cause is not None:
        # outside the except block, so the driver's message (host details) is not chained
        pytest.fail(
            f"PostgreSQL at {masked} is not reachable ({cause}). Start the local server with\n"
            f"    {START_POSTGRESQL}\n"
            f"or point {PG_URL_VARIABLE} at a server with a database the tests may use.",
            pytrace=False,
        )
    return url


def drop_schema(url: str, schema: str) -> None:
    """Drop a throwaway test schema and everything in it."""
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreBackend]:
    """A fresh, empty store location on each backend."""
    if request.param == "sqlite":
        backend = StoreBackend("sqlite", default_url(tmp_path / "state"), None)
        yield backend
        backend.close_all()
        return
    url = request.getfixturevalue("postgresql_url")
    backend = StoreBackend("postgresql", url, f"enrich_test_{secrets.token_hex(6)}")
    try:
        yield backend
    finally:
        backend.close_all()
        assert backend.schema is not None
        drop_schema(url, backend.schema)
