"""CRM import CSV files (HubSpot, Salesforce, generic) that load on the first try.

The caller has already applied policy (gate C) and minimised the columns; this module only
formats and writes. Input is a DataFrame, one row per profile, whose cells are strings,
numbers, booleans, lists of strings, dates/datetimes or missing values. Output is one or
more UTF-8 CSV files `<stem>-0001.csv`, `<stem>-0002.csv`, ... (always numbered, so a
consumer can glob them), each with the header row, each within the preset's row and byte
limits, each written under a temporary name and renamed into place.

Format (all presets)
--------------------
* RFC 4180: comma separator, header row, a field is quoted when it contains `"` (doubled
  inside), `,`, CR or LF (RFC 4180 2.6-2.7). We also quote fields containing `;` or tab:
  quoting is always allowed (RFC 4180 2.5) and it stops a spreadsheet that splits on `;`
  (Excel in many European locales) or tab from starting a new cell in the middle of a value
  (see "formula injection" below).
* Missing values (None, NaN, NA, NaT, empty list) are empty cells. Salesforce ignores empty
  values on update (a null needs `#N/A`), HubSpot leaves the property unchanged, so an
  empty cell never erases CRM data.
* Numbers are written as plain decimals without exponent (`1e16` -> `10000000000000000`,
  `3.0` -> `3`); infinities are rejected.
* Multi-value cells (lists) are joined with the preset's separator, missing/empty items
  dropped, duplicates dropped (first occurrence kept), then cut to the first `max_values`
  items. An item containing the separator is an error (it would become two values).
* `datetime.date` values use `date_format`; datetimes (datetime64 columns, `datetime`,
  `Timestamp`) are converted to UTC (naive ones are taken as UTC) and use
  `datetime_format`: a strftime pattern in which `%L` means milliseconds (3 digits), or
  `"epoch_ms"` for Unix time in milliseconds.
* `max_rows` counts data rows (the header is extra); `max_bytes` counts every byte of the
  file as written: BOM, header and rows. Rows are never split; a file is closed when the
  next row would exceed either limit. A single row that cannot fit with the header is an
  error.
* Files are created by `tempfile.mkstemp`, so they are readable by the owner only (0600):
  they hold personal data. All files are renamed into place after the last row is
  written; numbered files of an earlier, longer export with the same stem are then
  removed so that no stale file is imported with the new ones.

Formula injection (OWASP "CSV Injection")
-----------------------------------------
Spreadsheets evaluate a cell beginning with `=`, `+`, `-` or `@` as a formula even when
the CSV field is quoted, so RFC 4180 quoting alone is not a defence. OWASP: "ensure that
no cells begin with any of the following characters: = + - @ Tab (0x09) Carriage return
(0x0D) Line feed (0x0A)" and prepend a single quote
(https://owasp.org/www-community/attacks/CSV_Injection, source
github.com/OWASP/www-community pages/attacks/CSV_Injection.md); ASVS 1.2.10 adds NUL (0x00)
(https://asvs.emil.hemdal.se/1.2.10). So a free-text cell (any string, and a joined
multi-value cell) starting with one of `= + - @ \\t \\r \\n \\0` gets a leading `'`, which
spreadsheets take as "this is text" (CWE-1236 gives the same mitigation).

Decisions beyond the first character, per OWASP's remark that a dangerous character can
reach the start of a cell in other ways:

* Leading whitespace: we also prefix cells whose first character after any run of
  whitespace/NUL is `= + - @` (e.g. `"  =1+2"`). OWASP names only the first character, but
  the cell turns dangerous as soon as anything on the way trims it (Excel's text import
  and many ETL tools do; Salesforce states it does not trim), and the cost is one visible
  `'` on values that start that way. Our own rule, not OWASP's.
* Separators and quotes inside a value: our `,`, `"`, CR and LF are quoted per RFC 4180,
  and so are `;` and tab (see above), so no reader that honours quotes starts a new cell
  inside a value.

The `'` is visible to plain-text consumers (the CRM stores `'=SUM(A1:A2)`): that is the
accepted trade-off. Numbers, booleans and dates we format ourselves are not free text and
are never prefixed (`-5` stays a number).

Phone columns: E.164 numbers start with `+`, and prefixing them would break the CRM's
phone field. Columns named in `formula_exempt` (default: `phone`) are validated upstream
(`phonenumbers` -> E.164, DESIGN.md section 4); here a value in such a column is left
as is only when it is exactly `+` followed by 2-15 digits (no leading 0), which cannot
carry a formula. Any other value in an exempt column is neutralised like free text.

Presets and sources
-------------------
`hubspot` (contacts import, https://knowledge.hubspot.com/import-and-export/set-up-your-import-file,
updated 2024-12-03):
  * UTF-8 ("be UTF-8 encoded if foreign language characters are included"), no BOM (not
    required; a BOM can end up in the first header name), CRLF line endings (RFC 4180).
  * Starter/Professional/Enterprise: files up to 512 MB and "a limit of 1,048,576 rows per
    file" (free tools: 20 MB). We use `max_bytes = 512,000,000` (decimal MB, the smaller
    reading) and `max_rows = 1,048,575` data rows so that header + rows stay within
    1,048,576 lines (the number is Excel's sheet limit, which includes the header). Fewer
    than 1,000 columns.
  * Headers are the property labels: `Email`, `Phone Number`, `First Name`, `Last Name`,
    and the GDPR property "Legal basis for processing contact's data" (`hs_legal_basis`,
    https://knowledge.hubspot.com/articles/kcs_article/contacts/how-can-i-track-lawful-basis-of-processing-in-hubspot).
    Key column `email`: "the primary identifier for a contact in HubSpot is an email
    address"; an existing email updates that contact.
  * Dates `YYYY-MM-DD` (year-month-day is an accepted order; choose that date format in the
    import or `dateFormat: YEAR_MONTH_DAY` in the imports API,
    https://developers.hubspot.com/docs/api/crm/imports). Datetimes as Unix milliseconds,
    which the import accepts in CSV files
    (https://knowledge.hubspot.com/da/import-and-export/set-up-your-import-file) and HubSpot
    stores as UTC (https://developers.hubspot.com/docs/faq/how-should-timestamps-be-formatted-for-hubspots-apis).
  * Single checkbox `true`/`false` (HubSpot accepts True/Yes and False/No); multiple
    checkboxes separated by `;`
    (https://knowledge.hubspot.com/nl/crm-setup/import-data-to-checkbox-properties).
    HubSpot documents no per-cell value count; we keep Salesforce's 100.
`salesforce` (Data Import Wizard and Data Loader / Bulk API 2.0, contacts):
  * Data Import Wizard: "import up to 50,000 records at a time" (Trailhead, quoted at
    https://pathtosalesforce.com/index.php/courses/home?quizId=102&view=quiz; Salesforce
    help: use the wizard when "loading less than 50,000 records", file up to 100 MB, each
    record at most 400 KB, https://www.paretopi.com/blog/when-to-use-data-loader-for-importing-data-into-salesforce).
    `max_rows = 50,000`, `max_bytes = 100,000,000`; Bulk API 2.0 also asks for uploads of
    at most 100 MB (https://help.salesforce.com/s/articleView?id=ind.prepare_csv_files.htm).
  * UTF-8 without BOM (a BOM would become part of the first field name in Bulk API 2.0),
    LF line endings (Bulk API 2.0 `lineEnding` LF, the Salesforce CLI default).
  * Headers are field API names (`Email`, `Phone`, `FirstName`, `LastName`); the lawful
    basis goes to a custom field `Lawful_Basis__c` (inference: no standard Contact field).
    Key column `email` (the wizard de-duplicates contacts by email).
  * Dates `yyyy-MM-dd` ("The date fields must follow the yyyy-MM-dd format", CSV File
    Readiness page above); datetimes `yyyy-MM-dd'T'HH:mm:ss.SSS'Z'` in UTC, a format Data
    Loader supports (https://developer.salesforce.com/docs/atlas.en-us.262.0.dataLoader.meta/dataLoader/supported_data_types.htm).
  * Checkboxes `1`/`0` ("use 1 for checked values and 0 for unchecked values"; Data Loader
    also accepts 1/0); multi-select picklist values separated by `;`, at most 100 values per
    record, more leaves the field blank, so we cut to 100
    (https://help.salesforce.com/apex/HTViewHelpDoc?id=xcloud.notes_on_importing_data.htm).
`generic`: UTF-8 without BOM, LF, ISO 8601 dates and UTC datetimes
(`2024-03-05T13:04:05Z`), `true`/`false`, `;`, 100 values, 1,048,575 rows (fits an Excel
sheet with its header), 1,000,000,000 bytes, identity column mapping, no key column.

`preset_from_config(name, overrides)` starts from one of these and applies overrides from
config (`columns` is merged into the preset's mapping; a `null` value drops an entry).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Final, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from profiles.errors import ConfigError
from profiles.files import private_folder

EPOCH_MS: Final = "epoch_ms"
"""`datetime_format` value for Unix time in milliseconds."""

FORMULA_TRIGGERS: Final = frozenset("=+-@\t\r\n\x00")
"""A free-text cell starting with one of these gets a leading `'` (OWASP, ASVS 1.2.10)."""

_TRIGGERS_AFTER_SPACE = re.compile(r"[\s\x00]*[=+\-@]")
_NEEDS_QUOTES = re.compile(r'[",\r\n;\t]')
_UNIT_SEP = "\x1f"
_RISKY_CELL_START = re.compile(r"\x1f[\s\x00]*[=+\-@]|\x1f[\t\r\n\x00]")
"""Over cells joined by (and led by) U+001F, finds every cell `neutralise_cell` would change
(and some that it would not: a U+001F inside a value), never missing one."""
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_STEM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_BOM: Final = "\ufeff"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_BLOCK_ROWS = 50_000
"""Rows formatted at a time: bounds memory, keeps the work column-wise."""

LineEnding = Literal["\r\n", "\n"]
_LINE_ENDING_ALIASES: Final = {"crlf": "\r\n", "lf": "\n"}


def neutralise_cell(text: str) -> str:
    """`text` with a leading `'` if a spreadsheet could evaluate it as a formula."""
    if text and (
        text[0] in FORMULA_TRIGGERS or (text[0].isspace() and _TRIGGERS_AFTER_SPACE.match(text))
    ):
        return "'" + text
    return text


def _split_millis(fmt: str) -> list[str]:
    """Split a strftime pattern at each `%L` (milliseconds), keeping `%%` and others."""
    parts: list[str] = []
    buf: list[str] = []
    i = 0
    while i < len(fmt):
        pair = fmt[i : i + 2]
        if pair == "%L":
            parts.append("".join(buf))
            buf = []
        elif len(pair) == 2 and pair[0] == "%":
            buf.append(pair)
        else:
            buf.append(fmt[i])
            i += 1
            continue
        i += 2
    parts.append("".join(buf))
    return parts


def _to_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _format_datetime(value: datetime, fmt: str) -> str:
    """One datetime in UTC as `fmt` (strftime with `%L`, or `epoch_ms`)."""
    utc = _to_utc(value)
    if fmt == EPOCH_MS:
        return str((utc - _EPOCH) // _ONE_MS)
    millis = f"{utc.microsecond // 1000:03d}"
    return millis.join(utc.strftime(part) for part in _split_millis(fmt))


class CrmPreset(BaseModel):
    """How one CRM wants its import file; see the module docstring for each choice."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    columns: dict[str, str] = Field(default_factory=dict)
    """Our field -> the CRM's header. Columns not listed keep their own name."""
    bom: bool = False
    line_ending: LineEnding = "\n"
    date_format: str = "%Y-%m-%d"
    datetime_format: str = "%Y-%m-%dT%H:%M:%SZ"
    true_value: str = "true"
    false_value: str = "false"
    multi_value_separator: str = Field(default=";", min_length=1, max_length=1)
    max_values: int = Field(default=100, ge=1)
    """Items kept per multi-value cell (the first ones, in the order given)."""
    max_rows: int = Field(default=1_048_575, ge=1)
    """Data rows per file; the header row is not counted."""
    max_bytes: int = Field(default=1_000_000_000, ge=64)
    """Bytes per file as written: BOM, header and rows."""
    key_column: str | None = None
    """Our field the CRM matches records on; it must be present in the frame."""
    phone_format: Literal["E.164"] = "E.164"
    """Phone columns hold E.164 (`+4520123456`), validated upstream."""

    @field_validator("line_ending", mode="before")
    @classmethod
    def _line_ending_alias(cls, value: object) -> object:
        if isinstance(value, str):
            return _LINE_ENDING_ALIASES.get(value.lower(), value)
        return value

    @field_validator("columns")
    @classmethod
    def _check_columns(cls, value: dict[str, str]) -> dict[str, str]:
        problems = [f"{field!r}: empty field name" for field in value if not field]
        for field, header in value.items():
            problems.extend(f"{field!r}: {p}" for p in _header_problems(header))
        headers = list(value.values())
        dupes = sorted({h for h in headers if headers.count(h) > 1})
        if dupes:
            problems.append(f"several fields map to the same header: {dupes}")
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("date_format")
    @classmethod
    def _check_date_format(cls, value: str) -> str:
        if "%" not in value or "%L" in value:
            raise ValueError("must be a strftime pattern with at least one % directive, no %L")
        date(2001, 2, 3).strftime(value)
        return value

    @field_validator("datetime_format")
    @classmethod
    def _check_datetime_format(cls, value: str) -> str:
        if value != EPOCH_MS and "%" not in value:
            raise ValueError(f"must be {EPOCH_MS!r} or a strftime pattern (%L = milliseconds)")
        _format_datetime(datetime(2001, 2, 3, 4, 5, 6, 789_000, tzinfo=UTC), value)
        return value

    @field_validator("true_value", "false_value")
    @classmethod
    def _check_bool_word(cls, value: str) -> str:
        if not value or neutralise_cell(value) != value:
            raise ValueError("must be non-empty and must not start with = + - @ or a control")
        return value

    @field_validator("multi_value_separator")
    @classmethod
    def _check_separator(cls, value: str) -> str:
        if value in {'"', "\r", "\n"} or (value.isspace() and value != "\t"):
            raise ValueError("must not be a quote, a line break or a space")
        return value

    def header_for(self, field: str) -> str:
        """The CRM header our `field` is written under."""
        return self.columns.get(field, field)


