"""RFM scores and segments per profile, and the order preparation all behaviour scores share.

Order preparation (`prepare_orders`)
====================================

Input: order lines, one row per line::

    profile_id   str       pseudonymous profile id
    order_id     str       the order the line belongs to; an order is (profile_id, order_id)
    ordered_at   datetime  time zone-aware (any zone; UTC is used from here on)
    amount       float     line amount in the line's own currency, negative for a return
    currency     str       ISO 4217 code (trimmed and upper-cased before the rate look-up)
    category     str       optional: product category such as `outdoor.hiking` (interests)
    margin       float     optional: line margin in the line's currency (ABC by margin)

Other columns (`quantity`, ...) are not read. A missing required column is a per-call error
(`ValueError` naming the column); a bad value is a per-line outcome: the line is excluded and
counted in `PreparedOrders.excluded` under the first of these reasons that applies:

    missing_profile_id   profile_id missing or empty
    missing_order_id     order_id missing or empty
    missing_time         ordered_at missing
    after_as_of          ordered after `as_of` (lines at `as_of` exactly count)
    missing_amount       amount missing, not a number or infinite
    unknown_currency     currency missing or not in `MoneySettings.rates`: never mixed in at
                         face value, and only the line is excluded, not its whole order
    amount_out_of_range  more than `MAX_LINE_AMOUNT` in the scoring currency (a unit error)
    return_ignored       negative amount while `MoneySettings.returns` is `ignore`

Amounts are converted to the scoring currency (`amount * rate`) and held as whole millionths
(`*_micros`, int64). Sums of integers are exact, so no result depends on the order of the
input rows, and equal totals are equal (ties stay ties). A margin that is missing or not a
number counts as 0 and is counted in `missing_margin_lines`; the line itself stays.

Returns: with `returns="net"` (default) a negative line reduces its order's value, and an
order made only of returns has a negative value; with `returns="ignore"` negative lines are
dropped. Lines are aggregated to one row per order: time of its earliest line, net value,
margin, number of lines. An order with a value above zero is a *purchase*; the others
(refunds, free orders, orders netted to nothing) are kept and counted
(`PreparedOrders.non_purchase_orders`) but never count as purchases for recency, frequency,
XYZ or interests. Their (negative) value still counts in monetary value and revenue.

RFM (`rfm`)
===========

Only profiles with at least one purchase are scored (the others are counted in
`PreparedOrders.profiles_without_purchase`):

    recency_days  whole days from the last purchase to `as_of` (floored)
    frequency     number of purchases
    monetary      net value of all the profile's orders, returns included, scoring currency

Scores (`quantile_scores`) are 1 to `bins` (5: quintiles), higher is better: recent, frequent,
high value. A profile's value is ranked among all scored profiles with equal values sharing
their average rank `r` (1-based, of `n`); its mid-rank percentile `p = (r - 1/2) / n` lies
strictly inside (0, 1) and the score is `floor(p * bins) + 1`, computed in integers so no
rounding error can move a boundary. Consequences, all deliberate:

- equal values always get equal scores (no arbitrary tie-break by row order or id);
- n distinct values spread evenly: 10 profiles give two per score;
- when all values are the same (or there is one profile), p = 1/2 and everyone gets the
  middle score, 3 of 5: nothing tells them apart, so nobody is best or worst;
- a percentile exactly on a boundary (p = k / bins) goes to the upper score.

`rfm_values` gives each profile's raw values, `rfm_scores` ranks the values of the whole
population (one `rfm_values` frame, or several of disjoint profiles stacked in profile_id
order) and `rfm` does both. Recency is scored on whole days, so purchases on the same day
tie. `rfm_fm`, the combined frequency-monetary score, is the mean of the F and M scores
rounded half up (`(f + m + 1) // 2`). The segment is looked up in a grid of R by FM scores
(`RfmSettings.segments`): a list of rules, each naming a segment and an inclusive range of R
and of FM scores, that must cover every cell exactly once. The default
(`DEFAULT_SEGMENTS`) fits the eleven segments of the widely used R x FM map (Champions, Loyal,
Potential loyalist, New, Promising, Need attention, About to sleep, At risk, Can't lose,
Hibernating, Lost) into a grid without overlaps::

    FM \\ R     1            2             3               4                   5
      5     Can't lose   At risk       Loyal           Champions           Champions
      4     Can't lose   At risk       Loyal           Champions           Champions
      3     At risk      At risk       Need attention  Potential loyalist  Potential loyalist
      2     Lost         Hibernating   Need attention  Potential loyalist  Potential loyalist
      1     Lost         Hibernating   About to sleep  Promising           New
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Annotated, Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]

MICROS: Final = 1_000_000
"""Money is held in whole millionths of the scoring currency."""
DAY_NS: Final = 86_400 * 1_000_000_000
MAX_LINE_AMOUNT: Final = 1e10
"""Largest line amount (scoring currency) taken as real; larger ones are a unit error and
would risk overflowing the integer sums."""

REQUIRED_COLUMNS: Final = ("profile_id", "order_id", "ordered_at", "amount", "currency")
EXCLUSION_REASONS: Final = (
    "missing_profile_id",
    "missing_order_id",
    "missing_time",
    "after_as_of",
    "missing_amount",
    "unknown_currency",
    "amount_out_of_range",
    "return_ignored",
)
"""Why a line was excluded, in the order the reasons are tried (a line counts once)."""

ORDER_COLUMNS: Final = (
    "profile_id",
    "order_id",
    "profile_code",
    "ordered_at",
    "value",
    "value_micros",
    "margin_micros",
    "lines",
    "purchase",
)
"""Columns of `PreparedOrders.orders`: profile_id and order_id (str), profile_code (position
of the profile in `PreparedOrders.profiles`), ordered_at (datetime64[ns, UTC], earliest line),
value (float, net value in the scoring currency), value_micros and margin_micros (int64,
millionths; margin 0 without a margin column), lines (int64), purchase (bool: value > 0)."""

LINE_COLUMNS: Final = ("order_row", "category", "value_micros")
"""Columns of `PreparedOrders.lines`: order_row (int64, row of the order in
`PreparedOrders.orders`), category (categorical of trimmed, case-folded categories; missing
when absent), value_micros (int64)."""

Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
"""An ISO 4217 code, upper case."""
Rate = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class MoneySettings(BaseModel):
    """How line amounts become one scoring currency, and what returns do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scoring_currency: Currency = "EUR"
    """Every amount is converted to this currency; its own rate is 1."""
    rates: dict[Currency, Rate] = Field(default_factory=dict)
    """Units of the scoring currency per unit of each other currency (`USD: 0.92`). Lines in a
    currency not listed here are excluded and counted (`unknown_currency`)."""
    returns: Literal["net", "ignore"] = "net"
    """`net`: negative lines reduce their order's value; `ignore`: they are dropped."""

    @model_validator(mode="after")
    def _scoring_rate_is_one(self) -> MoneySettings:
        rate = self.rates.get(self.scoring_currency)
        if rate is not None and rate != 1:
            raise ValueError(
                f"rates: the scoring currency {self.scoring_currency} has rate 1, not {rate}"
            )
        return self

    def rate_table(self) -> dict[str, float]:
        """Every known currency with its rate, the scoring currency included."""
        return {**self.rates, self.scoring_currency: 1.0}


