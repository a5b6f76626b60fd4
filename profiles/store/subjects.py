"""Data-subject state in the store: consent records, the suppression list and erasure.

The SQL behind `StateStore.save_consents`, `add_suppressions`, `record_objection`,
`erase_subject`, `subject_identifiers` and `find_profiles`. Inputs are checked here like
`save_identity`'s (64-hex pseudonyms, short tokens, nothing raw; ValueError naming a column
and a count, never a value) and written in bulk (`profiles.store.bulk`).

Rules that hold across these calls:

* consent record ids are content-derived, so saving is insert-or-keep: a record already
  stored keeps its first evidence and `first_seen_run`, and loading a consent file twice adds
  nothing;
* an identifier on the suppression list as `erasure` keeps nothing but that entry: adding
  the entry deletes its consent records and provider cache entries, and later saves skip
  records and cache entries for it, so a consent file still listing an erased person cannot
  bring their data back (the identity graph is the caller's to keep clean: `save_identity`
  does not consult the list);
* the first suppression request per identifier and kind is kept (its `request_ref` and
  time); repeating a request adds nothing.
"""

from __future__ import annotations

from datetime import datetime
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
    and_,
    delete,
    insert,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite

from profiles.store import checks
from profiles.store.bulk import ColumnType, append, read_frame, staging
from profiles.store.engine import Backend
from profiles.store.schema import (
    CONSENT_STATUSES,
    ERASURE,
    PURPOSES,
    SUPPRESSION_KINDS,
    ProfileStatus,
    UTCDateTime,
    consent_records,
    erasures,
    identifiers,
    profiles,
    provider_cache,
    suppressions,
)

SUBJECT_COLUMNS: dict[str, ColumnType] = {"kind": "text", "key_id": "text", "pseudonym": "text"}
"""An identifier as DSAR calls name it: `subject_identifiers()` and `find_profiles(...)`."""

CONSENT_COLUMNS: dict[str, ColumnType] = {
    "record_id": "text",
    "kind": "text",
    "key_id": "text",
    "pseudonym": "text",
    "purpose": "text",
    "status": "text",
    "recorded_at": "timestamp",
    "source": "text",
    "notice_version": "text",
    "evidence_ref": "text",
    "tcf": "boolean",
    "first_seen_run": "text",
}
"""Columns of `load_consents()`; `save_consents` takes all but `first_seen_run`."""

CONSENT_INPUT_COLUMNS: dict[str, ColumnType] = {
    k: v for k, v in CONSENT_COLUMNS.items() if k != "first_seen_run"
}

SUPPRESSION_COLUMNS: dict[str, ColumnType] = {
    "kind": "text",
    "key_id": "text",
    "pseudonym": "text",
    "suppression": "text",
    "recorded_at": "timestamp",
    "request_ref": "text",
}
"""Columns of `load_suppressions()` and of `add_suppressions(...)`."""

ERASURE_COLUMNS: dict[str, ColumnType] = {
    "request_ref": "text",
    "profile_id": "text",
    "identifiers_deleted": "bigint",
    "consent_records_deleted": "bigint",
    "profiles_deleted": "bigint",
    "suppressions_added": "bigint",
    "cache_entries_deleted": "bigint",
    "recorded_at": "timestamp",
    "run_id": "text",
}
"""Columns of `load_erasures()`."""

ERASURE_COUNTS = (
    "identifiers_deleted",
    "consent_records_deleted",
    "profiles_deleted",
    "suppressions_added",
    "cache_entries_deleted",
)
"""Keys of the counts `erase_subject` returns."""

_SUBJECT_KEY = ("kind", "key_id", "pseudonym")
_SUPPRESSION_KEY = (*_SUBJECT_KEY, "suppression")
_TEXT: ColumnType = "text"
_ACTIVE = ProfileStatus.ACTIVE.value


