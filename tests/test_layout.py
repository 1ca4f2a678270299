"""The package's layout: every module is described in robustnb/__init__.py, every chapter has its module and
its tests, and the layers contract is in pyproject.toml."""

import importlib
import pkgutil
import re
import tomllib
from pathlib import Path

import robustnb
from robustnb import book

ROOT = Path(__file__).resolve().parent.parent


def _modules():
    return [m.name for m in pkgutil.iter_modules(robustnb.__path__, "robustnb.")]


def test_every_top_level_module_is_listed_in_the_package_docstring():
    missing = [m for m in _modules() if f"``{m}``" not in robustnb.__doc__]
    assert not missing, f"describe these modules in robustnb/__init__.py: {missing}"


def test_every_chapter_has_its_module_and_its_tests():
    for nb in book.chapters():
        name = nb.stem
        assert (ROOT / "robustnb" / "chapters" / f"{name}.py").exists(), f"robustnb/chapters/{name}.py missing"
        assert (ROOT / "tests" / "chapters" / f"test_{name}.py").exists(), f"tests/chapters/test_{name}.py missing"
        importlib.import_module(f"robustnb.chapters.{name}")
    modules = {p.stem for p in (ROOT / "robustnb" / "chapters").glob("*.py")} - {"__init__"}
    assert modules == {nb.stem for nb in book.chapters()}, "a chapter module without a chapter in _toc.yml"


def test_layers_contract_names_every_top_level_module():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in cfg["contracts"] if c["type"] == "layers")["layers"]
    named = {m.strip() for line in layers for m in line.replace(":", "|").split("|")}
    assert set(_modules()) == named, set(_modules()) ^ named


def test_claims_ledger_is_up_to_date_and_in_the_toc():
    assert (ROOT / book.LEDGER).read_text() == book.ledger_markdown(), "run: python -m robustnb.book ledger"
    assert book.LEDGER.removesuffix(".md") in book.toc_files()


def test_every_chapter_declares_its_claims_with_unique_ids():
    seen = {}
    for nb in book.chapters():
        mod = importlib.import_module(f"robustnb.chapters.{nb.stem}")
        for cid in getattr(mod, "PAPER_CLAIMS", {}):
            assert cid not in seen, f"claim id {cid!r} in {nb.stem} and {seen[cid]}"
            seen[cid] = nb.stem


def test_every_chapter_caches_its_experiments():
    """A rebuild reads results back instead of recomputing them: each chapter's expensive measurements are
    ``robustnb.cache.experiment`` functions (keyed by config, inputs and code)."""
    for nb in book.chapters():
        mod = importlib.import_module(f"robustnb.chapters.{nb.stem}")
        cached = [n for n, f in vars(mod).items() if callable(f) and hasattr(f, "uncached")]
        assert cached, f"robustnb/chapters/{nb.stem}.py caches no experiment (decorate it with @experiment)"
        source = nb.read_text() + (ROOT / "robustnb" / "chapters" / f"{nb.stem}.py").read_text()
        used = [n for n in cached if re.search(rf"(?<!def )\b{n}\(", source)]
        assert used, f"{nb.stem}: its cached experiments {cached} are never called"
