"""The `paretotune` command: run, worker, status, pareto, trials (and confirm, compare, export, report).

Errors print one line, ``error: ...``, with any password masked, and exit with code 2 for
bad input (spec, space, task) and 1 for everything else (store, study).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from paretotune.display import format_value
from paretotune.errors import ConfigError, ParetotuneError, TaskError
from paretotune.storage import mask

log = logging.getLogger("paretotune.cli")

STORAGE_ENV = "PARETOTUNE_STORAGE"


# -- formatting ---------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    return format_value(v, mapping="counts")


#: metrics a table shows besides the objectives and constraints (json and csv show all)
TABLE_METRICS = ("accuracy", "accuracy_drop", "speedup", "latency_p99_ms", "model_bytes")


def trial_rows(
    study: Any, trials: Sequence[Any], *, compact: bool = False
) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns (config, then objectives, then other metrics) and one row per trial.
    ``compact`` keeps only the objectives, constraint metrics and a few headline metrics."""
    cfg_keys: list[str] = []
    metric_keys: list[str] = list(study.objectives)
    for c in study.constraints:
        if c.metric not in metric_keys:
            metric_keys.append(c.metric)
    if compact:  # the headline metrics some trial has (no empty `speedup` column, say)
        metric_keys += [m for m in TABLE_METRICS if m not in metric_keys and any(m in t.metrics for t in trials)]
    for t in trials:
        for k in (t.config or {}):
            if k not in cfg_keys:
                cfg_keys.append(k)
        for k in t.metrics:
            if k not in metric_keys and not compact:
                metric_keys.append(k)
    columns = ["trial", "state", *cfg_keys, *metric_keys, "reason"]
    rows = []
    for t in trials:
        row: dict[str, Any] = {"trial": t.number, "state": t.state.value + (" (baseline)" if t.is_baseline else "")}
        for k in cfg_keys:
            row[k] = (t.config or {}).get(k)
        for k in metric_keys:
            row[k] = t.metrics.get(k)
        row["reason"] = t.reason
        rows.append(row)
    return columns, rows


