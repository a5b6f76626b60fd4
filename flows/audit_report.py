"""The compliance officer's audit report: one static HTML page over the decision log and runs.

`audit_report` turns the decision log (its entries, oldest first), the runs' summaries
(`run_summary.json`, oldest first) and the result of `enrich audit verify` into one HTML5
document with inline CSS and inline SVG only: no scripts, fonts, images or links to fetch.
It reuses the chart and table helpers of the per-run report (`flows.report`), so both pages
look alike and escape alike: every value taken from the inputs passes through `html.escape`.

The log may hold millions of entries. They are streamed once: each entry becomes a small
tuple of the fields the page aggregates on (run, day, actor, purpose, gate, decision, rule,
reason, basis, policy hash, context) counted in a dictionary, which is folded into the page's
breakdowns whenever it grows past a bound. The subject reference is never kept: it is only
used to mask itself where it also appears in the entry's context. Label values are bounded
too: past a few thousand distinct values per breakdown the rest count as "(other values)".

The page holds counts, run ids, rule ids, reason codes and shortened policy hashes only —
aggregates and pseudonymous ids, never a subject id. Any input may be empty, missing parts
or hold odd values; such parts say so instead of failing.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from flows.report import (
    _CATEGORICAL,
    _CSS,
    Tone,
    _bar,
    _bar_chart,
    _count,
    _describe,
    _details,
    _e,
    _figure,
    _fit,
    _legend,
    _map,
    _meter_cell,
    _n,
    _nav,
    _number,
    _pct,
    _Row,
    _section,
    _Segment,
    _seq,
    _share,
    _short_hash,
    _svg_open,
    _table,
    _tiles,
    page,
)

_FOLD_AT: Final = 100_000
"""Distinct (run, day, …, context) combinations held before they are folded into breakdowns."""
_CHECK_MASK: Final = 0xFFFF
"""The size of the counting dictionary is checked every `_CHECK_MASK + 1` entries."""
_LABELS_KEPT: Final = 5_000
"""Distinct labels kept per breakdown; the rest are counted under `_OTHER`."""
_DECISIONS_KEPT: Final = 12
_OTHER: Final = "(other values)"
_NONE: Final = "(none)"
_TOP_RULES: Final = 15
_COLUMNS: Final = 60
"""Most columns in a per-run chart; more runs are grouped into consecutive buckets."""
_RUNS_TABLED: Final = 500
_RECENT_RUNS: Final = 30
_PROBLEMS_SHOWN: Final = 200

_DECISION_TONES: Final[Mapping[str, Tone]] = {
    "allow": "ok",
    "redact": "warn",
    "deny": "bad",
    "erase": "c4",
    "object": "c3",
}
_REQUEST_ACTORS: Final = frozenset({"dsar", "operator"})
_REQUEST_DECISIONS: Final = frozenset({"erase", "object", "suppress"})
_SUPPRESSION_WORDS: Final = ("SUPPRESS", "ERAS", "OBJECT", "OPTED_OUT", "OPT_OUT")
_RUN_ID: Final = re.compile(r"^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})\d{2}Z")
_SUBJECT_LIKE: Final = re.compile(r"\bP[0-9A-F]{16}\b")
"""The shape of a profile id; masked wherever it shows up in a label, whatever its source."""

# One log entry as the page counts it (see `_Tally.add`).
_Key = tuple[Any, ...]


@dataclass
class _Breakdown:
    """Counts per label and decision, with a bounded number of labels."""

    rows: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, label: str, decision: str, n: int) -> None:
        row = self.rows.get(label)
        if row is None:
            if len(self.rows) >= _LABELS_KEPT:
                label = _OTHER
            row = self.rows.setdefault(label, Counter())
        row[decision] += n

    def ordered(self) -> list[tuple[str, Counter[str]]]:
        """Largest total first."""
        return sorted(self.rows.items(), key=lambda item: -item[1].total())

    def total(self) -> int:
        return sum(row.total() for row in self.rows.values())


@dataclass
class _Tally:
    """Everything the page shows about the log, counted in one pass."""

    entries: int = 0
    malformed: int = 0
    days: dict[str, str] = field(default_factory=dict)
    """Run id → the day of its first entry."""
    runs: _Breakdown = field(default_factory=_Breakdown)
    purposes: _Breakdown = field(default_factory=_Breakdown)
    gates: _Breakdown = field(default_factory=_Breakdown)
    rules: _Breakdown = field(default_factory=_Breakdown)
    reasons: _Breakdown = field(default_factory=_Breakdown)
    regimes: _Breakdown = field(default_factory=_Breakdown)
    bases: _Breakdown = field(default_factory=_Breakdown)
    actors: _Breakdown = field(default_factory=_Breakdown)
    policies: _Breakdown = field(default_factory=_Breakdown)
    providers: _Breakdown = field(default_factory=_Breakdown)
    topics: _Breakdown = field(default_factory=_Breakdown)
    requests: _Breakdown = field(default_factory=_Breakdown)
    """Data-subject requests (erasure, objection, …): entries by kind and decision."""
    suppressed: _Breakdown = field(default_factory=_Breakdown)
    """Entries of runs refused or redacted because of a suppression: purpose × reason."""
    request_runs: Counter[str] = field(default_factory=Counter)
    """Run id → its entries that are data-subject requests."""
    decisions: set[str] = field(default_factory=set)
    first_day: str = ""
    last_day: str = ""
    contexts: dict[str, dict[str, str]] = field(default_factory=dict)

    def fold(self, combos: Mapping[_Key, int]) -> None:
        """Add the counted combinations to the breakdowns."""
        for key, n in combos.items():
            self._fold_one(key, n)

    def _decision(self, value: object) -> str:
        decision = _label(value)
        if decision not in self.decisions:
            if len(self.decisions) >= _DECISIONS_KEPT:
                return _OTHER
            self.decisions.add(decision)
        return decision

    def _fold_one(self, key: _Key, n: int) -> None:
        run_v, day_v, actor_v, purpose_v, gate_v, decision_v, rule_v = key[:7]
        reason_v, basis_v, policy_v, context_v = key[7:]
        run, day, actor, gate = _label(run_v), _text(day_v), _label(actor_v), _label(gate_v)
        purpose, reason, decision = _label(purpose_v), _label(reason_v), self._decision(decision_v)
        context = self._context(_text(context_v))
        self.entries += n
        if day:
            self.first_day = min(self.first_day or day, day)
            self.last_day = max(self.last_day, day)
        if run not in self.days and len(self.days) < _LABELS_KEPT:
            self.days[run] = day
        self.runs.add(run, decision, n)
        self.purposes.add(purpose, decision, n)
        self.gates.add(gate, decision, n)
        self.rules.add(_label(rule_v), decision, n)
        self.reasons.add(reason, decision, n)
        self.regimes.add(context.get("regime") or "(not recorded)", decision, n)
        self.actors.add(actor, decision, n)
        self.policies.add(_label(policy_v), decision, n)
        if decision in ("allow", "redact"):
            self.bases.add(_label(basis_v), decision, n)
        if "provider" in context:
            self.providers.add(context["provider"] or _NONE, decision, n)
        if "topic" in context:
            self.topics.add(context["topic"] or _NONE, decision, n)
        request = (
            actor in _REQUEST_ACTORS
            or decision in _REQUEST_DECISIONS
            or gate not in ("A", "B", "C")
            or "request" in context
        )
        if request:
            kind = context.get("request") or reason
            self.requests.add(kind, decision, n)
            if run in self.request_runs or len(self.request_runs) < _LABELS_KEPT:
                self.request_runs[run] += n
        elif any(word in reason for word in _SUPPRESSION_WORDS):
            self.suppressed.add(f"{purpose} · {reason}", decision, n)

    def _context(self, text: str) -> dict[str, str]:
        parsed = self.contexts.get(text)
        if parsed is None:
            parsed = {}
            for part in text.split(";"):
                name, _, value = part.partition("=")
                if name.strip():
                    parsed[_mask(name.strip())] = _mask(value.strip())
            if len(self.contexts) < _LABELS_KEPT:
                self.contexts[text] = parsed
        return parsed


def _text(value: object) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


def _mask(text: str) -> str:
    return _SUBJECT_LIKE.sub("(subject)", text)


def _label(value: object) -> str:
    return _mask(_text(value)) or _NONE


def _slow_key(entry: object) -> _Key | None:
    """The counting key of an entry with odd values (non-strings, missing fields); None when
    the entry is not a mapping at all."""
    if not isinstance(entry, Mapping):
        return None
    text = {name: _text(entry.get(name)) for name in ("subject", "context", "ts")}
    context = text["context"]
    if text["subject"] and text["subject"] in context:
        context = context.replace(text["subject"], "(subject)")
    return (
        _text(entry.get("run_id")),
        text["ts"][:10],
        *(_text(entry.get(name)) for name in ("actor", "purpose", "gate", "decision", "rule")),
        *(_text(entry.get(name)) for name in ("reason", "basis", "policy_hash")),
        context,
    )


def _tally(entries: Iterable[Mapping[str, Any]]) -> _Tally:
    """Count the log in one pass; memory is bounded whatever the number of entries."""
    result = _Tally()
    combos: Counter[_Key] = Counter()
    for i, entry in enumerate(entries):
        try:
            get = entry.get
            ts: Any = get("ts")
            context = get("context") or ""
            subject = get("subject")
            if subject and subject in context:
                context = context.replace(subject, "(subject)")
            combos[
                (
                    get("run_id"),
                    ts[:10],
                    get("actor"),
                    get("purpose"),
                    get("gate"),
                    get("decision"),
                    get("rule"),
                    get("reason"),
                    get("basis"),
                    get("policy_hash"),
                    context,
                )
            ] += 1
        except (AttributeError, TypeError):
            key = _slow_key(entry)
            if key is None:
                result.malformed += 1
            else:
                combos[key] += 1
        if not i & _CHECK_MASK and len(combos) > _FOLD_AT:
            result.fold(combos)
            combos.clear()
    result.fold(combos)
    return result


def audit_report(
    *,
    entries: Iterable[Mapping[str, Any]],
    summaries: Sequence[Mapping[str, Any]],
    verification: Mapping[str, Any],
    title: str = "Policy decision log",
) -> str:
    """One complete, self-contained HTML5 page auditing the decision log and the runs."""
    counted = _tally(entries)
    runs = [s for s in summaries or () if isinstance(s, Mapping)]
    verification = _map(verification)
    sections = [
        _decisions_section(counted),
        _requests_section(counted, runs),
        _providers_section(counted, runs),
        _quality_section(runs),
        _personas_section(runs),
    ]
    return page(
        f"{title} — audit report",
        css=_CSS + _AUDIT_CSS,
        top=(_header(title, verification, counted), _nav(_SECTIONS)),
        sections=sections,
        footer=_footer(counted, runs),
    )


def write_audit_report(
    path: Path,
    *,
    entries: Iterable[Mapping[str, Any]],
    summaries: Sequence[Mapping[str, Any]],
    verification: Mapping[str, Any],
    title: str = "Policy decision log",
) -> Path:
    """Write the audit report to `path` as UTF-8; return `path`."""
    page = audit_report(
        entries=entries, summaries=summaries, verification=verification, title=title
    )
    path.write_text(page, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- charts


def _decision_order(rows: Iterable[Mapping[str, int]]) -> list[str]:
    """The decisions present, in a fixed order: allow, redact, deny, erase, object, the rest."""
    present = {d for counts in rows for d, n in counts.items() if n}
    return [d for d in _DECISION_TONES if d in present] + sorted(present - set(_DECISION_TONES))


def _decision_segments(
    counts: Mapping[str, int], order: Sequence[str] | None = None
) -> tuple[_Segment, ...]:
    """Stacked pieces in the order of `order` (default: that of `counts`), one per decision
    present; a decision outside the fixed order keeps its colour across the rows of a chart."""
    return tuple(
        _Segment(d, float(counts[d]), _DECISION_TONES.get(d, _CATEGORICAL[7 - i % 3]))
        for i, d in enumerate(order if order is not None else _decision_order([counts]))
        if counts.get(d)
    )


def _decision_rows(
    items: Iterable[tuple[str, Mapping[str, int]]],
    *,
    limit: int | None = None,
    share_allowed: bool = True,
) -> list[_Row]:
    items = list(items)
    order = _decision_order(counts for _, counts in items)
    rows = []
    for label, counts in items:
        total = sum(counts.values())
        allowed = counts.get("allow", 0) + counts.get("redact", 0)
        present = [d for d, n in counts.items() if n]
        note = f"{total:,}"
        if len(present) == 1:
            note += f" · all {present[0]}"
        elif share_allowed:
            note += f" · {_pct(allowed / total) if total else '–'} allowed"
        rows.append(_Row(label, _decision_segments(counts, order), note=note))
    return rows[:limit] if limit is not None else rows


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def _column_chart(title: str, columns: Sequence[_Row], *, note: str = "") -> str:
    """Vertical stacked columns (one per run or group of runs), labels under the x axis."""
    if not columns:
        return f'<p class="empty">{_e(title)}: nothing to show.</p>'
    left, top_pad, plot_h, bottom = 72, 16, 220, 96
    col_w = max(8, min(44, 900 // len(columns) - 6))
    gap = max(3, col_w // 4)
    width = max(360, left + len(columns) * (col_w + gap) + 24)
    height = top_pad + plot_h + bottom
    top = _nice_max(max(c.total for c in columns))
    parts = [_svg_open(title, width, height, desc=_describe(columns, _count))]
    for tick in (0.0, 0.5, 1.0):
        y = top_pad + plot_h * (1 - tick)
        parts.append(
            f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{width - 12}" y2="{y:.1f}"/>'
            f'<text class="val" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_count(top * tick)}</text>"
        )
    for i, column in enumerate(columns):
        x = left + gap + i * (col_w + gap)
        y = float(top_pad + plot_h)
        parts.append(f"<g><title>{_e(_describe([column], _count))}</title>")
        for seg in column.segments:
            h = plot_h * seg.value / top
            if h > 0:
                y -= h
                parts.append(
                    f'<rect class="k-{seg.tone}" x="{x}" y="{y:.1f}" width="{col_w}" '
                    f'height="{max(h, 0.8):.1f}"/>'
                )
        if col_w >= 22:
            parts.append(
                f'<text class="val small" x="{x + col_w / 2:.1f}" y="{y - 3:.1f}" '
                f'text-anchor="middle">{_compact(column.total)}</text>'
            )
        lx, ly = x + col_w / 2 + 4, top_pad + plot_h + 12
        parts.append(
            f'<text class="lab" x="{lx:.1f}" y="{ly}" text-anchor="end" '
            f'transform="rotate(-40 {lx:.1f} {ly})">{_e(_fit(column.label, 110))}</text></g>'
        )
    parts.append(
        f'<line class="axis" x1="{left}" y1="{top_pad + plot_h}" x2="{width - 12}" '
        f'y2="{top_pad + plot_h}"/></svg>'
    )
    return _figure(title, "".join(parts) + _legend(columns), note=note)


def _compact(value: float) -> str:
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:,.0f}"


def _run_label(run_id: str, day: str = "") -> str:
    """A run's date and time from its id (`20261123T055925Z-…`), else its first day."""
    match = _RUN_ID.match(run_id)
    if match:
        y, m, d, hh, mm = match.groups()
        return f"{y}-{m}-{d} {hh}:{mm}"
    return day or run_id


