"""The export stage's column-wise helpers agree with the row-by-row code they replaced.

The oracles below are the earlier implementation of `flows.exports`: one `str.split` of a
profile's redaction rules per field, a Python list built for every cell, a MultiIndex reindex
for contact details and `Series.isin` for the personalised Google audience.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.enrich import Candidates
from flows.exports import EXPORT_PURPOSES, _among, _contact, export_fields, fingerprints
from policy.bundle import PolicyBundle, default_bundle_path, load_bundle
from policy.types import Purpose
from profiles.fusion import top_topics
from profiles.identity import PROFILE_ID
from profiles.taxonomy import Taxonomy, load_taxonomy
from profiles.types import IdentifierKind

BUNDLE = load_bundle(default_bundle_path())
TAXONOMY = load_taxonomy()
TOPICS = ["interest.outdoor.hiking", "interest.kids.toys", "interest.books", "interest.not_listed"]
RULES = [
    "",
    "segments",
    "segments;top_interests",
    "persona;clv_band;churn_risk",
    "email;nope",
    "email_sha256;xcountry",
]
SEGMENTS = ["Champions", "At risk", "Lost"]


def _old_segments(profiles: pd.DataFrame) -> list[list[str]]:
    parts = [
        profiles[c].astype("string").radd(prefix).fillna("")
        for c, prefix in (("rfm_segment", ""), ("abc", "abc_"), ("xyz", "xyz_"))
        if c in profiles.columns
    ]
    if not parts:
        return [[] for _ in range(len(profiles))]
    return [[p for p in row if p] for row in zip(*parts, strict=True)]


def _old_clv_band(clv: pd.Series) -> pd.Series:
    scored = clv.dropna()
    if scored.nunique() < 5:
        return pd.Series(pd.NA, index=clv.index, dtype="string")
    labels = ["very low", "low", "medium", "high", "very high"]
    bands = pd.qcut(scored.rank(method="first"), 5, labels=labels)
    return bands.astype("string").reindex(clv.index)


def _old_export_fields(
    profiles: pd.DataFrame,
    interests: pd.DataFrame,
    *,
    purpose: Purpose,
    bundle: PolicyBundle,
    contacts: dict[str, pd.Series],
    taxonomy: Taxonomy,
    top_n: int,
) -> tuple[pd.DataFrame, int]:
    mask = (profiles[f"decision_{purpose}"] != "deny").to_numpy(bool)
    allowed = profiles[mask].reset_index(drop=True)
    ids = allowed[PROFILE_ID].astype(str)
    floor = bundle.confidence_floors.get(purpose, 0.0)
    topics = top_topics(interests, ids, n=top_n, floor=floor).to_pylist()
    clv = next((c for c in allowed.columns if c.startswith("clv_")), None)
    missing = pd.Series(pd.NA, index=ids.index, dtype="string")
    frame = pd.DataFrame(
        {
            PROFILE_ID: ids,
            "email": contacts["email"][mask].reset_index(drop=True),
            "phone": contacts["phone"][mask].reset_index(drop=True),
            "country": allowed["country"].astype("string") if "country" in allowed else missing,
            "lawful_basis": allowed[f"basis_{purpose}"].replace("", pd.NA).astype("string"),
            "consent_ref": allowed[f"evidence_{purpose}"].replace("", pd.NA).astype("string"),
            "persona": allowed.get("persona_name", missing),
            "segments": _old_segments(allowed),
            "top_interests": [
                [taxonomy.label(t) for t in row] if purpose is Purpose.CRM_EXPORT else row
                for row in topics
            ],
            "rfm_segment": allowed.get("rfm_segment", missing),
            "clv_band": _old_clv_band(allowed[clv]) if clv else missing,
            "churn_risk": allowed.get("churn_risk", missing),
        }
    )
    redacted = 0
    rules = allowed[f"redact_{purpose}"].fillna("").astype(str)
    for field in sorted({f for r in rules for f in r.split(";") if f}):
        if field in frame.columns:
            hit = rules.str.split(";").map(lambda fields, f=field: f in fields).to_numpy(bool)
            frame.loc[hit, field] = None
            redacted += int(hit.sum())
    return frame, redacted


@st.composite
def _night(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.Series]]:
    """Profiles after gate C, their merged interests and their contact details."""
    n = draw(st.integers(0, 14))
    ids = [f"P{i:04d}" for i in draw(st.permutations(range(n)))]
    texts = st.one_of(st.none(), st.sampled_from(["DK", "GR", "", "=cmd", "a;b"]))
    numbers = st.one_of(st.none(), st.floats(0, 500, allow_nan=False))

    def column(strategy: st.SearchStrategy[object]) -> list[object]:
        return draw(st.lists(strategy, min_size=n, max_size=n))

    profiles = pd.DataFrame({PROFILE_ID: pd.Series(ids, dtype="str")})
    for purpose in EXPORT_PURPOSES:
        decisions = column(st.sampled_from(["allow", "redact", "deny"]))
        profiles[f"decision_{purpose}"] = pd.Series(decisions, dtype="str")
        profiles[f"basis_{purpose}"] = pd.Series(
            column(st.sampled_from(["", "consent", "legitimate_interests"])), dtype="str"
        )
        profiles[f"evidence_{purpose}"] = pd.Series(
            column(st.sampled_from(["", "e1"])), dtype="str"
        )
        profiles[f"redact_{purpose}"] = pd.Series(column(st.sampled_from(RULES)), dtype="str")
    profiles["country"] = pd.Series(column(texts), dtype="str")
    profiles["persona_name"] = pd.Series(column(texts), dtype="string")
    if draw(st.booleans()):
        profiles["rfm_segment"] = pd.Categorical(column(st.sampled_from([None, *SEGMENTS])))
        profiles["abc"] = pd.Categorical(column(st.sampled_from([None, "A", "B"])))
        profiles["xyz"] = pd.Categorical(column(st.sampled_from([None, "X", "Z"])))
        profiles["churn_risk"] = pd.Series(column(numbers), dtype="float64")
        profiles["clv_365d"] = pd.Series(column(numbers), dtype="float64")
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(ids or ["P9999"]),
                st.sampled_from(TOPICS),
                st.floats(0, 1, allow_nan=False),
            ),
            max_size=3 * n,
            unique_by=lambda r: (r[0], r[1]),
        )
    )
    interests = pd.DataFrame(rows, columns=[PROFILE_ID, "topic", "confidence"]).astype(
        {PROFILE_ID: "category", "topic": "category", "confidence": "float64"}
    )
    contacts = {
        "email": pd.Series(column(st.one_of(st.none(), st.emails())), dtype="string"),
        "phone": pd.Series(column(st.sampled_from([None, "+4520123456"])), dtype="string"),
    }
    return profiles, interests, contacts


def _cells(frame: pd.DataFrame) -> list[list[object]]:
    """Every cell, missing values as None, so lists and scalars compare by value."""
    return [
        [v if isinstance(v, list) or not pd.isna(v) else None for v in row]
        for row in frame.astype(object).itertuples(index=False)
    ]


@settings(max_examples=120, deadline=None)
@given(_night(), st.sampled_from(EXPORT_PURPOSES), st.integers(1, 3))
def test_export_fields_match_the_row_by_row_oracle(
    night: tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.Series]], purpose: Purpose, top_n: int
) -> None:
    profiles, interests, contacts = night
    kwargs = {
        "purpose": purpose,
        "bundle": BUNDLE,
        "contacts": contacts,
        "taxonomy": TAXONOMY,
        "top_n": top_n,
    }
    got, redacted = export_fields(profiles, interests, **kwargs)  # type: ignore[arg-type]
    expected, expected_redacted = _old_export_fields(profiles, interests, **kwargs)  # type: ignore[arg-type]
    assert redacted == expected_redacted
    assert list(got.columns) == list(expected.columns)
    assert dict(got.dtypes) == dict(expected.dtypes)
    assert _cells(got) == _cells(expected)
    key = b"k" * 32
    assert np.array_equal(fingerprints(got, key), fingerprints(expected, key))


class _Stage:
    """Contact details as the identifier stage's `normalised` gives them, calls recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[IdentifierKind, list[str]]] = []

    def normalised(self, kind: IdentifierKind, pseudonyms: Sequence[str]) -> list[str | None]:
        self.calls.append((kind, list(pseudonyms)))
        return [None if p.endswith("0") else f"{kind}:{p}" for p in pseudonyms]