def render(columns: list[str], rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2, default=lambda o: dict(o) if isinstance(o, Mapping) else str(o))
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(columns)
        for r in rows:
            writer.writerow([json.dumps(dict(r[c])) if isinstance(r.get(c), Mapping) else ("" if r.get(c) is None else r[c]) for c in columns])
        return buf.getvalue().rstrip("\n")
    # table: drop columns that are empty everywhere
    cols = [c for c in columns if any(r.get(c) not in (None, "") for r in rows)] or columns
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    widths = [min(w, 60) for w in widths]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(v[:w].ljust(w) for v, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


# -- commands -----------------------------------------------------------------------------------
def _storage(args: argparse.Namespace, fallback: str | None = None) -> str | None:
    return args.storage or os.environ.get(STORAGE_ENV) or fallback


def _backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """--address and --resources, checked: they belong to the Ray backend only."""
    given = [flag for flag, v in (("--address", args.address), ("--resources", args.resources)) if v is not None]
    if args.backend != "ray":
        if given:
            raise ConfigError(f"{' and '.join(given)} apply to --backend ray only; got --backend {args.backend}")
        return {}
    options: dict[str, Any] = {}
    if args.address is not None:
        options["address"] = args.address
    if args.resources is not None:
        try:
            resources = json.loads(args.resources)
        except ValueError as exc:
            raise ConfigError(
                f"--resources must be a JSON object such as '{{\"cpu\": 1, \"gpu\": 1}}', got "
                f"{args.resources!r} ({exc})"
            ) from None
        if not isinstance(resources, dict):
            raise ConfigError(f"--resources must be a JSON object such as '{{\"cpu\": 1}}', got {args.resources!r}")
        options["resources_per_trial"] = resources
    return options


def _flag_int(flag: str, value: int | None, least: int) -> None:
    if value is not None and value < least:
        raise ConfigError(f"{flag} must be an integer >= {least}, got {value}")


def cmd_run(args: argparse.Namespace) -> int:
    from paretotune.api import create_study
    from paretotune.spec import load_spec_file
    from paretotune.workers.pool import check_budget

    # everything is checked before the study row is stored or any code of the task runs
    _flag_int("--n-trials", args.n_trials, 1)
    _flag_int("--n-workers", args.n_workers, 1)
    _flag_int("--confirm", args.confirm, 0)
    options = _backend_options(args)
    spec = load_spec_file(args.spec)
    n_trials = spec.n_trials if args.n_trials is None else args.n_trials
    n_workers = spec.n_workers if args.n_workers is None else args.n_workers
    check_budget(
        n_trials, n_workers, args.backend,
        trials_field="--n-trials" if args.n_trials is not None else "budget.n_trials",
        workers_field="--n-workers" if args.n_workers is not None else "budget.n_workers",
    )
    processes = spec.confirm if args.confirm is None else args.confirm
    storage = _storage(args, spec.storage)
    task = spec.study_args.get("task")
    if task:
        print(f"importing the task module {task.partition(':')[0]!r} ({task}): it runs that code",
              file=sys.stderr)
    study = create_study(spec.name, storage, load_if_exists=args.load_if_exists, **spec.study_args)
    print(f"study {study.name!r} in {study.store.masked_url}: budget {n_trials} completed trials, "
          f"{n_workers} worker(s), backend {args.backend}", file=sys.stderr)
    study.optimize(
        None, n_trials=n_trials, n_workers=n_workers, backend=args.backend,
        show_progress=not args.no_progress, **options,
    )
    _print_front(study, args.format)
    if processes and study.pareto_front():
        from paretotune.search.confirmations import display_rows

        print(f"confirming the front in {processes} fresh processes", file=sys.stderr)
        results = study.confirm(processes=processes, show_progress=not args.no_progress)
        if args.format == "table":
            print(f"\nConfirmed (median of {processes} fresh processes; `paretotune confirm "
                  f"{study.name} --show` prints it again):")
        print(render(*display_rows(results), args.format))
    return 0


def _print_front(study: Any, fmt: str) -> None:
    front = study.pareto_front()
    columns, rows = trial_rows(study, list(front), compact=fmt == "table")
    if fmt == "table":
        s = study.summary()
        hv = "n/a" if s["hypervolume"] is None else f"{s['hypervolume']:.6g}"
        print(f"Pareto front of {study.name!r}: {len(front)} of {s['trials']['COMPLETE']} completed trials "
              f"(hypervolume {hv})")
    print(render(columns, rows, fmt))


def cmd_worker(args: argparse.Namespace) -> int:
    if args.study is None:
        return _fleet_worker(args)
    if (args.tag or args.metrics_port is not None or args.exit_when_idle is not None or args.backend != "local"
            or args.max_warm is not None):
        raise ConfigError("--tag, --metrics-port, --exit-when-idle and --backend are for a fleet worker (no --study); "
                          "run one study on Ray with `paretotune run SPEC --backend ray`")
    from paretotune.search import load_study_from_store
    from paretotune.storage import StudyStore
    from paretotune.workers.lifecycle import worker_id
    from paretotune.workers.loop import run_worker
    from paretotune.workers.pool import resolve_evaluator

    store = StudyStore(_storage(args), create=False)
    wid = worker_id("cli")
    study = load_study_from_store(args.study, store, worker=wid)
    _flag_int("--n-trials", args.n_trials, 1)
    n_trials = store.target(args.study) if args.n_trials is None else args.n_trials
    if not n_trials:
        raise ConfigError(
            f"study {args.study!r} has no budget yet: start it with `paretotune run`, or pass --n-trials"
        )
    evaluator = resolve_evaluator(study, args.task)
    print(f"worker {wid} joined {args.study!r} in {store.masked_url} (budget {n_trials})", file=sys.stderr)
    stats = run_worker(store, args.study, evaluator, n_trials=n_trials, worker=wid)
    print(f"worker done: {stats.completed} completed, {stats.failed} failed, {stats.invalid} invalid", file=sys.stderr)
    return _stop_status(store, args.study)


def _stop_status(store: Any, name: str) -> int:
    """1, with the reason, when the study stopped on an error; else 0."""
    stop = store.stopped(name)
    if stop is not None and stop.is_error:
        print(f"error: study stopped: {stop.reason}", file=sys.stderr)
        return 1
    return 0


def _fleet_worker(args: argparse.Namespace) -> int:
    from paretotune.storage import StudyStore
    from paretotune.workers.fleet import DEFAULT_MAX_WARM, FleetWorker
    from paretotune.workers.loop import raise_on_sigterm

    if args.n_trials is not None or args.task is not None:
        raise ConfigError("--n-trials and --task go with --study; a fleet worker takes each study's own")
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        raise ConfigError(f"--metrics-port must be a port from 0 to 65535, got {args.metrics_port}")
    if args.exit_when_idle is not None and args.exit_when_idle < 0:
        raise ConfigError(f"--exit-when-idle must be >= 0 seconds, got {args.exit_when_idle}")
    if args.backend == "ray":
        from paretotune.workers.ray_fleet import run_ray_fleet

        if args.metrics_port is not None:
            raise ConfigError("--metrics-port is for a local fleet worker; a Ray fleet's metrics are Ray's own")
        _flag_int("--max-concurrent", args.max_concurrent, 1)
        print(f"fleet on Ray ({args.address or 'RAY_ADDRESS or a new local Ray'}) for {_storage(args) or 'the default store'}",
              file=sys.stderr)
        searcher = run_ray_fleet(StudyStore(_storage(args), create=False).url, address=args.address,
                                 tags=args.tag or (), max_concurrent=args.max_concurrent,
                                 exit_when_idle_s=args.exit_when_idle)
        print(f"Ray fleet done: {searcher.asked} trials handed out", file=sys.stderr)
        return 0
    if args.address is not None or args.max_concurrent is not None:
        raise ConfigError(f"--address and --max-concurrent apply to --backend ray only; got --backend {args.backend}")
    _flag_int("--max-warm", args.max_warm, 1)
    store = StudyStore(_storage(args), create=False)
    worker = FleetWorker(store, tags=args.tag or (), metrics_port=args.metrics_port,
                         max_warm=args.max_warm or DEFAULT_MAX_WARM)
    caps = worker.capabilities
    print(f"fleet worker {worker.worker} on {store.masked_url}: {caps['cpus']} CPUs, GPUs {caps['gpus'] or 'none'}, "
          f"engines {caps['engines']}, tags {caps['tags'] or 'none'}"
          + (f"; metrics on :{worker.metrics.port}/metrics" if worker.metrics else ""), file=sys.stderr)
    raise_on_sigterm()  # Kubernetes stops a pod with SIGTERM: the running trial is recorded
    stats = worker.run(exit_when_idle_s=args.exit_when_idle)
    for name, counts in sorted(stats.by_study.items()):
        print(f"  {name}: " + ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items())), file=sys.stderr)
    return 0


