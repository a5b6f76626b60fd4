"""First-party behaviour enrichment from the shop's own order lines."""
