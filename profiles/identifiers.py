"""Identifier stage: validate, normalise and pseudonymise the email, phone and customer-id columns.

Per value (the `check_*` functions; the stage and the row-wise reference both use them):

* Values are stripped (`str.strip`) and NFC-normalised; an empty value is missing and gets no
  reason code. A value equal (casefold) to a token in `placeholders.values` is a placeholder.
* email: `email_validator.validate_email(v, check_deliverability=False)`; failure is
  EMAIL_SYNTAX (it refuses bidi controls and zero-width characters). The key form is the
  validator's normalised address, lower-cased (an IDN domain in punycode is written in
  Unicode, so both spellings have one pseudonym). A key form whose local part or a domain
  label mixes scripts or holds compatibility characters, a homoglyph spoof such as
  `ann@example.com` with a Cyrillic a (U+0430), is EMAIL_MIXED_SCRIPT (`mixed_script`).
  Listed addresses, local parts and domains are EMAIL_PLACEHOLDER. With
  `check_deliverability` the stage asks a `DeliverabilityChecker` once per domain per run:
  only a definite "this domain accepts no mail" is EMAIL_UNDELIVERABLE; timeouts and unknown
  answers are accepted.
* phone: six or more digits with fewer than `phone_min_distinct_digits` distinct ones
  (000000) are PHONE_PLACEHOLDER, whatever the region. "00..." is read as "+...". The region
  is the row's normalised country, else the source's `default_region`; "+..." is parsed
  without one, any other number without a region is PHONE_NO_REGION. Unparseable or invalid
  numbers are PHONE_INVALID; a national number with fewer than `phone_min_distinct_digits`
  distinct digits is PHONE_PLACEHOLDER. The key form is E.164.
* customer id: all zeros or listed in `placeholders.customer_ids` is CUSTOMER_ID_PLACEHOLDER;
  the key form is `<source namespace>:<value>`.
* country: `normalise_country`; an unrecognised value is COUNTRY_UNKNOWN.

The pseudonym of a key form is `Pseudonymiser.digest(kind, key_form)`. Third-party exceptions
never escape; a bad value is a reason code. Raw values never reach a log, message or output.

Output dtype convention: every text column the stage writes (`key_id`, `<kind>_pseudonym`,
`<kind>_reason`, `country`, `country_reason`, `row_reason`) has dtype `TEXT_DTYPE`, which is
pandas' default string dtype `str` (Arrow-backed; a missing value is NaN, `isna()` is true).
It is the dtype `profiles.ingest` gives every text column, so pass-through attributes and
stage columns agree, and Parquet stores them all as nullable strings.

Performance design: each distinct value is validated once per run. The stage keeps a cache
from each distinct raw and stripped value (phones: with the row's region, except for "+..."
numbers; customer ids: with the namespace) to its outcome, for the life of the stage; it
holds distinct values only, outcomes in Arrow arrays. Per chunk, columns are factorised,
distinct values looked up in the cache, and new ones validated in batches; HMACs of new key
forms are computed in this process (the key never leaves it), and outcomes reach the rows
by an Arrow `take` on the factorised codes, with no Python code per row.

Most email addresses are a plain ASCII local part at a domain, and the validator's work is
almost all in the domain: for those, `email_key` asks the validator about the domain once per
process and checks the rest (the result is the validator's, see `email_key`).

Batches go to a pool of `workers` processes. The stage runs in Prefect worker threads, where
forking is unsafe, so the pool uses a fork server (a fresh process that imports `__main__`
and this module once; each worker is a fork of it). The pool is started in a background
thread the first time a chunk has `pool_threshold` new values (starting it costs about a
second of CPU, more than a small run's whole validation) and is reused for the run. While it
starts, and whenever it would wait, the stage checks queued batches itself, so neither the
start nor the end of a chunk leaves a core idle. `workers=1` validates in-process.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import re
import threading
import unicodedata
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from itertools import repeat
from time import monotonic
from types import TracebackType
from typing import Any, NoReturn, Protocol, Self, TypeVar, cast

import dns.exception
import dns.resolver
import numpy as np
import numpy.typing as npt
import pandas as pd
import phonenumbers
import pyarrow as pa
from email_validator import validate_email
from email_validator.deliverability import validate_email_deliverability
from email_validator.exceptions import EmailUndeliverableError
from email_validator.rfc_constants import EMAIL_MAX_LENGTH

from profiles.config import IdentifierConfig, SourceConfig
from profiles.countries import normalise_country
from profiles.errors import ConfigError, EnrichError
from profiles.hashing import Pseudonymiser
from profiles.types import (
    ATTRIBUTE_FIELDS,
    IDENTIFIER_FIELDS,
    NAME_FIELDS,
    TEXT_DTYPE,
    CanonicalField,
    IdentifierKind,
    ReasonCode,
)

LINE = "line"
COUNTRY = CanonicalField.COUNTRY.value
KEY_ID = "key_id"
ROW_REASON = "row_reason"
COUNTRY_REASON = "country_reason"

Checked = tuple[str | None, ReasonCode | None]
"""Outcome of one value: (key form, None) if accepted, (None, code) if rejected, (None, None)
if missing."""

_MISSING: Checked = (None, None)
POOL_THRESHOLD = 20_000
"""Default number of new values in one chunk that starts the worker pool. Starting it costs
about a second of CPU, about what checking 20,000 values in-process costs; smaller runs are
faster on one core."""
_MIN_BATCH = 2_000
"""Smallest batch sent to a worker: below this, inter-process overhead outweighs the work."""
_BATCHES_PER_WORKER = 4
"""Batches per worker and call, so a slow batch does not leave the other core idle."""
_DNS_THREADS = 16
"""Domains looked up at once: lookups wait on the network, not the CPU."""

_Codes = npt.NDArray[np.intp]
_K = TypeVar("_K", bound=Hashable)
_T = TypeVar("_T")


def output_columns(source_columns: Sequence[str]) -> list[str]:
    """Columns of the stage's output for an input frame with `source_columns`, in order."""
    columns = [LINE, KEY_ID]
    for f in IDENTIFIER_FIELDS:
        columns += [f"{f}_pseudonym", f"{f}_reason"]
    columns += [COUNTRY, COUNTRY_REASON, ROW_REASON]
    columns += [c for c in source_columns if c in _PASS_THROUGH]
    columns += [present_column(c) for c in source_columns if c in _NAMES]
    return columns


def present_column(name_field: str) -> str:
    """Column saying whether a row has a (non-blank) value for a name field."""
    return f"{name_field}_present"


_PASS_THROUGH = frozenset(f.value for f in ATTRIBUTE_FIELDS if f is not CanonicalField.COUNTRY)
_NAMES = frozenset(f.value for f in NAME_FIELDS)


