"""Consent ingestion and per-profile consent and suppression state, column-wise.

`consent_records_from_rows` turns the accepted rows of a consent source into consent records
(the input of `StateStore.save_consents`); `latest_consents` and `suppressed_profiles` reduce
stored records and the suppression list to one answer per profile.

Records. A row yields one record per identifier pseudonym it carries (email, phone,
customer id) and per purpose it speaks for:

* its own purpose and status columns, if given: one purpose;
* its TC string (`tcf_string`), if given and the policy bundle maps TCF purposes to ours
  (`tcf_purposes`): one record per mapped purpose, `granted` if the string has the consent
  bit of every TCF purpose mapped to it, else `withdrawn` (a TC string is the user's whole
  current choice, so a cleared bit withdraws an earlier grant). Only PurposesConsent bits
  count; legitimate-interest bits never do (TCF v2.2 removed legitimate interest for
  purposes 3-6, and a consent record is evidence of Art. 6(1)(a) consent, which a
  legitimate interest is not). Strings that TCF v2.2 deems invalid (global scope, old policy
  version) count as bad. Such records have `tcf` True.

`recorded_at` comes from the row for both kinds (the file is the evidence; v2.2 CMPs set a
TC string's LastUpdated from the UTC date alone). Record ids are content-derived:
the first 32 hex digits of SHA-256 over source name, identifier (kind, key id, pseudonym),
purpose, status, recorded_at (UTC, microseconds) and origin (row or TC string). The line is
not part of it: a consent log exported again, in another order or with rows added, yields
the same ids for the same consents, so the store keeps the first evidence and adds nothing.

Normalisation (values compared lower-case, trimmed, runs of spaces and hyphens as "_"):

* purpose: a `Purpose` value, or an alias in `PURPOSE_ALIASES`;
* status: a key of `STATUS_VALUES` (granted / withdrawn, yes / no, true / false,
  opt-in / opt-out, 1 / 0, and a few synonyms);
* recorded_at: ISO 8601 (date, or date and time with "T" or a space, optional fraction,
  "Z" or a +hh:mm / +hhmm offset); without an offset the time is taken as UTC;
* consent_source and notice_version: short labels; characters other than letters, digits
  and "_.:-" become "_". A label that looks like personal data (an "@" or a run of six or
  more digits) is dropped, and the record kept without it.

Rows that yield nothing for a part are counted by `SkipReason`: no identifier or unreadable
timestamp (the whole row); unknown purpose or status (its own part: a status without a
purpose, or a row with neither and no TC string, is an unknown purpose); bad TC string, or
TC string unused because the bundle maps no TCF purposes (its TC part). A row can count
under two reasons, one per part. Records repeated within the batch are dropped and counted.

Latest consent. Per profile and purpose, the record with the latest `recorded_at` across
all the profile's identifiers decides; at the same instant `withdrawn` wins (Art. 7(3):
withdrawal must be as effective as giving consent), then the smaller record id (so the
answer never depends on row order).

Suppression. A profile is suppressed for a kind if any of its identifiers is; the earliest
entry (then the smaller request_ref) is its reference.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from types import MappingProxyType

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from policy.tcf import PURPOSE_BITS, consented_purposes
from policy.types import ConsentStatus, Purpose
from profiles.types import IdentifierKind

PURPOSE_ALIASES: Mapping[str, Purpose] = MappingProxyType(
    {
        "crm": Purpose.CRM_EXPORT,
        "ads": Purpose.ADS_EXPORT,
        "advertising": Purpose.ADS_EXPORT,
        "statistics": Purpose.ANALYTICS,
    }
)
"""Purpose names accepted besides the `Purpose` values themselves (after normalisation)."""

_GRANTED = ConsentStatus.GRANTED
_WITHDRAWN = ConsentStatus.WITHDRAWN

STATUS_VALUES: Mapping[str, ConsentStatus] = MappingProxyType(
    {
        **dict.fromkeys(
            ("granted", "given", "yes", "y", "true", "1", "opt_in", "optin", "opted_in"),
            _GRANTED,
        ),
        **dict.fromkeys(
            (
                *("withdrawn", "revoked", "denied", "refused", "no", "n", "false", "0"),
                *("opt_out", "optout", "opted_out"),
            ),
            _WITHDRAWN,
        ),
    }
)
"""Status spellings accepted (after normalisation) and what they mean."""


class SkipReason(StrEnum):
    """Why (part of) a consent row yielded no record; the keys of the counts returned."""

    NO_IDENTIFIER = "no_identifier"
    BAD_TIMESTAMP = "bad_timestamp"
    UNKNOWN_PURPOSE = "unknown_purpose"
    UNKNOWN_STATUS = "unknown_status"
    BAD_TC_STRING = "bad_tc_string"
    UNMAPPED_TC_STRING = "unmapped_tc_string"
    """The row has a TC string, but the policy bundle maps no TCF purposes."""
    DUPLICATE_RECORD = "duplicate_record"
    """A record repeated within the batch (counted per record, not per row)."""


INPUT_COLUMNS: tuple[str, ...] = (
    "source",
    "line",
    "key_id",
    "email_pseudonym",
    "phone_pseudonym",
    "customer_id_pseudonym",
    "purpose",
    "consent_status",
    "recorded_at",
    "consent_source",
    "notice_version",
    "tcf_string",
)
"""Columns of a consent source's accepted rows that `consent_records_from_rows` reads."""

