"""The book's Sphinx extension (``_config.yml``: ``sphinx: extra_extensions: [robustnb.book]``).

In ``cache`` execution mode it keys the jupyter-cache by preset and package code (:func:`execution_cache_path`),
so a rebuild after a prose, docstring or comment edit executes nothing and one after a code edit never shows stale
results; it executes the chapters in book order (with no per-cell timeout at a preset never timed); it styles the runtime boxes
(whose numbers ``python -m robustnb.book sync`` writes from ``book/runtimes.json``); it serves the widgets' scripts from the book and keeps plotly figures off MathJax's CDN; it
fills the ledger's summary and forest plots from what the chapters glued."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from robustnb import ledger, widgets
from robustnb.book import pages, runtimes
from robustnb.book.claims import glued_ledgers, papers_apart, papers_summary
from robustnb.book.toc import ROOT, toc_files
from robustnb.cache import normalised_source
from robustnb.config import resolve_preset


# ------------------------------------------------------------------------ Sphinx: what a rebuild re-executes
def shown_names(root: Path = ROOT) -> set[str]:
    """The names the book's pages show the source of: the last name of each argument of every
    ``show_source(...)`` call in the notebooks (``EntropyAttack.objective`` -> ``objective``)."""
    names: set[str] = set()
    for path in sorted((root / "book").glob("*.ipynb")):
        for cell in json.loads(path.read_text()).get("cells", []):
            if cell.get("cell_type") != "code":
                continue
            source = "".join(cell.get("source", ""))
            if "show_source" not in source:
                continue
            code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
            for node in ast.walk(ast.parse(code)):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "show_source":
                    names.update(a.attr if isinstance(a, ast.Attribute) else a.id
                                 for a in node.args if isinstance(a, (ast.Attribute, ast.Name)))
    return names


def page_source(source: str, shown: set[str]) -> str:
    """What of a module's ``source`` can change a page: its normalised syntax (docstrings and comments cannot
    change what the code computes), and the exact text of every definition named in ``shown``, whose docstring
    and comments a page displays (:func:`robustnb.book.pages.show_source`)."""
    tree = ast.parse(source)
    exact = [ast.get_source_segment(source, node) or "" for node in ast.walk(tree)
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in shown]
    return "\0".join([normalised_source(source), *exact])


def package_fingerprint(root: Path = ROOT) -> str:
    """A hash of what in the robustnb package can change a page (:func:`page_source` of each module): a
    docstring or comment edit re-executes no chapter, unless a page shows that definition's source."""
    pkg, shown = root / "robustnb", shown_names(root)
    h = hashlib.sha256()
    for path in sorted(pkg.rglob("*.py")):
        h.update(f"{path.relative_to(pkg)}\0{page_source(path.read_text(), shown)}\0".encode())
    return h.hexdigest()[:12]


def execution_cache_path(build_dir: Path, preset: str | None = None, root: Path = ROOT) -> Path:
    """The jupyter-cache folder of a build: one per preset and robustnb code (:func:`package_fingerprint`).
    jupyter-cache re-executes a notebook when its code cells change; here it also does when the preset or the
    package's code changes (the notebooks then read every unaffected experiment back from robustnb's own cache,
    so that is quick)."""
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


