"""Column-wise policy evaluation (gates A, B, C), gate-B signal filtering and gate-C minimisation.

`evaluate` decides one purpose at one gate for a whole batch of subjects at once: every rule
becomes a boolean mask over the facts table (pandas/numpy, no per-row Python), and the masks
are combined in this order:

1. Basis. Consent granted for the purpose (`consent_<purpose>` is `granted`, or every TCF
   purpose mapped to it under `tcf:` has consent and the subject did not withdraw here)
   records basis `consent` if the purpose accepts consent. A matching allow rule records its
   own `basis` (the loader made sure the purpose accepts it). Consent is named first when both
   apply; otherwise the highest priority allow rule.
2. Deny. Any matching deny rule denies, whatever basis is recorded; the deny rule with the
   highest priority (ties: lowest id) is the deciding rule.
3. Allow. Otherwise a recorded basis allows, or redacts when redact rules match: their
   `redact` lists are merged and the highest priority redact rule is named.
4. Default deny. Otherwise the subject is denied with reason NO_LAWFUL_BASIS, or
   CONSENT_WITHDRAWN when they withdrew consent for the purpose.

Every row says which rule decided (`id@version`, `consent@<bundle version>` or
`default-deny@<bundle version>`), why (reason code), on what evidence (consent record id,
suppression entry, or `tcf:<ids>`), and which rules matched at all (`trail`), plus the bundle
hash. Rows are independent: the decision of a subject never depends on the other rows or on
their order.

Malformed input (a missing fact column, a consent status that is neither granted nor
withdrawn, an unknown context key) is a bug upstream and raises `PolicyInputError`; messages
name columns and counts, never a subject.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from numpy.typing import NDArray

from policy.bundle import (
    CONDITION_FIELDS,
    CONTEXT_KEYS,
    REQUIRED_FACT_COLUMNS,
    Condition,
    FieldKind,
    PolicyBundle,
    Rule,
)
from policy.types import (
    ConsentStatus,
    Gate,
    LawfulBasis,
    Outcome,
    PolicyReason,
    Purpose,
    Regime,
)
from profiles.errors import EnrichError
from profiles.types import SignalKind

Mask = NDArray[np.bool_]
Strings = NDArray[np.object_]


class PolicyInputError(EnrichError):
    """Facts, signals or context handed to the engine are malformed: a bug upstream, not a
    per-record outcome. The message names columns and counts, never a subject."""


GATE_PURPOSES: dict[Gate, tuple[Purpose, ...]] = {
    Gate.A: (Purpose.ENRICHMENT,),
    Gate.B: (Purpose.PROFILING,),
    Gate.C: (Purpose.CRM_EXPORT, Purpose.ADS_EXPORT, Purpose.ANALYTICS),
}
"""The purposes each gate decides (DESIGN.md: A before provider calls, B before profiling,
C before each write)."""

DECISION_COLUMNS: tuple[str, ...] = (
    "subject",
    "gate",
    "purpose",
    "decision",
    "basis",
    "rule",
    "reason",
    "evidence",
    "redact",
    "trail",
    "policy_hash",
)
"""Columns of `evaluate`'s result, in order."""

SIGNAL_COLUMNS: tuple[str, ...] = ("profile_id", "topic", "confidence", "observed_at", "kind")
"""Columns `filter_signals` needs (others, such as `provider`, are passed through)."""


def gate_of(purpose: Purpose) -> Gate:
    """The gate at which `purpose` is decided."""
    return next(gate for gate, purposes in GATE_PURPOSES.items() if purpose in purposes)


def _true(values: pd.Series[Any]) -> Mask:
    """A nullable boolean Series as a plain mask, missing → False."""
    return np.asarray(values.fillna(False).to_numpy(dtype=bool), dtype=bool)


