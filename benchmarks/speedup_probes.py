"""Probes of the paired speedup's error on this machine (docs/benchmarks.md, "Why it moves").

    PYTHONPATH=. .venv/bin/python benchmarks/speedup_probes.py windows     # 14 x 2 arms, ~2 min
    PYTHONPATH=. .venv/bin/python benchmarks/speedup_probes.py alignment   # 14 x 2 arms, ~1 min
    PYTHONPATH=. .venv/bin/python benchmarks/speedup_probes.py repeats     # 10 x 2 configs, ~2 min
    PYTHONPATH=. .venv/bin/python benchmarks/speedup_probes.py policies    # 10 fresh processes x 4 arms, ~6 min

Each probe measures the digits CNN's ONNX Runtime config(s) through `TaskEvaluator` in this
process, 1 thread, and prints per arm the paired speedup's coefficient of variation and spread
(max/min - 1) over the measurements:

- windows: the default TimingPolicy against windows 4x longer (min_window_ms=400), interleaved;
- alignment: the task's fresh timing inputs against copies aligned to 64 bytes, interleaved;
- repeats: every measurement runs `repeats` (default 4) paired timings back to back and reports
  the speedup of their median run (the lower of an even count), for int8 dynamic and fp32;
- policies: the question of the repeatability target itself, across fresh processes. Each of
  `--n` (default 10) rounds starts one fresh process per timing policy (round-robin: the
  default; windows 3x longer; pair blocks of 2 ms instead of 10; 6 reported windows instead
  of 3), and each process measures the five configs of `benchmarks/repeatability.py` once, in
  an order rotated by the round. Per policy and config: the paired speedup's CV over all
  processes and its spread (max/min - 1) over each run of 5 consecutive rounds (the
  repeatability benchmark's unit), and the seconds a process spent measuring.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

INT8_DYNAMIC = {"engine": "onnxruntime", "bit_width": 8, "per_channel": True, "batch_size": 1, "threads": 1}
FP32 = {"engine": "onnxruntime", "batch_size": 1, "threads": 1}


def _line(label: str, values: list[float]) -> str:
    cv = statistics.pstdev(values) / statistics.mean(values)
    return (f"{label}: CV {100 * cv:.1f}%, spread {100 * (max(values) / min(values) - 1):.1f}% over "
            f"{len(values)} measurements; {[round(v, 2) for v in values]}")


def _interleaved(arms: dict[str, Callable[[], float]], n: int) -> dict[str, list[float]]:
    for measure in arms.values():
        measure()  # builds (or loads) and warms up: not counted
    out: dict[str, list[float]] = {label: [] for label in arms}
    for _ in range(n):
        for label, measure in arms.items():
            out[label].append(measure())
    return out


def _aligned(array: np.ndarray, align: int = 64) -> np.ndarray:
    buf = np.empty(array.nbytes + align, dtype=np.uint8)
    offset = (-buf.ctypes.data) % align
    out = buf[offset:offset + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


#: the timing policies the `policies` probe compares (TimingPolicy keyword arguments)
POLICIES: dict[str, dict[str, Any]] = {
    "default": {},
    "windows 3x longer (300 ms)": {"min_window_ms": 300.0},
    "pair blocks of 2 ms": {"pair_block_ms": 2.0},
    "6 reported windows": {"stable_windows": 6, "max_windows": 10},
}


def _policy_worker(cache: str, policy: str, rotate: int) -> None:
    """One fresh process of the `policies` probe: the repeatability configs, once each."""
    import time

    import examples.digits  # noqa: F401 - imported before the clock starts, as the builds were
    from paretotune.evaluators.timing import TimingPolicy

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from repeatability import CONFIGS, measure

    started = time.perf_counter()
    rows = measure(cache, rotate, [label for label, _ in CONFIGS], TimingPolicy(**POLICIES[policy]))
    speedups = {row["configuration"]: float(row["speedup"]) for row in rows}
    print(json.dumps({"speedups": speedups, "seconds": time.perf_counter() - started}))


def _policies(n: int) -> None:
    import subprocess

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from repeatability import CONFIGS

    rows: dict[str, list[dict[str, Any]]] = {policy: [] for policy in POLICIES}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as cache:
        worker = [sys.executable, __file__, "policies", "--worker", cache]
        subprocess.run([*worker, "default", "0"], check=True, env=env, capture_output=True)  # builds
        for r in range(n):
            for policy in POLICIES:
                done = subprocess.run([*worker, policy, str(r)], env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"the {policy!r} process of round {r + 1} failed "
                                     f"(exit {done.returncode}):\n{done.stderr[-2000:]}")
                rows[policy].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  round {r + 1}/{n} done (load {os.getloadavg()[0]:.2f})", flush=True)
    groups = [(i, i + 5) for i in range(0, n - 4, 5)]
    print(f"\n| timing policy | s per process | {' | '.join(label for label, _ in CONFIGS)} |")
    print("|---|---:|" + "---:|" * len(CONFIGS))
    for policy, runs in rows.items():
        cells = []
        for label, _ in CONFIGS:
            values = [run["speedups"][label] for run in runs]
            spreads = "/".join(f"{100 * (max(values[a:b]) / min(values[a:b]) - 1):.1f}%" for a, b in groups)
            cells.append(f"CV {100 * statistics.pstdev(values) / statistics.mean(values):.1f}%, spread {spreads}")
        print(f"| {policy} | {statistics.mean(run['seconds'] for run in runs):.1f} | {' | '.join(cells)} |")
    print("\n(spread: max/min - 1 over each run of 5 consecutive rounds; target <= 5%)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("probe", choices=["windows", "alignment", "repeats", "policies"])
    parser.add_argument("--worker", nargs=3, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=None, help="measurements per arm (default 14; repeats 10)")
    parser.add_argument("--repeats", type=int, default=4, help="paired timings per measurement (repeats probe)")
    args = parser.parse_args(argv)
    if args.worker:
        _policy_worker(args.worker[0], args.worker[1], int(args.worker[2]))
        return 0
    if args.probe == "policies":
        from paretotune.evaluators import hardware_fingerprint

        hw = hardware_fingerprint(1)
        print(f"policies probe; {hw['cpu_model']}, {hw['logical_cores']} cores; load before {os.getloadavg()[0]:.2f}")
        _policies(args.n or 10)
        print(f"load after {os.getloadavg()[0]:.2f}")
        return 0
    from examples.digits import task
    from paretotune.evaluators import TaskEvaluator, hardware_fingerprint
    from paretotune.evaluators import evaluator as evaluator_module
    from paretotune.evaluators.timing import TimingPolicy

    n = args.n or (10 if args.probe == "repeats" else 14)
    hw = hardware_fingerprint(1)
    print(f"{args.probe} probe; {hw['cpu_model']}, {hw['logical_cores']} cores; load before {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as cache:
        def speedup(evaluator: Any, config: dict[str, Any]) -> Callable[[], float]:
            return lambda: float(evaluator(config).metrics["speedup"])

        plain = TaskEvaluator(task, cache_dir=cache, memory_slots=4)
        if args.probe == "windows":
            longer = TaskEvaluator(task, cache_dir=cache, memory_slots=4, timing=TimingPolicy(min_window_ms=400.0))
            results = _interleaved({"default windows": speedup(plain, INT8_DYNAMIC),
                                    "windows of 400 ms": speedup(longer, INT8_DYNAMIC)}, n)
        elif args.probe == "alignment":
            fresh = task.timing_batch

            def with_inputs(batch: Callable[[int], dict[str, np.ndarray]]) -> Callable[[], float]:
                def measure() -> float:
                    task.timing_batch = batch  # type: ignore[method-assign]
                    return speedup(plain, INT8_DYNAMIC)()
                return measure

            results = _interleaved({
                "fresh inputs": with_inputs(fresh),
                "64-byte-aligned inputs": with_inputs(lambda bs: {k: _aligned(v) for k, v in fresh(bs).items()}),
            }, n)
        else:
            once = evaluator_module.time_paired

            def repeated(*a: Any, **k: Any) -> Any:  # the median run of `repeats` back-to-back timings
                runs = sorted((once(*a, **k) for _ in range(args.repeats)), key=lambda r: r.speedup)
                return runs[(len(runs) - 1) // 2]

            evaluator_module.time_paired = repeated  # type: ignore[assignment]
            results = {}
            for label, config in (("int8 dynamic", INT8_DYNAMIC), ("fp32", FP32)):
                results.update(_interleaved({f"{label}, median of {args.repeats} back to back": speedup(plain, config)}, n))
    for label, values in results.items():
        print(_line(label, values))
    print(f"load after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
