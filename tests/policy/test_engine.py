"""Tests for the policy engine: the default bundle's rules, decision semantics and properties,
gate-B signal filtering and gate-C minimisation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy.bundle import PolicyBundle, default_bundle_path, load_bundle
from policy.engine import (
    DECISION_COLUMNS,
    GATE_PURPOSES,
    PolicyInputError,
    allowed_fields,
    evaluate,
    evaluate_all,
    filter_signals,
    minimise,
    subject_regimes,
)
from policy.types import Gate, Purpose, SuppressionKind

DEFAULT = load_bundle(default_bundle_path())
V = DEFAULT.version
PAIRS = [(gate, purpose) for gate, purposes in GATE_PURPOSES.items() for purpose in purposes]
EU_PROVIDER = {"provider": "acme", "provider_region": "EU"}


def fact_row(subject: str = "p1", **values: Any) -> dict[str, Any]:
    """One facts row: an adult German non-customer with no consent and no suppression."""
    row: dict[str, Any] = {"subject": subject, "country": "DE", "age": 30, "is_customer": False}
    for purpose in Purpose:
        row[f"consent_{purpose}"] = None
        row[f"consent_ref_{purpose}"] = None
    for kind in SuppressionKind:
        row[f"suppressed_{kind}"] = False
        row[f"suppression_ref_{kind}"] = None
    row.update(values)
    return row


def make_facts(*rows: dict[str, Any]) -> pd.DataFrame:
    """A facts table with the dtypes the flow builds."""
    frame = pd.DataFrame(list(rows))
    frame["age"] = frame["age"].astype("Int64")
    return frame


def bundle_dict(rules: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    """A small valid bundle: every purpose accepts consent and legitimate interests."""
    both = ["consent", "legitimate_interests"]
    data: dict[str, Any] = {
        "name": "test",
        "version": "1",
        "purposes": {p.value: {"description": p.value, "bases": both} for p in Purpose},
        "jurisdictions": {"gdpr": ["DE", "FR"], "uk_gdpr": ["GB"], "ccpa": ["US"]},
        "retention": {"signals": {"declared": 30, "observed": 20, "inferred": 10}, "outputs": 5},
        "rules": rules or [],
    }
    data.update(extra)
    return data


def make_bundle(rules: list[dict[str, Any]] | None = None, **extra: Any) -> PolicyBundle:
    """`bundle_dict` validated."""
    return PolicyBundle.model_validate(bundle_dict(rules, **extra))


def one(
    bundle: PolicyBundle,
    row: dict[str, Any],
    gate: Gate,
    purpose: Purpose,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The decision for a single subject, as a dict."""
    result = evaluate(bundle, make_facts(row), gate=gate, purpose=purpose, context=context)
    return {str(k): str(v) for k, v in result.iloc[0].to_dict().items()}


