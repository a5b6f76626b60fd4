"""gravatar: settings, rate-limit defaults, the pure mapping on saved samples, lookups."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pandas as pd
import pytest
from pydantic import ValidationError

from enrichers.base import Billing, LookupResult, LookupStatus, RateLimitSettings
from enrichers.gravatar.config import (
    ANONYMOUS_PER_HOUR,
    KEYED_PER_HOUR,
    GravatarSettings,
    hourly_rate_limit,
)
from enrichers.gravatar.mapping import DEFAULT_TOPIC_MAP, effective_topic_map, profile_outcome
from enrichers.gravatar.provider import GravatarProvider
from enrichers.http.client import ProviderClient
from enrichers.http_json.mapping import BAD_PAYLOAD, FORM_NOT_ACCEPTED
from policy.bundle import DEFAULT_SPECIAL_CATEGORIES
from profiles.errors import KeyMaterialError
from profiles.types import IdentifierForm, SignalKind

T = TypeVar("T")
SAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "providers"
NOW = datetime(2025, 7, 15, 12, 0, tzinfo=UTC)
API_KEY = "grav-test-key-51c2e0"
ROWAN = hashlib.sha256(b"rowan.ellery@example.net").hexdigest()
SAM = hashlib.sha256(b"sam.birchwood@example.org").hexdigest()
NOBODY = hashlib.sha256(b"nobody@example.com").hexdigest()


def sample(name: str) -> Any:
    """A saved response sample, decoded."""
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Drive one coroutine (pytest-asyncio is not a dependency)."""
    return asyncio.run(coro)


