"""Read source files (CSV or Parquet) in chunks, mapped to canonical fields, with line numbers.

A CSV record that cannot be read as a row (wrong number of fields, bytes that are not valid in
the declared encoding, a NUL byte, a quoted field that is never closed) is not an error: it
comes back in `SourceChunk.unparseable` with its line number and a `detail` that names the
problem, never a value, so the flow can quarantine it as ROW_UNPARSEABLE; the records around it
are read as usual. Only a file that cannot be read at all (missing, empty, an encoding that
cannot read it, a header that is undecodable, holds a NUL byte or never closes a quote, mapped
columns absent or repeated; a Parquet file that is damaged) raises SourceError, whose message
names the source, the file and what is wrong, and never a field's value.

`read_source` reads a source from start to end. `plan_chunks` cuts it into `ChunkSpec`s at
record boundaries and `read_chunk` reads one of them on its own (in any order, in any
process); the chunks of a plan, concatenated, hold exactly what `read_source` yields. Both read
CSV records with one reader, `_csv_chunks`.
"""

from __future__ import annotations

import bisect
import codecs
import contextlib
import csv
import io
import json
import mmap
import operator
import re
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, compress, islice, repeat, tee
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from profiles.config import SourceConfig
from profiles.errors import SourceError
from profiles.types import TEXT_DTYPE

LINE = "line"
"""Column holding the 1-based line (CSV) or row (Parquet) number of each record."""

_UNDECODABLE = re.compile("[\udc00-\udcff]")
"""A character standing for an undecodable byte (`_decode_errors`); decoded text has none."""
_ESCAPE_ALL = "profiles.ingest.escape_all"
"""Decode error handler: each undecodable byte b becomes the lone surrogate U+DC00 + b."""
_NUL = "\x00"
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def _escape_all(exc: UnicodeError) -> tuple[str, int]:
    """`surrogateescape` for any byte: that one escapes bytes >= 0x80 only and raises for the
    rest, which UTF-16 and UTF-32 report (a file cut short, a lone surrogate)."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "".join(chr(0xDC00 + b) for b in exc.object[exc.start : exc.end]), exc.end


codecs.register_error(_ESCAPE_ALL, _escape_all)

_BATCH = 256
"""Records taken from the csv module per call. The per-record checks run per batch, in C; and a
batch has fewer lists than it takes to set off a garbage collection (700 new objects), which
would walk the chunk's growing columns (4096 records per batch made reading 3x slower)."""
_BLOCK_MIN = 1 << 16
_BLOCK_MAX = 1 << 23
"""Bytes `plan_chunks` scans at once: from the minimum after a resync, doubling up to the max."""
_RESYNC_LINES = 1024
"""Lines at least that `plan_chunks` reads with the csv module where quotes are ambiguous, so a
file with ambiguous quotes on many lines is read in stretches, not one scan per quote."""
_LF, _CR, _QUOTE = ord("\n"), ord("\r"), ord('"')
_LINE_BYTES = re.compile(rb"[^\r\n]*(?:\r\n?|\n)|[^\r\n]+")
"""One line as text files opened with newline="" split them: ends at CRLF, LF or a lone CR."""


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


@dataclass(frozen=True)
class ChunkSpec:
    """Where one chunk of a source lies, for `read_chunk`: small and picklable, no data.

    CSV: `start` and `end` are byte offsets of the chunk's first record and just past its last
    (whole records; the header belongs to no chunk) and `first_line` is the 1-based number of
    the line at `start`, so line numbers are those `read_source` gives. `start == 0` stands for
    "the records after the header, read on in the header's own decoded stream" (to `end`, the
    file size): the one chunk of a file whose byte offsets cannot be trusted. Parquet: `start`
    and `end` are 0-based row offsets and `first_line` is `start + 1`.
    """

    source: str
    index: int
    start: int
    end: int
    first_line: int


def _empty_unparseable() -> pd.DataFrame:
    return pd.DataFrame(
        {LINE: pd.Series([], dtype="int64"), "detail": pd.Series([], dtype=str), "raw": []}
    )


def _text_encoding(encoding: str) -> str:
    """utf-8 is read as utf-8-sig so a byte-order mark never ends up in the first header."""
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def _decode_errors(encoding: str) -> str:
    """The decode error handler for `encoding`: bytes it cannot decode become lone surrogates.

    `surrogateescape` (run in C, fast on a file full of bad bytes) where every byte the codec
    can fail on is >= 0x80, which it escapes: UTF-8, ASCII, Latin-1 and code pages that decode
    ASCII as ASCII. `_escape_all` for the rest (UTF-16, UTF-32, the CJK codecs).
    """
    info = codecs.lookup(encoding)
    if info.name in ("utf-8", "utf-8-sig", "ascii", "iso8859-1"):
        return "surrogateescape"
    table = _charmap_table(info)
    ascii_safe = table is not None and table[:128] == "".join(map(chr, range(128)))
    return "surrogateescape" if ascii_safe else _ESCAPE_ALL


