"""Faults of the real components a night depends on, injected while it runs.

Providers (one shop, one night per fault, in this process, against the real local provider
server on a fixed port): the server down (nothing listens on its port), answering garbage
(every body cut short), slow and failing (answers later than the client's timeout, 5xx),
flapping (stopped and started again in the middle of the lookups), and answering in a shape
other than the configured one. Every night ends green and accounts for every subject of every
provider; the lookups it could not make fail with the reason code of their fault; no signal
comes from a bad answer; the next night looks up again exactly what failed (nothing failed is
cached). test_enrichment_runs.py has the night of 5xx errors and a 429 storm.

The run's own footing (`enrich run` in subprocesses, as an operator runs it): a private
PostgreSQL cluster stopped in the middle of a run, the output folder on a full disk (a small
tmpfs), and a second run of the same night started while the first runs. Each failure says
what happened in its last lines, publishes nothing and leaves a resumable run in the ledger;
the next `enrich run` ends with the outputs of an uninterrupted run (test_crash.py's `_same`).
To stop a run at a known place, the provider server holds every lookup until the test lets
them go (a stall longer than the test needs, shorter than the client's timeout).
"""

from __future__ import annotations

import errno
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
import yaml
from psycopg import sql

from enrichers.testing import NAMES, Endpoint, Knobs, provider_entries
from enrichers.testing.server import ProviderServer
from flows.audit import verify_log
from flows.cli import RESUMES, no_room_message
from profiles.config import load_run_config
from profiles.rundir import NightLock, published_runs
from profiles.store import StateStore, StoreError, default_url
from profiles.synth import generate
from profiles.vault import VAULT_DIR
from tests.flows.test_crash import (
    ENRICH,
    Outcome,
    Shop,
    _as_multiset,
    _copy,
    _enrich_run,
    _outcome,
    _same,
    small_shop,
)
from tests.flows.test_enrichment_runs import _accounted
from tests.flows.test_nightly import FIXTURE, _init_keys, _run
from tests.profiles.test_store import _closed_port

PROVIDERS = sorted(NAMES.values())
HTTP_JSON = (NAMES[Endpoint.PERSON], NAMES[Endpoint.SEGMENTS])
STATE_URL = "ENRICH_STATE_URL"
FAST = {
    "retries": 1,
    "backoff_seconds": 0.01,
    "max_backoff_seconds": 0.05,
    # a short cool-down: a flapping provider is tried again within the night
    "breaker": {"failures": 5, "cooldown_seconds": 0.2},
}
STALL = 240.0
"""How long the server holds a lookup in the subprocess tests (they release it sooner)."""


@dataclass(frozen=True)
class Night:
    """One night of the provider shop: its summary per provider and its signals."""

    enrichment: dict[str, dict[str, Any]]
    signals: pd.DataFrame
    flapped: bool = False


def _looked_up(provider: dict[str, Any]) -> int:
    return int(provider["matched"] + provider["no_match"] + sum(provider["failed"].values()))


def _reasons(night: Night) -> set[str]:
    return {reason for p in night.enrichment.values() for reason in p["failed"]}


def _flap(server: ProviderServer, done: threading.Event, flapped: threading.Event) -> None:
    """Stop the server as soon as tonight's lookups reach it (its counters were reset), and
    start it again half a second later, on the same port."""
    while not done.is_set():
        if server.stats()["requests"] > 0:
            server.stop()
            time.sleep(0.5)
            server.start()
            flapped.set()
            return
        time.sleep(0.005)


def _night(work: Path, server: ProviderServer, *, flap: bool = False, **knobs: Any) -> Night:
    """Run one night in this process with `knobs` set on the server (if it runs) for it."""
    if server.running:
        server.reset()
        server.set_knobs(**knobs)
    done, flapped = threading.Event(), threading.Event()
    flapper = threading.Thread(target=_flap, args=(server, done, flapped)) if flap else None
    if flapper is not None:
        flapper.start()
    try:
        run = _run(work)
    finally:
        done.set()
        if flapper is not None:
            flapper.join()
        if server.running:
            server.set_knobs(**{name: getattr(Knobs(), name) for name in knobs})
    signals = pd.read_parquet(run.run_dir / "signals.parquet")
    return Night(run.summary()["enrichment"], signals, flapped.is_set())


def _entries(base_url: str, **changes: Any) -> list[dict[str, Any]]:
    return provider_entries(base_url, overrides={**FAST, **changes})


