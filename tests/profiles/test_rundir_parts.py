"""Chunk and partition parts of a run folder: adopted in order, never published."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from profiles.accounting import SourceCounts
from profiles.quarantine import COLUMNS as QUARANTINE_COLUMNS
from profiles.rundir import (
    PARTS_DIR,
    RunOutput,
    chunk_part,
    read_partition,
    write_chunk_parts,
    write_partitions,
)
from profiles.vault import VAULT_DIR


def _identified(lines: list[int], reasons: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "line": pd.Series(lines, dtype="int64"),
            "key_id": "k1",
            "email_pseudonym": [f"{n:064x}" for n in lines],
            "row_reason": pd.Series(reasons, dtype=object),
            "first_name_present": True,
        }
    )


def _quarantine(lines: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source": "crm",
            "file": "crm.csv",
            "line": lines,
            "reason": "ROW_UNPARSEABLE",
            "field_reasons": "",
            "detail": "expected 3 fields, found 2",
            "sealed": "",
        },
        columns=QUARANTINE_COLUMNS,
    )


def test_parts_are_adopted_in_reading_order_whatever_order_they_were_written(
    tmp_path: Path,
) -> None:
    output = RunOutput(tmp_path / "out", "run-1")
    second, first = chunk_part("crm", 1), chunk_part("crm", 0)
    write_chunk_parts(
        output.staging, second, "crm", _identified([5, 6], [None, None]), _quarantine([7])
    )
    write_chunk_parts(
        output.staging,
        first,
        "crm",
        _identified([2, 3], [None, "ROW_NO_IDENTIFIER"]),
        _quarantine([4, 1]),
    )
    output.adopt([first, second])
    assert output.accepted_rows == 3
    assert output.quarantine_rows == 3
    assert output.read_accepted(["line"])["line"].tolist() == [2, 5, 6]
    quarantine = pd.read_csv(output.staging / "quarantine.csv")
    assert quarantine["line"].tolist() == [1, 4, 7]  # sorted within each chunk, chunks in order
    output.write_links(pd.Series(["p1", "p2", "p3"]))
    assert not (output.staging / PARTS_DIR / "accepted").exists()


def test_publish_leaves_no_part_and_no_vault_and_abandon_drops_the_vault(tmp_path: Path) -> None:
    output = RunOutput(tmp_path / "out", "run-1")
    write_partitions(output.parts_dir("policy"), pd.DataFrame({"a": [1]}), 10)
    output.vault_dir.mkdir(parents=True)
    (output.vault_dir / "x.parquet").write_bytes(b"sealed")
    final = output.publish()
    assert not (final / PARTS_DIR).exists()
    assert not (final / VAULT_DIR).exists()
    failed = RunOutput(tmp_path / "out", "run-2")
    failed.vault_dir.mkdir(parents=True)
    failed.abandon()
    assert not failed.vault_dir.exists()
    assert failed.staging.exists()  # kept for inspection


def test_partitions_are_contiguous_and_keep_their_dtypes(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "subject": pd.Series(["a", "b", "c", "d", "e"], dtype=str),
            "age": pd.Series([30, None, 41, 18, None], dtype="Int64"),
            "country": pd.Series(["DK", None, "DE", "US", "GB"], dtype="string"),
            "customer": [True, False, True, False, True],
        }
    )
    paths = write_partitions(tmp_path / "facts", frame, 2)
    assert [p.name for p in paths] == ["000000.parquet", "000001.parquet", "000002.parquet"]
    back = pd.concat([read_partition(p) for p in paths], ignore_index=True)
    pd.testing.assert_frame_equal(back, frame)
    assert len(write_partitions(tmp_path / "empty", frame.iloc[0:0], 2)) == 1


def test_counts_of_a_source_merge_and_refuse_another_source() -> None:
    a = SourceCounts(source="crm", file="crm.csv", rows_in=3, rows_accepted=2)
    a.quarantined_by_reason["ROW_NO_IDENTIFIER"] = 1
    b = SourceCounts(source="crm", file="crm.csv", rows_in=2, rows_accepted=1, rows_erased=1)
    b.field_rejections["email"] = b.quarantined_by_reason.__class__({"EMAIL_SYNTAX": 1})
    a.merge(b)
    assert (a.rows_in, a.rows_accepted, a.rows_erased, a.rows_quarantined) == (5, 3, 1, 1)
    assert a.field_rejections == {"email": {"EMAIL_SYNTAX": 1}}
    a.check()
    with pytest.raises(ValueError, match="cannot merge counts of shop"):
        a.merge(SourceCounts(source="shop", file="orders.csv"))
