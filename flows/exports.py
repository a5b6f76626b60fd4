"""The export stage of the nightly flow (gate C): what marketers import and analysts read.

For each destination purpose, only profiles gate C allowed (allow or redact) are written, and
only the fields the policy bundle lists for that destination (`destinations:`); a redact
decision blanks the fields its rule names for that person. Contact details come from the
identifier stage's in-memory vault (normalised email and E.164 phone of the profile's stable
identifier per kind, as providers get them), only here and only for allowed profiles.

    crm_export  out/<run>/crm/<preset>/contacts-NNNN.csv   (profiles.exports.crm presets)
    ads_export  out/<run>/audiences/<platform>.csv          (profiles.exports.audiences:
                platform-exact normalisation, SHA-256; no plaintext). Google's file is split by
                `ad_personalization` consent (consent applies per upload): profiles allowed for
                profiling go to google-personalized.csv, the others to google-not-personalized.csv;
                `ad_user_data` is the ads_export consent every exported person has.
    analytics   out/<run>/analytics.parquet                 (no contact details by default)

Interests are the merged topics at or above each purpose's confidence floor (top `fusion.top_n`,
as taxonomy labels in the CRM); `clv_band` is the CLV quintile among scored profiles.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.behaviour import allowed_for_profiling
from flows.enrich import Candidates
from policy.bundle import PolicyBundle
from policy.engine import allowed_fields, minimise
from policy.types import Purpose
from profiles.config import RunConfig
from profiles.exports.audiences import Platform, audience_frame
from profiles.exports.crm import preset_from_config, write_crm_csv
from profiles.files import private_file, private_folder
from profiles.fusion import top_topics
from profiles.identity import PROFILE_ID
from profiles.rundir import RunOutput, previous_run_file
from profiles.taxonomy import Taxonomy
from profiles.types import IdentifierKind
from profiles.vault import ContactValues

CLV_BANDS: Final = ("very low", "low", "medium", "high", "very high")
FINGERPRINTS: Final = ".fingerprints.parquet"
"""Per CRM preset folder: profile id and keyed row fingerprint, for the next delta export."""
EXPORT_PURPOSES: Final = (Purpose.CRM_EXPORT, Purpose.ADS_EXPORT, Purpose.ANALYTICS)
_TEXT: Final = "string"
_SEGMENT_COLUMNS: Final = (("rfm_segment", ""), ("abc", "abc_"), ("xyz", "xyz_"))
"""Profile columns listed in `segments`, with the prefix of their values."""


def _contact(
    subjects: Candidates, stage: ContactValues, kind: IdentifierKind, ids: pd.Series
) -> pd.Series:
    """The normalised email or E.164 phone behind each profile's stable identifier."""
    first = subjects.identifiers
    of_kind = first[first.index.get_level_values("kind") == str(kind)]
    # one (profile_id, kind) row at most (`Candidates`), so the first match is the match
    row = pc.index_in(
        pa.array(ids.to_numpy(dtype=object), pa.string()),
        value_set=pa.array(
            of_kind.index.get_level_values(PROFILE_ID).to_numpy(dtype=object), pa.string()
        ),
    )
    present = row.is_valid().to_numpy(zero_copy_only=False)
    pseudonyms = of_kind["pseudonym"].to_numpy(dtype=object)[row.drop_null().to_numpy()]
    values = np.full(len(ids), None, dtype=object)
    if present.any():
        values[present] = stage.normalised(kind, [str(p) for p in pseudonyms])
    return pd.Series(values, index=ids.index, dtype=_TEXT)


def _among(ids: pd.Series, members: pd.Series) -> npt.NDArray[np.bool_]:
    """`ids.isin(members)` for profile ids (never missing), in one Arrow call: pandas makes an
    Arrow scalar of each member first."""
    found = pc.is_in(
        pa.array(ids.to_numpy(dtype=object), pa.string()),
        value_set=pa.array(members.to_numpy(dtype=object), pa.string()),
    )
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)