def _bucketed(columns: list[_Row]) -> tuple[list[_Row], str]:
    """At most `_COLUMNS` columns: consecutive runs are grouped when there are more."""
    if len(columns) <= _COLUMNS:
        return columns, ""
    size = math.ceil(len(columns) / _COLUMNS)
    grouped = []
    for start in range(0, len(columns), size):
        group = columns[start : start + size]
        sums: dict[str, tuple[float, Tone]] = {}
        for column in group:
            for seg in column.segments:
                value, _ = sums.get(seg.label, (0.0, seg.tone))
                sums[seg.label] = (value + seg.value, seg.tone)
        label = _span(group[0].label.split(" ")[0], group[-1].label.split(" ")[0])
        segments = tuple(_Segment(k, v, t) for k, (v, t) in sums.items())
        grouped.append(_Row(label, segments))
    return grouped, f"{len(columns):,} runs, grouped {size} consecutive runs per column."


def _span(first: str, last: str) -> str:
    """`2026-11-01…03`, `2026-11-28…12-02`: a range of dates without repeating the prefix."""
    if first == last:
        return first
    for cut in (8, 5):
        if first[:cut] == last[:cut] and len(first) == len(last) == 10:
            return f"{first}…{last[cut:]}"
    return f"{first}…{last}"