def _header_problems(header: str) -> list[str]:
    problems: list[str] = []
    if not header:
        problems.append("empty header")
    elif neutralise_cell(header) != header:
        problems.append(f"header {header!r} starts with a formula character")
    if "\r" in header or "\n" in header:
        problems.append(f"header {header!r} contains a line break")
    return problems


_HUBSPOT = CrmPreset(
    name="hubspot",
    columns={
        "email": "Email",
        "phone": "Phone Number",
        "first_name": "First Name",
        "last_name": "Last Name",
        "country": "Country/Region",
        "lawful_basis": "Legal basis for processing contact's data",
    },
    bom=False,
    line_ending="\r\n",
    date_format="%Y-%m-%d",
    datetime_format=EPOCH_MS,
    true_value="true",
    false_value="false",
    multi_value_separator=";",
    max_values=100,
    max_rows=1_048_575,
    max_bytes=512_000_000,
    key_column="email",
)

_SALESFORCE = CrmPreset(
    name="salesforce",
    columns={
        "email": "Email",
        "phone": "Phone",
        "first_name": "FirstName",
        "last_name": "LastName",
        "lawful_basis": "Lawful_Basis__c",
    },
    bom=False,
    line_ending="\n",
    date_format="%Y-%m-%d",
    datetime_format="%Y-%m-%dT%H:%M:%S.%LZ",
    true_value="1",
    false_value="0",
    multi_value_separator=";",
    max_values=100,
    max_rows=50_000,
    max_bytes=100_000_000,
    key_column="email",
)

