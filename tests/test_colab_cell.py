"""Every chapter's Colab set-up cell and notebook metadata (robustnb.book.cells), generated from _config.yml and
pyproject.toml: in Colab the cell installs the version the page was built from (the git tag v<version>, the
configured branch with a warning when that fails), keeps the cache on Google Drive when it is mounted, and imports
the book's `cpu` archive (the URL _config.yml names) when the reader sets FETCH_TRAINED = True; outside Colab it does
nothing. `python -m robustnb.book sync` writes the cell and the metadata asking Colab for a GPU runtime.

The cell is run here with a fake ``google.colab`` module and a recording ``subprocess.run`` (nothing is installed);
the import itself, from a URL, is tests/test_archive.py's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml

from conftest import ROOT
from robustnb.book import cells, scaffold, toc
from robustnb.config import ConfigError

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
REPO, BRANCH = CONFIG["repository"]["url"].rstrip("/"), CONFIG["repository"].get("branch", "main")


def test_the_cell_names_the_pages_version_and_the_archive_and_compiles():
    src = cells.colab_cell_source()
    compile(src, "colab-cell", "exec")
    assert src.startswith(cells.COLAB_MARKER)
    assert f"git+{REPO}@v{VERSION}" in src and f"git+{REPO}@{BRANCH}" in src
    assert src.index(f"@v{VERSION}") < src.index(f"@{BRANCH}\""), "the tag first, the branch as the fallback"
    assert f'"{CONFIG["robustnb"]["cache_archive"]}"' in src
    assert "\nFETCH_TRAINED = False  #" in src, "the reader's switch, off by default, on a line of its own"
    assert all(len(line) <= 120 for line in src.splitlines()), "the first code a reader sees: no clipped lines"


def test_jupyter_book_accepts_the_robustnb_key():
    """Jupyter Book validates _config.yml against its schema; the extra `robustnb:` key must pass it strictly."""
    from jupyter_book.config import validate_yaml

    validate_yaml(CONFIG, raise_on_errors=True)
    assert toc.cache_archive_url() == CONFIG["robustnb"]["cache_archive"]


@pytest.mark.parametrize("value", [None, "releases/robustnb-cache-cpu.tar.gz", "file:///tmp/a.tar.gz"])
def test_a_missing_or_relative_archive_url_is_refused(tmp_path, value):
    cfg = {**CONFIG, "robustnb": {"cache_archive": value}}
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="cache_archive must be the https URL"):
        toc.cache_archive_url(tmp_path)


def _run_cell(monkeypatch, src: str, *, colab: bool, tag_exists: bool = True, drive: bool = False) -> list[list]:
    """Execute the cell's source with ``subprocess.run`` recording its commands (pip fails on the tag when
    ``tag_exists`` is false), ``google.colab`` imported or not, and Google Drive mounted or not."""
    calls = []

    def run(cmd, check=False, **kwargs):
        calls.append([str(c) for c in cmd])
        rc = 1 if (not tag_exists and any(f"@v{VERSION}" in str(c) for c in cmd)) else 0
        if check and rc:
            raise subprocess.CalledProcessError(rc, cmd)
        return subprocess.CompletedProcess(cmd, rc)

    monkeypatch.setattr(subprocess, "run", run)
    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    real_isdir = os.path.isdir
    monkeypatch.setattr(os.path, "isdir", lambda p: drive if p == "/content/drive/MyDrive" else real_isdir(p))
    monkeypatch.setenv("ROBUSTNB_CACHE", "unset-marker")
    monkeypatch.delenv("ROBUSTNB_CACHE")  # the cell's own setting is undone after the test
    exec(compile(src, "colab-cell", "exec"), {"__name__": "__main__"})
    return calls


def _installs(calls) -> list[str]:
    return [c[-1] for c in calls if c[1:4] == ["-m", "pip", "install"] and "--no-deps" not in c]


def test_outside_colab_the_cell_does_nothing(monkeypatch):
    src = cells.colab_cell_source().replace("FETCH_TRAINED = False", "FETCH_TRAINED = True")
    assert _run_cell(monkeypatch, src, colab=False, drive=True) == []
    assert "ROBUSTNB_CACHE" not in os.environ


def test_in_colab_the_tag_is_installed(monkeypatch, capsys):
    calls = _run_cell(monkeypatch, cells.colab_cell_source(), colab=True)
    assert _installs(calls) == [f"robustnb @ git+{REPO}@v{VERSION}"]
    assert any("--no-deps" in c for c in calls) and not any("import" in c for c in calls)
    assert "warning" not in capsys.readouterr().out
    assert "ROBUSTNB_CACHE" not in os.environ, "no Drive mounted: robustnb's default cache"


def test_without_the_tag_the_branch_is_installed_with_a_warning(monkeypatch, capsys):
    calls = _run_cell(monkeypatch, cells.colab_cell_source(), colab=True, tag_exists=False)
    assert _installs(calls) == [f"robustnb @ git+{REPO}@v{VERSION}", f"robustnb @ git+{REPO}@{BRANCH}"]
    out = capsys.readouterr().out
    assert "warning" in out and f"v{VERSION}" in out and BRANCH in out


def test_fetch_trained_imports_the_archive_into_drive_when_mounted(monkeypatch):
    src = cells.colab_cell_source().replace("FETCH_TRAINED = False", "FETCH_TRAINED = True")
    calls = _run_cell(monkeypatch, src, colab=True, drive=True)
    assert calls[-1] == [sys.executable, "-m", "robustnb", "cache", "import", CONFIG["robustnb"]["cache_archive"]]
    assert os.environ["ROBUSTNB_CACHE"] == cells.DRIVE_CACHE  # the import (a child process) and the chapter use it


def _book(root, notebooks: dict[str, dict]) -> None:
    """A book in ``root``: this repository's config files (a fork's URL in _config.yml) and the given notebooks."""
    for name in ("pyproject.toml", "requirements.txt"):
        shutil.copy(ROOT / name, root / name)
    cfg = {**CONFIG, "repository": {**CONFIG["repository"], "url": "https://github.com/fork/robustnb"},
           "robustnb": {"cache_archive": "https://github.com/fork/robustnb/releases/download/cache-cpu/a.tar.gz"}}
    (root / "_config.yml").write_text(yaml.safe_dump(cfg))
    (root / "_toc.yml").write_text(yaml.safe_dump({"format": "jb-book", "root": "book/intro", "chapters": [
        {"file": f"book/{stem}"} for stem in notebooks]}))
    (root / "book").mkdir()
    for stem, nb in notebooks.items():
        (root / "book" / f"{stem}.ipynb").write_text(json.dumps(nb))


def _notebook(colab_source: str, metadata: dict) -> dict:
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": metadata, "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["# A chapter"]},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": [colab_source]},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": ["x = 1"]}]}


def test_sync_writes_the_cell_and_the_gpu_metadata(tmp_path):
    """On copies (never the book's own notebooks): an old cell is rewritten from the fork's _config.yml, the GPU
    runtime is asked for in every chapter's metadata (other metadata kept), and a second sync changes nothing."""
    kernel = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    _book(tmp_path, {
        "old": _notebook(f"{cells.COLAB_MARKER}: pip install robustnb @ main", dict(kernel)),
        "kept": _notebook("print('no Colab cell here')", {**kernel, "colab": {"name": "kept.ipynb"}}),
    })
    changed = cells.sync(tmp_path)
    assert [p.stem for p in changed] == ["old", "kept"]
    old = json.loads((tmp_path / "book" / "old.ipynb").read_text())
    kept = json.loads((tmp_path / "book" / "kept.ipynb").read_text())
    want = cells.colab_cell_source(tmp_path)
    assert "".join(old["cells"][1]["source"]) == want and "git+https://github.com/fork/robustnb@v" in want
    assert "https://github.com/fork/robustnb/releases/download/cache-cpu/a.tar.gz" in want
    assert "".join(kept["cells"][1]["source"]) == "print('no Colab cell here')", "only a Colab cell is rewritten"
    for nb in (old, kept):
        assert nb["metadata"]["accelerator"] == "GPU" and nb["metadata"]["colab"]["gpuType"] == "T4"
        assert nb["metadata"]["kernelspec"] == kernel["kernelspec"]
    assert kept["metadata"]["colab"]["name"] == "kept.ipynb"
    assert cells.sync(tmp_path) == []


def test_a_new_chapter_asks_for_a_gpu_runtime(tmp_path):
    nb = json.loads(scaffold.notebook(tmp_path / "new.ipynb", "New").read_text())
    assert nb["metadata"]["accelerator"] == "GPU" and nb["metadata"]["colab"] == {"gpuType": "T4", "provenance": []}
    assert "".join(nb["cells"][1]["source"]) == cells.colab_cell_source()


@pytest.mark.parametrize("path", toc.chapters(), ids=lambda p: p.stem)
def test_every_chapter_asks_colab_for_a_gpu_runtime(path):
    meta = json.loads(path.read_text())["metadata"]
    assert meta.get("accelerator") == "GPU" and meta.get("colab", {}).get("gpuType") == "T4", \
        f"{path.name}: no GPU runtime in its metadata: python -m robustnb.book sync"