@dataclass(frozen=True)
class _Rules:
    """`IdentifierConfig` compiled into sets for constant-time lookups."""

    tokens: frozenset[str]
    emails: frozenset[str]
    local_parts: frozenset[str]
    domains: frozenset[str]
    customer_ids: frozenset[str]
    min_distinct_digits: int

    @classmethod
    def of(cls, config: IdentifierConfig) -> _Rules:
        p = config.placeholders
        return cls(
            tokens=frozenset(p.values),
            emails=frozenset(p.emails),
            local_parts=frozenset(p.email_local_parts),
            domains=frozenset(p.email_domains),
            customer_ids=frozenset(p.customer_ids),
            min_distinct_digits=p.phone_min_distinct_digits,
        )


# Configs are frozen but hold lists, so they are not hashable; compiled rules are cached by
# identity, keeping the config alive so its id cannot be reused while it is in the cache.
_RULES: dict[int, tuple[IdentifierConfig, _Rules]] = {}
_RULES_LOCK = threading.Lock()
_RULES_MAX = 32


def _rules(config: IdentifierConfig) -> _Rules:
    hit = _RULES.get(id(config))
    if hit is not None and hit[0] is config:
        return hit[1]
    rules = _Rules.of(config)
    with _RULES_LOCK:
        if len(_RULES) >= _RULES_MAX:
            _RULES.pop(next(iter(_RULES)))
        _RULES[id(config)] = (config, rules)
    return rules


def clean(raw: str) -> str:
    """A raw value as the rules see it: surrounding whitespace stripped, NFC-normalised."""
    return unicodedata.normalize("NFC", raw.strip())


def check_email(raw: str, config: IdentifierConfig) -> Checked:
    """Validate one email address: (lower-cased normalised address, None) or (None, reason).

    Syntax only; deliverability is a per-domain, per-run question the stage asks separately.
    """
    value = clean(raw)
    if not value:
        return _MISSING
    rules = _rules(config)
    if value.casefold() in rules.tokens:
        return None, ReasonCode.EMAIL_PLACEHOLDER
    key = email_key(value)
    if key is None:
        return None, ReasonCode.EMAIL_SYNTAX
    if mixed_script(key):
        return None, ReasonCode.EMAIL_MIXED_SCRIPT
    local, _, domain = key.rpartition("@")
    # the placeholder lists are stored casefolded; casefold equals lower for ASCII addresses
    if (
        key.casefold() in rules.emails
        or local.casefold() in rules.local_parts
        or domain.casefold() in rules.domains
    ):
        return None, ReasonCode.EMAIL_PLACEHOLDER
    return key, None


_SIMPLE_EMAIL = re.compile(r"([A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*)@([A-Za-z0-9.-]+)")
"""An ASCII address whose local part is a dot-atom and whose domain has no special signs."""


def email_key(value: str) -> str | None:
    """`validate_email(value, check_deliverability=False).normalized.lower()`, None if invalid.

    Most addresses are `local@domain` with a plain ASCII dot-atom before the @-sign, and the
    validator's work is almost all in the domain. For those (`_SIMPLE_EMAIL`) the validator
    checks the local part as written and the domain on its own, then the address's length: so
    the address is valid iff the validator accepts "a@" + domain (once per domain, cached) and
    the address, with the domain as written, normalised and in IDNA ASCII, is at most
    `EMAIL_MAX_LENGTH` UTF-8 bytes; its normalised form is the local part, "@" and the
    normalised domain. Any other address goes to the validator as a whole.

    A value longer than `EMAIL_MAX_LENGTH` characters is invalid without asking: the validator
    checks the address as given (which is all of a valid one) against that many UTF-8 bytes,
    but only after reading it character by character, seconds for a 10 MB field.
    """
    if len(value) > EMAIL_MAX_LENGTH:
        return None
    simple = _SIMPLE_EMAIL.fullmatch(value)
    if simple is None:
        try:
            return str(validate_email(value, check_deliverability=False).normalized).lower()
        except Exception:  # EmailNotValidError, or a validator bug on odd input: a bad value
            return None
    local, domain = simple.groups()
    forms = _domain_forms(domain)
    if forms is None:
        return None
    normalised = f"{local}@{forms[0]}"
    for address in (value, normalised, f"{local}@{forms[1]}"):
        if len(address.encode()) > EMAIL_MAX_LENGTH:
            return None
    return normalised.lower()


_SCRIPT_SETS = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)
"""Scripts one label may mix (Unicode TS #39, level "highly restrictive"): Japanese, Chinese
and Korean are written in several, and with Latin."""
_SCRIPT_ALIASES = {
    "CJK": "HAN",
    "IDEOGRAPHIC": "HAN",
    "HENTAIGANA": "HIRAGANA",
    "TURNED": "LATIN",
    "ROMAN": "LATIN",
    "OLD CHINESE": "HAN",
}
"""Letter names' first words that name another script (turned F, reversed C: Latin)."""
_TWO_WORD_SCRIPTS = ("OLD ", "TAI ", "LINEAR ", "INSCRIPTIONAL ", "MEROITIC ")
"""First words several scripts' names share: Old Italic, Old Persian, Tai Le, Tai Tham, ..."""
_COMMON_LETTERS = frozenset({"MODIFIER", "VEDIC", "VERTICAL", "CARON", "MASU", "KATAKANA-HIRAGANA"})
"""First words of the names of letters used with several scripts (script Common): the
modifier letters (apostrophe U+02BC, stress mark U+02C8), the Japanese length mark U+30FC,
Vedic signs."""


def mixed_script(address: str) -> bool:
    """Whether a normalised address is a spoof: its local part or a domain label mixes scripts
    or holds compatibility characters (Unicode TS #39, section 5).

    A label is fine if its letters are of one script, or of Latin, Han and Japanese kana, or
    Latin, Han and Bopomofo, or Latin, Han and Hangul (restriction level "highly
    restrictive", the one browsers build their IDN display rules on), and it is NFKC-stable
    (TS #39 allows no character that NFKC changes in an identifier: mathematical bold a
    U+1D41A, fullwidth j U+FF4A, superscript two, the fi ligature). Digits, punctuation and
    marks have no script here, so `user-1.name` is Latin. A wholly Cyrillic, Greek or CJK
    address is fine, as is a Latin local part at a Cyrillic domain (each domain label is
    checked on its own) — except a domain label wholly of letters that imitate Latin ones
    (`_LATIN_LOOKALIKES`) under an ASCII top-level domain: `ann@xn--80ak6aa92e.com`, five
    Cyrillic letters, is a whole-script spoof of `apple.com` (TS #39 section 4; `пример.рф`
    is fine: other letters, a Cyrillic top-level domain). An ASCII address never is a spoof;
    one written with a punycode domain is checked as the Unicode domain it normalises to
    (`ann@xn--pypal-4ve.com` is `ann@paypal.com` with a Cyrillic a, not ASCII any more).

    A letter's script is taken, with the standard library alone, from its Unicode name: the
    first word ("CYRILLIC SMALL LETTER A"), or the first two where scripts' names share one
    ("OLD ITALIC", "TAI LE"), with `_SCRIPT_ALIASES` and `_COMMON_LETTERS`. That is the Unicode
    Script property for every NFKC-stable letter of every script (tested against it), but
    for five letters counted as Common (four Latin modifier letters, a vertical Han
    iteration mark), three Common ones counted as the script they are used with (Arabic
    tatweel), and letters without a name in Python 3.11 (Tangut), one script of their own.
    """
    if address.isascii():
        return False
    local, _, domain = address.rpartition("@")
    labels = domain.split(".")
    if not all(map(_single_script, (local, *labels))):
        return True
    # under an ASCII top-level domain, a label wholly of Latin lookalikes imitates a Latin one
    return labels[-1].isascii() and any(map(_latin_lookalike, labels[:-1]))


