"""Knobs of the local provider server: fault injection and each simulated provider's behaviour.

`Knobs` is one frozen, validated model; the server swaps it whole when something changes (the
`ProviderServer.set_knobs` method, or `POST /_admin/knobs` with a partial JSON object, merged
into the current knobs by `Knobs.updated`). Faults are drawn from uniforms that depend only on
the seed, the request's identifiers and how often that same request was seen before
(`draws`), not on arrival order, so a run under concurrency fails the same calls every time:
a request that answers 503 on its first attempt answers the same on a rerun, and its retry
draws afresh. A request meets the knobs in this order:

    storm (429 + Retry-After) -> rate limit (429 + X-RateLimit-*) -> hang -> latency
      -> timeout (a late answer) -> error (5xx) -> the answer -> malformed (broken JSON)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class Endpoint(StrEnum):
    """The simulated providers, one per endpoint shape."""

    PERSON = "person"
    """`GET /v1/person?<form>=<value>`: one identifier per request (a PDL-like person API)."""
    SEGMENTS = "segments"
    """`POST /v1/segments/batch`: up to `MAX_BATCH` identifiers (an affinity-segment API)."""
    GRAVATAR = "gravatar"
    """`GET /v3/profiles/{sha256}`: Gravatar's v3 profile shape, email hashes only."""


class SimProfile(BaseModel):
    """How one simulated provider observes people (see `enrichers.testing.world`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match_rate: Probability = 0.6
    """Share of the people it has a record of (the rest: no match)."""
    hit_rate: Probability = 0.7
    """Share of a matched person's true interests it reports."""
    false_positive_rate: Probability = 0.05
    """Share of the topics a matched person does not have that it reports anyway."""
    calibration: Annotated[float, Field(gt=0, le=10)] = 1.0
    """Factor on the log-odds of a calibrated score: 1 calibrated, > 1 over-confident,
    < 1 under-confident."""
    concentration: Annotated[float, Field(gt=0, le=1000)] = 3.0
    """How little a score says: small spreads true reports towards 1 and false ones towards 0;
    large gathers every score near the share of reports that are true."""
    prior: Probability = 0.2
    """Without a world: the chance that an unknown identifier's person has each topic."""


DEFAULT_PROFILES: Final[Mapping[Endpoint, SimProfile]] = {
    Endpoint.PERSON: SimProfile(
        match_rate=0.55, hit_rate=0.6, false_positive_rate=0.05, calibration=1.4
    ),
    Endpoint.SEGMENTS: SimProfile(
        match_rate=0.7, hit_rate=0.5, false_positive_rate=0.08, calibration=0.8
    ),
    Endpoint.GRAVATAR: SimProfile(match_rate=0.25, hit_rate=0.8, false_positive_rate=0.02),
}
"""Three providers that differ the way real ones do: coverage, recall, noise, honesty."""


def _default_profiles() -> dict[Endpoint, SimProfile]:
    return dict(DEFAULT_PROFILES)


class Knobs(BaseModel):
    """Everything that shapes the server's answers; all faults are off by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    """Seeds the faults and every simulated observation."""
    latency_ms: Annotated[float, Field(ge=0, le=60_000)] = 0.0
    """Added before every answer."""
    jitter_ms: Annotated[float, Field(ge=0, le=60_000)] = 0.0
    """Latency varies uniformly by up to this much either way (never below zero)."""
    error_rate: Probability = 0.0
    """Share of requests answered with `error_status`."""
    error_status: Annotated[int, Field(ge=500, le=599)] = 503
    rate_limit: Annotated[float | None, Field(gt=0)] = None
    """Requests per second allowed over all provider endpoints together, counted in fixed
    windows of `rate_limit_window_seconds`; over it: 429 with Retry-After. Every answer then
    carries X-RateLimit-Limit/Remaining/Reset (Reset: seconds until the window ends)."""
    rate_limit_window_seconds: Annotated[float, Field(gt=0, le=3600)] = 1.0
    storm_requests: Annotated[int, Field(ge=0)] = 0
    """A 429 storm: the next this many requests get 429 with `Retry-After` (armed when set)."""
    storm_seconds: Annotated[float, Field(ge=0, le=3600)] = 0.0
    """A 429 storm: every request for this many seconds from when it is set gets 429."""
    storm_retry_after: Annotated[float, Field(ge=0, le=3600)] = 1.0
    """Retry-After of a storm's 429s, in seconds."""
    malformed_rate: Probability = 0.0
    """Share of answers whose JSON body is cut off (status 200 stays)."""
    timeout_rate: Probability = 0.0
    """Share of requests that answer only after `timeout_seconds` (past a client's timeout)."""
    timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    hang_rate: Probability = 0.0
    """Share of requests that never answer (until the server stops)."""
    profiles: dict[Endpoint, SimProfile] = Field(default_factory=_default_profiles)
    """Each simulated provider's observation model."""

    def updated(self, changes: Mapping[str, Any]) -> Knobs:
        """These knobs with `changes` applied; `profiles` entries merge field by field.

        Raises pydantic's ValidationError naming every bad field.
        """
        merged = self.model_dump(mode="json")
        for key, value in changes.items():
            if key == "profiles" and isinstance(value, Mapping):
                profiles = merged["profiles"]
                for name, fields in value.items():
                    held = profiles.get(str(name), {})
                    profiles[str(name)] = (
                        {**held, **fields} if isinstance(fields, Mapping) else fields
                    )
            else:
                merged[key] = value
        return Knobs.model_validate(merged)

    @property
    def window_limit(self) -> int | None:
        """Requests allowed per rate-limit window (at least one), or None without a limit."""
        if self.rate_limit is None:
            return None
        return max(1, math.floor(self.rate_limit * self.rate_limit_window_seconds))


