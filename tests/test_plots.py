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


def test_table(df):
    small, big = P.table(df.head(3), title="x"), P.table(df.head(20))
    assert isinstance(small.data[0], go.Table)
    assert list(small.data[0].cells.values[-1]) == ["1", "1", "1"]
    assert list(small.data[0].header.values)[0] == "<b>eps</b>"
    assert small.layout.height < big.layout.height


def test_slider_figure_frames_and_select(df):
    f = P.slider_figure(df, "eps", "acc", slider="lam", color="model", select="attack",
                        labels={"lam": "lambda"})
    assert len(f.data) == 6  # 3 attacks x 2 models
    assert len(f.frames) == 3 and [fr.name for fr in f.frames] == ["0.01", "0.1", "1.0"]
    s_anim, s_sel = f.layout.sliders
    assert len(s_anim.steps) == 3 and len(s_sel.steps) == 3
    assert s_anim.currentvalue.prefix.startswith("lambda")
    for st, fr in zip(s_anim.steps, f.frames):
        assert st.method == "animate" and list(st.args[0]) == [fr.name]
        assert st.args[1]["mode"] == "immediate" and st.args[1]["transition"]["duration"] == 0
    attacks = ["pgd", "fgsm", "cw"]
    # trace order: (attack, model); initially only the first attack is visible
    assert [tr.visible for tr in f.data] == [True, True, False, False, False, False]
    for j, st in enumerate(s_sel.steps):
        assert st.method == "restyle" and st.label == attacks[j]
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
