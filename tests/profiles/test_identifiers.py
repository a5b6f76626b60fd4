"""Tests for the identifier stage: per-value rules, output contract, cache, pool, deliverability."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import time
import unicodedata
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import dns.resolver
import numpy as np
import pandas as pd
import phonenumbers
import pytest
from email_validator import validate_email
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from profiles import identifiers
from profiles.config import IdentifierConfig, PlaceholderConfig, SourceConfig
from profiles.errors import ConfigError
from profiles.hashing import Key, Pseudonymiser
from profiles.identifiers import (
    Checked,
    Deliverability,
    DnsDeliverabilityChecker,
    IdentifierStage,
    IdentifierStageError,
    StaticDeliverabilityChecker,
    check_country,
    check_customer_id,
    check_email,
    check_phone,
    email_key,
    mixed_script,
    output_columns,
    process_rowwise,
    pseudonymise_values,
)
from profiles.types import IDENTIFIER_FIELDS, TEXT_DTYPE, IdentifierKind, ReasonCode

R = ReasonCode
KEY = Key.from_secret(b"\x01" * 32)
OTHER_KEY = Key.from_secret(b"\x02" * 32)
CONFIG = IdentifierConfig()
DELIVERABLE = IdentifierConfig(check_deliverability=True, deliverability_timeout_seconds=0.3)
P = Pseudonymiser(KEY)
IDENTIFIER_OUTPUTS = [f"{f}_{part}" for f in IDENTIFIER_FIELDS for part in ("pseudonym", "reason")]


def _source(**kw: object) -> SourceConfig:
    data: dict[str, object] = {
        "name": "crm",
        "path": Path("crm.csv"),
        "columns": {
            "email": "E-mail",
            "phone": "Phone",
            "customer_id": "Id",
            "first_name": "First",
            "last_name": "Last",
            "country": "Country",
            "amount": "Amount",
        },
    }
    data.update(kw)
    return SourceConfig.model_validate(data)


CRM = _source(default_region="DK")
SHOP = _source(name="shop", columns={"email": "Mail", "amount": "Total"})


def _values(column: pd.Series[str]) -> list[str | None]:
    """A text column as a list, missing values as None (NaN != NaN would defeat ==)."""
    return [None if pd.isna(v) else v for v in column]


def _frame(**columns: list[str]) -> pd.DataFrame:
    rows = len(next(iter(columns.values())))
    data: dict[str, object] = {"line": pd.Series(range(2, rows + 2), dtype="int64")}
    data.update({name: pd.Series(values, dtype=str) for name, values in columns.items()})
    return pd.DataFrame(data)


@pytest.fixture(scope="module")
def pooled() -> Iterator[IdentifierStage]:
    """One stage with a two-process pool for the whole module: spawning workers takes a second."""
    with IdentifierStage(CONFIG, P, workers=2, pool_threshold=0) as stage:
        stage.process(_frame(email=["warm@example.com"]), CRM)  # starts the pool
        _wait_for_workers(stage)
        yield stage


def _wait_for_workers(stage: IdentifierStage, count: int = 2) -> None:
    deadline = time.monotonic() + 30
    while len(stage.worker_pids()) < count:
        assert time.monotonic() < deadline, "worker processes did not start"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("jane.doe@example.com", ("jane.doe@example.com", None), id="plain"),
        pytest.param("  Jane.Doe@Example.COM\t", ("jane.doe@example.com", None), id="strip-lower"),
        pytest.param("søren@exämple.dk", ("søren@exämple.dk", None), id="unicode"),
        pytest.param(
            unicodedata.normalize("NFD", "søren@example.dk"), ("søren@example.dk", None), id="nfd"
        ),
        pytest.param("", (None, None), id="empty"),
        pytest.param("   ", (None, None), id="blank"),
        pytest.param("jane.doe", (None, R.EMAIL_SYNTAX), id="no-at"),
        pytest.param("jane@localhost", (None, R.EMAIL_SYNTAX), id="no-dot-domain"),
        pytest.param("jane..doe@example.com", (None, R.EMAIL_SYNTAX), id="double-dot"),
        pytest.param("jane doe@example.com", (None, R.EMAIL_SYNTAX), id="space"),
        pytest.param("jane@email.invalid", (None, R.EMAIL_SYNTAX), id="special-use-domain"),
        pytest.param("N/A", (None, R.EMAIL_PLACEHOLDER), id="token"),
        pytest.param(" none ", (None, R.EMAIL_PLACEHOLDER), id="token-padded"),
        pytest.param("Test@Test.com", (None, R.EMAIL_PLACEHOLDER), id="listed-address"),
        pytest.param("noreply@shop.example", (None, R.EMAIL_PLACEHOLDER), id="local-part"),
        pytest.param("jane@noemail.com", (None, R.EMAIL_PLACEHOLDER), id="domain"),
    ],
)
def test_check_email(raw: str, expected: Checked) -> None:
    assert check_email(raw, CONFIG) == expected


CYRILLIC_A = "\u0430"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # one script per local part and per domain label: a spoof mixes them
        pytest.param(f"{CYRILLIC_A}nn@example.com", R.EMAIL_MIXED_SCRIPT, id="cyrillic-a"),
        pytest.param(f"ann@ex{CYRILLIC_A}mple.com", R.EMAIL_MIXED_SCRIPT, id="cyrillic-domain"),
        pytest.param("ann@xn--exmple-4nf.com", R.EMAIL_MIXED_SCRIPT, id="punycode-of-mixed"),
        pytest.param("\u03b1lpha@example.com", R.EMAIL_MIXED_SCRIPT, id="greek-alpha"),
        pytest.param(
            "\u0438\u0432\u0430\u043d-a@example.ru", R.EMAIL_MIXED_SCRIPT, id="cyrillic-latin"
        ),
        # a domain label wholly of Latin lookalikes, under an ASCII top-level domain
        pytest.param("ann@аррӏе.com", R.EMAIL_MIXED_SCRIPT, id="all-cyrillic-apple"),
        pytest.param("ann@xn--80ak6aa92e.com", R.EMAIL_MIXED_SCRIPT, id="punycode-all-cyrillic"),
        pytest.param("ann@ονο.example.com", R.EMAIL_MIXED_SCRIPT, id="all-greek-ono"),
        # compatibility characters imitate other letters: never part of an address
        pytest.param("\U0001d41ann@example.com", R.EMAIL_MIXED_SCRIPT, id="math-bold-a"),
        pytest.param("\uff4a\uff4f\uff48\uff4e@example.com", R.EMAIL_MIXED_SCRIPT, id="fullwidth"),
        pytest.param("\ufb01nn@example.com", R.EMAIL_MIXED_SCRIPT, id="fi-ligature"),
        # the validator already refuses invisible and bidi controls
        pytest.param("a\u202enn@example.com", R.EMAIL_SYNTAX, id="rtl-override"),
        pytest.param("a\u200bnn@example.com", R.EMAIL_SYNTAX, id="zero-width-space"),
        # wholly one script, or the mixes a language is written in, is an address
        pytest.param(
            "\u0438\u0432\u0430\u043d@\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444",
            None,
            id="cyrillic",
        ),
        pytest.param("ann@xn--e1afmkfd.xn--p1ai", None, id="latin-at-cyrillic-domain"),
        pytest.param("ann@аррӏе.рф", None, id="lookalikes-under-cyrillic-tld"),
        pytest.param("ann@мир.com", None, id="cyrillic-label-not-all-lookalikes"),
        pytest.param("\u03b4\u03bf\u03ba\u03b9\u03bc\u03ae@example.gr", None, id="greek"),
        pytest.param("\u7530\u4e2d\u305f\u308d\u3046@\u4f8b\u3048.jp", None, id="han-hiragana"),
        pytest.param("\u5c71\u7530taro@example.jp", None, id="han-latin"),
        pytest.param("\uae40\ucca0\uc218kim@example.kr", None, id="hangul-latin"),
        pytest.param("\u30bf\u30ed\u30fc@example.jp", None, id="katakana-length-mark"),
        pytest.param("\u043c\u02bc\u044f\u0442\u0430@example.ua", None, id="modifier-apostrophe"),
        pytest.param("s\u00f8ren.2\u00e9-x_y@example.dk", None, id="latin-digits-punctuation"),
    ],
)
def test_mixed_script_addresses_are_rejected(raw: str, expected: R | None) -> None:
    key, reason = check_email(raw, CONFIG)
    assert reason == expected
    assert (key is None) == (expected is not None)


def test_an_ascii_address_is_checked_as_the_unicode_domain_it_normalises_to() -> None:
    # the fast path (`email_key`) sees an ASCII address; its key form is not ASCII any more
    assert email_key("ann@xn--pypal-4ve.com") == f"ann@p{CYRILLIC_A}ypal.com"
    assert mixed_script(f"ann@p{CYRILLIC_A}ypal.com")
    assert check_email("ann@xn--pypal-4ve.com", CONFIG) == (None, R.EMAIL_MIXED_SCRIPT)


@given(address=st.text(st.characters(max_codepoint=127), max_size=40))
def test_an_ascii_address_is_never_mixed_script(address: str) -> None:
    assert not mixed_script(address)


def test_an_idn_domain_has_one_pseudonym_in_punycode_and_in_unicode() -> None:
    spellings = [
        "ann@xn--e1afmkfd.xn--p1ai",
        "ann@\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444",
        "Ann@\u041f\u0420\u0418\u041c\u0415\u0420.\u0420\u0424",
        " ann@XN--E1AFMKFD.XN--P1AI",
    ]
    frame = _frame(email=spellings)
    with IdentifierStage(CONFIG, P, workers=1) as stage:
        out = stage.process(frame, CRM)
    expected = process_rowwise(frame, CRM, CONFIG, P)
    pd.testing.assert_frame_equal(out, expected)
    assert out["email_pseudonym"].notna().all()
    assert out["email_pseudonym"].nunique() == 1


def test_a_10_mb_value_is_checked_without_reading_it_character_by_character() -> None:
    huge = "x" * 10_000_000
    started = time.process_time()
    assert email_key(huge) is None
    assert email_key(huge + "@example.com") is None
    assert check_email("a." * 5_000_000 + "@example.com", CONFIG) == (None, R.EMAIL_SYNTAX)
    assert time.process_time() - started < 1  # the validator takes 2 to 5 s for each


# a letter of each script addresses are written in, and the mixes Unicode TS #39 allows
SCRIPT_LETTERS = {
    "Latin": "a",
    "Greek": "\u03b1",
    "Cyrillic": "\u0430",
    "Armenian": "\u0561",
    "Hebrew": "\u05d0",
    "Arabic": "\u0627",
    "Devanagari": "\u0915",
    "Bengali": "\u0995",
    "Tamil": "\u0b95",
    "Thai": "\u0e01",
    "Georgian": "\u10d0",
    "Ethiopic": "\u1200",
    "Hangul": "\uac00",
    "Hiragana": "\u3042",
    "Katakana": "\u30a2",
    "Bopomofo": "\u3105",
    "Han": "\u4e2d",
}
ALLOWED_MIXES = [
    {"Latin", "Han", "Hiragana", "Katakana"},
    {"Latin", "Han", "Bopomofo"},
    {"Latin", "Han", "Hangul"},
]


def test_letter_scripts_match_the_unicode_script_property() -> None:
    """`mixed_script` takes a letter's script from its Unicode name: check it against the
    Script property (the `regex` package knows it) over every letter of these scripts."""
    regex = pytest.importorskip("regex")
    letters = "".join(
        ch
        for ch in map(chr, range(0x30000))
        if unicodedata.category(ch).startswith("L") and unicodedata.normalize("NFKC", ch) == ch
    )
    for script, letter in SCRIPT_LETTERS.items():
        found = regex.findall(rf"\p{{Script={script}}}", letters)
        assert len(found) > 10, script
        # every letter of a script goes with the script's own letters ...
        assert [ch for ch in found if mixed_script(f"{letter}{ch}@example.com")] == [], script
        if script in ("Cyrillic", "Greek"):  # ... and none of these with a Latin one
            assert all(mixed_script(f"a{ch}@example.com") for ch in found), script
    # ... and not with another script's, but for the mixes TS #39 allows
    for (one, a), (other, b) in itertools.combinations(SCRIPT_LETTERS.items(), 2):
        allowed = any({one, other} <= mix for mix in ALLOWED_MIXES)
        assert mixed_script(f"x@{a}{b}.example") != allowed, (one, other)


def test_configured_email_placeholders_apply() -> None:
    config = IdentifierConfig(
        placeholders=PlaceholderConfig(emails=["Info@Shop.example"], email_domains=["fake.org"])
    )
    assert check_email("info@shop.example", config) == (None, R.EMAIL_PLACEHOLDER)
    assert check_email("a@FAKE.org", config) == (None, R.EMAIL_PLACEHOLDER)
    assert check_email("a@test.com", config) == ("a@test.com", None)


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        pytest.param("+45 20 12 34 56", None, ("+4520123456", None), id="plus-no-region"),
        pytest.param("+45 20 12 34 56", "DE", ("+4520123456", None), id="plus-ignores-region"),
        pytest.param("20 12 34 56", "DK", ("+4520123456", None), id="national-with-region"),
        pytest.param("0045 20123456", None, ("+4520123456", None), id="00-no-region"),
        pytest.param("0045 20123456", "DK", ("+4520123456", None), id="00-with-region"),
        pytest.param("030 123456", "DE", ("+4930123456", None), id="trunk-prefix"),
        pytest.param("", "DK", (None, None), id="empty"),
        pytest.param("20123456", None, (None, R.PHONE_NO_REGION), id="no-region"),
        pytest.param("phone me", "DK", (None, R.PHONE_INVALID), id="not-a-number"),
        pytest.param("+1", None, (None, R.PHONE_INVALID), id="too-short"),
        pytest.param("+45 201234567", None, (None, R.PHONE_INVALID), id="too-long"),
        pytest.param("20123456", "ZZ", (None, R.PHONE_INVALID), id="unknown-region"),
        pytest.param("11 11 11 11", "DK", (None, R.PHONE_PLACEHOLDER), id="one-digit"),
        pytest.param("+45 20202020", None, (None, R.PHONE_PLACEHOLDER), id="two-digits"),
        pytest.param("-1", "DK", (None, R.PHONE_PLACEHOLDER), id="token"),
        pytest.param("No Phone", None, (None, R.PHONE_PLACEHOLDER), id="token-words"),
    ],
)
def test_check_phone(raw: str, region: str | None, expected: Checked) -> None:
    assert check_phone(raw, region, CONFIG) == expected


def test_phone_distinct_digit_threshold_is_configurable() -> None:
    config = IdentifierConfig(placeholders=PlaceholderConfig(phone_min_distinct_digits=1))
    assert check_phone("+45 20202020", None, config) == ("+4520202020", None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("C-1001", ("crm:C-1001", None), id="plain"),
        pytest.param(" c-1001 ", ("crm:c-1001", None), id="strip-keeps-case"),
        pytest.param("007", ("crm:007", None), id="leading-zeros"),
        pytest.param("", (None, None), id="empty"),
        pytest.param("0000", (None, R.CUSTOMER_ID_PLACEHOLDER), id="all-zeros"),
        pytest.param("-1", (None, R.CUSTOMER_ID_PLACEHOLDER), id="token"),
        pytest.param("NULL", (None, R.CUSTOMER_ID_PLACEHOLDER), id="token-case"),
    ],
)
def test_check_customer_id(raw: str, expected: Checked) -> None:
    assert check_customer_id(raw, "crm", CONFIG) == expected


def test_configured_customer_id_placeholders_apply_casefolded() -> None:
    config = IdentifierConfig(placeholders=PlaceholderConfig(customer_ids=["GUEST"]))
    assert check_customer_id("guest", "crm", config) == (None, R.CUSTOMER_ID_PLACEHOLDER)
    assert check_customer_id("guest", "crm", CONFIG) == ("crm:guest", None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("DK", ("DK", None), id="code"),
        pytest.param(" danmark ", ("DK", None), id="local-name"),
        pytest.param("UK", ("GB", None), id="alias"),
        pytest.param("", (None, None), id="empty"),
        pytest.param("Narnia", (None, R.COUNTRY_UNKNOWN), id="unknown"),
    ],
)
def test_check_country(raw: str, expected: Checked) -> None:
    assert check_country(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("\udc80@example.com", id="surrogate"),
        pytest.param("a" * 5000 + "@example.com", id="huge"),
        pytest.param("\x00\x01@\x02", id="control"),
        pytest.param("+" + "9" * 300, id="long-number"),
        pytest.param("\u202e+4520123456\u202c", id="bidi"),
    ],
)
def test_odd_values_are_outcomes_not_exceptions(raw: str) -> None:
    assert check_email(raw, CONFIG)[1] is R.EMAIL_SYNTAX
    for region in ["DK", None]:
        key, reason = check_phone(raw, region, CONFIG)
        assert (key is None) != (reason is None)
    assert check_customer_id(raw, "crm", CONFIG)[0] is not None


@given(email=st.emails())
def test_normalised_emails_revalidate_to_themselves(email: str) -> None:
    key, _ = check_email(email, CONFIG)
    assume(key is not None)
    assert key is not None
    assert check_email(key, CONFIG) == (key, None)


_REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)


# Computed once, outside any strategy: phonenumbers loads region metadata lazily on first use,
# and hypothesis treats library work inside a strategy that differs between replays as flaky.
_EXAMPLES: dict[str, str] = {
    region: phonenumbers.national_significant_number(example)
    for region in _REGIONS
    if (example := phonenumbers.example_number(region)) is not None
}


@st.composite
def phone_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """A national-format number near a region's example number, and the region."""
    region = draw(st.sampled_from(sorted(_EXAMPLES)))
    digits = _EXAMPLES[region]
    tail = draw(st.text("0123456789", min_size=1, max_size=4))
    return digits[: len(digits) - len(tail)] + tail, region


