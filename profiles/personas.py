"""Data-driven personas and k-anonymous persona cards for the profiles allowed for profiling.

Features (`persona_features`). Per profile: the RFM scores, log1p(CLV), churn risk, a
`has_purchases` indicator and, per interest group (the first two dot levels of a taxonomy key,
e.g. `interest.outdoor`), the highest merged confidence among its topics (0 without one). A
non-buyer has no behaviour scores; they are filled with the mean of the known values, so after
standardising they sit at 0 (the average buyer) and `has_purchases` alone sets non-buyers
apart. Every column is standardised over all profiles (z-scores), so each interest group
weighs as much as each behaviour feature.

Method (`method: kmeans`). k-means (k-means++, 3 seeded restarts, at most 100 iterations) is
fitted on a seeded random sample of `sample_size` profiles (all of them when there are fewer)
and every profile is then assigned to its nearest centre, so 1M profiles take seconds. Persona
ids `p1`, `p2`, ... go by size, largest first (ties by cluster index, fixed by the seed); the
same input and seed give the same personas.

Choosing k. With `k` set, that k is used (capped at the number of distinct feature vectors in
the sample). Otherwise every k in [k_min, k_max] is fitted on the sample and scored by its mean
silhouette (Euclidean, standardised space) on that sample. The rule: **the k with the highest
silhouette among those whose smallest persona, over all profiles, has at least
`min_group_size` members; if no k qualifies, the smallest k tried**; ties go to the smaller k.
The silhouette costs O(sample_size²) time and about sample_size x 8 KB of memory (one
distance chunk): the default 20,000 takes a second or two. With fewer than 2 x
`min_group_size` profiles (or k = 1) everyone is in one persona, "All profiles".

Names come from each persona's centroid with fixed thresholds of 0.5 standard deviations.
Fewer than half buyers: "Prospects". Otherwise a state and a value word, where behaviour
z-scores compare the persona's buyers with all buyers and value is the mean z of the M score
and log CLV: At-risk (lapsed, high value), Lapsed (recency z ≤ -0.5 or churn risk z ≥ 0.5),
Loyal (recency and frequency z ≥ 0.5), Recent, Frequent or Regular; then "high spenders"
(value z ≥ 0.5), "low spenders" (≤ -0.5) or "buyers". Up to two interest groups follow after
" · " when the persona's mean standardised confidence in them is ≥ 0.5 and at least a third of
its members hold them at `interest_floor` or more: "Loyal high spenders · Outdoor". A repeated
name gets " (2)", " (3)", ... in persona order, so names are unique within a run.

Rules (`method: rules`) are checked in order; the first whose conditions all hold names the
persona (id: the slug of the rule name); a profile no rule matches is in "other". A condition
reads a column of `profiles` (text: `country`, `rfm_segment`; numbers: the scores,
`birth_year`, `revenue`, `clv_<h>`, ...), `has_purchases`, `log_clv`, or `interest.<key>` (the
highest confidence among the topics under that key, 0 without one). A condition on a missing
value is false, whatever the operator.

k-anonymity (`persona_cards`). A persona with fewer than `min_group_size` members gets no card;
it is only counted in `hidden`. In a shown card, a breakdown category (RFM segment, country,
age band, channel, interest) held by fewer than `min_group_size` members is not shown: in the
exclusive breakdowns (RFM segment, country, age band) it is folded into "other", and if "other"
would then hold 1 to `min_group_size` - 1 members the smallest shown categories are folded in
too (otherwise "other" would reveal the small remainder). Channel "other" (members in some
channel not shown) appears only when it reaches the threshold; an interest is listed only when
at least `min_group_size` members hold it. Sums and averages (revenue, CLV, churn risk,
expected purchases) are given only when at least `min_group_size` members have a value.
Ages are the as-of year minus the birth year.

Limits: this bounds the size of every group a card names, nothing more. It is not differential
privacy: a homogeneous group discloses its shared attribute (a share of 1.0 says something
about every member); a share near 1 of a yes/no measure (a channel, an interest) implies that
fewer than the threshold lack it; and documents of consecutive runs, or cards of personas that
differ by a few members, can be differenced.
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:
    from sklearn.cluster import KMeans

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

BEHAVIOUR_FEATURES: Final = ("rfm_r", "rfm_f", "rfm_m", "log_clv", "churn_risk", "has_purchases")
"""The behaviour columns of `persona_features`, in order; interest groups follow, sorted."""
AGE_BANDS: Final = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
"""Age bands of the cards; under 18, over 120, unparseable and missing birth years: unknown."""
OTHER: Final = "other"
UNKNOWN: Final = "unknown"
NO_PURCHASES: Final = "no purchases"
"""The RFM mix category of members without an RFM segment (they bought nothing)."""
ONE_PERSONA: Final = "All profiles"

_N_INIT: Final = 3
_MAX_ITER: Final = 100
_DISTINCT: Final = 0.5
_BUYERS: Final = 0.5
_NAME_INTEREST_SHARE: Final = 1 / 3
_NAME_INTERESTS: Final = 2
_MAX_AGE: Final = 120
_SILHOUETTE_CHUNK: Final = 2048

_OPERATORS: Final = ("eq", "ne", "lt", "le", "gt", "ge", "in")
_TEXT_FIELDS: Final = frozenset({"country", "rfm_segment"})
_NUMBER_FIELDS: Final = frozenset(
    {
        "birth_year",
        "rfm_r",
        "rfm_f",
        "rfm_m",
        "churn_risk",
        "p_alive",
        "revenue",
        "has_purchases",
        "log_clv",
    }
)
_HORIZON_FIELD: Final = re.compile(r"^(clv|expected_purchases)_\d+d$")
_INTEREST_FIELD: Final = re.compile(r"^interest(\.[a-z0-9_]+)+$")
_COMPARE: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "eq": operator.eq,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
_CLV: Final = re.compile(r"^clv_\d+d$")
_EXPECTED: Final = re.compile(r"^expected_purchases_\d+d$")

Scalar = str | bool | float


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleCondition(_Model):
    """One test on one field: `field` and exactly one of eq, ne, lt, le, gt, ge, in."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    field: str
    """A column of `profiles`, `has_purchases`, `log_clv` or an `interest.<key>`."""
    eq: Scalar | None = None
    ne: Scalar | None = None
    lt: float | None = None
    le: float | None = None
    gt: float | None = None
    ge: float | None = None
    in_: Annotated[tuple[Scalar, ...] | None, Field(alias="in", min_length=1)] = None

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str) -> str:
        if (
            value in _TEXT_FIELDS
            or value in _NUMBER_FIELDS
            or _HORIZON_FIELD.match(value)
            or _INTEREST_FIELD.match(value)
        ):
            return value
        known = ", ".join(sorted(_TEXT_FIELDS | _NUMBER_FIELDS))
        raise ValueError(
            f"unknown field {value!r}: use one of {known}, clv_<h>, expected_purchases_<h> "
            "or interest.<taxonomy key>"
        )

    @model_validator(mode="after")
    def _one_operator(self) -> RuleCondition:
        given = [op for op in _OPERATORS if self._value(op) is not None]
        if len(given) != 1:
            got = f"got {len(given)}: {', '.join(given)}" if given else "none given"
            raise ValueError(
                f"a condition on {self.field!r} needs exactly one operator of "
                f"{', '.join(_OPERATORS)}; {got} (write one condition per operator; "
                "a rule's conditions must all hold)"
            )
        op, value = given[0], self._value(given[0])
        values = value if isinstance(value, tuple) else (value,)
        if self.field in _TEXT_FIELDS:
            if op not in {"eq", "ne", "in"}:
                raise ValueError(f"{self.field!r} is text: use eq, ne or in, not {op}")
            if not all(isinstance(v, str) for v in values):
                raise ValueError(
                    f"{self.field!r} is text: {op} needs text, got {value!r} "
                    "(quote values like 'NO' or 'yes' in YAML)"
                )
        elif any(isinstance(v, str) for v in values):
            raise ValueError(f"{self.field!r} is a number: {op} needs a number, got {value!r}")
        return self

    def _value(self, op: str) -> Scalar | tuple[Scalar, ...] | None:
        value: Scalar | tuple[Scalar, ...] | None = getattr(self, "in_" if op == "in" else op)
        return value

    @property
    def operator(self) -> tuple[str, Scalar | tuple[Scalar, ...]]:
        """The operator given and its value."""
        for op in _OPERATORS:
            value = self._value(op)
            if value is not None:
                return op, value
        raise AssertionError("validated: exactly one operator")  # pragma: no cover


