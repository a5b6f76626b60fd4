"""Schema migrations of the state store: an ordered list, applied on open.

Each migration is a version number, a name and a function of a connection. `migrate` applies
the missing ones in order, one transaction each, each under the store's writer lock (so two
processes opening the same store at once apply every migration exactly once) and records it
in `schema_migrations`. An up-to-date store is only read, never written. A store whose
version is newer than the code's newest migration is refused.

Adding version 4 is one function and one entry in `MIGRATIONS`::

    def _v4_add_note(conn: Connection) -> None:
        conn.execute(text("ALTER TABLE runs ADD COLUMN note TEXT"))

    MIGRATIONS = (..., Migration(4, "add run note", _v4_add_note))

and the matching change to `profiles.store.schema`. Migrations are history: once released,
a migration's function never changes (the migrations below spell out their tables instead
of reusing `schema.py`, which moves on with later versions).

    1  runs, profiles, identifiers, identity_events
    2  consent_records, suppressions, erasures (consent, objections, opt-outs, Art. 17)
    3  provider_cache; erasures.cache_entries_deleted
    4  runs.step, runs.fingerprint, runs.attempts (resuming an interrupted run)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
    text,
)

from profiles.store.engine import Database, ensure_schema
from profiles.store.errors import StoreError
from profiles.store.schema import NAMING_CONVENTION, UTCDateTime, schema_migrations


@dataclass(frozen=True)
class Migration:
    """One step of the schema: `apply` runs inside a transaction holding the writer lock."""

    version: int
    name: str
    apply: Callable[[Connection], None]


def _v1_initial(conn: Connection) -> None:
    """Run ledger, profiles, identifiers and identity events."""
    key = Text().with_variant(Text(collation="C"), "postgresql")
    md = MetaData(naming_convention=NAMING_CONVENTION)
    Table(
        "runs",
        md,
        Column("run_id", Text, primary_key=True),
        Column("seq", BigInteger, nullable=False, unique=True),
        Column("started_at", UTCDateTime, nullable=False),
        Column("finished_at", UTCDateTime, nullable=True),
        Column("status", Text, nullable=False),
        Column("config_hash", Text, nullable=False),
        Column("summary", Text, nullable=True),
        CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="status"),
    )
    Table(
        "profiles",
        md,
        Column("profile_id", key, primary_key=True),
        Column("created_seq", BigInteger, nullable=False, unique=True),
        Column("created_run", Text, nullable=False),
        Column("status", Text, nullable=False),
        Column("merged_into", key, nullable=True),
        Column("last_seen_run", Text, nullable=False),
        CheckConstraint("status IN ('active', 'merged')", name="status"),
        CheckConstraint(
            "(status = 'active' AND merged_into IS NULL) OR "
            "(status = 'merged' AND merged_into IS NOT NULL)",
            name="merged_into",
        ),
        postgresql_with={"fillfactor": 50},
    )
    Table(
        "identifiers",
        md,
        Column("pseudonym", key, primary_key=True),
        Column("kind", key, primary_key=True),
        Column("key_id", key, primary_key=True),
        Column("profile_id", key, nullable=False),
        Column("first_seen_run", Text, nullable=False),
        Column("last_seen_run", Text, nullable=False),
        CheckConstraint("kind IN ('email', 'phone', 'customer_id')", name="kind"),
        CheckConstraint("length(pseudonym) = 64", name="pseudonym"),
        Index("ix_identifiers_profile_id", "profile_id"),
        sqlite_with_rowid=False,
        postgresql_with={"fillfactor": 50},
    )
    Table(
        "identity_events",
        md,
        Column(
            "event_id",
            BigInteger().with_variant(Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        Column("run_id", Text, nullable=False),
        Column("event", Text, nullable=False),
        Column("profile_id", key, nullable=False),
        Column("other_profile_id", key, nullable=True),
        Column("detail", Text, nullable=True),
        Column("recorded_at", UTCDateTime, nullable=False),
        CheckConstraint("event IN ('create', 'merge', 'split')", name="event"),
        Index("ix_identity_events_profile_id", "profile_id"),
        Index("ix_identity_events_run_id", "run_id"),
    )
    md.create_all(conn)


def _v2_consent_and_suppression(conn: Connection) -> None:
    """Consent records, the suppression list and the erasure log."""
    key = Text().with_variant(Text(collation="C"), "postgresql")
    kinds = "kind IN ('email', 'phone', 'customer_id')"
    md = MetaData(naming_convention=NAMING_CONVENTION)
    Table(
        "consent_records",
        md,
        Column("record_id", key, primary_key=True),
        Column("kind", key, nullable=False),
        Column("key_id", key, nullable=False),
        Column("pseudonym", key, nullable=False),
        Column("purpose", key, nullable=False),
        Column("status", Text, nullable=False),
        Column("recorded_at", UTCDateTime, nullable=False),
        Column("source", Text, nullable=True),
        Column("notice_version", Text, nullable=True),
        Column("evidence_ref", Text, nullable=False),
        Column("tcf", Boolean, nullable=False),
        Column("first_seen_run", Text, nullable=True),
        CheckConstraint(kinds, name="kind"),
        CheckConstraint("length(pseudonym) = 64", name="pseudonym"),
        CheckConstraint("length(record_id) = 32", name="record_id"),
        CheckConstraint(
            "purpose IN ('enrichment', 'profiling', 'crm_export', 'ads_export', 'analytics')",
            name="purpose",
        ),
        CheckConstraint("status IN ('granted', 'withdrawn')", name="status"),
        Index("ix_consent_records_subject", "kind", "key_id", "pseudonym", "purpose"),
    )
    Table(
        "suppressions",
        md,
        Column("kind", key, nullable=False),
        Column("key_id", key, nullable=False),
        Column("pseudonym", key, nullable=False),
        Column("suppression", key, nullable=False),
        Column("recorded_at", UTCDateTime, nullable=False),
        Column("request_ref", Text, nullable=False),
        PrimaryKeyConstraint("kind", "key_id", "pseudonym", "suppression"),
        CheckConstraint(kinds, name="kind"),
        CheckConstraint("length(pseudonym) = 64", name="pseudonym"),
        CheckConstraint(
            "suppression IN ('erasure', 'objection_profiling', 'objection_direct_marketing', "
            "'opt_out_sale_sharing')",
            name="suppression",
        ),
    )
    Table(
        "erasures",
        md,
        Column("request_ref", key, primary_key=True),
        Column("profile_id", key, primary_key=True),
        Column("identifiers_deleted", Integer, nullable=False),
        Column("consent_records_deleted", Integer, nullable=False),
        Column("profiles_deleted", Integer, nullable=False),
        Column("suppressions_added", Integer, nullable=False),
        Column("recorded_at", UTCDateTime, nullable=False),
        Column("run_id", Text, nullable=True),
    )
    md.create_all(conn)


def _v3_provider_cache(conn: Connection) -> None:
    """The provider cache, and the count of cache entries an erasure deleted."""
    key = Text().with_variant(Text(collation="C"), "postgresql")
    md = MetaData(naming_convention=NAMING_CONVENTION)
    Table(
        "provider_cache",
        md,
        Column("provider", key, nullable=False),
        Column("params_hash", key, nullable=False),
        Column("kind", key, nullable=False),
        Column("key_id", key, nullable=False),
        Column("pseudonym", key, nullable=False),
        Column("status", Text, nullable=False),
        Column("signals", Text, nullable=False),
        Column("fetched_at", UTCDateTime, nullable=False),
        Column("expires_at", UTCDateTime, nullable=False),
        Column("run_id", Text, nullable=False),
        PrimaryKeyConstraint("provider", "params_hash", "pseudonym", "kind", "key_id"),
        CheckConstraint("kind IN ('email', 'phone', 'customer_id')", name="kind"),
        CheckConstraint("length(pseudonym) = 64", name="pseudonym"),
        CheckConstraint("length(params_hash) = 64", name="params_hash"),
        CheckConstraint("status IN ('matched', 'no_match')", name="status"),
        CheckConstraint("expires_at >= fetched_at", name="expiry"),
        Index("ix_provider_cache_pseudonym", "pseudonym"),
        sqlite_with_rowid=False,
    )
    md.create_all(conn)
    conn.execute(
        text("ALTER TABLE erasures ADD COLUMN cache_entries_deleted INTEGER NOT NULL DEFAULT 0")
    )


def _v4_run_steps(conn: Connection) -> None:
    """How far each run got (started, identity_saved, published), what it ran on (a hash of
    the config, policy bundle, as-of and the sources' sizes and times) and how many attempts
    it took: what resuming an interrupted run needs."""
    conn.execute(text("ALTER TABLE runs ADD COLUMN step TEXT NOT NULL DEFAULT 'started'"))
    conn.execute(text("ALTER TABLE runs ADD COLUMN fingerprint TEXT"))
    conn.execute(text("ALTER TABLE runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1"))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial", _v1_initial),
    Migration(2, "consent records, suppressions and erasures", _v2_consent_and_suppression),
    Migration(3, "provider cache", _v3_provider_cache),
    Migration(4, "run steps, fingerprint and attempts", _v4_run_steps),
)
"""Every migration, oldest first; versions are 1, 2, 3, ... without gaps."""


def latest_version(migrations: Sequence[Migration]) -> int:
    """The version a store has after `migrations`; checks they are numbered 1..n."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1..n in order, got {versions}")
    return len(versions)


