"""The HTML report in a real browser (headless Chromium), and optuna-dashboard on our store."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from conftest import OBJECTIVES, Recorded

from paretotune.cli import main

#: set by `make test`: a missing Chromium fails the run instead of skipping the browser test
REQUIRE_BROWSER_ENV = "PARETOTUNE_REQUIRE_BROWSER"
BROWSER_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
    "--disable-component-update", "--disable-sync", "--hide-scrollbars",
    "--enable-unsafe-swiftshader",  # software WebGL for the parallel-coordinates plot
    "--virtual-time-budget=15000",  # let every plot render before dumping or capturing
]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    reason = "the report test needs Chromium (scripts/ensure-chromium.sh installs it)"
    if os.environ.get(REQUIRE_BROWSER_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason}; {REQUIRE_BROWSER_ENV} is set, so this is not skipped", pytrace=False)
    pytest.skip(reason)


def _browse(report: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_chromium(), *BROWSER_FLAGS, f"--user-data-dir={profile}", *extra, report.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.fixture(scope="module")
def report(digits_study: Recorded, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["report", "digits-export", "--storage", digits_study.url, "--out", str(path)]) == 0
    return path


def test_report_is_self_contained_and_has_every_section(report: Path, digits_study: Recorded) -> None:
    text = report.read_text()
    assert not re.search(r"<script[^>]+src=", text), "every script must be inline (offline report)"
    assert not re.search(r"<link[^>]+href=", text) and not re.search(r"<iframe|<img[^>]+src=", text)
    assert text.count("plotly.js v") == 1  # plotly.js inline, once
    assert text.count("Plotly.newPlot") == 5  # 3 objective pairs, hypervolume, parameters
    assert '"type":"parcoords"' in text
    for heading in ("Pareto front", "Hypervolume", "Parameters", "The front (", "The front with 95% confidence (",
                    "Confirmed in fresh processes", "A/B comparisons", "Failed and invalid trials"):
        assert f"<h2>{heading}" in text
    # the timings' intervals as error bars, and in the front's table
    assert '"error_x":{"array":' in text and '"arrayminus":' in text
    assert "latency_p50_ms 95% CI</th>" in text
    noisy = text.split("<h2>The front with 95% confidence")[1].split("<h2>")[0]
    assert [int(n) for n in re.findall(r"<tr><td class=\"num\">(\d+)</td>", noisy)] == [
        t.number for t in digits_study.study.pareto_front(confidence=0.95)]
    front = digits_study.study.pareto_front()
    table = text.split("<h2>The front")[1].split("<h2>")[0]
    assert [int(n) for n in re.findall(r"<tr><td class=\"num\">(\d+)</td>", table)] == [t.number for t in front]
    confirmed = text.split("<h2>Confirmed in fresh processes")[1].split("<h2>")[0]
    latest = digits_study.study.confirmations()  # other tests of this session may have confirmed
    if latest:
        assert [int(n) for n in re.findall(r"<tr><td class=\"num\">(\d+)</td>", confirmed)] == [c.trial for c in latest]
    else:
        assert "Not confirmed" in confirmed and "paretotune confirm digits-export" in confirmed
    failures = text.split("<h2>Failed and invalid trials")[1]
    assert "FAIL" in failures and "killed by SIGKILL (likely out of memory)" in failures
    assert "INVALID" in failures and "bit_width=16 is not buildable on engine=&#x27;onnxruntime&#x27;" in failures


def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    dom = _browse(report, tmp_path / "profile-dom", "--enable-logging=stderr", "--v=0", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    status = re.search(r'<div id="pt-status" data-expected="(\d+)" data-rendered="(\d+)">(\w+)', dom.stdout)
    assert status is not None, dom.stdout[:2000]
    assert status.group(1) == status.group(2) == "5" and status.group(3) == "rendered"
    errors = re.search(r'<pre id="pt-errors" data-count="(\d+)">([^<]*)</pre>', dom.stdout)
    assert errors is not None and errors.group(1) == "0", errors.group(2) if errors else dom.stdout[:2000]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert not [line for line in console if "Uncaught" in line or "Error:" in line], console
    assert dom.stdout.count('class="main-svg"') >= 5  # plotly drew an SVG for every figure

    shot = tmp_path / "report.png"
    run = _browse(report, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1400,2400")
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 1400 and int.from_bytes(png[20:24], "big") == 2400
    assert len(png) > 50_000  # plots, not a blank page
    keep = os.environ.get("PARETOTUNE_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def _get(app: Any, path: str) -> tuple[str, Any]:
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    seen: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"] = status
        return lambda data: None

    body = b"".join(app(environ, start_response))
    return seen["status"], json.loads(body)


def test_optuna_dashboard_loads_the_study_with_metric_names(digits_study: Recorded) -> None:
    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    app = optuna_dashboard.wsgi(digits_study.study.store.optuna_storage())
    status, listing = _get(app, "/api/studies")
    assert status.startswith("200"), listing
    summary = next(s for s in listing["study_summaries"] if s["study_name"] == "digits-export")
    status, detail = _get(app, f"/api/studies/{summary['study_id']}")
    assert status.startswith("200"), detail
    assert detail["objective_names"] == list(OBJECTIVES)  # what its plots and tables label
    states = [t["state"] for t in detail["trials"]]
    assert states.count("Complete") == 3 and states.count("Fail") == 1 and states.count("Pruned") == 1
    assert {p["name"] for p in detail["union_search_space"]} >= {"engine", "bit_width", "batch_size"}
