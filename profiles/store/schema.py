"""Tables of the state store as the code uses them now (SQLAlchemy Core).

The store holds pseudonyms, key ids, profile ids, merge/split history, the run ledger,
consent records, the suppression list, the erasure log and the provider cache; never a raw
email, phone or name.
These definitions describe the newest schema version; `profiles.store.migrations` holds how
each version was reached, frozen, and a test checks that a migrated database matches the
tables here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    TypeDecorator,
    text,
)

from profiles.types import ConsentStatus, IdentifierKind, Purpose, SuppressionKind

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "pk": "pk_%(table_name)s",
}
"""Constraint names fixed across backends, so a later migration can name what it alters."""


class RunStatus(StrEnum):
    """Where a run is in the ledger."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RunStep(StrEnum):
    """The last durable step of a run: what a resumed run can skip."""

    STARTED = "started"
    IDENTITY_SAVED = "identity_saved"
    """Outputs staged and sealed, decisions checkpointed, the identity graph committed."""
    PUBLISHED = "published"
    """The run folder is in place."""


class ProfileStatus(StrEnum):
    """An active profile is current; a merged one survives only as `merged_into`."""

    ACTIVE = "active"
    MERGED = "merged"


class IdentityEvent(StrEnum):
    """Identity history events."""

    CREATE = "create"
    MERGE = "merge"
    SPLIT = "split"


# A new value needs a migration too: the CHECK constraints below spell the values out.
PURPOSES: tuple[str, ...] = tuple(Purpose)
"""What a consent record is about."""
CONSENT_STATUSES: tuple[str, ...] = tuple(ConsentStatus)
SUPPRESSION_KINDS: tuple[str, ...] = tuple(SuppressionKind)
ERASURE: str = SuppressionKind.ERASURE


class CacheStatus(StrEnum):
    """How a cached lookup ended. Failed lookups are never cached: they are tried again."""

    MATCHED = "matched"
    NO_MATCH = "no_match"


CACHE_STATUSES: tuple[str, ...] = tuple(CacheStatus)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return "{} IN ({})".format(column, ", ".join(f"'{v}'" for v in values))


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on both backends.

    PostgreSQL stores `timestamptz`; SQLite has no time zones, so values are stored as UTC
    text and read back with `tzinfo=UTC`. Naive datetimes are refused.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC (dropping tzinfo on SQLite, which would ignore it)."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Attach UTC to what SQLite returns; PostgreSQL's values are converted to UTC."""
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Keys compare byte-wise on PostgreSQL (collation "C"): faster than a locale's rules, and
# hex digests and ids have no use for linguistic order.
Key = Text().with_variant(Text(collation="C"), "postgresql")
EventId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite's rowid alias is INTEGER

# Every night rewrites last_seen_run of most rows of `profiles` and `identifiers`. Pages half
# empty let PostgreSQL put each new row version on the same page (a HOT update: no new index
# entries, old versions pruned in place). Measured with bench/store.py: a nightly save of 1M
# identifiers takes 11 s instead of 23 s at fillfactor 100, and the indexes do not bloat.
NIGHTLY_FILLFACTOR = 50

metadata = MetaData(naming_convention=NAMING_CONVENTION)

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", Text, nullable=False),
    Column("applied_at", UTCDateTime, nullable=False),
)
"""Applied migrations. Its shape never changes: it is how the code finds the version."""

runs = Table(
    "runs",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("seq", BigInteger, nullable=False, unique=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("status", Text, nullable=False),
    Column("config_hash", Text, nullable=False),
    Column("summary", Text, nullable=True),
    Column("step", Text, nullable=False, server_default="started"),
    Column("fingerprint", Text, nullable=True),
    Column("attempts", Integer, nullable=False, server_default="1"),
    CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="status"),
)
"""The run ledger; `seq` orders runs by start, `summary` is JSON of counts only, `step` the
last durable step (RunStep), `fingerprint` what the run ran on, `attempts` how many times it
was started (resumed runs count again)."""

