"""Engine `onnxruntime_cuda`: the `onnxruntime` engine's models on ONNX Runtime's CUDA
execution provider (onnxruntime-gpu), with I/O binding and optional CUDA graphs
(`onnxruntime_engine.OrtGpuRunner`). Its models are the CPU engine's; it has no export."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from paretotune.evaluators.engines import base
from paretotune.evaluators.engines.onnxruntime import OnnxRuntimeEngine

if TYPE_CHECKING:
    from paretotune.evaluators.cache import ArtifactCache
    from paretotune.evaluators.config import BuildSpec
    from paretotune.evaluators.task import Task

CUDA_GRAPHS = base.Option("cuda_graphs", False, (False, True), doc="enable_cuda_graph (I/O binding)")
CUDNN_CONV_ALGO_SEARCH = base.Option(
    "cudnn_conv_algo_search", "EXHAUSTIVE", ("EXHAUSTIVE", "HEURISTIC", "DEFAULT"),
    searched=False, doc="cuDNN's convolution algorithm search (EXHAUSTIVE finds the fastest)",
)
#: ONNX Runtime's engine cache of the TensorRT provider, inside the artifact cache
ENGINE_CACHE_DIR = "ort-tensorrt-engines"


class OnnxRuntimeCudaEngine(OnnxRuntimeEngine):
    name = "onnxruntime_cuda"
    on_gpu = True
    provider = "CUDAExecutionProvider"
    #: the CPU engine's builds, with the CUDA provider's options in place of session options
    capabilities = dataclasses.replace(
        OnnxRuntimeEngine.capabilities, options=(CUDA_GRAPHS, CUDNN_CONV_ALGO_SEARCH)
    )
    packages: tuple[str, ...] = ("onnxruntime", "onnx")
    threads_per_runner = False

    export = base.Engine.export  # (the model is plain ONNX; its serving on a GPU is not measured)
    triton_layout = base.Engine.triton_layout
    load_exported = base.Engine.load_exported
    check = base.Engine.check

    def problem(self, *, has_module: bool, is_onnx: bool) -> str | None:
        from paretotune.evaluators import availability

        reason = super().problem(has_module=has_module, is_onnx=is_onnx)
        if reason is not None:
            return reason
        if self.provider not in availability.ort_providers():
            return (
                f"onnxruntime has no {self.provider} (the CPU onnxruntime package is installed; "
                "uninstall it and install paretotune[gpu] for onnxruntime-gpu)"
            )
        return self.device_problem()

    def device_problem(self) -> str | None:
        from paretotune.evaluators import availability

        return availability.no_device()

    def runner(
        self, artifact: bytes, spec: BuildSpec, task: Task, threads: int, *,
        cache: ArtifactCache | None = None, sibling: Any = None,
    ) -> base.Runner:
        from paretotune.evaluators.onnxruntime_engine import OrtGpuRunner

        engine_cache = None if cache is None else str(cache.subdir(ENGINE_CACHE_DIR))
        return OrtGpuRunner(artifact, spec, engine_cache)
