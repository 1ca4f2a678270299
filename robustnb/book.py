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
import posixpath
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import nbformat
import yaml
from IPython.display import Markdown, Pretty

from robustnb import ledger, widgets
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


def _toc_entries(entries) -> list[str]:
    """The files of a ``_toc.yml`` list of entries and of their sections and chapters, in reading order."""
    out = []
    for e in entries or []:
        if "file" in e:
            out.append(e["file"])
        out += _toc_entries(e.get("sections")) + _toc_entries(e.get("chapters"))
    return out


def toc_files(root: Path = ROOT) -> list[str]:
    """Every file named in ``_toc.yml`` (without suffix), root first, in reading order."""
    toc = _load_yaml("_toc.yml", root)
    return [toc["root"], *_toc_entries(toc.get("parts")), *_toc_entries(toc.get("chapters"))]


def toc_parts(root: Path = ROOT) -> list[tuple[str, list[str]]]:
    """The parts of ``_toc.yml`` in order: (caption, the files of its chapters and their sections). In this
    book a part is one paper."""
    return [(part.get("caption", ""), _toc_entries(part.get("chapters")))
            for part in _load_yaml("_toc.yml", root).get("parts") or []]


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
    # the whole table, for the ledger's summary and forest plots (robustnb.ledger), as JSON text: a notebook's
    # glued outputs may only hold text
    rows = ledger.ledger_rows(claims, declared_claims(claims["chapter"]))
    glue(ledger.GLUE_KEY, Pretty(json.dumps(rows, allow_nan=False)))
    return claims[["claim", "paper", "source", "measure", "ours", "verdict", "holm"]].reset_index(drop=True)


NOT_MEASURED = "not measured at this preset"


def declared_claims(chapter_names) -> dict:
    """The ``PAPER_CLAIMS`` of the chapters named (claim id -> PaperClaim)."""
    out = {}
    for chapter in dict.fromkeys(chapter_names):
        out.update(getattr(importlib.import_module(f"robustnb.chapters.{chapter}"), "PAPER_CLAIMS", {}))
    return out


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
             "introduction); chapters say where they use a stand-in for the paper's data.", "",
             "## At a glance", "",
             "How many of each paper's claims this build reproduced, reproduced in direction only, did not reproduce,",
             "or could not decide (counted from the chapters' tables below). Each chapter's section opens with a",
             "forest plot of its claims: ours with its 95% interval (a circle coloured by the verdict), the paper's",
             "figure or bound where it gives one (an open diamond), on the claim's own units; hover for the claim.", "",
             "```{claims-summary}", "```", ""]
    for nb in chapters(root):
        mod = importlib.import_module(f"robustnb.chapters.{nb.stem}")
        claims = getattr(mod, "PAPER_CLAIMS", {})
        if not claims:
            continue
        title = next(iter(json.loads(nb.read_text())["cells"]))["source"]
        title = "".join(title).splitlines()[0].lstrip("# ").strip()
        rel = nb.name
        lines += [f"## [{title}]({rel})", "", f"```{{claims-forest}} {rel}", "```", "",
                  "| claim | paper | ours (95% interval) | verdict | Holm |",
                  "|---|---|---|---|---|"]
        for cid, pc in claims.items():
            mark = " *(book)*" if pc.addition else ""
            lines.append(f"| {pc.claim}{mark} | {pc.paper} ({pc.source}) | {{glue:text}}`{rel}::{cid}:s` | "
                         f"{{glue:text}}`{rel}::{cid}_verdict:s` | {{glue:text}}`{rel}::{cid}_holm:s` |")
        lines.append("")
    return "\n".join(lines)


def summary_report(build_dir: Path, root: Path = ROOT) -> str:
    """The claims summary of a built book (``build_dir``: the folder holding ``html`` and ``jupyter_execute``)
    as text for the terminal: ``make book`` ends with it."""
    glued = glued_ledgers(Path(build_dir) / "jupyter_execute", root)
    if not glued:
        return f"No claims found in {build_dir}/jupyter_execute: build the book first (make book)."
    table = papers_summary(glued, root)
    return f"Claims ledger ({len(glued)} chapters; details in {build_dir}/html/book/claims.html):\n" + \
        ledger.summary_text(table)


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


# ----------------------------------------------------------------------- Sphinx: the order chapters execute in
def _read_in_book_order(app, env, docnames: list[str]) -> None:
    """Sphinx reads (and myst-nb executes) new and changed documents in sorted file-name order; reorder them, in
    place, into ``_toc.yml``'s reading order, so a cold build trains the split models in the split-computing
    chapter as the book and the progress line's expected times assume. Documents outside the toc keep their
    order, after it."""
    order = {name: i for i, name in enumerate(toc_files(Path(app.srcdir)))}
    docnames.sort(key=lambda d: order.get(d, len(order)))


