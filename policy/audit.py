"""The policy decision log: one append-only JSONL record per decision.

`DecisionLog` is the one interface every gate writes through. `JsonlDecisionLog` is the plain
implementation: one file per run, `decisions-<run_id>.jsonl`, opened in append mode and fsynced
after every batch. The audit issue replaces it with a hash-chained, signed log behind the same
interface. Entries name the subject by profile id (a pseudonymous id) and hold no raw values.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import pandas as pd

ENTRY_FIELDS: tuple[str, ...] = (
    "seq",
    "ts",
    "run_id",
    "actor",
    "subject",
    "purpose",
    "gate",
    "context",
    "rule",
    "policy_hash",
    "decision",
    "basis",
    "reason",
    "evidence",
)
"""Fields of a decision entry, in order."""

DECISION_COLUMNS: tuple[str, ...] = (
    "subject",
    "gate",
    "purpose",
    "decision",
    "basis",
    "rule",
    "reason",
    "evidence",
    "policy_hash",
)
"""Columns of the decisions frame a gate hands to the log (extra columns are ignored; an
optional `context` column, e.g. "provider=gravatar", says what else the decision was about)."""


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


class DecisionLog(Protocol):
    """Where every policy decision is written, before anything acts on it."""

    def append(self, run_id: str, decisions: pd.DataFrame, *, actor: str) -> int:
        """Append one entry per row of `decisions`; returns how many were written."""
        ...

    def entries(self, subject: str | None = None) -> Iterator[dict[str, object]]:
        """Every entry (optionally only one subject's), oldest first."""
        ...


class JsonlDecisionLog:
    """Decision log as JSONL files under `directory`, one per run, append-only."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seq: dict[str, int] = {}

    def path(self, run_id: str) -> Path:
        """The file of one run."""
        return self.directory / f"decisions-{run_id}.jsonl"

    def append(self, run_id: str, decisions: pd.DataFrame, *, actor: str) -> int:
        """Append one entry per decision row, fsync, and return the number written."""
        if decisions.empty:
            return 0
        missing = [c for c in DECISION_COLUMNS if c not in decisions.columns]
        if missing:
            raise ValueError(f"decisions lack column(s): {', '.join(missing)}")
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(run_id)
        start = self._seq.get(run_id)
        if start is None:
            start = _count_lines(path)
        ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        frame = decisions.loc[:, list(DECISION_COLUMNS)].astype(str)
        context = (
            decisions["context"].astype(str).tolist()
            if "context" in decisions.columns
            else [""] * len(frame)
        )
        columns = [frame[c].tolist() for c in DECISION_COLUMNS]
        lines = []
        for i, values in enumerate(zip(*columns, strict=True)):
            entry: dict[str, object] = {"seq": start + i, "ts": ts, "run_id": run_id}
            entry["actor"] = actor
            entry["context"] = context[i]
            entry.update(zip(DECISION_COLUMNS, values, strict=True))
            ordered = {name: entry[name] for name in ENTRY_FIELDS}
            lines.append(json.dumps(ordered, ensure_ascii=False, separators=(",", ":")))
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._seq[run_id] = start + len(lines)
        return len(lines)

    def entries(self, subject: str | None = None) -> Iterator[dict[str, object]]:
        """Every entry of every run, file by file in name order (run ids sort by time)."""
        if not self.directory.is_dir():
            return
        needle = None if subject is None else f'"subject":{json.dumps(subject)}'
        for path in sorted(self.directory.glob("decisions-*.jsonl")):
            with path.open(encoding="utf-8") as fh:
                for line in fh:
                    if needle is None or needle in line:
                        entry: dict[str, object] = json.loads(line)
                        if subject is None or entry.get("subject") == subject:
                            yield entry
