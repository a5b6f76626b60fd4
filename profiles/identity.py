"""Identity resolution: one night's accepted records → profiles whose ids are stable across runs.

The graph
---------
Nodes are records and identifier values; a value is `(kind, key_id, pseudonym)`, so digests
made with different keys never meet. A record is linked to each of its values. Profiles are
the connected components of records over the values that may *bridge*; every other value is
given a role that says why it may not, and each guardrail is counted in `Resolution.stats`:

1. ``blocked``: a pseudonym of `identity.block` is ignored as if the field were empty.
2. ``shared``: a value of `limit.kind` that co-occurs (in one record) with more than
   `limit.max` distinct values of `limit.other` (a household phone, a shop counter email);
   customer ids are counted per namespace, since one person holds an id in each system.
3. ``unverified``: a value seen only in rows of sources that list its kind as unverified.
4. ``conflict``: unique namespaces (`identity.unique_namespaces`) hold one customer id per
   person; a record's id in one of them (whatever its own role) is that record's *label*.
   A value that co-occurs directly with two labels of one namespace is a conflict (a
   household email on two CRM contacts). Transitive conflicts (A-email-B-phone-C, with
   different CRM ids on A and C) are cut: inside each component that still holds two ids of
   one unique namespace, bridging values are added back strongest first (unique-namespace
   ids, other customer ids, emails, phones; within a kind, values with fewer distinct
   neighbouring values first, then values on more records, then the value itself), and a
   value whose union would put two ids of one unique namespace together is a conflict.
   Every component is cut this way on its own; the cut is greedy, not a minimum cut, and it
   is the same whatever the row order.

Roles are checked in this order, and a value gets the first that applies: blocked, shared,
unverified, conflict, bridge. Counts in `stats` are distinct values per role.

A record with no bridging value *attaches*: if the values it has (of any role but blocked)
are carried by records of exactly one profile (records that have a bridging value), it joins
that profile; if they point to no profile, or to several (counted as `ambiguous_attach`), it
is a profile of its own. Two records that share only non-bridging values are never joined to
each other. An attachment that would give a profile a second label of one namespace is
refused (`attach_refused_unique`).

A value belongs to a profile (`Resolution.identifiers.profile_id`) when every record that
carries it ended in that one profile, whatever its role; otherwise (and when blocked) it
belongs to none. These are the values the next night finds the profile by.

Guarantees: the partition and every profile id depend only on the content of the records,
never on their order (records are ranked by source, line and values before anything is
decided); no profile holds two different ids of one unique namespace; every input record is
in exactly one profile.

Stable ids
----------
Tonight's profiles meet the previous night's through shared values: the part of a previous
profile in one of tonight's is its values that tonight belong to that profile alone, and the
records carrying them (a value now spread over several profiles does not count). Each
previous profile seen tonight has one *heir*: the profile holding the largest part of it
(most records, then most values, then the earliest profile in record order).
A profile that is heir of previous profiles keeps the oldest of them (lowest `created_seq`,
then id); the others are merged into it (`merge` events). A profile holding values of a
previous profile whose heir it is not was split off that profile (a `split` event naming the
old id). A profile that is heir of nothing gets a new id, ``"P" + sha256("profile:" + seed)``
in upper-case hex (16 digits), where the seed is its smallest value
``kind:key_id:pseudonym``; on a collision with any previous id or an id given out tonight,
``#1``, ``#2``, ... is appended to the seed. So the same input with the same previous state
gives the same ids, and two first nights on the same input give the same ids.
Previous identifiers still listed under a profile that is no longer active count for the
active profile it was merged into (following `merged_into`), so a merged id never returns.
Identifiers are matched on (kind, key_id, pseudonym): after a key rotation nothing matches.

Profiles without a value of their own (a record whose only values are shared with several
profiles, or all blocked) cannot be found again through identifiers; their seed is the
record's smallest value (or its source and line), and a new id that equals an active previous
profile without identifiers that nobody claimed tonight is taken over instead of avoided, so
these profiles keep their ids from night to night as well.

Cost: vectorised numpy/pandas and one `scipy.sparse.csgraph.connected_components` over
records and values; only components with a unique-namespace conflict go through the Python
union-find. About 1M records resolve in a few seconds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
from scipy.sparse import coo_matrix  # type: ignore[import-untyped]
from scipy.sparse.csgraph import connected_components  # type: ignore[import-untyped]

from profiles.config import IdentityConfig, SourceConfig
from profiles.types import IdentifierKind

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ObjArray = npt.NDArray[np.object_]

SOURCE: Final = "source"
LINE: Final = "line"
KEY_ID: Final = "key_id"
KIND: Final = "kind"
PSEUDONYM: Final = "pseudonym"
PROFILE_ID: Final = "profile_id"
ROLE: Final = "role"
STATUS_ACTIVE: Final = "active"
"""`previous.profiles.status` of a profile in use (any other status: merged or retired)."""

KINDS: Final[tuple[IdentifierKind, ...]] = tuple(sorted(IdentifierKind, key=str))
"""Identifier kinds in the order of their names: the canonical order of values."""

SIZE_BINS: Final[tuple[tuple[str, int, int], ...]] = (
    ("1", 1, 1),
    ("2", 2, 2),
    ("3-5", 3, 5),
    ("6-10", 6, 10),
    ("11-20", 11, 20),
    ("21-50", 21, 50),
    ("51-100", 51, 100),
    ("101+", 101, 2**62),
)
"""Bins of the records-per-profile histogram in `Resolution.stats["cluster_sizes"]`."""


def pseudonym_column(kind: IdentifierKind) -> str:
    """Column of `records` holding the pseudonyms of `kind`."""
    return f"{kind}_pseudonym"


class Role(StrEnum):
    """What a value may do in the identity graph."""

    BRIDGE = "bridge"
    """Joins every record that carries it into one profile."""
    SHARED = "shared"
    """Over a cardinality limit: may attach a record, never joins two."""
    UNVERIFIED = "unverified"
    """Only seen in sources that do not verify its kind: may attach, never joins."""
    CONFLICT = "conflict"
    """Would put two ids of one unique namespace into one profile: may attach, never joins."""
    BLOCKED = "blocked"
    """Configured never-link value: ignored."""


class EventKind(StrEnum):
    """Profile life-cycle events of one night."""

    MERGE = "merge"
    """`profile_id` was merged into `other_profile_id` (the older one)."""
    SPLIT = "split"
    """Part of `profile_id` (the old id) split off into `other_profile_id`."""


_ROLE_NAMES: Final = np.asarray([r.value for r in Role], dtype=object)
_R_BRIDGE, _R_SHARED, _R_UNVERIFIED, _R_CONFLICT, _R_BLOCKED = range(len(Role))
_J_CID: Final = KINDS.index(IdentifierKind.CUSTOMER_ID)
_J_EMAIL: Final = KINDS.index(IdentifierKind.EMAIL)


_TEXT = pd.StringDtype("pyarrow", na_value=np.nan)


def _text(values: Any) -> pd.Series:
    """A text column as the rest of the pipeline writes them (Arrow strings, NaN missing)."""
    return pd.Series(values, dtype=_TEXT)


def _text_take(names: Any, index: IntArray) -> pd.Series:
    """`names[index]` as a text column, missing where `index` is -1.

    Taking in Arrow avoids building a million Python strings for a column of few names."""
    taken = pa.array(names, type=pa.string()).take(pa.array(index, mask=index < 0))
    return pd.Series(taken, dtype=_TEXT)


@dataclass(frozen=True)
class PreviousIdentity:
    """What the state store knew before tonight.

    `identifiers`: kind, key_id, pseudonym, profile_id of the active profiles.
    `profiles`: profile_id, created_seq (int), status (`STATUS_ACTIVE` or other), merged_into.
    """

    identifiers: pd.DataFrame
    profiles: pd.DataFrame

    @classmethod
    def empty(cls) -> PreviousIdentity:
        """The state before the first night: no profiles."""
        identifiers = pd.DataFrame(
            {KIND: _text([]), KEY_ID: _text([]), PSEUDONYM: _text([]), PROFILE_ID: _text([])}
        )
        profiles = pd.DataFrame(
            {
                PROFILE_ID: _text([]),
                "created_seq": pd.Series([], dtype="int64"),
                "status": _text([]),
                "merged_into": _text([]),
            }
        )
        return cls(identifiers=identifiers, profiles=profiles)


@dataclass(frozen=True)
class Resolution:
    """Tonight's profiles, their identifiers, and how they relate to the previous night's.

    `links`: source, line, profile_id, one row per input record in input order.
    `identifiers`: kind, key_id, pseudonym, profile_id (NaN unless all records carrying the
    value are in one profile; always NaN for blocked values), role (`Role`); one row per
    distinct value of tonight, in canonical (kind, key_id, pseudonym) order.
    `new_profiles`: profile_id of the profiles created tonight, in creation order.
    `merged`: profile_id, merged_into: previous profiles absorbed tonight.
    `events`: event (`EventKind`), profile_id, other_profile_id, detail (JSON, counts only).
    `stats`: JSON-ready counts (see `resolve`).
    """

    links: pd.DataFrame
    identifiers: pd.DataFrame
    new_profiles: pd.DataFrame
    merged: pd.DataFrame
    events: pd.DataFrame
    stats: dict[str, Any]


@dataclass
class _Values:
    """Distinct values of tonight, in canonical order, and each record's value per kind."""

    kind: npt.NDArray[np.int8]
    key_id: ObjArray
    pseudonym: ObjArray
    per_record: IntArray
    """Shape (len(KINDS), records): value index of each record's field, -1 if empty."""

    @property
    def count(self) -> int:
        return len(self.kind)

    def text(self, v: int) -> str:
        """The canonical text of value `v` (what seeds are made of)."""
        return f"{KINDS[int(self.kind[v])]}:{self.key_id[v]}:{self.pseudonym[v]}"


