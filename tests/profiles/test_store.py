"""Tests for the state store, each on SQLite and PostgreSQL (see conftest.store_backend)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import secrets
import socket
import sqlite3
import stat
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, String, create_engine, inspect, text
from sqlalchemy.engine import make_url

from policy.types import ConsentStatus, Purpose, SuppressionKind
from profiles.hashing import Key, Pseudonymiser
from profiles.store import MIGRATIONS, Migration, StateStore, StoreError, default_url
from profiles.store.engine import SQLITE_PAGE_SIZE
from profiles.store.schema import TABLES
from profiles.types import IdentifierKind
from tests.profiles.conftest import StoreBackend, drop_schema

KEY = Key.from_secret(b"test/store: a fixed test key...!")
PSEUDONYMISER = Pseudonymiser(KEY)
T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
EMAIL, PHONE, CID = IdentifierKind.EMAIL, IdentifierKind.PHONE, IdentifierKind.CUSTOMER_ID


def pseudonym(kind: IdentifierKind, value: str) -> str:
    """The pseudonym the identifier stage would give `value`."""
    return PSEUDONYMISER.digest(kind, value)


def identifiers(*rows: tuple[IdentifierKind, str, str]) -> pd.DataFrame:
    """Identifier rows (kind, raw value, profile id) as save_identity takes them."""
    return pd.DataFrame(
        {
            "kind": pd.Series([str(k) for k, _, _ in rows], dtype="str"),
            "key_id": pd.Series([KEY.key_id] * len(rows), dtype="str"),
            "pseudonym": pd.Series([pseudonym(k, v) for k, v, _ in rows], dtype="str"),
            "profile_id": pd.Series([p for _, _, p in rows], dtype="str"),
        }
    )


def frame(columns: Sequence[str], rows: Sequence[Sequence[str | None]] = ()) -> pd.DataFrame:
    """A text DataFrame with `columns`."""
    return pd.DataFrame(
        {c: pd.Series([r[i] for r in rows], dtype="str") for i, c in enumerate(columns)}
    )


def night(
    store: StateStore,
    run_id: str,
    *,
    ids: pd.DataFrame,
    new: Sequence[str] = (),
    merged: Sequence[tuple[str, str]] = (),
    events: pd.DataFrame | None = None,
    day: int = 0,
) -> None:
    """One whole run: start, save, finish."""
    store.start_run(run_id, "cfg0", T0 + timedelta(days=day))
    store.save_identity(
        run_id,
        identifiers=ids,
        new_profiles=frame(["profile_id"], [(p,) for p in new]),
        merged=frame(["profile_id", "merged_into"], merged),
        events=events if events is not None else frame(["event", "profile_id", "other_profile_id"]),
    )
    store.finish_run(run_id, "succeeded", {"identifiers": len(ids)}, T0 + timedelta(days=day))


def sorted_identifiers(store: StateStore) -> list[tuple[str, str, str, str]]:
    loaded = store.load_identifiers()
    return sorted(loaded[["kind", "key_id", "pseudonym", "profile_id"]].itertuples(index=False))


def profile_rows(store: StateStore) -> dict[str, dict[str, object]]:
    loaded = store.load_profiles().set_index("profile_id")
    return {
        str(pid): {str(k): (None if pd.isna(v) else v) for k, v in row.items()}
        for pid, row in loaded.to_dict("index").items()
    }


@contextmanager
def raw(store_backend: StoreBackend) -> Iterator[Connection]:
    """A plain SQLAlchemy connection to the store's tables, for looking behind the API."""
    schema = store_backend.schema
    engine = create_engine(
        store_backend.url,
        connect_args={"options": f"-c search_path={schema}"} if schema else {},
    )
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


# migrations


def test_open_migrates_an_empty_database_to_the_newest_version(
    store_backend: StoreBackend,
) -> None:
    store = store_backend.open()
    assert store.backend == store_backend.name
    assert store.schema_version() == len(MIGRATIONS)


def test_opening_an_up_to_date_store_changes_nothing(store_backend: StoreBackend) -> None:
    store_backend.open().close()
    with raw(store_backend) as conn:
        before = conn.execute(text("SELECT version, name, applied_at FROM schema_migrations")).all()
    for _ in range(2):
        store_backend.open().close()
    with raw(store_backend) as conn:
        after = conn.execute(text("SELECT version, name, applied_at FROM schema_migrations")).all()
    assert before == after
    assert sorted(row[0] for row in after) == [m.version for m in MIGRATIONS]


def test_migrated_database_matches_the_schema_module(store_backend: StoreBackend) -> None:
    store_backend.open()
    with raw(store_backend) as conn:
        inspector = inspect(conn)
        assert set(inspector.get_table_names()) == {t.name for t in TABLES}
        for table in TABLES:
            columns = [c["name"] for c in inspector.get_columns(table.name)]
            assert columns == [c.name for c in table.columns], table.name
            key = inspector.get_pk_constraint(table.name)["constrained_columns"]
            assert key == [c.name for c in table.primary_key.columns], table.name
            indexes = {i["name"] for i in inspector.get_indexes(table.name)}
            assert {i.name for i in table.indexes} <= indexes, table.name


def _add_run_note(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE runs ADD COLUMN note TEXT"))


FAKE_NEXT = (*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "add run note", _add_run_note))


