"""Tests for the TC string decoder: published strings, an encoder round trip, malformed input."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy import tcf
from policy.tcf import PublisherRestriction, TcfError, TCString, consented_purposes, decode
from profiles.errors import EnrichError

# The example of "TC String Format" in IAB Tech Lab, "Transparency and Consent String with
# Global Vendor & CMP List Formats", Final v.2.2 May 2023 (core segment, then a publisher TC
# segment). Expected values as the GDPR::IAB::TCFv2 parser's test suite asserts them (CPAN,
# peczenyj/gdpr-iab-tcfv2, test "valid tcf v2 consent string using bitfield").
SPEC_EXAMPLE = (
    "CLcVDxRMWfGmWAVAHCENAXCkAKDAADnAABRgA5mdfCKZuYJez-NQm0TBMYA4oCAAGQYIAAAAAAEAIAEgAA"
    ".argAC0gAAAAAAAAAAAA"
)
# fmt: off
SPEC_EXAMPLE_VENDOR_CONSENTS = frozenset({
    2, 3, 6, 7, 8, 10, 12, 13, 14, 15, 16, 21, 25, 27, 30, 31, 34, 35, 37, 38, 39, 42, 43,
    49, 52, 54, 55, 56, 57, 59, 60, 63, 64, 65, 66, 67, 68, 69, 73, 74, 76, 78, 83, 86,
    87, 89, 90, 92, 96, 99, 100, 106, 109, 110, 114, 115,
})
# fmt: on
# A range-encoded string from the same test suite ("valid tcf v2 consent string using range").
RANGE_EXAMPLE = (
    "COyfVVoOyfVVoADACHENAwCAAAAAAAAAAAAAE5QBgALgAqgD8AQACSwEygJyAnSAMABgAFkAgQCDASeAmYBOgAA"
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


# a small encoder, written from the specification's table like the decoder, but separately


def _int(value: int, width: int) -> str:
    assert 0 <= value < 2**width
    return format(value, f"0{width}b")


def _letters(code: str) -> str:
    return "".join(_int(ord(c) - ord("A"), 6) for c in code)


def _bitset(ids: frozenset[int], width: int) -> str:
    return "".join("1" if i in ids else "0" for i in range(1, width + 1))


def _runs(ids: frozenset[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for i in sorted(ids):
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def _range_entries(ids: frozenset[int]) -> str:
    runs = _runs(ids)
    bits = _int(len(runs), 12)
    for start, end in runs:
        bits += "1" + _int(start, 16) + _int(end, 16) if end > start else "0" + _int(start, 16)
    return bits


def _vendors(ids: frozenset[int], *, ranges: bool) -> str:
    max_id = max(ids, default=0)
    if ranges:
        return _int(max_id, 16) + "1" + _range_entries(ids)
    return _int(max_id, 16) + "0" + _bitset(ids, max_id)


def _deciseconds(when: datetime) -> int:
    return round((when - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 10)


def encode_bits(tc: TCString, *, ranges: bool = False) -> str:
    """The core segment of `tc` as bits."""
    bits = (
        _int(tc.version, 6)
        + _int(_deciseconds(tc.created), 36)
        + _int(_deciseconds(tc.last_updated), 36)
        + _int(tc.cmp_id, 12)
        + _int(tc.cmp_version, 12)
        + _int(tc.consent_screen, 6)
        + _letters(tc.consent_language)
        + _int(tc.vendor_list_version, 12)
        + _int(tc.tcf_policy_version, 6)
        + str(int(tc.is_service_specific))
        + str(int(tc.use_non_standard_texts))
        + _bitset(tc.special_feature_opt_ins, 12)
        + _bitset(tc.purposes_consent, 24)
        + _bitset(tc.purposes_li_transparency, 24)
        + str(int(tc.purpose_one_treatment))
        + _letters(tc.publisher_cc)
        + _vendors(tc.vendor_consents, ranges=ranges)
        + _vendors(tc.vendor_legitimate_interests, ranges=ranges)
        + _int(len(tc.publisher_restrictions), 12)
    )
    for r in tc.publisher_restrictions:
        bits += _int(r.purpose_id, 6) + _int(r.restriction_type, 2) + _range_entries(r.vendor_ids)
    return bits


def to_base64url(bits: str) -> str:
    """Bits as URL-safe base64 without padding (zero bits fill the last character)."""
    bits += "0" * (-len(bits) % 6)
    return "".join(_ALPHABET[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))


def encode(tc: TCString, *, ranges: bool = False) -> str:
    """A TC string (core segment only) for `tc`."""
    return to_base64url(encode_bits(tc, ranges=ranges))


def tc_string(**changes: object) -> TCString:
    """A valid TCF v2.2 string's content; `changes` override fields."""
    base = TCString(
        version=2,
        created=T0,
        last_updated=T0,
        cmp_id=300,
        cmp_version=4,
        consent_screen=1,
        consent_language="DA",
        vendor_list_version=120,
        tcf_policy_version=4,
        is_service_specific=True,
        use_non_standard_texts=False,
        special_feature_opt_ins=frozenset({1}),
        purposes_consent=frozenset({1, 3, 4, 7}),
        purposes_li_transparency=frozenset({2, 7}),
        purpose_one_treatment=False,
        publisher_cc="DK",
        vendor_consents=frozenset({1, 2, 3, 755}),
        vendor_legitimate_interests=frozenset({10}),
        publisher_restrictions=(PublisherRestriction(2, 1, frozenset({755, 756})),),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# published strings


def test_the_example_of_the_specification_decodes_to_its_documented_values() -> None:
    tc = decode(SPEC_EXAMPLE)
    assert tc.version == 2
    assert tc.created == datetime(2008, 12, 7, 10, 4, 17, 700000, tzinfo=UTC)  # 1228644257.7
    assert tc.last_updated.timestamp() == pytest.approx(1326215413.4)
    assert (tc.cmp_id, tc.cmp_version, tc.consent_screen) == (21, 7, 2)
    assert tc.consent_language == "EN"
    assert tc.vendor_list_version == 23
    assert tc.tcf_policy_version == 2
    assert tc.is_service_specific
    assert not tc.use_non_standard_texts
    assert tc.purposes_consent == {1, 3, 9, 10}
    assert tc.purposes_li_transparency == {3, 4, 5, 8, 9, 10}
    assert tc.special_feature_opt_ins == {2}
    assert not tc.purpose_one_treatment
    assert tc.publisher_cc == "KM"
    assert tc.vendor_consents == SPEC_EXAMPLE_VENDOR_CONSENTS
    assert max(tc.vendor_consents) == 115
    assert tc.vendor_legitimate_interests == {1, 9, 26, 27, 30, 36, 37, 43, 86, 97, 110, 113}
    assert tc.publisher_restrictions == ()
    # a 2012 string with policy version 2: fine then, and still not past the v2.2 cutoff
    assert tc.problems == ()


def test_a_range_encoded_string_decodes() -> None:
    tc = decode(RANGE_EXAMPLE)
    assert tc.created.timestamp() == 1587946020
    assert (tc.cmp_id, tc.cmp_version, tc.consent_screen) == (3, 2, 7)
    assert (tc.consent_language, tc.publisher_cc, tc.vendor_list_version) == ("EN", "AA", 48)
    assert tc.purposes_consent == frozenset()
    assert tc.vendor_consents == {23, 42, 126, 127, 128, 587, 613, 626}
    assert tc.vendor_legitimate_interests == {24, 44, 129, 130, 131, 591, 614, 628}
    assert not tc.is_service_specific
    assert tc.problems == ("not service-specific (global scope is no longer valid)",)


# round trip


def _times() -> st.SearchStrategy[datetime]:
    return st.integers(min_value=0, max_value=2**36 - 1).map(
        lambda ds: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=100 * ds)
    )


