"""StateStore: run ledger, identity graph, consent, suppression and provider cache state,
on SQLite or PostgreSQL.

The store persists the identity graph between nightly runs so profile ids stay stable, the
state data-subject rights depend on: consent records, the suppression list and the erasure
log, and the provider cache that spares a run the lookups an earlier one made. It holds
pseudonyms, key ids, profile ids, merge/split history, counts and cached signals (topics,
scores, times), never a raw email, phone or name, and refuses input that does not look like
that
(`profiles.store.checks`). Every call runs in one transaction; database errors leave as
`StoreError`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Row, func, insert, select, update

from profiles.files import private_folder
from profiles.store import cache, checks, subjects
from profiles.store.bulk import read_frame
from profiles.store.engine import Backend, Database, parse_url
from profiles.store.errors import StoreError, translating
from profiles.store.migrations import (
    MIGRATIONS,
    Migration,
    current_version,
    latest_version,
    migrate,
)
from profiles.store.save import IDENTIFIER_COLUMNS, PROFILE_COLUMNS, Night
from profiles.store.schema import (
    SUPPRESSION_KINDS,
    ProfileStatus,
    RunStatus,
    RunStep,
    consent_records,
    erasures,
    identifiers,
    profiles,
    runs,
    suppressions,
)
from profiles.store.subjects import (
    CONSENT_COLUMNS,
    ERASURE_COLUMNS,
    SUBJECT_COLUMNS,
    SUPPRESSION_COLUMNS,
)

RUN_COLUMNS = (
    "run_id",
    "seq",
    "started_at",
    "finished_at",
    "status",
    "config_hash",
    "summary",
    "step",
    "fingerprint",
    "attempts",
)
"""Columns of `runs()`."""

_ACTIVE = ProfileStatus.ACTIVE.value
_RUN_STEPS_VERSION = 4
"""The schema version that added the ledger's step, fingerprint and attempts."""


