"""Moving DataFrames in and out of the store in bulk, the fastest way each backend allows.

Writes go through temporary staging tables, so that one set-based statement (INSERT ...
SELECT ... ON CONFLICT, UPDATE ... FROM) does the work instead of a statement per row, or,
when the caller has already worked out that every row is new, straight into the table
(`append`); either way:

* PostgreSQL: `COPY ... FROM STDIN` in CSV, written by Arrow in blocks of 100,000 rows;
* SQLite: `executemany` inside the open transaction (no network; this is as fast as it gets).

Reads go the other way and end in Arrow's (parallel) CSV reader: `COPY (SELECT ...) TO
STDOUT` on PostgreSQL; on SQLite a raw cursor fetching one joined line per row. Values
are typed by column: text columns come back as pandas' `str` dtype (missing values NaN),
integer columns as `int64`, boolean columns as `bool` and timestamps as `datetime64[us, UTC]`.

Timestamps travel as UTC text `YYYY-MM-DD HH:MM:SS.ffffff` both ways: it is what SQLAlchemy
stores in SQLite (so staged values compare and sort like stored ones), Arrow writes and reads
it without per-value Python, and PostgreSQL gets an explicit `+00:00` so that neither
direction depends on the session's TimeZone.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, cast

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    MetaData,
    Select,
    Table,
    Text,
    text,
)
from sqlalchemy.types import TypeEngine

from profiles.store.engine import Backend
from profiles.store.schema import Key

ColumnType = Literal["text", "bigint", "boolean", "timestamp"]

_COPY_BLOCK_ROWS = 100_000
_SQL_TYPES: dict[ColumnType, TypeEngine[Any]] = {
    "text": Key,
    "bigint": BigInteger(),
    "boolean": Boolean(),
    # SQLite: the text SQLAlchemy's DateTime stores; PostgreSQL: timestamptz
    "timestamp": DateTime(timezone=True).with_variant(Text(), "sqlite"),
}
_ARROW_TYPES: dict[ColumnType, pa.DataType] = {
    "text": pa.string(),
    "bigint": pa.int64(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us"),
}
_UTC_TEXT = "YYYY-MM-DD HH24:MI:SS.US"  # PostgreSQL to_char: SQLAlchemy's SQLite format
# SQLite reads join a row's values with the ASCII unit separator rather than a comma: JSON
# text (cached signals) holds commas and quotes, never a control character.
_SQLITE_SEPARATOR = "\x1f"


def _psycopg(conn: Connection) -> psycopg.Connection[Any]:
    return cast("psycopg.Connection[Any]", conn.connection.dbapi_connection)


def _sqlite(conn: Connection) -> sqlite3.Connection:
    return cast("sqlite3.Connection", conn.connection.dbapi_connection)


def _utc_text(values: pd.Series, backend: Backend) -> pa.Array:
    """Timezone-aware timestamps as UTC text (see the module docstring), nulls kept."""
    aware = pa.array(values.dt.tz_convert("UTC"), from_pandas=True)
    # dropping the zone keeps the UTC wall time; below a microsecond is cut, as the store does
    naive = pc.cast(aware, pa.timestamp("us"), safe=False)
    stamped = pc.cast(naive, pa.string())
    if backend == "postgresql":
        stamped = pc.binary_join_element_wise(stamped, pa.scalar("+00:00"), "")
    return stamped


def _arrow(frame: pd.DataFrame, columns: Mapping[str, ColumnType], backend: Backend) -> pa.Table:
    arrays: dict[str, pa.Array] = {}
    for name, kind in columns.items():
        if kind == "timestamp":
            arrays[name] = _utc_text(frame[name], backend)
        else:
            arrays[name] = pa.array(frame[name], type=_ARROW_TYPES[kind], from_pandas=True)
    return pa.table(arrays)


def append(
    conn: Connection,
    backend: Backend,
    table: str,
    frame: pd.DataFrame,
    columns: Mapping[str, ColumnType],
) -> None:
    """Append `frame`'s `columns` to the existing table `table` in bulk. No conflict handling:
    the caller knows the rows are new.

    PostgreSQL: COPY straight into the table. SQLite: executemany into a temporary copy of
    the columns, then one INSERT ... SELECT. A million executions of an INSERT into a table
    with constraints open a million statement journals; measured on 1M consent records the
    detour takes 5 s instead of 8.
    """
    if not len(frame):
        return
    data = _arrow(frame, columns, backend)
    if backend == "postgresql":
        _copy_in(conn, table, data)
        return
    names = ", ".join(columns)
    detour = "enrich_append"
    # CREATE ... AS SELECT keeps each column's declared type, so values keep their affinity
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE {detour} AS SELECT {names} FROM {table} WHERE 0"  # noqa: S608
    )
    _insert_many(conn, f"temp.{detour}", data)
    conn.exec_driver_sql(
        f"INSERT INTO {table} ({names}) SELECT {names} FROM temp.{detour}"  # noqa: S608
    )
    conn.exec_driver_sql(f"DROP TABLE temp.{detour}")


def _copy_in(conn: Connection, name: str, data: pa.Table) -> None:
    names = ", ".join(data.column_names)
    # all_valid quotes every value, so an empty string never reads back as NULL
    options = pa_csv.WriteOptions(include_header=False, quoting_style="all_valid")
    with (
        _psycopg(conn).cursor() as cursor,
        cursor.copy(f"COPY {name} ({names}) FROM STDIN (FORMAT csv)") as copy,
    ):
        for batch in data.to_batches(max_chunksize=_COPY_BLOCK_ROWS):
            sink = io.BytesIO()
            pa_csv.write_csv(pa.Table.from_batches([batch]), sink, write_options=options)
            copy.write(sink.getbuffer())


def _insert_many(conn: Connection, name: str, data: pa.Table) -> None:
    names = ", ".join(data.column_names)
    marks = ", ".join("?" * data.num_columns)
    values = zip(*(column.to_pylist() for column in data.columns), strict=True)
    _sqlite(conn).executemany(
        f"INSERT INTO {name} ({names}) VALUES ({marks})",  # noqa: S608  # our names
        values,
    )


class Stager:
    """Temporary staging tables of one write transaction; `drop_all` before it commits."""

    def __init__(self, conn: Connection, backend: Backend) -> None:
        self._conn = conn
        self._backend = backend
        self._tables: list[Table] = []

    def stage(self, name: str, frame: pd.DataFrame, columns: Mapping[str, ColumnType]) -> Table:
        """Create temporary table `name` holding `frame`'s `columns` and return it."""
        table = Table(
            name,
            MetaData(),
            *(Column(c, _SQL_TYPES[kind]) for c, kind in columns.items()),
            prefixes=["TEMPORARY"],
            postgresql_on_commit="DROP",
        )
        table.create(self._conn)
        self._tables.append(table)
        if len(frame):
            data = _arrow(frame, columns, self._backend)
            if self._backend == "postgresql":
                _copy_in(self._conn, name, data)
                # temporary tables are never auto-analysed; without statistics the planner
                # guesses their size and can pick a seq scan of a million identifiers
                self._conn.execute(text(f"ANALYZE {name}"))
            else:
                _insert_many(self._conn, f"temp.{name}", data)
        return table

    def drop_all(self) -> None:
        """Drop the staging tables (PostgreSQL drops them at commit anyway)."""
        if self._backend == "sqlite":
            for table in self._tables:
                self._conn.execute(text(f"DROP TABLE temp.{table.name}"))
        self._tables.clear()


