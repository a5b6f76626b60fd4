"""No raw contact value and no key material leaves a night: on any runner, and when it fails.

A synthetic shop is enriched through the real local provider server, two of whose providers
authenticate with an API key taken from an environment variable (`auth.secret_env`). A night
runs on the `threads` runner with the key file, one on the `processes` runner with the keys in
`ENRICH_*_KEY` variables, and two fail on purpose after every chunk sealed its vault part;
everything each leaves is scanned, with every logger at DEBUG:

* needles: every raw email address and phone number of the input rows, as written, lower-cased
  and normalised (the normalised address, E.164); the pseudonym, quarantine and signing keys
  and the run's vault key as raw bytes, base64 (standard and URL-safe, with and without
  padding) and hex; the provider API key. SHA-256 digests are not needles: audiences and
  provider requests carry them by design.
* haystacks: every log line (Python logging in the flow's process, the console output of the
  flow and its worker processes, the logs the Prefect API stored), the flow run and its task
  runs as the Prefect API stores them (parameters, state messages), every artifact, the events
  of the run, what Prefect wrote to its local result storage, every file under the output
  folder (Parquet decoded, JSON and HTML unescaped; the CRM export's email and phone columns
  excepted, only those), every file under the state folder but the key file (the SQLite
  database's bytes and its rows; decompressed decision-log segments, checkpoints), the same
  two folders copied while the run worked (the staging folder with its parts and the sealed
  vault, the database's -wal), and what the provider server received (the API key is
  expected in its own providers' auth header, and nowhere else).

A successful night leaves no staging folder; a failed one leaves its staging folder for
inspection, but never the vault. A finding names the place and the needle by what it is and a
fingerprint (a prefix of a salted SHA-256), never the value itself.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import html
import json
import logging
import secrets
import shutil
import sqlite3
import stat
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import pandas as pd
import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import State
from prefect.events.filters import EventAnyResourceFilter, EventFilter
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH
from starlette.types import Receive, Scope, Send

from enrichers.testing import NAMES, Endpoint, Knobs, World, provider_entries
from enrichers.testing.app import ProviderApp
from enrichers.testing.server import ProviderServer
from flows.nightly import nightly_enrichment
from profiles.config import RunConfig, SourceConfig, load_run_config
from profiles.errors import KeyMaterialError
from profiles.exports.crm import preset_from_config
from profiles.hashing import KEY_PURPOSES, Key, Keyring, decode_secret, encode_secret
from profiles.identifiers import check_country, check_email, check_phone
from profiles.synth import generate
from profiles.types import CanonicalField
from profiles.vault import VAULT_DIR, vault_key
from tests.flows.test_nightly import _init_keys, raw_source

API_KEY_ENV = "ENRICH_TEST_LEAKS_API_KEY"
AS_OF = "2026-11-01"
PERSON, SEGMENTS = NAMES[Endpoint.PERSON], NAMES[Endpoint.SEGMENTS]
AUTH: Mapping[str, tuple[str, str | None]] = {
    PERSON: ("X-Api-Key", None),
    SEGMENTS: ("Authorization", "Bearer"),
}
"""The providers that authenticate: their auth header and scheme."""
PATHS = {PERSON: "/v1/person", SEGMENTS: "/v1/segments/batch"}
HASHED_FORMS = {"email_sha256", "phone_sha256"}


# --- what is looked for --------------------------------------------------------------------


@dataclass
class Needles:
    """Values that must not be found, each with what it is (never the value) for findings.

    Contact values are matched case-insensitively (the needles are lower-cased and so is the
    haystack); key material exactly, since base64 is case-sensitive.
    """

    contacts: dict[bytes, str] = field(default_factory=dict)
    keys: dict[bytes, str] = field(default_factory=dict)

    def add_contact(self, value: str, what: str) -> None:
        self.contacts.setdefault(value.lower().encode("utf-8"), what)

    def add_key(self, secret: bytes, what: str) -> None:
        encodings = {
            "raw bytes": secret,
            "hex": secret.hex().encode(),
            "HEX": secret.hex().upper().encode(),
            "base64": base64.b64encode(secret),
            "urlsafe base64": base64.urlsafe_b64encode(secret),
        }
        for name, text in list(encodings.items()):
            if text.endswith(b"="):
                encodings[f"{name} unpadded"] = text.rstrip(b"=")
        for name, text in encodings.items():
            self.keys.setdefault(text, f"{what} ({name})")

    def add_text_key(self, secret: str, what: str) -> None:
        self.keys.setdefault(secret.encode("utf-8"), what)


def _regions(source: SourceConfig, frame: pd.DataFrame) -> list[list[str]]:
    """Per row, the regions its phone may be read in: the row's country, the source's default."""
    country = source.columns.get(CanonicalField.COUNTRY)
    rows: list[list[str]] = []
    for index in range(len(frame)):
        regions = []
        if country is not None:
            code, _ = check_country(str(frame[country].iat[index]))
            if code is not None:
                regions.append(code)
        if source.default_region is not None:
            regions.append(source.default_region)
        rows.append(regions)
    return rows


def contact_needles(config: RunConfig, needles: Needles) -> None:
    """Every raw email and phone of the input rows: as written (trimmed), lower-cased, and as
    the identifier stage normalises it (address key, E.164)."""
    for source in config.sources:
        frame = raw_source(source)
        email = source.columns.get(CanonicalField.EMAIL)
        phone = source.columns.get(CanonicalField.PHONE)
        regions = _regions(source, frame) if phone is not None else []
        for index in range(len(frame)):
            where = f"{source.name} row {index + 1}"
            if email is not None:
                raw = str(frame[email].iat[index]).strip()
                if "@" in raw and len(raw) >= 6:
                    needles.add_contact(raw, f"raw email ({where})")
                    normalised, _ = check_email(raw, config.identifiers)
                    if normalised is not None:
                        needles.add_contact(normalised, f"normalised email ({where})")
            if phone is not None:
                raw = str(frame[phone].iat[index]).strip()
                digits = [ch for ch in raw if ch.isdigit()]
                # placeholders such as 000000 identify nobody (and occur inside hex digests)
                if len(digits) < 6 or len(set(digits)) < 3:
                    continue
                needles.add_contact(raw, f"raw phone ({where})")
                for region in [*regions[index], None]:
                    e164, _ = check_phone(raw, region, config.identifiers)
                    if e164 is not None:
                        needles.add_contact(e164, f"E.164 phone ({where})")


def key_needles(key_file: Path, needles: Needles) -> dict[str, Key]:
    """Every key of the key file (active and retired); returns the active ones by purpose."""
    ring = Keyring.load(key_file)
    for purpose in KEY_PURPOSES:
        for key_id, entry in ring.keys.get(purpose, {}).items():
            secret = decode_secret(str(entry["secret"]), what=key_id)
            needles.add_key(secret, f"{purpose} key {key_id}")
    return {purpose: ring.active_key(purpose) for purpose in KEY_PURPOSES}


# --- where it is looked for ----------------------------------------------------------------

_WINDOW = 6
"""Bytes of a needle's prefix the first pass looks for; every needle is at least this long."""


