"""End to end: the nightly flow enriches through the real local provider server.

The synthetic shop is configured as `enrich synth --provider-url` configures the demo: three
simulated providers (single lookups, batch lookups, a Gravatar-shaped API) on a server that
answers from the synthetic world. Each night is checked from the outside: the run summary
accounts for every lookup, the server's received log holds no identifier of anyone gate A
denied, a second night on unchanged data makes no calls, and a night of 30 % errors and a
429 storm still ends green with every lookup accounted for.
"""

from __future__ import annotations

import gc
import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from enrichers.base import SIGNAL_COLUMNS
from enrichers.testing import NAMES, provider_entries
from enrichers.testing.server import ProviderServer
from flows.enrich import _cached_signals, _progress, _run_frozen, _signals_json
from policy.audit import ChainedDecisionLog
from profiles.config import load_run_config
from profiles.hashing import Keyring, Pseudonymiser
from profiles.identifiers import check_email
from profiles.store import StateStore
from profiles.synth import generate
from profiles.types import CanonicalField, IdentifierKind
from tests.flows.test_nightly import Run, _haystacks, _init_keys, _needles, _run, raw_source

PROVIDERS = sorted(NAMES.values())
EPOCH = datetime(2026, 11, 1, tzinfo=UTC)
OUTCOMES = ("matched", "no_match", "skipped_cached")


@dataclass
class Shop:
    work: Path
    server: ProviderServer


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    work = tmp_path_factory.mktemp("enrich")
    generate(people=300, out_dir=work, seed=5)
    _init_keys(work)
    with ProviderServer(world=work / "data" / "world.jsonl", knobs={"latency_ms": 2}) as server:
        # as `enrich synth --provider-url` writes it, with short backoffs: the fault night
        # must not take minutes
        fast = {"backoff_seconds": 0.01, "max_backoff_seconds": 2.0}
        section = {"enrichment": {"providers": provider_entries(server.base_url, overrides=fast)}}
        with (work / "enrich.yaml").open("a", encoding="utf-8") as fh:
            fh.write(yaml.safe_dump(section, sort_keys=False))
        yield Shop(work, server)


@dataclass
class Night:
    run: Run
    summary: dict[str, Any]
    received: pd.DataFrame


def _night(shop: Shop, **knobs: Any) -> Night:
    shop.server.reset()
    if knobs:
        shop.server.set_knobs(**knobs)
    try:
        run = _run(shop.work)
    finally:
        shop.server.set_knobs(error_rate=0.0, storm_requests=0, storm_seconds=0.0)
    summary = json.loads((run.run_dir / "run_summary.json").read_text(encoding="utf-8"))
    return Night(run, summary, shop.server.received())


@pytest.fixture(scope="module")
def nights(shop: Shop) -> tuple[Night, Night, Night, Night]:
    first = _night(shop)
    second = _night(shop)
    # a night later: the cache of failed lookups is empty, so expire the rest to look up again
    with StateStore.open(f"sqlite:///{shop.work / 'state' / 'state.db'}") as store:
        purged = store.purge_cache(now=pd.Timestamp("2100-01-01", tz="UTC").to_pydatetime())
    assert purged > 0
    stormy = _night(shop, error_rate=0.3, storm_requests=60, storm_retry_after=0.05)
    after = _night(shop)
    return first, second, stormy, after


def _accounted(provider: dict[str, Any]) -> int:
    return int(
        sum(provider[k] for k in OUTCOMES)
        + sum(provider["skipped_policy"].values())
        + sum(provider["failed"].values())
    )


def test_first_night_enriches_and_accounts_for_every_lookup(
    nights: tuple[Night, ...],
) -> None:
    first = nights[0]
    enrichment = first.summary["enrichment"]
    assert sorted(enrichment) == PROVIDERS
    profiles = first.summary["identity"]["profiles"]
    for name, provider in enrichment.items():
        assert provider["subjects"] == profiles, name
        assert _accounted(provider) == profiles, name
        assert provider["matched"] > 0, name
        assert provider["client"]["calls"] > 0, name
        assert provider["skipped_policy"]["gate_a_denied"] > 0, name  # the default policy bites
    signals = pd.read_parquet(first.run.run_dir / "signals.parquet")
    assert set(signals["provider"]) == {*PROVIDERS, "behaviour", "declared"}
    signals = signals[signals["provider"].isin(PROVIDERS)]
    assert signals["topic"].str.startswith("interest.").all()
    assert signals["confidence"].between(0, 1, inclusive="neither").all()
    assert set(signals["profile_id"]) <= set(first.run.profiles()["profile_id"])
    assert first.summary["enrichment"]["sim_segments"]["client"]["calls"] < profiles / 10


def _sha256_by_pseudonym(work: Path) -> dict[str, str]:
    """Every email in the sources: its pseudonym and the SHA-256 the providers are sent."""
    config = load_run_config(work / "enrich.yaml")
    key = Keyring.load(work / "state" / "keys.json").active_key("pseudonym")
    pseudonymiser = Pseudonymiser(key)
    out: dict[str, str] = {}
    for source in config.sources:
        column = source.columns.get(CanonicalField.EMAIL)
        if column is None:
            continue
        for raw in raw_source(source)[column]:
            value, _ = check_email(raw, config.identifiers)
            if value is not None:
                digest = pseudonymiser.digest(IdentifierKind.EMAIL, value)
                out[digest] = hashlib.sha256(value.encode()).hexdigest()
    return out


