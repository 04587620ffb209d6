"""Measurement repeatability: five digits configurations, each measured in five fresh processes.

    .venv/bin/python benchmarks/repeatability.py               # 5 configs x 5 fresh processes
    .venv/bin/python benchmarks/repeatability.py --quick       # 5 configs x 2 processes

Every repeat is a fresh interpreter (BENCHMARKING.md rule 8) that measures all five
configurations through `TaskEvaluator` with the project's default `TimingPolicy` (what a study
records), in an order rotated by one per repeat so no configuration always runs first. Builds
come from a shared artifact cache filled beforehand, so only timing is repeated. Per config:
the p50 latency's and the throughput's spread over repeats (max/min - 1, and the coefficient of
variation), and how often the stability check had to extend past its first windows or gave up
(stable=False). Target: p50 spread <= 5%.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ORT = {"engine": "onnxruntime"}
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("torch fp32, batch 1", {"engine": "torch", "batch_size": 1}),
    ("onnxruntime fp32, batch 1", {**ORT, "batch_size": 1}),
    ("onnxruntime int8 dynamic per-channel, batch 1", {**ORT, "bit_width": 8, "per_channel": True, "batch_size": 1}),
    (
        "onnxruntime int8 static per-channel, pruned 0.3, batch 8",
        {**ORT, "bit_width": 8, "quant_mode": "static", "per_channel": True, "prune_ratio": 0.3, "batch_size": 8},
    ),
    ("torch fp32, pruned 0.5, batch 32", {"engine": "torch", "prune_ratio": 0.5, "batch_size": 32}),
]
TARGET = 0.05


def measure(cache_dir: str, rotate: int, labels: list[str]) -> list[dict[str, Any]]:
    """One repeat, in this process."""
    from examples.digits import task
    from paretotune.evaluators import TaskEvaluator

    evaluator = TaskEvaluator(task, cache_dir=cache_dir, memory_slots=len(CONFIGS))
    chosen = [c for c in CONFIGS if c[0] in labels]
    order = chosen[rotate % len(chosen):] + chosen[: rotate % len(chosen)]
    rows = []
    for label, config in order:
        m = evaluator({**config, "threads": 1})
        rows.append(
            {
                "configuration": label,
                "p50_ms": m.metrics["latency_p50_ms"],
                "throughput": m.metrics["throughput"],
                "stable": m.details["stable"],
                "extended": m.details["extended"],
                "windows": m.details["windows"],
                "spread": m.details["spread"],
                "cache_hit": m.details["cache_hit"],
                "load1": os.getloadavg()[0],
            }
        )
    return rows


def _fresh(cache_dir: str, rotate: int, labels: list[str]) -> list[dict[str, Any]]:
    command = [sys.executable, __file__, "--worker", "--cache-dir", cache_dir, "--rotate", str(rotate)]
    done = subprocess.run(
        [*command, "--labels", *labels], capture_output=True, text=True, check=False, cwd=ROOT
    )
    if done.returncode != 0:
        raise SystemExit(f"a repeat failed with code {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def spread(values: list[float]) -> float:
    return max(values) / min(values) - 1.0


def cv(values: list[float]) -> float:
    return statistics.pstdev(values) / statistics.mean(values) if len(values) > 1 else 0.0


def summarize(repeats: list[list[dict[str, Any]]], labels: list[str]) -> list[dict[str, Any]]:
    cells: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    for rows in repeats:
        for row in rows:
            cells[row["configuration"]].append(row)
    out = []
    for label in labels:
        runs = cells[label]
        p50 = [r["p50_ms"] for r in runs]
        tput = [r["throughput"] for r in runs]
        out.append(
            {
                "configuration": label,
                "repeats": len(runs),
                "p50_median_ms": statistics.median(p50),
                "p50_spread": spread(p50),
                "p50_cv": cv(p50),
                "throughput_median": statistics.median(tput),
                "throughput_spread": spread(tput),
                "throughput_cv": cv(tput),
                "extended": sum(r["extended"] for r in runs),
                "gave_up": sum(not r["stable"] for r in runs),
                "meets_target": spread(p50) <= TARGET,
            }
        )
    return out


def markdown(summary: list[dict[str, Any]]) -> str:
    lines = [
        "| configuration | repeats | p50 ms (median) | p50 spread (max/min-1) | p50 CV | "
        "throughput /s (median) | throughput spread | extended | gave up | p50 spread <= 5% |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['configuration']} | {s['repeats']} | {s['p50_median_ms']:.4f} | "
            f"{100 * s['p50_spread']:.1f}% | {100 * s['p50_cv']:.1f}% | "
            f"{s['throughput_median']:,.0f} | {100 * s['throughput_spread']:.1f}% | "
            f"{s['extended']}/{s['repeats']} | {s['gave_up']}/{s['repeats']} | "
            f"{'yes' if s['meets_target'] else 'no'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats (make bench)")
    parser.add_argument("--repeats", type=int, default=None, help="fresh processes (default 5)")
    parser.add_argument("--configs", type=int, default=len(CONFIGS), help="first N configs (default 5)")
    parser.add_argument("--cache-dir", default=None, help="artifact cache (default: temporary)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rotate", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--labels", nargs="+", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    labels = args.labels or [label for label, _ in CONFIGS[: args.configs]]
    if args.worker:
        print(json.dumps(measure(args.cache_dir, args.rotate, labels)))
        return 0
    repeats_n = args.repeats or (2 if args.quick else 5)
    from paretotune.evaluators import hardware_fingerprint

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or tmp
        _fresh(cache_dir, 0, labels)  # fills the artifact cache: builds are not what we repeat
        repeats = []
        for i in range(repeats_n):
            repeats.append(_fresh(cache_dir, i, labels))
            print(f"  repeat {i + 1}/{repeats_n} done", file=sys.stderr)
    summary = summarize(repeats, labels)
    hw = hardware_fingerprint(1)
    loads = [r["load1"] for rows in repeats for r in rows]
    print(
        f"digits CNN, 1 thread, default TimingPolicy, {repeats_n} fresh processes; {hw['cpu_model']}, "
        f"{hw['logical_cores']} cores; load average before {load_before[0]:.2f}, during "
        f"{min(loads):.2f}-{max(loads):.2f}\n"
    )
    print(markdown(summary))
    met = sum(s["meets_target"] for s in summary)
    print(f"\n{met}/{len(summary)} configurations within the 5% p50 target")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"hardware": hw, "load_before": load_before, "repeats": repeats, "summary": summary}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
