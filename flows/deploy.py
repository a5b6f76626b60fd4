"""Deployment of the nightly flow: `enrich serve` here, `prefect.yaml` for a process work pool."""

from __future__ import annotations

from pathlib import Path

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from flows.nightly import nightly_enrichment
from profiles.config import load_run_config

DEPLOYMENT_NAME = "nightly"


def build_deployment(config_path: Path) -> RunnerDeployment:
    """The nightly deployment: the config's cron and time zone, at most one run at a time.

    A run that comes due while the previous night still runs waits for it (ENQUEUE): runs never
    overlap and none is lost.
    """
    config_path = config_path.resolve()
    config = load_run_config(config_path)
    deployment = nightly_enrichment.to_deployment(
        name=DEPLOYMENT_NAME,
        schedules=[Cron(config.schedule.cron, timezone=config.schedule.timezone)],
        parameters={"config_path": str(config_path)},
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
        ),
        description="Nightly guarded profile enrichment",
        tags=["enrich", "nightly"],
    )
    assert isinstance(deployment, RunnerDeployment)  # sync call: a value, not a coroutine
    return deployment


def serve_nightly(config_path: Path) -> None:
    """Serve the nightly deployment until interrupted; the schedule stays on across restarts."""
    serve(build_deployment(config_path), pause_on_shutdown=False)
