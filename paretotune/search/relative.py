"""The metrics relative to the baseline trial: `accuracy_drop`, and `speedup` where the
evaluator did not pair it already."""

from __future__ import annotations

from paretotune.search.trial import PendingTrial, Trial

#: metrics measured against the baseline trial: a study naming one has a reference config
RELATIVE_METRICS = ("accuracy_drop", "speedup")


def derive_relative(pending: PendingTrial, metrics: dict[str, float], base: Trial | None) -> str | None:
    """Fill ``metrics`` with accuracy_drop and speedup against ``base`` (the completed
    baseline, or None when it failed); returns why they could not be, else None."""
    if base is None:
        return "the baseline trial did not complete, so relative metrics are unavailable"
    if "accuracy" in metrics and "accuracy" in base.metrics:
        metrics["accuracy_drop"] = base.metrics["accuracy"] - metrics["accuracy"]
    lat = metrics.get("latency_p50_ms")
    if pending.is_baseline and lat:
        metrics["speedup"] = 1.0  # the baseline against itself, by construction
        return None
    if "speedup" in metrics:  # paired by the evaluator (TaskEvaluator: per-block ratios)
        return None
    ref = metrics.get("baseline_latency_p50_ms")
    if lat and ref:
        metrics["speedup"] = ref / lat
    elif lat:
        # another trial's latency is never the reference: it was timed in another process,
        # at another time (BENCHMARKING.md rule 10)
        return (
            "speedup needs a reference timed in the same process as the trial: the evaluator "
            "returns `speedup` (paired) or `baseline_latency_p50_ms` (the unmodified model at "
            f"batch_size={pending.config.get('batch_size')}, timed beside the trial)"
        )
    return None
