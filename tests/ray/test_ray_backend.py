"""The Ray backend on a real local cluster (2 CPUs, 2 logical GPUs): the same store, the same
states, placement, GPUs, start-up trials, `ray job submit`, and a killed driver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState as OptunaState
from raytest_helpers import RayCluster, max_overlap

import paretotune as pt
from paretotune.testing import FakeEvaluator

import helpers_eval

pytestmark = pytest.mark.ray

OBJECTIVES = {"latency_p50_ms": "min", "accuracy": "max"}


def intervals(study: pt.Study) -> list[tuple[float, float]]:
    return [(m["details"]["started_at"], m["details"]["ended_at"]) for m in study.store.measurements(study.name)]


def check_complete_and_consistent(study: pt.Study, n_trials: int) -> None:
    """Exactly ``n_trials`` completed trials, each measured once, nothing left running."""
    trials = study.trials
    complete = sorted(t.number for t in trials if t.state == pt.TrialState.COMPLETE)
    assert len(complete) == n_trials
    assert not [t for t in trials if t.state in (pt.TrialState.RUNNING, pt.TrialState.WAITING)]
    assert [m["trial_number"] for m in study.store.measurements(study.name)] == complete
    claims = study.store.claim_counts(study.name)
    assert claims["active"] == 0 and claims["done"] == n_trials


def test_trials_land_in_the_store_with_the_local_pools_states(
    storage_url: str, ray_cluster: RayCluster
) -> None:
    space = pt.SearchSpace({"x": pt.Float(0.0, 1.0, step=0.01, default=0.0)})
    study = pt.create_study("ray-store", storage_url, space=space, objectives=OBJECTIVES, sampler="random", seed=3)
    for x in helpers_eval.FAILURES:
        study.enqueue({"x": x})
    study.optimize(helpers_eval.misbehaving, n_trials=10, timeout_s=4, backend="ray",
                   address=ray_cluster.address, resources_per_trial={"cpu": 1})
    check_complete_and_consistent(study, 10)
    # the same reasons, word for word, as the local pool records (tests/workers/test_local_pool.py)
    # the enqueued trial of each failure (a later proposal of the same x may be answered INVALID:
    # a config that failed twice is not measured again)
    by_x: dict[float, pt.Trial] = {}
    for t in study.trials:
        if t.config is not None and t.config["x"] in helpers_eval.FAILURES:
            by_x.setdefault(t.config["x"], t)
    assert by_x[0.01].state == pt.TrialState.FAIL and by_x[0.01].reason == "ValueError: bad weights in layer 3"
    assert by_x[0.02].state == pt.TrialState.FAIL and by_x[0.02].reason == "trial process exited with code 3 before returning a result"
    assert by_x[0.03].state == pt.TrialState.FAIL and by_x[0.03].reason == "timeout after 4 s"
    assert by_x[0.04].state == pt.TrialState.FAIL and by_x[0.04].reason == "metric 'accuracy' is nan"
    assert all(not t.metrics for t in study.trials if t.state == pt.TrialState.FAIL)
    # one CPU a trial on a 2-CPU cluster: never more than two at once
    assert max_overlap(intervals(study)) <= 2
    # the front, report and export read the same store
    assert len(pt.load_study("ray-store", storage_url).pareto_front()) >= 1


def test_gpu_trials_run_on_exactly_the_gpu_ray_assigned(tmp_path: Path, ray_cluster: RayCluster) -> None:
    import raytest_helpers

    space = pt.SearchSpace({"batch_size": pt.Int(1, 64, log=True), "bit_width": pt.Choice([32, 16, 8])})
    study = pt.create_study("ray-gpu", f"sqlite:///{tmp_path}/g.db", space=space, objectives=OBJECTIVES,
                            sampler="random", seed=1)
    study.optimize(raytest_helpers.gpu_probe, n_trials=8, backend="ray", address=ray_cluster.address,
                   resources_per_trial={"cpu": 0.5, "gpu": 1})
    check_complete_and_consistent(study, 8)
    rows = [m["details"] for m in study.store.measurements("ray-gpu")]
    for d in rows:
        assert len(d["gpu_ids"]) == 1 and d["gpu_ids"][0] in {"0", "1"}
        # the trial process saw that one GPU and nothing else, numbered as NVML numbers GPUs
        assert d["seen_cuda_visible_devices"] == d["gpu_ids"][0]
        assert d["seen_cuda_device_order"] == "PCI_BUS_ID"
    # two GPUs, one each: trials that overlapped in time held different GPUs
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if a["started_at"] < b["ended_at"] and b["started_at"] < a["ended_at"]:
                assert a["gpu_ids"] != b["gpu_ids"]
    assert max_overlap([(d["started_at"], d["ended_at"]) for d in rows]) <= 2


def test_start_up_trials_do_not_balloon_and_actors_are_reused(
    tmp_path: Path, ray_cluster: RayCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ray#52535: Tune asks a searcher for every trial it may queue, and each is a random
    start-up sample. Here at most n_startup_trials + (in flight - 1) are (ray#46965: the trial
    actors and their warm trial processes are reused, not started per trial)."""
    # Older Rays queue up to 16 pending trials for any searcher (2.60 queues one unless told
    # otherwise); without the ConcurrencyLimiter this run then samples 19 of 20 at random.
    monkeypatch.setenv("TUNE_MAX_PENDING_TRIALS_PG", "16")
    space = pt.SearchSpace({"prune_ratio": pt.Float(0.0, 0.5, step=0.1), "bit_width": pt.Choice([32, 16, 8]),
                            "batch_size": pt.Int(1, 64, log=True)})
    n_startup, n_trials = 6, 20
    study = pt.create_study("ray-flood", f"sqlite:///{tmp_path}/f.db", space=space, objectives=OBJECTIVES,
                            sampler={"name": "tpe", "n_startup_trials": n_startup}, seed=0)
    # half a CPU a trial: four fit on the cluster at once
    study.optimize(FakeEvaluator(sleep_s=0.1), n_trials=n_trials, backend="ray", address=ray_cluster.address,
                   resources_per_trial={"cpu": 0.5})
    check_complete_and_consistent(study, n_trials)
    in_flight = 4
    assert max_overlap(intervals(study)) <= in_flight
    frozen = study.optuna_study.get_trials(deepcopy=False)
    told = [t.datetime_complete for t in frozen if t.state in (OptunaState.COMPLETE, OptunaState.PRUNED)]
    # TPE samples at random while fewer than n_startup trials are complete (or pruned) at ask
    # time; the baseline and the warm-start corners are enqueued, not sampled
    random_startup = [
        t.number for t in frozen
        if not (t.user_attrs.get("baseline") or t.user_attrs.get("warm_start")) and sum(1 for c in told if c is not None and c < t.datetime_start) < n_startup
    ]
    assert len(random_startup) <= n_startup + in_flight - 1, random_startup
    workers = {m["details"]["worker"] for m in study.store.measurements("ray-flood")}
    assert len(workers) <= in_flight


