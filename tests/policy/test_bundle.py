"""Tests for policy bundles: the shipped default, validation with file:line, the content hash."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from policy.bundle import (
    CONDITION_FIELDS,
    PolicyBundle,
    default_bundle_path,
    load_bundle,
    topic_under,
)
from policy.types import Gate, LawfulBasis, Outcome, Purpose, Regime
from profiles.errors import ConfigError
from profiles.types import SignalKind
from tests.policy.test_engine import bundle_dict


def _write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _default_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(default_bundle_path().read_text(encoding="utf-8"))
    return data


def test_default_bundle_loads_and_covers_the_issue() -> None:
    bundle = load_bundle(default_bundle_path())
    assert set(bundle.purposes) == set(Purpose)
    assert re.fullmatch(r"[0-9a-f]{64}", bundle.hash)
    assert bundle.country_regimes["DE"] is Regime.GDPR
    assert bundle.country_regimes["NO"] is Regime.GDPR
    assert bundle.country_regimes["GB"] is Regime.UK_GDPR
    assert bundle.country_regimes["US"] is Regime.CCPA
    assert "CH" not in bundle.country_regimes
    assert bundle.minor_age_for(Regime.GDPR) == 16
    assert bundle.tcf == {Purpose.PROFILING: (3, 5), Purpose.ADS_EXPORT: (3, 4)}
    ids = {rule.id for rule in bundle.rules}
    assert {
        "erasure",
        "minor",
        "objection-profiling",
        "objection-direct-marketing",
        "ccpa-opt-out-sale-sharing",
        "unknown-country",
        "provider-not-allowed",
        "provider-no-transfer-basis",
        "customer-crm-legitimate-interests",
        "customer-analytics-legitimate-interests",
    } <= ids
    # Enrichment, profiling and ad audiences rest on consent alone.
    for purpose in (Purpose.ENRICHMENT, Purpose.PROFILING, Purpose.ADS_EXPORT):
        assert bundle.purposes[purpose].bases == (LawfulBasis.CONSENT,)
    assert set(bundle.retention.signals) == set(SignalKind)


def test_rules_by_priority_and_evidence_fields() -> None:
    bundle = load_bundle(default_bundle_path())
    order = [rule.id for rule in bundle.rules_by_priority]
    assert order[0] == "erasure"
    priorities = [rule.priority for rule in bundle.rules_by_priority]
    assert priorities == sorted(priorities, reverse=True)
    erasure = next(rule for rule in bundle.rules if rule.id == "erasure")
    assert erasure.evidence_fields == ("suppression_ref_erasure",)
    assert erasure.ref == "erasure@1"
    assert erasure.gates == tuple(Gate)


@pytest.mark.parametrize(
    ("topic", "prefix", "under"),
    [
        ("interest.health", "interest.health", True),
        ("interest.health.diabetes", "interest.health", True),
        ("interest.healthy_food", "interest.health", False),
        ("interest", "interest.health", False),
    ],
)
def test_topic_under_respects_dot_boundaries(topic: str, prefix: str, under: bool) -> None:
    assert topic_under(topic, prefix) is under


# --- hash -------------------------------------------------------------------------------------


def _reformat(data: dict[str, Any]) -> dict[str, Any]:
    """The same policy written differently: rules and lists reordered, defaults spelled out."""
    out = copy.deepcopy(data)
    out["rules"] = list(reversed(out["rules"]))
    out["jurisdictions"]["gdpr"] = list(reversed(out["jurisdictions"]["gdpr"]))
    out["special_categories"] = list(reversed(out["special_categories"]))
    out["rules"][0].setdefault("regimes", [r.value for r in reversed(Regime)])
    out["rules"][0].setdefault("unless", [])
    out["minor_age"]["regimes"] = {}
    return out


@pytest.mark.parametrize("flow_style", [True, False], ids=["flow", "block"])
def test_hash_is_stable_across_formatting(tmp_path: Path, flow_style: bool) -> None:
    original = load_bundle(default_bundle_path())
    text = yaml.safe_dump(
        _reformat(_default_data()), default_flow_style=flow_style, sort_keys=True, width=60
    )
    assert "#" not in text  # the comments are gone too
    assert load_bundle(_write(tmp_path, text)).hash == original.hash


def _edit_rule(rule_id: str, **changes: Any) -> Any:
    def edit(data: dict[str, Any]) -> None:
        rule = next(r for r in data["rules"] if r["id"] == rule_id)
        rule.update(changes)

    return edit


HASH_CHANGES = [
    ("rule-priority", _edit_rule("minor", priority=901)),
    ("rule-version", _edit_rule("minor", version=2)),
    ("rule-description", _edit_rule("minor", description="Children are never profiled.")),
    ("rule-condition", _edit_rule("minor", match=[{"field": "minor", "ne": False}])),
    ("rule-purposes", _edit_rule("minor", purposes=["enrichment", "profiling"])),
    ("bundle-version", lambda d: d.update(version="2026.11.2")),
    ("country-moved", lambda d: d["jurisdictions"]["gdpr"].remove("IS")),
    ("floor", lambda d: d["confidence_floors"].update(profiling=0.65)),
    ("rule-removed", lambda d: d["rules"].pop()),
]


@pytest.mark.parametrize("change", [pytest.param(c[1], id=c[0]) for c in HASH_CHANGES])
def test_hash_changes_with_meaning(change: Any) -> None:
    data = _default_data()
    before = PolicyBundle.model_validate(copy.deepcopy(data)).hash
    change(data)
    assert PolicyBundle.model_validate(data).hash != before


# --- loading errors ---------------------------------------------------------------------------

BROKEN = """\
name: broken
version: "1"
purposes:
  enrichment: {description: e, bases: [consent]}
  profiling: {description: p, bases: [consent, legitimate_interests]}
  crm_export: {description: c, bases: [consent]}
  ads_export: {description: a, bases: [consent]}
  analytics: {description: x, bases: [consent]}
