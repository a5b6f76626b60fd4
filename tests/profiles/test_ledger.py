"""The run ledger knows how far each run got, so an interrupted one can be resumed."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from profiles.store import MIGRATIONS, RunStep, StoreError
from tests.profiles.conftest import StoreBackend

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
PRINT = "ab" * 32


def test_an_interrupted_run_is_found_resumed_and_finished(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    assert store.unfinished_run() is None
    store.start_run("r1", "c1", T0, fingerprint=PRINT)
    store.finish_run("r1", "succeeded", {}, T0)
    assert store.unfinished_run() is None
    store.start_run("r2", "c1", T0, fingerprint=PRINT)  # ... and the process is killed
    unfinished = store.unfinished_run()
    assert unfinished == {
        "run_id": "r2",
        "started_at": T0,
        "status": "running",
        "step": "started",
        "fingerprint": PRINT,
        "attempts": 1,
    }
    assert store.resume_run("r2") == 2
    store.mark_step("r2", RunStep.PUBLISHED)
    store.finish_run("r2", "failed", {}, T0)  # failed runs are resumable too
    assert store.unfinished_run() is not None
    assert store.resume_run("r2") == 3
    store.finish_run("r2", "succeeded", {"rows": 1}, T0)
    ledger = store.runs()
    row = ledger[ledger["run_id"] == "r2"].iloc[0]
    assert (row["status"], row["step"], row["attempts"]) == ("succeeded", "published", 3)
    with pytest.raises(StoreError, match="has already succeeded"):
        store.resume_run("r2")
    with pytest.raises(StoreError, match="not the latest run"):
        store.resume_run("r1")


def test_saving_the_identity_records_the_step_in_the_same_transaction(
    store_backend: StoreBackend,
) -> None:
    store = store_backend.open()
    store.start_run("r1", "c1", T0)
    empty = pd.DataFrame(columns=["kind", "key_id", "pseudonym", "profile_id"])
    store.save_identity(
        "r1",
        identifiers=empty,
        new_profiles=pd.DataFrame(columns=["profile_id"]),
        merged=pd.DataFrame(columns=["profile_id", "merged_into"]),
        events=pd.DataFrame(columns=["event", "profile_id", "other_profile_id", "detail"]),
    )
    assert store.unfinished_run() == {
        "run_id": "r1",
        "started_at": T0,
        "status": "running",
        "step": "identity_saved",
        "fingerprint": None,
        "attempts": 1,
    }


def test_a_version_3_ledger_gains_steps_and_keeps_its_runs(store_backend: StoreBackend) -> None:
    old = store_backend.open(migrations=MIGRATIONS[:3])
    old.start_run("r1", "c1", T0)
    old.finish_run("r1", "succeeded", {"rows": 3}, T0)
    old.start_run("r2", "c1", T0)  # interrupted before the upgrade
    old.close()
    store = store_backend.open()
    ledger = store.runs()
    assert ledger["run_id"].tolist() == ["r1", "r2"]
    assert ledger["attempts"].tolist() == [1, 1]
    assert store.unfinished_run() == {
        "run_id": "r2",
        "started_at": T0,
        "status": "running",
        "step": "started",
        "fingerprint": None,
        "attempts": 1,
    }
