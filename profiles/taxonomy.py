"""The interest taxonomy: which topics exist, which are sensitive, and each one's prior.

A taxonomy file (YAML; the shipped one is `profiles/conf/taxonomy.yaml`) lists topics as dot
keys (`interest.outdoor.hiking`), each with a label, optionally a `sensitive` flag and a
`prior`. Every key's parents must be listed as well, so the tree has no holes.

- `sensitive: special_category` (GDPR Art. 9(1)) or `cpra_sensitive` (CPRA sensitive
  personal information) marks a node and all nodes below it; a child cannot clear it. Gate B
  drops signals under such nodes (`policy.engine.filter_signals(..., sensitive=...)`).
- `prior` is the base rate fusion starts from; a node without one inherits its nearest
  ancestor's, and the root's default is `default_prior`.

Signals are checked against the taxonomy column-wise (`known`): a topic that is not a listed
key is unknown and dropped by the caller, never passed through. The taxonomy lives in
`profiles` because both `enrichers` (providers map labels onto it) and `policy` (gate B) may
import `profiles`, and not each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from profiles.store.signals import TOPIC_MAX_LENGTH, TOPIC_PATTERN
from profiles.yamlconf import load_yaml_model

DEFAULT_TAXONOMY: Final = Path(__file__).resolve().parent / "conf" / "taxonomy.yaml"
"""The shipped taxonomy."""


class Sensitivity(StrEnum):
    """Why a topic may not be used for profiling without an explicit rule."""

    SPECIAL_CATEGORY = "special_category"
    """GDPR Art. 9(1) special category of personal data (also CPRA sensitive)."""
    CPRA_SENSITIVE = "cpra_sensitive"
    """CPRA sensitive personal information that is not an Art. 9 category."""


TopicKey = Annotated[str, Field(pattern=f"^{TOPIC_PATTERN}$", max_length=TOPIC_MAX_LENGTH)]
Probability = Annotated[float, Field(gt=0, lt=1)]


class TopicNode(BaseModel):
    """One topic of the taxonomy file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: TopicKey
    label: Annotated[str, Field(min_length=1, max_length=80)]
    sensitive: Sensitivity | None = None
    prior: Probability | None = None


class TaxonomyFile(BaseModel):
    """The taxonomy file as written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Annotated[str, Field(min_length=1, max_length=40)]
    default_prior: Probability = 0.1
    topics: Annotated[tuple[TopicNode, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _tree(self) -> TaxonomyFile:
        keys = [node.key for node in self.topics]
        seen: set[str] = set()
        problems = []
        for key in keys:
            if key in seen:
                problems.append(f"{key} is listed twice")
            seen.add(key)
        for key in keys:
            parent = parent_of(key)
            if parent is not None and parent not in seen:
                problems.append(f"{key}: its parent {parent} is not listed")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def parent_of(key: str) -> str | None:
    """`interest.outdoor` for `interest.outdoor.hiking`; None for a root."""
    head, dot, _ = key.rpartition(".")
    return head if dot else None


def ancestors(key: str) -> list[str]:
    """The key and every key above it, nearest first."""
    out = [key]
    while (parent := parent_of(out[-1])) is not None:
        out.append(parent)
    return out


@dataclass(frozen=True)
class Taxonomy:
    """A loaded taxonomy: labels, inherited sensitivity and priors per key."""

    version: str
    labels: Mapping[str, str]
    sensitivity: Mapping[str, Sensitivity]
    """Every sensitive key (a flagged node and each node below it) → why."""
    priors: Mapping[str, float]
    """Every key → its prior (own, inherited, or the default)."""

    @classmethod
    def from_file(cls, document: TaxonomyFile) -> Taxonomy:
        nodes = {node.key: node for node in document.topics}
        sensitivity: dict[str, Sensitivity] = {}
        priors: dict[str, float] = {}
        for key in nodes:
            lineage = [nodes[k] for k in ancestors(key)]
            flags = [n.sensitive for n in lineage if n.sensitive is not None]
            if flags:
                # the highest flag wins: Art. 9 above CPRA-only
                sensitivity[key] = min(flags, key=list(Sensitivity).index)
            own = [n.prior for n in lineage if n.prior is not None]
            priors[key] = own[0] if own else document.default_prior
        return cls(
            version=document.version,
            labels={key: node.label for key, node in nodes.items()},
            sensitivity=sensitivity,
            priors=priors,
        )

    @cached_property
    def keys(self) -> frozenset[str]:
        """Every listed topic."""
        return frozenset(self.labels)

    @cached_property
    def sensitive_roots(self) -> tuple[str, ...]:
        """The smallest set of sensitive keys covering every sensitive key (for gate B)."""
        return tuple(
            sorted(
                key
                for key in self.sensitivity
                if (parent := parent_of(key)) is None or parent not in self.sensitivity
            )
        )

    def known(self, topics: pd.Series) -> npt.NDArray[np.bool_]:
        """Which topics are listed keys (missing values are not)."""
        return topics.isin(self.keys).to_numpy(dtype=bool)

    def prior_of(self, topics: pd.Series) -> npt.NDArray[np.float64]:
        """The prior of each topic (NaN for an unknown one)."""
        return np.asarray(topics.map(self.priors), dtype=np.float64)

    def label(self, topic: str) -> str:
        """A topic's label, or the key itself if it is not listed."""
        return self.labels.get(topic, topic)

    def group_of(self, topic: str, depth: int = 2) -> str:
        """The ancestor `depth` levels deep (`interest.outdoor` for depth 2), or the topic."""
        parts = topic.split(".")
        return ".".join(parts[:depth])

    def undeclared(self, topics: Iterable[str]) -> list[str]:
        """The topics (e.g. of a provider's topic map) that are not listed, sorted."""
        return sorted(set(topics) - self.keys)


def load_taxonomy(path: Path | None = None) -> Taxonomy:
    """Load and check a taxonomy file (default: the shipped one); ConfigError with file:line."""
    return Taxonomy.from_file(load_yaml_model(path or DEFAULT_TAXONOMY, TaxonomyFile))