def _wrong_shapes(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries with the http_json providers' documented shapes no longer what the
    server sends: each nests its lists one level deeper than the answers do."""
    changed = [dict(entry) for entry in entries]
    for entry in changed:
        if entry["name"] in HTTP_JSON:
            response = dict(entry["response"])
            if "items" in response:
                response["items"] = "results.data[*]"  # the results are a list
            else:
                response["interests"] = "data.interests.items[*]"  # the interests are a list
            entry["response"] = response
    return changed


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Night]:
    """The provider shop's nights, in order; the server keeps its port, so the cache keys
    (which include the base URL) stay the same from night to night."""
    work = tmp_path_factory.mktemp("faults") / "shop"
    generate(people=160, out_dir=work, seed=3)
    _init_keys(work)
    config = work / "enrich.yaml"
    base = config.read_text(encoding="utf-8")
    port = _closed_port()
    url = f"http://127.0.0.1:{port}"

    def configure(entries: list[dict[str, Any]]) -> None:
        section = {"enrichment": {"providers": entries}, "performance": {"chunk_rows": 400}}
        config.write_text(base + yaml.safe_dump(section, sort_keys=False), encoding="utf-8")

    server = ProviderServer(port=port, world=work / "data" / "world.jsonl")
    out: dict[str, Night] = {}
    configure(_entries(url))
    out["down"] = _night(work, server)
    server.start()
    try:
        out["garbage"] = _night(work, server, malformed_rate=1.0)
        # some answers come after the client stopped waiting (3 s against 1 s), some are 5xx
        configure(_entries(url, timeout_seconds=1.0))
        out["slow"] = _night(work, server, timeout_rate=0.3, timeout_seconds=3.0, error_rate=0.3)
        # two at a time, slowly: lookups are still waiting when the server goes away
        configure(_entries(url, concurrency=2))
        out["flapping"] = _night(work, server, flap=True, latency_ms=300)
        configure(_entries(url))
        out["healthy"] = _night(work, server)
        configure(_wrong_shapes(_entries(url)))
        out["wrong shapes"] = _night(work, server)
    finally:
        server.stop()
    return out


NIGHTS = ("down", "garbage", "slow", "flapping", "healthy", "wrong shapes")


@pytest.mark.parametrize("name", NIGHTS)
def test_every_night_accounts_for_every_subject_of_every_provider(
    nights: dict[str, Night], name: str
) -> None:
    night = nights[name]
    assert sorted(night.enrichment) == PROVIDERS
    for provider, counts in night.enrichment.items():
        assert _accounted(counts) == counts["subjects"], provider
        assert counts["subjects"] > 0, provider


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param("down", "garbage", id="after-down"),
        pytest.param("garbage", "slow", id="after-garbage"),
        pytest.param("slow", "flapping", id="after-slow"),
        pytest.param("flapping", "healthy", id="after-flapping"),
    ],
)
def test_the_next_night_looks_up_again_exactly_what_failed(
    nights: dict[str, Night], before: str, after: str
) -> None:
    for provider in PROVIDERS:
        earlier, later = nights[before].enrichment[provider], nights[after].enrichment[provider]
        assert _looked_up(later) == sum(earlier["failed"].values()), provider
        answered = earlier["matched"] + earlier["no_match"]
        assert later["skipped_cached"] == earlier["skipped_cached"] + answered, provider


def test_a_provider_that_is_down_fails_its_lookups_as_connect_errors(
    nights: dict[str, Night],
) -> None:
    night = nights["down"]
    for provider, counts in night.enrichment.items():
        assert set(counts["failed"]) <= {"connect_error", "circuit_open"}, provider
        assert counts["failed"].get("connect_error", 0) > 0, provider
        assert counts["matched"] == counts["no_match"] == 0, provider
    assert not night.signals["provider"].isin(PROVIDERS).any()


def test_garbage_answers_fail_as_malformed_and_give_no_signal(nights: dict[str, Night]) -> None:
    night = nights["garbage"]
    for provider, counts in night.enrichment.items():
        assert set(counts["failed"]) == {"malformed_json"}, provider
        assert counts["matched"] == 0, provider
        assert counts["signals"] == 0, provider
    # nothing was cached the night before: every provider signal would be tonight's
    assert not night.signals["provider"].isin(PROVIDERS).any()


def test_answers_in_another_shape_fail_as_bad_payloads_and_give_no_signal(
    nights: dict[str, Night],
) -> None:
    night = nights["wrong shapes"]
    for provider in HTTP_JSON:
        counts = night.enrichment[provider]
        assert set(counts["failed"]) == {"bad_payload"}, provider
        assert counts["matched"] == counts["signals"] == 0, provider
        assert counts["skipped_cached"] == 0, provider  # another shape: other cache keys
    assert not night.signals["provider"].isin(HTTP_JSON).any()
    gravatar = night.enrichment[NAMES[Endpoint.GRAVATAR]]  # unchanged: all cached
    assert _looked_up(gravatar) == 0
    assert (night.signals["provider"] == NAMES[Endpoint.GRAVATAR]).any()


def test_slow_and_failing_answers_fail_as_timeouts_and_server_errors(
    nights: dict[str, Night],
) -> None:
    night = nights["slow"]
    assert _reasons(night) <= {"timeout", "server_error", "circuit_open"}
    assert {"timeout", "server_error"} <= _reasons(night)
    assert sum(p["client"]["timeouts"] for p in night.enrichment.values()) > 0
    # the others got through, on the first attempt or the retry
    assert sum(p["matched"] for p in night.enrichment.values()) > 0


def test_a_flapping_provider_fails_what_it_missed_as_connect_errors(
    nights: dict[str, Night],
) -> None:
    night = nights["flapping"]
    assert night.flapped, "the server was not stopped during the lookups"
    assert _reasons(night) <= {"connect_error", "circuit_open"}
    assert "connect_error" in _reasons(night)


def test_a_healthy_night_after_the_faults_fails_nothing(nights: dict[str, Night]) -> None:
    for provider, counts in nights["healthy"].enrichment.items():
        assert counts["failed"] == {}, provider


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """test_crash's shop, with a client timeout longer than any stall of these tests."""
    with small_shop(tmp_path_factory.mktemp("footing"), timeout_seconds=STALL + 30.0) as made:
        yield made


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run `command` as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@dataclass(frozen=True)
class Cluster:
    """A private PostgreSQL cluster (trust authentication, user postgres, on 127.0.0.1) for
    this module: it can be stopped without disturbing the machine's server."""

    bin: Path
    root: Path
    port: int

    def _ctl(self, *args: str, check: bool = True) -> None:
        data, log = str(self.root / "data"), str(self.root / "log")
        command = [str(self.bin / "pg_ctl"), "-D", data, "-l", log, "-w", "-t", "60", *args]
        subprocess.run(_as_postgres(command), check=check, capture_output=True, timeout=90)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-k {self.root} -h 127.0.0.1 -p {self.port} -c fsync=off"
        self._ctl("start", "-o", options)

    def stop(self, *, check: bool = True) -> None:
        """Stop the server at once, as a crash or an operator's kill would."""
        self._ctl("stop", "-m", "immediate", check=check)

    def database(self, name: str) -> str:
        """Create an empty database; returns its state store URL."""
        address = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(address, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    initdb = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not initdb:
        pytest.skip("no PostgreSQL server programs (/usr/lib/postgresql/*/bin/initdb)")
    # not under pytest's temporary folder: root's is closed to the postgres user
    root = Path(tempfile.mkdtemp(prefix="enrich-pg-"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root and there is no postgres user to run PostgreSQL as")
        os.chown(root, user.pw_uid, user.pw_gid)
    cluster = Cluster(initdb[-1].parent, root, _closed_port())
    try:
        command = [str(initdb[-1]), "-D", str(root / "data"), "-A", "trust", "-U", "postgres"]
        command += ["--no-sync", "--no-locale", "-E", "UTF8"]
        subprocess.run(_as_postgres(command), check=True, capture_output=True, timeout=120)
        cluster.start()
        yield cluster
    finally:
        cluster.stop(check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(shop: Shop, cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """The shop's night run once, uninterrupted, on a fresh database of the private cluster."""
    work = _copy(shop, tmp_path_factory.mktemp("reference"))
    shop.server.reset()
    done = _enrich_run(work, {**shop.env, STATE_URL: cluster.database("reference")})
    return _outcome(work, done, len(shop.server.received()))


@contextmanager
def _stalled(server: ProviderServer) -> Iterator[None]:
    """Every lookup sent in the block waits at the server until the block ends."""
    server.set_knobs(timeout_rate=1.0, timeout_seconds=STALL)
    try:
        yield
    finally:
        server.set_knobs(timeout_rate=0.0)
        # ProviderServer.stop() would release them too, but refuse the lookups queued behind
        server._on_loop(server.app.release)
        server._on_loop(server.app.bind)  # a fresh release event: a later stall holds again


@dataclass
class Started:
    """An `enrich run` started in the background, its output going to files."""

    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def finish(self) -> subprocess.CompletedProcess[str]:
        """Wait for it to end; what it printed."""
        code = self.process.wait(timeout=600)
        return subprocess.CompletedProcess(
            self.process.args,
            code,
            self.stdout.read_text(encoding="utf-8"),
            self.stderr.read_text(encoding="utf-8"),
        )


@contextmanager
def _started(work: Path, env: dict[str, str]) -> Iterator[Started]:
    """`enrich run` as test_crash's `_enrich_run` runs it, in the background (into files, not
    pipes: a full pipe would stop it while the test waits for it); killed if the block ends
    while it still runs (a test that failed half-way)."""
    stdout, stderr = work.parent / "run.out", work.parent / "run.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [ENRICH, "run", "--config", str(work / "enrich.yaml"), "--as-of", "2026-11-01"],
            env=env,
            stdout=out,
            stderr=err,
        )
    try:
        yield Started(process, stdout, stderr)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)


def _wait_for_lookups(server: ProviderServer, run: Started) -> None:
    """Return once the run's lookups reach the server (its counters were reset before the run
    started; they are held there): the run is in its providers stage and holds the night."""
    deadline = time.monotonic() + 300
    while server.stats()["requests"] == 0:
        if run.process.poll() is not None:
            pytest.fail(f"the run ended before its lookups:\n{run.finish().stderr[-3000:]}")
        assert time.monotonic() < deadline, "the run never reached its lookups"
        time.sleep(0.02)


def _last_lines(done: subprocess.CompletedProcess[str], n: int) -> list[str]:
    return done.stderr.rstrip().splitlines()[-n:]


def _nothing_published(work: Path) -> None:
    out = work / "out"
    assert published_runs(out) == []
    assert len(list(out.glob(".*.partial"))) == 1, "the staging folder stays for inspection"
    assert not list(out.rglob(VAULT_DIR)), "a failed run left its vault"


def _resumed(shop: Shop, work: Path, env: dict[str, str], reference: Outcome) -> pd.DataFrame:
    """Run `enrich run` again: it resumes the interrupted run and ends with the reference's
    outputs and decisions. Returns the run ledger."""
    shop.server.reset()
    again = _enrich_run(work, env)
    resumed = _outcome(work, again, len(shop.server.received()))
    assert "was interrupted at step started: resuming it (attempt 2)" in again.stderr
    _same(reference, resumed)
    assert _as_multiset(resumed.decisions) == _as_multiset(reference.decisions)
    config = load_run_config(work / "enrich.yaml")
    report = verify_log(config.decision_log_dir, config.audit.public_keys)
    assert report.ok, report.problems
    assert [p.name for p in published_runs(work / "out")] == [resumed.run_dir.name]
    with StateStore.open(env.get(STATE_URL) or default_url(work / "state")) as store:
        return store.runs()


def test_an_unreachable_state_store_says_so() -> None:
    port = _closed_port()
    with pytest.raises(StoreError) as info:
        StateStore.open(f"postgresql+psycopg://postgres@127.0.0.1:{port}/night", connect_timeout=2)
    assert str(info.value) == (
        f"state store 127.0.0.1:{port}/night is unreachable: opening failed: connection refused "
        "(OperationalError)"
    )
    assert info.value.unreachable
    assert info.value.retryable


def test_postgresql_stopped_in_the_middle_of_a_run_fails_it_clearly_and_it_resumes(
    shop: Shop, cluster: Cluster, reference: Outcome, tmp_path: Path
) -> None:
    work = _copy(shop, tmp_path)
    env = {**shop.env, STATE_URL: cluster.database("night")}
    shop.server.reset()
    try:
        with _started(work, env) as run:
            with _stalled(shop.server):
                _wait_for_lookups(shop.server, run)
                cluster.stop()  # the answers then have nowhere to be cached
            failed = run.finish()
        assert failed.returncode == 2, failed.stderr[-3000:]
        error, hint = _last_lines(failed, 2)
        # the first to find it gone: a lookup task caching its answers, on a new connection
        # (refused) or one the server closed
        store = re.escape(f"state store 127.0.0.1:{cluster.port}/night")
        reason = "(connection refused|server closed the connection)"
        assert re.fullmatch(
            rf"error: {store} is unreachable: [a-z ]+ failed: {reason} \(OperationalError\)",
            error,
        ), error
        assert hint == RESUMES
        _nothing_published(work)
    finally:
        cluster.start()
    runs = _resumed(shop, work, env, reference)
    assert runs[["status", "step", "attempts"]].values.tolist() == [["succeeded", "published", 2]]


@contextmanager
def _small_disk(folder: Path) -> Iterator[None]:
    """`folder` on a 640 KiB tmpfs (the run needs about 1 MiB: it fills up in the fusion stage,
    after the lookups were cached and the decisions logged); skips if mounting is not
    allowed here."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=640k,mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield
    finally:
        if subprocess.run(["umount", str(folder)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(folder)], check=True)


def test_a_full_output_disk_fails_the_run_clearly_and_it_resumes_once_there_is_room(
    shop: Shop, reference: Outcome, tmp_path: Path
) -> None:
    work = _copy(shop, tmp_path)
    out = work / "out"
    with _small_disk(out):
        full = _enrich_run(work, shop.env)
        assert full.returncode == 2, full.stderr[-3000:]
        error, hint = _last_lines(full, 2)
        # a write error does not name its file: the output folder, and the state folder on
        # its other device, are named
        assert error == (
            f"error: no space left on the device holding {out} or the one holding {work / 'state'}"
        )
        assert hint == RESUMES
        _nothing_published(work)
        with StateStore.open(default_url(work / "state")) as store:
            runs = store.runs()
            assert store.load_identifiers().empty
            assert store.load_profiles().empty
        assert runs[["status", "step"]].values.tolist() == [["failed", "started"]]
        subprocess.run(["mount", "-o", "remount,size=64m", str(out)], check=True)
        runs = _resumed(shop, work, shop.env, reference)
    assert runs[["status", "step", "attempts"]].values.tolist() == [["succeeded", "published", 2]]


def test_a_second_run_of_the_same_night_is_refused_at_once_never_interleaved(
    shop: Shop, reference: Outcome, tmp_path: Path
) -> None:
    work = _copy(shop, tmp_path)
    shop.server.reset()
    with _started(work, shop.env) as first:
        with _stalled(shop.server):
            _wait_for_lookups(shop.server, first)
            began = time.monotonic()
            second = _enrich_run(work, shop.env)
            took = time.monotonic() - began
            assert first.process.poll() is None, "the second run waited for the first"
        done = first.finish()
    assert second.returncode == 2
    lock = NightLock(work / "state").path
    assert _last_lines(second, 1) == [
        f"error: another run holds {lock} (process {first.process.pid}); wait for it to finish"
    ]
    assert took < 60, f"refused after {took:.0f} s"
    outcome = _outcome(work, done, len(shop.server.received()))
    _same(reference, outcome)
    assert _as_multiset(outcome.decisions) == _as_multiset(reference.decisions)
    assert [p.name for p in published_runs(work / "out")] == [outcome.run_dir.name]
    with StateStore.open(default_url(work / "state")) as store:
        runs = store.runs()
    assert runs[["run_id", "status", "attempts"]].values.tolist() == [
        [outcome.run_dir.name, "succeeded", 1]
    ]


@pytest.mark.parametrize(
    ("code", "filename", "expected"),
    [
        pytest.param(
            errno.ENOSPC,
            "/data/out/x.csv",
            "no space left on the device holding /data/out/x.csv",
            id="named-file",
        ),
        pytest.param(
            errno.EDQUOT,
            "/data/out/x.csv",
            "disk quota exceeded on the device holding /data/out/x.csv",
            id="quota",
        ),
        pytest.param(errno.EACCES, "/data/out/x.csv", None, id="another-error"),
    ],
)
def test_a_full_disk_is_named_by_the_file_the_error_names(
    code: int, filename: str, expected: str | None
) -> None:
    config = load_run_config(FIXTURE / "enrich.yaml")  # state and output on one device
    assert no_room_message(OSError(code, os.strerror(code), filename), config) == expected
    unnamed = no_room_message(OSError(code, os.strerror(code)), config)
    if expected is not None:  # same device: only the output folder is named
        assert unnamed == expected.replace(filename, str(config.output_dir))
