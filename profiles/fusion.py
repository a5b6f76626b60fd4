"""Signal fusion: one calibrated confidence per profile and topic, with its contributors.

Every source says something about a person's interest in a topic with its own reliability and
age: the preference centre (`declared`), purchases (`observed`, provider `behaviour`), external
providers (`inferred`). Fusion turns the signals of one profile and topic into one probability.

The model, in log-odds space (logit p = ln p / (1 - p)):

    prior       prior_t, the topic's base rate (the taxonomy's prior, or `FusionSettings.priors`)
    evidence    e_i = w_provider · decay_i · (logit(p_i) + offset_provider - logit prior_t)
    decay       decay_i = 2^(-age_i / half_life_kind): a signal half a life old counts half
    result      p = sigmoid(logit prior_t + Σ e_i), kept within [1e-6, 1 - 1e-6]

`p_i` is a provider's confidence that the person holds the topic. Its evidence is its
log-likelihood ratio against the prior: a confidence at the prior says nothing, above it
supports, below it opposes. `weight` (reliability, ≥ 0; 0 switches a provider off) scales
that evidence: below 1 for a provider that is over-confident or repeats what others say,
above 1 for one that is under-confident. `offset` shifts a provider's scores in log-odds (a
provider that is systematically too high gets a negative offset); weight and offset together
are Platt scaling, and `bench/fusion_quality.py` fits them on data with known truth.

Declared answers dominate inferred ones. Only the newest declared answer per profile and topic
counts (a person may change their mind); older ones are kept as contributors with weight 0.
Under a declared "interested", observed and inferred signals may only add support: evidence
against it is ignored. Under a declared "not interested" every observed and inferred signal
is ignored, whatever it says. A signal with weight 0 (a switched-off provider, or one fully
decayed) changes nothing: it takes no part in these rules either.

Independence, and where it fails. Summing evidence is Bayes' rule under the assumption that
the sources are conditionally independent given the truth: that a provider's report does not
depend on another's once we know whether the person holds the interest. It fails when two
providers buy from the same data broker, when a provider's model was trained on our own
newsletter clicks, or when the same purchase is seen by the behaviour scores and by a provider
that receives the shop's order feed: such evidence is counted twice and the result is
over-confident. Reliability weights below 1 are the remedy; the calibration benchmark shows
whether they are needed (a merged confidence that is better calibrated than every single
source is the check). Absent signals are not evidence here: a provider that does not report
a topic says nothing about it, which under-uses what a high-recall provider's silence means.

The result keeps its contributors: provider, kind, original score, age in days, effective
weight (0 when a rule or decay excluded it) and evidence, so that every merged confidence can
be explained and audited. Everything is column-wise (no per-row Python); inputs are sorted
first, so the result does not depend on the order of the signals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from profiles.taxonomy import Probability, Taxonomy, TopicKey
from profiles.types import SignalKind

PROFILE_ID: Final = "profile_id"
INPUT_COLUMNS: Final = (PROFILE_ID, "topic", "confidence", "provider", "observed_at", "kind")
"""Columns fusion reads from the signals (others are ignored)."""
MERGED_COLUMNS: Final = (
    PROFILE_ID,
    "topic",
    "confidence",
    "prior",
    "kind",
    "observed_at",
    "contributors",
    "group",
)
"""Columns of `Fusion.merged`: one row per profile and topic with usable evidence; `group`
numbers the profile x topic pairs of one fusion and links its contributions."""
CONTRIBUTION_COLUMNS: Final = (
    PROFILE_ID,
    "topic",
    "provider",
    "kind",
    "score",
    "observed_at",
    "age_days",
    "weight",
    "evidence",
    "group",
)
"""Columns of `Fusion.contributions`: one row per input signal (profile, topic, provider and
kind as categoricals)."""
EPSILON: Final = 1e-6
_KIND_ORDER: Final = {SignalKind.DECLARED: 0, SignalKind.OBSERVED: 1, SignalKind.INFERRED: 2}
DECLARED_PROVIDER: Final = "declared"
"""Provider name of preference-centre signals."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderFusion(_Model):
    """How much one provider's signals count."""

    weight: Annotated[float, Field(ge=0, le=10)] = 1.0
    """Reliability: multiplies the provider's evidence (0: ignored)."""
    offset: Annotated[float, Field(ge=-10, le=10)] = 0.0
    """Added to the provider's scores in log-odds before weighting (calibration shift)."""


