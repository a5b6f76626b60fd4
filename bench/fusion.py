"""Cost of fusion and personas at scale: 1M profiles, about 5M signals.

Synthetic inputs (seeded): every profile gets Poisson(5) signals over the 14 topics the local
provider server knows, from five providers of all three kinds, up to two years old; a third of
the profiles have behaviour scores. Timed, each step once: `fuse`, `interest_lists` (the nested
`interests` column), `top_topics`, `assign_personas` (automatic k from 2 to 8 on a 20k sample),
`persona_cards`. Peak RSS is the process's, read after each step.

Run: `.venv/bin/python bench/fusion.py [--profiles 1000000]`.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from enrichers.testing.world import TOPICS
from profiles.fusion import FusionSettings, fuse, interest_lists, top_topics
from profiles.personas import PersonaSettings, assign_personas, persona_cards
from profiles.taxonomy import load_taxonomy

NOW = datetime(2026, 11, 1, tzinfo=UTC)
PROVIDERS = (
    ("behaviour", "observed"),
    ("declared", "declared"),
    ("sim_person", "inferred"),
    ("sim_segments", "inferred"),
    ("sim_gravatar", "inferred"),
)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def inputs(n: int, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = np.array([f"p{i:07d}" for i in range(n)], dtype=object)
    per = rng.poisson(5, n)
    owner = np.repeat(np.arange(n), per)
    m = len(owner)
    which = rng.integers(0, len(PROVIDERS), m)
    signals = pd.DataFrame(
        {
            "profile_id": ids[owner],
            "topic": np.array(TOPICS, dtype=object)[rng.integers(0, len(TOPICS), m)],
            "confidence": rng.uniform(0.02, 0.98, m),
            "provider": np.array([p for p, _ in PROVIDERS], dtype=object)[which],
            "observed_at": NOW - pd.to_timedelta(rng.integers(0, 730, m), unit="D"),
            "kind": np.array([k for _, k in PROVIDERS], dtype=object)[which],
        }
    )
    buyer = rng.random(n) < 0.35
    profiles = pd.DataFrame(
        {
            "profile_id": ids,
            "sources": [["crm", "orders"] if b else ["crm"] for b in buyer],
            "country": rng.choice(["DK", "DE", "SE", "GB", "FR"], n),
            "birth_year": rng.integers(1940, 2008, n).astype(str),
            "rfm_r": np.where(buyer, rng.integers(1, 6, n), np.nan),
            "rfm_f": np.where(buyer, rng.integers(1, 6, n), np.nan),
            "rfm_m": np.where(buyer, rng.integers(1, 6, n), np.nan),
            "rfm_segment": pd.Series(rng.choice(["champions", "loyal", "at_risk"], n)).where(buyer),
            "revenue": np.where(buyer, rng.gamma(2, 80, n), np.nan),
            "churn_risk": np.where(buyer, rng.uniform(0, 1, n), np.nan),
            "clv_365d": np.where(buyer, rng.gamma(2, 60, n), np.nan),
            "expected_purchases_365d": np.where(buyer, rng.gamma(1, 1, n), np.nan),
        }
    )
    return profiles, signals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", type=int, default=1_000_000)
    args = parser.parse_args()
    taxonomy = load_taxonomy()
    profiles, signals = inputs(args.profiles)
    table = Table(
        title=f"Fusion and personas: {args.profiles:,} profiles, {len(signals):,} signals",
        show_edge=False,
    )
    for column in ("step", "seconds", "rows/s", "peak RSS MB"):
        table.add_column(column, justify="left" if column == "step" else "right")
    state: dict[str, Any] = {}
    settings = PersonaSettings()

    def step(name: str, rows: int, run: Callable[[], Any]) -> None:
        started = time.perf_counter()
        state[name] = run()
        took = time.perf_counter() - started
        table.add_row(name, f"{took:.2f}", f"{rows / took:,.0f}", f"{_peak_mb():,.0f}")

    step(
        "fuse",
        len(signals),
        lambda: fuse(signals, taxonomy=taxonomy, settings=FusionSettings(), now=NOW),
    )
    fusion = state["fuse"]
    step("interest_lists", len(profiles), lambda: interest_lists(fusion, profiles["profile_id"]))
    step(
        "top_topics",
        len(fusion.merged),
        lambda: top_topics(fusion.merged, profiles["profile_id"], n=5, floor=0.6),
    )
    used = fusion.merged[fusion.merged["confidence"] >= 0.6][["profile_id", "topic", "confidence"]]
    step("assign_personas", len(profiles), lambda: assign_personas(profiles, used, settings))
    step(
        "persona_cards",
        len(profiles),
        lambda: persona_cards(
            profiles, used, state["assign_personas"], settings, labels=taxonomy.labels, as_of=NOW
        ),
    )
    Console().print(table)
    cards = state["persona_cards"]["cards"]
    Console().print(
        f"merged interests: {len(fusion.merged):,}; personas: "
        + ", ".join(f"{c['name']} {c['size']:,}" for c in cards)
    )


if __name__ == "__main__":
    main()
