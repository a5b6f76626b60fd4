"""Personas: k choice, names, rules, and k-anonymous persona cards."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sklearn.metrics import silhouette_score

from profiles.personas import (
    AGE_BANDS,
    NO_PURCHASES,
    ONE_PERSONA,
    OTHER,
    UNKNOWN,
    PersonaAssignment,
    PersonaSettings,
    RuleCondition,
    assign_personas,
    persona_cards,
    persona_features,
    sizes_by_name,
)

AS_OF = datetime(2026, 11, 23)
LABELS = {
    "interest.outdoor": "Outdoor",
    "interest.outdoor.hiking": "Hiking",
    "interest.beauty": "Beauty",
    "interest.beauty.skincare": "Skincare",
    "interest.food": "Food",
    "interest.food.cooking": "Cooking",
}
GROUPS = ("high", "lapsed", "prospect")
TOPICS = (
    "interest.outdoor.hiking",
    "interest.outdoor.camping",
    "interest.beauty.skincare",
    "interest.food.cooking",
    "interest.food",
    "interest.travel.city_breaks",
)
SOURCES = ("crm", "orders", "newsletter", "preference_centre", "consents")


def _ids(n: int) -> list[str]:
    return [f"pid-{i:06d}-x" for i in range(n)]


def three_groups(size: int = 250, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """High spenders (outdoor), lapsed low spenders (cooking), prospects (beauty)."""
    rng = np.random.default_rng(seed)
    n = 3 * size
    group = np.repeat(np.arange(3), size)
    high, buyer = group == 0, group < 2

    def score(high_range: tuple[int, int], low_range: tuple[int, int]) -> np.ndarray:
        values = np.where(high, rng.integers(*high_range, n), rng.integers(*low_range, n))
        return np.where(buyer, values, np.nan)

    churn = np.where(
        buyer, np.where(high, rng.uniform(0.0, 0.1, n), rng.uniform(0.8, 0.95, n)), np.nan
    )
    clv = np.where(
        buyer, np.where(high, rng.lognormal(7, 0.2, n), rng.lognormal(2, 0.2, n)), np.nan
    )
    ids = _ids(n)
    profiles = pd.DataFrame(
        {
            "profile_id": ids,
            "sources": [["crm", "orders"] if b else ["newsletter"] for b in buyer],
            "country": rng.choice(np.array(["DK", "DE", "SE", None], dtype=object), n),
            "birth_year": rng.choice(
                np.array(["1980", 1990, "1975", "n/a", None], dtype=object), n
            ),
            "rfm_r": score((4, 6), (1, 2)),
            "rfm_f": score((4, 6), (1, 3)),
            "rfm_m": score((4, 6), (1, 3)),
            "rfm_segment": [
                ("Champions" if h else "Hibernating") if b else None
                for h, b in zip(high, buyer, strict=True)
            ],
            "churn_risk": churn,
            "p_alive": 1 - churn,
            "clv_365d": clv,
            "expected_purchases_365d": clv / 100,
            "revenue": np.where(buyer, clv * 2, np.nan),
        }
    )
    topic = np.array(
        ["interest.outdoor.hiking", "interest.food.cooking", "interest.beauty.skincare"]
    )[group]
    interests = pd.DataFrame(
        {"profile_id": ids, "topic": topic, "confidence": rng.uniform(0.7, 0.95, n)}
    )
    return profiles, interests, group


def random_population(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Messy profiles: missing values, lower-case countries, garbage and minor birth years."""
    buyer = rng.random(n) < 0.6
    countries = np.array(["DK", "DE", "SE", " dk", "NO", None, ""], dtype=object)
    years = np.array([1950, 1962, 1971, "1985", " 1994 ", 2001, 2015, "abc", None], dtype=object)
    segments = np.array(["Champions", "Loyal", "At risk", "Hibernating"], dtype=object)

    def maybe(values: np.ndarray) -> np.ndarray:
        return np.where(buyer, values, np.nan)

    profiles = pd.DataFrame(
        {
            "profile_id": _ids(n),
            "sources": [
                sorted(set(rng.choice(SOURCES, rng.integers(1, 4)).tolist())) for _ in range(n)
            ],
            "country": rng.choice(countries, n, p=[0.3, 0.25, 0.15, 0.1, 0.05, 0.1, 0.05]),
            "birth_year": rng.choice(years, n),
            "rfm_r": maybe(rng.integers(1, 6, n)),
            "rfm_f": maybe(rng.integers(1, 6, n)),
            "rfm_m": maybe(rng.integers(1, 6, n)),
            "rfm_segment": [
                s if b else None for s, b in zip(rng.choice(segments, n), buyer, strict=True)
            ],
            "churn_risk": maybe(rng.random(n)),
            "clv_365d": maybe(rng.lognormal(3, 1, n)),
            "revenue": maybe(rng.lognormal(4, 1, n)),
        }
    )
    m = int(rng.integers(0, 3 * n + 1))
    interests = pd.DataFrame(
        {
            "profile_id": rng.choice(np.array(_ids(n), dtype=object), m) if n else [],
            "topic": rng.choice(np.array(TOPICS, dtype=object), m),
            "confidence": rng.uniform(0.05, 0.99, m),
        }
    )
    return profiles, interests


