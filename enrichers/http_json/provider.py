"""The `http_json` provider: builds requests from its settings, sends them through the
ProviderClient and maps the answers with the pure functions of `mapping`."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote

import pandas as pd

from enrichers.base import (
    BATCH_COLUMNS,
    FORM,
    SUBJECT,
    VALUE,
    Billing,
    Capabilities,
    LookupResult,
    LookupStatus,
    ProviderError,
    ProviderSettings,
    TerminalProviderError,
    rows_per_lookup,
)
from enrichers.http.client import ProviderClient
from enrichers.http_json.config import HttpJsonSettings
from enrichers.http_json.mapping import (
    BAD_IDENTIFIER,
    FORM_NOT_ACCEPTED,
    NO_MATCH,
    ItemOutcome,
    JsonPath,
    ResponseShape,
    count_unmapped,
    failed,
    identifier_ok,
    map_batch,
    map_item,
    normalise_label,
    to_result,
)
from profiles.errors import KeyMaterialError
from profiles.types import IdentifierForm

AUTH_SECRET = "auth.secret"  # noqa: S105 - the slot's name, not a secret
"""Secret slot of `auth.secret_env` / `auth.secret_block` (see `enrichers.registry.build`)."""

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_SECRET_OK = re.compile(r"^[\x21-\x7e]+$")


def utc_now() -> datetime:
    """The current time in UTC (the default provider clock)."""
    return datetime.now(UTC)


def render(template: str, subs: Mapping[str, str]) -> str:
    """Replace `{name}` placeholders named in `subs`; other braces stay as written."""
    return _PLACEHOLDER.sub(lambda m: subs.get(m[1], m[0]), template)


def render_json(template: Any, subs: Mapping[str, str]) -> Any:
    """`render` applied to every string (keys too) inside a JSON template."""
    if isinstance(template, str):
        return render(template, subs)
    if isinstance(template, dict):
        return {render(str(k), subs): render_json(v, subs) for k, v in template.items()}
    if isinstance(template, list):
        return [render_json(v, subs) for v in template]
    return template


def set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `target[a][b]... = value` for `dotted` = "a.b...", creating objects on the way."""
    *parents, last = dotted.split(".")
    node = target
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[last] = value


def check_batch(batch: pd.DataFrame, capabilities: Capabilities, provider: str) -> None:
    """Raise TerminalProviderError if `batch` lacks BATCH_COLUMNS or is over batch_size."""
    missing = [c for c in BATCH_COLUMNS if c not in batch.columns]
    if missing:
        raise TerminalProviderError(
            provider, f"lookup batch lacks columns {missing}", reason="bad_batch"
        )
    most = rows_per_lookup(capabilities)
    if len(batch) > most:
        raise TerminalProviderError(
            provider,
            f"lookup batch of {len(batch)} rows exceeds the {most} rows per lookup",
            reason="bad_batch",
        )


Answer = Callable[[list[tuple[IdentifierForm, str]]], Awaitable[list[ItemOutcome]]]
"""Outcomes of (form, value) pairs, in order: what a provider asks its endpoint."""


async def lookup_rows(
    batch: pd.DataFrame,
    *,
    capabilities: Capabilities,
    provider: str,
    unmapped: Counter[str],
    answer: Answer,
) -> LookupResult:
    """One `lookup` of a provider built on the item mapping: checks the batch, asks `answer`
    for the rows whose form the provider accepts (the others fail as not sendable), counts
    unmapped labels into `unmapped`, and returns the contract's frames."""
    check_batch(batch, capabilities, provider)
    values = batch[VALUE].tolist()
    forms, outcomes = sendable(batch[FORM].tolist(), values, capabilities.accepts)
    rows = [i for i, form in enumerate(forms) if form is not None]
    if rows:
        pairs = [(form, values[i]) for i in rows if (form := forms[i]) is not None]
        for i, outcome in zip(rows, await answer(pairs), strict=True):
            outcomes[i] = outcome
    final = [o if o is not None else failed(FORM_NOT_ACCEPTED) for o in outcomes]
    unmapped.update(count_unmapped(final))
    return to_result(
        batch[SUBJECT].tolist(),
        final,
        [form is not None for form in forms],
        provider=provider,
        kind=capabilities.signal_kind,
        billing=capabilities.billing,
    )


