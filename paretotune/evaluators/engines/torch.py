"""Engine `torch`: PyTorch eager on the CPU, fp32, bf16 or dynamic int8 (`torch_engine`).

The artifact is the fp32 (pruned) module's weights and shape attributes, restored on a fresh
copy of the task's model and built again; the export is TorchScript, what Triton's libtorch
backend loads.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from paretotune.errors import EvaluationError, InvalidConfigError
from paretotune.evaluators.engines import base

if TYPE_CHECKING:
    import torch

    from paretotune.evaluators.cache import ArtifactCache
    from paretotune.evaluators.config import BuildSpec
    from paretotune.evaluators.task import Task

INT8_LAYERS = ("int8", "fp32")


class TorchEngine(base.Engine):
    name = "torch"
    capabilities = base.Capabilities(
        bit_widths=(32, 16, 8),
        int8_modes=("dynamic",),
        per_channel=True,
        layer_precisions={8: INT8_LAYERS},
        torch_compile=True,
        options=(
            base.Option("half", "bf16", ("bf16",), bit_widths=(16,), doc="the CPU's 16-bit type"),
        ),
        min_fidelity={32: 0.9999, 16: 0.99, 8: 0.98},
    )
    packages = ("torch",)
    threads_per_runner = False  # torch's intra-op pool is the process's
    verify_on_load = True  # restoring the weights on the task's model can fail

    def problem(self, *, has_module: bool, is_onnx: bool) -> str | None:
        from paretotune.evaluators import availability

        if not has_module:
            return f"the task is an .onnx file, and engine {self.name!r} needs a PyTorch model"
        if not availability.importable("torch"):
            return "torch not importable"
        return None

    def bit_width_problem(self, bit_width: int) -> str | None:
        from paretotune.evaluators import hardware

        if bit_width == 16 and not hardware.cpu_supports_bf16():
            return (
                "bit_width=16 (bf16) on engine='torch' needs a CPU with avx512_bf16 or "
                "amx_bf16, and this CPU has neither"
            )
        return None

    def check(
        self, spec: BuildSpec, config: Mapping[str, Any], layers: Mapping[str, str], ignored: list[str]
    ) -> BuildSpec:
        if spec.bit_width == 8 and not any(
            kind == "Linear" for name, kind in layers.items() if name not in spec.excluded_layers
        ):
            raise InvalidConfigError(
                "bit_width=8 on engine='torch' quantizes Linear layers (dynamic int8), and "
                "this configuration keeps every Linear layer in fp32"
            )
        return spec

    # -- build and run ---------------------------------------------------------------------------

    def module_for(self, task: Task, spec: BuildSpec, module: torch.nn.Module) -> torch.nn.Module:
        """The engine's module for `spec` from the fp32 (pruned) `module`, deterministically."""
        from paretotune.evaluators.torch_engine import build_torch

        quantize = [n for n in task.layers if n not in spec.excluded_layers]
        return build_torch(module, spec.bit_width, spec.per_channel, quantize)

    def load(self, task: Task, spec: BuildSpec, artifact: bytes) -> torch.nn.Module:
        """The engine's module of an artifact: weights restored on a fresh model, no unpickling."""
        from paretotune.evaluators.torch_engine import restore

        return self.module_for(task, spec, restore(artifact, task.fresh_module()))

    def build(self, source: base.BuildSource, spec: BuildSpec) -> base.Built:
        from paretotune.evaluators import torch_engine

        task = source.task
        module = source.module()
        if module is None:
            raise InvalidConfigError(
                f"engine={self.name!r} needs a PyTorch model, and task {task.name!r} is an .onnx file"
            )
        # the artifact is the fp32 module; measure what a cache hit will restore from it
        artifact = torch_engine.serialize(module)
        restored = torch_engine.restore(artifact, task.fresh_module())
        if spec.prune_ratio > 0:
            _check_restored(module, restored, task)
        built = self.module_for(task, spec, restored)
        runner = self.module_runner(spec, built, task)
        return base.Built(artifact, torch_engine.module_bytes(built), runner)

    def module_runner(self, spec: BuildSpec, module: torch.nn.Module, task: Task) -> base.Runner:
        import torch

        from paretotune.evaluators import torch_engine

        if spec.torch_compile:
            module = torch_engine.compile_module(module)
        dtype = torch.bfloat16 if spec.bit_width == 16 else None
        return torch_engine.TorchRunner(module, task.input_names, dtype)

    def runner(
        self, artifact: bytes, spec: BuildSpec, task: Task, threads: int, *,
        cache: ArtifactCache | None = None, sibling: Any = None,
    ) -> base.Runner:
        module = getattr(sibling, "module", None)  # inference does not change a module: share it
        if module is None:
            module = self.load(task, spec, artifact)
        return self.module_runner(spec, module, task)

    def full_precision_layers(
        self, artifact: bytes, spec: BuildSpec, task: Task, layers: Sequence[str]
    ) -> list[str]:
        import torch

        module = self.load(task, spec, artifact)
        return [n for n in layers if type(module.get_submodule(n)) in (torch.nn.Linear, torch.nn.Conv2d)]

    # -- export ----------------------------------------------------------------------------------

    def export(self, artifact: bytes, spec: BuildSpec, task: Task) -> base.ExportedArtifact:
        data, io_spec = torchscript(self.load(task, spec, artifact), spec, task)
        return base.ExportedArtifact(
            {"model.pt": data}, "model.pt", io_spec,
            note="The artifact is TorchScript (what Triton's libtorch backend loads); Triton "
            "names its tensors `<name>__<index>` (see `triton_name` in config.yaml).",
        )

    def triton_layout(self, threads: int, spec: BuildSpec | None = None) -> base.TritonLayout:
        return base.TritonLayout("pytorch", "pytorch_libtorch",
                            parameters={"INTRA_OP_THREAD_COUNT": str(int(threads))})

    def load_exported(self, directory: Path, config: Mapping[str, Any]) -> base.Predictor:
        import torch

        names = [s["name"] for s in config["io"]["inputs"]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(io.BytesIO((directory / config["artifact"]).read_bytes()),
                                    map_location="cpu").eval()

        def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            with torch.inference_mode():
                out = module(*[torch.from_numpy(feeds[n]) for n in names])
            outs = out if isinstance(out, (tuple, list)) else (out,)
            return [o.detach().cpu().numpy() for o in outs]

        return run


def _check_restored(module: torch.nn.Module, restored: torch.nn.Module, task: Task) -> None:
    """A pruned module must come back from its artifact whole: same outputs on the examples.
    A model keeping shapes in something other than tensors and plain attributes fails here."""
    from paretotune.evaluators.torch_engine import TorchRunner

    expected = TorchRunner(module, task.input_names).run(task.example_inputs)
    got = TorchRunner(restored, task.input_names).run(task.example_inputs)
    if expected.shape != got.shape or not np.allclose(expected, got, rtol=1e-4, atol=1e-5):
        raise EvaluationError(
            "the pruned model does not round-trip through its torch artifact (a state_dict and "
            "plain attributes): it keeps shape-dependent state elsewhere, so it cannot be cached"
        )


def torchscript(module: torch.nn.Module, spec: BuildSpec, task: Task) -> tuple[bytes, dict[str, Any]]:
    """Trace the built module (fp32 I/O around bf16 or int8 internals) to TorchScript."""
    import torch

    from paretotune.evaluators import torch_engine

    cast = torch.bfloat16 if spec.bit_width == 16 else None
    wrapper = _io_wrapper(module, cast).eval()
    args = torch_engine.to_tensors(task.example_inputs, task.input_names)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(wrapper, args, check_trace=False)
            outputs = traced(*args)
    except Exception as exc:  # noqa: BLE001 - tracing raises many types
        raise EvaluationError(
            f"tracing the torch model to TorchScript failed: {type(exc).__name__}: {exc}"
        ) from exc
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated, and still what Triton loads
        torch.jit.save(traced, buffer)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    out_names = list(task.output_names)[: len(outputs)]
    out_names += [f"output_{i}" for i in range(len(out_names), len(outputs))]
    axes = task.dynamic_axes

    def dims(name: str, shape: Sequence[int]) -> list[int]:
        dynamic = axes.get(name, {})
        return [-1 if i in dynamic else int(n) for i, n in enumerate(shape)]

    inputs = [
        {"name": n, "dtype": task.example_inputs[n].dtype.name, "shape": dims(n, task.example_inputs[n].shape)}
        for n in task.input_names
    ]
    outs = [
        {"name": n, "dtype": str(t.dtype).removeprefix("torch."), "shape": dims(n, tuple(t.shape))}
        for n, t in zip(out_names, outputs, strict=True)
    ]
    for i, item in enumerate(inputs):
        item["triton_name"] = f"{item['name']}__{i}"
    for i, item in enumerate(outs):
        item["triton_name"] = f"{item['name']}__{i}"
    batching = all(0 in axes.get(n, {}) for n in task.input_names)
    return buffer.getvalue(), {"inputs": inputs, "outputs": outs, "batching": batching}


def _io_wrapper(module: torch.nn.Module, cast: torch.dtype | None) -> torch.nn.Module:
    import torch

    from paretotune.evaluators.torch_engine import first_tensor

    class IOWrapper(torch.nn.Module):
        """fp32 in and out around the engine's module (bf16 inside, or int8 dynamic)."""

        def __init__(self, module: torch.nn.Module, cast: torch.dtype | None) -> None:
            super().__init__()
            self.module = module
            self.cast = cast

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            if self.cast is not None:
                args = tuple(a.to(self.cast) if a.is_floating_point() else a for a in args)
            out = first_tensor(self.module(*args))
            return out.float() if out.is_floating_point() else out

    return IOWrapper(module, cast)
