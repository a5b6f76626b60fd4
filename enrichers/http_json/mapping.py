"""Pure functions from a provider's JSON payload to lookup outcomes and signals.

Nothing here does I/O or reads a clock: the provider passes `now`. Every function is tested on
the saved samples under `fixtures/providers/`. A payload that does not fit the configured shape
never crashes the lookup and is never passed through: the item ends `failed` with reason
`bad_payload`.

JSON path syntax (used by `response:` in `http_json` settings)::

    path  := ["$"] step*          "$" (or nothing) is the document the path is applied to
    step  := "." key              key of an object; the first key needs no dot: `data.interests`
           | "[" integer "]"      element of a list; negative counts from the end: `items[-1]`
           | "[*]"                every element of a list (the path then yields several values)
           | '["' text '"]'       a key with other characters: `["job-title"]`, `["a.b"]`
    key   := [A-Za-z_][A-Za-z0-9_-]*

A missing key, an index past the end and a JSON `null` all yield nothing (vendors write a
missing field as `null`). A step that meets the wrong type - a key on a list, `[*]` on an
object - means the payload does not have the configured shape: `PayloadShapeError`.

Messages here never quote payload values (they may be personal data); they name the path and
the JSON type found.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final

import pandas as pd

from enrichers.base import (
    OUTCOME_COLUMNS,
    SIGNAL_COLUMNS,
    SUBJECT,
    Billing,
    LookupResult,
    LookupStatus,
    empty_signals,
)
from profiles.types import IdentifierForm, SignalKind

BAD_PAYLOAD: Final = "bad_payload"
"""Reason: the response (or this item of it) does not have the configured shape."""
ITEM_ERROR: Final = "item_error"
"""Reason: the provider answered this item with a status that is neither a match nor a miss."""
MISSING_ITEM: Final = "missing_item"
"""Reason: a batch response has no item for this identifier."""
BAD_IDENTIFIER: Final = "bad_identifier"
"""Reason: the value is not valid for its form (e.g. not 64 hex digits); it was not sent."""
FORM_NOT_ACCEPTED: Final = "form_not_accepted"
"""Reason: the provider does not accept this identifier form; nothing was sent."""


class PayloadShapeError(ValueError):
    """The payload does not have the shape the mapping expects (message names no values)."""


# --- JSON paths ------------------------------------------------------------------------------


class _Wildcard:
    """The `[*]` step."""

    def __repr__(self) -> str:
        return "[*]"


WILDCARD: Final = _Wildcard()

_STEP = re.compile(
    r"\.(?P<key>[A-Za-z_][A-Za-z0-9_\-]*)"
    r"|\[(?P<index>-?\d+)\]"
    r"|\[(?P<star>\*)\]"
    r'|\["(?P<quoted>(?:[^"\\]|\\.)*)"\]'
)

Step = str | int | _Wildcard


@dataclass(frozen=True)
class JsonPath:
    """A compiled path in the syntax described in the module docstring."""

    text: str
    steps: tuple[Step, ...]

    @classmethod
    def parse(cls, text: str) -> JsonPath:
        """Compile `text`; ValueError says where the syntax breaks."""
        source = text.strip()
        rest = source[1:] if source.startswith("$") else source
        if rest and rest[0] not in ".[":
            rest = "." + rest
        steps: list[Step] = []
        pos = 0
        while pos < len(rest):
            match = _STEP.match(rest, pos)
            if match is None:
                raise ValueError(
                    f"invalid JSON path {text!r} at {rest[pos:]!r} (expected .key, [n], [*] "
                    'or ["key"])'
                )
            if match["key"] is not None:
                steps.append(match["key"])
            elif match["index"] is not None:
                steps.append(int(match["index"]))
            elif match["star"] is not None:
                steps.append(WILDCARD)
            else:
                steps.append(re.sub(r"\\(.)", r"\1", match["quoted"]))
            pos = match.end()
        return cls(text=source, steps=tuple(steps))

    @property
    def fans_out(self) -> bool:
        """True if the path has a `[*]` step and may yield several values."""
        return any(s is WILDCARD for s in self.steps)

    def find(self, document: Any) -> list[Any]:
        """Every value the path reaches in `document` (nulls and missing keys yield nothing)."""
        current: list[Any] = [] if document is None else [document]
        done = "$"
        for step in self.steps:
            found: list[Any] = []
            for value in current:
                if isinstance(step, str):
                    if not isinstance(value, dict):
                        raise PayloadShapeError(
                            f"{self.text}: expected an object at {done}, got {_kind(value)}"
                        )
                    child = value.get(step)
                    if child is not None:
                        found.append(child)
                elif isinstance(step, int):
                    if not isinstance(value, list):
                        raise PayloadShapeError(
                            f"{self.text}: expected a list at {done}, got {_kind(value)}"
                        )
                    if -len(value) <= step < len(value) and value[step] is not None:
                        found.append(value[step])
                else:
                    if not isinstance(value, list):
                        raise PayloadShapeError(
                            f"{self.text}: expected a list at {done}, got {_kind(value)}"
                        )
                    found.extend(v for v in value if v is not None)
            current = found
            done += f".{step}" if isinstance(step, str) else f"[{step}]"
        return current

    def first(self, document: Any) -> Any | None:
        """The first value the path reaches, or None."""
        found = self.find(document)
        return found[0] if found else None

    def __str__(self) -> str:
        return self.text


def _kind(value: Any) -> str:
    """The JSON type name of a decoded value (never the value itself)."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "null" if value is None else type(value).__name__


