"""Calibration of the merged interest confidence against every single source, on data whose
truth is known.

`enrich synth` invents people with true interests (data/world.jsonl). Every source sees them
through its own noise: the preference centre (15 % of answers are wrong or stale), purchases
(the categories people buy follow their affinities), and the local provider server's three
simulated providers (each matches a share of people, reports a share of their true topics
and some false ones, with its own calibration). This script runs the real nightly flow
(`enrich run`) against the local server, maps every profile to its person through
data/truth.csv, and scores, over every profile allowed for profiling x every topic the world
knows:

    prior only   the taxonomy's prior for every topic
    <source>     fusion of that source's signals alone (no signal: the prior)
    merged       fusion of all sources

each twice: with the shipped settings (taxonomy priors, weight 1, offset 0) and with settings
fitted on a training half of the profiles (topic priors = training base rates; per provider,
weight and offset by Platt scaling on its own signals), scored on the other half. Reported:
Brier score, expected calibration error (10 equal-width bins), log loss, and coverage (share
of profile x topic pairs with a signal). Target: merged has a lower Brier score than the best
single source. The fitted settings are printed as the `fusion:` section of enrich.yaml.

Run: `.venv/bin/python bench/fusion_quality.py [--people 5000]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import yaml
from rich.console import Console
from rich.table import Table
from scipy.optimize import minimize  # type: ignore[import-untyped]

from enrichers.testing.server import ProviderServer
from enrichers.testing.world import TOPICS
from profiles.fusion import FusionSettings, ProviderFusion, fuse, logit
from profiles.taxonomy import Taxonomy, load_taxonomy

AS_OF = "2026-11-01"
NOW = datetime(2026, 11, 1, 23, 59, 59, tzinfo=UTC)
Floats = npt.NDArray[np.float64]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _enrich(*args: str) -> None:
    exe = Path(sys.executable).with_name("enrich")
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    subprocess.run([str(exe), *args], check=True, capture_output=True, env=env)


def run_night(people: int, work: Path) -> Path:
    """Synthesise, run the nightly flow against the local provider server; the run folder."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    _enrich("synth", "--people", str(people), "--out", str(work), "--seed", "11",
            "--provider-url", url)  # fmt: skip
    _enrich("keys", "init", "--config", str(work / "enrich.yaml"))
    with ProviderServer(port=port, world=work / "data" / "world.jsonl"):
        _enrich("run", "--config", str(work / "enrich.yaml"), "--as-of", AS_OF)
    return max((work / "out").iterdir())


@dataclass(frozen=True)
class Universe:
    """Profiles allowed for profiling x world topics, with the truth and the signals."""

    pairs: pd.DataFrame
    """profile_id, topic, truth (0/1), train (bool)."""
    signals: pd.DataFrame
    """The stored signals of those profiles (profile_id + signal columns)."""


def universe(work: Path, run: Path) -> Universe:
    links = pd.read_parquet(
        run / "identity_links.parquet", columns=["profile_id", "source", "line"]
    )
    truth = pd.read_csv(work / "data" / "truth.csv", usecols=["source", "line", "person_id"])
    rows = links.merge(truth, on=["source", "line"], how="inner")
    person = (
        rows.groupby(["profile_id", "person_id"]).size().rename("n").reset_index()
        .sort_values(["profile_id", "n"], ascending=[True, False])
        .drop_duplicates("profile_id").set_index("profile_id")["person_id"]
    )  # fmt: skip
    profiles = pd.read_parquet(
        run / "profiles.parquet", columns=["profile_id", "decision_profiling"]
    )
    allowed = profiles.loc[profiles["decision_profiling"] == "allow", "profile_id"]
    allowed = allowed[allowed.isin(person.index)]
    world = {}
    for line in (work / "data" / "world.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        world[record["person_id"]] = set(record["interests"])
    pairs = pd.DataFrame(
        {
            "profile_id": np.repeat(allowed.to_numpy(), len(TOPICS)),
            "topic": np.tile(np.array(TOPICS, dtype=object), len(allowed)),
        }
    )
    held = [t in world[person[p]] for p, t in zip(pairs["profile_id"], pairs["topic"], strict=True)]
    pairs["truth"] = np.array(held, dtype=np.float64)
    pairs["train"] = [hashlib.sha256(p.encode()).digest()[0] < 128 for p in pairs["profile_id"]]
    signals = pd.read_parquet(run / "signals.parquet")
    signals = signals[signals["profile_id"].isin(allowed) & signals["topic"].isin(TOPICS)]
    return Universe(pairs=pairs, signals=signals.reset_index(drop=True))


def predict(
    u: Universe, signals: pd.DataFrame, taxonomy: Taxonomy, settings: FusionSettings
) -> Floats:
    """Merged confidence per pair of `u` from `signals` (the prior where there is none)."""
    merged = fuse(signals, taxonomy=taxonomy, settings=settings, now=NOW).merged
    got = u.pairs.merge(merged[["profile_id", "topic", "confidence"]], how="left")
    priors = {**taxonomy.priors, **settings.priors}
    return got["confidence"].fillna(got["topic"].map(priors)).to_numpy(dtype=np.float64)


def scores(p: Floats, y: Floats) -> dict[str, float]:
    """Brier score, expected calibration error (10 bins), log loss."""
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(
        abs(p[bins == b].mean() - y[bins == b].mean()) * (bins == b).mean()
        for b in range(10)
        if (bins == b).any()
    )
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return {
        "brier": float(np.mean((p - y) ** 2)),
        "ece": float(ece),
        "log_loss": float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))),
    }