_LATIN_LOOKALIKES = frozenset(
    "асԁеһіјӏорԛѕԝх"
    "уъьҽпгѵѡ"  # Cyrillic: а с ԁ е һ і ј ӏ о р ԛ ѕ ԝ х у ъ ь ҽ п г ѵ ѡ
    "αορνικυ"  # Greek: α ο ρ ν ι κ υ
)
"""Cyrillic and Greek small letters that look like Latin ones (Chromium's IDN spoof checker
lists these for its whole-script confusable rule): `xn--80ak6aa92e.com` is `apple.com`
spelt in Cyrillic."""


def _latin_lookalike(label: str) -> bool:
    """A non-ASCII label whose letters all imitate Latin ones (digits and hyphens aside)."""
    letters = [char for char in label if unicodedata.category(char).startswith("L")]
    return not label.isascii() and bool(letters) and all(c in _LATIN_LOOKALIKES for c in letters)


def _single_script(label: str) -> bool:
    if label.isascii():
        return True
    label = unicodedata.normalize("NFC", label)  # compatibility characters are what NFKC adds
    if not unicodedata.is_normalized("NFKC", label):
        return False
    scripts = set(filter(None, map(_script, label)))
    return len(scripts) <= 1 or any(scripts <= allowed for allowed in _SCRIPT_SETS)


@lru_cache(maxsize=1 << 12)
def _script(char: str) -> str | None:
    """The script of a letter (see `mixed_script`); None for anything else and for letters
    used with several scripts."""
    if not unicodedata.category(char).startswith("L"):
        return None
    name = unicodedata.name(char, "?")
    words = name.split(maxsplit=2)
    word = " ".join(words[:2]) if name.startswith(_TWO_WORD_SCRIPTS) else words[0]
    return None if word in _COMMON_LETTERS else _SCRIPT_ALIASES.get(word, word)


@lru_cache(maxsize=1 << 16)
def _domain_forms(domain: str) -> tuple[str, str] | None:
    """The normalised and IDNA ASCII forms of a mail domain, None if the validator refuses it."""
    try:
        probe = validate_email(f"a@{domain}", check_deliverability=False)
    except Exception:  # EmailNotValidError, or a validator bug: either way no address is valid
        return None
    return str(probe.domain), str(probe.ascii_domain)


def check_phone(raw: str, region: str | None, config: IdentifierConfig) -> Checked:
    """Validate one phone number: (E.164, None) or (None, reason).

    `region` is the row's country (ISO alpha-2), else the source's default region, else None.
    """
    value = clean(raw)
    if not value:
        return _MISSING
    rules = _rules(config)
    if value.casefold() in rules.tokens or _repeated_digits(value, rules.min_distinct_digits):
        return None, ReasonCode.PHONE_PLACEHOLDER
    if value.startswith("00"):
        # "00" is the international prefix wherever it is used, and no national number
        # starts with it, so "0045 ..." is "+45 ..." even in a row from the US (IDD 011)
        value = "+" + value[2:]
    parse_region: str | None = None if value.startswith("+") else region
    if parse_region is None and not value.startswith("+"):
        return None, ReasonCode.PHONE_NO_REGION
    try:
        return _check_number(phonenumbers.parse(value, parse_region), rules)
    except phonenumbers.NumberParseException:
        return None, ReasonCode.PHONE_INVALID
    except Exception:  # a phonenumbers bug on odd input is still a bad value, not a failed run
        return None, ReasonCode.PHONE_INVALID


def _repeated_digits(value: str, min_distinct: int) -> bool:
    """000000, 1111 1111: six or more digits written, fewer than `min_distinct` different."""
    digits = [ch for ch in value if ch.isdigit()]
    return len(digits) >= 6 and len(set(digits)) < min_distinct


def _check_number(number: phonenumbers.PhoneNumber, rules: _Rules) -> Checked:
    if len(set(phonenumbers.national_significant_number(number))) < rules.min_distinct_digits:
        return None, ReasonCode.PHONE_PLACEHOLDER
    if not phonenumbers.is_valid_number(number):
        return None, ReasonCode.PHONE_INVALID
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None


def check_customer_id(raw: str, namespace: str, config: IdentifierConfig) -> Checked:
    """Check one customer id: (`namespace:value`, None) or (None, CUSTOMER_ID_PLACEHOLDER)."""
    value = clean(raw)
    if not value:
        return _MISSING
    rules = _rules(config)
    folded = value.casefold()
    if folded in rules.tokens or not value.strip("0") or folded in rules.customer_ids:
        return None, ReasonCode.CUSTOMER_ID_PLACEHOLDER
    return f"{namespace}:{value}", None


def check_country(raw: str) -> Checked:
    """Normalise one country: (ISO alpha-2, None), (None, COUNTRY_UNKNOWN) or missing."""
    value = clean(raw)
    if not value:
        return _MISSING
    code = normalise_country(value)
    return (code, None) if code is not None else (None, ReasonCode.COUNTRY_UNKNOWN)


def pseudonymise_values(
    values: Mapping[IdentifierKind, Sequence[str]],
    config: IdentifierConfig,
    pseudonymiser: Pseudonymiser,
    *,
    what: str,
    region: str | None = None,
) -> dict[IdentifierKind, frozenset[str]]:
    """Pseudonyms of raw values given outside any source (a blocklist, a DSAR request).

    Values are normalised as the stage would: emails as written, phones with a country code
    ("+45 ...") or national with `region`, customer ids as `namespace:id`. A value that cannot
    be read that way is a ConfigError naming `what` and the position (never the value); one
    the stage would reject as a placeholder is dropped silently.
    """
    problems: list[str] = []
    out: dict[IdentifierKind, frozenset[str]] = {}
    for kind, raws in values.items():
        digests: set[str] = set()
        for i, raw in enumerate(raws):
            if kind is IdentifierKind.EMAIL:
                key, reason = check_email(raw, config)
            elif kind is IdentifierKind.PHONE:
                key, reason = check_phone(raw, region, config)
            else:
                namespace, sep, value = raw.partition(":")
                if not sep or not namespace:
                    problems.append(f"{what}.{kind}[{i}]: write customer ids as namespace:id")
                    continue
                key, reason = check_customer_id(value, namespace, config)
            if key is not None:
                digests.add(pseudonymiser.digest(kind, key))
            elif reason not in _PLACEHOLDER_REASONS and reason is not None:
                problems.append(f"{what}.{kind}[{i}]: not a usable {kind} ({reason})")
        out[kind] = frozenset(digests)
    if problems:
        raise ConfigError(what, problems)
    return out


