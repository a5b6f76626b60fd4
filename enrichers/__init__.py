"""Enrichment provider plugins (filled in by the provider issue)."""