jurisdictions:
  gdpr: [DE, FR]
  ccpa: [US, FR]
retention:
  signals: {declared: 1, observed: 1, inferred: 1}
  outputs: 1
tcf:
  profiling: [3, 5]
rules:
  - id: fine
    version: 1
    priority: 1
    description: d
    outcome: deny
    reason: RULE
  - id: typo
    version: 1
    priority: 1
    description: d
    outcome: deny
    reason: RULE
    match:
      - {field: consent_profilin, eq: granted}
  - id: no-basis
    version: 1
    priority: 1
    description: d
    outcome: allow
    reason: BASIS_RECORDED
  - id: wrong-value
    version: 1
    priority: 1
    description: d
    outcome: deny
    reason: RULE
    match:
      - {field: consent_profiling, eq: yes}
"""


def test_loader_reports_every_error_with_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, BROKEN)
    with pytest.raises(ConfigError) as caught:
        load_bundle(path)
    problems = caught.value.problems
    expected = [
        (11, "jurisdictions.ccpa", "FR is listed under both gdpr and ccpa"),
        (16, "tcf.profiling", "TCF purposes [3, 5] need consent, never legitimate interest"),
        (31, "rules[1].match[0].field", "did you mean consent_profiling?"),
        (32, "rules[2].basis", "an allow rule must name the lawful basis"),
        (45, "rules[3].match[0].eq", "expects text, not True (YAML reads unquoted"),
    ]
    assert len(problems) == len(expected), problems
    for line, where, message in expected:
        assert any(p.startswith(f"{path}:{line}: {where}: ") and message in p for p in problems), (
            line,
            where,
            problems,
        )
    assert str(path) in str(caught.value)


RULE_CROSS_CHECKS = """\
name: cross
version: "1"
purposes:
  enrichment: {description: e, bases: [consent]}
  profiling: {description: p, bases: [consent]}
  crm_export: {description: c, bases: [consent, legitimate_interests]}
  ads_export: {description: a, bases: [consent]}
  analytics: {description: x, bases: [consent, legitimate_interests]}
jurisdictions: {gdpr: [DE]}
retention: {signals: {declared: 1, observed: 1, inferred: 1}, outputs: 1}
rules:
  - id: li
    version: 1
    priority: 1
    description: d
    purposes: [crm_export, ads_export]
    outcome: allow
    basis: legitimate_interests
    reason: BASIS_RECORDED
  - id: li
    version: 1
    priority: 1
    description: d
    topics: [interest.running]
    outcome: allow
    basis: consent
    reason: BASIS_RECORDED
