"""Policy diff: what a new bundle would change, counted over the current subjects.

Both bundles are evaluated on the same facts for each (gate, purpose), and the subjects are
counted per purpose, gate and the rule that decides under the new bundle: how many there are,
how many change (decision or deciding rule), how many go from allowed (allow or redact) to
deny, from deny to allowed, and from deny to deny under a different rule.

Rules are compared as `id@version`, except the engine's own decisions (`consent@…`,
`default-deny@…`), which are compared without the bundle version so that a version bump alone
changes nothing. The result holds counts only, never a subject, so it can be printed, logged or
attached to a change request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from policy.bundle import PolicyBundle
from policy.engine import GATE_PURPOSES, evaluate
from policy.types import Gate, Outcome, Purpose

DEFAULT_GATE_PURPOSES: tuple[tuple[Gate, Purpose], ...] = tuple(
    (gate, purpose) for gate, purposes in GATE_PURPOSES.items() for purpose in purposes
)
"""Every (gate, purpose) a nightly run decides."""

COUNT_COLUMNS: tuple[str, ...] = (
    "subjects",
    "changed",
    "allow_to_deny",
    "deny_to_allow",
    "deny_to_deny_other_rule",
)
"""Count columns of `diff`'s result (after `purpose`, `gate`, `rule`)."""

_ENGINE_RULES = r"^(consent|default-deny)@.*$"


def _rule_identity(rules: pd.Series[Any]) -> pd.Series[Any]:
    """Deciding rules comparable across bundle versions (see the module docstring)."""
    return rules.astype("string").str.replace(_ENGINE_RULES, r"\1", regex=True)


def diff(
    old: PolicyBundle,
    new: PolicyBundle,
    facts: pd.DataFrame,
    *,
    gates_purposes: Sequence[tuple[Gate, Purpose]] = DEFAULT_GATE_PURPOSES,
    context: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Count, per (purpose, gate, new deciding rule), the subjects whose decision changes.

    `context` is passed to every evaluation (e.g. a provider, to see gate A per provider).
    Columns: `purpose`, `gate`, `rule` and `COUNT_COLUMNS`, sorted by purpose, gate, rule.
    """
    parts: list[pd.DataFrame] = []
    for gate, purpose in gates_purposes:
        before = evaluate(old, facts, gate=gate, purpose=purpose, context=context)
        after = evaluate(new, facts, gate=gate, purpose=purpose, context=context)
        was_allowed = (before["decision"] != Outcome.DENY.value).to_numpy(dtype=bool)
        is_allowed = (after["decision"] != Outcome.DENY.value).to_numpy(dtype=bool)
        other_rule = (
            _rule_identity(before["rule"]).to_numpy() != _rule_identity(after["rule"]).to_numpy()
        )
        other_decision = before["decision"].to_numpy() != after["decision"].to_numpy()
        parts.append(
            pd.DataFrame(
                {
                    "purpose": purpose.value,
                    "gate": gate.value,
                    "rule": after["rule"].to_numpy(dtype=object),
                    "subjects": 1,
                    "changed": other_decision | other_rule,
                    "allow_to_deny": was_allowed & ~is_allowed,
                    "deny_to_allow": ~was_allowed & is_allowed,
                    "deny_to_deny_other_rule": ~was_allowed & ~is_allowed & other_rule,
                }
            )
        )
    columns = ["purpose", "gate", "rule", *COUNT_COLUMNS]
    if not parts:
        return pd.DataFrame(columns=columns)
    counted = (
        pd.concat(parts, ignore_index=True)
        .groupby(["purpose", "gate", "rule"], sort=True)[list(COUNT_COLUMNS)]
        .sum()
        .astype("int64")
        .reset_index()
    )
    order = {p.value: i for i, p in enumerate(Purpose)}
    counted = counted.sort_values(
        ["purpose", "gate", "rule"], key=lambda s: s.map(order) if s.name == "purpose" else s
    )
    return counted.reset_index(drop=True)[columns]


def render_diff(table: pd.DataFrame) -> str:
    """`diff`'s result as a plain-text table with a total line; counts only, no subject."""
    headers: tuple[str, ...] = ("purpose", "gate", "rule (new)", "subjects", "changed")
    headers += ("allow→deny", "deny→allow", "deny→deny other rule")
    rows = [
        (
            str(r.purpose),
            str(r.gate),
            str(r.rule),
            *(f"{int(getattr(r, c)):,}" for c in COUNT_COLUMNS),
        )
        for r in table.itertuples(index=False)
    ]
    totals = ("total", "", "", *(f"{int(table[c].sum()):,}" for c in COUNT_COLUMNS))
    widths = [max(len(h), *(len(row[i]) for row in [*rows, totals])) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        text = [
            cell.ljust(width) if i < 3 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(text).rstrip()

    rule = "  ".join("-" * w for w in widths)
    body = [line(row) for row in rows] if rows else ["(no decisions)"]
    return "\n".join([line(headers), rule, *body, rule, line(totals)]) + "\n"
