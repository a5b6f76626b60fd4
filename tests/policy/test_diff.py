"""Tests for the policy diff: counts per purpose, gate and new deciding rule; counts-only text."""

from __future__ import annotations

import pandas as pd

from policy.bundle import PolicyBundle, default_bundle_path, load_bundle
from policy.diff import COUNT_COLUMNS, DEFAULT_GATE_PURPOSES, diff, render_diff
from policy.types import Gate, Purpose
from tests.policy.test_engine import bundle_dict, fact_row, make_bundle, make_facts

LI_CUSTOMERS = {
    "id": "li-customers", "version": 1, "priority": 1, "description": "soft opt-in",
    "purposes": ["crm_export"], "match": [{"field": "is_customer", "eq": True}],
    "outcome": "allow", "basis": "legitimate_interests", "reason": "BASIS_RECORDED",
}  # fmt: skip
ERASURE = {
    "id": "erasure", "version": 1, "priority": 100, "description": "Art. 17",
    "match": [{"field": "suppressed_erasure", "eq": True}], "outcome": "deny", "reason": "ERASED",
}  # fmt: skip
OBJECTION = {
    "id": "objection", "version": 1, "priority": 50, "description": "Art. 21(2)",
    "purposes": ["crm_export"], "outcome": "deny", "reason": "OBJECTED",
    "match": [{"field": "suppressed_objection_direct_marketing", "eq": True}],
}  # fmt: skip
LI_ANALYTICS = {
    "id": "li-analytics-consenters", "version": 1, "priority": 1, "description": "d",
    "purposes": ["crm_export"], "match": [{"field": "consent_analytics", "eq": "granted"}],
    "outcome": "allow", "basis": "legitimate_interests", "reason": "BASIS_RECORDED",
}  # fmt: skip

PAIRS = [(Gate.C, Purpose.CRM_EXPORT), (Gate.B, Purpose.PROFILING)]


def _facts() -> pd.DataFrame:
    return make_facts(
        # customer on legitimate interests, which the new bundle drops: allow → deny
        fact_row("subj-alpha", is_customer=True),
        # consent, but objected to marketing; only the new bundle honours that: allow → deny
        fact_row(
            "subj-bravo",
            consent_crm_export="granted",
            suppressed_objection_direct_marketing=True,
        ),
        # no basis anyway; now denied by the objection rule: deny → deny, other rule
        fact_row("subj-charlie", suppressed_objection_direct_marketing=True),
        # erased under both
        fact_row("subj-delta", is_customer=True, suppressed_erasure=True),
        # consent for everything under both
        fact_row("subj-echo", consent_crm_export="granted", consent_profiling="granted"),
        # nothing under both
        fact_row("subj-foxtrot"),
        # analytics consent becomes a CRM basis in the new bundle: deny → allow
        fact_row("subj-golf", consent_analytics="granted"),
    )


def _counts(table: pd.DataFrame, purpose: str) -> dict[str, tuple[int, ...]]:
    rows = table[table["purpose"] == purpose]
    return {str(r["rule"]): tuple(int(r[c]) for c in COUNT_COLUMNS) for _, r in rows.iterrows()}


def test_diff_counts_per_purpose_gate_and_new_rule() -> None:
    old = make_bundle([LI_CUSTOMERS, ERASURE])
    new = make_bundle([ERASURE, OBJECTION, LI_ANALYTICS], version="2")
    table = diff(old, new, _facts(), gates_purposes=PAIRS)
    assert list(table.columns) == ["purpose", "gate", "rule", *COUNT_COLUMNS]
    # subjects, changed, allow→deny, deny→allow, deny→deny with another rule
    assert _counts(table, "crm_export") == {
        "consent@2": (1, 0, 0, 0, 0),
        "default-deny@2": (2, 1, 1, 0, 0),
        "erasure@1": (1, 0, 0, 0, 0),
        "li-analytics-consenters@1": (1, 1, 0, 1, 0),
        "objection@1": (2, 2, 1, 0, 1),
    }
    assert _counts(table, "profiling") == {
        "consent@2": (1, 0, 0, 0, 0),
        "default-deny@2": (5, 0, 0, 0, 0),
        "erasure@1": (1, 0, 0, 0, 0),
    }
    assert list(table["purpose"].drop_duplicates()) == ["profiling", "crm_export"]
    assert set(table["gate"]) == {"B", "C"}


def test_rule_version_bump_counts_as_a_change_but_bundle_version_does_not() -> None:
    facts = _facts()
    old = make_bundle([LI_CUSTOMERS, ERASURE])
    relabelled = make_bundle([LI_CUSTOMERS, ERASURE], version="9")
    assert int(diff(old, relabelled, facts)["changed"].sum()) == 0
    bumped = make_bundle([{**LI_CUSTOMERS, "version": 2}, ERASURE])
    table = diff(old, bumped, facts, gates_purposes=PAIRS)
    crm = _counts(table, "crm_export")
    assert crm["li-customers@2"] == (1, 1, 0, 0, 0)


def test_diff_runs_every_gate_by_default_on_the_shipped_bundle() -> None:
    bundle = load_bundle(default_bundle_path())
    table = diff(bundle, bundle, _facts())
    assert {
        (Gate(g), Purpose(p)) for g, p in zip(table["gate"], table["purpose"], strict=True)
    } == (set(DEFAULT_GATE_PURPOSES))
    assert int(table["changed"].sum()) == 0
    for _, group in table.groupby("purpose"):
        assert int(group["subjects"].sum()) == len(_facts())


def test_render_diff_prints_counts_only() -> None:
    old = make_bundle([LI_CUSTOMERS, ERASURE])
    new = make_bundle([ERASURE, OBJECTION, LI_ANALYTICS], version="2")
    facts = _facts()
    text = render_diff(diff(old, new, facts, gates_purposes=PAIRS))
    for subject in facts["subject"]:
        assert subject not in text
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["purpose", "gate", "rule", "(new)"]
    assert any(line.split()[:3] == ["crm_export", "C", "objection@1"] for line in lines)
    assert lines[-1].split() == ["total", "14", "4", "2", "1", "1"]


def test_render_empty_diff() -> None:
    empty = diff(make_bundle(), make_bundle(), _facts(), gates_purposes=[])
    assert empty.empty
    assert "(no decisions)" in render_diff(empty)


def test_diff_passes_the_context() -> None:
    data = bundle_dict(
        providers={"enrichment": {"gdpr": {"regions": ["EU"]}}},
        rules=[
            {"id": "transfer", "version": 1, "priority": 1, "description": "d", "gates": ["A"],
             "outcome": "deny", "reason": "NO_TRANSFER_BASIS",
             "match": [{"field": "provider_region_allowed", "eq": False}]},
        ],
    )  # fmt: skip
    bundle = PolicyBundle.model_validate(data)
    facts = make_facts(fact_row("subj-x", consent_enrichment="granted"))
    pairs = [(Gate.A, Purpose.ENRICHMENT)]
    undeclared = diff(bundle, bundle, facts, gates_purposes=pairs, context={"provider": "p"})
    assert list(undeclared["rule"]) == ["transfer@1"]
    eu = {"provider": "p", "provider_region": "EU"}
    assert list(diff(bundle, bundle, facts, gates_purposes=pairs, context=eu)["rule"]) == [
        "consent@1"
    ]
