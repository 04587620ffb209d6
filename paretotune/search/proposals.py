"""What a study does with a sampler's proposal before anything is built, and its warm start.

A proposal is measured, or answered without a build: a forbidden config is INVALID (and an
untried random config is queued, since a model-based sampler learns nothing from it and may
propose it again), a config that failed `MAX_FAILURES_PER_CONFIG` times is INVALID likewise,
and, under the default `duplicates="reuse"`, a config already measured is DUPLICATE, answered
with that measurement. Every `MAX_DUPLICATE_STREAK` such answers an untried neighbour is
queued; when none is left, measured configs are measured again (a budget larger than a finite
space). Enqueued configs (the baseline, the warm start, the user's) are always measured.

`Proposals` holds that policy for one `Study`, which hands it the Optuna study, the space
and its two ways of telling Optuna; it imports nothing of the study's.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState as OptunaState

from paretotune.errors import ConfigError, InvalidConfigError
from paretotune.search.trial import PendingTrial
from paretotune.space import Config, SearchSpace

log = logging.getLogger(__name__)

#: consecutive forbidden proposals before the sampler is declared stuck
MAX_INVALID_STREAK = 200
#: what a sampler's proposal of an already measured config gets (spec key `duplicates`)
DUPLICATE_POLICIES = ("reuse", "measure")
#: proposals of measured configs answered in one ask before the study steps to a neighbour
MAX_DUPLICATE_STREAK = 8
#: a config whose trials failed this many times is not measured again (INVALID, with why)
MAX_FAILURES_PER_CONFIG = 2
#: fail reasons that speak of the worker, not of the config: they never count against it
WORKER_FAILURES = ("worker lost", "interrupted", "store connection lost")
#: what a new study queues after its baseline (spec key `warm_start`)
WARM_STARTS = ("corners", "none", "cover")

ParamsKey = tuple[tuple[str, Any], ...]


def params_key(params: Mapping[str, Any]) -> ParamsKey:
    """Optuna params as a hashable key (the same config gives the same key)."""
    return tuple(sorted(params.items()))


class Proposals:
    """One study's answers to its sampler's proposals (see the module's docstring).

    `tell_pruned(ot)` records a trial INVALID, `tell_metrics(ot, metrics)` records it
    COMPLETE with those metrics; `needed` are the metrics a measurement must hold to be reused.
    """

    def __init__(
        self,
        optuna_study: optuna.Study,
        space: SearchSpace,
        *,
        policy: str,
        needed: Sequence[str],
        rng: random.Random,
        tell_pruned: Callable[[optuna.trial.Trial], None],
        tell_metrics: Callable[[optuna.trial.Trial, dict[str, float]], None],
    ) -> None:
        self._optuna = optuna_study
        self.space = space
        self.policy = policy
        self.needed = list(needed)
        self._rng = rng
        self._tell_pruned = tell_pruned
        self._tell_metrics = tell_metrics
        self._measured: dict[ParamsKey, optuna.trial.FrozenTrial] = {}
        self._measured_seen: set[int] = set()
        self._answered = 0  # proposals answered from earlier measurements since a step off
        #: set when a step off found no untried config: from then on, proposals of measured
        #: configs are measured again at once (a budget larger than a finite space)
        self._covered = False

    def resolve(self, ot: optuna.trial.Trial) -> PendingTrial | None:
        """The trial to evaluate, or None when this proposal was answered (INVALID or
        DUPLICATE) and the sampler must be asked again."""
        try:
            config = self.space.suggest(ot)
        except InvalidConfigError as exc:
            ot.set_user_attr("invalid_reason", str(exc))
            self._tell_pruned(ot)
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
            self._tell_pruned(ot)
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

    def _failures_of(self, params: Mapping[str, Any]) -> list[str]:
        """The reasons of earlier FAIL trials of these params, leaving out failures of the
        worker rather than the config (lost, interrupted, the store gone)."""
        key = params_key(params)
        reasons = []
        for ft in self._optuna.get_trials(deepcopy=False, states=(OptunaState.FAIL,)):
            reason = str(ft.user_attrs.get("fail_reason", ""))
            if params_key(ft.params) == key and not reason.startswith(WORKER_FAILURES):
                reasons.append(reason)
        return reasons

    def _measured_trials(self) -> dict[ParamsKey, optuna.trial.FrozenTrial]:
        """Measured (COMPLETE, not duplicate) trials by their params, read incrementally."""
        for ft in self._optuna.get_trials(deepcopy=False, states=(OptunaState.COMPLETE,)):
            if ft.number in self._measured_seen:
                continue
            self._measured_seen.add(ft.number)
            if ft.user_attrs.get("duplicate_of") is None and ft.user_attrs.get("metrics"):
                self._measured.setdefault(params_key(ft.params), ft)
        return self._measured

    def _earlier_measurement(self, ot: optuna.trial.Trial) -> optuna.trial.FrozenTrial | None:
        """The measured trial of this proposal's config, when it should be reused."""
        if self.policy != "reuse" or ot.user_attrs:  # enqueued configs carry attributes
            return None
        earlier = self._measured_trials().get(params_key(ot.params))
        if earlier is None or any(m not in earlier.user_attrs["metrics"] for m in self.needed):
            return None
        return earlier

    def _answer_duplicate(self, ot: optuna.trial.Trial, earlier: optuna.trial.FrozenTrial) -> None:
        ot.set_user_attr("duplicate_of", earlier.number)
        self._tell_metrics(ot, dict(earlier.user_attrs["metrics"]))
        log.debug("trial %d: config already measured as trial %d; reused", ot.number, earlier.number)

    def _tried(self) -> set[ParamsKey]:
        """The params of every trial so far, in any state."""
        return {params_key(ft.params) for ft in self._optuna.get_trials(deepcopy=False)}

    def _untried_sample(self, tried: set[ParamsKey] | None = None, tries: int = 50) -> Config:
        """A random valid config that no trial has tried yet (any random one if none is found)."""
        tried = self._tried() if tried is None else tried
        for _ in range(tries):
            config = self.space.sample(self._rng)
            if params_key(self.space.to_params(config)) not in tried:
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
            if params_key(self.space.to_params(neighbour)) not in tried:
                candidate = neighbour
                break
        if candidate is None:
            candidate = self._untried_sample(tried)
        params = self.space.to_params(candidate)
        if params_key(params) in tried:
            log.info("no untried config found near trial %d; it will be measured again", number)
            return False
        self._optuna.enqueue_trial(params, user_attrs={"steps_off": number})
        log.info("the sampler keeps proposing measured configs; trying a neighbour of trial %d", number)
        return True


def warm_start_configs(space: SearchSpace, baseline: Config | None = None) -> list[Config]:
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
    baseline = space.baseline() if baseline is None else baseline
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