"""


def test_rule_cross_checks_are_reported_together(tmp_path: Path) -> None:
    path = _write(tmp_path, RULE_CROSS_CHECKS)
    with pytest.raises(ConfigError) as caught:
        load_bundle(path)
    problems = caught.value.problems
    assert len(problems) == 3, problems
    assert f"{path}:18: rules[0].basis: basis legitimate_interests is not accepted" in "\n".join(
        problems
    )
    assert "['ads_export']" in problems[0]
    assert any(p.startswith(f"{path}:20: rules[1].id: rule id 'li' is already") for p in problems)
    assert any(f"{path}:24: rules[1].topics: interest.running" in p for p in problems)


def test_unquoted_norway_gets_a_hint(tmp_path: Path) -> None:
    text = yaml.safe_dump(bundle_dict()).replace("- FR", "- FR\n  - NO")
    with pytest.raises(ConfigError, match=r"False is not a country code \(YAML reads unquoted NO"):
        load_bundle(_write(tmp_path, text))


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_bundle(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"policy.yaml:3: YAML syntax error"):
        load_bundle(_write(tmp_path, "name: x\nrules: [\n"))


def _rule(**values: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "id": "r",
        "version": 1,
        "priority": 1,
        "description": "d",
        "outcome": "deny",
        "reason": "RULE",
    }
    rule.update(values)
    return rule


def _deny_on(condition: dict[str, Any]) -> Any:
    return lambda d: d["rules"].append(_rule(match=[condition]))


INVALID = [
    ("missing-purpose", lambda d: d["purposes"].pop("analytics"), ("purposes",),
     "missing: ['analytics']"),
    ("empty-bases", lambda d: d["purposes"]["analytics"].update(bases=[]),
     ("purposes", "analytics", "bases"), "at least 1"),
    ("other-listed", lambda d: d["jurisdictions"].update(other=["JP"]), ("jurisdictions", "other"),
     "every country not listed"),
    ("lower-case-country", lambda d: d["jurisdictions"]["gdpr"].append("de"),
     ("jurisdictions", "gdpr", 2), "pattern"),
    ("minor-age-too-low", lambda d: d.update(minor_age={"default": 12}),
     ("minor_age", "default"), "greater than or equal to 13"),
    ("retention-kind-missing", lambda d: d["retention"]["signals"].pop("inferred"),
     ("retention", "signals"), "missing: ['inferred']"),
    ("floor-of-one", lambda d: d.update(confidence_floors={"profiling": 1.0}),
     ("confidence_floors", "profiling"), "less than 1"),
    ("tcf-id-12", lambda d: d.update(tcf={"profiling": [12]}), ("tcf", "profiling", 0),
     "less than or equal to 11"),
    ("tcf-without-consent", lambda d: (
        d["purposes"]["analytics"].update(bases=["legitimate_interests"]),
        d.update(tcf={"analytics": [9]})), ("tcf", "analytics"), "does not accept consent"),
    ("unknown-transfer-basis", lambda d: d.update(
        providers={"enrichment": {"gdpr": {"regions": ["EU"], "transfer_bases": ["trust_me"]}}}),
     ("providers", "enrichment", "gdpr", "transfer_bases", 0), "adequacy"),
    ("extra-key", lambda d: d.update(owner="dpo"), ("owner",), "Extra inputs are not permitted"),
    ("rule-extra-key", lambda d: d["rules"].append(_rule(when=[])), ("rules", 0, "when"),
     "Extra inputs"),
    ("reserved-id", lambda d: d["rules"].append(_rule(id="consent")), ("rules", 0, "id"),
     "reserved"),
    ("bad-id", lambda d: d["rules"].append(_rule(id="Has Space")), ("rules", 0, "id"),
     "pattern"),
    ("bad-reason", lambda d: d["rules"].append(_rule(reason="because")), ("rules", 0, "reason"),
     "pattern"),
    ("deny-with-basis", lambda d: d["rules"].append(_rule(basis="consent")),
     ("rules", 0, "basis"), "only allow rules record a basis"),
    ("redact-without-list", lambda d: d["rules"].append(_rule(outcome="redact")),
     ("rules", 0, "redact"), "must list the fields"),
    ("deny-with-redact-list", lambda d: d["rules"].append(_rule(redact=["email"])),
     ("rules", 0, "redact"), "only redact rules"),
    ("topics-on-deny", lambda d: d["rules"].append(_rule(topics=["interest.health"])),
     ("rules", 0, "topics"), "only allow rules permit"),
    ("topics-with-li", lambda d: d["rules"].append(_rule(
        outcome="allow", basis="legitimate_interests", topics=["interest.health"])),
     ("rules", 0, "basis"), "need basis consent"),
    ("empty-purposes", lambda d: d["rules"].append(_rule(purposes=[])),
     ("rules", 0, "purposes"), "must not be empty"),
    ("unknown-gate", lambda d: d["rules"].append(_rule(gates=["D"])), ("rules", 0, "gates", 0),
     "'A', 'B' or 'C'"),
    ("two-ops", _deny_on({"field": "age", "lt": 16, "gt": 3}), ("rules", 0, "match", 0),
     "exactly one op"),
    ("no-op", _deny_on({"field": "age"}), ("rules", 0, "match", 0), "exactly one op"),
    ("no-field", _deny_on({"eq": 3}), ("rules", 0, "match", 0), "needs `field`"),
    ("group-and-test", _deny_on({"any": [{"field": "age", "lt": 3}], "field": "age"}),
     ("rules", 0, "match", 0), "either"),
    ("empty-group", _deny_on({"all": []}), ("rules", 0, "match", 0, "all"), "at least one"),
    ("nested-unknown-field", _deny_on({"any": [{"field": "agee", "lt": 3}]}),
     ("rules", 0, "match", 0, "any", 0, "field"), "unknown field 'agee'"),
    ("lt-on-bool", _deny_on({"field": "is_customer", "lt": 1}),
     ("rules", 0, "match", 0, "lt"), "is_customer is bool"),
    ("lt-on-text", _deny_on({"field": "country", "lt": 1}), ("rules", 0, "match", 0, "lt"),
     "country is text"),
    ("text-for-number", _deny_on({"field": "age", "eq": "sixteen"}),
     ("rules", 0, "match", 0, "eq"), "expects a number"),
    ("unknown-consent-status", _deny_on({"field": "consent_profiling", "eq": "given"}),
     ("rules", 0, "match", 0, "eq"), "not one of granted, withdrawn"),
    ("unknown-regime", _deny_on({"field": "regime", "in": ["gdpr", "lgpd"]}),
     ("rules", 0, "match", 0, "in"), "'lgpd' is not one of"),
    ("lower-case-country-value", _deny_on({"field": "country", "eq": "de"}),
     ("rules", 0, "match", 0, "eq"), "does not match"),
    ("null-value", _deny_on({"field": "country", "eq": None}), ("rules", 0, "match", 0, "eq"),
     "exists: false"),
    ("empty-in", _deny_on({"field": "country", "in": []}), ("rules", 0, "match", 0, "in"),
     "at least one value"),
    ("tcf-purposes-not-a-field", _deny_on({"field": "tcf_purposes", "exists": True}),
     ("rules", 0, "match", 0, "field"), "unknown field"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "loc", "message"), [pytest.param(*case[1:], id=case[0]) for case in INVALID]
)
def test_invalid_bundles(mutate: Any, loc: tuple[Any, ...], message: str) -> None:
    data = bundle_dict()
    mutate(data)
    with pytest.raises(ValidationError) as caught:
        PolicyBundle.model_validate(data)
    errors = caught.value.errors()
    assert any(tuple(e["loc"]) == loc and message in e["msg"] for e in errors), errors


def test_allow_rule_basis_must_suit_every_purpose_it_covers() -> None:
    data = bundle_dict()
    data["purposes"]["ads_export"]["bases"] = ["consent"]
    data["rules"] = [_rule(outcome="allow", basis="legitimate_interests")]
    with pytest.raises(ValidationError, match=r"not accepted by purpose\(s\) \['ads_export'\]"):
        PolicyBundle.model_validate(data)
    data["rules"] = [
        _rule(outcome="allow", basis="legitimate_interests", purposes=["crm_export", "analytics"])
    ]
    assert PolicyBundle.model_validate(data).rules[0].outcome is Outcome.ALLOW


def test_condition_fields_document_every_fact_and_context_key() -> None:
    assert {"country", "age", "is_customer", "regime", "minor", "provider", "destination"} <= set(
        CONDITION_FIELDS
    )
    for purpose in Purpose:
        assert f"consent_{purpose}" in CONDITION_FIELDS
    assert all(spec.doc for spec in CONDITION_FIELDS.values())
