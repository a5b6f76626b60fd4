"""The run's HTML report: one static, self-contained page of charts and tables for people.

`render_report` turns a run summary (`run_summary.json`, see `flows.summary`) and, when
personas were built, the personas document (`personas.json`) into one HTML5 document with
inline CSS and inline SVG only: no scripts, fonts, images or links to fetch, so it opens
from disk. Every chart is an SVG with `role="img"`, a `<title>` and a `<desc>` holding its
numbers, and shows those numbers as text too. Every value taken from the inputs passes
through `html.escape`; the report adds no data of its own beyond counts and shares, and
prints hashes only shortened.

Any section may be missing or empty (behaviour off, no providers, no fusion, no personas):
its place then says it did not run.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from flows.summary import _reasons
from profiles.files import private_file

Tone = Literal[
    "ok", "bad", "warn", "muted", "info", "prev", "c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"
]
"""A colour class of the stylesheet; never derived from input data."""

_CATEGORICAL: Final[tuple[Tone, ...]] = ("c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7")
_OUTCOME_TONES: Final[Mapping[str, Tone]] = {
    "allow": "ok",
    "redact": "warn",
    "deny": "bad",
}

_WIDTH: Final = 640
"""Usual width of a bar chart in SVG user units (CSS pixels at full size); long labels widen it."""
_ROW: Final = 24
_TOPICS_CHARTED: Final = 25

Fmt = Callable[[float], str]


def render_report(summary: Mapping[str, Any], personas: Mapping[str, Any] | None = None) -> str:
    """One complete, self-contained HTML5 document for a run summary and its personas."""
    run_id = summary.get("run_id", "unknown run")
    sections = [
        _sources_section(summary),
        _identity_section(_map(summary.get("identity"))),
        _policy_section(_map(summary.get("policy")), _map(summary.get("identity"))),
        _enrichment_section(_map(summary.get("enrichment"))),
        _behaviour_section(_map(summary.get("behaviour"))),
        _fusion_section(_map(summary.get("fusion"))),
        _personas_section(_map(personas), currency=_map(summary.get("behaviour")).get("currency")),
        _exports_section(_map(summary.get("exports"))),
    ]
    return page(
        f"Enrichment run {run_id}",
        css=_CSS,
        top=(_header(summary, _map(personas)), _nav()),
        sections=sections,
        footer=_footer(summary, personas),
    )


def page(title: str, *, css: str, top: Sequence[str], sections: Sequence[str], footer: str) -> str:
    """One complete HTML5 document: head with the title and inline CSS, then the header
    parts, the sections inside <main>, and the footer (all parts already escaped HTML)."""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<meta name="robots" content="noindex">',
            f"<title>{_e(title)}</title>",
            f"<style>{css}</style>",
            "</head>",
            "<body>",
            *top,
            "<main>",
            *sections,
            "</main>",
            footer,
            "</body>",
            "</html>",
            "",
        ]
    )


def write_report(
    path: Path, summary: Mapping[str, Any], personas: Mapping[str, Any] | None = None
) -> Path:
    """Write the report of `summary` (and `personas`) to `path` as UTF-8; return `path`."""
    path.write_text(render_report(summary, personas), encoding="utf-8")
    return private_file(path)


# Convention below: the formatters (`_count`, `_pct`, `_dec`, ...) and renderers return markup,
# and every value that came from the inputs enters it through `_e` or a formatter built on it.
# Chart labels and notes stay plain text until the chart escapes them.


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _seq(value: object) -> Sequence[Any]:
    return value if isinstance(value, list | tuple) else ()


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _n(value: object) -> float:
    """A number to draw: anything that is not a finite, non-negative number draws as 0."""
    number = _number(value)
    return number if number is not None and number > 0 else 0.0


def _count(value: object) -> str:
    number = _number(value)
    if number is None:
        return "–" if value is None else _e(value)
    return f"{number:,.0f}" if number.is_integer() else f"{number:,.2f}"


def _pct(value: object) -> str:
    number = _number(value)
    return "–" if number is None else f"{number:.1%}"


def _fixed(digits: int) -> Fmt:
    def fmt(value: float) -> str:
        return f"{value:,.{digits}f}"

    return fmt


def _dec(value: object, digits: int = 2) -> str:
    number = _number(value)
    if number is None:
        return "–" if value is None else _e(value)
    return _fixed(digits)(number)


def _short_hash(value: object) -> str:
    text = str(value or "")
    return _e(text[:12] + "…") if len(text) > 12 else _e(text or "–")


def _duration(value: object) -> str:
    seconds = _number(value)
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes:,} min {rest} s"


def _share(part: object, whole: object) -> float | None:
    total = _number(whole)
    value = _number(part)
    return value / total if value is not None and total else None


@dataclass(frozen=True)
class _Segment:
    """One coloured piece of a bar."""

    label: str
    value: float
    tone: Tone


@dataclass(frozen=True)
class _Row:
    """One bar of a chart: stacked segments, an optional thin bar behind (e.g. last run)."""

    label: str
    segments: tuple[_Segment, ...]
    note: str = ""
    """The text beside the bar (plain text; escaped when drawn); default: the total."""
    ghost: float | None = None
    ghost_label: str = "previous"

    @property
    def total(self) -> float:
        return sum(s.value for s in self.segments)


def _bar(label: str, value: object, tone: Tone = "c0", *, note: str = "") -> _Row:
    return _Row(label, (_Segment(label, _n(value), tone),), note)


def _bar_chart(
    title: str,
    rows: Sequence[_Row],
    *,
    fmt: Fmt = _count,
    scale_max: float | None = None,
    note: str = "",
) -> str:
    """A titled horizontal bar chart (accessible inline SVG), its numbers beside the bars."""
    if not rows:
        return f'<p class="empty">{_e(title)}: nothing to show.</p>'
    notes = [row.note or fmt(row.total) for row in rows]
    label_w = math.ceil(min(260.0, max(60.0, *(_text_width(r.label) + 12 for r in rows))))
    value_w = math.ceil(min(320.0, max(40.0, *(_text_width(n) + 12 for n in notes))))
    plot_w = max(240, _WIDTH - label_w - value_w)
    width = label_w + plot_w + value_w
    top = max([scale_max or 0.0, *(r.total for r in rows), *(r.ghost or 0.0 for r in rows)])
    top = top or 1.0
    parts = [_svg_open(title, width, len(rows) * _ROW + 4, desc=_describe(rows, fmt))]
    for i, (row, text) in enumerate(zip(rows, notes, strict=True)):
        y = 2 + i * _ROW
        parts.append(
            f"<g><title>{_e(_describe([row], fmt))}</title>"
            f'<text class="lab" x="{label_w - 8}" y="{y + 13}" text-anchor="end">'
            f"{_e(_fit(row.label, label_w - 12))}</text>"
        )
        x = float(label_w)
        for seg in row.segments:
            w = plot_w * seg.value / top
            if w > 0:
                parts.append(
                    f'<rect class="k-{seg.tone}" x="{x:.1f}" y="{y + 2}" width="{max(w, 1):.1f}" '
                    f'height="{14 if row.ghost is None else 11}"/>'
                )
            x += w
        if row.ghost is not None:
            gw = plot_w * row.ghost / top
            parts.append(
                f'<rect class="k-prev" x="{label_w}" y="{y + 15}" width="{max(gw, 1):.1f}" '
                'height="4"/>'
            )
            x = max(x, label_w + gw)
        parts.append(f'<text class="val" x="{x + 6:.1f}" y="{y + 13}">{_e(text)}</text></g>')
    parts.append("</svg>")
    return _figure(title, "".join(parts) + _legend(rows), note=note)


def _text_width(text: str) -> float:
    """Rough width of `text` at 12px in a common sans-serif; generous, to never clip."""
    return sum(
        4.0 if c in " .,:;'|!il()·" else 8.6 if c.isupper() or c in "_%mwMW@" else 7.2 for c in text
    )


def _fit(text: str, width: float) -> str:
    if _text_width(text) <= width:
        return text
    while text and _text_width(text + "…") > width:
        text = text[:-1]
    return text + "…"


def _describe(rows: Iterable[_Row], fmt: Fmt) -> str:
    parts = []
    for row in rows:
        if len(row.segments) > 1:
            text = ", ".join(f"{s.label} {fmt(s.value)}" for s in row.segments)
        else:
            text = fmt(row.total)
        if row.note:
            text += f" ({row.note})"
        if row.ghost is not None:
            text += f", {row.ghost_label} {fmt(row.ghost)}"
        parts.append(f"{row.label}: {text}")
    return "; ".join(parts)


def _legend(rows: Sequence[_Row]) -> str:
    seen: dict[str, Tone] = {}
    for row in rows:
        if len(row.segments) > 1:
            for seg in row.segments:
                seen.setdefault(seg.label, seg.tone)
    ghosts = {row.ghost_label for row in rows if row.ghost is not None}
    if not seen and not ghosts:
        return ""
    items = [
        f'<li><span class="sw k-{tone}"></span>{_e(label)}</li>' for label, tone in seen.items()
    ]
    items += [f'<li><span class="sw ghost k-prev"></span>{_e(label)}</li>' for label in ghosts]
    return f'<ul class="legend" aria-hidden="true">{"".join(items)}</ul>'


def _svg_open(title: str, width: int, height: int, *, desc: str = "") -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{_e(title)}"><title>{_e(title)}</title>'
        + (f"<desc>{_e(desc)}</desc>" if desc else "")
    )


def _stacked_strip(title: str, parts: Mapping[str, Any], *, width: int = 280) -> str:
    """A thin 100 % stacked bar (e.g. a persona's RFM mix) with its legend."""
    items = [(str(k), _n(v)) for k, v in parts.items() if _n(v) > 0]
    total = sum(v for _, v in items)
    if not total:
        return '<p class="empty">–</p>'
    desc = ", ".join(f"{k} {_pct(v / total)}" for k, v in items)
    svg = [_svg_open(f"{title}: {desc}", width, 14)]
    x = 0.0
    for i, (label, value) in enumerate(items):
        w = width * value / total
        svg.append(
            f'<rect class="k-{_CATEGORICAL[i % len(_CATEGORICAL)]}" x="{x:.1f}" y="0" '
            f'width="{w:.1f}" height="14"><title>{_e(label)} {_pct(value / total)}</title></rect>'
        )
        x += w
    svg.append("</svg>")
    legend = "".join(
        f'<li><span class="sw k-{_CATEGORICAL[i % len(_CATEGORICAL)]}"></span>'
        f"{_e(label)} {_pct(value / total)}</li>"
        for i, (label, value) in enumerate(items)
    )
    return "".join(svg) + f'<ul class="legend small">{legend}</ul>'


def _meters(rows: Sequence[tuple[str, float | None, str]], *, caption: str) -> str:
    """A compact table of label, CSS bar (a share in 0..1) and the value as text."""
    if not rows:
        return f'<p class="empty">{_e(caption)}: –</p>'
    body = []
    for label, share, text in rows:
        width = 100 * min(1.0, max(0.0, share or 0.0))
        body.append(
            f'<tr><th scope="row">{_e(label)}</th><td class="meter" aria-hidden="true">'
            f'<span class="track"><span class="fill" style="width:{width:.1f}%"></span></span>'
            f'</td><td class="num">{text}</td></tr>'
        )
    return (
        f'<table class="meters"><caption>{_e(caption)}</caption>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _share_meters(parts: Mapping[str, Any], *, caption: str) -> str:
    return _meters([(str(k), _number(v), _pct(v)) for k, v in parts.items()], caption=caption)


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, align: str = "", caption: str = ""
) -> str:
    """A table; cells are markup. `align` has one letter per column, `r` right-aligns it;
    by default the first column is text and the others are numbers."""
    align = align or "l" + "r" * (len(headers) - 1)

    def cls(i: int) -> str:
        return " class=num" if align[i : i + 1] == "r" else ""

    head = "".join(f'<th scope="col"{cls(i)}>{_e(h)}</th>' for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i)}>{cell}</td>" for i, cell in enumerate(row)) + "</tr>"
        for row in rows
    )
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _details(summary_text: str, content: str) -> str:
    return f"<details><summary>{_e(summary_text)}</summary>{content}</details>"


