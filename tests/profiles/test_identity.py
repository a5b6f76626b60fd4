"""Tests for identity resolution: guardrails, order independence and stable ids across nights."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiles.config import CardinalityLimit, IdentityConfig, SourceConfig
from profiles.identity import (
    STATUS_ACTIVE,
    EventKind,
    PreviousIdentity,
    Resolution,
    Role,
    resolve,
)
from profiles.types import IdentifierKind

EMAIL, PHONE, CID = IdentifierKind.EMAIL, IdentifierKind.PHONE, IdentifierKind.CUSTOMER_ID


def _source(
    name: str, namespace: str | None = None, unverified: Sequence[str] = ()
) -> SourceConfig:
    return SourceConfig.model_validate(
        {
            "name": name,
            "path": Path(f"{name}.csv"),
            "columns": {"email": "e", "phone": "p", "customer_id": "c"},
            "id_namespace": namespace,
            "unverified": list(unverified),
        }
    )


SOURCES = [
    _source("crm", "crm"),
    _source("consents", "crm"),
    _source("shop", "shop"),
    _source("prefs", "prefs", unverified=["phone"]),
    _source("news"),
    _source("crm_import", "crm", unverified=["customer_id"]),
]
CONFIG = IdentityConfig(unique_namespaces=["crm"])
NO_UNIQUE = IdentityConfig()
NO_BLOCK: dict[IdentifierKind, frozenset[str]] = {}
PROFILE_ID = re.compile(r"^P[0-9A-F]{16}$")


@dataclass(frozen=True)
class Row:
    """One accepted record; identifiers are written as readable stand-ins for pseudonyms."""

    source: str
    line: int
    email: str | None = None
    phone: str | None = None
    cid: str | None = None
    key_id: str = "k1"


def _frame(rows: Sequence[Row]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source": pd.Series([r.source for r in rows], dtype="str"),
            "line": pd.Series([r.line for r in rows], dtype="int64"),
            "key_id": pd.Series([r.key_id for r in rows], dtype="str"),
            "email_pseudonym": pd.Series([r.email for r in rows], dtype="str"),
            "phone_pseudonym": pd.Series([r.phone for r in rows], dtype="str"),
            "customer_id_pseudonym": pd.Series([r.cid for r in rows], dtype="str"),
        }
    )


def _run(
    rows: Sequence[Row] | pd.DataFrame,
    *,
    config: IdentityConfig = CONFIG,
    blocked: Mapping[IdentifierKind, frozenset[str]] = NO_BLOCK,
    previous: PreviousIdentity | None = None,
) -> Resolution:
    frame = rows if isinstance(rows, pd.DataFrame) else _frame(rows)
    return resolve(frame, SOURCES, config, blocked, previous or PreviousIdentity.empty())


def _partition(result: Resolution) -> set[frozenset[str]]:
    """Profiles as sets of 'source:line'."""
    links = result.links
    keys = links["source"].astype(str) + ":" + links["line"].astype(str)
    return {frozenset(group) for _, group in keys.groupby(links["profile_id"])}


def _ids(result: Resolution) -> dict[str, str]:
    links = result.links
    keys = (links["source"].astype(str) + ":" + links["line"].astype(str)).tolist()
    return dict(zip(keys, links["profile_id"].astype(str).tolist(), strict=True))


def _role(result: Resolution, kind: IdentifierKind, pseudonym: str) -> str:
    ident = result.identifiers
    hit = ident[(ident["kind"] == kind.value) & (ident["pseudonym"] == pseudonym)]
    assert len(hit) == 1
    return str(hit["role"].iloc[0])


def _p(*groups: str) -> set[frozenset[str]]:
    """Expected partition: each argument is 'source:line source:line ...'."""
    return {frozenset(g.split()) for g in groups}


@dataclass(frozen=True)
class GuardrailCase:
    id: str
    rows: list[Row]
    expected: set[frozenset[str]]
    counts: dict[str, Any] = field(default_factory=dict)
    roles: dict[tuple[IdentifierKind, str], Role] = field(default_factory=dict)
    config: IdentityConfig = CONFIG
    blocked: Mapping[IdentifierKind, frozenset[str]] = field(default_factory=dict)


GUARDRAIL_CASES = [
    GuardrailCase(
        "plain-email-links-sources",
        [Row("crm", 2, email="e1", cid="c1"), Row("shop", 2, email="e1", cid="s1")],
        _p("crm:2 shop:2"),
        roles={(EMAIL, "e1"): Role.BRIDGE},
    ),
    GuardrailCase(
        "consents-share-the-crm-namespace",
        [Row("crm", 2, email="e1", cid="c1"), Row("consents", 2, cid="c1")],
        _p("crm:2 consents:2"),
    ),
    GuardrailCase(
        "blocked-value-is-ignored",
        [Row("crm", 2, email="info", cid="c1"), Row("shop", 2, email="info", cid="s1")],
        _p("crm:2", "shop:2"),
        counts={"blocked_value": 1},
        roles={(EMAIL, "info"): Role.BLOCKED},
        blocked={EMAIL: frozenset({"info"})},
    ),
    GuardrailCase(
        "blocked-only-record-is-its-own-profile",
        [Row("news", 2, email="info"), Row("news", 3, email="info")],
        _p("news:2", "news:3"),
        counts={"blocked_value": 1, "ambiguous_attach": 0},
        blocked={EMAIL: frozenset({"info"})},
    ),
    GuardrailCase(
        "shared-email-over-limit",
        [Row("shop", i, email="counter", cid=f"s{i}") for i in range(2, 6)],
        _p("shop:2", "shop:3", "shop:4", "shop:5"),
        counts={"shared": {"email>customer_id": 1}},
        roles={(EMAIL, "counter"): Role.SHARED},
        config=IdentityConfig(limits=[CardinalityLimit(kind=EMAIL, other=CID, max=3)]),
    ),
    GuardrailCase(
        "email-at-limit-still-links",
        [Row("shop", i, email="family", cid=f"s{i}") for i in range(2, 5)],
        _p("shop:2 shop:3 shop:4"),
        config=IdentityConfig(limits=[CardinalityLimit(kind=EMAIL, other=CID, max=3)]),
    ),
    GuardrailCase(
        "customer-ids-are-counted-per-namespace",
        [
            Row("crm", 2, email="jo", cid="c1"),
            Row("shop", 2, email="jo", cid="s1"),
            Row("shop", 3, email="jo", cid="s2"),
            Row("prefs", 2, email="jo", cid="p1"),
            Row("news", 2, email="jo", cid="n1"),
        ],
        _p("crm:2 shop:2 shop:3 prefs:2 news:2"),
        counts={"shared": {"email>customer_id": 0}},
        roles={(EMAIL, "jo"): Role.BRIDGE},
        config=IdentityConfig(limits=[CardinalityLimit(kind=EMAIL, other=CID, max=2)]),
    ),
    GuardrailCase(
        "household-phone-over-limit",
        [Row("shop", i, email=f"e{i}", phone="landline") for i in range(2, 6)],
        _p("shop:2", "shop:3", "shop:4", "shop:5"),
        counts={"shared": {"phone>email": 1}},
        roles={(PHONE, "landline"): Role.SHARED},
        config=IdentityConfig(limits=[CardinalityLimit(kind=PHONE, other=EMAIL, max=3)]),
    ),
    GuardrailCase(
        "shared-value-attaches-a-record-with-nothing-else",
        [
            Row("shop", 2, email="a", phone="landline"),
            Row("shop", 3, email="b", phone="landline"),
            Row("news", 2, email="a"),
        ],
        _p("shop:2 news:2", "shop:3"),
        config=IdentityConfig(limits=[CardinalityLimit(kind=PHONE, other=EMAIL, max=1)]),
    ),
    GuardrailCase(
        "unverified-attaches-but-does-not-bridge",
        [
            Row("prefs", 2, phone="m1", cid="L1"),
            Row("prefs", 3, phone="m1", cid="L2"),
            Row("prefs", 4, phone="m2", cid="L3"),
            Row("prefs", 5, phone="m2"),
        ],
        _p("prefs:2", "prefs:3", "prefs:4 prefs:5"),
        counts={"unverified": 2, "ambiguous_attach": 0},
        roles={(PHONE, "m1"): Role.UNVERIFIED, (PHONE, "m2"): Role.UNVERIFIED},
    ),
    GuardrailCase(
        "unverified-and-verified-elsewhere-bridges",
        [
            Row("prefs", 2, phone="m1", cid="L1"),
            Row("prefs", 3, phone="m1", cid="L2"),
            Row("shop", 2, phone="m1", cid="s1"),
        ],
        _p("prefs:2 prefs:3 shop:2"),
        counts={"unverified": 0},
        roles={(PHONE, "m1"): Role.BRIDGE},
    ),
    GuardrailCase(
        "records-sharing-only-non-bridging-values-stay-apart",
        [Row("prefs", 2, phone="m1"), Row("prefs", 3, phone="m1")],
        _p("prefs:2", "prefs:3"),
        counts={"ambiguous_attach": 0},
    ),
    GuardrailCase(
        "two-crm-ids-block-a-direct-merge",
        [
            Row("crm", 2, email="household", cid="c1"),
            Row("crm", 3, email="household", cid="c2"),
            Row("shop", 2, email="own", cid="s1"),
            Row("crm", 4, email="own", cid="c1"),
        ],
        _p("crm:2 crm:4 shop:2", "crm:3"),
        counts={"unique_conflict": 1, "unique_conflict_direct": 1},
        roles={(EMAIL, "household"): Role.CONFLICT},
    ),
    GuardrailCase(
        "two-crm-ids-block-a-transitive-merge",
        [
            Row("crm", 2, email="e1", cid="c1"),
            Row("shop", 2, email="e1", phone="p1"),
            Row("crm", 3, phone="p1", cid="c2"),
        ],
        _p("crm:2 shop:2", "crm:3"),
        counts={
            "unique_conflict": 1,
            "unique_conflict_transitive": 1,
            "conflict_components_cut": 1,
        },
        roles={(EMAIL, "e1"): Role.BRIDGE, (PHONE, "p1"): Role.CONFLICT},
    ),
    GuardrailCase(
        "transitive-cut-keeps-customer-ids-before-emails",
        [
            Row("crm", 2, email="e1", cid="c1"),
            Row("shop", 2, email="e1", cid="s1"),
            Row("shop", 3, email="e2", cid="s1"),
            Row("crm", 3, email="e2", cid="c2"),
            Row("shop", 4, cid="s1"),
        ],
        # s1 (a customer id) is stronger than either email; it joins shop:2-4 first, then e1
        # joins crm:2, and e2 would join crm:3 to a profile that already holds c1
        _p("crm:2 shop:2 shop:3 shop:4", "crm:3"),
        counts={"unique_conflict_transitive": 1},
        roles={(EMAIL, "e2"): Role.CONFLICT, (CID, "s1"): Role.BRIDGE},
    ),
    GuardrailCase(
        "ambiguous-attach-is-its-own-profile",
        [
            Row("crm", 2, email="household", cid="c1"),
            Row("crm", 3, email="household", cid="c2"),
            Row("news", 2, email="household"),
        ],
        _p("crm:2", "crm:3", "news:2"),
        counts={"ambiguous_attach": 1, "unique_conflict": 1},
    ),
    GuardrailCase(
        "conflicting-value-attaches-when-it-reaches-one-profile",
        [
            Row("crm", 2, email="household", cid="c1"),
            Row("consents", 2, email="household", cid="c2"),
            Row("news", 2, email="household"),
            Row("crm", 3, email="other", cid="c2"),
        ],
        # household co-occurs with c1 and c2, so it bridges nothing; news:2 still reaches two
        _p("crm:2", "consents:2 crm:3", "news:2"),
        counts={"ambiguous_attach": 1},
    ),
    GuardrailCase(
        "attachment-never-brings-a-second-crm-id",
        [
            Row("crm", 2, email="e7", phone="m", cid="c2"),
            # c1 is unverified here and m is shared: the record has no bridge, and m reaches
            # only crm:2's profile, which already holds another crm id
            Row("crm_import", 2, phone="m", cid="c1"),
        ],
        _p("crm:2", "crm_import:2"),
        counts={"attach_refused_unique": 1, "ambiguous_attach": 0},
        roles={(CID, "c1"): Role.UNVERIFIED, (PHONE, "m"): Role.SHARED},
        config=IdentityConfig(
            unique_namespaces=["crm"],
            limits=[CardinalityLimit(kind=PHONE, other=CID, max=1)],
        ),
    ),
    GuardrailCase(
        "no-unique-namespace-no-conflict",
        [
            Row("crm", 2, email="household", cid="c1"),
            Row("crm", 3, email="household", cid="c2"),
        ],
        _p("crm:2 crm:3"),
        counts={"unique_conflict": 0},
        config=IdentityConfig(),
    ),
    GuardrailCase(
        "keys-never-meet",
        [Row("shop", 2, email="e1", key_id="k1"), Row("shop", 3, email="e1", key_id="k2")],
        _p("shop:2", "shop:3"),
    ),
]


def _counts(result: Resolution) -> dict[str, Any]:
    return {**result.stats["blocked"], **result.stats["conflicts"]}


def _subset(actual: Mapping[str, Any], expected: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: actual[k] if not isinstance(v, dict) else _subset(actual[k], v)
        for k, v in expected.items()
    }


@pytest.mark.parametrize("case", GUARDRAIL_CASES, ids=lambda c: c.id)
def test_guardrails(case: GuardrailCase) -> None:
    result = _run(case.rows, config=case.config, blocked=case.blocked)
    assert _partition(result) == case.expected
    assert _subset(_counts(result), case.counts) == case.counts
    for (kind, pseudonym), role in case.roles.items():
        assert _role(result, kind, pseudonym) == role
    _check_invariants(_frame(case.rows), result, case.config)


def _check_invariants(frame: pd.DataFrame, result: Resolution, config: IdentityConfig) -> None:
    """Every record in one profile, ids well formed, at most one unique id per profile."""
    links = result.links
    assert len(links) == len(frame)
    assert links["source"].tolist() == frame["source"].tolist()
    assert links["line"].tolist() == frame["line"].tolist()
    assert links["profile_id"].notna().all()
    assert all(PROFILE_ID.match(p) for p in links["profile_id"])
    by_source = {s.name: s.namespace for s in SOURCES}
    namespace = frame["source"].map(by_source)
    unique = frame["customer_id_pseudonym"].notna() & namespace.isin(config.unique_namespaces)
    held = pd.DataFrame(
        {
            "profile": links["profile_id"][unique],
            "ns": namespace[unique],
            "cid": frame["customer_id_pseudonym"][unique],
        }
    )
    assert (held.groupby(["profile", "ns"])["cid"].nunique() <= 1).all()
    assert result.stats["records"] == len(frame)
    assert sum(result.stats["cluster_sizes"].values()) == result.stats["profiles"]
    assert result.stats["profiles_kept"] + result.stats["profiles_new"] == result.stats["profiles"]
    json.dumps(result.stats)


def test_output_contract() -> None:
    rows = [
        Row("crm", 2, email="e1", cid="c1"),
        Row("shop", 7, email="e1", phone="p1", cid="s1"),
        Row("news", 3, email="info"),
    ]
    result = _run(rows, blocked={EMAIL: frozenset({"info"})})
    assert list(result.links.columns) == ["source", "line", "profile_id"]
    assert list(result.identifiers.columns) == ["kind", "key_id", "pseudonym", "profile_id", "role"]
    assert list(result.new_profiles.columns) == ["profile_id"]
    assert list(result.merged.columns) == ["profile_id", "merged_into"]
    assert list(result.events.columns) == ["event", "profile_id", "other_profile_id", "detail"]
    ident = result.identifiers
    owner = dict(zip(ident["kind"] + ":" + ident["pseudonym"], ident["profile_id"], strict=True))
    assert pd.isna(owner["email:info"])
    assert owner["email:e1"] == owner["phone:p1"] == _ids(result)["shop:7"]
    assert set(result.new_profiles["profile_id"]) == set(result.links["profile_id"])
    assert result.stats["cluster_sizes"]["2"] == 1
    assert result.stats["largest"] == [2, 1]


def test_empty_night() -> None:
    result = _run([])
    assert result.links.empty
    assert result.identifiers.empty
    assert result.stats["profiles"] == 0


def test_unknown_source_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown source"):
        _run([Row("erp", 2, email="e1")])


_row = st.builds(
    Row,
    source=st.sampled_from([s.name for s in SOURCES]),
    line=st.just(0),
    email=st.none() | st.sampled_from([f"e{i}" for i in range(6)]),
    phone=st.none() | st.sampled_from([f"p{i}" for i in range(4)]),
    cid=st.none() | st.sampled_from([f"c{i}" for i in range(5)]),
)


_NAMESPACE = {s.name: s.namespace for s in SOURCES}


def _numbered(rows: list[Row]) -> list[Row]:
    """Rows with distinct lines, at least one identifier, and customer ids as the stage makes
    them: the namespace is part of the digest, so equal ids of two namespaces never meet."""
    out = []
    for i, r in enumerate(rows):
        cid = r.cid or (None if r.email or r.phone else "x")
        cid = f"{_NAMESPACE[r.source]}:{cid}" if cid else None
        out.append(Row(r.source, i + 2, r.email, r.phone, cid))
    return out


_LIMITED = IdentityConfig(
    unique_namespaces=["crm", "shop"],
    limits=[
        CardinalityLimit(kind=EMAIL, other=CID, max=2),
        CardinalityLimit(kind=PHONE, other=EMAIL, max=2),
    ],
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_row, min_size=1, max_size=25), seed=st.integers(0, 2**32 - 1))
def test_independent_of_row_order(rows: list[Row], seed: int) -> None:
    frame = _frame(_numbered(rows))
    shuffled = frame.sample(frac=1.0, random_state=np.random.RandomState(seed))
    first = _run(frame, config=_LIMITED)
    second = _run(shuffled, config=_LIMITED)
    assert _ids(first) == _ids(second)
    assert first.stats == second.stats
    pd.testing.assert_frame_equal(first.identifiers, second.identifiers)
    pd.testing.assert_frame_equal(first.new_profiles, second.new_profiles)
    _check_invariants(frame, first, _LIMITED)
    _check_invariants(shuffled.reset_index(drop=True), second, _LIMITED)

    # a second night on the same records, in yet another order, changes nothing
    previous = _Store().commit(first)
    third = _run(frame.iloc[::-1], config=_LIMITED, previous=previous)
    assert _ids(third) == _ids(first)
    assert third.events.empty
    assert third.new_profiles.empty

    # a second night that lost some records: the same outcome in any order
    fewer = frame.iloc[len(frame) // 3 :]
    night = _run(fewer, config=_LIMITED, previous=previous)
    again = _run(fewer.iloc[::-1], config=_LIMITED, previous=previous)
    assert _ids(night) == _ids(again)
    pd.testing.assert_frame_equal(night.events, again.events)
    pd.testing.assert_frame_equal(night.merged, again.merged)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    night1=st.lists(_row, min_size=1, max_size=20),
    night2=st.lists(_row, min_size=1, max_size=20),
    seed=st.integers(0, 2**32 - 1),
)
def test_second_night_independent_of_row_order(
    night1: list[Row], night2: list[Row], seed: int
) -> None:
    store = _Store()
    store.commit(_run(_numbered(night1), config=_LIMITED))
    frame = _frame(_numbered(night2))
    shuffled = frame.sample(frac=1.0, random_state=np.random.RandomState(seed))
    first = _run(frame, config=_LIMITED, previous=store.previous())
    second = _run(shuffled, config=_LIMITED, previous=store.previous())
    assert _ids(first) == _ids(second)
    assert first.stats == second.stats
    for name in ("identifiers", "new_profiles", "merged", "events"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name))
    _check_invariants(frame, first, _LIMITED)
    # every previous profile seen tonight is kept or merged, never both
    kept = set(store.profiles["profile_id"]) & set(first.links["profile_id"])
    assert not kept & set(first.merged["profile_id"])


class _Store:
    """What the state store keeps between nights, reduced to what `resolve` reads."""

    def __init__(self) -> None:
        self.identifiers = pd.DataFrame(columns=["kind", "key_id", "pseudonym", "profile_id"])
        self.profiles = pd.DataFrame(columns=["profile_id", "created_seq", "status", "merged_into"])

    def previous(self) -> PreviousIdentity:
        return PreviousIdentity(identifiers=self.identifiers, profiles=self.profiles)

    def commit(self, result: Resolution) -> PreviousIdentity:
        """Save a night's outcome; returns the state the next night sees."""
        merged = dict(zip(result.merged["profile_id"], result.merged["merged_into"], strict=True))
        profiles = self.profiles.copy()
        absorbed = profiles["profile_id"].isin(merged)
        profiles.loc[absorbed, "status"] = "merged"
        profiles.loc[absorbed, "merged_into"] = profiles.loc[absorbed, "profile_id"].map(merged)
        seq = len(profiles)
        new = pd.DataFrame(
            {
                "profile_id": result.new_profiles["profile_id"].tolist(),
                "created_seq": range(seq, seq + len(result.new_profiles)),
                "status": STATUS_ACTIVE,
                "merged_into": None,
            }
        )
        self.profiles = pd.concat([profiles, new], ignore_index=True) if seq else new
        tonight = result.identifiers.dropna(subset=["profile_id"])[
            ["kind", "key_id", "pseudonym", "profile_id"]
        ]
        old = self.identifiers.copy()
        old["profile_id"] = old["profile_id"].replace(merged)
        key = ["kind", "key_id", "pseudonym"]
        unseen = old.merge(tonight[key], on=key, how="left", indicator=True)
        unseen = unseen[unseen["_merge"] == "left_only"].drop(columns="_merge")
        self.identifiers = pd.concat([unseen, tonight], ignore_index=True)
        return self.previous()


