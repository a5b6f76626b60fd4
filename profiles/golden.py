"""Golden records: per profile and field, the surviving value and the row it came from.

Survivorship follows `identity.golden` in `enrich.yaml`, one rule per field:

- `source_priority`: the first source in `sources` that has a value; ties go to the most
  recent row;
- `most_recent`: the row with the latest timestamp (the source's `recency_field`, or the
  kind's usual one: created_at, ordered_at, signed_up_at, recorded_at);
- `most_complete`: the row with the most filled attribute fields; ties go to the most recent.

Remaining ties are broken by (source, line), so the result never depends on row order. Every
surviving field keeps its provenance (`<field>_source`, `<field>_line`). Name fields keep
provenance only: their values never leave the identifier stage, and the CRM export reads them
from the source row the provenance names.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from profiles.config import IdentityConfig, SourceConfig, SurvivorshipRule
from profiles.identifiers import present_column
from profiles.types import ATTRIBUTE_FIELDS, NAME_FIELDS, CanonicalField, IdentifierKind, SourceKind

PROFILE_ID = "profile_id"

_RECENCY_BY_KIND: dict[SourceKind, CanonicalField] = {
    SourceKind.CONTACTS: CanonicalField.CREATED_AT,
    SourceKind.ORDERS: CanonicalField.ORDERED_AT,
    SourceKind.NEWSLETTER: CanonicalField.SIGNED_UP_AT,
    SourceKind.PREFERENCES: CanonicalField.RECORDED_AT,
    SourceKind.CONSENTS: CanonicalField.RECORDED_AT,
}


def recency_field(source: SourceConfig) -> CanonicalField | None:
    """The column that dates a row of `source`, if the source maps one."""
    field = source.recency_field or _RECENCY_BY_KIND.get(source.kind)
    return field if field is not None and field in source.columns else None


def row_recency(rows: pd.DataFrame, sources: Sequence[SourceConfig]) -> pd.Series:
    """UTC timestamp per row from its source's recency field (NaT when absent or unreadable)."""
    out = pd.Series(pd.NaT, index=rows.index, dtype="datetime64[ns, UTC]")
    for source in sources:
        field = recency_field(source)
        mask = (rows["source"] == source.name).to_numpy()
        if field is None or not mask.any() or str(field) not in rows.columns:
            continue
        values = rows.loc[mask, str(field)]
        out.loc[mask] = pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
    return out


def _has_value(rows: pd.DataFrame, field: CanonicalField) -> pd.Series:
    if field in NAME_FIELDS:
        column = present_column(str(field))
        if column not in rows.columns:
            return pd.Series(False, index=rows.index)
        return rows[column].fillna(False).astype(bool)
    if str(field) not in rows.columns:
        return pd.Series(False, index=rows.index)
    values = rows[str(field)]
    return values.notna() & (values.astype("string").str.strip() != "")


def _completeness(rows: pd.DataFrame) -> pd.Series:
    fields = (*ATTRIBUTE_FIELDS, *NAME_FIELDS)
    return sum((_has_value(rows, f).astype(int) for f in fields), pd.Series(0, index=rows.index))


@dataclass(frozen=True)
class _SortKeys:
    """Per row of the links, the integer sort keys every field's survivorship shares."""

    profiles: npt.NDArray[np.intp]
    """Codes of `profile_ids` (-1: no profile)."""
    profile_ids: pd.Index
    """The distinct profile ids, in order."""
    sources: npt.NDArray[np.intp]
    """Source name codes in name order (missing last, where sort_values puts it)."""
    source_names: list[Any]
    """The source names the codes stand for."""
    newest: npt.NDArray[np.int64]
    """Recency, newest first; rows without a readable time last."""
    lines: npt.NDArray[np.int64]
    """The rows' line numbers (the last tie-break)."""

    @classmethod
    def of(cls, rows: pd.DataFrame, recency: pd.Series) -> _SortKeys:
        """The keys of `rows`, whose recency is `recency`."""
        profiles, ids = pd.factorize(rows[PROFILE_ID], sort=True)
        sources, names = pd.factorize(rows["source"].to_numpy(), sort=True, use_na_sentinel=False)
        when = recency.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
        newest = np.where(np.isnat(when), np.iinfo(np.int64).max, -when.view("int64"))
        lines = rows["line"].to_numpy(dtype=np.int64)
        return cls(profiles, ids, sources, list(names), newest, lines)


def _pick(
    rows: pd.DataFrame, field: CanonicalField, rule: SurvivorshipRule, keys: _SortKeys
) -> npt.NDArray[np.intp]:
    """The positions in `rows` of the winning row per profile for one field, in profile
    order."""
    candidates = _has_value(rows, field).to_numpy(dtype=bool) & (keys.profiles >= 0)
    if rule.sources:
        candidates &= rows["source"].isin(rule.sources).to_numpy(dtype=bool)
    pool = np.flatnonzero(candidates)
    order = [keys.profiles[pool]]
    if rule.rule == "source_priority":
        ranks = {s: i for i, s in enumerate(rule.sources)}
        by_code = np.array([ranks.get(s, len(ranks)) for s in keys.source_names], dtype=np.int64)
        order.append(by_code[keys.sources[pool]])
    elif rule.rule == "most_complete":
        order.append(-_completeness(rows.iloc[pool]).to_numpy(dtype=np.int64))
    order += [keys.newest[pool], keys.sources[pool], keys.lines[pool]]
    # one integer sort over every key; the first row of each profile wins
    ranked = pool[np.lexsort(order[::-1])]
    owner = keys.profiles[ranked]
    first = np.ones(len(ranked), dtype=bool)
    first[1:] = owner[1:] != owner[:-1]
    return ranked[first]


