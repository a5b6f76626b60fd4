"""End to end: consent, minors, erasure and objection decide what each gate allows.

`fixtures/policy` holds six people: Astrid consented to everything, Bent withdrew every
consent, Clara is 14, Dorte asks to be erased, Emil objects to direct marketing, Frida never
consented and never bought anything.
"""

from __future__ import annotations

import gzip
import json
import shutil
import stat
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from policy.audit import ChainedDecisionLog
from profiles.config import load_run_config
from tests.flows.test_nightly import Run, _init_keys, _needles, _run

FIXTURE = Path(__file__).parents[2] / "fixtures" / "policy"
PURPOSES = ["enrichment", "profiling", "crm_export", "ads_export", "analytics"]
CRM_LINE = {"astrid": 2, "bent": 3, "clara": 4, "dorte": 5, "emil": 6, "frida": 7}
runner = CliRunner()


def _cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _decisions(run: Run) -> dict[str, dict[str, str]]:
    """person → purpose → decision, from profiles.parquet."""
    links = run.links()
    profiles = run.profiles().set_index("profile_id")
    crm = links[links["source"] == "crm"].set_index("line")["profile_id"]
    return {
        person: {p: str(profiles.at[crm[line], f"decision_{p}"]) for p in PURPOSES}
        for person, line in CRM_LINE.items()
        if line in crm.index
    }


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run, Run]:
    work = tmp_path_factory.mktemp("policy")
    shutil.copytree(FIXTURE, work, dirs_exist_ok=True)
    _init_keys(work)
    config = str(work / "enrich.yaml")
    first = _run(work)
    _cli(
        "dsar", "erase", "-c", config, "--email", "Dorte.Erase@example.net", "--request-ref", "T-1"
    )
    _cli(
        "dsar", "object", "-c", config, "--to", "direct_marketing",
        "--email", "emil.objects@example.com", "--request-ref", "T-2",
    )  # fmt: skip
    second = _run(work)
    return work, first, second


def test_first_night_decides_by_consent_age_and_customer_relation(
    nights: tuple[Path, Run, Run],
) -> None:
    _, first, _ = nights
    decisions = _decisions(first)
    assert decisions["astrid"] == dict.fromkeys(PURPOSES, "allow")
    assert decisions["bent"] == dict.fromkeys(PURPOSES, "deny")  # withdrew everything
    assert decisions["frida"] == dict.fromkeys(PURPOSES, "deny")  # no basis: default deny
    clara = decisions["clara"]
    assert (clara["enrichment"], clara["profiling"], clara["ads_export"]) == ("deny",) * 3
    assert decisions["emil"]["profiling"] == "allow"


def test_erased_and_objecting_people_are_out_of_every_allowed_set(
    nights: tuple[Path, Run, Run],
) -> None:
    _, _, second = nights
    decisions = _decisions(second)
    assert "dorte" not in decisions  # no row of hers reached identity resolution
    emil = decisions["emil"]
    assert (emil["profiling"], emil["crm_export"], emil["ads_export"]) == ("deny",) * 3
    allowed = {
        purpose: {person for person, d in decisions.items() if d[purpose] != "deny"}
        for purpose in PURPOSES
    }
    for purpose in ("enrichment", "profiling", "ads_export"):
        assert not allowed[purpose] & {"bent", "clara", "dorte", "emil", "frida"}, purpose
    assert allowed["profiling"] == {"astrid"}


