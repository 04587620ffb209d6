"""`Study`: an Optuna multi-objective study bound to a search space and the study store.

The study asks the sampler for points, resolves them into Configs, and tells results back with
their state: COMPLETE with metrics, FAIL with a reason, or INVALID (a forbidden combination,
never built) with a reason. The baseline (unoptimized) configuration is enqueued first, so the
relative metrics `accuracy_drop` and `speedup` have a reference.

Beside it: `trial` (what a trial is), `proposals` (what becomes of a proposal before a build,
and the warm start), `specs` (creating and reopening a study from its stored spec) and
`confirmations` (reading stored confirmation runs).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState as OptunaState

from paretotune.errors import ConfigError, InvalidConfigError, StudyError
from paretotune.search import _optuna
from paretotune.search.comparisons import Comparison
from paretotune.search.comparisons import comparisons as stored_comparisons
from paretotune.search.confirmations import Confirmation
from paretotune.search.confirmations import confirmations as stored_confirmations
from paretotune.search.objectives import (
    HELPER_METRICS,
    Constraint,
    out_of_domain,
    parse_accuracy_range,
)
from paretotune.search.pareto import (
    CONFIDENCE_LEVELS,
    Front,
    finite,
    front_of,
    hypervolume,
    hypervolume_history,
    parse_resolution,
    reference_point,
    to_loss,
)
from paretotune.search.proposals import (
    DUPLICATE_POLICIES,
    MAX_INVALID_STREAK,
    WARM_STARTS,
    Proposals,
    warm_start_configs,
)
from paretotune.search.relative import derive_relative
from paretotune.search.samplers import DEFAULT_SAMPLER, auto_sampler, make_sampler, worker_seed
from paretotune.search.spec import StudySpec
from paretotune.search.start import cover_configs
from paretotune.search.trial import PendingTrial, Trial, TrialState, intervals_of, trial_from_optuna
from paretotune.space import Config, Scenario, Server
from paretotune.storage import StopKind, StudyStore, is_transient, retry

log = logging.getLogger(__name__)

#: seconds a trial waits at tell-time for the baseline to finish (derived metrics need it)
BASELINE_WAIT_S = 3600.0
DEFAULT_TRIAL_TIMEOUT_S = 1800.0
DEFAULT_WORKER_GRACE_S = 20.0
#: evaluations lacking an objective or constraint metric before the study stops, when no
#: completed trial ever had that metric (a single trial without it is just that trial's FAIL)
MISSING_METRIC_STOP_AFTER = 3
MISSING_PREFIX = "the evaluator did not return"
#: under a server scenario, a trial is feasible only if it sustains at least this many queries
#: per second within the p99 bound (one that sustains none records server_qps 0)
MIN_SERVER_QPS = 1.0


class Study:
    """A multi-objective study in a study store. Create with ``create_study``, reopen with
    ``load_study``; every process (controller, workers) holds its own ``Study`` object."""

    def __init__(self, name: str, store: StudyStore, spec: dict[str, Any], *, worker: str = "main") -> None:
        self.name = name
        self.store = store
        #: the stored JSON form; `definition` is it parsed
        self.spec = spec
        self.definition = definition = StudySpec.from_dict(spec)
        self.space = definition.space
        self.objectives: dict[str, str] = dict(definition.objectives)
        self.constraints: list[Constraint] = list(definition.constraints)
        self.trial_timeout_s = float(definition.trial_timeout_s or DEFAULT_TRIAL_TIMEOUT_S)
        #: seconds without a heartbeat before a running trial's worker is declared lost
        self.worker_grace_s = float(definition.worker_grace_s or DEFAULT_WORKER_GRACE_S)
        self.task_path: str | None = definition.task
        #: the range a valid `accuracy` lies in (the task's declared range, default [0, 1])
        self.accuracy_range = parse_accuracy_range(definition.accuracy_range)
        #: how each trial is timed: single_stream (closed loop), or LoadGen's server / offline
        self.scenario: Scenario = definition.scenario  # type: ignore[assignment]  # parsed
        if isinstance(self.scenario, Server) and not any(c.metric == "server_qps" for c in self.constraints):
            # a config that sustains no load within the p99 bound (server_qps 0) is measured,
            # and it is not a deployable point
            self.constraints.append(Constraint("server_qps", ">=", MIN_SERVER_QPS))
        sampler = make_sampler(
            spec.get("sampler") or DEFAULT_SAMPLER,
            seed=worker_seed(spec.get("seed"), worker),
            space=definition.space,
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
        self.duplicates: str = spec.get("duplicates") or DUPLICATE_POLICIES[0]
        #: what becomes of each proposal before anything is built (INVALID, DUPLICATE, measured)
        self._proposals = Proposals(
            self._optuna, self.space, policy=self.duplicates,
            needed=[*self.objectives, *(c.metric for c in self.constraints)],
            rng=random.Random(worker_seed(spec.get("seed"), worker + "/replacements")),
            tell_pruned=lambda ot: self._tell_optuna(ot, None, OptunaState.PRUNED),
            tell_metrics=self._tell_metrics,
        )
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
    @property
    def trials(self) -> list[Trial]:
        return [trial_from_optuna(ft, self.space, self.is_feasible)
                for ft in self._optuna.get_trials(deepcopy=False)]

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

    @property
    def _baseline_rule(self) -> str:
        """The spec's `baseline` rule: what a dimension a config leaves out takes."""
        return str(self.spec.get("baseline") or "low")

    def baseline_config(self) -> Config:
        """The config the baseline trial measures (the spec's `baseline` rule, `SearchSpace.baseline`)."""
        return self.space.baseline(self._baseline_rule)

    def enqueue_baseline(self) -> None:
        """Queue the baseline (unless one already completed or waits): it runs before the rest."""
        if self._baseline_state() in (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING):
            return
        self._optuna.enqueue_trial(
            self.space.to_params(self.baseline_config()),
            user_attrs={"baseline": True},
            skip_if_exists=False,
        )

    def enqueue_warm_start(self) -> list[Config]:
        """Queue the spec's warm start after the baseline (`warm_start_configs`)."""
        if (self.spec.get("warm_start") or WARM_STARTS[0]) == "none":
            return []
        baseline = self.baseline_config()
        configs = warm_start_configs(self.space, baseline)
        if self.spec.get("warm_start") == "cover":  # then a covering design (`search.start`)
            configs += cover_configs(self.space, self.spec.get("seed"), [baseline, *configs])
        for config in configs:
            self._optuna.enqueue_trial(
                self.space.to_params(config), user_attrs={"warm_start": True}, skip_if_exists=False
            )
        if configs:
            log.info("study %r: %d warm-start configs queued after the baseline", self.name, len(configs))
        return configs

    def enqueue_front_of(self, source: Study, *, limit: int | None = None) -> list[Config]:
        """Transfer from a previous study: queue the Pareto front of ``source`` (the same model
        measured on other hardware, say) to run next, so the sampler starts from the configs
        that were best there. Its configs are re-validated in this space: one this space cannot
        take (a dimension it lacks, a value outside its range, a forbidden combination) is
        skipped, as is one already measured or queued here. ``limit``: at most this many, in
        the source's trial order. Returns the configs queued."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"enqueue_front_of limit must be an integer >= 1 or None, got {limit!r}")
        seen = {t.config.hash for t in self.trials if t.config is not None}
        seen |= {self.space.from_params(p, allow_forbidden=True).hash for p in _optuna.queued_params(self._optuna) if p}
        queued: list[Config] = []
        refused: list[str] = []
        for trial in source.pareto_front():
            if trial.config is None:
                continue
            try:
                config = self.space.config(dict(trial.config), fill_defaults=True, baseline=self._baseline_rule)
            except (ConfigError, InvalidConfigError) as exc:
                refused.append(f"trial {trial.number}: {exc}")
                continue
            if config.hash in seen:
                continue
            seen.add(config.hash)
            self._optuna.enqueue_trial(
                self.space.to_params(config), user_attrs={"warm_start": True, "transfer_from": source.name},
                skip_if_exists=False,
            )
            queued.append(config)
            if limit is not None and len(queued) >= limit:
                break
        log.info("study %r: %d configs of study %r's front queued%s", self.name, len(queued), source.name,
                 f"; {len(refused)} this space cannot take ({refused[0]}, ...)" if refused else "")
        return queued

    def enqueue(self, values: Mapping[str, Any]) -> Config:
        """Queue a config to run before the sampler's own proposals (validated first; measured
        even when it was measured before). A dimension it leaves out takes its baseline value
        under the study's rule (the centre of its range in a "centre" study)."""
        config = self.space.config(values, fill_defaults=True, baseline=self._baseline_rule)
        self._optuna.enqueue_trial(
            self.space.to_params(config), user_attrs={"enqueued": True}, skip_if_exists=False
        )
        return config

    # -- ask / tell -----------------------------------------------------------------------------
    def ask(self) -> PendingTrial:
        """The next config to evaluate.

        A proposal that is forbidden, failed too often or was already measured is recorded
        (INVALID or DUPLICATE, never built) and the sampler is asked again; `Proposals` holds
        that policy (`paretotune.search.proposals`). Enqueued configs are always measured.
        """
        for _ in range(MAX_INVALID_STREAK):
            ot = self._optuna.ask()
            try:
                pending = self._proposals.resolve(ot)
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

    def tell_failure_by_number(self, number: int, reason: str) -> bool:
        """FAIL a RUNNING trial by number (reaper, interrupted ask). False if it had finished."""
        return _optuna.fail_running(self._optuna, number, reason)

    def fail_lost(self, number: int, reason: str, max_retries: int) -> bool:
        """FAIL a RUNNING trial whose worker was lost, and queue its config again (at most
        ``max_retries`` times per config; a baseline stays the baseline). False when the trial
        had already finished, or another reaper got to it first."""
        frozen = _optuna.mark_if_running(self._optuna, number, "reaped_at", time.time())
        if frozen is None or not self.tell_failure_by_number(number, reason):
            return False
        retries = int(frozen.user_attrs.get("retries", 0))
        if retries < max_retries and frozen.params:
            attrs: dict[str, object] = {"retries": retries + 1, "retry_of": number}
            if frozen.user_attrs.get("baseline"):
                attrs["baseline"] = True
            self._optuna.enqueue_trial(frozen.params, user_attrs=attrs, skip_if_exists=False)
            log.warning("trial %d: %s; re-queued (retry %d)", number, reason, retries + 1)
        else:
            log.warning("trial %d: %s; not retried", number, reason)
        return True

    def trial_state(self, number: int) -> TrialState:
        """Trial ``number``'s state, read afresh from the store."""
        return trial_from_optuna(_optuna.frozen_trial(self._optuna, number), self.space, self.is_feasible).state

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
        intervals = intervals_of(details or {}, metrics)
        if pending.is_baseline and "speedup" in metrics:
            intervals["speedup"] = (1.0, 1.0)
        if intervals:
            ot.set_user_attr("intervals", {k: list(v) for k, v in intervals.items()})
        try:
            self._tell_metrics(ot, metrics)
        except UpdateFinishedTrialError:
            # Either an earlier attempt of this tell got through before the connection
            # dropped, or a reaper declared our worker lost. The measurement is stored anyway.
            frozen = _optuna.frozen_trial_of(self._optuna, ot)
            if frozen.state != OptunaState.COMPLETE:
                reason = frozen.user_attrs.get("fail_reason", f"finished as {frozen.state.name} elsewhere")
                log.warning("trial %d was finished elsewhere (%s); its measurement is kept in the store",
                            pending.number, reason)
                return Trial(pending.number, TrialState.FAIL, pending.config, reason=reason,
                             is_baseline=pending.is_baseline)
        return Trial(pending.number, TrialState.COMPLETE, pending.config, metrics,
                     feasible=self.is_feasible(metrics), is_baseline=pending.is_baseline,
                     intervals=intervals)

    def _sampler_label(self) -> Any:
        """The spec's sampler; ``auto`` with what it stands for in this space."""
        sampler = self.spec.get("sampler") or DEFAULT_SAMPLER
        name = sampler.get("name") if isinstance(sampler, Mapping) else sampler
        return f"auto ({auto_sampler(self.space)})" if name == "auto" else sampler

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
            self.store.stop_study(self.name, "every config of the space was evaluated", StopKind.FINISHED)

    def _derive(self, pending: PendingTrial, metrics: dict[str, float], wait_s: float) -> str | None:
        """Fill in accuracy_drop and speedup against the baseline. Returns why not, if not."""
        if pending.is_baseline:
            base: Trial | None = Trial(pending.number, TrialState.COMPLETE, pending.config, dict(metrics))
        else:
            base = self._wait_for_baseline(wait_s)
        return derive_relative(pending, metrics, base)

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

    def pareto_front(
        self, *, confidence: float | None = None, resolution: Mapping[str, float] | None = None
    ) -> Front:
        """Feasible, non-dominated, completed trials (ordered by trial number).

        Values are compared at a resolution (``pareto.DEFAULT_RESOLUTION``, accuracy to 1e-6,
        updated by the spec's ``resolution`` and then by ``resolution``), so floating-point
        noise never keeps a dominated trial on the front. ``confidence=0.95`` also ties two
        timings whose 95% intervals overlap: a trial is then dominated only by one better
        beyond the intervals in some objective and worse beyond them in none.
        """
        if confidence is not None and confidence not in CONFIDENCE_LEVELS:
            raise ConfigError(
                f"confidence must be None (the plain front) or one of {list(CONFIDENCE_LEVELS)} (the "
                f"level of the intervals measurements carry), got {confidence!r}"
            )
        res = parse_resolution({**(self.spec.get("resolution") or {}), **(resolution or {})})
        return front_of(self.completed(), self.objectives, confidence=confidence, resolution=res)

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
        return [] if ref is None else hypervolume_history(self.completed(), self.objectives, ref)

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
        _workers().run_study(
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
    ) -> list[Confirmation]:
        """Re-measure ``trials`` (default: the Pareto front) in ``processes`` fresh processes
        (default 3), with the baseline beside each, and return their median numbers and spread
        (``paretotune.workers.confirm``). Stored; read again with ``confirmations()``."""
        return _workers().confirm(self, trials, evaluator=evaluator, processes=processes, show_progress=show_progress)

    def compare(self, a: Trial | int, b: Trial | int, **options: Any) -> Comparison:
        """An A/B verdict: trials ``a`` and ``b`` measured side by side in fresh processes,
        interleaved inside each; one line per metric of the study ("trial 12 is 8.1% faster
        than trial 4 at p50 (...)" or "no significant difference"). ``options``: those of
        ``paretotune.workers.compare`` (``processes`` (default 5), ``evaluator``,
        ``show_progress``). Stored; read again with ``comparisons()``."""
        return _workers().compare(self, a, b, **options)

    def comparisons(self, run_id: str | None = None) -> list[Comparison]:
        """The stored A/B comparisons of this study, oldest first."""
        return stored_comparisons(self, run_id=run_id)

    def confirmations(self, run_id: str | None = None) -> list[Confirmation]:
        """The summaries of a stored confirmation run (default: the latest; [] if none)."""
        return stored_confirmations(self, run_id=run_id)

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
            "sampler": self._sampler_label(),
            "trials": counts,
            "front_size": len(front),
            "hypervolume": hv,
            "stopped_reason": self.store.stopped_reason(self.name),
        }


def _workers() -> Any:
    """The one late import into ``workers/`` (DESIGN.md): running and measuring trials is their
    job, and they import ``search``, so ``search`` reaches them only here, at call time."""
    import paretotune.workers

    return paretotune.workers
