"""The built book's tables as a reader sees them, in headless Chromium (offline, as in tests/test_book_browser.py,
whose server, browser and page list this file shares; ROBUSTNB_BOOK_HTML says where the built book is).

On every page: every verdict (a ``td``/``th`` of class ``robustnb-verdict``, or a column headed "verdict") lies
inside the page's content column and is not cut off by any box around it, with the page scrolled to its start;
no table is wider than the column unless it sits in its own horizontal scroller whose scrollbar is right below
it (and the table is no taller than the window, so that scrollbar is on screen with it); no table hides rows
behind an inner scroll (an HTML table in a box that scrolls vertically, a plotly table whose rows overflow its
figure); and no table cell shows a path of the builder's (``../shared/papers/...``). Tables folded away in a
closed dropdown are skipped: a reader opens them.
"""

from __future__ import annotations

import pytest

from test_book_browser import HTML, PAGES, browser, once_per_page  # noqa: F401  (browser: the shared fixture)

pytestmark = pytest.mark.book

#: a scroller's bottom edge may sit this far below its table (the scrollbar itself and a margin), in px
SCROLLBAR_GAP = 40
VIEWPORT = {"width": 1280, "height": 900}

# Everything the checks need, measured with the page scrolled to its start
TABLES = r"""([gap, pathPattern]) => {
  window.scrollTo(0, 0);
  const path = new RegExp(pathPattern);
  const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const ar = article.getBoundingClientRect(), acs = getComputedStyle(article);
  const column = {left: ar.left + parseFloat(acs.paddingLeft), right: ar.right - parseFloat(acs.paddingRight)};
  const folded = el => !el.getClientRects().length
    || !!el.closest('details:not([open]) > :not(summary), .toggle-hidden, [hidden]');
  const scrolls = v => v === 'auto' || v === 'scroll';
  const name = t => {
    const cap = t.querySelector('caption');
    const first = t.querySelector('th, td');
    return ((cap && cap.innerText) || (first && first.innerText) || t.className || 'table').trim().slice(0, 60);
  };
  // the ancestors between an element and the article that clip it, innermost first
  const clippers = el => {
    const out = [];
    for (let a = el.parentElement; a && a !== article.parentElement; a = a.parentElement) {
      const cs = getComputedStyle(a);
      if (cs.overflowX !== 'visible' || cs.overflowY !== 'visible') out.push([a, cs]);
    }
    return out;
  };
  const report = {tables: 0, verdicts: 0, clipped: [], overflowing: [], hidden_rows: [], paths: [],
                  column: [column.left, column.right], window_height: window.innerHeight};
  for (const t of article.querySelectorAll('table')) {
    if (folded(t)) continue;
    report.tables += 1;
    const tr = t.getBoundingClientRect();
    const boxes = clippers(t);
    // the verdict column: cells classed as verdicts, and the cells under a header that reads "verdict"
    const cells = Array.from(t.querySelectorAll('td.robustnb-verdict, th.robustnb-verdict'));
    t.querySelectorAll('tr').forEach(row => {
      Array.from(row.children).forEach((c, k) => {
        if (c.tagName === 'TH' && c.innerText.trim().toLowerCase() === 'verdict') {
          cells.push(c);
          t.querySelectorAll('tbody tr').forEach(r => { if (r.children[k]) cells.push(r.children[k]); });
        }
      });
    });
    for (const c of new Set(cells)) {
      report.verdicts += 1;
      const r = c.getBoundingClientRect();
      let left = column.left, right = column.right;
      for (const [a] of clippers(c)) {
        const b = a.getBoundingClientRect();
        left = Math.max(left, b.left + a.clientLeft);
        right = Math.min(right, b.left + a.clientLeft + a.clientWidth);
      }
      if (r.left < left - 1 || r.right > right + 1 || r.width < 1) {
        report.clipped.push({table: name(t), text: c.innerText.trim().slice(0, 40),
                             cell: [Math.round(r.left), Math.round(r.right)],
                             visible: [Math.round(left), Math.round(right)]});
      }
    }
    // wider than the column: only inside its own horizontal scroller, scrollbar right below, table on screen
    if (tr.left < column.left - 1 || tr.right > column.right + 1) {
      const own = boxes.find(([a, cs]) => scrolls(cs.overflowX));
      let why = 'not in a horizontal scroller';
      if (own) {
        const [a] = own, b = a.getBoundingClientRect();
        if (b.left < column.left - 1 || b.right > column.right + 1) why = 'its scroller is wider than the column';
        else if (b.bottom - tr.bottom > gap) why = `its scrollbar is ${Math.round(b.bottom - tr.bottom)} px below it`;
        else if (tr.height > window.innerHeight)
          why = `its scrollbar is below a table ${Math.round(tr.height)} px tall`;
        else why = '';
      }
      if (why) report.overflowing.push({table: name(t), width: Math.round(tr.width),
                                        column: Math.round(column.right - column.left), why: why});
    }
    // rows behind an inner scroll: a box around the table that scrolls vertically and is shorter than it
    for (const [a, cs] of boxes) {
      if (cs.overflowY !== 'visible' && a.scrollHeight > a.clientHeight + 2
          && a.getBoundingClientRect().bottom < tr.bottom - 2) {
        report.hidden_rows.push({table: name(t), shown: a.clientHeight, height: Math.round(tr.height),
                                 box: a.className.toString().slice(0, 60)});
        break;
      }
    }
    t.querySelectorAll('td, th').forEach(c => {
      if (path.test(c.innerText)) report.paths.push({table: name(t), text: c.innerText.trim().slice(0, 100)});
    });
  }
  // plotly tables: their rows overflow the figure when the rows' total height exceeds the drawn area
  document.querySelectorAll('.plotly-graph-div').forEach(gd => {
    const traces = (gd.data || []).filter(d => d.type === 'table');
    if (!traces.length || folded(gd)) return;
    report.tables += traces.length;
    const title = (((gd.layout || {}).title || {}).text || gd.id || '').slice(0, 60);
    gd.querySelectorAll('.scrollbar-kit').forEach(kit => {
      const s = (kit.__data__ || {}).scrollbarState;
      if (s && s.totalHeight > s.scrollableAreaHeight + 1) {
        report.hidden_rows.push({table: 'plotly: ' + title, shown: Math.round(s.scrollableAreaHeight),
                                 height: Math.round(s.totalHeight), box: 'plotly table'});
      }
    });
    traces.forEach(d => [].concat(((d.cells || {}).values || [])).flat().forEach(v => {
      if (path.test(String(v))) report.paths.push({table: 'plotly: ' + title, text: String(v).slice(0, 100)});
    }));
  });
  return report;
}"""

