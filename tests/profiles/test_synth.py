"""Tests for the synthetic data generator: formats, determinism, safety, its ground truth,
and how the data change from night to night."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email

from profiles import synth
from profiles.config import PlaceholderConfig, RunConfig, SourceConfig, load_run_config
from profiles.countries import normalise_country
from profiles.types import CanonicalField, SourceKind

PEOPLE = 300
AS_OF = date(2026, 11, 1)
RESERVED_DOMAIN = re.compile(r"(^|\.)example\.(com|net|org)$")
PLACEHOLDER_LITERALS = {"none@none.com", "test@test.com", "n/a", "-1", "unknown", "000000"}


@dataclass(frozen=True)
class Row:
    """One physical data line of a source file, as a reader that follows the config sees it."""

    line: int
    values: dict[CanonicalField, str] | None
    """Mapped values, or None when the line does not decode or has a wrong field count."""
    raw: dict[str, str] | None


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> synth.SynthResult:
    return synth.generate(PEOPLE, tmp_path_factory.mktemp("synth") / "demo", seed=11, as_of=AS_OF)


@pytest.fixture(scope="module")
def config(made: synth.SynthResult) -> RunConfig:
    return load_run_config(made.config_path)


@pytest.fixture(scope="module")
def rows(config: RunConfig) -> dict[str, list[Row]]:
    return {source.name: _read(source) for source in config.sources}


@pytest.fixture(scope="module")
def truth(made: synth.SynthResult) -> dict[str, list[dict[str, str]]]:
    return _load_truth(made.out_dir)


def _load_truth(out_dir: Path) -> dict[str, list[dict[str, str]]]:
    by_source: dict[str, list[dict[str, str]]] = defaultdict(list)
    with (out_dir / "data" / "truth.csv").open(encoding="utf-8", newline="") as fh:
        for record in csv.DictReader(fh):
            by_source[record["source"]].append(record)
    return dict(by_source)


def _read(source: SourceConfig) -> list[Row]:
    """Split a file into physical lines and decode and parse each on its own."""
    data = source.path.read_bytes()
    encoding = source.encoding
    if encoding == "utf-8-sig":
        assert data.startswith(b"\xef\xbb\xbf")
        data, encoding = data[3:], "utf-8"
    eol = b"\r\n" if b"\r\n" in data else b"\n"
    lines = data.split(eol)
    assert lines[-1] == b""
    header = next(csv.reader([lines[0].decode(encoding)], delimiter=source.delimiter))
    out = []
    for number, raw in enumerate(lines[1:-1], start=2):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            out.append(Row(number, None, None))
            continue
        fields = next(csv.reader([text], delimiter=source.delimiter))
        if len(fields) != len(header):
            out.append(Row(number, None, None))
            continue
        record = dict(zip(header, fields, strict=True))
        mapped = {canonical: record[column] for canonical, column in source.columns.items()}
        out.append(Row(number, mapped, record))
    return out


PLACEHOLDERS = PlaceholderConfig()


def _email_reason(value: str) -> str | None:
    """The identifier rules for e-mail, written from the spec, not from the generator."""
    if value.casefold() in PLACEHOLDERS.values:
        return "EMAIL_PLACEHOLDER"
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return "EMAIL_SYNTAX"
    normalised = checked.normalized.lower()
    local, _, domain = normalised.rpartition("@")
    if (
        normalised in PLACEHOLDERS.emails
        or local in PLACEHOLDERS.email_local_parts
        or domain in PLACEHOLDERS.email_domains
    ):
        return "EMAIL_PLACEHOLDER"
    return None


def _phone_reason(value: str, region: str | None) -> str | None:
    digits = [ch for ch in value if ch.isdigit()]
    if value.casefold() in PLACEHOLDERS.values or (len(digits) >= 6 and len(set(digits)) < 3):
        return "PHONE_PLACEHOLDER"
    if value.startswith("00"):
        value = "+" + value[2:]
    if value.startswith("+"):
        text, parse_region = value, None
    elif region is None:
        return "PHONE_NO_REGION"
    else:
        text, parse_region = value, region
    try:
        number = phonenumbers.parse(text, parse_region)
    except phonenumbers.NumberParseException:
        return "PHONE_INVALID"
    if len(set(phonenumbers.national_significant_number(number))) < 3:
        return "PHONE_PLACEHOLDER"
    if not phonenumbers.is_valid_number(number):
        return "PHONE_INVALID"
    return None


def _customer_id_reason(value: str) -> str | None:
    folded = value.casefold()
    if folded in PLACEHOLDERS.values or folded in PLACEHOLDERS.customer_ids:
        return "CUSTOMER_ID_PLACEHOLDER"
    if re.fullmatch(r"0+", value):
        return "CUSTOMER_ID_PLACEHOLDER"
    return None


def _expected(source: SourceConfig, row: Row) -> tuple[str, str]:
    """(expected_reason, expected_field_reasons) for one row by the identifier rules."""
    if row.values is None:
        return "ROW_UNPARSEABLE", ""
    values = {k: v.strip() for k, v in row.values.items()}
    reasons = []
    region = source.default_region
    country = values.get(CanonicalField.COUNTRY, "")
    if country:
        code = normalise_country(country)
        if code is None:
            reasons.append("country=COUNTRY_UNKNOWN")
        else:
            region = code
    checks = {
        CanonicalField.EMAIL: _email_reason,
        CanonicalField.PHONE: lambda v: _phone_reason(v, region),
        CanonicalField.CUSTOMER_ID: _customer_id_reason,
    }
    usable = False
    for name, check in checks.items():
        value = values.get(name, "")
        if not value:
            continue
        reason = check(value)
        if reason is None:
            usable = True
        else:
            reasons.append(f"{name}={reason}")
    return ("" if usable else "ROW_NO_IDENTIFIER"), ";".join(sorted(reasons))


def _values(rows: dict[str, list[Row]], name: str, field: CanonicalField) -> list[str]:
    return [r.values[field] for r in rows[name] if r.values is not None and field in r.values]


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_config_loads_and_describes_every_file(made: synth.SynthResult, config: RunConfig) -> None:
    names = [s.name for s in config.sources]
    assert names == ["crm", "shop_orders", "newsletter", "preference_centre", "consents"]
    assert {s.kind for s in config.sources} == set(SourceKind)
    assert config.schedule.cron == "0 2 * * *"
    assert config.schedule.timezone == "Europe/Copenhagen"
    assert config.output_dir == (made.out_dir / "out").resolve()
    assert config.state_dir == (made.out_dir / "state").resolve()
    assert config.source("crm").default_region is None
    assert config.source("preference_centre").default_region == "DK"
    assert config.source("crm").namespace == config.source("consents").namespace == "crm"
    assert config.source("shop_orders").namespace == "shop"
    assert config.source("preference_centre").namespace == "prefs"
    headers = {tuple(s.columns.values()) for s in config.sources}
    assert len(headers) == len(config.sources)
    for source in config.sources:
        assert source.path.is_file()
        assert source.path.parent == (made.out_dir / "data").resolve()
    text = made.config_path.read_text(encoding="utf-8")
    assert text.startswith("# ")


def test_result_counts_data_rows(
    made: synth.SynthResult, rows: dict[str, list[Row]], truth: dict[str, list[dict[str, str]]]
) -> None:
    assert made.people == PEOPLE
    assert made.rows == {name: len(lines) for name, lines in rows.items()}
    assert made.rows == {name: len(records) for name, records in truth.items()}


def test_same_arguments_give_identical_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    first = synth.generate(200, tmp_path / "a", seed=3)
    second = synth.generate(200, tmp_path / "b", seed=3)
    other = synth.generate(200, tmp_path / "c", seed=4)
    assert _digest(first.out_dir) == _digest(second.out_dir)
    assert first.rows == second.rows
    differing = _digest(first.out_dir).items() ^ _digest(other.out_dir).items()
    assert {name for name, _ in differing} >= {f"data/{n}" for n in ("orders.csv", "truth.csv")}


def test_generate_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    synth.generate(20, tmp_path / "tiny")
    assert capsys.readouterr() == ("", "")


def test_rejects_an_empty_population(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        synth.generate(0, tmp_path)


def test_crm_is_utf8_with_bom_and_crlf(config: RunConfig) -> None:
    data = config.source("crm").path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfRecord ID,")
    assert data.count(b"\r\n") == data.count(b"\n") > 1
    assert config.source("crm").encoding == "utf-8-sig"


def test_newsletter_is_latin1_with_semicolons(config: RunConfig) -> None:
    source = config.source("newsletter")
    data = source.path.read_bytes()
    assert source.encoding == "latin-1"
    assert source.delimiter == ";"
    assert b"\r\n" not in data
    assert data.split(b"\n", 1)[0] == b"E-mail address;First name;Signed up;Country"
    text = data.decode("latin-1")
    assert re.search(r"[æøåäöüéÆØÅÖÜ]", text)  # Latin-1 letters survive as one byte each
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")


def test_other_files_are_utf8_with_lf(config: RunConfig) -> None:
    for name in ("shop_orders", "preference_centre", "consents"):
        data = config.source(name).path.read_bytes()
        assert not data.startswith(b"\xef\xbb\xbf")
        assert b"\r\n" not in data
        assert config.source(name).encoding == "utf-8"


def test_truth_covers_every_data_row_once_with_its_line(
    rows: dict[str, list[Row]], truth: dict[str, list[dict[str, str]]]
) -> None:
    assert set(truth) == set(rows)
    for name, lines in rows.items():
        assert [int(r["line"]) for r in truth[name]] == [row.line for row in lines]
        assert [row.line for row in lines] == list(range(2, len(lines) + 2))
        for record in truth[name]:
            assert re.fullmatch(r"P\d{6}", record["person_id"])


def test_truth_matches_the_identifier_rules_row_by_row(
    config: RunConfig, rows: dict[str, list[Row]], truth: dict[str, list[dict[str, str]]]
) -> None:
    mismatches = []
    for source in config.sources:
        for row, record in zip(rows[source.name], truth[source.name], strict=True):
            expected = _expected(source, row)
            got = (record["expected_reason"], record["expected_field_reasons"])
            if expected != got:
                mismatches.append((source.name, row.line, expected, got, row.raw))
    assert mismatches == []


FIELD_CODES = {
    "email": {"EMAIL_SYNTAX", "EMAIL_PLACEHOLDER"},
    "phone": {"PHONE_INVALID", "PHONE_PLACEHOLDER", "PHONE_NO_REGION"},
    "customer_id": {"CUSTOMER_ID_PLACEHOLDER"},
    "country": {"COUNTRY_UNKNOWN"},
}


def test_truth_uses_known_codes_in_sorted_pairs(truth: dict[str, list[dict[str, str]]]) -> None:
    for records in truth.values():
        for record in records:
            assert record["expected_reason"] in {"", "ROW_NO_IDENTIFIER", "ROW_UNPARSEABLE"}
            text = record["expected_field_reasons"]
            pairs = text.split(";") if text else []
            assert pairs == sorted(pairs)
            if record["expected_reason"] == "ROW_UNPARSEABLE":
                assert pairs == []
            for pair in pairs:
                name, _, code = pair.partition("=")
                assert code in FIELD_CODES[name], pair


def _good_phones(
    config: RunConfig, rows: dict[str, list[Row]], truth: dict[str, list[dict[str, str]]]
) -> list[tuple[str, int, phonenumbers.PhoneNumber]]:
    """Every phone the truth calls good, parsed the way the identifier rules parse it."""
    found = []
    for source in config.sources:
        for row, record in zip(rows[source.name], truth[source.name], strict=True):
            if row.values is None or "phone=" in record["expected_field_reasons"]:
                continue
            phone = row.values.get(CanonicalField.PHONE, "").strip()
            if not phone:
                continue
            country = row.values.get(CanonicalField.COUNTRY, "").strip()
            region = normalise_country(country) if country else source.default_region
            if phone.startswith("00"):
                phone = "+" + phone[2:]
            number = phonenumbers.parse(phone, None if phone.startswith("+") else region)
            found.append((source.name, row.line, number))
    return found


def test_good_identifiers_really_are_good(
    config: RunConfig, rows: dict[str, list[Row]], truth: dict[str, list[dict[str, str]]]
) -> None:
    for source in config.sources:
        for row, record in zip(rows[source.name], truth[source.name], strict=True):
            if row.values is None or "email=" in record["expected_field_reasons"]:
                continue
            email = row.values.get(CanonicalField.EMAIL, "").strip()
            if email:
                checked = validate_email(email, check_deliverability=False)
                assert RESERVED_DOMAIN.search(checked.domain.lower()), email
                assert checked.local_part.lower() not in PLACEHOLDERS.email_local_parts
    phones = _good_phones(config, rows, truth)
    assert len(phones) > 100
    for name, line, number in phones:
        assert phonenumbers.is_valid_number(number), (name, line)
        assert len(set(phonenumbers.national_significant_number(number))) >= 3


def test_every_address_is_reserved_or_a_placeholder(rows: dict[str, list[Row]]) -> None:
    seen = 0
    for name in rows:
        for value in _values(rows, name, CanonicalField.EMAIL):
            try:
                checked = validate_email(value.strip(), check_deliverability=False)
            except EmailNotValidError:
                continue  # not an address anyone could receive mail at
            address = checked.normalized.lower()
            assert RESERVED_DOMAIN.search(checked.domain) or address in PLACEHOLDERS.emails, value
            seen += 1
    assert seen > 1000


def _e164(phone: str, region: str | None) -> str | None:
    try:
        number = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _in_reserved_range(e164: str) -> bool:
    for country in synth._COUNTRIES:
        for block in country.reserved:
            national = f"+{country.calling_code}{block.prefix}"
            if not e164.startswith(national):
                continue
            rest = e164[len(national) :]
            if len(rest) == block.width and (
                block.width == 0 or block.first <= int(rest) < block.first + block.count
            ):
                return True
    return False


def test_phones_of_countries_with_a_drama_range_come_from_it(
    config: RunConfig, rows: dict[str, list[Row]], truth: dict[str, list[dict[str, str]]]
) -> None:
    with_range = {c.code for c in synth._COUNTRIES if c.reserved}
    regions: Counter[str] = Counter()
    for _, _, number in _good_phones(config, rows, truth):
        region = str(phonenumbers.region_code_for_number(number))
        regions[region] += 1
        if region in with_range:
            e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            assert _in_reserved_range(e164), e164
    assert len(regions) >= 10
    assert with_range <= set(regions)


@pytest.mark.parametrize(
    "country", [c for c in synth._COUNTRIES if c.reserved], ids=lambda c: c.code
)
def test_reserved_ranges_are_valid_numbers_of_their_country(country: synth._Country) -> None:
    for block in country.reserved:
        ends = {block.first, block.first + block.count - 1, block.first + block.count // 2}
        for offset in ends:
            digits = block.prefix + (f"{offset:0{block.width}d}" if block.width else "")
            number = phonenumbers.parse(f"+{country.calling_code}{digits}")
            assert phonenumbers.is_valid_number(number), digits
            assert phonenumbers.region_code_for_number(number) == country.code


@pytest.mark.parametrize("country", synth._COUNTRIES, ids=lambda c: c.code)
def test_generated_numbers_are_valid_and_parse_back_in_every_format(
    country: synth._Country,
) -> None:
    rng = np.random.default_rng(5)
    if country.reserved:
        numbers = synth._reserved_numbers(rng, country, 60)
    else:
        numbers = synth._random_numbers(rng, country, 300)
    assert len(set(numbers)) == len(numbers)
    for nsn in numbers:
        phone = synth._phone(country.calling_code, nsn)
        for text, region in (
            (phone.e164, None),
            (phone.international, None),
            (phone.national, country.code),
            (phone.national_digits, country.code),
            ("+" + phone.idd[2:], None),
        ):
            assert _e164(text, region) == phone.e164, (text, region)
        assert _phone_reason(phone.national, country.code) is None
        assert len(set(nsn)) >= 3
        assert phone.e164 == f"+{country.calling_code}{nsn}"  # how `taken` numbers are compared


@pytest.mark.parametrize("region", [*synth._CODES, None])
def test_bad_phone_kinds_mean_the_same_in_every_region(region: str | None) -> None:
    for country in synth._COUNTRIES:
        cc = country.calling_code
        cases: list[tuple[str, int]] = [
            ("000000", synth._P_ZEROS),
            ("n/a", synth._P_TOKEN),
            ("-1", synth._P_TOKEN),
            (f"+{cc} 00 00 00 00", synth._P_ZEROS_CC),
            *((word, synth._P_WORDS) for word in synth._PHONE_WORDS),
            *(
                (f"+{cc} {a}{b}{c}", synth._P_SHORT)
                for a, b, c in ((1, 2, 3), (9, 8, 7), (4, 7, 2))
            ),
        ]
        for value, kind in cases:
            expected = synth._phone_reason(kind, region)
            assert _phone_reason(value, region) == (expected and expected.value), (value, region)


def test_broken_and_placeholder_addresses_are_what_truth_says() -> None:
    for variant in range(7):
        assert _email_reason(synth._broken_email("jane.doe@mail.example.com", variant)) == (
            "EMAIL_SYNTAX"
        )
        assert _email_reason(synth._broken_email("jd@example.org", variant)) == "EMAIL_SYNTAX"
        assert _email_reason(synth._noisy("jane.doe@example.com", variant).strip()) is None
    for literal in synth._EMAIL_PLACEHOLDERS:
        assert _email_reason(literal) == "EMAIL_PLACEHOLDER"


def test_country_variants_and_unknowns() -> None:
    for code, variants in zip(synth._CODES, synth._VARIANTS, strict=True):
        assert {normalise_country(v) for v in variants} == {code}
        assert len(set(variants)) >= 3
    assert all(normalise_country(v) is None for v in synth._UNKNOWN_COUNTRIES)


def test_every_kind_of_mess_is_present_in_a_small_set(
    config: RunConfig, rows: dict[str, list[Row]], truth: dict[str, list[dict[str, str]]]
) -> None:
    reasons: Counter[tuple[str, str]] = Counter()  # (source, code)
    for name, records in truth.items():
        for record in records:
            if record["expected_reason"]:
                reasons[(name, record["expected_reason"])] += 1
            for pair in filter(None, record["expected_field_reasons"].split(";")):
                reasons[(name, pair.partition("=")[2])] += 1
    by_code: Counter[str] = Counter()
    for (_, code), count in reasons.items():
        by_code[code] += count
    for code in (
        "EMAIL_SYNTAX", "EMAIL_PLACEHOLDER", "PHONE_INVALID", "PHONE_PLACEHOLDER",
        "PHONE_NO_REGION", "CUSTOMER_ID_PLACEHOLDER", "COUNTRY_UNKNOWN",
        "ROW_NO_IDENTIFIER", "ROW_UNPARSEABLE",
    ):  # fmt: skip
        assert by_code[code] >= 2, code
    unparseable = {name for (name, code) in reasons if code == "ROW_UNPARSEABLE"}
    assert {"crm", "shop_orders", "preference_centre"} <= unparseable
    assert reasons[("preference_centre", "ROW_UNPARSEABLE")] >= 1  # invalid UTF-8
    pref_bytes = config.source("preference_centre").path.read_bytes()
    with pytest.raises(UnicodeDecodeError):
        pref_bytes.decode("utf-8")

    everything = "\n".join(
        "\n".join(record.values()) for lines in rows.values() for record in
        (r.raw for r in lines if r.raw is not None)
    )  # fmt: skip
    for literal in ("none@none.com", "test@test.com", "n/a", "000000", "-1"):
        assert re.search(rf"(^|\n){re.escape(literal)}(\n|$)", everything, re.I), literal
    assert re.search(r"(?m)^ +\S+@\S+ *$", everything)  # leading whitespace
    assert re.search(r"(?m)^[^@\n]*[A-Z][^@\n]*@[^@\n]*[A-Z]", everything)  # mixed case
    for script, pattern in {
        "greek": r"[\u0370-\u03ff]", "georgian": r"[\u10a0-\u10ff]", "danish": r"[æøå]",
        "german": r"[äöüß]", "polish": r"[łśźżąę]", "swedish": r"[åäö]", "french": r"[éèêç]",
    }.items():  # fmt: skip
        assert re.search(pattern, everything), script
    for start in "=+-@":
        assert re.search(rf"(?m)^\{start}[A-Za-z]", everything), start

    crm = [r.values for r in rows["crm"] if r.values is not None]
    assert sum(1 for v in crm if not v[CanonicalField.EMAIL]) >= 2
    assert sum(1 for v in crm if not v[CanonicalField.PHONE]) >= 2
    assert sum(1 for v in crm if not v[CanonicalField.COUNTRY]) >= 2
    countries = _values(rows, "crm", CanonicalField.COUNTRY)
    assert any(v.isupper() and len(v) == 2 for v in countries)
    assert any(v.islower() and len(v) == 2 for v in countries)
    assert any(v in ("Denmark", "Germany", "Sweden", "Norway", "United Kingdom") for v in countries)
    assert any(v in ("Danmark", "Deutschland", "Sverige", "Norge", "Polska") for v in countries)
    phones = _values(rows, "crm", CanonicalField.PHONE) + _values(
        rows, "preference_centre", CanonicalField.PHONE
    )
    assert any(re.fullmatch(r"\+\d{1,3} [\d -]+", p) for p in phones)
    assert any(re.fullmatch(r"00\d{1,3} [\d -]+", p) for p in phones)
    assert any(re.fullmatch(r"\+\d{8,15}", p) for p in phones)
    assert any(re.fullmatch(r"\(\d{3}\) \d{3}-\d{4}", p) for p in phones)
    assert any(re.fullmatch(r"\d\d \d\d \d\d \d\d", p) for p in phones)


def _people_by_source(
    rows: dict[str, list[Row]], truth: dict[str, list[dict[str, str]]]
) -> dict[str, dict[str, set[str]]]:
    """person_id -> source -> the normalised addresses seen there (good ones only)."""
    seen: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for name, lines in rows.items():
        for row, record in zip(lines, truth[name], strict=True):
            seen[record["person_id"]].setdefault(name, set())  # presence counts, address or not
            if row.values is None or "email=" in record["expected_field_reasons"]:
                continue
            email = row.values.get(CanonicalField.EMAIL, "").strip().lower()
            if email:
                seen[record["person_id"]][name].add(email)
    return seen


def test_people_appear_in_one_to_four_sources_under_other_addresses(
    rows: dict[str, list[Row]], truth: dict[str, list[dict[str, str]]]
) -> None:
    seen = _people_by_source(rows, truth)
    customer_sources = {"crm", "shop_orders", "newsletter", "preference_centre"}
    spread = Counter(len(customer_sources & set(sources)) for sources in seen.values())
    assert spread[0] == 0
    assert {1, 2, 3} <= set(spread)
    assert max(spread) <= 4
    assert len(seen) == PEOPLE
    assert any(
        sources["crm"] and sources["shop_orders"] and not sources["crm"] & sources["shop_orders"]
        for sources in seen.values()
    )
    owners: dict[str, set[str]] = defaultdict(set)
    for person, sources in seen.items():
        for addresses in sources.values():
            for address in addresses:
                owners[address].add(person)
    assert sum(1 for people in owners.values() if len(people) > 1) >= 2  # households


def test_orders_look_like_real_purchase_behaviour(
    rows: dict[str, list[Row]], truth: dict[str, list[dict[str, str]]]
) -> None:
    lines = [r.raw for r in rows["shop_orders"] if r.raw is not None]
    stamps = [datetime.fromisoformat(r["ordered_at"]) for r in lines]
    assert all(s.utcoffset() is not None for s in stamps)
    assert min(stamps).date() >= date(AS_OF.year - 3, AS_OF.month, AS_OF.day)
    assert max(stamps).date() < AS_OF
    assert (max(stamps) - min(stamps)).days > 2 * 365
    amounts = [float(r["line_amount"]) for r in lines]
    returns = sum(1 for a in amounts if a < 0) / len(amounts)
    assert 0.01 <= returns <= 0.05
    assert all(r["product_category"] in synth._CATEGORIES for r in lines)
    assert {r["currency"] for r in lines} >= {"DKK", "EUR", "GBP", "SEK"}
    assert any(not r["customer_ref"] for r in lines)  # guest checkouts
    assert all(re.fullmatch(r"C\d{7}|[-\w/]*", r["customer_ref"]) for r in lines)
    per_person = Counter(
        rec["person_id"]
        for rec, row in zip(truth["shop_orders"], rows["shop_orders"], strict=True)
        if row.raw is not None
    )
    counts = sorted(per_person.values())
    assert counts[0] <= 3  # heterogeneous buying rates: some buy once or twice ...
    assert counts[-1] >= 20  # ... and some dozens of times


def test_consents_cover_purposes_minors_and_gaps(
    config: RunConfig, rows: dict[str, list[Row]], truth: dict[str, list[dict[str, str]]]
) -> None:
    records = [
        (rec["person_id"], row.raw)
        for rec, row in zip(truth["consents"], rows["consents"], strict=True)
        if row.raw is not None
    ]
    assert {r["purpose"] for _, r in records} == set(synth._PURPOSES)
    assert {r["status"] for _, r in records} == {"granted", "withdrawn"}
    assert {r["source"] for _, r in records} <= {
        "crm", "newsletter_signup", "preference_centre", "checkout"
    }  # fmt: skip
    ages = {AS_OF.year - int(r["birth_year"]) for _, r in records if r["birth_year"]}
    assert ages & set(range(13, 18))
    purposes: dict[str, set[str]] = defaultdict(set)
    for person, record in records:
        purposes[person].add(record["purpose"])
    assert any(len(p) < len(synth._PURPOSES) for p in purposes.values())
    crm_file = config.source("crm").path.read_text(encoding="utf-8-sig")
    crm_ids = set(re.findall(r"(?m)^(\d+),", crm_file))
    linked = [r["crm_contact_id"] for _, r in records if r["crm_contact_id"].isdigit()]
    assert linked
    assert {i for i in linked if i.strip("0")} <= crm_ids


# Night 1 of `generate(200, seed=3)` as written before nights existed: later nights must not
# change what the first night writes.
NIGHT_ONE_200_SEED_3 = {
    "data/consents.csv": "518d650062cc4f1a4c0cf583c0af52649580b491263e6508ef67916054ab048f",
    "data/crm_contacts.csv": "a9915eb98c7bbfc836f69ce79e58c50900aa5a95a4f50d9c3bb8faef4c4c94a1",
    "data/newsletter.csv": "d95de1f478636ae13c562574fe295523fab4a1ff98c05b40f54a977cc51ee495",
    "data/orders.csv": "550590297c8e2d9ba7d9187df5ad51d32b918372a9f240d3dc08318de110c91a",
    "data/preferences.csv": "c837bf6f90bc0c6adfd80bcd5d72b7418cc0bb802d81774e1737bf6eb33c725f",
    "data/truth.csv": "1322d2bd5c5e02942e509e402a89b91c34f79a5cc0ae3db7ce0c917ad7129f1a",
    # added with the world file; every file above kept its bytes
    "data/world.jsonl": "26a4823aa505ceb213f3861e7f4f7092f70e80540c24e11fd1f713a2b2bf44bb",
    "enrich.yaml": "07f4e1e66c498747d7986e070ad204de40e9cf8a85c9657b4de8fd9e04813493",
}
NIGHT_PEOPLE = 2000
EDITS = {"email_changed": "Email", "phone_added": "Phone Number"}
"""Changes that edit a cell in place, and the column they edit."""
SOURCES_OF_CHANGE = {
    "added": {"crm", "shop_orders", "newsletter", "preference_centre", "consents"},
    "email_changed": {"crm"},
    "phone_added": {"crm"},
    "new_orders": {"shop_orders"},
    "newsletter_signup": {"newsletter"},
    "consent_changed": {"consents"},
}


@dataclass(frozen=True)
class Night:
    """One night's output, read back."""

    made: synth.SynthResult
    config: RunConfig
    rows: dict[str, list[Row]]
    truth: dict[str, list[dict[str, str]]]
    changes: list[dict[str, str]]

    def tonight(self, night: int) -> list[dict[str, str]]:
        return [c for c in self.changes if c["night"] == str(night)]


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Night]:
    root = tmp_path_factory.mktemp("nights")
    out = {}
    for k in (1, 2, 3):
        made = synth.generate(NIGHT_PEOPLE, root / f"night{k}", seed=11, as_of=AS_OF, night=k)
        config = load_run_config(made.config_path)
        path = made.out_dir / "data" / "changes.csv"
        assert path.exists() == (k > 1)
        changes = []
        if k > 1:
            with path.open(encoding="utf-8", newline="") as fh:
                changes = list(csv.DictReader(fh))
        rows = {source.name: _read(source) for source in config.sources}
        out[k] = Night(made, config, rows, _load_truth(made.out_dir), changes)
    return out


