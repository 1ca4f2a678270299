"""Every number the chapters' prose states about our runs comes through MyST-NB glue.

In a chapter's markdown (the runtime box aside, which ``python -m robustnb.bench`` measures), a number that
looks measured (a decimal, a percentage, a count of points, bytes, seconds, a ratio "1.2x") must either be
inside a ``{glue:...}`` role or be one the chapter module lists in ``QUOTED_NUMBERS``: the papers' own figures
and the book's fixed settings. Inline code and maths are settings and formulas, not results, and are skipped.
"""

import importlib
import json
import re

import pytest

from robustnb import book

CHAPTERS = book.chapters()
EVERYWHERE = ("95%",)  # the confidence level of every interval
NUMBER = re.compile(r"(?<![\w.])[+-]?\d[\d,]*(?:\.\d+)?(?:\s?(?:%|x\b|×|points?\b|pp\b|bytes?\b|B\b|KB\b|s\b|"
                    r"seconds?\b|min\b|minutes?\b|h\b))|(?<![\w.])[+-]?\d+\.\d+")
STRIP = [re.compile(p, re.S) for p in (r'<details class="runtime-box">.*?</details>', r"\{glue(?::\w+)?\}`[^`]*`",
                                        r"`[^`]*`", r"\$\$.*?\$\$", r"\$[^$]*\$", r"\]\([^)]*\)", r"<[^>]+>")]


def unglued_numbers(text: str) -> list[str]:
    for p in STRIP:
        text = p.sub(" ", text)
    return [m.group(0).strip() for m in NUMBER.finditer(text)]


def test_the_detector():
    assert unglued_numbers("we measured +17.3% and 0.25 and 12 points, 389 bytes, 1.2x") == \
        ["+17.3%", "0.25", "12 points", "389 bytes", "1.2x"]
    assert unglued_numbers("{glue:text}`acc` at $\\epsilon = 8/255$, `lam=0.04`, N = 5 nodes, Table 2") == []


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_measured_numbers_in_prose_are_glued(path):
    mod = importlib.import_module(f"robustnb.chapters.{path.stem}")
    allowed = {q.replace(" ", "") for q in (*getattr(mod, "QUOTED_NUMBERS", ()), *EVERYWHERE)}
    cells = json.loads(path.read_text())["cells"]
    found = []
    for i, c in enumerate(cells):
        if c["cell_type"] == "markdown":
            found += [(i, n) for n in unglued_numbers("".join(c["source"])) if n.replace(" ", "").lstrip("+") not in
                      {a.lstrip("+") for a in allowed}]
    assert not found, (f"numbers typed in {path.name}'s prose (glue them, or list a paper's figure or a setting in "
                       f"QUOTED_NUMBERS of robustnb/chapters/{path.stem}.py): {found}")


#: phrases of a changelog: the pages describe the book as it is (git holds its history)
CHANGELOG = re.compile(r"\b(earlier|previous|older|last|former) (builds?|runs?|sessions?|protocols?|versions?)\b|"
                       r"\bas (earlier|before)\b|\bno longer\b", re.I)


@pytest.mark.parametrize("path", [*CHAPTERS, book.ROOT / "book" / "intro.md"],
                         ids=[*(p.stem for p in CHAPTERS), "intro"])
def test_prose_keeps_no_changelog(path):
    if path.suffix == ".ipynb":
        texts = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown"]
    else:
        texts = [path.read_text()]
    found = [m.group(0) for t in texts for m in CHANGELOG.finditer(t)]
    assert not found, f"{path.name} tells its history ({found}): say what the book does and why, not what it did"
