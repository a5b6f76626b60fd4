"""Tests for the CRM import CSV writer (profiles.exports.crm)."""

from __future__ import annotations

import csv
import io
import re
import tempfile
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profiles.errors import ConfigError
from profiles.exports import crm
from profiles.exports.crm import (
    EPOCH_MS,
    PRESETS,
    CrmPreset,
    neutralise_cell,
    preset_from_config,
    write_crm_csv,
)

DANGEROUS_FIRST = "=+-@\t\r\n\x00"
E164 = re.compile(r"\+[1-9][0-9]{1,14}")
QUOTED_FIELD = re.compile(r'"(?:[^"]|"")*"')

# free text written -> text expected back (neutralised where a spreadsheet would evaluate it)
TEXTS: dict[str, str] = {
    "Ελένη Παπαδοπούλου": "Ελένη Παπαδοπούλου",
    "ნინო ბერიძე": "ნინო ბერიძე",
    "Søren Ærø": "Søren Ærø",
    "Ana 🎉🇩🇰": "Ana 🎉🇩🇰",
    'Say "hi", then leave': 'Say "hi", then leave',
    "line one\nline two": "line one\nline two",
    "a;b\tc": "a;b\tc",
    "=SUM(A1:A2)": "'=SUM(A1:A2)",
    "+45 20 12 34 56": "'+45 20 12 34 56",
    "-2+3": "'-2+3",
    "@cmd": "'@cmd",
    "\t=1": "'\t=1",
    "\r=1": "'\r=1",
    "\n@x": "'\n@x",
    "\x00nul": "'\x00nul",
    "  =1+2": "'  =1+2",
    "\u00a0+1": "'\u00a0+1",
    'x";=1+2': 'x";=1+2',
    "a=1": "a=1",
    "'quoted": "'quoted",
    "": "",
}
# phone column (exempt): only exact E.164 stays as is
PHONES: dict[str, str] = {
    "+4520123456": "+4520123456",
    "+995577123456": "+995577123456",
    "+45 20 12 34 56": "'+45 20 12 34 56",
    "+1+cmd|' /C calc'!A0": "'+1+cmd|' /C calc'!A0",
    "=1+1": "'=1+1",
    "+0123": "'+0123",
}


def read_back(path: Path) -> tuple[bytes, list[list[str]]]:
    """Raw bytes and the rows Python's csv reader sees (BOM removed if present)."""
    raw = path.read_bytes()
    text = raw.decode("utf-8").removeprefix("\ufeff")
    return raw, list(csv.reader(io.StringIO(text, newline="")))


def read_all(paths: list[Path]) -> tuple[list[str], list[list[str]]]:
    """The header (the same in every file) and all data rows in file order."""
    headers = []
    rows: list[list[str]] = []
    for path in paths:
        _, content = read_back(path)
        headers.append(content[0])
        rows.extend(content[1:])
    assert all(h == headers[0] for h in headers)
    return headers[0], rows


def expected_text(value: str) -> str:
    """The test's own statement of the neutralisation rule."""
    i = 0
    while i < len(value) and (value[i].isspace() or value[i] == "\x00"):
        i += 1
    starts_bad = value[:1] != "" and value[0] in DANGEROUS_FIRST
    after_space_bad = value[:1].isspace() and value[i : i + 1] in {"=", "+", "-", "@"}
    return "'" + value if starts_bad or after_space_bad else value


def is_dangerous(cell: str) -> bool:
    stripped = cell.lstrip()
    return bool(cell) and (cell[0] in DANGEROUS_FIRST or stripped[:1] in {"=", "+", "-", "@"})


def line_endings_ok(raw: bytes, line_ending: str, n_lines: int) -> bool:
    """Outside quoted fields, every line break is `line_ending` and there are `n_lines`."""
    text = QUOTED_FIELD.sub("", raw.decode("utf-8"))
    if line_ending == "\r\n":
        return (
            text.count("\r\n") == n_lines
            and "\r" not in text.replace("\r\n", "")
            and ("\n" not in text.replace("\r\n", ""))
        )
    return "\r" not in text and text.count("\n") == n_lines