def _physical_lines(path: Path) -> list[bytes]:
    """The file's lines as bytes, header (with any BOM) first."""
    data = path.read_bytes()
    lines = data.split(b"\r\n" if b"\r\n" in data else b"\n")
    assert lines[-1] == b""
    return lines[:-1]


def _export(as_of: date) -> datetime:
    """When the export for `as_of` was taken: noon UTC of the day before."""
    return datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC) - timedelta(hours=12)


def _persons(night: Night) -> set[str]:
    return {r["person_id"] for records in night.truth.values() for r in records}


def _identifier_owners(night: Night) -> dict[tuple[str, str], set[str]]:
    """(kind or id namespace, normalised value) -> persons, for every identifier the truth
    calls usable."""
    owners: dict[tuple[str, str], set[str]] = defaultdict(set)
    for source in night.config.sources:
        for row, record in zip(night.rows[source.name], night.truth[source.name], strict=True):
            if row.values is None:
                continue
            reasons, person = record["expected_field_reasons"], record["person_id"]
            email = row.values.get(CanonicalField.EMAIL, "").strip().lower()
            if email and "email=" not in reasons:
                owners["email", email].add(person)
            ref = row.values.get(CanonicalField.CUSTOMER_ID, "").strip()
            if ref and "customer_id=" not in reasons:
                owners[source.namespace, ref].add(person)
    for name, line, number in _good_phones(night.config, night.rows, night.truth):
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        owners["phone", e164].add(night.truth[name][line - 2]["person_id"])
    return owners


