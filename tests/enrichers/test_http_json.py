"""http_json: JSON paths, calibrations, the pure mapping on saved samples, settings, requests."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import itertools
import json
import math
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pandas as pd
import pytest
from pydantic import ValidationError

from enrichers.base import (
    OUTCOME_COLUMNS,
    SIGNAL_COLUMNS,
    SINGLE_LOOKUP_ROWS,
    Billing,
    LookupResult,
    LookupStatus,
    ProviderError,
)
from enrichers.http.client import ProviderClient
from enrichers.http_json.config import HttpJsonSettings
from enrichers.http_json.mapping import (
    BAD_IDENTIFIER,
    BAD_PAYLOAD,
    FORM_NOT_ACCEPTED,
    ITEM_ERROR,
    MISSING_ITEM,
    JsonPath,
    PayloadShapeError,
    identifier_ok,
    likelihood_to_probability,
    linear_to_probability,
    map_batch,
    map_item,
    parse_timestamp,
)
from enrichers.http_json.provider import AUTH_SECRET, HttpJsonProvider, response_shape
from profiles.errors import KeyMaterialError
from profiles.types import IdentifierForm

T = TypeVar("T")
SAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "providers"
NOW = datetime(2025, 7, 15, 12, 0, tzinfo=UTC)
API_KEY = "pdl-test-key-7f3a9c"
EMAIL_HASH = hashlib.sha256(b"avery.quill@example.com").hexdigest()


def sample(name: str) -> Any:
    """A saved response sample, decoded."""
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Drive one coroutine (pytest-asyncio is not a dependency)."""
    return asyncio.run(coro)


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


PDL_TOPICS = {
    "hiking": "interest.outdoors.hiking",
    "cooking": "interest.cooking",
    "photography": "interest.photography",
    "running": "interest.fitness.running",
    "travel": "interest.travel",
}

PDL_SINGLE: dict[str, Any] = {
    "name": "socialscore",
    "type": "http_json",
    "base_url": "https://api.socialscore.example",
    "endpoint": "/v5/person/enrich",
    "identifier_forms": ["email_sha256", "phone_e164"],
    "form_params": {"email_sha256": "email_hash", "phone_e164": "phone"},
    "query_param": "{param}",
    "query": {"min_likelihood": "2"},
    "auth": {"header": "X-Api-Key", "scheme": None, "secret_env": "SOCIALSCORE_API_KEY"},
    "region": "US",
    "transfer_basis": "scc",
    "billing": "per_match",
    "budget": 100,
    "produces": ["interest"],
    "response": {
        "status": "status",
        "interests": "data.interests[*]",
        "score": "likelihood",
        "score_from": "item",
    },
    "score_scale": {"type": "likelihood_1_10"},
    "topic_map": PDL_TOPICS,
}

PDL_BULK: dict[str, Any] = {
    **PDL_SINGLE,
    "name": "socialscore_bulk",
    "endpoint": "/v5/person/bulk",
    "method": "POST",
    "mode": "batch",
    "batch_size": 100,
    "query_param": None,
    "query": {},
    "body": {"min_likelihood": 2},
    "batch": {"list_key": "requests", "id_key": "metadata.ref", "value_key": "params.{param}"},
    "response": {**PDL_SINGLE["response"], "items": "$[*]", "ref": "metadata.ref"},
}

AFFINITY: dict[str, Any] = {
    "name": "affinity",
    "type": "http_json",
    "base_url": "https://eu.affinity.example/api",
    "endpoint": "/v2/segments:batchLookup",
    "method": "POST",
    "mode": "batch",
    "batch_size": 50,
    "identifier_forms": ["email_sha256"],
    "batch": {"list_key": "lookups", "id_key": "id", "form_key": "type", "value_key": "value"},
    "region": "EU",
    "billing": "per_id",
    "produces": ["interest"],
    "response": {
        "items": "results[*]",
        "ref": "id",
        "status": "matched",
        "matched_values": [True],
        "no_match_values": [False],
        "interests": "segments[*]",
        "topic": "label",
        "score": "score",
        "observed_at": "updated_at",
    },
    "score_scale": {"type": "linear", "min": 0, "max": 100},
    "topic_map": {
        "Outdoor & Hiking": "interest.outdoors.hiking",
        "Home Cooking": "interest.cooking",
        "Travel": "interest.travel",
    },
}


