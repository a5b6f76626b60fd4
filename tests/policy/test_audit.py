"""Tests for the JSONL decision log."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pandas as pd
import pytest

from policy.audit import ENTRY_FIELDS, JsonlDecisionLog


def _decisions(subjects: list[str], decision: str = "deny") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "subject": subjects,
            "gate": "A",
            "purpose": "enrichment",
            "decision": decision,
            "basis": "",
            "rule": "default-deny@2026.11.1",
            "reason": "NO_LAWFUL_BASIS",
            "evidence": "",
            "policy_hash": "ab" * 32,
            "trail": "",
        }
    )


def test_entries_are_appended_with_a_run_wide_sequence(tmp_path: Path) -> None:
    log = JsonlDecisionLog(tmp_path / "decisions")
    assert log.append("r1", _decisions(["P1", "P2"]), actor="nightly") == 2
    # a new instance (a resumed or later process) continues the sequence
    again = JsonlDecisionLog(tmp_path / "decisions")
    assert again.append("r1", _decisions(["P3"], "allow"), actor="nightly") == 1
    lines = log.path("r1").read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["seq"] for e in entries] == [0, 1, 2]
    assert list(entries[0]) == list(ENTRY_FIELDS)
    assert entries[2]["decision"] == "allow"
    assert entries[0]["ts"].endswith("Z")
    assert stat.S_IMODE(log.path("r1").stat().st_mode) == 0o600


def test_entries_of_one_subject_across_runs(tmp_path: Path) -> None:
    log = JsonlDecisionLog(tmp_path)
    log.append("20261101T020000Z-a", _decisions(["P1", "P2"]), actor="nightly")
    log.append("20261102T020000Z-b", _decisions(["P10", "P1"]), actor="nightly")
    found = list(log.entries("P1"))
    assert [(e["run_id"], e["subject"]) for e in found] == [
        ("20261101T020000Z-a", "P1"),
        ("20261102T020000Z-b", "P1"),
    ]
    assert len(list(log.entries())) == 4


def test_missing_columns_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="policy_hash"):
        JsonlDecisionLog(tmp_path).append(
            "r1", _decisions(["P1"]).drop(columns=["policy_hash"]), actor="x"
        )
