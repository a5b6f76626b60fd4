"""Tests for golden-record survivorship and provenance."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from profiles.config import IdentityConfig, SourceConfig
from profiles.golden import golden_records, profile_table, row_recency

SOURCES = [
    SourceConfig.model_validate(
        {
            "name": "crm",
            "kind": "contacts",
            "path": "crm.csv",
            "columns": {
                "email": "e",
                "country": "c",
                "first_name": "f",
                "created_at": "t",
                "birth_year": "b",
            },
        }
    ),
    SourceConfig.model_validate(
        {
            "name": "newsletter",
            "kind": "newsletter",
            "path": "nl.csv",
            "columns": {"email": "e", "country": "c", "first_name": "f", "signed_up_at": "t"},
        }
    ),
]


def _rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "profile_id": ["P1", "P1", "P1", "P2", "P3"],
            "source": ["crm", "newsletter", "newsletter", "newsletter", "crm"],
            "line": [2, 5, 9, 3, 7],
            "country": ["DK", "SE", "", "NO", ""],
            "birth_year": ["1980", None, None, None, ""],
            "created_at": ["2020-01-01 10:00:00", None, None, None, "2021-03-01 10:00:00"],
            "signed_up_at": [None, "2024-05-01 09:00", "2025-01-01T00:00:00Z", "2022-01-01", None],
            "first_name_present": [False, True, True, True, True],
        }
    )


def _cell(frame: pd.DataFrame, profile: str, column: str) -> Any:
    return frame.at[profile, column]


def _cells(frame: pd.DataFrame, profile: str, columns: list[str]) -> list[Any]:
    return [frame.at[profile, c] for c in columns]


def _golden(rules: dict[str, object]) -> pd.DataFrame:
    config = IdentityConfig.model_validate({"golden": rules})
    return golden_records(_rows(), config, SOURCES).set_index("profile_id")


def test_source_priority_takes_the_first_trusted_source_with_a_value() -> None:
    out = _golden({"country": {"rule": "source_priority", "sources": ["crm", "newsletter"]}})
    assert _cells(out, "P1", ["country", "country_source", "country_line"]) == [
        "DK",
        "crm",
        2,
    ]
    assert _cell(out, "P2", "country") == "NO"
    assert pd.isna(_cell(out, "P3", "country"))  # the only row has no country
    assert pd.isna(_cell(out, "P3", "country_source"))


def test_most_recent_uses_each_sources_own_timestamp() -> None:
    out = _golden({"country": {"rule": "most_recent"}})
    # newsletter line 9 is newest but has no country; line 5 (2024) beats crm (2020)
    assert _cells(out, "P1", ["country", "country_source", "country_line"]) == [
        "SE",
        "newsletter",
        5,
    ]


def test_names_keep_provenance_only() -> None:
    out = _golden({"first_name": {"rule": "source_priority", "sources": ["crm", "newsletter"]}})
    assert "first_name" not in out.columns
    # the CRM row has no first name, so the newest newsletter row with one survives
    assert _cells(out, "P1", ["first_name_source", "first_name_line"]) == ["newsletter", 9]
    assert _cell(out, "P3", "first_name_source") == "crm"


def test_most_complete_prefers_the_fullest_row_then_the_newest() -> None:
    config = IdentityConfig.model_validate({"golden": {"country": {"rule": "most_complete"}}})
    # crm line 2 and newsletter line 5 both fill three fields: the newer one wins
    tied = golden_records(_rows(), config, SOURCES).set_index("profile_id")
    assert _cells(tied, "P1", ["country_source", "country_line"]) == ["newsletter", 5]
    rows = _rows()
    rows.loc[1, "first_name_present"] = False  # now the crm row is the fullest
    fuller = golden_records(rows, config, SOURCES).set_index("profile_id")
    assert _cells(fuller, "P1", ["country_source", "country_line"]) == ["crm", 2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_row_order_does_not_matter(seed: int) -> None:
    config = IdentityConfig.model_validate(
        {"golden": {"country": {"rule": "most_recent"}, "first_name": {"rule": "most_complete"}}}
    )
    expected = golden_records(_rows(), config, SOURCES)
    shuffled = _rows().sample(frac=1, random_state=seed).reset_index(drop=True)
    pd.testing.assert_frame_equal(golden_records(shuffled, config, SOURCES), expected)


def test_recency_parses_mixed_iso_forms_to_utc() -> None:
    recency = row_recency(_rows(), SOURCES)
    assert recency.iloc[2] == pd.Timestamp("2025-01-01T00:00:00Z")
    assert recency.iloc[0] == pd.Timestamp("2020-01-01T10:00:00Z")


def test_profile_table_lists_rows_sources_and_pseudonyms_per_profile() -> None:
    links = pd.DataFrame(
        {"profile_id": ["P1", "P1", "P1", "P2"], "source": ["crm", "shop", "crm", "shop"]}
    )
    identifiers = pd.DataFrame(
        {
            "kind": ["email", "email", "phone", "customer_id", "email"],
            "key_id": "k1",
            "pseudonym": ["b" * 64, "a" * 64, "c" * 64, "d" * 64, "e" * 64],
            "profile_id": ["P1", "P1", "P1", "P2", None],
        }
    )
    golden = pd.DataFrame({"profile_id": ["P1", "P2"], "country": ["DK", None]})
    table = profile_table(links, identifiers, golden).set_index("profile_id")
    assert _cells(table, "P1", ["records", "sources", "email_pseudonyms", "phone_pseudonyms"]) == [
        3,
        ["crm", "shop"],
        ["a" * 64, "b" * 64],
        ["c" * 64],
    ]
    assert _cells(table, "P2", ["email_pseudonyms", "customer_id_pseudonyms", "key_id"]) == [
        [],
        ["d" * 64],
        "k1",
    ]
    assert _cell(table, "P1", "country") == "DK"
