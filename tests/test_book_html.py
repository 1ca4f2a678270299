"""The built HTML book (``make test`` builds it at smoke first; ROBUSTNB_BOOK_HTML says where)."""

import json
import os
import re
from pathlib import Path

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
    assert re.search(r"robustnb run: preset=(&#39;|')\w+(&#39;|'), seed=\d+, device=\w+, torch threads=\d+", text), \
        f"{path.stem}: no run line"
    for folder in {str(cache_dir()), str(data_dir()), str(Path.home())}:
        assert folder not in text, f"{path.stem} publishes the builder's folder {folder}"
