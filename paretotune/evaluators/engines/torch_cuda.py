"""Engine `torch_cuda`: PyTorch on a CUDA device, fp32, fp16 or bf16, optionally compiled and
replayed as CUDA graphs (`torch_cuda_engine`). Its artifact is the torch engine's (fp32
weights), built for the device by `module_for`; it has no export."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from paretotune.evaluators.engines import base
from paretotune.evaluators.engines.torch import TorchEngine

if TYPE_CHECKING:
    import torch

    from paretotune.evaluators.cache import ArtifactCache
    from paretotune.evaluators.config import BuildSpec
    from paretotune.evaluators.task import Task

HALF = ("fp16", "bf16")
CUDA_GRAPHS = base.Option("cuda_graphs", False, (False, True), doc="replay the run as a CUDA graph")


class TorchCudaEngine(TorchEngine):
    name = "torch_cuda"
    on_gpu = True
    capabilities = base.Capabilities(
        bit_widths=(32, 16),
        torch_compile=True,
        options=(
            base.Option("half", "fp16", HALF, bit_widths=(16,), doc="the 16-bit type"),
            CUDA_GRAPHS,
        ),
        min_fidelity={32: 0.9999, 16: 0.99},
    )
    packages = ("torch",)
    threads_per_runner = False

    export = base.Engine.export  # a CUDA module has no deployment format here
    triton_layout = base.Engine.triton_layout
    load_exported = base.Engine.load_exported
    check = base.Engine.check  # the CPU engine's rules (bf16 ISA, Linear layers) are not its
    bit_width_problem = base.Engine.bit_width_problem

    def problem(self, *, has_module: bool, is_onnx: bool) -> str | None:
        from paretotune.evaluators import availability

        reason = super().problem(has_module=has_module, is_onnx=is_onnx)
        if reason is None and not availability.torch_cuda_available():
            return "no CUDA device: torch.cuda.is_available() is False"
        return reason

    def module_for(self, task: Task, spec: BuildSpec, module: torch.nn.Module) -> torch.nn.Module:
        from paretotune.evaluators.torch_cuda_engine import build_torch_cuda

        return build_torch_cuda(module, spec.bit_width, spec.option("half"))

    def module_runner(self, spec: BuildSpec, module: torch.nn.Module, task: Task) -> base.Runner:
        from paretotune.evaluators.torch_cuda_engine import TorchCudaRunner, compute_dtype

        return TorchCudaRunner(
            module,
            task.input_names,
            compute_dtype(spec.bit_width, spec.option("half")),
            cuda_graphs=spec.option("cuda_graphs"),
            compile=spec.torch_compile,
        )

    def runner(
        self, artifact: bytes, spec: BuildSpec, task: Task, threads: int, *,
        cache: ArtifactCache | None = None, sibling: Any = None,
    ) -> base.Runner:
        return self.module_runner(spec, self.load(task, spec, artifact), task)


__all__ = ["TorchCudaEngine"]