def settings(raw: dict[str, Any], **changes: Any) -> HttpJsonSettings:
    """Validated settings from `raw` with `changes` applied."""
    return HttpJsonSettings.model_validate({**copy.deepcopy(raw), **changes})


def batch(*rows: tuple[str, str, str]) -> pd.DataFrame:
    """A lookup batch of (subject, form, value) rows."""
    return pd.DataFrame(rows, columns=["subject", "form", "value"])


def digest(n: int) -> str:
    """A distinct well-formed SHA-256 hex value."""
    return hashlib.sha256(f"person{n}@example.com".encode()).hexdigest()


Handler = Callable[[httpx.Request], httpx.Response]


def lookup(
    raw: dict[str, Any], rows: pd.DataFrame, handler: Handler
) -> tuple[LookupResult, ProviderClient, HttpJsonProvider]:
    """Build the provider and a ProviderClient on a mock transport; look up `rows`."""
    s = settings(raw)
    provider = HttpJsonProvider(s, secret=API_KEY if s.auth else None, clock=lambda: NOW)

    async def go() -> tuple[LookupResult, ProviderClient]:
        client = ProviderClient(
            s, billing=s.billing, transport=httpx.MockTransport(handler), sleep=_no_sleep
        )
        async with client:
            return await provider.lookup(rows, client), client

    result, client = run(go())
    return result, client, provider


# --- JSON paths ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "document", "found"),
    [
        ("$", {"a": 1}, [{"a": 1}]),
        ("a.b", {"a": {"b": 2}}, [2]),
        ("$.a.b", {"a": {"b": 2}}, [2]),
        ("a[1]", {"a": [1, 2, 3]}, [2]),
        ("a[-1]", {"a": [1, 2, 3]}, [3]),
        ("a[5]", {"a": [1, 2, 3]}, []),
        ("a[*].n", {"a": [{"n": 1}, {"n": 2}, {"m": 3}]}, [1, 2]),
        ("$[*]", [1, None, 2], [1, 2]),
        ('["odd.key"].x', {"odd.key": {"x": "y"}}, ["y"]),
        ('a["job-title"]', {"a": {"job-title": "t"}}, ["t"]),
        ("missing.deeper", {"a": 1}, []),
        ("a.b", {"a": None}, []),
        ("a.b", {"a": {"b": None}}, []),
        ("a[*][*]", {"a": [[1, 2], [3]]}, [1, 2, 3]),
        ("a", {"a": False}, [False]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_json_path_finds(text: str, document: Any, found: list[Any]) -> None:
    assert JsonPath.parse(text).find(document) == found


@pytest.mark.parametrize("text", ["a..b", "a[", "a[x]", "a.1b", "a b", "[*", 'a["x]', "a.*"])
def test_json_path_rejects_bad_syntax(text: str) -> None:
    with pytest.raises(ValueError, match="invalid JSON path"):
        JsonPath.parse(text)


@pytest.mark.parametrize(
    ("text", "document"),
    [("a.b", {"a": [1]}), ("a[0]", {"a": {"b": 1}}), ("a[*]", {"a": "text"}), ("x", [1, 2])],
)
def test_json_path_wrong_type_is_a_shape_error_naming_no_value(text: str, document: Any) -> None:
    with pytest.raises(PayloadShapeError) as info:
        JsonPath.parse(text).find(document)
    assert "text" not in str(info.value).replace(text, "")


def test_json_path_fans_out_only_with_star() -> None:
    assert JsonPath.parse("a[*].b").fans_out
    assert not JsonPath.parse("a[0].b").fans_out


# --- calibrations ------------------------------------------------------------------------------


def test_likelihood_calibration_is_the_documented_log_odds_scale() -> None:
    p = [likelihood_to_probability(n, p_at_1=0.5, odds_per_step=2.0) for n in range(1, 11)]
    assert p[0] == pytest.approx(0.5)
    assert p[1] == pytest.approx(2 / 3)
    assert p[2] == pytest.approx(0.8)
    assert p[9] == pytest.approx(512 / 513)
    assert all(a < b for a, b in itertools.pairwise(p))
    # One step is always the same factor on the odds.
    odds = [x / (1 - x) for x in p]
    assert all(math.isclose(b / a, 2.0) for a, b in itertools.pairwise(odds))


@pytest.mark.parametrize("bad", [0, 11, 2.5, -1])
def test_likelihood_outside_1_to_10_does_not_fit(bad: float) -> None:
    with pytest.raises(PayloadShapeError):
        likelihood_to_probability(bad, p_at_1=0.5, odds_per_step=2.0)


def test_linear_calibration_and_range() -> None:
    assert linear_to_probability(82, low=0, high=100) == pytest.approx(0.82)
    assert linear_to_probability(-1, low=-1, high=1) == 0.0
    with pytest.raises(PayloadShapeError):
        linear_to_probability(140, low=0, high=100)


# --- timestamps and identifiers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-06-30T08:15:00Z", datetime(2025, 6, 30, 8, 15, tzinfo=UTC)),
        ("2025-06-30T10:15:00+02:00", datetime(2025, 6, 30, 8, 15, tzinfo=UTC)),
        ("2025-06-30T08:15:00", datetime(2025, 6, 30, 8, 15, tzinfo=UTC)),
        ("2025-07-01", datetime(2025, 7, 1, tzinfo=UTC)),
        (1_751_270_400, datetime(2025, 6, 30, 8, 0, tzinfo=UTC)),
        ("2031-01-01T00:00:00Z", NOW),
    ],
    ids=["zulu", "offset", "naive-is-utc", "date", "epoch", "future-clamped"],
)
def test_parse_timestamp(value: Any, expected: datetime) -> None:
    parsed = parse_timestamp(value, now=NOW)
    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize("value", ["yesterday", True, {"t": 1}, float("nan"), "2025-13-01"])
