"""The fusion stage of the nightly flow: every signal of the night → one confidence per profile
and topic, filtered by gate B.

    behaviour signals ─┐
    provider signals  ─┼─► taxonomy: unknown topics counted per provider and dropped
    declared signals  ─┘        │ (preference-centre answers of profiles allowed at gate B)
                                ▼
          gate B on the signals: special categories and sensitive taxonomy nodes (each drop
          logged as a `redact` decision), expired by retention → signals.parquet
                                ▼
          fusion (profiles.fusion) over the signals of profiles allowed at gate B
                                ▼
          gate B on the merged confidences: below the profiling floor → not used
                                ▼
          profiles.parquet: `interests` (topic, confidence, kind, contributors) and
          `top_interests` (up to `fusion.top_n` topics, most confident first)

Signals of a profile that gate B denies are stored (enrichment was allowed) but never merged
into its profile.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from enrichers.declared.provider import DeclaredSettings, declared_signals, parse_declared
from flows.behaviour import PROFILING_COLUMN
from flows.runner import Partitions
from policy.audit import DecisionLog
from policy.bundle import PolicyBundle
from policy.engine import filter_signals
from policy.types import Gate, Outcome, PolicyReason, Purpose
from profiles.config import RunConfig
from profiles.files import private_file
from profiles.fusion import (
    Fusion,
    FusionCounts,
    FusionSettings,
    fuse,
    fusion_counts,
    fusion_summary,
    interest_lists,
    top_topics,
)
from profiles.identity import PROFILE_ID
from profiles.rundir import RunOutput, read_partition, write_part
from profiles.taxonomy import Taxonomy, load_taxonomy
from profiles.types import SourceKind


@dataclass(frozen=True)
class FusionStage:
    """What the fusion stage needs from enrich.yaml, validated before the run starts."""

    taxonomy: Taxonomy
    fusion: FusionSettings
    declared: DeclaredSettings

    @classmethod
    def load(cls, config: RunConfig, config_path: Path) -> FusionStage:
        """Taxonomy, fusion and declared settings; ConfigError with file:line."""
        return cls(
            taxonomy=load_taxonomy(config.taxonomy),
            fusion=config.fusion,
            declared=parse_declared(config.declared, path=config_path),
        )


def preference_rows(config: RunConfig, stage: FusionStage, output: RunOutput) -> pd.DataFrame:
    """The preference sources' rows (profile_id, topic, interested, recorded_at), or none
    when there is no preference source or declared answers are off."""
    sources = [s.name for s in config.sources if s.kind == SourceKind.PREFERENCES]
    if not sources or not stage.declared.enabled:
        return pd.DataFrame(columns=[PROFILE_ID, *_PREFERENCE_COLUMNS])
    return output.read_links([PROFILE_ID, *_PREFERENCE_COLUMNS], sources=sources)


_PREFERENCE_COLUMNS = ("topic", "interested", "recorded_at")


def _redactions(dropped: pd.DataFrame, bundle: PolicyBundle) -> pd.DataFrame:
    """One `redact` decision per profile and sensitive topic dropped at gate B."""
    special = dropped[dropped["reason"] == PolicyReason.SPECIAL_CATEGORY]
    pairs = special[[PROFILE_ID, "topic"]].drop_duplicates().sort_values([PROFILE_ID, "topic"])
    return pd.DataFrame(
        {
            "subject": pairs[PROFILE_ID].astype(str).to_numpy(),
            "gate": str(Gate.B),
            "purpose": str(Purpose.PROFILING),
            "decision": str(Outcome.REDACT),
            "basis": "",
            "rule": f"special_categories@{bundle.version}",
            "reason": str(PolicyReason.SPECIAL_CATEGORY),
            "evidence": "",
            "policy_hash": bundle.hash,
            "context": ("topic=" + pairs["topic"].astype(str)).to_numpy(),
        }
    )


@dataclass(frozen=True)
class Fused:
    """What the fusion stage hands on."""

    profiles: pd.DataFrame
    """With `interests` and `top_interests` (when fusion is on)."""
    signals: pd.DataFrame
    """The signals to store: known topics that passed gate B's category and retention checks."""
    interests: pd.DataFrame
    """profile_id, topic, confidence: merged interests at or above the profiling floor."""
    summary: dict[str, Any] = field(default_factory=dict)


def _counts(frame: pd.DataFrame, column: str) -> Counter[str]:
    return Counter({str(k): int(v) for k, v in frame[column].value_counts().items()})


