"""Resolve secret keys from the environment, a Prefect Secret block, or the local key file."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from prefect.blocks.system import Secret
from pydantic import SecretStr

from policy.audit import Signer, pinned_keys
from profiles.errors import ConfigError, KeyMaterialError
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
    env: SecretStr | None = getattr(settings, f"{purpose}_key")
    block: str | None = getattr(settings, f"{purpose}_key_block")
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


def resolve_signer(
    settings: EnrichSettings, state_dir: Path, public_keys: tuple[str, ...], *, config: Path
) -> Signer:
    """The decision log's signing key, refused unless its public key is pinned in `config`."""
    signer = Signer.from_seed(resolve_key("signing", settings, state_dir).secret)
    if signer.key_id not in pinned_keys(public_keys):
        raise ConfigError(
            str(config),
            [
                f"{config}: audit.public_keys: the signing key {signer.key_id} is not pinned; "
                f"add `- {signer.public_key}` under audit.public_keys (keep retired keys "
                "pinned so their checkpoints stay verifiable)"
            ],
        )
    return signer


def pin_public_key(config_path: Path, public_key: str) -> bool:
    """Pin `public_key` in enrich.yaml by appending an `audit:` section, if the file has none;
    False if it has one (then the operator edits it: this never rewrites their YAML)."""
    data = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    if "audit" in data:
        return public_key in ((data.get("audit") or {}).get("public_keys") or [])
    with config_path.open("a", encoding="utf-8") as fh:
        fh.write(
            "# Public keys that may sign the decision log's checkpoints (`enrich keys init`\n"
            "# pinned the first). Keep a rotated key listed: its checkpoints stay verifiable.\n"
            f"audit:\n  public_keys:\n    - {public_key}\n"
        )
    return True


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