ERASURE_REF = "erased"
"""The request reference of every erasure suppression. It deliberately names no request: the
erasures table links a request to the erased profile id (and so to its decision-log entries),
and a suppression row, which holds the person's pseudonyms, must not lead there too. Once the
identifiers are deleted, nothing links the log's entries back to the person."""


def changed(conn: Connection, statement: Any) -> int:
    """Rows inserted, updated or deleted by `statement`. SQLAlchemy keeps an INSERT's row
    count (which psycopg reports) only when asked to; without it PostgreSQL would read -1."""
    return int(conn.execute(statement.execution_options(preserve_rowcount=True)).rowcount)


def _text_columns(columns: dict[str, ColumnType]) -> list[str]:
    return [name for name, kind in columns.items() if kind == _TEXT]


def consent_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Checked consent records; ValueError if two share a record id."""
    name = "consents"
    out = checks.columns(frame, name, _text_columns(CONSENT_INPUT_COLUMNS))
    checks.hex_ids(out, name, "record_id", checks.RECORD_ID_PATTERN)
    checks.kinds(out, name)
    checks.tokens(out, name, "key_id")
    checks.pseudonyms(out, name)
    checks.choices(out, name, "purpose", PURPOSES)
    checks.choices(out, name, "status", CONSENT_STATUSES)
    checks.tokens(out, name, "source", nullable=True)
    checks.tokens(out, name, "notice_version", nullable=True)
    checks.tokens(out, name, "evidence_ref")
    out["recorded_at"] = checks.timestamps(frame, name, "recorded_at")
    out["tcf"] = checks.flags(frame, name, "tcf")
    checks.distinct(out, name, "record_id")
    return out


def subject_frame(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Checked identifiers (kind, key_id, pseudonym), duplicates dropped."""
    out = checks.columns(frame, name, list(SUBJECT_COLUMNS))
    checks.kinds(out, name)
    checks.tokens(out, name, "key_id")
    checks.pseudonyms(out, name)
    return out.drop_duplicates(list(_SUBJECT_KEY)).reset_index(drop=True)


