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

Beside the absolute p50, each measurement gives the paired `speedup` (the unmodified model
timed in the same process, interleaved window by window: BENCHMARKING.md rule 10) and the p50's
bootstrap 95% interval (rule 11). The second table is their repeatability: the spread over
processes of the paired speedup (target: <= 5% for at least 4 of the 5 configs) and the
interval's relative width (hi - lo) / p50, its median and its spread.

The same five configurations are then recorded as trials of a study and confirmed with the
product's `Study.confirm` (each confirmation: the median of `--confirm-processes` fresh
processes, default 3), `--repeats` times: the spread of the confirmed p50 (and of the best p50
of each confirmation, the least disturbed process) is the repeatability of what
`paretotune confirm` reports. `--confirm-processes 0` leaves that part out.

`--drift SECONDS` asks why a paired speedup moves between processes: one fresh process measures
each configuration back to back, with the same runners, for SECONDS, and reports per config the
paired speedup's spread and coefficient of variation over those measurements, their lag-1
autocorrelation, and the spread of medians of k consecutive measurements. A spread as large as
the spread over processes, and medians that do not converge, mean the ratio drifts with the
machine's state over seconds, which neither pairing nor more processes at one moment remove.

    .venv/bin/python benchmarks/repeatability.py --drift 60 --configs 2

`--runs N` repeats the whole single-measurement part N times, one run after another on one
artifact cache, and ends with a table of the runs: how many configs each run brought within 5%
by the absolute p50 and by the paired speedup, side by side from the same measurements. One run
of five processes takes about 45 s; a machine's state changes over minutes, so one run's verdict
is one draw, and the run table is the repeatability of the verdict itself.

    .venv/bin/python benchmarks/repeatability.py --confirm-processes 0 --runs 6
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


