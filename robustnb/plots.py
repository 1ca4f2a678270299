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
import re
import textwrap
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


#: The book's columns in words, with their unit: a figure's default title of a column its ``labels`` leave out (on
#: an axis, a legend, a facet or a slider); any other snake_case name is spelled out ("power_share" -> "power share").
TITLES = {
    "eps_255": "epsilon (x/255)", "epsilon": "epsilon", "accuracy": "accuracy (fraction correct)",
    "clean_acc": "clean accuracy", "robust_acc": "robust accuracy", "robust_acc_cc": "robust accuracy (clean-correct)",
    "success_rate": "attack success rate", "robust_gain": "robust-accuracy gain",
    "overhead_pct": "bitrate overhead (%)", "overhead": "rate overhead (bytes / clean bytes - 1)",
    "lambda": "lambda (rate weight)", "lam": "lambda (rate weight)", "lambda_tv": "lambda_TV (TV weight)",
    "entropy_model": "entropy model", "arch": "architecture", "severity": "severity (1-5)",
    "compression": "compression ratio (x)", "size_mb": "saved size (MB)", "params": "parameters",
    "source_clean": "source-domain accuracy", "target_clean": "mean target-domain accuracy",
    "attack_strength": "attack and strength", "frequency": "frequency (cycles/pixel)",
    "power": "power (|FFT|^2 / pixels)", "cutoff": "cutoff (cycles/pixel)", "band": "band (cycles/pixel)",
    "rate_ratio": "rate / unfiltered rate", "share": "share of the rate", "power_share": "share of the signal power",
    "n_nodes": "nodes N", "real_bytes": "real bytes per image", "est_bytes": "estimated bytes per image",
    "cosine": "cosine similarity", "variable": "quantity",
}


def title_of(col, labels: dict | None = None) -> str:
    """A column's title on a figure: ``labels[col]``, else :data:`TITLES`, else the name spelled out."""
    if labels and col in labels:
        return labels[col]
    if not isinstance(col, str):
        return str(col)
    return TITLES.get(col, " ".join(col.replace("_", " ").split()))


#: The columns a plotly-express call may name, besides x and y
_COLUMN_ARGS = ("color", "symbol", "size", "text", "facet_col", "facet_row", "line_dash", "hover_name", "error_y",
                "error_x", "pattern_shape")
#: The page column the book's figures are drawn in (pixels); at most this many facets side by side there
PAGE_WIDTH, FACETS_PER_ROW = 650, 3
#: More legend entries than this: the legend goes under the plot, in rows (or is split in two keys)
LEGEND_MAX = 8


def _melted_titles(df, y, color, labels) -> dict:
    """A melted frame (``value`` by ``variable``): the y axis titled by the variables, the legend entries theirs."""
    if y != "value" or color != "variable" or "value" in (labels or {}):
        return {}
    names = [title_of(v, labels) for v in pd.unique(df["variable"])]
    return {"value": " / ".join(names)} if len(names) <= 3 else {}


