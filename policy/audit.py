"""The policy decision log: append-only, hash-chained, with Ed25519-signed run checkpoints.

Every gate writes through `DecisionLog`. `ChainedDecisionLog` keeps it in a folder:

    log.json                       log id, format, genesis value, creation time
    segments/segment-000001.jsonl.gz   closed segments (gzip), one or more per run
    segments/segment-000007.jsonl      the open segment of a run in progress (or a crashed one)
    checkpoints.jsonl              one signed checkpoint per run, in order

Entries. One JSON object per line, one line per decision: seq (0, 1, 2, ... across every
segment and run), ts (UTC RFC 3339), run_id, actor, subject (a profile id: pseudonymous, never
a raw identifier), purpose, gate, context (`key=value;...`: regime, provider, topic, request),
rule (`id@version`), policy_hash, decision, basis, reason, evidence, prev_hash and hash. `hash`
is the SHA-256 (hex) of the entry without `hash`, serialised by RFC 8785 (JSON Canonicalization
Scheme); `prev_hash` is the previous entry's hash, and the first entry's is GENESIS. Entries
hold only strings and one integer, for which RFC 8785 is exactly `json.dumps` with sorted
keys, no whitespace and no ASCII escaping (tests check this against the `rfc8785` package);
each line *is* that canonical text with `hash` in its sorted place, so checking an entry is
cutting the hash out and hashing the rest. Each batch is written and fsynced at once.

Checkpoints. When a run (or a data-subject request) ends, `checkpoint` closes and compresses
its segment and appends {log_id, run_id, first_seq, last_seq, entries, head_hash (the hash of
the last entry), segments, time, key_id}, signed with Ed25519 over its RFC 8785 form. A run
that crashed before its checkpoint leaves entries no checkpoint covers; the next writer to open
the log seals them first with a checkpoint of their own run id and `recovered: true`.

Verification (`verify`) re-reads everything: each entry's hash, seq continuity, every
prev_hash link across segments and runs, that the checkpoints tile the log without gap or
overlap, their counts and head hashes, and each signature against the *pinned* public keys
(from enrich.yaml, never from the log). Any edited, deleted, inserted, reordered or truncated
entry, and any missing, forged or unpinned checkpoint, is reported with the segment, line and
seq. Someone who rewrites entries can recompute the hashes after them, but not the signed head
hash of the checkpoint: that is what makes the chain tamper-evident rather than only
consistent.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import os
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from profiles.failpoints import failpoint
from profiles.files import private_folder

ENTRY_FIELDS: tuple[str, ...] = (
    "seq",
    "ts",
    "run_id",
    "actor",
    "subject",
    "purpose",
    "gate",
    "context",
    "rule",
    "policy_hash",
    "decision",
    "basis",
    "reason",
    "evidence",
    "prev_hash",
    "hash",
)
"""Fields of a decision entry."""

DECISION_COLUMNS: tuple[str, ...] = (
    "subject",
    "gate",
    "purpose",
    "decision",
    "basis",
    "rule",
    "reason",
    "evidence",
    "policy_hash",
)
"""Columns of the decisions frame a gate hands to the log (extra columns are ignored; an
optional `context` column, e.g. "provider=gravatar", says what else the decision was about)."""

GENESIS: Final = "0" * 64
"""prev_hash of the first entry of every log."""
FORMAT: Final = 1
SEGMENTS: Final = "segments"
CHECKPOINTS: Final = "checkpoints.jsonl"
MANIFEST: Final = "log.json"
_HASH_KEY: Final = b',"hash":"'
_SEGMENT_ENTRIES: Final = 1_000_000


def canonical(value: Mapping[str, Any]) -> str:
    """RFC 8785 canonical JSON of an object with ASCII keys whose values are strings, integers
    (within ±2^53), booleans or null (what entries and checkpoints hold): sorted keys, no
    whitespace, no ASCII escaping. (For non-ASCII keys RFC 8785 sorts by UTF-16 code units.)"""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _sha256(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


def entry_hash(entry: Mapping[str, Any]) -> str:
    """The hash an entry must carry: SHA-256 of its canonical form without `hash`."""
    return _sha256(canonical({k: v for k, v in entry.items() if k != "hash"}).encode("utf-8"))


# --- signing keys ------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_key_id(public_key: str) -> str:
    """`ed25519:<16 hex>`, from the public key text `ed25519:<base64url of 32 bytes>`."""
    return "ed25519:" + _sha256(_public_raw(public_key))[:16]


def _public_raw(public_key: str) -> bytes:
    scheme, _, body = public_key.partition(":")
    raw = _unb64(body) if scheme == "ed25519" else b""
    if len(raw) != 32:
        raise ValueError("a public key is `ed25519:` and the base64url of 32 bytes")
    return raw


@dataclass(frozen=True)
class Signer:
    """An Ed25519 signing key (from a 32-byte seed); its id and public key are derived."""

    private: Ed25519PrivateKey

    @classmethod
    def from_seed(cls, seed: bytes) -> Signer:
        return cls(Ed25519PrivateKey.from_private_bytes(seed[:32]))

    @property
    def public_key(self) -> str:
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return "ed25519:" + _b64(raw)

    @property
    def key_id(self) -> str:
        return public_key_id(self.public_key)

    def sign(self, message: bytes) -> str:
        return _b64(self.private.sign(message))


def signature_valid(public_key: str, message: bytes, signature: str) -> bool:
    """Whether `signature` (base64url) is `public_key`'s Ed25519 signature of `message`."""
    try:
        Ed25519PublicKey.from_public_bytes(_public_raw(public_key)).verify(
            _unb64(signature), message
        )
    except (InvalidSignature, ValueError):
        return False
    return True


