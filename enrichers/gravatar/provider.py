"""The `gravatar` provider: one `GET /v3/profiles/{sha256}` per email hash.

Signal kind and confidence: the interests are what the person chose to list on their own
public profile, so the signal is `declared`, not inferred. It is not worth as much as an answer
given to us in our preference centre, though: it was written for a different audience, may be
years old, and the profile answers for whoever owns the hashed address (shared and role
addresses exist). The default confidence is therefore 0.8 rather than near 1; Gravatar only
keys profiles by verified addresses, so a match itself is reliable and no match-likelihood
discount is applied on top.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar

import pandas as pd

from enrichers.base import (
    Billing,
    Capabilities,
    LookupResult,
    ProviderSettings,
)
from enrichers.gravatar.config import PRODUCES, GravatarSettings
from enrichers.gravatar.mapping import effective_topic_map, profile_outcome
from enrichers.http.client import ProviderClient
from enrichers.http_json.mapping import NO_MATCH, ItemOutcome
from enrichers.http_json.provider import auth_header, each, lookup_rows, utc_now
from profiles.errors import KeyMaterialError
from profiles.types import IdentifierForm, SignalKind

API_KEY = "api_key"
"""Secret slot of `api_key_env` / `api_key_block` (see `enrichers.registry.build`)."""
PROFILE_PATH = "/v3/profiles/"
NOT_FOUND = 404


class GravatarProvider:
    """One configured Gravatar instance."""

    def __init__(
        self,
        settings: GravatarSettings,
        *,
        api_key: str | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self.capabilities = Capabilities(
            accepts=(IdentifierForm.EMAIL_SHA256,),
            produces=(PRODUCES,),
            region=settings.region,
            transfer_basis=settings.transfer_basis,
            batch_size=1,
            billing=Billing.FREE,
            signal_kind=SignalKind.DECLARED,
        )
        self._topic_map = effective_topic_map(
            settings.topic_map, use_default=settings.default_topic_map
        )
        self._clock = clock
        self._headers: dict[str, str] = {"Accept": "application/json"}
        if settings.keyed:
            if api_key is None:
                raise KeyMaterialError(f"provider {self.name}: an API key is named; none given")
            self._headers.update(auth_header("Authorization", "Bearer", api_key, self.name))
        self._unmapped: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"GravatarProvider(name={self.name!r})"

    @property
    def unmapped_labels(self) -> dict[str, int]:
        """Interest names dropped because the topic map does not know them, with counts."""
        return dict(self._unmapped)

    def request_parameters(self) -> dict[str, Any]:
        """What shapes the answer: the endpoint, whether the call is authenticated (only then
        are interests sent), and the mapping to topics."""
        return {
            "type": "gravatar",
            "base_url": self.settings.base_url,
            "endpoint": PROFILE_PATH + "{email_sha256}",
            "authenticated": self.settings.keyed,
            "confidence": self.settings.confidence,
            "topic_map": dict(sorted(self._topic_map.items())),
        }

    async def lookup(self, batch: pd.DataFrame, client: ProviderClient) -> LookupResult:
        """Look up one batch: one request per row (Gravatar has no bulk endpoint)."""
        now = self._clock()

        async def answer(pairs: list[tuple[IdentifierForm, str]]) -> list[ItemOutcome]:
            return await each([self._profile(client, value, now) for _, value in pairs])

        return await lookup_rows(
            batch,
            capabilities=self.capabilities,
            provider=self.name,
            unmapped=self._unmapped,
            answer=answer,
        )

    async def _profile(self, client: ProviderClient, digest: str, now: datetime) -> ItemOutcome:
        response = await client.request(
            "GET",
            self.settings.base_url + PROFILE_PATH + digest,
            cost=0,
            ok_statuses=(NOT_FOUND,),
            headers=self._headers,
        )
        if response.status_code == NOT_FOUND:
            return NO_MATCH
        return profile_outcome(
            client.json_or_error(response),
            topic_map=self._topic_map,
            confidence=self.settings.confidence,
            now=now,
        )


class GravatarPlugin:
    """The `gravatar` provider type."""

    name: ClassVar[str] = "gravatar"
    settings_model: ClassVar[type[ProviderSettings]] = GravatarSettings

    def create(self, settings: ProviderSettings, secrets: Mapping[str, str]) -> GravatarProvider:
        """A provider for `settings`; `secrets[API_KEY]` holds the API key if one is named."""
        if not isinstance(settings, GravatarSettings):
            raise TypeError(f"gravatar needs GravatarSettings, got {type(settings).__name__}")
        return GravatarProvider(settings, api_key=secrets.get(API_KEY))


PLUGIN = GravatarPlugin()
"""The registered plugin object."""
