"""`export(study, trial, out_dir)`: one chosen trial, rebuilt or copied, verified, moved into
place. The layout is in the package's docstring; nothing is replaced but a previous bundle."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from paretotune.errors import ConfigError, EvaluationError
from paretotune.export.load import (
    BUNDLE_MARKER,
    CONFIG_FILE,
    MEASUREMENTS_FILE,
    REPOSITORY_DIR,
    load_exported,
)
from paretotune.export.manifest import bundle_config, measurements_of, readme
from paretotune.export.triton import triton_config
from paretotune.search.pick import trial_by_number
from paretotune.search.trial import TrialState
from paretotune.space import SingleStream
from paretotune.storage import mask

if TYPE_CHECKING:
    from paretotune.search import Study, Trial

log = logging.getLogger(__name__)

#: absolute difference allowed between the recorded and the re-measured accuracy
DEFAULT_TOLERANCE = 0.005
_MARKER_TEXT = (
    "A paretotune deployment bundle. `paretotune export --overwrite` replaces only directories "
    "that hold this file.\n"
)


class VerificationError(EvaluationError):
    """The exported artifact does not reproduce the trial's recorded accuracy."""


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
    chosen = trial if not isinstance(trial, (int, bool)) else trial_by_number(study, trial)
    if chosen.state != TrialState.COMPLETE:
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
    from paretotune.workers.pool import study_task

    task_obj = study_task(study, task, need_task=True,
                          purpose="export rebuilds and verifies the artifact with the study's task "
                                  "(pass task=pt.Task(...))")

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
        measurements = measurements_of(study, chosen)
        manifest = bundle_config(study, chosen, built, artifact_name, name, io_spec, max_batch, measurements)
        manifest["files"] = sorted(exported.files)
        manifest["note"] = exported.note
        _write_yaml(staging / CONFIG_FILE, manifest)
        _write_text(staging / MEASUREMENTS_FILE, json.dumps(measurements, indent=2, sort_keys=True, default=str))

        recorded = float(chosen.metrics["accuracy"])
        predictor = load_exported(staging)
        first = predictor.output_names[0]
        measured = evaluator.measure_accuracy(lambda inputs: predictor(inputs)[first])
        difference = abs(measured - recorded)
        manifest["verification"] = {
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
        _write_yaml(staging / CONFIG_FILE, manifest)
        _write_text(staging / "README.md", readme(manifest, measurements))
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


def _write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    plain = json.loads(json.dumps(data, default=str))  # numpy scalars and paths as plain values
    _write_text(path, yaml.safe_dump(plain, sort_keys=False))


def _write_text(path: Path, text: str) -> None:
    """Every text file of a bundle goes through `mask`: no password ever lands on disk."""
    path.write_text(mask(text), encoding="utf-8")
