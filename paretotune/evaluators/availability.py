"""Which engines can run here, and why the others cannot.

`SearchSpace.standard(task)` offers only engines that can run where the workers are, and logs
the reason for each one it leaves out ("tensorrt not importable", "no CUDA device: ..."), so a
study on a CPU box never fails a trial for a missing GPU. The probes are small module-level
functions so tests can swap them (monkeypatch) without a GPU or the GPU packages.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os

logger = logging.getLogger(__name__)

CPU_ENGINES = ("torch", "onnxruntime")
#: torch_cuda: PyTorch on CUDA; onnxruntime_cuda / onnxruntime_tensorrt: ONNX Runtime's
#: CUDA and TensorRT execution providers (onnxruntime-gpu); tensorrt: TensorRT's builder API
GPU_ENGINES = ("torch_cuda", "onnxruntime_cuda", "onnxruntime_tensorrt", "tensorrt")
ENGINES = CPU_ENGINES + GPU_ENGINES


def importable(name: str) -> bool:
    """True when `name` can be imported (found on the path; not imported here)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@functools.lru_cache(maxsize=1)
def torch_cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def cuda_device_count() -> int:
    """CUDA devices this process may use: NVML's count, limited by ``CUDA_VISIBLE_DEVICES``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return 0
    try:
        import pynvml
    except ImportError:
        return 0
    try:
        pynvml.nvmlInit()
        count = int(pynvml.nvmlDeviceGetCount())
    except Exception as exc:  # noqa: BLE001 - NVMLError and driver-library load errors
        logger.debug("NVML unavailable (%s): no CUDA device", exc)
        return 0
    if visible is not None:
        count = min(count, len([v for v in visible.split(",") if v.strip()]))
    return count


@functools.lru_cache(maxsize=1)
def _ort_providers() -> tuple[str, ...]:
    import onnxruntime

    return tuple(onnxruntime.get_available_providers())


def ort_providers() -> list[str]:
    """ONNX Runtime's execution providers in this install (asked once per process)."""
    return list(_ort_providers())


def _no_device() -> str | None:
    if cuda_device_count() == 0:
        return "no CUDA device (NVML finds none, or CUDA_VISIBLE_DEVICES hides them)"
    return None


def engine_problems(*, has_module: bool, is_onnx: bool) -> dict[str, str]:
    """engine -> why it cannot run a task here, for every engine that cannot.

    has_module: the task has a PyTorch model factory; is_onnx: the task is an .onnx file.
    """
    problems: dict[str, str] = {}
    torch_ok = importable("torch")
    ort_ok = importable("onnxruntime")
    # -- CPU ---------------------------------------------------------------------------------
    if not has_module:
        problems["torch"] = "the task is an .onnx file, and engine 'torch' needs a PyTorch model"
    elif not torch_ok:
        problems["torch"] = "torch not importable"
    if not ort_ok:
        problems["onnxruntime"] = "onnxruntime not importable (install paretotune[cpu])"
    elif not is_onnx and not importable("onnx"):
        problems["onnxruntime"] = "onnx not importable (needed to export the PyTorch model)"
    # -- PyTorch on CUDA ---------------------------------------------------------------------
    if not has_module:
        problems["torch_cuda"] = (
            "the task is an .onnx file, and engine 'torch_cuda' needs a PyTorch model"
        )
    elif not torch_ok:
        problems["torch_cuda"] = "torch not importable"
    elif not torch_cuda_available():
        problems["torch_cuda"] = "no CUDA device: torch.cuda.is_available() is False"
    # -- ONNX Runtime's GPU providers --------------------------------------------------------
    for engine, provider in (
        ("onnxruntime_cuda", "CUDAExecutionProvider"),
        ("onnxruntime_tensorrt", "TensorrtExecutionProvider"),
    ):
        if "onnxruntime" in problems:
            problems[engine] = problems["onnxruntime"]
        elif provider not in ort_providers():
            problems[engine] = (
                f"onnxruntime has no {provider} (the CPU onnxruntime package is installed; "
                "uninstall it and install paretotune[gpu] for onnxruntime-gpu)"
            )
        elif engine == "onnxruntime_tensorrt" and not importable("tensorrt"):
            problems[engine] = "tensorrt not importable (the TensorRT provider needs its libraries)"
        else:
            reason = _no_device()
            if reason:
                problems[engine] = reason
    # -- TensorRT's builder API --------------------------------------------------------------
    if not importable("tensorrt"):
        problems["tensorrt"] = "tensorrt not importable"
    elif not importable("pycuda"):
        problems["tensorrt"] = "pycuda not importable (TensorRT I/O uses pycuda buffers)"
    elif not is_onnx and not importable("onnx"):
        problems["tensorrt"] = "onnx not importable (needed to export the PyTorch model)"
    else:
        reason = _no_device()
        if reason:
            problems["tensorrt"] = reason
    return problems


def available_engines(*, has_module: bool, is_onnx: bool) -> list[str]:
    """The engines that can run such a task here, CPU engines first."""
    problems = engine_problems(has_module=has_module, is_onnx=is_onnx)
    return [engine for engine in ENGINES if engine not in problems]


GPU_PACKAGES = ("tensorrt", "onnxruntime-gpu", "pycuda", "torch")


def gpu_build_identity() -> dict[str, object]:
    """What a GPU build depends on besides the config: the GPU model (NVML's name of device 0
    of this process: the first CUDA_VISIBLE_DEVICES entry, an index, UUID prefix or MIG id) and
    the GPU packages' versions. Part of GPU engines' build keys."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for package in GPU_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    from paretotune.workers.devices import device_name, visible_device_ids

    visible = visible_device_ids() or ["0"]  # the engines open the first visible device
    name = device_name(visible[0])
    return {"gpu_name": name, "versions": versions}