def _ids(top: int, max_size: int = 40) -> st.SearchStrategy[frozenset[int]]:
    return st.frozensets(st.integers(min_value=1, max_value=top), max_size=max_size)


_letters2 = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2)
_restrictions = st.lists(
    st.builds(
        PublisherRestriction,
        purpose_id=st.integers(min_value=1, max_value=11),
        restriction_type=st.integers(min_value=0, max_value=3),
        vendor_ids=_ids(3000),
    ),
    max_size=3,
).map(tuple)
_tc_strings = st.builds(
    TCString,
    version=st.just(2),
    created=_times(),
    last_updated=_times(),
    cmp_id=st.integers(min_value=0, max_value=4095),
    cmp_version=st.integers(min_value=0, max_value=4095),
    consent_screen=st.integers(min_value=0, max_value=63),
    consent_language=_letters2,
    vendor_list_version=st.integers(min_value=0, max_value=4095),
    tcf_policy_version=st.integers(min_value=0, max_value=63),
    is_service_specific=st.booleans(),
    use_non_standard_texts=st.booleans(),
    special_feature_opt_ins=_ids(12),
    purposes_consent=_ids(24),
    purposes_li_transparency=_ids(24),
    purpose_one_treatment=st.booleans(),
    publisher_cc=_letters2,
    vendor_consents=_ids(2000),
    vendor_legitimate_interests=_ids(2000),
    publisher_restrictions=_restrictions,
)


