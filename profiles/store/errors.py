"""StoreError and the translation of SQLAlchemy and driver errors into it.

Database errors do not cross the package boundary: their text can quote SQL parameters
(pseudonyms are personal data) or connection strings (passwords). `translating` re-raises
them as `StoreError` keeping only safe fields: the driver's exception class, the SQLSTATE
or SQLite error name, and a short reason phrase picked from a fixed list. A server that cannot
be reached, or that went away in the middle of a run, is said to be unreachable in so many
words: that is what an operator can act on.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy import exc as sa_exc

from profiles.errors import EnrichError

# SQLSTATE classes where trying again later can help: connection exception, transaction
# rollback (serialization failure, deadlock), insufficient resources, operator intervention
# (shutdown, cancel), system error.
_RETRYABLE_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_RETRYABLE_SQLSTATES = frozenset({"55P03"})  # lock_not_available: lock_timeout expired
_RETRYABLE_SQLITE_PREFIXES = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_FULL")

# Driver messages are never copied; a known fragment maps to a fixed phrase instead.
_REASONS = (
    ("connection refused", "connection refused"),
    ("timeout expired", "timed out"),
    ("timed out", "timed out"),
    ("password authentication failed", "authentication failed"),
    ("no password supplied", "authentication failed (no password)"),
    ("no pg_hba.conf entry", "rejected by pg_hba.conf"),
    ("could not translate host name", "unknown host"),
    ("name or service not known", "unknown host"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network unreachable"),
    ("server closed the connection", "server closed the connection"),
    ("database is locked", "database is locked by another writer"),
    ("unable to open database file", "cannot open the database file"),
    ("readonly database", "database file is read-only"),
    ("file is not a database", "file is not a SQLite database"),
    ("does not exist", "database, role or object does not exist"),
    ("permission denied", "permission denied"),
)
# Reasons, and SQLSTATEs (connection exception; admin or crash shutdown, cannot connect now),
# that mean the server could not be reached or went away: the store is unreachable.
_UNREACHABLE_REASONS = frozenset(
    {
        "connection refused",
        "timed out",
        "unknown host",
        "no route to host",
        "network unreachable",
        "server closed the connection",
    }
)
_UNREACHABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


class StoreError(EnrichError):
    """The state store cannot be opened, read or written.

    `retryable` is True when trying again later may succeed (server unreachable, lock held
    by another writer, serialization failure). Messages name the store (password masked)
    and the driver's error class, never a stored value.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        unreachable: bool = False,
        error_class: str | None = None,
        sqlstate: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.unreachable = unreachable
        """True when the database server could not be reached or went away (retryable)."""
        self.error_class = error_class
        """Class name of the translated driver or SQLAlchemy exception, if any."""
        self.sqlstate = sqlstate
        """PostgreSQL SQLSTATE or SQLite error name, if the driver reported one."""


def _origin(exc: BaseException) -> BaseException:
    """The driver exception behind a SQLAlchemy DBAPIError, else the exception itself."""
    if isinstance(exc, sa_exc.DBAPIError) and isinstance(exc.orig, BaseException):
        return exc.orig
    return exc


def _code(origin: BaseException) -> str | None:
    sqlstate = getattr(origin, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return sqlstate
    name = getattr(origin, "sqlite_errorname", None)
    return name if isinstance(name, str) and name else None


def _retryable(exc: BaseException, origin: BaseException, code: str | None) -> bool:
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (sa_exc.DisconnectionError, sa_exc.TimeoutError)):
        return True
    if code is not None:
        if code.startswith("SQLITE_"):
            return code.startswith(_RETRYABLE_SQLITE_PREFIXES)
        return code[:2] in _RETRYABLE_SQLSTATE_CLASSES or code in _RETRYABLE_SQLSTATES
    # no code: psycopg reports failed connection attempts and lost connections this way
    return isinstance(origin, (psycopg.OperationalError, psycopg.InterfaceError))


def _unreachable(
    exc: BaseException, origin: BaseException, code: str | None, reason: str | None
) -> bool:
    if isinstance(exc, sa_exc.DisconnectionError):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if code is not None:
        return code.startswith("08") or code in _UNREACHABLE_SQLSTATES
    return isinstance(origin, psycopg.OperationalError) and reason in _UNREACHABLE_REASONS


def _reason(origin: BaseException) -> str | None:
    text = str(origin).lower()
    for fragment, phrase in _REASONS:
        if fragment in text:
            return phrase
    return None


def store_error(exc: BaseException, *, action: str, where: str) -> StoreError:
    """A StoreError describing `exc` by safe fields only."""
    origin = _origin(exc)
    code = _code(origin)
    name = type(origin).__name__
    details = name if code is None else f"{name}, {code}"
    reason = _reason(origin)
    unreachable = _unreachable(exc, origin, code, reason)
    state = " is unreachable" if unreachable else ""
    message = f"state store {where}{state}: {action} failed"
    if reason is not None:
        message += f": {reason}"
    return StoreError(
        f"{message} ({details})",
        retryable=_retryable(exc, origin, code),
        unreachable=unreachable,
        error_class=name,
        sqlstate=code,
    )


@contextmanager
def translating(action: str, where: str) -> Iterator[None]:
    """Re-raise database errors raised inside the block as StoreError, `from None`."""
    try:
        yield
    except StoreError:
        raise
    except (sa_exc.SQLAlchemyError, sqlite3.Error, psycopg.Error) as exc:
        raise store_error(exc, action=action, where=where) from None
