"""Provider soak: lookups for minutes against the local provider server, faults switching.

The server runs in its own process (`python -m enrichers.testing.server`, on 127.0.0.1 only,
observing a world that `enrich synth` wrote), so that the client's memory is measured alone.
The client side is what the nightly flow runs (`flows.enrich.look_up`): the shipped plugins
built by the registry from `enrichers.testing.provider_entries` (`sim_person`: single
http_json, `sim_segments`: batch http_json, `sim_gravatar`: gravatar), one long-lived
ProviderClient each over its default transport, and `enrichers.stage.lookup_all`, the three
providers at once in one event loop.

Every `--round-seconds` a round looks up `--subjects` people per single-lookup provider and
five times as many through the batch provider, drawn from the world (a tenth of them by a
hash the world does not know: no match). After a clean warm-up the faults switch every
phase, through the server's knobs, in `--cycles` cycles of:

    clean · errors (503) · timeouts (late answers) · hangs (no answer) · malformed (cut JSON)
    · storm (429 + Retry-After each round) · rate_limit (server limit, 429 + X-RateLimit-*)
    · slow (latency) · outage (every request 503: the breaker opens) · recovery · mixed

Every round checks that every subject asked for ends in exactly one outcome (matched,
no_match, or failed with a reason): a subject without one is "lost", a second outcome or
an outcome for a subject not asked is counted too, and a `lookup_all` that raised or took
longer than ROUND_CAP_SECONDS loses its whole batch. Outcomes are counted by status and
reason per phase, the client's counters (attempts, retries, 429s, timeouts, breaker trips,
refusals while open) and attempt latency p50/p99 from its stats, the server's injected
faults from `/_admin/stats` (reset after every round, so that the server's log of received
identifiers, kept for tests, does not grow the server's memory).

Memory: the RSS of this process (the client) and of the server process, every
`--sample-seconds`; start is the first sample after the warm-up, the slope a least-squares
fit over the second half of the soak. The verdict is "flat" below GROWTH_LIMIT_MB_PER_MIN
(see there for why 1 MB/min). Bounded: each client at most CONCURRENCY requests in flight
and RATE requests/s, short timeouts, every round capped in time, the soak stops after
`--minutes` (each phase gets at least one round), and nothing but 127.0.0.1 is bound or
called. Exit status 1 if a lookup was lost or the client's memory grows.

Run: `.venv/bin/python bench/soak.py` (10 minutes); `--minutes 1` checks that it works.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import numpy as np
import pandas as pd
import psutil
from rich.console import Console
from rich.table import Table

from enrichers.base import BATCH_COLUMNS, SUBJECT, LookupStatus, Provider, ProviderSettings
from enrichers.http.client import ProviderClient
from enrichers.http.stats import ClientStats, quantile
from enrichers.registry import build, environ_secrets, parse_settings
from enrichers.stage import LookupRun, lookup_all
from enrichers.testing import NAMES, Endpoint, provider_entries

LOOPBACK: Final = "127.0.0.1"
PERSON, SEGMENTS, GRAVATAR = (NAMES[e] for e in Endpoint)

CONCURRENCY: Final = 16
RATE: Final = 300.0
CLIENT_SETTINGS: Final[Mapping[str, Any]] = {
    "concurrency": CONCURRENCY,
    "rate_limit": {"per_second": RATE, "burst": 30},
    "timeout_seconds": 1.0,
    "connect_timeout_seconds": 1.0,
    "retries": 2,
    "backoff_seconds": 0.05,
    "max_backoff_seconds": 2.0,
    # A cool-down shorter than a phase, so that the outage phase shows half-open trials and
    # the recovery phase the breaker closing again.
    "breaker": {"failures": 5, "cooldown_seconds": 5.0},
}
"""Each provider's client: bounded (16 in flight, 300 requests/s, 3 clients at most 900/s in
all) and quick to give up (1 s timeouts, 2 retries), so that faults cost seconds, not
minutes."""

BASE_KNOBS: Final[Mapping[str, Any]] = {
    "latency_ms": 20.0,
    "jitter_ms": 5.0,
    "error_rate": 0.0,
    "timeout_rate": 0.0,
    "timeout_seconds": 2.0,  # a late answer comes after the client's 1 s timeout
    "hang_rate": 0.0,
    "malformed_rate": 0.0,
    "rate_limit": None,
    "storm_requests": 0,
    "storm_seconds": 0.0,
    "storm_retry_after": 0.5,
}
"""The server's knobs outside a fault: 20 ms latency (as the nightly benchmark), no faults.
Every phase sets these and its own on top, so no fault outlives its phase."""

BATCH_FACTOR: Final = 5
"""The batch provider gets this many times `--subjects` per round (100 ids per request)."""
UNKNOWN_SHARE: Final = 0.1
"""Share of lookups by a hash the world does not know (a real provider has no record)."""
PHONE_SHARE: Final = 0.3
"""Share of the known people looked up by phone hash where the provider takes one."""
ROUND_CAP_SECONDS: Final = 120.0
"""A provider's `lookup_all` in one round may take this long; beyond, it is stuck (its
lookups are lost). Timeouts and retries bound a round to well under 30 s."""
GROWTH_LIMIT_MB_PER_MIN: Final = 1.0
"""Verdict threshold of the RSS slope after the warm-up. Below it, the RSS of a Python
process doing steady work wanders by about a megabyte as allocator arenas fill and empty,
so a smaller slope cannot be told from noise in ten minutes; and at this soak's ~30,000
lookups a minute 1 MB/min is ~35 bytes per lookup, ~5 MB over a 1M-row night's 145,000
lookups: nothing against the 4 GB ceiling. A leak worth fixing (a retained response,
frame or task per lookup, kilobytes each) shows as tens of MB/min."""


MIN_FIT_MINUTES: Final = 2.0
"""A second half shorter than this gets no memory verdict (`--minutes 1` only checks that
the soak works)."""


@dataclass(frozen=True)
class Phase:
    """A stretch of the soak with one set of faults."""

    name: str
    knobs: Mapping[str, Any]
    """Set on the server (over BASE_KNOBS) when the phase starts."""
    what: str
    every_round: Mapping[str, Any] = field(default_factory=dict)
    """Set again before every round of the phase (a storm is armed when set)."""


WARM_UP: Final = Phase("warm-up", {}, "no faults; not in the memory figures")
PHASES: Final[tuple[Phase, ...]] = (
    Phase("clean", {}, "20±5 ms, no faults"),
    Phase("errors", {"error_rate": 0.2}, "20 % answered 503"),
    Phase("timeouts", {"timeout_rate": 0.05}, "5 % answered after 2 s (client gives up at 1 s)"),
    Phase("hangs", {"hang_rate": 0.02}, "2 % never answered"),
    Phase("malformed", {"malformed_rate": 0.05}, "5 % of bodies cut in half"),
    # A storm by time, and by count after it: a client answers a 429 with Retry-After by
    # pausing, then sending one request per pause, so a storm of N requests lasts about
    # N / (clients / Retry-After) seconds (300 requests took 50 s): kept small here.
    Phase(
        "storm",
        {},
        "every round: 429 for 2 s, then to the next 12 requests; Retry-After 0.5 s",
        every_round={"storm_seconds": 2.0, "storm_requests": 12},
    ),
    Phase("rate_limit", {"rate_limit": 150.0}, "server allows 150 requests/s in all"),
    Phase("slow", {"latency_ms": 150.0, "jitter_ms": 100.0}, "150±100 ms"),
    Phase("outage", {"error_rate": 1.0}, "every request 503"),
    Phase("recovery", {}, "no faults, after the outage"),
    Phase(
        "mixed",
        {
            "error_rate": 0.05,
            "timeout_rate": 0.01,
            "hang_rate": 0.005,
            "malformed_rate": 0.01,
            "jitter_ms": 10.0,
        },
        "5 % 503, 1 % late, 0.5 % hang, 1 % cut, 20±10 ms",
    ),
)

_CLIENT_COUNTERS: Final = (
    "attempts",
    "retries",
    "throttled",
    "timeouts",
    "connect_errors",
    "breaker_trips",
    "circuit_rejections",
)
_SERVER_COUNTERS: Final = (
    "requests",
    "errors",
    "storm",
    "rate_limited",
    "timeouts",
    "hangs",
    "malformed",
)
_KNOWN_STATUSES: Final = (
    str(LookupStatus.MATCHED),
    str(LookupStatus.NO_MATCH),
    str(LookupStatus.FAILED),
)


# --- the server -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """The provider server process: its URL, process, and an admin connection."""

    url: str
    process: psutil.Process
    admin: httpx.Client

    def set_knobs(self, knobs: Mapping[str, Any]) -> None:
        """Change the server's knobs (a partial object, as `POST /_admin/knobs` takes)."""
        self.admin.post("/_admin/knobs", json=dict(knobs)).raise_for_status()

    def take_stats(self) -> tuple[Counter[str], int]:
        """The fault counters since the last call, and the requests it holds (hung or late):
        reads `/_admin/stats`, then resets the server's counters, log and attempt history."""
        stats: dict[str, Any] = self.admin.get("/_admin/stats").json()
        self.admin.post("/_admin/reset").raise_for_status()
        return Counter({k: int(stats[k]) for k in _SERVER_COUNTERS}), int(stats["in_flight"])


