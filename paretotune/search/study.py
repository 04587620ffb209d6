"""`Study`: an Optuna multi-objective study bound to a search space and the study store.

The study asks the sampler for points, resolves them into Configs, and tells results back with
their state: COMPLETE with metrics, FAIL with a reason, or INVALID (a forbidden combination,
never built) with a reason. The baseline (unoptimized) configuration is enqueued first, so the
relative metrics `accuracy_drop` and `speedup` have a reference.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import random
import time
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState as OptunaState

from paretotune.errors import ConfigError, InvalidConfigError, StudyError
from paretotune.search.objectives import (
    HELPER_METRICS,
    Constraint,
    check_scenario_metrics,
    out_of_domain,
    parse_accuracy_range,
    parse_constraints,
    parse_objectives,
)
from paretotune.search.pareto import (
    Front,
    finite,
    hypervolume,
    non_dominated,
    reference_point,
    to_loss,
)
from paretotune.search.samplers import DEFAULT_SAMPLER, make_sampler, sampler_names
from paretotune.space import Config, Scenario, SearchSpace, Server, SingleStream, scenario_from_dict
from paretotune.storage import StudyStore, is_transient, retry

log = logging.getLogger(__name__)

SPEC_VERSION = 1
SPEC_KEYS = {
    "version", "space", "objectives", "constraints", "sampler", "seed", "task",
    "extra_metrics", "trial_timeout_s", "max_failures", "worker_grace_s", "duplicates",
    "warm_start", "accuracy_range", "scenario",
}
#: seconds a trial waits at tell-time for the baseline to finish (derived metrics need it)
BASELINE_WAIT_S = 3600.0
#: consecutive forbidden proposals before the sampler is declared stuck
MAX_INVALID_STREAK = 200
DEFAULT_TRIAL_TIMEOUT_S = 1800.0
DEFAULT_WORKER_GRACE_S = 20.0
#: what a sampler's proposal of an already measured config gets (spec key `duplicates`)
DUPLICATE_POLICIES = ("reuse", "measure")
#: what a new study queues after its baseline (spec key `warm_start`)
WARM_STARTS = ("corners", "none")
#: proposals of measured configs answered in one ask before the study steps to a neighbour
MAX_DUPLICATE_STREAK = 8
#: a stop reason that starts with this is a normal end, not an error
FINISHED = "finished:"
#: evaluations lacking an objective or constraint metric before the study stops, when no
#: completed trial ever had that metric (a single trial without it is just that trial's FAIL)
MISSING_METRIC_STOP_AFTER = 3
MISSING_PREFIX = "the evaluator did not return"
#: a config whose trials failed this many times is not measured again (INVALID, with why)
MAX_FAILURES_PER_CONFIG = 2
#: under a server scenario, a trial is feasible only if it sustains at least this many queries
#: per second within the p99 bound (one that sustains none records server_qps 0)
MIN_SERVER_QPS = 1.0
#: fail reasons that speak of the worker, not of the config: they never count against it
WORKER_FAILURES = ("worker lost", "interrupted", "store connection lost")


class TrialState(str, enum.Enum):
    COMPLETE = "COMPLETE"
    FAIL = "FAIL"
    INVALID = "INVALID"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    #: the sampler proposed a config already measured: answered with that measurement, not
    #: evaluated again, and not counted against n_trials (`Trial.duplicate_of` names it)
    DUPLICATE = "DUPLICATE"


@dataclass(frozen=True)
class Trial:
    """One trial as users see it: number, state, config, metrics and, if it failed, why."""

    number: int
    state: TrialState
    config: Config | None
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    feasible: bool | None = None
    is_baseline: bool = False
    duration_s: float | None = None
    duplicate_of: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state.value,
            "config": None if self.config is None else self.config.to_dict(),
            "metrics": dict(self.metrics),
            "reason": self.reason,
            "feasible": self.feasible,
            "is_baseline": self.is_baseline,
            "duration_s": self.duration_s,
            "duplicate_of": self.duplicate_of,
        }


@dataclass
class PendingTrial:
    """A trial handed out by ``Study.ask`` and not yet told."""

    number: int
    config: Config
    is_baseline: bool
    _optuna_trial: optuna.trial.Trial


def worker_seed(seed: int | None, worker: str) -> int | None:
    """Each worker process gets its own stream, so parallel workers don't propose alike."""
    if seed is None:
        return None
    return (seed * 1_000_003 + zlib.crc32(worker.encode())) % (2**31)