@dataclass(frozen=True)
class PreparedOrders:
    """Order lines checked, converted and aggregated to orders, with what was left out."""

    orders: pd.DataFrame
    """ORDER_COLUMNS; one row per order, sorted by profile_id, ordered_at, order_id."""
    lines: pd.DataFrame
    """LINE_COLUMNS; the lines kept, in input order (nothing computed from them depends on
    it: every sum is over whole millionths, exact in any order)."""
    profiles: pd.Index
    """Sorted ids of the profiles with at least one line kept (`profile_code` indexes it)."""
    excluded: Mapping[str, int]
    """Lines excluded, by reason (EXCLUSION_REASONS, all present, zeros included)."""
    as_of: pd.Timestamp
    """Lines after this time (UTC) were excluded."""
    currency: str
    """The scoring currency of every amount."""
    has_margin: bool
    """Whether the lines had a margin column."""
    missing_margin_lines: int
    """Lines kept whose margin was missing or not a number (counted as 0)."""

    @property
    def non_purchase_orders(self) -> int:
        """Orders with a value of zero or less: kept, but not purchases."""
        return int((~self.orders["purchase"].to_numpy(dtype=bool)).sum())

    @property
    def profiles_without_purchase(self) -> int:
        """Profiles with lines kept but no purchase: not scored."""
        return len(self.profiles) - len(purchase_totals(self).codes)


