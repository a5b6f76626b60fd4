"""End-to-end tests of the nightly flow on a real (temporary) Prefect server.

Two inputs: the hand-written `fixtures/small` folder, whose expected outcome per row is written
down in `fixtures/small/expected.csv`, and a synthetic folder from `enrich synth` whose
`truth.csv` holds the expected outcome of every row.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pandas as pd
import phonenumbers
import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import Artifact
from prefect.logging.handlers import APILogWorker

from flows.keys import pin_public_key
from flows.nightly import AUDIT_ARTIFACT_KEY, SUMMARY_ARTIFACT_KEY, nightly_enrichment
from policy.audit import ChainedDecisionLog, Signer, pinned_keys, verify
from profiles.config import SourceConfig, load_run_config
from profiles.errors import SourceError
from profiles.hashing import Keyring
from profiles.quarantine import field_reasons
from profiles.rundir import LINK_COLUMNS, NightLock, NightLockedError
from profiles.synth import generate

FIXTURE = Path(__file__).parents[2] / "fixtures" / "small"


@dataclass(frozen=True)
class Run:
    """A finished run and everything it left behind."""

    work: Path
    run_dir: Path
    flow_run_id: UUID
    log_lines: list[str]

    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.run_dir / "run_summary.json").read_text())
        return data

    def profiles(self) -> pd.DataFrame:
        return pd.read_parquet(self.run_dir / "profiles.parquet")

    def links(self) -> pd.DataFrame:
        return pd.read_parquet(self.run_dir / "identity_links.parquet")

    def quarantine(self) -> pd.DataFrame:
        return pd.read_csv(self.run_dir / "quarantine.csv", dtype=str, keep_default_na=False)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _init_keys(work: Path) -> None:
    """What `enrich keys init` does: the key file, and the signing key pinned in enrich.yaml."""
    ring = Keyring()
    ring.add("pseudonym")
    ring.add("quarantine")
    ring.add("signing")
    ring.save(work / "state" / "keys.json")
    _pin(work)


def _pin(work: Path) -> None:
    """Pin the key file's signing key in enrich.yaml (again after `synth` rewrote it)."""
    signing = Keyring.load(work / "state" / "keys.json").active_key("signing")
    assert pin_public_key(work / "enrich.yaml", Signer.from_seed(signing.secret).public_key)