def golden_records(
    rows: pd.DataFrame, config: IdentityConfig, sources: Sequence[SourceConfig]
) -> pd.DataFrame:
    """One row per profile in `rows` with each golden field's value and provenance.

    `rows` are identity links: `profile_id`, `source`, `line`, attribute columns and
    `<name>_present` flags. Columns out: profile_id, then per field `<field>_source`,
    `<field>_line` and `<field>` (not for names); profiles in profile_id order.
    """
    keys = _SortKeys.of(rows, row_recency(rows, sources))
    table = pd.DataFrame({PROFILE_ID: keys.profile_ids})
    for field, rule in config.golden.items():
        won = _pick(rows, field, rule, keys)
        columns = {"source": f"{field}_source", "line": f"{field}_line"}
        if field not in NAME_FIELDS:
            columns[str(field)] = str(field)
        for name, column in columns.items():
            if len(won):  # each winner's value at its profile's row, missing elsewhere
                values = rows[name].iloc[won].set_axis(keys.profiles[won])
                table[column] = values.reindex(table.index)
            else:
                table[column] = pd.Series(np.nan, index=table.index, dtype=object)
        table[f"{field}_line"] = table[f"{field}_line"].astype("Int64")
    return table


def _lists(owners: npt.NDArray[np.int64], values: pa.Array, n: int) -> list[list[Any]]:
    """One list per owner 0..n-1 of the `values` owned by it (`owners` ascending, aligned
    with `values`): slices of one flat list, so no Python runs per value."""
    ends = np.cumsum(np.bincount(owners, minlength=n)).tolist()
    flat = values.to_pylist()
    # Hundreds of thousands of new lists would trigger the cyclic garbage collector again
    # and again, each pass walking every live object; strings cannot form cycles.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return [flat[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]
    finally:
        if enabled:
            gc.enable()


def _arrow(values: pd.Series) -> pa.Array:
    array = pa.array(values, from_pandas=True)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def profile_table(
    links: pd.DataFrame, identifiers: pd.DataFrame, golden: pd.DataFrame
) -> pd.DataFrame:
    """One row per profile: its rows, sources, linked pseudonyms by kind, and golden fields.

    `links`: profile_id and source per accepted row. `identifiers`: kind, key_id, pseudonym,
    profile_id of the values attached to profiles. `golden`: from `golden_records`. Rows
    come in profile_id order; `sources` and the pseudonym lists are sorted; `key_id` is the
    first one given for the profile.
    """
    # Profiles and values become sorted integer codes, so every list is a slice of one
    # integer sort: a million rows, no Python per profile.
    codes, profile_ids = pd.factorize(links[PROFILE_ID], sort=True)
    linked = codes >= 0
    n = len(profile_ids)
    table = pd.DataFrame(
        {PROFILE_ID: profile_ids, "records": np.bincount(codes[linked], minlength=n)}
    )
    source_codes, source_names = pd.factorize(links["source"].to_numpy(), sort=True)
    named = linked & (source_codes >= 0)
    width = max(len(source_names), 1)
    seen = np.zeros(n * width, dtype=bool)  # a few sources: cheaper than sorting the pairs
    seen[codes[named].astype(np.int64) * width + source_codes[named]] = True
    pairs = np.flatnonzero(seen)
    table["sources"] = _lists(
        pairs // width, pa.array(np.asarray(source_names, dtype=object)[pairs % width]), n
    )
    attached = identifiers[identifiers[PROFILE_ID].notna()]
    owners = pd.Index(profile_ids).get_indexer(attached[PROFILE_ID])
    pseudonyms = _arrow(attached["pseudonym"])
    kinds = attached["kind"].to_numpy()
    for kind in IdentifierKind:
        mine = np.flatnonzero((owners >= 0) & (kinds == kind))
        rank, _ = pd.factorize(attached["pseudonym"].iloc[mine], sort=True)
        order = mine[np.lexsort((rank, owners[mine]))]
        table[f"{kind}_pseudonyms"] = _lists(
            owners[order].astype(np.int64), pseudonyms.take(pa.array(order)), n
        )
    key_ids = attached["key_id"]
    known = np.flatnonzero((owners >= 0) & key_ids.notna().to_numpy())
    holders, first = np.unique(owners[known], return_index=True)
    table["key_id"] = key_ids.iloc[known[first]].set_axis(holders).reindex(table.index)
    return table.merge(golden, on=PROFILE_ID, how="left")
