"""The interest taxonomy: the shipped tree, sensitivity, priors, and file errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from enrichers.gravatar.mapping import DEFAULT_TOPIC_MAP
from enrichers.testing.world import TOPICS
from policy.bundle import DEFAULT_SPECIAL_CATEGORIES, default_bundle_path, load_bundle
from profiles.errors import ConfigError
from profiles.taxonomy import Sensitivity, load_taxonomy

TAXONOMY = load_taxonomy()


def test_shipped_taxonomy_covers_every_topic_the_shipped_providers_emit() -> None:
    assert TAXONOMY.undeclared(DEFAULT_TOPIC_MAP.values()) == []
    assert TAXONOMY.undeclared(TOPICS) == []


def test_shipped_sensitive_nodes_are_the_policy_bundles_special_categories() -> None:
    assert set(TAXONOMY.sensitive_roots) == set(DEFAULT_SPECIAL_CATEGORIES)
    assert set(TAXONOMY.sensitive_roots) == set(
        load_bundle(default_bundle_path()).special_categories
    )


def test_sensitivity_is_inherited_and_a_child_cannot_clear_it() -> None:
    assert TAXONOMY.sensitivity["interest.health"] is Sensitivity.SPECIAL_CATEGORY
    assert TAXONOMY.sensitivity["interest.health.diabetes"] is Sensitivity.SPECIAL_CATEGORY
    assert TAXONOMY.sensitivity["location.precise"] is Sensitivity.CPRA_SENSITIVE
    assert "interest.fitness" not in TAXONOMY.sensitivity
    assert "interest" not in TAXONOMY.sensitivity


def test_known_and_priors_are_columnwise() -> None:
    topics = pd.Series(["interest.travel", "interest.astrology", None, "interest.outdoor"])
    assert TAXONOMY.known(topics).tolist() == [True, False, False, True]
    priors = TAXONOMY.prior_of(topics)
    assert priors[0] == pytest.approx(0.1)
    assert pd.isna(priors[1])


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "taxonomy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_priors_inherit_from_the_nearest_ancestor(tmp_path: Path) -> None:
    taxonomy = load_taxonomy(
        _write(
            tmp_path,
            "version: t1\ndefault_prior: 0.05\ntopics:\n"
            "  - {key: interest, label: I}\n"
            "  - {key: interest.outdoor, label: O, prior: 0.3}\n"
            "  - {key: interest.outdoor.hiking, label: H}\n"
            "  - {key: interest.outdoor.climbing, label: C, prior: 0.02}\n",
        )
    )
    assert taxonomy.priors == {
        "interest": 0.05,
        "interest.outdoor": 0.3,
        "interest.outdoor.hiking": 0.3,
        "interest.outdoor.climbing": 0.02,
    }
    assert taxonomy.label("interest.outdoor.hiking") == "H"


def test_a_broken_taxonomy_names_file_line_and_problem(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "version: t1\ntopics:\n"
        "  - {key: interest, label: I}\n"
        "  - {key: interest.outdoor.hiking, label: H}\n"
        "  - {key: Interest.Bad, label: B}\n"
        "  - {key: interest.x, label: X, sensitive: secret}\n",
    )
    with pytest.raises(ConfigError) as raised:
        load_taxonomy(path)
    text = "\n".join(raised.value.problems)
    assert f"{path}:5: topics[2].key" in text
    assert f"{path}:6: topics[3].sensitive" in text


def test_a_hole_in_the_tree_is_refused(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "version: t1\ntopics:\n  - {key: interest, label: I}\n  - {key: interest.a.b, label: B}\n",
    )
    with pytest.raises(ConfigError, match=r"interest\.a\.b: its parent interest\.a is not listed"):
        load_taxonomy(path)