def _windows(data: bytes) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """The `_WINDOW` bytes starting at each position, packed little-endian into one integer."""
    octets = np.frombuffer(data, dtype=np.uint8).astype(np.uint64)
    count = len(octets) - _WINDOW + 1
    packed = octets[:count].copy()
    for k in range(1, _WINDOW):
        packed |= octets[k : k + count] << np.uint64(8 * k)
    return packed


def find(needles: Mapping[bytes, str], data: bytes) -> set[bytes]:
    """The needles that occur in `data`.

    Thousands of needles in megabytes of output: `needle in data` for each would take minutes,
    so positions where some needle's first bytes occur are found at once (numpy), and only
    those positions are compared with the needles that start so.
    """
    if len(data) < _WINDOW or not needles:
        return set()
    by_prefix: dict[int, list[bytes]] = defaultdict(list)
    for needle in needles:
        assert len(needle) >= _WINDOW, "a needle too short to mean anything"
        by_prefix[int.from_bytes(needle[:_WINDOW], "little")].append(needle)
    packed = _windows(data)
    prefixes = np.fromiter(by_prefix, dtype=np.uint64, count=len(by_prefix))
    found: set[bytes] = set()
    for position in np.flatnonzero(np.isin(packed, prefixes)).tolist():
        for needle in by_prefix[int(packed[position])]:
            if data.startswith(needle, position):
                found.add(needle)
    return found