# --- calibration: provider score -> probability ----------------------------------------------


def logit(p: float) -> float:
    """Log-odds of a probability in (0, 1)."""
    return math.log(p / (1.0 - p))


def inv_logit(x: float) -> float:
    """Probability of a log-odds value."""
    return 1.0 / (1.0 + math.exp(-x))


def likelihood_to_probability(likelihood: float, *, p_at_1: float, odds_per_step: float) -> float:
    """Calibrate a People-Data-Labs-style match likelihood (integer 1-10, logarithmic).

    PDL documents the scale as logarithmic but publishes no probabilities, so we model it in
    log-odds: likelihood 1 has probability `p_at_1` of being a correct match and every step up
    multiplies the odds by `odds_per_step`. With the defaults (0.5, 2.0): 1 -> 0.50, 2 -> 0.67,
    3 -> 0.80, 4 -> 0.89, 6 -> 0.97, 8 -> 0.992, 10 -> 0.998 (before the confidence ceiling).
    """
    if not 1 <= likelihood <= 10 or likelihood != int(likelihood):
        raise PayloadShapeError("likelihood must be an integer from 1 to 10")
    return inv_logit(logit(p_at_1) + (likelihood - 1) * math.log(odds_per_step))


def linear_to_probability(score: float, *, low: float, high: float) -> float:
    """Rescale a score on [low, high] to [0, 1] linearly (e.g. a 0-100 affinity)."""
    if not low <= score <= high:
        raise PayloadShapeError("score outside the configured range")
    return (score - low) / (high - low)


def probability(score: float) -> float:
    """A score that already is a probability in [0, 1]."""
    if not 0.0 <= score <= 1.0:
        raise PayloadShapeError("probability score outside [0, 1]")
    return score


def bounded(p: float, *, floor: float, ceiling: float) -> float:
    """Clamp into [floor, ceiling] so that confidence stays strictly inside (0, 1)."""
    return min(max(p, floor), ceiling)


def as_number(value: Any) -> float:
    """A JSON number (or numeric string) as a finite float; PayloadShapeError otherwise."""
    if isinstance(value, bool):
        raise PayloadShapeError("score is a boolean, not a number")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise PayloadShapeError("score is text that is not a number") from None
    else:
        raise PayloadShapeError(f"score is {_kind(value)}, not a number")
    if not math.isfinite(number):
        raise PayloadShapeError("score is not a finite number")
    return number


