"""The whole nightly run at 10k, 100k and 1M input rows, with the local provider server at 20 ms.

For each size, `enrich synth` writes a shop of about that many input rows (all five sources,
about 11.4 rows per person) configured for the local provider server, which runs in its own
process with `--latency-ms 20`. `enrich run` (the full flow: ingest, identifiers, identity,
gates, behaviour, providers, fusion, personas, exports, decision log) runs in a fresh
subprocess, three nights on the same state:

    first     the first night: every person is new, every lookup goes to the providers
    again     the same data once more: nothing changed, so no provider calls
    1% night  `enrich synth --night 2`: about 1 % new people and some changed ones

At the largest size the first night is run again from a fresh state: with the state store in
the local PostgreSQL (`ENRICH_STATE_URL`, a database created for it), and on a local Dask
cluster of two worker processes (`--runner dask-local --workers 2`); the table says whether
each made exactly the first night's outputs (profiles, links, signals, quarantine, every CSV
export, persona cards). Stage times come from the run summary (`timings`, wall seconds
per stage); "rest" is the wall time outside them (start-up, writing and sealing the outputs,
the state commit). Peak memory is the largest sum of RSS over the run's process tree (the
flow, its worker processes, Prefect's temporary server), sampled every 0.1 s. For reference
the table also gives the naive identifier baseline of the foundation issue
(`profiles.identifiers.process_rowwise`: one `DataFrame.apply(axis=1)` per row, no cache, one
core) on the same input.

Targets (the scale issue, this 2-core machine, 1M input rows): the first night under 150 s
and 4 GB; time from 100k to 1M growing no worse than linearly (ratio <= 11); the second
night with no provider calls and at most 70 % of the first's time; the 1% night at most 80 %.

Run: `.venv/bin/python bench/nightly.py [--rows 10000 100000 1000000] [--no-dask] [--no-pg]`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

ROWS_PER_PERSON = 11.4
LATENCY_MS = 20
PG_ADMIN_URL = os.environ.get("ENRICH_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_DATABASE = "enrich_bench_nightly"


@dataclass
class Night:
    """One `enrich run`: wall time, peak memory and what its summary says."""

    wall: float
    peak_mb: float
    rows: int
    profiles: int
    calls: int
    failed: int
    """Lookups that ended failed (after retries): a night with any may differ in its outputs."""
    folder: Path
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def rest(self) -> float:
        """Wall seconds outside the stages the flow times."""
        return self.wall - sum(self.stages.values())


class _PeakTree:
    """Samples the RSS summed over a process and its descendants; keeps the largest sum."""

    def __init__(self, pid: int) -> None:
        self.peak = 0
        self._root = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            total = 0
            try:
                processes = [self._root, *self._root.children(recursive=True)]
            except psutil.Error:
                continue
            for process in processes:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)

    def stop(self) -> float:
        """Stop sampling; the peak in MB."""
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


def _enrich(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("enrich")
    return subprocess.run([str(exe), *args], check=True, capture_output=True, text=True, env=env)


def night(work: Path, env: dict[str, str], *flags: str) -> Night:
    """One `enrich run` of the shop in `work`, measured from outside."""
    exe = Path(sys.executable).with_name("enrich")
    command = [str(exe), "run", "--config", str(work / "enrich.yaml"), "--as-of", "2026-11-01"]
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    peak = _PeakTree(process.pid)
    out, err = process.communicate()
    wall = time.perf_counter() - started
    peak_mb = peak.stop()
    if process.returncode:
        sys.stderr.write(err[-5000:])
        raise SystemExit(f"enrich run failed ({process.returncode})")
    folder = Path(out.strip().splitlines()[-1])
    summary = json.loads((folder / "run_summary.json").read_text(encoding="utf-8"))
    calls = sum(p["client"]["calls"] for p in summary["enrichment"].values())
    return Night(
        wall=wall,
        peak_mb=peak_mb,
        rows=summary["totals"]["rows_in"],
        profiles=summary["identity"]["profiles"],
        calls=calls,
        failed=sum(sum(p["failed"].values()) for p in summary["enrichment"].values()),
        folder=folder,
        stages=summary["timings"],
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _synth(work: Path, people: int, port: int, env: dict[str, str], night_no: int = 1) -> None:
    _enrich("synth", "--people", str(people), "--out", str(work), "--seed", "21",
            "--night", str(night_no), "--provider-url", f"http://127.0.0.1:{port}",
            env=env)  # fmt: skip
    _enrich("keys", "init", "--config", str(work / "enrich.yaml"), env=env)


def _fresh_state(work: Path, keep_outputs_as: str) -> Path:
    """Forget every earlier night: state database and decision log. The output folder is
    moved aside, to `keep_outputs_as` (returned), so runs can be compared."""
    kept = work / keep_outputs_as
    (work / "out").rename(kept)
    subprocess.run(["rm", "-rf", str(work / "state" / "decisions")], check=True)
    for db in (work / "state").glob("state.db*"):
        db.unlink()
    return kept


def _pg_database() -> str | None:
    """A fresh PostgreSQL database for the state store, or None if the server is not there."""
    try:
        import psycopg  # noqa: PLC0415 - only this part needs it

        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {PG_DATABASE}")
    except Exception as exc:  # the table says why the PostgreSQL column is missing
        print(f"PostgreSQL not used: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{PG_DATABASE}"


def different_outputs(mine: Path, theirs: Path) -> list[str]:
    """The outputs of two run folders that differ (test_runners.py's comparison, at scale):
    the Parquet tables, the quarantine without its sealed payloads (fresh nonces), every CSV
    export and the persona cards."""
    import pyarrow.csv as pa_csv  # noqa: PLC0415 - only the parity check needs them
    import pyarrow.parquet as pq  # noqa: PLC0415

    differ = [
        name
        for name in ("profiles.parquet", "identity_links.parquet", "signals.parquet")
        if not pq.read_table(mine / name).equals(pq.read_table(theirs / name))
    ]
    quarantines = [
        pa_csv.read_csv(folder / "quarantine.csv").drop_columns(["sealed"])
        for folder in (mine, theirs)
    ]
    if not quarantines[0].equals(quarantines[1]):
        differ.append("quarantine.csv")
    exports = {p.relative_to(mine) for p in mine.glob("*/*.csv")}
    exports |= {p.relative_to(theirs) for p in theirs.glob("*/*.csv")}
    for name in sorted(exports):
        a, b = mine / name, theirs / name
        if not (a.is_file() and b.is_file()) or a.read_bytes() != b.read_bytes():
            differ.append(str(name))
    if (mine / "personas.json").read_bytes() != (theirs / "personas.json").read_bytes():
        differ.append("personas.json")
    return differ


def baseline(config: Path) -> tuple[int, float]:
    """The naive identifier baseline on a shop's sources, in a subprocess: rows, seconds."""
    done = subprocess.run(
        [sys.executable, __file__, "--baseline", str(config)],
        check=True,
        capture_output=True,
        text=True,
    )
    rows, seconds = done.stdout.split()
    return int(rows), float(seconds)


def _run_baseline(config_path: Path) -> None:
    from profiles.config import load_run_config  # noqa: PLC0415
    from profiles.hashing import Key, Pseudonymiser  # noqa: PLC0415
    from profiles.identifiers import process_rowwise  # noqa: PLC0415
    from profiles.ingest import read_source  # noqa: PLC0415

    config = load_run_config(config_path)
    pseudonymiser = Pseudonymiser(Key.from_secret(b"bench/nightly baseline: no secret"))
    rows, seconds = 0, 0.0
    for source in config.sources:
        for chunk in read_source(source, config.performance.chunk_rows):
            started = time.perf_counter()
            process_rowwise(chunk.frame, source, config.identifiers, pseudonymiser)
            seconds += time.perf_counter() - started
            rows += len(chunk.frame)
    print(rows, seconds)


@dataclass
class Size:
    """Every night measured at one size."""

    nights: dict[str, Night]
    baseline: tuple[int, float] | None
    parity: dict[str, list[str]]
    """Per night run again from a fresh state: the outputs that differ from the first's."""


def size(rows: int, tmp: Path, args: argparse.Namespace) -> Size:
    """Synthesise a shop of about `rows` input rows and measure its nights."""
    work = tmp / f"rows-{rows}"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    port = _free_port()
    people = max(100, round(rows / ROWS_PER_PERSON))
    _synth(work, people, port, env)
    server = subprocess.Popen(
        [sys.executable, "-m", "enrichers.testing.server", "--port", str(port),
         "--latency-ms", str(LATENCY_MS), "--world", str(work / "data" / "world.jsonl")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    nights: dict[str, Night] = {}
    parity: dict[str, list[str]] = {}
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        nights["first"] = night(work, env)
        nights["again"] = night(work, env)
        base = None if args.no_baseline else baseline(work / "enrich.yaml")
        _synth(work, people, port, env, night_no=2)
        nights["1% night"] = night(work, env)
        if rows == max(args.rows):
            # the first night again from a fresh state, on PostgreSQL and on Dask: its outputs
            # must be those of the first night
            first = nights["first"].folder
            first = _fresh_state(work, "out-first") / first.name
            url = None if args.no_pg else _pg_database()
            others: list[tuple[str, dict[str, str], tuple[str, ...]]] = []
            if url is not None:
                others.append(("first, PostgreSQL", {**env, "ENRICH_STATE_URL": url}, ()))
            if args.dask:
                dask = ("--runner", "dask-local", "--workers", "2")
                others.append(("first, dask-local 2", env, dask))
            _synth(work, people, port, env)  # the first night's data again
            for label, night_env, flags in others:
                nights[label] = night(work, night_env, *flags)
                parity[label] = different_outputs(first, nights[label].folder)
                _fresh_state(work, f"out-{len(parity)}")
    finally:
        server.terminate()
        server.wait(timeout=10)
    return Size(nights, base, parity)


def _table(result: Size) -> Table:
    first = result.nights["first"]
    table = Table(title=f"{first.rows:,} input rows, {first.profiles:,} profiles", show_edge=False)
    table.add_column("stage (wall s)")
    for name in result.nights:
        table.add_column(name, justify="right")
    stages = list(dict.fromkeys(s for n in result.nights.values() for s in n.stages))
    nights = list(result.nights.values())
    lines = [(stage, [f"{n.stages.get(stage, 0.0):.1f}" for n in nights]) for stage in stages]
    lines += [
        ("rest (start-up, outputs, commit)", [f"{n.rest:.1f}" for n in nights]),
        ("whole run (wall s)", [f"{n.wall:.1f}" for n in nights]),
        ("rows/s", [f"{n.rows / n.wall:,.0f}" for n in nights]),
        ("provider calls", [f"{n.calls:,}" for n in nights]),
        ("failed lookups", [f"{n.failed:,}" for n in nights]),
        ("peak RSS, process tree (MB)", [f"{n.peak_mb:,.0f}" for n in nights]),
    ]
    for label, cells in lines:
        table.add_row(label, *cells)
    if result.parity:
        table.add_row(
            "outputs as the first night's",
            *(
                "" if name not in result.parity else
                "identical" if not result.parity[name] else
                "DIFFER: " + ", ".join(result.parity[name])
                for name in result.nights
            ),
        )  # fmt: skip
    if result.baseline is not None:
        rows, seconds = result.baseline
        table.add_row(
            f"naive identifier baseline: {rows:,} rows",
            f"{seconds:.1f} s ({rows / seconds:,.0f} rows/s)",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--no-dask", dest="dask", action="store_false", help="skip the dask-local night"
    )
    parser.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL night")
    parser.add_argument("--no-baseline", action="store_true", help="skip the naive baseline")
    parser.add_argument("--baseline", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline is not None:
        _run_baseline(args.baseline)
        return
    console = Console(width=None if sys.stdout.isatty() else 140)  # a log keeps the table whole
    results: dict[int, Size] = {}
    with tempfile.TemporaryDirectory(prefix="nightly-bench-") as tmp:
        for rows in sorted(args.rows):
            results[rows] = size(rows, Path(tmp), args)
            console.print(_table(results[rows]))
            first, again, changed = (
                results[rows].nights[k] for k in ("first", "again", "1% night")
            )
            console.print(
                f"second night: {again.wall / first.wall:.0%} of the first's time "
                f"(target <= 70 %), {again.calls:,} provider calls (target 0); "
                f"1% night: {changed.wall / first.wall:.0%} (target <= 80 %)\n"
            )
    largest = results[max(results)].nights["first"]
    console.print(
        f"largest first night: {largest.wall:.1f} s (target < 150 s at 1M rows), "
        f"peak {largest.peak_mb:,.0f} MB (target < 4,096 MB)"
    )
    for small, large in itertools.pairwise(sorted(results)):
        ratio = results[large].nights["first"].wall / results[small].nights["first"].wall
        console.print(
            f"time ratio {large:,} / {small:,} rows: {ratio:.1f} (linear: {large / small:.0f})"
        )


if __name__ == "__main__":
    main()
