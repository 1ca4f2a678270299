"""``python -m robustnb.book new``: a new chapter, whole, that passes the book's tests (robustnb.book.scaffold)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from robustnb.book import ROOT, scaffold, toc
from robustnb.config import ConfigError

TOC = """# a comment that stays
format: jb-book
root: book/intro
parts:
  - caption: Foundations
    chapters:
      - file: book/getting_started
  - caption: Papers
    chapters:
      - file: book/a
      - file: book/b
  - caption: Summary
    chapters:
      - file: book/claims
"""


def _files(text: str) -> list[list[str]]:
    return [[c["file"] for c in part["chapters"]] for part in yaml.safe_load(text)["parts"]]


def test_the_toc_entry_goes_at_the_end_of_its_part_or_in_a_part_before_the_summary():
    into = scaffold.with_toc_entry(TOC, "c", "Papers", "C")
    assert _files(into) == [["book/getting_started"], ["book/a", "book/b", "book/c"], ["book/claims"]]
    own = scaffold.with_toc_entry(TOC, "c", None, "A study of C")
    assert _files(own)[2] == ["book/c"] and yaml.safe_load(own)["parts"][2]["caption"] == "A study of C"
    assert _files(own)[3] == ["book/claims"]
    assert own.startswith("# a comment that stays") and into.startswith("# a comment that stays")


def test_the_introductions_runtime_table_gets_the_chapters_row_above_the_total():
    intro = "text\n\n| chapter | a | b | c |\n|---|---|---|---|\n| A | 1 | 2 | 3 |\n| **whole book** | x | y | z |\n"
    rows = scaffold.with_intro_row(intro, "c", "A study of C").splitlines()
    assert rows[-2].startswith("| A study of C | <span data-rt=\"rt_smoke_c\">") and 'data-rt="rt_gpu_c"' in rows[-2]
    assert rows[-1].startswith("| **whole book** |")
    assert scaffold.with_intro_row("no table", "c", "C") == "no table"


@pytest.mark.parametrize("name, title, part, error, match", [
    ("My study", "T", None, ConfigError, "lower-case Python identifier"),
    ("2nd", "T", None, ConfigError, "lower-case Python identifier"),
    ("fresh_name", " ", None, ConfigError, "needs a title"),
    ("fresh_name", "T", "Nowhere", ConfigError, "Unknown part 'Nowhere'.*'Foundations'"),
    ("getting_started", "T", None, FileExistsError, "exists.*book/getting_started.ipynb"),
])
def test_bad_arguments_are_refused_before_anything_is_written(name, title, part, error, match):
    before = {p: p.read_text() for p in (ROOT / "_toc.yml", ROOT / "book" / "runtimes.json", ROOT / "book" / "intro.md")}
    with pytest.raises(error, match=match):
        scaffold.chapter(name, title, part)
    assert {p: p.read_text() for p in before} == before
    assert not (ROOT / "robustnb" / "chapters" / f"{name}.py").exists() or name == "getting_started"


def _copy_of_the_repository(dest: Path) -> Path:
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    for rel in filter(None, tracked.stdout.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.mark.chapters
def test_a_new_chapter_passes_the_books_tests(tmp_path):
    """In a copy of the repository, ``new`` writes a chapter; the tests every chapter must pass (structure, layout,
    prose, runtimes, the CI workflow's budget, the command line, papermill, nbval, import layers) then pass with
    it, and its three files (notebook, module, test) are the ones a contributor edits."""
    repo = _copy_of_the_repository(tmp_path / "repo")
    env = {**os.environ, "PYTHONPATH": str(repo)}

    def run(*args, timeout=900):
        return subprocess.run([sys.executable, *args], cwd=repo, env=env, capture_output=True, text=True,
                              timeout=timeout)

    made = run("-m", "robustnb.book", "new", "pixel_study", "Pixel study", "--part", "Foundations")
    assert made.returncode == 0, made.stderr[-3000:]
    written = {line.split(" ", 1)[1] for line in made.stdout.splitlines() if line.startswith("wrote ")}
    assert {"book/pixel_study.ipynb", "robustnb/chapters/pixel_study.py", "tests/chapters/test_pixel_study.py",
            "_toc.yml", "book/runtimes.json", "book/intro.md"} <= written, made.stdout
    assert '| Pixel study | <span data-rt="rt_smoke_pixel_study">' in (repo / "book" / "intro.md").read_text()
    assert "book/pixel_study" in dict(toc.toc_parts(repo))["Foundations"]
    again = run("-m", "robustnb.book", "new", "pixel_study", "Pixel study")
    assert again.returncode == 2 and "exists" in again.stderr

    generic = ["tests/test_layout.py", "tests/test_chapters.py", "tests/test_prose.py", "tests/test_runtimes.py",
               "tests/test_workflow.py", "tests/test_colab_cell.py", "tests/test_claim_worlds.py",
               "tests/chapters/test_pixel_study.py"]
    checks = [
        ("-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not chapters and not book", *generic),
        ("-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "pixel_study", "tests/test_chapters.py",
         "tests/test_full_paths.py", "tests/test_cli.py"),
        ("-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env", "--nbval-sanitize-with",
         "tests/nbval_sanitize.cfg",
         "book/pixel_study.ipynb"),
    ]
    env["ROBUSTNB_PRESET"] = "smoke"  # as `make test` runs nbval
    for args in checks:
        proc = run(*args)
        assert proc.returncode == 0, f"{' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
    lint = Path(sys.executable).with_name("lint-imports")
    if lint.exists():  # the import layers (pyproject.toml's contracts) with the new module in its layer
        proc = subprocess.run([str(lint)], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"lint-imports:\n{proc.stdout[-3000:]}"