def fingerprint(needle: bytes) -> str:
    """What a finding shows of a needle: a prefix of a salted SHA-256 (a plain one of an
    address would be the form providers are sent)."""
    return hashlib.sha256(b"test_leaks:" + needle).hexdigest()[:12]


def findings(
    needles: Needles, haystacks: Iterator[tuple[str, bytes]]
) -> tuple[list[str], list[str]]:
    """Every needle found, as `place: what (fingerprint)`; and the places scanned."""
    out: list[str] = []
    scanned: list[str] = []
    for where, data in haystacks:
        scanned.append(where)
        lowered = data.decode("utf-8", "surrogateescape").lower()
        for needle in sorted(find(needles.contacts, lowered.encode("utf-8", "surrogateescape"))):
            out.append(f"{where}: {needles.contacts[needle]} (fingerprint {fingerprint(needle)})")
        for needle in sorted(find(needles.keys, data)):
            out.append(f"{where}: {needles.keys[needle]} (fingerprint {fingerprint(needle)})")
    return out, scanned


def _text(value: Any) -> bytes:
    return str(value).encode("utf-8", "surrogatepass")


def _sqlite_rows(path: Path, scratch: Path) -> bytes:
    """Every row of a SQLite database (and its -wal), read from a copy."""
    scratch.mkdir(parents=True, exist_ok=True)
    copy = Path(tempfile.mkdtemp(dir=scratch)) / path.name
    for suffix in ("", "-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            shutil.copyfile(companion, copy.with_name(copy.name + suffix))
    with contextlib.closing(sqlite3.connect(copy)) as conn:
        return "\n".join(conn.iterdump()).encode("utf-8", "surrogatepass")


def _crm_file(path: Path, excepted: set[str]) -> bytes:
    """A CRM export file without its email and phone columns (what the marketer imports)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert excepted & set(frame.columns), f"{path}: no email or phone column to leave out"
    return frame.drop(columns=sorted(excepted & set(frame.columns))).to_csv().encode("utf-8")


def file_haystacks(
    path: Path, *, crm_columns: set[str] | None, scratch: Path
) -> Iterator[tuple[str, bytes]]:
    """One file as it is, and decoded where its bytes may hide text: Parquet, gzip, JSON
    escapes, HTML entities, SQLite rows. A CRM file only without its contact columns."""
    where = str(path)
    if crm_columns is not None and path.suffix == ".csv":
        yield f"{where} (without its email and phone columns)", _crm_file(path, crm_columns)
        return
    data = path.read_bytes()
    yield where, data
    if path.suffix == ".parquet":
        yield f"{where} (decoded)", pd.read_parquet(path).to_csv().encode("utf-8")
    elif path.suffix == ".gz":
        yield f"{where} (decompressed)", gzip.decompress(data)
    elif path.suffix in {".json", ".jsonl"}:
        lines = data.decode("utf-8").splitlines() if path.suffix == ".jsonl" else [data.decode()]
        decoded = [json.dumps(json.loads(x), ensure_ascii=False) for x in lines if x.strip()]
        yield f"{where} (unescaped)", "\n".join(decoded).encode("utf-8")
    elif path.suffix == ".html":
        yield f"{where} (unescaped)", html.unescape(data.decode("utf-8")).encode("utf-8")
    elif path.suffix == ".db":
        yield f"{where} (rows)", _sqlite_rows(path, scratch)


# --- the shop and its server ---------------------------------------------------------------


class RecordingApp(ProviderApp):
    """The local provider server's app, also keeping each request's path, query and headers
    (the server's own received log keeps identifiers only)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            self.requests.append((scope["path"], scope["query_string"].decode("latin-1"), headers))
        await super().__call__(scope, receive, send)


@dataclass
class Shop:
    """A synthetic shop, ready to run, and the provider server it is enriched through."""

    work: Path
    server: ProviderServer
    app: RecordingApp
    api_key: str


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """The shop, its keys, and the server; its enrich.yaml names the server's providers."""
    work = tmp_path_factory.mktemp("leaks") / "shop"
    generate(people=250, out_dir=work, seed=23)
    _init_keys(work)
    world = World.load(work / "data" / "world.jsonl")
    knobs = Knobs(latency_ms=1)
    server = ProviderServer(world=world, knobs=knobs)
    app = RecordingApp(world=world, knobs=knobs)
    server.app = app
    with server:
        entries = provider_entries(server.base_url)
        for entry in entries:
            if entry["name"] in AUTH:
                header, scheme = AUTH[entry["name"]]
                entry["auth"] = {"header": header, "scheme": scheme, "secret_env": API_KEY_ENV}
        section = {
            "enrichment": {"providers": entries},
            # several chunks and partitions: every partitioned stage runs as several tasks
            "performance": {"chunk_rows": 500, "partition_profiles": 120},
        }
        with (work / "enrich.yaml").open("a", encoding="utf-8") as fh:
            fh.write(yaml.safe_dump(section, sort_keys=False))
        yield Shop(work, server, app, "sk_live_" + secrets.token_urlsafe(24))


# --- a night -------------------------------------------------------------------------------


class _Lines(logging.Handler):
    """Collects formatted log lines (with tracebacks); runs `then` once, at the first line
    containing `when`."""

    def __init__(self, when: str | None = None, then: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.lines: list[str] = []
        self._when, self._then = when, then

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        self.lines.append(line)
        if self._then is not None and self._when is not None and self._when in line:
            then, self._then = self._then, None
            then()


@dataclass
class Night:
    """A finished (or failed) night and where to look for what it left."""

    work: Path
    state: State[Any]
    flow_run_id: UUID
    log_lines: list[str]
    started: float
    """Epoch seconds: files Prefect wrote since are the night's."""
    mid_run: Path | None = None
    """A copy of the output and state folders taken while the run worked (`snapshot`)."""

    @property
    def config(self) -> RunConfig:
        """The night's run configuration."""
        return load_run_config(self.work / "enrich.yaml")


def snapshot(work: Path, to: Path) -> None:
    """Copy the output and state folders as they are now: the staging folder with its parts
    and the vault, the state store with its write-ahead log."""
    config = load_run_config(work / "enrich.yaml")
    shutil.copytree(config.output_dir, to / "out")
    shutil.copytree(config.state_dir, to / "state", ignore=shutil.ignore_patterns("keys.json"))


def keys_in_environment(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give the run its keys as `ENRICH_*_KEY` variables, as a cluster would, instead of the
    key file (which is removed)."""
    path = work / "state" / "keys.json"
    ring = Keyring.load(path)
    for purpose in KEY_PURPOSES:
        monkeypatch.setenv(
            f"ENRICH_{purpose.upper()}_KEY", encode_secret(ring.active_key(purpose).secret)
        )
    path.unlink()


def run_night(
    shop: Shop,
    where: Path,
    runner: str,
    *,
    prepare: Callable[[Path], None] | None = None,
    when: str | None = None,
    then: Callable[[], None] | None = None,
) -> Night:
    """A copy of the shop (same data and keys, empty state), `prepare`d, run once on `runner`;
    `then` runs at the first log line containing `when`."""
    work = where / "shop"
    shutil.copytree(shop.work, work)
    if prepare is not None:
        prepare(work)
    shop.server.reset()
    shop.app.requests.clear()
    started = time.time()
    handler = _Lines(when, then)
    # at DEBUG: a value logged only when an operator turns debugging on is a leak too
    loggers = {
        logger: logger.level for logger in (logging.getLogger(), logging.getLogger("prefect"))
    }
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        state = nightly_enrichment(
            config_path=str(work / "enrich.yaml"),
            as_of=AS_OF,
            runner=runner,
            workers=2,
            return_state=True,
        )
    finally:
        for logger, level in loggers.items():
            logger.removeHandler(handler)
            logger.setLevel(level)
    APILogWorker.drain_all(timeout=10)  # logs reach the API in batches; send them all now
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    return Night(work, state, flow_run_id, handler.lines, started)


def _pages(read: Callable[[int], list[Any]]) -> list[Any]:
    items: list[Any] = []
    while batch := read(len(items)):
        items += batch
    return items


def prefect_haystacks(client: SyncPrefectClient, flow_run_id: UUID) -> Iterator[tuple[str, bytes]]:
    """What the Prefect API stored of a flow run: logs, the run, its task runs, artifacts,
    events."""
    logs = _pages(
        lambda offset: client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
            limit=200,
            offset=offset,
        )
    )
    assert logs, "no logs reached the Prefect API; the scan would prove nothing"
    yield "Prefect API logs", _text("\n".join(log.model_dump_json() for log in logs))
    yield "Prefect flow run", _text(client.read_flow_run(flow_run_id).model_dump_json())
    runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    task_runs = _pages(
        lambda offset: client.read_task_runs(flow_run_filter=runs, limit=200, offset=offset)
    )
    assert task_runs, "no task runs; the scan would prove nothing"
    yield "Prefect task runs", _text("\n".join(t.model_dump_json() for t in task_runs))
    artifacts = client.read_artifacts(flow_run_filter=runs)
    yield "Prefect artifacts", _text("\n".join(a.model_dump_json() for a in artifacts))
    page = client.read_events(
        EventFilter(any_resource=EventAnyResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"])),
        limit=50,
    )
    events = list(page.events)
    while page.next_page is not None:
        page = client.read_events_page(str(page.next_page))
        events += page.events
    yield "Prefect events", _text("\n".join(e.model_dump_json() for e in events))


def night_haystacks(
    night: Night, shop: Shop, console: str, scratch: Path
) -> Iterator[tuple[str, bytes]]:
    """Everything a night left (see the module docstring)."""
    config = night.config
    crm_columns = {
        preset_from_config(name, config.exports.crm_presets.get(name)).header_for(field)
        for name in config.exports.crm
        for field in ("email", "phone")
    }
    folders = [config.output_dir, config.state_dir]
    if night.mid_run is not None:
        folders += [night.mid_run / "out", night.mid_run / "state"]
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.name == "keys.json":
                continue
            in_crm = "crm" in path.relative_to(folder).parts[1:2]
            yield from file_haystacks(
                path, crm_columns=crm_columns if in_crm else None, scratch=scratch
            )
    yield "Python logging (the flow's process)", _text("\n".join(night.log_lines))
    yield "console (the flow's and the workers' stdout and stderr)", _text(console)
    with get_client(sync_client=True) as client:
        yield from prefect_haystacks(client, night.flow_run_id)
    # Prefect pickles the exception of a failed flow run into its local result storage, even
    # with persist_result=False (flow_engine.handle_exception writes it unconditionally)
    storage = Path(PREFECT_LOCAL_STORAGE_PATH.value())
    written = [p for p in storage.glob("*") if p.is_file() and p.stat().st_mtime >= night.started]
    for path in sorted(written):
        data = path.read_bytes()
        yield f"Prefect result storage {path}", data
        with contextlib.suppress(ValueError):
            yield f"Prefect result storage {path} (decoded)", base64.b64decode(data)
    received = shop.server.received()
    assert set(received["form"]) <= HASHED_FORMS, "the default policy sends hashes only"
    yield "provider server: identifiers received", _text(received.to_csv())
    # the API key is expected in its own providers' auth header: everything else is scanned
    requests: dict[str, list[str]] = defaultdict(list)
    for endpoint, query, headers in shop.app.requests:
        expected = next((AUTH[n][0].lower() for n, e in PATHS.items() if e == endpoint), None)
        rest = {k: v for k, v in headers.items() if k != expected}
        group = endpoint if endpoint in PATHS.values() else endpoint.rsplit("/", 1)[0] + "/*"
        requests[group].append(f"{endpoint}?{query} {json.dumps(rest)}")
    for group, lines in requests.items():
        yield f"provider server: requests to {group}", _text("\n".join(lines))


def needles_of(night: Night, shop: Shop, run_id: str) -> Needles:
    """Every needle of a night of `shop` (the run id names its vault key)."""
    needles = Needles()
    contact_needles(night.config, needles)
    active = key_needles(shop.work / "state" / "keys.json", needles)
    needles.add_key(vault_key(active["pseudonym"], run_id), f"vault key of run {run_id}")
    needles.add_text_key(shop.api_key, f"provider API key (${API_KEY_ENV})")
    return needles


# --- the tests -----------------------------------------------------------------------------


@pytest.fixture
def debug_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes log at DEBUG too (they take the flow's environment)."""
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "DEBUG")


@pytest.mark.usefixtures("debug_workers")
@pytest.mark.parametrize(
    ("runner", "keys"),
    [
        pytest.param("threads", "file", id="threads-key-file"),
        pytest.param("processes", "environment", id="processes-keys-in-environment"),
    ],
)
def test_a_night_leaks_nothing(
    shop: Shop,
    runner: str,
    keys: str,
    *,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(API_KEY_ENV, shop.api_key)

    def prepare(work: Path) -> None:
        if keys == "environment":
            keys_in_environment(work, monkeypatch)

    mid_run = tmp_path / "mid-run"
    # the exports are staged, the store is open: the last moment the vault and parts exist
    night = run_night(
        shop,
        tmp_path,
        runner,
        prepare=prepare,
        when="exports: CRM",
        then=lambda: snapshot(tmp_path / "shop", mid_run),
    )
    night.mid_run = mid_run
    run_dir = Path(night.state.result())
    assert list(mid_run.glob(f"out/.*.partial/{VAULT_DIR}/*.parquet")), "no vault in the copy"
    assert (mid_run / "state" / "state.db-wal").is_file()
    console = "".join(capfd.readouterr())
    out_dir = night.config.output_dir
    assert not [p.name for p in out_dir.iterdir() if p.name.startswith(".")], "staging left"
    # the key reached the server, in the header of its own providers
    for name, path in PATHS.items():
        header, scheme = AUTH[name]
        sent = {h.get(header.lower()) for p, _, h in shop.app.requests if p == path}
        assert sent == {f"{scheme} {shop.api_key}" if scheme else shop.api_key}, name
    needles = needles_of(night, shop, run_dir.name)
    assert len(needles.contacts) > 500
    found, scanned = findings(needles, night_haystacks(night, shop, console, tmp_path / "x"))
    assert not found, "\n".join(found)
    assert {"Prefect events", "Prefect task runs", "Prefect API logs"} <= set(scanned)
    assert any(p.endswith("state.db (rows)") for p in scanned)
    assert any(p.endswith("identity_links.parquet (decoded)") for p in scanned)
    # the needles are the ones the run handles: the CRM export's contact columns hold some
    crm = next((run_dir / "crm").rglob("*.csv")).read_bytes().lower()
    assert find(needles.contacts, crm), "no raw value in the CRM export: wrong needles?"
    # personal data is private to its owner: every folder of the run and of the state 0700,
    # every file 0600 (under umask 022, which would give 0755 and 0644)
    state_dir = night.config.state_dir
    loose = [
        f"{p} {stat.S_IMODE(p.stat().st_mode):04o}"
        for p in [out_dir, *out_dir.rglob("*"), state_dir, *state_dir.rglob("*")]
        if p.name != "run.lock"
        and stat.S_IMODE(p.stat().st_mode) != (0o700 if p.is_dir() else 0o600)
    ]
    assert not loose, "\n".join(loose)


@pytest.mark.usefixtures("debug_workers")
@pytest.mark.parametrize(
    ("runner", "where"),
    [
        pytest.param("threads", "flow", id="threads-secret-missing"),
        pytest.param("processes", "worker", id="processes-secret-missing-in-the-workers"),
    ],
)
def test_a_failed_night_leaves_no_vault_and_leaks_nothing(
    shop: Shop,
    runner: str,
    where: str,
    *,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The night fails after every chunk sealed its vault part: the provider's secret is
    missing when the flow plans the lookups, or only in the worker processes that run them
    (they took the flow's environment before the secret was set: a cluster started without
    the provider's secret variable)."""
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    night = run_night(
        shop,
        tmp_path,
        runner,
        when="identify: 1 of" if where == "worker" else None,
        then=lambda: monkeypatch.setenv(API_KEY_ENV, shop.api_key),
    )
    console = "".join(capfd.readouterr())
    assert night.state.is_failed()
    error = night.state.result(raise_on_failure=False)
    assert isinstance(error, KeyMaterialError)
    assert f"secret env:{API_KEY_ENV} (auth.secret) cannot be resolved" in str(error)
    out_dir = night.config.output_dir
    staged = [p for p in out_dir.iterdir() if p.name.endswith(".partial")]
    assert len(staged) == 1, "a failed run keeps its staging folder for inspection"
    assert (staged[0] / ".parts").is_dir(), "the run failed before its parts were written"
    assert not list(out_dir.rglob(VAULT_DIR)), "a failed run left its vault"
    with get_client(sync_client=True) as client:
        runs = FlowRunFilter(id=FlowRunFilterId(any_=[night.flow_run_id]))
        lookups = [
            t for t in client.read_task_runs(flow_run_filter=runs) if t.name.startswith("lookup-")
        ]
    # where it failed: before any lookup task, or in the worker processes' lookup tasks
    assert {t.state_name for t in lookups} == ({"Failed"} if where == "worker" else set())
    run_id = staged[0].name.removeprefix(".").removesuffix(".partial")
    needles = needles_of(night, shop, run_id)
    found, scanned = findings(needles, night_haystacks(night, shop, console, tmp_path / "x"))
    assert not found, "\n".join(found)
    assert any(".parts/" in p for p in scanned), "the staging folder was not scanned"


def test_the_scan_finds_each_form_a_leak_takes(tmp_path: Path) -> None:
    """The scan itself: a value hidden by each encoding the haystacks undo is found, named by
    place and kind, and the finding does not show it."""
    needles = Needles()
    needles.add_contact("Jörg.Brandt@Example.org", "raw email (crm row 1)")
    needles.add_contact("+4520123456", "E.164 phone (crm row 1)")
    key = bytes(range(224, 256))  # its base64 has "+" and "/": the URL-safe form differs
    needles.add_key(key, "pseudonym key k1")
    files = tmp_path / "files"
    files.mkdir()
    # compressed and dictionary-encoded: the bytes alone do not show it
    pd.DataFrame({"x": ["JÖRG.BRANDT@EXAMPLE.ORG"] * 50}).to_parquet(files / "a.parquet")
    (files / "b.jsonl.gz").write_bytes(
        gzip.compress(json.dumps({"k": base64.urlsafe_b64encode(key).decode()}).encode())
    )
    (files / "c.json").write_text(json.dumps({"to": "jörg.brandt@example.org"}))  # \u00f6
    (files / "d.html").write_text("<td>jörg.brandt&#64;example.org</td>", encoding="utf-8")
    with contextlib.closing(sqlite3.connect(files / "e.db")) as conn:
        conn.execute("CREATE TABLE t (v TEXT)")
        conn.execute("INSERT INTO t VALUES (?)", ("x" * 5000 + "+4520123456",))  # overflow
        conn.commit()
    crm = pd.DataFrame({"Email": ["jörg.brandt@example.org"], "note": [key.hex()]})
    crm.to_csv(files / "contacts.csv", index=False)

    def haystacks() -> Iterator[tuple[str, bytes]]:
        for path in sorted(files.iterdir()):
            columns = {"Email"} if path.name == "contacts.csv" else None
            yield from file_haystacks(path, crm_columns=columns, scratch=tmp_path / "x")

    found, scanned = findings(needles, haystacks())
    places = {line.split(": ", 1)[0].removeprefix(str(files) + "/"): line for line in found}
    expected = {
        "a.parquet (decoded)",
        "b.jsonl.gz (decompressed)",
        "c.json (unescaped)",
        "d.html (unescaped)",
        "e.db (rows)",
        "contacts.csv (without its email and phone columns)",
    }
    assert expected <= set(places)  # and maybe the raw bytes of a.parquet and e.db
    assert "pseudonym key k1 (urlsafe base64)" in places["b.jsonl.gz (decompressed)"]
    assert "pseudonym key k1 (hex)" in places["contacts.csv (without its email and phone columns)"]
    assert "raw email (crm row 1)" in places["a.parquet (decoded)"]
    assert "E.164 phone (crm row 1)" in places["e.db (rows)"]
    assert len(scanned) == 11
    shown = "\n".join(found).lower()
    assert "brandt" not in shown
    assert "4520123456" not in shown
    assert key.hex() not in shown
    assert base64.urlsafe_b64encode(key).decode().lower() not in shown
