"""The local provider server: real HTTP on 127.0.0.1, driven through the real ProviderClient
and the shipped providers built from `provider_entries`.

Each test starts its own server (a few milliseconds) with the knobs it needs; client settings
use sub-second timeouts and back-offs so that faults cost little time. The world-mode tests
check the simulated providers' rates statistically, with tolerances of about three standard
errors.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from enrichers.base import Provider, ProviderSettings
from enrichers.http.client import ProviderClient
from enrichers.http.stats import ClientStats
from enrichers.registry import build, parse_settings
from enrichers.stage import LookupRun, lookup_all
from enrichers.testing import (
    LABELS,
    NAMES,
    TOPICS,
    Endpoint,
    Knobs,
    World,
    WorldError,
    provider_entries,
)
from enrichers.testing.knobs import FaultState, draws, request_key, seconds_text
from enrichers.testing.server import ProviderServer
from enrichers.testing.world import WorldLine, identity_key
from profiles import synth

PERSON, SEGMENTS, GRAVATAR = (NAMES[e] for e in Endpoint)
FAST: dict[str, Any] = {
    "timeout_seconds": 1.0,
    "connect_timeout_seconds": 1.0,
    "retries": 2,
    "backoff_seconds": 0.01,
    "max_backoff_seconds": 2.0,
    "rate_limit": {"per_second": 1000.0, "burst": 100},
    "breaker": {"failures": 1000, "cooldown_seconds": 1.0},
}
ALWAYS: dict[str, Any] = {
    "profiles": {e.value: {"match_rate": 1.0, "hit_rate": 1.0} for e in Endpoint}
}
"""Knobs under which every identifier matches with at least one topic (given a world)."""


def digest(n: int, prefix: str = "person") -> str:
    """A distinct SHA-256 hex value, as an email hash."""
    return hashlib.sha256(f"{prefix}{n}@example.com".encode()).hexdigest()


def requests(values: list[str], form: str = "email_sha256") -> pd.DataFrame:
    """A lookup batch: subject s<i> for the i-th value."""
    return pd.DataFrame(
        {"subject": [f"s{i}" for i in range(len(values))], "form": form, "value": values}
    )


def providers(base_url: str, **overrides: Any) -> dict[str, tuple[Provider, ProviderSettings]]:
    """The three simulated providers, built by the registry from `provider_entries`."""
    entries = provider_entries(base_url, overrides={**FAST, **overrides})
    parsed = parse_settings(entries, path=Path("enrich.yaml"))
    return {s.name: (build(s, lambda ref: ""), s) for s in parsed}


def enrich(
    server: ProviderServer, name: str, batch: pd.DataFrame, **overrides: Any
) -> tuple[LookupRun, ClientStats]:
    """Look `batch` up at provider `name` of `server` through a fresh ProviderClient."""
    provider, settings = providers(server.base_url, **overrides)[name]

    async def go() -> tuple[LookupRun, ClientStats]:
        client = ProviderClient(settings, billing=provider.capabilities.billing)
        async with client:
            return await lookup_all(provider, client, batch), client.stats

    return asyncio.run(go())


def statuses(run: LookupRun) -> dict[str, int]:
    """Outcome counts by status."""
    return {str(k): int(v) for k, v in run.outcomes["status"].value_counts().items()}


def port_is_closed(port: int) -> bool:
    """Whether nothing accepts connections on 127.0.0.1:port."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def server_threads() -> list[threading.Thread]:
    """Live threads started by ProviderServer."""
    return [t for t in threading.enumerate() if t.name.startswith("provider-server-")]


# --- entries and end-to-end lookups ------------------------------------------------------------


