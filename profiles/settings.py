"""Settings from the environment (secrets and their sources), in one typed model."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class EnrichSettings(BaseSettings):
    """`ENRICH_*` environment variables. Secrets never come from config files or flow parameters.

    Each key is looked up in this order: the variable itself (base64, at least 32 bytes), a Prefect
    Secret block named by the `*_BLOCK` variable, then the local key file written by
    `enrich keys init` (`ENRICH_KEY_FILE`, default `<state_dir>/keys.json`).
    """

    model_config = SettingsConfigDict(env_prefix="ENRICH_", extra="ignore")

    pseudonym_key: SecretStr | None = None
    pseudonym_key_block: str | None = None
    quarantine_key: SecretStr | None = None
    quarantine_key_block: str | None = None
    signing_key: SecretStr | None = None
    """Ed25519 seed (base64, 32 bytes) that signs the decision log's checkpoints."""
    signing_key_block: str | None = None
    key_file: Path | None = None
    state_url: SecretStr | None = None
    """SQLAlchemy URL of the state store (e.g. postgresql+psycopg://user@host/db); default:
    a SQLite file `<state_dir>/state.db`. A secret: it may hold a password."""
    runner: str | None = None
    """Where partition tasks run when neither the command line nor the flow's parameters
    say (`ENRICH_RUNNER`): in place of enrich.yaml's `performance.runner` on this host."""

    def key_file_for(self, state_dir: Path) -> Path:
        """The key file to use for a run whose state directory is `state_dir`."""
        return self.key_file if self.key_file is not None else state_dir / "keys.json"

    def state_url_for(self, state_dir: Path) -> str:
        """The state store URL for a run whose state directory is `state_dir`."""
        if self.state_url is not None:
            return self.state_url.get_secret_value()
        return f"sqlite:///{(state_dir / 'state.db').resolve()}"
