"""What a partition task needs to find its run in whatever process it runs in.

A partition task gets a `RunRef` (paths and key ids: no values, no secrets) and asks for the
`WorkerRun` of its process: the run's configuration (refused if enrich.yaml changed since the
flow read it), the keys resolved here from the same sources the flow uses (environment,
Prefect Secret block, key file; refused if they are not the flow's keys), the run's contact
vault, the state store (opened on first use) and, for identify tasks, one identifier stage.
Each process keeps the `WorkerRun` of one run: the next run's first task replaces it, and
`release` drops it when the run is over (a long-lived Dask worker keeps no values between
nights).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

from flows.keys import resolve_key
from profiles import vault
from profiles.config import RunConfig, load_run_config
from profiles.errors import ConfigError, KeyMaterialError
from profiles.hashing import Key, KeyPurpose, Pseudonymiser
from profiles.identifiers import IdentifierStage
from profiles.quarantine import Sealer
from profiles.settings import EnrichSettings
from profiles.store import StateStore


@dataclass(frozen=True)
class RunRef:
    """A run as partition tasks see it: small, picklable, nothing secret."""

    config_path: str
    config_hash: str
    """SHA-256 of enrich.yaml as the flow read it: a worker refuses a changed file."""
    run_id: str
    staging: str
    """The run's staging folder (parts, the vault)."""
    key_id: str
    """The pseudonym key the flow resolved; a worker must resolve the same."""
    sealer_key_id: str | None
    """The quarantine key that seals raw rows (None: raw rows are not kept)."""


@dataclass
class WorkerRun:
    """One run as this process knows it."""

    ref: RunRef
    config: RunConfig
    key: Key
    sealer: Sealer | None
    vault_key: bytes = field(repr=False)
    """The run's vault key (profiles.vault), derived here from the pseudonym key."""
    _stage: IdentifierStage | None = field(default=None, repr=False)
    _store: StateStore | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def stage(self, workers: int) -> IdentifierStage:
        """This process's identifier stage for the run (created on first use with `workers`
        validation processes), shared by every chunk this process identifies."""
        with self._lock:
            if self._stage is None:
                self._stage = IdentifierStage(
                    self.config.identifiers, Pseudonymiser(self.key), workers=workers
                )
            return self._stage

    def store(self) -> StateStore:
        """The state store, opened here from the same settings as the flow's (the
        ENRICH_STATE_URL or the SQLite file under the config's state folder)."""
        with self._lock:
            if self._store is None:
                url = EnrichSettings().state_url_for(self.config.state_dir)
                self._store = StateStore.open(url)
            return self._store

    @property
    def contacts(self) -> vault.Vault:
        """The run's contact vault (read by provider lookups)."""
        return vault.Vault(Path(self.ref.staging) / vault.VAULT_DIR, self.vault_key)

    def close(self) -> None:
        """Stop the stage's validation processes (if any), close the store."""
        with self._lock:
            if self._stage is not None:
                self._stage.close()
            if self._store is not None:
                self._store.close()


_RUNS: dict[str, WorkerRun] = {}
_LOCK = threading.Lock()


def _resolved(purpose: KeyPurpose, expected: str, config: RunConfig) -> Key:
    key = resolve_key(purpose, EnrichSettings(), config.state_dir)
    if key.key_id != expected:
        raise KeyMaterialError(
            f"this worker resolved {purpose} key {key.key_id}, the flow uses {expected}: give "
            "every worker the same ENRICH_* key settings (or key file) as the flow"
        )
    return key


def worker_run(ref: RunRef) -> WorkerRun:
    """This process's view of `ref`'s run, made on first use (a new run replaces the old)."""
    with _LOCK:
        run = _RUNS.get(ref.run_id)
        if run is not None:
            return run
        for old in list(_RUNS):
            _RUNS.pop(old).close()
        path = Path(ref.config_path)
        if hashlib.sha256(path.read_bytes()).hexdigest() != ref.config_hash:
            raise ConfigError(str(path), [f"{path} changed while run {ref.run_id} was running"])
        config = load_run_config(path)
        key = _resolved("pseudonym", ref.key_id, config)
        sealer = (
            Sealer(_resolved("quarantine", ref.sealer_key_id, config))
            if ref.sealer_key_id is not None
            else None
        )
        run = WorkerRun(ref, config, key, sealer, vault.vault_key(key, ref.run_id))
        _RUNS[ref.run_id] = run
        return run


def release(run_id: str) -> None:
    """Forget `run_id` in this process (stopping its identifier stage's processes)."""
    with _LOCK:
        run = _RUNS.pop(run_id, None)
    if run is not None:
        run.close()