def contact_frame() -> pd.DataFrame:
    texts = list(TEXTS)
    phones = list(PHONES)
    n = len(texts)
    return pd.DataFrame(
        {
            "email": [f"person{i}@example.com" for i in range(n)],
            "phone": [phones[i % len(phones)] for i in range(n)],
            "first_name": texts,
            "last_name": list(reversed(texts)),
            "lawful_basis": ["Freely given consent from contact"] * n,
        }
    )


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_round_trip_for_every_preset(tmp_path: Path, name: str) -> None:
    preset = PRESETS[name]
    frame = contact_frame()
    paths = write_crm_csv(frame, preset, tmp_path)

    assert paths == [tmp_path / "contacts-0001.csv"]
    raw, rows = read_back(paths[0])
    assert raw.startswith(b"\xef\xbb\xbf") == preset.bom
    assert line_endings_ok(raw, preset.line_ending, len(frame) + 1)
    assert rows[0] == [preset.columns.get(c, c) for c in frame.columns]
    body = rows[1:]
    assert len(body) == len(frame)
    assert [r[2] for r in body] == [TEXTS[t] for t in frame["first_name"]]
    assert [r[3] for r in body] == [TEXTS[t] for t in frame["last_name"]]
    assert [r[1] for r in body] == [PHONES[p] for p in frame["phone"]]
    assert [r[0] for r in body] == list(frame["email"])
    for row in body:
        phone, *others = row[1], row[0], *row[2:]
        assert not any(is_dangerous(cell) for cell in others)
        assert E164.fullmatch(phone) or phone.startswith("'")


def test_bom_and_crlf_when_configured(tmp_path: Path) -> None:
    preset = preset_from_config("generic", {"bom": True, "line_ending": "CRLF"})
    frame = pd.DataFrame({"note": ["a\nb", "Søren"], "n": [1, 2]})
    (path,) = write_crm_csv(frame, preset, tmp_path)
    raw, rows = read_back(path)
    assert raw.startswith("\ufeffnote,n\r\n".encode())
    assert line_endings_ok(raw, "\r\n", 3)
    assert rows == [["note", "n"], ["a\nb", "1"], ["Søren", "2"]]


def test_hubspot_headers_key_and_options() -> None:
    hubspot = PRESETS["hubspot"]
    assert hubspot.header_for("email") == "Email"
    assert hubspot.header_for("phone") == "Phone Number"
    assert hubspot.header_for("first_name") == "First Name"
    assert hubspot.header_for("last_name") == "Last Name"
    assert hubspot.header_for("lawful_basis") == "Legal basis for processing contact's data"
    assert hubspot.header_for("shoe_size") == "shoe_size"
    assert hubspot.key_column == "email"
    assert (hubspot.max_rows, hubspot.max_bytes) == (1_048_575, 512_000_000)
    assert (hubspot.bom, hubspot.line_ending, hubspot.datetime_format) == (False, "\r\n", EPOCH_MS)
    salesforce = PRESETS["salesforce"]
    assert (salesforce.max_rows, salesforce.max_bytes) == (50_000, 100_000_000)
    assert (salesforce.true_value, salesforce.false_value) == ("1", "0")
    assert salesforce.header_for("email") == "Email"
    generic = PRESETS["generic"]
    assert (generic.bom, generic.line_ending, generic.date_format) == (False, "\n", "%Y-%m-%d")
    assert generic.columns == {}


@pytest.mark.parametrize(
    ("name", "words"),
    [("hubspot", ("true", "false")), ("salesforce", ("1", "0")), ("generic", ("true", "false"))],
)
def test_booleans_per_preset(tmp_path: Path, name: str, words: tuple[str, str]) -> None:
    frame = pd.DataFrame(
        {
            "email": ["a@x.dk", "b@x.dk", "c@x.dk"],
            "plain": [True, False, True],
            "nullable": pd.array([True, None, False], dtype="boolean"),
            "mixed": [np.True_, None, False],
        }
    )
    (path,) = write_crm_csv(frame, PRESETS[name], tmp_path)
    _, rows = read_back(path)
    yes, no = words
    assert [r[1:] for r in rows[1:]] == [[yes, yes, yes], [no, "", ""], [yes, no, no]]