def _charmap_table(info: codecs.CodecInfo) -> str | None:
    """A single-byte code page's 256-entry decoding table (stdlib charmap codecs), else None."""
    module = sys.modules.get(getattr(info.incrementaldecoder, "__module__", ""))
    table = getattr(module, "decoding_table", None)
    return table if isinstance(table, str) and len(table) == 256 else None


def _mapped_indices(source: SourceConfig, header: list[str], line: int = 1) -> dict[str, int]:
    """Position of each mapped field's column in `header` (starting at `line`), or SourceError."""
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
            f"source {source.name}: {source.path}: header line {line}: mapped column(s) "
            f"{', '.join(repeated)} appear more than once; which one is meant is ambiguous"
        )
    missing = [col for col in source.columns.values() if col not in positions]
    if missing:
        raise SourceError(
            f"source {source.name}: {source.path}: mapped column(s) "
            f"{', '.join(repr(m) for m in missing)} not in the header; found {_listing(header)}"
        )
    return {str(field): positions[col] for field, col in source.columns.items()}


_RECORD_LIKE = re.compile(r"@|\d{5}")
"""A header name with an @-sign or five digits in a row may be a record's email, phone or id."""
_LISTED_NAMES = 30
_LISTED_CHARS = 40


def _listing(header: list[str]) -> str:
    """A header's names for an error message, at most `_LISTED_NAMES` of `_LISTED_CHARS`.

    A file without a header has its first record read as the header: if any name may be a
    value (`_RECORD_LIKE`), none is shown, only how many there are.
    """
    if not header:
        return "(none)"
    if any(map(_RECORD_LIKE.search, header)):
        return (
            f"{len(header)} name(s) that look like a record's values (not shown): "
            "does the file have a header row?"
        )
    names = [
        repr(h if len(h) <= _LISTED_CHARS else f"{h[:_LISTED_CHARS]}...")
        for h in header[:_LISTED_NAMES]
    ]
    more = f", ... ({len(header)} in all)" if len(header) > _LISTED_NAMES else ""
    return ", ".join(names) + more


def _require_file(source: SourceConfig) -> None:
    if not source.path.is_file():
        raise SourceError(f"source {source.name}: file {source.path} not found")


def read_source(source: SourceConfig, chunk_rows: int) -> Iterator[SourceChunk]:
    """Yield the source's records in chunks of at most `chunk_rows` readable rows."""
    _require_file(source)
    if source.format == "parquet":
        yield from _read_parquet(source, chunk_rows)
        return
    fh, reader, mapped, width = _open_csv(source)
    with fh:
        yield from _csv_chunks(
            fh, source, mapped, width, first_line=reader.line_num + 1, chunk_rows=chunk_rows
        )