def fit_settings(u: Universe, signals: pd.DataFrame, taxonomy: Taxonomy) -> FusionSettings:
    """Topic priors and per-provider weight and offset minimising the training log loss of
    the merged confidence, fitted jointly: sources which repeat each other are then not all
    believed in full, and a topic's prior becomes what it is for a profile about whom no
    source says anything (fusion does not read silence as evidence). The contributions (decay,
    declared rules) are taken at weight 1, offset 0 and the taxonomy's priors."""
    train = u.pairs[u.pairs["train"]].reset_index(drop=True)
    providers = sorted(signals["provider"].unique())
    sig = signals[signals["profile_id"].isin(train["profile_id"])]
    contrib = fuse(sig, taxonomy=taxonomy, settings=FusionSettings(), now=NOW).contributions
    used = contrib[contrib["weight"] > 0]
    per = used.merge(train.reset_index(names="pair"), on=["profile_id", "topic"])
    score = logit(per["score"].to_numpy())
    decay = per["weight"].to_numpy(dtype=np.float64)
    n, k = len(train), len(providers)
    a, b = np.zeros((n, k)), np.zeros((n, k))
    for j, provider in enumerate(providers):
        mine = (per["provider"] == provider).to_numpy()
        pair = per["pair"].to_numpy()[mine]
        a[:, j] = np.bincount(pair, weights=(decay * score)[mine], minlength=n)
        b[:, j] = np.bincount(pair, weights=decay[mine], minlength=n)
    topics = sorted(train["topic"].unique())
    topic = train["topic"].map({t: i for i, t in enumerate(topics)}).to_numpy()
    y = train["truth"].to_numpy(dtype=np.float64)
    m = len(topics)

    def loss(theta: Floats) -> float:
        lp, w, o = theta[:m][topic], theta[m : m + k], theta[m + k :]
        z = lp + (a + b * (o[None, :] - lp[:, None])) @ w
        return float(np.mean(np.logaddexp(0, z) - y * z))

    start = np.concatenate([np.full(m, -2.0), np.ones(k), np.zeros(k)])
    bounds = [(-9.0, 9.0)] * m + [(0.0, 10.0)] * k + [(-10.0, 10.0)] * k
    x = minimize(loss, start, bounds=bounds).x
    return FusionSettings(
        priors={t: round(float(1 / (1 + np.exp(-x[i]))), 3) for i, t in enumerate(topics)},
        providers={
            p: ProviderFusion(
                weight=round(float(x[m + j]), 3), offset=round(float(x[m + k + j]), 3)
            )
            for j, p in enumerate(providers)
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=5000)
    args = parser.parse_args()
    console = Console()
    taxonomy = load_taxonomy()
    with tempfile.TemporaryDirectory(prefix="fusion-quality-") as tmp:
        work = Path(tmp) / "data"
        started = time.perf_counter()
        run = run_night(args.people, work)
        console.print(
            f"nightly run on {args.people:,} people: {time.perf_counter() - started:.1f} s"
        )
        u = universe(work, run)
    providers = sorted(u.signals["provider"].unique())
    shipped = FusionSettings()
    test = ~u.pairs["train"].to_numpy()
    y = u.pairs["truth"].to_numpy(dtype=np.float64)[test]
    table = Table(
        title=f"Interest calibration: {len(u.pairs) // len(TOPICS):,} profiles x {len(TOPICS)} "
        f"topics, base rate {y.mean():.3f}; scored on the held-out half",
        show_edge=False,
    )
    for column in ("source", "coverage", "Brier", "ECE", "log loss", "Brier fitted",
                   "ECE fitted", "log loss fitted"):  # fmt: skip
        table.add_column(column, justify="left" if column == "source" else "right")
    results: dict[str, dict[str, float]] = {}
    rows: list[tuple[str, pd.DataFrame]] = [("prior only", u.signals.iloc[0:0])]
    rows += [(p, u.signals[u.signals["provider"] == p]) for p in providers]
    rows.append(("merged", u.signals))
    for name, sig in rows:
        covered = u.pairs.merge(
            sig[["profile_id", "topic"]].drop_duplicates(), how="left", indicator=True
        )
        coverage = float((covered["_merge"] == "both").to_numpy()[test].mean())
        a = scores(predict(u, sig, taxonomy, shipped)[test], y)
        # each row fitted on its own signals: a single source gets its own best settings
        fitted = fit_settings(u, sig, taxonomy)
        b = scores(predict(u, sig, taxonomy, fitted)[test], y)
        results[name] = b
        table.add_row(
            name, f"{coverage:.1%}",
            *(f"{a[k]:.4f}" for k in ("brier", "ece", "log_loss")),
            *(f"{b[k]:.4f}" for k in ("brier", "ece", "log_loss")),
        )  # fmt: skip
    console.print(table)
    singles = {k: v for k, v in results.items() if k not in ("merged", "prior only")}
    best = min(singles, key=lambda k: singles[k]["brier"])
    verdict = "met" if results["merged"]["brier"] < singles[best]["brier"] else "NOT met"
    console.print(
        "fitted: topic priors, provider weights and offsets fitted on the training half for "
        "that row's signals alone"
    )
    console.print(
        f"target (merged Brier < best single source, {best} {singles[best]['brier']:.4f}): "
        f"merged {results['merged']['brier']:.4f} -> {verdict}"
    )
    console.print("fitted settings (enrich.yaml):")
    console.print(
        yaml.safe_dump(
            {"fusion": fitted.model_dump(mode="json", include={"priors", "providers"})},
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
