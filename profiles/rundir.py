"""One run's output folder: staged while the run works, published by an atomic rename at the end."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from profiles import vault
from profiles.errors import EnrichError
from profiles.files import private_file, private_folder, write_private_atomically
from profiles.identifiers import present_column
from profiles.ingest import LINE
from profiles.quarantine import COLUMNS as QUARANTINE_COLUMNS
from profiles.quarantine import REASON_FIELDS
from profiles.types import ATTRIBUTE_FIELDS, IDENTIFIER_FIELDS, NAME_FIELDS
from profiles.vault import VAULT_DIR

PROFILES_FILE = "profiles.parquet"
LINKS_FILE = "identity_links.parquet"
SIGNALS_FILE = "signals.parquet"
QUARANTINE_FILE = "quarantine.csv"
SUMMARY_FILE = "run_summary.json"

PROFILE_ID = "profile_id"

ROW_COLUMNS: tuple[str, ...] = (
    "source",
    LINE,
    "key_id",
    *(f"{kind}_pseudonym" for kind in IDENTIFIER_FIELDS),
    *(f"{name}_reason" for name in REASON_FIELDS),
    *(str(f) for f in ATTRIBUTE_FIELDS),
    *(present_column(str(f)) for f in NAME_FIELDS),
)
"""Columns of an accepted row: every source's rows share one schema."""

LINK_COLUMNS: tuple[str, ...] = (PROFILE_ID, *ROW_COLUMNS)
"""Columns of identity_links.parquet: each accepted row and the profile it belongs to."""


def _type(column: str) -> pa.DataType:
    if column == LINE:
        return pa.int64()
    if column.endswith("_present"):
        return pa.bool_()
    return pa.string()


ROW_SCHEMA = pa.schema([pa.field(c, _type(c)) for c in ROW_COLUMNS])
SIGNAL_SCHEMA = pa.schema(
    [
        pa.field(PROFILE_ID, pa.string()),
        pa.field("topic", pa.string()),
        pa.field("confidence", pa.float64()),
        pa.field("provider", pa.string()),
        pa.field("observed_at", pa.timestamp("us", tz="UTC")),
        pa.field("kind", pa.string()),
        pa.field("raw_score", pa.string()),
    ]
)
LINK_SCHEMA = pa.schema([pa.field(c, _type(c)) for c in LINK_COLUMNS])


PARTS_DIR = ".parts"
"""Per-chunk parts inside a staging folder: accepted/<part>.parquet, quarantine/<part>.csv."""


def chunk_part(source: str, index: int) -> str:
    """The part name of a source's `index`-th chunk (sorts in reading order)."""
    return f"{source}-{index:06d}"


def _accepted_part(staging: Path, part: str) -> Path:
    return staging / PARTS_DIR / "accepted" / f"{part}.parquet"


def _quarantine_part(staging: Path, part: str) -> Path:
    return staging / PARTS_DIR / "quarantine" / f"{part}.csv"


def write_chunk_parts(
    staging: Path, part: str, source: str, accepted: pd.DataFrame, quarantine: pd.DataFrame
) -> None:
    """Write one identified chunk: its accepted rows (identifier-stage output rows without a
    `row_reason`, every ROW_COLUMNS column) and its quarantine rows (profiles.quarantine
    COLUMNS), as parts a `RunOutput` adopts in order. Any process may call this."""
    frame = accepted.loc[accepted["row_reason"].isna().to_numpy()].reindex(
        columns=list(ROW_COLUMNS)
    )
    frame["source"] = source
    for name in NAME_FIELDS:
        column = present_column(str(name))
        frame[column] = frame[column].astype("boolean").fillna(False).astype(bool)
    table = pa.Table.from_pandas(frame, schema=ROW_SCHEMA, preserve_index=False)
    write_private_atomically(_accepted_part(staging, part), lambda tmp: pq.write_table(table, tmp))
    rows = quarantine.sort_values(["source", LINE], kind="stable")
    write_private_atomically(
        _quarantine_part(staging, part),
        lambda tmp: rows.to_csv(tmp, header=False, index=False, lineterminator="\n"),
    )


