"""Tests for the provider cache of the state store, each on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from profiles.store import (
    CACHE_COLUMNS,
    CACHE_STATS_COLUMNS,
    ERASURE_COUNTS,
    MIGRATIONS,
    StateStore,
    StoreError,
)
from profiles.types import IdentifierKind
from tests.profiles.conftest import StoreBackend
from tests.profiles.test_store import (
    CID,
    EMAIL,
    KEY,
    PHONE,
    T0,
    consents,
    events,
    fresh_store,
    identifiers,
    night,
    pseudonym,
    raw,
    subjects,
)

PARAMS = hashlib.sha256(b'{"endpoint":"/v1/person","fields":["interests"]}').hexdigest()
OTHER_PARAMS = hashlib.sha256(b'{"endpoint":"/v2/person"}').hexdigest()
DAY = timedelta(days=1)


def signal(
    topic: str, confidence: float, raw_score: str | None = "0.8", **extra: object
) -> dict[str, object]:
    """One signal as a provider mapping would produce it (observed a day before T0)."""
    return {
        "topic": topic,
        "confidence": confidence,
        "observed_at": "2026-10-31T03:00:00+01:00",
        "kind": "inferred",
        "raw_score": raw_score,
        **extra,
    }


Entry = tuple[str, IdentifierKind, str, str, object]
"""provider, kind, raw value, status, signals (a list, JSON text or None)."""


def entries(
    *rows: Entry,
    params: str = PARAMS,
    fetched_at: datetime = T0,
    ttl: timedelta = 30 * DAY,
) -> pd.DataFrame:
    """Cache entries as the enrichment stage would save them."""
    return pd.DataFrame(
        {
            "provider": pd.Series([r[0] for r in rows], dtype="str"),
            "params_hash": pd.Series([params] * len(rows), dtype="str"),
            "kind": pd.Series([str(r[1]) for r in rows], dtype="str"),
            "key_id": pd.Series([KEY.key_id] * len(rows), dtype="str"),
            "pseudonym": pd.Series([pseudonym(r[1], r[2]) for r in rows], dtype="str"),
            "status": pd.Series([r[3] for r in rows], dtype="str"),
            "signals": pd.Series(
                [r[4] if r[4] is None or isinstance(r[4], str) else json.dumps(r[4]) for r in rows],
                dtype="str",
            ),
            "fetched_at": pd.Series([fetched_at] * len(rows), dtype="datetime64[us, UTC]"),
            "expires_at": pd.Series([fetched_at + ttl] * len(rows), dtype="datetime64[us, UTC]"),
        }
    )


ANN = (EMAIL, "ann@example.com")
BO = (PHONE, "+4512345678")
CY = (EMAIL, "cy@x.dk")
MATCHED = [signal("interest.sports.running", 0.82), signal("life_stage.parent", 0.4, None)]


def _in_run(store: StateStore, run_id: str = "r1", day: int = 0) -> str:
    store.start_run(run_id, "cfg", T0 + day * DAY)
    return run_id


def loaded(
    store: StateStore, provider: str = "acme", params: str = PARAMS, now: datetime = T0
) -> dict[tuple[str, str], tuple[str, object]]:
    """load_cache as {(kind, pseudonym): (status, signals as Python)}."""
    frame = store.load_cache(provider, params, now=now)
    return {
        (str(kind), str(pseud)): (str(status), json.loads(str(signals)))
        for kind, pseud, status, signals in zip(
            frame["kind"], frame["pseudonym"], frame["status"], frame["signals"], strict=True
        )
    }


def key(identifier: tuple[IdentifierKind, str]) -> tuple[str, str]:
    return str(identifier[0]), pseudonym(*identifier)


# schema


def test_version_2_stores_gain_the_cache_and_keep_their_data(store_backend: StoreBackend) -> None:
    old = store_backend.open(migrations=MIGRATIONS[:2])
    night(old, "r1", ids=identifiers((EMAIL, "ann@example.com", "PA")), new=["PA"])
    night(old, "r2", ids=identifiers((EMAIL, "cy@x.dk", "PC")), new=["PC"], day=1)
    old.save_consents(consents((EMAIL, "cy@x.dk", "profiling", "granted", T0)))
    old.close()

    store = store_backend.open()
    assert store.schema_version() == len(MIGRATIONS)
    assert sorted(store.load_identifiers()["profile_id"]) == ["PA", "PC"]
    assert len(store.load_consents()) == 1
    assert store.erase_subject("PA", "DSAR-1", T0 + DAY)["cache_entries_deleted"] == 0
    assert store.load_erasures()["cache_entries_deleted"].tolist() == [0]
    assert store.load_identifiers()["profile_id"].tolist() == ["PC"]
    assert store.cache_stats().empty
    assert store.save_cache(entries(("acme", *CY, "no_match", None)), run_id=_in_run(store, "r3"))
    assert list(loaded(store)) == [key(CY)]


# saving and loading


def test_entries_round_trip_with_canonical_signals(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    cest = timezone(timedelta(hours=2))
    batch = pd.concat(
        [
            entries(("acme", *ANN, "matched", MATCHED), ("acme", *BO, "no_match", "[]")),
            entries(
                ("acme", CID, "crm:7", "no_match", None),
                fetched_at=datetime(2026, 11, 1, 5, tzinfo=cest),
            ),
        ],
        ignore_index=True,
    )
    assert store.save_cache(batch, run_id=_in_run(store)) == 3

    frame = store.load_cache("acme", PARAMS, now=T0)
    assert list(frame.columns) == list(CACHE_COLUMNS)
    assert str(frame["fetched_at"].dtype) == "datetime64[us, UTC]"
    assert str(frame["expires_at"].dtype) == "datetime64[us, UTC]"
    by_key = frame.set_index("pseudonym")
    ann = by_key.loc[pseudonym(*ANN)]
    assert ann["signals"] == (
        '[{"topic":"interest.sports.running","confidence":0.82,'
        '"observed_at":"2026-10-31T02:00:00.000000Z","kind":"inferred","raw_score":"0.8"},'
        '{"topic":"life_stage.parent","confidence":0.4,'
        '"observed_at":"2026-10-31T02:00:00.000000Z","kind":"inferred","raw_score":null}]'
    )
    assert (ann["status"], ann["kind"], ann["key_id"]) == ("matched", "email", KEY.key_id)
    assert ann["fetched_at"] == T0
    assert ann["expires_at"] == T0 + 30 * DAY
    crm = by_key.loc[pseudonym(CID, "crm:7")]
    assert crm["fetched_at"] == datetime(2026, 11, 1, 3, tzinfo=UTC)  # stored in UTC
    assert set(by_key.drop(index=pseudonym(*ANN))["signals"]) == {"[]"}
    assert store.save_cache(entries(), run_id="r1") == 0
    assert store.save_cache(pd.DataFrame(), run_id="r1") == 0


def test_loads_are_per_provider_and_request_parameters(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    run = _in_run(store)
    store.save_cache(
        entries(("acme", *ANN, "matched", MATCHED), ("gravatar", *ANN, "no_match", None)),
        run_id=run,
    )
    store.save_cache(entries(("acme", *BO, "no_match", None), params=OTHER_PARAMS), run_id=run)
    assert list(loaded(store)) == [key(ANN)]
    assert loaded(store, "gravatar") == {key(ANN): ("no_match", [])}
    assert list(loaded(store, params=OTHER_PARAMS)) == [key(BO)]
    assert loaded(store, "nobody") == {}
    empty = store.load_cache("nobody", PARAMS, now=T0)
    assert list(empty.columns) == list(CACHE_COLUMNS)


def test_a_newer_fetch_replaces_an_entry_and_an_older_one_does_not(
    store_backend: StoreBackend,
) -> None:
    store = store_backend.open()
    run = _in_run(store)
    first = entries(("acme", *ANN, "matched", MATCHED), ("acme", *BO, "no_match", None))
    assert store.save_cache(first, run_id=run) == 2

    later = T0 + 10 * DAY
    refreshed = entries(
        ("acme", *ANN, "no_match", None),  # the provider forgot them
        ("acme", *CY, "matched", [signal("interest.travel", 0.6)]),  # new
        fetched_at=later,
    )
    assert store.save_cache(refreshed, run_id=_in_run(store, "r2", 10)) == 2
    stale = entries(
        ("acme", *ANN, "matched", MATCHED), ("acme", *BO, "matched", MATCHED), fetched_at=T0 - DAY
    )
    assert store.save_cache(stale, run_id="r2") == 0  # both stored ones are newer

    now = later
    assert loaded(store, now=now) == {
        key(ANN): ("no_match", []),
        key(BO): ("no_match", []),
        key(CY): (
            "matched",
            [
                json.loads(json.dumps(signal("interest.travel", 0.6)))
                | {"observed_at": "2026-10-31T02:00:00.000000Z"}
            ],
        ),
    }
    frame = store.load_cache("acme", PARAMS, now=now).set_index("pseudonym")
    assert frame.loc[pseudonym(*ANN), "fetched_at"] == later
    assert frame.loc[pseudonym(*ANN), "expires_at"] == later + 30 * DAY
    with raw(store_backend) as conn:
        runs: dict[str, str] = dict(
            conn.execute(text("SELECT pseudonym, run_id FROM provider_cache")).all()
        )
    assert runs == {pseudonym(*ANN): "r2", pseudonym(*BO): "r1", pseudonym(*CY): "r2"}


def test_entries_expire_and_purge_deletes_them(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    run = _in_run(store)
    store.save_cache(entries(("acme", *ANN, "matched", MATCHED)), run_id=run)
    store.save_cache(entries(("acme", *BO, "no_match", None), ttl=7 * DAY), run_id=run)
    store.save_cache(entries(("gravatar", *CY, "no_match", None), ttl=timedelta(0)), run_id=run)

    assert list(loaded(store, now=T0 + 7 * DAY - timedelta(microseconds=1))) == [
        key(ANN),
        key(BO),
    ] or set(loaded(store, now=T0 + 7 * DAY - timedelta(microseconds=1))) == {key(ANN), key(BO)}
    assert set(loaded(store, now=T0 + 7 * DAY)) == {key(ANN)}  # expires_at is exclusive
    assert loaded(store, "gravatar", now=T0) == {}  # a zero TTL is never reused

    stats = store.cache_stats()
    assert stats["entries"].tolist() == [2, 1]  # expired entries count until purged
    assert store.purge_cache(now=T0 + 7 * DAY) == 2
    assert store.cache_stats()["provider"].tolist() == ["acme"]
    assert store.purge_cache(now=T0 + 7 * DAY) == 0
    assert set(loaded(store, now=T0 + 7 * DAY)) == {key(ANN)}
    assert store.purge_cache(now=T0 + 365 * DAY) == 1
    assert store.cache_stats().empty


def test_cache_stats_count_per_provider(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    empty = store.cache_stats()
    assert list(empty.columns) == list(CACHE_STATS_COLUMNS)
    run = _in_run(store)
    store.save_cache(
        entries(
            ("acme", *ANN, "matched", MATCHED),
            ("acme", *BO, "no_match", None),
            ("gravatar", *ANN, "matched", "[]"),
        ),
        run_id=run,
    )
    store.save_cache(
        entries(("acme", *CY, "matched", MATCHED), params=OTHER_PARAMS, fetched_at=T0 + DAY),
        run_id=run,
    )
    stats = store.cache_stats()
    assert list(stats.columns) == list(CACHE_STATS_COLUMNS)
    assert stats.to_dict("records") == [
        {
            "provider": "acme",
            "entries": 3,
            "matched": 2,
            "no_match": 1,
            "oldest": T0,
            "newest": T0 + DAY,
        },
        {
            "provider": "gravatar",
            "entries": 1,
            "matched": 1,
            "no_match": 0,
            "oldest": T0,
            "newest": T0,
        },
    ]
    assert str(stats["oldest"].dtype) == "datetime64[us, UTC]"
    assert str(stats["entries"].dtype) == "int64"


def test_saving_needs_a_running_run(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    batch = entries(("acme", *ANN, "no_match", None))
    with pytest.raises(StoreError, match="not in the run ledger"):
        store.save_cache(batch, run_id="r1")
    store.start_run("r1", "cfg", T0)
    store.finish_run("r1", "failed", {}, T0)
    with pytest.raises(StoreError, match="already finished"):
        store.save_cache(batch, run_id="r1")
    with pytest.raises(ValueError, match="run_id"):
        store.save_cache(batch, run_id="ann@example.com")
    assert store.cache_stats().empty


# erasure


def test_erasing_a_subject_deletes_their_cache_entries(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    # PA absorbed PB, so ann's email and bo's phone are one person's; cy is someone else
    night(
        store, "r1", ids=identifiers((*ANN, "PA"), (*BO, "PB"), (*CY, "PC")), new=["PA", "PB", "PC"]
    )
    night(
        store,
        "r2",
        ids=identifiers((*BO, "PA")),
        merged=[("PB", "PA")],
        events=events(("merge", "PB", "PA", {"identifiers": 1})),
        day=1,
    )
    run = _in_run(store, "r3", 2)
    store.save_cache(
        entries(
            ("acme", *ANN, "matched", MATCHED),
            ("acme", *BO, "no_match", None),
            ("acme", *CY, "matched", MATCHED),
            ("gravatar", *ANN, "no_match", None),
        ),
        run_id=run,
    )
    store.save_cache(entries(("acme", *ANN, "no_match", None), params=OTHER_PARAMS), run_id=run)
    # an entry for ann's address under another key id is another identifier: it stays
    other_key = entries(("acme", *ANN, "no_match", None)).assign(key_id="k-old")
    store.save_cache(other_key, run_id=run)

    counts = store.erase_subject("PA", "DSAR-11", T0 + 3 * DAY)

    assert counts["cache_entries_deleted"] == 4
    assert store.load_erasures()["cache_entries_deleted"].tolist() == [4]
    assert list(counts) == list(ERASURE_COUNTS)
    assert set(loaded(store)) == {key(CY)} | {key(ANN)}  # the k-old entry
    assert store.load_cache("acme", PARAMS, now=T0)["key_id"].tolist().count(KEY.key_id) == 1
    assert loaded(store, "gravatar") == {}
    assert loaded(store, params=OTHER_PARAMS) == {}
    # a later save cannot bring their entries back
    again = entries(
        ("acme", *ANN, "matched", MATCHED), ("acme", *CY, "no_match", None), fetched_at=T0 + 4 * DAY
    )
    assert store.save_cache(again, run_id=run) == 1
    assert store.cache_stats()["entries"].sum() == 2


def test_an_erasure_entry_deletes_cache_entries_and_an_objection_does_not(
    store_backend: StoreBackend,
) -> None:
    store = store_backend.open()
    run = _in_run(store)
    store.save_cache(
        entries(
            ("acme", *ANN, "matched", MATCHED),
            ("acme", *BO, "no_match", None),
            ("acme", *CY, "no_match", None),
        ),
        run_id=run,
    )
    assert store.record_objection(subjects(CY), "objection_profiling", "DSAR-2", T0) == 1
    assert store.record_objection(subjects(ANN, BO), "erasure", "DSAR-3", T0) == 2
    assert set(loaded(store)) == {key(CY)}
    assert store.save_cache(entries(("gravatar", *BO, "no_match", None)), run_id=run) == 0
    assert store.cache_stats()["provider"].tolist() == ["acme"]


# contract violations: ValueError, nothing written, no value in the message

RAW_VALUES = ("ann@example.com", "4512345678", "example.com")


def _assert_refused(store: StateStore, batch: pd.DataFrame, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        store.save_cache(batch, run_id="r1")
    for value in RAW_VALUES:
        assert value not in str(info.value)
    assert store.cache_stats().empty


def _with(batch: pd.DataFrame, column: str, value: object) -> pd.DataFrame:
    """`batch` with the second row's `column` set to `value` (timestamps stay timestamps)."""
    values = batch[column].tolist()
    values[1] = value
    keep = (
        isinstance(batch[column].dtype, pd.DatetimeTZDtype)
        and isinstance(value, datetime)
        and value.tzinfo
    )
    changed = batch.copy()
    changed[column] = pd.Series(values, dtype=batch[column].dtype if keep else object)
    return changed


