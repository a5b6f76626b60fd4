"""Input checks of the state store: only pseudonyms, ids and counts may be written.

The store is the last line of defence against a raw identifier being persisted: pseudonyms
must be 64 lower-case hex characters, ids must be short tokens without `@`, `+` or spaces,
and JSON must hold counts only. Failures raise ValueError naming the column and how many
rows failed, never a value.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from profiles.types import IdentifierKind

PSEUDONYM_PATTERN = r"[0-9a-f]{64}"
RECORD_ID_PATTERN = r"[0-9a-f]{32}"
"""Consent record ids: the first 128 bits of a SHA-256, in lower-case hex."""
TOKEN_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:#-]{0,127}"  # noqa: S105  # a pattern, not a secret
"""Profile ids, run ids, key ids, config hashes: letters, digits and `_.:#-`, 1-128 long."""
_TOKEN = re.compile(TOKEN_PATTERN)
# JSON keys are names ("rows_in", "EMAIL_SYNTAX", "101+"); never an address or a phone
_COUNT_KEY = re.compile(r"[A-Za-z0-9_.:#<>+ -]{1,64}")
_PHONE_LIKE = re.compile(r"\+\d")
_KINDS = frozenset(str(k) for k in IdentifierKind)


def token(value: object, what: str) -> str:
    """`value` if it is a token string (see TOKEN_PATTERN), else ValueError."""
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise ValueError(
            f"{what} must be 1-128 letters, digits or '_.:#-', starting with a letter or digit"
        )
    return value


def columns(frame: pd.DataFrame, name: str, required: Sequence[str]) -> pd.DataFrame:
    """The `required` columns of `frame` as text; an empty frame may lack them."""
    if len(frame) == 0:
        return pd.DataFrame({c: pd.Series([], dtype="str") for c in required})
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {', '.join(missing)}")
    # astype keeps missing values missing; categories and enums become their text. A filtered
    # frame's index is dropped, so that columns added later line up by position.
    return pd.DataFrame({c: frame[c].astype("str") for c in required}).reset_index(drop=True)


def _fail_count(bad: pd.Series, message: str) -> None:
    count = int(bad.sum())
    if count:
        raise ValueError(f"{message} ({count:,} row(s))")


def fail_count(bad: pd.Series, message: str) -> None:
    """ValueError `<message> (<n> row(s))` if any of the booleans `bad` is true."""
    _fail_count(bad, message)


def hex_value(value: object, what: str, pattern: str) -> str:
    """`value` if it is a string fully matching the hex `pattern`, else ValueError."""
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise ValueError(f"{what} must be lower-case hex ({pattern})")
    return value


def tokens(frame: pd.DataFrame, name: str, column: str, *, nullable: bool = False) -> None:
    """Every value of `column` is a token (or missing, if `nullable`)."""
    values = frame[column]
    present = values.notna()
    if not nullable:
        _fail_count(~present, f"{name}.{column} must not be missing")
    ok = values[present].str.fullmatch(TOKEN_PATTERN)
    _fail_count(
        ~ok.astype(bool),
        f"{name}.{column} must be 1-128 letters, digits or '_.:#-'",
    )


def pseudonyms(frame: pd.DataFrame, name: str) -> None:
    """Every pseudonym is 64 lower-case hex characters (an HMAC-SHA256 digest)."""
    values = frame["pseudonym"]
    ok = values.notna() & values.str.fullmatch(PSEUDONYM_PATTERN).fillna(False).astype(bool)
    _fail_count(~ok, f"{name}.pseudonym must be 64 lower-case hex characters")


def hex_ids(frame: pd.DataFrame, name: str, column: str, pattern: str) -> None:
    """Every value of `column` is present and fully matches the hex `pattern`."""
    values = frame[column]
    ok = values.notna() & values.str.fullmatch(pattern).fillna(False).astype(bool)
    _fail_count(~ok, f"{name}.{column} must be lower-case hex ({pattern})")


def choices(frame: pd.DataFrame, name: str, column: str, allowed: Sequence[str]) -> None:
    """Every value of `column` is one of `allowed`."""
    _fail_count(
        ~frame[column].isin(list(allowed)),
        f"{name}.{column} must be one of {', '.join(allowed)}",
    )


def timestamps(frame: pd.DataFrame, name: str, column: str) -> pd.Series:
    """`column` as UTC timestamps (microseconds); it must be timezone-aware and complete."""
    if len(frame) == 0:
        return pd.Series([], dtype="datetime64[us, UTC]")
    if column not in frame.columns:
        raise ValueError(f"{name}: missing column(s) {column}")
    values = frame[column]
    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        raise ValueError(f"{name}.{column} must be timezone-aware timestamps")
    _fail_count(values.isna(), f"{name}.{column} must not be missing")
    utc: pd.Series = values.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    return utc.reset_index(drop=True)


def flags(frame: pd.DataFrame, name: str, column: str) -> pd.Series:
    """`column` as booleans; it must be boolean and complete."""
    if len(frame) == 0:
        return pd.Series([], dtype=bool)
    if column not in frame.columns:
        raise ValueError(f"{name}: missing column(s) {column}")
    values = frame[column]
    if not (pd.api.types.is_bool_dtype(values.dtype)):
        raise ValueError(f"{name}.{column} must be booleans")
    _fail_count(values.isna(), f"{name}.{column} must not be missing")
    return values.astype(bool).reset_index(drop=True)


def kinds(frame: pd.DataFrame, name: str) -> None:
    """Every kind is an IdentifierKind."""
    _fail_count(
        ~frame["kind"].isin(_KINDS),
        f"{name}.kind must be one of {', '.join(sorted(_KINDS))}",
    )


def distinct(frame: pd.DataFrame, name: str, column: str) -> None:
    """No two rows share a value of `column` (a hash count in Arrow: no sort, no Python)."""
    values = arrow_strings(frame[column])
    repeated = len(values) - int(pc.count_distinct(values).as_py())
    if repeated:
        raise ValueError(f"{name}: duplicate {column} ({repeated:,} row(s))")


def unique(frame: pd.DataFrame, name: str, key: Sequence[str]) -> None:
    """No two rows share `key`."""
    if len(frame):
        _fail_count(frame.duplicated(list(key)), f"{name}: duplicate {', '.join(key)}")


_HEX_VALUE = np.zeros(256, dtype=np.uint8)
_HEX_VALUE[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)


def arrow_strings(values: pd.Series) -> pa.ChunkedArray:
    """The text column `values` as an Arrow chunked array (no copy for Arrow-backed text)."""
    array = pa.array(values.array, type=pa.large_string(), from_pandas=True)
    return array if isinstance(array, pa.ChunkedArray) else pa.chunked_array([array])


def _hex_prefixes(values: pd.Series, width: int = 64) -> npt.NDArray[np.uint64]:
    """The first 16 hex digits of each value (checked: `width` lower-case hex characters) as
    one unsigned 64-bit integer, read straight from the Arrow buffer."""
    array = arrow_strings(values).combine_chunks()
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)
    start = int(offsets[array.offset])
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)
    digits = _HEX_VALUE[data[start : start + width * len(array)].reshape(-1, width)[:, :16]]
    packed = np.ascontiguousarray((digits[:, 0::2] << 4) | digits[:, 1::2])
    return packed.view(">u8").ravel().astype(np.uint64)


def sorted_by_pseudonym(frame: pd.DataFrame, name: str, key: Sequence[str]) -> pd.DataFrame:
    """`frame` in pseudonym order, after checking that no two rows share `key`.

    `key` must include "pseudonym". The order is by the pseudonyms' first 64 bits: an
    integer sort rather than a string sort, and as good for index locality. Rows with equal
    keys have equal prefixes, which sort next to each other, so only rows whose prefix
    repeats are compared on the whole key.
    """
    return sorted_by_hex(frame, name, "pseudonym", 64, key)


def sorted_by_hex(
    frame: pd.DataFrame, name: str, column: str, width: int, key: Sequence[str]
) -> pd.DataFrame:
    """`frame` in order of the checked hex `column` (`width` characters), after checking that
    no two rows share `key` (which must include `column`; empty: no check); see
    `sorted_by_pseudonym`."""
    if len(frame) < 2:
        return frame.reset_index(drop=True)
    prefixes = _hex_prefixes(frame[column], width)
    order = np.argsort(prefixes, kind="stable")
    ordered = frame.take(order).reset_index(drop=True)
    sorted_prefixes = prefixes[order]
    same = sorted_prefixes[1:] == sorted_prefixes[:-1]
    if key and same.any():
        repeated = np.zeros(len(ordered), dtype=bool)
        repeated[1:] |= same
        repeated[:-1] |= same
        unique(ordered[repeated], name, key)
    return ordered


def _counts_only(value: object, path: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not (
                isinstance(key, str) and _COUNT_KEY.fullmatch(key) and not _PHONE_LIKE.search(key)
            ):
                raise ValueError(f"{path}: keys must be short names (letters, digits, '_.:#<>+ -')")
            _counts_only(item, path)
    elif isinstance(value, list | tuple):
        for item in value:
            _counts_only(item, path)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: numbers must be finite")
    elif not (value is None or isinstance(value, bool | int)):
        raise ValueError(f"{path}: only counts (numbers) may be stored, not {type(value).__name__}")


def counts_json(value: Mapping[str, Any] | str | None, what: str) -> str | None:
    """Canonical JSON of a mapping of counts (text keys, numeric leaves), or None."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"{what}: not valid JSON") from None
        if not isinstance(value, Mapping):
            raise ValueError(f"{what}: JSON must be an object")
    _counts_only(value, what)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
