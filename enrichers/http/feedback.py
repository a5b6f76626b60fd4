"""Reading a provider's rate-limit feedback: `Retry-After` and `X-RateLimit-*` headers.

Both answer "how many seconds until I may call again", or None when the response says
nothing usable. Absolute times (an HTTP date, an epoch reset) are measured against the
response's own `Date` header when it has one, so a skewed local clock does not matter.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime

# X-RateLimit-Reset is a delta in seconds (IETF draft), epoch seconds (GitHub) or epoch
# milliseconds, depending on the provider; the magnitude tells them apart.
_EPOCH_SECONDS = 1e9
_EPOCH_MILLIS = 1e12


def _http_date(value: str) -> float | None:
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _number(value: str) -> float | None:
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def server_now(headers: Mapping[str, str], wall_clock: Callable[[], float] = time.time) -> float:
    """The server's idea of now (epoch seconds): its `Date` header, else our wall clock."""
    date = headers.get("date")
    stamp = _http_date(date) if date else None
    return stamp if stamp is not None else wall_clock()


def retry_after_seconds(
    headers: Mapping[str, str], wall_clock: Callable[[], float] = time.time
) -> float | None:
    """Seconds from `Retry-After` (delta seconds or an HTTP date), never negative."""
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _number(value)
    if seconds is None:
        stamp = _http_date(value)
        if stamp is None:
            return None
        seconds = stamp - server_now(headers, wall_clock)
    return max(0.0, seconds)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # The de-facto `X-RateLimit-*` and the IETF draft's `RateLimit-*` carry the same thing.
    return headers.get(f"x-ratelimit-{name}") or headers.get(f"ratelimit-{name}")


def rate_limit_reset_seconds(
    headers: Mapping[str, str], wall_clock: Callable[[], float] = time.time
) -> float | None:
    """Seconds until the window resets, when `X-RateLimit-Remaining` says none are left."""
    remaining = _header(headers, "remaining")
    reset = _header(headers, "reset")
    if remaining is None or reset is None:
        return None
    left = _number(remaining)
    value = _number(reset)
    if left is None or value is None or left > 0:
        return None
    if value >= _EPOCH_MILLIS:
        value = value / 1000 - server_now(headers, wall_clock)
    elif value >= _EPOCH_SECONDS:
        value = value - server_now(headers, wall_clock)
    return max(0.0, value)


def server_delay(
    headers: Mapping[str, str], wall_clock: Callable[[], float] = time.time
) -> float | None:
    """What the server asks for: `Retry-After` first, else an exhausted window's reset."""
    delay = retry_after_seconds(headers, wall_clock)
    return delay if delay is not None else rate_limit_reset_seconds(headers, wall_clock)
