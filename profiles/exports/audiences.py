"""Hashed ad audiences: platform-exact normalisation and SHA-256, every rule with its source.

This module is the only place that knows how an ad platform wants an email address or a phone
number normalised before hashing; `SPECS` holds the rules, column names and sources per
platform, and the functions below apply them column-wise (pandas string operations; hashing is
one `hashlib` call per distinct value). Plain SHA-256 exists only here (DESIGN.md §4
"Pseudonyms"); hashed identifiers are still personal data.

Input contract. Columns come from the identifier stage (`profiles.identifiers`): emails are
valid per `email-validator`, trimmed, NFC and lower-cased (they may hold Unicode local parts and
IDN domains); phones are E.164 (`+4520123456`). Any value may instead already be a SHA-256 digest.
A value that is neither breaks the contract and raises `AudienceInputError` (counts only, never
the value).

Common rules (every platform)
-----------------------------
* Missing, empty and whitespace-only values stay missing: nothing is ever hashed from an empty
  string, so SHA-256("") = e3b0c442...b855 never appears in an audience.
* Already hashed: a value of exactly 64 hex digits (either case) is a SHA-256 digest. It is passed
  through lower-cased and never re-hashed nor normalised (Meta's SDK does the same:
  facebook/facebook-python-business-sdk `facebook_business/adobjects/serverside/normalize.py`;
  double hashing is the classic integration bug, see RudderStack's Facebook Custom Audience
  docs quoted in conventions.md §3.1).
* 32-hex (MD5) values are NOT treated as hashed. Meta's SDK passes them through, but none of the
  five platforms accepts MD5 for email or phone (TikTok accepts MD5 only for mobile advertiser
  ids; Meta's customer-information parameters require SHA-256). Such a value cannot be a valid
  address or an E.164 number, so it fails the input contract instead of being uploaded.
* Unicode NFC, then trim, then lower-case (`str.lower`). NFC matters: Meta's published vector
  for `Valéry` matches only the composed `é` (conventions.md §3.1, verified).
* IDN domains stay Unicode, lower-cased, UTF-8 encoded before hashing: no platform documents
  punycode (A-labels) for audience emails, and Meta's parameters say "UTF-8 for special
  characters". The identifier stage keeps the Unicode form too.
* SHA-256 of the UTF-8 bytes, lower-case hex (X states lower-case explicitly; the others' examples
  are all lower-case hex).

Meta (Custom Audiences customer file / Conversions API)
-------------------------------------------------------
* email: trim, lower-case. Vector `John_Smith@gmail.com` -> 62a14e44...0f62f.
* phone: digits only with the country code, no `+`, no leading zeros: `+16505551212` ->
  `16505551212` -> e323ec62...3176. A leading `+` gets no matches (Salesforce KB 000391108).
* country: ISO 3166-1 alpha-2, lower-case, hashed: `us` -> 79adb2a2...4621.
* Columns: `email`, `phone`, `country` (customer-list file headers; hashed values go in the same
  columns).

Google (Customer Match / Data Manager API)
------------------------------------------
* email: lower-case; remove leading, trailing and intermediate whitespace; for `gmail.com` and
  `googlemail.com` only, remove every `.` before the `@` and remove `+` and everything after it
  in the local part (`cloudy.sanfrancisco+shopping@gmail.com` -> `cloudysanfrancisco@gmail.com`);
  other domains keep dots and plus (`user.name+NYC@Example.com` -> `user.name+nyc@example.com`).
* phone: E.164 with `+` and country code: `(800)555-0100` -> `+18005550100` -> fb4f73a6...7b30.
* Columns: `Email`, `Phone` (Customer Match file template). `Country` is part of Google's
  address match, which also needs first name, last name and zip; we export no names, so
  Google gets no country column (data minimisation).

TikTok (Custom Audience customer file)
--------------------------------------
* email: lower-case, trim; remove `+` and everything after it up to `@`, for every domain (the
  help article states no domain restriction). Dots are kept: the July 2024 revision also removed
  dots, the June and August 2025 revisions do not.
* phone: digits only with the country code, no `+`, no leading zeros (August 2025 revision:
  `(657)777-0000` -> `16577770000`). The June 2025 revision and the "preview" page ask for E.164
  with `+`, but the preview page's own hashed example is SHA-256(`37493828222`), without `+`
  (verified), so we follow the newest revision and the published hash.
* Columns: `Email_SHA256`, `Phone_SHA256` (the headers for hashed values).

X (List Custom Audiences / Ads API custom audience users)
----------------------------------------------------------
* email: lower-case, remove leading and trailing spaces.
* phone: digits only with the country code, leading zeros dropped, no `+` (X's hashing tool,
  twitterdev/ads-platform-tools `hash_tailored_audience_file`, type PHONE: whitespace removed,
  leading zeros dropped, must match `^\\d+$`).
* Columns: `email`, `phone`. X's list upload has no header contract (the uploader assigns an
  identifier type to each column after upload), so these names are ours.

LinkedIn (Matched Audiences contact list)
-----------------------------------------
* email: LinkedIn publishes no normalisation rule; trim and lower-case as everywhere else
  (inference, conventions.md §3.4). Plain or SHA-256 emails are accepted.
* phone: not a contact-list identifier; LinkedIn audiences carry no phone column.
* Columns: LinkedIn's contact template header, which must not be changed or removed:
  `email,firstname,lastname,jobtitle,employeecompany,country,googleaid`; only `email` is filled.

Each `PlatformSpec.sources` lists the URLs (or repository paths) the rules above come from.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from profiles.errors import EnrichError
from profiles.types import TEXT_DTYPE

SHA256_PATTERN = r"[0-9A-Fa-f]{64}"
"""A SHA-256 digest in hex, either case: such values are passed through, never re-hashed."""
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
"""SHA-256 of the empty string: must never appear in an audience."""
GMAIL_DOMAINS = ("gmail.com", "googlemail.com")
"""Domains whose local part Google canonicalises (dots and `+tag` removed)."""
_E164 = r"\+[1-9][0-9]{1,14}"
_PHONE_SEPARATORS = r"[\s\-().]"
"""Separators Meta's SDK strips from phones; E.164 input has none, but they carry no digits."""
_COUNTRY = r"[a-z]{2}"


