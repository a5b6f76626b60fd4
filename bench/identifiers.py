"""Benchmark of the identifier stage against a naive row-by-row baseline, at 100k and 1M rows.

Inputs are realistic multi-source data from the synthetic generator (`profiles.synth`),
read through `profiles.ingest` in source order and cut at exactly N rows; they are cached
under the system temp directory. Each variant runs in a fresh subprocess, so its peak RSS
is its own:

* stage: `IdentifierStage` over chunks of `--chunk-rows`, with `--workers` processes
  (pool start-up included in the time);
* naive: `process_rowwise`, one `DataFrame.apply(axis=1)` call per row with the same
  per-value functions, no cache, one core.

Both outputs are written to Parquet and compared with `pd.testing.assert_frame_equal`; the
table shows rows, seconds, rows/s, peak RSS and the stage's speed-up. Run it with
`make bench` or `.venv/bin/python bench/identifiers.py --sizes 100000,1000000`.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import math
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

import profiles.synth
from profiles.config import PerformanceConfig, RunConfig, SourceConfig, load_run_config
from profiles.hashing import Key, Pseudonymiser
from profiles.identifiers import IdentifierStage, process_rowwise
from profiles.ingest import read_source
from profiles.synth import generate

# keyed by the generator's source, so data made by an older generator is never reused
GENERATOR = hashlib.sha256(Path(profiles.synth.__file__).read_bytes()).hexdigest()[:12]
CACHE = Path(tempfile.gettempdir()) / "enrich-bench-identifiers" / GENERATOR
SEED = 7
PROBE_PEOPLE = 2_000
# A fixed, public benchmark key: the data are synthetic, and digests only need to be equal.
BENCH_KEY = Key.from_secret(b"bench/identifiers: not a secret!")


@dataclass(frozen=True)
class Measurement:
    """One variant at one size, as reported by its subprocess."""

    variant: str
    rows: int
    seconds: float
    rss_mb: float
    workers_rss_mb: float
    validated: int | None


def _synth(people: int) -> Path:
    """Config path of a cached synthetic data set of `people` persons."""
    out = CACHE / f"synth-{people}-seed{SEED}"
    done = out / ".complete"
    if not done.exists():
        result = generate(people, out, seed=SEED)
        done.write_text(json.dumps(result.rows))
    return out / "enrich.yaml"


def _synth_rows(people: int) -> int:
    _synth(people)
    rows: dict[str, int] = json.loads(
        (CACHE / f"synth-{people}-seed{SEED}" / ".complete").read_text()
    )
    return sum(rows.values())


def _people_for(rows: int) -> int:
    """Fewest people (found by growing an estimate) whose data set has at least `rows` rows."""
    per_person = _synth_rows(PROBE_PEOPLE) / PROBE_PEOPLE
    people = max(PROBE_PEOPLE, math.ceil(rows / per_person * 1.02))
    while (total := _synth_rows(people)) < rows:
        people = math.ceil(people * rows / total * 1.02)
    return people


def _input_dir(rows: int, chunk_rows: int) -> Path:
    """Directory with the first `rows` stage-input rows, one Parquet file per source."""
    target = CACHE / f"input-{rows}"
    manifest = target / "manifest.json"
    if manifest.exists():
        return target
    people = _people_for(rows)
    while True:
        config_path = _synth(people)
        frames = _first_rows(load_run_config(config_path), rows, chunk_rows)
        if sum(len(f) for _, f in frames) == rows:
            break
        people = math.ceil(people * 1.05)  # unparseable rows are no stage input: grow a little
    target.mkdir(parents=True, exist_ok=True)
    files: list[dict[str, str]] = []
    for i, (source, frame) in enumerate(frames):
        path = target / f"{i:02d}-{source.name}.parquet"
        frame.to_parquet(path)
        files.append({"source": source.name, "file": path.name})
    manifest.write_text(json.dumps({"config": str(config_path), "people": people, "files": files}))
    return target


def _first_rows(
    config: RunConfig, rows: int, chunk_rows: int
) -> list[tuple[SourceConfig, pd.DataFrame]]:
    """The first `rows` readable rows of the sources, in source order, as ingest yields them."""
    out: list[tuple[SourceConfig, pd.DataFrame]] = []
    left = rows
    for source in config.sources:
        frames = []
        for chunk in read_source(source, chunk_rows):
            frames.append(chunk.frame.iloc[:left])
            left -= len(frames[-1])
            if left <= 0:
                break
        out.append((source, pd.concat(frames, ignore_index=True)))
        if left <= 0:
            break
    return out


def _load_inputs(directory: Path) -> tuple[RunConfig, list[tuple[SourceConfig, pd.DataFrame]]]:
    manifest = json.loads((directory / "manifest.json").read_text())
    config = load_run_config(manifest["config"])
    inputs = [
        (config.source(entry["source"]), pd.read_parquet(directory / entry["file"]))
        for entry in manifest["files"]
    ]
    return config, inputs


def _peak_rss_mb(pid: int | None = None) -> float:
    """Peak resident set size (VmHWM) of a process, in MB."""
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _chunks(frame: pd.DataFrame, rows: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), rows):
        yield frame.iloc[start : start + rows]


def _run_variant(args: argparse.Namespace) -> None:
    directory = Path(args.input_dir)
    config, inputs = _load_inputs(directory)
    pseudonymiser = Pseudonymiser(BENCH_KEY)
    outputs: list[pd.DataFrame] = []
    workers_rss = 0.0
    validated: int | None = None
    profiler = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    if args.variant == "stage":
        with IdentifierStage(config.identifiers, pseudonymiser, workers=args.workers) as stage:
            for source, frame in inputs:
                parts = [stage.process(chunk, source) for chunk in _chunks(frame, args.chunk_rows)]
                outputs.append(pd.concat(parts))
            workers_rss = sum(_peak_rss_mb(pid) for pid in stage.worker_pids())
            validated = sum(stage.stats.validated.values())
    else:
        for source, frame in inputs:
            outputs.append(process_rowwise(frame, source, config.identifiers, pseudonymiser))
    seconds = time.perf_counter() - started
    rss = _peak_rss_mb()  # before writing the output for the comparison
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for (source, _), output in zip(inputs, outputs, strict=True):
        output.to_parquet(out_dir / f"{source.name}.parquet")
    result = {
        "variant": args.variant,
        "rows": sum(len(f) for _, f in inputs),
        "seconds": seconds,
        "rss_mb": rss,
        "workers_rss_mb": workers_rss,
        "validated": validated,
    }
    print(json.dumps(result))


def _measure(variant: str, rows: int, args: argparse.Namespace) -> Measurement:
    command = [
        sys.executable,
        __file__,
        "--variant",
        variant,
        "--input-dir",
        str(_input_dir(rows, args.chunk_rows)),
        "--output-dir",
        str(CACHE / f"output-{rows}" / variant),
        "--workers",
        str(args.workers),
        "--chunk-rows",
        str(args.chunk_rows),
    ]
    if args.profile and variant == "stage":
        command.append("--profile")
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    return Measurement(**json.loads(done.stdout.strip().splitlines()[-1]))


def _same_outputs(rows: int) -> None:
    """Fail unless the stage and the naive baseline wrote identical frames for every source."""
    base = CACHE / f"output-{rows}"
    names = sorted(p.name for p in (base / "naive").glob("*.parquet"))
    assert names == sorted(p.name for p in (base / "stage").glob("*.parquet"))
    for name in names:
        pd.testing.assert_frame_equal(
            pd.read_parquet(base / "stage" / name), pd.read_parquet(base / "naive" / name)
        )


def _table(results: list[tuple[Measurement, Measurement | None]]) -> None:
    table = Table(title="identifier stage vs naive row-wise apply (synthetic multi-source data)")
    for name in ["rows", "variant", "seconds", "rows/s", "peak RSS MB", "workers RSS MB"]:
        table.add_column(name, justify="right")
    table.add_column("distinct checked", justify="right")
    table.add_column("speed-up", justify="right")
    for stage, naive in results:
        for m in [naive, stage]:
            if m is None:
                continue
            speed_up = ""
            if m is stage and naive is not None:
                speed_up = f"{naive.seconds / stage.seconds:.1f}×"
            table.add_row(
                f"{m.rows:,}",
                m.variant,
                f"{m.seconds:.2f}",
                f"{m.rows / m.seconds:,.0f}",
                f"{m.rss_mb:,.0f}",
                f"{m.workers_rss_mb:,.0f}" if m.workers_rss_mb else "-",
                f"{m.validated:,}" if m.validated is not None else "-",
                speed_up,
            )
    Console(width=120).print(table)


def main() -> None:
    """Parse flags; either run one variant (internal) or drive the whole benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated row counts")
    parser.add_argument(
        "--skip-naive-above", type=int, default=None, metavar="N", help="no baseline above N rows"
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the stage's own process (to stderr)"
    )
    parser.add_argument("--workers", type=int, default=PerformanceConfig().workers)
    parser.add_argument("--chunk-rows", type=int, default=PerformanceConfig().chunk_rows)
    parser.add_argument("--variant", choices=["stage", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--input-dir", help=argparse.SUPPRESS)
    parser.add_argument("--output-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        _run_variant(args)
        return
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    results: list[tuple[Measurement, Measurement | None]] = []
    for rows in sizes:
        print(f"{rows:,} rows: preparing input under {CACHE} ...", file=sys.stderr)
        _input_dir(rows, args.chunk_rows)
        naive = None
        if args.skip_naive_above is None or rows <= args.skip_naive_above:
            print(f"{rows:,} rows: naive baseline ...", file=sys.stderr)
            naive = _measure("naive", rows, args)
        print(f"{rows:,} rows: stage ...", file=sys.stderr)
        stage = _measure("stage", rows, args)
        if naive is not None:
            _same_outputs(rows)
            print(f"{rows:,} rows: outputs identical", file=sys.stderr)
        results.append((stage, naive))
    _table(results)


if __name__ == "__main__":
    main()