def test_night_one_is_what_the_generator_always_wrote(tmp_path: Path) -> None:
    assert _digest(synth.generate(200, tmp_path / "a", seed=3).out_dir) == NIGHT_ONE_200_SEED_3
    assert _digest(synth.generate(200, tmp_path / "b", seed=3, night=1).out_dir) == (
        NIGHT_ONE_200_SEED_3
    )


def test_a_night_depends_only_on_its_arguments(tmp_path: Path) -> None:
    fresh = synth.generate(300, tmp_path / "fresh", seed=5, night=3)
    again = tmp_path / "again"
    synth.generate(300, again, seed=5)
    synth.generate(300, again, seed=5, night=3)  # over night 1's files
    assert _digest(again) == _digest(fresh.out_dir)
    night2 = synth.generate(300, tmp_path / "night2", seed=5, night=2)
    differing = _digest(fresh.out_dir).items() ^ _digest(night2.out_dir).items()
    assert {name for name, _ in differing} >= {"data/changes.csv", "data/truth.csv"}
    # the first night written over a later one leaves no stale list of changes behind
    synth.generate(300, again, seed=5)
    assert not (again / "data" / "changes.csv").exists()
    assert _digest(again) == _digest(synth.generate(300, tmp_path / "one", seed=5).out_dir)


