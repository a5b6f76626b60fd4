"""The enrichment stage of the nightly flow: gate A per provider, minimisation, cache, lookups.

For each configured provider: policy gate A decides per subject with the provider's declared
region and transfer basis as context (every decision logged); the least identifying identifier
form the provider accepts and the policy allows is chosen; an unexpired cached answer is used
instead of a call; the rest is looked up through the resilient client. Every subject ends as
matched, no_match, skipped_policy, skipped_cached or failed with a reason, and the books are
checked. Raw emails and phones come from the identifier stage's in-memory values, only for
subjects gate A allowed, and only to the provider they were allowed for.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from prefect import get_run_logger

from enrichers.base import (
    FORM,
    SIGNAL_COLUMNS,
    SUBJECT,
    VALUE,
    LookupStatus,
    Provider,
    ProviderSettings,
    empty_signals,
)
from enrichers.http.client import ProviderClient
from enrichers.http.stats import ClientStats
from enrichers.registry import build, parse_settings
from enrichers.stage import LookupRun, lookup_all
from flows.gates import regime_context
from flows.keys import provider_secret
from policy.audit import DecisionLog
from policy.bundle import PolicyBundle
from policy.engine import allowed_identifier_forms, evaluate
from policy.types import Gate, Purpose
from profiles.errors import AccountingError
from profiles.identifiers import IdentifierStage
from profiles.store import StateStore
from profiles.types import IdentifierForm, IdentifierKind

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


def _form_value(form: IdentifierForm, normalised: pd.Series) -> pd.Series:
    if form in (IdentifierForm.EMAIL_SHA256, IdentifierForm.PHONE_SHA256):
        return normalised.map(lambda v: hashlib.sha256(v.encode()).hexdigest())
    return normalised


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
    rows = [
        {SUBJECT: subject, **signal, "provider": provider}
        for subject, text in zip(cached[SUBJECT], cached["signals"], strict=True)
        for signal in json.loads(text or "[]")
    ]
    if not rows:
        return empty_signals()
    frame = pd.DataFrame(rows)
    frame["observed_at"] = pd.to_datetime(frame["observed_at"], utc=True)
    return frame.reindex(columns=list(SIGNAL_COLUMNS))


def _signals_json(signals: pd.DataFrame) -> dict[str, str]:
    """Per subject, its signals as JSON for the cache (no identifiers, no provider name)."""
    out: dict[str, str] = {}
    if signals.empty:
        return out
    for subject, group in signals.groupby(SUBJECT, sort=False):
        items = [
            {
                "topic": str(topic),
                "confidence": float(confidence),
                "observed_at": pd.Timestamp(observed).isoformat(),
                "kind": str(kind),
                "raw_score": None if pd.isna(raw) else str(raw),
            }
            for topic, confidence, observed, kind, raw in zip(
                group["topic"],
                group["confidence"],
                group["observed_at"],
                group["kind"],
                group["raw_score"],
                strict=True,
            )
        ]
        out[str(subject)] = json.dumps(items, sort_keys=True)
    return out


def enrich_with(
    settings: ProviderSettings,
    *,
    bundle: PolicyBundle,
    subjects: Candidates,
    stage: IdentifierStage,
    store: StateStore,
    log: DecisionLog,
    run_id: str,
    now: datetime,
    secrets: Callable[[str], str] = provider_secret,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One provider's night: returns its signals and its accounting."""
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
    todo = chosen[allowed & ~no_form].copy()

    for kind in (IdentifierKind.EMAIL, IdentifierKind.PHONE):
        rows = todo["kind"] == str(kind)
        todo.loc[rows, "normalised"] = stage.normalised(kind, todo.loc[rows, "pseudonym"].tolist())
    missing_value = todo["normalised"].isna() if "normalised" in todo else pd.Series(dtype=bool)
    skipped["no_value"] = int(missing_value.sum())
    todo = todo[~missing_value]

    cached_parts, requests, hashes = [], [], {}
    for form_name, group in todo.groupby(FORM, sort=True):
        form = IdentifierForm(str(form_name))
        hashes[form] = params_hash(provider, form)
        cache = store.load_cache(settings.name, hashes[form], now=now)
        hit = group.merge(cache, on=["kind", "key_id", "pseudonym"], how="left", indicator=True)
        cached_parts.append(hit[hit["_merge"] == "both"])
        fresh = hit[hit["_merge"] == "left_only"]
        requests.append(
            pd.DataFrame(
                {
                    SUBJECT: fresh[SUBJECT].to_numpy(),
                    FORM: str(form),
                    VALUE: _form_value(form, fresh["normalised"].astype(str)).to_numpy(),
                }
            )
        )
    cached = pd.concat(cached_parts, ignore_index=True) if cached_parts else pd.DataFrame()
    batch = (
        pd.concat(requests, ignore_index=True)
        if requests
        else pd.DataFrame(columns=[SUBJECT, FORM, VALUE])
    )
    logger.info(
        "%s: %s subjects, %s denied at gate A, %s without an allowed form, %s cached, "
        "%s to look up",
        settings.name,
        f"{len(facts):,}",
        f"{skipped['gate_a_denied']:,}",
        f"{skipped['no_allowed_form']:,}",
        f"{len(cached):,}",
        f"{len(batch):,}",
    )

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) < max(1, caps.batch_size):
            logger.info("%s: %s of %s looked up", settings.name, f"{done:,}", f"{total:,}")

    async def run() -> tuple[LookupRun, ClientStats]:
        async with ProviderClient(settings, billing=caps.billing) as client:
            result = await lookup_all(provider, client, batch, progress=progress)
            return result, client.stats

    result, stats = _run(run())
    outcomes = result.outcomes
    signals = result.signals.assign(provider=settings.name)
    _save_cache(
        store,
        settings=settings,
        bundle=bundle,
        provider=provider,
        todo=todo,
        outcomes=outcomes,
        signals=signals,
        hashes=hashes,
        run_id=run_id,
        now=now,
    )

    statuses = Counter({str(k): int(v) for k, v in outcomes["status"].value_counts().items()})
    accounting: dict[str, Any] = {
        "type": settings.type,
        "region": caps.region,
        "subjects": len(facts),
        "matched": statuses.get(str(LookupStatus.MATCHED), 0),
        "no_match": statuses.get(str(LookupStatus.NO_MATCH), 0),
        "skipped_cached": len(cached),
        "skipped_policy": dict(skipped),
        "failed": dict(result.failed_reasons),
        "signals": len(signals),
        "signals_dropped": result.signals_dropped,
        "client": stats.as_dict(),
    }
    total = (
        accounting["matched"]
        + accounting["no_match"]
        + accounting["skipped_cached"]
        + sum(skipped.values())
        + sum(result.failed_reasons.values())
    )
    if total != len(facts):
        raise AccountingError(
            f"provider {settings.name}: {total} lookups accounted for {len(facts)} subjects"
        )
    all_signals = (
        pd.concat([signals, _cached_signals(cached, settings.name)], ignore_index=True)
        if len(cached)
        else signals
    )
    accounting["signals"] = len(all_signals)
    return all_signals, accounting