def _sorted_codes(column: pd.Series) -> tuple[IntArray, ObjArray]:
    """Codes (-1 for missing) of a text column, numbered in sorted order of the values."""
    codes, uniques = pd.factorize(column, sort=True, use_na_sentinel=True)
    return np.asarray(codes, dtype=np.int64), np.asarray(uniques, dtype=object)


def _encode_values(records: pd.DataFrame) -> _Values:
    """Number the distinct (kind, key_id, pseudonym) values in canonical order."""
    n = len(records)
    key_codes, key_ids = _sorted_codes(records[KEY_ID])
    per_record = np.full((len(KINDS), n), -1, dtype=np.int64)
    kinds: list[npt.NDArray[np.int8]] = []
    key_parts: list[ObjArray] = []
    pseudonym_parts: list[ObjArray] = []
    offset = 0
    for j, kind in enumerate(KINDS):
        codes, pseudonyms = _sorted_codes(records[pseudonym_column(kind)])
        present = codes >= 0
        if (present & (key_codes < 0)).any():
            raise ValueError(f"records with a {kind} pseudonym but no key_id")
        if len(key_ids) <= 1:
            local, uniq_key, uniq_pseudonym = codes, np.zeros(len(pseudonyms), np.int64), pseudonyms
        else:
            # (key_id, pseudonym) pairs, numbered in sorted order of key id, then pseudonym
            width = max(len(pseudonyms), 1)
            pair_codes, pairs = pd.factorize(key_codes[present] * width + codes[present], sort=True)
            local = np.full(n, -1, dtype=np.int64)
            local[present] = pair_codes
            uniq = np.asarray(pairs, dtype=np.int64)
            uniq_key, uniq_pseudonym = uniq // width, pseudonyms[uniq % width]
        per_record[j] = np.where(local >= 0, local + offset, -1)
        kinds.append(np.full(len(uniq_pseudonym), j, dtype=np.int8))
        key_parts.append(key_ids[uniq_key] if len(key_ids) else np.empty(0, dtype=object))
        pseudonym_parts.append(uniq_pseudonym)
        offset += len(uniq_pseudonym)
    return _Values(
        kind=np.concatenate(kinds),
        key_id=np.concatenate(key_parts).astype(object),
        pseudonym=np.concatenate(pseudonym_parts).astype(object),
        per_record=per_record,
    )