@pytest.mark.parametrize("people", [1, 2, 7, 40])
def test_tiny_populations_last_many_nights(tmp_path: Path, people: int) -> None:
    made = synth.generate(people, tmp_path, seed=1, night=6)
    assert made.people == people + 5
    truth = _load_truth(tmp_path)
    assert {n: len(r) for n, r in truth.items()} == {n: r for n, r in made.rows.items() if r}


def test_rejects_a_night_before_the_first(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="night must be at least 1"):
        synth.generate(10, tmp_path, night=0)


def test_the_run_config_is_the_same_every_night(nights: dict[int, Night]) -> None:
    configs = {n.made.config_path.read_bytes() for n in nights.values()}
    assert len(configs) == 1
    assert [n.made.people for n in nights.values()] == [2000, 2020, 2040]


@pytest.mark.parametrize("night", [2, 3])
def test_a_night_keeps_earlier_lines_edits_cells_in_place_and_appends_rows(
    nights: dict[int, Night], night: int
) -> None:
    before, after = nights[night - 1], nights[night]
    tonight = after.tonight(night)
    edited = {(c["source"], int(c["line"])): c["change"] for c in tonight if c["change"] in EDITS}
    appended = [(c["source"], int(c["line"])) for c in tonight if c["change"] not in EDITS]
    assert len(set(appended)) == len(appended)  # one change per new row
    assert edited
    for source in after.config.sources:
        old = _physical_lines(before.config.source(source.name).path)
        new = _physical_lines(source.path)
        assert new[0] == old[0]
        header = next(csv.reader([new[0].decode("utf-8-sig")], delimiter=source.delimiter))
        for number, (was, now) in enumerate(zip(old[1:], new[1:], strict=False), start=2):
            change = edited.get((source.name, number))
            if change is None:
                assert now == was, (source.name, number)
                continue
            cells = [
                dict(zip(header, next(csv.reader([line.decode(source.encoding)])), strict=True))
                for line in (was, now)
            ]
            assert {k for k in header if cells[0][k] != cells[1][k]} == {EDITS[change]}
        added_lines = {line for name, line in appended if name == source.name}
        assert added_lines == set(range(len(old) + 1, len(new) + 1)), source.name
        # the truth of earlier rows stays, but for the cells edited tonight
        old_truth, new_truth = before.truth[source.name], after.truth[source.name]
        for was_true, now_true in zip(old_truth, new_truth, strict=False):
            if (source.name, int(was_true["line"])) in edited:
                assert now_true["person_id"] == was_true["person_id"]
            else:
                assert now_true == was_true