@given(number=phone_numbers(), other=st.sampled_from([None, *_REGIONS]))
def test_normalised_phones_revalidate_to_themselves(
    number: tuple[str, str], other: str | None
) -> None:
    key, _ = check_phone(number[0], number[1], CONFIG)
    assume(key is not None)
    assert key is not None
    assert key.startswith("+")
    assert check_phone(key, other, CONFIG) == (key, None)


@given(value=st.text(min_size=1))
def test_customer_id_key_form_revalidates_to_itself(value: str) -> None:
    key, _ = check_customer_id(value, "crm", CONFIG)
    assume(key is not None)
    assert key is not None
    assert check_customer_id(key.removeprefix("crm:"), "crm", CONFIG) == (key, None)


def _contacts() -> pd.DataFrame:
    return _frame(
        email=[" Jane.Doe@Example.com", "bad@", "", "test@test.com", "ole@example.dk"],
        phone=["20 12 34 56", "+46 70 123 45 67", "", "1111", "0045 20 12 34 56"],
        customer_id=["C1", "000", "", "n/a", "C2"],
        first_name=["Jane", "Bo", "Al", "Tess", "Ole"],
        last_name=["Doe", "Ek", "Bu", "Ting", "Sen"],
        country=["Danmark", "Sverige", "", "Narnia", ""],
        amount=["1.50", "", "3", "4", "5"],
    )