# ----------------------------------------------------------------------------- header


def _verdict(verification: Mapping[str, Any]) -> tuple[str, str, str]:
    """(badge text, tone class, explanation)."""
    problems = _seq(verification.get("problems"))
    if verification.get("ok") is True and not problems:
        return "VERIFIED", "ok", "The hash chain and the signed checkpoints of the log verify."
    if verification.get("ok") is False or problems:
        return (
            "FAILED",
            "bad",
            "The log does not verify: it was edited, truncated or reordered, or its "
            "checkpoints do not match. Do not rely on the decisions below until resolved.",
        )
    return "NOT VERIFIED", "warn", "No verification result was given for this log."


def _header(title: str, verification: Mapping[str, Any], counted: _Tally) -> str:
    badge, tone, text = _verdict(verification)
    keys = [str(k) for k in _seq(verification.get("keys"))]
    tiles = [
        ("log id", f"<code>{_e(verification.get('log_id') or '–')}</code>"),
        ("entries verified", _count(verification.get("entries"))),
        ("entries in this report", _count(counted.entries)),
        ("segments", _count(verification.get("segments"))),
        ("runs", _count(verification.get("runs"))),
        ("checkpoints", _count(verification.get("checkpoints"))),
    ]
    key_list = "".join(f"<li><code>{_e(k)}</code></li>" for k in keys) or "<li>–</li>"
    period = (
        f" · entries from {_e(counted.first_day)} to {_e(counted.last_day)}"
        if counted.first_day
        else ""
    )
    mismatch = ""
    verified_n = _number(verification.get("entries"))
    if verified_n is not None and verified_n != counted.entries:
        mismatch = (
            f'<p class="warning">The verification covered {_count(verified_n)} entries; this '
            f"report counted {_count(counted.entries)}.</p>"
        )
    malformed = (
        f'<p class="warning">{_count(counted.malformed)} log lines were not entries and are '
        "not counted.</p>"
        if counted.malformed
        else ""
    )
    return (
        f'<header><h1>{_e(title)} <span class="run">audit report</span></h1>'
        f'<div class="verdict v-{tone}" role="status"><strong class="verdict-badge">'
        f'{_e(badge)}</strong><span class="verdict-text">{_e(text)}</span></div>'
        f"{_problems(verification)}"
        f'<p class="meta">Chain verification of the decision log{period}</p>'
        f'{_tiles(tiles)}<div class="keys"><span class="meta">Signing keys</span>'
        f"<ul>{key_list}</ul></div>{mismatch}{malformed}</header>"
    )