# (id, facts overrides, gate, purpose, context, decision, rule, reason, evidence)
DEFAULT_CASES = [
    ("no-consent-default-deny", {}, Gate.B, Purpose.PROFILING, None,
     "deny", f"default-deny@{V}", "NO_LAWFUL_BASIS", ""),
    ("consent-allows-profiling",
     {"consent_profiling": "granted", "consent_ref_profiling": "c-1"},
     Gate.B, Purpose.PROFILING, None, "allow", f"consent@{V}", "BASIS_RECORDED", "c-1"),
    ("withdrawn-consent", {"consent_profiling": "withdrawn", "consent_ref_profiling": "c-2"},
     Gate.B, Purpose.PROFILING, None, "deny", f"default-deny@{V}", "CONSENT_WITHDRAWN", "c-2"),
    ("consent-for-other-purpose-does-not-count", {"consent_analytics": "granted"},
     Gate.B, Purpose.PROFILING, None, "deny", f"default-deny@{V}", "NO_LAWFUL_BASIS", ""),
    ("erasure-beats-consent",
     {"consent_profiling": "granted", "suppressed_erasure": True,
      "suppression_ref_erasure": "dsar-7"},
     Gate.B, Purpose.PROFILING, None, "deny", "erasure@1", "ERASED", "dsar-7"),
    ("erasure-beats-customer-li", {"is_customer": True, "suppressed_erasure": True},
     Gate.C, Purpose.CRM_EXPORT, None, "deny", "erasure@1", "ERASED", ""),
    ("objection-to-profiling", {"consent_profiling": "granted",
                                "suppressed_objection_profiling": True,
                                "suppression_ref_objection_profiling": "obj-1"},
     Gate.B, Purpose.PROFILING, None, "deny", "objection-profiling@1", "OBJECTED", "obj-1"),
    ("objection-to-marketing-stops-crm", {"consent_crm_export": "granted",
                                          "suppressed_objection_direct_marketing": True},
     Gate.C, Purpose.CRM_EXPORT, None, "deny", "objection-direct-marketing@1", "OBJECTED", ""),
    ("objection-to-marketing-stops-ads", {"consent_ads_export": "granted",
                                          "suppressed_objection_direct_marketing": True},
     Gate.C, Purpose.ADS_EXPORT, None, "deny", "objection-direct-marketing@1", "OBJECTED", ""),
    ("objection-to-marketing-keeps-analytics",
     {"consent_analytics": "granted", "suppressed_objection_direct_marketing": True},
     Gate.C, Purpose.ANALYTICS, None, "allow", f"consent@{V}", "BASIS_RECORDED", ""),
    ("ccpa-opt-out-denies-ads", {"country": "US", "consent_ads_export": "granted",
                                 "suppressed_opt_out_sale_sharing": True},
     Gate.C, Purpose.ADS_EXPORT, None, "deny", "ccpa-opt-out-sale-sharing@1", "OPTED_OUT", ""),
    ("ccpa-opt-out-denies-enrichment", {"country": "US", "consent_enrichment": "granted",
                                        "suppressed_opt_out_sale_sharing": True},
     Gate.A, Purpose.ENRICHMENT, EU_PROVIDER,
     "deny", "ccpa-opt-out-sale-sharing@1", "OPTED_OUT", ""),
    ("opt-out-flag-outside-ccpa-is-not-that-rule",
     {"consent_ads_export": "granted", "suppressed_opt_out_sale_sharing": True},
     Gate.C, Purpose.ADS_EXPORT, None, "allow", f"consent@{V}", "BASIS_RECORDED", ""),
    ("minor-never-profiled", {"age": 15, "consent_profiling": "granted"},
     Gate.B, Purpose.PROFILING, None, "deny", "minor@1", "MINOR", ""),
    ("minor-never-enriched", {"age": 13, "consent_enrichment": "granted"},
     Gate.A, Purpose.ENRICHMENT, EU_PROVIDER, "deny", "minor@1", "MINOR", ""),
    ("minor-not-in-ads", {"age": 15, "consent_ads_export": "granted"},
     Gate.C, Purpose.ADS_EXPORT, None, "deny", "minor@1", "MINOR", ""),
    ("sixteen-is-not-a-minor", {"age": 16, "consent_profiling": "granted"},
     Gate.B, Purpose.PROFILING, None, "allow", f"consent@{V}", "BASIS_RECORDED", ""),
    ("unknown-age-is-not-a-minor", {"age": None, "consent_profiling": "granted"},
     Gate.B, Purpose.PROFILING, None, "allow", f"consent@{V}", "BASIS_RECORDED", ""),
    ("minor-customer-gets-no-li", {"age": 14, "is_customer": True},
     Gate.C, Purpose.CRM_EXPORT, None, "deny", f"default-deny@{V}", "NO_LAWFUL_BASIS", ""),
    ("enrichment-with-eu-provider", {"consent_enrichment": "granted"},
     Gate.A, Purpose.ENRICHMENT, EU_PROVIDER, "allow", f"consent@{V}", "BASIS_RECORDED", ""),
    ("enrichment-pre-check-without-provider", {"consent_enrichment": "granted"},
     Gate.A, Purpose.ENRICHMENT, None, "allow", f"consent@{V}", "BASIS_RECORDED", ""),
    ("us-provider-without-transfer-basis", {"consent_enrichment": "granted"},
     Gate.A, Purpose.ENRICHMENT, {"provider": "acme", "provider_region": "US"},
     "deny", "provider-no-transfer-basis@1", "NO_TRANSFER_BASIS", ""),
    ("us-provider-with-scc", {"consent_enrichment": "granted"},
     Gate.A, Purpose.ENRICHMENT,
     {"provider": "acme", "provider_region": "US", "provider_transfer_basis": "scc"},
     "allow", f"consent@{V}", "BASIS_RECORDED", ""),
    ("us-provider-for-us-subject", {"country": "US", "consent_enrichment": "granted"},
     Gate.A, Purpose.ENRICHMENT, {"provider": "acme", "provider_region": "US"},
     "allow", f"consent@{V}", "BASIS_RECORDED", ""),
    ("provider-region-undeclared", {"consent_enrichment": "granted"},
     Gate.A, Purpose.ENRICHMENT, {"provider": "acme"},
     "deny", "provider-no-transfer-basis@1", "NO_TRANSFER_BASIS", ""),
    ("unknown-country-not-enriched", {"country": None, "consent_enrichment": "granted"},
     Gate.A, Purpose.ENRICHMENT, EU_PROVIDER,
     "deny", "unknown-country@1", "UNKNOWN_JURISDICTION", ""),
    ("unknown-country-may-be-profiled", {"country": None, "consent_profiling": "granted"},
     Gate.B, Purpose.PROFILING, None, "allow", f"consent@{V}", "BASIS_RECORDED", ""),
    ("customer-li-for-crm", {"is_customer": True},
     Gate.C, Purpose.CRM_EXPORT, None,
     "allow", "customer-crm-legitimate-interests@1", "BASIS_RECORDED", ""),
    ("customer-li-for-analytics", {"is_customer": True},
     Gate.C, Purpose.ANALYTICS, None,
     "allow", "customer-analytics-legitimate-interests@1", "BASIS_RECORDED", ""),
    ("customer-li-never-for-ads", {"is_customer": True},
     Gate.C, Purpose.ADS_EXPORT, None, "deny", f"default-deny@{V}", "NO_LAWFUL_BASIS", ""),
    ("customer-li-never-for-profiling", {"is_customer": True},
     Gate.B, Purpose.PROFILING, None, "deny", f"default-deny@{V}", "NO_LAWFUL_BASIS", ""),
    ("no-switch-to-li-after-withdrawal",
     {"is_customer": True, "consent_crm_export": "withdrawn", "consent_ref_crm_export": "c-9"},
     Gate.C, Purpose.CRM_EXPORT, None, "deny", f"default-deny@{V}", "CONSENT_WITHDRAWN", "c-9"),
    ("consent-named-before-li",
     {"is_customer": True, "consent_crm_export": "granted", "consent_ref_crm_export": "c-3"},
     Gate.C, Purpose.CRM_EXPORT, None, "allow", f"consent@{V}", "BASIS_RECORDED", "c-3"),
    ("objection-to-profiling-redacts-crm",
     {"is_customer": True, "suppressed_objection_profiling": True,
      "suppression_ref_objection_profiling": "obj-2"},
     Gate.C, Purpose.CRM_EXPORT, None,
     "redact", "objection-profiling-no-profile-fields@1", "OBJECTED", "obj-2"),
    ("tcf-3-and-4-count-for-ads", {"tcf_purposes": [1, 3, 4]},
     Gate.C, Purpose.ADS_EXPORT, None, "allow", f"consent@{V}", "BASIS_RECORDED", "tcf:3,4"),
    ("tcf-3-alone-does-not-count-for-ads", {"tcf_purposes": [3]},
     Gate.C, Purpose.ADS_EXPORT, None, "deny", f"default-deny@{V}", "NO_LAWFUL_BASIS", ""),
    ("withdrawal-beats-tcf", {"tcf_purposes": {3, 4}, "consent_ads_export": "withdrawn"},
     Gate.C, Purpose.ADS_EXPORT, None, "deny", f"default-deny@{V}", "CONSENT_WITHDRAWN", ""),
    ("tcf-never-for-crm", {"tcf_purposes": list(range(1, 12))},
     Gate.C, Purpose.CRM_EXPORT, None, "deny", f"default-deny@{V}", "NO_LAWFUL_BASIS", ""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "gate", "purpose", "context", "expected"),
    [pytest.param(*case[1:5], case[5:], id=case[0]) for case in DEFAULT_CASES],
)
def test_default_bundle_rules(
    overrides: dict[str, Any],
    gate: Gate,
    purpose: Purpose,
    context: dict[str, Any] | None,
    expected: tuple[str, str, str, str],
) -> None:
    row = fact_row(**overrides)
    if "tcf_purposes" not in row:
        row["tcf_purposes"] = None
    got = one(DEFAULT, row, gate, purpose, context)
    assert (got["decision"], got["rule"], got["reason"], got["evidence"]) == expected
    assert got["policy_hash"] == DEFAULT.hash


