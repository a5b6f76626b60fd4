"""Resolve secret keys from the environment, a Prefect Secret block, or the local key file."""

from __future__ import annotations

import os
from pathlib import Path

from prefect.blocks.system import Secret

from profiles.errors import KeyMaterialError
from profiles.hashing import Key, KeyPurpose, Keyring, decode_secret
from profiles.settings import EnrichSettings


def _secret_block(name: str, what: str) -> str:
    """The value of a Prefect Secret block; errors name the block, never the value."""
    try:
        value = Secret.load(name).get()  # type: ignore[union-attr]
    except Exception as exc:  # Prefect raises ValueError, HTTP or API errors: translate all
        raise KeyMaterialError(
            f"cannot load Prefect Secret block {name!r} for {what} ({type(exc).__name__})"
        ) from None
    return str(value)


def _from_block(name: str, purpose: KeyPurpose) -> Key:
    value = _secret_block(name, f"the {purpose} key")
    return Key.from_secret(decode_secret(value, what=f"Secret block {name!r}"))


def resolve_key(purpose: KeyPurpose, settings: EnrichSettings, state_dir: Path) -> Key:
    """The active key for `purpose`: env variable, then Secret block, then key file."""
    env = settings.pseudonym_key if purpose == "pseudonym" else settings.quarantine_key
    block = (
        settings.pseudonym_key_block if purpose == "pseudonym" else settings.quarantine_key_block
    )
    if env is not None:
        return Key.from_secret(
            decode_secret(env.get_secret_value(), what=f"ENRICH_{purpose.upper()}_KEY")
        )
    if block:
        return _from_block(block, purpose)
    path = settings.key_file_for(state_dir)
    if not path.exists():
        raise KeyMaterialError(
            f"no {purpose} key: set ENRICH_{purpose.upper()}_KEY or "
            f"ENRICH_{purpose.upper()}_KEY_BLOCK, or create {path} with "
            "`enrich keys init --config enrich.yaml`"
        )
    return Keyring.load(path).active_key(purpose)


def key_by_id(purpose: KeyPurpose, key_id: str, settings: EnrichSettings, state_dir: Path) -> Key:
    """A key by id: the configured key if its id matches, else one from the key file."""
    try:
        key = resolve_key(purpose, settings, state_dir)
    except KeyMaterialError:
        key = None
    if key is not None and key.key_id == key_id:
        return key
    return Keyring.load(settings.key_file_for(state_dir)).get(purpose, key_id)


def provider_secret(reference: str) -> str:
    """A provider secret named in enrich.yaml: `env:NAME` (environment) or `block:NAME`
    (Prefect Secret block); a bare NAME is an environment variable. Never logged."""
    kind, sep, name = reference.partition(":")
    if not sep:
        kind, name = "env", reference
    if kind == "block":
        return _secret_block(name, "a provider secret")
    if kind != "env":
        raise KeyMaterialError(f"secret reference {reference!r} must be env:NAME or block:NAME")
    value = os.environ.get(name)
    if not value:
        raise KeyMaterialError(f"environment variable {name} (a provider secret) is not set")
    return value