def plan_chunks(source: SourceConfig, chunk_rows: int) -> list[ChunkSpec]:
    """Cut a source into chunks of about `chunk_rows` records, at record boundaries.

    Raises the SourceError `read_source` would for a missing file or a bad header. A source
    with no records has no chunks, except a file read in one stream (below), which always has
    one. Parquet chunks are row ranges of `chunk_rows` rows.

    CSV is cut by a scan of its bytes, without parsing it; each cut is a line start that the
    sequential reader (`csv.reader(strict=False)`) also starts a record at. A quote opens a
    quoted field only at the start of a field; inside one, `""` is a quote and a line break
    continues the record. The scan counts quotes: a line break is inside a quoted field when
    an odd number of quotes precede it since the last record start known for certain. That
    count is right as long as every quote it takes to open a field follows a delimiter, a line
    break or a quote (`""`); the scan stops at the first one that does not (a stray quote in
    an unquoted field, `"a"b"`), reads from the last certain record start with the csv module
    itself to a record end past it (and on for at least `_RESYNC_LINES` lines) and resumes
    counting there. A record longer than `csv.field_size_limit()` bytes, where the csv module
    may cut a field short, is read with the csv module the same way. Line breaks are CRLF, LF
    or a lone CR, as text opened with newline="" splits them; blank lines belong to the chunk
    they are in and count as lines, not records; a UTF-8 byte-order mark and blank lines
    before the header are part of the header's lines, which belong to no chunk.

    Byte offsets are used only where the encoding decodes the quote, the delimiter, CR and LF
    from single bytes that mean nothing else and decodes any run of whole lines as the whole
    file does (UTF-8, ASCII, Latin-1 and the single-byte code pages such as cp1252, with an
    ASCII delimiter). Any other file (UTF-16, a multi-byte delimiter) is one chunk, read in
    one stream with its header (`ChunkSpec.start == 0`).
    """
    _require_file(source)
    if source.format == "parquet":
        parquet, _ = _open_parquet(source)
        rows = int(parquet.metadata.num_rows)
        return [
            ChunkSpec(source.name, i, start, min(start + chunk_rows, rows), start + 1)
            for i, start in enumerate(range(0, rows, chunk_rows))
        ]
    fh, reader, _, _ = _open_csv(source)
    fh.close()
    header_lines = reader.line_num
    size = source.path.stat().st_size
    codec = _range_codec(source)
    if codec is None:
        return [ChunkSpec(source.name, 0, 0, size, header_lines + 1)]
    with source.path.open("rb") as raw:
        mm = mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        cuts, records = _plan_cuts(mm, source, codec, header_lines, chunk_rows)
    finally:
        with contextlib.suppress(BufferError):  # a view kept by an error on its way out
            mm.close()  # (else the map closes when it is freed)
    if not records:
        return []
    ends = [start for start, _ in cuts[1:]] + [size]
    return [
        ChunkSpec(source.name, i, start, end, line)
        for i, ((start, line), end) in enumerate(zip(cuts, ends, strict=True))
    ]


def read_chunk(source: SourceConfig, spec: ChunkSpec) -> SourceChunk:
    """Read one chunk that `plan_chunks` planned: its rows, with the line numbers of the file.

    The header is read (and checked, with `read_source`'s SourceErrors) from the file start.
    """
    if spec.source != source.name:
        raise ValueError(f"chunk of source {spec.source!r} read as source {source.name!r}")
    _require_file(source)
    if source.format == "parquet":
        parquet, by_column = _open_parquet(source)
        return _parquet_chunk(
            source.name,
            _parquet_rows(source, parquet, by_column, spec.start, spec.end),
            by_column,
            spec.first_line,
        )
    fh, _, mapped, width = _open_csv(source)
    with fh:
        if spec.start == 0:
            lines: Iterable[str] = fh
        else:
            codec = _range_codec(source)
            if codec is None:
                raise ValueError(f"source {source.name}: byte ranges cannot be read alone")
            with source.path.open("rb") as raw:
                raw.seek(spec.start)
                data = raw.read(spec.end - spec.start)
            lines = io.StringIO(data.decode(codec, "surrogateescape"), newline="")
        chunks = _csv_chunks(
            lines, source, mapped, width, first_line=spec.first_line, chunk_rows=None
        )
        return next(chunks, None) or _ChunkBuilder(source.name, mapped).build()


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
        self.columns: dict[str, list[str]] = {name: [] for name in mapped}
        self.lines: list[npt.NDArray[np.int64]] = []
        self.readable = 0
        self.bad_lines: list[int] = []
        self.bad_details: list[str] = []
        self.bad_raw: list[str] = []

    def add(self, records: list[list[str]], lines: npt.NDArray[np.int64]) -> None:
        """Add readable records (each with as many fields as the header) and their lines."""
        if not records:
            return
        fields = list(zip(*records, strict=True))
        for name, index in self.mapped.items():
            self.columns[name].extend(fields[index])
        self.lines.append(lines)
        self.readable += len(records)

    def add_bad(self, line: int, detail: str, record: list[str]) -> None:
        self.bad_lines.append(line)
        self.bad_details.append(detail)
        self.bad_raw.append(json.dumps(record))

    def __bool__(self) -> bool:
        return bool(self.readable or self.bad_lines)

    def cut(self, rows: int) -> tuple[SourceChunk, _ChunkBuilder]:
        """The chunk of the first `rows` readable rows (1 to all those held) and the unparseable
        records before the last of them, and a builder holding the records after it."""
        rest = _ChunkBuilder(self.source, self.mapped)
        lines = np.concatenate(self.lines)
        self.lines, rest.lines = [lines[:rows]], [lines[rows:]]
        for name, values in self.columns.items():
            rest.columns[name] = values[rows:]
            del values[rows:]
        self.readable, rest.readable = rows, self.readable - rows
        after = bisect.bisect_right(self.bad_lines, int(lines[rows - 1]))
        rest.bad_lines = self.bad_lines[after:]
        rest.bad_details = self.bad_details[after:]
        rest.bad_raw = self.bad_raw[after:]
        del self.bad_lines[after:], self.bad_details[after:], self.bad_raw[after:]
        return self.build(), rest

    def build(self) -> SourceChunk:
        lines = np.concatenate(self.lines) if self.lines else np.empty(0, dtype=np.int64)
        data: dict[str, object] = {LINE: pd.Series(lines, dtype="int64")}
        for name, values in self.columns.items():
            # Arrow from the list of str directly: what pd.Series(values, dtype=str) makes,
            # without its detour through an object array
            data[name] = pd.array(pa.array(values, type=pa.large_string()), dtype=TEXT_DTYPE)
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
    where = f"source {source.name}: {source.path}"
    try:
        fh = source.path.open(
            encoding=_text_encoding(source.encoding),
            errors=_decode_errors(source.encoding),
            newline="",
        )
    except LookupError:  # a codec from bytes to bytes or text to text (base64, rot13)
        raise SourceError(
            f"{where}: encoding {source.encoding!r} does not decode text; "
            "check the source's `encoding`"
        ) from None
    except OSError as exc:
        raise SourceError(f"{where} cannot be opened ({type(exc).__name__})") from None
    try:
        reader, header, line = _read_header(fh, source, where)
        mapped = _mapped_indices(source, header, line)
    except SourceError:
        fh.close()
        raise
    return fh, reader, mapped, len(header)