def write_part(path: Path, frame: pd.DataFrame) -> Path:
    """Write one Parquet part (a partition's input or output) atomically; `read_partition`
    reads it back with the same dtypes."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    write_private_atomically(path, lambda tmp: pq.write_table(table, tmp))
    return path


def write_partitions(folder: Path, frame: pd.DataFrame, rows: int) -> list[Path]:
    """Cut `frame` into contiguous partitions of at most `rows` rows (at least one, possibly
    empty), one part each in `folder`; returns their paths in order."""
    return [
        write_part(folder / f"{index:06d}.parquet", frame.iloc[start : start + rows])
        for index, start in enumerate(range(0, max(len(frame), 1), rows))
    ]


def read_partition(path: Path | str, columns: list[str] | None = None) -> pd.DataFrame:
    """One partition written by `write_partitions` (or a partition task's output part)."""
    frame: pd.DataFrame = pq.read_table(path, columns=columns).to_pandas()
    return frame


class RunOutput:
    """Writes one run's files: identity_links.parquet, profiles.parquet, quarantine.csv and
    run_summary.json.

    Everything is written under `<output_dir>/.<run_id>.partial/`; `publish()` renames it to
    `<output_dir>/<run_id>/` only once the run has succeeded, so a reader never sees half a run.
    Source chunks are identified as parts (`write_chunk_parts`, by whichever process ran the
    chunk); `adopt` takes them in reading order: the quarantine parts become quarantine.csv and
    the accepted parts are the accepted rows until identities are resolved, when they are
    rewritten with their profile id (identity_links.parquet) batch by batch.
    """

    def __init__(self, output_dir: Path, run_id: str, *, fresh: bool = True) -> None:
        """A new staging folder for `run_id` (one an earlier attempt left is emptied first);
        with `fresh=False`, the staged folder an earlier attempt left complete (`reopen`)."""
        self.run_id = run_id
        self.final = output_dir / run_id
        self.staging = output_dir / f".{run_id}.partial"
        self._quarantine_path = self.staging / QUARANTINE_FILE
        self._parts: list[str] = []
        self.accepted_rows = 0
        self.quarantine_rows = 0
        self._sealed = not fresh
        if not fresh:
            return
        if self.final.exists():
            raise FileExistsError(f"output folder {self.final} already exists")
        if self.staging.exists():
            shutil.rmtree(self.staging)
        private_folder(self.staging)
        pd.DataFrame(columns=QUARANTINE_COLUMNS).to_csv(self._quarantine_path, index=False)
        private_file(self._quarantine_path)

    @classmethod
    def reopen(cls, output_dir: Path, run_id: str) -> RunOutput:
        """The staging folder a run sealed before it was interrupted, to publish it."""
        output = cls(output_dir, run_id, fresh=False)
        if not output.staging.is_dir():
            raise FileNotFoundError(f"staged outputs {output.staging} are gone")
        return output

    def parts_dir(self, name: str) -> Path:
        """A working folder of partition inputs or outputs (deleted before publishing)."""
        return self.staging / PARTS_DIR / name

    @property
    def vault_dir(self) -> Path:
        """The run's sealed contact vault (profiles.vault), deleted before publishing."""
        return self.staging / VAULT_DIR

    def adopt(self, parts: list[str]) -> None:
        """Take the chunk parts `parts` (in reading order) as the run's rows: quarantine parts
        are appended to quarantine.csv, accepted parts are read in this order."""
        self._parts = list(parts)
        with self._quarantine_path.open("ab") as out:
            for part in parts:
                path = _quarantine_part(self.staging, part)
                with path.open(encoding="utf-8", newline="") as fh:
                    self.quarantine_rows += sum(1 for _ in csv.reader(fh))
                with path.open("rb") as fh:
                    shutil.copyfileobj(fh, out)
                path.unlink()
        self.accepted_rows = sum(
            pq.ParquetFile(_accepted_part(self.staging, p)).metadata.num_rows for p in parts
        )

    def _accepted_files(self) -> list[Path]:
        return [_accepted_part(self.staging, p) for p in self._parts]

    def read_accepted(self, columns: list[str]) -> pd.DataFrame:
        """Some columns of all accepted rows, in reading order."""
        tables = [pq.read_table(path, columns=columns) for path in self._accepted_files()]
        table = pa.concat_tables(tables) if tables else ROW_SCHEMA.empty_table().select(columns)
        frame: pd.DataFrame = table.to_pandas()
        return frame

    def iter_accepted(self, batch_rows: int = 200_000) -> Iterator[pd.DataFrame]:
        """All accepted rows in batches, in reading order."""
        for path in self._accepted_files():
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
                yield batch.to_pandas()

    def write_links(self, profile_ids: pd.Series, batch_rows: int = 200_000) -> None:
        """Write identity_links.parquet: every accepted row with its profile id.

        `profile_ids` is aligned with the accepted rows in reading order.
        """
        if len(profile_ids) != self.accepted_rows:
            raise RuntimeError("profile ids do not cover the accepted rows")  # a bug, never data
        ids = profile_ids.to_numpy()
        done = 0
        with pq.ParquetWriter(self.staging / LINKS_FILE, LINK_SCHEMA) as writer:
            for batch in self.iter_accepted(batch_rows):
                batch.insert(0, PROFILE_ID, ids[done : done + len(batch)])
                writer.write_table(
                    pa.Table.from_pandas(batch, schema=LINK_SCHEMA, preserve_index=False)
                )
                done += len(batch)
        private_file(self.staging / LINKS_FILE)
        shutil.rmtree(self.parts_dir("accepted"), ignore_errors=True)

    def read_links(self, columns: list[str], *, sources: list[str]) -> pd.DataFrame:
        """Some columns of the staged identity_links.parquet rows of `sources`."""
        table = pq.read_table(
            self.staging / LINKS_FILE,
            columns=[c for c in columns if c in LINK_COLUMNS],
            filters=[("source", "in", sources)] if sources else None,
        )
        frame: pd.DataFrame = table.to_pandas()
        return frame if sources else frame.iloc[0:0]

    def write_profiles(self, profiles: pd.DataFrame) -> None:
        """Write profiles.parquet (one row per profile). Arrow-backed columns (nested lists
        of structs, such as `interests`) are written as their Arrow arrays, so that readers
        get plain lists of dicts back, not a pandas dtype they cannot rebuild."""
        nested = [c for c in profiles.columns if isinstance(profiles[c].dtype, pd.ArrowDtype)]
        table = pa.Table.from_pandas(profiles.drop(columns=nested), preserve_index=False)
        for column in nested:
            table = table.append_column(column, pa.array(profiles[column].array))
        pq.write_table(table, self.staging / PROFILES_FILE)
        private_file(self.staging / PROFILES_FILE)

    def write_signals(self, signals: pd.DataFrame) -> None:
        """Write signals.parquet: profile_id, topic, confidence, provider, observed_at, kind,
        raw_score — one row per signal a provider (or the cache) gave tonight."""
        frame = signals.reindex(columns=SIGNAL_SCHEMA.names)
        table = pa.Table.from_pandas(frame, schema=SIGNAL_SCHEMA, preserve_index=False)
        pq.write_table(table, self.staging / SIGNALS_FILE)
        private_file(self.staging / SIGNALS_FILE)

    def write_summary(self, summary: dict[str, Any]) -> Path:
        """Write run_summary.json into the staging folder."""
        return self.write_json(SUMMARY_FILE, summary)

    def write_json(self, name: str, document: Mapping[str, Any]) -> Path:
        """Write a JSON document (counts and aggregates only) into the staging folder."""
        path = self.staging / name
        path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        private_file(path)
        return path

    def seal(self) -> None:
        """Make the staged outputs durable (fsync every file) and drop the working files (the
        vault, parts): from here on the folder is what `publish` puts in place."""
        vault.remove(self.vault_dir)
        shutil.rmtree(self.staging / PARTS_DIR, ignore_errors=True)
        for path in sorted(self.staging.rglob("*")):
            if path.is_file():
                with path.open("rb") as fh:
                    os.fsync(fh.fileno())
        self._sealed = True

    def publish(self) -> Path:
        """Move the sealed outputs into place (one rename); returns the run's output folder."""
        if not self._sealed:
            self.seal()
        os.replace(self.staging, self.final)
        fd = os.open(self.final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself is durable
        finally:
            os.close(fd)
        return self.final

    def abandon(self) -> None:
        """After a failure: the staging folder stays for inspection, but without the vault
        (sealed contact details are of no use once the run is over)."""
        vault.remove(self.vault_dir)


def clear_stale_vaults(output_dir: Path, *, keep: str) -> list[Path]:
    """Delete the vaults of staging folders other runs left behind (a killed run cannot clean
    up after itself); the folders themselves stay for inspection. Returns what was deleted."""
    if not output_dir.is_dir():
        return []
    stale = [
        p / VAULT_DIR
        for p in output_dir.glob(".*.partial")
        if p.name != f".{keep}.partial" and (p / VAULT_DIR).exists()
    ]
    for folder in stale:
        vault.remove(folder)
    return stale


def published_runs(output_dir: Path) -> list[Path]:
    """The published run folders, oldest first (run ids sort by time; partial folders start
    with a dot and are never read)."""
    if not output_dir.is_dir():
        return []
    return sorted(p for p in output_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def previous_run_file(output_dir: Path, run_id: str, relative: str) -> Path | None:
    """`relative` in the latest published run folder before `run_id` that has it, or None."""
    earlier = [
        p for p in published_runs(output_dir) if p.name < run_id and (p / relative).is_file()
    ]
    return earlier[-1] / relative if earlier else None


class NightLockedError(EnrichError):
    """Another run holds the state folder."""


class NightLock:
    """An exclusive lock on a state folder for one run (`flock` on `<state_dir>/run.lock`):
    a second run on the same state is refused at once, never interleaved. The operating system
    drops the lock when the holding process ends, so a crashed run never blocks the next."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "run.lock"
        self._fd: int | None = None

    def __enter__(self) -> NightLock:
        private_folder(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise NightLockedError(
                f"another run holds {self.path} (process {holder}); wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
