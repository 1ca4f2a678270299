"""The claims ledger at a glance (robustnb.ledger): the rows a chapter glues, the per-paper summary, the forest
plots, the verdict colours; and the book tools around them (robustnb.book: book order, the terminal summary)."""

import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest

from robustnb import book, ledger, plots
from robustnb.chapters import entropy_attacks
from robustnb.stats import VERDICTS, Estimate, claims_table, unmeasured


def chapter_table():
    """entropy_attacks' claims judged on made-up estimates: one of each verdict, one claim not measured."""
    claims = entropy_attacks.PAPER_CLAIMS
    ids = list(claims)
    est = {
        ids[0]: Estimate(0.47, 0.40, 0.55, 500),    # +46.8% expected: reproduced
        ids[1]: Estimate(0.10, 0.05, 0.15, 500),    # no size: reproduced
        ids[2]: Estimate(0.01, -0.05, 0.08, 500),   # -6.6 points: inconclusive
        ids[3]: Estimate(0.30, 0.25, 0.35, 500),    # +95% expected: in direction
        ids[4]: Estimate(-0.10, -0.15, -0.05, 500),  # doubling: not reproduced
    }
    est.update({cid: unmeasured() for cid in ids[5:]})
    table = claims_table("entropy_attacks", claims, est)
    return table


def test_ledger_rows_carry_display_scale_and_the_papers_figure():
    table = chapter_table()
    rows = ledger.ledger_rows(table, entropy_attacks.PAPER_CLAIMS)
    assert [r["claim_id"] for r in rows] == list(table["claim_id"])
    first = rows[0]
    pc = entropy_attacks.PAPER_CLAIMS[first["claim_id"]]
    assert first["paper_value"] == pc.paper_value and first["scale"] == pc.scale
    assert first["verdict"] == table["verdict"][0] and first["ours"] == table["ours"][0]
    unmeasured = [r for r in rows if r["ours"] == book.NOT_MEASURED]
    assert unmeasured and all(r["value"] is None for r in unmeasured)
    json.dumps(rows, allow_nan=False)  # what the glue stores is plain JSON


def glued_store(tmp_path, rows, name="book/x"):
    path = tmp_path / f"{name}.glue.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({ledger.GLUE_KEY: {"data": {"text/plain": json.dumps(rows)}, "metadata": {}}}))
    return path


def test_read_glued_round_trip(tmp_path):
    rows = ledger.ledger_rows(chapter_table(), entropy_attacks.PAPER_CLAIMS)
    frame = ledger.read_glued(glued_store(tmp_path, rows))
    assert list(frame["claim_id"]) == [r["claim_id"] for r in rows]
    assert ledger.read_glued(tmp_path / "missing.glue.json") is None
    (tmp_path / "other.glue.json").write_text(json.dumps({"x": {"data": {"text/plain": "1"}}}))
    assert ledger.read_glued(tmp_path / "other.glue.json") is None


def test_record_glues_the_table_as_text_a_notebook_can_hold(monkeypatch):
    """nbformat accepts only text in a glued output; the JSON rows must come back whole."""
    import nbformat
    from IPython.core.formatters import format_display_data

    glued = {}
    monkeypatch.setattr(book.pages, "glue", lambda name, value: glued.__setitem__(name, value))
    book.record(chapter_table())
    data, _ = format_display_data(glued[ledger.GLUE_KEY])
    out = nbformat.v4.new_output("display_data", data={"application/papermill.record/" + k: v for k, v in data.items()})
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(outputs=[out])])
    nbformat.validate(nb)
    rows = json.loads(data["text/plain"])
    assert [r["claim_id"] for r in rows] == list(chapter_table()["claim_id"])


def _rows(roles_verdicts_p, stand_in=False):
    """Ledger rows with the given (role, verdict, p) triples."""
    return pd.DataFrame([{"claim_id": f"c{i}", "claim": f"claim {i}", "verdict": v, "role": r, "p": p,
                          "stand_in": stand_in, "why": "the coder" if r == "setup" else ""}
                         for i, (r, v, p) in enumerate(roles_verdicts_p)])