async def each(calls: Sequence[Awaitable[ItemOutcome]]) -> list[ItemOutcome]:
    """Await one request per identifier, concurrently; one whose request fails ends failed
    with the error's reason code, and the others keep their answers."""

    async def one(call: Awaitable[ItemOutcome]) -> ItemOutcome:
        try:
            return await call
        except ProviderError as exc:
            return failed(exc.reason)

    return list(await asyncio.gather(*(one(call) for call in calls)))


def sendable(
    forms: Sequence[Any], values: Sequence[Any], accepts: Sequence[IdentifierForm]
) -> tuple[list[IdentifierForm | None], list[ItemOutcome | None]]:
    """Each row's form (None if not accepted) and, for rows that cannot be sent, the outcome."""
    parsed: list[IdentifierForm | None] = []
    outcomes: list[ItemOutcome | None] = []
    for raw_form, value in zip(forms, values, strict=True):
        try:
            form: IdentifierForm | None = IdentifierForm(str(raw_form))
        except ValueError:
            form = None
        if form is None or form not in accepts:
            parsed.append(None)
            outcomes.append(failed(FORM_NOT_ACCEPTED))
        elif not identifier_ok(form, value):
            parsed.append(None)
            outcomes.append(failed(BAD_IDENTIFIER))
        else:
            parsed.append(form)
            outcomes.append(None)
    return parsed, outcomes


def request_cost(billing: Billing, identifiers: int) -> int:
    """Units to reserve before a call (per match: 0, charged after; see ProviderClient)."""
    if billing is Billing.PER_ID:
        return identifiers
    if billing is Billing.PER_CALL:
        return 1
    return 0


def settle(client: ProviderClient, billing: Billing, outcomes: Sequence[ItemOutcome]) -> None:
    """Charge the matches of a per-match provider after the call.

    If that overruns the budget the client has counted the units and the next request will be
    refused; the answers already paid for are kept (dropping them would pay twice next run).
    """
    if billing is not Billing.PER_MATCH:
        return
    matches = sum(o.status is LookupStatus.MATCHED for o in outcomes)
    if matches:
        with contextlib.suppress(TerminalProviderError):
            client.charge(matches)


def auth_header(name: str, scheme: str | None, secret: str, provider: str) -> dict[str, str]:
    """The credential header; KeyMaterialError (naming no value) if the secret is unusable."""
    if not _SECRET_OK.match(secret):
        raise KeyMaterialError(
            f"provider {provider}: the secret for {name} is empty or has spaces or control "
            "characters"
        )
    return {name: f"{scheme} {secret}" if scheme else secret}


def response_shape(settings: HttpJsonSettings) -> ResponseShape:
    """Compile the settings' response mapping, topic map and score scale."""
    r = settings.response

    def path(text: str | None) -> JsonPath | None:
        return None if text is None else JsonPath.parse(text)

    return ResponseShape(
        interests=JsonPath.parse(r.interests),
        topic_map={normalise_label(k): v for k, v in settings.topic_map.items()},
        scorer=settings.score_scale.scorer(),
        items=path(r.items),
        ref=path(r.ref),
        status=path(r.status),
        matched_values=tuple(r.matched_values),
        no_match_values=tuple(r.no_match_values),
        topic=path(r.topic),
        score=path(r.score),
        score_from_item=r.score_from == "item",
        observed_at=path(r.observed_at),
    )