#: what a path of the builder's looks like in a cell
BUILDER_PATH = r"\.\./|shared/papers|/work/"


def _measure(chromium, base: str, page_path: str) -> dict:
    """Open one page offline (everything but the local server blocked) and measure its tables."""
    ctx = chromium.new_context(viewport=VIEWPORT, service_workers="block")
    ctx.route("**/*", lambda r: r.continue_() if r.request.url.startswith(base) else r.abort())
    page = ctx.new_page()
    try:
        page.goto(base + page_path, wait_until="load", timeout=120_000)
        try:
            page.wait_for_load_state("networkidle", timeout=20_000)
            page.wait_for_function("""() => Array.from(document.querySelectorAll('.plotly-graph-div'))
                .every(gd => gd._fullLayout)""", timeout=20_000)
        except Exception:  # an undrawn figure is reported by tests/test_book_browser.py
            pass
        page.wait_for_timeout(500)
        return page.evaluate(TABLES, [SCROLLBAR_GAP, BUILDER_PATH])
    finally:
        ctx.close()


@pytest.fixture(scope="module")
def tables(browser):  # noqa: F811
    measured = once_per_page(_measure, browser)

    def get(page_path: str) -> dict:
        if not (HTML / page_path).exists():
            pytest.skip(f"{page_path} is not in the built book at {HTML}")
        return measured(page_path)

    return get


@pytest.mark.parametrize("page", PAGES)
def test_no_verdict_is_cut_off(tables, page):
    r = tables(page)
    assert not r["clipped"], (f"{page}: {len(r['clipped'])} of {r['verdicts']} verdict cells outside the content "
                              f"column {r['column']} or cut off: {r['clipped'][:4]}")


@pytest.mark.parametrize("page", PAGES)
def test_no_table_overflows_the_column_without_a_scrollbar_right_below(tables, page):
    r = tables(page)
    assert not r["overflowing"], f"{page}: tables wider than the content column: {r['overflowing'][:4]}"


@pytest.mark.parametrize("page", PAGES)
def test_no_table_hides_rows_behind_an_inner_scroll(tables, page):
    r = tables(page)
    assert not r["hidden_rows"], f"{page}: tables with rows hidden behind an inner scroll: {r['hidden_rows'][:4]}"


@pytest.mark.parametrize("page", PAGES)
def test_no_builders_path_in_a_table(tables, page):
    r = tables(page)
    assert not r["paths"], f"{page}: cells with a path of the builder's: {r['paths'][:3]}"


def test_the_book_has_claims_tables_to_check(tables):
    """The checks above must have something to check: the chapters and the ledger show verdicts in tables."""
    reports = [tables(p) for p in PAGES if (HTML / p).exists()]
    assert sum(r["tables"] for r in reports) > 0 and sum(r["verdicts"] for r in reports) > 0