def _gate_a(work: Path, run: Run, provider: str) -> pd.DataFrame:
    """This run's gate A decisions for `provider`: subject, decision."""
    config = load_run_config(work / "enrich.yaml")
    log = ChainedDecisionLog(config.decision_log_dir)
    entries = pd.DataFrame([e for e in log.entries() if e["run_id"] == run.run_dir.name])
    entries = entries[
        (entries["gate"] == "A") & entries["context"].str.endswith(f";provider={provider}")
    ]
    return entries[["subject", "decision"]]


def test_nobody_denied_at_gate_a_reaches_the_server(shop: Shop, nights: tuple[Night, ...]) -> None:
    first = nights[0]
    hashes = _sha256_by_pseudonym(shop.work)
    with StateStore.open(f"sqlite:///{shop.work / 'state' / 'state.db'}") as store:
        identifiers = store.load_identifiers()
    emails = identifiers[identifiers["kind"] == "email"]
    received = set(first.received["value"])
    for provider in PROVIDERS:
        decisions = _gate_a(shop.work, first.run, provider)
        assert len(decisions) == first.summary["identity"]["profiles"]
        denied = set(decisions.loc[decisions["decision"] == "deny", "subject"])
        allowed = set(decisions["subject"]) - denied
        assert denied
        assert allowed
        denied_hashes = {
            hashes[p] for p in emails.loc[emails["profile_id"].isin(denied), "pseudonym"]
        }
        allowed_hashes = {
            hashes[p] for p in emails.loc[emails["profile_id"].isin(allowed), "pseudonym"]
        }
        assert denied_hashes
        assert not denied_hashes & received, provider
        assert allowed_hashes & received, provider  # the check can see what was sent
    # only hashed emails left: the default policy allows no raw email and no phone number
    assert set(first.received["form"]) <= {"email_sha256", "phone_sha256"}


def test_second_night_on_unchanged_data_makes_no_calls(nights: tuple[Night, ...]) -> None:
    first, second = nights[0], nights[1]
    assert second.received.empty
    for name, provider in second.summary["enrichment"].items():
        assert provider["client"]["calls"] == 0, name
        assert (
            provider["skipped_cached"]
            == first.summary["enrichment"][name]["matched"]
            + (first.summary["enrichment"][name]["no_match"])
        )
        assert _accounted(provider) == provider["subjects"]
    before = pd.read_parquet(first.run.run_dir / "signals.parquet").query("provider != 'behaviour'")
    again = pd.read_parquet(second.run.run_dir / "signals.parquet").query("provider != 'behaviour'")
    key = ["profile_id", "provider", "topic"]
    assert (
        again.sort_values(key)[[*key, "confidence"]]
        .reset_index(drop=True)
        .equals(before.sort_values(key)[[*key, "confidence"]].reset_index(drop=True))
    )


def test_errors_and_a_429_storm_end_green_with_every_lookup_accounted(
    nights: tuple[Night, ...],
) -> None:
    stormy, after = nights[2], nights[3]
    assert stormy.run.run_dir.is_dir()  # the run succeeded and was published
    totals = {"retries": 0, "throttled": 0, "failed": 0}
    for name, provider in stormy.summary["enrichment"].items():
        assert _accounted(provider) == provider["subjects"], name
        totals["retries"] += provider["client"]["retries"]
        totals["throttled"] += provider["client"]["throttled"]
        totals["failed"] += sum(provider["failed"].values())
    assert totals["retries"] > 0
    assert totals["throttled"] > 0
    # the night after looks up only what failed (answers were cached) and fails nothing new
    for name, provider in after.summary["enrichment"].items():
        failed_before = sum(stormy.summary["enrichment"][name]["failed"].values())
        assert provider["matched"] + provider["no_match"] == failed_before, name
        assert sum(provider["failed"].values()) == 0, name


def test_no_raw_identifier_in_outputs_logs_or_the_cache(
    shop: Shop, nights: tuple[Night, ...]
) -> None:
    needles = _needles(shop.work)
    for night in nights:
        for where, text in _haystacks(night.run):
            leaked = sorted(n for n in needles if n in text)
            assert not leaked, f"{len(leaked)} raw value(s) found in {where}"


def test_a_provider_that_is_down_does_not_fail_the_run(
    shop: Shop, tmp_path: Path, nights: tuple[Night, ...]
) -> None:
    work = tmp_path / "down"
    shutil.copytree(shop.work, work)
    config = work / "enrich.yaml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace(shop.server.base_url, "http://127.0.0.1:9"), encoding="utf-8")
    with StateStore.open(f"sqlite:///{work / 'state' / 'state.db'}") as store:
        store.purge_cache(now=pd.Timestamp("2100-01-01", tz="UTC").to_pydatetime())
    run = _run(work)
    summary = json.loads((run.run_dir / "run_summary.json").read_text(encoding="utf-8"))
    for name, provider in summary["enrichment"].items():
        assert _accounted(provider) == provider["subjects"], name
        assert provider["matched"] == 0
        assert sum(provider["failed"].values()) > 0
        reasons = set(provider["failed"])
        assert reasons <= {"connect_error", "circuit_open"}, reasons


