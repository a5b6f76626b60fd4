"""The audit report: counts match a synthetic log, values are escaped, no subject id leaks,
nothing is fetched, failed verification is unmistakable, and Chromium renders the page."""

from __future__ import annotations

import os
import random
import re
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import flows.audit_report
from flows.audit_report import audit_report, write_audit_report

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
RUNS = ("20261101T055925Z-5fb7fecf", "20261102T060102Z-0a1b2c3d", "20261103T055959Z-9e8d7c6b")
PURPOSES = ("enrichment", "profiling", "crm_export", "ads_export", "analytics")
GATES = {"enrichment": "A", "profiling": "B"}
REGIMES = ("eu", "uk", "us_ca", "other")
POLICY = "31d74f85f8cd6234b7af0dde1102f3cbaf24984301412afc63d55e3399c5e2ff"
VERIFIED = {
    "ok": True,
    "log_id": "log-7c1e9a",
    "entries": 3000,
    "segments": 2,
    "runs": 3,
    "checkpoints": 3,
    "keys": ["ed25519:ab12cd34ef56"],
    "problems": [],
}
SECTIONS = (
    "Decisions",
    "Decisions by purpose",
    "Suppressions, erasures and sensitive topics",
    "Provider calls, spend and failures",
    "Data quality per run",
    "Personas and segments",
)


@pytest.fixture(scope="session")
def prefect_harness() -> None:
    """Overrides the flow tests' Prefect server: the audit report is pure rendering."""


def _entry(seq: int, run: str, subject: str, **fields: str) -> dict[str, Any]:
    day = run[6:8] if run[:8].isdigit() else "04"
    entry: dict[str, Any] = {
        "seq": seq,
        "ts": f"2026-11-{day}T06:00:{seq % 60:02d}.000Z",
        "run_id": run,
        "actor": "nightly",
        "subject": subject,
        "purpose": "enrichment",
        "gate": "A",
        "context": "",
        "rule": "consent@2026.11.1",
        "policy_hash": POLICY,
        "decision": "allow",
        "basis": "consent",
        "reason": "BASIS_RECORDED",
        "evidence": f"{random.Random(seq).getrandbits(128):032x}",
        "prev_hash": "0" * 64,
        "hash": f"{seq:064x}",
    }
    entry.update(fields)
    return entry


def _decision(rng: random.Random, seq: int, run: str, subject: str) -> dict[str, Any]:
    """One nightly gate decision with realistic fields."""
    purpose = PURPOSES[seq % len(PURPOSES)]
    gate = GATES.get(purpose, "C")
    regime = REGIMES[rng.randrange(len(REGIMES))]
    context = f"regime={regime}" + (";provider=sim_person" if gate == "A" else "")
    roll = rng.random()
    if roll < 0.5:
        return _entry(seq, run, subject, purpose=purpose, gate=gate, context=context)
    if roll < 0.85:
        fields = {"rule": "default-deny@2026.11.1", "reason": "NO_LAWFUL_BASIS", "basis": ""}
        return _entry(
            seq,
            run,
            subject,
            purpose=purpose,
            gate=gate,
            context=context,
            decision="deny",
            **fields,
        )
    if roll < 0.93 and gate == "B":
        context += ";topic=interest.health"
        fields = {"rule": "special-category@1", "reason": "SPECIAL_CATEGORY"}
        return _entry(
            seq,
            run,
            subject,
            purpose=purpose,
            gate=gate,
            context=context,
            decision="redact",
            **fields,
        )
    fields = {"rule": "suppression@1", "reason": "SUPPRESSED", "basis": ""}
    return _entry(
        seq, run, subject, purpose=purpose, gate=gate, context=context, decision="deny", **fields
    )


