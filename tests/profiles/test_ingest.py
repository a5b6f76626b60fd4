"""Tests for reading sources: encodings, delimiters, line numbers, unparseable records, chunks."""

from __future__ import annotations

import csv
import itertools
import json
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiles import ingest
from profiles.accounting import SourceCounts
from profiles.config import IdentifierConfig, SourceConfig
from profiles.errors import SourceError
from profiles.hashing import Key, Pseudonymiser
from profiles.identifiers import IdentifierStage
from profiles.ingest import (
    ChunkSpec,
    SourceChunk,
    count_records,
    plan_chunks,
    read_chunk,
    read_source,
)
from profiles.types import TEXT_DTYPE


def _source(path: Path, **kw: object) -> SourceConfig:
    data: dict[str, object] = {
        "name": "crm",
        "path": path,
        "columns": {"email": "E-mail", "phone": "Phone", "first_name": "Name"},
    }
    data.update(kw)
    return SourceConfig.model_validate(data)


def _read_all(source: SourceConfig, chunk_rows: int = 1000) -> tuple[pd.DataFrame, pd.DataFrame]:
    chunks = list(read_source(source, chunk_rows))
    frames = [c.frame for c in chunks]
    bad = [c.unparseable for c in chunks]
    return pd.concat(frames, ignore_index=True), pd.concat(bad, ignore_index=True)


def test_utf8_bom_and_crlf_are_read_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    path.write_bytes(
        "\ufeffName,E-mail,Phone\r\nSøren,soren@example.com,+45 20 12 34 56\r\n"
        "Γιώργος,giorgos@example.org,\r\n".encode()
    )
    frame, bad = _read_all(_source(path))
    assert list(frame.columns) == ["line", "email", "phone", "first_name"]
    assert frame["line"].tolist() == [2, 3]
    assert frame["first_name"].tolist() == ["Søren", "Γιώργος"]
    assert frame["phone"].tolist() == ["+45 20 12 34 56", ""]
    assert bad.empty


def test_latin1_with_semicolons(tmp_path: Path) -> None:
    path = tmp_path / "nl.csv"
    path.write_bytes("E-mail;Name;Phone\nmette@example.net;Mette Ærø;\n".encode("latin-1"))
    frame, _ = _read_all(_source(path, encoding="latin-1", delimiter=";"))
    assert frame["first_name"].tolist() == ["Mette Ærø"]


def test_wrong_field_count_and_bad_bytes_are_unparseable_with_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    path.write_bytes(
        b"Name,E-mail,Phone\n"
        b"Ann,ann@example.com,\n"
        b"Bo,bo@example.com,1,extra\n"
        b"\n"
        b'"Multi\nline",multi@example.com,\n'
        b"J\xf8rgen,jorgen@example.com,\n"
        b"Short\n"
        b"Eve,eve@example.com,\n"
    )
    frame, bad = _read_all(_source(path))
    assert frame["line"].tolist() == [2, 5, 9]
    assert frame["first_name"].tolist() == ["Ann", "Multi\nline", "Eve"]
    assert bad["line"].tolist() == [3, 7, 8]
    assert bad["detail"].tolist() == [
        "expected 3 fields, found 4",
        "bytes not valid in encoding utf-8",
        "expected 3 fields, found 1",
    ]
    # details are safe to log: no field values in them
    assert not any("bo@example.com" in d for d in bad["detail"])
    assert json.loads(bad["raw"].iloc[0]) == ["Bo", "bo@example.com", "1", "extra"]


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 1000], ids=lambda n: f"chunk{n}")
def test_chunking_does_not_change_what_is_read(tmp_path: Path, chunk_rows: int) -> None:
    path = tmp_path / "crm.csv"
    body = "".join(f"N{i},u{i}@example.com,{i}\n" for i in range(7))
    path.write_text("Name,E-mail,Phone\n" + body + "x,y\n", encoding="utf-8")
    chunks = list(read_source(_source(path), chunk_rows))
    assert all(len(c.frame) <= chunk_rows for c in chunks)
    assert sum(c.rows_in for c in chunks) == 8
    frame, bad = _read_all(_source(path), chunk_rows)
    assert frame["line"].tolist() == list(range(2, 9))
    assert bad["line"].tolist() == [9]


