"""Serving scenarios: the QPS a deployed server sustains, measured with MLPerf LoadGen.

The engine runs behind a Triton-style dynamic batcher (`batcher`), MLPerf LoadGen generates the
load and judges each run (`harness`), and `measure_serving` searches the highest VALID QPS
within a time budget (`measure`). LoadGen is the optional extra `paretotune[serving]`; importing
this package does not import it.
"""

from __future__ import annotations

from paretotune.evaluators.serving.batcher import (
    BatcherConfig,
    BatcherStats,
    DynamicBatcher,
    Runner,
)
from paretotune.evaluators.serving.harness import (
    INSTALL_LINE,
    LoadGenRun,
    LoadGenSession,
    loadgen_problem,
    require_loadgen,
)
from paretotune.evaluators.serving.measure import NoValidQPS, ServingResult, measure_serving
from paretotune.evaluators.serving.overhead import loadgen_overhead
from paretotune.space.scenario import (
    SCENARIO_KINDS,
    Offline,
    Scenario,
    Server,
    SingleStream,
    scenario_from_dict,
)

__all__ = [
    "INSTALL_LINE",
    "SCENARIO_KINDS",
    "BatcherConfig",
    "BatcherStats",
    "DynamicBatcher",
    "LoadGenRun",
    "LoadGenSession",
    "NoValidQPS",
    "Offline",
    "Runner",
    "Scenario",
    "Server",
    "ServingResult",
    "SingleStream",
    "loadgen_overhead",
    "loadgen_problem",
    "measure_serving",
    "require_loadgen",
    "scenario_from_dict",
]
