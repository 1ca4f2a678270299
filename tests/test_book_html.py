"""The built HTML book (``make test`` builds it at smoke first; ROBUSTNB_BOOK_HTML says where)."""

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from robustnb import book

HTML = Path(os.environ.get("ROBUSTNB_BOOK_HTML", book.ROOT / "_build" / "html"))
PLOTLY_MIME = "application/vnd.plotly.v1+json"
pytestmark = pytest.mark.book


def plotly_outputs(nb: dict) -> int:
    """Figures the executed notebook displayed (plotly's mime bundle, or its HTML from the notebook renderer)."""
    n = 0
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            d = o.get("data", {})
            if PLOTLY_MIME in d or "plotly-graph-div" in "".join(d.get("text/html", "")):
                n += 1
    return n


@pytest.fixture(scope="module")
def html_dir():
    if not (HTML / "index.html").exists():
        pytest.fail(f"no built book at {HTML}: run `make test` (it builds the book first) or `make book`")
    return HTML


@pytest.mark.parametrize("path", book.chapters(), ids=[p.stem for p in book.chapters()])
def test_every_plotly_figure_reaches_the_html(html_dir, path):
    rel = path.relative_to(book.ROOT)
    page = html_dir / rel.with_suffix(".html")
    executed = html_dir.parent / "jupyter_execute" / rel
    assert page.exists(), f"{page} missing"
    assert executed.exists(), f"{executed} missing (was the chapter executed by the build?)"
    expected = plotly_outputs(json.loads(executed.read_text()))
    drawn = len(re.findall(r'class="plotly-graph-div"', page.read_text()))
    assert expected > 0, f"{rel} displays no plotly figure"
    assert drawn == expected, f"{rel}: {expected} figures executed, {drawn} in the HTML"


def test_colab_launch_button(html_dir):
    url, branch = book.repository()
    slug = url.split("github.com/")[-1]
    page = (html_dir / book.chapters()[0].relative_to(book.ROOT)).with_suffix(".html").read_text()
    assert f"colab.research.google.com/github/{slug}/blob/{branch}/" in page


def test_claims_ledger_agrees_with_the_chapters(html_dir):
    """Every claim of every chapter appears on the ledger page with the value and verdict that chapter glued."""
    import importlib
    import html as htmllib

    ledger = htmllib.unescape(re.sub(r"<[^>]+>", " ", (html_dir / "book" / "claims.html").read_text()))
    ledger = re.sub(r"\s+", " ", ledger)
    checked = 0
    for path in book.chapters():
        claims = getattr(importlib.import_module(f"robustnb.chapters.{path.stem}"), "PAPER_CLAIMS", {})
        # myst-nb keeps a chapter's glued outputs in <name>.glue.json next to the executed notebook
        store = html_dir.parent / "jupyter_execute" / path.relative_to(book.ROOT).with_suffix(".glue.json")
        glued = {name: "".join(next((v for k, v in out["data"].items() if k.endswith("text/plain")), "")).strip("'\"")
                 for name, out in json.loads(store.read_text()).items()}
        for cid in claims:
            assert cid in glued and f"{cid}_verdict" in glued, f"{path.stem} did not glue {cid}"
            assert re.sub(r"\s+", " ", glued[cid]) in ledger and glued[f"{cid}_verdict"] in ledger, cid
            checked += 1
    assert checked > 0


@pytest.mark.parametrize("path", book.chapters(), ids=[p.stem for p in book.chapters()])
def test_pages_print_the_run_but_not_the_builders_folders(html_dir, path):
    """The run line under ``robustnb.setup`` names preset, seed, device and threads; the data and cache folders of
    the machine that built the book stay out of the published page."""
    from robustnb.config import cache_dir, data_dir

    text = (html_dir / path.relative_to(book.ROOT).with_suffix(".html")).read_text()
    line = re.search(r"robustnb run: preset=(&#39;|')\w+(&#39;|'), seed=\d+, device=\w+, torch threads=\d+", text)
    assert line, f"{path.stem}: no run line"
    printed = text[line.start():text.index("</pre>", line.start())]  # what the set-up cell printed
    for folder in {str(cache_dir()), str(data_dir()), str(Path.home())}:
        assert folder not in printed, f"{path.stem}: the run line publishes the builder's folder {folder}"


