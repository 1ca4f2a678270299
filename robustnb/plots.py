"""One plotly style for the whole book, and small figure helpers.

Every helper only *reads* a tidy :class:`pandas.DataFrame` (one row per
measurement, one column per variable) or an image array, and returns a
:class:`plotly.graph_objects.Figure`. Importing this module registers the
``"robustnb"`` template and makes ``"plotly_white+robustnb"`` the default.

:func:`slider_figure` and :func:`image_slider` build figures whose sliders work
in a static HTML page (no Python kernel): everything is precomputed as plotly
frames and ``restyle`` steps. When saving one yourself, use
``fig.write_html(path, auto_play=False)``: ``write_html`` plays all frames on load by
default (notebook renderers do not), which would leave the data out of step with the slider.
"""

from __future__ import annotations

import base64
import io
import itertools
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import plotly.colors as pc
import plotly.express as px
import plotly.graph_objects as go
import plotly.io as pio
from plotly.io._base_renderers import MimetypeRenderer
from PIL import Image
from plotly.subplots import make_subplots

__all__ = [
    "PALETTE", "HEIGHT", "line", "scatter", "bar", "heatmap", "table", "forest",
    "slider_figure", "image_grid", "image_slider", "colorize", "attack_panel",
]

#: Qualitative palette (Okabe-Ito, colour-blind safe), then plotly's Safe palette.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9",
           "#F0E442", "#000000"] + list(px.colors.qualitative.Safe)
HEIGHT = 420
_HEADER = "#2a3f5f"

pio.templates["robustnb"] = go.layout.Template(
    layout=dict(
        colorway=PALETTE,
        font=dict(family="Inter, Helvetica, Arial, sans-serif", size=14, color="#222"),
        title=dict(font=dict(size=18), x=0.02, xanchor="left"),
        legend=dict(font=dict(size=13), title=dict(font=dict(size=13))),
        hovermode="x unified",
        height=HEIGHT,
        margin=dict(l=60, r=20, t=60, b=50),
        xaxis=dict(title=dict(font=dict(size=14)), automargin=True),
        yaxis=dict(title=dict(font=dict(size=14)), automargin=True),
        colorscale=dict(sequential="Viridis"),
    )
)
pio.templates.default = "plotly_white+robustnb"


class PageRenderer(MimetypeRenderer):
    """plotly renderer ``"robustnb_page"``: a figure's HTML *without* plotly.js (a ``plotly-graph-div`` and the
    ``Plotly.newPlot`` call, no MathJax from a CDN). The book's pages load plotly.js once, from the book's own
    ``_static/`` (``robustnb.book.sphinx_ext``), instead of the 4.8 MB library inlined in every page (twice where
    an explorer re-initialised it) and in every stored notebook."""

    def __init__(self, config: dict | None = None):
        self.config = dict(config or {})

    def to_mimebundle(self, fig_dict) -> dict:
        return {"text/html": pio.to_html(fig_dict, config=self.config, include_plotlyjs=False, include_mathjax=False,
                                         full_html=False, default_width="100%", default_height=525,
                                         validate=False)}


pio.renderers["robustnb_page"] = PageRenderer()


def choose_renderer() -> str:
    """Pick plotly's renderer for a plain Jupyter kernel so that no environment variable is needed.

    Plotly 7 gives a Jupyter kernel the ``plotly_mimetype`` renderer: JupyterLab draws it, but the static
    book (myst-nb, nbconvert) drops such outputs, and readers running ``papermill`` or
    ``jupyter-book build .`` saw figures vanish. ``plotly_mimetype+robustnb_page`` sends the same figure both
    ways: the mime bundle for JupyterLab, VS Code and Colab, and HTML without plotly.js (:class:`PageRenderer`)
    for the book's pages, which load plotly.js once from the book's static files (offline). A
    ``PLOTLY_RENDERER`` the user set, and the renderers plotly picks for Colab, VS Code, Kaggle ..., are left
    alone. Returns the renderer in use.
    """
    if not os.environ.get("PLOTLY_RENDERER") and pio.renderers.default == "plotly_mimetype":
        pio.renderers.default = "plotly_mimetype+robustnb_page"
    return pio.renderers.default


