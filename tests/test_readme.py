"""The README's quickstart works as written (the test runs `make demo` from it)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- quickstart -->\s*```sh\n(.*?)```\s*<!-- /quickstart -->", text, re.S)
    assert block, "README has no quickstart block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_quickstart_lists_the_two_commands() -> None:
    assert _quickstart_commands() == ["make demo", "make test"]


def test_make_demo_runs_and_says_where_its_outputs_are(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    # as typed in a fresh shell: not inside `make test`'s own make (which adds "Leaving directory")
    # (and with the default runner, not the threads the flow tests run on)
    skip = {"MAKELEVEL", "MAKEFLAGS", "MFLAGS", "ENRICH_RUNNER"}
    env = {k: v for k, v in os.environ.items() if k not in skip}
    env["DEMO_DIR"] = str(demo)
    for command in _quickstart_commands():
        if command == "make test":
            continue  # this test is part of `make test`; running it here would recurse
        result = subprocess.run(
            shlex.split(command),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert folder.parent == demo / "out"
    summary = json.loads((folder / "run_summary.json").read_text(encoding="utf-8"))
    totals = summary["totals"]
    assert totals["rows_in"] == totals["rows_accepted"] + totals["rows_quarantined"]
    assert totals["rows_in"] > 50_000  # about 10,000 people across five sources
    truth_rows = len((demo / "data" / "truth.csv").read_text(encoding="utf-8").splitlines()) - 1
    assert totals["rows_in"] == truth_rows
    # the demo enriches through the local provider server, and accounts for every lookup
    enrichment = summary["enrichment"]
    assert sorted(enrichment) == ["sim_gravatar", "sim_person", "sim_segments"]
    for name, provider in enrichment.items():
        accounted = (
            provider["matched"]
            + provider["no_match"]
            + provider["skipped_cached"]
            + sum(provider["skipped_policy"].values())
            + sum(provider["failed"].values())
        )
        assert accounted == provider["subjects"], name
        assert provider["matched"] > 0, name
    received = (demo / "provider_received.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(received) >= sum(p["client"]["calls"] for p in enrichment.values())