GOOD = (("acme", *ANN, "matched", MATCHED), ("acme", *CY, "matched", MATCHED))


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        pytest.param(
            "pseudonym", "ann@example.com", r"cache\.pseudonym must be 64.*\(1 row", id="raw-email"
        ),
        pytest.param("pseudonym", "+4512345678", "pseudonym must be 64", id="raw-phone"),
        pytest.param(
            "params_hash", "ann@example.com", r"params_hash must be lower-case hex", id="params"
        ),
        pytest.param(
            "params_hash", "AB" * 32, r"params_hash must be lower-case hex", id="params-case"
        ),
        pytest.param("provider", "ann@example.com", "provider must be", id="provider"),
        pytest.param("key_id", None, "key_id must not be missing", id="no-key-id"),
        pytest.param("kind", "address", "kind must be one of", id="kind"),
        pytest.param("status", "failed", "status must be one of matched, no_match", id="failed"),
        pytest.param("status", "skipped_cached", "status must be one of", id="skipped"),
        pytest.param("fetched_at", datetime(2026, 11, 1), "timezone-aware", id="naive-time"),
        pytest.param("expires_at", None, "expires_at must", id="no-expiry"),
        pytest.param(
            "expires_at",
            T0 - DAY,
            r"expires_at must not precede fetched_at \(1 row",
            id="expired-before",
        ),
    ],
)
def test_save_cache_rejects_malformed_entries(
    store_backend: StoreBackend, column: str, value: object, message: str
) -> None:
    store = store_backend.open()
    _in_run(store)
    _assert_refused(store, _with(entries(*GOOD), column, value), message)