def _problems(verification: Mapping[str, Any]) -> str:
    problems = [_map(p) for p in _seq(verification.get("problems"))]
    if not problems:
        return ""
    rows = [
        [_e(p.get("segment", "–")), _e(p.get("seq", "–")), _e(p.get("message", "–"))]
        for p in problems[:_PROBLEMS_SHOWN]
    ]
    more = len(problems) - len(rows)
    caption = f"Problems found ({len(problems):,}" + (
        f", first {len(rows)} shown)" if more else ")"
    )
    return (
        '<div class="problems">'
        + _table(["segment", "seq", "problem"], rows, align="lrl", caption=caption)
        + "</div>"
    )


_SECTIONS: Final = (
    ("decisions", "Decisions"),
    ("requests", "Suppressions, erasures, sensitive topics"),
    ("providers", "Provider calls"),
    ("quality", "Data quality"),
    ("personas", "Personas and segments"),
)


def _footer(counted: _Tally, runs: Sequence[Mapping[str, Any]]) -> str:
    return (
        f"<footer><p>Made from {_count(counted.entries)} decision log entries, "
        f"{_count(len(runs))} run summaries and the log's verification result. This page holds "
        "aggregates and pseudonymous ids only (run ids, rule ids, reason codes, shortened "
        "policy hashes): no subject id and no personal data.</p></footer>"
    )


