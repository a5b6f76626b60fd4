"""A resumed run logs each of its decisions once: what it logged before is checked, skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy.audit import ChainedDecisionLog, LogError, verify
from tests.policy.test_audit import KEY, PINS, _decisions


def _run_ids(log: ChainedDecisionLog) -> list[str]:
    return [str(e["run_id"]) for e in log.entries()]


def test_a_resumed_run_skips_what_it_logged_and_appends_the_rest(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    first = ChainedDecisionLog(directory, signer=KEY)
    first.append("run1", _decisions(["a", "b", "c"]), actor="nightly")
    first.append("run1", _decisions(["d"], purpose="crm_export"), actor="nightly")
    # ... the process is killed here; the next writer seals the entries, then resumes
    again = ChainedDecisionLog(directory, signer=KEY)
    assert again.resume("run1") == 4
    # the resumed run decides the same again, batch by batch, and goes further
    assert again.append("run1", _decisions(["a", "b"]), actor="nightly") == 0
    assert again.append("run1", _decisions(["c"]), actor="nightly") == 0
    assert again.append("run1", _decisions(["d", "e"], purpose="crm_export"), actor="nightly") == 1
    assert again.append("run1", _decisions(["f"]), actor="nightly") == 1
    again.checkpoint("run1")
    entries = list(again.entries())
    assert [e["subject"] for e in entries] == ["a", "b", "c", "d", "e", "f"]
    assert [(c["run_id"], c["recovered"]) for c in again.checkpoints()] == [
        ("run1", True),
        ("run1", False),
    ]
    assert verify(directory, PINS).ok


def test_a_resumed_run_that_decides_otherwise_is_stopped(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    first = ChainedDecisionLog(directory, signer=KEY)
    first.append("run1", _decisions(["a", "b"]), actor="nightly")
    again = ChainedDecisionLog(directory, signer=KEY)
    again.resume("run1")
    changed = _decisions(["a", "b"])
    changed.loc[1, "decision"] = "deny"
    with pytest.raises(LogError, match=r"decision 2 of a B/profiling batch differs"):
        again.append("run1", changed, actor="nightly")


def test_resume_leaves_other_runs_alone(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    log = ChainedDecisionLog(directory, signer=KEY)
    log.append("run0", _decisions(["a"]), actor="nightly")
    log.checkpoint("run0")
    again = ChainedDecisionLog(directory, signer=KEY)
    assert again.resume("run1") == 0  # nothing logged yet: everything is appended
    assert again.append("run1", _decisions(["a"]), actor="nightly") == 1
    assert again.append("run2", _decisions(["a"]), actor="dsar") == 1
    assert _run_ids(again) == ["run0", "run1", "run2"]
