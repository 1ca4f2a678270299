"""The run line printed by ``robustnb.setup`` (``Run.__str__``): the builder's folders only for a person at the
keyboard, never in a page executed by a book build, papermill or nbval."""

import io
import sys
from pathlib import Path
from types import SimpleNamespace

import IPython
import pytest
import torch

from robustnb.config import Run


def run_in(tmp_home: Path) -> Run:
    return Run(preset="smoke", seed=3, device=torch.device("cpu"), data=tmp_home / "d" / "data",
               cache=Path("/elsewhere/cache"))


def kernel(allow_stdin: bool):
    """An IPython shell in a kernel whose current cell was sent with ``allow_stdin`` (the messaging protocol)."""
    k = SimpleNamespace(get_parent=lambda: {"content": {"allow_stdin": allow_stdin}})
    return SimpleNamespace(kernel=k)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path))
    monkeypatch.setattr(sys, "stdin", io.StringIO())  # not a terminal
    return tmp_path


def test_executed_pages_name_preset_seed_device_threads_but_no_folder(home, monkeypatch):
    monkeypatch.setattr(IPython, "get_ipython", lambda: kernel(allow_stdin=False))  # nbclient: a book build
    line = str(run_in(home))
    assert line == (f"robustnb run: preset='smoke', seed=3, device=cpu, torch threads={torch.get_num_threads()}, "
                    "training in fp32")
    assert str(home) not in line and "/elsewhere" not in line


def test_a_script_without_terminal_prints_no_folder(home, monkeypatch):
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    assert "\n" not in str(run_in(home))


def test_interactive_sessions_show_folders_with_home_as_tilde(home, monkeypatch):
    monkeypatch.setattr(IPython, "get_ipython", lambda: kernel(allow_stdin=True))  # Jupyter, Colab
    line = str(run_in(home))
    assert "data:  ~/d/data" in line and "cache: /elsewhere/cache" in line
    assert str(home) not in line


def test_python_at_a_terminal_shows_folders(home, monkeypatch):
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    tty = io.StringIO()
    tty.isatty = lambda: True
    monkeypatch.setattr(sys, "stdin", tty)
    assert "cache: /elsewhere/cache" in str(run_in(home))


def test_progress_bars_are_off_in_executed_pages_and_on_for_a_person(monkeypatch):
    """A book build, papermill or nbval saves no progress widget into a page (robustnb.progress.tqdm)."""
    from robustnb import progress

    monkeypatch.setattr(IPython, "get_ipython", lambda: kernel(allow_stdin=False))
    assert progress.tqdm(range(3), disable=False).disable  # off even when asked for (TQDM_DISABLE set or not)
    monkeypatch.setattr(IPython, "get_ipython", lambda: kernel(allow_stdin=True))
    bar = progress.tqdm(range(3), file=io.StringIO(), disable=False)
    assert not bar.disable  # a person watching gets the bar
    bar.close()