def test_result_shape_order_and_index() -> None:
    facts = make_facts(
        fact_row("b", consent_profiling="granted"), fact_row("a"), fact_row("c", age=10)
    )
    facts.index = pd.Index([30, 10, 20])
    result = evaluate(DEFAULT, facts, gate=Gate.B, purpose=Purpose.PROFILING)
    assert tuple(result.columns) == DECISION_COLUMNS
    assert list(result.index) == [30, 10, 20]
    assert list(result["subject"]) == ["b", "a", "c"]
    assert list(result["decision"]) == ["allow", "deny", "deny"]
    assert set(result["gate"]) == {"B"}
    assert set(result["purpose"]) == {"profiling"}
    assert list(result["basis"]) == ["consent", "", ""]


def test_every_result_column_is_nullable_text_without_missing_values() -> None:
    facts = make_facts(fact_row("b", consent_profiling="granted"), fact_row(" a "))
    result = evaluate(DEFAULT, facts, gate=Gate.B, purpose=Purpose.PROFILING)
    for column in DECISION_COLUMNS:
        assert result[column].dtype == pd.StringDtype(na_value=pd.NA), column
        assert not result[column].isna().any(), column
    assert list(result["subject"]) == ["b", "a"]  # as the facts name them, trimmed
    assert set(result["policy_hash"]) == {DEFAULT.hash}


def test_regimes_come_from_the_country_whatever_its_case() -> None:
    bundle = make_bundle()
    country = pd.Series(["de", None, "ZZ", "GB", " us", "FR"], index=[5, 4, 3, 2, 1, 0])
    regimes = subject_regimes(bundle, country)
    assert list(regimes) == ["gdpr", "other", "other", "uk_gdpr", "other", "gdpr"]
    assert list(regimes.index) == [5, 4, 3, 2, 1, 0]
    assert regimes.dtype == "str"


def test_redact_lists_merge_and_trail_names_every_matched_rule() -> None:
    bundle = make_bundle(
        [
            {"id": "li", "version": 2, "priority": 10, "description": "d", "outcome": "allow",
             "basis": "legitimate_interests", "reason": "BASIS_RECORDED"},
            {"id": "r-low", "version": 1, "priority": 1, "description": "d", "outcome": "redact",
             "redact": ["persona", "email"], "reason": "LOW"},
            {"id": "r-high", "version": 1, "priority": 5, "description": "d", "outcome": "redact",
             "redact": ["persona", "segments"], "reason": "HIGH"},
            {"id": "r-never", "version": 1, "priority": 9, "description": "d", "outcome": "redact",
             "redact": ["phone"], "reason": "NEVER", "match": [{"field": "age", "lt": 0}]},
        ]
    )  # fmt: skip
    got = one(bundle, fact_row(), Gate.C, Purpose.CRM_EXPORT)
    assert got["decision"] == "redact"
    assert got["basis"] == "legitimate_interests"
    assert got["rule"] == "r-high@1"
    assert got["reason"] == "HIGH"
    assert got["redact"] == "email;persona;segments"
    assert got["trail"] == "li;r-high;r-low"