RECORD_COLUMNS: tuple[str, ...] = (
    "record_id",
    "kind",
    "key_id",
    "pseudonym",
    "purpose",
    "status",
    "recorded_at",
    "source",
    "notice_version",
    "evidence_ref",
    "tcf",
)
"""Columns of the records `consent_records_from_rows` returns (`save_consents`' input)."""

LATEST_COLUMNS: tuple[str, ...] = ("profile_id", "purpose", "status", "record_id", "recorded_at")
"""Columns of `latest_consents`."""

SUPPRESSED_COLUMNS: tuple[str, ...] = ("profile_id", "suppression", "request_ref", "recorded_at")
"""Columns of `suppressed_profiles`."""

_SUBJECT = ["kind", "key_id", "pseudonym"]
_SOURCE_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_SEPARATORS = re.compile(r"[\s-]+")
_LABEL_OTHER = re.compile(r"[^A-Za-z0-9_.:-]+")
_LABEL_PERSONAL = re.compile(r"@|\d{6,}")
_LABEL_MAX = 40
_ID_SCHEME = "consent-record/v1"


def _key(value: str) -> str:
    return _SEPARATORS.sub("_", value.strip().lower())


def _purpose(value: str) -> str | None:
    key = _key(value)
    if key in Purpose.__members__.values():
        return str(Purpose(key))
    alias = PURPOSE_ALIASES.get(key)
    return None if alias is None else str(alias)


def _status(value: str) -> str | None:
    status = STATUS_VALUES.get(_key(value))
    return None if status is None else str(status)


def _label(value: str, *, lower: bool) -> str | None:
    """A short token for a free-text label, or None if it is empty or looks personal."""
    if _LABEL_PERSONAL.search(value):
        return None
    text = value.strip().lower() if lower else value.strip()
    token = _LABEL_OTHER.sub("_", text).strip("_.:-")[:_LABEL_MAX]
    return token or None


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    """`column` as trimmed text with empty values missing (all missing if absent)."""
    if column not in frame.columns:
        return pd.Series(np.nan, index=frame.index, dtype="str")
    values = frame[column].astype("str").str.strip()
    return values.where(values != "")


def _mapped(values: pd.Series, normalise: Callable[[str], str | None]) -> pd.Series:
    """`normalise` applied once per distinct value, missing where it returns None."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    table = pa.array([None if pd.isna(u) else normalise(u) for u in uniques], pa.large_string())
    # taken in Arrow: no Python string per row
    mapped: pd.Series = table.take(pa.array(codes)).to_pandas()
    return mapped.set_axis(values.index)


def _tcf_mapping(
    tcf_purposes: Mapping[Purpose, Sequence[int]] | None,
) -> list[tuple[str, frozenset[int]]]:
    """The bundle's TCF mapping as (our purpose, TCF purpose ids), checked."""
    mapping: list[tuple[str, frozenset[int]]] = []
    for purpose, ids in (tcf_purposes or {}).items():
        ours = str(Purpose(purpose))
        wanted = frozenset(int(i) for i in ids)
        if not wanted:
            raise ValueError(f"tcf_purposes[{ours}] names no TCF purpose")
        if not all(1 <= i <= PURPOSE_BITS for i in wanted):
            raise ValueError(f"tcf_purposes[{ours}]: TCF purposes are numbered 1-{PURPOSE_BITS}")
        mapping.append((ours, wanted))
    return mapping


