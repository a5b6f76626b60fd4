"""Tests for the record of processing activities (Art. 30(1)) built from config and bundle."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from policy.bundle import PolicyBundle, default_bundle_path, load_bundle
from policy.ropa import (
    CONTROLLER_PLACEHOLDER,
    ProviderRecord,
    config_file_hash,
    records_of_processing,
    ropa_markdown,
)
from policy.types import Purpose
from profiles.config import RunConfig, load_run_config
from profiles.synth import generate
from profiles.taxonomy import load_taxonomy
from profiles.types import SignalKind, SourceKind

WHEN = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(200, tmp_path_factory.mktemp("ropa"), seed=1).out_dir


@pytest.fixture(scope="module")
def config(synth_dir: Path) -> RunConfig:
    return load_run_config(synth_dir / "enrich.yaml")


@pytest.fixture(scope="module")
def bundle() -> PolicyBundle:
    return load_bundle(default_bundle_path())


def _providers() -> list[ProviderRecord]:
    """Like the local test providers (all EU), plus one in the US under SCCs."""
    return [
        ProviderRecord(
            name="sim_person",
            type="http_json",
            region="EU",
            transfer_basis=None,
            identifier_forms=("email_sha256", "phone_sha256", "phone_e164"),
            produces=("interest",),
            billing="per_call",
        ),
        ProviderRecord(
            name="sim_segments",
            type="http_json",
            region="EU",
            transfer_basis=None,
            identifier_forms=("email_sha256",),
            produces=("interest",),
            billing="per_id",
        ),
        ProviderRecord(
            name="sim_gravatar",
            type="gravatar",
            region="EU",
            transfer_basis=None,
            identifier_forms=("email_sha256",),
            produces=("interest",),
            billing="free",
        ),
        ProviderRecord(
            name="us_scores",
            type="http_json",
            region="US",
            transfer_basis="scc",
            identifier_forms=("email_sha256", "email"),
            produces=("interest",),
            billing="per_match",
        ),
    ]


def _record(config: RunConfig, bundle: PolicyBundle, **kwargs: Any) -> dict[str, Any]:
    return records_of_processing(config, bundle, _providers(), generated_at=WHEN, **kwargs)


def _activity(document: dict[str, Any], purpose: Purpose) -> dict[str, Any]:
    found: dict[str, Any] = next(a for a in document["activities"] if a["purpose"] == purpose)
    return found


def _without(config: RunConfig, kind: SourceKind) -> RunConfig:
    sources = [s for s in config.sources if s.kind != kind]
    golden = {
        field: rule.model_copy(
            update={"sources": [n for n in rule.sources if n in {s.name for s in sources}]}
        )
        for field, rule in config.identity.golden.items()
    }
    identity = config.identity.model_copy(update={"golden": golden})
    return config.model_copy(update={"sources": sources, "identity": identity})


def test_every_purpose_is_an_activity_with_the_bundles_bases(
    config: RunConfig, bundle: PolicyBundle
) -> None:
    document = _record(config, bundle)
    assert [a["purpose"] for a in document["activities"]] == [str(p) for p in Purpose]
    for purpose in Purpose:
        activity = _activity(document, purpose)
        spec = bundle.purposes[purpose]
        assert activity["description"] == spec.description
        assert activity["lawful_bases"] == [str(b) for b in spec.bases]
        assert {e["basis"] for e in activity["basis_evidence"]} == set(activity["lawful_bases"])
    crm = _activity(document, Purpose.CRM_EXPORT)
    assert "customer-crm-legitimate-interests@1" in {e["rule"] for e in crm["basis_evidence"]}
    assert _activity(document, Purpose.PROFILING)["tcf_purposes"] == [3, 5]


def test_header_names_bundle_config_controller_and_time(
    config: RunConfig, bundle: PolicyBundle, synth_dir: Path
) -> None:
    digest = config_file_hash(synth_dir / "enrich.yaml")
    document = _record(config, bundle, config_hash=digest)
    assert document["policy_bundle"] == {
        "name": bundle.name,
        "version": bundle.version,
        "hash": bundle.hash,
    }
    assert document["config"]["hash"] == digest
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert document["generated_at"] == "2026-11-01T02:00:00+00:00"
    assert document["controller"]["name"] == CONTROLLER_PLACEHOLDER
    assert any("--controller" in item for item in document["to_complete"])
    named = _record(config, bundle, controller="Shop A/S, Vej 1, DK; dpo@shop.example")
    assert named["controller"]["name"].startswith("Shop A/S")
    assert not any("--controller" in item for item in named["to_complete"])
    with pytest.raises(ValueError, match="timezone"):
        records_of_processing(config, bundle, [], generated_at=datetime(2026, 11, 1))


def test_us_provider_is_a_transfer_with_its_basis(config: RunConfig, bundle: PolicyBundle) -> None:
    document = _record(config, bundle)
    transfers = document["transfers"]
    assert [t["recipient"] for t in transfers] == ["us_scores"]
    (transfer,) = transfers
    assert transfer["region"] == "US"
    assert transfer["transfer_basis"] == "scc"
    # The default bundle accepts SCCs for GDPR, UK GDPR and `other` subjects; for CCPA
    # subjects any region is allowed, so it is no transfer under that regime.
    assert transfer["accepted_for"] == ["gdpr", "uk_gdpr", "other"]
    assert transfer["refused_for"] == []
    enrichment = _activity(document, Purpose.ENRICHMENT)
    assert enrichment["transfers"] == transfers
    recipients = {r["name"]: r for r in enrichment["recipients"]}
    assert set(recipients) == {"sim_person", "sim_segments", "sim_gravatar", "us_scores"}
    gdpr = {g["regime"]: g for g in recipients["sim_person"]["regimes"]}["gdpr"]
    # The bundle allows only SHA-256 forms: the clear phone number is never sent.
    assert gdpr["identifier_forms"] == ["email_sha256", "phone_sha256"]
    assert {g["regime"]: g for g in recipients["us_scores"]["regimes"]}["gdpr"][
        "identifier_forms"
    ] == ["email_sha256"]


def test_provider_without_basis_outside_the_regions_is_refused(
    config: RunConfig, bundle: PolicyBundle
) -> None:
    bare = ProviderRecord("us_bare", "http_json", "US", None, ("email_sha256",), ("interest",), "x")
    document = records_of_processing(config, bundle, [bare], generated_at=WHEN)
    (transfer,) = document["transfers"]
    assert transfer["accepted_for"] == []
    assert transfer["refused_for"] == ["gdpr", "uk_gdpr", "other"]
    regimes = {
        g["regime"]: g for g in _activity(document, Purpose.ENRICHMENT)["recipients"][0]["regimes"]
    }
    assert regimes["gdpr"]["allowed"] is False
    assert regimes["gdpr"]["identifier_forms"] == []
    assert regimes["ccpa"]["allowed"] is True


def test_provider_record_rejects_unknown_values() -> None:
    with pytest.raises(ValueError, match="transfer basis"):
        ProviderRecord("p", "http_json", "US", "handshake", ("email_sha256",), (), "free")
    with pytest.raises(ValueError, match="identifier form"):
        ProviderRecord("p", "http_json", "EU", None, ("email_md5",), (), "free")


def test_retention_equals_the_bundles(config: RunConfig, bundle: PolicyBundle) -> None:
    document = _record(config, bundle)
    days = {e["key"]: e["days"] for e in document["retention"]}
    for kind in SignalKind:
        assert days[f"signals.{kind}"] == bundle.retention.signals[kind]
    assert days["outputs"] == bundle.retention.outputs
    assert days["decision_log"] is None
    log = next(e for e in document["retention"] if e["key"] == "decision_log")
    assert "pseudonymous" in log["rule"]
    assert "proof of lawful processing" in log["rule"]
    profiling = {e["key"]: e["days"] for e in _activity(document, Purpose.PROFILING)["retention"]}
    assert profiling["signals.declared"] == bundle.retention.signals[SignalKind.DECLARED]


def test_special_categories_are_listed(config: RunConfig, bundle: PolicyBundle) -> None:
    document = _record(config, bundle)
    special = document["special_categories"]
    expected = set(bundle.special_categories) | set(load_taxonomy(config.taxonomy).sensitive_roots)
    assert {t["topic"] for t in special["topics"]} == expected
    assert special["processed"] is False
    assert special["exceptions"] == []
    assert "dropped at gate B" in special["statement"]
    labels = {t["topic"]: t["sensitivity"] for t in special["topics"]}
    assert labels["interest.health"] == "special_category"
    assert labels["location.precise"] == "cpra_sensitive"


def test_data_categories_follow_the_configured_sources(
    config: RunConfig, bundle: PolicyBundle
) -> None:
    full = _record(config, bundle)
    keys = [c["key"] for c in full["data_categories"]]
    for key in ("identifiers", "names", "country", "birth_year", "orders"):
        assert key in keys
    for key in ("declared_interests", "consents", "behaviour_scores", "interests", "personas"):
        assert key in keys
    names = next(c for c in full["data_categories"] if c["key"] == "names")
    assert "dropped at ingest" in names["handling"]
    groups = {s["group"] for s in full["data_subjects"]}
    assert {"customers_contacts", "customers", "subscribers", "preference_centre_users"} <= groups
    assert "consent_subjects" in groups

    no_prefs = _record(_without(config, SourceKind.PREFERENCES), bundle)
    assert "declared_interests" not in [c["key"] for c in no_prefs["data_categories"]]
    assert "preference_centre_users" not in {s["group"] for s in no_prefs["data_subjects"]}
    assert "consents" in [c["key"] for c in no_prefs["data_categories"]]

    no_orders = _record(_without(config, SourceKind.ORDERS), bundle)
    no_order_keys = [c["key"] for c in no_orders["data_categories"]]
    assert "orders" not in no_order_keys
    assert "behaviour_scores" not in no_order_keys
    profiling = _activity(no_orders, Purpose.PROFILING)
    assert "orders" not in [c["key"] for c in profiling["data_categories"]]


def test_minors_are_excluded_per_minor_age(config: RunConfig, bundle: PolicyBundle) -> None:
    document = _record(config, bundle)
    for purpose in (Purpose.ENRICHMENT, Purpose.PROFILING, Purpose.ADS_EXPORT):
        excluded = _activity(document, purpose)["data_subjects"]["excluded"]
        minor = next(e for e in excluded if e["reason"] == "MINOR")
        assert minor["outcome"] == "deny"
        assert f"under {bundle.minor_age.default}" in minor["who"]
    crm = _activity(document, Purpose.CRM_EXPORT)["data_subjects"]["excluded"]
    assert next(e for e in crm if e["reason"] == "MINOR")["outcome"] == "redact"


def test_destination_fields_are_listed(config: RunConfig, bundle: PolicyBundle) -> None:
    document = _record(config, bundle)
    for purpose in (Purpose.CRM_EXPORT, Purpose.ADS_EXPORT, Purpose.ANALYTICS):
        (recipient,) = _activity(document, purpose)["recipients"]
        assert recipient["fields"] == list(bundle.destinations[purpose])
    ads = _activity(document, Purpose.ADS_EXPORT)
    assert "Ad platforms" in ads["recipients"][0]["kind"]
    identifiers = next(c for c in ads["data_categories"] if c["key"] == "identifiers")
    assert identifiers["disclosed"] == ["email_sha256", "phone_sha256"]
    assert "CRM" in _activity(document, Purpose.CRM_EXPORT)["recipients"][0]["kind"]
    assert _activity(document, Purpose.PROFILING)["recipients"] == []


def test_measures_follow_the_config(config: RunConfig, bundle: PolicyBundle) -> None:
    document = _record(config, bundle)
    measures = {m["id"]: m["detail"] for m in document["security_measures"]}
    assert "HMAC-SHA256" in measures["pseudonymisation"]
    assert "AES-256-GCM" in measures["quarantine_sealing"]
    assert "Ed25519" in measures["decision_log"]
    assert "RFC 8785" in measures["decision_log"]
    assert "0600" in measures["secrets"]
    assert str(config.personas.min_group_size) in measures["k_anonymity"]
    changed = config.model_copy(
        update={
            "quarantine": config.quarantine.model_copy(update={"keep_raw_encrypted": False}),
            "personas": config.personas.model_copy(update={"min_group_size": 37}),
        }
    )
    other = {m["id"]: m["detail"] for m in _record(changed, bundle)["security_measures"]}
    assert "AES-256-GCM" not in other["quarantine_sealing"]
    assert "37" in other["k_anonymity"]


def test_markdown_has_a_heading_and_tables_per_activity(
    config: RunConfig, bundle: PolicyBundle
) -> None:
    document = _record(config, bundle)
    text = ropa_markdown(document)
    assert text.startswith("# Record of processing activities")
    for number, activity in enumerate(document["activities"], start=1):
        assert f"### {number}. {activity['name']} (`{activity['purpose']}`)" in text
    assert "| us_scores | US | scc | gdpr, uk_gdpr, other | gdpr, uk_gdpr, other | — |" in text
    assert "| inferred interest signals | 180 |" in text
    assert "| interest.health | Health | special_category | bundle, taxonomy |" in text
    assert "| Lawful bases (Art. 6(1)) | consent (Art. 6(1)(a)) |" in text
    assert bundle.hash in text
    # Every table row has as many cells as its header.
    for block in re.split(r"\n\n", text):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            widths = {len(re.split(r"(?<!\\)\|", row)) for row in rows}
            assert len(widths) == 1, block


def test_output_is_deterministic_json_without_personal_data(
    config: RunConfig, bundle: PolicyBundle, synth_dir: Path
) -> None:
    first = _record(config, bundle)
    second = _record(config, bundle)
    assert first == second
    text = json.dumps(first, ensure_ascii=False)
    assert json.loads(text) == first
    assert json.dumps(second, ensure_ascii=False) == text  # same key order too
    assert ropa_markdown(first) == ropa_markdown(second)
    emails = {
        match.group(0).lower()
        for path in sorted((synth_dir / "data").glob("*.csv"))
        for match in EMAIL.finditer(path.read_bytes().decode("latin-1"))
    }
    assert len(emails) > 50
    rendered = (text + ropa_markdown(first)).lower()
    assert not [email for email in emails if email in rendered]
