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

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from enrichers.declared.provider import DeclaredSettings, declared_signals, parse_declared
from flows.behaviour import allowed_for_profiling
from policy.audit import DecisionLog
from policy.bundle import PolicyBundle
from policy.engine import filter_signals
from policy.types import Gate, Outcome, PolicyReason, Purpose
from profiles.config import RunConfig
from profiles.fusion import (
    Fusion,
    FusionSettings,
    fuse,
    interest_lists,
    summary_of,
    top_topics,
)
from profiles.identity import PROFILE_ID
from profiles.rundir import RunOutput
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


def preference_signals(
    config: RunConfig, stage: FusionStage, *, output: RunOutput, allowed: pd.Series, as_of: datetime
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Declared signals from the preference sources' rows of profiles in `allowed`."""
    sources = [s.name for s in config.sources if s.kind == SourceKind.PREFERENCES]
    if not sources or not stage.declared.enabled:
        return pd.DataFrame(), {}
    rows = output.read_links([PROFILE_ID, "topic", "interested", "recorded_at"], sources=sources)
    rows = rows[rows[PROFILE_ID].isin(allowed)].reset_index(drop=True)
    return declared_signals(rows, stage.declared, as_of=as_of)


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


def _counts(frame: pd.DataFrame, column: str) -> dict[str, int]:
    return {str(k): int(v) for k, v in frame[column].value_counts().sort_index().items()}


@task(name="fuse", persist_result=False, cache_policy=NO_CACHE)
def fuse_interests(
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
    """Declared signals, taxonomy and gate B checks, fusion (see the module docstring).

    `signals`: tonight's behaviour and provider signals (profile_id + signal columns). `now`
    is the policy's clock (retention); `as_of` the night the scores describe (signal ages).
    """
    logger = get_run_logger()
    allowed = allowed_for_profiling(profiles)
    declared, declared_dropped = preference_signals(
        config, stage, output=output, allowed=allowed, as_of=as_of
    )
    frames = [f for f in (signals, declared) if not f.empty]
    every = pd.concat(frames, ignore_index=True) if frames else signals
    known = stage.taxonomy.known(every["topic"].astype("string"))
    unknown = _counts(every.loc[~known], "provider")
    kept, dropped = filter_signals(
        bundle,
        every.loc[known],
        purpose=Purpose.PROFILING,
        now=now,
        facts=facts,
        sensitive=stage.taxonomy.sensitive_roots,
        floor=False,
    )
    log.append(run_id, _redactions(dropped, bundle), actor="nightly")
    usable = kept[kept[PROFILE_ID].isin(allowed)]
    summary: dict[str, Any] = {
        "signals_in": len(every),
        "declared_dropped": declared_dropped,
        "unknown_topics": unknown,
        "not_profiled": len(kept) - len(usable),
    }
    if not stage.fusion.enabled:
        none = pd.DataFrame({c: pd.Series(dtype=object) for c in (PROFILE_ID, "topic")})
        return Fused(profiles, kept, none.assign(confidence=pd.Series(dtype=float)), summary)
    fusion = fuse(usable, taxonomy=stage.taxonomy, settings=stage.fusion, now=as_of)
    # gate B again, on the merged confidences: now the profiling floor applies
    used, below = filter_signals(
        bundle,
        fusion.merged,
        purpose=Purpose.PROFILING,
        now=now,
        facts=facts,
        sensitive=stage.taxonomy.sensitive_roots,
    )
    floor = bundle.confidence_floors.get(Purpose.PROFILING, 0.0)
    summary.update(summary_of(fusion, stage.taxonomy))
    summary["gate_b"] = {
        "dropped": dict(Counter(_counts(dropped, "reason")) + Counter(_counts(below, "reason"))),
        "sensitive_topics": _counts(
            dropped[dropped["reason"] == PolicyReason.SPECIAL_CATEGORY], "topic"
        ),
        "floor": floor,
    }
    profiles = profiles.copy()
    above = Fusion(merged=used, contributions=fusion.contributions)
    profiles["interests"] = pd.arrays.ArrowExtensionArray(
        interest_lists(above, profiles[PROFILE_ID])
    )
    profiles["top_interests"] = pd.arrays.ArrowExtensionArray(
        top_topics(used, profiles[PROFILE_ID], n=stage.fusion.top_n, floor=floor)
    )
    logger.info(
        "fusion: %s signals (%s unknown topics, %s dropped at gate B) -> %s interests of %s "
        "profiles above the profiling floor %.2f",
        f"{len(every):,}",
        f"{sum(unknown.values()):,}",
        f"{len(dropped):,}",
        f"{len(used):,}",
        f"{used[PROFILE_ID].nunique():,}",
        floor,
    )
    return Fused(profiles, kept, used[[PROFILE_ID, "topic", "confidence"]], summary)