@pytest.mark.parametrize("night", [2, 3])
def test_truth_of_later_nights_matches_the_identifier_rules_row_by_row(
    nights: dict[int, Night], night: int
) -> None:
    data = nights[night]
    assert data.made.rows == {name: len(lines) for name, lines in data.rows.items()}
    mismatches = []
    for source in data.config.sources:
        records = data.truth[source.name]
        assert [int(r["line"]) for r in records] == [row.line for row in data.rows[source.name]]
        for row, record in zip(data.rows[source.name], records, strict=True):
            expected = _expected(source, row)
            got = (record["expected_reason"], record["expected_field_reasons"])
            if expected != got:
                mismatches.append((source.name, row.line, expected, got, row.raw))
    assert mismatches == []


def test_changes_name_every_changed_row_and_its_person(nights: dict[int, Night]) -> None:
    last = nights[3]
    text = (last.made.out_dir / "data" / "changes.csv").read_text(encoding="utf-8")
    assert text.splitlines()[0] == "night,person_id,change,source,line"
    assert last.changes[: len(nights[2].changes)] == nights[2].changes  # a growing log
    for change in last.changes:
        # locators only: nothing in the list that the data files would have to tell
        assert re.fullmatch(r"[23]", change["night"])
        assert re.fullmatch(r"P\d{6}", change["person_id"])
        assert change["source"] in SOURCES_OF_CHANGE[change["change"]], change
        record = last.truth[change["source"]][int(change["line"]) - 2]
        assert (record["line"], record["person_id"]) == (change["line"], change["person_id"])
    for night in (2, 3):
        tonight = last.tonight(night)
        assert {c["change"] for c in tonight} == set(SOURCES_OF_CHANGE)
        before, after = _persons(nights[night - 1]), _persons(nights[night])
        added = {c["person_id"] for c in tonight if c["change"] == "added"}
        assert added == after - before
        assert sorted(int(p[1:]) for p in added) == list(
            range(len(before) + 1, len(before) + len(added) + 1)
        )
        assert {c["person_id"] for c in tonight if c["change"] != "added"} <= before