_PLACEHOLDER_REASONS = frozenset(
    {
        ReasonCode.EMAIL_PLACEHOLDER,
        ReasonCode.PHONE_PLACEHOLDER,
        ReasonCode.CUSTOMER_ID_PLACEHOLDER,
    }
)


def _check_batch(config: IdentifierConfig, kind: IdentifierKind, keys: list[Any]) -> list[Checked]:
    """Check a batch of stripped lookup keys of one kind.

    Keys are the value (email), (value, region) (phone) or (namespace, value) (customer id).
    """
    if kind is IdentifierKind.EMAIL:
        return [check_email(v, config) for v in keys]
    if kind is IdentifierKind.PHONE:
        return [check_phone(v, r, config) for v, r in keys]
    return [check_customer_id(v, ns, config) for ns, v in keys]


def _pool_context() -> multiprocessing.context.BaseContext:
    """A fork server preloaded with this module: safe beside threads, and cheap workers.

    The stage runs in Prefect worker threads, where forking the process itself is unsafe.
    The fork server is a fresh single-threaded process; it imports `__main__` and this module
    once, and each worker is a fork of it instead of a new interpreter importing everything
    again. The preload only takes effect if no fork server is running yet. Where there is
    no fork server (Windows), workers are spawned.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", __name__])
    return context


_WORKER_CONFIG: IdentifierConfig | None = None


_WORKER_START_TIMEOUT = 60.0
"""Seconds a starting worker waits for the others before it goes on alone."""


def _init_worker(config: IdentifierConfig, started: threading.Barrier) -> None:
    """Set the worker's config, then wait until every worker of the pool has been started.

    The pool starts a worker for a task only when no worker is idle. Without the wait, the
    first worker can finish its empty warm-up task before the second is submitted (a busy
    machine), and the pool then stays at one worker until work piles up.
    """
    global _WORKER_CONFIG  # noqa: PLW0603 - one config per worker process, set once at start
    _WORKER_CONFIG = config
    # a worker that failed to start or took too long breaks the barrier: go on with the others
    with contextlib.suppress(threading.BrokenBarrierError):
        started.wait(_WORKER_START_TIMEOUT)


def _worker_batch(kind: IdentifierKind, keys: list[Any]) -> list[Checked]:
    if _WORKER_CONFIG is None:
        raise RuntimeError("identifier worker was not initialised")
    return _check_batch(_WORKER_CONFIG, kind, keys)


class Deliverability(StrEnum):
    """What a mail-domain lookup found."""

    ACCEPTS = "accepts"
    REJECTS = "rejects"
    """Definite: the domain does not exist, has a null MX, or has no MX/A/AAAA record."""
    UNKNOWN = "unknown"
    """Timeout or resolver failure: treated as accepting, never as a rejection."""


class DeliverabilityChecker(Protocol):
    """Tells whether a mail domain accepts email. Must be thread-safe and never raise."""

    def check(self, domain: str) -> Deliverability:
        """Look up one (lower-case, possibly internationalised) domain."""
        ...


class _DeadlineResolver:
    """Resolver proxy giving every query of one lookup what is left of a shared deadline."""

    def __init__(self, resolver: dns.resolver.Resolver, deadline: float) -> None:
        self._resolver = resolver
        self._deadline = deadline

    def resolve(self, qname: str, rdtype: str) -> dns.resolver.Answer:
        remaining = self._deadline - monotonic()
        if remaining <= 0:
            raise dns.exception.Timeout
        return self._resolver.resolve(qname, rdtype, lifetime=remaining)


_DEFINITE = (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer)


class DnsDeliverabilityChecker:
    """Checks a mail domain with DNS (MX, else A/AAAA; null MX rejects) within a hard timeout.

    Uses `email_validator`'s deliverability rules on a dnspython resolver. All queries of one
    domain share one deadline of `timeout` seconds; running out of it is UNKNOWN.
    """

    def __init__(self, timeout: float, resolver: dns.resolver.Resolver | None = None) -> None:
        self.timeout = timeout
        self._resolver = resolver
        self._lock = threading.Lock()

    def _get_resolver(self) -> dns.resolver.Resolver:
        with self._lock:
            if self._resolver is None:
                self._resolver = dns.resolver.Resolver()
            return self._resolver

    def check(self, domain: str) -> Deliverability:
        """Look up `domain`; only a definite answer rejects."""
        try:
            proxy = _DeadlineResolver(self._get_resolver(), monotonic() + self.timeout)
            info = validate_email_deliverability(
                domain, domain, dns_resolver=cast(dns.resolver.Resolver, proxy)
            )
        except EmailUndeliverableError as exc:
            # email_validator also raises this for unexpected resolver errors; only a null MX
            # (no cause) or a DNS answer saying "no such name / no record" is definite
            if exc.__cause__ is None or isinstance(exc.__cause__, _DEFINITE):
                return Deliverability.REJECTS
            return Deliverability.UNKNOWN
        except Exception:  # no resolver configuration, odd domain: unknown, never a rejection
            return Deliverability.UNKNOWN
        if "unknown-deliverability" in info:
            return Deliverability.UNKNOWN
        return Deliverability.ACCEPTS


class StaticDeliverabilityChecker:
    """Fake checker answering from fixed sets, recording every domain it was asked about."""

    def __init__(self, rejects: Sequence[str] = (), unknown: Sequence[str] = ()) -> None:
        self.rejects = frozenset(rejects)
        self.unknown = frozenset(unknown)
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def check(self, domain: str) -> Deliverability:
        """REJECTS for `rejects`, UNKNOWN for `unknown`, else ACCEPTS."""
        with self._lock:
            self.calls.append(domain)
        if domain in self.rejects:
            return Deliverability.REJECTS
        if domain in self.unknown:
            return Deliverability.UNKNOWN
        return Deliverability.ACCEPTS


def _domain(key: str) -> str:
    return key.rpartition("@")[2]


class IdentifierStageError(EnrichError):
    """The stage could not run (its worker processes died); retrying the run may succeed."""

    retryable = True


@dataclass
class IdentifierStats:
    """Counters of one stage (one run): rows seen, values validated, cache hits, DNS lookups."""

    rows: int = 0
    validated: dict[IdentifierKind, int] = field(
        default_factory=lambda: dict.fromkeys(IdentifierKind, 0)
    )
    """Distinct values validated (cache misses), per kind."""
    cache_hits: dict[IdentifierKind, int] = field(
        default_factory=lambda: dict.fromkeys(IdentifierKind, 0)
    )
    """Distinct values of a chunk answered from the cache, per kind."""
    domains_checked: int = 0
    batches_in_workers: int = 0
    """Batches of values checked by the worker processes ..."""
    batches_here: int = 0
    """... and by the process running the stage."""


def _factorize(column: pd.Series[str] | None, rows: int) -> tuple[_Codes, list[str]]:
    """Codes per row and the distinct values; an absent column is all ""; NaN reads as ""."""
    if column is None:
        return np.zeros(rows, dtype=np.intp), [""]
    codes, uniques = column.array.factorize(use_na_sentinel=True)
    values: list[str] = list(uniques.tolist()) if len(uniques) else []
    codes = np.asarray(codes, dtype=np.intp)
    if rows and (codes < 0).any():
        codes = np.where(codes < 0, len(values), codes)
        values.append("")
    return codes, values


def _pass_through(frame: pd.DataFrame, data: dict[str, Any]) -> None:
    """Attributes unchanged; for names only whether the row has one (the name stays here)."""
    for name in frame.columns:
        if name in _PASS_THROUGH:
            data[name] = frame[name].array
        elif name in _NAMES:
            data[present_column(name)] = (frame[name].str.strip() != "").to_numpy(dtype=bool)


def _frame(data: dict[str, Any], like: pd.DataFrame) -> pd.DataFrame:
    """The output frame: columns in contract order, the input's index (set, not aligned)."""
    out = pd.DataFrame(data, columns=output_columns(list(like.columns)))
    out.index = like.index
    return out