def test_parse_timestamp_rejects(value: Any) -> None:
    with pytest.raises(PayloadShapeError):
        parse_timestamp(value, now=NOW)


@pytest.mark.parametrize(
    ("form", "value", "ok"),
    [
        (IdentifierForm.EMAIL_SHA256, EMAIL_HASH, True),
        (IdentifierForm.EMAIL_SHA256, EMAIL_HASH.upper(), False),
        (IdentifierForm.EMAIL_SHA256, EMAIL_HASH[:-1], False),
        (IdentifierForm.PHONE_E164, "+12025550143", True),
        (IdentifierForm.PHONE_E164, "2025550143", False),
        (IdentifierForm.EMAIL, "avery.quill@example.com", True),
        (IdentifierForm.EMAIL, " avery.quill@example.com", False),
        (IdentifierForm.EMAIL, None, False),
    ],
)
def test_identifier_ok(form: IdentifierForm, value: Any, ok: bool) -> None:
    assert identifier_ok(form, value) is ok


# --- mapping on saved samples -----------------------------------------------------------------


def test_pdl_single_sample_maps_to_calibrated_signals_and_drops_unknown_labels() -> None:
    outcome = map_item(
        sample("pdl_person_match.json"), response_shape(settings(PDL_SINGLE)), now=NOW
    )
    assert outcome.status is LookupStatus.MATCHED
    assert [s.topic for s in outcome.signals] == [
        "interest.cooking",
        "interest.outdoors.hiking",
        "interest.photography",  # "Photography": labels compare case-insensitively
    ]
    # likelihood 8 -> 128/129 = 0.992, capped at the 0.99 ceiling; the raw score is kept.
    assert {s.confidence for s in outcome.signals} == {0.99}
    assert {s.raw_score for s in outcome.signals} == {"8"}
    assert {s.observed_at for s in outcome.signals} == {NOW}
    # "politics" is never passed through: unmapped labels are counted and dropped.
    assert outcome.unmapped == ("politics", "birdwatching")


def test_pdl_not_found_body_is_a_no_match_by_its_status() -> None:
    outcome = map_item(
        sample("pdl_person_not_found.json"), response_shape(settings(PDL_SINGLE)), now=NOW
    )
    assert outcome.status is LookupStatus.NO_MATCH


def test_pdl_bulk_sample_with_mixed_items() -> None:
    shape = response_shape(settings(PDL_BULK))
    outcomes = map_batch(
        sample("pdl_bulk_mixed.json"), shape, refs=["0", "1", "2", "3", "4"], now=NOW
    )
    assert [(o.status, o.reason) for o in outcomes] == [
        (LookupStatus.MATCHED, None),
        (LookupStatus.NO_MATCH, None),
        (LookupStatus.FAILED, BAD_PAYLOAD),  # interests is a string, not a list
        (LookupStatus.MATCHED, None),
        (LookupStatus.FAILED, BAD_PAYLOAD),  # likelihood 11 is off the 1-10 scale
    ]
    # "running" twice makes one signal.
    assert [s.topic for s in outcomes[0].signals] == [
        "interest.cooking",
        "interest.fitness.running",
    ]
    assert outcomes[3].signals[0].confidence == pytest.approx(0.8)  # likelihood 3
    assert outcomes[3].unmapped == ("crossfit",)


