"""The compliance officer's side of the decision log: open it, verify it, report on it, and
find one person's decisions.

The log itself (hash chain, checkpoints, verification) is `policy.audit`; this module ties it
to enrich.yaml (where the log is, which public keys are pinned, where the run summaries are)
and to the state store (identifiers → profile ids, for a data-subject request).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flows.keys import resolve_signer
from policy.audit import ChainedDecisionLog, Signer, Verification, pinned_keys, verify
from profiles.config import RunConfig
from profiles.rundir import SUMMARY_FILE, published_runs
from profiles.settings import EnrichSettings


def writer(config: RunConfig, config_path: Path, settings: EnrichSettings) -> ChainedDecisionLog:
    """The log as a writer: with the run's signing key (refused unless pinned)."""
    signer = resolve_signer(
        settings, config.state_dir, config.audit.public_keys, config=config_path
    )
    return signed_log(config, signer)


def signed_log(config: RunConfig, signer: Signer) -> ChainedDecisionLog:
    """The config's decision log, writing with `signer` (already checked against the pins)."""
    return ChainedDecisionLog(
        config.decision_log_dir, signer=signer, segment_entries=config.audit.segment_entries
    )


def verify_log(log_dir: Path, public_keys: tuple[str, ...]) -> Verification:
    """Verify the log in `log_dir` against the pinned `public_keys`."""
    return verify(log_dir, pinned_keys(public_keys))


def run_summaries(config: RunConfig) -> Iterator[dict[str, Any]]:
    """The published runs' summaries, oldest first (run ids sort by time)."""
    for run in published_runs(config.output_dir):
        path = run / SUMMARY_FILE
        if path.is_file():
            yield json.loads(path.read_text(encoding="utf-8"))


def decisions_about(log: ChainedDecisionLog, profile_ids: list[str]) -> list[dict[str, object]]:
    """Every decision about these profiles, oldest first, in one pass over the log. Profiles
    are found from identifiers through the state store; after an erasure the identifiers no
    longer lead to the profile, so its entries cannot be found this way: by design."""
    wanted = set(profile_ids)
    return [e for e in log.entries() if e.get("subject") in wanted] if wanted else []
