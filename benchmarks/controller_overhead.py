"""Controller overhead: trials per second with a null evaluator, through SQLite and PostgreSQL.

    .venv/bin/python benchmarks/controller_overhead.py            # full: 300 trials, 3 repeats
    .venv/bin/python benchmarks/controller_overhead.py --quick    # 60 trials, 1 repeat

With nothing to evaluate, what is left is the controller: budget claims, ask/tell through the
store, the trial process round trip, and the measurement rows. PostgreSQL comes from
``--postgres URL`` or, by default, a throwaway cluster on 127.0.0.1 started the way the tests
start theirs. "steady" is the rate between the first and the last completed trial, so worker
start-up (a fresh interpreter per worker and per trial process) is left out; "total" includes it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the PostgreSQL harness the test suite uses

import paretotune as pt  # noqa: E402
from paretotune.testing import null_evaluator  # noqa: E402


def space() -> pt.SearchSpace:
    return pt.SearchSpace(
        {
            "prune_ratio": pt.Float(0.0, 0.5, step=0.1),
            "bit_width": pt.Choice([32, 16, 8]),
            "batch_size": pt.Choice([1, 8, 32]),
        }
    )


def one_run(url: str, n_trials: int, n_workers: int, sampler: str) -> dict[str, float]:
    study = pt.create_study(
        f"overhead-{uuid.uuid4().hex[:8]}", url, space=space(),
        objectives={"latency_p50_ms": "min", "accuracy": "max"}, sampler=sampler, seed=0,
        # the space holds fewer configs than the budget: with the default "reuse" most asks
        # would be duplicate proposals answered from the store, and the rate would count
        # those asks against measured trials; "measure" keeps one ask per trial, like the
        # plain-Optuna reference (quick mode, 2 workers: 14-15/s with "reuse", 43-51/s here)
        duplicates="measure",
    )
    t0 = time.perf_counter()
    study.optimize(null_evaluator, n_trials=n_trials, n_workers=n_workers, show_progress=False)
    total = time.perf_counter() - t0
    done = sorted(ft.datetime_complete for ft in study.optuna_study.trials if ft.datetime_complete)
    steady_span = (done[-1] - done[0]).total_seconds()
    complete = study.counts()["COMPLETE"]
    if complete != n_trials:
        raise SystemExit(f"expected {n_trials} completed trials, got {complete}")
    return {"total": n_trials / total, "steady": (n_trials - 1) / steady_span if steady_span else float("nan")}


def _plain_optuna_worker(url: str, name: str, n: int, seed: int) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=url, sampler=optuna.samplers.RandomSampler(seed=seed))

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        trial.suggest_float("prune_ratio", 0.0, 0.5, step=0.1)
        trial.suggest_categorical("bit_width", [32, 16, 8])
        trial.suggest_categorical("batch_size", [1, 8, 32])
        return 1.0, 0.9

    study.optimize(objective, n_trials=n)


def plain_optuna(url: str, n_trials: int, n_workers: int) -> float:
    """Reference: Optuna's own optimize() in n processes on the same store, same 3 params."""
    import multiprocessing as mp

    import optuna

    from paretotune.storage.engine import driver_url

    name = f"plain-{uuid.uuid4().hex[:8]}"
    durl = driver_url(url)
    optuna.create_study(study_name=name, storage=durl, directions=["minimize", "maximize"])
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_plain_optuna_worker, args=(durl, name, n_trials // n_workers, i))
             for i in range(n_workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    trials = optuna.load_study(study_name=name, storage=durl).trials
    done = sorted(t.datetime_complete for t in trials if t.datetime_complete)
    return (len(done) - 1) / (done[-1] - done[0]).total_seconds()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="60 trials, 1 repeat")
    ap.add_argument("--postgres", help="PostgreSQL URL (default: a throwaway local cluster)")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--sampler", default="random", help="random isolates the controller; tpe adds its model")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--no-reference", action="store_true", help="skip plain Optuna's reference rows")
    args = ap.parse_args()
    n_trials, repeats = (60, 1) if args.quick else (300, 3)
    workers = [int(w) for w in args.workers.split(",")]

    cluster = None
    pg_url = args.postgres
    if pg_url is None:
        from pgcluster import PostgresCluster, missing_requirement

        missing = missing_requirement()
        if missing is None:
            cluster = PostgresCluster()
            cluster.start()
            pg_url = cluster.create_database("bench")
        else:
            print(f"skipping PostgreSQL: {missing}", file=sys.stderr)
    tmp = Path("/tmp") / f"paretotune-bench-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    backends = {"sqlite": f"sqlite:///{tmp}/bench.db"}
    if pg_url:
        backends["postgresql"] = pg_url
    results = []
    try:
        for backend, url in backends.items():
            for w in workers:
                runs = [one_run(url, n_trials, w, args.sampler) for _ in range(repeats)]
                row = {
                    "backend": backend, "workers": w, "trials": n_trials, "repeats": repeats,
                    "steady_median": statistics.median(r["steady"] for r in runs),
                    "steady_min": min(r["steady"] for r in runs), "steady_max": max(r["steady"] for r in runs),
                    "total_median": statistics.median(r["total"] for r in runs),
                }
                results.append(row)
                print(f"{backend:10s} workers={w}: steady {row['steady_median']:.1f} trials/s "
                      f"(min {row['steady_min']:.1f}, max {row['steady_max']:.1f}), "
                      f"total {row['total_median']:.1f} trials/s", file=sys.stderr)
            if backend == "postgresql" and not args.no_reference:
                for w in workers:
                    rates = [plain_optuna(url, n_trials, w) for _ in range(repeats)]
                    results.append({
                        "backend": "postgresql, plain Optuna optimize() (reference)", "workers": w,
                        "trials": n_trials, "repeats": repeats, "steady_median": statistics.median(rates),
                        "steady_min": min(rates), "steady_max": max(rates), "total_median": float("nan"),
                    })
    finally:
        if cluster is not None:
            cluster.cleanup()
    load = os.getloadavg()
    print(f"\nsampler={args.sampler}, {n_trials} trials x {repeats} repeats, null evaluator, "
          f"load average at the end {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} on {os.cpu_count()} cores\n")
    print("| store | workers | trials/s steady (median, min-max) | trials/s incl. start-up |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['backend']} | {r['workers']} | {r['steady_median']:.1f} ({r['steady_min']:.1f}-{r['steady_max']:.1f}) "
              f"| {r['total_median']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