@contextmanager
def provider_server(world: Path, logs: Path) -> Iterator[Server]:
    """The local provider server in its own process, on 127.0.0.1, stopped on exit."""
    url_file = logs / "server.url"
    args = [sys.executable, "-m", "enrichers.testing.server", "--host", LOOPBACK, "--port", "0"]
    args += ["--url-file", str(url_file), "--world", str(world)]
    with (logs / "server.log").open("w") as log:
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while not (url_file.is_file() and url_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                detail = (logs / "server.log").read_text()[-2000:]
                raise RuntimeError(f"the provider server did not start:\n{detail}")
            time.sleep(0.05)
        url = url_file.read_text().strip()
        if urlsplit(url).hostname != LOOPBACK:  # never load anything but this machine
            raise RuntimeError(f"the provider server is not on {LOOPBACK}: {url}")
        # trust_env=False: no proxy from the environment between us and the loopback.
        with httpx.Client(base_url=url, timeout=10, trust_env=False) as admin:
            yield Server(url, psutil.Process(process.pid), admin)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the lookups ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """One person of the world, as the flow would look them up."""

    subject: str
    email_sha256: str
    phone_sha256: str | None


def load_people(world: Path) -> list[Person]:
    """The world's people with an e-mail hash (all three providers take one)."""
    people = []
    with world.open(encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            if doc["email_sha256"]:
                phones = doc["phone_sha256"]
                people.append(
                    Person(doc["person_id"], doc["email_sha256"][0], phones[0] if phones else None)
                )
    return people


def draw(rng: random.Random, people: Sequence[Person], n: int, *, phones: bool) -> pd.DataFrame:
    """A batch of `n` distinct subjects (BATCH_COLUMNS), as the stage hands it a provider."""
    rows = []
    for person in rng.sample(people, min(n, len(people))):
        if rng.random() < UNKNOWN_SHARE:
            rows.append((person.subject, "email_sha256", f"{rng.getrandbits(256):064x}"))
        elif phones and person.phone_sha256 is not None and rng.random() < PHONE_SHARE:
            rows.append((person.subject, "phone_sha256", person.phone_sha256))
        else:
            rows.append((person.subject, "email_sha256", person.email_sha256))
    return pd.DataFrame(rows, columns=list(BATCH_COLUMNS))


@dataclass
class Tally:
    """What became of the lookups of some rounds."""

    rounds: int = 0
    busy_seconds: float = 0.0
    """Wall seconds the rounds took (the providers' rounds run at once)."""
    lookups: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    """Failed lookups per reason."""
    lost: int = 0
    """Subjects asked for that got no outcome."""
    extra: int = 0
    """Second outcomes of a subject, and outcomes of subjects not asked for."""
    unexplained: int = 0
    """Outcomes with an unknown status, failed ones without a reason, and disagreements
    between the outcomes and `LookupRun.failed_reasons`."""
    raised: Counter[str] = field(default_factory=Counter)
    """`lookup_all` calls that raised (by exception class) or got stuck (their lookups are
    lost), or whose progress reports stopped short of the batch."""
    client: Counter[str] = field(default_factory=Counter)
    server: Counter[str] = field(default_factory=Counter)

    @property
    def unaccounted(self) -> int:
        """Lookups that did not end in exactly one well-formed outcome."""
        return self.lost + self.extra + self.unexplained

    def add(self, other: Tally) -> None:
        """Add `other`'s counts to these."""
        self.rounds += other.rounds
        self.busy_seconds += other.busy_seconds
        self.lookups += other.lookups
        self.statuses.update(other.statuses)
        self.reasons.update(other.reasons)
        self.lost += other.lost
        self.extra += other.extra
        self.unexplained += other.unexplained
        self.raised.update(other.raised)
        self.client.update(other.client)
        self.server.update(other.server)


def account(asked: pd.DataFrame, looked_up: tuple[LookupRun | str, bool], tally: Tally) -> None:
    """Check and count one `lookup_all` (see `look_up`): each subject asked for has exactly
    one outcome, and the progress reports ended at all of them."""
    run, progressed = looked_up
    tally.lookups += len(asked)
    if isinstance(run, str):
        tally.raised[run] += 1
        tally.lost += len(asked)
        return
    outcomes = run.outcomes
    subjects = outcomes[SUBJECT]
    wanted, seen = set(asked[SUBJECT]), set(subjects)
    tally.lost += len(wanted - seen)
    tally.extra += int(subjects.duplicated().sum()) + int((~subjects.isin(wanted)).sum())
    status = outcomes["status"].astype(str)
    tally.statuses.update(Counter(status.tolist()))
    failed = outcomes.loc[status == str(LookupStatus.FAILED), "reason"]
    reasonless = failed.isna() | (failed.astype(str) == "")
    tally.reasons.update(Counter(failed[~reasonless].astype(str).tolist()))
    tally.unexplained += int((~status.isin(_KNOWN_STATUSES)).sum()) + int(reasonless.sum())
    tally.unexplained += abs(sum(run.failed_reasons.values()) - len(failed))
    if not progressed:
        tally.raised["progress short of the batch"] += 1


async def look_up(
    provider: Provider, client: ProviderClient, batch: pd.DataFrame
) -> tuple[LookupRun | str, bool]:
    """`lookup_all` with a progress callback, as the flow calls it (or the class of what it
    raised, or "stuck" past ROUND_CAP_SECONDS), and whether its last progress report was
    (all, all)."""
    reported: list[tuple[int, int]] = [(0, len(batch))]

    def progress(done: int, total: int) -> None:
        reported.append((done, total))

    try:
        run = await asyncio.wait_for(
            lookup_all(provider, client, batch, progress=progress), ROUND_CAP_SECONDS
        )
    except TimeoutError:
        return "stuck", False
    except Exception as exc:  # counted as lost lookups, not allowed to end the soak
        return type(exc).__name__, False
    return run, reported[-1] == (len(batch), len(batch))


@dataclass(frozen=True)
class Mark:
    """A client's counters and number of latencies at one moment."""

    counters: Counter[str]
    latencies: int

    @classmethod
    def of(cls, stats: ClientStats) -> Mark:
        """The mark of a stats snapshot."""
        counters = Counter({name: int(getattr(stats, name)) for name in _CLIENT_COUNTERS})
        return cls(counters, len(stats.latencies))


# --- memory ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """Both processes at one moment."""

    at: float
    """`time.monotonic()` when taken."""
    client_mb: float
    server_mb: float
    client_fds: int
    load: float
    """The machine's 1-minute load average."""


class Sampler:
    """Samples RSS (MB), open files and load every `every` seconds in a thread."""

    def __init__(self, server: psutil.Process, every: float) -> None:
        self.samples: list[Sample] = []
        self._client = psutil.Process(os.getpid())
        self._server = server
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(self._sample())

    def _run(self) -> None:
        while True:
            self.samples.append(self._sample())
            if self._stop.wait(self._every):
                return

    def _sample(self) -> Sample:
        mb = 1024.0 * 1024.0
        return Sample(
            at=time.monotonic(),
            client_mb=self._client.memory_info().rss / mb,
            server_mb=self._server.memory_info().rss / mb,
            client_fds=self._client.num_fds(),
            load=os.getloadavg()[0],
        )


@dataclass(frozen=True)
class Growth:
    """RSS after the warm-up: start, mid, end, peak, and the slope over the second half."""

    start: float
    mid: float
    end: float
    peak: float
    slope: float
    """MB per minute, least squares over the second half."""
    fitted_minutes: float
    """How long the second half is."""

    @property
    def verdict(self) -> str | None:
        """The verdict, "flat" (slope under GROWTH_LIMIT_MB_PER_MIN) or "GROWS"; None when the
        second half is shorter than MIN_FIT_MINUTES, too short to tell a slope from noise."""
        if self.fitted_minutes < MIN_FIT_MINUTES or math.isnan(self.slope):
            return None
        return "flat" if self.slope < GROWTH_LIMIT_MB_PER_MIN else "GROWS"


def growth(times: Sequence[float], values: Sequence[float], since: float) -> Growth:
    """The Growth of `values` sampled at `times` (seconds), counting from time `since`."""
    t = np.asarray(times)
    v = np.asarray(values)
    keep = t >= since
    t, v = t[keep], v[keep]
    middle = (t[0] + t[-1]) / 2
    half = t >= middle
    slope = float(np.polyfit(t[half] / 60.0, v[half], 1)[0]) if half.sum() >= 3 else math.nan
    return Growth(
        start=float(v[0]),
        mid=float(v[int(np.argmin(np.abs(t - middle)))]),
        end=float(v[-1]),
        peak=float(v.max()),
        slope=slope,
        fitted_minutes=float(t[-1] - middle) / 60,
    )


# --- the soak -------------------------------------------------------------------------------


@dataclass
class PhaseRun:
    """One phase as it ran."""

    phase: Phase
    cycle: int
    seconds: float = 0.0
    tally: Tally = field(default_factory=Tally)
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    breakers: dict[str, str] = field(default_factory=dict)


@dataclass
class Soak:
    """Everything the soak measured."""

    phases: list[PhaseRun] = field(default_factory=list)
    providers: dict[str, Tally] = field(default_factory=dict)
    stats: dict[str, ClientStats] = field(default_factory=dict)
    warm_up_seconds: float = 0.0
    measured_from: float = 0.0
    """`time.monotonic()` when the warm-up ended."""
    seconds: float = 0.0
    max_tasks: int = 0
    """Most asyncio tasks left over after a round (0: every request's task ended)."""
    held_requests: int = 0
    """Most requests the server held (hung or late) at the end of a round."""
    client_cpu: float = 0.0
    server_cpu: float = 0.0


def plan(minutes: float, cycles: int) -> tuple[float, list[tuple[Phase, int, float]]]:
    """(warm-up seconds, [(phase, cycle, end in seconds since the start)])."""
    total = minutes * 60.0
    warm_up = min(30.0, total / 10)
    each = (total - warm_up) / (cycles * len(PHASES))
    ends = []
    for cycle in range(cycles):
        for i, phase in enumerate(PHASES):
            ends.append((phase, cycle + 1, warm_up + (cycle * len(PHASES) + i + 1) * each))
    return warm_up, [(WARM_UP, 0, warm_up), *ends]


@dataclass
class Fleet:
    """The three providers and their long-lived clients, as the nightly flow holds them."""

    providers: list[Provider]
    clients: list[ProviderClient]
    sizes: Mapping[str, int]
    """Subjects per round, per provider."""
    rng: random.Random
    marks: dict[str, Mark] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.marks = {c.name: Mark.of(c.stats) for c in self.clients}

    async def round(self, people: Sequence[Person], run: PhaseRun, out: Soak) -> None:
        """One round: every provider's batch at once through `lookup_all`, each accounted."""
        start = time.monotonic()
        batches = [
            draw(self.rng, people, self.sizes[p.name], phones=p.name != GRAVATAR)
            for p in self.providers
        ]
        triples = zip(self.providers, self.clients, batches, strict=True)
        results = await asyncio.gather(*(look_up(p, c, b) for p, c, b in triples))
        run.tally.rounds += 1
        run.tally.busy_seconds += time.monotonic() - start
        for provider, batch, result in zip(self.providers, batches, results, strict=True):
            mine = Tally()
            account(batch, result, mine)
            run.tally.add(mine)
            out.providers[provider.name].add(mine)
        out.max_tasks = max(out.max_tasks, len(asyncio.all_tasks()) - 1)

    def close_phase(self, run: PhaseRun, out: Soak) -> None:
        """The clients' counters and attempt latencies over the phase, and their breakers."""
        latencies: list[float] = []
        for client in self.clients:
            stats = client.stats
            before, after = self.marks[client.name], Mark.of(stats)
            run.tally.client.update(after.counters - before.counters)
            out.providers[client.name].client.update(after.counters - before.counters)
            latencies.extend(stats.latencies[before.latencies :])
            self.marks[client.name] = after
            run.breakers[client.name] = str(client.breaker_state)
        run.p50_ms = quantile(latencies, 0.5) * 1000
        run.p99_ms = quantile(latencies, 0.99) * 1000


async def soak(
    server: Server, people: Sequence[Person], args: argparse.Namespace, out: Soak
) -> None:
    """Run the plan's phases and rounds, filling `out`."""
    entries = provider_entries(server.url, overrides=CLIENT_SETTINGS)
    settings: list[ProviderSettings] = parse_settings(entries, path=Path("soak.yaml"))
    providers = [build(s, environ_secrets) for s in settings]
    sizes = {PERSON: args.subjects, GRAVATAR: args.subjects, SEGMENTS: BATCH_FACTOR * args.subjects}
    warm_up, schedule = plan(args.minutes, args.cycles)
    out.warm_up_seconds = warm_up
    out.providers = {p.name: Tally() for p in providers}
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(ProviderClient(s, billing=p.capabilities.billing))
            for s, p in zip(settings, providers, strict=True)
        ]
        fleet = Fleet(providers, clients, sizes, random.Random(args.seed))
        start = time.monotonic()
        for phase, cycle, end in schedule:
            run, began = PhaseRun(phase, cycle), time.monotonic()
            server.set_knobs({**BASE_KNOBS, **phase.knobs})
            server.take_stats()  # what arrived late from the phase before is not this one's
            while True:
                if phase.every_round:
                    server.set_knobs(phase.every_round)
                round_start = time.monotonic() - start
                await fleet.round(people, run, out)
                faults, held = server.take_stats()
                run.tally.server.update(faults)
                out.held_requests = max(out.held_requests, held)
                # The next round starts `round_seconds` after this one did (at once if this
                # one took longer); the phase ends at its planned time, after one round at least.
                now = time.monotonic() - start
                next_round = round_start + args.round_seconds
                await asyncio.sleep(max(0.0, min(next_round, end) - now))
                if next_round >= end:
                    break
            fleet.close_phase(run, out)
            run.seconds = time.monotonic() - began
            if phase is WARM_UP:
                out.measured_from = time.monotonic()
            out.phases.append(run)
            _progress(run)
        out.seconds = time.monotonic() - start
        out.stats = {c.name: c.stats for c in clients}


def _progress(run: PhaseRun) -> None:
    t = run.tally
    print(
        f"  {run.phase.name:<10} cycle {run.cycle}: {t.rounds} rounds, {t.lookups:,} lookups, "
        f"{t.statuses[str(LookupStatus.FAILED)]:,} failed, {t.unaccounted:,} unaccounted",
        file=sys.stderr,
        flush=True,
    )


# --- the report -----------------------------------------------------------------------------


def _reasons(counts: Counter[str], top: int = 3) -> str:
    items = counts.most_common()
    text = ", ".join(f"{k} {v:,}" for k, v in items[:top])
    return text + (f", +{len(items) - top} more" if len(items) > top else "")


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.1f}"