@dataclass(frozen=True)
class FuseJob:
    """One partition of the fusion stage: a folder holding its inputs (`ids`: profile_id and
    `allowed` at gate B; `facts`; `signals`; `preferences`), where its outputs go too."""

    folder: str
    bundle: PolicyBundle
    stage: FusionStage
    now: datetime
    """The policy's clock (retention)."""
    as_of: datetime
    """The night the scores describe (signal ages)."""


@dataclass
class FusedPart:
    """One partition's counts (no profile ids); the flow adds them up."""

    signals_in: int = 0
    declared_dropped: Counter[str] = field(default_factory=Counter)
    unknown_topics: Counter[str] = field(default_factory=Counter)
    not_profiled: int = 0
    signals_dropped: int = 0
    """Signals gate B dropped before fusion (special categories, retention)."""
    dropped: Counter[str] = field(default_factory=Counter)
    sensitive_topics: Counter[str] = field(default_factory=Counter)
    merged: FusionCounts = field(default_factory=FusionCounts)

    def add(self, other: FusedPart) -> None:
        """Add another partition's counts."""
        self.signals_in += other.signals_in
        self.declared_dropped.update(other.declared_dropped)
        self.unknown_topics.update(other.unknown_topics)
        self.not_profiled += other.not_profiled
        self.signals_dropped += other.signals_dropped
        self.dropped.update(other.dropped)
        self.sensitive_topics.update(other.sensitive_topics)
        self.merged.add(other.merged)


def fuse_part(job: FuseJob) -> FusedPart:
    """Declared signals, taxonomy and gate B checks, fusion, for one partition's profiles;
    writes `kept`, `redactions` and (fusion on) `interests` and `used` parts beside the
    inputs. See the module docstring."""
    folder = Path(job.folder)
    stage, bundle = job.stage, job.bundle
    ids = read_partition(folder / "ids.parquet")
    facts = read_partition(folder / "facts.parquet")
    signals = read_partition(folder / "signals.parquet")
    allowed = ids.loc[ids["allowed"], PROFILE_ID]
    counts = FusedPart()
    frames = [signals]
    if stage.declared.enabled:
        rows = read_partition(folder / "preferences.parquet")
        rows = rows[rows[PROFILE_ID].isin(allowed)].reset_index(drop=True)
        declared, dropped_rows = declared_signals(rows, stage.declared, as_of=job.as_of)
        counts.declared_dropped.update(dropped_rows)
        frames.append(declared)
    frames = [f for f in frames if not f.empty]
    every = pd.concat(frames, ignore_index=True) if frames else signals
    known = stage.taxonomy.known(every["topic"].astype("string"))
    counts.signals_in = len(every)
    counts.unknown_topics.update(_counts(every.loc[~known], "provider"))
    kept, dropped = filter_signals(
        bundle,
        every.loc[known],
        purpose=Purpose.PROFILING,
        now=job.now,
        facts=facts,
        sensitive=stage.taxonomy.sensitive_roots,
        floor=False,
    )
    write_part(folder / "kept.parquet", kept.reindex(columns=list(signals.columns)))
    write_part(folder / "redactions.parquet", _redactions(dropped, bundle))
    usable = kept[kept[PROFILE_ID].isin(allowed)]
    counts.not_profiled = len(kept) - len(usable)
    counts.signals_dropped = len(dropped)
    counts.dropped.update(_counts(dropped, "reason"))
    counts.sensitive_topics.update(
        _counts(dropped[dropped["reason"] == PolicyReason.SPECIAL_CATEGORY], "topic")
    )
    if not stage.fusion.enabled:
        return counts
    fusion = fuse(usable, taxonomy=stage.taxonomy, settings=stage.fusion, now=job.as_of)
    # gate B again, on the merged confidences: now the profiling floor applies
    used, below = filter_signals(
        bundle,
        fusion.merged,
        purpose=Purpose.PROFILING,
        now=job.now,
        facts=facts,
        sensitive=stage.taxonomy.sensitive_roots,
    )
    counts.dropped.update(_counts(below, "reason"))
    counts.merged = fusion_counts(fusion)
    floor = bundle.confidence_floors.get(Purpose.PROFILING, 0.0)
    above = Fusion(merged=used, contributions=fusion.contributions)
    lists = pa.table(
        {
            PROFILE_ID: pa.array(ids[PROFILE_ID].astype(str).to_numpy(), pa.string()),
            "interests": interest_lists(above, ids[PROFILE_ID]),
            "top_interests": top_topics(used, ids[PROFILE_ID], n=stage.fusion.top_n, floor=floor),
        }
    )
    pq.write_table(lists, folder / "interests.parquet")
    private_file(folder / "interests.parquet")
    write_part(folder / "used.parquet", used[[PROFILE_ID, "topic", "confidence"]])
    return counts


