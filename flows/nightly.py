"""The nightly enrichment flow: ingest, check identifiers, pseudonymise, quarantine, resolve
identities into stable profiles with golden records, and record the night in the state store.

Flow parameters are paths and options only. Tasks that touch raw identifiers persist no result
and use no cache; logs and artifacts carry counts and key ids, never values.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext

from enrichers.base import ProviderSettings
from enrichers.behaviour.config import BehaviourSettings, parse_behaviour
from flows.audit import signed_log
from flows.behaviour import score_behaviour
from flows.enrich import candidates, provider_settings, start_enrichment
from flows.exports import export_outputs
from flows.fusion import Fused, FusionStage, fuse_interests
from flows.gates import (
    GATES,
    customers_of,
    decide,
    ingest_consents,
    log_decisions,
    policy_bundle,
    subject_facts,
)
from flows.identify import ChunkJob, identify_chunk
from flows.keys import resolve_key, resolve_signer
from flows.personas import PERSONAS_FILE, build_personas, persona_summary
from flows.report import write_report
from flows.runner import Partitions, Runner, partitions
from flows.summary import (
    Laps,
    build_summary,
    checkpoint_markdown,
    summary_counts,
    summary_markdown,
)
from flows.workers import RunRef, release
from policy.audit import ChainedDecisionLog, LogError, Signer
from policy.bundle import PolicyBundle
from policy.consent import INPUT_COLUMNS
from policy.types import SuppressionKind
from profiles.accounting import SourceCounts
from profiles.config import RunConfig, load_run_config
from profiles.failpoints import failpoint
from profiles.golden import golden_records, profile_table, recency_field
from profiles.hashing import Key, Pseudonymiser
from profiles.identifiers import present_column, pseudonymise_values
from profiles.identity import PreviousIdentity, Resolution, resolve
from profiles.ingest import count_records, plan_chunks
from profiles.quarantine import Sealer
from profiles.rundir import (
    PROFILE_ID,
    ROW_COLUMNS,
    SUMMARY_FILE,
    NightLock,
    RunOutput,
    clear_stale_vaults,
)
from profiles.settings import EnrichSettings
from profiles.store import RunStep, StateStore, StoreError
from profiles.types import NAME_FIELDS, IdentifierKind, SourceKind
from profiles.vault import Vault, vault_key

SUMMARY_ARTIFACT_KEY = "nightly-enrichment-summary"
REPORT_FILE = "report.html"
AUDIT_ARTIFACT_KEY = "decision-log-checkpoint"


def new_run_id(now: datetime | None = None) -> str:
    """Sortable run id: UTC timestamp plus the flow run's short id (or a random one)."""
    now = now or datetime.now(UTC)
    ctx = FlowRunContext.get()
    suffix = str(ctx.flow_run.id)[:8] if ctx and ctx.flow_run else uuid.uuid4().hex[:8]
    return f"{now:%Y%m%dT%H%M%SZ}-{suffix}"


class _Progress:
    """Progress over all sources' records: a Prefect progress artifact plus log lines."""

    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self.done = 0
        artifact_id = create_progress_artifact(
            progress=0.0, description="Rows through the identifier stage"
        )
        # called from sync code, Prefect returns the value, not a coroutine
        assert isinstance(artifact_id, UUID)
        self.artifact_id = artifact_id

    def advance(self, rows: int) -> float:
        self.done += rows
        pct = min(100.0, 100.0 * self.done / self.total)
        update_progress_artifact(artifact_id=self.artifact_id, progress=pct)
        return pct


_IDENTITY_COLUMNS = ["source", "line", "key_id", *(f"{k}_pseudonym" for k in IdentifierKind)]
_GOLDEN_BASE = ["source", "line", *(present_column(str(f)) for f in NAME_FIELDS)]


