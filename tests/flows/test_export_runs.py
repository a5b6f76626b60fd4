"""End to end: what a night exports for the CRM, the ad platforms and analysts (gate C).

One synthetic shop, one night. Checked from the outside against the policy decisions in
profiles.parquet and the synthetic world's hashed addresses: nobody denied at gate C is in any
file, no column outside the destination's allow-list is written, audience hashes are the
platforms' (Meta: SHA-256 of the trimmed, lower-cased address) of the allowed people's own
addresses, and no CRM cell starts like a spreadsheet formula.
"""

from __future__ import annotations

import csv
import json
import re

import pandas as pd
import pytest

from policy.bundle import default_bundle_path, load_bundle
from policy.types import Purpose
from profiles.exports.crm import PRESETS
from profiles.synth import generate
from tests.flows.test_nightly import Run, _init_keys, _run

BUNDLE = load_bundle(default_bundle_path())
HEX64 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Run:
    work = tmp_path_factory.mktemp("exports")
    generate(people=500, out_dir=work, seed=12)
    with (work / "enrich.yaml").open("a", encoding="utf-8") as fh:
        fh.write("exports:\n  crm: [hubspot, salesforce]\n")
    _init_keys(work)
    return _run(work)


def _allowed(run: Run, purpose: str) -> set[str]:
    profiles = run.profiles()
    return set(profiles.loc[profiles[f"decision_{purpose}"] != "deny", "profile_id"])


def _crm_rows(run: Run, preset: str) -> tuple[list[str], list[dict[str, str]]]:
    header: list[str] = []
    rows: list[dict[str, str]] = []
    for path in sorted((run.run_dir / "crm" / preset).glob("contacts-*.csv")):
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            rows += list(reader)
    return header, rows


@pytest.mark.parametrize("preset", ["hubspot", "salesforce"])
def test_crm_files_hold_only_allowed_people_and_fields(night: Run, preset: str) -> None:
    header, rows = _crm_rows(night, preset)
    allowed = _allowed(night, "crm_export")
    assert rows
    assert {r["profile_id"] for r in rows} == allowed
    spec = PRESETS[preset]
    permitted = {spec.header_for(f) for f in BUNDLE.destinations[Purpose.CRM_EXPORT]}
    assert set(header) <= permitted
    email, phone = spec.header_for("email"), spec.header_for("phone")
    assert sum(bool(r[email]) for r in rows) > 0.5 * len(rows)
    for row in rows:
        for column, value in row.items():
            if column == phone and value:
                assert re.fullmatch(r"\+[1-9]\d{6,14}", value)
            elif value:
                assert value[0] not in "=+-@\t\r\0", (column, value)


def test_audiences_hash_the_allowed_peoples_own_addresses(night: Run) -> None:
    truth = pd.read_csv(night.work / "data" / "truth.csv", usecols=["source", "line", "person_id"])
    links = night.links()[["profile_id", "source", "line"]].merge(truth, on=["source", "line"])
    person_of = links.drop_duplicates("profile_id").set_index("profile_id")["person_id"]
    world = {}
    for line in (night.work / "data" / "world.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        world[record["person_id"]] = set(record["email_sha256"])
    allowed = _allowed(night, "ads_export")
    theirs = {h for p in allowed if p in person_of.index for h in world[person_of[p]]}
    meta = pd.read_csv(night.run_dir / "audiences" / "meta.csv", dtype=str)
    assert list(meta.columns) == ["email", "phone", "country"]
    emails = set(meta["email"].dropna())
    assert emails
    assert all(HEX64.match(h) for h in emails)
    assert emails <= theirs  # every hash is an allowed person's own address, nobody else's
    google = [
        pd.read_csv(night.run_dir / "audiences" / f"{stem}.csv", dtype=str)
        for stem in ("google-personalized", "google-not-personalized")
    ]
    assert sum(len(g) for g in google) == len(meta)


def test_analytics_parquet_is_minimised_to_its_destination(night: Run) -> None:
    analytics = pd.read_parquet(night.run_dir / "analytics.parquet")
    assert set(analytics.columns) <= set(BUNDLE.destinations[Purpose.ANALYTICS])
    assert "email" not in analytics.columns
    assert set(analytics["profile_id"]) == _allowed(night, "analytics")


def test_export_files_are_private_and_summarised(night: Run) -> None:
    for path in [*night.run_dir.joinpath("crm").rglob("*.csv"),
                 *night.run_dir.joinpath("audiences").glob("*.csv")]:  # fmt: skip
        assert path.stat().st_mode & 0o077 == 0, path
    exports = night.summary()["exports"]
    assert exports["crm_export"]["profiles"] == len(_allowed(night, "crm_export"))
    assert exports["crm_export"]["files"] == {"hubspot": 1, "salesforce": 1}
    assert set(exports["ads_export"]["rows"]) == {
        "meta", "google-personalized", "google-not-personalized", "tiktok", "x", "linkedin",
    }  # fmt: skip


def test_a_path_outside_the_run_folder_is_not_written(night: Run) -> None:
    outside = [p for p in night.work.rglob("contacts-*.csv") if night.run_dir not in p.parents]
    assert outside == []


def test_hubspots_legal_basis_is_filled_from_the_recorded_basis_only(night: Run) -> None:
    header, rows = _crm_rows(night, "hubspot")
    column = PRESETS["hubspot"].header_for("lawful_basis")
    assert column in header
    profiles = night.profiles().set_index("profile_id")
    labels = {"consent": "Freely given consent from contact"}
    for row in rows:
        recorded = str(profiles.at[row["profile_id"], "basis_crm_export"])
        assert row[column] == labels.get(recorded, "")  # legitimate interests: left empty
    assert any(row[column] for row in rows)


def test_a_delta_export_holds_only_people_whose_exported_values_changed(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    work = tmp_path_factory.mktemp("delta")
    generate(people=300, out_dir=work, seed=13)
    with (work / "enrich.yaml").open("a", encoding="utf-8") as fh:
        fh.write("exports:\n  crm: [generic]\n  delta: true\n  audiences: [meta]\n")
    _init_keys(work)
    first = _run(work)
    _, everyone = _crm_rows(first, "generic")
    assert {r["profile_id"] for r in everyone} == _allowed(first, "crm_export")
    second = _run(work)  # same data: nothing changed, nothing to import
    _, rows = _crm_rows(second, "generic")
    assert rows == []
    assert second.summary()["exports"]["crm_export"]["rows"] == {"generic": 0}
    fingerprints = pd.read_parquet(second.run_dir / "crm" / "generic" / ".fingerprints.parquet")
    assert set(fingerprints["profile_id"]) == _allowed(second, "crm_export")
