"""Quality and cost of identity resolution, measured on synthetic data with ground truth.

For each size (people), `profiles.synth.generate` writes a data set; every source is read with
`profiles.ingest.read_source` and run through `profiles.identifiers.IdentifierStage` with a
fixed public benchmark key; the accepted rows go to `profiles.identity.resolve` with the data
set's own `identity` config, and the profiles are compared with `data/truth.csv` (only
accepted rows count: quarantined rows never reach resolution). Data sets and stage outputs are
cached under the system temp directory, keyed by the generator's and the stage's source.

Reported, all from contingency tables (pairs are counted as n(n-1)/2 per cell, never
enumerated):

* pairwise precision and recall of "same person";
* recall of the pairs *linkable in principle*: same person, and connected through a chain of
  shared accepted identifiers with no guardrail at all (components computed here with scipy,
  independently of the code under test);
* where same-person pairs are lost: not linkable because a record of the pair's parts had a
  rejected identifier (an approximation of "would be linkable had it been valid"), not
  linkable with no such excuse (no shared identifier), and linkable but not linked
  (guardrails), the latter attributed by lifting one guardrail at a time;
* a sweep of cardinality limits around the defaults, on one size;
* guardrail counts and the distribution of records per profile;
* time and memory of `resolve` at about 1M input rows (first night, and a second night on
  the same rows in another order with the first night's state), each night in a fresh
  subprocess: RSS with the input loaded, peak RSS during `resolve` (the peak is reset just
  before it), and the difference.

Run: `.venv/bin/python bench/identity_quality.py` (sizes 2k, 10k, 50k people and the 1M-row
timing; `--sizes`, `--timing-people 0` to skip the timing, `--sweep-people`).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import inspect
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from rich.console import Console
from rich.table import Table
from scipy.sparse import coo_matrix  # type: ignore[import-untyped]
from scipy.sparse.csgraph import connected_components  # type: ignore[import-untyped]

import profiles.identifiers
import profiles.synth
from profiles.config import CardinalityLimit, IdentityConfig, RunConfig, load_run_config
from profiles.hashing import Key, Pseudonymiser
from profiles.identifiers import IdentifierStage, pseudonymise_values
from profiles.identity import (
    KINDS,
    SIZE_BINS,
    PreviousIdentity,
    Resolution,
    pseudonym_column,
    resolve,
)
from profiles.ingest import read_source
from profiles.synth import generate
from profiles.types import IdentifierKind

VERSION = hashlib.sha256(
    Path(profiles.synth.__file__).read_bytes() + Path(profiles.identifiers.__file__).read_bytes()
).hexdigest()[:12]
CACHE = Path(tempfile.gettempdir()) / "enrich-bench-identity" / VERSION
SEED = 7
# A fixed, public benchmark key: the data are synthetic, and digests only need to be equal.
BENCH_KEY = Key.from_secret(b"bench/identity: not a secret at all")
RECORD_COLUMNS = ["source", "line", "key_id", *(pseudonym_column(k) for k in KINDS)]
REASON_COLUMNS = [f"{k}_reason" for k in KINDS]
EMAIL, PHONE, CID = IdentifierKind.EMAIL, IdentifierKind.PHONE, IdentifierKind.CUSTOMER_ID
Blocked = Mapping[IdentifierKind, frozenset[str]]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ObjArray = npt.NDArray[np.object_]


def _prepare(people: int, night: int = 1) -> Path:
    """Directory with the synthetic data set of `people` persons (as of `night`) and its
    stage output."""
    out = CACHE / (f"synth-{people}-seed{SEED}" + ("" if night == 1 else f"-night{night}"))
    done = out / ".complete"
    if done.exists():
        return out
    print(f"{people:,} people: generating and identifying under {out} ...", file=sys.stderr)
    if night == 1:
        generate(people, out, seed=SEED)
    else:
        generate(people, out, seed=SEED, night=night)  # type: ignore[call-arg,unused-ignore]
    config = load_run_config(out / "enrich.yaml")
    frames = []
    with IdentifierStage(config.identifiers, Pseudonymiser(BENCH_KEY)) as stage:
        for source in config.sources:
            for chunk in read_source(source, config.performance.chunk_rows):
                frame = stage.process(chunk.frame, source)
                frame.insert(0, "source", source.name)
                frames.append(frame[[*RECORD_COLUMNS, *REASON_COLUMNS, "row_reason"]])
    pd.concat(frames, ignore_index=True).to_parquet(out / "stage.parquet")
    done.write_text("ok")
    return out


@dataclass(frozen=True)
class DataSet:
    """One prepared size: config, accepted records with truth, and what the stage rejected."""

    people: int
    config: RunConfig
    blocked: Blocked
    records: pd.DataFrame
    """Accepted rows: the resolution input columns."""
    person: IntArray
    """True person (code) of each accepted row."""
    person_ids: ObjArray
    """True person id of each accepted row."""
    rejected_field: BoolArray
    """The accepted row had an identifier field rejected by the stage."""
    quarantined: int


def _load(people: int, out: Path | None = None) -> DataSet:
    """The data set of `people` persons (prepared under `out` if given)."""
    out = out or _prepare(people)
    config = load_run_config(out / "enrich.yaml")
    stage = pd.read_parquet(out / "stage.parquet")
    accepted = stage[stage["row_reason"].isna()].reset_index(drop=True)
    truth = pd.read_csv(out / "data" / "truth.csv", usecols=["source", "line", "person_id"])
    truth["source"] = truth["source"].astype(str)
    joined = (
        accepted[["source", "line"]]
        .astype({"source": str})
        .merge(truth, on=["source", "line"], how="left", validate="one_to_one")
    )
    if joined["person_id"].isna().any():
        raise SystemExit("truth.csv has no row for some accepted records")
    blocked = pseudonymise_values(
        config.identity.block,
        config.identifiers,
        Pseudonymiser(BENCH_KEY),
        what="identity.block",
    )
    return DataSet(
        people=people,
        config=config,
        blocked=blocked,
        records=accepted[RECORD_COLUMNS],
        person=pd.factorize(joined["person_id"])[0].astype(np.int64),
        person_ids=joined["person_id"].to_numpy(dtype=object),
        rejected_field=accepted[REASON_COLUMNS].notna().any(axis=1).to_numpy(),
        quarantined=len(stage) - len(accepted),
    )


def _raw_components(records: pd.DataFrame) -> IntArray:
    """Components of records over every shared accepted identifier: no guardrails at all."""
    n = len(records)
    rows, cols, offset = [], [], n
    for kind in KINDS:
        keys = records["key_id"].astype(str) + "\x1f" + records[pseudonym_column(kind)]
        codes, uniques = pd.factorize(keys)
        present = np.flatnonzero(codes >= 0)
        rows.append(present)
        cols.append(codes[present] + offset)
        offset += len(uniques)
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(offset, offset))
    return np.asarray(connected_components(graph.tocsr(), directed=False)[1][:n], np.int64)


def _pairs(*keys: IntArray) -> int:
    """Pairs of records equal on all `keys`: sum of n(n-1)/2 over the cells."""
    sizes = pd.DataFrame({str(i): k for i, k in enumerate(keys)}).value_counts().to_numpy()
    return int((sizes * (sizes - 1) // 2).sum())


@dataclass(frozen=True)
class Quality:
    """Pair counts of one resolution against the truth."""

    true_pairs: int
    predicted_pairs: int
    correct_pairs: int
    linkable_pairs: int

    @property
    def precision(self) -> float:
        return self.correct_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.correct_pairs / self.true_pairs if self.true_pairs else 1.0

    @property
    def recall_linkable(self) -> float:
        return self.correct_pairs / self.linkable_pairs if self.linkable_pairs else 1.0

    @property
    def false_pairs(self) -> int:
        return self.predicted_pairs - self.correct_pairs


def _quality(data: DataSet, raw: IntArray, result: Resolution) -> Quality:
    profile = pd.factorize(result.links["profile_id"])[0].astype(np.int64)
    return Quality(
        true_pairs=_pairs(data.person),
        predicted_pairs=_pairs(profile),
        correct_pairs=_pairs(profile, data.person),
        linkable_pairs=_pairs(raw, data.person),
    )


def _unlinkable_split(data: DataSet, raw: IntArray) -> tuple[int, int]:
    """Same-person pairs in different raw components: (with a rejected identifier in one of
    the two parts, without). Per person, pairs across parts are (S² - Σn²)/2."""
    cells = (
        pd.DataFrame({"p": data.person, "c": raw, "bad": data.rejected_field})
        .groupby(["p", "c"])
        .agg(n=("bad", "size"), bad=("bad", "any"))
        .reset_index()
    )
    cells["n2"] = cells["n"] ** 2
    cells["good_n"] = np.where(cells["bad"], 0, cells["n"])
    cells["good_n2"] = cells["good_n"] ** 2
    per = cells.groupby("p")[["n", "n2", "good_n", "good_n2"]].sum()
    across = int(((per["n"] ** 2 - per["n2"]) // 2).sum())
    across_clean = int(((per["good_n"] ** 2 - per["good_n2"]) // 2).sum())
    return across - across_clean, across_clean


@dataclass(frozen=True)
class Variant:
    """A way to run resolution: the data set's config with something changed."""

    name: str
    identity: Callable[[IdentityConfig], IdentityConfig]
    trust_unverified: bool = False
    ignore_blocklist: bool = False