def _save_cache(
    store: StateStore,
    *,
    settings: ProviderSettings,
    bundle: PolicyBundle,
    provider: Provider,
    todo: pd.DataFrame,
    outcomes: pd.DataFrame,
    signals: pd.DataFrame,
    hashes: Mapping[IdentifierForm, str],
    run_id: str,
    now: datetime,
) -> None:
    """Cache matched and no-match answers (never failures) for the subjects just looked up."""
    answered = outcomes[
        outcomes["status"].isin([str(LookupStatus.MATCHED), str(LookupStatus.NO_MATCH)])
    ]
    if answered.empty:
        return
    rows = answered.merge(todo, on=SUBJECT, how="left")
    kind_days = bundle.retention.signals.get(provider.capabilities.signal_kind)
    match_days = min(settings.cache_ttl_days, kind_days) if kind_days else settings.cache_ttl_days
    ttl = np.where(
        rows["status"] == str(LookupStatus.MATCHED),
        match_days,
        settings.negative_cache_ttl_days,
    )
    by_subject = _signals_json(signals)
    entries = pd.DataFrame(
        {
            "provider": settings.name,
            "params_hash": rows[FORM].map(lambda f: hashes[IdentifierForm(str(f))]),
            "kind": rows["kind"],
            "key_id": rows["key_id"],
            "pseudonym": rows["pseudonym"],
            "status": rows["status"],
            "signals": rows[SUBJECT].map(lambda s: by_subject.get(str(s), "[]")),
            "fetched_at": now,
            "expires_at": [now + timedelta(days=float(d)) for d in ttl],
        }
    )
    store.save_cache(entries, run_id=run_id)
