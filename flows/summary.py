"""The run summary: counts per source as JSON for machines and Markdown for the Prefect UI."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from profiles.accounting import SourceCounts


def build_summary(
    run_id: str,
    *,
    started_at: datetime,
    finished_at: datetime,
    key_id: str,
    counts: list[SourceCounts],
    identity: Mapping[str, Any],
    policy: Mapping[str, Any],
    enrichment: Mapping[str, Any],
    behaviour: Mapping[str, Any],
    fusion: Mapping[str, Any],
    personas: Mapping[str, Any],
    exports: Mapping[str, Any],
    timings: Mapping[str, float],
) -> dict[str, Any]:
    """The JSON-ready summary of a run. Counts and codes only: no personal data.

    `timings`: wall seconds per stage, in the order the stages ran."""
    totals = {
        "rows_in": sum(c.rows_in for c in counts),
        "rows_accepted": sum(c.rows_accepted for c in counts),
        "rows_quarantined": sum(c.rows_quarantined for c in counts),
        "rows_erased": sum(c.rows_erased for c in counts),
    }
    return {
        "run_id": run_id,
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": finished_at.isoformat(timespec="seconds"),
        "duration_seconds": round((finished_at - started_at).total_seconds(), 3),
        "pseudonym_key_id": key_id,
        "totals": totals,
        "sources": {c.source: c.to_dict() for c in counts},
        "identity": dict(identity),
        "policy": dict(policy),
        "enrichment": dict(enrichment),
        "behaviour": dict(behaviour),
        "fusion": dict(fusion),
        "personas": dict(personas),
        "exports": dict(exports),
        "timings": {stage: round(seconds, 3) for stage, seconds in timings.items()},
    }


class Laps:
    """Wall seconds per stage of a run: `lap(name)` ends the stage that began at the
    previous lap (or at creation)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        """The stage `stage` ends now."""
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now