def _px(fn, df, cols, title, labels, log_x=False, log_y=False, **kw) -> go.Figure:
    """A plotly-express figure made legible in the page column: every column titled (:func:`title_of`), facets
    at most :data:`FACETS_PER_ROW` a row with short titles, a long legend under the plot, fewer log ticks."""
    _check(df, *cols)
    named = [c for c in (*cols, *(kw.get(a) for a in _COLUMN_ARGS)) if isinstance(c, str) and c in df.columns]
    lab = {c: title_of(c, labels) for c in named}
    lab.update(_melted_titles(df, kw.get("y"), kw.get("color"), labels))
    facet = kw.get("facet_col")
    n_facets = int(df[facet].nunique()) if facet else 1
    if facet and n_facets > FACETS_PER_ROW and "facet_col_wrap" not in kw:
        kw["facet_col_wrap"] = FACETS_PER_ROW
    per_row = min(n_facets, kw.get("facet_col_wrap") or n_facets)
    rows = -(-n_facets // per_row)
    if rows > 1:
        kw.setdefault("height", max(HEIGHT, 150 + 260 * rows))
        kw.setdefault("facet_row_spacing", min(0.25, 110 / kw["height"]))
    if facet:
        kw.setdefault("facet_col_spacing", 0.06 if per_row > 1 else 0.03)
    fig = fn(df, labels=lab, log_x=log_x, log_y=log_y, **kw)
    if kw.get("color") == "variable" and "value" in lab and lab["value"] != title_of("value", labels):
        fig.for_each_trace(lambda t: t.update(name=title_of(t.name, labels)))
    if facet:
        _facet_titles(fig, df[facet], lab[facet], per_row, rows)
    _split_legend(fig, df, kw.get("color"), kw.get("symbol") or kw.get("line_dash"), lab)
    _legend_under(fig)
    if log_x:
        _log_ticks(fig, "x", df[kw["x"]], PAGE_WIDTH / per_row)
    if log_y:
        _log_ticks(fig, "y", df[kw["y"]], (fig.layout.height or HEIGHT) / rows)
    return _titled(fig, title)


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken between words."""
    return textwrap.wrap(text, max(width, 8), break_long_words=False) or [""]


def _facet_titles(fig: go.Figure, values: pd.Series, label: str, per_row: int, rows: int) -> None:
    """The facets' titles without plotly's "column=" prefix (a number keeps its column's name: "lambda = 0.01"),
    wrapped to the facet's width, in a smaller font; the top margin makes room for the longest."""
    numeric = pd.api.types.is_numeric_dtype(values)
    width = int(PAGE_WIDTH / per_row / 7)
    lines = 1
    for ann in fig.layout.annotations:
        if not (ann.text or "").startswith(f"{label}="):
            continue
        value = ann.text[len(label) + 1:]
        short = re.sub(r"\s*\([^()]*\)$", "", label)  # "lambda (rate weight)" -> "lambda": the unit is the title's
        parts = _wrap(f"{short} = {value}" if numeric else value, width)
        lines = max(lines, len(parts))
        ann.update(text="<br>".join(parts), font=dict(size=12))
    extra = 15 * (lines - 1)
    if extra:
        t = (fig.layout.margin.t if fig.layout.margin.t is not None else 60) + extra
        fig.update_layout(margin=dict(t=t), height=(fig.layout.height or HEIGHT) + extra * rows)


def _legend_entries(fig: go.Figure, legend: str | None = None) -> list[str]:
    """The entries the legends list (or one ``legend``: "legend", "legend2"): one per legend group (or name) of
    the traces they show."""
    seen = []
    for tr in fig.data:
        if tr.showlegend is False or tr.name is None or legend not in (None, tr.legend or "legend"):
            continue
        key = tr.legendgroup or tr.name
        if key not in seen:
            seen.append(key)
    return seen


def _split_legend(fig: go.Figure, df, color, other, lab: dict) -> None:
    """A legend of every (colour, symbol-or-dash) pair with more than :data:`LEGEND_MAX` entries becomes two keys:
    one entry per colour (clicking it hides that colour's traces) and one per symbol or dash; the traces keep their
    data and names (for hover)."""
    if not color or not other or len(_legend_entries(fig)) <= LEGEND_MAX:
        return
    colours = [str(v) for v in pd.unique(df[color])]
    others = [str(v) for v in pd.unique(df[other])]

    def part(name, values, first):
        hits = [v for v in values if (name.startswith(v + ", ") if first else name.endswith(", " + v)) or name == v]
        return max(hits, key=len) if hits else None

    data = [tr for tr in fig.data if tr.name is not None]
    keyed = [(tr, part(tr.name, colours, True), part(tr.name, others, False)) for tr in data]
    if any(c is None or o is None for _, c, o in keyed):
        return
    lines = any("lines" in (tr.mode or "") for tr in data)
    for tr, c, _ in keyed:
        tr.update(showlegend=False, legendgroup=f"colour {c}")
    for k, c in enumerate(colours):
        tr = next(t for t, cc, _ in keyed if cc == c)
        colour = tr.marker.color if tr.marker.color is not None else tr.line.color
        fig.add_trace(go.Scatter(x=[None], y=[None], name=c, legendgroup=f"colour {c}", showlegend=True,
                                 mode="lines+markers" if lines else "markers", hoverinfo="skip",
                                 marker=dict(color=colour, symbol="circle"), line=dict(color=colour)))
    for o in others:
        tr = next(t for t, _, oo in keyed if oo == o)
        fig.add_trace(go.Scatter(x=[None], y=[None], name=o, legendgroup=f"key {o}", showlegend=True,
                                 legend="legend2", mode="lines+markers" if lines else "markers", hoverinfo="skip",
                                 marker=dict(color="#555", symbol=tr.marker.symbol),
                                 line=dict(color="#555", dash=tr.line.dash if lines else None)))
    fig.update_layout(legend=dict(title_text=lab.get(color, color)),
                      legend2=dict(title=dict(text=lab.get(other, other), font=dict(size=13)), font=dict(size=13)))


def _legend_rows(entries: list[str], width: int = PAGE_WIDTH - 40) -> int:
    """How many rows a horizontal legend of ``entries`` takes in ``width`` pixels (about 7.5 px a character)."""
    rows, used = 1, 0
    for e in entries:
        w = 45 + 7.5 * len(str(e))
        if used and used + w > width:
            rows, used = rows + 1, 0
        used += w
    return rows


def _legend_under(fig: go.Figure) -> None:
    """More than :data:`LEGEND_MAX` legend entries (in all): each legend horizontal, under the x axis' title (not
    a column beside the plot that squeezes it), one under the other, with the figure grown by their rows."""
    if len(_legend_entries(fig)) <= LEGEND_MAX:
        return
    rows = [_legend_rows(e) for e in (_legend_entries(fig, "legend"), _legend_entries(fig, "legend2")) if e]
    b = fig.layout.margin.b if fig.layout.margin.b is not None else 50
    t = fig.layout.margin.t if fig.layout.margin.t is not None else 60
    extra = sum(24 * r + 10 for r in rows) + 10
    height = (fig.layout.height or HEIGHT) + extra
    plot_h = max(height - t - b - extra, 1)
    below = 70
    for k, r in enumerate(rows):
        fig.update_layout({"legend" if k == 0 else f"legend{k + 1}": dict(
            orientation="h", x=0, xanchor="left", y=-below / plot_h, yanchor="top")})
        below += 24 * r + 10
    fig.update_layout(height=height, margin=dict(b=b + extra))


def log_ticks(lo: float, hi: float, most: int) -> list[float]:
    """Tick values of a log axis over [``lo``, ``hi``] (positive): 1-2-5 per decade, else 1-3, else powers of ten
    (every 1, 2, 3, ... decades), the first choice with at most ``most`` ticks and at least two (else the sparsest
    of them, every k-th kept); none (plotly's own ticks) for a range inside one 1-2-5 step."""
    if not (lo > 0 and hi >= lo):
        return []
    a, b = int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi)))
    found = []
    for mantissas, step in [((1, 2, 5), 1), ((1, 3), 1)] + [((1,), k) for k in range(1, 1 + max(1, b - a))]:
        ticks = [m * 10.0 ** e for e in range(a, b + 1) if (e - a) % step == 0 for m in mantissas]
        ticks = [t for t in ticks if lo / 1.0001 <= t <= hi * 1.0001]
        if 2 <= len(ticks) <= most:
            return ticks
        if len(ticks) >= 2:
            found.append(ticks)
    if not found:
        return []
    sparsest = min(found, key=len)
    return sparsest[::-(-len(sparsest) // max(most, 2))]


def _tick_text(v: float) -> str:
    """A log tick's label: 0.02, 5, 200, 1e+04 -> 10<sup>4</sup>."""
    e = np.log10(v)
    if abs(e) >= 4 and abs(e - round(e)) < 1e-9:
        return f"10<sup>{int(round(e))}</sup>"
    return f"{v:g}"


def _log_ticks(fig: go.Figure, axis: str, values, length: float) -> None:
    """Fewer ticks on log axes ``axis`` ("x" or "y") spanning ``values``: about one per 60 px of ``length``."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(float)
    v = v[np.isfinite(v) & (v > 0)]
    if not v.size:
        return
    ticks = log_ticks(float(v.min()), float(v.max()), max(2, int(length // 60)))
    if not ticks:
        return
    update = fig.update_xaxes if axis == "x" else fig.update_yaxes
    update(tickmode="array", tickvals=ticks, ticktext=[_tick_text(t) for t in ticks])


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
    lab = {"x": title_of(x, labels), "y": title_of(y, labels), "color": title_of(z, labels)}
    fig = px.imshow(m, zmin=zmin, zmax=zmax, text_auto=text_auto, aspect="auto", labels=lab,
                    color_continuous_scale=colorscale)
    fig.update_xaxes(type="category", side="bottom").update_yaxes(type="category")
    return _titled(fig.update_layout(hovermode="closest"), title)


def forest(df, y, x, low, high, color=None, color_map=None, marker=None, marker_name="reference", marker_group=None,
           marker_symbols=None, hover=None, facet=None, reference=0.0, ids=None,
           missing_title="no estimate with an interval", title=None) -> go.Figure:
    """Forest plot of a tidy frame: one row per estimate (``y``, top to bottom in frame order), the point ``x``
    with its interval [``low``, ``high``] as a horizontal error bar, coloured by ``color`` (``color_map``: value ->
    colour, also the legend's order); ``marker``: a second value per row drawn as an open symbol (a reference
    figure; NaN: none), named ``marker_name`` in the legend, or by the row's ``marker_group`` column (whose figure
    it is: one legend entry per value, drawn with ``marker_symbols[value]``, else the next open symbol);
    ``hover``: a column of hover text; ``facet``: one panel per value, each with its own x axis titled by the
    value (for estimates in different units); ``reference``: a
    dotted vertical line (no effect; None: none); ``ids``: a column naming each point (plotly's trace ``ids``).

    Only rows with a point *and* its interval (``x``, ``low`` and ``high`` all finite) are drawn: a row without
    one is not a zero. Those rows are listed apart, under the plot, in one annotation (``name`` "not drawn")
    headed ``missing_title``, one row's label per line.

    Example: ``forest(df, y="claim", x="ours", low="low", high="high", color="verdict", marker="paper")``
    """
    _check(df, y, x, low, high, color, marker, marker_group, hover, facet, ids)
    if df[y].duplicated().any():
        raise ValueError(f"column {y!r} labels the rows and must be unique; repeated: "
                         f"{sorted(set(df.loc[df[y].duplicated(), y]))}")
    drawn = np.isfinite(df[[x, low, high]].apply(pd.to_numeric, errors="coerce").to_numpy(float)).all(axis=1)
    shown, apart = df[drawn], df[~drawn]
    panels = list(pd.unique(shown[facet])) if facet and len(shown) else [None]
    sizes = [int((shown[facet] == f).sum()) if facet and f is not None else max(len(shown), 1) for f in panels]
    fig = make_subplots(rows=len(panels), cols=1, row_heights=sizes, vertical_spacing=0.32 / max(len(panels), 1) ** 0.5
                        if len(panels) > 1 else 0.0)
    groups = list(color_map) if color_map else (list(pd.unique(df[color])) if color else [None])
    refs = (list(pd.unique(shown.loc[pd.notna(shown[marker_group]), marker_group])) if marker and marker_group
            else [marker_name])
    seen = set()
    for r, f in enumerate(panels, start=1):
        sub = shown[shown[facet] == f] if facet and f is not None else shown
        for g in groups:
            part = sub[sub[color] == g] if color else sub
            if not len(part):
                continue
            v, lo, hi = (part[c].to_numpy(float) for c in (x, low, high))
            colour = (color_map or {}).get(g) or PALETTE[groups.index(g) % len(PALETTE)]
            fig.add_trace(go.Scatter(
                x=v, y=part[y], mode="markers", name=str(g) if g is not None else x, legendgroup=str(g),
                showlegend=g not in seen, marker=dict(color=colour, size=10, line=dict(color="white", width=1)),
                error_x=dict(type="data", symmetric=False, array=hi - v, arrayminus=v - lo,
                             color=colour, thickness=2, width=4),
                hovertext=part[hover] if hover else None, hoverinfo="text" if hover else "x+y",
                ids=list(part[ids].astype(str)) if ids else None), row=r, col=1)
            seen.add(g)
        for k, name in enumerate(refs) if marker else ():
            ref = sub[pd.notna(sub[marker])]
            if marker_group:
                ref = ref[ref[marker_group] == name]
            if not len(ref):
                continue
            fig.add_trace(go.Scatter(
                x=ref[marker], y=ref[y], mode="markers", name=str(name), legendgroup=str(name),
                showlegend=name not in seen, hoverinfo="text",
                hovertext=ref[hover] if hover else ref[marker].map(_fmt),
                ids=list(ref[ids].astype(str)) if ids else None,
                marker=dict(symbol=(marker_symbols or {}).get(name, _REFERENCE_SYMBOLS[k % len(_REFERENCE_SYMBOLS)]),
                            size=12, color="#222",
                            line=dict(width=2))), row=r, col=1)
            seen.add(name)
        fig.update_yaxes(type="category", categoryorder="array", categoryarray=list(sub[y]), autorange="reversed",
                         row=r, col=1)
        if reference is not None and len(sub):
            fig.add_vline(x=reference, line=dict(color="#888", dash="dot", width=1), row=r, col=1)
        if facet and f is not None:
            fig.update_xaxes(title_text=str(f), row=r, col=1)
    if not len(shown):  # nothing to draw: no empty axes, only the list
        fig.update_xaxes(visible=False).update_yaxes(visible=False)
    # above the plot the key to what is drawn (verdicts, reference figures: one line each, as the rows' labels may
    # leave the plot area narrow); under it, below the x axis' title, the list of the rows not drawn, one per line,
    # hung from the plot's right edge (the labels' width on the left is only known in the browser)
    key = _KEY_LINE * len(seen) + 10 if seen else 10
    listed = _LIST_LINE * (len(apart) + 1) + 10 if len(apart) else 0
    plot = 40 + 44 * len(shown) + 60 * (len(panels) - 1) if len(shown) else 0
    margin_t = key + (40 if title is not None else 0)
    if len(apart):
        lines = [f"<b>{missing_title} ({len(apart)}):</b>", *(f"○ {_one_line(str(v))}" for v in apart[y])]
        fig.add_annotation(text="<br>".join(lines), name=_NOT_DRAWN, xref="paper", x=1.0, xanchor="right",
                           yref="paper", y=0.0, yanchor="top", yshift=-(55 if len(shown) else 0), align="left",
                           showarrow=False, font=dict(size=12, color="#555"))
    fig.update_layout(
        height=margin_t + plot + 60 + listed, hovermode="closest", margin=dict(t=margin_t, b=60 + listed),
        legend=dict(orientation="v", yanchor="bottom", y=1.0, xanchor="left", x=0, title=None))
    return _titled(fig, title)


#: the reference markers of :func:`forest`, one per ``marker_group`` value
_REFERENCE_SYMBOLS = ("diamond-open", "square-open", "triangle-up-open", "star-open")
#: a line's height in :func:`forest`'s list of rows not drawn (pixels, font size 12) and in its legend
_LIST_LINE, _KEY_LINE = 17, 24
#: the ``name`` of :func:`forest`'s annotation listing the rows not drawn
_NOT_DRAWN = "not drawn"


def _one_line(label: str, width: int = 96) -> str:
    """A (``<br>``-wrapped) label on one line of at most ``width`` characters, cut in the middle with an ellipsis
    (the end of a label often tells similar ones apart: "..., N = 3")."""
    text = " ".join(label.replace("<br>", " ").replace("…", " ").split())
    if len(text) <= width:
        return text
    tail = width // 4
    return text[:width - tail - 1].rstrip() + "…" + text[-tail:].lstrip()


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
        name = _fmt(col) if sd.color is not None else title_of(sd.y, labels)
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


def _is_picker(values) -> bool:
    """Is a selector over ``values`` a choice among names (a dropdown) rather than a numeric sweep (a slider)?"""
    return not pd.api.types.is_numeric_dtype(pd.Series(values).infer_objects())


def _slider_controls(fig: go.Figure, sd: _SliderData, labels: dict, slider_label, select_label, play: bool,
                     title, height) -> None:
    """The controls under the plot: an ``animate`` slider over the frames, then the selector: a ``restyle``
    dropdown where its values are names (a model, an attack: a slider would cut their labels), a ``restyle``
    slider where they are numbers (lambda); the play button. A long legend goes above the plot, in rows."""
    picker = sd.select is not None and _is_picker(sd.selected)
    n_sl = 1 + (sd.select is not None and not picker)
    entries = [_fmt(c) for c in sd.colours] if sd.color is not None else []
    legend_h = 24 * _legend_rows(entries) + 10 if len(entries) > LEGEND_MAX else 0
    height = height or HEIGHT + 85 * n_sl + 50 * picker + legend_h
    t, b = (60 if title else 30) + legend_h, 70 + 85 * n_sl + 50 * picker
    plot_h = height - t - b

    def place(k):  # k-th control below the x-axis title, in paper units
        return -(70 + 85 * k) / plot_h

    anim = dict(frame=dict(duration=0, redraw=sd.kind == "bar"), mode="immediate", transition=dict(duration=0))
    s_label = slider_label or title_of(sd.slider, labels)
    sliders = [dict(
        active=0, x=0.1 if play else 0.0, len=0.9 if play else 1.0, y=place(0), yanchor="top",
        pad=dict(t=0, b=0), currentvalue=dict(prefix=f"{s_label} = ", font=dict(size=14)),
        steps=[dict(method="animate", label=_fmt(s), args=[[str(s)], anim]) for s in sd.steps],
    )]
    menus = []
    if sd.select is not None:
        sel_label = select_label or title_of(sd.select, labels)
        groups = sd.groups
        steps = [dict(method="restyle", label=_fmt(sv), args=[{"visible": [bool(g[0] == sv) for g in groups]}])
                 for sv in sd.selected]
        if picker:  # the label in each entry, as the slider's "name = value"
            menus.append(dict(
                type="dropdown", direction="up", active=0, showactive=True, x=0.0, xanchor="left",
                y=-(80 + 85 * n_sl) / plot_h, yanchor="top", pad=dict(t=0, b=0), font=dict(size=13),
                buttons=[{**st, "label": f"{sel_label}: {st['label']}"} for st in steps]))
        else:
            sliders.append(dict(
                active=0, x=0.0, len=1.0, y=place(1), yanchor="top", pad=dict(t=0, b=0),
                currentvalue=dict(prefix=f"{sel_label} = ", font=dict(size=14)), steps=steps))
    fig.update_layout(
        sliders=sliders, height=height, margin=dict(t=t, b=b),
        xaxis_title=title_of(sd.x, labels), yaxis_title=title_of(sd.y, labels),
        legend_title_text=title_of(sd.color, labels) if sd.color is not None else None,
        barmode="group" if sd.kind == "bar" else None,
    )
    if legend_h:  # many colours: in rows above the plot (the controls are under it)
        fig.update_layout(legend=dict(orientation="h", x=0, xanchor="left", y=1.02, yanchor="bottom"))
    if play:
        menus.insert(0, dict(
            type="buttons", showactive=False, x=0.0, y=place(0), xanchor="left", yanchor="top",
            pad=dict(t=25, r=10),
            buttons=[dict(label="▶", method="animate",
                          args=[None, {**anim, "frame": dict(duration=700, redraw=sd.kind == "bar"),
                                       "fromcurrent": True}])],
        ))
    if menus:
        fig.update_layout(updatemenus=menus)


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
    if log_x:
        _log_ticks(fig, "x", df[x], PAGE_WIDTH)
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
    width = int(PAGE_WIDTH / cols / 6.5)  # titles wrapped to an image's width in the page column
    wrapped = [_wrap(str(titles[i]), width) if titles is not None and i < len(titles) else [""] for i in range(n)]
    lines = max(len(w) for w in wrapped)
    cell = max(90, 900 // cols)
    label_h = 6 + 15 * lines if titles is not None else 4
    top = (50 if title else 20) + (label_h - 20 if titles is not None else 0)
    height = top + 10 + rows * (cell + label_h)
    fig = px.imshow(a, facet_col=0, facet_col_wrap=cols, binary_string=True,
                    facet_row_spacing=min(0.3 / rows, max(0.08 if lines == 1 else 0.0, (label_h + 4) / height)),
                    facet_col_spacing=0.01)
    for ann in fig.layout.annotations:
        ann.text = "<br>".join(wrapped[int(ann.text.split("=")[-1])])
        ann.font = dict(size=12)
    fig.update_xaxes(visible=False).update_yaxes(visible=False)
    fig.update_traces(hoverinfo="skip", hovertemplate=None)
    fig.update_layout(height=height, margin=dict(l=5, r=5, t=top, b=5), hovermode=False)
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
