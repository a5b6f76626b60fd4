"""The state store: run ledger, identity graph, consent, suppression, erasures, provider cache.

SQLite by default (a file under the state directory), PostgreSQL in production
(`ENRICH_STATE_URL=postgresql+psycopg://...`). SQLAlchemy Core, no ORM. It holds pseudonyms,
key ids, profile ids and counts, never a raw email, phone or name.

    StateStore.open(url)     connect, migrate, use; `close()` or `with`
      runs                   start_run, finish_run, runs, unfinished_run, resume_run,
                             mark_step (RunStep)
      identity graph         save_identity, load_identifiers, load_profiles
      consent                save_consents, load_consents
      suppression, erasure   add_suppressions, record_objection, load_suppressions,
                             erase_subject, load_erasures
      data-subject lookups   find_profiles, subject_identifiers
      provider cache         save_cache, load_cache, purge_cache, cache_stats
    StoreError               every database failure (`retryable` says if trying later helps)
    ValueError               input that breaks the store's contract (message names no value)
"""

from profiles.store.cache import CACHE_COLUMNS, CACHE_ENTRY_COLUMNS, CACHE_STATS_COLUMNS
from profiles.store.errors import StoreError
from profiles.store.migrations import MIGRATIONS, Migration
from profiles.store.save import IDENTIFIER_COLUMNS, PROFILE_COLUMNS
from profiles.store.schema import RunStep
from profiles.store.store import RUN_COLUMNS, StateStore, default_url
from profiles.store.subjects import (
    CONSENT_COLUMNS,
    ERASURE_COLUMNS,
    ERASURE_COUNTS,
    SUBJECT_COLUMNS,
    SUPPRESSION_COLUMNS,
)

__all__ = [
    "CACHE_COLUMNS",
    "CACHE_ENTRY_COLUMNS",
    "CACHE_STATS_COLUMNS",
    "CONSENT_COLUMNS",
    "ERASURE_COLUMNS",
    "ERASURE_COUNTS",
    "IDENTIFIER_COLUMNS",
    "MIGRATIONS",
    "PROFILE_COLUMNS",
    "RUN_COLUMNS",
    "SUBJECT_COLUMNS",
    "SUPPRESSION_COLUMNS",
    "Migration",
    "RunStep",
    "StateStore",
    "StoreError",
    "default_url",
]
