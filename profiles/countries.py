"""Country values as sources write them (codes, English and local names) → ISO 3166-1 alpha-2."""

from __future__ import annotations

import unicodedata

import phonenumbers

# alpha-2: (alpha-3, English name, local names...). Alpha-2 codes of every phone region are also
# accepted; names are listed for the countries customers of a European shop mostly come from.
_NAMES: dict[str, tuple[str, ...]] = {
    "AT": ("AUT", "Austria", "Österreich"),
    "AU": ("AUS", "Australia"),
    "BE": ("BEL", "Belgium", "België", "Belgique", "Belgien"),
    "CA": ("CAN", "Canada"),
    "CH": ("CHE", "Switzerland", "Schweiz", "Suisse", "Svizzera"),
    "CZ": ("CZE", "Czechia", "Czech Republic", "Česko"),
    "DE": ("DEU", "Germany", "Deutschland"),
    "DK": ("DNK", "Denmark", "Danmark"),
    "EE": ("EST", "Estonia", "Eesti"),
    "ES": ("ESP", "Spain", "España"),
    "FI": ("FIN", "Finland", "Suomi"),
    "FR": ("FRA", "France"),
    "GB": ("GBR", "United Kingdom", "UK", "Great Britain", "England", "Scotland", "Wales"),
    "GE": ("GEO", "Georgia", "საქართველო", "Sakartvelo"),
    "GR": ("GRC", "Greece", "Ελλάδα", "Ellada", "Hellas"),
    "IE": ("IRL", "Ireland", "Éire"),
    "IS": ("ISL", "Iceland", "Ísland"),
    "IT": ("ITA", "Italy", "Italia"),
    "LT": ("LTU", "Lithuania", "Lietuva"),
    "LV": ("LVA", "Latvia", "Latvija"),
    "NL": ("NLD", "Netherlands", "The Netherlands", "Nederland", "Holland"),
    "NO": ("NOR", "Norway", "Norge", "Noreg"),
    "NZ": ("NZL", "New Zealand", "Aotearoa"),
    "PL": ("POL", "Poland", "Polska"),
    "PT": ("PRT", "Portugal"),
    "SE": ("SWE", "Sweden", "Sverige"),
    "US": ("USA", "United States", "United States of America", "U.S.", "U.S.A."),
}

# Codes that people write but ISO does not use for the country they mean.
_ALIASES = {"UK": "GB", "EL": "GR"}


def _fold(value: str) -> str:
    return " ".join(unicodedata.normalize("NFC", value).casefold().replace(".", " ").split())


_LOOKUP: dict[str, str] = {_fold(region): region for region in phonenumbers.SUPPORTED_REGIONS}
_LOOKUP.update({_fold(alias): code for alias, code in _ALIASES.items()})
for _code, _names in _NAMES.items():
    for _name in _names:
        _LOOKUP[_fold(_name)] = _code


def normalise_country(value: str) -> str | None:
    """ISO alpha-2 code for a country code or name, or None if it is not recognised."""
    return _LOOKUP.get(_fold(value))


def known_country_names(code: str) -> tuple[str, ...]:
    """Names and codes recognised for `code` (used by the synthetic data generator)."""
    return (code, *_NAMES.get(code, ()))