def _by_group(assignment: PersonaAssignment, group: np.ndarray) -> dict[str, str]:
    labels = assignment.labels.to_numpy()
    out = {}
    for g, name in enumerate(GROUPS):
        personas = set(labels[group == g])
        assert len(personas) == 1, f"{name} split over {personas}"
        out[name] = assignment.names[personas.pop()]
    return out


def test_automatic_k_finds_three_separated_groups() -> None:
    profiles, interests, group = three_groups()
    assignment = assign_personas(profiles, interests, PersonaSettings(), labels=LABELS)

    assert assignment.k == 3
    assert assignment.criterion.name == "silhouette"
    scores = assignment.criterion.scores
    assert sorted(scores) == list(range(2, 9))
    assert max(scores, key=lambda k: scores[k]) == 3
    names = _by_group(assignment, group)
    assert names["high"] == "Loyal high spenders · Outdoor"
    assert names["lapsed"].startswith("Lapsed low spenders")
    assert names["prospect"] == "Prospects · Beauty"
    assert sorted(assignment.labels.unique()) == ["p1", "p2", "p3"]


def test_silhouette_scores_agree_with_sklearn() -> None:
    profiles, interests, _ = three_groups(size=120)
    assignment = assign_personas(profiles, interests, PersonaSettings(k_max=4))
    features = persona_features(profiles, interests).to_numpy(dtype=np.float64)
    std = features.std(axis=0)
    z = (features - features.mean(axis=0)) / np.where(std > 0, std, 1)

    expected = silhouette_score(z, assignment.labels.to_numpy())
    assert assignment.criterion.scores[assignment.k] == pytest.approx(expected, abs=1e-3)


def test_a_k_whose_smallest_persona_is_too_small_does_not_qualify() -> None:
    profiles, interests, _ = three_groups(size=200)
    keep = np.r_[0:400, 400:430]  # high spenders, lapsed, and only 30 prospects
    profiles = profiles.take(keep)
    interests = interests[interests["profile_id"].isin(set(profiles["profile_id"]))]
    assignment = assign_personas(profiles, interests, PersonaSettings(k_max=4, min_group_size=40))

    scores, qualified = assignment.criterion.scores, assignment.criterion.qualified
    assert max(scores, key=lambda k: scores[k]) == 3
    assert 3 not in qualified
    assert assignment.k == max(qualified, key=lambda k: scores[k]) == 2


def test_without_a_qualifying_k_the_smallest_k_is_used() -> None:
    profiles, interests, _ = three_groups(size=250)
    settings_ = PersonaSettings(k_min=2, k_max=4, min_group_size=300)
    assignment = assign_personas(profiles, interests, settings_)

    assert assignment.criterion.qualified == ()
    assert assignment.k == 2
    document = persona_cards(profiles, interests, assignment, settings_, labels={}, as_of=AS_OF)
    assert [card["size"] for card in document["cards"]] == [500]
    assert document["hidden"] == {"personas": 1, "profiles": 250}


def test_same_input_and_seed_give_the_same_personas() -> None:
    profiles, interests, _ = three_groups(size=150, seed=3)
    rng = np.random.default_rng(1)
    noisy = profiles.assign(rfm_m=profiles["rfm_m"] + rng.normal(0, 1.5, len(profiles)))
    settings_ = PersonaSettings(k_max=5, seed=7)

    first = assign_personas(noisy, interests, settings_, labels=LABELS)
    second = assign_personas(noisy, interests, settings_, labels=LABELS)

    assert first.labels.equals(second.labels)
    assert first.names == second.names
    assert first.criterion == second.criterion
    assert len(set(first.names.values())) == len(first.names)