def test_entries_parse_and_every_provider_enriches_end_to_end() -> None:
    ids = [digest(n) for n in range(40)]
    with ProviderServer(knobs={"seed": 3}) as server:
        for name in (PERSON, SEGMENTS, GRAVATAR):
            run, stats = enrich(server, name, requests(ids))
            counts = statuses(run)
            assert set(counts) <= {"matched", "no_match"}, (name, counts)
            assert sum(counts.values()) == len(ids)
            assert counts.get("matched", 0) >= 4, name
            assert len(run.signals), name
            assert set(run.signals["topic"]) <= set(TOPICS)
            assert set(run.signals["provider"]) == {name}
            assert run.signals["confidence"].between(0, 1, inclusive="neither").all()
            assert stats.failures == {}
            provider, _ = providers(server.base_url)[name]
            assert getattr(provider, "unmapped_labels", None) == {}
        received = server.received()
    assert received.groupby("endpoint")["value"].apply(set).to_dict() == {
        "person": set(ids),
        "segments": set(ids),
        "gravatar": set(ids),
    }
    assert set(received["form"]) == {"email_sha256"}
    assert len(received) == 3 * len(ids)


def test_topic_maps_cover_every_label_and_topics_are_taxonomy_keys() -> None:
    pattern = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
    assert all(pattern.match(t) for t in TOPICS)
    entries = {e["name"]: e for e in provider_entries("http://127.0.0.1:9/")}
    assert {e["base_url"] for e in entries.values()} == {"http://127.0.0.1:9"}
    for endpoint, name in NAMES.items():
        assert sorted(entries[name]["topic_map"].values()) == sorted(TOPICS)
        assert set(entries[name]["topic_map"]) == set(LABELS[endpoint].values())
    # synth's world uses exactly these topics
    written = {f"interest.{c}" for c in synth._CATEGORIES} | set(synth._INTEREST_TOPICS)
    assert written == set(TOPICS)
    changed = provider_entries("http://x.example", overrides={"retries": 0, "concurrency": 3})
    assert {(e["retries"], e["concurrency"]) for e in changed} == {(0, 3)}


def test_single_endpoint_takes_every_form_and_hashes_clear_values_on_receipt() -> None:
    email, phone = "  Avery.Quill@Example.COM ", "+4520123456"
    email_hash = hashlib.sha256(email.strip().lower().encode()).hexdigest()
    phone_hash = hashlib.sha256(phone.encode()).hexdigest()
    with ProviderServer(knobs=ALWAYS) as server, httpx.Client(base_url=server.base_url) as http:
        url = "/v1/person"
        by_email = http.get(url, params={"email": email}).json()
        assert http.get(url, params={"email_sha256": email_hash}).json() == by_email
        assert http.get(url, params={"email_sha256": email_hash.upper()}).json() == by_email
        by_phone = http.get(url, params={"phone_e164": phone}).json()
        assert http.get(url, params={"phone_sha256": phone_hash}).json() == by_phone
        assert by_email["status"] == 200
        assert by_email != by_phone
        assert http.get(url, params={"phone_e164": "12345"}).status_code == 400
        assert http.get(url).status_code == 400
        two = {"email_sha256": email_hash, "phone_sha256": phone_hash}
        assert http.get(url, params=two).status_code == 400
        bad = http.post("/v1/segments/batch", content=b"[1, 2]")
        assert bad.status_code == 400
        item = {"id": "7", "type": "email_sha256", "value": "not-a-hash"}
        answer = http.post("/v1/segments/batch", json={"lookups": [item]}).json()
        assert answer == {"results": [{"id": "7", "matched": None, "error": "invalid_identifier"}]}
        assert http.get("/v3/profiles/not-a-hash").status_code == 404
        assert server.stats()["invalid"] == 3
        received = server.received()
    assert list(received["form"][:2]) == ["email", "email_sha256"]
    assert received["value"][0] == email  # recorded exactly as it arrived


# --- determinism --------------------------------------------------------------------------------


