"""The book itself: which chapters ``_toc.yml`` lists, and the Colab set-up cell every chapter opens with.

``python -m robustnb.book sync`` rewrites the first code cell of every chapter from ``_config.yml``'s
``repository`` entry (the one place that names the repository); ``python -m robustnb.book list`` prints
the chapters.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COLAB_MARKER = "# Colab set-up"


def _load_yaml(name: str, root: Path = ROOT) -> dict:
    path = root / name
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run this from a checkout of the robustnb repository.")
    return yaml.safe_load(path.read_text())


def toc_files(root: Path = ROOT) -> list[str]:
    """Every file named in ``_toc.yml`` (without suffix), root first, in reading order."""
    toc = _load_yaml("_toc.yml", root)
    out = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                out.append(e["file"])
            walk(e.get("sections"))
            walk(e.get("chapters"))

    walk(toc.get("parts"))
    walk(toc.get("chapters"))
    return out


def chapters(root: Path = ROOT) -> list[Path]:
    """The executable chapters (notebooks) listed in ``_toc.yml``, in reading order."""
    paths = []
    for f in toc_files(root):
        p = (root / f).with_suffix(".ipynb")
        if p.exists():
            paths.append(p)
    return paths


def repository(root: Path = ROOT) -> tuple[str, str]:
    repo = _load_yaml("_config.yml", root).get("repository", {})
    return repo["url"].rstrip("/"), repo.get("branch", "main")


def colab_cell_source(root: Path = ROOT) -> str:
    url, branch = repository(root)
    return (
        f"{COLAB_MARKER}: in Google Colab, install robustnb from the repository (does nothing elsewhere).\n"
        "import subprocess, sys\n"
        "if \"google.colab\" in sys.modules:\n"
        f"    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"-q\", \"robustnb @ git+{url}@{branch}\"], check=True)"
    )


def sync(root: Path = ROOT) -> list[Path]:
    """Rewrite the Colab cell of every chapter that is out of date; returns the notebooks changed."""
    changed = []
    want = colab_cell_source(root)
    for nb_path in chapters(root):
        nb = json.loads(nb_path.read_text())
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
        if "".join(cell["source"]).startswith(COLAB_MARKER) and "".join(cell["source"]) != want:
            cell["source"] = want.splitlines(keepends=True)
            nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            changed.append(nb_path)
    return changed


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "list"
    if cmd == "sync":
        for p in sync():
            print("updated", p.relative_to(ROOT))
    elif cmd == "list":
        for p in chapters():
            print(p.relative_to(ROOT))
    else:
        sys.exit(f"usage: python -m robustnb.book [list|sync], got {cmd!r}")