def test_pdl_bulk_sample_matches_by_ref_whatever_the_order() -> None:
    shape = response_shape(settings(PDL_BULK))
    items = sample("pdl_bulk_mixed.json")
    forward = map_batch(items, shape, refs=["0", "1", "2", "3", "4"], now=NOW)
    backward = map_batch(items[::-1], shape, refs=["0", "1", "2", "3", "4"], now=NOW)
    assert forward == backward


def test_affinity_sample_per_topic_scores_topic_field_and_observed_at() -> None:
    shape = response_shape(settings(AFFINITY))
    outcomes = map_batch(sample("affinity_batch.json"), shape, refs=["0", "1", "2", "3"], now=NOW)
    assert [(o.status, o.reason) for o in outcomes] == [
        (LookupStatus.NO_MATCH, None),
        (LookupStatus.MATCHED, None),
        (LookupStatus.FAILED, BAD_PAYLOAD),  # score 140 on a 0-100 scale
        (LookupStatus.FAILED, MISSING_ITEM),  # the provider left ref 3 out
    ]
    signals = {s.topic: s for s in outcomes[1].signals}
    assert signals["interest.outdoors.hiking"].confidence == pytest.approx(0.82)
    assert signals["interest.outdoors.hiking"].raw_score == "82"
    assert signals["interest.cooking"].confidence == pytest.approx(0.55)
    assert signals["interest.cooking"].observed_at == datetime(2025, 6, 30, 8, 15, tzinfo=UTC)
    assert outcomes[1].unmapped == ("gambling",)


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"results": "nope"}, BAD_PAYLOAD),
        ({"results": None}, MISSING_ITEM),
        ({"other": []}, MISSING_ITEM),
        ({"results": [{"id": "0", "matched": False}, {"id": "0", "matched": True}]}, BAD_PAYLOAD),
        ({"results": [{"id": "0", "matched": "maybe"}]}, ITEM_ERROR),
        ({"results": [{"id": "0"}]}, BAD_PAYLOAD),
        (
            {"results": [{"id": "0", "matched": True, "segments": [{"label": 3, "score": 1}]}]},
            BAD_PAYLOAD,
        ),
        (
            {"results": [{"id": "0", "matched": True, "segments": [{"label": "Travel"}]}]},
            BAD_PAYLOAD,
        ),
        ({"results": [{"id": "0", "matched": True, "updated_at": "soon"}]}, BAD_PAYLOAD),
        (
            {
                "results": [
                    {"id": "0", "matched": True, "segments": [{"label": "Travel", "score": True}]}
                ]
            },
            BAD_PAYLOAD,
        ),
        ({"results": ["not an object"]}, MISSING_ITEM),
        ([1, 2], BAD_PAYLOAD),
    ],
    ids=[
        "items-not-a-list",
        "items-null",
        "items-missing",
        "duplicate-ref",
        "unknown-status",
        "status-missing",
        "label-not-text",
        "score-missing",
        "bad-timestamp",
        "score-boolean",
        "unattributable-item",
        "not-an-object",
    ],
)
def test_batch_payloads_that_do_not_fit_fail_without_crashing(document: Any, reason: str) -> None:
    outcomes = map_batch(document, response_shape(settings(AFFINITY)), refs=["0"], now=NOW)
    assert [(o.status, o.reason) for o in outcomes] == [(LookupStatus.FAILED, reason)]


def test_batch_in_order_needs_as_many_items_as_requests() -> None:
    raw = copy.deepcopy(PDL_BULK)
    raw["response"]["ref"] = None
    shape = response_shape(settings(raw))
    items = sample("pdl_bulk_mixed.json")
    assert [o.status for o in map_batch(items[:2], shape, refs=["0", "1"], now=NOW)] == [
        LookupStatus.MATCHED,
        LookupStatus.NO_MATCH,
    ]
    short = map_batch(items[:2], shape, refs=["0", "1", "2"], now=NOW)
    assert {o.reason for o in short} == {BAD_PAYLOAD}


