"""Tests for consent ingestion, the latest consent per profile and suppression per profile."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.consent import (
    LATEST_COLUMNS,
    RECORD_COLUMNS,
    SUPPRESSED_COLUMNS,
    SkipReason,
    consent_records_from_rows,
    latest_consents,
    suppressed_profiles,
)
from policy.types import Purpose
from profiles.store import StateStore, default_url
from tests.policy.test_tcf import encode, tc_string

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
KEY_ID = "k0123456789ab"
ROW_COLUMNS = (
    "source",
    "line",
    "key_id",
    "email_pseudonym",
    "phone_pseudonym",
    "customer_id_pseudonym",
    "purpose",
    "consent_status",
    "recorded_at",
    "consent_source",
    "notice_version",
    "tcf_string",
)
TCF = {Purpose.ADS_EXPORT: [1, 3, 4], Purpose.PROFILING: [1, 5]}
TC_ONLY = {"purpose": None, "consent_status": None}
"""A row that speaks only through its TC string."""


def p(name: str) -> str:
    """A stand-in pseudonym: 64 hex digits derived from `name`."""
    return hashlib.sha256(name.encode()).hexdigest()


def rows(*given: Mapping[str, object]) -> pd.DataFrame:
    """Consent rows as the flow reads them from identity_links: text columns, missing as NaN;
    `email`, `phone` and `cid` name the person behind each pseudonym."""
    out = []
    for line, row in enumerate(given, start=2):
        full: dict[str, object] = dict.fromkeys(ROW_COLUMNS)
        full |= {
            "source": "consents",
            "line": line,
            "key_id": KEY_ID,
            "purpose": "profiling",
            "consent_status": "granted",
            "recorded_at": "2026-03-01T12:00:00Z",
            "consent_source": "checkout",
            "notice_version": "v2.1",
        }
        for short, kind in (("email", "email"), ("phone", "phone"), ("cid", "customer_id")):
            if short in row:
                person = row[short]
                full[f"{kind}_pseudonym"] = p(str(person)) if person else person
        full |= {k: v for k, v in row.items() if k not in ("email", "phone", "cid")}
        out.append(full)
    frame = pd.DataFrame(out, columns=list(ROW_COLUMNS))
    for column in ROW_COLUMNS:
        if column != "line":
            frame[column] = frame[column].astype("str")
    return frame


def records_of(
    *given: Mapping[str, object], tcf: Mapping[Purpose, Sequence[int]] | None = None
) -> tuple[pd.DataFrame, dict[str, int]]:
    return consent_records_from_rows(rows(*given), source="consents", tcf_purposes=tcf)


def no_skips(**counts: int) -> dict[str, int]:
    return dict.fromkeys((str(r) for r in SkipReason), 0) | counts


def identifiers(*owned: tuple[str, str, str]) -> pd.DataFrame:
    """The identifier -> profile map from (kind, person, profile id)."""
    return pd.DataFrame(
        {
            "kind": [k for k, _, _ in owned],
            "key_id": KEY_ID,
            "pseudonym": [p(n) for _, n, _ in owned],
            "profile_id": [pid for _, _, pid in owned],
        }
    ).astype("str")


# consent_records_from_rows


def test_a_row_is_one_record_per_identifier() -> None:
    records, skipped = records_of({"email": "ann", "phone": "ann-phone", "cid": "crm:1"})
    assert skipped == no_skips()
    assert list(records.columns) == list(RECORD_COLUMNS)
    assert sorted(records["kind"]) == ["customer_id", "email", "phone"]
    assert set(records["pseudonym"]) == {p("ann"), p("ann-phone"), p("crm:1")}
    assert set(records["key_id"]) == {KEY_ID}
    assert set(records["purpose"]) == {"profiling"}
    assert set(records["status"]) == {"granted"}
    assert set(records["evidence_ref"]) == {"consents:2"}
    assert set(records["source"]) == {"checkout"}
    assert set(records["notice_version"]) == {"v2.1"}
    assert not records["tcf"].any()
    assert records["recorded_at"].tolist() == [T0] * 3
    assert str(records["recorded_at"].dtype) == "datetime64[us, UTC]"
    assert records["record_id"].str.fullmatch(r"[0-9a-f]{32}").all()
    assert records["record_id"].is_unique


@pytest.mark.parametrize(
    ("purpose", "expected"),
    [
        pytest.param("profiling", "profiling", id="value"),
        pytest.param(" Profiling ", "profiling", id="case-space"),
        pytest.param("CRM-Export", "crm_export", id="hyphen"),
        pytest.param("crm export", "crm_export", id="space"),
        pytest.param("crm", "crm_export", id="alias-crm"),
        pytest.param("ads", "ads_export", id="alias-ads"),
        pytest.param("Advertising", "ads_export", id="alias-advertising"),
        pytest.param("statistics", "analytics", id="alias-statistics"),
    ],
)
def test_purpose_spellings(purpose: str, expected: str) -> None:
    records, skipped = records_of({"email": "ann", "purpose": purpose})
    assert records["purpose"].tolist() == [expected]
    assert skipped == no_skips()


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        *(
            pytest.param(s, "granted", id=s)
            for s in ("granted", "GRANTED", "yes", "Y", "true", "1", "opt-in", "Opt In", "optin")
        ),
        *(
            pytest.param(s, "withdrawn", id=s)
            for s in ("withdrawn", "no", "false", "0", "opt-out", "OPT_OUT", "revoked", "denied")
        ),
    ],
)
def test_status_spellings(status: str, expected: str) -> None:
    records, _ = records_of({"email": "ann", "consent_status": status})
    assert records["status"].tolist() == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2026-03-01T12:00:00Z", T0, id="zulu"),
        pytest.param("2026-03-01T13:00:00+01:00", T0, id="offset"),
        pytest.param("2026-03-01T07:00:00-0500", T0, id="offset-no-colon"),
        pytest.param("2026-03-01 12:00:00", T0, id="space-no-zone-is-utc"),
        pytest.param("2026-03-01T12:00:00.250Z", T0 + timedelta(milliseconds=250), id="fraction"),
        pytest.param("2026-03-01", datetime(2026, 3, 1, tzinfo=UTC), id="date"),
        pytest.param("  2026-03-01T12:00Z ", T0, id="padded-minutes"),
    ],
)
def test_timestamps_are_read_as_iso_8601_in_utc(text: str, expected: datetime) -> None:
    records, skipped = records_of({"email": "ann", "recorded_at": text})
    assert skipped == no_skips()
    assert records["recorded_at"].tolist() == [expected]


def test_rows_that_yield_nothing_are_counted_by_reason() -> None:
    global_scope = encode(tc_string(is_service_specific=False))
    records, skipped = records_of(
        {"email": "ok"},
        {},  # no identifier at all
        {"email": "", "phone": None},
        {"email": "b", "recorded_at": "01/03/2026"},
        {"email": "c", "recorded_at": None},
        {"email": "d", "purpose": "newsletter"},
        {"email": "e", **TC_ONLY},  # says nothing
        {"email": "f", "consent_status": "maybe"},
        {"email": "g", "consent_status": ""},
        {"email": "h", **TC_ONLY, "tcf_string": "not-a-tc-string!"},
        {"email": "i", **TC_ONLY, "tcf_string": global_scope},
        # a status without a purpose: that part is unknown, the TC string still counts
        {"email": "j", "purpose": None, "tcf_string": encode(tc_string())},
        tcf=TCF,
    )
    assert set(records["pseudonym"]) == {p("ok"), p("j")}
    assert records.loc[records["pseudonym"] == p("j"), "tcf"].all()
    assert skipped == no_skips(
        no_identifier=2,
        bad_timestamp=2,
        unknown_purpose=3,
        unknown_status=2,
        bad_tc_string=2,
    )


def test_a_tc_string_grants_what_all_its_mapped_consent_bits_grant() -> None:
    # consent for 1, 3 and 4 (ads_export: granted), not 5 (profiling: withdrawn); the
    # legitimate-interest bit of 5 does not count
    tc = encode(tc_string(purposes_consent=frozenset({1, 3, 4}), purposes_li_transparency={5}))
    records, skipped = records_of(
        {"email": "ann", "cid": "crm:1", "purpose": None, "consent_status": None, "tcf_string": tc},
        tcf=TCF,
    )
    assert skipped == no_skips()
    decided = set(zip(records["kind"], records["purpose"], records["status"], strict=True))
    assert decided == {
        ("email", "ads_export", "granted"),
        ("email", "profiling", "withdrawn"),
        ("customer_id", "ads_export", "granted"),
        ("customer_id", "profiling", "withdrawn"),
    }
    assert records["tcf"].all()
    assert set(records["recorded_at"]) == {T0}  # the row's time, not the string's


def test_a_row_with_its_own_purpose_and_a_tc_string_yields_both() -> None:
    tc = encode(tc_string(purposes_consent=frozenset({1, 3, 4, 5})))
    records, skipped = records_of(
        {"email": "ann", "purpose": "profiling", "consent_status": "no", "tcf_string": tc}, tcf=TCF
    )
    assert skipped == no_skips()
    by_origin = records.groupby("tcf")[["purpose", "status"]].apply(
        lambda g: sorted(zip(g["purpose"], g["status"], strict=True))
    )
    assert by_origin[False] == [("profiling", "withdrawn")]
    assert by_origin[True] == [("ads_export", "granted"), ("profiling", "granted")]
    assert records["record_id"].is_unique  # same purpose and time, other origin


def test_tc_strings_are_unused_without_a_mapping() -> None:
    tc = encode(tc_string())
    records, skipped = records_of(
        {"email": "ann", "tcf_string": tc}, {"email": "bo", **TC_ONLY, "tcf_string": tc}
    )
    assert records["pseudonym"].tolist() == [p("ann")]  # its own purpose still counts
    assert skipped == no_skips(unmapped_tc_string=2)


def test_tc_strings_too_old_for_tcf_2_2_are_bad() -> None:
    late_v3 = encode(tc_string(tcf_policy_version=3, last_updated=datetime(2024, 1, 1, tzinfo=UTC)))
    early_v3 = encode(
        tc_string(tcf_policy_version=3, last_updated=datetime(2023, 6, 1, tzinfo=UTC))
    )
    records, skipped = records_of(
        {"email": "ann", **TC_ONLY, "tcf_string": late_v3},
        {"email": "bo", **TC_ONLY, "tcf_string": early_v3},
        tcf=TCF,
    )
    assert set(records["pseudonym"]) == {p("bo")}
    assert skipped == no_skips(bad_tc_string=1)


def test_record_ids_depend_on_content_not_on_position() -> None:
    first, _ = records_of(
        {"email": "ann", "purpose": "profiling"},
        {"email": "bo", "purpose": "analytics", "consent_status": "no"},
    )
    # exported again: other order, other lines, an extra row, another label spelling
    again, _ = records_of(
        {"email": "cy"},
        {"email": "bo", "purpose": "analytics", "consent_status": "withdrawn"},
        {"email": "ann", "purpose": "Profiling", "consent_source": "Checkout"},
    )
    assert set(first["record_id"]) < set(again["record_id"])
    changed = [
        {"email": "ann", "consent_status": "no"},
        {"email": "ann", "recorded_at": "2026-03-01T12:00:01Z"},
        {"email": "ann", "purpose": "analytics"},
        {"phone": "ann"},
    ]
    for row in changed:
        other, _ = records_of(row)
        assert other["record_id"][0] not in set(first["record_id"]), row
    elsewhere, _ = consent_records_from_rows(
        rows({"email": "ann"}).assign(source="prefs"), source="prefs"
    )
    assert elsewhere["record_id"][0] not in set(first["record_id"])


def test_repeated_rows_give_one_record_with_the_first_evidence() -> None:
    records, skipped = records_of({"email": "ann"}, {"email": "bo"}, {"email": "ann"})
    assert sorted(records["evidence_ref"]) == ["consents:2", "consents:3"]
    assert skipped == no_skips(duplicate_record=1)


@pytest.mark.parametrize(
    ("source", "notice", "expected"),
    [
        pytest.param("Preference Centre", " v2.1 ", ("preference_centre", "v2.1"), id="tidy"),
        pytest.param("checkout/web", "V 3", ("checkout_web", "V_3"), id="odd-characters"),
        pytest.param("ann@example.com", "v1", (None, "v1"), id="address-dropped"),
        pytest.param("phone 4512345678", "v1", (None, "v1"), id="number-dropped"),
        pytest.param(None, None, (None, None), id="missing"),
    ],
)
def test_labels_become_tokens_and_personal_ones_are_dropped(
    source: str | None, notice: str | None, expected: tuple[str | None, str | None]
) -> None:
    records, skipped = records_of(
        {"email": "ann", "consent_source": source, "notice_version": notice}
    )
    assert skipped == no_skips()
    got = records[["source", "notice_version"]].iloc[0].tolist()
    assert [None if pd.isna(v) else v for v in got] == list(expected)


def test_an_empty_batch_has_the_record_columns() -> None:
    records, skipped = consent_records_from_rows(rows().iloc[:0], source="consents")
    assert list(records.columns) == list(RECORD_COLUMNS)
    assert str(records["recorded_at"].dtype) == "datetime64[us, UTC]"
    assert skipped == no_skips()


@pytest.mark.parametrize(
    ("frame", "source", "tcf", "message"),
    [
        pytest.param(rows({"email": "a"}), "Consents!", None, "source must be", id="source"),
        pytest.param(
            rows({"email": "a"}).drop(columns="line"), "consents", None, "line", id="no-line"
        ),
        pytest.param(rows({"email": "a"}), "other", None, "another source", id="other-source"),
        pytest.param(rows({"email": "a"}), "consents", {"ads_export": []}, "names no", id="empty"),
        pytest.param(rows({"email": "a"}), "consents", {"ads_export": [25]}, "1-24", id="id"),
        pytest.param(rows({"email": "a"}), "consents", {"newsletter": [1]}, "newsletter", id="p"),
    ],
)
def test_contract_violations_raise(
    frame: pd.DataFrame, source: str, tcf: dict[str, list[int]] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        consent_records_from_rows(frame, source=source, tcf_purposes=tcf)  # type: ignore[arg-type]


def test_records_are_what_the_state_store_takes(tmp_path: Path) -> None:
    tc = encode(tc_string())
    records, _ = records_of(
        {"email": "ann", "phone": "ann-phone", "consent_source": "Preference Centre"},
        {"cid": "crm:9", "purpose": "crm", "consent_status": "0", "tcf_string": tc},
        tcf=TCF,
    )
    with StateStore.open(default_url(tmp_path)) as store:
        assert store.save_consents(records) == len(records) == 5
        assert store.save_consents(records) == 0
        stored = store.load_consents().sort_values("record_id").reset_index(drop=True)
    expected = records.sort_values("record_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(stored.drop(columns="first_seen_run"), expected)


# latest_consents


def consent(
    person: str, purpose: str, status: str, at: datetime, *, kind: str = "email", rid: str = ""
) -> dict[str, object]:
    return {
        "record_id": rid
        or hashlib.sha256(f"{person}{purpose}{status}{at}{kind}".encode()).hexdigest()[:32],
        "kind": kind,
        "key_id": KEY_ID,
        "pseudonym": p(person),
        "purpose": purpose,
        "status": status,
        "recorded_at": at,
    }


def consents(*given: dict[str, object]) -> pd.DataFrame:
    frame = pd.DataFrame(list(given), columns=list(consent("x", "p", "s", T0)))
    frame["recorded_at"] = pd.to_datetime(frame["recorded_at"], utc=True)
    return frame


def latest(records: pd.DataFrame, ids: pd.DataFrame) -> dict[tuple[str, str], tuple[str, str]]:
    out = latest_consents(records, ids)
    return {
        (str(pid), str(purpose)): (str(status), str(rid))
        for pid, purpose, status, rid in out[
            ["profile_id", "purpose", "status", "record_id"]
        ].itertuples(index=False, name=None)
    }


def test_the_latest_record_across_a_profiles_identifiers_decides() -> None:
    ids = identifiers(("email", "ann", "PA"), ("phone", "ann-phone", "PA"), ("email", "bo", "PB"))
    records = consents(
        consent("ann", "profiling", "granted", T0, rid="a1" * 16),
        consent(
            "ann-phone",
            "profiling",
            "withdrawn",
            T0 + timedelta(days=1),
            kind="phone",
            rid="a2" * 16,
        ),
        consent("ann", "ads_export", "withdrawn", T0, rid="a3" * 16),
        consent("ann", "ads_export", "granted", T0 + timedelta(seconds=1), rid="a4" * 16),
        consent("bo", "profiling", "granted", T0, rid="b1" * 16),
        consent("nobody", "profiling", "granted", T0, rid="c1" * 16),  # no profile holds it
    )
    out = latest_consents(records, ids)
    assert list(out.columns) == list(LATEST_COLUMNS)
    assert str(out["recorded_at"].dtype) == "datetime64[us, UTC]"
    assert latest(records, ids) == {
        ("PA", "profiling"): ("withdrawn", "a2" * 16),
        ("PA", "ads_export"): ("granted", "a4" * 16),
        ("PB", "profiling"): ("granted", "b1" * 16),
    }
    chosen = out[(out["profile_id"] == "PA") & (out["purpose"] == "profiling")]
    assert chosen["recorded_at"].tolist() == [T0 + timedelta(days=1)]


def test_at_the_same_instant_withdrawn_wins_then_the_smaller_record_id() -> None:
    ids = identifiers(("email", "ann", "PA"), ("customer_id", "crm:1", "PA"))
    records = consents(
        consent("ann", "profiling", "withdrawn", T0, rid="f" * 32),
        consent("crm:1", "profiling", "granted", T0, kind="customer_id", rid="0" * 32),
        consent("ann", "analytics", "granted", T0, rid="9" * 32),
        consent("crm:1", "analytics", "granted", T0, kind="customer_id", rid="1" * 32),
    )
    assert latest(records, ids) == {
        ("PA", "profiling"): ("withdrawn", "f" * 32),
        ("PA", "analytics"): ("granted", "1" * 32),
    }
    # record ids that are not hex digits are ordered as text too
    other = records.assign(record_id=["r-9", "r-0", "r-2", "r-10"])
    assert latest(other, ids)[("PA", "analytics")] == ("granted", "r-10")


def test_record_ids_held_in_several_arrow_chunks() -> None:
    # frames loaded from the store or Parquet come with chunked Arrow columns
    records = consents(
        consent("ann", "profiling", "granted", T0, rid="0" * 31 + "1"),
        consent("ann", "profiling", "withdrawn", T0, rid="0" * 31 + "2"),
        consent("bo", "analytics", "granted", T0, rid="f" * 32),
    )
    chunked = pa.chunked_array([records["record_id"].iloc[:2], records["record_id"].iloc[2:]])
    records["record_id"] = pd.Series(pd.arrays.ArrowExtensionArray(chunked))
    ids = identifiers(("email", "ann", "PA"), ("email", "bo", "PB"))
    assert latest(records, ids) == {
        ("PA", "profiling"): ("withdrawn", "0" * 31 + "2"),
        ("PB", "analytics"): ("granted", "f" * 32),
    }


def test_identifiers_without_a_profile_and_empty_inputs() -> None:
    records = consents(consent("ann", "profiling", "granted", T0))
    unattached = identifiers(("email", "ann", "PA")).assign(
        profile_id=pd.Series([None], dtype="str")
    )
    assert latest_consents(records, unattached).empty
    assert list(latest_consents(records.iloc[:0], identifiers()).columns) == list(LATEST_COLUMNS)
    # a key id that differs is another identifier
    assert latest_consents(
        records.assign(key_id="k-old"), identifiers(("email", "ann", "PA"))
    ).empty


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    n=st.integers(min_value=1, max_value=40),
)
def test_latest_consents_matches_a_simple_model_in_any_order(seed: int, n: int) -> None:
    rng = random.Random(seed)
    people = ["ann", "bo", "cy", "dee", "eve"]
    owners = {name: rng.choice(["PA", "PB", "PC"]) for name in people}
    ids = identifiers(*(("email", name, owner) for name, owner in owners.items()))
    picked = [
        consent(
            rng.choice(people),
            rng.choice(["profiling", "analytics"]),
            rng.choice(["granted", "withdrawn"]),
            T0 + timedelta(hours=rng.randint(0, 3)),  # few instants: many ties
            rid=f"{rng.getrandbits(128):032x}",
        )
        for _ in range(n)
    ]
    expected: dict[tuple[str, str], tuple[str, str]] = {}
    best: dict[tuple[str, str], tuple[datetime, bool, str]] = {}
    for c in picked:
        person = next(name for name in people if p(name) == c["pseudonym"])
        key = (owners[person], str(c["purpose"]))
        at = c["recorded_at"]
        assert isinstance(at, datetime)
        rank = (at, c["status"] == "withdrawn", "")
        current = best.get(key)
        beats = current is None or rank[:2] > current[:2]
        tie = current is not None and rank[:2] == current[:2] and str(c["record_id"]) < current[2]
        if beats or tie:
            best[key] = (at, c["status"] == "withdrawn", str(c["record_id"]))
            expected[key] = (str(c["status"]), str(c["record_id"]))
    shuffled = picked[:]
    rng.shuffle(shuffled)
    assert latest(consents(*picked), ids) == expected
    assert latest(consents(*shuffled), ids.sample(frac=1, random_state=seed % 1000)) == expected


# suppressed_profiles


def suppressions(*given: tuple[str, str, str, str, datetime]) -> pd.DataFrame:
    """Entries (kind, person, suppression, request_ref, recorded_at)."""
    return pd.DataFrame(
        {
            "kind": [g[0] for g in given],
            "key_id": KEY_ID,
            "pseudonym": [p(g[1]) for g in given],
            "suppression": [g[2] for g in given],
            "request_ref": [g[3] for g in given],
            "recorded_at": pd.to_datetime([g[4] for g in given], utc=True),
        }
    )


def test_a_profile_is_suppressed_when_any_identifier_is() -> None:
    ids = identifiers(("email", "ann", "PA"), ("phone", "ann-phone", "PA"), ("email", "bo", "PB"))
    listed = suppressions(
        ("phone", "ann-phone", "objection_profiling", "DSAR-2", T0 + timedelta(days=1)),
        ("email", "ann", "objection_profiling", "DSAR-1", T0),
        ("email", "ann", "opt_out_sale_sharing", "gpc:consents:7", T0),
        ("email", "cy", "erasure", "DSAR-3", T0),  # in no profile
    )
    out = suppressed_profiles(listed, ids)
    assert list(out.columns) == list(SUPPRESSED_COLUMNS)
    assert str(out["recorded_at"].dtype) == "datetime64[us, UTC]"
    assert out[["profile_id", "suppression", "request_ref"]].values.tolist() == [
        ["PA", "objection_profiling", "DSAR-1"],
        ["PA", "opt_out_sale_sharing", "gpc:consents:7"],
    ]
    assert suppressed_profiles(listed.iloc[:0], ids).empty
    assert list(suppressed_profiles(listed, ids.iloc[:0]).columns) == list(SUPPRESSED_COLUMNS)
