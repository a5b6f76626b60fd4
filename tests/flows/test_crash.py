"""A run killed at any point, then simply run again, ends as if it had never been killed.

Each case copies one synthetic shop (data, keys, empty state; enriched through the real local
provider server), runs `enrich run` in a subprocess that sends itself SIGKILL at a named point
(`profiles.failpoints`: each stage boundary, and in the middle of identifying, logging
decisions, looking up and caching, sealing), then runs `enrich run` again, as an operator
would. The second run must resume the first: the same outputs as an uninterrupted run of the
shop (every data file, the quarantine, the exports, the personas, the summary's counts), a
decision log that verifies and holds each of the run's decisions exactly once, and no provider
lookup paid twice beyond what was in flight at the kill.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from prefect.client.orchestration import get_client

from enrichers.testing import provider_entries
from enrichers.testing.server import ProviderServer
from flows.audit import verify_log
from policy.audit import ChainedDecisionLog
from profiles.config import load_run_config
from profiles.failpoints import ENV, POINTS
from profiles.synth import generate
from tests.flows.test_nightly import _init_keys

ENRICH = str(Path(sys.executable).with_name("enrich"))
_RUN_FIELDS = {"ts", "hash", "prev_hash", "seq"}
_CLOCK = ("latency_p50_ms", "latency_p99_ms", "rate_limit_wait_seconds")


@dataclass(frozen=True)
class Shop:
    work: Path
    server: ProviderServer
    env: dict[str, str]


@contextmanager
def small_shop(folder: Path, **provider_settings: Any) -> Iterator[Shop]:
    """A 160-person shop in `folder` with its provider server running, small chunks and
    partitions (several tasks per stage), and the environment `enrich run` gets: the session's
    Prefect API, threads, the SQLite state, no failpoint. `provider_settings` go into every
    provider entry."""
    work = folder / "shop"
    generate(people=160, out_dir=work, seed=3)
    _init_keys(work)
    with ProviderServer(world=work / "data" / "world.jsonl") as server:
        providers = provider_entries(server.base_url, overrides=provider_settings or None)
        section = {"enrichment": {"providers": providers}}
        small = {"performance": {"chunk_rows": 400, "partition_profiles": 100}}
        with (work / "enrich.yaml").open("a", encoding="utf-8") as fh:
            fh.write(yaml.safe_dump({**section, **small}, sort_keys=False))
        with get_client(sync_client=True) as client:  # the session's Prefect API: no
            api = str(client.api_url)  # temporary server per `enrich run`
        env = {**os.environ, "PREFECT_API_URL": api, "ENRICH_RUNNER": "threads"}
        env.pop(ENV, None)
        env.pop("ENRICH_STATE_URL", None)
        yield Shop(work, server, env)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    with small_shop(tmp_path_factory.mktemp("crash")) as made:
        yield made


def _copy(shop: Shop, where: Path) -> Path:
    work = where / "shop"
    shutil.copytree(shop.work, work)
    return work


def _enrich_run(work: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ENRICH, "run", "--config", str(work / "enrich.yaml"), "--as-of", "2026-11-01"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@dataclass(frozen=True)
class Outcome:
    run_dir: Path
    decisions: list[dict[str, Any]]
    lookups: int
    """Identifiers the provider server received."""


def _outcome(work: Path, done: subprocess.CompletedProcess[str], lookups: int) -> Outcome:
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = Path(done.stdout.strip().splitlines()[-1])
    entries = list(ChainedDecisionLog(work / "state" / "decisions").entries())
    for entry in entries:
        for name in _RUN_FIELDS:
            del entry[name]
        del entry["run_id"]
    return Outcome(run_dir, entries, lookups)


@pytest.fixture(scope="module")
def uninterrupted(shop: Shop, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    work = _copy(shop, tmp_path_factory.mktemp("reference"))
    shop.server.reset()
    done = _enrich_run(work, shop.env)
    return _outcome(work, done, len(shop.server.received()))


def _summary(outcome: Outcome) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((outcome.run_dir / "run_summary.json").read_text())
    for name in ("run_id", "started_at", "finished_at", "duration_seconds", "timings"):
        del summary[name]
    for provider in summary["enrichment"].values():
        # the client's own telemetry counts the calls of the attempt that finished
        del provider["client"]
    return summary


def _files(run_dir: Path, folder: str) -> dict[str, bytes]:
    base = run_dir / folder
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*.csv"))}


def _same(reference: Outcome, resumed: Outcome) -> None:
    for name in ("profiles.parquet", "identity_links.parquet", "signals.parquet"):
        mine = pd.read_parquet(reference.run_dir / name)
        theirs = pd.read_parquet(resumed.run_dir / name)
        if name == "signals.parquet":  # answers cached by the killed attempt come back later
            order = ["profile_id", "provider", "topic"]
            mine = mine.sort_values(order, ignore_index=True)
            theirs = theirs.sort_values(order, ignore_index=True)
        pd.testing.assert_frame_equal(mine, theirs, obj=name)
    mine, theirs = (
        pd.read_csv(o.run_dir / "quarantine.csv", dtype=str).drop(columns="sealed")
        for o in (reference, resumed)
    )
    pd.testing.assert_frame_equal(mine, theirs, obj="quarantine.csv")
    assert _files(reference.run_dir, "crm") == _files(resumed.run_dir, "crm")
    assert _files(reference.run_dir, "audiences") == _files(resumed.run_dir, "audiences")
    for name in ("personas.json",):
        assert (reference.run_dir / name).read_text() == (resumed.run_dir / name).read_text()
    assert _summary(reference) == _summary(resumed)


def _as_multiset(entries: list[dict[str, Any]]) -> Counter[str]:
    return Counter(json.dumps(e, sort_keys=True) for e in entries if e["actor"] == "nightly")


KILL_POINTS = (
    "after:start",
    "identify:chunk#3",
    "after:identify",
    "consents:saved",
    "log:batch#2",
    "after:policy",
    "providers:lookups#3",
    "providers:cached",
    "after:providers",
    "after:fusion",
    "after:exports",
    "outputs:staged",
    "outputs:checkpoint",
    "identity:saved",
    "after:publish",
)


def test_every_named_point_is_walked_or_said_why_not() -> None:
    walked = {p.partition("#")[0] for p in KILL_POINTS}
    # behaviour and personas are pure computations between two walked boundaries
    assert set(POINTS) - walked == {"after:link profiles", "after:behaviour", "after:personas"}


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_run_killed_here_and_run_again_ends_as_if_never_killed(
    shop: Shop, uninterrupted: Outcome, tmp_path: Path, point: str
) -> None:
    work = _copy(shop, tmp_path)
    shop.server.reset()
    killed = _enrich_run(work, {**shop.env, ENV: point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = _outcome(work, _enrich_run(work, shop.env), len(shop.server.received()))
    _same(uninterrupted, resumed)
    # one run in the log, each of its decisions exactly once, the chain intact
    assert _as_multiset(resumed.decisions) == _as_multiset(uninterrupted.decisions)
    config = load_run_config(work / "enrich.yaml")
    report = verify_log(config.decision_log_dir, config.audit.public_keys)
    assert report.ok, report.problems
    # lookups answered before the kill were cached as they came: never paid twice, apart
    # from those in flight (at most one unsaved group per provider)
    assert resumed.lookups <= uninterrupted.lookups + 3 * 2_000
    if point.startswith(("after:", "outputs:", "identity:")) and point not in (
        "after:start",
        "after:identify",
        "after:policy",
    ):
        assert resumed.lookups == uninterrupted.lookups
    runs = [p for p in (work / "out").iterdir() if not p.name.startswith(".")]
    assert [p.name for p in runs] == [resumed.run_dir.name]  # one night, one folder
    assert not list((work / "out").glob(".*.partial"))


def test_a_changed_input_starts_a_new_run_and_fresh_never_resumes(
    shop: Shop, tmp_path: Path
) -> None:
    work = _copy(shop, tmp_path)
    killed = _enrich_run(work, {**shop.env, ENV: "after:policy"})
    assert killed.returncode == -signal.SIGKILL
    with (work / "data" / "newsletter.csv").open("ab") as fh:
        fh.write(b"\n")  # the file changed: another night, not the interrupted one
    again = _enrich_run(work, shop.env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "is not resumed: the inputs have changed since" in again.stderr
    killed = _enrich_run(work, {**shop.env, ENV: "after:identify"})
    assert killed.returncode == -signal.SIGKILL
    fresh = subprocess.run(
        [ENRICH, "run", "--config", str(work / "enrich.yaml"), "--as-of", "2026-11-01", "--fresh"],
        env=shop.env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "is not resumed: a fresh run was asked for" in fresh.stderr
    wrong = subprocess.run(
        [ENRICH, "run", "--config", str(work / "enrich.yaml"), "--resume", "20200101T000000Z-x"],
        env=shop.env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert wrong.returncode != 0
    assert "run 20200101T000000Z-x cannot be resumed" in wrong.stderr