class DeclaredAnswers(_Model):
    """What a preference-centre answer says as a confidence."""

    interested: Probability = 0.95
    not_interested: Probability = 0.03


def _default_half_lives() -> dict[SignalKind, float]:
    return {SignalKind.DECLARED: 365.0, SignalKind.OBSERVED: 180.0, SignalKind.INFERRED: 90.0}


class FusionSettings(_Model):
    """`fusion:` in enrich.yaml."""

    enabled: bool = True
    half_life_days: dict[SignalKind, Annotated[float, Field(gt=0, le=36_500)]] = Field(
        default_factory=_default_half_lives
    )
    """Age (days) at which a signal of each kind counts half; kinds not given keep the default."""
    providers: dict[str, ProviderFusion] = Field(default_factory=dict)
    """Per provider name (`behaviour`, `declared`, a configured provider); others: default."""
    default: ProviderFusion = Field(default_factory=ProviderFusion)
    priors: dict[TopicKey, Probability] = Field(default_factory=dict)
    """Per-topic prior overrides (over the taxonomy's)."""
    declared: DeclaredAnswers = Field(default_factory=DeclaredAnswers)
    top_n: Annotated[int, Field(ge=1, le=50)] = 5
    """Topics in the compact per-profile list (`top_interests`)."""

    @field_validator("half_life_days")
    @classmethod
    def _all_kinds(cls, value: dict[SignalKind, float]) -> dict[SignalKind, float]:
        return {**_default_half_lives(), **value}

    def for_provider(self, name: str) -> ProviderFusion:
        """The settings that apply to provider `name`."""
        return self.providers.get(name, self.default)


@dataclass(frozen=True)
class Fusion:
    """The merged signals and every contribution to them."""

    merged: pd.DataFrame
    """MERGED_COLUMNS; `contributors` is the number of contributions with weight > 0."""
    contributions: pd.DataFrame
    """CONTRIBUTION_COLUMNS, sorted by profile, topic, provider, kind, time, score."""


