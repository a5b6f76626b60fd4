"""The same night on every runner gives the same outputs.

One synthetic shop, enriched through the real local provider server, is run three times from
the same starting state and keys: on threads, on a process pool and on a local Dask cluster of
two worker processes (`enrich run --runner dask-local --workers 2`). Chunks and profile
partitions are made small, so every partitioned stage (identify, policy, behaviour, fusion)
runs as several tasks. The profiles, identity links, quarantine, signals, personas, exports,
run summary and decision-log entries must be identical, apart from what names the run itself
(run id, times, sealed quarantine payloads, which use fresh nonces, hash chains over times).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from enrichers.testing import provider_entries
from enrichers.testing.server import ProviderServer
from flows.nightly import nightly_enrichment
from policy.audit import ChainedDecisionLog
from profiles.synth import generate
from tests.flows.test_nightly import _init_keys

_RUN_FIELDS = {"run_id", "started_at", "finished_at", "ts", "hash", "prev_hash"}


@dataclass(frozen=True)
class Outcome:
    """What one run left behind, with what names the run itself taken out."""

    run_dir: Path
    decisions: list[dict[str, Any]]

    def frame(self, name: str) -> pd.DataFrame:
        return pd.read_parquet(self.run_dir / name)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("runners") / "shop"
    generate(people=400, out_dir=work, seed=11)
    _init_keys(work)
    with ProviderServer(world=work / "data" / "world.jsonl", knobs={"latency_ms": 1}) as server:
        section = {"enrichment": {"providers": provider_entries(server.base_url)}}
        with (work / "enrich.yaml").open("a", encoding="utf-8") as fh:
            fh.write(yaml.safe_dump(section, sort_keys=False))
        yield work


def _night(shop: Path, where: Path, performance: dict[str, Any], **runner: Any) -> Outcome:
    """A copy of the shop (same data, keys and empty state), its performance section set,
    run once."""
    work = where / "shop"
    shutil.copytree(shop, work)
    config = work / "enrich.yaml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text + yaml.safe_dump({"performance": performance}), encoding="utf-8")
    run_dir = Path(nightly_enrichment(config_path=str(config), as_of="2026-11-01", **runner))
    entries = list(ChainedDecisionLog(work / "state" / "decisions").entries())
    for entry in entries:
        for name in _RUN_FIELDS & entry.keys():
            del entry[name]
    return Outcome(run_dir, entries)


@pytest.fixture(scope="module")
def outcomes(shop: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    small: dict[str, Any] = {"chunk_rows": 700, "partition_profiles": 150}
    runs: dict[str, dict[str, Any]] = {  # as `enrich run --runner ... --workers ...` passes them
        "threads": {"runner": "threads"},
        "processes": {"runner": "processes", "workers": 2},
        "dask-local": {"runner": "dask-local", "workers": 2},
    }
    return {
        name: _night(shop, tmp_path_factory.mktemp(name), small, **flags)
        for name, flags in runs.items()
    }


_CLOCK = ("latency_p50_ms", "latency_p99_ms", "rate_limit_wait_seconds")
"""Client figures measured by the wall clock: they differ from run to run by nature."""


def _summary(outcome: Outcome) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((outcome.run_dir / "run_summary.json").read_text())
    for name in ("run_id", "started_at", "finished_at", "duration_seconds", "timings"):
        del summary[name]
    for provider in summary["enrichment"].values():
        for name in _CLOCK:
            del provider["client"][name]
    return summary


def _files(run_dir: Path, folder: str) -> dict[str, bytes]:
    base = run_dir / folder
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*.csv"))}


@pytest.mark.parametrize("runner", ["processes", "dask-local"])
def test_outputs_do_not_depend_on_the_runner(outcomes: dict[str, Outcome], runner: str) -> None:
    reference, other = outcomes["threads"], outcomes[runner]
    for name in ("profiles.parquet", "identity_links.parquet", "signals.parquet"):
        pd.testing.assert_frame_equal(reference.frame(name), other.frame(name), obj=name)
    mine, theirs = (
        pd.read_csv(o.run_dir / "quarantine.csv", dtype=str).drop(columns="sealed")
        for o in (reference, other)
    )
    pd.testing.assert_frame_equal(mine, theirs, obj="quarantine.csv")
    assert len(mine) > 0  # the synthetic mess reaches the quarantine
    assert reference.decisions == other.decisions
    assert _files(reference.run_dir, "crm") == _files(other.run_dir, "crm")
    assert _files(reference.run_dir, "audiences") == _files(other.run_dir, "audiences")
    assert (reference.run_dir / "personas.json").read_text() == (
        other.run_dir / "personas.json"
    ).read_text()
    assert _summary(reference) == _summary(other)


def test_every_partitioned_stage_ran_as_several_tasks(outcomes: dict[str, Outcome]) -> None:
    summary = _summary(outcomes["threads"])
    assert summary["identity"]["profiles"] > 2 * 150  # several policy/fusion partitions
    assert summary["totals"]["rows_in"] > 3 * 700  # several chunks
    assert len(outcomes["threads"].decisions) > 6 * summary["identity"]["profiles"]