# ----------------------------------------------------------------------------- decisions


def _decisions_section(counted: _Tally) -> str:
    if not counted.entries:
        return _section(
            "decisions", "Decisions", '<p class="empty">The decision log holds no entries.</p>'
        )
    totals: Counter[str] = Counter()
    for _, row in counted.purposes.rows.items():
        totals.update(row)
    tiles = [("entries", _count(counted.entries))] + [
        (decision, f"{_count(n)} <small>{_pct(n / counted.entries)}</small>")
        for decision, n in sorted(totals.items(), key=lambda i: -i[1])
    ]
    rules = counted.rules.ordered()
    more_rules = f", the {_TOP_RULES} largest of {len(rules):,}" if len(rules) > _TOP_RULES else ""
    return _section(
        "decisions",
        "Decisions",
        '<p class="lede">Every gate decision of every run, as written to the log. Default '
        "deny: without a recorded lawful basis a purpose is not processed; redact allows "
        "with fields or topics removed.</p>",
        _tiles(tiles),
        _runs_chart(counted),
        _bar_chart("Decisions by purpose", _decision_rows(counted.purposes.ordered())),
        '<div class="pair">',
        _bar_chart("Decisions by gate", _decision_rows(sorted(counted.gates.rows.items()))),
        _bar_chart(
            "Decisions by jurisdiction (context regime)",
            _decision_rows(counted.regimes.ordered()),
        ),
        "</div>",
        _bar_chart(f"Decisions by rule{more_rules}", _decision_rows(rules, limit=_TOP_RULES)),
        _bar_chart("Decisions by reason", _decision_rows(counted.reasons.ordered())),
        _bar_chart(
            "Lawful basis of allowed and redacted decisions",
            _decision_rows(counted.bases.ordered()),
        ),
        _decision_table(counted),
    )


def _runs_chart(counted: _Tally) -> str:
    def batch(run: str, counts: Counter[str]) -> bool:
        """Whether the run only holds data-subject requests (shown in their own section)."""
        return counted.request_runs.get(run, 0) >= counts.total()

    nightly = [(run, c) for run, c in counted.runs.rows.items() if not batch(run, c)]
    order = _decision_order(counts for _, counts in nightly)
    columns = [
        _Row(_run_label(run, counted.days.get(run, "")), _decision_segments(counts, order))
        for run, counts in nightly
    ]
    shown, note = _bucketed(columns)
    batches = len(counted.runs.rows) - len(nightly)
    if batches:
        note += f" {batches:,} data-subject request batches are counted in the next section."
    chart = _column_chart("Decisions per run (allow, redact, deny)", shown, note=note.strip())
    runs = list(counted.runs.rows.items())[-_RUNS_TABLED:]
    decisions = _decision_order(c for _, c in runs)
    table = [
        [
            f"<code>{_e(run)}</code>",
            "requests" if batch(run, counts) else "run",
            _e(counted.days.get(run, "–") or "–"),
            *(_count(counts.get(d, 0)) for d in decisions),
            _count(counts.total()),
        ]
        for run, counts in runs
    ]
    caption = f"the latest {len(runs):,}" if len(counted.runs.rows) > len(runs) else "all runs"
    return chart + _details(
        f"Decisions per run ({caption})",
        _table(["run", "kind", "first entry", *decisions, "total"], table, align="lll" + "r" * 9),
    )


def _decision_table(counted: _Tally) -> str:
    def rows(breakdown: _Breakdown) -> list[list[str]]:
        return [
            [
                _e(label),
                *(_count(c.get(d, 0)) for d in ("allow", "redact", "deny")),
                _count(c.total()),
            ]
            for label, c in breakdown.ordered()
        ]

    headers = ["allow", "redact", "deny", "all decisions"]
    policies = [
        [f"<code>{_short_hash(h)}</code>", _count(c.total())] for h, c in counted.policies.ordered()
    ]
    return _details(
        "The numbers: by purpose, gate, rule, reason, actor and policy bundle",
        _table(["purpose", *headers], rows(counted.purposes))
        + _table(["gate", *headers], rows(counted.gates))
        + _table(["rule", *headers], rows(counted.rules))
        + _table(["reason", *headers], rows(counted.reasons))
        + _table(["jurisdiction", *headers], rows(counted.regimes))
        + _table(["actor", *headers], rows(counted.actors))
        + _table(["policy bundle hash", "decisions"], policies),
    )


