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

Provenance: every signal says `provider=behaviour`; the run summary and the profile column
`behaviour_model` carry the model version and a hash of the fitted parameters, so a score
can be traced to the fit that made it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from enrichers.base import SIGNAL_COLUMNS, SUBJECT, Billing, Capabilities
from enrichers.behaviour import clv
from enrichers.behaviour.abcxyz import abc_xyz, pareto
from enrichers.behaviour.config import BehaviourSettings
from enrichers.behaviour.interests import category_interests
from enrichers.behaviour.rfm import PreparedOrders, prepare_orders, rfm
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


def _probabilistic(
    prepared: PreparedOrders, *, as_of: datetime, settings: BehaviourSettings
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """p_alive, churn_risk, expected purchases and CLV per profile, and the fit report."""
    cfg = settings.clv
    h = cfg.suffix
    purchases = prepared.orders[prepared.orders["purchase"]]
    # column by column, keeping dtypes: a tz-aware column as numpy would be Python objects
    orders = purchases[["profile_id", "order_id", "ordered_at", "value"]].rename(
        columns={"value": "amount"}
    )
    columns = ["p_alive", "churn_risk", f"expected_purchases_{h}", f"clv_{h}"]
    data = clv.summarise(orders, as_of=as_of, period=cfg.period)
    report: dict[str, Any] = {"customers": len(data), "period": cfg.period, "horizon": h}
    repeaters = int((data["frequency"] > 0).sum()) if len(data) else 0
    if repeaters < cfg.min_repeat_customers:
        report["skipped"] = f"{repeaters} customers with a repeat purchase, fewer than " + (
            f"{cfg.min_repeat_customers}"
        )
        return pd.DataFrame(index=data.index, columns=columns, dtype="float64"), report
    if cfg.holdout_days:
        holdout = clv.holdout_check(
            orders,
            calibration_end=as_of - timedelta(days=cfg.holdout_days),
            observation_end=as_of,
            period=cfg.period,
        )
        report["holdout"] = holdout.as_dict()
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


def score(lines: pd.DataFrame, *, as_of: datetime, settings: BehaviourSettings) -> BehaviourResult:
    """Scores and signals for every profile in `lines` with a purchase up to `as_of`."""
    prepared = prepare_orders(lines, as_of=as_of, money=settings.money)
    rfm_scores = rfm(prepared, as_of=as_of, settings=settings.rfm)
    classes = abc_xyz(prepared, as_of=as_of, settings=settings.abc_xyz)
    probabilistic, fit = _probabilistic(prepared, as_of=as_of, settings=settings)
    model = (
        f"{MODEL_VERSION}#"
        + _params_hash(
            {"settings": settings.model_dump(mode="json"), "fit": fit.get("params_hash")}
        )[:12]
    )
    scores = (
        rfm_scores[["rfm_r", "rfm_f", "rfm_m", "rfm_segment", "monetary"]]
        .rename(columns={"monetary": "revenue"})
        .join(classes[["abc", "xyz"]], how="left")
        .join(probabilistic, how="left")
        .assign(behaviour_model=model)
    )
    scores = scores.reindex(columns=list(score_columns(settings)))
    scores.index.name = "profile_id"

    interests = category_interests(prepared, as_of=as_of, settings=settings.interests)
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
    report: dict[str, Any] = {
        "provider": NAME,
        "model": model,
        "as_of": as_of.isoformat(timespec="seconds"),
        "currency": prepared.currency,
        "orders": len(prepared.orders),
        "purchases": int(prepared.orders["purchase"].sum()),
        "lines_excluded": {k: int(v) for k, v in prepared.excluded.items() if v},
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


def _score_text(values: np.ndarray) -> np.ndarray:
    """Shares as short decimal text (`0.1524`), converted in Arrow: millions of them."""
    text = pc.cast(pa.array(np.round(values, 4)), pa.string())
    return np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)


def _counts(values: pd.Series) -> dict[str, int]:
    counts = values.astype("string").value_counts(dropna=True)
    return {str(k): int(v) for k, v in counts.sort_index().items()}


def _round(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 6)
