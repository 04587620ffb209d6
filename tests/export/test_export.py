"""Deployment bundles: layout, Triton config, verification, loading, selection rules."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from _triton_schema import parse_model_config
from conftest import CONFIGS, Recorded, record_study

import paretotune as pt
from examples.digits import load_data
from paretotune.cli import main
from paretotune.evaluators import TaskEvaluator, load_task
from paretotune.evaluators.sources import load_torch_module
from paretotune.evaluators.torch_engine import TorchRunner
from paretotune.export import BUNDLE_MARKER, ExportedModel, VerificationError, parse_pick

ORT_TRIAL, TORCH_TRIAL = 1, 2


class _Planted:
    """Unpickled, it creates `marker` (`open(marker, "w")`): code a planted cache file runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def plant_pickle(cache: Path, key: str, marker: Path) -> None:
    """Replace the data of cache entry `key` by that pickle, its hash recorded to match (what a
    local user who can write the cache directory could do)."""
    buffer = io.BytesIO()
    torch.save(_Planted(marker), buffer)
    data = buffer.getvalue()
    (cache / f"{key}.bin").write_bytes(data)
    meta = json.loads((cache / f"{key}.json").read_text())
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    (cache / f"{key}.json").write_text(json.dumps(meta))


def _accuracy(model: ExportedModel) -> float:
    data = load_data()
    logits = model({"image": data.val_x})["logits"]
    return float(np.mean(logits.argmax(axis=1) == data.val_y))


def test_onnx_bundle_is_complete_and_valid(digits_study: Recorded, tmp_path: Path) -> None:
    study = digits_study.study
    trial = study.trial(ORT_TRIAL)
    bundle = pt.export(study, trial, tmp_path / "bundle", cache_dir=digits_study.cache_dir)
    root = bundle.path
    assert bundle.artifact_source == "disk"  # the worker's cache is on this machine
    assert sorted(p.name for p in root.iterdir()) == [
        ".paretotune-bundle", "README.md", "config.yaml", "measurements.json", "model.onnx",
        "model_repository",
    ]
    onnx.checker.check_model(str(root / "model.onnx"))

    config = yaml.safe_load((root / "config.yaml").read_text())
    assert config["study"] == "digits-export" and config["trial"] == ORT_TRIAL
    assert config["task"] == "examples.digits:task"
    assert config["config"] == trial.config.to_dict()
    assert config["resolved"]["quant_mode"] == "static" and config["resolved"]["threads"] == 1
    details = {r["trial_number"]: r["details"] for r in study.store.measurements(study.name)}
    assert config["hardware"] == details[ORT_TRIAL]["hardware"]
    assert config["versions"]["exported_with"]["onnxruntime"]
    assert config["storage"] == study.store.masked_url
    assert config["verification"]["passed"] is True
    assert abs(config["verification"]["measured"] - trial.metrics["accuracy"]) <= 0.005

    # the Triton repository: strict protobuf text, fields from the config and the model
    model_dir = root / "model_repository" / bundle.model_name
    assert (model_dir / "1" / "model.onnx").read_bytes() == (root / "model.onnx").read_bytes()
    triton = parse_model_config((model_dir / "config.pbtxt").read_text())
    assert triton.name == bundle.model_name == "digits-export_trial1"
    assert triton.platform == "onnxruntime_onnx" and triton.backend == "onnxruntime"
    assert triton.max_batch_size == trial.config["batch_size"] == 8
    assert list(triton.dynamic_batching.preferred_batch_size) == [8]
    graph = onnx.load(str(root / "model.onnx")).graph
    assert [i.name for i in triton.input] == [i.name for i in graph.input] == ["image"]
    assert [o.name for o in triton.output] == [o.name for o in graph.output] == ["logits"]
    assert list(triton.input[0].dims) == [1, 8, 8] and list(triton.output[0].dims) == [10]
    assert triton.input[0].data_type == 11  # TYPE_FP32
    assert [g.kind for g in triton.instance_group] == [2]  # KIND_CPU
    assert triton.parameters["intra_op_thread_count"].string_value == "1"

    measurements = json.loads((root / "measurements.json").read_text())
    assert measurements["trial"]["metrics"] == trial.metrics
    assert measurements["baseline"]["trial"] == 0
    assert measurements["baseline"]["metrics"] == study.baseline_trial().metrics
    readme = (root / "README.md").read_text()
    assert "pt.load_exported" in readme
    # the intervals and the paired speedup travel with the bundle
    intervals = measurements["trial"]["intervals"]
    assert intervals["latency_p50_ms"] == list(trial.intervals["latency_p50_ms"])
    lo, hi = intervals["latency_p50_ms"]
    assert lo <= trial.metrics["latency_p50_ms"] <= hi and "throughput" in intervals
    speedup = measurements["speedup"]
    assert speedup["value"] == trial.metrics["speedup"] and speedup["timing"].startswith("paired")
    assert speedup["interval"] == list(trial.intervals["speedup"]) and speedup["blocks"] >= 3
    assert speedup["reference_p50_ms"] == trial.metrics["baseline_latency_p50_ms"]
    assert f"| latency_p50_ms | {trial.metrics['latency_p50_ms']:.6g} | {lo:.6g}-{hi:.6g} |" in readme
    assert f"Speedup {trial.metrics['speedup']:.3g}x the unmodified model (95% interval " in readme
    assert measurements["baseline"]["intervals"]["speedup"] == [1.0, 1.0]