def raw_text(value: Any) -> str:
    """The provider's own score as text, as it came (for provenance)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    return str(value)


# --- timestamps, labels, identifiers ---------------------------------------------------------


def parse_timestamp(value: Any, *, now: datetime) -> datetime:
    """An `observed_at` value as a UTC datetime, never later than `now`.

    Accepts ISO 8601 date-times (`Z` or an offset; a naive one is taken as UTC), ISO dates
    (midnight UTC) and Unix epoch seconds. A future time is clamped to `now`: a provider clock
    ahead of ours must not make a signal look fresher than the lookup.
    """
    if isinstance(value, bool):
        raise PayloadShapeError("observed_at is a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise PayloadShapeError("observed_at is not a finite number")
        try:
            moment = datetime.fromtimestamp(float(value), tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise PayloadShapeError("observed_at epoch seconds out of range") from None
    elif isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                day = date.fromisoformat(text)
                moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            else:
                moment = datetime.fromisoformat(text)
        except ValueError:
            raise PayloadShapeError("observed_at is not an ISO 8601 date or time") from None
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    else:
        raise PayloadShapeError(f"observed_at is {_kind(value)}")
    return min(moment, now)


def normalise_label(label: str) -> str:
    """A provider label as a topic-map key: trimmed, case-folded, inner whitespace collapsed."""
    return " ".join(label.split()).casefold()


_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def identifier_ok(form: IdentifierForm, value: Any) -> bool:
    """Whether `value` is well-formed for `form` (checked before anything is sent)."""
    if not isinstance(value, str) or not value:
        return False
    if form in (IdentifierForm.EMAIL_SHA256, IdentifierForm.PHONE_SHA256):
        return bool(_HEX64.match(value))
    if form is IdentifierForm.PHONE_E164:
        return bool(_E164.match(value))
    return "@" in value and value == value.strip()


# --- items -> outcomes -----------------------------------------------------------------------


@dataclass(frozen=True)
class MappedSignal:
    """One topic found for one identifier, before it is given a subject."""

    topic: str
    confidence: float
    observed_at: datetime
    raw_score: str | None
    """The provider's own score as text; None when the provider gives none."""


@dataclass(frozen=True)
class ItemOutcome:
    """What one identifier's answer amounts to."""

    status: LookupStatus
    reason: str | None = None
    signals: tuple[MappedSignal, ...] = ()
    unmapped: tuple[str, ...] = ()
    """Provider labels the topic map does not know (normalised): counted, then dropped."""


def failed(reason: str) -> ItemOutcome:
    """A failed outcome with `reason`."""
    return ItemOutcome(LookupStatus.FAILED, reason)


NO_MATCH: Final = ItemOutcome(LookupStatus.NO_MATCH)


@dataclass(frozen=True)
class Scorer:
    """Turns a provider score into a confidence; `constant` is used when there is no score."""

    calibrate: Callable[[float], float]
    floor: float = 0.01
    ceiling: float = 0.99
    constant: float | None = None
    """Confidence for every signal when the provider gives no score."""

    def confidence(self, raw: Any) -> tuple[float, str | None]:
        """(confidence in [floor, ceiling], raw score as text); PayloadShapeError if unusable."""
        if raw is None:
            if self.constant is None:
                raise PayloadShapeError("score missing")
            return bounded(self.constant, floor=self.floor, ceiling=self.ceiling), None
        p = self.calibrate(as_number(raw))
        return bounded(p, floor=self.floor, ceiling=self.ceiling), raw_text(raw)