# ----------------------------------------------------------------------------- requests


def _requests_section(counted: _Tally, runs: Sequence[Mapping[str, Any]]) -> str:
    requests = _decision_rows(counted.requests.ordered(), share_allowed=False)
    suppressed = [
        _bar(label, c.total(), "bad", note=f"{c.total():,}")
        for label, c in counted.suppressed.ordered()
    ]
    erased_rows = sum(_n(_map(s.get("totals")).get("rows_erased")) for s in runs)
    return _section(
        "requests",
        "Suppressions, erasures and sensitive topics",
        f"<p>Data-subject requests logged: {_count(counted.requests.total())} entries in "
        f"{_count(len(counted.request_runs))} request batches. Input rows of erased "
        f"subjects dropped by the runs: {_count(erased_rows)}.</p>",
        _bar_chart("Data-subject requests by kind (erasure, objection, …)", requests)
        if requests
        else '<p class="empty">No data-subject request is in the log.</p>',
        _bar_chart(
            "Decisions refused because of a suppression, erasure or objection (purpose · reason)",
            suppressed,
        )
        if suppressed
        else '<p class="empty">No decision was refused because of a suppression.</p>',
        _sensitive_topics(counted, runs),
    )


def _sensitive_topics(counted: _Tally, runs: Sequence[Mapping[str, Any]]) -> str:
    logged = [
        _bar(topic, c.total(), "warn", note=f"{c.total():,} ({_breakdown_text(c)})")
        for topic, c in counted.topics.ordered()
    ]
    from_runs: Counter[str] = Counter()
    for summary in runs:
        gate_b = _map(_map(summary.get("fusion")).get("gate_b"))
        for topic, n in _map(gate_b.get("sensitive_topics")).items():
            from_runs[_mask(str(topic))] += int(_n(n))
    summed = [_bar(t, n, "warn") for t, n in from_runs.most_common() if n]
    return (
        "<h3>Sensitive topics blocked at gate B</h3>"
        + (
            _bar_chart("Gate B decisions on sensitive topics, from the log (context topic)", logged)
            if logged
            else '<p class="empty">The log holds no gate B decision on a sensitive topic.</p>'
        )
        + (
            _bar_chart("Sensitive topics dropped at gate B, summed over the run summaries", summed)
            if summed
            else '<p class="empty">The run summaries report no sensitive topic dropped.</p>'
        )
    )


def _breakdown_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{d} {n:,}" for d, n in counts.items() if n)


# ----------------------------------------------------------------------------- providers


@dataclass
class _ProviderTotals:
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)
    calls: dict[str, Counter[str]] = field(default_factory=dict)
    """Run id → provider → calls."""
    table: list[list[str]] = field(default_factory=list)


def _provider_totals(runs: Sequence[Mapping[str, Any]]) -> _ProviderTotals:
    totals = _ProviderTotals()
    for summary in runs:
        run = _text(summary.get("run_id")) or "–"
        per_run = totals.calls.setdefault(run, Counter())
        for name_v, raw in _map(summary.get("enrichment")).items():
            name, p = _mask(str(name_v)), _map(raw)
            client, failed = _map(p.get("client")), _map(p.get("failed"))
            outcome = totals.outcomes.setdefault(name, Counter())
            outcome["matched"] += int(_n(p.get("matched")))
            outcome["no match"] += int(_n(p.get("no_match")))
            outcome["skipped: cached"] += int(_n(p.get("skipped_cached")))
            outcome["skipped: policy"] += int(
                sum(_n(v) for v in _map(p.get("skipped_policy")).values())
            )
            outcome["failed"] += int(sum(_n(v) for v in failed.values()))
            for reason, n in failed.items():
                totals.failures[f"{name} · {_mask(str(reason))}"] += int(_n(n))
            per_run[name] += int(_n(client.get("calls")))
            totals.table.append(_provider_row(run, name, p))
    return totals


def _provider_row(run: str, name: str, p: Mapping[str, Any]) -> list[str]:
    client = _map(p.get("client"))
    failed = _map(p.get("failed"))
    return [
        f"<code>{_e(run)}</code>",
        _e(name),
        _count(p.get("subjects")),
        _count(p.get("matched")),
        _count(p.get("no_match")),
        _count(sum(_n(v) for v in failed.values())),
        _e(", ".join(f"{_mask(str(k))} {_count(v)}" for k, v in failed.items() if _n(v)) or "–"),
        _count(client.get("calls")),
        _count(client.get("retries")),
        _count(client.get("throttled")),
        _count(client.get("timeouts")),
        _count(client.get("budget_used")),
        _count(p.get("budget")) if "budget" in p else "–",
        _count(client.get("budget_rejections")),
    ]


