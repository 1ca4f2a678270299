"""robustnb.plots: every helper returns a Figure with the expected traces; sliders work statically."""

import itertools

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch

from robustnb import plots as P


@pytest.fixture(scope="module")
def df():
    rows = [
        dict(eps=e, lam=l, model=m, attack=a, acc=max(0.0, 1 - e * l * (1 + i) / 10 - j * 0.1))
        for (i, m), (j, a), e, l in itertools.product(
            enumerate(["resnet", "vgg"]), enumerate(["pgd", "fgsm", "cw"]), [0, 1, 2, 4, 8], [0.01, 0.1, 1.0])
    ]
    return pd.DataFrame(rows)


def test_template_is_default():
    assert "robustnb" in pio.templates
    assert "robustnb" in pio.templates.default
    assert go.Figure().layout.template.layout.hovermode == "x unified"
    assert P.HEIGHT == 420


def test_line_scatter_bar(df):
    sub = df[df.lam == 0.1]
    f = P.line(sub[sub.attack == "pgd"], "eps", "acc", color="model", title="t", labels={"acc": "accuracy"})
    assert isinstance(f, go.Figure) and len(f.data) == 2 and f.layout.title.text == "t"
    assert f.layout.yaxis.title.text == "accuracy" and "markers" in f.data[0].mode
    f = P.line(sub, "eps", "acc", color="model", facet_col="attack")
    assert len(f.data) == 6
    f = P.scatter(sub, "eps", "acc", color="attack", text="model")
    assert len(f.data) == 3 and f.data[0].mode == "markers+text"
    f = P.bar(sub[sub.eps == 4], "model", "acc", color="attack")
    assert len(f.data) == 3 and f.data[0].type == "bar" and f.layout.barmode == "group"


def test_heatmap_pivot_keeps_order(df):
    sub = df[(df.lam == 0.1) & (df.model == "vgg")].iloc[::-1]  # eps 8..0, attacks cw..pgd
    f = P.heatmap(sub, x="eps", y="attack", z="acc", zmin=0, zmax=1)
    z = np.asarray(f.data[0].z)
    assert z.shape == (3, 5)
    assert list(f.data[0].x) == ["8", "4", "2", "1", "0"]
    assert list(f.data[0].y) == ["cw", "fgsm", "pgd"]
    want = sub.set_index(["attack", "eps"]).acc
    assert z[0, 0] == pytest.approx(want["cw", 8]) and z[2, 4] == pytest.approx(want["pgd", 0])
    assert f.data[0].texttemplate


