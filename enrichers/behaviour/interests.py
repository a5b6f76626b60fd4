"""Observed interest signals from the product categories a profile buys.

Only purchases count (orders with a value above zero, see `rfm`), for profiles with at least
`min_orders` of them. Each line's category (trimmed and case-folded when the orders were
prepared) becomes a taxonomy topic: `category_map[category]`, by default
`<topic_prefix>.<category>` (`outdoor.hiking` -> `interest.outdoor.hiking`). A topic that is
not a taxonomy dot key of at most 128 characters (`[a-z][a-z0-9_]*(\\.[a-z0-9_]+)*`: no
spaces, no upper case, no `&`) is never passed through: its lines are dropped and counted
(`unmappable_category`), as are lines without a category (`missing_category`). Several
categories may map to one topic; they are then counted together.

For a profile with `n` purchases and a topic:

    k             purchases with a line of the topic and an amount above zero (`orders`)
    order_share   k / n
    spend_share   the topic's net line value in those purchases / the purchases' total
                  value, clipped into [0, 1]
    base_rate     the population share: all purchases containing the topic / all purchases
                  (or `InterestSettings.base_rate` for every topic)
    confidence    (k + prior_strength * base_rate) / (n + prior_strength)

`confidence` is the posterior mean of the share of the profile's purchases that contain the
topic under a Beta prior with mean `base_rate` and weight `prior_strength` purchases: one
purchase out of one is not certainty, and a profile with many purchases is believed more
than one with few. It is clipped into [1e-6, 1 - 1e-6] (a signal's confidence lies strictly
between 0 and 1). Only topics the profile bought (k >= 1) become signals, and those below
`min_confidence` are dropped and counted. Signals are `observed`, observed at `as_of`. The
drop counts travel with the result, in `.attrs["dropped"]`.

Everything but the base rate is per profile: `topic_counts` gives k, n and the spend share
of the profiles of some orders (`TopicCounts`), and `interest_signals` turns the counts of
the whole population (one `TopicCounts`, or several stacked) into signals.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Final

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from enrichers.behaviour.rfm import (
    Floats,
    Ints,
    PreparedOrders,
    group_starts,
    purchase_totals,
    scoring_as_of,
)
from profiles.store.signals import TOPIC_MAX_LENGTH, TOPIC_PATTERN
from profiles.types import SignalKind

TopicKey = Annotated[str, Field(pattern=f"^{TOPIC_PATTERN}$", max_length=TOPIC_MAX_LENGTH)]
EPSILON: Final = 1e-6
"""Confidence is kept this far from 0 and 1."""
DROP_REASONS: Final = (
    "missing_category",
    "unmappable_category",
    "below_min_orders",
    "below_min_confidence",
)
"""Lines of purchases without a category or with one that maps to no valid topic; signals of
profiles with too few purchases; signals below `min_confidence`."""


class InterestSettings(BaseModel):
    """How categories become topics and how sure a signal is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prior_strength: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 2.0
    """Weight of the prior, in purchases (0: the raw share)."""
    base_rate: Annotated[float, Field(gt=0, lt=1)] | None = None
    """Prior mean for every topic; by default each topic's population share."""
    min_orders: Annotated[int, Field(ge=1)] = 1
    """Profiles with fewer purchases get no interest signals."""
    topic_prefix: TopicKey = "interest"
    """Topic of an unmapped category: `<topic_prefix>.<category>`."""
    category_map: dict[str, TopicKey] = Field(default_factory=dict)
    """Category -> taxonomy key (categories compared trimmed and case-folded)."""
    min_confidence: Annotated[float, Field(ge=0, lt=1)] = 0.05
    """Signals below this are dropped (and counted)."""

    @field_validator("category_map")
    @classmethod
    def _normalised(cls, value: dict[str, str]) -> dict[str, str]:
        normalised = {key.strip().casefold(): topic for key, topic in value.items()}
        if len(normalised) != len(value):
            raise ValueError("lists a category twice (compared trimmed and case-folded)")
        if "" in normalised:
            raise ValueError("has an empty category")
        return normalised