def _read_header(fh: TextIO, source: SourceConfig, where: str) -> tuple[Any, list[str], int]:
    """A csv reader past the header, the header and its first line; blank lines before it are
    skipped (the reader counts them)."""
    ended: list[bool] = []
    reader = csv.reader(chain(fh, _end_marker(ended)), delimiter=source.delimiter, strict=False)
    try:
        header: list[str] = next(filter(None, reader))  # blank lines are [], skipped in C
    except StopIteration:
        raise SourceError(f"{where} is empty (no header row)") from None
    except csv.Error as exc:
        raise SourceError(f"{where}: header: {exc}") from None
    except UnicodeError:  # a codec that takes no error handler (idna)
        raise SourceError(
            f"{where}: encoding {source.encoding!r} cannot read a file; "
            "check the source's `encoding`"
        ) from None
    # the header's first line: line breaks inside its quoted names are lines of it too
    line = reader.line_num - sum(map(_line_breaks, header))
    if _UNDECODABLE.search("".join(header)):
        raise SourceError(
            f"{where}: header is not valid {source.encoding}; check the source's `encoding`"
        )
    nul = next((i for i, name in enumerate(header, 1) if _NUL in name), None)
    if nul is not None:
        raise SourceError(
            f"{where}: header line {line}, column {nul} holds a NUL byte: the file is binary "
            f"or not in {source.encoding} (UTF-16?); check the source's `encoding`"
        )
    if ended:  # the csv module read to the end of the file for the rest of the header
        line += header[-1].endswith(("\n", "\r"))  # the file's last break is in the field
        raise SourceError(
            f"{where}: header line {line}: a quoted field is never closed "
            "(the header runs to the end of the file)"
        )
    return reader, header, line


def _line_breaks(text: str) -> int:
    """Line breaks (CRLF, CR or LF) in a field."""
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _end_marker(ended: list[bool]) -> Iterator[str]:
    """No lines; chained after some, notes in `ended` that they ran out."""
    ended.append(True)
    yield from ()


