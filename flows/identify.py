"""The identify phase of the nightly flow: source chunks → identified parts, in parallel.

Each source is cut into chunks at record boundaries (`profiles.ingest.plan_chunks`); one
`identify-chunk` task per chunk reads its byte range, validates and pseudonymises the
identifiers, and writes the chunk's accepted rows, quarantine rows and sealed contact values
as parts of the run's staging folder. A task gets a `ChunkJob` — paths, the chunk's range and
the ids of the keys the flow resolved — never rows; it resolves the keys itself (environment,
Prefect Secret block or key file, as the flow does) and refuses to run if they are not the
flow's. It returns the chunk's counts (numbers and reason codes only).

Every process keeps one `IdentifierStage` per run, so a value seen in several chunks that
one process handles is validated once; the flow's process (threads runner) shares its stage,
and its validation pool, across the threads. Outcomes do not depend on which process checked
a value, so the parts are the same whichever runner ran them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.workers import RunRef, worker_run
from profiles import vault
from profiles.accounting import SourceCounts
from profiles.config import SourceConfig
from profiles.failpoints import failpoint
from profiles.ingest import ChunkSpec, read_chunk
from profiles.quarantine import rows_without_identifier, unparseable_rows
from profiles.rundir import chunk_part, write_chunk_parts


@dataclass(frozen=True)
class ChunkJob:
    """One source chunk to identify: which run, where, and whom to drop."""

    run: RunRef
    source: str
    spec: ChunkSpec
    workers: int
    """Validation processes of the stage in this task's process (1: in the process itself)."""
    erased: Mapping[str, frozenset[str]]
    """Pseudonyms of erased subjects, per identifier kind: their rows are dropped, counted."""

    @property
    def part(self) -> str:
        """The chunk's part name."""
        return chunk_part(self.source, self.spec.index)


def erased_rows(identified: pd.DataFrame, erased: Mapping[str, frozenset[str]]) -> pd.Series:
    """Accepted rows carrying any identifier of an erased subject."""
    gone = pd.Series(False, index=identified.index)
    for kind, pseudonyms in erased.items():
        if pseudonyms:
            gone |= identified[f"{kind}_pseudonym"].isin(pseudonyms)
    return gone & identified["row_reason"].isna()


def identify(job: ChunkJob) -> SourceCounts:
    """Identify one chunk into parts of the staging folder; return its counts."""
    run = worker_run(job.run)
    stage = run.stage(job.workers)
    source: SourceConfig = run.config.source(job.source)
    chunk = read_chunk(source, job.spec)
    counts = SourceCounts(source=source.name, file=source.path.name)
    identified = stage.process(chunk.frame, source)
    counts.add_identified(identified)
    counts.add_unparseable(len(chunk.unparseable))
    gone = erased_rows(identified, job.erased)
    counts.add_erased(int(gone.sum()))
    quarantine = pd.concat(
        [
            unparseable_rows(source.name, source.path.name, chunk.unparseable, run.sealer),
            rows_without_identifier(
                source.name, source.path.name, identified, chunk.frame, run.sealer
            ),
        ],
        ignore_index=True,
    )
    staging = Path(job.run.staging)
    write_chunk_parts(staging, job.part, source.name, identified.loc[~gone], quarantine)
    vault.write_part(
        staging / vault.VAULT_DIR / f"{job.part}.parquet",
        stage.take_vault(),
        run.vault_key,
    )
    failpoint("identify:chunk")
    return counts


@task(name="identify-chunk", persist_result=False, cache_policy=NO_CACHE)
def identify_chunk(job: ChunkJob) -> SourceCounts:
    """A Prefect task around `identify`: one chunk, counts back (no values)."""
    return identify(job)
