"""Facts the policy engine decides on: one row per subject (profile), built column-wise.

Columns: `subject` (profile id), `country` (ISO alpha-2 or missing), `age` (whole years at
`as_of`, from the golden birth year; missing when unknown), `is_customer` (the profile has rows
from an orders source), per purpose `consent_<purpose>` ('granted' | 'withdrawn' | missing)
and `consent_ref_<purpose>` (the deciding consent record), per suppression kind
`suppressed_<kind>` and `suppression_ref_<kind>`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from policy.types import Purpose, SuppressionKind

SUBJECT = "subject"


def build_facts(
    profiles: pd.DataFrame,
    *,
    customers: Iterable[str],
    consents: pd.DataFrame,
    suppressed: pd.DataFrame,
    as_of: datetime,
) -> pd.DataFrame:
    """Facts per profile.

    `profiles`: profile_id and, when the golden record has them, `country` and `birth_year`.
    `customers`: profile ids with orders. `consents`: latest consent per profile and purpose
    (profile_id, purpose, status, record_id). `suppressed`: profile_id, suppression,
    request_ref.
    """
    facts = pd.DataFrame({SUBJECT: profiles["profile_id"].astype(str).to_numpy()})
    country = profiles["country"] if "country" in profiles.columns else None
    facts["country"] = (
        pd.Series(pd.NA, index=facts.index, dtype="string")
        if country is None
        else pd.Series(country.to_numpy(), dtype="string")
    )
    if "birth_year" in profiles.columns:
        born = pd.to_numeric(pd.Series(profiles["birth_year"].to_numpy()), errors="coerce")
        age = as_of.year - born
        facts["age"] = age.where((age >= 0) & (age < 130)).astype("Int64")
    else:
        facts["age"] = pd.Series(pd.NA, index=facts.index, dtype="Int64")
    # Hash lookups in Arrow: pandas' isin and merges on text build a Python object per value.
    subjects = _arrow(facts[SUBJECT])
    buyers = _arrow(customers if isinstance(customers, pd.Series) else pd.Series(list(customers)))
    facts["is_customer"] = np.asarray(pc.is_in(subjects, value_set=buyers).fill_null(False))

    # A subject has at most one row per purpose (and per suppression kind, once repeats are
    # dropped), so each join is a lookup of the subject among the rows' profile ids.
    for purpose in Purpose:
        rows = consents.loc[consents["purpose"] == purpose, ["profile_id", "status", "record_id"]]
        at = pc.index_in(subjects, value_set=_arrow(rows["profile_id"]))
        facts[f"consent_{purpose}"] = _looked_up(rows["status"], at)
        facts[f"consent_ref_{purpose}"] = _looked_up(rows["record_id"], at)
    for kind in SuppressionKind:
        rows = suppressed.loc[suppressed["suppression"] == kind, ["profile_id", "request_ref"]]
        rows = rows.drop_duplicates("profile_id")
        at = pc.index_in(subjects, value_set=_arrow(rows["profile_id"]))
        refs = _looked_up(rows["request_ref"], at)
        facts[f"suppressed_{kind}"] = pd.notna(refs)
        facts[f"suppression_ref_{kind}"] = refs
    return facts


def _arrow(values: pd.Series) -> pa.Array:
    """A column as one Arrow text array."""
    array = pa.array(values.astype("string"), type=pa.large_string(), from_pandas=True)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _looked_up(
    values: pd.Series, at: pa.Array
) -> pd.api.extensions.ExtensionArray | npt.NDArray[np.object_]:
    """`values` as text at the positions `at` (null: missing).

    What assigning the looked-up values as Python objects would make of them: pandas' text
    (missing as NaN) if any value is present, else an object column of pd.NA.
    """
    taken = _arrow(values).take(at)
    if taken.null_count == len(taken):
        return np.full(len(taken), pd.NA, dtype=object)
    text: pd.api.extensions.ExtensionArray = pd.array(taken, dtype="str")
    return text