def test_summary_counts_only_each_papers_primary_claims():
    """Issue 36, finding 3: the tally counts every row (additions, set-up checks, construction rows, stand-in
    data) on today's code; it must count only the primary claims, and list the rest apart."""
    rep, nrep = VERDICTS[0], VERDICTS[2]
    a1 = _rows([("primary", rep, 0.001), ("primary", nrep, 0.9), ("addition", rep, 0.001), ("setup", rep, 0.0)])
    a2 = _rows([("primary", rep, 0.001), ("construction", rep, 0.0), ("exploratory", rep, 0.001)])
    b = _rows([("primary", rep, 0.001), ("primary", rep, 0.002)], stand_in=True)
    s = ledger.summary({"paper A": [a1, a2], "paper B": [b]}).set_index("paper")
    assert s.loc["paper A", "primary"] == 3 and s.loc["paper A", "reproduced"] == 2
    assert s.loc["paper A", "not reproduced"] == 1
    assert (s.loc["paper A", ["book's additions", "set-up checks", "by construction", "exploratory"]] == 1).all()
    assert s.loc["paper B", "primary"] == 0 and s.loc["paper B", ledger.STAND_IN] == 2
    assert list(s.index) == ["paper A", "paper B", "total"] and s.loc["total", "primary"] == 3
    assert (s[list(ledger.SHORT.values())].sum(axis=1) == s["primary"]).all()
    apart = ledger.not_counted({"paper A": [a1, a2], "paper B": [b]})
    assert len(apart) == 6 and "set-up checks: the coder" in set(apart["not counted because"])


def test_holm_runs_over_each_papers_primary_claims_across_its_chapters():
    """Four primary claims in two chapters, each p = 0.01: alone (one claim per family) each would hold; over
    the paper's four claims, Holm's first step needs p < 0.025 / 4, so none holds."""
    rep = VERDICTS[0]
    ch1, ch2 = (_rows([("primary", rep, 0.01), ("primary", rep, 0.01), ("exploratory", rep, 1e-9)]) for _ in range(2))
    s = ledger.summary({"paper": [ch1, ch2]}).set_index("paper")
    assert s.loc["paper", "hold after Holm"] == 0
    strong = _rows([("primary", rep, 0.001), ("primary", rep, 0.001)])
    assert ledger.summary({"paper": [strong, strong]}).set_index("paper").loc["paper", "hold after Holm"] == 4


def test_forest_figure_one_point_per_measured_claim_coloured_by_verdict():
    rows = pd.DataFrame(ledger.ledger_rows(chapter_table(), entropy_attacks.PAPER_CLAIMS))
    rows.loc[1, ["low", "high"]] = None  # a value without its interval ("n/a"): no measurement either
    fig = ledger.forest_figure(rows)
    has = rows[["value", "low", "high"]].apply(pd.to_numeric, errors="coerce").notna().all(axis=1)
    measured, unmeasured = rows[has], rows[~has]
    assert len(measured) and len(unmeasured) >= 2
    assert rows["unit"].nunique() > 1  # two panels (% and points): a verdict's points may sit in both
    for verdict, group in measured.groupby("verdict"):
        traces = [t for t in fig.data if t.name == verdict]
        assert all(t.marker.color == ledger.VERDICT_COLOURS[verdict] for t in traces)
        xs = [round(v, 9) for t in traces for v in t.x]
        assert sorted(xs) == sorted(round(v * s, 9) for v, s in zip(group["value"], group["scale"]))
        assert all(verdict in h and "ours: " in h for t in traces for h in t.hovertext)
        assert sorted(i for t in traces for i in t.ids) == sorted(group["claim_id"])
    assert sum(len(t.x) for t in fig.data if t.name in ledger.VERDICT_COLOURS) == len(measured)
    # a claim not measured is no point (not a grey dot at 0) and no row: it is listed under the plot
    drawn = {i for t in fig.data for i in (t.ids or ())}
    assert drawn.isdisjoint(unmeasured["claim_id"])
    labels = set().union(*(set(t.y) for t in fig.data))
    assert len(labels) == len(measured)
    [listed] = [a for a in fig.layout.annotations if a.name == "not drawn"]
    assert f"({len(unmeasured)})" in listed.text and listed.text.count("○") == len(unmeasured)
    assert ledger.NOT_DRAWN in listed.text