def _clv_band(clv: pd.Series) -> pd.Series:
    scored = clv.dropna()
    if scored.nunique() < len(CLV_BANDS):
        return pd.Series(pd.NA, index=clv.index, dtype=_TEXT)
    bands = pd.qcut(scored.rank(method="first"), len(CLV_BANDS), labels=list(CLV_BANDS))
    return bands.astype(_TEXT).reindex(clv.index)


def _shared_lists(
    rows: Iterable[tuple[str, ...]], make: Callable[[tuple[str, ...]], list[str]]
) -> list[list[str]]:
    """`make(row)` for each row, made once per distinct row: rows of equal content share one
    list, to be read, never changed.

    Multi-value cells repeat a few hundred combinations over a million profiles. One list a
    cell would be a million long-lived objects that every full garbage collection scans.
    """
    made: dict[tuple[str, ...], list[str]] = {}
    cells: list[list[str]] = []
    for row in rows:
        cell = made.get(row)
        if cell is None:
            cell = made[row] = make(row)
        cells.append(cell)
    return cells


def _segments(profiles: pd.DataFrame) -> list[list[str]]:
    # Python lists: iterating Arrow-backed strings element by element costs ~1 us a cell.
    parts = [
        profiles[c].astype(_TEXT).radd(prefix).fillna("").tolist()
        for c, prefix in _SEGMENT_COLUMNS
        if c in profiles.columns
    ]
    rows = zip(*parts, strict=True) if parts else iter([()] * len(profiles))
    return _shared_lists(rows, lambda row: [p for p in row if p])


def _topic_lists(topics: pa.ListArray, name: Callable[[str], str]) -> list[list[str]]:
    """Each row of `topics` (no missing rows) as a list of `name(topic)`."""
    flat = pc.list_flatten(topics).to_pylist()
    ends = np.cumsum(pc.list_value_length(topics).to_numpy(zero_copy_only=False)).tolist()
    starts = [0, *ends][: len(ends)]
    rows = (tuple(flat[a:b]) for a, b in zip(starts, ends, strict=True))
    return _shared_lists(rows, lambda row: [name(t) for t in row])


def _redactions(rules: pd.Series) -> dict[str, npt.NDArray[np.bool_]]:
    """Per field named in `rules` (`;`-separated field names per row), the rows naming it.

    A night has a handful of distinct rule texts, so each is split once, not once a row.
    """
    codes, texts = pd.factorize(rules.fillna("").astype(str))
    named = [set(str(text).split(";")) for text in texts]
    return {
        field: np.isin(codes, [i for i, fields in enumerate(named) if field in fields])
        for field in sorted({f for fields in named for f in fields if f})
    }


def _columns_read(profiles: pd.DataFrame, purposes: Iterable[Purpose]) -> list[str]:
    """The columns of `profiles` that `export_fields` reads for `purposes`, in frame order.

    Copying only these matters: profiles also carry nested interests, costly to copy.
    """
    read = {PROFILE_ID, "country", "persona_name", "rfm_segment", "churn_risk"}
    read |= {c for c, _ in _SEGMENT_COLUMNS}
    for purpose in purposes:
        read |= {f"{part}_{purpose}" for part in ("decision", "basis", "evidence", "redact")}
    return [c for c in profiles.columns if c in read or str(c).startswith("clv_")]


