"""Every cached result is keyed by the code it runs: crafted transfer examples and the TV defense's tuning go
through ``robustnb.cache.experiment`` (issue 23, item 1), so editing a mechanism recomputes them, and only them."""

import shutil
from pathlib import Path

import robustnb
from robustnb.cache import code_fingerprint
from robustnb.chapters import heterogeneous_ensembles as H
from robustnb.chapters import tv_defense as T

PKG = Path(robustnb.__file__).resolve().parent


def test_crafting_and_tv_tuning_are_experiments():
    for fn in (H.crafted, T.tuning_frame):
        assert hasattr(fn, "uncached"), f"{fn.__name__} is not cached through robustnb.cache.experiment"


def _fingerprints(root: Path) -> dict[str, str]:
    return {m: code_fingerprint(f"robustnb.chapters.{m}", root=root)
            for m in ("heterogeneous_ensembles", "tv_defense", "split_computing")}


def test_editing_a_mechanism_changes_the_keys_of_the_results_that_run_it(tmp_path):
    root = tmp_path / "robustnb"
    shutil.copytree(PKG, root, ignore=shutil.ignore_patterns("__pycache__"))
    before = _fingerprints(root)
    with open(root / "attacks" / "transfer.py", "a") as f:
        f.write("\n# an edit to the transfer attacks\n")
    after = _fingerprints(root)
    assert after["heterogeneous_ensembles"] != before["heterogeneous_ensembles"]  # the crafted examples
    assert after["split_computing"] == before["split_computing"]  # unrelated: kept
    with open(root / "defenses.py", "a") as f:
        f.write("\n# an edit to the defenses\n")
    assert _fingerprints(root)["tv_defense"] != after["tv_defense"]  # the TV tuning
    assert _fingerprints(root)["split_computing"] == before["split_computing"]
