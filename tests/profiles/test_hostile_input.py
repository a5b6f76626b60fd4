"""Hostile and broken input: every file is read or refused with a precise error, nothing is lost.

Each case is built in `tmp_path` and goes through both ways the flow reads a source
(`read_source`, and `plan_chunks` + `read_chunk`), then the identifier stage, the quarantine
rows and the accounting. A file that cannot be read at all raises a SourceError naming the
source, the file and what is wrong; any other file has every record end exactly once, readable
or unparseable with its line and a detail that names the problem and never a value.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from profiles.accounting import SourceCounts
from profiles.config import IdentifierConfig, SourceConfig
from profiles.errors import SourceError
from profiles.hashing import Key, Pseudonymiser
from profiles.identifiers import IdentifierStage
from profiles.ingest import SourceChunk, plan_chunks, read_chunk, read_source
from profiles.quarantine import (
    Sealer,
    open_sealed,
    rows_without_identifier,
    seal_context,
    unparseable_rows,
)
from profiles.types import ReasonCode

KEY = Key.from_secret(b"\x05" * 32)
QUARANTINE_KEY = Key.from_secret(b"\x06" * 32)
HEADER = b"Name,E-mail,Phone,Country\n"
UNCLOSED = "CSV syntax: a quoted field is never closed (the next line is read as a new record)"
DETAIL = re.compile(
    r"expected \d+ fields, found \d+|bytes not valid in encoding [\w-]+|NUL byte in field \d+"
    r"|CSV syntax: [\w ,.()'-]+"
)
"""Every detail an unparseable record can have: positions and counts, never a value."""


def _good(i: int) -> bytes:
    return f"N{i},u{i}@example.com,,DK\n".encode()


def _source(path: Path, **kw: object) -> SourceConfig:
    data: dict[str, object] = {
        "name": "crm",
        "path": path,
        "columns": {
            "first_name": "Name",
            "email": "E-mail",
            "phone": "Phone",
            "country": "Country",
        },
        "default_region": "DK",
    }
    data.update(kw)
    return SourceConfig.model_validate(data)


def _file(tmp_path: Path, data: bytes, name: str = "crm.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def stage() -> Iterator[IdentifierStage]:
    """One in-process stage for the module (outcomes do not depend on the cache)."""
    with IdentifierStage(IdentifierConfig(), Pseudonymiser(KEY), workers=1) as one:
        yield one


@dataclass
class _Outcome:
    """What one way of reading made of a source, through the stage and the accounting."""

    lines: list[int]
    """Readable rows' lines, in order."""
    bad: list[tuple[int, str]]
    """Unparseable records: line and detail."""
    identified: pd.DataFrame
    counts: SourceCounts
    quarantine: pd.DataFrame
    """Quarantine rows without `sealed` (its nonces are random)."""


def _through(
    source: SourceConfig, chunks: Iterable[SourceChunk], stage: IdentifierStage
) -> _Outcome:
    counts = SourceCounts(source=source.name, file=source.path.name)
    sealer = Sealer(QUARANTINE_KEY)
    lines: list[int] = []
    bad: list[tuple[int, str]] = []
    identified: list[pd.DataFrame] = []
    quarantine: list[pd.DataFrame] = []
    for chunk in chunks:
        out = stage.process(chunk.frame, source)
        counts.add_identified(out)
        counts.add_unparseable(len(chunk.unparseable))
        lines += chunk.frame["line"].tolist()
        bad += list(zip(chunk.unparseable["line"], chunk.unparseable["detail"], strict=True))
        identified.append(out.reset_index(drop=True))
        rows = pd.concat(
            [
                unparseable_rows(source.name, source.path.name, chunk.unparseable, sealer),
                rows_without_identifier(source.name, source.path.name, out, chunk.frame, sealer),
            ],
            ignore_index=True,
        )
        for line, token in zip(rows["line"], rows["sealed"], strict=True):
            sealed = open_sealed(token, seal_context(source.name, line), lambda _: QUARANTINE_KEY)
            assert isinstance(json.loads(sealed), list | dict)  # the raw record, sealed whole
        quarantine.append(rows.drop(columns=["sealed"]))
    counts.check()
    assert counts.rows_in == counts.rows_accepted + counts.rows_quarantined
    assert counts.rows_in == len(lines) + len(bad)
    assert len(set(lines) | {line for line, _ in bad}) == counts.rows_in  # every record once
    return _Outcome(
        lines=lines,
        bad=[(int(line), str(detail)) for line, detail in bad],
        identified=pd.concat(identified, ignore_index=True) if identified else pd.DataFrame(),
        counts=counts,
        quarantine=pd.concat(quarantine, ignore_index=True) if quarantine else pd.DataFrame(),
    )


