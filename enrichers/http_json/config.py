"""Settings of the `http_json` provider type: a JSON-over-HTTP API described entirely in YAML.

A minimal single-lookup instance (a People-Data-Labs-like person API)::

    - name: socialscore
      type: http_json
      base_url: https://api.socialscore.example
      endpoint: /v5/person/enrich
      identifier_forms: [email_sha256]
      form_params: {email_sha256: email_hash}
      query_param: "{param}"
      auth: {header: X-Api-Key, scheme: null, secret_env: SOCIALSCORE_API_KEY}
      region: US
      transfer_basis: scc
      billing: per_match
      produces: [interest]
      response:
        status: status
        interests: data.interests[*]
        score: likelihood
        score_from: item
      score_scale: {type: likelihood_1_10}
      topic_map: {hiking: interest.outdoors, cooking: interest.cooking}

Templates (`endpoint`, `query_param`, `query` values, `body` strings and the batch keys) may use
`{form}` (the IdentifierForm), `{param}` (its name at the provider, from `form_params`),
`{value}` (the identifier; URL-encoded in the endpoint) and, in batch items, `{ref}` (the
row's position in the batch: profile ids are never sent). Credentials are never written here:
`auth` names a secret (environment variable or Prefect Secret block) resolved at build time.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from enrichers.base import Billing, ProviderSettings
from enrichers.http_json.mapping import (
    JsonPath,
    Scorer,
    likelihood_to_probability,
    linear_to_probability,
    normalise_label,
    probability,
)
from profiles.types import IdentifierForm, SignalKind, TransferBasis

TOPIC_PATTERN: Final = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$"
"""A taxonomy dot key: `interest.outdoors.hiking`."""

Topic = Annotated[str, Field(pattern=TOPIC_PATTERN)]
Region = Annotated[str, Field(pattern=r"^[A-Z]{2,3}$")]
"""EU, EEA, UK, US or an ISO 3166-1 alpha-2 country, compared literally with the policy."""
EnvVarName = Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]{0,127}$")]
"""Name of an environment variable holding a secret (upper case: a pasted key fails here)."""
BlockName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,127}$")]
"""Name of a Prefect Secret block (lower case, digits and dashes, as Prefect requires)."""
Scalar = StrictBool | StrictInt | StrictStr

PLACEHOLDERS: Final = frozenset({"form", "param", "value", "ref"})
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_DOTTED = re.compile(r"^[A-Za-z_{][\w{}\-]*(\.[A-Za-z_{][\w{}\-]*)*$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
# Header and query names that carry credentials: those belong in `auth`, as a secret reference.
_CREDENTIAL_NAME = re.compile(r"auth|key|token|secret|password|signature|cookie", re.IGNORECASE)


def topic_under(topic: str, prefix: str) -> bool:
    """Whether `topic` is `prefix` or below it (`interest.health` covers `interest.health.x`)."""
    return topic == prefix or topic.startswith(prefix + ".")


def check_base_url(url: str) -> str:
    """An http(s) origin plus optional path; no credentials, query or fragment. No trailing /."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials; name a secret in auth instead")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment; use query: for parameters")
    return url.rstrip("/")


def _check_path(text: str) -> str:
    JsonPath.parse(text)
    return text


def placeholders(template: Any) -> set[str]:
    """Every `{name}` used in a template (a string, or strings inside lists and mappings)."""
    if isinstance(template, str):
        return set(_PLACEHOLDER.findall(template))
    if isinstance(template, dict):
        return set().union(*(placeholders(k) | placeholders(v) for k, v in template.items()))
    if isinstance(template, list):
        return set().union(*(placeholders(v) for v in template))
    return set()


def _check_placeholders(template: Any, allowed: frozenset[str], where: str) -> None:
    unknown = placeholders(template) - allowed
    if unknown:
        names = ", ".join("{" + n + "}" for n in sorted(unknown))
        usable = ", ".join("{" + n + "}" for n in sorted(allowed)) or "none"
        raise ValueError(f"unknown placeholder {names} in {where} (usable here: {usable})")


def _scalars(*values: bool | int | str) -> list[bool | int | str]:
    return list(values)


