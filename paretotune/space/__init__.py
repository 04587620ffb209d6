"""Search spaces: typed dimensions, conditions, forbidden combinations and `Config`."""

from __future__ import annotations

from paretotune.space.config import Config
from paretotune.space.dimensions import Choice, Dimension, Float, Int, PerLayer
from paretotune.space.scenario import Offline, Scenario, Server, SingleStream, scenario_from_dict
from paretotune.space.space import SearchSpace

__all__ = [
    "Choice", "Config", "Dimension", "Float", "Int", "Offline", "PerLayer", "Scenario",
    "SearchSpace", "Server", "SingleStream", "scenario_from_dict",
]
