"""Tests for enrich.yaml loading: valid files, every error at once with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiles.config import load_run_config
from profiles.errors import ConfigError
from profiles.types import CanonicalField, SourceKind


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "enrich.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_config_resolves_paths_against_its_folder(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
sources:
  - name: crm
    kind: contacts
    path: data/crm.csv
    encoding: latin-1
    delimiter: ";"
    default_region: dk
    columns: {email: E-mail, phone: Mobile, customer_id: Id}
    id_namespace: crm
output_dir: out
schedule: {cron: "30 1 * * *", timezone: Europe/Copenhagen}
""",
    )
    config = load_run_config(path)
    source = config.source("crm")
    assert source.path == tmp_path / "data" / "crm.csv"
    assert source.kind is SourceKind.CONTACTS
    assert source.default_region == "DK"
    assert source.columns[CanonicalField.PHONE] == "Mobile"
    assert source.namespace == "crm"
    assert config.output_dir == tmp_path / "out"
    assert config.state_dir == tmp_path / "state"
    assert config.schedule.timezone == "Europe/Copenhagen"
    assert config.performance.workers == 2


def test_every_error_is_reported_with_file_and_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """sources:
  - name: crm
    path: a.csv
    format: xlsx
    columns: {first_name: Name}
  - name: crm
    path: b.csv
    columns: {email: Mail}
    colour: blue
schedule:
  cron: every night
""",
    )
    with pytest.raises(ConfigError) as info:
        load_run_config(path)
    problems = info.value.problems
    text = "\n".join(problems)
    assert f"{path}:4: sources[0].format" in text
    assert f"{path}:5: sources[0].columns" in text
    assert "identifier field" in text
    assert f"{path}:9: sources[1].colour: Extra inputs are not permitted" in text
    assert f"{path}:11: schedule.cron" in text
    assert len(problems) == 4
    assert str(path) in str(info.value)


def test_duplicate_source_names_are_rejected(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """sources:
  - {name: crm, path: a.csv, columns: {email: e}}
  - {name: crm, path: b.csv, columns: {email: e}}
""",
    )
    with pytest.raises(ConfigError, match="repeated: crm"):
        load_run_config(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sources: [\n  {name: crm\n", ":3: YAML syntax error"),
        ("", "sources: Field required"),
        ("sources: []\n", "at least 1 item"),
    ],
    ids=["broken-yaml", "empty-file", "no-sources"],
)
def test_structural_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_run_config(_write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_run_config(tmp_path / "nope.yaml")
