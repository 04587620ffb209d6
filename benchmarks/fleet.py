"""The fleet against one study at a time, and the fleet's controller overhead.

    .venv/bin/python benchmarks/fleet.py                  # 3 digits studies x 30 trials, 3 workers
    .venv/bin/python benchmarks/fleet.py --quick          # 3 x 8 trials; overhead with 60 trials
    .venv/bin/python benchmarks/fleet.py --part overhead  # only the controller overhead

**Makespan.** Three digits studies (the standard space at batch 1/8/32, the same spec but the
seed) are run twice on this machine, in one process each time, in alternating order by repeat:
one after another with ``study.optimize(n_workers=3)`` (what a user without the fleet does),
and all submitted at once to three fleet workers (``paretotune worker`` processes). Each mode
starts from an empty artifact cache of its own, so neither reuses the other's builds.

**Overhead.** The null evaluator (no work) through the fleet on PostgreSQL, with 1, 3 and 10
submitted studies and one fleet worker: trials per second between the first and the last
completed trial, against the single-study worker on the same store. What is left is the
controller: the study choice (a read of every open study and its claim counts), budget claim,
ask/tell and the trial process round trip.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the PostgreSQL harness the test suite uses
sys.path.insert(0, str(ROOT))  # examples.digits

import paretotune as pt  # noqa: E402
from paretotune.storage import FleetState, StudyStore  # noqa: E402
from paretotune.workers.fleet import submit  # noqa: E402

OBJ = {"latency_p50_ms": "min", "throughput": "max", "accuracy": "max"}
CONSTRAINTS = {"accuracy_drop": ("<=", 0.01)}


def digits_study(url: str, name: str, seed: int) -> pt.Study:
    return pt.create_study(name, url, task="examples.digits:task", space={"standard": {"batch_sizes": [1, 8, 32]}},
                           objectives=OBJ, constraints=CONSTRAINTS, sampler="tpe", seed=seed, trial_timeout_s=600)


def _env(cache: str) -> dict[str, str]:
    return {**os.environ, "PARETOTUNE_CACHE_DIR": cache, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def sequential(url: str, n_trials: int, seeds: list[int], cache: str) -> float:
    """The three studies one after another, each with optimize(n_workers=3); seconds."""
    old = os.environ.get("PARETOTUNE_CACHE_DIR")
    os.environ["PARETOTUNE_CACHE_DIR"] = cache
    try:
        t0 = time.perf_counter()
        for seed in seeds:
            digits_study(url, f"seq-{seed}", seed).optimize(None, n_trials=n_trials, n_workers=3, show_progress=False)
        return time.perf_counter() - t0
    finally:
        if old is None:
            os.environ.pop("PARETOTUNE_CACHE_DIR", None)
        else:
            os.environ["PARETOTUNE_CACHE_DIR"] = old


def fleet(url: str, n_trials: int, seeds: list[int], cache: str, n_workers: int = 3) -> float:
    """The three studies submitted at once to ``n_workers`` fleet worker processes; seconds
    from the submissions to the last study done."""
    t0 = time.perf_counter()
    for seed in seeds:
        submit(digits_study(url, f"fleet-{seed}", seed), n_trials=n_trials)
    procs = [subprocess.Popen([sys.executable, "-m", "paretotune.cli", "worker", "--storage", url,
                               "--exit-when-idle", "5"], env=_env(cache), stderr=subprocess.DEVNULL)
             for _ in range(n_workers)]
    store = StudyStore(url)
    names = {f"fleet-{s}" for s in seeds}
    while True:
        rows = [r for r in store.fleet_studies() if r["name"] in names]
        if all(r["state"] == FleetState.DONE and r["running"] == 0 for r in rows):
            break
        if all(p.poll() is not None for p in procs):
            raise SystemExit(f"the fleet workers exited before the studies were done: {rows}")
        time.sleep(0.5)
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.wait(timeout=120)
    for name in names:
        done = pt.load_study(name, url).counts()["COMPLETE"]
        if done != n_trials:
            raise SystemExit(f"{name}: {done} completed trials, expected {n_trials}")
    return elapsed


def overhead(url: str, n_trials: int, n_studies: int, max_warm: int | None = None) -> float:
    """Trials/s of one fleet worker over ``n_studies`` submitted null-evaluator studies
    (``max_warm``: its warm trial processes, default DEFAULT_MAX_WARM)."""
    space = pt.SearchSpace({"x": pt.Float(0.0, 1.0, step=0.001)})
    tag = uuid.uuid4().hex[:6]
    names = []
    for i in range(n_studies):
        study = pt.create_study(f"ovh-{tag}-{i}", url, space=space, objectives={"latency_p50_ms": "min", "accuracy": "max"},
                                task="paretotune.testing:null_evaluator", sampler="random", seed=i, warm_start="none")
        submit(study, n_trials=max(2, n_trials // n_studies))
        names.append(study.name)
    from paretotune.workers.fleet import DEFAULT_MAX_WARM, FleetWorker

    FleetWorker(url, worker=f"bench-{tag}", max_warm=max_warm or DEFAULT_MAX_WARM).run(exit_when_idle_s=1.0)
    done = sorted(ft.datetime_complete for n in names for ft in pt.load_study(n, url).optuna_study.trials
                  if ft.datetime_complete)
    span = (done[-1] - done[0]).total_seconds()
    return (len(done) - 1) / span


def single_study_overhead(url: str, n_trials: int) -> float:
    from paretotune.testing import null_evaluator
    from paretotune.workers.loop import run_worker

    space = pt.SearchSpace({"x": pt.Float(0.0, 1.0, step=0.001)})
    study = pt.create_study(f"ovh-single-{uuid.uuid4().hex[:6]}", url, space=space,
                            objectives={"latency_p50_ms": "min", "accuracy": "max"}, sampler="random", seed=0,
                            warm_start="none")
    study.store.set_target(study.name, n_trials)
    run_worker(study.store, study.name, null_evaluator, n_trials=n_trials)
    done = sorted(ft.datetime_complete for ft in study.optuna_study.trials if ft.datetime_complete)
    return (len(done) - 1) / (done[-1] - done[0]).total_seconds()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 x 8 digits trials, 1 repeat; 60 overhead trials")
    ap.add_argument("--part", choices=["all", "makespan", "overhead"], default="all")
    ap.add_argument("--repeats", type=int, help="makespan repeats per mode (default 2; --quick 1)")
    ap.add_argument("--postgres", help="PostgreSQL URL (default: a throwaway local cluster)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    n_trials = 8 if args.quick else 30
    repeats = args.repeats or (1 if args.quick else 2)
    overhead_trials = 60 if args.quick else 300
    from paretotune.evaluators import hardware_fingerprint

    from pgcluster import PostgresCluster, missing_requirement

    cluster, url = None, args.postgres
    if url is None:
        missing = missing_requirement()
        if missing is not None:
            raise SystemExit(f"benchmarks/fleet.py needs PostgreSQL: {missing}")
        cluster = PostgresCluster()
        cluster.start()
    results: dict[str, Any] = {"hardware": hardware_fingerprint(1), "load_before": os.getloadavg()}
    try:
        if args.part in ("all", "makespan"):
            runs: dict[str, list[float]] = {"sequential": [], "fleet": []}
            for r in range(repeats):
                order = ["sequential", "fleet"] if r % 2 == 0 else ["fleet", "sequential"]
                for mode in order:
                    db = cluster.create_database(f"m{r}{mode[0]}") if cluster else url
                    cache = tempfile.mkdtemp(prefix=f"pt-fleet-cache-{mode}-")
                    seeds = [10 * r + i for i in range(3)]
                    seconds = (sequential if mode == "sequential" else fleet)(db, n_trials, seeds, cache)
                    runs[mode].append(seconds)
                    print(f"repeat {r}: {mode}: {seconds:.1f} s for 3 x {n_trials} trials", file=sys.stderr)
            ratios = [s / f for s, f in zip(runs["sequential"], runs["fleet"], strict=True)]
            results["makespan"] = {"trials_per_study": n_trials, "repeats": repeats, "runs": runs,
                                   "sequential_over_fleet": ratios}
        if args.part in ("all", "overhead"):
            db = cluster.create_database("overhead") if cluster else url
            rows = {"single-study worker": single_study_overhead(db, overhead_trials)}
            for n in (1, 3, 10):
                rows[f"fleet worker, {n} open studies"] = overhead(db, overhead_trials, n)
            rows["fleet worker, 10 open studies, --max-warm 10"] = overhead(db, overhead_trials, 10, max_warm=10)
            results["overhead_trials_per_s"] = rows
    finally:
        if cluster is not None:
            cluster.cleanup()
    results["load_after"] = os.getloadavg()
    hw = results["hardware"]
    print(f"\n{hw.get('cpu_model')} ({os.cpu_count()} cores), load {results['load_before'][0]:.1f} before, "
          f"{results['load_after'][0]:.1f} after")
    if "makespan" in results:
        m = results["makespan"]
        print("\n| mode | makespan s (per repeat) | median |\n|---|---|---|")
        for mode in ("sequential", "fleet"):
            print(f"| {mode} | {', '.join(f'{s:.0f}' for s in m['runs'][mode])} | {statistics.median(m['runs'][mode]):.0f} |")
        print(f"\nsequential / fleet, per repeat: {', '.join(f'{x:.2f}x' for x in m['sequential_over_fleet'])}")
    if "overhead_trials_per_s" in results:
        print("\n| worker (PostgreSQL, null evaluator) | trials/s |\n|---|---|")
        for label, rate in results["overhead_trials_per_s"].items():
            print(f"| {label} | {rate:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