def test_a_matched_item_without_interests_is_a_match_with_no_signals() -> None:
    outcome = map_item(
        {"status": 200, "likelihood": 5, "data": {"interests": None}},
        response_shape(settings(PDL_SINGLE)),
        now=NOW,
    )
    assert outcome.status is LookupStatus.MATCHED
    assert outcome.signals == ()


def test_constant_scale_without_score() -> None:
    raw = copy.deepcopy(PDL_SINGLE)
    raw["response"]["score"] = None
    raw["score_scale"] = {"type": "constant", "confidence": 0.6}
    outcome = map_item(sample("pdl_person_match.json"), response_shape(settings(raw)), now=NOW)
    assert {(s.confidence, s.raw_score) for s in outcome.signals} == {(0.6, None)}


# --- settings ----------------------------------------------------------------------------------


def _errors(raw: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as info:
        HttpJsonSettings.model_validate(raw)
    return [(tuple(e["loc"]), e["msg"]) for e in info.value.errors()]


def _with(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    node[last] = value
    return out


@pytest.mark.parametrize(
    ("raw", "loc", "message"),
    [
        (_with(PDL_SINGLE, "batch_size", 5), ("batch_size",), "must be 1 in single mode"),
        (_with(PDL_BULK, "batch", None), ("batch",), "needs a batch layout"),
        (_with(PDL_BULK, "method", "GET"), ("body",), "GET request has no body"),
        (_with(PDL_SINGLE, "headers", {"X-Api-Key": "abc"}), ("headers",), "credential"),
        (_with(PDL_SINGLE, "query", {"api_key": "abc"}), ("query",), "credential"),
        (_with(PDL_SINGLE, "query", {"q": "{email}"}), ("query",), "unknown placeholder {email}"),
        (_with(PDL_SINGLE, "topic_map", {"x": "segment.x"}), ("topic_map",), "not under produces"),
        (
            _with(PDL_SINGLE, "topic_map", {"X": "interest.a", " x ": "interest.b"}),
            ("topic_map",),
            "same label",
        ),
        (
            _with(PDL_SINGLE, "score_scale", {"type": "constant", "confidence": 0.5}),
            ("score_scale",),
            "response.score is set",
        ),
        (_with(PDL_SINGLE, "query_param", None), (), "identifier is not sent"),
        (
            _with(PDL_SINGLE, "base_url", "https://user:pw@api.example"),
            ("base_url",),
            "credentials",
        ),
        (_with(PDL_SINGLE, "base_url", "ftp://api.example"), ("base_url",), "http"),
        (_with(PDL_SINGLE, "auth.secret_env", "sk_live_abc123"), ("auth", "secret_env"), "pattern"),
        (
            _with(PDL_SINGLE, "auth", {"secret_env": "A", "secret_block": "b"}),
            ("auth",),
            "exactly one",
        ),
        (_with(PDL_SINGLE, "response.interests", "data.interests"), ("response",), "[*]"),
        (
            _with(PDL_SINGLE, "response.score", "likelihood..x"),
            ("response", "score"),
            "invalid JSON path",
        ),
        (
            _with(PDL_SINGLE, "form_params", {"email": "e"}),
            ("form_params",),
            "not in identifier_forms",
        ),
        (_with(PDL_SINGLE, "identifier_forms", ["email", "email"]), ("identifier_forms",), "twice"),
        (_with(PDL_BULK, "response.items", None), (), "response.items"),
        (_with(PDL_BULK, "body", {"when": datetime(2025, 1, 1)}), ("body",), "plain JSON"),
        (_with(PDL_SINGLE, "api_key", "abc"), ("api_key",), "Extra inputs"),
        (
            _with(PDL_SINGLE, "score_scale", {"type": "linear", "min": 5, "max": 5}),
            ("score_scale", "linear"),
            "greater than min",
        ),
    ],
    ids=lambda v: None,
)
def test_settings_errors(raw: dict[str, Any], loc: tuple[Any, ...], message: str) -> None:
    errors = _errors(raw)
    assert any(e_loc == loc and message in msg for e_loc, msg in errors), errors


@pytest.mark.parametrize(
    "raw", [PDL_SINGLE, PDL_BULK, AFFINITY], ids=["single", "bulk", "affinity"]
)
def test_example_settings_validate(raw: dict[str, Any]) -> None:
    assert settings(raw).name == raw["name"]


# --- requests through the ProviderClient -------------------------------------------------------


def test_single_mode_request_shape_auth_and_billing() -> None:
    seen: list[httpx.Request] = []
    match = json.dumps(sample("pdl_person_match.json")).encode()
    miss = json.dumps(sample("pdl_person_not_found.json")).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        found = request.url.params.get("email_hash") == EMAIL_HASH
        return httpx.Response(200 if found else 404, content=match if found else miss)

    rows = batch(("p1", "email_sha256", EMAIL_HASH))
    result, client, _ = lookup(PDL_SINGLE, rows, handler)
    request = seen[0]
    assert request.method == "GET"
    assert request.url.path == "/v5/person/enrich"
    assert dict(request.url.params) == {"min_likelihood": "2", "email_hash": EMAIL_HASH}
    assert request.headers["X-Api-Key"] == API_KEY
    assert result.outcomes.to_dict("records") == [
        {"subject": "p1", "status": "matched", "reason": None, "billable": True}
    ]
    assert client.budget_remaining == 99  # per match: charged after the call

    result, client, _ = lookup(PDL_SINGLE, batch(("p2", "email_sha256", digest(2))), handler)
    assert result.outcomes.loc[0, "status"] == "no_match"
    assert not result.outcomes.loc[0, "billable"]
    assert client.budget_remaining == 100
    assert len(result.signals) == 0


def test_single_mode_value_in_the_path_is_url_encoded() -> None:
    raw = {**PDL_SINGLE, "endpoint": "/person/{param}/{value}", "query_param": None}
    raw["identifier_forms"] = ["phone_e164"]
    raw["form_params"] = {"phone_e164": "phone"}
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(404)

    result, _, _ = lookup(raw, batch(("p1", "phone_e164", "+12025550143")), handler)
    assert seen[0].url.raw_path.decode() == "/person/phone/%2B12025550143?min_likelihood=2"
    assert result.outcomes.loc[0, "status"] == "no_match"


def test_rows_the_provider_cannot_take_are_never_sent() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(404)

    rows = batch(("p1", "email", "avery.quill@example.com"))
    result, _, _ = lookup(PDL_SINGLE, rows, handler)
    assert (result.outcomes.loc[0, "status"], result.outcomes.loc[0, "reason"]) == (
        "failed",
        FORM_NOT_ACCEPTED,
    )
    result, _, _ = lookup(PDL_SINGLE, batch(("p1", "email_sha256", "not-a-digest")), handler)
    assert result.outcomes.loc[0, "reason"] == BAD_IDENTIFIER
    assert not result.outcomes.loc[0, "billable"]
    assert seen == []


def test_batch_mode_body_layout_and_mixed_response() -> None:
    seen: list[Any] = []
    body = json.dumps(sample("pdl_bulk_mixed.json")).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, content=body)

    rows = batch(*[(f"p{i}", "email_sha256", digest(i)) for i in range(5)])
    result, client, provider = lookup(PDL_BULK, rows, handler)
    assert seen == [
        {
            "min_likelihood": 2,
            "requests": [
                {"metadata": {"ref": str(i)}, "params": {"email_hash": digest(i)}} for i in range(5)
            ],
        }
    ]
    assert result.outcomes["status"].tolist() == [
        "matched",
        "no_match",
        "failed",
        "matched",
        "failed",
    ]
    assert result.outcomes["billable"].tolist() == [True, False, False, True, False]
    assert client.budget_remaining == 98
    assert sorted(set(result.signals["subject"])) == ["p0", "p3"]
    assert provider.unmapped_labels == {"crossfit": 1}


def test_batch_mode_with_form_key_and_per_id_billing() -> None:
    seen: list[Any] = []
    body = json.dumps(sample("affinity_batch.json")).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, content=body)

    rows = batch(*[(f"p{i}", "email_sha256", digest(i)) for i in range(3)])
    result, _, _ = lookup(AFFINITY, rows, handler)
    assert seen[0]["lookups"][1] == {"id": "1", "type": "email_sha256", "value": digest(1)}
    assert result.outcomes["billable"].tolist() == [True, True, True]
    signals = result.signals
    assert list(signals.columns) == list(SIGNAL_COLUMNS)
    assert str(signals["observed_at"].dt.tz) == "UTC"
    assert set(signals["kind"]) == {"inferred"}