INTEREST_COLUMNS: Final = (
    "profile_id",
    "topic",
    "confidence",
    "kind",
    "observed_at",
    "orders",
    "profile_orders",
    "order_share",
    "spend_share",
    "base_rate",
)
"""Columns of `category_interests`: profile_id, topic (str), confidence (float in
(0, 1)), kind (`observed`), observed_at (datetime64[ns, UTC], `as_of`), orders (k) and
profile_orders (n) (int64), order_share, spend_share, base_rate (float)."""


def category_topics(categories: pd.Index, settings: InterestSettings) -> tuple[Ints, pd.Index]:
    """The topic code of each category (-1: no valid topic) and the sorted topics."""
    pattern = re.compile(f"^{TOPIC_PATTERN}$")
    topic = [settings.category_map.get(str(c), f"{settings.topic_prefix}.{c}") for c in categories]
    valid = [bool(pattern.match(t)) and len(t) <= TOPIC_MAX_LENGTH for t in topic]
    topics = pd.Index(sorted({t for t, ok in zip(topic, valid, strict=True) if ok}), dtype="str")
    codes = np.array(
        [topics.get_loc(t) if ok else -1 for t, ok in zip(topic, valid, strict=True)],
        dtype=np.int64,
    )
    return codes, topics


TOPIC_COUNT_COLUMNS: Final = ("topic", "orders", "profile_orders", "spend_share")
"""Columns of `TopicCounts.pairs`: topic (categorical of str), orders (k) and profile_orders
(n) (int64), spend_share (float)."""


@dataclass(frozen=True)
class TopicCounts:
    """What the profiles of some order lines contribute to `category_interests`: everything
    but the population base rates, which need every profile's counts."""

    pairs: pd.DataFrame = field(compare=False)
    """TOPIC_COUNT_COLUMNS, one row per profile and bought topic, indexed by profile_id,
    sorted by profile_id and topic."""
    purchases: int
    """Purchases of all the profiles (the base rates' denominator)."""
    dropped: Mapping[str, int]
    """Lines dropped: `missing_category` and `unmappable_category`."""


