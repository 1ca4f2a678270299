"""robustnb.widgets: slider labels and values, and the explorer's re-run on change."""

import sys

import ipywidgets as widgets
import plotly.graph_objects as go
import pytest

from robustnb import widgets as W


def test_epsilon_slider():
    s = W.epsilon_slider((0, 2, 8))
    assert isinstance(s, widgets.SelectionSlider)
    assert [lbl for lbl, _ in s.options] == ["0", "2/255", "8/255"]
    assert [v for _, v in s.options] == [0.0, 2 / 255, 8 / 255]
    assert s.value == 0.0
    s.value = 8 / 255
    assert s.label == "8/255"
    assert W.epsilon_slider(value=4).value == pytest.approx(4 / 255)
    l2 = W.epsilon_slider((0, 0.25, 1), norm="L2", value=0.25)  # an L2 attack's radii, as they are
    assert [label for label, _ in l2.options] == ["0", "0.25", "1"] and l2.value == 0.25
    assert W.epsilon_slider().description == "epsilon"


def test_lambda_slider_and_choice():
    s = W.lambda_slider([0.0, 0.02, 0.08])
    assert [lbl for lbl, _ in s.options] == ["0", "0.02", "0.08"]
    s.label = "0.08"
    assert s.value == 0.08
    d = W.choice(["resnet", "vgg"], "model")
    assert isinstance(d, widgets.Dropdown) and d.value == "resnet" and d.description == "model"


def test_explorer_calls_fn_on_creation_and_change():
    calls = []

    def fn(eps, model):
        calls.append((eps, model))
        return f"{model}@{eps}"

    ex = W.explorer(fn, eps=W.epsilon_slider((0, 4, 8)), model=W.choice(["a", "b"], "model"))
    assert isinstance(ex, widgets.VBox) and ex.children[-1] is ex.output
    assert calls == [(0.0, "a")] and ex.result == "a@0.0"
    ex.controls["eps"].value = 8 / 255
    assert calls[-1] == (8 / 255, "a")
    ex.controls["model"].value = "b"
    assert calls[-1] == (8 / 255, "b") and len(calls) == 3
    assert ex.refresh() == f"b@{8 / 255}" and ex.values == {"eps": 8 / 255, "model": "b"}
    assert ex.controls["eps"].continuous_update is False


def test_explorer_shows_figures(monkeypatch):
    shown = []
    real = W.format_display_data
    monkeypatch.setattr(W, "format_display_data", lambda obj: (shown.append(obj), real(obj))[1])
    ex = W.explorer(lambda k: go.Figure(go.Scatter(y=[k, k])), k=widgets.IntSlider(1, 0, 5))
    assert len(shown) == 1 and len(ex.output.outputs) == 1
    ex.controls["k"].value = 3
    assert len(shown) == 2 and shown[-1].data[0].y == (3, 3)
    assert len(ex.output.outputs) == 1 and ex.output.outputs[0]["output_type"] == "display_data"
    ex2 = W.explorer(lambda k: None, k=widgets.IntSlider(1, 0, 5))
    assert ex2.output.outputs == ()
    with pytest.raises(TypeError):
        W.explorer(print, k=3)


def test_enable_colab_widgets(monkeypatch):
    assert W.enable_colab_widgets() is False
    called = []
    fake_output = type(sys)("google.colab.output")
    fake_output.enable_custom_widget_manager = lambda: called.append(1)
    fake_colab = type(sys)("google.colab")
    fake_colab.output = fake_output
    fake_google = type(sys)("google")
    fake_google.colab = fake_colab
    monkeypatch.setitem(sys.modules, "google", fake_google)
    monkeypatch.setitem(sys.modules, "google.colab", fake_colab)
    monkeypatch.setitem(sys.modules, "google.colab.output", fake_output)
    assert W.enable_colab_widgets() is True and called == [1]


@pytest.mark.chapters
def test_an_explorer_showing_the_first_figure_does_not_stall_papermill(tmp_path):
    """The first figure of a kernel used to be drawn inside an explorer's Output widget, where the notebook
    renderer's one-off plotly.js display made nbclient wait forever (papermill, nbconvert, jupyter-book)."""
    import os
    import subprocess
    import sys

    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in (
        "from robustnb import widgets\nimport plotly.graph_objects as go",
        "widgets.explorer(lambda a: go.Figure(go.Bar(y=[1, a])), a=widgets.choice([1, 2], 'a'))",
        "print('finished')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src, out = tmp_path / "explorer.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, str(src))
    env = {k: v for k, v in os.environ.items() if k != "PLOTLY_RENDERER"}
    proc = subprocess.run([sys.executable, "-m", "papermill", str(src), str(out), "-k", "python3"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "finished" in out.read_text()


def test_every_explorer_says_it_needs_a_kernel_until_one_answers():
    """The static book shows an explorer's saved state, whose controls move and change nothing: the explorer says
    so under its controls, and hides the note once a control moves with a kernel behind it."""
    ex = W.explorer(lambda k: k, k=widgets.IntSlider(1, 0, 5))
    assert ex.note in ex.children and ex.children.index(ex.note) == len(ex.controls)
    assert ex.note.value == W.STATIC_NOTE and W.NOTE_CLASS in ex.note.value
    assert "running Python kernel" in ex.note.value and ex.note.layout.display != "none"
    ex.controls["k"].value = 3
    assert ex.note.layout.display == "none"