def _tiles(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<dl class="tiles">'
        + "".join(f"<div><dt>{_e(k)}</dt><dd>{v}</dd></div>" for k, v in items)
        + "</dl>"
    )


def _section(anchor: str, title: str, *body: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{"".join(body)}</section>'


def _not_run(anchor: str, title: str, text: str) -> str:
    return _section(anchor, title, f'<p class="empty">Not run: {_e(text)}</p>')


def _figure(title: str, content: str, *, note: str = "") -> str:
    extra = f'<p class="fnote">{_e(note)}</p>' if note else ""
    return f"<figure><figcaption>{_e(title)}</figcaption>{content}{extra}</figure>"


_SECTIONS: Final = (
    ("sources", "Rows per source"),
    ("identity", "Identity"),
    ("policy", "Policy"),
    ("enrichment", "Enrichment providers"),
    ("behaviour", "Behaviour"),
    ("fusion", "Interests"),
    ("personas", "Personas"),
    ("exports", "Exports"),
)


def _exports_section(exports: Mapping[str, Any]) -> str:
    """Who each destination received, and the files written (gate C decided both)."""
    if not exports:
        return _not_run("exports", "Exports", "exports are off.")
    crm, ads = _map(exports.get("crm_export")), _map(exports.get("ads_export"))
    rows = [
        _Row(f"CRM {name}", (_Segment("rows", _n(n), "ok"),))
        for name, n in _map(crm.get("rows")).items()
    ]
    rows += [
        _Row(f"audience {name}", (_Segment("rows", _n(n), "info"),))
        for name, n in _map(ads.get("rows")).items()
    ]
    analytics = _map(exports.get("analytics"))
    if analytics:
        rows.append(_Row("analytics", (_Segment("rows", _n(analytics.get("profiles")), "c5"),)))
    note = "delta: only new or changed profiles" if crm.get("delta") else ""
    return _section(
        "exports",
        "Exports",
        "<p>Only people gate C allowed for each destination, only the fields its allow-list "
        "names; audiences hold SHA-256 values only.</p>",
        _bar_chart("Rows written per destination file", rows, note=note),
    )


def _nav(sections: tuple[tuple[str, str], ...] = _SECTIONS) -> str:
    """The page's section menu: (anchor, title) pairs."""
    links = "".join(f'<li><a href="#{a}">{_e(t)}</a></li>' for a, t in sections)
    return f'<nav aria-label="Sections"><ul>{links}</ul></nav>'


def _header(summary: Mapping[str, Any], personas: Mapping[str, Any]) -> str:
    totals = _map(summary.get("totals"))
    identity = _map(summary.get("identity"))
    bundle = _map(_map(summary.get("policy")).get("bundle"))
    quarantined = _share(totals.get("rows_quarantined"), totals.get("rows_in"))
    tiles = [
        ("rows in", _count(totals.get("rows_in"))),
        ("accepted", _count(totals.get("rows_accepted"))),
        (
            "quarantined",
            _count(totals.get("rows_quarantined"))
            + (f" ({_pct(quarantined)})" if quarantined is not None else ""),
        ),
        ("profiles", _count(identity.get("profiles"))),
        ("personas shown", _count(len(_seq(personas.get("cards")))) if personas else "–"),
        ("duration", _duration(summary.get("duration_seconds"))),
    ]
    policy = (
        f" · policy {_e(bundle.get('name', '–'))} {_e(bundle.get('version', ''))} "
        f"(<code>{_short_hash(bundle.get('hash'))}</code>)"
        if bundle
        else ""
    )
    return (
        f"<header><h1>Nightly enrichment <span class=run>{_e(summary.get('run_id', '–'))}</span>"
        f'</h1><p class="meta">started {_e(summary.get("started_at", "–"))} · finished '
        f"{_e(summary.get('finished_at', '–'))}{policy} · pseudonym key "
        f"<code>{_e(summary.get('pseudonym_key_id', '–'))}</code></p>{_tiles(tiles)}</header>"
    )


def _footer(summary: Mapping[str, Any], personas: Mapping[str, Any] | None) -> str:
    sources = "run_summary.json" + (" and personas.json" if personas else "")
    return (
        f"<footer><p>Made from {sources} of run {_e(summary.get('run_id', '–'))}. Counts and "
        "aggregates only: this page holds no personal data. Groups smaller than the persona "
        "size floor are never shown.</p></footer>"
    )


def _sources_section(summary: Mapping[str, Any]) -> str:
    sources = _map(summary.get("sources"))
    if not sources:
        return _not_run("sources", "Rows per source", "no sources were read.")
    rows, table, reasons = [], [], dict[str, float]()
    for name, raw in sources.items():
        src = _map(raw)
        rows_in = src.get("rows_in")
        rows.append(
            _Row(
                str(name),
                (
                    _Segment("accepted", _n(src.get("rows_accepted")), "ok"),
                    _Segment("quarantined", _n(src.get("rows_quarantined")), "bad"),
                    _Segment("erased", _n(src.get("rows_erased")), "muted"),
                ),
                note=f"{_count(rows_in)} in · "
                f"{_pct(_share(src.get('rows_quarantined'), rows_in))} quarantined",
            )
        )
        codes = {str(k): int(_n(v)) for k, v in _map(src.get("quarantined_by_reason")).items()}
        for code, n in codes.items():
            reasons[code] = reasons.get(code, 0.0) + n
        table.append(
            [
                _e(name),
                _e(src.get("file", "–")),
                _count(rows_in),
                _count(src.get("rows_accepted")),
                _count(src.get("rows_quarantined")),
                _count(src.get("rows_erased")),
                _e(_reasons(codes)),
            ]
        )
    totals = _map(summary.get("totals"))
    keys = ("rows_in", "rows_accepted", "rows_quarantined", "rows_erased")
    table.append(
        [
            "<strong>total</strong>",
            "",
            *(f"<strong>{_count(totals.get(k))}</strong>" for k in keys),
            "",
        ]
    )
    reason_rows = [_bar(c, n, "bad") for c, n in sorted(reasons.items(), key=lambda i: -i[1])]
    return _section(
        "sources",
        "Rows per source",
        '<p class="lede">Every input row ends accepted (linked to a profile), quarantined '
        "(with a reason code) or erased; the three add up to the rows read.</p>",
        _bar_chart("Rows per source: accepted, quarantined, erased", rows),
        _bar_chart("Quarantined rows by reason, all sources", reason_rows)
        if reason_rows
        else '<p class="empty">No row was quarantined.</p>',
        _table(
            [
                "source",
                "file",
                "rows in",
                "accepted",
                "quarantined",
                "erased",
                "quarantined by reason",
            ],
            table,
            align="llrrrrl",
        ),
        _field_rejections(sources),
    )


def _field_rejections(sources: Mapping[str, Any]) -> str:
    rows = [
        [_e(name), _e(field), _e(_reasons({str(k): int(_n(v)) for k, v in _map(codes).items()}))]
        for name, src in sources.items()
        for field, codes in _map(_map(src).get("field_rejections")).items()
    ]
    if not rows:
        return ""
    return _details(
        "Field rejections (the value is dropped; the row is kept if another identifier remains)",
        _table(["source", "field", "rejections by reason"], rows, align="lll"),
    )


def _identity_section(identity: Mapping[str, Any]) -> str:
    if not identity:
        return _not_run("identity", "Identity", "identity resolution did not report.")
    tiles = [
        (label, _count(identity.get(key)))
        for key, label in (
            ("records", "rows linked"),
            ("profiles", "profiles"),
            ("profiles_new", "new"),
            ("profiles_kept", "kept"),
            ("merges", "merges"),
            ("splits", "splits"),
        )
    ]
    sizes = [_bar(str(k), v, "info") for k, v in _map(identity.get("cluster_sizes")).items()]
    blocked: list[list[str]] = []
    for name, value in _map(identity.get("blocked")).items():
        if isinstance(value, Mapping):
            blocked += [[_e(f"{name} {detail}"), _count(n)] for detail, n in value.items()]
        else:
            blocked.append([_e(name), _count(value)])
    conflicts = [[_e(k), _count(v)] for k, v in _map(identity.get("conflicts")).items()]
    largest = ", ".join(_count(n) for n in _seq(identity.get("largest"))) or "–"
    return _section(
        "identity",
        "Identity",
        _tiles(tiles),
        _bar_chart("Profiles by number of rows linked to them", sizes),
        f"<p>Largest profiles (rows): {largest}</p>",
        _details(
            "Links blocked by guardrails, and conflicts",
            _table(["guardrail", "links blocked"], blocked)
            + (_table(["conflict", "count"], conflicts) if conflicts else ""),
        ),
    )


def _policy_section(policy: Mapping[str, Any], identity: Mapping[str, Any]) -> str:
    if not policy:
        return _not_run("policy", "Policy", "no policy decisions were recorded.")
    bundle = _map(policy.get("bundle"))
    decisions = [_map(d) for d in _seq(policy.get("decisions"))]
    table = [
        [
            _e(d.get("gate", "–")),
            _e(d.get("purpose", "–")),
            _e(d.get("decision", "–")),
            f"<code>{_e(d.get('rule', '–'))}</code>",
            _e(d.get("reason", "–")),
            _count(d.get("subjects")),
        ]
        for d in decisions
    ]
    consents = [[_e(k), _count(v)] for k, v in _map(policy.get("consents")).items()]
    return _section(
        "policy",
        "Policy",
        f"<p>Bundle <strong>{_e(bundle.get('name', '–'))}</strong> "
        f"{_e(bundle.get('version', ''))} (hash <code>{_short_hash(bundle.get('hash'))}</code>). "
        "Default deny: a purpose without a recorded lawful basis is not processed. Redacted "
        "profiles are allowed with some fields or topics removed.</p>",
        _purpose_chart(policy, decisions, profiles=_number(identity.get("profiles"))),
        _details(
            "Decisions by gate, rule and reason",
            _table(
                ["gate", "purpose", "decision", "rule", "reason", "profiles"],
                table,
                align="lllllr",
            ),
        )
        if table
        else "",
        _details("Consent records read", _table(["consent records", "count"], consents))
        if consents
        else "",
    )


def _purpose_chart(
    policy: Mapping[str, Any], decisions: Sequence[Mapping[str, Any]], *, profiles: float | None
) -> str:
    """Profiles allowed per purpose; stacked allow / redact / deny when decisions are known."""
    by_purpose: dict[str, dict[str, float]] = {}
    for d in decisions:
        counts = by_purpose.setdefault(str(d.get("purpose", "–")), {})
        outcome = str(d.get("decision", "–"))
        counts[outcome] = counts.get(outcome, 0.0) + _n(d.get("subjects"))
    allowed = _map(policy.get("allowed"))
    rows = []
    for purpose in dict.fromkeys([*map(str, allowed), *by_purpose]):
        counts = by_purpose.get(purpose, {})
        n = allowed.get(purpose, counts.get("allow", 0.0) + counts.get("redact", 0.0))
        of = f" of {_count(profiles)}" if profiles else ""
        note = f"{_count(n)} allowed · {_pct(_share(n, profiles))}{of}"
        segments = (
            tuple(_Segment(o, counts.get(o, 0.0), t) for o, t in _OUTCOME_TONES.items())
            if counts
            else (_Segment("allow", _n(n), "ok"),)
        )
        rows.append(_Row(purpose, segments, note=note))
    return _bar_chart(
        "Profiles allowed per purpose (allow, redact, deny)",
        rows,
        scale_max=profiles,
        note="Bars are drawn against all profiles of the run.",
    )


def _enrichment_section(enrichment: Mapping[str, Any]) -> str:
    if not enrichment:
        return _not_run(
            "enrichment", "Enrichment providers", "no enrichment providers are configured."
        )
    rows, table = [], []
    for name, raw in enrichment.items():
        p = _map(raw)
        skipped, failed = _map(p.get("skipped_policy")), _map(p.get("failed"))
        client = _map(p.get("client"))
        rows.append(
            _Row(
                str(name),
                (
                    _Segment("matched", _n(p.get("matched")), "ok"),
                    _Segment("no match", _n(p.get("no_match")), "info"),
                    _Segment("skipped: cached", _n(p.get("skipped_cached")), "c5"),
                    _Segment("skipped: policy", sum(_n(v) for v in skipped.values()), "muted"),
                    _Segment("failed", sum(_n(v) for v in failed.values()), "bad"),
                ),
                note=f"{_count(p.get('subjects'))} subjects · "
                f"{_pct(_share(p.get('matched'), p.get('subjects')))} matched",
            )
        )
        table.append(
            [
                _e(name),
                _e(f"{p.get('type', '–')} · {p.get('region', '–')}"),
                _count(p.get("subjects")),
                _count(p.get("matched")),
                _count(p.get("no_match")),
                _count(p.get("skipped_cached")),
                _breakdown(skipped),
                _breakdown(failed),
                _count(p.get("signals")),
                _count(client.get("calls")),
                _count(client.get("retries")),
                _count(client.get("throttled")),
                f"{_dec(client.get('latency_p50_ms'), 0)} / "
                f"{_dec(client.get('latency_p99_ms'), 0)}",
            ]
        )
    headers = ["provider", "type · region", "subjects", "matched", "no match", "cached"]
    headers += ["skipped by policy", "failed", "signals", "calls", "retries", "429s", "p50/p99 ms"]
    return _section(
        "enrichment",
        "Enrichment providers",
        '<p class="lede">Every subject ends in exactly one outcome per provider. Subjects '
        "skipped by policy never reached the provider.</p>",
        _bar_chart("Outcomes per provider", rows),
        _table(headers, table, align="llrrrrrrrrrrr"),
    )


def _breakdown(counts: Mapping[str, Any]) -> str:
    shown = [f"{_e(k)} {_count(v)}" for k, v in counts.items() if _n(v)]
    return "<br>".join(shown) or "0"


def _behaviour_section(behaviour: Mapping[str, Any]) -> str:
    if not behaviour:
        return _not_run("behaviour", "Behaviour", "behaviour scoring is off for this run.")
    scored = _number(behaviour.get("customers"))

    def bars(counts: Mapping[str, Any], tones: Sequence[Tone]) -> list[_Row]:
        return [
            _bar(str(k), v, tones[i % len(tones)], note=f"{_count(v)} · {_pct(_share(v, scored))}")
            for i, (k, v) in enumerate(counts.items())
        ]

    segments = dict(sorted(_map(behaviour.get("segments")).items(), key=lambda i: -_n(i[1])))
    tiles = [
        ("customers scored", _count(behaviour.get("customers"))),
        ("purchases", _count(behaviour.get("purchases"))),
        ("one-time buyers", _count(behaviour.get("one_time_buyers"))),
        ("mean churn risk", _pct(behaviour.get("churn_risk_mean"))),
        ("interest signals", _count(behaviour.get("interest_signals"))),
    ]
    excluded = [[_e(k), _count(v)] for k, v in _map(behaviour.get("lines_excluded")).items()]
    return _section(
        "behaviour",
        "Behaviour",
        f"<p>Scored as of {_e(behaviour.get('as_of', '–'))}, amounts in "
        f"{_e(behaviour.get('currency', '–'))}, model <code>{_e(behaviour.get('model', '–'))}"
        f"</code>; {_count(behaviour.get('profiles_allowed'))} profiles allowed for profiling.</p>",
        _tiles(tiles),
        _bar_chart("Customers per RFM segment", bars(segments, ("c0",))),
        '<div class="pair">',
        _bar_chart(
            "ABC classes: customers by revenue contribution",
            bars(_map(behaviour.get("abc")), _CATEGORICAL),
            note="A: the customers who bring most of the revenue; C: the least.",
        ),
        _bar_chart(
            "XYZ classes: customers by regularity of demand",
            bars(_map(behaviour.get("xyz")), _CATEGORICAL[3:]),
            note=f"X: most regular. One-time buyers "
            f"({_count(behaviour.get('one_time_buyers'))}) have no XYZ class.",
        ),
        "</div>",
        _pareto(_map(behaviour.get("pareto"))),
        _details("Order lines excluded", _table(["reason", "lines"], excluded)) if excluded else "",
        _models(_map(behaviour.get("models"))),
    )


def _pareto(pareto: Mapping[str, Any]) -> str:
    top20, top4 = _number(pareto.get("top_20_share")), _number(pareto.get("top_4_share"))
    text = (
        f"<p>The top 20% of customers bring <strong>{_pct(top20)}</strong> of revenue, the top "
        f"4% bring <strong>{_pct(top4)}</strong>.</p>"
        if top20 is not None
        else '<p class="empty">Pareto shares: not computed.</p>'
    )
    points = []
    for point in _seq(pareto.get("lorenz")):
        pair = [_number(v) for v in _seq(point)]
        if len(pair) == 2 and pair[0] is not None and pair[1] is not None:
            points.append((min(1.0, max(0.0, pair[0])), min(1.0, max(0.0, pair[1]))))
    if len(points) < 2:
        return text
    return _figure("Revenue concentration (Lorenz curve)", _lorenz(points, top20)) + text


def _lorenz(points: Sequence[tuple[float, float]], top20: float | None) -> str:
    size, left, top = 260, 44, 10
    width, height = left + size + 230, top + size + 36

    def x(share: float) -> float:
        return left + share * size

    def y(share: float) -> float:
        return top + (1 - share) * size

    curve = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in points)
    step = max(1, len(points) // 10)
    desc = "; ".join(f"{a:.0%} of customers: {b:.1%} of revenue" for a, b in points[::step])
    parts = [
        _svg_open(
            "Lorenz curve: cumulative share of revenue by share of customers, smallest first",
            width,
            height,
            desc=desc,
        ),
        f'<rect class="frame" x="{left}" y="{top}" width="{size}" height="{size}"/>',
        f'<line class="diag" x1="{x(0)}" y1="{y(0)}" x2="{x(1)}" y2="{y(1)}"/>',
        f'<polyline class="curve" points="{curve}"/>',
    ]
    for tick in (0.0, 0.5, 1.0):
        parts.append(
            f'<text class="val" x="{x(tick):.0f}" y="{top + size + 14}" text-anchor="middle">'
            f'{tick:.0%}</text><text class="val" x="{left - 6}" y="{y(tick) + 4:.0f}" '
            f'text-anchor="end">{tick:.0%}</text>'
        )
    parts.append(
        f'<text class="lab" x="{x(0.5):.0f}" y="{top + size + 30}" text-anchor="middle">'
        "customers, smallest spenders first</text>"
        f'<text class="lab" x="{x(0) + 6}" y="{y(1) + 14}">revenue</text>'
    )
    if top20 is not None:
        # The top 20 % of customers bring the revenue between L(0.8) and 100 %: a bracket on
        # the right edge spans exactly that share.
        low, high, edge = y(1 - top20), y(1), x(1) + 10
        mid = (low + high) / 2
        parts.append(
            f'<line class="mark" x1="{x(0.8):.1f}" y1="{y(0):.1f}" x2="{x(0.8):.1f}" '
            f'y2="{low:.1f}"/><line class="mark" x1="{x(0.8):.1f}" y1="{low:.1f}" '
            f'x2="{edge:.1f}" y2="{low:.1f}"/>'
            f'<circle class="dot" cx="{x(0.8):.1f}" cy="{low:.1f}" r="3.5"/>'
            f'<path class="brace" d="M{edge - 4:.1f},{high:.1f}H{edge:.1f}V{low:.1f}'
            f'H{edge - 4:.1f}"/>'
            f'<text class="lab" x="{edge + 6:.1f}" y="{mid - 2:.1f}">top 20% of customers</text>'
            f'<text class="lab" x="{edge + 6:.1f}" y="{mid + 13:.1f}">bring {top20:.1%} of '
            "revenue</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _models(models: Mapping[str, Any]) -> str:
    if not models:
        return ""
    if "skipped" in models:
        return f"<p>BG/NBD and Gamma-Gamma not fitted: {_e(models['skipped'])}.</p>"
    return _details(
        "Purchase models (BG/NBD, Gamma-Gamma) and hold-out check",
        _fits(models) + _holdout(_map(models.get("holdout"))),
    )


def _fits(models: Mapping[str, Any]) -> str:
    rows = []
    for name in ("bgnbd", "gamma_gamma"):
        fit = _map(models.get(name))
        if fit:
            params = ", ".join(
                f"{_e(k)} {_e(f'{v:.4g}' if _number(v) is not None else v)}"
                for k, v in _map(fit.get("params")).items()
            )
            converged = "yes" if fit.get("converged") else f"no: {_e(fit.get('message', ''))}"
            ll = _dec(fit.get("log_likelihood"), 1)
            rows.append([_e(name), params, ll, converged, _count(fit.get("n_customers"))])
    headers = ["model", "parameters", "log-likelihood", "converged", "customers"]
    return _table(headers, rows, align="llrlr") if rows else ""


def _holdout(holdout: Mapping[str, Any]) -> str:
    if not holdout:
        return ""
    text = (
        f"<p>Hold-out check: predicted {_dec(holdout.get('predicted_total'), 0)} repeat "
        f"purchases, actual {_dec(holdout.get('actual_total'), 0)} (mean absolute error per "
        f"customer {_dec(holdout.get('mean_absolute_error'), 3)}).</p>"
    )
    rows = []
    for raw in _seq(holdout.get("by_frequency")):
        band = _map(raw)
        actual, predicted = band.get("mean_actual"), band.get("mean_predicted")
        rows.append(
            _Row(
                f"{band.get('label', '–')} before",
                (_Segment("actual", _n(actual), "c0"),),
                note=f"actual {_dec(actual)} · predicted {_dec(predicted)} · "
                f"{_count(band.get('customers'))} customers",
                ghost=_n(predicted),
                ghost_label="predicted",
            )
        )
    title = "Hold-out: repeat purchases per customer by purchases before, actual and predicted"
    return text + (_bar_chart(title, rows, fmt=_fixed(2)) if rows else "")


def _fusion_section(fusion: Mapping[str, Any]) -> str:
    if not fusion:
        return _not_run("fusion", "Interests", "signal fusion did not run.")
    with_interests = _number(fusion.get("profiles_with_interests"))
    tiles = [
        ("signals in", _count(fusion.get("signals_in"))),
        ("merged interests", _count(fusion.get("merged"))),
        ("profiles with interests", _count(with_interests)),
    ]
    if "not_profiled" in fusion:
        tiles.append(("signals of profiles not profiled", _count(fusion.get("not_profiled"))))
    by_provider = []
    for name, raw in _map(fusion.get("by_provider")).items():
        p = _map(raw)
        unused = max(0.0, _n(p.get("signals")) - _n(p.get("used")))
        by_provider.append(
            _Row(
                str(name),
                (_Segment("used", _n(p.get("used")), "ok"), _Segment("not used", unused, "muted")),
                note=f"{_count(p.get('used'))} of {_count(p.get('signals'))} used",
            )
        )
    return _section(
        "fusion",
        "Interests",
        _tiles(tiles),
        _bar_chart("Signals per provider: used in fusion, not used", by_provider)
        if by_provider
        else '<p class="empty">Fusion of signals is off: no interests were merged.</p>',
        _gate_b(_map(fusion.get("gate_b"))),
        _counts_details(
            "Declared (preference-centre) rows dropped, by reason",
            fusion.get("declared_dropped"),
            key="reason",
        ),
        _counts_details(
            "Signals with unknown topics (not in the taxonomy), by provider",
            fusion.get("unknown_topics"),
            key="provider",
        ),
        _topics(_map(fusion.get("topics")), with_interests),
    )


def _gate_b(gate_b: Mapping[str, Any]) -> str:
    dropped = [
        _bar(str(k), v, "bad")
        for k, v in sorted(_map(gate_b.get("dropped")).items(), key=lambda i: -_n(i[1]))
    ]
    floor = _number(gate_b.get("floor"))
    note = f"Confidence floor for profiling: {floor:.2f}." if floor is not None else ""
    chart = (
        _bar_chart("Interests dropped at gate B (profiling), by reason", dropped, note=note)
        if any(r.total for r in dropped)
        else '<p class="empty">Gate B dropped no interest.</p>'
    )
    return chart + _counts_details(
        "Sensitive topics dropped at gate B", gate_b.get("sensitive_topics"), key="topic"
    )


def _counts_details(title: str, counts: object, *, key: str) -> str:
    rows = [[_e(k), _count(v)] for k, v in _map(counts).items()]
    return _details(title, _table([key, "count"], rows)) if rows else ""


def _topics(topics: Mapping[str, Any], with_interests: float | None) -> str:
    if not topics:
        return '<p class="empty">No interest topic is held by any profile.</p>'
    ordered = sorted(topics.items(), key=lambda i: -_n(_map(i[1]).get("profiles")))
    rows: list[_Row] = []
    table: list[list[str]] = []
    for key, raw in ordered:
        t = _map(raw)
        conf = t.get("mean_confidence")
        if len(rows) < _TOPICS_CHARTED:
            note = f"{_count(t.get('profiles'))} · confidence {_dec(conf)}"
            rows.append(_bar(str(t.get("label") or key), t.get("profiles"), "c2", note=note))
        table.append(
            [
                f"<code>{_e(key)}</code>",
                _e(t.get("label", "")),
                _count(t.get("profiles")),
                _pct(_share(t.get("profiles"), with_interests)),
                _meter_cell(_number(conf)) + _dec(conf),
                _count(t.get("declared")),
            ]
        )
    more = (
        f", the {_TOPICS_CHARTED} largest of {len(ordered):,}" if len(ordered) > len(rows) else ""
    )
    headers = ["topic", "label", "profiles", "of profiles with interests", "mean confidence"]
    return _bar_chart(
        f"Profiles holding each interest{more}",
        rows,
        note="Beside each bar: profiles holding the interest and their mean confidence.",
    ) + _details(
        "Interest coverage per topic",
        _table([*headers, "declared"], table, align="llrrrr"),
    )


def _meter_cell(share: float | None) -> str:
    width = 100 * min(1.0, max(0.0, share or 0.0))
    return (
        '<span class="track inline" aria-hidden="true">'
        f'<span class="fill" style="width:{width:.1f}%"></span></span> '
    )


def _personas_section(personas: Mapping[str, Any], *, currency: object) -> str:
    if not personas:
        return _not_run("personas", "Personas", "personas were not built for this run.")
    cards = [_map(c) for c in _seq(personas.get("cards"))]
    moved = personas.get("moved")
    # Without a previous run (`moved` null) nothing is new and nothing moved.
    new = {str(n) for n in _seq(_map(moved).get("new"))} if isinstance(moved, Mapping) else None
    gone = [str(n) for n in _seq(_map(moved).get("gone"))]
    sizes = [
        _Row(
            _persona_name(c),
            (_Segment("this run", _n(c.get("size")), "c0"),),
            note=f"{_count(c.get('size'))} · "
            + (_movement_text(c) if new is not None else _pct(c.get("share"))),
            ghost=_number(c.get("previous_size")) if new is not None else None,
            ghost_label="previous run",
        )
        for c in cards
    ]
    title = "Persona sizes, this run and the previous run" if new is not None else "Persona sizes"
    grid = "".join(_card(c, new=new, currency=currency) for c in cards)
    return _section(
        "personas",
        "Personas",
        _persona_method(personas),
        _bar_chart(title, sizes)
        if sizes
        else '<p class="empty">No persona is large enough to show.</p>',
        '<p class="empty">No previous run to compare with.</p>' if new is None else "",
        f"<p>No longer present: {_e(', '.join(gone))}.</p>" if gone else "",
        f'<div class="cards">{grid}</div>' if grid else "",
    )


def _persona_name(card: Mapping[str, Any]) -> str:
    return str(card.get("name") or card.get("persona") or "–")


_CRITERIA: Final[Mapping[str, str]] = {
    "silhouette": "chosen by the silhouette score",
    "fixed": "set in the configuration",
    "one_persona": "one persona (too few profiles, or k = 1)",
    "rules": "personas assigned by rules",
}


def _persona_method(personas: Mapping[str, Any]) -> str:
    criterion = _map(personas.get("criterion"))
    hidden = _map(personas.get("hidden"))
    k = personas.get("k")
    name = str(criterion.get("name", "–"))
    qualified = {str(q) for q in _seq(criterion.get("qualified"))}
    scores = [
        _bar(
            f"k = {key}",
            value,
            "ok" if str(key) == str(k) else "muted",
            note=_dec(value, 3) + (" · qualified" if str(key) in qualified else ""),
        )
        for key, value in _map(criterion.get("scores")).items()
    ]
    text = (
        f"<p>Method {_e(personas.get('method', '–'))} over {_count(personas.get('profiles'))} "
        f"profiles allowed for profiling; k = {_e(k)}, {_e(_CRITERIA.get(name, name))}.</p>"
        f'<p class="rule">Personas smaller than {_count(personas.get("min_group_size"))} '
        f"profiles are not shown; {_count(hidden.get('personas', 0))} hidden "
        f"({_count(hidden.get('profiles', 0))} profiles).</p>"
    )
    if not scores:
        return text
    return text + _details(
        f"Choice of k: {name} score per k",
        _bar_chart(
            f"{name} score per k (the chosen k in green)",
            scores,
            fmt=_fixed(3),
            note="Qualified: the smallest persona has at least the minimum group size.",
        ),
    )


def _movement_text(card: Mapping[str, Any]) -> str:
    previous, change = _number(card.get("previous_size")), _number(card.get("change"))
    if previous is None:
        return "new"
    if change is None:
        change = _n(card.get("size")) - previous
    if not change:
        return f"unchanged vs {previous:,.0f}"
    arrow = "▲" if change > 0 else "▼"
    relative = f" ({change / previous:+.1%})" if previous else ""
    return f"{arrow} {abs(change):,.0f}{relative} vs {previous:,.0f}"


def _card(card: Mapping[str, Any], *, new: set[str] | None, currency: object) -> str:
    """One persona's card; `new` None when there is no previous run to compare with."""
    name = _persona_name(card)
    is_new = new is not None and (name in new or card.get("previous_size") is None)
    change = _number(card.get("change"))
    trend = "up" if change and change > 0 else "down" if change and change < 0 else "flat"
    badge = '<span class="badge">new</span>' if is_new else ""
    movement = (
        f'<p class="move {trend}">{_e(_movement_text(card))}</p>'
        if new is not None and not is_new
        else ""
    )
    shares = [
        ("profiles", _number(card.get("share")), _pct(card.get("share"))),
        ("revenue", _number(card.get("revenue_share")), _pct(card.get("revenue_share"))),
    ]
    return (
        f'<article class="card"><header><h3>{_e(name)}</h3>{badge}'
        f'<span class="pid">{_e(card.get("persona", ""))}</span></header>'
        f'<p class="size"><strong>{_count(card.get("size"))}</strong> profiles</p>{movement}'
        + _meters(shares, caption="Share of all")
        + _card_facts(card, currency=currency)
        + '<p class="mini-title">RFM mix</p>'
        + _stacked_strip(f"RFM mix of {name}", _map(card.get("rfm_mix")))
        + _card_interests(card)
        + _share_meters(_map(card.get("channels")), caption="Channels (share present in)")
        + '<div class="duo">'
        + _share_meters(_map(card.get("countries")), caption="Countries")
        + _share_meters(_map(card.get("age_bands")), caption="Age bands")
        + "</div></article>"
    )


def _card_facts(card: Mapping[str, Any], *, currency: object) -> str:
    def money(value: object, digits: int) -> str:
        unit = f" {_e(currency)}" if currency and _number(value) is not None else ""
        return _dec(value, digits) + unit

    churn = _map(card.get("churn_risk"))
    facts = [
        ("revenue", money(card.get("revenue"), 0)),
        ("CLV mean", money(card.get("clv_mean"), 2)),
        (
            "churn risk",
            f"{_pct(churn.get('mean'))} <small>median {_pct(churn.get('median'))}</small>",
        ),
        ("expected purchases", _dec(card.get("expected_purchases_mean"))),
    ]
    items = "".join(f"<div><dt>{_e(k)}</dt><dd>{v}</dd></div>" for k, v in facts)
    return f'<dl class="facts">{items}</dl>'


def _card_interests(card: Mapping[str, Any]) -> str:
    rows = []
    for raw in _seq(card.get("top_interests")):
        interest = _map(raw)
        share = interest.get("share")
        rows.append(
            (
                str(interest.get("label") or interest.get("topic", "–")),
                _number(share),
                f"{_pct(share)} · {_dec(interest.get('confidence'))}",
            )
        )
    return _meters(rows, caption="Top interests (share holding it · mean confidence)")


_CSS: Final = """
:root{--fg:#1f2933;--muted-fg:#52606d;--bg:#fff;--panel:#f5f7fa;--line:#d9e2ec;
--ok:#2a9d8f;--bad:#d1495b;--warn:#e9a23b;--muted:#9aa5b1;--info:#3b6ea5;--prev:#bcccdc;
--c0:#3b6ea5;--c1:#e07b39;--c2:#2a9d8f;--c3:#c45b8c;--c4:#8c6bb1;--c5:#e9a23b;--c6:#6a994e;
--c7:#7b8794}
@media (prefers-color-scheme:dark){:root{--fg:#e4e7eb;--muted-fg:#9aa5b1;--bg:#12171d;
--panel:#1c242d;--line:#323f4b;--prev:#52606d}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
color:var(--fg);background:var(--bg)}
header,nav,main,footer{max-width:1200px;margin:0 auto;padding:0 20px}
h1{font-size:1.6em;margin:.8em 0 .2em}h1 .run{font-weight:400;color:var(--muted-fg)}
h2{font-size:1.3em;margin:1.6em 0 .5em;padding-bottom:.2em;border-bottom:2px solid var(--line)}
h3{font-size:1.05em;margin:0}h4{font-size:.9em;margin:.8em 0 .2em;color:var(--muted-fg)}
.meta,.lede,.rule{color:var(--muted-fg)}
.rule{font-weight:600}
code{font-size:.92em}
nav ul{list-style:none;display:flex;flex-wrap:wrap;gap:.4em 1.2em;padding:0;margin:.6em 0}
nav a{color:var(--info)}
.tiles{display:flex;flex-wrap:wrap;gap:10px;margin:.8em 0}
.tiles div{background:var(--panel);border-radius:6px;padding:8px 14px;min-width:120px}
.tiles dt{font-size:.8em;color:var(--muted-fg)}.tiles dd{margin:0;font-size:1.3em;font-weight:600}
figure{margin:1em 0 1.2em}
figcaption{font-weight:600;margin-bottom:.3em;color:var(--fg)}
.fnote{margin:.2em 0;font-size:.85em;color:var(--muted-fg)}
svg.chart{max-width:100%;height:auto;display:block}
svg.chart text{font-size:12px;fill:var(--fg)}svg.chart text.val{fill:var(--muted-fg)}
svg.chart .frame{fill:none;stroke:var(--line)}
svg.chart .diag{stroke:var(--muted);stroke-dasharray:4 3}
svg.chart .curve{fill:none;stroke:var(--c0);stroke-width:2.5}
svg.chart .mark{stroke:var(--c1);stroke-dasharray:3 3}svg.chart .dot{fill:var(--c1)}
svg.chart .brace{fill:none;stroke:var(--c1);stroke-width:1.5}
.k-ok{fill:var(--ok);background:var(--ok)}.k-bad{fill:var(--bad);background:var(--bad)}
.k-warn{fill:var(--warn);background:var(--warn)}.k-muted{fill:var(--muted);background:var(--muted)}
.k-info{fill:var(--info);background:var(--info)}.k-prev{fill:var(--prev);background:var(--prev)}
.k-c0{fill:var(--c0);background:var(--c0)}.k-c1{fill:var(--c1);background:var(--c1)}
.k-c2{fill:var(--c2);background:var(--c2)}.k-c3{fill:var(--c3);background:var(--c3)}
.k-c4{fill:var(--c4);background:var(--c4)}.k-c5{fill:var(--c5);background:var(--c5)}
.k-c6{fill:var(--c6);background:var(--c6)}.k-c7{fill:var(--c7);background:var(--c7)}
.legend{list-style:none;display:flex;flex-wrap:wrap;gap:.2em 1em;padding:0;margin:.3em 0;
font-size:.85em;color:var(--muted-fg)}
.legend.small{font-size:.78em;gap:.1em .8em}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
.sw.ghost{height:4px;vertical-align:middle}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{padding:3px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
.num{text-align:right;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;color:var(--muted-fg);padding:2px 0}
details{margin:.6em 0}summary{cursor:pointer;color:var(--info)}
.empty{color:var(--muted-fg);font-style:italic}
.pair{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:0 24px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:16px;margin:1em 0}
.card{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:12px 14px;
break-inside:avoid}
.card header{display:flex;align-items:baseline;gap:8px;padding:0;flex-wrap:wrap}
.card .pid{margin-left:auto;font-size:.8em;color:var(--muted-fg)}
.badge{background:var(--c1);color:#fff;border-radius:10px;padding:0 8px;font-size:.75em;
font-weight:700;text-transform:uppercase}
.card .size{margin:.4em 0 .1em}.card .size strong{font-size:1.3em}
.move{margin:0;font-size:.9em}.move.up{color:var(--ok)}.move.down{color:var(--bad)}
.meters{width:100%;margin:.3em 0;font-size:.85em}
.meters th,.meters td{border:0;padding:1px 4px}.meters th{font-weight:400;width:38%}
.meters td.meter{width:40%}
.track{display:block;height:8px;background:var(--line);border-radius:4px;overflow:hidden}
.track.inline{display:inline-block;width:60px;vertical-align:middle}
.fill{display:block;height:100%;background:var(--c0)}
.facts{display:grid;grid-template-columns:1fr 1fr;gap:6px;margin:.5em 0}
.facts dt{font-size:.75em;color:var(--muted-fg)}.facts dd{margin:0;font-weight:600}
.facts small{display:block;font-weight:400;color:var(--muted-fg)}
.meters td.num{white-space:nowrap;width:1%}
.mini-title,.meters caption{font-size:.85em;font-weight:600;color:var(--muted-fg);
margin:.6em 0 .1em}
.duo{display:grid;grid-template-columns:1fr 1fr;gap:0 12px}
.duo .meters th{width:auto}.duo .meters td.meter{width:35%}
footer{color:var(--muted-fg);font-size:.85em;margin-top:2em;padding-bottom:2em}
@media print{nav{display:none}details{display:block}.card{page-break-inside:avoid}}
"""
