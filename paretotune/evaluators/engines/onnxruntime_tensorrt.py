"""Engine `onnxruntime_tensorrt`: ONNX Runtime's TensorRT execution provider, fp32, fp16 (the
provider's flag on the fp32 model) or int8 from the static Q/DQ model (TensorRT takes its
scales). The CUDA provider runs what TensorRT does not."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from paretotune.evaluators.engines import base
from paretotune.evaluators.engines.onnxruntime import INT8_LAYERS
from paretotune.evaluators.engines.onnxruntime_cuda import (
    CUDA_GRAPHS,
    CUDNN_CONV_ALGO_SEARCH,
    OnnxRuntimeCudaEngine,
)

if TYPE_CHECKING:
    from paretotune.evaluators.config import BuildSpec

WORKSPACE_MB = base.Option(
    "workspace_mb", 0, minimum=0, searched=False,
    doc="TensorRT's workspace limit in MiB (0: TensorRT's own)",
)


class OnnxRuntimeTensorRTEngine(OnnxRuntimeCudaEngine):
    name = "onnxruntime_tensorrt"
    provider = "TensorrtExecutionProvider"
    capabilities = base.Capabilities(
        bit_widths=(32, 16, 8),
        int8_modes=("static",),  # its int8 is the static Q/DQ model
        per_channel=True,
        layer_precisions={8: INT8_LAYERS},
        options=(
            base.Option("half", "fp16", ("fp16",), bit_widths=(16,),
                   doc="the provider's options enable fp16 only (bf16: engine 'tensorrt')"),
            CUDA_GRAPHS, WORKSPACE_MB, CUDNN_CONV_ALGO_SEARCH,
        ),
        min_fidelity={32: 0.9999, 16: 0.99, 8: 0.95},
    )
    packages = ("onnxruntime", "onnx", "tensorrt")

    def device_problem(self) -> str | None:
        from paretotune.evaluators import availability

        if not availability.importable("tensorrt"):
            return "tensorrt not importable (the TensorRT provider needs its libraries)"
        return super().device_problem()

    def quantize_spec(self, spec: BuildSpec) -> BuildSpec:
        return dataclasses.replace(spec, bit_width=32) if spec.bit_width == 16 else spec