def _csv_chunks(
    lines: Iterable[str],
    source: SourceConfig,
    mapped: dict[str, int],
    width: int,
    *,
    first_line: int,
    chunk_rows: int | None,
) -> Iterator[SourceChunk]:
    """The CSV record reader: records from text `lines` (the first is line `first_line`).

    Yields chunks of `chunk_rows` readable rows (the last may have fewer), or with
    `chunk_rows=None` one chunk of everything (none if there is nothing). Records are taken
    from the csv module in batches, and a chunk is cut from what they hold right after its
    last readable row, as if records were read one by one; a batch never shrinks to what a
    chunk lacks, which would read a run of blank lines one line per batch. A `csv.Error` (it ends
    the record at its line; the reader goes on at the next) loses the batch it happened in, so
    the lines of the current batch are kept (`tee`) and the batch is read again record by
    record.

    A quote that opens a field which is never closed makes the csv module read the rest of
    the input as that field. Such a quote is far more often a stray one (`"Ann,...`, a file
    cut short) than a field that really holds the rest of the file, so the record is
    unparseable as the one line it starts on, and reading goes on at the next line (`_UNCLOSED`;
    only the last record of the input can be one, and the lines after its quote hold no quote
    that could open another).
    """
    chunk = _ChunkBuilder(source.name, mapped)
    ended: list[bool] = []
    feed, replay = tee(chain(lines, _end_marker(ended)))
    reader = csv.reader(feed, delimiter=source.delimiter, strict=False)
    line = first_line  # the number of the line the next record starts at
    read = 0  # reader.line_num at that line
    one_by_one = False
    while True:
        try:
            records = list(islice(reader, 1 if one_by_one else _BATCH))
        except csv.Error as exc:
            if not one_by_one:
                feed, replay = tee(replay)
                reader = csv.reader(feed, delimiter=source.delimiter, strict=False)
                read, one_by_one = 0, True
                continue
            # csv.Error carries no field values, only the parser's complaint
            chunk.add_bad(line, f"CSV syntax: {exc}", [])
            consumed = reader.line_num - read
            deque(islice(replay, consumed), maxlen=0)
            one_by_one = False
        else:
            if not records:
                break
            consumed = reader.line_num - read
            batch = list(islice(replay, consumed))  # the batch's lines as read
            starts = _record_lines(records, line, consumed)
            opened = _opened_at(records, starts, batch, line, source.delimiter) if ended else None
            if opened is not None:
                records, starts = records[:-1], starts[:-1]
            _add_records(chunk, records, starts, width, source, text="".join(batch))
            if opened is not None:
                rest = batch[opened - line :]
                fields = next(csv.reader(rest[:1], delimiter=source.delimiter, strict=False))
                chunk.add_bad(opened, _UNCLOSED, fields)
                ended.clear()
                feed, replay = tee(chain(rest[1:], _end_marker(ended)))
                reader = csv.reader(feed, delimiter=source.delimiter, strict=False)
                line, read, consumed = opened + 1, 0, 0
        line += consumed
        read += consumed
        while chunk_rows is not None and chunk.readable >= chunk_rows:
            done, chunk = chunk.cut(chunk_rows)
            yield done
    if chunk:
        yield chunk.build()


_UNCLOSED = "CSV syntax: a quoted field is never closed (the next line is read as a new record)"


def _opened_at(
    records: list[list[str]],
    starts: npt.NDArray[np.int64],
    batch: list[str],
    line: int,
    delimiter: str,
) -> int | None:
    """The line of the last of `records` (read from `batch`, from `line` on, to the end of the
    input) if it ends inside a quoted field, else None."""
    last = int(starts[-1])
    return last if records[-1] and _ends_in_quotes(batch[last - line :], delimiter) else None


def _ends_in_quotes(lines: Sequence[str], delimiter: str) -> bool:
    """Whether the record read from `lines`, the input's last, ends inside a quoted field.

    Read on with one more line break: a record that ended at the end of the input is followed
    by a blank line of its own; inside quotes, the break is more of the field.
    """
    probe = csv.reader(chain(lines, ["\n"]), delimiter=delimiter, strict=False)
    try:
        return sum(1 for _ in probe) == 1
    except csv.Error:  # the break made the open field longer than the field size limit
        return True


def _record_lines(records: list[list[str]], line: int, lines: int) -> npt.NDArray[np.int64]:
    """The line each of `records` starts at; together they span `lines` lines from `line`.

    A record spans one line plus the line breaks (CRLF, CR or LF) inside its quoted fields;
    the last record's count may be off by one at the end of the file, and is never used.
    """
    n = len(records)
    if lines == n:  # no record spans more than one line
        return np.arange(line, line + n, dtype=np.int64)
    joined = list(map("\x1f".join, records))

    def count(text: str) -> npt.NDArray[np.int64]:
        return np.fromiter(map(str.count, joined, repeat(text)), dtype=np.int64, count=n)

    spans = 1 + count("\n") + count("\r") - count("\r\n")
    starts = np.full(n, line, dtype=np.int64)
    starts[1:] += np.cumsum(spans[:-1])
    return starts


