"""The enrichment stage of the nightly flow: gate A per provider, minimisation, cache, lookups.

For each configured provider, in the flow's process (`plan_provider`): policy gate A decides
per subject with the provider's declared region and transfer basis as context (every decision
logged before anything is sent); the least identifying identifier form the provider accepts
and the policy allows is chosen; an unexpired cached answer is used instead of a call. Then
every provider's remaining lookups run at once, one `lookup-provider` task each on the run's
runner (`look_up`): the task opens the values it sends from the run's sealed vault — only
those of subjects gate A allowed, only for the provider they were allowed for — and writes
outcomes and signals as parts. Back in the flow (`finish_provider`) the answers are cached and
every subject ends as matched, no_match, skipped_policy, skipped_cached or failed with a
reason, and the books are checked.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from enrichers.base import (
    FORM,
    SIGNAL_COLUMNS,
    SUBJECT,
    VALUE,
    LookupResult,
    LookupStatus,
    Provider,
    ProviderSettings,
    empty_signals,
    rows_per_lookup,
)
from enrichers.http.client import ProviderClient
from enrichers.http.stats import ClientStats
from enrichers.registry import build, parse_settings
from enrichers.stage import LookupRun, Progress, lookup_all
from flows.gates import regime_context
from flows.keys import provider_secret
from flows.runner import Partitions, Pending
from flows.workers import RunRef, worker_run
from policy.audit import DecisionLog
from policy.bundle import PolicyBundle
from policy.engine import allowed_identifier_forms, evaluate
from policy.types import Gate, Purpose
from profiles.errors import AccountingError
from profiles.failpoints import failpoint
from profiles.rundir import read_partition, write_part
from profiles.store import StateStore
from profiles.types import IdentifierForm, IdentifierKind
from profiles.vault import ContactValues

T = TypeVar("T")

FORM_KIND: dict[IdentifierForm, IdentifierKind] = {
    IdentifierForm.EMAIL_SHA256: IdentifierKind.EMAIL,
    IdentifierForm.PHONE_SHA256: IdentifierKind.PHONE,
    IdentifierForm.PHONE_E164: IdentifierKind.PHONE,
    IdentifierForm.EMAIL: IdentifierKind.EMAIL,
}
"""Which identifier each form is made from. IdentifierForm lists forms least identifying first."""


def provider_settings(entries: list[dict[str, Any]], config_path: Path) -> list[ProviderSettings]:
    """Validated settings of the enabled providers in enrich.yaml."""
    return [s for s in parse_settings(entries, path=config_path) if s.enabled]


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even if this thread has a loop running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="enrichment-loop")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def _run_frozen(coro: Coroutine[Any, Any, T]) -> T:
    """`_run`, with what the process already holds kept out of the garbage collector's way.

    Lookups leave many small objects behind (answers, signals) that push the collector into
    full collections, and in the nightly process a full collection walks every object of the
    run so far (frames, the identifier stage's values): at a million rows 69,000 lookups took
    41 s of CPU unfrozen, 29 s frozen. Frozen objects are not walked; the freeze is lifted
    right after (and lifting it early, from a provider's night in another thread, only costs
    the saving).
    """
    gc.freeze()
    try:
        return _run(coro)
    finally:
        gc.unfreeze()


def _form_values(forms: pd.Series, normalised: pd.Series) -> npt.NDArray[np.object_]:
    """What is sent per row: the SHA-256 hex of the normalised value for the hashed forms,
    the normalised value itself for the others."""
    hashed = forms.isin([str(IdentifierForm.EMAIL_SHA256), str(IdentifierForm.PHONE_SHA256)])
    out = normalised.to_numpy(dtype=object).copy()
    mask = hashed.to_numpy()
    out[mask] = [hashlib.sha256(str(v).encode()).hexdigest() for v in out[mask]]
    return out


def params_hash(provider: Provider, form: IdentifierForm) -> str:
    """Cache key part for what shapes an answer besides the identifier."""
    text = json.dumps(
        {"params": dict(provider.request_parameters()), "form": str(form)},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Candidates:
    """What every provider's night starts from; computed once per run, not per provider."""

    facts: pd.DataFrame
    """The policy facts per subject (gate A decides from them)."""
    identifiers: pd.DataFrame
    """Per (profile_id, kind) the identifier a provider may be sent: of several of a kind,
    the one with the smallest pseudonym (a stable choice, so the cache keeps matching)."""
    allowed_forms: pd.Series
    """Per subject, the identifier forms the policy allows for its regime."""


def candidates(bundle: PolicyBundle, facts: pd.DataFrame, identifiers: pd.DataFrame) -> Candidates:
    """The subjects, their stable identifier per kind and the forms the policy allows."""
    attached = identifiers[identifiers["profile_id"].notna()]
    first = (
        attached.sort_values("pseudonym")
        .drop_duplicates(["profile_id", "kind"])
        .set_index(["profile_id", "kind"])[["key_id", "pseudonym"]]
    )
    return Candidates(facts, first, allowed_identifier_forms(bundle, facts))


def _chosen_identifiers(subjects: Candidates, accepts: tuple[IdentifierForm, ...]) -> pd.DataFrame:
    """Per subject the form to send and the identifier it is made from (or none): the least
    identifying form that the provider accepts, the policy allows for the subject's regime,
    and the subject has an identifier for."""
    facts, first, allowed_forms = subjects.facts, subjects.identifiers, subjects.allowed_forms
    chosen = pd.DataFrame(
        {
            SUBJECT: facts["subject"].to_numpy(),
            FORM: None,
            "kind": None,
            "key_id": None,
            "pseudonym": None,
        }
    )
    open_rows = np.ones(len(chosen), dtype=bool)
    for form in IdentifierForm:
        if form not in accepts:
            continue
        kind = FORM_KIND[form]
        allowed = allowed_forms.map(lambda forms, f=form: f in forms).to_numpy(dtype=bool)
        keys = pd.MultiIndex.from_arrays([chosen[SUBJECT], [str(kind)] * len(chosen)])
        found = first.reindex(keys)
        has = found["pseudonym"].notna().to_numpy()
        take = open_rows & allowed & has
        chosen.loc[take, FORM] = str(form)
        chosen.loc[take, "kind"] = str(kind)
        chosen.loc[take, "key_id"] = found["key_id"].to_numpy()[take]
        chosen.loc[take, "pseudonym"] = found["pseudonym"].to_numpy()[take]
        open_rows &= ~take
    return chosen


def _cached_signals(cached: pd.DataFrame, provider: str) -> pd.DataFrame:
    """The signals of cached answers (their `signals` JSON text), one row per signal."""
    lists = [json.loads(text or "[]") for text in cached["signals"]]
    counts = np.fromiter((len(items) for items in lists), dtype=np.int64, count=len(lists))
    if not counts.sum():
        return empty_signals()
    items = [item for items in lists for item in items]
    frame = pd.DataFrame(
        {
            SUBJECT: np.repeat(cached[SUBJECT].to_numpy(dtype=object), counts),
            **{key: [item.get(key) for item in items] for key in _CACHED_FIELDS},
            "provider": provider,
        }
    )
    frame["observed_at"] = pd.to_datetime(frame["observed_at"], utc=True)
    return frame.reindex(columns=list(SIGNAL_COLUMNS))


_CACHED_FIELDS = ("topic", "confidence", "observed_at", "kind", "raw_score")


def _json_texts(values: pd.Series, convert: Callable[[Any], Any]) -> npt.NDArray[np.object_]:
    """`json.dumps(convert(v))` of every value, computed once per distinct value."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    texts = np.array([json.dumps(convert(u)) for u in uniques] or [""], dtype=object)
    return texts[codes]


def _signals_json(signals: pd.DataFrame) -> pd.Series:
    """Per subject (the index, as text), its signals as JSON for the cache (no identifiers,
    no provider name): the text `json.dumps(items, sort_keys=True)` gives for the list of
    {confidence, kind, observed_at, raw_score, topic} objects, in row order. Built column by
    column: a Python loop over subjects' groups cost seconds at a million rows."""
    signals = signals[signals[SUBJECT].notna()]
    if signals.empty:
        return pd.Series([], index=pd.Index([], dtype=object), dtype=object)
    parts = [
        ('{"confidence": ', _json_texts(signals["confidence"], float)),
        (', "kind": ', _json_texts(signals["kind"], str)),
        (', "observed_at": ', _json_texts(signals["observed_at"], _iso)),
        (', "raw_score": ', _json_texts(signals["raw_score"], _raw_score)),
        (', "topic": ', _json_texts(signals["topic"], str)),
    ]
    objects = np.full(len(signals), "", dtype=object)
    for key, texts in parts:
        objects = objects + key + texts
    objects = objects + "}"
    codes, subjects = pd.factorize(signals[SUBJECT].astype(str).to_numpy(dtype=object))
    order = np.argsort(codes, kind="stable")
    ends = np.cumsum(np.bincount(codes, minlength=len(subjects)))
    ordered = objects[order].tolist()
    starts = np.concatenate(([0], ends[:-1])).tolist()
    joined = [
        "[" + ", ".join(ordered[start:end]) + "]"
        for start, end in zip(starts, ends.tolist(), strict=True)
    ]
    return pd.Series(joined, index=pd.Index(subjects, dtype=object), dtype=object)


def _iso(value: Any) -> str:
    return pd.Timestamp(value).isoformat()


def _raw_score(value: Any) -> str | None:
    return None if pd.isna(value) else str(value)


def _progress(logger: Any, name: str) -> Progress:
    """A progress callback that logs "<name>: done of total looked up" once per tenth of the
    lookups passed (batches finish out of order and come in any size) and at the end."""
    logged = 0

    def progress(done: int, total: int) -> None:
        nonlocal logged
        tenths = 10 * done // max(1, total)
        if tenths > logged or done == total:
            logged = tenths
            logger.info("%s: %s of %s looked up", name, f"{done:,}", f"{total:,}")
            failpoint("providers:lookups")

    return progress


@dataclass
class ProviderPlan:
    """One provider's night as the flow plans it before any lookup: gate A decided and logged,
    each allowed subject's identifier chosen, the cache consulted. No values, pseudonyms only."""

    settings: ProviderSettings
    provider: Provider
    subjects: int
    todo: pd.DataFrame
    """subject, form, kind, key_id, pseudonym of every subject with a value to send."""
    cached: pd.DataFrame
    """The rows of `todo` with an unexpired answer cached by an earlier run (status,
    signals JSON): skipped."""
    answered: pd.DataFrame
    """The rows of `todo` this run looked up already, before an interruption (their answers
    were cached as they came): counted as tonight's lookups, never sent again."""
    skipped: Counter[str]
    hashes: dict[IdentifierForm, str]
    requests: str
    """The part with the rows of `todo` to look up (no values: the lookup task opens them)."""
    lookups: int
    """Calls the lookups will take (requests, or batches of a batch provider)."""
    ttl_days: tuple[float, float]
    """How long answers are cached: a match (never past the policy's retention for the
    provider's signal kind), a no-match."""


def plan_provider(
    settings: ProviderSettings,
    *,
    bundle: PolicyBundle,
    subjects: Candidates,
    contacts: ContactValues,
    store: StateStore,
    log: DecisionLog,
    run_id: str,
    now: datetime,
    folder: Path,
    secrets: Callable[[str], str] = provider_secret,
) -> ProviderPlan:
    """Gate A for every subject (logged before anything is sent), the identifier and form
    each allowed one may be sent in, and the cache: what the lookup task must ask."""
    logger = get_run_logger()
    provider = build(settings, secrets)
    caps = provider.capabilities
    context = {
        "provider": settings.name,
        "provider_region": caps.region,
        "provider_transfer_basis": None
        if caps.transfer_basis is None
        else str(caps.transfer_basis),
    }
    facts = subjects.facts
    decisions = evaluate(bundle, facts, gate=Gate.A, purpose=Purpose.ENRICHMENT, context=context)
    decisions["context"] = (regime_context(bundle, facts) + f";provider={settings.name}").to_numpy()
    log.append(run_id, decisions, actor="nightly")
    allowed = (decisions["decision"] != "deny").to_numpy()

    chosen = _chosen_identifiers(subjects, caps.accepts)
    skipped: Counter[str] = Counter()
    skipped["gate_a_denied"] = int((~allowed).sum())
    no_form = allowed & chosen[FORM].isna().to_numpy()
    skipped["no_allowed_form"] = int(no_form.sum())
    todo = chosen[allowed & ~no_form].reset_index(drop=True)
    # an identifier known from earlier nights but not in tonight's rows has no value to send
    has_value = np.zeros(len(todo), dtype=bool)
    for kind in (IdentifierKind.EMAIL, IdentifierKind.PHONE):
        rows = (todo["kind"] == str(kind)).to_numpy()
        values = contacts.normalised(kind, todo.loc[rows, "pseudonym"].tolist())
        has_value[rows] = [v is not None for v in values]
    skipped["no_value"] = int((~has_value).sum())
    todo = todo[has_value].reset_index(drop=True)

    cached_parts, answered_parts, fresh_parts, hashes = [], [], [], {}
    for form_name, group in todo.groupby(FORM, sort=True):
        form = IdentifierForm(str(form_name))
        hashes[form] = params_hash(provider, form)
        cache = store.load_cache(settings.name, hashes[form], now=now)
        hit = group.merge(cache, on=["kind", "key_id", "pseudonym"], how="left", indicator=True)
        found = hit[hit["_merge"] == "both"]
        tonight = (found["run_id"] == run_id).to_numpy()
        cached_parts.append(found[~tonight])
        answered_parts.append(found[tonight])
        fresh_parts.append(group[(hit["_merge"] == "left_only").to_numpy()])
    cached = pd.concat(cached_parts, ignore_index=True) if cached_parts else pd.DataFrame()
    answered = pd.concat(answered_parts, ignore_index=True) if answered_parts else pd.DataFrame()
    fresh = (
        pd.concat(fresh_parts, ignore_index=True)
        if fresh_parts
        else pd.DataFrame(columns=[SUBJECT, FORM, "kind", "key_id", "pseudonym"])
    )
    requests = write_part(folder / "requests.parquet", fresh.astype(str))
    logger.info(
        "%s: %s subjects, %s denied at gate A, %s without an allowed form, %s cached, "
        "%s to look up%s",
        settings.name,
        f"{len(facts):,}",
        f"{skipped['gate_a_denied']:,}",
        f"{skipped['no_allowed_form']:,}",
        f"{len(cached):,}",
        f"{len(fresh):,}",
        f" ({len(answered):,} looked up before the interruption)" if len(answered) else "",
    )
    kind_days = bundle.retention.signals.get(caps.signal_kind)
    match_days = min(settings.cache_ttl_days, kind_days) if kind_days else settings.cache_ttl_days
    calls = -(-len(fresh) // rows_per_lookup(caps)) if caps.batch_size > 1 else len(fresh)
    return ProviderPlan(
        settings=settings,
        provider=provider,
        subjects=len(facts),
        todo=todo,
        cached=cached,
        answered=answered,
        skipped=skipped,
        hashes=hashes,
        requests=str(requests),
        lookups=calls,
        ttl_days=(float(match_days), float(settings.negative_cache_ttl_days)),
    )


@dataclass(frozen=True)
class ProviderLookups:
    """One provider's share of a lookup task: its settings (secret references, never
    secrets), its requests part, and the folder its outcomes and signals go to."""

    settings: ProviderSettings
    requests: str
    out: str
    hashes: dict[str, str]
    """The cache's request-parameters hash per identifier form."""
    ttl_days: tuple[float, float]
    now: datetime
    """The run's clock: when the answers count as fetched."""


@dataclass(frozen=True)
class LookupJob:
    """A lookup task: the run, and the providers whose lookups it runs side by side."""

    run: RunRef
    providers: tuple[ProviderLookups, ...]


@dataclass(frozen=True)
class Lookups:
    """How one provider's lookups ended (counts; the outcomes and signals are parts)."""

    provider: str
    failed_reasons: dict[str, int]
    signals_dropped: int
    client: dict[str, Any]


def look_up(job: LookupJob, secrets: Callable[[str], str] = provider_secret) -> list[Lookups]:
    """Send the requests of the job's providers, all at once in one event loop (each with its
    own client, limits and budget): values from the run's vault, only for the rows of each
    requests part (subjects gate A allowed); outcomes and signals written as parts."""
    logger = get_run_logger()
    run = worker_run(job.run)
    contacts = run.contacts
    prepared = []
    for share in job.providers:
        requests = read_partition(share.requests)
        prepared.append(
            (share, build(share.settings, secrets), requests, _batch(requests, contacts))
        )

    async def one(
        share: ProviderLookups, provider: Provider, requests: pd.DataFrame, batch: pd.DataFrame
    ) -> tuple[LookupRun, ClientStats]:
        settings = share.settings
        keys = requests.set_index(SUBJECT)[[FORM, "kind", "key_id", "pseudonym"]]

        def keep(group: pd.DataFrame, result: LookupResult) -> None:
            """Cache a finished group's answers at once: an interruption after this never
            pays for them again."""
            entries = cache_entries(
                settings.name,
                result.outcomes,
                result.signals.assign(provider=settings.name),
                keys,
                hashes=share.hashes,
                ttl_days=share.ttl_days,
                now=share.now,
            )
            if len(entries):
                run.store().save_cache(entries, run_id=job.run.run_id)
            failpoint("providers:cached")

        async with ProviderClient(settings, billing=provider.capabilities.billing) as client:
            progress = _progress(logger, settings.name)
            result = await lookup_all(provider, client, batch, progress=progress, answered=keep)
            return result, client.stats

    async def every() -> list[tuple[LookupRun, ClientStats]]:
        return list(await asyncio.gather(*(one(*p) for p in prepared)))

    done = []
    for (share, *_), (result, stats) in zip(prepared, _run_frozen(every()), strict=True):
        out = Path(share.out)
        write_part(out / "outcomes.parquet", result.outcomes)
        write_part(out / "signals.parquet", result.signals.assign(provider=share.settings.name))
        done.append(
            Lookups(
                share.settings.name,
                dict(result.failed_reasons),
                result.signals_dropped,
                stats.as_dict(),
            )
        )
    return done


def _batch(requests: pd.DataFrame, contacts: ContactValues) -> pd.DataFrame:
    """The lookup batch (subject, form, value) of a requests part, values opened from the
    vault."""
    values = pd.Series(None, index=requests.index, dtype=object)
    for kind in (IdentifierKind.EMAIL, IdentifierKind.PHONE):
        rows = (requests["kind"] == str(kind)).to_numpy()
        values[rows] = contacts.normalised(kind, requests.loc[rows, "pseudonym"].tolist())
    if values.isna().any():  # the flow saw every value in the vault: it cannot be gone
        raise RuntimeError("a value to send left the vault")  # a bug, never data
    return pd.DataFrame(
        {
            SUBJECT: requests[SUBJECT].to_numpy(),
            FORM: requests[FORM].to_numpy(),
            VALUE: _form_values(requests[FORM], values),
        }
    )


@task(name="lookup-providers", persist_result=False, cache_policy=NO_CACHE)
def lookup_providers(job: LookupJob) -> list[Lookups]:
    """A Prefect task around `look_up`: some providers' lookups, counts back (no values)."""
    return look_up(job)


def groups(plans: list[ProviderPlan], tasks: int) -> list[list[ProviderPlan]]:
    """Providers spread over at most `tasks` lookup tasks, the biggest first, each to the task
    with the fewest requests so far (so one slow provider does not leave a worker idle)."""
    bins: list[list[ProviderPlan]] = [[] for _ in range(max(1, min(tasks, len(plans))))]
    load = [0] * len(bins)
    for plan in sorted(plans, key=lambda p: -p.lookups):
        target = load.index(min(load))
        bins[target].append(plan)
        load[target] += plan.lookups
    return [b for b in bins if b]


def finish_provider(plan: ProviderPlan, lookups: Lookups) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Check a provider's books (its answers were cached as they came); returns its signals
    (tonight's, those of an interrupted attempt, and the cache's) and its accounting."""
    settings = plan.settings
    folder = Path(plan.requests).parent
    outcomes = read_partition(folder / "outcomes.parquet")
    signals = read_partition(folder / "signals.parquet")
    statuses = Counter({str(k): int(v) for k, v in outcomes["status"].value_counts().items()})
    if len(plan.answered):
        signals = pd.concat(
            [signals, _cached_signals(plan.answered, settings.name)], ignore_index=True
        )
        statuses.update(str(s) for s in plan.answered["status"])
    skipped = plan.skipped
    accounting: dict[str, Any] = {
        "type": settings.type,
        "region": plan.provider.capabilities.region,
        "subjects": plan.subjects,
        "matched": statuses.get(str(LookupStatus.MATCHED), 0),
        "no_match": statuses.get(str(LookupStatus.NO_MATCH), 0),
        "skipped_cached": len(plan.cached),
        "skipped_policy": dict(skipped),
        "failed": dict(lookups.failed_reasons),
        "signals": len(signals),
        "signals_dropped": lookups.signals_dropped,
        "client": lookups.client,
    }
    total = (
        accounting["matched"]
        + accounting["no_match"]
        + accounting["skipped_cached"]
        + sum(skipped.values())
        + sum(lookups.failed_reasons.values())
    )
    if total != plan.subjects:
        raise AccountingError(
            f"provider {settings.name}: {total} lookups accounted for {plan.subjects} subjects"
        )
    all_signals = (
        pd.concat([signals, _cached_signals(plan.cached, settings.name)], ignore_index=True)
        if len(plan.cached)
        else signals
    )
    accounting["signals"] = len(all_signals)
    return all_signals, accounting


@dataclass
class Enrichment:
    """The enrichment stage in flight: every provider planned (gate A logged, cache read),
    the lookups submitted to the runner."""

    plans: list[ProviderPlan]
    pending: Pending[list[Lookups]] | None

    def finish(self) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Wait for the lookups; cache and account for each provider in configuration order.
        Returns every signal (profile_id + signal columns) and the accounting per provider."""
        if self.pending is None:
            return empty_signals().rename(columns={SUBJECT: "profile_id"}), {}
        by_name = {done.provider: done for part in self.pending.results() for done in part}
        frames, accounting = [], {}
        for plan in self.plans:
            signals, accounting[plan.settings.name] = finish_provider(
                plan, by_name[plan.settings.name]
            )
            frames.append(signals)
        every = pd.concat(frames, ignore_index=True)
        return every.rename(columns={SUBJECT: "profile_id"}), accounting


def start_enrichment(
    work: Partitions,
    providers: list[ProviderSettings],
    *,
    run: RunRef,
    bundle: PolicyBundle,
    subjects: Candidates,
    contacts: ContactValues,
    store: StateStore,
    log: DecisionLog,
    folder: Path,
    now: datetime,
) -> Enrichment:
    """Plan every provider here in turn (gate A, cache), then submit their lookups to the
    runner, spread over as many tasks as it has workers (providers in one task run side by
    side); `Enrichment.finish` collects them."""
    plans = [
        plan_provider(
            settings,
            bundle=bundle,
            subjects=subjects,
            contacts=contacts,
            store=store,
            log=log,
            run_id=run.run_id,
            now=now,
            folder=folder / settings.name,
        )
        for settings in providers
    ]
    if not plans:
        return Enrichment(plans, None)
    tasks = len(plans) if work.runner.kind == "dask" else work.runner.workers
    jobs = [
        LookupJob(
            run,
            tuple(
                ProviderLookups(
                    p.settings,
                    p.requests,
                    str(Path(p.requests).parent),
                    hashes={str(form): value for form, value in p.hashes.items()},
                    ttl_days=p.ttl_days,
                    now=now,
                )
                for p in group
            ),
        )
        for group in groups(plans, tasks)
    ]
    return Enrichment(plans, work.submit(lookup_providers, jobs))


def cache_entries(
    provider: str,
    outcomes: pd.DataFrame,
    signals: pd.DataFrame,
    keys: pd.DataFrame,
    *,
    hashes: Mapping[str, str],
    ttl_days: tuple[float, float],
    now: datetime,
) -> pd.DataFrame:
    """Cache entries for the matched and no-match answers (never failures) among
    `outcomes`: `keys` holds each subject's form, kind, key id and pseudonym (indexed by
    subject), `ttl_days` the lifetime of a match and of a no-match."""
    answered = outcomes[
        outcomes["status"].isin([str(LookupStatus.MATCHED), str(LookupStatus.NO_MATCH)])
    ]
    if answered.empty:
        return pd.DataFrame()
    rows = keys.loc[answered[SUBJECT].to_numpy()].reset_index()
    matched = answered["status"].to_numpy() == str(LookupStatus.MATCHED)
    ttl = np.where(matched, ttl_days[0], ttl_days[1])
    by_subject = _signals_json(signals)
    subjects = pd.Index(rows[SUBJECT].astype(str).to_numpy(dtype=object), dtype=object)
    found = by_subject.reindex(subjects).to_numpy(dtype=object)
    return pd.DataFrame(
        {
            "provider": provider,
            "params_hash": rows[FORM].astype(str).map(dict(hashes)).to_numpy(dtype=object),
            "kind": rows["kind"].to_numpy(),
            "key_id": rows["key_id"].to_numpy(),
            "pseudonym": rows["pseudonym"].to_numpy(),
            "status": answered["status"].to_numpy(),
            "signals": np.where(pd.isna(found), "[]", found),
            "fetched_at": now,
            "expires_at": pd.Timestamp(now) + pd.to_timedelta(ttl, unit="D"),
        }
    )
