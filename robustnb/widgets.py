"""Live ipywidgets explorers for Jupyter and Colab.

They need a running kernel; the static book shows the state at execution time, and every explorer says so under
its controls (:data:`STATIC_NOTE`, hidden once a control moves with a kernel behind it). For figures that stay
interactive in the static HTML, use :func:`robustnb.plots.slider_figure` instead.

Example::

    from robustnb import widgets as W
    W.enable_colab_widgets()
    W.explorer(lambda eps, model: plot_for(eps, model),
               eps=W.epsilon_slider(), model=W.choice(["resnet", "vgg"], "model"))
"""

from __future__ import annotations

import re
import sys

import ipywidgets as widgets
from IPython.core.formatters import format_display_data

__all__ = ["epsilon_slider", "lambda_slider", "choice", "explorer", "Explorer",
           "enable_colab_widgets", "STATIC_NOTE"]


def _num(v) -> str:
    return f"{v:g}"


def epsilon_slider(values=(0, 1, 2, 4, 8, 16), description="epsilon", value=None,
                   norm: str = "Linf") -> widgets.SelectionSlider:
    """Slider over perturbation budgets: under L-inf given in 1/255 units (labels "8/255", values 8/255), under
    another ``norm`` (an attack's, ``robustnb.attacks.budget``) as the radii themselves (labels "0.5").

    Example: ``epsilon_slider((0, 2, 4, 8)).value  # 0.0``; ``epsilon_slider((0, 0.25, 0.5), norm="L2")``
    """
    scale, unit = (255, "/255") if norm == "Linf" else (1, "")
    options = [("0" if v == 0 else f"{_num(v)}{unit}", v / scale) for v in values]
    kw = {} if value is None else {"value": value / scale}
    return widgets.SelectionSlider(options=options, description=description,
                                   continuous_update=False, **kw)


def lambda_slider(values, description="lambda", value=None) -> widgets.SelectionSlider:
    """Slider over the given floats, labelled compactly ("0.08").

    Example: ``lambda_slider([0.0, 0.02, 0.08, 0.32])``
    """
    options = [(_num(v), float(v)) for v in values]
    kw = {} if value is None else {"value": float(value)}
    return widgets.SelectionSlider(options=options, description=description,
                                   continuous_update=False, **kw)


def choice(options, description, value=None) -> widgets.Dropdown:
    """Drop-down menu over ``options`` (a list, or (label, value) pairs, or a dict).

    Example: ``choice(["resnet18", "mobilenet"], "model")``
    """
    kw = {} if value is None else {"value": value}
    return widgets.Dropdown(options=options, description=description, **kw)


#: plotly's notebook renderer makes every figure load MathJax from its CDN (``include_mathjax="cdn"`` is fixed in
#: plotly.io); the book serves its own MathJax (sphinx-mathjax-offline) and our figures use no TeX
PLOTLY_MATHJAX = re.compile(r'<script src="https://cdnjs\.cloudflare\.com/ajax/libs/mathjax/[^"]*"></script>')


def without_cdn_mathjax(html: str) -> str:
    """``html`` without :data:`PLOTLY_MATHJAX`, so that a saved figure asks no CDN for anything when offline."""
    return PLOTLY_MATHJAX.sub("", html)


def _mime_bundle(obj) -> tuple[dict, dict]:
    """What ``obj`` shows as: its own ``_repr_mimebundle_`` (a plotly figure's, through the renderer the book
    chose), else IPython's formatters. IPython's ``format_display_data`` gives nothing for a plotly figure, which
    displays itself through ``_ipython_display_`` instead, so an explorer would save an empty output."""
    own = getattr(obj, "_repr_mimebundle_", None)
    if callable(own):
        bundle = own(include=None, exclude=None)
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        if data:
            data = {k: without_cdn_mathjax(v) if k == "text/html" else v for k, v in data.items()}
            return data, dict(metadata or {})
    return format_display_data(obj)


#: the CSS class of an explorer's note (:attr:`Explorer.note`), for the book's tests and styles
NOTE_CLASS = "robustnb-kernel-note"
#: what an explorer says under its controls until one moves with a kernel behind it: in the static book (and in a
#: notebook opened without running it) the controls move and change nothing
STATIC_NOTE = (f'<div class="{NOTE_CLASS}" style="font-size:0.85em;color:#555;border-left:3px solid #E69F00;'
               'padding:2px 8px;margin:4px 0;">Live in Jupyter or Colab: these controls redraw the figure with a '
               'running Python kernel. Here, without one, they move but change nothing: the figure below is the '
               'state when the page was built.</div>')


class Explorer(widgets.VBox):
    """Controls stacked above a note and an Output; ``fn(**values)`` is re-run on every change.

    ``controls`` maps argument names to widgets, ``output`` is the Output widget, ``note`` an HTML widget saying
    that the controls need a running kernel (:data:`STATIC_NOTE`: what the static book shows; hidden at the first
    change a kernel answers). ``refresh()`` re-runs ``fn`` by hand and returns its result.
    """

    def __init__(self, fn, controls: dict, **kw):
        self.fn = fn
        self.controls = dict(controls)
        self.output = widgets.Output()
        self.note = widgets.HTML(STATIC_NOTE)
        self.result = None
        for w in self.controls.values():
            if hasattr(w, "continuous_update"):
                w.continuous_update = False
            w.observe(self._on_change, names="value")
        super().__init__(children=[*self.controls.values(), self.note, self.output], **kw)
        self.refresh()

    @property
    def values(self) -> dict:
        """Current value of every control, keyed by argument name."""
        return {k: w.value for k, w in self.controls.items()}

    def _on_change(self, _change=None):
        self.note.layout.display = "none"  # a kernel answered: the explorer is live
        self.refresh()

    def refresh(self):
        """Call ``fn`` with the current values and show what it returns in the output area.

        The result is placed in the Output widget's ``outputs`` state (``IPython``'s formatter gives its mime
        bundle: a plotly figure, a frame, text) rather than printed inside ``with output:``. Captured output
        makes nbclient (papermill, nbconvert, jupyter-book) send widget updates back to the kernel while it
        waits for the cell's reply, and that race could leave a book build waiting forever.
        """
        res = self.fn(**self.values)
        if res is None:
            self.output.outputs = ()
        else:
            data, metadata = _mime_bundle(res)
            self.output.outputs = ({"output_type": "display_data", "data": data, "metadata": metadata},)
        self.result = res
        return res

    update = refresh


def explorer(fn, **controls) -> Explorer:
    """Live explorer: one widget per keyword argument of ``fn``; renders once at once.

    Example: ``explorer(lambda eps: plots.line(df[df.eps == eps], "x", "y"), eps=epsilon_slider())``
    """
    for k, w in controls.items():
        if not isinstance(w, widgets.ValueWidget):
            raise TypeError(f"control {k!r} must be an ipywidgets value widget, not {type(w).__name__}")
    enable_colab_widgets()  # live widgets need Colab's custom widget manager (a no-op elsewhere)
    return Explorer(fn, controls)


def enable_colab_widgets() -> bool:
    """In Google Colab, turn on the custom widget manager (ipywidgets 8); elsewhere a no-op.

    Example: ``enable_colab_widgets()  # False outside Colab``
    """
    if "google.colab" not in sys.modules:
        return False
    from google.colab import output  # type: ignore

    output.enable_custom_widget_manager()
    return True