def utc_ns(as_of: datetime | pd.Timestamp) -> int:
    """A time zone-aware time in UTC nanoseconds (`ValueError` for a naive one)."""
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ValueError("as_of must be time zone-aware")
    return int(pd.Timestamp(as_of).tz_convert("UTC").as_unit("ns").value)


def _times_ns(column: pd.Series) -> tuple[Ints, Bools]:
    if not pd.api.types.is_datetime64_any_dtype(column.dtype):
        raise ValueError("ordered_at must be a datetime column")
    index = pd.DatetimeIndex(column)
    if index.tz is None:
        raise ValueError("ordered_at must be time zone-aware")
    index = index.tz_convert("UTC").as_unit("ns")
    return np.asarray(index.asi8, dtype=np.int64), np.asarray(index.isna(), dtype=bool)


def _missing_text(column: pd.Series) -> Bools:
    missing = column.isna().to_numpy(dtype=bool)
    return missing | (column == "").to_numpy(dtype=bool, na_value=False)


def _micros(amount: Floats) -> Ints:
    return np.rint(amount * MICROS).astype(np.int64)


def _rates(currency: pd.Series, money: MoneySettings) -> Floats:
    codes, uniques = pd.factorize(currency)
    table = money.rate_table()
    known = pd.Index(uniques).astype("string").str.strip().str.upper()
    by_code = np.array([table.get(c, np.nan) if isinstance(c, str) else np.nan for c in known])
    by_code = np.append(by_code, np.nan)  # code -1: missing currency
    return np.asarray(by_code[codes], dtype=np.float64)


def _categories(lines: pd.DataFrame, rows: Ints) -> pd.Categorical:
    if "category" not in lines.columns:
        return pd.Categorical(np.full(len(rows), np.nan, dtype=object))
    codes, uniques = pd.factorize(lines["category"].iloc[rows])
    cleaned = pd.Index(uniques).astype("string").str.strip().str.casefold()
    names = pd.Index(cleaned.dropna().unique()).sort_values()
    names = names[names != ""]
    to_name = np.append(names.get_indexer(cleaned), -1)  # code -1: missing category
    return pd.Categorical.from_codes(to_name[codes], categories=names.astype(object))


def prepare_orders(
    lines: pd.DataFrame, *, as_of: datetime | pd.Timestamp, money: MoneySettings
) -> PreparedOrders:
    """Order lines up to `as_of` in the scoring currency, aggregated to one row per order."""
    absent = [c for c in REQUIRED_COLUMNS if c not in lines.columns]
    if absent:
        raise ValueError(f"order lines lack the columns: {', '.join(absent)}")
    as_of_ns = utc_ns(as_of)
    times, no_time = _times_ns(lines["ordered_at"])
    amount = _numbers(lines["amount"])
    rate = _rates(lines["currency"], money)
    with np.errstate(invalid="ignore", over="ignore"):
        converted = amount * rate
        reasons: tuple[tuple[str, Bools], ...] = (
            ("missing_profile_id", _missing_text(lines["profile_id"])),
            ("missing_order_id", _missing_text(lines["order_id"])),
            ("missing_time", no_time),
            ("after_as_of", ~no_time & (times > as_of_ns)),
            ("missing_amount", ~np.isfinite(amount)),
            ("unknown_currency", np.isnan(rate)),
            ("amount_out_of_range", ~(np.abs(converted) <= MAX_LINE_AMOUNT)),
            ("return_ignored", np.full(len(lines), money.returns == "ignore") & (amount < 0)),
        )
    excluded = np.zeros(len(lines), dtype=bool)
    counts: dict[str, int] = {}
    for reason, mask in reasons:
        new = mask & ~excluded
        counts[reason] = int(new.sum())
        excluded |= new
    rows = np.flatnonzero(~excluded)
    value = _micros(converted[rows])
    margin = np.zeros(len(rows), dtype=np.int64)
    missing_margin = 0
    if "margin" in lines.columns:
        with np.errstate(invalid="ignore", over="ignore"):
            margin_converted = _numbers(lines["margin"])[rows] * rate[rows]
        good = np.abs(margin_converted) <= MAX_LINE_AMOUNT
        missing_margin = int((~good).sum())
        margin[good] = _micros(margin_converted[good])
    orders, profiles, line_row = _aggregate(lines, rows, times[rows], value, margin)
    return PreparedOrders(
        orders=orders,
        lines=pd.DataFrame(
            {
                "order_row": line_row,
                "category": _categories(lines, rows),
                "value_micros": value,
            }
        ),
        profiles=profiles,
        excluded=MappingProxyType(counts),
        as_of=pd.Timestamp(as_of_ns, tz="UTC"),
        currency=money.scoring_currency,
        has_margin="margin" in lines.columns,
        missing_margin_lines=missing_margin,
    )


