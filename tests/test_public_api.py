from __future__ import annotations

import paretotune as pt

EXPECTED = {
    "METRICS", "Choice", "Config", "ConfigError", "EvaluationError", "Float", "Front", "Int",
    "InvalidConfigError", "Measurement", "Offline", "ParetotuneError", "PerLayer", "SearchSpace", "Server",
    "SingleStream",
    "StorageError", "Study", "StudyError", "Task", "TaskError", "Trial", "TrialState",
    "__version__", "create_study", "export", "load_exported", "load_study", "register_sampler", "sampler_names",
}


def test_all_matches_the_public_api() -> None:
    assert set(pt.__all__) == EXPECTED
    for name in pt.__all__:
        assert getattr(pt, name) is not None, name
    public = {n for n in dir(pt) if not n.startswith("_") and not isinstance(getattr(pt, n), type(pt))}
    assert public - set(pt.__all__) == set(), "public names missing from __all__"
