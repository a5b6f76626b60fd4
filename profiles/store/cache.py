"""The provider cache in the store: checked entries, saved in bulk, read per provider request.

The SQL behind `StateStore.save_cache`, `load_cache`, `purge_cache` and `cache_stats`. An
entry is one lookup's outcome at one provider instance for one request shape (`params_hash`)
and one identifier (kind, key_id, HMAC pseudonym): `matched` with its signals or `no_match`.
Failed lookups are never cached. Rules:

* upsert: an entry replaces the stored one for its key unless the stored one was fetched
  later, so a retried or late save never brings back an older answer;
* identifiers on the suppression list as `erasure` get no entries (they are skipped, like
  their consent records), and erasing one deletes its entries (`profiles.store.subjects`);
* `load_cache` returns what has not expired at `now`; `purge_cache` deletes the rest.

What makes a million entries fast is what makes `save_identity` fast: entries are staged in
key order (provider, params_hash, pseudonym), so each index page is visited once; the very
first load into an empty table builds the pseudonym index afterwards; the upsert's SET list
holds no indexed column, so neither backend touches an index for a refreshed entry; and the
signals are checked and rewritten by Arrow, not per entry in Python
(`profiles.store.signals`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Index, Text, case, delete, func, insert, literal, select, true
from sqlalchemy.dialects import postgresql, sqlite

from profiles.store import checks
from profiles.store.bulk import ColumnType, read_frame, staging
from profiles.store.engine import Backend
from profiles.store.schema import CACHE_STATUSES, CacheStatus, provider_cache
from profiles.store.signals import canonical_signals
from profiles.store.subjects import changed, not_erased

CACHE_ENTRY_COLUMNS: dict[str, ColumnType] = {
    "provider": "text",
    "params_hash": "text",
    "kind": "text",
    "key_id": "text",
    "pseudonym": "text",
    "status": "text",
    "signals": "text",
    "fetched_at": "timestamp",
    "expires_at": "timestamp",
}
"""Columns of `save_cache(entries)`."""

CACHE_COLUMNS: dict[str, ColumnType] = {
    **{c: t for c, t in CACHE_ENTRY_COLUMNS.items() if c not in ("provider", "params_hash")},
    "run_id": "text",
}
"""Columns of `load_cache(...)`: an entry's fields and the run that fetched it."""

CACHE_STATS_COLUMNS: dict[str, ColumnType] = {
    "provider": "text",
    "entries": "bigint",
    "matched": "bigint",
    "no_match": "bigint",
    "oldest": "timestamp",
    "newest": "timestamp",
}
"""Columns of `cache_stats()`: per provider, entries and how they ended, oldest and newest
`fetched_at`."""

PARAMS_HASH_PATTERN = checks.PSEUDONYM_PATTERN
"""A request-parameter hash: SHA-256, 64 lower-case hex characters."""

_NAME = "cache"
_KEY = ("provider", "params_hash", "pseudonym", "kind", "key_id")
"""The primary key, in index order."""
_REFRESHED = ("status", "signals", "fetched_at", "expires_at", "run_id")


