"""Tests for the facts per subject: lookups of consents and suppressions, ages, customers."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.facts import build_facts
from policy.types import Purpose, SuppressionKind

AS_OF = datetime(2026, 11, 1, tzinfo=UTC)
SUBJECTS = ["P1", "P2", "P3", "P4"]


def _reference(
    profiles: pd.DataFrame,
    customers: list[str],
    consents: pd.DataFrame,
    suppressed: pd.DataFrame,
) -> pd.DataFrame:
    """The facts as left merges on the subject, one per purpose and suppression kind."""
    facts = pd.DataFrame({"subject": profiles["profile_id"].astype(str).to_numpy()})
    facts["country"] = pd.Series(profiles["country"].to_numpy(), dtype="string")
    born = pd.to_numeric(pd.Series(profiles["birth_year"].to_numpy()), errors="coerce")
    age = AS_OF.year - born
    facts["age"] = age.where((age >= 0) & (age < 130)).astype("Int64")
    facts["is_customer"] = facts["subject"].isin(set(customers))
    by_subject = facts[["subject"]]
    for purpose in Purpose:
        rows = consents.loc[consents["purpose"] == purpose, ["profile_id", "status", "record_id"]]
        joined = by_subject.merge(
            rows.rename(columns={"profile_id": "subject"}), on="subject", how="left"
        )
        facts[f"consent_{purpose}"] = joined["status"].astype("string").to_numpy()
        facts[f"consent_ref_{purpose}"] = joined["record_id"].astype("string").to_numpy()
    for kind in SuppressionKind:
        rows = suppressed.loc[suppressed["suppression"] == kind, ["profile_id", "request_ref"]]
        rows = rows.drop_duplicates("profile_id").rename(columns={"profile_id": "subject"})
        joined = by_subject.merge(rows, on="subject", how="left")
        facts[f"suppressed_{kind}"] = joined["request_ref"].notna().to_numpy()
        facts[f"suppression_ref_{kind}"] = joined["request_ref"].astype("string").to_numpy()
    return facts


@settings(max_examples=100, deadline=None)
@given(
    profiles=st.lists(
        st.tuples(
            st.sampled_from([None, "DK", "GB", ""]),
            st.sampled_from([None, "1980", "2020", "1800", "x"]),
        ),
        min_size=len(SUBJECTS),
        max_size=len(SUBJECTS),
    ),
    customers=st.lists(st.sampled_from([*SUBJECTS, "P9"])),
    consents=st.dictionaries(
        st.tuples(st.sampled_from([*SUBJECTS, "P9"]), st.sampled_from(list(Purpose))),
        st.tuples(st.sampled_from(["granted", "withdrawn"]), st.sampled_from(["r1", "r2"])),
    ),
    suppressed=st.lists(
        st.tuples(
            st.sampled_from([*SUBJECTS, "P9"]),
            st.sampled_from(list(SuppressionKind)),
            st.sampled_from(["erased", "req-1", "req-2"]),
        )
    ),
)
def test_facts_are_what_a_merge_per_purpose_and_kind_gives(
    profiles: list[tuple[str | None, str | None]],
    customers: list[str],
    consents: dict[tuple[str, Purpose], tuple[str, str]],
    suppressed: list[tuple[str, SuppressionKind, str]],
) -> None:
    table = pd.DataFrame(
        {
            "profile_id": SUBJECTS,
            "country": [c for c, _ in profiles],
            "birth_year": [b for _, b in profiles],
        }
    )
    consent_frame = pd.DataFrame(
        [(s, str(p), status, ref) for (s, p), (status, ref) in consents.items()],
        columns=["profile_id", "purpose", "status", "record_id"],
    ).astype("str")
    suppression_frame = pd.DataFrame(
        [(s, str(k), ref) for s, k, ref in suppressed],
        columns=["profile_id", "suppression", "request_ref"],
    ).astype("str")
    facts = build_facts(
        table,
        customers=pd.Series(customers, dtype="str"),
        consents=consent_frame,
        suppressed=suppression_frame,
        as_of=AS_OF,
    )
    expected = _reference(table, customers, consent_frame, suppression_frame)
    pd.testing.assert_frame_equal(facts, expected)


def test_customers_may_be_any_iterable_of_profile_ids() -> None:
    table = pd.DataFrame({"profile_id": SUBJECTS, "country": "DK", "birth_year": "1990"})
    empty = pd.DataFrame(columns=["profile_id", "purpose", "status", "record_id"])
    none = pd.DataFrame(columns=["profile_id", "suppression", "request_ref"])
    for customers in (["P2"], ("P2",), {"P2"}, iter(["P2"])):
        facts = build_facts(
            table, customers=customers, consents=empty, suppressed=none, as_of=AS_OF
        )
        assert list(facts["is_customer"]) == [False, True, False, False]
        assert facts["consent_profiling"].isna().all()
        assert not facts["suppressed_erasure"].any()