def _read(source: SourceConfig, stage: IdentifierStage, chunk_rows: int = 2) -> _Outcome:
    """Both ways through: they must agree on everything; returns the outcome."""
    sequential = _through(source, read_source(source, chunk_rows), stage)
    specs = plan_chunks(source, chunk_rows)
    planned = _through(source, (read_chunk(source, spec) for spec in specs), stage)
    assert planned.lines == sequential.lines
    assert planned.bad == sequential.bad
    assert planned.counts.to_dict() == sequential.counts.to_dict()
    if sequential.lines:
        pd.testing.assert_frame_equal(planned.identified, sequential.identified)
        pd.testing.assert_frame_equal(planned.quarantine, sequential.quarantine)
    for _, detail in sequential.bad:
        assert DETAIL.fullmatch(detail), detail
    return sequential


def _refused(source: SourceConfig) -> str:
    """The SourceError both ways of reading raise (the same one); returns its message."""
    with pytest.raises(SourceError) as sequential:
        list(read_source(source, 2))
    with pytest.raises(SourceError) as planned:
        _read_planned(source)
    message = str(sequential.value)
    assert str(planned.value) == message
    assert message.startswith(f"source {source.name}: {source.path}")
    return message


def _read_planned(source: SourceConfig) -> list[SourceChunk]:
    return [read_chunk(source, spec) for spec in plan_chunks(source, 2)]


def _reasons(outcome: _Outcome, field: str) -> list[str | None]:
    column = outcome.identified[f"{field}_reason"]
    return [None if pd.isna(v) else str(v) for v in column]


# --- files that cannot be read at all ---------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"", r"crm\.csv is empty \(no header row\)$", id="empty"),
        pytest.param(b"\xef\xbb\xbf", r"crm\.csv is empty \(no header row\)$", id="bom-only"),
        pytest.param(b"\n\r\n\r", r"crm\.csv is empty \(no header row\)$", id="blank-lines-only"),
        pytest.param(
            b"Na\xefme,E-mail,Phone,Country\n" + _good(1),
            r"crm\.csv: header is not valid utf-8; check the source's `encoding`$",
            id="undecodable-header",
        ),
        pytest.param(
            "Name,E-mail,Phone,Country\n".encode("utf-16") + _good(1),
            r"header is not valid utf-8",
            id="utf16-declared-utf8",
        ),
        pytest.param(
            "Name,E-mail,Phone,Country\nAnn,ann@example.com,,DK\n".encode("utf-16-le"),
            r"crm\.csv: header line 1, column 1 holds a NUL byte: the file is binary or not in "
            r"utf-8 \(UTF-16\?\)",
            id="utf16le-no-bom-declared-utf8",
        ),
        pytest.param(
            b"Name,E-mail,Phone,Country,No\x00tes\n" + _good(1),
            r"crm\.csv: header line 1, column 5 holds a NUL byte",
            id="nul-in-unmapped-header",
        ),
        pytest.param(
            b"Name,E-mail,Ph\x00one,Country\n" + _good(1),
            r"crm\.csv: header line 1, column 3 holds a NUL byte",
            id="nul-in-mapped-header",
        ),
        pytest.param(
            b"Name,E-mail,Phone,Country,E-mail\n" + _good(1),
            r"crm\.csv: header line 1: mapped column\(s\) 'E-mail' \(columns 2, 5\) appear more",
            id="duplicate-mapped-header",
        ),
        pytest.param(
            b"\n\r\n\nName,E-mail,Phone,Country,Phone\n" + _good(1),
            r"crm\.csv: header line 4: mapped column\(s\) 'Phone' \(columns 3, 5\)",
            id="duplicate-header-after-blank-lines",
        ),
        pytest.param(
            b"Name,Email,Phone,Country\n" + _good(1),
            r"crm\.csv: mapped column\(s\) 'E-mail' not in the header; "
            r"found 'Name', 'Email', 'Phone', 'Country'$",
            id="missing-mapped-column",
        ),
        pytest.param(
            b'Name,"E-mail,Phone,Country\n' + _good(1) + _good(2),
            r"crm\.csv: header line 1: a quoted field is never closed",
            id="header-quote-never-closed",
        ),
        pytest.param(
            b'\r\n\nName,"E-mail,Phone,Country\n' + _good(1) + b"N2,no line break at the end",
            r"crm\.csv: header line 3: a quoted field is never closed",
            id="header-quote-never-closed-after-blank-lines",
        ),
    ],
)
def test_a_file_that_cannot_be_read_is_refused_with_a_precise_error(
    tmp_path: Path, data: bytes, expected: str
) -> None:
    message = _refused(_source(_file(tmp_path, data)))
    assert re.search(expected, message), message
    assert "example.com" not in message