@pytest.mark.parametrize(
    ("status", "content"),
    [(400, b'{"error": "bad"}'), (500, b"oops"), (200, b"<html>not json</html>")],
    ids=["client-error", "server-error", "not-json"],
)
def test_failed_calls_raise_provider_errors_without_identifiers(
    status: int, content: bytes
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content)

    rows = batch(("p1", "email_sha256", EMAIL_HASH))
    # a failed batch request fails the whole batch: the stage marks its rows failed
    with pytest.raises(ProviderError) as info:
        lookup({**PDL_BULK, "retries": 0}, rows, handler)
    assert EMAIL_HASH not in str(info.value)
    assert API_KEY not in str(info.value)
    # a failed single request fails its row only, with the error's reason code
    result, _, _ = lookup({**PDL_SINGLE, "retries": 0}, rows, handler)
    [row] = result.outcomes.to_dict("records")
    assert row["status"] == "failed"
    assert row["reason"] == info.value.reason


def test_batch_larger_than_rows_per_lookup_is_refused() -> None:
    rows = batch(*((f"p{i}", "email_sha256", digest(i)) for i in range(SINGLE_LOOKUP_ROWS + 1)))
    with pytest.raises(ProviderError, match=f"exceeds the {SINGLE_LOOKUP_ROWS} rows per lookup"):
        lookup(PDL_SINGLE, rows, lambda r: httpx.Response(404))