def test_explorers_save_what_they_show(html_dir):
    """Every explorer's Output widget saved in the executed chapters holds something to show."""
    empty, total = [], 0
    for path in book.chapters():
        nb = json.loads((html_dir.parent / "jupyter_execute" / path.relative_to(book.ROOT)).read_text())
        state = nb["metadata"].get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
        for mid, model in state.get("state", {}).items():
            if model["model_name"] == "OutputModel":
                total += 1
                if not any(o.get("data") or o.get("text") for o in model["state"].get("outputs", [])):
                    empty.append(f"{path.stem}:{mid[:8]}")
    assert total > 0 and not empty, f"explorers that saved an empty output: {empty}"


def _glued_text(html_dir, path) -> dict[str, str]:
    """A chapter's glued text values (its claims table: ``<id>``, ``<id>_verdict``), as the chapter's page shows them."""
    store = html_dir.parent / "jupyter_execute" / path.relative_to(book.ROOT).with_suffix(".glue.json")
    return {name: "".join(next((v for k, v in out["data"].items() if k.endswith("text/plain")), "")).strip("'\"")
            for name, out in json.loads(store.read_text()).items()}


def _claim_chapters():
    import importlib

    out = []
    for path in book.chapters():
        claims = getattr(importlib.import_module(f"robustnb.chapters.{path.stem}"), "PAPER_CLAIMS", {})
        if claims:
            out.append((path, claims))
    return out


@pytest.mark.parametrize("page", ["book/claims.html", "book/intro.html"])
def test_claims_summary_agrees_with_the_chapters_tables(html_dir, page):
    """The per-paper counts atop the ledger and in the introduction are those of the chapters' own tables: each
    paper's primary claims measured on the paper's kind of data, by verdict, and every other row as not counted."""
    from bs4 import BeautifulSoup

    from robustnb import ledger
    from robustnb.stats import VERDICTS

    expected = {}
    for caption, files in book.toc_parts():
        rows = [ledger.read_glued(html_dir.parent / "jupyter_execute" / f"{f}.glue.json") for f in files]
        rows = [r for r in rows if r is not None]
        if rows:
            f = pd.concat(rows, ignore_index=True)
            counted = (f["role"] == "primary") & ~f["stand_in"].astype(bool)
            verdicts = list(f.loc[counted, "verdict"])
            expected[caption] = [len(verdicts)] + [verdicts.count(v) for v in VERDICTS]
            expected[caption] += [None, int((~counted).sum())]  # hold after Holm: checked in tests/test_ledger.py
    soup = BeautifulSoup((html_dir / page).read_text(), "html.parser")
    table = soup.select_one("table.robustnb-summary")
    assert table is not None, f"{page}: no claims summary"
    header = [th.get_text(strip=True) for th in table.select("thead th, thead td")]
    assert header == ["paper", "primary", *ledger.SHORT.values(), "hold after Holm", ledger.NOT_COUNTED]
    rows = {cells[0]: [int(c) for c in cells[1:]] for tr in table.select("tbody tr")
            if (cells := [td.get_text(strip=True) for td in tr.select("td")])}
    total = rows.pop("total")
    for got in rows.values():
        got[-2] = None
    assert rows == expected
    assert total[:-2] == [sum(col) for col in zip(*(v[:-2] for v in expected.values()))]
    # verdict columns coloured as the forest plots
    for v in VERDICTS:
        assert table.select(f"th.robustnb-verdict-{v.replace(' ', '-')}"), f"{page}: {v} header not coloured"
    if page == "book/claims.html":  # the rows not counted, each with why
        apart = soup.select("table.robustnb-apart tbody tr")
        assert len(apart) == sum(v[-1] for v in expected.values())