def _record_ids(source: str, parts: dict[str, pa.Array | pa.ChunkedArray]) -> list[str]:
    """Content-derived record ids (see the module docstring)."""
    text = pa.large_string()
    when = pc.cast(pc.cast(parts["recorded_at"], pa.timestamp("us")), pa.string())
    fields = [
        pa.scalar(f"{_ID_SCHEME}|{source}", text),  # one id scheme, one source per call
        *(pc.cast(parts[c], text) for c in ("kind", "key_id", "pseudonym", "purpose", "status")),
        pc.cast(when, text),
        pc.cast(pc.if_else(parts["tcf"], "tcf", "row"), text),
    ]
    joined = pc.binary_join_element_wise(*fields, pa.scalar("|", text))
    sha256 = hashlib.sha256
    return [sha256(b).hexdigest()[:32] for b in pc.cast(joined, pa.large_binary()).to_pylist()]


def _empty_records() -> pd.DataFrame:
    columns: dict[str, pd.Series] = {c: pd.Series([], dtype="str") for c in RECORD_COLUMNS}
    columns["recorded_at"] = pd.Series([], dtype="datetime64[us, UTC]")
    columns["tcf"] = pd.Series([], dtype=bool)
    return pd.DataFrame(columns)


def consent_records_from_rows(
    rows: pd.DataFrame,
    *,
    source: str,
    tcf_purposes: Mapping[Purpose, Sequence[int]] | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Consent records from the accepted rows of the consent source named `source`.

    `rows` has the identity_links columns of the source: line, key_id, email_pseudonym,
    phone_pseudonym, customer_id_pseudonym, purpose, consent_status, recorded_at,
    consent_source, notice_version and optionally tcf_string and source (which must then be
    `source`); text, missing as NaN or "". `tcf_purposes` maps our purposes to TCF purpose
    ids (the policy bundle's). Returns the records (`RECORD_COLUMNS`, ready for
    `StateStore.save_consents`) and a count per `SkipReason` value (every reason present).
    ValueError if `rows` or the arguments break this contract (never for a row's content).
    """
    if not _SOURCE_NAME.fullmatch(source):
        raise ValueError("source must be a source name (lower-case letters, digits, '_')")
    mapping = _tcf_mapping(tcf_purposes)
    counts = dict.fromkeys((str(r) for r in SkipReason), 0)
    if len(rows) == 0:
        return _empty_records(), counts
    frame = rows.reset_index(drop=True)
    if "line" not in frame.columns or frame["line"].isna().any():
        raise ValueError("rows: every row needs its line number ('line')")
    named = _text(frame, "source")
    if (named.notna() & (named != source)).any():
        raise ValueError("rows: the 'source' column names another source than `source`")

    present = {k: _text(frame, f"{k}_pseudonym").notna().to_numpy() for k in IdentifierKind}
    has_id = np.logical_or.reduce(list(present.values()))
    recorded = pd.to_datetime(
        _text(frame, "recorded_at"), format="ISO8601", utc=True, errors="coerce"
    ).astype("datetime64[us, UTC]")
    alive = has_id & recorded.notna().to_numpy()
    counts[SkipReason.NO_IDENTIFIER] = int((~has_id).sum())
    counts[SkipReason.BAD_TIMESTAMP] = int((has_id & ~alive).sum())

    purpose_raw, status_raw = _text(frame, "purpose"), _text(frame, "consent_status")
    purpose, status = _mapped(purpose_raw, _purpose), _mapped(status_raw, _status)
    tc = _text(frame, "tcf_string")
    has_tc = tc.notna().to_numpy()
    asked = alive & (purpose_raw.notna().to_numpy() | status_raw.notna().to_numpy() | ~has_tc)
    purpose_ok, status_ok = purpose.notna().to_numpy(), status.notna().to_numpy()
    counts[SkipReason.UNKNOWN_PURPOSE] = int((asked & ~purpose_ok).sum())
    counts[SkipReason.UNKNOWN_STATUS] = int((asked & purpose_ok & ~status_ok).sum())
    explicit = asked & purpose_ok & status_ok

    tc_rows = alive & has_tc
    granted = np.zeros((len(frame), len(mapping)), dtype=bool)
    if not mapping:
        counts[SkipReason.UNMAPPED_TC_STRING] = int(tc_rows.sum())
        tc_rows = np.zeros(len(frame), dtype=bool)
    elif tc_rows.any():
        codes, uniques = pd.factorize(tc.where(tc_rows), use_na_sentinel=True)
        decoded = consented_purposes(pd.Series(uniques, dtype=object)).tolist()
        readable = np.array([d is not None for d in decoded] + [False])
        by_string = np.array(
            [[d is not None and ids <= d for _, ids in mapping] for d in decoded]
            + [[False] * len(mapping)],
            dtype=bool,
        ).reshape(len(decoded) + 1, len(mapping))
        counts[SkipReason.BAD_TC_STRING] = int((tc_rows & ~readable[codes]).sum())
        tc_rows &= readable[codes]
        granted = by_string[codes]

    records = _assemble(
        frame,
        source=source,
        present=present,
        recorded=recorded,
        explicit=explicit,
        purpose=purpose,
        status=status,
        tc_rows=tc_rows,
        granted=granted,
        mapping=mapping,
    )
    repeated = records["record_id"].duplicated().to_numpy()
    counts[SkipReason.DUPLICATE_RECORD] = int(repeated.sum())
    return records.loc[~repeated].reset_index(drop=True), counts


def _arrow_text(values: pd.Series) -> pa.Array:
    """A text column as one Arrow string array (no copy for Arrow-backed text)."""
    array = pa.array(values.astype("str").array, type=pa.large_string(), from_pandas=True)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _assemble(
    frame: pd.DataFrame,
    *,
    source: str,
    present: dict[IdentifierKind, npt.NDArray[np.bool_]],
    recorded: pd.Series,
    explicit: npt.NDArray[np.bool_],
    purpose: pd.Series,
    status: pd.Series,
    tc_rows: npt.NDArray[np.bool_],
    granted: npt.NDArray[np.bool_],
    mapping: list[tuple[str, frozenset[int]]],
) -> pd.DataFrame:
    """The records of the usable parts of each row, one per identifier and purpose.

    Built in Arrow: each part is a set of row positions taken from the row columns, so no
    value passes through a Python object on the way (a million rows take a second).
    """
    purpose_text, status_text = _arrow_text(purpose), _arrow_text(status)
    verdict = pa.array([str(_WITHDRAWN), str(_GRANTED)], type=pa.large_string())
    parts: dict[str, list[pa.Array]] = {
        c: [] for c in ("at", "kind", "pseudonym", "purpose", "status", "tcf")
    }

    def add(
        rows: npt.NDArray[np.intp],
        *,
        kind: IdentifierKind,
        pseudonyms: pa.Array,
        purpose_: pa.Array,
        status_: pa.Array,
        tcf: bool,
    ) -> None:
        parts["at"].append(pa.array(rows, type=pa.int64()))
        parts["kind"].append(pa.repeat(pa.scalar(str(kind), pa.large_string()), len(rows)))
        parts["pseudonym"].append(pseudonyms.take(pa.array(rows)))
        parts["purpose"].append(purpose_)
        parts["status"].append(status_)
        parts["tcf"].append(pa.repeat(pa.scalar(tcf), len(rows)))

    for kind, has in present.items():
        pseudonyms = _arrow_text(_text(frame, f"{kind}_pseudonym"))
        rows = np.flatnonzero(explicit & has)
        add(
            rows,
            kind=kind,
            pseudonyms=pseudonyms,
            purpose_=purpose_text.take(pa.array(rows)),
            status_=status_text.take(pa.array(rows)),
            tcf=False,
        )
        rows = np.flatnonzero(tc_rows & has)
        for j, (ours, _) in enumerate(mapping):
            add(
                rows,
                kind=kind,
                pseudonyms=pseudonyms,
                purpose_=pa.repeat(pa.scalar(ours, pa.large_string()), len(rows)),
                status_=verdict.take(pa.array(granted[rows, j].astype(np.int8))),
                tcf=True,
            )
    columns = {c: pa.concat_arrays(v) for c, v in parts.items()}
    if not len(columns["at"]):
        return _empty_records()
    at = columns.pop("at")
    lines = pc.cast(pa.array(frame["line"].astype("int64").to_numpy()), pa.large_string())
    evidence = pc.binary_join_element_wise(
        pa.scalar(source, pa.large_string()), lines, pa.scalar(":", pa.large_string())
    )
    labels = {
        "source": _mapped(_text(frame, "consent_source"), lambda v: _label(v, lower=True)),
        "notice_version": _mapped(_text(frame, "notice_version"), lambda v: _label(v, lower=False)),
    }
    columns |= {
        "key_id": _arrow_text(_text(frame, "key_id")).take(at),
        "recorded_at": pa.array(recorded, from_pandas=True).take(at),
        "source": _arrow_text(labels["source"]).take(at),
        "notice_version": _arrow_text(labels["notice_version"]).take(at),
        "evidence_ref": evidence.take(at),
    }
    columns["record_id"] = pa.array(_record_ids(source, columns), type=pa.large_string())
    table = pa.table({c: columns[c] for c in RECORD_COLUMNS})
    records: pd.DataFrame = table.to_pandas()
    for column in RECORD_COLUMNS:
        if column not in ("recorded_at", "tcf"):
            records[column] = records[column].astype("str")
    return records


def _subject_key(frame: pd.DataFrame) -> pa.ChunkedArray:
    """One text per identifier (kind, key id, pseudonym joined), for hash lookups."""
    text = pa.large_string()
    parts = [pc.cast(pa.array(frame[c].astype("str"), from_pandas=True), text) for c in _SUBJECT]
    return pc.binary_join_element_wise(*parts, pa.scalar("|", text))


def _profiles_of(
    frame: pd.DataFrame, identifiers: pd.DataFrame
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.object_]]:
    """For the rows of `frame` (kind, key_id, pseudonym) that belong to a profile: their
    positions, their profile codes, and the profile ids the codes index.

    A hash lookup of each row's identifier among the identifiers' (Arrow `index_in`):
    several times faster than a merge on three text keys at a million rows. Identifiers
    without a profile are dropped first; of repeats, the first counts.
    """
    ids = identifiers.loc[identifiers["profile_id"].notna(), [*_SUBJECT, "profile_id"]]
    codes, profiles = pd.factorize(ids["profile_id"].astype("str"))
    found = pc.index_in(_subject_key(frame), value_set=_subject_key(ids))
    at = np.asarray(found.fill_null(-1), dtype=np.intp)
    rows = np.flatnonzero(at >= 0)
    return rows, codes[at[rows]], np.asarray(profiles, dtype=object)


_HEX_DIGIT = np.zeros(256, dtype=np.uint8)
_HEX_DIGIT[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)


def _id_order(record_ids: pd.Series) -> list[npt.NDArray[np.int64] | npt.NDArray[np.uint64]]:
    """Sort keys (least significant first) that order `record_ids` as text, ascending.

    Record ids are 32 lower-case hex digits (the store checks it): then the two 64-bit
    halves of the 128-bit number, read straight from the Arrow buffer, give the exact text
    order without a string sort. Any other ids fall back to Arrow's string rank.
    """
    ids = pa.array(record_ids.astype("str"), type=pa.string(), from_pandas=True)
    if isinstance(ids, pa.ChunkedArray):  # Arrow-backed columns of large frames come chunked
        ids = ids.combine_chunks()
    if len(ids) == 0 or not pc.all(pc.match_substring_regex(ids, r"^[0-9a-f]{32}$")).as_py():
        return [np.asarray(pc.rank(ids, sort_keys="ascending"), dtype=np.int64)]
    start = int(np.frombuffer(ids.buffers()[1], dtype=np.int32)[ids.offset])
    data = np.frombuffer(ids.buffers()[2], dtype=np.uint8)[start : start + 32 * len(ids)]
    digits = _HEX_DIGIT[data.reshape(-1, 32)]
    packed = np.ascontiguousarray((digits[:, 0::2] << 4) | digits[:, 1::2])  # 16 bytes a row
    halves = packed.view(">u8").astype(np.uint64)  # big-endian: text order is number order
    return [halves[:, 1], halves[:, 0]]


def latest_consents(records: pd.DataFrame, identifiers: pd.DataFrame) -> pd.DataFrame:
    """The deciding consent record per profile and purpose (see the module docstring).

    `records`: consent records (kind, key_id, pseudonym, purpose, status, record_id,
    recorded_at), e.g. `StateStore.load_consents()`. `identifiers`: kind, key_id, pseudonym,
    profile_id. Returns `LATEST_COLUMNS`, one row per (profile_id, purpose) that has any
    record, in no particular order.
    """
    if len(records) == 0 or len(identifiers) == 0:
        return _typed(pd.DataFrame({c: [] for c in LATEST_COLUMNS}), LATEST_COLUMNS)
    wanted = [*_SUBJECT, "purpose", "status", "record_id", "recorded_at"]
    rows, profile, profile_ids = _profiles_of(records[wanted], identifiers)
    mine = records[["purpose", "status", "record_id", "recorded_at"]].iloc[rows]
    purpose, _ = pd.factorize(mine["purpose"].astype("str"))
    when = pd.to_datetime(mine["recorded_at"], utc=True).astype("datetime64[us, UTC]")
    utc = when.to_numpy(dtype="datetime64[us]")  # UTC wall time, no zone
    withdrawn = (mine["status"].astype("str") == str(_WITHDRAWN)).to_numpy()
    # Sort ascending by (profile, purpose), then time with withdrawn after granted, then
    # record id descending: the last row of each (profile, purpose) run decides. Keys are
    # packed in pairs (microseconds * 2 fit in 63 bits until the year 146,000), since
    # lexsort's cost grows with the number of keys.
    group = profile.astype(np.int64) * (int(purpose.max(initial=0)) + 1) + purpose
    moment = utc.view(np.int64) * 2 + withdrawn
    by_id = [~key for key in _id_order(mine["record_id"])]
    order = np.lexsort((*by_id, moment, group))
    group = group[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = group[1:] != group[:-1]
    winners = order[last]
    chosen = mine.iloc[winners]
    return _typed(
        pd.DataFrame(
            {
                "profile_id": profile_ids[profile[winners]],
                "purpose": chosen["purpose"].to_numpy(),
                "status": chosen["status"].to_numpy(),
                "record_id": chosen["record_id"].to_numpy(),
                "recorded_at": utc[winners],
            }
        ),
        LATEST_COLUMNS,
    )


def _typed(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """`columns` of `frame` as text, recorded_at as UTC microseconds (naive values are UTC),
    a fresh index."""
    out = pd.DataFrame(
        {
            c: frame[c].astype("str")
            if c != "recorded_at"
            else pd.to_datetime(frame[c], utc=True).astype("datetime64[us, UTC]")
            for c in columns
        }
    )
    return out.reset_index(drop=True)


def suppressed_profiles(suppressions: pd.DataFrame, identifiers: pd.DataFrame) -> pd.DataFrame:
    """Suppression per profile and kind: one row per (profile_id, suppression) that applies.

    `suppressions`: kind, key_id, pseudonym, suppression, recorded_at, request_ref (e.g.
    `StateStore.load_suppressions()`); `identifiers`: kind, key_id, pseudonym, profile_id.
    A profile is suppressed for a kind when any of its identifiers is; the row's
    request_ref and recorded_at are the earliest entry's (then the smaller request_ref).
    A profile absent from the result is not suppressed for any kind. Returns
    `SUPPRESSED_COLUMNS` ordered by profile_id and suppression.
    """
    if len(suppressions) == 0 or len(identifiers) == 0:
        return _typed(pd.DataFrame({c: [] for c in SUPPRESSED_COLUMNS}), SUPPRESSED_COLUMNS)
    rows, profile, profile_ids = _profiles_of(suppressions, identifiers)
    hits = suppressions.iloc[rows]
    # the suppression list is short: plain pandas from here
    joined = pd.DataFrame(
        {
            "profile_id": profile_ids[profile],
            "suppression": hits["suppression"].astype("str").to_numpy(),
            "request_ref": hits["request_ref"].astype("str").to_numpy(),
            "recorded_at": pd.to_datetime(hits["recorded_at"], utc=True).to_numpy(
                dtype="datetime64[us]"
            ),
        }
    )
    first = joined.sort_values(
        ["profile_id", "suppression", "recorded_at", "request_ref"], kind="stable"
    ).drop_duplicates(["profile_id", "suppression"], keep="first")
    return _typed(first, SUPPRESSED_COLUMNS)