def _same(config: IdentityConfig) -> IdentityConfig:
    return config


def _with(**changes: Any) -> Callable[[IdentityConfig], IdentityConfig]:
    def change(config: IdentityConfig) -> IdentityConfig:
        return config.model_copy(update=changes)

    return change


def _limit(kind: IdentifierKind, other: IdentifierKind, new: int | None) -> Variant:
    def change(config: IdentityConfig) -> IdentityConfig:
        limits = [x for x in config.limits if (x.kind, x.other) != (kind, other)]
        if new is not None:
            limits.append(CardinalityLimit(kind=kind, other=other, max=new))
        return config.model_copy(update={"limits": limits})

    return Variant(f"{kind}>{other} " + (f"max {new}" if new is not None else "off"), change)


AS_CONFIGURED = Variant("as configured", _same)
ABLATIONS = [
    Variant("no blocklist", _same, ignore_blocklist=True),
    Variant("no cardinality limits", _with(limits=[])),
    Variant("unverified trusted", _same, trust_unverified=True),
    Variant("no unique namespaces", _with(unique_namespaces=[])),
    Variant(
        "no guardrails",
        _with(limits=[], unique_namespaces=[]),
        trust_unverified=True,
        ignore_blocklist=True,
    ),
]


def _sweep(defaults: IdentityConfig) -> list[Variant]:
    variants = []
    for limit in defaults.limits:
        for new in sorted({1, 2, limit.max - 1, limit.max + 1, limit.max * 2} - {0, limit.max}):
            variants.append(_limit(limit.kind, limit.other, new))
        variants.append(_limit(limit.kind, limit.other, None))
    return variants