def test_identifiers_of_newcomers_and_new_addresses_are_nobody_elses(
    nights: dict[int, Night],
) -> None:
    last = nights[3]
    arrived = {c["person_id"]: c["night"] for c in last.changes if c["change"] == "added"}
    owners = _identifier_owners(last)
    kinds: Counter[str] = Counter()
    for (kind, value), persons in owners.items():
        newcomers = {arrived[p] for p in persons if p in arrived}
        if newcomers:
            # only a couple who arrived together shares an identifier (their home address)
            assert all(p in arrived for p in persons), (kind, value, persons)
            assert len(newcomers) == 1, (kind, value, persons)
            kinds[kind] += 1
    assert set(kinds) == {"email", "phone", "crm", "shop", "prefs"}
    signed_up_with_moved_address = 0
    for change in last.changes:
        if change["change"] not in ("email_changed", "newsletter_signup"):
            continue
        row = last.rows[change["source"]][int(change["line"]) - 2]
        record = last.truth[change["source"]][int(change["line"]) - 2]
        if row.values is None or "email=" in record["expected_field_reasons"]:
            continue  # a signup typed badly
        address = row.values[CanonicalField.EMAIL].strip().lower()
        assert owners["email", address] == {change["person_id"]}
        previous = nights[int(change["night"]) - 1]
        assert ("email", address) not in _identifier_owners(previous)
        if change["change"] == "newsletter_signup":
            crm = [r for r in last.rows["crm"] if r.values is not None]
            signed_up_with_moved_address += any(
                r.values is not None and r.values[CanonicalField.EMAIL] == address for r in crm
            )
    assert signed_up_with_moved_address >= 2