def logit(p: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """ln(p / (1 - p)) with p kept within [EPSILON, 1 - EPSILON]."""
    q = np.clip(p, EPSILON, 1 - EPSILON)
    return np.asarray(np.log(q) - np.log1p(-q), dtype=np.float64)


def sigmoid(x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """1 / (1 + e^-x), kept within [EPSILON, 1 - EPSILON]."""
    out = 0.5 * (1.0 + np.tanh(0.5 * x))
    return np.asarray(np.clip(out, EPSILON, 1 - EPSILON), dtype=np.float64)


def _codes(values: pd.Series) -> tuple[npt.NDArray[np.int64], pd.Index[str]]:
    """Sorted factorisation: codes follow the sorted order of the values, whatever the row
    order, so sorting by codes is sorting by values."""
    codes, uniques = pd.factorize(values.astype("string"), sort=True)
    if (codes < 0).any():
        raise ValueError(f"{values.name} has missing values")
    return codes.astype(np.int64), pd.Index(uniques, dtype=str)


def fuse(
    signals: pd.DataFrame, *, taxonomy: Taxonomy, settings: FusionSettings, now: datetime
) -> Fusion:
    """Merge `signals` (INPUT_COLUMNS; topics the taxonomy knows, confidences in (0, 1)) per
    profile and topic as of `now`. See the module docstring for the model."""
    missing = [c for c in INPUT_COLUMNS if c not in signals.columns]
    if missing:
        raise ValueError(f"signals lack column(s): {', '.join(missing)}")
    unknown = ~taxonomy.known(signals["topic"].astype("string"))
    if unknown.any():
        raise ValueError(f"{int(unknown.sum())} signal(s) have topics the taxonomy does not list")
    pcode, profiles = _codes(signals[PROFILE_ID])
    tcode, topics = _codes(signals["topic"])
    vcode, providers = _codes(signals["provider"])
    kcode, kinds = _codes(signals["kind"])
    bad = sorted(set(kinds) - {str(k) for k in SignalKind})
    if bad:
        raise ValueError(f"unknown signal kind(s): {bad}")
    observed = pd.to_datetime(signals["observed_at"], utc=True)
    if observed.isna().any():
        raise ValueError(f"{int(observed.isna().sum())} signal(s) have no observed_at")
    at = observed.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    score = pd.to_numeric(signals["confidence"]).to_numpy(dtype=np.float64)
    # canonical order: profile, topic, provider, kind, time, score (independent of input order)
    order = np.lexsort((score, at, kcode, vcode, tcode, pcode))
    pcode, tcode, vcode, kcode = pcode[order], tcode[order], vcode[order], kcode[order]
    at, score = at[order], score[order]

    stamp = pd.Timestamp(now)
    stamp = stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)
    age = np.clip((stamp.value - at) / 86_400e9, 0.0, None)
    half = np.array([settings.half_life_days[SignalKind(k)] for k in kinds])[kcode]
    chosen = [settings.for_provider(str(v)) for v in providers]
    weight = np.array([c.weight for c in chosen])[vcode] * np.exp2(-age / half)
    offset = np.array([c.offset for c in chosen])[vcode]
    prior_of = {**taxonomy.priors, **settings.priors}
    prior = np.array([prior_of[str(t)] for t in topics], dtype=np.float64)[tcode]
    evidence = weight * (logit(score) + offset - logit(prior))
    key = pcode * len(topics) + tcode
    group = np.cumsum(np.r_[True, key[1:] != key[:-1]]) - 1 if len(key) else key
    declared = np.isin(kcode, np.flatnonzero(kinds == str(SignalKind.DECLARED)))
    weight, evidence = _apply_declared_rules(
        group, declared=declared, at=at, score=score, weight=weight, evidence=evidence
    )
    contributions = pd.DataFrame(
        {
            PROFILE_ID: pd.Categorical.from_codes(pcode, profiles),
            "topic": pd.Categorical.from_codes(tcode, topics),
            "provider": pd.Categorical.from_codes(vcode, providers),
            "kind": pd.Categorical.from_codes(kcode, kinds),
            "score": score,
            "observed_at": pd.to_datetime(at, utc=True),
            "age_days": np.round(age, 3),
            "weight": weight,
            "evidence": evidence,
            "group": group,
        }
    )
    return Fusion(merged=_merge(contributions, prior), contributions=contributions)


def _decoded(values: pd.Series) -> pa.Array:
    """A text column (categorical or not) as an Arrow string array."""
    array = pa.Array.from_pandas(values)
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return array.cast(pa.string())


Floats = npt.NDArray[np.float64]


def _apply_declared_rules(
    group: npt.NDArray[np.int64],
    *,
    declared: npt.NDArray[np.bool_],
    at: npt.NDArray[np.int64],
    score: Floats,
    weight: Floats,
    evidence: Floats,
) -> tuple[Floats, Floats]:
    """Zero the weight and evidence of what the declared rules exclude (module docstring)."""
    declared = declared & (weight > 0)
    latest = np.zeros(len(group), dtype=bool)
    rows = np.flatnonzero(declared)
    if len(rows):
        # newest declared answer per group; on a tie the lower score ("not interested") wins
        order = rows[np.lexsort((score[rows], -at[rows], group[rows]))]
        first = np.r_[True, group[order][1:] != group[order][:-1]]
        latest[order[first]] = True
    stance = np.zeros(int(group.max()) + 1 if len(group) else 0)
    stance[group[latest]] = np.sign(evidence[latest])
    # per row: +: a declared "interested" governs its group, -: "not interested", 0: none
    governing = stance[group]
    excluded = (declared & ~latest) | (
        ~declared & (weight > 0) & ((governing < 0) | ((governing > 0) & (evidence < 0)))
    )
    return np.where(excluded, 0.0, weight), np.where(excluded, 0.0, evidence)


def _merge(c: pd.DataFrame, prior: Floats) -> pd.DataFrame:
    """One row per group with a contribution of weight > 0, in group order."""
    used = (c["weight"] > 0).to_numpy()
    if not used.any():
        return pd.DataFrame({name: pd.Series(dtype=object) for name in MERGED_COLUMNS})
    group = c["group"].to_numpy()[used]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    rank_of = np.array([_KIND_ORDER[SignalKind(k)] for k in c["kind"].cat.categories])
    rank = rank_of[c["kind"].cat.codes.to_numpy()[used]]
    names = pd.Index([str(k) for k in sorted(_KIND_ORDER, key=_KIND_ORDER.__getitem__)], dtype=str)
    at = c["observed_at"].to_numpy(dtype="datetime64[ns]").astype(np.int64)[used]
    first = np.flatnonzero(used)[starts]
    topic_prior = prior[first]
    evidence = np.add.reduceat(c["evidence"].to_numpy()[used], starts)
    return pd.DataFrame(
        {
            PROFILE_ID: c[PROFILE_ID].take(first).reset_index(drop=True),
            "topic": c["topic"].take(first).reset_index(drop=True),
            "confidence": sigmoid(logit(topic_prior) + evidence),
            "prior": topic_prior,
            "kind": pd.Categorical.from_codes(np.minimum.reduceat(rank, starts), names),
            "observed_at": pd.to_datetime(np.maximum.reduceat(at, starts), utc=True),
            "contributors": np.diff(np.r_[starts, len(group)]).astype(np.int64),
            "group": group[starts],
        }
    )


def _text_codes(values: pd.Series) -> tuple[npt.NDArray[np.int64], pd.Index[str]]:
    """Codes in sorted value order, and the values: a categorical's own, else factorised."""
    if (
        isinstance(values.dtype, pd.CategoricalDtype)
        and values.cat.categories.is_monotonic_increasing
    ):
        codes = np.asarray(values.cat.codes, dtype=np.int64)
        return codes, pd.Index(values.cat.categories, dtype=str)
    return _codes(values)


def _ranked(merged: pd.DataFrame) -> tuple[pd.DataFrame, npt.NDArray[np.int64], pd.Index[str]]:
    """merged by profile, most confident first (ties by topic); the profile codes, values."""
    owner, profiles = _text_codes(merged[PROFILE_ID])
    topic, _ = _text_codes(merged["topic"])
    order = np.lexsort((topic, -merged["confidence"].to_numpy(dtype=np.float64), owner))
    return merged.iloc[order].reset_index(drop=True), owner[order], profiles


def _aligned(
    values: pa.Array, owner: npt.NDArray[np.int64], profiles: pd.Index[str], wanted: pd.Series
) -> pa.ListArray:
    """`values` (rows grouped by `owner`, codes into `profiles`, ascending) as one list per
    profile of `wanted`, in that order; an empty list for a profile without rows."""
    counts = np.bincount(owner, minlength=len(profiles)).astype(np.int64)
    starts = np.cumsum(counts) - counts
    index = profiles.get_indexer(pd.Index(wanted.astype(str)))
    index = np.where(index >= 0, index, len(profiles))  # the padding below: no rows
    count = np.r_[counts, 0][index]
    start = np.r_[starts, 0][index]
    ends = np.cumsum(count)
    take = np.repeat(start - (ends - count), count) + np.arange(int(ends[-1]) if len(ends) else 0)
    offsets = pa.array(np.r_[0, ends], pa.int32())
    return pa.ListArray.from_arrays(offsets, values.take(pa.array(take, pa.int64())))


def top_topics(
    merged: pd.DataFrame, profile_ids: pd.Series, *, n: int, floor: float
) -> pa.ListArray:
    """Per profile of `profile_ids` (in that order), up to `n` topics with confidence ≥
    `floor`, most confident first (ties by topic); an empty list for none."""
    ranked, owner, profiles = _ranked(merged[merged["confidence"] >= floor])
    first = np.r_[True, owner[1:] != owner[:-1]] if len(owner) else np.zeros(0, dtype=bool)
    starts = np.maximum.accumulate(np.where(first, np.arange(len(owner)), 0))
    keep = np.arange(len(owner)) - starts < n
    return _aligned(_decoded(ranked["topic"][keep]), owner[keep], profiles, profile_ids)


def interest_lists(fusion: Fusion, profile_ids: pd.Series) -> pa.Array:
    """Per profile of `profile_ids` (in that order), its merged interests as a list of
    structs (topic, confidence, kind, observed_at, contributors: list of structs of provider,
    kind, score, age_days, weight), most confident first; an empty list for none. Built with
    Arrow offsets, no Python per row."""
    merged, owner, profiles = _ranked(fusion.merged)
    c = fusion.contributions
    position = np.full(int(c["group"].max()) + 1 if len(c) else 0, -1, dtype=np.int64)
    position[merged["group"].to_numpy(dtype=np.int64)] = np.arange(len(merged))
    row = position[c["group"].to_numpy(dtype=np.int64)]
    c = c.assign(row=row)[row >= 0].sort_values(
        ["row", "weight"], ascending=[True, False], kind="mergesort"
    )
    sizes = np.bincount(c["row"].to_numpy(), minlength=len(merged))
    contributors = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(sizes)]), pa.int32()),
        pa.StructArray.from_arrays(
            [
                _decoded(c["provider"]),
                _decoded(c["kind"]),
                pa.array(c["score"].to_numpy(dtype=np.float64)),
                pa.array(c["age_days"].to_numpy(dtype=np.float64)),
                pa.array(c["weight"].to_numpy(dtype=np.float64)),
            ],
            names=["provider", "kind", "score", "age_days", "weight"],
        ),
    )
    interests = pa.StructArray.from_arrays(
        [
            _decoded(merged["topic"]),
            pa.array(merged["confidence"].to_numpy(dtype=np.float64)),
            _decoded(merged["kind"]),
            pa.array(pd.to_datetime(merged["observed_at"], utc=True), pa.timestamp("us", tz="UTC")),
            contributors,
        ],
        names=["topic", "confidence", "kind", "observed_at", "contributors"],
    )
    return _aligned(interests, owner, profiles, profile_ids)