STORM_KNOBS: Final = frozenset({"storm_requests", "storm_seconds"})
"""Setting either (re)arms the storm from that moment."""


@dataclass(frozen=True)
class Draws:
    """Independent uniforms in [0, 1) deciding one request's faults."""

    hang: float
    timeout: float
    error: float
    malformed: float
    jitter: float


def request_key(endpoint: str, values: list[str]) -> bytes:
    """A short key for "the same request": its endpoint and identifiers, in order."""
    digest = hashlib.blake2b(endpoint.encode(), digest_size=16)
    for value in values:
        digest.update(b"\x00" + value.encode())
    return digest.digest()


def draws(seed: int, key: bytes, attempt: int) -> Draws:
    """The uniforms for the `attempt`-th sighting (0 first) of the request `key`."""
    material = f"{seed}:{attempt}:".encode() + key
    raw = hashlib.blake2b(material, digest_size=40, person=b"faults").digest()
    u = [int.from_bytes(raw[i : i + 8], "big") / 2**64 for i in range(0, 40, 8)]
    return Draws(hang=u[0], timeout=u[1], error=u[2], malformed=u[3], jitter=u[4])


def seconds_text(seconds: float) -> str:
    """A header value in seconds: whole seconds when whole, else milliseconds precision.

    Real APIs send whole seconds; this server also sends fractions (our client reads them) so
    that tests can use sub-second pauses.
    """
    seconds = max(0.0, seconds)
    if seconds == int(seconds):
        return str(int(seconds))
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


class FaultState:
    """The mutable part of the faults: the storm and the rate-limit window (one event loop)."""

    def __init__(self) -> None:
        self.storm_left = 0
        self.storm_until = 0.0
        self.window_start = -math.inf
        self.window_count = 0

    def arm_storm(self, knobs: Knobs, now: float) -> None:
        """Start the storm the knobs describe, from `now`."""
        self.storm_left = knobs.storm_requests
        self.storm_until = now + knobs.storm_seconds if knobs.storm_seconds else 0.0

    def in_storm(self, now: float) -> bool:
        """Whether this request falls in the storm (and count it against a request storm)."""
        if now < self.storm_until:
            return True
        if self.storm_left > 0:
            self.storm_left -= 1
            return True
        return False

    def admit(self, knobs: Knobs, now: float) -> tuple[bool, dict[str, str]]:
        """(allowed?, rate-limit headers) for one request arriving at `now`."""
        limit = knobs.window_limit
        if limit is None:
            return True, {}
        window = knobs.rate_limit_window_seconds
        if now - self.window_start >= window:
            # Windows are aligned to the first request after a quiet spell.
            elapsed = now - self.window_start
            self.window_start = now if math.isinf(elapsed) else now - math.fmod(elapsed, window)
            self.window_count = 0
        reset = seconds_text(self.window_start + window - now)
        if self.window_count >= limit:
            headers = {
                "Retry-After": reset,
                "X-RateLimit-Limit": str(limit),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": reset,
            }
            return False, headers
        self.window_count += 1
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(limit - self.window_count),
            "X-RateLimit-Reset": reset,
        }
        return True, headers
