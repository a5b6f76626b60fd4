"""Saving one night's identity resolution: checked input, staged in bulk, set-based SQL.

`Night.of` checks and normalises the four DataFrames of `StateStore.save_identity`;
`Night.save` stages them in temporary tables and applies them with a handful of set-based
statements inside the caller's write transaction. What makes a million rows fast:

* identifiers are staged and upserted in primary-key order, so each index page is
  visited once rather than at random;
* the very first load into an empty table inserts without the profile_id index and builds
  it afterwards (one sort instead of a million random index insertions);
* PostgreSQL: half-empty pages (see `schema.NIGHTLY_FILLFACTOR`) turn the nightly rewrite
  of last_seen_run into HOT updates that touch no index;
* SQLite updates every index whose column is in an UPDATE's SET list, even when the value
  does not change, so the nightly upsert runs twice: once for new rows and rows that
  changed profile, once for last_seen_run alone;
* per-profile work (checks, last_seen_run) runs over the distinct profile ids, not per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import (
    Connection,
    Index,
    Table,
    Text,
    func,
    insert,
    literal,
    null,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from profiles.store import checks
from profiles.store.bulk import ColumnType, staging
from profiles.store.engine import Backend
from profiles.store.schema import (
    IdentityEvent,
    ProfileStatus,
    UTCDateTime,
    identifiers,
    identity_events,
    profiles,
)

IDENTIFIER_COLUMNS: dict[str, ColumnType] = {
    "kind": "text",
    "key_id": "text",
    "pseudonym": "text",
    "profile_id": "text",
}
"""Columns of `load_identifiers()` and of `save_identity(identifiers=...)`."""

PROFILE_COLUMNS: dict[str, ColumnType] = {
    "profile_id": "text",
    "created_seq": "bigint",
    "created_run": "text",
    "status": "text",
    "merged_into": "text",
    "last_seen_run": "text",
}
"""Columns of `load_profiles()`."""

_ACTIVE = ProfileStatus.ACTIVE.value
_EVENT_COLUMNS = ("event", "profile_id", "other_profile_id")
_KEY = ("pseudonym", "kind", "key_id")
"""The identifiers' primary key, in index order."""
_TEXT: ColumnType = "text"
_STAGED_NEW: dict[str, ColumnType] = {"profile_id": "text", "ord": "bigint"}
_STAGED_MERGED: dict[str, ColumnType] = {"profile_id": "text", "merged_into": "text"}
_STAGED_IDS: dict[str, ColumnType] = dict.fromkeys((*_KEY, "profile_id"), _TEXT)
_STAGED_EVENTS: dict[str, ColumnType] = {
    "ord": "bigint",
    **dict.fromkeys((*_EVENT_COLUMNS, "detail"), _TEXT),
}


@dataclass(frozen=True)
class Night:
    """Checked input of one `save_identity` call, as text columns ready to stage."""

    identifiers: pd.DataFrame
    new_profiles: pd.DataFrame
    """profile_id, ord (creation order from 0)."""
    merged: pd.DataFrame
    events: pd.DataFrame
    """event, profile_id, other_profile_id, detail (canonical JSON or missing), ord."""
    seen: pd.DataFrame
    """profile_id: every profile tonight's identifiers or merges point at, sorted."""

    @classmethod
    def of(
        cls,
        *,
        identifiers: pd.DataFrame,
        new_profiles: pd.DataFrame,
        merged: pd.DataFrame,
        events: pd.DataFrame,
    ) -> Night:
        """Check the four frames; ValueError (naming columns and counts only) if one is bad."""
        ids = _identifier_frame(identifiers)
        mer = _merged_frame(merged)
        return cls(
            identifiers=ids,
            new_profiles=_new_profile_frame(new_profiles),
            merged=mer,
            events=_event_frame(events),
            seen=_seen_frame(ids["profile_id"], mer["merged_into"]),
        )

    def save(self, conn: Connection, backend: Backend, run_id: str) -> None:
        """Apply the night inside the caller's write transaction (see StateStore.save_identity)."""
        if backend == "postgresql":
            # hash joins over a million staged rows: in memory, not in batches spilled to disk
            conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
        with staging(conn, backend) as stage:
            if len(self.new_profiles):
                new = stage.stage("enrich_stage_new_profiles", self.new_profiles, _STAGED_NEW)
                _insert_new_profiles(conn, new, run_id)
            if len(self.merged):
                merged = stage.stage("enrich_stage_merged", self.merged, _STAGED_MERGED)
                _apply_merges(conn, merged, run_id)
            if len(self.seen):
                seen = stage.stage("enrich_stage_seen", self.seen, {"profile_id": _TEXT})
                _check_active(conn, seen)
                if len(self.identifiers):
                    ids = stage.stage("enrich_stage_identifiers", self.identifiers, _STAGED_IDS)
                    _upsert_identifiers(conn, backend, ids, run_id)
                _touch_profiles(conn, seen, run_id)
            if len(self.events):
                events = stage.stage("enrich_stage_events", self.events, _STAGED_EVENTS)
                _insert_events(conn, events, run_id)


