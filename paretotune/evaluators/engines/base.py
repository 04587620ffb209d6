"""The `Engine` contract: what one inference engine tells the rest of paretotune.

An engine declares its capabilities as data (`Capabilities`: bit widths, int8 modes, options
with their allowed values and defaults, per-layer precisions), probes whether it can run here,
builds an artifact (bytes) for a resolved `BuildSpec`, makes runners of that artifact, and
knows its deployment layout (files, Triton backend or platform, parameters) and how to load
an exported bundle. Everything else (the config check, the standard space, availability, the
evaluator, export, the cache key's library versions) reads the registry
(`paretotune.evaluators.engines`), never an engine's name.

Invariants: an engine object holds no per-build state (one instance serves every build of a
process); `build` is deterministic for a spec and the same inputs; an artifact is plain data
(never a pickle), so a cached artifact runs no code when it is loaded.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from paretotune.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from paretotune.evaluators.cache import ArtifactCache
    from paretotune.evaluators.config import BuildSpec
    from paretotune.evaluators.task import Task

#: "build" options change the artifact (they are in its cache key); "runtime" options are
#: read when a runner is made (session or compile options), so one artifact serves them all
STAGES = ("build", "runtime")


@dataclass(frozen=True)
class Option:
    """One engine option, a config key of the same name.

    `allowed`: the values it takes (`minimum` instead: any int >= minimum); `bit_widths`: where
    it applies (elsewhere it is ignored); `searched`: whether `SearchSpace.standard` offers it
    (it does only where two or more values are allowed); `when`: other options' values it
    needs to matter (inter-op threads only with the parallel executor); `transformer`: it
    applies only to tasks with attention layers.
    """

    name: str
    default: Any
    allowed: tuple[Any, ...] = ()
    bit_widths: tuple[int, ...] = (4, 8, 16, 32)
    stage: str = "build"
    minimum: int | None = None
    searched: bool = True
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    transformer: bool = False
    doc: str = ""

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError(f"option {self.name!r}: stage must be one of {list(STAGES)}, got {self.stage!r}")
        if not self.allowed and self.minimum is None:
            raise ConfigError(f"option {self.name!r} needs allowed values or a minimum")
        if not self.accepts(self.default):
            raise ConfigError(f"option {self.name!r}: default {self.default!r} is not allowed")

    def accepts(self, value: Any) -> bool:
        """Whether `value` is one this option declares (bool never passes for an int)."""
        if self.minimum is not None:
            return isinstance(value, int) and not isinstance(value, bool) and value >= self.minimum
        return any(value == a and type(value) is type(a) for a in self.allowed)

    def describe(self) -> str:
        return f">= {self.minimum}" if self.minimum is not None else str(list(self.allowed))


@dataclass(frozen=True)
class Capabilities:
    """What an engine can build, as data (the one capability matrix there is).

    `int8_modes`: quant_mode values at bit_width 8, the first the default (empty: the engine
    has its own int8 and quant_mode does not apply); `per_channel`: it reads per_channel at
    int8; `layer_precisions`: bit width -> precisions a layer may be given there (elsewhere a
    per-layer precision is ignored), "fp32" keeping the layer out of quantization;
    `layer_types`: every layer's precision is honoured, not only fp32 exclusions;
    `min_fidelity`: bit width -> the fidelity to the torch fp32 model the conformance suite
    holds the engine to on its small CNN and transformer.
    """

    bit_widths: tuple[int, ...]
    int8_modes: tuple[str, ...] = ()
    per_channel: bool = False
    layer_precisions: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    layer_types: bool = False
    torch_compile: bool = False
    options: tuple[Option, ...] = ()
    min_fidelity: Mapping[int, float] = field(default_factory=dict)

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)


@dataclass(frozen=True)
class TritonLayout:
    """How Triton serves an artifact: `platform` or `backend` (both where Triton names both),
    the instance kind, and config.pbtxt `parameters` (string values)."""

    backend: str
    platform: str | None = None
    kind: str = "KIND_CPU"
    parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportedArtifact:
    """What `Engine.export` gives the bundle: `files` (name -> bytes, written beside each
    other and into the Triton version directory), the main file's name (`artifact`), the I/O
    (`io`: inputs, outputs, batching), and a note for the bundle's README."""

    files: Mapping[str, bytes]
    artifact: str
    io: dict[str, Any]
    note: str = ""


class Runner(Protocol):
    """A built engine, ready to run: `prepare(inputs)` returns the zero-argument call that is
    timed; `run(inputs)` returns the first output as float32 (the accuracy pass)."""

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]: ...

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray: ...


#: feeds -> the outputs in the bundle's output order (what `load_exported` gets from an engine)
Predictor = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