def _log(n: int = 3000, *, hostile: bool = False) -> list[dict[str, Any]]:
    """A synthetic decision log of `n` entries over three runs, with data-subject requests."""
    rng = random.Random(11)
    entries = []
    for seq in range(n):
        subject = f"P{rng.getrandbits(64):016X}"
        run = RUNS[seq * len(RUNS) // n]
        if seq % 97 == 0:
            entries.append(
                _entry(
                    seq,
                    f"dsar-REQ-{seq}",
                    subject,
                    actor="dsar",
                    purpose="all",
                    gate="DSAR",
                    decision="erase",
                    reason="ERASURE_REQUESTED",
                    rule="dsar-erasure",
                    basis="",
                    # The request's note names the subject: the page must still not show it.
                    context=f"request=erasure;note={subject}",
                )
            )
        else:
            entries.append(_decision(rng, seq, run, subject))
    if hostile:
        for i, name in enumerate(("rule", "reason", "context", "context")):
            key = ("provider", "topic")[i % 2] if name == "context" else ""
            entries[10 + i][name] = f"{key}={HOSTILE}" if key else HOSTILE
        entries[20]["gate"] = "B"
        entries[20]["context"] = f"topic={HOSTILE}"
    return entries


def _provider(**changes: Any) -> dict[str, Any]:
    provider = {
        "type": "http_json",
        "region": "EU",
        "subjects": 814,
        "matched": 247,
        "no_match": 204,
        "skipped_cached": 0,
        "skipped_policy": {"gate_a_denied": 353, "no_allowed_form": 5, "no_value": 0},
        "failed": {"timeout": 5},
        "signals": 566,
        "signals_dropped": 0,
        "client": {
            "calls": 456,
            "attempts": 459,
            "retries": 3,
            "statuses": {"200": 451, "429": 1},
            "throttled": 1,
            "timeouts": 5,
            "budget_used": 456,
            "budget_rejections": 0,
            "failures": {"timeout": 5},
            "latency_p50_ms": 2.785,
            "latency_p99_ms": 19.2,
        },
    }
    provider.update(changes)
    return provider


def _summary(run_id: str, *, merges: int = 0) -> dict[str, Any]:
    """A run summary shaped like a real `run_summary.json` (600 synthetic people)."""
    crm = {
        "file": "crm_contacts.csv",
        "rows_in": 439,
        "rows_accepted": 436,
        "rows_quarantined": 3,
        "rows_erased": 0,
        "quarantined_by_reason": {"ROW_UNPARSEABLE": 3},
        "field_rejections": {"email": {"EMAIL_PLACEHOLDER": 5, "EMAIL_SYNTAX": 6}},
    }
    orders = {
        **crm,
        "file": "orders.csv",
        "rows_in": 3218,
        "rows_accepted": 3206,
        "rows_quarantined": 12,
        "quarantined_by_reason": {"ROW_NO_IDENTIFIER": 9, "ROW_UNPARSEABLE": 3},
        "field_rejections": {"customer_id": {"CUSTOMER_ID_PLACEHOLDER": 11}},
    }
    return {
        "run_id": run_id,
        "started_at": "2026-11-23T06:17:12+00:00",
        "duration_seconds": 2.1,
        "totals": {
            "rows_in": 3657,
            "rows_accepted": 3642,
            "rows_quarantined": 15,
            "rows_erased": 0,
        },
        "sources": {"crm": crm, "shop_orders": orders},
        "identity": {"records": 3642, "profiles": 814, "merges": merges, "splits": 1},
        "policy": {"allowed": {"enrichment": 461}, "decisions": []},
        "enrichment": {
            "sim_person": _provider(),
            "sim_gravatar": _provider(type="gravatar", failed={"http_5xx": 7}),
        },
        "behaviour": {
            "customers": 131,
            "segments": {"Champions": 32, "At risk": 25, "Can't lose": 4, "Loyal": 10},
        },
        "fusion": {
            "gate_b": {
                "dropped": {"BELOW_CONFIDENCE_FLOOR": 507, "SPECIAL_CATEGORY": 3},
                "sensitive_topics": {"interest.health": 3},
                "floor": 0.6,
            }
        },
        "personas": {
            "method": "kmeans",
            "k": 2,
            "criterion": "silhouette",
            "min_group_size": 20,
            "hidden": {"personas": 0, "profiles": 0},
            "cards": [
                {"name": "Prospects", "size": 279, "change": None},
                {"name": "Loyal high spenders", "size": 47, "change": 5},
            ],
        },
    }


def _summaries() -> list[dict[str, Any]]:
    return [_summary(RUNS[0]), _summary(RUNS[1], merges=4), _summary(RUNS[2], merges=2)]


def _page(entries: list[dict[str, Any]], **changes: Any) -> str:
    inputs: dict[str, Any] = {
        "entries": iter(entries),
        "summaries": _summaries(),
        "verification": VERIFIED,
    }
    inputs.update(changes)
    return audit_report(**inputs)


def test_counts_shown_match_the_log() -> None:
    entries = _log()
    page = _page(entries)
    by_purpose: Counter[tuple[str, str]] = Counter()
    by_run: Counter[tuple[str, str]] = Counter()
    for e in entries:
        by_purpose[e["purpose"], e["decision"]] += 1
        by_run[e["run_id"], e["decision"]] += 1
    for purpose in PURPOSES:
        assert f"{purpose}: allow {by_purpose[purpose, 'allow']:,}," in page
        assert f"deny {by_purpose[purpose, 'deny']:,}" in page
    # Per run, the column's title: its date, then allow / redact / deny.
    assert (
        f"2026-11-02 06:01: allow {by_run[RUNS[1], 'allow']:,}, "
        f"redact {by_run[RUNS[1], 'redact']:,}, deny {by_run[RUNS[1], 'deny']:,}"
    ) in page
    erasures = sum(1 for e in entries if e["decision"] == "erase")
    # Request batches are runs of their own in the log, but not columns of the nightly chart.
    assert f"{erasures:,} data-subject request batches are counted in the next section" in page
    figure = page.split("<figcaption>Decisions per run", 1)[1].split("</figure>", 1)[0]
    assert figure.count("<g><title>") == len(RUNS)
    assert f"erasure: {erasures:,} ({erasures:,} · all erase)" in page
    redacted_health = sum(1 for e in entries if "topic=interest.health" in e["context"])
    assert f"interest.health: {redacted_health:,}" in page
    suppressed = sum(1 for e in entries if e["reason"] == "SUPPRESSED")
    for purpose in PURPOSES:
        n = sum(1 for e in entries if e["reason"] == "SUPPRESSED" and e["purpose"] == purpose)
        assert f"{purpose} · SUPPRESSED: {n:,}" in page
    assert f"Data-subject requests logged: {erasures:,} entries in {erasures:,}" in page
    assert suppressed > 0
    assert "SUPPRESSED" in page
    regime_eu = sum(1 for e in entries if "regime=eu" in e["context"])
    assert re.search(rf"eu: allow [\d,]+, redact [\d,]+, deny [\d,]+ \({regime_eu:,} ", page)
    assert f"<code>{POLICY[:12]}…</code>" in page
    assert POLICY not in page
    assert ">VERIFIED<" in page
    assert "Prospects" in page
    assert "Champions: 32" in page
    assert "sim_gravatar · http_5xx: 21" in page  # 7 per run, three runs


def test_no_subject_id_and_nothing_fetched() -> None:
    entries = _log()
    page = _page(entries)
    subjects = {e["subject"] for e in entries}
    assert len(subjects) == len(entries)
    assert not [s for s in subjects if s in page]
    assert not re.search(r"P[0-9A-F]{16}", page)
    assert not re.search(r"<(script|link|img|iframe|object|embed|audio|video)\b", page, re.I)
    assert "url(" not in page
    assert "@import" not in page
    for target in re.findall(r"(?:href|src|xlink:href)\s*=\s*[\"']?([^\"' >]*)", page, re.I):
        assert target.startswith("#"), target
    assert "aggregates and pseudonymous ids only" in page


def test_hostile_strings_are_escaped() -> None:
    summaries = _summaries()
    summaries[-1]["enrichment"][HOSTILE] = _provider(failed={HOSTILE: 2})
    summaries[-1]["fusion"]["gate_b"]["sensitive_topics"] = {HOSTILE: 1}
    summaries[-1]["personas"]["cards"].append({"name": HOSTILE, "size": 30})
    verification = {**VERIFIED, "log_id": HOSTILE, "keys": [HOSTILE]}
    page = _page(_log(hostile=True), summaries=summaries, verification=verification, title=HOSTILE)
    assert "<script" not in page.lower()
    assert page.count(ESCAPED) >= 8
    assert f"<title>{ESCAPED}" in page


def test_failed_verification_is_unmistakable() -> None:
    problem = {
        "segment": "segment-000002.jsonl.gz",
        "seq": 1234,
        "message": "hash does not match the entry's content",
    }
    hostile = {"segment": HOSTILE, "seq": 7, "message": HOSTILE}
    page = _page(_log(300), verification={**VERIFIED, "ok": False, "problems": [problem, hostile]})
    assert ">FAILED<" in page
    assert ">VERIFIED<" not in page
    assert "<td>segment-000002.jsonl.gz</td><td class=num>1234</td>" in page
    assert "hash does not match the entry&#x27;s content" in page
    assert "<script" not in page
    assert "Problems found (2)" in page
    # ok true with problems is still a failure; no result at all is not a success either.
    assert ">FAILED<" in _page([], verification={**VERIFIED, "problems": [problem]})
    assert ">NOT VERIFIED<" in _page([], verification={})


def test_empty_and_odd_inputs() -> None:
    page = audit_report(entries=[], summaries=[], verification={})
    assert "The decision log holds no entries." in page
    assert "No run summary was given." in page
    assert page.rstrip().endswith("</html>")
    odd: list[Any] = [
        {"seq": 0, "ts": None, "run_id": 5, "purpose": ["x"], "decision": "allow", "context": 3},
        {"subject": 7, "context": "regime=eu", "decision": "allow", "purpose": "analytics"},
        {},
        "not an entry",
        None,
        {"ts": "2026-11-01", "context": ";;=;regime;provider=", "decision": "maybe"},
    ]
    summary: dict[str, Any] = {
        "run_id": None,
        "totals": {"rows_in": 0, "rows_accepted": float("nan")},
        "sources": {"crm": {"rows_in": "many", "quarantined_by_reason": [1, 2]}, "x": None},
        "identity": [],
        "enrichment": {"p": {"client": "down", "failed": {"t": -3}, "matched": True}},
        "behaviour": {"segments": {"Champions": None}},
        "fusion": {"gate_b": {"sensitive_topics": {"t": "x"}}},
        "personas": {"cards": [None, {"size": -1}]},
    }
    summaries: list[Any] = [summary, "nonsense"]
    page = audit_report(entries=odd, summaries=summaries, verification={"ok": "yes", "keys": 5})
    assert "2 log lines were not entries" in page
    assert "analytics: 1 (1 · all allow)" in page
    assert "maybe" in page
    assert ">NOT VERIFIED<" in page


def test_folding_and_label_cap_keep_the_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = _log(2000)
    whole = _page(entries)
    monkeypatch.setattr(flows.audit_report, "_FOLD_AT", 10)
    monkeypatch.setattr(flows.audit_report, "_CHECK_MASK", 0x3F)
    assert _page(entries) == whole
    monkeypatch.setattr(flows.audit_report, "_LABELS_KEPT", 2)
    capped = _page(entries)
    assert "(other values)" in capped
    decisions = Counter(e["decision"] for e in entries)
    for decision in ("allow", "deny", "redact", "erase"):
        assert f"<dt>{decision}</dt><dd>{decisions[decision]:,} " in capped


def test_top_rules_and_many_runs() -> None:
    def run(k: int) -> str:
        return f"20261101T{5 + k // 60:02d}{k % 60:02d}00Z-r{k:02d}"

    entries = [_entry(i, run(i * 90 // 1800), "P1", rule=f"rule-{i % 20}@1") for i in range(1800)]
    page = _page(entries)
    assert "Decisions by rule, the 15 largest of 20" in page
    assert "90 runs, grouped 2 consecutive runs per column." in page


def _png_ok(path: Path) -> None:
    """A valid PNG of the window size whose pixels are not all one colour."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 2000)
    pos, idat = 8, b""
    while pos < len(data):
        (size,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == b"IDAT":
            idat += data[pos + 8 : pos + 8 + size]
        pos += 12 + size
    raw = zlib.decompress(idat)
    # A blank page's filtered scanlines hold 2-3 distinct byte values; charts hold ~256.
    assert len(set(raw[::7])) >= 64
    assert len(data) > 40_000


def _chromium() -> str:
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if found is None:
        message = (
            "chromium is not on PATH: install Debian's chromium package (apt-get install chromium)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_chromium_renders_the_page(tmp_path: Path) -> None:
    chromium = _chromium()
    html_path = write_audit_report(
        tmp_path / "audit.html", entries=iter(_log()), summaries=_summaries(), verification=VERIFIED
    )
    png = tmp_path / "audit.png"
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,2000"]
    url = html_path.as_uri()
    subprocess.run(
        [*base, f"--user-data-dir={tmp_path / 'profile1'}", f"--screenshot={png}", url],
        check=True,
        capture_output=True,
        timeout=60,
    )
    _png_ok(png)
    dom = subprocess.run(
        [*base, f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom", url],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    text = re.sub(r"<[^>]+>", " ", dom)
    assert "VERIFIED" in text
    for heading in SECTIONS:
        assert heading in text
    assert "<svg" in dom
