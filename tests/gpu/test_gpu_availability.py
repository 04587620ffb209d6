"""Which engines are offered where: GPU engines only where they can run, with the reason
logged for each one left out, and never a failed trial for a missing GPU."""

from __future__ import annotations

import logging

import pytest

from paretotune.errors import InvalidConfigError
from paretotune.evaluators import Task, TaskEvaluator, availability
from paretotune.space.standard import standard_space

from _gpumodels import FAST, task_fixture  # noqa: F401 - the `task` fixture

GPU_BOX_PACKAGES = {"torch", "onnx", "onnxruntime", "openvino", "tensorrt", "pycuda"}


def _machine(
    monkeypatch: pytest.MonkeyPatch,
    *,
    packages: set[str] = GPU_BOX_PACKAGES,
    devices: int = 1,
    providers: tuple[str, ...] = (
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ),
) -> None:
    """Pretend this process sees `packages`, `devices` CUDA devices and ORT `providers`."""
    monkeypatch.setattr(availability, "importable", lambda name: name in packages)
    monkeypatch.setattr(availability, "cuda_device_count", lambda: devices)
    monkeypatch.setattr(availability, "torch_cuda_available", lambda: devices > 0)
    monkeypatch.setattr(availability, "ort_providers", lambda: list(providers))


CPU_BOX = {"packages": {"torch", "onnx", "onnxruntime"}, "devices": 0,
           "providers": ("CPUExecutionProvider",)}


def test_this_machine_offers_what_its_probes_find_and_says_why(task: Task) -> None:
    """On either kind of machine: every engine is offered or has a reason, and what is offered
    follows the real probes (a CUDA machine offers torch_cuda, a CPU one says why not)."""
    problems = task.unavailable_engines()
    available = task.available_engines()
    assert set(available) | set(problems) == set(availability.ENGINES)
    assert not set(available) & set(problems)
    assert available[:2] == ["torch", "onnxruntime"]
    if availability.torch_cuda_available():
        assert "torch_cuda" in available
    else:
        assert problems["torch_cuda"] == "no CUDA device: torch.cuda.is_available() is False"
    if not availability.importable("tensorrt"):
        assert problems["tensorrt"] == "tensorrt not importable (install paretotune[gpu])"
    if "CUDAExecutionProvider" not in availability.ort_providers():
        assert "no CUDAExecutionProvider" in problems["onnxruntime_cuda"]


def test_a_cpu_box_offers_only_cpu_engines_and_says_why(
    monkeypatch: pytest.MonkeyPatch, task: Task
) -> None:
    _machine(monkeypatch, **CPU_BOX)
    assert task.available_engines() == ["torch", "onnxruntime"]
    problems = task.unavailable_engines()
    assert problems["tensorrt"] == "tensorrt not importable (install paretotune[gpu])"
    assert problems["torch_cuda"] == "no CUDA device: torch.cuda.is_available() is False"
    assert "no CUDAExecutionProvider" in problems["onnxruntime_cuda"]


def test_a_full_gpu_box_offers_every_engine(monkeypatch: pytest.MonkeyPatch, task: Task) -> None:
    _machine(monkeypatch)
    assert task.available_engines() == list(availability.ENGINES)
    assert task.unavailable_engines() == {}


@pytest.mark.parametrize(
    ("machine", "engine", "reason"),
    [
        ({"packages": GPU_BOX_PACKAGES - {"tensorrt"}}, "tensorrt", "tensorrt not importable"),
        ({"packages": GPU_BOX_PACKAGES - {"pycuda"}}, "tensorrt", "pycuda not importable"),
        ({"devices": 0}, "tensorrt", "no CUDA device"),
        ({"devices": 0}, "torch_cuda", "torch.cuda.is_available() is False"),
        ({"devices": 0}, "onnxruntime_cuda", "no CUDA device"),
        ({"providers": ("CPUExecutionProvider",)}, "onnxruntime_cuda", "no CUDAExecutionProvider"),
        (
            {"providers": ("CUDAExecutionProvider", "CPUExecutionProvider")},
            "onnxruntime_tensorrt",
            "no TensorrtExecutionProvider",
        ),
        (
            {"packages": GPU_BOX_PACKAGES - {"tensorrt"}},
            "onnxruntime_tensorrt",
            "tensorrt not importable",
        ),
        ({"packages": GPU_BOX_PACKAGES - {"torch"}}, "torch_cuda", "torch not importable"),
    ],
)
def test_each_missing_piece_is_named(
    monkeypatch: pytest.MonkeyPatch, task: Task, machine: dict, engine: str, reason: str
) -> None:
    _machine(monkeypatch, **machine)
    assert engine not in task.available_engines()
    assert reason in task.unavailable_engines()[engine]


def test_an_onnx_task_never_gets_a_torch_engine(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    _machine(monkeypatch)
    problems = availability.engine_problems(has_module=False, is_onnx=True)
    assert "needs a PyTorch model" in problems["torch_cuda"]
    assert availability.available_engines(has_module=False, is_onnx=True) == [
        "onnxruntime",
        "openvino",
        "onnxruntime_cuda",
        "onnxruntime_tensorrt",
        "tensorrt",
    ]


def test_cuda_visible_devices_empty_means_no_device(monkeypatch: pytest.MonkeyPatch) -> None:
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert availability.cuda_device_count() == 0


def test_standard_space_leaves_out_what_cannot_run_and_logs_why(
    monkeypatch: pytest.MonkeyPatch, task: Task, caplog: pytest.LogCaptureFixture
) -> None:
    _machine(monkeypatch, **CPU_BOX)
    with caplog.at_level(logging.INFO, logger="paretotune.space.standard"):
        space = standard_space(task)
    assert list(space.dimensions["engine"].choices) == ["torch", "onnxruntime"]
    assert not {"half", "cuda_graphs", "int8_source"} & set(space.dimensions)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "tensorrt: tensorrt not importable" in logged
    assert "torch_cuda: no CUDA device" in logged


def test_standard_space_on_a_gpu_box_searches_the_gpu_options(
    monkeypatch: pytest.MonkeyPatch, task: Task
) -> None:
    _machine(monkeypatch)
    space = standard_space(task)
    assert list(space.dimensions["engine"].choices) == list(availability.ENGINES)
    assert space.dimensions["half"].when == {
        "engine": ("torch_cuda", "tensorrt"),
        "bit_width": (16,),
    }
    assert space.dimensions["int8_source"].when["engine"] == ("tensorrt",)
    rules = [(r["engine"], r["bit_width"]) for r in space.to_dict()["forbidden"]]
    assert (["torch_cuda"], [8]) in rules and (["tensorrt"], [4]) in rules
    # a forbidden pair is refused by the space before anything is built
    reason = space.violation({"engine": "torch_cuda", "bit_width": 8})
    assert reason is not None and "torch_cuda" in reason


def test_a_gpu_engine_on_a_cpu_box_is_invalid_with_its_reason_never_built(
    monkeypatch: pytest.MonkeyPatch, task: Task, tmp_path
) -> None:
    _machine(monkeypatch, **CPU_BOX)
    evaluator = TaskEvaluator(task, cache_dir=tmp_path, timing=FAST)
    with pytest.raises(InvalidConfigError, match=r"engine='tensorrt' .*tensorrt not importable"):
        evaluator({"engine": "tensorrt", "bit_width": 16})
    with pytest.raises(InvalidConfigError, match=r"torch.cuda.is_available\(\) is False"):
        evaluator({"engine": "torch_cuda"})
    assert evaluator.builds == 0
