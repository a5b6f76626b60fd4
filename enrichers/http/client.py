"""The resilient HTTP client every provider uses: limits, retries, breaker, budget, redaction.

One `ProviderClient` per provider instance per run. Each `request()` is one *call*, which
makes one or more *attempts*:

    request(method, url, cost)
      │ breaker refuses ───────────────────────────────► CircuitOpenError     (no network)
      │ budget cannot cover `cost` ────────────────────► BudgetExhaustedError (no network)
      ▼
    ┌► attempt: semaphore slot → breaker recheck → rate-limit token → send → read body
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
from typing import Any, Final, Self

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
from enrichers.http.transport import AiohttpTransport

logger = logging.getLogger(__name__)
# httpx logs each request's full URL (query, userinfo, path identifiers) at INFO, and
# aiohttp's messages name URLs too: whatever they log is redacted.
install_log_redaction("httpx")
install_log_redaction("aiohttp")

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
_MERGED_HEADERS = 16

DEFAULT_HEADERS: Final[Mapping[str, str]] = {
    "Accept": "*/*",
    "Accept-Encoding": "gzip, deflate",
    "Connection": "keep-alive",
    "User-Agent": f"python-httpx/{httpx.__version__}",
}
"""Headers on every request unless the caller sets them: the ones `httpx.AsyncClient` sends
(the client sends requests through its transport itself, see `ProviderClient`)."""


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

    Requests go straight to an `httpx.AsyncBaseTransport` (`AiohttpTransport` unless one is
    given: `httpx.MockTransport` in tests), built as `httpx.Request`s with DEFAULT_HEADERS,
    the client's `headers` and the timeouts as extensions; `httpx.AsyncClient` is not used,
    since none of its auth, redirect, cookie or hook machinery applies to a provider call and
    it cost more CPU than the request itself. `clock`, `sleep` and `jitter` (uniform in
    [0, 1)) make backoff, pauses and cool-downs exact in tests. `headers` (API keys) go on
    every request and into no message.
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
        self.timeout = httpx.Timeout(
            settings.timeout_seconds,
            connect=settings.connect_timeout_seconds,
        )
        """Connect, read, write and pool timeouts of every request."""
        self._timeouts = self.timeout.as_dict()
        # Pool as large as the semaphore: a request holding a slot never waits for a
        # connection, so the pool timeout only fires if something leaks.
        self._transport = (
            AiohttpTransport(max_connections=settings.concurrency)
            if transport is None
            else transport
        )
        self._headers = httpx.Headers(DEFAULT_HEADERS)
        self._headers.update(headers or {})
        self._merged: dict[tuple[tuple[Any, Any], ...], httpx.Headers] = {}
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
        await self._transport.aclose()

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
        size; per match: 0, then `charge`). `httpx_kwargs` build the `httpx.Request`
        (`params`, `headers` over the client's, `json`, `content`, `extensions`, ...);
        `timeout` (an `httpx.Timeout` or seconds) overrides the client's for this call.
        """
        if cost < 0:
            raise ValueError("cost must be >= 0")
        if self.billing is Billing.FREE:
            cost = 0  # nothing is billed, so nothing is counted or limited
        self._counters.calls += 1
        if not self._budget.can_reserve(cost):
            self._counters.budget_rejections += 1
            raise self._count(
                BudgetExhaustedError(self.name, f"{_where(method, url)}: budget exhausted")
            )
        ticket = self._admit(method, url)
        self._budget.reserve(cost)
        kwargs = self._request_kwargs(httpx_kwargs)
        try:
            return await self._call(
                method, url, ticket=ticket, ok_statuses=ok_statuses, kwargs=kwargs
            )
        finally:
            # Frees the half-open trial slot if the call ended without an outcome
            # (cancelled, refused by the limiter); a no-op once the outcome moved the breaker.
            self._breaker.release(ticket)

    def _request_kwargs(self, httpx_kwargs: dict[str, Any]) -> dict[str, Any]:
        """`httpx.Request` arguments of one call: the client's headers under the call's, the
        timeouts and the provider's name as extensions."""
        headers = self._headers
        extra = httpx_kwargs.pop("headers", None)
        if extra:
            headers = self._merged_headers(extra)
        timeout = httpx_kwargs.pop("timeout", None)
        timeouts = self._timeouts if timeout is None else httpx.Timeout(timeout).as_dict()
        extensions = {
            "timeout": timeouts,
            **httpx_kwargs.pop("extensions", {}),
            PROVIDER_EXTENSION: self.name,
        }
        return {**httpx_kwargs, "headers": headers, "extensions": extensions}

    def _merged_headers(self, extra: Any) -> httpx.Headers:
        """The client's headers under `extra` (anything `httpx.Headers` takes); kept per
        distinct mapping, since a provider sends the same few headers with every call and
        merging costs more than the lookup."""
        key = tuple(extra.items()) if isinstance(extra, Mapping) else None
        cached = self._merged.get(key) if key is not None else None
        if cached is not None:
            return cached
        merged = self._headers.copy()
        merged.update(extra)
        if key is not None:
            if len(self._merged) >= _MERGED_HEADERS:
                self._merged.clear()
            self._merged[key] = merged
        return merged

    def _admit(self, method: str, url: str) -> Ticket:
        try:
            return self._breaker.admit()
        except CircuitOpen:
            self._counters.circuit_rejections += 1
            raise self._count(
                CircuitOpenError(self.name, f"{_where(method, url)}: circuit open")
            ) from None

    async def _call(
        self,
        method: str,
        url: str,
        *,
        ticket: Ticket,
        ok_statuses: Collection[int],
        kwargs: dict[str, Any],
    ) -> httpx.Response:
        """The attempt loop: retries transient failures, records the outcome in the breaker."""
        settings = self.settings
        attempt = 0  # retries of timeouts, connection errors and 5xx
        throttled = 0  # retries of 429s
        while True:
            async with self._semaphore:
                # A call queued for a slot (or backing off) while other calls opened the
                # breaker must not go to a provider known to be down: checked once it has
                # its slot, right before every attempt, the first included.
                try:
                    ticket = self._breaker.recheck(ticket)
                except CircuitOpen:
                    self._counters.circuit_rejections += 1
                    raise self._count(
                        CircuitOpenError(self.name, f"{_where(method, url)}: circuit open")
                    ) from None
                outcome = await self._attempt(method, url, kwargs)
            if isinstance(outcome, httpx.Response):
                terminal = self._terminal(outcome, ok_statuses, method, url)
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
            where = _where(method, url)
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
        self, method: str, url: str, kwargs: dict[str, Any]
    ) -> httpx.Response | _Failed:
        """One HTTP request (the caller holds a slot of the semaphore) under the rate limit,
        sent by the transport and read to the end (a body that cannot be decoded is a
        terminal failure)."""
        counters = self._counters
        try:
            counters.rate_limit_wait_seconds += await self._limiter.acquire()
        except PausedTooLong:
            raise self._count(
                TransientProviderError(
                    self.name,
                    f"{_where(method, url)}: server pause too long ({RATE_LIMITED})",
                    reason=RATE_LIMITED,
                )
            ) from None
        counters.attempts += 1
        start = self._clock()
        try:
            request = httpx.Request(method, url, **kwargs)
            response = await self._transport.handle_async_request(request)
            response.request = request
            await response.aread()
        except httpx.TimeoutException:
            counters.timeouts += 1
            return _Failed(TIMEOUT)
        except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError):
            counters.connect_errors += 1
            return _Failed(CONNECT_ERROR)
        except httpx.DecodingError:
            raise self._count(self._terminal_error(method, url, MALFORMED_RESPONSE)) from None
        except (httpx.HTTPError, httpx.InvalidURL):
            # Unsupported scheme, bad URL or header: our request is wrong.
            raise self._count(self._terminal_error(method, url, INVALID_REQUEST)) from None
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
        self, response: httpx.Response, ok_statuses: Collection[int], method: str, url: str
    ) -> TerminalProviderError | None:
        status = response.status_code
        if 200 <= status < 300 or status in ok_statuses:
            return None
        kind = "client_error" if 400 <= status < 500 else "unexpected_status"
        reason = f"{kind}_{status}"
        where = _where(method, url)
        return TerminalProviderError(self.name, f"{where} -> {status} ({reason})", reason=reason)

    def _terminal_error(self, method: str, url: str, reason: str) -> TerminalProviderError:
        return TerminalProviderError(self.name, f"{_where(method, url)}: {reason}", reason=reason)

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