def suppression_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Checked suppression entries; ValueError if two share an identifier and kind."""
    name = "suppressions"
    out = checks.columns(frame, name, _text_columns(SUPPRESSION_COLUMNS))
    checks.kinds(out, name)
    checks.tokens(out, name, "key_id")
    checks.pseudonyms(out, name)
    checks.choices(out, name, "suppression", SUPPRESSION_KINDS)
    checks.tokens(out, name, "request_ref")
    out["recorded_at"] = checks.timestamps(frame, name, "recorded_at")
    checks.unique(out, name, list(_SUPPRESSION_KEY))
    return out[list(SUPPRESSION_COLUMNS)]


def _same_subject(table: Table, other: Any) -> list[Any]:
    return [table.c[c] == other.c[c] for c in _SUBJECT_KEY]


def _consent_index() -> Index:
    return next(i for i in consent_records.indexes if i.name == "ix_consent_records_subject")


def _subject_keys(frame: pd.DataFrame) -> pa.ChunkedArray:
    """One comparable text per identifier: kind, key id and pseudonym joined."""
    parts = [checks.arrow_strings(frame[c]) for c in _SUBJECT_KEY]
    return pc.binary_join_element_wise(*parts, pa.scalar("|", pa.large_string()))


def _keep(batch: pd.DataFrame, drop: pa.ChunkedArray | pa.Array) -> pd.DataFrame:
    return batch.loc[~np.asarray(drop)].reset_index(drop=True)


def _unknown(conn: Connection, backend: Backend, batch: pd.DataFrame) -> pd.DataFrame:
    """The records of `batch` whose id the store does not hold yet.

    Most nights re-read a consent log that is mostly stored already. Reading the stored ids
    (one column, in bulk) and comparing them in Arrow costs a fraction of writing every
    record only for a conflict check to drop it. The read runs in the save's transaction,
    which holds the writer lock, so no id can arrive in between.
    """
    stored = read_frame(conn, backend, select(consent_records.c.record_id), {"record_id": _TEXT})[
        "record_id"
    ]
    if not len(stored) or not len(batch):
        return batch
    known = pc.is_in(
        checks.arrow_strings(batch["record_id"]), value_set=checks.arrow_strings(stored)
    )
    return _keep(batch, known)


def not_erased(conn: Connection, backend: Backend, batch: pd.DataFrame) -> pd.DataFrame:
    """The rows of `batch` (kind, key_id, pseudonym, ...) whose identifier is not suppressed
    as erased."""
    query = select(*(suppressions.c[c] for c in _SUBJECT_KEY)).where(
        suppressions.c.suppression == ERASURE
    )
    erased = read_frame(conn, backend, query, SUBJECT_COLUMNS)
    if not len(erased) or not len(batch):
        return batch
    return _keep(batch, pc.is_in(_subject_keys(batch), value_set=_subject_keys(erased)))


def save_consents(
    conn: Connection, backend: Backend, batch: pd.DataFrame, run_id: str | None
) -> int:
    """Insert the checked records that are new and not erased; returns how many were added.

    Runs inside the caller's write transaction. What is left after the two filters is new
    for certain, so it is appended in bulk without a conflict check, in record-id order (the
    primary key is then written front to back). Into an empty table the subject index is
    built afterwards, in one sort instead of a million insertions.
    """
    empty = conn.execute(select(consent_records.c.record_id).limit(1)).first() is None
    if not empty:
        batch = _unknown(conn, backend, batch)
    batch = not_erased(conn, backend, batch)
    if not len(batch):
        return 0
    batch = checks.sorted_by_hex(batch, "consents", "record_id", 32, [])
    batch["first_seen_run"] = pd.Series(run_id, index=batch.index, dtype="str")
    if not empty:
        append(conn, backend, consent_records.name, batch, CONSENT_COLUMNS)
        return len(batch)
    if backend == "postgresql":
        # the index build sorts in memory instead of spilling to disk
        conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '512MB'")
    index = _consent_index()
    index.drop(conn)
    append(conn, backend, consent_records.name, batch, CONSENT_COLUMNS)
    index.create(conn)
    return len(batch)


def _cache_of(subjects: Any, *where: Any) -> Any:
    """Delete the provider cache entries of the identifiers `subjects` (a table with kind,
    key_id and pseudonym) holds where `where` is true. The pseudonym comes first so that
    both backends find the entries through the pseudonym index, not by a scan."""
    return delete(provider_cache).where(
        provider_cache.c.pseudonym.in_(select(subjects.c.pseudonym).where(*where)),
        select(subjects.c.pseudonym)
        .where(*where, *_same_subject(provider_cache, subjects))
        .exists(),
    )


def add_suppressions(conn: Connection, backend: Backend, batch: pd.DataFrame) -> int:
    """Insert the checked entries not yet listed; erasures delete consent records and
    provider cache entries too."""
    if not len(batch):
        return 0
    with staging(conn, backend) as stage:
        staged = stage.stage("enrich_stage_suppressions", batch, SUPPRESSION_COLUMNS)
        rows = select(*(staged.c[c] for c in SUPPRESSION_COLUMNS)).where(true())
        dialect = postgresql if backend == "postgresql" else sqlite
        ins = dialect.insert(suppressions).from_select(list(SUPPRESSION_COLUMNS), rows)
        added = changed(conn, ins.on_conflict_do_nothing(index_elements=list(_SUPPRESSION_KEY)))
        if (batch["suppression"] == ERASURE).any():
            conn.execute(
                delete(consent_records).where(
                    select(staged.c.pseudonym)
                    .where(staged.c.suppression == ERASURE, *_same_subject(staged, consent_records))
                    .exists()
                )
            )
            conn.execute(_cache_of(staged, staged.c.suppression == ERASURE))
        return added


def _subject_profiles(profile_id: str) -> Any:
    """The profile and every profile merged into it (merged_into always names an active one)."""
    return select(profiles.c.profile_id).where(
        or_(profiles.c.profile_id == profile_id, profiles.c.merged_into == profile_id)
    )


def require_profile(conn: Connection, profile_id: str) -> tuple[str, str | None]:
    """The profile's status and merged_into; ValueError if the store does not hold it."""
    row = conn.execute(
        select(profiles.c.status, profiles.c.merged_into).where(profiles.c.profile_id == profile_id)
    ).first()
    if row is None:
        raise ValueError(f"profile {profile_id} is not in the state store")
    return str(row.status), row.merged_into


