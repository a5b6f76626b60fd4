"""The provider contract: what a provider declares and how it turns a batch into results.

    ProviderError                    a call failed (raised by ProviderClient, caught by the stage)
    ├── TransientProviderError       retrying later may help: timeout, 429, 5xx, connection
    │   └── CircuitOpenError         the provider is cooling down after repeated failures
    └── TerminalProviderError        retrying will not help: 4xx other than 429, bad payload
        └── BudgetExhaustedError     the run's billable-call budget for the provider is spent

A provider never sees a keyed pseudonym's secret and never decides who may be looked up: the
enrichment stage asks policy gate A per subject and provider first, picks the least
identifying form the provider accepts and the policy allows, and hands the provider a batch
of (subject, form, value). Per-record outcomes are data (`LookupStatus` on a row); per-call
failures are exceptions the stage turns into `failed` rows with a reason, so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Final, Protocol, runtime_checkable

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from profiles.errors import EnrichError
from profiles.types import IdentifierForm, SignalKind, TransferBasis

if TYPE_CHECKING:
    from enrichers.http.client import ProviderClient

SUBJECT = "subject"
FORM = "form"
VALUE = "value"

BATCH_COLUMNS: tuple[str, ...] = (SUBJECT, FORM, VALUE)
"""Columns of a lookup batch: subject (profile id), form (IdentifierForm), value (the
identifier in that form: personal data, never logged)."""

OUTCOME_COLUMNS: tuple[str, ...] = (SUBJECT, "status", "reason", "billable")
"""Columns of `LookupResult.outcomes`: one row per subject of the batch."""

SIGNAL_COLUMNS: tuple[str, ...] = (
    SUBJECT,
    "topic",
    "confidence",
    "provider",
    "observed_at",
    "kind",
    "raw_score",
)
"""Columns of `LookupResult.signals`: topic (taxonomy dot key), confidence in (0, 1),
observed_at (UTC timestamp), kind (SignalKind), raw_score (the provider's own score, text)."""


class LookupStatus(StrEnum):
    """How one subject's lookup at one provider ended. Every lookup ends in exactly one."""

    MATCHED = "matched"
    NO_MATCH = "no_match"
    FAILED = "failed"
    """The call failed (reason says why); the subject is looked up again next run."""
    SKIPPED_POLICY = "skipped_policy"
    """Gate A denied it, or no identifier form is both accepted and allowed."""
    SKIPPED_CACHED = "skipped_cached"
    """A cached result that has not expired was used instead of a call."""


class Billing(StrEnum):
    """What a provider charges for."""

    FREE = "free"
    PER_CALL = "per_call"
    """Every HTTP request counts, whatever its batch size or outcome."""
    PER_ID = "per_id"
    """Every identifier sent counts."""
    PER_MATCH = "per_match"
    """Only matched identifiers count."""


@dataclass(frozen=True)
class Capabilities:
    """What a provider declares; gate A and the stage decide from this alone."""

    accepts: tuple[IdentifierForm, ...]
    """Identifier forms the provider can look up."""
    produces: tuple[str, ...]
    """Taxonomy topic prefixes (or fields) it may return."""
    region: str
    """Where it processes data: EU, EEA, UK, US or an ISO country (compared with the policy)."""
    transfer_basis: TransferBasis | None = None
    """Ground for a transfer outside the subject's allowed regions, if any."""
    batch_size: int = 1
    """Identifiers per request (1: one request per identifier)."""
    billing: Billing = Billing.PER_CALL
    signal_kind: SignalKind = SignalKind.INFERRED


SINGLE_LOOKUP_ROWS: Final = 512
"""Rows a provider that sends one identifier per request (batch_size 1) gets per `lookup`
call. It sends their requests concurrently (the client bounds how many are in flight), so
the per-call work of building frames is shared by many identifiers: at 512 rows it is a few
microseconds per identifier, against ~0.3 ms of CPU for the request itself (64 rows made the
frames cost a tenth of the lookup)."""


def rows_per_lookup(capabilities: Capabilities) -> int:
    """At most how many rows one `lookup` call gets: the batch size of a batch provider,
    SINGLE_LOOKUP_ROWS for one that looks up one identifier per request."""
    return capabilities.batch_size if capabilities.batch_size > 1 else SINGLE_LOOKUP_ROWS


def empty_signals() -> pd.DataFrame:
    """A signals frame with no rows and the contract's columns."""
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in SIGNAL_COLUMNS})


