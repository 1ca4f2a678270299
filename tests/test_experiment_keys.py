"""Every cached result is keyed by the code it runs: crafted transfer examples and the TV defense's tuning go
through ``robustnb.cache.experiment``, so editing a mechanism recomputes them, and only them
(the code each experiment reaches: see ``test_code_keys``)."""

import ast

from robustnb.chapters import heterogeneous_ensembles as H
from robustnb.chapters import tv_defense as T
from test_code_keys import base_keys, copy_package, keys_of  # noqa: F401  (base_keys: a fixture)


def test_crafting_and_tv_tuning_are_experiments():
    for fn in (H.crafted, T.tuning_frame):
        assert hasattr(fn, "uncached"), f"{fn.__name__} is not cached through robustnb.cache.experiment"


def _edit_class(path, cls_name: str) -> None:
    """A real code change: a statement added at the end of the body of class ``cls_name``."""
    tree = ast.parse(path.read_text())
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls_name)
    last = cls.body[-1]
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(last.end_lineno, " " * last.col_offset + "_an_edit = 1\n")
    path.write_text("".join(lines))


def test_editing_a_mechanism_changes_the_keys_of_the_results_that_run_it(base_keys, tmp_path):  # noqa: F811
    root = copy_package(tmp_path)
    _edit_class(root / "attacks" / "transfer.py", "CWA")
    _edit_class(root / "defenses.py", "DisentangledTV")
    after = keys_of(root)
    changed = {k for k in base_keys if after[k] != base_keys[k]}
    assert {"heterogeneous_ensembles.crafted[cwa]", "tv_defense.tuning_frame", "tv_defense.evaluate"} <= changed
    # unrelated: kept
    assert not {k for k in changed if k.startswith(("split_computing.", "entropy_attacks.", "getting_started."))}
    assert not {"heterogeneous_ensembles._node_logits", "heterogeneous_ensembles.crafted[sam]"} & changed