@pytest.mark.parametrize(
    ("name", "stamp"),
    [
        ("hubspot", "1709647445123"),
        ("salesforce", "2024-03-05T14:04:05.123Z"),
        ("generic", "2024-03-05T14:04:05Z"),
    ],
)
def test_dates_and_datetimes_per_preset(tmp_path: Path, name: str, stamp: str) -> None:
    copenhagen = timezone(timedelta(hours=1))
    instant = datetime(2024, 3, 5, 15, 4, 5, 123_456, tzinfo=copenhagen)  # 14:04:05.123 UTC
    frame = pd.DataFrame(
        {
            "email": ["a@x.dk", "b@x.dk"],
            "born": [date(1990, 1, 2), None],
            "seen": pd.Series([pd.Timestamp(instant), pd.NaT]).dt.tz_convert("Europe/Copenhagen"),
            "seen_naive": pd.Series([pd.Timestamp("2024-03-05 14:04:05.123456"), pd.NaT]),
            "seen_object": pd.Series([instant, None], dtype=object),
            "seen_arrow": pd.Series([date(2001, 2, 3), None], dtype="date32[pyarrow]"),
        }
    )
    (path,) = write_crm_csv(frame, PRESETS[name], tmp_path)
    _, rows = read_back(path)
    assert rows[1][1:] == ["1990-01-02", stamp, stamp, stamp, "2001-02-03"]
    assert rows[2][1:] == ["", "", "", "", ""]


def test_epoch_ms_matches_hubspot_example() -> None:
    # HubSpot's own example: 1427997766000 is 02 Apr 2015 18:02:46 UTC
    value = crm._format_datetime(datetime(2015, 4, 2, 18, 2, 46, tzinfo=UTC), EPOCH_MS)
    assert value == "1427997766000"


def test_multi_value_cells(tmp_path: Path) -> None:
    preset = preset_from_config("generic", {"max_values": 2})
    frame = pd.DataFrame(
        {
            "topics": [
                ["sport", "tech", "travel"],
                ["b", "a", "b", None, ""],
                [],
                None,
                ("x",),
                np.array(["p", "q", "r"], dtype=object),
                ["=evil", "ok"],
                ["Søren Ærø", "ნინო"],
            ]
        }
    )
    (path,) = write_crm_csv(frame, preset, tmp_path)
    raw, rows = read_back(path)
    assert [r[0] for r in rows[1:]] == [
        "sport;tech",
        "b;a",
        "",
        "",
        "x",
        "p;q",
        "'=evil;ok",
        "Søren Ærø;ნინო",
    ]
    assert b'"sport;tech"' in raw  # cells holding ; are quoted


def test_multi_value_item_with_separator_is_an_error(tmp_path: Path) -> None:
    frame = pd.DataFrame({"topics": [["a;b", "c"]]})
    with pytest.raises(ValueError, match="separator"):
        write_crm_csv(frame, PRESETS["generic"], tmp_path)
    with pytest.raises(TypeError, match="must be strings"):
        write_crm_csv(pd.DataFrame({"topics": [["a", 3]]}), PRESETS["generic"], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_missing_values_are_empty_cells(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "email": ["a@x.dk", None, np.nan],
            "n": pd.array([1, None, 3], dtype="Int64"),
            "f": [np.nan, 1.5, None],
            "o": [None, pd.NA, pd.NaT],
            "s": pd.array(["x", None, pd.NA], dtype="string"),
        }
    )
    (path,) = write_crm_csv(frame, PRESETS["salesforce"], tmp_path)
    _, rows = read_back(path)
    assert rows[1:] == [
        ["a@x.dk", "1", "", "", "x"],
        ["", "", "1.5", "", ""],
        ["", "3", "", "", ""],
    ]


def test_numbers_are_not_free_text(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "i": [-5, 0, 12],
            "f": [-2.5, 1e16, 3.0],
            "o": pd.Series([-7, 0.1, np.float64(2e-7)], dtype=object),
        }
    )
    (path,) = write_crm_csv(frame, PRESETS["generic"], tmp_path)
    _, rows = read_back(path)
    assert rows[1:] == [
        ["-5", "-2.5", "-7"],
        ["0", "10000000000000000", "0.1"],
        ["12", "3", "0.0000002"],
    ]
    with pytest.raises(ValueError, match="infinite"):
        write_crm_csv(pd.DataFrame({"f": [np.inf]}), PRESETS["generic"], tmp_path / "inf")