def export_fields(
    profiles: pd.DataFrame,
    interests: pd.DataFrame,
    *,
    purpose: Purpose,
    bundle: PolicyBundle,
    contacts: dict[str, pd.Series],
    taxonomy: Taxonomy,
    top_n: int,
) -> tuple[pd.DataFrame, int]:
    """Every field a destination may ask for, for the profiles gate C allowed for `purpose`,
    with the redacted cells blanked; and how many cells were redacted.

    Multi-value cells (`segments`, `top_interests`) of equal content share one list: read them,
    do not change them in place.
    """
    mask = (profiles[f"decision_{purpose}"] != "deny").to_numpy(bool)
    clv = next((c for c in profiles.columns if c.startswith("clv_")), None)
    allowed = profiles.loc[mask, _columns_read(profiles, [purpose])].reset_index(drop=True)
    ids = allowed[PROFILE_ID].astype(str)
    floor = bundle.confidence_floors.get(purpose, 0.0)
    topics = top_topics(interests, ids, n=top_n, floor=floor)
    crm = purpose is Purpose.CRM_EXPORT
    missing = pd.Series(pd.NA, index=ids.index, dtype=_TEXT)
    frame = pd.DataFrame(
        {
            PROFILE_ID: ids,
            "email": contacts["email"][mask].reset_index(drop=True),
            "phone": contacts["phone"][mask].reset_index(drop=True),
            "country": allowed["country"].astype(_TEXT) if "country" in allowed else missing,
            "lawful_basis": allowed[f"basis_{purpose}"].replace("", pd.NA).astype(_TEXT),
            "consent_ref": allowed[f"evidence_{purpose}"].replace("", pd.NA).astype(_TEXT),
            "persona": allowed.get("persona_name", missing),
            "segments": _segments(allowed),
            "top_interests": _topic_lists(topics, taxonomy.label if crm else str),
            "rfm_segment": allowed.get("rfm_segment", missing),
            "clv_band": _clv_band(allowed[clv]) if clv else missing,
            "churn_risk": allowed.get("churn_risk", missing),
        }
    )
    redacted = 0
    for field, hit in _redactions(allowed[f"redact_{purpose}"]).items():
        if field in frame.columns:
            frame.loc[hit, field] = None
            redacted += int(hit.sum())
    return frame, redacted


def fingerprints(frame: pd.DataFrame, key: bytes) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """A keyed 64-bit hash of each row's exported values (no value can be read back; the key
    is derived from the pseudonym key, so fingerprints are as pseudonymous as pseudonyms)."""
    hash_key = hmac.new(key, b"enrich/export-fingerprint", hashlib.sha256).hexdigest()[:16]
    as_text = frame.astype(str).reset_index(drop=True)
    hashed = pd.util.hash_pandas_object(as_text, index=False, hash_key=hash_key)
    return np.asarray(hashed, dtype=np.uint64)