@settings(max_examples=150, deadline=None)
@given(tc=_tc_strings, ranges=st.booleans())
def test_encoded_strings_decode_to_what_was_encoded(tc: TCString, ranges: bool) -> None:
    assert decode(encode(tc, ranges=ranges)) == tc


@settings(max_examples=40, deadline=None)
@given(tc=_tc_strings, ranges=st.booleans(), data=st.data())
def test_every_string_cut_before_its_last_field_is_refused(
    tc: TCString, ranges: bool, data: st.DataObject
) -> None:
    needed = len(encode_bits(tc, ranges=ranges))
    full = encode(tc, ranges=ranges)
    cut = data.draw(st.integers(min_value=1, max_value=math.ceil(needed / 6) - 1))
    with pytest.raises(TcfError, match="cut short"):
        decode(full[:cut])


def test_other_segments_padding_and_surrounding_space_are_ignored() -> None:
    tc = tc_string()
    core = encode(tc)
    assert decode(f"{core}.argAC0gAAAAAAAAAAAA.IFoEUQQgAIQwgIwQABAEAAAAOIAACAIAAAAQAIAgEAA") == tc
    assert decode(f"  {core}\n") == tc
    assert decode(core + "=" * (-len(core) % 4)) == tc


def test_the_last_partial_byte_is_read() -> None:
    # 213 fixed bits + 2 x 17 (empty vendor sections) + 12 = 259 bits: 44 characters, whose
    # last 4 bits fall outside the bytes a plain base64 decoder would return
    tc = tc_string(
        vendor_consents=frozenset(),
        vendor_legitimate_interests=frozenset(),
        publisher_restrictions=(PublisherRestriction(1, 0, frozenset()),),
    )
    encoded = encode(tc)
    assert len(encoded) % 4 != 0
    assert decode(encoded) == tc


# malformed and invalid strings


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("  .argAC0g", "empty", id="no-core"),
        pytest.param("CLcVDxRMWfGm!WAVAHCENA", "not URL-safe base64", id="bad-character"),
        pytest.param("CLcVDxRM+fGm/WAVAHCENA", "not URL-safe base64", id="standard-alphabet"),
        pytest.param("BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASAAAAAAAAAA", "version 1", id="tcf-v1"),
        pytest.param("DOEFEAyOEFEAyAHABDENAI4AAAB9vABAASAAAAAAAAAA", "version 3", id="version-3"),
        pytest.param("Clc", "cut short", id="three-characters"),
        pytest.param("C" + "A" * 100_000, "longer than", id="huge"),
    ],
)
def test_malformed_strings_raise_a_safe_tcf_error(value: str, message: str) -> None:
    with pytest.raises(TcfError, match=message) as info:
        decode(value)
    assert isinstance(info.value, EnrichError)
    assert value.strip() == "" or value[:12] not in str(info.value)


