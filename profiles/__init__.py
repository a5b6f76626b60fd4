"""Domain core of guarded profile enrichment: no Prefect, no HTTP."""
