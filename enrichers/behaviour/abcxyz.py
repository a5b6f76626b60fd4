"""ABC (value) and XYZ (regularity) classes per profile, and Pareto figures for the report.

Scored: every profile with at least one purchase in `PreparedOrders` (see `rfm` for how lines
become orders and what a purchase is).

ABC
---
The value is the net revenue of all the profile's orders (`by="revenue"`, the same number as
RFM's monetary) or the sum of its line margins (`by="margin"`; the lines need a margin
column). Profiles are sorted by value, highest first, ties by profile_id ascending, so the
order never depends on the input. A value below zero counts as zero towards the shares (it
cannot be part of the top). With `before` the share of the total held by everyone sorted
ahead of a profile, the profile is

    A  while before < a_share                  (default 0.8)
    B  while before < a_share + b_share        (default 0.8 + 0.15)
    C  otherwise

so the profile that crosses a boundary still belongs to the class it started in (the classic
rule), and two profiles with the same value can fall on either side of a boundary, in
profile_id order. The boundaries are rounded to the millionth of the currency, so binary
fractions cannot move them (0.8 + 0.15 is 0.95). When no profile has a value above zero,
everyone is C and the shares are missing.

XYZ
---
The coefficient of variation (population standard deviation / mean, `cv`) of

- `period_spend` (default): the value of the profile's purchases per calendar period (UTC
  weeks from Monday, months or quarters), over every period from the one of its first
  purchase to the one holding `as_of`, periods without a purchase counting as 0. One period
  in the window gives cv 0; a burst long ago followed by silence gives a high cv.
- `intervals`: the days between consecutive purchases. This needs two intervals, so three
  purchases at least; when all purchases fall at the same instant the mean interval is 0 and
  cv is missing.

    X  cv <= x_max_cv (default 0.5)   Y  cv <= y_max_cv (default 1.0)   Z  above

Profiles with fewer than `min_orders_for_xyz` purchases (default 2), or whose cv is missing,
have no XYZ class. One-time buyers (exactly one purchase) are flagged in `one_time_buyer` and
get only an ABC class.

Per profile and population
--------------------------
`abc_xyz_values` gives each profile's value, purchases and cv (all its own); the classes
(`abc_xyz_classes`) rank the values of the whole population: one `abc_xyz_values` frame, or
several of disjoint profiles stacked in profile_id order. `abc_xyz` does both.

Pareto
------
`pareto` gives the share of the total held by the top 20 % and the top 4 % of customers, the
top k being `ceil(n * 20 / 100)` customers (computed in integers; at least one customer when
n > 0), and Lorenz-curve points for a chart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal, TypedDict

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from enrichers.behaviour.rfm import (
    DAY_NS,
    MICROS,
    Floats,
    Ints,
    PreparedOrders,
    group_starts,
    purchase_totals,
    scoring_as_of,
)

Share = Annotated[float, Field(ge=0, le=1)]
Cv = Annotated[float, Field(ge=0, allow_inf_nan=False)]
INTERVALS_MIN_ORDERS: Final = 3
"""Purchases needed for a cv of intervals: two intervals."""
LORENZ_POINTS: Final = 101


class AbcXyzSettings(BaseModel):
    """Class boundaries and the basis of XYZ."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    a_share: Annotated[float, Field(gt=0, lt=1)] = 0.8
    """A: the customers holding the first `a_share` of the total value."""
    b_share: Share = 0.15
    """B: the next `b_share`; C: the rest."""
    by: Literal["revenue", "margin"] = "revenue"
    xyz_basis: Literal["period_spend", "intervals"] = "period_spend"
    period: Literal["week", "month", "quarter"] = "month"
    """Calendar period of `period_spend` (UTC; weeks start on Monday)."""
    x_max_cv: Cv = 0.5
    y_max_cv: Cv = 1.0
    min_orders_for_xyz: Annotated[int, Field(ge=2)] = 2

    @model_validator(mode="after")
    def _consistent(self) -> AbcXyzSettings:
        problems = []
        if self.a_share + self.b_share > 1 + 1e-9:  # 0.8 + 0.2 may not add up to 1 exactly
            problems.append(f"a_share + b_share is {self.a_share + self.b_share}, above 1")
        if self.x_max_cv > self.y_max_cv:
            problems.append("x_max_cv is above y_max_cv")
        if problems:
            raise ValueError("; ".join(problems))
        return self


ABC_XYZ_COLUMNS: Final = (
    "revenue",
    "margin",
    "orders",
    "share",
    "cumulative_share",
    "abc",
    "one_time_buyer",
    "cv",
    "xyz",
)
"""Columns of `abc_xyz`: revenue and margin (float, scoring currency; margin missing without
a margin column), orders (int64 purchases), share and cumulative_share (of the ABC value,
after this profile; float), abc (categorical A/B/C), one_time_buyer (bool), cv (float,
missing when not classed), xyz (categorical X/Y/Z, missing when not classed)."""