def test_persona_ids_are_ordered_by_size() -> None:
    profiles, interests, _ = three_groups(size=100)
    keep = np.r_[0:100, 100:160, 200:300]  # 100 high, 60 lapsed, 100 prospects
    profiles = profiles.take(keep)
    ids = set(profiles["profile_id"])
    interests = interests[interests["profile_id"].isin(ids)]
    assignment = assign_personas(profiles, interests, PersonaSettings(k=3))

    sizes = assignment.labels.value_counts()
    assert assignment.criterion.name == "fixed"
    assert [sizes[f"p{i}"] for i in (1, 2, 3)] == [100, 100, 60]


def test_fewer_profiles_than_twice_the_group_size_make_one_persona() -> None:
    profiles, interests, _ = three_groups(size=13)  # 39 < 2 x 20
    settings_ = PersonaSettings(min_group_size=20)
    assignment = assign_personas(profiles, interests, settings_)

    assert assignment.k == 1
    assert set(assignment.labels) == {"p1"}
    assert assignment.names == {"p1": ONE_PERSONA}
    document = persona_cards(profiles, interests, assignment, settings_, labels=LABELS, as_of=AS_OF)
    assert [card["size"] for card in document["cards"]] == [39]


def test_persona_features_fill_non_buyers_and_take_the_group_maximum() -> None:
    profiles = pd.DataFrame(
        {
            "profile_id": ["a", "b", "c"],
            "rfm_r": [5, 3, None],
            "rfm_f": [1, 1, None],
            "rfm_m": [4, 2, None],
            "churn_risk": [0.1, 0.3, None],
            "clv_365d": [math.e - 1, math.e**3 - 1, None],
        }
    )
    interests = pd.DataFrame(
        {
            "profile_id": ["a", "a", "a", "zz"],
            "topic": [
                "interest.outdoor.hiking",
                "interest.outdoor.camping",
                "interest.food",
                "x.y",
            ],
            "confidence": [0.6, 0.8, 0.3, 0.9],
        }
    )
    features = persona_features(profiles, interests)

    assert list(features.columns) == [
        "rfm_r", "rfm_f", "rfm_m", "log_clv", "churn_risk", "has_purchases",
        "interest.food", "interest.outdoor",
    ]  # fmt: skip
    assert features.loc["c"].to_dict() == pytest.approx(
        {
            "rfm_r": 4,
            "rfm_f": 1,
            "rfm_m": 3,
            "log_clv": 2,
            "churn_risk": 0.2,
            "has_purchases": 0,
            "interest.food": 0,
            "interest.outdoor": 0,
        }
    )
    assert features.loc["a", "interest.outdoor"] == pytest.approx(0.8)
    assert features.loc["a", "has_purchases"] == 1


def test_two_clv_horizons_need_the_column_named() -> None:
    profiles, interests, _ = three_groups(size=30)
    profiles = profiles.assign(clv_90d=profiles["clv_365d"] / 4)
    with pytest.raises(ValueError, match=r"several clv_<h> columns \(clv_365d, clv_90d\)"):
        persona_features(profiles, interests)
    assert persona_features(profiles, interests, clv_column="clv_90d").shape[0] == 90


def test_repeated_profile_ids_are_refused() -> None:
    profiles = pd.DataFrame({"profile_id": ["a", "b", "a"]})
    with pytest.raises(ValueError, match="one row per profile"):
        assign_personas(profiles, pd.DataFrame(), PersonaSettings())


def _rules(*rules: dict[str, Any], **extra: Any) -> PersonaSettings:
    return PersonaSettings.model_validate({"method": "rules", "rules": list(rules), **extra})


