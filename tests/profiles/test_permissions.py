"""File modes of what holds keys and personal data: the key file and the SQLite state store.

Each test runs under umask 022, the usual default, under which files are created 0644 and
folders 0755 unless the code says otherwise.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from profiles.errors import KeyMaterialError
from profiles.hashing import Keyring
from profiles.store import StateStore


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _ring() -> Keyring:
    ring = Keyring()
    ring.add("pseudonym")
    return ring


def test_a_new_state_store_its_wal_and_shm_and_its_folders_are_private(tmp_path: Path) -> None:
    db = tmp_path / "srv" / "state" / "state.db"
    with StateStore.open(f"sqlite:///{db}") as store:
        store.start_run("r1", "0" * 64, datetime(2026, 11, 1, tzinfo=UTC))
        companions = [db.with_name("state.db-wal"), db.with_name("state.db-shm")]
        assert all(p.exists() for p in companions)  # write-ahead logging, while open
        assert {p.name: _mode(p) for p in [db, *companions]} == {
            "state.db": 0o600,
            "state.db-wal": 0o600,
            "state.db-shm": 0o600,
        }
    # every folder created for it, not only the last (`mkdir(parents=True, mode=...)`)
    assert (_mode(db.parent.parent), _mode(db.parent)) == (0o700, 0o700)


def test_an_existing_store_and_folder_keep_their_modes(tmp_path: Path) -> None:
    """The operator's choice stands; SQLite gives the companions the database file's mode."""
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o750)
    db = folder / "state.db"
    with StateStore.open(f"sqlite:///{db}"):
        pass
    db.chmod(0o640)
    with StateStore.open(f"sqlite:///{db}") as store:
        store.start_run("r1", "0" * 64, datetime(2026, 11, 1, tzinfo=UTC))
        assert _mode(db.with_name("state.db-wal")) == 0o640
    assert (_mode(folder), _mode(db)) == (0o750, 0o640)


def test_a_new_key_file_and_its_folders_are_private(tmp_path: Path) -> None:
    path = tmp_path / "srv" / "state" / "keys.json"
    _ring().save(path)
    assert (_mode(path.parent.parent), _mode(path.parent), _mode(path)) == (0o700, 0o700, 0o600)
    assert [p.name for p in path.parent.iterdir()] == ["keys.json"]  # no temporary file left


def test_saving_keys_follows_no_planted_link_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """The keys are written under a fresh temporary name: a link planted under the name an
    earlier version used (`keys.tmp`) receives nothing."""
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("untouched", encoding="utf-8")
    (folder / "keys.tmp").symlink_to(elsewhere)
    ring = _ring()
    ring.save(folder / "keys.json")
    assert elsewhere.read_text(encoding="utf-8") == "untouched"
    assert sorted(p.name for p in folder.iterdir()) == ["keys.json", "keys.tmp"]
    assert Keyring.load(folder / "keys.json").active == ring.active

    ring.keys["pseudonym"]["bad"] = {"secret": object()}  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        ring.save(folder / "keys.json")  # not serialisable: the old file stays, no leftover
    assert sorted(p.name for p in folder.iterdir()) == ["keys.json", "keys.tmp"]


@pytest.mark.parametrize(
    ("mode", "what"),
    [
        pytest.param(0o640, "readable", id="group-readable"),
        pytest.param(0o604, "readable", id="world-readable"),
        pytest.param(0o644, "readable", id="group-and-world-readable"),
        pytest.param(0o620, "writable", id="group-writable"),
    ],
)
def test_a_key_file_open_to_others_is_refused_naming_the_fix(
    tmp_path: Path, mode: int, what: str
) -> None:
    path = tmp_path / "keys.json"
    _ring().save(path)
    path.chmod(mode)
    with pytest.raises(KeyMaterialError) as info:
        Keyring.load(path)
    assert str(info.value).startswith(
        f"key file {path} is {what} by others (mode {mode:04o}); refusing to use it: "
        f"`chmod 600 {path}`"
    )


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o703], ids=["0777", "sticky-1777", "0703"])
def test_a_key_file_in_a_folder_anyone_may_write_to_is_refused(tmp_path: Path, mode: int) -> None:
    folder = tmp_path / "state"
    path = folder / "keys.json"
    _ring().save(path)
    folder.chmod(mode)
    message = (
        f"key file {path} is in a folder anyone may write to ({folder}, mode {mode:04o}); "
        "refusing to use it"
    )
    with pytest.raises(KeyMaterialError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Keyring.load(path)
    with pytest.raises(KeyMaterialError, match=f"chmod o-w {folder}"):
        _ring().save(path)


def test_a_key_file_in_a_group_writable_folder_is_accepted(tmp_path: Path) -> None:
    """With user-private groups (umask 002) the group is the owner alone."""
    folder = tmp_path / "state"
    _ring().save(folder / "keys.json")
    folder.chmod(0o770)
    assert Keyring.load(folder / "keys.json").active_key("pseudonym")