def test_output_columns_dtypes_and_values() -> None:
    frame = _contacts()
    with IdentifierStage(CONFIG, P, workers=1) as stage:
        out = stage.process(frame, CRM)
    assert list(out.columns) == output_columns(list(frame.columns))
    assert list(out.columns) == [
        "line",
        "key_id",
        *IDENTIFIER_OUTPUTS,
        "country",
        "country_reason",
        "row_reason",
        "amount",
        "first_name_present",
        "last_name_present",
    ]
    assert out["line"].dtype == np.dtype("int64")
    assert out["first_name_present"].tolist() == [True] * 5
    flags = {"line", "amount", "first_name_present", "last_name_present"}
    assert all(out[c].dtype == TEXT_DTYPE for c in out.columns if c not in flags)
    assert out["line"].tolist() == [2, 3, 4, 5, 6]
    assert (out["key_id"] == KEY.key_id).all()
    email = P.digest(IdentifierKind.EMAIL, "jane.doe@example.com")
    phone = P.digest(IdentifierKind.PHONE, "+4520123456")
    assert out.loc[0, "email_pseudonym"] == email
    assert out.loc[0, "phone_pseudonym"] == phone
    assert out.loc[0, "customer_id_pseudonym"] == P.digest(IdentifierKind.CUSTOMER_ID, "crm:C1")
    assert out.loc[4, "phone_pseudonym"] == phone
    assert _values(out["email_reason"]) == [None, "EMAIL_SYNTAX", None, "EMAIL_PLACEHOLDER", None]
    assert _values(out["phone_reason"]) == [None, None, None, "PHONE_PLACEHOLDER", None]
    assert _values(out["customer_id_reason"]) == [
        None,
        "CUSTOMER_ID_PLACEHOLDER",
        None,
        "CUSTOMER_ID_PLACEHOLDER",
        None,
    ]
    assert _values(out["country"]) == ["DK", "SE", None, None, None]
    assert _values(out["country_reason"]) == [None, None, None, "COUNTRY_UNKNOWN", None]
    assert _values(out["row_reason"]) == [
        None,
        None,
        "ROW_NO_IDENTIFIER",
        "ROW_NO_IDENTIFIER",
        None,
    ]
    assert out["amount"].tolist() == frame["amount"].tolist()