def _fleet_rows(store: Any) -> tuple[list[str], list[dict[str, Any]]]:
    from paretotune.search import load_study_from_store
    from paretotune.workers.fleet import WORKER_LIVE_S, waiting_for

    workers = store.fleet_workers(live_within_s=WORKER_LIVE_S)
    rows = []
    for row in store.fleet_studies():
        counts = load_study_from_store(row["name"], store).counts()
        rows.append({
            "study": row["name"], "state": row["state"].value, "priority": row["priority"],
            "completed": counts["COMPLETE"], "budget": row["target"], "running": row["running"],
            "failed": counts["FAIL"], "invalid": counts["INVALID"],
            "note": row["stopped_reason"] or waiting_for(row, workers) or "",
        })
    return ["study", "state", "priority", "completed", "budget", "running", "failed", "invalid", "note"], rows


def cmd_submit(args: argparse.Namespace) -> int:
    from paretotune.api import submit

    resources = None
    if args.resources is not None:
        try:
            resources = json.loads(args.resources)
        except ValueError as exc:
            raise ConfigError(f"--resources must be a JSON object such as '{{\"cpu\": 1, \"gpu\": 1}}', got "
                              f"{args.resources!r} ({exc})") from None
    study = submit(args.spec, _storage(args), priority=args.priority, n_trials=args.n_trials,
                   gpu=args.gpu, tags=args.require_tag or (), resources_per_trial=resources,
                   load_if_exists=args.load_if_exists)
    print(f"submitted {study.name!r} to the fleet of {study.store.masked_url} (priority {args.priority}, "
          f"budget {study.store.target(study.name)}); `paretotune wait {study.name}` blocks until it is done",
          file=sys.stderr)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from paretotune.storage import StudyStore

    columns, rows = _fleet_rows(StudyStore(_storage(args), create=False))
    print(render(columns, rows, args.format))
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    from paretotune.storage import StudyStore
    from paretotune.workers.fleet import WORKER_LIVE_S

    now = time.time()
    rows = [{
        "worker": w["id"], "host": w["host"], "pid": w["pid"], "cpus": w["capabilities"].get("cpus"),
        "gpus": ", ".join(w["capabilities"].get("gpus") or []), "engines": ", ".join(w["capabilities"].get("engines") or []),
        "tags": ", ".join(w["capabilities"].get("tags") or []), "study": w["study"] or "", "trial": w["trial_number"],
        "heartbeat_s_ago": round(now - w["heartbeat_at"], 1),
    } for w in StudyStore(_storage(args), create=False).fleet_workers(live_within_s=WORKER_LIVE_S)]
    print(render(["worker", "host", "pid", "cpus", "gpus", "engines", "tags", "study", "trial", "heartbeat_s_ago"],
                 rows, args.format))
    return 0


