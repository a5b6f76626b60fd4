"""ABC and XYZ classes and Pareto figures, on hand-computed cases."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from enrichers.behaviour.abcxyz import AbcXyzSettings, abc_xyz, pareto, period_index
from enrichers.behaviour.rfm import MoneySettings, PreparedOrders, prepare_orders
from tests.enrichers.behaviour.test_rfm import (
    AS_OF,
    ORDER_MONEY,
    Line,
    order_lines,
    prepared,
    shuffled_lines,
)


def orders_at(rows: list[tuple[str, str, datetime, float]], as_of: datetime) -> PreparedOrders:
    """Prepared orders from (profile_id, order_id, time, amount) in EUR."""
    lines = pd.DataFrame(
        {
            "profile_id": [r[0] for r in rows],
            "order_id": [r[1] for r in rows],
            "ordered_at": pd.to_datetime([r[2] for r in rows], utc=True),
            "amount": [r[3] for r in rows],
            "currency": "EUR",
        }
    )
    return prepare_orders(lines, as_of=as_of, money=MoneySettings())


def test_abc_boundaries_with_a_tie_by_hand() -> None:
    # Total 100. Share before each, highest first: p1 0, p2 .5 (A); p3 .8, p4 .9 (B: .8 is
    # not below .8); p5 .95 -> C. p4 and p5 tie at 5: profile_id decides, p4 first.
    rows: list[Line] = [
        ("p5", "e", 1, 5.0),
        ("p3", "c", 1, 10.0),
        ("p1", "a", 1, 50.0),
        ("p4", "d", 1, 5.0),
        ("p2", "b", 1, 30.0),
    ]
    classes = abc_xyz(prepared(rows))
    assert list(classes.columns) == [
        "revenue",
        "margin",
        "orders",
        "share",
        "cumulative_share",
        "abc",
        "one_time_buyer",
        "cv",
        "xyz",
    ]
    assert list(classes.index) == ["p1", "p2", "p3", "p4", "p5"]
    assert classes["abc"].tolist() == ["A", "A", "B", "B", "C"]
    assert classes["share"].tolist() == pytest.approx([0.5, 0.3, 0.1, 0.05, 0.05])
    assert classes["cumulative_share"].tolist() == pytest.approx([0.5, 0.8, 0.9, 0.95, 1.0])
    assert classes["one_time_buyer"].all()
    assert classes["xyz"].isna().all()
    assert classes["cv"].isna().all()


def test_the_customer_crossing_a_boundary_keeps_the_class_it_started_in() -> None:
    # 70 then 20: before the second is .7 < .8, so both are A; the third (before .9) is B.
    classes = abc_xyz(prepared([("a", "1", 1, 70.0), ("b", "2", 1, 20.0), ("c", "3", 1, 10.0)]))
    assert classes["abc"].tolist() == ["A", "A", "B"]


def test_negative_revenue_is_c_and_holds_no_share() -> None:
    rows: list[Line] = [
        ("a", "1", 5, 100.0),
        ("b", "2", 5, 10.0),
        ("b", "3", 1, -40.0),  # a refund order larger than the purchase
    ]
    classes = abc_xyz(prepared(rows))
    assert classes.loc["b", "revenue"] == -30.0
    assert classes.loc["b", "share"] == 0.0
    assert classes["abc"].tolist() == ["A", "C"]


def test_nobody_with_value_is_everyone_c() -> None:
    rows: list[Line] = [("a", "1", 5, 10.0), ("a", "2", 1, -10.0)]
    classes = abc_xyz(prepared(rows))
    assert classes["abc"].tolist() == ["C"]
    assert classes["share"].isna().all()


def test_abc_by_margin() -> None:
    rows: list[Line] = [
        ("a", "1", 1, 100.0, "EUR", "x", 10.0),
        ("b", "2", 1, 10.0, "EUR", "x", 90.0),
    ]
    by_margin = abc_xyz(prepared(rows), settings=AbcXyzSettings(by="margin"))
    assert by_margin["margin"].tolist() == [10.0, 90.0]  # a: .9 of the margin before it
    assert by_margin["abc"].tolist() == ["B", "A"]
    assert abc_xyz(prepared(rows))["abc"].tolist() == ["A", "B"]
    no_margin = prepare_orders(
        order_lines(rows).drop(columns=["margin"]), as_of=AS_OF, money=MoneySettings()
    )
    assert abc_xyz(no_margin)["margin"].isna().all()
    with pytest.raises(ValueError, match="margin column"):
        abc_xyz(no_margin, settings=AbcXyzSettings(by="margin"))


def day(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_xyz_from_monthly_spend_by_hand() -> None:
    as_of = day("2024-06-15")
    rows = [(f"x{m}", f"x{m}", day(f"2024-0{m}-10"), 100.0) for m in range(1, 7)]
    rows = [("x", order, time, amount) for _, order, time, amount in rows]
    # y from March: 100, 100, 200, 0 -> mean 100, deviations 0, 0, 100, -100 -> cv .7071
    rows += [
        ("y", "y1", day("2024-03-01"), 100.0),
        ("y", "y2", day("2024-04-30"), 60.0),
        ("y", "y3", day("2024-04-02"), 40.0),
        ("y", "y4", day("2024-05-20"), 200.0),
    ]
    # z: 300 in January and nothing since -> six months 300, 0, 0, 0, 0, 0: cv sqrt(5)
    rows += [("z", "z1", day("2024-01-05"), 150.0), ("z", "z2", day("2024-01-06"), 150.0)]
    # w: two orders in the month of as_of: a window of one month, cv 0
    rows += [("w", "w1", day("2024-06-01"), 10.0), ("w", "w2", day("2024-06-14"), 90.0)]
    # one: a single purchase, ABC only
    rows += [("one", "o1", day("2024-02-01"), 500.0)]
    classes = abc_xyz(orders_at(rows, as_of))
    assert classes.loc["x", "cv"] == pytest.approx(0.0)
    assert classes.loc["y", "cv"] == pytest.approx(math.sqrt(5000) / 100)
    assert classes.loc["z", "cv"] == pytest.approx(math.sqrt(5))
    assert classes.loc["w", "cv"] == pytest.approx(0.0)
    assert classes["cv"].isna().to_dict()["one"]
    assert classes["xyz"].astype(object).where(classes["xyz"].notna(), None).to_dict() == {
        "one": None,
        "w": "X",
        "x": "X",
        "y": "Y",
        "z": "Z",
    }
    assert classes["one_time_buyer"].to_dict() == {
        "one": True,
        "w": False,
        "x": False,
        "y": False,
        "z": False,
    }
    assert classes["orders"].to_dict() == {"one": 1, "w": 2, "x": 6, "y": 4, "z": 2}


def test_xyz_period_and_thresholds_are_configurable() -> None:
    as_of = day("2024-06-30")
    # Quarterly: Q1 100, Q2 300 -> mean 200, sd 100, cv .5: X at the boundary (inclusive).
    rows = [("q", "1", day("2024-02-01"), 100.0), ("q", "2", day("2024-05-01"), 300.0)]
    quarterly = AbcXyzSettings(period="quarter")
    assert abc_xyz(orders_at(rows, as_of), settings=quarterly).loc["q", "cv"] == 0.5
    assert abc_xyz(orders_at(rows, as_of), settings=quarterly).loc["q", "xyz"] == "X"
    strict = AbcXyzSettings(period="quarter", x_max_cv=0.4, y_max_cv=0.45)
    assert abc_xyz(orders_at(rows, as_of), settings=strict).loc["q", "xyz"] == "Z"
    fewer = AbcXyzSettings(min_orders_for_xyz=3)
    classes = abc_xyz(orders_at(rows, as_of), settings=fewer)
    assert classes["xyz"].isna().to_dict() == {"q": True}
    assert not classes.loc["q", "one_time_buyer"]


def test_xyz_from_intervals_by_hand() -> None:
    as_of = day("2024-06-30")
    start = day("2024-01-01")
    rows = [("r", f"r{d}", start + timedelta(days=d), 10.0) for d in (0, 10, 30)]  # 10, 20
    rows += [("two", f"t{d}", start + timedelta(days=d), 10.0) for d in (0, 50)]
    rows += [("same", f"s{i}", start, 10.0) for i in range(3)]
    rows += [("wide", f"w{d}", start + timedelta(days=d), 10.0) for d in (0, 1, 2, 100)]
    classes = abc_xyz(orders_at(rows, as_of), settings=AbcXyzSettings(xyz_basis="intervals"))
    assert classes.loc["r", "cv"] == pytest.approx(5 / 15)
    assert classes.loc["r", "xyz"] == "X"
    # intervals 1, 1, 98: mean 100/3, sd sqrt(((1-m)^2*2 + (98-m)^2)/3)
    mean = 100 / 3
    sd = math.sqrt((2 * (1 - mean) ** 2 + (98 - mean) ** 2) / 3)
    assert classes.loc["wide", "cv"] == pytest.approx(sd / mean)
    assert classes.loc["wide", "xyz"] == "Z"
    assert classes["xyz"].isna().to_dict()["two"]  # one interval is no spread
    assert classes["cv"].isna().to_dict()["same"]  # all at one instant: mean interval 0


@pytest.mark.parametrize(
    ("first", "second", "period", "same"),
    [
        pytest.param("2024-01-01", "2024-01-07", "week", True, id="monday-to-sunday"),
        pytest.param("2023-12-31", "2024-01-01", "week", False, id="sunday-then-monday"),
        pytest.param("1970-01-04", "1970-01-05", "week", False, id="first-week-boundary"),
        pytest.param("2024-01-31", "2024-02-01", "month", False, id="month-boundary"),
        pytest.param("2024-01-01", "2024-03-31", "quarter", True, id="one-quarter"),
        pytest.param("2024-03-31", "2024-04-01", "quarter", False, id="quarter-boundary"),
    ],
)
def test_period_index(first: str, second: str, period: Any, same: bool) -> None:
    times = pd.DatetimeIndex([first, second]).as_unit("ns").asi8
    index = period_index(np.asarray(times, dtype=np.int64), period)
    assert bool(index[0] == index[1]) is same
    assert index[1] - index[0] in (0, 1)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"a_share": 0.9, "b_share": 0.2}, id="shares-above-1"),
        pytest.param({"a_share": 1.0}, id="a-is-everything"),
        pytest.param({"x_max_cv": 1.5}, id="x-above-y"),
        pytest.param({"min_orders_for_xyz": 1}, id="xyz-from-one-order"),
        pytest.param({"period": "day"}, id="unknown-period"),
    ],
)
def test_settings_are_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        AbcXyzSettings.model_validate(bad)
    assert AbcXyzSettings(a_share=0.8, b_share=0.2).b_share == 0.2


def test_pareto_by_hand() -> None:
    figures = pareto([5.0, 50.0, 10.0, 30.0, 5.0])
    assert figures["n"] == 5
    assert figures["top_20_share"] == 0.5  # ceil(1) = 1 customer: 50 of 100
    assert figures["top_4_share"] == 0.5  # ceil(0.2) = 1 customer
    x, y = zip(*figures["lorenz"], strict=True)
    assert x == pytest.approx((0.0, 0.2, 0.4, 0.6, 0.8, 1.0))
    assert y == pytest.approx((0.0, 0.05, 0.1, 0.2, 0.5, 1.0))


def test_pareto_counts_customers_with_ceil() -> None:
    values = np.arange(1.0, 31.0)  # total 465
    figures = pareto(values)
    assert figures["top_20_share"] == pytest.approx((30 + 29 + 28 + 27 + 26 + 25) / 465)
    assert figures["top_4_share"] == pytest.approx((30 + 29) / 465)  # ceil(1.2) = 2
    # 20 % of 15 is 3 customers (0.2 * 15 is 3.0000000000000004 in binary: not 4).
    assert pareto(np.arange(1.0, 16.0))["top_20_share"] == pytest.approx((15 + 14 + 13) / 120)


def test_pareto_edge_cases() -> None:
    empty = pareto([])
    assert empty["n"] == 0
    assert math.isnan(empty["top_20_share"])
    assert empty["lorenz"] == []
    assert math.isnan(pareto([0.0, -3.0])["top_4_share"])
    assert pareto([-10.0, 10.0])["lorenz"] == [(0.0, 0.0), (0.5, 0.0), (1.0, 1.0)]
    big = pareto(np.ones(1000))
    assert len(big["lorenz"]) == 101
    assert big["lorenz"][0] == (0.0, 0.0)
    assert big["lorenz"][-1] == (1.0, 1.0)
    assert big["lorenz"][50] == pytest.approx((0.5, 0.5))
    assert big["top_20_share"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="finite"):
        pareto([1.0, float("nan")])


@settings(max_examples=60, deadline=None)
@given(
    shuffled_lines(),
    st.sampled_from(["revenue", "margin"]),
    st.sampled_from(["period_spend", "intervals"]),
    st.sampled_from(["week", "month", "quarter"]),
)
def test_row_order_changes_no_class_and_no_pareto_figure(
    case: tuple[pd.DataFrame, list[int]], by: Any, basis: Any, period: Any
) -> None:
    lines, permutation = case
    options = AbcXyzSettings(by=by, xyz_basis=basis, period=period)
    first = abc_xyz(prepare_orders(lines, as_of=AS_OF, money=ORDER_MONEY), settings=options)
    second = abc_xyz(
        prepare_orders(lines.iloc[permutation], as_of=AS_OF, money=ORDER_MONEY),
        settings=options,
    )
    pd.testing.assert_frame_equal(first, second)
    assert pareto(first["revenue"]) == pareto(second["revenue"].iloc[::-1])