class Platform(StrEnum):
    """An ad platform that takes hashed customer lists."""

    META = "meta"
    GOOGLE = "google"
    TIKTOK = "tiktok"
    X = "x"
    LINKEDIN = "linkedin"


class AudienceInputError(EnrichError, ValueError):
    """Input values break the contract (not from the identifier stage). Counts only, no values."""


@dataclass(frozen=True)
class PlatformSpec:
    """Columns, normalisation rules and their sources for one platform."""

    platform: Platform
    email_column: str
    phone_column: str | None
    """None: the platform takes no phone numbers in this audience type."""
    country_column: str | None
    """Hashed ISO alpha-2 country column, where the platform matches on country alone."""
    header: tuple[str, ...]
    """Every column of the audience file, in order; columns we do not fill stay empty."""
    email_rule: str
    phone_rule: str | None
    sources: tuple[str, ...]
    gmail_canonical: bool = False
    """gmail.com/googlemail.com: remove dots and `+tag` from the local part (Google)."""
    strip_plus_tag: bool = False
    """Every domain: remove `+` and what follows it in the local part (TikTok)."""
    strip_inner_whitespace: bool = False
    """Remove intermediate whitespace too, not only leading and trailing (Google)."""
    phone_plus: bool = False
    """Keep the `+` of E.164 (Google); otherwise digits only with the country code."""


