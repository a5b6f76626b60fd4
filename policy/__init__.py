"""Consent and GDPR policy layer (filled in by the policy issue)."""