def cache_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Checked cache entries in key order, signals canonical; ValueError (column and count,
    never a value) if any breaks the contract, or two share a key."""
    text_columns = [c for c, t in CACHE_ENTRY_COLUMNS.items() if t == "text" and c != "signals"]
    out = checks.columns(frame, _NAME, text_columns)
    checks.tokens(out, _NAME, "provider")
    checks.hex_ids(out, _NAME, "params_hash", PARAMS_HASH_PATTERN)
    checks.kinds(out, _NAME)
    checks.tokens(out, _NAME, "key_id")
    checks.pseudonyms(out, _NAME)
    checks.choices(out, _NAME, "status", CACHE_STATUSES)
    out["fetched_at"] = checks.timestamps(frame, _NAME, "fetched_at")
    out["expires_at"] = checks.timestamps(frame, _NAME, "expires_at")
    if len(out):
        checks.fail_count(
            out["expires_at"] < out["fetched_at"], f"{_NAME}.expires_at must not precede fetched_at"
        )
        given = frame["signals"] if "signals" in frame.columns else pd.Series([None] * len(out))
        signals = canonical_signals(given.reset_index(drop=True))
        out["signals"] = signals.text
        checks.fail_count(
            pd.Series((signals.counts > 0) & (out["status"] == CacheStatus.NO_MATCH).to_numpy()),
            f"{_NAME}.signals must be empty for a no_match",
        )
    else:
        out["signals"] = pd.Series([], dtype="str")
    return _in_key_order(out)[list(CACHE_ENTRY_COLUMNS)]


def _in_key_order(out: pd.DataFrame) -> pd.DataFrame:
    """`out` sorted by (provider, params_hash, pseudonym), after checking keys are unique."""
    ordered = checks.sorted_by_pseudonym(out, _NAME, list(_KEY))
    groups = ordered["provider"] + "/" + ordered["params_hash"]
    codes, uniques = pd.factorize(groups, sort=True)
    if len(uniques) < 2:
        return ordered
    # stable: rows of one provider and request keep their pseudonym order
    return ordered.take(np.argsort(codes, kind="stable")).reset_index(drop=True)


def _pseudonym_index() -> Index:
    return next(i for i in provider_cache.indexes if i.name == "ix_provider_cache_pseudonym")


def save_cache(conn: Connection, backend: Backend, batch: pd.DataFrame, run_id: str) -> int:
    """Upsert checked entries inside the caller's write transaction; returns how many were
    stored (new, or replacing an entry fetched no later). See StateStore.save_cache."""
    batch = not_erased(conn, backend, batch)
    if not len(batch):
        return 0
    if backend == "postgresql":
        # the upsert's join over a million staged rows stays in memory
        conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
        conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '512MB'")
    target = [*CACHE_ENTRY_COLUMNS, "run_id"]
    with staging(conn, backend) as stage:
        staged = stage.stage("enrich_stage_cache", batch, CACHE_ENTRY_COLUMNS)
        # No ORDER BY: staged in key order, and a fresh staging table scans in that order.
        # SQLite needs the WHERE: without one, ON CONFLICT would parse as a join's ON.
        rows = select(*(staged.c[c] for c in CACHE_ENTRY_COLUMNS), literal(run_id, Text)).where(
            true()
        )
        if conn.execute(select(provider_cache.c.provider).limit(1)).first() is None:
            index = _pseudonym_index()
            index.drop(conn)
            conn.execute(insert(provider_cache).from_select(target, rows))
            index.create(conn)
            return len(batch)
        dialect: Any = postgresql if backend == "postgresql" else sqlite
        upsert = dialect.insert(provider_cache).from_select(target, rows)
        return changed(
            conn,
            upsert.on_conflict_do_update(
                index_elements=[provider_cache.c[c] for c in _KEY],
                set_={c: upsert.excluded[c] for c in _REFRESHED},
                where=provider_cache.c.fetched_at <= upsert.excluded.fetched_at,
            ),
        )


def load_query(provider: str, params: str, now: datetime) -> Any:
    """Unexpired entries of one provider and request shape."""
    return select(*(provider_cache.c[c] for c in CACHE_COLUMNS)).where(
        provider_cache.c.provider == provider,
        provider_cache.c.params_hash == params,
        provider_cache.c.expires_at > now,
    )


def load_cache(
    conn: Connection, backend: Backend, provider: str, params: str, now: datetime
) -> pd.DataFrame:
    """See StateStore.load_cache."""
    return read_frame(conn, backend, load_query(provider, params, now), CACHE_COLUMNS)


def purge_cache(conn: Connection, now: datetime) -> int:
    """Delete entries expired at `now`; returns how many."""
    return changed(conn, delete(provider_cache).where(provider_cache.c.expires_at <= now))


def cache_stats(conn: Connection, backend: Backend) -> pd.DataFrame:
    """See StateStore.cache_stats."""
    status = provider_cache.c.status

    def count(value: str) -> Any:
        return func.coalesce(func.sum(case((status == value, 1), else_=0)), 0)

    query = (
        select(
            provider_cache.c.provider,
            func.count().label("entries"),
            count(CacheStatus.MATCHED.value).label("matched"),
            count(CacheStatus.NO_MATCH.value).label("no_match"),
            func.min(provider_cache.c.fetched_at).label("oldest"),
            func.max(provider_cache.c.fetched_at).label("newest"),
        )
        .group_by(provider_cache.c.provider)
        .order_by(provider_cache.c.provider)
    )
    return read_frame(conn, backend, query, CACHE_STATS_COLUMNS)
