"""Typed dimensions of a search space.

Every dimension validates itself on construction and says what it got. Bounds are inclusive,
everywhere: ``Float(0.0, 0.6, step=0.1)`` can produce both 0.0 and 0.6.
"""

from __future__ import annotations

import math
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from paretotune.errors import ConfigError

Scalar = str | int | float | bool | None
_SCALAR_TYPES = (str, int, float, bool, type(None))


def _round(x: float) -> float:
    """Snap float noise away (0.30000000000000004 -> 0.3) so JSON forms are canonical."""
    return float(f"{x:.12g}")


def _normalize_when(owner: str, when: Mapping[str, Any] | None) -> dict[str, tuple[Scalar, ...]]:
    if when is None:
        return {}
    if not isinstance(when, Mapping):
        raise ConfigError(
            f"`when` of {owner} must be a mapping of dimension name to value(s), got {when!r}"
        )
    out: dict[str, tuple[Scalar, ...]] = {}
    for key, val in when.items():
        vals = tuple(val) if isinstance(val, (list, tuple)) else (val,)
        if not vals:
            raise ConfigError(f"`when` of {owner}: {key!r} lists no values")
        out[str(key)] = vals
    return out


class Dimension(ABC):
    """One axis of the search space.

    ``when`` makes the dimension conditional: it is active only when every named dimension
    has one of the listed values (``when={"engine": "onnxruntime", "bit_width": [8]}``).
    """

    kind: ClassVar[str]
    _keys: ClassVar[tuple[str, ...]]

    def __init__(self, *, default: Any = None, when: Mapping[str, Any] | None = None) -> None:
        self.when = _normalize_when(type(self).__name__, when)
        self._default = default

    # -- the contract -------------------------------------------------------------------
    @abstractmethod
    def validate(self, name: str, value: Any) -> Any:
        """Return the canonical form of ``value``, or raise ConfigError naming ``name``."""

    @abstractmethod
    def values(self) -> list[Any] | None:
        """Every value, for finite dimensions; None for continuous ones."""

    @abstractmethod
    def sample(self, rng: random.Random) -> Any:
        """A uniformly drawn value, for property tests and random starts."""

    @abstractmethod
    def _params(self) -> dict[str, Any]:
        """Constructor arguments, for the JSON round trip."""

    # -- shared ---------------------------------------------------------------------------
    @property
    def default(self) -> Any:
        """The value of the unoptimized baseline."""
        return self._default

    def baseline_value(self, rule: str = "low") -> Any:
        """This dimension's value in the baseline under ``rule`` (see ``BASELINE_RULES``): the
        declared default if there is one; else ``default`` ("low": the lower bound, "nothing
        applied") or, under "centre", the centre of a numeric range (a categorical has no
        centre and keeps its first choice)."""
        if rule not in BASELINE_RULES:
            raise ConfigError(f"baseline rule must be one of {list(BASELINE_RULES)}, got {rule!r}")
        if rule == "centre" and self._default is None:
            return self._centre()
        return self.default

    def _centre(self) -> Any:
        return self.default

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.kind, **self._params()}
        if self._default is not None:
            d["default"] = self._default
        if self.when:
            d["when"] = {k: list(v) for k, v in self.when.items()}
        return d

    def is_active(self, values: Mapping[str, Any]) -> bool:
        return all(values.get(k, _MISSING) in allowed for k, allowed in self.when.items())

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(repr(self.to_dict()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "type")
        return f"{type(self).__name__}({args})"


#: where the baseline puts a dimension that declares no default: "low", its lower bound (a
#: model's knobs: nothing applied) or "centre", the middle of its range (a black-box function's
#: parameters, where a corner is an extreme point that draws the sampler towards it)
BASELINE_RULES = ("low", "centre")


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def _number(owner: str, field: str, value: Any, *, integer: bool = False) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (not integer and not math.isfinite(value)):
        kind = "an integer" if integer else "a finite number"
        raise ConfigError(f"`{field}` of {owner} must be {kind}, got {value!r}")
    return value


class Float(Dimension):
    """A real interval ``[low, high]``, optionally on a ``step`` grid or log-scaled."""

    kind = "float"

    def __init__(
        self,
        low: float,
        high: float,
        *,
        step: float | None = None,
        log: bool = False,
        default: float | None = None,
        when: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(when=when)
        self.low = float(_number("Float", "low", low))
        self.high = float(_number("Float", "high", high))
        if not self.low <= self.high:
            raise ConfigError(f"Float: `low <= high` must hold, but got (low={low}, high={high})")
        if step is not None:
            step = float(_number("Float", "step", step))
            if step <= 0:
                raise ConfigError(f"Float: `step` must be > 0, got step={step}")
            if log:
                raise ConfigError("Float: `step` and `log=True` cannot be combined")
            n = (self.high - self.low) / step
            if abs(n - round(n)) > 1e-9:
                raise ConfigError(
                    f"Float: `high - low` must be a multiple of `step`, but got "
                    f"(low={low}, high={high}, step={step})"
                )
        if log and self.low <= 0:
            raise ConfigError(f"Float: `low > 0` must hold with log=True, but got low={low}")
        self.step = step
        self.log = bool(log)
        if default is not None:
            self._default = self.validate("default", default)

    @property
    def default(self) -> float:
        return self.low if self._default is None else self._default

    def _centre(self) -> float:
        """The range's middle: geometric on a log scale, the lower middle grid point on a step."""
        grid = self.values()
        if grid is not None:
            return grid[(len(grid) - 1) // 2]
        if self.log:
            return _round(math.sqrt(self.low * self.high))
        return _round((self.low + self.high) / 2)

    def validate(self, name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"`{name}` must be a finite number in [{self.low}, {self.high}], got {value!r}")
        v = float(value)
        if not self.low - 1e-12 <= v <= self.high + 1e-12:
            raise ConfigError(f"`{name}` must be in [{self.low}, {self.high}] (inclusive), got {value!r}")
        if self.step is not None:
            k = (v - self.low) / self.step
            if abs(k - round(k)) > 1e-6:
                raise ConfigError(
                    f"`{name}` must lie on the grid {self.low} + k*{self.step}, got {value!r}"
                )
            v = self.low + round(k) * self.step
        return _round(min(max(v, self.low), self.high))

    def values(self) -> list[float] | None:
        if self.step is None:
            return None
        n = int(round((self.high - self.low) / self.step))
        return [_round(self.low + i * self.step) for i in range(n + 1)]

    def sample(self, rng: random.Random) -> float:
        grid = self.values()
        if grid is not None:
            return rng.choice(grid)
        if self.log:
            return _round(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return _round(rng.uniform(self.low, self.high))

    def _params(self) -> dict[str, Any]:
        d: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.step is not None:
            d["step"] = self.step
        if self.log:
            d["log"] = True
        return d


class Int(Dimension):
    """An integer range ``[low, high]`` with ``step``, or log-scaled."""

    kind = "int"

    def __init__(
        self,
        low: int,
        high: int,
        *,
        step: int = 1,
        log: bool = False,
        default: int | None = None,
        when: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(when=when)
        self.low = _number("Int", "low", low, integer=True)
        self.high = _number("Int", "high", high, integer=True)
        self.step = _number("Int", "step", step, integer=True)
        if not self.low <= self.high:
            raise ConfigError(f"Int: `low <= high` must hold, but got (low={low}, high={high})")
        if self.step < 1:
            raise ConfigError(f"Int: `step` must be >= 1, got step={step}")
        if (self.high - self.low) % self.step:
            raise ConfigError(
                f"Int: `high - low` must be a multiple of `step`, but got "
                f"(low={low}, high={high}, step={step})"
            )
        if log and self.step != 1:
            raise ConfigError(f"Int: `step` must be 1 with log=True, got step={step}")
        if log and self.low < 1:
            raise ConfigError(f"Int: `low >= 1` must hold with log=True, but got low={low}")
        self.log = bool(log)
        if default is not None:
            self._default = self.validate("default", default)

    @property
    def default(self) -> int:
        return self.low if self._default is None else self._default

    def _centre(self) -> int:
        """The range's middle on its step grid (the lower one of two); geometric on a log scale."""
        if self.log:
            return min(self.high, max(self.low, round(math.sqrt(self.low * self.high))))
        return self.low + ((self.high - self.low) // self.step // 2) * self.step

    def validate(self, name: str, value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"`{name}` must be an integer in [{self.low}, {self.high}], got {value!r}")
        if not self.low <= value <= self.high or (value - self.low) % self.step:
            raise ConfigError(
                f"`{name}` must be in [{self.low}, {self.high}] (inclusive) with step "
                f"{self.step}, got {value!r}"
            )
        return value

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))

    def sample(self, rng: random.Random) -> int:
        if self.log:
            x = math.exp(rng.uniform(math.log(self.low), math.log(self.high + 1)))
            return min(self.high, int(x))
        return rng.choice(self.values())

    def _params(self) -> dict[str, Any]:
        d: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.step != 1:
            d["step"] = self.step
        if self.log:
            d["log"] = True
        return d


def _check_choices(owner: str, choices: Any) -> tuple[Scalar, ...]:
    if isinstance(choices, (str, bytes)) or not isinstance(choices, Iterable):
        raise ConfigError(f"{owner}: `choices` must be a list of values, got {choices!r}")
    out = tuple(choices)
    if not out:
        raise ConfigError(f"{owner}: `choices` must not be empty")
    for c in out:
        if not isinstance(c, _SCALAR_TYPES):
            raise ConfigError(
                f"{owner}: each choice must be a str, int, float, bool or None, got {c!r}"
            )
    seen: set[tuple[type, Any]] = set()  # a set: a Choice of 20,000 values stays linear
    for c in out:
        key = (type(c), c)
        if key in seen:
            raise ConfigError(f"{owner}: `choices` must be unique, got {c!r} twice in {list(out)}")
        seen.add(key)
    return out


def _choice_key(value: Any) -> tuple[str, Any]:
    """What a value matches a choice by: bool is an int in Python, so True != 1 here (a
    Choice([1, True]) stays exact), while 1 and 1.0 are the same number."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    return (type(value).__name__, value)


def choice_index(choices: Sequence[Scalar]) -> dict[tuple[str, Any], Scalar]:
    """The lookup `_match_choice` uses: built once per dimension."""
    index: dict[tuple[str, Any], Scalar] = {}
    for c in choices:
        index.setdefault(_choice_key(c), c)
    return index


def _match_choice(
    name: str, value: Any, choices: Sequence[Scalar], index: Mapping[tuple[str, Any], Scalar] | None = None
) -> Scalar:
    found: Any
    try:
        found = (index if index is not None else choice_index(choices)).get(_choice_key(value), _MISSING)
    except TypeError:  # an unhashable value is no choice
        found = _MISSING
    if found is _MISSING:
        raise ConfigError(f"`{name}` must be one of {list(choices)}, got {value!r}")
    return found  # type: ignore[no-any-return]


class Choice(Dimension):
    """One of a finite list of values (str, int, float, bool or None)."""

    kind = "choice"

    def __init__(
        self,
        choices: Sequence[Scalar],
        *,
        default: Scalar = None,
        when: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(when=when)
        self.choices = _check_choices("Choice", choices)
        self._index = choice_index(self.choices)
        if default is not None:
            self._default = self.validate("default", default)

    @property
    def default(self) -> Scalar:
        return self.choices[0] if self._default is None else self._default

    def validate(self, name: str, value: Any) -> Scalar:
        return _match_choice(name, value, self.choices, self._index)

    def values(self) -> list[Scalar]:
        return list(self.choices)

    def sample(self, rng: random.Random) -> Scalar:
        return rng.choice(self.choices)

    def _params(self) -> dict[str, Any]:
        return {"choices": list(self.choices)}


GRANULARITIES = ("layer", "block", "type")
_BLOCK_RE = re.compile(r"^(.*?\.\d+)(?:\.|$)")


class PerLayer(Dimension):
    """One choice per layer of the model (for example the precision of each layer).

    ``layers`` is ``"auto"`` (bound to the task's layer list later, see
    ``SearchSpace.bind``), a list of layer names, or a mapping of layer name to layer type.
    ``granularity`` keeps large models tractable by sharing one choice among a group:
    ``"layer"`` (one per layer), ``"block"`` (one per numbered block such as
    ``encoder.layer.3``) or ``"type"`` (one per layer type such as ``Linear``).
    The config holds the expanded mapping ``{layer: choice}`` either way.
    """

    kind = "per_layer"

    def __init__(
        self,
        choices: Sequence[Scalar],
        *,
        layers: str | Sequence[str] | Mapping[str, str] = "auto",
        granularity: str = "layer",
        default: Scalar = None,
        when: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(when=when)
        self.choices = _check_choices("PerLayer", choices)
        self._index = choice_index(self.choices)
        if granularity not in GRANULARITIES:
            raise ConfigError(
                f"PerLayer: `granularity` must be one of {list(GRANULARITIES)}, got {granularity!r}"
            )
        self.granularity = granularity
        self.layers: dict[str, str] | None
        if layers == "auto":
            self.layers = None
        elif isinstance(layers, Mapping):
            self.layers = {str(k): str(v) for k, v in layers.items()}
        elif isinstance(layers, (list, tuple)):
            self.layers = {str(k): "" for k in layers}
        else:
            raise ConfigError(
                f"PerLayer: `layers` must be 'auto', a list of names or a mapping name -> type, "
                f"got {layers!r}"
            )
        if self.layers is not None and not self.layers:
            raise ConfigError("PerLayer: `layers` must name at least one layer")
        if granularity == "type" and self.layers is not None and "" in self.layers.values():
            raise ConfigError(
                "PerLayer: granularity='type' needs layer types: pass `layers` as a mapping "
                "of layer name to type"
            )
        if default is not None:
            self._default = _match_choice("default", default, self.choices, self._index)

    @property
    def default(self) -> dict[str, Scalar]:
        fill = self.choices[0] if self._default is None else self._default
        return {layer: fill for layer in self._bound_layers()}

    def bound(self, layers: Mapping[str, str] | Sequence[str]) -> PerLayer:
        """A copy bound to a concrete layer list (what ``layers="auto"`` resolves to)."""
        return PerLayer(
            self.choices,
            layers=layers,
            granularity=self.granularity,
            default=self._default,
            when={k: list(v) for k, v in self.when.items()},
        )

    def _bound_layers(self) -> dict[str, str]:
        if self.layers is None:
            raise ConfigError(
                "PerLayer(layers='auto') is not bound to a model yet: use "
                "SearchSpace.standard(task) or space.bind(task.layers)"
            )
        return self.layers

    def groups(self) -> dict[str, list[str]]:
        """Group name -> the layers that share its choice."""
        out: dict[str, list[str]] = {}
        for layer, ltype in self._bound_layers().items():
            if self.granularity == "layer":
                key = layer
            elif self.granularity == "type":
                key = ltype
            else:
                m = _BLOCK_RE.match(layer)
                key = m.group(1) if m else layer.split(".")[0]
            out.setdefault(key, []).append(layer)
        return out

    def validate(self, name: str, value: Any) -> dict[str, Scalar]:
        layers = self._bound_layers()
        if not isinstance(value, Mapping):
            raise ConfigError(f"`{name}` must be a mapping of layer name to one of {list(self.choices)}, got {value!r}")
        unknown = sorted(set(value) - set(layers))
        if unknown:
            raise ConfigError(f"`{name}` names unknown layers {unknown}; known layers: {list(layers)}")
        missing = [k for k in layers if k not in value]
        if missing:
            raise ConfigError(f"`{name}` is missing layers {missing}")
        out = {k: _match_choice(f"{name}[{k!r}]", value[k], self.choices, self._index) for k in layers}
        for group, members in self.groups().items():
            if len({repr(out[m]) for m in members}) > 1:
                raise ConfigError(
                    f"`{name}`: layers of group {group!r} ({self.granularity} granularity) must "
                    f"share one choice, got {({m: out[m] for m in members})}"
                )
        return out

    def values(self) -> list[dict[str, Scalar]]:
        import itertools

        groups = self.groups()
        out = []
        for combo in itertools.product(self.choices, repeat=len(groups)):
            out.append(
                {layer: c for c, members in zip(combo, groups.values(), strict=True) for layer in members}
            )
        return out

    def sample(self, rng: random.Random) -> dict[str, Scalar]:
        return {
            layer: c
            for members in self.groups().values()
            for c in [rng.choice(self.choices)]
            for layer in members
        }

    def _params(self) -> dict[str, Any]:
        d: dict[str, Any] = {"choices": list(self.choices)}
        if self.layers is None:
            d["layers"] = "auto"
        elif any(self.layers.values()):
            d["layers"] = dict(self.layers)
        else:
            d["layers"] = list(self.layers)
        if self.granularity != "layer":
            d["granularity"] = self.granularity
        return d


DIMENSION_TYPES: dict[str, type[Dimension]] = {
    cls.kind: cls for cls in (Float, Int, Choice, PerLayer)
}
_ALLOWED_KEYS: dict[str, set[str]] = {
    "float": {"low", "high", "step", "log", "default", "when"},
    "int": {"low", "high", "step", "log", "default", "when"},
    "choice": {"choices", "default", "when"},
    "per_layer": {"choices", "layers", "granularity", "default", "when"},
}


def dimension_from_dict(name: str, data: Any) -> Dimension:
    """Build a dimension from its dict form; a bare list is shorthand for a Choice."""
    if isinstance(data, Dimension):
        return data
    if isinstance(data, list):
        try:
            return Choice(data)
        except ConfigError as exc:
            raise ConfigError(f"space.{name}: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"space.{name}: a dimension must be a mapping with `type` "
            f"({', '.join(DIMENSION_TYPES)}) or a list of choices, got {data!r}"
        )
    kind = data.get("type")
    if kind not in DIMENSION_TYPES:
        raise ConfigError(
            f"space.{name}.type must be one of {list(DIMENSION_TYPES)}, got {kind!r}"
        )
    args = {k: v for k, v in data.items() if k != "type"}
    unknown = sorted(set(args) - _ALLOWED_KEYS[kind])
    if unknown:
        raise ConfigError(
            f"space.{name}: unknown key(s) {unknown} for type {kind!r}; allowed: "
            f"{sorted(_ALLOWED_KEYS[kind])}"
        )
    cls = DIMENSION_TYPES[kind]
    try:
        if kind in ("float", "int"):
            if "low" not in args or "high" not in args:
                raise ConfigError(f"space.{name}: type {kind!r} needs `low` and `high`")
            low, high = args.pop("low"), args.pop("high")
            return cls(low, high, **args)  # type: ignore[call-arg]
        if "choices" not in args:
            raise ConfigError(f"space.{name}: type {kind!r} needs `choices`")
        return cls(args.pop("choices"), **args)  # type: ignore[call-arg]
    except ConfigError as exc:
        raise ConfigError(f"space.{name}: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"space.{name}: {exc}") from None