def topic_counts(
    orders: PreparedOrders, *, settings: InterestSettings | None = None
) -> TopicCounts:
    """Per profile and bought topic, k, n and the spend share (see the module docstring)."""
    settings = settings or InterestSettings()
    table = orders.orders
    purchase = table["purchase"].to_numpy(dtype=bool)
    order_profile = table["profile_code"].to_numpy(dtype=np.int64)
    row = orders.lines["order_row"].to_numpy(dtype=np.int64)
    value = orders.lines["value_micros"].to_numpy(dtype=np.int64)
    category = pd.Categorical(orders.lines["category"])
    category_code = np.asarray(category.codes, dtype=np.int64)
    topic_of, topics = category_topics(pd.Index(category.categories), settings)
    line_topic = np.append(topic_of, -1)[category_code]  # category code -1: missing
    in_purchase = purchase[row]
    dropped = {
        "missing_category": int((in_purchase & (category_code < 0)).sum()),
        "unmappable_category": int((in_purchase & (category_code >= 0) & (line_topic < 0)).sum()),
    }
    used = in_purchase & (line_topic >= 0)
    width = max(len(topics), 1)
    # k: distinct purchases with a line of the topic above zero, per (profile, topic).
    positive = used & (value > 0)
    contains, _ = group_starts(np.sort(row[positive] * width + line_topic[positive]))
    # Orders are sorted by profile, so (profile, topic) keys of `contains` sort the same way.
    pair_key = order_profile[contains // width] * width + contains % width
    pair_key.sort(kind="stable")
    pair, pair_start = group_starts(pair_key)
    k = np.diff(np.append(pair_start, len(pair_key)))
    spend_key = order_profile[row[used]] * width + line_topic[used]
    by_key = np.argsort(spend_key)  # sums of integers: the order among equal keys is moot
    spend_pair, starts = group_starts(spend_key[by_key])
    spend = np.add.reduceat(value[used][by_key], starts) if len(starts) else np.zeros(0, np.int64)
    pair_spend = spend[np.searchsorted(spend_pair, pair)]
    profile, topic = pair // width, pair % width

    totals = purchase_totals(orders)
    at = np.searchsorted(totals.codes, profile)
    spend_share = np.clip(
        np.maximum(pair_spend, 0) / totals.purchase_micros[at].astype(np.float64), 0.0, 1.0
    )
    pairs = pd.DataFrame(
        {
            # codes into the few topics: a string per pair would be most of a part's size
            "topic": pd.Categorical.from_codes(topic, categories=topics),
            "orders": k,
            "profile_orders": totals.purchases[at],
            "spend_share": spend_share,
        },
        index=pd.Index(orders.profiles.take(profile), name="profile_id"),
    )
    return TopicCounts(pairs=pairs, purchases=int(purchase.sum()), dropped=dropped)


def interest_signals(
    counts: TopicCounts, *, observed_at: pd.Timestamp, settings: InterestSettings | None = None
) -> pd.DataFrame:
    """INTEREST_COLUMNS from the `topic_counts` of the whole population (see
    `category_interests`): the base rates are shares among all of `counts`."""
    settings = settings or InterestSettings()
    pairs = counts.pairs
    # parts stacked with different topics come as text, one part as categorical: same codes
    topic, topics = pd.factorize(pairs["topic"], sort=True)
    k = pairs["orders"].to_numpy(dtype=np.int64)
    n = pairs["profile_orders"].to_numpy(dtype=np.int64)
    base_rate = _base_rate(topic, k, len(topics), counts.purchases, settings)
    confidence = np.clip(
        (k + settings.prior_strength * base_rate) / (n + settings.prior_strength),
        EPSILON,
        1 - EPSILON,
    )
    enough = n >= settings.min_orders
    confident = confidence >= settings.min_confidence
    dropped = dict(counts.dropped)
    dropped["below_min_orders"] = int((~enough).sum())
    dropped["below_min_confidence"] = int((enough & ~confident).sum())
    keep = enough & confident
    signals = pd.DataFrame(
        {
            "profile_id": pairs.index[keep],
            "topic": pd.Index(topics, dtype="str").take(topic[keep]),
            "confidence": confidence[keep],
            "kind": pd.Index([str(SignalKind.OBSERVED)], dtype="str").repeat(int(keep.sum())),
            "observed_at": pd.DatetimeIndex([observed_at]).repeat(int(keep.sum())),
            "orders": k[keep],
            "profile_orders": n[keep],
            "order_share": k[keep] / n[keep],
            "spend_share": pairs["spend_share"].to_numpy(dtype=np.float64)[keep],
            "base_rate": base_rate[keep],
        }
    )
    signals.attrs["dropped"] = dropped
    return signals


def category_interests(
    orders: PreparedOrders,
    *,
    as_of: datetime | pd.Timestamp | None = None,
    settings: InterestSettings | None = None,
) -> pd.DataFrame:
    """INTEREST_COLUMNS, one row per profile and bought topic, sorted by profile_id and topic.

    `as_of` (default: the preparation's cut-off) is the signals' `observed_at`. What was
    dropped on the way is counted in `.attrs["dropped"]` (DROP_REASONS, all present)."""
    settings = settings or InterestSettings()
    observed_at = pd.Timestamp(scoring_as_of(orders, as_of), tz="UTC").as_unit("ns")
    counts = topic_counts(orders, settings=settings)
    return interest_signals(counts, observed_at=observed_at, settings=settings)


def _base_rate(
    topic: Ints, k: Ints, topics: int, purchases: int, settings: InterestSettings
) -> Floats:
    if settings.base_rate is not None:
        return np.full(len(topic), settings.base_rate)
    containing = np.bincount(topic, weights=k, minlength=topics)
    return np.asarray(containing[topic] / max(purchases, 1), dtype=np.float64)