_META = PlatformSpec(
    platform=Platform.META,
    email_column="email",
    phone_column="phone",
    country_column="country",
    header=("email", "phone", "country"),
    email_rule="NFC, trim, lower-case; SHA-256 lower-case hex",
    phone_rule="digits only with country code, no '+', no leading zeros; SHA-256",
    sources=(
        "https://developers.facebook.com/documentation/ads-commerce/conversions-api/parameters/"
        "customer-information-parameters",
        "https://www.facebook.com/business/help/2082575038703844",
        "facebook/facebook-python-business-sdk:facebook_business/adobjects/serverside/normalize.py",
        "facebook/facebook-python-business-sdk:"
        "facebook_business/adobjects/helpers/customaudiencemixin.py",
        "https://help.salesforce.com/s/articleView?id=000391108&type=1",
    ),
)
_GOOGLE = PlatformSpec(
    platform=Platform.GOOGLE,
    email_column="Email",
    phone_column="Phone",
    country_column=None,
    header=("Email", "Phone"),
    email_rule=(
        "NFC, remove all whitespace, lower-case; gmail.com/googlemail.com only: remove '.' and"
        " '+tag' from the local part; SHA-256 lower-case hex"
    ),
    phone_rule="E.164 with '+' and country code; SHA-256",
    sources=(
        "https://developers.google.com/data-manager/api/devguides/concepts/formatting",
        "https://support.google.com/google-ads/answer/7659867",
        "https://developers.google.com/google-ads/api/reference/rpc/latest/UserIdentifier",
        "googleads/data-manager-python:tests/formatter_test.py@3565b7ea36ce",
    ),
    gmail_canonical=True,
    strip_inner_whitespace=True,
    phone_plus=True,
)
_TIKTOK = PlatformSpec(
    platform=Platform.TIKTOK,
    email_column="Email_SHA256",
    phone_column="Phone_SHA256",
    country_column=None,
    header=("Email_SHA256", "Phone_SHA256"),
    email_rule="NFC, trim, lower-case, remove '+tag' from the local part (any domain); SHA-256",
    phone_rule="digits only with country code, no '+', no leading zeros; SHA-256",
    sources=(
        "https://ads.tiktok.com/help/article/list-of-supported-ids-and-formats-for-a-customer-file",
        "https://ads.tiktok.com/help/preview?content_id=5gcDeV2ckkwNVh1BedxvSJ&lang=en",
    ),
    strip_plus_tag=True,
)
_X = PlatformSpec(
    platform=Platform.X,
    email_column="email",
    phone_column="phone",
    country_column=None,
    header=("email", "phone"),
    email_rule="NFC, trim, lower-case; SHA-256 without salt, lower-case hex",
    phone_rule="digits only with country code, leading zeros dropped, no '+'; SHA-256",
    sources=(
        "https://developer.x.com/en/docs/x-ads-api/audiences/overview/user-data",
        "https://business.x.com/en/help/campaign-setup/campaign-targeting/custom-audiences/lists",
        "twitterdev/ads-platform-tools:python/hash_tailored_audience_file.py (type PHONE), read"
        " in the fork kachuy/ads-platform-tools:python/hash_file_updated.py@08c7093a0d4f",
    ),
)
_LINKEDIN = PlatformSpec(
    platform=Platform.LINKEDIN,
    email_column="email",
    phone_column=None,
    country_column=None,
    header=(
        "email",
        "firstname",
        "lastname",
        "jobtitle",
        "employeecompany",
        "country",
        "googleaid",
    ),
    email_rule="NFC, trim, lower-case (no published rule; inference); SHA-256 lower-case hex",
    phone_rule=None,
    sources=(
        "https://www.linkedin.com/help/lms/answer/a1489764",
        "https://content.linkedin.com/content/dam/help/lms/en-us/"
        "LinkedIn_Ads_Contact_Match_Template.csv",
        "https://learn.microsoft.com/en-us/linkedin/marketing/matched-audiences/"
        "create-and-manage-list-uploads",
    ),
)

SPECS: Mapping[Platform, PlatformSpec] = MappingProxyType(
    {spec.platform: spec for spec in (_META, _GOOGLE, _TIKTOK, _X, _LINKEDIN)}
)
"""Every platform's columns, rules and sources."""


