"""Files and folders that hold personal data: readable by their owner only."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def private_folder(path: Path) -> Path:
    """Create `path` and any missing parent with mode 0700 (an existing folder keeps its
    mode: `mkdir(parents=True, mode=...)` would give the mode to the last level only). Run
    outputs hold personal data: only their owner may list or read them."""
    missing = []
    for folder in (path, *path.parents):
        if folder.is_dir():
            break
        missing.append(folder)
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    return path


def private_file(path: Path) -> Path:
    """Make a written file readable by its owner only (0600): copies made with `cp -p`, rsync
    or tar keep that mode outside the private folder."""
    path.chmod(0o600)
    return path


def write_private_text(path: Path, text: str) -> Path:
    """Write `text` (UTF-8) to a file created readable by its owner only (0600 from the
    start, no window in which others could open it); its folder is created if missing."""
    private_folder(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return private_file(path)  # an existing file keeps its old mode through O_TRUNC


def write_private_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Have `write` write a temporary file beside `path`, make it private (0600) and move it
    into place in one rename: a reader sees the whole file or none; its folder is created
    private if missing."""
    private_folder(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    private_file(tmp)
    os.replace(tmp, path)
    return path
