"""Run one provider's lookups for a night: batches, bounded concurrency, every subject accounted.

The caller (the flow) has already asked policy gate A, picked each subject's identifier form
and consulted the cache; this module only turns the remaining (subject, form, value) rows into
outcomes and signals. A batch whose call fails ends as `failed` rows with the error's reason
code — never an exception out of here, never a lost subject — so one provider's outage does
not stop the run, and the failed subjects are simply looked up again next run.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from enrichers.base import (
    BATCH_COLUMNS,
    OUTCOME_COLUMNS,
    SIGNAL_COLUMNS,
    SUBJECT,
    BudgetExhaustedError,
    LookupResult,
    LookupStatus,
    Provider,
    ProviderError,
    empty_signals,
    rows_per_lookup,
)
from enrichers.http.client import ProviderClient
from profiles.store.signals import RAW_SCORE_PATTERN, TOPIC_MAX_LENGTH, TOPIC_PATTERN
from profiles.types import SignalKind

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called with (subjects done, subjects total) as batches finish."""


@dataclass
class LookupRun:
    """Outcomes and signals of one provider's lookups, and how they ended."""

    outcomes: pd.DataFrame
    """OUTCOME_COLUMNS, one row per requested subject."""
    signals: pd.DataFrame
    """SIGNAL_COLUMNS."""
    failed_reasons: Counter[str] = field(default_factory=Counter)
    signals_dropped: int = 0
    """Signals that broke the contract (topic not declared or malformed, confidence not in
    (0, 1), ...) and were dropped, never passed on."""


def _failed(subjects: pd.Series, reason: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            SUBJECT: subjects.to_numpy(),
            "status": str(LookupStatus.FAILED),
            "reason": reason,
            "billable": False,
        },
        columns=list(OUTCOME_COLUMNS),
    )


