"""The persona stage of the nightly flow: segments of the profiles allowed for profiling.

Personas are rebuilt every run from the behaviour scores and the merged interests above the
profiling floor (`profiles.personas`): k-means with k chosen by silhouette, or the rules of
`personas.rules`. Each profile allowed at gate B gets `persona` (id) and `persona_name`;
nobody else is placed in one. `personas.json` holds the k-anonymous cards (no persona or
category smaller than `personas.min_group_size`), compared by name with the previous
successful run's document in the same output folder, so the report shows how sizes moved.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.behaviour import PROFILING_COLUMN
from profiles.identity import PROFILE_ID
from profiles.personas import PersonaSettings, assign_personas, persona_cards, sizes_by_name
from profiles.rundir import previous_run_file
from profiles.taxonomy import Taxonomy

PERSONAS_FILE = "personas.json"


def previous_document(output_dir: Path, run_id: str) -> dict[str, Any] | None:
    """The persona document of the latest published run before `run_id` (run ids sort by
    time; partial folders start with a dot and are never read), or None."""
    path = previous_run_file(output_dir, run_id, PERSONAS_FILE)
    if path is None:
        return None
    document: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return document


@task(name="personas", persist_result=False, cache_policy=NO_CACHE)
def build_personas(
    settings: PersonaSettings,
    taxonomy: Taxonomy,
    *,
    profiles: pd.DataFrame,
    interests: pd.DataFrame,
    output_dir: Path,
    run_id: str,
    as_of: datetime,
) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """profiles with `persona` and `persona_name`, and the persona document (None when off).

    `interests`: profile_id, topic, confidence of the merged interests gate B allowed.
    """
    profiles = profiles.copy()
    profiles["persona"] = pd.Series(pd.NA, index=profiles.index, dtype="string")
    profiles["persona_name"] = pd.Series(pd.NA, index=profiles.index, dtype="string")
    if not settings.enabled:
        return profiles, None
    logger = get_run_logger()
    allowed = profiles[PROFILING_COLUMN] == "allow"
    members = profiles.loc[allowed].reset_index(drop=True)
    held = interests[interests[PROFILE_ID].isin(members[PROFILE_ID])]
    labels = dict(taxonomy.labels)
    assignment = assign_personas(members, held, settings, labels=labels)
    previous = previous_document(output_dir, run_id)
    document = persona_cards(
        members,
        held,
        assignment,
        settings,
        labels=labels,
        as_of=as_of,
        previous=None if previous is None else sizes_by_name(previous),
    )
    persona = profiles[PROFILE_ID].map(assignment.labels)
    profiles["persona"] = persona.astype("string")
    profiles["persona_name"] = persona.map(assignment.names).astype("string")
    logger.info(
        "personas (%s, k=%d by %s): %s shown, %s hidden (%s profiles) below %d members",
        assignment.method,
        assignment.k,
        assignment.criterion.name,
        ", ".join(f"{c['name']} {c['size']:,}" for c in document["cards"]) or "none",
        document["hidden"]["personas"],
        f"{document['hidden']['profiles']:,}",
        settings.min_group_size,
    )
    return profiles, document


def persona_summary(document: dict[str, Any] | None) -> dict[str, Any]:
    """The run summary's persona section: the choice and each card's name and size."""
    if document is None:
        return {}
    return {
        "method": document["method"],
        "k": document["k"],
        "criterion": document["criterion"]["name"],
        "min_group_size": document["min_group_size"],
        "hidden": document["hidden"],
        "compared_with_previous": document.get("moved") is not None,
        "cards": [
            {"name": c["name"], "size": c["size"], "change": c["change"]} for c in document["cards"]
        ],
    }
