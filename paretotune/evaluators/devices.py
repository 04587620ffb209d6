"""GPU discovery and telemetry through NVML (``pynvml``, from nvidia-ml-py).

Everything here degrades to "no GPU": without the ``pynvml`` module or an NVIDIA driver,
`list_gpus` returns ``[]`` and telemetry comes back as ``{}``, with one debug line and no
warning, so a CPU box or a CI runner stays quiet.

Which GPUs a process may use is ``CUDA_VISIBLE_DEVICES``: indices, ``GPU-`` UUIDs or unique
prefixes of them, and ``MIG-`` ids (a MIG device's UUID, or the older
``MIG-GPU-<uuid>/<gpu instance>/<compute instance>``). NVML numbers devices in PCI bus order,
which is CUDA's order only under ``CUDA_DEVICE_ORDER=PCI_BUS_ID``: `use_pci_device_order` sets
that for this process and the ones it starts (telemetry calls it before each trial, the Ray
backend sets it for its trials), so the index a worker is given, the device CUDA opens and the
device sampled here are the same one. With ``CUDA_VISIBLE_DEVICES`` unset, telemetry samples
device 0, the one every engine opens, not the sum of every GPU on the machine.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: seconds between telemetry samples
SAMPLE_INTERVAL_S = 0.1
#: the metric names telemetry fills in (see the metric vocabulary)
TELEMETRY_METRICS = ("gpu_memory_bytes", "gpu_util", "power_w")

_lock = threading.Lock()
_nvml: Any = None  # the pynvml module once nvmlInit succeeded
_nvml_tried = False


def _init_nvml() -> Any:
    """pynvml, initialised once per process; None without the module or a driver."""
    global _nvml, _nvml_tried
    with _lock:
        if _nvml_tried:
            return _nvml
        _nvml_tried = True
        try:
            import pynvml
        except ImportError:
            log.debug("no pynvml module (nvidia-ml-py): no GPU telemetry")
            return None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            log.debug("NVML unavailable (%s): no GPU telemetry", exc)
            return None
        _nvml = pynvml
        return _nvml


def nvml_available() -> bool:
    """True when an NVIDIA driver answers through NVML."""
    return _init_nvml() is not None


@dataclass(frozen=True)
class GpuInfo:
    """One physical GPU as NVML sees it (``index`` is NVML's, i.e. PCI bus order)."""

    index: int
    name: str
    uuid: str
    memory_total_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _info(nvml: Any, index: int, handle: Any) -> GpuInfo:
    return GpuInfo(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        memory_total_bytes=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
    )


def list_gpus() -> list[GpuInfo]:
    """Every GPU on this machine (ignores ``CUDA_VISIBLE_DEVICES``); ``[]`` without a driver."""
    nvml = _init_nvml()
    if nvml is None:
        return []
    try:
        return [_info(nvml, i, nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(nvml.nvmlDeviceGetCount())]
    except nvml.NVMLError as exc:
        log.debug("NVML device query failed: %s", exc)
        return []


def visible_device_ids(env: dict[str, str] | None = None) -> list[str] | None:
    """The entries of ``CUDA_VISIBLE_DEVICES``; None when it is unset (every GPU is visible)."""
    value = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def use_pci_device_order(env: MutableMapping[str, str] | None = None) -> bool:
    """Set ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` in `env` (default: this process's environment, which
    the processes it starts inherit) unless it is set; True when the order is PCI_BUS_ID now.

    CUDA reads it when it initializes, so a process that already opened CUDA in its default
    (fastest first) order keeps that order: logged once as a warning, since NVML's index then
    names another GPU than CUDA's on a machine with different GPUs.
    """
    target = os.environ if env is None else env
    if "CUDA_DEVICE_ORDER" not in target:
        target["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        if env is None and _cuda_initialized():
            _warn_once("CUDA was initialized before CUDA_DEVICE_ORDER=PCI_BUS_ID was set: its "
                       "device indices may not be NVML's on a machine with different GPUs")
            return False
        return True
    order = target["CUDA_DEVICE_ORDER"]
    if order != "PCI_BUS_ID":
        _warn_once(f"CUDA_DEVICE_ORDER={order!r}: GPU indices in CUDA_VISIBLE_DEVICES are not "
                   "NVML's, so telemetry may sample another GPU than the trial's")
        return False
    return True


def _cuda_initialized() -> bool:
    """True when PyTorch (if imported) has already initialized CUDA in this process."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    try:
        return bool(torch.cuda.is_initialized())
    except Exception:  # noqa: BLE001 - a torch build without CUDA support
        return False


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def _mig_handles(nvml: Any, gpu: Any) -> list[Any]:
    """The MIG devices of a GPU (``[]`` when MIG is off or unsupported)."""
    try:
        count = int(nvml.nvmlDeviceGetMaxMigDeviceCount(gpu))
    except (nvml.NVMLError, AttributeError):
        return []
    found = []
    for i in range(count):
        try:
            found.append(nvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu, i))
        except nvml.NVMLError:
            continue  # an empty MIG slot
    return found


def _handle(nvml: Any, device_id: str) -> tuple[int, Any] | None:
    """An NVML handle for a ``CUDA_VISIBLE_DEVICES`` entry: an index, a ``GPU-`` UUID or a unique
    prefix of one, or a ``MIG-`` id. The index returned is the parent GPU's NVML index."""
    want = device_id.strip()
    try:
        if want.isdigit():
            index = int(want)
            return index, nvml.nvmlDeviceGetHandleByIndex(index)
        gpus = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        if want.upper().startswith("MIG-"):
            return _mig_handle(nvml, gpus, want)
        prefix = want.lower() if want.upper().startswith("GPU-") else "gpu-" + want.lower()
        matches = [(i, h) for i, h in enumerate(gpus)
                   if _text(nvml.nvmlDeviceGetUUID(h)).lower().startswith(prefix)]
    except nvml.NVMLError as exc:
        log.debug("no NVML device for %r: %s", device_id, exc)
        return None
    if len(matches) != 1:  # CUDA refuses an ambiguous prefix too
        log.debug("CUDA_VISIBLE_DEVICES entry %r matches %d GPUs", device_id, len(matches))
        return None
    return matches[0]


def _mig_handle(nvml: Any, gpus: Sequence[Any], want: str) -> tuple[int, Any] | None:
    """A MIG device by its UUID (``MIG-<uuid>``) or as ``MIG-GPU-<uuid>/<gi>/<ci>``."""
    parts = want.split("/")
    legacy = len(parts) == 3 and parts[0].upper().startswith("MIG-GPU-")
    for index, gpu in enumerate(gpus):
        if legacy and not _text(nvml.nvmlDeviceGetUUID(gpu)).lower().startswith(
            parts[0][4:].lower()
        ):
            continue
        for mig in _mig_handles(nvml, gpu):
            try:
                if legacy:
                    if (str(nvml.nvmlDeviceGetGpuInstanceId(mig)) == parts[1]
                            and str(nvml.nvmlDeviceGetComputeInstanceId(mig)) == parts[2]):
                        return index, mig
                elif _text(nvml.nvmlDeviceGetUUID(mig)).lower().startswith(want.lower()):
                    return index, mig
            except nvml.NVMLError:
                continue
    log.debug("no MIG device for CUDA_VISIBLE_DEVICES entry %r", want)
    return None


def device_name(device_id: str) -> str | None:
    """NVML's name of one ``CUDA_VISIBLE_DEVICES`` entry (index, UUID prefix or MIG id); None
    without a driver or a match."""
    nvml = _init_nvml()
    found = None if nvml is None else _handle(nvml, device_id)
    if found is None:
        return None
    try:
        return _text(nvml.nvmlDeviceGetName(found[1]))
    except nvml.NVMLError as exc:
        log.debug("no NVML name for %r: %s", device_id, exc)
        return None


def _handles(device_ids: Sequence[str] | None) -> list[tuple[int, Any]]:
    nvml = _init_nvml()
    if nvml is None:
        return []
    if device_ids is None:
        device_ids = visible_device_ids()
    if device_ids is None:
        device_ids = ["0"]  # every engine opens device 0: sampling every GPU would sum others'
    found = (_handle(nvml, d) for d in device_ids)
    return [h for h in found if h is not None]


def describe_devices(device_ids: Sequence[str]) -> dict[str, Any]:
    """What to record about the GPUs a trial ran on: the ids it was given and, when NVML
    knows them, each one's name and UUID. Without a driver only the logical ids are kept."""
    out: dict[str, Any] = {"gpu_ids": list(device_ids)}
    nvml = _init_nvml()
    if nvml is None or not device_ids:
        return out
    infos = [_info(nvml, index, handle) for index, handle in _handles(device_ids)]
    if infos:
        out["gpu_names"] = [i.name for i in infos]
        out["gpu_uuids"] = [i.uuid for i in infos]
        if len(infos) == 1:
            out["gpu_name"], out["gpu_uuid"] = infos[0].name, infos[0].uuid
    return out


class TelemetrySampler:
    """Samples the given GPUs from a thread while a block runs.

    ``gpu_memory_bytes`` is the peak device memory in use (summed over the GPUs; NVML counts
    every process on the device), ``gpu_util`` the mean utilization in percent and
    ``power_w`` the mean power draw (summed over the GPUs). ``result`` is ``{}`` without a
    driver, without visible GPUs, or when no sample could be taken.
    """

    def __init__(self, device_ids: Sequence[str] | None = None, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0 seconds, got {interval_s!r}")
        self.interval_s = interval_s
        self._device_ids = None if device_ids is None else list(device_ids)
        self._handles: list[Any] = []
        self._mem: list[int] = []
        self._util: list[float] = []
        self._power: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.result: dict[str, float] = {}

    def _sample(self) -> None:
        nvml = _nvml
        if nvml is None:
            return
        mem, util, power = 0, 0.0, 0.0
        n_util = n_power = 0
        for handle in self._handles:
            try:
                mem += int(nvml.nvmlDeviceGetMemoryInfo(handle).used)
            except nvml.NVMLError:
                return
            try:
                util += float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                n_util += 1
            except nvml.NVMLError:
                pass
            try:
                power += nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0  # milliwatts
                n_power += 1
            except nvml.NVMLError:
                pass
        self._mem.append(mem)
        if n_util:
            self._util.append(util / n_util)
        if n_power == len(self._handles):
            self._power.append(power)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> TelemetrySampler:
        if _init_nvml() is not None:  # a GPU box: before the trial opens CUDA, here or in a child
            use_pci_device_order()
        self._handles = [h for _, h in _handles(self._device_ids)]
        if self._handles:
            self._sample()
            self._thread = threading.Thread(target=self._run, name="paretotune-telemetry", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
            self._sample()
        out: dict[str, float] = {}
        if self._mem:
            out["gpu_memory_bytes"] = float(max(self._mem))
        if self._util:
            out["gpu_util"] = sum(self._util) / len(self._util)
        if self._power:
            out["power_w"] = sum(self._power) / len(self._power)
        self.result = out
        return out

    def __enter__(self) -> TelemetrySampler:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@contextmanager
def telemetry(
    device_ids: Sequence[str] | None = None, interval_s: float = SAMPLE_INTERVAL_S
) -> Iterator[dict[str, float]]:
    """``with telemetry() as t: run()`` — afterwards ``t`` holds the telemetry metrics.

    ``device_ids`` defaults to ``CUDA_VISIBLE_DEVICES`` (device 0 when it is unset).
    """
    out: dict[str, float] = {}
    sampler = TelemetrySampler(device_ids, interval_s).start()
    try:
        yield out
    finally:
        out.update(sampler.stop())


def sample_telemetry(
    fn: Callable[[], T], device_ids: Sequence[str] | None = None, interval_s: float = SAMPLE_INTERVAL_S
) -> tuple[T, dict[str, float]]:
    """Run ``fn()`` while sampling the GPUs; returns its result and the telemetry metrics."""
    with telemetry(device_ids, interval_s) as tel:
        result = fn()
    return result, tel


def _reset_for_tests() -> None:
    """Forget the NVML probe (tests swap in a fake pynvml)."""
    global _nvml, _nvml_tried
    with _lock:
        _nvml, _nvml_tried = None, False