BASE = [
    Row("crm", 2, email="ann", phone="ann-m", cid="c-ann"),
    Row("shop", 2, email="ann", cid="s-ann"),
    Row("shop", 3, cid="s-ann"),
    Row("crm", 3, email="bob", cid="c-bob"),
    Row("news", 2, email="bob"),
    Row("crm", 4, email="home", cid="c-cy"),
    Row("crm", 5, email="home", cid="c-di"),
    Row("news", 3, email="home"),  # reaches two profiles: a profile without identifiers
]


def _nights(*nights: list[Row]) -> list[Resolution]:
    store = _Store()
    results = []
    for rows in nights:
        result = _run(rows, previous=store.previous())
        store.commit(result)
        results.append(result)
    return results


def _events(result: Resolution) -> list[tuple[str, str, str]]:
    return list(
        zip(
            result.events["event"],
            result.events["profile_id"],
            result.events["other_profile_id"],
            strict=True,
        )
    )


def test_same_input_twice_keeps_every_id() -> None:
    first, second = _nights(BASE, BASE[::-1])
    assert _ids(second) == _ids(first)
    assert second.events.empty
    assert second.merged.empty
    assert second.new_profiles.empty
    assert second.stats["profiles_kept"] == second.stats["profiles"] == 5


def test_two_first_nights_give_the_same_ids() -> None:
    assert _ids(_run(BASE)) == _ids(_run(BASE[::-1]))


