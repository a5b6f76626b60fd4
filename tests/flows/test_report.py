"""The run's HTML report: a balanced, self-contained document that escapes every value."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from flows.report import render_report, write_report

HOSTILE = "<script>alert(1)</script>"
FORMULA = "=cmd|' /C calc'!A0"
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "wbr", "source", "area", "base"}
SVG_EMPTY = {"rect", "line", "polyline", "circle", "path"}
HEX64 = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])")


@pytest.fixture(scope="session")
def prefect_harness() -> None:
    """Overrides the flow tests' Prefect server: the report is pure rendering."""


def _summary() -> dict[str, Any]:
    """A run summary shaped like a real `run_summary.json` (600 synthetic people, three
    providers, behaviour on), plus the `fusion` section."""
    source = {
        "file": "crm_contacts.csv",
        "rows_in": 1439,
        "rows_accepted": 1436,
        "rows_quarantined": 3,
        "rows_erased": 0,
        "quarantined_by_reason": {"ROW_UNPARSEABLE": 3},
        "field_rejections": {"email": {"EMAIL_PLACEHOLDER": 5, "EMAIL_SYNTAX": 6}},
    }
    orders = {
        **source,
        "file": "orders.csv",
        "rows_in": 3218,
        "rows_accepted": 3204,
        "rows_quarantined": 12,
        "rows_erased": 2,
        "quarantined_by_reason": {"ROW_NO_IDENTIFIER": 9, "ROW_UNPARSEABLE": 3},
    }
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
        "client": {"calls": 456, "retries": 3, "throttled": 1, "latency_p50_ms": 2.785},
    }
    fit = {
        "model": "bgnbd",
        "params": {"r": 0.617, "alpha": 12.32, "a": 119931.8, "b": 7399382.6},
        "log_likelihood": -2060.92,
        "n_customers": 131,
        "converged": False,
        "message": "ABNORMAL: ",
        "params_hash": "98ef81fdfc8cb74f78eb52ab2530255086586b385494d1c9bdf9569e08bda0b4",
    }
    return {
        "run_id": "20261123T053959Z-1e647f04",
        "started_at": "2026-11-23T05:39:59+00:00",
        "finished_at": "2026-11-23T05:40:00+00:00",
        "duration_seconds": 1.181,
        "pseudonym_key_id": "kb031ff56666b",
        "totals": {
            "rows_in": 4657,
            "rows_accepted": 4640,
            "rows_quarantined": 15,
            "rows_erased": 2,
        },
        "sources": {"crm": source, "shop_orders": orders},
        "identity": {
            "records": 4640,
            "profiles": 814,
            "profiles_new": 814,
            "profiles_kept": 0,
            "merges": 0,
            "splits": 0,
            "blocked": {"blocked_value": 0, "shared": {"phone>email": 2}, "unverified": 22},
            "conflicts": {"unique_conflict_direct": 13},
            "cluster_sizes": {"1": 96, "2": 50, "3-5": 286, "101+": 0},
            "largest": [67, 61, 51],
        },
        "policy": {
            "bundle": {
                "name": "default",
                "version": "2026.11.1",
                "hash": "31d74f85f8cd6234b7af0dde1102f3cbaf24984301412afc63d55e3399c5e2ff",
            },
            "consents": {"records_new": 2885, "skipped_no_identifier": 0},
            "allowed": {"enrichment": 461, "profiling": 326, "crm_export": 543},
            "decisions": [
                {
                    "gate": "A",
                    "purpose": "enrichment",
                    "decision": "allow",
                    "rule": "consent@2026.11.1",
                    "reason": "BASIS_RECORDED",
                    "subjects": 461,
                },
                {
                    "gate": "A",
                    "purpose": "enrichment",
                    "decision": "deny",
                    "rule": "default-deny@2026.11.1",
                    "reason": "NO_LAWFUL_BASIS",
                    "subjects": 353,
                },
                {
                    "gate": "C",
                    "purpose": "crm_export",
                    "decision": "redact",
                    "rule": "minor-no-profile-fields@1",
                    "reason": "MINOR",
                    "subjects": 8,
                },
            ],
        },
        "enrichment": {"sim_person": provider, "sim_gravatar": {**provider, "type": "gravatar"}},
        "behaviour": {
            "provider": "behaviour",
            "model": "1#397131a53814",
            "as_of": "2026-11-01T23:59:59+00:00",
            "currency": "EUR",
            "purchases": 755,
            "lines_excluded": {},
            "customers": 131,
            "segments": {"Champions": 32, "At risk": 25, "Can't lose": 4},
            "abc": {"A": 40, "B": 35, "C": 56},
            "xyz": {"Y": 1, "Z": 73},
            "one_time_buyers": 57,
            "pareto": {
                "top_20_share": 0.692745,
                "top_4_share": 0.304914,
                "lorenz": [[i / 10, (i / 10) ** 3] for i in range(11)],
            },
            "churn_risk_mean": 0.069398,
            "models": {
                "bgnbd": fit,
                "gamma_gamma": {**fit, "model": "gamma_gamma", "converged": True},
                "holdout": {
                    "predicted_total": 124.53,
                    "actual_total": 102.0,
                    "mean_absolute_error": 0.866,
                    "by_frequency": [
                        {"label": "0", "customers": 34, "mean_actual": 0.2, "mean_predicted": 0.47}
                    ],
                },
                "params_hash": "7ebf077434e353695dac06620af8dca782a376cdd55b474341b67ecd3169a49e",
            },
            "interest_signals": 480,
            "profiles_allowed": 326,
        },
        "fusion": {
            "signals_in": 5321,
            "unknown_topics": {"sim_person": 3},
            "profiles_with_interests": 4100,
            "merged": 9800,
            "by_provider": {
                "behaviour": {"signals": 4000, "used": 3990},
                "declared": {"signals": 900, "used": 900},
            },
            "gate_b": {
                "dropped": {"SPECIAL_CATEGORY": 12, "EXPIRED": 3, "BELOW_CONFIDENCE_FLOOR": 40},
                "sensitive_topics": {"interest.health": 12},
            },
            "topics": {
                "interest.outdoor.hiking": {
                    "label": "Hiking",
                    "profiles": 1200,
                    "mean_confidence": 0.74,
                    "declared": 210,
                }
            },
        },
    }