# ------------------------------------------------------------------ Sphinx: a book that renders without network
#: The JavaScript that the saved widget state (the explorers) needs, from the npm registry: served file ->
#: (package, version, file inside the package). myst-nb's default loads both from CDNs.
WIDGET_JS = {
    "require.js": ("requirejs", "2.3.8", "require.js"),
    "embed-amd.js": ("@jupyter-widgets/html-manager", "1.0.15", "dist/embed-amd.js"),
}
#: where they are served: a folder of the *built* book's _static (Jupyter Book puts every .js of the source's
#: _static folder on every page)
WEB_DIR = "robustnb-web"
#: loaded between require.js and the widget manager (the pages with explorers only)
WIDGET_SETUP = "widgets-setup.js"
WIDGET_SETUP_JS = """// robustnb.book: the widget manager served from the book itself (no CDN).
(function () {
  // Its modules resolve to this folder, and so do the fonts its styles load from beside its script.
  var here = document.currentScript.src.replace(/\\/[^\\/]*$/, "");
  require.config({paths: {"@jupyter-widgets/html-manager/dist": here}});
  // It typesets labels with MathJax 2's MathJax.Hub.Queue; the book loads MathJax 3 (typesetPromise).
  document.addEventListener("DOMContentLoaded", function () {
    var mj = window.MathJax;
    if (mj && !mj.Hub) {
      mj.Hub = {Queue: function (job) {
        var ready = mj.startup && mj.startup.promise ? mj.startup.promise : Promise.resolve();
        ready.then(function () { return mj.typesetPromise ? mj.typesetPromise([job[2]]) : null; });
      }};
    }
  });
})();
"""


def npm_package(package: str, version: str, dest: Path) -> Path:
    """``package@version`` from the npm registry, unpacked once into ``dest`` (``npm pack`` checks the registry's
    integrity hash); returns the package folder. Raises :class:`FileNotFoundError` without ``npm``."""
    folder = Path(dest) / f"{package.replace('/', '+')}-{version}"
    if (folder / "package.json").exists():
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError(f"npm (Node.js) is needed to fetch {package}@{version} from the npm registry")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        subprocess.run([npm, "pack", f"{package}@{version}", "--pack-destination", tmp, "--silent"],
                       check=True, capture_output=True, text=True)
        with tarfile.open(next(Path(tmp).glob("*.tgz"))) as tar:
            tar.extractall(tmp, filter="data")
        os.replace(Path(tmp) / "package", folder)
    return folder


def widget_js(dest: Path) -> dict[str, Path]:
    """Fetch :data:`WIDGET_JS` (see :func:`npm_package`); returns served name -> file on disk, plus the fonts the
    widget manager's styles load from beside its script."""
    files = {}
    for name, (package, version, inside) in WIDGET_JS.items():
        folder = npm_package(package, version, dest)
        files[name] = folder / inside
        for font in (folder / inside).parent.glob("*.woff*"):
            files[font.name] = font
    return files


def _serve_widget_js(app, config) -> None:
    """config-inited: fetch :data:`WIDGET_JS` (into ``ROBUSTNB_CACHE/web``) and point myst-nb's
    ``nb_ipywidgets_js`` at their copies in the built book (written by :func:`_copy_widget_js`). Without npm the
    pages keep myst-nb's CDN copies (explorers then need the network), and the build says so."""
    from sphinx.util import logging
    from sphinx.util.console import colorize

    from robustnb.config import cache_dir

    try:
        app.robustnb_widget_js = widget_js(cache_dir() / "web")
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        logging.getLogger(__name__).info(colorize("red", (
            f"robustnb.book: widget scripts stay on their CDN, pages with explorers need the network ({exc}). "
            "Install Node.js (npm) for a book that renders offline.")))
        return
    names = ["require.js", WIDGET_SETUP, "embed-amd.js"]
    config.nb_ipywidgets_js = {f"{WEB_DIR}/{name}": {} for name in names}


def _copy_widget_js(app, exception) -> None:
    """build-finished: copy the fetched widget scripts into the built book's ``_static/`` :data:`WEB_DIR`."""
    files = getattr(app, "robustnb_widget_js", None)
    if exception is not None or not files or app.builder.format != "html":
        return
    out = Path(app.outdir) / "_static" / WEB_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        shutil.copyfile(src, out / name)
    (out / WIDGET_SETUP).write_text(WIDGET_SETUP_JS)


PLOTLY_MATHJAX = widgets.PLOTLY_MATHJAX


