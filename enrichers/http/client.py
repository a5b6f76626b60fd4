"""The resilient HTTP client every provider uses: limits, retries, breaker, budget, redaction.

One `ProviderClient` per provider instance per run. Each `request()` is one *call*, which
makes one or more *attempts*:

    request(method, url, cost)
      │ breaker refuses ───────────────────────────────► CircuitOpenError     (no network)
      │ budget cannot cover `cost` ────────────────────► BudgetExhaustedError (no network)
      ▼
    ┌► attempt: semaphore slot → rate-limit token → send → read body
    │   │ server paused us longer than max_backoff ───► TransientProviderError(rate_limited)
    │   ├─ 2xx or an ok status (404: no match) ────────► return the response   (breaker: success)
    │   ├─ other 4xx, local request error ─────────────► TerminalProviderError (breaker: success)
    │   └─ timeout · connection error · 429 · 5xx
    │        429: lower the rate; Retry-After / X-RateLimit-Reset pause the whole client
    │        │ retries used up (`retries`; 429s: `throttle_retries`), half-open trial, or
    │        │ server asks > max_backoff ──────────────► TransientProviderError
    │        │   (breaker: failure; after 429s: success, the provider is up and throttling)
    │        ▼
    │      sleep: full jitter, uniform(0, min(max_backoff, backoff·2^n)); a 5xx's Retry-After
    │      wins; a 429's pause is waited out in the rate limiter instead
    │        │ breaker opened meanwhile ─────────────────► CircuitOpenError
    └────────┘

Exceptions carry only the provider name, method, redacted path (`enrichers.http.redact`),
status and reason code; httpx's own exceptions, whose messages hold full URLs, never leave
this module (`from None`). Reason codes: timeout, connect_error, rate_limited, server_error
(transient); client_error_<status>, unexpected_status_<status>, invalid_request,
malformed_response, malformed_json (terminal); circuit_open; budget_exhausted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import httpx

from enrichers.base import (
    Billing,
    BudgetExhaustedError,
    CircuitOpenError,
    ProviderError,
    ProviderSettings,
    TerminalProviderError,
    TransientProviderError,
)
from enrichers.http.breaker import BreakerState, CircuitBreaker, CircuitOpen, Ticket
from enrichers.http.budget import Budget
from enrichers.http.feedback import rate_limit_reset_seconds, retry_after_seconds, server_delay
from enrichers.http.ratelimit import PausedTooLong, RateLimiter
from enrichers.http.redact import install_log_redaction, redact_path
from enrichers.http.stats import ClientStats, Counters

logger = logging.getLogger(__name__)
# httpx logs each request's full URL (query, userinfo, path identifiers) at INFO.
install_log_redaction("httpx")

PROVIDER_EXTENSION = "enrichers.provider"
"""Request extension naming the provider, so `json_or_error` can name it in its error."""

TIMEOUT = "timeout"
CONNECT_ERROR = "connect_error"
RATE_LIMITED = "rate_limited"
SERVER_ERROR = "server_error"
MALFORMED_JSON = "malformed_json"
MALFORMED_RESPONSE = "malformed_response"
INVALID_REQUEST = "invalid_request"

_TOO_MANY_REQUESTS = 429


@dataclass(frozen=True)
class _Failed:
    """A transient attempt failure: why, which status if any, and the server's delay."""

    reason: str
    status: int | None = None
    server_delay: float | None = None


def _where(method: str, url: str | httpx.URL) -> str:
    return f"{method.upper()} {redact_path(str(url))}"


def json_or_error(response: httpx.Response, provider: str | None = None) -> Any:
    """The response body as JSON, or TerminalProviderError(reason="malformed_json").

    `provider` defaults to the name the ProviderClient stamped on the request.
    """
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
        request = response.request
        name = provider or str(request.extensions.get(PROVIDER_EXTENSION, "unknown"))
        where = _where(request.method, request.url)
        raise TerminalProviderError(
            name, f"{where} -> {response.status_code} ({MALFORMED_JSON})", reason=MALFORMED_JSON
        ) from None