SIGNALS_MUST_BE = "signals must be JSON lists of objects with only the keys"


@pytest.mark.parametrize(
    ("signals", "message"),
    [
        pytest.param(
            [signal("interest.x", 0.5, email="ann@example.com")], SIGNALS_MUST_BE, id="extra-key"
        ),
        pytest.param(
            '[{"topic":"a.b","topic":"ann@example.com","confidence":0.5,'
            '"observed_at":"2026-01-01T00:00:00Z","kind":"inferred"}]',
            SIGNALS_MUST_BE,
            id="repeated-key",
        ),
        pytest.param(
            [signal("ann@example.com", 0.5)], "topic must be a taxonomy dot key", id="topic-address"
        ),
        pytest.param(
            [signal("Interest.Sports", 0.5)], "topic must be a taxonomy dot key", id="topic-case"
        ),
        pytest.param([signal("interest." + "x" * 130, 0.5)], "at most 128", id="topic-long"),
        pytest.param(
            [signal("interest.x", 1.0)], "confidence must be a number strictly", id="confidence-1"
        ),
        pytest.param(
            [signal("interest.x", 0.0)], "confidence must be a number strictly", id="confidence-0"
        ),
        pytest.param([signal("interest.x", -0.2)], "confidence must be", id="confidence-negative"),
        pytest.param(
            [signal("interest.x", float("nan"))], "confidence must be", id="confidence-nan"
        ),
        pytest.param(
            [{**signal("interest.x", 0.5), "confidence": "0.5"}],
            SIGNALS_MUST_BE,
            id="confidence-text",
        ),
        pytest.param(
            [{**signal("interest.x", 0.5), "confidence": True}],
            SIGNALS_MUST_BE,
            id="confidence-bool",
        ),
        pytest.param(
            [{k: v for k, v in signal("interest.x", 0.5).items() if k != "confidence"}],
            "confidence must be",
            id="no-confidence",
        ),
        pytest.param(
            [signal("interest.x", 0.5) | {"observed_at": "2026-10-31T03:00:00"}],
            "observed_at must be an ISO 8601 time with a zone",
            id="naive",
        ),
        pytest.param(
            [signal("interest.x", 0.5) | {"observed_at": "2026-13-31T03:00:00Z"}],
            "observed_at must be a valid",
            id="month-13",
        ),
        pytest.param(
            [signal("interest.x", 0.5) | {"observed_at": 1730000000}], SIGNALS_MUST_BE, id="epoch"
        ),
        pytest.param(
            [signal("interest.x", 0.5) | {"kind": "guessed"}],
            "kind must be one of declared, observed, inferred",
            id="kind",
        ),
        pytest.param(
            [signal("interest.x", 0.5, "+4512345678")], "raw_score must be", id="score-phone"
        ),
        pytest.param(
            [signal("interest.x", 0.5, "4512345678")], "raw_score must be", id="score-digits"
        ),
        pytest.param(
            [signal("interest.x", 0.5, "ann@example.com")], "raw_score must be", id="score-address"
        ),
        pytest.param([signal("interest.x", 0.5, "Ann Lee")], "raw_score must be", id="score-name"),
        pytest.param(
            [{**signal("interest.x", 0.5), "raw_score": 0.7}], SIGNALS_MUST_BE, id="score-number"
        ),
        pytest.param(
            [{**signal("interest.x", 0.5), "topic": {"x": 1}}], SIGNALS_MUST_BE, id="nested"
        ),
        pytest.param([None], "each signal must be an object", id="null-signal"),
        pytest.param("null", "must be a JSON list, not null", id="null"),
        pytest.param('{"topic":"interest.x"}', SIGNALS_MUST_BE, id="object"),
        pytest.param("ann@example.com", SIGNALS_MUST_BE, id="not-json"),
        pytest.param('[]}{"cached":[]', SIGNALS_MUST_BE, id="two-lines-in-one"),
    ],
)
def test_save_cache_rejects_signals_that_are_not_topics_and_scores(
    store_backend: StoreBackend, signals: object, message: str
) -> None:
    store = store_backend.open()
    _in_run(store)
    _assert_refused(
        store, entries(*GOOD[:1], ("acme", *CY, "matched", signals)), message + r".*\(1 row"
    )


