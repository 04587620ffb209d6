"""Sampler registry: a name (and options) -> an Optuna sampler.

Every registered sampler handles two and three objectives and takes a seed. Constraints reach
the samplers that use them through ``Trial.set_constraint`` at tell time (infeasible trials are
kept, but ranked behind feasible ones).
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import optuna

from paretotune.errors import ConfigError
from paretotune.space import SearchSpace

SamplerFactory = Callable[..., optuna.samplers.BaseSampler]

_REGISTRY: dict[str, SamplerFactory] = {}
#: samplers whose factory takes the study's `space=` (they propose whole configs)
_NEEDS_SPACE: set[str] = set()
#: a study's sampler when none is named: `surrogate` or `tpe`, by the space (`auto_sampler`)
DEFAULT_SAMPLER = "auto"


def register_sampler(name: str, factory: SamplerFactory, *, needs_space: bool = False) -> None:
    """Add a sampler. A name already taken is an error, never a silent overwrite.
    ``needs_space``: the factory is also given the study's SearchSpace, as ``space=``."""
    if name in _REGISTRY:
        raise ConfigError(f"sampler {name!r} is already registered")
    _REGISTRY[name] = factory
    if needs_space:
        _NEEDS_SPACE.add(name)


def sampler_names() -> list[str]:
    return sorted(_REGISTRY)


def worker_seed(seed: int | None, worker: str) -> int | None:
    """Each worker process gets its own stream, so parallel workers don't propose alike."""
    if seed is None:
        return None
    return (seed * 1_000_003 + zlib.crc32(worker.encode())) % (2**31)


def make_sampler(
    spec: str | Mapping[str, Any],
    *,
    seed: int | None,
    space: SearchSpace | None = None,
) -> optuna.samplers.BaseSampler:
    """``"tpe"`` or ``{"name": "nsga2", "population_size": 20}``. ``space``: the study's, for
    the samplers that need one (`surrogate`)."""
    if isinstance(spec, Mapping):
        options = dict(spec)
        name = options.pop("name", None)
    else:
        name, options = spec, {}
    if name not in _REGISTRY:
        raise ConfigError(f"sampler: unknown name {name!r}; valid samplers: {sampler_names()}")
    if name in _NEEDS_SPACE:
        if space is None:
            raise ConfigError(f"sampler {name!r} proposes whole configs and needs the study's space")
        options["space"] = space
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _REGISTRY[name](seed=seed, **options)
    except TypeError as exc:
        raise ConfigError(f"sampler {name!r}: bad option ({exc})") from None


def _tpe(*, seed: int | None, **opts: Any) -> optuna.samplers.BaseSampler:
    # Univariate (one Parzen estimator per dimension, Optuna's own default): on the tabular
    # digits benchmark, with the study's warm start and answered duplicates, it reaches more
    # of the true hypervolume than multivariate + group, which sees only the unconditional
    # dimensions (benchmarks/sampler_efficiency.py; the figures are in docs/benchmarks.md).
    # constant_liar keeps parallel workers from proposing the same point while trials are
    # still running. {"multivariate": True, "group": True} gives the joint model.
    kw: dict[str, Any] = {"multivariate": False, "group": False, "constant_liar": True, "n_startup_trials": 10}
    kw.update(opts)
    return optuna.samplers.TPESampler(seed=seed, **kw)


def _nsga2(*, seed: int | None, **opts: Any) -> optuna.samplers.BaseSampler:
    kw: dict[str, Any] = {"population_size": 20}
    kw.update(opts)
    return optuna.samplers.NSGAIISampler(seed=seed, **kw)


def _nsga3(*, seed: int | None, **opts: Any) -> optuna.samplers.BaseSampler:
    kw: dict[str, Any] = {"population_size": 20}
    kw.update(opts)
    return optuna.samplers.NSGAIIISampler(seed=seed, **kw)


def _gp(*, seed: int | None, **opts: Any) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed, **opts)


def _random(*, seed: int | None, **opts: Any) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed, **opts)


def auto_sampler(space: SearchSpace) -> str:
    """The sampler ``"auto"`` stands for: `surrogate` over a finite space (every dimension a
    choice, an integer range or a float on a step grid: a deployment space), `tpe` where a
    dimension is continuous. Measured in docs/benchmarks.md ("The surrogate sampler")."""
    return "surrogate" if space.size(at_most=1) is not None else "tpe"


def _auto(*, seed: int | None, space: SearchSpace, **opts: Any) -> optuna.samplers.BaseSampler:
    if opts:
        raise TypeError(f"'auto' takes no options (it stands for surrogate or tpe by the space; "
                        f"name one of them to give options), got {sorted(opts)}")
    if auto_sampler(space) == "surrogate":
        return _surrogate(seed=seed, space=space)
    return _tpe(seed=seed)


def _surrogate(*, seed: int | None, space: SearchSpace, **opts: Any) -> optuna.samplers.BaseSampler:
    from paretotune.search.surrogate import SurrogateSampler

    return SurrogateSampler(space, seed=seed, **opts)


def _grid(*, seed: int | None, **opts: Any) -> optuna.samplers.BaseSampler:
    # Optuna's GridSampler needs a fixed, unconditional grid; BruteForceSampler enumerates a
    # define-by-run (conditional) discrete space exhaustively, which is what a grid means here.
    return optuna.samplers.BruteForceSampler(seed=seed, **opts)


for _name, _factory in {
    "tpe": _tpe,
    "nsga2": _nsga2,
    "nsga3": _nsga3,
    "gp": _gp,
    "random": _random,
    "grid": _grid,
}.items():
    register_sampler(_name, _factory)
register_sampler("surrogate", _surrogate, needs_space=True)
register_sampler("auto", _auto, needs_space=True)
