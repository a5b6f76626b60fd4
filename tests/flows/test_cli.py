"""Tests of the `enrich` command line, run in-process with typer's runner."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from enrichers.testing import provider_entries
from flows.cli import app
from flows.keys import resolve_signer
from profiles.config import load_run_config
from profiles.errors import ConfigError
from profiles.settings import EnrichSettings

FIXTURE = Path(__file__).parents[2] / "fixtures" / "small"
runner = CliRunner()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE, tmp_path, dirs_exist_ok=True)
    return tmp_path


def test_keys_init_creates_a_private_key_file_once(work: Path) -> None:
    config = str(work / "enrich.yaml")
    first = runner.invoke(app, ["keys", "init", "--config", config])
    assert first.exit_code == 0, first.output
    path = work / "state" / "keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    content = path.read_text()
    assert "created pseudonym k" in first.output
    secret = json.loads(content)["keys"]["pseudonym"]
    assert all(entry["secret"] not in first.output for entry in secret.values())

    again = runner.invoke(app, ["keys", "init", "--config", config])
    assert again.exit_code == 0
    assert "keys exist" in again.output
    assert path.read_text() == content

    rotated = runner.invoke(app, ["keys", "rotate", "pseudonym", "--config", config])
    assert rotated.exit_code == 0, rotated.output
    ring = json.loads(path.read_text())
    assert len(ring["keys"]["pseudonym"]) == 2


def test_check_reports_every_problem_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "enrich.yaml"
    bad.write_text("sources:\n  - {name: X, path: a.csv, columns: {first_name: n}}\n")
    result = runner.invoke(app, ["check", "--config", str(bad)])
    assert result.exit_code == 2
    assert "2 problem(s)" in result.output
    assert "enrich.yaml:2: sources[0].name" in result.output


def test_check_names_missing_source_files(work: Path) -> None:
    (work / "data" / "newsletter.csv").unlink()
    result = runner.invoke(app, ["check", "--config", str(work / "enrich.yaml")])
    assert result.exit_code == 2
    assert "source newsletter: file" in result.output


def test_run_without_keys_explains_how_to_get_one(work: Path) -> None:
    result = runner.invoke(app, ["run", "--config", str(work / "enrich.yaml")])
    assert result.exit_code == 2
    assert "no pseudonym key" in result.output
    assert "enrich keys init" in result.output


def test_run_prints_the_output_folder_and_quarantine_show_opens_rows(work: Path) -> None:
    config = str(work / "enrich.yaml")
    assert runner.invoke(app, ["keys", "init", "--config", config]).exit_code == 0
    result = runner.invoke(app, ["run", "--config", config, "--run-id", "night-1"])
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert folder == work / "out" / "night-1"
    assert (folder / "run_summary.json").is_file()

    shown = runner.invoke(
        app, ["quarantine", "show", str(folder), "--config", config, "--source", "crm"]
    )
    assert shown.exit_code == 0, shown.output
    assert "lars..hansen@example.com" in shown.output  # operator view opens the sealed row
    assert "ROW_UNPARSEABLE" in shown.output


def test_quarantine_show_refuses_without_the_right_key(work: Path) -> None:
    config = str(work / "enrich.yaml")
    runner.invoke(app, ["keys", "init", "--config", config])
    result = runner.invoke(app, ["run", "--config", config, "--run-id", "night-2"])
    assert result.exit_code == 0, result.output
    (work / "state" / "keys.json").unlink()
    runner.invoke(app, ["keys", "init", "--config", config])  # different keys now
    shown = runner.invoke(app, ["quarantine", "show", str(work / "out" / "night-2"), "-c", config])
    assert shown.exit_code == 2
    assert "has no quarantine key" in shown.output


def test_keys_init_pins_the_signing_key_and_a_rotated_one_must_be_pinned(work: Path) -> None:
    config = work / "enrich.yaml"
    first = runner.invoke(app, ["keys", "init", "--config", str(config)])
    assert first.exit_code == 0, first.output
    assert "pinned (audit.public_keys)" in first.output
    cfg = load_run_config(config)
    assert len(cfg.audit.public_keys) == 1
    signer = resolve_signer(EnrichSettings(), cfg.state_dir, cfg.audit.public_keys, config=config)
    assert signer.public_key == cfg.audit.public_keys[0]

    rotated = runner.invoke(app, ["keys", "rotate", "signing", "--config", str(config)])
    assert rotated.exit_code == 0, rotated.output
    assert "pin it before the next run" in rotated.output
    with pytest.raises(ConfigError, match="is not pinned"):
        resolve_signer(EnrichSettings(), cfg.state_dir, cfg.audit.public_keys, config=config)
    ring = json.loads((work / "state" / "keys.json").read_text())
    assert len(ring["keys"]["signing"]) == 2
    assert all(k["secret"] not in rotated.output for k in ring["keys"]["signing"].values())


def test_check_warns_about_provider_topics_the_taxonomy_does_not_list(work: Path) -> None:
    entry = provider_entries("http://127.0.0.1:9")[0]
    entry["topic_map"] = {**entry["topic_map"], "astrology": "interest.astrology"}
    with (work / "enrich.yaml").open("a", encoding="utf-8") as fh:
        fh.write(yaml.safe_dump({"enrichment": {"providers": [entry]}}, sort_keys=False))
    result = runner.invoke(app, ["check", "--config", str(work / "enrich.yaml")])
    assert result.exit_code == 0, result.output
    assert "topic_map targets interest.astrology, which the taxonomy does not list" in (
        result.output
    )


@pytest.mark.parametrize(
    "mode",
    [0o640, 0o604, 0o644],
    ids=["group-readable", "world-readable", "group-and-world-readable"],
)
def test_run_refuses_a_key_file_others_can_read(work: Path, mode: int) -> None:
    config = str(work / "enrich.yaml")
    assert runner.invoke(app, ["keys", "init", "--config", config]).exit_code == 0
    path = work / "state" / "keys.json"
    path.chmod(mode)
    result = runner.invoke(app, ["run", "--config", config])
    assert result.exit_code == 2, result.output
    assert f"key file {path} is readable by others (mode {mode:04o})" in result.output
    assert f"`chmod 600 {path}`" in result.output
    assert not (work / "out").exists()  # refused before any row was read


def test_run_refuses_a_key_file_in_a_folder_anyone_may_write_to(work: Path) -> None:
    config = str(work / "enrich.yaml")
    assert runner.invoke(app, ["keys", "init", "--config", config]).exit_code == 0
    folder = work / "state"
    folder.chmod(0o777)
    result = runner.invoke(app, ["run", "--config", config])
    assert result.exit_code == 2, result.output
    assert f"key file {folder / 'keys.json'} is in a folder anyone may write to" in result.output
    assert f"`chmod o-w {folder}`" in result.output
    assert not (work / "out").exists()


def test_quarantine_show_cuts_huge_values_unless_asked_for_them_whole(work: Path) -> None:
    config = str(work / "enrich.yaml")
    assert runner.invoke(app, ["keys", "init", "--config", config]).exit_code == 0
    huge = "x" * 50_000 + "@example.com"  # not an email, and no other identifier: quarantined
    with (work / "data" / "contacts.csv").open("a", encoding="utf-8") as fh:
        fh.write(f",Big,Field,{huge},,DK\n")
    result = runner.invoke(app, ["run", "--config", config, "--run-id", "night-3"])
    assert result.exit_code == 0, result.output
    folder = str(work / "out" / "night-3")
    show = ["quarantine", "show", folder, "-c", config, "--source", "crm", "--limit", "100"]

    cut = runner.invoke(app, show)
    assert cut.exit_code == 0, cut.output
    assert f"{len(huge) + 2:,} characters in all; --full shows them" in cut.output
    assert huge not in cut.output
    assert len(cut.output) < 20_000

    whole = runner.invoke(app, [*show, "--full"])
    assert whole.exit_code == 0, whole.output
    assert repr(huge) in whole.output
