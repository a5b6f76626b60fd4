"""The policy stage of the nightly flow: consent ingestion, facts, gates A/B/C, decision log.

Every subject gets one decision per gate and purpose; every decision is written to the
decision log before the run publishes anything that depends on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.runner import Partitions
from policy.audit import DecisionLog
from policy.bundle import PolicyBundle, default_bundle_path, load_bundle
from policy.consent import (
    consent_records_from_rows,
    latest_consents,
    suppressed_profiles,
)
from policy.engine import GATE_PURPOSES, evaluate_all, subject_regimes
from policy.facts import build_facts
from policy.types import Gate, Purpose
from profiles.config import RunConfig
from profiles.failpoints import failpoint
from profiles.rundir import (
    LINKS_FILE,
    PROFILES_FILE,
    published_runs,
    read_partition,
    write_part,
    write_partitions,
)
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
    """Turn tonight's consent-source rows into consent records in the state store.

    `records_new` counts the records this run added (stored with it as first_seen_run), so
    a run resumed after an interruption reports what an uninterrupted one would have."""
    counts: dict[str, int] = {"records_new": 0}
    for source in config.sources:
        if source.kind is not SourceKind.CONSENTS:
            continue
        rows = links.loc[links["source"] == source.name]
        records, skipped = consent_records_from_rows(
            rows, source=source.name, tcf_purposes=bundle.tcf
        )
        store.save_consents(records, run_id=run_id)
        failpoint("consents:saved")
        for reason, n in skipped.items():
            counts[f"skipped_{reason}"] = counts.get(f"skipped_{reason}", 0) + n
    counts["records_new"] = store.consents_first_seen(run_id)
    return counts


def subject_facts(
    profiles: pd.DataFrame,
    customers: pd.Series,
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


@dataclass(frozen=True)
class DecideJob:
    """One partition of the policy evaluation: its facts file, where its decisions go, and
    the bundle (configuration, no personal data)."""

    facts: str
    decisions: str
    bundle: PolicyBundle


def evaluate_gates(bundle: PolicyBundle, facts: pd.DataFrame) -> pd.DataFrame:
    """Every gate's decisions for every subject in `facts`: DECISION_COLUMNS plus `context`
    (the subject's jurisdiction), gate by gate in `GATES` order, subjects in facts order."""
    regime = regime_context(bundle, facts).to_numpy()
    frames = evaluate_all(bundle, facts, GATES)
    for decisions in frames:
        decisions["context"] = regime
    return pd.concat(frames, ignore_index=True)


@task(name="decide-partition", persist_result=False, cache_policy=NO_CACHE)
def decide_partition(job: DecideJob) -> int:
    """Evaluate every gate for one partition of the facts; write its decisions (a part the
    flow logs in order). Returns the number of decisions."""
    decisions = evaluate_gates(job.bundle, read_partition(job.facts))
    write_part(Path(job.decisions), decisions)
    return len(decisions)


def decide(
    work: Partitions,
    bundle: PolicyBundle,
    facts: pd.DataFrame,
    *,
    folder: Path,
    rows: int,
) -> list[Path]:
    """Evaluate every gate on the runner, `rows` subjects per partition task; returns the
    decision parts in facts order (`log_decisions` appends them)."""
    inputs = write_partitions(folder / "facts", facts, rows)
    jobs = [
        DecideJob(facts=str(path), decisions=str(folder / "decisions" / path.name), bundle=bundle)
        for path in inputs
    ]
    work.map(decide_partition, jobs)
    return [Path(job.decisions) for job in jobs]


@task(name="log-decisions", persist_result=False, cache_policy=NO_CACHE)
def log_decisions(
    parts: list[Path], subjects: pd.Series, log: DecisionLog, run_id: str
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Append every decision to the decision log, gate by gate and each gate's subjects in
    facts order (whatever the partitions); return the decisions per profile and the counts.

    The frame has one column per purpose (`decision_<purpose>`) indexed by subject (and for
    gate C the basis, evidence and redactions beside each decision); the counts are one row
    per (gate, purpose, decision, rule, reason).
    """
    per_subject = pd.DataFrame(index=pd.Index(subjects, name="subject"))
    counts: list[dict[str, Any]] = []
    for gate, purpose in GATES:
        decisions = pd.concat(
            [
                pq.read_table(
                    part,
                    filters=[("gate", "=", str(gate)), ("purpose", "=", str(purpose))],
                ).to_pandas()
                for part in parts
            ],
            ignore_index=True,
        )
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


def customers_of(config: RunConfig, links: pd.DataFrame) -> pd.Series:
    """Profiles with at least one row from an orders source (sorted, each once)."""
    orders = [s.name for s in config.sources if s.kind is SourceKind.ORDERS]
    ids = links.loc[links["source"].isin(orders), "profile_id"].astype(str)
    return ids.drop_duplicates().sort_values(ignore_index=True)


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