def test_a_new_migration_upgrades_in_place_once(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    night(store, "r1", ids=identifiers((EMAIL, "ann@example.com", "PA")), new=["PA"])
    store.close()

    upgraded = store_backend.open(migrations=FAKE_NEXT)
    assert upgraded.schema_version() == len(FAKE_NEXT)
    assert len(upgraded.load_identifiers()) == 1  # the data survived the upgrade
    upgraded.close()
    store_backend.open(migrations=FAKE_NEXT).close()  # a second open applies nothing

    with raw(store_backend) as conn:
        versions = conn.execute(text("SELECT version FROM schema_migrations")).scalars().all()
        notes = conn.execute(text("SELECT note FROM runs")).all()
    assert sorted(versions) == [m.version for m in FAKE_NEXT]
    assert notes == [(None,)]


def test_a_store_newer_than_the_code_is_refused(store_backend: StoreBackend) -> None:
    store_backend.open(migrations=FAKE_NEXT).close()
    newest = len(MIGRATIONS)
    with pytest.raises(
        StoreError, match=rf"schema version {newest + 1} is newer than this code knows \({newest}\)"
    ):
        store_backend.open()


def test_migrations_must_be_numbered_without_gaps(store_backend: StoreBackend) -> None:
    with pytest.raises(ValueError, match=r"numbered 1\.\.n"):
        store_backend.open(migrations=(Migration(2, "two", _add_run_note),))


def test_concurrent_opens_apply_each_migration_once(store_backend: StoreBackend) -> None:
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_store() -> None:
        start.wait()
        try:
            StateStore.open(
                store_backend.url, schema=store_backend.schema, migrations=FAKE_NEXT
            ).close()
        except BaseException as exc:  # collected and re-raised by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    with raw(store_backend) as conn:
        versions = conn.execute(text("SELECT version FROM schema_migrations")).scalars().all()
    assert sorted(versions) == [m.version for m in FAKE_NEXT]


# run ledger


def test_run_ledger_records_runs_in_start_order(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    store.start_run("r1", "cfg1", T0)
    store.start_run("r2", "cfg2", T0 + timedelta(hours=1))
    store.finish_run("r1", "succeeded", {"rows_in": 10, "by_reason": {"EMAIL_SYNTAX": 2}}, T0)
    store.finish_run("r2", "failed", {}, T0 + timedelta(hours=2))
    store.start_run("r3", "cfg3", T0 + timedelta(hours=3))

    ledger = store.runs()
    assert ledger["run_id"].tolist() == ["r1", "r2", "r3"]
    assert ledger["seq"].tolist() == [1, 2, 3]
    assert ledger["status"].tolist() == ["succeeded", "failed", "running"]
    assert ledger["config_hash"].tolist() == ["cfg1", "cfg2", "cfg3"]
    assert json.loads(ledger["summary"][0]) == {"rows_in": 10, "by_reason": {"EMAIL_SYNTAX": 2}}
    assert pd.isna(ledger["summary"][2])
    assert ledger["started_at"][1] == T0 + timedelta(hours=1)
    assert ledger["finished_at"][1] == T0 + timedelta(hours=2)
    assert pd.isna(ledger["finished_at"][2])
    assert str(ledger["started_at"].dt.tz) == "UTC"


def test_timestamps_are_stored_in_utc(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    store.start_run("r1", "cfg", datetime(2026, 11, 1, 3, 0, tzinfo=timezone(timedelta(hours=1))))
    assert store.runs()["started_at"][0] == T0
    with pytest.raises(ValueError, match="timezone-aware"):
        store.start_run("r2", "cfg", datetime(2026, 11, 1))


def test_a_run_id_can_start_only_once(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    store.start_run("r1", "cfg", T0)
    with pytest.raises(StoreError, match="r1 is already in the run ledger") as info:
        store.start_run("r1", "cfg", T0)
    assert not info.value.retryable
    assert len(store.runs()) == 1


def test_only_a_running_run_can_finish(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    with pytest.raises(StoreError, match="not in the run ledger"):
        store.finish_run("nope", "failed", {}, T0)
    store.start_run("r1", "cfg", T0)
    with pytest.raises(ValueError, match="succeeded' or 'failed"):
        store.finish_run("r1", "running", {}, T0)
    store.finish_run("r1", "succeeded", {}, T0)
    with pytest.raises(StoreError, match="already finished"):
        store.finish_run("r1", "failed", {}, T0)


@pytest.mark.parametrize(
    "summary",
    [
        pytest.param({"email": "ann@example.com"}, id="text-value"),
        pytest.param({"ann@example.com": 1}, id="address-key"),
        pytest.param({"+4512345678": 1}, id="phone-key"),
        pytest.param({"rows": float("nan")}, id="nan"),
        pytest.param({"sources": {"crm": ["x"]}}, id="nested-text"),
    ],
)
def test_run_summaries_hold_counts_only(
    store_backend: StoreBackend, summary: dict[str, object]
) -> None:
    store = store_backend.open()
    store.start_run("r1", "cfg", T0)
    with pytest.raises(ValueError, match="summary") as info:
        store.finish_run("r1", "succeeded", summary, T0)
    assert "example.com" not in str(info.value)
    assert "4512345678" not in str(info.value)
    assert store.runs()["status"].tolist() == ["running"]


# identities


def test_save_and_load_round_trip(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    ids = identifiers(
        (EMAIL, "ann@example.com", "PA"),
        (PHONE, "+4512345678", "PA"),
        (CID, "crm:17", "PB"),
    )
    night(store, "r1", ids=ids, new=["PA", "PB"])

    loaded = store.load_identifiers()
    assert list(loaded.columns) == ["kind", "key_id", "pseudonym", "profile_id"]
    assert all(str(t) == "str" for t in loaded.dtypes)
    assert sorted(loaded.itertuples(index=False)) == sorted(ids.itertuples(index=False))

    profiles = store.load_profiles()
    assert list(profiles.columns) == [
        "profile_id",
        "created_seq",
        "created_run",
        "status",
        "merged_into",
        "last_seen_run",
    ]
    assert str(profiles["created_seq"].dtype) == "int64"
    assert profiles["profile_id"].tolist() == ["PA", "PB"]
    assert profiles["status"].tolist() == ["active", "active"]
    assert profiles["merged_into"].isna().all()
    assert profiles["created_run"].tolist() == ["r1", "r1"]


def test_an_empty_store_loads_empty_frames_with_columns(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    assert store.load_identifiers().empty
    assert list(store.load_profiles().columns)[:2] == ["profile_id", "created_seq"]
    assert store.runs().empty
    store.start_run("r1", "cfg", T0)
    store.save_identity(
        "r1",
        identifiers=pd.DataFrame(),
        new_profiles=pd.DataFrame(),
        merged=pd.DataFrame(),
        events=pd.DataFrame(),
    )
    assert store.load_profiles().empty


def test_created_seq_follows_creation_order_across_runs(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    night(
        store,
        "r1",
        ids=identifiers((EMAIL, "a@x.dk", "PZ"), (EMAIL, "b@x.dk", "PA")),
        new=["PZ", "PA"],
    )
    night(
        store,
        "r2",
        ids=identifiers((EMAIL, "c@x.dk", "PM"), (EMAIL, "d@x.dk", "PB")),
        new=["PM", "PB"],
        day=1,
    )
    profiles = profile_rows(store)
    assert {p: profiles[p]["created_seq"] for p in profiles} == {"PZ": 1, "PA": 2, "PM": 3, "PB": 4}
    assert profiles["PM"]["created_run"] == "r2"
    assert store.load_profiles()["profile_id"].tolist() == ["PZ", "PA", "PM", "PB"]


def test_last_seen_moves_only_for_what_was_seen(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    first = identifiers(
        (EMAIL, "ann@example.com", "PA"), (PHONE, "+4512345678", "PA"), (EMAIL, "bo@x.dk", "PB")
    )
    night(store, "r1", ids=first, new=["PA", "PB"])
    night(store, "r2", ids=first.iloc[[0]], day=1)

    with raw(store_backend) as conn:
        seen = {
            row.pseudonym: (row.first_seen_run, row.last_seen_run)
            for row in conn.execute(text("SELECT * FROM identifiers"))
        }
    assert seen[pseudonym(EMAIL, "ann@example.com")] == ("r1", "r2")
    assert seen[pseudonym(PHONE, "+4512345678")] == ("r1", "r1")
    assert seen[pseudonym(EMAIL, "bo@x.dk")] == ("r1", "r1")
    profiles = profile_rows(store)
    assert profiles["PA"]["last_seen_run"] == "r2"
    assert profiles["PB"]["last_seen_run"] == "r1"


def test_an_identifier_can_move_to_another_profile(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    night(
        store, "r1", ids=identifiers((EMAIL, "a@x.dk", "PA"), (EMAIL, "b@x.dk", "PA")), new=["PA"]
    )
    split = events(("split", "PA", "PB", {"identifiers": 1}))
    night(store, "r2", ids=identifiers((EMAIL, "b@x.dk", "PB")), new=["PB"], events=split, day=1)
    assert sorted_identifiers(store) == sorted(
        identifiers((EMAIL, "a@x.dk", "PA"), (EMAIL, "b@x.dk", "PB")).itertuples(index=False)
    )


def test_merges_move_stored_identifiers_to_the_survivor(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    first = identifiers(
        (EMAIL, "a@x.dk", "PA"),
        (EMAIL, "b@x.dk", "PB"),
        (PHONE, "+4511111111", "PB"),
        (EMAIL, "c@x.dk", "PC"),
    )
    night(store, "r1", ids=first, new=["PA", "PB", "PC"])
    # tonight only b@ is seen, now in PA; PB's phone was not seen but must follow it
    merge = events(("merge", "PB", "PA", {"identifiers": 2, "records": 3}))
    night(
        store,
        "r2",
        ids=identifiers((EMAIL, "b@x.dk", "PA")),
        merged=[("PB", "PA")],
        events=merge,
        day=1,
    )

    owners = {row[2]: row[3] for row in sorted_identifiers(store)}
    assert owners[pseudonym(PHONE, "+4511111111")] == "PA"
    assert owners[pseudonym(EMAIL, "b@x.dk")] == "PA"
    assert set(owners.values()) == {"PA", "PC"}
    profiles = profile_rows(store)
    assert profiles["PB"]["status"] == "merged"
    assert profiles["PB"]["merged_into"] == "PA"
    assert profiles["PA"]["last_seen_run"] == "r2"

    # later PA merges into PC: PB, merged into PA before, now points at PC as well
    night(store, "r3", ids=identifiers((EMAIL, "a@x.dk", "PC")), merged=[("PA", "PC")], day=2)
    profiles = profile_rows(store)
    assert profiles["PB"]["merged_into"] == "PC"
    assert profiles["PA"]["merged_into"] == "PC"
    assert {row[3] for row in sorted_identifiers(store)} == {"PC"}


def test_events_are_appended_in_order(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    night(
        store,
        "r1",
        ids=identifiers((EMAIL, "a@x.dk", "PA"), (EMAIL, "b@x.dk", "PB"), (EMAIL, "c@x.dk", "PC")),
        new=["PA", "PB", "PC"],
    )
    history = events(
        ("merge", "PC", "PA", '{"records": 2, "identifiers": 1}'),
        ("merge", "PB", "PA", {"identifiers": 1}),
    ).set_axis([7, 3])  # as a filtered frame would arrive

    night(
        store,
        "r2",
        ids=identifiers((EMAIL, "b@x.dk", "PA")),
        merged=[("PB", "PA"), ("PC", "PA")],
        events=history,
        day=1,
    )
    with raw(store_backend) as conn:
        rows = conn.execute(
            text(
                "SELECT run_id, event, profile_id, other_profile_id, detail "
                "FROM identity_events ORDER BY event_id"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("r2", "merge", "PC", "PA", '{"identifiers":1,"records":2}'),
        ("r2", "merge", "PB", "PA", '{"identifiers":1}'),
    ]


def events(*rows: tuple[str, str, str | None, object]) -> pd.DataFrame:
    """An events frame; detail may be a mapping, JSON text or None."""
    return pd.DataFrame(
        {
            "event": [r[0] for r in rows],
            "profile_id": [r[1] for r in rows],
            "other_profile_id": [r[2] for r in rows],
            "detail": pd.Series([r[3] for r in rows], dtype=object),
        }
    )


@contextmanager
def fresh_store(store_backend: StoreBackend) -> Iterator[StateStore]:
    """A new empty store on the same backend (one per hypothesis example)."""
    if store_backend.name == "sqlite":
        with (
            tempfile.TemporaryDirectory() as folder,
            StateStore.open(default_url(Path(folder))) as store,
        ):
            yield store
        return
    schema = f"enrich_test_{secrets.token_hex(6)}"
    try:
        with StateStore.open(store_backend.url, schema=schema) as store:
            yield store
    finally:
        drop_schema(store_backend.url, schema)


@dataclass
class Model:
    """What the store should hold, kept the simple way: dicts."""

    profiles: dict[str, dict[str, object]] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)  # pseudonym -> profile id

    def active(self) -> list[str]:
        return sorted(p for p, row in self.profiles.items() if row["status"] == "active")


def _plan_night(rng: random.Random, model: Model, n: int) -> tuple[dict[str, pd.DataFrame], Model]:
    """A random but valid night for `model`, and the model after it."""
    run = f"r{n}"
    after = Model({p: dict(row) for p, row in model.profiles.items()}, dict(model.owner))
    active = model.active()
    rng.shuffle(active)
    losers = active[: rng.randint(0, len(active) // 2)]
    survivors = active[len(losers) :]
    merged = [(p, rng.choice(survivors)) for p in losers] if survivors else []
    new = [f"N{n}x{i}" for i in range(rng.randint(0 if active else 1, 3))]
    seq = max((int(str(r["created_seq"])) for r in model.profiles.values()), default=0)
    for i, p in enumerate(new, start=1):
        after.profiles[p] = {
            "created_seq": seq + i,
            "created_run": run,
            "status": "active",
            "merged_into": None,
            "last_seen_run": run,
        }
    survivor_of = dict(merged)
    for loser, survivor in merged:
        after.profiles[loser].update(status="merged", merged_into=survivor, last_seen_run=run)
        after.profiles[survivor]["last_seen_run"] = run
    for row in after.profiles.values():
        if row["merged_into"] in survivor_of:
            row["merged_into"] = survivor_of[str(row["merged_into"])]
    for key, owner in after.owner.items():
        after.owner[key] = survivor_of.get(owner, owner)
    targets = after.active()
    tonight: dict[str, str] = {}
    for key in rng.sample(sorted(after.owner), k=rng.randint(0, len(after.owner))):
        move = rng.random() < 0.2
        tonight[key] = rng.choice(targets) if move else after.owner[key]
    for p in new:
        for j in range(rng.randint(1, 2)):
            tonight[pseudonym(EMAIL, f"{p}.{j}@x.dk")] = p
    for key, p in tonight.items():
        after.owner[key] = p
        after.profiles[p]["last_seen_run"] = run
    ids = pd.DataFrame(
        {
            "kind": "email",
            "key_id": KEY.key_id,
            "pseudonym": list(tonight),
            "profile_id": list(tonight.values()),
        }
    )
    frames = {
        "identifiers": ids,
        "new_profiles": frame(["profile_id"], [(p,) for p in new]),
        "merged": frame(["profile_id", "merged_into"], merged),
        "events": events(*(("merge", a, b, {"identifiers": 1}) for a, b in merged)),
    }
    return frames, after


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_any_sequence_of_nights_matches_a_simple_model(
    store_backend: StoreBackend, seed: int
) -> None:
    rng = random.Random(seed)
    model = Model()
    with fresh_store(store_backend) as store:
        for n in range(1, 6):
            frames, model = _plan_night(rng, model, n)
            store.start_run(f"r{n}", "cfg", T0 + timedelta(days=n))
            store.save_identity(f"r{n}", **frames)
            store.finish_run(f"r{n}", "succeeded", {}, T0 + timedelta(days=n))
            assert profile_rows(store) == model.profiles
            loaded = {row[2]: row[3] for row in sorted_identifiers(store)}
            assert loaded == model.owner


# contract violations: ValueError, nothing written, no value in the message


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("ann@example.com", id="raw-email"),
        pytest.param("+4512345678", id="raw-phone"),
        pytest.param("AB" * 32, id="upper-case"),
        pytest.param("ab" * 31, id="too-short"),
        pytest.param("ab" * 33, id="too-long"),
        pytest.param("g" * 64, id="not-hex"),
    ],
)
def test_save_rejects_anything_but_a_hex_pseudonym(store_backend: StoreBackend, bad: str) -> None:
    store = store_backend.open()
    ids = identifiers((EMAIL, "a@x.dk", "PA"))
    ids.loc[len(ids)] = ["email", KEY.key_id, bad, "PA"]
    store.start_run("r1", "cfg", T0)
    with pytest.raises(ValueError, match="pseudonym must be 64 lower-case hex") as info:
        store.save_identity(
            "r1",
            identifiers=ids,
            new_profiles=frame(["profile_id"], [("PA",)]),
            merged=pd.DataFrame(),
            events=pd.DataFrame(),
        )
    assert bad not in str(info.value)
    assert "(1 row(s))" in str(info.value)
    assert store.load_profiles().empty


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        pytest.param("kind", "address", "kind must be one of", id="kind"),
        pytest.param("key_id", "k 1", "key_id must be", id="key-id"),
        pytest.param("profile_id", "ann@example.com", "profile_id must be", id="profile-id"),
    ],
)
def test_save_rejects_malformed_identifier_columns(
    store_backend: StoreBackend, column: str, value: str, message: str
) -> None:
    store = store_backend.open()
    ids = identifiers((EMAIL, "a@x.dk", "PA"))
    ids[column] = value
    store.start_run("r1", "cfg", T0)
    with pytest.raises(ValueError, match=message) as info:
        store.save_identity(
            "r1",
            identifiers=ids,
            new_profiles=frame(["profile_id"], [("PA",)]),
            merged=pd.DataFrame(),
            events=pd.DataFrame(),
        )
    assert value not in str(info.value)


def test_duplicates_are_found_behind_a_shared_prefix(store_backend: StoreBackend) -> None:
    # equal first 64 bits, different digests: the duplicate of `a` does not sort next to it
    a, b = "ab" * 8 + "0" * 48, "ab" * 8 + "1" * 48
    store = store_backend.open()
    store.start_run("r1", "cfg", T0)
    with pytest.raises(ValueError, match="duplicate pseudonym, kind, key_id"):
        store.save_identity(
            "r1",
            identifiers=frame(
                ["kind", "key_id", "pseudonym", "profile_id"],
                [("email", "k1", a, "PA"), ("email", "k1", b, "PA"), ("email", "k1", a, "PA")],
            ),
            new_profiles=frame(["profile_id"], [("PA",)]),
            merged=pd.DataFrame(),
            events=pd.DataFrame(),
        )


def _save(store: StateStore, **frames: pd.DataFrame) -> None:
    empty = {
        "identifiers": pd.DataFrame(),
        "new_profiles": pd.DataFrame(),
        "merged": pd.DataFrame(),
        "events": pd.DataFrame(),
    }
    store.save_identity("r2", **(empty | frames))


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        pytest.param(
            {"identifiers": identifiers((EMAIL, "new@x.dk", "PX"))},
            "not active profiles",
            id="unknown-profile",
        ),
        pytest.param(
            {"identifiers": pd.concat([identifiers((EMAIL, "a@x.dk", "PA"))] * 2)},
            "duplicate",
            id="duplicate-identifier",
        ),
        pytest.param(
            {"new_profiles": frame(["profile_id"], [("PA",)])},
            "already exist",
            id="existing-new-profile",
        ),
        pytest.param(
            {"merged": frame(["profile_id", "merged_into"], [("PA", "PX")])},
            "merged.merged_into",
            id="merge-into-unknown",
        ),
        pytest.param(
            {"merged": frame(["profile_id", "merged_into"], [("PA", "PB"), ("PB", "PC")])},
            "survivor",
            id="merge-chain",
        ),
        pytest.param(
            {
                "merged": frame(["profile_id", "merged_into"], [("PB", "PA")]),
                "identifiers": identifiers((EMAIL, "b@x.dk", "PB")),
            },
            "not active profiles",
            id="identifier-on-merged-profile",
        ),
        pytest.param(
            {"events": events(("merge", "PA", "PX", None))},
            "events.other_profile_id",
            id="event-unknown-profile",
        ),
        pytest.param(
            {"events": events(("merge", "PA", "PB", {"email": "ann@example.com"}))},
            "only counts",
            id="event-detail-text",
        ),
        pytest.param(
            {"events": events(("renamed", "PA", "PB", None))}, "events.event", id="event-kind"
        ),
    ],
)
def test_contract_violations_write_nothing(
    store_backend: StoreBackend, frames: dict[str, pd.DataFrame], message: str
) -> None:
    store = store_backend.open()
    ids = identifiers((EMAIL, "a@x.dk", "PA"), (EMAIL, "b@x.dk", "PB"), (EMAIL, "c@x.dk", "PC"))
    night(store, "r1", ids=ids, new=["PA", "PB", "PC"])
    before = (sorted_identifiers(store), store.load_profiles())
    store.start_run("r2", "cfg", T0 + timedelta(days=1))
    with pytest.raises(ValueError, match=message) as info:
        _save(store, **({"new_profiles": frame(["profile_id"], [("PN",)])} | frames))
    assert "ann@example.com" not in str(info.value)
    assert sorted_identifiers(store) == before[0]
    pd.testing.assert_frame_equal(store.load_profiles(), before[1])


def test_saving_needs_a_running_run(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    with pytest.raises(StoreError, match="not in the run ledger"):
        _save(store, new_profiles=frame(["profile_id"], [("PA",)]))
    store.start_run("r2", "cfg", T0)
    store.finish_run("r2", "failed", {}, T0)
    with pytest.raises(StoreError, match="already finished"):
        _save(store, new_profiles=frame(["profile_id"], [("PA",)]))
    assert store.load_profiles().empty


# no personal data at rest


_PII = re.compile(r"@|\+\d")


def test_the_database_holds_no_raw_identifiers(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    raw_values = ["ann.lee@example.com", "+4512345678", "bo@shop.dk", "+4587654321"]
    first = identifiers(
        (EMAIL, raw_values[0], "PA"),
        (PHONE, raw_values[1], "PA"),
        (EMAIL, raw_values[2], "PB"),
        (PHONE, raw_values[3], "PB"),
        (CID, "crm:42", "PB"),
    )
    night(store, "r1", ids=first, new=["PA", "PB"])
    merge = events(("merge", "PB", "PA", {"identifiers": 3, "records": 4}))
    night(
        store, "r2", ids=first.assign(profile_id="PA"), merged=[("PB", "PA")], events=merge, day=1
    )
    raw_values.append("cy@x.dk")
    night(store, "r3", ids=identifiers((EMAIL, "cy@x.dk", "PC")), new=["PC"], day=2)
    store.save_consents(
        consents(
            (EMAIL, raw_values[0], "profiling", "granted", T0),
            (EMAIL, "cy@x.dk", "ads_export", "withdrawn", T0),
            (EMAIL, "cy@x.dk", "crm_export", "granted", T0),
        )
    )
    store.record_objection(subjects((EMAIL, "cy@x.dk")), "objection_direct_marketing", "DSAR-7", T0)
    store.erase_subject("PA", "DSAR-8", T0 + timedelta(days=3))

    with raw(store_backend) as conn:
        inspector = inspect(conn)
        scanned = 0
        for table in inspector.get_table_names():
            texts = [
                c["name"] for c in inspector.get_columns(table) if isinstance(c["type"], String)
            ]
            for row in conn.execute(text(f"SELECT {', '.join(texts)} FROM {table}")):  # noqa: S608
                for value in row:
                    scanned += 1
                    assert value is None or not _PII.search(str(value)), (table, value)
                    assert value not in raw_values
    assert scanned > 60


# consent records, suppressions, erasure


def record_id(*parts: object) -> str:
    """A consent record id as policy.consent makes them: 32 hex digits of a SHA-256."""
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


def consents(
    *rows: tuple[IdentifierKind, str, str, str, datetime],
    source: str | None = "checkout",
    tcf: bool = False,
) -> pd.DataFrame:
    """Consent records (kind, raw value, purpose, status, recorded_at) as save_consents takes
    them; the record id is derived from the row, the evidence is its position."""
    return pd.DataFrame(
        {
            "record_id": pd.Series([record_id(*r) for r in rows], dtype="str"),
            "kind": pd.Series([str(r[0]) for r in rows], dtype="str"),
            "key_id": pd.Series([KEY.key_id] * len(rows), dtype="str"),
            "pseudonym": pd.Series([pseudonym(r[0], r[1]) for r in rows], dtype="str"),
            "purpose": pd.Series([r[2] for r in rows], dtype="str"),
            "status": pd.Series([r[3] for r in rows], dtype="str"),
            "recorded_at": pd.Series([r[4] for r in rows], dtype="datetime64[us, UTC]"),
            "source": pd.Series([source] * len(rows), dtype="str"),
            "notice_version": pd.Series(["v2.1"] * len(rows), dtype="str"),
            "evidence_ref": pd.Series([f"consents:{i + 2}" for i in range(len(rows))], dtype="str"),
            "tcf": pd.Series([tcf] * len(rows), dtype=bool),
        }
    )


def subjects(*rows: tuple[IdentifierKind, str]) -> pd.DataFrame:
    """Identifiers (kind, raw value) as find_profiles and record_objection take them."""
    return identifiers(*((k, v, "-") for k, v in rows)).drop(columns="profile_id")


def stored_consents(store: StateStore) -> pd.DataFrame:
    return store.load_consents().sort_values("record_id").reset_index(drop=True)


def subject_keys(frame: pd.DataFrame) -> set[tuple[str, str, str]]:
    return set(frame[["kind", "key_id", "pseudonym"]].itertuples(index=False, name=None))


def test_migrated_checks_accept_every_purpose_status_and_suppression(
    store_backend: StoreBackend,
) -> None:
    # the migrations spell the allowed values out; a new enum value needs a new migration
    store = store_backend.open()
    rows = [
        (EMAIL, f"p{i}{j}@example.com", str(purpose), str(status), T0)
        for i, purpose in enumerate(Purpose)
        for j, status in enumerate(ConsentStatus)
    ]
    assert store.save_consents(consents(*rows)) == len(Purpose) * len(ConsentStatus)
    for i, kind in enumerate(SuppressionKind):
        added = store.record_objection(subjects((PHONE, f"+45201234{i:02d}")), kind, "R-1", T0)
        assert added == 1
    assert set(store.load_suppressions()["suppression"]) == set(SuppressionKind)


def test_version_1_stores_gain_the_consent_tables_and_keep_their_data(
    store_backend: StoreBackend,
) -> None:
    old = store_backend.open(migrations=MIGRATIONS[:1])
    night(old, "r1", ids=identifiers((EMAIL, "ann@example.com", "PA")), new=["PA"])
    old.close()
    store = store_backend.open()
    assert store.schema_version() == len(MIGRATIONS)
    assert len(store.load_identifiers()) == 1
    assert store.save_consents(consents((EMAIL, "ann@example.com", "profiling", "granted", T0)))
    assert store.load_suppressions().empty


def test_consent_records_round_trip(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    store.start_run("r1", "cfg", T0)
    cest = timezone(timedelta(hours=2))
    records = pd.concat(
        [
            consents(
                (EMAIL, "ann@example.com", "profiling", "granted", T0),
                (
                    PHONE,
                    "+4512345678",
                    "ads_export",
                    "withdrawn",
                    datetime(2026, 5, 1, 9, tzinfo=cest),
                ),
            ),
            consents(
                (CID, "crm:17", "crm_export", "granted", T0 + timedelta(microseconds=123456)),
                source=None,
                tcf=True,
            ),
        ],
        ignore_index=True,
    )
    assert store.save_consents(records, run_id="r1") == 3

    loaded = stored_consents(store)
    assert list(loaded.columns) == [*records.columns, "first_seen_run"]
    assert str(loaded["recorded_at"].dtype) == "datetime64[us, UTC]"
    assert str(loaded["tcf"].dtype) == "bool"
    expected = records.sort_values("record_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(loaded.drop(columns="first_seen_run"), expected)
    # stored in UTC, to the microsecond
    assert set(loaded["recorded_at"]) == {
        T0,
        datetime(2026, 5, 1, 7, tzinfo=UTC),
        T0 + timedelta(microseconds=123456),
    }
    assert loaded["first_seen_run"].tolist() == ["r1"] * 3


def test_saving_consents_again_keeps_the_first_record(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    first = consents(
        (EMAIL, "ann@example.com", "profiling", "granted", T0),
        (EMAIL, "bo@x.dk", "profiling", "granted", T0),
    )
    assert store.save_consents(first) == 2
    again = pd.concat(
        [
            first.assign(evidence_ref=["consents:90", "consents:91"], notice_version="v9"),
            consents((EMAIL, "cy@x.dk", "analytics", "withdrawn", T0)),
        ],
        ignore_index=True,
    )
    assert store.save_consents(again) == 1
    loaded = stored_consents(store).set_index("record_id")
    assert loaded.loc[first["record_id"], "evidence_ref"].tolist() == ["consents:2", "consents:3"]
    assert loaded.loc[first["record_id"], "notice_version"].tolist() == ["v2.1", "v2.1"]
    assert len(loaded) == 3
    assert loaded["first_seen_run"].isna().all()  # saved outside a run
    assert store.save_consents(pd.DataFrame()) == 0


def test_consents_saved_in_a_run_need_it_running(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    records = consents((EMAIL, "ann@example.com", "profiling", "granted", T0))
    with pytest.raises(StoreError, match="not in the run ledger"):
        store.save_consents(records, run_id="r1")
    store.start_run("r1", "cfg", T0)
    store.finish_run("r1", "succeeded", {}, T0)
    with pytest.raises(StoreError, match="already finished"):
        store.save_consents(records, run_id="r1")
    assert store.load_consents().empty


def _with(frame: pd.DataFrame, column: str, value: object) -> pd.DataFrame:
    """`frame` with the second row's `column` set to `value`. The column then holds objects,
    except that a missing timestamp keeps a timestamp column (NaT). pandas would coerce the
    other cases: a naive datetime into UTC, None into False."""
    values = frame[column].tolist()
    values[1] = value
    changed = frame.copy()
    keep = value is None and isinstance(frame[column].dtype, pd.DatetimeTZDtype)
    changed[column] = pd.Series(values, dtype=frame[column].dtype if keep else object)
    return changed


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        pytest.param("pseudonym", "ann@example.com", "pseudonym must be 64", id="raw-email"),
        pytest.param("pseudonym", "+4512345678", "pseudonym must be 64", id="raw-phone"),
        pytest.param("record_id", "ann@example.com", "record_id must be lower-case hex", id="id"),
        pytest.param("record_id", "AB" * 16, "record_id must be lower-case hex", id="id-case"),
        pytest.param("kind", "address", "kind must be one of", id="kind"),
        pytest.param("purpose", "newsletter", "purpose must be one of", id="purpose"),
        pytest.param("status", "maybe", "status must be one of", id="status"),
        pytest.param("source", "ann@example.com", "source must be", id="source-address"),
        pytest.param("notice_version", "v 2", "notice_version must be", id="notice-space"),
        pytest.param("evidence_ref", "+4512345678", "evidence_ref must be", id="evidence"),
        pytest.param("evidence_ref", None, "evidence_ref must not be missing", id="no-evidence"),
        pytest.param("recorded_at", datetime(2026, 1, 1), "timezone-aware", id="naive-time"),
        pytest.param("recorded_at", None, "recorded_at must not be missing", id="no-time"),
        pytest.param("tcf", None, "tcf must be booleans", id="no-tcf"),
    ],
)
def test_save_consents_rejects_malformed_records(
    store_backend: StoreBackend, column: str, value: object, message: str
) -> None:
    store = store_backend.open()
    good = consents(
        (EMAIL, "bo@x.dk", "profiling", "granted", T0),
        (EMAIL, "cy@x.dk", "profiling", "granted", T0),
    )
    with pytest.raises(ValueError, match=message) as info:
        store.save_consents(_with(good, column, value))
    assert "example.com" not in str(info.value)
    assert "4512345678" not in str(info.value)
    assert store.load_consents().empty


def test_save_consents_rejects_a_repeated_record_id(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    one = consents((EMAIL, "bo@x.dk", "profiling", "granted", T0))
    with pytest.raises(ValueError, match=r"duplicate record_id \(1 row"):
        store.save_consents(pd.concat([one, one], ignore_index=True))


def test_suppressions_round_trip_and_keep_the_first_request(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    entries = subjects((EMAIL, "ann@example.com"), (PHONE, "+4512345678")).assign(
        suppression=["objection_profiling", "opt_out_sale_sharing"],
        recorded_at=pd.Series([T0, T0 + timedelta(hours=1)], dtype="datetime64[us, UTC]"),
        request_ref=["DSAR-1", "gpc:consents:17"],
    )
    assert store.add_suppressions(entries) == 2
    later = entries.assign(
        request_ref="DSAR-2", recorded_at=entries["recorded_at"] + timedelta(days=1)
    )
    assert store.add_suppressions(later) == 0
    loaded = store.load_suppressions().sort_values("request_ref").reset_index(drop=True)
    assert list(loaded.columns) == list(entries.columns)
    pd.testing.assert_frame_equal(loaded, entries.sort_values("request_ref").reset_index(drop=True))


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        pytest.param("suppression", "forget_me", "suppression must be one of", id="kind"),
        pytest.param("request_ref", "ann@example.com", "request_ref must be", id="ref-address"),
        pytest.param("pseudonym", "ann@example.com", "pseudonym must be 64", id="raw-email"),
    ],
)
def test_add_suppressions_rejects_malformed_entries(
    store_backend: StoreBackend, column: str, value: str, message: str
) -> None:
    store = store_backend.open()
    entries = subjects((EMAIL, "bo@x.dk")).assign(
        suppression="erasure",
        recorded_at=pd.Series([T0], dtype="datetime64[us, UTC]"),
        request_ref="DSAR-1",
    )
    entries[column] = value
    with pytest.raises(ValueError, match=message) as info:
        store.add_suppressions(entries)
    assert "example.com" not in str(info.value)
    assert store.load_suppressions().empty


def test_add_suppressions_rejects_two_entries_for_one_identifier_and_kind(
    store_backend: StoreBackend,
) -> None:
    store = store_backend.open()
    twice = subjects((EMAIL, "bo@x.dk"), (EMAIL, "bo@x.dk")).assign(
        suppression="erasure",
        recorded_at=pd.Series([T0, T0], dtype="datetime64[us, UTC]"),
        request_ref=["DSAR-1", "DSAR-2"],
    )
    with pytest.raises(ValueError, match=r"duplicate kind, key_id, pseudonym, suppression"):
        store.add_suppressions(twice)
    assert store.load_suppressions().empty


def test_objections_suppress_each_identifier_once(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    people = subjects(
        (EMAIL, "ann@example.com"), (PHONE, "+4512345678"), (EMAIL, "ann@example.com")
    )
    kind = str(SuppressionKind.OBJECTION_DIRECT_MARKETING)
    assert store.record_objection(people, kind, "DSAR-3", T0) == 2
    assert store.record_objection(people, kind, "DSAR-4", T0) == 0
    assert store.record_objection(people, "objection_profiling", "DSAR-4", T0) == 2
    loaded = store.load_suppressions()
    assert sorted(loaded["request_ref"]) == ["DSAR-3", "DSAR-3", "DSAR-4", "DSAR-4"]
    with pytest.raises(ValueError, match="kind must be one of"):
        store.record_objection(people, "unsubscribe", "DSAR-5", T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.record_objection(people, kind, "DSAR-5", datetime(2026, 1, 1))


def test_an_erased_identifier_keeps_no_consent_and_gets_none_back(
    store_backend: StoreBackend,
) -> None:
    store = store_backend.open()
    records = consents(
        (EMAIL, "ann@example.com", "profiling", "granted", T0),
        (EMAIL, "bo@x.dk", "profiling", "granted", T0),
    )
    store.save_consents(records)
    # an erasure request for a person the identity graph never linked to a profile
    assert (
        store.record_objection(subjects((EMAIL, "ann@example.com")), "erasure", "DSAR-9", T0) == 1
    )
    assert stored_consents(store)["pseudonym"].tolist() == [pseudonym(EMAIL, "bo@x.dk")]
    # tomorrow's consent file still lists them: nothing of theirs comes back
    assert store.save_consents(records) == 0
    tomorrow = consents((EMAIL, "ann@example.com", "analytics", "granted", T0 + timedelta(days=1)))
    assert store.save_consents(tomorrow) == 0
    assert len(store.load_consents()) == 1


def _erasure_scene(store: StateStore) -> None:
    """PA absorbed PB; PC is someone else; consent records for all three people's ids."""
    night(
        store,
        "r1",
        ids=identifiers(
            (EMAIL, "ann@example.com", "PA"),
            (PHONE, "+4512345678", "PB"),
            (EMAIL, "cy@x.dk", "PC"),
        ),
        new=["PA", "PB", "PC"],
    )
    night(
        store,
        "r2",
        ids=identifiers((PHONE, "+4512345678", "PA"), (CID, "crm:5", "PA")),
        merged=[("PB", "PA")],
        events=events(("merge", "PB", "PA", {"identifiers": 1})),
        day=1,
    )
    store.save_consents(
        consents(
            (EMAIL, "ann@example.com", "profiling", "granted", T0),
            (PHONE, "+4512345678", "ads_export", "granted", T0),
            (CID, "crm:5", "crm_export", "withdrawn", T0),
            (EMAIL, "cy@x.dk", "profiling", "granted", T0),
        )
    )


def test_erase_subject_deletes_the_person_and_suppresses_every_identifier(
    store_backend: StoreBackend,
) -> None:
    store = store_backend.open()
    _erasure_scene(store)
    theirs = subjects((EMAIL, "ann@example.com"), (PHONE, "+4512345678"), (CID, "crm:5"))
    assert store.find_profiles(theirs.iloc[[1]]) == ["PA"]
    assert subject_keys(store.subject_identifiers("PA")) == subject_keys(theirs)
    erased_at = T0 + timedelta(days=5)

    counts = store.erase_subject("PA", "DSAR-11", erased_at)

    assert counts == {
        "identifiers_deleted": 3,
        "consent_records_deleted": 3,
        "profiles_deleted": 2,
        "suppressions_added": 3,
        "cache_entries_deleted": 0,
    }
    assert set(store.load_identifiers()["profile_id"]) == {"PC"}
    assert store.load_profiles()["profile_id"].tolist() == ["PC"]
    assert stored_consents(store)["pseudonym"].tolist() == [pseudonym(EMAIL, "cy@x.dk")]
    listed = store.load_suppressions()
    assert subject_keys(listed) == subject_keys(theirs)
    assert set(listed["suppression"]) == {"erasure"}
    assert set(listed["request_ref"]) == {"erased"}  # no path from identifiers to the request
    assert set(listed["recorded_at"]) == {erased_at}
    log = store.load_erasures()
    assert log[["request_ref", "profile_id"]].values.tolist() == [["DSAR-11", "PA"]]
    assert log.iloc[0][list(counts)].to_dict() == counts
    assert log["recorded_at"].tolist() == [erased_at]
    assert store.find_profiles(theirs) == []

    # a retried request changes nothing and reports what it did
    assert store.erase_subject("PA", "DSAR-11", erased_at + timedelta(hours=1)) == counts
    assert len(store.load_erasures()) == 1
    with pytest.raises(ValueError, match="profile PA is not in the state store"):
        store.erase_subject("PA", "DSAR-12", erased_at)


def test_erase_subject_refuses_unknown_and_merged_profiles(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    _erasure_scene(store)
    with pytest.raises(ValueError, match="profile PX is not in the state store"):
        store.erase_subject("PX", "DSAR-1", T0)
    with pytest.raises(ValueError, match="PB was merged into PA"):
        store.erase_subject("PB", "DSAR-1", T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.erase_subject("PA", "DSAR-1", datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="request_ref"):
        store.erase_subject("PA", "ann@example.com", T0)
    with pytest.raises(ValueError, match="not in the state store"):
        store.subject_identifiers("PX")
    assert len(store.load_identifiers()) == 4
    assert store.load_suppressions().empty


def test_an_erasure_that_fails_midway_leaves_everything_in_place(
    store_backend: StoreBackend,
) -> None:
    store = store_backend.open()
    _erasure_scene(store)
    before = (sorted_identifiers(store), stored_consents(store), store.load_profiles())
    with raw(store_backend) as conn:
        conn.execute(text("DROP TABLE erasures"))  # the log is written last
        conn.commit()
    with pytest.raises(StoreError, match="erasing a subject failed"):
        store.erase_subject("PA", "DSAR-11", T0)
    assert sorted_identifiers(store) == before[0]
    pd.testing.assert_frame_equal(stored_consents(store), before[1])
    pd.testing.assert_frame_equal(store.load_profiles(), before[2])
    assert store.load_suppressions().empty


def test_find_profiles_names_active_profiles_only(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    _erasure_scene(store)
    assert store.find_profiles(subjects((EMAIL, "cy@x.dk"), (EMAIL, "ann@example.com"))) == [
        "PA",
        "PC",
    ]
    assert store.find_profiles(subjects((EMAIL, "nobody@x.dk"))) == []
    assert store.find_profiles(pd.DataFrame()) == []
    assert store.subject_identifiers("PB").empty  # merged: its identifiers moved to PA
    with pytest.raises(ValueError, match="pseudonym must be 64") as info:
        store.find_profiles(
            pd.DataFrame({"kind": ["email"], "key_id": ["k"], "pseudonym": ["ann@example.com"]})
        )
    assert "example.com" not in str(info.value)


# failures


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_server_fails_fast_with_a_masked_url() -> None:
    port = _closed_port()
    start = time.monotonic()
    with pytest.raises(StoreError) as info:
        StateStore.open(
            f"postgresql+psycopg://enrich:s3cret-pw@127.0.0.1:{port}/state", connect_timeout=2
        )
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert f"127.0.0.1:{port}/state" in message
    assert "OperationalError" in message
    assert "s3cret-pw" not in message
    assert info.value.retryable
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_a_server_that_never_answers_times_out() -> None:
    # a listening socket that never accepts: TCP connects, PostgreSQL never speaks
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(StoreError, match="timed out") as info:
            StateStore.open(
                f"postgresql+psycopg://enrich@127.0.0.1:{port}/state", connect_timeout=2
            )
        assert time.monotonic() - start < 6
    assert info.value.retryable


def test_a_busy_writer_makes_others_fail_retryably(store_backend: StoreBackend) -> None:
    holder = store_backend.open()
    waiter = store_backend.open(connect_timeout=0.5)
    with holder._database().writing():
        start = time.monotonic()
        with pytest.raises(StoreError) as info:
            waiter.start_run("r1", "cfg", T0)
        assert time.monotonic() - start < 4
    assert info.value.retryable
    waiter.start_run("r1", "cfg", T0)  # the lock is free again


def test_database_errors_are_translated_without_sql(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    with raw(store_backend) as conn:
        conn.execute(text("DROP TABLE identifiers"))
        conn.commit()
    with pytest.raises(StoreError) as info:
        store.load_identifiers()
    message = str(info.value)
    assert "loading identifiers failed" in message
    assert "SELECT" not in message
    assert info.value.error_class is not None
    assert info.value.__cause__ is None


def test_the_url_is_shown_with_its_password_masked(
    store_backend: StoreBackend,
) -> None:
    url = make_url(store_backend.url)
    if store_backend.name == "postgresql" and url.password is None:
        url = url.set(password="s3cret-pw")  # accepted by the test server (trust)
    secret = url.password
    store = StateStore.open(url.render_as_string(hide_password=False), schema=store_backend.schema)
    try:
        assert store.backend == store_backend.name
        if secret:
            assert str(secret) not in store.url
            assert str(secret) not in repr(store)
            assert "***" in store.url
    finally:
        store.close()


def test_a_closed_store_refuses_calls(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.runs()


def test_stores_are_context_managers(store_backend: StoreBackend) -> None:
    with store_backend.open() as store:
        store.start_run("r1", "cfg", T0)
    with pytest.raises(StoreError, match="closed"):
        store.runs()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("mysql://u:s3cret-pw@h/db", id="mysql"),
        pytest.param("postgresql+psycopg2://u:s3cret-pw@h/db", id="psycopg2"),
        pytest.param("not a url s3cret-pw", id="garbage"),
    ],
)
def test_unsupported_urls_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(StoreError) as info:
        StateStore.open(url)
    assert "s3cret-pw" not in str(info.value)


def test_default_url_is_a_private_sqlite_file_under_the_state_dir(tmp_path: Path) -> None:
    url = default_url(tmp_path / "state" / "nested")
    assert url == f"sqlite:///{tmp_path / 'state' / 'nested' / 'state.db'}"
    with StateStore.open(url) as store:
        assert store.backend == "sqlite"
        assert store.url == url
    mode = stat.S_IMODE(os.stat(tmp_path / "state" / "nested" / "state.db").st_mode)
    assert mode == 0o600


def test_sqlite_state_dir_that_cannot_be_created_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot create the database file"):
        StateStore.open(f"sqlite:///{blocker / 'state.db'}")


def test_a_new_sqlite_store_gets_large_pages_and_an_existing_file_keeps_its_own(
    tmp_path: Path,
) -> None:
    new = tmp_path / "new.db"
    StateStore.open(f"sqlite:///{new}").close()
    old = tmp_path / "old.db"
    with closing(sqlite3.connect(old)) as conn:
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("CREATE TABLE note (x)")  # the file now has its page size for good
    store = StateStore.open(f"sqlite:///{old}")
    night(store, "r1", ids=identifiers((EMAIL, "ann@example.com", "PA")), new=["PA"])
    assert store.load_identifiers()["profile_id"].tolist() == ["PA"]
    store.close()
    sizes = {}
    for path in (new, old):
        with closing(sqlite3.connect(path)) as conn:
            sizes[path.name] = conn.execute("PRAGMA page_size").fetchone()[0]
    assert sizes == {"new.db": SQLITE_PAGE_SIZE, "old.db": 4096}
