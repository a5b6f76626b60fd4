"""Settings of the `gravatar` provider type (Gravatar REST API v3 profiles).

    - name: gravatar
      type: gravatar
      api_key_env: GRAVATAR_API_KEY    # optional; without a key Gravatar sends no interests
      topic_map: {astronomy: interest.science}   # added to the default map

Lookups are by SHA-256 of the trimmed, lower-cased email (`email_sha256`) only.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from enrichers.base import ProviderSettings, RateLimitSettings
from enrichers.http_json.config import (
    BlockName,
    EnvVarName,
    Region,
    Topic,
    check_base_url,
    topic_under,
)
from enrichers.http_json.mapping import normalise_label
from profiles.types import TransferBasis

ANONYMOUS_PER_HOUR: Final = 100
"""Gravatar's default limit for profile requests without an API key."""
KEYED_PER_HOUR: Final = 1000
"""Gravatar's default limit for profile requests with an API key."""
PRODUCES: Final = "interest"


def hourly_rate_limit(per_hour: int) -> RateLimitSettings:
    """A token bucket that never exceeds `per_hour` requests in any hour.

    Burst is a twentieth of the hourly allowance; the sustained rate is what is left of the
    hour after the burst, so burst + an hour of refills stays within the provider's limit.
    A bucket needs a burst of one and some refill, so the limit must be at least 2 an hour.
    """
    if per_hour < 2:  # one burst token plus a non-zero refill
        raise ValueError(f"an hourly limit must be at least 2 requests, not {per_hour}")
    burst = max(1, per_hour // 20)
    return RateLimitSettings(per_second=(per_hour - burst) / 3600, burst=burst)


class GravatarSettings(ProviderSettings):
    """A Gravatar instance; without `rate_limit`, the default limit for the key state is used."""

    type: Literal["gravatar"] = "gravatar"
    base_url: Annotated[str, AfterValidator(check_base_url)] = "https://api.gravatar.com"
    """Origin the `/v3/profiles/{hash}` path is appended to (tests: a local server prefix)."""
    api_key_env: EnvVarName | None = None
    """Environment variable holding a Gravatar API key (sent as `Authorization: Bearer`)."""
    api_key_block: BlockName | None = None
    """Prefect Secret block holding the API key."""
    region: Region = "US"
    """Automattic processes in the US; the policy decides whether that is allowed."""
    transfer_basis: TransferBasis | None = None
    """Declare `adequacy` only after checking Automattic's Data Privacy Framework listing."""
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.8
    """Confidence of a declared Gravatar interest (see `enrichers.gravatar` for why 0.8)."""
    default_topic_map: bool = True
    """Start from `enrichers.gravatar.mapping.DEFAULT_TOPIC_MAP`."""
    topic_map: dict[str, Topic] = Field(default_factory=dict)
    """Interest name -> taxonomy key, over the default map. Unmapped names are dropped."""

    @model_validator(mode="before")
    @classmethod
    def _default_rate_limit(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("rate_limit") is None:
            keyed = data.get("api_key_env") is not None or data.get("api_key_block") is not None
            limit = hourly_rate_limit(KEYED_PER_HOUR if keyed else ANONYMOUS_PER_HOUR)
            data = {**data, "rate_limit": limit}
        return data

    @field_validator("topic_map")
    @classmethod
    def _topics(cls, value: dict[str, str]) -> dict[str, str]:
        seen: set[str] = set()
        for label, topic in value.items():
            key = normalise_label(label)
            if not key or key in seen:
                raise ValueError(f"label {label!r} is empty or listed twice")
            seen.add(key)
            if not topic_under(topic, PRODUCES):
                raise ValueError(f"{topic} is not under {PRODUCES}")
        return value

    @model_validator(mode="after")
    def _one_key(self) -> GravatarSettings:
        if self.api_key_env is not None and self.api_key_block is not None:
            raise ValueError("name the API key with api_key_env or api_key_block, not both")
        return self

    @property
    def keyed(self) -> bool:
        """Whether an API key is configured."""
        return self.api_key_env is not None or self.api_key_block is not None
