"""Settings of the first-party `behaviour` provider: the `behaviour:` section of enrich.yaml.

    behaviour:
      enabled: true
      money: {scoring_currency: EUR, rates: {DKK: 0.134, SEK: 0.089}, returns: net}
      rfm: {...}          # enrichers.behaviour.rfm.RfmSettings (segment map)
      abc_xyz: {...}      # enrichers.behaviour.abcxyz.AbcXyzSettings
      interests: {...}    # enrichers.behaviour.interests.InterestSettings
      clv: {period: week, horizon_days: 365, discount_rate_annual: 0.1, holdout_days: 180}

Every error is reported with file and line, like the rest of enrich.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from enrichers.behaviour.abcxyz import AbcXyzSettings
from enrichers.behaviour.interests import InterestSettings
from enrichers.behaviour.rfm import MoneySettings, RfmSettings
from profiles.yamlconf import validate_section

SECTION = "behaviour"


class ClvSettings(BaseModel):
    """BG/NBD and Gamma-Gamma: time unit, horizon, discounting and the hold-out check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    period: Literal["day", "week"] = "week"
    """Unit of frequency, recency and T (a repeat purchase is one more distinct period)."""
    horizon_days: Annotated[int, Field(ge=1, le=3650)] = 365
    """Expected purchases and CLV are over this many days (column suffix `_<h>d`)."""
    discount_rate_annual: Annotated[float, Field(ge=0, le=1)] = 0.10
    """CLV discount rate per year, converted to the period."""
    holdout_days: Annotated[int, Field(ge=0, le=3650)] = 180
    """The hold-out check fits on the data up to this many days before as-of and compares
    predicted with actual repeat purchases since; 0 skips it."""
    min_repeat_customers: Annotated[int, Field(ge=2)] = 30
    """Fewer customers with a repeat purchase than this: the models are not fitted."""

    @property
    def suffix(self) -> str:
        """Column suffix of the horizon: `365d`."""
        return f"{self.horizon_days}d"

    @property
    def period_days(self) -> int:
        """Days per period."""
        return 1 if self.period == "day" else 7


class BehaviourSettings(BaseModel):
    """Everything the behaviour provider needs besides the order lines and the as-of time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    money: MoneySettings = Field(default_factory=MoneySettings)
    rfm: RfmSettings = Field(default_factory=RfmSettings)
    abc_xyz: AbcXyzSettings = Field(default_factory=AbcXyzSettings)
    interests: InterestSettings = Field(default_factory=InterestSettings)
    clv: ClvSettings = Field(default_factory=ClvSettings)


def parse_behaviour(raw: dict[str, Any], *, path: Path) -> BehaviourSettings:
    """Validate enrich.yaml's `behaviour` section; ConfigError lists every problem as
    `file:line: behaviour.field: message`."""
    return validate_section(raw, BehaviourSettings, section=SECTION, path=path)
