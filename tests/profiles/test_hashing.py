"""Tests for keyed pseudonyms, key ids and the key file."""

from __future__ import annotations

import hashlib
import hmac
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from profiles.errors import KeyMaterialError
from profiles.hashing import Key, Keyring, Pseudonymiser, decode_secret, encode_secret
from profiles.types import IdentifierKind

KEY_A = Key.from_secret(b"a" * 32)
KEY_B = Key.from_secret(b"b" * 32)
kinds = st.sampled_from(list(IdentifierKind))


def test_digest_is_hmac_sha256_of_kind_and_value() -> None:
    expected = hmac.new(b"a" * 32, b"email:jane.doe@example.com", hashlib.sha256).hexdigest()
    assert Pseudonymiser(KEY_A).digest(IdentifierKind.EMAIL, "jane.doe@example.com") == expected


@given(value=st.text(), kind=kinds)
def test_digests_depend_on_the_key(value: str, kind: IdentifierKind) -> None:
    assert Pseudonymiser(KEY_A).digest(kind, value) != Pseudonymiser(KEY_B).digest(kind, value)


@given(value=st.text())
def test_digests_depend_on_the_kind(value: str) -> None:
    p = Pseudonymiser(KEY_A)
    assert len({p.digest(kind, value) for kind in IdentifierKind}) == len(IdentifierKind)


@given(values=st.lists(st.text(), max_size=20), kind=kinds)
def test_digest_many_matches_digest(values: list[str], kind: IdentifierKind) -> None:
    p = Pseudonymiser(KEY_A)
    assert p.digest_many(kind, values) == [p.digest(kind, v) for v in values]


def test_key_id_names_the_key_without_revealing_it() -> None:
    assert KEY_A.key_id != KEY_B.key_id
    assert KEY_A.key_id == Key.from_secret(b"a" * 32).key_id
    assert KEY_A.key_id.startswith("k")
    assert len(KEY_A.key_id) == 13
    assert "a" * 32 not in repr(KEY_A)


@pytest.mark.parametrize(
    ("text", "message"),
    [("c2hvcnQ=", "at least 32 bytes"), ("***", "not valid base64")],
    ids=["too-short", "not-base64"],
)
def test_bad_secrets_are_rejected(text: str, message: str) -> None:
    with pytest.raises(KeyMaterialError, match=message):
        decode_secret(text, what="ENRICH_PSEUDONYM_KEY")


def test_secret_text_round_trips() -> None:
    secret = bytes(range(40))
    assert decode_secret(encode_secret(secret), what="k") == secret


def test_keyring_file_is_private_and_keeps_retired_keys(tmp_path: Path) -> None:
    path = tmp_path / "state" / "keys.json"
    ring = Keyring()
    first = ring.add("pseudonym")
    ring.add("quarantine")
    ring.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    ring = Keyring.load(path)
    second = ring.add("pseudonym")
    ring.save(path)
    ring = Keyring.load(path)
    assert ring.active_key("pseudonym") == second
    assert ring.get("pseudonym", first.key_id) == first
    assert ring.keys["pseudonym"][first.key_id]["retired"] is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_keyring_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError, match="enrich keys init"):
        Keyring.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "bad.json").chmod(0o600)
    with pytest.raises(KeyMaterialError, match="unreadable"):
        Keyring.load(tmp_path / "bad.json")
    with pytest.raises(KeyMaterialError, match="no active quarantine key"):
        Keyring().active_key("quarantine")


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ring = Keyring()
    ring.add("pseudonym")
    ring.save(path)
    path.chmod(0o644)
    with pytest.raises(KeyMaterialError, match=r"readable by others \(mode 0644\).*chmod 600"):
        Keyring.load(path)
    path.chmod(0o600)
    assert Keyring.load(path).active_key("pseudonym").key_id == ring.active["pseudonym"]