def measure(cache_dir: str, rotate: int, labels: list[str], timing: Any = None) -> list[dict[str, Any]]:
    """One repeat, in this process; `timing`: a TimingPolicy (default: the project's)."""
    from examples.digits import task
    from paretotune.evaluators import TaskEvaluator

    evaluator = TaskEvaluator(task, cache_dir=cache_dir, memory_slots=len(CONFIGS), timing=timing)
    chosen = [c for c in CONFIGS if c[0] in labels]
    order = chosen[rotate % len(chosen):] + chosen[: rotate % len(chosen)]
    rows = []
    for label, config in order:
        m = evaluator({**config, "threads": 1})
        lo, hi = m.details["latency_p50_ms_ci"]
        rows.append(
            {
                "speedup": m.metrics["speedup"],
                "speedup_window_spread": m.details["baseline"]["ratio_spread"],
                "p50_ci_width": (hi - lo) / m.metrics["latency_p50_ms"],
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


def measure_drift(cache_dir: str, labels: list[str], seconds: float) -> dict[str, list[list[float]]]:
    """Back-to-back measurements of each config in this process, the same runners throughout,
    for about ``seconds``: per label, [seconds since start, paired speedup] pairs."""
    import time

    from examples.digits import task
    from paretotune.evaluators import TaskEvaluator

    evaluator = TaskEvaluator(task, cache_dir=cache_dir, memory_slots=len(CONFIGS))
    chosen = [c for c in CONFIGS if c[0] in labels]
    series: dict[str, list[list[float]]] = {label: [] for label, _ in chosen}
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        for label, config in chosen:
            m = evaluator({**config, "threads": 1})
            series[label].append([round(time.monotonic() - started, 3), m.metrics["speedup"]])
    return series


def drift_summary(series: dict[str, list[list[float]]], groups: tuple[int, ...] = (2, 4, 8)) -> list[dict[str, Any]]:
    """Per config: the spread and CV of its back-to-back speedups, their lag-1 autocorrelation,
    and the spread and CV of the medians of ``k`` consecutive measurements for each k in groups."""
    out = []
    for label, points in series.items():
        values = [v for _, v in points]
        row: dict[str, Any] = {"configuration": label, "measurements": len(values),
                               "seconds": points[-1][0] if points else 0.0,
                               "speedup_median": statistics.median(values),
                               "spread": spread(values), "cv": cv(values), "lag1_autocorrelation": None}
        if len(values) > 2 and statistics.pstdev(values[:-1]) > 0 and statistics.pstdev(values[1:]) > 0:
            row["lag1_autocorrelation"] = statistics.correlation(values[:-1], values[1:])
        for k in groups:
            medians = [statistics.median(values[i:i + k]) for i in range(0, len(values) - k + 1, k)]
            if len(medians) >= 2:
                row[f"median_of_{k}_spread"] = spread(medians)
                row[f"median_of_{k}_cv"] = cv(medians)
        out.append(row)
    return out


def drift_markdown(summary: list[dict[str, Any]], groups: tuple[int, ...] = (2, 4, 8)) -> str:
    head = ["configuration", "measurements", "s", "speedup (median)", "spread", "CV", "lag-1 autocorr."]
    head += [f"median of {k}: spread / CV" for k in groups]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in summary:
        auto = "n/a" if r["lag1_autocorrelation"] is None else f"{r['lag1_autocorrelation']:.2f}"
        cells = [r["configuration"], str(r["measurements"]), f"{r['seconds']:.0f}", f"{r['speedup_median']:.3f}",
                 f"{100 * r['spread']:.1f}%", f"{100 * r['cv']:.1f}%", auto]
        for k in groups:
            key = f"median_of_{k}_spread"
            cells.append(f"{100 * r[key]:.1f}% / {100 * r[f'median_of_{k}_cv']:.1f}%" if key in r else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fresh(cache_dir: str, rotate: int, labels: list[str], extra: tuple[str, ...] = ()) -> Any:
    command = [sys.executable, __file__, "--worker", "--cache-dir", cache_dir, "--rotate", str(rotate), *extra]
    done = subprocess.run(
        [*command, "--labels", *labels], capture_output=True, text=True, check=False, cwd=ROOT
    )
    if done.returncode != 0:
        raise SystemExit(f"a repeat failed with code {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def confirmed_repeats(
    cache_dir: str, tmp: str, labels: list[str], repeats: int, processes: int
) -> list[list[dict[str, Any]]]:
    """The configs as trials of a study (measured in this process), then `repeats`
    confirmations of them, each the median of `processes` fresh processes."""
    import paretotune as pt
    from examples.digits import task
    from paretotune.evaluators import TaskEvaluator

    choice = pt.Choice
    space = pt.SearchSpace({
        "engine": choice(["torch", "onnxruntime"]), "bit_width": choice([32, 8]),
        "quant_mode": choice(["dynamic", "static"], when={"bit_width": 8}),
        "per_channel": choice([False, True], when={"bit_width": 8}),
        "prune_ratio": choice([0.0, 0.3, 0.5]), "batch_size": choice([1, 8, 32]), "threads": choice([1]),
    })
    study = pt.create_study(
        "repeatability", f"sqlite:///{tmp}/confirm.db", space=space, task=task,
        objectives={"latency_p50_ms": "min", "accuracy": "max"}, warm_start="none", seed=0,
    )
    chosen = [(label, config) for label, config in CONFIGS if label in labels]
    for _, config in chosen:
        full = {"bit_width": 32, "prune_ratio": 0.0, "threads": 1, **config}
        if full["bit_width"] == 8:
            full = {"quant_mode": "dynamic", "per_channel": False, **full}
        study.enqueue(full)
    evaluator = TaskEvaluator(task, cache_dir=cache_dir, memory_slots=len(CONFIGS))
    number_of: dict[str, int] = {}
    for i in range(1 + len(chosen)):  # the baseline first, then the configs in order
        pending = study.ask()
        m = evaluator(pending.config)
        study.tell(pending, m.metrics, m.details)
        if i:
            number_of[chosen[i - 1][0]] = pending.number
    out = []
    for r in range(repeats):
        results = {
            c.trial: c for c in study.confirm(
                list(number_of.values()), processes=processes, show_progress=False,
                evaluator=TaskEvaluator(task, cache_dir=cache_dir, memory_slots=len(CONFIGS)),
            )
        }
        rows = []
        for label, number in number_of.items():
            conf = results[number]
            if conf.errors:
                raise SystemExit(f"confirming {label!r} failed: {conf.errors}")
            rows.append({
                "configuration": label, "p50_ms": conf.metrics["latency_p50_ms"],
                "throughput": conf.metrics["throughput"], "stable": conf.stable == conf.processes,
                "extended": False, "process_p50_spread": conf.spread["latency_p50_ms"],
                "best_p50_ms": conf.best_p50_ms,
                "load1": os.getloadavg()[0],
            })
        out.append(rows)
        print(f"  confirmation {r + 1}/{repeats} done", file=sys.stderr)
    return out


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
        if all("speedup" in r for r in runs):
            speedups = [r["speedup"] for r in runs]
            widths = [r["p50_ci_width"] for r in runs]
            out[-1].update({
                "speedup_median": statistics.median(speedups),
                "speedup_spread": spread(speedups),
                "speedup_cv": cv(speedups),
                "speedup_meets_target": spread(speedups) <= TARGET,
                "p50_ci_width_median": statistics.median(widths),
                "p50_ci_width_spread": spread(widths) if min(widths) > 0 else None,
            })
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


def paired_markdown(summary: list[dict[str, Any]]) -> str:
    lines = [
        "| configuration | repeats | p50 spread | paired speedup (median) | speedup spread (max/min-1) | "
        "speedup CV | p50 95% CI width (median, of p50) | CI width spread | speedup spread <= 5% |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in summary:
        width_spread = s["p50_ci_width_spread"]
        lines.append(
            f"| {s['configuration']} | {s['repeats']} | {100 * s['p50_spread']:.1f}% | "
            f"{s['speedup_median']:.3f} | {100 * s['speedup_spread']:.1f}% | {100 * s['speedup_cv']:.1f}% | "
            f"{100 * s['p50_ci_width_median']:.2f}% | "
            f"{'n/a' if width_spread is None else f'{100 * width_spread:.0f}%'} | "
            f"{'yes' if s['speedup_meets_target'] else 'no'} |"
        )
    return "\n".join(lines)


def runs_table(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per run (``{"summary": ..., "loads": [min, max]}``): how many configs met the 5% target by
    the absolute p50 and by the paired speedup; and over the runs, how many met the issue's
    target (at least 4 of 5 by the paired speedup) and the median count of each."""
    rows = []
    for i, run in enumerate(runs, 1):
        summary = run["summary"]
        rows.append({
            "run": i, "configs": len(summary), "loads": run["loads"],
            "p50_met": sum(bool(s["meets_target"]) for s in summary),
            "speedup_met": sum(bool(s["speedup_meets_target"]) for s in summary),
            "worst_speedup_spread": max(s["speedup_spread"] for s in summary),
        })
    need = max(len(runs[0]["summary"]) - 1, 1) if runs else 0
    return {
        "rows": rows, "need": need,
        "runs_meeting_target": sum(r["speedup_met"] >= need for r in rows),
        "runs_meeting_target_by_p50": sum(r["p50_met"] >= need for r in rows),
        "p50_met_median": statistics.median(r["p50_met"] for r in rows) if rows else None,
        "speedup_met_median": statistics.median(r["speedup_met"] for r in rows) if rows else None,
    }


def runs_markdown(table: dict[str, Any]) -> str:
    lines = [
        "| run | load average | configs within 5%: absolute p50 | configs within 5%: paired speedup | "
        "worst paired-speedup spread |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in table["rows"]:
        lo, hi = r["loads"]
        lines.append(f"| {r['run']} | {lo:.2f}-{hi:.2f} | {r['p50_met']}/{r['configs']} | "
                     f"{r['speedup_met']}/{r['configs']} | {100 * r['worst_speedup_spread']:.1f}% |")
    n = len(table["rows"])
    lines.append(
        f"\nTarget (paired speedup within 5% for at least {table['need']} configs) met in "
        f"{table['runs_meeting_target']}/{n} runs; by the absolute p50, {table['runs_meeting_target_by_p50']}/{n}. "
        f"Median configs within 5%: paired speedup {table['speedup_met_median']:g}, "
        f"absolute p50 {table['p50_met_median']:g}."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats (make bench)")
    parser.add_argument("--repeats", type=int, default=None, help="fresh processes (default 5)")
    parser.add_argument("--configs", type=int, default=len(CONFIGS), help="first N configs (default 5)")
    parser.add_argument("--cache-dir", default=None, help="artifact cache (default: temporary)")
    parser.add_argument("--confirm-processes", type=int, default=None,
                        help="fresh processes per confirmation (default 3, quick 2; 0: leave out)")
    parser.add_argument("--drift", type=float, default=None, metavar="SECONDS",
                        help="measure each config back to back in one fresh process for SECONDS "
                             "and report how its paired speedup drifts (instead of the repeats)")
    parser.add_argument("--runs", type=int, default=1,
                        help="repeat the single-measurement part N times and tabulate each run's verdict")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rotate", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--labels", nargs="+", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    labels = args.labels or [label for label, _ in CONFIGS[: args.configs]]
    if args.worker:
        if args.drift is not None:
            print(json.dumps(measure_drift(args.cache_dir, labels, args.drift)))
        else:
            print(json.dumps(measure(args.cache_dir, args.rotate, labels)))
        return 0
    if args.drift is not None:
        return drift_main(args, labels)
    repeats_n = args.repeats or (2 if args.quick else 5)
    if args.runs < 1:
        raise SystemExit(f"--runs must be a positive number of runs, got {args.runs}")
    from paretotune.evaluators import hardware_fingerprint

    load_before = os.getloadavg()
    hw = hardware_fingerprint(1)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or tmp
        _fresh(cache_dir, 0, labels)  # fills the artifact cache: builds are not what we repeat
        for run in range(args.runs):
            repeats = []
            for i in range(repeats_n):
                repeats.append(_fresh(cache_dir, i, labels))
                print(f"  {f'run {run + 1}/{args.runs}, ' if args.runs > 1 else ''}repeat {i + 1}/{repeats_n} done",
                      file=sys.stderr)
            summary = summarize(repeats, labels)
            loads = [r["load1"] for rows in repeats for r in rows]
            runs.append({"repeats": repeats, "summary": summary, "loads": [min(loads), max(loads)]})
            print(
                f"{f'Run {run + 1}/{args.runs}: ' if args.runs > 1 else ''}digits CNN, 1 thread, default "
                f"TimingPolicy, {repeats_n} fresh processes; {hw['cpu_model']}, {hw['logical_cores']} cores; "
                f"load average before {load_before[0]:.2f}, during {min(loads):.2f}-{max(loads):.2f}\n"
            )
            print(markdown(summary))
            met = sum(s["meets_target"] for s in summary)
            print(f"\n{met}/{len(summary)} configurations within the 5% p50 target (one measurement per process)")
            print("\nPaired speedup (reference timed in the same process, interleaved) and the p50's 95% interval, "
                  "same measurements\n")
            print(paired_markdown(summary))
            met = sum(s["speedup_meets_target"] for s in summary)
            print(f"\n{met}/{len(summary)} configurations within the 5% paired-speedup target\n", flush=True)
        k = args.confirm_processes if args.confirm_processes is not None else (2 if args.quick else 3)
        confirmed = confirmed_repeats(cache_dir, tmp, labels, repeats_n, k) if k > 0 else []
    if args.runs > 1:
        print(f"The {args.runs} runs, one after another (load average after {os.getloadavg()[0]:.2f})\n")
        print(runs_markdown(runs_table(runs)))
    confirmed_summary = summarize(confirmed, labels) if confirmed else []
    best_summary: list[dict[str, Any]] = []
    if confirmed:
        loads = [r["load1"] for rows in confirmed for r in rows]
        print(f"\nConfirmed (Study.confirm, median of {k} fresh processes), {repeats_n} confirmations; "
              f"load during {min(loads):.2f}-{max(loads):.2f}\n")
        print(markdown(confirmed_summary))
        met = sum(s["meets_target"] for s in confirmed_summary)
        print(f"\n{met}/{len(confirmed_summary)} configurations within the 5% p50 target (confirmed)")
        best = [[{**r, "p50_ms": r["best_p50_ms"]} for r in rows] for rows in confirmed]
        best_summary = summarize(best, labels)
        print(f"\nBest p50 of each confirmation (Confirmation.best_p50_ms, the least disturbed of {k} "
              "processes; throughput columns as above)\n")
        print(markdown(best_summary))
        met = sum(s["meets_target"] for s in best_summary)
        print(f"\n{met}/{len(best_summary)} configurations within the 5% p50 target (best of {k})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"hardware": hw, "load_before": load_before, "runs": runs, "confirm_processes": k,
                   "confirmed": confirmed, "confirmed_summary": confirmed_summary, "best_summary": best_summary}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


def drift_main(args: argparse.Namespace, labels: list[str]) -> int:
    from paretotune.evaluators import hardware_fingerprint

    if args.drift <= 0:
        raise SystemExit(f"--drift must be a positive number of seconds, got {args.drift}")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or tmp
        _fresh(cache_dir, 0, labels)  # fills the artifact cache
        series = _fresh(cache_dir, 0, labels, ("--drift", str(args.drift)))
    summary = drift_summary(series)
    hw = hardware_fingerprint(1)
    print(f"digits CNN, 1 thread, default TimingPolicy; back-to-back measurements in one fresh process for "
          f"{args.drift:g} s; {hw['cpu_model']}, {hw['logical_cores']} cores; load average before "
          f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}\n")
    print(drift_markdown(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"hardware": hw, "load_before": load_before, "seconds": args.drift, "series": series,
                   "summary": summary}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