def erase(
    conn: Connection,
    backend: Backend,
    *,
    profile_id: str,
    request_ref: str,
    recorded_at: datetime,
    run_id: str | None,
) -> dict[str, int]:
    """Erase an active profile and the profiles merged into it; see StateStore.erase_subject."""
    done = conn.execute(
        select(*(erasures.c[c] for c in ERASURE_COUNTS)).where(
            erasures.c.request_ref == request_ref, erasures.c.profile_id == profile_id
        )
    ).first()
    if done is not None:
        return {c: int(v) for c, v in zip(ERASURE_COUNTS, done, strict=True)}
    status, merged_into = require_profile(conn, profile_id)
    if status != _ACTIVE:
        raise ValueError(
            f"profile {profile_id} was merged into {merged_into}; erase the active profile"
        )
    subject = _subject_profiles(profile_id)
    held = identifiers.c.profile_id.in_(subject)
    when = literal(recorded_at, UTCDateTime())
    dialect = postgresql if backend == "postgresql" else sqlite
    suppress = dialect.insert(suppressions).from_select(
        [*_SUBJECT_KEY, "suppression", "recorded_at", "request_ref"],
        select(
            *(identifiers.c[c] for c in _SUBJECT_KEY),
            literal(ERASURE, Text),
            when,
            literal(ERASURE_REF, Text),
        ).where(held),
    )
    # in this order: the identifiers must still be there to find what they suppress and hold
    counts = {
        "cache_entries_deleted": changed(conn, _cache_of(identifiers, held)),
        "suppressions_added": changed(
            conn, suppress.on_conflict_do_nothing(index_elements=list(_SUPPRESSION_KEY))
        ),
        "consent_records_deleted": changed(
            conn,
            delete(consent_records).where(
                select(identifiers.c.pseudonym)
                .where(held, *_same_subject(identifiers, consent_records))
                .exists()
            ),
        ),
        "identifiers_deleted": changed(conn, delete(identifiers).where(held)),
        "profiles_deleted": changed(
            conn,
            delete(profiles).where(
                or_(profiles.c.profile_id == profile_id, profiles.c.merged_into == profile_id)
            ),
        ),
    }
    result = {c: counts[c] for c in ERASURE_COUNTS}
    conn.execute(
        insert(erasures).values(
            request_ref=request_ref,
            profile_id=profile_id,
            recorded_at=recorded_at,
            run_id=run_id,
            **result,
        )
    )
    return result


def subject_identifiers_query(profile_id: str) -> Any:
    """kind, key_id, pseudonym held by the profile and the profiles merged into it."""
    return select(*(identifiers.c[c] for c in _SUBJECT_KEY)).where(
        identifiers.c.profile_id.in_(_subject_profiles(profile_id))
    )


def find_profiles(conn: Connection, backend: Backend, subjects: pd.DataFrame) -> list[str]:
    """Active profiles holding any of the checked identifiers, sorted."""
    if not len(subjects):
        return []
    with staging(conn, backend) as stage:
        staged = stage.stage("enrich_stage_subjects", subjects, SUBJECT_COLUMNS)
        query = (
            select(identifiers.c.profile_id)
            .distinct()
            .select_from(
                identifiers.join(staged, and_(*_same_subject(identifiers, staged))).join(
                    profiles, profiles.c.profile_id == identifiers.c.profile_id
                )
            )
            .where(profiles.c.status == _ACTIVE)
            .order_by(identifiers.c.profile_id)
        )
        return [str(p) for p in conn.execute(query).scalars()]
