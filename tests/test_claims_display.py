"""The claims table a chapter shows (robustnb.book.record -> robustnb.book.pages.ClaimsTable) and the page's
tables (robustnb.book.pages.table): every column a reader needs, every text whole, verdicts coloured as in the
forest plots, no index and no path of the builder's; the ledger page without paths."""

import re
from html.parser import HTMLParser

import pandas as pd
import pytest

from robustnb import book, ledger
from robustnb.book import pages
from robustnb.chapters import compressed_domain_shift, entropy_attacks, heterogeneous_ensembles, tv_defense
from robustnb.stats import Estimate, claims_table, unmeasured

BUILDER_PATH = re.compile(r"\.\./|shared/papers|/work/|\.txt\b")


def chapter_claims(chapter=compressed_domain_shift):
    """A chapter's declared claims judged on made-up estimates (the last one unmeasured); the compressed
    chapter's sources carry the builder's paths."""
    claims = chapter.PAPER_CLAIMS
    ids = list(claims)
    est = {cid: Estimate(0.05 * (k + 1), 0.02 * (k + 1), 0.08 * (k + 1), 50) for k, cid in enumerate(ids[:-1])}
    est[ids[-1]] = unmeasured()
    return claims_table(chapter.__name__.rsplit(".", 1)[1], claims, est)


@pytest.fixture
def no_glue(monkeypatch):
    monkeypatch.setattr(book.pages, "glue", lambda name, value: None)


class Cells(HTMLParser):
    """The header and body cells of an HTML table: (tag, classes, text)."""

    def __init__(self):
        super().__init__()
        self.cells, self.open = [], None

    def handle_starttag(self, tag, attrs):
        if tag in ("td", "th"):
            self.open = [tag, dict(attrs).get("class", ""), ""]

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.open:
            self.cells.append(tuple(self.open))
            self.open = None

    def handle_data(self, data):
        if self.open:
            self.open[2] += data


def cells_of(markup: str):
    parser = Cells()
    parser.feed(markup)
    return parser.cells


def test_record_returns_a_table_with_every_column_and_the_whole_text(no_glue):
    claims = chapter_claims()
    shown = book.record(claims)
    assert isinstance(shown, pages.ClaimsTable) and isinstance(shown, pd.DataFrame)  # code still reads it as a frame
    assert list(shown.columns) == list(pages.ClaimsTable.COLUMNS) and len(shown) == len(claims)
    markup = shown._repr_html_()
    cells = cells_of(markup)
    headers = [t for tag, _, t in cells if tag == "th"]
    assert headers == [name for name, _ in pages.CLAIMS_LAYOUT]
    body = [c for c in cells if c[0] == "td"]
    assert len(body) == len(claims) * len(pages.CLAIMS_LAYOUT)  # one row per claim, no index column
    text = " ".join(t for _, _, t in body)
    for row in claims.itertuples():  # nothing cut: every claim, figure and result whole
        assert pages.for_readers(row.claim) in text
        assert pages.for_readers(row.paper) in text and row.ours in text
        assert pages.for_readers(row.measure) in text
    assert "..." not in text and "…" not in text
    assert "table-layout: fixed" in markup and "<col style=\"width:" in markup  # fits the column


def test_verdict_cells_wear_the_verdicts_class_and_colour(no_glue):
    claims = chapter_claims()
    cells = cells_of(book.record(claims)._repr_html_())
    verdicts = [(cls, t) for tag, cls, t in cells if tag == "td" and "robustnb-verdict" in cls]
    assert [t for _, t in verdicts] == list(claims["verdict"])
    assert all(cls == ledger.css_class(t) for cls, t in verdicts)
    markup = book.record(claims)._repr_html_()
    for verdict in set(claims["verdict"]):  # coloured where the book's stylesheet is missing (Jupyter, Colab)
        assert f"inset 4px 0 0 {ledger.VERDICT_COLOURS[verdict]}" in markup


