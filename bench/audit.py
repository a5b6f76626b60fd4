"""Cost of the hash-chained decision log at nightly scale.

Writes N decisions (default 2M: a 1M-row night decides about ~250k profiles x 5 purposes plus
gate A per provider) in batches shaped like the gates' (one purpose for every profile at a
time), with a checkpoint at the end (segment compressed and signed), then verifies the whole
log. Reported: entries/s and bytes per entry (plain and compressed) for writing, the
checkpoint's time, and verify's entries/s. Targets: verify > 200k entries/s; the nightly
benchmark (bench/nightly.py, scale issue) puts writing against the run's wall time (< 15 %).

Run: `.venv/bin/python bench/audit.py [--entries 2000000]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from policy.audit import ChainedDecisionLog, Signer, pinned_keys, segments_of, verify

PURPOSES = ("enrichment", "profiling", "crm_export", "ads_export", "analytics")


def batch(subjects: np.ndarray, purpose: str, rng: np.random.Generator) -> pd.DataFrame:
    n = len(subjects)
    allow = rng.random(n) < 0.6
    return pd.DataFrame(
        {
            "subject": subjects,
            "gate": "B" if purpose == "profiling" else "C",
            "purpose": purpose,
            "decision": np.where(allow, "allow", "deny"),
            "basis": np.where(allow, "consent", ""),
            "rule": np.where(allow, "consent@2026.11.1", "default-deny@2026.11.1"),
            "reason": np.where(allow, "BASIS_RECORDED", "NO_LAWFUL_BASIS"),
            "evidence": np.where(allow, "638e6eca00e82e093ad104b0ec9484c8", ""),
            "policy_hash": "31d74f85f8cd6234b7af0dde1102f3cbaf24984301412afc63d55e3399c5e2ff",
            "context": rng.choice(["regime=eu", "regime=uk", "regime=other"], n),
        }
    )


class _Clock:
    """Wall and CPU seconds since it was started (CPU time is what a shared machine keeps)."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        """(wall, CPU) seconds so far."""
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=2_000_000)
    args = parser.parse_args()
    rng = np.random.default_rng(3)
    profiles = args.entries // len(PURPOSES)
    subjects = np.array([f"P{x:016X}" for x in rng.integers(0, 2**63, profiles)], dtype=object)
    frames = [batch(subjects, p, rng) for p in PURPOSES]
    signer = Signer.from_seed(bytes(32))
    table = Table(title=f"Decision log: {profiles * len(PURPOSES):,} entries", show_edge=False)
    for column in ("step", "seconds", "CPU seconds", "entries/s", "bytes/entry"):
        table.add_column(column, justify="left" if column == "step" else "right")
    n = profiles * len(PURPOSES)
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        directory = Path(tmp) / "log"
        log = ChainedDecisionLog(directory, signer=signer, segment_entries=10_000_000)
        clock = _Clock()
        for frame in frames:
            log.append("run-1", frame, actor="nightly")
        appended, cpu = clock.read()
        plain = sum(p.stat().st_size for p in segments_of(directory))
        table.add_row("append (hash, write, fsync)", f"{appended:.2f}", f"{cpu:.2f}",
                      f"{n / appended:,.0f}", f"{plain / n:.0f}")  # fmt: skip
        clock = _Clock()
        log.checkpoint("run-1")
        closed, cpu = clock.read()
        packed = sum(p.stat().st_size for p in segments_of(directory))
        table.add_row("checkpoint (gzip, sign)", f"{closed:.2f}", f"{cpu:.2f}",
                      f"{n / closed:,.0f}", f"{packed / n:.0f}")  # fmt: skip
        clock = _Clock()
        result = verify(directory, pinned_keys([signer.public_key]))
        took, cpu = clock.read()
        assert result.ok, result.problems
        table.add_row("verify", f"{took:.2f}", f"{cpu:.2f}", f"{n / took:,.0f}", "")
    Console().print(table)
    verdict = "met" if n / took > 200_000 else "NOT met"
    Console().print(f"verify target (> 200,000 entries/s): {n / took:,.0f} -> {verdict}")


if __name__ == "__main__":
    main()
