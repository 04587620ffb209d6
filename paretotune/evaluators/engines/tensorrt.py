"""Engine `tensorrt`: TensorRT's builder API on the fp32 ONNX export (`tensorrt_engine`):
fp32, fp16 or bf16, int8 from calibration or from ONNX Runtime's static Q/DQ model, and a
precision per layer. The plan is built for one GPU model and optimization profile, so its
build key holds the batch size and the GPU; it exports as a Triton `tensorrt_plan`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from paretotune.errors import EvaluationError, InvalidConfigError
from paretotune.evaluators.engines import base

if TYPE_CHECKING:
    from paretotune.evaluators.cache import ArtifactCache
    from paretotune.evaluators.config import BuildSpec
    from paretotune.evaluators.task import Task

FLOAT_LAYERS = ("fp16", "bf16", "fp32")


class TensorRTEngine(base.Engine):
    name = "tensorrt"
    on_gpu = True
    capabilities = base.Capabilities(
        bit_widths=(32, 16, 8),
        int8_modes=(),  # int8_source decides where the scales come from
        per_channel=False,  # read only with int8_source='qdq' (`check`)
        layer_precisions={8: ("int8", *FLOAT_LAYERS), 16: FLOAT_LAYERS, 32: FLOAT_LAYERS},
        layer_types=True,
        options=(
            base.Option("half", "fp16", ("fp16", "bf16"), bit_widths=(16,), doc="the 16-bit type"),
            base.Option("workspace_mb", 0, minimum=0, searched=False,
                   doc="the builder's workspace limit in MiB (0: TensorRT's own)"),
            base.Option("int8_source", "calibration", ("calibration", "qdq"), bit_widths=(8,),
                   doc="IInt8EntropyCalibrator2 on the calibration batches, or the static Q/DQ model"),
        ),
        min_fidelity={32: 0.9999, 16: 0.99, 8: 0.95},
    )
    packages = ("onnx", "tensorrt", "pycuda")
    threads_per_runner = False
    #: the optimization profile is built for the trial's batch size
    build_keys_batch_size = True

    def problem(self, *, has_module: bool, is_onnx: bool) -> str | None:
        from paretotune.evaluators import availability

        missing = self.missing_package({"tensorrt": "install paretotune[gpu]",
                                        "pycuda": "TensorRT I/O uses pycuda buffers"}, is_onnx=is_onnx)
        return missing or availability.no_device()

    def check(
        self, spec: BuildSpec, config: Mapping[str, Any], layers: Mapping[str, str], ignored: list[str]
    ) -> BuildSpec:
        int8_layers = [layer for layer, value in spec.layer_precisions if value == "int8"]
        if int8_layers and spec.bit_width != 8:
            raise InvalidConfigError(
                f"precision {int8_layers} = 'int8' on engine='tensorrt' needs bit_width=8 (the "
                f"int8 scales come from int8_source), got bit_width={spec.bit_width}; allowed per "
                f"layer at bit_width={spec.bit_width}: {', '.join(map(repr, FLOAT_LAYERS))}"
            )
        if spec.bit_width != 8:
            return spec
        if spec.option("int8_source") != "qdq":
            return spec  # calibration: quant_mode and per_channel do not apply (ignored)
        if "per_channel" in ignored:  # the Q/DQ model's weights: per channel as asked
            ignored.remove("per_channel")
        return dataclasses.replace(
            spec, quant_mode="static", per_channel=bool(config.get("per_channel", False))
        )

    def build(self, source: base.BuildSource, spec: BuildSpec) -> base.Built:
        """The serialized engine: from the fp32 ONNX model, or from ONNX Runtime's symmetric
        static-int8 Q/DQ model when int8 comes from explicit Q/DQ."""
        from paretotune.evaluators.onnxruntime_engine import build_onnxruntime
        from paretotune.evaluators.tensorrt_engine import build_tensorrt

        task = source.task
        onnx_model = source.onnx()
        if spec.bit_width == 8 and spec.option("int8_source") == "qdq":
            onnx_model, info = build_onnxruntime(onnx_model, spec, task, list(task.layers))
            source.details["qdq"] = info
        plan, info = build_tensorrt(onnx_model, spec, task, list(task.layers), cache=source.cache)
        source.details.update(info)
        return base.Built(plan, len(plan))

    def runner(
        self, artifact: bytes, spec: BuildSpec, task: Task, threads: int, *,
        cache: ArtifactCache | None = None, sibling: Any = None,
    ) -> base.Runner:
        from paretotune.evaluators.tensorrt_engine import TensorRTRunner

        return TensorRTRunner(artifact, task.input_names)

    # -- export ----------------------------------------------------------------------------------

    def export(self, artifact: bytes, spec: BuildSpec, task: Task) -> base.ExportedArtifact:
        self.require_here()
        from paretotune.evaluators.tensorrt_engine import plan_io

        io_spec = plan_io(artifact)
        io_spec["batching"] = bool(io_spec["inputs"]) and all(
            s["shape"] and s["shape"][0] == -1 for s in io_spec["inputs"]
        )
        return base.ExportedArtifact({"model.plan": artifact}, "model.plan", io_spec)

    def triton_layout(self, threads: int, spec: BuildSpec | None = None) -> base.TritonLayout:
        return base.TritonLayout("tensorrt", "tensorrt_plan", kind="KIND_GPU")

    def load_exported(self, directory: Path, config: Mapping[str, Any]) -> base.Predictor:
        self.require_here()
        from paretotune.evaluators.tensorrt_engine import TensorRTRunner

        input_names = [s["name"] for s in config["io"]["inputs"]]
        output_names = [s["name"] for s in config["io"]["outputs"]]
        runner = TensorRTRunner((directory / config["artifact"]).read_bytes(), input_names)
        order = [runner.outputs.index(n) for n in output_names]

        def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            outs = runner.run_all(feeds)
            return [outs[i] for i in order]

        return run

    def require_here(self) -> None:
        """A TensorRT plan is built for (and only runs on) a GPU model: export needs one here."""
        why = self.problem(has_module=True, is_onnx=False)
        if why:
            raise EvaluationError(
                f"engine='tensorrt': building a TensorRT engine.plan is not available on this "
                f"machine ({why}); export on a machine with the GPU model it was measured on and "
                "paretotune[gpu], or export a trial on 'onnxruntime' or 'torch'"
            )