def test_forest_figure_names_whose_figure_each_marker_is():
    """The paper's figures and the book's own bounds are told apart in the legend and the hover."""
    rows = pd.DataFrame(ledger.ledger_rows(chapter_table(), entropy_attacks.PAPER_CLAIMS))
    rows[["value", "low", "high"]] = [0.1, 0.05, 0.15]  # every claim measured: every figure drawn
    rows["paper_value"] = 0.2
    rows["paper"] = "the paper's words"
    rows["role"] = "primary"
    rows.loc[0, "source"] = "this book (a derivation)"              # the book's by its source
    rows.loc[1, "paper"] = "no figure in the summary: the 5-point bound is the book's"  # by its words
    rows.loc[1, "form"] = "at_most"
    rows.loc[2, "role"] = "addition"                                # the book's own question
    rows.loc[3, "form"] = "increase"                                # the paper's
    fig = ledger.forest_figure(rows)
    by_id = {i: t for t in fig.data if t.name in ledger.REFERENCE.values() for i in t.ids}
    ids = list(rows["claim_id"])
    assert by_id[ids[0]].name == "the book's figure" and by_id[ids[1]].name == "the book's bound"
    assert by_id[ids[2]].name.startswith("the book's") and by_id[ids[3]].name == "the paper's figure"
    assert {by_id[i].marker.symbol for i in ids[:3]} == {"square-open"}
    assert by_id[ids[3]].marker.symbol == "diamond-open"
    hover = dict(zip(by_id[ids[1]].ids, by_id[ids[1]].hovertext))[ids[1]]
    assert "the book's bound: 20" in hover
    assert len({t.name for t in fig.data if t.showlegend and t.name in ledger.REFERENCE.values()}) == 3


@pytest.mark.parametrize("chapter", ["entropy_attacks", "frequency_analysis", "heterogeneous_ensembles",
                                     "tv_defense"])
def test_every_declared_figure_says_whose_it_is(chapter):
    """Each chapter's claims with a figure: the ones whose words or source call it the book's are the book's."""
    import importlib

    claims = importlib.import_module(f"robustnb.chapters.{chapter}").PAPER_CLAIMS
    for cid, pc in claims.items():
        if pc.paper_value is None:
            continue
        books = "the book's" in pc.paper.lower() or pc.source.lower().startswith("this book") or pc.addition
        assert (ledger.figure_owner(pc.paper, pc.source, pc.role) == "book") == books, cid


def test_forest_panels_per_unit():
    rows = pd.DataFrame(ledger.ledger_rows(chapter_table(), entropy_attacks.PAPER_CLAIMS))
    rows.loc[0, "unit"] = " bytes"
    fig = ledger.forest_figure(rows)
    titles = {fig.layout[a].title.text for a in fig.layout if a.startswith("xaxis")}
    assert any("bytes" in (t or "") for t in titles) and any("points" in (t or "") for t in titles)


def test_plots_forest_refuses_repeated_labels():
    df = pd.DataFrame({"y": ["a", "a"], "x": [1.0, 2.0], "lo": [0.0, 1.0], "hi": [2.0, 3.0]})
    with pytest.raises(ValueError, match="unique"):
        plots.forest(df, y="y", x="x", low="lo", high="hi")
    with pytest.raises(ValueError, match="not in the frame"):
        plots.forest(df.assign(y=["a", "b"]), y="y", x="nope", low="lo", high="hi")


