"""The artifact cache: atomic entries, bounded size, oldest evicted first."""

from __future__ import annotations

import os
import time

import pytest

from paretotune.errors import ConfigError
from paretotune.evaluators import ArtifactCache
from paretotune.evaluators.cache import cache_key


def test_round_trip_and_miss(tmp_path) -> None:
    cache = ArtifactCache(tmp_path)
    key = cache_key("a", 1)
    assert cache.get(key) is None
    cache.put(key, {"accuracy": 0.5}, b"artifact")
    entry = cache.get(key)
    assert entry is not None and entry.data == b"artifact" and entry.meta == {"accuracy": 0.5}
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def test_metadata_only_entries(tmp_path) -> None:
    cache = ArtifactCache(tmp_path)
    cache.put(cache_key("b"), {"p50_ms": 1.0})
    entry = cache.get(cache_key("b"))
    assert entry is not None and entry.data is None and entry.meta["p50_ms"] == 1.0


def test_oldest_entries_are_evicted_first(tmp_path) -> None:
    cache = ArtifactCache(tmp_path, max_bytes=3500)  # room for three entries
    keys = [cache_key(i) for i in range(3)]
    for i, key in enumerate(keys):
        cache.put(key, {}, bytes(1000))
        stamp = time.time() - 100 + i
        for suffix in (".bin", ".json"):
            os.utime(tmp_path / f"{key}{suffix}", (stamp, stamp))
    cache.get(keys[0])  # a hit makes the oldest entry the newest
    cache.put(cache_key("new"), {}, bytes(1000))
    assert cache.get(keys[1]) is None
    assert all(cache.get(k) is not None for k in (keys[0], keys[2], cache_key("new")))
    assert cache.size_bytes() <= 3500


def test_cache_dir_from_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PARETOTUNE_CACHE_DIR", str(tmp_path / "env"))
    assert ArtifactCache().root == tmp_path / "env"


def test_bad_arguments_are_rejected(tmp_path) -> None:
    with pytest.raises(ConfigError, match="max_bytes"):
        ArtifactCache(tmp_path, max_bytes=0)
    with pytest.raises(ConfigError, match="cache key"):
        ArtifactCache(tmp_path).get("../etc")


def test_keys_depend_on_every_part() -> None:
    assert cache_key("m", {"a": 1}) == cache_key("m", {"a": 1})
    assert cache_key("m", {"a": 1}) != cache_key("m", {"a": 2})
    assert cache_key(b"x") != cache_key("x")
