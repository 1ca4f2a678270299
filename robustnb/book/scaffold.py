"""A new chapter, whole: ``python -m robustnb.book new NAME "Title" [--part CAPTION]``.

:func:`chapter` writes everything a chapter of this book is (``tests/test_scaffold.py`` runs the chapter tests on
one): the notebook ``book/NAME.ipynb`` (its question, the runtime box, the shared Colab, parameters and set-up
cells, the study's calls, a figure, a summary and exercises), the module ``robustnb/chapters/NAME.py`` (a config
per preset, one cached experiment, a figure, ``reproduce(run)`` for ``python -m robustnb reproduce NAME``), its
tests ``tests/chapters/test_NAME.py``, an entry in ``_toc.yml`` (at the end of part ``CAPTION``, or a part of its
own before the summary), a row in the introduction's runtime table and an entry in ``book/runtimes.json``: the chapter is executed once at ``smoke`` (papermill), which
stores nbval's reference output and the smoke time; the ``cpu`` time is recorded as an estimate until
``python -m robustnb.bench --preset cpu --chapters NAME --fresh-cache`` measures it. The example measurement (mean
brightness per class of a stratified CIFAR-10 test subset) is there to be replaced by the study's own.

Checked before anything is written: ``NAME`` is a lower-case Python identifier that names no chapter, module,
test or notebook yet, the title is text and ``CAPTION`` a part of ``_toc.yml``. Nothing that exists is
overwritten; when the smoke run fails, the files it made are removed, ``_toc.yml``, the introduction and
``book/runtimes.json`` restored, and the error says why.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import nbformat

from robustnb.book import cells, runtimes
from robustnb.book.toc import ROOT, toc_parts
from robustnb.config import ConfigError

NAME = re.compile(r"[a-z][a-z0-9_]*")
#: the part a chapter without ``--part`` goes before (the claims ledger's)
LAST_PART = "Summary"

MODULE = '''"""Chapter ``book/{stem}.ipynb``: {title}.

What the notebook calls: :class:`StudyConfig` picks the sizes per preset, :func:`measure` is the study's cached
experiment (keyed by its config and its code), :func:`figure` draws it and :func:`reproduce` runs it without
Jupyter (``python -m robustnb reproduce {stem}``). Replace the example measurement with the study's own; a paper's
claims are declared as in the other chapters (``PAPER_CLAIMS``, ``stats.PaperClaim`` with the worlds they must read,
``world_claims``), and ``reproduce`` then returns their ``stats.claims_table``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from robustnb import data, plots
from robustnb.cache import experiment
from robustnb.config import Run, pick

#: the papers' figures and the book's fixed settings that the prose may type (none yet)
QUOTED_NUMBERS: tuple[str, ...] = ()


@dataclass(frozen=True)
class StudyConfig:
    n_images: int
    seed: int = 0

    @classmethod
    def from_preset(cls, preset: str, seed: int = 0) -> "StudyConfig":
        return cls(n_images=pick(preset, smoke=200, cpu=2_000, full=10_000), seed=seed)


@experiment
def measure(cfg: StudyConfig) -> pd.DataFrame:
    """The example measurement: per class of a stratified CIFAR-10 test subset, its images and their mean
    brightness (pixel values in [0, 1])."""
    test = data.load_cifar10("test").subset(cfg.n_images, cfg.seed)
    x, y = test.tensors()
    frame = pd.DataFrame({{"class": [test.classes[i] for i in y.tolist()],
                          "brightness": x.mean(dim=(1, 2, 3)).tolist()}})
    return frame.groupby("class", as_index=False).agg(images=("brightness", "size"),
                                                      brightness=("brightness", "mean"))


def summary(frame: pd.DataFrame) -> dict[str, str]:
    """The numbers the prose quotes, formatted (glued by ``book.record``; names start with the chapter's)."""
    top = frame.loc[frame["brightness"].idxmax()]
    return {{"{stem}_images": f"{{int(frame['images'].sum()):,}}",
            "{stem}_brightest": f"{{top['class']}} (mean {{top['brightness']:.3f}})"}}


def figure(frame: pd.DataFrame):
    return plots.bar(frame, x="class", y="brightness", title="Mean brightness per class")


def reproduce(run: Run) -> pd.DataFrame:
    """The notebook's calls without Jupyter, in its order, at ``run``'s preset and seed: the numbers its prose
    quotes (``number``, ``ours``)."""
    cfg = StudyConfig.from_preset(run.preset, run.seed)
    frame = measure(cfg)
    numbers = summary(frame)
    return pd.DataFrame({{"number": list(numbers), "ours": list(numbers.values())}})