def test_a_file_without_a_header_is_refused_without_showing_its_first_record(
    tmp_path: Path,
) -> None:
    data = b"Ann,ann@example.com,+45 20 12 34 56,DK\n" + _good(1)
    message = _refused(_source(_file(tmp_path, data)))
    assert message.endswith(
        "mapped column(s) 'Name', 'E-mail', 'Phone', 'Country' not in the header; found "
        "4 name(s) that look like a record's values (not shown): does the file have a header row?"
    )
    for value in ("Ann", "ann@example.com", "20 12 34 56"):
        assert value not in message


def test_binary_garbage_is_refused_and_the_message_stays_short(tmp_path: Path) -> None:
    garbage = random.Random(7).randbytes(256 * 1024)
    message = _refused(_source(_file(tmp_path, garbage)))
    assert len(message) < 300
    # read as Latin-1 every byte is text: still no header with the mapped columns
    latin1 = _refused(_source(_file(tmp_path, garbage.replace(b"\x00", b"")), encoding="latin-1"))
    assert len(latin1) < 2000  # at most 30 names of at most 40 characters are listed
    assert "mapped column(s)" in latin1 or "quoted field is never closed" in latin1


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [
        ("base64", "does not decode text"),
        ("rot13", "does not decode text"),
        ("idna", "cannot read"),
    ],
)
def test_an_encoding_that_cannot_read_files_is_refused(
    tmp_path: Path, encoding: str, expected: str
) -> None:
    path = _file(tmp_path, HEADER + _good(1))
    # enrich.yaml is refused when it is loaded, with the key's file and line ...
    with pytest.raises(ValidationError, match=f"{encoding!r} is not a text encoding"):
        _source(path, encoding=encoding)
    # ... and the reader, should a config get past that, refuses it too
    valid = _source(path)
    message = _refused(valid.model_copy(update={"encoding": encoding}))
    assert f"encoding {encoding!r} {expected}" in message