def _seen_frame(*columns: pd.Series) -> pd.DataFrame:
    """Distinct profile ids of `columns`, sorted (so SQLite probes the profiles in order)."""
    chunks = [chunk for c in columns for chunk in checks.arrow_strings(c).chunks]
    ids = pc.unique(pa.chunked_array(chunks, type=pa.large_string()))
    ids = ids.take(pc.sort_indices(ids))
    return pd.DataFrame({"profile_id": pd.Series(ids.to_pandas(), dtype="str")})


def _identifier_frame(frame: pd.DataFrame) -> pd.DataFrame:
    ids = checks.columns(frame, "identifiers", list(IDENTIFIER_COLUMNS))
    checks.kinds(ids, "identifiers")
    checks.tokens(ids, "identifiers", "key_id")
    checks.pseudonyms(ids, "identifiers")
    checks.tokens(ids, "identifiers", "profile_id")
    # staged in key order, so that the upserts visit each index page once
    return checks.sorted_by_pseudonym(ids, "identifiers", list(_KEY))


def _new_profile_frame(frame: pd.DataFrame) -> pd.DataFrame:
    new = checks.columns(frame, "new_profiles", ["profile_id"])
    checks.tokens(new, "new_profiles", "profile_id")
    checks.unique(new, "new_profiles", ["profile_id"])
    new["ord"] = np.arange(len(new), dtype=np.int64)
    return new


def _merged_frame(frame: pd.DataFrame) -> pd.DataFrame:
    mer = checks.columns(frame, "merged", ["profile_id", "merged_into"])
    checks.tokens(mer, "merged", "profile_id")
    checks.tokens(mer, "merged", "merged_into")
    checks.unique(mer, "merged", ["profile_id"])
    if (mer["profile_id"] == mer["merged_into"]).any():
        raise ValueError("merged: a profile cannot be merged into itself")
    if mer["merged_into"].isin(mer["profile_id"]).any():
        raise ValueError("merged: merged_into must name a survivor, not a profile merged tonight")
    return mer


def _event_frame(frame: pd.DataFrame) -> pd.DataFrame:
    ev = checks.columns(frame, "events", list(_EVENT_COLUMNS))
    allowed = [e.value for e in IdentityEvent]
    if not ev["event"].isin(allowed).all():
        raise ValueError(f"events.event must be one of {', '.join(allowed)}")
    checks.tokens(ev, "events", "profile_id")
    checks.tokens(ev, "events", "other_profile_id", nullable=True)
    details = frame["detail"].tolist() if "detail" in frame.columns else [None] * len(ev)
    ev["detail"] = pd.Series(
        [None if _missing(d) else checks.counts_json(d, "events.detail") for d in details],
        dtype="str",
    )
    ev["ord"] = np.arange(len(ev), dtype=np.int64)
    return ev


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _count(conn: Connection, query: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(query.subquery())).scalar_one())


def _is_active(column: Any) -> Any:
    """True where `column` names an active profile."""
    return (
        select(profiles.c.profile_id)
        .where(profiles.c.profile_id == column, profiles.c.status == _ACTIVE)
        .exists()
    )


def _insert_new_profiles(conn: Connection, staged: Table, run_id: str) -> None:
    clash = _count(
        conn,
        select(staged.c.profile_id).join(profiles, profiles.c.profile_id == staged.c.profile_id),
    )
    if clash:
        raise ValueError(f"new_profiles: {clash:,} profile id(s) already exist in the store")
    last = conn.execute(select(func.coalesce(func.max(profiles.c.created_seq), 0))).scalar_one()
    run = literal(run_id, Text)
    conn.execute(
        insert(profiles).from_select(
            list(PROFILE_COLUMNS),
            select(
                staged.c.profile_id,
                staged.c.ord + (int(last) + 1),
                run,
                literal(_ACTIVE, Text),
                null(),
                run,
            ).order_by(staged.c.profile_id),  # primary-key order; created_seq is by `ord`
        )
    )