_GENERIC = CrmPreset(name="generic")

PRESETS: Final[Mapping[str, CrmPreset]] = {p.name: p for p in (_HUBSPOT, _SALESFORCE, _GENERIC)}


def preset_from_config(name: str, overrides: Mapping[str, Any] | None = None) -> CrmPreset:
    """Preset `name` with `overrides` from config applied.

    `columns` is merged into the preset's mapping (a None value drops that field's entry);
    every other key replaces the preset's value. Raises `ConfigError` listing every
    problem (unknown preset, unknown option, invalid value).
    """
    where = f"crm preset {name!r}"
    base = PRESETS.get(name)
    if base is None:
        raise ConfigError(where, [f"unknown preset; known presets: {', '.join(sorted(PRESETS))}"])
    data = base.model_dump()
    for key, value in (overrides or {}).items():
        if key == "columns" and isinstance(value, Mapping):
            merged = dict(data["columns"])
            for field, header in value.items():
                if header is None:
                    merged.pop(field, None)
                else:
                    merged[field] = header
            data["columns"] = merged
        else:
            data[str(key)] = value
    try:
        return CrmPreset.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in err['loc']) or 'preset'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ConfigError(where, problems) from exc


# --------------------------------------------------------------------------- formatting


class _Formats:
    """The preset's formatting choices, prepared once per write."""

    def __init__(self, preset: CrmPreset) -> None:
        self.date_format = preset.date_format
        self.datetime_format = preset.datetime_format
        self.datetime_parts = _split_millis(preset.datetime_format)
        self.true_value = preset.true_value
        self.false_value = preset.false_value
        self.separator = preset.multi_value_separator
        self.max_values = preset.max_values