def current_version(conn: Connection) -> int:
    """The store's schema version: 0 for an empty database."""
    if not inspect(conn).has_table(schema_migrations.name):
        return 0
    version = conn.execute(select(func.max(schema_migrations.c.version))).scalar_one()
    return int(version or 0)


def _refuse_newer(current: int, latest: int, where: str) -> None:
    if current > latest:
        raise StoreError(
            f"state store {where}: schema version {current} is newer than this code knows "
            f"({latest}); upgrade guarded-profile-enrichment before using this store"
        )


def migrate(db: Database, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the store up to the newest version of `migrations`; returns that version."""
    latest = latest_version(migrations)
    where = db.target.where
    with db.reading() as conn:
        current = current_version(conn)
    _refuse_newer(current, latest, where)
    while current < latest:
        with db.writing() as conn:
            ensure_schema(conn, db.target)
            schema_migrations.create(conn, checkfirst=True)
            # another process may have migrated while this one waited for the lock
            current = current_version(conn)
            _refuse_newer(current, latest, where)
            if current == latest:
                break
            step = migrations[current]  # versions are 1..n, so this is version current + 1
            step.apply(conn)
            conn.execute(
                insert(schema_migrations).values(
                    version=step.version, name=step.name, applied_at=datetime.now(UTC)
                )
            )
        current = step.version
    return current
