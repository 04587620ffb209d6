"""paretotune: multi-objective search over deployment settings, proven by real measurements.

    import paretotune as pt
    study = pt.create_study("digits-cpu", task="examples.digits:task",
                            objectives={"latency_p50_ms": "min", "accuracy": "max"})
    study.optimize(None, n_trials=30, n_workers=2)
    front = study.pareto_front()
"""

from __future__ import annotations as _annotations

from typing import Any as _Any

from paretotune.api import create_study, load_study, submit
from paretotune.errors import (
    ConfigError,
    EvaluationError,
    InvalidConfigError,
    ParetotuneError,
    StorageError,
    StudyError,
    TaskError,
)
from paretotune.export import export, load_exported
from paretotune.search import (
    METRICS,
    Front,
    Study,
    Trial,
    TrialState,
    register_sampler,
    sampler_names,
)
from paretotune.space import (
    Choice,
    Config,
    Float,
    Int,
    Offline,
    PerLayer,
    SearchSpace,
    Server,
    SingleStream,
)

__version__ = "0.1.0"

# Engine-side names load on first use, so `import paretotune` (and the CLI) stays light.
_LAZY = {
    "Task": "paretotune.evaluators",
    "Measurement": "paretotune.evaluators",
}

__all__ = [
    "METRICS",
    "Choice",
    "Config",
    "ConfigError",
    "EvaluationError",
    "Float",
    "Front",
    "Int",
    "InvalidConfigError",
    "Measurement",
    "Offline",
    "ParetotuneError",
    "PerLayer",
    "SearchSpace",
    "Server",
    "SingleStream",
    "StorageError",
    "Study",
    "StudyError",
    "Task",
    "TaskError",
    "Trial",
    "TrialState",
    "__version__",
    "create_study",
    "export",
    "load_exported",
    "load_study",
    "register_sampler",
    "sampler_names",
    "submit",
]


def __getattr__(name: str) -> _Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'paretotune' has no attribute {name!r}")
