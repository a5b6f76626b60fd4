"""Records of processing activities (GDPR Art. 30(1)) generated from the run config and bundle.

`records_of_processing` builds a JSON-ready document (plain dicts, lists, strings, numbers,
booleans and None; keys in a fixed order) with one processing activity per purpose of the
policy bundle; `ropa_markdown` renders it for a DPO. Nothing in it is personal data: it is
made from configuration only, never from the sources' rows.

What comes from where:

- (a) controller: the `controller` argument (else a placeholder); the document names the
  policy bundle (name, version, content hash), the config (`config_hash`, e.g.
  `config_file_hash(path)`) and the taxonomy version it was made from, and `generated_at`.
- (b) purposes: the bundle's purposes, their descriptions and accepted lawful bases; how a
  basis gets recorded (consent records, TCF mapping, allow rules naming a basis).
- (c) data subjects: the kinds of the configured sources (contacts → customers and contacts,
  orders → customers, newsletter → subscribers, preferences → preference-centre users,
  consents → everybody whose consent is recorded), minus whom the bundle's deny rules exclude
  per purpose (minors below `minor_age`, erasure, objections, opt-outs).
  Categories of personal data: the canonical fields the sources map (identifiers, names,
  country, birth year, dates, orders, declared interests, consents) and what the pipeline
  derives from them (pseudonyms and profile ids, policy decisions, behaviour scores,
  interests, personas). Special categories: the bundle's `special_categories` and the
  taxonomy's sensitive roots, dropped at gate B (and any allow rule that keeps some).
- (d) recipients: enrichment providers (the `ProviderRecord`s: region, transfer basis,
  identifier forms, and per regime what the bundle's provider allowances let them receive);
  the fields each export destination may receive (`destinations`) and the kind of recipient.
- (e) transfers to third countries: providers outside a regime's allowed regions, with the
  transfer basis they declare and whether the bundle accepts it.
- (f) erasure time limits: the bundle's `retention` (signals per kind, outputs) and what the
  code keeps without a limit (decision log, suppression list, state store).
- (g) technical and organisational measures: what the code does (keyed pseudonyms, sealing of
  quarantined rows if `quarantine.keep_raw_encrypted`, default-deny gates, the decision log,
  k-anonymous persona cards with `personas.min_group_size`, secrets handling).

What a DPO must still fill in by hand (also listed in the document's `to_complete`): the
controller's name and contact details, a representative (Art. 27) and the DPO's contact; the
actual CRM and ad platforms, where they process and their processing agreements (Art. 28);
processing agreements and transfer documents (SCCs, transfer impact assessments) of every
provider; the balancing tests behind rules marked ASSUMPTION; retention of the state store,
the decision log and the suppression list; where the hosts, database and backups are and who
can access them; the DPIA reference (Art. 35). The record describes the configuration it was
made from: regenerate it when the config, the bundle or a provider changes.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from policy.bundle import PolicyBundle, ProviderAllowance, Rule
from policy.types import Gate, LawfulBasis, Outcome, Purpose, Regime
from profiles.config import RunConfig
from profiles.taxonomy import Sensitivity, Taxonomy, load_taxonomy
from profiles.types import CanonicalField, IdentifierForm, SignalKind, SourceKind, TransferBasis

SCHEMA: Final = "enrich-ropa/1"
"""Identifies the document's shape; bump when keys change meaning."""

CONTROLLER_PLACEHOLDER: Final = "(set `--controller`: name and contact details of the controller)"

FILL_IN: Final = "(to be completed by the DPO)"


@dataclass(frozen=True)
class ProviderRecord:
    """An enrichment provider as the record of processing describes it.

    Built by the caller from a provider's validated settings and capabilities
    (`enrichers.base.Capabilities`: `accepts` → `identifier_forms`, `produces`, `region`,
    `transfer_basis`, `billing`); the policy layer does not import `enrichers`.
    """

    name: str
    """Instance name in `enrichment.providers` (as decisions name it)."""
    type: str
    """Plugin type (`http_json`, `gravatar`, ...)."""
    region: str
    """Where it processes: EU, EEA, UK, US or an ISO country code."""
    transfer_basis: str | None
    """A `TransferBasis` value (adequacy, scc, bcr) or None."""
    identifier_forms: tuple[str, ...]
    """`IdentifierForm` values the provider accepts."""
    produces: tuple[str, ...]
    """Taxonomy prefixes it may return."""
    billing: str

    def __post_init__(self) -> None:
        if self.transfer_basis is not None and self.transfer_basis not in set(TransferBasis):
            known = ", ".join(TransferBasis)
            raise ValueError(f"{self.name}: transfer basis {self.transfer_basis!r} ({known})")
        unknown = [f for f in self.identifier_forms if f not in set(IdentifierForm)]
        if unknown:
            raise ValueError(f"{self.name}: unknown identifier form(s) {unknown}")


