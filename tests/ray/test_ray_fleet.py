"""The fleet on a real local Ray cluster (2 CPUs, 2 logical GPUs): one driver serves every
submitted study through Ray's placement, by priority, with each study's own resources."""

from __future__ import annotations

from pathlib import Path

from raytest_helpers import RayCluster

import paretotune as pt
from paretotune.storage import FleetState, StudyStore
from paretotune.workers.fleet import submit
from paretotune.workers.ray_fleet import run_ray_fleet

OBJ = {"latency_p50_ms": "min", "accuracy": "max"}
SPACE = pt.SearchSpace({"x": pt.Float(0.0, 1.0, step=0.01, default=0.0)})


def test_a_ray_fleet_serves_every_submitted_study(tmp_path: Path, ray_cluster: RayCluster) -> None:
    url = f"sqlite:///{tmp_path}/fleet.db"
    for name, priority, resources in (("ray-a", 1, {"cpu": 1}), ("ray-b", 5, {"cpu": 0.5, "gpu": 1})):
        study = pt.create_study(name, url, space=SPACE, objectives=OBJ, sampler="random", seed=priority,
                                task="paretotune.testing:fake_evaluator", warm_start="none")
        submit(study, priority=priority, n_trials=4, resources_per_trial=resources)
    searcher = run_ray_fleet(url, address=ray_cluster.address, max_concurrent=2, exit_when_idle_s=2.0)
    store = StudyStore(url)
    for name in ("ray-a", "ray-b"):
        counts = pt.load_study(name, url).counts()
        assert counts["COMPLETE"] == 4 and counts["RUNNING"] == 0, (name, counts)
        assert store.claim_counts(name) == {"active": 0, "done": 4, "released": 0}
    assert {r["name"]: r["state"] for r in store.fleet_studies()} == {"ray-a": FleetState.DONE, "ray-b": FleetState.DONE}
    assert searcher.asked == 8
    # ray-b asked for a GPU: every one of its trials ran on exactly one of Ray's GPUs
    gpu_rows = [m["details"] for m in store.measurements("ray-b")]
    assert gpu_rows and all(len(d["gpu_ids"]) == 1 for d in gpu_rows)
    assert all("gpu_ids" not in m["details"] for m in store.measurements("ray-a"))
    # the higher priority went first: its first trial was handed out before ray-a's
    first = {n: min(t.datetime_start for t in pt.load_study(n, url).optuna_study.trials) for n in ("ray-a", "ray-b")}
    assert first["ray-b"] <= first["ray-a"]