def slug(name: str) -> str:
    """The persona id of a rule: lower-case letters and digits, other runs of characters as -."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


class PersonaRule(_Model):
    """A named persona: profiles for which every condition holds (no conditions: everyone)."""

    name: Annotated[str, Field(min_length=1, max_length=80)]
    when: tuple[RuleCondition, ...] = ()

    @field_validator("name")
    @classmethod
    def _sluggable(cls, value: str) -> str:
        if not slug(value):
            raise ValueError(f"rule name {value!r} needs at least one letter or digit")
        if slug(value) == OTHER:
            raise ValueError(f"rule name {value!r} is reserved: 'other' holds unmatched profiles")
        return value


class PersonaSettings(_Model):
    """How personas are built and how small a group a card may show."""

    enabled: bool = True
    """Read by the flow: when false the persona stage is skipped."""
    method: Literal["kmeans", "rules"] = "kmeans"
    k: Annotated[int | None, Field(ge=1, le=50)] = None
    """Number of personas; None chooses it by silhouette in [k_min, k_max]."""
    k_min: Annotated[int, Field(ge=2, le=50)] = 2
    k_max: Annotated[int, Field(ge=2, le=50)] = 8
    min_group_size: Annotated[int, Field(ge=2)] = 20
    """k-anonymity threshold: no card shows a persona or category with fewer members."""
    sample_size: Annotated[int, Field(ge=100)] = 20_000
    """Profiles k-means is fitted on and the silhouette is computed on."""
    seed: int = 0
    top_interests: Annotated[int, Field(ge=0, le=50)] = 5
    interest_floor: Annotated[float, Field(ge=0, le=1)] = 0.5
    """A member holds an interest when its merged confidence is at least this."""
    rules: tuple[PersonaRule, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> PersonaSettings:
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) is greater than k_max ({self.k_max})")
        if self.method == "rules" and not self.rules:
            raise ValueError("method 'rules' needs at least one rule under 'rules'")
        slugs = [slug(rule.name) for rule in self.rules]
        repeated = sorted({s for s in slugs if slugs.count(s) > 1})
        if repeated:
            raise ValueError(f"rule names must give distinct persona ids; repeated: {repeated}")
        catch_all = [i for i, rule in enumerate(self.rules) if not rule.when]
        if catch_all and catch_all[0] != len(self.rules) - 1:
            name = self.rules[catch_all[0]].name
            raise ValueError(
                f"rule {name!r} has no conditions and matches everyone: the rules after it "
                "can never match (make it the last rule)"
            )
        return self


@dataclass(frozen=True)
class Criterion:
    """How the number of personas was chosen.

    `name`: "silhouette" (automatic k), "fixed" (`k` set), "one_persona" (too few profiles
    or k = 1) or "rules". `scores`: mean silhouette per k tried; `qualified`: the k whose
    smallest persona had at least `min_group_size` members.
    """

    name: str
    scores: dict[int, float] = field(default_factory=dict)
    qualified: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form: k as text keys, scores rounded to 4 decimals."""
        return {
            "name": self.name,
            "scores": {str(k): round(s, 4) for k, s in sorted(self.scores.items())},
            "qualified": list(self.qualified),
        }


