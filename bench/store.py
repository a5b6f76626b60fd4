"""Benchmark of the state store: saving and loading 100k and 1M identifiers on both backends.

For each backend and size it times, on a fresh store:

* first save: N new identifiers (two per profile, kinds mixed) and N/2 new profiles;
* loads: `load_identifiers()` and `load_profiles()` right after;
* nightly save: the same N identifiers seen again (every row upserted), 0.5% of profiles
  merged into another (their identifiers moved, a merge event each) and 5% new identifiers
  on new profiles, as a steady-state night looks.

SQLite runs in a temporary directory; PostgreSQL in a throwaway schema of
`ENRICH_BENCH_PG_URL` (default `postgresql+psycopg://root@127.0.0.1:5432/test`), dropped
afterwards. Run it with `.venv/bin/python bench/store.py --sizes 100000,1000000`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

from profiles.store import StateStore, default_url

PG_URL = os.environ.get("ENRICH_BENCH_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
KINDS = np.array(["email", "phone", "customer_id"])
T = TypeVar("T")


@dataclass(frozen=True)
class Night:
    """One save_identity call's input."""

    identifiers: pd.DataFrame
    new_profiles: pd.DataFrame
    merged: pd.DataFrame
    events: pd.DataFrame


def _hex(rng: np.random.Generator, n: int, width: int) -> list[str]:
    blob = rng.bytes(n * width // 2).hex()
    return [blob[i : i + width] for i in range(0, n * width, width)]


def _nights(n: int, seed: int = 7) -> tuple[Night, Night]:
    """A first night of n identifiers and a steady-state second night."""
    rng = np.random.default_rng(seed)
    n_profiles = n // 2
    profile_ids = np.array(["P" + h.upper() for h in _hex(rng, n_profiles, 16)], dtype=object)
    owner = np.repeat(np.arange(n_profiles), 2)[:n]
    ids = pd.DataFrame(
        {
            "kind": pd.Series(KINDS[rng.integers(0, 3, n)], dtype="str"),
            "key_id": pd.Series(["k0123456789ab"] * n, dtype="str"),
            "pseudonym": pd.Series(_hex(rng, n, 64), dtype="str"),
            "profile_id": pd.Series(profile_ids[owner], dtype="str"),
        }
    )
    empty_events = pd.DataFrame(
        {c: pd.Series([], dtype="str") for c in ("event", "profile_id", "other_profile_id")}
    )
    first = Night(
        ids,
        pd.DataFrame({"profile_id": pd.Series(profile_ids, dtype="str")}),
        pd.DataFrame({"profile_id": pd.Series([], dtype="str"), "merged_into": []}),
        empty_events,
    )
    # night two: 0.5% of profiles merge into their neighbour, 5% new identifiers
    n_merge = max(1, n_profiles // 200)
    losers = rng.choice(np.arange(1, n_profiles, 2), size=n_merge, replace=False)
    survivor_of = {int(p): int(p) - 1 for p in losers}
    moved = np.array([survivor_of.get(int(p), int(p)) for p in owner])
    n_new = n // 20
    new_ids = _hex(rng, n_new, 16)
    second_ids = pd.concat(
        [
            ids.assign(profile_id=pd.Series(profile_ids[moved], dtype="str")),
            pd.DataFrame(
                {
                    "kind": pd.Series(KINDS[rng.integers(0, 3, n_new)], dtype="str"),
                    "key_id": pd.Series(["k0123456789ab"] * n_new, dtype="str"),
                    "pseudonym": pd.Series(_hex(rng, n_new, 64), dtype="str"),
                    "profile_id": pd.Series(["N" + h.upper() for h in new_ids], dtype="str"),
                }
            ),
        ],
        ignore_index=True,
    )
    merged = pd.DataFrame(
        {
            "profile_id": pd.Series(profile_ids[losers], dtype="str"),
            "merged_into": pd.Series(profile_ids[losers - 1], dtype="str"),
        }
    )
    events = pd.DataFrame(
        {
            "event": "merge",
            "profile_id": merged["profile_id"],
            "other_profile_id": merged["merged_into"],
            "detail": '{"identifiers": 2, "records": 2}',
        }
    )
    second = Night(
        second_ids,
        pd.DataFrame({"profile_id": pd.Series(sorted(set(second_ids["profile_id"].iloc[n:])))}),
        merged,
        events,
    )
    return first, second


@contextmanager
def _store(backend: str) -> Iterator[StateStore]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp, StateStore.open(default_url(Path(tmp))) as st:
            yield st
        return
    schema = f"enrich_bench_{secrets.token_hex(4)}"
    try:
        with StateStore.open(PG_URL, schema=schema) as st:
            yield st
    finally:
        engine = create_engine(PG_URL)
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        engine.dispose()


def _timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[float, T]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def _save(store: StateStore, run_id: str, night: Night) -> float:
    store.start_run(run_id, "bench", datetime.now(UTC))
    seconds, _ = _timed(
        store.save_identity,
        run_id,
        identifiers=night.identifiers,
        new_profiles=night.new_profiles,
        merged=night.merged,
        events=night.events,
    )
    store.finish_run(
        run_id, "succeeded", {"identifiers": len(night.identifiers)}, datetime.now(UTC)
    )
    return seconds


def measure(backend: str, n: int) -> dict[str, float]:
    """Seconds of each step for one backend and size."""
    first, second = _nights(n)
    with _store(backend) as store:
        save1 = _save(store, "bench-1", first)
        load_ids, frame = _timed(store.load_identifiers)
        assert len(frame) == n
        load_profiles, _ = _timed(store.load_profiles)
        save2 = _save(store, "bench-2", second)
        load_ids2, frame = _timed(store.load_identifiers)
        assert len(frame) == len(second.identifiers)
    return {
        "first save": save1,
        "load identifiers": load_ids,
        "load profiles": load_profiles,
        "nightly save": save2,
        "load identifiers (night 2)": load_ids2,
    }


def main() -> None:
    """Parse arguments, run every backend and size, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    load = os.getloadavg()[0]
    table = Table(
        title="state store: seconds per call",
        caption=f"{os.cpu_count()} CPUs, load average {load:.1f} when the benchmark started",
    )
    columns = ["first save", "load identifiers", "load profiles", "nightly save"]
    for name in ("backend", "identifiers", *columns):
        table.add_column(name, justify="left" if name == "backend" else "right")
    console = Console(width=120)
    for backend in args.backends.split(","):
        for n in sizes:
            result = measure(backend, n)
            console.print(
                f"{backend} {n:,}: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.items())
            )
            table.add_row(backend, f"{n:,}", *(f"{result[c]:.2f}" for c in columns))
    console.print(table)


if __name__ == "__main__":
    main()
