"""Client-side rate limit for one provider: a token bucket that listens to the server.

The bucket refills at an effective rate, starting at the configured `per_second`, and holds
at most `burst` tokens; every attempt (retries included) takes one. The server's feedback
overrides it:

* `pause_until(t)` (a 429's `Retry-After`, or `X-RateLimit-Remaining: 0` with its reset)
  stops the whole bucket until `t`, then lets one request through and refills from there;
  a pause longer than `max_pause` is not waited out: `acquire` raises `PausedTooLong` so the
  run fails those lookups fast (they are retried next run) instead of stalling for an hour;
* `throttled()` (any 429) multiplies the effective rate by `decrease` — at most once per
  `decrease_interval`, since the many requests in flight when a limit is hit are one event,
  not many — and the rate then climbs back linearly to the configured rate over
  `recovery_seconds` (additive increase, multiplicative decrease, as TCP does).

Waiters are served first come, first served: one lock, and only its holder sleeps, so a
hundred queued requests cost one timer, not a hundred.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

# Float slack: after sleeping exactly (1 - tokens) / rate the refill may land a hair under 1.
_EPSILON = 1e-9


class PausedTooLong(Exception):  # noqa: N818 - a signal to the client, not an error name
    """The server asked for a pause longer than the client is willing to wait."""

    def __init__(self, remaining: float) -> None:
        self.remaining = remaining
        super().__init__(f"rate limit pause of {remaining:.1f}s exceeds the maximum wait")


class RateLimiter:
    """An adaptive token bucket shared by every request of one client."""

    def __init__(
        self,
        per_second: float,
        burst: int,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        max_pause: float = math.inf,
        decrease: float = 0.75,
        floor_fraction: float = 0.05,
        recovery_seconds: float = 20.0,
        decrease_interval: float = 1.0,
    ) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError("per_second must be > 0 and burst >= 1")
        self.configured_rate = float(per_second)
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._max_pause = max_pause
        self._decrease = decrease
        self._floor = self.configured_rate * floor_fraction
        self._recovery_per_second = self.configured_rate / recovery_seconds
        self._decrease_interval = decrease_interval
        self._rate = self.configured_rate
        self._tokens = float(burst)
        self._last = clock()
        self._paused_until = -math.inf
        self._last_decrease = -math.inf
        self._lock = asyncio.Lock()

    @property
    def rate(self) -> float:
        """The effective rate now (requests per second), after 429s and recovery."""
        self._refill(self._clock())
        return self._rate

    @property
    def paused_until(self) -> float:
        """Clock time before which no request is let through (-inf: not paused)."""
        return self._paused_until

    async def acquire(self) -> float:
        """Wait for a token and take it; return the seconds waited.

        Raises PausedTooLong when the server's pause would outlast `max_pause`.
        """
        start = self._clock()
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    wait = self._paused_until - now
                    if wait > self._max_pause:
                        raise PausedTooLong(wait)
                else:
                    self._refill(now)
                    if self._tokens >= 1 - _EPSILON:
                        self._tokens = max(0.0, self._tokens - 1)
                        return now - start
                    wait = (1 - self._tokens) / self._rate
                await self._sleep(wait)

    def pause_until(self, until: float) -> None:
        """Let nothing through before clock time `until`; then one request, then the rate."""
        if until <= self._clock() or until <= self._paused_until:
            return
        self._paused_until = until
        # Refill starts at the end of the pause: time spent paused earns no burst.
        self._tokens = 1.0
        self._last = until

    def throttled(self) -> None:
        """The server said 429: lower the effective rate (once per `decrease_interval`)."""
        now = self._clock()
        self._refill(now)
        # The server is over its limit: whatever burst we saved up is not really there.
        self._tokens = min(self._tokens, 0.0)
        if now - self._last_decrease < self._decrease_interval:
            return
        self._last_decrease = now
        self._rate = max(self._floor, self._rate * self._decrease)

    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed <= 0:
            return
        self._rate = min(self.configured_rate, self._rate + self._recovery_per_second * elapsed)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self._rate)
        self._last = now