@dataclass(frozen=True)
class PersonaAssignment:
    """Persona per profile, persona names, and how they were found."""

    labels: pd.Series
    """profile_id → persona id ("p1", "p2", ... by size; rule slugs and "other" for rules)."""
    names: dict[str, str]
    """persona id → name, for every persona that has members; unique."""
    method: str
    k: int
    """Number of personas with members."""
    criterion: Criterion


class _Text(NamedTuple):
    """A text column as codes (-1: missing) into its distinct values."""

    codes: Ints
    values: list[str]


class _Breakdown(NamedTuple):
    """Members per (persona, category) and the categories."""

    counts: Ints
    values: list[str]


class _Interests(NamedTuple):
    """Interest rows of the profiles at hand: row position, topic code, confidence."""

    pos: Ints
    topic: Ints
    confidence: F64
    topics: list[str]


def _positions(profile_ids: pd.Series, other: pd.Series | None = None) -> Ints:
    """Row position in `profile_ids` of each value of `other` (-1 when absent).

    Also checks that profile ids are present and unique. One factorisation of both columns
    (Arrow dictionary encoding for string columns) is much faster than an index lookup.
    """
    n = len(profile_ids)
    parts = [profile_ids.reset_index(drop=True)]
    if other is not None:
        parts.append(other.reset_index(drop=True))
    codes, _ = pd.factorize(pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0])
    codes = codes.astype(np.int64)
    if not np.array_equal(codes[:n], np.arange(n)):
        raise ValueError("profiles need one row per profile and a profile_id on each")
    rest = codes[n:]
    return np.where(rest < n, rest, -1)


def _distinct(keys: Ints) -> Ints:
    """The distinct keys, sorted (sorting beats hashing for int64 keys here)."""
    ordered = np.sort(keys)
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if len(keys) else ordered


def _max_by_key(keys: Ints, values: F64) -> tuple[Ints, F64]:
    """The distinct keys, sorted, and the highest value of each."""
    if not len(keys):
        return keys, values
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    return ordered[starts], np.maximum.reduceat(values[order], starts)


def _check_profiles(profiles: pd.DataFrame) -> pd.Index:
    if "profile_id" not in profiles.columns:
        raise ValueError("profiles need a profile_id column")
    _positions(profiles["profile_id"])
    index: pd.Index = pd.Index(profiles["profile_id"], name="profile_id")
    return index