def _providers_section(counted: _Tally, runs: Sequence[Mapping[str, Any]]) -> str:
    totals = _provider_totals(runs)
    gate_a = _decision_rows(counted.providers.ordered())
    gate_a_chart = (
        _bar_chart("Gate A decisions per provider, from the log (context provider)", gate_a)
        if gate_a
        else ""
    )
    if not totals.outcomes:
        return _section(
            "providers",
            "Provider calls, spend and failures",
            gate_a_chart,
            '<p class="empty">No run summary reports an enrichment provider.</p>',
        )
    tones = {name: _CATEGORICAL[i % len(_CATEGORICAL)] for i, name in enumerate(totals.outcomes)}
    outcome_tones: dict[str, Tone] = {
        "matched": "ok",
        "no match": "info",
        "skipped: cached": "c5",
        "skipped: policy": "muted",
        "failed": "bad",
    }
    outcomes = [
        _Row(name, tuple(_Segment(k, float(c[k]), t) for k, t in outcome_tones.items()))
        for name, c in totals.outcomes.items()
    ]
    columns = [
        _Row(_run_label(run), tuple(_Segment(n, float(c[n]), tones[n]) for n in tones))
        for run, c in totals.calls.items()
    ]
    shown, note = _bucketed(columns)
    failures = [_bar(k, v, "bad") for k, v in totals.failures.most_common() if v]
    headers = ["run", "provider", "subjects", "matched", "no match", "failed", "failed by reason"]
    headers += ["calls", "retries", "429s", "timeouts", "spend (budget used)", "budget"]
    return _section(
        "providers",
        "Provider calls, spend and failures",
        '<p class="lede">Subjects denied at gate A never reach a provider; spend is the '
        "billable units used against each provider's budget.</p>",
        gate_a_chart,
        _bar_chart("Lookup outcomes per provider, all runs", outcomes),
        _column_chart("Provider calls per run", shown, note=note),
        _bar_chart("Failed lookups by provider and reason, all runs", failures)
        if failures
        else '<p class="empty">No lookup failed.</p>',
        _details(
            "Per run and provider",
            _table(
                [*headers, "refused: budget spent"],
                totals.table,
                align="ll" + "r" * 4 + "l" + "r" * 7,
            ),
        ),
    )


# ----------------------------------------------------------------------------- data quality


@dataclass
class _Quality:
    """Data quality of the runs, from their summaries."""

    validity: list[list[str]] = field(default_factory=list)
    quarantine: Counter[str] = field(default_factory=Counter)
    per_run: dict[str, Counter[str]] = field(default_factory=dict)
    """Run id → quarantined rows per reason."""
    rejections: Counter[str] = field(default_factory=Counter)
    identity: list[_Row] = field(default_factory=list)

    def add(self, summary: Mapping[str, Any], sources: Sequence[str]) -> None:
        run = _text(summary.get("run_id")) or "–"
        srcs = _map(summary.get("sources"))
        cells = []
        reasons = self.per_run.setdefault(run, Counter())
        for name in sources:
            src = _map(srcs.get(name))
            share = _share(src.get("rows_accepted"), src.get("rows_in"))
            cells.append(_meter_cell(share) + _pct(share) if src else "–")
            for code, n in _map(src.get("quarantined_by_reason")).items():
                reasons[_mask(str(code))] += int(_n(n))
            for fld, codes in _map(src.get("field_rejections")).items():
                for code, n in _map(codes).items():
                    self.rejections[f"{_mask(str(fld))} · {_mask(str(code))}"] += int(_n(n))
        self.quarantine.update(reasons)
        totals = _map(summary.get("totals"))
        overall = _share(totals.get("rows_accepted"), totals.get("rows_in"))
        self.validity.append(
            [f"<code>{_e(run)}</code>", *cells, _meter_cell(overall) + _pct(overall)]
        )
        ident = _map(summary.get("identity"))
        merges, splits = _n(ident.get("merges")), _n(ident.get("splits"))
        self.identity.append(
            _Row(
                _run_label(run),
                (_Segment("merges", merges, "c1"), _Segment("splits", splits, "c4")),
            )
        )

    def quarantine_columns(self) -> list[_Row]:
        tones = {
            code: _CATEGORICAL[i % len(_CATEGORICAL)] for i, code in enumerate(self.quarantine)
        }
        return [
            _Row(_run_label(run), tuple(_Segment(c, float(counts[c]), t) for c, t in tones.items()))
            for run, counts in self.per_run.items()
        ]