def _old_contact(
    subjects: Candidates, stage: _Stage, kind: IdentifierKind, ids: pd.Series
) -> pd.Series:
    first = subjects.identifiers
    keys = pd.MultiIndex.from_arrays([ids.to_numpy(), [str(kind)] * len(ids)])
    pseudonyms = first.reindex(keys)["pseudonym"]
    values = np.full(len(ids), None, dtype=object)
    present = pseudonyms.notna().to_numpy()
    if present.any():
        values[present] = stage.normalised(kind, pseudonyms[present].astype(str).tolist())
    return pd.Series(values, index=ids.index, dtype="string")


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 12),
            st.sampled_from(["email", "phone", "customer_id"]),
            st.integers(0, 99),
        ),
        max_size=30,
        unique_by=lambda r: (r[0], r[1]),
    ),
    st.lists(st.integers(0, 14), max_size=14, unique=True),
    st.sampled_from([IdentifierKind.EMAIL, IdentifierKind.PHONE]),
)
def test_contact_details_are_looked_up_like_before(
    rows: list[tuple[int, str, int]], wanted: list[int], kind: IdentifierKind
) -> None:
    identifiers = pd.DataFrame(
        {
            PROFILE_ID: pd.Series([f"P{p}" for p, _, _ in rows], dtype="str"),
            "kind": pd.Series([k for _, k, _ in rows], dtype="str"),
            "key_id": "k1",
            "pseudonym": pd.Series([f"{v:064d}" for _, _, v in rows], dtype="str"),
        }
    ).set_index([PROFILE_ID, "kind"])
    subjects = Candidates(pd.DataFrame(), identifiers, pd.Series(dtype=object))
    ids = pd.Series([f"P{p}" for p in wanted], dtype="str")
    stage, old_stage = _Stage(), _Stage()
    got = _contact(subjects, stage, kind, ids)
    pd.testing.assert_series_equal(got, _old_contact(subjects, old_stage, kind, ids))
    assert stage.calls == old_stage.calls


@given(
    st.lists(st.sampled_from(["P1", "P2", "P3", "P10", ""]), max_size=10),
    st.lists(st.sampled_from(["P1", "P3", "P4", ""]), max_size=6),
)
def test_among_is_isin(ids: list[str], members: list[str]) -> None:
    left, right = pd.Series(ids, dtype="str"), pd.Series(members, dtype="str")
    assert np.array_equal(_among(left, right), left.isin(right).to_numpy(bool))