choose_renderer()


# ----------------------------------------------------------------- helpers
def _check(df: pd.DataFrame, *cols) -> None:
    """Raise ValueError naming the first column of ``cols`` missing from ``df``."""
    for c in cols:
        if c is not None and c not in df.columns:
            raise ValueError(f"column {c!r} not in the frame; available columns: {list(df.columns)}")


def _fmt(v) -> str:
    """Short label for a slider / select value: 0.03137 -> '0.0314', 3.0 -> '3'."""
    if isinstance(v, (float, np.floating)):
        return f"{v:.3g}"
    return str(v)


def _titled(fig: go.Figure, title) -> go.Figure:
    if title is not None:
        fig.update_layout(title_text=title)
    return fig


def _px(fn, df, cols, title, labels, **kw) -> go.Figure:
    _check(df, *cols)
    return _titled(fn(df, labels=labels or {}, **kw), title)


# ------------------------------------------------------------ basic plots
def line(df, x, y, color=None, facet_col=None, line_dash=None, markers=True, log_x=False,
         error_y=None, title=None, labels=None, **kw) -> go.Figure:
    """Line plot of a tidy frame (thin wrapper on ``px.line``).

    Example: ``line(df, x="epsilon", y="accuracy", color="model")``
    """
    return _px(px.line, df, (x, y, color, facet_col, line_dash, error_y), title, labels, x=x, y=y,
               color=color, facet_col=facet_col, line_dash=line_dash, markers=markers,
               log_x=log_x, error_y=error_y, **kw)


def scatter(df, x, y, color=None, symbol=None, size=None, text=None, title=None, labels=None,
            **kw) -> go.Figure:
    """Scatter plot of a tidy frame (thin wrapper on ``px.scatter``).

    Example: ``scatter(df, x="size_mb", y="robust_acc", color="method", text="model")``
    """
    fig = _px(px.scatter, df, (x, y, color, symbol, size, text), title, labels, x=x, y=y,
              color=color, symbol=symbol, size=size, text=text, **kw)
    if text is not None:
        fig.update_traces(textposition="top center")
    return fig.update_layout(hovermode="closest")


def bar(df, x, y, color=None, barmode="group", title=None, labels=None, **kw) -> go.Figure:
    """Bar chart of a tidy frame (thin wrapper on ``px.bar``).

    Example: ``bar(df, x="attack", y="success_rate", color="defense")``
    """
    return _px(px.bar, df, (x, y, color), title, labels, x=x, y=y, color=color,
               barmode=barmode, **kw)


def _pivot(df, x, y, z) -> pd.DataFrame:
    """Tidy -> matrix (index y, columns x), keeping first-appearance order; duplicates averaged."""
    _check(df, x, y, z)
    m = df.groupby([y, x], sort=False)[z].mean().unstack(x)
    return m.reindex(index=pd.unique(df[y]), columns=pd.unique(df[x]))


def heatmap(df, x, y, z, zmin=None, zmax=None, text_auto=".2f", colorscale=None, title=None,
            labels=None) -> go.Figure:
    """Annotated heatmap of a tidy frame: rows are ``y`` values, columns ``x`` values.

    Example: ``heatmap(df, x="target_model", y="source_model", z="transfer_rate")``
    """
    m = _pivot(df, x, y, z)
    m.index = [str(v) for v in m.index]  # categorical axes, in the order of appearance
    m.columns = [str(v) for v in m.columns]
    labels = labels or {}
    lab = {"x": labels.get(x, x), "y": labels.get(y, y), "color": labels.get(z, z)}
    fig = px.imshow(m, zmin=zmin, zmax=zmax, text_auto=text_auto, aspect="auto", labels=lab,
                    color_continuous_scale=colorscale)
    fig.update_xaxes(type="category", side="bottom").update_yaxes(type="category")
    return _titled(fig.update_layout(hovermode="closest"), title)


