"""Bad input and hostile local users (issue: hardening). Each case failed before its fix:
a spec that was silently accepted, a traceback where one line belongs, a store created by a
read-only command, a lock anyone could hold, a password shown. The artifact cache and the
export guard have their cases in test_bad_inputs.py."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import paretotune as pt
from paretotune.errors import ConfigError, EvaluationError, StorageError
from paretotune.evaluators import slot as slot_mod
from paretotune.evaluators.slot import TimingSlot
from paretotune.search import StudySpec
from paretotune.search.studies import create_study_from_spec
from paretotune.search.study import MISSING_METRIC_STOP_AFTER
from paretotune.storage import StopKind, StudyStore
from paretotune.storage.engine import mask, mask_url, resolve_url
from paretotune.testing import null_evaluator
from paretotune.workers.executor import TrialExecutor
from paretotune.workers.pool import check_budget, max_local_workers

import helpers_eval

OBJ = {"latency_p50_ms": "min", "accuracy": "max"}
X_SPACE = pt.SearchSpace({"x": pt.Float(0.0, 1.0, step=0.1, default=0.0)})


def cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "paretotune.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def one_error_line(proc: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """The run failed with `code` and exactly one `error:` line holding every fragment."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


GOOD_SPEC = """\
    name: s
    task: paretotune.testing:fake_evaluator
    space: {dimensions: {x: {type: float, low: 0.0, high: 1.0, step: 0.5, default: 0.0}}}
    objectives: {latency_p50_ms: min, accuracy: max}
    budget: {n_trials: 2, n_workers: 1}
"""


# -- the spec: duplicate keys, aliases, types, sizes ----------------------------------------------
@pytest.mark.parametrize("text, fragments", [
    ("name: s\nobjectives: {accuracy: max}\nobjectives: {accuracy: min}\nspace: {dimensions: {x: [1]}}\n",
     ["duplicate key 'objectives' at line 3 (first given at line 2)"]),
    ("name: s\nobjectives:\n  accuracy: min\n  accuracy: max\nspace: {dimensions: {x: [1]}}\n",
     ["duplicate key 'accuracy' at line 4 (first given at line 3)"]),
    ("name: s\nobjectives: [accuracy]\nspace:\n  dimensions:\n    x: [1, 2]\n    x: [3]\n",
     ["duplicate key 'x' at line 6 (first given at line 5)"]),
    ("name: s\nobjectives: [accuracy]\nspace: {dimensions: {x: [1]}}\nextra_metrics: foo\n",
     ["extra_metrics must be a list of metric names", "'foo'"]),
    ("name: s\nobjectives: [accuracy]\nspace: {dimensions: {engine: []}}\n",
     ["space.engine", "must not be empty"]),
    ("name: s\nobjectives: [accuracy]\nspace: {dimensions: {x: [1, 2]}, forbidden: [{x: 1}]}\n",
     ["the baseline (every dimension at its default) is forbidden", "x=1"]),
    ("name: s\nobjectives: [accuracy]\nspace: {dimensions: {x: [1]}}\nbudget: {n_workers: 1000000000}\n",
     ["budget.n_workers must be an integer from 1 to", "got 1000000000"]),
    ("name: s\nobjectives: [accuracy]\nspace: {dimensions: {x: [1]}}\naccuracy_range: [1, 0]\n",
     ["accuracy_range must be [low, high]"]),
    ("name: s\nobjectives: [accuracy]\ntask: os:sep\n", ["task 'os:sep' names a str, not a paretotune Task"]),
])
def test_bad_specs_are_refused_before_anything_is_stored(tmp_path: Path, text: str, fragments: list[str]) -> None:
    spec = write(tmp_path, text)
    db = tmp_path / "s.db"
    proc = cli("run", str(spec), "--storage", f"sqlite:///{db}")
    one_error_line(proc, 2, *fragments)
    assert not db.exists() or StudyStore(f"sqlite:///{db}").study_names() == []


