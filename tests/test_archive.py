"""``python -m robustnb cache export`` / ``import``: one archive of trained models and results.

A smoke chapter's cache is exported, imported into an empty cache, and the chapter then trains and computes
nothing; a corrupt, truncated, mismatched or unsafe archive is refused before anything is written; a file the
reader already has is never overwritten. An archive is also imported from a URL (served here by a local
http.server), and a failed download is an error naming the URL.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
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


class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder; ``/cut.tar.gz`` announces more bytes than it sends (a transfer cut off)."""

    def do_GET(self):
        if self.path == "/cut.tar.gz":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"\x1f\x8b" + b"0" * 100)
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    """``(folder, base URL)``: a local HTTP server for the files put in ``folder``."""
    folder = tmp_path / "www"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_import_from_a_url(tmp_path, served, monkeypatch, capsys):
    folder, base = served
    archive.export_archive(folder / "c.tar.gz", _fake_cache(tmp_path / "a"), label="smoke")
    dst = tmp_path / "b"
    done = archive.import_archive(f"{base}/c.tar.gz", dst)
    assert done == {"added": 3, "present": 0, "conflicts": [], "label": "smoke"}
    assert (dst / "models" / "m-1.pt").read_bytes() == b"weights" * 100
    # the command line, as the Colab cell calls it
    from robustnb.cli import main
    monkeypatch.setenv("ROBUSTNB_CACHE", str(tmp_path / "c"))
    assert main(["cache", "import", f"{base}/c.tar.gz"]) == 0
    assert "3 files added" in capsys.readouterr().out
    assert (tmp_path / "c" / "results" / "x-abc" / "frame.parquet").read_bytes() == b"frame"


@pytest.mark.parametrize("name, message", [("missing.tar.gz", "HTTP 404"), ("cut.tar.gz", "cut off")])
def test_a_failed_download_is_a_clear_error(tmp_path, served, monkeypatch, capsys, name, message):
    _, base = served
    url = f"{base}/{name}"
    with pytest.raises(archive.ArchiveError, match=message) as e:
        archive.import_archive(url, tmp_path / "b")
    assert url in str(e.value) and not (tmp_path / "b").exists()
    from robustnb.cli import main
    monkeypatch.setenv("ROBUSTNB_CACHE", str(tmp_path / "c"))
    assert main(["cache", "import", url]) == 2
    assert url in capsys.readouterr().err


def test_a_corrupt_download_names_the_url(tmp_path, served):
    folder, base = served
    archive.export_archive(tmp_path / "c.tar.gz", _fake_cache(tmp_path / "a"))
    _rewrite(tmp_path / "c.tar.gz", folder / "bad.tar.gz",
             lambda n, d: (n, d[:-1] + b"X") if n == "models/m-1.pt" else (n, d))
    with pytest.raises(archive.ArchiveError, match=f"{base}/bad.tar.gz: models/m-1.pt does not match its checksum"):
        archive.import_archive(f"{base}/bad.tar.gz", tmp_path / "b")