@dataclass
class FusionCounts:
    """What the run summary says about a fusion, as sums, so that the fusions of disjoint
    sets of profiles add up (the fusion stage runs in partitions). No profile ids."""

    merged: int = 0
    profiles_with_interests: int = 0
    by_provider: dict[str, list[int]] = field(default_factory=dict)
    """provider → [signals, used (weight > 0)]"""
    topics: dict[str, list[float]] = field(default_factory=dict)
    """topic → [profiles, sum of confidences, declared]"""

    def add(self, other: FusionCounts) -> None:
        """Add the counts of a fusion over other profiles."""
        self.merged += other.merged
        self.profiles_with_interests += other.profiles_with_interests
        for key, pair in other.by_provider.items():
            mine = self.by_provider.get(key, [0, 0])
            self.by_provider[key] = [mine[0] + pair[0], mine[1] + pair[1]]
        for key, triple in other.topics.items():
            have = self.topics.get(key, [0, 0.0, 0])
            self.topics[key] = [a + b for a, b in zip(have, triple, strict=True)]


def fusion_counts(fusion: Fusion) -> FusionCounts:
    """The summary sums of one fusion."""
    c, m = fusion.contributions, fusion.merged
    return FusionCounts(
        merged=len(m),
        profiles_with_interests=int(m[PROFILE_ID].nunique()),
        by_provider={
            str(p): [len(g), int((g["weight"] > 0).sum())]
            for p, g in c.groupby("provider", sort=True)
        },
        topics={
            str(topic): [
                len(g),
                float(g["confidence"].sum()),
                int((g["kind"] == SignalKind.DECLARED).sum()),
            ]
            for topic, g in m.groupby("topic", sort=True)
        },
    )


def fusion_summary(counts: FusionCounts, taxonomy: Taxonomy) -> dict[str, Any]:
    """Counts for the run summary: per provider and per topic (no profile ids)."""
    return {
        "merged": counts.merged,
        "profiles_with_interests": counts.profiles_with_interests,
        "by_provider": {
            p: {"signals": int(signals), "used": int(used)}
            for p, (signals, used) in sorted(counts.by_provider.items())
        },
        "topics": {
            topic: {
                "label": taxonomy.label(topic),
                "profiles": int(n),
                "mean_confidence": round(total / n, 3),
                "declared": int(declared),
            }
            for topic, (n, total, declared) in sorted(counts.topics.items())
        },
    }


def summary_of(fusion: Fusion, taxonomy: Taxonomy) -> dict[str, Any]:
    """Counts for the run summary: per provider and per topic (no profile ids)."""
    return fusion_summary(fusion_counts(fusion), taxonomy)
