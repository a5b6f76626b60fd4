"""What one provider client did in a run: counters for the run summary and the benchmark."""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


def quantile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q` quantile (0 < q <= 1) of `values`; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class ClientStats:
    """A snapshot of a client's counters."""

    calls: int
    """`request()` calls, whatever their outcome (refused ones included)."""
    attempts: int
    """HTTP requests sent (first tries and retries)."""
    retries: int
    statuses: Mapping[int, int]
    """Responses per HTTP status, over all attempts."""
    throttled: int
    """429 responses."""
    timeouts: int
    connect_errors: int
    """Connection-level failures: refused, reset, closed mid-response."""
    breaker_trips: int
    circuit_rejections: int
    """Calls refused without network because the circuit was open."""
    budget_used: int
    budget_rejections: int
    """Calls refused without network because the budget was spent."""
    failures: Mapping[str, int]
    """Calls that raised, per reason code."""
    latencies: tuple[float, ...]
    """Seconds per attempt, from sending to the body read (limiter waits excluded)."""
    bytes_received: int
    rate_limit_wait_seconds: float
    """Seconds requests spent waiting for the rate limiter (summed over requests)."""

    @property
    def p50(self) -> float:
        """Median attempt latency in seconds."""
        return quantile(self.latencies, 0.50)

    @property
    def p99(self) -> float:
        """99th percentile attempt latency in seconds."""
        return quantile(self.latencies, 0.99)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary for the run summary: counters and p50/p99, not every latency."""

        def ms(seconds: float) -> float | None:
            return None if math.isnan(seconds) else round(seconds * 1000, 3)

        return {
            "calls": self.calls,
            "attempts": self.attempts,
            "retries": self.retries,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "throttled": self.throttled,
            "timeouts": self.timeouts,
            "connect_errors": self.connect_errors,
            "breaker_trips": self.breaker_trips,
            "circuit_rejections": self.circuit_rejections,
            "budget_used": self.budget_used,
            "budget_rejections": self.budget_rejections,
            "failures": dict(sorted(self.failures.items())),
            "latency_p50_ms": ms(self.p50),
            "latency_p99_ms": ms(self.p99),
            "bytes_received": self.bytes_received,
            "rate_limit_wait_seconds": round(self.rate_limit_wait_seconds, 3),
        }


@dataclass
class Counters:
    """The mutable counters behind `ClientStats` (one per client)."""

    calls: int = 0
    attempts: int = 0
    retries: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    throttled: int = 0
    timeouts: int = 0
    connect_errors: int = 0
    circuit_rejections: int = 0
    budget_rejections: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    # A C double array: 100k latencies in 800 kB rather than 100k float objects.
    latencies: array[float] = field(default_factory=lambda: array("d"))
    bytes_received: int = 0
    rate_limit_wait_seconds: float = 0.0

    def snapshot(self, *, breaker_trips: int, budget_used: int) -> ClientStats:
        """A frozen copy."""
        return ClientStats(
            calls=self.calls,
            attempts=self.attempts,
            retries=self.retries,
            statuses=MappingProxyType(dict(self.statuses)),
            throttled=self.throttled,
            timeouts=self.timeouts,
            connect_errors=self.connect_errors,
            breaker_trips=breaker_trips,
            circuit_rejections=self.circuit_rejections,
            budget_used=budget_used,
            budget_rejections=self.budget_rejections,
            failures=MappingProxyType(dict(self.failures)),
            latencies=tuple(self.latencies),
            bytes_received=self.bytes_received,
            rate_limit_wait_seconds=self.rate_limit_wait_seconds,
        )
