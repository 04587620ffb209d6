"""The serving harness's own cost on this machine: LoadGen + batcher with an engine that does nothing.

Its per-query time bounds the QPS the harness can measure honestly: an engine whose service
time is not well above it is measured as much as the harness as the engine.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from paretotune.errors import EvaluationError
from paretotune.evaluators.serving.batcher import BatcherConfig
from paretotune.evaluators.serving.fake import NoOpRunner
from paretotune.evaluators.serving.harness import LoadGenSession, loadgen_version
from paretotune.evaluators.serving.measure import MIN_QUERIES, measure_serving
from paretotune.space.scenario import Server

logger = logging.getLogger(__name__)


def loadgen_overhead(
    *, p99_ms: float = 1.0, budget_s: float = 30.0, idle_qps: float = 200.0, run_s: float = 3.0
) -> dict[str, Any]:
    """Measure the harness with a no-op engine (one instance, no batching).

    Returns the Offline samples/s and the per-query time it implies, the latency of a lightly
    loaded Server run (`idle_qps`), and the highest Server QPS LoadGen judges VALID at `p99_ms`.
    """
    inputs = {"x": np.zeros((64, 1), dtype=np.float32)}
    config = BatcherConfig()
    with LoadGenSession([NoOpRunner()], inputs, config) as session:
        offline = session.offline(20000.0, min_duration_s=run_s)
        idle = session.server(idle_qps, 1000.0, min_duration_s=run_s, min_queries=MIN_QUERIES)
    try:
        peak = measure_serving(
            NoOpRunner, inputs, Server(p99_ms=p99_ms, budget_s=budget_s), config, run_s=run_s
        )
        server: dict[str, Any] = {
            "server_noop_qps": peak.server_qps,
            "server_noop_p99_ms": peak.server_p99_ms,
            "server_converged": peak.details["converged"],
        }
    except EvaluationError as exc:  # a bound the harness itself cannot meet here
        server = {"server_noop_qps": None, "server_noop_p99_ms": None, "server_error": str(exc)}
    per_query_us = 1e6 / offline.samples_per_second if offline.samples_per_second else None
    return {
        "loadgen_version": loadgen_version(),
        "offline_noop_qps": offline.samples_per_second,
        "per_query_us": None if per_query_us is None else round(per_query_us, 2),
        "idle_qps": idle_qps,
        "idle_latency_ms": {k: idle.latency_ms[k] for k in ("p50", "p90", "p99", "max")},
        "server_bound_ms": p99_ms,
        **server,
    }