def test_new_people_get_new_ids_and_old_ids_stay() -> None:
    more = [*BASE, Row("crm", 6, email="eve", cid="c-eve"), Row("shop", 4, email="eve")]
    first, second = _nights(BASE, more)
    before, after = _ids(first), _ids(second)
    assert {k: after[k] for k in before} == before
    assert after["crm:6"] == after["shop:4"]
    assert list(second.new_profiles["profile_id"]) == [after["crm:6"]]
    assert second.events.empty


def test_absent_profile_is_untouched_and_comes_back() -> None:
    without_bob = [r for r in BASE if r.email != "bob"]
    first, second, third = _nights(BASE, without_bob, BASE)
    assert second.events.empty
    assert _ids(first)["crm:3"] not in set(second.links["profile_id"])
    assert _ids(third) == _ids(first)
    assert third.new_profiles.empty


def test_merge_keeps_the_oldest_id() -> None:
    # tonight shop:5 says that bob's address and ann's shop account are one person
    linked = [*BASE, Row("shop", 5, email="bob", cid="s-ann")]
    store = _Store()
    first = _run(BASE, config=NO_UNIQUE)
    second = _run(linked, config=NO_UNIQUE, previous=store.commit(first))
    ids, after = _ids(first), _ids(second)
    ann, bob = ids["crm:2"], ids["crm:3"]
    created = list(first.new_profiles["profile_id"])
    assert created.index(ann) < created.index(bob)  # creation order is record order
    assert after["crm:2"] == after["crm:3"] == after["shop:5"] == ann
    assert second.merged.to_dict("records") == [{"profile_id": bob, "merged_into": ann}]
    assert _events(second) == [(EventKind.MERGE.value, bob, ann)]
    # bob's part: his email and crm id, on crm:3, news:2 and shop:5
    assert json.loads(second.events["detail"].iloc[0]) == {"identifiers": 2, "records": 3}
    assert second.stats["merges"] == 1
    assert second.new_profiles.empty