def phase_table(result: Soak) -> Table:
    """One row per phase as it ran."""
    table = Table(title="Lookups per phase (all three providers)")
    columns = (
        "phase", "cyc", "s", "rounds", "lookups", "lookups/s", "matched", "no_match", "failed",
        "unacc.", "failed by reason", "attempts", "retries", "429s", "timeouts", "trips",
        "refused open", "p50 ms", "p99 ms", "server injected", "open after",
    )  # fmt: skip
    for column in columns:
        left = column in ("phase", "failed by reason", "server injected", "open after")
        table.add_column(column, justify="left" if left else "right")
    for run in result.phases:
        t = run.tally
        injected = +Counter({k: v for k, v in t.server.items() if k != "requests"})
        table.add_row(
            run.phase.name,
            str(run.cycle),
            f"{run.seconds:.0f}",
            str(t.rounds),
            f"{t.lookups:,}",
            f"{t.lookups / t.busy_seconds:,.0f}" if t.busy_seconds else "-",
            f"{t.statuses[str(LookupStatus.MATCHED)]:,}",
            f"{t.statuses[str(LookupStatus.NO_MATCH)]:,}",
            f"{t.statuses[str(LookupStatus.FAILED)]:,}",
            f"{t.unaccounted:,}",
            _reasons(t.reasons),
            f"{t.client['attempts']:,}",
            f"{t.client['retries']:,}",
            f"{t.client['throttled']:,}",
            f"{t.client['timeouts']:,}",
            f"{t.client['breaker_trips']:,}",
            f"{t.client['circuit_rejections']:,}",
            _ms(run.p50_ms),
            _ms(run.p99_ms),
            _reasons(injected, top=4),
            ", ".join(name for name, state in run.breakers.items() if state != "closed") or "-",
        )
    return table