PathText = Annotated[str, AfterValidator(_check_path)]
"""A JSON path in the syntax of `enrichers.http_json.mapping`."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthSettings(_Model):
    """A credential sent as a header: `<header>: <scheme> <secret>` (or the bare secret)."""

    header: str = "Authorization"
    scheme: str | None = "Bearer"
    """`Bearer`, `Token`, ... or null to send the secret alone (e.g. `X-Api-Key: <secret>`)."""
    secret_env: EnvVarName | None = None
    """Environment variable holding the secret."""
    secret_block: BlockName | None = None
    """Prefect Secret block holding the secret."""

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        if not _HEADER_NAME.match(value):
            raise ValueError("not a valid HTTP header name")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> AuthSettings:
        if (self.secret_env is None) == (self.secret_block is None):
            raise ValueError("name the secret with exactly one of secret_env or secret_block")
        return self


class BatchLayout(_Model):
    """Where each identifier goes in a batch request body.

    The body is `body` (static fields) with a list at `list_key`; each list item gets the
    request reference at `id_key`, the form's name at `form_key` and the value at `value_key`.
    Keys are dotted (`params.{param}` makes `{"params": {"email_hash": "..."}}`).
    """

    list_key: str = "requests"
    id_key: str | None = "ref"
    """Where the reference goes (the row's position in the batch, echoed back by the provider);
    null if the provider answers in request order and echoes nothing."""
    form_key: str | None = None
    value_key: str = "value"

    @field_validator("list_key", "id_key", "form_key", "value_key")
    @classmethod
    def _dotted(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not _DOTTED.match(value):
            raise ValueError("must be a dotted key such as params.email")
        allowed = frozenset() if info.field_name == "list_key" else frozenset({"form", "param"})
        _check_placeholders(value, allowed, str(info.field_name))
        return value


class ResponseSettings(_Model):
    """Where things are in the response (JSON paths; see `enrichers.http_json.mapping`)."""

    items: PathText | None = None
    """Batch mode: the per-identifier items in the payload (`$[*]`, `results[*]`)."""
    ref: PathText | None = None
    """Batch mode: the echoed request reference in an item (`metadata.ref`); null: in order."""
    status: PathText | None = None
    """The per-item status or match flag in an item (`status`, `matched`); null: a parsed
    item is always a match (misses come as an HTTP status in `no_match_statuses`)."""
    matched_values: list[Scalar] = Field(default_factory=lambda: _scalars(200), min_length=1)
    """Status values that mean a match (`[200]`, or `[true]` for a match flag)."""
    no_match_values: list[Scalar] = Field(default_factory=lambda: _scalars(404))
    """Status values that mean no match; any other value fails the item (`item_error`)."""
    interests: PathText
    """The interest entries in an item (`data.interests[*]`)."""
    topic: PathText | None = None
    """The label in an interest entry (`name`); null: the entry is the label itself."""
    score: PathText | None = None
    """The score, in each interest entry or in the item (see `score_from`); null: no score,
    `score_scale` must then be `constant`."""
    score_from: Literal["interest", "item"] = "interest"
    observed_at: PathText | None = None
    """When the data was observed, in the item; null or missing: the lookup time."""

    @model_validator(mode="after")
    def _fan_out(self) -> ResponseSettings:
        if not JsonPath.parse(self.interests).fans_out:
            raise ValueError("interests must select a list's entries with [*]")
        return self


class _Bounds(_Model):
    floor: Annotated[float, Field(gt=0, lt=0.5)] = 0.01
    """Lowest confidence a signal gets."""
    ceiling: Annotated[float, Field(gt=0.5, lt=1)] = 0.99
    """Highest confidence a signal gets: no provider is ever certain."""


class ProbabilityScale(_Bounds):
    """The score already is a probability in [0, 1]."""

    type: Literal["probability"]

    def scorer(self) -> Scorer:
        """The Scorer applying this scale."""
        return Scorer(probability, self.floor, self.ceiling)


class LinearScale(_Bounds):
    """A score on [min, max] rescaled linearly to [0, 1] (e.g. a 0-100 affinity)."""

    type: Literal["linear"]
    min: float
    max: float

    @model_validator(mode="after")
    def _order(self) -> LinearScale:
        if not self.max > self.min:
            raise ValueError("max must be greater than min")
        return self

    def scorer(self) -> Scorer:
        """The Scorer applying this scale."""
        low, high = self.min, self.max
        return Scorer(
            lambda s: linear_to_probability(s, low=low, high=high), self.floor, self.ceiling
        )


class LikelihoodScale(_Bounds):
    """An integer 1-10 logarithmic match likelihood (PDL): odds x `odds_per_step` per step."""

    type: Literal["likelihood_1_10"]
    p_at_1: Annotated[float, Field(gt=0, lt=1)] = 0.5
    odds_per_step: Annotated[float, Field(gt=1)] = 2.0

    def scorer(self) -> Scorer:
        """The Scorer applying this scale."""
        p1, step = self.p_at_1, self.odds_per_step
        return Scorer(
            lambda s: likelihood_to_probability(s, p_at_1=p1, odds_per_step=step),
            self.floor,
            self.ceiling,
        )


class ConstantScale(_Bounds):
    """No score in the payload: every signal gets `confidence`."""

    type: Literal["constant"]
    confidence: Annotated[float, Field(gt=0, lt=1)]

    def scorer(self) -> Scorer:
        """The Scorer applying this scale."""
        return Scorer(probability, self.floor, self.ceiling, constant=self.confidence)


ScoreScale = Annotated[
    ProbabilityScale | LinearScale | LikelihoodScale | ConstantScale,
    Field(discriminator="type"),
]


class HttpJsonSettings(ProviderSettings):
    """A JSON-over-HTTP provider described in YAML (see the module docstring for an example)."""

    type: Literal["http_json"] = "http_json"
    base_url: Annotated[str, AfterValidator(check_base_url)]
    """Scheme, host and optional path prefix, e.g. `https://api.example.com`."""
    endpoint: str = ""
    """Path appended to base_url; single mode may use `{value}` (URL-encoded), `{form}`,
    `{param}` in it: `/v3/profiles/{value}`."""
    method: Literal["GET", "POST"] = "GET"
    mode: Literal["single", "batch"] = "single"
    """single: one request per identifier; batch: up to batch_size identifiers per POST."""
    batch_size: Annotated[int, Field(ge=1, le=1000)] = 1
    identifier_forms: Annotated[list[IdentifierForm], Field(min_length=1)]
    """Accepted forms, in the provider's order of preference."""
    form_params: dict[IdentifierForm, str] = Field(default_factory=dict)
    """Each form's name at the provider (`{param}`); default: the form's own name."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Static, non-secret headers (`Accept`, an API version). Credentials go in `auth`."""
    query: dict[str, str] = Field(default_factory=dict)
    """Query parameters (templates), e.g. `{min_likelihood: "3"}`."""
    query_param: str | None = None
    """Single mode: the query parameter that carries the identifier (template: `{param}`)."""
    body: dict[str, Any] | None = None
    """JSON body (POST). Single mode: a template (`{"{param}": "{value}"}`); batch mode: the
    static fields around the item list."""
    batch: BatchLayout | None = Field(default=None, validate_default=True)
    """Batch mode: where identifiers go in the body."""
    auth: AuthSettings | None = None
    region: Region
    transfer_basis: TransferBasis | None = None
    billing: Billing
    produces: Annotated[list[Topic], Field(min_length=1)]
    """Taxonomy prefixes this provider may return (gate B and the summary use them)."""
    signal_kind: SignalKind = SignalKind.INFERRED
    no_match_statuses: list[Annotated[int, Field(ge=200, le=599)]] = Field(
        default_factory=lambda: [404]
    )
    """HTTP statuses that mean "no such person" rather than an error."""
    response: ResponseSettings
    score_scale: ScoreScale
    topic_map: Annotated[dict[str, Topic], Field(min_length=1)]
    """Provider label -> taxonomy dot key (labels compared trimmed and case-insensitively).
    Labels not listed are counted and dropped, never passed through."""

    @field_validator("identifier_forms")
    @classmethod
    def _unique_forms(cls, value: list[IdentifierForm]) -> list[IdentifierForm]:
        if len(set(value)) != len(value):
            raise ValueError("lists a form twice")
        return value

    @field_validator("batch_size")
    @classmethod
    def _batch_size(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("mode") == "single" and value != 1:
            raise ValueError("must be 1 in single mode (use mode: batch for bulk endpoints)")
        return value

    @field_validator("form_params")
    @classmethod
    def _form_params(
        cls, value: dict[IdentifierForm, str], info: ValidationInfo
    ) -> dict[IdentifierForm, str]:
        forms = info.data.get("identifier_forms")
        if forms is not None:
            extra = sorted(str(f) for f in value if f not in forms)
            if extra:
                raise ValueError(f"names forms not in identifier_forms: {', '.join(extra)}")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if _CREDENTIAL_NAME.search(name):
                raise ValueError(f"{name!r} looks like a credential: use auth with a secret")
        _check_placeholders(value, frozenset(), "headers")
        return value

    @field_validator("query")
    @classmethod
    def _query(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        for name in value:
            if _CREDENTIAL_NAME.search(name):
                raise ValueError(f"{name!r} looks like a credential: use auth with a secret")
        single = info.data.get("mode") == "single"
        _check_placeholders(value, PLACEHOLDERS - {"ref"} if single else frozenset(), "query")
        return value

    @field_validator("body")
    @classmethod
    def _body(cls, value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        if value is None:
            return None
        if info.data.get("method") == "GET":
            raise ValueError("a GET request has no body; use method: POST")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            # YAML turns an unquoted 2024-01-01 into a date, which JSON cannot carry.
            raise ValueError("must be plain JSON (quote dates and times)") from None
        single = info.data.get("mode") == "single"
        _check_placeholders(value, PLACEHOLDERS - {"ref"} if single else frozenset(), "body")
        return value

    @field_validator("batch")
    @classmethod
    def _batch(cls, value: BatchLayout | None, info: ValidationInfo) -> BatchLayout | None:
        mode = info.data.get("mode")
        if mode == "batch":
            if value is None:
                raise ValueError("batch mode needs a batch layout (list_key, id_key, value_key)")
            if info.data.get("method") != "POST":
                raise ValueError("batch mode sends identifiers in a body: use method: POST")
        elif mode == "single" and value is not None:
            raise ValueError("only used in batch mode")
        return value

    @field_validator("topic_map")
    @classmethod
    def _topic_map(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        seen: dict[str, str] = {}
        for label in value:
            key = normalise_label(label)
            if not key:
                raise ValueError("has an empty label")
            if key in seen:
                raise ValueError(f"labels {seen[key]!r} and {label!r} are the same label")
            seen[key] = label
        produces = info.data.get("produces")
        if produces is not None:
            outside = sorted(
                {t for t in value.values() if not any(topic_under(t, p) for p in produces)}
            )
            if outside:
                raise ValueError(f"topics not under produces: {', '.join(outside)}")
        return value

    @field_validator("score_scale")
    @classmethod
    def _score_scale(cls, value: Any, info: ValidationInfo) -> Any:
        response = info.data.get("response")
        if isinstance(response, ResponseSettings):
            constant = isinstance(value, ConstantScale)
            if response.score is None and not constant:
                raise ValueError("response.score is not set: use {type: constant, confidence}")
            if response.score is not None and constant:
                raise ValueError("response.score is set: pick the scale its values are on")
        return value

    @model_validator(mode="after")
    def _placement(self) -> HttpJsonSettings:
        single = self.mode == "single"
        _check_placeholders(
            self.endpoint, PLACEHOLDERS - {"ref"} if single else frozenset(), "endpoint"
        )
        if self.query_param is not None:
            if not single:
                raise ValueError("query_param is for single mode; batch mode uses batch:")
            _check_placeholders(self.query_param, frozenset({"form", "param"}), "query_param")
        if single:
            places = placeholders(self.endpoint) | placeholders(self.query)
            places |= placeholders(self.body or {})
            if "value" not in places and self.query_param is None:
                raise ValueError(
                    "the identifier is not sent: put {value} in endpoint, query or body, "
                    "or set query_param"
                )
        elif self.response.items is None:
            raise ValueError("batch mode needs response.items (the per-identifier items)")
        return self

    def param(self, form: IdentifierForm) -> str:
        """The provider's name for `form` (`{param}`)."""
        return self.form_params.get(form, str(form))
