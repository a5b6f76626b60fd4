"""Tests for golden-record survivorship and provenance."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profiles.config import IdentityConfig, SourceConfig
from profiles.golden import golden_records, profile_table, row_recency
from profiles.types import ATTRIBUTE_FIELDS, NAME_FIELDS

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


# --- the vectorised code against the plain pandas statement of the rules ------------------------


def _filled(rows: pd.DataFrame, field: str) -> pd.Series:
    if field in NAME_FIELDS:
        column = f"{field}_present"
        return rows[column].fillna(False).astype(bool) if column in rows else rows["line"] < 0
    if field not in rows:
        return rows["line"] < 0
    return rows[field].notna() & (rows[field].astype("string").str.strip() != "")


def _reference_golden(
    rows: pd.DataFrame, config: IdentityConfig, sources: list[SourceConfig]
) -> pd.DataFrame:
    """Survivorship as one sort per field and a merge per field: slow, but plainly the rules."""
    recency = row_recency(rows, sources)
    when = recency.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    newest = np.where(np.isnat(when), np.iinfo(np.int64).max, -when.view("int64"))
    complete = sum(
        (_filled(rows, str(f)).astype(int) for f in (*ATTRIBUTE_FIELDS, *NAME_FIELDS)),
        pd.Series(0, index=rows.index),
    )
    profiles = pd.DataFrame({"profile_id": pd.unique(rows["profile_id"])})
    for field, rule in config.golden.items():
        name = str(field)
        has = _filled(rows, name)
        if rule.sources:
            has &= rows["source"].isin(rule.sources)
        pool = rows.loc[has, ["profile_id", "source", "line"]].assign(_newest=newest[has])
        keys = ["profile_id"]
        if rule.rule == "source_priority":
            pool["_rank"] = pool["source"].map({s: i for i, s in enumerate(rule.sources)})
            keys.append("_rank")
        elif rule.rule == "most_complete":
            pool["_rank"] = -complete[has]
            keys.append("_rank")
        winners = pool.sort_values([*keys, "_newest", "source", "line"]).drop_duplicates(
            "profile_id"
        )
        if field not in NAME_FIELDS:
            winners[name] = rows.loc[winners.index, name]
        winners = winners.drop(columns=[c for c in winners.columns if c.startswith("_")])
        winners = winners.rename(columns={"source": f"{name}_source", "line": f"{name}_line"})
        if winners.empty:
            winners = pd.DataFrame(
                columns=["profile_id", f"{name}_source", f"{name}_line"]
                + ([] if field in NAME_FIELDS else [name])
            )
        profiles = profiles.merge(winners, on="profile_id", how="left")
        profiles[f"{name}_line"] = profiles[f"{name}_line"].astype("Int64")
    return profiles.sort_values("profile_id", ignore_index=True)


_TIMES = st.sampled_from(
    [None, "", "garbage", "2020-01-01", "2020-01-01 10:00:00", "2021-06-01T08:00:00+02:00",
     "2021-06-01T06:00:00Z", "2024-02-30"]
)  # fmt: skip
_VALUES = st.sampled_from([None, "", " ", "DK", "SE", "1980"])


@st.composite
def _link_rows(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(1, 12))
    count = range(n)
    return pd.DataFrame(
        {
            "profile_id": [draw(st.sampled_from(["P1", "P2", "Q"])) for _ in count],
            "source": [draw(st.sampled_from(["crm", "newsletter"])) for _ in count],
            "line": draw(st.lists(st.integers(2, 99), min_size=n, max_size=n, unique=True)),
            "country": [draw(_VALUES) for _ in count],
            "birth_year": [draw(_VALUES) for _ in count],
            "created_at": [draw(_TIMES) for _ in count],
            "signed_up_at": [draw(_TIMES) for _ in count],
            "first_name_present": [draw(st.booleans()) for _ in count],
            "last_name_present": [draw(st.booleans()) for _ in count],
        }
    )


_RULES = st.sampled_from(
    [
        {"rule": "source_priority", "sources": ["crm", "newsletter"]},
        {"rule": "source_priority", "sources": ["newsletter"]},
        {"rule": "most_recent"},
        {"rule": "most_recent", "sources": ["crm"]},
        {"rule": "most_complete"},
    ]
)


@settings(max_examples=100, deadline=None)
@given(
    rows=_link_rows(),
    rules=st.fixed_dictionaries(
        {"country": _RULES, "birth_year": _RULES, "first_name": _RULES, "last_name": _RULES}
    ),
)
def test_golden_records_follow_the_rules_as_a_sort_per_field_would(
    rows: pd.DataFrame, rules: dict[str, object]
) -> None:
    config = IdentityConfig.model_validate({"golden": rules})
    expected = _reference_golden(rows, config, SOURCES)
    pd.testing.assert_frame_equal(golden_records(rows, config, SOURCES), expected)


def _reference_table(
    links: pd.DataFrame, identifiers: pd.DataFrame, golden: pd.DataFrame
) -> pd.DataFrame:
    """The profile table as groupby-list aggregations and merges."""
    table = links.groupby("profile_id").size().rename("records").reset_index()
    sources = (
        links.drop_duplicates()
        .sort_values(["profile_id", "source"])
        .groupby("profile_id")["source"]
        .agg(list)
        .rename("sources")
    )
    table = table.merge(sources, on="profile_id", how="left")
    attached = identifiers[identifiers["profile_id"].notna()]
    for kind in ("email", "phone", "customer_id"):
        values = (
            attached.loc[attached["kind"] == kind, ["profile_id", "pseudonym"]]
            .sort_values(["profile_id", "pseudonym"])
            .groupby("profile_id")["pseudonym"]
            .agg(list)
            .rename(f"{kind}_pseudonyms")
        )
        table = table.merge(values, on="profile_id", how="left")
        column = f"{kind}_pseudonyms"
        table[column] = [v if isinstance(v, list) else [] for v in table[column]]
    key_ids = attached.groupby("profile_id")["key_id"].first().rename("key_id")
    table = table.merge(key_ids, on="profile_id", how="left")
    return table.merge(golden, on="profile_id", how="left")


_PROFILES = st.sampled_from(["P1", "P2", "P10", "Q", "P3"])


@settings(max_examples=150, deadline=None)
@given(
    links=st.lists(st.tuples(_PROFILES, st.sampled_from(["crm", "shop", "nl"])), min_size=1),
    attached=st.lists(
        st.tuples(
            st.sampled_from(["email", "phone", "customer_id"]),
            st.sampled_from(["k1", "k2", None]),
            st.sampled_from(["a" * 64, "b" * 64, "c" * 64, "0" * 64]),
            st.one_of(st.none(), _PROFILES, st.just("P9")),
        )
    ),
)
def test_profile_table_lists_what_groupby_would(
    links: list[tuple[str, str]], attached: list[tuple[str, str | None, str, str | None]]
) -> None:
    link_frame = pd.DataFrame(links, columns=["profile_id", "source"])
    identifiers = pd.DataFrame(
        attached, columns=["kind", "key_id", "pseudonym", "profile_id"]
    ).astype("str")
    golden = pd.DataFrame({"profile_id": sorted(set(link_frame["profile_id"])), "country": "DK"})
    table = profile_table(link_frame, identifiers, golden)
    expected = _reference_table(link_frame, identifiers, golden)
    pd.testing.assert_frame_equal(table, expected)
    for column in ("sources", "email_pseudonyms", "phone_pseudonyms", "customer_id_pseudonyms"):
        assert all(type(v) is list for v in table[column])