# --- the log -----------------------------------------------------------------------------------


class DecisionLog(Protocol):
    """Where every policy decision is written, before anything acts on it."""

    def append(self, run_id: str, decisions: pd.DataFrame, *, actor: str) -> int:
        """Append one entry per row of `decisions`; returns how many were written."""
        ...

    def entries(self, subject: str | None = None) -> Iterator[dict[str, object]]:
        """Every entry (optionally only one subject's), oldest first."""
        ...


class LogError(Exception):
    """The log folder cannot be written as asked (not a verification finding)."""


_TEXT: Final = pa.large_string()
_NEEDS_ESCAPE: Final = r'["\\\x00-\x1f]'


def _escaped(values: pd.Series) -> pa.Array:
    """Each value as the inside of its JSON string literal: a value without a quote,
    backslash or control character is itself; any other is encoded by `json.dumps`, once.
    ValueError if a value is missing (a decision always says something)."""
    text = values.astype(str)
    if text.isna().any():
        raise ValueError(f"decisions.{values.name}: missing values")
    array = pa.array(text, type=_TEXT, from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    data = _data(array)
    # UTF-8 continuation bytes are >= 0x80, so a byte scan finds exactly these characters
    if not ((data < 0x20) | (data == ord('"')) | (data == ord("\\"))).any():
        return array
    special = np.asarray(pc.match_substring_regex(array, _NEEDS_ESCAPE), dtype=bool)
    at = np.flatnonzero(special)
    codes, uniques = pd.factorize(text.iloc[at])
    inner = np.array([json.dumps(str(u), ensure_ascii=False)[1:-1] for u in uniques], dtype=object)
    out = array.to_numpy(zero_copy_only=False).astype(object)
    out[at] = inner[codes]
    return pa.array(out, type=_TEXT)


def _joined(*parts: pa.Array | str) -> pa.Array:
    """Element-wise concatenation of text arrays and constant texts."""
    texts = [pa.scalar(p, _TEXT) if isinstance(p, str) else p for p in parts]
    return pc.binary_join_element_wise(*texts, pa.scalar("", _TEXT))


def _data(texts: pa.Array) -> npt.NDArray[np.uint8]:
    """The concatenated UTF-8 bytes of a large_string array, without a copy."""
    _, offsets, data = texts.buffers()
    if data is None:  # no text at all (every value empty)
        return np.zeros(0, dtype=np.uint8)
    bounds = np.frombuffer(offsets, dtype=np.int64)
    start, end = int(bounds[texts.offset]), int(bounds[texts.offset + len(texts)])
    return np.frombuffer(data, dtype=np.uint8)[start:end]


def _segment_path(directory: Path, number: int, *, closed: bool) -> Path:
    name = f"segment-{number:06d}.jsonl" + (".gz" if closed else "")
    return directory / SEGMENTS / name


def _segment_number(path: Path) -> int:
    return int(path.name.split("-")[1].split(".")[0])


def segments_of(directory: Path) -> list[Path]:
    """The log's segment files in order (closed `.jsonl.gz` and at most one open `.jsonl`)."""
    folder = directory / SEGMENTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.startswith("segment-")]
    return sorted(found, key=_segment_number)


