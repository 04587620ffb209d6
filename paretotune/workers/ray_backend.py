"""The Ray backend: a study run through Ray Tune's ``Tuner``, with the study's own sampler.

The driver asks and tells the study through a narrow Tune ``Searcher`` (`StudySearcher`), so
every trial lands in the study store with the same states and reasons as with the local pool;
Ray only places and runs evaluations. The known pitfalls of Ray Tune with Optuna, and what
this module does about each:

- **Per-trial overhead** (ray-project/ray#46965). Tune's ``OptunaSearch`` is not used: the
  searcher is a few store calls per trial, trial actors are reused (``reuse_actors``), each
  actor keeps its warm trial process, and Tune's per-trial loggers and experiment snapshots
  are off. ``benchmarks/ray_overhead.py`` measures what is left.
- **Random start-up floods** (ray#52535). Tune asks a searcher for as many trials as it may
  queue, so a sampler sees dozens of trials before any completes and samples them all at
  random. A ``ConcurrencyLimiter`` sized to what the cluster can place (and never above the
  remaining budget) bounds the trials in flight, and budget claims bound the total. TPE's
  ``constant_liar`` handles the trials still running.
- **Restore** (ray#30861). ``Tuner.restore`` loses a searcher's state, so it is not used. The
  study store is the state: run the study again (same budget) and it resumes. Trials of a
  killed driver stop heartbeating, are failed as "worker lost" and re-queued by the reaper.
- **Schedulers are single-objective** (ray#8018). ASHA, HyperBand, PBT and median stopping
  rank trials on one metric, and a paretotune evaluation reports once, at its end, so there
  is nothing to stop early. Only FIFO is accepted.

A trial runs in a Ray actor that holds the resources of ``resources_per_trial``; the actor
runs the evaluator in a `TrialExecutor` child (timeouts, crashes and reasons as in the local
pool) with ``CUDA_VISIBLE_DEVICES`` set to exactly the GPUs Ray assigned.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
from ray.tune.search import Searcher

from paretotune.errors import ConfigError, StudyError
from paretotune.evaluators.devices import describe_devices, telemetry
from paretotune.search import Study, TrialState, load_study_from_store
from paretotune.search.trial import PendingTrial, Trial
from paretotune.space import Config
from paretotune.storage import StudyStore
from paretotune.storage.retry import DEFAULT_RETRY_WINDOW_S, retry
from paretotune.workers import lifecycle
from paretotune.workers.executor import TrialExecutor
from paretotune.workers.lifecycle import Heartbeat, Outcome
from paretotune.workers.pool import Progress, check_int

log = logging.getLogger(__name__)

#: keys of the config a suggested trial carries to its actor, and of the result it reports
TRIAL_KEY, CONFIG_KEY, RESULT_KEY, STUDY_KEY = "pt_trial", "pt_config", "pt_result", "pt_study"
#: schedulers accepted by ``scheduler=``: FIFO only (see the module docstring)
SCHEDULERS = (None, "fifo")
DEFAULT_RESOURCES: dict[str, float] = {"CPU": 1.0}
#: Tune settings that cut per-trial work the study store already does
TUNE_ENV = {
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no CSV/JSON/TensorBoard file per trial
    "TUNE_GLOBAL_CHECKPOINT_S": "86400",  # no experiment snapshots: the store is the state
    "TUNE_WARN_THRESHOLD_S": "60",
    "RAY_AIR_NEW_OUTPUT": "0",  # the legacy reporter honours verbose=0: the CLI shows progress
}
#: Tune loggers turned down during a run (the per-trial result files are off on purpose)
QUIET_LOGGERS = {"ray.tune": logging.WARNING, "ray.tune.analysis.experiment_analysis": logging.ERROR}
RAY_OPTIONS = ("address", "resources_per_trial", "max_concurrent", "scheduler", "runtime_env", "show_progress")


# -- options ------------------------------------------------------------------------------------
def normalize_resources(resources: Mapping[str, Any] | None) -> dict[str, float]:
    """``{"cpu": 4, "gpu": 1}`` -> Ray's names ``{"CPU": 4.0, "GPU": 1.0}``; custom names kept."""
    if resources is None:
        return dict(DEFAULT_RESOURCES)
    if not isinstance(resources, Mapping):
        raise ConfigError(
            f"resources_per_trial must be a mapping such as {{'cpu': 1, 'gpu': 1}}, got {resources!r}"
        )
    out: dict[str, float] = {}
    for key, value in resources.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"resources_per_trial: resource names must be strings, got {key!r}")
        name = {"cpu": "CPU", "gpu": "GPU", "memory": "memory"}.get(key.lower(), key)
        if name in out:
            raise ConfigError(f"resources_per_trial: {key!r} is given twice (as {name!r})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"resources_per_trial[{key!r}] must be a number >= 0, got {value!r}")
        if name == "GPU" and value > 1 and value != int(value):
            raise ConfigError(f"resources_per_trial['gpu'] above 1 must be a whole number, got {value!r}")
        out[name] = float(value)
    out.setdefault("CPU", DEFAULT_RESOURCES["CPU"])
    if not any(out.values()):
        raise ConfigError(f"resources_per_trial asks for nothing ({dict(resources)!r}); give at least one cpu")
    return out


def placeable_trials(resources: Mapping[str, float], nodes: Sequence[Mapping[str, float]]) -> int:
    """How many trials needing ``resources`` the given nodes hold at once (one trial sits on
    one node, so it is counted per node)."""
    total = 0
    for node in nodes:
        fits = [math.floor(node.get(name, 0.0) / need + 1e-9) for name, need in resources.items() if need > 0]
        total += min(fits) if fits else 0
    return total


def check_scheduler(study: Study, scheduler: Any) -> None:
    if scheduler in SCHEDULERS:
        return
    n = len(study.objectives)
    if n > 1:
        why = (
            f"study {study.name!r} has {n} objectives {list(study.objectives)}, and Ray Tune's "
            "trial schedulers (ASHA, HyperBand, PBT, median stopping) rank trials on a single "
            "metric (ray-project/ray#8018): no multi-objective early stopping exists there"
        )
    else:
        why = "a paretotune evaluation reports once, at its end, so a scheduler has nothing to stop early"
    raise ConfigError(f"scheduler={scheduler!r} is not supported: {why}; allowed: None or 'fifo'")


@contextlib.contextmanager
def _quiet_tune() -> Iterator[None]:
    """For the duration of a run: Tune settings the user hasn't set, and quieter Tune loggers."""
    added = [k for k in TUNE_ENV if k not in os.environ]
    for k in added:
        os.environ[k] = TUNE_ENV[k]
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name, level in QUIET_LOGGERS.items():
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < level:
            logger.setLevel(level)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


# -- the trial, inside a Ray actor ----------------------------------------------------------------
_executor_key: tuple[str, float | None, str] | None = None
_executor: TrialExecutor | None = None


def _trial_executor(payload: bytes, timeout_s: float | None) -> TrialExecutor:
    """The actor's warm trial process, restarted when the evaluator, timeout or GPUs change."""
    global _executor, _executor_key
    key = (hashlib.sha1(payload).hexdigest(), timeout_s, os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    if _executor is None or _executor_key != key:
        if _executor is not None:
            _executor.close()
        _executor = TrialExecutor(cloudpickle.loads(payload), timeout_s=timeout_s)
        _executor_key = key
    return _executor


def ray_trial(config: dict[str, Any], payload: bytes, timeout_s: float | None) -> None:
    """The Tune function trainable: evaluate one config and report the outcome once."""
    report_outcome(config, lambda: _trial_executor(payload, timeout_s))


def report_outcome(config: dict[str, Any], executor: Any) -> None:
    """Run the suggested config on the executor ``executor()`` gives (called once Ray's GPUs
    are set for this actor) and report the outcome to the driver, once."""
    import ray
    from ray import tune

    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    # Exactly the GPUs Ray assigned (none for a CPU trial), numbered as NVML numbers them.
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    runner: TrialExecutor = executor()
    started = time.time()
    tel: dict[str, Any] = {}
    if gpu_ids:
        with telemetry(gpu_ids) as tel:
            outcome = runner.run(Config.from_json(config[CONFIG_KEY]))
    else:
        outcome = runner.run(Config.from_json(config[CONFIG_KEY]))
    details: dict[str, Any] = {
        "worker": f"ray-{socket.gethostname()}-{os.getpid()}",
        "node_ip": ray.util.get_node_ip_address(),
        "started_at": started,
        "ended_at": time.time(),
    }
    if gpu_ids:
        details.update(describe_devices(gpu_ids))
    result = outcome.with_extras(tel, details).to_dict()
    tune.report({RESULT_KEY: json.dumps(result, default=str)})


# -- the searcher, in the driver -------------------------------------------------------------------
@dataclass
class _Running:
    claim: int
    pending: PendingTrial
    study: Study
    target: int
    result: dict[str, Any] | None = None
    asked_at: float = field(default_factory=time.time)


class StudySearcher(Searcher):
    """A Tune searcher that asks and tells a paretotune `Study`.

    Each ``suggest`` takes a budget claim in the store and asks the study's own sampler, which
    is bound to the study's SQL storage; ``on_trial_complete`` tells the outcome with the same
    states and reasons as the local trial loop. Nothing here is Tune state worth restoring:
    the store holds it all, and a new driver resumes from there. Store calls ride out outages
    like the local loop's (``retry``).
    """

    def __init__(
        self,
        storage_url: str,
        study_name: str,
        n_trials: int,
        *,
        driver: str | None = None,
        retry_window_s: float = DEFAULT_RETRY_WINDOW_S,
    ) -> None:
        super().__init__()
        self.storage_url = storage_url
        self.study_name = study_name
        self.n_trials = n_trials
        self.driver = driver or lifecycle.worker_id("ray")
        self.retry_window_s = retry_window_s
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._store: StudyStore | None = None
        self._study: Study | None = None
        self._running: dict[str, _Running] = {}
        self._deferred: list[_Running] = []
        self._lock = threading.Lock()
        self._next_claim_at = 0.0
        #: studies whose baseline is told (relative metrics can be derived)
        self._baseline_done: set[str] = set()
        #: the first error that ended the run early (re-raised by `run_ray`)
        self.error: BaseException | None = None
        self.finished = False
        #: trials this searcher asked the sampler for
        self.asked = 0
        self._heartbeat: Heartbeat | None = None

    # Tune pickles its search algorithm (tuner.pkl, experiment snapshots): keep it to the
    # settings, never an engine or a thread lock.
    def __getstate__(self) -> dict[str, Any]:
        keep = ("storage_url", "study_name", "n_trials", "driver", "retry_window_s", "_metric", "_mode")
        return {k: v for k, v in self.__dict__.items() if k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def attach(self, store: StudyStore) -> None:
        """Share the driver's store (and its connections) instead of opening another."""
        self._store = store

    def _retry(self, fn: Any, *args: Any, what: str, **kwargs: Any) -> Any:
        return retry(fn, *args, what=what, window_s=self.retry_window_s, **kwargs)

    @property
    def study(self) -> Study:
        if self._study is None:
            self._study = self._retry(
                load_study_from_store, self.study_name, self.store, worker=self.driver, what="load study"
            )
        return self._study

    def held_claims(self) -> list[int]:
        """Claims of trials in flight or waiting to be told (the heartbeat keeps them alive)."""
        with self._lock:
            return [r.claim for r in self._running.values()] + [r.claim for r in self._deferred]

    @property
    def store(self) -> StudyStore:
        if self._store is None:
            self._store = self._retry(StudyStore, self.storage_url, what="connect")
        return self._store

    def _start_heartbeat(self, grace_s: float) -> Heartbeat:
        """Heartbeat the held claims from wherever the searcher runs: the driver, or the
        cluster when Tune runs the experiment remotely (Ray Client)."""
        if self._heartbeat is None:
            interval = lifecycle.heartbeat_interval(grace_s)
            self._heartbeat = Heartbeat(self.store, interval, name="paretotune-ray-heartbeat")
        return self._heartbeat

    def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.close()
            self._heartbeat = None

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w", encoding="utf-8") as fh:
            json.dump({"study": self.study_name, "note": "the state lives in the study store"}, fh)

    def restore(self, checkpoint_path: str) -> None:
        raise NotImplementedError(
            "paretotune does not use Tuner.restore (ray-project/ray#30861): run the study again "
            "with the same budget and it resumes from the study store"
        )

    # -- suggest ---------------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]  # Tune's FINISHED is a str
        if self.finished:
            return Searcher.FINISHED
        try:
            self._flush_deferred()
            return self._suggest(trial_id)
        except Exception as exc:
            self._fail_run(exc)
            return Searcher.FINISHED

    def _suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        now = time.monotonic()
        if self.finished or now < self._next_claim_at:
            return Searcher.FINISHED if self.finished else None
        return self._claim_next(trial_id, now)

    def _claim_next(self, trial_id: str, now: float) -> dict[str, Any] | str | None:
        """Claim and ask the next trial (None: none now, FINISHED: none ever)."""
        heartbeat = self._start_heartbeat(float(getattr(self.study, "worker_grace_s", 20.0)))
        claimed = lifecycle.claim_trial(self.study, self.driver, self.n_trials, self.retry_window_s,
                                       heartbeat)
        if claimed is None:
            if not lifecycle.budget_left(self.study, self.n_trials, self.retry_window_s) and not self.held_claims():
                self.finished = True
                return Searcher.FINISHED
            # A trial in flight (here or on another worker) may still fail and free its slot,
            # or belong to a dead driver: the monitor reaps it after the grace period.
            self._next_claim_at = now + lifecycle.IDLE_POLL_S
            return None
        return self._hand_out(trial_id, self.study, claimed, self.n_trials)

    def _hand_out(self, trial_id: str, study: Study, claimed: lifecycle.Claimed, target: int) -> dict[str, Any]:
        """The claimed trial, to Tune (`claim_trial` has put its claim in the heartbeat)."""
        with self._lock:
            self._running[trial_id] = _Running(claimed.claim, claimed.pending, study, target)
        self.asked += 1
        return {TRIAL_KEY: claimed.pending.number, CONFIG_KEY: claimed.pending.config.to_json(),
                STUDY_KEY: study.name}

    # -- complete --------------------------------------------------------------------------------
    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        with self._lock:
            run = self._running.pop(trial_id, None)
        if run is None:
            return
        try:
            raw = None if result is None else result.get(RESULT_KEY)
            if raw is None:
                reason = (
                    "the Ray trial failed before reporting: its actor, worker process or node died "
                    "(see the Ray logs)"
                    if error
                    else "the Ray run ended before this trial reported"
                )
                self._finish(run, self._retry(run.study.tell_failure, run.pending, reason, what="tell"))
                return
            run.result = json.loads(raw)
            if not run.pending.is_baseline and self._baseline_pending(run.study):
                with self._lock:
                    self._deferred.append(run)  # relative metrics need the baseline first
                return
            self._tell(run)
        except Exception as exc:
            self._release(run)
            self._fail_run(exc)

    def _tell(self, run: _Running) -> None:
        outcome = Outcome.from_dict(run.result or {}).with_extras(details={"driver": self.driver})
        trial = lifecycle.tell(run.study, run.pending, outcome, self.retry_window_s, baseline_wait_s=0.0)
        if run.pending.is_baseline and trial.state == TrialState.COMPLETE:
            self._baseline_done.add(run.study.name)
        self._finish(run, trial)

    def _finish(self, run: _Running, trial: Trial) -> None:
        if self._heartbeat is not None:
            self._heartbeat.release(run.claim)
        if lifecycle.finish(run.study, run.claim, trial, run.target, self.retry_window_s):
            self._study_stopped(run.study)

    def _study_stopped(self, study: Study) -> None:
        """A failure too many stopped ``study``: a single-study run ends."""
        self.finished = True

    def _release(self, run: _Running) -> None:
        if self._heartbeat is not None:
            self._heartbeat.release(run.claim)
        lifecycle.release(run.study, run.claim)

    def _fail_run(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        if not isinstance(exc, StudyError):
            log.error("Ray driver: %s: %s", type(exc).__name__, exc)
        self.finished = True

    # -- the baseline ------------------------------------------------------------------------------
    def _baseline_pending(self, study: Study) -> bool:
        """True while the study's baseline trial is queued or running (here or elsewhere)."""
        if study.name in self._baseline_done:
            return False
        if study.baseline_trial() is not None:
            self._baseline_done.add(study.name)
            return False
        states = [t.state for t in study.trials if t.is_baseline]
        return bool(states) and states[-1] in (TrialState.RUNNING, TrialState.WAITING)

    def _flush_deferred(self) -> None:
        """Tell the trials that waited for their study's baseline, once it is told (or failed)."""
        if not self._deferred:
            return
        with self._lock:
            ready = [r for r in self._deferred if not self._baseline_pending(r.study)]
            told = {id(r) for r in ready}
            self._deferred = [r for r in self._deferred if id(r) not in told]
        for i, run in enumerate(ready):
            try:
                self._tell(run)
            except Exception:
                for rest in ready[i:]:
                    self._release(rest)
                raise

    def abandon(self, reason: str) -> None:
        """At the end of a run: tell what is told-able, fail the rest with ``reason``, and give
        every claim still held back."""
        try:
            self._flush_deferred()
        except Exception as exc:
            log.warning("could not tell the trials that waited for the baseline: %s", exc)
        with self._lock:
            runs = list(self._running.values()) + self._deferred
            self._running, self._deferred = {}, []
        for run in runs:
            try:
                self._finish(run, run.study.tell_failure(run.pending, reason))
            except Exception as exc:
                log.warning("trial %d: could not record %r: %s", run.pending.number, reason, exc)
                self._release(run)


# -- the driver ------------------------------------------------------------------------------------
def _cluster_nodes() -> list[dict[str, float]]:
    import ray

    return [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]


def concurrency_for(
    resources: Mapping[str, float], remaining: int, max_concurrent: int | None, nodes: Sequence[Mapping[str, float]]
) -> int:
    """Trials in flight: what the cluster can place, capped by ``max_concurrent`` and the
    remaining budget."""
    placeable = placeable_trials(resources, nodes)
    if placeable == 0:
        have = [{k: v for k, v in n.items() if k in resources} for n in nodes]
        if max_concurrent is None:
            raise ConfigError(
                f"resources_per_trial {dict(resources)} fits on no node of the Ray cluster "
                f"(nodes have {have}); ask for less, add nodes, or on an autoscaling cluster pass "
                "max_concurrent to run anyway"
            )
        log.warning("resources_per_trial %s fits on no node yet (nodes have %s); "
                    "relying on the autoscaler for %d trials", dict(resources), have, max_concurrent)
        placeable = max_concurrent
    limit = placeable if max_concurrent is None else min(placeable, max_concurrent)
    return max(1, min(limit, remaining))


def _trial_name(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def _check_options(study: Study, options: Mapping[str, Any]) -> tuple[dict[str, float], int | None]:
    unknown = sorted(set(options) - set(RAY_OPTIONS))
    if unknown:
        raise ConfigError(f"backend 'ray': unknown option(s) {unknown}; allowed: {list(RAY_OPTIONS)}")
    check_scheduler(study, options.get("scheduler"))
    resources = normalize_resources(options.get("resources_per_trial"))
    max_concurrent = options.get("max_concurrent")
    if max_concurrent is not None:
        check_int("max_concurrent", max_concurrent, 1)
    return resources, max_concurrent


def run_ray(
    study: Study,
    evaluator: Any,
    *,
    n_trials: int,
    trial_timeout_s: float | None = None,
    **options: Any,
) -> None:
    """Run ``study`` on a Ray cluster until it holds ``n_trials`` completed trials.

    Options: ``address`` (None: ``RAY_ADDRESS`` or a new local Ray; ``"auto"``; ``"host:port"``;
    ``"ray://host:port"``), ``resources_per_trial`` (``{"cpu": 1}`` by default),
    ``max_concurrent`` (a cap below what the cluster can place), ``scheduler`` (None or
    ``"fifo"``), ``runtime_env`` (for ``ray.init``), ``show_progress``.
    """
    resources, max_concurrent = _check_options(study, options)
    timeout = trial_timeout_s if trial_timeout_s is not None else study.trial_timeout_s

    import ray
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    owns_ray = not ray.is_initialized()
    if owns_ray:
        ray.init(
            address=options.get("address"),
            runtime_env=options.get("runtime_env"),
            logging_level=logging.WARNING,
        )
    elif options.get("address") is not None:
        log.info("Ray is already initialised in this process; address=%r is not used", options["address"])
    storage_path = tempfile.mkdtemp(prefix="paretotune-ray-")
    searcher = StudySearcher(study.store.url, study.name, n_trials)
    searcher.attach(study.store)
    progress = Progress(study, n_trials, options.get("show_progress"))
    try:
        done = study.store.claim_counts(study.name)["done"]
        limit = concurrency_for(resources, max(1, n_trials - done), max_concurrent, _cluster_nodes())
        log.info("study %r on Ray: %s per trial, %d in flight at most", study.name, resources, limit)
        trainable = tune.with_resources(
            tune.with_parameters(ray_trial, payload=cloudpickle.dumps(evaluator), timeout_s=timeout),
            {("cpu" if k == "CPU" else "gpu" if k == "GPU" else k): v for k, v in resources.items()},
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(searcher, max_concurrent=limit),
                num_samples=-1,
                reuse_actors=True,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=f"paretotune-{searcher.driver}",
                storage_path=storage_path,
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        with _quiet_tune(), lifecycle.Monitor(study, progress, name="paretotune-ray-monitor"):
            try:
                tuner.fit()
            finally:
                searcher.abandon("the Ray run ended before this trial was told (driver stopped)")
                searcher.close()
    finally:
        progress.close()
        shutil.rmtree(storage_path, ignore_errors=True)
        if owns_ray:
            ray.shutdown()
    if searcher.error is not None:
        if isinstance(searcher.error, StudyError):
            raise searcher.error
        raise StudyError(
            f"study {study.name!r}: the Ray driver stopped on {type(searcher.error).__name__}: {searcher.error}"
        ) from searcher.error
    if not searcher.finished:  # Tune ended on its own: Ctrl-C, or the cluster went away
        done = study.store.claim_counts(study.name)["done"]
        raise StudyError(
            f"study {study.name!r}: the Ray run ended with {done} of {n_trials} completed trials; "
            "run it again with the same budget to resume"
        )
