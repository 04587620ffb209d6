"""Hardware fingerprint and process memory: what a measurement depends on, recorded with it."""

from __future__ import annotations

import functools
import os
import platform
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

ISA_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
#: what every build depends on; each engine adds its own packages (`Engine.packages`)
BASE_PACKAGES = ("numpy", "torch", "torch-pruning", "paretotune")


def _cpuinfo() -> tuple[str, set[str]]:
    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and value.strip():
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def library_versions(packages: Sequence[str] | None = None) -> dict[str, str | None]:
    """Installed versions of the libraries a build depends on (no heavy import): the base
    packages and `packages` (default: every registered engine's), in a stable order."""
    if packages is None:
        from paretotune.evaluators import engines

        packages = engines.packages()
    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in sorted({*BASE_PACKAGES, *packages}):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@functools.lru_cache(maxsize=1)
def _static_fingerprint() -> dict[str, Any]:
    model, flags = _cpuinfo()
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:  # pragma: no cover - psutil is a dependency
        physical = None
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = None
    return {
        "cpu_model": model,
        "machine": platform.machine(),
        "system": platform.system(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "affinity_cores": affinity,
        "isa": {flag: flag in flags for flag in ISA_FLAGS},
        "versions": library_versions(),
    }


def hardware_fingerprint(threads: int | None = None) -> dict[str, Any]:
    """CPU model, cores, ISA flags (VNNI, BF16, AMX) and library versions; plus threads used."""
    fingerprint = dict(_static_fingerprint())
    fingerprint["isa"] = dict(fingerprint["isa"])
    fingerprint["versions"] = dict(fingerprint["versions"])
    if threads is not None:
        fingerprint["threads"] = threads
    return fingerprint


def cpu_supports_bf16() -> bool:
    isa = _static_fingerprint()["isa"]
    return bool(isa["avx512_bf16"] or isa["amx_bf16"])


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident set size since the last reset (VmHWM), or the lifetime peak elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
