"""What a build starts from: the task's model transformed for a config (pruned, fine-tuned,
sparsified) and its fp32 ONNX export, made once per evaluator and shared by every engine that
builds from them (`engines.BuildSource`), plus the torch engines' module for a config."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from paretotune.errors import EvaluationError, InvalidConfigError
from paretotune.evaluators import engines
from paretotune.evaluators.cache import ArtifactCache, cache_key
from paretotune.evaluators.config import BuildSpec
from paretotune.evaluators.hardware import library_versions
from paretotune.evaluators.task import Task

if TYPE_CHECKING:
    import torch

#: bump when the artifact layout changes (2: torch artifacts are state_dicts)
CACHE_FORMAT = 2


class ModelSource:
    """One evaluator's transformed modules and ONNX exports (the last two exports in memory,
    every one in the artifact cache)."""

    def __init__(self, task: Task, cache: ArtifactCache) -> None:
        self.task = task
        self.cache = cache
        self._exports: OrderedDict[str, bytes] = OrderedDict()

    def transformed_module(self, spec: BuildSpec, details: dict[str, Any]) -> torch.nn.Module:
        """The task's fresh fp32 module, pruned, fine-tuned and sparsified as `spec` says."""
        from paretotune.evaluators import pruning
        from paretotune.evaluators.torch_engine import TorchRunner, to_tensors

        module = self.task.fresh_module()
        if spec.prune_ratio > 0:
            before = pruning.count_parameters(module)
            args = to_tensors(self.task.example_inputs, self.task.input_names)
            pruning.prune_structured(module, args, spec.prune_ratio, self.task.prune_ignore)
            details["parameters_before"], details["parameters"] = (
                before,
                pruning.count_parameters(module),
            )
            if self.task.finetune is not None:
                tuned = time.perf_counter()
                try:
                    self.task.finetune(module)
                except Exception as exc:  # noqa: BLE001 - the user's hook failing fails the trial
                    raise EvaluationError(f"the task's finetune hook raised {exc!r}") from exc
                module.eval()
                details["finetune_s"] = round(time.perf_counter() - tuned, 3)
            out = TorchRunner(module, self.task.input_names).run(self.task.example_inputs)
            ref = TorchRunner(self.task.reference_module(), self.task.input_names).run(
                self.task.example_inputs
            )
            if out.shape != ref.shape:
                raise EvaluationError(
                    f"pruning changed the output shape from {ref.shape} to {out.shape}; name the "
                    f"output layer in Task(prune_ignore=[...])"
                )
        if spec.sparsity > 0:
            zeros, total = pruning.apply_sparsity(module, spec.sparsity)
            details["zeroed_weights"], details["sparse_weights"] = zeros, total
        return module

    def export(self, spec: BuildSpec, module: Any) -> bytes:
        """The fp32 ONNX export of the (pruned) model, shared by every ORT variant of it."""
        from paretotune.evaluators.onnx_graph import export_onnx

        key = cache_key(
            "export",
            CACHE_FORMAT,
            self.task.model_id(),
            self.task.data_id(),
            spec.prune_ratio,
            spec.sparsity,
            library_versions(("torch", "onnx")),
        )
        if key in self._exports:
            return self._exports[key]
        entry = self.cache.get(key)
        data = entry.data if entry is not None and entry.data is not None else None
        if data is None:
            data = export_onnx(module, self.task)
            self.cache.put(key, {"kind": "fp32 onnx export"}, data)
        self._exports[key] = data
        while len(self._exports) > 2:
            self._exports.popitem(last=False)
        return data


class SpecSource:
    """What an engine's build reads (`engines.BuildSource`): the task, its transformed fp32
    module (made once, on first use) and that module's ONNX export (the evaluator's cache)."""

    def __init__(self, models: ModelSource, spec: BuildSpec) -> None:
        self.task = models.task
        self.cache = models.cache
        self.details: dict[str, Any] = {}
        self._models = models
        self._spec = spec
        self._module: torch.nn.Module | None = None

    def module(self) -> torch.nn.Module | None:
        if self.task.is_onnx:
            return None
        if self._module is None:
            self._module = self._models.transformed_module(self._spec, self.details)
        return self._module

    def onnx(self) -> bytes:
        if self.task.is_onnx:
            return self.task.onnx_bytes()
        return self._models.export(self._spec, self.module())


def _torch_family(spec: BuildSpec) -> Any:
    from paretotune.evaluators.engines.torch import TorchEngine

    engine = engines.get(spec.engine)
    if not isinstance(engine, TorchEngine):
        torch_engines = [e.name for e in engines.registered() if isinstance(e, TorchEngine)]
        raise InvalidConfigError(
            f"engine={spec.engine!r} has no torch module; allowed: {torch_engines}"
        )
    return engine


def engine_module(task: Task, spec: BuildSpec, module: torch.nn.Module) -> torch.nn.Module:
    """The torch / torch_cuda engine's module for `spec`, from the fp32 (pruned) `module`:
    cast or dynamically quantized, deterministically (the same weights give the same module)."""
    result: torch.nn.Module = _torch_family(spec).module_for(task, spec, module)
    return result


def load_torch_module(task: Task, spec: BuildSpec, data: bytes) -> torch.nn.Module:
    """The engine's module of a torch artifact (`BuiltArtifact.data`): its fp32 weights restored
    on a fresh copy of the task's model (no unpickling), then built for `spec`."""
    result: torch.nn.Module = _torch_family(spec).load(task, spec, data)
    return result