# ------------------------------------------------------------------------ Sphinx: the execution timeout
def _execution_timeout(app, config) -> None:
    """config-inited: at a preset whose cells were never timed (``full``, until someone records it), no per-cell
    timeout: ``_config.yml``'s was set from the ``cpu`` preset's recorded cells (:func:`runtimes.cell_bounds`) and
    says nothing about a GPU run at paper scale, which must not fail after hours for a limit no one measured."""
    preset = resolve_preset(None)
    if not runtimes.cell_bounds(preset, Path(app.srcdir) / "book" / "runtimes.json"):
        config.nb_execution_timeout = -1


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
    """The ``claims-summary``, ``claims-apart`` and ``claims-forest CHAPTER.ipynb`` directives: a placeholder (an
    empty container)
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


def _summary_table(table, css: str = "robustnb-summary"):
    """A docutils table of :func:`papers_summary` (or :func:`papers_apart`), the verdict columns' headers, their
    non-zero cells and the verdict cells coloured."""
    from docutils import nodes

    cols = list(table.columns)
    verdict_of = {short: v for v, short in ledger.SHORT.items()}
    tnode = nodes.table(classes=[css])
    group = nodes.tgroup(cols=len(cols))
    tnode += group
    group += [nodes.colspec(colwidth=3 if c == "paper" else 1) for c in cols]

    def row(values, header=False):
        r = nodes.row()
        for c, v in zip(cols, values):
            entry = nodes.entry()
            if c in verdict_of and (header or v):
                entry["classes"] += ledger.css_class(verdict_of[c]).split()
            elif c == "verdict" and not header:
                entry["classes"] += ledger.css_class(str(v)).split()
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
            if node["robustnb_kind"] == "apart":  # one small table per paper: claim, why not counted, verdict
                apart, parts = papers_apart(glued, Path(app.srcdir)), []
                for paper, rows in apart.groupby("paper", sort=False):
                    parts += [nodes.paragraph("", "", nodes.strong(text=paper)),
                              _summary_table(rows.drop(columns="paper"), "robustnb-apart")]
                node.replace_self(parts)
                continue
            chapter = node["robustnb_chapter"]
            rows = glued.get(chapter)
            if rows is None:
                from sphinx.util import logging
                logging.getLogger(__name__).warning(f"{chapter} glued no claims table", location=node)
                node.replace_self([])
                continue
            div_id = f"claims-forest-{posixpath.basename(chapter)}"
            if not ledger.measured(rows).any():  # nothing to draw: say so instead of an empty plot
                html = (f'<div id="{div_id}" class="robustnb-forest-empty"><p>No claim of this chapter was measured '
                        f'at this preset (none has a 95% interval): its {len(rows)} claims are listed in the table '
                        'below.</p></div>')
            else:
                html = ledger.forest_figure(rows).to_html(include_plotlyjs=False, include_mathjax=False,
                                                          full_html=False, div_id=div_id,
                                                          config={"displaylogo": False})
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
    from the book, once per page) on a page with a plotly figure: the forest plots, and the chapters' figures,
    whose outputs carry no library (:class:`robustnb.plots.PageRenderer`)."""
    from docutils import nodes

    app.add_css_file(f"{WEB_DIR}/{LEDGER_CSS}")
    if doctree is not None and any("robustnb-forest" in n["classes"] or "plotly-graph-div" in n.astext()
                                   for n in doctree.findall(nodes.raw)):
        app.add_js_file(f"{WEB_DIR}/{PLOTLY_JS}")


def _copy_ledger_assets(app, exception) -> None:
    """build-finished: write plotly.js and the verdict stylesheet into the built book's ``_static/`` WEB_DIR."""
    if exception is not None or app.builder.format != "html":
        return
    from plotly.offline import get_plotlyjs

    out = Path(app.outdir) / "_static" / WEB_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / PLOTLY_JS).write_text(get_plotlyjs())
    (out / LEDGER_CSS).write_text(book_stylesheet())


def book_stylesheet() -> str:
    """The book's own CSS (:data:`LEDGER_CSS`, on every page): the verdict colours and the tables that fit the
    page column (:func:`robustnb.book.pages.stylesheet`)."""
    return ledger.stylesheet() + "\n" + pages.stylesheet() + runtimes.STYLE


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
    """Register the hooks of this module (see its docstring)."""
    app.connect("config-inited", _set_execution_cache)
    app.connect("config-inited", _execution_timeout)
    app.connect("env-before-read-docs", _read_in_book_order)
    app.connect("config-inited", _serve_widget_js)
    app.connect("build-finished", _copy_widget_js)
    app.connect("doctree-resolved", _drop_plotly_mathjax)
    app.connect("html-page-context", _dedupe_scripts)
    app.add_directive("claims-summary", _placeholder_directive("summary"))
    app.add_directive("claims-apart", _placeholder_directive("apart"))
    app.add_directive("claims-forest", _placeholder_directive("forest"))
    app.connect("doctree-resolved", _fill_ledger)
    app.connect("html-page-context", _ledger_page_assets)
    app.connect("build-finished", _copy_ledger_assets)
    app.connect("env-get-outdated", _ledger_docs_outdated)
    app.connect("env-purge-doc", _ledger_docs_purge)
    app.connect("env-merge-info", _ledger_docs_merge)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
