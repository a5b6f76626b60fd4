"""Behaviour scoring in parts: `summarise` per group of profiles, then `score_parts`, is
`score` over all the lines, bit for bit, however the profiles are split."""

from __future__ import annotations

import json
import math
import pickle
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st

from enrichers.behaviour import clv
from enrichers.behaviour.abcxyz import AbcXyzSettings
from enrichers.behaviour.config import BehaviourSettings, ClvSettings, parse_behaviour
from enrichers.behaviour.interests import InterestSettings
from enrichers.behaviour.provider import (
    BehaviourPart,
    BehaviourResult,
    score,
    score_parts,
    summarise,
)
from profiles import synth
from tests.enrichers.behaviour.test_clv import CDNOW, EPOCH, GG_CDNOW
from tests.enrichers.behaviour.test_clv import _order_lines as simulated_lines
from tests.enrichers.behaviour.test_rfm import (
    AMOUNTS,
    AS_OF,
    CATEGORIES,
    CURRENCIES,
    ORDER_MONEY,
    order_lines,
)

SHOP_AS_OF = datetime(2026, 11, 1, 23, 59, 59, tzinfo=UTC)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, BehaviourSettings]:
    """The synthetic shop's order lines, typed as the nightly flow types them (guest orders
    belong to a profile per checkout address), and its behaviour settings."""
    made = synth.generate(1500, tmp_path_factory.mktemp("shop") / "shop", seed=5)
    raw = pd.read_csv(
        made.out_dir / "data" / "orders.csv",
        dtype=str,
        keep_default_na=False,
        on_bad_lines="skip",  # the generator breaks a few rows on purpose
    )
    guest = "g" + pd.Series(pd.factorize(raw["checkout_email"])[0]).map("{:05d}".format)
    lines = pd.DataFrame(
        {
            "profile_id": raw["customer_ref"].where(raw["customer_ref"] != "", guest),
            "order_id": raw["order_number"],
            "ordered_at": pd.to_datetime(
                raw["ordered_at"], utc=True, errors="coerce", format="ISO8601"
            ),
            "amount": pd.to_numeric(raw["line_amount"], errors="coerce"),
            "currency": raw["currency"].str.strip().str.upper(),
            "category": raw["product_category"].str.strip(),
            "quantity": pd.to_numeric(raw["qty"], errors="coerce"),
        }
    )
    config = yaml.safe_load(made.config_path.read_text("utf-8"))
    behaviour = parse_behaviour(config.get("behaviour", {}), path=made.config_path)
    return lines, behaviour


def groups_of(lines: pd.DataFrame, cuts: list[int]) -> list[pd.DataFrame]:
    """The lines of contiguous runs of profiles (sorted by id), cut before the given ranks;
    lines without a profile go to the first group (they are only counted)."""
    ids = np.sort(lines["profile_id"].dropna().unique().astype(object))
    rank = np.searchsorted(ids, lines["profile_id"].fillna("").to_numpy(dtype=object))
    group = np.searchsorted(np.asarray(sorted(cuts)), rank, side="right")
    return [lines[group == k] for k in range(len(cuts) + 1)]


def assert_same(result: BehaviourResult, expected: BehaviourResult) -> None:
    """Equal to the last bit: the parts are stacked in profile_id order before anything is
    ranked, summed or fitted, so no float sum changes its order and no tolerance is needed."""
    pd.testing.assert_frame_equal(
        result.scores,
        expected.scores,
        check_exact=True,
        check_index_type=True,
        check_column_type=True,
        check_categorical=True,
    )
    pd.testing.assert_frame_equal(
        result.signals,
        expected.signals,
        check_exact=True,
        check_index_type=True,
        check_column_type=True,
    )
    # as JSON (what the run summary holds): NaN equals NaN, keys in the same order
    assert json.dumps(result.report) == json.dumps(expected.report)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_the_shop_split_into_k_groups_scores_as_one(
    shop: tuple[pd.DataFrame, BehaviourSettings], k: int
) -> None:
    lines, behaviour = shop
    expected = score(lines, as_of=SHOP_AS_OF, settings=behaviour)
    models = expected.report["models"]
    assert {"holdout", "bgnbd", "gamma_gamma"} <= set(models)  # the fits ran
    assert len(expected.signals) > 100
    assert expected.report["lines_excluded"]
    customers = lines["profile_id"].nunique()
    rng = np.random.default_rng(k)
    for _ in range(2):
        cuts = sorted(rng.choice(np.arange(1, customers), size=k - 1, replace=False).tolist())
        parts = [
            summarise(group, as_of=SHOP_AS_OF, settings=behaviour)
            for group in groups_of(lines, cuts)
        ]
        assert_same(score_parts(parts, as_of=SHOP_AS_OF, settings=behaviour), expected)
        # in any order of the parts, and after a trip through pickle (a process pool's)
        shuffled = [
            pickle.loads(pickle.dumps(parts[i]))  # noqa: S301 - our own bytes
            for i in rng.permutation(k)
        ]
        assert_same(score_parts(shuffled, as_of=SHOP_AS_OF, settings=behaviour), expected)