def _text(values: pa.Array | pa.ChunkedArray) -> pd.api.extensions.ExtensionArray:
    """An Arrow string array as a `TEXT_DTYPE` pandas array (no copy)."""
    text: pd.api.extensions.ExtensionArray = pd.array(values, dtype=TEXT_DTYPE)
    return text


def _take(per_unique: Sequence[str | None], codes: _Codes) -> pd.api.extensions.ExtensionArray:
    """Spread per-distinct-value results over the rows (an Arrow take, no per-row Python)."""
    return _text(pa.array(per_unique, type=pa.large_string()).take(pa.array(codes)))


class _Cache:
    """Outcomes of one identifier kind for a run, looked up by key in C, stored in Arrow.

    `positions` maps a lookup key (the raw value, and the stripped value when it differs; phones
    and customer ids pair it with their region / namespace) to a slot; slot i of the Arrow
    arrays holds one distinct stripped value's pseudonym and reason code. Slot 0 is "missing".
    """

    def __init__(self) -> None:
        self.positions: dict[Hashable, int] = {}
        self._pseudonyms: pa.Array = pa.nulls(1, pa.large_string())
        self._reasons: pa.Array = pa.nulls(1, pa.large_string())
        self.slots = 1

    def find(self, keys: list[_K]) -> npt.NDArray[np.int64]:
        """Slot of each key, -1 where it is not cached (a C-level loop, not Python per key)."""
        return np.fromiter(
            map(self.positions.get, keys, repeat(-1)), dtype=np.int64, count=len(keys)
        )

    def add(self, pseudonyms: list[str | None], reasons: list[str | None]) -> int:
        """Append outcomes; returns the slot of the first one."""
        first = self.slots
        # kept contiguous: a take over a many-chunked array is several times slower
        self._pseudonyms = pa.concat_arrays(
            [self._pseudonyms, pa.array(pseudonyms, type=pa.large_string())]
        )
        self._reasons = pa.concat_arrays([self._reasons, pa.array(reasons, type=pa.large_string())])
        self.slots += len(pseudonyms)
        return first

    def take(self, slots: npt.NDArray[np.int64]) -> tuple[pa.Array, pa.Array]:
        """Pseudonyms and reason codes at `slots`."""
        index = pa.array(slots)
        return self._pseudonyms.take(index), self._reasons.take(index)


@dataclass
class _Chunk:
    """Where a chunk's rows find their outcomes: row codes → distinct keys → cache slots."""

    codes: dict[IdentifierKind, _Codes]
    plans: dict[IdentifierKind, _Plan]
    country_codes: _Codes
    countries: list[Checked]


@dataclass
class _Plan:
    """One chunk's distinct keys of one kind: their slots, and what still has to be checked."""

    slots: npt.NDArray[np.int64]
    todo: list[Any]
    """Distinct stripped keys to validate: non-empty and not in the cache."""
    waiting: list[int]
    """Indices (into the chunk's distinct keys) waiting for an outcome ..."""
    waiting_for: list[int]
    """... and, for each, the index into `todo` of the key whose outcome it takes."""
    aliases: list[Hashable]
    """Raw keys that differ from their stripped key ..."""
    alias_of: list[int]
    """... and the index into `todo` of that stripped key."""


def _email_key(raw: Hashable) -> tuple[Hashable, str]:
    value = clean(cast(str, raw))
    return value, value


def _phone_key(raw: Hashable) -> tuple[Hashable, str]:
    text, region = cast(tuple[str, str | None], raw)
    value = clean(text)
    return (value, None if value.startswith("+") else region), value


def _customer_id_key(raw: Hashable) -> tuple[Hashable, str]:
    namespace, text = cast(tuple[str, str], raw)
    value = clean(text)
    return (namespace, value), value


