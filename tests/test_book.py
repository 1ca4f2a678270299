"""The book tools (robustnb.book): which notebooks a rebuild re-executes."""

import yaml

from robustnb import book
from conftest import ROOT


def test_execution_cache_is_per_preset_and_package_source(tmp_path):
    root = tmp_path / "repo"
    (root / "robustnb").mkdir(parents=True)
    (root / "robustnb" / "a.py").write_text("x = 1\n")
    smoke = book.execution_cache_path(tmp_path / "_build", "smoke", root)
    assert smoke.parent == tmp_path / "_build" / ".jupyter_cache"
    assert book.execution_cache_path(tmp_path / "_build", "smoke", root) == smoke  # a prose edit: same cache
    assert book.execution_cache_path(tmp_path / "_build", "cpu", root) != smoke
    (root / "robustnb" / "a.py").write_text("x = 2\n")  # a code edit: every notebook re-executes
    code = book.execution_cache_path(tmp_path / "_build", "smoke", root)
    assert code != smoke


def test_a_docstring_or_comment_edit_re_executes_no_chapter_unless_a_page_shows_it(tmp_path):
    import nbformat

    root = tmp_path / "repo"
    (root / "robustnb").mkdir(parents=True)
    (root / "book").mkdir()
    module = root / "robustnb" / "a.py"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%matplotlib inline\nshow_source(a.shown)")])
    nbformat.write(nb, root / "book" / "ch.ipynb")

    def path(text):
        module.write_text(text)
        return book.execution_cache_path(tmp_path / "_build", "smoke", root)

    base = path('def hidden():\n    """Doc."""\n    return 1\n\n\ndef shown():\n    return 2\n')
    assert path('def hidden():\n    """Another doc."""\n    return 1  # a comment\n\n\ndef shown():\n    return 2\n') == base
    assert path('def hidden():\n    """Doc."""\n    return 3\n\n\ndef shown():\n    return 2\n') != base
    assert path('def hidden():\n    """Doc."""\n    return 1\n\n\ndef shown():\n    """Shown."""\n    return 2\n') != base


def test_the_book_uses_the_cache_keyed_by_preset():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "cache" and not cfg["execute"].get("cache")
    assert "robustnb.book" in cfg["sphinx"]["extra_extensions"]

    class Config:
        nb_execution_mode, nb_execution_cache_path = "cache", ""

    class App:
        outdir = "/x/_build/html"

    c = Config()
    book.sphinx_ext._set_execution_cache(App(), c)
    assert c.nb_execution_cache_path.startswith("/x/_build/.jupyter_cache/")
