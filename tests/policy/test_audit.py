"""The hash-chained decision log: entries, checkpoints, and every kind of tampering."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import pandas as pd
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.audit import (
    CHECKPOINTS,
    DECISION_COLUMNS,
    GENESIS,
    ChainedDecisionLog,
    LogError,
    Signer,
    canonical,
    entry_hash,
    pinned_keys,
    segments_of,
    verify,
)

KEY = Signer.from_seed(bytes(range(32)))
OTHER = Signer.from_seed(bytes(range(1, 33)))
PINS = pinned_keys([KEY.public_key])


def _decisions(subjects: list[str], purpose: str = "profiling") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "subject": subjects,
            "gate": "B",
            "purpose": purpose,
            "decision": "allow",
            "basis": "consent",
            "rule": "consent@2026.11.1",
            "reason": "BASIS_RECORDED",
            "evidence": "e1",
            "policy_hash": "ab" * 32,
            "context": "regime=eu",
        }
    )


def _log(tmp_path: Path, runs: int = 3, per_run: int = 5, **kwargs: int) -> Path:
    directory = tmp_path / "log"
    log = ChainedDecisionLog(directory, signer=KEY, **kwargs)
    for r in range(runs):
        log.append(f"run{r}", _decisions([f"P{r}{i:03d}" for i in range(per_run)]), actor="nightly")
        log.checkpoint(f"run{r}")
    return directory


def _problems(directory: Path, pins: dict[str, str] = PINS) -> list[str]:
    return [str(p) for p in verify(directory, pins).problems]


def _rewrite(path: Path, edit: object) -> None:
    """Decompress a closed segment, change its lines with `edit`, compress it again."""
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()
    lines = edit(lines)  # type: ignore[operator]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8")))


# --- the chain ---------------------------------------------------------------------------------


def test_entries_chain_across_runs_from_the_genesis_value(tmp_path: Path) -> None:
    directory = _log(tmp_path)
    entries = list(ChainedDecisionLog(directory).entries())
    assert [e["seq"] for e in entries] == list(range(15))
    assert entries[0]["prev_hash"] == GENESIS
    for before, after in itertools.pairwise(entries):
        assert after["prev_hash"] == before["hash"]
    for e in entries:
        assert e["hash"] == entry_hash(e)
        assert set(e) >= {*DECISION_COLUMNS, "seq", "ts", "run_id", "actor", "context"}
    assert len(segments_of(directory)) == 3  # one closed segment per run
    assert all(p.name.endswith(".jsonl.gz") for p in segments_of(directory))
    result = verify(directory, PINS)
    assert result.ok, result.problems
    assert (result.entries, result.runs, result.checkpoints) == (15, 3, 3)


def test_each_line_is_the_rfc8785_form_of_its_entry(tmp_path: Path) -> None:
    directory = _log(tmp_path, runs=1)
    for _, _, raw in ChainedDecisionLog(directory).lines():
        assert raw == rfc8785.dumps(json.loads(raw))


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        # field names are ASCII (code-point order = RFC 8785's UTF-16 order); values are anything
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8),
        st.one_of(
            st.text(max_size=20), st.integers(-(2**53) + 1, 2**53 - 1), st.booleans(), st.none()
        ),
        max_size=8,
    )
)
def test_canonical_json_is_rfc8785_for_what_entries_hold(
    value: dict[str, str | int | bool | None],
) -> None:
    assert canonical(value).encode("utf-8") == rfc8785.dumps(value)


def test_one_subjects_entries_and_a_run_of_many_segments(tmp_path: Path) -> None:
    directory = _log(tmp_path, runs=2, per_run=2500, segment_entries=1000)
    assert len(segments_of(directory)) == 6  # 3 per run: 1000 + 1000 + 500
    assert verify(directory, PINS).ok
    mine = list(ChainedDecisionLog(directory).entries("P1042"))
    assert [e["run_id"] for e in mine] == ["run1"]


def test_a_crashed_run_is_sealed_by_the_next_writer(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    log = ChainedDecisionLog(directory, signer=KEY)
    log.append("run0", _decisions(["a", "b"]), actor="nightly")
    log.checkpoint("run0")
    log.append("run1", _decisions(["c"]), actor="nightly")  # ... and the process dies
    assert any("covered by no checkpoint" in p for p in _problems(directory))
    again = ChainedDecisionLog(directory, signer=KEY)
    again.append("run2", _decisions(["d"]), actor="nightly")
    again.checkpoint("run2")
    checkpoints = again.checkpoints()
    assert [(c["run_id"], c["recovered"]) for c in checkpoints] == [
        ("run0", False),
        ("run1", True),
        ("run2", False),
    ]
    assert verify(directory, PINS).ok


def test_a_log_without_a_signing_key_cannot_be_checkpointed(tmp_path: Path) -> None:
    log = ChainedDecisionLog(tmp_path / "log")
    log.append("run0", _decisions(["a"]), actor="nightly")
    with pytest.raises(LogError, match="no signing key"):
        log.checkpoint("run0")


# --- tampering ---------------------------------------------------------------------------------


def test_a_changed_character_is_found_with_segment_line_and_seq(tmp_path: Path) -> None:
    directory = _log(tmp_path)
    segment = segments_of(directory)[1]
    _rewrite(segment, lambda lines: [lines[0], lines[1].replace('"allow"', '"allaw"'), *lines[2:]])
    problems = _problems(directory)
    assert problems[0] == (
        f"segment {segment.name}, line 2, seq 6: hash does not match the entry's content (edited)"
    )


def test_a_deleted_line_is_found(tmp_path: Path) -> None:
    directory = _log(tmp_path)
    segment = segments_of(directory)[0]
    _rewrite(segment, lambda lines: lines[:2] + lines[3:])
    problems = _problems(directory)
    assert problems[0].startswith(f"segment {segment.name}, line 3, seq 3: seq 3 where 2 was")
    assert "missing" in problems[0]


def test_an_inserted_line_is_found(tmp_path: Path) -> None:
    directory = _log(tmp_path)
    segment = segments_of(directory)[2]
    _rewrite(segment, lambda lines: [*lines[:3], lines[1], *lines[3:]])
    assert "seq 11 where 13 was expected (inserted or reordered)" in _problems(directory)[0]


def test_swapped_lines_are_found(tmp_path: Path) -> None:
    directory = _log(tmp_path)
    segment = segments_of(directory)[0]
    _rewrite(segment, lambda lines: [lines[1], lines[0], *lines[2:]])
    assert _problems(directory)[0].startswith(f"segment {segment.name}, line 1, seq 1: seq 1")


def test_a_cut_tail_is_found(tmp_path: Path) -> None:
    directory = _log(tmp_path)
    segment = segments_of(directory)[-1]
    _rewrite(segment, lambda lines: lines[:-2])
    problems = _problems(directory)
    assert any("ends at seq 14 but the log ends at seq 12 (truncated)" in p for p in problems)
    # bytes cut off a compressed segment
    segment.write_bytes(segment.read_bytes()[:-20])
    assert any(f"segment {segment.name}: unreadable" in p for p in _problems(directory))


def test_rewriting_and_rehashing_everything_after_is_caught_by_the_signed_head(
    tmp_path: Path,
) -> None:
    directory = _log(tmp_path)
    segment = segments_of(directory)[2]

    def rehash(lines: list[str]) -> list[str]:
        entries = [json.loads(line) for line in lines]
        entries[0]["decision"] = "deny"
        prev = entries[0]["prev_hash"]
        out = []
        for e in entries:
            e["prev_hash"] = prev
            e["hash"] = entry_hash(e)
            prev = e["hash"]
            out.append(canonical(e))
        return out

    _rewrite(segment, rehash)
    assert _problems(directory) == [
        "seq 14, checkpoint 2: head hash differs from the log's entry (rewritten)"
    ]


def test_a_deleted_checkpoint_is_found(tmp_path: Path) -> None:
    directory = _log(tmp_path)
    path = directory / CHECKPOINTS
    lines = path.read_text("utf-8").splitlines()
    path.write_text("\n".join([lines[0], lines[2]]) + "\n", "utf-8")
    problems = _problems(directory)
    assert any("covers seq 10..14 but seq 5 comes next" in p for p in problems)


def test_a_forged_or_unpinned_checkpoint_is_found(tmp_path: Path) -> None:
    directory = _log(tmp_path)
    path = directory / CHECKPOINTS
    checkpoints = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    checkpoints[1]["entries"] = 4  # edited, signature kept
    forged = dict(checkpoints[2])
    forged["key_id"] = OTHER.key_id  # re-signed with a key nobody pinned
    forged.pop("signature")
    forged["signature"] = OTHER.sign(canonical(forged).encode("utf-8"))
    checkpoints[2] = forged
    path.write_text("".join(canonical(c) + "\n" for c in checkpoints), "utf-8")
    problems = _problems(directory)
    assert "checkpoint 1: signature is not valid (forged or edited)" in problems
    assert "checkpoint 1: entry count does not match its seq range" in problems
    assert f"checkpoint 2: signed with key {OTHER.key_id}, which is not pinned" in problems


def test_rotated_keys_keep_old_checkpoints_verifiable_while_pinned(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    old = ChainedDecisionLog(directory, signer=KEY)
    old.append("run0", _decisions(["a"]), actor="nightly")
    old.checkpoint("run0")
    new = ChainedDecisionLog(directory, signer=OTHER)
    new.append("run1", _decisions(["b"]), actor="nightly")
    new.checkpoint("run1")
    assert verify(directory, pinned_keys([KEY.public_key, OTHER.public_key])).ok
    assert _problems(directory, pinned_keys([OTHER.public_key])) == [
        f"checkpoint 0: signed with key {KEY.key_id}, which is not pinned"
    ]


def test_a_line_cut_by_a_crash_is_dropped_and_the_run_sealed(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    log = ChainedDecisionLog(directory, signer=KEY)
    log.append("run0", _decisions(["a", "b", "c"]), actor="nightly")
    segment = segments_of(directory)[0]
    data = segment.read_bytes()
    segment.write_bytes(data[: data.rfind(b"\n", 0, len(data) - 1) + 40])  # half a last line
    again = ChainedDecisionLog(directory, signer=KEY)
    again.append("run1", _decisions(["d"]), actor="nightly")
    again.checkpoint("run1")
    assert [c["entries"] for c in again.checkpoints()] == [2, 1]
    assert verify(directory, PINS).ok


def test_the_log_is_private_to_its_owner(tmp_path: Path) -> None:
    directory = _log(tmp_path, runs=1)
    for path in [directory, directory / "segments", *directory.rglob("*")]:
        assert path.stat().st_mode & 0o077 == 0, path


_TEXTS = st.text(
    alphabet=st.characters(codec="utf-8"), max_size=12
)  # quotes, backslashes, control characters, non-ASCII: anything a str can hold


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(_TEXTS, _TEXTS, _TEXTS), min_size=1, max_size=12),
    segment_entries=st.integers(1, 7),
)
def test_any_text_is_written_in_rfc8785_form_and_chained(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[str, str, str]],
    segment_entries: int,
) -> None:
    directory = tmp_path_factory.mktemp("log") / "log"
    decisions = _decisions([s for s, _, _ in rows]).assign(
        evidence=[e for _, e, _ in rows], context=[c for _, _, c in rows]
    )
    log = ChainedDecisionLog(directory, signer=KEY, segment_entries=segment_entries)
    assert log.append("run0", decisions, actor='nightly "1"\n') == len(rows)
    assert log.append("run0", decisions.iloc[::-1], actor="nightly") == len(rows)
    log.checkpoint("run0")
    lines = [raw for _, _, raw in ChainedDecisionLog(directory).lines()]
    entries = [json.loads(raw) for raw in lines]
    assert [e["subject"] for e in entries] == [r[0] for r in rows] + [r[0] for r in rows[::-1]]
    assert [e["evidence"] for e in entries[: len(rows)]] == [r[1] for r in rows]
    assert [e["context"] for e in entries[: len(rows)]] == [r[2] for r in rows]
    for raw, entry in zip(lines, entries, strict=True):
        assert raw == rfc8785.dumps(entry)
        assert entry["hash"] == entry_hash(entry)
    result = verify(directory, PINS)
    assert result.ok, result.problems
    assert result.entries == 2 * len(rows)


def test_a_decision_without_a_value_is_refused(tmp_path: Path) -> None:
    decisions = _decisions(["P1", "P2"]).astype({"evidence": object})
    decisions.loc[1, "evidence"] = None
    with pytest.raises(ValueError, match="evidence"):
        ChainedDecisionLog(tmp_path / "log", signer=KEY).append("run0", decisions, actor="a")
