"""Every chapter listed in _toc.yml: its structure, and a papermill run at the smoke preset."""

import json
import os
from pathlib import Path

import pytest

from robustnb import book

CHAPTERS = book.chapters()
IDS = [p.stem for p in CHAPTERS]


def cells(path: Path):
    return json.loads(path.read_text())["cells"]


def test_toc_lists_chapters():
    assert CHAPTERS, "no chapter notebooks found through _toc.yml"
    assert book.toc_files()[0] == "book/intro"


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_chapter_structure(path):
    cs = cells(path)
    first = "".join(cs[0]["source"])
    assert cs[0]["cell_type"] == "markdown" and first.startswith("# "), "a chapter opens with its # title"
    assert "Compute and runtime" in first and "| `cpu`" in first, "the runtime box opens every chapter"
    code = [c for c in cs if c["cell_type"] == "code"]
    assert "".join(code[0]["source"]) == book.colab_cell_source(), "Colab cell out of date: python -m robustnb.book sync"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1 and "preset = None" in "".join(params[0]["source"])
    assert all(not c.get("outputs") for c in code), "store chapters without outputs"


@pytest.mark.chapters
@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_chapter_runs_under_papermill(path, tmp_path):
    import papermill as pm

    out = tmp_path / path.name
    pm.execute_notebook(str(path), str(out), parameters={"preset": "smoke"}, kernel_name="python3",
                        cwd=str(path.parent), progress_bar=False)
    executed = json.loads(out.read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    injected = [c for c in executed["cells"] if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    assert injected and "preset = \"smoke\"" in "".join(injected[0]["source"])


@pytest.mark.chapters
def test_bogus_preset_via_papermill_fails_at_once(tmp_path):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(CHAPTERS[0]), str(tmp_path / "out.ipynb"), parameters={"preset": "bogus"},
                            kernel_name="python3", cwd=str(CHAPTERS[0].parent), progress_bar=False)
    msg = str(e.value)
    assert "Unknown preset 'bogus'" in msg and all(p in msg for p in ("'smoke'", "'cpu'", "'full'"))