class _WorkerPool:
    """The stage's worker processes, started in the background when first needed.

    Starting the fork server blocks for as long as it takes to import `__main__` and this
    module (a second or more); a thread takes that wait, so `process` carries on alone
    meanwhile.
    """

    def __init__(self, config: IdentifierConfig, workers: int) -> None:
        self._config = config
        self._workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self._warmups: list[Future[list[Checked]]] = []
        self._starter: threading.Thread | None = None
        self._failure: str | None = None

    def start(self) -> None:
        """Start the pool in the background, once."""
        if self._starter is None:
            self._starter = threading.Thread(
                target=self._start, name="identifier-pool-start", daemon=True
            )
            self._starter.start()

    def _start(self) -> None:
        try:
            context = _pool_context()
            executor = ProcessPoolExecutor(
                max_workers=self._workers,
                mp_context=context,
                initializer=_init_worker,
                initargs=(self._config, context.Barrier(self._workers)),
            )
            # Workers start on demand, one per task without an idle worker: one empty task
            # each, held at the start barrier until all are up, starts them all now.
            self._warmups = [
                executor.submit(_worker_batch, IdentifierKind.EMAIL, [])
                for _ in range(self._workers)
            ]
            self._executor = executor
        except Exception as exc:  # surfaced by `ready`, in the thread that runs the stage
            self._failure = type(exc).__name__

    def ready(self) -> ProcessPoolExecutor | None:
        """The pool if it has been started and is accepting work, else None."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            self._starter = None
            raise IdentifierStageError(
                f"could not start identifier worker processes ({failure})"
            ) from None
        return self._executor

    def warm(self) -> bool:
        """Whether a worker process is up (has answered its first, empty task)."""
        return any(f.done() for f in self._warmups)

    def pids(self) -> list[int]:
        """Process ids of the worker processes."""
        # ProcessPoolExecutor has no public accessor; for monitoring and tests only
        processes = getattr(self._executor, "_processes", None) or {}
        return sorted(processes)

    def close(self, *, wait_for_workers: bool = True) -> None:
        """Stop the workers; a later `start` starts new ones."""
        if self._starter is not None:
            self._starter.join()
        if self._executor is not None:
            self._executor.shutdown(wait=wait_for_workers, cancel_futures=True)
        self._executor, self._starter, self._warmups, self._failure = None, None, [], None


class _Dispatch:
    """One chunk's validation batches, shared by the worker pool and this process.

    Batches go to the pool as soon as it is ready, all of them, so the workers never run
    dry while this process plans or pseudonymises. Whenever this process needs results it
    does not have, it checks the last of them no worker has started yet itself (cancelling
    it in the pool) rather than idle. While the pool is still starting it also checks
    batches a worker may already hold; the worker's answer to those is dropped. With no
    pool, or until it is ready, everything is checked here.
    """

    def __init__(
        self, config: IdentifierConfig, pool: _WorkerPool | None, stats: IdentifierStats
    ) -> None:
        self._config = config
        self._pool = pool
        self._stats = stats
        self._batches: list[tuple[IdentifierKind, list[Any]]] = []
        self._results: list[list[Checked] | None] = []
        self._queued: list[int] = []
        self._futures: dict[int, Future[list[Checked]]] = {}

    def add(self, kind: IdentifierKind, keys: list[Any], size: int) -> list[int]:
        """Queue `keys` in batches of `size`; returns the batch ids."""
        ids = []
        for batch in _batches(keys, size):
            ids.append(len(self._batches))
            self._batches.append((kind, batch))
            self._results.append(None)
            self._queued.append(ids[-1])
        self._submit()
        return ids

    @property
    def queued(self) -> int:
        """Values not yet handed to the pool."""
        return sum(len(self._batches[i][1]) for i in self._queued)

    def results(self, ids: list[int]) -> list[Checked]:
        """The outcomes of batches `ids`, in order."""
        while True:
            self._submit()
            missing = [i for i in ids if self._results[i] is None and not self._done(i)]
            if not missing:
                break
            mine = next((i for i in reversed(missing) if self._steal(i)), None)
            if mine is None and (self._pool is None or not self._pool.warm()):
                mine = missing[-1]
            if mine is not None:
                self._results[mine] = _check_batch(self._config, *self._batches[mine])
                self._stats.batches_here += 1
            else:
                wait([self._futures[i] for i in missing], return_when=FIRST_COMPLETED)
        return [checked for i in ids for checked in self._result(i)]

    def _done(self, i: int) -> bool:
        future = self._futures.get(i)
        return future is not None and future.done()

    def _steal(self, i: int) -> bool:
        """Take batch `i` from the queue or the pool, if no worker has started it."""
        if i in self._queued:
            self._queued.remove(i)
            return True
        future = self._futures.get(i)
        # cancel() only succeeds for a batch still waiting in the pool, never a running one
        return future is not None and future.cancel()

    def _result(self, i: int) -> list[Checked]:
        result = self._results[i]
        if result is None:
            result = self._results[i] = self._futures[i].result()
            self._stats.batches_in_workers += 1
        return result

    def _submit(self) -> None:
        executor = self._pool.ready() if self._pool is not None else None
        if executor is not None:
            for i in self._queued:
                self._futures[i] = executor.submit(_worker_batch, *self._batches[i])
            self._queued.clear()


class IdentifierStage:
    """Validates, normalises and pseudonymises the identifier columns of source chunks.

    One stage serves one run: its cache (distinct value → outcome) and its per-domain
    deliverability answers live as long as it does. `workers` processes validate (1: all in
    this process); they start once a chunk brings `pool_threshold` new values. With
    `config.check_deliverability`, `deliverability` answers for each domain (default: DNS).
    `process` is thread-safe (calls are serialised). Close the stage, or use it as a context
    manager, to stop its worker processes.
    """

    def __init__(
        self,
        config: IdentifierConfig,
        pseudonymiser: Pseudonymiser,
        *,
        workers: int = 2,
        deliverability: DeliverabilityChecker | None = None,
        pool_threshold: int = POOL_THRESHOLD,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.config = config
        self.pseudonymiser = pseudonymiser
        self.workers = workers
        self.pool_threshold = pool_threshold
        """Values to check in one chunk that make the stage start its worker pool."""
        self.stats = IdentifierStats()
        self._deliverability: DeliverabilityChecker | None = None
        if config.check_deliverability:
            self._deliverability = deliverability or DnsDeliverabilityChecker(
                config.deliverability_timeout_seconds
            )
        self._caches = {kind: _Cache() for kind in IdentifierKind}
        # pseudonym -> normalised value of emails and phones, for gate-A-approved provider
        # requests in this run only: kept in memory until `take_vault` hands entries over
        self._vault: dict[IdentifierKind, dict[str, str]] = {
            IdentifierKind.EMAIL: {},
            IdentifierKind.PHONE: {},
        }
        self._domains: dict[str, Deliverability] = {}
        self._pool = _WorkerPool(config, workers) if workers > 1 else None
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes (if any were started). The cache is kept."""
        with self._lock:
            if self._pool is not None:
                self._pool.close()
        # the mail domains `email_key` remembers are the run's data: they do not outlive it
        _domain_forms.cache_clear()

    def worker_pids(self) -> list[int]:
        """Process ids of the running worker processes (empty until the pool is started)."""
        return self._pool.pids() if self._pool is not None else []

    def normalised(self, kind: IdentifierKind, pseudonyms: Sequence[str]) -> list[str | None]:
        """The normalised email or E.164 phone behind pseudonyms this stage made in this run.

        Raw identifiers exist only inside the identifier stage; this is how an enrichment
        request that policy gate A approved gets the value it must send. None where unknown,
        and for entries `take_vault` has taken: those are gone from the stage.
        """
        if kind not in self._vault:
            raise ValueError(f"no normalised values are kept for {kind}")
        vault = self._vault[kind]
        return [vault.get(p) for p in pseudonyms]

    def take_vault(self) -> dict[IdentifierKind, dict[str, str]]:
        """Take the pseudonym -> normalised value entries (emails, phones) collected since the
        previous call; the stage keeps none of them.

        An entry is collected when a value is validated, which happens once per spelling in a
        run: a later chunk with the same spelling finds it cached and adds nothing, one with
        another spelling (" Ann@X.org" after "ann@x.org") adds the same entry again. A chunk
        task seals and writes what it took, and the stage holds raw values no longer than that.
        """
        with self._lock:
            taken, self._vault = self._vault, {kind: {} for kind in self._vault}
        return taken

    def cache_size(self) -> int:
        """Distinct stripped values whose outcome is cached, all kinds together."""
        return sum(c.slots - 1 for c in self._caches.values())

    def process(self, frame: pd.DataFrame, source: SourceConfig) -> pd.DataFrame:
        """Identifier-stage output for one chunk of `source` (see the module docstring).

        Same rows, order and index as `frame`; raw identifiers and names are dropped, as are
        columns that are not canonical attribute fields.
        """
        if LINE not in frame.columns:
            raise ValueError("input frame has no 'line' column")
        with self._lock:
            return self._process(frame, source)

    def _process(self, frame: pd.DataFrame, source: SourceConfig) -> pd.DataFrame:
        rows = len(frame)
        self.stats.rows += rows
        try:
            chunk = self._check(frame, source)
        except BrokenProcessPool:
            self._broken()

        data: dict[str, Any] = {LINE: frame[LINE].array}
        data[KEY_ID] = _take([self.pseudonymiser.key_id], np.zeros(rows, dtype=np.intp))
        identified = np.zeros(rows, dtype=bool)
        for f in IDENTIFIER_FIELDS:
            kind = IdentifierKind(f.value)
            slots = chunk.plans[kind].slots[chunk.codes[kind]]
            pseudonyms, reasons = self._caches[kind].take(slots)
            data[f"{f}_pseudonym"] = _text(pseudonyms)
            data[f"{f}_reason"] = _text(reasons)
            identified |= pseudonyms.is_valid().to_numpy(zero_copy_only=False)
        data[COUNTRY] = _take([c for c, _ in chunk.countries], chunk.country_codes)
        data[COUNTRY_REASON] = _take(
            [r.value if r else None for _, r in chunk.countries], chunk.country_codes
        )
        data[ROW_REASON] = _take(
            [ReasonCode.ROW_NO_IDENTIFIER.value, None], identified.astype(np.intp)
        )
        _pass_through(frame, data)
        return _frame(data, frame)

    def _check(self, frame: pd.DataFrame, source: SourceConfig) -> _Chunk:
        """Check and pseudonymise a chunk's new values; map its distinct keys to cache slots."""
        rows = len(frame)

        def column(f: CanonicalField) -> pd.Series[str] | None:
            return frame[f.value] if f.value in frame.columns else None

        # Work is queued kind by kind as soon as it is known, so the workers are busy while
        # this process plans the next kind and pseudonymises the previous one.
        dispatch = _Dispatch(self.config, self._pool, self.stats)
        email_codes, email_keys = _factorize(column(CanonicalField.EMAIL), rows)
        email = self._plan(IdentifierKind.EMAIL, email_keys, _email_key)
        email_batches = self._queue(dispatch, IdentifierKind.EMAIL, email)

        country_codes, countries = _factorize(column(CanonicalField.COUNTRY), rows)
        country_checked = [check_country(c) for c in countries]
        phone_codes, phone_keys = self._phone_keys(
            column(CanonicalField.PHONE), rows, country_codes, country_checked, source
        )
        phone = self._plan(IdentifierKind.PHONE, phone_keys, _phone_key)
        phone_batches = self._queue(dispatch, IdentifierKind.PHONE, phone)

        cid_codes, cid_raws = _factorize(column(CanonicalField.CUSTOMER_ID), rows)
        cid_keys = list(zip(repeat(source.namespace), cid_raws))
        cid = self._plan(IdentifierKind.CUSTOMER_ID, cid_keys, _customer_id_key)
        cid_batches = self._queue(dispatch, IdentifierKind.CUSTOMER_ID, cid)

        email_checked = dispatch.results(email_batches)
        if self._deliverability is not None:
            email_checked = self._apply_deliverability(email_checked)
        self._commit(IdentifierKind.EMAIL, email, email_checked)
        self._commit(IdentifierKind.PHONE, phone, dispatch.results(phone_batches))
        self._commit(IdentifierKind.CUSTOMER_ID, cid, dispatch.results(cid_batches))
        return _Chunk(
            codes={
                IdentifierKind.EMAIL: email_codes,
                IdentifierKind.PHONE: phone_codes,
                IdentifierKind.CUSTOMER_ID: cid_codes,
            },
            plans={
                IdentifierKind.EMAIL: email,
                IdentifierKind.PHONE: phone,
                IdentifierKind.CUSTOMER_ID: cid,
            },
            country_codes=country_codes,
            countries=country_checked,
        )

    @staticmethod
    def _phone_keys(
        column: pd.Series[str] | None,
        rows: int,
        country_codes: _Codes,
        country_checked: list[Checked],
        source: SourceConfig,
    ) -> tuple[_Codes, list[tuple[str, str | None]]]:
        """Row codes and distinct (raw phone, region) keys of a chunk.

        The region is the row's country, else the source default. A number written "+..."
        does not depend on it: it gets region None, so it is checked once for all countries.
        """
        regions: list[str | None] = [None]
        region_slot: dict[str | None, int] = {None: 0}
        per_country = np.empty(len(country_checked), dtype=np.intp)
        for i, (code, _) in enumerate(country_checked):
            region = code or source.default_region
            per_country[i] = region_slot.setdefault(region, len(regions))
            if per_country[i] == len(regions):
                regions.append(region)
        raw_codes, raws = _factorize(column, rows)
        plus = np.fromiter(map(str.startswith, raws, repeat("+")), dtype=bool, count=len(raws))
        pairs = raw_codes.astype(np.int64) * len(regions) + np.where(
            plus[raw_codes], 0, per_country[country_codes]
        )
        codes, uniques = pd.factorize(pairs)
        keys = list(
            zip(
                [raws[p] for p in (uniques // len(regions)).tolist()],
                [regions[r] for r in (uniques % len(regions)).tolist()],
                strict=True,
            )
        )
        return np.asarray(codes, dtype=np.intp), keys

    def _plan(
        self,
        kind: IdentifierKind,
        keys: list[_K],
        stripped: Callable[[Hashable], tuple[Hashable, str]],
    ) -> _Plan:
        """Look a chunk's distinct keys up; strip the misses and collect what to validate."""
        cache = self._caches[kind]
        positions = cache.positions
        slots = cache.find(keys)
        misses = np.flatnonzero(slots < 0).tolist()
        self.stats.cache_hits[kind] += len(keys) - len(misses)
        plan = _Plan(slots=slots, todo=[], waiting=[], waiting_for=[], aliases=[], alias_of=[])
        todo: dict[Hashable, int] = {}
        for i in misses:
            raw = keys[i]
            key, value = stripped(raw)
            # a miss whose stripped form differs (" a@b.c") may still find that form cached
            slot = 0 if not value else (-1 if key == raw else positions.get(key, -1))
            if slot >= 0:
                slots[i] = positions[raw] = slot
                continue
            j = todo.setdefault(key, len(todo))
            plan.waiting.append(i)
            plan.waiting_for.append(j)
            if key != raw:
                plan.aliases.append(raw)
                plan.alias_of.append(j)
        plan.todo = list(todo)
        self.stats.validated[kind] += len(todo)
        return plan

    def _commit(self, kind: IdentifierKind, plan: _Plan, checked: list[Checked]) -> None:
        """Pseudonymise newly accepted key forms (here, in the parent) and cache outcomes."""
        cache = self._caches[kind]
        accepted = [i for i, (form, _) in enumerate(checked) if form is not None]
        pseudonyms: list[str | None] = [None] * len(checked)
        forms = [cast(str, checked[i][0]) for i in accepted]
        digests = self.pseudonymiser.digest_many(kind, forms)
        for i, digest in zip(accepted, digests, strict=True):
            pseudonyms[i] = digest
        if kind in self._vault:
            self._vault[kind].update(zip(digests, forms, strict=True))
        first = cache.add(pseudonyms, [r.value if r is not None else None for _, r in checked])
        cache.positions.update(zip(plan.todo, range(first, first + len(plan.todo)), strict=True))
        cache.positions.update(zip(plan.aliases, (first + j for j in plan.alias_of), strict=True))
        if plan.waiting:
            plan.slots[np.asarray(plan.waiting)] = first + np.asarray(plan.waiting_for)

    def _queue(self, dispatch: _Dispatch, kind: IdentifierKind, plan: _Plan) -> list[int]:
        """Queue a plan's values; start the pool once a chunk has enough to be worth it."""
        size = max(_MIN_BATCH, math.ceil(len(plan.todo) / (self.workers * _BATCHES_PER_WORKER)))
        batches = dispatch.add(kind, plan.todo, size)
        if self._pool is not None and dispatch.queued >= self.pool_threshold:
            self._pool.start()
        return batches

    def _broken(self) -> NoReturn:
        if self._pool is not None:
            self._pool.close(wait_for_workers=False)
        raise IdentifierStageError(
            "an identifier validation worker process died (BrokenProcessPool); rerun the flow"
        ) from None

    def _apply_deliverability(self, checked: list[Checked]) -> list[Checked]:
        """Reject addresses whose domain definitely accepts no mail (one lookup per domain)."""
        checker = self._deliverability
        if checker is None:
            return checked
        new = sorted({_domain(k) for k, _ in checked if k is not None} - self._domains.keys())
        if len(new) > 1:
            with ThreadPoolExecutor(max_workers=min(_DNS_THREADS, len(new))) as threads:
                answers = list(threads.map(_safe_check(checker), new))
        else:
            answers = [_safe_check(checker)(d) for d in new]
        self._domains.update(zip(new, answers, strict=True))
        self.stats.domains_checked += len(new)
        return [
            (None, ReasonCode.EMAIL_UNDELIVERABLE)
            if k is not None and self._domains[_domain(k)] is Deliverability.REJECTS
            else (k, r)
            for k, r in checked
        ]


def _safe_check(checker: DeliverabilityChecker) -> Callable[[str], Deliverability]:
    """A checker call that never raises: a failing checker knows nothing (UNKNOWN)."""

    def call(domain: str) -> Deliverability:
        try:
            return checker.check(domain)
        except Exception:
            return Deliverability.UNKNOWN

    return call


def _batches(items: list[_T], size: int) -> Iterator[list[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def process_rowwise(
    frame: pd.DataFrame,
    source: SourceConfig,
    config: IdentifierConfig,
    pseudonymiser: Pseudonymiser,
    *,
    deliverability: DeliverabilityChecker | None = None,
) -> pd.DataFrame:
    """Reference implementation: the same output as `IdentifierStage.process`, row by row.

    One `DataFrame.apply(axis=1)` call per row, no cache, one core: the oracle for tests and
    the naive baseline of `bench/identifiers.py`. Not for production use.
    """
    checker = deliverability if config.check_deliverability else None
    if config.check_deliverability and checker is None:
        checker = DnsDeliverabilityChecker(config.deliverability_timeout_seconds)
    kinds = [(f, IdentifierKind(f.value)) for f in IDENTIFIER_FIELDS]

    def one(row: pd.Series[Any]) -> tuple[str | None, ...]:
        def cell(f: CanonicalField) -> str:
            value = row.get(f.value, "")
            return value if isinstance(value, str) else ""

        country, country_reason = check_country(cell(CanonicalField.COUNTRY))
        region = country or source.default_region
        out: list[str | None] = []
        any_pseudonym = False
        for f, kind in kinds:
            if kind is IdentifierKind.EMAIL:
                key, reason = check_email(cell(f), config)
                if (
                    key is not None
                    and checker is not None
                    and _safe_check(checker)(_domain(key)) is Deliverability.REJECTS
                ):
                    key, reason = None, ReasonCode.EMAIL_UNDELIVERABLE
            elif kind is IdentifierKind.PHONE:
                key, reason = check_phone(cell(f), region, config)
            else:
                key, reason = check_customer_id(cell(f), source.namespace, config)
            pseudonym = pseudonymiser.digest(kind, key) if key is not None else None
            any_pseudonym |= pseudonym is not None
            out += [pseudonym, reason.value if reason else None]
        out += [country, country_reason.value if country_reason else None]
        out.append(None if any_pseudonym else ReasonCode.ROW_NO_IDENTIFIER.value)
        return tuple(out)

    names = [f"{f}_{part}" for f, _ in kinds for part in ("pseudonym", "reason")]
    names += [COUNTRY, COUNTRY_REASON, ROW_REASON]
    if len(frame):
        per_row = frame.apply(one, axis=1).tolist()
        columns = list(zip(*per_row, strict=True))
    else:
        columns = [() for _ in names]
    data: dict[str, Any] = {LINE: frame[LINE].array}
    data[KEY_ID] = pd.array([pseudonymiser.key_id] * len(frame), dtype=TEXT_DTYPE)
    for name, values in zip(names, columns, strict=True):
        data[name] = pd.array(list(values), dtype=TEXT_DTYPE)
    _pass_through(frame, data)
    return _frame(data, frame)