'''

TEST = '''"""The {stem} chapter's module (robustnb.chapters.{stem})."""

import pandas as pd
import pytest

from robustnb.chapters import {stem} as ch
from robustnb.config import PRESETS


@pytest.mark.parametrize("preset", PRESETS)
def test_config_for_every_preset(preset):
    assert ch.StudyConfig.from_preset(preset, seed=1).n_images > 0


def test_the_summary_and_the_figure_read_the_frame():
    frame = pd.DataFrame({{"class": ["cat", "dog"], "images": [3, 4], "brightness": [0.4, 0.5]}})
    assert ch.summary(frame) == {{"{stem}_images": "7", "{stem}_brightest": "dog (mean 0.500)"}}
    assert list(ch.figure(frame).data[0].x) == ["cat", "dog"]
'''

STUDY = ("from robustnb.book import pages, record\nfrom robustnb.chapters import {stem} as ch\n\n"
         "cfg = ch.StudyConfig.from_preset(run.preset, run.seed)\nframe = ch.measure(cfg)\n"
         "record(**ch.summary(frame))\npages.table(frame, title=\"The measurement\")")


def notebook(path: Path, title: str, stem: str | None = None) -> Path:
    """Write a chapter notebook (refuses to overwrite): title and question, the runtime box, the Colab, parameters
    and set-up cells, then, with ``stem``, the calls of ``robustnb.chapters.<stem>`` (the study and its figure),
    a summary and exercises. Checked first: ``path`` ends in ``.ipynb``, does not exist, its folder does."""
    path = Path(path)
    if path.suffix != ".ipynb":
        raise ConfigError(f"a chapter is a notebook: {path} must end in .ipynb (e.g. {path.with_suffix('.ipynb')}).")
    if path.exists() or path.is_symlink():
        raise FileExistsError(f"{path} exists; not overwriting it")
    if not path.parent.is_dir():
        raise ConfigError(f"the folder of {path} does not exist ({path.parent}): the book's chapters live in book/.")
    if not isinstance(title, str) or not title.strip():
        raise ConfigError(f"the chapter needs a title, got {title!r}.")
    nb = nbformat.v4.new_notebook()
    nb.metadata.update(cells.with_colab_metadata({"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                 "language": "python"},
                                                  "language_info": {"name": "python"}}))
    params = nbformat.v4.new_code_cell(cells.PARAMETERS_SOURCE)
    params.metadata["tags"] = ["parameters", cells.FOLD_TAG]
    setup = nbformat.v4.new_code_cell(cells.SETUP_SOURCE)
    setup.metadata["tags"] = [cells.NBVAL_TAG, cells.FOLD_TAG]
    study = []
    if stem:
        study = [nbformat.v4.new_markdown_cell("## The study\n\nWhat is measured, on which data, and why."),
                 nbformat.v4.new_code_cell(STUDY.format(stem=stem)),
                 nbformat.v4.new_markdown_cell(f"Of the {{glue:text}}`{stem}_images` images measured, the brightest "
                                               f"class is {{glue:text}}`{stem}_brightest`. What the figure shows."),
                 nbformat.v4.new_code_cell("ch.figure(frame)")]
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {title}\n\nThe question, and the phenomenon in one picture or number.\n\n"
                                      + cells.runtime_box(path.stem)),
        cells.folded(nbformat.v4.new_code_cell(cells.colab_cell_source())),
        params,
        setup,
        *study,
        nbformat.v4.new_markdown_cell("## Summary\n\nWhat held, what did not, and why."),
        nbformat.v4.new_markdown_cell("## Exercises\n\n1. ...\n2. ..."),
    ]
    with open(path, "x") as f:  # exclusive: a file made since the check is not overwritten either
        nbformat.write(nb, f)
    return path


def with_toc_entry(toc: str, stem: str, part: str | None, title: str) -> str:
    """``_toc.yml``'s text with ``book/<stem>`` at the end of part ``part``, or (None) in a part of its own
    captioned ``title`` before the :data:`LAST_PART` part (at the end without one); comments are kept."""
    entry = f"      - file: book/{stem}\n"
    lines = toc.splitlines(keepends=True)
    captions = [i for i, line in enumerate(lines) if line.startswith("  - caption: ")]
    if part is None:
        at = next((i for i in captions if lines[i].split(":", 1)[1].strip() == LAST_PART), len(lines))
        return "".join(lines[:at] + [f"  - caption: {title}\n", "    chapters:\n", entry] + lines[at:])
    start = next(i for i in captions if lines[i].split(":", 1)[1].strip() == part)
    end = next((i for i in captions if i > start), len(lines))
    last = max(i for i in range(start, end) if lines[i].lstrip().startswith("- file: "))
    return "".join(lines[:last + 1] + [entry] + lines[last + 1:])


def with_intro_row(intro: str, stem: str, title: str) -> str:
    """The introduction's text with the chapter's row in its runtime table (marked spans that ``sync`` fills), just
    above the whole book's row; unchanged when the introduction has no such table."""
    lines = intro.splitlines(keepends=True)
    at = next((i for i, line in enumerate(lines) if line.startswith("| **whole book** |")), None)
    if at is None:
        return intro
    row = f"| {title} | " + " | ".join(runtimes.span(f"rt_{p}_{stem}") for p in ("smoke", "cpu", "gpu")) + " |\n"
    return "".join(lines[:at] + [row] + lines[at:])


def _check(stem: str, title: str, part: str | None, root: Path) -> dict[str, Path]:
    if not isinstance(stem, str) or not NAME.fullmatch(stem):
        raise ConfigError(f"a chapter's name is a lower-case Python identifier (it names its module), got {stem!r}: "
                          "e.g. 'pruning_under_attack'.")
    if not isinstance(title, str) or not title.strip():
        raise ConfigError(f"the chapter needs a title, got {title!r}.")
    captions = [caption for caption, _ in toc_parts(root)]
    if part is not None and part not in captions:
        raise ConfigError(f"Unknown part {part!r} of _toc.yml: choose one of {captions}, or leave it out for a part "
                          "of the chapter's own.")
    files = {"notebook": root / "book" / f"{stem}.ipynb", "module": root / "robustnb" / "chapters" / f"{stem}.py",
             "test": root / "tests" / "chapters" / f"test_{stem}.py"}
    taken = [str(p.relative_to(root)) for p in files.values() if p.exists() or p.is_symlink()]
    if taken or f"book/{stem}" in (root / "_toc.yml").read_text():
        raise FileExistsError(f"a chapter named {stem!r} exists ({', '.join(taken) or '_toc.yml'}); not overwriting "
                              "it: choose another name.")
    return files


def _smoke_run(notebook_path: Path, root: Path) -> dict:
    """Execute the new chapter at ``smoke`` as ``python -m robustnb.bench`` times a chapter
    (:func:`robustnb.book.runtimes.measure`) and store nbval's reference output; returns the measurement."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / notebook_path.name
        result = runtimes.measure(notebook_path, "smoke", out, env=env, cwd=root)
        if result.get("error"):
            raise ConfigError(f"executing the new chapter {notebook_path.name} at smoke failed, so it was removed: "
                              f"{result['error']}")
        cells.store_checked_outputs(notebook_path, out)
    return result


def chapter(stem: str, title: str, part: str | None = None, root: Path = ROOT, execute: bool = True) -> list[Path]:
    """Write the chapter ``stem`` (see the module's docstring) and return the files written or changed."""
    files = _check(stem, title, part, root)
    toc_path, times_path, intro_path = root / "_toc.yml", root / "book" / "runtimes.json", root / "book" / "intro.md"
    toc, times = toc_path.read_text(), times_path.read_text()
    intro = intro_path.read_text() if intro_path.exists() else None
    made = []
    try:
        for kind, template in (("module", MODULE), ("test", TEST)):
            with open(files[kind], "x") as f:
                f.write(template.format(stem=stem, title=title.strip()))
            made.append(files[kind])
        made.append(notebook(files["notebook"], title.strip(), stem))
        toc_path.write_text(with_toc_entry(toc, stem, part, title.strip()))
        if intro is not None:
            intro_path.write_text(with_intro_row(intro, stem, title.strip()))
        if execute:
            measured = _smoke_run(files["notebook"], root)
            day = time.strftime("%Y-%m-%d")
            runtimes.save([(stem, measured["seconds"], measured["peak_mb"], measured.get("longest_cell_s"))],
                          "smoke", times_path, how=f"the scaffold's smoke run on {day}")
            runtimes.estimate(stem, "cpu", measured["seconds"], times_path,
                              how=f"the smoke run's time on {day}, until `python -m robustnb.bench --preset cpu "
                                  f"--chapters {stem} --fresh-cache` measures it")
        changed = cells.sync(root)
    except BaseException:
        for p in made:
            p.unlink(missing_ok=True)
        toc_path.write_text(toc)
        times_path.write_text(times)
        if intro is not None:
            intro_path.write_text(intro)
        raise
    touched = [*made, toc_path, *([times_path] if execute else []), *([intro_path] if intro is not None else [])]
    return list(dict.fromkeys([*touched, *changed]))
