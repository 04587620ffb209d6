"""Running a study: the local process pool, the progress display, and backend dispatch."""

from __future__ import annotations

import logging
import os
import pickle
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import cloudpickle

from paretotune.errors import ConfigError, StudyError
from paretotune.search import Study, TrialState
from paretotune.workers.lifecycle import PROGRESS_POLL_S, Monitor
from paretotune.workers.loop import run_worker
from paretotune.workers.reaper import reap_stale, settle_unclaimed

log = logging.getLogger(__name__)

BACKENDS = ("local", "ray")


def study_task(study: Study, given: Any = None, *, purpose: str = "an evaluator must be given",
               need_task: bool = False) -> Any:
    """The task (or evaluator) behind ``given``, else the one attached at creation, else the
    import path stored with the study, loaded (`evaluators.resolve_task`). Raises ConfigError
    naming ``purpose`` when there is none, or (``need_task``) when it is not a ``pt.Task``."""
    from paretotune.evaluators import Task, resolve_task

    if given is None:
        given = study.task
    if given is None:
        if not study.task_path:
            raise ConfigError(f"study {study.name!r} stores no task import path, so {purpose}")
        given = study.task_path
    task, _ = resolve_task(given)
    if need_task and not isinstance(task, Task):
        raise ConfigError(
            f"{purpose}: a pt.Task is needed, got {type(task).__name__} (task={study.task_path!r})"
        )
    return task


def resolve_evaluator(study: Study, evaluator: Any) -> Callable[..., Any]:
    """A ``pt.Task``, an import path, any callable, or None (the task stored with the study).

    A study whose objectives and constraints don't use ``speedup`` times no reference beside
    its trials (``reference="none"``: half the timing); one that does gets the paired speedup."""
    from paretotune.evaluators import as_evaluator

    needs_speedup = "speedup" in study.objectives or any(c.metric == "speedup" for c in study.constraints)
    return as_evaluator(study_task(study, evaluator), scenario=study.scenario,
                        reference="paired" if needs_speedup else "none")


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
        maximum is not None and value > maximum
    ):
        allowed = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ConfigError(f"{name} must be an integer {allowed}, got {value!r}")
    return value


#: local worker processes per core at most (trials mostly wait on the timing slot and on builds,
#: so a few per core still make progress; thousands would only exhaust the machine)
WORKERS_PER_CORE = 4
#: the cap never drops below this, so small machines can still run the test-sized fleets
MIN_WORKER_CAP = 8


def max_local_workers() -> int:
    """The most local worker processes one study may start: 4 per core, at least 8."""
    return max(MIN_WORKER_CAP, WORKERS_PER_CORE * (os.cpu_count() or 1))