def test_single_mode_looks_up_rows_concurrently_and_fails_them_one_by_one() -> None:
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        value = request.url.params["email_hash"]
        sent.append(value)
        if value == digest(2):
            return httpx.Response(400)
        return httpx.Response(404)

    rows = batch(*((f"p{i}", "email_sha256", digest(i)) for i in range(5)))
    result, _, _ = lookup({**PDL_SINGLE, "retries": 0}, rows, handler)
    assert sorted(sent) == sorted(digest(i) for i in range(5))
    statuses = dict(zip(result.outcomes["subject"], result.outcomes["status"], strict=True))
    assert statuses == {f"p{i}": "failed" if i == 2 else "no_match" for i in range(5)}


def test_outcome_frame_has_the_contract_columns() -> None:
    result, _, _ = lookup(
        PDL_SINGLE, batch(("p1", "email_sha256", digest(1))), lambda r: httpx.Response(404)
    )
    assert list(result.outcomes.columns) == list(OUTCOME_COLUMNS)


# --- secrets and request parameters ------------------------------------------------------------


def test_missing_or_malformed_secret_is_key_material_error_without_value() -> None:
    with pytest.raises(KeyMaterialError, match="none given"):
        HttpJsonProvider(settings(PDL_SINGLE))
    with pytest.raises(KeyMaterialError) as info:
        HttpJsonProvider(settings(PDL_SINGLE), secret="two words")
    assert "two words" not in str(info.value)


def test_request_parameters_are_stable_json_and_secret_free() -> None:
    provider = HttpJsonProvider(settings(PDL_SINGLE), secret=API_KEY)
    params = provider.request_parameters()
    text = json.dumps(params, sort_keys=True)
    assert text == json.dumps(
        HttpJsonProvider(settings(PDL_SINGLE), secret="other").request_parameters(), sort_keys=True
    )
    assert API_KEY not in text
    assert "SOCIALSCORE_API_KEY" not in text
    assert params["authenticated"] is True
    assert API_KEY not in repr(provider)
    # Runtime knobs do not change the answer; the mapping does.
    assert (
        HttpJsonProvider(settings(PDL_SINGLE, retries=0), secret=API_KEY).request_parameters()
        == params
    )
    other = settings(PDL_SINGLE, topic_map={**PDL_TOPICS, "wine": "interest.food_drink"})
    assert HttpJsonProvider(other, secret=API_KEY).request_parameters() != params


def test_auth_secret_slot_name() -> None:
    assert AUTH_SECRET == "auth.secret"


def test_clock_default_is_utc_now() -> None:
    provider = HttpJsonProvider(settings(AFFINITY))
    assert abs(provider._clock() - datetime.now(UTC)) < timedelta(seconds=5)
    assert provider.capabilities.billing is Billing.PER_ID