def test_single_column_keeps_empty_rows(tmp_path: Path) -> None:
    frame = pd.DataFrame({"note": ["a", None, "", "b"]})
    (path,) = write_crm_csv(frame, PRESETS["generic"], tmp_path)
    _, rows = read_back(path)
    assert rows == [["note"], ["a"], [""], [""], ["b"]]


def test_no_rows_gives_one_header_only_file(tmp_path: Path) -> None:
    frame = pd.DataFrame({"email": pd.Series([], dtype=object)})
    (path,) = write_crm_csv(frame, PRESETS["hubspot"], tmp_path)
    assert path.read_bytes() == b"Email\r\n"


def test_missing_key_column_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'email'"):
        write_crm_csv(pd.DataFrame({"phone": ["+4520123456"]}), PRESETS["hubspot"], tmp_path)


def test_bad_values_and_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="column 'x'"):
        write_crm_csv(pd.DataFrame({"x": [{"a": 1}]}), PRESETS["generic"], tmp_path)
    with pytest.raises(ValueError, match="formula"):
        write_crm_csv(pd.DataFrame({"=x": ["a"]}), PRESETS["generic"], tmp_path)
    frame = pd.DataFrame({"email": ["a"], "Email": ["b"]})
    with pytest.raises(ValueError, match="same header"):
        write_crm_csv(frame, PRESETS["hubspot"], tmp_path)
    with pytest.raises(ValueError, match="stem"):
        write_crm_csv(pd.DataFrame({"x": ["a"]}), PRESETS["generic"], tmp_path, stem="../x")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- splitting


def frame_of(n: int, width: int = 20) -> pd.DataFrame:
    return pd.DataFrame({"email": [f"{i:0{width - 7}d}@x.test" for i in range(n)]})


@pytest.mark.parametrize(("n", "files"), [(3, [3]), (4, [3, 1]), (7, [3, 3, 1]), (6, [3, 3])])
def test_split_at_max_rows(tmp_path: Path, n: int, files: list[int]) -> None:
    preset = preset_from_config("generic", {"max_rows": 3})
    frame = frame_of(n)
    paths = write_crm_csv(frame, preset, tmp_path)
    assert [p.name for p in paths] == [f"contacts-{i:04d}.csv" for i in range(1, len(files) + 1)]
    assert [len(read_back(p)[1]) - 1 for p in paths] == files
    header, rows = read_all(paths)
    assert header == ["email"]
    assert [r[0] for r in rows] == list(frame["email"])


@pytest.mark.parametrize("bom", [False, True])
def test_split_at_max_bytes_counts_bom_and_header(tmp_path: Path, *, bom: bool) -> None:
    header = (3 if bom else 0) + len("email\n")
    row = 41  # 40 characters + "\n"
    frame = frame_of(5, width=40)
    exact = preset_from_config("generic", {"bom": bom, "max_bytes": header + 2 * row})
    paths = write_crm_csv(frame, exact, tmp_path / "exact")
    assert [p.stat().st_size for p in paths] == [header + 2 * row] * 2 + [header + row]
    assert [r[0] for r in read_all(paths)[1]] == list(frame["email"])

    one_less = preset_from_config("generic", {"bom": bom, "max_bytes": header + 2 * row - 1})
    paths = write_crm_csv(frame, one_less, tmp_path / "less")
    assert [p.stat().st_size for p in paths] == [header + row] * 5
    assert [r[0] for r in read_all(paths)[1]] == list(frame["email"])