def cmd_fleet_state(args: argparse.Namespace) -> int:
    from paretotune.storage import FleetState, StudyStore
    from paretotune.workers.fleet import check_priority

    store = StudyStore(_storage(args), create=False)
    if args.command == "cancel":
        store.set_fleet(args.name, state=FleetState.CANCELLED)
        print(f"cancelled {args.name!r}: no new trials; running ones finish and are recorded", file=sys.stderr)
    else:
        store.set_fleet(args.name, priority=check_priority(args.priority, "priority"))
        print(f"{args.name!r} now has priority {args.priority}", file=sys.stderr)
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    from paretotune.storage import FleetState, StudyStore

    store = StudyStore(_storage(args), create=False)
    if args.timeout is not None and args.timeout < 0:
        raise ConfigError(f"--timeout must be >= 0 seconds, got {args.timeout}")
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    shown = None
    while True:
        rows = {r["name"]: r for r in store.fleet_studies()}
        if args.name not in rows:
            raise ConfigError(f"study {args.name!r} was never submitted to the fleet of {store.masked_url}; "
                              f"submitted: {sorted(rows)}")
        row = rows[args.name]
        status = (row["state"].value, row["done"], row["running"])
        if status != shown:
            print(f"{args.name}: {row['state'].value}, {row['done']}/{row['target']} completed, "
                  f"{row['running']} running", file=sys.stderr)
            shown = status
        if row["state"] != FleetState.OPEN and row["running"] == 0:
            break
        if deadline is not None and time.monotonic() >= deadline:
            print(f"error: {args.name!r} is still {row['state'].value} after {args.timeout:g} s", file=sys.stderr)
            return 1
        time.sleep(1.0)
    _print_front(_load(args), args.format)
    return _stop_status(store, args.name)


def _load(args: argparse.Namespace) -> Any:
    from paretotune.api import load_study

    return load_study(args.name, _storage(args))


def cmd_status(args: argparse.Namespace) -> int:
    study = _load(args)
    s = study.summary()
    s["target"] = study.store.target(study.name)
    if args.format == "json":
        print(json.dumps(s, indent=2))
        return 0
    t = s["trials"]
    hv = "n/a" if s["hypervolume"] is None else f"{s['hypervolume']:.6g}"
    print(f"study:       {s['name']}  ({s['storage']})")
    print(f"objectives:  {', '.join(f'{k} ({v})' for k, v in s['objectives'].items())}")
    print(f"constraints: {', '.join(s['constraints']) or 'none'}")
    print(f"sampler:     {s['sampler']}")
    print(f"trials:      {t['COMPLETE']} completed / budget {s['target'] or '?'}, {t['RUNNING']} running, "
          f"{t['WAITING']} waiting, {t['FAIL']} failed, {t['INVALID']} invalid")
    print(f"front:       {s['front_size']} trials, hypervolume {hv}")
    if s["stopped_reason"]:
        print(f"stopped:     {s['stopped_reason']}")
    return 0