def test_unique_namespace_cuts_a_merge_across_nights() -> None:
    linked = [*BASE, Row("shop", 5, email="bob", cid="s-ann")]
    first, second = _nights(BASE, linked)
    after = _ids(second)
    # one component now holds c-ann and c-bob: it is cut, one email bridges no more
    assert after["crm:2"] != after["crm:3"]
    assert after["crm:4"] != after["crm:5"]
    assert second.stats["conflicts"]["unique_conflict_transitive"] == 1
    _check_invariants(_frame(linked), second, CONFIG)
    # every previous profile seen tonight is kept or merged, and the books balance
    before = set(_ids(first).values())
    kept = before & set(after.values())
    assert kept | set(second.merged["profile_id"]) == before
    assert second.stats["profiles_kept"] + second.stats["profiles_new"] == len(set(after.values()))


def test_merge_survivor_is_the_oldest_by_created_seq_not_by_id() -> None:
    first = _run(BASE, config=NO_UNIQUE)
    store = _Store()
    store.commit(first)
    ids = _ids(first)
    ann, bob = ids["crm:2"], ids["crm:3"]
    # make bob the older profile
    seq = dict(zip(store.profiles["profile_id"], store.profiles["created_seq"], strict=True))
    store.profiles.loc[store.profiles["profile_id"] == bob, "created_seq"] = -1
    assert seq[ann] >= 0
    linked = [*BASE, Row("shop", 5, email="bob", cid="s-ann")]
    second = _run(linked, config=NO_UNIQUE, previous=store.previous())
    assert _ids(second)["crm:2"] == bob
    assert _events(second) == [(EventKind.MERGE.value, ann, bob)]