def summary_counts(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers of a summary worth keeping in the run ledger."""
    identity = summary["identity"]
    return {
        **summary["totals"],
        **{k: identity[k] for k in ("profiles", "profiles_new", "merges", "splits")},
    }


def _reasons(codes: dict[str, int]) -> str:
    return ", ".join(f"{code} {n:,}" for code, n in codes.items()) or "–"


def summary_markdown(summary: dict[str, Any]) -> str:
    """Markdown tables of the summary, for the Prefect artifact and the console."""
    lines = [
        f"# Nightly enrichment {summary['run_id']}",
        "",
        "| source | rows in | accepted | quarantined | quarantined by reason |",
        "|---|---:|---:|---:|---|",
    ]
    for name, src in summary["sources"].items():
        lines.append(
            f"| {name} | {src['rows_in']:,} | {src['rows_accepted']:,} | "
            f"{src['rows_quarantined']:,} | {_reasons(src['quarantined_by_reason'])} |"
        )
    t = summary["totals"]
    lines.append(
        f"| **total** | **{t['rows_in']:,}** | **{t['rows_accepted']:,}** | "
        f"**{t['rows_quarantined']:,}** | |"
    )
    lines += ["", "## Field rejections", "", "| source | field | reasons |", "|---|---|---|"]
    for name, src in summary["sources"].items():
        for field, codes in src["field_rejections"].items():
            lines.append(f"| {name} | {field} | {_reasons(codes)} |")
    lines += _identity_markdown(summary["identity"])
    lines += _policy_markdown(summary["policy"])
    lines += _enrichment_markdown(summary["enrichment"])
    lines += _behaviour_markdown(summary["behaviour"])
    lines += _fusion_markdown(summary.get("fusion", {}))
    lines += _personas_markdown(summary.get("personas", {}))
    lines += _exports_markdown(summary.get("exports", {}))
    lines += ["", f"Pseudonym key id: `{summary['pseudonym_key_id']}`"]
    return "\n".join(lines) + "\n"


def _policy_markdown(policy: Mapping[str, Any]) -> list[str]:
    bundle = policy["bundle"]
    lines = [
        "",
        "## Policy decisions",
        "",
        f"Bundle `{bundle['name']}` {bundle['version']} (hash `{bundle['hash'][:16]}…`)",
        "",
        "| gate | purpose | decision | rule | reason | profiles |",
        "|---|---|---|---|---|---:|",
    ]
    lines += [
        f"| {d['gate']} | {d['purpose']} | {d['decision']} | `{d['rule']}` | {d['reason']} "
        f"| {d['subjects']:,} |"
        for d in policy["decisions"]
    ]
    return lines


def _enrichment_markdown(enrichment: Mapping[str, Any]) -> list[str]:
    if not enrichment:
        return ["", "## Enrichment", "", "No providers configured."]
    lines = [
        "",
        "## Enrichment",
        "",
        "| provider | subjects | matched | no match | cached | skipped by policy | failed "
        "| calls | retries | 429s | breaker trips | budget used |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, p in enrichment.items():
        client = p.get("client", {})
        failed = ", ".join(f"{k} {v:,}" for k, v in p["failed"].items()) or "0"
        lines.append(
            f"| {name} | {p['subjects']:,} | {p['matched']:,} | {p['no_match']:,} "
            f"| {p['skipped_cached']:,} | {sum(p['skipped_policy'].values()):,} | {failed} "
            f"| {client.get('calls', 0):,} | {client.get('retries', 0):,} "
            f"| {client.get('throttled', 0):,} | {client.get('breaker_trips', 0):,} "
            f"| {client.get('budget_used', 0):,} |"
        )
    return lines


def _behaviour_markdown(behaviour: Mapping[str, Any]) -> list[str]:
    if not behaviour:
        return ["", "## Behaviour", "", "Behaviour scoring is off."]
    lines = [
        "",
        "## Behaviour",
        "",
        f"{behaviour['customers']:,} customers scored as of {behaviour['as_of']} "
        f"({behaviour['purchases']:,} purchases, amounts in {behaviour['currency']}); "
        f"model `{behaviour['model']}`.",
        "",
        "| RFM segment | customers | |",
        "|---|---:|---|",
    ]
    segments = behaviour["segments"]
    largest = max(segments.values(), default=0)
    lines += [
        f"| {name} | {n:,} | {_bar(n, largest)} |"
        for name, n in sorted(segments.items(), key=lambda item: -item[1])
    ]
    pareto = behaviour["pareto"]
    if pareto["top_20_share"] is not None:
        lines += [
            "",
            f"Pareto: the top 20 % of customers bring {pareto['top_20_share']:.1%} of revenue, "
            f"the top 4 % bring {pareto['top_4_share']:.1%}.",
        ]
    abc = ", ".join(f"{k} {v:,}" for k, v in behaviour["abc"].items())
    xyz = ", ".join(f"{k} {v:,}" for k, v in behaviour["xyz"].items())
    lines += [
        "",
        f"ABC: {abc}. XYZ: {xyz} ({behaviour['one_time_buyers']:,} one-time buyers).",
    ]
    lines += _models_markdown(behaviour["models"])
    return lines


def _fusion_markdown(fusion: Mapping[str, Any]) -> list[str]:
    if "merged" not in fusion:
        return ["", "## Interests", "", "Fusion is off."]
    gate_b = fusion["gate_b"]
    lines = [
        "",
        "## Interests",
        "",
        f"{fusion['signals_in']:,} signals; unknown topics dropped: "
        f"{_reasons(fusion['unknown_topics'])}; dropped at gate B: {_reasons(gate_b['dropped'])} "
        f"(profiling floor {gate_b['floor']:.2f}); sensitive topics blocked: "
        f"{_reasons(gate_b['sensitive_topics'])}.",
        "",
        "| topic | profiles | mean confidence | declared |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {t['label']} (`{topic}`) | {t['profiles']:,} | {t['mean_confidence']:.2f} | "
        f"{t['declared']:,} |"
        for topic, t in sorted(fusion["topics"].items(), key=lambda item: -item[1]["profiles"])
    ]
    return lines


def _personas_markdown(personas: Mapping[str, Any]) -> list[str]:
    if not personas:
        return ["", "## Personas", "", "Personas are off."]
    hidden = personas["hidden"]
    lines = [
        "",
        "## Personas",
        "",
        f"{personas['method']}, k = {personas['k']} ({personas['criterion']}); personas "
        f"smaller than {personas['min_group_size']} are not shown: {hidden['personas']} "
        f"hidden ({hidden['profiles']:,} profiles).",
        "",
        "| persona | profiles | change | |",
        "|---|---:|---:|---|",
    ]
    largest = max((c["size"] for c in personas["cards"]), default=0)
    for c in personas["cards"]:
        change = "–" if not personas["compared_with_previous"] else "new"
        if c["change"] is not None:
            change = f"{c['change']:+,}"
        lines.append(f"| {c['name']} | {c['size']:,} | {change} | {_bar(c['size'], largest)} |")
    return lines


def _exports_markdown(exports: Mapping[str, Any]) -> list[str]:
    if not exports:
        return ["", "## Exports", "", "Exports are off."]
    crm, ads = exports["crm_export"], exports["ads_export"]
    lines = [
        "",
        "## Exports",
        "",
        "| destination | profiles | written |",
        "|---|---:|---|",
        f"| crm_export | {crm['profiles']:,} | "
        + ", ".join(f"{p}: {crm['rows'][p]:,} rows in {n} file(s)" for p, n in crm["files"].items())
        + (" (delta)" if crm.get("delta") else "")
        + " |",
        f"| ads_export | {ads['profiles']:,} | "
        + ", ".join(f"{k} {v:,}" for k, v in ads["rows"].items())
        + " |",
    ]
    if "analytics" in exports:
        lines.append(f"| analytics | {exports['analytics']['profiles']:,} | analytics.parquet |")
    return lines


def _models_markdown(models: Mapping[str, Any]) -> list[str]:
    if "skipped" in models:
        return ["", f"BG/NBD and Gamma-Gamma not fitted: {models['skipped']}."]
    lines = ["", "| model | parameters | log-likelihood | converged |", "|---|---|---:|---|"]
    for name in ("bgnbd", "gamma_gamma"):
        fit = models.get(name)
        if fit:
            params = ", ".join(f"{k} {v:.4g}" for k, v in fit["params"].items())
            lines.append(
                f"| {name} | {params} | {fit['log_likelihood']:,.1f} | "
                f"{'yes' if fit['converged'] else 'NO: ' + str(fit['message'])} |"
            )
    holdout = models.get("holdout")
    if holdout:
        lines += [
            "",
            f"Hold-out check: predicted {holdout['predicted_total']:,.0f} repeat purchases, "
            f"actual {holdout['actual_total']:,.0f} (mean absolute error per customer "
            f"{holdout['mean_absolute_error']:.3f}).",
        ]
    return lines


def _bar(n: int, largest: int, width: int = 30) -> str:
    return "█" * max(1 if n else 0, round(width * n / largest)) if largest else ""


def _identity_markdown(identity: Mapping[str, Any]) -> list[str]:
    lines = [
        "",
        "## Identity",
        "",
        "| profiles | new | kept | merges | splits |",
        "|---:|---:|---:|---:|---:|",
        f"| {identity['profiles']:,} | {identity['profiles_new']:,} | "
        f"{identity['profiles_kept']:,} | {identity['merges']:,} | {identity['splits']:,} |",
        "",
        "Links blocked by guardrails:",
        "",
        "| guardrail | links blocked |",
        "|---|---:|",
    ]
    for name, value in identity["blocked"].items():
        if isinstance(value, Mapping):
            lines += [f"| {name} {detail} | {n:,} |" for detail, n in value.items()]
        else:
            lines.append(f"| {name} | {value:,} |")
    sizes: Mapping[str, int] = identity["cluster_sizes"]
    largest = max(sizes.values(), default=0)
    lines += ["", "Rows per profile:", "", "| rows | profiles | |", "|---:|---:|---|"]
    lines += [f"| {b} | {n:,} | {_bar(n, largest)} |" for b, n in sizes.items()]
    lines += ["", f"Largest profiles (rows): {', '.join(str(n) for n in identity['largest'])}"]
    return lines


def checkpoint_markdown(checkpoint: Mapping[str, Any], policy: Mapping[str, Any]) -> str:
    """The run's decision-log checkpoint and its decisions per purpose, for the Prefect UI."""
    lines = [
        f"# Decision log checkpoint of run {checkpoint['run_id']}",
        "",
        "| field | value |",
        "|---|---|",
        *(
            f"| {name} | `{checkpoint[name]}` |"
            for name in (
                "log_id",
                "first_seq",
                "last_seq",
                "entries",
                "head_hash",
                "key_id",
                "time",
            )
        ),
        "",
        "Verify with `enrich audit verify <decision log folder> --config enrich.yaml`.",
    ]
    return "\n".join(lines + _policy_markdown(policy)) + "\n"