def _plotly_data(html: str, div_id: str, layout: bool = False):
    """The traces plotly.io.to_html wrote for the figure in ``div_id``: ``Plotly.newPlot("id", [traces], {layout},
    ...)``; with ``layout``, ``(traces, layout)``."""
    call = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",', html)
    assert call, f"no figure drawn into {div_id}"
    start = html.index("[", call.end())
    traces, end = json.JSONDecoder().raw_decode(html[start:])
    if not layout:
        return traces
    rest = html[start + end:]
    return traces, json.JSONDecoder().raw_decode(rest[rest.index("{"):])[0]


@pytest.mark.parametrize("path, claims", _claim_chapters(), ids=[p.stem for p, _ in _claim_chapters()])
def test_ledger_forest_plot_agrees_with_the_chapters_table(html_dir, path, claims):
    """Each chapter's forest plot on the ledger page: one row per measured claim, each point coloured by the
    verdict the chapter's table gives it and carrying the chapter's value in its hover, the claims not measured
    listed under the plot (together: every claim once); the verdict cells coloured alike."""
    from robustnb import ledger

    page = (html_dir / "book" / "claims.html").read_text()
    div = f"claims-forest-{path.stem}"
    assert f'id="{div}"' in page, f"no forest plot of {path.stem} on the ledger"
    glued = _glued_text(html_dir, path)
    if f'id="{div}" class="robustnb-forest-empty"' in page:  # nothing measured: said in words, not drawn
        assert all(glued[cid] in ("n/a", book.NOT_MEASURED) for cid in claims), f"{path.stem}: a measured claim not drawn"
        return
    traces, layout = _plotly_data(page, div, layout=True)
    points = [(i, t["name"], h) for t in traces if t.get("name") in ledger.VERDICT_COLOURS
              for i, h in zip(t["ids"], t["hovertext"])]
    apart = [a for a in layout.get("annotations", []) if a.get("name") == "not drawn"]
    listed = sum(line.startswith("○") for a in apart for line in a["text"].split("<br>"))
    for cid, verdict, hover in points:
        assert verdict == glued[f"{cid}_verdict"], f"{cid}: drawn as {verdict}, the chapter says {glued[cid + '_verdict']}"
        assert f"ours: {glued[cid]}" in hover
    for t in traces:
        if t.get("name") in ledger.VERDICT_COLOURS:
            assert t["marker"]["color"] == ledger.VERDICT_COLOURS[t["name"]]
    rows = {y for t in traces for y in t["y"]}
    assert len(rows) + listed == len(claims), \
        f"{path.stem}: {len(rows)} rows drawn and {listed} listed apart for {len(claims)} claims"
    assert {cid for cid, _, _ in points} <= set(claims)


def test_ledger_verdict_cells_are_coloured(html_dir):
    from robustnb.stats import VERDICTS

    page = (html_dir / "book" / "claims.html").read_text()
    coloured = len(re.findall(r'<td class="[^"]*robustnb-verdict-(?:' + "|".join(v.replace(" ", "-") for v in VERDICTS)
                              + r')[^"]*"', page))
    claims = sum(len(c) for _, c in _claim_chapters())
    assert coloured >= claims, f"{coloured} coloured verdict cells for {claims} claims"
    assert (html_dir / "_static" / "robustnb-web" / "robustnb-ledger.css").exists()


#: what a reader downloads per page without the book's static files, and per stored notebook
PAGE_LIMIT, NOTEBOOK_LIMIT = 1_000_000, 300_000


@pytest.mark.parametrize("path", book.chapters(), ids=[p.stem for p in book.chapters()])
def test_pages_load_plotly_once_from_the_book(html_dir, path):
    """plotly.js is served once from ``_static/`` and inlined nowhere: each chapter page is under 1 MB and loads the
    library by one script tag; the stored notebook (its nbval outputs) is under 300 KB."""
    page = (html_dir / path.relative_to(book.ROOT).with_suffix(".html")).read_text()
    assert len(page.encode()) < PAGE_LIMIT, f"{path.stem}: page of {len(page.encode()):,} bytes"
    assert page.count("plotly.min.js") == 1 and "/**\n* plotly.js v" not in page, path.stem
    assert path.stat().st_size < NOTEBOOK_LIMIT, f"{path.name}: {path.stat().st_size:,} bytes stored"