def test_edits_are_of_the_kind_that_splits_or_joins_profiles(nights: dict[int, Night]) -> None:
    shared_before = joinable = 0
    for night in (2, 3):
        before, after = nights[night - 1], nights[night]
        owners = _identifier_owners(before)
        for change in after.tonight(night):
            if change["change"] not in EDITS:
                continue
            line = int(change["line"])
            was, now = before.rows["crm"][line - 2].values, after.rows["crm"][line - 2].values
            assert was is not None
            assert now is not None
            if change["change"] == "email_changed":
                old = was[CanonicalField.EMAIL].strip().lower()
                shared_before += len(owners["email", old]) >= 1 and any(
                    r.values is not None
                    and r.values[CanonicalField.EMAIL].strip().lower() == old
                    and t["person_id"] == change["person_id"]
                    for r, t in zip(
                        before.rows["newsletter"], before.truth["newsletter"], strict=True
                    )
                )
            else:
                assert was[CanonicalField.PHONE] == ""
                assert now[CanonicalField.PHONE] != ""
                person = change["person_id"]
                prefs = [
                    r.values
                    for r, t in zip(
                        before.rows["preference_centre"],
                        before.truth["preference_centre"],
                        strict=True,
                    )
                    if t["person_id"] == person and r.values is not None
                ]
                joinable += any(p[CanonicalField.PHONE] for p in prefs) and all(
                    p[CanonicalField.EMAIL].strip().lower()
                    != was[CanonicalField.EMAIL].strip().lower()
                    for p in prefs
                )
    # at this size every address change can pick a newsletter-shared address, and most added
    # phones one the person gave the preference centre under another address
    assert shared_before == sum(
        1 for n in (2, 3) for c in nights[n].tonight(n) if c["change"] == "email_changed"
    )
    assert joinable >= 4


def test_new_rows_happened_after_the_previous_export(nights: dict[int, Night]) -> None:
    stamps = {
        "crm": ("Create Date", False),
        "shop_orders": ("ordered_at", True),
        "newsletter": ("Signed up", False),
        "preference_centre": ("Updated at", True),
        "consents": ("recorded_at", True),
    }
    for night in (2, 3):
        before, after = nights[night - 1], nights[night]
        previous = _export(AS_OF + timedelta(days=night - 2))
        export = _export(AS_OF + timedelta(days=night - 1))
        for name, (column, has_offset) in stamps.items():
            new_rows = after.rows[name][len(before.rows[name]) :]
            assert new_rows, name
            for row in new_rows:
                if row.raw is None:
                    continue
                stamp = datetime.fromisoformat(row.raw[column])
                if not has_offset:
                    stamp = stamp.replace(tzinfo=UTC)
                # the newsletter tool keeps minutes only
                assert previous - timedelta(minutes=1) < stamp < export, (name, row.line)
        known = {r.raw["order_number"] for r in before.rows["shop_orders"] if r.raw is not None}
        last_number = max(int(n) for n in known if n.isdigit())
        returns = 0
        for row in after.rows["shop_orders"][len(before.rows["shop_orders"]) :]:
            if row.raw is None:
                continue
            number = row.raw["order_number"]
            if number.startswith("R"):  # a return of an earlier order, its first
                assert number[1:] in known
                assert number not in known
                assert row.raw["qty"].startswith("-")
                returns += 1
            else:
                assert int(number) > last_number
        assert returns <= 3


