"""Every chapter listed in _toc.yml: its structure, and a papermill run at the smoke preset."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from robustnb import book
from robustnb.book import cells as book_cells

CHAPTERS = book.chapters()
IDS = [p.stem for p in CHAPTERS]


def cells(path: Path):
    return json.loads(path.read_text())["cells"]


def test_toc_lists_chapters():
    assert CHAPTERS, "no chapter notebooks found through _toc.yml"
    assert book.toc_files()[0] == "book/intro"


def check_structure(path: Path) -> None:
    """What every chapter notebook must look like (the new-chapter scaffold is checked against it too)."""
    cs = cells(path)
    first = "".join(cs[0]["source"])
    assert cs[0]["cell_type"] == "markdown" and first.startswith("# "), "a chapter opens with its # title"
    assert "Compute and runtime" in first and "| `cpu`" in first, "the runtime box opens every chapter"
    code = [c for c in cs if c["cell_type"] == "code"]
    assert "".join(code[0]["source"]) == book.colab_cell_source(), "Colab cell out of date: python -m robustnb.book sync"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1 and "preset = None" in "".join(params[0]["source"])
    checked = [c for c in code if book.NBVAL_TAG in c.get("metadata", {}).get("tags", [])]
    assert all(not c.get("outputs") for c in code if c not in checked), \
        "store chapters without outputs, except the cells nbval compares (tag nbval-check-output)"
    assert checked and all(c.get("outputs") for c in checked), \
        "a few deterministic cells keep their smoke outputs for nbval to compare (python -m robustnb.book nbval)"
    assert first.count(book_cells.BOX_OPEN) == 1 and book_cells.BOX_CLOSE in first, "the runtime box is a folded <details> block"
    box = first[first.index(book_cells.BOX_OPEN):first.index(book_cells.BOX_CLOSE)]
    for preset in ("smoke", "cpu"):
        for kind in ("rt", "mem", "how"):
            assert f'<span data-rt="{kind}_{preset}_{path.stem}">' in box, \
                f"the {preset} row's {kind} comes from book/runtimes.json (robustnb.book.runtimes: a marked span)"


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_chapter_structure(path):
    check_structure(path)




def reader_env() -> dict:
    """The environment a reader's shell has: none of the variables a Makefile might set for plotly or tqdm."""
    return {k: v for k, v in os.environ.items() if k not in ("PLOTLY_RENDERER", "TQDM_DISABLE")}


@pytest.mark.chapters
@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_chapter_runs_under_papermill(path, tmp_path):
    """The papermill command line, as the intro recommends it, in a reader's environment; a chapter that
    waits forever (an explorer cell stuck on a renderer) fails at the timeout instead of hanging CI."""
    out = tmp_path / path.name
    proc = subprocess.run([sys.executable, "-m", "papermill", str(path), str(out), "-p", "preset", "smoke",
                           "-k", "python3", "--cwd", str(path.parent)],
                          env=reader_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    executed = json.loads(out.read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    injected = [c for c in executed["cells"] if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    assert injected and "preset = \"smoke\"" in "".join(injected[0]["source"])
    html = [o for c in executed["cells"] for o in c.get("outputs", []) if "plotly-graph-div" in
            "".join(o.get("data", {}).get("text/html", ""))]
    assert html, "no figure reached the notebook as HTML: a static page would show none"


@pytest.mark.chapters
def test_bogus_preset_via_papermill_fails_at_once(tmp_path):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(CHAPTERS[0]), str(tmp_path / "out.ipynb"), parameters={"preset": "bogus"},
                            kernel_name="python3", cwd=str(CHAPTERS[0].parent), progress_bar=False)
    msg = str(e.value)
    assert "Unknown preset 'bogus'" in msg and all(p in msg for p in ("'smoke'", "'cpu'", "'full'"))