class HttpJsonProvider:
    """One configured JSON-over-HTTP provider instance."""

    def __init__(
        self,
        settings: HttpJsonSettings,
        *,
        secret: str | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self.capabilities = Capabilities(
            accepts=tuple(settings.identifier_forms),
            produces=tuple(settings.produces),
            region=settings.region,
            transfer_basis=settings.transfer_basis,
            batch_size=settings.batch_size,
            billing=settings.billing,
            signal_kind=settings.signal_kind,
        )
        self._shape = response_shape(settings)
        self._clock = clock
        self._headers = dict(settings.headers)
        if settings.auth is not None:
            if secret is None:
                raise KeyMaterialError(f"provider {self.name}: auth names a secret; none given")
            self._headers.update(
                auth_header(settings.auth.header, settings.auth.scheme, secret, self.name)
            )
        self._authenticated = settings.auth is not None
        self._unmapped: Counter[str] = Counter()
        self._ok_statuses = tuple(settings.no_match_statuses)
        self._single_cost = request_cost(settings.billing, 1)

    def __repr__(self) -> str:
        # Never the headers: they hold the credential.
        return f"HttpJsonProvider(name={self.name!r})"

    @property
    def unmapped_labels(self) -> dict[str, int]:
        """Provider labels dropped because the topic map does not know them, with counts."""
        return dict(self._unmapped)

    def request_parameters(self) -> dict[str, Any]:
        """Everything besides the identifier that shapes the answer or its mapping."""
        shaping = {
            "type",
            "base_url",
            "endpoint",
            "method",
            "mode",
            "form_params",
            "headers",
            "query",
            "query_param",
            "body",
            "batch",
            "no_match_statuses",
            "response",
            "score_scale",
            "topic_map",
            "signal_kind",
        }
        params = self.settings.model_dump(mode="json", include=shaping)
        params["authenticated"] = self._authenticated
        return params

    async def lookup(self, batch: pd.DataFrame, client: ProviderClient) -> LookupResult:
        """Look up one batch; see `enrichers.base.Provider.lookup`."""
        now = self._clock()

        async def answer(pairs: list[tuple[IdentifierForm, str]]) -> list[ItemOutcome]:
            if self.settings.mode == "single":
                answers = await each([self._single(client, f, v, now) for f, v in pairs])
            else:
                answers = await self._batch(client, pairs, now)
            settle(client, self.settings.billing, answers)
            return answers

        return await lookup_rows(
            batch,
            capabilities=self.capabilities,
            provider=self.name,
            unmapped=self._unmapped,
            answer=answer,
        )

    async def _single(
        self, client: ProviderClient, form: IdentifierForm | None, value: str, now: datetime
    ) -> ItemOutcome:
        assert form is not None  # rows are filtered on it
        s = self.settings
        subs = {"form": str(form), "param": s.param(form), "value": value}
        url = s.base_url + render(s.endpoint, {**subs, "value": quote(value, safe="")})
        params = {render(k, subs): render(v, subs) for k, v in s.query.items()}
        if s.query_param is not None:
            params[render(s.query_param, subs)] = value
        kwargs: dict[str, Any] = {"params": params, "headers": self._headers}
        if s.body is not None:
            kwargs["json"] = render_json(s.body, subs)
        response = await client.request(
            s.method, url, cost=self._single_cost, ok_statuses=self._ok_statuses, **kwargs
        )
        if response.status_code in self._ok_statuses:
            return NO_MATCH
        return map_item(client.json_or_error(response), self._shape, now=now)

    async def _batch(
        self,
        client: ProviderClient,
        identifiers: Sequence[tuple[IdentifierForm | None, str]],
        now: datetime,
    ) -> list[ItemOutcome]:
        s = self.settings
        layout = s.batch
        assert layout is not None  # the settings model requires it in batch mode
        refs = [str(i) for i in range(len(identifiers))]
        items: list[dict[str, Any]] = []
        for ref, (form, value) in zip(refs, identifiers, strict=True):
            assert form is not None
            subs = {"form": str(form), "param": s.param(form)}
            item: dict[str, Any] = {}
            if layout.id_key is not None:
                set_dotted(item, render(layout.id_key, subs), ref)
            if layout.form_key is not None:
                set_dotted(item, render(layout.form_key, subs), subs["param"])
            set_dotted(item, render(layout.value_key, subs), value)
            items.append(item)
        body = copy.deepcopy(s.body) if s.body is not None else {}
        set_dotted(body, layout.list_key, items)
        response = await client.request(
            s.method,
            s.base_url + s.endpoint,
            cost=request_cost(s.billing, len(identifiers)),
            ok_statuses=self._ok_statuses,
            params=dict(s.query),
            json=body,
            headers=self._headers,
        )
        if response.status_code in self._ok_statuses:
            return [NO_MATCH for _ in refs]
        document = client.json_or_error(response)
        return map_batch(document, self._shape, refs=refs, now=now)


class HttpJsonPlugin:
    """The `http_json` provider type."""

    name: ClassVar[str] = "http_json"
    settings_model: ClassVar[type[ProviderSettings]] = HttpJsonSettings

    def create(self, settings: ProviderSettings, secrets: Mapping[str, str]) -> HttpJsonProvider:
        """A provider for `settings`; `secrets[AUTH_SECRET]` holds the credential if any."""
        if not isinstance(settings, HttpJsonSettings):
            raise TypeError(f"http_json needs HttpJsonSettings, got {type(settings).__name__}")
        return HttpJsonProvider(settings, secret=secrets.get(AUTH_SECRET))


PLUGIN = HttpJsonPlugin()
"""The registered plugin object."""