def test_redact_without_basis_stays_denied() -> None:
    bundle = make_bundle(
        [{"id": "r", "version": 1, "priority": 1, "description": "d", "outcome": "redact",
          "redact": ["persona"], "reason": "RULE"}]
    )  # fmt: skip
    got = one(bundle, fact_row(), Gate.C, Purpose.CRM_EXPORT)
    assert (got["decision"], got["redact"], got["trail"]) == ("deny", "", "r")


def test_highest_priority_deny_decides_and_ties_go_to_lowest_id() -> None:
    rules = [
        {"id": "b-deny", "version": 1, "priority": 5, "description": "d", "outcome": "deny",
         "reason": "RULE_B"},
        {"id": "a-deny", "version": 3, "priority": 5, "description": "d", "outcome": "deny",
         "reason": "RULE_A"},
        {"id": "z-deny", "version": 1, "priority": 1, "description": "d", "outcome": "deny",
         "reason": "RULE_Z"},
    ]  # fmt: skip
    got = one(make_bundle(rules), fact_row(consent_profiling="granted"), Gate.B, Purpose.PROFILING)
    assert (got["decision"], got["rule"], got["reason"]) == ("deny", "a-deny@3", "RULE_A")
    assert got["trail"] == "a-deny;b-deny;z-deny"
    assert got["basis"] == ""


def _deny_if(*conditions: dict[str, Any], unless: list[dict[str, Any]] | None = None) -> Any:
    return make_bundle(
        [{"id": "x", "version": 1, "priority": 1, "description": "d", "outcome": "deny",
          "reason": "RULE", "match": list(conditions), "unless": unless or []}]
    )  # fmt: skip


CONDITION_CASES = [
    ("eq-missing-is-false", {"field": "consent_profiling", "eq": "granted"}, None, False),
    ("ne-missing-is-true", {"field": "consent_profiling", "ne": "granted"}, None, True),
    ("ne-value", {"field": "consent_profiling", "ne": "granted"}, "granted", False),
    ("in-missing-is-false", {"field": "consent_profiling", "in": ["granted"]}, None, False),
    ("not-in-missing-is-true", {"field": "consent_profiling", "not_in": ["granted"]}, None, True),
    ("exists-false-on-missing", {"field": "consent_profiling", "exists": False}, None, True),
    ("exists-false-on-empty", {"field": "consent_profiling", "exists": False}, "", True),
    ("exists-true", {"field": "consent_profiling", "exists": True}, "withdrawn", True),
]


@pytest.mark.parametrize(
    ("condition", "status", "denied"),
    [pytest.param(*case[1:], id=case[0]) for case in CONDITION_CASES],
)
def test_condition_semantics_on_missing_values(
    condition: dict[str, Any], status: str | None, denied: bool
) -> None:
    row = fact_row(consent_profiling=status)
    got = one(_deny_if(condition), row, Gate.B, Purpose.PROFILING)
    assert (got["rule"] == "x@1") is denied


@pytest.mark.parametrize(
    ("condition", "row", "denied"),
    [
        pytest.param({"field": "age", "lt": 18}, {"age": 17}, True, id="lt"),
        pytest.param({"field": "age", "ge": 18}, {"age": 17}, False, id="ge"),
        pytest.param({"field": "age", "le": 17}, {"age": None}, False, id="le-missing"),
        pytest.param({"field": "regime", "eq": "uk_gdpr"}, {"country": "GB"}, True, id="regime"),
        pytest.param({"field": "regime", "eq": "other"}, {"country": "JP"}, True, id="other"),
        pytest.param({"field": "regime", "eq": "other"}, {"country": None}, True, id="no-country"),
        pytest.param({"field": "country", "in": ["FR"]}, {"country": " fr "}, True, id="country"),
        pytest.param(
            {"any": [{"field": "age", "lt": 18}, {"field": "is_customer", "eq": True}]},
            {"is_customer": True},
            True,
            id="any",
        ),
        pytest.param(
            {"all": [{"field": "age", "lt": 18}, {"field": "is_customer", "eq": True}]},
            {"is_customer": True},
            False,
            id="all",
        ),
        pytest.param({"field": "destination", "eq": "hubspot"}, {}, True, id="context"),
    ],
)
def test_condition_fields_and_groups(
    condition: dict[str, Any], row: dict[str, Any], denied: bool
) -> None:
    got = one(
        _deny_if(condition), fact_row(**row), Gate.C, Purpose.CRM_EXPORT, {"destination": "hubspot"}
    )
    assert (got["rule"] == "x@1") is denied


def test_unless_exempts_and_regimes_restrict() -> None:
    bundle = make_bundle(
        [{"id": "x", "version": 1, "priority": 1, "description": "d", "outcome": "deny",
          "reason": "RULE", "regimes": ["gdpr"], "unless": [{"field": "age", "gt": 60}]}]
    )  # fmt: skip
    facts = make_facts(
        fact_row("de"), fact_row("old", age=70), fact_row("gb", country="GB"), fact_row("none")
    )
    facts.loc[3, "country"] = None
    result = evaluate(bundle, facts, gate=Gate.B, purpose=Purpose.PROFILING)
    assert list(result["trail"]) == ["x", "", "", ""]