def _run(
    data: DataSet, variant: Variant, previous: PreviousIdentity | None = None
) -> tuple[Resolution, float]:
    sources = data.config.sources
    if variant.trust_unverified:
        sources = [s.model_copy(update={"unverified": []}) for s in sources]
    blocked = {} if variant.ignore_blocklist else data.blocked
    identity = variant.identity(data.config.identity)
    started = time.perf_counter()
    result = resolve(data.records, sources, identity, blocked, previous or PreviousIdentity.empty())
    return result, time.perf_counter() - started


def _previous_of(result: Resolution) -> PreviousIdentity:
    """The state a store would hand the next night after saving `result` (first night)."""
    identifiers = result.identifiers.dropna(subset=["profile_id"])
    return PreviousIdentity(
        identifiers=identifiers[["kind", "key_id", "pseudonym", "profile_id"]],
        profiles=pd.DataFrame(
            {
                "profile_id": result.new_profiles["profile_id"],
                "created_seq": np.arange(len(result.new_profiles), dtype=np.int64),
                "status": "active",
                "merged_into": None,
            }
        ),
    )


def _memory_mb(field: str) -> float:
    """A memory field of this process from /proc/self/status (VmRSS, VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs), so the peak after
    `resolve` is its own and not the input loading's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        print("cannot reset the peak RSS: it includes loading", file=sys.stderr)


def _timing_child(people: int, out: Path, night: int) -> None:
    """Time one night of `resolve` in this (fresh) process; print JSON on stdout.

    The first night saves its state next to the data set; the second reads it and the same
    rows in another order.
    """
    # only what a flow would hold: the accepted records (no truth, no reasons)
    stage = pd.read_parquet(out / "stage.parquet", columns=[*RECORD_COLUMNS, "row_reason"])
    accepted = stage[stage["row_reason"].isna()][RECORD_COLUMNS].reset_index(drop=True)
    del stage
    config = load_run_config(out / "enrich.yaml")
    data = DataSet(
        people=people,
        config=config,
        blocked=pseudonymise_values(
            config.identity.block,
            config.identifiers,
            Pseudonymiser(BENCH_KEY),
            what="identity.block",
        ),
        records=accepted,
        person=np.empty(0, np.int64),
        person_ids=np.empty(0, dtype=object),
        rejected_field=np.empty(0, bool),
        quarantined=0,
    )
    state = out / "state"
    previous = PreviousIdentity.empty()
    if night == 2:
        previous = PreviousIdentity(
            identifiers=pd.read_parquet(state / "identifiers.parquet"),
            profiles=pd.read_parquet(state / "profiles.parquet"),
        )
        records = data.records.sample(frac=1.0, random_state=1).reset_index(drop=True)
        data = replace(data, records=records)
    gc.collect()
    _reset_peak_rss()
    baseline = _memory_mb("VmRSS")
    result, seconds = _run(data, AS_CONFIGURED, previous)
    peak = _memory_mb("VmHWM")
    if night == 1:
        saved = _previous_of(result)
        state.mkdir(exist_ok=True)
        saved.identifiers.to_parquet(state / "identifiers.parquet")
        saved.profiles.to_parquet(state / "profiles.parquet")
    report = {
        "rows": len(data.records),
        "seconds": seconds,
        "baseline_mb": baseline,
        "peak_mb": peak,
        "profiles": result.stats["profiles"],
        "new": result.stats["profiles_new"],
        "events": len(result.events),
    }
    print(json.dumps(report))


class _State:
    """The identity part of a state store between nights, reduced to what `resolve` reads."""

    def __init__(self) -> None:
        empty = PreviousIdentity.empty()
        self.identifiers, self.profiles = empty.identifiers, empty.profiles

    def previous(self) -> PreviousIdentity:
        return PreviousIdentity(identifiers=self.identifiers, profiles=self.profiles)

    def commit(self, result: Resolution) -> None:
        """Save a night: new profiles, merged ones, and the identifiers seen tonight."""
        merged = dict(zip(result.merged["profile_id"], result.merged["merged_into"], strict=True))
        profiles = self.profiles.copy()
        absorbed = profiles["profile_id"].isin(list(merged))
        profiles.loc[absorbed, "status"] = "merged"
        profiles.loc[absorbed, "merged_into"] = profiles.loc[absorbed, "profile_id"].map(merged)
        first = len(profiles)
        new = pd.DataFrame(
            {
                "profile_id": result.new_profiles["profile_id"],
                "created_seq": np.arange(first, first + len(result.new_profiles), dtype=np.int64),
                "status": "active",
                "merged_into": pd.Series([None] * len(result.new_profiles), dtype="str"),
            }
        )
        self.profiles = pd.concat([profiles, new], ignore_index=True) if first else new
        key = ["kind", "key_id", "pseudonym"]
        tonight = result.identifiers.dropna(subset=["profile_id"])[[*key, "profile_id"]]
        old = self.identifiers.copy()
        old["profile_id"] = old["profile_id"].replace(merged)
        unseen = old.merge(tonight[key], on=key, how="left", indicator=True)
        unseen = unseen[unseen["_merge"] == "left_only"].drop(columns="_merge")
        self.identifiers = pd.concat([unseen, tonight], ignore_index=True)


def _main_ids(data: DataSet, result: Resolution) -> pd.Series:
    """Each true person's main profile id: the one holding most of their records."""
    frame = pd.DataFrame({"person": data.person_ids, "profile": result.links["profile_id"]})
    counts = frame.value_counts().rename("n").reset_index()
    counts = counts.sort_values(["person", "n", "profile"], ascending=[True, False, True])
    return counts.drop_duplicates("person").set_index("person")["profile"]