def provider_table(result: Soak) -> Table:
    """One row per provider over the whole soak."""
    table = Table(title="Lookups per provider (whole soak, warm-up included)")
    columns = (
        "provider", "lookups", "matched", "no_match", "failed", "lost", "extra", "unexplained",
        "raised", "attempts", "retries", "429s", "timeouts", "conn. errors", "trips",
        "refused open", "p50 ms", "p99 ms",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("provider", "raised") else "right")
    for name, t in result.providers.items():
        stats = result.stats[name]
        table.add_row(
            name,
            f"{t.lookups:,}",
            f"{t.statuses[str(LookupStatus.MATCHED)]:,}",
            f"{t.statuses[str(LookupStatus.NO_MATCH)]:,}",
            f"{t.statuses[str(LookupStatus.FAILED)]:,}",
            f"{t.lost:,}",
            f"{t.extra:,}",
            f"{t.unexplained:,}",
            _reasons(t.raised) or "-",
            f"{stats.attempts:,}",
            f"{stats.retries:,}",
            f"{stats.throttled:,}",
            f"{stats.timeouts:,}",
            f"{stats.connect_errors:,}",
            f"{stats.breaker_trips:,}",
            f"{stats.circuit_rejections:,}",
            _ms(stats.p50 * 1000),
            _ms(stats.p99 * 1000),
        )
    return table


