"""Data-subject requests as Prefect flows: access, erasure and objection (GDPR Art. 15, 17, 21).

The operator names the person by raw identifiers on the command line; the CLI turns them into
pseudonyms before any flow starts, so flow parameters, task results and logs hold pseudonyms
and counts only. Only `enrich dsar access` writes identifying data, to the file the operator
chose.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger

from flows.audit import decisions_about, writer
from flows.gates import latest_run_dir
from policy.audit import ChainedDecisionLog
from policy.types import SuppressionKind
from profiles.config import RunConfig, load_run_config
from profiles.rundir import LINKS_FILE, PROFILES_FILE
from profiles.settings import EnrichSettings
from profiles.store import StateStore
from profiles.store.subjects import ERASURE_REF

SubjectRef = dict[str, str]
"""One pseudonymous identifier: {"kind", "key_id", "pseudonym"}."""


def _frame(identifiers: list[SubjectRef]) -> pd.DataFrame:
    return pd.DataFrame(identifiers, columns=["kind", "key_id", "pseudonym"])


def _open(config: RunConfig) -> StateStore:
    return StateStore.open(EnrichSettings().state_url_for(config.state_dir))


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready records: timestamps as ISO text, missing values as null."""
    clean = frame.astype(object).where(frame.notna(), None)
    out: list[dict[str, Any]] = []
    for record in clean.to_dict("records"):
        out.append(
            {
                str(k): (v.isoformat() if isinstance(v, datetime | pd.Timestamp) else v)
                for k, v in record.items()
            }
        )
    return out


def _held_in_run(run_dir: Path | None, profile_ids: list[str]) -> dict[str, Any]:
    if run_dir is None:
        return {"run": None, "profiles": [], "rows": []}
    profiles = pd.read_parquet(run_dir / PROFILES_FILE)
    profiles = profiles[profiles["profile_id"].isin(profile_ids)]
    links = pd.read_parquet(
        run_dir / LINKS_FILE, filters=[("profile_id", "in", profile_ids)] if profile_ids else None
    )
    links = links[links["profile_id"].isin(profile_ids)]
    for column in profiles.columns:
        if column.endswith("_pseudonyms") or column == "sources":
            profiles[column] = profiles[column].map(lambda v: [str(x) for x in v])
    return {"run": run_dir.name, "profiles": _records(profiles), "rows": _records(links)}


@flow(name="dsar_access", persist_result=False)
def dsar_access(
    config_path: str, identifiers: list[SubjectRef], request_ref: str
) -> dict[str, Any]:
    """Everything held about one person: profiles, linked pseudonyms, rows of the latest run,
    consent records, suppressions and policy decisions. The CLI writes it to a file."""
    logger = get_run_logger()
    config = load_run_config(config_path)
    given = _frame(identifiers)
    with _open(config) as store:
        profile_ids = store.find_profiles(given)
        linked = pd.concat(
            [given, *(store.subject_identifiers(pid) for pid in profile_ids)], ignore_index=True
        ).drop_duplicates(["kind", "key_id", "pseudonym"])
        consents = store.load_consents()
        suppressions = store.load_suppressions()
    keys = ["kind", "key_id", "pseudonym"]
    consents = consents.merge(linked[keys], on=keys)
    suppressions = suppressions.merge(linked[keys], on=keys)
    decisions = decisions_about(ChainedDecisionLog(config.decision_log_dir), profile_ids)
    logger.info(
        "access request %s: %d profile(s), %d identifiers, %d consent records, %d decisions",
        request_ref,
        len(profile_ids),
        len(linked),
        len(consents),
        len(decisions),
    )
    return {
        "request_ref": request_ref,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "profile_ids": profile_ids,
        "identifiers": _records(linked),
        "latest_run": _held_in_run(latest_run_dir(config), profile_ids),
        "consent_records": _records(consents),
        "suppressions": _records(suppressions),
        "decisions": decisions,
        "signals": [],
    }


@flow(name="dsar_erase", persist_result=False)
def dsar_erase(config_path: str, identifiers: list[SubjectRef], request_ref: str) -> dict[str, int]:
    """Erase a person: delete their state, suppress their pseudonyms, record the erasure.

    The next run drops every source row carrying any of their identifiers (counted as
    rows_erased) and so neither enriches, profiles nor exports them.
    """
    logger = get_run_logger()
    config = load_run_config(config_path)
    now = datetime.now(UTC)
    totals: dict[str, int] = {"profiles": 0}
    with _open(config) as store:
        given = _frame(identifiers)
        profile_ids = store.find_profiles(given)
        for pid in profile_ids:
            for name, n in store.erase_subject(pid, request_ref, now).items():
                totals[name] = totals.get(name, 0) + n
            totals["profiles"] += 1
        # the given identifiers too: a person not (yet) in any profile stays erased
        totals["suppressed_given"] = store.record_objection(
            given, SuppressionKind.ERASURE, ERASURE_REF, now
        )
    _log_request(
        config,
        Path(config_path),
        request_ref=request_ref,
        profile_ids=profile_ids,
        reason="ERASED",
        rule="dsar-erasure",
    )
    logger.info("erasure %s: %s", request_ref, _counts(totals))
    return totals


@flow(name="dsar_object", persist_result=False)
def dsar_object(
    config_path: str, identifiers: list[SubjectRef], objection: str, request_ref: str
) -> dict[str, int]:
    """Record an Art. 21 objection (or a CCPA opt-out) for every identifier of the person."""
    logger = get_run_logger()
    config = load_run_config(config_path)
    kind = SuppressionKind(objection)
    now = datetime.now(UTC)
    with _open(config) as store:
        given = _frame(identifiers)
        profile_ids = store.find_profiles(given)
        linked = pd.concat(
            [given, *(store.subject_identifiers(pid) for pid in profile_ids)], ignore_index=True
        ).drop_duplicates(["kind", "key_id", "pseudonym"])
        added = store.record_objection(linked, kind, request_ref, now)
    _log_request(
        config,
        Path(config_path),
        request_ref=request_ref,
        profile_ids=profile_ids,
        reason="OBJECTED",
        rule=f"dsar-{kind}",
    )
    totals = {"profiles": len(profile_ids), "identifiers": len(linked), "added": added}
    logger.info("objection %s (%s): %s", request_ref, kind, _counts(totals))
    return totals


def _counts(totals: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in totals.items())


def _log_request(
    config: RunConfig,
    config_path: Path,
    *,
    request_ref: str,
    profile_ids: list[str],
    reason: str,
    rule: str,
) -> None:
    """Write the request into the decision log, one entry per profile it touched."""
    if not profile_ids:
        return
    decisions = pd.DataFrame(
        {
            "subject": profile_ids,
            "gate": "DSAR",
            "purpose": "all",
            "decision": "deny",
            "basis": "",
            "rule": rule,
            "reason": reason,
            "evidence": request_ref,
            "policy_hash": "",
        }
    )
    log = writer(config, config_path, EnrichSettings())
    log.append(f"dsar-{request_ref}", decisions, actor="operator")
    log.checkpoint(f"dsar-{request_ref}")