def _run(work: Path) -> Run:
    handler = _Collect()
    loggers = [logging.getLogger(), logging.getLogger("prefect")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        state = nightly_enrichment(config_path=str(work / "enrich.yaml"), return_state=True)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    APILogWorker.drain_all(timeout=10)  # logs reach the API in batches; send them all now
    run_dir = Path(state.result())
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    return Run(work, run_dir, flow_run_id, handler.lines)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    work = tmp_path_factory.mktemp("small")
    shutil.copytree(FIXTURE, work, dirs_exist_ok=True)
    _init_keys(work)
    return _run(work)


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    work = tmp_path_factory.mktemp("synth")
    generate(people=400, out_dir=work, seed=11)
    _init_keys(work)
    return _run(work)


def _outcomes(run: Run) -> pd.DataFrame:
    """Where each (source, line) ended: outcome, row reason and field reasons."""
    profiles = run.links()
    accepted = pd.DataFrame(
        {
            "source": profiles["source"],
            "line": profiles["line"].astype("int64"),
            "outcome": "accepted",
            "reason": "",
            "field_reasons": field_reasons(profiles),
        }
    )
    quarantine = run.quarantine()
    quarantined = pd.DataFrame(
        {
            "source": quarantine["source"],
            "line": quarantine["line"].astype("int64"),
            "outcome": "quarantined",
            "reason": quarantine["reason"],
            "field_reasons": quarantine["field_reasons"],
        }
    )
    both = pd.concat([accepted, quarantined], ignore_index=True)
    return both.sort_values(["source", "line"], ignore_index=True)


def test_fixture_rows_end_where_expected(small_run: Run) -> None:
    expected = pd.read_csv(FIXTURE / "expected.csv", dtype=str, keep_default_na=False)
    expected["line"] = expected["line"].astype("int64")
    expected = expected.sort_values(["source", "line"], ignore_index=True)
    pd.testing.assert_frame_equal(_outcomes(small_run), expected)


def test_summary_balances_per_source(small_run: Run) -> None:
    summary = small_run.summary()
    sources = summary["sources"]
    assert isinstance(sources, dict)
    assert {
        k: (v["rows_in"], v["rows_accepted"], v["rows_quarantined"]) for k, v in sources.items()
    } == {
        "crm": (9, 7, 2),
        "newsletter": (5, 2, 3),
        "shop": (4, 3, 1),
    }
    assert sources["crm"]["quarantined_by_reason"] == {"ROW_NO_IDENTIFIER": 1, "ROW_UNPARSEABLE": 1}
    assert sources["crm"]["field_rejections"]["email"] == {
        "EMAIL_PLACEHOLDER": 1,
        "EMAIL_SYNTAX": 2,
    }
    assert summary["totals"] == {
        "rows_in": 18,
        "rows_accepted": 12,
        "rows_quarantined": 6,
        "rows_erased": 0,
    }


def test_links_hold_pseudonyms_and_attributes_only(small_run: Run) -> None:
    links = small_run.links()
    assert tuple(links.columns) == LINK_COLUMNS
    assert not {"email", "phone", "customer_id", "first_name", "last_name"} & set(links.columns)
    crm = links[links["source"] == "crm"].set_index("line").astype(str).to_dict("index")
    assert crm[2]["country"] == "DK"
    assert crm[3]["country"] == "FR"
    assert len(crm[2]["email_pseudonym"]) == 64
    assert crm[2]["first_name_present"] == "True"
    shop = links[links["source"] == "shop"].set_index("line").astype(str).to_dict("index")
    # the same address written differently in two sources is one pseudonym, one profile
    assert crm[2]["email_pseudonym"] == shop[1]["email_pseudonym"] == shop[2]["email_pseudonym"]
    assert crm[2]["profile_id"] == shop[1]["profile_id"] == shop[2]["profile_id"]
    # one customer id in one namespace is one pseudonym
    assert shop[1]["customer_id_pseudonym"] == shop[2]["customer_id_pseudonym"]
    assert links["key_id"].nunique() == 1
    assert shop[1]["amount"] == "199.5"


def test_one_profile_row_per_person_with_golden_provenance(small_run: Run) -> None:
    profiles = small_run.profiles()
    links = small_run.links()
    assert profiles["profile_id"].is_unique
    assert set(profiles["profile_id"]) == set(links["profile_id"])
    assert profiles["records"].sum() == len(links)
    soren = profiles[profiles["profile_id"] == links.loc[0, "profile_id"]].iloc[0]
    assert soren["records"] == 3  # crm line 2 and two shop orders
    assert list(soren["sources"]) == ["crm", "shop"]
    assert len(soren["email_pseudonyms"]) == 1
    assert len(soren["customer_id_pseudonyms"]) == 2  # crm:1001 and shop:C001
    assert (soren["country"], soren["country_source"], soren["country_line"]) == ("DK", "crm", 2)
    assert (soren["first_name_source"], soren["first_name_line"]) == ("crm", 2)
    assert "first_name" not in profiles.columns


def test_outputs_are_published_whole(small_run: Run) -> None:
    out_dir = small_run.run_dir.parent
    assert sorted(p.name for p in small_run.run_dir.iterdir()) == [
        "analytics.parquet",
        "audiences",
        "crm",
        "identity_links.parquet",
        "personas.json",
        "profiles.parquet",
        "quarantine.csv",
        "report.html",
        "run_summary.json",
        "signals.parquet",
    ]
    assert not [p for p in out_dir.iterdir() if p.name.endswith(".partial")]


def raw_source(source: SourceConfig) -> pd.DataFrame:
    """A source file's cells as text, as written (bad lines skipped, bad bytes replaced)."""
    if source.format == "parquet":
        return pd.read_parquet(source.path).astype("string").fillna("")
    return pd.read_csv(
        source.path,
        dtype=str,
        keep_default_na=False,
        encoding="utf-8-sig" if source.encoding == "utf-8" else source.encoding,
        sep=source.delimiter,
        on_bad_lines="skip",
        encoding_errors="replace",
    )


def _needles(work: Path) -> set[str]:
    """Every raw email, phone and name in the inputs, as written and as normalised."""
    config = load_run_config(work / "enrich.yaml")
    needles: set[str] = set()
    for source in config.sources:
        frame = raw_source(source)
        for field, column in source.columns.items():
            if field not in {"email", "phone", "first_name", "last_name"}:
                continue
            for raw in frame[column]:
                value = raw.strip()
                digits = [ch for ch in value if ch.isdigit()]
                # placeholders such as 000000 identify nobody (and occur inside hex digests)
                if field == "phone" and len(digits) >= 6 and len(set(digits)) >= 3:
                    needles.add(value)
                    try:
                        number = phonenumbers.parse(value, "DK")
                        needles.add(
                            phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
                        )
                    except phonenumbers.NumberParseException:
                        pass
                elif field == "email" and "@" in value and len(value) >= 6:
                    needles.update({value, value.lower()})
                elif field in {"first_name", "last_name"} and len(value) >= 5:
                    needles.add(value)
    return needles


def _artifacts(client: SyncPrefectClient, flow_run_id: UUID) -> list[Artifact]:
    return client.read_artifacts(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    )


def _text_of(path: Path) -> str:
    if path.suffix == ".parquet":
        return pd.read_parquet(path).to_csv()
    data = path.read_bytes()
    return (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8", "replace")


def _haystacks(run: Run) -> Iterator[tuple[str, str]]:
    """Everything a run leaves, except the CRM export: its email and phone columns are what the
    marketer imports (gate C allowed them for those people; tested in test_export_runs)."""
    for path in run.run_dir.rglob("*"):
        if path.is_file() and "crm" not in path.relative_to(run.run_dir).parts:
            yield str(path), _text_of(path)
    for path in (run.work / "state").rglob("*"):
        if path.is_file():
            yield str(path), _text_of(path)
    yield "python logging", "\n".join(run.log_lines)
    with get_client(sync_client=True) as client:
        messages: list[str] = []
        while batch := client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.flow_run_id])),
            limit=200,
            offset=len(messages),
        ):
            messages += [log.message for log in batch]
        assert messages, "no logs reached the Prefect API; the scan would prove nothing"
        yield "prefect logs", "\n".join(messages)
        flow_run = client.read_flow_run(run.flow_run_id)
        yield "flow parameters", json.dumps(flow_run.parameters)
        artifacts = _artifacts(client, run.flow_run_id)
        assert len(artifacts) >= 2, "expected the summary and progress artifacts"
        yield "artifacts", "\n".join(f"{a.description}\n{a.data}" for a in artifacts)


