"""The run configuration (`enrich.yaml`): sources, identifier rules, outputs, schedule."""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from profiles.errors import ConfigError
from profiles.exports.audiences import Platform
from profiles.exports.crm import preset_from_config
from profiles.fusion import FusionSettings
from profiles.personas import PersonaSettings
from profiles.types import IDENTIFIER_FIELDS, CanonicalField, IdentifierKind, SourceKind
from profiles.yamlconf import load_yaml_model

_CRON_FIELD = r"[\w*/,\-?#LW]+"
_CRON = re.compile(rf"^\s*{_CRON_FIELD}(\s+{_CRON_FIELD}){{4}}\s*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve(value: Path, info: ValidationInfo) -> Path:
    """Resolve a relative path against the directory of the config file."""
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        return (Path(base) / value).resolve()
    return value


class SourceConfig(_Model):
    """One input file and how its columns map to canonical fields."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    kind: SourceKind = SourceKind.CONTACTS
    path: Path
    format: Literal["csv", "parquet"] = "csv"
    encoding: str = "utf-8"
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ","
    columns: dict[CanonicalField, str]
    default_region: str | None = None
    """ISO 3166-1 alpha-2 region for phones written without a country code and no row country."""
    id_namespace: Annotated[str | None, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")] = None
    """Namespace for customer ids; sources that share one (e.g. CRM export and consents) link."""
    unverified: list[IdentifierKind] = Field(default_factory=list)
    """Identifiers this source does not verify (typed in, never confirmed): they may attach a
    row to a profile but never join two profiles."""
    recency_field: CanonicalField | None = None
    """Timestamp column that says how recent a row is (golden record 'most_recent')."""

    @field_validator("path")
    @classmethod
    def _path(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve(value, info)

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        try:
            info = codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        # base64, rot13, zlib, idna... are codecs too, but they do not turn bytes into text
        if not getattr(info, "_is_text_encoding", True) or info.name == "idna":
            raise ValueError(f"{value!r} is not a text encoding")
        return value

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is None:
            return None
        region = value.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a phone region (ISO 3166-1 alpha-2, e.g. DK)")
        return region

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: dict[CanonicalField, str]) -> dict[CanonicalField, str]:
        if not any(f in value for f in IDENTIFIER_FIELDS):
            raise ValueError("map at least one identifier field: email, phone or customer_id")
        seen: dict[str, CanonicalField] = {}
        for canonical, column in value.items():
            if column in seen:
                raise ValueError(f"column {column!r} is mapped twice ({seen[column]}, {canonical})")
            seen[column] = canonical
        return value

    @property
    def namespace(self) -> str:
        """Namespace used for this source's customer ids."""
        return self.id_namespace or self.name


class CardinalityLimit(_Model):
    """An identifier linking more distinct values of another kind than `max` is shared.

    Customer ids are counted per namespace: an email on a CRM id, a shop account and a
    preference-centre login is one person's; an email on four shop accounts is not.

    A shared identifier (a household phone, a family address, a shop's counter email) may
    attach a row to a profile but never joins two profiles.
    """

    kind: IdentifierKind
    other: IdentifierKind
    max: Annotated[int, Field(ge=1)]

    @model_validator(mode="after")
    def _different(self) -> CardinalityLimit:
        if self.kind == self.other:
            raise ValueError("kind and other must differ")
        return self


class SurvivorshipRule(_Model):
    """How the golden record picks one row's value for a field."""

    rule: Literal["source_priority", "most_recent", "most_complete"] = "most_recent"
    sources: list[str] = Field(default_factory=list)
    """source_priority: sources in order of trust. Other rules: only these (empty: all)."""


def _default_limits() -> list[CardinalityLimit]:
    email, phone, cid = IdentifierKind.EMAIL, IdentifierKind.PHONE, IdentifierKind.CUSTOMER_ID
    return [
        CardinalityLimit(kind=email, other=cid, max=3),
        CardinalityLimit(kind=phone, other=email, max=3),
        CardinalityLimit(kind=phone, other=cid, max=3),
        CardinalityLimit(kind=cid, other=email, max=6),
    ]


class IdentityConfig(_Model):
    """Identity resolution: which identifiers may join records, and the golden record."""

    unique_namespaces: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]] = Field(
        default_factory=list
    )
    """Customer-id namespaces that hold one id per person (e.g. `crm`): two different ids of
    one of them never end up in one profile."""
    limits: list[CardinalityLimit] = Field(default_factory=_default_limits)
    block: dict[IdentifierKind, list[str]] = Field(default_factory=dict)
    """Values that never link anyone (raw, as a source would write them; customer ids as
    `namespace:id`), e.g. the shop's own info@ address or a test card."""
    golden: dict[CanonicalField, SurvivorshipRule] = Field(
        default_factory=lambda: {
            CanonicalField.COUNTRY: SurvivorshipRule(rule="most_recent"),
            CanonicalField.BIRTH_YEAR: SurvivorshipRule(rule="most_recent"),
        }
    )
    """Golden-record fields and how each one's surviving value is chosen. Country and birth
    year are there by default because the policy needs them (jurisdiction, minors)."""