def test_a_chunk_ends_right_after_its_last_readable_row(tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    rows = ["a,b@example.com,1\n"] * 2 + ["short\n"] + ["\n"] * 600 + ["c,d@example.com,2\n"] * 3
    path.write_text("Name,E-mail,Phone\n" + "".join(rows), encoding="utf-8")
    chunks = list(read_source(_source(path), 2))
    assert [c.frame["line"].tolist() for c in chunks] == [[2, 3], [605, 606], [607]]
    # the unparseable record after a full chunk's last row opens the next chunk
    assert [c.unparseable["line"].tolist() for c in chunks] == [[], [4], []]


def test_count_records_is_an_upper_bound_for_progress(tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    path.write_text("Name,E-mail,Phone\na,b,c\nd,e,f", encoding="utf-8")
    assert count_records(_source(path)) == 2


def test_missing_mapped_column_names_file_and_column(tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    path.write_text("Name,Email\nAnn,ann@example.com\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"crm\.csv: mapped column\(s\) 'E-mail', 'Phone'"):
        list(read_source(_source(path), 10))


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "not found"), (b"", "empty"), (b"\xff\xfeName,E-mail,Phone\n", "header is not valid")],
    ids=["missing", "empty", "undecodable-header"],
)
def test_unreadable_files_raise_source_error(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "crm.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SourceError, match=message):
        list(read_source(_source(path), 10))


def test_parquet_source_casts_to_text_and_numbers_rows(tmp_path: Path) -> None:
    path = tmp_path / "crm.parquet"
    table = pa.table(
        {
            "E-mail": ["a@example.com", None, "c@example.com"],
            "Phone": [None, "+45 20 12 34 56", ""],
            "Name": ["A", "B", "C"],
            "cid": pa.array([1, 2, None], type=pa.int64()),
        }
    )
    pq.write_table(table, path)
    source = _source(
        path,
        format="parquet",
        columns={"email": "E-mail", "phone": "Phone", "first_name": "Name", "customer_id": "cid"},
    )
    frame, bad = _read_all(source, chunk_rows=2)
    assert frame["line"].tolist() == [1, 2, 3]
    assert frame["email"].tolist() == ["a@example.com", "", "c@example.com"]
    assert frame["customer_id"].tolist() == ["1", "2", ""]
    assert bad.empty
    assert count_records(source) == 3


@pytest.fixture(scope="module")
def stage() -> Iterator[IdentifierStage]:
    """An in-process identifier stage for the module's tests."""
    key = Key.from_secret(b"\x03" * 32)
    with IdentifierStage(IdentifierConfig(), Pseudonymiser(key), workers=1) as one:
        yield one


def _accounted(source: SourceConfig, chunks: list[SourceChunk], stage: IdentifierStage) -> int:
    """Run the chunks through the identifier stage and the accounting, as the flow does;
    return rows_in. The accounting balances (or AccountingError)."""
    counts = SourceCounts(source=source.name, file=source.path.name)
    for chunk in chunks:
        counts.add_identified(stage.process(chunk.frame, source))
        counts.add_unparseable(len(chunk.unparseable))
    counts.check()
    assert counts.rows_in == counts.rows_accepted + counts.rows_quarantined
    return counts.rows_in


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(max_size=400)
    | st.lists(
        st.sampled_from(
            [
                *(b"a", b",", b'"', b"\n", b"\r", b"\r\n", b"\x00", b"\xff", b"\xc3\xa9"),
                *(b"=cmd", b";", b"ann@example.com", b"\xd0\xb0nn@example.com", b"+45 20 12 34 56"),
            ]
        ),
        max_size=80,
    ).map(b"".join),
    header=st.booleans(),
)
def test_random_bytes_are_read_or_rejected_with_a_source_error_and_nothing_is_lost(
    tmp_path: Path, stage: IdentifierStage, body: bytes, header: bool
) -> None:
    path = tmp_path / "fuzz.csv"
    path.write_bytes((b"Name,E-mail,Phone\n" if header else b"") + body)
    source = _source(path, default_region="DK")
    try:
        chunks = list(read_source(source, 7))
    except SourceError as exc:
        rejected = str(exc)
    else:
        rejected = ""
    if rejected:
        assert "fuzz.csv" in rejected  # a typed rejection that names the file
        return
    lines = [int(x) for c in chunks for x in (*c.frame["line"], *c.unparseable["line"])]
    assert len(lines) == len(set(lines))  # every record once
    assert all(line >= 2 for line in lines)  # the header is never a record
    assert sum(c.rows_in for c in chunks) == len(lines)
    for c in chunks:
        assert set(c.unparseable.columns) >= {"line", "detail"}
    # through the stage and the accounting, read in one go and in planned chunks alike
    assert _accounted(source, chunks, stage) == len(lines)
    planned = [read_chunk(source, spec) for spec in plan_chunks(source, 7)]
    assert _accounted(source, planned, stage) == len(lines)


def test_a_mapped_column_that_appears_twice_in_the_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    path.write_text("Name,E-mail,Phone,E-mail\nAnn,a@example.com,1,b@example.com\n", "utf-8")
    with pytest.raises(
        SourceError, match=r"crm\.csv: header line 1: mapped column\(s\) 'E-mail' \(columns 2, 4\)"
    ):
        list(read_source(_source(path), 10))
    # a repeated column nobody maps is harmless
    path.write_text("Name,E-mail,Phone,Notes,Notes\nAnn,a@example.com,1,x,y\n", "utf-8")
    frame, _ = _read_all(_source(path))
    assert frame["email"].tolist() == ["a@example.com"]


def _rows(chunks: list[SourceChunk]) -> tuple[pd.DataFrame, list[tuple[int, str, str]]]:
    """Readable rows of chunks, concatenated, and their unparseable records as tuples."""
    frame = pd.concat([c.frame for c in chunks], ignore_index=True) if chunks else pd.DataFrame()
    bad = [
        (int(line), str(detail), str(raw))
        for c in chunks
        for line, detail, raw in zip(
            c.unparseable["line"], c.unparseable["detail"], c.unparseable["raw"], strict=True
        )
    ]
    return frame, bad


def _assert_plan_reads_like_read_source(source: SourceConfig, chunk_rows: int) -> list[ChunkSpec]:
    specs = plan_chunks(source, chunk_rows)
    assert [s.index for s in specs] == list(range(len(specs)))
    assert all(s.source == source.name for s in specs)
    assert all(a.end == b.start for a, b in itertools.pairwise(specs))
    chunks = [read_chunk(source, spec) for spec in specs]
    expected = list(read_source(source, chunk_rows))
    frame, bad = _rows([c for c in chunks if c.rows_in])
    want_frame, want_bad = _rows(expected)
    if expected:
        pd.testing.assert_frame_equal(frame, want_frame)
    else:
        assert frame.empty
    assert bad == want_bad
    lines = [*frame.get("line", []), *(line for line, _, _ in bad)]
    assert len(lines) == len(set(lines))  # every record once
    return specs


@contextmanager
def _scan(block: int, grow: int, resync_lines: int, field_limit: int | None) -> Iterator[None]:
    """Tiny scan blocks and resync stretches (so tests cross them), and a field size limit."""
    saved = ingest._BLOCK_MIN, ingest._BLOCK_MAX, ingest._RESYNC_LINES, csv.field_size_limit()
    ingest._BLOCK_MIN, ingest._BLOCK_MAX, ingest._RESYNC_LINES = block, block * grow, resync_lines
    if field_limit is not None:
        csv.field_size_limit(field_limit)
    try:
        yield
    finally:
        ingest._BLOCK_MIN, ingest._BLOCK_MAX, ingest._RESYNC_LINES = saved[:3]
        csv.field_size_limit(saved[3])


_FIELDS = st.one_of(
    st.sampled_from(
        [
            b"",
            b"ann@example.com",
            b"+45 20",
            b"S\xc3\xb8ren",
            b"J\xf8rgen",
            b"\x80\x81",
            b"\xff",
            b" ",
        ]
    ),
    # quoted fields with delimiters, line breaks and doubled quotes inside
    st.lists(
        st.sampled_from([b"a", b",", b";", b"\n", b"\r\n", b"\r", b'""', b"\xc3\xa9", b"\xe9"]),
        max_size=6,
    ).map(lambda parts: b'"' + b"".join(parts) + b'"'),
    # stray quotes in unquoted fields, text after a closing quote, unclosed quotes
    st.lists(st.sampled_from([b"a", b'"', b"\xe9"]), min_size=1, max_size=4).map(b"".join),
    st.sampled_from([b'"a"b', b'"a"b"c', b'"a""', b'"', b'"""', b'"a\n', b"\x00"]),
)
_RECORDS = st.lists(
    st.tuples(
        st.lists(_FIELDS, max_size=5),  # the header has 3: wrong counts are common
        st.sampled_from([b"\n", b"\n", b"\r\n", b"\r", b"\n\n", b"\r\n\r\n"]),
    ),
    max_size=25,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    content=st.tuples(
        st.sampled_from(
            [
                b"Name,E-mail,Phone\n",
                b"Name,E-mail,Phone\r\n",
                b'"Name","E-mail",Phone\r',
                b"\xef\xbb\xbfName,E-mail,Phone\n",
                b'"Na\nme",E-mail,Phone,X\n',
            ]
        ),
        _RECORDS,
        st.booleans(),  # a line break after the last record
        st.binary(max_size=60),  # noise at the end
    ),
    layout=st.tuples(
        st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16"]),
        st.sampled_from([",", ";"]),
    ),
    chunk_rows=st.integers(1, 5),
    scan=st.tuples(
        st.integers(1, 40),  # first scan block
        st.integers(1, 4),  # growth to the largest block
        st.integers(1, 4),  # lines read with csv past an ambiguous quote
        st.sampled_from([None, None, 5, 12]),  # csv field size limit
    ),
)
def test_planned_chunks_read_alone_give_what_read_source_gives(
    tmp_path: Path,
    content: tuple[bytes, list[tuple[list[bytes], bytes]], bool, bytes],
    layout: tuple[str, str],
    chunk_rows: int,
    scan: tuple[int, int, int, int | None],
) -> None:
    header, records, last_break, noise = content
    encoding, delimiter = layout
    sep = delimiter.encode()
    body = b"".join(sep.join(fields) + end for fields, end in records)
    if not last_break:
        body = body.rstrip(b"\r\n")
    data = header.replace(b",", sep) + body + noise
    if encoding == "utf-16":  # not ASCII-compatible: read as one chunk
        data = data.decode("latin-1").encode("utf-16")
    path = tmp_path / "fuzz.csv"
    path.write_bytes(data)
    source = _source(path, encoding=encoding, delimiter=delimiter)
    with _scan(*scan):
        try:
            list(read_source(source, chunk_rows))
        except SourceError as exc:
            rejected = str(exc)
        else:
            rejected = ""
        if rejected:
            with pytest.raises(SourceError) as planned:
                plan_chunks(source, chunk_rows)
            assert str(planned.value) == rejected  # the same message from the plan
            return
        specs = _assert_plan_reads_like_read_source(source, chunk_rows)
    if encoding == "utf-16":
        assert [(s.start, s.end) for s in specs] == [(0, len(data))]


def test_chunks_are_cut_at_record_boundaries_past_multi_line_records_and_stray_quotes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crm.csv"
    rows = [f"N{i},u{i}@example.com,{i}\r\n" for i in range(40)]
    rows[3] = 'O"Brien,stray@example.com,3\r\n'  # a quote inside an unquoted field
    rows[10] = '"Multi\nline, with ""quotes""\n",multi@example.com,10\r\n'
    rows[21] = "\r\n"  # a blank line
    path.write_bytes(("Name,E-mail,Phone\r\n" + "".join(rows)).encode())
    with _scan(block=16, grow=2, resync_lines=1, field_limit=None):
        specs = _assert_plan_reads_like_read_source(_source(path), 5)
    assert len(specs) == 8  # 39 records: 5 per chunk, the blank line is no record
    data = path.read_bytes()
    for spec in specs:
        # every chunk starts at a line start, with that line's number
        assert data[spec.start - 2 : spec.start] == b"\r\n"
        assert len(data[: spec.start].splitlines()) + 1 == spec.first_line
    chunk = read_chunk(_source(path), specs[2])
    assert chunk.frame["line"].tolist() == [12, 15, 16, 17, 18]
    assert chunk.frame["first_name"].iloc[0] == 'Multi\nline, with "quotes"\n'
    assert read_chunk(_source(path), specs[0]).frame["first_name"].iloc[3] == 'O"Brien'


def test_an_unclosed_quote_makes_the_rest_of_the_file_one_chunk(tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    rows = [f"N{i},u{i}@example.com,{i}\n" for i in range(20)]
    rows[12] = 'N12,"u12@example.com,12\n'
    path.write_text("Name,E-mail,Phone\n" + "".join(rows), encoding="utf-8")
    specs = _assert_plan_reads_like_read_source(_source(path), 4)
    assert [s.first_line for s in specs] == [2, 6, 10, 14]
    assert specs[-1].end == path.stat().st_size


@pytest.mark.parametrize(
    ("encoding", "delimiter"),
    [("utf-16", ","), ("utf-8", "¦")],
    ids=["utf-16", "non-ascii-delimiter"],
)
def test_files_without_trustworthy_byte_offsets_are_one_chunk(
    tmp_path: Path, encoding: str, delimiter: str
) -> None:
    path = tmp_path / "crm.csv"
    body = "".join(f"N{i}{delimiter}u{i}@example.com{delimiter}{i}\n" for i in range(9))
    path.write_bytes(f"Name{delimiter}E-mail{delimiter}Phone\n{body}".encode(encoding))
    source = _source(path, encoding=encoding, delimiter=delimiter)
    specs = _assert_plan_reads_like_read_source(source, 2)
    assert specs == [ChunkSpec("crm", 0, 0, path.stat().st_size, 2)]


def test_a_field_larger_than_the_limit_is_unparseable_in_chunks_too(tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    long = "x" * 40
    rows = [f"N{i},u{i}@example.com,{i}\n" for i in range(12)]
    # counting quotes, this record ends on its second line; but the csv module gives up on
    # the long field in its first line and reads the second as a new record, whose quote
    # opens a field that runs on (until it too is too long, in the next line)
    rows[5] = f'N5,"{long}\n,"x,5\n'
    path.write_text("Name,E-mail,Phone\n" + "".join(rows), encoding="utf-8")
    with _scan(block=32, grow=2, resync_lines=1, field_limit=30):
        specs = _assert_plan_reads_like_read_source(_source(path), 3)
        _, bad = _rows(list(read_source(_source(path), 3)))
    assert [s.first_line for s in specs] == [2, 5, 11, 14]
    assert [line for line, _, _ in bad] == [7, 8]
    assert bad[0] == (7, "CSV syntax: field larger than field limit (30)", "[]")


def test_plan_and_read_chunk_check_the_header_like_read_source(tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    path.write_text("Name,Email\nAnn,ann@example.com\n", encoding="utf-8")
    source = _source(path)
    with pytest.raises(SourceError, match=r"mapped column\(s\) 'E-mail', 'Phone'"):
        plan_chunks(source, 10)
    with pytest.raises(SourceError, match=r"mapped column\(s\) 'E-mail', 'Phone'"):
        read_chunk(source, ChunkSpec("crm", 0, 11, path.stat().st_size, 2))
    with pytest.raises(SourceError, match="not found"):
        plan_chunks(_source(tmp_path / "missing.csv"), 10)
    path.write_text("Name,E-mail,Phone\n\n\n", encoding="utf-8")
    assert plan_chunks(source, 10) == []  # a header and blank lines: no records, no chunks
    with pytest.raises(ValueError, match="source 'other'"):
        read_chunk(source, ChunkSpec("other", 0, 0, 1, 2))


def test_chunk_specs_are_small_and_picklable(tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    path.write_text("Name,E-mail,Phone\n" + "a,b,c\n" * 10, encoding="utf-8")
    spec = plan_chunks(_source(path), 4)[1]
    assert spec == ChunkSpec("crm", 1, 42, 66, 6)
    assert pickle.loads(pickle.dumps(spec)) == spec  # noqa: S301 - our own bytes
    assert len(pickle.dumps(spec)) < 200


def test_parquet_chunks_are_row_ranges_read_alone(tmp_path: Path) -> None:
    path = tmp_path / "crm.parquet"
    rows = 23
    table = pa.table(
        {
            "E-mail": [f"u{i}@example.com" if i % 4 else None for i in range(rows)],
            "Phone": pa.array(range(rows), type=pa.int64()),
            "Name": [f"N{i}" for i in range(rows)],
        }
    )
    pq.write_table(table, path, row_group_size=5)
    source = _source(path, format="parquet")
    specs = _assert_plan_reads_like_read_source(source, 7)
    assert [(s.start, s.end, s.first_line) for s in specs] == [
        (0, 7, 1),
        (7, 14, 8),
        (14, 21, 15),
        (21, 23, 22),
    ]
    chunk = read_chunk(source, specs[1])
    assert chunk.frame["line"].tolist() == list(range(8, 15))
    assert chunk.frame["email"].tolist()[:2] == ["u7@example.com", ""]
    assert chunk.frame["phone"].dtype == chunk.frame["email"].dtype == TEXT_DTYPE
