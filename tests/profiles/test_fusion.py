"""Fusion: the log-odds model, the declared rules, provenance, and its properties."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profiles.fusion import (
    CONTRIBUTION_COLUMNS,
    MERGED_COLUMNS,
    FusionSettings,
    ProviderFusion,
    fuse,
    interest_lists,
    summary_of,
    top_topics,
)
from profiles.taxonomy import load_taxonomy

NOW = datetime(2026, 11, 1, tzinfo=UTC)
TAXONOMY = load_taxonomy()
TOPICS = ("interest.travel", "interest.cooking", "interest.outdoor.hiking")
PROVIDERS = ("sim_person", "sim_segments", "behaviour")


def _frame(*rows: tuple[str, str, float, str, int, str]) -> pd.DataFrame:
    """(profile, topic, confidence, provider, age in days, kind) per signal."""
    return pd.DataFrame(
        {
            "profile_id": [r[0] for r in rows],
            "topic": [r[1] for r in rows],
            "confidence": [r[2] for r in rows],
            "provider": [r[3] for r in rows],
            "observed_at": [NOW - timedelta(days=r[4]) for r in rows],
            "kind": [r[5] for r in rows],
        }
    )


def _confidence(
    signals: pd.DataFrame, cfg: FusionSettings | None = None
) -> dict[tuple[str, str], float]:
    merged = fuse(signals, taxonomy=TAXONOMY, settings=cfg or FusionSettings(), now=NOW).merged
    return {
        (p, t): float(c)
        for p, t, c in zip(merged["profile_id"], merged["topic"], merged["confidence"], strict=True)
    }


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_two_independent_supporting_signals_add_their_log_likelihood_ratios() -> None:
    prior = TAXONOMY.priors["interest.travel"]
    got = _confidence(
        _frame(
            ("a", "interest.travel", 0.8, "sim_person", 0, "inferred"),
            ("a", "interest.travel", 0.7, "sim_segments", 0, "inferred"),
        )
    )
    expected = _logit(prior) + (_logit(0.8) - _logit(prior)) + (_logit(0.7) - _logit(prior))
    assert got[("a", "interest.travel")] == pytest.approx(1 / (1 + math.exp(-expected)))
    # stronger than either source alone
    assert got[("a", "interest.travel")] > 0.8


def test_weight_offset_and_half_life_enter_the_evidence() -> None:
    prior = TAXONOMY.priors["interest.travel"]
    cfg = FusionSettings(
        providers={"sim_person": ProviderFusion(weight=0.5, offset=-0.2)},
        half_life_days={"inferred": 30},
    )
    got = _confidence(_frame(("a", "interest.travel", 0.8, "sim_person", 60, "inferred")), cfg)
    evidence = 0.5 * 0.25 * (_logit(0.8) - 0.2 - _logit(prior))
    assert got[("a", "interest.travel")] == pytest.approx(
        1 / (1 + math.exp(-(_logit(prior) + evidence)))
    )


def test_topic_prior_override_is_the_starting_point() -> None:
    cfg = FusionSettings(priors={"interest.travel": 0.3})
    # a signal at the prior says nothing
    got = _confidence(_frame(("a", "interest.travel", 0.3, "sim_person", 0, "inferred")), cfg)
    assert got[("a", "interest.travel")] == pytest.approx(0.3)


def test_declared_not_interested_overrides_inferred_interest() -> None:
    signals = _frame(
        ("a", "interest.travel", 0.99, "sim_person", 0, "inferred"),
        ("a", "interest.travel", 0.95, "sim_segments", 0, "inferred"),
        ("a", "interest.travel", 0.03, "declared", 10, "declared"),
    )
    fusion = fuse(signals, taxonomy=TAXONOMY, settings=FusionSettings(), now=NOW)
    row = fusion.merged.iloc[0]
    assert row["confidence"] < TAXONOMY.priors["interest.travel"]
    assert row["kind"] == "declared"
    assert row["contributors"] == 1
    ignored = fusion.contributions[fusion.contributions["provider"] != "declared"]
    assert (ignored["weight"] == 0).all()
    assert (ignored["evidence"] == 0).all()


def test_declared_interest_cannot_be_argued_down_but_can_be_supported() -> None:
    alone = _confidence(_frame(("a", "interest.travel", 0.95, "declared", 0, "declared")))
    against = _confidence(
        _frame(
            ("a", "interest.travel", 0.95, "declared", 0, "declared"),
            ("a", "interest.travel", 0.01, "sim_person", 0, "inferred"),
        )
    )
    support = _confidence(
        _frame(
            ("a", "interest.travel", 0.95, "declared", 0, "declared"),
            ("a", "interest.travel", 0.9, "sim_person", 0, "inferred"),
        )
    )
    key = ("a", "interest.travel")
    assert against[key] == pytest.approx(alone[key])
    assert support[key] > alone[key]


def test_only_the_newest_declared_answer_counts() -> None:
    signals = _frame(
        ("a", "interest.travel", 0.95, "declared", 400, "declared"),
        ("a", "interest.travel", 0.03, "declared", 5, "declared"),
    )
    fusion = fuse(signals, taxonomy=TAXONOMY, settings=FusionSettings(), now=NOW)
    assert fusion.merged.iloc[0]["confidence"] < 0.05
    old = fusion.contributions[fusion.contributions["age_days"] > 100]
    assert old["weight"].tolist() == [0.0]


def test_contributions_keep_provider_score_age_and_weight() -> None:
    fusion = fuse(
        _frame(
            ("a", "interest.travel", 0.8, "sim_person", 90, "inferred"),
            ("a", "interest.travel", 0.6, "behaviour", 0, "observed"),
        ),
        taxonomy=TAXONOMY,
        settings=FusionSettings(),
        now=NOW,
    )
    assert tuple(fusion.contributions.columns) == CONTRIBUTION_COLUMNS
    assert tuple(fusion.merged.columns) == MERGED_COLUMNS
    c = fusion.contributions.set_index("provider")
    assert c.loc["sim_person", "score"] == 0.8
    assert c.loc["sim_person", "age_days"] == pytest.approx(90)
    assert c.loc["sim_person", "weight"] == pytest.approx(0.5)  # one inferred half-life
    assert c.loc["behaviour", "weight"] == pytest.approx(1.0)
    assert fusion.merged.iloc[0]["kind"] == "observed"
    assert fusion.merged.iloc[0]["contributors"] == 2


def test_interest_lists_nest_topics_and_contributors_per_profile_in_order() -> None:
    fusion = fuse(
        _frame(
            ("b", "interest.cooking", 0.6, "sim_person", 0, "inferred"),
            ("b", "interest.travel", 0.9, "sim_person", 0, "inferred"),
            ("a", "interest.travel", 0.7, "behaviour", 0, "observed"),
        ),
        taxonomy=TAXONOMY,
        settings=FusionSettings(),
        now=NOW,
    )
    lists = interest_lists(fusion, pd.Series(["b", "nobody", "a"]))
    assert isinstance(lists, pa.ListArray)
    got = lists.to_pylist()
    assert [i["topic"] for i in got[0]] == ["interest.travel", "interest.cooking"]
    assert got[1] == []
    assert got[2][0]["contributors"] == [
        {"provider": "behaviour", "kind": "observed", "score": 0.7, "age_days": 0.0, "weight": 1.0}
    ]
    top = top_topics(fusion.merged, pd.Series(["b", "nobody", "a"]), n=1, floor=0.65)
    assert top.to_pylist() == [["interest.travel"], [], ["interest.travel"]]
    two = top_topics(fusion.merged, pd.Series(["b"]), n=2, floor=0.5)
    assert two.to_pylist() == [["interest.travel", "interest.cooking"]]
    summary = summary_of(fusion, TAXONOMY)
    assert summary["profiles_with_interests"] == 2
    assert summary["topics"]["interest.travel"]["label"] == "Travel"


def test_unknown_topics_and_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="taxonomy does not list"):
        fuse(
            _frame(("a", "interest.astrology", 0.8, "p", 0, "inferred")),
            taxonomy=TAXONOMY,
            settings=FusionSettings(),
            now=NOW,
        )
    with pytest.raises(ValueError, match="unknown signal kind"):
        fuse(
            _frame(("a", "interest.travel", 0.8, "p", 0, "rumoured")),
            taxonomy=TAXONOMY,
            settings=FusionSettings(),
            now=NOW,
        )


def test_empty_signals_give_an_empty_result() -> None:
    fusion = fuse(_frame(), taxonomy=TAXONOMY, settings=FusionSettings(), now=NOW)
    assert fusion.merged.empty
    assert tuple(fusion.merged.columns) == MERGED_COLUMNS
    assert interest_lists(fusion, pd.Series(["a"])).to_pylist() == [[]]


# --- properties ------------------------------------------------------------------------------

confidences = st.floats(min_value=1e-4, max_value=1 - 1e-4)
signal = st.tuples(
    st.sampled_from(("a", "b")),
    st.sampled_from(TOPICS),
    confidences,
    st.sampled_from((*PROVIDERS, "declared")),
    st.integers(min_value=0, max_value=2000),
    st.sampled_from(("inferred", "observed")),
)


def _valid(rows: list[tuple[str, str, float, str, int, str]]) -> pd.DataFrame:
    # a declared provider's signals are declared; others keep their drawn kind
    fixed = [(p, t, c, v, a, "declared" if v == "declared" else k) for p, t, c, v, a, k in rows]
    return _frame(*fixed)


@settings(max_examples=60, deadline=None)
@given(st.lists(signal, max_size=12))
def test_output_is_a_probability_strictly_inside_zero_and_one(rows: list) -> None:  # type: ignore[type-arg]
    for value in _confidence(_valid(rows)).values():
        assert 0 < value < 1


@settings(max_examples=60, deadline=None)
@given(st.lists(signal, min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_result_does_not_depend_on_signal_order(rows: list, rnd) -> None:  # type: ignore[no-untyped-def, type-arg]
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    assert _confidence(_valid(rows)) == _confidence(_valid(shuffled))


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(signal, max_size=10),
    topic=st.sampled_from(TOPICS),
    provider=st.sampled_from(PROVIDERS),
    lift=st.floats(min_value=0.0, max_value=0.95),
    age=st.integers(min_value=0, max_value=2000),
    kind=st.sampled_from(("inferred", "observed")),
)
def test_adding_a_supporting_signal_never_lowers_confidence(  # type: ignore[no-untyped-def]
    *, rows, topic, provider, lift, age, kind
) -> None:
    prior = TAXONOMY.priors[topic]
    supporting = ("a", topic, prior + lift * (1 - prior) + 1e-6, provider, age, kind)
    before = _confidence(_valid(rows)).get(("a", topic), prior)
    after = _confidence(_valid([*rows, supporting])).get(("a", topic), prior)
    assert after >= before - 1e-12


@settings(max_examples=60, deadline=None)
@given(st.lists(signal, max_size=10), st.lists(signal, min_size=1, max_size=5))
def test_a_zero_weight_provider_changes_nothing(rows: list, ignored: list) -> None:  # type: ignore[type-arg]
    cfg = FusionSettings(providers={"muted": ProviderFusion(weight=0.0)})
    muted = [(p, t, c, "muted", a, k) for p, t, c, _, a, k in ignored]
    assert _confidence(_valid([*rows, *muted]), cfg) == _confidence(_valid(rows), cfg)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(TOPICS),
    confidences,
    st.sampled_from((*PROVIDERS, "declared")),
    st.integers(min_value=0, max_value=3000),
    st.integers(min_value=1, max_value=3000),
)
def test_decay_moves_a_signal_monotonically_towards_the_prior_with_age(  # type: ignore[no-untyped-def]
    topic, confidence, provider, age, more
) -> None:
    kind = "declared" if provider == "declared" else "inferred"
    prior = TAXONOMY.priors[topic]
    young = _confidence(_frame(("a", topic, confidence, provider, age, kind))).get(("a", topic))
    old = _confidence(_frame(("a", topic, confidence, provider, age + more, kind))).get(
        ("a", topic)
    )
    assert young is not None
    assert old is not None
    assert abs(old - prior) <= abs(young - prior) + 1e-12
    assert (old - prior) * (young - prior) >= -1e-15  # never crosses the prior (beyond rounding)


def test_fusion_is_columnar_at_scale() -> None:
    rng = np.random.default_rng(0)
    n = 50_000
    signals = pd.DataFrame(
        {
            "profile_id": rng.integers(0, 10_000, n).astype(str),
            "topic": rng.choice(TOPICS, n),
            "confidence": rng.uniform(0.01, 0.99, n),
            "provider": rng.choice(PROVIDERS, n),
            "observed_at": NOW - pd.to_timedelta(rng.integers(0, 400, n), unit="D"),
            "kind": "inferred",
        }
    )
    fusion = fuse(signals, taxonomy=TAXONOMY, settings=FusionSettings(), now=NOW)
    assert len(fusion.contributions) == n
    assert fusion.merged["contributors"].sum() == n