class PlaceholderConfig(_Model):
    """Values that look like identifiers but identify nobody; they never link anything."""

    values: list[str] = Field(
        default_factory=lambda: [
            *("n/a", "na", "null", "none", "nil", "-", "--", "?", "unknown", "x", "xxx"),
            *("0", "-1", "tbd", "not provided", "no email", "no phone"),
        ]
    )
    """Tokens meaning 'no value' in any identifier field (compared case-insensitively)."""
    emails: list[str] = Field(default_factory=lambda: ["test@test.com", "none@none.com"])
    """Whole addresses that are placeholders (compared lower-cased)."""
    email_local_parts: list[str] = Field(
        default_factory=lambda: [
            *("none", "noemail", "no-email", "no_email", "noreply", "no-reply", "donotreply"),
            *("test", "null", "na", "n.a", "unknown", "dummy", "fake", "nobody", "asdf"),
        ]
    )
    """Local parts that mark an address as a placeholder on any domain."""
    email_domains: list[str] = Field(
        default_factory=lambda: ["test.com", "none.com", "noemail.com"]
    )
    """Domains whose every address is a placeholder."""
    customer_ids: list[str] = Field(default_factory=list)
    """Customer ids that are placeholders, besides all-zero ids and the `values` tokens."""
    phone_min_distinct_digits: Annotated[int, Field(ge=1, le=5)] = 3
    """A national number with fewer distinct digits than this (000000, 1111111) is a placeholder."""

    @field_validator("values", "emails", "email_local_parts", "email_domains", "customer_ids")
    @classmethod
    def _fold(cls, value: list[str]) -> list[str]:
        return sorted({v.strip().casefold() for v in value})


class IdentifierConfig(_Model):
    """How identifiers are validated."""

    check_deliverability: bool = False
    """Also look up each email domain's MX/A record (once per domain per run)."""
    deliverability_timeout_seconds: Annotated[float, Field(gt=0, le=30)] = 3.0
    placeholders: PlaceholderConfig = Field(default_factory=PlaceholderConfig)


class QuarantineConfig(_Model):
    """What the quarantine keeps."""

    keep_raw_encrypted: bool = True
    """Keep each quarantined row's raw values AES-GCM-encrypted, readable with the operator key."""


class ScheduleConfig(_Model):
    """When `enrich serve` runs the nightly flow."""

    cron: str = "0 2 * * *"
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not _CRON.match(value):
            raise ValueError(f"{value!r} is not a 5-field cron expression (e.g. '0 2 * * *')")
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from None
        return value


class PolicyConfig(_Model):
    """Where the policy bundle and the decision log are."""

    bundle: Path | None = None
    """Policy bundle (YAML); default: the shipped `policy/conf/default.yaml`."""
    decision_log_dir: Path | None = None
    """Folder of the decision log; default: `<state_dir>/decisions`."""

    @field_validator("bundle", "decision_log_dir")
    @classmethod
    def _paths(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)


class EnrichmentConfig(_Model):
    """External enrichment providers. Each entry is validated by its plugin's settings model
    (`enrichers.registry`), which this layer does not know; see README for the fields."""

    providers: list[dict[str, Any]] = Field(default_factory=list)


def _default_basis_labels() -> dict[str, dict[str, str]]:
    # HubSpot's options for hs_legal_basis (knowledge.hubspot.com, "How can I track the lawful
    # basis of processing in HubSpot"); only the unambiguous ones by default.
    return {
        "hubspot": {
            "consent": "Freely given consent from contact",
            "contract": "Performance of a contract",
        }
    }


class ExportsConfig(_Model):
    """What each run writes for the destinations (gate C decides who and which fields)."""

    enabled: bool = True
    crm: tuple[str, ...] = ("hubspot",)
    """CRM presets to write (`hubspot`, `salesforce`, `generic`), one folder each."""
    crm_presets: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per preset, overrides of its settings (`columns`, `bom`, `max_rows`, ...)."""
    audiences: tuple[Platform, ...] = tuple(Platform)
    """Ad platforms to write a hashed audience for."""
    analytics: bool = True
    """Write analytics.parquet (fields of the `analytics` destination)."""
    delta: bool = False
    """CRM files hold only profiles whose exported values changed (or who are new) since the
    last successful run's export of the same preset."""
    basis_labels: dict[str, dict[str, str]] = Field(default_factory=_default_basis_labels)
    """Per CRM preset, the CRM's label for each recorded lawful basis (HubSpot's "Legal basis
    for processing contact's data" options). A basis without a label is left empty: which
    legitimate-interest option applies (prospect/lead or existing customer) is the
    controller's call, so it is only filled when configured here, never guessed."""

    @model_validator(mode="after")
    def _presets(self) -> ExportsConfig:
        problems = []
        for name in dict.fromkeys((*self.crm, *self.crm_presets)):
            try:
                preset_from_config(name, self.crm_presets.get(name))
            except ConfigError as exc:
                problems += [f"crm preset {name}: {p}" for p in exc.problems]
        if problems:
            raise ValueError("; ".join(problems))
        return self