class ProviderClient:
    """Async HTTP for one provider instance: the only way a provider reaches the network.

    `transport` is for tests and benchmarks (`httpx.MockTransport`, a local server's
    transport); `clock`, `sleep` and `jitter` (uniform in [0, 1)) make backoff, pauses and
    cool-downs exact in tests. `headers` (API keys) go on every request and into no message.
    """

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        billing: Billing,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.billing = billing
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        timeout = httpx.Timeout(
            settings.timeout_seconds,
            connect=settings.connect_timeout_seconds,
        )
        # Pool as large as the semaphore: a request holding a slot never waits for a
        # connection, so the pool timeout only fires if something leaks.
        limits = httpx.Limits(
            max_connections=settings.concurrency,
            max_keepalive_connections=settings.concurrency,
        )
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            limits=limits,
            headers=dict(headers or {}),
            follow_redirects=False,
        )
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        self._limiter = RateLimiter(
            settings.rate_limit.per_second,
            settings.rate_limit.burst,
            clock=clock,
            sleep=sleep,
            max_pause=settings.max_backoff_seconds,
        )
        self._breaker = CircuitBreaker(
            settings.breaker.failures, settings.breaker.cooldown_seconds, clock=clock
        )
        self._budget = Budget(None if billing is Billing.FREE else settings.budget)
        self._counters = Counters()

    @property
    def name(self) -> str:
        """The provider instance's name."""
        return self.settings.name

    @property
    def concurrency(self) -> int:
        """Requests in flight at once."""
        return self.settings.concurrency

    @property
    def breaker_state(self) -> BreakerState:
        """The circuit breaker's state now."""
        return self._breaker.state

    @property
    def rate(self) -> float:
        """The effective request rate now (requests per second), after 429s."""
        return self._limiter.rate

    @property
    def budget_remaining(self) -> int | None:
        """Billable units left this run (None: unlimited)."""
        return self._budget.remaining

    @property
    def stats(self) -> ClientStats:
        """What this client did so far."""
        return self._counters.snapshot(
            breaker_trips=self._breaker.trips, budget_used=self._budget.used
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (and the injected transport)."""
        await self._http.aclose()

    def charge(self, units: int) -> None:
        """Count `units` spent after the fact (matches of a per-match provider).

        The units are counted even when they overrun the budget (the provider billed
        them); then BudgetExhaustedError is raised so the caller stops.
        """
        if units < 0:
            raise ValueError("units must be >= 0")
        if self.billing is Billing.FREE:
            return
        if not self._budget.charge(units):
            raise self._count(
                BudgetExhaustedError(self.name, f"charge of {units} unit(s) overran the budget")
            )

    def json_or_error(self, response: httpx.Response) -> Any:
        """The body as JSON, or TerminalProviderError(reason="malformed_json")."""
        try:
            return json_or_error(response, self.name)
        except ProviderError as exc:
            raise self._count(exc) from None

    async def request(
        self,
        method: str,
        url: str,
        *,
        cost: int = 1,
        ok_statuses: Collection[int] = (404,),
        **httpx_kwargs: Any,
    ) -> httpx.Response:
        """Send one call, retrying as the module docstring draws; return a 2xx/ok response.

        `cost`: billable units reserved before sending (per call: 1; per id: the batch
        size; per match: 0, then `charge`). `httpx_kwargs` go to `httpx.AsyncClient.request`.
        """
        if cost < 0:
            raise ValueError("cost must be >= 0")
        if self.billing is Billing.FREE:
            cost = 0  # nothing is billed, so nothing is counted or limited
        self._counters.calls += 1
        where = _where(method, url)
        if not self._budget.can_reserve(cost):
            self._counters.budget_rejections += 1
            raise self._count(BudgetExhaustedError(self.name, f"{where}: budget exhausted"))
        ticket = self._admit(where)
        self._budget.reserve(cost)
        extensions = {**httpx_kwargs.pop("extensions", {}), PROVIDER_EXTENSION: self.name}
        kwargs = {**httpx_kwargs, "extensions": extensions}
        try:
            return await self._call(
                method, url, where=where, ticket=ticket, ok_statuses=ok_statuses, kwargs=kwargs
            )
        finally:
            # Frees the half-open trial slot if the call ended without an outcome
            # (cancelled, refused by the limiter); a no-op once the outcome moved the breaker.
            self._breaker.release(ticket)

    def _admit(self, where: str) -> Ticket:
        try:
            return self._breaker.admit()
        except CircuitOpen:
            self._counters.circuit_rejections += 1
            raise self._count(CircuitOpenError(self.name, f"{where}: circuit open")) from None

    async def _call(
        self,
        method: str,
        url: str,
        *,
        where: str,
        ticket: Ticket,
        ok_statuses: Collection[int],
        kwargs: dict[str, Any],
    ) -> httpx.Response:
        """The attempt loop: retries transient failures, records the outcome in the breaker."""
        settings = self.settings
        attempt = 0  # retries of timeouts, connection errors and 5xx
        throttled = 0  # retries of 429s
        while True:
            if attempt or throttled:
                try:
                    ticket = self._breaker.recheck(ticket)
                except CircuitOpen:
                    self._counters.circuit_rejections += 1
                    raise self._count(
                        CircuitOpenError(self.name, f"{where}: circuit open")
                    ) from None
            outcome = await self._attempt(method, url, where, kwargs)
            if isinstance(outcome, httpx.Response):
                terminal = self._terminal(outcome, ok_statuses, where)
                self._breaker.success(ticket)
                if terminal is not None:
                    raise self._count(terminal)
                return outcome
            too_many = outcome.status == _TOO_MANY_REQUESTS
            tries = throttled if too_many else attempt
            delay = self._retry_delay(outcome, tries)
            gives_up = (
                tries >= (settings.throttle_retries if too_many else settings.retries)
                or ticket.trial  # half-open lets exactly one attempt through
                or (outcome.server_delay or 0.0) > settings.max_backoff_seconds
            )
            if gives_up:
                if too_many:
                    # a provider that says "slow down" is up: throttling, not a failure
                    self._breaker.success(ticket)
                else:
                    self._record_failure(ticket, outcome.reason)
                status = f" -> {outcome.status}" if outcome.status is not None else ""
                raise self._count(
                    TransientProviderError(
                        self.name, f"{where}{status} ({outcome.reason})", reason=outcome.reason
                    )
                )
            self._counters.retries += 1
            if too_many:
                throttled += 1
            else:
                attempt += 1
            logger.debug(
                "provider %s: %s %s, retry %d in %.2fs",
                self.name,
                where,
                outcome.reason,
                tries + 1,
                delay,
            )
            if delay > 0:
                await self._sleep(delay)

    def _retry_delay(self, outcome: _Failed, tries: int) -> float:
        """Seconds to sleep before the next attempt: none after a 429 the server said when to
        come back from (the rate limiter holds every request until then), a 5xx's
        Retry-After, else full jitter over the exponential backoff."""
        if outcome.server_delay is not None:
            return 0.0 if outcome.status == _TOO_MANY_REQUESTS else outcome.server_delay
        settings = self.settings
        cap = min(settings.max_backoff_seconds, settings.backoff_seconds * 2.0**tries)
        return self._jitter() * cap

    async def _attempt(
        self, method: str, url: str, where: str, kwargs: dict[str, Any]
    ) -> httpx.Response | _Failed:
        """One HTTP request under the semaphore and the rate limit."""
        counters = self._counters
        async with self._semaphore:
            try:
                counters.rate_limit_wait_seconds += await self._limiter.acquire()
            except PausedTooLong:
                raise self._count(
                    TransientProviderError(
                        self.name,
                        f"{where}: server pause too long ({RATE_LIMITED})",
                        reason=RATE_LIMITED,
                    )
                ) from None
            counters.attempts += 1
            start = self._clock()
            try:
                response = await self._http.request(method, url, **kwargs)
            except httpx.TimeoutException:
                counters.timeouts += 1
                return _Failed(TIMEOUT)
            except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError):
                counters.connect_errors += 1
                return _Failed(CONNECT_ERROR)
            except httpx.DecodingError:
                raise self._count(self._terminal_error(where, MALFORMED_RESPONSE)) from None
            except (httpx.HTTPError, httpx.InvalidURL):
                # Unsupported scheme, bad URL, too many redirects: our request is wrong.
                raise self._count(self._terminal_error(where, INVALID_REQUEST)) from None
            finally:
                counters.latencies.append(self._clock() - start)
        counters.statuses[response.status_code] += 1
        counters.bytes_received += len(response.content)
        return self._feedback(response)

    def _feedback(self, response: httpx.Response) -> httpx.Response | _Failed:
        """Apply the server's rate-limit feedback; classify 429 and 5xx as transient."""
        status = response.status_code
        headers = response.headers
        if status == _TOO_MANY_REQUESTS:
            self._counters.throttled += 1
            self._limiter.throttled()
            delay = server_delay(headers)
            if delay is not None:
                # The whole client waits, not just this request: the limit is per client.
                self._limiter.pause_until(self._clock() + delay)
            return _Failed(RATE_LIMITED, status, delay)
        if status >= 500:
            # A 5xx's Retry-After delays only this request's retry.
            return _Failed(SERVER_ERROR, status, retry_after_seconds(headers))
        reset = rate_limit_reset_seconds(headers)
        if reset is not None:
            self._limiter.pause_until(self._clock() + reset)
        return response

    def _terminal(
        self, response: httpx.Response, ok_statuses: Collection[int], where: str
    ) -> TerminalProviderError | None:
        status = response.status_code
        if 200 <= status < 300 or status in ok_statuses:
            return None
        kind = "client_error" if 400 <= status < 500 else "unexpected_status"
        reason = f"{kind}_{status}"
        return TerminalProviderError(self.name, f"{where} -> {status} ({reason})", reason=reason)

    def _terminal_error(self, where: str, reason: str) -> TerminalProviderError:
        return TerminalProviderError(self.name, f"{where}: {reason}", reason=reason)

    def _record_failure(self, ticket: Ticket, reason: str) -> None:
        before = self._breaker.trips
        self._breaker.failure(ticket)
        if self._breaker.trips != before:
            logger.warning(
                "provider %s: circuit opened for %.0fs after %s (trip %d)",
                self.name,
                self._breaker.cooldown_seconds,
                reason,
                self._breaker.trips,
            )

    def _count(self, exc: ProviderError) -> ProviderError:
        self._counters.failures[exc.reason] += 1
        return exc
