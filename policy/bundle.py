"""The policy bundle: purposes, jurisdictions, rules and limits, loaded from YAML and hashed.

A bundle is everything the policy engine needs to decide, in one versioned file that a DPO can
read (`policy/conf/default.yaml` is the shipped one). It is validated once, at load, and every
problem is reported together with its file and line (`load_bundle`).

Rules follow the Fides shape: `match` (all conditions must hold), `unless` (any condition
exempts), `priority` (higher is considered first) and an `outcome` (allow, deny, redact).

Conditions are `{field: <name>, <op>: <value>}` with one op out of eq, ne, in, not_in, lt, le,
gt, ge and exists, or `{any: [...]}` / `{all: [...]}`. `field` names a fact column (one row per
subject, built by the flow), a fact the engine derives from them, or a key of the per-call
context; `CONDITION_FIELDS` lists them all with their types, and naming any other field is a
load error. Missing values never compare: eq, in, lt, le, gt and ge are false on a missing value;
ne and not_in are true (a missing value is "not equal" to anything); `exists: false` selects
exactly the missing values (an empty string counts as missing).

The bundle's `hash` is the SHA-256 of its canonical JSON (sorted keys, compact separators, rules
sorted by id, set-like lists sorted, defaults filled in), so reformatting or reordering the file
keeps the hash and any change of meaning changes it. Every decision records it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from policy.types import (
    ConsentStatus,
    Gate,
    LawfulBasis,
    Outcome,
    Purpose,
    Regime,
    SuppressionKind,
)
from profiles.types import IdentifierForm, SignalKind, TransferBasis
from profiles.yamlconf import load_yaml_model

E = TypeVar("E", bound=StrEnum)


class FieldKind(StrEnum):
    """Type of a condition field, which decides the ops and values it accepts."""

    BOOL = "bool"
    NUMBER = "number"
    TEXT = "text"


@dataclass(frozen=True)
class FieldSpec:
    """A field that conditions may name."""

    kind: FieldKind
    origin: Literal["fact", "derived", "context"]
    """fact: a column of the facts table; derived: computed by the engine; context: per call."""
    doc: str
    values: frozenset[str] | None = None
    """The only values a text field can take, if it is an enumeration."""
    pattern: str | None = None
    """A regular expression every text value must match."""


def _fields() -> dict[str, FieldSpec]:
    text, boolean, number = FieldKind.TEXT, FieldKind.BOOL, FieldKind.NUMBER
    consent_values = frozenset(ConsentStatus)
    out: dict[str, FieldSpec] = {
        "country": FieldSpec(text, "fact", "ISO 3166-1 alpha-2 country", pattern=r"[A-Z]{2}"),
        "age": FieldSpec(number, "fact", "age in years"),
        "is_customer": FieldSpec(boolean, "fact", "has placed at least one order"),
    }
    for purpose in Purpose:
        out[f"consent_{purpose}"] = FieldSpec(
            text, "fact", f"consent status for {purpose}", values=consent_values
        )
        out[f"consent_ref_{purpose}"] = FieldSpec(text, "fact", f"consent record id ({purpose})")
    for kind in SuppressionKind:
        out[f"suppressed_{kind}"] = FieldSpec(boolean, "fact", f"on the {kind} suppression list")
        out[f"suppression_ref_{kind}"] = FieldSpec(text, "fact", f"suppression entry ({kind})")
    out.update(
        {
            "regime": FieldSpec(
                text, "derived", "regime of the subject's country", values=frozenset(Regime)
            ),
            "minor": FieldSpec(boolean, "derived", "age below the minor age of the regime"),
            "provider_listed": FieldSpec(
                boolean, "derived", "provider allowed for the purpose and regime"
            ),
            "provider_region_allowed": FieldSpec(
                boolean, "derived", "provider region on the allow-list of purpose and regime"
            ),
            "provider_transfer_basis_allowed": FieldSpec(
                boolean, "derived", "provider transfer basis accepted for purpose and regime"
            ),
            "provider": FieldSpec(text, "context", "provider asked (gate A)"),
            "provider_region": FieldSpec(text, "context", "where the provider processes"),
            "provider_transfer_basis": FieldSpec(
                text, "context", "provider transfer basis", values=frozenset(TransferBasis)
            ),
            "destination": FieldSpec(text, "context", "output destination (gate C)"),
        }
    )
    return out


CONDITION_FIELDS: dict[str, FieldSpec] = _fields()
"""Every field a condition may name: fact columns, derived facts and context keys.

