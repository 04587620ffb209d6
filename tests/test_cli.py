"""The `paretotune` command end to end, in subprocesses, as a user runs it."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import paretotune as pt

import helpers_eval

SPACE = textwrap.dedent(
    """\
    space:
      dimensions:
        prune_ratio: {type: float, low: 0.0, high: 0.5, step: 0.1}
        bit_width: [32, 16, 8, 4]
        batch_size: {type: int, low: 1, high: 64, log: true}
        engine: [torch, onnxruntime]
      forbidden:
        - {engine: torch, bit_width: 4}
    """
)


def write_spec(tmp_path: Path, name: str, *, task: str = "paretotune.testing:fake_evaluator",
               n_trials: int = 12, n_workers: int = 2, extra: str = "") -> Path:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\ntask: {task}\n" + SPACE + textwrap.dedent(
            f"""\
            objectives: {{latency_p50_ms: min, accuracy: max}}
            constraints: {{accuracy_drop: ["<=", 0.02]}}
            sampler: tpe
            seed: 0
            budget: {{n_trials: {n_trials}, n_workers: {n_workers}}}
            """
        ) + extra
    )
    return spec


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "paretotune.cli", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_run_status_pareto_trials(tmp_path: Path, backend: str, request) -> None:
    url = f"sqlite:///{tmp_path}/cli.db" if backend == "sqlite" else request.getfixturevalue("pg_url")
    spec = write_spec(tmp_path, "cli-study")
    run = cli("run", str(spec), "--storage", url)
    assert run.returncode == 0, run.stderr
    assert "Pareto front of 'cli-study'" in run.stdout
    status = cli("status", "cli-study", "--storage", url, "--format", "json")
    assert status.returncode == 0, status.stderr
    s = json.loads(status.stdout)
    assert s["trials"]["COMPLETE"] == 12 and s["target"] == 12 and s["front_size"] >= 1
    front = json.loads(cli("pareto", "cli-study", "--storage", url, "--format", "json").stdout)
    assert len(front) == s["front_size"] and all(r["state"].startswith("COMPLETE") for r in front)
    rows = list(csv.DictReader(io.StringIO(cli("trials", "cli-study", "--storage", url, "--format", "csv").stdout)))
    study = pt.load_study("cli-study", url)
    assert len(rows) == len(study.trials)
    assert {int(r["trial"]) for r in rows} == {t.number for t in study.trials}
    assert "latency_p50_ms" in rows[0] and "engine" in rows[0]
    table = cli("pareto", "cli-study", "--storage", url).stdout
    assert "trial" in table.splitlines()[1] and "latency_p50_ms" in table
    # running the same spec again resumes: the budget is met, nothing new runs
    again = cli("run", str(spec), "--storage", url, "--n-trials", "14")
    assert again.returncode == 0, again.stderr
    assert pt.load_study("cli-study", url).counts()["COMPLETE"] == 14


def test_run_then_confirms_the_front_in_fresh_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/confirm.db"
    spec = write_spec(tmp_path, "run-confirm", n_trials=6, n_workers=1)
    spec.write_text(spec.read_text().replace("n_workers: 1}", "n_workers: 1, confirm: 2}"))
    run = cli("run", str(spec), "--storage", url, "--no-progress")
    assert run.returncode == 0, run.stderr
    assert "Confirmed (median of 2 fresh processes" in run.stdout and "confirmed p50 ms" in run.stdout
    study = pt.load_study("run-confirm", url)
    confirmed = study.confirmations()
    assert [c.trial for c in confirmed] == [t.number for t in study.pareto_front()]
    assert all(c.processes == 2 and not c.errors for c in confirmed)
    # --confirm 0 overrides the spec: resuming with a larger budget confirms nothing new
    again = cli("run", str(spec), "--storage", url, "--n-trials", "7", "--confirm", "0", "--no-progress")
    assert again.returncode == 0, again.stderr
    assert "Confirmed" not in again.stdout
    assert len(pt.load_study("run-confirm", url).store.confirmation_rows("run-confirm")) == len(
        study.store.confirmation_rows("run-confirm"))


def test_worker_joins_a_running_study_with_only_url_and_name(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/join.db"
    spec = write_spec(tmp_path, "join", task="paretotune.testing:slow_fake_evaluator", n_trials=30, n_workers=1)
    controller = subprocess.Popen([sys.executable, "-m", "paretotune.cli", "run", str(spec), "--storage", url,
                                   "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        helpers_eval.wait_for_completed("join", url, 2)
        worker = cli("worker", "--storage", url, "--study", "join")
        assert worker.returncode == 0, worker.stderr
        assert "joined 'join'" in worker.stderr
        out, err = controller.communicate(timeout=120)
        assert controller.returncode == 0, err
    finally:
        controller.kill()
    study = pt.load_study("join", url)
    assert study.counts()["COMPLETE"] == 30
    workers = {m["details"]["worker"].split("-")[0] for m in study.store.measurements("join")}
    assert workers == {"w", "cli"}, workers  # the controller's in-process worker and the joined one


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("name: x\nobjectives: {accuracy: max\n", "malformed YAML at line"),
        ("name: x\nobjectivs: {accuracy: max}\ntask: a:b\n", "unknown key(s) ['objectivs']"),
        ("name: x\nobjectives: [accuracy]\nspace: {dimensions: {x: [1, 2]}}\nsampler: hyperband\n",
         "unknown name 'hyperband'; valid samplers: ['auto', 'gp', 'grid', 'nsga2', 'nsga3', 'random', 'surrogate', 'tpe']"),
        ("name: x\nobjectives: {acc: max}\nspace: {dimensions: {x: [1, 2]}}\n", "unknown metric 'acc'; known metrics: ["),
        ("name: x\nobjectives: [accuracy]\nspace: {dimensions: {x: {type: int, low: 5, high: 1}}}\n",
         "`low <= high` must hold, but got (low=5, high=1)"),
        ("name: x\nobjectives: [accuracy]\ntask: no_such_module_xyz:task\n", "no_such_module_xyz"),
        ("name: x\nobjectives: [accuracy]\nspace: {dimensions: {x: [1]}}\nbudget: {n_trials: 0}\n",
         "budget.n_trials must be an integer >= 1, got 0"),
        ("name: x\nobjectives: [accuracy]\nspace: {dimensions: {x: [1]}}\nbudget: {confirm: -1}\n",
         "budget.confirm must be an integer >= 0, got -1"),
    ],
)
def test_bad_specs_give_one_clear_line(tmp_path: Path, text: str, fragment: str) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    proc = cli("run", str(spec), "--storage", f"sqlite:///{tmp_path}/bad.db")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # after the line naming the task module, if any
    assert last.startswith("error: ") and fragment in last, proc.stderr


@pytest.mark.postgres
def test_wrong_database_password_is_masked(tmp_path: Path, pg_cluster, pg_url: str) -> None:
    bad = pg_url.replace(pg_cluster.password, "NotTheRightOne")
    spec = write_spec(tmp_path, "pw")
    proc = cli("run", str(spec), "--storage", bad)
    assert proc.returncode == 1
    assert "NotTheRightOne" not in proc.stderr + proc.stdout and "***" in proc.stderr
    assert "password authentication failed" in proc.stderr and "Traceback" not in proc.stderr