def _nights_report(people: int, nights: int, console: Console) -> None:
    """Consecutive nights of the generator, resolved with the state carried over."""
    if "night" not in inspect.signature(generate).parameters:
        console.print("(this generator writes one night only: no multi-night table)")
        return
    table = _table(
        f"Consecutive nights ({people:,} people at first; state carried from night to night)",
        [
            *("night", "accepted", "precision", "recall linkable", "profiles", "new"),
            *("kept", "merges", "splits", "persons: same main id", "untouched persons: same"),
            "resolve s",
        ],
    )
    state = _State()
    before: pd.Series | None = None
    for night in range(1, nights + 1):
        out = _prepare(people, night)
        data = _load(people, out)
        raw = _raw_components(data.records)
        result, seconds = _run(data, AS_CONFIGURED, state.previous())
        state.commit(result)
        q = _quality(data, raw, result)
        main = _main_ids(data, result)
        same = untouched = "-"
        if before is not None:
            both = before.index.intersection(main.index)
            kept = before[both] == main[both]
            same = f"{kept.mean():.2%} of {len(both):,}"
            changes = pd.read_csv(out / "data" / "changes.csv")
            changed = set(changes.loc[changes["night"] == night, "person_id"])
            calm = [p for p in both if p not in changed]
            untouched = f"{kept[calm].mean():.2%} of {len(calm):,}"
        before = main
        stats = result.stats
        table.add_row(
            str(night),
            f"{len(data.records):,}",
            _pct(q.precision),
            _pct(q.recall_linkable),
            f"{stats['profiles']:,}",
            f"{stats['profiles_new']:,}",
            f"{stats['profiles_kept']:,}",
            f"{stats['merges']:,}",
            f"{stats['splits']:,}",
            same,
            untouched,
            f"{seconds:.2f}",
        )
    console.print(table)