def _join(left: Strings, right: Strings | str) -> Strings:
    """Element-wise `left;right`, leaving out empty parts (touches only rows that change)."""
    out = left.copy()
    other = np.broadcast_to(np.asarray(right, dtype=object), left.shape)
    has_other = other != ""
    if not has_other.any():
        return out
    has_left = left != ""
    only_other = has_other & ~has_left
    both = has_other & has_left
    out[only_other] = other[only_other]
    if both.any():
        out[both] = left[both] + ";" + other[both]
    return out


def _strings(values: Strings | str, n: int) -> pd.api.extensions.ExtensionArray:
    """Python strings (or one string `n` times) as a nullable text array (dtype "string"),
    built by Arrow without pandas' per-value checks."""
    if isinstance(values, str):
        array = pa.repeat(pa.scalar(values, pa.large_string()), n)
    else:
        array = pa.array(values, type=pa.large_string())
    text: pd.api.extensions.ExtensionArray = pd.array(array, dtype="string")
    return text


def _text(values: pd.Series[Any]) -> pd.Series[Any]:
    """Nullable text, stripped; an empty string counts as missing."""
    text = values.astype("string").str.strip()
    return text.mask(_true(text.eq("")))


class _Facts:
    """The facts table normalised per field (text, boolean, number), plus derived facts and
    the call's context, each as a Series over positions 0..n-1."""

    def __init__(
        self,
        bundle: PolicyBundle,
        facts: pd.DataFrame,
        *,
        purpose: Purpose,
        context: Mapping[str, Any] | None,
    ) -> None:
        missing = [c for c in REQUIRED_FACT_COLUMNS if c not in facts.columns]
        if missing:
            raise PolicyInputError(f"facts table lacks column(s): {', '.join(missing)}")
        unknown = sorted(set(context or {}) - set(CONTEXT_KEYS))
        if unknown:
            raise PolicyInputError(
                f"unknown context key(s) {unknown}; known: {', '.join(CONTEXT_KEYS)}"
            )
        self.bundle = bundle
        self.purpose = purpose
        self.context = dict(context or {})
        self.raw = facts.reset_index(drop=True)
        self.n = len(self.raw)
        self.subject = _text(self.raw["subject"])
        if self.subject.isna().any():
            raise PolicyInputError(f"{int(self.subject.isna().sum())} facts row(s) lack a subject")
        repeated = int(self.subject.duplicated().sum())
        if repeated:
            raise PolicyInputError(
                f"facts table repeats {repeated} subject(s); one row per subject"
            )
        self._cache: dict[str, pd.Series[Any]] = {}
        self._refs: dict[tuple[str, ...], Strings] = {}
        # Load every required column now, so a malformed one fails every call, not only the
        # calls whose rules happen to read it.
        for name in REQUIRED_FACT_COLUMNS[1:]:
            self.column(name)
        for purpose_ in Purpose:
            status = self.column(f"consent_{purpose_}")
            bad = status.notna() & ~status.isin(list(ConsentStatus))
            if bad.any():
                raise PolicyInputError(
                    f"consent_{purpose_}: {int(bad.sum())} value(s) other than "
                    "granted, withdrawn or missing"
                )

    def for_purpose(self, purpose: Purpose) -> _Facts:
        """The same facts and context, checked and normalised once, for another purpose: only
        the provider facts (allowances are per purpose) are derived again."""
        other = copy.copy(self)
        other.purpose = purpose
        other._cache = {k: v for k, v in self._cache.items() if not k.startswith("provider_")}
        return other

    def column(self, name: str) -> pd.Series[Any]:
        """Field `name` as a normalised Series (missing optional columns: all missing)."""
        if name not in self._cache:
            self._cache[name] = self._load(name)
        return self._cache[name]

    def _load(self, name: str) -> pd.Series[Any]:
        spec = CONDITION_FIELDS[name]
        index = pd.RangeIndex(self.n)
        if spec.origin == "derived":
            return self._derive(name)
        if spec.origin == "context":
            value = self.context.get(name)
            raw = pd.Series(None if value is None else str(value), index=index, dtype="object")
        elif name in self.raw.columns:
            raw = self.raw[name]
        else:
            raw = pd.Series(None, index=index, dtype="object")
        try:
            if spec.kind is FieldKind.BOOL:
                return raw.astype("boolean")
            if spec.kind is FieldKind.NUMBER:
                return pd.to_numeric(raw, errors="raise").astype("Float64")
        except (TypeError, ValueError):
            raise PolicyInputError(f"{name}: expected {spec.kind} values") from None
        text = _text(raw)
        return text.str.upper() if name == "country" else text

    def _derive(self, name: str) -> pd.Series[Any]:
        bundle = self.bundle
        if name == "regime":
            regimes = subject_regimes(bundle, self.column("country"))
            return pd.Series(regimes.to_numpy(), index=pd.RangeIndex(self.n), dtype="string")
        regime = self.column("regime").to_numpy(dtype=object)
        if name == "minor":
            threshold = np.zeros(self.n, dtype=float)
            for r in Regime:
                threshold[regime == r.value] = bundle.minor_age_for(r)
            return self.column("age").lt(pd.Series(threshold, index=pd.RangeIndex(self.n)))
        # Provider facts: one value per regime, spread over the rows of that regime. Without a
        # provider in the context they are missing (a subject-level gate A pre-check); with
        # one, anything the context does not declare counts as not allowed.
        provider = self.context.get("provider")
        if provider is None:
            return pd.Series(pd.NA, index=pd.RangeIndex(self.n), dtype="boolean")
        allowances = bundle.providers.get(self.purpose, {})
        region = self.context.get("provider_region")
        transfer = self.context.get("provider_transfer_basis")
        allowed = np.zeros(self.n, dtype=bool)
        for r in Regime:
            allowance = allowances.get(r)
            if allowance is None:
                verdict = False
            elif name == "provider_listed":
                verdict = allowance.names is None or str(provider) in allowance.names
            elif name == "provider_region_allowed":
                verdict = region is not None and (
                    "*" in allowance.regions or str(region).upper() in allowance.regions
                )
            else:
                verdict = transfer is not None and str(transfer).lower() in set(
                    allowance.transfer_bases
                )
            allowed[regime == r.value] = verdict
        return pd.Series(allowed, index=pd.RangeIndex(self.n), dtype="boolean")

    def mask(self, condition: Condition) -> Mask:
        """Rows on which `condition` holds."""
        if condition.any_ is not None:
            return np.asarray(np.logical_or.reduce([self.mask(c) for c in condition.any_]))
        if condition.all_ is not None:
            return np.asarray(np.logical_and.reduce([self.mask(c) for c in condition.all_]))
        assert condition.field is not None
        values = self.column(condition.field)
        op, value = condition.op
        missing = values.isna().to_numpy(dtype=bool)
        if op == "exists":
            return ~missing if value else missing
        if op in ("in", "not_in"):
            hit = values.isin(list(value)).to_numpy(dtype=bool) & ~missing
        elif op in ("eq", "ne"):
            hit = _true(values.eq(value))
        else:
            hit = _true(getattr(values, op)(value))
        # Missing values never compare: eq/in/lt/... are false, so their negations are true.
        return ~hit if op in ("ne", "not_in") else hit

    def rule_mask(self, rule: Rule) -> Mask:
        """Rows the rule applies to: its regimes, all of `match`, none of `unless`."""
        out = np.ones(self.n, dtype=bool)
        if len(rule.regimes) < len(Regime):
            out &= self.column("regime").isin([r.value for r in rule.regimes]).to_numpy(dtype=bool)
        for condition in rule.match:
            out &= self.mask(condition)
        for condition in rule.unless:
            out &= ~self.mask(condition)
        return out

    def refs(self, names: Iterable[str]) -> Strings:
        """The non-empty values of reference columns, `;`-joined per row."""
        key = tuple(names)
        if key not in self._refs:
            out: Strings = np.full(self.n, "", dtype=object)
            for name in key:
                out = _join(out, self.column(name).fillna("").to_numpy(dtype=object))
            self._refs[key] = out
        return self._refs[key]

    def consent(self) -> tuple[Mask, Mask, Strings]:
        """Rows with consent for the purpose (direct or TCF), rows that withdrew it, evidence."""
        purpose = self.purpose
        status = self.column(f"consent_{purpose}")
        granted = _true(status.eq(ConsentStatus.GRANTED.value))
        withdrawn = _true(status.eq(ConsentStatus.WITHDRAWN.value))
        evidence = np.where(granted, self.refs([f"consent_ref_{purpose}"]), "").astype(object)
        ids = self.bundle.tcf.get(purpose)
        if ids and "tcf_purposes" in self.raw.columns:
            # An explicit withdrawal in our own records beats a TCF consent string.
            via_tcf = self._tcf_consents(ids) & ~granted & ~withdrawn
            evidence[via_tcf] = "tcf:" + ",".join(str(i) for i in ids)
            granted = granted | via_tcf
        return granted, withdrawn, evidence

    def _tcf_consents(self, ids: tuple[int, ...]) -> Mask:
        """Rows whose `tcf_purposes` holds every id in `ids` (explode + group, not a loop)."""
        exploded = pd.to_numeric(self.raw["tcf_purposes"].explode(), errors="coerce")
        hits = exploded[exploded.isin(ids)]
        counts = hits.groupby(level=0).nunique()
        out = np.zeros(self.n, dtype=bool)
        out[counts.index[counts.to_numpy() == len(ids)].to_numpy(dtype=int)] = True
        return out


