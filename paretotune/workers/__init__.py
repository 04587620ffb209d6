"""Workers: the trial loop, the local pool, the Ray backend, the reaper."""

from __future__ import annotations

from paretotune.search.confirmations import Confirmation, confirmations
from paretotune.workers.confirm import compare, confirm
from paretotune.workers.executor import TrialExecutor
from paretotune.workers.lifecycle import Outcome
from paretotune.workers.loop import run_worker
from paretotune.workers.pool import run_study
from paretotune.workers.reaper import reap_stale

__all__ = ["Confirmation", "Outcome", "TrialExecutor", "compare", "confirm", "confirmations", "reap_stale", "run_study", "run_worker"]