def test_a_part_grows_with_its_profiles_not_their_lines(
    shop: tuple[pd.DataFrame, BehaviourSettings],
) -> None:
    lines, behaviour = shop
    part = summarise(lines, as_of=SHOP_AS_OF, settings=behaviour)
    # every line again, in orders of their own the day before: twice the lines and orders
    again = lines.assign(
        order_id=lines["order_id"] + "b", ordered_at=lines["ordered_at"] - timedelta(days=1)
    )
    doubled = summarise(pd.concat([lines, again]), as_of=SHOP_AS_OF, settings=behaviour)
    assert doubled.orders == 2 * part.orders
    buyers = len(part.rfm)
    for each in (part, doubled):
        assert len(each.rfm) == len(each.abc_xyz) == len(each.clv) == buyers
        assert each.holdout is not None
        assert len(each.holdout) <= buyers
        topics = each.interests.pairs["topic"].nunique()
        assert len(each.interests.pairs) <= buyers * topics
    assert len(doubled.interests.pairs) == len(part.interests.pairs)


def test_a_profile_in_two_parts_is_refused(shop: tuple[pd.DataFrame, BehaviourSettings]) -> None:
    lines, behaviour = shop
    half = len(lines) // 2
    parts = [
        summarise(lines.iloc[:half], as_of=SHOP_AS_OF, settings=behaviour),
        summarise(lines.iloc[half:], as_of=SHOP_AS_OF, settings=behaviour),
    ]
    with pytest.raises(ValueError, match="a profile is in more than one part"):
        score_parts(parts, as_of=SHOP_AS_OF, settings=behaviour)


def test_parts_must_share_as_of_and_settings() -> None:
    lines = order_lines([("p1", "o1", 3, 10.0)])
    part = summarise(lines, as_of=AS_OF, settings=BehaviourSettings())
    with pytest.raises(ValueError, match="as of another time"):
        score_parts([part], as_of=AS_OF + timedelta(days=1), settings=BehaviourSettings())
    other = BehaviourSettings(clv=ClvSettings(holdout_days=0))
    with pytest.raises(ValueError, match="with other settings"):
        score_parts([part], as_of=AS_OF, settings=other)
    with pytest.raises(ValueError, match="at least one part"):
        score_parts([], as_of=AS_OF, settings=BehaviourSettings())
    with pytest.raises(ValueError, match="time zone-aware"):
        score_parts([part], as_of=AS_OF.replace(tzinfo=None), settings=BehaviourSettings())


def test_no_lines_are_one_empty_part() -> None:
    empty = order_lines([])
    part = summarise(empty, as_of=AS_OF, settings=BehaviourSettings())
    assert isinstance(part, BehaviourPart)
    assert_same(
        score_parts([part, part], as_of=AS_OF, settings=BehaviourSettings()),
        score(empty, as_of=AS_OF, settings=BehaviourSettings()),
    )


def test_the_holdout_check_in_parts_is_the_holdout_check() -> None:
    orders = simulated_lines(
        np.random.default_rng(3), 3000, days=546, acquisition_days=84, params=CDNOW, values=GG_CDNOW
    )
    window: dict[str, Any] = {
        "calibration_end": EPOCH + timedelta(weeks=39),
        "observation_end": EPOCH + timedelta(weeks=78),
        "period": "week",
    }
    expected = clv.holdout_check(orders, **window)
    assert expected.bgnbd.converged
    assert math.isfinite(expected.predicted_total)
    ids = orders["profile_id"].str.slice(1).astype(int)
    groups = [orders[ids < 1000], orders[(ids >= 1000) & (ids < 2500)], orders[ids >= 2500]]
    stacked = pd.concat([clv.holdout_summary(group, **window) for group in groups])
    result = clv.holdout_result(stacked.sort_index(kind="stable"), **window)
    assert result.as_dict() == expected.as_dict()
    pd.testing.assert_frame_equal(result.per_customer, expected.per_customer, check_exact=True)
    with pytest.raises(ValueError, match="later period"):
        clv.holdout_result(stacked, **(window | {"observation_end": window["calibration_end"]}))