def test_rules_first_match_wins_and_the_rest_is_other() -> None:
    profiles = pd.DataFrame(
        {
            "profile_id": ["vip-outdoor", "outdoor", "dane", "nobody", "no-scores"],
            "rfm_m": [5, 2, 3, 1, None],
            "country": ["DK", "DE", " dk", "SE", None],
            "rfm_segment": pd.Categorical(["Champions", "Loyal", "Loyal", "Lost", None]),
        }
    )
    interests = pd.DataFrame(
        {
            "profile_id": ["vip-outdoor", "outdoor", "dane"],
            "topic": ["interest.outdoor.hiking", "interest.outdoor.camping", "interest.food"],
            "confidence": [0.9, 0.7, 0.9],
        }
    )
    settings_ = _rules(
        {"name": "VIP", "when": [{"field": "rfm_m", "ge": 5}]},
        {"name": "Outdoor fans", "when": [{"field": "interest.outdoor", "ge": 0.5}]},
        {
            "name": "Danish loyalists",
            "when": [{"field": "country", "eq": "DK"}, {"field": "rfm_segment", "in": ["Loyal"]}],
        },
        {"name": "Not lost", "when": [{"field": "rfm_segment", "ne": "Lost"}]},
    )
    assignment = assign_personas(profiles, interests, settings_)

    assert assignment.labels.to_dict() == {
        "vip-outdoor": "vip",
        "outdoor": "outdoor-fans",
        "dane": "danish-loyalists",
        "nobody": OTHER,
        "no-scores": OTHER,  # a condition on a missing value is false, even ne
    }
    assert assignment.names == {
        "vip": "VIP",
        "outdoor-fans": "Outdoor fans",
        "danish-loyalists": "Danish loyalists",
        OTHER: "Other",
    }
    assert (assignment.method, assignment.k, assignment.criterion.name) == ("rules", 4, "rules")


