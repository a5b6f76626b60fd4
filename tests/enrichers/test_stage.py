"""enrichers.stage: batching, bounded workers, every subject accounted whatever a provider does."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from enrichers.base import (
    BATCH_COLUMNS,
    OUTCOME_COLUMNS,
    SIGNAL_COLUMNS,
    SINGLE_LOOKUP_ROWS,
    SUBJECT,
    BudgetExhaustedError,
    Capabilities,
    LookupResult,
    LookupStatus,
    ProviderSettings,
    TransientProviderError,
)
from enrichers.http.client import ProviderClient
from enrichers.stage import LookupRun, lookup_all
from profiles.types import IdentifierForm

OBSERVED = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass
class Scripted:
    """A provider whose answer per batch is scripted by the subjects in it (no network)."""

    batch_size: int = 3
    name: str = "scripted"
    seen: list[list[str]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    capabilities: Capabilities = field(init=False)

    def __post_init__(self) -> None:
        self.capabilities = Capabilities(
            accepts=(IdentifierForm.EMAIL_SHA256,),
            produces=("interest",),
            region="EU",
            batch_size=self.batch_size,
        )

    def request_parameters(self) -> Mapping[str, Any]:
        return {"endpoint": "/v1"}

    async def lookup(self, batch: pd.DataFrame, client: ProviderClient) -> LookupResult:
        subjects = [str(s) for s in batch[SUBJECT]]
        self.seen.append(subjects)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.001)
        self.in_flight -= 1
        if any(s.startswith("down") for s in subjects):
            raise TransientProviderError(self.name, "503 from /v1", reason="http_503")
        if any(s.startswith("bug") for s in subjects):
            raise KeyError("a provider bug")
        if any(s.startswith("broke") for s in subjects):
            raise BudgetExhaustedError(self.name, "budget of 1 spent")
        rows = [
            (s, "matched" if s.startswith("m") else "no_match", None, True)
            for s in subjects
            if not s.startswith(("lost", "odd"))
        ]
        rows += [(s, "weird", None, True) for s in subjects if s.startswith("odd")]
        outcomes = pd.DataFrame(rows, columns=list(OUTCOME_COLUMNS))
        signals = pd.DataFrame(
            [
                (s, topic, confidence, self.name, OBSERVED, "inferred", raw)
                for s in subjects
                for topic, confidence, raw in _signals_for(s)
            ],
            columns=list(SIGNAL_COLUMNS),
        )
        return LookupResult(outcomes=outcomes, signals=signals)


def _signals_for(subject: str) -> list[tuple[str, float, str | None]]:
    if subject.startswith("mbad"):
        return [
            ("interest.travel", 0.7, "7"),
            ("hobby.chess", 0.7, None),  # not under what the provider declared
            ("interest.Bad Key", 0.7, None),
            ("interest.food", 1.0, None),
            ("interest.food", 0.5, "+4512345678"),
        ]
    return [("interest.travel", 0.7, "7")]


def requests(*subjects: str) -> pd.DataFrame:
    return pd.DataFrame(
        {SUBJECT: list(subjects), "form": "email_sha256", "value": [f"h{s}" for s in subjects]},
        columns=list(BATCH_COLUMNS),
    )


def run(provider: Scripted, frame: pd.DataFrame, *, concurrency: int = 2) -> LookupRun:
    settings = ProviderSettings(name=provider.name, type="scripted", concurrency=concurrency)
    progress: list[tuple[int, int]] = []

    async def go() -> LookupRun:
        async with ProviderClient(settings, billing=provider.capabilities.billing) as client:
            return await lookup_all(
                provider, client, frame, progress=lambda d, t: progress.append((d, t))
            )

    result = asyncio.run(go())
    if len(frame):
        assert progress[-1] == (len(frame), len(frame))
        assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    return result


def by_subject(result: LookupRun) -> dict[str, tuple[str, str | None]]:
    return {
        str(s): (str(st), None if pd.isna(r) else str(r))
        for s, st, r in zip(
            result.outcomes[SUBJECT],
            result.outcomes["status"],
            result.outcomes["reason"],
            strict=True,
        )
    }


def test_batches_of_the_declared_size_and_bounded_workers() -> None:
    provider = Scripted(batch_size=4)
    subjects = [f"m{i}" if i % 3 else f"n{i}" for i in range(50)]
    result = run(provider, requests(*subjects), concurrency=2)
    assert sorted(s for batch in provider.seen for s in batch) == sorted(subjects)
    assert max(len(b) for b in provider.seen) == 4
    assert len(provider.seen) == 13
    assert provider.most_in_flight <= 4  # two requests in flight per unit of concurrency

    statuses = by_subject(result)
    assert len(statuses) == 50
    assert statuses["m1"] == ("matched", None)
    assert statuses["n0"] == ("no_match", None)
    assert set(result.signals[SUBJECT]) == {s for s in subjects if s.startswith("m")}
    assert list(result.signals.columns) == list(SIGNAL_COLUMNS)


def test_single_request_providers_get_many_rows_per_call() -> None:
    provider = Scripted(batch_size=1)
    result = run(provider, requests(*(f"m{i}" for i in range(SINGLE_LOOKUP_ROWS + 1))))
    assert [len(b) for b in provider.seen] == [SINGLE_LOOKUP_ROWS, 1]
    assert len(result.outcomes) == SINGLE_LOOKUP_ROWS + 1


def test_failures_end_as_failed_with_their_reason_and_never_stop_the_others() -> None:
    provider = Scripted(batch_size=2)
    result = run(provider, requests("m1", "n1", "down1", "m2", "bug1", "n2", "lost1", "odd1"))
    assert by_subject(result) == {
        "m1": ("matched", None),
        "n1": ("no_match", None),
        "down1": ("failed", "http_503"),
        "m2": ("failed", "http_503"),  # in the batch whose request failed
        "bug1": ("failed", "provider_error"),
        "n2": ("failed", "provider_error"),
        "lost1": ("failed", "missing_in_response"),
        "odd1": ("failed", "bad_status"),
    }
    assert result.failed_reasons == {
        "http_503": 2,
        "provider_error": 2,
        "missing_in_response": 1,
        "bad_status": 1,
    }
    assert set(result.signals[SUBJECT]) == {"m1"}


def test_once_the_budget_is_spent_the_remaining_batches_make_no_calls() -> None:
    provider = Scripted(batch_size=1)
    result = run(provider, requests("broke", *(f"m{i}" for i in range(20))), concurrency=1)
    statuses = by_subject(result)
    assert len(statuses) == 21
    spent = [s for s, (st, r) in statuses.items() if r == BudgetExhaustedError.reason]
    assert "broke" in spent
    # the workers already holding a batch finish it; nothing is called after that
    assert len(provider.seen) <= 3
    assert len(spent) == 21 - (len(provider.seen) - 1)


def test_signals_that_break_the_contract_are_dropped_and_counted() -> None:
    provider = Scripted(batch_size=2)
    result = run(provider, requests("mbad", "m2", "n3"))
    kept = result.signals[result.signals[SUBJECT] == "mbad"]
    assert kept["topic"].tolist() == ["interest.travel"]
    assert result.signals_dropped == 4
    # no signals for a subject that did not match, even if the provider sent some
    assert "n3" not in set(result.signals[SUBJECT])


def test_nothing_to_look_up() -> None:
    result = run(Scripted(), requests())
    assert result.outcomes.empty
    assert list(result.outcomes.columns) == list(OUTCOME_COLUMNS)
    assert result.signals.empty
    assert result.failed_reasons == {}


@pytest.mark.parametrize("status", list(LookupStatus))
def test_status_values_are_stable(status: LookupStatus) -> None:
    # the cache, the summary and the audit read these strings back
    assert str(status) == status.value == status.name.lower()