def check_budget(
    n_trials: Any, n_workers: Any, backend: str = "local", *,
    trials_field: str = "n_trials", workers_field: str = "n_workers",
) -> None:
    """Refuse a budget before anything is stored or started (field, value and allowed range).
    Local workers are processes on this machine, so their number is capped (max_local_workers)."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    check_int(trials_field, n_trials, 1)
    check_int(workers_field, n_workers, 1, max_local_workers() if backend == "local" else None)


class Progress:
    """A progress bar of completed trials, with running/failed counts and the front size."""

    def __init__(self, study: Study, total: int, enabled: bool | None) -> None:
        self.study = study
        self.total = total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar: Any = None
        size = study.space.size(at_most=total)
        #: a budget larger than a finite space re-measures configs: the bar says so
        self.beyond_space = size is not None and size < total
        if self.enabled:
            from tqdm import tqdm

            desc = f"{study.name} (space of {size} configs: re-measuring)" if self.beyond_space else study.name
            self._bar = tqdm(total=total, desc=desc, unit="trial", dynamic_ncols=True, file=sys.stderr)

    def update(self) -> None:
        if self._bar is None:
            return
        counts = self.study.counts()
        self._bar.n = min(counts[TrialState.COMPLETE.value], self.total)
        self._bar.set_postfix(
            running=counts[TrialState.RUNNING.value],
            failed=counts[TrialState.FAIL.value],
            invalid=counts[TrialState.INVALID.value],
            front=len(self.study.pareto_front()),
            refresh=False,
        )
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self.update()
            self._bar.close()


MAX_RESPAWNS = 10
#: seconds the pool gives its workers to record their trials after Ctrl-C, before SIGTERM
INTERRUPT_GRACE_S = 5.0


def _settle_interrupted(study: Study, pids: list[int], signame: str) -> None:
    """FAIL the trials our stopped workers still held (a worker killed mid-tell), so that no
    trial stays RUNNING after Ctrl-C, and give their claims back."""
    prefixes = tuple(f"pool-{socket.gethostname()}-{pid}-" for pid in pids)
    try:
        for claim in study.store.active_claims(study.name):
            if not str(claim["worker"]).startswith(prefixes):
                continue
            completed = False
            number = claim["trial_number"]
            if number is not None and not study.tell_failure_by_number(number, f"interrupted ({signame})"):
                completed = study.trial(number).state == TrialState.COMPLETE  # it finished first
            study.store.finish_claim_forced(claim["id"], completed=completed)
    except Exception as exc:  # the store is gone: the reaper settles them on the next run
        log.debug("could not settle interrupted trials: %s", exc)


def _spawn_worker(args: bytes, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "paretotune.workers._entry", "worker"], stdin=subprocess.PIPE, env=env
    )
    if proc.stdin is not None:
        proc.stdin.write(args)
        proc.stdin.close()
    return proc


def seed_stream(i: int) -> str:
    """The sampler seed stream of the pool's ``i``-th worker (`run_worker`'s ``seed_stream``)."""
    return f"local-{i}"


def run_local(
    study: Study,
    evaluator: Callable[..., Any],
    *,
    n_trials: int,
    n_workers: int,
    trial_timeout_s: float | None,
    show_progress: bool | None,
) -> None:
    progress = Progress(study, n_trials, show_progress)
    try:
        monitor = Monitor(study, progress)
        if n_workers == 1:
            with monitor:
                run_worker(study.store, study.name, evaluator, n_trials=n_trials, trial_timeout_s=trial_timeout_s,
                           seed_stream=seed_stream(0))
            return
        common = {
            "storage": study.store.url,
            "study": study.name,
            "evaluator": cloudpickle.dumps(evaluator),
            "n_trials": n_trials,
            "trial_timeout_s": trial_timeout_s,
        }

        def args(i: int) -> bytes:
            return pickle.dumps({**common, "seed_stream": seed_stream(i)})

        env = dict(os.environ)
        env.setdefault(
            "PARETOTUNE_LOG_LEVEL", logging.getLevelName(logging.getLogger("paretotune").getEffectiveLevel())
        )
        env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # CUDA's GPU numbers = NVML's (telemetry)
        procs = [_spawn_worker(args(i), env) for i in range(n_workers)]
        respawns = 0
        try:
            while any(p.poll() is None for p in procs):
                time.sleep(PROGRESS_POLL_S)
                monitor.tick()
                for i, p in enumerate(procs):
                    # A worker that died (OOM-killed, say) while the budget is open is replaced;
                    # its trial is reaped after the grace period and retried.
                    if p.poll() is not None and p.returncode < 0 and respawns < MAX_RESPAWNS * n_workers:
                        log.warning("worker process %d was killed by signal %d; starting a new one",
                                    p.pid, -p.returncode)
                        respawns += 1
                        procs[i] = _spawn_worker(args(n_workers - 1 + respawns), env)  # a stream of its own
        except BaseException as exc:
            # Ctrl-C reached the workers too (one process group): let them record their trials
            # as interrupted before the rest are stopped; then settle what they left RUNNING.
            deadline = time.monotonic() + INTERRUPT_GRACE_S
            while isinstance(exc, KeyboardInterrupt) and time.monotonic() < deadline and any(
                p.poll() is None for p in procs
            ):
                time.sleep(0.05)
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if isinstance(exc, KeyboardInterrupt):
                _settle_interrupted(study, [p.pid for p in procs], "SIGINT")
            raise
        for p in procs:
            if p.returncode != 0:
                log.warning("worker process %d exited with code %s", p.pid, p.returncode)
        monitor.tick()
    finally:
        progress.close()


def run_study(
    study: Study,
    evaluator: Any,
    *,
    n_trials: int,
    n_workers: int = 1,
    backend: str = "local",
    trial_timeout_s: float | None = None,
    show_progress: bool | None = None,
    **backend_options: Any,
) -> None:
    """Drive ``study`` until it holds ``n_trials`` completed trials (baseline included)."""
    check_budget(n_trials, n_workers, backend)
    evaluator = resolve_evaluator(study, evaluator)
    study.store.clear_stop(study.name)
    study.store.set_target(study.name, n_trials)
    reap_stale(study, study.worker_grace_s)
    study.enqueue_baseline()
    started = time.monotonic()
    done_before = study.counts()[TrialState.COMPLETE.value]
    if done_before >= n_trials:
        log.info("study %r already holds %d completed trials (budget %d)", study.name, done_before, n_trials)
        return
    size = study.space.size(at_most=n_trials)
    if size is not None and size < n_trials:
        log.warning("study %r: the space holds %d configs, fewer than the budget of %d; configs are "
                    "measured again once every one has been tried", study.name, size, n_trials)
    if backend == "ray":
        from paretotune.workers.ray_backend import run_ray

        if n_workers > 1:
            backend_options.setdefault("max_concurrent", n_workers)
        backend_options.setdefault("show_progress", show_progress)
        run_ray(study, evaluator, n_trials=n_trials, trial_timeout_s=trial_timeout_s, **backend_options)
    else:
        if backend_options:
            raise ConfigError(f"backend 'local' takes no options, got {sorted(backend_options)}")
        run_local(
            study, evaluator, n_trials=n_trials, n_workers=n_workers,
            trial_timeout_s=trial_timeout_s, show_progress=show_progress,
        )
    stop = study.store.stopped(study.name)
    if stop is not None or study.counts()[TrialState.COMPLETE.value] >= n_trials:
        settle_unclaimed(study)  # finished: a trial asked but never claimed is not left RUNNING
    if stop is not None and stop.is_error:
        raise StudyError(f"study {study.name!r} stopped: {stop.reason}")
    if stop is not None:
        log.info("study %r finished: %s", study.name, stop.reason)
    reason = None if stop is None else stop.reason
    counts = study.counts()
    if counts["COMPLETE"] < n_trials and not reason:
        raise StudyError(
            f"study {study.name!r}: the workers stopped with {counts['COMPLETE']} of {n_trials} "
            f"completed trials; see their log lines above (a worker that cannot import the "
            f"evaluator, say). Run again to resume."
        )
    log.info(
        "study %r: %d completed, %d failed, %d invalid, %d duplicate proposals answered from "
        "earlier measurements in %.1f s",
        study.name, counts["COMPLETE"], counts["FAIL"], counts["INVALID"], counts["DUPLICATE"],
        time.monotonic() - started,
    )
