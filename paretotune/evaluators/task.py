"""`Task`: the user's model and data, described once; plus `load_task` and `as_evaluator`."""

from __future__ import annotations

import copy
import importlib
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from paretotune.errors import ConfigError, TaskError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

Inputs = Mapping[str, Any] | Sequence[Any] | Any
Metric = Callable[[np.ndarray, Any], float]
FIDELITY_KINDS = ("auto", "top1", "cosine")
QUANTIZABLE_TYPES = ("Linear", "Conv1d", "Conv2d", "Conv3d")
ONNX_WEIGHT_OPS = ("MatMul", "Gemm", "Conv")


def _to_numpy(value: Any, what: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - anything unconvertible is the user's data error
        raise TaskError(f"{what} must be array-like, got {type(value).__name__}: {exc}") from exc
    if array.dtype == object:
        raise TaskError(f"{what} must be a numeric array, got {type(value).__name__} of objects")
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    return array


def top1_agreement(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Share of rows whose arg-max class matches the reference's."""
    return float(np.mean(outputs.argmax(axis=-1) == reference.argmax(axis=-1)))


def mean_cosine(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Mean row-wise cosine similarity (embeddings)."""
    a = outputs.reshape(outputs.shape[0], -1).astype(np.float64)
    b = reference.reshape(reference.shape[0], -1).astype(np.float64)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(num / np.maximum(den, 1e-12)))


def top1_accuracy(outputs: np.ndarray, targets: Any) -> float:
    """Share of rows whose arg-max equals the integer label."""
    return float(np.mean(outputs.argmax(axis=-1) == np.asarray(targets).reshape(-1)))


class Task:
    """A model plus the data to build, calibrate and score it.

    model: a zero-argument callable returning a `torch.nn.Module`, or a path to an `.onnx` file.
    example_inputs: one batch (axis 0 is the batch), as a mapping name -> array, or a tuple of
        arrays named by `input_names`. Timing tiles it to the trial's batch size.
    calibration: input batches for static quantization (default: the example batch).
    validation: (inputs, targets) pairs; targets may be None. With targets and no `metric` the
        metric is top-1 accuracy; without targets it is fidelity to the unmodified model
        (`fidelity`: "top1" agreement, "cosine" similarity, or "auto": cosine when the reference
        rows are unit-norm embeddings, else top-1).
    prune_ignore: module names whose output channels are never pruned (default: the last
        Linear/Conv executed, so the model's output shape is kept).
    finetune: optional callable(module) -> None run after structured pruning to recover
        accuracy (e.g. one short epoch); it is part of the build and of its cache key.
    padding_mask: the name of a (batch, sequence) 0/1 input marking real tokens, right-padded
        (a tokenizer's attention_mask). Timing batches are then cut to their longest row, as a
        tokenizer padding each batch to its longest sentence gives them, rather than carrying
        the example batch's padding into, say, a batch of one short sentence.
    """

    def __init__(
        self,
        model: Callable[[], torch.nn.Module] | str | os.PathLike[str],
        example_inputs: Inputs,
        *,
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] = ("output",),
        dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
        calibration: Sequence[Inputs] | None = None,
        validation: Sequence[tuple[Inputs, Any]] | None = None,
        metric: Metric | None = None,
        fidelity: str = "auto",
        name: str | None = None,
        prune_ignore: Sequence[str] | None = None,
        finetune: Callable[[Any], None] | None = None,
        padding_mask: str | None = None,
        accuracy_range: tuple[float, float] | None = None,
    ) -> None:
        if isinstance(model, (str, os.PathLike)):
            self.model_path: Path | None = Path(model)
            self.model_factory: Callable[[], Any] | None = None
        elif callable(model):
            self.model_path, self.model_factory = None, model
        else:
            raise TaskError(
                f"Task model must be a callable returning a torch.nn.Module or a path to an "
                f".onnx file, got {type(model).__name__}"
            )
        if fidelity not in FIDELITY_KINDS:
            raise TaskError(
                f"Task fidelity must be one of {list(FIDELITY_KINDS)}, got {fidelity!r}"
            )
        if metric is not None and not callable(metric):
            raise TaskError(
                f"Task metric must be callable (outputs, targets) -> float, got {metric!r}"
            )
        self.name = name or (
            self.model_path.stem if self.model_path else getattr(model, "__name__", "task")
        )
        # the declared names (empty: derive them) name a tuple-form example batch; afterwards
        # they are the example batch's keys, the order every engine feeds inputs in
        self.input_names: list[str] = list(input_names) if input_names is not None else []
        self.example_inputs = self._inputs(example_inputs, "example_inputs")
        self.input_names = list(self.example_inputs)
        self.output_names = list(output_names)
        self.dynamic_axes = (
            {k: dict(v) for k, v in dynamic_axes.items()}
            if dynamic_axes is not None
            else {n: {0: "batch"} for n in [*self.input_names, *self.output_names]}
        )
        self.calibration = [
            self._inputs(b, f"calibration[{i}]") for i, b in enumerate(calibration or [])
        ] or [self.example_inputs]
        self.validation: list[tuple[dict[str, np.ndarray], Any]] = []
        for i, pair in enumerate(validation or []):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TaskError(
                    f"validation[{i}] must be an (inputs, targets) pair (targets may be None), "
                    f"got {type(pair).__name__}"
                )
            targets = None if pair[1] is None else _to_numpy(pair[1], f"validation[{i}] targets")
            self.validation.append((self._inputs(pair[0], f"validation[{i}] inputs"), targets))
        self.metric = metric
        self.fidelity = fidelity
        #: the values `accuracy` can take: a study FAILs a trial reporting one outside it.
        #: Default [0, 1] (accuracy, top-1 agreement), [-1, 1] where it may be a mean cosine.
        cosine = metric is None and not self.labelled and fidelity in ("auto", "cosine")
        if accuracy_range is None:
            self.accuracy_range: tuple[float, float] = (-1.0, 1.0) if cosine else (0.0, 1.0)
        elif (
            isinstance(accuracy_range, (tuple, list)) and len(accuracy_range) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in accuracy_range)
            and accuracy_range[0] < accuracy_range[1]
        ):
            self.accuracy_range = (float(accuracy_range[0]), float(accuracy_range[1]))
        else:
            raise TaskError(f"Task accuracy_range must be (low, high) with low < high, got {accuracy_range!r}")
        self.prune_ignore = list(prune_ignore) if prune_ignore is not None else None
        if finetune is not None and not callable(finetune):
            raise TaskError(f"Task finetune must be callable(module) -> None, got {finetune!r}")
        self.finetune = finetune
        self.padding_mask = padding_mask
        if padding_mask is not None:
            self._check_padding_mask(padding_mask)
        self._reset_caches()

    # -- plumbing --------------------------------------------------------------------------

    def _reset_caches(self) -> None:
        self._reference: Any = None
        self._layers: dict[str, str] | None = None
        self._model_id: str | None = None
        self._reference_outputs: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("_reference", "_layers", "_model_id", "_reference_outputs"):
            state[key] = None
        return state

    def __repr__(self) -> str:
        source = (
            str(self.model_path)
            if self.model_path
            else getattr(self.model_factory, "__qualname__", "factory")
        )
        return f"Task(name={self.name!r}, model={source!r})"

    def _inputs(self, value: Inputs, what: str) -> dict[str, np.ndarray]:
        if isinstance(value, Mapping):
            return {str(k): _to_numpy(v, f"{what}[{k!r}]") for k, v in value.items()}
        items = list(value) if isinstance(value, (tuple, list)) else [value]
        names = self.input_names or [
            f"input_{i}" if len(items) > 1 else "input" for i in range(len(items))
        ]
        if len(names) != len(items):
            raise TaskError(
                f"{what} has {len(items)} arrays but input_names has {len(names)}: {names}"
            )
        return {n: _to_numpy(v, f"{what}[{n!r}]") for n, v in zip(names, items, strict=True)}

    def _check_padding_mask(self, name: str) -> None:
        mask = self.example_inputs.get(name)
        if mask is None:
            raise TaskError(
                f"Task padding_mask must name an input, got {name!r}; inputs: {self.input_names}"
            )
        if mask.ndim != 2 or not np.isin(mask, (0, 1)).all():
            raise TaskError(
                f"Task padding_mask {name!r} must be a (batch, sequence) array of 0/1, got "
                f"shape {mask.shape} with values {np.unique(mask)[:5].tolist()}"
            )

    def timing_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        """The example batch tiled (cycling its rows) to `batch_size`: fixed timing inputs.

        With a `padding_mask`, the padding columns no row of this batch uses are cut off.
        """
        out = {}
        for name, array in self.example_inputs.items():
            rows = np.arange(batch_size) % array.shape[0]
            out[name] = np.ascontiguousarray(array[rows])
        if self.padding_mask is not None:
            mask = out[self.padding_mask]
            used = np.flatnonzero(mask.any(axis=0))
            length = int(used[-1]) + 1 if used.size else 1
            for name, array in out.items():
                if array.shape[:2] == mask.shape:
                    out[name] = np.ascontiguousarray(array[:, :length])
        return out

    @property
    def is_onnx(self) -> bool:
        return self.model_path is not None

    @property
    def labelled(self) -> bool:
        return bool(self.validation) and all(t is not None for _, t in self.validation)

    # -- the model -------------------------------------------------------------------------

    def reference_module(self) -> torch.nn.Module:
        """The unmodified model in eval mode (built once per process; copy before changing)."""
        if self.model_factory is None:
            raise TaskError(
                f"task {self.name!r} is an ONNX model ({self.model_path}); it has no torch module"
            )
        if self._reference is None:
            import torch

            try:
                module = self.model_factory()
            except Exception as exc:  # noqa: BLE001 - the user's factory failing is a task error
                raise TaskError(f"task {self.name!r}: the model factory raised {exc!r}") from exc
            if not isinstance(module, torch.nn.Module):
                raise TaskError(
                    f"task {self.name!r}: the model factory must return a torch.nn.Module, "
                    f"got {type(module).__name__}"
                )
            self._reference = module.eval()
        return self._reference

    def fresh_module(self) -> torch.nn.Module:
        return copy.deepcopy(self.reference_module())

    def onnx_bytes(self) -> bytes:
        if self.model_path is None:
            raise TaskError(f"task {self.name!r} has no .onnx file")
        try:
            return self.model_path.read_bytes()
        except OSError as exc:
            raise TaskError(
                f"task {self.name!r}: cannot read model file {self.model_path}: {exc}"
            ) from exc

    def model_id(self) -> str:
        """A content hash of the model: its weights (and class), or the .onnx bytes."""
        if self._model_id is None:
            from paretotune.evaluators.cache import cache_key

            if self.model_path is not None:
                self._model_id = cache_key("onnx", self.onnx_bytes())
            else:
                module = self.reference_module()
                parts: list[Any] = [
                    type(module).__module__,
                    type(module).__qualname__,
                    repr(module),
                ]
                for key, tensor in module.state_dict().items():
                    parts.extend([key, str(tensor.dtype), list(tensor.shape)])
                    parts.append(
                        tensor.detach()
                        .cpu()
                        .contiguous()
                        .view(-1)
                        .view(dtype=_byte_dtype())
                        .numpy()
                        .tobytes()
                    )
                self._model_id = cache_key(*parts)
        return self._model_id

    def data_id(self) -> str:
        """A content hash of the calibration and validation data (they shape builds and scores)."""
        from paretotune.evaluators.cache import cache_key

        parts: list[Any] = [self.input_names, self.output_names, self.dynamic_axes, self.fidelity]
        for batch in [self.example_inputs, *self.calibration]:
            parts.extend(a.tobytes() for a in batch.values())
        for inputs, targets in self.validation:
            parts.extend(a.tobytes() for a in inputs.values())
            parts.append(None if targets is None else np.ascontiguousarray(targets).tobytes())
        parts.append(getattr(self.metric, "__qualname__", None))
        parts.append(getattr(self.finetune, "__qualname__", None))
        parts.append(self.prune_ignore)
        parts.append(self.padding_mask)
        return cache_key(*parts)

    @property
    def layers(self) -> dict[str, str]:
        """Quantizable layers, in model order: PyTorch module name -> module type."""
        if self._layers is None:
            if self.model_path is not None:
                self._layers = _onnx_layers(self.model_path)
            else:
                self._layers = {
                    name: type(m).__name__
                    for name, m in self.reference_module().named_modules()
                    if type(m).__name__ in QUANTIZABLE_TYPES
                }
        return dict(self._layers)

    def available_engines(self) -> list[str]:
        """Engines that can run this task here (CPU engines first, then GPU engines)."""
        from paretotune.evaluators.availability import available_engines

        return available_engines(has_module=self.model_factory is not None, is_onnx=self.is_onnx)

    def engine_capabilities(self) -> dict[str, dict[str, Any]]:
        """What each engine available here can build for this task, as plain data for
        `SearchSpace.standard` (which imports nothing of the evaluators)."""
        from paretotune.evaluators import engines
        from paretotune.evaluators.engines.base import looks_like_transformer

        return engines.space_capabilities(
            self.available_engines(),
            transformer=self.model_factory is not None and looks_like_transformer(self.layers),
        )

    def unavailable_engines(self) -> dict[str, str]:
        """engine -> why it cannot run this task here ("tensorrt not importable", ...)."""
        from paretotune.evaluators.availability import engine_problems

        return engine_problems(has_module=self.model_factory is not None, is_onnx=self.is_onnx)

    # -- checking --------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise TaskError with the reason if this task cannot be used (run at study creation)."""
        if not self.validation:
            raise TaskError(
                f"task {self.name!r} has no validation batches; pass validation=[(inputs, targets), ...]"
            )
        if any(t is not None for _, t in self.validation) and not self.labelled:
            raise TaskError(
                f"task {self.name!r}: either every validation batch has targets or none has"
            )
        if self.model_path is not None:
            if not self.model_path.is_file():
                raise TaskError(
                    f"task {self.name!r}: model file {str(self.model_path)!r} does not exist"
                )
            import onnx

            try:
                onnx.checker.check_model(str(self.model_path))
            except Exception as exc:  # noqa: BLE001 - onnx raises several types
                raise TaskError(
                    f"task {self.name!r}: {self.model_path} fails onnx.checker: {exc}"
                ) from exc
            from paretotune.evaluators.onnxruntime_engine import OrtRunner

            try:
                OrtRunner(self.onnx_bytes(), threads=1).run(self.example_inputs)
            except Exception as exc:  # noqa: BLE001
                raise TaskError(
                    f"task {self.name!r}: example inputs do not run on the model: {exc}"
                ) from exc
        else:
            from paretotune.evaluators.torch_engine import TorchRunner

            try:
                TorchRunner(self.reference_module(), self.input_names).run(self.example_inputs)
            except TaskError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise TaskError(
                    f"task {self.name!r}: example inputs do not run on the model: {exc!r}"
                ) from exc

    # -- scoring ---------------------------------------------------------------------------

    def score(self, outputs: Sequence[np.ndarray], reference: np.ndarray | None) -> float:
        """The task's metric over the whole validation set (higher is better)."""
        joined = np.concatenate([np.asarray(o, dtype=np.float32) for o in outputs], axis=0)
        if self.labelled:
            targets = np.concatenate([np.asarray(t) for _, t in self.validation], axis=0)
            metric = self.metric or top1_accuracy
            return float(metric(joined, targets))
        if reference is None:
            raise TaskError(
                f"task {self.name!r} has no labels and no reference outputs for fidelity"
            )
        if self.metric is not None:
            return float(self.metric(joined, reference))
        kind = self.fidelity
        if kind == "auto":
            norms = np.linalg.norm(reference.reshape(reference.shape[0], -1), axis=1)
            kind = "cosine" if np.allclose(norms, 1.0, atol=1e-3) else "top1"
        return (
            top1_agreement(joined, reference) if kind == "top1" else mean_cosine(joined, reference)
        )


def _byte_dtype() -> Any:
    import torch

    return torch.uint8


def _onnx_layers(path: Path) -> dict[str, str]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001
        raise TaskError(f"cannot load ONNX model {str(path)!r}: {exc}") from exc
    weights = {init.name for init in model.graph.initializer}
    return {
        node.name: node.op_type
        for node in model.graph.node
        if node.op_type in ONNX_WEIGHT_OPS
        and node.name
        and len(node.input) > 1
        and node.input[1] in weights
    }


def load_task(path: str) -> Any:
    """Resolve "package.module:attribute" to the object it names (a Task or any callable)."""
    if not isinstance(path, str) or ":" not in path:
        raise TaskError(f"task path must look like 'package.module:attribute', got {path!r}")
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise TaskError(f"task path must look like 'package.module:attribute', got {path!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import-time failure is the task's
        raise TaskError(f"cannot import task {path!r}: {type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise TaskError(
                f"cannot load task {path!r}: {module_name!r} has no attribute {attr!r}"
            ) from exc
    return obj


def resolve_task(task: Any, *, validate: bool = False) -> tuple[Any, str | None]:
    """(task object, import path or None) for a Task, any callable(config) -> metrics, or an
    import path, which is loaded. The one resolver: `create_study` validates (``validate``:
    the Task's own checks), so a broken task is rejected before any trial runs; the workers
    and `export` resolve the study's stored path with it."""
    if task is None:
        return None, None
    path = task if isinstance(task, str) else None
    if path is not None:
        task = load_task(path)
        if not callable(task) and not hasattr(task, "layers"):
            raise ConfigError(
                f"task {path!r} names a {type(task).__name__}, not a paretotune Task or a "
                "callable(config) -> metrics"
            )
    check = getattr(task, "validate", None) if validate else None
    if callable(check):
        check()
    return task, path


def as_evaluator(
    obj: Any, cache_dir: str | os.PathLike[str] | None = None, *, scenario: Any = None,
    reference: str = "paired",
) -> Callable[[Mapping[str, Any]], Any]:
    """A Task becomes a `TaskEvaluator` timing under `scenario` (the study's), with the
    `speedup` reference policy `reference`; any other callable(config) is used as it is."""
    if isinstance(obj, Task):
        from paretotune.evaluators.evaluator import TaskEvaluator

        return TaskEvaluator(obj, cache_dir=cache_dir, scenario=scenario, reference=reference)
    if callable(obj):
        return obj
    raise ConfigError(
        f"an evaluator must be a paretotune Task or a callable(config) -> metrics, got {type(obj).__name__}"
    )
