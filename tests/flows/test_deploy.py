"""Tests that `enrich serve` and `prefect.yaml` declare the same nightly deployment."""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import RunnerDeployment

from flows.deploy import DEPLOYMENT_NAME, build_deployment

ROOT = Path(__file__).parents[2]
FIXTURE = ROOT / "fixtures" / "small" / "enrich.yaml"


def _cron(deployment: RunnerDeployment) -> CronSchedule:
    assert deployment.schedules is not None
    [schedule] = deployment.schedules
    assert isinstance(schedule.schedule, CronSchedule)
    return schedule.schedule


def test_served_deployment_uses_the_config_schedule_and_never_overlaps() -> None:
    deployment = build_deployment(FIXTURE)
    assert deployment.name == DEPLOYMENT_NAME
    assert deployment.parameters == {"config_path": str(FIXTURE.resolve())}
    assert _cron(deployment).cron == "0 2 * * *"
    assert _cron(deployment).timezone == "Europe/Copenhagen"
    limit = deployment.concurrency_options
    assert deployment.concurrency_limit == 1
    assert limit is not None
    assert limit.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE


def test_prefect_yaml_declares_the_same_deployment() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    [deployment] = spec["deployments"]
    assert deployment["name"] == DEPLOYMENT_NAME
    path, _, name = deployment["entrypoint"].partition(":")
    assert (ROOT / path).is_file()
    assert f"def {name}(" in (ROOT / path).read_text(encoding="utf-8")
    served = _cron(build_deployment(FIXTURE))
    [schedule] = deployment["schedules"]
    assert schedule["cron"] == served.cron
    assert schedule["timezone"] == served.timezone
    assert deployment["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    assert deployment["work_pool"]["name"] == "enrich-process"
    assert set(deployment["parameters"]) == {"config_path"}