@contextmanager
def staging(conn: Connection, backend: Backend) -> Iterator[Stager]:
    """A Stager whose tables are dropped when the block ends without error."""
    stager = Stager(conn, backend)
    yield stager
    stager.drop_all()


def read_frame(
    conn: Connection, backend: Backend, query: Select[Any], columns: Mapping[str, ColumnType]
) -> pd.DataFrame:
    """Run `query` (its result columns named and ordered as `columns`) into a DataFrame."""
    sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    if backend == "postgresql":
        text_data = _copy_out(conn, sql, columns)
        quote: str | bool = '"'
        delimiter = ","
    else:
        text_data = _sqlite_lines(conn, sql, columns)
        quote = False
        delimiter = _SQLITE_SEPARATOR
    table = _parse_csv(text_data, columns, quote, delimiter)
    frame: pd.DataFrame = table.to_pandas()
    for name, kind in columns.items():
        if kind == "text":
            # pandas' str dtype whether Arrow handed back string or large_string
            frame[name] = frame[name].astype("str")
        elif kind == "timestamp":
            frame[name] = frame[name].astype("datetime64[us]").dt.tz_localize("UTC")
    return frame


def _copy_out(conn: Connection, sql: str, columns: Mapping[str, ColumnType]) -> bytes:
    outer = ", ".join(
        f"to_char(q.{name} AT TIME ZONE 'UTC', '{_UTC_TEXT}')" if kind == "timestamp" else name
        for name, kind in columns.items()
    )
    copy_sql = f"COPY (SELECT {outer} FROM ({sql}) AS q) TO STDOUT (FORMAT csv)"  # noqa: S608
    sink = io.BytesIO()
    with _psycopg(conn).cursor() as cursor, cursor.copy(copy_sql) as copy:
        for block in copy:
            sink.write(block)
    return sink.getvalue()