def _card(**changes: Any) -> dict[str, Any]:
    card = {
        "persona": "p1",
        "name": "Loyal high spenders · Outdoor",
        "size": 1234,
        "share": 0.135,
        "revenue": 123456.78,
        "revenue_share": 0.34,
        "rfm_mix": {"champions": 0.41, "loyal": 0.3, "other": 0.29},
        "churn_risk": {"mean": 0.12, "median": 0.09},
        "clv_mean": 312.5,
        "expected_purchases_mean": 1.234,
        "top_interests": [
            {
                "topic": "interest.outdoor.hiking",
                "label": "Hiking",
                "share": 0.61,
                "confidence": 0.82,
            }
        ],
        "channels": {"orders": 1.0, "crm": 0.93, "newsletter": 0.41},
        "countries": {"DK": 0.31, "DE": 0.22, "other": 0.47},
        "age_bands": {"25-34": 0.3, "35-44": 0.28, "unknown": 0.1, "other": 0.32},
        "previous_size": 1200,
        "change": 34,
    }
    return {**card, **changes}


def _personas() -> dict[str, Any]:
    return {
        "method": "kmeans",
        "k": 5,
        "criterion": {
            "name": "silhouette",
            "scores": {"2": 0.31, "3": 0.35, "5": 0.33},
            "qualified": [2, 3, 5],
        },
        "min_group_size": 20,
        "profiles": 9123,
        "hidden": {"personas": 1, "profiles": 12},
        "moved": {"new": ["Prospects · Beauty"], "gone": []},
        "cards": [
            _card(),
            _card(
                persona="p2",
                name="Prospects · Beauty",
                size=20987,
                previous_size=None,
                change=None,
                clv_mean=None,
                revenue=None,
            ),
            _card(persona="p3", name="Lapsing", size=800, previous_size=1000, change=-200),
        ],
    }


