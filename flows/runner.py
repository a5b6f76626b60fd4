"""Where a run's partition tasks run: threads, a process pool, or a Dask cluster.

The nightly flow has two kinds of work. Population steps need every profile at once
(identity resolution, the behaviour model fits, personas, the exports) and run in the flow's
own process. Partition tasks each take one slice — a source chunk, a provider, a contiguous
range of profiles — as a small picklable job naming files in the run's staging folder; they
read their inputs from there and write their outputs back as Parquet parts, returning only
counts. The flow submits partition tasks to the runner chosen here, collects their results in
job order and combines the parts in that order, so the outputs do not depend on the runner
or on how many workers it has.

    threads      ThreadPoolTaskRunner in the flow's process (the identifier stage still
                 validates on its own `workers` processes)
    processes    Prefect's ProcessPoolTaskRunner: `workers` processes on this machine
    dask         DaskTaskRunner on an existing cluster (`dask_address`)
    dask-local   DaskTaskRunner on a LocalCluster of `workers` single-threaded processes

Worker processes report their task runs to the flow's Prefect API: `worker_api()` exports
the flow's API URL to processes the runner starts. Workers of an existing cluster must be
started with PREFECT_API_URL themselves (and see the same file system paths as the flow:
sources, output and state folders; the README's "Running on a cluster").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from prefect import Task, get_client
from prefect.futures import PrefectFuture
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from profiles.config import PerformanceConfig, RunnerKind
from profiles.settings import EnrichSettings

R = TypeVar("R")

RUNNERS: tuple[RunnerKind, ...] = ("threads", "processes", "dask", "dask-local")
"""Every runner `enrich run --runner` accepts."""


@dataclass(frozen=True)
class Runner:
    """The runner of one run: its kind, its worker processes and a Dask scheduler address."""

    kind: RunnerKind = "processes"
    workers: int = 2
    address: str | None = None

    @classmethod
    def of(
        cls,
        performance: PerformanceConfig,
        *,
        kind: str | None = None,
        workers: int | None = None,
        address: str | None = None,
    ) -> Runner:
        """The configured runner (enrich.yaml `performance`), with any of its settings given
        on the command line or as flow parameters in its place; ValueError names a bad one.
        The kind is, first found: `kind`, this host's ENRICH_RUNNER, enrich.yaml's."""
        chosen = kind or EnrichSettings().runner or performance.runner
        if chosen not in RUNNERS:
            raise ValueError(f"runner must be one of {', '.join(RUNNERS)}, not {chosen!r}")
        address = address or performance.dask_address
        if chosen == "dask" and not address:
            raise ValueError("runner dask needs the scheduler's address (--dask-address tcp://...)")
        if workers is not None and workers < 1:
            raise ValueError("workers must be at least 1")
        return cls(
            kind=chosen,
            workers=workers or performance.workers,
            address=address if chosen == "dask" else None,
        )

    @property
    def in_process(self) -> bool:
        """Whether partition tasks run in the flow's own process (threads)."""
        return self.kind == "threads"

    def describe(self) -> str:
        """One line for the log: the kind and its workers or address."""
        if self.kind == "dask":
            return f"dask cluster at {self.address}"
        return f"{self.kind} ({self.workers} worker{'s' if self.workers != 1 else ''})"

    def task_runner(self) -> TaskRunner[Any]:
        """A new, not yet started, Prefect task runner of this kind."""
        if self.kind == "threads":
            return ThreadPoolTaskRunner(max_workers=self.workers)
        if self.kind == "processes":
            return ProcessPoolTaskRunner(max_workers=self.workers)
        from prefect_dask.task_runners import DaskTaskRunner  # noqa: PLC0415 - slow import

        if self.kind == "dask":
            return cast(TaskRunner[Any], DaskTaskRunner(address=self.address))
        return cast(
            TaskRunner[Any],
            DaskTaskRunner(
                cluster_kwargs={
                    "n_workers": self.workers,
                    "threads_per_worker": 1,
                    "processes": True,
                    "dashboard_address": None,
                    "silence_logs": logging.WARNING,
                }
            ),
        )


@contextmanager
def worker_api() -> Iterator[None]:
    """Make processes started from here report to this flow's Prefect API.

    A flow on Prefect's temporary server knows its URL only in its own settings; a worker
    process would otherwise start a temporary server of its own (seconds per process, and its
    task runs would not show in the flow's UI). The variable is restored afterwards.
    """
    before = os.environ.get("PREFECT_API_URL")
    if before is None:
        with get_client(sync_client=True) as client:
            os.environ["PREFECT_API_URL"] = str(client.api_url)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)


class Pending(Generic[R]):
    """Partition tasks submitted together, still running; `results` waits for them."""

    def __init__(self, futures: list[PrefectFuture[R]]) -> None:
        self._futures = futures

    def __len__(self) -> int:
        return len(self._futures)

    def results(self, progress: Callable[[int, int, R], None] | None = None) -> list[R]:
        """The results in job order; `progress(done, of, result)` follows them in that order.
        A failed task fails the lot with its own exception, once every job has ended (none is
        left running, so no task writes into a run that has already failed)."""
        results: list[R] = []
        error: BaseException | None = None
        for done, future in enumerate(self._futures, start=1):
            try:
                results.append(future.result())
            except BaseException as exc:
                error = error or exc
                continue
            if progress is not None:
                progress(done, len(self._futures), results[-1])
        if error is not None:
            raise error
        return results


class Partitions:
    """Submits partition tasks to a started runner and collects their results in order."""

    def __init__(self, runner: Runner, task_runner: TaskRunner[Any]) -> None:
        self.runner = runner
        self._task_runner = task_runner

    def submit(self, task: Task[..., R], jobs: Iterable[Any]) -> Pending[R]:
        """Start `task(job)` for every job, each as soon as the iterable gives it (a job made
        by slow work in the flow runs while the next one is being made)."""
        return Pending([self._task_runner.submit(task, {"job": job}) for job in jobs])

    def map(
        self,
        task: Task[..., R],
        jobs: Iterable[Any],
        *,
        progress: Callable[[int, int, R], None] | None = None,
    ) -> list[R]:
        """Run `task(job)` for every job and wait: results in job order (`Pending.results`)."""
        return self.submit(task, jobs).results(progress)


@contextmanager
def partitions(runner: Runner) -> Iterator[Partitions]:
    """A started task runner of `runner`'s kind for a block of partition tasks."""
    context = worker_api() if not runner.in_process else _nothing()
    with context, runner.task_runner() as task_runner:
        yield Partitions(runner, task_runner)


@contextmanager
def _nothing() -> Iterator[None]:
    yield