def _check_gate(gate: Gate, purpose: Purpose) -> None:
    if purpose not in GATE_PURPOSES[gate]:
        raise PolicyInputError(
            f"gate {gate} does not decide {purpose}; it decides "
            + ", ".join(p.value for p in GATE_PURPOSES[gate])
        )


class _Decisions:
    """The result columns of one evaluation, filled in by masks."""

    def __init__(self, table: _Facts, gate: Gate) -> None:
        n, version, purpose = table.n, table.bundle.version, table.purpose
        self.table = table
        self.gate = gate
        self.decision: Strings = np.full(n, Outcome.DENY.value, dtype=object)
        self.basis: Strings = np.full(n, "", dtype=object)
        self.rule: Strings = np.full(n, f"default-deny@{version}", dtype=object)
        self.reason: Strings = np.full(n, PolicyReason.NO_LAWFUL_BASIS.value, dtype=object)
        self.evidence: Strings = np.full(n, "", dtype=object)
        self.redact: Strings = np.full(n, "", dtype=object)
        self.trail: Strings = np.full(n, "", dtype=object)
        self.consent_ref = table.refs([f"consent_ref_{purpose}"])

    def decide(
        self, rows: Mask, rule: str, reason: str, evidence: Strings, *, append: bool = False
    ) -> None:
        """Name the deciding rule, reason and evidence (replaced, or appended) on `rows`."""
        self.rule[rows] = rule
        self.reason[rows] = reason
        if append:
            self.evidence[rows] = _join(self.evidence[rows], evidence[rows])
        else:
            self.evidence[rows] = evidence[rows]

    def frame(self, index: pd.Index[Any]) -> pd.DataFrame:
        """The decisions as a DataFrame of `DECISION_COLUMNS` with the facts' index."""
        table = self.table
        n = table.n
        columns: dict[str, Any] = {
            "subject": table.subject.array,  # already text
            "gate": _strings(self.gate.value, n),
            "purpose": _strings(table.purpose.value, n),
            "decision": _strings(self.decision, n),
            "basis": _strings(self.basis, n),
            "rule": _strings(self.rule, n),
            "reason": _strings(self.reason, n),
            "evidence": _strings(self.evidence, n),
            "redact": _strings(self.redact, n),
            "trail": _strings(self.trail, n),
            "policy_hash": _strings(table.bundle.hash, n),
        }
        return pd.DataFrame(columns, index=pd.RangeIndex(n)).set_axis(index)