def test_torch_trial_is_rebuilt_without_the_cache_and_loads_back(digits_study: Recorded, tmp_path: Path) -> None:
    study = digits_study.study
    trial = study.trial(TORCH_TRIAL)
    bundle = pt.export(study, TORCH_TRIAL, tmp_path / "bundle", cache_dir=tmp_path / "empty-cache")
    assert bundle.artifact_source == "built"
    triton = parse_model_config((bundle.model_repository / bundle.model_name / "config.pbtxt").read_text())
    assert triton.platform == "pytorch_libtorch"
    assert [i.name for i in triton.input] == ["image__0"] and [o.name for o in triton.output] == ["logits__0"]
    assert (bundle.model_repository / bundle.model_name / "1" / "model.pt").is_file()

    model = pt.load_exported(bundle.path)
    assert abs(_accuracy(model) - trial.metrics["accuracy"]) <= 0.005
    # the same outputs as the engine's own module, at a batch size never traced
    task = load_task("examples.digits:task")
    built = TaskEvaluator(task, cache_dir=tmp_path / "empty-cache").build_artifact(trial.config)
    batch = {"image": load_data().val_x[:5]}
    expected = TorchRunner(load_torch_module(task, built.spec, built.data), ["image"]).run(batch)
    np.testing.assert_allclose(model(batch)["logits"], expected, rtol=1e-5, atol=1e-5)


def test_load_exported_reproduces_the_onnx_trial(digits_study: Recorded, tmp_path: Path) -> None:
    study = digits_study.study
    bundle = pt.export(study, ORT_TRIAL, tmp_path / "b", cache_dir=digits_study.cache_dir)
    model = pt.load_exported(bundle.path)
    assert model.input_names == ["image"] and model.output_names == ["logits"]
    assert abs(_accuracy(model) - study.trial(ORT_TRIAL).metrics["accuracy"]) <= 0.005
    one = load_data().val_x[:3]
    np.testing.assert_allclose(model(one)["logits"], model({"image": one})["logits"])
    with pytest.raises(pt.ConfigError, match="missing \\['image'\\]"):
        model({"pixels": one})


def _cache_copy(recorded: Recorded, tmp_path: Path, trial: int) -> tuple[Path, str]:
    """A copy of the study's artifact cache to tamper with, and the cache key of `trial`."""
    cache = tmp_path / "cache"
    shutil.copytree(recorded.cache_dir, cache)
    config = recorded.study.trial(trial).config
    return cache, TaskEvaluator(load_task("examples.digits:task"), cache_dir=cache).build_artifact(config).cache_key


