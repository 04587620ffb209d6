"""GPU engine configurations: options, the capability matrix, and CPU specs left as they were."""

from __future__ import annotations

import pytest

from paretotune.errors import ConfigError, InvalidConfigError
from paretotune.evaluators.config import resolve_config
from paretotune.evaluators.onnxruntime_engine import provider_options

from _gpumodels import LAYERS


def test_cpu_build_dicts_keep_their_old_shape() -> None:
    """Adding GPU options must not change CPU build keys (their artifact caches stay valid)."""
    spec = resolve_config({"engine": "onnxruntime", "bit_width": 8, "batch_size": 8}, LAYERS)
    assert spec.build_dict() == {
        "prune_ratio": 0.0,
        "sparsity": 0.0,
        "engine": "onnxruntime",
        "bit_width": 8,
        "quant_mode": "dynamic",
        "per_channel": False,
        "excluded_layers": [],
        "torch_compile": False,
    }


def test_each_gpu_engine_keeps_the_options_it_reads() -> None:
    spec = resolve_config(
        {"engine": "torch_cuda", "bit_width": 16, "half": "bf16", "cuda_graphs": True}, LAYERS
    )
    assert spec.options == (("cuda_graphs", True), ("half", "bf16"))
    trt = resolve_config({"engine": "tensorrt", "workspace_mb": 512, "batch_size": 8}, LAYERS)
    assert trt.options == (("workspace_mb", 512),)
    # the optimization profile is built for the batch size: it is part of a TensorRT build
    assert trt.build_dict()["profile_batch_size"] == 8
    other = resolve_config({"engine": "tensorrt", "workspace_mb": 512, "batch_size": 16}, LAYERS)
    assert trt.build_dict() != other.build_dict()
    cuda = resolve_config({"engine": "torch_cuda", "batch_size": 1}, LAYERS)
    assert cuda.build_dict() == resolve_config(
        {"engine": "torch_cuda", "batch_size": 64}, LAYERS
    ).build_dict()


def test_options_an_engine_does_not_read_are_reported_as_ignored() -> None:
    spec = resolve_config({"engine": "torch_cuda", "workspace_mb": 64, "half": "fp16"}, LAYERS)
    assert set(spec.ignored) == {"workspace_mb", "half"}  # half only counts at bit_width=16
    assert spec.options == (("cuda_graphs", False),)
    cpu = resolve_config({"engine": "onnxruntime", "cuda_graphs": True}, LAYERS)
    assert cpu.ignored == ("cuda_graphs",) and cpu.options == ()


def test_tensorrt_takes_per_layer_float_precisions_at_any_bit_width() -> None:
    spec = resolve_config(
        {"engine": "tensorrt", "bit_width": 32, "precision": {"fc1": "fp16", "fc2": "fp32"}},
        LAYERS,
    )
    assert spec.layer_precisions == (("fc1", "fp16"), ("fc2", "fp32"))
    assert "precision" not in spec.ignored


