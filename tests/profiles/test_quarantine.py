"""Tests for quarantine rows, sealing of raw values and row accounting."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from profiles.accounting import SourceCounts
from profiles.errors import AccountingError, KeyMaterialError
from profiles.hashing import Key
from profiles.quarantine import (
    COLUMNS,
    Sealer,
    open_sealed,
    rows_without_identifier,
    seal_context,
    unparseable_rows,
)

KEY = Key.from_secret(b"q" * 32)
OTHER = Key.from_secret(b"r" * 32)


def _identified() -> pd.DataFrame:
    na = pd.NA
    return pd.DataFrame(
        {
            "line": [2, 3, 4],
            "key_id": "k1",
            "email_pseudonym": ["ab" * 32, na, na],
            "email_reason": [na, "EMAIL_PLACEHOLDER", na],
            "phone_pseudonym": [na, na, na],
            "phone_reason": [na, "PHONE_INVALID", na],
            "customer_id_pseudonym": [na, na, na],
            "customer_id_reason": [na, na, na],
            "country": ["DK", na, na],
            "country_reason": [na, na, "COUNTRY_UNKNOWN"],
            "row_reason": [na, "ROW_NO_IDENTIFIER", "ROW_NO_IDENTIFIER"],
        },
        dtype="string",
    ).astype({"line": "int64"})


def _raw() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "line": [2, 3, 4],
            "email": ["ann@example.com", "test@test.com", ""],
            "phone": ["", "12", ""],
            "country": ["DK", "", "Atlantis"],
        }
    )


def test_rows_without_identifier_name_fields_and_reasons_not_values() -> None:
    rows = rows_without_identifier("crm", "crm.csv", _identified(), _raw(), Sealer(KEY))
    assert list(rows.columns) == COLUMNS
    assert rows["line"].tolist() == [3, 4]
    assert rows["reason"].tolist() == ["ROW_NO_IDENTIFIER"] * 2
    assert rows["field_reasons"].tolist() == [
        "email=EMAIL_PLACEHOLDER;phone=PHONE_INVALID",
        "country=COUNTRY_UNKNOWN",
    ]
    assert rows["detail"].tolist() == ["every identifier was rejected", "no identifier given"]
    text = rows.to_csv()
    assert "test@test.com" not in text
    assert "Atlantis" not in text


def test_sealed_values_open_only_with_the_key_and_their_context() -> None:
    rows = rows_without_identifier("crm", "crm.csv", _identified(), _raw(), Sealer(KEY))
    token = rows["sealed"].iloc[0]
    assert token.startswith(f"{KEY.key_id}:")
    keys = {KEY.key_id: KEY}
    plain = open_sealed(token, seal_context("crm", 3), keys.__getitem__)
    assert json.loads(plain) == {"email": "test@test.com", "phone": "12", "country": ""}
    with pytest.raises(KeyMaterialError, match="wrong key or altered"):
        open_sealed(token, seal_context("crm", 4), keys.__getitem__)
    with pytest.raises(KeyMaterialError, match="wrong key or altered"):
        open_sealed(token, seal_context("crm", 3), lambda _: OTHER)
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(KeyMaterialError):
        open_sealed(tampered, seal_context("crm", 3), keys.__getitem__)


def test_a_row_of_blank_fields_has_nothing_to_seal() -> None:
    """A spreadsheet's empty ",,," rows are records without identifiers: quarantined with
    their reason, but there is nothing of them to keep sealed."""
    raw = _raw()
    raw.loc[1, ["email", "phone", "country"]] = ["", "  ", ""]  # line 3: blank
    rows = rows_without_identifier("crm", "crm.csv", _identified(), raw, Sealer(KEY))
    assert rows["line"].tolist() == [3, 4]
    assert rows["sealed"].iloc[0] == ""
    assert rows["sealed"].iloc[1].startswith(f"{KEY.key_id}:")  # line 4 has "Atlantis"


def test_without_sealer_nothing_raw_is_kept() -> None:
    rows = rows_without_identifier("crm", "crm.csv", _identified(), _raw(), None)
    assert rows["sealed"].tolist() == ["", ""]


def test_unparseable_rows() -> None:
    bad = pd.DataFrame(
        {"line": [7], "detail": ["expected 3 fields, found 4"], "raw": ['["a","b","c","d"]']}
    )
    rows = unparseable_rows("orders", "orders.csv", bad, Sealer(KEY))
    assert rows.iloc[0][["source", "line", "reason", "detail"]].tolist() == [
        "orders",
        7,
        "ROW_UNPARSEABLE",
        "expected 3 fields, found 4",
    ]


def test_counts_balance_and_break_loudly() -> None:
    counts = SourceCounts(source="crm", file="crm.csv")
    counts.add_identified(_identified())
    counts.add_unparseable(2)
    assert (counts.rows_in, counts.rows_accepted, counts.rows_quarantined) == (5, 1, 4)
    counts.check()
    assert counts.to_dict()["quarantined_by_reason"] == {
        "ROW_NO_IDENTIFIER": 2,
        "ROW_UNPARSEABLE": 2,
    }
    assert counts.to_dict()["field_rejections"] == {
        "country": {"COUNTRY_UNKNOWN": 1},
        "email": {"EMAIL_PLACEHOLDER": 1},
        "phone": {"PHONE_INVALID": 1},
    }
    counts.rows_in += 1
    with pytest.raises(
        AccountingError, match="rows_in 6 != rows_accepted 1 \\+ rows_quarantined 4"
    ):
        counts.check()
