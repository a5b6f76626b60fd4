"""enrichers.behaviour.config: the `behaviour:` section, errors with file:line, README example."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from enrichers.behaviour.config import BehaviourSettings, parse_behaviour
from enrichers.behaviour.provider import score_columns
from profiles.errors import ConfigError


def test_defaults_and_column_names() -> None:
    settings = parse_behaviour({}, path=Path("enrich.yaml"))
    assert settings == BehaviourSettings()
    assert settings.clv.suffix == "365d"
    assert "clv_365d" in score_columns(settings)


def test_every_error_is_reported_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "enrich.yaml"
    path.write_text(
        "sources: []\n"
        "behaviour:\n"
        "  money:\n"
        "    rates: {DKK: -1}\n"
        "  clv:\n"
        "    horizon_days: 0\n"
        "  colour: blue\n",
        encoding="utf-8",
    )
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))["behaviour"]
    with pytest.raises(ConfigError) as caught:
        parse_behaviour(raw, path=path)
    problems = "\n".join(caught.value.problems)
    assert len(caught.value.problems) == 3
    assert f"{path}:4: behaviour.money.rates.DKK:" in problems
    assert f"{path}:6: behaviour.clv.horizon_days:" in problems
    assert f"{path}:7: behaviour.colour: Extra inputs are not permitted" in problems


def test_the_readme_example_is_valid(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[3] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Behaviour scores", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    settings = parse_behaviour(yaml.safe_load(example)["behaviour"], path=tmp_path / "x.yaml")
    assert settings.money.rates["DKK"] == pytest.approx(0.134)
    assert settings.clv.period == "week"
