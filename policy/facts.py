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

import pandas as pd

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
    facts["is_customer"] = facts[SUBJECT].isin(set(customers))

    by_subject = facts[[SUBJECT]]
    for purpose in Purpose:
        rows = consents.loc[consents["purpose"] == purpose, ["profile_id", "status", "record_id"]]
        joined = by_subject.merge(
            rows.rename(columns={"profile_id": SUBJECT}), on=SUBJECT, how="left"
        )
        facts[f"consent_{purpose}"] = joined["status"].astype("string").to_numpy()
        facts[f"consent_ref_{purpose}"] = joined["record_id"].astype("string").to_numpy()
    for kind in SuppressionKind:
        rows = suppressed.loc[suppressed["suppression"] == kind, ["profile_id", "request_ref"]]
        rows = rows.drop_duplicates("profile_id").rename(columns={"profile_id": SUBJECT})
        joined = by_subject.merge(rows, on=SUBJECT, how="left")
        facts[f"suppressed_{kind}"] = joined["request_ref"].notna().to_numpy()
        facts[f"suppression_ref_{kind}"] = joined["request_ref"].astype("string").to_numpy()
    return facts
