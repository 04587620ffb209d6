"""The fleet: one `paretotune worker` serving every study submitted to its store.

A study joins the fleet with `submit` (state OPEN, a priority, and what a worker needs to run
its trials: engines, a GPU, tags). A fleet worker advertises what it has in ``pt_workers``, and
before each trial picks the study it serves next, among the OPEN ones it can run:

- the highest priority first;
- among equal priorities, fair share: the fewest running trials (every worker of the store
  counted), then the fewest trials taken so far, then the oldest submission; a study whose
  trial process is warm keeps the worker while it is at most FAIR_SHARE_SLACK trials ahead.

That choice is all this module decides; where workers run is the business of whatever starts
them (a shell, Kubernetes, Slurm, Ray). Each trial goes the way of `workers.lifecycle`, as in
a single-study worker. A worker keeps a warm trial process for the studies it served last
(``max_warm``) and re-resolves the task when it switches to another.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from paretotune.errors import ConfigError
from paretotune.evaluators.devices import list_gpus, telemetry
from paretotune.search import Study, Trial, TrialState, load_study_from_store
from paretotune.storage import FleetState, StudyStore
from paretotune.workers import lifecycle
from paretotune.workers.executor import TrialExecutor
from paretotune.workers.reaper import reap_stale
from paretotune.workers.retry import DEFAULT_RETRY_WINDOW_S, retry

log = logging.getLogger(__name__)

#: trial processes a fleet worker keeps warm, one per study it served last
DEFAULT_MAX_WARM = 3
#: trials a study whose trial process is warm may run ahead of the least served study of its
#: priority before the worker switches: a switch to a cold study costs a fresh trial process
#: (an interpreter and the task's imports), so strict turns would pay it on every trial
FAIR_SHARE_SLACK = 2
#: a worker whose row has not been refreshed for this long is not listed as live
WORKER_LIVE_S = 60.0
#: priorities allowed at submit
PRIORITY_RANGE = (0, 1000)


# -- what a worker has, what a study needs ------------------------------------------------------
def worker_capabilities(tags: Iterable[str] = ()) -> dict[str, Any]:
    """What this machine offers: cores, GPUs (NVML's names), the engines that run here, tags."""
    from paretotune.evaluators import engines

    available = [e.name for e in engines.registered() if e.problem(has_module=True, is_onnx=False) is None]
    return {
        "cpus": os.cpu_count() or 1,
        "gpus": [g.name for g in list_gpus()],
        "engines": available,
        "tags": sorted(set(tags)),
    }


def study_requirements(study: Study, *, gpu: bool = False, tags: Sequence[str] = ()) -> dict[str, Any]:
    """What a worker needs to run any trial of ``study``: every engine its space can propose
    (a GPU engine implies a GPU), plus a GPU or tags asked for at submit."""
    from paretotune.evaluators import engines

    dim = study.space.dimensions.get("engine")
    names = sorted({str(v) for v in getattr(dim, "choices", ())}) if dim is not None else []
    registered = {e.name: e for e in engines.registered()}
    needs_gpu = gpu or any(registered[n].on_gpu for n in names if n in registered)
    return {"engines": names, "gpu": bool(needs_gpu), "tags": sorted(set(tags))}


def missing(requires: Mapping[str, Any], capabilities: Mapping[str, Any]) -> list[str]:
    """What ``capabilities`` lacks of ``requires`` ([] when the worker can run the study)."""
    out = [f"engine {e}" for e in requires.get("engines", ()) if e not in capabilities.get("engines", ())]
    if requires.get("gpu") and not capabilities.get("gpus"):
        out.append("a GPU")
    out += [f"tag {t!r}" for t in requires.get("tags", ()) if t not in capabilities.get("tags", ())]
    return out


def rank(studies: Sequence[Mapping[str, Any]], capabilities: Mapping[str, Any],
         warm: Sequence[str] = ()) -> list[Mapping[str, Any]]:
    """The OPEN studies this worker can run, in the order it tries them: highest priority, then
    fewest running, then fewest taken, then oldest. ``warm``: the studies whose trial process
    this worker holds, least recently served first; the most recent one that is at most
    FAIR_SHARE_SLACK trials ahead of its peers (same priority and running count) goes first."""
    runnable = [s for s in studies if s["state"] == FleetState.OPEN and not missing(s["requires"], capabilities)]
    ordered = sorted(runnable, key=lambda s: (-s["priority"], s["running"], s["running"] + s["done"], s["submitted_at"]))
    if not ordered or not warm:
        return ordered
    best = ordered[0]
    peers = [s for s in ordered if (s["priority"], s["running"]) == (best["priority"], best["running"])]
    for name in reversed(warm):
        current = next((s for s in peers if s["name"] == name), None)
        others = [s["running"] + s["done"] for s in peers if s is not current]
        if current is not None and (not others or current["running"] + current["done"] <= min(others) + FAIR_SHARE_SLACK):
            return [current, *(s for s in ordered if s is not current)]
    return ordered


def waiting_for(row: Mapping[str, Any], workers: Sequence[Mapping[str, Any]]) -> str | None:
    """Why no live worker can run this OPEN study, or None when one can."""
    if row["state"] != FleetState.OPEN:
        return None
    gaps = [missing(row["requires"], w["capabilities"]) for w in workers]
    if any(not g for g in gaps):
        return None
    needs = missing(row["requires"], {})
    return f"waits for a worker with {', '.join(needs)}" if needs else "waits for a worker"


def check_priority(value: Any, field_name: str = "priority") -> int:
    low, high = PRIORITY_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{field_name} must be an integer from {low} to {high}, got {value!r}")
    return value


# -- metrics --------------------------------------------------------------------------------------
class FleetMetrics:
    """The worker's Prometheus metrics (`prometheus_client`), served on ``port``."""

    def __init__(self, port: int, addr: str = "0.0.0.0") -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            start_http_server,
        )

        self.registry = CollectorRegistry()
        self.trials = Counter("paretotune_trials", "Trials this worker finished, by study and state",
                              ["study", "state"], registry=self.registry)
        self.duration = Histogram("paretotune_trial_duration_seconds", "Wall time of one trial, ask to tell",
                                  ["study"], registry=self.registry,
                                  buckets=(0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800))
        self.phases = Counter("paretotune_trial_phase_seconds", "Seconds spent building, timing and "
                              "measuring accuracy", ["phase"], registry=self.registry)
        self.gpu_util = Gauge("paretotune_gpu_utilization_ratio", "GPU utilization during the last trial (0-1)",
                              registry=self.registry)
        self.gpu_memory = Gauge("paretotune_gpu_memory_used_bytes", "GPU memory in use during the last trial",
                                registry=self.registry)
        self.server, self.thread = start_http_server(port, addr=addr, registry=self.registry)
        self.port = int(self.server.server_address[1])

    def observe(self, study: str, trial: Trial, outcome: lifecycle.Outcome, seconds: float) -> None:
        self.trials.labels(study=study, state=trial.state.value).inc()
        self.duration.labels(study=study).observe(seconds)
        phases = outcome.details.get("phases_s") or {}
        for phase, key in (("build", "build"), ("timing", "measure"), ("accuracy", "accuracy")):
            if isinstance(phases.get(key), (int, float)):
                self.phases.labels(phase=phase).inc(float(phases[key]))
        if "gpu_util" in outcome.metrics:
            self.gpu_util.set(float(outcome.metrics["gpu_util"]) / 100.0)
        if "gpu_memory_bytes" in outcome.metrics:
            self.gpu_memory.set(float(outcome.metrics["gpu_memory_bytes"]))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the worker -----------------------------------------------------------------------------------
