"""Pure mapping of a Gravatar v3 profile to declared interest signals.

Only two fields of the profile are read: `interests` (`[{"id": int, "name": str}]`, sent only
to authenticated requests) and `last_profile_edit` (also authenticated only). Names, bio,
location, links, contact info and the rest are never looked at: minimisation starts here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

from enrichers.base import LookupStatus
from enrichers.http_json.mapping import (
    BAD_PAYLOAD,
    ItemOutcome,
    PayloadShapeError,
    failed,
    map_labels,
    normalise_label,
    parse_timestamp,
)

DEFAULT_TOPIC_MAP: Final[Mapping[str, str]] = MappingProxyType(
    {
        # Deliberately nothing that could reveal a GDPR Art. 9 special category (religion,
        # politics, health, sexual orientation, ...): such labels are unmapped and dropped.
        # "yoga" and "meditation" map to fitness/wellbeing hobbies, not to health.
        "art": "interest.arts",
        "baking": "interest.cooking",
        "board games": "interest.gaming",
        "books": "interest.books",
        "camping": "interest.outdoor.camping",
        "cats": "interest.pets.cats",
        "coffee": "interest.food_drink",
        "cooking": "interest.cooking",
        "cycling": "interest.sports.cycling",
        "design": "interest.design",
        "diy": "interest.diy",
        "dogs": "interest.pets.dogs",
        "fashion": "interest.fashion",
        "film": "interest.film",
        "fitness": "interest.fitness",
        "food": "interest.food_drink",
        "football": "interest.sports.football",
        "gaming": "interest.gaming",
        "gardening": "interest.garden",
        "hiking": "interest.outdoor.hiking",
        "movies": "interest.film",
        "music": "interest.music",
        "open source": "interest.technology.software",
        "pets": "interest.pets",
        "photography": "interest.photography",
        "programming": "interest.technology.software",
        "reading": "interest.books",
        "running": "interest.sports.running",
        "soccer": "interest.sports.football",
        "sports": "interest.sports",
        "sustainability": "interest.sustainability",
        "technology": "interest.technology",
        "travel": "interest.travel",
        "travelling": "interest.travel",
        "traveling": "interest.travel",
        "video games": "interest.gaming",
        "web development": "interest.technology.software",
        "wine": "interest.food_drink",
        "wordpress": "interest.technology.software",
        "writing": "interest.writing",
        "yoga": "interest.fitness.yoga",
    }
)
"""Common Gravatar interest names -> taxonomy keys (names compared case-insensitively)."""


def profile_outcome(
    document: Any,
    *,
    topic_map: Mapping[str, str],
    confidence: float,
    now: datetime,
) -> ItemOutcome:
    """A decoded 200 profile -> matched, with one declared signal per mapped interest.

    A profile without interests (every anonymous lookup, or a person who listed none) is a
    match with no signals. `observed_at` is `last_profile_edit` when given (the interests are
    at least that old as statements), else the lookup time. Anything that is not a v3
    profile object fails with `bad_payload`.
    """
    try:
        if not isinstance(document, dict) or not isinstance(document.get("hash"), str):
            raise PayloadShapeError("not a Gravatar profile object")
        interests = document.get("interests")
        if interests is None:
            interests = []
        if not isinstance(interests, list):
            raise PayloadShapeError("interests is not a list")
        labels: list[tuple[str, float, str | None]] = []
        for entry in interests:
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(name, str):
                raise PayloadShapeError("an interest has no name")
            labels.append((name, confidence, None))
        edited = document.get("last_profile_edit")
        observed = now if edited is None else parse_timestamp(edited, now=now)
        signals, unmapped = map_labels(labels, topic_map, observed_at=observed)
    except PayloadShapeError:
        return failed(BAD_PAYLOAD)
    return ItemOutcome(LookupStatus.MATCHED, None, signals, unmapped)


def effective_topic_map(extra: Mapping[str, str], *, use_default: bool = True) -> dict[str, str]:
    """The default map (if used) overlaid with `extra`, keys normalised."""
    merged = {normalise_label(k): v for k, v in DEFAULT_TOPIC_MAP.items()} if use_default else {}
    merged.update({normalise_label(k): v for k, v in extra.items()})
    return merged