def _free_texts(values: Sequence[object], *, exempt: bool) -> list[str]:
    """Strings (others = missing -> "") with formula triggers neutralised."""
    texts = [v if isinstance(v, str) else "" for v in values]
    if not _RISKY_CELL_START.search(_UNIT_SEP + _UNIT_SEP.join(texts)):
        return texts  # one C-level scan clears the usual column of plain values
    if exempt:
        e164 = _E164.fullmatch
        return [t if e164(t) else neutralise_cell(t) for t in texts]
    triggers = FORMULA_TRIGGERS
    return [
        "'" + t
        if t and (t[0] in triggers or (t[0].isspace() and _TRIGGERS_AFTER_SPACE.match(t)))
        else t
        for t in texts
    ]


def _float_text(value: float, column: str) -> str:
    if math.isnan(value):
        return ""
    if math.isinf(value):
        raise ValueError(f"column {column!r}: infinite number cannot be imported")
    text = repr(float(value))
    if "e" in text:
        return _positional(text)
    return text[:-2] if text.endswith(".0") else text


def _positional(text: str) -> str:
    """`1e+16` -> `10000000000000000`: CRMs do not all read exponents."""
    return str(np.format_float_positional(float(text), trim="-"))


def _is_missing(value: object) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, np.datetime64) and bool(np.isnat(value))