def test_newcomers_take_no_address_or_number_anyone_had() -> None:
    rng = np.random.default_rng(3)
    as_of_s = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())
    first = synth._people(rng, 3000, as_of_s, 2026)
    emails = {*first.primary_email, *first.alt_email}
    phones = {p.e164 for p in first.phone if p is not None}
    new = synth._people(
        rng, 1000, as_of_s, 2026, newcomers=True, taken_emails=emails, taken_phones=phones
    )
    assert not emails & {*new.primary_email, *new.alt_email}
    numbers = [p.e164 for p in new.phone if p is not None]
    assert len(numbers) == len(set(numbers)) > 500
    assert not phones & set(numbers)
    assert (new.since > as_of_s - 86_400).all()
    # once a reserved range is used up, newcomers of that country get no number
    sweden = synth._CODES.index("SE")
    every = synth._reserved_numbers(rng, synth._COUNTRIES[sweden], 10_000)
    assert len(every) == 495
    taken = {f"+46{n}" for n in every}
    country = np.full(50, sweden, dtype=np.int64)
    assert synth._assign_phones(rng, country, taken=taken, floors=False) == [None] * 50


def test_added_rows_are_as_messy_as_the_first_nights(tmp_path: Path) -> None:
    made = synth.generate(5000, tmp_path, seed=2, night=5)
    with (tmp_path / "data" / "changes.csv").open(encoding="utf-8", newline="") as fh:
        changes = list(csv.DictReader(fh))
    new = {(c["source"], c["line"]) for c in changes if c["change"] not in EDITS}
    rows: Counter[tuple[str, bool]] = Counter()
    messy: Counter[tuple[str, bool]] = Counter()
    for name, records in _load_truth(made.out_dir).items():
        for record in records:
            key = (name, (name, record["line"]) in new)
            rows[key] += 1
            messy[key] += bool(record["expected_reason"] or record["expected_field_reasons"])
    names = {name for name, _ in rows}
    # as many messy new rows as the first night's rates per source would give, not the
    # minimum counts a small first night gets
    expected = sum(rows[n, True] * messy[n, False] / rows[n, False] for n in names)
    observed = sum(messy[n, True] for n in names)
    assert sum(rows[n, True] for n in names) > 1000
    assert 0.5 * expected <= observed <= 2 * expected, (observed, expected)


# --- world.jsonl: ground truth for enrichment ------------------------------------------------

WORLD_TOPICS = {f"interest.{c}" for c in synth._CATEGORIES} | set(synth._INTEREST_TOPICS)


def _world(out_dir: Path) -> dict[str, dict[str, Any]]:
    lines = (out_dir / "data" / "world.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    world = {r["person_id"]: r for r in records}
    assert len(world) == len(records)
    return world


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_world_lists_every_person_with_hashed_identifiers_only(
    made: synth.SynthResult,
    config: RunConfig,
    rows: dict[str, list[Row]],
    truth: dict[str, list[dict[str, str]]],
) -> None:
    world = _world(made.out_dir)
    assert list(world) == sorted(world)
    assert len(world) == made.people
    assert {r["person_id"] for records in truth.values() for r in records} == set(world)
    owners = _identifier_owners(Night(made, config, rows, truth, []))
    assert sum(kind == "phone" for kind, _ in owners) > 50
    for (kind, value), persons in owners.items():
        if kind in ("email", "phone"):
            for person in persons:
                assert _sha256(value) in world[person][f"{kind}_sha256"], (kind, person)
    text = (made.out_dir / "data" / "world.jsonl").read_text(encoding="utf-8")
    assert "@" not in text
    assert "+" not in text  # no E.164 number either
    for record in world.values():
        assert set(record) == {"person_id", "email_sha256", "phone_sha256", "interests"}
        for digest in (*record["email_sha256"], *record["phone_sha256"]):
            assert re.fullmatch(r"[0-9a-f]{64}", digest)


def test_world_interests_are_plausible_and_respect_declarations(
    made: synth.SynthResult, rows: dict[str, list[Row]], truth: dict[str, list[dict[str, str]]]
) -> None:
    world = _world(made.out_dir)
    counts = Counter(len(r["interests"]) for r in world.values())
    assert 1.5 < sum(k * n for k, n in counts.items()) / len(world) < 5
    held = Counter(t for r in world.values() for t in r["interests"])
    assert set(held) == WORLD_TOPICS
    for record in world.values():
        assert all(0 < s < 1 for s in record["interests"].values())
    # most answers tell the truth (85 %), not all: the preference centre is a noisy view too
    agree, answers = 0, 0
    for row, record in zip(rows["preference_centre"], truth["preference_centre"], strict=True):
        if row.values is None:
            continue
        topic = row.values[CanonicalField.TOPIC]
        key = topic if topic.startswith("interest.") else f"interest.{topic}"
        interests = world[record["person_id"]]["interests"]
        answers += 1
        if row.values[CanonicalField.INTERESTED] == "yes":
            agree += interests.get(key, 0.0) >= 0.7
        else:
            agree += key not in interests
    assert answers > 50
    assert 0.75 < agree / answers < 0.99
    # shoppers buy what they are interested in
    bought: dict[str, Counter[str]] = defaultdict(Counter)
    for row, record in zip(rows["shop_orders"], truth["shop_orders"], strict=True):
        if row.values is not None and not row.values[CanonicalField.QUANTITY].startswith("-"):
            bought[record["person_id"]][row.values[CanonicalField.CATEGORY]] += 1
    top_is_interest = [
        f"interest.{counter.most_common(1)[0][0]}" in world[person]["interests"]
        for person, counter in bought.items()
        if sum(counter.values()) >= 5
    ]
    assert sum(top_is_interest) / len(top_is_interest) > 0.6


def test_world_is_the_same_people_with_the_same_interests_every_night(
    nights: dict[int, Night],
) -> None:
    first, third = _world(nights[1].made.out_dir), _world(nights[3].made.out_dir)
    assert len(third) == nights[3].made.people > len(first)
    for person, record in first.items():
        assert third[person]["interests"] == record["interests"]
        assert set(record["email_sha256"]) <= set(third[person]["email_sha256"])
    moved = {c["person_id"] for c in nights[3].changes if c["change"] == "email_changed"}
    assert moved
    assert all(len(third[p]["email_sha256"]) > len(first[p]["email_sha256"]) for p in moved)
