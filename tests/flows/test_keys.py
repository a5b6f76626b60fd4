"""Tests of key resolution: environment, Prefect Secret block, key file, in that order."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.blocks.system import Secret

from flows.keys import key_by_id, provider_secret, resolve_key
from profiles.errors import KeyMaterialError
from profiles.hashing import Key, Keyring, encode_secret
from profiles.settings import EnrichSettings

ENV_SECRET = bytes(range(32))
BLOCK_SECRET = bytes(range(1, 33))


def _settings(**values: object) -> EnrichSettings:
    return EnrichSettings.model_validate(values)


def test_environment_wins_over_block_and_file(tmp_path: Path) -> None:
    ring = Keyring()
    ring.add("pseudonym")
    ring.save(tmp_path / "keys.json")
    settings = _settings(pseudonym_key=encode_secret(ENV_SECRET), pseudonym_key_block="nope")
    assert resolve_key("pseudonym", settings, tmp_path) == Key.from_secret(ENV_SECRET)


def test_secret_block_is_used_when_named(tmp_path: Path) -> None:
    Secret(value=encode_secret(BLOCK_SECRET)).save("enrich-test-pseudonym", overwrite=True)
    settings = _settings(pseudonym_key_block="enrich-test-pseudonym")
    assert resolve_key("pseudonym", settings, tmp_path) == Key.from_secret(BLOCK_SECRET)


def test_missing_block_is_a_clear_error(tmp_path: Path) -> None:
    settings = _settings(quarantine_key_block="no-such-block")
    with pytest.raises(KeyMaterialError, match="cannot load Prefect Secret block 'no-such-block'"):
        resolve_key("quarantine", settings, tmp_path)


def test_key_file_is_the_fallback_and_keeps_retired_keys(tmp_path: Path) -> None:
    ring = Keyring()
    old = ring.add("quarantine")
    new = ring.add("quarantine")
    ring.save(tmp_path / "keys.json")
    settings = _settings()
    assert resolve_key("quarantine", settings, tmp_path) == new
    assert key_by_id("quarantine", old.key_id, settings, tmp_path) == old


def test_env_variables_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENRICH_PSEUDONYM_KEY", encode_secret(ENV_SECRET))
    monkeypatch.setenv("ENRICH_KEY_FILE", str(tmp_path / "elsewhere.json"))
    settings = EnrichSettings()
    assert resolve_key("pseudonym", settings, tmp_path) == Key.from_secret(ENV_SECRET)
    assert settings.key_file_for(tmp_path) == tmp_path / "elsewhere.json"
    assert encode_secret(ENV_SECRET) not in repr(settings)


def test_no_key_anywhere_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError, match="enrich keys init"):
        resolve_key("pseudonym", _settings(), tmp_path)


def test_provider_secrets_come_from_env_or_a_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_API_KEY", "env-value-1")
    assert provider_secret("env:ACME_API_KEY") == "env-value-1"
    assert provider_secret("ACME_API_KEY") == "env-value-1"
    Secret(value="block-value-2").save("enrich-test-provider", overwrite=True)
    assert provider_secret("block:enrich-test-provider") == "block-value-2"
    monkeypatch.delenv("ACME_API_KEY")
    with pytest.raises(KeyMaterialError, match=r"ACME_API_KEY .* is not set"):
        provider_secret("env:ACME_API_KEY")
    with pytest.raises(KeyMaterialError, match="must be env:NAME or block:NAME"):
        provider_secret("vault:acme")
    with pytest.raises(KeyMaterialError, match="cannot load Prefect Secret block 'nope'"):
        provider_secret("block:nope")
