"""The built book as a reader sees it: every page of ``_toc.yml`` opened in headless Chromium with the network
blocked (``make test`` builds the book at smoke first; ROBUSTNB_BOOK_HTML says where).

The pages are served from the built folder on localhost and every other request is aborted, so a page that
needs a CDN (MathJax, require.js, the widget manager) fails here as it does for a reader on a train. Per page:
no console error, no failed request and no uncaught exception; every maths element typeset by MathJax and no raw
``\\(`` / ``\\[`` left in the text; every plotly figure drawn; every static plotly slider moves and changes its
figure; every explorer (ipywidgets' saved state) rendered with its controls and its saved output. One full-page
screenshot per page is kept next to the built html (``<html>/../screenshots/``).

Needs Chromium (Debian package ``chromium``; ROBUSTNB_CHROMIUM names another binary) and the ``playwright``
Python package, which drives that binary (its own browser download is never used). Without them the tests skip
with the reason, unless ROBUSTNB_REQUIRE_BROWSER=1 (CI), where they fail.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

from robustnb import book, widgets

HTML = Path(os.environ.get("ROBUSTNB_BOOK_HTML", book.ROOT / "_build" / "html"))
SHOTS = HTML.parent / "screenshots"
REQUIRE = os.environ.get("ROBUSTNB_REQUIRE_BROWSER") == "1"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PAGES = [f"{f}.html" for f in book.toc_files()]
pytestmark = pytest.mark.book


def chromium_path() -> str | None:
    exe = os.environ.get("ROBUSTNB_CHROMIUM")
    if exe:
        return exe if Path(exe).exists() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install -r requirements.txt)"
    if chromium_path() is None:
        return ("no Chromium found (Debian/Ubuntu: apt-get install chromium; or set ROBUSTNB_CHROMIUM to a "
                "Chromium binary)")
    return None


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


# ------------------------------------------------------------------------------------ scripts run in the page
WAIT_MATHJAX = """async () => {
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise) { await mj.startup.promise; return true; }
  return false;
}"""

# The text of the page outside code, with what is left of TeX delimiters; maths elements and how many MathJax typeset
TEX = r"""() => {
  const root = document.querySelector('main') || document.body;
  const skip = 'pre, code, script, style, textarea, mjx-container, .highlight';
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const raw = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement && n.parentElement.closest(skip)) continue;
    const t = n.textContent;
    if (/\\\(|\\\)|\\\[|\\\]|\\begin\{|\$\$/.test(t)) raw.push(t.trim().slice(0, 120));
  }
  const math = Array.from(root.querySelectorAll('.math'));
  return {raw: raw, math: math.length, typeset: math.filter(m => m.querySelector('mjx-container')).length};
}"""

PLOTLY = """() => Array.from(document.querySelectorAll('.plotly-graph-div')).map(gd => ({
  id: gd.id,
  drawn: !!(gd._fullLayout && gd.querySelector('.main-svg') && window.getComputedStyle(gd).display !== 'none'),
  traces: (gd.data || []).length,
  sliders: ((gd.layout || {}).sliders || []).length,
}))"""

# What the reader sees of a figure, without its slider and menus (whose own drawing moves with a click): kept in
# the page (``remember``) and compared there (``changed``), since image sliders carry megabytes of pixels
PICTURE = """gd => Array.from(gd.querySelectorAll('.main-svg')).map(svg => {
    const c = svg.cloneNode(true);
    c.querySelectorAll('.slider-container, .updatemenu-container').forEach(e => e.remove());
    return c.outerHTML;
  }).join('') + JSON.stringify(gd.data)"""
REMEMBER = f"""id => {{ window.__robustnbPicture = ({PICTURE})(document.getElementById(id)); }}"""
CHANGED = f"""id => ({PICTURE})(document.getElementById(id)) !== window.__robustnbPicture"""

# A slider's position and how many steps it has; its drawn group is tagged for the click (plotly draws no slider
# with fewer than two steps: nothing to move there)
SLIDER = """([id, k]) => {
  const gd = document.getElementById(id);
  const s = gd._fullLayout.sliders[k];
  const group = Array.from(gd.querySelectorAll('.slider-group')).find(g => g.__data__ && g.__data__._index === k);
  if (group) group.setAttribute('data-robustnb-slider', String(k));
  return {active: s.active, steps: s.steps.filter(st => st.visible !== false).length, drawn: !!group};
}"""

# Do two steps of a slider show different things? (the frames they animate to, or their restyle/update arguments);
# at smoke size, a figure's frames can hold identical numbers, and then a moved slider rightly changes nothing
STEPS_DIFFER = """([id, k, a, b]) => {
  const gd = document.getElementById(id);
  const steps = gd._fullLayout.sliders[k].steps.filter(st => st.visible !== false);
  const frames = gd._transitionData._frames || [];
  const content = st => st.method === 'animate'
    ? JSON.stringify([].concat(st.args[0] || []).map(n => frames.find(f => String(f.name) === String(n)))
                       .map(f => f ? [f.data, f.layout, f.traces] : null))
    : JSON.stringify([st.method, st.args]);
  return content(steps[a]) !== content(steps[b]);
}"""

# Every widget view of the page (an explorer: controls above an Output) and how many of the Output widgets' saved
# states hold something to show
WIDGETS = """() => {
  const views = Array.from(document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]'))
    .map(tag => {
      const area = tag.previousElementSibling;
      const view = area && area.classList.contains('widget-subarea') ? area : null;
      const controls = view ? view.querySelectorAll('.widget-slider, .widget-dropdown, .widget-toggle-buttons, '
        + '.widget-select, .widget-radio, .widget-checkbox, .widget-text, .widget-button, .widget-hslider').length : 0;
      const outputs = view ? Array.from(view.querySelectorAll('.widget-output')) : [];
      const shown = outputs.filter(o => o.innerText.trim().length > 0
        || o.querySelector('img, svg, canvas, table')).length;
      return {rendered: !!(view && view.children.length), controls: controls, outputs: outputs.length,
              shown: shown, text: view ? view.innerText.slice(0, 80) : ''};
    });
  let saved = 0;
  document.querySelectorAll('script[type="application/vnd.jupyter.widget-state+json"]').forEach(tag => {
    Object.values(JSON.parse(tag.textContent).state).forEach(m => {
      if (m.model_name === 'OutputModel' && (m.state.outputs || []).some(o =>
          Object.keys(o.data || {}).length || (o.text || '').length)) saved += 1;
    });
  });
  return {views: views, saved_outputs: saved};
}"""


# Every explorer (a widget view holding an Output) and whether it shows the note that its controls need a running
# kernel (robustnb.widgets.STATIC_NOTE) to the reader; and, per page section, how many static slider figures and
# explorers it holds (one view twice: a working static slider above an inert explorer of the same curves)
EXPLORERS = """([noteClass]) => {
  const views = Array.from(document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]'))
    .map(tag => tag.previousElementSibling)
    .filter(v => v && v.classList.contains('widget-subarea') && v.querySelector('.widget-output'));
  const shown = el => !!el && el.getClientRects().length > 0 && window.getComputedStyle(el).visibility !== 'hidden';
  // a figure's view: its section and its title without numbers (an explorer's state at build time and a static
  // slider of the same curves share both)
  const view = gd => (gd.closest('section') ? gd.closest('section').id : '') + ' | ' +
    String((((gd.layout || {}).title || {}).text) || '').replace(/[0-9.]+/g, '#').trim();
  const explorers = views.map(v => {
    const note = v.querySelector('.' + noteClass);
    return {section: v.closest('section') ? v.closest('section').id : '', note: shown(note),
            text: note ? note.innerText.trim().slice(0, 200) : '', view: v.innerText.slice(0, 80),
            figures: Array.from(v.querySelectorAll('.plotly-graph-div')).map(view)};
  });
  const sliders = Array.from(document.querySelectorAll('.plotly-graph-div'))
    .filter(gd => ((gd.layout || {}).sliders || []).length && !gd.closest('.widget-subarea'))
    .map(view);
  return {explorers: explorers, slider_views: sliders};
}"""

# The ledger's forest plots: every trace's points (x, ids, hover text), whether it is drawn, and the annotation
# listing the claims not drawn
FORESTS = """() => Array.from(document.querySelectorAll('.plotly-graph-div[id^="claims-forest-"]')).map(gd => ({
  id: gd.id,
  traces: (gd._fullData || []).map(t => ({  // _fullData: typed arrays decoded
    name: t.name, legend: t.legend || 'legend',
    visible: t.visible === undefined || t.visible === true, opacity: (t.marker || {}).opacity,
    x: Array.from(t.x || []).map(v => (v === null || v === undefined || !isFinite(Number(v))) ? null : Number(v)),
    ids: t.ids ? Array.from(t.ids).map(String) : null,
    hover: t.hovertext ? Array.from(t.hovertext).map(String) : null})),
  listed: ((gd.layout || {}).annotations || []).filter(a => a.name === 'not drawn').map(a => a.text),
}))"""


# The verdict cells (ledger tables, summaries) and the colour the reader sees on them (their left bar)
VERDICT_CELLS = """() => Array.from(document.querySelectorAll('td.robustnb-verdict, th.robustnb-verdict'))
  .map(td => ({cls: Array.from(td.classList).find(c => c.startsWith('robustnb-verdict-')),
               shadow: window.getComputedStyle(td).boxShadow}))"""


@pytest.fixture(scope="module")
def browser():
    why = missing()
    if why:
        (pytest.fail if REQUIRE else pytest.skip)(f"browser checks of the built book: {why}")
    if not (HTML / "index.html").exists():
        pytest.fail(f"no built book at {HTML}: run `make test` (it builds the book first) or `make book`")
    from playwright.sync_api import sync_playwright

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(HTML)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield chromium, base
        chromium.close()
    server.shutdown()


def _visit(chromium, base: str, page_path: str) -> dict:
    """Open one page offline and collect everything the tests check."""
    ctx = chromium.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")
    report = {"errors": [], "blocked": []}

    def route(r):
        if r.request.url.startswith(base):
            r.continue_()
        else:
            report["blocked"].append(r.request.url)
            r.abort()

    ctx.route("**/*", route)
    page = ctx.new_page()
    page.on("console", lambda m: m.type == "error" and report["errors"].append(f"console: {m.text}"))
    page.on("pageerror", lambda e: report["errors"].append(f"uncaught: {e}"))
    page.on("requestfailed", lambda r: report["errors"].append(f"request failed: {r.url} ({r.failure})"))
    try:
        page.goto(base + page_path, wait_until="load", timeout=120_000)
        try:
            page.wait_for_load_state("networkidle", timeout=20_000)
        except Exception:  # a page that keeps asking shows up in the errors
            pass
        report["mathjax"] = page.evaluate(WAIT_MATHJAX)
        # widgets render asynchronously after load: give them a moment to appear
        try:
            page.wait_for_function("""() => Array.from(document.querySelectorAll(
                'script[type="application/vnd.jupyter.widget-view+json"]')).every(t => t.previousElementSibling
                && t.previousElementSibling.classList.contains('widget-subarea')
                && t.previousElementSibling.children.length)""", timeout=20_000)
        except Exception:  # reported by the widget test below
            pass
        page.wait_for_timeout(500)
        report["tex"] = page.evaluate(TEX)
        report["widgets"] = page.evaluate(WIDGETS)
        report["figures"] = page.evaluate(PLOTLY)
        report["verdict_cells"] = page.evaluate(VERDICT_CELLS)
        report["explorers"] = page.evaluate(EXPLORERS, [widgets.NOTE_CLASS])
        report["forests"] = page.evaluate(FORESTS)
        report["sliders"] = _move_sliders(page, report["figures"])
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.evaluate("() => { document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); }")
        page.wait_for_timeout(300)
        page.screenshot(path=str(SHOTS / (page_path.replace("/", "__").removesuffix(".html") + ".png")),
                        full_page=True)
    finally:
        ctx.close()
    return report


def _move_sliders(page, figures) -> list[dict]:
    """Click the far end of every slider of every drawn figure; did the slider move and the figure change?"""
    out = []
    for fig in figures:
        if not fig["drawn"]:
            continue
        for k in range(fig["sliders"]):
            before = page.evaluate(SLIDER, [fig["id"], k])
            if before["steps"] < 2:
                continue
            if not before["drawn"]:
                out.append({"figure": fig["id"], "slider": k, "moved": False, "changed": False, "drawn": False})
                continue
            page.evaluate(REMEMBER, fig["id"])
            rail = page.locator(f"[id='{fig['id']}'] [data-robustnb-slider='{k}'] .slider-rail-touch-rect")
            rail.scroll_into_view_if_needed()
            box = rail.bounding_box()
            last = before["steps"] - 1
            target = 0 if before["active"] == last else last
            x = box["x"] + (3 if target == 0 else box["width"] - 3)
            page.mouse.click(x, box["y"] + box["height"] / 2)
            moved = changed = False
            for _ in range(10):  # an animated step takes its transition time
                page.wait_for_timeout(300)
                moved = page.evaluate(SLIDER, [fig["id"], k])["active"] != before["active"]
                changed = page.evaluate(CHANGED, fig["id"])
                if moved and changed:
                    break
            # the picture must change wherever the two steps show different things
            differ = page.evaluate(STEPS_DIFFER, [fig["id"], k, before["active"], target])
            out.append({"figure": fig["id"], "slider": k, "from": before["active"], "to": target,
                        "moved": moved, "changed": changed or not differ, "drawn": True, "steps_differ": differ})
    return out


def once_per_page(measure, browser):
    """``get(page_path)``: ``measure(chromium, base, page_path)`` run once per page (its report, or the failure it
    raised, kept for every later test of that page)."""
    chromium, base = browser
    seen: dict[str, dict | Exception] = {}

    def get(page_path: str) -> dict:
        if page_path not in seen:
            try:
                seen[page_path] = measure(chromium, base, page_path)
            except Exception as exc:  # once per page, not once per test
                seen[page_path] = exc
        if isinstance(seen[page_path], Exception):
            pytest.fail(f"{page_path} could not be checked: {seen[page_path]}")
        return seen[page_path]

    return get


@pytest.fixture(scope="module")
def visit(browser):
    return once_per_page(_visit, browser)


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_without_errors_offline(visit, page):
    r = visit(page)
    assert not r["errors"], f"{page} offline: " + "; ".join(r["errors"][:8])
    assert not r["blocked"], f"{page} asks the network for: {sorted(set(r['blocked']))[:5]}"


@pytest.mark.parametrize("page", PAGES)
def test_maths_is_typeset(visit, page):
    tex = visit(page)["tex"]
    assert not tex["raw"], f"{page} shows raw TeX: {tex['raw'][:3]}"
    assert tex["typeset"] == tex["math"], f"{page}: MathJax typeset {tex['typeset']} of {tex['math']} formulas"


@pytest.mark.parametrize("page", PAGES)
def test_every_plotly_figure_draws(visit, page):
    figures = visit(page)["figures"]
    blank = [f["id"] for f in figures if not f["drawn"] or f["traces"] == 0]
    assert not blank, f"{page}: {len(blank)} of {len(figures)} plotly figures not drawn"


@pytest.mark.parametrize("page", PAGES)
def test_every_static_slider_moves_its_figure(visit, page):
    r = visit(page)
    undrawn = [f["id"] for f in r["figures"] if f["sliders"] and not f["drawn"]]
    assert not undrawn, f"{page}: figures with sliders not drawn: {undrawn}"
    stuck = [s for s in r["sliders"] if not (s["moved"] and s["changed"])]
    assert not stuck, f"{page}: sliders that did not move or did not change their figure: {stuck}"


@pytest.mark.parametrize("page", PAGES)
def test_every_explorer_shows_its_saved_state(visit, page):
    widgets = visit(page)["widgets"]
    for i, w in enumerate(widgets["views"]):
        assert w["rendered"], f"{page}: widget {i} not rendered (saved widget state not shown)"
        # an explorer: controls above an Output (other saved widgets: a finished progress bar, say)
        if w["outputs"]:
            assert w["controls"] > 0, f"{page}: explorer {i} shows no controls: {w['text']!r}"
    shown = sum(w["shown"] for w in widgets["views"])
    assert shown >= widgets["saved_outputs"], \
        f"{page}: {widgets['saved_outputs']} explorer outputs saved, {shown} shown"


@pytest.mark.parametrize("page", ["book/claims.html", "book/intro.html"])
def test_verdict_cells_wear_the_forest_plots_colours(visit, page):
    from robustnb import ledger

    cells = visit(page)["verdict_cells"]
    assert cells, f"{page}: no coloured verdict cell"
    rgb = {f"robustnb-verdict-{v.replace(' ', '-')}": "rgb({}, {}, {})".format(*(int(c[i:i + 2], 16) for i in (1, 3, 5)))
           for v, c in ledger.VERDICT_COLOURS.items()}
    wrong = [c for c in cells if rgb[c["cls"]] not in c["shadow"]]
    assert not wrong, f"{page}: verdict cells not in their colour: {wrong[:3]}"


def test_the_book_has_figures_sliders_and_explorers(visit):
    """The checks above must have something to check: the chapters draw figures, static sliders and explorers."""
    reports = [visit(p) for p in PAGES]
    assert sum(len(r["figures"]) for r in reports) > 0
    assert any(s["steps_differ"] for r in reports for s in r["sliders"])
    assert sum(1 for r in reports for w in r["widgets"]["views"] if w["outputs"]) > 0  # explorers
    assert sum(r["tex"]["math"] for r in reports) > 0
    assert len(list(SHOTS.glob("*.png"))) >= len(PAGES)


# ---------------------------------------------------------------------------------------- what readers see
def _claims_of(forest_id: str) -> dict:
    """The declared claims (``PAPER_CLAIMS``) of the chapter that a ledger forest plot (``claims-forest-<chapter>``)
    draws."""
    import importlib

    return importlib.import_module(f"robustnb.chapters.{forest_id.removeprefix('claims-forest-')}").PAPER_CLAIMS


def test_forest_plots_draw_only_measured_claims_and_name_whose_figure(visit):
    """The ledger's forest plots: no point for a claim without a measurement (its hover says "ours: n/a" or "not
    measured"; it used to be a grey dot at 0 with a zero-width interval): those are listed under the plot; each
    reference marker named by whose figure it is (the paper's, or the book's own bound), as its claim declares."""
    from robustnb import ledger

    forests = visit("book/claims.html")["forests"]
    assert forests, "no forest plot on the ledger page"
    bold = {}  # a claim's bold first line in the hover -> its declaration
    for f in forests:
        for pc in _claims_of(f["id"]).values():
            bold[f"<b>{ledger._label(pc.claim, 70)}</b>"] = pc
    unmeasured, misnamed, lost = [], [], []
    for f in forests:
        claims = _claims_of(f["id"])
        drawn = set()
        for t in f["traces"]:
            if not t["visible"] or t["opacity"] == 0:
                continue
            for i, x in enumerate(t["x"]):
                if x is None:
                    continue
                hover = (t["hover"] or [""] * len(t["x"]))[i]
                if t["name"] in ledger.VERDICT_COLOURS:
                    drawn.add((t["ids"] or [hover])[i])
                    if "ours: n/a" in hover or f"ours: {book.NOT_MEASURED}" in hover:
                        unmeasured.append(f"{f['id']}: {hover.split('<br>')[0]}")
                    continue
                pc = next((c for b, c in bold.items() if hover.startswith(b)), None)
                assert pc is not None, f"{f['id']}: marker {t['name']!r} for no declared claim: {hover[:80]}"
                want = ledger.reference_name(pc.paper, pc.source, pc.role, pc.form)
                if t["name"] != want:
                    misnamed.append(f"{f['id']}: {pc.claim[:60]!r} marked {t['name']!r}, its figure is {want!r}")
        listed = sum(text.count("○") for text in f["listed"])
        if len(drawn) + listed != len(claims):
            lost.append(f"{f['id']}: {len(drawn)} claims drawn and {listed} listed of {len(claims)} declared")
    assert not unmeasured, f"{len(unmeasured)} claims drawn without a measurement: {unmeasured[:4]}"
    assert not misnamed, f"reference markers named for the wrong figure: {misnamed[:4]}"
    assert not lost, f"claims neither drawn nor listed under their plot: {lost}"


@pytest.mark.parametrize("page", PAGES)
def test_every_explorer_says_it_needs_a_kernel(visit, page):
    """In the static book an explorer's controls move and change nothing: each one shows the reader its note
    (robustnb.widgets.STATIC_NOTE); and no section shows one view twice, a static slider figure and an explorer
    of the same figure (same section, same title up to its numbers)."""
    r = visit(page)["explorers"]
    silent = [e["view"] for e in r["explorers"] if not (e["note"] and "kernel" in e["text"])]
    assert not silent, f"{page}: explorers without their note that they need a running kernel: {silent}"
    twice = sorted({f for e in r["explorers"] for f in e["figures"]} & set(r["slider_views"]))
    assert not twice, f"{page}: a static slider figure and an explorer of the same view: {twice}"
