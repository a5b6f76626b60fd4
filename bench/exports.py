"""Cost of the exports at 1M profiles: CRM CSV presets, the five audiences, analytics Parquet.

Synthetic profiles (seeded) shaped like the export stage's input after gate C: contact details
(normalised email, E.164 phone), country, basis and evidence, persona, segments, top
interests, RFM segment, CLV band, churn risk. Timed, each once, with the process's peak RSS
after each step: `write_crm_csv` per preset, `audience_frame` + CSV per platform, Parquet.
Wall-clock seconds and the process's CPU seconds: on a shared machine the CPU time is the
number to compare.

Run: `.venv/bin/python bench/exports.py [--profiles 1000000]`.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from profiles.exports.audiences import Platform, audience_frame
from profiles.exports.crm import PRESETS, write_crm_csv


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def profiles(n: int, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    return pd.DataFrame(
        {
            "profile_id": [f"P{x:016X}" for x in rng.integers(0, 2**63, n)],
            "email": [f"person.{i}+news@example.{('com', 'net', 'org')[i % 3]}" for i in idx],
            "phone": [f"+4520{i % 1_000_000:06d}" if i % 4 else None for i in idx],
            "country": rng.choice(["DK", "DE", "SE", "GB", "GR", "GE"], n),
            "lawful_basis": rng.choice(["consent", "legitimate_interests"], n),
            "consent_ref": [f"{x:032x}" for x in rng.integers(0, 2**63, n)],
            "persona": rng.choice(["Loyal high spenders · Outdoor", "Prospects", "=cmd"], n),
            "segments": [["At risk", "abc_B"] if i % 2 else ["Champions"] for i in idx],
            "top_interests": [["Hiking", "Kitchen"] if i % 3 else [] for i in idx],
            "rfm_segment": rng.choice(["Champions", "At risk", "Lost"], n),
            "clv_band": rng.choice(["low", "medium", "high"], n),
            "churn_risk": rng.random(n),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", type=int, default=1_000_000)
    args = parser.parse_args()
    frame = profiles(args.profiles)
    table = Table(title=f"Exports: {args.profiles:,} profiles", show_edge=False)
    for column in ("output", "seconds", "CPU s", "profiles/s", "files", "MB", "peak RSS MB"):
        table.add_column(column, justify="left" if column == "output" else "right")
    with tempfile.TemporaryDirectory(prefix="exports-bench-") as tmp:
        out = Path(tmp)
        for name in ("hubspot", "salesforce"):
            started, cpu = time.perf_counter(), time.process_time()
            files = write_crm_csv(frame, PRESETS[name], out / "crm" / name)
            took, cpu = time.perf_counter() - started, time.process_time() - cpu
            size = sum(f.stat().st_size for f in files) / 1e6
            table.add_row(f"crm {name}", f"{took:.1f}", f"{cpu:.1f}", f"{len(frame) / took:,.0f}",
                          str(len(files)), f"{size:,.0f}", f"{_peak_mb():,.0f}")  # fmt: skip
        for platform in Platform:
            started, cpu = time.perf_counter(), time.process_time()
            audience = audience_frame(frame["email"], frame["phone"], platform,
                                      country=frame["country"])  # fmt: skip
            path = out / f"{platform}.csv"
            pa_csv.write_csv(pa.Table.from_pandas(audience, preserve_index=False), path)
            took, cpu = time.perf_counter() - started, time.process_time() - cpu
            mb = path.stat().st_size / 1e6
            table.add_row(f"audience {platform}", f"{took:.1f}", f"{cpu:.1f}",
                          f"{len(frame) / took:,.0f}", "1", f"{mb:,.0f}",
                          f"{_peak_mb():,.0f}")  # fmt: skip
        started, cpu = time.perf_counter(), time.process_time()
        analytics = frame.drop(columns=["email", "phone", "lawful_basis", "consent_ref"])
        pq.write_table(pa.Table.from_pandas(analytics, preserve_index=False), out / "a.parquet")
        took, cpu = time.perf_counter() - started, time.process_time() - cpu
        mb = (out / "a.parquet").stat().st_size / 1e6
        table.add_row("analytics parquet", f"{took:.1f}", f"{cpu:.1f}",
                      f"{len(frame) / took:,.0f}", "1", f"{mb:,.0f}",
                      f"{_peak_mb():,.0f}")  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
