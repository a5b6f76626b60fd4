"""Decoding IAB TCF v2.2 TC strings (the core segment) into consent per TCF purpose.

A TC string is URL-safe base64 (no padding) of a bit field, big-endian, bits numbered left
to right. Segments are joined by "."; the core segment comes first and is the only one read
here (disclosed vendors and publisher TC segments are ignored). Core segment layout, from the
IAB Tech Lab specification "Transparency and Consent String with Global Vendor & CMP List
Formats", Final v.2.2 May 2023, section "The Core String" (InteractiveAdvertisingBureau/
GDPR-Transparency-and-Consent-Framework, `TCFv2/IAB Tech Lab - Consent string and vendor list
formats v2.md`)::

    Version                 6   2 for this format
    Created                 36  deciseconds since 1970-01-01 UTC
    LastUpdated             36  deciseconds since 1970-01-01 UTC
    CmpId                   12
    CmpVersion              12
    ConsentScreen           6
    ConsentLanguage         12  ISO 639-1, two letters of 6 bits, a=0 .. z=25
    VendorListVersion       12
    TcfPolicyVersion        6   4 since TCF v2.2
    IsServiceSpecific       1   must be 1 (global scope ended 2021); 0 makes the string invalid
    UseNonStandardTexts     1
    SpecialFeatureOptIns    12  bit i-1: special feature i opted in
    PurposesConsent         24  bit i-1: consent for purpose i
    PurposesLITransparency  24  bit i-1: legitimate interest established for purpose i
                                (v2.2: purposes 3-6 may not rest on it; their bits must be 0)
    PurposeOneTreatment     1   1: purpose 1 was not disclosed at all
    PublisherCC             12  ISO 3166-1 alpha-2, two letters as above
    vendor consents         MaxVendorId 16, IsRangeEncoding 1, then either a bit field of
                            MaxVendorId bits (bit i-1: vendor i) or NumEntries 12 and that many
                            range entries: IsARange 1, StartOrOnlyVendorId 16, EndVendorId 16
                            (only if IsARange)
    vendor legitimate interests   the same layout
    publisher restrictions  NumPubRestrictions 12, then per restriction PurposeId 6,
                            RestrictionType 2 (0 not allowed, 1 require consent, 2 require
                            legitimate interest), NumEntries 12 and range entries as above

The same document says that after 30 September 2023 a TC string with a policy version below 4
is invalid, as is one with IsServiceSpecific = 0 (`TCString.problems` reports both).
Padding bits after the last field are ignored; a string that ends inside a field is
malformed. Tests check the decoder against strings from a small encoder (round trip) and
against the example string published in that specification, whose decoded values are
documented independently by the GDPR::IAB::TCFv2 parser (CPAN, peczenyj/gdpr-iab-tcfv2).

Errors: `TcfError` (an EnrichError) with a message naming the problem and the field, never
the string itself.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd

from profiles.errors import EnrichError

TCF_VERSION = 2
"""The encoding version this module decodes."""

MIN_POLICY_VERSION = 4
"""TCF policy version of TCF v2.2 (policies in force from 2023)."""

POLICY_4_CUTOFF = datetime(2023, 10, 1, tzinfo=UTC)
"""From this instant a TC string must carry policy version 4 or higher to be valid."""

MAX_CORE_CHARACTERS = 100_000
"""Longest core segment accepted (a bit field over every 16-bit vendor id is ~11,000)."""

PURPOSE_BITS = 24
SPECIAL_FEATURE_BITS = 12

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class TcfError(EnrichError):
    """A TC string cannot be decoded: not base64url, not version 2, or cut short.

    The message names what is wrong and where, never the string (which describes a
    person's choices).
    """


@dataclass(frozen=True)
class PublisherRestriction:
    """A publisher's restriction of some vendors for one purpose."""

    purpose_id: int
    restriction_type: int
    """0: purpose flatly not allowed; 1: require consent; 2: require legitimate interest."""
    vendor_ids: frozenset[int]


@dataclass(frozen=True)
class TCString:
    """The decoded core segment of a TC string. Sets hold the ids whose bit is 1."""

    version: int
    created: datetime
    last_updated: datetime
    cmp_id: int
    cmp_version: int
    consent_screen: int
    consent_language: str
    vendor_list_version: int
    tcf_policy_version: int
    is_service_specific: bool
    use_non_standard_texts: bool
    special_feature_opt_ins: frozenset[int]
    purposes_consent: frozenset[int]
    """TCF purposes (1-24) the user consented to: the only signal consent ingestion uses."""
    purposes_li_transparency: frozenset[int]
    """TCF purposes with legitimate interest established and not objected to."""
    purpose_one_treatment: bool
    publisher_cc: str
    vendor_consents: frozenset[int]
    vendor_legitimate_interests: frozenset[int]
    publisher_restrictions: tuple[PublisherRestriction, ...]

    @property
    def problems(self) -> tuple[str, ...]:
        """Why the TCF v2.2 specification deems this string invalid (empty if it does not):
        a global-scope string (IsServiceSpecific = 0), or a policy version below 4 on a
        string last updated after 30 September 2023."""
        found: list[str] = []
        if not self.is_service_specific:
            found.append("not service-specific (global scope is no longer valid)")
        if self.tcf_policy_version < MIN_POLICY_VERSION and self.last_updated >= POLICY_4_CUTOFF:
            found.append(
                f"policy version {self.tcf_policy_version} after 2023-09-30 "
                f"(TCF v2.2 requires {MIN_POLICY_VERSION} or higher)"
            )
        return tuple(found)


_FIXED_FIELDS: tuple[tuple[str, int], ...] = (
    ("Version", 6),
    ("Created", 36),
    ("LastUpdated", 36),
    ("CmpId", 12),
    ("CmpVersion", 12),
    ("ConsentScreen", 6),
    ("ConsentLanguage", 12),
    ("VendorListVersion", 12),
    ("TcfPolicyVersion", 6),
    ("IsServiceSpecific", 1),
    ("UseNonStandardTexts", 1),
    ("SpecialFeatureOptIns", SPECIAL_FEATURE_BITS),
    ("PurposesConsent", PURPOSE_BITS),
    ("PurposesLITransparency", PURPOSE_BITS),
    ("PurposeOneTreatment", 1),
    ("PublisherCC", 12),
)
"""The fields of fixed width at the start of the core segment, in order."""


def _slices() -> tuple[tuple[int, int], ...]:
    ends = [sum(width for _, width in _FIXED_FIELDS[: i + 1]) for i in range(len(_FIXED_FIELDS))]
    return tuple(zip([0, *ends[:-1]], ends, strict=True))


_FIXED_SLICES = _slices()
FIXED_BITS = _FIXED_SLICES[-1][1]
"""213: where the vendor consent section starts."""


def _cut_short(field: str, start: int, end: int, available: int) -> TcfError:
    return TcfError(
        f"TC string is cut short: {field} needs bits {start}-{end - 1}, "
        f"the core segment has {available}"
    )


def _id_set(chunk: str) -> frozenset[int]:
    """The (1-based) positions of the 1 bits of `chunk`."""
    return frozenset(i + 1 for i, bit in enumerate(chunk) if bit == "1")


def _two_letters(chunk: str, field: str) -> str:
    codes = (int(chunk[:6], 2), int(chunk[6:], 2))
    if any(c > 25 for c in codes):
        raise TcfError(f"TC string: {field} is not two letters a-z")
    return "".join(chr(ord("A") + c) for c in codes)


class _Bits:
    """Reads fields from a string of '0'/'1' characters, left to right, from `pos`."""

    def __init__(self, bits: str, pos: int = 0) -> None:
        self._bits = bits
        self._pos = pos

    def take(self, width: int, field: str) -> str:
        end = self._pos + width
        if end > len(self._bits):
            raise _cut_short(field, self._pos, end, len(self._bits))
        chunk = self._bits[self._pos : end]
        self._pos = end
        return chunk

    def uint(self, width: int, field: str) -> int:
        return int(self.take(width, field), 2)

    def flag(self, field: str) -> bool:
        return self.take(1, field) == "1"

    def ranges(self, field: str, *, keep: bool) -> frozenset[int]:
        """NumEntries (12) range entries; the ids they cover if `keep`, else nothing."""
        ids: set[int] = set()
        for _ in range(self.uint(12, field)):
            is_range = self.flag(field)
            start = self.uint(16, field)
            end = self.uint(16, field) if is_range else start
            if start < 1 or end < start:
                raise TcfError(f"TC string: {field} has a range entry that is empty or starts at 0")
            if keep:
                ids.update(range(start, end + 1))
        return frozenset(ids)

    def vendors(self, field: str, *, keep: bool) -> frozenset[int]:
        """A vendor section: MaxVendorId, IsRangeEncoding, then bit field or ranges."""
        max_vendor_id = self.uint(16, field)
        if self.flag(field):
            return self.ranges(field, keep=keep)
        chunk = self.take(max_vendor_id, field)
        return _id_set(chunk) if keep else frozenset()


def _bits(tc: str) -> str:
    """The core segment of `tc` as a string of bits (6 per base64url character)."""
    if not isinstance(tc, str):
        raise TcfError(f"TC string must be text, not {type(tc).__name__}")
    core = tc.strip().split(".", 1)[0]
    if not core:
        raise TcfError("TC string is empty")
    if len(core) > MAX_CORE_CHARACTERS:
        raise TcfError(f"TC string core segment is longer than {MAX_CORE_CHARACTERS:,} characters")
    if not _BASE64URL.fullmatch(core):
        raise TcfError("TC string is not URL-safe base64 (A-Z, a-z, 0-9, '-', '_')")
    core = core.rstrip("=")
    # Pad with 'A' (zero bits) to whole bytes; Python's decoder would otherwise drop the
    # 2 or 4 bits of a last partial byte, which can hold a field's last bits.
    pad = -len(core) % 4
    try:
        data = base64.b64decode(core + "A" * pad, altchars=b"-_", validate=True)
    except binascii.Error:
        raise TcfError("TC string is not URL-safe base64") from None
    value = int.from_bytes(data, "big") >> (6 * pad)
    return format(value, "b").zfill(6 * len(core))


def _time(deciseconds: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=100 * deciseconds)


def _fixed(raw: str) -> list[str]:
    """The fixed-width fields at the start of the core segment, as bit strings."""
    if len(raw) >= 6 and (version := int(raw[:6], 2)) != TCF_VERSION:
        raise TcfError(f"TC string version {version} is not supported (only TCF v2 strings)")
    if len(raw) < FIXED_BITS:
        for (field, _), (start, end) in zip(_FIXED_FIELDS, _FIXED_SLICES, strict=True):
            if end > len(raw):
                raise _cut_short(field, start, end, len(raw))
    # one slice per field from a precomputed table: the fixed part is most of the work of
    # a typical string, and a column of them is decoded every night
    return [raw[start:end] for start, end in _FIXED_SLICES]


def _decode(tc: str, *, vendors: bool) -> TCString:
    raw = _bits(tc)
    (
        version,
        created,
        last_updated,
        cmp_id,
        cmp_version,
        consent_screen,
        consent_language,
        vendor_list_version,
        tcf_policy_version,
        is_service_specific,
        use_non_standard_texts,
        special_features,
        purposes_consent,
        purposes_li,
        purpose_one_treatment,
        publisher_cc,
    ) = _fixed(raw)
    bits = _Bits(raw, FIXED_BITS)
    # The sections below are walked even when only purposes are wanted: a string that ends
    # inside them was cut short, and its purposes are not to be trusted either.
    vendor_consents = bits.vendors("vendor consent section", keep=vendors)
    vendor_li = bits.vendors("vendor legitimate interest section", keep=vendors)
    restrictions: list[PublisherRestriction] = []
    for _ in range(bits.uint(12, "NumPubRestrictions")):
        purpose_id = bits.uint(6, "publisher restriction PurposeId")
        restriction_type = bits.uint(2, "publisher restriction RestrictionType")
        ids = bits.ranges("publisher restriction", keep=vendors)
        restrictions.append(PublisherRestriction(purpose_id, restriction_type, ids))
    return TCString(
        version=int(version, 2),
        created=_time(int(created, 2)),
        last_updated=_time(int(last_updated, 2)),
        cmp_id=int(cmp_id, 2),
        cmp_version=int(cmp_version, 2),
        consent_screen=int(consent_screen, 2),
        consent_language=_two_letters(consent_language, "ConsentLanguage"),
        vendor_list_version=int(vendor_list_version, 2),
        tcf_policy_version=int(tcf_policy_version, 2),
        is_service_specific=is_service_specific == "1",
        use_non_standard_texts=use_non_standard_texts == "1",
        special_feature_opt_ins=_id_set(special_features),
        purposes_consent=_id_set(purposes_consent),
        purposes_li_transparency=_id_set(purposes_li),
        purpose_one_treatment=purpose_one_treatment == "1",
        publisher_cc=_two_letters(publisher_cc, "PublisherCC"),
        vendor_consents=vendor_consents,
        vendor_legitimate_interests=vendor_li,
        publisher_restrictions=tuple(restrictions),
    )


def decode(tc: str) -> TCString:
    """Decode the core segment of a TC string; TcfError if it is malformed.

    Segments after the first "." are ignored. A string that decodes may still be invalid
    under TCF v2.2 policy: see `TCString.problems`.
    """
    return _decode(tc, vendors=True)


def consented_purposes(series: pd.Series, *, strict: bool = True) -> pd.Series:
    """TCF purposes with a consent bit, per TC string of a column (object dtype, same index).

    Each element is a frozenset of purpose ids (1-24), or None where the value is missing
    or empty, cannot be decoded, or (with `strict`, the default) decodes but has
    `problems`. Only PurposesConsent counts; legitimate-interest bits never do. Each
    distinct string is decoded once, so a column of a million rows that repeat a few
    thousand strings costs a few thousand decodes.
    """
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    decoded: list[frozenset[int] | None] = []
    for value in uniques:
        decoded.append(_purposes(value, strict=strict))
    lookup = pd.Series([*decoded, None], dtype=object)
    # code -1 (missing) picks the trailing None
    return pd.Series(lookup.to_numpy()[codes], index=series.index, dtype=object, name=series.name)


def _purposes(value: object, *, strict: bool) -> frozenset[int] | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        tc = _decode(value, vendors=False)
    except TcfError:
        return None
    if strict and tc.problems:
        return None
    return tc.purposes_consent
