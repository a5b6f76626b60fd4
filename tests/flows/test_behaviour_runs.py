"""End to end: the nightly flow scores behaviour from the synthetic shop's order lines.

Checked from the outside: every profile allowed for profiling that bought something has the
score columns and nobody else has them, the summary carries segment sizes, Pareto figures,
the fitted BG/NBD and Gamma-Gamma parameters with their optimiser status and the hold-out
check, category interests are `observed` signals of the `behaviour` provider, and a run
`--as-of` a past date reproduces that night's scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from enrichers.behaviour.config import BehaviourSettings
from enrichers.behaviour.provider import score_columns
from flows.cli import app
from flows.summary import summary_markdown
from profiles.synth import generate
from tests.flows.test_nightly import Run, _init_keys, _run

COLUMNS = list(score_columns(BehaviourSettings()))
runner = CliRunner()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("behaviour")
    generate(people=1500, out_dir=work, seed=9)
    _init_keys(work)
    return work


@pytest.fixture(scope="module")
def night(shop: Path) -> Run:
    return _run(shop)


def _summary(folder: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((folder / "run_summary.json").read_text("utf-8"))
    return summary


def test_scores_for_every_profiled_buyer_and_nobody_else(night: Run) -> None:
    profiles = night.profiles()
    assert set(COLUMNS) <= set(profiles.columns)
    scored = profiles["rfm_segment"].notna()
    allowed = profiles["decision_profiling"] == "allow"
    assert scored.sum() > 100
    assert not (scored & ~allowed).any()  # gate B: no basis for profiling, no scores
    links = night.links()
    buyers = set(links.loc[links["source"] == "shop_orders", "profile_id"])
    assert set(profiles.loc[scored, "profile_id"]) <= buyers
    for column in COLUMNS:
        if column != "xyz":  # one-time buyers get no XYZ class
            assert profiles.loc[scored, column].notna().all(), column
    rows = profiles[scored]
    assert rows["rfm_r"].between(1, 5).all()
    assert rows["p_alive"].between(0, 1).all()
    assert (rows["churn_risk"] - (1 - rows["p_alive"])).abs().max() < 1e-12
    assert (rows["expected_purchases_365d"] >= 0).all()
    assert set(rows["abc"]) <= {"A", "B", "C"}


def test_summary_shows_segments_pareto_models_and_holdout(night: Run) -> None:
    behaviour = _summary(night.run_dir)["behaviour"]
    profiles = night.profiles()
    assert behaviour["customers"] == profiles["rfm_segment"].notna().sum()
    assert sum(behaviour["segments"].values()) == behaviour["customers"]
    assert sum(behaviour["abc"].values()) == behaviour["customers"]
    assert 0.2 < behaviour["pareto"]["top_20_share"] < 1
    assert behaviour["pareto"]["top_4_share"] < behaviour["pareto"]["top_20_share"]
    models = behaviour["models"]
    assert models["bgnbd"]["converged"] is True
    assert set(models["bgnbd"]["params"]) == {"r", "alpha", "a", "b"}
    assert set(models["gamma_gamma"]["params"]) == {"p", "q", "v"}
    assert models["holdout"]["n_customers"] > 0
    assert models["holdout"]["actual_total"] > 0
    assert behaviour["model"] == profiles["behaviour_model"].dropna().iloc[0]
    assert len(models["params_hash"]) == 64  # sha256 over both fits' parameters
    markdown = summary_markdown(_summary(night.run_dir))
    assert "| Champions |" in markdown
    assert "Pareto: the top 20 % of customers bring" in markdown
    assert "Hold-out check: predicted" in markdown
    assert "| bgnbd | r " in markdown


def test_category_interests_are_observed_signals_of_the_behaviour_provider(night: Run) -> None:
    signals = pd.read_parquet(night.run_dir / "signals.parquet")
    ours = signals[signals["provider"] == "behaviour"]
    assert len(ours) > 0
    assert set(ours["kind"]) == {"observed"}
    assert ours["topic"].str.startswith("interest.").all()
    assert ours["confidence"].between(0, 1, inclusive="neither").all()
    scored = night.profiles().loc[lambda p: p["rfm_segment"].notna(), "profile_id"]
    assert set(ours["profile_id"]) <= set(scored)


def test_a_past_night_is_reproduced_with_as_of(shop: Path, night: Run) -> None:
    def run(as_of: str) -> Path:
        result = runner.invoke(app, ["run", "-c", str(shop / "enrich.yaml"), "--as-of", as_of])
        assert result.exit_code == 0, result.output
        return Path(result.stdout.strip().splitlines()[-1])

    first, again = run("2026-06-30"), run("2026-06-30")
    a = pd.read_parquet(first / "profiles.parquet").set_index("profile_id")[COLUMNS]
    b = pd.read_parquet(again / "profiles.parquet").set_index("profile_id")[COLUMNS]
    pd.testing.assert_frame_equal(a.sort_index(), b.sort_index())
    summary = _summary(first)["behaviour"]
    assert summary["as_of"].startswith("2026-06-30T23:59:59")
    today = night.profiles().set_index("profile_id")
    assert a["rfm_segment"].notna().sum() < today["rfm_segment"].notna().sum()  # fewer buyers
    bad = runner.invoke(app, ["run", "-c", str(shop / "enrich.yaml"), "--as-of", "30/06/2026"])
    assert bad.exit_code == 2
    assert "as_of must be an ISO date" in bad.output