class AuditConfig(_Model):
    """The decision log's trust anchor: the public keys that may sign its checkpoints."""

    public_keys: tuple[Annotated[str, Field(pattern=r"^ed25519:[A-Za-z0-9_-]{43}$")], ...] = ()
    """Pinned Ed25519 public keys (`enrich keys init` adds the first); a checkpoint signed by
    any other key fails `enrich audit verify`. Keep a rotated key here: its checkpoints stay
    verifiable."""
    segment_entries: Annotated[int, Field(ge=1000, le=50_000_000)] = 1_000_000
    """Entries per log segment before a new one starts (each run also starts one)."""


RunnerKind = Literal["threads", "processes", "dask", "dask-local"]
"""Where the run's partition tasks (source chunks, providers, profile partitions) run:
`threads` of the flow's own process, `processes` (a Prefect process pool on this machine),
`dask` (an existing Dask cluster at `dask_address`) or `dask-local` (a Dask cluster of
`workers` processes started for the run)."""


class PerformanceConfig(_Model):
    """Resource knobs, and where the work runs (`enrich run --runner` overrides them)."""

    runner: RunnerKind = "processes"
    workers: Annotated[int, Field(ge=1, le=64)] = 2
    """Worker processes: of the process pool or the local Dask cluster; with `threads`, the
    processes validating identifiers (1 validates in the flow's own process)."""
    dask_address: Annotated[str | None, Field(pattern=r"^(tcp|tls|ucx|inproc)://\S+$")] = None
    """Scheduler of an existing Dask cluster (`runner: dask`), e.g. tcp://10.0.0.5:8786."""
    chunk_rows: Annotated[int, Field(ge=1, le=5_000_000)] = 200_000
    """Rows read and processed per chunk (one task each); bounds memory."""
    partition_profiles: Annotated[int, Field(ge=1, le=50_000_000)] = 250_000
    """Profiles per partition of the per-profile stages (policy, behaviour, fusion): one task
    each. It spreads the work; the runner never changes the outputs (only this size may
    change the row order of signals.parquet)."""

    @model_validator(mode="after")
    def _address(self) -> PerformanceConfig:
        if self.runner == "dask" and self.dask_address is None:
            raise ValueError("runner dask needs dask_address (the scheduler, tcp://host:8786)")
        return self


class RunConfig(_Model):
    """Everything one nightly run needs except secrets (those come from the environment)."""

    version: Literal[1] = 1
    sources: Annotated[list[SourceConfig], Field(min_length=1)]
    output_dir: Annotated[Path, Field(validate_default=True)] = Path("out")
    state_dir: Annotated[Path, Field(validate_default=True)] = Path("state")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    identifiers: IdentifierConfig = Field(default_factory=IdentifierConfig)
    quarantine: QuarantineConfig = Field(default_factory=QuarantineConfig)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    enrichment: EnrichmentConfig = Field(default_factory=EnrichmentConfig)
    behaviour: dict[str, Any] = Field(default_factory=dict)
    """First-party behaviour scores from the order lines; validated by
    `enrichers.behaviour.config.BehaviourSettings`, which this layer does not know."""
    declared: dict[str, Any] = Field(default_factory=dict)
    """Preference-centre answers as declared signals; validated by
    `enrichers.declared.provider.DeclaredSettings`, which this layer does not know."""
    taxonomy: Path | None = None
    """Interest taxonomy (YAML); default: the shipped `profiles/conf/taxonomy.yaml`."""
    fusion: FusionSettings = Field(default_factory=FusionSettings)
    personas: PersonaSettings = Field(default_factory=PersonaSettings)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    exports: ExportsConfig = Field(default_factory=ExportsConfig)
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)

    @field_validator("output_dir", "state_dir")
    @classmethod
    def _dirs(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve(value, info)

    @field_validator("taxonomy")
    @classmethod
    def _taxonomy(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dupes)}")
        unknown = sorted(
            {name for rule in self.identity.golden.values() for name in rule.sources} - set(names)
        )
        if unknown:
            raise ValueError(f"identity.golden names unknown source(s): {', '.join(unknown)}")
        return self

    @property
    def decision_log_dir(self) -> Path:
        """Folder of the policy decision log."""
        return self.policy.decision_log_dir or self.state_dir / "decisions"

    def source(self, name: str) -> SourceConfig:
        """The source called `name`."""
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(name)


def load_run_config(path: Path | str) -> RunConfig:
    """Load and validate `enrich.yaml`; relative paths are resolved against its directory."""
    path = Path(path).resolve()
    return load_yaml_model(path, RunConfig, context={"base_dir": path.parent})