Derived facts: `regime` (from `country` through `jurisdictions`; missing or unlisted country →
other), `minor` (`age` below the regime's minor age; missing when `age` is), and, for the
purpose being evaluated and the subject's regime, `provider_listed` (an allow-list entry exists
and names the context's `provider`, or names none), `provider_region_allowed` (the context's
`provider_region` is on it, or it lists `*`) and `provider_transfer_basis_allowed` (the
context's `provider_transfer_basis` is on it). Without a `provider` in the context the three
provider facts are missing (gate A as a subject-level pre-check); with one, whatever the
context does not declare (region, transfer basis) counts as not allowed.
"""

CONTEXT_KEYS: tuple[str, ...] = tuple(
    n for n, s in CONDITION_FIELDS.items() if s.origin == "context"
)
"""Keys the per-call context of `policy.engine.evaluate` may hold."""

REQUIRED_FACT_COLUMNS: tuple[str, ...] = (
    "subject",
    "country",
    "age",
    "is_customer",
    *(f"consent_{p}" for p in Purpose),
    *(f"suppressed_{k}" for k in SuppressionKind),
)
"""Columns the facts table must have (values may be missing)."""

OPTIONAL_FACT_COLUMNS: tuple[str, ...] = (
    *(f"consent_ref_{p}" for p in Purpose),
    *(f"suppression_ref_{k}" for k in SuppressionKind),
    "tcf_purposes",
)
"""Columns the facts table may have: evidence references and TCF consents (list-likes of ids)."""

RESERVED_RULE_IDS = frozenset({"consent", "default-deny"})
"""Rule ids the engine uses for decisions no configured rule took."""

DEFAULT_SPECIAL_CATEGORIES: tuple[str, ...] = (
    "interest.biometric",
    "interest.ethnicity",
    "interest.genetic",
    "interest.health",
    "interest.politics",
    "interest.religion",
    "interest.sex_life",
    "interest.sexual_orientation",
    "interest.trade_union",
    "location.precise",
)
"""GDPR Art. 9(1) categories and CPRA sensitive data as taxonomy prefixes (used if not set)."""

TCF_CONSENT_ONLY = frozenset({3, 4, 5, 6})
"""IAB TCF v2.2 purposes for which legitimate interest is not available (consent only)."""

_TOPIC = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$"
_NAME = r"^[a-z][a-z0-9_]*$"
_RULE_ID = r"^[a-z][a-z0-9_.-]{0,63}$"
_REASON = r"^[A-Z][A-Z0-9_]{1,63}$"

Scalar = StrictBool | StrictInt | StrictFloat | StrictStr
Topic = Annotated[str, Field(pattern=_TOPIC)]
Country = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
RegionToken = Annotated[str, Field(pattern=r"^(\*|[A-Z]{2,3})$")]
OPS: tuple[str, ...] = ("eq", "ne", "in", "not_in", "lt", "le", "gt", "ge", "exists")
"""Condition operators, as written in YAML."""
_OPS_BY_KIND: dict[FieldKind, frozenset[str]] = {
    FieldKind.BOOL: frozenset({"eq", "ne", "exists"}),
    FieldKind.NUMBER: frozenset(OPS),
    FieldKind.TEXT: frozenset({"eq", "ne", "in", "not_in", "exists"}),
}

Loc = tuple[str | int, ...]
_YAML_BOOL_HINT = " (YAML reads unquoted NO, yes, on, off as true/false: quote the value)"


def _fail(title: str, problems: list[tuple[Loc, str]], value: Any) -> NoReturn:
    """Raise all `problems` at once, each at its own location (pydantic nests the locations)."""
    raise ValidationError.from_exception_data(
        title,
        [
            InitErrorDetails(
                type=PydanticCustomError("policy", "{msg}", {"msg": msg}), loc=loc, input=value
            )
            for loc, msg in problems
        ],
    )


def _enum_sorted(values: tuple[E, ...], enum: type[E]) -> tuple[E, ...]:
    """Distinct `values` in the enum's declaration order (set-like fields hash the same)."""
    present = set(values)
    return tuple(member for member in enum if member in present)


def topic_under(topic: str, prefix: str) -> bool:
    """Whether a taxonomy key is `prefix` or below it (dot boundary: health ≠ healthy_food)."""
    return topic == prefix or topic.startswith(prefix + ".")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Model):
    """One test on a field (`{field: age, lt: 16}`) or a group (`{any: [...]}`, `{all: [...]}`)."""

    field: str | None = None
    eq: Scalar | None = None
    ne: Scalar | None = None
    in_: Annotated[tuple[Scalar, ...] | None, Field(alias="in")] = None
    not_in: tuple[Scalar, ...] | None = None
    lt: StrictInt | StrictFloat | None = None
    le: StrictInt | StrictFloat | None = None
    gt: StrictInt | StrictFloat | None = None
    ge: StrictInt | StrictFloat | None = None
    exists: StrictBool | None = None
    any_: Annotated[tuple[Condition, ...] | None, Field(alias="any")] = None
    all_: Annotated[tuple[Condition, ...] | None, Field(alias="all")] = None

    @model_validator(mode="after")
    def _shape(self) -> Condition:
        given = [self._key(name) for name in self.model_fields_set if name != "field"]
        problems: list[tuple[Loc, str]] = []
        groups = [k for k in given if k in ("any", "all")]
        ops = [k for k in given if k in OPS]
        if groups:
            if len(given) > 1 or self.field is not None:
                problems.append(((), "a condition is either {any: [...]}, {all: [...]} or a test"))
            for key in groups:
                if not getattr(self, self._attr(key)):
                    problems.append(((key,), "needs at least one condition"))
        elif self.field is None:
            problems.append(((), "needs `field` and one op (" + ", ".join(OPS) + ")"))
        elif len(ops) != 1:
            problems.append(((), f"needs exactly one op out of {', '.join(OPS)}; got {ops}"))
        else:
            problems.extend(self._check_test(ops[0]))
        if problems:
            _fail("Condition", problems, self.model_dump(by_alias=True, exclude_none=True))
        return self

    @staticmethod
    def _key(attr: str) -> str:
        return attr.rstrip("_")

    @staticmethod
    def _attr(key: str) -> str:
        return key + "_" if key in ("in", "any", "all") else key

    def _check_test(self, op: str) -> list[tuple[Loc, str]]:
        assert self.field is not None
        spec = CONDITION_FIELDS.get(self.field)
        if spec is None:
            close = difflib.get_close_matches(self.field, CONDITION_FIELDS, n=1)
            hint = f"did you mean {close[0]}?" if close else "known: " + ", ".join(CONDITION_FIELDS)
            return [(("field",), f"unknown field {self.field!r}; {hint}")]
        if op not in _OPS_BY_KIND[spec.kind]:
            allowed = ", ".join(o for o in OPS if o in _OPS_BY_KIND[spec.kind])
            return [((op,), f"{self.field} is {spec.kind}: use one of {allowed}")]
        value = getattr(self, self._attr(op))
        if value is None:
            return [((op,), "value must not be null (use `exists: false` for missing values)")]
        if op == "exists":
            return []
        items = list(value) if op in ("in", "not_in") else [value]
        if op in ("in", "not_in") and not items:
            return [((op,), "needs at least one value")]
        problems: list[tuple[Loc, str]] = []
        for item in items:
            problem = _value_problem(spec, item)
            if problem:
                problems.append(((op,), f"{self.field}: {problem}"))
        return problems

    @property
    def op(self) -> tuple[str, Any]:
        """The op of a test and its value (a tuple for in/not_in)."""
        for key in OPS:
            value = getattr(self, self._attr(key))
            if value is not None:
                return key, value
        raise ValueError("a group condition has no op")

    def fields(self) -> Iterator[str]:
        """Every field this condition names, depth first, in order."""
        if self.field is not None:
            yield self.field
        for group in (self.any_, self.all_):
            for child in group or ():
                yield from child.fields()


