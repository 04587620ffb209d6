"""Engine benchmark: every registered engine and precision that runs here, round-robin in one
process, on MiniLM (batch 1 and 16) and the digits CNN (batch 32), 1 thread.

    .venv/bin/python benchmarks/engines.py              # 5 rounds
    .venv/bin/python benchmarks/engines.py --rounds 3 --json rows.json

The configurations come from the engine registry: each engine at each bit width it can build
here, plus the ONNX Runtime variants a user would pick by hand (per-channel, static QDQ,
transformer fusion). Every configuration is built first (`TaskEvaluator.build_artifact`, whose
accuracy is the task metric over the whole validation set: cosine fidelity to the fp32 model
for MiniLM, top-1 accuracy against the labels for digits), then timed round-robin: each round
times every candidate once with the project's harness (`time_callable`: warm-up, windows until
stable), so a slowdown of the machine hits all of them alike. The table gives the median of
the rounds' p50, the rounds' max/min spread, throughput at that p50, and the ratio to ONNX
Runtime fp32. Timed MiniLM batches are cut to their longest sentence (Task.padding_mask).
Not a test: numbers go in the issue note and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paretotune.evaluators import TaskEvaluator, TimingPolicy, engines  # noqa: E402
from paretotune.evaluators.task import Task  # noqa: E402
from paretotune.evaluators.timing import time_callable  # noqa: E402

POLICY = TimingPolicy(
    warmup_iters=3, min_window_iters=5, min_window_ms=150, stable_windows=3, max_windows=6
)
THREADS = 1
PRECISION = {32: "fp32", 16: "16-bit", 8: "int8", 4: "int4"}
#: hand-picked variants beside each engine's defaults (label, config)
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("onnxruntime int8 dynamic per-channel", {"engine": "onnxruntime", "bit_width": 8, "per_channel": True}),
    ("onnxruntime int8 static QDQ per-channel",
     {"engine": "onnxruntime", "bit_width": 8, "quant_mode": "static", "per_channel": True}),
    ("onnxruntime fp32 + transformer fusion", {"engine": "onnxruntime", "transformer_fusion": True}),
    ("onnxruntime int8 dynamic per-channel + fusion",
     {"engine": "onnxruntime", "bit_width": 8, "per_channel": True, "transformer_fusion": True}),
    ("openvino int8 NNCF, THROUGHPUT hint", {"engine": "openvino", "bit_width": 8, "performance_hint": "THROUGHPUT"}),
]


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor()
    name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if "Model name" in ln), "?")
    flags = next((ln for ln in out.splitlines() if ln.startswith("Flags")), "")
    isa = sorted(f for f in flags.split() if f.startswith("amx") or f in ("avx512_bf16", "avx512_vnni"))
    return f"{name}; ISA: {', '.join(isa) or 'no amx / avx512_bf16 / avx512_vnni'}"


def configurations(task: Task) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, str]]]:
    """(label, config) for every engine here at every bit width, the variants; and (label,
    reason) for what cannot run here."""
    out, skipped = [], []
    problems = task.unavailable_engines()
    for engine in engines.registered():
        for bits in sorted(engine.capabilities.bit_widths, reverse=True):
            label = f"{engine.name} {PRECISION[bits]}"
            reason = problems.get(engine.name) or engine.bit_width_problem(bits)
            if reason is not None:
                if not engine.on_gpu:
                    skipped.append((label, reason))
                continue
            out.append((label, {"engine": engine.name, "bit_width": bits}))
    for label, config in VARIANTS:
        name = config["engine"]
        if name not in problems and not (config.get("transformer_fusion") and task.name != "minilm"):
            out.append((label, config))
    return out, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="round-robin rounds (default 5)")
    parser.add_argument("--cache-dir", default=None, help="artifact cache (default: a fresh temporary one)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from examples.digits import task as digits
    from examples.minilm import task as minilm

    print(f"CPU: {_cpu()}; load average {os.getloadavg()[0]:.2f}")
    print(f"threads {THREADS}, {args.rounds} rounds, policy {POLICY.to_dict()}\n")
    print("| model | batch | configuration | p50 ms | spread | samples/s | vs ORT fp32 | accuracy/fidelity |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for task, batches in ((digits, (32,)), (minilm, (1, 16))):
            configs, skipped = configurations(task)
            evaluator = TaskEvaluator(task, cache_dir=args.cache_dir or tmp, memory_slots=len(configs))
            live = []
            for label, config in configs:
                built = evaluator.build_artifact({**config, "threads": THREADS})
                runner = engines.get(built.engine).runner(built.data, built.spec, task, THREADS)
                live.append((label, built, runner))
                print(f"  built {task.name} {label}: {built.accuracy:.4f}", file=sys.stderr)
            for batch in batches:
                inputs = task.timing_batch(batch)
                calls = [runner.prepare(inputs) for _, _, runner in live]
                p50s: list[list[float]] = [[] for _ in calls]
                for _ in range(args.rounds):
                    for i, call in enumerate(calls):
                        p50s[i].append(time_callable(call, batch, POLICY).p50_ms)
                base = next(float(np.median(r)) for (label, _, _), r in zip(live, p50s, strict=True)
                            if label == "onnxruntime fp32")
                for (label, built, _), times in zip(live, p50s, strict=True):
                    p50 = float(np.median(times))
                    row = {"model": task.name, "batch": batch, "configuration": label, "p50_ms": p50,
                           "spread": max(times) / min(times), "throughput": batch * 1000 / p50,
                           "vs_ort_fp32": base / p50, "accuracy": built.accuracy}
                    rows.append(row)
                    print(f"| {task.name} | {batch} | {label} | {p50:.3f} | {row['spread']:.2f} | "
                          f"{row['throughput']:.0f} | {row['vs_ort_fp32']:.2f}x | {built.accuracy:.4f} |")
                for label, reason in skipped:
                    print(f"| {task.name} | {batch} | {label} | n/a | | | | {reason} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