# --- the stage's column-wise helpers ---------------------------------------------------------


def _signals_json_by_groups(signals: pd.DataFrame) -> dict[str, str]:
    """What `_signals_json` must give: json.dumps of each subject's items, group by group."""
    out: dict[str, str] = {}
    for subject, group in signals.groupby("subject", sort=False):
        items = [
            {
                "topic": str(topic),
                "confidence": float(confidence),
                "observed_at": pd.Timestamp(observed).isoformat(),
                "kind": str(kind),
                "raw_score": None if pd.isna(raw) else str(raw),
            }
            for topic, confidence, observed, kind, raw in zip(
                group["topic"],
                group["confidence"],
                group["observed_at"],
                group["kind"],
                group["raw_score"],
                strict=True,
            )
        ]
        out[str(subject)] = json.dumps(items, sort_keys=True)
    return out


_SIGNAL_ROWS = st.lists(
    st.tuples(
        st.sampled_from(["p1", "p2", "p3", "p10", 'p"4']),
        st.sampled_from(["interest.travel", "interest.books.fiction", "interest.x_y"]),
        st.floats(min_value=0.001, max_value=0.999),
        st.integers(min_value=0, max_value=400),
        st.sampled_from(["inferred", "declared"]),
        st.sampled_from([None, "0.5", "87", "high"]),
    ),
    max_size=40,
)


@given(rows=_SIGNAL_ROWS)
@settings(max_examples=60, deadline=None)
def test_signals_json_is_json_dumps_per_subject_and_reads_back(rows: list[tuple[Any, ...]]) -> None:
    signals = pd.DataFrame(
        {
            "subject": [r[0] for r in rows],
            "topic": [r[1] for r in rows],
            "confidence": pd.Series([r[2] for r in rows], dtype="float64"),
            "provider": "sim",
            "observed_at": pd.to_datetime(
                [EPOCH - timedelta(days=r[3], hours=r[3] % 7) for r in rows], utc=True
            ),
            "kind": [r[4] for r in rows],
            "raw_score": pd.Series([r[5] for r in rows], dtype=object),
        },
        columns=list(SIGNAL_COLUMNS),
    )
    texts = _signals_json(signals)
    assert texts.to_dict() == _signals_json_by_groups(signals)
    cached = pd.DataFrame({"subject": texts.index, "signals": texts.to_numpy()})
    back = _cached_signals(cached, "sim")
    assert list(back.columns) == list(SIGNAL_COLUMNS)
    expected = signals.iloc[np.argsort(pd.factorize(signals["subject"])[0], kind="stable")]
    assert back["subject"].tolist() == expected["subject"].tolist()
    assert back["topic"].tolist() == expected["topic"].tolist()
    assert back["confidence"].tolist() == expected["confidence"].tolist()
    assert back["observed_at"].tolist() == expected["observed_at"].tolist()
    assert [None if pd.isna(r) else r for r in back["raw_score"]] == [
        None if pd.isna(r) else r for r in expected["raw_score"]
    ]
    assert set(back["provider"]) <= {"sim"}


def test_cached_signals_of_answers_without_signals_is_empty() -> None:
    cached = pd.DataFrame({"subject": ["a", "b"], "signals": ["[]", ""]})
    assert _cached_signals(cached, "sim").empty
    assert _signals_json(_cached_signals(cached, "sim")).empty


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, *args: Any) -> None:
        self.lines.append(message % args)


@pytest.mark.parametrize(
    ("steps", "total", "expected"),
    [
        pytest.param(range(512, 7299, 512), 7299, 11, id="single-lookups"),
        pytest.param(range(100, 7299, 100), 7299, 11, id="batches"),
        pytest.param([5], 10, 2, id="few"),
    ],
)
def test_progress_is_logged_once_per_tenth_and_at_the_end(
    steps: Any, total: int, expected: int
) -> None:
    lines = _Lines()
    progress = _progress(lines, "sim")
    for done in [*steps, total]:
        progress(done, total)
    assert len(lines.lines) <= expected
    assert lines.lines[-1] == f"sim: {total:,} of {total:,} looked up"
    assert len(lines.lines) >= min(expected, 2)


def test_lookups_run_with_the_heap_frozen_and_it_thaws_after_them() -> None:
    async def frozen() -> int:
        return gc.get_freeze_count()

    async def fails() -> None:
        raise RuntimeError("lookup loop broke")

    before = gc.get_freeze_count()
    assert _run_frozen(frozen()) > before
    assert gc.get_freeze_count() == before
    with pytest.raises(RuntimeError, match="lookup loop broke"):
        _run_frozen(fails())
    assert gc.get_freeze_count() == before