def test_slider_figure_frames_and_select(df):
    f = P.slider_figure(df, "eps", "acc", slider="lam", color="model", select="attack",
                        labels={"lam": "lambda"})
    assert len(f.data) == 6  # 3 attacks x 2 models
    assert len(f.frames) == 3 and [fr.name for fr in f.frames] == ["0.01", "0.1", "1.0"]
    (s_anim,) = f.layout.sliders  # the attack, a name, is picked from a dropdown (a slider would cut its labels)
    (s_sel,) = f.layout.updatemenus
    steps = s_sel.buttons
    assert s_sel.type == "dropdown" and len(s_anim.steps) == 3 and len(steps) == 3
    assert s_anim.currentvalue.prefix.startswith("lambda")
    for st, fr in zip(s_anim.steps, f.frames):
        assert st.method == "animate" and list(st.args[0]) == [fr.name]
        assert st.args[1]["mode"] == "immediate" and st.args[1]["transition"]["duration"] == 0
    attacks = ["pgd", "fgsm", "cw"]
    # trace order: (attack, model); initially only the first attack is visible
    assert [tr.visible for tr in f.data] == [True, True, False, False, False, False]
    for j, st in enumerate(steps):
        assert st.method == "restyle" and st.label == f"attack: {attacks[j]}"
        vis = st.args[0]["visible"]
        assert vis == [k // 2 == j for k in range(6)]
    for fr in f.frames:
        assert list(fr.traces) == list(range(6))
        for tr in fr.data:
            assert tr.visible is None and "visible" not in tr.to_plotly_json()
    # frame k holds the data of lambda k; trace 3 = (fgsm, vgg)
    row = df[(df.lam == 1.0) & (df.attack == "fgsm") & (df.model == "vgg")]
    assert list(f.frames[2].data[3].y) == row.acc.tolist()
    assert list(f.data[3].y) == df[(df.lam == 0.01) & (df.attack == "fgsm") & (df.model == "vgg")].acc.tolist()


def test_slider_figure_fixed_ranges(df):
    f = P.slider_figure(df, "eps", "acc", slider="lam", color="model")
    xr, yr = f.layout.xaxis.range, f.layout.yaxis.range
    assert f.layout.xaxis.autorange is False and f.layout.yaxis.autorange is False
    assert xr[0] < df.eps.min() and xr[1] > df.eps.max()
    assert yr[0] < df.acc.min() and yr[1] > df.acc.max()
    assert len(f.layout.sliders) == 1 and all(tr.visible for tr in f.data)
    for fr in f.frames:  # frames never touch the layout, so nothing jumps
        assert fr.layout.to_plotly_json() == {}


def test_slider_figure_kinds(df):
    b = P.slider_figure(df, "model", "acc", slider="eps", color="attack", kind="bar", play=True)
    assert all(tr.type == "bar" for tr in b.data) and len(b.frames) == 5
    assert b.layout.yaxis.range[0] <= 0 and b.layout.updatemenus
    assert list(b.layout.xaxis.categoryarray) == ["resnet", "vgg"]
    s = P.slider_figure(df, "eps", "acc", slider="lam", kind="scatter")
    assert s.data[0].mode == "markers" and len(s.data) == 1
    with pytest.raises(ValueError):
        P.slider_figure(df, "eps", "acc", slider="lam", kind="pie")


@pytest.mark.parametrize("arg", ["x", "y", "slider", "color", "select"])
def test_slider_figure_missing_column(df, arg):
    kw = dict(x="eps", y="acc", slider="lam", color="model", select="attack")
    kw[arg] = "nope"
    with pytest.raises(ValueError, match="nope") as e:
        P.slider_figure(df, **kw)
    assert "attack" in str(e.value)  # lists the available columns


def test_missing_column_in_simple_helpers(df):
    with pytest.raises(ValueError, match="nope"):
        P.line(df, "eps", "nope")
    with pytest.raises(ValueError, match="nope"):
        P.heatmap(df, "eps", "nope", "acc")


def test_image_grid_layouts():
    rng = np.random.default_rng(0)
    nchw = rng.random((5, 3, 8, 8))
    f = P.image_grid(nchw, titles=list("abcde"), cols=3, title="g")
    assert len(f.data) == 5 and all(tr.type == "image" for tr in f.data)
    assert sorted(a.text for a in f.layout.annotations) == list("abcde")
    assert f.layout.xaxis.visible is False
    g = P.image_grid(np.moveaxis(nchw, 1, -1))
    assert len(g.data) == 5 and {a.text for a in g.layout.annotations} == {""}
    assert g.data[0].source == f.data[0].source  # same pixels from both layouts
    torch = pytest.importorskip("torch")
    h = P.image_grid(torch.rand(4, 1, 8, 8))  # grayscale tensor
    assert len(h.data) == 4
    with pytest.raises(ValueError):
        P.image_grid(np.zeros((2, 5, 8, 8)))


def test_image_slider():
    imgs = np.random.default_rng(1).random((4, 3, 3, 8, 8))
    f = P.image_slider(imgs, [0, 2, 4, 8], titles=["clean", "perturbation", "adversarial"])
    assert len(f.data) == 3 and len(f.frames) == 4
    assert [a.text for a in f.layout.annotations] == ["clean", "perturbation", "adversarial"]
    (sl,) = f.layout.sliders
    assert [st.label for st in sl.steps] == ["0", "2", "4", "8"] and sl.currentvalue.prefix == "epsilon = "
    assert f.frames[0].data[1].source == f.data[1].source != f.frames[3].data[1].source
    with pytest.raises(ValueError):
        P.image_slider(imgs, [0, 1])


def test_renderer_chosen_for_a_plain_kernel_inlines_no_plotly_js(monkeypatch):
    import plotly.graph_objects as go
    import plotly.io as pio

    monkeypatch.delenv("PLOTLY_RENDERER", raising=False)
    old = pio.renderers.default
    try:
        pio.renderers.default = "plotly_mimetype"
        assert P.choose_renderer() == "plotly_mimetype+robustnb_page"
        bundle = pio.renderers._build_mime_bundle(go.Figure(go.Scatter(y=[1, 2])).to_dict())
        html = bundle["text/html"]
        assert "application/vnd.plotly.v1+json" in bundle and "plotly-graph-div" in html and "Plotly.newPlot" in html
        assert len(html) < 20_000 and "cdnjs" not in html  # no library, no MathJax from a CDN
        pio.renderers.default = "vscode"  # plotly's own choice for a known front end stays
        assert P.choose_renderer() == "vscode"
        monkeypatch.setenv("PLOTLY_RENDERER", "plotly_mimetype")  # and so does the user's
        pio.renderers.default = "plotly_mimetype"
        assert P.choose_renderer() == "plotly_mimetype"
    finally:
        pio.renderers.default = old


def test_attack_panel_shows_the_clean_image_its_perturbation_and_its_attacked_copy():
    """At epsilon 0 (adv = x) the perturbation panel is uniform grey and the clean and adversarial panels are
    equal; a clean image and an attacked copy of another shape are refused."""
    torch.manual_seed(0)
    x = torch.rand(3, 16, 16)
    maps = torch.rand(2, 4, 4)
    fig = P.attack_panel(x, x.clone(), maps, 100, 100)
    titles = [a.text for a in fig.layout.annotations]
    assert titles[:3] == ["clean image", "perturbation x4", "adversarial image"]
    clean, delta, adv = (np.asarray(fig.data[i].z) for i in range(3))
    assert (clean == adv).all() and (delta == 128).all()
    moved = P.attack_panel(x, (x + 4 / 255).clamp(0, 1), maps, 100, 120)
    assert not (np.asarray(moved.data[1].z) == 128).all()
    with pytest.raises(ValueError, match="same shape"):
        P.attack_panel(x, torch.rand(3, 8, 8), maps, 1, 1)


def test_forest_draws_only_rows_with_a_point_and_its_interval():
    """A row without its interval (or without a point) is not drawn as a zero: it is listed under the plot."""
    df = pd.DataFrame({"y": ["a", "b", "c", "d"], "x": [1.0, 0.0, float("nan"), 2.0],
                       "lo": [0.5, float("nan"), float("nan"), 1.0], "hi": [1.5, float("nan"), float("nan"), 3.0],
                       "ref": [2.0, 1.0, 1.0, float("nan")], "whose": ["paper", "book", "book", None],
                       "id": ["A", "B", "C", "D"]})
    fig = P.forest(df, y="y", x="x", low="lo", high="hi", marker="ref", marker_group="whose",
                       marker_symbols={"book": "square-open"}, ids="id", missing_title="no estimate")
    drawn = [(t.name, list(t.y)) for t in fig.data]
    assert all(set(ys) <= {"a", "d"} for _, ys in drawn)  # b (no interval) and c (no point) are not drawn
    assert sorted(v for t in fig.data if t.name == "x" for v in t.x) == [1.0, 2.0]
    assert [t.name for t in fig.data if t.name in ("paper", "book")] == ["paper"]  # b's figure goes with b
    assert list(fig.layout.yaxis.categoryarray) == ["a", "d"]
    [listed] = [a for a in fig.layout.annotations if a.name == "not drawn"]
    assert "no estimate (2)" in listed.text and "○ b" in listed.text and "○ c" in listed.text
    assert "○ a" not in listed.text
    nothing = P.forest(df.iloc[1:3], y="y", x="x", low="lo", high="hi")
    assert not any(len([v for v in t.x if v is not None]) for t in nothing.data)
    assert nothing.layout.xaxis.visible is False and len(nothing.layout.annotations) == 1
    assert P._one_line("a " * 80 + "N = 3", width=40).endswith("N = 3")


# -------------------------------------------------------------------------- legible in the page column
def _axis_titles(fig) -> dict:
    return {name: fig.layout[name].title.text for name in fig.layout
            if name.startswith(("xaxis", "yaxis")) and fig.layout[name].title.text}


def test_raw_column_names_get_readable_titles(df):
    """A snake_case column with no label is spelled out; the book's columns carry words and units; a label wins."""
    d = df.rename(columns={"acc": "power_share", "eps": "eps_255"})
    for fn in (P.line, P.scatter, P.bar):
        f = fn(d[(d.lam == 0.1) & (d.attack == "pgd")], "eps_255", "power_share", color="model")
        assert f.layout.xaxis.title.text == "epsilon (x/255)"
        assert f.layout.yaxis.title.text == "share of the signal power"
    f = P.line(d.rename(columns={"power_share": "bits_per_pixel"}), "eps_255", "bits_per_pixel", color="model",
               labels={"eps_255": "budget"})
    assert f.layout.yaxis.title.text == "bits per pixel" and f.layout.xaxis.title.text == "budget"
    assert "_" not in f.layout.legend.title.text + "".join(_axis_titles(f).values())
    h = P.heatmap(d, x="eps_255", y="attack", z="power_share")
    assert h.layout.xaxis.title.text == "epsilon (x/255)" and "_" not in h.layout.coloraxis.colorbar.title.text
    assert P.title_of("robust_acc_cc") == "robust accuracy (clean-correct)" and P.title_of("a_b") == "a b"


def test_melted_frame_is_titled_by_its_variables(df):
    m = df[df.lam == 0.1].rename(columns={"acc": "share"}).assign(power_share=lambda d: 1 - d.share)
    m = m.melt(id_vars=["eps", "attack", "model"], value_vars=["share", "power_share"])
    f = P.bar(m[m.model == "vgg"], x="eps", y="value", color="variable", facet_col="attack")
    assert f.layout.yaxis.title.text == "share of the rate / share of the signal power"
    assert {t.name for t in f.data} == {"share of the rate", "share of the signal power"}
    assert f.layout.legend.title.text == "quantity"


def test_facet_titles_short_wrapped_and_at_most_three_a_row(df):
    d = pd.concat([df.assign(attack=df.attack + suffix) for suffix in ("", " with a long descriptive name")])
    f = P.line(d[d.lam == 0.1], "eps", "acc", color="model", facet_col="attack")
    titles = [a.text for a in f.layout.annotations]
    assert len(titles) == 6 and not any("=" in t for t in titles)
    assert "pgd" in titles and any("<br>" in t for t in titles)  # the long ones wrapped
    assert all(len(line) <= P.PAGE_WIDTH / 3 / 7 for t in titles for line in t.split("<br>"))
    assert all(a.font.size <= 12 for a in f.layout.annotations)
    columns = {round(a.x, 3) for a in f.layout.annotations}
    assert len(columns) == 3 and f.layout.height > P.HEIGHT  # two rows of three, and taller
    n = P.line(df[df.attack == "pgd"], "eps", "acc", facet_col="lam")  # a number keeps its column's name
    assert sorted(a.text for a in n.layout.annotations) == ["lambda = 0.01", "lambda = 0.1", "lambda = 1.0"]


def _vertical_legend_entries(fig) -> int:
    if fig.layout.legend.orientation == "h" or fig.layout.showlegend is False:
        return 0
    return len(P._legend_entries(fig))


def test_no_long_vertical_legend_beside_the_plot():
    """Figures with 32 colours (or 8 x 4 colour/symbol pairs) put no legend of more than 10 entries in a column
    beside the plot; a colour x symbol legend becomes two short keys, one per colour and one per symbol."""
    rng = np.random.default_rng(0)
    d = pd.DataFrame([dict(x=float(x), y=float(rng.random()), model=f"model {m}", kind=f"k{k}", pair=f"m{m}k{k}")
                      for m in range(8) for k in range(4) for x in range(1, 6)])
    figs = [P.line(d, "x", "y", color="pair"), P.scatter(d, "x", "y", color="pair"),
            P.bar(d[d.x == 1], "kind", "y", color="pair"),
            P.slider_figure(d, "kind", "y", slider="x", color="pair", kind="bar"),
            P.scatter(d, "x", "y", color="model", symbol="kind"), P.line(d, "x", "y", color="model", line_dash="kind")]
    for f in figs:
        assert _vertical_legend_entries(f) <= 10
    many = figs[0]
    assert many.layout.legend.orientation == "h" and many.layout.height > P.HEIGHT
    split = figs[4]
    shown = [t for t in split.data if t.showlegend]
    assert [t.name for t in shown] == [f"model {m}" for m in range(8)] + [f"k{k}" for k in range(4)]
    assert all(list(t.x) == [None] for t in shown)  # keys only: the data traces are untouched
    data = [t for t in split.data if not t.showlegend]
    assert len(data) == 32 and sum(len(t.x) for t in data) == len(d)
    assert len({t.marker.symbol for t in shown[8:]}) == 4
    few = P.line(d[d.model == "model 0"], "x", "y", color="kind")
    assert few.layout.legend.orientation is None  # four entries stay beside the plot


def test_categorical_select_is_a_dropdown_numeric_a_slider(df):
    """A name (a model) is picked from a dropdown that restyles the traces; a number (lambda) stays a slider."""
    f = P.slider_figure(df, "eps", "acc", slider="lam", color="attack", select="model", labels={"model": "network"})
    (menu,) = f.layout.updatemenus
    assert menu.type == "dropdown" and len(f.layout.sliders) == 1
    assert [b.label for b in menu.buttons] == ["network: resnet", "network: vgg"]
    assert [b.args[0]["visible"] for b in menu.buttons] == [[True] * 3 + [False] * 3, [False] * 3 + [True] * 3]
    assert [t.visible for t in f.data] == [True] * 3 + [False] * 3
    g = P.slider_figure(df, "eps", "acc", slider="model", color="attack", select="lam", play=True)
    assert [s.steps[0].method for s in g.layout.sliders] == ["animate", "restyle"]
    assert [m.type for m in g.layout.updatemenus] == ["buttons"]  # the play button, no dropdown


def test_log_axes_have_few_ticks(df):
    assert P.log_ticks(1, 20, 8) == [1, 2, 5, 10, 20]
    assert P.log_ticks(1e-6, 1e2, 5) == [1e-6, 1e-4, 1e-2, 1.0, 1e2]
    for lo, hi, most in [(0.003, 700, 4), (1e-9, 1e9, 6), (0.02, 0.5, 2)]:
        t = P.log_ticks(lo, hi, most)
        assert 2 <= len(t) <= most and all(lo / 1.001 <= v <= hi * 1.001 for v in t)
    assert P.log_ticks(1, 1.5, 3) == []  # inside one step: plotly's own ticks
    d = df[df.lam == 0.1].assign(ratio=lambda x: 1.5 ** x.eps)
    f = P.scatter(d, "ratio", "acc", color="model", facet_col="attack", log_x=True)
    axes = [f.layout[a] for a in f.layout if a.startswith("xaxis")]
    assert len(axes) == 3 and all(a.type == "log" and 2 <= len(a.tickvals) <= 4 for a in axes)
    assert list(axes[0].ticktext) == ["1", "3", "10"]  # three ticks in a third of the page column
    s = P.slider_figure(d, "ratio", "acc", slider="attack", color="model", log_x=True)
    assert s.layout.xaxis.type == "log" and len(s.layout.xaxis.tickvals) <= 11