@task(name="resolve-identities", persist_result=False, cache_policy=NO_CACHE)
def resolve_identities(
    config: RunConfig,
    output: RunOutput,
    store: StateStore,
    blocked: Mapping[IdentifierKind, frozenset[str]],
) -> Resolution:
    """Link tonight's accepted rows into profiles, keeping yesterday's profile ids."""
    logger = get_run_logger()
    records = output.read_accepted(_IDENTITY_COLUMNS)
    previous = PreviousIdentity(
        identifiers=store.load_identifiers(), profiles=store.load_profiles()
    )
    resolution = resolve(records, config.sources, config.identity, blocked, previous)
    stats = resolution.stats
    logger.info(
        "identity: %s rows -> %s profiles (%s new, %s merges, %s splits)",
        f"{len(records):,}",
        f"{stats['profiles']:,}",
        f"{stats['profiles_new']:,}",
        f"{stats['merges']:,}",
        f"{stats['splits']:,}",
    )
    return resolution


@task(name="link-profiles", persist_result=False, cache_policy=NO_CACHE)
def link_profiles(
    config: RunConfig, output: RunOutput, resolution: Resolution
) -> tuple[pd.DataFrame, pd.Series]:
    """Write identity_links.parquet; return the profile table and the customers' profile ids."""
    fields = [str(f) for f in config.identity.golden]
    for source in config.sources:
        field = recency_field(source)
        if field is not None:
            fields.append(str(field))
    columns = list(dict.fromkeys(c for c in (*_GOLDEN_BASE, *fields) if c in ROW_COLUMNS))
    rows = output.read_accepted(columns)
    rows.insert(0, PROFILE_ID, resolution.links[PROFILE_ID].to_numpy())
    golden = golden_records(rows, config.identity, config.sources)
    profiles = profile_table(rows[[PROFILE_ID, "source"]], resolution.identifiers, golden)
    output.write_links(resolution.links[PROFILE_ID])
    return profiles, customers_of(config, rows)


@dataclass
class Night:
    """One run as the flow's process holds it: what every stage needs, opened once."""

    config: RunConfig
    run: RunRef
    keys: RunKeys
    bundle: PolicyBundle
    providers: list[ProviderSettings]
    behaviour: BehaviourSettings
    fusion: FusionStage
    store: StateStore
    log: ChainedDecisionLog
    output: RunOutput
    contacts: Vault
    work: Partitions
    started: datetime
    """The policy's clock: consents, retention, ages."""
    as_of: datetime
    """The night the behaviour scores and signal ages describe."""
    laps: Laps

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.run.run_id


def consent_rows(config: RunConfig, output: RunOutput) -> pd.DataFrame:
    """Tonight's accepted rows of the consent sources: what consent ingest reads (pseudonyms
    and consent fields; no profile id is needed, so it can run beside identity resolution)."""
    consent_sources = [s.name for s in config.sources if s.kind is SourceKind.CONSENTS]
    rows = output.read_accepted([c for c in INPUT_COLUMNS if c in ROW_COLUMNS])
    return rows[rows["source"].isin(consent_sources)].reset_index(drop=True)


@task(name="policy-facts", persist_result=False, cache_policy=NO_CACHE)
def policy_facts(
    store: StateStore,
    *,
    resolution: Resolution,
    profiles: pd.DataFrame,
    customers: pd.Series,
    as_of: datetime,
) -> pd.DataFrame:
    """The facts every gate decides on: one row per profile, in profile order."""
    return subject_facts(profiles, customers, resolution.identifiers, store, as_of)


