"""What a bundle says about itself: `config.yaml` (config, resolved options, hardware, versions,
I/O), `measurements.json` (the trial's and the baseline's numbers with their 95% intervals, the
paired speedup, its latest confirmation) and the README."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from paretotune.export.load import BUNDLE_FORMAT, BUNDLE_MARKER, REPOSITORY_DIR
from paretotune.space import SingleStream

if TYPE_CHECKING:
    from paretotune.evaluators.evaluator import BuiltArtifact
    from paretotune.search import Study, Trial


def measurements_of(study: Study, trial: Trial) -> dict[str, Any]:
    rows = {row["trial_number"]: row for row in study.store.measurements(study.name)}
    baseline = study.baseline_trial()

    def entry(t: Trial | None) -> dict[str, Any] | None:
        if t is None:
            return None
        row = rows.get(t.number, {})
        return {
            "trial": t.number,
            "config": None if t.config is None else t.config.to_dict(),
            "metrics": dict(t.metrics),
            # metric -> [low, high]: 95% bootstrap intervals within the measuring process
            "intervals": {k: list(v) for k, v in t.intervals.items()},
            "details": row.get("details"),
        }

    from paretotune.search.confirmations import latest_confirmation

    confirmed = latest_confirmation(study, trial.number)
    return {
        "study": study.name,
        "objectives": dict(study.objectives),
        "constraints": [str(c) for c in study.constraints],
        "trial": entry(trial),
        "baseline": entry(baseline),
        "speedup": paired_speedup(trial, (rows.get(trial.number) or {}).get("details")),
        # `paretotune confirm`: the trial re-measured in fresh processes (None if never)
        "confirmation": None if confirmed is None else confirmed.to_dict(),
    }


def paired_speedup(trial: Trial, details: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """How the trial's `speedup` was measured: against the unmodified model timed in the same
    process, interleaved (the evaluator's `baseline` details), or 1 for the baseline itself."""
    if "speedup" not in trial.metrics:
        return None
    base = (details or {}).get("baseline") or {}
    if trial.is_baseline:
        how = "the baseline trial: 1 by construction (its measured ratio is in `measured`)"
    elif base.get("timing"):
        how = str(base["timing"])
    else:
        how = "reported by the evaluator (baseline_latency_p50_ms timed beside the trial)"
    blocks = base.get("block_ratios") or []
    return {
        "value": trial.metrics["speedup"],
        "interval": list(trial.intervals["speedup"]) if "speedup" in trial.intervals else None,
        "level": 0.95,
        "timing": how,
        "reference_p50_ms": base.get("p50_ms"),
        "reference_p50_ms_interval": base.get("latency_p50_ms_ci"),
        "window_ratios": base.get("window_ratios"),
        "ratio_spread": base.get("ratio_spread"),
        "blocks": len(blocks),
        "block_ratio_range": [min(blocks), max(blocks)] if blocks else None,
        **({"measured": float(sorted(blocks)[len(blocks) // 2])} if trial.is_baseline and blocks else {}),
    }


def _interval(measurements: Mapping[str, Any], metric: str) -> str:
    interval = ((measurements.get("trial") or {}).get("intervals") or {}).get(metric)
    return "" if not interval else f"{interval[0]:.6g}-{interval[1]:.6g}"


def speedup_line(measurements: Mapping[str, Any]) -> str:
    """The README's sentence on how `speedup` was measured."""
    speedup = measurements.get("speedup")
    if not speedup:
        return "No speedup recorded (the study's evaluator timed no reference)."
    line = f"Speedup {speedup['value']:.3g}x the unmodified model"
    if speedup.get("interval"):
        lo, hi = speedup["interval"]
        line += f" (95% interval {lo:.3g}-{hi:.3g})"
    line += f": {speedup['timing']}"
    if speedup.get("blocks"):
        lo, hi = speedup["block_ratio_range"]
        line += f"; median of {speedup['blocks']} block ratios ({lo:.3g}-{hi:.3g})"
    return line + "."


def bundle_config(
    study: Study,
    trial: Trial,
    built: BuiltArtifact,
    artifact: str,
    model_name: str,
    io_spec: Mapping[str, Any],
    max_batch: int,
    measurements: Mapping[str, Any],
) -> dict[str, Any]:
    from paretotune import __version__
    from paretotune.evaluators.hardware import library_versions

    details = (measurements.get("trial") or {}).get("details") or {}
    spec = built.spec
    versions = dict(library_versions())
    try:
        import optuna

        versions["optuna"] = optuna.__version__
    except ImportError:  # pragma: no cover - a dependency
        pass
    return {
        "bundle_format": BUNDLE_FORMAT,
        "paretotune": __version__,
        "study": study.name,
        "trial": trial.number,
        "storage": study.store.masked_url,
        "task": study.task_path,
        "engine": spec.engine,
        "artifact": artifact,
        "config": trial.config.to_dict() if trial.config is not None else None,
        "resolved": {
            **spec.build_dict(),
            **dict(spec.options + spec.runtime_options),  # every engine option, defaults too
            "batch_size": spec.batch_size,
            "threads": spec.threads,
        },
        "metrics": dict(trial.metrics),
        "io": {"inputs": list(io_spec["inputs"]), "outputs": list(io_spec["outputs"])},
        "triton": {
            "repository": REPOSITORY_DIR,
            "model_name": model_name,
            "max_batch_size": max_batch,
            "preferred_batch_size": spec.batch_size if max_batch else None,
            **(
                {
                    "preferred_batch_size": list(spec.batcher.targets) if max_batch else None,
                    "max_queue_delay_microseconds": spec.batcher.max_queue_delay_us,
                    "instance_count": spec.batcher.instances,
                }
                if not isinstance(study.scenario, SingleStream) else {}
            ),
        },
        "scenario": study.scenario.to_dict(),
        "hardware": details.get("hardware"),
        "versions": {
            "measured_with": (details.get("hardware") or {}).get("versions"),
            "exported_with": versions,
        },
        "build": {"cache_key": built.cache_key, "source": built.source, "details": built.details},
    }


def confirmation_line(confirmation: Mapping[str, Any] | None) -> str:
    """The README's sentence on `paretotune confirm` for this trial."""
    if not confirmation or not confirmation.get("processes"):
        return ("Not confirmed: the timings are one in-study measurement (`paretotune confirm` "
                "re-measures in fresh processes).")
    metrics, spread = confirmation["metrics"], confirmation["spread"]
    intervals = confirmation.get("intervals") or {}
    over = ""
    if "latency_p50_ms" in intervals and confirmation.get("interval_level"):
        lo, hi = intervals["latency_p50_ms"]
        over = f"{confirmation['interval_level']:.1%} interval over processes {lo:.4g}-{hi:.4g} ms, "
    line = (f"Confirmed in {confirmation['processes']} fresh processes: p50 "
            f"{metrics.get('latency_p50_ms', float('nan')):.4g} ms median ({over}spread "
            f"{100 * spread.get('latency_p50_ms', float('nan')):.1f}%, best "
            f"{confirmation.get('best_p50_ms') or float('nan'):.4g} ms)")
    if confirmation.get("speedup") is not None:
        line += f", {confirmation['speedup']:.3g}x the baseline (paired per process)"
    return line + "; see `confirmation` in measurements.json."


def readme(config: Mapping[str, Any], measurements: Mapping[str, Any]) -> str:
    metrics = config.get("metrics") or {}
    base = (measurements.get("baseline") or {}).get("metrics") or {}
    rows = "\n".join(
        f"| {m} | {metrics[m]:.6g} | {_interval(measurements, m)} | "
        + (f"{base[m]:.6g} |" if m in base else " |")
        for m in sorted(metrics)
    )
    triton = config["triton"]
    verification = config.get("verification") or {}
    engine = config["engine"]
    inputs = ", ".join(f"`{i['name']}` {i['dtype']} {i['shape']}" for i in config["io"]["inputs"])
    outputs = ", ".join(f"`{o['name']}` {o['dtype']} {o['shape']}" for o in config["io"]["outputs"])
    torch_note = f"\n{config['note']}\n" if config.get("note") else ""
    return f"""# {triton['model_name']}: trial {config['trial']} of study `{config['study']}`

Exported by paretotune {config['paretotune']} from `{config['storage']}`.
Engine `{engine}`, artifact `{config['artifact']}`; task `{config['task']}`.
Inputs: {inputs}. Outputs: {outputs} (dimension 0 is the batch).
{torch_note}
Verified on export: accuracy {verification.get('measured', float('nan')):.6g} re-measured on the
task's validation set, recorded {verification.get('recorded', float('nan')):.6g}
(tolerance {verification.get('tolerance', float('nan')):g}).
{speedup_line(measurements)}
{confirmation_line(measurements.get("confirmation"))}

## Files

- `config.yaml`: the configuration (`config`, every default in `resolved`), task, study and
  trial, the hardware it was measured on, library versions, tensor names and shapes.
- `{config['artifact']}`: the model.
- `{triton['repository']}/{triton['model_name']}/`: a Triton model repository
  (`config.pbtxt`, `1/{config['artifact']}`), max batch size {triton['max_batch_size']}.
- `measurements.json`: the trial's and the baseline's metrics, their 95% intervals and
  measurement details, how the paired `speedup` was measured (`speedup`), and the trial's
  latest confirmation in fresh processes (`paretotune confirm`), if any.
- `{BUNDLE_MARKER}`: marks this directory as a bundle; `paretotune export --overwrite`
  replaces only a directory that holds it.

## Load it in Python

```python
import paretotune as pt

predict = pt.load_exported("path/to/this/directory")
outputs = predict({{"{config['io']['inputs'][0]['name']}": batch}})   # dict: output name -> array
```

## Serve it with Triton

```bash
docker run --rm -p8000:8000 -p8001:8001 -v $PWD/{triton['repository']}:/models \\
    nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models
```

## Measurements (this trial, and the baseline)

| metric | trial | trial 95% interval | baseline |
|---|---|---|---|
{rows}

The intervals are percentile-bootstrap intervals over the calls of the measuring process
(`intervals` in measurements.json); between fresh processes a timing moves more, which is what
`paretotune confirm` measures. These numbers were measured on the hardware in `config.yaml`;
measure again on the serving machine before relying on latency or throughput.
"""
