"""The book itself: which chapters ``_toc.yml`` lists, and the Colab set-up cell every chapter opens with.

``python -m robustnb.book sync`` rewrites the first code cell of every chapter from ``_config.yml``'s
``repository`` entry (the one place that names the repository); ``python -m robustnb.book list`` prints
the chapters; ``python -m robustnb.book new book/x.ipynb "Title"`` starts a chapter with the standard cells.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import sys
import textwrap
import threading
import time
from pathlib import Path

import nbformat
import yaml
from IPython.display import Markdown

from robustnb.cache import sources_digest
from robustnb.config import resolve_preset
from robustnb.progress import log_path

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


def no_deps_requirements(root: Path = ROOT) -> list[str]:
    """The requirements marked ``# no-deps`` in requirements.txt: installed without their declared pins, which
    would downgrade a Colab runtime (compressai's numpy<2, torchattacks' old requests)."""
    lines = (root / "requirements.txt").read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#", 1)[-1].strip() == "no-deps" and "#" in ln]


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


def show_source(*objs):
    """Display the package's own source of functions or classes as highlighted code in the page, so the book
    shows the algorithm it teaches and cannot drift from it. Returns an IPython ``Markdown`` object."""
    blocks = []
    for obj in objs:
        target = inspect.unwrap(obj)
        where = f"{target.__module__}.{target.__qualname__}"
        code = textwrap.dedent(inspect.getsource(target)).rstrip()
        blocks.append(f"`{where}`\n\n```python\n{code}\n```")
    return Markdown("\n\n".join(blocks))


def glue(name: str, value) -> None:
    """MyST-NB's ``glue`` without displaying the value: the prose inserts it with ``{glue:text}`name```.
    Outside a book build without myst-nb (Colab), nothing happens: the prose then shows the role."""
    try:
        from myst_nb import glue as _glue
    except ImportError:  # pragma: no cover - only where myst-nb is not installed
        return
    _glue(name, value, display=False)


def record(claims=None, **numbers):
    """Glue a chapter's measured results for its prose: every claim row of ``claims`` (a frame with
    :data:`robustnb.stats.CLAIM_COLUMNS`) as ``<claim_id>`` (ours, with its interval) and
    ``<claim_id>_verdict``, and every keyword as ``<name>`` (already formatted strings, or numbers).
    Returns a display frame of the claims (claim, paper, source, ours, verdict) for the page."""
    for name, value in numbers.items():
        glue(name, value)
    if claims is None:
        return None
    claims = with_undeclared_filled(claims)
    for row in claims.itertuples():
        glue(row.claim_id, row.ours)
        glue(f"{row.claim_id}_verdict", row.verdict)
        glue(f"{row.claim_id}_holm", row.holm or "not tested")
    return claims[["claim", "paper", "source", "measure", "ours", "verdict", "holm"]].reset_index(drop=True)


NOT_MEASURED = "not measured at this preset"


def with_undeclared_filled(claims):
    """Add a row for every claim the chapter declares (``PAPER_CLAIMS`` of each chapter named in the frame)
    that this run did not measure (a grid too small at ``smoke``, say): ours = "not measured at this preset",
    verdict "inconclusive at this size". The ledger and the prose then always find every claim."""
    import pandas as pd

    rows = []
    for chapter in dict.fromkeys(claims["chapter"]) if len(claims) else []:
        declared = getattr(importlib.import_module(f"robustnb.chapters.{chapter}"), "PAPER_CLAIMS", {})
        for cid, pc in declared.items():
            if cid not in set(claims["claim_id"]):
                rows.append({"chapter": chapter, "claim_id": cid, "claim": pc.claim, "paper": pc.paper,
                             "source": pc.source, "measure": pc.measure, "ours": NOT_MEASURED,
                             "value": float("nan"), "low": float("nan"), "high": float("nan"),
                             "verdict": "inconclusive at this size", "n": 0, "unit": pc.unit,
                             "form": pc.form, "p": float("nan"), "holm": ""})
    return pd.concat([claims, pd.DataFrame(rows)], ignore_index=True) if rows else claims


LEDGER = "book/claims.md"


def ledger_markdown(root: Path = ROOT) -> str:
    """The claims ledger page: every claim of every chapter (its ``PAPER_CLAIMS``), the paper's figure, ours
    with its interval and the verdict, both pasted from the chapter's own executed results (cross-page glue),
    so the ledger cannot disagree with the chapters. ``python -m robustnb.book ledger`` rewrites the page."""
    lines = ["# Claims ledger", "",
             "Every claim of the three papers that this book tests, with the paper's figure, ours with its 95%",
             "interval, and the verdict of the rule for the claim's form in `robustnb.stats.verdict` (an increase",
             "or decrease, of the paper's size or not; a difference between two of our measurements; an upper or",
             "lower bound; no change within a margin). *Holm* reads the chapter's claims together: a claim",
             "\"holds\" when its one-sided test still rejects \"the claim is false\" after Holm's adjustment over",
             "all the chapter's claims (family-wise 2.5%). Claims marked *(book)* are the book's own additions,",
             "not the paper's. The measured columns are pasted",
             "from each chapter's own run in this build (same preset, same seed), so they always agree with the",
             "chapters' tables. Data: the offline CIFAR-10 archive is a JPEG re-encoding at quality 75 (see the",
             "introduction); chapters say where they use a stand-in for the paper's data.", ""]
    for nb in chapters(root):
        mod = importlib.import_module(f"robustnb.chapters.{nb.stem}")
        claims = getattr(mod, "PAPER_CLAIMS", {})
        if not claims:
            continue
        title = next(iter(json.loads(nb.read_text())["cells"]))["source"]
        title = "".join(title).splitlines()[0].lstrip("# ").strip()
        rel = nb.name
        lines += [f"## [{title}]({rel})", "", "| claim | paper | ours (95% interval) | verdict | Holm |",
                  "|---|---|---|---|---|"]
        for cid, pc in claims.items():
            mark = " *(book)*" if pc.addition else ""
            lines.append(f"| {pc.claim}{mark} | {pc.paper} ({pc.source}) | {{glue:text}}`{rel}::{cid}:s` | "
                         f"{{glue:text}}`{rel}::{cid}_verdict:s` | {{glue:text}}`{rel}::{cid}_holm:s` |")
        lines.append("")
    return "\n".join(lines)


def write_ledger(root: Path = ROOT) -> Path:
    path = root / LEDGER
    path.write_text(ledger_markdown(root))
    return path


def _latest(path: Path, since: float) -> str:
    try:
        lines = path.read_text().splitlines()[-20:]
    except OSError:
        return ""
    for line in reversed(lines):
        stamp, _, msg = line.partition(" ")
        try:
            if float(stamp) >= since - 0.5:
                return msg
        except ValueError:
            continue
    return ""


def _expected(root: Path, preset: str) -> dict[str, float]:
    try:
        return json.loads((root / "book" / "runtimes.json").read_text()).get(preset, {})
    except (OSError, ValueError):
        return {}


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


def watch(stream=None, out=None, interval: float = 10.0) -> int:
    """Pass ``stream`` (the build's output) through to ``out`` and add a status line every ``interval``
    seconds while a chapter executes. Returns the number of chapters seen."""
    stream, out = stream or sys.stdin, out or sys.stdout
    names = [p.stem for p in chapters()]
    preset = os.environ.get("ROBUSTNB_PRESET") or "cpu"
    expected = _expected(ROOT, preset)
    state = {"chapter": None, "start": 0.0, "seen": 0}
    pattern = re.compile(r"book/(\w+)\.ipynb: Executing notebook")
    lock = threading.Lock()
    done = threading.Event()

    def status():
        name, start, i = state["chapter"], state["start"], state["seen"]  # i: executed so far, in build order
        exp = expected.get(name)
        hint = f" (expected: about {exp / 60:.1f} min at {preset})" if exp else ""
        latest = _latest(log_path(), start)
        return (f"[{i}/{len(names)}] {name}  {_clock(time.time() - start)} elapsed{hint}"
                + (f"  {latest}" if latest else ""))

    def ticker():
        while not done.wait(interval):
            with lock:
                if state["chapter"]:
                    print(status(), file=out, flush=True)

    t = threading.Thread(target=ticker, daemon=True)
    t.start()
    for line in stream:
        with lock:
            out.write(line)
            out.flush()
            m = pattern.search(line)
            if m:
                state.update(chapter=m.group(1), start=time.time(), seen=state["seen"] + 1)
                print(status(), file=out, flush=True)
    done.set()
    return state["seen"]


NBVAL_TAG = "nbval-check-output"  # a cell tag: invisible in the pages, read by nbval


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
    Path(nb_path).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
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
            nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            changed.append(nb_path)
    return changed


PARAMETERS_SOURCE = (
    "# Parameters (papermill injects new values after this cell). preset=None means $ROBUSTNB_PRESET, else 'cpu'.\n"
    "preset = None  # 'smoke' | 'cpu' | 'full'\n"
    "seed = 0\n"
    "device = \"auto\"  # 'auto' picks the GPU when there is one (Colab), else the CPU"
)
SETUP_SOURCE = "import robustnb\n\nrun = robustnb.setup(preset, seed=seed, device=device)"


def scaffold(path: Path, title: str) -> Path:
    """Write a new chapter notebook with the standard opening cells (refuses to overwrite)."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; not overwriting it")
    nb = nbformat.v4.new_notebook()
    nb.metadata.update({"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                        "language_info": {"name": "python"}})
    params = nbformat.v4.new_code_cell(PARAMETERS_SOURCE)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {title}\n\n"
                                      "```{admonition} Compute and runtime\n:class: tip\n"
                                      "Needs: ... Data: ...\n\n| preset | wall time | peak memory |\n|---|---|---|\n"
                                      "| smoke | ... | ... |\n| cpu | ... | ... |\n| full | ... | ... |\n```"),
        nbformat.v4.new_code_cell(colab_cell_source()),
        params,
        nbformat.v4.new_code_cell(SETUP_SOURCE),
    ]
    nbformat.write(nb, str(path))
    return path


