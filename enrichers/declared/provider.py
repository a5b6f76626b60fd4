"""The `declared` provider: what people told the preference centre, as `declared` signals.

A preferences source (`kind: preferences`) has one row per person and topic: the topic as
the preference centre names it (`topic`), the answer (`interested`) and when it was given
(`recorded_at`). Each readable row of a profile allowed for profiling becomes one signal:

    topic        `topic_map[answer topic]`, else `<topic_prefix>.<answer topic>` (an answer
                 topic that already starts with the prefix is kept); compared trimmed and
                 case-folded
    confidence   `interested` for a yes, `not_interested` for a no: a declared "no" is
                 evidence against the interest, and fusion lets it override inferred ones
    observed_at  `recorded_at` (UTC)
    kind         declared; provider `declared`; raw_score `yes` or `no`

Rows that cannot be read are dropped and counted, never guessed: `missing_topic`,
`unmappable_topic` (not a taxonomy dot key after mapping), `unreadable_answer` (neither a yes
nor a no word), `missing_time` (no readable time with a zone) and `after_as_of` (given after
the night being scored, so a past night can be reproduced). Whether the taxonomy lists the
topic is checked later, for all providers alike, where unknown topics are counted and dropped.
Nothing leaves the machine: gate B (profiling), not gate A, governs these signals.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from profiles.fusion import DECLARED_PROVIDER
from profiles.store.signals import TOPIC_MAX_LENGTH, TOPIC_PATTERN
from profiles.taxonomy import Probability, TopicKey
from profiles.types import SignalKind
from profiles.yamlconf import validate_section

SECTION: Final = "declared"
PROFILE_ID: Final = "profile_id"
INPUT_COLUMNS: Final = (PROFILE_ID, "topic", "interested", "recorded_at")
"""Columns `declared_signals` reads."""
DROP_REASONS: Final = (
    "missing_topic",
    "unmappable_topic",
    "unreadable_answer",
    "missing_time",
    "after_as_of",
)
_TOPIC = re.compile(f"^{TOPIC_PATTERN}$")


def _words(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted({v.strip().casefold() for v in values if v.strip()}))


class DeclaredSettings(BaseModel):
    """`declared:` in enrich.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    topic_prefix: TopicKey = "interest"
    topic_map: dict[str, TopicKey] = Field(default_factory=dict)
    """Answer topic (as the preference centre writes it) → taxonomy key."""
    yes: Annotated[tuple[str, ...], Field(min_length=1)] = (
        *("yes", "y", "true", "1", "x", "interested", "ja", "oui", "si", "sí"),
    )
    no: Annotated[tuple[str, ...], Field(min_length=1)] = (
        *("no", "n", "false", "0", "not interested", "nej", "nein", "non"),
    )
    interested: Probability = 0.95
    """Confidence of a declared "interested"."""
    not_interested: Probability = 0.03
    """Confidence of a declared "not interested"."""

    @field_validator("yes", "no")
    @classmethod
    def _normalise(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _words(value)

    @field_validator("topic_map")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        return {k.strip().casefold(): v for k, v in value.items()}

    @model_validator(mode="after")
    def _distinct(self) -> DeclaredSettings:
        both = sorted(set(self.yes) & set(self.no))
        if both:
            raise ValueError(f"words listed as both yes and no: {both}")
        if self.not_interested >= self.interested:
            raise ValueError("not_interested must be below interested")
        return self


def parse_declared(raw: dict[str, Any], *, path: Path) -> DeclaredSettings:
    """Validate enrich.yaml's `declared` section (errors as file:line)."""
    return validate_section(raw, DeclaredSettings, section=SECTION, path=path)


def declared_signals(
    rows: pd.DataFrame, settings: DeclaredSettings, *, as_of: datetime
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Signals (profile_id + SIGNAL_COLUMNS without subject) from preference rows, and the
    number of rows dropped per reason (every reason present, zeros included)."""
    topic = rows["topic"].astype("string").str.strip().str.casefold()
    answer = rows["interested"].astype("string").str.strip().str.casefold()
    prefix = settings.topic_prefix
    prefixed = _false(topic.str.startswith(prefix + ".")) | _false(topic == prefix)
    bare = topic.where(prefixed, prefix + "." + topic)
    mapped = topic.map(settings.topic_map).astype("string").fillna(bare)
    at = pd.to_datetime(rows["recorded_at"], utc=True, errors="coerce", format="ISO8601")
    # a time without a zone is ambiguous: pandas would read it as UTC, so refuse it
    zoned = rows["recorded_at"].astype("string").str.contains(r"(?:Z|[+-]\d\d:?\d\d)\s*$")
    yes, no = answer.isin(settings.yes), answer.isin(settings.no)

    reason = np.select(
        [
            _false(topic.isna()) | _false(topic == ""),
            ~_false(mapped.str.fullmatch(_TOPIC.pattern[1:-1]))
            | _false(mapped.str.len() > TOPIC_MAX_LENGTH),
            ~(_false(yes) | _false(no)),
            _false(at.isna()) | ~_false(zoned),
            _false(at > pd.Timestamp(as_of)),
        ],
        list(DROP_REASONS),
        default="",
    )
    keep = reason == ""
    signals = pd.DataFrame(
        {
            PROFILE_ID: rows[PROFILE_ID].astype(str).to_numpy()[keep],
            "topic": mapped.to_numpy(dtype=object)[keep],
            "confidence": np.where(yes, settings.interested, settings.not_interested)[keep],
            "provider": DECLARED_PROVIDER,
            "observed_at": at[keep].reset_index(drop=True),
            "kind": str(SignalKind.DECLARED),
            "raw_score": np.where(yes, "yes", "no")[keep],
        }
    )
    dropped = {r: int((reason == r).sum()) for r in DROP_REASONS}
    return signals, dropped


def _false(mask: pd.Series) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """A nullable boolean column as numpy, missing as False."""
    return mask.fillna(False).to_numpy(dtype=bool)
