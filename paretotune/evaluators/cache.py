"""`ArtifactCache`: built artifacts on disk, keyed by content hash, shared by processes.

Each entry is two files, `<key>.bin` (the artifact) and `<key>.json` (its metadata). Both are
written to a temporary file and moved into place with `os.replace`, the metadata last, so a
reader sees a whole entry or none. The cache is bounded; the least recently used entries
(by modification time, refreshed on a hit) are evicted first.

The directory is created private (mode 0700), and the metadata holds the sha256 of the data: an
entry whose data does not match it is a miss (logged), so a truncated or swapped file is built
again rather than used. Readers never unpickle what they find here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paretotune.errors import ConfigError

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "PARETOTUNE_CACHE_DIR"
DEFAULT_CACHE_DIR = ".paretotune-cache"
DEFAULT_MAX_BYTES = 2 * 1024**3


def cache_key(*parts: Any) -> str:
    """A stable hex digest of JSON-serializable parts (bytes are hashed as they are)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, (bytes, bytearray, memoryview)):
            digest.update(b"b:")
            digest.update(bytes(part))
        else:
            digest.update(b"j:")
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    data: bytes | None
    meta: dict[str, Any]


class ArtifactCache:
    """A size-bounded, multi-process-safe directory of artifacts and their metadata."""

    def __init__(
        self, root: str | os.PathLike[str] | None = None, max_bytes: int = DEFAULT_MAX_BYTES
    ):
        if not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ConfigError(f"ArtifactCache max_bytes must be a positive int, got {max_bytes!r}")
        if root is None:
            root = os.environ.get(CACHE_DIR_ENV) or Path.cwd() / DEFAULT_CACHE_DIR
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._mode_checked = False

    def _paths(self, key: str) -> tuple[Path, Path]:
        if not key or not all(c in "0123456789abcdef" for c in key):
            raise ConfigError(f"cache key must be a lowercase hex digest, got {key!r}")
        return self.root / f"{key}.bin", self.root / f"{key}.json"

    def get(self, key: str) -> CacheEntry | None:
        """The entry for `key`, or None (also when its data fails its hash). A hit refreshes the
        entry's age."""
        data_path, meta_path = self._paths(key)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError(f"metadata is a {type(meta).__name__}, not an object")
            data = data_path.read_bytes() if meta.get("has_data") else None
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("artifact cache entry %s in %s is unreadable (%s); treated as a miss",
                           key, self.root, exc)
            return None
        if data is not None:
            digest = hashlib.sha256(data).hexdigest()
            if meta.get("sha256") != digest:
                logger.warning(
                    "artifact cache entry %s in %s: its data has sha256 %s, its metadata records "
                    "%r; not used (treated as a miss, it will be built again)",
                    key, self.root, digest, meta.get("sha256"),
                )
                return None
        now = time.time()
        for path in (meta_path, data_path):
            try:
                os.utime(path, (now, now))
            except OSError:
                pass
        meta.pop("has_data", None)
        meta.pop("sha256", None)
        return CacheEntry(data=data, meta=meta)

    def put(self, key: str, meta: dict[str, Any], data: bytes | None = None) -> None:
        """Store an entry atomically, then evict the oldest entries above `max_bytes`."""
        data_path, meta_path = self._paths(key)
        self.ensure_root()
        payload = dict(meta, has_data=data is not None)
        if data is not None:
            self._write_atomic(data_path, data)
            payload["sha256"] = hashlib.sha256(data).hexdigest()
        self._write_atomic(meta_path, json.dumps(payload, sort_keys=True).encode())
        self.evict()

    def ensure_root(self) -> Path:
        """The cache directory, created with mode 0700 when absent (an existing one keeps its
        mode; one that others may write to is logged once)."""
        try:
            self.root.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            if not self._mode_checked:
                self._mode_checked = True
                try:
                    mode = self.root.stat().st_mode
                except OSError:
                    mode = 0
                if mode & 0o022:
                    logger.warning(
                        "artifact cache %s can be written by other users (mode %o); anyone who "
                        "can write there can change what is measured and exported: chmod 700 it",
                        self.root, mode & 0o777,
                    )
        return self.root

    def subdir(self, name: str) -> Path:
        """A private (0700) directory inside the cache, for engines' own caches."""
        path = self.ensure_root() / name
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def _write_atomic(self, path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=path.suffix)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def _entries(self) -> list[tuple[float, int, str]]:
        """(age stamp, size, key) of every complete entry."""
        sizes: dict[str, int] = {}
        stamps: dict[str, float] = {}
        try:
            listing = list(os.scandir(self.root))
        except OSError:
            return []
        for item in listing:
            if item.name.startswith(".tmp-"):
                continue
            key, _, suffix = item.name.rpartition(".")
            if suffix not in ("bin", "json"):
                continue
            try:
                stat = item.stat()
            except OSError:
                continue
            sizes[key] = sizes.get(key, 0) + stat.st_size
            if suffix == "json":
                stamps[key] = stat.st_mtime
        return [(stamps.get(key, 0.0), size, key) for key, size in sizes.items()]

    def size_bytes(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def evict(self) -> int:
        """Remove the oldest entries until the cache fits `max_bytes`; returns how many."""
        entries = sorted(self._entries())
        total = sum(size for _, size, _ in entries)
        removed = 0
        for _, size, key in entries:
            if total <= self.max_bytes:
                break
            for path in self._paths(key)[::-1]:  # metadata first: the entry disappears whole
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
            total -= size
            removed += 1
            logger.debug("evicted cache entry %s (%d bytes)", key, size)
        return removed

    def clear(self) -> None:
        for _, _, key in self._entries():
            for path in self._paths(key)[::-1]:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