ABC_XYZ_VALUE_COLUMNS: Final = ("revenue", "margin", "orders", "abc_micros", "cv")
"""Columns of `abc_xyz_values`: revenue and margin (float, as in ABC_XYZ_COLUMNS), orders
(int64 purchases), abc_micros (int64, the ABC value in millionths: revenue or margin by
`AbcXyzSettings.by`), cv (float, missing when not classed)."""


def abc_xyz_values(
    orders: PreparedOrders,
    *,
    as_of: datetime | pd.Timestamp | None = None,
    settings: AbcXyzSettings | None = None,
) -> pd.DataFrame:
    """ABC_XYZ_VALUE_COLUMNS per profile with a purchase, indexed by profile_id (sorted):
    what each profile contributes to `abc_xyz`, which ranks the profiles by value.

    `as_of` (default: the preparation's cut-off) closes the `period_spend` window."""
    settings = settings or AbcXyzSettings()
    if settings.by == "margin" and not orders.has_margin:
        raise ValueError("ABC by margin needs a margin column in the order lines")
    as_of_ns = scoring_as_of(orders, as_of)
    totals = purchase_totals(orders)
    cv = _cv(orders, totals.codes, as_of_ns, settings)
    needed = settings.min_orders_for_xyz
    if settings.xyz_basis == "intervals":
        needed = max(needed, INTERVALS_MIN_ORDERS)
    return pd.DataFrame(
        {
            "revenue": totals.value_micros / MICROS,
            "margin": totals.margin_micros / MICROS if orders.has_margin else np.nan,
            "orders": totals.purchases,
            "abc_micros": totals.margin_micros if settings.by == "margin" else totals.value_micros,
            "cv": np.where(totals.purchases >= needed, cv, np.nan),
        },
        index=pd.Index(orders.profiles.take(totals.codes), name="profile_id"),
    )


def abc_xyz_classes(
    values: pd.DataFrame, *, settings: AbcXyzSettings | None = None
) -> pd.DataFrame:
    """ABC_XYZ_COLUMNS from `abc_xyz_values` of the whole population (any number of them
    stacked, profile_id order): ABC ranks each profile among all of `values`."""
    settings = settings or AbcXyzSettings()
    value = values["abc_micros"].to_numpy(dtype=np.int64)
    # Rows are in profile_id order, so their positions break value ties by profile_id.
    share, cumulative, abc = _abc(value, np.arange(len(value), dtype=np.int64), settings)
    cv = values["cv"].to_numpy(dtype=np.float64)
    xyz_code: Ints = np.select(
        [cv <= settings.x_max_cv, cv <= settings.y_max_cv, cv > settings.y_max_cv],
        [0, 1, 2],
        default=-1,
    )
    purchases = values["orders"].to_numpy(dtype=np.int64)
    return pd.DataFrame(
        {
            "revenue": values["revenue"].to_numpy(dtype=np.float64),
            "margin": values["margin"].to_numpy(dtype=np.float64),
            "orders": purchases,
            "share": share,
            "cumulative_share": cumulative,
            "abc": pd.Categorical.from_codes(abc, categories=pd.Index(["A", "B", "C"])),
            "one_time_buyer": purchases == 1,
            "cv": cv,
            "xyz": pd.Categorical.from_codes(xyz_code, categories=pd.Index(["X", "Y", "Z"])),
        },
        index=values.index,
    )


def abc_xyz(
    orders: PreparedOrders,
    *,
    as_of: datetime | pd.Timestamp | None = None,
    settings: AbcXyzSettings | None = None,
) -> pd.DataFrame:
    """ABC_XYZ_COLUMNS per profile with a purchase, indexed by profile_id (sorted).

    `as_of` (default: the preparation's cut-off) closes the `period_spend` window."""
    settings = settings or AbcXyzSettings()
    return abc_xyz_classes(
        abc_xyz_values(orders, as_of=as_of, settings=settings), settings=settings
    )


def _abc(value: Ints, codes: Ints, settings: AbcXyzSettings) -> tuple[Floats, Floats, Ints]:
    positive = np.maximum(value, 0)
    total = int(positive.sum())
    ranked = np.lexsort((codes, -value))
    cumulative = np.empty(len(value), dtype=np.int64)
    cumulative[ranked] = np.cumsum(positive[ranked])
    before = cumulative - positive
    abc = np.full(len(value), 2, dtype=np.int64)
    if total <= 0:
        missing = np.full(len(value), np.nan)
        return missing, missing.copy(), abc
    # Boundaries in whole millionths, so 0.8 + 0.15 (0.9500000000000001 in binary) is 0.95.
    abc[before < round((settings.a_share + settings.b_share) * total)] = 1
    abc[before < round(settings.a_share * total)] = 0
    return positive / total, cumulative / total, abc


