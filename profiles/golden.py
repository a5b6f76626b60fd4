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

from collections.abc import Sequence

import numpy as np
import pandas as pd

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


def _pick(
    rows: pd.DataFrame, field: CanonicalField, rule: SurvivorshipRule, recency: pd.Series
) -> pd.DataFrame:
    """The winning row per profile for one field: profile_id, source, line (and value)."""
    candidates = _has_value(rows, field)
    if rule.sources:
        candidates &= rows["source"].isin(rule.sources)
    pool = rows.loc[candidates.to_numpy(), [PROFILE_ID, "source", "line"]].copy()
    if pool.empty:
        return pool
    # newest first; rows without a readable time come last
    when = recency.loc[pool.index].dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    pool["_newest"] = np.where(np.isnat(when), np.iinfo(np.int64).max, -when.view("int64"))
    keys = [PROFILE_ID]
    if rule.rule == "source_priority":
        pool["_rank"] = pool["source"].map({s: i for i, s in enumerate(rule.sources)})
        keys.append("_rank")
    elif rule.rule == "most_complete":
        pool["_rank"] = -_completeness(rows.loc[pool.index])
        keys.append("_rank")
    keys += ["_newest", "source", "line"]
    winners = pool.sort_values(keys, kind="stable").drop_duplicates(PROFILE_ID)
    if field not in NAME_FIELDS:
        winners[str(field)] = rows.loc[winners.index, str(field)]
    return winners.drop(columns=[c for c in winners.columns if c.startswith("_")])


def golden_records(
    rows: pd.DataFrame, config: IdentityConfig, sources: Sequence[SourceConfig]
) -> pd.DataFrame:
    """One row per profile in `rows` with each golden field's value and provenance.

    `rows` are identity links: `profile_id`, `source`, `line`, attribute columns and
    `<name>_present` flags. Columns out: profile_id, then per field `<field>` (not for names),
    `<field>_source`, `<field>_line`.
    """
    profiles = pd.DataFrame({PROFILE_ID: pd.unique(rows[PROFILE_ID])})
    recency = row_recency(rows, sources)
    for field, rule in config.golden.items():
        winners = _pick(rows, field, rule, recency).rename(
            columns={"source": f"{field}_source", "line": f"{field}_line"}
        )
        if winners.empty:
            winners = pd.DataFrame(
                columns=[PROFILE_ID, f"{field}_source", f"{field}_line"]
                + ([] if field in NAME_FIELDS else [str(field)])
            )
        profiles = profiles.merge(winners, on=PROFILE_ID, how="left")
        profiles[f"{field}_line"] = profiles[f"{field}_line"].astype("Int64")
    return profiles.sort_values(PROFILE_ID, ignore_index=True)


def profile_table(
    links: pd.DataFrame, identifiers: pd.DataFrame, golden: pd.DataFrame
) -> pd.DataFrame:
    """One row per profile: its rows, sources, linked pseudonyms by kind, and golden fields.

    `links`: profile_id and source per accepted row. `identifiers`: kind, key_id, pseudonym,
    profile_id of the values attached to profiles. `golden`: from `golden_records`.
    """
    per_profile = links.groupby(PROFILE_ID, sort=True).size().rename("records").reset_index()
    sources = (
        links[[PROFILE_ID, "source"]]
        .drop_duplicates()
        .sort_values([PROFILE_ID, "source"])
        .groupby(PROFILE_ID, sort=True)["source"]
        .agg(list)
        .rename("sources")
    )
    table = per_profile.merge(sources, on=PROFILE_ID, how="left")
    attached = identifiers[identifiers[PROFILE_ID].notna()]
    for kind in IdentifierKind:
        values = (
            attached.loc[attached["kind"] == kind, [PROFILE_ID, "pseudonym"]]
            .sort_values([PROFILE_ID, "pseudonym"])
            .groupby(PROFILE_ID, sort=True)["pseudonym"]
            .agg(list)
            .rename(f"{kind}_pseudonyms")
        )
        table = table.merge(values, on=PROFILE_ID, how="left")
        column = f"{kind}_pseudonyms"
        table[column] = [v if isinstance(v, list) else [] for v in table[column]]
    key_ids = attached.groupby(PROFILE_ID)["key_id"].first().rename("key_id")
    table = table.merge(key_ids, on=PROFILE_ID, how="left")
    return table.merge(golden, on=PROFILE_ID, how="left")
