"""The policy stage of the nightly flow: consent ingestion, facts, gates A/B/C, decision log.

Every subject gets one decision per gate and purpose; every decision is written to the
decision log before the run publishes anything that depends on it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from policy.audit import DecisionLog
from policy.bundle import PolicyBundle, default_bundle_path, load_bundle
from policy.consent import (
    consent_records_from_rows,
    latest_consents,
    suppressed_profiles,
)
from policy.engine import GATE_PURPOSES, evaluate, subject_regimes
from policy.facts import build_facts
from policy.types import Gate, Purpose
from profiles.config import RunConfig
from profiles.rundir import LINKS_FILE, PROFILES_FILE, published_runs
from profiles.settings import EnrichSettings
from profiles.store import StateStore
from profiles.types import SourceKind

GATES: tuple[tuple[Gate, Purpose], ...] = tuple(
    (gate, purpose) for gate, purposes in GATE_PURPOSES.items() for purpose in purposes
)
"""Every (gate, purpose) decided each night, in order."""


def policy_bundle(config: RunConfig) -> PolicyBundle:
    """The run's policy bundle: the configured one, else the shipped default."""
    return load_bundle(config.policy.bundle or default_bundle_path())


def ingest_consents(
    config: RunConfig,
    bundle: PolicyBundle,
    links: pd.DataFrame,
    store: StateStore,
    run_id: str,
) -> dict[str, int]:
    """Turn tonight's consent-source rows into consent records in the state store."""
    counts: dict[str, int] = {"records_new": 0}
    for source in config.sources:
        if source.kind is not SourceKind.CONSENTS:
            continue
        rows = links.loc[links["source"] == source.name]
        records, skipped = consent_records_from_rows(
            rows, source=source.name, tcf_purposes=bundle.tcf
        )
        counts["records_new"] += store.save_consents(records, run_id=run_id)
        for reason, n in skipped.items():
            counts[f"skipped_{reason}"] = counts.get(f"skipped_{reason}", 0) + n
    return counts


def subject_facts(
    profiles: pd.DataFrame,
    customers: Sequence[str],
    identifiers: pd.DataFrame,
    store: StateStore,
    as_of: datetime,
) -> pd.DataFrame:
    """Facts per profile from the golden record, orders, consent records and suppressions."""
    attached = identifiers[identifiers["profile_id"].notna()]
    return build_facts(
        profiles,
        customers=customers,
        consents=latest_consents(store.load_consents(), attached),
        suppressed=suppressed_profiles(store.load_suppressions(), attached),
        as_of=as_of,
    )


def decide(
    bundle: PolicyBundle,
    facts: pd.DataFrame,
    log: DecisionLog,
    run_id: str,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Evaluate every gate; log every decision; return decisions per profile and counts.

    The frame has one column per purpose (`decision_<purpose>`) indexed by subject; the counts
    are one row per (gate, purpose, decision, rule, reason).
    """
    per_subject = pd.DataFrame(index=pd.Index(facts["subject"], name="subject"))
    counts: list[dict[str, Any]] = []
    regime = regime_context(bundle, facts)
    for gate, purpose in GATES:
        decisions = evaluate(bundle, facts, gate=gate, purpose=purpose)
        decisions["context"] = regime.to_numpy()
        log.append(run_id, decisions, actor="nightly")
        per_subject[f"decision_{purpose}"] = decisions["decision"].astype(str).to_numpy()
        if gate is Gate.C:  # what the exports write beside each person: basis, evidence, redactions
            for column in ("basis", "evidence", "redact"):
                per_subject[f"{column}_{purpose}"] = decisions[column].astype(str).to_numpy()
        grouped = (
            decisions.groupby(["decision", "rule", "reason"], sort=True)
            .size()
            .reset_index(name="subjects")
        )
        counts += [
            {"gate": str(gate), "purpose": str(purpose), **{str(k): v for k, v in row.items()}}
            for row in grouped.astype({"subjects": int}).to_dict("records")
        ]
    return per_subject, counts


def regime_context(bundle: PolicyBundle, facts: pd.DataFrame) -> pd.Series:
    """`regime=<jurisdiction>` per subject, in the order of `facts` (the decision log's
    context, so audits can count decisions by jurisdiction)."""
    return ("regime=" + subject_regimes(bundle, facts["country"]).astype(str)).reset_index(
        drop=True
    )


def customers_of(config: RunConfig, links: pd.DataFrame) -> list[str]:
    """Profiles with at least one row from an orders source."""
    orders = [s.name for s in config.sources if s.kind is SourceKind.ORDERS]
    return sorted(set(links.loc[links["source"].isin(orders), "profile_id"].astype(str)))


def latest_run_dir(config: RunConfig) -> Path | None:
    """The newest published run folder, if any."""
    runs = published_runs(config.output_dir)
    return runs[-1] if runs else None


def current_facts(config: RunConfig, settings: EnrichSettings) -> pd.DataFrame:
    """Facts as of the latest published run and the current state (for `enrich policy diff`)."""
    run_dir = latest_run_dir(config)
    if run_dir is None:
        raise FileNotFoundError(f"no published run under {config.output_dir}; run `enrich run`")
    profiles = pd.read_parquet(run_dir / PROFILES_FILE)
    links = pd.read_parquet(run_dir / LINKS_FILE, columns=["profile_id", "source"])
    with StateStore.open(settings.state_url_for(config.state_dir)) as store:
        identifiers = store.load_identifiers()
        return subject_facts(
            profiles,
            customers_of(config, links),
            identifiers,
            store,
            as_of=datetime.fromisoformat(_run_started(run_dir)),
        )


def _run_started(run_dir: Path) -> str:
    summary = json.loads((run_dir / "run_summary.json").read_text(encoding="utf-8"))
    return str(summary["started_at"])