@dataclass
class _Night:
    """Tonight's records as arrays, with what the guardrails need to know about them."""

    values: _Values
    per: IntArray
    """Like `values.per_record`, with blocked values removed (-1)."""
    rank: IntArray
    """Canonical position of each record (by source, line, then values)."""
    source_codes: IntArray
    unverified: BoolArray
    """Shape (sources, len(KINDS)): the source does not verify the kind."""
    label: IntArray
    """Each record's customer id if it is in a unique namespace (value index), else -1."""
    value_ns: IntArray
    """Namespace code of each customer-id value, -1 for other kinds."""
    namespaces: int

    @property
    def n(self) -> int:
        return int(self.per.shape[1])

    @property
    def count(self) -> int:
        return self.values.count

    def edges(self, rows: BoolArray | None = None) -> tuple[IntArray, IntArray]:
        """(record, value) of every non-blocked field, optionally only of the `rows`."""
        recs, vals = [], []
        for j in range(len(KINDS)):
            ok = self.per[j] >= 0 if rows is None else rows & (self.per[j] >= 0)
            r = np.flatnonzero(ok)
            recs.append(r)
            vals.append(self.per[j][r])
        return np.concatenate(recs), np.concatenate(vals)


def _unique_pairs(a: IntArray, b: IntArray, base: int) -> tuple[IntArray, IntArray]:
    """Distinct (a, b) pairs of non-negative ints with b < base."""
    if not len(a):
        return a, b
    combined = np.asarray(pd.unique(a * base + b), dtype=np.int64)
    return combined // base, combined % base


def _night(
    records: pd.DataFrame,
    sources: Sequence[SourceConfig],
    config: IdentityConfig,
    blocked: Mapping[IdentifierKind, frozenset[str]],
) -> tuple[_Night, BoolArray]:
    """Tonight's arrays, and which values are blocked."""
    by_name = {s.name: s for s in sources}
    source_codes, source_names = _sorted_codes(records[SOURCE])
    if (source_codes < 0).any():
        raise ValueError("records with no source")
    unknown = sorted(str(s) for s in source_names if s not in by_name)
    if unknown:
        raise ValueError(f"records from unknown source(s): {', '.join(unknown)}")
    configs = [by_name[str(s)] for s in source_names]
    values = _encode_values(records)

    keys = [values.per_record[j] for j in reversed(range(len(KINDS)))]
    order = np.lexsort([*keys, np.asarray(records[LINE], dtype=np.int64), source_codes])
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))

    is_blocked = np.zeros(values.count, dtype=bool)
    for j, kind in enumerate(KINDS):
        block = blocked.get(kind)
        if block:
            mine = np.flatnonzero(values.kind == j)
            is_blocked[mine] = pd.Series(values.pseudonym[mine]).isin(block).to_numpy()
    per = values.per_record.copy()
    per[(per >= 0) & is_blocked[np.maximum(per, 0)]] = -1

    namespaces = sorted({s.namespace for s in configs})
    unique_ns = np.array([ns in config.unique_namespaces for ns in namespaces], dtype=bool)
    record_ns = np.array([namespaces.index(s.namespace) for s in configs], dtype=np.int64)[
        source_codes
    ]
    has_cid = per[_J_CID] >= 0
    value_ns = np.full(values.count, -1, dtype=np.int64)
    value_ns[per[_J_CID][has_cid]] = record_ns[has_cid]
    night = _Night(
        values=values,
        per=per,
        rank=rank,
        source_codes=source_codes,
        unverified=np.array(
            [[k in s.unverified for k in KINDS] for s in configs], dtype=bool
        ).reshape(len(configs), len(KINDS)),
        label=np.where(has_cid & unique_ns[record_ns], per[_J_CID], -1),
        value_ns=value_ns,
        namespaces=len(namespaces),
    )
    return night, is_blocked


def _shared(night: _Night, config: IdentityConfig) -> tuple[BoolArray, dict[str, int]]:
    """Values over a cardinality limit, and how many per limit."""
    per, count = night.per, night.count
    shared = np.zeros(count, dtype=bool)
    counts: dict[str, int] = {}
    for limit in config.limits:
        jk, jo = KINDS.index(limit.kind), KINDS.index(limit.other)
        both = (per[jk] >= 0) & (per[jo] >= 0)
        mine, theirs = _unique_pairs(per[jk][both], per[jo][both], max(count, 1))
        if limit.other is IdentifierKind.CUSTOMER_ID and len(mine):
            # counted per namespace: one person rightly holds an id in each system (CRM,
            # shop, preference centre), so only many ids of one system mark a shared value
            spaces = max(night.namespaces, 1)
            per_space = np.bincount(
                mine * spaces + night.value_ns[theirs], minlength=count * spaces
            )
            over = per_space.reshape(count, spaces).max(axis=1) > limit.max
        else:
            over = np.bincount(mine, minlength=count) > limit.max
        counts[f"{limit.kind}>{limit.other}"] = int(over.sum())
        shared |= over
    return shared, counts