@dataclass(frozen=True)
class LookupResult:
    """What a provider made of one batch: an outcome per subject, and the signals found."""

    outcomes: pd.DataFrame
    """OUTCOME_COLUMNS; status is matched, no_match or failed; billable: this subject
    counted towards the budget (bool)."""
    signals: pd.DataFrame = field(default_factory=empty_signals)
    """SIGNAL_COLUMNS."""


class RateLimitSettings(BaseModel):
    """Token bucket: `per_second` sustained, `burst` at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_second: Annotated[float, Field(gt=0)] = 10.0
    burst: Annotated[int, Field(ge=1)] = 10


class BreakerSettings(BaseModel):
    """Circuit breaker: open after `failures` consecutive transient failures, for `cooldown`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failures: Annotated[int, Field(ge=1)] = 5
    cooldown_seconds: Annotated[float, Field(ge=0)] = 30.0


class ProviderSettings(BaseModel):
    """Settings every provider instance has in `enrich.yaml` (`enrichment.providers[]`).

    Plugins subclass this with their own fields; `type` picks the plugin.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    """This instance's name: in decisions, the cache key, the summary and logs."""
    type: str
    """Registered plugin name (http_json, gravatar, or a third-party entry point)."""
    enabled: bool = True
    timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0
    connect_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 3.0
    concurrency: Annotated[int, Field(ge=1, le=256)] = 10
    """Requests in flight at once."""
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    retries: Annotated[int, Field(ge=0, le=10)] = 4
    """Attempts after the first for timeouts, connection errors and 5xx."""
    throttle_retries: Annotated[int, Field(ge=0, le=100)] = 20
    """Attempts after the first for 429 answers: the server says when to come back (the whole
    client pauses), so these are counted apart and more are allowed."""
    backoff_seconds: Annotated[float, Field(ge=0)] = 0.5
    """First retry delay; doubles each attempt, with full jitter."""
    max_backoff_seconds: Annotated[float, Field(ge=0)] = 30.0
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    budget: Annotated[int | None, Field(ge=0)] = None
    """Billable units per run (see `Billing`); None: unlimited."""
    cache_ttl_days: Annotated[float, Field(ge=0)] = 30.0
    """How long a match is reused (never longer than the policy's retention for the kind)."""
    negative_cache_ttl_days: Annotated[float, Field(ge=0)] = 7.0
    """How long a no-match is reused."""


@runtime_checkable
class Provider(Protocol):
    """An enrichment provider instance (built by its plugin from its settings)."""

    name: str
    capabilities: Capabilities

    def request_parameters(self) -> Mapping[str, Any]:
        """What, besides the identifier, shapes the answer (endpoint, fields asked for, ...);
        hashed into the cache key so a changed request is not answered from the cache."""
        ...

    async def lookup(self, batch: pd.DataFrame, client: ProviderClient) -> LookupResult:
        """Look up one batch (BATCH_COLUMNS, at most `rows_per_lookup(capabilities)` rows,
        at most `capabilities.batch_size` identifiers per request).

        Use `client` for every request: it rate-limits, retries, breaks the circuit and
        counts the budget. Raise ProviderError when the whole batch failed.
        """
        ...


class ProviderPlugin(Protocol):
    """A provider type: its settings model and a factory. Registered by name."""

    name: ClassVar[str]
    """The `type` value in enrich.yaml that selects this plugin."""
    settings_model: ClassVar[type[ProviderSettings]]

    def create(self, settings: ProviderSettings, secrets: Mapping[str, str]) -> Provider:
        """A provider instance; `secrets` holds what its settings name (API keys)."""
        ...


class ProviderError(EnrichError):
    """A provider call failed. `reason` is a short code for summaries; messages are redacted."""

    reason: str = "error"

    def __init__(self, provider: str, message: str, *, reason: str | None = None) -> None:
        self.provider = provider
        if reason is not None:
            self.reason = reason
        super().__init__(f"provider {provider}: {message}")


class TransientProviderError(ProviderError):
    """Retrying later may succeed (timeouts, 429, 5xx, connection errors)."""

    retryable = True


class CircuitOpenError(TransientProviderError):
    """The provider failed repeatedly and is cooling down; calls are not attempted."""

    reason = "circuit_open"


class TerminalProviderError(ProviderError):
    """Retrying will not help (other 4xx, malformed payload, misconfiguration)."""


class BudgetExhaustedError(TerminalProviderError):
    """The run's budget for this provider is spent; the rest is looked up next run."""

    reason = "budget_exhausted"
    retryable = True