def test_minor_age_per_regime() -> None:
    bundle = make_bundle(
        minor_age={"default": 16, "regimes": {"uk_gdpr": 13}},
        rules=[{"id": "kids", "version": 1, "priority": 1, "description": "d",
                "outcome": "deny", "reason": "MINOR", "match": [{"field": "minor", "eq": True}]}],
    )  # fmt: skip
    facts = make_facts(fact_row("de", age=14), fact_row("gb", country="GB", age=14))
    result = evaluate(bundle, facts, gate=Gate.B, purpose=Purpose.PROFILING)
    assert list(result["trail"]) == ["kids", ""]


def test_allow_rule_evidence_comes_from_its_match_conditions() -> None:
    bundle = make_bundle(
        [{"id": "soft", "version": 1, "priority": 1, "description": "d", "outcome": "allow",
          "basis": "legitimate_interests", "reason": "BASIS_RECORDED",
          "match": [{"field": "consent_crm_export", "ne": "withdrawn"},
                    {"field": "suppressed_erasure", "eq": False}]}]
    )  # fmt: skip
    row = fact_row(
        consent_crm_export="granted",
        consent_ref_crm_export="c-5",
        suppression_ref_erasure="old-ref",
    )
    got = one(bundle, row, Gate.C, Purpose.ANALYTICS)
    assert (got["rule"], got["evidence"]) == ("soft@1", "c-5;old-ref")


def test_consent_does_not_count_for_a_purpose_that_does_not_accept_it() -> None:
    data = bundle_dict()
    data["purposes"]["analytics"]["bases"] = ["legitimate_interests"]
    bundle = PolicyBundle.model_validate(data)
    got = one(bundle, fact_row(consent_analytics="granted"), Gate.C, Purpose.ANALYTICS)
    assert (got["decision"], got["reason"]) == ("deny", "NO_LAWFUL_BASIS")


def test_provider_names_and_missing_allowance() -> None:
    bundle = make_bundle(
        providers={"enrichment": {"gdpr": {"regions": ["EU"], "names": ["acme"]}}},
        rules=[{"id": "listed", "version": 1, "priority": 1, "description": "d",
                "gates": ["A"], "outcome": "deny", "reason": "PROVIDER_NOT_ALLOWED",
                "match": [{"field": "provider_listed", "eq": False}]}],
    )  # fmt: skip
    facts = make_facts(fact_row("de"), fact_row("gb", country="GB"))
    for provider, expected in (("acme", ["", "listed"]), ("other", ["listed", "listed"])):
        result = evaluate(
            bundle,
            facts,
            gate=Gate.A,
            purpose=Purpose.ENRICHMENT,
            context={"provider": provider, "provider_region": "EU"},
        )
        assert list(result["trail"]) == expected, provider
    unchecked = evaluate(bundle, facts, gate=Gate.A, purpose=Purpose.ENRICHMENT)
    assert list(unchecked["trail"]) == ["", ""]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(lambda f: f.drop(columns=["suppressed_erasure"]), "suppressed_erasure",
                     id="missing-column"),
        pytest.param(lambda f: f.assign(subject=["a", "a"]), "repeats 1 subject",
                     id="duplicate-subject"),
        pytest.param(lambda f: f.assign(subject=["a", None]), "lack a subject", id="no-subject"),
        pytest.param(lambda f: f.assign(consent_profiling=["GRANTED", None]), "consent_profiling",
                     id="bad-consent"),
        pytest.param(lambda f: f.assign(is_customer=["yes", "no"]), "is_customer",
                     id="bad-bool"),
        pytest.param(lambda f: f.assign(age=["ten", "11"]), "age", id="bad-age"),
    ],
)  # fmt: skip
def test_malformed_facts_raise(mutate: Any, message: str) -> None:
    facts = mutate(make_facts(fact_row("a"), fact_row("b")))
    with pytest.raises(PolicyInputError, match=message):
        evaluate(DEFAULT, facts, gate=Gate.B, purpose=Purpose.PROFILING)


def test_bad_calls_raise() -> None:
    facts = make_facts(fact_row())
    with pytest.raises(PolicyInputError, match="unknown context key"):
        evaluate(DEFAULT, facts, gate=Gate.A, purpose=Purpose.ENRICHMENT, context={"region": "EU"})
    with pytest.raises(PolicyInputError, match="gate B does not decide crm_export"):
        evaluate(DEFAULT, facts, gate=Gate.B, purpose=Purpose.CRM_EXPORT)


def test_empty_facts() -> None:
    facts = make_facts(fact_row()).iloc[0:0]
    result = evaluate(DEFAULT, facts, gate=Gate.B, purpose=Purpose.PROFILING)
    assert result.empty
    assert tuple(result.columns) == DECISION_COLUMNS


def test_batch_of_many_subjects_is_column_wise() -> None:
    # 20k subjects through every gate in a fraction of a second each: no per-row Python.
    n = 20_000
    rng = np.random.default_rng(1)
    rows = make_facts(fact_row()).iloc[[0] * n].reset_index(drop=True)
    rows["subject"] = [f"s{i}" for i in range(n)]
    rows["country"] = rng.choice(["DE", "GB", "US", "JP"], n)
    rows["age"] = pd.array(rng.integers(10, 80, n), dtype="Int64")
    rows["consent_profiling"] = rng.choice(["granted", "withdrawn"], n)
    rows["is_customer"] = rng.random(n) < 0.5
    for gate, purpose in PAIRS:
        result = evaluate(DEFAULT, rows, gate=gate, purpose=purpose, context=EU_PROVIDER)
        assert len(result) == n


