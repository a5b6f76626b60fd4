"""Dependency-free contract of the policy layer: purposes, bases, regimes, gates, outcomes."""

from __future__ import annotations

from enum import StrEnum

# Purposes, consent states and suppression kinds are stored by the state store, which sits
# below the policy layer; they live in profiles.types and are part of this contract too.
from profiles.types import ConsentStatus, Purpose, SuppressionKind

__all__ = [
    "ConsentStatus",
    "Gate",
    "LawfulBasis",
    "Outcome",
    "PolicyReason",
    "Purpose",
    "Regime",
    "SuppressionKind",
]


class LawfulBasis(StrEnum):
    """GDPR Art. 6(1)(a)-(f)."""

    CONSENT = "consent"  # (a)
    CONTRACT = "contract"  # (b)
    LEGAL_OBLIGATION = "legal_obligation"  # (c)
    VITAL_INTERESTS = "vital_interests"  # (d)
    PUBLIC_TASK = "public_task"  # (e)
    LEGITIMATE_INTERESTS = "legitimate_interests"  # (f)


class Regime(StrEnum):
    """Privacy regime a subject falls under, from their country."""

    GDPR = "gdpr"  # EU/EEA
    UK_GDPR = "uk_gdpr"
    CCPA = "ccpa"  # US-CA CCPA/CPRA
    OTHER = "other"


class Gate(StrEnum):
    """Where in the run a decision is taken."""

    A = "A"
    """Before any provider call (purpose enrichment, per provider)."""
    B = "B"
    """Before profiling (purpose profiling)."""
    C = "C"
    """Before each write (per destination: crm_export, ads_export, analytics)."""


class Outcome(StrEnum):
    """What a decision says. Deny overrides allow; redact allows with fields or topics removed."""

    ALLOW = "allow"
    DENY = "deny"
    REDACT = "redact"


class PolicyReason(StrEnum):
    """Reason codes of policy decisions (the rule that decided also names its own reason)."""

    BASIS_RECORDED = "BASIS_RECORDED"
    """Allowed: a basis the purpose accepts is recorded for the subject."""
    NO_LAWFUL_BASIS = "NO_LAWFUL_BASIS"
    """Default deny: no recorded basis the purpose accepts."""
    CONSENT_WITHDRAWN = "CONSENT_WITHDRAWN"
    ERASED = "ERASED"
    OBJECTED = "OBJECTED"
    OPTED_OUT = "OPTED_OUT"
    MINOR = "MINOR"
    SPECIAL_CATEGORY = "SPECIAL_CATEGORY"
    PROVIDER_NOT_ALLOWED = "PROVIDER_NOT_ALLOWED"
    NO_TRANSFER_BASIS = "NO_TRANSFER_BASIS"
    BELOW_CONFIDENCE_FLOOR = "BELOW_CONFIDENCE_FLOOR"
    EXPIRED = "EXPIRED"
    FIELD_NOT_ALLOWED = "FIELD_NOT_ALLOWED"
    RULE = "RULE"
    """A configured rule decided; its id names which."""
