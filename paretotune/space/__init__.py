"""Search spaces: typed dimensions, conditions, forbidden combinations and `Config`."""

from __future__ import annotations

from paretotune.space.config import Config
from paretotune.space.dimensions import Choice, Dimension, Float, Int, PerLayer
from paretotune.space.space import SearchSpace

__all__ = ["Choice", "Config", "Dimension", "Float", "Int", "PerLayer", "SearchSpace"]
