"""Studies: ask/tell over a search space, objectives, constraints, Pareto front, hypervolume."""

from __future__ import annotations

from paretotune.search.objectives import METRICS, Constraint
from paretotune.search.pareto import Front
from paretotune.search.samplers import register_sampler, sampler_names
from paretotune.search.spec import StudySpec
from paretotune.search.studies import create_study_from_spec, load_study_from_store
from paretotune.search.study import Study
from paretotune.search.trial import PendingTrial, Trial, TrialState

__all__ = [
    "METRICS",
    "Constraint",
    "Front",
    "PendingTrial",
    "Study",
    "Trial",
    "TrialState",
    "StudySpec",
    "create_study_from_spec",
    "load_study_from_store",
    "register_sampler",
    "sampler_names",
]