def config_file_hash(path: Path | str) -> str:
    """SHA-256 hex of the config file's bytes (what `config_hash` should be)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- static descriptions --------------------------------------------------------------------------

_ACTIVITY_NAMES: Final[Mapping[Purpose, str]] = {
    Purpose.ENRICHMENT: "Enrichment by external providers",
    Purpose.PROFILING: "Profiling: interests, behaviour scores and personas",
    Purpose.CRM_EXPORT: "Export to the CRM",
    Purpose.ADS_EXPORT: "Export of hashed audiences to ad platforms",
    Purpose.ANALYTICS: "Aggregate analytics",
}

_GATES: Final[Mapping[Purpose, Gate]] = {
    Purpose.ENRICHMENT: Gate.A,
    Purpose.PROFILING: Gate.B,
    Purpose.CRM_EXPORT: Gate.C,
    Purpose.ADS_EXPORT: Gate.C,
    Purpose.ANALYTICS: Gate.C,
}

ARTICLE_6: Final[Mapping[str, str]] = {
    LawfulBasis.CONSENT: "Art. 6(1)(a)",
    LawfulBasis.CONTRACT: "Art. 6(1)(b)",
    LawfulBasis.LEGAL_OBLIGATION: "Art. 6(1)(c)",
    LawfulBasis.VITAL_INTERESTS: "Art. 6(1)(d)",
    LawfulBasis.PUBLIC_TASK: "Art. 6(1)(e)",
    LawfulBasis.LEGITIMATE_INTERESTS: "Art. 6(1)(f)",
}
"""Article of each lawful basis."""

_SUBJECTS: Final[Mapping[SourceKind, tuple[str, str]]] = {
    SourceKind.CONTACTS: ("customers_contacts", "Customers and contacts (CRM)"),
    SourceKind.ORDERS: ("customers", "Customers who ordered (incl. guest checkouts)"),
    SourceKind.NEWSLETTER: ("subscribers", "Newsletter subscribers"),
    SourceKind.PREFERENCES: ("preference_centre_users", "Preference-centre users"),
    SourceKind.CONSENTS: ("consent_subjects", "Everybody whose consent or withdrawal is recorded"),
}


@dataclass(frozen=True)
class _SourceCategory:
    key: str
    label: str
    fields: tuple[CanonicalField, ...]
    """A source mapping any of these holds the category."""
    handling: str
    supporting: tuple[CanonicalField, ...] = ()
    """Listed with the category only where a source maps one of `fields` too."""


F = CanonicalField
_SOURCE_CATEGORIES: Final[tuple[_SourceCategory, ...]] = (
    _SourceCategory(
        "identifiers",
        "Identifiers",
        (F.EMAIL, F.PHONE, F.CUSTOMER_ID),
        "validated and normalised at ingest, then pseudonymised (keyed HMAC-SHA256 with key "
        "id); raw values are not stored, only written where a destination's fields allow them",
    ),
    _SourceCategory(
        "names",
        "Names",
        (F.FIRST_NAME, F.LAST_NAME),
        "read, dropped at ingest (only whether a name was present is kept); never exported",
    ),
    _SourceCategory(
        "country",
        "Country of residence",
        (F.COUNTRY,),
        "normalised to ISO 3166-1 alpha-2; decides the jurisdiction (regime)",
    ),
    _SourceCategory(
        "birth_year",
        "Year of birth",
        (F.BIRTH_YEAR,),
        "used to tell minors apart (age below the minor age)",
    ),
    _SourceCategory(
        "account_dates",
        "Account and sign-up dates",
        (F.CREATED_AT, F.SIGNED_UP_AT),
        "date a record; pick the most recent value for the golden record",
    ),
    _SourceCategory(
        "orders",
        "Orders (purchase history)",
        (F.ORDER_ID, F.ORDERED_AT, F.AMOUNT, F.CURRENCY, F.CATEGORY, F.QUANTITY),
        "read for behaviour scores and purchase interests of people allowed for profiling",
    ),
    _SourceCategory(
        "declared_interests",
        "Declared interests (preference-centre answers)",
        (F.TOPIC, F.INTERESTED),
        "become declared interest signals of people allowed for profiling",
        (F.RECORDED_AT,),
    ),
    _SourceCategory(
        "consents",
        "Consent records",
        (F.PURPOSE, F.CONSENT_STATUS, F.CONSENT_SOURCE, F.NOTICE_VERSION, F.TCF_STRING),
        "kept in the state store keyed by pseudonym; evidence of the lawful basis",
        (F.RECORDED_AT,),
    ),
)

_PURPOSE_CATEGORIES: Final[Mapping[Purpose, tuple[str, ...]]] = {
    Purpose.ENRICHMENT: (
        "identifiers",
        "country",
        "birth_year",
        "consents",
        "pseudonyms",
        "decisions",
        "interests",
    ),
    Purpose.PROFILING: (
        "country",
        "birth_year",
        "account_dates",
        "orders",
        "declared_interests",
        "consents",
        "pseudonyms",
        "decisions",
        "behaviour_scores",
        "interests",
        "personas",
    ),
    Purpose.CRM_EXPORT: (
        "identifiers",
        "country",
        "birth_year",
        "consents",
        "pseudonyms",
        "decisions",
        "behaviour_scores",
        "interests",
        "personas",
    ),
    Purpose.ADS_EXPORT: ("identifiers", "country", "birth_year", "consents", "decisions"),
    Purpose.ANALYTICS: (
        "country",
        "birth_year",
        "consents",
        "pseudonyms",
        "decisions",
        "behaviour_scores",
        "personas",
    ),
}
"""Categories each purpose uses (those the configuration holds are listed)."""

_DESTINATION_FIELD_CATEGORIES: Final[Mapping[str, str]] = {
    "email": "identifiers",
    "phone": "identifiers",
    "customer_id": "identifiers",
    "email_sha256": "identifiers",
    "phone_sha256": "identifiers",
    "country": "country",
    "birth_year": "birth_year",
    "profile_id": "pseudonyms",
    "lawful_basis": "decisions",
    "consent_ref": "consents",
    "rfm_segment": "behaviour_scores",
    "clv_band": "behaviour_scores",
    "churn_risk": "behaviour_scores",
    "top_interests": "interests",
    "persona": "personas",
    "segments": "personas",
}
"""Category of each destination field a bundle may list (others are listed as unmapped)."""

_TRANSFER_NOTES: Final[Mapping[Purpose, str]] = {
    Purpose.ENRICHMENT: "Derived from the providers' declared regions and transfer bases and "
    "the bundle's provider allowances per regime.",
    Purpose.PROFILING: "None by this pipeline: profiling runs where the pipeline runs.",
    Purpose.CRM_EXPORT: "Depends on where the CRM processes: to be completed by the DPO.",
    Purpose.ADS_EXPORT: "Depends on where each ad platform processes (often the US): to be "
    "completed by the DPO.",
    Purpose.ANALYTICS: "None by this pipeline unless reports are shared: to be confirmed.",
}

_RECIPIENT_KINDS: Final[Mapping[Purpose, tuple[str, str]]] = {
    Purpose.CRM_EXPORT: (
        "CRM (e.g. HubSpot or Salesforce)",
        "out/<run>/crm/*.csv, imported by the CRM administrator",
    ),
    Purpose.ADS_EXPORT: (
        "Ad platforms (customer-list audiences)",
        "out/<run>/audiences/*.csv: identifiers as SHA-256 per the platform's spec, uploaded",
    ),
    Purpose.ANALYTICS: (
        "Internal reporting (aggregates only)",
        "aggregate reports and dashboards; no contact details",
    ),
}

_EXCLUSIONS: Final[Mapping[str, str]] = {
    "ERASED": "people who asked to be erased (Art. 17)",
    "OBJECTED": "people who objected (Art. 21)",
    "OPTED_OUT": "people who opted out of sale or sharing (CCPA/CPRA, incl. GPC)",
    "UNKNOWN_JURISDICTION": "people without a known country",
}


# --- data subjects and categories -----------------------------------------------------------------


def _mapped(config: RunConfig) -> dict[CanonicalField, list[str]]:
    """Canonical field → names of the sources that map it."""
    out: dict[CanonicalField, list[str]] = {}
    for source in config.sources:
        for field in source.columns:
            out.setdefault(field, []).append(source.name)
    return out


def _data_subjects(config: RunConfig) -> list[dict[str, Any]]:
    out = []
    for kind, (group, label) in _SUBJECTS.items():
        names = [s.name for s in config.sources if s.kind == kind]
        if names:
            out.append({"group": group, "label": label, "source_kind": str(kind), "sources": names})
    return out


def _source_categories(config: RunConfig) -> list[dict[str, Any]]:
    mapped = _mapped(config)
    out = []
    for category in _SOURCE_CATEGORIES:
        holding = [s for s in config.sources if any(f in s.columns for f in category.fields)]
        if not holding:
            continue
        fields = [str(f) for f in category.fields if f in mapped]
        fields += [str(f) for f in category.supporting if any(f in s.columns for s in holding)]
        out.append(
            {
                "key": category.key,
                "label": category.label,
                "origin": "sources",
                "fields": fields,
                "sources": [s.name for s in holding],
                "handling": category.handling,
            }
        )
    return out


def _signal_kinds(config: RunConfig, providers: Sequence[ProviderRecord]) -> list[str]:
    kinds = {s.kind for s in config.sources}
    out = []
    if SourceKind.PREFERENCES in kinds:
        out.append(str(SignalKind.DECLARED))
    if SourceKind.ORDERS in kinds:
        out.append(str(SignalKind.OBSERVED))
    if providers:
        out.append(str(SignalKind.INFERRED))
    return out


def _derived_categories(
    config: RunConfig, providers: Sequence[ProviderRecord]
) -> list[dict[str, Any]]:
    kinds = {s.kind for s in config.sources}
    out: list[dict[str, Any]] = [
        {
            "key": "pseudonyms",
            "label": "Pseudonyms and profile ids",
            "origin": "derived",
            "fields": [
                *("email_pseudonyms", "phone_pseudonyms", "customer_id_pseudonyms"),
                *("key_id", "profile_id"),
            ],
            "sources": [],
            "handling": "keyed HMAC-SHA256 digests of the identifiers and a stable profile id; "
            "still personal data (pseudonymised)",
        },
        {
            "key": "decisions",
            "label": "Policy decisions",
            "origin": "derived",
            "fields": ["purpose", "gate", "decision", "basis", "rule", "reason", "evidence"],
            "sources": [],
            "handling": "one decision per person, purpose and gate in the decision log, "
            "naming the person by profile id only",
        },
    ]
    if SourceKind.ORDERS in kinds:
        out.append(
            {
                "key": "behaviour_scores",
                "label": "Behaviour scores",
                "origin": "derived",
                "fields": [
                    *("rfm_r", "rfm_f", "rfm_m", "rfm_segment", "abc", "xyz", "p_alive"),
                    *("churn_risk", "expected_purchases", "clv", "revenue"),
                ],
                "sources": [],
                "handling": "computed from the order lines of people allowed for profiling",
            }
        )
    signal_kinds = _signal_kinds(config, providers)
    if signal_kinds:
        out.append(
            {
                "key": "interests",
                "label": "Interests with confidence and provenance",
                "origin": "derived",
                "fields": ["interests", "top_interests"],
                "signal_kinds": signal_kinds,
                "sources": [
                    s.name
                    for s in config.sources
                    if s.kind in (SourceKind.PREFERENCES, SourceKind.ORDERS)
                ],
                "providers": [p.name for p in sorted(providers, key=lambda p: p.name)],
                "handling": "signals (declared, observed from purchases, inferred by providers) "
                "merged per topic; special categories dropped at gate B; below the "
                "confidence floor not used",
            }
        )
    if config.personas.enabled:
        out.append(
            {
                "key": "personas",
                "label": "Persona and segment labels",
                "origin": "derived",
                "fields": ["persona", "persona_name"],
                "sources": [],
                "handling": f"persona per profile ({config.personas.method}); cards show "
                f"groups of at least {config.personas.min_group_size} people only",
            }
        )
    return out


# --- bundle: bases, exclusions, special categories ------------------------------------------------


def _minor_text(bundle: PolicyBundle, rule: Rule) -> str:
    ages = f"under {bundle.minor_age.default}"
    overrides = ", ".join(f"{r}: {a}" for r, a in sorted(bundle.minor_age.regimes.items()))
    if overrides:
        ages += f" ({overrides})"
    tests = [c.op for c in rule.match if c.field == "minor"]
    unknown = (
        "unknown ages count as minors"
        if ("ne", False) in tests
        else "a missing age does not count as a minor"
    )
    return f"minors: age {ages}; {unknown}"


def _who(bundle: PolicyBundle, rule: Rule) -> str:
    if rule.reason == "MINOR":
        who = _minor_text(bundle, rule)
    else:
        who = _EXCLUSIONS.get(rule.reason, rule.description)
    if len(rule.regimes) < len(Regime):
        who += " (" + ", ".join(rule.regimes) + ")"
    return who


def _is_provider_rule(rule: Rule) -> bool:
    names = [n for c in rule.match for n in c.fields()]
    return bool(names) and all(n.startswith("provider") for n in names)


def _exclusions(bundle: PolicyBundle, purpose: Purpose) -> list[dict[str, Any]]:
    """Whom the deny and redact rules keep out of (or strip for) `purpose`."""
    out = []
    for rule in bundle.rules_by_priority:
        if purpose not in rule.purposes or rule.outcome is Outcome.ALLOW:
            continue
        if _is_provider_rule(rule):
            continue
        entry: dict[str, Any] = {
            "rule": rule.ref,
            "outcome": str(rule.outcome),
            "reason": rule.reason,
            "who": _who(bundle, rule),
        }
        if rule.outcome is Outcome.REDACT:
            entry["removed"] = list(rule.redact)
        out.append(entry)
    return out


def _basis_evidence(
    config: RunConfig, bundle: PolicyBundle, purpose: Purpose
) -> list[dict[str, Any]]:
    """How each accepted basis gets recorded for a person."""
    out: list[dict[str, Any]] = []
    consents = [s.name for s in config.sources if s.kind == SourceKind.CONSENTS]
    if LawfulBasis.CONSENT in bundle.purposes[purpose].bases:
        how = "the person's latest consent record for the purpose"
        if consents:
            how += " (sources: " + ", ".join(consents) + ")"
        else:
            how += " (no consents source is configured: nobody has one)"
        if purpose in bundle.tcf:
            ids = ", ".join(str(i) for i in bundle.tcf[purpose])
            how += f"; or a TCF v2.2 consent for TCF purposes {ids}"
        out.append({"basis": str(LawfulBasis.CONSENT), "via": how, "rule": None})
    for rule in bundle.rules_by_priority:
        allows = rule.outcome is Outcome.ALLOW and rule.basis is not None and not rule.topics
        if allows and purpose in rule.purposes:
            out.append({"basis": str(rule.basis), "via": rule.description, "rule": rule.ref})
    return out


def _special_categories(bundle: PolicyBundle, taxonomy: Taxonomy) -> dict[str, Any]:
    roots = set(taxonomy.sensitive_roots)
    topics = sorted(set(bundle.special_categories) | roots)
    listed = []
    for topic in topics:
        origin = [
            name
            for name, held in (
                ("bundle", topic in bundle.special_categories),
                ("taxonomy", topic in roots),
            )
            if held
        ]
        sensitivity = taxonomy.sensitivity.get(topic)
        listed.append(
            {
                "topic": topic,
                "label": taxonomy.labels.get(topic, topic),
                "sensitivity": str(sensitivity or Sensitivity.SPECIAL_CATEGORY),
                "listed_by": origin,
            }
        )
    exceptions = [
        {
            "rule": rule.ref,
            "topics": list(rule.topics),
            "purposes": [str(p) for p in rule.purposes],
            "basis": str(rule.basis or LawfulBasis.CONSENT),
            "description": rule.description,
        }
        for rule in bundle.rules_by_priority
        if rule.topics
    ]
    statement = (
        "None processed: signals under these topics are dropped at gate B before anything is "
        "stored or exported (each drop is a redact decision in the decision log)."
    )
    if exceptions:
        statement = (
            "Processed only as the exceptions below allow (Art. 9(2)(a) explicit consent); "
            "every other signal under these topics is dropped at gate B."
        )
    return {
        "processed": bool(exceptions),
        "statement": statement,
        "topics": listed,
        "exceptions": exceptions,
    }


# --- recipients and transfers ---------------------------------------------------------------------


def _regimes(bundle: PolicyBundle) -> list[Regime]:
    """Regimes that can have subjects: those with countries, and `other`."""
    return [r for r in Regime if r in bundle.jurisdictions or r is Regime.OTHER]


def _region_allowed(allowance: ProviderAllowance, region: str) -> bool:
    return "*" in allowance.regions or region in allowance.regions


def _provider_regime(
    provider: ProviderRecord, regime: Regime, allowance: ProviderAllowance | None
) -> dict[str, Any]:
    """What the bundle lets `provider` receive about subjects of `regime` (gate A facts)."""
    entry: dict[str, Any] = {"regime": str(regime)}
    if allowance is None or (allowance.names is not None and provider.name not in allowance.names):
        return entry | {
            "allowed": False,
            "why": "not on the allow-list",
            "transfer": False,
            "identifier_forms": [],
        }
    inside = _region_allowed(allowance, provider.region)
    basis_ok = provider.transfer_basis is not None and provider.transfer_basis in set(
        allowance.transfer_bases
    )
    forms = [f for f in allowance.identifier_forms if f in provider.identifier_forms]
    if not inside and not basis_ok:
        why = "outside the allowed regions without an accepted transfer basis"
        allowed = False
    elif not forms:
        why = "no identifier form both accepted and allowed"
        allowed = False
    else:
        why = "region allowed" if inside else f"transfer basis {provider.transfer_basis}"
        allowed = True
    return entry | {
        "allowed": allowed,
        "why": why,
        "transfer": not inside,
        "identifier_forms": [str(f) for f in forms] if allowed else [],
    }


def _provider_recipients(
    bundle: PolicyBundle, providers: Sequence[ProviderRecord]
) -> list[dict[str, Any]]:
    allowances = bundle.providers.get(Purpose.ENRICHMENT, {})
    out = []
    for provider in sorted(providers, key=lambda p: p.name):
        out.append(
            {
                "name": provider.name,
                "kind": "enrichment provider",
                "type": provider.type,
                "region": provider.region,
                "transfer_basis": provider.transfer_basis,
                "accepts": [str(f) for f in IdentifierForm if f in provider.identifier_forms],
                "produces": sorted(provider.produces),
                "billing": provider.billing,
                "regimes": [
                    _provider_regime(provider, regime, allowances.get(regime))
                    for regime in _regimes(bundle)
                ],
            }
        )
    return out


def _transfers(recipients: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Providers that process outside the allowed regions of some regime."""
    out = []
    for recipient in recipients:
        regimes = [r for r in recipient["regimes"] if r["transfer"]]
        if not regimes:
            continue
        out.append(
            {
                "recipient": recipient["name"],
                "region": recipient["region"],
                "transfer_basis": recipient["transfer_basis"],
                "regimes": [r["regime"] for r in regimes],
                "accepted_for": [r["regime"] for r in regimes if r["allowed"]],
                "refused_for": [r["regime"] for r in regimes if not r["allowed"]],
            }
        )
    return out