def apply_policy(
    night: Night,
    resolution: Resolution,
    profiles: pd.DataFrame,
    customers: pd.Series,
    consents: dict[str, int],
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Decide every gate for every profile (partition tasks on the runner), log each
    decision. `consents`: the counts of tonight's consent ingest (already stored).

    Returns the profile table with one `decision_<purpose>` column per purpose, the facts the
    decisions were taken on, and the policy part of the run summary.
    """
    logger = get_run_logger()
    bundle = night.bundle
    facts = policy_facts(
        night.store,
        resolution=resolution,
        profiles=profiles,
        customers=customers,
        as_of=night.started,
    )
    parts = decide(
        night.work,
        bundle,
        facts,
        folder=night.output.parts_dir("policy"),
        rows=night.config.performance.partition_profiles,
    )
    per_subject, counts = log_decisions(parts, facts["subject"], night.log, night.run_id)
    decided = profiles.merge(per_subject, left_on=PROFILE_ID, right_index=True, how="left")
    allowed = {
        str(purpose): int((per_subject[f"decision_{purpose}"] != "deny").sum())
        for _, purpose in GATES
    }
    logger.info(
        "policy %s %s: %s profiles; allowed per purpose: %s",
        bundle.name,
        bundle.version,
        f"{len(facts):,}",
        ", ".join(f"{p} {n:,}" for p, n in allowed.items()),
    )
    summary = {
        "bundle": {"name": bundle.name, "version": bundle.version, "hash": bundle.hash},
        "consents": consents,
        "allowed": allowed,
        "decisions": counts,
    }
    return decided, facts, summary


@dataclass(frozen=True)
class RunKeys:
    """The keys of a run, resolved before any row is read."""

    key: Key
    pseudonymiser: Pseudonymiser
    blocked: dict[IdentifierKind, frozenset[str]]
    """The pseudonymised identity block list."""
    sealer: Sealer | None
    """Seals quarantined raw rows (None if they are not kept)."""
    signer: Signer
    """Signs the decision log's checkpoint (its public key pinned in enrich.yaml)."""


def _run_keys(config: RunConfig, settings: EnrichSettings, config_path: Path) -> RunKeys:
    """Every key the run needs; fails before any work if one is missing or not pinned."""
    key = resolve_key("pseudonym", settings, config.state_dir)
    pseudonymiser = Pseudonymiser(key)
    blocked = pseudonymise_values(
        config.identity.block, config.identifiers, pseudonymiser, what="identity.block"
    )
    sealer = (
        Sealer(resolve_key("quarantine", settings, config.state_dir))
        if config.quarantine.keep_raw_encrypted
        else None
    )
    signer = resolve_signer(
        settings, config.state_dir, config.audit.public_keys, config=config_path
    )
    return RunKeys(key, pseudonymiser, blocked, sealer, signer)


@flow(name="nightly_enrichment", persist_result=False, log_prints=False)
def nightly_enrichment(
    config_path: str,
    run_id: str | None = None,
    as_of: str | None = None,
    *,
    runner: str | None = None,
    workers: int | None = None,
    dask_address: str | None = None,
    resume: str | None = None,
    fresh: bool = False,
) -> str:
    """Run one night: every input row ends in a profile or in quarantine.csv.

    `as_of` (ISO date) is the night whose state the behaviour scores describe: orders after
    its end are ignored, so any past night can be reproduced; default: now. `runner`,
    `workers` and `dask_address` choose where the partition tasks run (flows.runner; default:
    enrich.yaml's `performance`). Returns the run's output folder. Fails if any source's rows
    do not balance, and at once if another run holds the same state folder (runs are refused,
    never interleaved).

    A run that was interrupted (killed, or failed) is resumed by the next run on the same
    inputs, under its own id and clock, so that its outputs are those an uninterrupted run
    would have made (see `_resumable`); `resume` names the run to resume (refused if it is not
    the interrupted one), `fresh` never resumes (the interrupted run is marked failed).
    """
    config: RunConfig = load_run_config(config_path)
    chosen = Runner.of(config.performance, kind=runner, workers=workers, address=dask_address)
    with NightLock(config.state_dir):
        return _night(
            config,
            Path(config_path),
            run_id=run_id,
            as_of=as_of,
            runner=chosen,
            resume=resume,
            fresh=fresh,
        )


def fingerprint(
    config_hash: str, config: RunConfig, bundle: PolicyBundle, as_of: str | None
) -> str:
    """What a run ran on: enrich.yaml (`config_hash`, its SHA-256), the policy bundle, `as_of`
    and each source file's size and modification time (a changed file makes another night,
    never a resumed one)."""
    digest = hashlib.sha256(f"{config_hash}\0{bundle.hash}\0{as_of or ''}".encode())
    for source in config.sources:
        info = source.path.stat() if source.path.is_file() else None
        seen = f"{info.st_size}:{info.st_mtime_ns}" if info else "missing"
        digest.update(f"\0{source.path}\0{seen}".encode())
    return digest.hexdigest()


def _resumable(
    store: StateStore, fingerprint: str, *, resume: str | None, fresh: bool
) -> dict[str, Any] | None:
    """The interrupted run to resume, or None to start a new one.

    The ledger's latest run, if it did not succeed, is resumed when it ran on the same inputs
    (same fingerprint) — or when `resume` names it. With `fresh`, or on other inputs, it is
    marked failed (if a crash left it `running`) and a new run starts. `resume` naming any
    other run is an error.
    """
    unfinished = store.unfinished_run()
    if resume is not None and (unfinished is None or unfinished["run_id"] != resume):
        latest = "no run" if unfinished is None else f"run {unfinished['run_id']}"
        raise StoreError(
            f"run {resume} cannot be resumed: {latest} is the interrupted one in the run ledger"
        )
    if unfinished is None:
        return None
    if not fresh and (resume is not None or unfinished["fingerprint"] == fingerprint):
        return unfinished
    if unfinished["status"] == "running":
        why = "a fresh run was asked for" if fresh else "the inputs have changed since"
        get_run_logger().warning(
            "run %s was interrupted and is not resumed: %s", unfinished["run_id"], why
        )
        store.finish_run(unfinished["run_id"], "failed", {}, datetime.now(UTC))
    return None


def _night(
    config: RunConfig,
    config_path: Path,
    *,
    run_id: str | None,
    as_of: str | None,
    runner: Runner,
    resume: str | None,
    fresh: bool,
) -> str:
    """The body of `nightly_enrichment`, under its lock: open everything, run the stages (or
    what an interrupted run left to do), publish, record the outcome in the ledger."""
    logger = get_run_logger()
    settings = EnrichSettings()
    keys = _run_keys(config, settings, config_path)
    bundle = policy_bundle(config)
    providers, behaviour, fusion_stage = _stage_settings(config, config_path)
    store = StateStore.open(settings.state_url_for(config.state_dir))
    config_hash = hashlib.sha256(config_path.read_bytes()).hexdigest()
    try:
        print_ = fingerprint(config_hash, config, bundle, as_of)
        interrupted = _resumable(store, print_, resume=resume, fresh=fresh)
        if interrupted is None:
            started = datetime.now(UTC)
            run_id = run_id or new_run_id(started)
            store.start_run(run_id, config_hash, started, fingerprint=print_)
        else:
            run_id, started = interrupted["run_id"], interrupted["started_at"]
            if _resumed(store, interrupted, config.output_dir):
                store.close()
                return str(config.output_dir / run_id)
        clear_stale_vaults(config.output_dir, keep=run_id)
        output = RunOutput(config.output_dir, run_id)
        erased = erased_pseudonyms(store.load_suppressions())
    except BaseException:
        store.close()
        raise
    total = sum(count_records(s) for s in config.sources if s.path.is_file())
    logger.info(
        "run %s: %d source(s), about %s rows, pseudonym key %s, state %s, runner %s",
        *(run_id, len(config.sources), f"{total:,}", keys.key.key_id, store.url),
        runner.describe(),
    )
    log = signed_log(config, keys.signer)
    if interrupted is not None:
        logger.info("run %s had logged %s decisions", run_id, f"{log.resume(run_id):,}")
    with ExitStack() as stack:
        try:
            laps = Laps()
            night = Night(
                config=config,
                run=RunRef(
                    config_path=str(config_path.resolve()),
                    config_hash=config_hash,
                    run_id=run_id,
                    staging=str(output.staging),
                    key_id=keys.key.key_id,
                    sealer_key_id=None if keys.sealer is None else keys.sealer.key_id,
                ),
                keys=keys,
                bundle=bundle,
                providers=providers,
                behaviour=behaviour,
                fusion=fusion_stage,
                store=store,
                log=log,
                output=output,
                contacts=Vault(output.vault_dir, vault_key(keys.key, run_id)),
                work=stack.enter_context(partitions(runner)),
                started=started,
                as_of=started if as_of is None else end_of_day(as_of),
                laps=laps,
            )
            laps.lap("start workers")
            failpoint("after:start")
            summary = _stages(night, erased=erased, total=total)
            final = output.publish()
            store.mark_step(run_id, RunStep.PUBLISHED)
            failpoint("after:publish")
            store.finish_run(run_id, "succeeded", summary_counts(summary), datetime.now(UTC))
        except BaseException:
            output.abandon()
            _record_failure(store, log, run_id)
            raise
        finally:
            release(run_id)
            store.close()
    _announce(summary, final)
    return str(final)


def _announce(summary: Mapping[str, Any], final: Path) -> None:
    """The run's summary as a Prefect artifact, and its last log line."""
    run_id = summary["run_id"]
    create_markdown_artifact(
        key=SUMMARY_ARTIFACT_KEY,
        markdown=summary_markdown(dict(summary)),
        description=f"Row accounting and identity of run {run_id}",
    )
    get_run_logger().info(
        "run %s: %s rows in, %s accepted, %s quarantined, %s profiles; outputs in %s",
        run_id,
        f"{summary['totals']['rows_in']:,}",
        f"{summary['totals']['rows_accepted']:,}",
        f"{summary['totals']['rows_quarantined']:,}",
        f"{summary['identity']['profiles']:,}",
        final,
    )


def _resumed(store: StateStore, interrupted: Mapping[str, Any], output_dir: Path) -> bool:
    """Take up an interrupted run: True if it only had to be finished (its outputs were
    staged and sealed and its identity saved: the staged folder is published, unless that was
    done, and the run marked succeeded); False if its stages must run again."""
    run_id, step = str(interrupted["run_id"]), str(interrupted["step"])
    logger = get_run_logger()
    attempt = store.resume_run(run_id)
    logger.info(
        "run %s was interrupted at step %s: resuming it (attempt %d)", run_id, step, attempt
    )
    if step == RunStep.STARTED:
        return False
    if step == RunStep.IDENTITY_SAVED:
        RunOutput.reopen(output_dir, run_id).publish()
        store.mark_step(run_id, RunStep.PUBLISHED)
    final = output_dir / run_id
    summary = json.loads((final / SUMMARY_FILE).read_text(encoding="utf-8"))
    store.finish_run(run_id, "succeeded", summary_counts(summary), datetime.now(UTC))
    logger.info("run %s: finished what its interruption left; outputs in %s", run_id, final)
    return True


def _stages(night: Night, *, erased: Mapping[str, frozenset[str]], total: int) -> dict[str, Any]:
    """Every stage of the night, in order, up to the staged outputs and the state commit;
    returns the run summary."""
    config, output, laps = night.config, night.output, night.laps
    counts = _identify(night, erased=erased, total=total)
    laps.lap("identify")
    failpoint("after:identify")
    rows = consent_rows(config, output)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="consents") as beside:
        # mostly the store's own (GIL-free) work: it overlaps identity resolution
        ingest = beside.submit(
            ingest_consents, config, night.bundle, rows, night.store, night.run_id
        )
        del rows
        resolution = resolve_identities(config, output, night.store, night.keys.blocked)
        laps.lap("resolve identities")
        profiles, customers = link_profiles(config, output, resolution)
        laps.lap("link profiles")
        failpoint("after:link profiles")
        consents = ingest.result()
    laps.lap("consents (beside identity)")
    profiles, facts, policy_summary = apply_policy(night, resolution, profiles, customers, consents)
    laps.lap("policy")
    failpoint("after:policy")
    profiles, behaviour_signals, behaviour_summary = score_behaviour(
        night.work, config, night.behaviour, output=output, profiles=profiles, as_of=night.as_of
    )
    laps.lap("behaviour")
    failpoint("after:behaviour")
    subjects = candidates(night.bundle, facts, resolution.identifiers)
    signals, enrichment_summary = start_enrichment(
        night.work,
        night.providers,
        run=night.run,
        bundle=night.bundle,
        subjects=subjects,
        contacts=night.contacts,
        store=night.store,
        log=night.log,
        folder=output.parts_dir("providers"),
        now=night.started,
    ).finish()
    laps.lap("providers")
    failpoint("after:providers")
    fused = fuse_interests(
        night.work,
        config,
        night.fusion,
        bundle=night.bundle,
        output=output,
        profiles=profiles,
        facts=facts,
        signals=pd.concat([behaviour_signals, signals], ignore_index=True),
        log=night.log,
        run_id=night.run_id,
        now=night.started,
        as_of=night.as_of,
    )
    laps.lap("fusion")
    failpoint("after:fusion")
    profiles, personas = build_personas(
        config.personas,
        night.fusion.taxonomy,
        profiles=fused.profiles,
        interests=fused.interests,
        output_dir=config.output_dir,
        run_id=night.run_id,
        as_of=night.as_of,
    )
    laps.lap("personas")
    failpoint("after:personas")
    exports = export_outputs(
        config,
        bundle=night.bundle,
        profiles=profiles,
        interests=fused.interests,
        subjects=subjects,
        stage=night.contacts,
        taxonomy=night.fusion.taxonomy,
        output=output,
        fingerprint_key=night.keys.key.secret,
    )
    laps.lap("exports")
    failpoint("after:exports")
    summary = build_summary(
        night.run_id,
        started_at=night.started,
        finished_at=datetime.now(UTC),
        key_id=night.keys.key.key_id,
        counts=counts,
        identity=resolution.stats,
        policy=policy_summary,
        enrichment=enrichment_summary,
        behaviour=behaviour_summary,
        fusion=fused.summary,
        personas=persona_summary(personas),
        exports=exports,
        timings=laps.seconds,
    )
    _stage_outputs(
        output, night.log, profiles=profiles, fused=fused, personas=personas, summary=summary
    )
    night.store.save_identity(
        night.run_id,
        identifiers=resolution.identifiers[resolution.identifiers[PROFILE_ID].notna()][
            ["kind", "key_id", "pseudonym", PROFILE_ID]
        ],
        new_profiles=resolution.new_profiles,
        merged=resolution.merged,
        events=resolution.events,
    )
    failpoint("identity:saved")
    return summary


