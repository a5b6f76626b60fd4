"""Row accounting per source: every input row ends accepted or quarantined, and it balances."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from profiles.errors import AccountingError
from profiles.quarantine import REASON_FIELDS
from profiles.types import ReasonCode


@dataclass
class SourceCounts:
    """Counts for one source in one run. Holds codes and numbers only, never values."""

    source: str
    file: str
    rows_in: int = 0
    rows_accepted: int = 0
    rows_erased: int = 0
    """Rows of people who asked to be erased: dropped, kept nowhere, only counted."""
    quarantined_by_reason: Counter[str] = field(default_factory=Counter)
    field_rejections: dict[str, Counter[str]] = field(default_factory=dict)
    """field → reason code → rows (accepted and quarantined rows alike)."""

    @property
    def rows_quarantined(self) -> int:
        """Rows of this source in the quarantine."""
        return sum(self.quarantined_by_reason.values())

    def add_identified(self, identified: pd.DataFrame) -> None:
        """Count one chunk of identifier-stage output."""
        self.rows_in += len(identified)
        row_reason = identified["row_reason"]
        self.rows_accepted += int(row_reason.isna().sum())
        self.quarantined_by_reason.update(
            {str(k): int(v) for k, v in row_reason.dropna().value_counts().items()}
        )
        for name in REASON_FIELDS:
            counts = identified[f"{name}_reason"].dropna().value_counts()
            if len(counts):
                self.field_rejections.setdefault(name, Counter()).update(
                    {str(k): int(v) for k, v in counts.items()}
                )

    def add_unparseable(self, rows: int) -> None:
        """Count records the reader could not parse."""
        self.rows_in += rows
        if rows:
            self.quarantined_by_reason[str(ReasonCode.ROW_UNPARSEABLE)] += rows

    def add_erased(self, rows: int) -> None:
        """Move `rows` accepted rows to the erased count (their subject was erased)."""
        self.rows_accepted -= rows
        self.rows_erased += rows

    def merge(self, other: SourceCounts) -> None:
        """Add the counts of another part of the same source (a chunk counted elsewhere)."""
        if other.source != self.source:
            raise ValueError(f"cannot merge counts of {other.source} into {self.source}")
        self.rows_in += other.rows_in
        self.rows_accepted += other.rows_accepted
        self.rows_erased += other.rows_erased
        self.quarantined_by_reason.update(other.quarantined_by_reason)
        for name, codes in other.field_rejections.items():
            self.field_rejections.setdefault(name, Counter()).update(codes)

    def check(self) -> None:
        """Raise AccountingError unless rows_in == accepted + quarantined + erased."""
        if self.rows_in != self.rows_accepted + self.rows_quarantined + self.rows_erased:
            raise AccountingError(
                f"source {self.source}: rows_in {self.rows_in} != rows_accepted "
                f"{self.rows_accepted} + rows_quarantined {self.rows_quarantined}"
                f" + rows_erased {self.rows_erased}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the run summary."""
        return {
            "file": self.file,
            "rows_in": self.rows_in,
            "rows_accepted": self.rows_accepted,
            "rows_quarantined": self.rows_quarantined,
            "rows_erased": self.rows_erased,
            "quarantined_by_reason": dict(sorted(self.quarantined_by_reason.items())),
            "field_rejections": {
                name: dict(sorted(codes.items()))
                for name, codes in sorted(self.field_rejections.items())
            },
        }
