"""Deployment bundles: one chosen trial, rebuilt or copied, verified, ready to serve.

`export(study, trial, out_dir)` writes::

    out_dir/
      config.yaml            the resolved config, task, study, trial, hardware, versions, I/O
      model.onnx | model.pt  the artifact (ONNX with its quantization, or TorchScript)
      model_repository/<name>/config.pbtxt, 1/<model file>   a Triton model repository
      measurements.json      the trial's and the baseline's metrics and details, and its
                             latest confirmation in fresh processes (if any)
      README.md              how to load and serve it
      .paretotune-bundle     the marker: `overwrite` replaces only a directory holding it

The artifact comes from the artifact cache when it is on this machine and is rebuilt from the
config with the study's task when it is not. Before the bundle is moved into place it is loaded
back with `load_exported` and its accuracy re-measured on the task's validation set (untimed);
a difference from the recorded accuracy beyond `tolerance` is a `VerificationError`, never a
silent export.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from paretotune import yamlsafe
from paretotune.errors import ConfigError, EvaluationError
from paretotune.search.objectives import METRICS, OPERATORS, known_metrics
from paretotune.space import SingleStream
from paretotune.storage import mask

if TYPE_CHECKING:

    from paretotune.evaluators import Task
    from paretotune.evaluators.config import BuildSpec
    from paretotune.evaluators.evaluator import BuiltArtifact
    from paretotune.evaluators.serving import BatcherConfig
    from paretotune.search import Study, Trial

log = logging.getLogger(__name__)

BUNDLE_FORMAT = 1
#: absolute difference allowed between the recorded and the re-measured accuracy
DEFAULT_TOLERANCE = 0.005
CONFIG_FILE = "config.yaml"
MEASUREMENTS_FILE = "measurements.json"
#: written into every bundle: `overwrite` replaces only a directory that holds it
BUNDLE_MARKER = ".paretotune-bundle"
_MARKER_TEXT = (
    "A paretotune deployment bundle. `paretotune export --overwrite` replaces only directories "
    "that hold this file.\n"
)
REPOSITORY_DIR = "model_repository"
#: numpy dtype name -> Triton data type
TRITON_TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "bfloat16": "TYPE_BF16",
    "object": "TYPE_STRING",
}
#: microseconds Triton's dynamic batcher waits to fill a preferred batch
MAX_QUEUE_DELAY_US = 100


class VerificationError(EvaluationError):
    """The exported artifact does not reproduce the trial's recorded accuracy."""


# -- selection rules ------------------------------------------------------------------------------

_RULE_RE = re.compile(r"^(?P<dir>max|min)\s+(?P<metric>[A-Za-z_][A-Za-z0-9_]*)(?:\s+where\s+(?P<where>.+))?$", re.I)
_CLAUSE_RE = re.compile(r"^(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op><=|>=)\s*(?P<bound>[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)$")
RULE_SYNTAX = "'max METRIC [where METRIC<=NUMBER[, METRIC>=NUMBER]...]', 'min METRIC [where ...]' or 'knee'"


def parse_pick(rule: str, extra_metrics: Sequence[str] = ()) -> dict[str, Any]:
    """Parse the CLI's selection language into `Front.pick` keyword arguments.

    ``"max throughput where accuracy_drop<=0.01, latency_p99_ms<=5"`` gives
    ``{"max": "throughput", "where": {"accuracy_drop": ("<=", 0.01), ...}}``; ``"knee"``
    gives ``{"rule": "knee"}``. Bounds are inclusive (``<=``, ``>=``), as everywhere.
    """
    if not isinstance(rule, str) or not rule.strip():
        raise ConfigError(f"pick: expected {RULE_SYNTAX}, got {rule!r}")
    text = " ".join(rule.split())
    if text.lower() == "knee":
        return {"rule": "knee"}
    match = _RULE_RE.match(text)
    if match is None:
        raise ConfigError(f"pick: expected {RULE_SYNTAX}, got {rule!r}")
    metric = match["metric"]
    _check_metric(f"pick {match['dir'].lower()}", metric, extra_metrics)
    where: dict[str, tuple[str, float]] = {}
    if match["where"] is not None:
        for raw in re.split(r",|\s+and\s+", match["where"], flags=re.I):
            clause = raw.strip()
            found = _CLAUSE_RE.match(clause)
            if found is None:
                raise ConfigError(
                    f"pick: where-clause {clause!r} must look like METRIC<=NUMBER or "
                    f"METRIC>=NUMBER (allowed operators: {list(OPERATORS)}; bounds are inclusive)"
                )
            name = found["metric"]
            _check_metric("pick where", name, extra_metrics)
            if name in where:
                raise ConfigError(f"pick: where names {name!r} twice; give one bound per metric")
            bound = float(found["bound"])
            where[name] = (found["op"], bound)
    out: dict[str, Any] = {match["dir"].lower(): metric}
    if where:
        out["where"] = where
    return out


