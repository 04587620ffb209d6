"""The fleet on a Ray cluster: `paretotune worker --backend ray` serves every submitted study.

The driver runs one Ray Tune experiment whose searcher (`FleetSearcher`) picks, at each
``suggest``, the study to serve next with the fleet's own choice (`fleet.rank`: priority, fair
share, what the cluster has), claims and asks a trial of it, and tells the outcome to that
study. Ray places each trial with the resources its study was submitted with
(``submit(..., resources_per_trial=...)``, default one CPU); an actor resolves the study's task
from the store and keeps a warm trial process per study. Everything the single-study Ray
backend does about Tune's pitfalls holds here too (`ray_backend`).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable
from typing import Any

from paretotune.search import Study, load_study_from_store
from paretotune.storage import FleetState, StudyStore
from paretotune.workers import lifecycle
from paretotune.workers.executor import TrialExecutor
from paretotune.workers.fleet import rank, worker_capabilities
from paretotune.workers.ray_backend import (
    DEFAULT_RESOURCES,
    STUDY_KEY,
    StudySearcher,
    _quiet_tune,
    _trial_name,
    report_outcome,
)
from paretotune.workers.reaper import reap_stale
from paretotune.workers.retry import retry

log = logging.getLogger(__name__)


class FleetSearcher(StudySearcher):
    """A Tune searcher over every OPEN study of the store, not one."""

    def __init__(self, storage_url: str, *, capabilities: dict[str, Any], driver: str | None = None,
                 exit_when_idle_s: float | None = None, **kwargs: Any) -> None:
        self.capabilities = capabilities
        self.exit_when_idle_s = exit_when_idle_s
        super().__init__(storage_url, "", 0, driver=driver or lifecycle.worker_id("ray-fleet"), **kwargs)

    def _init_runtime(self) -> None:
        super()._init_runtime()
        self._studies: dict[str, Study] = {}
        self._idle_since: float | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "capabilities": self.capabilities, "exit_when_idle_s": self.exit_when_idle_s}

    def _load(self, name: str) -> Study:
        if name not in self._studies:
            self._studies[name] = self._retry(load_study_from_store, name, self.store, worker=self.driver,
                                              what="load study")
        return self._studies[name]

    def _claim_next(self, trial_id: str, now: float) -> dict[str, Any] | str | None:
        from ray.tune.search import Searcher

        heartbeat = self._start_heartbeat(20.0)
        rows = self._retry(self.store.fleet_studies, FleetState.OPEN, what="status")
        for row in rank(rows, self.capabilities):
            if not row["target"]:
                continue
            study = self._load(row["name"])
            if not self._retry(study.baseline_gate, what="status"):
                continue
            claimed = lifecycle.claim_trial(study, self.driver, row["target"], self.retry_window_s, heartbeat)
            if claimed is not None:
                self._idle_since = None
                return self._hand_out(trial_id, study, claimed, row["target"])
            if not lifecycle.budget_left(study, row["target"], self.retry_window_s):
                lifecycle.mark_done(study, self.retry_window_s)
        self._idle_since = self._idle_since or now
        if (self.exit_when_idle_s is not None and now - self._idle_since >= self.exit_when_idle_s
                and not self.held_claims()):
            self.finished = True
            return Searcher.FINISHED
        for row in rows:  # trials of lost workers free their budget slots
            study = self._load(row["name"])
            self._retry(reap_stale, study, study.worker_grace_s, what="reap")
        self._next_claim_at = now + lifecycle.IDLE_POLL_S
        return None

    def _study_stopped(self, study: Study) -> None:
        """One study stopped on its failures: the fleet goes on with the others."""
        self._retry(self.store.set_fleet, study.name, state=FleetState.DONE, what="status")


# -- inside a Ray actor ---------------------------------------------------------------------------
_executors: dict[tuple[str, str], TrialExecutor] = {}


def _study_executor(storage_url: str, name: str) -> TrialExecutor:
    """The actor's warm trial process for study ``name`` (its task resolved from the store)."""
    from paretotune.workers.pool import resolve_evaluator

    key = (name, os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    if key not in _executors:
        for old_key in [k for k in _executors if k[0] == name]:
            _executors.pop(old_key).close()
        study = load_study_from_store(name, StudyStore(storage_url, create=False))
        _executors[key] = TrialExecutor(resolve_evaluator(study, None), timeout_s=study.trial_timeout_s)
    return _executors[key]


def fleet_ray_trial(config: dict[str, Any], storage_url: str) -> None:
    """The Tune trainable of the fleet: one trial of the study the searcher chose."""
    report_outcome(config, lambda: _study_executor(storage_url, config[STUDY_KEY]))


@functools.lru_cache(maxsize=8)
def _store(storage_url: str) -> StudyStore:
    """One store (and connection pool) per URL in the driver, for the per-trial resource reads."""
    return StudyStore(storage_url, create=False)


def _requires(storage_url: str, name: str) -> dict[str, Any]:
    """What the study needs now: read per trial, so a study submitted again with other
    resources is placed with those."""
    rows = {r["name"]: r for r in _store(storage_url).fleet_studies()}
    return dict(rows[name]["requires"]) if name in rows else {}


def study_resources(storage_url: str, config: dict[str, Any]) -> Any:
    """Tune's per-trial resources: the ones the trial's study was submitted with."""
    from ray.tune import PlacementGroupFactory

    resources = _requires(storage_url, config[STUDY_KEY]).get("resources") or DEFAULT_RESOURCES
    return PlacementGroupFactory([dict(resources)])


# -- the driver -----------------------------------------------------------------------------------
def run_ray_fleet(storage_url: str, *, address: str | None = None, tags: Iterable[str] = (),
                  max_concurrent: int | None = None, exit_when_idle_s: float | None = None,
                  runtime_env: dict[str, Any] | None = None) -> FleetSearcher:
    """Serve every submitted study of the store on a Ray cluster until stopped (Ctrl-C), or
    ``exit_when_idle_s`` seconds with nothing runnable. Returns the searcher (its ``asked``)."""
    import ray
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    owns_ray = not ray.is_initialized()
    if owns_ray:
        ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING)
    store = StudyStore(storage_url, create=False)
    capabilities = worker_capabilities(tags)
    cluster = ray.cluster_resources()
    capabilities["gpus"] = ["ray GPU"] * int(cluster.get("GPU", 0))  # Ray places; names are the nodes'
    capabilities["cpus"] = int(cluster.get("CPU", 0))
    searcher = FleetSearcher(storage_url, capabilities=capabilities, exit_when_idle_s=exit_when_idle_s)
    searcher.attach(store)
    limit = max_concurrent or max(1, capabilities["cpus"])
    retry(store.register_worker, searcher.driver, socket.gethostname(), os.getpid(),
          {**capabilities, "backend": "ray"}, what="register", window_s=searcher.retry_window_s)
    storage_path = tempfile.mkdtemp(prefix="paretotune-ray-fleet-")
    log.info("fleet on Ray: %s, %d trials in flight at most", capabilities, limit)
    try:
        trainable = tune.with_resources(tune.with_parameters(fleet_ray_trial, storage_url=storage_url),
                                        resources=functools.partial(study_resources, storage_url))
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(searcher, max_concurrent=limit), num_samples=-1,
                reuse_actors=True, trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(name=f"paretotune-{searcher.driver}", storage_path=storage_path, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
        with _quiet_tune():
            try:
                tuner.fit()
            finally:
                searcher.abandon("the Ray fleet driver stopped before this trial was told")
                searcher.close()
    finally:
        shutil.rmtree(storage_path, ignore_errors=True)
        store.retire_worker(searcher.driver)
        if owns_ray:
            ray.shutdown()
    if searcher.error is not None:
        raise searcher.error
    return searcher


__all__ = ["FleetSearcher", "fleet_ray_trial", "run_ray_fleet", "study_resources"]