def test_a_language_code_must_be_letters() -> None:
    bits = encode_bits(tc_string())
    language_at = 6 + 36 + 36 + 12 + 12 + 6
    bad = bits[:language_at] + _int(26, 6) + bits[language_at + 6 :]
    with pytest.raises(TcfError, match="ConsentLanguage is not two letters"):
        decode(to_base64url(bad))


def test_a_range_entry_must_not_start_at_zero() -> None:
    good = encode_bits(tc_string(vendor_consents=frozenset({5})), ranges=True)
    entry_at = 213 + 16 + 1 + 12 + 1  # after MaxVendorId, IsRangeEncoding, NumEntries, IsARange
    bad = good[:entry_at] + _int(0, 16) + good[entry_at + 16 :]
    with pytest.raises(TcfError, match="range entry"):
        decode(to_base64url(bad))


def test_non_text_is_refused() -> None:
    with pytest.raises(TcfError, match="must be text"):
        decode(12345)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "problems"),
    [
        pytest.param({}, (), id="valid"),
        pytest.param({"is_service_specific": False}, ("not service-specific",), id="global-scope"),
        pytest.param({"tcf_policy_version": 3}, ("policy version 3",), id="old-policy-late"),
        pytest.param(
            {
                "tcf_policy_version": 3,
                "created": datetime(2023, 9, 1, tzinfo=UTC),
                "last_updated": datetime(2023, 9, 30, 23, tzinfo=UTC),
            },
            (),
            id="old-policy-in-time",
        ),
        pytest.param({"tcf_policy_version": 5}, (), id="newer-policy"),
    ],
)
def test_problems_name_what_tcf_v2_2_deems_invalid(
    changes: dict[str, object], problems: tuple[str, ...]
) -> None:
    found = decode(encode(tc_string(**changes))).problems
    assert len(found) == len(problems)
    for text, expected in zip(found, problems, strict=True):
        assert expected in text


# the column helper


def test_consented_purposes_decodes_each_distinct_string_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    valid = encode(tc_string(purposes_consent=frozenset({1, 3, 4})))
    other = encode(tc_string(purposes_consent=frozenset({2})))
    late_v3 = encode(tc_string(tcf_policy_version=3))
    column = pd.Series(
        [valid, None, other, valid, "", "garbage!", late_v3, valid, float("nan")],
        index=[10, 11, 12, 13, 14, 15, 16, 17, 18],
        name="tcf_string",
        dtype=object,
    )
    calls: list[str] = []
    real = tcf._decode

    def counting(tc: str, *, vendors: bool) -> TCString:
        calls.append(tc)
        return real(tc, vendors=vendors)

    monkeypatch.setattr(tcf, "_decode", counting)
    result = consented_purposes(column)

    assert result.index.tolist() == column.index.tolist()
    assert result.name == "tcf_string"
    assert result.tolist() == [
        frozenset({1, 3, 4}),
        None,
        frozenset({2}),
        frozenset({1, 3, 4}),
        None,
        None,
        None,  # decodes, but TCF v2.2 deems it invalid
        frozenset({1, 3, 4}),
        None,
    ]
    assert sorted(calls) == sorted([valid, other, "garbage!", late_v3])
    lenient = consented_purposes(column, strict=False)
    assert lenient[16] == tc_string().purposes_consent


def test_consented_purposes_of_an_empty_column_is_empty() -> None:
    result = consented_purposes(pd.Series([], dtype="str"))
    assert result.empty
    assert result.dtype == object


def test_consent_ignores_legitimate_interest_bits() -> None:
    only_li = encode(
        tc_string(purposes_consent=frozenset(), purposes_li_transparency=frozenset({2, 7}))
    )
    assert consented_purposes(pd.Series([only_li])).tolist() == [frozenset()]