def test_erasure_leaves_no_trace_in_the_next_outputs(nights: tuple[Path, Run, Run]) -> None:
    work, first, second = nights
    totals = second.summary()["totals"]
    assert totals["rows_erased"] == 5  # her CRM row, her order and three consent rows
    assert totals["rows_in"] == (
        totals["rows_accepted"] + totals["rows_quarantined"] + totals["rows_erased"]
    )
    dorte = {n for n in _needles(work) if "dorte" in n.lower() or "7946 0444" in n}
    assert dorte
    first_links = first.links()
    crm = first_links[first_links["source"] == "crm"].set_index("line")
    hers = first_links[first_links["profile_id"] == crm.at[CRM_LINE["dorte"], "profile_id"]]
    assert set(hers["source"]) == {"crm", "shop", "consents"}
    columns = ["profile_id", "email_pseudonym", "phone_pseudonym", "customer_id_pseudonym"]
    traces = {str(v) for v in hers[columns].to_numpy().ravel() if isinstance(v, str)}
    assert len(traces) >= 4  # her profile id, email, phone, CRM id and shop id
    for path in (p for p in second.run_dir.rglob("*") if p.is_file()):
        text = (
            pd.read_parquet(path).to_csv()
            if path.suffix == ".parquet"
            else path.read_text(encoding="utf-8")
        )
        assert not {t for t in traces if t in text}, f"erased person in {path.name}"
        assert not {n for n in dorte if n in text}, f"erased person in {path.name}"


def test_every_gate_decision_is_in_the_log_with_a_reason(nights: tuple[Path, Run, Run]) -> None:
    work, _, second = nights
    config = load_run_config(work / "enrich.yaml")
    run_id = second.run_dir.name
    entries = [
        e for e in ChainedDecisionLog(config.decision_log_dir).entries() if e["run_id"] == run_id
    ]
    profiles = second.profiles()
    assert len(entries) == len(profiles) * len(PURPOSES)
    gate_a = [e for e in entries if e["gate"] == "A"]
    assert {e["subject"] for e in gate_a} == set(profiles["profile_id"])
    assert all(e["reason"] for e in entries)
    denied = [e for e in gate_a if e["decision"] == "deny"]
    summary = second.summary()["policy"]["decisions"]
    assert len(denied) == sum(
        d["subjects"] for d in summary if d["gate"] == "A" and d["decision"] == "deny"
    )
    assert {e["policy_hash"] for e in entries} == {second.summary()["policy"]["bundle"]["hash"]}
    erasure = [
        e for e in ChainedDecisionLog(config.decision_log_dir).entries() if e["gate"] == "DSAR"
    ]
    assert [(e["reason"], e["evidence"]) for e in erasure] == [
        ("ERASED", "T-1"),
        ("OBJECTED", "T-2"),
    ]


def test_access_request_writes_everything_held_to_a_private_file(
    nights: tuple[Path, Run, Run], tmp_path: Path
) -> None:
    work, _, second = nights
    out = tmp_path / "emil.json"
    _cli(
        "dsar", "access", "-c", str(work / "enrich.yaml"),
        "--email", "emil.objects@example.com", "--out", str(out),
    )  # fmt: skip
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    package = json.loads(out.read_text(encoding="utf-8"))
    assert package["searched_with"]["email"] == ["emil.objects@example.com"]
    assert len(package["profile_ids"]) == 1
    assert {r["purpose"] for r in package["consent_records"]} == {
        "enrichment", "profiling", "crm_export", "ads_export",
    }  # fmt: skip
    assert {s["suppression"] for s in package["suppressions"]} == {"objection_direct_marketing"}
    assert package["latest_run"]["run"] == second.run_dir.name
    assert {r["source"] for r in package["latest_run"]["rows"]} == {"crm", "shop", "consents"}
    assert any(d["gate"] == "B" and d["decision"] == "deny" for d in package["decisions"])


def test_policy_diff_shows_the_effect_of_a_stricter_bundle(
    nights: tuple[Path, Run, Run], tmp_path: Path
) -> None:
    work, _, _ = nights
    default = Path(__file__).parents[2] / "policy" / "conf" / "default.yaml"
    strict = tmp_path / "strict.yaml"
    bundle = yaml.safe_load(default.read_text(encoding="utf-8"))
    # the stricter bundle drops the legitimate-interests basis for analytics
    bundle["rules"] = [
        r for r in bundle["rules"] if r["id"] != "customer-analytics-legitimate-interests"
    ]
    strict.write_text(yaml.safe_dump(bundle, sort_keys=False), encoding="utf-8")
    output = _cli("policy", "diff", str(default), str(strict), "-c", str(work / "enrich.yaml"))
    [row] = [
        line.split()
        for line in output.splitlines()
        if line.startswith("analytics") and "default-deny" in line
    ]
    changed, allow_to_deny = int(row[4]), int(row[5])
    assert changed == allow_to_deny >= 1  # existing customers without analytics consent
    assert "total" in output
    for name in ("astrid", "clara", "emil", "Dorte", "@example"):
        assert name not in output