def _text(values: pd.Series[str]) -> pd.Series[str]:
    """Values as `TEXT_DTYPE`; empty and whitespace-only values become missing."""
    text = values.astype(TEXT_DTYPE)
    return text.where(text.str.strip() != "")


def is_sha256(values: pd.Series[str]) -> pd.Series[bool]:
    """True where a value is a SHA-256 hex digest (64 hex digits, either case)."""
    return _text(values).str.fullmatch(SHA256_PATTERN).fillna(False).astype(bool)


def _pass_hashed(
    text: pd.Series[str], normalised: pd.Series[str], digest: pd.Series[bool]
) -> pd.Series[str]:
    """Digests (`digest`: `is_sha256(text)`) lower-cased, every other value as normalised."""
    return text.str.lower().where(digest, normalised)


def _without(text: pd.Series[str], pattern: str) -> pd.Series[str]:
    """`text` with every match of `pattern` removed.

    pandas runs Python's `re` value by value for `\\s` (RE2 reads it differently), so values are
    first searched in one pass, and the replacement runs only when one of them matches: input
    from the identifier stage never does.
    """
    search = re.compile(pattern).search
    if not any(map(search, text.dropna().tolist())):
        return text
    return text.str.replace(pattern, "", regex=True)


def _address_parts(addresses: pd.Series[str]) -> tuple[pd.Series[str], pd.Series[str]]:
    """Local part and domain of each value, split at its last `@`; both missing where there is
    no `@`: what `(?s)\\A(.*)@([^@]*)\\Z` extracts, without Python's `re` per value."""
    text = pa.array(addresses)
    if isinstance(text, pa.ChunkedArray):  # pandas may keep a column in several chunks
        text = text.combine_chunks()
    parts = pc.split_pattern(text, "@", max_splits=1, reverse=True)
    offsets = parts.offsets.to_numpy()
    first = offsets[:-1] - offsets[0]  # positions in the flattened values
    split = pc.list_value_length(parts).fill_null(0).to_numpy(zero_copy_only=False) == 2
    values = pc.list_flatten(parts)
    local, domain = (
        pd.Series(
            values.take(pa.array(first + i, mask=~split)),
            index=addresses.index,
            name=addresses.name,
            dtype=TEXT_DTYPE,
        )
        for i in (0, 1)
    )
    return local, domain


def normalise_email(values: pd.Series[str], platform: Platform) -> pd.Series[str]:
    """The platform's normal form of each address (digests pass through lower-cased).

    Raises `AudienceInputError` if a value is neither a digest nor `local@domain`.
    """
    spec = SPECS[platform]
    text = _text(values)
    digest = is_sha256(text)
    plain = text.str.normalize("NFC")
    plain = _without(plain, r"\s+") if spec.strip_inner_whitespace else plain.str.strip()
    local, domain = _address_parts(plain.str.lower())
    well_formed = local.notna() & (local != "") & (domain != "")
    malformed = text.notna() & ~digest & ~well_formed
    if malformed.any():
        raise AudienceInputError(
            f"{int(malformed.sum())} email value(s) are neither an address nor a SHA-256 digest;"
            " audiences take emails from the identifier stage"
        )
    if spec.gmail_canonical:
        gmail = domain.isin(GMAIL_DOMAINS)
        canonical = local.str.replace(".", "", regex=False).str.replace(r"\+.*", "", regex=True)
        local = local.where(~gmail, canonical)
    if spec.strip_plus_tag:
        local = local.str.replace(r"\+.*", "", regex=True)
    address = (local + "@" + domain).where(local != "")  # "+tag@gmail.com" has no user left
    return _pass_hashed(text, address, digest)