def test_a_scheduler_is_refused_for_a_multi_objective_study(tmp_path: Path) -> None:
    space = pt.SearchSpace({"x": pt.Float(0.0, 1.0, step=0.1, default=0.0)})
    study = pt.create_study("ray-asha", f"sqlite:///{tmp_path}/a.db", space=space, objectives=OBJECTIVES)
    with pytest.raises(pt.ConfigError) as err:
        study.optimize(FakeEvaluator(), n_trials=3, backend="ray", scheduler="asha")
    msg = str(err.value)
    assert "scheduler='asha'" in msg and "ray-project/ray#8018" in msg and "['latency_p50_ms', 'accuracy']" in msg
    assert study.counts()["RUNNING"] == 0 and study.store.claim_counts("ray-asha")["active"] == 0


def test_resources_that_fit_no_node_are_an_error(tmp_path: Path, ray_cluster: RayCluster) -> None:
    space = pt.SearchSpace({"x": pt.Float(0.0, 1.0, step=0.1, default=0.0)})
    study = pt.create_study("ray-big", f"sqlite:///{tmp_path}/b.db", space=space, objectives=OBJECTIVES)
    with pytest.raises(pt.ConfigError, match=r"fits on no node .*'GPU': 2\.0"):
        study.optimize(FakeEvaluator(), n_trials=3, backend="ray", address=ray_cluster.address,
                       resources_per_trial={"cpu": 1, "gpu": 3})