@dataclass(frozen=True)
class ResponseShape:
    """A compiled `response:` mapping plus the topic map and the scorer."""

    interests: JsonPath
    """Path (in an item) to the interest entries."""
    topic_map: Mapping[str, str]
    """Normalised provider label -> taxonomy dot key."""
    scorer: Scorer
    items: JsonPath | None = None
    """Batch: path (in the payload) to the per-identifier items."""
    ref: JsonPath | None = None
    """Batch: path (in an item) to the echoed request reference; None: items come in order."""
    status: JsonPath | None = None
    """Path (in an item) to a per-item status or match flag; None: every item is a match."""
    matched_values: tuple[Any, ...] = (200,)
    no_match_values: tuple[Any, ...] = (404,)
    topic: JsonPath | None = None
    """Path (in an interest entry) to its label; None: the entry is the label."""
    score: JsonPath | None = None
    score_from_item: bool = False
    """True: `score` is read from the item (one score per match, e.g. PDL likelihood);
    False: from each interest entry (one score per topic)."""
    observed_at: JsonPath | None = None
    """Path (in an item) to when the data was observed; missing: the lookup time."""


def _scalar_key(value: Any) -> tuple[str, Any]:
    # True == 1 in Python; a match flag `true` must not equal a status `1`.
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", float(value))
    return (type(value).__name__, value)


def _in(value: Any, values: Sequence[Any]) -> bool:
    try:
        key = _scalar_key(value)
        return any(key == _scalar_key(v) for v in values)
    except TypeError:
        return False


def map_labels(
    labels: Sequence[tuple[str, float, str | None]],
    topic_map: Mapping[str, str],
    *,
    observed_at: datetime,
) -> tuple[tuple[MappedSignal, ...], tuple[str, ...]]:
    """Map (label, confidence, raw score) through `topic_map`.

    Unknown labels are returned separately (counted and dropped, never passed through). Two
    labels on one topic make one signal: the most confident wins.
    """
    best: dict[str, MappedSignal] = {}
    unmapped: list[str] = []
    for label, confidence, raw in labels:
        key = normalise_label(label)
        topic = topic_map.get(key)
        if topic is None:
            unmapped.append(key)
            continue
        held = best.get(topic)
        if held is None or confidence > held.confidence:
            best[topic] = MappedSignal(topic, confidence, observed_at, raw)
    return tuple(best[t] for t in sorted(best)), tuple(unmapped)


def _interest_labels(
    item: dict[str, Any], shape: ResponseShape
) -> list[tuple[str, float, str | None]]:
    """(label, confidence, raw score) of every interest entry in `item`."""
    item_score: tuple[float, str | None] | None = None
    if shape.score_from_item:
        raw = shape.score.first(item) if shape.score is not None else None
        item_score = shape.scorer.confidence(raw)
    labels: list[tuple[str, float, str | None]] = []
    for entry in shape.interests.find(item):
        label = shape.topic.first(entry) if shape.topic is not None else entry
        if not isinstance(label, str):
            raise PayloadShapeError(f"{shape.interests}: a label is {_kind(label)}")
        if item_score is None:
            raw = shape.score.first(entry) if shape.score is not None else None
            confidence, raw_score = shape.scorer.confidence(raw)
        else:
            confidence, raw_score = item_score
        labels.append((label, confidence, raw_score))
    return labels


def map_item(item: Any, shape: ResponseShape, *, now: datetime) -> ItemOutcome:
    """One identifier's item: matched with signals, no_match, or failed (`bad_payload`)."""
    try:
        if not isinstance(item, dict):
            raise PayloadShapeError(f"item is {_kind(item)}, not an object")
        if shape.status is not None:
            flag = shape.status.first(item)
            if flag is None:
                raise PayloadShapeError(f"{shape.status}: missing")
            if _in(flag, shape.no_match_values):
                return NO_MATCH
            if not _in(flag, shape.matched_values):
                return failed(ITEM_ERROR)
        stamp = shape.observed_at.first(item) if shape.observed_at is not None else None
        observed = now if stamp is None else parse_timestamp(stamp, now=now)
        labels = _interest_labels(item, shape)
        signals, unmapped = map_labels(labels, shape.topic_map, observed_at=observed)
    except PayloadShapeError:
        return failed(BAD_PAYLOAD)
    return ItemOutcome(LookupStatus.MATCHED, None, signals, unmapped)