def test_row_without_any_pseudonym_is_flagged() -> None:
    frame = _frame(email=["bad", "", "a@example.com"], phone=["x", "", ""])
    with IdentifierStage(CONFIG, P, workers=1) as stage:
        out = stage.process(frame, CRM)
    assert _values(out["row_reason"]) == ["ROW_NO_IDENTIFIER", "ROW_NO_IDENTIFIER", None]


def test_unmapped_identifiers_are_present_and_missing() -> None:
    frame = _frame(email=["a@example.com"], amount=["9.99"])
    with IdentifierStage(CONFIG, P, workers=1) as stage:
        out = stage.process(frame, SHOP)
    for column in ["phone_pseudonym", "phone_reason", "customer_id_pseudonym", "country"]:
        assert out[column].isna().all()
        assert out[column].dtype == TEXT_DTYPE
    assert list(out.columns)[-1] == "amount"


def test_empty_chunk_keeps_the_contract() -> None:
    frame = _contacts().iloc[:0]
    with IdentifierStage(CONFIG, P, workers=1) as stage:
        out = stage.process(frame, CRM)
    assert list(out.columns) == output_columns(list(frame.columns))
    assert len(out) == 0


def test_input_index_is_kept_and_input_untouched() -> None:
    frame = _contacts()
    frame.index = pd.RangeIndex(100, 105)
    before = frame.copy()
    with IdentifierStage(CONFIG, P, workers=1) as stage:
        out = stage.process(frame, CRM)
    assert out.index.equals(frame.index)
    pd.testing.assert_frame_equal(frame, before)


