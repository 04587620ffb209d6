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



def __getattr__(name: str) -> tuple[str, ...]:
    """ENGINES, CPU_ENGINES and GPU_ENGINES: the registry's names (CPU engines first)."""
    from paretotune.evaluators import engines

    if name == "ENGINES":
        return tuple(engines.names())
    if name in ("CPU_ENGINES", "GPU_ENGINES"):
        gpu = name == "GPU_ENGINES"
        return tuple(e.name for e in engines.registered() if e.on_gpu is gpu)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def no_device() -> str | None:
    """Why a GPU engine has no device here, or None."""
    if cuda_device_count() == 0:
        return "no CUDA device (NVML finds none, or CUDA_VISIBLE_DEVICES hides them)"
    return None


def engine_problems(*, has_module: bool, is_onnx: bool) -> dict[str, str]:
    """engine -> why it cannot run a task here, for every registered engine that cannot.

    has_module: the task has a PyTorch model factory; is_onnx: the task is an .onnx file.
    """
    from paretotune.evaluators import engines

    problems: dict[str, str] = {}
    for engine in engines.registered():
        reason = engine.problem(has_module=has_module, is_onnx=is_onnx)
        if reason is not None:
            problems[engine.name] = reason
    return problems


def available_engines(*, has_module: bool, is_onnx: bool) -> list[str]:
    """The engines that can run such a task here, in the registry's order (CPU engines first)."""
    from paretotune.evaluators import engines

    problems = engine_problems(has_module=has_module, is_onnx=is_onnx)
    return [name for name in engines.names() if name not in problems]


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
    from paretotune.evaluators.devices import device_name, visible_device_ids

    visible = visible_device_ids() or ["0"]  # the engines open the first visible device
    name = device_name(visible[0])
    return {"gpu_name": name, "versions": versions}