# --- properties ------------------------------------------------------------------------------

KINDS = list(SuppressionKind)
PURPOSES = list(Purpose)

fact_rows = st.fixed_dictionaries(
    {
        "country": st.sampled_from(["DE", "GB", "US", "JP", None]),
        "age": st.sampled_from([None, 10, 15, 16, 40]),
        "is_customer": st.booleans(),
        **{f"consent_{p}": st.sampled_from([None, "granted", "withdrawn"]) for p in Purpose},
        **{f"suppressed_{k}": st.booleans() for k in SuppressionKind},
        "tcf_purposes": st.sampled_from([None, [3, 4], [3, 5], [1, 3, 4, 5]]),
    }
)


@st.composite
def facts_tables(draw: st.DrawFn) -> pd.DataFrame:
    rows = draw(st.lists(fact_rows, min_size=1, max_size=8))
    return make_facts(*(fact_row(f"s{i}", **row) for i, row in enumerate(rows)))


conditions = st.one_of(
    st.builds(lambda b: {"field": "is_customer", "eq": b}, st.booleans()),
    st.builds(lambda a: {"field": "age", "lt": a}, st.sampled_from([13, 16, 18])),
    st.builds(lambda c: {"field": "country", "in": c}, st.sampled_from([["DE"], ["US", "GB"]])),
    st.builds(lambda c: {"field": "country", "exists": c}, st.booleans()),
    st.builds(
        lambda p, s, op: {"field": f"consent_{p}", op: s},
        st.sampled_from(PURPOSES),
        st.sampled_from(["granted", "withdrawn"]),
        st.sampled_from(["eq", "ne"]),
    ),
    st.builds(lambda k: {"field": f"suppressed_{k}", "eq": True}, st.sampled_from(KINDS)),
    st.builds(lambda r: {"field": "regime", "eq": r}, st.sampled_from(["gdpr", "ccpa", "other"])),
    st.builds(lambda m: {"field": "minor", "ne": m}, st.booleans()),
)


@st.composite
def rules(draw: st.DrawFn, outcome: str, rule_id: str) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "id": rule_id,
        "version": draw(st.integers(1, 3)),
        "priority": draw(st.integers(-5, 5)),
        "description": "generated",
        "purposes": draw(st.lists(st.sampled_from(PURPOSES), min_size=1, unique=True)),
        "match": draw(st.lists(conditions, max_size=2)),
        "unless": draw(st.lists(conditions, max_size=1)),
        "outcome": outcome,
        "reason": "RULE",
    }
    if outcome == "allow":
        rule["basis"] = draw(st.sampled_from(["consent", "legitimate_interests"]))
    if outcome == "redact":
        rule["redact"] = ["persona"]
    return rule


@st.composite
def rule_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    outcomes = draw(st.lists(st.sampled_from(["allow", "deny", "redact"]), max_size=5))
    return [draw(rules(outcome, f"r{i}")) for i, outcome in enumerate(outcomes)]


PROPERTY_SETTINGS = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _decisions(bundle: PolicyBundle, facts: pd.DataFrame) -> dict[tuple[Gate, Purpose], Any]:
    return {
        (gate, purpose): evaluate(
            bundle, facts, gate=gate, purpose=purpose, context=EU_PROVIDER
        ).reset_index(drop=True)
        for gate, purpose in PAIRS
    }


@PROPERTY_SETTINGS
@given(facts=facts_tables(), deny_rules=st.lists(st.integers(0, 1000), max_size=3), data=st.data())
def test_property_default_deny(facts: pd.DataFrame, deny_rules: list[int], data: Any) -> None:
    # No consent (nor TCF) and no allow rule: every purpose is denied, whatever deny rules say.
    for p in Purpose:
        facts[f"consent_{p}"] = data.draw(st.sampled_from([None, "withdrawn"]))
    facts["tcf_purposes"] = None
    bundle = make_bundle([data.draw(rules("deny", f"d{i}")) for i in range(len(deny_rules))])
    for result in _decisions(bundle, facts).values():
        assert set(result["decision"]) == {"deny"}


@PROPERTY_SETTINGS
@given(facts=facts_tables(), rule_set=rule_sets())
def test_property_deny_overrides_allow(facts: pd.DataFrame, rule_set: list[dict[str, Any]]) -> None:
    bundle = make_bundle(rule_set)
    deny_ids = {r["id"] for r in rule_set if r["outcome"] == "deny"}
    for result in _decisions(bundle, facts).values():
        for trail, decision in zip(result["trail"], result["decision"], strict=True):
            if deny_ids & set(trail.split(";")):
                assert decision == "deny"
            if decision != "deny":
                assert not deny_ids & set(trail.split(";"))


