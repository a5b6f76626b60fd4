"""The `declared` provider: preference-centre answers → declared signals, nothing guessed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from enrichers.declared.provider import (
    DROP_REASONS,
    DeclaredSettings,
    declared_signals,
    parse_declared,
)
from profiles.errors import ConfigError

AS_OF = datetime(2026, 11, 1, 23, 59, 59, tzinfo=UTC)


def _rows(*rows: tuple[str, str | None, str | None, str | None]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "profile_id": [r[0] for r in rows],
            "topic": pd.array([r[1] for r in rows], dtype="string"),
            "interested": pd.array([r[2] for r in rows], dtype="string"),
            "recorded_at": pd.array([r[3] for r in rows], dtype="string"),
        }
    )


def test_answers_become_declared_signals_with_their_time() -> None:
    signals, dropped = declared_signals(
        _rows(
            ("p1", "outdoor.hiking", "yes", "2025-07-02T10:44:48+02:00"),
            ("p1", "interest.travel", " No ", "2026-06-22T23:36:07Z"),
            ("p2", "Pets.Dogs", "Ja", "2026-01-01T00:00:00+00:00"),
        ),
        DeclaredSettings(),
        as_of=AS_OF,
    )
    assert signals["topic"].tolist() == [
        "interest.outdoor.hiking",
        "interest.travel",
        "interest.pets.dogs",
    ]
    assert signals["confidence"].tolist() == [0.95, 0.03, 0.95]
    assert signals["raw_score"].tolist() == ["yes", "no", "yes"]
    assert set(signals["kind"]) == {"declared"}
    assert set(signals["provider"]) == {"declared"}
    assert signals["observed_at"].iloc[0] == pd.Timestamp("2025-07-02T08:44:48Z")
    assert dropped == dict.fromkeys(DROP_REASONS, 0)


def test_unreadable_rows_are_dropped_and_counted_never_guessed() -> None:
    signals, dropped = declared_signals(
        _rows(
            ("p1", None, "yes", "2026-01-01T00:00:00Z"),
            ("p1", "Kids & Toys", "yes", "2026-01-01T00:00:00Z"),
            ("p1", "travel", "maybe", "2026-01-01T00:00:00Z"),
            ("p1", "travel", "yes", "2026-01-01 00:00:00"),  # no zone: which night?
            ("p1", "travel", "yes", "last tuesday"),
            ("p1", "travel", "yes", "2026-12-24T00:00:00Z"),  # after the night scored
            ("p1", "travel", "yes", "2026-01-01T00:00:00Z"),
        ),
        DeclaredSettings(),
        as_of=AS_OF,
    )
    assert len(signals) == 1
    assert dropped == {
        "missing_topic": 1,
        "unmappable_topic": 1,
        "unreadable_answer": 1,
        "missing_time": 2,
        "after_as_of": 1,
    }


def test_topic_map_and_words_are_configurable() -> None:
    settings = DeclaredSettings(
        topic_map={"Kids & Toys": "interest.kids.toys"},
        yes=("Oui",),
        no=("Non",),
        interested=0.9,
        not_interested=0.1,
    )
    signals, _ = declared_signals(
        _rows(
            ("p1", "kids & toys", "oui", "2026-01-01T00:00:00Z"),
            ("p1", "travel", "NON", "2026-01-01T00:00:00Z"),
        ),
        settings,
        as_of=AS_OF,
    )
    assert signals["topic"].tolist() == ["interest.kids.toys", "interest.travel"]
    assert signals["confidence"].tolist() == [0.9, 0.1]


def test_settings_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "enrich.yaml"
    path.write_text(
        "declared:\n  yes: [yes, ok]\n  no: [no, ok]\n  interested: 1.5\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError) as raised:
        parse_declared({"yes": ["yes", "ok"], "no": ["no", "ok"], "interested": 1.5}, path=path)
    assert any(p.startswith(f"{path}:4: declared.interested") for p in raised.value.problems)
    with pytest.raises(ConfigError, match="both yes and no"):
        parse_declared({"yes": ["yes", "ok"], "no": ["no", "ok"]}, path=path)