def _numbers(profiles: pd.DataFrame, column: str | None) -> F64:
    """A column as float64, NaN where missing or not a number; all NaN without the column."""
    if column is None or column not in profiles.columns:
        return np.full(len(profiles), np.nan)
    values = pd.to_numeric(profiles[column], errors="coerce")
    return np.asarray(values.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


def horizon_column(
    profiles: pd.DataFrame, prefix: Literal["clv", "expected_purchases"]
) -> str | None:
    """The one `<prefix>_<h>d` column of `profiles` (None without one).

    Raises ValueError when there are several: pass the column explicitly then.
    """
    pattern = _CLV if prefix == "clv" else _EXPECTED
    found = sorted(str(c) for c in profiles.columns if pattern.match(str(c)))
    if len(found) > 1:
        raise ValueError(f"several {prefix}_<h> columns ({', '.join(found)}): name one")
    return found[0] if found else None


def _has_purchases(profiles: pd.DataFrame) -> Bools:
    known = np.zeros(len(profiles), dtype=bool)
    for column in ("rfm_r", "rfm_f", "rfm_m"):
        known |= ~np.isnan(_numbers(profiles, column))
    return known | (np.nan_to_num(_numbers(profiles, "revenue")) > 0)


def _log_clv(profiles: pd.DataFrame, clv_column: str | None) -> F64:
    column = clv_column if clv_column is not None else horizon_column(profiles, "clv")
    return np.log1p(np.clip(_numbers(profiles, column), 0, None))


def _interests(profiles: pd.DataFrame, interests: pd.DataFrame, *, floor: float) -> _Interests:
    """The interest rows of `profiles` with a confidence of at least `floor`."""
    if interests.empty:
        empty = np.zeros(0, dtype=np.int64)
        return _Interests(empty, empty, np.zeros(0), [])
    pos = _positions(profiles["profile_id"], interests["profile_id"])
    confidence = pd.to_numeric(interests["confidence"], errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    tcode, topics = pd.factorize(interests["topic"])
    keep = (pos >= 0) & (confidence >= floor) & (tcode >= 0)
    return _Interests(
        pos[keep], tcode[keep].astype(np.int64), confidence[keep], [str(t) for t in topics]
    )


def interest_group(topic: str) -> str:
    """The group of a taxonomy key, its first two dot levels: `interest.outdoor.hiking` →
    `interest.outdoor`."""
    return ".".join(topic.split(".")[:2])


def persona_features(
    profiles: pd.DataFrame, interests: pd.DataFrame, *, clv_column: str | None = None
) -> pd.DataFrame:
    """Numeric persona features per profile (float32, indexed by profile_id).

    Columns: `BEHAVIOUR_FEATURES` (rfm_r, rfm_f, rfm_m, log_clv = log1p(CLV), churn_risk,
    has_purchases 0/1), then one column per interest group held by these profiles (sorted):
    the highest confidence among the group's topics, 0 without one. Missing behaviour values
    (non-buyers) are filled with the mean of the known values. `clv_column` defaults to the
    one `clv_<h>d` column of `profiles`.
    """
    return _features(profiles, interests, _check_profiles(profiles), clv_column)


def _features(
    profiles: pd.DataFrame, interests: pd.DataFrame, index: pd.Index, clv_column: str | None
) -> pd.DataFrame:
    behaviour = {
        "rfm_r": _numbers(profiles, "rfm_r"),
        "rfm_f": _numbers(profiles, "rfm_f"),
        "rfm_m": _numbers(profiles, "rfm_m"),
        "log_clv": _log_clv(profiles, clv_column),
        "churn_risk": _numbers(profiles, "churn_risk"),
    }
    data: dict[str, F32] = {}
    for name, values in behaviour.items():
        known = ~np.isnan(values)
        fill = float(values[known].mean()) if known.any() else 0.0
        data[name] = np.where(known, values, fill).astype(np.float32)
    data["has_purchases"] = _has_purchases(profiles).astype(np.float32)
    found = _interests(profiles, interests, floor=0.0)
    group_of_topic, groups = pd.factorize(
        pd.Series([interest_group(t) for t in found.topics], dtype=object), sort=True
    )
    if len(found.pos):
        gcode = group_of_topic.astype(np.int64)[found.topic]
        held = np.unique(gcode)
        column = np.full(len(groups), -1, dtype=np.int64)
        column[held] = np.arange(len(held))
        matrix = np.zeros((len(profiles), len(held)), dtype=np.float32)
        np.maximum.at(matrix, (found.pos, column[gcode]), found.confidence.astype(np.float32))
        for j, g in enumerate(held):
            data[str(groups[g])] = matrix[:, j]
    return pd.DataFrame(data, index=index)


def _standardise(x: F32) -> F32:
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0
    out = x - mean.astype(np.float32)
    out /= std.astype(np.float32)
    return np.asarray(out, dtype=np.float32)


def _fit(x: F32, k: int, seed: int) -> KMeans:
    """k-means on one OpenMP thread. Its result depends on how many threads split the work,
    so a fixed count makes the personas the same on every machine and in every process; and
    on a busy 2-core machine threads waiting at k-means' thousands of barriers spun on the
    cores (~8x the CPU of the work itself, 2.0 s instead of 0.3 s for 7 fits of 20,000 rows)."""
    from sklearn.cluster import KMeans  # noqa: PLC0415 - a slow import, needed only here

    with threadpool_limits(limits=1, user_api="openmp"):
        return KMeans(n_clusters=k, n_init=_N_INIT, max_iter=_MAX_ITER, random_state=seed).fit(x)


def silhouettes(x: F32, labelings: Sequence[npt.NDArray[np.integer[Any]]]) -> list[float]:
    """Mean silhouette (Euclidean) of each labelling of the rows of `x`.

    Same definition as `sklearn.metrics.silhouette_score` (a member alone in its cluster
    scores 0), but the pairwise distances are computed once, in chunks, for all labellings.
    """
    n = len(x)
    ks = [int(labels.max()) + 1 for labels in labelings]
    offsets = np.cumsum([0, *ks])
    onehot = np.zeros((n, int(offsets[-1])), dtype=np.float32)
    rows = np.arange(n)
    for labels, offset in zip(labelings, offsets, strict=False):
        onehot[rows, offset + labels] = 1.0
    sums = np.empty(onehot.shape, dtype=np.float64)
    squares = np.einsum("ij,ij->i", x, x)
    xt = np.ascontiguousarray(x.T)
    for start in range(0, n, _SILHOUETTE_CHUNK):
        stop = min(start + _SILHOUETTE_CHUNK, n)
        d = x[start:stop] @ xt  # in place from here: the chunk is the big allocation
        d *= -2.0
        d += squares[None, :]
        d += squares[start:stop, None]
        np.maximum(d, 0.0, out=d)
        d[np.arange(stop - start), np.arange(start, stop)] = 0.0
        np.sqrt(d, out=d)
        sums[start:stop] = d @ onehot
    out: list[float] = []
    for labels, offset, k in zip(labelings, offsets, ks, strict=False):
        totals = sums[:, offset : offset + k]
        sizes = np.bincount(labels, minlength=k).astype(np.float64)
        own = sizes[labels]
        a = totals[rows, labels] / np.maximum(own - 1, 1)
        means = totals / np.maximum(sizes, 1)
        means[rows, labels] = np.inf
        means[:, sizes == 0] = np.inf
        b = means.min(axis=1)
        score = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
        out.append(float(score.mean()))
    return out


def _sample(n: int, size: int, seed: int) -> Ints:
    if n <= size:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


def _choose_k(x: F32, xs: F32, settings: PersonaSettings, distinct: int) -> tuple[Ints, Criterion]:
    top = min(settings.k_max, distinct, len(xs) - 1)
    ks = list(range(settings.k_min, top + 1))
    if not ks:
        return np.zeros(len(x), dtype=np.int64), Criterion("one_persona")
    models = {k: _fit(xs, k, settings.seed) for k in ks}
    scores = dict(zip(ks, silhouettes(xs, [models[k].labels_ for k in ks]), strict=True))
    assigned = {k: np.asarray(models[k].predict(x), dtype=np.int64) for k in ks}
    qualified = tuple(
        k for k in ks if np.bincount(assigned[k], minlength=k).min() >= settings.min_group_size
    )
    chosen = max(qualified, key=lambda k: (scores[k], -k)) if qualified else ks[0]
    return assigned[chosen], Criterion("silhouette", scores, qualified)


def _canonical_order(x: F32) -> Ints:
    """An order of the rows of `x` that depends only on their values: by their projection on
    a fixed direction (equal rows are interchangeable). The sample and k-means' seeding pick
    rows by position, and the rows come in profile-id order, which follows the pseudonym key:
    without this, rotating the key (or a test's fresh key) would move people between personas.
    """
    direction = np.asarray(np.random.default_rng(0).standard_normal(x.shape[1]), np.float64)
    projection = np.zeros(len(x), dtype=np.float64)
    for column in range(x.shape[1]):  # in float64, a column at a time
        projection += x[:, column] * direction[column]
    return np.argsort(projection, kind="stable").astype(np.int64)


def _cluster(features: pd.DataFrame, settings: PersonaSettings) -> tuple[Ints, Criterion]:
    n = len(features)
    if n < 2 * settings.min_group_size or settings.k == 1:
        return np.zeros(n, dtype=np.int64), Criterion("one_persona")
    x = _standardise(features.to_numpy(dtype=np.float32))
    order = _canonical_order(x)
    labels, criterion = _cluster_rows(x[order], settings)
    out = np.empty(n, dtype=np.int64)
    out[order] = labels
    return out, criterion


def _cluster_rows(x: F32, settings: PersonaSettings) -> tuple[Ints, Criterion]:
    n = len(x)
    xs = x[_sample(n, settings.sample_size, settings.seed)]
    distinct = len(np.unique(xs, axis=0))
    if settings.k is None:
        return _choose_k(x, xs, settings, distinct)
    k = min(settings.k, distinct)
    if k < 2:
        return np.zeros(n, dtype=np.int64), Criterion("one_persona")
    model = _fit(xs, k, settings.seed)
    return np.asarray(model.predict(x), dtype=np.int64), Criterion("fixed")


def topic_label(key: str, labels: Mapping[str, str]) -> str:
    """The human label of a taxonomy key, or its last part made readable."""
    if key in labels:
        return labels[key]
    return key.rsplit(".", 1)[-1].replace("_", " ").capitalize()


def _buyer_z(values: F64, codes: Ints, buyer: Bools, k: int) -> F64 | None:
    """Mean of `values` over each cluster's buyers, as z-scores among all buyers (None when
    the buyers do not differ in it)."""
    v, c = values[buyer], codes[buyer]
    if not len(v) or float(v.std()) == 0.0:
        return None
    counts = np.bincount(c, minlength=k)
    sums = np.bincount(c, weights=v, minlength=k)
    means = np.divide(sums, counts, out=np.full(k, float(v.mean())), where=counts > 0)
    return np.asarray((means - v.mean()) / v.std(), dtype=np.float64)


def _behaviour_name(buyers: float, r: float, f: float, value: float, churn: float) -> str:
    if buyers < _BUYERS:
        return "Prospects"
    high, low = value >= _DISTINCT, value <= -_DISTINCT
    if r <= -_DISTINCT or churn >= _DISTINCT:
        state = "At-risk" if high else "Lapsed"
    elif r >= _DISTINCT:
        state = "Loyal" if f >= _DISTINCT else "Recent"
    else:
        state = "Frequent" if f >= _DISTINCT else "Regular"
    noun = "high spenders" if high else ("low spenders" if low else "buyers")
    return f"{state} {noun}"


def _interest_words(
    features: pd.DataFrame, codes: Ints, k: int, *, floor: float, labels: Mapping[str, str]
) -> list[list[str]]:
    """Per cluster, the labels of its most distinctive interest groups (at most two)."""
    groups = [c for c in features.columns if str(c).startswith("interest.")]
    counts = np.maximum(np.bincount(codes, minlength=k), 1)
    distinct: list[list[tuple[float, str]]] = [[] for _ in range(k)]
    for group in groups:
        values = features[group].to_numpy(dtype=np.float64)
        std = float(values.std())
        if std == 0.0:
            continue
        z = (np.bincount(codes, weights=values, minlength=k) / counts - values.mean()) / std
        held = np.bincount(codes, weights=(values >= floor).astype(np.float64), minlength=k)
        for c in np.flatnonzero((z >= _DISTINCT) & (held / counts >= _NAME_INTEREST_SHARE)):
            distinct[c].append((-float(z[c]), str(group)))
    return [[topic_label(g, labels) for _, g in sorted(d)[:_NAME_INTERESTS]] for d in distinct]


def _names(
    features: pd.DataFrame, codes: Ints, k: int, *, floor: float, labels: Mapping[str, str]
) -> list[str]:
    """A name per cluster code, from its centroid (see the module docstring)."""
    if k == 1:
        return [ONE_PERSONA]
    buyer = features["has_purchases"].to_numpy() > 0.5
    counts = np.maximum(np.bincount(codes, minlength=k), 1)
    buyers = np.bincount(codes, weights=buyer.astype(np.float64), minlength=k) / counts
    found = {
        c: _buyer_z(features[c].to_numpy(dtype=np.float64), codes, buyer, k)
        for c in ("rfm_r", "rfm_f", "rfm_m", "log_clv", "churn_risk")
    }
    z = {c: np.zeros(k) if v is None else v for c, v in found.items()}
    spend = [v for c, v in found.items() if c in {"rfm_m", "log_clv"} and v is not None]
    value = np.mean(spend, axis=0) if spend else np.zeros(k)
    interests = _interest_words(features, codes, k, floor=floor, labels=labels)
    names = []
    for c in range(k):
        name = _behaviour_name(
            float(buyers[c]),
            float(z["rfm_r"][c]),
            float(z["rfm_f"][c]),
            float(value[c]),
            float(z["churn_risk"][c]),
        )
        names.append(f"{name} · {' & '.join(interests[c])}" if interests[c] else name)
    return names


def _unique(names: Iterable[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def _categories(profiles: pd.DataFrame, column: str, *, upper: bool = False) -> _Text:
    """A text column as codes into its distinct stripped values (-1: missing or empty)."""
    if column not in profiles.columns:
        return _Text(np.full(len(profiles), -1, dtype=np.int64), [])
    codes, uniques = pd.factorize(profiles[column])
    clean = [str(u).strip().upper() if upper else str(u).strip() for u in uniques]
    merged, values = pd.factorize(pd.Series(clean, dtype=object))
    remap = np.where(np.array(clean, dtype=object) == "", -1, merged).astype(np.int64)
    remap = np.append(remap, -1)  # code -1 (missing) indexes the last entry
    return _Text(remap[codes], [str(v) for v in values])


def _rule_values(
    field_name: str,
    profiles: pd.DataFrame,
    interest_rows: Callable[[], _Interests],
    clv_column: str | None,
) -> F64 | _Text:
    """The values a condition on `field_name` tests: numbers (NaN: missing) or text codes."""
    if field_name == "has_purchases":
        return _has_purchases(profiles).astype(np.float64)
    if field_name == "log_clv":
        return _log_clv(profiles, clv_column)
    if field_name in _TEXT_FIELDS:
        return _categories(profiles, field_name, upper=field_name == "country")
    if not field_name.startswith("interest."):
        return _numbers(profiles, field_name)
    found = interest_rows()
    under = np.array(
        [t == field_name or t.startswith(field_name + ".") for t in found.topics], dtype=bool
    )
    best = np.zeros(len(profiles))
    if len(found.pos):
        rows = under[found.topic]
        np.maximum.at(best, found.pos[rows], found.confidence[rows])
    return best


def _condition_mask(condition: RuleCondition, values: F64 | _Text) -> Bools:
    op, value = condition.operator
    targets = value if isinstance(value, tuple) else (value,)
    if isinstance(values, _Text):
        upper = condition.field == "country"
        wanted = {str(t).strip().upper() if upper else str(t).strip() for t in targets}
        hit = np.array([v in wanted for v in values.values], dtype=bool)
        if op == "ne":
            hit = ~hit
        return np.append(hit, False)[values.codes]
    numbers = np.array([float(t) for t in targets])
    if op == "in":
        return np.isin(values, numbers)
    if op == "ne":
        return np.asarray((values != numbers[0]) & ~np.isnan(values), dtype=bool)
    with np.errstate(invalid="ignore"):
        result = _COMPARE[op](values, numbers[0])
    return np.asarray(result, dtype=bool)


def _assign_by_rules(
    profiles: pd.DataFrame,
    index: pd.Index,
    interests: pd.DataFrame,
    settings: PersonaSettings,
    clv_column: str | None,
) -> PersonaAssignment:
    n = len(profiles)
    cache: dict[str, F64 | _Text] = {}
    interest_rows = functools.cache(lambda: _interests(profiles, interests, floor=0.0))
    masks = []
    for rule in settings.rules:
        mask = np.ones(n, dtype=bool)
        for condition in rule.when:
            if condition.field not in cache:
                cache[condition.field] = _rule_values(
                    condition.field, profiles, interest_rows, clv_column
                )
            mask &= _condition_mask(condition, cache[condition.field])
        masks.append(mask)
    ids = [slug(rule.name) for rule in settings.rules]
    persona = np.select(masks, ids, default=OTHER) if masks else np.full(n, OTHER)
    names = {i: rule.name for i, rule in zip(ids, settings.rules, strict=True)}
    names[OTHER] = "Other"
    present = set(pd.unique(persona)) if n else set()
    names = {i: name for i, name in names.items() if i in present}
    labels = pd.Series(persona.astype(object), index=index, name="persona")
    return PersonaAssignment(labels, names, "rules", len(names), Criterion("rules"))


def assign_personas(
    profiles: pd.DataFrame,
    interests: pd.DataFrame,
    settings: PersonaSettings,
    *,
    labels: Mapping[str, str] | None = None,
    clv_column: str | None = None,
) -> PersonaAssignment:
    """A persona for every profile, by k-means on `persona_features` or by `settings.rules`.

    `labels` (taxonomy key → label) is used for the interest part of k-means names;
    `clv_column` defaults to the one `clv_<h>d` column. Deterministic for a fixed input and
    `settings.seed`. See the module docstring for the method and the k criterion.
    """
    index = _check_profiles(profiles)
    if settings.method == "rules":
        return _assign_by_rules(profiles, index, interests, settings, clv_column)
    features = _features(profiles, interests, index, clv_column)
    codes, criterion = _cluster(features, settings)
    k = int(codes.max()) + 1 if len(codes) else 0
    sizes = np.bincount(codes, minlength=k)
    order = np.lexsort((np.arange(k), -sizes))
    names = _names(features, codes, k, floor=settings.interest_floor, labels=labels or {})
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    ids = np.array([f"p{i + 1}" for i in range(k)], dtype=object)
    persona = pd.Series(ids[rank[codes]] if k else [], index=index, name="persona", dtype=object)
    unique = _unique(names[c] for c in order)
    return PersonaAssignment(
        labels=persona,
        names={str(ids[i]): unique[i] for i in range(k)},
        method="kmeans",
        k=k,
        criterion=criterion,
    )


def _crosstab(pcode: Ints, text: _Text, personas: int, missing: str) -> _Breakdown:
    """Members per (persona, category); missing values are the category `missing`."""
    values = [*text.values, missing]
    codes = np.where(text.codes >= 0, text.codes, len(text.values))
    width = len(values)
    counts = np.bincount(pcode * width + codes, minlength=personas * width)
    return _Breakdown(counts.reshape(personas, width), values)


def _fold(counts: Ints, categories: Sequence[str], size: int, k: int) -> dict[str, float]:
    """Shares of an exclusive breakdown with small categories folded into "other"."""
    order = sorted(range(len(categories)), key=lambda i: (-counts[i], categories[i]))
    shown = [i for i in order if counts[i] >= k and categories[i] != OTHER]
    rest = size - int(sum(counts[i] for i in shown))
    while 0 < rest < k and shown:
        rest += int(counts[shown.pop()])
    out = {categories[i]: round(int(counts[i]) / size, 3) for i in shown}
    if rest:
        out[OTHER] = round(rest / size, 3)
    return out


def _birth_year(value: object) -> float:
    try:
        year = float(str(value).strip())
    except ValueError:
        return math.nan
    return year if math.isfinite(year) and year == math.floor(year) else math.nan


def _age_bands(profiles: pd.DataFrame, as_of: datetime) -> _Text:
    """Age band codes into `AGE_BANDS` (-1: unknown) from `birth_year` and as_of's year.

    Under 18, over 120, unparseable and missing birth years are unknown.
    """
    if "birth_year" not in profiles.columns:
        return _Text(np.full(len(profiles), -1, dtype=np.int64), list(AGE_BANDS))
    codes, uniques = pd.factorize(profiles["birth_year"])
    age = as_of.year - np.array([_birth_year(u) for u in uniques], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        valid = (age >= 18) & (age <= _MAX_AGE)
    band = np.searchsorted(np.array([25, 35, 45, 55, 65]), np.nan_to_num(age), side="right")
    remap = np.append(np.where(valid, band, -1), -1).astype(np.int64)
    return _Text(remap[codes], list(AGE_BANDS))


@dataclass(frozen=True)
class _Channels:
    counts: Ints
    names: list[str]
    other: Ints


def _channels(profiles: pd.DataFrame, pcode: Ints, personas: int, k: int) -> _Channels:
    """Members per (persona, source), and per persona members in a source not shown."""
    if "sources" not in profiles.columns or not len(profiles):
        empty = np.zeros((personas, 0), dtype=np.int64)
        return _Channels(empty, [], np.zeros(personas, dtype=np.int64))
    exploded = pd.Series(profiles["sources"].to_numpy(), dtype=object).explode()
    scode, names = pd.factorize(exploded)
    width = max(len(names), 1)
    ok = scode >= 0
    pairs = _distinct(exploded.index.to_numpy(dtype=np.int64)[ok] * width + scode[ok])
    pos, source = pairs // width, pairs % width
    counts = np.bincount(pcode[pos] * width + source, minlength=personas * width)
    counts = counts.reshape(personas, width)[:, : len(names)]
    small = counts < k
    flagged = _distinct(pos[small[pcode[pos], source]]) if len(names) else pos[:0]
    other = np.bincount(pcode[flagged], minlength=personas)
    return _Channels(counts, [str(s) for s in names], other)


@dataclass(frozen=True)
class _Held:
    """Members holding each topic at the floor per persona, and their summed confidence."""

    counts: Ints
    confidence: F64
    topics: list[str]


def _held(
    profiles: pd.DataFrame, interests: pd.DataFrame, pcode: Ints, personas: int, floor: float
) -> _Held:
    found = _interests(profiles, interests, floor=floor)
    width = max(len(found.topics), 1)
    cells, best = _max_by_key(found.pos * width + found.topic, found.confidence)
    cell = pcode[cells // width] * width + cells % width
    counts = np.bincount(cell, minlength=personas * width).reshape(personas, width)
    sums = np.bincount(cell, weights=best, minlength=personas * width).astype(np.float64)
    return _Held(counts, sums.reshape(personas, width), found.topics)


def _top_interests(
    found: _Held, p: int, size: int, settings: PersonaSettings, labels: Mapping[str, str]
) -> list[dict[str, Any]]:
    counts = found.counts[p]
    held = [j for j in range(len(found.topics)) if counts[j] >= settings.min_group_size]
    held.sort(key=lambda j: (-counts[j], found.topics[j]))
    return [
        {
            "topic": found.topics[j],
            "label": topic_label(found.topics[j], labels),
            "share": round(int(counts[j]) / size, 3),
            "confidence": round(float(found.confidence[p, j] / counts[j]), 3),
        }
        for j in held[: settings.top_interests]
    ]


@dataclass(frozen=True)
class _Stat:
    """Per-persona count of known values, their sum and median."""

    known: Ints
    total: F64
    median: F64

    @classmethod
    def of(cls, values: F64, pcode: Ints, personas: int) -> _Stat:
        ok = ~np.isnan(values)
        known = np.bincount(pcode[ok], minlength=personas)
        total = np.bincount(pcode[ok], weights=values[ok], minlength=personas).astype(np.float64)
        median = np.full(personas, np.nan)
        if ok.any():
            med = pd.Series(values[ok]).groupby(pcode[ok]).median()
            median[med.index.to_numpy(dtype=np.int64)] = med.to_numpy(dtype=np.float64)
        return cls(known, total, median)

    def mean(self, p: int, k: int, digits: int) -> float | None:
        """The mean for persona p, or None when fewer than k members have a value."""
        if self.known[p] < k:
            return None
        return round(float(self.total[p] / self.known[p]), digits)


def _number_or_none(value: float | None, k_ok: bool, digits: int) -> float | None:
    if not k_ok or value is None or not math.isfinite(value):
        return None
    return round(value, digits)


@dataclass(frozen=True)
class _Tables:
    """Everything the cards are read from, per persona code."""

    sizes: Ints
    rfm: _Breakdown
    countries: _Breakdown
    ages: _Breakdown
    channels: _Channels
    held: _Held
    revenue: _Stat
    churn: _Stat
    clv: _Stat
    expected: _Stat


def _tables(
    profiles: pd.DataFrame,
    interests: pd.DataFrame,
    pcode: Ints,
    personas: int,
    *,
    settings: PersonaSettings,
    as_of: datetime,
    columns: tuple[str | None, str | None],
) -> _Tables:
    k = settings.min_group_size
    countries = _categories(profiles, "country", upper=True)
    return _Tables(
        sizes=np.bincount(pcode, minlength=personas),
        rfm=_crosstab(pcode, _categories(profiles, "rfm_segment"), personas, NO_PURCHASES),
        countries=_crosstab(pcode, countries, personas, UNKNOWN),
        ages=_crosstab(pcode, _age_bands(profiles, as_of), personas, UNKNOWN),
        channels=_channels(profiles, pcode, personas, k),
        held=_held(profiles, interests, pcode, personas, settings.interest_floor),
        revenue=_Stat.of(_numbers(profiles, "revenue"), pcode, personas),
        churn=_Stat.of(_numbers(profiles, "churn_risk"), pcode, personas),
        clv=_Stat.of(_numbers(profiles, columns[0]), pcode, personas),
        expected=_Stat.of(_numbers(profiles, columns[1]), pcode, personas),
    )


def _channel_shares(channels: _Channels, p: int, size: int, k: int) -> dict[str, float]:
    counts = channels.counts[p]
    shown = sorted(
        (j for j in range(len(channels.names)) if counts[j] >= k),
        key=lambda j: (-counts[j], channels.names[j]),
    )
    out = {channels.names[j]: round(int(counts[j]) / size, 3) for j in shown}
    if channels.other[p] >= k:
        out[OTHER] = round(int(channels.other[p]) / size, 3)
    return out


def _card(
    t: _Tables,
    p: int,
    *,
    persona: str,
    name: str,
    settings: PersonaSettings,
    labels: Mapping[str, str],
    total: int,
    total_revenue: float,
) -> dict[str, Any]:
    k = settings.min_group_size
    size = int(t.sizes[p])
    revenue_ok = bool(t.revenue.known[p] >= k)
    revenue = float(t.revenue.total[p])
    share = revenue / total_revenue if total_revenue > 0 else None
    return {
        "persona": persona,
        "name": name,
        "size": size,
        "share": round(size / total, 3),
        "revenue": _number_or_none(revenue, revenue_ok, 2),
        "revenue_share": _number_or_none(share, revenue_ok, 3),
        "rfm_mix": _fold(t.rfm.counts[p], t.rfm.values, size, k),
        "churn_risk": {
            "mean": t.churn.mean(p, k, 3),
            "median": _number_or_none(float(t.churn.median[p]), bool(t.churn.known[p] >= k), 3),
        },
        "clv_mean": t.clv.mean(p, k, 2),
        "expected_purchases_mean": t.expected.mean(p, k, 3),
        "top_interests": _top_interests(t.held, p, size, settings, labels),
        "channels": _channel_shares(t.channels, p, size, k),
        "countries": _fold(t.countries.counts[p], t.countries.values, size, k),
        "age_bands": _fold(t.ages.counts[p], t.ages.values, size, k),
    }


def persona_cards(
    profiles: pd.DataFrame,
    interests: pd.DataFrame,
    assignment: PersonaAssignment,
    settings: PersonaSettings,
    *,
    labels: Mapping[str, str],
    as_of: datetime,
    previous: Mapping[str, int] | None = None,
    clv_column: str | None = None,
    expected_column: str | None = None,
) -> dict[str, Any]:
    """The JSON-ready persona document: counts and aggregates only, k-anonymous.

    Personas with fewer than `settings.min_group_size` members are only counted in
    `hidden`; small categories inside a card are folded into "other" (module docstring).
    `previous` maps persona name → size from the last run (`sizes_by_name`); it fills each
    card's `previous_size` and `change` (null for a new name) and `moved` (null without it).
    Besides the fields of the issue's example each card has `expected_purchases_mean`.
    `clv_column` / `expected_column` default to the one `clv_<h>d` /
    `expected_purchases_<h>d` column.
    """
    index = _check_profiles(profiles)
    persona = assignment.labels
    if not persona.index.equals(index):
        persona = persona.reindex(index)
    if persona.isna().any():
        raise ValueError(f"{int(persona.isna().sum())} profiles have no persona in the assignment")
    codes, ids = pd.factorize(persona)
    pcode = codes.astype(np.int64)
    columns = (
        clv_column if clv_column is not None else horizon_column(profiles, "clv"),
        expected_column
        if expected_column is not None
        else horizon_column(profiles, "expected_purchases"),
    )
    t = _tables(
        profiles, interests, pcode, len(ids), settings=settings, as_of=as_of, columns=columns
    )
    k = settings.min_group_size
    total = len(profiles)
    total_revenue = float(np.nansum(_numbers(profiles, "revenue")))
    shown = sorted(
        (p for p in range(len(ids)) if t.sizes[p] >= k), key=lambda p: (-t.sizes[p], str(ids[p]))
    )
    cards = []
    for p in shown:
        name = assignment.names.get(str(ids[p]), str(ids[p]))
        card = _card(
            t,
            p,
            persona=str(ids[p]),
            name=name,
            settings=settings,
            labels=labels,
            total=total,
            total_revenue=total_revenue,
        )
        before = None if previous is None else previous.get(name)
        card["previous_size"] = None if before is None else int(before)
        card["change"] = None if before is None else card["size"] - int(before)
        cards.append(card)
    names = [c["name"] for c in cards]
    shown_names = set(names)
    hidden_sizes = [int(t.sizes[p]) for p in range(len(ids)) if t.sizes[p] < k]
    return {
        "method": assignment.method,
        "k": assignment.k,
        "criterion": assignment.criterion.to_json(),
        "min_group_size": k,
        "profiles": total,
        "hidden": {"personas": len(hidden_sizes), "profiles": sum(hidden_sizes)},
        "moved": None
        if previous is None
        else {
            "new": [n for n in names if n not in previous],
            "gone": sorted(n for n in previous if n not in shown_names),
        },
        "cards": cards,
    }


def sizes_by_name(document: Mapping[str, Any]) -> dict[str, int]:
    """Persona name → size from a previous `persona_cards` document (its cards only)."""
    cards = document.get("cards") or []
    return {str(card["name"]): int(card["size"]) for card in cards}
