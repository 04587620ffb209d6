"""Recording fakes of the tensorrt module, following the real Python API of TensorRT 10
(weak typing: precision builder flags, `layer.precision`, `set_output_type`, int8 calibrators)
and TensorRT 11 (strong typing only: none of those exist, and using one raises as it would).

The fake ONNX parser turns each ONNX node into one layer named after the node (as TensorRT's
parser does) and records the model it parsed, so a test can read the graph TensorRT was given.
"""

from __future__ import annotations

import types
from typing import Any

import onnx

WEAK_FLAGS = ("FP16", "BF16", "INT8", "FP8", "OBEY_PRECISION_CONSTRAINTS",
              "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO")
OTHER_FLAGS = ("REFIT", "SPARSE_WEIGHTS", "VERSION_COMPATIBLE")
LAYER_TYPES = {"Conv": "CONVOLUTION", "Gemm": "MATRIX_MULTIPLY", "MatMul": "MATRIX_MULTIPLY",
               "Relu": "ACTIVATION", "MaxPool": "POOLING", "Flatten": "SHUFFLE",
               "Constant": "CONSTANT", "Shape": "SHAPE", "Cast": "CAST"}


class FakeTensor:
    def __init__(self, name: str, dtype: str = "FLOAT", shape: tuple[int, ...] = (),
                 is_network_output: bool = False) -> None:
        self.name, self.dtype, self.shape = name, dtype, shape
        self.is_network_output = is_network_output


class FakeLayer10:
    """An ILayer of TensorRT 10: precision and output types can be constrained."""

    def __init__(self, name: str, type: str, outputs: list[FakeTensor]) -> None:
        self.name, self.type, self._outputs = name, type, outputs
        self.precision: Any = None
        self.output_types: dict[int, Any] = {}

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_output(self, i: int) -> FakeTensor:
        return self._outputs[i]

    def set_output_type(self, i: int, dtype: Any) -> None:
        self.output_types[i] = dtype


class FakeLayer11:
    """An ILayer of TensorRT 11: no `precision`, no `set_output_type` (strong typing)."""

    __slots__ = ("name", "type", "_outputs")

    def __init__(self, name: str, type: str, outputs: list[FakeTensor]) -> None:
        self.name, self.type, self._outputs = name, type, outputs

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_output(self, i: int) -> FakeTensor:
        return self._outputs[i]


class FakeNetwork:
    def __init__(self, flags: int, layer_class: type) -> None:
        self.flags, self.layer_class = flags, layer_class
        self.layers: list[Any] = []
        self.inputs: list[FakeTensor] = []
        self.parsed: onnx.ModelProto | None = None

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def get_layer(self, i: int) -> Any:
        return self.layers[i]

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, i: int) -> FakeTensor:
        return self.inputs[i]


class FakeParser:
    def __init__(self, network: FakeNetwork, logger: Any) -> None:
        self.network = network
        self.num_errors = 0

    def parse(self, data: bytes) -> bool:
        model = onnx.load_from_string(data)
        network = self.network
        network.parsed = model
        outputs = {o.name for o in model.graph.output}
        for node in model.graph.node:
            kind = LAYER_TYPES.get(node.op_type, "ELEMENTWISE")
            dtype = "INT64" if node.op_type == "Shape" else "FLOAT"
            tensors = [FakeTensor(o, dtype, is_network_output=o in outputs) for o in node.output]
            network.layers.append(network.layer_class(node.name, kind, tensors))
        inits = {i.name for i in model.graph.initializer}
        for graph_input in model.graph.input:
            if graph_input.name in inits:
                continue
            dims = graph_input.type.tensor_type.shape.dim
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
            network.inputs.append(FakeTensor(graph_input.name, shape=shape))
        return True

    def get_error(self, i: int) -> str:
        raise IndexError(i)


class FakeConfig:
    def __init__(self, trt: Any) -> None:
        self._trt = trt
        self.flags: list[str] = []
        self.profiles: list[Any] = []
        self.pools: dict[str, int] = {}

    def set_flag(self, flag: str) -> None:
        self.flags.append(flag)

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.pools[pool] = size

    def add_optimization_profile(self, profile: Any) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("int8_calibrator",) and self._trt.__version__.startswith("11"):
            raise AttributeError(f"'IBuilderConfig' object has no attribute {name!r}")
        object.__setattr__(self, name, value)


class FakeProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[Any, Any, Any]] = {}

    def set_shape(self, name: str, low: Any, opt: Any, high: Any) -> None:
        self.shapes[name] = (tuple(low), tuple(opt), tuple(high))


def fake_tensorrt(version: str) -> types.ModuleType:
    """A tensorrt module of `version` ("10.16.1.11" or "11.4.0.106"); `trt.builders` lists every
    Builder made, with its networks and configs, for the test to read."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]
    flags = OTHER_FLAGS + (WEAK_FLAGS if major < 11 else ())
    trt.BuilderFlag = types.SimpleNamespace(**{f: f for f in flags})  # type: ignore[attr-defined]
    trt.DataType = types.SimpleNamespace(  # type: ignore[attr-defined]
        **{n: n for n in ("FLOAT", "HALF", "BF16", "INT8", "INT32", "INT64", "FP8", "BOOL")}
    )
    trt.LayerType = types.SimpleNamespace(  # type: ignore[attr-defined]
        **{t: t for t in {*LAYER_TYPES.values(), "ELEMENTWISE", "IDENTITY", "QUANTIZE",
                          "DEQUANTIZE"}}
    )
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(  # type: ignore[attr-defined]
        EXPLICIT_BATCH=0, STRONGLY_TYPED=1
    )
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")  # type: ignore[attr-defined]
    layer_class = FakeLayer10 if major < 11 else FakeLayer11
    trt.builders = []  # type: ignore[attr-defined]

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            self.severity = severity

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.networks: list[FakeNetwork] = []
            self.configs: list[FakeConfig] = []
            trt.builders.append(self)  # type: ignore[attr-defined]

        def create_network(self, flags: int = 0) -> FakeNetwork:
            network = FakeNetwork(flags, layer_class)
            self.networks.append(network)
            return network

        def create_builder_config(self) -> FakeConfig:
            config = FakeConfig(trt)
            self.configs.append(config)
            return config

        def create_optimization_profile(self) -> FakeProfile:
            return FakeProfile()

        def build_serialized_network(self, network: FakeNetwork, config: FakeConfig) -> bytes:
            return b"plan:" + version.encode()

    trt.Logger = Logger  # type: ignore[attr-defined]
    trt.Builder = Builder  # type: ignore[attr-defined]
    trt.OnnxParser = FakeParser  # type: ignore[attr-defined]
    if major < 11:
        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                pass

        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2  # type: ignore[attr-defined]
    return trt
