"""The SQL study store: Optuna's RDB storage plus paretotune's own tables."""

from __future__ import annotations

from paretotune.storage.engine import DEFAULT_URL, mask, resolve_url
from paretotune.storage.retry import is_transient, retry
from paretotune.storage.store import FleetState, StopKind, StudyStop, StudyStore

__all__ = ["DEFAULT_URL", "FleetState", "StopKind", "StudyStop", "StudyStore", "is_transient", "mask", "resolve_url", "retry"]