def test_a_yaml_alias_bomb_is_refused_in_one_line(tmp_path: Path) -> None:
    lines = ["name: s", "objectives: [accuracy]", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    spec = write(tmp_path, "\n".join(lines) + "\n")
    assert spec.stat().st_size < 1000
    proc = cli("run", str(spec), "--storage", f"sqlite:///{tmp_path}/s.db")
    one_error_line(proc, 2, "expands to more than", "nodes")  # refused while parsing, no MemoryError
    assert not (tmp_path / "s.db").exists()


def test_a_recursive_alias_and_a_directory_as_spec_are_one_line(tmp_path: Path) -> None:
    spec = write(tmp_path, "name: s\nobjectives: &o [accuracy, *o]\n")
    one_error_line(cli("run", str(spec)), 2, "recursive alias")
    one_error_line(cli("run", str(tmp_path)), 2, "is a directory; give the path of a YAML spec file")


def test_yaml_merge_keys_may_still_override(tmp_path: Path) -> None:
    from paretotune import yamlsafe

    data = yamlsafe.load("base: &b {a: 1, b: 2}\nchild:\n  <<: *b\n  b: 3\n")
    assert data["child"] == {"a": 1, "b": 3}
    assert pt.SearchSpace.from_yaml("dimensions:\n  x: [1, 2]\n").dimensions["x"].values() == [1, 2]
    with pytest.raises(ConfigError, match="duplicate key 'x'"):
        pt.SearchSpace.from_yaml("dimensions:\n  x: [1, 2]\n  x: [3]\n")


@pytest.mark.parametrize("flag", ["--n-trials", "--n-workers", "--confirm"])
def test_zero_and_negative_flags_are_errors_not_fallbacks(tmp_path: Path, flag: str) -> None:
    spec = write(tmp_path, GOOD_SPEC)
    value = "-1" if flag == "--confirm" else "0"
    proc = cli("run", str(spec), "--storage", f"sqlite:///{tmp_path}/s.db", flag, value)
    one_error_line(proc, 2, f"{flag} must be an integer >=", f"got {value}")
    assert not (tmp_path / "s.db").exists()  # checked before the study row is stored


def test_worker_count_is_capped_by_the_cores() -> None:
    cap = max_local_workers()
    assert cap >= (os.cpu_count() or 1)
    check_budget(10, cap)
    with pytest.raises(ConfigError, match=f"n_workers must be an integer from 1 to {cap}, got {cap + 1}"):
        check_budget(10, cap + 1)
    check_budget(10, 10 * cap, "ray")  # a cluster's workers are not this machine's processes


def test_optimize_refuses_a_billion_workers(tmp_path: Path) -> None:
    study = pt.create_study("cap", f"sqlite:///{tmp_path}/c.db", space=X_SPACE, objectives=OBJ)
    with pytest.raises(ConfigError, match="n_workers must be an integer from 1 to"):
        study.optimize(null_evaluator, n_trials=2, n_workers=1_000_000_000)
    assert study.counts()["COMPLETE"] == 0


def test_resources_flag_is_checked(tmp_path: Path) -> None:
    spec = write(tmp_path, GOOD_SPEC)
    url = f"sqlite:///{tmp_path}/s.db"
    one_error_line(cli("run", str(spec), "--storage", url, "--resources", '{"cpu": 1}'), 2,
                   "--resources apply to --backend ray only")
    one_error_line(cli("run", str(spec), "--storage", url, "--backend", "ray", "--resources", "{bad"), 2,
                   "--resources must be a JSON object", "'{bad'")
    assert not (tmp_path / "s.db").exists()


# -- the store: read-only commands, bad files, names, passwords -------------------------------
@pytest.mark.parametrize("command", [
    ["status", "s"], ["pareto", "s"], ["trials", "s"], ["report", "s", "--out", "r.html"],
    ["export", "s", "--trial", "0", "--out", "bundle"], ["confirm", "s", "--show"],
    ["worker", "--study", "s"],
])
def test_read_only_commands_never_create_a_store(tmp_path: Path, command: list[str]) -> None:
    url = f"sqlite:///{tmp_path}/mistyped.db"
    one_error_line(cli(*command, "--storage", url, cwd=tmp_path), 1, "mistyped.db", "does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_bad_database_files_are_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    one_error_line(cli("status", "s", "--storage", f"sqlite:///{garbage}"), 1, "file is not a database")
    one_error_line(cli("run", str(write(tmp_path, GOOD_SPEC)), "--storage", f"sqlite:///{tmp_path}/no/dir/s.db"),
                   1, "does not exist")
    # a read-only database (mode=ro works for root too): the write is refused in one line
    db = tmp_path / "ro.db"
    pt.create_study("other", f"sqlite:///{db}", space=X_SPACE, objectives=OBJ)
    ro = f"sqlite:///file:{db}?mode=ro&uri=true"
    one_error_line(cli("run", str(write(tmp_path, GOOD_SPEC)), "--storage", ro), 1, "readonly database")
    with pytest.raises(StorageError, match="names a directory"):
        StudyStore(f"sqlite:///{tmp_path}")


def test_a_study_name_with_nul_is_refused(storage_url: str) -> None:
    with pytest.raises(ConfigError, match="printable characters"):
        pt.create_study("bad\x00name", storage_url, space=X_SPACE, objectives=OBJ)
    with pytest.raises(ConfigError, match="printable characters"):
        pt.load_study("bad\x00name", storage_url)


def test_a_second_first_time_creation_joins_the_study(storage_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    first = pt.create_study("race", storage_url, space=X_SPACE, objectives=OBJ)
    store = StudyStore(storage_url)
    spec = first.store.load_spec("race")
    assert spec is not None
    real = store.load_spec
    looked: list[str] = []

    def late_look(name: str) -> dict | None:  # the second process looked before the first stored its row
        looked.append(name)
        return None if len(looked) == 1 else real(name)

    monkeypatch.setattr(store, "load_spec", late_look)
    second = create_study_from_spec("race", store, StudySpec.from_dict(spec))
    assert second.name == "race"
    assert sum(1 for t in second.trials if t.is_baseline) == 1


@pytest.mark.parametrize("password", ["pa ss word", "p%40ssword", "sp ce@and%40"])
def test_passwords_with_spaces_and_at_signs_are_masked(password: str) -> None:
    url = f"postgresql://user:{password}@127.0.0.1:1/db"
    try:
        resolve_url(url)
    except StorageError as exc:  # a raw '@' is refused, and the message hides the password
        assert "@" in password.replace("%40", "")
        assert "sp ce" not in str(exc) and "***" in str(exc)
        return
    assert mask_url(url) == "postgresql://user:***@127.0.0.1:1/db"
    decoded = password.replace("%40", "@")
    text = f"connection to {url} failed for password {decoded!r} (raw {password})"
    shown = mask(text)
    assert password not in shown and decoded not in shown, shown


def test_a_password_with_a_space_never_reaches_the_cli_output(tmp_path: Path) -> None:
    url = "postgresql://user:pa ss word@127.0.0.1:1/db"
    proc = cli("status", "s", "--storage", url)
    one_error_line(proc, 1, "cannot reach the study store", "***")
    assert "pa ss" not in proc.stderr + proc.stdout and "ss word" not in proc.stderr + proc.stdout
    proc = cli("status", "s", "--storage", "postgresql://user:p@ss word@127.0.0.1:1/db")
    one_error_line(proc, 1, "URL-encode it (%40)")
    assert "ss word" not in proc.stderr + proc.stdout


# -- measurements: domains, missing metrics, the grid's end --------------------------------------
def test_metrics_outside_their_domain_fail_the_trial(storage_url: str) -> None:
    study = pt.create_study("domains", storage_url, space=X_SPACE, objectives=OBJ, sampler="grid")
    # more trials than the grid can complete: every point is visited, and the grid's end stops it
    study.optimize(helpers_eval.negative_latency, n_trials=11)
    by_x = {t.config["x"]: t for t in study.trials if t.config is not None}
    assert by_x[0.5].state == pt.TrialState.FAIL
    assert "metric 'latency_p50_ms' is -5, outside its domain (it must be >= 0)" in by_x[0.5].reason
    assert by_x[0.6].state == pt.TrialState.FAIL
    assert "metric 'accuracy' is 1.5, outside its domain (it must be within [0, 1])" in by_x[0.6].reason
    assert all(t.metrics["latency_p50_ms"] >= 0 for t in study.pareto_front())


def test_a_declared_accuracy_range_is_used(tmp_path: Path) -> None:
    study = pt.create_study("range", f"sqlite:///{tmp_path}/r.db", space=X_SPACE, objectives=OBJ,
                            sampler="grid", accuracy_range=(0.0, 2.0))
    study.optimize(helpers_eval.negative_latency, n_trials=11)
    by_x = {t.config["x"]: t for t in study.trials if t.config is not None}
    assert by_x[0.6].state == pt.TrialState.COMPLETE and by_x[0.6].metrics["accuracy"] == 1.5


def test_one_trial_without_a_metric_fails_alone(storage_url: str) -> None:
    study = pt.create_study("one-missing", storage_url, space=X_SPACE, objectives=OBJ, sampler="grid")
    study.optimize(helpers_eval.accuracy_except_at_half, n_trials=11)
    failed = [t for t in study.trials if t.state == pt.TrialState.FAIL]
    assert [t.config["x"] for t in failed] == [0.5]
    assert "did not return ['accuracy']" in failed[0].reason
    assert study.counts()["COMPLETE"] == 10
    assert study.store.stopped("one-missing").kind is StopKind.FINISHED


def test_a_metric_never_returned_stops_the_study_after_a_few_trials(tmp_path: Path) -> None:
    study = pt.create_study("never", f"sqlite:///{tmp_path}/n.db", space=X_SPACE, objectives=OBJ)
    with pytest.raises(pt.StudyError, match=f"did not return \\['accuracy'\\].*first {MISSING_METRIC_STOP_AFTER}"):
        study.optimize(helpers_eval.no_accuracy, n_trials=10)
    assert study.counts()["FAIL"] == MISSING_METRIC_STOP_AFTER


def test_the_grids_last_point_failing_ends_the_study_cleanly(storage_url: str) -> None:
    space = pt.SearchSpace({"x": pt.Choice([0, 1, 2])})
    study = pt.create_study("grid-end", storage_url, space=space, objectives=OBJ, sampler="grid",
                            warm_start="none")
    study.optimize(helpers_eval.fails_at_x_2, n_trials=3, n_workers=2)
    states = sorted((t.config["x"], t.state.value) for t in study.trials)
    assert (2, "FAIL") in states and (0, "COMPLETE") in states and (1, "COMPLETE") in states
    assert study.store.stopped("grid-end").kind is StopKind.FINISHED


def test_invalid_trials_show_the_refused_combination(tmp_path: Path) -> None:
    space = pt.SearchSpace({"a": pt.Choice([1, 2, 3]), "b": pt.Choice(["x", "y"])}, forbidden=[{"a": 3, "b": "y"}])
    study = pt.create_study("inv", f"sqlite:///{tmp_path}/i.db", space=space, objectives=OBJ, sampler="random",
                            seed=1, warm_start="none")
    # a proposal of the forbidden corner, as a sampler would make it (Optuna's own queue)
    study.optuna_study.enqueue_trial({"a": 3, "b": "y"})
    study.optimize(null_evaluator, n_trials=3)
    invalid = [t for t in study.trials if t.state == pt.TrialState.INVALID]
    assert invalid and all(dict(t.config) == {"a": 3, "b": "y"} for t in invalid)  # the sampler may add one
    assert all("forbidden combination: a=3, b='y'" in (t.reason or "") for t in invalid)


# -- the timing slot ------------------------------------------------------------------------------
def test_the_slots_default_directory_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(slot_mod.ENV, raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(slot_mod.tempfile, "tempdir", None)
    directory = slot_mod.slot_directory()
    assert directory == str(tmp_path / f"paretotune-{os.getuid()}")
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    s = TimingSlot("t", directory)
    with s.exclusive():
        pass
    assert stat.S_IMODE(os.stat(s.path).st_mode) == 0o600
    # a directory of that name open to others (planted by someone) is refused, not used
    os.chmod(directory, 0o777)
    with pytest.raises(EvaluationError, match="not a private directory of this user"):
        slot_mod.slot_directory()
    os.chmod(directory, 0o700)
    runtime = tmp_path / "run"
    runtime.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert slot_mod.slot_directory() == str(runtime / "paretotune")


HOLDER = "import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n" \
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n"


def test_a_held_slot_is_reported_and_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    s = TimingSlot("t", str(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, s.path], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(slot_mod, "WARN_AFTER_S", 0.2)
        monkeypatch.setenv(slot_mod.MAX_WAIT_ENV, "1")
        with caplog.at_level(logging.WARNING, logger="paretotune.evaluators.slot"):
            with pytest.raises(EvaluationError, match=f"held by pid {holder.pid}.*limit is 1 s"):
                with s.exclusive():
                    pass
        assert any(f"held by pid {holder.pid}" in r.getMessage() for r in caplog.records)
    finally:
        holder.kill()
        holder.wait()
    with s.exclusive():  # the holder is gone: the slot is free again
        pass
    monkeypatch.setenv(slot_mod.MAX_WAIT_ENV, "soon")
    with pytest.raises(ConfigError, match=slot_mod.MAX_WAIT_ENV):
        slot_mod.max_wait_s()


def test_the_lock_file_is_not_opened_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    s = TimingSlot("t", str(tmp_path))
    os.symlink(target, s.path)
    with pytest.raises(EvaluationError, match="cannot open the timing slot's lock file"):
        with s.shared():
            pass
    assert target.read_text() == "keep"
    assert fcntl  # the module is what the slot uses


# -- processes: a broken evaluator, Ctrl-C --------------------------------------------------------
class _Unloadable:
    """Pickles as a call to a module no trial process can import."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (__import__, ("no_such_module_for_the_trial_process",))


def test_an_evaluator_that_cannot_be_loaded_is_named() -> None:
    with TrialExecutor(_Unloadable(), timeout_s=60) as executor:  # type: ignore[arg-type]
        outcome = executor.run(pt.Config({"x": 0.0}))
    assert outcome.state == pt.TrialState.FAIL and outcome.reason is not None
    assert "cannot load the evaluator in the trial process" in outcome.reason
    assert "no_such_module_for_the_trial_process" in outcome.reason


SLOW_SPEC = """\
    name: slow
    task: helpers_eval:two_seconds
    space: {dimensions: {x: {type: float, low: 0.0, high: 1.0, step: 0.1, default: 0.0}}}
    objectives: {latency_p50_ms: min, accuracy: max}
    budget: {n_trials: 30, n_workers: 2}
"""


@pytest.mark.serial  # a SIGINT sent while a trial runs: a loaded machine can miss the moment
def test_ctrl_c_marks_the_running_trials_interrupted(tmp_path: Path) -> None:
    spec = write(tmp_path, SLOW_SPEC)
    url = f"sqlite:///{tmp_path}/slow.db"
    proc = subprocess.Popen([sys.executable, "-m", "paretotune.cli", "run", str(spec), "--storage", url,
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if (tmp_path / "slow.db").exists():
                try:
                    study = pt.load_study("slow", url)
                except pt.ParetotuneError:
                    continue
                if study.counts()["COMPLETE"] >= 1 and study.counts()["RUNNING"] >= 1:
                    break
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    study = pt.load_study("slow", url)
    counts = study.counts()
    assert counts["RUNNING"] == 0, [(t.number, t.state, t.reason) for t in study.trials]
    interrupted = [t for t in study.trials if t.state == pt.TrialState.FAIL]
    assert interrupted and all(t.reason in ("interrupted (SIGINT)", "interrupted (SIGTERM)") for t in interrupted)


# -- the CLI's notices ----------------------------------------------------------------------------
def test_run_names_the_task_module_and_a_budget_beyond_the_space(tmp_path: Path) -> None:
    spec = write(tmp_path, GOOD_SPEC.replace("n_trials: 2", "n_trials: 5"))
    proc = cli("run", str(spec), "--storage", f"sqlite:///{tmp_path}/s.db", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "importing the task module 'paretotune.testing'" in proc.stderr
    assert "the space holds 3 configs, fewer than the budget of 5" in proc.stderr
    report = tmp_path / "r.html"
    first = cli("report", "s", "--storage", f"sqlite:///{tmp_path}/s.db", "--out", str(report))
    assert first.returncode == 0 and first.stdout.startswith("wrote the report"), first.stderr
    again = cli("report", "s", "--storage", f"sqlite:///{tmp_path}/s.db", "--out", str(report))
    assert again.returncode == 0 and again.stdout.startswith("replaced the report"), again.stderr


def test_report_never_writes_through_a_planted_symlink(tmp_path: Path) -> None:
    study = pt.create_study("rep", f"sqlite:///{tmp_path}/r.db", space=X_SPACE, objectives=OBJ)
    study.optimize(null_evaluator, n_trials=2)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    os.symlink(victim, out_dir / ".report.html.tmp")  # the old fixed temporary name
    from paretotune.report import write_report

    path = write_report(study, out_dir / "report.html")
    assert victim.read_text() == "precious"
    assert path.read_text().startswith("<!DOCTYPE html>") or "<html" in path.read_text()[:200]
    assert not path.is_symlink()
    assert stat.S_IMODE(path.stat().st_mode) & 0o044  # readable like any file the user writes


def test_a_huge_choice_creates_a_study(tmp_path: Path) -> None:
    """The quadratic checks took minutes here; the timing itself is a benchmark's job (note)."""
    space = pt.SearchSpace({"x": pt.Choice(list(range(20_000))), "engine": pt.Choice(["torch", "onnxruntime"]),
                            "bit_width": pt.Choice([32, 8])})
    assert space.dimensions["x"].validate("x", 19_999) == 19_999
    with pytest.raises(ConfigError, match="must be unique"):
        pt.Choice([*range(20_000), 5])
    study = pt.create_study("huge", f"sqlite:///{tmp_path}/h.db", space=space, objectives=OBJ)
    study.optimize(null_evaluator, n_trials=3)
    assert study.counts()["COMPLETE"] == 3


def test_a_config_that_keeps_failing_is_not_measured_again(storage_url: str) -> None:
    space = pt.SearchSpace({"x": pt.Choice([0, 1, 2, 3])})
    study = pt.create_study("fails", storage_url, space=space, objectives=OBJ, sampler="random", seed=0,
                            warm_start="none")
    for _ in range(3):  # a sampler that keeps proposing the config that fails (Optuna's own queue)
        study.optuna_study.enqueue_trial({"x": 2})
    study.optimize(helpers_eval.fails_at_x_2, n_trials=3)
    at_2 = [t for t in study.trials if t.config is not None and t.config["x"] == 2]
    assert [t.state for t in at_2[:3]] == [pt.TrialState.FAIL, pt.TrialState.FAIL, pt.TrialState.INVALID]
    assert "not measured again: this config failed 2 times already (last: RuntimeError" in at_2[2].reason
    assert study.counts()["COMPLETE"] == 3  # the search went on with the other configs


def test_queue_delays_that_cannot_meet_the_bound_are_not_searched() -> None:
    from paretotune.space.standard import standard_space

    class Stub:
        layers: dict[str, str] = {}

    space = standard_space(Stub(), engines=["onnxruntime"], scenario=pt.Server(p99_ms=5))
    assert space.dimensions["max_queue_delay_us"].values() == [0, 500, 2000]
