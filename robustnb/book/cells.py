"""The cells every chapter shares, and the commands that keep them in step: the Colab set-up cell (from
``_config.yml``'s repository), the parameters cell, the set-up cell; the outputs nbval compares; a new chapter's
skeleton (:func:`scaffold`)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

from robustnb.book.toc import ROOT, chapters, no_deps_requirements, repository

COLAB_MARKER = "# Colab set-up"
NBVAL_TAG = "nbval-check-output"  # a cell tag: invisible in the pages, read by nbval
PARAMETERS_SOURCE = (
    "# Parameters (papermill injects new values after this cell). preset=None means $ROBUSTNB_PRESET, else 'cpu'.\n"
    "preset = None  # 'smoke' | 'cpu' | 'full'\n"
    "seed = 0\n"
    "device = \"auto\"  # 'auto' picks the GPU when there is one (Colab), else the CPU"
)
SETUP_SOURCE = "import robustnb\n\nrun = robustnb.setup(preset, seed=seed, device=device)"


def colab_cell_source(root: Path = ROOT) -> str:
    url, branch = repository(root)
    extra = ", ".join(f'\"{r}\"' for r in no_deps_requirements(root))
    return (
        f"{COLAB_MARKER}: in Google Colab, install robustnb from the repository (does nothing elsewhere).\n"
        "import subprocess, sys\n"
        "if \"google.colab\" in sys.modules:\n"
        "    pip = [sys.executable, \"-m\", \"pip\", \"install\", \"-q\"]\n"
        f"    subprocess.run(pip + [\"robustnb @ git+{url}@{branch}\"], check=True)\n"
        "    # without their declared pins, which would downgrade Colab's numpy and requests (both run on numpy 2)\n"
        f"    subprocess.run(pip + [\"--no-deps\", {extra}], check=True)"
    )


def _write(nb_path: Path, nb: dict) -> None:
    Path(nb_path).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def store_checked_outputs(nb_path: Path, executed_path: Path) -> int:
    """Copy the outputs of the cells tagged ``nbval-check-output`` from an executed copy of a chapter (a
    ``smoke`` papermill run) into the chapter, so that nbval compares them; every other cell stays without
    outputs. Cells are matched by their source. Returns the number of cells stored."""
    nb = json.loads(Path(nb_path).read_text())
    done = {"".join(c["source"]): c for c in json.loads(Path(executed_path).read_text())["cells"]
            if c["cell_type"] == "code"}
    n = 0
    for c in nb["cells"]:
        if c["cell_type"] == "code" and NBVAL_TAG in c.get("metadata", {}).get("tags", []):
            src = "".join(c["source"])
            if src not in done:
                raise ValueError(f"{nb_path}: a checked cell is not in the executed copy: {src[:60]!r}")
            # nbval needs an execution count on a cell with reference outputs ("unrun" otherwise)
            c["outputs"] = [{k: v for k, v in o.items() if k != "transient"} for o in done[src].get("outputs", [])]
            c["execution_count"] = done[src].get("execution_count") or 1
            n += 1
    _write(nb_path, nb)
    return n


def sync(root: Path = ROOT) -> list[Path]:
    """Rewrite the Colab cell of every chapter that is out of date; returns the notebooks changed."""
    changed = []
    want = colab_cell_source(root)
    for nb_path in chapters(root):
        nb = json.loads(nb_path.read_text())
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
        if "".join(cell["source"]).startswith(COLAB_MARKER) and "".join(cell["source"]) != want:
            cell["source"] = want.splitlines(keepends=True)
            _write(nb_path, nb)
            changed.append(nb_path)
    return changed


def runtime_box(stem: str) -> str:
    """A new chapter's runtime box: its measured times come from ``book/runtimes.json`` as MyST substitutions
    (:mod:`robustnb.book.runtimes`; "not measured" until ``python -m robustnb.bench --fresh-cache`` has run it)."""
    rows = "\n".join(f"| `{p}` | ... | {{{{ rt_{p}_{stem} }}}} | {{{{ mem_{p}_{stem} }}}} |" for p in ("smoke", "cpu"))
    return ("```{admonition} Compute and runtime\n:class: tip dropdown\n"
            "**Needs:** ... **Data:** ...\n\n"
            "| preset | what runs | wall time | peak memory |\n|---|---|---|---|\n"
            f"{rows}\n| `full` | ... | not run. **Estimate:** ... |  |\n\n"
            "Measured with `python -m robustnb.bench --preset P --fresh-cache` (the times come from "
            "`book/runtimes.json`).\n```")


def scaffold(path: Path, title: str, execute: bool = True) -> Path:
    """Write a new chapter notebook with the standard cells (refuses to overwrite): its title and question, the
    runtime box, the Colab, parameters and set-up cells, a summary and exercises. With ``execute``, a ``smoke``
    papermill run stores the set-up cell's output for nbval (:func:`store_checked_outputs`), so the new chapter
    passes the chapter tests once it is listed in ``_toc.yml``."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; not overwriting it")
    nb = nbformat.v4.new_notebook()
    nb.metadata.update({"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                        "language_info": {"name": "python"}})
    params = nbformat.v4.new_code_cell(PARAMETERS_SOURCE)
    params.metadata["tags"] = ["parameters"]
    setup = nbformat.v4.new_code_cell(SETUP_SOURCE)
    setup.metadata["tags"] = [NBVAL_TAG]
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {title}\n\nThe question, and the phenomenon in one picture or number.\n\n"
                                      + runtime_box(path.stem)),
        nbformat.v4.new_code_cell(colab_cell_source()),
        params,
        setup,
        nbformat.v4.new_markdown_cell("## Summary\n\nWhat held, what did not, and why."),
        nbformat.v4.new_markdown_cell("## Exercises\n\n1. ...\n2. ..."),
    ]
    nbformat.write(nb, str(path))
    if execute:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / path.name
            subprocess.run([sys.executable, "-m", "papermill", str(path), str(out), "-p", "preset", "smoke",
                            "-k", "python3", "--cwd", str(path.parent)], check=True, capture_output=True, text=True)
            store_checked_outputs(path, out)
    return path
