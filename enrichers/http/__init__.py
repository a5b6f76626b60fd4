"""Resilient HTTP for providers: rate limit, retries, circuit breaker, budget, redaction."""