def _record_basis(out: _Decisions, matched: list[tuple[Rule, Mask]]) -> Mask:
    """Step 1: consent, then allow rules by priority. Returns the rows with a basis."""
    table = out.table
    bundle, purpose = table.bundle, table.purpose
    granted, withdrawn, consent_evidence = table.consent()
    # Step 4's reason, unless something below decides instead.
    out.decide(
        withdrawn,
        f"default-deny@{bundle.version}",
        PolicyReason.CONSENT_WITHDRAWN.value,
        out.consent_ref,
    )
    has_basis = np.zeros(table.n, dtype=bool)
    if bundle.accepts(purpose, LawfulBasis.CONSENT):
        has_basis |= granted
        out.basis[granted] = LawfulBasis.CONSENT.value
        out.decide(
            granted,
            f"consent@{bundle.version}",
            PolicyReason.BASIS_RECORDED.value,
            consent_evidence,
        )
    for rule, mask in matched:
        if rule.outcome is Outcome.ALLOW and rule.basis is not None:
            new = mask & ~has_basis
            out.basis[new] = rule.basis.value
            out.decide(new, rule.ref, rule.reason, table.refs(rule.evidence_fields))
            has_basis |= mask
    out.decision[has_basis] = Outcome.ALLOW.value
    return has_basis


