"""Bad input and hostile local users (issue 19): each case gets the clear answer we promise.

One section per group of items; each test fails on the code before its fix.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

import paretotune as pt
from paretotune.cli import main
from paretotune.evaluators.cache import ArtifactCache, cache_key
from paretotune.export import BUNDLE_MARKER
from paretotune.export.bundle import _check_out_dir

# == Items 1 and 2: export never removes what it did not write; the artifact cache runs no code ==
# More cases live beside the code they exercise: tests/export/test_export.py (a real bundle
# replaced, a planted pickle at export) and tests/evaluators/test_evaluators_artifacts.py
# (the torch artifact format, planted and tampered entries on a cache hit).


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A throwaway home (holding a file) and a current directory two levels below tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "keep.txt").write_text("home")
    cwd = tmp_path / "work" / "project"
    cwd.mkdir(parents=True)
    (cwd / "keep.txt").write_text("cwd")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    return {"home": home, "cwd": cwd, "ancestor": tmp_path / "work"}


def test_export_guard_never_replaces_the_filesystem_root() -> None:
    # the guard alone: a full export is never pointed at "/", even in a test
    for overwrite in (True, False):
        with pytest.raises(pt.ConfigError, match=r"out_dir \(--out\) '/' is the filesystem root"):
            _check_out_dir(Path("/"), overwrite)


@pytest.mark.parametrize(
    ("which", "what"),
    [
        ("home", "the home directory"),
        ("cwd", "the current directory"),
        ("dot", "the current directory"),
        ("ancestor", "an ancestor of the current directory"),
    ],
)
def test_export_guard_refuses_home_cwd_and_its_ancestors(
    places: dict[str, Path], which: str, what: str
) -> None:
    out = Path(".") if which == "dot" else places[which]
    with pytest.raises(pt.ConfigError, match=rf"--out.*{str(out)!r}.* is {what}.*allowed: a new"):
        _check_out_dir(out, overwrite=True)
    # even a previous bundle there is refused
    (places["cwd"] / BUNDLE_MARKER).write_text("")
    with pytest.raises(pt.ConfigError, match=what):
        _check_out_dir(out, overwrite=True)


def test_export_guard_replaces_only_a_previous_bundle(tmp_path: Path) -> None:
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("x")
    with pytest.raises(
        pt.ConfigError,
        match=rf"out_dir \(--out\) {str(other)!r} is not empty and is not a paretotune bundle "
        rf"\(it has no {BUNDLE_MARKER}\)",
    ):
        _check_out_dir(other, overwrite=True)
    with pytest.raises(pt.ConfigError, match="exists and is not empty"):
        _check_out_dir(other, overwrite=False)
    (other / BUNDLE_MARKER).write_text("")
    _check_out_dir(other, overwrite=True)  # a previous bundle: allowed
    _check_out_dir(tmp_path / "new", overwrite=False)  # absent: allowed
    link = tmp_path / "link"
    link.symlink_to(other)
    with pytest.raises(pt.ConfigError, match="is a symbolic link"):
        _check_out_dir(link, overwrite=True)


def _cheap_study(tmp_path: Path) -> str:
    """A study with one completed trial: export's guard runs before anything is built."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = pt.create_study(
        "guard", url, space=pt.SearchSpace({"engine": pt.Choice(["onnxruntime"])}),
        objectives={"accuracy": "max"}, warm_start="none",
    )
    study.tell(study.ask(), {"accuracy": 0.9, "latency_p50_ms": 1.0})
    return url


@pytest.mark.parametrize("which", ["home", "cwd", "dot", "ancestor"])
def test_cli_export_overwrite_refuses_home_cwd_and_ancestors(
    places: dict[str, Path], which: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _cheap_study(tmp_path)
    out = "." if which == "dot" else str(places[which])
    before = sorted(p for p in tmp_path.rglob("*"))
    code = main(["export", "guard", "--storage", url, "--trial", "0", "--out", out, "--overwrite"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: out_dir (--out)") and "allowed:" in err[0]
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing removed, nothing written
    assert (places["home"] / "keep.txt").read_text() == "home"
    assert (places["cwd"] / "keep.txt").read_text() == "cwd"


def test_cache_directory_is_created_private(tmp_path: Path) -> None:
    root = tmp_path / "parent" / "cache"
    cache = ArtifactCache(root)
    cache.put(cache_key("entry"), {"kind": "test"}, b"data")
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(cache.subdir("ort-tensorrt-engines").stat().st_mode) == 0o700


def test_an_existing_cache_directory_keeps_its_mode_and_a_shared_one_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    ArtifactCache(private).put(cache_key("a"), {}, b"x")
    assert stat.S_IMODE(private.stat().st_mode) == 0o700  # never loosened
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with caplog.at_level(logging.WARNING, logger="paretotune.evaluators.cache"):
        ArtifactCache(shared).put(cache_key("a"), {}, b"x")
    assert any("can be written by other users (mode 777)" in r.getMessage() for r in caplog.records)


def test_a_cache_entry_whose_data_fails_its_hash_is_a_miss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    key = cache_key("entry")
    cache.put(key, {"accuracy": 0.9}, b"the artifact")
    entry = cache.get(key)
    assert entry is not None and entry.data == b"the artifact" and entry.meta == {"accuracy": 0.9}
    (tmp_path / "cache" / f"{key}.bin").write_bytes(b"something else")
    with caplog.at_level(logging.WARNING, logger="paretotune.evaluators.cache"):
        assert cache.get(key) is None
    assert any(key in r.getMessage() and "treated as a miss" in r.getMessage() for r in caplog.records)
    # an entry with no recorded hash (written before hashes, or by hand) is not trusted either
    meta_path = tmp_path / "cache" / f"{key}.json"
    meta_path.write_text(json.dumps({"accuracy": 0.9, "has_data": True}))
    assert cache.get(key) is None
    cache.put(key, {"accuracy": 0.9}, b"the artifact")  # built again: a hit once more
    assert cache.get(key) is not None