def test_names_and_unknown_columns_are_dropped() -> None:
    frame = _contacts().assign(notes=pd.Series(["secret"] * 5, dtype=str))
    with IdentifierStage(CONFIG, P, workers=1) as stage:
        out = stage.process(frame, CRM)
    assert not {"email", "phone", "customer_id", "first_name", "last_name", "notes"} & set(
        out.columns
    )


def test_frame_without_line_column_is_refused() -> None:
    with IdentifierStage(CONFIG, P, workers=1) as stage, pytest.raises(ValueError, match="line"):
        stage.process(pd.DataFrame({"email": ["a@example.com"]}), CRM)


@pytest.mark.parametrize(
    ("country", "default", "phone", "expected"),
    [
        pytest.param("SE", "DK", "070-123 45 67", "+46701234567", id="row-country-wins"),
        pytest.param("", "DK", "20 12 34 56", "+4520123456", id="source-default"),
        pytest.param("Narnia", "DK", "20 12 34 56", "+4520123456", id="unknown-country-default"),
        pytest.param("", None, "0045 20123456", "+4520123456", id="00-without-region"),
    ],
)
def test_phone_region_comes_from_row_then_source(
    country: str, default: str | None, phone: str, expected: str
) -> None:
    frame = _frame(phone=[phone], country=[country])
    with IdentifierStage(CONFIG, P, workers=1) as stage:
        out = stage.process(frame, _source(default_region=default))
    assert out.loc[0, "phone_pseudonym"] == P.digest(IdentifierKind.PHONE, expected)


def test_phone_without_region_anywhere() -> None:
    frame = _frame(phone=["20 12 34 56"], country=[""])
    with IdentifierStage(CONFIG, P, workers=1) as stage:
        out = stage.process(frame, _source())
    assert out.loc[0, "phone_reason"] == "PHONE_NO_REGION"


def test_customer_ids_are_namespaced_per_source() -> None:
    frame = _frame(customer_id=["C1"])
    shared = _source(name="consents", id_namespace="crm")
    with IdentifierStage(CONFIG, P, workers=1) as stage:
        crm = _values(stage.process(frame, CRM)["customer_id_pseudonym"])
        other = _values(stage.process(frame, _source(name="other"))["customer_id_pseudonym"])
        consents = _values(stage.process(frame, shared)["customer_id_pseudonym"])
    assert crm == consents != other


def test_each_distinct_stripped_value_is_validated_once_per_run() -> None:
    first = _frame(
        email=["a@example.com", " a@example.com", "a@example.com", "b@example.com"],
        phone=["20123456", "20123456 ", "+4520123456", "+4520123456"],
        country=["DK", "DK", "SE", "DK"],
    )
    second = _frame(email=["a@example.com  ", "c@example.com"], phone=["20123456", ""])
    with IdentifierStage(CONFIG, P, workers=1) as stage:
        out1 = stage.process(first, CRM)
        out2 = stage.process(second, CRM)
        assert stage.stats.validated[IdentifierKind.EMAIL] == 3
        # ("20123456", DK) and "+4520123456" (any region) are the only phone checks
        assert stage.stats.validated[IdentifierKind.PHONE] == 2
        assert stage.cache_size() == 5
    assert out1["email_pseudonym"].nunique() == 2
    assert out1["phone_pseudonym"].nunique() == 1
    assert _values(out2["email_pseudonym"])[0] == _values(out1["email_pseudonym"])[0]


_EMAILS = [
    *("a@example.com", " A@example.com", "a@example.com ", "B@Example.org", "bad@", "n/a"),
    *("noreply@x.dk", "søren@exämple.dk", unicodedata.normalize("NFD", "søren@exämple.dk")),
    *("", "  ", "x@test.com", "jo@email.invalid"),
    *("\u0430@example.com", "a@xn--pypal-4ve.com", "a@xn--e1afmkfd.xn--p1ai", "a@пример.рф"),
]
_PHONES = [
    *("20 12 34 56", "20123456", "+45 20 12 34 56", "0045 20123456", "070-123 45 67"),
    *("+46 70 123 45 67", "1111111", "-1", "", "12", "+1 202 555 0143", "030 1234567"),
]
_IDS = ["C1", " C1", "c1", "000", "0", "", "null", "42", "x-9"]
_COUNTRIES = ["DK", "Sverige", "", "Narnia", "DE", " us ", "uk"]


@st.composite
def chunks(draw: st.DrawFn, max_rows: int = 30) -> pd.DataFrame:
    """A chunk of tricky, repetitive values, as `profiles.ingest` would hand it over."""
    rows = draw(st.integers(0, max_rows))

    def col(values: list[str]) -> list[str]:
        return draw(st.lists(st.sampled_from(values), min_size=rows, max_size=rows))

    return _frame(
        email=col(_EMAILS),
        phone=col(_PHONES),
        customer_id=col(_IDS),
        country=col(_COUNTRIES),
        amount=col(["1", "", "2.50"]),
    )


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(frame=chunks(), default=st.sampled_from([None, "DK", "US"]))
def test_stage_matches_the_row_wise_reference(frame: pd.DataFrame, default: str | None) -> None:
    source = _source(default_region=default)
    with IdentifierStage(CONFIG, P, workers=1) as stage:
        # twice through one stage: the second pass is answered from the cache
        first = stage.process(frame, source)
        second = stage.process(frame, source)
    expected = process_rowwise(frame, source, CONFIG, P)
    pd.testing.assert_frame_equal(first, expected)
    pd.testing.assert_frame_equal(second, expected)


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(frame=chunks(max_rows=40), cut=st.floats(0, 1))
def test_two_chunks_equal_one(frame: pd.DataFrame, cut: float) -> None:
    at = int(len(frame) * cut)
    with IdentifierStage(CONFIG, P, workers=1) as stage:
        whole = stage.process(frame, CRM)
    with IdentifierStage(CONFIG, P, workers=1) as stage:
        parts = pd.concat(
            [stage.process(frame.iloc[:at], CRM), stage.process(frame.iloc[at:], CRM)]
        )
    pd.testing.assert_frame_equal(parts, whole)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=chunks(max_rows=60))