@pytest.mark.parametrize("which", ["small_run", "synth_run"])
def test_no_raw_identifier_leaves_the_identifier_stage(
    which: str, request: pytest.FixtureRequest
) -> None:
    run: Run = request.getfixturevalue(which)
    needles = _needles(run.work)
    assert len(needles) > 10
    scanned = 0
    for where, text in _haystacks(run):
        scanned += 1
        leaked = sorted(n for n in needles if n in text)
        assert not leaked, f"{len(leaked)} raw value(s) found in {where}"
    assert scanned >= 8
    assert run.log_lines, "the run logged nothing; the scan would prove nothing"


def test_summary_artifact_has_the_counts(small_run: Run) -> None:
    with get_client(sync_client=True) as client:
        artifacts = [
            a for a in _artifacts(client, small_run.flow_run_id) if a.key == SUMMARY_ARTIFACT_KEY
        ]
    assert any(a.flow_run_id == small_run.flow_run_id for a in artifacts)
    markdown = next(str(a.data) for a in artifacts if a.flow_run_id == small_run.flow_run_id)
    assert "| crm | 9 | 7 | 2 | ROW_NO_IDENTIFIER 1, ROW_UNPARSEABLE 1 |" in markdown
    assert "| **total** | **18** | **12** | **6** | |" in markdown


def test_the_run_is_sealed_by_a_signed_checkpoint_shown_as_an_artifact(small_run: Run) -> None:
    config = load_run_config(small_run.work / "enrich.yaml")
    log = ChainedDecisionLog(config.decision_log_dir)
    checkpoint = log.checkpoints()[-1]
    assert checkpoint["run_id"] == small_run.run_dir.name
    assert verify(config.decision_log_dir, pinned_keys(config.audit.public_keys)).ok
    with get_client(sync_client=True) as client:
        artifacts = [
            a for a in _artifacts(client, small_run.flow_run_id) if a.key == AUDIT_ARTIFACT_KEY
        ]
    assert len(artifacts) == 1
    assert f"| head_hash | `{checkpoint['head_hash']}` |" in str(artifacts[0].data)


def test_every_synthetic_row_ends_as_the_truth_says(synth_run: Run) -> None:
    truth = pd.read_csv(synth_run.work / "data" / "truth.csv", dtype=str, keep_default_na=False)
    truth["line"] = truth["line"].astype("int64")
    outcomes = _outcomes(synth_run)
    merged = truth.merge(outcomes, on=["source", "line"], how="outer", indicator=True)
    assert (merged["_merge"] == "both").all(), "rows missing on one side"
    assert len(outcomes) == len(truth)
    bad = truth["expected_reason"] != ""
    assert bad.sum() > 0
    mismatched_reason = merged[merged["expected_reason"] != merged["reason"]]
    assert mismatched_reason.empty, mismatched_reason[
        ["source", "line", "expected_reason", "reason"]
    ]
    mismatched_fields = merged[merged["expected_field_reasons"] != merged["field_reasons"]]
    assert mismatched_fields.empty, mismatched_fields[
        ["source", "line", "expected_field_reasons", "field_reasons"]
    ]
    summary = synth_run.summary()
    assert summary["totals"]["rows_in"] == len(truth)


def test_missing_source_file_fails_the_run_naming_the_file(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE, tmp_path, dirs_exist_ok=True)
    _init_keys(tmp_path)
    (tmp_path / "data" / "newsletter.csv").unlink()
    with pytest.raises(SourceError, match=r"source newsletter: file .*newsletter\.csv not found"):
        nightly_enrichment(config_path=str(tmp_path / "enrich.yaml"))
    assert not list((tmp_path / "out").glob("2*")), "a failed run published outputs"


def test_a_second_run_on_the_same_state_is_refused_not_interleaved(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE, tmp_path, dirs_exist_ok=True)
    _init_keys(tmp_path)
    config = load_run_config(tmp_path / "enrich.yaml")
    with NightLock(config.state_dir):
        state = nightly_enrichment(config_path=str(tmp_path / "enrich.yaml"), return_state=True)
    assert state.is_failed()
    with pytest.raises(NightLockedError, match="another run holds"):
        state.result()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