PROFILES = [f"p{i}" for i in range(8)]


@st.composite
def split_lines(draw: st.DrawFn) -> tuple[pd.DataFrame, list[int], list[int]]:
    """Random order lines of up to eight profiles, cut points and an order of the groups:
    mostly plain purchases (so that the models are fitted), some lines with every kind of
    trouble (some without a profile)."""
    profile = st.sampled_from(PROFILES)
    order = st.sampled_from([f"o{i}" for i in range(12)])
    plain = st.tuples(
        profile,
        order,
        st.integers(0, 400),
        st.sampled_from([5.0, 12.5, 19.99, 40.0, 100.0]),
        st.just("EUR"),
        st.sampled_from(["outdoor.hiking", "books", "home.kitchen"]),
        st.sampled_from([1.0, 2.5]),
    )
    messy = st.tuples(
        st.sampled_from([*PROFILES, None]),
        order,
        st.integers(-3, 400),
        st.sampled_from(AMOUNTS),
        st.sampled_from(CURRENCIES),
        st.sampled_from(CATEGORIES),
        st.sampled_from([1.0, -2.0, 0.25, float("nan")]),
    )
    rows = draw(st.lists(plain, max_size=60)) + draw(st.lists(messy, max_size=15))
    cuts = draw(st.lists(st.integers(1, len(PROFILES) - 1), max_size=4, unique=True))
    return (
        order_lines(draw(st.permutations(rows))),
        cuts,
        draw(st.permutations(range(len(cuts) + 1))),
    )


@settings(max_examples=30, deadline=None)
@given(
    case=split_lines(),
    returns=st.sampled_from(["net", "ignore"]),
    by=st.sampled_from(["revenue", "margin"]),
    basis=st.sampled_from(["period_spend", "intervals"]),
    base_rate=st.sampled_from([None, 0.2]),
    clv_options=st.sampled_from([("day", 30), ("week", 0), ("week", 90)]),
)
def test_any_split_of_the_profiles_scores_as_one(
    *,
    case: tuple[pd.DataFrame, list[int], list[int]],
    returns: Any,
    by: Any,
    basis: Any,
    base_rate: float | None,
    clv_options: tuple[Any, int],
) -> None:
    lines, cuts, shuffle = case
    period, holdout_days = clv_options
    behaviour = BehaviourSettings(
        money=ORDER_MONEY.model_copy(update={"returns": returns}),
        abc_xyz=AbcXyzSettings(by=by, xyz_basis=basis),
        interests=InterestSettings(base_rate=base_rate, min_confidence=0.3),
        # fit the models on a handful of customers, so that the fits are split too
        clv=ClvSettings(period=period, holdout_days=holdout_days, min_repeat_customers=2),
    )
    try:
        expected = score(lines, as_of=AS_OF, settings=behaviour)
    except (ValueError, ArithmeticError) as error:
        # no purchase before the hold-out window; or, on a handful of customers, a degenerate
        # fit whose prediction divides by an underflowed Beta function: split, the same error
        event("refused")
        with pytest.raises(type(error), match=re.escape(str(error))):
            score_parts(
                [summarise(g, as_of=AS_OF, settings=behaviour) for g in groups_of(lines, cuts)],
                as_of=AS_OF,
                settings=behaviour,
            )
        return
    event("models fitted" if "bgnbd" in expected.report["models"] else "models skipped")
    parts = [summarise(g, as_of=AS_OF, settings=behaviour) for g in groups_of(lines, cuts)]
    assert_same(score_parts(parts, as_of=AS_OF, settings=behaviour), expected)
    shuffled = [parts[i] for i in shuffle]
    assert_same(score_parts(shuffled, as_of=AS_OF, settings=behaviour), expected)