def test_save_cache_rejects_repeats_objects_and_contradictions(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    _in_run(store)
    twice = entries(*GOOD, GOOD[0])
    _assert_refused(
        store, twice, r"duplicate provider, params_hash, pseudonym, kind, key_id \(1 row"
    )
    as_objects = entries(*GOOD).assign(signals=pd.Series([MATCHED, "[]"], dtype=object))
    _assert_refused(store, as_objects, r"signals must be JSON text \(1 row")
    no_match_with_signals = entries(("acme", *ANN, "no_match", MATCHED))
    _assert_refused(store, no_match_with_signals, r"signals must be empty for a no_match \(1 row")
    with pytest.raises(ValueError, match="missing column"):
        store.save_cache(entries(*GOOD).drop(columns="expires_at"), run_id="r1")


def test_load_cache_checks_its_arguments(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    with pytest.raises(ValueError, match="provider must be"):
        store.load_cache("ann@example.com", PARAMS, now=T0)
    with pytest.raises(ValueError, match="params_hash must be lower-case hex") as info:
        store.load_cache("acme", "ann@example.com", now=T0)
    assert "example.com" not in str(info.value)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.load_cache("acme", PARAMS, now=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        store.purge_cache(now=datetime(2026, 1, 1))


_PII = re.compile(r"@|\+\d")


def test_the_cache_holds_no_raw_values(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    offset = timezone(timedelta(hours=5, minutes=30))
    spiced = [
        signal("interest.sports", 0.5, "87%")
        | {"observed_at": datetime(2026, 10, 1, tzinfo=offset).isoformat()},
        signal("interest.travel", 1e-05, "high"),
        signal("interest.food", 0.999999, "-3.5"),
    ]
    store.save_cache(
        entries(
            ("acme", *ANN, "matched", spiced),
            ("acme", *BO, "no_match", None),
            ("acme", *CY, "matched", MATCHED),
        ),
        run_id=_in_run(store),
    )
    with raw(store_backend) as conn:
        rows = conn.execute(text("SELECT * FROM provider_cache")).all()
    assert len(rows) == 3
    # PostgreSQL hands back times as datetimes whose text has a "+00:00"; they hold no PII
    values = [str(v) for row in rows for v in row if not isinstance(v, datetime | None)]
    assert len(values) >= 3 * 7
    for value in values:
        assert not _PII.search(value), value
        assert not any(r in value for r in RAW_VALUES)
    stored = json.loads(
        loaded(store)[key(ANN)][1].__repr__().replace("'", '"').replace("None", "null")
    )
    assert [s["observed_at"] for s in stored] == [
        "2026-09-30T18:30:00.000000Z",
        "2026-10-31T02:00:00.000000Z",
        "2026-10-31T02:00:00.000000Z",
    ]
    assert [s["confidence"] for s in stored] == [0.5, 1e-05, 0.999999]


# any sequence of saves and purges matches a dict


def _random_batch(
    rng: random.Random, people: Sequence[tuple[IdentifierKind, str]], day: int
) -> pd.DataFrame:
    rows = []
    for provider in ("acme", "gravatar"):
        for person in rng.sample(list(people), k=rng.randint(0, len(people))):
            status = rng.choice(["matched", "no_match"])
            found = (
                [signal("interest.x", round(rng.uniform(0.01, 0.99), 2))]
                if status == "matched"
                else None
            )
            fetched = T0 + timedelta(days=day + rng.randint(-3, 0))
            rows.append(
                entries(
                    (provider, *person, status, found),
                    fetched_at=fetched,
                    ttl=timedelta(days=rng.randint(0, 4)),
                )
            )
    return pd.concat(rows, ignore_index=True) if rows else entries()


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_any_sequence_of_saves_and_purges_matches_a_simple_model(
    store_backend: StoreBackend, seed: int
) -> None:
    rng = random.Random(seed)
    people = [(EMAIL, f"p{i}@x.dk") for i in range(6)]
    model: dict[tuple[str, str], tuple[datetime, datetime, str]] = {}
    with fresh_store(store_backend) as store:
        for day in range(1, 6):
            run = _in_run(store, f"r{day}", day)
            batch = _random_batch(rng, people, day)
            stored = 0
            for provider, pseud, fetched, expires, status in zip(
                batch["provider"],
                batch["pseudonym"],
                batch["fetched_at"],
                batch["expires_at"],
                batch["status"],
                strict=True,
            ):
                k = (str(provider), str(pseud))
                if k not in model or model[k][0] <= fetched:
                    model[k] = (fetched, expires, str(status))
                    stored += 1
            assert store.save_cache(batch, run_id=run) == stored
            now = T0 + timedelta(days=day)
            if rng.random() < 0.5:
                gone = [k for k, v in model.items() if v[1] <= now]
                assert store.purge_cache(now=now) == len(gone)
                for k in gone:
                    del model[k]
            for provider in ("acme", "gravatar"):
                frame = store.load_cache(provider, PARAMS, now=now)
                got = {
                    (provider, r.pseudonym): (r.fetched_at, r.expires_at, r.status)
                    for r in frame.itertuples(index=False)
                }
                want = {k: v for k, v in model.items() if k[0] == provider and v[1] > now}
                assert got == want