class FakeTime:
    """A monotonic clock that only moves when someone sleeps (the hourly limit is slow)."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def serve_samples(seen: list[httpx.Request]) -> Callable[[httpx.Request], httpx.Response]:
    """A fake Gravatar: Rowan has a full profile, Sam one without interests, others 404."""
    profiles = {
        ROWAN: sample("gravatar_profile_full.json"),
        SAM: sample("gravatar_profile_no_interests.json"),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        digest = request.url.path.rsplit("/", 1)[-1]
        if digest in profiles:
            return httpx.Response(200, json=profiles[digest])
        return httpx.Response(404, json=sample("gravatar_not_found.json"))

    return handler


def lookup(
    raw: dict[str, Any],
    rows: list[tuple[str, str, str]],
    handler: Callable[[httpx.Request], httpx.Response],
) -> list[LookupResult]:
    """Look up each row as its own batch (batch_size 1) through a ProviderClient."""
    s = GravatarSettings.model_validate(raw)
    provider = GravatarProvider(s, api_key=API_KEY if s.keyed else None, clock=lambda: NOW)
    time = FakeTime()

    async def go() -> list[LookupResult]:
        client = ProviderClient(
            s,
            billing=provider.capabilities.billing,
            transport=httpx.MockTransport(handler),
            clock=time.clock,
            sleep=time.sleep,
        )
        async with client:
            frames = [pd.DataFrame([row], columns=["subject", "form", "value"]) for row in rows]
            return [await provider.lookup(frame, client) for frame in frames]

    return run(go())


# --- settings ----------------------------------------------------------------------------------


def test_rate_limit_defaults_follow_the_api_key() -> None:
    anonymous = GravatarSettings.model_validate({"name": "gravatar"})
    keyed = GravatarSettings.model_validate({"name": "gravatar", "api_key_env": "GRAVATAR_KEY"})
    block = GravatarSettings.model_validate({"name": "gravatar", "api_key_block": "gravatar-key"})
    assert anonymous.rate_limit == hourly_rate_limit(ANONYMOUS_PER_HOUR)
    assert keyed.rate_limit == hourly_rate_limit(KEYED_PER_HOUR)
    assert block.rate_limit == keyed.rate_limit
    given = GravatarSettings.model_validate(
        {"name": "gravatar", "rate_limit": {"per_second": 0.5, "burst": 2}}
    )
    assert given.rate_limit == RateLimitSettings(per_second=0.5, burst=2)


@pytest.mark.parametrize("per_hour", [ANONYMOUS_PER_HOUR, KEYED_PER_HOUR, 2])
def test_hourly_rate_limit_never_exceeds_the_hour(per_hour: int) -> None:
    limit = hourly_rate_limit(per_hour)
    assert limit.burst + limit.per_second * 3600 == pytest.approx(per_hour)
    assert limit.burst >= 1


def test_hourly_rate_limit_needs_two_an_hour() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        hourly_rate_limit(1)


def test_defaults_declare_region_billing_and_kind() -> None:
    provider = GravatarProvider(GravatarSettings.model_validate({"name": "gravatar"}))
    caps = provider.capabilities
    assert caps.accepts == (IdentifierForm.EMAIL_SHA256,)
    assert (caps.region, caps.billing, caps.signal_kind) == (
        "US",
        Billing.FREE,
        SignalKind.DECLARED,
    )
    assert caps.produces == ("interest",)
    assert caps.batch_size == 1
    assert caps.transfer_basis is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"api_key_env": "A", "api_key_block": "b"}, "not both"),
        ({"api_key_env": "gr_live_Abc123"}, "pattern"),
        ({"topic_map": {"Chess": "hobby.chess"}}, "not under interest"),
        ({"topic_map": {"Chess": "interest.chess", " chess": "interest.board"}}, "twice"),
        ({"confidence": 1.0}, "less than 1"),
        ({"base_url": "https://user:pw@api.gravatar.com"}, "credentials"),
        ({"api_key": "inline"}, "Extra inputs"),
    ],
    ids=["two-keys", "pasted-key", "topic-outside", "dup-label", "certain", "url-creds", "inline"],
)
def test_settings_errors(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        GravatarSettings.model_validate({"name": "gravatar", **raw})


def test_default_topic_map_never_names_a_special_category() -> None:
    for topic in DEFAULT_TOPIC_MAP.values():
        assert not any(
            topic == c or topic.startswith(c + ".") for c in DEFAULT_SPECIAL_CATEGORIES
        ), topic
        assert topic.startswith("interest.")


def test_topic_map_extends_or_replaces_the_default() -> None:
    merged = effective_topic_map({"Astronomy": "interest.science", "hiking": "interest.walking"})
    assert merged["astronomy"] == "interest.science"
    assert merged["hiking"] == "interest.walking"
    assert merged["photography"] == DEFAULT_TOPIC_MAP["photography"]
    only = effective_topic_map({"Astronomy": "interest.science"}, use_default=False)
    assert only == {"astronomy": "interest.science"}


# --- mapping on saved samples -----------------------------------------------------------------


def _map(document: Any) -> Any:
    return profile_outcome(document, topic_map=effective_topic_map({}), confidence=0.8, now=NOW)


def test_full_profile_sample_gives_declared_interests() -> None:
    outcome = _map(sample("gravatar_profile_full.json"))
    assert outcome.status is LookupStatus.MATCHED
    assert [s.topic for s in outcome.signals] == [
        "interest.cooking",  # Baking
        "interest.outdoor.hiking",
        "interest.photography",
    ]
    assert {s.confidence for s in outcome.signals} == {0.8}
    assert {s.raw_score for s in outcome.signals} == {None}
    # The interests are at least as old as the last edit of the profile.
    assert {s.observed_at for s in outcome.signals} == {datetime(2024, 11, 2, 17, 40, tzinfo=UTC)}
    assert outcome.unmapped == ("trail running", "meditation")


def test_profile_without_interests_is_a_match_without_signals() -> None:
    outcome = _map(sample("gravatar_profile_no_interests.json"))
    assert (outcome.status, outcome.signals, outcome.unmapped) == (LookupStatus.MATCHED, (), ())


@pytest.mark.parametrize(
    "document",
    [
        sample("gravatar_not_found.json"),
        [],
        {"hash": ROWAN, "interests": "photography"},
        {"hash": ROWAN, "interests": [{"id": 1}]},
        {"hash": ROWAN, "interests": ["photography"]},
        {"hash": ROWAN, "last_profile_edit": "last week"},
        {"hash": 42},
    ],
    ids=[
        "error-body",
        "list",
        "interests-text",
        "no-name",
        "bare-names",
        "bad-edit",
        "hash-number",
    ],
)
def test_payloads_that_are_not_profiles_fail_as_bad_payload(document: Any) -> None:
    assert _map(document).reason == BAD_PAYLOAD


# --- lookups through the ProviderClient ---------------------------------------------------------


def test_lookup_against_local_prefix_with_bearer_key() -> None:
    seen: list[httpx.Request] = []
    raw = {
        "name": "gravatar",
        "base_url": "http://127.0.0.1:8765/gravatar",
        "api_key_env": "GRAVATAR_API_KEY",
    }
    rows = [
        ("p1", "email_sha256", ROWAN),
        ("p2", "email_sha256", SAM),
        ("p3", "email_sha256", NOBODY),
    ]
    results = lookup(raw, rows, serve_samples(seen))
    assert [r.outcomes.loc[0, "status"] for r in results] == ["matched", "matched", "no_match"]
    assert [r.outcomes.loc[0, "billable"] for r in results] == [False, False, False]
    assert seen[0].url.path == f"/gravatar/v3/profiles/{ROWAN}"
    assert seen[0].headers["Authorization"] == f"Bearer {API_KEY}"
    signals = results[0].signals
    assert sorted(signals["topic"]) == [
        "interest.cooking",
        "interest.outdoor.hiking",
        "interest.photography",
    ]
    assert set(signals["kind"]) == {"declared"}
    assert set(signals["provider"]) == {"gravatar"}
    assert len(results[1].signals) == 0


def test_anonymous_lookup_sends_no_authorization() -> None:
    seen: list[httpx.Request] = []
    lookup({"name": "gravatar"}, [("p1", "email_sha256", ROWAN)], serve_samples(seen))
    assert "Authorization" not in seen[0].headers
    assert seen[0].url.host == "api.gravatar.com"


def test_other_forms_are_not_sent() -> None:
    seen: list[httpx.Request] = []
    results = lookup(
        {"name": "gravatar"}, [("p1", "email", "rowan.ellery@example.net")], serve_samples(seen)
    )
    assert results[0].outcomes.loc[0, "reason"] == FORM_NOT_ACCEPTED
    assert seen == []


def test_rate_limited_gravatar_error_names_no_identifier() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, json={"error": "Rate limit exceeded", "code": "rate_limit_exceeded"}
        )

    [result] = lookup({"name": "gravatar", "retries": 1}, [("p1", "email_sha256", ROWAN)], handler)
    # the row fails on its own, with a reason code (the next run retries it)
    assert result.outcomes[["status", "reason"]].to_dict("records") == [
        {"status": "failed", "reason": "rate_limited"}
    ]
    assert ROWAN not in result.outcomes.to_csv()


def test_missing_key_and_request_parameters() -> None:
    keyed = GravatarSettings.model_validate({"name": "gravatar", "api_key_env": "GRAVATAR_KEY"})
    with pytest.raises(KeyMaterialError):
        GravatarProvider(keyed)
    provider = GravatarProvider(keyed, api_key=API_KEY)
    params = provider.request_parameters()
    text = json.dumps(params, sort_keys=True)
    assert API_KEY not in text
    assert API_KEY not in repr(provider)
    assert params["authenticated"] is True
    assert (
        json.dumps(GravatarProvider(keyed, api_key="x").request_parameters(), sort_keys=True)
        == text
    )
    anonymous = GravatarProvider(GravatarSettings.model_validate({"name": "gravatar"}))
    assert anonymous.request_parameters()["authenticated"] is False
