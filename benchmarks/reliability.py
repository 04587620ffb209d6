"""Reliability figures: run the fault-injection suite and the bad-input tests, and tabulate
faults injected, faults survived, bad inputs tried and trials or measurements lost.

    .venv/bin/python benchmarks/reliability.py

The numbers come from the same tests `make test` runs (tests/reliability, and the bad-input
tests of the CLI and the API); each test appends what it injected and saw to a JSON-lines file.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BAD_INPUT_TESTS = [
    "tests/test_cli.py::test_bad_specs_give_one_clear_line",
    "tests/test_cli.py::test_wrong_database_password_is_masked",
    "tests/space/test_dimensions.py::test_bad_dimensions_say_what_they_got",
    "tests/space/test_space_properties.py::test_bad_spaces_name_the_problem",
    "tests/search/test_study_api.py::test_unknown_objective_lists_known_metrics",
    "tests/search/test_study_api.py::test_create_load_and_resume_on_both_backends",
    "tests/evaluators/test_evaluators_task.py",
    "tests/storage/test_study_store.py::test_unreachable_database_fails_fast_and_clearly",
]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        figures = Path(tmp) / "figures.jsonl"
        env = {**os.environ, "PARETOTUNE_FIGURES": str(figures), "PARETOTUNE_REQUIRE_POSTGRES": "1"}
        faults = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/reliability"], cwd=ROOT, env=env)
        bad = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", *BAD_INPUT_TESTS], cwd=ROOT, env=env,
                             capture_output=True, text=True)
        rows = [json.loads(line) for line in figures.read_text().splitlines()] if figures.exists() else []
    n_bad = sum(1 for line in bad.stdout.splitlines() if line.startswith("PASSED "))
    n_bad_failed = sum(1 for line in bad.stdout.splitlines() if line.startswith("FAILED "))
    print("| fault | injected | survived | trials or measurements lost | notes |")
    print("|---|---|---|---|---|")
    for r in rows:
        notes = {k: v for k, v in r.items() if k not in ("fault", "injected", "survived", "lost")}
        if "recovery_s" in notes and notes["recovery_s"]:
            rec = notes.pop("recovery_s")
            notes["recovery_s (kill -> re-queued)"] = (
                f"median {statistics.median(rec):.2f}, min {min(rec):.2f}, max {max(rec):.2f}")
        print(f"| {r['fault']} | {r['injected']} | {'yes' if r['survived'] else 'NO'} | {r['lost']} | "
              f"{', '.join(f'{k}={v}' for k, v in notes.items())} |")
    print(f"\nbad-input tests: {n_bad} passed, {n_bad_failed} failed (each a case with a clear error)")
    return faults.returncode or bad.returncode


if __name__ == "__main__":
    sys.exit(main())