def test_worker_pool_gives_the_same_output(pooled: IdentifierStage, frame: pd.DataFrame) -> None:
    with IdentifierStage(CONFIG, P, workers=1) as stage:
        expected = stage.process(frame, CRM)
    pd.testing.assert_frame_equal(pooled.process(frame, CRM), expected)


def test_worker_pool_handles_many_batches(pooled: IdentifierStage) -> None:
    rows = 9_000  # several batches per kind
    frame = _frame(
        email=[f"user{i}@example.com" for i in range(rows)],
        phone=[f"+4520{i:06d}" for i in range(rows)],
        customer_id=[f"C{i % 5000}" for i in range(rows)],
    )
    before = pooled.stats.batches_in_workers
    out = pooled.process(frame, CRM)
    assert pooled.stats.batches_in_workers > before
    pd.testing.assert_frame_equal(out, process_rowwise(frame, CRM, CONFIG, P))


def test_the_pool_starts_every_worker_even_when_the_first_is_idle_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pool starts a worker only for a task that finds none idle. The worst interleaving
    (the first warm-up task done before the second is submitted, as on a busy machine) must
    still start them all."""

    class SlowSubmitter(ProcessPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
            future = super().submit(fn, *args, **kwargs)
            with contextlib.suppress(FutureTimeout):
                future.result(timeout=3)
            return future

    monkeypatch.setattr(identifiers, "ProcessPoolExecutor", SlowSubmitter)
    with IdentifierStage(CONFIG, P, workers=2, pool_threshold=0) as stage:
        one = _frame(email=["a@example.com"])
        stage.process(one, CRM)
        _wait_for_workers(stage)
        assert stage.process(one, CRM)["email_reason"].isna().all()


def test_small_runs_stay_in_process() -> None:
    with IdentifierStage(CONFIG, P, workers=2) as stage:
        stage.process(_contacts(), CRM)
        assert stage.worker_pids() == []
        assert stage.stats.batches_in_workers == 0


def test_dead_worker_is_a_retryable_error_and_the_stage_recovers() -> None:
    frame = _frame(email=[f"user{i}@example.com" for i in range(3000)])
    with IdentifierStage(CONFIG, P, workers=2, pool_threshold=0) as stage:
        stage.process(frame.iloc[:1], CRM)
        _wait_for_workers(stage)
        for pid in stage.worker_pids():
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        with pytest.raises(IdentifierStageError) as caught:  # noqa: PT012 - retried until seen
            # the pool notices its dead workers asynchronously; until then work still succeeds
            for i in range(1, len(frame)):
                assert time.monotonic() < deadline
                stage.process(frame.iloc[i : i + 1], CRM)
                time.sleep(0.01)
        assert caught.value.retryable
        assert "@" not in str(caught.value)
        out = stage.process(_frame(email=["again@example.com"]), CRM)
        assert out["email_reason"].isna().all()


_SECRET_LOOKING = st.text(st.characters(codec="utf-8"), min_size=3, max_size=30)


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(
    emails=st.lists(st.emails() | _SECRET_LOOKING, min_size=1, max_size=8),
    phones=st.lists(
        st.from_regex(r"\A\+?[0-9 ]{6,15}\Z", fullmatch=True) | _SECRET_LOOKING,
        min_size=1,
        max_size=8,
    ),
    names=st.lists(_SECRET_LOOKING, min_size=1, max_size=8),
)
def test_raw_and_normalised_values_never_reach_the_output(
    emails: list[str], phones: list[str], names: list[str]
) -> None:
    rows = max(len(emails), len(phones), len(names))

    def fill(values: list[str]) -> list[str]:
        return [values[i % len(values)] for i in range(rows)]

    frame = _frame(
        email=fill(emails),
        phone=fill(phones),
        customer_id=fill(names),
        first_name=fill(names),
        country=fill(["DK", ""]),
    )
    with IdentifierStage(CONFIG, P, workers=1) as stage:
        out = stage.process(frame, CRM)
    cells = {v for c in out.columns if c != "line" for v in out[c].dropna()}
    secrets = {v for v in emails + phones + names if v.strip()}
    secrets |= {v.strip() for v in secrets}
    secrets |= {k for e in emails if (k := check_email(e, CONFIG)[0])}
    secrets |= {k for p in phones if (k := check_phone(p, "DK", CONFIG)[0])}
    harmless = {KEY.key_id, "DK", *(r.value for r in ReasonCode)}
    assert not (secrets - harmless) & cells


@settings(max_examples=20)
@given(frame=chunks(max_rows=10))
def test_pseudonyms_depend_on_the_key(frame: pd.DataFrame) -> None:
    with IdentifierStage(CONFIG, P, workers=1) as stage:
        a = stage.process(frame, CRM)
    with IdentifierStage(CONFIG, Pseudonymiser(OTHER_KEY), workers=1) as stage:
        b = stage.process(frame, CRM)
    for column in ["email_pseudonym", "phone_pseudonym", "customer_id_pseudonym"]:
        assert not set(a[column].dropna()) & set(b[column].dropna())
        assert (a[column].isna() == b[column].isna()).all()
    assert set(a["key_id"]) <= {KEY.key_id}
    assert set(b["key_id"]) <= {OTHER_KEY.key_id}


@settings(max_examples=30)
@given(frame=chunks(max_rows=10))
def test_pseudonyms_are_the_kinds_hmac_of_the_key_form(frame: pd.DataFrame) -> None:
    with IdentifierStage(CONFIG, P, workers=1) as stage:
        out = stage.process(frame, CRM)
    for i in range(len(frame)):
        country, _ = check_country(frame["country"].iloc[i])
        forms = {
            IdentifierKind.EMAIL: check_email(frame["email"].iloc[i], CONFIG)[0],
            IdentifierKind.PHONE: check_phone(frame["phone"].iloc[i], country or "DK", CONFIG)[0],
            IdentifierKind.CUSTOMER_ID: check_customer_id(
                frame["customer_id"].iloc[i], "crm", CONFIG
            )[0],
        }
        for kind, form in forms.items():
            got = _values(out[f"{kind}_pseudonym"])[i]
            if form is None:
                assert got is None
                continue
            assert got == P.digest(kind, form)
            assert all(got != P.digest(other, form) for other in IdentifierKind if other != kind)


def test_the_same_text_does_not_link_across_kinds() -> None:
    frame = _frame(email=["c1@example.com"], customer_id=["c1@example.com"])
    with IdentifierStage(CONFIG, P, workers=1) as stage:
        out = stage.process(frame, _source(name="x"))
    assert _values(out["email_pseudonym"]) == [P.digest(IdentifierKind.EMAIL, "c1@example.com")]
    assert _values(out["customer_id_pseudonym"]) == [
        P.digest(IdentifierKind.CUSTOMER_ID, "x:c1@example.com")
    ]


def test_undeliverable_domains_are_rejected_once_per_domain_per_run() -> None:
    fake = StaticDeliverabilityChecker(rejects=["nomail.example"], unknown=["slow.example"])
    frame = _frame(
        email=["a@nomail.example", "b@NoMail.example", "c@slow.example", "d@ok.example", "bad"]
    )
    with IdentifierStage(DELIVERABLE, P, workers=1, deliverability=fake) as stage:
        out = stage.process(frame, CRM)
        again = stage.process(_frame(email=["e@nomail.example", "f@ok.example"]), CRM)
        assert stage.stats.domains_checked == 3
    assert _values(out["email_reason"]) == [
        "EMAIL_UNDELIVERABLE",
        "EMAIL_UNDELIVERABLE",
        None,
        None,
        "EMAIL_SYNTAX",
    ]
    assert _values(again["email_reason"]) == ["EMAIL_UNDELIVERABLE", None]
    assert sorted(fake.calls) == ["nomail.example", "ok.example", "slow.example"]
    pd.testing.assert_frame_equal(
        out, process_rowwise(frame, CRM, DELIVERABLE, P, deliverability=fake)
    )


def test_deliverability_is_not_asked_unless_configured() -> None:
    fake = StaticDeliverabilityChecker(rejects=["nomail.example"])
    with IdentifierStage(CONFIG, P, workers=1, deliverability=fake) as stage:
        out = stage.process(_frame(email=["a@nomail.example"]), CRM)
    assert out["email_reason"].isna().all()
    assert fake.calls == []


class _Exploding:
    def check(self, domain: str) -> Deliverability:
        raise RuntimeError(domain)


def test_a_failing_checker_accepts() -> None:
    with IdentifierStage(DELIVERABLE, P, workers=1, deliverability=_Exploding()) as stage:
        out = stage.process(_frame(email=["a@example.com", "b@example.org"]), CRM)
    assert out["email_reason"].isna().all()


@pytest.fixture
def dead_resolver() -> dns.resolver.Resolver:
    """A resolver asking 127.0.0.1 on a UDP port nobody listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    return resolver