def _drop_plotly_mathjax(app, doctree, docname) -> None:
    """doctree-resolved: remove :data:`PLOTLY_MATHJAX` from the raw HTML outputs of a page, so that a figure asks
    no CDN for a MathJax the page already has (our figures use no TeX)."""
    from docutils import nodes

    for node in doctree.findall(nodes.raw):
        text = node.astext()
        if "cdnjs.cloudflare.com/ajax/libs/mathjax" in text:
            node[:] = [nodes.Text(widgets.without_cdn_mathjax(text))]


def _dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    """html-page-context: drop repeated inline scripts. sphinx-thebe adds its configuration
    (``const THEBE_JS_URL = ...``) once per reading pass, and a second ``const`` is an uncaught error on every
    page."""
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, kept = set(), []
    for js in scripts:  # same file (None and "" alike: inline), priority and attributes (the body among them)
        attributes = getattr(js, "attributes", {})
        key = (getattr(js, "filename", js) or "", getattr(js, "priority", 0), tuple(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    scripts[:] = kept  # in place: the builder's list, which later handlers (myst-nb's widget scripts) extend


# ------------------------------------------------------------ Sphinx: the ledger's summary and forest plots
PLACEHOLDER = "robustnb-claims-placeholder"


def _placeholder_directive(kind: str):
    """The ``claims-summary`` and ``claims-forest CHAPTER.ipynb`` directives: a placeholder (an empty container)
    that :func:`_fill_ledger` fills once every chapter has run."""
    from docutils import nodes
    from docutils.parsers.rst import Directive

    class PlaceholderDirective(Directive):
        required_arguments = 1 if kind == "forest" else 0
        has_content = False

        def run(self):
            env = self.state.document.settings.env
            node = nodes.container(classes=[PLACEHOLDER])
            node["robustnb_kind"] = kind
            if kind == "forest":  # the chapter, relative to this page: split_computing.ipynb
                target = posixpath.normpath(posixpath.join(posixpath.dirname(env.docname), self.arguments[0]))
                node["robustnb_chapter"] = posixpath.splitext(target)[0]
            env.robustnb_ledger_docs = getattr(env, "robustnb_ledger_docs", set()) | {env.docname}
            return [node]

    return PlaceholderDirective


def glued_ledgers(folder: Path, root: Path = ROOT) -> dict:
    """Every chapter's glued ledger rows in a build (docname -> frame), from myst-nb's glue stores in ``folder``
    (its output folder: ``_build/jupyter_execute``)."""
    out = {}
    for docname in toc_files(root):
        rows = ledger.read_glued(Path(folder) / f"{docname}.glue.json")
        if rows is not None:
            out[docname] = rows
    return out


def papers_summary(glued: dict, root: Path = ROOT):
    """:func:`robustnb.ledger.summary` over the toc's parts that hold claims (one per paper)."""
    papers = {}
    for caption, files in toc_parts(root):
        frames = [glued[f] for f in files if f in glued]
        if frames:
            papers[caption] = frames
    return ledger.summary(papers)


def _summary_table(table):
    """A docutils table of :func:`papers_summary`, the verdict columns' headers and non-zero cells coloured."""
    from docutils import nodes

    cols = list(table.columns)
    verdict_of = {short: v for v, short in ledger.SHORT.items()}
    tnode = nodes.table(classes=["robustnb-summary"])
    group = nodes.tgroup(cols=len(cols))
    tnode += group
    group += [nodes.colspec(colwidth=3 if c == "paper" else 1) for c in cols]

    def row(values, header=False):
        r = nodes.row()
        for c, v in zip(cols, values):
            entry = nodes.entry()
            if c in verdict_of and (header or v):
                entry["classes"] += ledger.css_class(verdict_of[c]).split()
            entry += nodes.paragraph(text=str(v))
            r += entry
        return r

    head = nodes.thead()
    head += row(cols, header=True)
    body = nodes.tbody()
    for values in table.itertuples(index=False):
        body += row(values)
    group += [head, body]
    return tnode


def _fill_ledger(app, doctree, docname) -> None:
    """doctree-resolved: replace the ledger's placeholders (the summary, the forest plots) with what the chapters
    glued in this build, and colour every verdict cell (the ledger's tables, and the chapters' table outputs)."""
    from docutils import nodes

    placeholders = [n for n in doctree.findall(nodes.container) if PLACEHOLDER in n["classes"]]
    if placeholders:
        glued = glued_ledgers(Path(app.env.mystnb_config.output_folder), Path(app.srcdir))
        for node in placeholders:
            if node["robustnb_kind"] == "summary":
                node.replace_self(_summary_table(papers_summary(glued, Path(app.srcdir))))
                continue
            chapter = node["robustnb_chapter"]
            rows = glued.get(chapter)
            if rows is None:
                from sphinx.util import logging
                logging.getLogger(__name__).warning(f"{chapter} glued no claims table", location=node)
                node.replace_self([])
                continue
            html = ledger.forest_figure(rows).to_html(
                include_plotlyjs=False, include_mathjax=False, full_html=False,
                div_id=f"claims-forest-{posixpath.basename(chapter)}", config={"displaylogo": False})
            node.replace_self(nodes.raw("", html, format="html", classes=["robustnb-forest"]))
    verdicts = set(ledger.VERDICT_COLOURS)
    for entry in doctree.findall(nodes.entry):
        if entry.astext().strip() in verdicts:
            entry["classes"] += ledger.css_class(entry.astext().strip()).split()
    cell = re.compile(r"<td>(" + "|".join(map(re.escape, sorted(verdicts, key=len, reverse=True))) + r")</td>")
    for node in doctree.findall(nodes.raw):
        text = node.astext()
        if "<td>" in text and cell.search(text):
            node[:] = [nodes.Text(cell.sub(lambda m: f'<td class="{ledger.css_class(m.group(1))}">{m.group(1)}</td>',
                                           text))]


PLOTLY_JS = "plotly.min.js"
LEDGER_CSS = "robustnb-ledger.css"


def _ledger_page_assets(app, pagename, templatename, context, doctree) -> None:
    """html-page-context: the verdict colours on every page; plotly.js (the plotly package's own copy, served
    from the book) on a page with forest plots, which has no notebook output to bring it."""
    from docutils import nodes

    app.add_css_file(f"{WEB_DIR}/{LEDGER_CSS}")
    if doctree is not None and any("robustnb-forest" in n["classes"] for n in doctree.findall(nodes.raw)):
        app.add_js_file(f"{WEB_DIR}/{PLOTLY_JS}")


def _copy_ledger_assets(app, exception) -> None:
    """build-finished: write plotly.js and the verdict stylesheet into the built book's ``_static/`` WEB_DIR."""
    if exception is not None or app.builder.format != "html":
        return
    from plotly.offline import get_plotlyjs

    out = Path(app.outdir) / "_static" / WEB_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / PLOTLY_JS).write_text(get_plotlyjs())
    (out / LEDGER_CSS).write_text(ledger.stylesheet())


def _ledger_docs_outdated(app, env, added, changed, removed) -> list[str]:
    """env-get-outdated: the pages with a summary or forest plots read every chapter's results, so they are
    rebuilt whenever anything else is."""
    docs = getattr(env, "robustnb_ledger_docs", set())
    return sorted(d for d in docs if d in env.found_docs) if (added or changed or removed) else []


def _ledger_docs_purge(app, env, docname) -> None:
    getattr(env, "robustnb_ledger_docs", set()).discard(docname)


def _ledger_docs_merge(app, env, docnames, other) -> None:
    env.robustnb_ledger_docs = getattr(env, "robustnb_ledger_docs", set()) | (
        getattr(other, "robustnb_ledger_docs", set()) & set(docnames))


def setup(app):
    """Sphinx extension (``_config.yml``: ``sphinx: extra_extensions: [robustnb.book]``): in ``cache``
    execution mode, key the jupyter-cache by preset and package source (:func:`execution_cache_path`), so a
    rebuild after a prose edit executes nothing and one after a code edit never shows stale results; execute the
    chapters in book order; serve the widgets' scripts from the book, and keep plotly figures off MathJax's CDN."""
    app.connect("config-inited", _set_execution_cache)
    app.connect("env-before-read-docs", _read_in_book_order)
    app.connect("config-inited", _serve_widget_js)
    app.connect("build-finished", _copy_widget_js)
    app.connect("doctree-resolved", _drop_plotly_mathjax)
    app.connect("html-page-context", _dedupe_scripts)
    app.add_directive("claims-summary", _placeholder_directive("summary"))
    app.add_directive("claims-forest", _placeholder_directive("forest"))
    app.connect("doctree-resolved", _fill_ledger)
    app.connect("html-page-context", _ledger_page_assets)
    app.connect("build-finished", _copy_ledger_assets)
    app.connect("env-get-outdated", _ledger_docs_outdated)
    app.connect("env-purge-doc", _ledger_docs_purge)
    app.connect("env-merge-info", _ledger_docs_merge)
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
    elif cmd == "summary":  # python -m robustnb.book summary [BUILD_DIR]: after `make book`
        print(summary_report(Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "_build"))
    elif cmd == "list":
        for p in chapters():
            print(p.relative_to(ROOT))
    else:
        sys.exit(f"usage: python -m robustnb.book [list | sync | ledger | summary [BUILD] | watch | new PATH TITLE], "
                 f"got {cmd!r}")