def _apply_merges(conn: Connection, staged: Table, run_id: str) -> None:
    for column in ("profile_id", "merged_into"):
        bad = _count(conn, select(staged.c[column]).where(~_is_active(staged.c[column])))
        if bad:
            raise ValueError(f"merged.{column}: {bad:,} id(s) are not active profiles")
    conn.execute(
        update(profiles)
        .where(profiles.c.profile_id == staged.c.profile_id)
        .values(
            status=ProfileStatus.MERGED.value,
            merged_into=staged.c.merged_into,
            last_seen_run=run_id,
        )
    )
    # profiles merged earlier into one merged tonight now point at its survivor
    conn.execute(
        update(profiles)
        .where(profiles.c.merged_into == staged.c.profile_id)
        .values(merged_into=staged.c.merged_into)
    )
    conn.execute(
        update(identifiers)
        .where(identifiers.c.profile_id == staged.c.profile_id)
        .values(profile_id=staged.c.merged_into)
    )


def _check_active(conn: Connection, seen: Table) -> None:
    """Every profile tonight's identifiers point at is active (after new profiles and merges)."""
    orphans = _count(conn, select(seen.c.profile_id).where(~_is_active(seen.c.profile_id)))
    if orphans:
        raise ValueError(
            f"identifiers: {orphans:,} profile id(s) are not active profiles "
            "(unknown, or merged tonight or before)"
        )


def _profile_id_index() -> Index:
    return next(i for i in identifiers.indexes if i.name == "ix_identifiers_profile_id")


def _upsert_identifiers(conn: Connection, backend: Backend, staged: Table, run_id: str) -> None:
    run = literal(run_id, Text)
    # No ORDER BY: the rows were staged sorted by pseudonym (Night.of), and scanning a
    # fresh staging table returns them in that order; another sort would only cost time.
    # SQLite needs the WHERE: without one, ON CONFLICT would parse as a join's ON.
    rows = select(*(staged.c[c] for c in IDENTIFIER_COLUMNS), run, run).where(true())
    target = [*IDENTIFIER_COLUMNS, "first_seen_run", "last_seen_run"]
    if conn.execute(select(identifiers.c.pseudonym).limit(1)).first() is None:
        index = _profile_id_index()
        index.drop(conn)
        conn.execute(insert(identifiers).from_select(target, rows))
        index.create(conn)
        return
    key = [identifiers.c[c] for c in _KEY]
    if backend == "postgresql":
        pg = postgresql.insert(identifiers).from_select(target, rows)
        conn.execute(
            pg.on_conflict_do_update(
                index_elements=key,
                set_={"profile_id": pg.excluded.profile_id, "last_seen_run": run},
            )
        )
        return
    moved = sqlite.insert(identifiers).from_select(target, rows)
    conn.execute(
        moved.on_conflict_do_update(
            index_elements=key,
            set_={"profile_id": moved.excluded.profile_id, "last_seen_run": run},
            where=identifiers.c.profile_id != moved.excluded.profile_id,
        )
    )
    seen = sqlite.insert(identifiers).from_select(target, rows)
    conn.execute(
        seen.on_conflict_do_update(
            index_elements=key,
            set_={"last_seen_run": run},
            where=identifiers.c.last_seen_run != run,
        )
    )


def _touch_profiles(conn: Connection, seen: Table, run_id: str) -> None:
    conn.execute(
        update(profiles)
        .where(profiles.c.profile_id == seen.c.profile_id, profiles.c.last_seen_run != run_id)
        .values(last_seen_run=run_id)
    )


def _insert_events(conn: Connection, staged: Table, run_id: str) -> None:
    for column in ("profile_id", "other_profile_id"):
        unknown = _count(
            conn,
            select(staged.c[column]).where(
                staged.c[column].is_not(None),
                ~select(profiles.c.profile_id)
                .where(profiles.c.profile_id == staged.c[column])
                .exists(),
            ),
        )
        if unknown:
            raise ValueError(f"events.{column}: {unknown:,} id(s) are not profiles of the store")
    conn.execute(
        insert(identity_events).from_select(
            ["run_id", *_EVENT_COLUMNS, "detail", "recorded_at"],
            select(
                literal(run_id, Text),
                *(staged.c[c] for c in _EVENT_COLUMNS),
                staged.c.detail,
                literal(datetime.now(UTC), UTCDateTime()),
            ).order_by(staged.c.ord),
        )
    )