def _numbers(column: pd.Series) -> Floats:
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _aggregate(
    lines: pd.DataFrame, rows: Ints, times: Ints, value: Ints, margin: Ints
) -> tuple[pd.DataFrame, pd.Index, Ints]:
    """Orders (ORDER_COLUMNS) of the kept `rows`, the sorted profile ids, and the order row of
    each kept line."""
    profile_code, profiles = pd.factorize(lines["profile_id"].iloc[rows], sort=True)
    order_code, order_ids = pd.factorize(lines["order_id"].iloc[rows], sort=True)
    width = max(len(order_ids), 1)
    key = profile_code.astype(np.int64) * width + order_code
    by_key = np.argsort(key)  # min, integer sums and counts: order within a key is moot
    order_key, starts = group_starts(key[by_key])
    line_order = np.empty(len(key), dtype=np.int64)
    line_order[by_key] = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(key))))
    order_profile, order_order = order_key // width, order_key % width
    order_time = _reduce(np.minimum, times[by_key], starts)
    order_value = _reduce(np.add, value[by_key], starts)
    canonical = np.lexsort((order_order, order_time, order_profile))
    row_of = np.empty(len(canonical), dtype=np.int64)
    row_of[canonical] = np.arange(len(canonical))
    orders = pd.DataFrame(
        {
            "profile_id": pd.Index(profiles).take(order_profile[canonical]),
            "order_id": pd.Index(order_ids).take(order_order[canonical]),
            "profile_code": order_profile[canonical],
            "ordered_at": pd.DatetimeIndex(order_time[canonical].view("datetime64[ns]"))
            .tz_localize("UTC")
            .as_unit("ns"),
            "value": order_value[canonical] / MICROS,
            "value_micros": order_value[canonical],
            "margin_micros": _reduce(np.add, margin[by_key], starts)[canonical],
            "lines": np.diff(np.append(starts, len(key)))[canonical],
            "purchase": order_value[canonical] > 0,
        }
    )
    return orders, pd.Index(profiles, name="profile_id"), row_of[line_order]


def _reduce(ufunc: np.ufunc, values: Ints, starts: Ints) -> Ints:
    if len(starts) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(ufunc.reduceat(values, starts), dtype=np.int64)


def group_starts(sorted_codes: Ints) -> tuple[Ints, Ints]:
    """The distinct codes of a sorted code array and where each one's run starts."""
    first = np.ones(len(sorted_codes), dtype=bool)
    first[1:] = sorted_codes[1:] != sorted_codes[:-1]
    starts = np.flatnonzero(first).astype(np.int64)
    return sorted_codes[starts], starts


@dataclass(frozen=True)
class PurchaseTotals:
    """Per profile with at least one purchase, in `profile_code` order."""

    codes: Ints
    """profile_code of each such profile (ascending)."""
    purchases: Ints
    """Number of purchases."""
    first_purchase_ns: Ints
    last_purchase_ns: Ints
    purchase_micros: Ints
    """Value of the purchases alone."""
    value_micros: Ints
    """Net value of all the profile's orders (non-purchases included)."""
    margin_micros: Ints


def purchase_totals(orders: PreparedOrders) -> PurchaseTotals:
    """Per-profile totals of the prepared orders, for profiles with a purchase."""
    table = orders.orders
    codes = table["profile_code"].to_numpy(dtype=np.int64)
    purchase = table["purchase"].to_numpy(dtype=bool)
    times = _order_times(orders)
    value = table["value_micros"].to_numpy(dtype=np.int64)
    buyers, starts = group_starts(codes[purchase])
    everyone, all_starts = group_starts(codes)
    at = np.searchsorted(everyone, buyers)
    return PurchaseTotals(
        codes=buyers,
        purchases=np.diff(np.append(starts, purchase.sum())).astype(np.int64),
        first_purchase_ns=_reduce(np.minimum, times[purchase], starts),
        last_purchase_ns=_reduce(np.maximum, times[purchase], starts),
        purchase_micros=_reduce(np.add, value[purchase], starts),
        value_micros=_reduce(np.add, value, all_starts)[at],
        margin_micros=_reduce(np.add, table["margin_micros"].to_numpy(dtype=np.int64), all_starts)[
            at
        ],
    )