def _timing(people: int, out: Path, night: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--timing-child", str(people), "--data-dir", str(out)]
    command += ["--night", str(night)]
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def _pct(x: float) -> str:
    return f"{x:.4f}"


def _table(title: str, columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right")
    return table


class _Report:
    """The per-size tables, filled one data set at a time."""

    def __init__(self) -> None:
        self.quality = _table(
            "Identity resolution vs truth (synthetic data, seed 7, default guardrails)",
            [
                *("people", "rows in", "quarantined", "accepted", "persons", "profiles"),
                *("precision", "recall", "recall linkable", "false pairs", "resolve s"),
            ],
        )
        self.lost = _table(
            "Same-person pairs (accepted rows) and where they are lost",
            [
                *("people", "true pairs", "linked"),
                *("not linkable: rejected identifier (approx.)", "not linkable: no shared id"),
                "linkable, not linked (guardrails)",
            ],
        )
        self.ablation = _table(
            "Guardrails lifted one at a time: linkable pairs recovered and false pairs added",
            [
                *("people", "variant", "precision", "recall linkable"),
                *("pairs recovered", "false pairs added", "values not bridging"),
            ],
        )
        self.counts = _table(
            "Guardrail counts (distinct values; attach: records)",
            [
                *("people", "blocked", "shared", "unverified", "conflict direct"),
                *("conflict transitive", "components cut", "ambiguous attach"),
            ],
        )
        self.distribution = _table(
            "Records per profile (profiles per bin); truth = records per true person",
            ["people", "", *(name for name, _, _ in SIZE_BINS), "largest"],
        )

    def add(self, people: int) -> None:
        data = _load(people)
        raw = _raw_components(data.records)
        result, seconds = _run(data, AS_CONFIGURED)
        q = _quality(data, raw, result)
        self.quality.add_row(
            f"{people:,}",
            f"{len(data.records) + data.quarantined:,}",
            f"{data.quarantined:,}",
            f"{len(data.records):,}",
            f"{len(np.unique(data.person)):,}",
            f"{result.stats['profiles']:,}",
            _pct(q.precision),
            _pct(q.recall),
            _pct(q.recall_linkable),
            f"{q.false_pairs:,}",
            f"{seconds:.2f}",
        )
        invalid, no_shared = _unlinkable_split(data, raw)
        guarded = q.linkable_pairs - q.correct_pairs
        self.lost.add_row(
            f"{people:,}",
            f"{q.true_pairs:,}",
            f"{q.correct_pairs:,} ({q.recall:.2%})",
            f"{invalid:,} ({invalid / q.true_pairs:.2%})",
            f"{no_shared:,} ({no_shared / q.true_pairs:.2%})",
            f"{guarded:,} ({guarded / q.true_pairs:.2%})",
        )
        stats = {**result.stats["blocked"], **result.stats["conflicts"]}
        self.counts.add_row(
            f"{people:,}",
            f"{stats['blocked_value']:,}",
            ", ".join(f"{k} {v:,}" for k, v in stats["shared"].items()),
            f"{stats['unverified']:,}",
            f"{stats['unique_conflict_direct']:,}",
            f"{stats['unique_conflict_transitive']:,}",
            f"{stats['conflict_components_cut']:,}",
            f"{stats['ambiguous_attach']:,}",
        )
        self._ablation(people, data, raw, result, q)
        self._distribution(people, data, result)

    def _ablation(
        self, people: int, data: DataSet, raw: IntArray, result: Resolution, q: Quality
    ) -> None:
        held = int((result.identifiers["role"] != "bridge").sum())
        self.ablation.add_row(
            f"{people:,}", AS_CONFIGURED.name, _pct(q.precision), _pct(q.recall_linkable),
            "", "", f"{held:,}",
        )  # fmt: skip
        for variant in ABLATIONS:
            other, _ = _run(data, variant)
            o = _quality(data, raw, other)
            if variant.name == "no guardrails" and o.correct_pairs != q.linkable_pairs:
                raise SystemExit("no-guardrail resolution differs from the raw components")
            self.ablation.add_row(
                "",
                variant.name,
                _pct(o.precision),
                _pct(o.recall_linkable),
                f"{o.correct_pairs - q.correct_pairs:+,}",
                f"{o.false_pairs - q.false_pairs:+,}",
                f"{int((other.identifiers['role'] != 'bridge').sum()):,}",
            )
        self.ablation.add_section()

    def _distribution(self, people: int, data: DataSet, result: Resolution) -> None:
        found = np.bincount(pd.factorize(result.links["profile_id"])[0])
        for label, sizes in (("profiles", found), ("truth", np.bincount(data.person))):
            row = [int(((sizes >= lo) & (sizes <= hi)).sum()) for _, lo, hi in SIZE_BINS]
            top = ", ".join(str(int(x)) for x in np.sort(sizes)[::-1][:5])
            first = f"{people:,}" if label == "profiles" else ""
            self.distribution.add_row(first, label, *(f"{x:,}" for x in row), top)

    def print(self, console: Console) -> None:
        for table in (self.quality, self.lost, self.ablation, self.counts, self.distribution):
            console.print(table)


def _sweep_report(people: int, console: Console) -> None:
    data = _load(people)
    raw = _raw_components(data.records)
    base = _quality(data, raw, _run(data, AS_CONFIGURED)[0])
    sweep = _table(
        f"Cardinality limits around the defaults ({people:,} people; default precision "
        f"{base.precision:.4f}, recall linkable {base.recall_linkable:.4f})",
        ["limit", "precision", "recall linkable", "Δ correct pairs", "Δ false pairs"],
    )
    for variant in _sweep(data.config.identity):
        o = _quality(data, raw, _run(data, variant)[0])
        sweep.add_row(
            variant.name,
            _pct(o.precision),
            _pct(o.recall_linkable),
            f"{o.correct_pairs - base.correct_pairs:+,}",
            f"{o.false_pairs - base.false_pairs:+,}",
        )
    console.print(sweep)


def _timing_report(people: int, console: Console) -> None:
    out = _prepare(people)
    timing = _table(
        f"Cost of resolve() ({people:,} people, 2 cores; a fresh process per night)",
        [
            *("night", "rows", "seconds", "rows/s", "RSS before MB", "peak RSS MB", "+MB"),
            *("profiles", "new", "events"),
        ],
    )
    for night in (1, 2):
        t = _timing(people, out, night)
        timing.add_row(
            "first (empty state)" if night == 1 else "second (same rows, shuffled)",
            f"{t['rows']:,}",
            f"{t['seconds']:.2f}",
            f"{t['rows'] / t['seconds']:,.0f}",
            f"{t['baseline_mb']:,.0f}",
            f"{t['peak_mb']:,.0f}",
            f"{t['peak_mb'] - t['baseline_mb']:,.0f}",
            f"{t['profiles']:,}",
            f"{t['new']:,}",
            f"{t['events']:,}",
        )
    console.print(timing)


def main() -> None:
    """Parse flags; either time one night (internal) or run the whole benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="2000,10000,50000", help="people per data set")
    parser.add_argument("--sweep-people", type=int, default=10_000, help="0: no limit sweep")
    parser.add_argument(
        "--timing-people", type=int, default=90_000, help="about 1M rows; 0: no timing"
    )
    parser.add_argument("--nights", type=int, default=4, help="consecutive nights; 0: none")
    parser.add_argument("--nights-people", type=int, default=10_000)
    parser.add_argument("--timing-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--night", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.timing_child:
        _timing_child(args.timing_child, Path(args.data_dir), args.night)
        return
    console = Console(width=160)
    report = _Report()
    for people in [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]:
        report.add(people)
    report.print(console)
    if args.sweep_people:
        _sweep_report(args.sweep_people, console)
    if args.nights:
        _nights_report(args.nights_people, args.nights, console)
    if args.timing_people:
        _timing_report(args.timing_people, console)


if __name__ == "__main__":
    main()