@task(name="fuse-partition", persist_result=False, cache_policy=NO_CACHE)
def fuse_partition(job: FuseJob) -> FusedPart:
    """A Prefect task around `fuse_part`: one partition, counts back (no profile ids)."""
    return fuse_part(job)


def fuse_interests(
    work: Partitions,
    config: RunConfig,
    stage: FusionStage,
    *,
    bundle: PolicyBundle,
    output: RunOutput,
    profiles: pd.DataFrame,
    facts: pd.DataFrame,
    signals: pd.DataFrame,
    log: DecisionLog,
    run_id: str,
    now: datetime,
    as_of: datetime,
) -> Fused:
    """The fusion stage: partition tasks on the runner (contiguous ranges of `profiles`,
    `performance.partition_profiles` each), combined in profile order.

    `signals`: tonight's behaviour and provider signals (profile_id + signal columns). `now`
    is the policy's clock (retention); `as_of` the night the scores describe (signal ages).
    """
    logger = get_run_logger()
    ids = pd.DataFrame(
        {
            PROFILE_ID: profiles[PROFILE_ID].astype(str).to_numpy(),
            "allowed": (profiles[PROFILING_COLUMN] == "allow").to_numpy(),
        }
    )
    rows = config.performance.partition_profiles
    position = pd.Series(np.arange(len(ids)) // rows, index=ids[PROFILE_ID])
    preferences = preference_rows(config, stage, output)
    jobs = []
    for index, start in enumerate(range(0, max(len(ids), 1), rows)):
        folder = output.parts_dir("fusion") / f"{index:06d}"
        write_part(folder / "ids.parquet", ids.iloc[start : start + rows])
        write_part(folder / "facts.parquet", facts.iloc[start : start + rows])
        write_part(
            folder / "signals.parquet",
            signals[signals[PROFILE_ID].map(position).to_numpy() == index],
        )
        write_part(
            folder / "preferences.parquet",
            preferences[preferences[PROFILE_ID].map(position).to_numpy() == index],
        )
        jobs.append(FuseJob(str(folder), bundle, stage, now, as_of))
    parts = work.map(fuse_partition, jobs)
    total = FusedPart()
    for part in parts:
        total.add(part)
    folders = [Path(job.folder) for job in jobs]
    kept = _concat(folders, "kept.parquet")
    redactions = _concat(folders, "redactions.parquet").sort_values(
        ["subject", "context"], kind="stable", ignore_index=True
    )
    log.append(run_id, redactions, actor="nightly")
    summary: dict[str, Any] = {
        "signals_in": total.signals_in,
        "declared_dropped": dict(sorted(total.declared_dropped.items())),
        "unknown_topics": dict(sorted(total.unknown_topics.items())),
        "not_profiled": total.not_profiled,
    }
    if not stage.fusion.enabled:
        none = pd.DataFrame({c: pd.Series(dtype=object) for c in (PROFILE_ID, "topic")})
        return Fused(profiles, kept, none.assign(confidence=pd.Series(dtype=float)), summary)
    floor = bundle.confidence_floors.get(Purpose.PROFILING, 0.0)
    summary.update(fusion_summary(total.merged, stage.taxonomy))
    summary["gate_b"] = {
        "dropped": dict(sorted(total.dropped.items())),
        "sensitive_topics": dict(sorted(total.sensitive_topics.items())),
        "floor": floor,
    }
    lists = pa.concat_tables([pq.read_table(f / "interests.parquet") for f in folders])
    profiles = profiles.copy()
    profiles["interests"] = pd.arrays.ArrowExtensionArray(lists["interests"])
    profiles["top_interests"] = pd.arrays.ArrowExtensionArray(lists["top_interests"])
    used = _concat(folders, "used.parquet")
    logger.info(
        "fusion: %s signals (%s unknown topics, %s dropped at gate B) -> %s interests of %s "
        "profiles above the profiling floor %.2f",
        f"{total.signals_in:,}",
        f"{sum(total.unknown_topics.values()):,}",
        f"{total.signals_dropped:,}",
        f"{len(used):,}",
        f"{used[PROFILE_ID].nunique():,}",
        floor,
    )
    return Fused(profiles, kept, used, summary)


def _concat(folders: list[Path], name: str) -> pd.DataFrame:
    return pd.concat([read_partition(f / name) for f in folders], ignore_index=True)