def test_verification_catches_a_corrupted_cached_artifact(digits_study: Recorded, tmp_path: Path) -> None:
    study = digits_study.study
    cache, key = _cache_copy(digits_study, tmp_path, ORT_TRIAL)
    blob = cache / f"{key}.bin"
    model = onnx.load_from_string(blob.read_bytes())
    rng = np.random.default_rng(0)
    scrambled = 0
    for init in model.graph.initializer:  # scramble the fc2 weight matrix: still a valid model
        array = onnx.numpy_helper.to_array(init)
        if "fc2" in init.name and array.ndim == 2:
            noise = rng.integers(-100, 100, array.shape) if array.dtype.kind in "iu" else rng.standard_normal(array.shape)
            init.CopyFrom(onnx.numpy_helper.from_array(noise.astype(array.dtype), init.name))
            scrambled += 1
    assert scrambled == 1
    data = model.SerializeToString()
    blob.write_bytes(data)
    # the entry's recorded hash no longer matches: it is not used, the artifact is rebuilt
    rebuilt = pt.export(study, ORT_TRIAL, tmp_path / "rebuilt", cache_dir=cache)
    assert rebuilt.artifact_source == "built"

    blob.write_bytes(data)  # scrambled again, now with a matching hash (a wrong build, a planted file)
    meta_path = cache / f"{key}.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "sha256": hashlib.sha256(data).hexdigest()}))
    with pytest.raises(VerificationError, match=r"recorded 0\.9\d+ \(difference .* > tolerance 0\.005\)"):
        pt.export(study, ORT_TRIAL, tmp_path / "bundle", cache_dir=cache)
    assert not (tmp_path / "bundle").exists()
    assert not any(p.name.startswith(".bundle.tmp") for p in tmp_path.iterdir())


def test_a_planted_pickle_in_the_cache_is_not_run_at_export(digits_study: Recorded, tmp_path: Path) -> None:
    study = digits_study.study
    cache, key = _cache_copy(digits_study, tmp_path, TORCH_TRIAL)
    marker = tmp_path / "planted-code-ran"
    plant_pickle(cache, key, marker)
    bundle = pt.export(study, TORCH_TRIAL, tmp_path / "bundle", cache_dir=cache)
    assert not marker.exists()
    assert bundle.artifact_source == "built"  # the planted entry is not an artifact: rebuilt
    assert abs(bundle.measured_accuracy - study.trial(TORCH_TRIAL).metrics["accuracy"]) <= 0.005


def test_verification_catches_a_tampered_record(digits_study: Recorded, tmp_path: Path) -> None:
    trial = digits_study.study.trial(ORT_TRIAL)
    tampered = dataclasses.replace(trial, metrics={**trial.metrics, "accuracy": trial.metrics["accuracy"] + 0.01})
    with pytest.raises(VerificationError, match="tolerance 0.005"):
        pt.export(digits_study.study, tampered, tmp_path / "bundle", cache_dir=digits_study.cache_dir)
    # the same record passes with a tolerance that covers the difference
    bundle = pt.export(digits_study.study, tampered, tmp_path / "bundle", cache_dir=digits_study.cache_dir, tolerance=0.02)
    assert bundle.recorded_accuracy - bundle.measured_accuracy == pytest.approx(0.01)


def test_export_refuses_what_it_cannot_export(digits_study: Recorded, tmp_path: Path) -> None:
    study = digits_study.study
    failed = next(t for t in study.trials if t.state == pt.TrialState.FAIL)
    with pytest.raises(pt.ConfigError, match=rf"trial {failed.number} .* is FAIL \(killed by SIGKILL"):
        pt.export(study, failed.number, tmp_path / "a")
    with pytest.raises(pt.ConfigError, match=r"has no trial 999; completed trials: \[0, 1, 2\]"):
        pt.export(study, 999, tmp_path / "a")
    with pytest.raises(pt.ConfigError, match="tolerance must be a finite number >= 0, got -0.1"):
        pt.export(study, ORT_TRIAL, tmp_path / "a", tolerance=-0.1)
    trt = dataclasses.replace(study.trial(ORT_TRIAL), config=pt.Config({"engine": "tensorrt", "batch_size": 8}))
    with pytest.raises(pt.EvaluationError, match="TensorRT engine.plan is not available on this machine"):
        pt.export(study, trt, tmp_path / "a")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(pt.ConfigError, match="exists and is not empty"):
        pt.export(study, ORT_TRIAL, tmp_path / "full", cache_dir=digits_study.cache_dir)
    assert (tmp_path / "full" / "keep.txt").read_text() == "x"
    with pytest.raises(pt.ConfigError, match=r"is not empty and is not a paretotune bundle"):
        pt.export(study, ORT_TRIAL, tmp_path / "full", cache_dir=digits_study.cache_dir, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["keep.txt"]


def test_overwrite_replaces_a_previous_bundle(digits_study: Recorded, tmp_path: Path) -> None:
    study, cache = digits_study.study, digits_study.cache_dir
    first = pt.export(study, ORT_TRIAL, tmp_path / "bundle", cache_dir=cache)
    assert (first.path / BUNDLE_MARKER).is_file()
    (first.path / "stale.txt").write_text("from the first export")
    second = pt.export(study, TORCH_TRIAL, tmp_path / "bundle", cache_dir=cache, overwrite=True)
    names = sorted(p.name for p in second.path.iterdir())
    assert "stale.txt" not in names and "model.pt" in names and BUNDLE_MARKER in names
    assert yaml.safe_load((second.path / "config.yaml").read_text())["trial"] == TORCH_TRIAL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging or old copy left


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("", "expected 'max METRIC"),
        ("fastest", "got 'fastest'"),
        ("max", "got 'max'"),
        ("max thruput", "unknown metric 'thruput'; known metrics: \\['latency_p50_ms'"),
        ("max throughput where accuracy_drop<0.01", "where-clause 'accuracy_drop<0.01' must look like METRIC<=NUMBER"),
        ("max throughput where accuracy_drop<=abc", "where-clause 'accuracy_drop<=abc'"),
        ("min latency_p50_ms where latency_p99_ms<=5, latency_p99_ms<=6", "names 'latency_p99_ms' twice"),
        ("max throughput where acc<=0.1", "pick where: unknown metric 'acc'"),
    ],
)
def test_bad_selection_rules_say_what_is_allowed(rule: str, message: str) -> None:
    with pytest.raises(pt.ConfigError, match=message):
        parse_pick(rule)


