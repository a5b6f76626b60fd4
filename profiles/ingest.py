"""Read source files (CSV or Parquet) in chunks, mapped to canonical fields, with line numbers.

A CSV record that cannot be read as a row (wrong number of fields, bytes that are not valid in
the declared encoding) is not an error: it comes back in `SourceChunk.unparseable` with its
line number so the flow can quarantine it as ROW_UNPARSEABLE. Only a file that cannot be read
at all (missing, no header, mapped columns absent) raises SourceError.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from profiles.config import SourceConfig
from profiles.errors import SourceError

LINE = "line"
"""Column holding the 1-based line (CSV) or row (Parquet) number of each record."""

_UNDECODABLE = re.compile("[\udc80-\udcff]")
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class SourceChunk:
    """One chunk of a source.

    `frame`: column `line` (int64) and one text column per mapped canonical field, named by the
    field; missing values are "". `unparseable`: columns `line`, `detail` (safe to log: no values)
    and `raw` (the record's raw fields as JSON: personal data, to be sealed, never logged).
    """

    source: str
    frame: pd.DataFrame
    unparseable: pd.DataFrame

    @property
    def rows_in(self) -> int:
        """Data records in this chunk, readable or not."""
        return len(self.frame) + len(self.unparseable)


def _empty_unparseable() -> pd.DataFrame:
    return pd.DataFrame(
        {LINE: pd.Series([], dtype="int64"), "detail": pd.Series([], dtype=str), "raw": []}
    )


def _text_encoding(encoding: str) -> str:
    """utf-8 is read as utf-8-sig so a byte-order mark never ends up in the first header."""
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def _mapped_indices(source: SourceConfig, header: list[str]) -> dict[str, int]:
    positions: dict[str, int] = {}
    seen: dict[str, list[int]] = {}
    for i, name in enumerate(header):
        positions.setdefault(name.strip(), i)
        seen.setdefault(name.strip(), []).append(i + 1)
    repeated = [
        f"{col!r} (columns {', '.join(map(str, seen[col]))})"
        for col in dict.fromkeys(source.columns.values())
        if len(seen.get(col, [])) > 1
    ]
    if repeated:
        raise SourceError(
            f"source {source.name}: {source.path}: header line 1: mapped column(s) "
            f"{', '.join(repeated)} appear more than once; which one is meant is ambiguous"
        )
    missing = [col for col in source.columns.values() if col not in positions]
    if missing:
        found = ", ".join(repr(h) for h in header) or "(none)"
        raise SourceError(
            f"source {source.name}: {source.path}: mapped column(s) "
            f"{', '.join(repr(m) for m in missing)} not in the header; found {found}"
        )
    return {str(field): positions[col] for field, col in source.columns.items()}


def read_source(source: SourceConfig, chunk_rows: int) -> Iterator[SourceChunk]:
    """Yield the source's records in chunks of at most `chunk_rows` readable rows."""
    if not source.path.is_file():
        raise SourceError(f"source {source.name}: file {source.path} not found")
    if source.format == "parquet":
        yield from _read_parquet(source, chunk_rows)
    else:
        yield from _read_csv(source, chunk_rows)


def count_records(source: SourceConfig) -> int:
    """Cheap upper bound of the data records in a source (for progress reporting)."""
    if source.format == "parquet":
        return int(pq.ParquetFile(source.path).metadata.num_rows)
    newlines = 0
    last = b"\n"
    with source.path.open("rb") as fh:
        while block := fh.read(1 << 22):
            newlines += block.count(b"\n")
            last = block[-1:]
    lines = newlines + (0 if last == b"\n" else 1)
    return max(lines - 1, 0)


class _ChunkBuilder:
    """Accumulates readable records (mapped columns only) and unparseable ones for one chunk."""

    def __init__(self, source: str, mapped: dict[str, int]) -> None:
        self.source = source
        self.mapped = mapped
        self.rows: list[list[str]] = []
        self.lines: list[int] = []
        self.bad_lines: list[int] = []
        self.bad_details: list[str] = []
        self.bad_raw: list[str] = []

    def add_bad(self, line: int, detail: str, record: list[str]) -> None:
        self.bad_lines.append(line)
        self.bad_details.append(detail)
        self.bad_raw.append(json.dumps(record))

    def __bool__(self) -> bool:
        return bool(self.rows or self.bad_lines)

    def build(self) -> SourceChunk:
        columns = list(zip(*self.rows, strict=True)) if self.rows else []
        data: dict[str, object] = {LINE: pd.Series(self.lines, dtype="int64")}
        for name, index in self.mapped.items():
            data[name] = pd.Series(columns[index] if columns else [], dtype=str)
        unparseable = _empty_unparseable()
        if self.bad_lines:
            unparseable = pd.DataFrame(
                {
                    LINE: pd.Series(self.bad_lines, dtype="int64"),
                    "detail": pd.Series(self.bad_details, dtype=str),
                    "raw": self.bad_raw,
                }
            )
        return SourceChunk(source=self.source, frame=pd.DataFrame(data), unparseable=unparseable)


def _open_csv(source: SourceConfig) -> tuple[TextIO, Any, dict[str, int], int]:
    """Open a CSV source; return the file, a csv reader past the header, mapping and width."""
    fh = source.path.open(
        encoding=_text_encoding(source.encoding), errors="surrogateescape", newline=""
    )
    reader = csv.reader(fh, delimiter=source.delimiter, strict=False)
    try:
        header = next(reader)
    except StopIteration:
        fh.close()
        raise SourceError(f"source {source.name}: {source.path} is empty (no header row)") from None
    except csv.Error as exc:
        fh.close()
        raise SourceError(f"source {source.name}: {source.path}: header: {exc}") from None
    if _UNDECODABLE.search("".join(header)):
        fh.close()
        raise SourceError(
            f"source {source.name}: {source.path}: header is not valid {source.encoding}; "
            "check the source's `encoding`"
        )
    try:
        mapped = _mapped_indices(source, header)
    except SourceError:
        fh.close()
        raise
    return fh, reader, mapped, len(header)


def _read_csv(source: SourceConfig, chunk_rows: int) -> Iterator[SourceChunk]:
    fh, reader, mapped, width = _open_csv(source)
    with fh:
        chunk = _ChunkBuilder(source.name, mapped)
        previous_end = reader.line_num
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                # csv.Error carries no field values, only the parser's complaint
                chunk.add_bad(previous_end + 1, f"CSV syntax: {exc}", [])
                previous_end = reader.line_num
                continue
            start, previous_end = previous_end + 1, reader.line_num
            if not record:
                continue  # a blank line is not a record
            if len(record) != width:
                chunk.add_bad(start, f"expected {width} fields, found {len(record)}", record)
                continue
            joined = "\x1f".join(record)
            if not joined.isascii() and _UNDECODABLE.search(joined):
                chunk.add_bad(start, f"bytes not valid in encoding {source.encoding}", record)
                continue
            chunk.rows.append(record)
            chunk.lines.append(start)
            if len(chunk.rows) >= chunk_rows:
                yield chunk.build()
                chunk = _ChunkBuilder(source.name, mapped)
        if chunk:
            yield chunk.build()


def _read_parquet(source: SourceConfig, chunk_rows: int) -> Iterator[SourceChunk]:
    try:
        parquet = pq.ParquetFile(source.path)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(
            f"source {source.name}: {source.path} is not a readable Parquet file "
            f"({type(exc).__name__})"
        ) from None
    mapped = _mapped_indices(source, list(parquet.schema_arrow.names))
    by_column = {field: parquet.schema_arrow.names[i] for field, i in mapped.items()}
    first_row = 1
    for batch in parquet.iter_batches(
        batch_size=chunk_rows, columns=sorted(set(by_column.values()))
    ):
        data: dict[str, object] = {
            LINE: pd.Series(range(first_row, first_row + batch.num_rows), dtype="int64")
        }
        for field, column in by_column.items():
            values = pc.fill_null(pc.cast(batch.column(column), pa.string()), "")
            data[field] = pd.Series(values.to_pylist(), dtype=str)
        first_row += batch.num_rows
        yield SourceChunk(
            source=source.name, frame=pd.DataFrame(data), unparseable=_empty_unparseable()
        )