def changed(
    prints: pd.DataFrame, output_dir: Path, run_id: str, preset: str
) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Which rows differ from (or are missing in) the last published run's export of
    `preset`; all of them when there is none."""
    previous = previous_run_file(output_dir, run_id, f"crm/{preset}/{FINGERPRINTS}")
    if previous is None:
        return np.ones(len(prints), dtype=bool)
    old = pd.read_parquet(previous).set_index(PROFILE_ID)["fingerprint"]
    before = prints[PROFILE_ID].map(old)
    return (before.isna() | (before != prints["fingerprint"])).to_numpy(dtype=bool)


def _write_audience(path: Path, frame: pd.DataFrame) -> None:
    """An audience file: header, 64-hex values only (nothing to quote or neutralise)."""
    pa_csv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), path)
    path.chmod(0o600)  # hashed identifiers are still personal data


@task(name="export", persist_result=False, cache_policy=NO_CACHE)
def export_outputs(
    config: RunConfig,
    *,
    bundle: PolicyBundle,
    profiles: pd.DataFrame,
    interests: pd.DataFrame,
    subjects: Candidates,
    stage: ContactValues,
    taxonomy: Taxonomy,
    output: RunOutput,
    fingerprint_key: bytes,
) -> dict[str, Any]:
    """Write the CRM files, the audiences and the analytics Parquet; return their summary."""
    logger = get_run_logger()
    settings = config.exports
    if not settings.enabled:
        return {}
    needed = profiles.loc[
        (profiles[[f"decision_{p}" for p in EXPORT_PURPOSES]] != "deny").any(axis=1),
        _columns_read(profiles, EXPORT_PURPOSES),
    ].reset_index(drop=True)
    ids = needed[PROFILE_ID].astype(str)
    contacts = {
        "email": _contact(subjects, stage, IdentifierKind.EMAIL, ids),
        "phone": _contact(subjects, stage, IdentifierKind.PHONE, ids),
    }
    summary: dict[str, Any] = {}
    fields = partial(
        export_fields,
        bundle=bundle,
        contacts=contacts,
        taxonomy=taxonomy,
        top_n=config.fusion.top_n,
    )

    full, redacted = fields(needed, interests, purpose=Purpose.CRM_EXPORT)
    crm, dropped = minimise(full, bundle, Purpose.CRM_EXPORT)
    files: dict[str, int] = {}
    written_rows: dict[str, int] = {}
    for name in settings.crm:
        preset = preset_from_config(name, settings.crm_presets.get(name))
        frame = crm
        if name in settings.basis_labels and "lawful_basis" in crm.columns:
            labels = settings.basis_labels[name]
            frame = crm.assign(lawful_basis=crm["lawful_basis"].map(labels).astype(_TEXT))
        folder = output.staging / "crm" / name
        prints = pd.DataFrame(
            {PROFILE_ID: full[PROFILE_ID], "fingerprint": fingerprints(frame, fingerprint_key)}
        )
        if settings.delta:
            frame = frame[changed(prints, config.output_dir, output.run_id, name)]
        files[name] = len(write_crm_csv(frame, preset, folder))
        written_rows[name] = len(frame)
        prints.to_parquet(folder / FINGERPRINTS, index=False)
        private_file(folder / FINGERPRINTS)
    summary["crm_export"] = {"profiles": len(crm), "columns": list(crm.columns),
                             "dropped_columns": dropped, "redacted_cells": redacted,
                             "files": files, "rows": written_rows,
                             "delta": settings.delta}  # fmt: skip

    ads, redacted = fields(needed, interests, purpose=Purpose.ADS_EXPORT)
    allowed = set(allowed_fields(bundle, Purpose.ADS_EXPORT))
    nothing = pd.Series(pd.NA, index=ads.index, dtype=_TEXT)
    emails = ads["email"] if "email_sha256" in allowed else nothing
    phones = ads["phone"] if "phone_sha256" in allowed else nothing
    country = ads["country"] if "country" in allowed else None
    personalised = _among(ads[PROFILE_ID], allowed_for_profiling(profiles))
    folder = private_folder(output.staging / "audiences")
    rows: dict[str, int] = {}
    for platform in settings.audiences:
        parts = (
            {"google-personalized": personalised, "google-not-personalized": ~personalised}
            if platform is Platform.GOOGLE
            else {str(platform): np.ones(len(ads), dtype=bool)}
        )
        for stem, mask in parts.items():
            frame = audience_frame(
                emails[mask], phones[mask], platform,
                country=None if country is None else country[mask],
            )  # fmt: skip
            _write_audience(folder / f"{stem}.csv", frame)
            rows[stem] = len(frame)
    summary["ads_export"] = {"profiles": len(ads), "redacted_cells": redacted, "rows": rows}

    if settings.analytics:
        analytics, redacted = fields(needed, interests, purpose=Purpose.ANALYTICS)
        analytics, dropped = minimise(analytics, bundle, Purpose.ANALYTICS)
        pq.write_table(
            pa.Table.from_pandas(analytics, preserve_index=False),
            output.staging / "analytics.parquet",
        )
        private_file(output.staging / "analytics.parquet")
        summary["analytics"] = {"profiles": len(analytics), "columns": list(analytics.columns),
                                "dropped_columns": dropped, "redacted_cells": redacted}  # fmt: skip
    logger.info(
        "exports: CRM %s profiles (%s), audiences %s, analytics %s profiles",
        f"{summary['crm_export']['profiles']:,}",
        ", ".join(f"{k} {v} file(s)" for k, v in files.items()) or "no preset",
        ", ".join(f"{k} {v:,}" for k, v in rows.items()) or "none",
        f"{summary.get('analytics', {}).get('profiles', 0):,}",
    )
    return summary
