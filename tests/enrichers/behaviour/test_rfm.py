"""Order preparation and RFM scores, on hand-computed cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from enrichers.behaviour.rfm import (
    DEFAULT_SEGMENTS,
    EXCLUSION_REASONS,
    MoneySettings,
    PreparedOrders,
    RfmSettings,
    SegmentRule,
    prepare_orders,
    quantile_scores,
    rfm,
)

AS_OF = datetime(2024, 7, 1, tzinfo=UTC)
EUR = MoneySettings()

Line = tuple[Any, ...]
"""(profile_id, order_id, days before AS_OF, amount[, currency[, category[, margin]]])."""


def order_lines(rows: list[Line]) -> pd.DataFrame:
    """Order lines from short tuples; currency EUR and category `books` unless given."""
    full = [(*row, "EUR", "books", 1.0)[:7] if len(row) == 4 else row for row in rows]
    full = [(*row, "books", 1.0)[:7] if len(row) == 5 else row for row in full]
    full = [(*row, 1.0) if len(row) == 6 else row for row in full]
    return pd.DataFrame(
        {
            "profile_id": [r[0] for r in full],
            "order_id": [r[1] for r in full],
            "ordered_at": pd.to_datetime(
                pd.Series(
                    [None if r[2] is None else AS_OF - timedelta(days=r[2]) for r in full],
                    dtype=object,
                ),
                utc=True,
            ),
            "amount": np.array([r[3] for r in full], dtype=float),
            "currency": [r[4] for r in full],
            "category": [r[5] for r in full],
            "quantity": 1.0,
            "margin": np.array([r[6] for r in full], dtype=float),
        }
    )


def prepared(rows: list[Line], money: MoneySettings = EUR) -> PreparedOrders:
    return prepare_orders(order_lines(rows), as_of=AS_OF, money=money)


def test_currencies_are_converted_and_unknown_ones_counted() -> None:
    money = MoneySettings(rates={"USD": 0.9, "GBP": 1.2})
    orders = prepared(
        [
            ("p1", "o1", 1, 10.0, "EUR"),
            ("p1", "o1", 1, 10.0, " usd "),
            ("p1", "o1", 1, 10.0, "GBP"),
            ("p1", "o1", 1, 10.0, "JPY"),
            ("p1", "o1", 1, 10.0, None),
        ],
        money,
    )
    assert orders.orders["value"].tolist() == [31.0]
    assert orders.orders["lines"].tolist() == [3]
    assert orders.excluded["unknown_currency"] == 2
    assert orders.currency == "EUR"


def test_lines_after_as_of_are_excluded_and_counted() -> None:
    orders = prepared([("p1", "o1", 0, 5.0), ("p1", "o2", -0.5, 7.0), ("p2", "o3", -3, 1.0)])
    assert orders.orders["order_id"].tolist() == ["o1"]  # at as_of exactly still counts
    assert orders.excluded["after_as_of"] == 2
    assert list(orders.profiles) == ["p1"]


def test_every_exclusion_reason_is_counted_once_in_order() -> None:
    lines = order_lines(
        [
            (None, "o1", 1, 1.0),
            ("", None, 1, 1.0),
            ("p1", None, 1, 1.0),
            ("p1", "o2", None, 1.0),
            ("p1", "o3", -1, float("nan")),
            ("p1", "o4", 1, float("inf")),
            ("p1", "o5", 1, 1.0, "XXX"),
            ("p1", "o6", 1, 1e11),
            ("p1", "o7", 1, -1.0),
            ("p1", "o8", 1, 2.0),
        ]
    )
    orders = prepare_orders(lines, as_of=AS_OF, money=MoneySettings(returns="ignore"))
    assert dict(orders.excluded) == {
        "missing_profile_id": 2,
        "missing_order_id": 1,
        "missing_time": 1,
        "after_as_of": 1,
        "missing_amount": 1,
        "unknown_currency": 1,
        "amount_out_of_range": 1,
        "return_ignored": 1,
    }
    assert tuple(orders.excluded) == EXCLUSION_REASONS
    assert orders.orders["order_id"].tolist() == ["o8"]


def test_returns_net_reduce_the_order_and_a_refund_is_no_purchase() -> None:
    rows: list[Line] = [
        ("p1", "o1", 20, 100.0),
        ("p1", "o1", 20, -30.0),
        ("p1", "o2", 5, -20.0),
        ("p2", "o3", 3, -10.0),
        ("p3", "o4", 3, 0.0),
    ]
    net = prepared(rows)
    assert net.orders.set_index("order_id")["value"].to_dict() == {
        "o1": 70.0,
        "o2": -20.0,
        "o3": -10.0,
        "o4": 0.0,
    }
    assert net.non_purchase_orders == 3
    assert net.profiles_without_purchase == 2
    scores = rfm(net)
    assert list(scores.index) == ["p1"]
    assert scores.loc["p1", "frequency"] == 1
    assert scores.loc["p1", "monetary"] == 50.0  # 70, less the separate refund of 20
    assert scores.loc["p1", "recency_days"] == 20

    ignored = prepared(rows, MoneySettings(returns="ignore"))
    assert ignored.excluded["return_ignored"] == 3
    assert ignored.orders.set_index("order_id")["value"].to_dict() == {"o1": 100.0, "o4": 0.0}
    assert rfm(ignored).loc["p1", "monetary"] == 100.0


def test_an_order_is_timed_by_its_earliest_line_and_sorted() -> None:
    orders = prepared(
        [("p2", "b", 3, 1.0), ("p1", "z", 5, 1.0), ("p1", "z", 9, 2.0), ("p1", "a", 5, 4.0)]
    )
    table = orders.orders
    assert table[["profile_id", "order_id"]].to_numpy().tolist() == [
        ["p1", "z"],
        ["p1", "a"],
        ["p2", "b"],
    ]
    assert table["ordered_at"].tolist()[0] == pd.Timestamp(AS_OF - timedelta(days=9))
    assert table["lines"].tolist() == [2, 1, 1]
    assert str(table["ordered_at"].dtype) == "datetime64[ns, UTC]"


def test_amounts_are_exact_millionths_so_sums_tie() -> None:
    orders = prepared(
        [("p1", "o1", 1, 0.1), ("p1", "o1", 1, 0.2), ("p1", "o1", 1, 0.3), ("p2", "o2", 1, 0.6)]
    )
    assert orders.orders["value"].tolist() == [0.6, 0.6]
    scores = rfm(orders)
    assert scores["rfm_m"].tolist() == [3, 3]


def test_margin_is_converted_and_a_missing_margin_counted() -> None:
    orders = prepared(
        [("p1", "o1", 1, 10.0, "USD", "books", 2.0), ("p1", "o1", 1, 5.0, "EUR", "x", None)],
        MoneySettings(rates={"USD": 0.5}),
    )
    assert orders.has_margin
    assert orders.orders["margin_micros"].tolist() == [1_000_000]
    assert orders.missing_margin_lines == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(lambda f: f.drop(columns=["currency"]), "currency", id="missing-column"),
        pytest.param(
            lambda f: f.assign(ordered_at=f["ordered_at"].dt.tz_localize(None)),
            "time zone",
            id="naive-times",
        ),
        pytest.param(lambda f: f.assign(ordered_at="2024-01-01"), "datetime", id="text-times"),
    ],
)
def test_bad_input_shape_is_a_per_call_error(change: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        prepare_orders(change(order_lines([("p1", "o1", 1, 1.0)])), as_of=AS_OF, money=EUR)


def test_as_of_must_be_zone_aware_and_not_before_the_cut_off() -> None:
    lines = order_lines([("p1", "o1", 1, 1.0)])
    with pytest.raises(ValueError, match="time zone-aware"):
        prepare_orders(lines, as_of=datetime(2024, 7, 1), money=EUR)
    orders = prepare_orders(lines, as_of=AS_OF, money=EUR)
    with pytest.raises(ValueError, match="earlier"):
        rfm(orders, as_of=AS_OF - timedelta(days=1))
    assert rfm(orders, as_of=AS_OF + timedelta(days=10)).loc["p1", "recency_days"] == 11


@pytest.mark.parametrize(
    "money",
    [
        pytest.param({"rates": {"USD": 0}}, id="zero-rate"),
        pytest.param({"rates": {"USD": -1.0}}, id="negative-rate"),
        pytest.param({"rates": {"USD": float("inf")}}, id="infinite-rate"),
        pytest.param({"rates": {"usd": 1.0}}, id="lower-case-code"),
        pytest.param({"rates": {"EUR": 1.1}}, id="scoring-currency-not-1"),
        pytest.param({"scoring_currency": "euro"}, id="bad-scoring-currency"),
        pytest.param({"returns": "keep"}, id="unknown-returns-mode"),
    ],
)
def test_money_settings_are_validated(money: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        MoneySettings.model_validate(money)


def test_rfm_by_hand_with_a_recency_tie() -> None:
    # a: 1 order a day ago; b, c: last order 10 days ago (a tie); d: 60; e: 180 days ago.
    # F = orders 1..5, M = 100 per order. R ranks: e 1, d 2, b/c 3.5 (tie), a 5; mid-rank
    # percentiles 0.1, 0.3, 0.6, 0.9 -> R 1, 2, 4 (0.6 is a boundary: the upper score), 5.
    rows: list[Line] = [("a", "a1", 1, 100.0)]
    rows += [("b", f"b{i}", 10 + i, 100.0) for i in range(2)]
    rows += [("c", f"c{i}", 10 + i, 100.0) for i in range(3)]
    rows += [("d", f"d{i}", 60 + i, 100.0) for i in range(4)]
    rows += [("e", f"e{i}", 180 + i, 100.0) for i in range(5)]
    scores = rfm(prepared(rows))
    assert list(scores.columns) == [
        "recency_days",
        "frequency",
        "monetary",
        "rfm_r",
        "rfm_f",
        "rfm_m",
        "rfm_fm",
        "rfm_segment",
    ]
    assert scores["recency_days"].tolist() == [1, 10, 10, 60, 180]
    assert scores["frequency"].tolist() == [1, 2, 3, 4, 5]
    assert scores["monetary"].tolist() == [100.0, 200.0, 300.0, 400.0, 500.0]
    assert scores["rfm_r"].tolist() == [5, 4, 4, 2, 1]
    assert scores["rfm_f"].tolist() == [1, 2, 3, 4, 5]
    assert scores["rfm_m"].tolist() == [1, 2, 3, 4, 5]
    assert scores["rfm_fm"].tolist() == [1, 2, 3, 4, 5]
    assert scores["rfm_segment"].tolist() == [
        "New",
        "Potential loyalist",
        "Potential loyalist",
        "At risk",
        "Can't lose",
    ]


def test_fm_is_the_mean_of_f_and_m_rounded_half_up() -> None:
    # Two profiles score 2 and 4. a: one order of 500 (F 2, M 4 -> FM 3); b: two of 50
    # (F 4, M 2 -> FM 3): (2 + 4) / 2 = 3 either way. And 3 with 4 is 3.5 -> 4.
    rows: list[Line] = [("a", "a1", 3, 500.0), ("b", "b1", 3, 50.0), ("b", "b2", 3, 50.0)]
    scores = rfm(prepared(rows))
    assert scores[["rfm_f", "rfm_m", "rfm_fm"]].to_numpy().tolist() == [[2, 4, 3], [4, 2, 3]]
    # c: one order of 1000. F: a and c tie (rank 1.5 of 3, p 1/3) -> 2; M: c is top -> 5;
    # FM (2 + 5) / 2 = 3.5 -> 4, rounded half up.
    rows += [("c", "c1", 3, 1000.0)]
    three = rfm(prepared(rows))[["rfm_f", "rfm_m", "rfm_fm"]]
    assert three.to_numpy().tolist()[2] == [2, 5, 4]


def test_a_single_purchase_scores_in_the_middle() -> None:
    scores = rfm(prepared([("only", "o1", 40, 12.5)]))
    assert scores.to_numpy().tolist() == [[40, 1, 12.5, 3, 3, 3, 3, "Need attention"]]


def test_all_same_values_score_in_the_middle() -> None:
    scores = rfm(prepared([(f"p{i}", f"o{i}", 7, 50.0) for i in range(4)]))
    assert set(scores["rfm_r"]) == set(scores["rfm_f"]) == set(scores["rfm_m"]) == {3}
    assert set(scores["rfm_segment"]) == {"Need attention"}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([7.0], [3], id="one"),
        pytest.param([5.0, 5.0], [3, 3], id="two-equal"),
        pytest.param([1, 2], [2, 4], id="two"),
        pytest.param([3, 1, 2, 5, 4], [3, 1, 2, 5, 4], id="five-distinct"),
        pytest.param(list(range(10)), [1, 1, 2, 2, 3, 3, 4, 4, 5, 5], id="ten-distinct"),
        # sorted: 10,10 (rank 1.5) 20 (3) 30,30,30 (5) 40 (7); p = 1/7, 2.5/7, 4.5/7, 6.5/7
        pytest.param([30, 10, 40, 30, 20, 10, 30], [4, 1, 5, 4, 2, 1, 4], id="ties"),
    ],
)
def test_quantile_scores_by_hand(values: list[float], expected: list[int]) -> None:
    assert quantile_scores(values, bins=5).tolist() == expected


@given(st.lists(st.integers(-5, 5), min_size=1, max_size=40), st.randoms())
def test_quantile_scores_tie_order_and_range(values: list[int], rng: Any) -> None:
    scores = quantile_scores(values, bins=5)
    assert scores.min() >= 1
    assert scores.max() <= 5
    by_value = dict(zip(values, scores.tolist(), strict=True))
    order = list(range(len(values)))
    rng.shuffle(order)
    shuffled = quantile_scores([values[i] for i in order], bins=5)
    assert [by_value[values[i]] for i in order] == shuffled.tolist()
    ranked = sorted(by_value)
    assert [by_value[v] for v in ranked] == sorted(by_value[v] for v in ranked)


@pytest.mark.parametrize(
    ("r", "fm", "segment"),
    [
        (5, 5, "Champions"),
        (4, 4, "Champions"),
        (3, 5, "Loyal"),
        (5, 3, "Potential loyalist"),
        (5, 1, "New"),
        (4, 1, "Promising"),
        (3, 2, "Need attention"),
        (3, 1, "About to sleep"),
        (2, 5, "At risk"),
        (1, 3, "At risk"),
        (1, 4, "Can't lose"),
        (2, 1, "Hibernating"),
        (1, 2, "Lost"),
    ],
)
def test_default_segment_grid(r: int, fm: int, segment: str) -> None:
    matches = [
        rule.segment
        for rule in DEFAULT_SEGMENTS
        if rule.r[0] <= r <= rule.r[1] and rule.fm[0] <= fm <= rule.fm[1]
    ]
    assert matches == [segment]


def test_the_default_grid_names_the_eleven_segments() -> None:
    assert list(dict.fromkeys(rule.segment for rule in DEFAULT_SEGMENTS)) == [
        "Champions",
        "Loyal",
        "Potential loyalist",
        "New",
        "Promising",
        "Need attention",
        "About to sleep",
        "At risk",
        "Can't lose",
        "Hibernating",
        "Lost",
    ]


def test_a_segment_grid_with_gaps_and_overlaps_names_them_all() -> None:
    rules = [rule for rule in DEFAULT_SEGMENTS if rule.segment != "Lost"]
    rules.append(SegmentRule(segment="Best", r=(5, 5), fm=(5, 5)))
    with pytest.raises(ValidationError) as error:
        RfmSettings(segments=tuple(rules))
    message = str(error.value)
    assert "cells no segment covers: r=1 fm=1; r=1 fm=2" in message
    assert "cells covered twice: r=5 fm=5 (Champions, Best)" in message


def test_custom_segments_and_bins() -> None:
    grid = RfmSettings.model_validate(
        {
            "bins": 2,
            "segments": [
                {"segment": "Good", "r": [2, 2], "fm": [1, 2]},
                {"segment": "Bad", "r": [1, 1], "fm": [1, 2]},
            ],
        }
    )
    scores = rfm(prepared([("a", "1", 1, 5.0), ("b", "2", 9, 5.0)]), settings=grid)
    assert scores["rfm_r"].tolist() == [2, 1]
    assert scores["rfm_segment"].tolist() == ["Good", "Bad"]
    with pytest.raises(ValidationError, match="a score above 4"):
        RfmSettings(bins=4)
    with pytest.raises(ValidationError, match="runs backwards"):
        SegmentRule(segment="x", r=(3, 2), fm=(1, 1))


def test_no_lines_gives_no_scores() -> None:
    orders = prepared([("p1", "o1", -5, 1.0)])
    assert len(orders.orders) == 0
    assert len(rfm(orders)) == 0


CURRENCIES = ["EUR", "USD", "usd", "JPY", None]
CATEGORIES = ["outdoor.hiking", "Books ", "books", "Home & Garden", None]
AMOUNTS = [-20.0, -5.5, 0.0, 0.1, 0.2, 0.3, 10.0, 19.99, 100.0, float("nan")]
ORDER_MONEY = MoneySettings(rates={"USD": 0.9})


@st.composite
def shuffled_lines(draw: st.DrawFn) -> tuple[pd.DataFrame, list[int]]:
    """Random order lines and a permutation of their rows."""
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["p1", "p2", "p3", "p4"]),
                st.sampled_from(["o1", "o2", "o3", "o4", "o5"]),
                st.integers(-3, 200),
                st.sampled_from(AMOUNTS),
                st.sampled_from(CURRENCIES),
                st.sampled_from(CATEGORIES),
                st.sampled_from([1.0, -2.0, 0.25, float("nan")]),
            ),
            max_size=30,
        )
    )
    return order_lines(rows), draw(st.permutations(range(len(rows))))


@settings(max_examples=60, deadline=None)
@given(shuffled_lines(), st.sampled_from(["net", "ignore"]))
def test_row_order_changes_no_prepared_order_and_no_rfm_score(
    case: tuple[pd.DataFrame, list[int]], returns: str
) -> None:
    lines, permutation = case
    money = ORDER_MONEY.model_copy(update={"returns": returns})
    first = prepare_orders(lines, as_of=AS_OF, money=money)
    second = prepare_orders(lines.iloc[permutation], as_of=AS_OF, money=money)
    pd.testing.assert_frame_equal(first.orders, second.orders)
    pd.testing.assert_index_equal(first.profiles, second.profiles)
    assert first.excluded == second.excluded
    assert first.missing_margin_lines == second.missing_margin_lines
    pd.testing.assert_frame_equal(rfm(first), rfm(second))
