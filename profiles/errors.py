"""Exception tree of the domain core.

    EnrichError                  base of everything raised on purpose
    ├── ConfigError              a config or policy file is invalid; lists every problem
    ├── SourceError              a source file cannot be read at all (missing, wrong format)
    ├── KeyMaterialError         a secret key is missing or malformed
    └── AccountingError          rows_in != rows_accepted + rows_quarantined: a run must fail

Per-record problems are never exceptions: they are reason codes on rows
(`profiles.types.ReasonCode`). Messages never contain raw identifiers.
"""

from __future__ import annotations


class EnrichError(Exception):
    """Base class for errors raised by this project."""

    retryable: bool = False
    """Whether retrying the same call may succeed."""


class ConfigError(EnrichError):
    """A configuration file is invalid; `problems` lists every error with file and location."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} problem(s)\n{lines}")


class SourceError(EnrichError):
    """A source file cannot be read (missing, unreadable, no header, unknown format)."""


class KeyMaterialError(EnrichError):
    """A secret key is missing or malformed."""


class AccountingError(EnrichError):
    """Row accounting does not balance: some input row is neither accepted nor quarantined."""
