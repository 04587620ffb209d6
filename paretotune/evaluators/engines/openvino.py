"""Engine `openvino` (CPU): OpenVINO IR from the fp32 ONNX export; fp32, bf16 where the CPU has
it, int8 by NNCF post-training quantization, int4 weight-only by NNCF (`openvino_engine`).

`performance_hint` and `num_streams` are compile options (runtime stage): one IR serves them
all. The export is model.xml + model.bin and a repository for Triton's `openvino` backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from paretotune.errors import InvalidConfigError
from paretotune.evaluators.engines import base

if TYPE_CHECKING:
    from paretotune.evaluators.cache import ArtifactCache
    from paretotune.evaluators.config import BuildSpec
    from paretotune.evaluators.task import Task

def _capabilities() -> base.Capabilities:
    """The implementation's declaration (`openvino_engine.CAPABILITIES`) in the contract's terms."""
    from paretotune.evaluators import openvino_engine as ove

    caps = ove.CAPABILITIES
    return base.Capabilities(
        bit_widths=tuple(sorted(caps.bit_widths, reverse=True)),
        layer_precisions={b: caps.layer_precisions for b in caps.layer_precision_bit_widths},
        options=tuple(
            base.Option(o.name, o.default, o.allowed, bit_widths=o.bit_widths,
                   stage="runtime" if o.stage == "compile" else "build", doc=o.doc)
            for o in caps.options
        ),
        min_fidelity=dict(caps.min_fidelity),
    )


class OpenVINOEngine(base.Engine):
    name = "openvino"
    capabilities = _capabilities()
    packages = ("openvino", "nncf", "onnx")

    def problem(self, *, has_module: bool, is_onnx: bool) -> str | None:
        return self.missing_package({"openvino": "install paretotune[cpu]"}, is_onnx=is_onnx)

    def bit_width_problem(self, bit_width: int) -> str | None:
        from paretotune.evaluators import availability
        from paretotune.evaluators.openvino_engine import availability as ov_availability

        if not availability.importable("openvino"):
            return "openvino not importable (install paretotune[cpu])"
        return ov_availability(bit_width)

    def check(
        self, spec: BuildSpec, config: Mapping[str, Any], layers: Mapping[str, str], ignored: list[str]
    ) -> BuildSpec:
        from paretotune.evaluators.openvino_engine import compile_properties

        compile_properties(spec.threads, spec.bit_width, self.options(spec))  # num_streams <= threads
        return spec

    def options(self, spec: BuildSpec) -> dict[str, Any]:
        return {**dict(spec.options), **dict(spec.runtime_options)}

    def build(self, source: base.BuildSource, spec: BuildSpec) -> base.Built:
        from paretotune.evaluators.openvino_engine import build_openvino
        from paretotune.evaluators.openvino_ir import quantized_weight_ops

        task = source.task
        artifact = build_openvino(
            source.onnx(), spec.bit_width, dict(spec.options), task, list(task.layers),
            spec.excluded_layers,
        )
        if spec.bit_width in (4, 8):
            source.details["quantized_weight_ops"] = len(quantized_weight_ops(artifact))
        return base.Built(artifact, len(artifact))

    def runner(
        self, artifact: bytes, spec: BuildSpec, task: Task, threads: int, *,
        cache: ArtifactCache | None = None, sibling: Any = None,
    ) -> base.Runner:
        from paretotune.evaluators.openvino_engine import OpenVINORunner

        return OpenVINORunner(artifact, threads, spec.bit_width, self.options(spec))

    def full_precision_layers(
        self, artifact: bytes, spec: BuildSpec, task: Task, layers: Sequence[str]
    ) -> list[str]:
        """Layers none of whose weight ops is quantized; OpenVINO keeps the exporter's op
        names, so a layer's ops are those under its name scope (`/fc1/Gemm/WithoutBiases`)."""
        from paretotune.evaluators.openvino_ir import load_model, quantized_weight_ops, weight_ops

        model = load_model(artifact)
        quantized = quantized_weight_ops(model)
        ops = weight_ops(model)
        out = []
        for layer in layers:  # "/bert/encoder/layer.0/.../query/MatMul" is under layer ...query
            mine = [op for op in ops if op.strip("/").replace("/", ".").startswith(layer + ".")]
            if mine and not any(op in quantized for op in mine):
                out.append(layer)
        return out

    # -- export ----------------------------------------------------------------------------------

    def export(self, artifact: bytes, spec: BuildSpec, task: Task) -> base.ExportedArtifact:
        from paretotune.evaluators.openvino_engine import OpenVINORunner
        from paretotune.evaluators.openvino_ir import IR_FILES, unpack_ir

        xml, weights = unpack_ir(artifact)
        runner = OpenVINORunner(artifact, 1, spec.bit_width, self.options(spec))
        outputs = runner.run_all(task.example_inputs)

        def describe(port: Any, observed: tuple[int, ...] | None = None) -> dict[str, Any]:
            shape = port.get_partial_shape()
            dims = [int(d.get_length()) if d.is_static else -1 for d in shape]
            return {"name": port.get_any_name(), "dtype": port.get_element_type().to_dtype().name,
                    "shape": dims if observed is None or len(observed) != len(dims) else
                    [d if d != -1 or i == 0 else int(observed[i]) for i, d in enumerate(dims)]}

        compiled = runner.compiled
        inputs = [describe(p) for p in compiled.inputs]
        outs = [describe(p, tuple(o.shape)) for p, o in zip(compiled.outputs, outputs, strict=True)]
        batching = all(d["shape"] and d["shape"][0] == -1 for d in inputs)
        note = (
            "The artifact is OpenVINO IR (model.xml + model.bin) for Triton's `openvino` "
            "backend." + ("" if spec.bit_width == 16 else " That backend has no parameter "
            "pinning f32: on a CPU with bf16, OpenVINO's default (bf16) applies there.")
        )
        return base.ExportedArtifact(
            {IR_FILES[0]: xml, IR_FILES[1]: weights}, IR_FILES[0],
            {"inputs": inputs, "outputs": outs, "batching": batching}, note=note,
        )

    def triton_layout(self, threads: int, spec: BuildSpec | None = None) -> base.TritonLayout:
        from paretotune.evaluators.openvino_engine import triton_layout

        bit_width, options = (32, {}) if spec is None else (spec.bit_width, self.options(spec))
        layout = triton_layout(threads, bit_width, options)
        return base.TritonLayout(layout.backend, layout.platform, layout.kind, layout.parameters)

    def load_exported(self, directory: Path, config: Mapping[str, Any]) -> base.Predictor:
        from paretotune.evaluators.openvino_engine import OpenVINORunner, read_ir

        resolved = config.get("resolved") or {}
        options = {o.name: resolved[o.name] for o in self.capabilities.options if o.name in resolved}
        bit_width = int(resolved.get("bit_width", 32))
        if self.bit_width_problem(bit_width) is not None:
            raise InvalidConfigError(str(self.bit_width_problem(bit_width)))
        runner = OpenVINORunner(read_ir(directory), int(resolved.get("threads") or 1), bit_width, options)
        names = [s["name"] for s in config["io"]["outputs"]]
        order = [next(i for i, p in enumerate(runner.compiled.outputs) if n in p.get_names()) for n in names]

        def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            outs = runner.run_all(feeds)
            return [outs[i] for i in order]

        return run