profiles = Table(
    "profiles",
    metadata,
    Column("profile_id", Key, primary_key=True),
    Column("created_seq", BigInteger, nullable=False, unique=True),
    Column("created_run", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("merged_into", Key, nullable=True),
    Column("last_seen_run", Text, nullable=False),
    CheckConstraint("status IN ('active', 'merged')", name="status"),
    CheckConstraint(
        "(status = 'active' AND merged_into IS NULL) OR "
        "(status = 'merged' AND merged_into IS NOT NULL)",
        name="merged_into",
    ),
    postgresql_with={"fillfactor": NIGHTLY_FILLFACTOR},
)
"""Profiles ever issued. `created_seq` is creation order (the oldest survives a merge);
a merged profile's `merged_into` names the active profile that absorbed it."""

identifiers = Table(
    "identifiers",
    metadata,
    Column("pseudonym", Key, primary_key=True),
    Column("kind", Key, primary_key=True),
    Column("key_id", Key, primary_key=True),
    Column("profile_id", Key, nullable=False),
    Column("first_seen_run", Text, nullable=False),
    Column("last_seen_run", Text, nullable=False),
    CheckConstraint(
        "kind IN ({})".format(", ".join(f"'{k}'" for k in IdentifierKind)), name="kind"
    ),
    CheckConstraint("length(pseudonym) = 64", name="pseudonym"),
    Index("ix_identifiers_profile_id", "profile_id"),
    # the primary key is the table: no separate rowid b-tree for 64-character keys
    sqlite_with_rowid=False,
    postgresql_with={"fillfactor": NIGHTLY_FILLFACTOR},
)
"""Pseudonymised identifiers and the profile each one belongs to. The key leads with the
pseudonym: it decides nearly every comparison alone, and saves sort by it."""

identity_events = Table(
    "identity_events",
    metadata,
    Column("event_id", EventId, primary_key=True, autoincrement=True),
    Column("run_id", Text, nullable=False),
    Column("event", Text, nullable=False),
    Column("profile_id", Key, nullable=False),
    Column("other_profile_id", Key, nullable=True),
    Column("detail", Text, nullable=True),
    Column("recorded_at", UTCDateTime, nullable=False),
    CheckConstraint("event IN ('create', 'merge', 'split')", name="event"),
    Index("ix_identity_events_profile_id", "profile_id"),
    Index("ix_identity_events_run_id", "run_id"),
)
"""Identity history: creations, merges and splits; `detail` is JSON of counts only."""

consent_records = Table(
    "consent_records",
    metadata,
    Column("record_id", Key, primary_key=True),
    Column("kind", Key, nullable=False),
    Column("key_id", Key, nullable=False),
    Column("pseudonym", Key, nullable=False),
    Column("purpose", Key, nullable=False),
    Column("status", Text, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("source", Text, nullable=True),
    Column("notice_version", Text, nullable=True),
    Column("evidence_ref", Text, nullable=False),
    Column("tcf", Boolean, nullable=False),
    Column("first_seen_run", Text, nullable=True),
    CheckConstraint(_one_of("kind", tuple(str(k) for k in IdentifierKind)), name="kind"),
    CheckConstraint("length(pseudonym) = 64", name="pseudonym"),
    CheckConstraint("length(record_id) = 32", name="record_id"),
    CheckConstraint(_one_of("purpose", PURPOSES), name="purpose"),
    CheckConstraint(_one_of("status", CONSENT_STATUSES), name="status"),
    Index("ix_consent_records_subject", "kind", "key_id", "pseudonym", "purpose"),
)
"""Consent records (GDPR Art. 7(1): the controller must be able to demonstrate consent).

One row per identifier, purpose and recorded change. `record_id` is content-derived (see
`policy.consent`), so loading the same consent file again adds nothing. `source` is where
the consent was given (checkout, preference_centre, ...), `evidence_ref` the consent file
row ("<source name>:<line>"), `tcf` whether the record was derived from a TC string.
`first_seen_run` is the run that first saved it (missing when saved outside a run)."""

suppressions = Table(
    "suppressions",
    metadata,
    Column("kind", Key, nullable=False),
    Column("key_id", Key, nullable=False),
    Column("pseudonym", Key, nullable=False),
    Column("suppression", Key, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("request_ref", Text, nullable=False),
    PrimaryKeyConstraint("kind", "key_id", "pseudonym", "suppression"),
    CheckConstraint(_one_of("kind", tuple(str(k) for k in IdentifierKind)), name="kind"),
    CheckConstraint("length(pseudonym) = 64", name="pseudonym"),
    CheckConstraint(_one_of("suppression", SUPPRESSION_KINDS), name="suppression"),
)
"""The suppression list: identifiers never to be processed (erasure) or not for some purposes
(objections, opt-outs). The first request per identifier and kind is kept (`request_ref`:
a DSAR request id or `gpc:<source>:<line>`). Erasure keeps exactly this row of a person."""

erasures = Table(
    "erasures",
    metadata,
    Column("request_ref", Key, primary_key=True),
    Column("profile_id", Key, primary_key=True),
    Column("identifiers_deleted", Integer, nullable=False),
    Column("consent_records_deleted", Integer, nullable=False),
    Column("profiles_deleted", Integer, nullable=False),
    Column("suppressions_added", Integer, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("run_id", Text, nullable=True),
    Column("cache_entries_deleted", Integer, nullable=False, server_default=text("0")),
)
"""The erasure log (Art. 17, accountability under Art. 5(2)): which request erased which
profile, when, and how many rows went. Counts only; one row per request and profile, because
one request may find several profiles of a person. `cache_entries_deleted` came with version
3 (0 for erasures recorded before)."""

provider_cache = Table(
    "provider_cache",
    metadata,
    Column("provider", Key, nullable=False),
    Column("params_hash", Key, nullable=False),
    Column("kind", Key, nullable=False),
    Column("key_id", Key, nullable=False),
    Column("pseudonym", Key, nullable=False),
    Column("status", Text, nullable=False),
    Column("signals", Text, nullable=False),
    Column("fetched_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("run_id", Text, nullable=False),
    # provider and request first: a run loads one provider's entries as one range of the key
    PrimaryKeyConstraint("provider", "params_hash", "pseudonym", "kind", "key_id"),
    CheckConstraint(_one_of("kind", tuple(str(k) for k in IdentifierKind)), name="kind"),
    CheckConstraint("length(pseudonym) = 64", name="pseudonym"),
    CheckConstraint("length(params_hash) = 64", name="params_hash"),
    CheckConstraint(_one_of("status", CACHE_STATUSES), name="status"),
    CheckConstraint("expires_at >= fetched_at", name="expiry"),
    # erasure finds a person's entries by pseudonym, whatever the provider
    Index("ix_provider_cache_pseudonym", "pseudonym"),
    sqlite_with_rowid=False,
)
"""Provider lookups that need not be made again before `expires_at`: one row per provider
instance, request parameters (`params_hash`, SHA-256 hex of what shapes the answer) and the
identifier the lookup was made for (kind, key_id, HMAC pseudonym; never the form sent).
`signals` is canonical JSON of a list of {topic, confidence, observed_at, kind, raw_score}:
topics, numbers and times only (see `profiles.store.signals`); `run_id` is the run that
fetched it. Erasing an identifier deletes its entries."""

TABLES = (
    schema_migrations,
    runs,
    profiles,
    identifiers,
    identity_events,
    consent_records,
    suppressions,
    erasures,
    provider_cache,
)
"""Every table of the store."""