def test_dns_checker_times_out_fast_without_rejecting(dead_resolver: dns.resolver.Resolver) -> None:
    checker = DnsDeliverabilityChecker(timeout=0.3, resolver=dead_resolver)
    started = time.monotonic()
    assert checker.check("example.com") is Deliverability.UNKNOWN
    assert time.monotonic() - started < 1.5


def test_stage_with_unreachable_dns_accepts_addresses(dead_resolver: dns.resolver.Resolver) -> None:
    checker = DnsDeliverabilityChecker(timeout=0.3, resolver=dead_resolver)
    frame = _frame(email=["a@example.com", "b@example.org", "c@example.net"])
    started = time.monotonic()
    with IdentifierStage(DELIVERABLE, P, workers=1, deliverability=checker) as stage:
        out = stage.process(frame, CRM)
    # three domains looked up concurrently, each within its own 0.3 s deadline
    assert time.monotonic() - started < 2.0
    assert out["email_pseudonym"].notna().all()


def test_blocklist_is_pseudonymised_like_the_stage_would() -> None:
    block = {
        IdentifierKind.EMAIL: ["Info@Shop.Example.com ", "n/a"],
        IdentifierKind.PHONE: ["+45 20 12 34 56"],
        IdentifierKind.CUSTOMER_ID: ["crm:C1"],
    }
    out = pseudonymise_values(block, CONFIG, P, what="identity.block")
    assert out[IdentifierKind.EMAIL] == {P.digest(IdentifierKind.EMAIL, "info@shop.example.com")}
    assert out[IdentifierKind.PHONE] == {P.digest(IdentifierKind.PHONE, "+4520123456")}
    assert out[IdentifierKind.CUSTOMER_ID] == {P.digest(IdentifierKind.CUSTOMER_ID, "crm:C1")}


def test_unreadable_blocklist_entries_are_config_errors() -> None:
    block = {
        IdentifierKind.PHONE: ["20 12 34 56"],
        IdentifierKind.CUSTOMER_ID: ["C1"],
        IdentifierKind.EMAIL: ["nope@"],
    }
    with pytest.raises(ConfigError) as caught:
        pseudonymise_values(block, CONFIG, P, what="identity.block")
    assert caught.value.problems == [
        "identity.block.phone[0]: not a usable phone (PHONE_NO_REGION)",
        "identity.block.customer_id[0]: write customer ids as namespace:id",
        "identity.block.email[0]: not a usable email (EMAIL_SYNTAX)",
    ]
    assert caught.value.path == "identity.block"


