"""The quarantine: rows that cannot become part of a profile, with locator and reason code.

A quarantine row names the source, file, line, row-level reason and every field-level reason,
never a raw value. The raw values may be kept sealed (AES-256-GCM, key id beside the
ciphertext, source and line bound as associated data) so an operator holding the quarantine
key can inspect them with `enrich quarantine show`.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from profiles.errors import KeyMaterialError
from profiles.hashing import Key
from profiles.ingest import LINE
from profiles.types import IDENTIFIER_FIELDS, CanonicalField, ReasonCode

COLUMNS = ["source", "file", "line", "reason", "field_reasons", "detail", "sealed"]
"""Columns of quarantine.csv, in order."""

REASON_FIELDS: tuple[str, ...] = (*(str(f) for f in IDENTIFIER_FIELDS), str(CanonicalField.COUNTRY))
"""Fields whose `<field>_reason` column the identifier stage fills."""

_NONCE_BYTES = 12


class Sealer:
    """Encrypts raw quarantined values with AES-256-GCM under one key."""

    def __init__(self, key: Key) -> None:
        self._aead = AESGCM(key.secret[:32])
        self.key_id = key.key_id

    def seal(self, plaintext: str, context: str) -> str:
        """`key_id:base64(nonce || ciphertext)`; `context` (e.g. "crm:17") is authenticated."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{self.key_id}:{base64.b64encode(nonce + sealed).decode('ascii')}"


def open_sealed(token: str, context: str, key_for: Callable[[str], Key]) -> str:
    """Decrypt a sealed value; `key_for(key_id)` supplies the key. Raise on tampering."""
    key_id, _, payload = token.partition(":")
    try:
        raw = base64.b64decode(payload, validate=True)
        plain = AESGCM(key_for(key_id).secret[:32]).decrypt(
            raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode()
        )
    except (InvalidTag, ValueError):
        raise KeyMaterialError(
            f"sealed value for {context} does not open with key {key_id} (wrong key or altered)"
        ) from None
    return plain.decode()


def seal_context(source: str, line: int) -> str:
    """Associated data binding a sealed value to its source and line."""
    return f"{source}:{line}"


def field_reasons(identified: pd.DataFrame) -> list[str]:
    """`field=CODE;...` per row, fields in alphabetical order, from the `<field>_reason` columns."""
    names = sorted(REASON_FIELDS)
    columns = [identified[f"{name}_reason"].tolist() for name in names]
    return [
        ";".join(f"{name}={code}" for name, code in zip(names, codes, strict=True) if _set(code))
        for codes in zip(*columns, strict=True)
    ]


def _set(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _seal_column(
    source: str, lines: Sequence[int], payloads: Sequence[str], sealer: Sealer | None
) -> list[str]:
    if sealer is None:
        return [""] * len(lines)
    return [
        sealer.seal(p, seal_context(source, int(n))) for n, p in zip(lines, payloads, strict=True)
    ]


def rows_without_identifier(
    source: str,
    file: str,
    identified: pd.DataFrame,
    raw: pd.DataFrame,
    sealer: Sealer | None,
) -> pd.DataFrame:
    """Quarantine rows for stage output rows whose `row_reason` is set.

    `raw` is the stage's input chunk (same index): its mapped columns are sealed, never copied.
    """
    mask = identified["row_reason"].notna().to_numpy()
    hit = identified.loc[mask]
    reasons = field_reasons(hit)
    rejected = hit[[f"{f}_reason" for f in IDENTIFIER_FIELDS]].notna().any(axis=1)
    detail = ["every identifier was rejected" if r else "no identifier given" for r in rejected]
    raw_hit = raw.loc[mask].drop(columns=[LINE])
    lines = hit[LINE].tolist()
    # a row whose mapped fields are all blank (a spreadsheet's ",,,") holds nothing to keep:
    # nothing is sealed for it (sealing a million of them cost seconds and kept nothing)
    blank = (
        raw_hit.apply(lambda column: column.astype(str).str.strip() == "").all(axis=1).to_numpy()
        if len(raw_hit.columns)
        else np.ones(len(raw_hit), dtype=bool)
    )
    sealed = np.full(len(lines), "", dtype=object)
    if sealer is not None and not blank.all():
        keep = np.flatnonzero(~blank)
        payloads = [
            json.dumps(rec, ensure_ascii=False) for rec in raw_hit.iloc[keep].to_dict("records")
        ]
        sealed[keep] = _seal_column(source, [lines[i] for i in keep], payloads, sealer)
    return pd.DataFrame(
        {
            "source": source,
            "file": file,
            "line": pd.Series(lines, dtype="int64"),
            "reason": hit["row_reason"].astype(str).to_list(),
            "field_reasons": reasons,
            "detail": detail,
            "sealed": sealed.tolist(),
        },
        columns=COLUMNS,
    )


def unparseable_rows(
    source: str, file: str, unparseable: pd.DataFrame, sealer: Sealer | None
) -> pd.DataFrame:
    """Quarantine rows for records the reader could not parse (ROW_UNPARSEABLE)."""
    lines = unparseable[LINE].tolist()
    return pd.DataFrame(
        {
            "source": source,
            "file": file,
            "line": pd.Series(lines, dtype="int64"),
            "reason": str(ReasonCode.ROW_UNPARSEABLE),
            "field_reasons": "",
            "detail": unparseable["detail"].to_list(),
            "sealed": _seal_column(source, lines, unparseable["raw"].to_list(), sealer),
        },
        columns=COLUMNS,
    )