def test_byte_limit_counts_utf8_bytes(tmp_path: Path) -> None:
    names = ["Søren Ærø", "ნინო ბერიძე", "Ελένη", "🎉🎉"]
    frame = pd.DataFrame({"name": names})
    sizes = [len((n + "\n").encode()) for n in names]
    header = len(b"name\n")
    limit = max(64, header + sizes[0] + sizes[1])
    preset = preset_from_config("generic", {"max_bytes": limit})
    paths = write_crm_csv(frame, preset, tmp_path)
    assert all(p.stat().st_size <= limit for p in paths)
    assert sum(p.stat().st_size for p in paths) == header * len(paths) + sum(sizes)
    assert [r[0] for r in read_all(paths)[1]] == names


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 40), max_rows=st.integers(1, 12), block=st.integers(1, 9))
def test_splitting_never_loses_or_repeats_rows(n: int, max_rows: int, block: int) -> None:
    preset = preset_from_config("generic", {"max_rows": max_rows, "max_bytes": 200})
    frame = frame_of(n, width=9 + n % 7)
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(crm, "_BLOCK_ROWS", block)
        paths = write_crm_csv(frame, preset, Path(tmp))
        counts = [len(read_back(p)[1]) - 1 for p in paths]
        sizes = [p.stat().st_size for p in paths]
        header, rows = read_all(paths)
    assert header == ["email"]
    assert [r[0] for r in rows] == list(frame["email"])
    assert all(c <= max_rows for c in counts)
    assert all(s <= 200 for s in sizes)
    assert n == 0 or all(c > 0 for c in counts)


def test_row_larger_than_the_byte_limit_is_an_error(tmp_path: Path) -> None:
    preset = preset_from_config("generic", {"max_bytes": 64})
    frame = pd.DataFrame({"note": ["short", "x" * 100]})
    with pytest.raises(ValueError, match="row 2"):
        write_crm_csv(frame, preset, tmp_path)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- atomicity


def test_failure_midway_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crm, "_BLOCK_ROWS", 3)
    earlier = tmp_path / "contacts-0001.csv"
    earlier.write_text("email\nold@x.dk\n")
    preset = preset_from_config("generic", {"max_rows": 2})
    values: list[object] = [f"p{i}@x.dk" for i in range(9)] + [object()]
    frame = pd.DataFrame({"email": values})
    with pytest.raises(TypeError, match="column 'email'"):
        write_crm_csv(frame, preset, tmp_path)
    assert sorted(tmp_path.iterdir()) == [earlier]  # no new, temporary or half file
    assert earlier.read_text() == "email\nold@x.dk\n"


def test_failure_while_writing_bytes_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_write = crm._SplitWriter._write

    def failing_write(self: crm._SplitWriter, lines: list[str]) -> None:
        calls.append(len(lines))
        if len(calls) == 3:
            raise OSError("disk full")
        real_write(self, lines)

    monkeypatch.setattr(crm._SplitWriter, "_write", failing_write)
    preset = preset_from_config("generic", {"max_rows": 2})
    with pytest.raises(OSError, match="disk full"):
        write_crm_csv(frame_of(9), preset, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_stale_files_of_a_longer_earlier_export_are_removed(tmp_path: Path) -> None:
    preset = preset_from_config("generic", {"max_rows": 2})
    write_crm_csv(frame_of(5), preset, tmp_path)
    other = tmp_path / "companies-0007.csv"
    other.write_text("x\n")
    paths = write_crm_csv(frame_of(3), preset, tmp_path)
    assert sorted(tmp_path.iterdir()) == sorted([*paths, other])
    assert [r[0] for r in read_all(paths)[1]] == list(frame_of(3)["email"])


# --------------------------------------------------------------------------- property tests

free_text = st.text(st.characters(codec="utf-8"), max_size=30)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(free_text, min_size=1, max_size=8),
    name=st.sampled_from(sorted(PRESETS)),
)
def test_any_text_round_trips_neutralised(values: list[str], name: str) -> None:
    preset = PRESETS[name]
    frame = pd.DataFrame({"email": [f"{i}@x.dk" for i in range(len(values))], "note": values})
    with tempfile.TemporaryDirectory() as tmp:
        (path,) = write_crm_csv(frame, preset, Path(tmp))
        raw, rows = read_back(path)
    assert raw.startswith(b"\xef\xbb\xbf") == preset.bom
    assert [r[1] for r in rows[1:]] == [expected_text(v) for v in values]
    assert not any(is_dangerous(r[1]) for r in rows[1:])


@given(value=free_text)
def test_neutralise_cell_agrees_with_the_rule(value: str) -> None:
    assert neutralise_cell(value) == expected_text(value)