def test_tensorrt_int8_source_decides_quantization() -> None:
    calibrated = resolve_config({"engine": "tensorrt", "bit_width": 8, "quant_mode": "static"}, LAYERS)
    assert calibrated.quant_mode is None and calibrated.option("int8_source") == "calibration"
    assert calibrated.ignored == ("quant_mode",)
    qdq = resolve_config(
        {"engine": "tensorrt", "bit_width": 8, "int8_source": "qdq", "per_channel": True}, LAYERS
    )
    assert (qdq.quant_mode, qdq.per_channel) == ("static", True)
    ort_trt = resolve_config({"engine": "onnxruntime_tensorrt", "bit_width": 8}, LAYERS)
    assert ort_trt.quant_mode == "static"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"engine": "torch_cuda", "bit_width": 8}, "bit_width=8 is not buildable on engine='torch_cuda'"),
        ({"engine": "torch_cuda", "bit_width": 4}, "bit_width=4 is not buildable on engine='torch_cuda'"),
        ({"engine": "onnxruntime_cuda", "bit_width": 16}, "engine='onnxruntime_cuda'"),
        ({"engine": "tensorrt", "bit_width": 4}, "bit_width=4 is not buildable on engine='tensorrt'"),
        (
            {"engine": "onnxruntime_tensorrt", "bit_width": 16, "half": "bf16"},
            "half='bf16' is not buildable on engine='onnxruntime_tensorrt'",
        ),
        (
            {"engine": "onnxruntime_tensorrt", "bit_width": 8, "quant_mode": "dynamic"},
            "quant_mode='dynamic' is not buildable on engine='onnxruntime_tensorrt'",
        ),
        (
            {"engine": "tensorrt", "bit_width": 16, "precision": {"fc1": "int8"}},
            r"\['fc1'\] = 'int8' on engine='tensorrt' needs bit_width=8",
        ),
        ({"engine": "torch", "bit_width": 16, "half": "fp16"}, "half='fp16' is not buildable on engine='torch'"),
        ({"engine": "onnxruntime_cuda", "bit_width": 8, "precision": {"fc1": "fp16"}}, "engine='onnxruntime_cuda'"),
    ],
)
def test_unbuildable_gpu_combinations_are_invalid(
    monkeypatch: pytest.MonkeyPatch, config: dict, message: str
) -> None:
    from paretotune.evaluators import hardware

    # the same answer on any CPU: the torch/fp16 case must not depend on this CPU's bf16 ISA
    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: True)
    with pytest.raises(InvalidConfigError, match=message):
        resolve_config(config, LAYERS)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"engine": "tensorrt", "bit_width": 16, "half": "fp8"}, "half"),
        ({"engine": "tensorrt", "workspace_mb": -1}, "workspace_mb"),
        ({"engine": "tensorrt", "workspace_mb": True}, "workspace_mb"),
        ({"engine": "tensorrt", "bit_width": 8, "int8_source": "minmax"}, "int8_source"),
        ({"engine": "onnxruntime_cuda", "cudnn_conv_algo_search": "fast"}, "cudnn_conv_algo_search"),
        ({"engine": "torch_cuda", "cuda_graphs": "yes"}, "cuda_graphs"),
        ({"engine": "tensorrt", "precision": {"fc1": "fp64"}}, "fc1"),
    ],
)
def test_bad_gpu_option_values_name_the_field(config: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        resolve_config(config, LAYERS)


def test_onnxruntime_cuda_provider_options() -> None:
    spec = resolve_config(
        {"engine": "onnxruntime_cuda", "cuda_graphs": True, "cudnn_conv_algo_search": "HEURISTIC"},
        LAYERS,
    )
    assert provider_options(spec) == [
        (
            "CUDAExecutionProvider",
            {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC", "enable_cuda_graph": True},
        ),
        ("CPUExecutionProvider", {}),
    ]


@pytest.mark.parametrize(
    ("config", "fp16", "int8"),
    [({"bit_width": 16}, True, False), ({"bit_width": 8}, False, True), ({}, False, False)],
)
def test_onnxruntime_tensorrt_provider_options(config: dict, fp16: bool, int8: bool) -> None:
    spec = resolve_config({"engine": "onnxruntime_tensorrt", "workspace_mb": 256, **config}, LAYERS)
    providers = provider_options(spec, "/tmp/engines")
    assert [name for name, _ in providers] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    trt = providers[0][1]
    assert (trt["trt_fp16_enable"], trt["trt_int8_enable"]) == (fp16, int8)
    assert trt["trt_max_workspace_size"] == 256 * 1024**2
    assert trt["trt_engine_cache_enable"] is True
    assert trt["trt_engine_cache_path"] == "/tmp/engines"
    assert providers[1][1]["cudnn_conv_algo_search"] == "EXHAUSTIVE"


def test_cpu_engines_have_no_gpu_providers() -> None:
    with pytest.raises(InvalidConfigError, match="has no GPU providers"):
        provider_options(resolve_config({"engine": "onnxruntime"}, LAYERS))
