"""Worker-side outage handling: the store retry helpers, and a local spool for finished
measurements the store could not take.

A measurement that cannot be delivered within the retry window is written to the spool first,
so nothing measured is lost; the next worker for the study on this machine delivers it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from paretotune.storage.retry import (
    DEFAULT_RETRY_WINDOW_S,
    is_transient,
    note_store_failure,
    retry,
    store_healthy_for,
)

__all__ = [
    "DEFAULT_RETRY_WINDOW_S", "Spool", "is_transient", "note_store_failure", "retry", "spool_dir",
    "store_healthy_for",
]


def spool_dir() -> Path:
    base = os.environ.get("PARETOTUNE_SPOOL_DIR")
    return Path(base) if base else Path.home() / ".cache" / "paretotune" / "spool"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class Spool:
    """Finished measurements waiting for the store, one JSON line each, per study."""

    def __init__(self, study: str, directory: Path | None = None) -> None:
        self.dir = directory or spool_dir()
        self.path = self.dir / f"{_safe(study)}.jsonl"

    def put(self, entry: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def take_all(self) -> list[dict[str, Any]]:
        """Claim every spooled entry (the file is renamed first, so two workers don't both take it)."""
        if not self.path.exists():
            return []
        claimed = self.path.with_suffix(f".{os.getpid()}.delivering")
        try:
            os.replace(self.path, claimed)
        except FileNotFoundError:
            return []
        entries = [json.loads(line) for line in claimed.read_text().splitlines() if line.strip()]
        claimed.unlink()
        return entries