def _identify(
    night: Night, *, erased: Mapping[str, frozenset[str]], total: int
) -> list[SourceCounts]:
    """Identify every source chunk on the runner (flows.identify); adopt the parts in reading
    order and return the counts per source, balanced."""
    logger = get_run_logger()
    config, output = night.config, night.output
    workers = config.performance.workers if night.work.runner.in_process else 1
    jobs = [
        ChunkJob(run=night.run, source=source.name, spec=spec, workers=workers, erased=erased)
        for source in config.sources
        for spec in plan_chunks(source, config.performance.chunk_rows)
    ]
    progress = _Progress(total)

    def advance(done: int, of: int, counts: SourceCounts) -> None:
        pct = progress.advance(counts.rows_in)
        logger.info(
            "identify: %d of %d chunk(s), %s (all sources %.0f%%)", done, of, counts.source, pct
        )

    by_source = {s.name: SourceCounts(source=s.name, file=s.path.name) for s in config.sources}
    for counts in night.work.map(identify_chunk, jobs, progress=advance):
        by_source[counts.source].merge(counts)
    for counts in by_source.values():
        counts.check()
        logger.info(
            "%s: %s rows read, %s accepted, %s quarantined, %s erased",
            counts.source,
            f"{counts.rows_in:,}",
            f"{counts.rows_accepted:,}",
            f"{counts.rows_quarantined:,}",
            f"{counts.rows_erased:,}",
        )
    output.adopt([job.part for job in jobs])
    if (
        sum(c.rows_accepted for c in by_source.values()) != output.accepted_rows
        or sum(c.rows_quarantined for c in by_source.values()) != output.quarantine_rows
    ):
        raise RuntimeError("written rows differ from counted rows")  # a bug, never data
    return list(by_source.values())