def _order_times(orders: PreparedOrders) -> Ints:
    return np.asarray(pd.DatetimeIndex(orders.orders["ordered_at"]).asi8, dtype=np.int64)


def scoring_as_of(orders: PreparedOrders, as_of: datetime | pd.Timestamp | None) -> int:
    """The scoring time in UTC nanoseconds: `as_of`, by default the preparation's cut-off.

    It may be later than the cut-off (data up to yesterday, scored today), never earlier:
    orders after it would count."""
    if as_of is None:
        return int(orders.as_of.value)
    as_of_ns = utc_ns(as_of)
    if as_of_ns < orders.as_of.value:
        raise ValueError("as_of is earlier than the time the orders were prepared up to")
    return as_of_ns


Score = Annotated[int, Field(ge=1, le=10)]


class SegmentRule(BaseModel):
    """One rectangle of the R x FM grid: cells with R and FM in the inclusive ranges."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    segment: Annotated[str, Field(min_length=1, max_length=64)]
    r: tuple[Score, Score]
    """Lowest and highest recency score (inclusive)."""
    fm: tuple[Score, Score]
    """Lowest and highest frequency-monetary score (inclusive)."""

    @field_validator("r", "fm")
    @classmethod
    def _ordered(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[0] > value[1]:
            raise ValueError(f"range {list(value)} runs backwards")
        return value


def _rule(segment: str, r: tuple[int, int], fm: tuple[int, int]) -> SegmentRule:
    return SegmentRule(segment=segment, r=r, fm=fm)


DEFAULT_SEGMENTS: Final = (
    _rule("Champions", (4, 5), (4, 5)),
    _rule("Loyal", (3, 3), (4, 5)),
    _rule("Potential loyalist", (4, 5), (2, 3)),
    _rule("New", (5, 5), (1, 1)),
    _rule("Promising", (4, 4), (1, 1)),
    _rule("Need attention", (3, 3), (2, 3)),
    _rule("About to sleep", (3, 3), (1, 1)),
    _rule("At risk", (2, 2), (3, 5)),
    _rule("At risk", (1, 1), (3, 3)),
    _rule("Can't lose", (1, 1), (4, 5)),
    _rule("Hibernating", (2, 2), (1, 2)),
    _rule("Lost", (1, 1), (1, 2)),
)
"""The eleven common RFM segments as a grid of R by FM scores (see the module docstring)."""
DEFAULT_BINS: Final = 5


class RfmSettings(BaseModel):
    """Score bins and the segment grid."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bins: Annotated[int, Field(ge=2, le=10)] = DEFAULT_BINS
    """Scores run 1 to `bins` (5: quintiles)."""
    segments: tuple[SegmentRule, ...] = DEFAULT_SEGMENTS
    """Rules covering every (R, FM) cell of the bins x bins grid exactly once."""

    @model_validator(mode="after")
    def _grid_covered_once(self) -> RfmSettings:
        segment_grid(self)
        return self


def segment_grid(settings: RfmSettings) -> tuple[Ints, tuple[str, ...]]:
    """Segment code per (R - 1, FM - 1) cell and the segment names the codes index.

    Raises `ValueError` naming every cell left uncovered or covered twice."""
    names = tuple(dict.fromkeys(rule.segment for rule in settings.segments))
    bins = settings.bins
    cover: list[list[list[str]]] = [[[] for _ in range(bins)] for _ in range(bins)]
    problems: list[str] = []
    for rule in settings.segments:
        if max(rule.r[1], rule.fm[1]) > bins:
            problems.append(f"{rule.segment}: a score above {bins}")
            continue
        for r in range(rule.r[0], rule.r[1] + 1):
            for fm in range(rule.fm[0], rule.fm[1] + 1):
                cover[r - 1][fm - 1].append(rule.segment)
    cells = [(r + 1, fm + 1, cover[r][fm]) for r in range(bins) for fm in range(bins)]
    gaps = [f"r={r} fm={fm}" for r, fm, who in cells if not who]
    overlaps = [f"r={r} fm={fm} ({', '.join(who)})" for r, fm, who in cells if len(who) > 1]
    if gaps:
        problems.append(f"cells no segment covers: {'; '.join(gaps)}")
    if overlaps:
        problems.append(f"cells covered twice: {'; '.join(overlaps)}")
    if problems:
        raise ValueError("segment grid: " + " | ".join(problems))
    grid = np.array([[names.index(who[0]) for who in row] for row in cover], dtype=np.int64)
    return grid, names