def _multi_text(items: Sequence[object], fmt: _Formats, column: str) -> str:
    """A list cell: items joined with the separator, de-duplicated, cut to max_values."""
    texts = [item for item in items if isinstance(item, str)]
    if len(texts) != len(items) and not all(
        isinstance(item, str) or _is_missing(item) for item in items
    ):
        raise TypeError(f"column {column!r}: multi-value items must be strings")
    kept = list(dict.fromkeys(t for t in texts if t))[: fmt.max_values]
    joined = fmt.separator.join(kept)
    if kept and joined.count(fmt.separator) != len(kept) - 1:
        raise ValueError(
            f"column {column!r}: a multi-value item contains the separator "
            f"{fmt.separator!r}; it would import as several values"
        )
    return neutralise_cell(joined)


def _scalar_text(value: object, fmt: _Formats, column: str) -> str:
    """A non-text, non-missing, non-list cell."""
    if isinstance(value, bool | np.bool_):
        return fmt.true_value if value else fmt.false_value
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return _float_text(float(value), column)
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    if isinstance(value, datetime):
        return _format_datetime(value, fmt.datetime_format)
    if isinstance(value, date):
        return value.strftime(fmt.date_format)
    raise TypeError(f"column {column!r}: cannot write a {type(value).__name__} value to CSV")


def _cell_text(value: object, fmt: _Formats, *, column: str, exempt: bool) -> str:
    if isinstance(value, str):
        return _free_texts([value], exempt=exempt)[0]
    if isinstance(value, list | tuple | np.ndarray):
        return _multi_text(list(value) if isinstance(value, np.ndarray) else value, fmt, column)
    if _is_missing(value):
        return ""
    return _scalar_text(value, fmt, column)


def _datetime_texts(series: pd.Series, fmt: _Formats) -> list[str]:
    """A datetime64 column (naive = UTC), vectorised."""
    utc = series.dt.tz_localize("UTC") if series.dt.tz is None else series.dt.tz_convert("UTC")
    missing = utc.isna().to_numpy()
    naive = utc.dt.tz_localize(None)
    millis = naive.to_numpy(dtype="datetime64[ms]").astype(np.int64)
    if fmt.datetime_format == EPOCH_MS:
        texts: list[str] = millis.astype(str).tolist()
    else:
        pieces = [
            naive.dt.strftime(part).fillna("").tolist() if "%" in part else [part] * len(naive)
            for part in fmt.datetime_parts
        ]
        if len(pieces) == 1:
            texts = pieces[0]
        else:
            ms_texts = [f"{m:03d}" for m in (millis % 1000).tolist()]
            texts = [
                ms.join(row) for ms, row in zip(ms_texts, zip(*pieces, strict=True), strict=True)
            ]
    return ["" if gap else text for text, gap in zip(texts, missing.tolist(), strict=True)]