def _check_metric(field: str, name: str, extra: Sequence[str]) -> None:
    if name not in METRICS and name not in extra:
        raise ConfigError(f"{field}: unknown metric {name!r}; known metrics: {known_metrics(extra)}")


def select_trial(study: Study, *, pick: str | None = None, trial: int | None = None) -> Trial:
    """The trial a CLI invocation names: a selection rule on the front, or a trial number."""
    if (pick is None) == (trial is None):
        raise ConfigError("export: give exactly one of --pick RULE or --trial N")
    if trial is not None:
        return _completed_trial(study, trial)
    kwargs = parse_pick(pick or "", list(study.spec.get("extra_metrics") or []))
    return study.pareto_front().pick(**kwargs)


def _completed_trial(study: Study, number: int) -> Trial:
    if isinstance(number, bool) or not isinstance(number, int):
        raise ConfigError(f"trial must be a trial number (int) or a Trial, got {number!r}")
    trials = {t.number: t for t in study.trials}
    found = trials.get(number)
    if found is None:
        done = sorted(n for n, t in trials.items() if t.state.value == "COMPLETE")
        raise ConfigError(
            f"trial: study {study.name!r} has no trial {number}; completed trials: {done}"
        )
    return found


# -- export ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """What `export` wrote, and how it was verified."""

    path: Path
    trial: int
    engine: str
    artifact: Path
    model_repository: Path
    model_name: str
    recorded_accuracy: float
    measured_accuracy: float
    artifact_source: str


