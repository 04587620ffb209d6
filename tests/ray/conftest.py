"""A real local Ray cluster for the Ray backend tests: 2 CPUs and 2 logical GPUs on 127.0.0.1.

``ray start --head`` runs once per test session; ``ray stop --force`` runs at the end whatever
happens (the fixture's ``finally``, and ``atexit`` should pytest itself be interrupted). Ray's
workers inherit this process's environment at ``ray start``: PYTHONPATH (so trial processes
import the test helpers) and PATH with the venv's ``bin`` first (so a ``ray job submit``
entrypoint finds ``paretotune``, as on a node where the venv is active).
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from raytest_helpers import RayCluster

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray") if (VENV_BIN / "ray").exists() else shutil.which("ray") or "ray"

# Trial processes (children of Ray workers) import the helpers in this folder.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
# Ray 2.60 clusters require a token by default, and every driver must present it: this
# process (set before Ray is imported, which reads it once) and the processes it starts.
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = uuid.uuid4().hex + uuid.uuid4().hex


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(env: dict[str, str]) -> None:
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120, check=False)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    from ray._private.utils import get_dashboard_dependency_error

    missing = get_dashboard_dependency_error()
    if missing is not None:  # `ray job submit` needs the dashboard's job API
        pytest.fail(f"the Ray tests need ray[default] (the dashboard): {missing}", pytrace=False)
    port, dash = free_port(), free_port()
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.pop("RAY_ADDRESS", None)
    cluster = RayCluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", env)
    atexit.register(_stop, env)
    try:
        start = subprocess.run(
            [
                RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                "--num-cpus", "2", "--num-gpus", "2", "--dashboard-host", "127.0.0.1",
                "--dashboard-port", str(dash), "--include-dashboard=true", "--disable-usage-stats",
            ],
            env=env, capture_output=True, text=True, timeout=180, check=False,
        )
        if start.returncode != 0:
            pytest.fail(f"ray start failed ({start.returncode}):\n{start.stdout}\n{start.stderr}", pytrace=False)
        _wait_for_dashboard(cluster)
        yield cluster
    finally:
        _stop(env)


def _wait_for_dashboard(cluster: RayCluster, timeout_s: float = 60.0) -> None:
    """`ray job submit` needs the dashboard's job API, which comes up after `ray start`."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{cluster.dashboard_url}/api/version", timeout=5):
                return
        except urllib.error.HTTPError:
            return  # it answers (401 under Ray's token authentication): it is up
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                pytest.fail(f"the Ray dashboard at {cluster.dashboard_url} did not come up", pytrace=False)
            time.sleep(0.5)
