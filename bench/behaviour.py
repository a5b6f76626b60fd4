"""Benchmark of the behaviour provider: 1M customers, 5M order lines, time and memory per step.

Order lines are synthesised column-wise: each customer's purchases follow a BG/NBD process
(Poisson purchasing while alive, a geometric number of purchases before dropping out) over
three years, one to four lines per order, two currencies, ten categories, 3 % returns. Each
step of `enrichers.behaviour.provider.score` is then timed on its own, in the order the
provider runs them, and the whole provider once more end to end. Peak RSS is the process's
high-water mark after the step (it includes the input lines). Run it with
`.venv/bin/python bench/behaviour.py --customers 1000000`.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from enrichers.behaviour import clv
from enrichers.behaviour.abcxyz import abc_xyz, pareto
from enrichers.behaviour.config import BehaviourSettings
from enrichers.behaviour.interests import category_interests
from enrichers.behaviour.provider import score
from enrichers.behaviour.rfm import MoneySettings, prepare_orders, rfm

T = TypeVar("T")
AS_OF = datetime(2026, 11, 1, 23, 59, 59, tzinfo=UTC)
CATEGORIES = np.array(
    [
        *("outdoor.hiking", "home.kitchen", "fashion.women", "kids.toys", "beauty.skincare"),
        *("sports.running", "electronics.audio", "books.fiction", "garden.tools", "pets.dogs"),
    ]
)


def synthesise(customers: int, seed: int = 7) -> pd.DataFrame:
    """About five order lines per customer, BG/NBD-like purchasing over three years."""
    rng = np.random.default_rng(seed)
    days = 3 * 365
    start = rng.uniform(0, days, customers)
    rate = rng.gamma(0.9, 1 / 200, customers)  # purchases per day while alive
    lifetime = rng.exponential(500, customers)
    span = np.minimum(days - start, lifetime)
    orders = 1 + rng.poisson(rate * span)
    owner = np.repeat(np.arange(customers), orders)
    first = np.repeat(start, orders)
    offset = np.where(
        np.arange(len(owner)) == np.repeat(np.cumsum(orders) - orders, orders),
        0.0,
        rng.uniform(0, 1, len(owner)) * np.repeat(span, orders),
    )
    order_time = first + offset
    lines = 1 + np.minimum(rng.poisson(1.05, len(owner)), 3)
    order = np.repeat(np.arange(len(owner)), lines)
    amount = np.round(rng.gamma(2.0, 20.0, len(order)), 2)
    returned = rng.random(len(order)) < 0.03
    amount = np.where(returned, -amount, amount)
    currency = np.where(owner[order] % 3 == 0, "DKK", "EUR")
    amount = np.where(currency == "DKK", amount * 7.46, amount)
    base = np.datetime64(AS_OF.replace(tzinfo=None) - timedelta(days=days), "s")
    ordered = base + (order_time[order] * 86_400).astype("timedelta64[s]")
    return pd.DataFrame(
        {
            "profile_id": pd.Series(owner[order]).map("P{:07d}".format).to_numpy(),
            "order_id": order.astype(str),
            "ordered_at": pd.to_datetime(ordered).tz_localize("UTC"),
            "amount": amount,
            "currency": currency,
            "category": CATEGORIES[rng.integers(0, len(CATEGORIES), len(order))],
            "quantity": np.ones(len(order)),
        }
    )


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(rows: list[tuple[str, float, float]], name: str, fn: Callable[[], T]) -> T:
    start = time.perf_counter()
    value = fn()
    rows.append((name, time.perf_counter() - start, _rss_mb()))
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    args = parser.parse_args()
    settings = BehaviourSettings(money=MoneySettings(rates={"DKK": 1 / 7.46}))
    console = Console(width=140)
    rows: list[tuple[str, float, float]] = []
    with console.status("synthesising ..."):
        lines = _timed(rows, "synthesise order lines", lambda: synthesise(args.customers))
    with console.status("scoring step by step ..."):
        prepared = _timed(
            rows,
            "prepare_orders",
            lambda: prepare_orders(lines, as_of=AS_OF, money=settings.money),
        )
        _timed(rows, "rfm", lambda: rfm(prepared, as_of=AS_OF, settings=settings.rfm))
        classes = _timed(
            rows, "abc_xyz", lambda: abc_xyz(prepared, as_of=AS_OF, settings=settings.abc_xyz)
        )
        _timed(rows, "pareto", lambda: pareto(classes["revenue"].to_numpy(dtype=float)))
        purchases = prepared.orders[prepared.orders["purchase"]].rename(
            columns={"value": "amount"}
        )[["profile_id", "order_id", "ordered_at", "amount"]]
        data = _timed(
            rows,
            "clv.summarise",
            lambda: clv.summarise(purchases, as_of=AS_OF, period=settings.clv.period),
        )
        _timed(
            rows,
            "clv.holdout_check (fit on the calibration part)",
            lambda: clv.holdout_check(
                purchases,
                calibration_end=AS_OF - timedelta(days=settings.clv.holdout_days),
                observation_end=AS_OF,
                period=settings.clv.period,
            ),
        )
        fit = _timed(rows, "clv.fit_all (BG/NBD + Gamma-Gamma)", lambda: clv.fit_all(data))
        _timed(
            rows,
            "clv.score_customers (p_alive, expected, CLV)",
            lambda: clv.score_customers(
                data, fit, horizon_periods=365 / 7, discount_rate_per_period=0.0018
            ),
        )
        _timed(
            rows,
            "category_interests",
            lambda: category_interests(prepared, as_of=AS_OF, settings=settings.interests),
        )
    with console.status("the provider end to end ..."):
        result: Any = _timed(
            rows,
            "provider.score (all of the above)",
            lambda: score(lines, as_of=AS_OF, settings=settings),
        )

    table = Table(
        title=f"Behaviour scoring: {lines['profile_id'].nunique():,} customers, "
        f"{len(lines):,} order lines, {len(prepared.orders):,} orders"
    )
    table.add_column("step")
    table.add_column("s", justify="right")
    table.add_column("peak RSS MB", justify="right")
    for name, seconds, rss in rows:
        table.add_row(name, f"{seconds:.2f}", f"{rss:,.0f}")
    console.print(table)
    models = result.report["models"]
    console.print(
        f"BG/NBD {models['bgnbd']['params']} converged={models['bgnbd']['converged']}; "
        f"hold-out predicted {models['holdout']['predicted_total']:,.0f} vs actual "
        f"{models['holdout']['actual_total']:,.0f}; scored {len(result.scores):,} customers, "
        f"{len(result.signals):,} interest signals"
    )


if __name__ == "__main__":
    main()