def export(
    study: Study,
    trial: Trial | int,
    out_dir: str | os.PathLike[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    task: Any = None,
    cache_dir: str | os.PathLike[str] | None = None,
    model_name: str | None = None,
    overwrite: bool = False,
) -> Bundle:
    """Write a verified deployment bundle of `trial` (a Trial or its number) to `out_dir`.

    `task`: the `pt.Task` to rebuild with (default: the study's task, or its stored import
    path); `cache_dir`: the artifact cache to look in first; `tolerance`: the absolute accuracy
    difference allowed between the recorded and the re-measured value. `out_dir` must be absent
    or empty, or with `overwrite` a previous bundle (it holds `BUNDLE_MARKER`); the root, the
    home directory and the current directory (or one containing it) are always refused.
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not (
        math.isfinite(tolerance) and tolerance >= 0
    ):
        raise ConfigError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    chosen = trial if not isinstance(trial, (int, bool)) else _completed_trial(study, trial)
    if chosen.state.value != "COMPLETE":
        raise ConfigError(
            f"trial {chosen.number} of study {study.name!r} is {chosen.state.value}"
            f"{f' ({chosen.reason})' if chosen.reason else ''}; only COMPLETE trials can be exported"
        )
    if chosen.config is None:
        raise ConfigError(f"trial {chosen.number} of study {study.name!r} has no stored config")
    if "accuracy" not in chosen.metrics:
        raise ConfigError(
            f"trial {chosen.number} has no recorded 'accuracy' (metrics: {sorted(chosen.metrics)}); "
            "export verifies the rebuilt artifact against it"
        )
    config = chosen.config.to_dict()
    from paretotune.evaluators import engines

    engine = config.get("engine", "torch")
    exportable = [e.name for e in engines.registered() if e.exportable()]
    if not engines.get(engine).exportable():
        raise ConfigError(f"engine={engine!r} cannot be exported; allowed: {exportable}")
    engines.get(engine).require_here()
    out = Path(out_dir)
    _check_out_dir(out, overwrite)
    name = _model_name(model_name or f"{study.name}_trial{chosen.number}")
    task_obj = _resolve_task(study, task)

    from paretotune.evaluators import TaskEvaluator

    evaluator = TaskEvaluator(task_obj, cache_dir=cache_dir)
    started = time.perf_counter()
    built = evaluator.build_artifact(config)
    log.info(
        "trial %d: artifact %s (%.1f s)",
        chosen.number,
        "rebuilt from the config" if built.source == "built" else f"from the artifact cache ({built.source})",
        time.perf_counter() - started,
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        exported = engines.get(engine).export(built.data, built.spec, task_obj)
        artifact_name, io_spec = exported.artifact, dict(exported.io)
        for file_name, data in exported.files.items():
            (staging / file_name).write_bytes(data)
        batching = io_spec.pop("batching")
        # a server / offline study measured its batcher: that is what the repository serves
        batcher = None if isinstance(study.scenario, SingleStream) else built.spec.batcher
        max_batch = (int(built.spec.batch_size) if batcher is None else batcher.max_batch_size) if batching else 0
        repo = staging / REPOSITORY_DIR / name
        (repo / "1").mkdir(parents=True)
        for file_name, data in exported.files.items():
            (repo / "1" / file_name).write_bytes(data)
        (repo / "config.pbtxt").write_text(
            triton_config(name, engine, artifact_name, io_spec, max_batch, built.spec.threads, batcher,
                          spec=built.spec),
            encoding="utf-8",
        )
        measurements = _measurements(study, chosen)
        bundle_config = _bundle_config(study, chosen, built, artifact_name, name, io_spec, max_batch, measurements)
        bundle_config["files"] = sorted(exported.files)
        bundle_config["note"] = exported.note
        _write_yaml(staging / CONFIG_FILE, bundle_config)
        _write_text(staging / MEASUREMENTS_FILE, json.dumps(measurements, indent=2, sort_keys=True, default=str))

        recorded = float(chosen.metrics["accuracy"])
        predictor = load_exported(staging)
        first = predictor.output_names[0]
        measured = evaluator.measure_accuracy(lambda inputs: predictor(inputs)[first])
        difference = abs(measured - recorded)
        bundle_config["verification"] = {
            "metric": "accuracy",
            "recorded": recorded,
            "measured": measured,
            "difference": difference,
            "tolerance": float(tolerance),
            "artifact_source": "artifact cache" if built.source in ("disk", "memory") else "rebuilt from the config",
            "passed": difference <= tolerance,
        }
        if difference > tolerance:
            raise VerificationError(
                f"export of trial {chosen.number}: the exported {engine} artifact scores "
                f"accuracy={measured:.6g} on the task's validation set, but the study recorded "
                f"{recorded:.6g} (difference {difference:.3g} > tolerance {tolerance:g}); the "
                f"artifact ({'from the artifact cache' if built.source != 'built' else 'rebuilt'}) "
                "or the task differs from what was measured, so nothing was exported"
            )
        _write_yaml(staging / CONFIG_FILE, bundle_config)
        _write_text(staging / "README.md", _readme(bundle_config, measurements))
        (staging / BUNDLE_MARKER).write_text(_MARKER_TEXT, encoding="utf-8")
        os.chmod(staging, 0o755)  # mkdtemp made it private
        _replace_dir(staging, out, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("exported trial %d of %r to %s (accuracy %.6g, recorded %.6g)", chosen.number, study.name, out, measured, recorded)
    return Bundle(
        path=out,
        trial=chosen.number,
        engine=engine,
        artifact=out / artifact_name,
        model_repository=out / REPOSITORY_DIR,
        model_name=name,
        recorded_accuracy=recorded,
        measured_accuracy=measured,
        artifact_source=built.source,
    )


def _check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse an `out_dir` that export must not replace (nothing is removed here).

    Allowed: a new or empty directory, or (with `overwrite`) a previous bundle, which holds the
    `BUNDLE_MARKER` file. Never the filesystem root, the home directory, the current directory
    or a directory that contains it, whatever they hold.
    """
    where = f"out_dir (--out) {str(out)!r}"
    allowed = (
        f"allowed: a new or empty directory, or a previous bundle (a directory holding "
        f"{BUNDLE_MARKER}) with overwrite=True (--overwrite)"
    )
    if out.is_symlink():
        raise ConfigError(f"{where} is a symbolic link; give the directory itself; {allowed}")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{where} exists and is not a directory; {allowed}")
    protected = _protected(out)
    if protected is not None:
        raise ConfigError(f"{where} is {protected}, which export never replaces; {allowed}")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ConfigError(
            f"{where} exists and is not empty; choose another directory or pass "
            "overwrite=True (CLI: --overwrite) to replace a previous bundle"
        )
    if not (out / BUNDLE_MARKER).is_file():
        raise ConfigError(
            f"{where} is not empty and is not a paretotune bundle (it has no {BUNDLE_MARKER}), "
            f"so overwrite=True (--overwrite) does not replace it; {allowed}"
        )


def _protected(out: Path) -> str | None:
    """What `out` is when it is a directory export must never remove, else None."""
    target = out.resolve()
    if target == Path(target.anchor):
        return "the filesystem root"
    homes = {Path(os.path.expanduser("~")).resolve()}
    try:
        homes.add(Path.home().resolve())
    except RuntimeError:  # no home directory known
        pass
    if target in homes:
        return "the home directory"
    cwd = Path.cwd().resolve()
    if target == cwd:
        return "the current directory"
    if target in cwd.parents:
        return f"an ancestor of the current directory ({str(cwd)!r})"
    return None


def _replace_dir(staging: Path, out: Path, overwrite: bool) -> None:
    """Move the finished `staging` directory to `out`, replacing an empty directory or (with
    `overwrite`) a previous bundle; `out` is checked again first, since the build took time."""
    _check_out_dir(out, overwrite)
    if not out.exists():
        os.replace(staging, out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        os.replace(staging, out)
        return
    previous = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, previous / "bundle")  # the old bundle stays whole until the new one is in
    try:
        os.replace(staging, out)
    except BaseException:
        os.replace(previous / "bundle", out)
        previous.rmdir()
        raise
    shutil.rmtree(previous, ignore_errors=True)


def _model_name(raw: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", raw).strip("._") or "model"
    return name[:128]


def _resolve_task(study: Study, task: Any) -> Task:
    from paretotune.evaluators import Task
    from paretotune.workers.pool import study_task

    task = study_task(study, task, purpose="pass task=pt.Task(...) to export (the artifact is "
                      "rebuilt and verified with it)")
    if not isinstance(task, Task):
        raise ConfigError(
            f"export needs a pt.Task to build and verify the artifact, got {type(task).__name__} "
            f"(task={study.task_path!r})"
        )
    return task


def _write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    plain = json.loads(json.dumps(data, default=str))  # numpy scalars and paths as plain values
    _write_text(path, yaml.safe_dump(plain, sort_keys=False))


def _write_text(path: Path, text: str) -> None:
    """Every text file of a bundle goes through `mask`: no password ever lands on disk."""
    path.write_text(mask(text), encoding="utf-8")


# -- Triton ---------------------------------------------------------------------------------------


def triton_config(
    name: str,
    engine: str,
    artifact: str,
    io_spec: Mapping[str, Any],
    max_batch_size: int,
    threads: int,
    batcher: BatcherConfig | None = None,
    *,
    spec: BuildSpec | None = None,
) -> str:
    """A Triton `config.pbtxt` (protobuf text format of inference.ModelConfig).

    With batching (`max_batch_size` > 0) dims leave out the batch dimension. The dynamic
    batcher is the one a server or offline study measured (`batcher`: preferred sizes, queue
    delay, instance count); a single-stream study's prefers the trial's batch size. The
    backend or platform and its parameters are the engine's (`Engine.triton_layout`; `spec`:
    the trial's, for engines whose parameters follow its options).
    """
    from paretotune.evaluators import engines

    layout = engines.get(engine).triton_layout(threads, spec)

    def tensor(spec: Mapping[str, Any]) -> str:
        dtype = TRITON_TYPES.get(spec["dtype"])
        if dtype is None:
            raise EvaluationError(
                f"tensor {spec['name']!r} has dtype {spec['dtype']!r}, which Triton cannot serve; "
                f"supported: {sorted(TRITON_TYPES)}"
            )
        shape = list(spec["shape"][1:] if max_batch_size > 0 else spec["shape"])
        return (
            "  {\n"
            f"    name: {_quote(spec.get('triton_name', spec['name']))}\n"
            f"    data_type: {dtype}\n"
            f"    dims: [ {', '.join(str(d) for d in shape)} ]\n"
            "  }"
        )

    lines = [
        f"name: {_quote(name)}",
        *([f"platform: {_quote(layout.platform)}"] if layout.platform else []),
        f"backend: {_quote(layout.backend)}",
        f"max_batch_size: {int(max_batch_size)}",
        f"default_model_filename: {_quote(artifact)}",
        "input [\n" + ",\n".join(tensor(s) for s in io_spec["inputs"]) + "\n]",
        "output [\n" + ",\n".join(tensor(s) for s in io_spec["outputs"]) + "\n]",
    ]
    preferred = [int(max_batch_size)] if batcher is None else list(batcher.targets)
    delay = MAX_QUEUE_DELAY_US if batcher is None else batcher.max_queue_delay_us
    if max_batch_size > 0:
        lines.append(
            "dynamic_batching {\n"
            f"  preferred_batch_size: [ {', '.join(str(p) for p in preferred)} ]\n"
            f"  max_queue_delay_microseconds: {int(delay)}\n"
            "}"
        )
    count = 1 if batcher is None else batcher.instances
    lines.append(f"instance_group [\n  {{\n    count: {int(count)}\n    kind: {layout.kind}\n  }}\n]")
    for key, value in layout.parameters.items():
        lines.append(
            "parameters {\n"
            f"  key: {_quote(key)}\n"
            f"  value: {{ string_value: {_quote(str(value))} }}\n"
            "}"
        )
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return json.dumps(text)


# -- config.yaml, measurements.json, README -------------------------------------------------------


def _measurements(study: Study, trial: Trial) -> dict[str, Any]:
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
        # `paretotune confirm`: the trial re-measured in fresh processes (None if never)
        "confirmation": None if confirmed is None else confirmed.to_dict(),
    }


def _bundle_config(
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


def _confirmation_line(confirmation: Mapping[str, Any] | None) -> str:
    """The README's sentence on `paretotune confirm` for this trial."""
    if not confirmation or not confirmation.get("processes"):
        return ("Not confirmed: the timings are one in-study measurement (`paretotune confirm` "
                "re-measures in fresh processes).")
    metrics, spread = confirmation["metrics"], confirmation["spread"]
    line = (f"Confirmed in {confirmation['processes']} fresh processes: p50 "
            f"{metrics.get('latency_p50_ms', float('nan')):.4g} ms median (spread "
            f"{100 * spread.get('latency_p50_ms', float('nan')):.1f}%, best "
            f"{confirmation.get('best_p50_ms') or float('nan'):.4g} ms)")
    if confirmation.get("speedup") is not None:
        line += f", {confirmation['speedup']:.3g}x the baseline (paired per process)"
    return line + "; see `confirmation` in measurements.json."


def _readme(config: Mapping[str, Any], measurements: Mapping[str, Any]) -> str:
    metrics = config.get("metrics") or {}
    base = (measurements.get("baseline") or {}).get("metrics") or {}
    rows = "\n".join(
        f"| {m} | {metrics[m]:.6g} | {base[m]:.6g} |" if m in base else f"| {m} | {metrics[m]:.6g} | |"
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
{_confirmation_line(measurements.get("confirmation"))}

## Files

- `config.yaml`: the configuration (`config`, every default in `resolved`), task, study and
  trial, the hardware it was measured on, library versions, tensor names and shapes.
- `{config['artifact']}`: the model.
- `{triton['repository']}/{triton['model_name']}/`: a Triton model repository
  (`config.pbtxt`, `1/{config['artifact']}`), max batch size {triton['max_batch_size']}.
- `measurements.json`: the trial's and the baseline's metrics and measurement details, and
  the trial's latest confirmation in fresh processes (`paretotune confirm`), if any.
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

| metric | trial | baseline |
|---|---|---|
{rows}

These numbers were measured on the hardware in `config.yaml`; measure again on the serving
machine before relying on latency or throughput.
"""


# -- loading --------------------------------------------------------------------------------------


class ExportedModel:
    """A loaded bundle: ``model(inputs) -> {output name: array}``.

    `inputs` is a mapping of input name to array (or one array when the model has one input).
    """

    def __init__(self, path: Path, config: Mapping[str, Any]) -> None:
        self.path = path
        self.config = dict(config)
        self.engine: str = config["engine"]
        self.input_specs: list[dict[str, Any]] = list(config["io"]["inputs"])
        self.output_specs: list[dict[str, Any]] = list(config["io"]["outputs"])
        self.input_names = [s["name"] for s in self.input_specs]
        self.output_names = [s["name"] for s in self.output_specs]
        threads = int((config.get("resolved") or {}).get("threads") or 1)
        artifact = path / config["artifact"]
        if not artifact.is_file():
            raise ConfigError(f"bundle {str(path)!r}: artifact {config['artifact']!r} is missing")
        from paretotune.evaluators import engines

        loadable = [e.name for e in engines.registered() if e.exportable()]
        if self.engine not in loadable:
            raise ConfigError(f"bundle {str(path)!r}: engine {self.engine!r} cannot be loaded here; allowed: {loadable}")
        missing = [f for f in config.get("files") or [] if not (path / f).is_file()]
        if missing:
            raise ConfigError(f"bundle {str(path)!r}: files {missing} are missing")
        self._run = engines.get(self.engine).load_exported(path, {**config, "resolved": {**(config.get("resolved") or {}), "threads": threads}})

    def __repr__(self) -> str:
        return f"ExportedModel({str(self.path)!r}, engine={self.engine!r})"

    def __call__(self, inputs: Mapping[str, Any] | Any) -> dict[str, np.ndarray]:
        if not isinstance(inputs, Mapping):
            if len(self.input_names) != 1:
                raise ConfigError(
                    f"inputs: this model takes {self.input_names}; pass a mapping of name to array"
                )
            inputs = {self.input_names[0]: inputs}
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ConfigError(f"inputs: missing {missing}; the model takes {self.input_names}, got {sorted(inputs)}")
        feeds = {
            s["name"]: np.ascontiguousarray(np.asarray(inputs[s["name"]]).astype(s["dtype"], copy=False))
            for s in self.input_specs
        }
        return dict(zip(self.output_names, self._run(feeds), strict=True))


def load_exported(path: str | os.PathLike[str]) -> ExportedModel:
    """Load a bundle written by `export`: a callable giving the exported model's outputs."""
    root = Path(path)
    config_path = root / CONFIG_FILE
    try:
        config = yamlsafe.load(config_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{str(root)!r} is not an exported bundle: cannot read {CONFIG_FILE} ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{str(config_path)!r} is not valid YAML: {exc}") from None
    if not isinstance(config, Mapping) or config.get("bundle_format") != BUNDLE_FORMAT:
        got = config.get("bundle_format") if isinstance(config, Mapping) else None
        raise ConfigError(
            f"{str(config_path)!r}: bundle_format must be {BUNDLE_FORMAT}, got {got!r}"
        )
    for key in ("engine", "artifact", "io"):
        if key not in config:
            raise ConfigError(f"{str(config_path)!r} has no {key!r}; re-export the bundle")
    return ExportedModel(root, config)


__all__ = [
    "DEFAULT_TOLERANCE",
    "Bundle",
    "ExportedModel",
    "VerificationError",
    "export",
    "load_exported",
    "parse_pick",
    "select_trial",
    "triton_config",
]