def open_segment(path: Path) -> IO[bytes]:
    """A segment's lines as bytes (gzip or plain)."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _fsync_append(path: Path, text: str | memoryview) -> None:
    """Append `text` (a str as UTF-8, or bytes as they are) to `path` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "ab") as fh:
        fh.write(text.encode("utf-8") if isinstance(text, str) else text)
        fh.flush()
        os.fsync(fh.fileno())


@dataclass
class _Run:
    first_seq: int
    segments: list[str] = field(default_factory=list)


class ChainedDecisionLog:
    """The decision log under `directory` (see the module docstring). One writer at a time.

    `signer` signs checkpoints; without one the log can be read but not checkpointed.
    """

    def __init__(
        self,
        directory: Path,
        *,
        signer: Signer | None = None,
        segment_entries: int = _SEGMENT_ENTRIES,
    ) -> None:
        self.directory = directory
        self.signer = signer
        self.segment_entries = segment_entries
        self._loaded = False
        self._seq = 0
        self._head = GENESIS
        self._segment: Path | None = None
        self._segment_lines = 0
        self._runs: dict[str, _Run] = {}
        self._replay: dict[str, list[tuple[str, ...]]] = {}

    # reading ------------------------------------------------------------------------------

    @property
    def log_id(self) -> str | None:
        """The log's id (None before the first entry)."""
        manifest = self.directory / MANIFEST
        if not manifest.exists():
            return None
        return str(json.loads(manifest.read_text("utf-8"))["log_id"])

    def checkpoints(self) -> list[dict[str, Any]]:
        """Every checkpoint, oldest first."""
        return _read_jsonl(self.directory / CHECKPOINTS)

    def lines(self) -> Iterator[tuple[Path, int, bytes]]:
        """(segment, line number from 1, raw line without newline) for every entry."""
        for path in segments_of(self.directory):
            with open_segment(path) as fh:
                for number, raw in enumerate(fh, start=1):
                    yield path, number, raw.rstrip(b"\n")

    def entries(self, subject: str | None = None) -> Iterator[dict[str, object]]:
        """Every entry (or one subject's: a byte search first, then an exact check)."""
        needle = None if subject is None else f'"subject":{json.dumps(subject)}'.encode()
        for _, _, raw in self.lines():
            if needle is None or needle in raw:
                entry: dict[str, object] = json.loads(raw)
                if subject is None or entry.get("subject") == subject:
                    yield entry

    # writing ------------------------------------------------------------------------------

    def _load(self) -> None:
        """Find the head of the chain and the open segment; seal what a crash left unsealed."""
        if self._loaded:
            return
        self._loaded = True
        private_folder(self.directory / SEGMENTS)
        if not (self.directory / MANIFEST).exists():
            manifest = {
                "log_id": str(uuid.uuid4()),
                "format": FORMAT,
                "genesis": GENESIS,
                "created_at": _now(),
            }
            _fsync_append(self.directory / MANIFEST, canonical(manifest) + "\n")
        checkpoints = self.checkpoints()
        sealed: set[str] = set()
        if checkpoints:
            self._seq = int(checkpoints[-1]["last_seq"]) + 1
            self._head = str(checkpoints[-1]["head_hash"])
            sealed = set(str(checkpoints[-1]["segments"]).split(";"))
        segments = segments_of(self.directory)
        if not segments or segments[-1].name in sealed:
            return
        # the last segment is not covered by the last checkpoint: a run ended without one
        last = segments[-1]
        tail: list[dict[str, Any]] = []
        lines, complete = 0, 0
        with open_segment(last) as fh:
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break  # a write cut by a crash: never fsynced, never acted on
                lines += 1
                complete += len(raw)
                entry = json.loads(raw)
                if int(entry["seq"]) >= self._seq:
                    tail.append(entry)
        if last.suffix == ".jsonl":
            os.truncate(last, complete)
            self._segment, self._segment_lines = last, lines
        if tail:  # seal its entries now, under the crashed run's id
            self._seq = int(tail[-1]["seq"]) + 1
            self._head = str(tail[-1]["hash"])
            run_id = str(tail[0]["run_id"])
            self._runs[run_id] = _Run(int(tail[0]["seq"]), [last.name])
            self.checkpoint(run_id, recovered=True)

    def _target(self, run: _Run) -> Path:
        if self._segment is None or self._segment_lines >= self.segment_entries:
            if self._segment is not None:
                self._close(self._segment)
            numbers = [_segment_number(p) for p in segments_of(self.directory)]
            self._segment = _segment_path(self.directory, max(numbers, default=0) + 1, closed=False)
            self._segment_lines = 0
        name = self._segment.name
        if name not in run.segments:
            run.segments.append(name)
        return self._segment

    def _close(self, path: Path) -> None:
        """Compress a finished segment (written whole, fsynced, then the plain file removed)."""
        target = path.with_name(path.name + ".gz")
        partial = target.with_name(target.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as raw, path.open("rb") as src:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, target)
        path.unlink()
        if self._segment == path:
            self._segment = None
            self._segment_lines = 0

    def resume(self, run_id: str) -> int:
        """Continue a run an interruption stopped: the decisions it already logged (sealed by
        a checkpoint of their own) are not appended again. From now on `append` of `run_id`
        checks each row against the next logged decision, in order, and skips it; past the
        last one it appends. A row that differs from the logged one raises LogError: the
        resumed run did not decide as the interrupted one did (its inputs changed). Returns
        how many decisions the run logged before."""
        self._load()
        logged = [_decision_key(e) for e in self.entries() if e.get("run_id") == run_id]
        self._replay[run_id] = logged[::-1]  # taken from the end: oldest first
        return len(logged)

    def _replayed(self, run_id: str, decisions: pd.DataFrame) -> int:
        """How many leading rows of `decisions` the run logged before it was interrupted
        (checked equal, field by field, to the logged decisions)."""
        pending = self._replay.get(run_id)
        if not pending:
            return 0
        count = min(len(pending), len(decisions))
        head = decisions.iloc[:count]
        columns = [
            head[name].astype(str).tolist() if name in head.columns else [""] * count
            for name in _REPLAY_FIELDS
        ]
        keys = list(zip(*columns, strict=True))
        expected = pending[len(pending) - count :][::-1]
        if keys != expected:
            i = next(i for i, (a, b) in enumerate(zip(keys, expected, strict=True)) if a != b)
            raise LogError(
                f"run {run_id} cannot be resumed: decision {i + 1} of a {keys[i][1]}/"
                f"{keys[i][2]} batch differs from the one it logged before it was interrupted "
                "(its inputs changed); start a new run with --fresh"
            )
        del pending[len(pending) - count :]
        return count

    def append(self, run_id: str, decisions: pd.DataFrame, *, actor: str) -> int:
        """Append one chained entry per decision row, fsync, and return the number written
        (rows a resumed run had logged already are skipped: see `resume`)."""
        if decisions.empty:
            return 0
        missing = [c for c in DECISION_COLUMNS if c not in decisions.columns]
        if missing:
            raise ValueError(f"decisions lack column(s): {', '.join(missing)}")
        self._load()
        skip = self._replayed(run_id, decisions)
        if skip == len(decisions):
            return 0
        decisions = decisions.iloc[skip:].reset_index(drop=True)
        run = self._runs.setdefault(run_id, _Run(self._seq))
        n = len(decisions)
        context = decisions["context"] if "context" in decisions.columns else pd.Series([""] * n)
        column = {name: _escaped(decisions[name]) for name in DECISION_COLUMNS}
        fixed = {
            "actor": json.dumps(actor, ensure_ascii=False),
            "run_id": json.dumps(run_id, ensure_ascii=False),
            "ts": json.dumps(_now(), ensure_ascii=False),
        }
        seqs = pc.cast(pa.array(np.arange(self._seq, self._seq + n, dtype=np.int64)), _TEXT)
        # The line in sorted key order, cut where the chain goes in: `before` "hash" `middle`
        # prev_hash `after`. Columns are joined by Arrow; only the chain itself is a loop.
        # sorted keys: actor basis context decision evidence gate | hash | policy_hash prev_hash
        # purpose reason rule run_id seq subject ts
        before = _joined(
            '{"actor":' + fixed["actor"] + ',"basis":"', column["basis"],
            '","context":"', _escaped(context.reset_index(drop=True)), '","decision":"',
            column["decision"], '","evidence":"', column["evidence"], '","gate":"',
            column["gate"], '",',
        )  # fmt: skip
        middle = _joined('"policy_hash":"', column["policy_hash"], '","prev_hash":"')
        after = _joined(
            '","purpose":"', column["purpose"], '","reason":"', column["reason"], '","rule":"',
            column["rule"], '","run_id":' + fixed["run_id"] + ',"seq":', seqs,
            ',"subject":"', column["subject"], '","ts":' + fixed["ts"] + "}",
        )  # fmt: skip
        hashed_before = pc.cast(_joined(before, middle), pa.large_binary()).to_pylist()
        hashed_after = pc.cast(after, pa.large_binary()).to_pylist()
        written = 0
        while written < n:
            target = self._target(run)
            room = min(n - written, self.segment_entries - self._segment_lines)
            digests = []
            prev = self._head.encode("ascii")
            sha256, hexlify = hashlib.sha256, binascii.hexlify
            for b, a in zip(
                hashed_before[written : written + room],
                hashed_after[written : written + room],
                strict=True,
            ):
                prev = hexlify(sha256(b + prev + a).digest())
                digests.append(prev)
            hashes = pc.cast(pa.array(digests, type=pa.large_binary()), _TEXT)
            links = pa.concat_arrays(
                [pa.array([self._head], type=_TEXT), hashes.slice(0, room - 1)]
            )
            lines = _joined(
                before.slice(written, room), '"hash":"', hashes, '",',
                middle.slice(written, room), links, after.slice(written, room), "\n",
            )  # fmt: skip
            self._head = prev.decode("ascii")
            _fsync_append(target, _data(lines).data)
            failpoint("log:batch")
            self._segment_lines += room
            self._seq += room
            written += room
        return n

    def checkpoint(self, run_id: str, *, recovered: bool = False) -> dict[str, Any] | None:
        """Close the run's segment and append its signed checkpoint; None if it wrote nothing."""
        self._load()
        run = self._runs.pop(run_id, None)
        if run is None or run.first_seq >= self._seq:
            return None
        if self.signer is None:
            raise LogError("the decision log has no signing key: it cannot write a checkpoint")
        if self._segment is not None:
            self._close(self._segment)
        previous = self.checkpoints()
        body: dict[str, Any] = {
            "checkpoint": len(previous),
            "log_id": self.log_id,
            "run_id": run_id,
            "first_seq": run.first_seq,
            "last_seq": self._seq - 1,
            "entries": self._seq - run.first_seq,
            "head_hash": self._head,
            "segments": ";".join(s if s.endswith(".gz") else s + ".gz" for s in run.segments),
            "time": _now(),
            "key_id": self.signer.key_id,
            "recovered": recovered,
        }
        body["signature"] = self.signer.sign(canonical(body).encode("utf-8"))
        _fsync_append(self.directory / CHECKPOINTS, canonical(body) + "\n")
        return body