def _cv(orders: PreparedOrders, buyers: Ints, as_of_ns: int, settings: AbcXyzSettings) -> Floats:
    table = orders.orders
    purchase = table["purchase"].to_numpy(dtype=bool)
    codes = table["profile_code"].to_numpy(dtype=np.int64)[purchase]
    times = np.asarray(pd.DatetimeIndex(table["ordered_at"]).asi8, dtype=np.int64)[purchase]
    if settings.xyz_basis == "intervals":
        same = codes[1:] == codes[:-1]
        gaps = (times[1:] - times[:-1])[same] / DAY_NS
        owners, cv = _group_cv(gaps.astype(np.float64), codes[1:][same], periods=None)
    else:
        value = table["value_micros"].to_numpy(dtype=np.int64)[purchase]
        period = period_index(times, settings.period)
        # Orders are sorted by profile and time, so each (profile, period) is one run.
        run = np.ones(len(codes), dtype=bool)
        run[1:] = (codes[1:] != codes[:-1]) | (period[1:] != period[:-1])
        starts = np.flatnonzero(run)
        spend = np.add.reduceat(value, starts) if len(starts) else np.zeros(0, dtype=np.int64)
        run_owner = codes[starts]
        _, first_run = group_starts(run_owner)
        last = period_index(np.array([as_of_ns], dtype=np.int64), settings.period)[0]
        window = last - period[starts][first_run] + 1
        owners, cv = _group_cv(spend.astype(np.float64), run_owner, periods=window)
    result = np.full(len(buyers), np.nan)
    result[np.searchsorted(buyers, owners)] = cv
    return result


def _group_cv(values: Floats, owners: Ints, *, periods: Ints | None) -> tuple[Ints, Floats]:
    """cv per owner of `values` (sorted by owner); with `periods` per owner, over that many
    periods of which those without a value count as 0 (otherwise over the values alone)."""
    groups, starts = group_starts(owners)
    if len(groups) == 0:
        return groups, np.zeros(0)
    present = np.diff(np.append(starts, len(values)))
    count = present if periods is None else periods
    mean = np.add.reduceat(values, starts) / count
    deviation = np.add.reduceat((values - np.repeat(mean, present)) ** 2, starts)
    deviation += (count - present) * mean**2
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = np.sqrt(deviation / count) / mean
    return groups, np.where(mean > 0, cv, np.nan)


def period_index(times_ns: Ints, period: Literal["week", "month", "quarter"]) -> Ints:
    """Consecutive integers numbering the UTC calendar periods the times fall in."""
    moments = times_ns.view("datetime64[ns]")
    if period == "week":
        days = moments.astype("datetime64[D]").astype(np.int64)
        return (days + 3) // 7  # 1970-01-01 was a Thursday; weeks start on Monday
    months = moments.astype("datetime64[M]").astype(np.int64)
    return months if period == "month" else months // 3


class ParetoFigures(TypedDict):
    """Concentration of value among customers."""

    n: int
    """Customers counted (values below zero count as customers with zero value)."""
    top_20_share: float
    """Share of the total held by the top ceil(20 % of n) customers (missing if no total)."""
    top_4_share: float
    """Share held by the top ceil(4 % of n)."""
    lorenz: list[tuple[float, float]]
    """(share of customers, share of value) from (0, 0) to (1, 1), poorest first: every
    customer when n <= 100, else 101 points at every percent of customers (interpolated)."""


def pareto(values: npt.ArrayLike) -> ParetoFigures:
    """Pareto figures of per-customer values (e.g. `abc_xyz(...)["revenue"]`)."""
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError("pareto needs finite values")
    ascending = np.sort(np.maximum(array, 0.0))
    n = len(ascending)
    total = float(ascending.sum())
    if n == 0 or total <= 0:
        return ParetoFigures(n=n, top_20_share=np.nan, top_4_share=np.nan, lorenz=[])
    descending = ascending[::-1]
    top_20 = float(descending[: (n * 20 + 99) // 100].sum()) / total
    top_4 = float(descending[: (n * 4 + 99) // 100].sum()) / total
    cumulative = np.concatenate([[0.0], np.cumsum(ascending)])
    x = np.arange(n + 1) / n
    y = cumulative / cumulative[-1]
    if n + 1 > LORENZ_POINTS:
        grid = np.linspace(0.0, 1.0, LORENZ_POINTS)
        x, y = grid, np.interp(grid, x, y)
    return ParetoFigures(
        n=n,
        top_20_share=top_20,
        top_4_share=top_4,
        lorenz=[(float(a), float(b)) for a, b in zip(x, y, strict=True)],
    )