class Study:
    """A multi-objective study in a study store. Create with ``create_study``, reopen with
    ``load_study``; every process (controller, workers) holds its own ``Study`` object."""

    def __init__(self, name: str, store: StudyStore, spec: dict[str, Any], *, worker: str = "main") -> None:
        self.name = name
        self.store = store
        self.spec = spec
        self.space = SearchSpace.from_dict(spec["space"])
        extra = list(spec.get("extra_metrics") or [])
        self.objectives: dict[str, str] = parse_objectives(spec["objectives"], extra)
        self.constraints: list[Constraint] = parse_constraints(
            {k: tuple(v) for k, v in (spec.get("constraints") or {}).items()}, extra
        )
        self.trial_timeout_s = float(spec.get("trial_timeout_s") or DEFAULT_TRIAL_TIMEOUT_S)
        #: seconds without a heartbeat before a running trial's worker is declared lost
        self.worker_grace_s = float(spec.get("worker_grace_s") or DEFAULT_WORKER_GRACE_S)
        self.task_path: str | None = spec.get("task")
        #: the range a valid `accuracy` lies in (the task's declared range, default [0, 1])
        self.accuracy_range = parse_accuracy_range(spec.get("accuracy_range"))
        #: how each trial is timed: single_stream (closed loop), or LoadGen's server / offline
        self.scenario: Scenario = scenario_from_dict(spec.get("scenario"))
        if isinstance(self.scenario, Server) and not any(c.metric == "server_qps" for c in self.constraints):
            # a config that sustains no load within the p99 bound (server_qps 0) is measured,
            # and it is not a deployable point
            self.constraints.append(Constraint("server_qps", ">=", MIN_SERVER_QPS))
        sampler = make_sampler(
            spec.get("sampler") or DEFAULT_SAMPLER,
            seed=worker_seed(spec.get("seed"), worker),
        )
        try:
            self._optuna = optuna.load_study(
                study_name=name, storage=store.optuna_storage(), sampler=sampler
            )
        except KeyError:
            raise StudyError(f"study {name!r} has no Optuna record in {store.masked_url}") from None
        self._baseline_cache: Trial | None = None
        #: set when the sampler has proposed every config of a finite space
        self.exhausted = False
        self._rng = random.Random(worker_seed(spec.get("seed"), worker + "/replacements"))
        self.duplicates: str = spec.get("duplicates") or DUPLICATE_POLICIES[0]
        self._measured: dict[tuple[tuple[str, Any], ...], optuna.trial.FrozenTrial] = {}
        self._measured_seen: set[int] = set()
        self._answered = 0  # proposals answered from earlier measurements since a step off
        #: set when a step off found no untried config: from then on, proposals of measured
        #: configs are measured again at once (a budget larger than a finite space)
        self._covered = False
        #: the number of the trial the last ask() handed out (a worker interrupted before it
        #: took the pending trial still knows what to record as interrupted)
        self.last_asked: int | None = None
        #: the task object given at creation, used when optimize() gets no evaluator
        self.task: Any = None
        #: called while a tell waits for the baseline (workers reap lost trials there, so a
        #: baseline held by a dead worker is retried instead of waited on forever)
        self.on_wait: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"Study({self.name!r}, storage={self.store.masked_url!r})"

    # -- properties -------------------------------------------------------------------------------
    @property
    def optuna_study(self) -> optuna.Study:
        """The underlying Optuna study (metric names are set, so Optuna's tools show them)."""
        return self._optuna

    @property
    def directions(self) -> list[str]:
        return list(self.objectives.values())

    def is_feasible(self, metrics: Mapping[str, float]) -> bool:
        return all(c.metric in metrics and c.holds(metrics[c.metric]) for c in self.constraints)

    # -- trials -----------------------------------------------------------------------------------
    def _to_trial(self, ft: optuna.trial.FrozenTrial) -> Trial:
        attrs = ft.user_attrs
        config: Config | None = None
        if ft.params:
            try:
                config = self.space.from_params(ft.params, allow_forbidden=ft.state == OptunaState.PRUNED)
            except (ConfigError, InvalidConfigError):
                config = None  # a half-made trial (interrupted ask)
        metrics = dict(attrs.get("metrics") or {})
        duplicate_of = attrs.get("duplicate_of")
        if ft.state == OptunaState.COMPLETE and duplicate_of is not None:
            state, reason = TrialState.DUPLICATE, f"already measured as trial {duplicate_of}"
        elif ft.state == OptunaState.COMPLETE:
            state, reason = TrialState.COMPLETE, None
        elif ft.state == OptunaState.PRUNED:
            state, reason = TrialState.INVALID, attrs.get("invalid_reason", "pruned")
        elif ft.state == OptunaState.FAIL:
            state, reason = TrialState.FAIL, attrs.get("fail_reason", "failed (no reason recorded)")
        elif ft.state == OptunaState.RUNNING:
            state, reason = TrialState.RUNNING, None
        else:
            state, reason = TrialState.WAITING, None
        duration = (
            (ft.datetime_complete - ft.datetime_start).total_seconds()
            if ft.datetime_complete and ft.datetime_start
            else None
        )
        return Trial(
            number=ft.number,
            state=state,
            config=config,
            metrics=metrics,
            reason=reason,
            feasible=self.is_feasible(metrics) if state == TrialState.COMPLETE else None,
            is_baseline=bool(attrs.get("baseline")),
            duration_s=duration,
            duplicate_of=duplicate_of,
        )

    @property
    def trials(self) -> list[Trial]:
        return [self._to_trial(ft) for ft in self._optuna.get_trials(deepcopy=False)]

    def trial(self, number: int) -> Trial:
        for t in self.trials:
            if t.number == number:
                return t
        raise StudyError(f"study {self.name!r} has no trial {number}")

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in TrialState}
        for t in self.trials:
            out[t.state.value] += 1
        return out

    def baseline_trial(self) -> Trial | None:
        """The completed baseline trial, or None while it hasn't completed."""
        if self._baseline_cache is not None:
            return self._baseline_cache
        for t in self.trials:
            if t.is_baseline and t.state == TrialState.COMPLETE:
                self._baseline_cache = t
                return t
        return None

    def _baseline_state(self) -> TrialState | None:
        states = [t.state for t in self.trials if t.is_baseline]
        if TrialState.COMPLETE in states:
            return TrialState.COMPLETE
        return states[-1] if states else None

    def enqueue_baseline(self) -> None:
        """Queue the baseline (unless one already completed or waits): it runs before the rest."""
        if self._baseline_state() in (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING):
            return
        self._optuna.enqueue_trial(
            self.space.to_params(self.space.baseline()),
            user_attrs={"baseline": True},
            skip_if_exists=False,
        )

    def enqueue_warm_start(self) -> list[Config]:
        """Queue the spec's warm start after the baseline (`warm_start_configs`)."""
        if (self.spec.get("warm_start") or WARM_STARTS[0]) == "none":
            return []
        configs = warm_start_configs(self.space)
        for config in configs:
            self._optuna.enqueue_trial(
                self.space.to_params(config), user_attrs={"warm_start": True}, skip_if_exists=False
            )
        if configs:
            log.info("study %r: %d warm-start configs queued after the baseline", self.name, len(configs))
        return configs

    def enqueue(self, values: Mapping[str, Any]) -> Config:
        """Queue a config to run before the sampler's own proposals (validated first; measured
        even when it was measured before)."""
        config = self.space.config(values, fill_defaults=True)
        self._optuna.enqueue_trial(
            self.space.to_params(config), user_attrs={"enqueued": True}, skip_if_exists=False
        )
        return config

    # -- ask / tell -----------------------------------------------------------------------------
    def ask(self) -> PendingTrial:
        """The next config to evaluate.

        A forbidden proposal is recorded INVALID (never built). Samplers learn nothing from
        it, and a model-based one (GP) may propose the same point again, so the next ask
        after an invalid proposal gets a random valid config instead (enqueued, so it is a
        recorded trial like any other).

        A proposal of a config already measured (samplers re-propose their best points) is,
        under the default `duplicates="reuse"`, answered with the earlier measurement and
        recorded DUPLICATE, and the sampler is asked again: the budget goes to configs not yet
        measured. Every MAX_DUPLICATE_STREAK such answers the study steps to a neighbour of
        the config that no trial has tried yet; when the space has none left, the proposal is
        measured again, and so are later proposals of measured configs (answering them would
        only spend asks). Enqueued configs (the baseline, the user's) are always measured.
        """
        for _ in range(MAX_INVALID_STREAK):
            ot = self._optuna.ask()
            try:
                pending = self._resolve_proposal(ot)
            except KeyboardInterrupt as exc:  # Ctrl-C mid-proposal: no claim holds it, record it
                with contextlib.suppress(Exception):
                    self.tell_failure_by_number(ot.number, f"interrupted ({getattr(exc, 'signame', 'SIGINT')})")
                raise
            except Exception as exc:
                if is_transient(exc):
                    # The store failed halfway through this proposal (sampling, answering a
                    # duplicate, recording an invalid one): no claim is bound to the trial yet,
                    # so nobody would reap it. Record why (riding out the outage), re-raise.
                    retry(self.tell_failure_by_number, ot.number,
                          f"store connection lost while sampling ({type(exc).__name__})",
                          what="record the interrupted ask")
                raise
            if pending is not None:
                self.last_asked = pending.number
                return pending
        raise StudyError(
            f"the sampler proposed {MAX_INVALID_STREAK} forbidden configs in a row; "
            "check the space's `forbidden` rules"
        )

    def _resolve_proposal(self, ot: optuna.trial.Trial) -> PendingTrial | None:
        """The trial to evaluate, or None when this proposal was answered (INVALID or
        DUPLICATE) and the sampler must be asked again."""
        try:
            config = self.space.suggest(ot)
        except InvalidConfigError as exc:
            ot.set_user_attr("invalid_reason", str(exc))
            self._tell_optuna(ot, None, OptunaState.PRUNED)
            log.debug("trial %d invalid: %s", ot.number, exc)
            self._optuna.enqueue_trial(
                self.space.to_params(self._untried_sample()), user_attrs={"replaces_invalid": ot.number}
            )
            return None
        failed = [] if ot.user_attrs else self._failures_of(ot.params)
        if len(failed) >= MAX_FAILURES_PER_CONFIG:
            # Samplers learn nothing from FAIL trials, so one keeps proposing a config that
            # fails every time (a batcher that meets the p99 bound at no QPS): skip it, and
            # give the next ask an untried config, as for a forbidden one.
            reason = (f"not measured again: this config failed {len(failed)} times already "
                      f"(last: {failed[-1]})")
            ot.set_user_attr("invalid_reason", reason)
            self._tell_optuna(ot, None, OptunaState.PRUNED)
            log.info("trial %d: %s", ot.number, reason)
            self._optuna.enqueue_trial(
                self.space.to_params(self._untried_sample()), user_attrs={"replaces_failing": ot.number}
            )
            return None
        earlier = self._earlier_measurement(ot)
        if earlier is not None:
            if self._covered:  # nothing untried is left: answering would only spend asks
                return PendingTrial(ot.number, config, False, ot)
            self._answered += 1
            if self._answered >= MAX_DUPLICATE_STREAK:
                self._answered = 0
                if not self._step_off(config, earlier.number):
                    self._covered = True
                    return PendingTrial(ot.number, config, False, ot)  # measure it again
            self._answer_duplicate(ot, earlier)
            return None
        return PendingTrial(ot.number, config, bool(ot.user_attrs.get("baseline")), ot)

    @staticmethod
    def _params_key(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
        return tuple(sorted(params.items()))

    def _failures_of(self, params: Mapping[str, Any]) -> list[str]:
        """The reasons of earlier FAIL trials of these params, leaving out failures of the
        worker rather than the config (lost, interrupted, the store gone)."""
        key = self._params_key(params)
        reasons = []
        for ft in self._optuna.get_trials(deepcopy=False, states=(OptunaState.FAIL,)):
            reason = str(ft.user_attrs.get("fail_reason", ""))
            if self._params_key(ft.params) == key and not reason.startswith(WORKER_FAILURES):
                reasons.append(reason)
        return reasons

    def _measured_trials(self) -> dict[tuple[tuple[str, Any], ...], optuna.trial.FrozenTrial]:
        """Measured (COMPLETE, not duplicate) trials by their params, read incrementally."""
        for ft in self._optuna.get_trials(deepcopy=False, states=(OptunaState.COMPLETE,)):
            if ft.number in self._measured_seen:
                continue
            self._measured_seen.add(ft.number)
            if ft.user_attrs.get("duplicate_of") is None and ft.user_attrs.get("metrics"):
                self._measured.setdefault(self._params_key(ft.params), ft)
        return self._measured

    def _earlier_measurement(self, ot: optuna.trial.Trial) -> optuna.trial.FrozenTrial | None:
        """The measured trial of this proposal's config, when it should be reused."""
        if self.duplicates != "reuse" or ot.user_attrs:  # enqueued configs carry attributes
            return None
        earlier = self._measured_trials().get(self._params_key(ot.params))
        needed = [*self.objectives, *(c.metric for c in self.constraints)]
        if earlier is None or any(m not in earlier.user_attrs["metrics"] for m in needed):
            return None
        return earlier

    def _answer_duplicate(self, ot: optuna.trial.Trial, earlier: optuna.trial.FrozenTrial) -> None:
        ot.set_user_attr("duplicate_of", earlier.number)
        self._tell_metrics(ot, dict(earlier.user_attrs["metrics"]))
        log.debug("trial %d: config already measured as trial %d; reused", ot.number, earlier.number)

    def _tried(self) -> set[tuple[tuple[str, Any], ...]]:
        """The params of every trial so far, in any state."""
        return {self._params_key(ft.params) for ft in self._optuna.get_trials(deepcopy=False)}

    def _untried_sample(self, tried: set[tuple[tuple[str, Any], ...]] | None = None, tries: int = 50) -> Config:
        """A random valid config that no trial has tried yet (any random one if none is found)."""
        tried = self._tried() if tried is None else tried
        for _ in range(tries):
            config = self.space.sample(self._rng)
            if self._params_key(self.space.to_params(config)) not in tried:
                return config
        return self.space.sample(self._rng)

    def _step_off(self, config: Config, number: int) -> bool:
        """Queue a neighbour of `config` that no trial has tried yet (else any untried config);
        False when none is found."""
        tried = self._tried()
        candidate: Config | None = None
        for _ in range(50):
            try:
                neighbour = self.space.neighbor(config, self._rng)
            except ConfigError:
                break
            if self._params_key(self.space.to_params(neighbour)) not in tried:
                candidate = neighbour
                break
        if candidate is None:
            candidate = self._untried_sample(tried)
        params = self.space.to_params(candidate)
        if self._params_key(params) in tried:
            log.info("no untried config found near trial %d; it will be measured again", number)
            return False
        self._optuna.enqueue_trial(params, user_attrs={"steps_off": number})
        log.info("the sampler keeps proposing measured configs; trying a neighbour of trial %d", number)
        return True

    def tell_failure_by_number(self, number: int, reason: str) -> bool:
        """FAIL a RUNNING trial by number (reaper, interrupted ask). False if it had finished."""
        storage = self._optuna._storage
        trial_id = storage.get_trial_id_from_study_id_trial_number(self._optuna._study_id, number)
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", reason)
            storage.set_trial_state_values(trial_id, OptunaState.FAIL)
        except UpdateFinishedTrialError:
            return False
        return True

    def tell_invalid(self, pending: PendingTrial, reason: str) -> Trial:
        pending._optuna_trial.set_user_attr("invalid_reason", reason)
        self._tell_optuna(pending._optuna_trial, None, OptunaState.PRUNED)
        return Trial(pending.number, TrialState.INVALID, pending.config, reason=reason,
                     is_baseline=pending.is_baseline)

    def tell_failure(self, pending: PendingTrial, reason: str) -> Trial:
        pending._optuna_trial.set_user_attr("fail_reason", reason)
        self._tell_optuna(pending._optuna_trial, None, OptunaState.FAIL)
        log.info("trial %d FAIL: %s", pending.number, reason)
        return Trial(pending.number, TrialState.FAIL, pending.config, reason=reason,
                     is_baseline=pending.is_baseline)

    def tell(
        self,
        pending: PendingTrial,
        metrics: Mapping[str, Any],
        details: Mapping[str, Any] | None = None,
        *,
        baseline_wait_s: float = BASELINE_WAIT_S,
    ) -> Trial:
        """Record a finished evaluation. Non-finite metrics make the trial FAIL; an objective
        the evaluator never returns stops the study (every later trial would fail alike)."""
        metrics = dict(metrics)
        bad = finite(metrics)
        if bad:
            return self.tell_failure(pending, bad)
        metrics = {k: float(v) for k, v in metrics.items()}
        bad = out_of_domain(metrics, self.accuracy_range)
        if bad:
            return self.tell_failure(pending, bad)
        derived_reason = self._derive(pending, metrics, baseline_wait_s)
        needed = list(self.objectives) + [c.metric for c in self.constraints]
        missing = [m for m in needed if m not in metrics]
        if missing:
            got = sorted(k for k in metrics if k not in HELPER_METRICS)
            reason = f"{MISSING_PREFIX} {missing} (needed by the objectives/constraints); it returned {got}"
            if derived_reason and set(missing) <= {"accuracy_drop", "speedup"}:
                trial = self.tell_failure(pending, derived_reason)
                if self._baseline_state() == TrialState.WAITING:
                    # the baseline is queued again (its worker was lost): run this config later
                    self._optuna.enqueue_trial(self.space.to_params(pending.config),
                                               user_attrs={"retry_of": pending.number})
                return trial
            trial = self.tell_failure(pending, reason)
            never = self._never_returned(missing)
            if never:
                stop = (
                    f"the evaluator did not return {never} (needed by the objectives/constraints) in "
                    f"any of its first {MISSING_METRIC_STOP_AFTER} evaluations; the last returned {got}"
                )
                self.store.stop_study(self.name, stop)
                raise StudyError(f"study {self.name!r} stopped: {stop}")
            return trial
        self.store.record_measurement(
            self.name, pending.number, pending.config.hash, pending.config.to_json(),
            metrics, dict(details or {}),
        )
        ot = pending._optuna_trial
        try:
            self._tell_metrics(ot, metrics)
        except UpdateFinishedTrialError:
            # Either an earlier attempt of this tell got through before the connection
            # dropped, or a reaper declared our worker lost. The measurement is stored anyway.
            frozen = self._optuna._storage.get_trial(ot._trial_id)
            if frozen.state != OptunaState.COMPLETE:
                reason = frozen.user_attrs.get("fail_reason", f"finished as {frozen.state.name} elsewhere")
                log.warning("trial %d was finished elsewhere (%s); its measurement is kept in the store",
                            pending.number, reason)
                return Trial(pending.number, TrialState.FAIL, pending.config, reason=reason,
                             is_baseline=pending.is_baseline)
        return Trial(pending.number, TrialState.COMPLETE, pending.config, metrics,
                     feasible=self.is_feasible(metrics), is_baseline=pending.is_baseline)

    def _never_returned(self, missing: Sequence[str]) -> list[str]:
        """The metrics of ``missing`` that no completed trial has, once MISSING_METRIC_STOP_AFTER
        evaluations lacked them ([] before that: one bad trial is only that trial's FAIL)."""
        trials = self._optuna.get_trials(deepcopy=False, states=(OptunaState.COMPLETE, OptunaState.FAIL))
        had = set().union(*(ft.user_attrs.get("metrics") or {} for ft in trials if ft.state == OptunaState.COMPLETE))
        lacking = sum(1 for ft in trials if str(ft.user_attrs.get("fail_reason", "")).startswith(MISSING_PREFIX))
        if lacking < MISSING_METRIC_STOP_AFTER:
            return []
        return [m for m in missing if m not in had]

    def _tell_metrics(self, ot: optuna.trial.Trial, metrics: dict[str, float]) -> None:
        """Store the metrics on the Optuna trial, set its constraint values, tell objectives."""
        ot.set_user_attr("metrics", metrics)
        for c in self.constraints:
            ot.set_constraint(str(c), c.violation(metrics[c.metric]))
        self._tell_optuna(ot, [metrics[m] for m in self.objectives])

    def _tell_optuna(
        self, ot: optuna.trial.Trial, values: list[float] | None, state: OptunaState | None = None
    ) -> None:
        """Optuna's tell, surviving the grid sampler's end of the space (any state)."""
        try:
            self._optuna.tell(ot, values, state=state)
        except RuntimeError as exc:
            # BruteForceSampler (our "grid") calls Study.stop() once the space is exhausted,
            # which Optuna only allows inside optimize(); the trial's state is stored anyway.
            if "Study.stop" not in str(exc):
                raise
            self.exhausted = True
            self.store.stop_study(self.name, f"{FINISHED} every config of the space was evaluated")

    def _derive(self, pending: PendingTrial, metrics: dict[str, float], wait_s: float) -> str | None:
        """Fill in accuracy_drop and speedup against the baseline. Returns why not, if not."""
        if pending.is_baseline:
            base: Trial | None = Trial(pending.number, TrialState.COMPLETE, pending.config, dict(metrics))
        else:
            base = self._wait_for_baseline(wait_s)
        if base is None:
            return "the baseline trial did not complete, so relative metrics are unavailable"
        if "accuracy" in metrics and "accuracy" in base.metrics:
            metrics["accuracy_drop"] = base.metrics["accuracy"] - metrics["accuracy"]
        lat = metrics.get("latency_p50_ms")
        ref = metrics.get("baseline_latency_p50_ms")
        if ref is None and base.config is not None and base.config.get("batch_size") == pending.config.get("batch_size"):
            ref = base.metrics.get("latency_p50_ms")
        if lat and ref:
            metrics["speedup"] = ref / lat
        elif lat:
            return (
                f"speedup needs the baseline's latency at batch_size={pending.config.get('batch_size')}, "
                f"but the baseline ran at batch_size={base.config.get('batch_size') if base.config else None}; "
                "the evaluator can return `baseline_latency_p50_ms` for the trial's batch size"
            )
        return None

    def _wait_for_baseline(self, wait_s: float) -> Trial | None:
        """The completed baseline, waiting while another worker runs it. None when it failed,
        or when nobody runs it (queued again after its worker was lost)."""
        deadline = time.monotonic() + wait_s
        delay = 0.05
        while True:
            base = self.baseline_trial()
            if base is not None:
                return base
            if self._baseline_state() != TrialState.RUNNING or time.monotonic() > deadline:
                return None
            if self.on_wait is not None:
                self.on_wait()
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def baseline_gate(self) -> bool:
        """True when trials other than the baseline may be asked: the baseline completed,
        failed for good, or is queued (the next ask takes it). False while another worker runs it."""
        if self.baseline_trial() is not None:  # cached once found: no store reads after that
            return True
        return self._baseline_state() != TrialState.RUNNING

    # -- results -----------------------------------------------------------------------------
    def completed(self) -> list[Trial]:
        return [t for t in self.trials if t.state == TrialState.COMPLETE]

    def pareto_front(self) -> Front:
        """Feasible, non-dominated, completed trials (ordered by trial number)."""
        feasible = [t for t in self.completed() if t.feasible]
        if not feasible:
            return Front([], self.objectives)
        losses = np.array([self._loss(t) for t in feasible])
        mask = non_dominated(losses)
        return Front([t for t, keep in zip(feasible, mask, strict=True) if keep], self.objectives)

    def _loss(self, t: Trial) -> list[float]:
        return to_loss([t.metrics[m] for m in self.objectives], self.directions)

    def reference_point(self) -> np.ndarray | None:
        """10% worse than the baseline in every objective (see ``pareto.reference_point``)."""
        base = self.baseline_trial()
        if base is None:
            return None
        return reference_point(self._loss(base))

    def hypervolume(self, trials: Sequence[Trial] | None = None) -> float:
        """Hypervolume of the feasible completed trials (or ``trials``) w.r.t. the reference."""
        ref = self.reference_point()
        if ref is None:
            raise StudyError(f"study {self.name!r}: no completed baseline, so no reference point")
        pts = [self._loss(t) for t in (trials if trials is not None else self.completed()) if t.feasible]
        return hypervolume(np.array(pts), ref) if pts else 0.0

    def hypervolume_history(self) -> list[tuple[int, float]]:
        """(trial number, hypervolume of the feasible front so far) for each completed trial."""
        ref = self.reference_point()
        if ref is None:
            return []
        out, pts = [], []
        for t in sorted(self.completed(), key=lambda t: t.number):
            if t.feasible:
                pts.append(self._loss(t))
            out.append((t.number, hypervolume(np.array(pts), ref) if pts else 0.0))
        return out

    # -- running ------------------------------------------------------------------------------
    def optimize(
        self,
        evaluator: Callable[[Config], Any] | Any | None = None,
        n_trials: int = 20,
        *,
        n_workers: int = 1,
        backend: str = "local",
        timeout_s: float | None = None,
        show_progress: bool | None = None,
        **backend_options: Any,
    ) -> Study:
        """Run until the study holds ``n_trials`` completed trials (the baseline included).

        ``n_trials`` is a total, so calling again after an interruption resumes where it
        stopped. ``evaluator``: a ``pt.Task``, any ``callable(config) -> dict of metrics``, or
        None to load the task import path stored with the study.
        """
        from paretotune.workers import run_study  # the one late import into workers/

        run_study(
            self,
            evaluator,
            n_trials=n_trials,
            n_workers=n_workers,
            backend=backend,
            trial_timeout_s=timeout_s,
            show_progress=show_progress,
            **backend_options,
        )
        return self

    def confirm(
        self,
        trials: Sequence[Trial | int] | Trial | int | None = None,
        *,
        evaluator: Any = None,
        processes: int | None = None,
        show_progress: bool | None = None,
    ) -> list[Any]:
        """Re-measure ``trials`` (default: the Pareto front) in ``processes`` fresh processes
        (default 3),
        with the baseline beside each, and return their median numbers and spread
        (``paretotune.workers.confirm``). Stored; read again with ``confirmations()``."""
        from paretotune.workers.confirm import confirm

        return confirm(self, trials, evaluator=evaluator, processes=processes, show_progress=show_progress)

    def confirmations(self, run_id: str | None = None) -> list[Any]:
        """The summaries of a stored confirmation run (default: the latest; [] if none)."""
        from paretotune.workers.confirm import confirmations

        return confirmations(self, run_id=run_id)

    def summary(self) -> dict[str, Any]:
        counts = self.counts()
        front = self.pareto_front()
        try:
            hv: float | None = self.hypervolume()
        except StudyError:
            hv = None
        return {
            "name": self.name,
            "storage": self.store.masked_url,
            "objectives": self.objectives,
            "constraints": [str(c) for c in self.constraints],
            "sampler": self.spec.get("sampler"),
            "trials": counts,
            "front_size": len(front),
            "hypervolume": hv,
            "stopped_reason": self.store.stopped_reason(self.name),
        }


def build_spec(
    *,
    space: SearchSpace,
    objectives: Any,
    constraints: Any = None,
    sampler: str | Mapping[str, Any] = DEFAULT_SAMPLER,
    seed: int | None = None,
    task: str | None = None,
    extra_metrics: Sequence[str] = (),
    trial_timeout_s: float | None = None,
    max_failures: int | None = None,
    worker_grace_s: float | None = None,
    duplicates: str | None = None,
    warm_start: str | None = None,
    accuracy_range: Sequence[float] | None = None,
    scenario: Scenario | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate the pieces of a study and return the spec stored with it (JSON-able)."""
    if not isinstance(space, SearchSpace):
        raise ConfigError(f"space must be a paretotune.SearchSpace, got {type(space).__name__}")
    if not space.is_bound:
        raise ConfigError(
            "space: a PerLayer dimension has layers='auto' but no task to take the layers from; "
            "pass task=... or bind the space with space.bind(layers)"
        )
    try:
        space.baseline()
    except InvalidConfigError as exc:
        raise ConfigError(
            f"space: the baseline (every dimension at its default) is forbidden ({exc}); change a "
            "default or the `forbidden` rules, since every study measures the baseline first"
        ) from None
    if isinstance(extra_metrics, (str, bytes)) or not isinstance(extra_metrics, (list, tuple)) or not all(
        isinstance(m, str) and m for m in extra_metrics
    ):
        raise ConfigError(f"extra_metrics must be a list of metric names (strings), got {extra_metrics!r}")
    extra = list(extra_metrics)
    acc_range = parse_accuracy_range(accuracy_range)
    objs = parse_objectives(objectives, extra)
    cons = parse_constraints(constraints, extra)
    chosen = scenario_from_dict(scenario)
    check_scenario_metrics(chosen.kind, [*objs, *(c.metric for c in cons)])
    name = sampler.get("name") if isinstance(sampler, Mapping) else sampler
    if name not in sampler_names():
        raise ConfigError(f"sampler: unknown name {name!r}; valid samplers: {sampler_names()}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"seed must be an integer or None, got {seed!r}")
    if trial_timeout_s is not None and not (isinstance(trial_timeout_s, (int, float)) and trial_timeout_s > 0):
        raise ConfigError(f"trial_timeout_s must be a positive number of seconds, got {trial_timeout_s!r}")
    if max_failures is not None and not (isinstance(max_failures, int) and max_failures >= 1):
        raise ConfigError(f"max_failures must be an integer >= 1, got {max_failures!r}")
    if worker_grace_s is not None and not (
        isinstance(worker_grace_s, (int, float)) and not isinstance(worker_grace_s, bool) and worker_grace_s >= 1
    ):
        raise ConfigError(f"worker_grace_s must be a number of seconds >= 1, got {worker_grace_s!r}")
    if duplicates is not None and duplicates not in DUPLICATE_POLICIES:
        raise ConfigError(f"duplicates must be one of {list(DUPLICATE_POLICIES)}, got {duplicates!r}")
    if warm_start is not None and warm_start not in WARM_STARTS:
        raise ConfigError(f"warm_start must be one of {list(WARM_STARTS)}, got {warm_start!r}")
    return {
        "version": SPEC_VERSION,
        "space": space.to_dict(),
        "objectives": [[name, direction] for name, direction in objs.items()],
        "constraints": {c.metric: [c.op, c.bound] for c in cons},
        "sampler": dict(sampler) if isinstance(sampler, Mapping) else sampler,
        "seed": seed,
        "task": task,
        "extra_metrics": extra,
        "trial_timeout_s": trial_timeout_s,
        "max_failures": max_failures,
        "worker_grace_s": worker_grace_s,
        "duplicates": duplicates,
        "warm_start": warm_start,
        # stored only when it differs from [0, 1], so the specs of older studies still match
        **({"accuracy_range": list(acc_range)} if accuracy_range is not None else {}),
        # stored only for the LoadGen scenarios, so single-stream specs keep their old form
        **({"scenario": chosen.to_dict()} if not isinstance(chosen, SingleStream) else {}),
    }


def warm_start_configs(space: SearchSpace) -> list[Config]:
    """The corners of the space's main axes: one config per `engine` x `bit_width` value (the
    dimensions of those names), every other dimension at its default, so a PerLayer precision
    puts every layer at its default choice (int8 in the standard space) and an engine's
    options at their defaults. The baseline and forbidden combinations are left out. These are
    the textbook recipes (the whole model in each precision on each engine) that a search
    should not have to stumble on; a space with neither dimension has none. Under a server
    scenario they are served with dynamic batching on (`_batching_recipe`)."""
    axes = [
        [(name, v) for v in dim.values() or ()]
        for name in ("engine", "bit_width")
        if (dim := space.dimensions.get(name)) is not None and not dim.when
    ]
    if not axes:
        return []
    combos: list[dict[str, Any]] = [{}]
    for axis in axes:
        combos = [{**c, name: v} for c in combos for name, v in axis]
    baseline = space.baseline()
    out: list[Config] = []
    seen = {baseline.hash}  # a set: a Choice of 20,000 engines must stay linear
    batching = _batching_recipe(space)
    for values in combos:
        values = {**batching, **values}
        try:
            config = space.config(values, fill_defaults=True)
        except (ConfigError, InvalidConfigError):
            continue  # forbidden (an engine that cannot build that precision)
        if config.hash not in seen:
            seen.add(config.hash)
            out.append(config)
    return out


def _batching_recipe(space: SearchSpace) -> dict[str, Any]:
    """Under a server scenario's batcher dimensions, the textbook start is dynamic batching
    on: the middle max_batch_size and the shortest non-zero queue delay (Triton's advice),
    not the baseline's batch of 1, which the baseline itself already measures."""
    dim = space.dimensions.get("max_batch_size")
    sizes = sorted(v for v in (dim.values() or []) if isinstance(v, int)) if dim is not None and not dim.when else []
    if len(sizes) < 2:
        return {}
    recipe: dict[str, Any] = {"max_batch_size": sizes[len(sizes) // 2]}
    delay = space.dimensions.get("max_queue_delay_us")
    delays = sorted(v for v in (delay.values() or []) if isinstance(v, int) and v > 0) if delay is not None else []
    if delays and delay is not None and delay.is_active(recipe):
        recipe["max_queue_delay_us"] = delays[0]
    return recipe


def _spec_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if json.dumps(old.get(k), sort_keys=True) != json.dumps(new.get(k), sort_keys=True))


def create_study_from_spec(
    name: str, store: StudyStore, spec: dict[str, Any], *, load_if_exists: bool = False
) -> Study:
    """Create the study (Optuna record, stored spec, queued baseline) or reopen it.

    An existing study with the same spec is reopened. One with a different spec is an error
    unless ``load_if_exists`` asks to load it as it is (its stored spec wins).
    """
    check_study_name(name)
    existing = store.load_spec(name)
    if existing is None:
        objectives = parse_objectives(spec["objectives"], spec.get("extra_metrics") or [])
        directions = [
            optuna.study.StudyDirection.MINIMIZE if d == "min" else optuna.study.StudyDirection.MAXIMIZE
            for d in objectives.values()
        ]
        ostudy = optuna.create_study(
            study_name=name, storage=store.optuna_storage(), directions=directions, load_if_exists=True
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            ostudy.set_metric_names(list(objectives))
        if store.save_spec(name, spec):
            study = Study(name, store, spec)
            study.enqueue_baseline()
            study.enqueue_warm_start()
            return study
        # another process created the same study a moment ago: join it like a second run would
        existing = store.load_spec(name)
        if existing is None:  # pragma: no cover - the row cannot vanish: rows are never deleted
            raise StudyError(f"study {name!r}: its row in {store.masked_url} disappeared while creating it")
    diff = _spec_diff(existing, spec)
    if diff and not load_if_exists:
        raise StudyError(
            f"study {name!r} already exists in {store.masked_url} with a different spec "
            f"(differs in: {', '.join(diff)}); use another name, or load_if_exists=True "
            f"(CLI: --load-if-exists) to continue the stored one"
        )
    if diff:
        log.warning("study %r exists; loading its stored spec (differs in %s)", name, ", ".join(diff))
    study = Study(name, store, existing)
    study.enqueue_baseline()
    return study


def check_study_name(name: Any) -> str:
    """A study name is 1 to 512 printable characters (PostgreSQL refuses NUL in text)."""
    if not isinstance(name, str) or not name.strip() or len(name) > 512 or not name.isprintable():
        raise ConfigError(
            f"study name must be a non-empty string of at most 512 printable characters (no NUL, "
            f"newline or other control character), got {name!r}"
        )
    return name


def load_study_from_store(name: str, store: StudyStore, *, worker: str = "main") -> Study:
    check_study_name(name)
    spec = store.load_spec(name)
    if spec is None:
        known = store.study_names()
        raise StudyError(f"no study named {name!r} in {store.masked_url}; studies there: {known}")
    return Study(name, store, spec, worker=worker)
