"""PyTorch on CUDA: MiniLM and the digits CNN at fp32, fp16 and bf16, CUDA graphs off and on,
batch 1 to 256 (the verification study of the GPU engines).

    .venv/bin/python benchmarks/gpu_torch.py                    # both tasks, batch 1..256
    .venv/bin/python benchmarks/gpu_torch.py --tasks digits --batches 1 32 --quick

Prints markdown tables: end-to-end p50 (copies included) and compute-only p50 (CUDA events),
speedup over CUDA fp32 eager at the same batch size, throughput, and the task metric (digits:
top-1 accuracy; MiniLM: mean cosine similarity to the fp32 model's embeddings) with its drop
from fp32. Timings follow BENCHMARKING.md (warm-up, windows until stable, p50 of the last
three windows). Needs a CUDA device: on a machine without one it exits with a message.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("fp32 eager", {}),
    ("fp32 + CUDA graphs", {"cuda_graphs": True}),
    ("fp16", {"bit_width": 16, "half": "fp16"}),
    ("fp16 + CUDA graphs", {"bit_width": 16, "half": "fp16", "cuda_graphs": True}),
    ("bf16", {"bit_width": 16, "half": "bf16"}),
    ("bf16 + CUDA graphs", {"bit_width": 16, "half": "bf16", "cuda_graphs": True}),
]
BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256]


def _require_cuda() -> str:
    try:
        import torch
    except ImportError:
        sys.exit("gpu_torch.py needs torch with CUDA; torch is not importable here")
    if not torch.cuda.is_available():
        sys.exit(
            f"gpu_torch.py needs a CUDA device: torch.cuda.is_available() is False "
            f"(torch {torch.__version__}); run it on a machine with an NVIDIA GPU"
        )
    return str(torch.cuda.get_device_name())


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    """A table cell: the formatted number, or '-' when there is none (no fp32 reference)."""
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _task(name: str) -> Any:
    if name == "digits":
        from examples.digits import task
    else:
        from examples.minilm import task
    return task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["minilm", "digits"],
                        choices=["minilm", "digits"])
    parser.add_argument("--batches", nargs="+", type=int, default=BATCHES)
    parser.add_argument("--quick", action="store_true", help="shorter timing windows")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--fail-on-error", action="store_true",
                        help="exit 1 when any variant fails (scripts/verify-gpu.sh)")
    args = parser.parse_args(argv)
    gpu = _require_cuda()
    logging.basicConfig(level=logging.WARNING)

    import torch

    from paretotune.evaluators import TaskEvaluator, TimingPolicy
    from paretotune.evaluators.torch_cuda_engine import bf16_native

    timing = (
        TimingPolicy(warmup_iters=5, min_window_iters=10, min_window_ms=50.0)
        if args.quick
        else TimingPolicy(warmup_iters=20, min_window_iters=50, min_window_ms=200.0)
    )
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="gpu-torch-bench-")
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    print(f"GPU: {gpu}; torch {torch.__version__}; CUDA {torch.version.cuda}\n")
    for task_name in args.tasks:
        evaluator = TaskEvaluator(_task(task_name), cache_dir=cache_dir, timing=timing)
        print(f"## {task_name}\n")
        print("| variant | batch | e2e p50 ms | compute p50 ms | speedup vs fp32 eager | "
              "throughput /s | metric | drop vs fp32 | stable |")
        print("|---|---|---|---|---|---|---|---|---|")
        for batch in args.batches:
            reference: dict[str, float] = {}
            for label, config in VARIANTS:
                if config.get("half") == "bf16" and not bf16_native():
                    print(f"| {label} | {batch} | - | - | - | - | - | - | no native bf16 on {gpu} |")
                    continue
                try:
                    m = evaluator({"engine": "torch_cuda", "batch_size": batch, **config})
                except Exception as exc:  # noqa: BLE001 - a variant failing is a row, not the end
                    print(f"| {label} | {batch} | failed: {str(exc)[:80]} |")
                    failures.append({"task": task_name, "variant": label, "batch": batch,
                                     "error": f"{type(exc).__name__}: {exc}"[:500]})
                    continue
                p50 = m.metrics["latency_p50_ms"]
                if not config:
                    reference = {"p50": p50, "metric": m.metrics["accuracy"]}
                row = {
                    "task": task_name,
                    "variant": label,
                    "batch": batch,
                    "e2e_p50_ms": p50,
                    "compute_p50_ms": m.details["compute_latency_p50_ms"],
                    "speedup": reference["p50"] / p50 if reference else None,
                    "throughput": m.metrics["throughput"],
                    "metric": m.metrics["accuracy"],
                    "drop": reference["metric"] - m.metrics["accuracy"] if reference else None,
                    "stable": m.details["stable"],
                    "spread": m.details["spread"],
                }
                rows.append(row)
                print(
                    f"| {label} | {batch} | {_fmt(row['e2e_p50_ms'], '.3f')} "
                    f"| {_fmt(row['compute_p50_ms'], '.3f')} | {_fmt(row['speedup'], '.2f', 'x')} "
                    f"| {_fmt(row['throughput'], '.0f')} | {_fmt(row['metric'], '.4f')} "
                    f"| {_fmt(row['drop'], '+.4f')} | {row['stable']} "
                    f"({_fmt(row['spread'], '.2f')}) |"
                )
        print()
    if args.json:
        Path(args.json).write_text(
            json.dumps({"gpu": gpu, "rows": rows, "failures": failures}, indent=2)
        )
    if failures:
        print(f"{len(failures)} variant(s) failed", file=sys.stderr)
    return 1 if failures and args.fail_on_error else 0


if __name__ == "__main__":
    sys.exit(main())