def _value_problem(spec: FieldSpec, value: Any) -> str | None:
    """Why `value` cannot be compared with a field of `spec`, or None."""
    if spec.kind is FieldKind.BOOL:
        return None if isinstance(value, bool) else f"expects true or false, not {value!r}"
    if spec.kind is FieldKind.NUMBER:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"expects a number, not {value!r}"
    if not isinstance(value, str):
        hint = _YAML_BOOL_HINT if isinstance(value, bool) else ""
        return f"expects text, not {value!r}{hint}"
    if spec.values is not None and value not in spec.values:
        return f"{value!r} is not one of {', '.join(sorted(spec.values))}"
    if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
        return f"{value!r} does not match {spec.pattern}"
    return None


class Rule(_Model):
    """One policy rule: where it applies, when it matches, and what it decides.

    `match` holds when all its conditions hold (an empty `match` always holds); any condition
    of `unless` exempts the subject. Allow rules record their `basis`; deny rules override
    every allow; redact rules turn an allow into a redact that removes `redact` (fields or
    topics). An allow rule with `topics` only permits those special-category topics at the
    signal filter (gate B) for the subjects it matches; it records no basis for the purpose.
    """

    id: Annotated[str, Field(pattern=_RULE_ID)]
    version: Annotated[int, Field(ge=1)]
    priority: int
    description: Annotated[str, Field(min_length=1)]
    gates: tuple[Gate, ...] = tuple(Gate)
    purposes: tuple[Purpose, ...] = tuple(Purpose)
    regimes: tuple[Regime, ...] = tuple(Regime)
    match: tuple[Condition, ...] = ()
    unless: tuple[Condition, ...] = ()
    outcome: Outcome
    reason: Annotated[str, Field(pattern=_REASON)]
    """A `PolicyReason` or a custom UPPER_SNAKE code."""
    basis: LawfulBasis | None = None
    redact: tuple[Topic, ...] = ()
    topics: tuple[Topic, ...] = ()

    @field_validator("gates")
    @classmethod
    def _gates(cls, value: tuple[Gate, ...]) -> tuple[Gate, ...]:
        return _enum_sorted(value, Gate)

    @field_validator("purposes")
    @classmethod
    def _purposes(cls, value: tuple[Purpose, ...]) -> tuple[Purpose, ...]:
        return _enum_sorted(value, Purpose)

    @field_validator("regimes")
    @classmethod
    def _regimes(cls, value: tuple[Regime, ...]) -> tuple[Regime, ...]:
        return _enum_sorted(value, Regime)

    @field_validator("redact", "topics")
    @classmethod
    def _set_like(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        problems: list[tuple[Loc, str]] = []
        if self.id in RESERVED_RULE_IDS:
            problems.append((("id",), f"{self.id!r} is reserved for the engine's own decisions"))
        for key in ("gates", "purposes", "regimes"):
            if not getattr(self, key):
                problems.append(((key,), "must not be empty (leave it out to mean all)"))
        if self.outcome is Outcome.ALLOW and self.basis is None:
            problems.append((("basis",), "an allow rule must name the lawful basis it records"))
        if self.outcome is not Outcome.ALLOW and self.basis is not None:
            problems.append((("basis",), f"only allow rules record a basis, not {self.outcome}"))
        if self.outcome is Outcome.REDACT and not self.redact:
            problems.append((("redact",), "a redact rule must list the fields or topics to drop"))
        if self.outcome is not Outcome.REDACT and self.redact:
            problems.append((("redact",), "only redact rules list fields to drop"))
        if self.topics and self.outcome is not Outcome.ALLOW:
            problems.append((("topics",), "only allow rules permit special-category topics"))
        if self.topics and self.basis not in (None, LawfulBasis.CONSENT):
            # Art. 9(2)(a): for marketing, explicit consent is the only exception on offer.
            problems.append((("basis",), "special-category topics need basis consent"))
        if problems:
            _fail("Rule", problems, self.id)
        return self

    @property
    def ref(self) -> str:
        """`id@version`, as decisions name the rule."""
        return f"{self.id}@{self.version}"

    @property
    def conditional(self) -> bool:
        """Whether the rule depends on the subject (conditions or a regime restriction)."""
        return bool(self.match or self.unless) or len(self.regimes) < len(Regime)

    @cached_property
    def evidence_fields(self) -> tuple[str, ...]:
        """Reference columns that evidence a match: `consent_ref_<p>` for a `consent_<p>`
        condition, `suppression_ref_<k>` for a `suppressed_<k>` one (from `match` only)."""
        out: list[str] = []
        for condition in self.match:
            for name in condition.fields():
                ref = None
                if name.startswith("consent_") and not name.startswith("consent_ref_"):
                    ref = "consent_ref_" + name.removeprefix("consent_")
                elif name.startswith("suppressed_"):
                    ref = "suppression_ref_" + name.removeprefix("suppressed_")
                if ref is not None and ref not in out:
                    out.append(ref)
        return tuple(out)


class PurposeSpec(_Model):
    """What a purpose is for and which lawful bases may support it."""

    description: Annotated[str, Field(min_length=1)]
    bases: Annotated[tuple[LawfulBasis, ...], Field(min_length=1)]

    @field_validator("bases")
    @classmethod
    def _bases(cls, value: tuple[LawfulBasis, ...]) -> tuple[LawfulBasis, ...]:
        return _enum_sorted(value, LawfulBasis)


class MinorAge(_Model):
    """Below this age a subject is a minor; 16 unless a regime says otherwise (GDPR Art. 8)."""

    default: Annotated[int, Field(ge=13, le=18)] = 16
    regimes: dict[Regime, Annotated[int, Field(ge=13, le=18)]] = Field(default_factory=dict)


class ProviderAllowance(_Model):
    """Where providers may process a regime's subjects for a purpose.

    Regions are tokens such as EU, EEA, UK, US or an ISO country, compared literally with the
    provider's declared region; `*` allows any region. A provider outside them needs one of
    `transfer_bases`. `names`, if given, lists the only providers allowed at all (e.g. those
    with a signed data processing agreement).
    """

    regions: tuple[RegionToken, ...] = ()
    transfer_bases: tuple[TransferBasis, ...] = ()
    names: tuple[Annotated[str, Field(pattern=_NAME)], ...] | None = None
    identifier_forms: tuple[IdentifierForm, ...] = (
        IdentifierForm.EMAIL_SHA256,
        IdentifierForm.PHONE_SHA256,
    )
    """Forms in which identifiers may be sent (minimisation): the least identifying form a
    provider accepts is chosen among these. Raw email or phone only where listed."""

    @field_validator("regions", "names")
    @classmethod
    def _set_like(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if value is None else tuple(sorted(set(value)))

    @field_validator("transfer_bases")
    @classmethod
    def _bases(cls, value: tuple[TransferBasis, ...]) -> tuple[TransferBasis, ...]:
        return _enum_sorted(value, TransferBasis)

    @field_validator("identifier_forms")
    @classmethod
    def _forms(cls, value: tuple[IdentifierForm, ...]) -> tuple[IdentifierForm, ...]:
        return _enum_sorted(value, IdentifierForm)


class Retention(_Model):
    """How long signals (by kind, days since observed) and outputs (days) may be kept."""

    signals: dict[SignalKind, Annotated[int, Field(ge=1)]]
    outputs: Annotated[int, Field(ge=1)]

    @field_validator("signals")
    @classmethod
    def _all_kinds(cls, value: dict[SignalKind, int]) -> dict[SignalKind, int]:
        missing = [k.value for k in SignalKind if k not in value]
        if missing:
            raise ValueError(f"set a retention for every signal kind; missing: {missing}")
        return value


class PolicyBundle(_Model):
    """A versioned policy: purposes, jurisdictions, limits and rules. See the module docstring."""

    name: Annotated[str, Field(min_length=1)]
    version: Annotated[str, Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z._-]{0,39}$")]
    """A label such as 2026.11.1; decisions taken by no rule name it (`consent@2026.11.1`)."""
    purposes: dict[Purpose, PurposeSpec]
    jurisdictions: dict[Regime, tuple[Country, ...]]
    """Countries of each regime; any other country, and a missing one, is `other`."""
    minor_age: MinorAge = Field(default_factory=MinorAge)
    special_categories: tuple[Topic, ...] = DEFAULT_SPECIAL_CATEGORIES
    providers: dict[Purpose, dict[Regime, ProviderAllowance]] = Field(default_factory=dict)
    confidence_floors: dict[Purpose, Annotated[float, Field(ge=0, lt=1)]] = Field(
        default_factory=dict
    )
    retention: Retention
    destinations: dict[Purpose, tuple[Annotated[str, Field(pattern=_NAME)], ...]] = Field(
        default_factory=dict
    )
    """Output fields each destination purpose may receive; a purpose not listed receives none."""
    tcf: dict[
        Purpose, Annotated[tuple[Annotated[int, Field(ge=1, le=11)], ...], Field(min_length=1)]
    ] = Field(default_factory=dict)
    """TCF v2.2 purposes that must all have consent for it to count as consent for a purpose."""
    rules: tuple[Rule, ...] = ()

    @field_validator("jurisdictions", mode="before")
    @classmethod
    def _norway(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted NO (Norway) as false; say so instead of "not a string".
        if isinstance(value, dict):
            problems: list[tuple[Loc, str]] = [
                ((str(regime), index), f"{code!r} is not a country code{_YAML_BOOL_HINT}")
                for regime, codes in value.items()
                if isinstance(codes, list)
                for index, code in enumerate(codes)
                if isinstance(code, bool)
            ]
            if problems:
                _fail("jurisdictions", problems, value)
        return value

    # Each check below is a validator of the field it reports on, reading the fields declared
    # before it from `info.data`: then a broken rule does not hide a broken jurisdiction, and
    # the loader reports both at once.

    @field_validator("purposes")
    @classmethod
    def _all_purposes(cls, value: dict[Purpose, PurposeSpec]) -> dict[Purpose, PurposeSpec]:
        missing = [p.value for p in Purpose if p not in value]
        if missing:
            raise ValueError(f"every purpose must be described; missing: {missing}")
        return value

    @field_validator("jurisdictions")
    @classmethod
    def _countries(cls, value: dict[Regime, tuple[str, ...]]) -> dict[Regime, tuple[str, ...]]:
        problems: list[tuple[Loc, str]] = []
        if Regime.OTHER in value:
            problems.append((("other",), "`other` is every country not listed; do not list it"))
        seen: dict[str, Regime] = {}
        for regime, codes in value.items():
            for code in codes:
                if code in seen and seen[code] is not regime:
                    problems.append(
                        ((regime.value,), f"{code} is listed under both {seen[code]} and {regime}")
                    )
                seen.setdefault(code, regime)
        if problems:
            _fail("jurisdictions", problems, value)
        return {regime: tuple(sorted(set(codes))) for regime, codes in value.items()}

    @field_validator("special_categories")
    @classmethod
    def _topics(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(value)))

    @field_validator("destinations")
    @classmethod
    def _fields(cls, value: dict[Purpose, tuple[str, ...]]) -> dict[Purpose, tuple[str, ...]]:
        return {purpose: tuple(sorted(set(names))) for purpose, names in value.items()}

    @field_validator("tcf")
    @classmethod
    def _tcf(
        cls, value: dict[Purpose, tuple[int, ...]], info: ValidationInfo
    ) -> dict[Purpose, tuple[int, ...]]:
        purposes: dict[Purpose, PurposeSpec] = info.data.get("purposes", {})
        problems: list[tuple[Loc, str]] = []
        for purpose, ids in value.items():
            spec = purposes.get(purpose)
            if spec is None:
                continue
            if LawfulBasis.CONSENT not in spec.bases:
                problems.append(
                    ((purpose.value,), f"{purpose} does not accept consent, so TCF cannot count")
                )
            consent_only = sorted(TCF_CONSENT_ONLY.intersection(ids))
            if consent_only and LawfulBasis.LEGITIMATE_INTERESTS in spec.bases:
                problems.append(
                    (
                        (purpose.value,),
                        f"TCF purposes {consent_only} need consent, never legitimate interest: "
                        f"remove legitimate_interests from purposes.{purpose}.bases",
                    )
                )
        if problems:
            _fail("tcf", problems, value)
        return {purpose: tuple(sorted(set(ids))) for purpose, ids in value.items()}

    @field_validator("rules")
    @classmethod
    def _rules(cls, value: tuple[Rule, ...], info: ValidationInfo) -> tuple[Rule, ...]:
        purposes: dict[Purpose, PurposeSpec] = info.data.get("purposes", {})
        # A field that failed its own validation is absent from info.data: skip its checks.
        special: tuple[str, ...] | None = info.data.get("special_categories")
        problems: list[tuple[Loc, str]] = []
        first: dict[str, int] = {}
        for index, rule in enumerate(value):
            if rule.id in first:
                problems.append(
                    (
                        (index, "id"),
                        f"rule id {rule.id!r} is already used by rules[{first[rule.id]}]",
                    )
                )
            first.setdefault(rule.id, index)
            if rule.basis is not None and not rule.topics:
                refusing = [
                    p.value
                    for p in rule.purposes
                    if p in purposes and rule.basis not in purposes[p].bases
                ]
                if refusing:
                    problems.append(
                        (
                            (index, "basis"),
                            f"basis {rule.basis} is not accepted by purpose(s) {refusing}; "
                            "narrow `purposes` or accept the basis in `purposes.<p>.bases`",
                        )
                    )
            problems.extend(
                ((index, "topics"), f"{topic} is not a special category; only those need a rule")
                for topic in rule.topics
                if special is not None and not any(topic_under(topic, c) for c in special)
            )
        if problems:
            _fail("rules", problems, value)
        return value

    @cached_property
    def hash(self) -> str:
        """SHA-256 hex of the canonical JSON of the bundle (see the module docstring)."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        data["rules"] = sorted(data["rules"], key=lambda rule: rule["id"])
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @cached_property
    def country_regimes(self) -> dict[str, Regime]:
        """ISO alpha-2 country → regime, for the listed countries."""
        return {code: regime for regime, codes in self.jurisdictions.items() for code in codes}

    @cached_property
    def rules_by_priority(self) -> tuple[Rule, ...]:
        """Rules in evaluation order: priority descending, then id."""
        return tuple(sorted(self.rules, key=lambda rule: (-rule.priority, rule.id)))

    def minor_age_for(self, regime: Regime) -> int:
        """Age below which a subject of `regime` is a minor."""
        return self.minor_age.regimes.get(regime, self.minor_age.default)

    def accepts(self, purpose: Purpose, basis: LawfulBasis) -> bool:
        """Whether `basis` may support `purpose`."""
        return basis in self.purposes[purpose].bases


def default_bundle_path() -> Path:
    """Path of the shipped default bundle (`policy/conf/default.yaml`)."""
    return Path(__file__).resolve().parent / "conf" / "default.yaml"


def load_bundle(path: Path | str) -> PolicyBundle:
    """Load and validate a policy bundle; raise ConfigError listing every problem with file:line."""
    return load_yaml_model(Path(path).resolve(), PolicyBundle)