def _utc(value: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite returns naive UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def default_url(state_dir: Path) -> str:
    """The default store: `sqlite:///<state_dir>/state.db` (the directory is created)."""
    private_folder(state_dir)
    return f"sqlite:///{(state_dir / 'state.db').resolve()}"


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")
    return value


class StateStore:
    """The persistent state of the pipeline; open one with `StateStore.open(url)`.

    Use it as a context manager or call `close()`. Safe to share between threads; two
    processes may use one store, and writes are serialised by the store's writer lock.
    """

    def __init__(self, db: Database, *, version: int | None = None) -> None:
        """Wrap an opened and migrated database; use `open` instead. `version` is the schema
        version it was migrated to (default: the newest): a store kept at an older version by
        `open(migrations=...)` writes only what that version has."""
        self._db: Database | None = db
        self._target = db.target
        self._run_steps = (version or len(MIGRATIONS)) >= _RUN_STEPS_VERSION

    @classmethod
    def open(
        cls,
        url: str,
        *,
        connect_timeout: float = 10.0,
        schema: str | None = None,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> StateStore:
        """Connect to the store at `url` and bring its schema up to date.

        `connect_timeout` (seconds) bounds connecting and waiting for another writer.
        `schema` is the PostgreSQL schema to use (created if missing; ignored for SQLite).
        `migrations` exists for tests and tools; the default is every known migration.
        Raises StoreError if the database is unreachable or its schema is newer than the code.
        """
        if not connect_timeout > 0:
            raise ValueError("connect_timeout must be positive")
        target = parse_url(url, schema)
        try:
            with translating("opening", target.where):
                db = Database.connect(target, connect_timeout)
        except OSError as exc:
            raise StoreError(
                f"state store {target.where}: cannot create the database file "
                f"({type(exc).__name__})"
            ) from None
        try:
            with translating("opening", target.where):
                migrate(db, migrations)
        except BaseException:
            db.dispose()
            raise
        return cls(db, version=latest_version(migrations))

    @property
    def url(self) -> str:
        """The store's URL with any password masked, for logs."""
        return self._target.masked

    @property
    def backend(self) -> Backend:
        """`sqlite` or `postgresql`."""
        return self._target.backend

    def __repr__(self) -> str:
        return f"StateStore({self.url!r})"

    def __enter__(self) -> StateStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the store's connections; further calls raise StoreError. Idempotent."""
        if self._db is not None:
            self._db.dispose()
            self._db = None

    def _database(self) -> Database:
        if self._db is None:
            raise StoreError(f"state store {self._target.where} is closed")
        return self._db

    @contextmanager
    def _writing(self, action: str) -> Iterator[Connection]:
        db = self._database()
        with translating(action, self._target.where), db.writing() as conn:
            yield conn

    @contextmanager
    def _reading(self, action: str) -> Iterator[Connection]:
        db = self._database()
        with translating(action, self._target.where), db.reading() as conn:
            yield conn

    def schema_version(self) -> int:
        """The version of the store's schema (the newest applied migration)."""
        with self._reading("reading the schema version") as conn:
            return current_version(conn)

    def start_run(
        self,
        run_id: str,
        config_hash: str,
        started_at: datetime,
        *,
        fingerprint: str | None = None,
    ) -> None:
        """Add a run to the ledger as `running` at step `started`; StoreError if `run_id` is
        already there. `fingerprint` (a hex digest) says what the run ran on, so that an
        interrupted run is resumed only on the same inputs."""
        checks.token(run_id, "run_id")
        checks.token(config_hash, "config_hash")
        if fingerprint is not None:
            checks.token(fingerprint, "fingerprint")
        _aware(started_at, "started_at")
        with self._writing("starting a run") as conn:
            if conn.execute(select(runs.c.run_id).where(runs.c.run_id == run_id)).first():
                raise StoreError(f"run {run_id} is already in the run ledger")
            seq = conn.execute(select(func.coalesce(func.max(runs.c.seq), 0))).scalar_one()
            values: dict[str, Any] = {
                "run_id": run_id,
                "seq": int(seq) + 1,
                "started_at": started_at,
                "status": RunStatus.RUNNING.value,
                "config_hash": config_hash,
            }
            if self._run_steps:
                values |= {"step": RunStep.STARTED.value, "fingerprint": fingerprint, "attempts": 1}
            conn.execute(insert(runs).values(**values))

    def unfinished_run(self) -> dict[str, Any] | None:
        """The latest run of the ledger if it did not succeed (it crashed while `running`, or
        `failed`): run_id, started_at, status, step, fingerprint, attempts; else None."""
        with self._reading("reading the run ledger") as conn:
            row = self._latest_run(conn)
        if row is None or row.status == RunStatus.SUCCEEDED:
            return None
        return {
            "run_id": row.run_id,
            "started_at": _utc(row.started_at),
            "status": row.status,
            "step": row.step,
            "fingerprint": row.fingerprint,
            "attempts": int(row.attempts),
        }

    def resume_run(self, run_id: str) -> int:
        """Set an unfinished run `running` again for one more attempt; returns the attempt
        number. StoreError if it is not the ledger's latest run or it succeeded."""
        checks.token(run_id, "run_id")
        with self._writing("resuming a run") as conn:
            latest = self._latest_run(conn)
            if latest is None or latest.run_id != run_id:
                raise StoreError(f"run {run_id} is not the latest run of the ledger")
            if latest.status == RunStatus.SUCCEEDED:
                raise StoreError(f"run {run_id} has already succeeded")
            attempts = int(latest.attempts) + 1
            conn.execute(
                update(runs)
                .where(runs.c.run_id == run_id)
                .values(status=RunStatus.RUNNING.value, finished_at=None, attempts=attempts)
            )
            return attempts

    def mark_step(self, run_id: str, step: str) -> None:
        """Record that a running run reached `step` (a RunStep)."""
        checks.token(run_id, "run_id")
        reached = RunStep(step)
        with self._writing("recording a run step") as conn:
            self._require_running(conn, run_id)
            conn.execute(update(runs).where(runs.c.run_id == run_id).values(step=reached.value))

    def finish_run(
        self, run_id: str, status: str, summary: Mapping[str, Any], finished_at: datetime
    ) -> None:
        """Mark a running run `succeeded` or `failed`, with a summary of counts only.

        StoreError if the run is not in the ledger or has already finished; ValueError if
        the summary holds anything but numbers under text keys.
        """
        checks.token(run_id, "run_id")
        final = RunStatus(status)
        if final is RunStatus.RUNNING:
            raise ValueError("a run finishes as 'succeeded' or 'failed'")
        summary_json = checks.counts_json(summary, "summary")
        _aware(finished_at, "finished_at")
        with self._writing("finishing a run") as conn:
            self._require_running(conn, run_id)
            conn.execute(
                update(runs)
                .where(runs.c.run_id == run_id)
                .values(status=final.value, summary=summary_json, finished_at=finished_at)
            )

    @staticmethod
    def _latest_run(conn: Connection) -> Row[Any] | None:
        """The ledger's latest run: run_id, started_at, status, step, fingerprint, attempts."""
        columns = ("run_id", "started_at", "status", "step", "fingerprint", "attempts")
        query = select(*(runs.c[c] for c in columns)).order_by(runs.c.seq.desc()).limit(1)
        return conn.execute(query).first()

    @staticmethod
    def _require_running(conn: Connection, run_id: str) -> None:
        status = conn.execute(select(runs.c.status).where(runs.c.run_id == run_id)).scalar()
        if status is None:
            raise StoreError(f"run {run_id} is not in the run ledger")
        if status != RunStatus.RUNNING:
            raise StoreError(f"run {run_id} has already finished ({status})")

    def runs(self) -> pd.DataFrame:
        """The run ledger ordered by `seq`: run_id, seq, started_at, finished_at (UTC),
        status, config_hash, summary (JSON text, None while running), step, fingerprint,
        attempts."""
        with self._reading("reading the run ledger") as conn:
            rows = conn.execute(select(*(runs.c[c] for c in RUN_COLUMNS)).order_by(runs.c.seq))
            frame = pd.DataFrame(rows.all(), columns=list(RUN_COLUMNS))
        for column in ("started_at", "finished_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        frame["seq"] = frame["seq"].astype("int64")
        for column in ("run_id", "status", "config_hash", "summary", "step", "fingerprint"):
            frame[column] = frame[column].astype("str")
        frame["attempts"] = frame["attempts"].astype("int64")
        return frame

    def load_identifiers(self) -> pd.DataFrame:
        """Identifiers of active profiles: kind, key_id, pseudonym, profile_id (unordered)."""
        query = (
            select(*(identifiers.c[c] for c in IDENTIFIER_COLUMNS))
            .select_from(
                identifiers.join(profiles, profiles.c.profile_id == identifiers.c.profile_id)
            )
            .where(profiles.c.status == _ACTIVE)
        )
        with self._reading("loading identifiers") as conn:
            return read_frame(conn, self.backend, query, IDENTIFIER_COLUMNS)

    def load_profiles(self) -> pd.DataFrame:
        """Every profile ever issued, oldest first: profile_id, created_seq, created_run,
        status, merged_into (the active profile it was merged into), last_seen_run."""
        query = select(*(profiles.c[c] for c in PROFILE_COLUMNS)).order_by(profiles.c.created_seq)
        with self._reading("loading profiles") as conn:
            return read_frame(conn, self.backend, query, PROFILE_COLUMNS)

    def save_identity(
        self,
        run_id: str,
        *,
        identifiers: pd.DataFrame,
        new_profiles: pd.DataFrame,
        merged: pd.DataFrame,
        events: pd.DataFrame,
    ) -> None:
        """Persist one night's identity resolution, all or nothing.

        * `new_profiles` (profile_id, in creation order): created as active, numbered after
          every existing profile (`created_seq`), `created_run` = run_id;
        * `merged` (profile_id, merged_into): previous active profiles absorbed by another
          active one. Stored identifiers follow to the survivor, and so do profiles merged
          into a now-merged one earlier, so `merged_into` always names an active profile;
        * `identifiers` (kind, key_id, pseudonym, profile_id): upserted; new ones get
          first_seen_run = last_seen_run = run_id, known ones their new profile_id and
          last_seen_run. Each must belong to an active profile once the above is applied;
        * profiles referenced by tonight's identifiers or merges get last_seen_run = run_id;
        * `events` (event, profile_id, other_profile_id, detail): appended to the history;
          detail is JSON (or a mapping) of counts only.

        The run must be `running` in the ledger (StoreError otherwise). Input that breaks the
        contract raises ValueError naming the column and a count, never a value, and nothing
        is written.
        """
        checks.token(run_id, "run_id")
        night = Night.of(
            identifiers=identifiers, new_profiles=new_profiles, merged=merged, events=events
        )
        with self._writing("saving identities") as conn:
            self._require_running(conn, run_id)
            night.save(conn, self.backend, run_id)
            if self._run_steps:
                conn.execute(
                    update(runs)
                    .where(runs.c.run_id == run_id)
                    .values(step=RunStep.IDENTITY_SAVED.value)
                )

    # consent records, suppression list, erasure

    def save_consents(self, records: pd.DataFrame, *, run_id: str | None = None) -> int:
        """Add consent records; returns how many were new.

        `records`: record_id (32 lower-case hex, content-derived: see `policy.consent`),
        kind, key_id, pseudonym, purpose, status, recorded_at (timezone-aware), source and
        notice_version (tokens or missing), evidence_ref ("<source name>:<line>"), tcf
        (bool). A record id already stored is kept as it is (first evidence wins), and
        records of identifiers erased earlier are skipped: they are neither stored nor
        counted. With `run_id` (which must be running) new records get it as
        first_seen_run. ValueError (column and count, never a value) if the frame breaks the
        contract, including two rows with one record id; nothing is written then.
        """
        batch = subjects.consent_frame(records)
        if run_id is not None:
            checks.token(run_id, "run_id")
        with self._writing("saving consent records") as conn:
            if run_id is not None:
                self._require_running(conn, run_id)
            return subjects.save_consents(conn, self.backend, batch, run_id)

    def consents_first_seen(self, run_id: str) -> int:
        """How many stored consent records `run_id` added (the same however often the run was
        attempted: a resumed run finds its first attempt's records already there)."""
        checks.token(run_id, "run_id")
        query = select(func.count()).where(consent_records.c.first_seen_run == run_id)
        with self._reading("counting consent records") as conn:
            return int(conn.execute(query).scalar_one())

    def load_consents(self) -> pd.DataFrame:
        """Every consent record (unordered): the columns of `save_consents` and first_seen_run;
        recorded_at as datetime64[us, UTC], tcf as bool."""
        query = select(*(consent_records.c[c] for c in CONSENT_COLUMNS))
        with self._reading("loading consent records") as conn:
            return read_frame(conn, self.backend, query, CONSENT_COLUMNS)

    def add_suppressions(self, entries: pd.DataFrame) -> int:
        """Put identifiers on the suppression list; returns how many entries were new.

        `entries`: kind, key_id, pseudonym, suppression (a SuppressionKind value),
        recorded_at (timezone-aware), request_ref (token: a DSAR request id or
        "gpc:<source>:<line>"). An identifier already listed for that suppression keeps its
        first entry. An `erasure` entry also deletes the identifier's consent records and
        provider cache entries. ValueError if the frame breaks the contract (two rows for
        one identifier and kind included); nothing is written then.
        """
        batch = subjects.suppression_frame(entries)
        with self._writing("adding suppressions") as conn:
            return subjects.add_suppressions(conn, self.backend, batch)

    def load_suppressions(self) -> pd.DataFrame:
        """The suppression list (unordered): kind, key_id, pseudonym, suppression,
        recorded_at (datetime64[us, UTC]), request_ref."""
        query = select(*(suppressions.c[c] for c in SUPPRESSION_COLUMNS))
        with self._reading("loading suppressions") as conn:
            return read_frame(conn, self.backend, query, SUPPRESSION_COLUMNS)

    def record_objection(
        self, pseudonyms: pd.DataFrame, kind: str, request_ref: str, recorded_at: datetime
    ) -> int:
        """Suppress identifiers (kind, key_id, pseudonym; duplicates allowed) for `kind`, a
        SuppressionKind value: an Art. 21 objection, a CCPA opt-out, or `erasure` for
        identifiers that belong to no profile (`erase_subject` handles profiles). Returns
        how many entries were new; see `add_suppressions`."""
        if kind not in SUPPRESSION_KINDS:
            raise ValueError(f"kind must be one of {', '.join(SUPPRESSION_KINDS)}")
        checks.token(request_ref, "request_ref")
        _aware(recorded_at, "recorded_at")
        listed = subjects.subject_frame(pseudonyms, "pseudonyms")
        listed["suppression"] = str(kind)
        listed["request_ref"] = request_ref
        listed["recorded_at"] = pd.Series(
            pd.Timestamp(recorded_at), index=listed.index, dtype="datetime64[us, UTC]"
        )
        return self.add_suppressions(listed)

    def erase_subject(
        self,
        profile_id: str,
        request_ref: str,
        recorded_at: datetime,
        *,
        run_id: str | None = None,
    ) -> dict[str, int]:
        """Erase a person (GDPR Art. 17) in one transaction; returns what went, by count.

        Every identifier of the active profile `profile_id` and of the profiles merged into
        it goes on the suppression list as `erasure` (request_ref, recorded_at); then their
        provider cache entries, consent records, those identifiers, the profile and the
        merged profiles are deleted, and the erasure log records the request with the
        counts. The keys of the result are `ERASURE_COUNTS`: identifiers_deleted,
        consent_records_deleted, profiles_deleted, suppressions_added,
        cache_entries_deleted.

        One request may erase several profiles (one call each). Calling again with the same
        request_ref and profile_id changes nothing and returns the recorded counts, so a
        retried request is safe. ValueError if the store does not hold the profile (and the
        request has not erased it) or if it was merged into another (erase that one).
        Identity history (identity_events) is kept: it holds profile ids and counts only.
        """
        checks.token(profile_id, "profile_id")
        checks.token(request_ref, "request_ref")
        if run_id is not None:
            checks.token(run_id, "run_id")
        _aware(recorded_at, "recorded_at")
        with self._writing("erasing a subject") as conn:
            return subjects.erase(
                conn,
                self.backend,
                profile_id=profile_id,
                request_ref=request_ref,
                recorded_at=recorded_at,
                run_id=run_id,
            )

    def load_erasures(self) -> pd.DataFrame:
        """The erasure log ordered by time: request_ref, profile_id, the four counts of
        `erase_subject`, recorded_at (datetime64[us, UTC]), run_id (missing outside a run)."""
        query = select(*(erasures.c[c] for c in ERASURE_COLUMNS)).order_by(
            erasures.c.recorded_at, erasures.c.request_ref, erasures.c.profile_id
        )
        with self._reading("loading the erasure log") as conn:
            return read_frame(conn, self.backend, query, ERASURE_COLUMNS)

    def subject_identifiers(self, profile_id: str) -> pd.DataFrame:
        """kind, key_id, pseudonym of the profile and of the profiles merged into it.

        A merged profile's identifiers moved to its survivor, so for one the frame is empty.
        ValueError if the store does not hold the profile.
        """
        checks.token(profile_id, "profile_id")
        with self._reading("reading a subject's identifiers") as conn:
            subjects.require_profile(conn, profile_id)
            query = subjects.subject_identifiers_query(profile_id)
            return read_frame(conn, self.backend, query, SUBJECT_COLUMNS)

    def find_profiles(self, pseudonyms: pd.DataFrame) -> list[str]:
        """Active profiles (sorted ids) holding any of the identifiers (kind, key_id,
        pseudonym) in `pseudonyms`; ValueError if the frame breaks the contract."""
        listed = subjects.subject_frame(pseudonyms, "pseudonyms")
        with self._reading("finding profiles") as conn:
            return subjects.find_profiles(conn, self.backend, listed)

    # provider cache

    def save_cache(self, entries: pd.DataFrame, *, run_id: str) -> int:
        """Store provider lookups so later runs need not repeat them; returns how many entries
        were stored (new, or replacing an older fetch).

        `entries`: provider (instance name, a token), params_hash (64 lower-case hex: the
        hash of the provider's request parameters), kind, key_id, pseudonym (the identifier
        the lookup was made for, never the form sent), status (`matched` or `no_match`;
        failed lookups are not cached), signals (JSON text of a list of {topic, confidence,
        observed_at, kind, raw_score}, see `profiles.store.signals`; missing means none; a
        no_match has none), fetched_at and expires_at (timezone-aware, expires_at not
        before fetched_at).

        An entry replaces the stored one for its key (provider, params_hash, kind, key_id,
        pseudonym) unless that was fetched later. Entries of identifiers erased earlier are
        skipped: neither stored nor counted. `run_id` must be running in the ledger and is
        stored with each entry. ValueError (column and count, never a value) if the frame
        breaks the contract, including two rows with one key; nothing is written then.
        """
        checks.token(run_id, "run_id")
        batch = cache.cache_frame(entries)
        with self._writing("saving cache entries") as conn:
            self._require_running(conn, run_id)
            return cache.save_cache(conn, self.backend, batch, run_id)

    def load_cache(self, provider: str, params_hash: str, *, now: datetime) -> pd.DataFrame:
        """Entries of `provider` for requests hashed `params_hash` that have not expired at
        `now` (unordered): kind, key_id, pseudonym, status, signals (canonical JSON text),
        fetched_at and expires_at (datetime64[us, UTC])."""
        checks.token(provider, "provider")
        checks.hex_value(params_hash, "params_hash", cache.PARAMS_HASH_PATTERN)
        _aware(now, "now")
        with self._reading("loading cache entries") as conn:
            return cache.load_cache(conn, self.backend, provider, params_hash, now)

    def purge_cache(self, *, now: datetime) -> int:
        """Delete every entry expired at `now` (expires_at <= now); returns how many.

        Retention is enforced through `expires_at` (the enrichment stage never sets it later
        than the policy allows), so purging nightly keeps nothing past its retention.
        """
        _aware(now, "now")
        with self._writing("purging the cache") as conn:
            return cache.purge_cache(conn, now)

    def cache_stats(self) -> pd.DataFrame:
        """Per provider, ordered by name: entries, matched, no_match (int64), oldest and
        newest fetched_at (datetime64[us, UTC]). Expired entries count until purged."""
        with self._reading("reading cache statistics") as conn:
            return cache.cache_stats(conn, self.backend)
