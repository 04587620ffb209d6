"""ONNX Runtime on the GPU against a fake that follows its CUDA-graph semantics: a graph session
captures inside its first run and then replays over the buffers it captured, so only bound
device buffers may ever feed it; a session it refuses to build makes the config invalid; and
the TensorRT provider gets tensorrt's libraries loaded first."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import types
from typing import Any

import numpy as np
import pytest

from paretotune.errors import InvalidConfigError
from paretotune.evaluators.config import resolve_config
from paretotune.evaluators.onnxruntime_engine import OrtGpuRunner

from _gpumodels import LAYERS

REFUSAL = (
    "[ONNXRuntimeError] : 1 : FAIL : This session cannot use the CUDA Graph feature as requested "
    "by the user  as all compute graph nodes have not been partitioned to the CUDA EP."
)


def _model(x: np.ndarray) -> np.ndarray:
    return (x * 2.0 + 1.0).astype(np.float32)


def fake_onnxruntime(events: list[str], refuse_graphs: bool = False) -> types.ModuleType:
    ort = types.ModuleType("onnxruntime")

    class OrtValue:
        def __init__(self, array: np.ndarray) -> None:
            self.array = np.array(array, copy=True)

        @staticmethod
        def ortvalue_from_numpy(array: np.ndarray, device: str, index: int) -> OrtValue:
            return OrtValue(array)

        @staticmethod
        def ortvalue_from_shape_and_type(shape: Any, dtype: Any, device: str, index: int) -> OrtValue:
            return OrtValue(np.zeros(shape, dtype))

        def update_inplace(self, array: np.ndarray) -> None:
            self.array[...] = array

        def numpy(self) -> np.ndarray:
            return np.array(self.array, copy=True)

    class IOBinding:
        def __init__(self) -> None:
            self.inputs: dict[str, OrtValue] = {}
            self.outputs: dict[str, OrtValue] = {}

        def bind_ortvalue_input(self, name: str, value: OrtValue) -> None:
            self.inputs[name] = value

        def bind_ortvalue_output(self, name: str, value: OrtValue) -> None:
            self.outputs[name] = value

        def copy_outputs_to_cpu(self) -> list[np.ndarray]:
            return [v.numpy() for v in self.outputs.values()]

    class InferenceSession:
        def __init__(self, model: bytes, options: Any, providers: list[Any]) -> None:
            name, opts = providers[0]
            self.graphs = bool(opts.get("enable_cuda_graph") or opts.get("trt_cuda_graph_enable"))
            events.append(f"session({name}, graphs={self.graphs})")
            if self.graphs and refuse_graphs:
                raise RuntimeError(REFUSAL)
            self.providers = [p[0] for p in providers]
            self.captured: Any = None  # what the graph reads when replayed
            self.runs = 0

        def get_providers(self) -> list[str]:
            return self.providers

        def get_inputs(self) -> list[Any]:
            return [types.SimpleNamespace(name="x")]

        def get_outputs(self) -> list[Any]:
            return [types.SimpleNamespace(name="output")]

        def io_binding(self) -> IOBinding:
            return IOBinding()

        def run(self, names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            if self.graphs:
                events.append("graph session: plain run")
                if self.captured is None:  # ORT captures over its own copies of the feeds
                    self.captured = {k: OrtValue(v) for k, v in feeds.items()}
                return [_model(self.captured["x"].array)]
            return [_model(feeds["x"])]

        def run_with_iobinding(self, binding: IOBinding) -> None:
            self.runs += 1
            if self.graphs and self.captured is None and self.runs >= 2:
                self.captured = binding.inputs  # captured over the bound device buffers
            source = self.captured if self.graphs and self.captured is not None else binding.inputs
            out = _model(source["x"].array)
            next(iter(binding.outputs.values())).array[...] = out

    ort.OrtValue = OrtValue  # type: ignore[attr-defined]
    ort.InferenceSession = InferenceSession  # type: ignore[attr-defined]
    ort.SessionOptions = lambda: types.SimpleNamespace()  # type: ignore[attr-defined]
    ort.GraphOptimizationLevel = types.SimpleNamespace(ORT_ENABLE_ALL=99)  # type: ignore[attr-defined]
    ort.get_available_providers = lambda: [  # type: ignore[attr-defined]
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
    ]
    return ort


def _runner(monkeypatch: pytest.MonkeyPatch, config: dict[str, Any], events: list[str],
            refuse: bool = False) -> OrtGpuRunner:
    monkeypatch.setitem(sys.modules, "onnxruntime", fake_onnxruntime(events, refuse))
    return OrtGpuRunner(b"model", resolve_config(config, LAYERS))


@pytest.mark.parametrize("engine", ["onnxruntime_cuda", "onnxruntime_tensorrt"])
def test_a_graph_session_replays_the_inputs_it_is_given(
    monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    events: list[str] = []
    runner = _runner(monkeypatch, {"engine": engine, "cuda_graphs": True}, events)
    first = np.arange(6, dtype=np.float32).reshape(2, 3)
    changed = first + 10.0
    assert np.array_equal(runner.prepare({"x": first})(), _model(first))
    for _ in range(3):  # replays, after the capture, with changed inputs of the same shape
        assert np.array_equal(runner.prepare({"x": changed})(), _model(changed))
        end_to_end, compute = runner.prepare_timed({"x": first})()
        assert compute <= end_to_end
    assert np.array_equal(runner.prepare({"x": changed})(), _model(changed))
    assert "graph session: plain run" not in events  # only run_with_iobinding feeds it
    assert np.array_equal(runner.run({"x": changed}), _model(changed))  # the plain session


def test_a_refused_graph_session_is_an_invalid_config_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(InvalidConfigError, match=r"cuda_graphs=True is not buildable on "
                       r"engine='onnxruntime_cuda'.*all compute graph nodes have not been "
                       r"partitioned to the CUDA EP.*allowed here: cuda_graphs=False"):
        _runner(monkeypatch, {"engine": "onnxruntime_cuda", "cuda_graphs": True}, [], refuse=True)
    # the same model without graphs builds: the refusal is about graphs only
    _runner(monkeypatch, {"engine": "onnxruntime_cuda"}, [], refuse=True)


def test_the_tensorrt_provider_gets_tensorrt_loaded_first(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        """Records the import of tensorrt (standing in for loading its libnvinfer)."""

        def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
            if name != "tensorrt":
                return None
            return importlib.util.spec_from_loader(name, self)

        def create_module(self, spec: Any) -> None:
            return None

        def exec_module(self, module: types.ModuleType) -> None:
            events.append("import tensorrt")

    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Finder(), *sys.meta_path])
    _runner(monkeypatch, {"engine": "onnxruntime_tensorrt"}, events)
    sys.modules.pop("tensorrt", None)
    assert events[0] == "import tensorrt" and events[1].startswith("session(Tensorrt")


def test_without_tensorrt_the_tensorrt_provider_is_invalid_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import raises ImportError
    with pytest.raises(InvalidConfigError, match=r"needs the tensorrt package"):
        _runner(monkeypatch, {"engine": "onnxruntime_tensorrt"}, [])