def normalise_phone(values: pd.Series[str], platform: Platform) -> pd.Series[str]:
    """The platform's normal form of each E.164 number (digests pass through lower-cased).

    Separators (spaces, `-`, `(`, `)`, `.`) are dropped; what remains must be E.164, else
    `AudienceInputError`. E.164 country codes never start with 0, so "digits only" forms have
    no leading zeros by construction. Raises `ValueError` for a platform without a phone column.
    """
    spec = SPECS[platform]
    if spec.phone_column is None:
        raise ValueError(f"{platform.value} audiences take no phone numbers")
    text = _text(values)
    digest = is_sha256(text)
    compact = _without(text, _PHONE_SEPARATORS)
    malformed = text.notna() & ~digest & ~compact.str.fullmatch(_E164).fillna(False)
    if malformed.any():
        raise AudienceInputError(
            f"{int(malformed.sum())} phone value(s) are neither E.164 nor a SHA-256 digest;"
            " audiences take phones from the identifier stage"
        )
    normalised = compact if spec.phone_plus else compact.str.slice(1)
    return _pass_hashed(text, normalised, digest)


def _normalise_country(values: pd.Series[str]) -> pd.Series[str]:
    """ISO 3166-1 alpha-2, lower-case (Meta's `country`); digests pass through lower-cased."""
    text = _text(values)
    digest = is_sha256(text)
    code = text.str.strip().str.lower()
    malformed = text.notna() & ~digest & ~code.str.fullmatch(_COUNTRY).fillna(False)
    if malformed.any():
        raise AudienceInputError(
            f"{int(malformed.sum())} country value(s) are not ISO 3166-1 alpha-2 codes"
        )
    return _pass_hashed(text, code, digest)


def hashed(values: pd.Series[str]) -> pd.Series[str]:
    """SHA-256 lower-case hex of each value's UTF-8 bytes.

    Digests (64 hex digits) pass through lower-cased and are never hashed twice; missing,
    empty and whitespace-only values stay missing (the hash of "" is never produced). The
    result has `TEXT_DTYPE` and the input's index and name.
    """
    text = _text(values)
    codes, distinct = pd.factorize(text)  # a column repeats values (countries): hash each once
    digest = is_sha256(pd.Series(distinct, dtype=TEXT_DTYPE)).tolist()
    hexes = [
        value.lower() if done else hashlib.sha256(value.encode("utf-8")).hexdigest()
        for value, done in zip(distinct.tolist(), digest, strict=True)
    ]
    rows = pa.array(hexes, pa.large_string()).take(pa.array(codes, mask=codes < 0))
    return pd.Series(rows, index=values.index, name=values.name, dtype=TEXT_DTYPE)


def _check_aligned(emails: pd.Series[str], *others: pd.Series[str] | None) -> None:
    for other in others:
        if other is not None and not other.index.equals(emails.index):
            raise ValueError("emails, phones and country must share one index (one row a person)")


def audience_frame(
    emails: pd.Series[str],
    phones: pd.Series[str] | None,
    platform: Platform,
    *,
    country: pd.Series[str] | None = None,
) -> pd.DataFrame:
    """The platform's audience table: its header, hashed values only, one row per person.

    Rows are the input rows that have a hashed email or phone (index kept, so rows can be
    traced); rows with neither are dropped. Columns of the header we do not fill stay empty.
    `phones` is ignored where the platform has no phone column (LinkedIn), `country` where it
    has no country column (only Meta matches on a hashed country). Plaintext never appears:
    every filled cell is a lower-case SHA-256 hex digest.
    """
    spec = SPECS[platform]
    _check_aligned(emails, phones, country)
    empty: pd.Series[str] = pd.Series(None, index=emails.index, dtype=TEXT_DTYPE)
    columns: dict[str, pd.Series[str]] = dict.fromkeys(spec.header, empty)
    columns[spec.email_column] = hashed(normalise_email(emails, platform))
    keys = [spec.email_column]
    if spec.phone_column is not None and phones is not None:
        columns[spec.phone_column] = hashed(normalise_phone(phones, platform))
        keys.append(spec.phone_column)
    if spec.country_column is not None and country is not None:
        columns[spec.country_column] = hashed(_normalise_country(country))
    frame = pd.DataFrame(columns, columns=list(spec.header))
    return frame[frame[keys].notna().any(axis=1)]
