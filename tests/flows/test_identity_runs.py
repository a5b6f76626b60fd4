"""Profile ids across consecutive nightly runs: unchanged input keeps every id; tomorrow's
input keeps every unaffected id and records merges and splits in the state store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from profiles.settings import EnrichSettings
from profiles.store import StateStore
from profiles.synth import generate
from tests.flows.test_nightly import FIXTURE, _init_keys, _pin, _run

KEYS = ["source", "line"]


def test_same_input_twice_keeps_every_profile_id(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE, tmp_path, dirs_exist_ok=True)
    _init_keys(tmp_path)
    first = _run(tmp_path)
    second = _run(tmp_path)
    ids = first.links()[[*KEYS, "profile_id"]]
    pd.testing.assert_frame_equal(second.links()[[*KEYS, "profile_id"]], ids)
    identity = second.summary()["identity"]
    assert (identity["profiles_new"], identity["merges"], identity["splits"]) == (0, 0, 0)
    assert identity["profiles_kept"] == identity["profiles"] == ids["profile_id"].nunique()


def _person_profiles(links: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    truth = truth.assign(line=truth["line"].astype("int64"))
    return links[[*KEYS, "profile_id"]].merge(truth[[*KEYS, "person_id"]], on=KEYS)


def test_next_night_keeps_unaffected_ids_and_records_changes(tmp_path: Path) -> None:
    generate(people=2000, out_dir=tmp_path, seed=5)
    _init_keys(tmp_path)
    night1 = _run(tmp_path)
    truth1 = pd.read_csv(tmp_path / "data" / "truth.csv", dtype=str, keep_default_na=False)
    generate(people=2000, out_dir=tmp_path, seed=5, night=2)
    _pin(tmp_path)  # synth rewrote enrich.yaml, as `enrich keys init` would be rerun
    night2 = _run(tmp_path)
    truth2 = pd.read_csv(tmp_path / "data" / "truth.csv", dtype=str, keep_default_na=False)
    changes = pd.read_csv(tmp_path / "data" / "changes.csv", dtype=str, keep_default_na=False)
    affected = set(changes["person_id"])
    assert affected

    one = _person_profiles(night1.links(), truth1)
    two = _person_profiles(night2.links(), truth2)
    # a profile is untouched if no row of an affected person is in it on either night
    touched1 = set(one.loc[one["person_id"].isin(affected), "profile_id"])
    touched2 = set(two.loc[two["person_id"].isin(affected), "profile_id"])
    both = one.merge(two, on=[*KEYS, "person_id"], suffixes=("_1", "_2"))
    untouched = both[~both["profile_id_1"].isin(touched1) & ~both["profile_id_2"].isin(touched2)]
    assert len(untouched) > 0.9 * len(both)
    changed = untouched[untouched["profile_id_1"] != untouched["profile_id_2"]]
    assert changed.empty, f"{len(changed)} unaffected rows changed profile"

    identity = night2.summary()["identity"]
    assert identity["profiles_new"] > 0  # new people arrived
    assert identity["merges"] + identity["splits"] > 0
    state_dir = tmp_path / "state"
    with StateStore.open(EnrichSettings().state_url_for(state_dir)) as store:
        runs = store.runs()
        assert runs["status"].tolist() == ["succeeded", "succeeded"]
        profiles = store.load_profiles()
        merged = profiles[profiles["status"] == "merged"]
        assert len(merged) == identity["merges"]
