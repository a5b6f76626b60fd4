"""The synthetic world the local provider server observes, and how each provider observes it.

A world file (`data/world.jsonl`, written by `enrich synth`) holds one JSON object per
synthetic person: its id, the SHA-256 of each of its normalised e-mail addresses and of each
of its E.164 phone numbers, and its true interests as taxonomy keys with a strength in (0, 1)::

    {"person_id": "P000042", "email_sha256": ["5f1c..."], "phone_sha256": ["9a0e..."],
     "interests": {"interest.cooking": 0.71, "interest.outdoor.hiking": 0.64}}

The server looks a request's identifier up in it (a clear e-mail or an E.164 phone is hashed
on receipt), so every identifier form of one person leads to the same person. An identifier
two people share (a household address) belongs to the first of them in the file, as a
provider keys one record per address. Without a world, every identifier is a person of its
own whose interests are drawn from a hash of the identifier (`SimProfile.prior` per topic).

Observation. A provider matches a person with probability `match_rate`, then reports each
true topic with probability `hit_rate` and each other topic with `false_positive_rate`. A
report's score is drawn so that it is calibrated: with pi the share of reports that are true
(computed from the rates and the world's interest counts) and k the `concentration`, a true
report's probability is Beta(pi*k + 1, (1-pi)*k) and a false one's Beta(pi*k, (1-pi)*k + 1),
which makes P(true | score p) = p exactly. `calibration` then scales the log-odds (> 1:
over-confident). Everything is drawn from a generator seeded by (seed, provider, person), so
one person gets the same answer from one provider every time, whatever identifier is used.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from enrichers.http_json.config import TOPIC_PATTERN
from enrichers.testing.knobs import Endpoint, SimProfile

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")

EMAIL: Final = "email"
PHONE: Final = "phone"

# Topic -> label at each simulated provider. The topics are those `enrich synth` writes into
# the world (its product categories under `interest.`, and its declared interest topics).
_LABELS: Final[tuple[tuple[str, str, str, str], ...]] = (
    ("interest.outdoor.hiking", "hiking", "Outdoor & Hiking", "Hiking"),
    ("interest.home.kitchen", "kitchenware", "Home & Kitchen", "Kitchen gadgets"),
    ("interest.fashion.women", "womens fashion", "Women's Fashion", "Fashion"),
    ("interest.kids.toys", "toys", "Kids & Toys", "Toys"),
    ("interest.beauty.skincare", "skincare", "Beauty & Skincare", "Skincare"),
    ("interest.sports.running", "running", "Running", "Running"),
    ("interest.electronics.audio", "audio", "Audio & Hi-Fi", "Hi-fi"),
    ("interest.books.fiction", "fiction", "Fiction Books", "Novels"),
    ("interest.garden.tools", "gardening", "Garden Tools", "Gardening"),
    ("interest.pets.dogs", "dogs", "Dog Owners", "Dogs"),
    ("interest.travel", "travel", "Travel", "Travel"),
    ("interest.cooking", "cooking", "Home Cooking", "Cooking"),
    ("interest.sustainability", "sustainability", "Sustainability", "Sustainability"),
    ("interest.fitness", "fitness", "Fitness", "Fitness"),
)

TOPICS: Final[tuple[str, ...]] = tuple(row[0] for row in _LABELS)
"""Every topic the simulated providers can report, in report order."""

LABELS: Final[Mapping[Endpoint, Mapping[str, str]]] = MappingProxyType(
    {
        endpoint: MappingProxyType({row[0]: row[column] for row in _LABELS})
        for column, endpoint in enumerate(
            (Endpoint.PERSON, Endpoint.SEGMENTS, Endpoint.GRAVATAR), start=1
        )
    }
)
"""Per provider: topic -> the label it answers with (the entries' `topic_map` inverts it)."""


def sha256_hex(text: str) -> str:
    """SHA-256 hex of `text` (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def identity_key(form: str, value: str) -> tuple[str, str] | None:
    """(email|phone, SHA-256 hex) for an identifier in `form`, or None if it is malformed.

    `email` is trimmed and lower-cased before hashing, `phone_e164` hashed as it is: the
    normalisation `IdentifierForm` documents.
    """
    if form in ("email_sha256", "phone_sha256"):
        digest = value.strip().lower()
        if not _HEX64.match(digest):
            return None
        return (EMAIL if form == "email_sha256" else PHONE), digest
    if form == "phone_e164":
        return (PHONE, sha256_hex(value)) if _E164.match(value) else None
    if form == "email":
        address = value.strip().lower()
        return (EMAIL, sha256_hex(address)) if "@" in address else None
    return None


Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Topic = Annotated[str, Field(pattern=TOPIC_PATTERN)]
Strength = Annotated[float, Field(gt=0.0, lt=1.0)]


class WorldLine(BaseModel):
    """One line of a world file: one synthetic person."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    person_id: Annotated[str, Field(min_length=1)]
    email_sha256: list[Hex64] = Field(default_factory=list)
    phone_sha256: list[Hex64] = Field(default_factory=list)
    interests: dict[Topic, Strength] = Field(default_factory=dict)


class WorldError(ValueError):
    """A world file that cannot be used; the message names the file and lines."""


@dataclass(frozen=True)
class World:
    """People, their identifiers and their true interests (see the module docstring)."""

    person_ids: tuple[str, ...]
    interests: tuple[Mapping[str, float], ...]
    index: Mapping[tuple[str, str], int]
    """(email|phone, SHA-256 hex) -> position in person_ids."""

    @classmethod
    def from_lines(cls, lines: Iterable[WorldLine]) -> World:
        """A world of these people; a shared identifier goes to the first one."""
        ids: list[str] = []
        interests: list[Mapping[str, float]] = []
        index: dict[tuple[str, str], int] = {}
        for position, line in enumerate(lines):
            ids.append(line.person_id)
            interests.append(MappingProxyType(dict(line.interests)))
            for digest in line.email_sha256:
                index.setdefault((EMAIL, digest), position)
            for digest in line.phone_sha256:
                index.setdefault((PHONE, digest), position)
        return cls(tuple(ids), tuple(interests), MappingProxyType(index))

    @classmethod
    def load(cls, path: Path) -> World:
        """Read a world file; WorldError listing up to ten bad lines by number."""
        problems: list[str] = []
        lines: list[WorldLine] = []
        with Path(path).open(encoding="utf-8") as handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    lines.append(WorldLine.model_validate(json.loads(text)))
                except json.JSONDecodeError:
                    problems.append(f"{path}:{number}: not a JSON object")
                except ValidationError as exc:
                    first = exc.errors(include_url=False, include_input=False)[0]
                    where = ".".join(str(part) for part in first["loc"]) or "line"
                    problems.append(f"{path}:{number}: {where}: {first['msg']}")
                if len(problems) >= 10:  # enough to see the pattern
                    break
        if problems:
            raise WorldError("bad world file:\n" + "\n".join(problems))
        return cls.from_lines(lines)

    def __len__(self) -> int:
        return len(self.person_ids)

    def find(self, form: str, value: str) -> int | None:
        """The person an identifier belongs to, or None."""
        key = identity_key(form, value)
        return None if key is None else self.index.get(key)

    def mean_topics(self) -> float:
        """Average number of reportable topics (`TOPICS`) a person truly has."""
        if not self.interests:
            return 0.0
        known = set(TOPICS)
        return sum(len(known.intersection(i)) for i in self.interests) / len(self.interests)


@dataclass(frozen=True)
class Observation:
    """What one provider knows about one matched person."""

    scores: tuple[tuple[str, float], ...]
    """(topic, probability) per reported topic, in `TOPICS` order."""
    age_days: int
    """How long ago the provider last updated the record."""


def _seeded(*parts: str | int) -> random.Random:
    material = "\x1f".join(str(p) for p in parts).encode("utf-8")
    digest = hashlib.blake2b(material, digest_size=16, person=b"observe").digest()
    return random.Random(int.from_bytes(digest, "big"))  # a simulation, not a secret


def report_share(profile: SimProfile, mean_true: float, topics: int = len(TOPICS)) -> float:
    """pi: the share of a provider's reports that are true, kept inside [0.02, 0.98]."""
    hits = profile.hit_rate * mean_true
    false = profile.false_positive_rate * max(0.0, topics - mean_true)
    if hits + false <= 0:
        return 0.5
    return min(0.98, max(0.02, hits / (hits + false)))


def drawn_interests(seed: int, person: str, prior: float) -> dict[str, float]:
    """Without a world: the interests of the person behind one identifier, from its hash."""
    rng = _seeded(seed, "truth", person)
    return {t: 0.5 + 0.49 * rng.random() for t in TOPICS if rng.random() < prior}


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def observe(
    *,
    seed: int,
    endpoint: Endpoint,
    person: str,
    truth: Mapping[str, float],
    profile: SimProfile,
    share_true: float,
) -> Observation | None:
    """One provider's view of one person, or None if it has no record of them."""
    rng = _seeded(seed, str(endpoint), person)
    if rng.random() >= profile.match_rate:
        return None
    a = share_true * profile.concentration
    b = (1.0 - share_true) * profile.concentration
    scores: list[tuple[str, float]] = []
    for topic in TOPICS:
        held = topic in truth
        if rng.random() >= (profile.hit_rate if held else profile.false_positive_rate):
            continue
        p = rng.betavariate(a + 1.0, b) if held else rng.betavariate(a, b + 1.0)
        p = min(max(p, 1e-4), 1.0 - 1e-4)
        reported = 1.0 / (1.0 + math.exp(-profile.calibration * _logit(p)))
        scores.append((topic, reported))
    return Observation(tuple(scores), age_days=rng.randrange(1, 180))