def _add_records(
    chunk: _ChunkBuilder,
    records: list[list[str]],
    lines: npt.NDArray[np.int64],
    width: int,
    source: SourceConfig,
    *,
    text: str,
) -> None:
    """Sort a batch into readable and unparseable records; blank lines are no records.

    `text`: the lines the records were read from, to find bytes not valid in the encoding
    and NUL bytes in (text holds none: binary data, or UTF-16 read as a byte encoding).
    """
    n = len(records)
    counts = list(map(len, records))
    undecodable = not text.isascii() and _UNDECODABLE.search(text) is not None
    nul = _NUL in text
    if not undecodable and not nul and counts.count(width) == n:
        chunk.add(records, lines)
        return
    fields = np.array(counts, dtype=np.intp)
    wrong = (fields != width) & (fields != 0)
    joined = list(map("\x1f".join, records)) if undecodable or nul else []
    bad_bytes = np.zeros(n, dtype=bool)
    if undecodable:
        found = map(_UNDECODABLE.search, joined)
        bad_bytes = np.fromiter(map(bool, found), dtype=bool, count=n) & ~wrong
    has_nul = np.zeros(n, dtype=bool)
    if nul:
        found_nul = map(operator.contains, joined, repeat(_NUL))
        has_nul = np.fromiter(found_nul, dtype=bool, count=n) & ~wrong & ~bad_bytes
    for i in np.flatnonzero(wrong | bad_bytes | has_nul).tolist():
        if wrong[i]:
            detail = f"expected {width} fields, found {counts[i]}"
        elif bad_bytes[i]:
            detail = f"bytes not valid in encoding {source.encoding}"
        else:
            field = next(k for k, value in enumerate(records[i], 1) if _NUL in value)
            detail = f"NUL byte in field {field}"
        chunk.add_bad(int(lines[i]), detail, records[i])
    good = (fields == width) & ~bad_bytes & ~has_nul
    chunk.add(list(compress(records, good)), lines[good])


def _range_codec(source: SourceConfig) -> str | None:
    """The codec to decode a run of whole lines cut out of the file with, if there is one.

    There is one if quote, delimiter, CR and LF are distinct ASCII characters and the encoding
    decodes each of them from its own byte, which never stands for anything else, and decodes
    a run of lines as the whole file does: UTF-8 (without the byte-order mark, which only
    precedes the header), ASCII, Latin-1 and single-byte code pages.
    """
    specials = (source.delimiter, '"', "\r", "\n")
    if not all(ch.isascii() for ch in specials) or source.delimiter in '"\r\n':
        return None
    info = codecs.lookup(source.encoding)
    if info.name in ("utf-8", "utf-8-sig"):
        return "utf-8"
    if info.name in ("ascii", "iso8859-1"):
        return info.name
    # a charmap codec (stdlib code pages) decodes byte by byte through a 256-entry table
    table = _charmap_table(info)
    if table is None:
        return None
    unique = all(table[ord(ch)] == ch and table.count(ch) == 1 for ch in specials)
    return info.name if unique else None


def _plan_cuts(
    mm: mmap.mmap, source: SourceConfig, codec: str, header_lines: int, chunk_rows: int
) -> tuple[list[tuple[int, int]], int]:
    """Chunk starts (byte offset, line number) and the number of records in the file."""
    # the header's last line (blank lines before it are lines of it here)
    header = deque(islice(_LINE_BYTES.finditer(mm), header_lines), maxlen=1)
    start = header[-1].end() if header else 0
    scanner = _Scanner(mm, source, codec, start, header_lines + 1)
    cuts = [(start, header_lines + 1)]
    cut_records = 0
    for offsets, lines, before in scanner.record_starts():
        while True:
            i = int(np.searchsorted(before, cut_records + chunk_rows))
            if i == len(before):
                break
            cuts.append((int(offsets[i]), int(lines[i])))
            cut_records = int(before[i])
    if len(cuts) > 1 and cut_records == scanner.records:
        cuts.pop()  # only blank lines after the last cut
    return cuts, scanner.records