@PROPERTY_SETTINGS
@given(facts=facts_tables(), rule_set=rule_sets(), data=st.data())
def test_property_adding_allow_never_lifts_a_rule_deny(
    facts: pd.DataFrame, rule_set: list[dict[str, Any]], data: Any
) -> None:
    before = _decisions(make_bundle(rule_set), facts)
    after = _decisions(make_bundle([*rule_set, data.draw(rules("allow", "added"))]), facts)
    for key, old in before.items():
        by_rule = (old["decision"] == "deny") & ~old["rule"].str.startswith("default-deny@")
        assert set(after[key].loc[by_rule, "decision"]) <= {"deny"}
        assert after[key].loc[by_rule, "rule"].equals(old.loc[by_rule, "rule"])


@PROPERTY_SETTINGS
@given(facts=facts_tables(), rule_set=rule_sets(), data=st.data())
def test_property_adding_deny_never_allows(
    facts: pd.DataFrame, rule_set: list[dict[str, Any]], data: Any
) -> None:
    before = _decisions(make_bundle(rule_set), facts)
    after = _decisions(make_bundle([*rule_set, data.draw(rules("deny", "added"))]), facts)
    for key, old in before.items():
        denied = old["decision"] == "deny"
        assert set(after[key].loc[denied, "decision"]) <= {"deny"}


@PROPERTY_SETTINGS
@given(facts=facts_tables(), rule_set=rule_sets(), seed=st.integers(0, 2**16))
def test_property_row_order_does_not_matter(
    facts: pd.DataFrame, rule_set: list[dict[str, Any]], seed: int
) -> None:
    bundle = make_bundle(rule_set)
    order = np.random.default_rng(seed).permutation(len(facts))
    shuffled = facts.iloc[order].reset_index(drop=True)
    straight, mixed = _decisions(bundle, facts), _decisions(bundle, shuffled)
    for key, result in straight.items():
        expected = result.iloc[order].reset_index(drop=True)
        pd.testing.assert_frame_equal(mixed[key], expected)


@settings(PROPERTY_SETTINGS, max_examples=10)
@given(facts=facts_tables())
def test_property_default_bundle_never_allows_the_erased(facts: pd.DataFrame) -> None:
    facts["suppressed_erasure"] = True
    for result in _decisions(DEFAULT, facts).values():
        assert set(result["reason"]) == {"ERASED"}


# --- gate B: signals -------------------------------------------------------------------------

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def signals(*rows: tuple[str, str, float, str, str]) -> pd.DataFrame:
    """Signals from (profile_id, topic, confidence, observed_at, kind) tuples."""
    frame = pd.DataFrame(rows, columns=["profile_id", "topic", "confidence", "observed_at", "kind"])
    frame["provider"] = "acme"
    frame["observed_at"] = pd.to_datetime(frame["observed_at"], utc=True)
    return frame