def _destination(bundle: PolicyBundle, purpose: Purpose) -> dict[str, Any]:
    kind, channel = _RECIPIENT_KINDS[purpose]
    return {
        "name": str(purpose),
        "kind": kind,
        "channel": channel,
        "fields": list(bundle.destinations.get(purpose, ())),
        "region": FILL_IN,
    }


def _recipients(
    bundle: PolicyBundle, purpose: Purpose, providers: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    if purpose is Purpose.ENRICHMENT:
        return providers
    if purpose in _RECIPIENT_KINDS:
        return [_destination(bundle, purpose)]
    return []


# --- retention and measures -----------------------------------------------------------------------


def _retention(bundle: PolicyBundle) -> list[dict[str, Any]]:
    signals = bundle.retention.signals
    out: list[dict[str, Any]] = [
        {
            "key": f"signals.{kind}",
            "what": f"{kind} interest signals",
            "days": signals[kind],
            "rule": "dropped at gate B once older than this (days since observed); a "
            "provider's cache never keeps answers longer",
        }
        for kind in SignalKind
    ]
    out += [
        {
            "key": "outputs",
            "what": "run outputs (profiles, signals, quarantine, personas, exports, report)",
            "days": bundle.retention.outputs,
            "rule": "days a run's folder is kept; delete older runs on this schedule",
        },
        {
            "key": "decision_log",
            "what": "decision log (decisions and signed checkpoints)",
            "days": None,
            "rule": "kept: entries are pseudonymous (profile id, no raw identifiers) and are "
            "the proof of lawful processing (Art. 5(2), 7(1)); the DPO sets the end date",
        },
        {
            "key": "suppression_list",
            "what": "suppression list (erasures, objections, opt-outs)",
            "days": None,
            "rule": "kept: only the pseudonyms, so that the erasure or objection is honoured",
        },
        {
            "key": "state_store",
            "what": "state store (pseudonyms, profile ids, consent records)",
            "days": None,
            "rule": "kept while the person is in a source; removed by `enrich dsar erase`",
        },
    ]
    return out


_PURPOSE_RETENTION: Final[Mapping[Purpose, tuple[str, ...]]] = {
    Purpose.ENRICHMENT: ("signals.inferred", "decision_log", "state_store"),
    Purpose.PROFILING: (
        *(f"signals.{k}" for k in SignalKind),
        "outputs",
        "decision_log",
        "state_store",
    ),
    Purpose.CRM_EXPORT: ("outputs", "decision_log"),
    Purpose.ADS_EXPORT: ("outputs", "decision_log"),
    Purpose.ANALYTICS: ("outputs", "decision_log"),
}


def _measures(config: RunConfig, bundle: PolicyBundle) -> list[dict[str, Any]]:
    sealing = (
        "quarantined rows keep their raw values only sealed with AES-256-GCM (key id beside "
        "the ciphertext, source and line authenticated); opened only with the quarantine key"
        if config.quarantine.keep_raw_encrypted
        else "raw values of quarantined rows are not kept (`keep_raw_encrypted: false`)"
    )
    audit = getattr(config, "audit", None)  # `audit.public_keys`, where the config has it
    pinned = len(tuple(getattr(audit, "public_keys", ()) or ()))
    anchors = (
        f"{pinned} public key(s) pinned in enrich.yaml (`audit.public_keys`)"
        if pinned
        else "no public key pinned in enrich.yaml yet (`audit.public_keys`)"
    )
    floors = ", ".join(f"{p} {v}" for p, v in sorted(bundle.confidence_floors.items()))
    entries = [
        (
            "pseudonymisation",
            "Pseudonymisation",
            "identifiers become keyed HMAC-SHA256 pseudonyms with the key id stored beside every "
            "digest; key ids name keys without revealing them; keys rotate (`enrich keys rotate`), "
            "retired keys kept marked retired",
        ),
        (
            "no_raw_identifiers",
            "Raw identifiers never stored",
            "raw e-mail, phone and names exist only inside the identifier stage (and the CRM "
            "export writer); the state store refuses anything but pseudonyms; logs and artifacts "
            "carry counts and key ids; tasks touching raw values persist no result",
        ),
        ("quarantine_sealing", "Quarantine", sealing),
        (
            "policy_gates",
            "Default-deny policy gates",
            "gate A before any provider call, gate B before profiling, gate C before each write; "
            "no recorded lawful basis means no processing; bundle hash recorded with every "
            "decision",
        ),
        (
            "minimisation",
            "Data minimisation",
            "providers get the least identifying identifier form the bundle allows; each "
            "destination gets only its allowed fields; special categories dropped; confidence "
            f"floors: {floors or 'none'}",
        ),
        (
            "decision_log",
            "Tamper-evident decision log",
            "append-only, hash-chained entries (SHA-256 over RFC 8785 canonical JSON), each run "
            "closed by an Ed25519-signed checkpoint; `enrich audit verify` detects edits, "
            "deletions, insertions, reordering and truncation; " + anchors,
        ),
        (
            "k_anonymity",
            "k-anonymous persona cards",
            f"no persona card or category within one shows fewer than "
            f"{config.personas.min_group_size} people",
        ),
        (
            "secrets",
            "Secrets handling",
            "pseudonym, quarantine, signing and provider keys come from environment variables or "
            "Prefect Secret blocks, never from code, config, flow parameters or logs; the local "
            "key file is written with mode 0600",
        ),
    ]
    return [{"id": key, "title": title, "detail": detail} for key, title, detail in entries]


_PURPOSE_MEASURES: Final[Mapping[Purpose, tuple[str, ...]]] = {
    Purpose.ENRICHMENT: (
        "pseudonymisation",
        "policy_gates",
        "minimisation",
        "decision_log",
        "secrets",
    ),
    Purpose.PROFILING: (
        "pseudonymisation",
        "policy_gates",
        "minimisation",
        "decision_log",
        "k_anonymity",
    ),
    Purpose.CRM_EXPORT: ("policy_gates", "minimisation", "decision_log"),
    Purpose.ADS_EXPORT: ("policy_gates", "minimisation", "decision_log"),
    Purpose.ANALYTICS: ("pseudonymisation", "policy_gates", "minimisation", "decision_log"),
}


def _to_complete(bundle: PolicyBundle, controller: str | None) -> list[str]:
    out = []
    if controller is None:
        out.append("Controller name and contact details (Art. 30(1)(a)): pass `--controller`.")
    out += [
        "Joint controller, representative (Art. 27) and DPO contact details.",
        "The actual CRM and ad platforms, where they process, and their processing "
        "agreements (Art. 28).",
        "A processing agreement (Art. 28) for every enrichment provider; for transfers, the "
        "signed SCCs or adequacy reference and the transfer impact assessment.",
        "End dates for the decision log, the suppression list and the state store.",
        "Where hosts, database and backups are, who may access them, incident response.",
        "Reference to the DPIA (Art. 35) for profiling and enrichment.",
    ]
    out += [
        f"Rule {rule.ref} rests on an ASSUMPTION (see its description): confirm or change it."
        for rule in sorted(bundle.rules, key=lambda r: r.id)
        if "ASSUMPTION" in rule.description
    ]
    return out


# --- the document ---------------------------------------------------------------------------------


def _pick(items: Iterable[Mapping[str, Any]], field: str, keys: Iterable[str]) -> list[Any]:
    by_key = {item[field]: item for item in items}
    return [copy.deepcopy(dict(by_key[k])) for k in keys if k in by_key]


def _categories_for(
    bundle: PolicyBundle, purpose: Purpose, categories: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The categories `purpose` uses; for a destination, with the fields it discloses."""
    if purpose not in _RECIPIENT_KINDS:
        return _pick(categories, "key", _PURPOSE_CATEGORIES[purpose])
    fields = bundle.destinations.get(purpose, ())
    keys = list(_PURPOSE_CATEGORIES[purpose])
    keys += [
        key
        for key in dict.fromkeys(_DESTINATION_FIELD_CATEGORIES.get(f) for f in fields)
        if key is not None and key not in keys
    ]
    picked = _pick(categories, "key", keys)
    for category in picked:
        category["disclosed"] = [
            f for f in fields if _DESTINATION_FIELD_CATEGORIES.get(f) == category["key"]
        ]
    unmapped = [f for f in fields if f not in _DESTINATION_FIELD_CATEGORIES]
    if unmapped:
        picked.append(
            {
                "key": "other_destination_fields",
                "label": "Other fields the destination receives",
                "origin": "bundle",
                "fields": unmapped,
                "sources": [],
                "handling": "listed in the bundle's destinations; category to be named by the DPO",
                "disclosed": unmapped,
            }
        )
    return picked


def _activity(
    purpose: Purpose,
    *,
    config: RunConfig,
    bundle: PolicyBundle,
    parts: Mapping[str, Any],
) -> dict[str, Any]:
    spec = bundle.purposes[purpose]
    recipients = _recipients(bundle, purpose, parts["providers"])
    transfers = _transfers(recipients) if purpose is Purpose.ENRICHMENT else []
    return {
        "purpose": str(purpose),
        "name": _ACTIVITY_NAMES[purpose],
        "gate": str(_GATES[purpose]),
        "description": spec.description,
        "lawful_bases": [str(b) for b in spec.bases],
        "basis_evidence": _basis_evidence(config, bundle, purpose),
        "tcf_purposes": list(bundle.tcf.get(purpose, ())),
        "confidence_floor": bundle.confidence_floors.get(purpose),
        "data_subjects": {
            "groups": [s["group"] for s in parts["subjects"]],
            "scope": f"only people with a lawful basis recorded for {purpose}",
            "excluded": _exclusions(bundle, purpose),
        },
        "data_categories": _categories_for(bundle, purpose, parts["categories"]),
        "special_categories": parts["special"]["statement"],
        "recipients": recipients,
        "transfers": transfers,
        "transfers_note": _TRANSFER_NOTES[purpose],
        "retention": _pick(parts["retention"], "key", _PURPOSE_RETENTION[purpose]),
        "measures": list(_PURPOSE_MEASURES[purpose]),
    }


def records_of_processing(
    config: RunConfig,
    bundle: PolicyBundle,
    providers: Sequence[ProviderRecord],
    *,
    controller: str | None = None,
    generated_at: datetime,
    config_hash: str | None = None,
    taxonomy: Taxonomy | None = None,
) -> dict[str, Any]:
    """The record of processing activities (Art. 30(1)) of this configuration, JSON-ready.

    `config_hash` names the config the record was made from (`config_file_hash(path)`);
    `taxonomy` defaults to the config's (`config.taxonomy` or the shipped one). `generated_at`
    must be timezone-aware; it is written in UTC.
    """
    if generated_at.tzinfo is None:
        raise ValueError("generated_at must be timezone-aware")
    taxonomy = taxonomy if taxonomy is not None else load_taxonomy(config.taxonomy)
    provider_recipients = _provider_recipients(bundle, providers)
    parts: dict[str, Any] = {
        "subjects": _data_subjects(config),
        "categories": _source_categories(config) + _derived_categories(config, providers),
        "special": _special_categories(bundle, taxonomy),
        "providers": provider_recipients,
        "retention": _retention(bundle),
    }
    return {
        "schema": SCHEMA,
        "title": "Record of processing activities (GDPR Art. 30(1))",
        "controller": {
            "name": controller if controller is not None else CONTROLLER_PLACEHOLDER,
            "representative": FILL_IN,
            "dpo": FILL_IN,
        },
        "generated_at": generated_at.astimezone(UTC).isoformat(timespec="seconds"),
        "policy_bundle": {"name": bundle.name, "version": bundle.version, "hash": bundle.hash},
        "config": {
            "hash": config_hash,
            "sources": [
                {"name": s.name, "kind": str(s.kind), "fields": [str(f) for f in s.columns]}
                for s in config.sources
            ],
            "providers": [p.name for p in sorted(providers, key=lambda p: p.name)],
        },
        "taxonomy_version": taxonomy.version,
        "jurisdictions": {
            str(regime): list(bundle.jurisdictions.get(regime, ())) for regime in _regimes(bundle)
        },
        "minor_age": {
            "default": bundle.minor_age.default,
            "regimes": {str(r): a for r, a in sorted(bundle.minor_age.regimes.items())},
        },
        "data_subjects": parts["subjects"],
        "data_categories": parts["categories"],
        "special_categories": parts["special"],
        "activities": [
            _activity(purpose, config=config, bundle=bundle, parts=parts)
            for purpose in Purpose
            if purpose in bundle.purposes
        ],
        "transfers": _transfers(provider_recipients),
        "retention": parts["retention"],
        "storage": {
            "state_dir": str(config.state_dir),
            "output_dir": str(config.output_dir),
            "decision_log_dir": str(config.decision_log_dir),
            "note": "ENRICH_STATE_URL, if set, puts the state store in PostgreSQL instead",
        },
        "security_measures": _measures(config, bundle),
        "to_complete": _to_complete(bundle, controller),
    }


# --- Markdown -------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value) or "—"
    text = " ".join(str(value).split())
    return text.replace("|", "\\|") or "—"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    if len(lines) == 2:
        lines.append("| " + " | ".join(["(none)", *([""] * (len(headers) - 1))]) + " |")
    return [*lines, ""]


def _bases_text(bases: Iterable[str]) -> str:
    return ", ".join(f"{b} ({ARTICLE_6.get(b, '?')})" for b in bases)


def _md_header(doc: Mapping[str, Any]) -> list[str]:
    bundle, config, controller = doc["policy_bundle"], doc["config"], doc["controller"]
    minor = doc["minor_age"]
    minor_text = str(minor["default"]) + "".join(f", {r}: {a}" for r, a in minor["regimes"].items())
    lines = [f"# {doc['title']}", ""]
    lines += _table(
        ("Item", "Value"),
        [
            ("Controller", controller["name"]),
            ("Representative (Art. 27)", controller["representative"]),
            ("Data protection officer", controller["dpo"]),
            ("Generated at", doc["generated_at"]),
            ("Policy bundle", f"{bundle['name']} {bundle['version']} (sha256 {bundle['hash']})"),
            ("Run configuration", f"sha256 {config['hash']}" if config["hash"] else None),
            ("Taxonomy", doc["taxonomy_version"]),
            ("Minor age", minor_text),
        ],
    )
    lines += ["## Sources and data subjects", ""]
    lines += _table(
        ("Data subjects", "Source kind", "Sources"),
        [(s["label"], s["source_kind"], s["sources"]) for s in doc["data_subjects"]],
    )
    lines += _table(
        ("Regime", "Countries"),
        [(r, c or "every country not listed elsewhere") for r, c in doc["jurisdictions"].items()],
    )
    return lines


def _md_recipients(activity: Mapping[str, Any]) -> list[str]:
    lines = ["#### Recipients (Art. 30(1)(d))", ""]
    recipients = activity["recipients"]
    if activity["purpose"] == str(Purpose.ENRICHMENT):
        lines += _table(
            ("Provider", "Type", "Region", "Transfer basis", "Accepts", "Produces", "Billing"),
            [
                (
                    r["name"],
                    r["type"],
                    r["region"],
                    r["transfer_basis"],
                    r["accepts"],
                    r["produces"],
                    r["billing"],
                )
                for r in recipients
            ],
        )
        lines += _table(
            ("Provider", "Regime", "Allowed", "Why", "Identifier forms it may receive"),
            [
                (r["name"], g["regime"], g["allowed"], g["why"], g["identifier_forms"])
                for r in recipients
                for g in r["regimes"]
            ],
        )
        return lines
    if not recipients:
        return [*lines, "None: internal processing only (state store and run outputs).", ""]
    lines += _table(
        ("Recipient", "Channel", "Fields it receives", "Where it processes"),
        [(r["kind"], r["channel"], r["fields"], r["region"]) for r in recipients],
    )
    return lines


def _md_categories(activity: Mapping[str, Any]) -> list[str]:
    categories = activity["data_categories"]
    if activity["purpose"] in {str(p) for p in _RECIPIENT_KINDS}:
        return _table(
            ("Category", "Fields", "Sent to the recipient", "Handling"),
            [(c["label"], c["fields"], c["disclosed"], c["handling"]) for c in categories],
        )
    return _table(
        ("Category", "Fields", "Handling"),
        [(c["label"], c["fields"], c["handling"]) for c in categories],
    )


def _md_activity(number: int, activity: Mapping[str, Any], groups: Mapping[str, str]) -> list[str]:
    lines = [f"### {number}. {activity['name']} (`{activity['purpose']}`)", ""]
    lines += [activity["description"], ""]
    lines += _table(
        ("Item", "Value"),
        [
            ("Policy gate", activity["gate"]),
            ("Lawful bases (Art. 6(1))", _bases_text(activity["lawful_bases"])),
            ("TCF purposes", activity["tcf_purposes"]),
            ("Confidence floor", activity["confidence_floor"]),
            ("Data subjects", [groups.get(g, g) for g in activity["data_subjects"]["groups"]]),
            ("Scope", activity["data_subjects"]["scope"]),
            ("Special categories", activity["special_categories"]),
            ("Measures", activity["measures"]),
        ],
    )
    lines += ["#### How a basis is recorded", ""]
    lines += _table(
        ("Basis", "Rule", "How"),
        [(e["basis"], e["rule"], e["via"]) for e in activity["basis_evidence"]],
    )
    lines += ["#### Excluded or restricted", ""]
    lines += _table(
        ("Who", "Outcome", "Rule", "Removed fields"),
        [
            (e["who"], e["outcome"], e["rule"], e.get("removed"))
            for e in activity["data_subjects"]["excluded"]
        ],
    )
    lines += ["#### Personal data (Art. 30(1)(c))", ""]
    lines += _md_categories(activity)
    lines += _md_recipients(activity)
    lines += ["#### Transfers to third countries (Art. 30(1)(e))", ""]
    lines += [activity["transfers_note"], ""]
    if activity["transfers"]:
        lines += _md_transfers(activity["transfers"])
    lines += ["#### Retention (Art. 30(1)(f))", ""]
    lines += _md_retention(activity["retention"])
    return lines


def _md_transfers(transfers: Sequence[Mapping[str, Any]]) -> list[str]:
    return _table(
        (
            "Recipient",
            "Region",
            "Transfer basis",
            "Subjects (regimes)",
            "Accepted for",
            "Refused for",
        ),
        [
            (
                t["recipient"],
                t["region"],
                t["transfer_basis"],
                t["regimes"],
                t["accepted_for"],
                t["refused_for"],
            )
            for t in transfers
        ],
    )


def _md_retention(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    return _table(
        ("Data", "Days", "Rule"),
        [(e["what"], e["days"] if e["days"] is not None else "kept", e["rule"]) for e in entries],
    )


def _md_footer(doc: Mapping[str, Any]) -> list[str]:
    special = doc["special_categories"]
    lines = ["## Special categories of personal data (Art. 9)", "", special["statement"], ""]
    lines += _table(
        ("Topic", "Label", "Sensitivity", "Listed by"),
        [(t["topic"], t["label"], t["sensitivity"], t["listed_by"]) for t in special["topics"]],
    )
    if special["exceptions"]:
        lines += _table(
            ("Rule", "Topics", "Purposes", "Basis"),
            [(e["rule"], e["topics"], e["purposes"], e["basis"]) for e in special["exceptions"]],
        )
    lines += ["## Transfers to third countries (Art. 30(1)(e))", ""]
    lines += _md_transfers(doc["transfers"])
    lines += ["## Retention (Art. 30(1)(f))", ""]
    lines += _md_retention(doc["retention"])
    storage = doc["storage"]
    lines += _table(
        ("Storage", "Location"),
        [
            ("State", storage["state_dir"]),
            ("Run outputs", storage["output_dir"]),
            ("Decision log", storage["decision_log_dir"]),
            ("Note", storage["note"]),
        ],
    )
    lines += ["## Technical and organisational measures (Art. 30(1)(g), Art. 32)", ""]
    lines += _table(
        ("Measure", "Id", "What"),
        [(m["title"], m["id"], m["detail"]) for m in doc["security_measures"]],
    )
    lines += ["## To complete by hand", ""]
    lines += [f"- [ ] {item}" for item in doc["to_complete"]]
    return [*lines, ""]


def ropa_markdown(document: Mapping[str, Any]) -> str:
    """The record as a Markdown document for a DPO: a heading and tables per activity."""
    lines = _md_header(document)
    lines += ["## Processing activities", ""]
    groups = {s["group"]: s["label"] for s in document["data_subjects"]}
    for number, activity in enumerate(document["activities"], start=1):
        lines += _md_activity(number, activity, groups)
    lines += _md_footer(document)
    return "\n".join(lines).rstrip("\n") + "\n"