# ------------------------------------------------------------------------ Sphinx: what a rebuild re-executes
def package_fingerprint(root: Path = ROOT) -> str:
    """A hash of every source file of the robustnb package."""
    pkg = root / "robustnb"
    return sources_digest(sorted(pkg.rglob("*.py")), pkg)[:12]


def execution_cache_path(build_dir: Path, preset: str | None = None, root: Path = ROOT) -> Path:
    """The jupyter-cache folder of a build: one per preset and robustnb source. jupyter-cache re-executes a
    notebook when its code cells change; here it also does when the preset or the package changes (the
    notebooks then read every unaffected experiment back from robustnb's own cache, so that is quick)."""
    return Path(build_dir) / ".jupyter_cache" / f"{resolve_preset(preset)}-{package_fingerprint(root)}"


def _set_execution_cache(app, config) -> None:
    if config.nb_execution_mode == "cache" and not config.nb_execution_cache_path:
        config.nb_execution_cache_path = str(execution_cache_path(Path(app.outdir).parent))


def setup(app):
    """Sphinx extension (``_config.yml``: ``sphinx: extra_extensions: [robustnb.book]``): in ``cache``
    execution mode, key the jupyter-cache by preset and package source (:func:`execution_cache_path`), so a
    rebuild after a prose edit executes nothing and one after a code edit never shows stale results."""
    app.connect("config-inited", _set_execution_cache)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "list"
    if cmd == "sync":
        for p in sync():
            print("updated", p.relative_to(ROOT))
    elif cmd == "new" and len(sys.argv) == 4:
        print("created", scaffold(Path(sys.argv[2]), sys.argv[3]))
    elif cmd == "nbval" and len(sys.argv) == 4:  # python -m robustnb.book nbval book/x.ipynb executed.ipynb
        print("stored", store_checked_outputs(Path(sys.argv[2]), Path(sys.argv[3])), "checked cells")
    elif cmd == "watch":
        watch()
    elif cmd == "ledger":
        print("wrote", write_ledger().relative_to(ROOT))
    elif cmd == "list":
        for p in chapters():
            print(p.relative_to(ROOT))
    else:
        sys.exit(f"usage: python -m robustnb.book [list | sync | ledger | watch | new PATH TITLE], got {cmd!r}")