def _apply_redactions(out: _Decisions, matched: list[tuple[Rule, Mask]], allowed: Mask) -> None:
    """Step 3: redact rules turn an allow into a redact; their lists are merged."""
    redacting = [(r, m & allowed) for r, m in matched if r.outcome is Outcome.REDACT]
    redacted = np.zeros(out.table.n, dtype=bool)
    for rule, mask in redacting:
        new = mask & ~redacted
        out.decide(new, rule.ref, rule.reason, out.table.refs(rule.evidence_fields), append=True)
        redacted |= mask
    for item in sorted({item for rule, _ in redacting for item in rule.redact}):
        holds = np.logical_or.reduce([mask for rule, mask in redacting if item in rule.redact])
        out.redact[holds] = _join(out.redact[holds], item)
    out.decision[redacted] = Outcome.REDACT.value


def _apply_denials(out: _Decisions, matched: list[tuple[Rule, Mask]]) -> None:
    """Step 2: any matching deny rule denies; the highest priority one is named."""
    denied = np.zeros(out.table.n, dtype=bool)
    for rule, mask in matched:
        if rule.outcome is Outcome.DENY:
            new = mask & ~denied
            out.decide(new, rule.ref, rule.reason, out.table.refs(rule.evidence_fields))
            denied |= mask
    out.decision[denied] = Outcome.DENY.value
    out.basis[denied] = ""
    out.redact[denied] = ""


