"""Synthetic multi-source customer data with ground truth, for demos, tests and benchmarks.

`generate(people, out_dir)` invents `people` persons and writes what a small European web
shop would export about them, in the shapes such exports really have:

    out_dir/enrich.yaml              run config for these files (`profiles.config.RunConfig`)
    out_dir/data/crm_contacts.csv    CRM export: UTF-8 with BOM, CRLF, many countries
    out_dir/data/orders.csv          shop order lines over three years, returns as negatives
    out_dir/data/newsletter.csv      newsletter tool export: Latin-1, ';'-separated
    out_dir/data/preferences.csv     preference-centre answers, one row per declared topic
    out_dir/data/consents.csv        consent records per person and purpose
    out_dir/data/truth.csv           ground truth: one row per data row of every file
    out_dir/data/world.jsonl         ground truth for enrichment: each person's hashed
                                     identifiers and true interests (see below)
    out_dir/data/changes.csv         from the second night on: what changed since the first

A person appears in one to four of the customer sources, under identifiers that differ
between them (another e-mail address in the shop, phones written in other formats), and
the files carry the mess real exports carry, at realistic rates but never fewer than a
minimum count, so that every kind shows up even at a few hundred people: case and
whitespace noise, placeholders ("none@none.com", "n/a", "000000", "-1"), invalid e-mail
addresses and phone numbers, missing fields, shared household addresses, country columns
written as codes, English or local names, unknown countries, names in many scripts,
names that start like spreadsheet formulas, rows with a wrong number of fields and rows
that are not valid UTF-8.

`truth.csv` says, for each data row (`source`, physical `line`), which person it belongs
to and what the identifier stage must decide about it: the row-level reason
(`ROW_NO_IDENTIFIER`, `ROW_UNPARSEABLE`, or empty) and a `;`-joined, sorted list of
`field=CODE` pairs for every identifier or country field it must reject. The expectations
follow the identifier rules of DESIGN.md exactly (email-validator without DNS,
phonenumbers with the row's country or the source's default region, the placeholder lists
of `profiles.config.PlaceholderConfig`). They are derived from how each value was made,
not by running those libraries; `tests/profiles/test_synth.py` re-derives them
independently with the libraries.

`world.jsonl` is what the local provider server (`enrichers.testing`) observes: one JSON
object per person, in person order::

    {"person_id":"P000042","email_sha256":["5f1c..."],"phone_sha256":["9a0e..."],
     "interests":{"interest.cooking":0.712,"interest.outdoor.hiking":0.64}}

`email_sha256` holds the SHA-256 of every address the person has (primary, alternative, and
every valid one in any file, trimmed and lower-cased), `phone_sha256` that of the E.164
number: no address or number in clear. `interests` are the person's true interests as
taxonomy keys with a strength in [0.5, 1): each shop category (`outdoor.hiking` becomes
`interest.outdoor.hiking`) whose share of the person's purchase affinity is at least 0.15
(strength affinity / (affinity + 0.1)), each of the declared topics (`interest.travel`,
...) the person's affinity to related categories plus noise makes likely, and whatever the
person declared in the preference centre (interested "yes" adds the topic with a strength
of at least 0.7, "no" removes it) - for 85 % of the answers: the others were clicked
carelessly or are out of date, so that the preference centre, too, is a noisy view of the
truth, as the purchases and the providers are. It comes from its own random stream, so writing it
changes no other file, and a person keeps their interests from night to night.

Nothing here is a real person's data. Names are drawn from lists of common given and
family names and combined at random. E-mail addresses use only the domains reserved for
documentation (RFC 2606: example.com, example.net, example.org and their subdomains),
apart from the literal placeholders "test@test.com" and "none@none.com". Phone numbers come
from ranges regulators keep free for drama and fiction wherever such a range exists and
`phonenumbers` accepts it as valid:

    GB  Ofcom drama numbers: 020 7946 0xxx (London), 0113/0114/0116/0117/0118/0121/0131/
        0141/0151/0161 496 0xxx, 0191 498 0xxx, 028 9649 6xxx, 029 2018 0xxx. (07700 900xxx,
        01632 960xxx and 0115 496 0xxx are reserved too, but phonenumbers rejects them.)
    US  NANPA 555-0100 to 555-0199, in real area codes.
    CA  the same 555-01xx block, in Canadian area codes.
    AU  ACMA numbers for creative works: (02|03|07|08) 5550 xxxx and 7010 xxxx, and the 30
        listed mobile numbers 0491 570 006 ... 0491 579 760.
    FR  ARCEP plan national de numérotation (décision 2018-0881, annexe 1, 2.5.12):
        01 99 00, 02 61 91, 03 53 01, 04 65 71, 05 36 49 xx xx. (06 39 98 is rejected by
        phonenumbers.)
    SE  PTS: 070-174 06 05 to 070-174 06 99, 08-465 004 00..99, 031-390 06 00..99,
        040-628 04 00..99, 0980-31 92 00..99.
    DE  Bundesnetzagentur Mitteilung 148/2021 ("Drama Numbers"): 030 23125 xxx,
        069 90009 xxx, 040 66969 xxx, 0221 4710 xxx, 089 99998 xxx.

Each number is given to at most one person, so phones never link two persons by accident;
when a country's reserved range is used up (Sweden has 495 numbers, Germany 5,000), further
persons of that country have no phone. For the other countries (DK, NO, NL, PL, FI, GR,
GE, IE, ES, IT), for which no reserved range is known, numbers are random digits in mobile
ranges that phonenumbers accepts as valid. Such a number may be assigned to someone; here
it is only ever paired with an invented name and a reserved-domain address, and never used
to reach anyone.

Nights. `generate(..., night=K)` writes the same shop K-1 days later, so that the nightly
flow can be tried on "tomorrow's data": night K is night K-1 plus one day's changes, as of
`as_of` + K-1 days (night 1 is the data above, unchanged). Each night

    newcomers       about 1% of the first night's persons arrive (at least one), with
                    identifiers nobody has had: person ids continue after the last; CRM record
                    ids, customer numbers, logins and order numbers count on from the highest;
                    no address or phone number is given twice (a used-up reserved range leaves
                    newcomers without a number, as on the first night). Their rows carry the
                    first night's mess at its rates, without the minimum counts: rare mess is
                    drawn at random, so that it shows at its rate over the nights.
    orders          active customers order at their own rates; some lines of recent orders
                    come back.
    identity edits  about 0.5% of the persons: a CRM contact's address replaced by a new one
                    (preferably one its newsletter row shares, so a profile may split); a
                    number written into a CRM contact that had none (preferably of someone who
                    gave it to the preference centre under another address, so profiles may
                    join); newsletter signups with a new address (half of them by that night's
                    CRM movers).
    consents        some persons withdraw a purpose they granted, or grant one.

Rows keep their lines from night to night: new rows are appended at the end of each file,
edits change cells in place, and everything new happened after the previous export.
`changes.csv` lists every deliberate change since the first night, one row per data row
added or edited: `night, person_id, change, source, line`, where change is one of added,
email_changed, phone_added, new_orders, newsletter_signup, consent_changed. The run config
is the same every night. Night K is computed by replaying nights 2..K on top of the first,
each a small fraction of the first night's cost.

The output is a pure function of `(people, seed, as_of, night)`: the same arguments give
byte-identical files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import textwrap
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Final, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
import phonenumbers

from profiles.config import PlaceholderConfig
from profiles.countries import known_country_names, normalise_country
from profiles.types import CanonicalField, ReasonCode, SourceKind

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
_Scalar = TypeVar("_Scalar", bound=np.generic)

__all__ = ["SynthResult", "generate"]


@dataclass(frozen=True)
class SynthResult:
    """What `generate` wrote: the directory, its run config, and data rows per source."""

    out_dir: Path
    config_path: Path
    rows: dict[str, int]
    """Data rows (header excluded, unparseable rows included) per source name."""
    people: int
    """Persons in the data (from the second night on, the first night's plus newcomers)."""


@dataclass(frozen=True)
class _Range:
    """`count` consecutive national numbers: `prefix` followed by `width` digits from `first`."""

    prefix: str
    first: int
    count: int
    width: int


@dataclass(frozen=True)
class _Country:
    """A country customers come from: share, money, time zone and phone plan."""

    code: str
    weight: float
    currency: str
    eur_rate: float
    tz: str
    calling_code: int
    reserved: tuple[_Range, ...] = ()
    """Drama/fiction ranges; empty means numbers are random in `mobile_prefixes`."""
    mobile_prefixes: tuple[str, ...] = ()
    nsn_length: int = 0
    nonzero_after_prefix: bool = False


def _words(text: str) -> tuple[str, ...]:
    """Whitespace-separated words, for long literal lists of codes."""
    return tuple(text.split())


def _block(prefix: str, width: int, first: int = 0, count: int | None = None) -> _Range:
    return _Range(prefix, first, 10**width - first if count is None else count, width)


_GB_DRAMA = (
    _block("2079460", 3),
    *(_block(f"1{area}4960", 3) for area in ("13", "14", "16", "17", "18", "21")),
    *(_block(f"1{area}4960", 3) for area in ("31", "41", "51", "61")),
    _block("1914980", 3),
    _block("2896496", 3),
    _block("2920180", 3),
)
_US_AREAS = (
    *_words("212 718 917 646 347 213 310 323 415 510 408 312 773 202 617 206 303 305 404"),
    *_words("503 512 602 612 702 713 214 215 267 412 414 501 504 505 615 801 813 816 860"),
    *_words("901 916 919 952 970"),
)
_CA_AREAS = _words("416 647 437 604 778 236 514 438 403 587 613 343 902 780 825 204 306 905 289")
_AU_MOBILES = (
    *_words("570006 570156 570157 570158 570159 570110 570313 570737 571266 571491"),
    *_words("571804 572549 572665 572983 573770 573087 574118 574632 575254 575789"),
    *_words("576398 576801 577426 577644 578957 578148 578888 579212 579760 579455"),
)

_COUNTRIES: Final[tuple[_Country, ...]] = (
    _Country(
        "DK", 0.35, "DKK", 7.46, "Europe/Copenhagen", 45,
        mobile_prefixes=_words("20 21 22 23 24 25 29 30 31 40 41 42 50 51 52 53 60 61 71 81 93"),
        nsn_length=8, nonzero_after_prefix=True,
    ),
    _Country(
        "SE", 0.06, "SEK", 11.2, "Europe/Stockholm", 46,
        reserved=(
            _block("7017406", 2, first=5, count=95),
            _block("8465004", 2),
            _block("3139006", 2),
            _block("4062804", 2),
            _block("9803192", 2),
        ),
    ),
    _Country(
        "NO", 0.07, "NOK", 11.6, "Europe/Oslo", 47,
        mobile_prefixes=_words("40 41 46 47 48 90 91 92 93 94 95 96 97 98 99"),
        nsn_length=8,
    ),
    _Country(
        "DE", 0.10, "EUR", 1.0, "Europe/Berlin", 49,
        reserved=tuple(
            _block(p, 3) for p in ("3023125", "6990009", "4066969", "2214710", "8999998")
        ),
    ),
    _Country("GB", 0.09, "GBP", 0.85, "Europe/London", 44, reserved=_GB_DRAMA),
    _Country(
        "FR", 0.05, "EUR", 1.0, "Europe/Paris", 33,
        reserved=tuple(_block(p, 4) for p in ("19900", "26191", "35301", "46571", "53649")),
    ),
    _Country(
        "NL", 0.05, "EUR", 1.0, "Europe/Amsterdam", 31,
        mobile_prefixes=("61", "62", "63", "64", "65"), nsn_length=9,
    ),
    _Country(
        "PL", 0.04, "PLN", 4.3, "Europe/Warsaw", 48,
        mobile_prefixes=_words("50 51 53 57 60 66 69 72 73 78 79 88"), nsn_length=9,
    ),
    _Country(
        "FI", 0.03, "EUR", 1.0, "Europe/Helsinki", 358,
        mobile_prefixes=("40", "41", "44", "45", "50"), nsn_length=9,
    ),
    _Country(
        "US", 0.04, "USD", 1.08, "America/New_York", 1,
        reserved=tuple(_block(f"{area}55501", 2) for area in _US_AREAS),
    ),
    _Country(
        "AU", 0.02, "AUD", 1.63, "Australia/Sydney", 61,
        reserved=(
            *(_block(f"{state}{exchange}", 4) for state in "2378" for exchange in ("5550", "7010")),
            *(_Range(f"491{m}", 0, 1, 0) for m in _AU_MOBILES),
        ),
    ),
    _Country(
        "CA", 0.015, "CAD", 1.47, "America/Toronto", 1,
        reserved=tuple(_block(f"{area}55501", 2) for area in _CA_AREAS),
    ),
    _Country(
        "GR", 0.02, "EUR", 1.0, "Europe/Athens", 30,
        mobile_prefixes=("690", "693", "694", "695", "697", "698", "699"), nsn_length=10,
    ),
    _Country(
        "GE", 0.01, "GEL", 2.9, "Asia/Tbilisi", 995,
        mobile_prefixes=_words("555 557 558 568 571 574 577 591 592 593 595 596 597 598"),
        nsn_length=9,
    ),
    _Country(
        "IE", 0.015, "EUR", 1.0, "Europe/Dublin", 353,
        mobile_prefixes=("83", "85", "86", "87", "89"), nsn_length=9,
    ),
    _Country(
        "ES", 0.02, "EUR", 1.0, "Europe/Madrid", 34,
        mobile_prefixes=("60", "61", "62", "63", "64", "65", "66", "67", "68", "69"), nsn_length=9,
    ),
    _Country(
        "IT", 0.02, "EUR", 1.0, "Europe/Rome", 39,
        mobile_prefixes=_words("320 324 327 328 329 330 333 334 335 338 339 340 347 348 349"),
        nsn_length=10,
    ),
)  # fmt: skip
_CODES: Final = tuple(c.code for c in _COUNTRIES)
_DK: Final = _CODES.index("DK")

_UNKNOWN_COUNTRIES: Final = ("Atlantis", "EU", "Europe", "Scandinavia", "Nordics", "Narnia")


def _country_variants(code: str) -> tuple[str, ...]:
    """Ways a country column writes `code`: the code (upper and lower case), names."""
    names = known_country_names(code)
    variants = (code, code, code.lower(), *names[1:])
    return tuple(v for v in variants if normalise_country(v) == code)


_VARIANTS: Final = tuple(_country_variants(c) for c in _CODES)


_GIVEN: Final[dict[str, str]] = {
    "DK": "Søren Mette Jørgen Åse Frederik Ida Mads Sofie Kasper Line Bjørn Lærke Anders Trine "
    "Rasmus Signe Lars Anna Mikkel Camilla",
    "SE": "Åsa Björn Märta Lars Karin Oskar Elin Göran Ingrid Linnéa Johan Sofia Erik Maja",
    "NO": "Øyvind Kari Ingrid Håkon Solveig Ola Sigrid Eirik Åshild Bjørnar Nora Jonas",
    "DE": "Jürgen Sabine Günter Uwe Jörg Käthe Lena Maximilian Anja Klaus Heike Lukas Jana",
    "GB": "Oliver Amelia Harry Isla George Emily Jack Sophie Charlotte William Freya Alfie",
    "FR": "Hélène François Chloé Léa Jérôme Amélie Benoît Gaëlle Noël Zoé Émile Cécile",
    "NL": "Daan Sanne Bram Fleur Joost Anouk Sem Eva Thijs Lotte Ruben Iris",
    "PL": "Łukasz Małgorzata Paweł Agnieszka Wojciech Zofia Krzysztof Katarzyna Michał Joanna",
    "FI": "Aino Eero Päivi Jussi Sanna Matti Tiina Väinö Elina Juha",
    "US": "James Mary Robert Patricia Michael Jennifer David Linda Emily Daniel Ashley Tyler",
    "AU": "Jack Charlotte Lachlan Olivia Mia Noah Chloe Liam Matilda Cooper",
    "CA": "Liam Emma Noah Olivia Étienne Geneviève Lucas Chloé Mathis Léa",
    "GR": "Γιώργος:Giorgos Μαρία:Maria Νίκος:Nikos Ελένη:Eleni Δημήτρης:Dimitris "
    "Κατερίνα:Katerina Γιάννης:Giannis Σοφία:Sofia",
    "GE": "ნინო:Nino გიორგი:Giorgi მარიამ:Mariam დავით:Davit ანა:Ana ლუკა:Luka "
    "თამარ:Tamar ნიკა:Nika",
    "IE": "Seán Aoife Siobhán Ciarán Niamh Pádraig Róisín Conor Saoirse Oisín",
    "ES": "José María Jesús Lucía Álvaro Marta Begoña Íñigo Carmen Javier",
    "IT": "Giuseppe Francesca Niccolò Chiara Lorenzo Giulia Matteo Sara Luca Alessia",
}
_FAMILY: Final[dict[str, str]] = {
    "DK": "Jensen Nielsen Hansen Pedersen Andersen Christensen Larsen Sørensen Rasmussen "
    "Jørgensen Østergaard Møller Kjær Lund Bæk Holm Dahl Skovgaard",
    "SE": "Andersson Johansson Karlsson Nilsson Lindström Åberg Öberg Bergström Sjöberg "
    "Ekström Lundqvist",
    "NO": "Hansen Johansen Olsen Larsen Haugen Sæther Bakken Søreide Løvås Strøm",
    "DE": "Müller Schmidt Schneider Fischer Weiß Groß Schäfer Krüger Köhler Hoffmann Wagner Becker",
    "GB": "Smith Jones Taylor Brown Williams Wilson O'Connor Davies Evans Thomas Roberts Walker",
    "FR": "Lefèvre Dubois Martin Bernard Moreau Laurent Girard Rousseau Fontaine Lemaître "
    "Chevalier",
    "NL": "de_Vries van_Dijk Bakker Janssen Visser Smit de_Jong van_den_Berg Meijer Mulder",
    "PL": "Nowak Kowalski Wiśniewski Wójcik Kowalczyk Kamiński Lewandowski Zieliński "
    "Szymański Dąbrowski Woźniak",
    "FI": "Jääskeläinen Mäkinen Virtanen Korhonen Nieminen Hämäläinen Lähteenmäki",
    "US": "Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Anderson",
    "AU": "Smith Jones Williams Brown Wilson Taylor Nguyen Kelly",
    "CA": "Tremblay Gagnon Roy Côté Bouchard Smith MacDonald Wilson",
    "GR": "Παπαδόπουλος:Papadopoulos Παπαδάκης:Papadakis Γεωργίου:Georgiou "
    "Οικονόμου:Oikonomou Βασιλείου:Vasileiou Νικολάου:Nikolaou Καραγιάννης:Karagiannis",
    "GE": "ბერიძე:Beridze კაპანაძე:Kapanadze გელაშვილი:Gelashvili მაისურაძე:Maisuradze "
    "ლომიძე:Lomidze ჯავახიშვილი:Javakhishvili",
    "IE": "Murphy Kelly O'Sullivan Walsh Ó_Briain Byrne Ryan O'Connor",
    "ES": "García Fernández González Rodríguez López Martínez Sánchez Pérez Núñez Muñoz",
    "IT": "Rossi Russo Ferrari Esposito Bianchi Romano Colombo Ricci De_Luca",
}
# Names a spreadsheet would run as formulas if a CRM export were opened carelessly.
_FORMULA_NAMES: Final = (
    '=HYPERLINK("https://example.com/win","Click here")',
    "+Anna",
    "-Lars",
    "@Home",
    "=SUM(A1:A9)",
)
_LATIN_EXTRA = str.maketrans(
    {"ø": "o", "Ø": "O", "æ": "ae", "Æ": "Ae", "ß": "ss", "ł": "l", "Ł": "L", "đ": "d", "œ": "oe"}
)


def _ascii(name: str) -> str:
    """Lower-case ASCII form of a Latin-script name, as people type it into an address."""
    folded = unicodedata.normalize("NFKD", name.translate(_LATIN_EXTRA))
    return re.sub(r"[^a-z-]", "", "".join(c for c in folded if c.isascii()).lower()).strip("-")


def _name_pool(text: str) -> tuple[tuple[str, str], ...]:
    """(display, ascii) pairs; entries are `native:latin` or a Latin name ('_' = space)."""
    pool = []
    for entry in text.split():
        native, _, latin = entry.replace("_", " ").partition(":")
        pool.append((native, _ascii(latin or native)))
    return tuple(pool)


_GIVEN_POOLS: Final = tuple(_name_pool(_GIVEN[c]) for c in _CODES)
_FAMILY_POOLS: Final = tuple(_name_pool(_FAMILY[c]) for c in _CODES)


_DOMAINS: Final = (
    *("example.com", "example.net", "example.org", "mail.example.com", "post.example.net"),
    *("inbox.example.org", "webmail.example.net"),
)
_DOMAIN_WEIGHTS: Final = (0.35, 0.2, 0.15, 0.12, 0.08, 0.05, 0.05)

# Kinds of value written into an identifier column; the expected reason follows from them.
_E_MISSING, _E_GOOD, _E_SYNTAX, _E_PLACEHOLDER = 0, 1, 2, 3
_P_MISSING, _P_PLUS, _P_IDD, _P_NATIONAL, _P_TOKEN, _P_ZEROS_CC, _P_ZEROS, _P_SHORT, _P_WORDS = (
    range(9)
)
_P_WRONG_REGION = 9
_C_MISSING, _C_GOOD, _C_PLACEHOLDER = 0, 1, 2

_EMAIL_PLACEHOLDERS: Final = (
    *("none@none.com", "test@test.com", "n/a", "-1", "noreply@example.com", "unknown"),
    *("N/A", "TEST@TEST.COM", "no-reply@example.org"),
)
_PHONE_WORDS: Final = (
    *("see e-mail", "ring efter frokost", "kein Telefon", "ask at reception"),
    *("mobile unknown", "nicht angegeben"),
)
_CUSTOMER_ID_PLACEHOLDERS: Final = ("000000", "-1", "n/a", "0", "00000000")


def _broken_email(good: str, variant: int) -> str:
    """An address with a typo email-validator rejects; `variant` picks which kind."""
    local, _, domain = good.partition("@")
    doubled = local.replace(".", "..", 1) if "." in local else f"{local}..x"
    typos = (
        f"{local}{domain}",  # the @ forgotten
        f"{doubled}@{domain}",  # double dot
        f"{local[:2]} {local[2:]}@{domain}",  # a space typed inside
        f"{local}@",  # domain missing
        f"{local}@{domain.split('.', 1)[0]}",  # no dot in the domain at all
        f"{local}@{domain.replace('.', ',')}",  # comma for dot
        f"{local}@@{domain}",  # doubled @
    )
    return typos[variant % len(typos)]


def _noisy(email: str, variant: int) -> str:
    """The same address with case and surrounding-whitespace noise a human or a form adds."""
    local, _, domain = email.partition("@")
    match variant % 4:
        case 0:
            return f"  {local.title()}@{domain.title()} "
        case 1:
            return email.upper()
        case 2:
            return f"{email} "
        case _:
            return f"{local.capitalize()}@{domain.upper()}"


def _reserved_numbers(
    rng: np.random.Generator, country: _Country, k: int, taken: AbstractSet[str] = frozenset()
) -> list[str]:
    """`k` distinct national numbers from the country's reserved ranges (fewer if too few),
    none of them in `taken` (E.164).

    Numbers with fewer than three distinct digits (089 99998 999) are skipped: the identifier
    stage takes them for placeholders.
    """
    plus = f"+{country.calling_code}"
    sizes = np.array([r.count for r in country.reserved], dtype=np.int64)
    ends = np.cumsum(sizes)
    out: list[str] = []
    picks = rng.permutation(int(ends[-1]))
    if k == 0:
        return out  # after drawing, so that the numbers of later countries stay the same
    for pick in picks.tolist():
        w = int(np.searchsorted(ends, pick, side="right"))
        block = country.reserved[w]
        offset = pick - (int(ends[w]) - block.count) + block.first
        number = block.prefix + (f"{offset:0{block.width}d}" if block.width else "")
        if len(set(number)) >= 3 and plus + number not in taken:
            out.append(number)
            if len(out) == k:
                break
    return out


def _random_numbers(
    rng: np.random.Generator, country: _Country, k: int, taken: AbstractSet[str] = frozenset()
) -> list[str]:
    """`k` distinct valid-looking mobile numbers with at least three distinct digits, none of
    them in `taken` (E.164)."""
    plus = f"+{country.calling_code}"
    out: list[str] = []
    seen: set[str] = set()
    prefixes = country.mobile_prefixes
    while len(out) < k:
        n = (k - len(out)) * 2 + 8
        chosen = rng.integers(0, len(prefixes), n)
        for i, pre_idx in enumerate(chosen.tolist()):
            prefix = prefixes[pre_idx]
            rest = rng.integers(0, 10, country.nsn_length - len(prefix))
            if country.nonzero_after_prefix and rest[0] == 0:
                rest[0] = 1 + i % 9
            number = prefix + "".join(map(str, rest.tolist()))
            if number in seen or len(set(number)) < 3 or plus + number in taken:
                continue
            seen.add(number)
            out.append(number)
            if len(out) == k:
                break
    return out


@dataclass(frozen=True)
class _Phone:
    """One person's number in the formats people write it."""

    e164: str
    international: str
    national: str

    @property
    def idd(self) -> str:
        return "00" + self.international[1:]

    @property
    def national_digits(self) -> str:
        return re.sub(r"\D", "", self.national)


def _phone(calling_code: int, nsn: str) -> _Phone:
    number = phonenumbers.PhoneNumber(country_code=calling_code, national_number=int(nsn))
    fmt = phonenumbers.PhoneNumberFormat
    return _Phone(
        phonenumbers.format_number(number, fmt.E164),
        phonenumbers.format_number(number, fmt.INTERNATIONAL),
        phonenumbers.format_number(number, fmt.NATIONAL),
    )


_CRM_PHONE_FORMATS: Final = (0.15, 0.3, 0.1, 0.35, 0.1)
"""How often the CRM holds a phone in each `_phone_value` format."""

_CATEGORIES: Final = (
    *("outdoor.hiking", "home.kitchen", "fashion.women", "kids.toys", "beauty.skincare"),
    *("sports.running", "electronics.audio", "books.fiction", "garden.tools", "pets.dogs"),
)
_CATEGORY_EUR: Final = np.array([60, 35, 45, 25, 22, 70, 90, 14, 30, 20], dtype=np.float64)
_CATEGORY_POPULARITY: Final = np.array(
    [0.09, 0.14, 0.16, 0.1, 0.1, 0.08, 0.07, 0.11, 0.07, 0.08], dtype=np.float64
)
_INTEREST_TOPICS: Final = (
    *("interest.travel", "interest.cooking", "interest.sustainability", "interest.fitness"),
)
_INTEREST_RELATED: Final = (
    *(("outdoor.hiking",), ("home.kitchen",), ("garden.tools",)),
    ("sports.running", "outdoor.hiking"),
)
"""Per entry of `_INTEREST_TOPICS`, the categories whose affinity makes it likely."""
_PURPOSES: Final = ("enrichment", "profiling", "crm_export", "ads_export", "analytics")
_PURPOSE_SHARE: Final = (0.85, 0.7, 0.6, 0.45, 0.8)
_PURPOSE_GRANTED: Final = (0.9, 0.85, 0.88, 0.7, 0.9)

_FIRST_ORDER_NUMBER: Final = 1_000_001
_RETURNED: Final = 0.031
"""Share of order lines that come back."""
_DAY: Final = 86_400
_YEAR: Final = 365 * _DAY


@dataclass
class _People:
    """Column-wise attributes of every invented person; index i is person P{i+1}."""

    n: int
    country: IntArray
    given: list[str]
    family: list[str]
    given_ascii: list[str]
    family_ascii: list[str]
    """ASCII forms of the names, as the person types them into an address."""
    birth_year: IntArray
    since: IntArray
    """Epoch seconds when the person first dealt with the shop."""
    primary_email: list[str]
    alt_email: list[str]
    phone: list[_Phone | None]
    in_crm: BoolArray
    in_shop: BoolArray
    in_news: BoolArray
    in_prefs: BoolArray
    has_account: BoolArray
    affinity: FloatArray
    spend: FloatArray
    rate: FloatArray
    churned: BoolArray
    crm_ids: dict[int, str] = field(default_factory=dict)
    """First CRM record id of each CRM person (consent records point at it)."""
    customer_no: dict[int, str] = field(default_factory=dict)
    """Shop customer number of each account holder among the shoppers."""
    logins: dict[int, str] = field(default_factory=dict)
    """Preference-centre login of each member."""
    habits: dict[str, BoolArray] = field(default_factory=dict)
    """Per-person choices a source keeps making (e.g. which address the shop gets), drawn once
    for persons 0..len-1, so that later nights' records follow them."""
    id_width: int = 0
    """Digits of the person ids; 0: as many as the count needs (at least six). Set when
    persons are added, so that adding never renames anyone."""

    @cached_property
    def pids(self) -> list[str]:
        """Person ids P000001... (wider once there are a million or more persons)."""
        width = self.id_width or max(6, len(str(self.n)))
        return [f"P{i + 1:0{width}d}" for i in range(self.n)]

    def joined(self, other: _People) -> _People:
        """These persons followed by `other` (newcomers, who have no records yet)."""
        return _People(
            n=self.n + other.n,
            country=np.concatenate([self.country, other.country]),
            given=self.given + other.given,
            family=self.family + other.family,
            given_ascii=self.given_ascii + other.given_ascii,
            family_ascii=self.family_ascii + other.family_ascii,
            birth_year=np.concatenate([self.birth_year, other.birth_year]),
            since=np.concatenate([self.since, other.since]),
            primary_email=self.primary_email + other.primary_email,
            alt_email=self.alt_email + other.alt_email,
            phone=self.phone + other.phone,
            in_crm=np.concatenate([self.in_crm, other.in_crm]),
            in_shop=np.concatenate([self.in_shop, other.in_shop]),
            in_news=np.concatenate([self.in_news, other.in_news]),
            in_prefs=np.concatenate([self.in_prefs, other.in_prefs]),
            has_account=np.concatenate([self.has_account, other.has_account]),
            affinity=np.concatenate([self.affinity, other.affinity]),
            spend=np.concatenate([self.spend, other.spend]),
            rate=np.concatenate([self.rate, other.rate]),
            churned=np.concatenate([self.churned, other.churned]),
            crm_ids=dict(self.crm_ids),
            customer_no=dict(self.customer_no),
            logins=dict(self.logins),
            habits=dict(self.habits),
            id_width=self.id_width or max(6, len(str(self.n))),
        )


def _members(flags: BoolArray, among: IntArray | None) -> IntArray:
    """Indices of the persons with `flags`, everyone's or only those in `among`."""
    return np.flatnonzero(flags) if among is None else among[flags[among]]


def _habit(rng: np.random.Generator, people: _People, name: str, p: float) -> BoolArray:
    """Habit `name` of every person, true with probability `p`: drawn once per person (for
    the persons added since it was last drawn) and kept."""
    known = people.habits.get(name, np.zeros(0, bool))
    if len(known) < people.n:
        known = np.concatenate([known, rng.random(people.n - len(known)) < p])
        people.habits[name] = known
    return known


def _count(rng: np.random.Generator, n: int, rate: float, minimum: int, floors: bool) -> int:
    """How many of `n` to pick at `rate`: at least `minimum` with `floors`; without, the
    expected count rounded up or down at random, so that a night's few added rows still show
    rare mess at its rate over the nights instead of never."""
    if floors:
        return min(n, max(minimum, round(rate * n)))
    whole, part = divmod(rate * n, 1.0)
    return min(n, int(whole) + int(rng.random() < part))


def _pick(
    rng: np.random.Generator,
    candidates: IntArray,
    rate: float,
    minimum: int,
    *,
    floors: bool = True,
) -> IntArray:
    """A sorted random subset: `rate` of the candidates, but at least `minimum` if there are
    (without `floors`: `rate` of them, see `_count`)."""
    k = _count(rng, len(candidates), rate, minimum, floors)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    return np.sort(rng.choice(candidates, size=k, replace=False))


def _people(
    rng: np.random.Generator,
    n: int,
    as_of_s: int,
    as_of_year: int,
    *,
    newcomers: bool = False,
    taken_emails: AbstractSet[str] = frozenset(),
    taken_phones: AbstractSet[str] = frozenset(),
) -> _People:
    """`n` persons as of `as_of_s`; `newcomers` turned up within the last day, and take no
    address or number in `taken_emails` / `taken_phones`."""
    floors = not newcomers
    weights = np.array([c.weight for c in _COUNTRIES])
    country = rng.choice(len(_COUNTRIES), size=n, p=weights / weights.sum()).astype(np.int64)
    # Every country at least twice, so small data sets still span all phone plans (the first
    # night's persons do that; a night's newcomers keep the plain shares).
    forced = rng.permutation(n)[: min(n, 2 * len(_COUNTRIES))] if floors else np.zeros(0, int)
    country[forced] = np.arange(len(forced)) % len(_COUNTRIES)

    # Households: the second person of a pair lives with the first and shares their address.
    n_pairs = min(n // 4, _count(rng, n, 0.015, 2, floors))
    pair_pool = np.setdiff1d(np.arange(n), forced) if n > 4 * len(forced) else np.arange(n)
    pairs = rng.choice(pair_pool, size=(n_pairs, 2), replace=False) if n_pairs else None
    if pairs is not None:
        country[pairs[:, 1]] = country[pairs[:, 0]]

    given_idx = np.array([rng.integers(len(_GIVEN_POOLS[c])) for c in country.tolist()])
    family_idx = np.array([rng.integers(len(_FAMILY_POOLS[c])) for c in country.tolist()])
    if pairs is not None:
        family_idx[pairs[:, 1]] = family_idx[pairs[:, 0]]
    given = [_GIVEN_POOLS[c][g] for c, g in zip(country.tolist(), given_idx.tolist(), strict=True)]
    family = [
        _FAMILY_POOLS[c][f] for c, f in zip(country.tolist(), family_idx.tolist(), strict=True)
    ]

    age = np.clip(rng.normal(42, 15, n), 18, 88).astype(np.int64)
    minors = rng.random(n) < 0.04
    age[minors] = rng.integers(13, 18, int(minors.sum()))
    birth_year = as_of_year - age
    # Newcomers turned up after the previous export, at least two hours before this one, so
    # that each has time for a first order (see `_order_times`).
    earliest, latest = (2 * 3600, _DAY - 60) if newcomers else (20 * _DAY, 6 * _YEAR)
    since = as_of_s - rng.integers(earliest, latest, n)

    primary, alt = _emails(rng, given, family, birth_year, taken_emails)
    if pairs is not None:
        used = set(primary) | set(alt) | set(taken_emails)
        for k, (a, b) in enumerate(pairs.tolist()):
            local = f"{family[a][1] or 'home'}.family"
            address = f"{local}@{_DOMAINS[k % 3]}"
            while address in used:
                address = f"{local}{k}{len(used) % 97}@{_DOMAINS[k % 3]}"
            used.add(address)
            primary[a] = primary[b] = address

    phones = _assign_phones(rng, country, taken=taken_phones, floors=floors)

    in_crm = rng.random(n) < 0.68
    in_shop = rng.random(n) < 0.60
    in_news = rng.random(n) < 0.33
    in_prefs = rng.random(n) < 0.20
    nowhere = ~(in_crm | in_shop | in_news | in_prefs)
    coin = rng.random(n) < 0.5
    in_crm |= nowhere & coin
    in_shop |= nowhere & ~coin
    if pairs is not None:
        in_crm[pairs.ravel()] = True
    has_account = rng.random(n) < 0.85

    affinity = rng.dirichlet(np.full(len(_CATEGORIES), 0.5), n) * 0.7 + _CATEGORY_POPULARITY * 0.3
    return _People(
        n=n,
        country=country,
        given=[g[0] for g in given],
        family=[f[0] for f in family],
        given_ascii=[g[1] for g in given],
        family_ascii=[f[1] for f in family],
        birth_year=birth_year,
        since=since,
        primary_email=primary,
        alt_email=alt,
        phone=phones,
        in_crm=in_crm,
        in_shop=in_shop,
        in_news=in_news,
        in_prefs=in_prefs,
        has_account=has_account,
        affinity=affinity,
        spend=rng.lognormal(0.0, 0.4, n),
        rate=rng.gamma(0.9, 3.3, n),
        churned=rng.random(n) < 0.25,
    )


def _emails(
    rng: np.random.Generator,
    given: Sequence[tuple[str, str]],
    family: Sequence[tuple[str, str]],
    birth_year: IntArray,
    taken: AbstractSet[str] = frozenset(),
) -> tuple[list[str], list[str]]:
    """A primary and a different alternative address per person, all distinct and none in
    `taken`."""
    n = len(given)
    blocked = set(PlaceholderConfig().email_local_parts)
    pattern = rng.choice(7, size=n, p=[0.3, 0.15, 0.15, 0.08, 0.12, 0.1, 0.1])
    alt_pattern = rng.integers(0, 4, n)
    domain = rng.choice(len(_DOMAINS), size=n, p=_DOMAIN_WEIGHTS)
    alt_domain = (domain + rng.integers(1, len(_DOMAINS), n)) % len(_DOMAINS)
    number = rng.integers(10, 100, n)
    used: set[str] = set(taken)

    def unique(local: str, dom: str, i: int) -> str:
        if local in blocked:
            local = f"{local}{i % 89 + 10}"
        address = f"{local}@{dom}"
        suffix = i
        while address in used:
            address = f"{local}{suffix}@{dom}"
            suffix += n + 1
        used.add(address)
        return address

    primary, alt = [], []
    for i in range(n):
        f, last = given[i][1] or "customer", family[i][1] or "x"
        last = last.replace(" ", "")
        yy, nn = f"{int(birth_year[i]) % 100:02d}", str(int(number[i]))
        local = (
            f"{f}.{last}", f"{f}{last}", f"{f[0]}.{last}", f"{f}_{last}",
            f"{f}.{last}{nn}", f"{f}{yy}", f"{last}.{f}",
        )[int(pattern[i])]  # fmt: skip
        alt_local = (f"{f}{nn}", f"{f}.{last}.shop", f"{last}{f[0]}{nn}", f"{f[0]}{last}{yy}")[
            int(alt_pattern[i])
        ]
        primary.append(unique(local, _DOMAINS[int(domain[i])], i))
        alt.append(unique(alt_local, _DOMAINS[int(alt_domain[i])], i))
    return primary, alt


def _assign_phones(
    rng: np.random.Generator,
    country: IntArray,
    *,
    taken: AbstractSet[str] = frozenset(),
    floors: bool = True,
) -> list[_Phone | None]:
    """A number for about 72% of the persons, never one in `taken` (E.164); none once the
    country's reserved ranges are used up."""
    n = len(country)
    has_phone = rng.random(n) < 0.72
    phones: list[_Phone | None] = [None] * n
    for c, spec in enumerate(_COUNTRIES):
        members = np.flatnonzero((country == c) & has_phone)
        if floors:
            # The first members of a country in index order are guaranteed a phone, so that
            # small data sets always carry every phone plan.
            extra = np.flatnonzero(country == c)[:2]
            members = np.union1d(members, extra)
        if spec.reserved:
            numbers = _reserved_numbers(rng, spec, len(members), taken)
        else:
            numbers = _random_numbers(rng, spec, len(members), taken)
        for i, nsn in zip(members.tolist(), numbers, strict=False):
            phones[i] = _phone(spec.calling_code, nsn)
    return phones


@dataclass
class _Table:
    """One source file being built: columns, true persons and the kind of each identifier."""

    name: str
    header: tuple[str, ...]
    columns: list[list[str]]
    person: IntArray
    email: npt.NDArray[np.int8] | None = None
    phone: npt.NDArray[np.int8] | None = None
    region: list[str | None] | None = None
    customer_id: npt.NDArray[np.int8] | None = None
    country_column: int | None = None
    raw: dict[int, bytes] = field(default_factory=dict)
    """Rows written as these bytes instead (malformed rows); the truth calls them unparseable."""
    time: IntArray | None = None
    """Epoch seconds of each row's event, to merge a night's rows in time order."""

    def __len__(self) -> int:
        return len(self.person)

    def take(self, rows: IntArray) -> _Table:
        """A table of these rows, in this order."""
        index = rows.tolist()
        position = {old: new for new, old in enumerate(index)}
        return _Table(
            name=self.name,
            header=self.header,
            columns=[[col[i] for i in index] for col in self.columns],
            person=self.person[rows],
            email=None if self.email is None else self.email[rows],
            phone=None if self.phone is None else self.phone[rows],
            region=None if self.region is None else [self.region[i] for i in index],
            customer_id=None if self.customer_id is None else self.customer_id[rows],
            country_column=self.country_column,
            raw={position[i]: data for i, data in self.raw.items() if i in position},
            time=None if self.time is None else self.time[rows],
        )

    def extend(self, other: _Table) -> None:
        """Append `other`'s rows (same source) after these."""
        offset = len(self)
        for col, more in zip(self.columns, other.columns, strict=True):
            col.extend(more)
        self.person = np.concatenate([self.person, other.person])
        self.email = _cat(self.email, other.email)
        self.phone = _cat(self.phone, other.phone)
        self.customer_id = _cat(self.customer_id, other.customer_id)
        if self.region is not None:
            assert other.region is not None
            self.region.extend(other.region)
        self.raw.update({offset + i: data for i, data in other.raw.items()})
        self.time = _cat(self.time, other.time)


def _cat(
    first: npt.NDArray[_Scalar] | None, second: npt.NDArray[_Scalar] | None
) -> npt.NDArray[_Scalar] | None:
    """Both arrays one after the other; None if neither table has this column."""
    if first is None and second is None:
        return None
    assert first is not None, "appending rows with a column the table does not have"
    assert second is not None, "appending rows without a column the table has"
    return np.concatenate([first, second])


def _country_column(
    rng: np.random.Generator,
    people: _People,
    rows_person: IntArray,
    *,
    p_missing: float,
    p_unknown: float,
    min_missing: int,
    min_unknown: int,
    floors: bool = True,
) -> list[str]:
    countries = people.country[rows_person]
    choice = rng.integers(0, 1 << 30, len(rows_person))
    values = [
        _VARIANTS[c][k % len(_VARIANTS[c])]
        for c, k in zip(countries.tolist(), choice.tolist(), strict=True)
    ]
    everyone = np.arange(len(rows_person))
    missing = _pick(rng, everyone, p_missing, min_missing, floors=floors)
    unknown = _pick(rng, np.setdiff1d(everyone, missing), p_unknown, min_unknown, floors=floors)
    for i in missing.tolist():
        values[i] = ""
    for k, i in enumerate(unknown.tolist()):
        values[i] = _UNKNOWN_COUNTRIES[k % len(_UNKNOWN_COUNTRIES)]
    return values


def _spoil_only_email(
    rng: np.random.Generator,
    candidates: IntArray,
    rate: float,
    *,
    email: list[str],
    email_kind: npt.NDArray[np.int8],
    placeholder: str,
    floors: bool = True,
) -> IntArray:
    """Spoil the address of some rows it alone identifies (half broken, half `placeholder`),
    so they carry no usable identifier; returns those rows."""
    spoiled = _pick(rng, candidates, rate, 2, floors=floors)
    for k, i in enumerate(spoiled.tolist()):
        if k % 2:
            email[i], email_kind[i] = _broken_email(email[i], k), _E_SYNTAX
        else:
            email[i], email_kind[i] = placeholder, _E_PLACEHOLDER
    return spoiled


def _mess_emails(
    rng: np.random.Generator,
    values: list[str],
    kinds: npt.NDArray[np.int8],
    *,
    p_noise: float,
    p_invalid: float,
    min_invalid: int,
    p_placeholder: float,
    min_placeholder: int,
    eligible: IntArray | None = None,
    floors: bool = True,
) -> None:
    """Turn some good addresses into noisy, invalid or placeholder ones, in place."""
    good = np.flatnonzero(kinds == _E_GOOD)
    if eligible is not None:
        good = np.intersect1d(good, eligible)
    invalid = _pick(rng, good, p_invalid, min_invalid, floors=floors)
    rest = np.setdiff1d(good, invalid)
    placeholder = _pick(rng, rest, p_placeholder, min_placeholder, floors=floors)
    rest = np.setdiff1d(rest, placeholder)
    start = int(rng.integers(0, 7))
    for k, i in enumerate(invalid.tolist()):
        values[i] = _broken_email(values[i], start + k)
        kinds[i] = _E_SYNTAX
    start = int(rng.integers(0, len(_EMAIL_PLACEHOLDERS)))
    for k, i in enumerate(placeholder.tolist()):
        values[i] = _EMAIL_PLACEHOLDERS[(start + k) % len(_EMAIL_PLACEHOLDERS)]
        kinds[i] = _E_PLACEHOLDER
    for k, i in enumerate(_pick(rng, rest, p_noise, 1, floors=floors).tolist()):
        values[i] = _noisy(values[i], k)


def _phone_value(phone: _Phone, fmt: int) -> tuple[str, int]:
    """`phone` written in format `fmt` (0 E.164, 1 international, 2 00-prefix, 3 national,
    4 national digits only)."""
    match fmt:
        case 0:
            return phone.e164, _P_PLUS
        case 1:
            return phone.international, _P_PLUS
        case 2:
            return phone.idd, _P_IDD
        case 3:
            return phone.national, _P_NATIONAL
        case _:
            return phone.national_digits, _P_NATIONAL


def _mess_phones(
    rng: np.random.Generator,
    people: _People,
    rows_person: IntArray,
    values: list[str],
    kinds: npt.NDArray[np.int8],
    *,
    p_placeholder: float,
    min_placeholder: int,
    p_invalid: float,
    min_invalid: int,
    keep: IntArray | None = None,
    floors: bool = True,
) -> None:
    """Replace some phones (not those in `keep`) with placeholders and invalid values."""
    present = np.flatnonzero(kinds != _P_MISSING)
    if keep is not None:
        present = np.setdiff1d(present, keep)
    placeholder = _pick(rng, present, p_placeholder, min_placeholder, floors=floors)
    invalid = _pick(rng, np.setdiff1d(present, placeholder), p_invalid, min_invalid, floors=floors)
    start = int(rng.integers(0, 4))
    for k, i in enumerate(placeholder.tolist()):
        cc = _COUNTRIES[int(people.country[rows_person[i]])].calling_code
        values[i], kinds[i] = (
            ("000000", _P_ZEROS),
            ("n/a", _P_TOKEN),
            ("-1", _P_TOKEN),
            (f"+{cc} 00 00 00 00", _P_ZEROS_CC),
        )[(start + k) % 4]
    start = int(rng.integers(0, 2 * len(_PHONE_WORDS)))
    for k, i in enumerate(invalid.tolist()):
        if (start + k) % 2:
            values[i], kinds[i] = _PHONE_WORDS[(start + k) // 2 % len(_PHONE_WORDS)], _P_WORDS
        else:
            cc = _COUNTRIES[int(people.country[rows_person[i]])].calling_code
            digits = rng.permutation(np.arange(1, 10))[:3]
            values[i] = f"+{cc} {''.join(map(str, digits.tolist()))}"
            kinds[i] = _P_SHORT


def _raw_line(values: Sequence[str], delimiter: str) -> str | None:
    """The row joined without quoting, or None if a value would need quotes."""
    if any(delimiter in v or '"' in v or "\r" in v or "\n" in v for v in values):
        return None
    return delimiter.join(values)


def _break_rows(
    rng: np.random.Generator,
    table: _Table,
    *,
    delimiter: str,
    encoding: str,
    rate: float,
    minimum: int,
    column: int,
    extra: str,
    floors: bool = True,
) -> None:
    """Write some rows with a wrong number of fields: an unquoted delimiter inside a value,
    a field left out, or a stray delimiter at the end of the line."""
    wanted = _count(rng, len(table), rate, minimum, floors)
    done = 0
    for i in rng.permutation(len(table)).tolist():
        if done == wanted:
            break
        values = [col[i] for col in table.columns]
        if i in table.raw or _raw_line(values, delimiter) is None:
            continue
        match done % 3:
            case 0:
                values[column] += delimiter + extra
            case 1:
                del values[-2]
            case _:
                values.append("")
        table.raw[i] = delimiter.join(values).encode(encoding, "replace")
        done += 1


def _crm(
    rng: np.random.Generator,
    people: _People,
    as_of_s: int,
    *,
    newcomers: IntArray | None = None,
    last_id: int = 10_450_000,
) -> _Table:
    """CRM contacts, ordered by creation, with record ids counting up from after `last_id`.

    With `newcomers`, only theirs: a night's addition, created since they turned up, with
    mess at its rates but no minimum counts.
    """
    floors = newcomers is None
    persons = _members(people.in_crm, newcomers)
    duplicates = _pick(rng, persons, 0.02, 2, floors=floors)
    row_person = np.concatenate([persons, duplicates])
    is_dup = np.concatenate([np.zeros(len(persons), bool), np.ones(len(duplicates), bool)])
    since = people.since[row_person]
    if floors:
        created = since + rng.integers(0, 3 * _DAY, len(row_person))
        later = rng.integers(30 * _DAY, 2 * _YEAR, len(row_person))
        created[is_dup] = np.minimum(created[is_dup] + later[is_dup], as_of_s - _DAY)
    else:
        # Newcomers turned up within the last day: their contacts (and the odd duplicate)
        # were created between then and the export.
        created = since + (rng.random(len(row_person)) * (as_of_s - 60 - since)).astype(np.int64)
    order = np.argsort(created, kind="stable")
    row_person, is_dup, created = row_person[order], is_dup[order], created[order]
    n = len(row_person)

    record_ids = last_id + np.cumsum(rng.integers(1, 60, n))
    for i, p in zip(range(n), row_person.tolist(), strict=True):
        people.crm_ids.setdefault(p, str(int(record_ids[i])))

    country = _country_column(
        rng,
        people,
        row_person,
        p_missing=0.025,
        p_unknown=0.012,
        min_missing=2,
        min_unknown=3,
        floors=floors,
    )
    region = [normalise_country(v) if v else None for v in country]

    # Addresses: mostly the primary; duplicates carry the other address or none.
    use_alt = (rng.random(n) < 0.05) | (is_dup & (rng.random(n) < 0.6))
    missing = (rng.random(n) < 0.07) | (is_dup & ~use_alt)
    email = [
        "" if m else (people.alt_email[p] if a else people.primary_email[p])
        for p, a, m in zip(row_person.tolist(), use_alt.tolist(), missing.tolist(), strict=True)
    ]
    email_kind = np.where(missing, _E_MISSING, _E_GOOD).astype(np.int8)
    _mess_emails(
        rng,
        email,
        email_kind,
        p_noise=0.06,
        p_invalid=0.01,
        min_invalid=7,
        p_placeholder=0.008,
        min_placeholder=5,
        floors=floors,
    )

    fmt = rng.choice(5, size=n, p=_CRM_PHONE_FORMATS)
    # A national number in a row without a usable country has no region to parse it with.
    force_no_region = _pick(
        rng,
        np.flatnonzero(
            np.array([people.phone[p] is not None for p in row_person.tolist()], bool) & ~is_dup
        ),
        0.0,
        2,
        floors=floors,
    )
    for k, i in enumerate(force_no_region.tolist()):
        country[i], region[i] = ("", None) if k % 2 else (_UNKNOWN_COUNTRIES[k % 6], None)
        fmt[i] = 3
    phone = [""] * n
    phone_kind = np.zeros(n, np.int8)
    present = rng.random(n) < 0.9
    present[force_no_region] = True
    for i, p in enumerate(row_person.tolist()):
        number = people.phone[p]
        if number is not None and present[i]:
            phone[i], phone_kind[i] = _phone_value(number, int(fmt[i]))
    _mess_phones(
        rng,
        people,
        row_person,
        phone,
        phone_kind,
        p_placeholder=0.008,
        min_placeholder=4,
        p_invalid=0.008,
        min_invalid=4,
        keep=force_no_region,
        floors=floors,
    )

    given, family = _names(rng, people, row_person, 0.001, len(_FORMULA_NAMES), floors=floors)
    birth = [
        "" if skip else str(int(people.birth_year[p]))
        for p, skip in zip(row_person.tolist(), (rng.random(n) < 0.12).tolist(), strict=True)
    ]
    return _Table(
        name="crm",
        header=(
            *("Record ID", "First Name", "Last Name", "Email", "Phone Number"),
            *("Country/Region", "Year of Birth", "Create Date"),
        ),
        columns=[
            [str(int(r)) for r in record_ids],
            given,
            family,
            email,
            phone,
            country,
            birth,
            [t.replace("T", " ") for t in _utc_text(created)],
        ],
        person=row_person,
        email=email_kind,
        phone=phone_kind,
        region=region,
        customer_id=np.full(n, _C_GOOD, np.int8),
        country_column=5,
        time=created,
    )


def _names(
    rng: np.random.Generator,
    people: _People,
    rows_person: IntArray,
    rate: float,
    minimum: int,
    *,
    floors: bool = True,
) -> tuple[list[str], list[str]]:
    """Given and family names as entered: some shouted, some formula-like."""
    given = [people.given[p] for p in rows_person.tolist()]
    family = [people.family[p] for p in rows_person.tolist()]
    everyone = np.arange(len(rows_person))
    for i in _pick(rng, everyone, 0.02, 0, floors=floors).tolist():
        family[i] = family[i].upper()
    start = int(rng.integers(0, len(_FORMULA_NAMES)))
    for k, i in enumerate(_pick(rng, everyone, rate, minimum, floors=floors).tolist()):
        name = _FORMULA_NAMES[(start + k) % len(_FORMULA_NAMES)]
        if (start + k) % 2:
            family[i] = name
        else:
            given[i] = name
    return given, family


def _order_times(
    rng: np.random.Generator, people: _People, as_of_s: int, newcomers: IntArray | None = None
) -> tuple[IntArray, IntArray]:
    """(person, time) of every order, by time: each shopper buys at their own Poisson rate
    while active; churned shoppers stopped buying somewhere in the three-year window. Every
    shopper has bought at least once (the `newcomers`, if given, once or twice since they
    turned up)."""
    shoppers = _members(people.in_shop, newcomers)
    start = np.maximum(people.since[shoppers], as_of_s - 3 * _YEAR)
    end = np.full(len(shoppers), as_of_s - 3600, dtype=np.int64)
    churned = people.churned[shoppers]
    stop = start + (rng.uniform(0.15, 0.85, len(shoppers)) * (end - start)).astype(np.int64)
    end[churned] = stop[churned]
    counts = np.maximum(1, rng.poisson(people.rate[shoppers] * (end - start) / _YEAR))
    order_person = np.repeat(shoppers, counts)
    offset = rng.random(len(order_person)) * np.repeat(end - start, counts)
    order_ts = np.repeat(start, counts) + offset.astype(np.int64)
    by_time = np.argsort(order_ts, kind="stable")
    return order_person[by_time], order_ts[by_time]


def _order_identifiers(
    rng: np.random.Generator, people: _People, order_person: IntArray, floors: bool
) -> tuple[list[str], npt.NDArray[np.int8], list[str], npt.NDArray[np.int8]]:
    """Customer ref and checkout address of each order, with their kinds."""
    n = len(order_person)
    guest = ~people.has_account[order_person] | (rng.random(n) < 0.05)
    _customer_numbers(rng, people)
    customer_no = people.customer_no
    ref = [
        "" if g else customer_no[p]
        for p, g in zip(order_person.tolist(), guest.tolist(), strict=True)
    ]
    ref_kind = np.where(guest, _C_MISSING, _C_GOOD).astype(np.int8)
    start = int(rng.integers(0, len(_CUSTOMER_ID_PLACEHOLDERS)))
    for k, i in enumerate(_pick(rng, np.flatnonzero(~guest), 0.004, 3, floors=floors).tolist()):
        ref[i] = _CUSTOMER_ID_PLACEHOLDERS[(start + k) % len(_CUSTOMER_ID_PLACEHOLDERS)]
        ref_kind[i] = _C_PLACEHOLDER

    uses_alt = _habit(rng, people, "shop_alt", 0.3)
    email = [
        people.alt_email[p] if uses_alt[p] else people.primary_email[p]
        for p in order_person.tolist()
    ]
    email_kind = np.full(n, _E_GOOD, np.int8)
    for i in _pick(rng, np.arange(n), 0.005, 2, floors=floors).tolist():
        email[i], email_kind[i] = "", _E_MISSING
    # Guests whose address is unusable leave nothing to identify them by.
    anonymous = _spoil_only_email(
        rng,
        np.flatnonzero(guest & (email_kind == _E_GOOD)),
        0.0,
        email=email,
        email_kind=email_kind,
        placeholder="none@none.com",
        floors=floors,
    )
    _mess_emails(
        rng,
        email,
        email_kind,
        p_noise=0.05,
        p_invalid=0.004,
        min_invalid=3,
        p_placeholder=0.003,
        min_placeholder=2,
        eligible=np.setdiff1d(np.arange(n), anonymous),
        floors=floors,
    )
    return ref, ref_kind, email, email_kind


@dataclass(frozen=True)
class _Lines:
    """Order lines, column-wise."""

    order: IntArray
    number: IntArray
    category: IntArray
    quantity: IntArray
    amount: FloatArray
    time: IntArray


def _order_lines(
    rng: np.random.Generator, people: _People, order_person: IntArray, order_ts: IntArray
) -> _Lines:
    """One to six lines per order; category from the buyer's affinities, Gamma prices."""
    lines = 1 + np.minimum(rng.poisson(0.55, len(order_person)), 5)
    order = np.repeat(np.arange(len(order_person)), lines)
    number = np.arange(len(order)) - np.repeat(np.cumsum(lines) - lines, lines) + 1
    person = order_person[order]
    cumulative = np.cumsum(people.affinity[person], axis=1)
    draw = rng.random(len(order))[:, None] * cumulative[:, -1:]
    category = np.minimum((draw > cumulative).sum(axis=1), len(_CATEGORIES) - 1)
    quantity = np.minimum(rng.geometric(0.78, len(order)), 6)
    unit_eur = _CATEGORY_EUR[category] * rng.gamma(3.0, 1 / 3, len(order))
    rate = np.array([c.eur_rate for c in _COUNTRIES])[people.country[person]]
    amount = np.round(quantity * unit_eur * people.spend[person] * rate, 2)
    return _Lines(order, number, category, quantity, amount, order_ts[order])


def _with_returns(rng: np.random.Generator, lines: _Lines, as_of_s: int) -> _Lines:
    """The lines plus, for about 3% of them, a line of a later return order "R<order>" with
    negative quantity and amount; everything sorted by time."""
    returned = np.flatnonzero(
        (rng.random(len(lines.order)) < _RETURNED) & (lines.time < as_of_s - 3 * _DAY)
    )
    # One return order per order, so its lines share a time.
    delay = rng.integers(2 * _DAY, 30 * _DAY, int(lines.order.max(initial=0)) + 1)
    back = np.minimum(lines.time[returned] + delay[lines.order[returned]], as_of_s - 600)
    back_number = np.ones(len(returned), np.int64)
    for k in range(1, len(returned)):
        if lines.order[returned[k]] == lines.order[returned[k - 1]]:
            back_number[k] = back_number[k - 1] + 1
    src = np.concatenate([np.arange(len(lines.order)), returned])
    sign = np.concatenate([np.ones(len(lines.order), np.int64), -np.ones(len(returned), np.int64)])
    time = np.concatenate([lines.time, back])
    number = np.concatenate([lines.number, back_number])
    # Return orders are told apart by their negative order index.
    order = lines.order[src] * sign - (sign < 0)
    final = np.lexsort((number, order, time))
    src = src[final]
    return _Lines(
        order[final],
        number[final],
        lines.category[src],
        lines.quantity[src] * sign[final],
        lines.amount[src] * sign[final],
        time[final],
    )


def _orders(
    rng: np.random.Generator,
    people: _People,
    order_person: IntArray,
    order_ts: IntArray,
    as_of_s: int,
    *,
    first_order: int = 0,
    floors: bool = True,
) -> _Table:
    """Lines of these orders (by time) and of their returns; order numbers count up from
    `first_order`."""
    ref, ref_kind, email, email_kind = _order_identifiers(rng, people, order_person, floors)
    rows = _with_returns(rng, _order_lines(rng, people, order_person, order_ts), as_of_s)
    is_return = rows.order < 0
    order = np.where(is_return, -rows.order - 1, rows.order)
    row_person = order_person[order]
    country = people.country[row_person]
    currency = [c.currency for c in _COUNTRIES]
    return _Table(
        name="shop_orders",
        header=(
            *("order_number", "line_no", "customer_ref", "checkout_email", "ordered_at"),
            *("product_category", "qty", "line_amount", "currency"),
        ),
        columns=[
            [
                f"R{o + _FIRST_ORDER_NUMBER}" if r else str(o + _FIRST_ORDER_NUMBER)
                for o, r in zip((order + first_order).tolist(), is_return.tolist(), strict=True)
            ],
            [str(x) for x in rows.number.tolist()],
            [ref[o] for o in order.tolist()],
            [email[o] for o in order.tolist()],
            _local_text(rows.time, country),
            [_CATEGORIES[c] for c in rows.category.tolist()],
            [str(q) for q in rows.quantity.tolist()],
            [f"{a:.2f}" for a in rows.amount.tolist()],
            [currency[c] for c in country.tolist()],
        ],
        person=row_person,
        email=email_kind[order],
        customer_id=ref_kind[order],
        time=rows.time,
    )


def _customer_numbers(rng: np.random.Generator, people: _People) -> None:
    """Give shop customer numbers ("C0012345") to the account holders without one yet, counting
    up from the highest given so far."""
    holders = np.flatnonzero(people.in_shop & people.has_account)
    known = people.customer_no
    if known:
        holders = holders[np.array([p not in known for p in holders.tolist()], bool)]
    last = max((int(v[1:]) for v in known.values()), default=10_000)
    numbers = last + np.cumsum(rng.integers(1, 40, len(holders)))
    shuffled = rng.permutation(holders)
    known.update({int(p): f"C{int(n):07d}" for p, n in zip(shuffled, numbers, strict=True)})


def _newsletter_signups(
    rng: np.random.Generator, people: _People, as_of_s: int, newcomers: IntArray | None = None
) -> tuple[IntArray, list[str], IntArray]:
    """(person, address, time) of every signup (only the `newcomers'`, if given), by time."""
    readers = _members(people.in_news, newcomers)
    # signed up a second time with the other address
    again = _pick(rng, readers, 0.03, 1, floors=newcomers is None)
    row_person = np.concatenate([readers, again])
    second = np.concatenate([np.zeros(len(readers), bool), np.ones(len(again), bool)])
    since = people.since[row_person]
    signed = since + (rng.random(len(row_person)) * (as_of_s - since)).astype(np.int64)
    order = np.argsort(signed, kind="stable")
    row_person, second, signed = row_person[order], second[order], signed[order]

    use_alt = second ^ (rng.random(len(row_person)) < 0.25)
    email = [
        people.alt_email[p] if a else people.primary_email[p]
        for p, a in zip(row_person.tolist(), use_alt.tolist(), strict=True)
    ]
    return row_person, email, signed


def _newsletter(
    rng: np.random.Generator,
    people: _People,
    row_person: IntArray,
    email: list[str],
    signed: IntArray,
    *,
    floors: bool = True,
) -> _Table:
    """The newsletter rows of these signups, as the tool exports them."""
    n = len(row_person)
    email_kind = np.full(n, _E_GOOD, np.int8)
    for i in _pick(rng, np.arange(n), 0.002, 1, floors=floors).tolist():
        email[i], email_kind[i] = "", _E_MISSING
    _mess_emails(
        rng,
        email,
        email_kind,
        p_noise=0.05,
        p_invalid=0.015,
        min_invalid=3,
        p_placeholder=0.006,
        min_placeholder=2,
        floors=floors,
    )
    given, _ = _names(rng, people, row_person, 0.001, 2, floors=floors)
    for i in _pick(rng, np.arange(n), 0.15, 0, floors=floors).tolist():
        given[i] = ""
    # The newsletter tool stores Latin-1: a country name outside it arrives as '?'s.
    country = [
        v.encode("latin-1", "replace").decode("latin-1")
        for v in _country_column(
            rng,
            people,
            row_person,
            p_missing=0.08,
            p_unknown=0.01,
            min_missing=1,
            min_unknown=2,
            floors=floors,
        )
    ]
    return _Table(
        name="newsletter",
        header=("E-mail address", "First name", "Signed up", "Country"),
        columns=[
            email,
            given,
            [t.replace("T", " ")[:16] for t in _utc_text(signed)],
            country,
        ],
        person=row_person,
        email=email_kind,
        country_column=3,
        time=signed,
    )


def _preferences(
    rng: np.random.Generator, people: _People, as_of_s: int, newcomers: IntArray | None = None
) -> _Table:
    """Preference-centre answers of its members (only the `newcomers'`, if given), member by
    member; logins count up from the highest given so far."""
    floors = newcomers is None
    members = _members(people.in_prefs, newcomers)
    last = max((int(v[3:], 16) for v in people.logins.values()), default=0x3A000000)
    logins = last + np.cumsum(rng.integers(1, 5000, len(members)))
    login = people.logins
    login.update(
        {int(p): f"pc-{int(x):08x}" for p, x in zip(rng.permutation(members), logins, strict=True)}
    )
    topics = np.array((*_CATEGORIES, *_INTEREST_TOPICS), dtype=object)
    weights = np.hstack([people.affinity[members], np.full((len(members), 4), 0.06)])
    keys = np.log(weights) - np.log(-np.log(rng.random(weights.shape)))
    ranked = np.argsort(-keys, axis=1)
    k = 1 + np.minimum(rng.poisson(1.6, len(members)), len(topics) - 1)

    row_person = np.repeat(members, k)
    topic_idx = ranked[np.repeat(np.arange(len(members)), k), _ranks(k)]
    n = len(row_person)
    since = np.maximum(people.since[row_person], as_of_s - 2 * _YEAR)
    updated = since + (rng.random(n) * (as_of_s - since)).astype(np.int64)
    updated = np.minimum(updated, as_of_s - 60)

    uses_alt = _habit(rng, people, "prefs_alt", 0.15)
    email = [
        people.alt_email[p] if uses_alt[p] else people.primary_email[p] for p in row_person.tolist()
    ]
    email_kind = np.full(n, _E_GOOD, np.int8)
    for i in _pick(rng, np.arange(n), 0.03, 0, floors=floors).tolist():
        email[i], email_kind[i] = "", _E_MISSING
    _mess_emails(
        rng,
        email,
        email_kind,
        p_noise=0.04,
        p_invalid=0.005,
        min_invalid=2,
        p_placeholder=0.003,
        min_placeholder=1,
        floors=floors,
    )

    # The preference centre belongs to the Danish shop: phones without +/00 parse as Danish,
    # so Danes write them nationally and everyone else with their country code.
    gives_mobile = _habit(rng, people, "prefs_mobile", 0.65)
    draw = rng.random(n)
    danish_fmt = np.array([3, 4, 1, 0, 2])[np.searchsorted([0.45, 0.55, 0.8, 0.9], draw, "right")]
    foreign_fmt = np.array([1, 0, 2])[np.searchsorted([0.6, 0.8], draw, "right")]
    phone = [""] * n
    phone_kind = np.zeros(n, np.int8)
    foreign_national: list[tuple[int, _Phone]] = []
    for i, p in enumerate(row_person.tolist()):
        number = people.phone[p]
        if number is None or not gives_mobile[p]:
            continue
        danish = people.country[p] == _DK
        fmt = int(danish_fmt[i] if danish else foreign_fmt[i])
        phone[i], phone_kind[i] = _phone_value(number, fmt)
        if not danish and len(number.national_digits) != 8:
            foreign_national.append((i, number))
    # A foreign national number parsed as Danish has the wrong length: invalid, not misread.
    wrong = _pick(rng, np.arange(len(foreign_national)), 0.01, 1, floors=floors)
    for i, number in (foreign_national[j] for j in wrong.tolist()):
        phone[i], phone_kind[i] = number.national, _P_WRONG_REGION
    _mess_phones(
        rng,
        people,
        row_person,
        phone,
        phone_kind,
        p_placeholder=0.005,
        min_placeholder=1,
        p_invalid=0.005,
        min_invalid=1,
        floors=floors,
    )

    given, _ = _names(rng, people, row_person, 0.0005, 1, floors=floors)
    interested = np.where(rng.random(n) < 0.82, "yes", "no")
    return _Table(
        name="preference_centre",
        header=("Login ID", "Name", "Email address", "Mobile", "Topic", "Interested", "Updated at"),
        columns=[
            [login[p] for p in row_person.tolist()],
            given,
            email,
            phone,
            [str(t) for t in topics[topic_idx]],
            [str(x) for x in interested],
            _local_text(updated, people.country[row_person]),
        ],
        person=row_person,
        email=email_kind,
        phone=phone_kind,
        region=["DK"] * n,
        customer_id=np.full(n, _C_GOOD, np.int8),
        time=updated,
    )


def _ranks(k: IntArray) -> IntArray:
    """0..k_i-1 for each i, concatenated."""
    first = np.repeat(np.cumsum(k) - k, k)
    return np.arange(int(k.sum())) - first


def _cp1252_rows(rng: np.random.Generator, table: _Table, *, floors: bool = True) -> None:
    """A few rows arrive in Windows-1252 inside the UTF-8 file (an old form handler)."""
    candidates = []
    for i, name in enumerate(table.columns[1]):
        if any(not c.isascii() for c in name):
            try:
                name.encode("cp1252")
            except UnicodeEncodeError:
                continue
            candidates.append(i)
    for i in _pick(rng, np.array(candidates, np.int64), 0.001, 2, floors=floors).tolist():
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow([col[i] for col in table.columns])
        data = buf.getvalue().encode("cp1252")
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            table.raw[i] = data


@dataclass(frozen=True)
class _ConsentEvents:
    """Consent records, column-wise: who, for which purpose, granted or withdrawn, when."""

    person: IntArray
    purpose: IntArray
    granted: BoolArray
    recorded: IntArray

    def __add__(self, other: _ConsentEvents) -> _ConsentEvents:
        return _ConsentEvents(
            np.concatenate([self.person, other.person]),
            np.concatenate([self.purpose, other.purpose]),
            np.concatenate([self.granted, other.granted]),
            np.concatenate([self.recorded, other.recorded]),
        )


def _consent_events(
    rng: np.random.Generator, people: _People, as_of_s: int, newcomers: IntArray | None = None
) -> _ConsentEvents:
    """Everyone's consent history (only the `newcomers'`, if given)."""
    share = np.array(_PURPOSE_SHARE)
    among = np.arange(people.n) if newcomers is None else newcomers
    has = rng.random((len(among), len(_PURPOSES))) < share
    row, purpose_idx = np.nonzero(has)
    person_idx = among[row]
    granted = rng.random(len(person_idx)) < np.array(_PURPOSE_GRANTED)[purpose_idx]
    since = people.since[person_idx]
    recorded = since + (rng.random(len(person_idx)) * (as_of_s - since)).astype(np.int64)
    # Half of the withdrawals follow an earlier grant that is still in the log.
    history = np.flatnonzero(~granted & (rng.random(len(person_idx)) < 0.5))
    earlier = since[history] + (rng.random(len(history)) * (recorded[history] - since[history]))
    person_idx = np.concatenate([person_idx, person_idx[history]])
    purpose_idx = np.concatenate([purpose_idx, purpose_idx[history]])
    granted = np.concatenate([granted, np.ones(len(history), bool)])
    recorded = np.concatenate([recorded, earlier.astype(np.int64)])
    return _ConsentEvents(person_idx, purpose_idx, granted, recorded)


def _consents(
    rng: np.random.Generator,
    people: _People,
    events: _ConsentEvents,
    as_of_s: int,
    *,
    floors: bool = True,
) -> _Table:
    """The consent log of these events, by time."""
    order = np.lexsort((events.purpose, events.person, events.recorded))
    row_person, purpose_idx = events.person[order], events.purpose[order]
    granted, recorded = events.granted[order], events.recorded[order]
    n = len(row_person)

    in_crm = people.in_crm[row_person]
    cid_present = in_crm & (rng.random(n) < 0.9)
    crm_id = [
        people.crm_ids[p] if c else ""
        for p, c in zip(row_person.tolist(), cid_present.tolist(), strict=True)
    ]
    cid_kind = np.where(cid_present, _C_GOOD, _C_MISSING).astype(np.int8)
    email_present = ~cid_present | (rng.random(n) < 0.5)
    uses_alt = _habit(rng, people, "consent_alt", 0.2)
    email = [
        (people.alt_email[p] if uses_alt[p] else people.primary_email[p]) if e else ""
        for p, e in zip(row_person.tolist(), email_present.tolist(), strict=True)
    ]
    email_kind = np.where(email_present, _E_GOOD, _E_MISSING).astype(np.int8)
    only_email = np.flatnonzero(~cid_present & email_present)
    anonymous = _spoil_only_email(
        rng,
        only_email,
        0.0005,
        email=email,
        email_kind=email_kind,
        placeholder="unknown",
        floors=floors,
    )
    _mess_emails(
        rng,
        email,
        email_kind,
        p_noise=0.04,
        p_invalid=0.003,
        min_invalid=2,
        p_placeholder=0.003,
        min_placeholder=2,
        eligible=np.setdiff1d(np.arange(n), anonymous),
        floors=floors,
    )
    start = int(rng.integers(0, len(_CUSTOMER_ID_PLACEHOLDERS)))
    cid_present_rows = np.flatnonzero(cid_present)
    for k, i in enumerate(_pick(rng, cid_present_rows, 0.003, 2, floors=floors).tolist()):
        crm_id[i] = _CUSTOMER_ID_PLACEHOLDERS[(start + k) % len(_CUSTOMER_ID_PLACEHOLDERS)]
        cid_kind[i] = _C_PLACEHOLDER

    origin: list[str] = []
    for p in row_person.tolist():
        options = [
            name
            for name, flag in (
                ("crm", people.in_crm[p]),
                ("newsletter_signup", people.in_news[p]),
                ("preference_centre", people.in_prefs[p]),
                ("checkout", people.in_shop[p]),
            )
            if flag
        ]
        origin.append(options[(p + len(origin)) % len(options)])
    age_days = (as_of_s - recorded) // _DAY
    notice = np.where(age_days > 730, "v1.3", np.where(age_days > 240, "v2.0", "v2.1"))
    birth = [
        "" if skip else str(int(people.birth_year[p]))
        for p, skip in zip(row_person.tolist(), (rng.random(n) < 0.15).tolist(), strict=True)
    ]
    return _Table(
        name="consents",
        header=(
            *("subject_email", "crm_contact_id", "purpose", "status", "recorded_at", "source"),
            *("notice_version", "country", "birth_year"),
        ),
        columns=[
            email,
            crm_id,
            [_PURPOSES[i] for i in purpose_idx.tolist()],
            ["granted" if g else "withdrawn" for g in granted.tolist()],
            [t + "Z" for t in _utc_text(recorded)],
            origin,
            [str(v) for v in notice],
            _country_column(
                rng,
                people,
                row_person,
                p_missing=0.03,
                p_unknown=0.01,
                min_missing=2,
                min_unknown=2,
                floors=floors,
            ),
            birth,
        ],
        person=row_person,
        email=email_kind,
        customer_id=cid_kind,
        country_column=7,
        time=recorded,
    )


def _utc_text(seconds: IntArray) -> list[str]:
    """ISO 8601 UTC wall time without offset, e.g. 2025-03-14T18:22:05."""
    return [str(s) for s in np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s")]


def _offset_text(seconds: int) -> str:
    sign = "+" if seconds >= 0 else "-"
    minutes = abs(seconds) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _local_text(seconds: IntArray, country_idx: IntArray) -> list[str]:
    """ISO 8601 local time with the UTC offset in force there, e.g. 2025-03-14T19:22:05+01:00."""
    out = np.empty(len(seconds), dtype=object)
    for c, spec in enumerate(_COUNTRIES):
        sel = np.flatnonzero(country_idx == c)
        if not len(sel):
            continue
        utc = pd.DatetimeIndex(pd.to_datetime(seconds[sel], unit="s", utc=True))
        wall = utc.tz_convert(spec.tz).tz_localize(None).to_numpy().astype("datetime64[s]")
        offset = (wall.astype(np.int64) - seconds[sel]).astype(np.int64)
        values, inverse = np.unique(offset, return_inverse=True)
        labels = np.array([_offset_text(int(v)) for v in values], dtype=object)
        text = np.datetime_as_string(wall, unit="s").astype(object)
        out[sel] = text + labels[inverse]
    return [str(v) for v in out]


_PHONE_REASON: Final[dict[int, ReasonCode | None]] = {
    _P_MISSING: None,
    _P_PLUS: None,
    _P_IDD: None,
    _P_TOKEN: ReasonCode.PHONE_PLACEHOLDER,
    _P_ZEROS: ReasonCode.PHONE_PLACEHOLDER,
    _P_ZEROS_CC: ReasonCode.PHONE_PLACEHOLDER,
    _P_SHORT: ReasonCode.PHONE_INVALID,
    _P_WRONG_REGION: ReasonCode.PHONE_INVALID,
}
"""Phone kinds whose reason does not depend on the row's region."""


def _phone_reason(kind: int, region: str | None) -> ReasonCode | None:
    """What the identifier stage decides about a phone of `kind` in a row with `region`."""
    if kind in _PHONE_REASON:
        return _PHONE_REASON[kind]
    # National formats and words: no region means nothing to parse them with.
    if region is None:
        return ReasonCode.PHONE_NO_REGION
    return ReasonCode.PHONE_INVALID if kind == _P_WORDS else None


_EMAIL_REASON: Final[dict[int, ReasonCode | None]] = {
    _E_MISSING: None,
    _E_GOOD: None,
    _E_SYNTAX: ReasonCode.EMAIL_SYNTAX,
    _E_PLACEHOLDER: ReasonCode.EMAIL_PLACEHOLDER,
}


def _truth(table: _Table, people: _People) -> Iterable[tuple[str, int, str, str, str]]:
    """(source, line, person_id, expected_reason, expected_field_reasons) per data row."""
    country_code: dict[str, str | None] = {}
    pids = people.pids
    for i, person in enumerate(table.person.tolist()):
        line = i + 2
        pid = pids[person]
        if i in table.raw:
            yield table.name, line, pid, ReasonCode.ROW_UNPARSEABLE.value, ""
            continue
        reasons: list[str] = []
        usable = False
        if table.email is not None:
            kind = int(table.email[i])
            code = _EMAIL_REASON[kind]
            if code is not None:
                reasons.append(f"{CanonicalField.EMAIL}={code}")
            usable |= kind == _E_GOOD
        if table.phone is not None and table.region is not None:
            kind = int(table.phone[i])
            code = _phone_reason(kind, table.region[i])
            if code is not None:
                reasons.append(f"{CanonicalField.PHONE}={code}")
            usable |= kind != _P_MISSING and code is None
        if table.customer_id is not None:
            kind = int(table.customer_id[i])
            if kind == _C_PLACEHOLDER:
                reasons.append(f"{CanonicalField.CUSTOMER_ID}={ReasonCode.CUSTOMER_ID_PLACEHOLDER}")
            usable |= kind == _C_GOOD
        if table.country_column is not None:
            value = table.columns[table.country_column][i].strip()
            if value not in country_code:
                country_code[value] = normalise_country(value) if value else None
            if value and country_code[value] is None:
                reasons.append(f"{CanonicalField.COUNTRY}={ReasonCode.COUNTRY_UNKNOWN}")
        row_reason = "" if usable else ReasonCode.ROW_NO_IDENTIFIER.value
        yield table.name, line, pid, row_reason, ";".join(sorted(reasons))


@dataclass(frozen=True)
class _FileFormat:
    file: str
    kind: SourceKind
    encoding: str
    """Python codec the file is written in (and the config tells the reader)."""
    delimiter: str
    eol: str
    columns: Mapping[CanonicalField, str]
    default_region: str | None = None
    id_namespace: str | None = None
    unverified: tuple[str, ...] = ()
    comment: str = ""


_F = CanonicalField
_FORMATS: Final[dict[str, _FileFormat]] = {
    "crm": _FileFormat(
        "crm_contacts.csv", SourceKind.CONTACTS, "utf-8-sig", ",", "\r\n",
        {
            _F.CUSTOMER_ID: "Record ID", _F.FIRST_NAME: "First Name", _F.LAST_NAME: "Last Name",
            _F.EMAIL: "Email", _F.PHONE: "Phone Number", _F.COUNTRY: "Country/Region",
            _F.BIRTH_YEAR: "Year of Birth", _F.CREATED_AT: "Create Date",
        },
        id_namespace="crm",
        comment="CRM export (UTF-8 with BOM, CRLF). Contacts from many countries, so no "
        "default region: a national phone number in a row without a usable country "
        "cannot be read.",
    ),
    "shop_orders": _FileFormat(
        "orders.csv", SourceKind.ORDERS, "utf-8", ",", "\n",
        {
            _F.ORDER_ID: "order_number", _F.CUSTOMER_ID: "customer_ref",
            _F.EMAIL: "checkout_email", _F.ORDERED_AT: "ordered_at",
            _F.CATEGORY: "product_category", _F.QUANTITY: "qty", _F.AMOUNT: "line_amount",
            _F.CURRENCY: "currency",
        },
        id_namespace="shop",
        comment="Web shop order lines (line_no is not mapped). Guest checkouts have no "
        "customer_ref; returns are R-orders with negative qty and amount.",
    ),
    "newsletter": _FileFormat(
        "newsletter.csv", SourceKind.NEWSLETTER, "latin-1", ";", "\n",
        {
            _F.EMAIL: "E-mail address", _F.FIRST_NAME: "First name",
            _F.SIGNED_UP_AT: "Signed up", _F.COUNTRY: "Country",
        },
        comment="Newsletter tool export: Latin-1, ';'-separated. Characters outside "
        "Latin-1 arrived as '?'.",
    ),
    "preference_centre": _FileFormat(
        "preferences.csv", SourceKind.PREFERENCES, "utf-8", ",", "\n",
        {
            _F.CUSTOMER_ID: "Login ID", _F.FIRST_NAME: "Name", _F.EMAIL: "Email address",
            _F.PHONE: "Mobile", _F.TOPIC: "Topic", _F.INTERESTED: "Interested",
            _F.RECORDED_AT: "Updated at",
        },
        default_region="DK",
        id_namespace="prefs",
        unverified=("phone",),
        comment="Preference centre of the Danish shop: one row per person and declared "
        "topic; mobiles without a country code are Danish. Mobiles are typed in and never "
        "confirmed, so they may attach a row to a profile but never join two.",
    ),
    "consents": _FileFormat(
        "consents.csv", SourceKind.CONSENTS, "utf-8", ",", "\n",
        {
            _F.EMAIL: "subject_email", _F.CUSTOMER_ID: "crm_contact_id", _F.PURPOSE: "purpose",
            _F.CONSENT_STATUS: "status", _F.RECORDED_AT: "recorded_at",
            _F.CONSENT_SOURCE: "source", _F.NOTICE_VERSION: "notice_version",
            _F.COUNTRY: "country", _F.BIRTH_YEAR: "birth_year",
        },
        id_namespace="crm",
        comment="Consent log: one record per person, purpose and change. crm_contact_id "
        "shares the CRM's namespace, so consents link to CRM contacts.",
    ),
}  # fmt: skip


def _write_table(path: Path, table: _Table, fmt: _FileFormat) -> None:
    """Write the header and rows; malformed rows go out as their raw bytes."""
    bom = fmt.encoding == "utf-8-sig"
    encoding = "utf-8" if bom else fmt.encoding
    errors = "replace"  # Latin-1 only: what the newsletter tool does with other characters
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=fmt.delimiter, lineterminator=fmt.eol)
    writer.writerow(table.header)
    rows = list(zip(*table.columns, strict=True))
    out = bytearray(b"\xef\xbb\xbf" if bom else b"")
    start = 0
    for i in sorted(table.raw):
        writer.writerows(rows[start:i])
        out += buf.getvalue().encode(encoding, errors)
        buf.seek(0)
        buf.truncate()
        out += table.raw[i] + fmt.eol.encode("ascii")
        start = i + 1
    writer.writerows(rows[start:])
    out += buf.getvalue().encode(encoding, errors)
    path.write_bytes(bytes(out))


def _yaml_text(people: int, seed: int, as_of: date) -> str:
    quote = _yaml_quote
    lines = [
        "# Run configuration for a synthetic data set written by `enrich synth`",
        f"# (people={people}, seed={seed}, as_of={as_of.isoformat()}).",
        "#",
        "# Every person in data/ is invented: e-mail addresses use the reserved example.com,",
        "# example.net and example.org domains; phone numbers come from ranges regulators keep",
        "# for drama where a country has one. data/truth.csv is the ground truth for tests:",
        "# the true person of every row and what the identifier stage must decide about it.",
        "# Paths are relative to this file; `columns` maps canonical fields to each file's",
        "# own header names.",
        "version: 1",
        "output_dir: out",
        "state_dir: state",
        "schedule:",
        f"  cron: {quote('0 2 * * *')}",
        "  timezone: Europe/Copenhagen",
        "sources:",
    ]
    for name, fmt in _FORMATS.items():
        lines += [f"  # {text}" for text in textwrap.wrap(fmt.comment, 90)]
        lines += [
            f"  - name: {name}",
            f"    kind: {fmt.kind.value}",
            f"    path: data/{fmt.file}",
            "    format: csv",
            f"    encoding: {fmt.encoding}",
            f"    delimiter: {quote(fmt.delimiter)}",
        ]
        if fmt.default_region:
            lines.append(f"    default_region: {fmt.default_region}")
        if fmt.id_namespace:
            lines.append(f"    id_namespace: {fmt.id_namespace}")
        if fmt.unverified:
            lines.append(f"    unverified: [{', '.join(fmt.unverified)}]")
        lines.append("    columns:")
        lines += [f"      {f.value}: {quote(col)}" for f, col in fmt.columns.items()]
    lines += [
        "# Identity resolution: one CRM record per person, so two CRM ids never share a",
        "# profile; golden-record fields name the sources they trust, in order.",
        "identity:",
        "  unique_namespaces: [crm]",
        "  golden:",
        "    country: {rule: source_priority, sources: [crm, consents, newsletter]}",
        "    birth_year: {rule: source_priority, sources: [crm, consents]}",
        "    first_name: {rule: source_priority, sources: [crm, newsletter, preference_centre]}",
        "    last_name: {rule: source_priority, sources: [crm]}",
        "# Behaviour scores (RFM, ABC/XYZ, churn risk, CLV) in one currency: EUR per unit of",
        "# each currency the shop sells in (the rates the data was made with).",
        "behaviour:",
        "  money:",
        "    scoring_currency: EUR",
        "    rates:",
    ]
    rates = {c.currency: c.eur_rate for c in _COUNTRIES if c.currency != "EUR"}
    lines += [f"      {cur}: {1 / rate:.6f}" for cur, rate in sorted(rates.items())]
    return "\n".join(lines) + "\n"


def _yaml_quote(value: str) -> str:
    """A double-quoted YAML scalar (the header names here are plain ASCII)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class _Breakage:
    """How a source's exporter writes the odd row with a wrong number of fields."""

    delimiter: str
    encoding: str
    rate: float
    minimum: int
    column: int
    extra: str


_BREAKAGE: Final[dict[str, _Breakage]] = {
    "crm": _Breakage(",", "utf-8", 0.0003, 3, 2, "Jr."),
    "shop_orders": _Breakage(",", "utf-8", 0.0002, 3, 5, "outlet"),
    "newsletter": _Breakage(";", "latin-1", 0.0003, 2, 1, "Maria"),
}


def _spoil(rng: np.random.Generator, table: _Table, *, floors: bool = True) -> None:
    """Damage some rows the way the source's export does (a wrong number of fields, or
    Windows-1252 bytes in the preference centre's UTF-8)."""
    if table.name == "preference_centre":
        _cp1252_rows(rng, table, floors=floors)
    elif (b := _BREAKAGE.get(table.name)) is not None:
        _break_rows(
            rng,
            table,
            delimiter=b.delimiter,
            encoding=b.encoding,
            rate=b.rate,
            minimum=b.minimum,
            column=b.column,
            extra=b.extra,
            floors=floors,
        )


# What happens between one night's export and the next, per night. Newcomers are a share of
# the first night's persons, the other changes shares of the persons there were the night
# before; each happens at least once, so that small data sets show every kind every night.
_NEWCOMERS: Final = 0.01
_EMAIL_CHANGES: Final = 0.002
_PHONES_ADDED: Final = 0.0015
_SIGNUPS: Final = 0.0015
_CONSENT_CHANGES: Final = 0.003

_CHANGE_OF_NEW_ROW: Final = {
    "crm": "added",
    "shop_orders": "new_orders",
    "newsletter": "newsletter_signup",
    "preference_centre": "added",
    "consents": "consent_changed",
}
"""What a new row of an existing person is, per source (a newcomer's rows are "added")."""


class _Change(NamedTuple):
    """One deliberate change: a row added, or a row's cell edited, on a night."""

    night: int
    person: int
    change: str
    source: str
    row: int
    """Index of the data row (line - 2)."""


@dataclass
class _Dataset:
    """Everything one night's files are written from, and what the next night starts from."""

    people: _People
    tables: dict[str, _Table]
    """Per source, in the order of `_FORMATS`."""
    as_of: date
    as_of_s: int
    orders: int
    """Orders numbered so far."""
    emails: set[str]
    """Every address ever given to anyone (old ones stay in old rows), so none is reused."""
    phones: set[str]
    """Every number (E.164) ever given to anyone."""
    consent: dict[tuple[int, int], bool]
    """Latest consent status (granted?) per person and purpose index (from the second night)."""
    changes: list[_Change] = field(default_factory=list)
    """Every deliberate change since the first night, for changes.csv."""


def _export_time(as_of: date) -> int:
    """Epoch seconds of the export for `as_of`: everything happened before noon UTC of the day
    before, so that no local time stamp anywhere (Sydney is UTC+11) falls on `as_of` itself."""
    return int(datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC).timestamp()) - _DAY // 2


def _first_night(people: int, seed: int, as_of: date) -> _Dataset:
    """The first night's data: `people` persons and their records as of `as_of`."""
    as_of_s = _export_time(as_of)
    streams = np.random.SeedSequence([seed, people, as_of.toordinal()]).spawn(6)
    rngs = [np.random.default_rng(s) for s in streams]

    population = _people(rngs[0], people, as_of_s, as_of.year)
    crm = _crm(rngs[1], population, as_of_s)
    _spoil(rngs[1], crm)
    order_person, order_ts = _order_times(rngs[2], population, as_of_s)
    orders = _orders(rngs[2], population, order_person, order_ts, as_of_s)
    _spoil(rngs[2], orders)
    newsletter = _newsletter(
        rngs[3], population, *_newsletter_signups(rngs[3], population, as_of_s)
    )
    _spoil(rngs[3], newsletter)
    preferences = _preferences(rngs[4], population, as_of_s)
    _spoil(rngs[4], preferences)
    consents = _consents(
        rngs[5], population, _consent_events(rngs[5], population, as_of_s), as_of_s
    )
    return _Dataset(
        people=population,
        tables={t.name: t for t in (crm, orders, newsletter, preferences, consents)},
        as_of=as_of,
        as_of_s=as_of_s,
        orders=len(order_person),
        emails={*population.primary_email, *population.alt_email},
        phones={phone.e164 for phone in population.phone if phone is not None},
        consent={},
    )


def _note_consents(data: _Dataset, table: _Table) -> None:
    """Remember the latest status per person and purpose of these (time-ordered) records."""
    purpose = {name: i for i, name in enumerate(_PURPOSES)}
    for p, name, status in zip(
        table.person.tolist(), table.columns[2], table.columns[3], strict=True
    ):
        data.consent[p, purpose[name]] = status == "granted"


def _next_night(data: _Dataset, night: int, rngs: Sequence[np.random.Generator], base: int) -> None:
    """Turn night `night - 1`'s data into night `night`'s: one day later, some persons change
    an identifier, some sign up or change a consent, customers order, and newcomers arrive
    (about 1% of the `base` persons of the first night). New rows go at the end of each file;
    edits change cells in place."""
    previous = data.as_of_s
    data.as_of += timedelta(days=1)
    data.as_of_s = as_of_s = _export_time(data.as_of)
    existing = data.people.n

    # Edits first, so that tonight's orders and consents already use a moved address.
    changed = _change_emails(rngs[0], data, night)
    with_phone = _add_phones(rngs[1], data, night, exclude=changed)
    signups = _existing_signups(rngs[2], data, changed, exclude=with_phone, previous=previous)

    newcomers = _people(
        rngs[3],
        max(1, round(_NEWCOMERS * base)),
        as_of_s,
        data.as_of.year,
        newcomers=True,
        taken_emails=data.emails,
        taken_phones=data.phones,
    )
    data.emails.update(newcomers.primary_email, newcomers.alt_email)
    data.phones.update(phone.e164 for phone in newcomers.phone if phone is not None)
    data.people = people = data.people.joined(newcomers)
    new = np.arange(existing, people.n)

    # Tonight's rows of each source are built together (newcomers' and existing persons'),
    # in time order, so that each file stays in the order its export keeps.
    crm = data.tables["crm"]
    last_id = int(crm.columns[0][-1]) if len(crm) else 10_450_000
    blocks = [_crm(rngs[4], people, as_of_s, newcomers=new, last_id=last_id)]

    person, when = _order_times(rngs[5], people, as_of_s, new)
    again, again_when = _repeat_orders(rngs[5], people, existing, previous, as_of_s)
    person, when = np.concatenate([person, again]), np.concatenate([when, again_when])
    by_time = np.argsort(when, kind="stable")
    orders = _orders(
        rngs[5],
        people,
        person[by_time],
        when[by_time],
        as_of_s,
        first_order=data.orders,
        floors=False,
    )
    data.orders += len(person)
    orders.extend(_late_returns(rngs[6], data.tables["shop_orders"], people, previous, as_of_s))
    assert orders.time is not None
    blocks.append(orders.take(np.argsort(orders.time, kind="stable")))

    person, email, when = _newsletter_signups(rngs[7], people, as_of_s, new)
    person = np.concatenate([person, signups[0]])
    email = email + signups[1]
    when = np.concatenate([when, signups[2]])
    by_time = np.argsort(when, kind="stable")
    blocks.append(
        _newsletter(
            rngs[7],
            people,
            person[by_time],
            [email[i] for i in by_time.tolist()],
            when[by_time],
            floors=False,
        )
    )
    blocks.append(_preferences(rngs[8], people, as_of_s, new))
    events = _consent_events(rngs[9], people, as_of_s, new) + _consent_changes(
        rngs[9], data, existing, previous
    )
    blocks.append(_consents(rngs[9], people, events, as_of_s, floors=False))

    # Damage comes last, once per source and night, so that it hits any of tonight's rows.
    for block in blocks:
        _spoil(rngs[10], block, floors=False)
        table = data.tables[block.name]
        start = len(table)
        for j, p in enumerate(block.person.tolist()):
            change = "added" if p >= existing else _CHANGE_OF_NEW_ROW[block.name]
            data.changes.append(_Change(night, p, change, block.name, start + j))
        table.extend(block)
    _note_consents(data, blocks[-1])


def _night_streams(seed: int, people: int, as_of: date, night: int) -> list[np.random.Generator]:
    """Independent random streams for one night's changes."""
    streams = np.random.SeedSequence([seed, people, as_of.toordinal(), night]).spawn(11)
    return [np.random.default_rng(s) for s in streams]


def _first_records(crm: _Table, people: _People) -> BoolArray:
    """Which CRM rows are a person's first record (not a later duplicate) and parse."""
    first = np.array(
        [
            people.crm_ids.get(p) == rid
            for p, rid in zip(crm.person.tolist(), crm.columns[0], strict=True)
        ],
        bool,
    )
    if crm.raw:
        first[list(crm.raw)] = False
    return first


def _addresses(table: _Table, column: int) -> dict[int, set[str]]:
    """Per person, the good addresses of their rows in `table`, as identity compares them."""
    assert table.email is not None
    out: dict[int, set[str]] = {}
    good = table.email == _E_GOOD
    for i in np.flatnonzero(good).tolist():
        if i not in table.raw:
            out.setdefault(int(table.person[i]), set()).add(
                table.columns[column][i].strip().lower()
            )
    return out


def _preferred_first(
    rng: np.random.Generator, preferred: IntArray, rest: IntArray, k: int
) -> IntArray:
    """`k` of the candidates at random, from `preferred` as far as they go, then from `rest`."""
    chosen = np.concatenate([rng.permutation(preferred), rng.permutation(rest)])
    return chosen[:k]


def _fresh_address(rng: np.random.Generator, people: _People, p: int, taken: set[str]) -> str:
    """A new address for person `p` that nobody has had, and remember it as taken."""
    given = people.given_ascii[p] or "customer"
    family = people.family_ascii[p].replace(" ", "") or "x"
    yy = f"{int(people.birth_year[p]) % 100:02d}"
    nn = str(int(rng.integers(2, 1000)))
    local = (f"{given}.{family}{nn}", f"{given}{family}{yy}", f"{given[0]}.{family}.{nn}",
             f"{family}.{given}{nn}")[int(rng.integers(0, 4))]  # fmt: skip
    domain = _DOMAINS[int(rng.choice(len(_DOMAINS), p=_DOMAIN_WEIGHTS))]
    address, suffix = f"{local}@{domain}", 1
    while address in taken:
        address, suffix = f"{local}{suffix}@{domain}", suffix + 1
    taken.add(address)
    return address


def _change_emails(rng: np.random.Generator, data: _Dataset, night: int) -> IntArray:
    """Replace the address of some CRM contacts with a new one, which becomes the person's
    address from now on; preferably of contacts whose newsletter row shares the old address,
    whose profile the change may split. Returns the persons, in random order."""
    crm, people = data.tables["crm"], data.people
    assert crm.email is not None
    rows = np.flatnonzero((crm.email == _E_GOOD) & _first_records(crm, people))
    reads = _addresses(data.tables["newsletter"], 0)
    shared = np.array(
        [crm.columns[3][i].strip().lower() in reads.get(int(crm.person[i]), ()) for i in rows],
        bool,
    )
    k = max(1, round(_EMAIL_CHANGES * people.n))
    chosen = _preferred_first(rng, rows[shared], rows[~shared], k)
    for i in chosen.tolist():
        p = int(crm.person[i])
        crm.columns[3][i] = people.primary_email[p] = _fresh_address(rng, people, p, data.emails)
        data.changes.append(_Change(night, p, "email_changed", "crm", i))
    return crm.person[chosen]


def _add_phones(
    rng: np.random.Generator, data: _Dataset, night: int, *, exclude: IntArray
) -> IntArray:
    """Write the person's number into some CRM contacts that had none; preferably of persons
    who gave it in the preference centre under another address, whose profiles it may join.
    Returns the persons."""
    crm, people = data.tables["crm"], data.people
    assert crm.phone is not None
    has_number = np.array([people.phone[p] is not None for p in crm.person.tolist()], bool)
    rows = np.flatnonzero(
        (crm.phone == _P_MISSING)
        & has_number
        & _first_records(crm, people)
        & ~np.isin(crm.person, exclude)
    )
    prefs = data.tables["preference_centre"]
    assert prefs.phone is not None
    mobile = set(prefs.person[prefs.phone != _P_MISSING].tolist())
    prefs_addresses = _addresses(prefs, 2)
    elsewhere = np.array(
        [
            int(crm.person[i]) in mobile
            and crm.columns[3][i].strip().lower() not in prefs_addresses.get(int(crm.person[i]), ())
            for i in rows
        ],
        bool,
    )
    k = max(1, round(_PHONES_ADDED * people.n))
    chosen = np.sort(_preferred_first(rng, rows[elsewhere], rows[~elsewhere], k))
    formats = rng.choice(5, size=len(chosen), p=_CRM_PHONE_FORMATS)
    for i, fmt in zip(chosen.tolist(), formats.tolist(), strict=True):
        p = int(crm.person[i])
        number = people.phone[p]
        assert number is not None
        crm.columns[4][i], crm.phone[i] = _phone_value(number, fmt)
        data.changes.append(_Change(night, p, "phone_added", "crm", i))
    return crm.person[chosen]


def _existing_signups(
    rng: np.random.Generator,
    data: _Dataset,
    changed: IntArray,
    *,
    exclude: IntArray,
    previous: int,
) -> tuple[IntArray, list[str], IntArray]:
    """(person, address, time) of tonight's newsletter signups by persons already known, each
    with a new address: half of them tonight's CRM address changers with that address, the
    rest customers with an address nobody has seen yet (which becomes theirs)."""
    people = data.people
    k = max(1, round(_SIGNUPS * people.n))
    movers = changed[: (k + 1) // 2]
    others = np.setdiff1d(np.arange(people.n), np.concatenate([changed, exclude]))
    customers = others[people.in_shop[others]]
    chosen = _preferred_first(rng, customers, others[~people.in_shop[others]], k - len(movers))
    for p in chosen.tolist():
        people.primary_email[p] = _fresh_address(rng, people, p, data.emails)
    person = np.concatenate([movers, chosen]).astype(np.int64)
    people.in_news[person] = True
    span = data.as_of_s - 60 - previous
    when = previous + 60 + (rng.random(len(person)) * span).astype(np.int64)
    return person, [people.primary_email[p] for p in person.tolist()], when


def _repeat_orders(
    rng: np.random.Generator, people: _People, existing: int, previous: int, as_of_s: int
) -> tuple[IntArray, IntArray]:
    """(person, time) of the orders the first `existing` persons' active shoppers placed since
    the previous export, each at their own Poisson rate."""
    active = np.flatnonzero(people.in_shop[:existing] & ~people.churned[:existing])
    start, end = previous + 60, as_of_s - 3600
    counts = rng.poisson(people.rate[active] * (end - start) / _YEAR)
    person = np.repeat(active, counts)
    return person, start + (rng.random(len(person)) * (end - start)).astype(np.int64)


def _late_returns(
    rng: np.random.Generator, orders: _Table, people: _People, previous: int, as_of_s: int
) -> _Table:
    """Return lines ("R<order>", negative) since the previous export, for lines bought 2 to
    30 days before it: each returned at the first night's rate spread over those 28 days, and
    at most one return per order."""
    assert orders.time is not None
    assert orders.email is not None
    assert orders.customer_id is not None
    lo = int(np.searchsorted(orders.time, previous - 30 * _DAY))
    hi = int(np.searchsorted(orders.time, previous - 2 * _DAY))
    numbers = orders.columns[0]
    returned = {numbers[i][1:] for i in range(lo, len(orders)) if numbers[i].startswith("R")}
    rows = [
        i
        for i in np.flatnonzero(rng.random(hi - lo) < _RETURNED / 28).tolist()
        if not numbers[lo + i].startswith("R")
        and numbers[lo + i] not in returned
        and lo + i not in orders.raw
    ]
    source = np.array([lo + i for i in rows], np.int64)
    order_of = [numbers[i] for i in source.tolist()]
    # One return order per order, so its lines share a time.
    distinct = list(dict.fromkeys(order_of))
    at = previous + 60 + (rng.random(len(distinct)) * (as_of_s - 660 - previous)).astype(np.int64)
    time_of = dict(zip(distinct, at.tolist(), strict=True))
    when = np.array([time_of[o] for o in order_of], np.int64)
    line_no, seen = [], Counter[str]()
    for o in order_of:
        seen[o] += 1
        line_no.append(str(seen[o]))
    person = orders.person[source]
    columns = [[orders.columns[c][i] for i in source.tolist()] for c in range(len(orders.header))]
    columns[0] = [f"R{o}" for o in order_of]
    columns[1] = line_no
    columns[4] = _local_text(when, people.country[person])
    columns[6] = [f"-{q}" for q in columns[6]]
    columns[7] = [f"-{a}" for a in columns[7]]
    return _Table(
        name=orders.name,
        header=orders.header,
        columns=columns,
        person=person,
        email=orders.email[source],
        customer_id=orders.customer_id[source],
        time=when,
    )


def _consent_changes(
    rng: np.random.Generator, data: _Dataset, existing: int, previous: int
) -> _ConsentEvents:
    """Consent records since the previous export of some of the first `existing` persons, each
    for one purpose: a withdrawal where the latest record grants it, else a grant."""
    k = min(existing, max(1, round(_CONSENT_CHANGES * existing)))
    person = np.sort(rng.choice(existing, size=k, replace=False)).astype(np.int64)
    purpose = rng.integers(0, len(_PURPOSES), k)
    granted = np.array(
        [
            not data.consent.get((p, q), False)
            for p, q in zip(person.tolist(), purpose.tolist(), strict=True)
        ],
        bool,
    )
    span = data.as_of_s - 60 - previous
    recorded = previous + 60 + (rng.random(k) * span).astype(np.int64)
    return _ConsentEvents(person, purpose, granted, recorded)


_WORLD_STREAM: Final = 0x776F726C64
"""Entropy word ("world") of the world file's own random stream."""
_CATEGORY_INTEREST: Final = 0.15
"""Affinity share from which a category is a true interest."""
_DECLARED_STRENGTH: Final = 0.7
_DECLARED_TRUE: Final = 0.85
"""Share of preference-centre answers that tell the truth (the rest were clicked carelessly,
or the person's interests changed since)."""


def _world_addresses(data: _Dataset) -> list[set[str]]:
    """Per person, every address they have: primary, alternative, and each valid one in the
    files, trimmed and lower-cased (as `IdentifierForm.EMAIL_SHA256` hashes them)."""
    people = data.people
    found = [
        {a.strip().lower(), b.strip().lower()}
        for a, b in zip(people.primary_email, people.alt_email, strict=True)
    ]
    # Most rows repeat an address exactly as their person wrote it before: dedupe first.
    given: set[tuple[int, str]] = set()
    for table in data.tables.values():
        name = _FORMATS[table.name].columns.get(_F.EMAIL)
        if table.email is None or name is None:
            continue
        good = table.email == _E_GOOD
        good[list(table.raw)] = False
        rows = np.flatnonzero(good).tolist()
        column = table.columns[table.header.index(name)]
        given.update(zip(table.person[rows].tolist(), map(column.__getitem__, rows), strict=True))
    for p, address in given:
        found[p].add(address.strip().lower())
    return found


def _world_interests(rng: np.random.Generator, data: _Dataset) -> list[dict[str, float]]:
    """Per person, true interest topic -> strength in [0.5, 1) (see the module docstring)."""
    people = data.people
    affinity = people.affinity
    category = {c: k for k, c in enumerate(_CATEGORIES)}
    # Drawn for every person in index order: newcomers of later nights append rows, so earlier
    # persons keep theirs.
    noise = rng.normal(size=(people.n, len(_INTEREST_TOPICS)))
    related = np.stack(
        [affinity[:, [category[c] for c in cats]].mean(axis=1) for cats in _INTEREST_RELATED],
        axis=1,
    )
    latent = -1.2 + 8.0 * (related - 0.1) + noise
    likely = 1.0 / (1.0 + np.exp(-latent))
    topics = [f"interest.{c}" for c in _CATEGORIES]
    truth: list[dict[str, float]] = []
    for p in range(people.n):
        held = {
            topics[k]: float(a / (a + 0.1))
            for k, a in enumerate(affinity[p].tolist())
            if a >= _CATEGORY_INTEREST
        }
        held.update(
            {t: float(likely[p, k]) for k, t in enumerate(_INTEREST_TOPICS) if latent[p, k] > 0}
        )
        truth.append(held)
    prefs = data.tables["preference_centre"]
    pids = people.pids
    for p, topic, answer in zip(
        prefs.person.tolist(), prefs.columns[4], prefs.columns[5], strict=True
    ):
        key = topic if topic.startswith("interest.") else f"interest.{topic}"
        if not _answer_is_true(pids[p], key):
            continue
        if answer == "yes":
            truth[p][key] = max(truth[p].get(key, 0.0), _DECLARED_STRENGTH)
        else:
            truth[p].pop(key, None)
    return truth


def _answer_is_true(person_id: str, topic: str) -> bool:
    """Whether a person's preference-centre answer on `topic` tells the truth: true for
    `_DECLARED_TRUE` of (person, topic) pairs, decided by a hash so that it never moves a
    random stream and stays the same night after night."""
    digest = hashlib.sha256(f"world:{person_id}:{topic}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < _DECLARED_TRUE * 2**64


def _world(data: _Dataset, rng: np.random.Generator) -> bytes:
    """world.jsonl: one line per person with hashed identifiers and true interests."""
    addresses = _world_addresses(data)
    interests = _world_interests(rng, data)
    people = data.people
    lines = []
    for p, pid in enumerate(people.pids):
        phone = people.phone[p]
        record = {
            "person_id": pid,
            "email_sha256": sorted(_sha256(a) for a in addresses[p] if a),
            "phone_sha256": [] if phone is None else [_sha256(phone.e164)],
            "interests": {t: min(0.999, round(v, 3)) for t, v in sorted(interests[p].items())},
        }
        lines.append(json.dumps(record, separators=(",", ":")) + "\n")
    return "".join(lines).encode("utf-8")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write(data: _Dataset, out_dir: Path, night: int, yaml_text: str, world: bytes) -> None:
    """Write the data files, truth.csv, world.jsonl, changes.csv (from the second night on)
    and the config."""
    data_dir = out_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    truth = io.StringIO()
    writer = csv.writer(truth, lineterminator="\n")
    writer.writerow(("source", "line", "person_id", "expected_reason", "expected_field_reasons"))
    for table in data.tables.values():
        _write_table(data_dir / _FORMATS[table.name].file, table, _FORMATS[table.name])
        writer.writerows(_truth(table, data.people))
    (data_dir / "truth.csv").write_bytes(truth.getvalue().encode("utf-8"))
    (data_dir / "world.jsonl").write_bytes(world)
    changes_path = data_dir / "changes.csv"
    if night == 1:
        # A first night written over a later one's folder must not keep its changes.
        changes_path.unlink(missing_ok=True)
    else:
        changes = io.StringIO()
        writer = csv.writer(changes, lineterminator="\n")
        writer.writerow(("night", "person_id", "change", "source", "line"))
        order = {name: i for i, name in enumerate(_FORMATS)}
        pids = data.people.pids
        for c in sorted(data.changes, key=lambda c: (c.night, order[c.source], c.row, c.change)):
            writer.writerow((c.night, pids[c.person], c.change, c.source, c.row + 2))
        changes_path.write_bytes(changes.getvalue().encode("utf-8"))
    (out_dir / "enrich.yaml").write_bytes(yaml_text.encode("utf-8"))


def generate(
    people: int,
    out_dir: Path,
    seed: int = 7,
    as_of: date = date(2026, 11, 1),
    night: int = 1,
) -> SynthResult:
    """Invent `people` persons and write their records, run config and ground truth.

    `night` 1 is the data as of `as_of`; night K is night K-1 one day later (see the module
    docstring), and also writes `data/changes.csv`. Files are overwritten; the run config is
    the same every night. The output depends only on `(people, seed, as_of, night)`. Every
    kind of messiness is present from about 200 people on; smaller sets may lack some.
    """
    if people < 1:
        raise ValueError(f"people must be at least 1, got {people}")
    if night < 1:
        raise ValueError(f"night must be at least 1, got {night}")
    out_dir = Path(out_dir)
    data = _first_night(people, seed, as_of)
    if night > 1:
        _note_consents(data, data.tables["consents"])
    # Each night builds on the one before, so night K replays nights 2..K; they are small.
    for k in range(2, night + 1):
        _next_night(data, k, _night_streams(seed, people, as_of, k), people)
    world_rng = np.random.default_rng(
        np.random.SeedSequence([seed, people, as_of.toordinal(), _WORLD_STREAM])
    )
    _write(data, out_dir, night, _yaml_text(people, seed, as_of), _world(data, world_rng))
    return SynthResult(
        out_dir=out_dir,
        config_path=out_dir / "enrich.yaml",
        rows={name: len(t) for name, t in data.tables.items()},
        people=data.people.n,
    )