def test_split_keeps_the_id_on_the_largest_part() -> None:
    night1 = [
        Row("crm", 2, email="ann", cid="c-ann"),
        Row("news", 2, email="ann"),
        Row("shop", 2, email="ann", cid="s-ann"),
        Row("shop", 3, cid="s-ann"),
        Row("shop", 4, cid="s-ann"),
    ]
    # the shop stops sending ann's address: her orders lose their bridge to the CRM
    night2 = [*night1[:2], Row("shop", 2, cid="s-ann"), *night1[3:]]
    first, second = _nights(night1, night2)
    old = _ids(first)["crm:2"]
    after = _ids(second)
    assert after["shop:2"] == after["shop:3"] == after["shop:4"] == old
    assert after["crm:2"] == after["news:2"] != old
    assert list(second.new_profiles["profile_id"]) == [after["crm:2"]]
    assert _events(second) == [(EventKind.SPLIT.value, old, after["crm:2"])]
    assert json.loads(second.events["detail"].iloc[0]) == {"identifiers": 2, "records": 2}
    assert second.stats["splits"] == 1


def test_merge_and_split_in_one_night() -> None:
    night1 = [
        # P1: ann, three records
        Row("crm", 2, email="ann", phone="ann-m", cid="c-ann"),
        Row("shop", 2, email="ann", cid="s-ann"),
        Row("shop", 3, cid="s-ann"),
        # P2: bob's newsletter address and shop account
        Row("news", 2, email="bob"),
        Row("shop", 4, email="bob", cid="s-bob"),
        # P3: bob's other address
        Row("shop", 5, email="bob2", phone="bob-m", cid="s-bob2"),
    ]
    store = _Store()
    first = _run(night1, previous=store.previous())
    store.commit(first)
    ids = _ids(first)
    p1, p2, p3 = ids["crm:2"], ids["news:2"], ids["shop:5"]
    assert len({p1, p2, p3}) == 3
    # P3 is older than P2
    store.profiles.loc[store.profiles["profile_id"] == p3, "created_seq"] = -1
    # tonight: ann's CRM row carries bob's phone by mistake, and a record joins bob's two
    # addresses: crm:2 leaves ann's orders (her email is gone) for bob's profile
    night2 = [
        Row("crm", 2, phone="bob-m", cid="c-ann"),
        *night1[1:],
        Row("shop", 6, email="bob", phone="bob-m"),
    ]
    second = _run(night2, previous=store.previous(), config=CONFIG)
    after = _ids(second)
    assert after["shop:2"] == after["shop:3"] == p1  # ann's larger part keeps her id
    assert after["crm:2"] == after["news:2"] == after["shop:5"] == p3  # oldest survives
    assert sorted(_events(second)) == [
        (EventKind.MERGE.value, p2, p3),
        (EventKind.SPLIT.value, p1, p3),
    ]
    assert second.new_profiles.empty