# -- the CLI: `ray job submit`, and a killed driver ------------------------------------------------
def write_spec(path: Path, name: str, storage: str, *, task: str, n_trials: int, extra: str = "") -> Path:
    path.write_text(textwrap.dedent(
        f"""\
        name: {name}
        storage: {storage}
        task: {task}
        space:
          dimensions:
            x: {{type: float, low: 0.0, high: 1.0, step: 0.01, default: 0.0}}
        objectives: {{latency_p50_ms: min, accuracy: max}}
        sampler: random
        seed: 0
        budget: {{n_trials: {n_trials}}}
        """
    ) + extra)
    return path


def test_ray_job_submit_runs_a_study_end_to_end(tmp_path: Path, ray_cluster: RayCluster) -> None:
    job_dir, db_dir = tmp_path / "job", tmp_path / "db"
    job_dir.mkdir()
    db_dir.mkdir()
    url = f"sqlite:///{db_dir}/job.db"
    write_spec(job_dir / "spec.yaml", "ray-job", url, task="helpers_eval:quick", n_trials=6)
    # The entrypoint runs in a shell on the head node with the node's environment, in a copy
    # of --working-dir: `paretotune` is found on the node's PATH (the venv's bin).
    job = subprocess.run(
        [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", ray_cluster.dashboard_url,
         "--working-dir", str(job_dir), "--",
         "paretotune", "run", "spec.yaml", "--backend", "ray", "--address", "auto", "--no-progress"],
        env=ray_cluster.env, capture_output=True, text=True, timeout=240, check=False,
    )
    out = job.stdout + job.stderr
    assert job.returncode == 0, out
    assert "succeeded" in out and "Pareto front of 'ray-job'" in out
    check_complete_and_consistent(pt.load_study("ray-job", url), 6)


def test_a_killed_driver_is_started_again_and_the_study_completes(tmp_path: Path, ray_cluster: RayCluster) -> None:
    url = f"sqlite:///{tmp_path}/k.db"
    n_trials = 14
    spec = write_spec(tmp_path / "spec.yaml", "ray-kill", url, task="helpers_eval:slow", n_trials=n_trials,
                      extra="worker_grace_s: 4\n")
    cmd = [sys.executable, "-m", "paretotune.cli", "run", str(spec), "--backend", "ray",
           "--address", ray_cluster.address, "--no-progress"]
    first = subprocess.Popen(cmd, env=ray_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        before: set[int] = set()
        while time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.5)
            try:
                before = {t.number for t in pt.load_study("ray-kill", url).completed()}
            except (pt.StudyError, pt.StorageError):  # the store or the study is not created yet
                continue
            if len(before) >= 4:
                break
        assert first.poll() is None, first.communicate()[0]
        assert 4 <= len(before) < n_trials
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    second = subprocess.run(cmd, env=ray_cluster.env, capture_output=True, text=True, timeout=180, check=False)
    assert second.returncode == 0, second.stdout + second.stderr
    study = pt.load_study("ray-kill", url)
    check_complete_and_consistent(study, n_trials)
    after = study.trials
    # nothing completed before the kill was lost or run again
    assert before <= {t.number for t in after if t.state == pt.TrialState.COMPLETE}
    # the trials the kill interrupted are recorded as lost (never left running) and re-run
    lost = [t for t in after if t.state == pt.TrialState.FAIL]
    assert lost, "the kill landed between trials: nothing exercised the reaper"
    for t in lost:
        assert t.reason is not None and t.reason.startswith("worker lost"), t.reason
        assert any(r.config == t.config and r.state == pt.TrialState.COMPLETE for r in after if r.number > t.number)