@dataclass
class FleetStats:
    """What one fleet worker did, per study: trial states counted."""

    by_study: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, study: str, state: TrialState) -> None:
        counts = self.by_study.setdefault(study, {})
        counts[state.value] = counts.get(state.value, 0) + 1

    def total(self, state: TrialState) -> int:
        return sum(c.get(state.value, 0) for c in self.by_study.values())


class _Row(threading.Thread):
    """Refreshes the worker's row in ``pt_workers`` (what it runs now) from a thread."""

    def __init__(self, store: StudyStore, worker: str, interval_s: float) -> None:
        super().__init__(name="paretotune-fleet-row", daemon=True)
        self.store, self.worker, self.interval = store, worker, interval_s
        self.current: tuple[str | None, int | None] = (None, None)
        self._stop_event = threading.Event()

    def set(self, study: str | None, trial_number: int | None) -> None:
        self.current = (study, trial_number)
        self.beat()

    def beat(self) -> None:
        try:
            self.store.worker_beat(self.worker, *self.current)
        except Exception as exc:  # an outage only pauses it
            log.debug("worker row not refreshed: %s", exc)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.beat()

    def close(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


class FleetWorker:
    """Serve every OPEN study of ``storage`` until ``stop`` is set, or (``exit_when_idle_s``)
    nothing was runnable for that long."""

    def __init__(
        self,
        storage: str | StudyStore,
        *,
        worker: str | None = None,
        tags: Iterable[str] = (),
        metrics_port: int | None = None,
        max_warm: int = DEFAULT_MAX_WARM,
        trial_timeout_s: float | None = None,
        retry_window_s: float = DEFAULT_RETRY_WINDOW_S,
        evaluators: Mapping[str, Callable[..., Any]] | None = None,
    ) -> None:
        w = retry_window_s
        self.store = storage if isinstance(storage, StudyStore) else retry(StudyStore, storage, what="connect",
                                                                           window_s=w)
        self.worker = worker or lifecycle.worker_id("fleet")
        self.capabilities = worker_capabilities(tags)
        self.window_s = w
        self.max_warm = max(1, max_warm)
        self.trial_timeout_s = trial_timeout_s
        #: evaluators by study name, for studies whose task is not an import path (tests, notebooks)
        self.evaluators = dict(evaluators or {})
        self.metrics = FleetMetrics(metrics_port) if metrics_port is not None else None
        self.stats = FleetStats()
        self._studies: dict[str, Study] = {}
        self._executors: OrderedDict[str, TrialExecutor] = OrderedDict()
        #: studies this worker cannot run (its task does not load here), with why
        self.cannot: dict[str, str] = {}

    def _study(self, name: str) -> Study:
        if name not in self._studies:
            study = retry(load_study_from_store, name, self.store, worker=self.worker, what="load study",
                          window_s=self.window_s)

            def reap_now() -> None:
                retry(reap_stale, study, study.worker_grace_s, what="reap", window_s=self.window_s)

            study.on_wait = reap_now
            self._studies[name] = study
        return self._studies[name]

    def _executor(self, study: Study) -> TrialExecutor:
        """The study's warm trial process; the least recently served one is closed beyond max_warm."""
        name = study.name
        if name in self._executors:
            self._executors.move_to_end(name)
            return self._executors[name]
        from paretotune.workers.pool import resolve_evaluator

        log.info("worker %s: serving study %r (task %s)", self.worker, name, study.task_path)
        evaluator = resolve_evaluator(study, self.evaluators.get(name))
        timeout = self.trial_timeout_s if self.trial_timeout_s is not None else study.trial_timeout_s
        self._executors[name] = TrialExecutor(evaluator, timeout_s=timeout)
        while len(self._executors) > self.max_warm:
            _, old = self._executors.popitem(last=False)
            old.close()
        return self._executors[name]

    def _next(self, heartbeat: lifecycle.Heartbeat) -> tuple[Study, lifecycle.Claimed, int] | None:
        """Claim a trial of the study to serve next, or None when none is runnable now."""
        rows = retry(self.store.fleet_studies, FleetState.OPEN, what="status", window_s=self.window_s)
        for row in rank(rows, self.capabilities, list(self._executors)):
            target = row["target"]
            if not target or row["name"] in self.cannot:
                continue
            study = self._study(row["name"])
            try:
                self._executor(study)  # the task loads here before a trial is claimed for it
            except Exception as exc:  # this worker cannot run it: the study is not failed for that
                self.cannot[study.name] = f"{type(exc).__name__}: {exc}"
                log.warning("worker %s cannot run study %r, leaving it to other workers: %s",
                            self.worker, study.name, self.cannot[study.name])
                continue
            if not retry(study.baseline_gate, what="status", window_s=self.window_s):
                continue  # another worker runs its baseline: serve someone else meanwhile
            claimed = lifecycle.claim_trial(study, self.worker, target, self.window_s, heartbeat)
            if claimed is not None:
                return study, claimed, target
            if not lifecycle.budget_left(study, target, self.window_s):
                lifecycle.mark_done(study, self.window_s)
                log.info("study %r is done (%s)", study.name, self.store.stopped_reason(study.name) or
                         f"{target} completed trials")
        return None

    def _reap(self) -> None:
        """Reap the lost workers' trials of every OPEN study (an idle worker's chore)."""
        for row in retry(self.store.fleet_studies, FleetState.OPEN, what="status", window_s=self.window_s):
            study = self._study(row["name"])
            retry(reap_stale, study, study.worker_grace_s, what="reap", window_s=self.window_s)

    def _run_one(self, study: Study, claimed: lifecycle.Claimed, target: int, heartbeat: lifecycle.Heartbeat,
                 row: _Row) -> None:
        started = time.monotonic()
        row.set(study.name, claimed.pending.number)
        trial: Trial | None = None
        try:
            executor = self._executor(study)
            with telemetry() as gpu:
                outcome = executor.run(claimed.pending.config)
            outcome = outcome.with_extras(gpu, {"worker": self.worker})
            trial = lifecycle.tell(study, claimed.pending, outcome, self.window_s)
        except KeyboardInterrupt as exc:
            if trial is None:
                study.tell_failure_by_number(claimed.pending.number,
                                             f"interrupted ({getattr(exc, 'signame', 'SIGINT')})")
            raise
        except Exception as exc:  # the evaluator cannot be resolved here, say: the trial fails, not the fleet
            log.warning("study %r trial %d: %s: %s", study.name, claimed.pending.number, type(exc).__name__, exc)
            if trial is None:
                outcome = lifecycle.Outcome.failed(f"{type(exc).__name__}: {exc}")
                trial = lifecycle.tell(study, claimed.pending, outcome, self.window_s)
        finally:
            heartbeat.release(claimed.claim)
            row.set(None, None)
            if trial is None:
                lifecycle.release(study, claimed.claim)
        if trial is None:  # pragma: no cover - every path above tells the trial or raises
            return
        if lifecycle.finish(study, claimed.claim, trial, target, self.window_s):
            retry(self.store.set_fleet, study.name, state=FleetState.DONE, what="status", window_s=self.window_s)
        self.stats.add(study.name, trial.state)
        if self.metrics is not None:
            self.metrics.observe(study.name, trial, outcome, time.monotonic() - started)

    def run(self, *, stop: threading.Event | None = None, exit_when_idle_s: float | None = None) -> FleetStats:
        host = socket.gethostname()
        retry(self.store.register_worker, self.worker, host, os.getpid(), self.capabilities,
              what="register", window_s=self.window_s)
        interval = lifecycle.heartbeat_interval(20.0)
        heartbeat = lifecycle.Heartbeat(self.store, interval, name="paretotune-fleet-heartbeat")
        row = _Row(self.store, self.worker, interval)
        row.start()
        idle_since: float | None = None
        try:
            while stop is None or not stop.is_set():
                found = self._next(heartbeat)
                if found is None:
                    now = time.monotonic()
                    idle_since = idle_since or now
                    if exit_when_idle_s is not None and now - idle_since >= exit_when_idle_s:
                        break
                    self._reap()
                    time.sleep(lifecycle.IDLE_POLL_S)
                    continue
                idle_since = None
                self._run_one(*found, heartbeat, row)
        finally:
            for executor in self._executors.values():
                executor.close()
            heartbeat.close()
            row.close()
            try:
                self.store.retire_worker(self.worker)
            except Exception as exc:
                log.warning("could not mark worker %s stopped: %s", self.worker, exc)
            if self.metrics is not None:
                self.metrics.close()
        return self.stats


def submit(study: Study, *, priority: int = 1, n_trials: int, gpu: bool = False,
           tags: Sequence[str] = (), resources_per_trial: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Open ``study`` to the fleet with a budget of ``n_trials`` completed trials; returns
    what a worker needs to run it. Queues the baseline, so the first worker takes it.
    ``resources_per_trial`` (``{"cpu": 4, "gpu": 1}``) is what a Ray fleet places each trial with."""
    check_priority(priority)
    from paretotune.workers.pool import check_int

    check_int("n_trials", n_trials, 1)
    requires = study_requirements(study, gpu=gpu, tags=tags)
    if resources_per_trial is not None:
        from paretotune.workers.ray_backend import normalize_resources  # needs paretotune[ray]

        requires["resources"] = normalize_resources(resources_per_trial)
        requires["gpu"] = requires["gpu"] or requires["resources"].get("GPU", 0) > 0
    study.store.clear_stop(study.name)
    study.store.set_target(study.name, n_trials)
    study.enqueue_baseline()
    study.store.submit(study.name, priority, requires)
    return requires
