"""``python -m robustnb cache export`` / ``import``: one archive of trained models and results.

A smoke chapter's cache is exported, imported into an empty cache, and the chapter then trains and computes
nothing; a corrupt, truncated, mismatched or unsafe archive is refused before anything is written; a file the
reader already has is never overwritten.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from robustnb import archive
from robustnb.cache import CACHE_FORMAT
from robustnb.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _fake_cache(root: Path) -> Path:
    (root / "models").mkdir(parents=True)
    (root / "results" / "x-abc").mkdir(parents=True)
    (root / "datasets").mkdir()
    (root / "models" / "m-1.pt").write_bytes(b"weights" * 100)
    (root / "results" / "x-abc" / "frame.parquet").write_bytes(b"frame")
    (root / "results" / "x-abc" / "manifest.json").write_text("{}")
    (root / "datasets" / "cifar.pt").write_bytes(b"decoded")  # made from the reader's data: not exported
    return root


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_round_trip_and_never_overwrites(tmp_path):
    src = _fake_cache(tmp_path / "a")
    out = tmp_path / "c.tar.gz"
    manifest = archive.export_archive(out, src, label="smoke")
    assert {e["path"] for e in manifest["files"]} == {"models/m-1.pt", "results/x-abc/frame.parquet",
                                                     "results/x-abc/manifest.json"}
    with pytest.raises(ConfigError, match="exists"):
        archive.export_archive(out, src)
    dst = tmp_path / "b"
    (dst / "models").mkdir(parents=True)
    (dst / "models" / "m-1.pt").write_bytes(b"the reader's own")
    done = archive.import_archive(out, dst)
    assert done == {"added": 2, "present": 0, "conflicts": ["models/m-1.pt"], "label": "smoke"}
    assert (dst / "models" / "m-1.pt").read_bytes() == b"the reader's own"
    assert (dst / "results" / "x-abc" / "frame.parquet").read_bytes() == b"frame"
    assert not (dst / "datasets").exists()
    again = archive.import_archive(out, dst)
    assert again["added"] == 0 and again["present"] == 2


def _rewrite(src: Path, dst: Path, edit) -> None:
    """Copy archive ``src`` to ``dst`` with ``edit(name, data) -> (name, data) | None`` applied per member."""
    with tarfile.open(src, "r:gz") as tin, tarfile.open(dst, "w:gz") as tout:
        for m in tin.getmembers():
            got = edit(m.name, tin.extractfile(m).read())
            if got is None:
                continue
            info = tarfile.TarInfo(got[0])
            info.size = len(got[1])
            tout.addfile(info, io.BytesIO(got[1]))


@pytest.mark.parametrize("damage, message", [
    (lambda n, d: (n, d[:-1] + b"X") if n == "models/m-1.pt" else (n, d), "checksum"),
    (lambda n, d: None if n == "models/m-1.pt" else (n, d), "does not match its manifest"),
    (lambda n, d: (n, json.dumps({**json.loads(d), "cache_format": CACHE_FORMAT + 1}).encode())
     if n == "manifest.json" else (n, d), "cache format"),
    (lambda n, d: ("../evil.pt", d) if n == "models/m-1.pt" else (n, d), "outside the cache folders"),
    (lambda n, d: None if n == "manifest.json" else (n, d), "no manifest.json"),
])
def test_refuses_damaged_archives_before_writing(tmp_path, damage, message):
    out = tmp_path / "c.tar.gz"
    archive.export_archive(out, _fake_cache(tmp_path / "a"))
    bad = tmp_path / "bad.tar.gz"
    _rewrite(out, bad, damage)
    dst = tmp_path / "b"
    with pytest.raises(archive.ArchiveError, match=message):
        archive.import_archive(bad, dst)
    assert not dst.exists() or not any(dst.rglob("*.*"))


def test_refuses_truncated_archive(tmp_path):
    out = tmp_path / "c.tar.gz"
    archive.export_archive(out, _fake_cache(tmp_path / "a"))
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(out.read_bytes()[: len(out.read_bytes()) // 2])
    with pytest.raises(archive.ArchiveError, match="truncated or corrupt"):
        archive.import_archive(bad, tmp_path / "b")


def _reproduce(cache: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "ROBUSTNB_CACHE": str(cache), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "-m", "robustnb", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


def test_imported_smoke_cache_recomputes_nothing(tmp_path):
    """Export a smoke chapter's cache, import it into an empty one: the chapter then trains and computes nothing
    (the models, results and tuning folders are exactly the imported files) and gives the same claims."""
    a, b = tmp_path / "a", tmp_path / "b"
    first = _reproduce(a, "reproduce", "frequency_analysis", "--preset", "smoke", "--out", str(tmp_path / "a.csv"))
    assert first.returncode == 0, first.stderr[-3000:]
    assert any((a / "models").rglob("*.pt")) and any((a / "results").rglob("manifest.json"))
    out = tmp_path / "smoke.tar.gz"
    assert _reproduce(a, "cache", "export", str(out), "--label", "smoke").returncode == 0
    imp = _reproduce(b, "cache", "import", str(out))
    assert imp.returncode == 0 and "files added" in imp.stdout, imp.stderr
    kept = {k: v for k, v in _files(b).items() if k.split("/")[0] in archive.FOLDERS}
    second = _reproduce(b, "reproduce", "frequency_analysis", "--preset", "smoke", "--out", str(tmp_path / "b.csv"))
    assert second.returncode == 0, second.stderr[-3000:]
    after = {k: v for k, v in _files(b).items() if k.split("/")[0] in archive.FOLDERS}
    assert after == kept  # nothing computed, nothing rewritten
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(out.read_bytes()[:100])
    refused = _reproduce(tmp_path / "c", "cache", "import", str(bad))
    assert refused.returncode == 2 and "corrupt" in refused.stderr