def test_new_id_avoids_ids_already_taken() -> None:
    rows = [Row("crm", 2, email="zed", cid="c-zed")]
    fresh = _ids(_run(rows))["crm:2"]
    taken = PreviousIdentity(
        identifiers=PreviousIdentity.empty().identifiers,
        profiles=pd.DataFrame(
            {
                "profile_id": [fresh],
                "created_seq": [0],
                "status": ["merged"],
                "merged_into": ["PXXXXXXXXXXXXXXXX"],
            }
        ),
    )
    again = _ids(_run(rows, previous=taken))["crm:2"]
    assert again != fresh
    assert PROFILE_ID.match(again)
    assert _ids(_run(rows, previous=taken))["crm:2"] == again


def test_previous_state_must_be_consistent() -> None:
    broken = PreviousIdentity(
        identifiers=pd.DataFrame(
            {"kind": ["email"], "key_id": ["k1"], "pseudonym": ["ann"], "profile_id": ["P1"]}
        ),
        profiles=PreviousIdentity.empty().profiles,
    )
    with pytest.raises(ValueError, match=r"missing from previous\.profiles"):
        _run([Row("news", 2, email="ann")], previous=broken)


def test_identifiers_left_on_a_merged_profile_count_for_its_survivor() -> None:
    linked = [*BASE, Row("shop", 5, email="bob", cid="s-ann")]
    store = _Store()
    first = _run(BASE, config=NO_UNIQUE)
    second = _run(linked, config=NO_UNIQUE, previous=store.commit(first))
    ann, bob = _ids(first)["crm:2"], _ids(first)["crm:3"]
    store.commit(second)
    # a store that marks bob merged but leaves his identifiers pointing at him
    stale = store.identifiers.copy()
    stale.loc[stale["pseudonym"] == "bob", "profile_id"] = bob
    previous = PreviousIdentity(identifiers=stale, profiles=store.profiles)
    third = _run(BASE, config=NO_UNIQUE, previous=previous)  # the link is gone again
    after = _ids(third)
    assert bob not in after.values()  # a merged id never comes back
    assert after["crm:2"] == ann
    assert after["crm:3"] != ann
    assert _events(third) == [(EventKind.SPLIT.value, ann, after["crm:3"])]


def test_a_value_that_becomes_ambiguous_reports_no_split() -> None:
    night1 = [Row("crm", 2, email="e1", cid="c-a"), Row("news", 2, email="e1")]
    # tonight e1 also names another CRM contact: it bridges nothing, and news:2 reaches two
    # profiles. e1 tells nothing about where ann's profile went, so it reports no split,
    # neither tonight nor on later nights while the store still lists it under ann.
    night2 = [*night1, Row("crm", 3, email="e1", cid="c-b")]
    first, second, third = _nights(night1, night2, night2)
    ann = _ids(first)["crm:2"]
    assert _ids(second)["crm:2"] == ann
    assert len(set(_ids(second).values())) == 3
    assert second.events.empty
    assert _ids(third) == _ids(second)
    assert third.events.empty
    assert third.new_profiles.empty