@pytest.mark.parametrize(
    ("rules", "extra", "message"),
    [
        pytest.param(
            [{"name": "A", "when": [{"field": "rfm_r", "ge": 4, "lt": 5}]}],
            {},
            "exactly one operator of eq, ne, lt, le, gt, ge, in; got 2: lt, ge",
            id="two-operators",
        ),
        pytest.param(
            [{"name": "A", "when": [{"field": "rfm_r"}]}],
            {},
            "exactly one operator of eq, ne, lt, le, gt, ge, in; none given",
            id="no-operator",
        ),
        pytest.param(
            [{"name": "A", "when": [{"field": "rfm_x", "ge": 4}]}],
            {},
            "unknown field 'rfm_x'",
            id="unknown-field",
        ),
        pytest.param(
            [{"name": "A", "when": [{"field": "country", "lt": 4}]}],
            {},
            "'country' is text: use eq, ne or in, not lt",
            id="text-comparison",
        ),
        pytest.param(
            [{"name": "A", "when": [{"field": "country", "eq": False}]}],
            {},
            "quote values like 'NO'",
            id="yaml-norway",
        ),
        pytest.param(
            [{"name": "A", "when": [{"field": "rfm_r", "in": ["high"]}]}],
            {},
            "'rfm_r' is a number: in needs a number",
            id="text-for-number",
        ),
        pytest.param([], {}, "method 'rules' needs at least one rule", id="no-rules"),
        pytest.param(
            [{"name": "V.I.P.", "when": []}, {"name": "v i p", "when": []}],
            {},
            "distinct persona ids; repeated: ['v-i-p']",
            id="repeated-slug",
        ),
        pytest.param(
            [{"name": "Everyone"}, {"name": "B", "when": [{"field": "rfm_r", "ge": 4}]}],
            {},
            "rule 'Everyone' has no conditions and matches everyone",
            id="catch-all-not-last",
        ),
        pytest.param([{"name": "Other"}], {}, "is reserved", id="reserved-name"),
        pytest.param([{"name": "A"}], {"k_min": 5, "k_max": 3}, "k_min (5)", id="k-range"),
    ],
)
def test_invalid_settings_say_what_is_wrong(
    rules: list[dict[str, Any]], extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        _rules(*rules, **extra)
    assert message in str(caught.value)


def test_conditions_accept_in_by_alias_and_by_name() -> None:
    settings_ = PersonaSettings.model_validate(
        {"method": "rules", "rules": [{"name": "A", "when": [{"field": "rfm_r", "in": [4, 5]}]}]}
    )
    condition = settings_.rules[0].when[0]
    assert condition.operator == ("in", (4.0, 5.0))
    assert RuleCondition(field="rfm_r", in_=(4, 5)) == condition


def test_settings_refuse_unknown_keys() -> None:
    with pytest.raises(ValidationError, match=r"Extra inputs are not permitted"):
        PersonaSettings.model_validate({"min_group": 5})
    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        PersonaSettings(min_group_size=1)


def test_small_personas_are_hidden_and_counts_add_up() -> None:
    profiles, interests, _ = three_groups(size=30)
    profiles.loc[:6, "clv_365d"] = 1e6
    settings_ = _rules(
        {"name": "VIP", "when": [{"field": "clv_365d", "ge": 1e5}]},
        {"name": "Buyers", "when": [{"field": "has_purchases", "eq": True}]},
        min_group_size=20,
    )
    assignment = assign_personas(profiles, interests, settings_)
    assert (assignment.labels == "vip").sum() == 7
    document = persona_cards(profiles, interests, assignment, settings_, labels=LABELS, as_of=AS_OF)

    assert [card["persona"] for card in document["cards"]] == ["buyers", OTHER]
    assert document["hidden"] == {"personas": 1, "profiles": 7}
    assert sum(card["size"] for card in document["cards"]) + 7 == document["profiles"] == 90
    assert "VIP" not in json.dumps(document)


def test_small_categories_fold_into_other_until_other_is_large_enough() -> None:
    n = 60
    countries = ["DK"] * 30 + ["DE"] * 25 + ["SE"] * 3 + ["NO"] * 2
    years = ["1990"] * 40 + [str(AS_OF.year - 10)] * 20  # 20 minors: unknown
    profiles = pd.DataFrame(
        {
            "profile_id": _ids(n),
            "country": countries,
            "birth_year": years,
            "sources": [["crm"]] * n,
            "rfm_segment": [None] * 25 + ["Loyal"] * 35,
            "revenue": [np.nan] * 55 + [100.0] * 5,
        }
    )
    settings_ = PersonaSettings(min_group_size=20, k=1)
    assignment = assign_personas(profiles, pd.DataFrame(), settings_)
    (card,) = persona_cards(
        profiles, pd.DataFrame(), assignment, settings_, labels={}, as_of=AS_OF
    )["cards"]

    assert card["countries"] == {"DK": 0.5, OTHER: 0.5}  # DE (25) folded so other is not 5
    assert card["age_bands"] == {"35-44": 0.667, UNKNOWN: 0.333}
    assert card["rfm_mix"] == {"Loyal": 0.583, NO_PURCHASES: 0.417}
    assert card["channels"] == {"crm": 1.0}
    assert card["revenue"] is None  # only 5 members contribute: not shown
    assert card["revenue_share"] is None
    assert card["churn_risk"] == {"mean": None, "median": None}


def test_previous_sizes_give_change_and_moved() -> None:
    profiles, interests, group = three_groups(size=100)
    settings_ = PersonaSettings(k=3)
    assignment = assign_personas(profiles, interests, settings_, labels=LABELS)
    names = _by_group(assignment, group)
    previous = {names["high"]: 90, "Window shoppers": 40}

    document = persona_cards(
        profiles, interests, assignment, settings_, labels=LABELS, as_of=AS_OF, previous=previous
    )
    by_name = {card["name"]: card for card in document["cards"]}

    assert (by_name[names["high"]]["previous_size"], by_name[names["high"]]["change"]) == (90, 10)
    assert by_name[names["prospect"]]["previous_size"] is None
    assert by_name[names["prospect"]]["change"] is None
    assert document["moved"] == {
        "new": [c["name"] for c in document["cards"] if c["name"] != names["high"]],
        "gone": ["Window shoppers"],
    }
    assert sizes_by_name(document) == dict.fromkeys(by_name, 100)
    assert persona_cards(
        profiles, interests, assignment, settings_, labels=LABELS, as_of=AS_OF
    )["moved"] is None  # fmt: skip


def _plain(value: Any) -> None:
    """Only JSON's own Python types, all the way down (numpy float64 is a float subclass)."""
    assert type(value) in {dict, list, str, int, float, bool, type(None)}, type(value)
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            _plain(item)
    elif isinstance(value, list):
        for item in value:
            _plain(item)


def test_document_is_plain_json_without_profile_ids() -> None:
    profiles, interests, _ = three_groups(size=100)
    settings_ = PersonaSettings(k_max=4)
    assignment = assign_personas(profiles, interests, settings_, labels=LABELS)
    document = persona_cards(
        profiles, interests, assignment, settings_, labels=LABELS, as_of=AS_OF, previous={}
    )

    _plain(document)
    text = json.dumps(document)
    assert not [pid for pid in profiles["profile_id"] if pid in text]
    assert "pid-" not in text
    card = document["cards"][0]
    assert set(card) >= {
        "persona", "name", "size", "share", "revenue", "revenue_share", "rfm_mix",
        "churn_risk", "clv_mean", "top_interests", "channels", "countries", "age_bands",
        "previous_size", "change",
    }  # fmt: skip
    assert document["criterion"]["name"] == "silhouette"
    assert set(document["criterion"]["scores"]) == {"2", "3", "4"}


def _band(value: Any) -> str:
    try:
        year = float(str(value).strip())
    except ValueError:
        return UNKNOWN
    age = AS_OF.year - year
    if math.isnan(year) or year != int(year) or not 18 <= age <= 120:
        return UNKNOWN
    edges = (18, 25, 35, 45, 55, 65, 10_000)
    return next(AGE_BANDS[i] for i in range(6) if edges[i] <= age < edges[i + 1])


def _country(value: Any) -> str:
    text = "" if pd.isna(value) else str(value).strip().upper()
    return text or UNKNOWN


def _check_exclusive(shares: Mapping[str, float], values: Sequence[str], k: int) -> None:
    counts, size = Counter(values), len(values)
    shown = 0
    for key, share in shares.items():
        if key != OTHER:
            assert counts[key] >= k, (key, counts[key])
            assert share == pytest.approx(counts[key] / size, abs=5e-4 + 1e-9)
            shown += counts[key]
    rest = size - shown
    assert (OTHER in shares) == (rest > 0)
    if rest:
        assert rest >= k
        assert shares[OTHER] == pytest.approx(rest / size, abs=5e-4 + 1e-9)


def _check_card(
    card: Mapping[str, Any], members: pd.DataFrame, interests: pd.DataFrame, k: int
) -> None:
    size = len(members)
    assert card["size"] == size >= k
    segments = [NO_PURCHASES if pd.isna(s) else str(s) for s in members["rfm_segment"]]
    _check_exclusive(card["rfm_mix"], segments, k)
    _check_exclusive(card["countries"], [_country(c) for c in members["country"]], k)
    _check_exclusive(card["age_bands"], [_band(b) for b in members["birth_year"]], k)
    sources = [set(s) for s in members["sources"]]
    for channel, share in card["channels"].items():
        if channel == OTHER:
            held = sum(1 for s in sources if s - set(card["channels"]))
        else:
            held = sum(1 for s in sources if channel in s)
        assert held >= k
        assert share == pytest.approx(held / size, abs=5e-4 + 1e-9)
    strong = interests[
        interests["profile_id"].isin(set(members["profile_id"])) & (interests["confidence"] >= 0.5)
    ]
    for entry in card["top_interests"]:
        held = strong.loc[strong["topic"] == entry["topic"], "profile_id"].nunique()
        assert held >= k
        assert entry["share"] == pytest.approx(held / size, abs=5e-4 + 1e-9)
    for key in ("revenue", "clv_mean"):
        column = "revenue" if key == "revenue" else "clv_365d"
        assert card[key] is None or members[column].notna().sum() >= k


@given(
    n=st.integers(0, 150),
    min_group_size=st.integers(2, 12),
    k=st.sampled_from([None, 1, 2, 3, 6]),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=40, deadline=None)
def test_no_card_shows_a_group_below_the_threshold(
    n: int, min_group_size: int, k: int | None, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    profiles, interests = random_population(rng, n)
    settings_ = PersonaSettings(
        k=k, k_max=4, min_group_size=min_group_size, top_interests=3, seed=seed % 100
    )
    assignment = assign_personas(profiles, interests, settings_)
    document = persona_cards(profiles, interests, assignment, settings_, labels=LABELS, as_of=AS_OF)

    sizes = assignment.labels.value_counts()
    hidden = sizes[sizes < min_group_size]
    assert document["hidden"] == {"personas": len(hidden), "profiles": int(hidden.sum())}
    assert sum(card["size"] for card in document["cards"]) + int(hidden.sum()) == n
    assert [c["size"] for c in document["cards"]] == sorted(sizes[sizes >= min_group_size])[::-1]
    for card in document["cards"]:
        members = profiles[assignment.labels.to_numpy() == card["persona"]]
        _check_card(card, members, interests, min_group_size)
    _plain(document)
