"""The whole nightly run at 10k, 100k and 1M input rows: wall time per stage, rows/s, peak
memory and provider calls, a second night on unchanged data, with the local provider server at
20 ms latency.

For each size, `enrich synth` writes a shop of about that many input rows (all five sources,
about 10.6 rows per person) configured for the local provider server, which runs in its own
process with `--latency-ms 20`. `enrich run` runs the full flow (ingest, identifiers, identity,
gates, behaviour, providers, fusion, personas, exports, decision log) in a fresh subprocess,
twice on the same data. Stage times are the gaps between the tasks' "Finished" log lines
(tasks run one after another); peak RSS is the largest of the run's processes
(`RUSAGE_CHILDREN`). Targets from the scale issue: 1M rows under 150 s and 4 GB, time growing
no worse than linearly from 100k to 1M, the second night without provider calls and at most
70 % of the first's time.

Run: `.venv/bin/python bench/nightly.py [--rows 10000 100000 1000000]`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROWS_PER_PERSON = 10.6
_FINISHED = re.compile(
    r"^(\d\d:\d\d:\d\d\.\d+) \| INFO .*Task run '([a-z-]+)-[0-9a-f]+' - Finished"
)
_START = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) \| INFO .*Flow run '.*' - run \S+: \d+ source")


@dataclass
class Night:
    wall: float
    rows: int
    profiles: int
    calls: int
    stages: dict[str, float] = field(default_factory=dict)


def _enrich(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("enrich")
    return subprocess.run([str(exe), *args], check=True, capture_output=True, text=True, env=env)


def _stages(log: str) -> dict[str, float]:
    times: list[tuple[str, datetime]] = []
    for line in log.splitlines():
        if m := _START.match(line):
            times.append(("start", datetime.strptime(m.group(1), "%H:%M:%S.%f")))
        elif m := _FINISHED.match(line):
            times.append((m.group(2), datetime.strptime(m.group(1), "%H:%M:%S.%f")))
    out: dict[str, float] = {}
    for (_, before), (name, after) in itertools.pairwise(times):
        out[name] = out.get(name, 0.0) + (after - before).total_seconds()
    return out


def night(work: Path, env: dict[str, str]) -> Night:
    started = time.perf_counter()
    done = _enrich("run", "--config", str(work / "enrich.yaml"), "--as-of", "2026-11-01", env=env)
    wall = time.perf_counter() - started
    folder = Path(done.stdout.strip().splitlines()[-1])
    summary = json.loads((folder / "run_summary.json").read_text(encoding="utf-8"))
    calls = sum(p["client"]["calls"] for p in summary["enrichment"].values())
    return Night(
        wall=wall,
        rows=summary["totals"]["rows_in"],
        profiles=summary["identity"]["profiles"],
        calls=calls,
        stages=_stages(done.stderr + done.stdout),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def size(rows: int, tmp: Path) -> tuple[Night, Night]:
    work = tmp / f"rows-{rows}"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    port = _free_port()
    people = max(100, round(rows / ROWS_PER_PERSON))
    _enrich("synth", "--people", str(people), "--out", str(work), "--seed", "21",
            "--provider-url", f"http://127.0.0.1:{port}", env=env)  # fmt: skip
    _enrich("keys", "init", "--config", str(work / "enrich.yaml"), env=env)
    server = subprocess.Popen(
        [sys.executable, "-m", "enrichers.testing.server", "--port", str(port),
         "--latency-ms", "20", "--world", str(work / "data" / "world.jsonl")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        return night(work, env), night(work, env)
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args()
    console = Console()
    results: dict[int, tuple[Night, Night]] = {}
    with tempfile.TemporaryDirectory(prefix="nightly-bench-") as tmp:
        for rows in args.rows:
            results[rows] = size(rows, Path(tmp))
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            first, second = results[rows]
            table = Table(title=f"{first.rows:,} input rows, {first.profiles:,} profiles",
                          show_edge=False)  # fmt: skip
            for column in ("stage", "first night s", "second night s"):
                table.add_column(column, justify="left" if column == "stage" else "right")
            for stage in first.stages:
                table.add_row(stage, f"{first.stages[stage]:.1f}",
                              f"{second.stages.get(stage, 0.0):.1f}")  # fmt: skip
            table.add_row("whole run (wall)", f"{first.wall:.1f}", f"{second.wall:.1f}")
            table.add_row("rows/s", f"{first.rows / first.wall:,.0f}",
                          f"{second.rows / second.wall:,.0f}")  # fmt: skip
            table.add_row("provider calls", f"{first.calls:,}", f"{second.calls:,}")
            table.add_row("peak RSS MB (largest process so far)", f"{peak:,.0f}", "")
            console.print(table)
            console.print(
                f"second night: {second.wall / first.wall:.0%} of the first's time "
                f"(target <= 70 %), {second.calls:,} provider calls (target 0)"
            )
    sizes = sorted(results)
    for small, large in itertools.pairwise(sizes):
        ratio = results[large][0].wall / results[small][0].wall
        console.print(
            f"time ratio {large:,} / {small:,} rows: {ratio:.1f} (linear: {large / small:.0f})"
        )


if __name__ == "__main__":
    main()
