"""OpenVINO smoke comparison: ONNX Runtime fp32 (and int8) vs OpenVINO fp32/int8/int4(/bf16).

    .venv/bin/python benchmarks/openvino_smoke.py            # digits b32, MiniLM b1 and b16
    .venv/bin/python benchmarks/openvino_smoke.py --rounds 3

One process, 1 thread. For each model and batch every engine is built first, then timed
round-robin: each round times every candidate once with the project's harness
(`time_callable`: warm-up, windows until stable), so a slowdown of the machine hits all of them
alike. The table gives the median of the rounds' p50 and the rounds' max/min spread. Fidelity is
the task's metric against the fp32 torch model over the whole validation set (cosine for
MiniLM, top-1 agreement for digits), never timed. Not a test: numbers go in the issue note.
"""

from __future__ import annotations

import argparse
import logging
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paretotune.evaluators import TimingPolicy  # noqa: E402
from paretotune.evaluators import openvino_engine as ove  # noqa: E402
from paretotune.evaluators.config import resolve_config  # noqa: E402
from paretotune.evaluators.onnxruntime_engine import (  # noqa: E402
    OrtRunner,
    build_onnxruntime,
    export_onnx,
)
from paretotune.evaluators.task import Task, mean_cosine, top1_agreement  # noqa: E402
from paretotune.evaluators.timing import time_callable  # noqa: E402
from paretotune.evaluators.torch_engine import to_tensors  # noqa: E402

POLICY = TimingPolicy(
    warmup_iters=3, min_window_iters=5, min_window_ms=150, stable_windows=3, max_windows=6
)
THREADS = 1


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor()
    name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if "Model name" in ln), "?")
    flags = next((ln for ln in out.splitlines() if ln.startswith("Flags")), "")
    isa = sorted(
        f for f in flags.split() if f.startswith("amx") or f in ("avx512_bf16", "avx512_vnni")
    )
    return f"{name}; ISA: {', '.join(isa) or 'no amx / avx512_bf16 / avx512_vnni'}"


def _candidates(task: Task, fp32: bytes) -> list[tuple[str, Any, str | None]]:
    """(label, runner, why it is left out) for every engine and precision."""
    layers = list(task.layers)
    out: list[tuple[str, Any, str | None]] = [("onnxruntime fp32", OrtRunner(fp32, THREADS), None)]
    spec = resolve_config({"engine": "onnxruntime", "bit_width": 8, "per_channel": True}, task.layers)
    int8, _ = build_onnxruntime(fp32, spec, task, layers)
    out.append(("onnxruntime int8 dynamic per-channel", OrtRunner(int8, THREADS), None))
    for label, bits, options in (
        ("openvino fp32", 32, {}),
        ("openvino bf16", 16, {}),
        ("openvino int8 NNCF", 8, {}),
        ("openvino int4 weight-only (sym)", 4, {}),
    ):
        reason = ove.availability(bits)
        if reason is not None:
            out.append((label, None, reason))
            continue
        artifact = ove.build_openvino(fp32, bits, options, task, layers)
        out.append((label, ove.OpenVINORunner(artifact, THREADS, bits, options), None))
    return out


def _fidelity(task: Task, runner: Any, reference: np.ndarray) -> float:
    outs = np.concatenate([runner.run(inputs) for inputs, _ in task.validation])
    if task.fidelity == "cosine":
        return mean_cosine(outs, reference)
    return top1_agreement(outs, reference)


def _round_robin(calls: list[Callable[[], object]], batch: int, rounds: int) -> list[list[float]]:
    p50s: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for i, call in enumerate(calls):
            p50s[i].append(time_callable(call, batch, POLICY).p50_ms)
    return p50s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="round-robin rounds (default 5)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch

    from examples.digits import task as digits
    from examples.minilm import task as minilm

    print(f"CPU: {_cpu()}")
    print(f"versions: {ove.versions()}, OpenVINO CPU capabilities: {ove.cpu_capabilities()}")
    print(f"threads {THREADS}, {args.rounds} rounds, policy {POLICY.to_dict()}\n")
    print("| model | batch | engine | p50 ms (median of rounds) | spread | vs ORT fp32 | fidelity |")
    print("|---|---|---|---|---|---|---|")
    for task, batches in ((digits, (32,)), (minilm, (1, 16))):
        fp32 = export_onnx(task.fresh_module(), task)
        with torch.no_grad():
            reference = np.concatenate(
                [
                    task.reference_module()(*to_tensors(x, task.input_names)).numpy()
                    for x, _ in task.validation
                ]
            )
        candidates = _candidates(task, fp32)
        live = [(label, runner) for label, runner, reason in candidates if reason is None]
        fidelity = {label: _fidelity(task, runner, reference) for label, runner in live}
        for batch in batches:
            inputs = task.timing_batch(batch)
            p50s = _round_robin([runner.prepare(inputs) for _, runner in live], batch, args.rounds)
            base = float(np.median(p50s[0]))
            for (label, _), rows in zip(live, p50s, strict=True):
                p50 = float(np.median(rows))
                print(
                    f"| {task.name} | {batch} | {label} | {p50:.3f} | "
                    f"{max(rows) / min(rows):.2f} | {base / p50:.2f}x | {fidelity[label]:.4f} |"
                )
            for label, _, reason in candidates:
                if reason is not None:
                    print(f"| {task.name} | {batch} | {label} | n/a | | | {reason} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
