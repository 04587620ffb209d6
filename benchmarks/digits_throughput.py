"""Digits benchmark: throughput of int8 and pruned engines against ONNX Runtime fp32.

    .venv/bin/python benchmarks/digits_throughput.py               # 3 fresh processes
    .venv/bin/python benchmarks/digits_throughput.py --repeats 5 --batches 1 8 32

The issue's target: >= 2x the throughput of ONNX Runtime fp32 at <= 1% accuracy drop. Each
repeat is a fresh interpreter (BENCHMARKING.md rule 8) that measures every configuration at
every batch size with one thread, through `TaskEvaluator`, so the numbers are the ones a study
records. Builds are shared between repeats through one artifact cache; accuracy is the untimed
pass over the 497 held-out images. Prints a markdown table: per configuration and batch, the
median over repeats of throughput and p50, the repeats' min-max, and ratios of the medians.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ORT = {"engine": "onnxruntime"}
STATIC = {**ORT, "bit_width": 8, "quant_mode": "static"}
CONFIGS: list[tuple[str, dict]] = [
    ("torch fp32 (eager)", {"engine": "torch"}),
    ("onnxruntime fp32", ORT),
    ("onnxruntime int8 dynamic, per-channel", {**ORT, "bit_width": 8, "per_channel": True}),
    ("onnxruntime int8 static, per-tensor", STATIC),
    ("onnxruntime int8 static, per-channel", {**STATIC, "per_channel": True}),
    ("onnxruntime fp32, pruned 0.3", {**ORT, "prune_ratio": 0.3}),
    (
        "onnxruntime int8 static, per-channel, pruned 0.3",
        {**STATIC, "per_channel": True, "prune_ratio": 0.3},
    ),
    (
        "onnxruntime int8 static, per-channel, pruned 0.5",
        {**STATIC, "per_channel": True, "prune_ratio": 0.5},
    ),
]
REFERENCE = "onnxruntime fp32"


def measure(batches: list[int], cache_dir: str) -> list[dict]:
    """One repeat, in this process: every configuration at every batch size, one thread."""
    from examples.digits import task
    from paretotune.evaluators import TaskEvaluator, TimingPolicy

    timing = TimingPolicy(warmup_iters=20, min_window_iters=30, min_window_ms=250, max_windows=10)
    evaluator = TaskEvaluator(task, cache_dir=cache_dir, timing=timing, memory_slots=len(CONFIGS))
    baseline_accuracy = evaluator.reference_accuracy()
    rows = []
    for batch in batches:
        for label, config in CONFIGS:
            m = evaluator({**config, "batch_size": batch, "threads": 1})
            rows.append(
                {
                    "configuration": label,
                    "batch": batch,
                    "p50_ms": m.metrics["latency_p50_ms"],
                    "throughput": m.metrics["throughput"],
                    "stable": m.details["stable"],
                    "spread": m.details["spread"],
                    "accuracy": m.metrics["accuracy"],
                    "accuracy_drop": baseline_accuracy - m.metrics["accuracy"],
                }
            )
    return rows


def _repeat(batches: list[int], cache_dir: str) -> list[dict]:
    command = [sys.executable, __file__, "--worker", "--cache-dir", cache_dir, "--batches"]
    done = subprocess.run(
        [*command, *map(str, batches)], capture_output=True, text=True, check=False, cwd=ROOT
    )
    if done.returncode != 0:
        raise SystemExit(f"a repeat failed with code {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(repeats: list[list[dict]], batches: list[int]) -> str:
    cells: dict[tuple[str, int], list[dict]] = {}
    for rows in repeats:
        for row in rows:
            cells.setdefault((row["configuration"], row["batch"]), []).append(row)
    lines = [
        "| configuration | batch | accuracy | drop | p50 ms | throughput /s (min-max) | "
        "x ORT fp32 | x torch fp32 | stable |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for batch in batches:
        ref = statistics.median(r["throughput"] for r in cells[(REFERENCE, batch)])
        torch_ref = statistics.median(r["throughput"] for r in cells[(CONFIGS[0][0], batch)])
        for label, _ in CONFIGS:
            runs = cells[(label, batch)]
            tput = [r["throughput"] for r in runs]
            median = statistics.median(tput)
            stable = sum(r["stable"] for r in runs)
            lines.append(
                f"| {label} | {batch} | {runs[0]['accuracy']:.4f} | "
                f"{100 * runs[0]['accuracy_drop']:+.2f}% | "
                f"{statistics.median(r['p50_ms'] for r in runs):.3f} | "
                f"{median:,.0f} ({min(tput):,.0f}-{max(tput):,.0f}) | {median / ref:.2f}x | "
                f"{median / torch_ref:.2f}x | {stable}/{len(runs)} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes (default 3)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--cache-dir", default=None, help="artifact cache (default: temporary)")
    parser.add_argument("--json", default=None, help="also write every repeat's rows here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.worker:
        print(json.dumps(measure(args.batches, args.cache_dir)))
        return 0
    from paretotune.evaluators import hardware_fingerprint

    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or tmp
        repeats = []
        for i in range(args.repeats):
            repeats.append(_repeat(args.batches, cache_dir))
            print(f"  repeat {i + 1}/{args.repeats} done", file=sys.stderr)
    hw = hardware_fingerprint(1)
    flags = ", ".join(k for k, v in hw["isa"].items() if v)
    print(
        f"digits CNN, 1 thread, {args.repeats} fresh processes; {hw['cpu_model']}, "
        f"{hw['logical_cores']} cores ({flags}); torch {hw['versions']['torch']}, "
        f"onnxruntime {hw['versions']['onnxruntime']}; load average {os.getloadavg()[0]:.2f}\n"
    )
    print(table(repeats, args.batches))
    if args.json:
        Path(args.json).write_text(json.dumps({"hardware": hw, "repeats": repeats}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
