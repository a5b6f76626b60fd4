"""Tests for reading sources: encodings, delimiters, line numbers, unparseable records, chunks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiles.config import SourceConfig
from profiles.errors import SourceError
from profiles.ingest import count_records, read_source


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


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(max_size=400)
    | st.lists(
        st.sampled_from(
            [b"a", b",", b'"', b"\n", b"\r", b"\r\n", b"\x00", b"\xff", b"\xc3\xa9", b"=cmd", b";"]
        ),
        max_size=80,
    ).map(b"".join),
    header=st.booleans(),
)
def test_random_bytes_are_read_or_rejected_with_a_source_error_and_nothing_is_lost(
    tmp_path: Path, body: bytes, header: bool
) -> None:
    path = tmp_path / "fuzz.csv"
    path.write_bytes((b"Name,E-mail,Phone\n" if header else b"") + body)
    try:
        chunks = list(read_source(_source(path), 7))
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
