"""The cells every chapter shares, and the commands that keep them in step: the Colab set-up cell (from
``_config.yml``'s repository and cache archive, and the package version), the notebook metadata asking Colab for a
GPU runtime, the parameters cell, the set-up cell, the runtime box; the outputs nbval compares (a new chapter's
files: :mod:`robustnb.book.scaffold`). ``python -m robustnb.book sync`` rewrites the Colab cell and metadata of
every chapter.

:func:`store_checked_outputs` checks its arguments before it writes anything: it refuses an executed copy with
error outputs (a failed run's traceback must not become nbval's reference), one whose checked cells did not run, and
a chapter that is not a notebook, and writes the chapter atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from robustnb.book import runtimes
from robustnb.book.toc import ROOT, cache_archive_url, chapters, no_deps_requirements, package_version, repository
from robustnb.config import ConfigError

COLAB_MARKER = "# Colab set-up"
NBVAL_TAG = "nbval-check-output"  # a cell tag: invisible in the pages, read by nbval
PARAMETERS_SOURCE = (
    "# Parameters (papermill injects new values after this cell). preset=None means $ROBUSTNB_PRESET, else 'cpu'.\n"
    "preset = None  # 'smoke' | 'cpu' | 'full'\n"
    "seed = 0\n"
    "device = \"auto\"  # 'auto' picks the GPU when there is one (Colab), else the CPU"
)
SETUP_SOURCE = "import robustnb\n\nrun = robustnb.setup(preset, seed=seed, device=device)"


#: where the Colab cell keeps ``ROBUSTNB_CACHE`` when Google Drive is mounted (it then outlives the session)
DRIVE_CACHE = "/content/drive/MyDrive/robustnb/cache"
#: what every chapter's notebook metadata asks of Colab: a GPU runtime (a T4, the free one)
COLAB_METADATA = {"accelerator": "GPU", "colab": {"gpuType": "T4", "provenance": []}}


def colab_cell_source(root: Path = ROOT) -> str:
    """Every chapter's first code cell: in Google Colab (nothing elsewhere) it keeps the cache on Google Drive when
    Drive is mounted, installs robustnb at the git tag ``v<version>`` of the repository (``pyproject.toml``, the
    version the page was built from), or from the configured branch with a warning when that fails (no such tag),
    then the ``# no-deps`` requirements, and, when the reader sets ``FETCH_TRAINED = True``, imports the ``cpu``
    archive of trained models and results from ``_config.yml``'s ``robustnb: cache_archive``."""
    url, branch = repository(root)
    tag = f"v{package_version(root)}"
    extra = ", ".join(f'\"{r}\"' for r in no_deps_requirements(root))
    return (
        f"{COLAB_MARKER}: in Google Colab, install robustnb {tag}, the version of this page (does nothing elsewhere).\n"
        "FETCH_TRAINED = False  # True: load the book's trained models and results (the cpu archive) instead of training\n"
        "import os, subprocess, sys\n"
        "if \"google.colab\" in sys.modules:\n"
        "    if os.path.isdir(\"/content/drive/MyDrive\"):  # Google Drive mounted: the cache outlives the session\n"
        f"        os.environ.setdefault(\"ROBUSTNB_CACHE\", \"{DRIVE_CACHE}\")\n"
        "    pip = [sys.executable, \"-m\", \"pip\", \"install\", \"-q\"]\n"
        f"    if subprocess.run(pip + [\"robustnb @ git+{url}@{tag}\"]).returncode:\n"
        f"        print(\"warning: could not install robustnb {tag} (no such tag?): installing the {branch} branch\")\n"
        f"        subprocess.run(pip + [\"robustnb @ git+{url}@{branch}\"], check=True)\n"
        "    # without their declared pins, which would downgrade Colab's numpy and requests (both run on numpy 2)\n"
        f"    subprocess.run(pip + [\"--no-deps\", {extra}], check=True)\n"
        "    if FETCH_TRAINED:  # checked, and never overwrites what you have (python -m robustnb cache import)\n"
        f"        archive = \"{cache_archive_url(root)}\"\n"
        "        subprocess.run([sys.executable, \"-m\", \"robustnb\", \"cache\", \"import\", archive], check=True)"
    )