def evaluate(
    bundle: PolicyBundle,
    facts: pd.DataFrame,
    *,
    gate: Gate,
    purpose: Purpose,
    context: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Decide `purpose` at `gate` for every subject in `facts` (one row each, same order).

    `facts` has the columns `policy.bundle.REQUIRED_FACT_COLUMNS` (and optionally the reference
    columns and `tcf_purposes`); `context` may hold `policy.bundle.CONTEXT_KEYS` (the provider
    at gate A, the destination at gate C). The result has `DECISION_COLUMNS` (all text) and the
    index of `facts`. See the module docstring for the semantics.
    """
    _check_gate(gate, purpose)
    return _decide(_Facts(bundle, facts, purpose=purpose, context=context), gate, facts.index)


def evaluate_all(
    bundle: PolicyBundle,
    facts: pd.DataFrame,
    decisions: Iterable[tuple[Gate, Purpose]],
    *,
    context: Mapping[str, Any] | None = None,
) -> list[pd.DataFrame]:
    """`evaluate` for each (gate, purpose) of `decisions` in turn, on the same facts and
    context: the facts are checked and normalised once instead of once per purpose."""
    pairs = list(decisions)
    for gate, purpose in pairs:
        _check_gate(gate, purpose)
    results: list[pd.DataFrame] = []
    table: _Facts | None = None
    for gate, purpose in pairs:
        table = (
            _Facts(bundle, facts, purpose=purpose, context=context)
            if table is None
            else table.for_purpose(purpose)
        )
        results.append(_decide(table, gate, facts.index))
    return results


def _decide(table: _Facts, gate: Gate, index: pd.Index[Any]) -> pd.DataFrame:
    """The decisions of `gate` for the purpose of `table`, with the facts' `index`."""
    bundle, purpose = table.bundle, table.purpose
    matched = [
        (rule, table.rule_mask(rule))
        for rule in bundle.rules_by_priority
        if gate in rule.gates and purpose in rule.purposes and not rule.topics
    ]
    out = _Decisions(table, gate)
    allowed = _record_basis(out, matched)
    _apply_redactions(out, matched, allowed)
    _apply_denials(out, matched)
    for rule, mask in matched:
        out.trail[mask] = _join(out.trail[mask], rule.id)
    return out.frame(index)


def _under_any(topics: pd.Series[Any], prefixes: Iterable[str]) -> Mask:
    """Rows whose topic is one of `prefixes` or below one (dot boundary)."""
    out = np.zeros(len(topics), dtype=bool)
    for prefix in prefixes:
        out |= _true(topics.eq(prefix)) | _true(topics.str.startswith(prefix + "."))
    return out


def _permitted_topics(
    bundle: PolicyBundle,
    signals: pd.DataFrame,
    topics: pd.Series[Any],
    purpose: Purpose,
    facts: pd.DataFrame | None,
) -> Mask:
    """Signals an allow rule with `topics` permits. A rule that depends on the subject can
    only permit with `facts`; without them it permits nothing (fail closed)."""
    gate = gate_of(purpose)
    out = np.zeros(len(signals), dtype=bool)
    table = None
    for rule in bundle.rules_by_priority:
        if not rule.topics or gate not in rule.gates or purpose not in rule.purposes:
            continue
        covers = _under_any(topics, rule.topics)
        if not rule.conditional:
            out |= covers
            continue
        if facts is None:
            continue
        if table is None:
            table = _Facts(bundle, facts, purpose=purpose, context=None)
        subjects = table.subject[table.rule_mask(rule)]
        out |= covers & signals["profile_id"].astype("string").isin(subjects).to_numpy(dtype=bool)
    return out


def filter_signals(
    bundle: PolicyBundle,
    signals: pd.DataFrame,
    *,
    purpose: Purpose = Purpose.PROFILING,
    now: datetime,
    facts: pd.DataFrame | None = None,
    sensitive: tuple[str, ...] = (),
    floor: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split signals into those `purpose` may use and those it may not (gate B).

    Dropped, with `reason` in this order of precedence: SPECIAL_CATEGORY (topic at or below a
    special-category prefix of the bundle or one of `sensitive` (the taxonomy's sensitive
    nodes), unless an allow rule with `topics` permits it for the subject; such a rule with
    conditions needs `facts` to permit anything), EXPIRED (older than the retention of its
    kind at `now`, or without a date or kind), BELOW_CONFIDENCE_FLOOR (confidence below the
    purpose's floor, or not a number; only with `floor`: before fusion a low confidence is
    evidence, e.g. a declared "not interested"). Both frames keep the input's columns and
    index; `dropped` adds `reason`.
    """
    missing = [c for c in SIGNAL_COLUMNS if c not in signals.columns]
    if missing:
        raise PolicyInputError(f"signals lack column(s): {', '.join(missing)}")
    topics = _text(signals["topic"].reset_index(drop=True))
    special = _under_any(topics, (*bundle.special_categories, *sensitive))
    if special.any():
        special &= ~_permitted_topics(
            bundle, signals.reset_index(drop=True), topics, purpose, facts
        )

    kinds = _text(signals["kind"].reset_index(drop=True))
    unknown = sorted(set(kinds.dropna()) - {k.value for k in SignalKind})
    if unknown:
        raise PolicyInputError(f"signals: unknown kind(s) {unknown}")
    days = kinds.map({k.value: float(d) for k, d in bundle.retention.signals.items()})
    try:
        observed = pd.to_datetime(signals["observed_at"].reset_index(drop=True), utc=True)
    except (TypeError, ValueError):
        raise PolicyInputError("signals: observed_at holds values that are not times") from None
    stamp = pd.Timestamp(now)
    stamp = stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)
    cutoff = stamp - pd.to_timedelta(days.astype("float64"), unit="D")
    expired = (
        observed.isna().to_numpy(dtype=bool)
        | kinds.isna().to_numpy(dtype=bool)
        | _true(observed.lt(cutoff))
    )

    confidence = pd.to_numeric(signals["confidence"].reset_index(drop=True), errors="coerce")
    lowest = bundle.confidence_floors.get(purpose, 0.0) if floor else 0.0
    below = ~_true(confidence.ge(lowest))

    reason = np.select(
        [special, expired, below],
        [
            PolicyReason.SPECIAL_CATEGORY.value,
            PolicyReason.EXPIRED.value,
            PolicyReason.BELOW_CONFIDENCE_FLOOR.value,
        ],
        default="",
    )
    drop = reason != ""
    kept = signals.loc[~drop]
    dropped = signals.loc[drop].assign(reason=pd.array(reason[drop], dtype="string"))
    return kept, dropped


def allowed_fields(bundle: PolicyBundle, destination: Purpose) -> tuple[str, ...]:
    """Output fields `destination` may receive (none if the bundle lists none)."""
    return bundle.destinations.get(destination, ())


def minimise(
    frame: pd.DataFrame, bundle: PolicyBundle, destination: Purpose
) -> tuple[pd.DataFrame, list[str]]:
    """Keep only the columns `destination` may receive (gate C); return them and the names
    of the dropped columns, both in the frame's order."""
    allowed = set(allowed_fields(bundle, destination))
    keep = [c for c in frame.columns if str(c) in allowed]
    dropped = [str(c) for c in frame.columns if str(c) not in allowed]
    return frame.loc[:, keep], dropped


def subject_regimes(bundle: PolicyBundle, country: pd.Series[Any]) -> pd.Series[Any]:
    """The regime of each subject from their ISO country (unlisted or missing: other)."""
    codes, countries = pd.factorize(country.astype("string").str.upper())
    # one lookup per distinct country; missing and unlisted countries (code -1 or no entry)
    regimes = [bundle.country_regimes.get(c) for c in countries]
    other = Regime.OTHER.value
    table = np.array([*(other if r is None else r for r in regimes), other], dtype=object)
    return pd.Series(table[codes], index=country.index, dtype=str)


def allowed_identifier_forms(
    bundle: PolicyBundle, facts: pd.DataFrame, purpose: Purpose = Purpose.ENRICHMENT
) -> pd.Series[Any]:
    """Per subject, the identifier forms the policy lets a provider receive for `purpose`
    (from the subject's regime; a regime without an allowance allows none)."""
    allowances = bundle.providers.get(purpose, {})
    by_regime = {
        regime.value: frozenset(allowance.identifier_forms)
        for regime, allowance in allowances.items()
    }
    regimes = subject_regimes(bundle, facts["country"])
    return regimes.map(lambda r: by_regime.get(r, frozenset())).set_axis(facts.index)