def _sqlite_lines(conn: Connection, sql: str, columns: Mapping[str, ColumnType]) -> bytes:
    """The rows of `sql` as delimited lines (see `_SQLITE_SEPARATOR`), joined by SQLite itself.

    One string per row is several times faster to fetch than a tuple of four, and Arrow
    parses the lines in parallel. No quoting is needed: everything the store writes is a
    token, a hex digest, an integer, a flag, a timestamp or canonical JSON of signals (no
    control characters or line breaks; see `checks` and `signals`); a value that broke this
    would make the parse fail loudly, not shift columns silently.
    """
    # printf's %s writes a value as CAST(... AS TEXT) does and NULL as '': one call per row
    # instead of a concatenation per column (half the time in SQLite)
    template = _SQLITE_SEPARATOR.join("%s" for _ in columns)
    values = ", ".join(f"q.{name}" for name in columns)
    raw = _sqlite(conn)
    # the lines as bytes, as SQLite holds them: no decoding into str and encoding back
    factory, raw.text_factory = raw.text_factory, bytes
    try:
        query = f"SELECT printf('{template}', {values}) FROM ({sql}) AS q"  # noqa: S608
        rows = raw.execute(query).fetchall()
    finally:
        raw.text_factory = factory
    return b"\n".join([row[0] for row in rows])


def _parse_csv(
    data: bytes, columns: Mapping[str, ColumnType], quote: str | bool, delimiter: str
) -> pa.Table:
    if not data:
        return pa.table({n: pa.array([], type=_ARROW_TYPES[k]) for n, k in columns.items()})
    return pa_csv.read_csv(
        io.BytesIO(data),
        read_options=pa_csv.ReadOptions(column_names=list(columns)),
        parse_options=pa_csv.ParseOptions(quote_char=quote, delimiter=delimiter),
        convert_options=pa_csv.ConvertOptions(
            column_types={n: _ARROW_TYPES[k] for n, k in columns.items()},
            # NULL is an empty unquoted field (PostgreSQL writes '' as ""; the store never
            # writes an empty string)
            strings_can_be_null=True,
            null_values=[""],
            quoted_strings_can_be_null=False,
            # PostgreSQL writes booleans as t/f, SQLite stores 1/0
            true_values=["t", "1"],
            false_values=["f", "0"],
        ),
    )