def cmd_pareto(args: argparse.Namespace) -> int:
    _print_front(_load(args), args.format)
    return 0


def cmd_trials(args: argparse.Namespace) -> int:
    study = _load(args)
    trials = study.trials
    if args.state:
        trials = [t for t in trials if t.state.value == args.state.upper()]
    columns, rows = trial_rows(study, trials, compact=args.format == "table")
    print(render(columns, rows, args.format))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from paretotune.export import export, select_trial

    study = _load(args)
    trial = select_trial(study, pick=args.pick, trial=args.trial)
    bundle = export(
        study, trial, args.out, tolerance=args.tolerance, cache_dir=args.cache_dir,
        model_name=args.model_name, overwrite=args.overwrite,
    )
    source = "from the artifact cache" if bundle.artifact_source != "built" else "rebuilt from the config"
    print(f"exported trial {bundle.trial} of {study.name!r} ({bundle.engine}, artifact {source}) to {bundle.path}")
    print(f"verified: accuracy {bundle.measured_accuracy:.6g} re-measured, {bundle.recorded_accuracy:.6g} recorded "
          f"(tolerance {args.tolerance:g})")
    print(f"Triton model repository: {bundle.model_repository} (model {bundle.model_name!r})")
    return 0


def cmd_confirm(args: argparse.Namespace) -> int:
    from paretotune.search.confirmations import display_rows

    study = _load(args)
    if args.show:
        results = study.confirmations()
        if not results:
            raise ConfigError(f"study {study.name!r} has no stored confirmation; run 'paretotune confirm {study.name}'")
    else:
        results = study.confirm(
            args.trials or None, evaluator=args.task, processes=args.processes,
            show_progress=not args.no_progress,
        )
    if args.format == "json":
        print(json.dumps([c.to_dict() for c in results], indent=2))
        return 0
    if args.format == "table":
        print(f"confirmation {results[0].run_id} of {study.name!r}: each trial re-measured in fresh "
              f"processes (median; spread = max/min - 1; speedup paired with the baseline per process)")
    print(render(*display_rows(results), args.format))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    study = _load(args)
    result = study.compare(args.a, args.b, evaluator=args.task, processes=args.processes,
                           show_progress=not args.no_progress)
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"comparison {result.run_id} of {study.name!r}: trial {result.a} against trial {result.b}, "
          f"{result.processes} fresh processes, interleaved window by window in each")
    for line in result.lines():
        print(line)
    for error in result.errors:
        print(f"error: {error}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from paretotune.report import write_report

    study = _load(args)
    existed = os.path.lexists(args.out)
    path = write_report(study, args.out)
    print(f"{'replaced' if existed else 'wrote'} the report of {study.name!r} {'at' if existed else 'to'} {path}")
    return 0


# -- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="paretotune", description="Multi-objective autotuning of model deployment settings.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = p.add_subparsers(dest="command", required=True)

    def storage_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--storage", help=f"study store URL (default: ${STORAGE_ENV} or sqlite:///paretotune.db)")

    run = sub.add_parser("run", help="create or resume the study of a YAML spec and run it")
    run.add_argument("spec", help="YAML spec file")
    storage_arg(run)
    run.add_argument("--n-trials", type=int, help="budget of completed trials (overrides the spec)")
    run.add_argument("--n-workers", type=int, help="local worker processes (overrides the spec)")
    run.add_argument("--backend", choices=["local", "ray"], default="local")
    run.add_argument("--address", help="Ray cluster address (backend ray)")
    run.add_argument("--resources", help='per-trial resources as JSON, e.g. \'{"cpu": 1, "gpu": 1}\' (backend ray)')
    run.add_argument("--load-if-exists", action="store_true", help="continue a stored study whose spec differs")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--confirm", type=int, default=None, metavar="N",
                     help="then re-measure the front in N fresh processes (default: budget.confirm, else 0)")
    run.add_argument("--format", choices=["table", "json", "csv"], default="table")
    run.set_defaults(func=cmd_run)

    w = sub.add_parser("worker", help="serve every submitted study of the store (or one, with --study)")
    storage_arg(w)
    w.add_argument("--study", help="serve only this study (default: every study submitted to the fleet)")
    w.add_argument("--n-trials", type=int, help="with --study: budget (default: the study's stored budget)")
    w.add_argument("--task", help="with --study: task import path (default: the one stored with the study)")
    w.add_argument("--tag", action="append", help="fleet: a tag this worker offers (repeatable)")
    w.add_argument("--metrics-port", type=int, help="fleet: serve Prometheus metrics on this port")
    w.add_argument("--exit-when-idle", type=float, metavar="S",
                   help="fleet: exit after S seconds with no runnable study (default: serve forever)")
    w.add_argument("--max-warm", type=int, default=None, metavar="N",
                   help="fleet: trial processes kept warm, one per recently served study (default 3)")
    w.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="fleet: run the trials here (local) or on a Ray cluster through Ray's placement")
    w.add_argument("--address", help="fleet, backend ray: the Ray cluster (auto, host:port, ray://...)")
    w.add_argument("--max-concurrent", type=int, help="fleet, backend ray: trials in flight at most")
    w.set_defaults(func=cmd_worker)

    sb = sub.add_parser("submit", help="create or update the study of a YAML spec and open it to the fleet")
    sb.add_argument("spec", help="YAML spec file")
    storage_arg(sb)
    sb.add_argument("--priority", type=int, default=1, help="higher runs first (0 to 1000, default 1)")
    sb.add_argument("--n-trials", type=int, help="budget of completed trials (default: budget.n_trials)")
    sb.add_argument("--gpu", action="store_true", help="only workers with a GPU may run it")
    sb.add_argument("--require-tag", action="append", help="only workers offering this tag (repeatable)")
    sb.add_argument("--resources", help='what a Ray fleet places each trial with, as JSON: \'{"cpu": 2, "gpu": 1}\'')
    sb.add_argument("--load-if-exists", action="store_true", help="continue a stored study whose spec differs")
    sb.set_defaults(func=cmd_submit)

    wt = sub.add_parser("wait", help="block until a submitted study is done, then print its front")
    wt.add_argument("name", help="study name")
    storage_arg(wt)
    wt.add_argument("--timeout", type=float, help="give up after this many seconds (exit 1)")
    wt.add_argument("--format", choices=["table", "json", "csv"], default="table")
    wt.set_defaults(func=cmd_wait)

    cn = sub.add_parser("cancel", help="stop giving a submitted study new trials (running ones finish)")
    cn.add_argument("name", help="study name")
    storage_arg(cn)
    cn.set_defaults(func=cmd_fleet_state)

    pr = sub.add_parser("priority", help="change a submitted study's priority")
    pr.add_argument("name", help="study name")
    pr.add_argument("priority", type=int, help="0 to 1000; higher runs first")
    storage_arg(pr)
    pr.set_defaults(func=cmd_fleet_state)

    for name, func, helptext in (("ls", cmd_ls, "the submitted studies: state, priority, progress, running, failed"),
                                 ("workers", cmd_workers, "the live fleet workers: host, devices, tags, current trial")):
        sp = sub.add_parser(name, help=helptext)
        storage_arg(sp)
        sp.add_argument("--format", choices=["table", "json", "csv"], default="table")
        sp.set_defaults(func=func)

    for name, func, fmts, helptext in (
        ("status", cmd_status, ["table", "json"], "counts, budget, front size and hypervolume"),
        ("pareto", cmd_pareto, ["table", "json", "csv"], "the feasible Pareto front"),
        ("trials", cmd_trials, ["table", "json", "csv"], "every trial with its state and reason"),
    ):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("name", help="study name")
        storage_arg(sp)
        sp.add_argument("--format", choices=fmts, default="table")
        if name == "trials":
            sp.add_argument("--state", choices=["complete", "duplicate", "fail", "invalid", "running", "waiting"])
        sp.set_defaults(func=func)

    ex = sub.add_parser("export", help="export a trial as a verified deployment bundle (with a Triton repository)")
    ex.add_argument("name", help="study name")
    storage_arg(ex)
    which = ex.add_mutually_exclusive_group(required=True)
    which.add_argument("--pick", help="selection rule on the front: 'max METRIC [where METRIC<=NUMBER, ...]', "
                       "'min METRIC [where ...]' or 'knee'")
    which.add_argument("--trial", type=int, help="trial number")
    ex.add_argument("--out", required=True, help="bundle directory (absent or empty unless --overwrite)")
    ex.add_argument("--tolerance", type=float, default=0.005,
                    help="largest accuracy difference allowed between the recorded and re-measured value")
    ex.add_argument("--cache-dir", help="artifact cache to look in first (default: $PARETOTUNE_CACHE_DIR or ./.paretotune-cache)")
    ex.add_argument("--model-name", help="Triton model name (default: STUDY_trialN)")
    ex.add_argument("--overwrite", action="store_true", help="replace a previous bundle (a directory holding .paretotune-bundle)")
    ex.set_defaults(func=cmd_export)

    cf = sub.add_parser("confirm", help="re-measure trials (default: the front) in fresh processes; median and spread")
    cf.add_argument("name", help="study name")
    storage_arg(cf)
    cf.add_argument("--trials", type=int, nargs="+", help="trial numbers (default: the Pareto front)")
    cf.add_argument("--processes", type=int, default=None, help="fresh processes, each measuring every trial once (default 3)")
    cf.add_argument("--task", help="task import path (default: the one stored with the study)")
    cf.add_argument("--show", action="store_true", help="print the latest stored confirmation instead of measuring")
    cf.add_argument("--no-progress", action="store_true", help="no per-measurement progress lines")
    cf.add_argument("--format", choices=["table", "json", "csv"], default="table")
    cf.set_defaults(func=cmd_confirm)

    ab = sub.add_parser("compare", help="A/B test two trials in fresh processes, interleaved: a verdict per metric")
    ab.add_argument("name", help="study name")
    ab.add_argument("a", type=int, help="trial number A")
    ab.add_argument("b", type=int, help="trial number B")
    storage_arg(ab)
    ab.add_argument("--processes", type=int, default=None, help="fresh processes, each timing A and B interleaved (default 5)")
    ab.add_argument("--task", help="task import path (default: the one stored with the study)")
    ab.add_argument("--no-progress", action="store_true", help="no per-process progress lines")
    ab.add_argument("--format", choices=["text", "json"], default="text")
    ab.set_defaults(func=cmd_compare)

    rp = sub.add_parser("report", help="write a self-contained HTML report (Pareto plots, hypervolume, trials)")
    rp.add_argument("name", help="study name")
    storage_arg(rp)
    rp.add_argument("--out", default="report.html", help="HTML file to write (default: report.html)")
    rp.set_defaults(func=cmd_report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("paretotune").setLevel(level)
    if args.verbose == 0:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return int(args.func(args))
    except (ConfigError, TaskError) as exc:
        print(f"error: {mask(str(exc))}", file=sys.stderr)
        return 2
    except ParetotuneError as exc:
        print(f"error: {mask(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; completed trials are kept in the store", file=sys.stderr)
        return 130
    except Exception as exc:
        detail = _store_error(exc)
        if detail is None:
            raise
        # a store error no library call mapped: one line, never a traceback or a password
        print(f"error: the study store refused the operation: {mask(detail)}", file=sys.stderr)
        return 1


def _store_error(exc: BaseException) -> str | None:
    """The driver's first line for a database error (SQLAlchemy's, or Optuna's wrapping of
    one), else None."""
    import optuna
    import sqlalchemy

    if not isinstance(exc, (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError)):
        return None
    seen: BaseException | None = exc
    while seen is not None:
        orig = getattr(seen, "orig", None)
        if orig is not None:
            return str(orig).strip().splitlines()[0] or type(orig).__name__
        seen = seen.__cause__ or seen.__context__
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


if __name__ == "__main__":
    sys.exit(main())