def _stage_settings(
    config: RunConfig, config_path: Path
) -> tuple[list[ProviderSettings], BehaviourSettings, FusionStage]:
    """Provider, behaviour and fusion settings, checked before any row is read (file:line)."""
    return (
        provider_settings(config.enrichment.providers, config_path),
        parse_behaviour(config.behaviour, path=config_path),
        FusionStage.load(config, config_path),
    )


def _stage_outputs(
    output: RunOutput,
    log: ChainedDecisionLog,
    *,
    profiles: pd.DataFrame,
    fused: Fused,
    personas: dict[str, Any] | None,
    summary: dict[str, Any],
) -> None:
    """Stage profiles.parquet, signals.parquet, personas.json, run_summary.json, report.html;
    seal the run's decisions with a signed checkpoint and show it as a Prefect artifact."""
    output.write_profiles(profiles)
    output.write_signals(fused.signals)
    if personas is not None:
        output.write_json(PERSONAS_FILE, personas)
    output.write_summary(summary)
    write_report(output.staging / REPORT_FILE, summary, personas)
    output.seal()
    failpoint("outputs:staged")
    checkpoint = log.checkpoint(summary["run_id"])
    failpoint("outputs:checkpoint")
    if checkpoint is not None:
        create_markdown_artifact(
            key=AUDIT_ARTIFACT_KEY,
            markdown=checkpoint_markdown(checkpoint, summary["policy"]),
            description=f"Decision log checkpoint of run {summary['run_id']}",
        )