def quantile_scores(values: npt.ArrayLike, *, bins: int) -> Ints:
    """Score 1 to `bins` by mid-rank percentile, higher values higher (module docstring)."""
    array = np.asarray(values)
    if len(array) == 0:
        return np.zeros(0, dtype=np.int64)
    ranks = pd.Series(array).rank(method="average").to_numpy(dtype=np.float64)
    twice = np.rint(ranks * 2).astype(np.int64)  # average ranks are whole or halves: exact
    return (bins * (twice - 1)) // (2 * len(array)) + 1


RFM_COLUMNS: Final = (
    "recency_days",
    "frequency",
    "monetary",
    "rfm_r",
    "rfm_f",
    "rfm_m",
    "rfm_fm",
    "rfm_segment",
)
"""Columns of `rfm`: recency_days, frequency (int64), monetary (float, scoring currency),
rfm_r, rfm_f, rfm_m, rfm_fm (int64 scores) and rfm_segment (categorical of segment names)."""


RFM_VALUE_COLUMNS: Final = ("recency_days", "frequency", "monetary_micros")
"""Columns of `rfm_values` (int64): whole days since the last purchase, purchases, and the
net value of all the profile's orders in millionths."""


def rfm_values(
    orders: PreparedOrders, *, as_of: datetime | pd.Timestamp | None = None
) -> pd.DataFrame:
    """RFM_VALUE_COLUMNS per profile with a purchase, indexed by profile_id (sorted): what
    each profile contributes to `rfm`, which ranks the profiles against each other.

    `as_of` (default: the preparation's cut-off) is where recency is measured from."""
    as_of_ns = scoring_as_of(orders, as_of)
    totals = purchase_totals(orders)
    return pd.DataFrame(
        {
            "recency_days": (as_of_ns - totals.last_purchase_ns) // DAY_NS,
            "frequency": totals.purchases,
            "monetary_micros": totals.value_micros,
        },
        index=pd.Index(orders.profiles.take(totals.codes), name="profile_id"),
    )


def rfm_scores(values: pd.DataFrame, *, settings: RfmSettings | None = None) -> pd.DataFrame:
    """RFM_COLUMNS from `rfm_values` of the whole population (any number of them stacked,
    profile_id order): each profile is scored by its rank among all of `values`."""
    settings = settings or RfmSettings()
    recency = values["recency_days"].to_numpy(dtype=np.int64)
    frequency = values["frequency"].to_numpy(dtype=np.int64)
    monetary = values["monetary_micros"].to_numpy(dtype=np.int64)
    r = quantile_scores(-recency, bins=settings.bins)
    f = quantile_scores(frequency, bins=settings.bins)
    m = quantile_scores(monetary, bins=settings.bins)
    fm = (f + m + 1) // 2
    grid, names = segment_grid(settings)
    segment = pd.Categorical.from_codes(grid[r - 1, fm - 1], categories=pd.Index(names))
    return pd.DataFrame(
        {
            "recency_days": recency,
            "frequency": frequency,
            "monetary": monetary / MICROS,
            "rfm_r": r,
            "rfm_f": f,
            "rfm_m": m,
            "rfm_fm": fm,
            "rfm_segment": segment,
        },
        index=values.index,
    )


def rfm(
    orders: PreparedOrders,
    *,
    as_of: datetime | pd.Timestamp | None = None,
    settings: RfmSettings | None = None,
) -> pd.DataFrame:
    """RFM_COLUMNS per profile with a purchase, indexed by profile_id (sorted).

    `as_of` (default: the preparation's cut-off) is where recency is measured from."""
    return rfm_scores(rfm_values(orders, as_of=as_of), settings=settings)
