"""Signals in the provider cache: JSON text checked and rewritten canonically, in bulk.

A cache entry's `signals` is a JSON list of objects with the keys of
`enrichers.base.SIGNAL_COLUMNS` that belong to a lookup rather than to a profile:

    topic        taxonomy dot key (`interest.sports.running`), at most 128 characters
    confidence   a number strictly between 0 and 1
    observed_at  ISO 8601 time with a zone (`Z` or `+hh:mm`), stored as UTC `...Z`
    kind         declared, observed or inferred
    raw_score    missing, a number (no `+`), or a short label (a letter first, no spaces)

Nothing else is accepted: no other key, no nested value, nothing that could carry an
address or a phone number. What is stored is rebuilt from the checked fields (the input
text is never written), so even a key given twice cannot slip a value through.

A million entries are read by Arrow's JSON reader (one object per line) and checked and
rewritten with Arrow compute: no Python per entry. Only when Arrow refuses the batch are the
entries parsed one by one, to count how many are unreadable; messages name the field and a
count, never a value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from profiles.store import checks
from profiles.types import SignalKind

SIGNAL_FIELDS: tuple[str, ...] = ("topic", "confidence", "observed_at", "kind", "raw_score")
"""Keys of one cached signal, in the order they are stored."""
TOPIC_PATTERN = r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*"
"""Taxonomy dot keys, as `policy.bundle` spells them."""
TOPIC_MAX_LENGTH = 128
RAW_SCORE_PATTERN = (
    r"-?[0-9]{1,6}(\.[0-9]{1,17})?([eE]-?[0-9]{1,3})?%?|[A-Za-z][A-Za-z0-9_.:%/-]{0,31}"
)
"""A provider's own score: a number (`0.87`, `87%`, `-3`, `1e-05`) or a label (`high`, `A`).
No `+` and no `@`, and a number has at most six digits before the point, so neither a phone
number nor an address fits."""
_TIME_PATTERN = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})"
)
_KINDS: tuple[str, ...] = tuple(str(k) for k in SignalKind)
_WRAP = "cached"
_SIGNAL_TYPE = pa.struct(
    [
        ("topic", pa.string()),
        ("confidence", pa.float64()),
        ("observed_at", pa.string()),
        ("kind", pa.string()),
        ("raw_score", pa.string()),
    ]
)
_SCHEMA = pa.schema([(_WRAP, pa.list_(_SIGNAL_TYPE))])
_MIN_BLOCK = 1 << 22
_EMPTY = "[]"


@dataclass(frozen=True)
class CheckedSignals:
    """Canonical JSON text per entry and how many signals each holds."""

    text: pd.Series
    counts: npt.NDArray[np.int64]


def _fail(bad: int, message: str) -> None:
    if bad:
        raise ValueError(f"{message} ({bad:,} row(s))")


def _large(value: str) -> pa.Scalar:
    return pa.scalar(value, pa.large_string())


def _contiguous(values: pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)


def _ndjson(texts: pa.Array) -> tuple[pa.Buffer, int]:
    """One line `{"cached": <text>}` per entry, as one buffer; and the longest line."""
    lines = pc.binary_join_element_wise(
        _large('{"' + _WRAP + '":'), texts, _large("}\n"), _large("")
    )
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[
        lines.offset : lines.offset + len(lines) + 1
    ]
    longest = int(np.diff(offsets).max()) if len(lines) else 0
    data = lines.buffers()[2]
    return data.slice(int(offsets[0]), int(offsets[-1] - offsets[0])), longest


def _without_line_breaks(texts: pa.Array) -> pa.Array:
    """`texts` with CR and LF made spaces: whitespace outside JSON strings, and invalid JSON
    inside them either way, so the meaning is kept and each entry stays on one line."""
    data = texts.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    if not (np.any(raw == 0x0A) or np.any(raw == 0x0D)):
        return texts
    return pc.replace_substring_regex(texts, "[\r\n]", " ")


def _read(texts: pa.Array) -> pa.Array | None:
    """The entries as list<struct>, or None if Arrow refuses any of them."""
    data, longest = _ndjson(_without_line_breaks(texts))
    try:
        table = pa_json.read_json(
            pa.BufferReader(data),
            read_options=pa_json.ReadOptions(block_size=max(_MIN_BLOCK, 2 * longest)),
            parse_options=pa_json.ParseOptions(
                explicit_schema=_SCHEMA, unexpected_field_behavior="error"
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    # an entry holding `]}{"cached":[` would read as two rows; the count gives it away
    if table.num_rows != len(texts):
        return None
    return _contiguous(table.column(_WRAP))


class _RepeatedKeyError(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _RepeatedKeyError
    return dict(pairs)


def _readable_signal(item: object) -> bool:
    if item is None:
        return True
    if not isinstance(item, dict) or not set(item) <= set(SIGNAL_FIELDS):
        return False
    for key, field in item.items():
        if key == "confidence":
            number = isinstance(field, int | float) and not isinstance(field, bool)
            if not (field is None or number):
                return False
        elif not (field is None or isinstance(field, str)):
            return False
    return True


def _readable(text: str) -> bool:
    """Whether one entry has the shape the Arrow reader accepts (used to count failures)."""
    try:
        value = json.loads(text, object_pairs_hook=_pairs)
    except ValueError:
        return False
    if value is None:
        return True
    return isinstance(value, list) and all(_readable_signal(item) for item in value)


def _unreadable(texts: pa.Array) -> ValueError:
    bad = sum(1 for t in texts.to_pylist() if not _readable(t))
    count = f"{bad:,} row(s)" if bad else "the batch could not be read"
    return ValueError(
        "cache.signals must be JSON lists of objects with only the keys "
        f"{', '.join(SIGNAL_FIELDS)} ({count})"
    )


def _rows_with(bad: pa.Array, parents: pa.Array) -> int:
    """How many entries hold a signal where `bad` is true."""
    return len(pc.unique(pc.filter(parents, pc.fill_null(bad, True))))


def _matches(values: pa.Array, pattern: str) -> pa.Array:
    return pc.fill_null(pc.match_substring_regex(values, f"^(?:{pattern})$"), False)


def _parse_times(values: pa.Array) -> pa.Array:
    """ISO texts (already shaped like one) as UTC microseconds; impossible dates fail."""
    try:
        return pc.cast(values, pa.timestamp("us", tz="UTC"))
    except pa.ArrowInvalid:
        pass  # the message quotes the value; count the failures instead
    bad = 0
    for text in values.to_pylist():
        try:
            datetime.fromisoformat(text)
        except ValueError:
            bad += 1
    count = f"{bad:,} row(s)" if bad else "the batch could not be read"
    raise ValueError(f"cache.signals: observed_at must be a valid ISO 8601 time ({count})")


def _check(signals: pa.StructArray, parents: pa.Array) -> pa.Array:
    """Check every field of every signal; returns observed_at as UTC timestamps."""
    _fail(
        _rows_with(pc.is_null(signals), parents),
        "cache.signals: each signal must be an object",
    )
    fields = {name: signals.field(name) for name in SIGNAL_FIELDS}
    topic = fields["topic"]
    topic_ok = pc.and_(
        _matches(topic, TOPIC_PATTERN),
        pc.less_equal(pc.fill_null(pc.utf8_length(topic), 0), TOPIC_MAX_LENGTH),
    )
    _fail(
        _rows_with(pc.invert(topic_ok), parents),
        f"cache.signals: topic must be a taxonomy dot key of at most {TOPIC_MAX_LENGTH} characters",
    )
    confidence = fields["confidence"]
    confidence_ok = pc.and_(pc.greater(confidence, 0.0), pc.less(confidence, 1.0))
    _fail(
        _rows_with(pc.invert(pc.fill_null(confidence_ok, False)), parents),
        "cache.signals: confidence must be a number strictly between 0 and 1",
    )
    observed = fields["observed_at"]
    _fail(
        _rows_with(pc.invert(_matches(observed, _TIME_PATTERN)), parents),
        "cache.signals: observed_at must be an ISO 8601 time with a zone",
    )
    kind_ok = pc.fill_null(pc.is_in(fields["kind"], value_set=pa.array(_KINDS)), False)
    _fail(
        _rows_with(pc.invert(kind_ok), parents),
        f"cache.signals: kind must be one of {', '.join(_KINDS)}",
    )
    raw = fields["raw_score"]
    raw_ok = pc.or_(pc.is_null(raw), _matches(raw, RAW_SCORE_PATTERN))
    _fail(
        _rows_with(pc.invert(raw_ok), parents),
        "cache.signals: raw_score must be missing, a number without '+' or a short label",
    )
    return _parse_times(observed)


def _utc_text(times: pa.Array) -> pa.Array:
    """UTC timestamps as `YYYY-MM-DDTHH:MM:SS.ffffffZ`."""
    micros = pc.cast(times, pa.int64()).to_numpy(zero_copy_only=False)
    text = np.datetime_as_string(micros.astype("datetime64[us]"), unit="us")
    return pc.binary_join_element_wise(pa.array(text, pa.string()), "Z", "")


def _serialise(lists: pa.ListArray, signals: pa.StructArray, observed: pa.Array) -> pa.Array:
    """Canonical JSON per entry, from the checked fields only (none needs escaping)."""
    raw = signals.field("raw_score")
    quoted_raw = pc.if_else(
        pc.is_null(raw), pa.scalar("null"), pc.binary_join_element_wise('"', raw, '"', "")
    )
    items = pc.binary_join_element_wise(
        '{"topic":"',
        signals.field("topic"),
        '","confidence":',
        pc.cast(signals.field("confidence"), pa.string()),
        ',"observed_at":"',
        _utc_text(observed),
        '","kind":"',
        signals.field("kind"),
        '","raw_score":',
        quoted_raw,
        "}",
        "",
    )
    offsets = pc.subtract(lists.offsets, lists.offsets[0])
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, items), ",")
    return pc.binary_join_element_wise("[", joined, "]", "")


def _not_text(values: pd.Series) -> int:
    """How many present values are not strings (lists or dicts given instead of JSON text)."""
    if isinstance(values.dtype, pd.StringDtype) or pd.api.types.infer_dtype(
        values, skipna=True
    ) in ("string", "empty"):
        return 0
    return sum(
        1
        for v in values.tolist()
        if not (v is None or isinstance(v, str) or (isinstance(v, float) and math.isnan(v)))
    )


def canonical_signals(values: pd.Series) -> CheckedSignals:
    """Check the `signals` column of cache entries; ValueError (field and count) if any fails.

    Missing values mean no signals (`[]`).
    """
    _fail(_not_text(values), "cache.signals must be JSON text")
    if not len(values):
        return CheckedSignals(pd.Series([], dtype="str"), np.zeros(0, dtype=np.int64))
    texts = _contiguous(checks.arrow_strings(values.astype("str").fillna(_EMPTY)))
    lists = _read(texts)
    if lists is None:
        raise _unreadable(texts)
    _fail(lists.null_count, "cache.signals must be a JSON list, not null")
    parents = pc.list_parent_indices(lists)
    signals = lists.flatten()
    observed = _check(signals, parents)
    text = _serialise(lists, signals, observed)
    counts = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    return CheckedSignals(pd.Series(text.to_pandas(), dtype="str"), counts)
