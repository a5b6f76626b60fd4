"""Test-wide settings: Prefect stays offline and quiet."""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Flow tests run their partition tasks on threads: a process pool per flow run would spend
# seconds starting workers for a few hundred rows. tests/flows/test_runners.py runs the
# process pool and a Dask cluster and checks they give the same outputs.
os.environ.setdefault("ENRICH_RUNNER", "threads")
