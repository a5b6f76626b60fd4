"""Benchmark of provider lookups against the local provider server at 20 ms latency.

The server runs as its own process (`python -m enrichers.testing.server`), so it does not
share the client's interpreter; the client side is exactly what the nightly flow runs: the
shipped plugins built by the registry from `enrichers.testing.provider_entries`, the
ProviderClient over its default (aiohttp) transport, and `enrichers.stage.lookup_all`.
Scenarios, one row each:

* single    N ids through the single-lookup endpoint (`sim_person`), concurrency 10 and 50;
* gravatar  N ids through the Gravatar-shaped endpoint (`sim_gravatar`), concurrency 50;
* batch     M ids through the batch endpoint (100 ids per request), concurrency 10 and 50;
* faults    the batch scenario with 5 % injected 5xx and a 429 storm with Retry-After:
            every id must still end matched or no_match (zero lost, zero failed);
* limited   single lookups against a server that allows R requests/s, the client set to
            the same R: the share of the limit used (target: at least 80 %).

Columns: concurrency, ids/s, HTTP calls, retries, 429s, p50/p99 attempt latency, client CPU
per lookup (the whole `lookup_all`: requests, mapping, frames), server CPU per request (read
from /proc while the lookups ran), lookups not accounted for ("lost") and lookups that ended
failed. CPU, not wall time, is the number to compare on a shared machine. Run it with
`.venv/bin/python bench/providers.py` (`--ids 100000 --single-ids 20000 --limit 200`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from rich.console import Console
from rich.table import Table

from enrichers.base import BATCH_COLUMNS, LookupStatus
from enrichers.http.client import ProviderClient
from enrichers.registry import build, environ_secrets, parse_settings
from enrichers.stage import lookup_all
from enrichers.testing import provider_entries

LATENCY_MS = 20.0


@dataclass(frozen=True)
class Row:
    scenario: str
    concurrency: int
    ids: int
    seconds: float
    calls: int
    retries: int
    throttled: int
    p50_ms: float
    p99_ms: float
    cpu_seconds: float
    server_cpu_seconds: float
    server_requests: int
    lost: int
    failed: int
    note: str = ""


@dataclass(frozen=True)
class Server:
    """A running server process: its URL and process id."""

    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU the server process used so far (user + system; NaN where /proc is missing)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def requests(self) -> int:
        """Provider requests the server received so far."""
        stats: dict[str, Any] = httpx.get(f"{self.url}/_admin/stats", timeout=10).json()
        return int(stats["requests"])


@contextmanager
def server(**knobs: Any) -> Iterator[Server]:
    """The local provider server in its own process."""
    with tempfile.TemporaryDirectory() as tmp:
        url_file = Path(tmp) / "url"
        args = [sys.executable, "-m", "enrichers.testing.server", "--port", "0"]
        args += ["--url-file", str(url_file), "--latency-ms", str(LATENCY_MS)]
        for name, value in knobs.items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not (url_file.is_file() and url_file.read_text().strip()):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the provider server did not start")
                time.sleep(0.05)
            yield Server(url_file.read_text().strip(), process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)


def _ids(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "subject": [f"P{i:07d}" for i in range(n)],
            "form": "email_sha256",
            "value": [secrets.token_hex(32) for _ in range(n)],
        },
        columns=list(BATCH_COLUMNS),
    )


def _settings(base_url: str, name: str, **overrides: Any) -> Any:
    entries = [e for e in provider_entries(base_url, overrides=overrides) if e["name"] == name]
    [settings] = parse_settings(entries, path=Path("bench.yaml"))
    return settings


def _lookups(scenario: str, at: Server, name: str, n: int, **overrides: Any) -> Row:
    settings = _settings(at.url, name, **overrides)
    provider = build(settings, environ_secrets)
    requests = _ids(n)

    async def go() -> tuple[Any, Any]:
        async with ProviderClient(settings, billing=provider.capabilities.billing) as client:
            result = await lookup_all(provider, client, requests)
            return result, client.stats

    server_cpu, server_requests = at.cpu_seconds(), at.requests()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    result, stats = asyncio.run(go())
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu = at.cpu_seconds() - server_cpu
    statuses = result.outcomes["status"].value_counts()
    answered = int(statuses.get(str(LookupStatus.MATCHED), 0)) + int(
        statuses.get(str(LookupStatus.NO_MATCH), 0)
    )
    failed = int(statuses.get(str(LookupStatus.FAILED), 0))
    return Row(
        scenario=scenario,
        concurrency=settings.concurrency,
        ids=n,
        seconds=seconds,
        calls=stats.attempts,
        retries=stats.retries,
        throttled=stats.throttled,
        p50_ms=stats.p50 * 1000,
        p99_ms=stats.p99 * 1000,
        cpu_seconds=(after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime),
        server_cpu_seconds=server_cpu,
        server_requests=at.requests() - server_requests,
        lost=n - answered - failed,
        failed=failed,
    )


def _server_stats(base_url: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{base_url}/_admin/stats", timeout=10).json()
    return stats


# Rate limits far above what the server can answer: these scenarios measure cost, not a limit.
_UNLIMITED: dict[str, Any] = {"rate_limit": {"per_second": 100_000, "burst": 1000}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=100_000, help="ids for the batch scenarios")
    parser.add_argument("--single-ids", type=int, default=20_000, help="ids, single lookups")
    parser.add_argument("--limit", type=float, default=200.0, help="server limit, requests/s")
    parser.add_argument("--limited-seconds", type=float, default=30.0)
    args = parser.parse_args()
    console = Console(width=200)
    rows: list[Row] = []
    plain = [
        ("single", "sim_person", args.single_ids, 10),
        ("single", "sim_person", args.single_ids, 50),
        ("gravatar", "sim_gravatar", args.single_ids, 50),
        ("batch", "sim_segments", args.ids, 10),
        ("batch", "sim_segments", args.ids, 50),
    ]
    for scenario, name, n, concurrency in plain:
        with console.status(f"{scenario} at {concurrency} ..."), server() as at:
            rows.append(_lookups(scenario, at, name, n, concurrency=concurrency, **_UNLIMITED))
    faults = {"error_rate": 0.05, "storm_requests": 200, "storm_retry_after": 0.2}
    with console.status("faults ..."), server(**faults) as at:
        row = _lookups(
            "faults",
            at,
            "sim_segments",
            args.ids,
            retries=6,
            max_backoff_seconds=10,
            concurrency=10,
        )
        seen = _server_stats(at.url)
        rows.append(dataclasses.replace(row, note=f"server: {_describe(seen)}"))
    n_limited = int(args.limit * args.limited_seconds)
    limit = {"rate_limit": args.limit}
    with console.status("limited ..."), server(**limit) as at:
        row = _lookups(
            "limited",
            at,
            "sim_person",
            n_limited,
            rate_limit={"per_second": args.limit, "burst": max(1, int(args.limit // 10))},
            concurrency=32,
        )
        used = row.calls / row.seconds / args.limit
        rows.append(dataclasses.replace(row, note=f"{used:.0%} of {args.limit:g} req/s used"))
    console.print(_table(rows))


def _table(rows: list[Row]) -> Table:
    table = Table(title=f"Provider lookups, local server at {LATENCY_MS:g} ms latency")
    columns = (
        "scenario", "conc", "ids", "s", "ids/s", "calls", "retries", "429s", "p50 ms", "p99 ms",
        "client CPU ms/id", "server CPU ms/req", "lost", "failed", "note",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("scenario", "note") else "right")
    for r in rows:
        table.add_row(
            r.scenario,
            str(r.concurrency),
            f"{r.ids:,}",
            f"{r.seconds:.1f}",
            f"{r.ids / r.seconds:,.0f}",
            f"{r.calls:,}",
            f"{r.retries:,}",
            f"{r.throttled:,}",
            f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}",
            f"{1000 * r.cpu_seconds / r.ids:.3f}",
            f"{1000 * r.server_cpu_seconds / max(1, r.server_requests):.3f}",
            f"{r.lost:,}",
            f"{r.failed:,}",
            r.note,
        )
    return table


def _describe(stats: dict[str, Any]) -> str:
    return f"{stats['errors']:,} 5xx and {stats['storm']:,} storm 429s sent"


if __name__ == "__main__":
    main()