_REPLAY_FIELDS: Final = (*DECISION_COLUMNS, "context")
"""What makes a decision the same decision (not when, by whom, or where in the chain)."""


def _decision_key(entry: Mapping[str, object]) -> tuple[str, ...]:
    return tuple(str(entry.get(name, "")) for name in _REPLAY_FIELDS)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- verification ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One finding of `verify`: where (segment, line, seq, checkpoint) and what."""

    message: str
    segment: str | None = None
    line: int | None = None
    seq: int | None = None
    checkpoint: int | None = None

    def __str__(self) -> str:
        where = [
            f"segment {self.segment}" if self.segment else "",
            f"line {self.line}" if self.line is not None else "",
            f"seq {self.seq}" if self.seq is not None else "",
            f"checkpoint {self.checkpoint}" if self.checkpoint is not None else "",
        ]
        place = ", ".join(w for w in where if w)
        return f"{place}: {self.message}" if place else self.message


@dataclass
class Verification:
    """What `verify` read and found."""

    log_id: str | None
    entries: int = 0
    segments: int = 0
    checkpoints: int = 0
    runs: int = 0
    keys: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "log_id": self.log_id,
            "entries": self.entries,
            "segments": self.segments,
            "runs": self.runs,
            "checkpoints": self.checkpoints,
            "keys": self.keys,
            "problems": [
                {"segment": p.segment, "line": p.line, "seq": p.seq, "checkpoint": p.checkpoint,
                 "message": p.message}
                for p in self.problems
            ],
        }  # fmt: skip


MAX_PROBLEMS: Final = 100


def _check_entry(raw: bytes, expected_seq: int, prev: str) -> tuple[int, str, str, str | None]:
    """(seq, hash, run_id, problem or None) of one line."""
    cut = raw.find(_HASH_KEY)
    if cut < 0 or raw[cut + 73 : cut + 75] != b'",':
        return expected_seq, prev, "", "not an entry (no hash field)"
    stored = raw[cut + 9 : cut + 73].decode("ascii", "replace")
    if _sha256(raw[: cut + 1] + raw[cut + 75 :]) != stored:
        return expected_seq, stored, "", "hash does not match the entry's content (edited)"
    # the hash covers the bytes, so the fields can be read by position (a quote inside a value
    # is always escaped, so these keys cannot appear inside one)
    rest = cut + 75
    at_prev = raw.find(b',"prev_hash":"', rest - 1)
    at_run = raw.find(b',"run_id":"', rest)
    at_seq = raw.find(b',"seq":', rest)
    end_seq = raw.find(b",", at_seq + 7)
    try:
        seq: int | None = int(raw[at_seq + 7 : end_seq]) if min(at_seq, end_seq) > 0 else None
    except ValueError:
        seq = None
    prev_hash = raw[at_prev + 14 : at_prev + 78].decode("ascii", "replace") if at_prev > 0 else ""
    run_id = raw[at_run + 11 : raw.find(b'"', at_run + 11)].decode("utf-8", "replace")
    problem = None
    if not isinstance(seq, int):
        seq, problem = expected_seq, "seq is not an integer"
    elif seq != expected_seq:
        what = "missing entries or reordered" if seq > expected_seq else "inserted or reordered"
        problem = f"seq {seq} where {expected_seq} was expected ({what})"
    elif prev_hash != prev:
        problem = "prev_hash does not link to the previous entry"
    return seq, stored, run_id, problem


def verify(directory: Path, pinned: Mapping[str, str]) -> Verification:
    """Check the whole log under `directory` against `pinned` public keys (key id → public key
    text). See the module docstring for what is checked."""
    manifest = directory / MANIFEST
    log_id = json.loads(manifest.read_text("utf-8"))["log_id"] if manifest.exists() else None
    result = Verification(log_id=log_id)
    problems = result.problems
    try:
        checkpoints = _read_jsonl(directory / CHECKPOINTS)
    except ValueError:
        checkpoints = []
        problems.append(Problem("checkpoints.jsonl is not valid JSON lines"))
    ends = {cp.get("last_seq") for cp in checkpoints} | {cp.get("first_seq") for cp in checkpoints}
    expected, prev = 0, GENESIS
    # run id and hash of the entries checkpoints start or end at, by seq
    runs: dict[int, str] = {}
    heads: dict[int, str] = {}
    run_ids: set[str] = set()
    segments = segments_of(directory)
    result.segments = len(segments)
    for path in segments:
        try:
            with open_segment(path) as fh:
                for number, raw in enumerate(fh, start=1):
                    seq, digest, run_id, problem = _check_entry(raw.rstrip(b"\n"), expected, prev)
                    if problem is not None and len(problems) < MAX_PROBLEMS:
                        problems.append(Problem(problem, path.name, number, seq))
                    if seq in ends:
                        runs[seq] = run_id
                        heads[seq] = digest
                    run_ids.add(run_id)
                    expected, prev = seq + 1, digest
                    result.entries += 1
        except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
            problems.append(
                Problem(f"unreadable ({type(exc).__name__}): cut or damaged", path.name)
            )
    _check_checkpoints(checkpoints, pinned, result, runs, heads=heads, last_seq=expected - 1)
    result.runs = len(run_ids - {""})
    return result


def _check_checkpoints(
    checkpoints: list[dict[str, Any]],
    pinned: Mapping[str, str],
    result: Verification,
    runs: Mapping[int, str],
    *,
    heads: Mapping[int, str],
    last_seq: int,
) -> None:
    problems = result.problems
    result.checkpoints = len(checkpoints)
    covered = 0
    keys = set()
    for index, cp in enumerate(checkpoints):
        key_id = str(cp.get("key_id"))
        keys.add(key_id)
        body = {k: v for k, v in cp.items() if k != "signature"}
        if key_id not in pinned:
            problems.append(
                Problem(f"signed with key {key_id}, which is not pinned", checkpoint=index)
            )
        elif public_key_id(pinned[key_id]) != key_id or not signature_valid(
            pinned[key_id], canonical(body).encode("utf-8"), str(cp.get("signature"))
        ):
            problems.append(Problem("signature is not valid (forged or edited)", checkpoint=index))
        first, last = cp.get("first_seq"), cp.get("last_seq")
        if not isinstance(first, int) or not isinstance(last, int):
            problems.append(Problem("first_seq/last_seq missing", checkpoint=index))
            continue
        if first != covered:
            problems.append(
                Problem(
                    f"covers seq {first}..{last} but seq {covered} comes next "
                    "(a checkpoint is missing or out of order)",
                    checkpoint=index,
                )
            )
        if cp.get("entries") != last - first + 1:
            problems.append(Problem("entry count does not match its seq range", checkpoint=index))
        if cp.get("log_id") != result.log_id:
            problems.append(Problem("belongs to another log", checkpoint=index))
        if last > last_seq:
            problems.append(
                Problem(
                    f"ends at seq {last} but the log ends at seq {last_seq} (truncated)",
                    checkpoint=index,
                    seq=last_seq,
                )
            )
        elif heads.get(last) != cp.get("head_hash"):
            problems.append(
                Problem(
                    "head hash differs from the log's entry (rewritten)", checkpoint=index, seq=last
                )
            )
        elif runs.get(first) != cp.get("run_id") or runs.get(last) != cp.get("run_id"):
            problems.append(
                Problem("run id differs from its entries'", checkpoint=index, seq=first)
            )
        covered = max(covered, last + 1)
    if covered <= last_seq:
        problems.append(
            Problem(
                f"entries seq {covered}..{last_seq} are covered by no checkpoint (a run did "
                "not finish, or its checkpoint was deleted)",
                seq=covered,
            )
        )
    result.keys = sorted(keys)


def pinned_keys(public_keys: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    """key id → public key, from pinned public key texts (a mapping's keys are ignored, its
    values used: the id is always derived, so a wrong id in a config cannot pin anything)."""
    values = public_keys.values() if isinstance(public_keys, Mapping) else public_keys
    return {public_key_id(v): v for v in values}