class _Tree(HTMLParser):
    """Walks a document: checks that tags balance, collects elements and text per card."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.starts: list[tuple[str, dict[str, str | None]]] = []
        self.decl: list[str] = []
        self.cards: list[str] = []
        self.titles: list[str] = []
        self._card_depth: int | None = None
        self._svg_title_depth: int | None = None

    def handle_decl(self, decl: str) -> None:
        self.decl.append(decl)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts.append((tag, dict(attrs)))
        if tag in VOID:
            return
        self.stack.append(tag)
        if tag == "article" and "card" in (dict(attrs).get("class") or "").split():
            self._card_depth = len(self.stack)
            self.cards.append("")
        if tag == "title" and "svg" in self.stack:
            self._svg_title_depth = len(self.stack)
            self.titles.append("")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        if self._card_depth == len(self.stack):
            self._card_depth = None
        if self._svg_title_depth == len(self.stack):
            self._svg_title_depth = None
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self._card_depth is not None:
            self.cards[-1] += data
        if self._svg_title_depth is not None:
            self.titles[-1] += data


def _parse(document: str) -> _Tree:
    tree = _Tree()
    tree.feed(document)
    tree.close()
    return tree


def test_the_report_is_one_balanced_html5_document() -> None:
    document = render_report(_summary(), _personas())
    tree = _parse(document)

    assert document.startswith("<!DOCTYPE html>")
    assert tree.decl == ["DOCTYPE html"]
    assert tree.errors == []
    assert tree.stack == []
    tags = [tag for tag, _ in tree.starts]
    for tag in ("html", "head", "body", "main", "style", "nav", "footer"):
        assert tags.count(tag) == 1, tag
    assert tags.index("head") < tags.index("style") < tags.index("body") < tags.index("main")
    sections = [a.get("id") for tag, a in tree.starts if tag == "section"]
    assert sections == [
        "sources",
        "identity",
        "policy",
        "enrichment",
        "behaviour",
        "fusion",
        "personas",
        "exports",
    ]


def test_one_card_per_persona_with_its_name_size_and_movement() -> None:
    personas = _personas()
    tree = _parse(render_report(_summary(), personas))

    assert len(tree.cards) == len(personas["cards"])
    for text, card in zip(tree.cards, personas["cards"], strict=True):
        assert card["name"] in text
        assert f"{card['size']:,}" in text
    first, new, shrunk = tree.cards
    assert "▲ 34 (+2.8%) vs 1,200" in first
    assert "13.5%" in first
    assert "34.0%" in first
    assert "123,457 EUR" in first
    assert "1.23" in first  # expected purchases
    assert "new" in new
    assert "▲" not in new
    assert "▼ 200 (-20.0%) vs 1,000" in shrunk


def test_the_personas_section_states_the_group_size_rule_and_the_criterion() -> None:
    document = render_report(_summary(), _personas())

    assert "Personas smaller than 20 profiles are not shown; 1 hidden (12 profiles)." in document
    assert "k = 5, chosen by the silhouette score" in document
    assert "0.350 · qualified" in document


def test_without_a_previous_run_nothing_is_new_and_nothing_moved() -> None:
    personas = _personas()
    personas["moved"] = None
    for card in personas["cards"]:
        card["previous_size"] = card["change"] = None

    document = render_report(_summary(), personas)

    assert "No previous run to compare with." in document
    assert 'class="badge"' not in document
    assert "▲" not in document
    assert "this run and the previous run" not in document


def test_charts_are_accessible_svgs_with_their_numbers() -> None:
    document = render_report(_summary(), _personas())
    tree = _parse(document)

    svgs = [attrs for tag, attrs in tree.starts if tag == "svg"]
    assert len(svgs) >= 12
    for attrs in svgs:
        assert attrs.get("role") == "img"
        assert attrs.get("aria-label")
    titles = [t for t in tree.titles if t.startswith("Rows per source")]
    assert titles == ["Rows per source: accepted, quarantined, erased"]
    for expected in (
        "Outcomes per provider",
        "Customers per RFM segment",
        "Profiles allowed per purpose (allow, redact, deny)",
        "Persona sizes, this run and the previous run",
        "Profiles holding each interest",
        "RFM mix of Loyal high spenders · Outdoor: champions 41.0%, loyal 30.0%, other 29.0%",
    ):
        assert expected in tree.titles
    # the numbers are readable as text, with thousands separators and percentages
    for text in ("3,218 in · 0.4% quarantined", "461 allowed · 56.6% of 814", "1,200 · confidence"):
        assert text in document
    assert "<polyline" in document
    assert "top 20% of customers" in document


@pytest.mark.parametrize(
    "place",
    [
        "source",
        "reason",
        "provider",
        "failure",
        "segment",
        "topic label",
        "persona name",
        "persona interest",
        "country",
        "run id",
    ],
)
@pytest.mark.parametrize("hostile", [HOSTILE, FORMULA], ids=["script", "formula"])
def test_hostile_strings_come_out_escaped(place: str, hostile: str) -> None:
    summary, personas = _summary(), _personas()
    card = personas["cards"][0]
    if place == "source":
        summary["sources"][hostile] = summary["sources"].pop("crm")
    elif place == "reason":
        summary["sources"]["crm"]["quarantined_by_reason"] = {hostile: 3}
    elif place == "provider":
        summary["enrichment"][hostile] = summary["enrichment"].pop("sim_person")
    elif place == "failure":
        summary["enrichment"]["sim_person"]["failed"] = {hostile: 5}
    elif place == "segment":
        summary["behaviour"]["segments"][hostile] = 7
    elif place == "topic label":
        summary["fusion"]["topics"]["interest.outdoor.hiking"]["label"] = hostile
    elif place == "persona name":
        card["name"] = hostile
    elif place == "persona interest":
        card["top_interests"][0]["label"] = hostile
    elif place == "country":
        card["countries"] = {hostile: 1.0}
    else:
        summary["run_id"] = hostile

    document = render_report(summary, personas)

    assert hostile not in document
    assert hostile.replace("<", "&lt;").replace(">", "&gt;").replace("'", "&#x27;") in document
    tree = _parse(document)
    assert tree.errors == []
    assert "script" not in {tag for tag, _ in tree.starts}


def test_no_external_resources_and_no_script() -> None:
    document = render_report(_summary(), _personas())

    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", document, re.I)
    assert not re.search(r"<script|<link|<img|<iframe|@import|url\(", document, re.I)
    hrefs = [a.get("href") or "" for tag, a in _parse(document).starts if tag == "a"]
    assert hrefs
    assert all(h.startswith("#") for h in hrefs)


def test_no_pseudonym_like_hashes_in_the_report() -> None:
    summary = _summary()
    assert HEX64.search(str(summary))  # the summary has full hashes; the report shortens them

    document = render_report(summary, _personas())

    assert not HEX64.search(document)
    assert "31d74f85f8cd…" in document


def _without(section: str) -> dict[str, Any]:
    summary = _summary()
    del summary[section]
    return summary


def _emptied(section: str) -> dict[str, Any]:
    summary = _summary()
    summary[section] = {}
    return summary


@pytest.mark.parametrize(
    ("summary", "personas", "expected"),
    [
        ({}, None, ["Not run: no sources were read.", "Not run: personas were not built"]),
        ({"run_id": "r1"}, {}, ["Not run: behaviour scoring is off", "Not run: signal fusion"]),
        (_emptied("enrichment"), _personas(), ["Not run: no enrichment providers"]),
        (_emptied("behaviour"), _personas(), ["Not run: behaviour scoring is off"]),
        (_without("fusion"), _personas(), ["Not run: signal fusion did not run."]),
        (_without("policy"), _personas(), ["Not run: no policy decisions were recorded."]),
        (_without("identity"), _personas(), ["Not run: identity resolution did not report."]),
        (_without("sources"), _personas(), ["Not run: no sources were read."]),
        (_summary(), {**_personas(), "cards": []}, ["No persona is large enough to show."]),
        (
            {**_summary(), "behaviour": {"customers": 0, "pareto": {"top_20_share": None}}},
            None,
            ["Pareto shares: not computed."],
        ),
        (
            {**_summary(), "behaviour": {**_summary()["behaviour"], "models": {"skipped": "few"}}},
            None,
            ["BG/NBD and Gamma-Gamma not fitted: few."],
        ),
        (
            {**_summary(), "fusion": {"signals_in": 10, "unknown_topics": {}, "not_profiled": 2}},
            None,
            ["Fusion of signals is off", "No interest topic is held by any profile."],
        ),
    ],
    ids=[
        "nothing",
        "run id only",
        "no providers",
        "behaviour off",
        "no fusion",
        "no policy",
        "no identity",
        "no sources",
        "no persona cards",
        "no pareto",
        "models skipped",
        "fusion off",
    ],
)
def test_missing_or_empty_sections_say_so(
    summary: dict[str, Any], personas: dict[str, Any] | None, expected: list[str]
) -> None:
    document = render_report(summary, personas)

    tree = _parse(document)
    assert tree.errors == []
    assert tree.stack == []
    for text in expected:
        assert text in document


def test_odd_values_do_not_break_the_report() -> None:
    summary, personas = _summary(), _personas()
    summary["sources"]["crm"]["rows_in"] = None
    summary["behaviour"]["pareto"]["lorenz"] = [[0, 0], ["x", 1], [2, -1], "bad"]
    summary["fusion"]["topics"]["interest.outdoor.hiking"]["mean_confidence"] = float("nan")
    personas["cards"][0]["churn_risk"] = None
    personas["cards"][0]["rfm_mix"] = {}
    personas["cards"][1]["size"] = "many"

    document = render_report(summary, personas)

    assert _parse(document).errors == []
    assert "many" in document


def test_rendering_leaves_its_inputs_unchanged() -> None:
    summary, personas = _summary(), _personas()
    before = copy.deepcopy((summary, personas))

    render_report(summary, personas)

    assert (summary, personas) == before


def test_write_report_writes_the_rendered_document(tmp_path: Path) -> None:
    path = tmp_path / "report.html"

    written = write_report(path, _summary(), _personas())

    assert written == path
    assert path.read_text(encoding="utf-8") == render_report(_summary(), _personas())


def test_the_exports_section_shows_rows_per_destination_file() -> None:
    summary = {
        "run_id": "r1",
        "exports": {
            "crm_export": {"profiles": 543, "rows": {"hubspot": 543}, "files": {"hubspot": 1}},
            "ads_export": {"profiles": 189, "rows": {"meta": 185, "google-personalized": 100}},
            "analytics": {"profiles": 603},
        },
    }
    page = render_report(summary)
    for text in ("CRM hubspot", "audience meta", "audience google-personalized", "analytics"):
        assert text in page
    assert "543" in page
    assert "Not run: exports are off." in render_report({"run_id": "r1"})
