"""The run's sealed contact vault: what goes in comes out, only with the run's key."""

from __future__ import annotations

import stat
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from profiles.errors import KeyMaterialError
from profiles.hashing import Key
from profiles.types import IdentifierKind
from profiles.vault import VAULT_DIR, Vault, remove, vault_key, write_part

KEY = Key.from_secret(b"test vault: pseudonym key 32 b!!")
EMAIL, PHONE = IdentifierKind.EMAIL, IdentifierKind.PHONE


def _folder(tmp_path: Path) -> Path:
    return tmp_path / "staging" / VAULT_DIR


def test_values_come_back_by_kind_and_pseudonym(tmp_path: Path) -> None:
    key = vault_key(KEY, "run-1")
    folder = _folder(tmp_path)
    ann, bo = "ann@example.com", "bo@example.org"
    write_part(folder / "a.parquet", {EMAIL: {"p1": ann}, PHONE: {"p2": "+4512"}}, key)
    write_part(folder / "b.parquet", {EMAIL: {"p3": bo, "p1": ann}}, key)
    vault = Vault(folder, key)
    assert vault.normalised(EMAIL, ["p3", "p1", "nobody", "p2"]) == [
        "bo@example.org",
        "ann@example.com",
        None,
        None,  # p2 is a phone, not an email
    ]
    assert vault.normalised(PHONE, ["p2"]) == ["+4512"]
    assert vault.normalised(PHONE, []) == []


def test_nothing_is_written_in_clear_and_files_are_private(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    write_part(folder / "a.parquet", {EMAIL: {"p1": "ann@example.com"}}, vault_key(KEY, "r"))
    raw = (folder / "a.parquet").read_bytes()
    assert b"ann@example.com" not in raw
    assert stat.S_IMODE((folder / "a.parquet").stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert pq.read_table(folder / "a.parquet").column_names == ["kind", "pseudonym", "sealed"]


def test_another_runs_key_opens_nothing(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    write_part(folder / "a.parquet", {EMAIL: {"p1": "ann@example.com"}}, vault_key(KEY, "run-1"))
    assert vault_key(KEY, "run-1") != vault_key(KEY, "run-2")
    with pytest.raises(KeyMaterialError, match="does not open"):
        Vault(folder, vault_key(KEY, "run-2")).normalised(EMAIL, ["p1"])


def test_a_value_moved_to_another_pseudonym_does_not_open(tmp_path: Path) -> None:
    """The kind and pseudonym are authenticated: a sealed value copied to another row fails."""
    key = vault_key(KEY, "run-1")
    folder = _folder(tmp_path)
    write_part(folder / "a.parquet", {EMAIL: {"p1": "ann@example.com"}}, key)
    table = pq.read_table(folder / "a.parquet")
    moved = table.set_column(1, "pseudonym", [["p9"]])
    pq.write_table(moved, folder / "a.parquet")
    with pytest.raises(KeyMaterialError):
        Vault(folder, key).normalised(EMAIL, ["p9"])


def test_customer_ids_are_never_kept(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no normalised values"):
        Vault(_folder(tmp_path), vault_key(KEY, "r")).normalised(IdentifierKind.CUSTOMER_ID, [])


def test_an_absent_vault_knows_nothing_and_remove_is_idempotent(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    assert Vault(folder, vault_key(KEY, "r")).normalised(EMAIL, ["p1"]) == [None]
    write_part(folder / "a.parquet", {EMAIL: {"p1": "a@b.c"}}, vault_key(KEY, "r"))
    remove(folder)
    remove(folder)
    assert not folder.exists()
