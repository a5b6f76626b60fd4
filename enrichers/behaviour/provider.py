"""The first-party `behaviour` provider: scores and interest signals from the shop's orders.

It fits the provider contract where the contract is about what comes out — `Capabilities`
(accepts no identifier form: nothing leaves the machine; region `local`; billing free;
signal kind observed) and signals with the contract's columns, checked like any provider's
(`enrichers.stage.valid_signals`) — but is fed order lines instead of identifiers:

    lines ─► rfm.prepare_orders (scoring currency, returns, as-of cut-off; exclusions counted)
          ├► rfm.rfm                 recency/frequency/monetary, quintile scores, segment
          ├► abcxyz.abc_xyz, pareto  revenue classes, purchase regularity, concentration
          ├► clv (BG/NBD, Gamma-Gamma) hold-out check, then the fit on everything to as-of:
          │                          p_alive, churn_risk, expected purchases and CLV
          └► interests.category_interests → interest.<category> signals (kind observed)

Scoring runs in two phases, so the order lines can be read and summarised in partitions:

    summarise(lines of some profiles) ─► BehaviourPart   per profile: RFM values, ABC value
                                                         and cv, BG/NBD summaries (to as-of
                                                         and to the hold-out start, with the
                                                         hold-out actuals), topic counts;
                                                         exclusion and order counts
    score_parts([part, part, ...])    ─► BehaviourResult the population: quintile scores and
                                                         segments, ABC classes, Pareto, the
                                                         fits and the hold-out check,
                                                         predictions, base rates, the report

`score(lines)` is `score_parts([summarise(lines)])`. Every per-profile number depends on the
profile's own lines only, and the parts are stacked in profile_id order before anything is
ranked, summed or fitted, so splitting the profiles into parts changes no bit of the result
(each profile's lines must all be in one part).

Provenance: every signal says `provider=behaviour`; the run summary and the profile column
`behaviour_model` carry the model version and a hash of the fitted parameters, so a score
can be traced to the fit that made it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from threadpoolctl import threadpool_limits

from enrichers.base import SIGNAL_COLUMNS, SUBJECT, Billing, Capabilities
from enrichers.behaviour import clv
from enrichers.behaviour.abcxyz import abc_xyz_classes, abc_xyz_values, pareto
from enrichers.behaviour.config import BehaviourSettings
from enrichers.behaviour.interests import TopicCounts, interest_signals, topic_counts
from enrichers.behaviour.rfm import (
    EXCLUSION_REASONS,
    prepare_orders,
    rfm_scores,
    rfm_values,
    utc_ns,
)
from enrichers.stage import valid_signals
from profiles.types import SignalKind

NAME: Final = "behaviour"
MODEL_VERSION: Final = "1"
CAPABILITIES: Final = Capabilities(
    accepts=(),
    produces=("interest",),
    region="local",
    billing=Billing.FREE,
    signal_kind=SignalKind.OBSERVED,
)
LINE_COLUMNS: Final = ("order_id", "ordered_at", "amount", "currency", "category", "quantity")
"""Columns of the order lines `score` reads (besides profile_id)."""


def score_columns(settings: BehaviourSettings) -> tuple[str, ...]:
    """The columns `score` adds to profiles.parquet."""
    h = settings.clv.suffix
    return (
        "rfm_r",
        "rfm_f",
        "rfm_m",
        "rfm_segment",
        "revenue",
        "abc",
        "xyz",
        "p_alive",
        "churn_risk",
        f"expected_purchases_{h}",
        f"clv_{h}",
        "behaviour_model",
    )


@dataclass(frozen=True)
class BehaviourResult:
    """Scores per profile, interest signals, and the report for the run summary."""

    scores: pd.DataFrame
    """`score_columns(settings)`, indexed by profile_id: every profile with a purchase."""
    signals: pd.DataFrame
    """SIGNAL_COLUMNS with profile_id instead of subject."""
    report: Mapping[str, Any] = field(default_factory=dict)


def _params_hash(params: Mapping[str, Any]) -> str:
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _per_period_discount(settings: BehaviourSettings) -> float:
    annual = settings.clv.discount_rate_annual
    return float((1 + annual) ** (settings.clv.period_days / 365.0) - 1)


@dataclass(frozen=True, eq=False)
class BehaviourPart:
    """What the order lines of some profiles contribute to the scores (`summarise`): every
    number that is per profile, none that ranks or fits the profiles against each other.

    Its size grows with the profiles (and the topics they bought), not with their lines, and
    it pickles, so a partition task can return it. `score_parts` stacks the parts of disjoint
    sets of profiles and scores the population.
    """

    as_of: pd.Timestamp
    """The scoring time (UTC)."""
    settings: BehaviourSettings
    rfm: pd.DataFrame
    """`rfm.rfm_values` per profile with a purchase."""
    abc_xyz: pd.DataFrame
    """`abcxyz.abc_xyz_values` per profile with a purchase."""
    clv: pd.DataFrame
    """`clv.summarise` up to as-of per profile with a purchase."""
    holdout: pd.DataFrame | None
    """`clv.holdout_summary` per profile with a purchase before the hold-out window; None when
    the hold-out check is off (`holdout_days` 0)."""
    interests: TopicCounts
    excluded: Mapping[str, int]
    """Lines excluded, by reason (rfm.EXCLUSION_REASONS, all present)."""
    orders: int
    """Orders prepared (purchases and the others; `interests.purchases` counts purchases)."""


def summarise(
    lines: pd.DataFrame, *, as_of: datetime, settings: BehaviourSettings
) -> BehaviourPart:
    """The per-profile half of `score` for the order lines of some profiles; every line of
    each of them must be in `lines` (a profile's lines are never split between parts)."""
    prepared = prepare_orders(lines, as_of=as_of, money=settings.money)
    values = rfm_values(prepared, as_of=as_of)
    classes = abc_xyz_values(prepared, as_of=as_of, settings=settings.abc_xyz)
    cfg = settings.clv
    purchases = prepared.orders[prepared.orders["purchase"]]
    # column by column, keeping dtypes: a tz-aware column as numpy would be Python objects
    orders = purchases[["profile_id", "order_id", "ordered_at", "value"]].rename(
        columns={"value": "amount"}
    )
    summary = clv.summarise(orders, as_of=as_of, period=cfg.period)
    holdout = None
    if cfg.holdout_days:
        holdout = clv.holdout_summary(
            orders,
            calibration_end=as_of - timedelta(days=cfg.holdout_days),
            observation_end=as_of,
            period=cfg.period,
        )
    return BehaviourPart(
        as_of=prepared.as_of,
        settings=settings,
        rfm=values,
        abc_xyz=classes,
        clv=summary,
        holdout=holdout,
        interests=topic_counts(prepared, settings=settings.interests),
        excluded=dict(prepared.excluded),
        orders=len(prepared.orders),
    )


def _stack(frames: Sequence[pd.DataFrame], *, per_profile: bool = True) -> pd.DataFrame:
    """The parts' frames as one, in profile_id order: parts in that order are only
    concatenated, others sorted (stable: a profile's rows keep their order)."""
    # empty frames are left out: an empty column's dtype may be a default one
    present = [frame for frame in frames if len(frame)] or list(frames[:1])
    stacked = present[0] if len(present) == 1 else pd.concat(present)
    if not stacked.index.is_monotonic_increasing:
        stacked = stacked.sort_index(kind="stable")
    if per_profile and not stacked.index.is_unique:
        raise ValueError(
            "a profile is in more than one part: each part must have all lines of its profiles"
        )
    return stacked


def _stack_interests(parts: Sequence[BehaviourPart]) -> TopicCounts:
    dropped: dict[str, int] = {}
    for part in parts:
        for reason, count in part.interests.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + count
    return TopicCounts(
        pairs=_stack([part.interests.pairs for part in parts], per_profile=False),
        purchases=sum(part.interests.purchases for part in parts),
        dropped=dropped,
    )


def _probabilistic(
    data: pd.DataFrame,
    holdout: pd.DataFrame | None,
    *,
    as_of: datetime,
    settings: BehaviourSettings,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """p_alive, churn_risk, expected purchases and CLV per profile, and the fit report."""
    cfg = settings.clv
    h = cfg.suffix
    columns = ["p_alive", "churn_risk", f"expected_purchases_{h}", f"clv_{h}"]
    report: dict[str, Any] = {"customers": len(data), "period": cfg.period, "horizon": h}
    repeaters = int((data["frequency"] > 0).sum()) if len(data) else 0
    if repeaters < cfg.min_repeat_customers:
        report["skipped"] = f"{repeaters} customers with a repeat purchase, fewer than " + (
            f"{cfg.min_repeat_customers}"
        )
        return pd.DataFrame(index=data.index, columns=columns, dtype="float64"), report
    if holdout is not None:
        checked = clv.holdout_result(
            holdout,
            calibration_end=as_of - timedelta(days=cfg.holdout_days),
            observation_end=as_of,
            period=cfg.period,
        )
        report["holdout"] = checked.as_dict()
    fit = clv.fit_all(data)
    report["bgnbd"] = fit.bgnbd.as_dict()
    report["gamma_gamma"] = fit.gamma_gamma.as_dict()
    report["params_hash"] = fit.params_hash
    predicted = clv.score_customers(
        data,
        fit,
        horizon_periods=cfg.horizon_days / cfg.period_days,
        discount_rate_per_period=_per_period_discount(settings),
    )
    scores = pd.DataFrame(
        {
            "p_alive": predicted["p_alive"],
            "churn_risk": predicted["churn_risk"],
            f"expected_purchases_{h}": predicted["expected_purchases"],
            f"clv_{h}": predicted["clv"],
        },
        index=data.index,
    )
    return scores, report


def score_parts(
    parts: Sequence[BehaviourPart], *, as_of: datetime, settings: BehaviourSettings
) -> BehaviourResult:
    """Scores and signals of the profiles of all `parts` (`summarise` of disjoint sets of
    profiles, same as-of and settings): what `score` gives for all their lines together.

    Parts in profile_id order are only concatenated; in any other order they are sorted, so
    the result never depends on how the profiles were split or in which order the parts come.
    """
    if not parts:
        raise ValueError("score_parts needs at least one part (summarise of no lines is one)")
    as_of_utc = pd.Timestamp(utc_ns(as_of), tz="UTC")
    for part in parts:
        if part.as_of != as_of_utc:
            raise ValueError("a part was summarised as of another time")
        if part.settings != settings:
            raise ValueError("a part was summarised with other settings")
    rfm_frame = rfm_scores(_stack([part.rfm for part in parts]), settings=settings.rfm)
    classes = abc_xyz_classes(_stack([part.abc_xyz for part in parts]), settings=settings.abc_xyz)
    holdouts = [part.holdout for part in parts if part.holdout is not None]
    # One BLAS thread: the fits' dot products then sum in one order on every machine, so the
    # parameters (and every score) do not depend on the core count or on the process they
    # run in (Dask workers start with one BLAS thread, the flow's process with one per core);
    # on two cores it is also several times faster than OpenBLAS's threads.
    with threadpool_limits(limits=1, user_api="blas"):
        probabilistic, fit = _probabilistic(
            _stack([part.clv for part in parts]),
            _stack(holdouts) if holdouts else None,
            as_of=as_of,
            settings=settings,
        )
    model = (
        f"{MODEL_VERSION}#"
        + _params_hash(
            {"settings": settings.model_dump(mode="json"), "fit": fit.get("params_hash")}
        )[:12]
    )
    scores = (
        rfm_frame[["rfm_r", "rfm_f", "rfm_m", "rfm_segment", "monetary"]]
        .rename(columns={"monetary": "revenue"})
        .join(classes[["abc", "xyz"]], how="left")
        .join(probabilistic, how="left")
        .assign(behaviour_model=model)
    )
    scores = scores.reindex(columns=list(score_columns(settings)))
    scores.index.name = "profile_id"

    counts = _stack_interests(parts)
    interests = interest_signals(
        counts, observed_at=as_of_utc.as_unit("ns"), settings=settings.interests
    )
    signals = pd.DataFrame(
        {
            SUBJECT: interests["profile_id"].to_numpy(),
            "topic": interests["topic"].to_numpy(),
            "confidence": interests["confidence"].to_numpy(dtype=float),
            "provider": NAME,
            "observed_at": pd.Timestamp(as_of).tz_convert("UTC"),
            "kind": str(SignalKind.OBSERVED),
            "raw_score": _score_text(interests["spend_share"].to_numpy(dtype=float)),
        },
        columns=list(SIGNAL_COLUMNS),
    )
    keep = valid_signals(signals, CAPABILITIES.produces) if len(signals) else None
    dropped = sum(interests.attrs.get("dropped", {}).values())
    dropped += 0 if keep is None else int((~keep).sum())
    if keep is not None and dropped:
        signals = signals[keep.to_numpy()]
    signals = signals.rename(columns={SUBJECT: "profile_id"})

    figures = pareto(classes["revenue"].to_numpy(dtype=float))
    excluded = {
        reason: sum(part.excluded[reason] for part in parts) for reason in EXCLUSION_REASONS
    }
    report: dict[str, Any] = {
        "provider": NAME,
        "model": model,
        "as_of": as_of.isoformat(timespec="seconds"),
        "currency": settings.money.scoring_currency,
        "orders": sum(part.orders for part in parts),
        "purchases": counts.purchases,
        "lines_excluded": {k: int(v) for k, v in excluded.items() if v},
        "customers": len(scores),
        "segments": _counts(scores["rfm_segment"]),
        "abc": _counts(scores["abc"]),
        "xyz": _counts(scores["xyz"]),
        "one_time_buyers": int(classes["one_time_buyer"].sum()),
        "pareto": {
            "top_20_share": _round(figures["top_20_share"]),
            "top_4_share": _round(figures["top_4_share"]),
            "lorenz": [[round(a, 4), round(b, 4)] for a, b in figures["lorenz"]],
        },
        "churn_risk_mean": _round(float(np.nanmean(scores["churn_risk"])))
        if scores["churn_risk"].notna().any()
        else None,
        "models": fit,
        "interest_signals": len(signals),
        "signals_dropped": dropped,
    }
    return BehaviourResult(scores=scores, signals=signals, report=report)


def score(lines: pd.DataFrame, *, as_of: datetime, settings: BehaviourSettings) -> BehaviourResult:
    """Scores and signals for every profile in `lines` with a purchase up to `as_of`."""
    return score_parts(
        [summarise(lines, as_of=as_of, settings=settings)], as_of=as_of, settings=settings
    )


def _score_text(values: np.ndarray) -> np.ndarray:
    """Shares as short decimal text (`0.1524`), converted in Arrow: millions of them."""
    text = pc.cast(pa.array(np.round(values, 4)), pa.string())
    return np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)


def _counts(values: pd.Series) -> dict[str, int]:
    counts = values.astype("string").value_counts(dropna=True)
    return {str(k): int(v) for k, v in counts.sort_index().items()}


def _round(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 6)