class BuildSource(Protocol):
    """What the evaluator hands `Engine.build`: the task, the (pruned) fp32 model, its fp32
    ONNX export, build details to fill in, and the artifact cache (for engines that keep
    their own sub-caches)."""

    task: Task
    details: dict[str, Any]
    cache: ArtifactCache

    def module(self) -> torch.nn.Module | None:
        """The transformed fp32 module; None for a task that is an .onnx file."""
        ...

    def onnx(self) -> bytes:
        """The fp32 ONNX model: the task's file, or the export of `module()` (cached)."""
        ...


@dataclass
class Built:
    """An engine's build: the artifact, its deployed size, and a runner already made (or None)."""

    artifact: bytes
    model_bytes: int
    runner: Any = None


class Engine(abc.ABC):
    """One engine. Subclasses set `name`, `on_gpu`, `capabilities`, `packages` and implement
    the abstract methods; the hooks with defaults cover what most engines do not need."""

    name: str
    on_gpu: bool = False
    capabilities: Capabilities
    #: the packages whose versions a build depends on (part of its cache key)
    packages: tuple[str, ...] = ()
    #: False: one runner serves every thread count (torch's pool is process-wide; GPUs ignore it)
    threads_per_runner: bool = True
    #: make a runner when a cached artifact is loaded, so one that does not load is rebuilt
    verify_on_load: bool = False

    @abc.abstractmethod
    def problem(self, *, has_module: bool, is_onnx: bool) -> str | None:
        """Why the engine cannot run such a task here, or None when it can."""

    @abc.abstractmethod
    def build(self, source: BuildSource, spec: BuildSpec) -> Built:
        """The artifact for `spec` (InvalidConfigError: not buildable; EvaluationError: failed)."""

    @abc.abstractmethod
    def runner(
        self, artifact: bytes, spec: BuildSpec, task: Task, threads: int, *,
        cache: ArtifactCache | None = None, sibling: Any = None,
    ) -> Runner:
        """A new runner of `artifact` (`sibling`: another runner of it, to share state with)."""

    # -- hooks with defaults -------------------------------------------------------------------

    def missing_package(self, needed: Mapping[str, str], *, is_onnx: bool) -> str | None:
        """The first of `needed` (package -> why, or how to install it) that does not import,
        and onnx for a PyTorch task (its model is exported to ONNX first); None when all do."""
        from paretotune.evaluators import availability

        if not is_onnx:
            needed = {**needed, "onnx": "needed to export the PyTorch model"}
        for package, why in needed.items():
            if not availability.importable(package):
                return f"{package} not importable ({why})"
        return None

    def bit_width_problem(self, bit_width: int) -> str | None:
        """Why `bit_width`, declared in the capabilities, cannot run on this machine."""
        return None

    def check(
        self, spec: BuildSpec, config: Mapping[str, Any], layers: Mapping[str, str], ignored: list[str]
    ) -> BuildSpec:
        """Rules beyond the data (InvalidConfigError), and spec adjustments; default: none."""
        return spec

    def export(self, artifact: bytes, spec: BuildSpec, task: Task) -> ExportedArtifact:
        """The deployable files of a built artifact."""
        raise ConfigError(f"engine={self.name!r} cannot be exported; exportable: {exportable()}")

    def require_here(self) -> None:
        """EvaluationError when this machine cannot export this engine's artifacts (a plan
        built for a GPU model needs one); default: any machine can."""
        return None

    def triton_layout(self, threads: int, spec: BuildSpec | None = None) -> TritonLayout:
        """How Triton serves this engine's export at `threads` (`spec`: the trial's, if known)."""
        raise ConfigError(f"engine={self.name!r} has no Triton layout; exportable: {exportable()}")

    def load_exported(self, directory: Path, config: Mapping[str, Any]) -> Predictor:
        """A predictor over an exported bundle's files (its config.yaml as `config`)."""
        raise ConfigError(f"engine={self.name!r} bundles cannot be loaded; loadable: {exportable()}")

    def full_precision_layers(
        self, artifact: bytes, spec: BuildSpec, task: Task, layers: Sequence[str]
    ) -> list[str]:
        """Which of `layers` run unquantized in `artifact` (how per-layer fp32 is checked)."""
        raise NotImplementedError(f"engine {self.name!r} does not report per-layer precision")

    def exportable(self) -> bool:
        return type(self).export is not Engine.export


def exportable() -> list[str]:
    from paretotune.evaluators.engines import registered

    return [e.name for e in registered() if e.exportable()]


def looks_like_transformer(layers: Mapping[str, str]) -> bool:
    """Whether a task's layer names show attention (what transformer-only options need)."""
    return any("attention" in name.lower() or "attn" in name.lower() for name in layers)