def test_selection_rules_parse() -> None:
    assert parse_pick("knee") == {"rule": "knee"}
    assert parse_pick("  MAX throughput  where accuracy_drop<=0.01, latency_p99_ms <= 5e0") == {
        "max": "throughput", "where": {"accuracy_drop": ("<=", 0.01), "latency_p99_ms": ("<=", 5.0)},
    }
    assert parse_pick("min latency_p50_ms where accuracy>=0.9 and model_bytes<=1e6") == {
        "min": "latency_p50_ms", "where": {"accuracy": (">=", 0.9), "model_bytes": ("<=", 1e6)},
    }


def test_cli_export_picks_by_rule_and_reports_bad_rules(
    digits_study: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["export", "digits-export", "--storage", digits_study.url, "--cache-dir", str(digits_study.cache_dir)]
    rule = "max throughput where accuracy_drop<=0.01"
    assert main([*base, "--pick", rule, "--out", str(tmp_path / "cli")]) == 0
    expected = digits_study.study.pareto_front().pick(**parse_pick(rule))
    assert yaml.safe_load((tmp_path / "cli" / "config.yaml").read_text())["trial"] == expected.number
    assert f"exported trial {expected.number}" in capsys.readouterr().out

    assert main([*base, "--pick", "max throughput where accuracy_drop<0.01", "--out", str(tmp_path / "x")]) == 2
    assert "error: pick: where-clause 'accuracy_drop<0.01'" in capsys.readouterr().err
    assert main([*base, "--pick", "max accuracy where accuracy_drop>=0.5", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "no trial on the front satisfies accuracy_drop >= 0.5; the closest are:" in err
    assert "violates accuracy_drop >= 0.5" in err
    assert main([*base, "--trial", "42", "--out", str(tmp_path / "x")]) == 2
    assert "has no trial 42" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.postgres
def test_export_from_postgresql_never_writes_the_password(
    pg_url: str, pg_cluster: object, digits_study: Recorded, tmp_path: Path
) -> None:
    password = pg_cluster.password  # type: ignore[attr-defined]
    assert password in pg_url
    cache = tmp_path / "cache"
    shutil.copytree(digits_study.cache_dir, cache)  # builds come from the cache: a fast study
    study = record_study("digits-pg", pg_url, cache, CONFIGS[:1], failure_reason=f"lost {pg_url}")
    bundle = pt.export(pt.load_study("digits-pg", pg_url), 1, tmp_path / "bundle", cache_dir=cache)
    config = yaml.safe_load((bundle.path / "config.yaml").read_text())
    assert config["storage"] == study.store.masked_url and ":***@" in config["storage"]
    for path in bundle.path.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path

    report = tmp_path / "report.html"
    assert main(["report", "digits-pg", "--storage", pg_url, "--out", str(report)]) == 0
    text = report.read_text()
    assert password not in text
    assert "lost postgresql://" in text and ":***@" in text