SIGNAL_CASES = [
    ("plain-topic-kept", ("p", "interest.running", 0.9, "2026-11-01", "observed"), None),
    ("special-category", ("p", "interest.health", 0.9, "2026-11-01", "declared"),
     "SPECIAL_CATEGORY"),
    ("below-special-prefix", ("p", "interest.health.diabetes", 0.9, "2026-11-01", "declared"),
     "SPECIAL_CATEGORY"),
    ("prefix-on-dot-boundary-only", ("p", "interest.healthy_food", 0.9, "2026-11-01", "observed"),
     None),
    ("precise-location", ("p", "location.precise.home", 0.99, "2026-11-01", "inferred"),
     "SPECIAL_CATEGORY"),
    ("special-wins-over-expiry", ("p", "interest.religion", 0.1, "2001-01-01", "inferred"),
     "SPECIAL_CATEGORY"),
    ("below-floor", ("p", "interest.running", 0.59, "2026-11-01", "observed"),
     "BELOW_CONFIDENCE_FLOOR"),
    ("at-floor-kept", ("p", "interest.running", 0.6, "2026-11-01", "observed"), None),
    ("expired-inferred", ("p", "interest.running", 0.9, "2026-05-01", "inferred"), "EXPIRED"),
    ("declared-lives-longer", ("p", "interest.running", 0.9, "2026-05-01", "declared"), None),
    ("expired-wins-over-floor", ("p", "interest.running", 0.1, "2020-01-01", "declared"),
     "EXPIRED"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("row", "reason"), [pytest.param(*case[1:], id=case[0]) for case in SIGNAL_CASES]
)
def test_filter_signals_default_bundle(
    row: tuple[str, str, float, str, str], reason: str | None
) -> None:
    kept, dropped = filter_signals(DEFAULT, signals(row), now=NOW)
    if reason is None:
        assert (len(kept), len(dropped)) == (1, 0)
    else:
        assert len(kept) == 0
        assert list(dropped["reason"]) == [reason]


def test_filter_signals_keeps_columns_index_and_drops_missing_values() -> None:
    frame = signals(
        ("a", "interest.running", 0.9, "2026-11-01", "observed"),
        ("a", "interest.cooking", float("nan"), "2026-11-01", "observed"),
        ("b", "interest.running", 0.9, "2026-11-01", "observed"),
    )
    frame.index = pd.Index([7, 8, 9])
    frame.loc[9, "observed_at"] = pd.NaT
    kept, dropped = filter_signals(DEFAULT, frame, now=NOW.replace(tzinfo=None))
    assert list(kept.index) == [7]
    assert list(dropped.index) == [8, 9]
    assert list(dropped["reason"]) == ["BELOW_CONFIDENCE_FLOOR", "EXPIRED"]
    assert list(kept.columns) == list(frame.columns)
    assert list(dropped.columns) == [*frame.columns, "reason"]


def test_filter_signals_uses_the_purpose_floor() -> None:
    frame = signals(("a", "interest.running", 0.65, "2026-11-01", "observed"))
    assert len(filter_signals(DEFAULT, frame, now=NOW)[0]) == 1
    assert len(filter_signals(DEFAULT, frame, purpose=Purpose.ADS_EXPORT, now=NOW)[0]) == 0


def _topic_rule(**extra: Any) -> dict[str, Any]:
    rule = {
        "id": "fitness", "version": 1, "priority": 1, "description": "Art. 9(2)(a)",
        "gates": ["B"], "purposes": ["profiling"], "topics": ["interest.health.fitness"],
        "outcome": "allow", "basis": "consent", "reason": "BASIS_RECORDED",
    }  # fmt: skip
    rule.update(extra)
    return rule


def test_topic_rule_permits_only_its_topics() -> None:
    bundle = make_bundle([_topic_rule()])
    frame = signals(
        ("a", "interest.health.fitness.running", 0.9, "2026-11-01", "declared"),
        ("a", "interest.health.diabetes", 0.9, "2026-11-01", "declared"),
    )
    kept, dropped = filter_signals(bundle, frame, now=NOW)
    assert list(kept["topic"]) == ["interest.health.fitness.running"]
    assert list(dropped["reason"]) == ["SPECIAL_CATEGORY"]
    # The topic rule records no basis: it does not allow profiling by itself.
    assert one(bundle, fact_row(), Gate.B, Purpose.PROFILING)["decision"] == "deny"


def test_conditional_topic_rule_needs_facts() -> None:
    bundle = make_bundle([_topic_rule(match=[{"field": "consent_profiling", "eq": "granted"}])])
    frame = signals(
        ("a", "interest.health.fitness", 0.9, "2026-11-01", "declared"),
        ("b", "interest.health.fitness", 0.9, "2026-11-01", "declared"),
    )
    kept, _ = filter_signals(bundle, frame, now=NOW)
    assert kept.empty
    facts = make_facts(fact_row("a", consent_profiling="granted"), fact_row("b"))
    kept, dropped = filter_signals(bundle, frame, now=NOW, facts=facts)
    assert list(kept["profile_id"]) == ["a"]
    assert list(dropped["profile_id"]) == ["b"]


def test_filter_signals_rejects_malformed_input() -> None:
    frame = signals(("a", "interest.running", 0.9, "2026-11-01", "rumoured"))
    with pytest.raises(PolicyInputError, match="rumoured"):
        filter_signals(DEFAULT, frame, now=NOW)
    with pytest.raises(PolicyInputError, match="kind"):
        filter_signals(DEFAULT, frame.drop(columns=["kind"]), now=NOW)


def test_filter_signals_empty() -> None:
    kept, dropped = filter_signals(DEFAULT, signals(), now=NOW)
    assert kept.empty
    assert dropped.empty
    assert "reason" in dropped.columns


# --- gate C: minimisation --------------------------------------------------------------------


def test_minimise_keeps_only_allowed_fields_in_frame_order() -> None:
    frame = pd.DataFrame(
        {
            "email_sha256": ["x"],
            "profile_id": ["p"],
            "email": ["e"],
            "country": ["DE"],
            "phone_sha256": ["y"],
        }
    )
    kept, dropped = minimise(frame, DEFAULT, Purpose.ADS_EXPORT)
    assert list(kept.columns) == ["email_sha256", "country", "phone_sha256"]
    assert dropped == ["profile_id", "email"]
    kept, dropped = minimise(frame, DEFAULT, Purpose.ANALYTICS)
    assert list(kept.columns) == ["profile_id", "country"]
    assert dropped == ["email_sha256", "email", "phone_sha256"]


def test_destination_without_allow_list_receives_nothing() -> None:
    assert allowed_fields(DEFAULT, Purpose.PROFILING) == ()
    kept, dropped = minimise(pd.DataFrame({"a": [1]}), DEFAULT, Purpose.PROFILING)
    assert kept.shape == (1, 0)
    assert dropped == ["a"]
    assert "email" in allowed_fields(DEFAULT, Purpose.CRM_EXPORT)


@PROPERTY_SETTINGS
@given(facts=facts_tables(), rule_set=rule_sets(), order=st.permutations(PAIRS))
def test_property_deciding_every_purpose_at_once_equals_one_at_a_time(
    facts: pd.DataFrame, rule_set: list[dict[str, Any]], order: list[tuple[Gate, Purpose]]
) -> None:
    for bundle in (DEFAULT, make_bundle(rule_set)):
        for context in (None, EU_PROVIDER, {"provider": "acme", "provider_region": "US"}):
            together = evaluate_all(bundle, facts, order, context=context)
            assert len(together) == len(order)
            for (gate, purpose), result in zip(order, together, strict=True):
                alone = evaluate(bundle, facts, gate=gate, purpose=purpose, context=context)
                pd.testing.assert_frame_equal(result, alone)


def test_deciding_at_once_checks_every_gate_before_deciding() -> None:
    facts = make_facts(fact_row())
    with pytest.raises(PolicyInputError, match="gate A does not decide profiling"):
        evaluate_all(DEFAULT, facts, [(Gate.B, Purpose.PROFILING), (Gate.A, Purpose.PROFILING)])
