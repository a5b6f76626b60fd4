"""The night lock: one run per state folder; a dead holder never blocks the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from profiles.rundir import NightLock, NightLockedError


def test_a_second_run_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    with (
        NightLock(tmp_path / "state"),
        pytest.raises(NightLockedError, match=f"process {os.getpid()}"),
        NightLock(tmp_path / "state"),
    ):
        pass  # pragma: no cover - never entered
    with NightLock(tmp_path / "state") as again:
        assert again.path.stat().st_mode & 0o077 == 0


def test_a_killed_holder_does_not_block_the_next_run(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from profiles.rundir import NightLock\n"
            "with NightLock(Path(sys.argv[1])):\n"
            "    print('held', flush=True); time.sleep(60)",
            str(tmp_path / "state"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(NightLockedError, match=f"process {holder.pid}"),
            NightLock(tmp_path / "state"),
        ):
            pass  # pragma: no cover
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        if holder.poll() is None:  # pragma: no cover - only if an assertion failed early
            holder.kill()
        if holder.stdout is not None:
            holder.stdout.close()
    deadline = time.monotonic() + 5
    while True:
        try:
            with NightLock(tmp_path / "state"):
                break
        except NightLockedError:  # pragma: no cover - the kernel drops the lock at exit
            assert time.monotonic() < deadline
            time.sleep(0.05)