def map_batch(
    document: Any, shape: ResponseShape, *, refs: Sequence[str], now: datetime
) -> list[ItemOutcome]:
    """A decoded batch response: one outcome per request reference, in the order of `refs`.

    Items are matched to requests by the echoed reference (`shape.ref`) or, without one, by
    position (then the counts must agree). One malformed item fails only that identifier; a
    payload whose item list cannot be found fails them all.
    """
    try:
        if shape.items is None:
            raise PayloadShapeError("no items path configured")
        items = shape.items.find(document)
        if shape.ref is None:
            if len(items) != len(refs):
                raise PayloadShapeError("batch response has a different number of items")
            return [map_item(item, shape, now=now) for item in items]
    except PayloadShapeError:
        return [failed(BAD_PAYLOAD) for _ in refs]
    by_ref: dict[str, ItemOutcome] = {}
    for item in items:
        try:
            ref = shape.ref.first(item) if isinstance(item, dict) else None
        except PayloadShapeError:
            ref = None
        if ref is None or isinstance(ref, dict | list | bool):
            continue  # an item we cannot attribute to any request is of no use
        key = raw_text(ref)
        # The same reference twice: we cannot tell which answer is right.
        by_ref[key] = failed(BAD_PAYLOAD) if key in by_ref else map_item(item, shape, now=now)
    return [by_ref.get(ref, failed(MISSING_ITEM)) for ref in refs]


# --- outcomes -> LookupResult ----------------------------------------------------------------


def billable(status: LookupStatus, *, sent: bool, billing: Billing) -> bool:
    """Whether one subject counted towards the budget under `billing`.

    Free: never. Per match: matched subjects. Per id and per call: every subject whose
    identifier was sent (for per-call billing the call, not the subject, is the unit charged;
    a subject is still marked because its lookup consumed budget).
    """
    if not sent or billing is Billing.FREE:
        return False
    if billing is Billing.PER_MATCH:
        return status is LookupStatus.MATCHED
    return True


def to_result(
    subjects: Sequence[Any],
    outcomes: Sequence[ItemOutcome],
    sent: Sequence[bool],
    *,
    provider: str,
    kind: SignalKind,
    billing: Billing,
) -> LookupResult:
    """A LookupResult: one outcome row per subject (in order) and every mapped signal."""
    outcome_frame = pd.DataFrame(
        {
            SUBJECT: pd.Series(list(subjects), dtype=object),
            "status": pd.Series([str(o.status) for o in outcomes], dtype=object),
            "reason": pd.Series([o.reason for o in outcomes], dtype=object),
            "billable": pd.Series(
                [
                    billable(o.status, sent=s, billing=billing)
                    for o, s in zip(outcomes, sent, strict=True)
                ],
                dtype=bool,
            ),
        },
        columns=list(OUTCOME_COLUMNS),
    )
    rows = [
        (subject, sig) for subject, o in zip(subjects, outcomes, strict=True) for sig in o.signals
    ]
    if not rows:
        return LookupResult(outcome_frame, empty_signals())
    signals = pd.DataFrame(
        {
            SUBJECT: pd.Series([s for s, _ in rows], dtype=object),
            "topic": pd.Series([sig.topic for _, sig in rows], dtype=object),
            "confidence": pd.Series([sig.confidence for _, sig in rows], dtype="float64"),
            "provider": pd.Series([provider] * len(rows), dtype=object),
            "observed_at": pd.Series(
                pd.to_datetime([sig.observed_at for _, sig in rows], utc=True)
            ),
            "kind": pd.Series([str(kind)] * len(rows), dtype=object),
            "raw_score": pd.Series([sig.raw_score for _, sig in rows], dtype=object),
        },
        columns=list(SIGNAL_COLUMNS),
    )
    return LookupResult(outcome_frame, signals)


def count_unmapped(outcomes: Sequence[ItemOutcome]) -> dict[str, int]:
    """How often each unknown provider label was dropped in `outcomes`."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        for label in outcome.unmapped:
            counts[label] = counts.get(label, 0) + 1
    return counts
