"""`SearchSpace`: named dimensions, their conditions and the forbidden combinations."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import yaml

from paretotune import yamlsafe
from paretotune.errors import ConfigError, InvalidConfigError
from paretotune.space.config import Config
from paretotune.space.dimensions import (
    Dimension,
    PerLayer,
    Scalar,
    dimension_from_dict,
)

if TYPE_CHECKING:
    import optuna

_SPACE_KEYS = {"dimensions", "forbidden"}


def _rule_text(rule: Mapping[str, tuple[Scalar, ...]]) -> str:
    parts = []
    for k, vals in rule.items():
        parts.append(f"{k}={vals[0]!r}" if len(vals) == 1 else f"{k} in {list(vals)}")
    return ", ".join(parts)


class SearchSpace:
    """The joint space a study searches.

    ``forbidden`` lists combinations that must never be built, declared once here: each rule
    maps dimension names to a value or a list of values, and a config matching every entry
    of a rule is forbidden (``{"engine": "torch", "bit_width": 4}``).
    """

    def __init__(
        self,
        dimensions: Mapping[str, Dimension | Mapping[str, Any] | list[Any]],
        *,
        forbidden: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        if not isinstance(dimensions, Mapping) or not dimensions:
            raise ConfigError(f"space: `dimensions` must be a non-empty mapping, got {dimensions!r}")
        dims: dict[str, Dimension] = {}
        for name, dim in dimensions.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ConfigError(
                    f"space: dimension names must be identifiers (letters, digits, _), got {name!r}"
                )
            dims[name] = dimension_from_dict(name, dim)
        self.dimensions: dict[str, Dimension] = dims
        self._order = self._topological_order()
        self.forbidden: list[dict[str, tuple[Scalar, ...]]] = [
            self._check_rule(i, rule) for i, rule in enumerate(forbidden)
        ]

    @property
    def order(self) -> list[str]:
        """The dimensions' names with every condition's dimensions before the one it conditions."""
        return list(self._order)

    # -- construction checks ----------------------------------------------------------------
    def _topological_order(self) -> list[str]:
        for name, dim in self.dimensions.items():
            for parent, allowed in dim.when.items():
                if parent == name:
                    raise ConfigError(f"space.{name}.when refers to itself")
                if parent not in self.dimensions:
                    raise ConfigError(
                        f"space.{name}.when names unknown dimension {parent!r}; known: "
                        f"{list(self.dimensions)}"
                    )
                pdim = self.dimensions[parent]
                if isinstance(pdim, PerLayer):
                    raise ConfigError(f"space.{name}.when cannot depend on per-layer dimension {parent!r}")
                for v in allowed:
                    pdim.validate(f"space.{name}.when.{parent}", v)
        order: list[str] = []
        visiting: set[str] = set()

        def visit(n: str) -> None:
            if n in order:
                return
            if n in visiting:
                raise ConfigError(f"space: conditions form a cycle through {n!r}")
            visiting.add(n)
            for parent in self.dimensions[n].when:
                visit(parent)
            visiting.discard(n)
            order.append(n)

        for n in self.dimensions:
            visit(n)
        return order

    def _check_rule(self, i: int, rule: Any) -> dict[str, tuple[Scalar, ...]]:
        if not isinstance(rule, Mapping) or not rule:
            raise ConfigError(f"space.forbidden[{i}] must be a non-empty mapping, got {rule!r}")
        out: dict[str, tuple[Scalar, ...]] = {}
        for key, val in rule.items():
            if key not in self.dimensions:
                raise ConfigError(
                    f"space.forbidden[{i}] names unknown dimension {key!r}; known: {list(self.dimensions)}"
                )
            dim = self.dimensions[key]
            if isinstance(dim, PerLayer):
                raise ConfigError(f"space.forbidden[{i}] cannot name per-layer dimension {key!r}")
            vals = tuple(val) if isinstance(val, (list, tuple)) else (val,)
            out[key] = tuple(dim.validate(f"space.forbidden[{i}].{key}", v) for v in vals)
        return out

    # -- serialization ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"dimensions": {n: dim.to_dict() for n, dim in self.dimensions.items()}}
        if self.forbidden:
            d["forbidden"] = [{k: list(v) for k, v in r.items()} for r in self.forbidden]
        return d

    @classmethod
    def from_dict(cls, data: Any) -> SearchSpace:
        if not isinstance(data, Mapping):
            raise ConfigError(f"space must be a mapping, got {data!r}")
        unknown = sorted(set(data) - _SPACE_KEYS)
        if unknown:
            raise ConfigError(f"space: unknown key(s) {unknown}; allowed: {sorted(_SPACE_KEYS)}")
        if "dimensions" not in data:
            raise ConfigError("space: `dimensions` is required")
        return cls(data["dimensions"], forbidden=data.get("forbidden") or ())

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SearchSpace:
        return cls.from_dict(json.loads(text))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> SearchSpace:
        return cls.from_dict(yamlsafe.load(text))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"SearchSpace({', '.join(self.dimensions)})"

    # -- binding to a model -------------------------------------------------------------------
    @property
    def is_bound(self) -> bool:
        """False while a PerLayer dimension still waits for the model's layer list."""
        return all(not isinstance(d, PerLayer) or d.layers is not None for d in self.dimensions.values())

    def bind(self, layers: Mapping[str, str] | Sequence[str]) -> SearchSpace:
        """A copy whose ``layers="auto"`` dimensions use the given layer list."""
        dims = {
            n: d.bound(layers) if isinstance(d, PerLayer) and d.layers is None else d
            for n, d in self.dimensions.items()
        }
        return SearchSpace(dims, forbidden=[{k: list(v) for k, v in r.items()} for r in self.forbidden])

    @classmethod
    def standard(cls, task: Any, **options: Any) -> SearchSpace:
        """The default joint space for ``task`` (see ``paretotune.space.standard``)."""
        from paretotune.space.standard import standard_space

        return standard_space(task, **options)

    # -- validity -----------------------------------------------------------------------------
    def violation(self, values: Mapping[str, Any]) -> str | None:
        """The reason ``values`` is forbidden, or None when it is allowed."""
        for rule in self.forbidden:
            if all(k in values and values[k] in allowed for k, allowed in rule.items()):
                return f"forbidden combination: {_rule_text(rule)}"
        return None

    def config(
        self,
        values: Mapping[str, Any],
        *,
        fill_defaults: bool = False,
        allow_forbidden: bool = False,
        baseline: str = "low",
    ) -> Config:
        """Validate a user-given point and resolve it into a Config.

        Unknown names and values of inactive dimensions are errors, never dropped.
        A forbidden combination raises InvalidConfigError with its reason (unless
        ``allow_forbidden``: how an INVALID trial shows the combination that was refused).
        ``fill_defaults`` fills a missing active dimension with its baseline value under the
        ``baseline`` rule (``Dimension.baseline_value``).
        """
        if not isinstance(values, Mapping):
            raise ConfigError(f"config must be a mapping of dimension name to value, got {values!r}")
        unknown = sorted(set(values) - set(self.dimensions))
        if unknown:
            raise ConfigError(f"config: unknown dimension(s) {unknown}; known: {list(self.dimensions)}")
        out: dict[str, Any] = {}
        for name in self._order:
            dim = self.dimensions[name]
            active = dim.is_active(out)
            if not active:
                if name in values:
                    cond = _rule_text(dim.when)
                    raise ConfigError(f"config: `{name}` is set but inactive here (it needs {cond})")
                continue
            if name in values:
                out[name] = dim.validate(name, values[name])
            elif fill_defaults:
                out[name] = dim.baseline_value(baseline)
            else:
                raise ConfigError(f"config: active dimension `{name}` has no value")
        reason = self.violation(out)
        if reason and not allow_forbidden:
            raise InvalidConfigError(reason)
        return Config({n: out[n] for n in self.dimensions if n in out})

    def baseline(self, rule: str = "low") -> Config:
        """The unoptimized reference point: every active dimension at its declared default; one
        that declares none at its lower bound (``rule="low"``: a model's knobs, where the lower
        bound means nothing applied) or the centre of its range (``"centre"``, a black-box
        function's parameters); a categorical one at its first choice."""
        return self.config({}, fill_defaults=True, baseline=rule)

    # -- sampling -------------------------------------------------------------------------------
    def suggest(self, trial: optuna.trial.BaseTrial) -> Config:
        """Draw a point through an Optuna trial (define-by-run, conditions respected).

        Raises InvalidConfigError (after the params are recorded on the trial) when the
        sampler lands on a forbidden combination; the study records that trial as invalid.
        """
        out: dict[str, Any] = {}
        for name in self._order:
            dim = self.dimensions[name]
            if dim.is_active(out):
                out[name] = _suggest_one(trial, name, dim)
        reason = self.violation(out)
        if reason:
            raise InvalidConfigError(reason)
        return Config({n: out[n] for n in self.dimensions if n in out})

    def to_params(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Optuna's flat params for a config (PerLayer dims become ``name.group``)."""
        params: dict[str, Any] = {}
        for name, value in config.items():
            dim = self.dimensions[name]
            if isinstance(dim, PerLayer):
                for group, members in dim.groups().items():
                    params[f"{name}.{group}"] = value[members[0]]
            else:
                params[name] = value
        return params

    def from_params(self, params: Mapping[str, Any], *, allow_forbidden: bool = False) -> Config:
        """The Config behind Optuna's flat params (the inverse of ``to_params``)."""
        values: dict[str, Any] = {}
        for name, dim in self.dimensions.items():
            if isinstance(dim, PerLayer):
                groups = dim.groups()
                given = [g for g in groups if f"{name}.{g}" in params]
                if given and len(given) < len(groups):  # a trial still being suggested, say
                    missing = [f"{name}.{g}" for g in groups if g not in given]
                    raise ConfigError(f"params: {name} is incomplete, missing {missing}")
                if given:
                    values[name] = {
                        layer: params[f"{name}.{g}"] for g, members in groups.items() for layer in members
                    }
            elif name in params:
                values[name] = params[name]
        return self.config(values, allow_forbidden=allow_forbidden)

    def sample(self, rng: random.Random | int | None = None, *, max_tries: int = 1000) -> Config:
        """A random valid config (rejection sampling over the forbidden rules)."""
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        for _ in range(max_tries):
            out: dict[str, Any] = {}
            for name in self._order:
                dim = self.dimensions[name]
                if dim.is_active(out):
                    out[name] = dim.sample(rng)
            if self.violation(out) is None:
                return Config({n: out[n] for n in self.dimensions if n in out})
        raise ConfigError(f"space: no valid config found in {max_tries} random draws; check `forbidden`")

    def neighbor(self, config: Mapping[str, Any], rng: random.Random, *, max_tries: int = 100) -> Config:
        """A valid config one step from `config`: one of its Optuna params (one dimension, or
        one layer group of a PerLayer one) redrawn at random; dimensions that the change
        activates are drawn too, ones it deactivates are dropped. Raises ConfigError when
        `max_tries` draws give nothing valid and different."""
        base = self.to_params(config)
        for _ in range(max_tries):
            draw = self.to_params(self.sample(rng))
            key = rng.choice(sorted(set(base) | set(draw)))
            mixed = {**draw, **{k: v for k, v in base.items() if k != key}}
            if mixed.get(key) == base.get(key):
                continue
            values: dict[str, Any] = {}
            try:
                for name in self._order:
                    dim = self.dimensions[name]
                    if not dim.is_active(values):
                        continue
                    if isinstance(dim, PerLayer):
                        values[name] = {
                            layer: mixed[f"{name}.{g}"] for g, members in dim.groups().items() for layer in members
                        }
                    else:
                        values[name] = mixed[name]
            except KeyError:  # the change activated a dimension neither point had: draw again
                continue
            if self.violation(values) is None:
                out = Config({n: values[n] for n in self.dimensions if n in values})
                if self.to_params(out) != base:
                    return out
        raise ConfigError(f"space: no valid neighbour of {dict(config)} in {max_tries} draws")

    def size(self, at_most: int = 10**9) -> int | None:
        """How many valid configs the space holds (None when a dimension is continuous);
        counting stops once it passes ``at_most``, so a huge space costs little. PerLayer
        dimensions (which no condition or rule names) count as choices ** groups."""
        dims = self.dimensions
        if any(d.values() is None for d in dims.values() if not isinstance(d, PerLayer)):
            return None
        scalar = [n for n in self._order if not isinstance(dims[n], PerLayer)]
        layered = [d for d in dims.values() if isinstance(d, PerLayer)]
        total = 0

        def rec(i: int, acc: dict[str, Any]) -> None:
            nonlocal total
            if total > at_most:
                return
            if i == len(scalar):
                if self.violation(acc) is None:
                    n = 1
                    for layer_dim in layered:
                        if layer_dim.is_active(acc):
                            n *= len(layer_dim.choices) ** len(layer_dim.groups())
                    total += n
                return
            name = scalar[i]
            dim = dims[name]
            if not dim.is_active(acc):
                rec(i + 1, acc)
                return
            for v in dim.values() or ():
                acc[name] = v
                rec(i + 1, acc)
            acc.pop(name, None)

        rec(0, {})
        return total

    def grid(self) -> Iterator[Config]:
        """Every valid config of a finite space, in a deterministic order."""
        for name, dim in self.dimensions.items():
            if dim.values() is None:
                raise ConfigError(
                    f"space.{name} is continuous; give it a `step` (or use Choice) to enumerate the grid"
                )

        def rec(i: int, acc: dict[str, Any]) -> Iterator[dict[str, Any]]:
            if i == len(self._order):
                yield dict(acc)
                return
            name = self._order[i]
            dim = self.dimensions[name]
            if not dim.is_active(acc):
                yield from rec(i + 1, acc)
                return
            for v in dim.values() or ():
                acc[name] = v
                yield from rec(i + 1, acc)
            acc.pop(name, None)

        for values in rec(0, {}):
            if self.violation(values) is None:
                yield Config({n: values[n] for n in self.dimensions if n in values})


def _suggest_one(trial: optuna.trial.BaseTrial, name: str, dim: Dimension) -> Any:
    from paretotune.space.dimensions import Choice, Float, Int

    if isinstance(dim, Float):
        return dim.validate(name, trial.suggest_float(name, dim.low, dim.high, step=dim.step, log=dim.log))
    if isinstance(dim, Int):
        return trial.suggest_int(name, dim.low, dim.high, step=dim.step, log=dim.log)
    if isinstance(dim, Choice):
        return dim.validate(name, trial.suggest_categorical(name, dim.choices))
    if isinstance(dim, PerLayer):
        out: dict[str, Any] = {}
        for group, members in dim.groups().items():
            choice = trial.suggest_categorical(f"{name}.{group}", dim.choices)
            for layer in members:
                out[layer] = choice
        return out
    raise ConfigError(f"space.{name}: unsupported dimension {dim!r}")