def erased_pseudonyms(suppressions: pd.DataFrame) -> dict[str, frozenset[str]]:
    """Pseudonyms of erased subjects, per identifier kind."""
    erased = suppressions[suppressions["suppression"] == SuppressionKind.ERASURE]
    return {
        str(kind): frozenset(group["pseudonym"].astype(str))
        for kind, group in erased.groupby("kind")
    }


def _record_failure(store: StateStore, log: ChainedDecisionLog, run_id: str) -> None:
    """Seal the decisions the failed run took and mark it failed in the ledger; neither may
    mask the error that failed the run (unsealed entries are sealed by the next run)."""
    try:
        log.checkpoint(run_id)
    except (OSError, LogError) as exc:
        get_run_logger().warning("could not checkpoint the decisions of run %s: %s", run_id, exc)
    try:
        store.finish_run(run_id, "failed", {}, datetime.now(UTC))
    except StoreError as exc:
        get_run_logger().warning("could not record run %s as failed: %s", run_id, exc)


def end_of_day(day: str) -> datetime:
    """The last microsecond (UTC) of the ISO date `day`; ValueError names a bad date."""
    try:
        parsed = date.fromisoformat(day)
    except ValueError:
        raise ValueError(f"as_of must be an ISO date (YYYY-MM-DD), not {day!r}") from None
    return datetime.combine(parsed + timedelta(days=1), time.min, tzinfo=UTC) - timedelta(
        microseconds=1
    )


def run_nightly(
    config_path: Path,
    run_id: str | None = None,
    as_of: str | None = None,
    *,
    runner: str | None = None,
    workers: int | None = None,
    dask_address: str | None = None,
    resume: str | None = None,
    fresh: bool = False,
) -> Path:
    """Run the flow once in this process and return its output folder."""
    return Path(
        nightly_enrichment(
            config_path=str(config_path.resolve()),
            run_id=run_id,
            as_of=as_of,
            runner=runner,
            workers=workers,
            dask_address=dask_address,
            resume=resume,
            fresh=fresh,
        )
    )
