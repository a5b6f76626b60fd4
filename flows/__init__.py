"""Prefect orchestration: the nightly flow, its tasks, the run summary and the `enrich` CLI."""
