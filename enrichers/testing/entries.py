"""enrich.yaml provider entries that fit the local provider server, one per simulated provider.

The entries use the shipped plugins unchanged (`http_json` in single and in batch mode, and
`gravatar`), so a run against the local server exercises exactly the code a run against a
real vendor does. Their topic maps invert `enrichers.testing.world.LABELS`, so every label
the server sends maps onto the taxonomy keys the world file uses. All three declare region
EU: the server runs on this machine, and a US region would only make the default policy deny
every lookup for want of a transfer basis.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from enrichers.testing.knobs import Endpoint
from enrichers.testing.world import LABELS

NAMES: Final[Mapping[Endpoint, str]] = {
    Endpoint.PERSON: "sim_person",
    Endpoint.SEGMENTS: "sim_segments",
    Endpoint.GRAVATAR: "sim_gravatar",
}
"""Provider instance name of each simulated provider in the entries."""

# Concurrency 50, from bench/providers.py against the server at 20 ms latency on the 2-core
# machine: 10 connections cap a single-lookup provider at 500 lookups/s (10 / 20 ms), too few
# for a million-row night's ~70,000 per provider in a minute, and every lookup costs more CPU
# at 10 than at 50, on both sides (client 0.58 against 0.48 ms, server 0.29 against 0.22 ms),
# because the event loops handle fewer answers per wake-up. The rate limit sits above what 50
# connections at 20 ms can do (2,500 requests/s), so it never sets the pace against the local
# server; the fault tests set their own limits.
_COMMON: Final[Mapping[str, Any]] = {
    "timeout_seconds": 5.0,
    "connect_timeout_seconds": 2.0,
    "concurrency": 50,
    "rate_limit": {"per_second": 2500.0, "burst": 250},
    "retries": 3,
    "backoff_seconds": 0.2,
    "max_backoff_seconds": 5.0,
}


def _topic_map(endpoint: Endpoint) -> dict[str, str]:
    return {label: topic for topic, label in LABELS[endpoint].items()}


def provider_entries(
    base_url: str, *, overrides: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Entries for `enrichment.providers` calling the server at `base_url`.

    One `http_json` single-lookup entry (`sim_person`, GET /v1/person, per-interest
    probabilities), one `http_json` batch entry (`sim_segments`, POST /v1/segments/batch,
    100 per request, 0-100 scores) and one `gravatar` entry (`sim_gravatar`). `overrides`
    (e.g. `{"timeout_seconds": 0.5, "retries": 1}`) replace those keys in all three.
    """
    base_url = base_url.rstrip("/")
    person: dict[str, Any] = {
        "name": NAMES[Endpoint.PERSON],
        "type": "http_json",
        "base_url": base_url,
        "endpoint": "/v1/person",
        "identifier_forms": ["email_sha256", "phone_sha256", "phone_e164"],
        "query_param": "{param}",
        "region": "EU",
        "billing": "per_match",
        "produces": ["interest"],
        "response": {
            "status": "status",
            "interests": "data.interests[*]",
            "topic": "name",
            "score": "score",
            "observed_at": "data.updated_at",
        },
        "score_scale": {"type": "probability"},
        "topic_map": _topic_map(Endpoint.PERSON),
    }
    segments: dict[str, Any] = {
        "name": NAMES[Endpoint.SEGMENTS],
        "type": "http_json",
        "base_url": base_url,
        "endpoint": "/v1/segments/batch",
        "method": "POST",
        "mode": "batch",
        "batch_size": 100,
        "identifier_forms": ["email_sha256", "phone_sha256"],
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
        "topic_map": _topic_map(Endpoint.SEGMENTS),
    }
    gravatar: dict[str, Any] = {
        "name": NAMES[Endpoint.GRAVATAR],
        "type": "gravatar",
        "base_url": base_url,
        "region": "EU",
        "default_topic_map": False,
        "topic_map": _topic_map(Endpoint.GRAVATAR),
    }
    entries = [person, segments, gravatar]
    for entry in entries:
        entry.update(copy.deepcopy(dict(_COMMON)))
        entry.update(copy.deepcopy(dict(overrides or {})))
    return entries
