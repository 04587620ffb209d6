"""Bad input and hostile local users (issue 19): each case gets the clear answer we promise.

One section per group of items; each test fails on the code before its fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import paretotune as pt
from paretotune.cli import main
from paretotune.export import BUNDLE_MARKER, _check_out_dir

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