def _per_value(
    values: pd.Series, check: Callable[[pd.Series], pd.Series], *, missing: bool
) -> npt.NDArray[np.bool_]:
    """`check` applied once per distinct value (topics and scores repeat a lot) and spread
    back over the rows; `check` sees plain strings, a missing value gets `missing`."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    texts = pd.Series([str(u) for u in uniques], dtype=object)
    verdicts = np.append(check(texts).to_numpy(dtype=bool), missing)
    return verdicts[np.where(codes >= 0, codes, len(texts))]


def valid_signals(signals: pd.DataFrame, produces: tuple[str, ...]) -> pd.Series:
    """Which signals keep the contract: a taxonomy key under one of the topics the provider
    declared it `produces`, a confidence strictly between 0 and 1, a known kind, a time, and
    a raw score that is missing or short text the cache accepts (no identifier fits)."""

    def topic_ok(topic: pd.Series) -> pd.Series:
        under = pd.Series(False, index=topic.index)
        for prefix in produces:
            under |= (topic == prefix) | topic.str.startswith(prefix + ".")
        return topic.str.fullmatch(TOPIC_PATTERN) & (topic.str.len() <= TOPIC_MAX_LENGTH) & under

    def raw_ok(raw: pd.Series) -> pd.Series:
        return raw.str.fullmatch(RAW_SCORE_PATTERN)

    confidence = pd.to_numeric(signals["confidence"], errors="coerce").to_numpy(dtype=float)
    observed = pd.to_datetime(signals["observed_at"], utc=True, errors="coerce")
    kinds = [str(k) for k in SignalKind]
    valid = (
        _per_value(signals["topic"], topic_ok, missing=False)
        & (confidence > 0)
        & (confidence < 1)
        & signals["kind"].astype(object).isin(kinds).to_numpy(dtype=bool)
        & observed.notna().to_numpy()
        & _per_value(signals["raw_score"], raw_ok, missing=True)
    )
    return pd.Series(valid, index=signals.index)


def _checked(
    batch: pd.DataFrame, result: LookupResult, produces: tuple[str, ...]
) -> tuple[LookupResult, int]:
    """Hold a provider to the contract: one outcome per subject asked for, valid statuses,
    signals only for matched subjects and only valid ones (the rest dropped and counted)."""
    outcomes = result.outcomes.drop_duplicates(SUBJECT)
    outcomes = outcomes[outcomes[SUBJECT].isin(batch[SUBJECT])]
    valid = {str(LookupStatus.MATCHED), str(LookupStatus.NO_MATCH), str(LookupStatus.FAILED)}
    bad = ~outcomes["status"].astype(str).isin(valid)
    if bad.any():
        outcomes = outcomes.copy()
        outcomes.loc[bad, ["status", "reason"]] = [str(LookupStatus.FAILED), "bad_status"]
    missing = batch.loc[~batch[SUBJECT].isin(outcomes[SUBJECT]), SUBJECT]
    if len(missing):
        outcomes = pd.concat([outcomes, _failed(missing, "missing_in_response")], ignore_index=True)
    signals = result.signals.reindex(columns=list(SIGNAL_COLUMNS))
    matched = outcomes.loc[outcomes["status"] == str(LookupStatus.MATCHED), SUBJECT]
    signals = signals[signals[SUBJECT].isin(matched)]
    keep = valid_signals(signals, produces) if len(signals) else pd.Series(dtype=bool)
    dropped = int((~keep).sum())
    if dropped:
        signals = signals[keep.to_numpy()]
    result = LookupResult(outcomes=outcomes.loc[:, list(OUTCOME_COLUMNS)], signals=signals)
    return result, dropped


async def _one_batch(
    provider: Provider, client: ProviderClient, batch: pd.DataFrame
) -> LookupResult:
    try:
        return await provider.lookup(batch, client)
    except ProviderError as exc:
        return LookupResult(outcomes=_failed(batch[SUBJECT], exc.reason))
    except Exception as exc:  # a provider bug must not lose the batch or stop the others
        logger.warning("provider %s: lookup raised %s", provider.name, type(exc).__name__)
        return LookupResult(outcomes=_failed(batch[SUBJECT], "provider_error"))


Answered = Callable[[pd.DataFrame, LookupResult], None]
"""Called with (the requests of some finished batches, their contract-checked result): the
lookups the caller can keep for good (e.g. cache) before the whole run ends."""


async def lookup_all(
    provider: Provider,
    client: ProviderClient,
    requests: pd.DataFrame,
    *,
    progress: Progress | None = None,
    answered: Answered | None = None,
    answered_every: int = 2_000,
) -> LookupRun:
    """Look up every row of `requests` (BATCH_COLUMNS), `rows_per_lookup` rows per call.

    A fixed pool of workers pulls batches, so memory stays flat for any number of subjects
    while the client keeps its connections busy: twice the client's concurrency in requests
    in flight, and at least two batches. Once the budget is spent, the remaining batches fail
    with reason `budget_exhausted` without calls. The contract is checked over groups of
    finished batches (`answered_every` subjects or more), not per batch: per-batch frame work
    would cost more than the requests. `answered` gets each checked group as it is ready
    (the flow caches it at once, so an interrupted run does not pay for its lookups twice).
    """
    requests = requests.loc[:, list(BATCH_COLUMNS)].reset_index(drop=True)
    caps = provider.capabilities
    size = rows_per_lookup(caps)
    batches = [requests.iloc[i : i + size] for i in range(0, len(requests), size)]
    queue: asyncio.Queue[pd.DataFrame] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    checked: list[tuple[LookupResult, int]] = []
    waiting: list[tuple[pd.DataFrame, LookupResult]] = []
    done = 0
    budget_spent = False

    def check_waiting() -> None:
        group = pd.concat([b for b, _ in waiting], ignore_index=True)
        frames = LookupResult(
            outcomes=pd.concat([r.outcomes for _, r in waiting], ignore_index=True),
            signals=_concat_signals([r.signals for _, r in waiting]),
        )
        waiting.clear()
        result, dropped = _checked(group, frames, caps.produces)
        checked.append((result, dropped))
        if answered is not None:
            answered(group, result)

    async def worker() -> None:
        nonlocal done, budget_spent
        while True:
            try:
                batch = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if budget_spent:
                result = LookupResult(outcomes=_failed(batch[SUBJECT], BudgetExhaustedError.reason))
            else:
                result = await _one_batch(provider, client, batch)
                if (result.outcomes["reason"] == BudgetExhaustedError.reason).any():
                    budget_spent = True
            waiting.append((batch, result))
            if sum(len(b) for b, _ in waiting) >= answered_every:
                check_waiting()
            done += len(batch)
            if progress is not None:
                progress(done, len(requests))

    in_flight = 2 * client.concurrency * max(1, caps.batch_size)
    workers = max(2, math.ceil(in_flight / size))
    await asyncio.gather(*(worker() for _ in range(min(workers, len(batches)) or 1)))
    if waiting:
        check_waiting()
    outcomes = (
        pd.concat([r.outcomes for r, _ in checked], ignore_index=True)
        if checked
        else pd.DataFrame(columns=list(OUTCOME_COLUMNS))
    )
    signals = _concat_signals([r.signals for r, _ in checked])
    failed = outcomes.loc[outcomes["status"] == str(LookupStatus.FAILED), "reason"]
    return LookupRun(
        outcomes=outcomes,
        signals=signals,
        failed_reasons=Counter({str(k): int(v) for k, v in failed.value_counts().items()}),
        signals_dropped=sum(d for _, d in checked),
    )


def _concat_signals(frames: list[pd.DataFrame]) -> pd.DataFrame:
    kept = [f for f in frames if len(f)]
    return pd.concat(kept, ignore_index=True) if kept else empty_signals()