def memory_table(result: Soak, samples: Sequence[Sample], lookups_per_minute: float) -> Table:
    """RSS of the client and the server after the warm-up, and the verdicts."""
    table = Table(
        title=f"Memory after the warm-up (RSS, MB; flat: < {GROWTH_LIMIT_MB_PER_MIN:g} MB/min)"
    )
    for column in ("process", "start", "mid", "end", "peak", "MB/min", "B/lookup", "verdict"):
        table.add_column(column, justify="left" if column in ("process", "verdict") else "right")
    times = [s.at for s in samples]
    for name, values in (
        ("client (this process)", [s.client_mb for s in samples]),
        ("provider server", [s.server_mb for s in samples]),
    ):
        g = growth(times, values, result.measured_from)
        per_lookup = g.slope * 1024 * 1024 / lookups_per_minute if lookups_per_minute else math.nan
        table.add_row(
            name,
            f"{g.start:.1f}",
            f"{g.mid:.1f}",
            f"{g.end:.1f}",
            f"{g.peak:.1f}",
            f"{g.slope:+.2f}",
            f"{per_lookup:+.1f}",
            g.verdict or f"(under {MIN_FIT_MINUTES:g} min fitted)",
        )
    return table


def main() -> None:
    """Run the soak and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    parser.add_argument("--round-seconds", type=float, default=5.0, help="a round every S s")
    parser.add_argument("--subjects", type=int, default=400, help="per single provider, round")
    parser.add_argument("--cycles", type=int, default=2, help="times through the phases")
    parser.add_argument("--sample-seconds", type=float, default=2.0, help="RSS sample period")
    parser.add_argument("--people", type=int, default=20_000, help="people `enrich synth` makes")
    parser.add_argument("--world", type=Path, help="an existing world.jsonl instead of synth")
    parser.add_argument("--seed", type=int, default=7, help="seed of the subjects drawn")
    args = parser.parse_args()
    console = Console(width=280)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        world = args.world
        if world is None:
            folder = Path(tmp) / "synth"
            console.print(f"enrich synth --people {args.people:,} ...", style="dim")
            subprocess.run(
                [
                    *(sys.executable, "-m", "flows.cli", "synth", "--people", str(args.people)),
                    *("--out", str(folder), "--seed", str(args.seed)),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            world = folder / "data" / "world.jsonl"
        people = load_people(world)
        load_before = os.getloadavg()
        result = Soak()
        with provider_server(world, Path(tmp)) as server:
            console.print(
                f"server {server.url} (pid {server.process.pid}), {len(people):,} people; "
                f"{args.minutes:g} min, a round every {args.round_seconds:g} s",
                style="dim",
            )
            me = psutil.Process(os.getpid())
            cpu, server_cpu = me.cpu_times(), server.process.cpu_times()
            with Sampler(server.process, args.sample_seconds) as sampler:
                asyncio.run(soak(server, people, args, result))
            after, server_after = me.cpu_times(), server.process.cpu_times()
            result.client_cpu = (after.user + after.system) - (cpu.user + cpu.system)
            result.server_cpu = (server_after.user + server_after.system) - (
                server_cpu.user + server_cpu.system
            )
    report(console, result, sampler.samples, load_before, args)


def report(
    console: Console,
    result: Soak,
    samples: Sequence[Sample],
    load_before: tuple[float, float, float],
    args: argparse.Namespace,
) -> None:
    """Print the tables and the summary; exit 1 on a lost lookup or growing client memory."""
    total = Tally()
    for t in result.providers.values():
        total.add(t)
    measured = [r for r in result.phases if r.phase is not WARM_UP]
    measured_lookups = sum(r.tally.lookups for r in measured)
    measured_minutes = sum(r.seconds for r in measured) / 60
    per_minute = measured_lookups / measured_minutes if measured_minutes else 0.0
    console.print(phase_table(result))
    console.print(
        "phases: " + "; ".join(f"{p.name}: {p.what}" for p in (WARM_UP, *PHASES)), style="dim"
    )
    console.print(provider_table(result))
    console.print(memory_table(result, samples, per_minute))
    loads = [s.load for s in samples]
    fds = [s.client_fds for s in samples]
    client = growth([s.at for s in samples], [s.client_mb for s in samples], result.measured_from)
    busy = sum(r.tally.busy_seconds for r in result.phases)
    lines = [
        f"soak {result.seconds / 60:.1f} min ({result.warm_up_seconds:.0f} s warm-up), "
        f"{len(result.phases)} phases, {sum(r.tally.rounds for r in result.phases)} rounds, "
        f"{total.lookups:,} lookups ({total.lookups / result.seconds:,.0f}/s over the soak, "
        f"{total.lookups / busy:,.0f}/s while rounds ran, {per_minute:,.0f}/min after warm-up)",
        f"unaccounted lookups: {total.unaccounted:,} (lost {total.lost:,}, extra {total.extra:,}, "
        f"unexplained {total.unexplained:,}); lookup_all raised or stuck: "
        f"{sum(total.raised.values()):,}",
        f"statuses: {_reasons(total.statuses)}; failed by reason: {_reasons(total.reasons, 12)}",
        f"CPU: client {1000 * result.client_cpu / total.lookups:.3f} ms/lookup, server "
        f"{1000 * result.server_cpu / total.lookups:.3f} ms/lookup "
        f"({result.client_cpu:.0f} s and {result.server_cpu:.0f} s)",
        f"client open files {min(fds)}-{max(fds)} (start {fds[0]}, end {fds[-1]}); asyncio tasks "
        f"left after a round, at most: {result.max_tasks}; requests the server held (hung or "
        f"late) after a round, at most: {result.held_requests}",
        f"load average: {load_before[0]:.2f} at the start, {_mean_max(loads)} during "
        f"(1-minute, 2 cores, shared)",
        f"bounds: {CONCURRENCY} in flight and {RATE:g} requests/s per client, 3 clients, "
        f"{args.subjects} + {args.subjects} + {BATCH_FACTOR * args.subjects} lookups per "
        f"round, {LOOPBACK} only",
    ]
    for line in lines:
        console.print(line)
    ok = total.unaccounted == 0 and not total.raised and client.verdict != "GROWS"
    console.print("PASS" if ok else "FAIL", style="bold green" if ok else "bold red")
    if not ok:
        sys.exit(1)


def _mean_max(values: Sequence[float]) -> str:
    """Mean and maximum of `values`."""
    return f"mean {sum(values) / len(values):.2f}, max {max(values):.2f}"


if __name__ == "__main__":
    main()