class _Scanner:
    """Finds certain record starts in a CSV file's bytes (the algorithm: `plan_chunks`)."""

    def __init__(
        self, mm: mmap.mmap, source: SourceConfig, codec: str, start: int, line: int
    ) -> None:
        self.mm = mm
        self.size = len(mm)
        self.codec = codec
        self.delimiter = source.delimiter
        self.opens_after = np.array([ord(source.delimiter), _LF, _CR, _QUOTE], dtype=np.uint8)
        self.pos = start
        """Where scanning goes on ..."""
        self.line = line
        """... the number of the line holding `pos` ..."""
        self.inside = False
        """... and whether the quote count says `pos` is inside a quoted field."""
        self.start = start
        """The last record start known for certain ..."""
        self.start_line = line
        """... its line ..."""
        self.records = 0
        """... and the records (not blank lines) before it; at the end, all of them."""

    def record_starts(
        self,
    ) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
        """Certain record starts after the first, in order, in batches: byte offsets, line
        numbers and the records before each."""
        data = np.frombuffer(self.mm, dtype=np.uint8)
        try:
            block = _BLOCK_MIN
            while self.pos < self.size:
                end = min(self.pos + block, self.size)
                found, resync_through = self._scan(data, end)
                if len(found[0]):
                    yield found
                if resync_through is None:
                    block = min(2 * block, _BLOCK_MAX)
                    continue
                found = self._resync(resync_through)
                if len(found[0]):
                    yield found
                block = _BLOCK_MIN
            self.records += int(self.start < self.size and not self._blank(data, self.start))
            self.start = self.size
        finally:
            del data  # the memory map cannot close while an array views it

    @staticmethod
    def _blank(data: npt.NDArray[np.uint8], offset: int) -> bool:
        return bool(data[offset] == _LF or data[offset] == _CR)

    def _scan(
        self, data: npt.NDArray[np.uint8], end: int
    ) -> tuple[
        tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]], int | None
    ]:
        """Count quotes over [pos, end): the record starts found, and the line to resync
        through if the count is unsure somewhere in it (it is sure before that line)."""
        pos = self.pos
        block = data[pos:end]
        lf = np.flatnonzero(block == _LF)
        cr = np.flatnonzero(block == _CR)
        after_cr = cr + pos + 1
        lone = np.ones(len(cr), dtype=bool)
        within = after_cr < self.size
        lone[within] = data[after_cr[within]] != _LF
        breaks = np.sort(np.concatenate([lf, cr[lone]])) if len(cr) else lf
        ends = breaks + 1  # local offsets just past each line break
        quotes = np.flatnonzero(block == _QUOTE)
        opening = quotes[int(self.inside) :: 2]
        stray = opening[~np.isin(data[opening + pos - 1], self.opens_after)]
        unsure = int(stray[0]) if len(stray) else None
        sure = ends if unsure is None else ends[ends <= unsure]
        outside = (np.searchsorted(quotes, sure) + self.inside) % 2 == 0
        offsets = (sure + pos)[outside]
        lines = (self.line + 1 + np.arange(len(sure)))[outside]
        keep = offsets < self.size
        offsets, lines = offsets[keep], lines[keep]
        gaps = np.diff(offsets, prepend=self.start)
        too_long = np.flatnonzero(gaps > csv.field_size_limit())
        if len(too_long):
            # the csv module may cut a field of this record short: resync through its end
            first = int(too_long[0])
            unsure = int(offsets[first]) - 1 - pos
            offsets, lines = offsets[:first], lines[:first]
        blank = (data[offsets] == _LF) | (data[offsets] == _CR)
        records = np.cumsum(~blank) - ~blank  # records among the starts found before each
        before = self.records + int(not self._blank(data, self.start)) + records
        if len(offsets):
            self.records = int(before[-1])
            self.start, self.start_line = int(offsets[-1]), int(lines[-1])
        if unsure is None:
            self.line += len(ends)
            self.inside = (self.inside + len(quotes)) % 2 == 1
            self.pos = end
            return (offsets, lines, before), None
        return (offsets, lines, before), self.line + int(np.count_nonzero(ends <= unsure))

    def _resync(
        self, through: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Read records with the csv module from the last certain record start through line
        `through` (and on for `_RESYNC_LINES` lines); scanning goes on at the record start
        reached, which is returned (if it is not the end of the file)."""
        end = self.start

        def lines() -> Iterator[str]:
            nonlocal end
            for match in _LINE_BYTES.finditer(self.mm, self.start):
                end = match.end()
                yield match.group().decode(self.codec, "surrogateescape")

        reader = csv.reader(lines(), delimiter=self.delimiter, strict=False)
        need = max(through, self.start_line + _RESYNC_LINES - 1) - self.start_line + 1
        records = 0
        while reader.line_num < need:
            try:
                records += bool(next(reader))
            except StopIteration:
                break
            except csv.Error:
                records += 1  # an unparseable record; the reader goes on at the next line
        self.records += records
        self.pos = self.start = end
        self.line = self.start_line = self.start_line + reader.line_num
        self.inside = False
        if end >= self.size:
            return _NONE
        before = np.array([self.records], dtype=np.int64)
        return np.array([end], dtype=np.int64), np.array([self.line], dtype=np.int64), before


_NONE = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))


def _open_parquet(source: SourceConfig) -> tuple[pq.ParquetFile, dict[str, str]]:
    """Open a Parquet source; return it and the source column of each mapped field."""
    try:
        parquet = pq.ParquetFile(source.path)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(
            f"source {source.name}: {source.path} is not a readable Parquet file "
            f"({type(exc).__name__})"
        ) from None
    schema = parquet.schema_arrow
    mapped = _mapped_indices(source, list(schema.names))
    for i in mapped.values():
        column = schema.field(i)
        try:
            pc.cast(pa.nulls(0, column.type), pa.large_string())
        except pa.ArrowException:  # lists, structs, maps: no one text value per row
            raise SourceError(
                f"source {source.name}: {source.path}: mapped column {column.name!r} is of "
                f"type {column.type}, which has no text form"
            ) from None
    return parquet, {field: schema.names[i] for field, i in mapped.items()}


def _parquet_rows(
    source: SourceConfig,
    parquet: pq.ParquetFile,
    by_column: dict[str, str],
    start: int,
    end: int,
) -> pa.Table:
    """Rows [start, end) of the mapped columns, reading only the row groups that hold them."""
    metadata = parquet.metadata
    groups: list[int] = []
    first = offset = 0
    for i in range(metadata.num_row_groups):
        rows = metadata.row_group(i).num_rows
        if offset + rows > start and offset < end:
            if not groups:
                first = offset
            groups.append(i)
        offset += rows
    try:
        table = parquet.read_row_groups(groups, columns=sorted(set(by_column.values())))
    except (pa.ArrowException, OSError) as exc:
        raise _damaged(source, start + 1, end, exc) from None
    return table.slice(start - first, end - start)


def _damaged(source: SourceConfig, first: int, last: int, exc: Exception) -> SourceError:
    """The error for Parquet rows that cannot be read (a damaged page: the message names no
    value, only the exception's class)."""
    return SourceError(
        f"source {source.name}: {source.path}: rows {first}-{last} cannot be read "
        f"({type(exc).__name__}); the file is damaged"
    )


def _parquet_chunk(
    source: str, rows: pa.Table | pa.RecordBatch, by_column: dict[str, str], first_row: int
) -> SourceChunk:
    """A chunk of Parquet rows; a row whose binary column holds bytes that are not UTF-8 is
    unparseable, like a CSV record with bytes not valid in its encoding."""
    lines = np.arange(first_row, first_row + rows.num_rows, dtype=np.int64)
    texts: dict[str, pa.Array] = {}
    decoded: dict[str, list[str | None]] = {}
    bad = np.zeros(rows.num_rows, dtype=bool)
    for field, column in by_column.items():
        values = rows.column(column)
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        try:
            texts[field] = pc.fill_null(pc.cast(values, pa.large_string()), "")
        except pa.ArrowInvalid:  # binary, not UTF-8 in some rows: read them as CSV is read
            decoded[field] = [
                v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v
                for v in values.to_pylist()
            ]
            wrong = [v is not None and _UNDECODABLE.search(v) is not None for v in decoded[field]]
            bad |= np.array(wrong, dtype=bool)
            kept = [None if w else v for v, w in zip(decoded[field], wrong, strict=True)]
            texts[field] = pc.fill_null(pa.array(kept, type=pa.large_string()), "")
    data: dict[str, object] = {LINE: pd.Series(lines)}
    data.update({f: pd.array(texts[f], dtype=TEXT_DTYPE) for f in by_column})
    frame = pd.DataFrame(data)
    if not bad.any():
        return SourceChunk(source=source, frame=frame, unparseable=_empty_unparseable())
    rows_bad = np.flatnonzero(bad).tolist()
    raw = [
        json.dumps([decoded[f][i] if f in decoded else str(frame.at[i, f]) for f in by_column])
        for i in rows_bad
    ]
    unparseable = pd.DataFrame(
        {
            LINE: pd.Series(lines[bad], dtype="int64"),
            "detail": pd.Series(["bytes not valid in encoding utf-8"] * len(raw), dtype=str),
            "raw": raw,
        }
    )
    return SourceChunk(
        source=source, frame=frame.loc[~bad].reset_index(drop=True), unparseable=unparseable
    )


def _read_parquet(source: SourceConfig, chunk_rows: int) -> Iterator[SourceChunk]:
    parquet, by_column = _open_parquet(source)
    batches = parquet.iter_batches(batch_size=chunk_rows, columns=sorted(set(by_column.values())))
    first_row = 1
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as exc:
            last = min(first_row + chunk_rows - 1, parquet.metadata.num_rows)
            raise _damaged(source, first_row, last, exc) from None
        if batch is None:
            return
        yield _parquet_chunk(source.name, batch, by_column, first_row)
        first_row += batch.num_rows