def _verified(night: _Night) -> BoolArray:
    """Values seen in at least one row of a source that verifies their kind."""
    verified = np.zeros(night.count, dtype=bool)
    for j in range(len(KINDS)):
        ok = (night.per[j] >= 0) & ~night.unverified[night.source_codes, j]
        verified[night.per[j][ok]] = True
    return verified


def _direct_conflicts(night: _Night) -> BoolArray:
    """Values in the same record as two different ids of one unique namespace."""
    conflict = np.zeros(night.count, dtype=bool)
    labelled = night.label >= 0
    for j in range(len(KINDS)):
        both = labelled & (night.per[j] >= 0) & (night.per[j] != night.label)
        v, lab = _unique_pairs(night.per[j][both], night.label[both], max(night.count, 1))
        if len(v):
            # the (value, id) pairs are distinct: two of them in one namespace is a conflict
            per_ns = pd.Series(v * night.namespaces + night.value_ns[lab]).value_counts()
            twice = np.asarray(per_ns.index[per_ns.to_numpy() > 1], dtype=np.int64)
            conflict[twice // night.namespaces] = True
    return conflict


def _components(night: _Night, role: npt.NDArray[np.int8]) -> tuple[IntArray, IntArray, BoolArray]:
    """Bridging value of each field (-1 if none), component and core flag of each record."""
    per, n = night.per, night.n
    bridge_per = np.where((per >= 0) & (role[np.maximum(per, 0)] == _R_BRIDGE), per, -1)
    rows = np.concatenate([np.flatnonzero(bridge_per[j] >= 0) for j in range(len(KINDS))])
    cols = n + np.concatenate([bridge_per[j][bridge_per[j] >= 0] for j in range(len(KINDS))])
    size = n + night.count
    # records and values are nodes of one bipartite graph; one direction is enough
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(size, size))
    _, labels = connected_components(graph.tocsr(), directed=False)
    core = np.asarray((bridge_per >= 0).any(axis=0), dtype=bool)
    return bridge_per, np.asarray(labels[:n], dtype=np.int64), core


@dataclass
class _Cut:
    """Components after unique-namespace conflicts were cut."""

    core: BoolArray
    """Records with at least one bridging value."""
    component: IntArray
    rejected: BoolArray
    """Values that would have joined two ids of one unique namespace (transitively)."""
    components: int
    """Components that had to be cut."""
    next_label: int
    """A component label no record uses yet."""


class _UnionFind:
    """Union-find over 0..n-1 that keeps, per set, its unique-namespace id per namespace."""

    def __init__(self, labels: list[dict[int, int]]) -> None:
        self.parent = list(range(len(labels)))
        self.labels = labels

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def try_union(self, members: list[int]) -> bool:
        """Join the sets of `members` unless that puts two ids of one namespace together."""
        roots = sorted({self.find(m) for m in members})
        merged: dict[int, int] = {}
        for r in roots:
            for ns, label in self.labels[r].items():
                if merged.setdefault(ns, label) != label:
                    return False
        for r in roots[1:]:
            self.parent[r] = roots[0]
        self.labels[roots[0]] = merged
        return True


def _strength_order(night: _Night, recs: IntArray, vals: IntArray) -> list[int]:
    """Bridging values of the components to cut, strongest first (see the module docstring)."""
    frame = pd.DataFrame({"r": recs, "v": vals})
    pairs = frame.merge(frame, on="r", suffixes=("", "_n"))
    pairs = pairs[pairs["v"] != pairs["v_n"]].drop_duplicates(["v", "v_n"])
    neighbours = pairs.groupby("v").size()
    on_records = pd.Series(vals).value_counts()
    distinct = np.unique(vals)
    kind = night.values.kind[distinct].astype(np.int64)
    cid = kind == _J_CID
    unique_id = np.isin(distinct, night.label[night.label >= 0])
    kind_rank = np.select([cid & unique_id, cid, kind == _J_EMAIL], [0, 1, 2], 3)
    order = np.lexsort(
        (
            distinct,
            -on_records.reindex(distinct).to_numpy(),
            neighbours.reindex(distinct, fill_value=0).to_numpy(),
            kind_rank,
        )
    )
    return [int(v) for v in distinct[order]]


