"""ProviderClient: retries, rate limit and server feedback, breaker, budget, redaction.

Behaviour tests drive the client through `httpx.MockTransport` with a fake clock and sleep,
so backoff, pauses and cool-downs are checked exactly and instantly; a few integration tests
run it against a real HTTP server on localhost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import httpx
import pytest

from enrichers.base import (
    Billing,
    BreakerSettings,
    BudgetExhaustedError,
    CircuitOpenError,
    ProviderError,
    ProviderSettings,
    RateLimitSettings,
    TerminalProviderError,
    TransientProviderError,
)
from enrichers.http.breaker import BreakerState, CircuitBreaker, CircuitOpen
from enrichers.http.client import ProviderClient, json_or_error
from enrichers.http.feedback import rate_limit_reset_seconds, retry_after_seconds
from enrichers.http.ratelimit import PausedTooLong, RateLimiter
from enrichers.http.redact import redact_path, redact_url
from enrichers.http.stats import quantile
from enrichers.http.transport import AiohttpTransport
from tests.enrichers.test_transport import HangupTolerant

T = TypeVar("T")
URL = "https://api.example.test/v1/person"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Drive one coroutine (pytest-asyncio is not a dependency)."""
    return asyncio.run(coro)


class FakeTime:
    """A monotonic clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


Step = int | httpx.Response | type[httpx.RequestError]
"""A scripted answer: a status, a full response, or an httpx exception class to raise."""


class Script:
    """A MockTransport handler answering from a script and recording when it was called."""

    def __init__(self, steps: Sequence[Step], time: FakeTime | None = None) -> None:
        self.steps = list(steps)
        self.time = time
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.time is not None:
            self.times.append(self.time.now)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, httpx.Response):
            return step
        if isinstance(step, int):
            return httpx.Response(step, json={"ok": step < 400})
        raise step("scripted failure", request=request)

    @property
    def calls(self) -> int:
        return len(self.requests)


def settings(**overrides: Any) -> ProviderSettings:
    """Provider settings with a generous rate limit, so only the tested knob matters."""
    values: dict[str, Any] = {
        "name": "acme",
        "type": "http_json",
        "rate_limit": RateLimitSettings(per_second=1000, burst=1000),
        "breaker": BreakerSettings(failures=100, cooldown_seconds=10),
    }
    values.update(overrides)
    return ProviderSettings(**values)


def client_for(
    script: Script,
    fake: FakeTime,
    *,
    billing: Billing = Billing.PER_CALL,
    jitter: float = 1.0,
    headers: dict[str, str] | None = None,
    **overrides: Any,
) -> ProviderClient:
    return ProviderClient(
        settings(**overrides),
        billing=billing,
        transport=httpx.MockTransport(script),
        headers=headers,
        clock=fake.clock,
        sleep=fake.sleep,
        jitter=lambda: jitter,
    )


def outcome(client: ProviderClient, url: str = URL, **kwargs: Any) -> int | str:
    """Status of the returned response, or the reason of the raised ProviderError."""

    async def go() -> int | str:
        try:
            return (await client.request("GET", url, **kwargs)).status_code
        except ProviderError as exc:
            return exc.reason

    return run(go())


# --- retries: what is retried, what is terminal --------------------------------------------


@pytest.mark.parametrize(
    ("steps", "expected", "attempts"),
    [
        pytest.param([200], 200, 1, id="ok"),
        pytest.param([404], 404, 1, id="404-is-no-match"),
        pytest.param([500, 200], 200, 2, id="500-retried"),
        pytest.param([502, 503, 504, 200], 200, 4, id="5xx-retried"),
        pytest.param([429, 200], 200, 2, id="429-retried"),
        pytest.param([httpx.ReadTimeout, 200], 200, 2, id="read-timeout-retried"),
        pytest.param([httpx.ConnectTimeout, 200], 200, 2, id="connect-timeout-retried"),
        pytest.param([httpx.PoolTimeout, 200], 200, 2, id="pool-timeout-retried"),
        pytest.param([httpx.ConnectError, 200], 200, 2, id="connect-error-retried"),
        pytest.param([httpx.ReadError, 200], 200, 2, id="read-error-retried"),
        pytest.param([httpx.RemoteProtocolError, 200], 200, 2, id="server-hung-up-retried"),
        pytest.param([500] * 6, "server_error", 5, id="5xx-exhausts-retries"),
        pytest.param([429] * 22, "rate_limited", 21, id="429-exhausts-throttle-retries"),
        pytest.param([429, 500, 429, 500, 200], 200, 5, id="429s-and-5xx-counted-apart"),
        pytest.param([httpx.ReadTimeout] * 6, "timeout", 5, id="timeouts-exhaust-retries"),
        pytest.param([httpx.ConnectError] * 6, "connect_error", 5, id="refused-exhausts"),
        pytest.param([400, 200], "client_error_400", 1, id="400-terminal"),
        pytest.param([401, 200], "client_error_401", 1, id="401-terminal"),
        pytest.param([403, 200], "client_error_403", 1, id="403-terminal"),
        pytest.param([408, 200], "client_error_408", 1, id="408-terminal"),
        pytest.param([422, 200], "client_error_422", 1, id="422-terminal"),
        pytest.param([301, 200], "unexpected_status_301", 1, id="redirect-terminal"),
        pytest.param([httpx.UnsupportedProtocol], "invalid_request", 1, id="bad-scheme"),
        pytest.param([httpx.LocalProtocolError], "invalid_request", 1, id="bad-request"),
        pytest.param([httpx.DecodingError], "malformed_response", 1, id="bad-encoding"),
    ],
)
def test_retries_only_transient_failures(
    steps: list[Step], expected: int | str, attempts: int
) -> None:
    fake = FakeTime()
    script = Script(steps, fake)
    client = client_for(script, fake, retries=4)
    assert outcome(client) == expected
    assert script.calls == attempts
    stats = client.stats
    assert (stats.calls, stats.attempts, stats.retries) == (1, attempts, attempts - 1)
    assert len(stats.latencies) == attempts


@pytest.mark.parametrize(
    ("ok_statuses", "status", "expected"),
    [
        pytest.param((404,), 404, 404, id="default-404-ok"),
        pytest.param((), 404, "client_error_404", id="404-not-ok"),
        pytest.param((404, 410), 410, 410, id="410-ok"),
        pytest.param((404,), 410, "client_error_410", id="410-not-ok"),
    ],
)
def test_ok_statuses_are_returned(
    ok_statuses: tuple[int, ...], status: int, expected: int | str
) -> None:
    fake = FakeTime()
    client = client_for(Script([status]), fake)
    assert outcome(client, ok_statuses=ok_statuses) == expected


@pytest.mark.parametrize(
    ("jitter", "backoff", "max_backoff", "delays"),
    [
        pytest.param(1.0, 0.5, 30.0, [0.5, 1.0, 2.0, 4.0], id="doubling"),
        pytest.param(1.0, 0.5, 1.5, [0.5, 1.0, 1.5, 1.5], id="capped"),
        pytest.param(0.5, 0.5, 30.0, [0.25, 0.5, 1.0, 2.0], id="full-jitter-half"),
        pytest.param(0.0, 0.5, 30.0, [], id="full-jitter-zero-no-sleep"),
        pytest.param(1.0, 0.0, 30.0, [], id="no-backoff"),
    ],
)
def test_backoff_is_full_jitter_exponential(
    jitter: float, backoff: float, max_backoff: float, delays: list[float]
) -> None:
    fake = FakeTime()
    client = client_for(
        Script([503]),
        fake,
        jitter=jitter,
        backoff_seconds=backoff,
        max_backoff_seconds=max_backoff,
        retries=4,
    )
    assert outcome(client) == "server_error"
    assert fake.sleeps == delays


def _date(offset: float = 0.0) -> str:
    return format_datetime(EPOCH + timedelta(seconds=offset), usegmt=True)


@pytest.mark.parametrize(
    ("headers", "sleeps"),
    [
        pytest.param({"Retry-After": "7"}, [7.0], id="seconds"),
        pytest.param({"Retry-After": "0"}, [], id="zero"),
        pytest.param({"Retry-After": _date(12), "Date": _date()}, [12.0], id="http-date"),
        pytest.param({"Retry-After": _date(-5), "Date": _date()}, [], id="date-in-past"),
        pytest.param({"Retry-After": "soon"}, [0.5], id="garbage-falls-back-to-backoff"),
    ],
)
def test_retry_after_on_5xx_wins_over_backoff(headers: dict[str, str], sleeps: list[float]) -> None:
    fake = FakeTime()
    script = Script([httpx.Response(503, headers=headers), 200], fake)
    client = client_for(script, fake, backoff_seconds=0.5)
    assert outcome(client) == 200
    assert fake.sleeps == sleeps


def test_retry_after_longer_than_max_backoff_gives_up_at_once() -> None:
    fake = FakeTime()
    script = Script([httpx.Response(503, headers={"Retry-After": "3600"}), 200], fake)
    client = client_for(script, fake, max_backoff_seconds=30)
    assert outcome(client) == "server_error"
    assert script.calls == 1
    assert fake.sleeps == []


# --- server feedback: the whole client pauses ----------------------------------------------


@pytest.mark.parametrize(
    ("first", "pause"),
    [
        pytest.param(httpx.Response(429, headers={"Retry-After": "5"}), 5.0, id="429-retry-after"),
        pytest.param(
            httpx.Response(429, headers={"Retry-After": _date(8), "Date": _date()}),
            8.0,
            id="429-retry-after-date",
        ),
        pytest.param(
            httpx.Response(429, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "4"}),
            4.0,
            id="429-reset-delta",
        ),
        pytest.param(
            httpx.Response(
                200,
                headers={
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(int(EPOCH.timestamp()) + 6),
                    "Date": _date(),
                },
            ),
            6.0,
            id="200-window-spent-epoch-reset",
        ),
        pytest.param(
            httpx.Response(200, headers={"RateLimit-Remaining": "0", "RateLimit-Reset": "3"}),
            3.0,
            id="200-window-spent-ietf",
        ),
        pytest.param(
            httpx.Response(200, headers={"X-RateLimit-Remaining": "5", "X-RateLimit-Reset": "9"}),
            0.0,
            id="200-window-not-spent",
        ),
        pytest.param(httpx.Response(429), 0.0, id="429-without-hint"),
    ],
)
def test_server_feedback_pauses_the_whole_client(first: httpx.Response, pause: float) -> None:
    """A later, independent call waits until the pause the server asked for is over."""
    fake = FakeTime()
    script = Script([first, 200], fake)
    client = client_for(script, fake, retries=0, throttle_retries=0)
    start = fake.now
    run(_swallow(client.request("GET", URL)))
    assert outcome(client, URL + "/other") == 200
    # a 429 also drains the bucket, so the next token is one interval (~1 ms here) away
    assert script.times[1] - start == pytest.approx(pause, abs=0.002)


async def _swallow(call: Coroutine[Any, Any, Any]) -> None:
    with suppress(ProviderError):
        await call


def test_429_retry_is_held_by_the_pause_not_slept_twice() -> None:
    fake = FakeTime()
    script = Script([httpx.Response(429, headers={"Retry-After": "5"}), 200], fake)
    client = client_for(script, fake, backoff_seconds=100, max_backoff_seconds=30)
    assert outcome(client) == 200
    assert script.times[1] - script.times[0] == pytest.approx(5.0)
    assert client.stats.throttled == 1
    assert client.stats.rate_limit_wait_seconds == pytest.approx(5.0)


def test_pause_longer_than_max_backoff_fails_fast_without_network() -> None:
    fake = FakeTime()
    script = Script([httpx.Response(429, headers={"Retry-After": "3600"}), 200], fake)
    client = client_for(script, fake, max_backoff_seconds=30)
    assert outcome(client) == "rate_limited"
    assert outcome(client, URL + "/2") == "rate_limited"
    assert script.calls == 1
    fake.now += 3600
    assert outcome(client, URL + "/3") == 200
    assert client.stats.failures == {"rate_limited": 2}


def test_429s_lower_the_rate_once_per_second_and_it_recovers_slowly() -> None:
    fake = FakeTime()
    script = Script([429, 429, 200], fake)
    client = client_for(
        script,
        fake,
        rate_limit=RateLimitSettings(per_second=100, burst=10),
        retries=0,
        throttle_retries=0,
    )
    run(_swallow(client.request("GET", URL)))
    run(_swallow(client.request("GET", URL)))  # same second: one congestion event
    # the second call waited one token (1/75 s) and the rate crept up meanwhile
    assert client.rate == pytest.approx(75.0, abs=0.1)
    fake.now += 2.0
    assert client.rate == pytest.approx(75.0 + 100 / 20 * 2.0, abs=0.1)
    fake.now += 60.0
    assert client.rate == pytest.approx(100.0)


# --- the token bucket ----------------------------------------------------------------------


def _acquire_times(limiter: RateLimiter, fake: FakeTime, n: int) -> list[float]:
    async def go() -> list[float]:
        times = []
        for _ in range(n):
            await limiter.acquire()
            times.append(round(fake.now - 1000.0, 9))
        return times

    return run(go())


@pytest.mark.parametrize(
    ("rate", "burst", "times"),
    [
        pytest.param(2.0, 3, [0, 0, 0, 0.5, 1.0, 1.5], id="burst-then-rate"),
        pytest.param(10.0, 1, [0, 0.1, 0.2, 0.3], id="no-burst"),
        pytest.param(0.5, 1, [0, 2.0, 4.0], id="slow"),
    ],
)
def test_token_bucket_spaces_requests(rate: float, burst: int, times: list[float]) -> None:
    fake = FakeTime()
    limiter = RateLimiter(rate, burst, clock=fake.clock, sleep=fake.sleep)
    assert _acquire_times(limiter, fake, len(times)) == pytest.approx(times)


def test_token_bucket_refills_while_idle_up_to_burst() -> None:
    fake = FakeTime()
    limiter = RateLimiter(1.0, 2, clock=fake.clock, sleep=fake.sleep)
    _acquire_times(limiter, fake, 2)
    fake.now += 100.0
    assert _acquire_times(limiter, fake, 3) == pytest.approx([100, 100, 101])


def test_pause_then_one_request_then_the_rate() -> None:
    fake = FakeTime()
    limiter = RateLimiter(4.0, 10, clock=fake.clock, sleep=fake.sleep)
    limiter.pause_until(fake.now + 5.0)
    limiter.pause_until(fake.now + 2.0)  # a shorter pause never cuts a longer one
    assert _acquire_times(limiter, fake, 3) == pytest.approx([5.0, 5.25, 5.5])


def test_limiter_refuses_to_wait_out_a_pause_longer_than_max_pause() -> None:
    fake = FakeTime()
    limiter = RateLimiter(1.0, 1, clock=fake.clock, sleep=fake.sleep, max_pause=30.0)
    limiter.pause_until(fake.now + 31.0)
    with pytest.raises(PausedTooLong):
        run(limiter.acquire())
    assert fake.sleeps == []


def test_throttling_never_drops_below_the_floor() -> None:
    fake = FakeTime()
    limiter = RateLimiter(100.0, 1, clock=fake.clock, sleep=fake.sleep, recovery_seconds=1e9)
    for _ in range(50):
        limiter.throttled()
        fake.now += 1.0
    assert limiter.rate == pytest.approx(5.0, rel=1e-3)


def test_waiters_are_served_in_arrival_order_at_the_rate() -> None:
    async def go() -> list[int]:
        limiter = RateLimiter(1000.0, 1, clock=time.monotonic, sleep=asyncio.sleep)
        order: list[int] = []

        async def one(i: int) -> None:
            await limiter.acquire()
            order.append(i)

        await asyncio.gather(*(one(i) for i in range(20)))
        return order

    assert run(go()) == list(range(20))


# --- circuit breaker -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "state", "trips"),
    [
        pytest.param("fff", BreakerState.OPEN, 1, id="opens-after-3"),
        pytest.param("ffsff", BreakerState.CLOSED, 0, id="success-resets-count"),
        pytest.param("fff+", BreakerState.HALF_OPEN, 1, id="half-open-after-cooldown"),
        pytest.param("fff+tf", BreakerState.OPEN, 2, id="failed-trial-reopens"),
        pytest.param("fff+ts", BreakerState.CLOSED, 1, id="trial-success-closes"),
        pytest.param("fff+tsfff", BreakerState.OPEN, 2, id="trips-again"),
    ],
)
def test_breaker_state_machine(events: str, state: BreakerState, trips: int) -> None:
    """f/s: a call fails/succeeds; +: the cool-down passes; t: the next call is admitted."""
    fake = FakeTime()
    breaker = CircuitBreaker(3, 10.0, clock=fake.clock)
    trial = None
    for event in events:
        if event == "+":
            fake.now += 10.0
        elif event == "t":
            trial = breaker.admit()
            assert trial.trial
        else:
            ticket = trial or breaker.admit()
            trial = None
            (breaker.failure if event == "f" else breaker.success)(ticket)
    assert (breaker.state, breaker.trips) == (state, trips)


def test_breaker_half_open_admits_one_trial_and_cancellation_frees_it() -> None:
    fake = FakeTime()
    breaker = CircuitBreaker(1, 5.0, clock=fake.clock)
    breaker.failure(breaker.admit())
    with pytest.raises(CircuitOpen):
        breaker.admit()
    fake.now += 5.0
    trial = breaker.admit()
    with pytest.raises(CircuitOpen):
        breaker.admit()
    breaker.release(trial)  # the trial was cancelled: the next call becomes the trial
    assert breaker.admit().trial


def test_breaker_ignores_stragglers_from_before_it_opened() -> None:
    fake = FakeTime()
    breaker = CircuitBreaker(2, 5.0, clock=fake.clock)
    early = [breaker.admit() for _ in range(4)]
    breaker.failure(early[0])
    breaker.failure(early[1])
    assert breaker.state is BreakerState.OPEN
    breaker.success(early[2])  # in flight when it opened: must not close it
    breaker.failure(early[3])  # nor count as a second trip
    assert (breaker.state, breaker.trips) == (BreakerState.OPEN, 1)
    with pytest.raises(CircuitOpen):
        breaker.recheck(early[2])  # and its retries stop


def test_client_breaker_opens_refuses_without_network_then_trial() -> None:
    fake = FakeTime()
    script = Script([500, 500, 500, 500, 200], fake)
    client = client_for(
        script, fake, retries=0, breaker=BreakerSettings(failures=3, cooldown_seconds=10)
    )
    assert [outcome(client) for _ in range(4)] == ["server_error"] * 3 + ["circuit_open"]
    assert script.calls == 3
    assert client.breaker_state is BreakerState.OPEN
    fake.now += 10.0
    assert outcome(client) == "server_error"  # the trial fails: open again
    assert outcome(client) == "circuit_open"
    fake.now += 10.0
    assert outcome(client) == 200  # the trial succeeds: closed
    assert outcome(client) == 200
    stats = client.stats
    assert (stats.breaker_trips, stats.circuit_rejections, script.calls) == (2, 2, 6)
    assert str(client.breaker_state) == "closed"


def test_breaker_counts_calls_not_attempts_and_4xx_is_not_a_failure() -> None:
    fake = FakeTime()
    script = Script([500, 500, 400, 500, 500, 500, 500, 500], fake)
    client = client_for(
        script, fake, retries=1, breaker=BreakerSettings(failures=2, cooldown_seconds=10)
    )
    # call 1: 500,500 (one failure); call 2: 400 (resets); calls 3, 4: two failures → open
    assert [outcome(client) for _ in range(5)] == [
        "server_error",
        "client_error_400",
        "server_error",
        "server_error",
        "circuit_open",
    ]
    assert client.stats.breaker_trips == 1


def test_half_open_trial_is_a_single_attempt() -> None:
    fake = FakeTime()
    script = Script([500], fake)
    client = client_for(
        script, fake, retries=4, breaker=BreakerSettings(failures=1, cooldown_seconds=10)
    )
    assert outcome(client) == "server_error"
    assert script.calls == 5
    fake.now += 10.0
    assert outcome(client) == "server_error"
    assert script.calls == 6


def test_a_retrying_call_stops_when_the_breaker_opens_meanwhile() -> None:
    """While call A backs off, call B fails for good and opens the breaker: A's retry is
    refused instead of going to a provider known to be down."""
    fake = FakeTime()
    script = Script([500], fake)
    other: list[str] = []

    async def sleep(seconds: float) -> None:
        if not other:  # A's first backoff: B runs to its end meanwhile
            other.append("running")
            other[0] = await _reason(client)
        await fake.sleep(seconds)

    client = ProviderClient(
        settings(retries=4, breaker=BreakerSettings(failures=1, cooldown_seconds=60)),
        billing=Billing.PER_CALL,
        transport=httpx.MockTransport(script),
        clock=fake.clock,
        sleep=sleep,
    )
    assert outcome(client) == "circuit_open"
    assert other == ["server_error"]
    assert script.calls == 1 + 5  # A's first attempt, B's five


def test_calls_queued_for_a_slot_stop_when_the_breaker_opens_meanwhile() -> None:
    """Ten calls share one connection slot against a provider that is down; the first fails
    for good and opens the breaker while the other nine wait for the slot. They were admitted
    while the breaker was closed, but each is refused once it gets the slot, without a
    request (the soak saw 1,191 attempts for 400 lookups before its breakers opened)."""
    fake = FakeTime()
    script = Script([503], fake)

    async def answer(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0)  # the network takes a moment: the other calls queue meanwhile
        return script(request)

    client = ProviderClient(
        settings(
            concurrency=1, retries=0, breaker=BreakerSettings(failures=1, cooldown_seconds=60)
        ),
        billing=Billing.PER_CALL,
        transport=httpx.MockTransport(answer),
        clock=fake.clock,
        sleep=fake.sleep,
    )

    async def many() -> list[str]:
        return list(await asyncio.gather(*(_reason(client) for _ in range(10))))

    assert run(many()) == ["server_error"] + ["circuit_open"] * 9
    assert script.calls == 1
    assert client.stats.circuit_rejections == 9


async def _reason(client: ProviderClient) -> str:
    try:
        await client.request("GET", URL + "/b")
    except ProviderError as exc:
        return exc.reason
    return "no error"


# --- budget --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("billing", "budget", "costs", "expected", "used"),
    [
        pytest.param(
            Billing.PER_CALL, 3, [1, 1, 1, 1], [200, 200, 200, "budget_exhausted"], 3, id="per-call"
        ),
        pytest.param(
            Billing.PER_ID, 250, [100, 100, 100], [200, 200, "budget_exhausted"], 200, id="per-id"
        ),
        pytest.param(Billing.PER_ID, 250, [100, 50], [200, 200], 150, id="per-id-partial-fits"),
        pytest.param(Billing.PER_CALL, 0, [1], ["budget_exhausted"], 0, id="zero-budget"),
        pytest.param(Billing.PER_CALL, None, [1] * 5, [200] * 5, 5, id="unlimited"),
        pytest.param(Billing.FREE, 1, [1, 1, 1], [200, 200, 200], 0, id="free-ignores-budget"),
    ],
)
def test_budget_is_reserved_before_sending(
    billing: Billing,
    budget: int | None,
    costs: list[int],
    expected: list[int | str],
    used: int,
) -> None:
    fake = FakeTime()
    script = Script([200], fake)
    client = client_for(script, fake, billing=billing, budget=budget)
    assert [outcome(client, cost=c) for c in costs] == expected
    assert script.calls == sum(1 for e in expected if e == 200)
    assert client.stats.budget_used == used


def test_budget_per_match_charges_after_parsing() -> None:
    fake = FakeTime()
    script = Script([200], fake)
    client = client_for(script, fake, billing=Billing.PER_MATCH, budget=3)
    assert outcome(client, cost=0) == 200
    client.charge(2)
    assert outcome(client, cost=0) == 200
    with pytest.raises(BudgetExhaustedError) as raised:
        client.charge(2)  # the provider billed them: counted even though over
    assert raised.value.reason == "budget_exhausted"
    assert client.stats.budget_used == 4
    assert outcome(client, cost=0) == "budget_exhausted"  # no room left even for a free call
    assert script.calls == 2


def test_budget_refusal_wins_over_breaker_and_touches_no_network() -> None:
    fake = FakeTime()
    script = Script([200], fake)
    client = client_for(script, fake, budget=1)
    assert outcome(client) == 200
    assert outcome(client) == "budget_exhausted"
    assert client.stats.budget_rejections == 1
    assert client.budget_remaining == 0
    assert script.calls == 1


# --- redaction -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        pytest.param("https://h/v1/person?email=jane@x.org&key=S", "/v1/person", id="query"),
        pytest.param("https://u:tok@h/v1/x#frag", "/v1/x", id="userinfo-fragment"),
        pytest.param("https://h/v5/person/jane.doe@example.com", "/v5/person/{email}", id="email"),
        pytest.param("https://h/p/jane.doe%40example.com/x", "/p/{email}/x", id="email-encoded"),
        pytest.param("https://h/avatar/" + "a" * 32, "/avatar/{digest}", id="md5"),
        pytest.param(
            "https://h/avatar/" + "0F" * 32 + ".json",
            "/avatar/" + "0F" * 32 + ".json",
            id="digest-with-suffix-kept",
        ),
        pytest.param("https://h/u/" + "b" * 64, "/u/{digest}", id="sha256"),
        pytest.param("https://h/phone/+4915112345678", "/phone/{phone}", id="e164"),
        pytest.param("https://h/phone/%2B49%20151%2012345", "/phone/{phone}", id="phone-encoded"),
        pytest.param("https://h/phone/(650)555-1212", "/phone/{phone}", id="phone-punctuated"),
        pytest.param("https://h/v2/batch/12345", "/v2/batch/12345", id="short-number-kept"),
        pytest.param("https://h", "/", id="no-path"),
    ],
)
def test_redact_path(url: str, path: str) -> None:
    assert redact_path(url) == path


def test_redact_url_keeps_origin_only() -> None:
    assert (
        redact_url("https://user:secret@api.example.test:8443/p/a@b.c?k=v")
        == "https://api.example.test:8443/p/{email}"
    )


RAW = ("jane.doe", "example.com", "4915112345678", "SECRET", "tok", "b" * 64)


@pytest.mark.parametrize(
    "step",
    [
        pytest.param(500, id="5xx"),
        pytest.param(429, id="429"),
        pytest.param(400, id="4xx"),
        pytest.param(httpx.ReadTimeout, id="timeout"),
        pytest.param(httpx.ConnectError, id="connect"),
        pytest.param(httpx.UnsupportedProtocol, id="invalid"),
    ],
)
def test_errors_and_logs_carry_no_identifier_or_secret(
    step: Step, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeTime()
    url = (
        "https://user:tok@api.example.test/v1/person/jane.doe@example.com/"
        + "b" * 64
        + "?phone=%2B4915112345678&api_key=SECRET"
    )
    client = client_for(
        Script([step], fake), fake, headers={"Authorization": "Bearer SECRET"}, retries=2
    )
    caplog.set_level(logging.DEBUG)

    async def go() -> ProviderError:
        with pytest.raises(ProviderError) as raised:
            await client.request("GET", url)
        return raised.value

    exc = run(go())
    text = str(exc) + repr(exc) + caplog.text
    assert "/v1/person/{email}/{digest}" in str(exc)
    for raw in RAW:
        assert raw not in text
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__
    assert exc.provider == "acme"


def test_headers_and_provider_name_go_on_every_request() -> None:
    fake = FakeTime()
    script = Script([200], fake)
    client = client_for(script, fake, headers={"Authorization": "Bearer SECRET"})
    outcome(client, params={"q": "1"})
    request = script.requests[0]
    assert request.headers["authorization"] == "Bearer SECRET"
    assert request.url.params["q"] == "1"
    assert request.extensions["enrichers.provider"] == "acme"


# --- JSON helper, stats, construction ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b'{"a": 1}', {"a": 1}, id="object"),
        pytest.param(b"[1, 2]", [1, 2], id="array"),
        pytest.param(b"<html>oops</html>", "malformed_json", id="html"),
        pytest.param(b"", "malformed_json", id="empty"),
        pytest.param(b"\xff\xfe\x00", "malformed_json", id="not-utf8"),
    ],
)
def test_json_or_error(body: bytes, expected: object) -> None:
    fake = FakeTime()
    client = client_for(Script([httpx.Response(200, content=body)]), fake)

    async def go() -> object:
        response = await client.request("GET", URL + "/jane@example.com")
        try:
            return json_or_error(response)
        except TerminalProviderError as exc:
            return exc

    result = run(go())
    if isinstance(result, TerminalProviderError):
        assert (result.reason, result.provider) == (expected, "acme")
        assert "jane" not in str(result)
        assert "/v1/person/{email} -> 200 (malformed_json)" in str(result)
    else:
        assert result == expected


def test_stats_count_statuses_bytes_and_failures() -> None:
    fake = FakeTime()
    script = Script([500, httpx.ReadTimeout, 200, 404, 429, 400], fake)
    client = client_for(script, fake, retries=2)
    results = [outcome(client) for _ in range(3)]
    assert results == [200, 404, "client_error_400"]
    stats = client.stats
    assert stats.statuses == {500: 1, 200: 1, 404: 1, 429: 1, 400: 1}
    assert (stats.calls, stats.attempts, stats.retries) == (3, 6, 3)
    assert (stats.timeouts, stats.throttled, stats.connect_errors) == (1, 1, 0)
    assert stats.failures == {"client_error_400": 1}
    assert stats.bytes_received > 0
    assert stats.p50 == 0.0  # the fake clock does not move while a request is served
    summary = stats.as_dict()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["statuses"] == {"200": 1, "400": 1, "404": 1, "429": 1, "500": 1}
    assert "latencies" not in summary


def test_quantile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (quantile(values, 0.5), quantile(values, 0.99), quantile(values, 1.0)) == (
        50.0,
        99.0,
        100.0,
    )
    assert quantile([], 0.5) != quantile([], 0.5)  # NaN


def test_timeouts_and_pool_follow_the_settings() -> None:
    async def go() -> tuple[httpx.Timeout, Any]:
        async with ProviderClient(
            settings(timeout_seconds=7, connect_timeout_seconds=2, concurrency=13),
            billing=Billing.PER_CALL,
        ) as client:
            transport = client._transport
            assert isinstance(transport, AiohttpTransport)
            # aiohttp keeps every connection of its pool alive: one bound for both.
            return client.timeout, (transport.max_connections, transport.max_connections)

    timeout, pool = run(go())
    assert timeout == httpx.Timeout(7, connect=2)
    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (2, 7, 7, 7)
    assert pool == (13, 13)


def test_semaphore_bounds_requests_in_flight() -> None:
    async def go() -> int:
        in_flight = peak = 0

        async def handler(request: httpx.Request) -> httpx.Response:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.005)
            in_flight -= 1
            return httpx.Response(200)

        async with ProviderClient(
            settings(concurrency=3),
            billing=Billing.PER_CALL,
            transport=httpx.MockTransport(handler),
        ) as client:
            await asyncio.gather(*(client.request("GET", URL) for _ in range(30)))
        return peak

    assert run(go()) == 3


@pytest.mark.parametrize(
    ("headers", "retry_after", "reset"),
    [
        pytest.param({"retry-after": "1.5"}, 1.5, None, id="fractional"),
        pytest.param({"retry-after": "-3"}, 0.0, None, id="negative"),
        pytest.param(
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "2"}, None, 2.0, id="reset-delta"
        ),
        pytest.param(
            {
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": str(int(EPOCH.timestamp() * 1000) + 2500),
                "date": _date(),
            },
            None,
            2.5,
            id="reset-epoch-ms",
        ),
        pytest.param(
            {"x-ratelimit-remaining": "1", "x-ratelimit-reset": "2"}, None, None, id="not-spent"
        ),
        pytest.param({"x-ratelimit-remaining": "0"}, None, None, id="no-reset"),
    ],
)
def test_feedback_headers(
    headers: dict[str, str], retry_after: float | None, reset: float | None
) -> None:
    assert retry_after_seconds(headers) == retry_after
    assert rate_limit_reset_seconds(headers) == reset


# --- against a real HTTP server ------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """`/ok`, `/slow` (sleeps 0.5 s), `/flaky` (503 then 200, per server), `/limited` (429
    with Retry-After: 0.2 then 200)."""

    protocol_version = "HTTP/1.1"
    counts: dict[str, int]

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        seen = self.server.counts.get(path, 0)  # type: ignore[attr-defined]
        self.server.counts[path] = seen + 1  # type: ignore[attr-defined]
        status, headers = 200, {}
        if path == "/slow":
            time.sleep(0.5)
        elif path == "/flaky" and seen == 0:
            status = 503
        elif path == "/limited" and seen == 0:
            status, headers = 429, {"Retry-After": "0.2"}
        body = json.dumps({"path": path}).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(HangupTolerant, ThreadingHTTPServer):
    pass


@contextmanager
def local_server() -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.counts = {}  # type: ignore[attr-defined]
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _real(fn: Callable[[ProviderClient, str], Coroutine[Any, Any, T]], **overrides: Any) -> T:
    async def go(base: str) -> T:
        async with ProviderClient(
            settings(backoff_seconds=0.01, **overrides), billing=Billing.PER_CALL
        ) as client:
            return await fn(client, base)

    with local_server() as base:
        return run(go(base))


def test_real_server_ok_retry_and_retry_after() -> None:
    async def go(client: ProviderClient, base: str) -> list[Any]:
        ok = await client.request("GET", base + "/ok")
        flaky = await client.request("GET", base + "/flaky")
        start = time.monotonic()
        limited = await client.request("GET", base + "/limited")
        waited = time.monotonic() - start
        return [ok.json(), flaky.status_code, limited.status_code, waited, client.stats]

    ok, flaky, limited, waited, stats = _real(go)
    assert (ok, flaky, limited) == ({"path": "/ok"}, 200, 200)
    assert waited >= 0.2
    assert stats.statuses == {200: 3, 503: 1, 429: 1}
    assert stats.p99 < 0.5


def test_real_server_read_timeout() -> None:
    async def go(client: ProviderClient, base: str) -> str:
        try:
            await client.request("GET", base + "/slow")
        except TransientProviderError as exc:
            return exc.reason
        return "no error"

    assert _real(go, timeout_seconds=0.1, retries=1) == "timeout"


def test_real_connection_refused() -> None:
    async def go(client: ProviderClient, base: str) -> tuple[str, int]:
        with pytest.raises(TransientProviderError) as raised:
            await client.request("GET", "http://127.0.0.1:9/nothing-listens-here")
        return raised.value.reason, client.stats.connect_errors

    assert _real(go, retries=2) == ("connect_error", 3)


def test_circuit_open_error_is_transient() -> None:
    assert issubclass(CircuitOpenError, TransientProviderError)


def test_a_429_storm_throttles_but_never_opens_the_breaker() -> None:
    fake = FakeTime()
    script = Script([429, 429, 429, 429, 200], fake)
    client = client_for(
        script, fake, throttle_retries=1, breaker=BreakerSettings(failures=1, cooldown_seconds=60)
    )
    assert outcome(client) == "rate_limited"  # two 429s: its throttle retries are used up
    assert outcome(client) == "rate_limited"
    assert outcome(client) == 200  # not circuit_open: the provider was up all along
    assert client.stats.breaker_trips == 0
    assert client.stats.throttled == 4
