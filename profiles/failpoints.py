"""Named places where a crash test can kill the running process, as a power cut would.

The nightly flow passes named points (`failpoint("after:identify")`, `failpoint("log:batch")`,
...). Normally a point costs one environment lookup. With `ENRICH_FAILPOINT=<name>` the
process sends itself SIGKILL the first time it reaches that point, with `<name>#<n>` the n-th
time (so a test can stop a run in the middle of a stage): no `finally`, no flush, no lock
release but the operating system's — what a crash leaves is exactly what a rerun must cope with.
The points a run passes are listed in `POINTS` for the tests that walk through all of them.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from typing import Final

ENV: Final = "ENRICH_FAILPOINT"

POINTS: Final[tuple[str, ...]] = (
    "after:start",
    "identify:chunk",
    "after:identify",
    "consents:saved",
    "after:link profiles",
    "log:batch",
    "after:policy",
    "after:behaviour",
    "providers:lookups",
    "providers:cached",
    "after:providers",
    "after:fusion",
    "after:personas",
    "after:exports",
    "outputs:staged",
    "outputs:checkpoint",
    "identity:saved",
    "after:publish",
)
"""Every point a nightly run passes, in order (several are passed more than once)."""

_hits: Counter[str] = Counter()
_lock = threading.Lock()


def failpoint(name: str) -> None:
    """Kill this process here if ENRICH_FAILPOINT names this point (and this passage)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition("#")
    if point != name:
        return
    with _lock:
        _hits[name] += 1
        passage = _hits[name]
    if passage == (int(nth) if nth else 1):
        os.kill(os.getpid(), signal.SIGKILL)