def _parquet(tmp_path: Path, rows: int, name: pa.Array | None = None) -> Path:
    path = tmp_path / "crm.parquet"
    table = pa.table(
        {
            "Name": name if name is not None else [f"N{i}" for i in range(rows)],
            "E-mail": [f"u{i}@example.com" for i in range(rows)],
            "Phone": [""] * rows,
            "Country": ["DK"] * rows,
        }
    )
    pq.write_table(table, path, row_group_size=rows // 5, compression="snappy")
    return path


def test_a_truncated_or_damaged_parquet_file_is_refused(tmp_path: Path) -> None:
    data = _parquet(tmp_path, rows=1000).read_bytes()
    for cut in (len(data) // 2, len(data) - 3, 4):
        path = _file(tmp_path, data[:cut], "crm.parquet")
        message = _refused(_source(path, format="parquet"))
        assert message.endswith("crm.parquet is not a readable Parquet file (ArrowInvalid)")
    # the footer is whole, compressed pages in the middle are not
    middle = len(data) // 2
    damaged = data[:middle] + bytes(200) + data[middle + 200 :]
    message = _refused(_source(_file(tmp_path, damaged, "crm.parquet"), format="parquet"))
    assert re.search(
        r"crm\.parquet: rows \d+-\d+ cannot be read \(\w+\); the file is damaged$", message
    )


def test_a_parquet_column_without_a_text_form_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "crm.parquet"
    table = pa.table(
        {"Name": ["A"], "E-mail": [["a@example.com"]], "Phone": ["1"], "Country": [""]}
    )
    pq.write_table(table, path)
    message = _refused(_source(path, format="parquet"))
    assert message.endswith(
        "mapped column 'E-mail' is of type list<element: string>, which has no text form"
    )


# --- files that are read: every record ends once ------------------------------------------------


def test_a_header_only_file_has_no_records(tmp_path: Path, stage: IdentifierStage) -> None:
    for data in (HEADER, HEADER.rstrip(b"\n"), b"\xef\xbb\xbf" + HEADER + b"\n\n"):
        source = _source(_file(tmp_path, data))
        assert plan_chunks(source, 2) == []
        outcome = _read(source, stage)
        assert outcome.counts.rows_in == 0
        assert outcome.lines == []
        assert outcome.bad == []


@pytest.mark.parametrize(
    ("tail", "bad"),
    [
        pytest.param(b"Bo,bo@exa", (4, "expected 4 fields, found 2"), id="mid-record"),
        pytest.param(b'Bo,"bo@exa', (4, UNCLOSED), id="mid-quoted-field"),
        pytest.param(b'Bo,bo@example.com,,"D', (4, UNCLOSED), id="mid-quoted-last-field"),
        pytest.param(
            b"Bo,bo@example.com,,D\xc3", (4, "bytes not valid in encoding utf-8"), id="mid-char"
        ),
    ],
)
def test_a_truncated_file_loses_only_its_last_record(
    tmp_path: Path, stage: IdentifierStage, tail: bytes, bad: tuple[int, str]
) -> None:
    outcome = _read(_source(_file(tmp_path, HEADER + _good(1) + _good(2) + tail)), stage)
    assert outcome.lines == [2, 3]
    assert outcome.bad == [bad]
    assert outcome.counts.rows_accepted == 2


def test_a_truncated_utf16_file_loses_only_its_last_record(
    tmp_path: Path, stage: IdentifierStage
) -> None:
    data = (HEADER + _good(1) + _good(2)).decode().encode("utf-16")
    outcome = _read(_source(_file(tmp_path, data[:-1]), encoding="utf-16"), stage)
    assert outcome.lines == [2]
    assert outcome.bad == [(3, "bytes not valid in encoding utf-16")]


def test_a_quote_never_closed_does_not_swallow_the_rest_of_the_file(
    tmp_path: Path, stage: IdentifierStage
) -> None:
    rows = [_good(i) for i in range(20)]
    rows[6] = b'N6,"u6@example.com,,DK\n'
    outcome = _read(_source(_file(tmp_path, HEADER + b"".join(rows))), stage, chunk_rows=3)
    assert outcome.bad == [(8, UNCLOSED)]
    assert outcome.lines == [n for n in range(2, 22) if n != 8]
    assert outcome.counts.rows_accepted == 19


def test_bytes_of_another_encoding_spoil_only_their_records(
    tmp_path: Path, stage: IdentifierStage
) -> None:
    data = HEADER + _good(1) + "Jørgen,j@example.com,,DK\n".encode("latin-1") + _good(3)
    outcome = _read(_source(_file(tmp_path, data)), stage)
    assert outcome.lines == [2, 4]
    assert outcome.bad == [(3, "bytes not valid in encoding utf-8")]


def test_rows_with_another_delimiter_are_unparseable_between_good_ones(
    tmp_path: Path, stage: IdentifierStage
) -> None:
    data = HEADER + _good(1) + b"Bo;bo@example.com;;DK\n" + _good(3) + b"Cy;c@example.com\n"
    outcome = _read(_source(_file(tmp_path, data)), stage)
    assert outcome.lines == [2, 4]
    assert outcome.bad == [(3, "expected 4 fields, found 1"), (5, "expected 4 fields, found 1")]


def test_nul_bytes_make_their_record_unparseable(tmp_path: Path, stage: IdentifierStage) -> None:
    data = (
        HEADER
        + _good(1)
        + b"Bo,bo@exam\x00ple.com,,DK\n"
        + _good(3)
        + b"\x00,c@example.com,,DK\n"
        + b"Di,d@example.com,\x00\x00\n"  # and a wrong field count: that is said first
    )
    outcome = _read(_source(_file(tmp_path, data)), stage)
    assert outcome.lines == [2, 4]
    assert outcome.bad == [
        (3, "NUL byte in field 2"),
        (5, "NUL byte in field 1"),
        (6, "expected 4 fields, found 3"),
    ]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_binary_garbage_after_a_header_is_unparseable_and_the_rows_around_it_flow(
    tmp_path: Path, stage: IdentifierStage, seed: int
) -> None:
    garbage = random.Random(seed).randbytes(64 * 1024)
    before = HEADER + _good(1) + garbage + b"\n"
    outcome = _read(_source(_file(tmp_path, before + _good(3))), stage, chunk_rows=50)
    last = len(re.findall(rb"\r\n|\r|\n", before)) + 1
    assert (outcome.lines[0], outcome.lines[-1]) == (2, last)
    assert outcome.bad  # whatever the garbage held, it is accounted for record by record


def test_a_10_mb_field_is_read_checked_and_sealed(tmp_path: Path, stage: IdentifierStage) -> None:
    huge = b"x" * (10 * 1024 * 1024)
    data = (
        HEADER
        + _good(1)
        + b"Big," + huge + b",+45 20 12 34 56,DK\n"  # a huge email; the phone links the row
        + b'"' + huge + b'",b@example.com,,DK\n'  # a huge quoted name
        + b"Lone," + huge + b"@example.com,,DK\n"  # a huge email and nothing else
        + _good(5)
    )  # fmt: skip
    started = time.process_time()
    outcome = _read(_source(_file(tmp_path, data)), stage)
    assert time.process_time() - started < 10
    assert outcome.lines == [2, 3, 4, 5, 6]
    assert _reasons(outcome, "email") == [None, "EMAIL_SYNTAX", None, "EMAIL_SYNTAX", None]
    assert outcome.counts.rows_accepted == 4
    assert outcome.quarantine["line"].tolist() == [5]
    assert outcome.quarantine["field_reasons"].tolist() == ["email=EMAIL_SYNTAX"]


def test_millions_of_blank_lines_around_the_data_are_no_records(
    tmp_path: Path, stage: IdentifierStage
) -> None:
    data = (
        b"\n" * 1_000_000
        + HEADER
        + _good(1)
        + b"\r\n" * 1_000_000
        + _good(2)
        + b"\r" * 1_000_000
        + _good(3)
        + b"\n" * 500_000
    )
    started = time.process_time()
    outcome = _read(_source(_file(tmp_path, data)), stage, chunk_rows=1)
    assert time.process_time() - started < 10
    assert outcome.lines == [1_000_002, 2_000_003, 3_000_004]
    assert outcome.counts.rows_in == 3


def test_mixed_line_breaks_keep_line_numbers(tmp_path: Path, stage: IdentifierStage) -> None:
    data = (
        b"Name,E-mail,Phone,Country\r\n"
        + b"A,a@example.com,,DK\n"
        + b"B,b@example.com,,DK\r\n"
        + b'"C\r\nC",c@example.com,,DK\r'  # a line break inside quotes, then a lone CR
        + b"D,d@example.com\n"
        + b"E,e@example.com,,DK"  # no line break at the end
    )
    outcome = _read(_source(_file(tmp_path, data)), stage)
    assert outcome.lines == [2, 3, 4, 7]
    assert outcome.bad == [(6, "expected 4 fields, found 2")]


def test_a_repeated_unmapped_column_is_harmless(tmp_path: Path, stage: IdentifierStage) -> None:
    data = b"Name,E-mail,Notes,Phone,Country,Notes\nA,a@example.com,x,,DK,y\n"
    outcome = _read(_source(_file(tmp_path, data)), stage)
    assert outcome.lines == [2]
    assert outcome.counts.rows_accepted == 1


# email addresses with Unicode tricks: raw value, and the reason code (None: accepted)
TRICKS: list[tuple[str, ReasonCode | None]] = [
    ("\u0430nn@example.com", ReasonCode.EMAIL_MIXED_SCRIPT),  # Cyrillic a in a Latin name
    ("ann@ex\u0430mple.com", ReasonCode.EMAIL_MIXED_SCRIPT),  # ... in a Latin domain label
    ("ann@xn--exmple-4nf.com", ReasonCode.EMAIL_MIXED_SCRIPT),  # the same, in punycode
    ("\u03b1lpha@example.com", ReasonCode.EMAIL_MIXED_SCRIPT),  # Greek alpha
    ("\U0001d41ann@example.com", ReasonCode.EMAIL_MIXED_SCRIPT),  # mathematical bold a
    ("\uff4aohn@example.com", ReasonCode.EMAIL_MIXED_SCRIPT),  # fullwidth j
    ("a\u202enn@example.com", ReasonCode.EMAIL_SYNTAX),  # right-to-left override
    ("a\u200bnn@example.com", ReasonCode.EMAIL_SYNTAX),  # zero-width space
    ("\u0438\u0432\u0430\u043d@\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444", None),
    ("ann@xn--e1afmkfd.xn--p1ai", None),  # ann@пример.рф in punycode
    ("\u7530\u4e2d\u305f\u308d\u3046@\u4f8b\u3048.jp", None),  # Han + Hiragana
    ("ann@example.com", None),
]


def test_emails_with_unicode_tricks_get_a_reason_and_the_row_still_links(
    tmp_path: Path, stage: IdentifierStage
) -> None:
    lines = [f"T{i},{email},+45 20 12 34 {10 + i},DK\n" for i, (email, _) in enumerate(TRICKS)]
    lines.append("Lone,\u0430nn@example.com,,DK\n")  # no other identifier: quarantined
    outcome = _read(_source(_file(tmp_path, (HEADER.decode() + "".join(lines)).encode())), stage)
    expected = [r.value if r else None for _, r in TRICKS]
    assert _reasons(outcome, "email") == [*expected, "EMAIL_MIXED_SCRIPT"]
    assert outcome.counts.rows_accepted == len(TRICKS)  # each links through its phone
    assert outcome.counts.field_rejections["email"] == {
        "EMAIL_MIXED_SCRIPT": 7,
        "EMAIL_SYNTAX": 2,
    }
    assert outcome.quarantine["field_reasons"].tolist() == ["email=EMAIL_MIXED_SCRIPT"]
    assert outcome.quarantine["detail"].tolist() == ["every identifier was rejected"]


def test_an_idn_domain_in_punycode_and_in_unicode_has_one_pseudonym(
    tmp_path: Path, stage: IdentifierStage
) -> None:
    spellings = [
        "ann@xn--e1afmkfd.xn--p1ai",
        "ann@\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444",
        "Ann@\u041f\u0420\u0418\u041c\u0415\u0420.\u0420\u0424",
        "ann@XN--E1AFMKFD.XN--P1AI",
    ]
    data = HEADER.decode() + "".join(f"N,{email},,DK\n" for email in spellings)
    outcome = _read(_source(_file(tmp_path, data.encode())), stage)
    assert outcome.identified["email_pseudonym"].notna().all()
    assert outcome.identified["email_pseudonym"].nunique() == 1


ABSURD_PHONES = [
    "1234567890" * 50,  # 500 digits
    "-- () .. //",  # only punctuation
    "\U0001f4de\U0001f4de\U0001f4de",  # emoji
    "+0",
    "call me maybe",
    "+45 20 12 34 56 ext. " + "1234567890" * 5,  # a 50-digit extension
    "+45 20 12 34 56 / +46 70 123 45 67",  # two numbers in one field
]


def test_absurd_phone_strings_are_phone_invalid(tmp_path: Path, stage: IdentifierStage) -> None:
    lines = [f"P{i},p{i}@example.com,{phone},DK\n" for i, phone in enumerate(ABSURD_PHONES)]
    outcome = _read(_source(_file(tmp_path, (HEADER.decode() + "".join(lines)).encode())), stage)
    assert _reasons(outcome, "phone") == ["PHONE_INVALID"] * len(ABSURD_PHONES)
    assert outcome.counts.rows_accepted == len(ABSURD_PHONES)  # the email links each row


def test_parquet_bytes_that_are_not_utf8_spoil_only_their_row(
    tmp_path: Path, stage: IdentifierStage
) -> None:
    names = [b"J\xf8rgen" if i == 17 else f"N{i}".encode() for i in range(30)]
    path = _parquet(tmp_path, rows=30, name=pa.array(names, type=pa.binary()))
    outcome = _read(_source(path, format="parquet"), stage, chunk_rows=7)
    assert outcome.bad == [(18, "bytes not valid in encoding utf-8")]
    assert outcome.lines == [n for n in range(1, 31) if n != 18]
