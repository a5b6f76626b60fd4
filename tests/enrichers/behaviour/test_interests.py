"""Category interest signals, on hand-computed cases."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from enrichers.behaviour.interests import (
    DROP_REASONS,
    INTEREST_COLUMNS,
    InterestSettings,
    category_interests,
)
from enrichers.behaviour.rfm import prepare_orders
from profiles.store.signals import TOPIC_PATTERN
from tests.enrichers.behaviour.test_rfm import (
    AS_OF,
    ORDER_MONEY,
    Line,
    prepared,
    shuffled_lines,
)

HIKING = "interest.outdoor.hiking"
BOOKS = "interest.books"

ROWS: list[Line] = [
    # a: four purchases, hiking in three, books in one; one line cannot be a topic.
    ("a", "a1", 40, 30.0, "EUR", "Outdoor.Hiking "),
    ("a", "a2", 30, 20.0, "EUR", "outdoor.hiking"),
    ("a", "a3", 20, 40.0, "EUR", "outdoor.hiking"),
    ("a", "a3", 20, 10.0, "EUR", "books"),
    ("a", "a4", 10, 50.0, "EUR", "Home & Garden"),
    # b: one purchase of books.
    ("b", "b1", 5, 25.0, "EUR", "books"),
    # c: one purchase of hiking, with a hiking return in the same order (net 10).
    ("c", "c1", 5, 15.0, "EUR", "outdoor.hiking"),
    ("c", "c1", 5, -5.0, "EUR", "outdoor.hiking"),
    # d: a refund only: no purchase, no signal.
    ("d", "d1", 5, -10.0, "EUR", "books"),
]
# Purchases 6; hiking in 4 (base rate 2/3), books in 2 (1/3). Prior strength 2.


def signals_of(rows: list[Line], **options: Any) -> pd.DataFrame:
    return category_interests(prepared(rows), settings=InterestSettings(**options))


def test_confidence_is_the_smoothed_share_by_hand() -> None:
    signals = signals_of(ROWS)
    assert tuple(signals.columns) == INTEREST_COLUMNS
    assert signals[["profile_id", "topic"]].values.tolist() == [
        ["a", BOOKS],
        ["a", HIKING],
        ["b", BOOKS],
        ["c", HIKING],
    ]
    assert signals["confidence"].tolist() == pytest.approx(
        [
            (1 + 2 / 3) / (4 + 2),  # 5/18
            (3 + 4 / 3) / (4 + 2),  # 13/18
            (1 + 2 / 3) / (1 + 2),  # 5/9
            (1 + 4 / 3) / (1 + 2),  # 7/9
        ]
    )
    assert signals["orders"].tolist() == [1, 3, 1, 1]
    assert signals["profile_orders"].tolist() == [4, 4, 1, 1]
    assert signals["order_share"].tolist() == [0.25, 0.75, 1.0, 1.0]
    assert signals["spend_share"].tolist() == pytest.approx([10 / 150, 90 / 150, 1.0, 1.0])
    assert signals["base_rate"].tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 3, 2 / 3])
    assert set(signals["kind"]) == {"observed"}
    assert set(signals["observed_at"]) == {pd.Timestamp(AS_OF)}
    assert str(signals["observed_at"].dtype) == "datetime64[ns, UTC]"
    assert signals["topic"].str.fullmatch(TOPIC_PATTERN).all()
    assert signals.attrs["dropped"] == {
        "missing_category": 0,
        "unmappable_category": 1,
        "below_min_orders": 0,
        "below_min_confidence": 0,
    }
    assert tuple(signals.attrs["dropped"]) == DROP_REASONS


def test_a_fixed_base_rate() -> None:
    signals = signals_of(ROWS, base_rate=0.1, prior_strength=4.0)
    assert signals["confidence"].tolist() == pytest.approx(
        [(1 + 0.4) / 8, (3 + 0.4) / 8, (1 + 0.4) / 5, (1 + 0.4) / 5]
    )
    assert set(signals["base_rate"]) == {0.1}


def test_a_return_line_does_not_make_an_order_contain_its_category() -> None:
    rows: list[Line] = [
        ("e", "e1", 3, 20.0, "EUR", "books"),
        ("e", "e1", 3, -5.0, "EUR", "outdoor.hiking"),
        ("e", "e2", 2, 0.0, "EUR", "outdoor.hiking"),  # free order: no purchase
    ]
    signals = signals_of(rows)
    assert signals["topic"].tolist() == [BOOKS]
    assert signals["spend_share"].tolist() == [1.0]  # 20 of a 15 order, clipped


def test_categories_map_to_topics_and_share_them() -> None:
    rows: list[Line] = [
        ("a", "1", 3, 10.0, "EUR", "Books"),
        ("a", "1", 3, 10.0, "EUR", "magazines"),
        ("a", "2", 2, 10.0, "EUR", "garden & patio"),
        ("a", "3", 1, 10.0, "EUR", None),
    ]
    mapping = {"books ": "interest.reading", "MAGAZINES": "interest.reading"}
    signals = signals_of(rows, category_map=mapping | {"garden & patio": "interest.garden"})
    assert signals["topic"].tolist() == ["interest.garden", "interest.reading"]
    assert signals["orders"].tolist() == [1, 1]  # books and magazines: one order, once
    assert signals["spend_share"].tolist() == pytest.approx([1 / 4, 2 / 4])
    assert signals.attrs["dropped"]["missing_category"] == 1
    unmapped = signals_of(rows, topic_prefix="shop")
    assert unmapped["topic"].tolist() == ["shop.books", "shop.magazines"]
    assert unmapped.attrs["dropped"]["unmappable_category"] == 1


def test_too_few_orders_and_low_confidence_are_dropped_and_counted() -> None:
    few = signals_of(ROWS, min_orders=2)
    assert few["profile_id"].tolist() == ["a", "a"]
    assert few.attrs["dropped"]["below_min_orders"] == 2
    unsure = signals_of(ROWS, min_confidence=0.5)
    assert unsure["topic"].tolist() == [HIKING, BOOKS, HIKING]
    assert unsure.attrs["dropped"]["below_min_confidence"] == 1


def test_confidence_stays_inside_zero_and_one() -> None:
    signals = signals_of([("a", "1", 1, 5.0, "EUR", "books")], prior_strength=0.0)
    assert signals["confidence"].tolist() == [1 - 1e-6]


def test_no_purchases_give_no_signals() -> None:
    signals = signals_of([("d", "d1", 5, -10.0, "EUR", "books")])
    assert len(signals) == 0
    assert tuple(signals.columns) == INTEREST_COLUMNS


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"category_map": {"Books": "interest.a", "books ": "interest.b"}}, id="twice"),
        pytest.param({"category_map": {"books": "Interest.Books"}}, id="bad-topic"),
        pytest.param({"category_map": {" ": "interest.x"}}, id="empty-category"),
        pytest.param({"topic_prefix": "interest."}, id="bad-prefix"),
        pytest.param({"prior_strength": -1.0}, id="negative-prior"),
        pytest.param({"base_rate": 1.0}, id="base-rate-1"),
        pytest.param({"min_orders": 0}, id="no-orders"),
        pytest.param({"min_confidence": 1.0}, id="confidence-1"),
    ],
)
def test_settings_are_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        InterestSettings.model_validate(bad)


@settings(max_examples=60, deadline=None)
@given(shuffled_lines(), st.sampled_from(["net", "ignore"]), st.sampled_from([None, 0.2]))
def test_row_order_changes_no_signal(
    case: tuple[pd.DataFrame, list[int]], returns: str, base_rate: float | None
) -> None:
    lines, permutation = case
    money = ORDER_MONEY.model_copy(update={"returns": returns})
    options = InterestSettings(base_rate=base_rate, min_confidence=0.0)
    first = category_interests(prepare_orders(lines, as_of=AS_OF, money=money), settings=options)
    second = category_interests(
        prepare_orders(lines.iloc[permutation], as_of=AS_OF, money=money), settings=options
    )
    pd.testing.assert_frame_equal(first, second)
    assert first.attrs == second.attrs