# --- the audit side: verify, one person's decisions, erasure, records of processing ---------


def test_the_log_verifies_and_the_cli_names_the_spot_of_an_edit(
    nights: tuple[Path, Run, Run], tmp_path: Path
) -> None:
    work, _, _ = nights
    config = str(work / "enrich.yaml")
    log_dir = load_run_config(work / "enrich.yaml").decision_log_dir
    assert "verified:" in _cli("audit", "verify", str(log_dir), "-c", config)
    copy = tmp_path / "log"
    shutil.copytree(log_dir, copy)
    segment = sorted((copy / "segments").iterdir())[0]
    lines = gzip.decompress(segment.read_bytes()).decode("utf-8").splitlines()
    lines[3] = lines[3].replace('"decision":"', '"decision":"x', 1)
    segment.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8")))
    result = runner.invoke(app, ["audit", "verify", str(copy), "-c", config])
    assert result.exit_code == 1
    assert f"segment {segment.name}, line 4, seq 3: hash does not match" in result.output
    assert "verification FAILED" in result.output


def test_one_persons_decisions_are_found_until_they_are_erased(
    nights: tuple[Path, Run, Run],
) -> None:
    work, first, _ = nights
    config = str(work / "enrich.yaml")
    emil = _cli("audit", "subject", "-c", config, "--email", "emil.objects@example.com")
    assert "decisions about profile(s)" in emil
    assert "emil.objects@example.com" not in emil
    dorte = _cli("audit", "subject", "-c", config, "--email", "Dorte.Erase@example.net")
    assert "no profile holds these identifiers" in dorte
    # her decisions stay in the log (they prove lawful processing) and the erasure is logged
    log = ChainedDecisionLog(load_run_config(work / "enrich.yaml").decision_log_dir)
    erased = [e for e in log.entries() if e["reason"] == "ERASED"]
    assert len(erased) == 1
    hers = [e for e in log.entries(str(erased[0]["subject"])) if e["run_id"] == first.run_dir.name]
    assert len(hers) == len(PURPOSES)


def test_records_of_processing_are_written_as_markdown_and_json(
    nights: tuple[Path, Run, Run], tmp_path: Path
) -> None:
    work, _, _ = nights
    _cli("audit", "ropa", "-c", str(work / "enrich.yaml"), "--out", str(tmp_path / "ropa"))
    document = json.loads((tmp_path / "ropa" / "ropa.json").read_text(encoding="utf-8"))
    assert [a["purpose"] for a in document["activities"]] == PURPOSES
    markdown = (tmp_path / "ropa" / "ropa.md").read_text(encoding="utf-8")
    assert markdown.startswith("# Record of processing activities")


def test_the_audit_report_is_written_from_the_log_and_the_run_summaries(
    nights: tuple[Path, Run, Run], tmp_path: Path
) -> None:
    work, _, _ = nights
    config = load_run_config(work / "enrich.yaml")
    out = tmp_path / "audit.html"
    printed = _cli(
        "audit", "report", str(config.decision_log_dir), "-c", str(work / "enrich.yaml"),
        "--out", str(out),
    )  # fmt: skip
    assert "chain verified" in printed
    page = out.read_text(encoding="utf-8")
    assert "VERIFIED" in page
    assert "Decisions per run" in page
    entries = sum(1 for _ in ChainedDecisionLog(config.decision_log_dir).entries())
    assert f"{entries:,}" in page
    subjects = {str(e["subject"]) for e in ChainedDecisionLog(config.decision_log_dir).entries()}
    assert not [s for s in subjects if s in page]