def _answers(seed: int, ids: list[str]) -> pd.DataFrame:
    with ProviderServer(knobs={"seed": seed}) as server:
        run, _ = enrich(server, SEGMENTS, requests(ids))
        again, _ = enrich(server, SEGMENTS, requests(ids))
    columns = ["subject", "topic", "confidence", "raw_score"]
    signals = run.signals[columns].sort_values(["subject", "topic"]).reset_index(drop=True)
    repeat = again.signals[columns].sort_values(["subject", "topic"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(signals, repeat)
    return signals


def test_answers_depend_only_on_the_seed_and_the_identifier() -> None:
    ids = [digest(n) for n in range(200)]
    first, second, other = _answers(5, ids), _answers(5, ids), _answers(6, ids)
    pd.testing.assert_frame_equal(first, second)
    assert not first.equals(other)


def test_faults_are_drawn_per_request_not_per_arrival_order() -> None:
    key = request_key("person", [digest(1)])
    assert draws(1, key, 0) == draws(1, key, 0)
    assert draws(1, key, 0) != draws(1, key, 1)
    assert draws(1, key, 0) != draws(2, key, 0)
    assert key != request_key("segments", [digest(1)])
    ids = [digest(n) for n in range(60)]
    failed: list[set[str]] = []
    for _ in range(2):
        with ProviderServer(knobs={"error_rate": 0.3}) as server:
            run, _ = enrich(server, PERSON, requests(ids), retries=0, concurrency=8)
        failed.append(set(run.outcomes.loc[run.outcomes["status"] == "failed", "subject"]))
    assert failed[0] == failed[1]
    assert 5 < len(failed[0]) < 35


# --- fault knobs --------------------------------------------------------------------------------


def test_latency_is_added_to_every_answer() -> None:
    with ProviderServer(knobs={"latency_ms": 60, "jitter_ms": 10}) as server:
        _, stats = enrich(server, PERSON, requests([digest(n) for n in range(6)]))
    assert 0.05 <= stats.p50 < 0.5
    assert min(stats.latencies) >= 0.05


def test_server_errors_are_retried_and_every_subject_accounted() -> None:
    ids = [digest(n) for n in range(40)]
    with ProviderServer(knobs={"error_rate": 0.5, "seed": 2}) as server:
        run, stats = enrich(server, PERSON, requests(ids), retries=4)
        served = server.stats()
    counts = statuses(run)
    assert sum(counts.values()) == len(ids)
    assert counts.get("matched", 0) + counts.get("no_match", 0) >= 32
    assert set(run.failed_reasons) <= {"server_error"}
    assert stats.failures.get("server_error", 0) == counts.get("failed", 0)
    assert stats.statuses[503] == served["errors"] == served["statuses"]["503"] >= 10
    assert stats.retries == served["errors"] - counts.get("failed", 0)
    assert stats.attempts == served["requests"]

    with ProviderServer(knobs={"error_rate": 1.0, "error_status": 500}) as server:
        run, stats = enrich(server, SEGMENTS, requests(ids), retries=1)
        served = server.stats()
    assert statuses(run) == {"failed": len(ids)}
    assert set(run.outcomes["reason"]) == {"server_error"}
    assert served["requests"] == served["statuses"]["500"] == 2  # one batch, tried twice


def test_a_429_storm_is_waited_out_as_retry_after_says() -> None:
    with ProviderServer(knobs={"storm_requests": 3, "storm_retry_after": 0.2}) as server:
        start = time.monotonic()
        run, stats = enrich(server, PERSON, requests([digest(1)]), retries=4)
        elapsed = time.monotonic() - start
        served = server.stats()
    assert set(statuses(run)) <= {"matched", "no_match"}
    assert stats.throttled == served["storm"] == served["throttled"] == 3
    assert elapsed >= 0.55  # three pauses of 0.2 s, not an immediate retry
    assert stats.statuses[429] == 3


def test_a_timed_storm_set_over_http_ends_and_everything_gets_through() -> None:
    ids = [digest(n) for n in range(5)]
    with ProviderServer() as server:
        admin = httpx.post(
            f"{server.base_url}/_admin/knobs",
            json={"storm_seconds": 0.5, "storm_retry_after": 0.2},
        )
        assert admin.status_code == 200
        assert admin.json()["storm_seconds"] == 0.5
        start = time.monotonic()
        run, stats = enrich(server, GRAVATAR, requests(ids), retries=6)
        elapsed = time.monotonic() - start
    assert set(statuses(run)) <= {"matched", "no_match"}
    assert stats.throttled >= 1
    assert elapsed >= 0.4


def test_the_rate_limit_answers_429_with_headers_and_the_client_keeps_pace() -> None:
    ids = [digest(n) for n in range(60)]
    with ProviderServer(knobs={"rate_limit": 10}) as server:  # 10 per 1 s window
        answers = [httpx.get(f"{server.base_url}/v3/profiles/{digest(0)}") for _ in range(12)]
        assert [a.status_code for a in answers] == [404] * 10 + [429] * 2
        assert answers[0].headers["X-RateLimit-Limit"] == "10"
        assert answers[0].headers["X-RateLimit-Remaining"] == "9"
        assert answers[9].headers["X-RateLimit-Remaining"] == "0"
        assert 0 < float(answers[0].headers["X-RateLimit-Reset"]) <= 1
        refused = answers[-1].headers
        assert refused["X-RateLimit-Remaining"] == "0"
        assert 0 < float(refused["Retry-After"]) == float(refused["X-RateLimit-Reset"]) < 1
        server.set_knobs(rate_limit=100, rate_limit_window_seconds=0.1)  # 10 per 0.1 s
        start = time.monotonic()
        run, stats = enrich(server, PERSON, requests(ids), retries=6, concurrency=10)
        elapsed = time.monotonic() - start
        served = server.stats()
    assert set(statuses(run)) <= {"matched", "no_match"}
    assert elapsed >= 0.45  # 60 requests at 10 per 0.1 s
    assert stats.throttled == served["rate_limited"] - 2  # the two refused above
    assert stats.rate_limit_wait_seconds > 0


def test_rate_limit_windows_and_storms_count_exactly() -> None:
    knobs = Knobs(rate_limit=20, rate_limit_window_seconds=0.5)  # 10 per window
    state = FaultState()
    answers = [state.admit(knobs, 100.0 + i * 0.01) for i in range(12)]
    assert [ok for ok, _ in answers] == [True] * 10 + [False] * 2
    assert answers[0][1]["X-RateLimit-Remaining"] == "9"
    assert answers[10][1]["Retry-After"] == "0.4"
    ok, headers = state.admit(knobs, 100.5)
    assert ok
    assert headers["X-RateLimit-Remaining"] == "9"
    assert state.admit(Knobs(), 0.0) == (True, {})
    storm = FaultState()
    storm.arm_storm(Knobs(storm_requests=2, storm_seconds=1.0), 10.0)
    assert [storm.in_storm(t) for t in (10.5, 10.9)] == [True, True]
    assert [storm.in_storm(t) for t in (11.0, 11.1, 11.2)] == [True, True, False]
    assert [seconds_text(s) for s in (1.0, 0.25, 2.0004, -1)] == ["1", "0.25", "2", "0"]


def test_malformed_json_fails_each_provider_with_its_reason_and_no_retry() -> None:
    ids = [digest(n) for n in range(4)]
    with ProviderServer(knobs={"malformed_rate": 1.0, **ALWAYS}) as server:
        raw = httpx.get(f"{server.base_url}/v1/person", params={"email_sha256": ids[0]})
        with pytest.raises(json.JSONDecodeError):
            json.loads(raw.content)
        assert raw.status_code == 200
        for name in (PERSON, SEGMENTS, GRAVATAR):
            run, stats = enrich(server, name, requests(ids))
            assert statuses(run) == {"failed": len(ids)}, name
            assert set(run.outcomes["reason"]) == {"malformed_json"}
            assert stats.retries == 0
        assert server.stats()["malformed"] == 1 + 4 + 1 + 4


def test_timeouts_are_retried_then_fail_and_do_not_delay_shutdown() -> None:
    ids = [digest(n) for n in range(3)]
    server = ProviderServer(knobs={"timeout_rate": 1.0, "timeout_seconds": 20}).start()
    try:
        start = time.monotonic()
        run, stats = enrich(server, PERSON, requests(ids), timeout_seconds=0.2, retries=1)
        assert time.monotonic() - start < 3
        assert statuses(run) == {"failed": 3}
        assert set(run.outcomes["reason"]) == {"timeout"}
        assert stats.timeouts == 6
        assert server.stats()["timeouts"] == 6
    finally:
        start = time.monotonic()
        server.stop()
    assert time.monotonic() - start < 1.5
    assert not server_threads()


def test_hanging_connections_time_out_and_never_block_shutdown() -> None:
    ids = [digest(n) for n in range(4)]
    server = ProviderServer(knobs={"hang_rate": 1.0}).start()
    port = server.port
    try:
        run, _ = enrich(server, GRAVATAR, requests(ids), timeout_seconds=0.2, retries=0)
        assert statuses(run) == {"failed": 4}
        assert set(run.outcomes["reason"]) == {"timeout"}
        assert server.stats()["hangs"] == 4
        assert server.stats()["in_flight"] == 4  # still hanging on the server side
    finally:
        start = time.monotonic()
        server.stop()
    assert time.monotonic() - start < 1.5
    assert port_is_closed(port)
    assert not server_threads()


def test_start_is_fast_and_stop_is_clean_and_repeatable() -> None:
    before = threading.active_count()
    start = time.monotonic()
    server = ProviderServer()
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.base_url
    with server:
        assert time.monotonic() - start < 1.0
        assert server.running
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.base_url)
        port = server.port
        with pytest.raises(RuntimeError, match="already started"):
            server.start()
        assert httpx.get(f"{server.base_url}/_admin/health").json() == {"status": "ok"}
    assert not server.running
    assert port_is_closed(port)
    assert threading.active_count() == before
    with ProviderServer(port=port) as again:  # the port is free again at once
        assert again.port == port
    server.stop()  # stopping twice is harmless


# --- the received log ---------------------------------------------------------------------------


def test_every_received_identifier_is_logged_in_memory_and_in_the_file(tmp_path: Path) -> None:
    log = tmp_path / "received.jsonl"
    sent = [digest(n) for n in range(12)]
    denied = [digest(n, "denied") for n in range(12)]
    knobs = {"storm_requests": 1, "storm_retry_after": 0.05}
    with ProviderServer(received_path=log, knobs=knobs) as server:
        enrich(server, PERSON, requests(sent[:4]), retries=3)
        enrich(server, SEGMENTS, requests(sent[4:8]))
        enrich(server, GRAVATAR, requests(sent[8:]))
        enrich(server, PERSON, requests(["+4520123456"], form="phone_e164"))
        received = server.received()
    assert received["ts"].dt.tz is not None
    assert set(received["value"]) == {*sent, "+4520123456"}
    # the 429'd first request delivered its identifier too
    assert len(received) == len(sent) + 1 + 1
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [(r["endpoint"], r["form"], r["value"]) for r in lines] == list(
        received[["endpoint", "form", "value"]].itertuples(index=False, name=None)
    )
    assert lines[-1]["form"] == "phone_e164"
    text = log.read_text(encoding="utf-8")
    assert not any(d in text for d in denied)


def test_admin_endpoints_read_change_and_reset_the_server() -> None:
    with ProviderServer() as server, httpx.Client(base_url=server.base_url) as http:
        http.get("/v1/person", params={"email_sha256": digest(1)})
        knobs = http.get("/_admin/knobs").json()
        assert knobs["latency_ms"] == 0
        change = {"latency_ms": 5, "profiles": {"person": {"hit_rate": 0.9}}}
        changed = http.post("/_admin/knobs", json=change).json()
        assert changed["latency_ms"] == 5
        assert changed["profiles"]["person"]["hit_rate"] == 0.9
        assert (
            changed["profiles"]["person"]["match_rate"] == knobs["profiles"]["person"]["match_rate"]
        )
        assert changed["profiles"]["segments"] == knobs["profiles"]["segments"]
        assert server.knobs.profiles[Endpoint.PERSON].hit_rate == 0.9
        bad = http.post("/_admin/knobs", json={"error_rate": 2, "nonsense": 1})
        assert bad.status_code == 422
        assert {e["loc"] for e in bad.json()["errors"]} == {"error_rate", "nonsense"}
        assert http.post("/_admin/knobs", content=b"{").status_code == 400
        stats = http.get("/_admin/stats").json()
        assert stats["requests"] == 1
        assert stats["by_endpoint"]["person"] == 1
        assert http.get("/_admin/received").json()["received"][0]["value"] == digest(1)
        assert http.post("/_admin/reset").json() == {"status": "reset"}
        assert http.get("/_admin/stats").json()["requests"] == 0
        assert server.received().empty
        with pytest.raises(ValidationError):
            server.set_knobs(hang_rate=-1)
        assert server.set_knobs(seed=9).seed == 9


# --- world mode -----------------------------------------------------------------------------------


def _random_world(people: int, seed: int) -> tuple[World, dict[str, set[str]]]:
    rng = random.Random(seed)
    truth: dict[str, set[str]] = {}
    lines = []
    for n in range(people):
        held = {t: round(0.5 + 0.49 * rng.random(), 3) for t in TOPICS if rng.random() < 0.25}
        truth[f"s{n}"] = set(held)
        lines.append(WorldLine(person_id=f"P{n}", email_sha256=[digest(n)], interests=held))
    return World.from_lines(lines), truth


def _rates(run: LookupRun, truth: Mapping[str, set[str]]) -> dict[str, float]:
    matched = set(run.outcomes.loc[run.outcomes["status"] == "matched", "subject"])
    reported = {(s, t) for s, t in run.signals[["subject", "topic"]].itertuples(index=False)}
    held = {(s, t) for s in matched for t in truth[s]}
    not_held = {(s, t) for s in matched for t in TOPICS if t not in truth[s]}
    return {
        "match": len(matched) / len(truth),
        "hit": len(reported & held) / len(held),
        "false_positive": len(reported & not_held) / len(not_held),
    }


def _calibration(run: LookupRun, truth: Mapping[str, set[str]]) -> pd.DataFrame:
    signals = run.signals.copy()
    pairs = zip(signals["subject"], signals["topic"], strict=True)
    signals["true"] = [t in truth[s] for s, t in pairs]
    signals["bin"] = pd.cut(signals["confidence"], [0, 0.3, 0.7, 1.0])
    return signals.groupby("bin", observed=True).agg(
        confidence=("confidence", "mean"), precision=("true", "mean"), n=("true", "size")
    )


def test_world_mode_observes_the_truth_at_the_configured_rates() -> None:
    world, truth = _random_world(2000, seed=4)
    profile = {"match_rate": 0.6, "hit_rate": 0.7, "false_positive_rate": 0.1}
    knobs = {"seed": 1, "profiles": {"segments": {**profile, "calibration": 1.0}}}
    ids = [digest(n) for n in range(2000)]
    with ProviderServer(world=world, knobs=knobs) as server:
        run, _ = enrich(server, SEGMENTS, requests(ids))
        unknown, _ = enrich(server, SEGMENTS, requests([digest(n, "nobody") for n in range(50)]))
        server.set_knobs(profiles={"segments": {"calibration": 3.0}})
        overconfident, _ = enrich(server, SEGMENTS, requests(ids))
    rates = _rates(run, truth)
    assert rates["match"] == pytest.approx(0.6, abs=0.04)
    assert rates["hit"] == pytest.approx(0.7, abs=0.03)
    assert rates["false_positive"] == pytest.approx(0.1, abs=0.015)
    assert statuses(unknown) == {"no_match": 50}
    # calibrated: in every score band, about that share of the reports is true
    calibrated = _calibration(run, truth)
    assert (calibrated["n"] > 100).all()
    assert ((calibrated["confidence"] - calibrated["precision"]).abs() < 0.06).all()
    # the same observations, over-confident: the top band is less often right than it claims
    assert _rates(overconfident, truth) == rates
    top = _calibration(overconfident, truth).iloc[-1]
    assert top["confidence"] - top["precision"] > 0.05


def test_a_synth_world_is_found_by_every_identifier_it_lists(tmp_path: Path) -> None:
    made = synth.generate(120, tmp_path / "demo", seed=2)
    path = made.out_dir / "data" / "world.jsonl"
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    exact = {"profiles": {"person": {"match_rate": 1.0, "hit_rate": 1.0, "false_positive_rate": 0}}}
    with_phone = [r for r in lines if r["phone_sha256"] and r["interests"]][:15]
    rows = [(r["person_id"], "email_sha256", r["email_sha256"][-1]) for r in with_phone]
    rows += [(r["person_id"] + "/phone", "phone_sha256", r["phone_sha256"][0]) for r in with_phone]
    batch = pd.DataFrame(rows, columns=["subject", "form", "value"])
    with ProviderServer(world=path, knobs=exact) as server:
        run, _ = enrich(server, PERSON, batch)
    assert statuses(run) == {"matched": len(rows)}
    found = run.signals.groupby("subject")["topic"].apply(set).to_dict()
    for record in with_phone:
        assert found[record["person_id"]] == set(record["interests"])
        assert found[record["person_id"] + "/phone"] == set(record["interests"])


def test_world_lookup_normalises_clear_identifiers_and_rejects_bad_files(tmp_path: Path) -> None:
    email, phone = "Jane.Doe@Example.com", "+4520123456"
    line = WorldLine(
        person_id="P1",
        email_sha256=[hashlib.sha256(email.lower().encode()).hexdigest()],
        phone_sha256=[hashlib.sha256(phone.encode()).hexdigest()],
    )
    shared = WorldLine(person_id="P2", email_sha256=line.email_sha256)
    world = World.from_lines([line, shared])
    assert world.find("email", f" {email} ") == 0  # a shared address belongs to the first
    assert world.find("phone_e164", phone) == 0
    assert world.find("phone_sha256", line.phone_sha256[0]) == 0
    assert world.find("email", "nobody@example.com") is None
    assert world.find("phone_e164", "20123456") is None
    assert identity_key("customer_id", "x") is None
    bad = tmp_path / "world.jsonl"
    bad.write_text(
        line.model_dump_json()
        + '\n{"person_id": "P2", "email_sha256": ["abc"]}\nnot json\n'
        + '{"person_id": "P3", "interests": {"Interest.X": 0.5}}\n',
        encoding="utf-8",
    )
    with pytest.raises(WorldError) as info:
        World.load(bad)
    message = str(info.value)
    assert f"{bad}:2: email_sha256.0:" in message
    assert f"{bad}:3: not a JSON object" in message
    assert f"{bad}:4: interests.Interest.X" in message


# --- command line ---------------------------------------------------------------------------------


def _read_line(stream: Any, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "no output in time"
    line: str = stream.readline()
    return line


def test_cli_prints_its_url_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    log, url_file, entries = tmp_path / "r.jsonl", tmp_path / "url", tmp_path / "entries.yaml"
    command = [
        sys.executable,
        "-m",
        "enrichers.testing.server",
        *("--port", "0", "--received", str(log), "--latency-ms", "1"),
        *("--url-file", str(url_file), "--entries", str(entries)),
        *("--knobs", '{"profiles": {"gravatar": {"match_rate": 1.0}}}'),
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            line = _read_line(proc.stdout, timeout=20)
            match = re.search(r"http://127\.0\.0\.1:\d+", line)
            assert match, line
            url = match.group(0)
            assert url_file.read_text(encoding="utf-8").strip() == url
            answer = httpx.get(f"{url}/v3/profiles/{digest(1)}")
            assert answer.status_code == 200
            knobs = httpx.get(f"{url}/_admin/knobs").json()
            assert knobs["latency_ms"] == 1
            assert knobs["profiles"]["gravatar"]["match_rate"] == 1.0
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.stderr is not None
        assert proc.stderr.read() == ""
    assert json.loads(log.read_text(encoding="utf-8"))["value"] == digest(1)
    parsed = parse_settings(yaml.safe_load(entries.read_text(encoding="utf-8")), path=entries)
    assert {s.name for s in parsed} == {PERSON, SEGMENTS, GRAVATAR}
    assert port_is_closed(int(url.rsplit(":", 1)[1]))


def test_cli_help_and_bad_arguments() -> None:
    module = [sys.executable, "-m", "enrichers.testing.server"]
    shown = subprocess.run([*module, "--help"], capture_output=True, text=True, check=False)
    assert shown.returncode == 0
    for option in ("--world", "--received", "--latency-ms", "--storm-requests", "--hang-rate"):
        assert option in shown.stdout
    bad = subprocess.run(
        [*module, "--error-rate", "2"], capture_output=True, text=True, check=False, timeout=20
    )
    assert bad.returncode == 2
    assert "error_rate" in bad.stderr