def _column_texts(series: pd.Series, fmt: _Formats, *, column: str, exempt: bool) -> list[str]:
    """One column's cells as text (not yet CSV-quoted), column-wise where the dtype allows."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        missing = series.isna().to_numpy()
        flags = series.fillna(value=False).to_numpy(dtype=bool)
        words = np.where(flags, fmt.true_value, fmt.false_value).astype(object)
        return np.where(missing, "", words).tolist()  # type: ignore[no-any-return]
    if pd.api.types.is_integer_dtype(dtype):
        gaps = series.isna().to_numpy().tolist()
        ints = series.to_numpy(dtype=object).tolist()
        return ["" if gap else str(int(v)) for v, gap in zip(ints, gaps, strict=True)]
    if pd.api.types.is_float_dtype(dtype):
        floats = series.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isinf(floats).any():
            raise ValueError(f"column {column!r}: infinite number cannot be imported")
        return [
            "" if t == "nan" else t[:-2] if t.endswith(".0") else _positional(t) if "e" in t else t
            for t in floats.astype(str).tolist()
        ]
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(dtype):
        return _datetime_texts(series, fmt)
    values = series.to_numpy(dtype=object)
    if isinstance(dtype, pd.StringDtype) or pd.api.types.infer_dtype(values) in {"string", "empty"}:
        return _free_texts(values.tolist(), exempt=exempt)
    return _cell_texts(values.tolist(), fmt, column=column, exempt=exempt)


def _cell_texts(values: list[object], fmt: _Formats, *, column: str, exempt: bool) -> list[str]:
    """`_cell_text` of each value of a mixed column.

    A multi-value column repeats a few combinations (segments, top interests), so a list of
    strings is formatted once per distinct content and its text reused.
    """
    joined: dict[tuple[str, ...], str] = {}
    texts: list[str] = []
    for value in values:
        if isinstance(value, list):
            try:
                "".join(value)  # a key only for lists of strings: they compare safely
            except TypeError:
                pass
            else:
                key = tuple(value)
                text = joined.get(key)
                if text is None:
                    text = joined[key] = _multi_text(value, fmt, column)
                texts.append(text)
                continue
        texts.append(_cell_text(value, fmt, column=column, exempt=exempt))
    return texts


def _csv_fields(texts: list[str]) -> list[str]:
    """RFC 4180 fields: quoted (quotes doubled) when they hold `" , CR LF ; tab`."""
    search = _NEEDS_QUOTES.search
    if not search("".join(texts)):
        return texts
    return ['"' + t.replace('"', '""') + '"' if search(t) else t for t in texts]


# --------------------------------------------------------------------------- writing


class _SplitWriter:
    """Streams CSV lines into numbered temporary files within the row and byte limits."""

    def __init__(self, out_dir: Path, *, stem: str, header: str, preset: CrmPreset) -> None:
        self._out_dir = out_dir
        self._stem = stem
        self._header = ((_BOM if preset.bom else "") + header).encode("utf-8")
        self._max_rows = preset.max_rows
        self._max_bytes = preset.max_bytes
        if len(self._header) >= self._max_bytes:
            raise ValueError(f"the header alone is {len(self._header)} bytes >= max_bytes")
        self._temps: list[Path] = []
        self._fh: IO[bytes] | None = None
        self._rows = 0
        self._bytes = 0
        self._rows_seen = 0

    def add(self, lines: list[str]) -> None:
        """Append rows (each a full line with its line ending), opening files as needed."""
        max_rows, max_bytes, room = self._max_rows, self._max_bytes, len(self._header)
        start = 0
        for i, line in enumerate(lines):
            size = len(line) if line.isascii() else len(line.encode("utf-8"))
            if room + size > max_bytes:
                raise ValueError(
                    f"row {self._rows_seen + i + 1} is {size} bytes; with the header "
                    f"({room} bytes) it exceeds max_bytes={max_bytes}"
                )
            if self._fh is None or self._rows >= max_rows or self._bytes + size > max_bytes:
                self._write(lines[start:i])
                self._open()
                start = i
            self._rows += 1
            self._bytes += size
        self._write(lines[start:])
        self._rows_seen += len(lines)

    def _write(self, lines: list[str]) -> None:
        if lines and self._fh is not None:
            self._fh.write("".join(lines).encode("utf-8"))

    def _open(self) -> None:
        self._close()
        number = len(self._temps) + 1
        fd, name = tempfile.mkstemp(
            dir=self._out_dir, prefix=f".{self._stem}-{number:04d}.", suffix=".csv.tmp"
        )
        self._temps.append(Path(name))
        self._fh = os.fdopen(fd, "wb")
        self._fh.write(self._header)
        self._rows = 0
        self._bytes = len(self._header)

    def _close(self) -> None:
        if self._fh is None:
            return
        fh, self._fh = self._fh, None
        try:
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fh.close()
        written = self._temps[-1].stat().st_size
        if written != self._bytes:  # our byte count is what the limits rely on
            raise RuntimeError(f"wrote {written} bytes but counted {self._bytes}")

    def commit(self) -> list[Path]:
        """Close the last file, rename every file into place, drop stale numbered files."""
        if not self._temps:
            self._open()  # no rows: one file with the header only
        self._close()
        finals = [
            self._out_dir / f"{self._stem}-{n:04d}.csv" for n in range(1, len(self._temps) + 1)
        ]
        for temp, final in zip(self._temps, finals, strict=True):
            os.replace(temp, final)
        self._temps = []
        _fsync_dir(self._out_dir)
        stale = re.compile(re.escape(self._stem) + r"-(\d{4,})\.csv")
        for path in self._out_dir.iterdir():
            match = stale.fullmatch(path.name)
            if match and int(match.group(1)) > len(finals):
                path.unlink(missing_ok=True)
        return finals

    def abort(self) -> None:
        """Close and delete every temporary file; nothing of this write stays behind."""
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()
        for temp in self._temps:
            temp.unlink(missing_ok=True)
        self._temps = []


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _headers(frame: pd.DataFrame, preset: CrmPreset) -> list[str]:
    if frame.shape[1] == 0:
        raise ValueError("the frame has no columns")
    if not all(isinstance(c, str) for c in frame.columns) or not frame.columns.is_unique:
        raise ValueError("column names must be unique strings")
    if preset.key_column is not None and preset.key_column not in frame.columns:
        raise ValueError(
            f"preset {preset.name!r} matches records on {preset.key_column!r}, "
            "which the frame lacks"
        )
    headers = [preset.header_for(str(c)) for c in frame.columns]
    problems = [p for h in headers for p in _header_problems(h)]
    dupes = sorted({h for h in headers if headers.count(h) > 1})
    if dupes:
        problems.append(f"several columns get the same header: {dupes}")
    if problems:
        raise ValueError("; ".join(problems))
    return headers


def write_crm_csv(
    frame: pd.DataFrame,
    preset: CrmPreset,
    out_dir: Path,
    *,
    stem: str = "contacts",
    formula_exempt: Collection[str] = ("phone",),
) -> list[Path]:
    """Write `frame` as CRM import files `<stem>-0001.csv`, ... in `out_dir`; return them.

    Files are split before a file would exceed `preset.max_rows` data rows or
    `preset.max_bytes` bytes (header repeated in each, rows never split). Each file is
    written under a temporary name; all are renamed into place only after every row was
    written, then numbered files of an earlier, longer export with the same stem are
    removed. On any error no new file and no temporary file is left behind.
    `formula_exempt` names our columns (before header mapping) that hold validated E.164
    phone numbers; see the module docstring.
    """
    if not _STEM.fullmatch(stem):
        raise ValueError(f"stem {stem!r} must be a plain file name part")
    headers = _headers(frame, preset)
    private_folder(out_dir)
    fmt = _Formats(preset)
    eol = preset.line_ending
    columns = [str(c) for c in frame.columns]
    exempt = set(formula_exempt)
    writer = _SplitWriter(
        out_dir, stem=stem, header=",".join(_csv_fields(headers)) + eol, preset=preset
    )
    try:
        for start in range(0, len(frame), _BLOCK_ROWS):
            block = frame.iloc[start : start + _BLOCK_ROWS]
            fields = [
                _csv_fields(_column_texts(block[c], fmt, column=c, exempt=c in exempt))
                for c in columns
            ]
            if len(fields) == 1:  # an empty line would read as no row at all
                lines = [(f or '""') + eol for f in fields[0]]
            else:
                lines = [",".join(row) + eol for row in zip(*fields, strict=True)]
            writer.add(lines)
        return writer.commit()
    except BaseException:
        writer.abort()
        raise