# A mixed column's cells go through `crm._cell_texts`, which formats a list of strings once per
# distinct content; its oracle is the plain per-cell `_cell_text`.
list_items = st.one_of(
    st.sampled_from(["Hiking", "=cmd", " @x", "", "Kitchen", "a;b", "\tz", '"q"']),
    free_text,
    st.none(),
    st.just(float("nan")),
)
mixed_cells = st.one_of(
    st.lists(list_items, max_size=4),
    st.sampled_from([["Hiking", "Kitchen"], ["=cmd"], [], ["Hiking", "Hiking", None]]),
    free_text,
    st.none(),
    st.integers(-5, 5),
)


def _per_cell(values: list[object], preset: CrmPreset, column: str) -> list[str] | str:
    """The old per-cell formatting of a mixed column, or the error it raises."""
    fmt = crm._Formats(preset)
    try:
        return [crm._cell_text(v, fmt, column=column, exempt=False) for v in values]
    except (TypeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


@settings(max_examples=150, deadline=None)
@given(
    cells=st.lists(mixed_cells, max_size=12),
    shared=st.booleans(),
    name=st.sampled_from(sorted(PRESETS)),
    max_values=st.integers(1, 3),
)
def test_mixed_columns_format_like_the_per_cell_rule(
    cells: list[object], *, shared: bool, name: str, max_values: int
) -> None:
    preset = PRESETS[name].model_copy(update={"max_values": max_values})
    if shared:  # cells of equal content sharing one list object, as the export stage makes them
        cells = [*cells, *cells]
    column = pd.Series(cells, dtype=object)
    expected = _per_cell(list(cells), preset, "note")
    try:
        got: list[str] | str = crm._column_texts(
            column, crm._Formats(preset), column="note", exempt=False
        )
    except (TypeError, ValueError) as exc:
        got = f"{type(exc).__name__}: {exc}"
    assert got == expected


def test_a_list_with_a_separator_fails_however_often_it_repeats(tmp_path: Path) -> None:
    bad = ["a;b"]
    frame = pd.DataFrame({"segments": pd.Series([["ok"], bad, bad, ["ok"]], dtype=object)})
    with pytest.raises(ValueError, match="contains the separator"):
        write_crm_csv(frame, PRESETS["generic"], tmp_path)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- config


def test_preset_from_config_merges_columns_and_options() -> None:
    preset = preset_from_config(
        "hubspot",
        {
            "columns": {"phone": "Mobile Phone Number", "lawful_basis": None, "city": "City"},
            "line_ending": "lf",
            "max_rows": 10,
        },
    )
    assert preset.columns["phone"] == "Mobile Phone Number"
    assert "lawful_basis" not in preset.columns
    assert preset.columns["city"] == "City"
    assert preset.columns["email"] == "Email"
    assert (preset.line_ending, preset.max_rows, preset.name) == ("\n", 10, "hubspot")
    assert PRESETS["hubspot"].columns["phone"] == "Phone Number"  # the preset is unchanged


def test_preset_from_config_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        preset_from_config(
            "salesforce",
            {"max_rows": 0, "colour": "red", "datetime_format": "iso", "true_value": "=1"},
        )
    text = str(info.value)
    assert len(info.value.problems) == 4
    for key in ("max_rows", "colour", "datetime_format", "true_value"):
        assert key in text


def test_preset_from_config_rejects_unknown_presets_and_bad_mappings() -> None:
    with pytest.raises(ConfigError, match="known presets: generic, hubspot, salesforce"):
        preset_from_config("pipedrive", {})
    with pytest.raises(ConfigError, match="same header"):
        preset_from_config("hubspot", {"columns": {"work_email": "Email"}})
    with pytest.raises(ConfigError, match="line_ending"):
        preset_from_config("generic", {"line_ending": "\r"})
    with pytest.raises(ConfigError, match="date_format"):
        preset_from_config("generic", {"date_format": "%Y-%m-%d %L"})


def test_preset_model_is_frozen_and_strict() -> None:
    preset = PRESETS["generic"]
    with pytest.raises(ValueError, match="frozen"):
        preset.bom = True  # type: ignore[misc]
    with pytest.raises(ValueError, match="extra"):
        CrmPreset(name="x", delimiter=";")  # type: ignore[call-arg]


def test_millisecond_directive_respects_literal_percent() -> None:
    moment = datetime(2024, 3, 5, 14, 4, 5, 7_000, tzinfo=UTC)
    assert crm._format_datetime(moment, "%H:%M:%S.%L %%L") == "14:04:05.007 %L"