def table(df, float_format="{:.3g}", title=None) -> go.Figure:
    """A styled ``go.Table`` of a (small) frame; height follows the number of rows.

    Example: ``table(results.round(3), title="Accuracy under attack")``
    """
    cells = []
    for c in df.columns:
        col = df[c]
        if pd.api.types.is_float_dtype(col):
            cells.append([float_format.format(v) if pd.notna(v) else "" for v in col])
        else:
            cells.append([str(v) for v in col])
    n = len(df)
    fills = [["#f4f6fa" if i % 2 else "white" for i in range(n)]] * len(df.columns)
    fig = go.Figure(go.Table(
        header=dict(values=[f"<b>{c}</b>" for c in df.columns], fill_color=_HEADER,
                    font=dict(color="white", size=14), align="left", height=30),
        cells=dict(values=cells, fill_color=fills, align="left", height=26,
                   font=dict(size=13), line_color="#dde1e8"),
    ))
    top = 50 if title else 10
    fig.update_layout(height=min(top + 40 + 26 * n + 20, 900), margin=dict(l=10, r=10, t=top, b=10))
    return _titled(fig, title)


def forest(df, y, x, low, high, color=None, color_map=None, marker=None, marker_name="reference", hover=None,
           facet=None, reference=0.0, ids=None, title=None) -> go.Figure:
    """Forest plot of a tidy frame: one row per estimate (``y``, top to bottom in frame order), the point ``x``
    with its interval [``low``, ``high``] as a horizontal error bar, coloured by ``color`` (``color_map``: value ->
    colour, also the legend's order); ``marker``: a second value per row drawn as an open diamond (a reference
    figure; NaN: none); ``hover``: a column of hover text; ``facet``: one panel per value, each with its own x
    axis titled by the value (for estimates in different units); ``reference``: a dotted vertical line (no
    effect; None: none); ``ids``: a column naming each point (plotly's trace ``ids``). Rows without a point keep
    their label.

    Example: ``forest(df, y="claim", x="ours", low="low", high="high", color="verdict", marker="paper")``
    """
    _check(df, y, x, low, high, color, marker, hover, facet, ids)
    if df[y].duplicated().any():
        raise ValueError(f"column {y!r} labels the rows and must be unique; repeated: "
                         f"{sorted(set(df.loc[df[y].duplicated(), y]))}")
    panels = list(pd.unique(df[facet])) if facet else [None]
    sizes = [int((df[facet] == f).sum()) if facet else len(df) for f in panels]
    fig = make_subplots(rows=len(panels), cols=1, row_heights=sizes, vertical_spacing=0.32 / max(len(panels), 1) ** 0.5
                        if len(panels) > 1 else 0.0)
    groups = list(color_map) if color_map else (list(pd.unique(df[color])) if color else [None])
    seen = set()
    for r, f in enumerate(panels, start=1):
        sub = df[df[facet] == f] if facet else df
        # every row keeps its label, measured or not (an invisible point per row)
        fig.add_trace(go.Scatter(x=[reference or 0.0] * len(sub), y=sub[y], mode="markers", showlegend=False,
                                 marker=dict(opacity=0), hoverinfo="skip", name="rows"), row=r, col=1)
        for g in groups:
            part = sub[sub[color] == g] if color else sub
            part = part[pd.notna(part[x])]
            if not len(part):
                continue
            v, lo, hi = (part[c].to_numpy(float) for c in (x, low, high))
            colour = (color_map or {}).get(g) or PALETTE[groups.index(g) % len(PALETTE)]
            fig.add_trace(go.Scatter(
                x=v, y=part[y], mode="markers", name=str(g) if g is not None else x, legendgroup=str(g),
                showlegend=g not in seen, marker=dict(color=colour, size=10, line=dict(color="white", width=1)),
                error_x=dict(type="data", symmetric=False, array=np.nan_to_num(hi - v), arrayminus=np.nan_to_num(v - lo),
                             color=colour, thickness=2, width=4),
                hovertext=part[hover] if hover else None, hoverinfo="text" if hover else "x+y",
                ids=list(part[ids].astype(str)) if ids else None), row=r, col=1)
            seen.add(g)
        if marker:
            ref = sub[pd.notna(sub[marker])]
            if len(ref):
                fig.add_trace(go.Scatter(
                    x=ref[marker], y=ref[y], mode="markers", name=marker_name, legendgroup=marker_name,
                    showlegend=marker_name not in seen, hoverinfo="text",
                    hovertext=ref[hover] if hover else ref[marker].map(_fmt),
                    marker=dict(symbol="diamond-open", size=12, color="#222", line=dict(width=2))), row=r, col=1)
                seen.add(marker_name)
        fig.update_yaxes(type="category", categoryorder="array", categoryarray=list(sub[y]), autorange="reversed",
                         row=r, col=1)
        if reference is not None:
            fig.add_vline(x=reference, line=dict(color="#888", dash="dot", width=1), row=r, col=1)
        if facet:
            fig.update_xaxes(title_text=str(f), row=r, col=1)
    fig.update_layout(height=140 + 44 * len(df) + 60 * (len(panels) - 1), hovermode="closest",
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0, title=None))
    return _titled(fig, title)