def test_roles_are_tagged_and_holm_is_in_words(no_glue):
    claims = chapter_claims(entropy_attacks)
    shown = book.record(claims)
    cells = [c for c in cells_of(shown._repr_html_()) if c[0] == "td"]
    width = len(pages.CLAIMS_LAYOUT)
    for k, row in enumerate(claims.itertuples()):
        claim_cell, holm_cell = cells[k * width][2], cells[k * width + width - 1][2]
        assert (f"({row.role})" in claim_cell) == (row.role != "primary")
        assert holm_cell == (row.holm or ("not tested" if row.role == "primary" else "not counted"))
    text = repr(shown)  # plain text for a terminal: every claim and verdict
    assert all(pages.for_readers(c) in text for c in claims["claim"]) and all(v in text for v in claims["verdict"])


@pytest.mark.parametrize("chapter", [compressed_domain_shift, entropy_attacks, heterogeneous_ensembles, tv_defense])
def test_no_builders_path_in_any_cell(no_glue, chapter):
    claims = chapter_claims(chapter)
    assert claims[["paper", "source"]].apply(lambda c: c.str.contains(BUILDER_PATH)).any(axis=None) or \
        chapter is not compressed_domain_shift  # the declared texts do carry paths: the test can fail
    shown = book.record(claims)
    assert not any(BUILDER_PATH.search(t) for _, _, t in cells_of(shown._repr_html_()))
    assert not shown.apply(lambda c: c.str.contains(BUILDER_PATH)).any(axis=None)


def test_for_readers_drops_paths_and_keeps_what_the_paper_says():
    out = pages.for_readers("summary of arXiv 2401.12014 (../shared/papers/002_76fed1676e7b1cc7.txt), key results "
                            "(1st bullet); no figure in the summary")
    assert out == "summary of arXiv 2401.12014, key results (1st bullet); the paper's summary gives no figure"
    assert pages.for_readers("abstract; TL;DR (../shared/papers: 'up to 95%')") == "abstract; TL;DR ('up to 95%')"
    assert pages.for_readers("TL;DR (../shared/papers); Zhang et al.") == "TL;DR; Zhang et al."


def test_titled_table_and_slices_stay_frames(no_glue):
    shown = book.record(chapter_claims()).titled("Paper vs this run")
    assert "Paper vs this run" in shown._repr_html_() and repr(shown).startswith("Paper vs this run")
    part = shown[shown["verdict"] != ""]
    assert type(part) is pd.DataFrame  # a computation on the table is a plain frame


def test_page_table_wraps_and_scrolls_right_below():
    frame = pd.DataFrame({("", "defense"): ["none", "disentangled_tv"], ("overhead %", "clean"): [0.0, -9.1234],
                          ("overhead %", "attacked"): [28.0, float("nan")]})
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    markup = pages.table(frame, title="Overhead")._repr_html_()
    assert markup.startswith('<div class="robustnb-table-scroll" style="overflow-x: auto;')
    assert '<th colspan="2"' in markup and "-9.12" in markup and "Overhead" in markup
    cells = cells_of(markup)
    assert [t for tag, _, t in cells if tag == "td"] == ["none", "0", "28", "disentangled_tv", "-9.12", ""]


def test_ledger_page_has_no_builders_path():
    page = book.ledger_markdown()
    rows = [ln for ln in page.splitlines() if ln.startswith("| ") and "{glue:text}" in ln]
    assert rows and not [r for r in rows if BUILDER_PATH.search(r)]
    assert "no figure in the summary" not in page and "our summary" not in page
    assert ":widths:" in page and "robustnb-claims-ledger" in page  # fixed widths: wraps in the page column


def test_the_books_stylesheet_carries_the_tables_rules():
    from robustnb.book import sphinx_ext

    css = sphinx_ext.book_stylesheet()
    assert ledger.stylesheet() in css and pages.stylesheet() in css
    assert "table.robustnb-claims" in css and "table-layout: fixed" in css and "robustnb-table-scroll" in css
