"""The run's contact vault: each pseudonym's normalised email or E.164 phone, sealed on disk.

Raw identifiers exist only in the identifier stage, but two later steps need a few of them
back: a provider request gate A allowed (sent in the least identifying form the policy
allows) and the CRM and audience exports of profiles gate C allowed. The identifier stage may
run in other processes than those steps (a process pool, Dask workers), so what it learnt
travels through the run's staging folder, never as a task argument or result: each source
chunk writes one vault part, a Parquet file of `kind, pseudonym, sealed` rows, where `sealed`
is nonce || AES-256-GCM(value) with the kind and pseudonym as associated data.

The key is derived for the run (HKDF-SHA256 of the pseudonym key, salted with the run id):
every process that pseudonymises can derive it, nothing else is handed around, and a vault
left behind by a crashed run opens only with the pseudonym key. The vault folder is deleted
before the run's outputs are published and when a run fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from profiles.errors import KeyMaterialError
from profiles.files import write_private_atomically
from profiles.hashing import Key
from profiles.types import IdentifierKind

VAULT_DIR = ".vault"
"""The vault's folder inside a run's staging folder."""
_INFO = b"guarded-profile-enrichment/vault/v1"
_NONCE_BYTES = 12
_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string()),
        pa.field("pseudonym", pa.string()),
        pa.field("sealed", pa.binary()),
    ]
)
KINDS: tuple[IdentifierKind, ...] = (IdentifierKind.EMAIL, IdentifierKind.PHONE)
"""The kinds whose normalised values are kept (customer ids are never sent or exported)."""


class ContactValues(Protocol):
    """Anything that gives back the normalised values behind this run's pseudonyms: the
    vault, or the identifier stage that made them."""

    def normalised(self, kind: IdentifierKind, pseudonyms: Sequence[str]) -> list[str | None]:
        """The normalised email or E.164 phone per pseudonym, None where unknown."""
        ...


def vault_key(pseudonym_key: Key, run_id: str) -> bytes:
    """The run's vault key: HKDF-SHA256 of the pseudonym key, salt = run id."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=run_id.encode("utf-8"), info=_INFO
    ).derive(pseudonym_key.secret)


def _aad(kind: str, pseudonym: str) -> bytes:
    return f"{kind}:{pseudonym}".encode("ascii")


def write_part(path: Path, entries: Mapping[IdentifierKind, Mapping[str, str]], key: bytes) -> int:
    """Seal and write one part (pseudonym -> normalised value per kind); returns its rows.

    The file is written under a temporary name and renamed, mode 0600.
    """
    aead = AESGCM(key)
    kinds: list[str] = []
    pseudonyms: list[str] = []
    sealed: list[bytes] = []
    for kind in KINDS:
        values = entries.get(kind, {})
        for pseudonym, value in values.items():
            nonce = os.urandom(_NONCE_BYTES)
            kinds.append(str(kind))
            pseudonyms.append(pseudonym)
            sealed.append(nonce + aead.encrypt(nonce, value.encode("utf-8"), _aad(kind, pseudonym)))
    table = pa.table([kinds, pseudonyms, sealed], schema=_SCHEMA)
    write_private_atomically(path, lambda tmp: pq.write_table(table, tmp))
    return len(kinds)


class Vault:
    """Reads a run's vault parts; opens only the values asked for."""

    def __init__(self, folder: Path, key: bytes) -> None:
        self.folder = folder
        self._aead = AESGCM(key)
        self._table: pa.Table | None = None

    def _parts(self) -> pa.Table:
        if self._table is None:
            files = sorted(self.folder.glob("*.parquet")) if self.folder.is_dir() else []
            self._table = (
                pa.concat_tables([pq.read_table(f, schema=_SCHEMA) for f in files])
                if files
                else _SCHEMA.empty_table()
            )
        return self._table

    def normalised(self, kind: IdentifierKind, pseudonyms: Sequence[str]) -> list[str | None]:
        """The normalised email or E.164 phone behind each pseudonym (None where the run
        has none). KeyMaterialError if a value does not open (wrong key or altered)."""
        if kind not in KINDS:
            raise ValueError(f"no normalised values are kept for {kind}")
        if not len(pseudonyms):
            return []
        table = self._parts()
        wanted = pa.array(list(pseudonyms), type=pa.string())
        rows = table.filter(
            pc.and_(pc.equal(table["kind"], str(kind)), pc.is_in(table["pseudonym"], wanted))
        )
        found: dict[str, str] = {}
        for pseudonym, sealed in zip(
            rows["pseudonym"].to_pylist(), rows["sealed"].to_pylist(), strict=True
        ):
            if pseudonym in found:
                continue  # the same value seen in several chunks: sealed alike, opened once
            try:
                plain = self._aead.decrypt(
                    sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], _aad(kind, pseudonym)
                )
            except InvalidTag:
                raise KeyMaterialError(
                    f"a sealed {kind} in {self.folder} does not open (wrong key or altered)"
                ) from None
            found[pseudonym] = plain.decode("utf-8")
        return [found.get(p) for p in pseudonyms]


def remove(folder: Path) -> None:
    """Delete a vault folder (no error if it is gone)."""
    shutil.rmtree(folder, ignore_errors=True)