# ---------------------------------------------------------- slider figure
def _range(values, log=False, pad=0.05, include_zero=False):
    """[lo, hi] covering numeric ``values`` with a margin (log10 units when ``log``)."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna().to_numpy(float)
    if log:
        v = np.log10(v[v > 0])
    if include_zero:
        v = np.append(v, 0.0)
    if v.size == 0:
        return None
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo if hi > lo else (abs(hi) or 1.0)
    return [lo - pad * span, hi + pad * span]


@dataclass(frozen=True)
class _SliderData:
    """What :func:`slider_figure` draws: the frame, its columns, and the values of the slider, the selector and
    the colour in order of first appearance; one trace per (selector value, colour value)."""
    df: pd.DataFrame
    x: str
    y: str
    slider: str
    color: str | None
    select: str | None
    kind: str
    error_y: str | None

    @property
    def steps(self) -> list:
        return list(pd.unique(self.df[self.slider]))

    @property
    def selected(self) -> list:
        return list(pd.unique(self.df[self.select])) if self.select is not None else [None]

    @property
    def colours(self) -> list:
        return list(pd.unique(self.df[self.color])) if self.color is not None else [None]

    @property
    def groups(self) -> list[tuple]:
        return list(itertools.product(self.selected, self.colours))

    def trace(self, step, sel, col):
        """The trace of one (selector, colour) group at one slider value."""
        m = self.df[self.slider] == step
        if self.select is not None:
            m &= self.df[self.select] == sel
        if self.color is not None:
            m &= self.df[self.color] == col
        d = self.df[m]
        kw = dict(x=d[self.x].tolist(), y=d[self.y].tolist())
        if self.error_y is not None:
            kw["error_y"] = dict(type="data", array=d[self.error_y].tolist(), visible=True)
        return go.Bar(**kw) if self.kind == "bar" else go.Scatter(**kw)


def _slider_traces(sd: _SliderData, labels: dict) -> go.Figure:
    """The figure at the first slider value (the first selector value visible) and one frame per slider value."""
    mode = {"line": "lines+markers", "scatter": "markers"}.get(sd.kind)
    fig = go.Figure()
    colours, first = sd.colours, sd.selected[0]
    for sel, col in sd.groups:
        tr = sd.trace(sd.steps[0], sel, col)
        c = PALETTE[colours.index(col) % len(PALETTE)]
        name = _fmt(col) if sd.color is not None else labels.get(sd.y, sd.y)
        tr.update(name=name, legendgroup=name, showlegend=sd.color is not None, visible=bool(sel == first))
        if sd.kind == "bar":
            tr.update(marker_color=c)
        else:
            tr.update(mode=mode, line=dict(color=c), marker=dict(color=c, size=7))
        fig.add_trace(tr)
    idx = list(range(len(sd.groups)))
    fig.frames = [go.Frame(name=str(s), traces=idx, data=[sd.trace(s, sel, col) for sel, col in sd.groups])
                  for s in sd.steps]
    return fig


def _fixed_axes(fig: go.Figure, sd: _SliderData, log_x: bool) -> None:
    """Axis ranges computed from the whole frame, so they stay put while the sliders move."""
    df = sd.df
    yv = df[sd.y]
    if sd.error_y is not None:
        yv = pd.concat([df[sd.y] - df[sd.error_y], df[sd.y] + df[sd.error_y]])
    yr = _range(yv, include_zero=sd.kind == "bar")
    if pd.api.types.is_numeric_dtype(df[sd.x]):
        fig.update_xaxes(range=_range(df[sd.x], log=log_x), autorange=False, type="log" if log_x else "linear")
    else:
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=[str(v) for v in pd.unique(df[sd.x])])
    if yr is not None:
        fig.update_yaxes(range=yr, autorange=False)


def _slider_controls(fig: go.Figure, sd: _SliderData, labels: dict, slider_label, select_label, play: bool,
                     title, height) -> None:
    """The sliders (an ``animate`` one over the frames, a ``restyle`` one over the selector), stacked under the
    plot, and the play button."""
    n_sl = 1 + (sd.select is not None)
    height = height or HEIGHT + 85 * n_sl
    t, b = (60 if title else 30), 70 + 85 * n_sl
    plot_h = height - t - b

    def place(k):  # k-th slider below the x-axis title, in paper units
        return -(70 + 85 * k) / plot_h

    anim = dict(frame=dict(duration=0, redraw=sd.kind == "bar"), mode="immediate", transition=dict(duration=0))
    s_label = slider_label or labels.get(sd.slider, sd.slider)
    sliders = [dict(
        active=0, x=0.1 if play else 0.0, len=0.9 if play else 1.0, y=place(0), yanchor="top",
        pad=dict(t=0, b=0), currentvalue=dict(prefix=f"{s_label} = ", font=dict(size=14)),
        steps=[dict(method="animate", label=_fmt(s), args=[[str(s)], anim]) for s in sd.steps],
    )]
    if sd.select is not None:
        sel_label = select_label or labels.get(sd.select, sd.select)
        groups = sd.groups
        sliders.append(dict(
            active=0, x=0.0, len=1.0, y=place(1), yanchor="top", pad=dict(t=0, b=0),
            currentvalue=dict(prefix=f"{sel_label} = ", font=dict(size=14)),
            steps=[dict(method="restyle", label=_fmt(sv), args=[{"visible": [bool(g[0] == sv) for g in groups]}])
                   for sv in sd.selected],
        ))
    fig.update_layout(
        sliders=sliders, height=height, margin=dict(t=t, b=b),
        xaxis_title=labels.get(sd.x, sd.x), yaxis_title=labels.get(sd.y, sd.y),
        legend_title_text=labels.get(sd.color, sd.color) if sd.color is not None else None,
        barmode="group" if sd.kind == "bar" else None,
    )
    if play:
        fig.update_layout(updatemenus=[dict(
            type="buttons", showactive=False, x=0.0, y=place(0), xanchor="left", yanchor="top",
            pad=dict(t=25, r=10),
            buttons=[dict(label="▶", method="animate",
                          args=[None, {**anim, "frame": dict(duration=700, redraw=sd.kind == "bar"),
                                       "fromcurrent": True}])],
        )])


def slider_figure(df, x, y, slider, color=None, select=None, *, kind="line", slider_label=None,
                  select_label=None, error_y=None, log_x=False, play=False, title=None,
                  labels=None, height=None) -> go.Figure:
    """Figure with sliders that work in a static HTML page (no kernel needed).

    ``slider``: one frame per value (an ``animate`` slider that only swaps trace x/y data).
    ``select``: optional second slider that shows the traces of one value at a time
    (``restyle`` of ``visible``). Traces are one per (select value, color value); values keep
    their order of first appearance; axis ranges are fixed over the whole frame.

    Example: ``slider_figure(df, x="epsilon", y="accuracy", slider="lambda", color="model", select="attack")``
    """
    if kind not in ("line", "scatter", "bar"):
        raise ValueError(f"kind must be 'line', 'scatter' or 'bar', not {kind!r}")
    _check(df, x, y, slider, color, select, error_y)
    labels = labels or {}
    sd = _SliderData(df, x, y, slider, color, select, kind, error_y)
    fig = _slider_traces(sd, labels)
    _fixed_axes(fig, sd, log_x)
    _slider_controls(fig, sd, labels, slider_label, select_label, play, title, height)
    return _titled(fig, title)


# ----------------------------------------------------------------- images
def _as_nhwc(images) -> np.ndarray:
    """Torch/numpy (..., C, H, W) or (..., H, W, C), C in {1, 3}, values in [0, 1] -> uint8 RGB."""
    a = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    a = a.astype(np.float32)
    if a.shape[-1] not in (1, 3) and a.shape[-3] in (1, 3):
        a = np.moveaxis(a, -3, -1)
    if a.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (..., C, H, W) or (..., H, W, C) with C in (1, 3); got {a.shape}")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)


def _png(img: np.ndarray) -> str:

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_grid(images, titles=None, cols=8, title=None) -> go.Figure:
    """Grid of images (N,C,H,W) or (N,H,W,C) in [0, 1], with optional per-image titles.

    Example: ``image_grid(x[:16], titles=[classes[i] for i in y[:16]], cols=8)``
    """
    a = _as_nhwc(images)
    if a.ndim != 4:
        raise ValueError(f"image_grid expects 4-d images (N, ...); got shape {a.shape}")
    n = len(a)
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    fig = px.imshow(a, facet_col=0, facet_col_wrap=cols, binary_string=True,
                    facet_row_spacing=min(0.3 / rows, 0.08), facet_col_spacing=0.01)
    for ann in fig.layout.annotations:
        i = int(ann.text.split("=")[-1])
        ann.text = str(titles[i]) if titles is not None and i < len(titles) else ""
        ann.font = dict(size=12)
    fig.update_xaxes(visible=False).update_yaxes(visible=False)
    fig.update_traces(hoverinfo="skip", hovertemplate=None)
    cell = max(90, 900 // cols)
    top = 50 if title else 20
    fig.update_layout(height=top + 10 + rows * (cell + (20 if titles is not None else 4)),
                      margin=dict(l=5, r=5, t=top, b=5), hovermode=False)
    return _titled(fig, title)


def image_slider(images, slider_values, slider_label="epsilon", titles=None, title=None) -> go.Figure:
    """K images side by side, with a static slider over S settings; images (S, K, C, H, W).

    Example: ``image_slider(np.stack([clean, delta, adv], 1), eps, titles=["clean", "perturbation", "adversarial"])``
    """
    a = _as_nhwc(images)
    if a.ndim != 5:
        raise ValueError(f"image_slider expects 5-d images (S, K, ...); got shape {a.shape}")
    S, K = a.shape[:2]
    if len(slider_values) != S:
        raise ValueError(f"{len(slider_values)} slider values for {S} image rows")
    names = [str(v) for v in slider_values]
    fig = make_subplots(1, K, subplot_titles=[str(t) for t in titles] if titles else None,
                        horizontal_spacing=0.02)
    for k in range(K):
        fig.add_trace(go.Image(source=_png(a[0, k]), hoverinfo="skip"), 1, k + 1)
    fig.frames = [go.Frame(name=names[s], traces=list(range(K)),
                           data=[go.Image(source=_png(a[s, k])) for k in range(K)])
                  for s in range(S)]
    anim = dict(frame=dict(duration=0, redraw=True), mode="immediate", transition=dict(duration=0))
    fig.update_xaxes(visible=False).update_yaxes(visible=False)
    height = 60 + int(900 / K) + 110
    fig.update_layout(
        height=height, hovermode=False, margin=dict(l=5, r=5, t=60 if title else 30, b=100),
        sliders=[dict(active=0, x=0.03, len=0.94, y=0, yanchor="top", pad=dict(t=10),
                      currentvalue=dict(prefix=f"{slider_label} = ", font=dict(size=14)),
                      steps=[dict(method="animate", label=_fmt(v), args=[[nm], anim])
                             for v, nm in zip(slider_values, names)])],
    )
    return _titled(fig, title)


# ------------------------------------------------------------------ maps as pictures
def colorize(maps: torch.Tensor, size=None, colorscale: str = "viridis") -> torch.Tensor:
    """``(N, h, w)`` maps -> ``(N, 3, H, W)`` RGB images in [0, 1] (scaled per map; nearest upsampling to
    ``size``), for ``plots.image_grid``."""
    m = maps.detach().float().cpu()
    lo = m.flatten(1).min(1).values.view(-1, 1, 1)
    hi = m.flatten(1).max(1).values.view(-1, 1, 1)
    m = ((m - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)
    scale = pc.get_colorscale(colorscale)
    lut = torch.tensor([pc.unlabel_rgb(pc.find_intermediate_color(*_between(scale, t), colortype="rgb"))
                        for t in np.linspace(0, 1, 256)], dtype=torch.float32) / 255
    rgb = lut[(m * 255).round().long()].permute(0, 3, 1, 2)
    if size is not None:
        rgb = F.interpolate(rgb, size=tuple(size), mode="nearest")
    return rgb


def _between(scale, t):
    """The two colours of a plotly colorscale around ``t`` and the interpolation weight."""
    for (t0, c0), (t1, c1) in zip(scale[:-1], scale[1:]):
        if t0 <= t <= t1:
            c0, c1 = (pc_rgb(c0), pc_rgb(c1))
            return c0, c1, 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
    return pc_rgb(scale[-1][1]), pc_rgb(scale[-1][1]), 0.0


def pc_rgb(c: str) -> str:
    return pc.convert_colors_to_same_type(c, colortype="rgb")[0][0]


def _png_rgb(img: torch.Tensor) -> np.ndarray:
    return (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def attack_panel(x: torch.Tensor, adv: torch.Tensor, maps: torch.Tensor, bytes_clean: float, bytes_adv: float,
                 title: str = "") -> go.Figure:
    """One image ``(C, H, W)`` and its attacked copy, in two rows: the clean image, the perturbation ``adv - x``
    (x4 around grey) and the adversarial image; below, the two bit maps ``maps (2, h, w)`` (clean, attacked) on
    one colour scale, with the real bytes in their titles. ``x`` and ``adv`` must be the same photo (at epsilon 0
    the perturbation is uniform grey and the two images are equal)."""
    if x.shape != adv.shape:
        raise ValueError(f"attack_panel: the clean image {tuple(x.shape)} and its attacked copy {tuple(adv.shape)} "
                         "must have the same shape")
    fig = make_subplots(2, 3, specs=[[{}, {}, {}], [{}, {}, None]], vertical_spacing=0.12, horizontal_spacing=0.04,
                        subplot_titles=["clean image", "perturbation x4", "adversarial image",
                                        f"bits, clean ({bytes_clean:.0f} B)", f"bits, attacked ({bytes_adv:.0f} B)"])
    for col, img in enumerate((x, 0.5 + 4 * (adv - x), adv), start=1):
        fig.add_trace(go.Image(z=_png_rgb(img)), 1, col)
    zmax = float(maps.max())
    for i in range(2):
        fig.add_trace(go.Heatmap(z=maps[i].numpy()[::-1], zmin=0, zmax=zmax, colorscale="Viridis",
                                 showscale=i == 1, colorbar=dict(title="bits", len=0.45, y=0.22)), 2, 1 + i)
    fig.update_xaxes(visible=False).update_yaxes(visible=False)
    return fig.update_layout(height=520, hovermode=False, title=title)


def bit_panel(x: torch.Tensor, bit_map: torch.Tensor, n_bytes: float, title: str = "") -> go.Figure:
    """One clean image ``(C, H, W)`` beside its bit map ``(h, w)``, with the real bytes in the map's title."""
    fig = make_subplots(1, 2, subplot_titles=["test image", f"bits ({n_bytes:.0f} B)"], horizontal_spacing=0.06)
    fig.add_trace(go.Image(z=_png_rgb(x)), 1, 1)
    fig.add_trace(go.Heatmap(z=bit_map.numpy()[::-1], zmin=0, colorscale="Viridis", colorbar=dict(title="bits")), 1, 2)
    fig.update_xaxes(visible=False).update_yaxes(visible=False)
    return fig.update_layout(height=330, hovermode=False, title=title)