def test_national_phones_read_with_a_region() -> None:
    out = pseudonymise_values(
        {IdentifierKind.PHONE: ["20 12 34 56"]}, CONFIG, P, what="request", region="DK"
    )
    assert out[IdentifierKind.PHONE] == {P.digest(IdentifierKind.PHONE, "+4520123456")}


def test_stage_returns_normalised_values_only_for_its_own_pseudonyms() -> None:
    frame = _frame(email=["  Jane.Doe@Example.com"], phone=["+45 20 12 34 56"])
    with IdentifierStage(CONFIG, P, workers=1) as stage:
        out = stage.process(frame, CRM)
        email = str(out["email_pseudonym"].iloc[0])
        phone = str(out["phone_pseudonym"].iloc[0])
        assert stage.normalised(IdentifierKind.EMAIL, [email, "f" * 64]) == [
            "jane.doe@example.com",
            None,
        ]
        assert stage.normalised(IdentifierKind.PHONE, [phone]) == ["+4520123456"]
        with pytest.raises(ValueError, match="customer_id"):
            stage.normalised(IdentifierKind.CUSTOMER_ID, [])


def test_take_vault_hands_over_new_entries_and_keeps_none() -> None:
    first = _frame(
        email=["  Jane.Doe@Example.com", "nope@", ""], phone=["+45 20 12 34 56", "", "000000"]
    )
    again = _frame(email=["  Jane.Doe@Example.com", "bo@example.org"], phone=["", "+4520123456"])
    with IdentifierStage(CONFIG, P, workers=1) as stage:
        out = stage.process(first, CRM)
        email = str(out["email_pseudonym"].iloc[0])
        phone = str(out["phone_pseudonym"].iloc[0])
        taken = stage.take_vault()
        # accepted values only, each under its pseudonym
        assert taken == {
            IdentifierKind.EMAIL: {email: "jane.doe@example.com"},
            IdentifierKind.PHONE: {phone: "+4520123456"},
        }
        # taken entries are gone from the stage
        assert stage.normalised(IdentifierKind.EMAIL, [email]) == [None]
        assert stage.normalised(IdentifierKind.PHONE, [phone]) == [None]
        assert stage.take_vault() == {IdentifierKind.EMAIL: {}, IdentifierKind.PHONE: {}}

        out = stage.process(again, CRM)
        bo = str(out["email_pseudonym"].iloc[1])
        assert str(out["email_pseudonym"].iloc[0]) == email
        assert str(out["phone_pseudonym"].iloc[1]) == phone
        assert stage.normalised(IdentifierKind.EMAIL, [bo]) == ["bo@example.org"]
        # a spelling seen before comes from the cache and adds nothing; another spelling of
        # a known value is validated and brings the same entry again
        assert stage.take_vault() == {
            IdentifierKind.EMAIL: {bo: "bo@example.org"},
            IdentifierKind.PHONE: {phone: "+4520123456"},
        }
        assert stage.normalised(IdentifierKind.EMAIL, [bo]) == [None]


def _validator_key(value: str) -> str | None:
    """What `email_key` must give: the validator's normalised address, lower-cased."""
    try:
        return validate_email(value, check_deliverability=False).normalized.lower()
    except Exception:
        return None


_LABELS = st.one_of(
    st.text(alphabet="abcXY09-", max_size=8),
    st.sampled_from(
        [
            *["xn--bcher-kva", "xn--abc", "xn--", "localhost", "test", "invalid", "onion"],
            *["arpa", "com", "123", "a" * 63, "a" * 64, "EXAMPLE", "-a", "a-", "ab--cd"],
        ]
    ),
)


@settings(max_examples=400, deadline=None)
@given(
    local=st.one_of(
        st.text(alphabet="abcXYZ019_+-.", max_size=12),
        st.sampled_from(["a" * 64, "a" * 65, "Postmaster", "a..b", ".a", "a.", "a+b-c_d"]),
        st.text(max_size=5),
    ),
    labels=st.lists(_LABELS, min_size=1, max_size=6),
    trailing_dot=st.booleans(),
    padding=st.integers(0, 4),  # long domains, for the address length limit
)
def test_email_key_is_the_validators_normalised_address(
    local: str, labels: list[str], trailing_dot: bool, padding: int
) -> None:
    domain = ".".join(labels + ["b" * 60] * padding + (["com"] if padding else []))
    address = f"{local}@{domain}{'.' if trailing_dot else ''}"
    assert email_key(address) == _validator_key(address)


def _long(length: int, domain: str) -> str:
    """An address of `length` characters at `domain`."""
    return "a" * (length - 1 - len(domain)) + "@" + domain


_LONG_DOMAIN = ".".join(["b" * 60] * 3 + ["com"])


@pytest.mark.parametrize(
    "address",
    [
        "Jane.Doe@Example.COM",
        "user@xn--bcher-kva.example",  # IDNA: normalised to the Unicode domain
        _long(254, _LONG_DOMAIN),  # the limit
        _long(255, _LONG_DOMAIN),
        _long(254, "xn--bcher-kva." + _LONG_DOMAIN[20:]),
        _long(255, "xn--bcher-kva." + _LONG_DOMAIN[20:]),
        "x@localhost",
        "x@example",
        "x@a.123",
        "x@-a.com",
        "a..b@example.com",
        "Søren@example.com",  # not a plain ASCII local part: the validator decides alone
    ],
    ids=lambda a: f"{a[:20]}-{len(a)}",
)
def test_email_key_edge_cases(address: str) -> None:
    assert email_key(address) == _validator_key(address)