def test_verdict_colours_cover_every_verdict_and_style_the_cells():
    assert list(ledger.VERDICT_COLOURS) == list(VERDICTS)
    css = ledger.stylesheet()
    for v, c in ledger.VERDICT_COLOURS.items():
        cls = ledger.css_class(v).split()[-1]
        assert f".{cls} " in css and c in css


def test_summary_report_reads_the_build(tmp_path):
    rows = ledger.ledger_rows(chapter_table(), entropy_attacks.PAPER_CLAIMS)
    glued_store(tmp_path / "jupyter_execute", rows, "book/entropy_attacks")
    text = book.summary_report(tmp_path)
    paper = next(c for c, files in book.toc_parts() if "book/entropy_attacks" in files)
    header = next(ln for ln in text.splitlines() if ln.strip().startswith("paper"))
    line = next(ln for ln in text.splitlines() if ln.strip().startswith(paper.split()[0]))
    assert "primary" in header and "hold after Holm" in header
    primary = [r for r in rows if r["role"] == "primary"]
    counts = [int(t) for t in line.split()[-(len(VERDICTS) + 3):]]  # primary, verdicts, hold after Holm, not counted
    assert counts[0] == len(primary)
    assert counts[1:1 + len(VERDICTS)] == [sum(r["verdict"] == v for r in primary) for v in VERDICTS]
    assert "build the book first" in book.summary_report(tmp_path / "empty")


def test_the_build_reads_chapters_in_book_order(tmp_path):
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nparts:\n  - caption: A\n    chapters:\n      - file: book/zeta\n"
        "      - file: book/alpha\n  - caption: B\n    chapters:\n      - file: book/mid\n")
    docnames = sorted(["book/alpha", "book/intro", "book/mid", "book/zeta", "extra"])  # as Sphinx hands them
    book.sphinx_ext._read_in_book_order(SimpleNamespace(srcdir=str(tmp_path)), None, docnames)
    assert docnames == ["book/intro", "book/zeta", "book/alpha", "book/mid", "extra"]
    assert book.toc_parts(tmp_path) == [("A", ["book/zeta", "book/alpha"]), ("B", ["book/mid"])]


def test_the_extension_connects_book_order_and_offline_assets():
    events = {}

    class App:
        def connect(self, event, fn):
            events.setdefault(event, []).append(fn)

        def add_directive(self, name, cls):
            events.setdefault("directive", []).append(name)

    book.setup(App())
    assert book.sphinx_ext._read_in_book_order in events["env-before-read-docs"]
    assert book.sphinx_ext._serve_widget_js in events["config-inited"]
    assert book.sphinx_ext._execution_timeout in events["config-inited"]
    assert {"claims-summary", "claims-forest"} <= set(events["directive"])


def test_plotly_mathjax_cdn_is_dropped_from_outputs():
    from docutils import nodes

    html = ('<div>x</div><script src="https://cdnjs.cloudflare.com/ajax/libs/mathjax/3.2.2/es5/tex-svg.min.js">'
            '</script><script>Plotly.newPlot()</script>')
    doc = nodes.document(None, None)
    doc += nodes.raw("", html, format="html")
    book.sphinx_ext._drop_plotly_mathjax(None, doc, "x")
    out = next(iter(doc.findall(nodes.raw))).astext()
    assert "mathjax" not in out and "Plotly.newPlot" in out


def test_repeated_inline_scripts_are_dropped_in_place():
    from sphinx.builders.html._assets import _JavaScript

    scripts = [_JavaScript(None, body="const A = 1"), _JavaScript("x.js"), _JavaScript("", body="const A = 1")]
    context = {"script_files": scripts}
    book.sphinx_ext._dedupe_scripts(None, "p", "page.html", context, None)
    assert context["script_files"] is scripts and len(scripts) == 2


def test_nan_free_numbers():
    assert ledger._number(float("nan")) is None and ledger._number(1) == 1.0 and not math.isnan(ledger._number(0.5))
