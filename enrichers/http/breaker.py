"""Circuit breaker for one provider: stop calling a provider that keeps failing.

        success / terminal answer
          ┌──────┐
          ▼      │       `failures` consecutive transient call outcomes
        CLOSED ──┴──────────────────────────────────────────► OPEN ◄──┐
          ▲                                                   │       │
          │ trial succeeds (or gets a terminal answer)        │       │ trial fails
          │                                                   │       │ (trips += 1)
          │              `cooldown_seconds` elapsed,          ▼       │
          └─────────────── next call is the one trial ──── HALF_OPEN ─┘
                                                        (other calls refused)

An outcome is a call's final one, after the client's retries. A terminal answer (a 4xx)
counts as a success here: the provider is up and answering. Every transition starts a new
generation; outcomes of calls admitted in an older generation are ignored, so the stragglers
that were in flight when the breaker opened neither close it nor count twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class BreakerState(StrEnum):
    """Where the breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Ticket:
    """Admission of one call: which generation let it in, and whether it is the trial."""

    generation: int
    trial: bool = False


class CircuitOpen(Exception):  # noqa: N818 - a signal to the client, not an error name
    """The breaker refuses the call; `retry_in` is the time left of the cool-down."""

    def __init__(self, retry_in: float) -> None:
        self.retry_in = retry_in
        super().__init__(f"circuit open for another {retry_in:.1f}s")


class CircuitBreaker:
    """Consecutive-failure breaker with a cool-down and a single half-open trial."""

    def __init__(self, failures: int, cooldown_seconds: float, *, clock: Callable[[], float]):
        if failures < 1:
            raise ValueError("failures must be >= 1")
        self.failures = failures
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._consecutive = 0
        self._opened_at = 0.0
        self._trial_out = False
        self.trips = 0
        """How many times the breaker opened (re-opening after a failed trial included)."""

    @property
    def state(self) -> BreakerState:
        """The state now (an expired cool-down reads as half-open)."""
        if self._state is BreakerState.OPEN and self._cooled_down():
            return BreakerState.HALF_OPEN
        return self._state

    def admit(self) -> Ticket:
        """Admit a new call or raise CircuitOpen."""
        if self._state is BreakerState.OPEN:
            if not self._cooled_down():
                raise CircuitOpen(self._opened_at + self.cooldown_seconds - self._clock())
            self._move(BreakerState.HALF_OPEN)
        if self._state is BreakerState.HALF_OPEN:
            if self._trial_out:
                raise CircuitOpen(0.0)
            self._trial_out = True
            return Ticket(self._generation, trial=True)
        return Ticket(self._generation)

    def recheck(self, ticket: Ticket) -> Ticket:
        """Before a retry: may this call go on? Returns its (possibly renewed) ticket.

        A call admitted before the breaker opened must not keep hammering the provider in
        its retries; one that waited through a full open → closed cycle may go on.
        """
        if ticket.generation == self._generation:
            return ticket
        if self._state is BreakerState.CLOSED:
            return Ticket(self._generation)
        retry_in = max(0.0, self._opened_at + self.cooldown_seconds - self._clock())
        raise CircuitOpen(retry_in)

    def success(self, ticket: Ticket) -> None:
        """The call ended with an answer from the provider (2xx, ok status or other 4xx)."""
        if ticket.generation != self._generation:
            return
        self._consecutive = 0
        if self._state is BreakerState.HALF_OPEN:
            self._move(BreakerState.CLOSED)

    def failure(self, ticket: Ticket) -> None:
        """The call ended in a transient failure after its retries."""
        if ticket.generation != self._generation:
            return
        if self._state is BreakerState.HALF_OPEN:
            self._open()
            return
        self._consecutive += 1
        if self._consecutive >= self.failures:
            self._open()

    def release(self, ticket: Ticket) -> None:
        """The call ended without an outcome (cancelled): free the trial slot if it held it."""
        if ticket.trial and ticket.generation == self._generation:
            self._trial_out = False

    def _cooled_down(self) -> bool:
        return self._clock() >= self._opened_at + self.cooldown_seconds

    def _open(self) -> None:
        self._opened_at = self._clock()
        self.trips += 1
        self._move(BreakerState.OPEN)

    def _move(self, state: BreakerState) -> None:
        self._state = state
        self._generation += 1
        self._consecutive = 0
        self._trial_out = False
