"""A covering start design: a few configs, queued after the warm start's corners, in which
every value of every dimension appears (`warm_start="cover"`).

Independent random start-up draws leave values out by chance (a batch size, a prune ratio),
and a sampler cannot learn that a value it never saw is good. A covering design of strength 1
is the smallest fix: ``k`` rows, ``k`` the largest number of values of a dimension (at most
`MAX_ROWS`), each row built greedily one dimension at a time in the space's order, taking the
least used of that dimension's cells (ties broken by a seeded draw) whose addition is not
forbidden. A dimension with more values than ``k``, or a continuous one, is split into ``k``
cells (strata over its sorted values, or over its range, on a log scale when it is log), a
point drawn in each: a Latin hypercube over the continuous dimensions. A PerLayer dimension's
cells are its choices, every layer at the same one. A conditional dimension is covered where
its condition holds. Optuna's `QMCSampler` is no substitute: it draws categorical
dimensions with an independent (random) sampler and assumes no conditions.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Iterable
from typing import Any

from paretotune.errors import ConfigError, InvalidConfigError
from paretotune.space import Config, SearchSpace
from paretotune.space.dimensions import Dimension, Float, Int, PerLayer

#: the most rows a covering design has (a dimension with more values is split into strata)
MAX_ROWS = 8


def _cells(dim: Dimension, k: int) -> list[list[Any]]:
    """The values each of the dimension's (at most k) cells draws from."""
    if isinstance(dim, PerLayer):
        layers = list(dim.layers or {})
        return [[{layer: c for layer in layers}] for c in dim.choices]
    values = dim.values()
    if values is None:  # continuous: strata, drawn in later (see `_draw`)
        return [[("stratum", i, k)] for i in range(k)]
    if len(values) <= k:
        return [[v] for v in values]
    if isinstance(dim, (Float, Int)):  # ordered: contiguous strata of the sorted values
        return [values[len(values) * i // k: len(values) * (i + 1) // k] for i in range(k)]
    return [[v] for v in values]  # a categorical with many values: least used still spreads them


def _draw(dim: Dimension, cell: list[Any], rng: random.Random) -> Any:
    value = rng.choice(cell)
    if isinstance(value, tuple) and value and value[0] == "stratum" and isinstance(dim, Float):
        _, i, k = value
        if dim.log:
            lo, hi = math.log(dim.low), math.log(dim.high)
            return dim.validate("cover", min(dim.high, max(dim.low, math.exp(lo + (hi - lo) * (i + rng.random()) / k))))
        return dim.validate("cover", min(dim.high, dim.low + (dim.high - dim.low) * (i + rng.random()) / k))
    return value


def _cell_of(dim: Dimension, cells: list[list[Any]], value: Any) -> int | None:
    if isinstance(dim, Float) and dim.values() is None:
        lo, hi, v = (math.log(dim.low), math.log(dim.high), math.log(value)) if dim.log else (dim.low, dim.high, value)
        return min(len(cells) - 1, int(len(cells) * (v - lo) / (hi - lo))) if hi > lo else 0
    return next((i for i, cell in enumerate(cells) if value in cell), None)


def cover_configs(space: SearchSpace, seed: int | None, start: Iterable[Config] = ()) -> list[Config]:
    """The covering design's configs after the configs in ``start`` (the baseline, the
    corners): their values count as used, so the rows bring the values they lack, and a row
    equal to one of them is left out. The same ``seed`` gives the same design."""
    start = list(start)
    dims = space.dimensions
    counts = [len(d.choices) if isinstance(d, PerLayer) else len(d.values() or ()) for d in dims.values()]
    k = min(MAX_ROWS, max(counts, default=0))
    if k < 2:  # no dimension with two values or more (a continuous space): nothing to cover
        return []
    rng = random.Random(None if seed is None else zlib.crc32(f"cover:{seed}".encode()))
    cells = {name: _cells(dim, k) for name, dim in dims.items()}
    used = {name: [0] * len(c) for name, c in cells.items()}
    for config in start:
        for name, value in config.items():
            i = _cell_of(dims[name], cells[name], value)
            if i is not None:
                used[name][i] += 1
    seen = {c.hash for c in start}
    out: list[Config] = []
    for _ in range(k):
        values: dict[str, Any] = {}
        for name in space.order:
            dim = dims[name]
            if not dim.is_active(values):
                continue
            uses = used[name]
            ties = [rng.random() for _ in uses]
            order = sorted(range(len(uses)), key=lambda i: (uses[i], ties[i]))
            for i in order:
                candidate = _draw(dim, cells[name][i], rng)
                if space.violation({**values, name: candidate}) is None:
                    values[name] = candidate
                    used[name][i] += 1
                    break
            else:  # every value of this dimension is forbidden with the row so far
                break
        try:
            config = space.config(values, fill_defaults=True)
        except (ConfigError, InvalidConfigError):
            continue
        if config.hash not in seen:
            seen.add(config.hash)
            out.append(config)
    return out