def _cut_conflicts(
    night: _Night, bridge_per: IntArray, core: BoolArray, component: IntArray
) -> _Cut:
    """Cut every component holding two ids of one unique namespace: add its bridging values
    back strongest first, rejecting each one whose union would join two such ids."""
    count = night.count
    rejected = np.zeros(count, dtype=bool)
    next_label = night.n + count
    has = core & (night.label >= 0)
    comp, lab = _unique_pairs(component[has], night.label[has], max(count, 1))
    per_ns = pd.Series(comp * night.namespaces + night.value_ns[lab]).value_counts()
    twice = np.asarray(per_ns.index[per_ns.to_numpy() > 1], dtype=np.int64)
    bad = np.unique(twice // max(night.namespaces, 1))
    if not len(bad):
        return _Cut(core, component, rejected, 0, next_label)

    members = np.flatnonzero(core & np.isin(component, bad))
    members = members[np.argsort(night.rank[members])]
    local = np.full(night.n, -1, dtype=np.int64)
    local[members] = np.arange(len(members))
    recs, vals = [], []
    for j in range(len(KINDS)):
        ok = bridge_per[j][members] >= 0
        recs.append(members[ok])
        vals.append(bridge_per[j][members][ok])
    edges_rec, edges_val = np.concatenate(recs), np.concatenate(vals)
    by_value: dict[int, list[int]] = {}
    for r, v in zip(local[edges_rec].tolist(), edges_val.tolist(), strict=True):
        by_value.setdefault(v, []).append(r)

    label = night.label
    sets = _UnionFind(
        [{int(night.value_ns[label[r]]): int(label[r])} if label[r] >= 0 else {} for r in members]
    )
    accepted = np.zeros(len(members), dtype=bool)
    for v in _strength_order(night, edges_rec, edges_val):
        group = by_value[v]
        if sets.try_union(group):
            accepted[group] = True
        else:
            rejected[v] = True

    core, component = core.copy(), component.copy()
    roots = np.array([sets.find(i) for i in range(len(members))], dtype=np.int64)
    component[members] = next_label + roots
    core[members] = accepted
    return _Cut(core, component, rejected, len(bad), next_label + len(members))


@dataclass
class _Attachments:
    target: IntArray
    """Component each record without a bridging value joins, -1 for none."""
    ambiguous: int
    refused: int


def _attach(night: _Night, cut: _Cut) -> _Attachments:
    """Where records without a bridging value go: the one profile their values reach."""
    n, count = night.n, night.count
    target = np.full(n, -1, dtype=np.int64)
    loose = ~cut.core
    if not loose.any() or not cut.core.any():
        return _Attachments(target, 0, 0)
    comp_codes, comps = pd.factorize(cut.component[cut.core])
    comp_of = np.full(n, -1, dtype=np.int64)
    comp_of[cut.core] = comp_codes
    k = len(comps)

    # the profiles each value reaches through records that are in one
    core_recs, core_vals = night.edges(cut.core)
    v, c = _unique_pairs(core_vals, comp_of[core_recs], max(k, 1))
    reach = np.bincount(v, minlength=count)
    reached = np.full(count, -1, dtype=np.int64)
    reached[v] = c

    recs, vals = night.edges(loose)
    ambiguous = np.zeros(n, dtype=bool)
    ambiguous[recs[reach[vals] > 1]] = True
    one = reach[vals] == 1
    r, t = _unique_pairs(recs[one], reached[vals[one]], max(k, 1))
    candidates = np.bincount(r, minlength=n)
    ambiguous |= candidates > 1
    joins = (candidates[r] == 1) & ~ambiguous[r]
    r, t = r[joins], t[joins]
    keep = _unique_safe(night, r, t, comp_of)
    target[r[keep]] = np.asarray(comps, dtype=np.int64)[t[keep]]
    return _Attachments(target, int((ambiguous & loose).sum()), int((~keep).sum()))


def _unique_safe(night: _Night, recs: IntArray, targets: IntArray, comp_of: IntArray) -> BoolArray:
    """Attachments that put no second id of a unique namespace into a profile.

    Only a record whose unique id does not bridge (shared, unverified) can get here.
    """
    label, value_ns = night.label, night.value_ns
    keep = np.ones(len(recs), dtype=bool)
    with_label = np.flatnonzero(label[recs] >= 0)
    if not len(with_label):
        return keep
    held: dict[tuple[int, int], int] = {}
    for rec in np.flatnonzero((comp_of >= 0) & (label >= 0)).tolist():
        held[(int(comp_of[rec]), int(value_ns[label[rec]]))] = int(label[rec])
    incoming: dict[tuple[int, int], set[int]] = {}
    for i in with_label.tolist():
        key = (int(targets[i]), int(value_ns[label[recs[i]]]))
        incoming.setdefault(key, set()).add(int(label[recs[i]]))
    for i in with_label.tolist():
        key = (int(targets[i]), int(value_ns[label[recs[i]]]))
        mine = int(label[recs[i]])
        keep[i] = held.get(key, mine) == mine and len(incoming[key]) == 1
    return keep


@dataclass
class _Graph:
    """Everything resolution decides about one night's records, before ids are given out."""

    night: _Night
    role: npt.NDArray[np.int8]
    cluster: IntArray
    """Profile of each record, numbered 0.. in canonical order of their first record."""
    value_profile: IntArray
    """Profile of each value if all records carrying it are in one profile, else -1."""
    counts: dict[str, Any]
    """`stats["blocked"]`."""
    detail: dict[str, Any]
    """`stats["conflicts"]`."""

    @property
    def profiles(self) -> int:
        return int(self.cluster.max()) + 1 if len(self.cluster) else 0


def _partition(
    records: pd.DataFrame,
    sources: Sequence[SourceConfig],
    config: IdentityConfig,
    blocked: Mapping[IdentifierKind, frozenset[str]],
) -> _Graph:
    night, is_blocked = _night(records, sources, config, blocked)
    is_shared, shared_counts = _shared(night, config)
    role = np.full(night.count, _R_BRIDGE, dtype=np.int8)
    role[_direct_conflicts(night)] = _R_CONFLICT
    role[~_verified(night)] = _R_UNVERIFIED
    role[is_shared] = _R_SHARED
    role[is_blocked] = _R_BLOCKED
    direct = int((role == _R_CONFLICT).sum())

    bridge_per, component, core = _components(night, role)
    cut = _cut_conflicts(night, bridge_per, core, component)
    role[cut.rejected] = _R_CONFLICT
    attachments = _attach(night, cut)

    cluster = np.where(cut.core, cut.component, attachments.target)
    alone = cluster < 0
    cluster[alone] = cut.next_label + np.arange(int(alone.sum()))
    # number profiles in canonical order of their first record
    first = np.asarray(pd.unique(cluster[np.argsort(night.rank)]), dtype=np.int64)
    renumber = np.empty(int(cluster.max()) + 1 if len(cluster) else 0, dtype=np.int64)
    renumber[first] = np.arange(len(first))
    cluster = renumber[cluster]

    value_profile = np.full(night.count, -1, dtype=np.int64)
    recs, vals = night.edges()
    v, c = _unique_pairs(vals, cluster[recs], max(len(first), 1))
    single = np.bincount(v, minlength=night.count)[v] == 1
    value_profile[v[single]] = c[single]

    counts: dict[str, Any] = {
        "blocked_value": int(is_blocked.sum()),
        "shared": shared_counts,
        "unverified": int((role == _R_UNVERIFIED).sum()),
        "unique_conflict": int((role == _R_CONFLICT).sum()),
        "ambiguous_attach": attachments.ambiguous,
    }
    detail: dict[str, Any] = {
        "unique_conflict_direct": direct,
        "unique_conflict_transitive": int(cut.rejected.sum()),
        "conflict_components_cut": cut.components,
        "attach_refused_unique": attachments.refused,
    }
    return _Graph(night, role, cluster, value_profile, counts, detail)


@dataclass
class _Lineage:
    """How tonight's profiles descend from the previous night's."""

    kept: dict[int, str] = field(default_factory=dict)
    """Tonight's profile → the previous id it keeps."""
    merged: list[tuple[str, str]] = field(default_factory=list)
    merge_events: list[tuple[str, str, str, str]] = field(default_factory=list)
    split_parts: list[tuple[str, int, int, int]] = field(default_factory=list)
    """(old id, tonight's profile, identifiers, records) of parts that left a profile."""


def _detail(identifiers: int, records: int) -> str:
    return json.dumps({"identifiers": identifiers, "records": records}, sort_keys=True)


def _previous_hits(graph: _Graph, previous: PreviousIdentity) -> tuple[IntArray, ObjArray]:
    """(tonight's value, previous profile id) for every previous identifier seen tonight."""
    ident, values = previous.identifiers, graph.night.values
    if not len(ident) or not values.count:
        return np.empty(0, np.int64), np.empty(0, dtype=object)
    kind_codes, kind_names = pd.factorize(ident[KIND].astype(str))
    key_codes, key_names = pd.factorize(ident[KEY_ID].astype(str))
    pseudonyms = ident[PSEUDONYM].astype(str).to_numpy(dtype=object)
    found_v, found_row = [], []
    # tonight's values are sorted by kind, then key id: each (kind, key id) is one slice
    starts = np.flatnonzero(
        np.r_[
            True, (values.kind[1:] != values.kind[:-1]) | (values.key_id[1:] != values.key_id[:-1])
        ]
    )
    for lo, hi in zip(starts.tolist(), [*starts[1:].tolist(), values.count], strict=True):
        kind, key_id = str(KINDS[int(values.kind[lo])]), values.key_id[lo]
        k = kind_names.get_indexer(pd.Index([kind]))[0]
        q = key_names.get_indexer(pd.Index([key_id]))[0]
        if k < 0 or q < 0:
            continue
        rows = np.flatnonzero((kind_codes == k) & (key_codes == q))
        at = pd.Index(values.pseudonym[lo:hi]).get_indexer(pd.Index(pseudonyms[rows]))
        found_v.append(lo + at[at >= 0])
        found_row.append(rows[at >= 0])
    if not found_v:
        return np.empty(0, np.int64), np.empty(0, dtype=object)
    hit_v = np.concatenate(found_v).astype(np.int64)
    hit_p = ident[PROFILE_ID].astype(str).to_numpy(dtype=object)[np.concatenate(found_row)]
    if pd.Series(hit_v).duplicated().any():
        # a value the store holds twice (it should not) counts for its first profile by id
        once = pd.DataFrame({"v": hit_v, "p": hit_p}).sort_values(["v", "p"])
        once = once.drop_duplicates("v")
        hit_v, hit_p = once["v"].to_numpy(np.int64), once["p"].to_numpy(dtype=object)
    return hit_v, hit_p


def _successors(profiles: pd.DataFrame) -> dict[str, str | None]:
    """Each profile that is not active → the active profile it was merged into (following
    chains), or None if there is none."""
    ids = profiles[PROFILE_ID].astype(str).to_numpy(dtype=object)
    status = profiles["status"].astype(str).to_numpy(dtype=object)
    into = profiles["merged_into"].to_numpy(dtype=object)
    active = set(ids[status == STATUS_ACTIVE])
    parent = {
        i: (m if isinstance(m, str) else None)
        for i, m, st in zip(ids, into, status, strict=True)
        if st != STATUS_ACTIVE
    }
    out: dict[str, str | None] = {}
    for start in parent:
        seen: set[str] = set()
        at: str | None = start
        while at is not None and at not in active and at not in seen:
            seen.add(at)
            at = parent.get(at)
        out[start] = at if at in active else None
    return out


def _lineage(graph: _Graph, previous: PreviousIdentity, created: pd.Series) -> _Lineage:
    """Heirs, merges and splits (see the module docstring); `created`: created_seq by id."""
    lineage = _Lineage()
    hit_v, hit_p = _previous_hits(graph, previous)
    missing = sorted(set(pd.unique(hit_p)) - set(created.index))
    if missing:
        raise ValueError(
            f"previous.identifiers name {len(missing)} profile(s) missing from "
            f"previous.profiles, e.g. {missing[0]}"
        )
    # identifiers the store left on a merged profile count for the profile it went into:
    # a merged id never comes back
    successors = _successors(previous.profiles)
    if successors and len(hit_p):
        mapped = pd.Series(hit_p, dtype=object)
        stale = mapped.isin(list(successors)).to_numpy()
        mapped[stale] = mapped[stale].map(successors)
        keep = mapped.notna().to_numpy()
        hit_v, hit_p = hit_v[keep], mapped[keep].to_numpy(dtype=object)
    if not len(hit_v):
        return lineage
    p_codes, p_uniques = pd.factorize(pd.Series(hit_p))
    p_names = np.asarray(p_uniques, dtype=object)
    value_prev = np.full(graph.night.count, -1, dtype=np.int64)
    value_prev[hit_v] = p_codes

    # the part of each previous profile in each of tonight's: its values that tonight belong
    # to that profile alone, and the records carrying them. A value now spread over several
    # profiles (a household email) says nothing about where the profile went, and would
    # otherwise report the same split night after night.
    held = (value_prev >= 0) & (graph.value_profile >= 0)
    recs, vals = graph.night.edges()
    known = held[vals]
    rec, prev = _unique_pairs(recs[known], value_prev[vals[known]], len(p_names))
    part = pd.DataFrame({"p": prev, "c": graph.cluster[rec]}).value_counts().rename("records")
    idents = (
        pd.DataFrame({"p": value_prev[held], "c": graph.value_profile[held]})
        .value_counts()
        .rename("identifiers")
    )
    parts = pd.concat([part, idents], axis=1).fillna(0).astype(np.int64).reset_index()
    parts["profile"] = p_names[parts["p"].to_numpy()]
    parts = parts.sort_values(
        ["p", "records", "identifiers", "c"], ascending=[True, False, False, True]
    )
    heirs = parts.drop_duplicates("p")
    heir = np.full(len(p_names), -1, dtype=np.int64)
    heir[heirs["p"].to_numpy()] = heirs["c"].to_numpy()

    # each profile keeps the oldest previous profile it is heir of; the others merge into it
    heirs = heirs.assign(seq=created.reindex(heirs["profile"].to_numpy()).to_numpy())
    heirs = heirs.sort_values(["c", "seq", "profile"])
    survivors = heirs.drop_duplicates("c")
    lineage.kept = dict(zip(survivors["c"].tolist(), survivors["profile"].tolist(), strict=True))
    absorbed = heirs[heirs.duplicated("c")]
    for old, c, n_ident, n_rec in zip(
        absorbed["profile"].tolist(),
        absorbed["c"].tolist(),
        absorbed["identifiers"].tolist(),
        absorbed["records"].tolist(),
        strict=True,
    ):
        survivor = lineage.kept[c]
        lineage.merged.append((old, survivor))
        lineage.merge_events.append((EventKind.MERGE.value, old, survivor, _detail(n_ident, n_rec)))
    off = parts[heir[parts["p"].to_numpy()] != parts["c"].to_numpy()]
    lineage.split_parts = list(
        zip(
            off["profile"].tolist(),
            off["c"].tolist(),
            off["identifiers"].tolist(),
            off["records"].tolist(),
            strict=True,
        )
    )
    return lineage


def _profile_hash(seed: str, attempt: int) -> str:
    text = "profile:" + seed + (f"#{attempt}" if attempt else "")
    return "P" + hashlib.sha256(text.encode()).hexdigest()[:16].upper()


def _seeds(graph: _Graph, records: pd.DataFrame, wanted: IntArray) -> dict[int, str]:
    """Seed of the `wanted` profiles: the smallest value they hold, else their first record's
    smallest value, else that record's source and line."""
    night, k = graph.night, graph.profiles
    values = night.values
    seed_value = np.full(k, values.count, dtype=np.int64)
    assigned = np.flatnonzero(graph.value_profile >= 0)
    np.minimum.at(seed_value, graph.value_profile[assigned], assigned)
    by_rank = np.argsort(night.rank)
    # profiles are numbered in order of their first record, so these are the first records
    _, first_pos = np.unique(graph.cluster[by_rank], return_index=True)
    first_record = by_rank[first_pos]
    seeds: dict[int, str] = {}
    for c in wanted.tolist():
        if seed_value[c] < values.count:
            seeds[c] = values.text(int(seed_value[c]))
            continue
        first = int(first_record[c])
        own = [int(v) for v in night.per[:, first] if v >= 0]
        if own:
            seeds[c] = "record:" + values.text(min(own))
        else:
            seeds[c] = f"row:{records[SOURCE].iloc[first]}:{int(records[LINE].iloc[first])}"
    return seeds


@dataclass
class _Ids:
    profile_ids: list[str]
    new: list[int]
    """Profiles created tonight, in creation (canonical) order."""
    kept: int
    merged: list[tuple[str, str]]
    events: list[tuple[str, str, str, str]]


def _assign_ids(graph: _Graph, records: pd.DataFrame, previous: PreviousIdentity) -> _Ids:
    profiles = previous.profiles
    names = profiles[PROFILE_ID].astype(str).to_numpy(dtype=object)
    created = pd.Series(pd.to_numeric(profiles["created_seq"]).to_numpy(), index=names)
    lineage = _lineage(graph, previous, created[~created.index.duplicated()])
    kept = lineage.kept

    # a new id that equals an active previous profile which has no identifiers and that
    # nobody claimed tonight is that profile again (it could not be found by its values)
    active = set(names[(profiles["status"].astype(str) == STATUS_ACTIVE).to_numpy()])
    holders = previous.identifiers[PROFILE_ID].astype(str).to_numpy(dtype=object)
    reusable = active - set(pd.unique(holders)) - set(kept.values())
    reusable -= {m for m, _ in lineage.merged}
    taken = set(names) | set(kept.values())
    profile_ids: list[str] = []
    new: list[int] = []
    reused = 0
    heirless = np.setdiff1d(np.arange(graph.profiles), np.fromiter(kept, np.int64, len(kept)))
    seeds = _seeds(graph, records, heirless)
    for c in range(graph.profiles):
        if c in kept:
            profile_ids.append(kept[c])
            continue
        seed = seeds[c]
        attempt = 0
        candidate = _profile_hash(seed, attempt)
        while candidate in taken and candidate not in reusable:
            attempt += 1
            candidate = _profile_hash(seed, attempt)
        if candidate in reusable:
            reusable.discard(candidate)
            reused += 1
        else:
            new.append(c)
        taken.add(candidate)
        profile_ids.append(candidate)

    splits = [
        (EventKind.SPLIT.value, old, profile_ids[c], _detail(n_ident, n_rec))
        for old, c, n_ident, n_rec in lineage.split_parts
    ]
    return _Ids(
        profile_ids=profile_ids,
        new=new,
        kept=len(kept) + reused,
        merged=sorted(lineage.merged),
        events=sorted(lineage.merge_events) + sorted(splits),
    )


def _size_stats(cluster: IntArray) -> tuple[dict[str, int], list[int]]:
    sizes = np.bincount(cluster) if len(cluster) else np.empty(0, np.int64)
    histogram = {
        name: int(((sizes >= low) & (sizes <= high)).sum()) for name, low, high in SIZE_BINS
    }
    return histogram, [int(s) for s in np.sort(sizes)[::-1][:10]]


def resolve(
    records: pd.DataFrame,
    sources: Sequence[SourceConfig],
    config: IdentityConfig,
    blocked: Mapping[IdentifierKind, frozenset[str]],
    previous: PreviousIdentity,
) -> Resolution:
    """Resolve one night's accepted records into profiles (see the module docstring).

    `records`: source, line, key_id and `<kind>_pseudonym` for each kind (NaN when absent).
    `blocked`: pseudonyms (made with tonight's key) that never link. `previous`: the state
    before tonight. Raises ValueError for records of a source not in `sources`, a pseudonym
    without a key id, or a previous state whose identifiers name profiles it does not list.

    `stats`: records, profiles, profiles_new, profiles_kept, merges, splits; blocked:
    blocked_value, shared (per limit, "kind>other"), unverified, unique_conflict (distinct
    values), ambiguous_attach (records); conflicts: unique_conflict_direct and
    unique_conflict_transitive (values; they add up to unique_conflict),
    conflict_components_cut, attach_refused_unique (records); cluster_sizes (profiles per
    records-per-profile bin of `SIZE_BINS`); largest (records of the ten largest profiles).
    """
    required = [SOURCE, LINE, KEY_ID, *(pseudonym_column(k) for k in KINDS)]
    absent = [c for c in required if c not in records.columns]
    if absent:
        raise ValueError(f"records lack column(s): {', '.join(absent)}")
    records = records.reset_index(drop=True)
    graph = _partition(records, sources, config, blocked)
    ids = _assign_ids(graph, records, previous)

    profile_ids = np.asarray(ids.profile_ids, dtype=object)
    links = pd.DataFrame(
        {
            SOURCE: _text(records[SOURCE].to_numpy(dtype=object)),
            LINE: records[LINE].to_numpy(np.int64),
            PROFILE_ID: _text_take(profile_ids, graph.cluster),
        }
    )
    values = graph.night.values
    key_codes, key_names = pd.factorize(values.key_id)
    identifiers = pd.DataFrame(
        {
            KIND: _text_take([str(k) for k in KINDS], values.kind.astype(np.int64)),
            KEY_ID: _text_take(np.asarray(key_names, dtype=object), key_codes.astype(np.int64)),
            PSEUDONYM: _text(values.pseudonym),
            PROFILE_ID: _text_take(profile_ids, graph.value_profile),
            ROLE: _text_take(_ROLE_NAMES, graph.role.astype(np.int64)),
        }
    )
    events = ids.events
    histogram, largest = _size_stats(graph.cluster)
    stats: dict[str, Any] = {
        "records": len(records),
        "profiles": len(profile_ids),
        "profiles_new": len(ids.new),
        "profiles_kept": ids.kept,
        "merges": len(ids.merged),
        "splits": sum(1 for e in events if e[0] == EventKind.SPLIT),
        "blocked": graph.counts,
        "conflicts": graph.detail,
        "cluster_sizes": histogram,
        "largest": largest,
    }
    return Resolution(
        links=links,
        identifiers=identifiers,
        new_profiles=pd.DataFrame({PROFILE_ID: _text(profile_ids[ids.new])}),
        merged=pd.DataFrame(
            {
                PROFILE_ID: _text([m for m, _ in ids.merged]),
                "merged_into": _text([s for _, s in ids.merged]),
            }
        ),
        events=pd.DataFrame(
            {
                "event": _text([e[0] for e in events]),
                PROFILE_ID: _text([e[1] for e in events]),
                "other_profile_id": _text([e[2] for e in events]),
                "detail": _text([e[3] for e in events]),
            }
        ),
        stats=stats,
    )