def with_colab_metadata(metadata: dict) -> dict:
    """A notebook's metadata with :data:`COLAB_METADATA` added (the reader's other ``colab`` keys are kept)."""
    out = {**metadata, "accelerator": COLAB_METADATA["accelerator"]}
    out["colab"] = {**COLAB_METADATA["colab"], **out.get("colab", {}), "gpuType": COLAB_METADATA["colab"]["gpuType"]}
    return out


def _write(nb_path: Path, nb: dict) -> None:
    """Replace ``nb_path`` with ``nb`` atomically (a temporary file beside it, then a rename)."""
    nb_path = Path(nb_path)
    fd, tmp = tempfile.mkstemp(prefix=f".{nb_path.name}.", suffix=".tmp", dir=nb_path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        os.replace(tmp, nb_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_notebook(path: Path, what: str) -> dict:
    path = Path(path)
    if path.suffix != ".ipynb":
        raise ConfigError(f"{what} must be a notebook (.ipynb), got {path}.")
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist" + (" (it is a folder)." if path.is_dir() else "."))
    try:
        nb = json.loads(path.read_text())
        assert isinstance(nb, dict) and isinstance(nb.get("cells"), list)
    except (ValueError, AssertionError):
        raise ConfigError(f"{what} {path} is not a notebook (no JSON with cells).") from None
    return nb


def failed_cells(nb: dict) -> list[str]:
    """The code cells of an executed notebook that raised (an ``error`` output), as their first lines with the
    error's name; papermill's own marker of a failed run counts too."""
    out = []
    for c in nb["cells"]:
        for o in c.get("outputs", []) if c.get("cell_type") == "code" else ():
            if o.get("output_type") == "error":
                src = "".join(c.get("source", "")).strip().splitlines() or [""]
                out.append(f"{src[0][:60]!r}: {o.get('ename', 'error')}: {str(o.get('evalue', ''))[:120]}")
    if not out and nb.get("metadata", {}).get("papermill", {}).get("exception"):
        out.append("papermill marked the run as failed (metadata.papermill.exception)")
    return out


def store_checked_outputs(nb_path: Path, executed_path: Path) -> int:
    """Copy the outputs of the cells tagged ``nbval-check-output`` from an executed copy of a chapter (a
    ``smoke`` papermill run) into the chapter, so that nbval compares them; every other cell stays without
    outputs. Cells are matched by their source. Returns the number of cells stored.

    Refused with :class:`~robustnb.config.ConfigError` before the chapter is touched: an executed copy with an
    error output (a failed run), a checked cell missing from it or never run there, paths that are not
    notebooks, and the chapter given as its own executed copy."""
    nb_path, executed_path = Path(nb_path), Path(executed_path)
    nb = _read_notebook(nb_path, "the chapter")
    executed = _read_notebook(executed_path, "the executed copy")
    if nb_path.resolve() == executed_path.resolve():
        raise ConfigError(f"the chapter and its executed copy are the same file ({nb_path}): execute it first "
                          f"(papermill {nb_path} executed.ipynb -p preset smoke).")
    failed = failed_cells(executed)
    if failed:
        raise ConfigError(f"{executed_path} is a failed run ({len(failed)} cell(s) raised): {'; '.join(failed)}. "
                          "Its outputs are not stored as nbval's reference; fix the chapter and execute it again.")
    done = {"".join(c["source"]): c for c in executed["cells"] if c["cell_type"] == "code"}
    n = 0
    for c in nb["cells"]:
        if c["cell_type"] == "code" and NBVAL_TAG in c.get("metadata", {}).get("tags", []):
            src = "".join(c["source"])
            if src not in done:
                raise ConfigError(f"{nb_path}: a checked cell is not in the executed copy: {src[:60]!r}")
            if done[src].get("execution_count") is None and not done[src].get("outputs"):
                raise ConfigError(f"{executed_path}: the checked cell {src[:60]!r} was not run there (an unfinished "
                                  "run?); execute the chapter to the end first.")
            # nbval needs an execution count on a cell with reference outputs ("unrun" otherwise)
            c["outputs"] = [{k: v for k, v in o.items() if k != "transient"} for o in done[src].get("outputs", [])]
            c["execution_count"] = done[src].get("execution_count") or 1
            n += 1
    _write(nb_path, nb)
    return n


#: a cell tag: the HTML folds the cell's input behind a toggle (the set-up cells, so a chapter's first screen is its
#: question, not logistics); Jupyter and Colab show it as usual
FOLD_TAG = "hide-input"


def is_setup_cell(cell: dict) -> bool:
    """The Colab, parameters and set-up cells every chapter shares (:data:`COLAB_MARKER`, the ``parameters`` tag,
    :data:`SETUP_SOURCE`)."""
    src = "".join(cell.get("source", ""))
    return cell.get("cell_type") == "code" and (src.startswith(COLAB_MARKER) or src == SETUP_SOURCE
                                                or "parameters" in cell.get("metadata", {}).get("tags", []))


def folded(cell: dict) -> dict:
    """``cell`` with :data:`FOLD_TAG` among its tags (once)."""
    tags = cell.setdefault("metadata", {}).setdefault("tags", [])
    if FOLD_TAG not in tags:
        tags.append(FOLD_TAG)
    return cell


def sync(root: Path = ROOT) -> list[Path]:
    """Bring every chapter's Colab cell (:func:`colab_cell_source`), its set-up cells' folding (:data:`FOLD_TAG`),
    its notebook metadata (:data:`COLAB_METADATA`: a GPU runtime) and the measured runtimes in its runtime box and
    in the introduction (:func:`robustnb.book.runtimes.fill`, from ``book/runtimes.json``) up to date; returns the
    files changed (the others are not rewritten)."""
    changed = []
    want = colab_cell_source(root)
    known = runtimes.values(root / "book" / "runtimes.json", [p.stem for p in chapters(root)])
    for nb_path in chapters(root):
        nb = json.loads(nb_path.read_text())
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
        before = json.dumps(nb, sort_keys=True)
        if "".join(cell["source"]).startswith(COLAB_MARKER):
            cell["source"] = want.splitlines(keepends=True)
        for c in nb["cells"]:
            if is_setup_cell(c):
                folded(c)
            elif c["cell_type"] == "markdown":
                text = "".join(c["source"])
                if runtimes.SPAN.search(text):
                    c["source"] = runtimes.fill(text, known).splitlines(keepends=True)
        nb["metadata"] = with_colab_metadata(nb.get("metadata", {}))
        if json.dumps(nb, sort_keys=True) != before:
            _write(nb_path, nb)
            changed.append(nb_path)
    intro = root / "book" / "intro.md"
    if intro.exists():
        text = intro.read_text()
        filled = runtimes.fill(text, known)
        if filled != text:
            intro.write_text(filled)
            changed.append(intro)
    return changed


def runtime_box(stem: str) -> str:
    """A new chapter's runtime box: a folded ``<details>`` block whose measured times are marked spans that
    ``python -m robustnb.book sync`` fills from ``book/runtimes.json`` (:mod:`robustnb.book.runtimes`; "not
    measured" until ``python -m robustnb.bench --fresh-cache`` has run it)."""
    def cell(kind, preset):
        return runtimes.span(f"{kind}_{preset}_{stem}", runtimes.NOT_MEASURED)

    rows = "\n".join(f"| `{p}` | ... | {cell('rt', p)} | {cell('mem', p)} |" for p in ("smoke", "cpu"))
    return (f"{BOX_OPEN}\n\n**Needs:** ... **Data:** ...\n\n"
            "| preset | what runs | wall time | peak memory |\n|---|---|---|---|\n"
            f"{rows}\n| `cpu`, GPU | the `cpu` row's experiments with `--device cuda` | {cell('rt', 'gpu')} | "
            f"not measured |\n| `full` | ... | not run. **Estimate:** ... |  |\n\n"
            f"{BOX_NOTE.format(stem=stem)}\n\n{BOX_CLOSE}")


#: the runtime box opens and closes every chapter's first cell's box (plain HTML: folded in Jupyter, Colab and the book)
BOX_OPEN = '<details class="runtime-box"><summary>Compute and runtime</summary>'
BOX_CLOSE = "</details>"
#: how the box's times were taken, from ``book/runtimes.json`` (``how`` per preset and chapter)
BOX_NOTE = ("Times and memory from `book/runtimes.json`, on this book's build machine (2 CPU cores, x86-64, torch "
            "2.14.1, no GPU). `smoke`: " + runtimes.span("how_smoke_{stem}") + ". `cpu`: "
            + runtimes.span("how_cpu_{stem}") + ".")
