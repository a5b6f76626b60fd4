"""Partition tasks find their run in any process, and refuse what is not the flow's."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from flows.runner import Runner
from flows.workers import RunRef, release, worker_run
from profiles.config import PerformanceConfig
from profiles.errors import ConfigError, KeyMaterialError
from profiles.hashing import Keyring
from tests.flows.test_nightly import FIXTURE, _init_keys


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    work = tmp_path / "shop"
    shutil.copytree(FIXTURE, work)
    _init_keys(work)
    return work


def _ref(work: Path, run_id: str = "r1", key_id: str | None = None) -> RunRef:
    config = work / "enrich.yaml"
    ring = Keyring.load(work / "state" / "keys.json")
    return RunRef(
        config_path=str(config),
        config_hash=hashlib.sha256(config.read_bytes()).hexdigest(),
        run_id=run_id,
        staging=str(work / "out" / f".{run_id}.partial"),
        key_id=key_id or ring.active["pseudonym"],
        sealer_key_id=ring.active["quarantine"],
    )


def test_a_worker_resolves_the_flows_keys_and_keeps_one_run(shop: Path) -> None:
    first = worker_run(_ref(shop, "r1"))
    assert worker_run(_ref(shop, "r1")) is first
    assert first.key.key_id == _ref(shop).key_id
    assert first.sealer is not None
    second = worker_run(_ref(shop, "r2"))  # a new run replaces the old one
    assert second is not first
    assert worker_run(_ref(shop, "r2")) is second
    release("r2")
    assert worker_run(_ref(shop, "r2")) is not second
    release("r2")


def test_a_worker_with_another_pseudonym_key_refuses(shop: Path) -> None:
    with pytest.raises(KeyMaterialError, match="the flow uses kother"):
        worker_run(_ref(shop, "r3", key_id="kother"))


def test_a_worker_refuses_a_config_changed_during_the_run(shop: Path) -> None:
    ref = _ref(shop, "r4")
    (shop / "enrich.yaml").write_text(
        (shop / "enrich.yaml").read_text() + "\n# edited\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="changed while run r4 was running"):
        worker_run(ref)


@pytest.mark.parametrize(
    ("kind", "workers", "address", "message"),
    [
        ("spark", None, None, "runner must be one of threads, processes, dask, dask-local"),
        ("dask", None, None, "needs the scheduler's address"),
        ("processes", 0, None, "workers must be at least 1"),
    ],
)
def test_bad_runner_choices_are_refused_with_the_fix(
    kind: str, workers: int | None, address: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Runner.of(PerformanceConfig(), kind=kind, workers=workers, address=address)


def test_the_command_line_overrides_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENRICH_RUNNER", raising=False)  # the tests' own default (conftest)
    configured = PerformanceConfig(runner="dask", dask_address="tcp://10.0.0.5:8786", workers=3)
    assert Runner.of(configured) == Runner("dask", 3, "tcp://10.0.0.5:8786")
    local = Runner.of(configured, kind="dask-local", workers=4)
    assert local == Runner("dask-local", 4, None)
    assert local.describe() == "dask-local (4 workers)"
    assert Runner.of(PerformanceConfig()).kind == "processes"
    assert Runner.of(PerformanceConfig(), kind="threads").in_process


def test_the_hosts_runner_stands_between_the_command_line_and_the_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configured = PerformanceConfig(runner="processes", workers=3)
    monkeypatch.setenv("ENRICH_RUNNER", "threads")
    assert Runner.of(configured) == Runner("threads", 3, None)
    assert Runner.of(configured, kind="dask-local").kind == "dask-local"
    monkeypatch.setenv("ENRICH_RUNNER", "spark")
    with pytest.raises(ValueError, match="runner must be one of"):
        Runner.of(configured)