def _quality_section(runs: Sequence[Mapping[str, Any]]) -> str:
    if not runs:
        return _section("quality", "Data quality", '<p class="empty">No run summary was given.</p>')
    sources = list(dict.fromkeys(str(name) for s in runs for name in _map(s.get("sources"))))
    quality = _Quality()
    for summary in runs:
        quality.add(summary, sources)
    headers = ["run", *(f"{s} valid" for s in sources), "all sources"]
    latest = quality.validity[-_RECENT_RUNS:]
    table = _table(
        headers,
        latest,
        caption="Validity rate per run and source"
        + (f" (the latest {len(latest)} runs)" if len(latest) < len(quality.validity) else ""),
    )
    if len(latest) < len(quality.validity):
        table += _details(
            f"Validity rate of all {len(quality.validity):,} runs",
            _table(headers, quality.validity[-_RUNS_TABLED:]),
        )
    merges, merges_note = _bucketed(quality.identity)
    quarantined, quarantined_note = _bucketed(quality.quarantine_columns())
    return _section(
        "quality",
        "Data quality per run",
        '<p class="lede">Validity: the share of each source\'s rows accepted (the others are '
        "quarantined with a reason code, or erased).</p>",
        table,
        _column_chart("Quarantined rows per run, by reason", quarantined, note=quarantined_note)
        if quality.quarantine.total()
        else '<p class="empty">No row was quarantined in these runs.</p>',
        '<div class="pair">',
        _bar_chart(
            "Quarantined rows by reason, all runs",
            [_bar(k, v, "bad") for k, v in quality.quarantine.most_common() if v],
        ),
        _bar_chart(
            "Field rejections by field and code, all runs",
            [_bar(k, v, "warn") for k, v in quality.rejections.most_common() if v],
        ),
        "</div>",
        _column_chart("Identity merges and splits per run", merges, note=merges_note)
        if any(r.total for r in quality.identity)
        else '<p class="empty">No identity merge or split in these runs.</p>',
    )


# ----------------------------------------------------------------------------- personas


def _personas_section(runs: Sequence[Mapping[str, Any]]) -> str:
    with_personas = [s for s in runs if _seq(_map(s.get("personas")).get("cards"))]
    with_segments = [s for s in runs if _map(_map(s.get("behaviour")).get("segments"))]
    parts = []
    if with_personas:
        latest = with_personas[-1]
        personas = _map(latest.get("personas"))
        cards = [_map(c) for c in _seq(personas.get("cards"))]
        total = sum(_n(c.get("size")) for c in cards)
        grid = "".join(_persona_card(c, total) for c in cards)
        parts += [
            f"<p>Latest personas: run <code>{_e(latest.get('run_id', '–'))}</code>, method "
            f"{_e(personas.get('method', '–'))}, k = {_e(personas.get('k', '–'))}; personas "
            f"smaller than {_count(personas.get('min_group_size'))} profiles are not shown "
            f"({_count(_map(personas.get('hidden')).get('personas', 0))} hidden).</p>",
            _bar_chart(
                "Persona sizes (profiles)",
                [_bar(_label(c.get("name") or c.get("persona")), c.get("size")) for c in cards],
            ),
            f'<div class="cards">{grid}</div>',
        ]
    else:
        parts.append('<p class="empty">No run summary reports personas.</p>')
    if with_segments:
        latest = with_segments[-1]
        segments = _map(_map(latest.get("behaviour")).get("segments"))
        rows = [
            _bar(_mask(str(k)), v, "c0")
            for k, v in sorted(segments.items(), key=lambda i: -_n(i[1]))
        ]
        parts.append(
            _bar_chart(
                f"Customers per RFM segment (run {_text(latest.get('run_id')) or '–'})", rows
            )
        )
    else:
        parts.append('<p class="empty">No run summary reports RFM segments.</p>')
    return _section("personas", "Personas and segments", *parts)


def _persona_card(card: Mapping[str, Any], total: float) -> str:
    change = _number(card.get("change"))
    movement = (
        "new or not compared"
        if change is None
        else "unchanged"
        if not change
        else f"{'▲' if change > 0 else '▼'} {abs(change):,.0f} vs the previous run"
    )
    return (
        f'<article class="card"><header><h3>{_e(_label(card.get("name") or card.get("persona")))}'
        f'</h3></header><p class="size"><strong>{_count(card.get("size"))}</strong> profiles · '
        f"{_pct(_share(card.get('size'), total))} of those shown</p>"
        f'<p class="move">{_e(movement)}</p></article>'
    )


_AUDIT_CSS: Final = """
.verdict{display:flex;align-items:center;gap:18px;margin:.8em 0;padding:14px 18px;
border-radius:10px;border:3px solid}
.verdict-badge{font-size:2.2em;letter-spacing:.08em;color:#fff;padding:4px 18px;border-radius:8px}
.v-ok{border-color:var(--ok)}.v-ok .verdict-badge{background:var(--ok)}
.v-bad{border-color:var(--bad)}.v-bad .verdict-badge{background:var(--bad)}
.v-warn{border-color:var(--warn)}.v-warn .verdict-badge{background:var(--warn)}
.verdict-text{font-size:1.05em}
.problems table{border:2px solid var(--bad)}
.warning{color:var(--bad);font-weight:600}
.keys ul{display:inline-flex;flex-wrap:wrap;gap:.2em 1em;list-style:none;padding:0;margin:0 .6em}
.tiles dd small{font-size:.6em;font-weight:400;color:var(--muted-fg)}
svg.chart .grid{stroke:var(--line)}svg.chart .axis{stroke:var(--muted-fg)}
svg.chart text.small{font-size:10px}
h3{margin:1.2em 0 .4em}
"""
