"""The behaviour stage of the nightly flow: first-party scores from the shop's own order lines.

Only profiles allowed at gate B (profiling) are scored, and only their order lines are read:
profiling without a lawful basis is not done, not even as a model-fitting input. The scores
(RFM, ABC/XYZ, BG/NBD churn risk and expected purchases, Gamma-Gamma CLV) become columns of
profiles.parquet; category interests become `observed` signals of the first-party provider
`behaviour`; the fitted parameters, their optimiser status, the hold-out check, segment sizes
and the Pareto figures go to the run summary. Nothing here leaves the machine, so gate A
(sending identifiers to external providers) does not apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from enrichers.base import SUBJECT, empty_signals
from enrichers.behaviour.config import BehaviourSettings
from enrichers.behaviour.provider import (
    LINE_COLUMNS,
    BehaviourPart,
    BehaviourResult,
    score_parts,
    summarise,
)
from flows.runner import Partitions
from profiles.config import RunConfig
from profiles.identity import PROFILE_ID
from profiles.rundir import RunOutput, read_partition, write_part
from profiles.types import CanonicalField, SourceKind

PROFILING_COLUMN = "decision_profiling"


def allowed_for_profiling(profiles: pd.DataFrame) -> pd.Series:
    """The profile ids gate B allowed (profiling needs an outright allow)."""
    return profiles.loc[profiles[PROFILING_COLUMN] == "allow", PROFILE_ID]


def order_lines(
    config: RunConfig, output: RunOutput, allowed: pd.Series, *, scoring_currency: str
) -> pd.DataFrame:
    """The accepted order lines of profiles in `allowed`, typed: ordered_at as UTC times,
    amount and quantity as numbers (unreadable values become missing and are counted by the
    scorer, never guessed)."""
    orders = [s for s in config.sources if s.kind == SourceKind.ORDERS]
    links = output.read_links(
        [PROFILE_ID, "source", *LINE_COLUMNS], sources=[s.name for s in orders]
    )
    links = links[links[PROFILE_ID].isin(allowed)].reset_index(drop=True)
    # a source that maps no currency column sells in the scoring currency; a line with an
    # empty currency in a source that has one is excluded and counted (never guessed)
    without = [s.name for s in orders if CanonicalField.CURRENCY not in s.columns]
    currency = links["currency"].str.strip().str.upper()
    currency = currency.mask(links["source"].isin(without), scoring_currency)
    return pd.DataFrame(
        {
            PROFILE_ID: links[PROFILE_ID].astype(str),
            "order_id": links["order_id"],
            "ordered_at": pd.to_datetime(
                links["ordered_at"], utc=True, errors="coerce", format="ISO8601"
            ),
            "amount": pd.to_numeric(links["amount"], errors="coerce"),
            "currency": currency,
            "category": links["category"].str.strip(),
            "quantity": pd.to_numeric(links["quantity"], errors="coerce"),
        }
    )


@dataclass(frozen=True)
class BehaviourJob:
    """One partition of the behaviour stage: the order lines of a contiguous range of
    profiles (a Parquet part) and how to summarise them."""

    lines: str
    settings: BehaviourSettings
    as_of: datetime


@task(name="behaviour-partition", persist_result=False, cache_policy=NO_CACHE)
def behaviour_partition(job: BehaviourJob) -> BehaviourPart:
    """The per-profile half of the scores for one partition's order lines (no values that
    name anyone but by profile id)."""
    return summarise(read_partition(job.lines), as_of=job.as_of, settings=job.settings)


def score_behaviour(
    work: Partitions,
    config: RunConfig,
    settings: BehaviourSettings,
    *,
    output: RunOutput,
    profiles: pd.DataFrame,
    as_of: datetime,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """profiles with the score columns added (missing where not scored), the behaviour
    signals (SIGNAL_COLUMNS with profile_id), and the summary section (empty when off).

    The order lines are summarised per partition of profiles (contiguous ranges of
    `profiles`, `performance.partition_profiles` each) on the runner; the population step
    (quintiles, ABC classes, the model fits) runs here on the stacked parts.
    """
    if not settings.enabled:
        return profiles, empty_signals().rename(columns={SUBJECT: PROFILE_ID}), {}
    logger = get_run_logger()
    allowed = allowed_for_profiling(profiles)
    lines = order_lines(config, output, allowed, scoring_currency=settings.money.scoring_currency)
    logger.info(
        "behaviour: %s order lines of %s profiles allowed for profiling, as of %s",
        f"{len(lines):,}",
        f"{len(allowed):,}",
        as_of.isoformat(timespec="seconds"),
    )
    rows = config.performance.partition_profiles
    position = pd.Series(np.arange(len(profiles)) // rows, index=profiles[PROFILE_ID].astype(str))
    partition = lines[PROFILE_ID].map(position).to_numpy()
    folder = output.parts_dir("behaviour")
    jobs = [
        BehaviourJob(
            lines=str(write_part(folder / f"{index:06d}.parquet", lines[partition == index])),
            settings=settings,
            as_of=as_of,
        )
        for index in range(max(1, -(-len(profiles) // rows)))
    ]
    del lines
    parts = work.map(behaviour_partition, jobs)
    result: BehaviourResult = score_parts(parts, as_of=as_of, settings=settings)
    scored = profiles.merge(
        result.scores, left_on=PROFILE_ID, right_index=True, how="left", validate="one_to_one"
    )
    report = dict(result.report)
    report["profiles_allowed"] = len(allowed)
    report["profiles_scored"] = len(result.scores)
    return scored, result.signals, report
