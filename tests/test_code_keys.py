"""A result's key holds the code that computes it, by its normalised syntax.

Every ``@experiment`` of ``robustnb/chapters/*.py`` is fingerprinted with representative arguments (the
chapters' configs at ``smoke``, untrained models of the kinds the chapters pass, small datasets) in a
subprocess that imports a *copy* of the package (``PYTHONPATH``), so the real tree is never touched: once as
it is, and once per edit. A docstring or comment edit anywhere, or an edit to the figures, widgets or
progress bars, changes no key; an edit to the entropy attack's step changes exactly the keys of the
experiments that run the entropy attack. A few experiments also run under a profiler: every robustnb function
they execute must be in their key (no dependency missed by the static reach).

Run as a script (``python tests/test_code_keys.py OUT.json``, with the package copy on ``PYTHONPATH``) it
writes ``{experiment: code fingerprint}``.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "robustnb"

#: the experiments that run the entropy attack (``robustnb.attacks.entropy.EntropyAttack``), read from the
#: chapters: the entropy chapter's attack grid, the frequency chapter's attacked inputs, and the TV chapter's
#: tuning (entropy-attacked images) and evaluation (entropy and adaptive attacks, the latter wrapping it)
USES_ENTROPY_ATTACK = {"entropy_attacks.attack_images", "frequency_analysis.measurements",
                       "tv_defense.tuning_frame", "tv_defense.evaluate"}


# ------------------------------------------------------------------------------ the harness (subprocess)
def representative_calls() -> dict:
    """``{label: (experiment, kwargs)}``: every experiment of the chapters with arguments of the kinds the
    chapters pass at ``smoke`` (configs from the preset, untrained models with a cache key, small datasets)."""
    import torch

    from robustnb import compression as C
    from robustnb import domains as Dm
    from robustnb import distributed as Ds
    from robustnb.chapters import compressed_domain_shift as cd
    from robustnb.chapters import entropy_attacks as ea
    from robustnb.chapters import frequency_analysis as fa
    from robustnb.chapters import getting_started as gs
    from robustnb.chapters import heterogeneous_ensembles as he
    from robustnb.chapters import split_computing as sc
    from robustnb.chapters import tv_defense as tv
    from robustnb.data import CIFAR10_CLASSES, ImageDataset
    from robustnb.models import build_classifier
    from robustnb.split import build_split_model, model_grid
    from robustnb.train import TrainConfig

    torch.manual_seed(0)
    counter = iter(range(10**6))

    def keyed(model):
        model.robustnb_info = {"key": f"model{next(counter)}"}
        return model.eval()

    def dataset(name="cifar10/test", n=20):
        return ImageDataset(name, torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8), torch.arange(n) % 10,
                            list(CIFAR10_CLASSES), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

    test_set = dataset()
    x, y = test_set.tensors()
    archs, ems, lams = model_grid("smoke")
    split_models = {(a, em, lam): keyed(build_split_model(a, em)) for a in archs for em in ems for lam in lams}
    calls = {}

    # getting started
    cfg = gs.BaselineConfig.from_preset("smoke")
    calls["getting_started.robustness"] = (gs.robustness, dict(cfg=cfg, model=keyed(build_classifier(cfg.arch)),
                                                               test_set=test_set))
    # split computing
    cfg = sc.SplitComputingConfig.from_preset("smoke")
    calls["split_computing.image_rates"] = (sc.image_rates, dict(cfg=cfg, models=split_models, test_set=test_set))
    # entropy attacks
    cfg = ea.EntropyAttacksConfig.from_preset("smoke")
    for f in (ea.attack_images, ea.corruption_images):
        calls[f"entropy_attacks.{f.__name__}"] = (f, dict(cfg=cfg, models=split_models, test_set=test_set))
    # frequency analysis
    cfg = fa.FrequencyConfig.from_preset("smoke")
    models = {(em, lam): m for (a, em, lam), m in split_models.items()}
    calls["frequency_analysis.measurements"] = (fa.measurements, dict(cfg=cfg, models=models, x=x, y=y))
    # TV defense
    cfg = tv.DefenseConfig.from_preset("smoke")
    models = {em: m for (a, em, lam), m in split_models.items()}
    tuned = {em: cfg.settings for em in models}
    calls["tv_defense.tuning_frame"] = (tv.tuning_frame, dict(
        model=next(iter(models.values())), x=x, y=y, eps_255=cfg.claim_eps_255, steps=cfg.attack_steps,
        draws=cfg.attack_draws, settings=cfg.settings, grid=tv.tuning_grid(cfg)))
    calls["tv_defense.evaluate"] = (tv.evaluate, dict(cfg=cfg, models=models, x=x, y=y, tuned=tuned))
    calls["tv_defense.lambda_tv_sweep"] = (tv.lambda_tv_sweep, dict(cfg=cfg, models=models, x=x, y=y,
                                                                    attacked={em: x for em in models}, tuned=tuned))
    calls["tv_defense.mask_comparison"] = (tv.mask_comparison, dict(models=models, x=x, settings=tuned))
    calls["tv_defense.strength_sweep"] = (tv.strength_sweep, dict(cfg=cfg, models=models, x=x, y=y, attacked={em: x for em in models}, tuned=tuned))
    # heterogeneous ensembles
    cfg = he.HeteroConfig.from_preset("smoke")
    surrogates = [keyed(build_classifier(a, width=w) if a == "cnn" else build_classifier(a))
                  for a, w in cfg.surrogates]
    for attack in cfg.attacks:
        calls[f"heterogeneous_ensembles.crafted[{attack}]"] = (he.crafted, dict(
            surrogates=surrogates, attack=attack, eps_255=cfg.eps_255, steps=cfg.attack_steps, x=x, y=y))
    splits = he.Splits(pool=test_set, attacker=dataset("cifar10/attacker"), test=test_set)
    train = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size)
    nodes = {"ENS": [Ds.NodeSpec("cnn", train, test_set, (("width", cfg.node_width),))],
             "architecture": [Ds.NodeSpec(a, train, test_set) for a in cfg.archs]}
    node_models = {n.key: keyed(build_classifier(n.arch, **dict(n.model_kw))) for ns in nodes.values() for n in ns}
    adv = {("clean", 0): x, **{(a, cfg.eps_255): x for a in cfg.attacks}}
    calls["heterogeneous_ensembles._node_logits"] = (he._node_logits, dict(models=node_models, splits=splits,
                                                                           adv=adv))
    calls["heterogeneous_ensembles.similarity"] = (he.similarity, dict(models=node_models, surrogates=surrogates,
                                                                       nodes=nodes, splits=splits))
    # compressed models under domain shift
    cfg = cd.StudyConfig.from_preset("smoke")
    doms = Dm.Domains(train=test_set, eval={"source": test_set, "target": dataset("cifar10/target")},
                      source="source", stand_in=True, notice="")
    zoo = cd.Zoo()
    sizes = dict(params=1000, size_mb=1.0, compression=1.0)
    for arch in cfg.base_archs:
        zoo.add(arch, keyed(cd.build(arch, cfg, test_set)), method="baseline", base=arch, arch=arch, detail="fp32",
                **sizes)
        zoo.attackers[arch] = keyed(cd.build(arch, cfg, test_set))
    small = cfg.base_archs[0]
    zoo.add(f"{small} distilled", keyed(cd.build(small, cfg, test_set)), method="distilled",
            base=cfg.teacher_archs[0], arch=small, detail="T=4", **sizes)
    zoo.add(f"{small} int8", keyed(C.quantize_int8(zoo.models[small], x[:8])), method="int8", base=small,
            arch=small, detail="static", **sizes)
    zoo.fp32_of[f"{small} int8"] = small
    for f in (cd.evaluate_all, cd.attacker_accuracy):
        calls[f"compressed_domain_shift.{f.__name__}"] = (f, dict(cfg=cfg, zoo=zoo, doms=doms))
    return calls


def every_experiment() -> set[str]:
    """``module.function`` of every ``@experiment`` in ``robustnb/chapters/*.py``."""
    import importlib
    import pkgutil

    import robustnb.chapters

    out = set()
    for info in pkgutil.iter_modules(robustnb.chapters.__path__):
        mod = importlib.import_module(f"robustnb.chapters.{info.name}")
        out |= {f"{info.name}.{n}" for n, f in vars(mod).items()
                if callable(f) and hasattr(f, "uncached") and getattr(f, "__module__", "") == mod.__name__}
    return out


def fingerprints() -> dict:
    """``{label: the code field of its experiment_spec}`` for :func:`representative_calls`."""
    import inspect

    from robustnb import cache

    out = {}
    for label, (f, kwargs) in representative_calls().items():
        bound = inspect.signature(f.uncached).bind(**kwargs)
        bound.apply_defaults()
        out[label] = cache.experiment_spec(f.uncached, bound.arguments)["code"]
    return out


# ----------------------------------------------------------------------------------- copies and edits
_SNAPSHOT: list[Path] = []  # the package as it was when the first key was computed (the tree may be edited)


def copy_package(tmp: Path) -> Path:
    """A copy of the package under ``tmp`` (its parent goes on ``PYTHONPATH``): of the session's snapshot, so
    that every variant differs from the base by its own edit only."""
    shutil.copytree(_SNAPSHOT[0] if _SNAPSHOT else PKG, tmp / "robustnb",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp / "robustnb"


def keys_of(root: Path) -> dict:
    """The experiments' code fingerprints with the package at ``root`` (a subprocess imports that copy)."""
    out = root.parent / "keys.json"
    env = {**os.environ, "PYTHONPATH": str(root.parent), "ROBUSTNB_CACHE": str(root.parent / "cache")}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(out), str(root)], env=env,
                          cwd=root.parent, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def _edit_lines(path: Path, edits: list[tuple[int, str]]) -> None:
    """Insert ``text`` before line ``line`` (1-based) for each ``(line, text)``, from the bottom up."""
    lines = path.read_text().splitlines(keepends=True)
    for line, text in sorted(edits, key=lambda e: -e[0]):
        lines.insert(line - 1, text)
    path.write_text("".join(lines))


def edit_docstrings_and_comments(path: Path) -> int:
    """Change every docstring of ``path`` (a sentence added) and add a comment line above every ``def`` and
    ``class``; the code itself is unchanged. Returns the number of edits."""
    source = path.read_text()
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    docs, comments = [], []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                    first.value.value, str):
                docs.append(first.value)
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            comments.append((node.lineno, " " * node.col_offset + "# an edited comment, nothing else\n"))
    for d in sorted(docs, key=lambda d: (-d.lineno, -d.col_offset)):  # bottom up: offsets stay valid
        raw = lines[d.lineno - 1].encode()
        start = d.col_offset
        while raw[start:start + 1] in (b"r", b"R", b"u", b"U"):
            start += 1
        quote = 3 if raw[start:start + 3] in (b'"""', b"'''") else 1
        lines[d.lineno - 1] = (raw[:start + quote] + b"Edited docstring. " + raw[start + quote:]).decode()
    path.write_text("".join(lines))
    _edit_lines(path, comments)
    return len(docs) + len(comments)


def add_code(path: Path) -> None:
    """A real code change in ``path``: a statement inside its first function, and a new function."""
    tree = ast.parse(path.read_text())
    fn = next(n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
    first = fn.body[0]
    _edit_lines(path, [(first.end_lineno + 1, " " * first.col_offset + "_an_edit = 'a changed figure'\n")])
    with open(path, "a") as f:
        f.write("\n\ndef _an_edited_helper(figure):\n    return figure\n")


def change_entropy_step(root: Path) -> None:
    """Scale the entropy attack's update step (``EntropyAttack``: ``adv + alpha * grad.sign()``) by 0.5."""
    path = root / "attacks" / "entropy.py"
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EntropyAttack")
    lines = [n.lineno for n in ast.walk(cls) if isinstance(n, ast.Assign)
             and any(isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and c.func.attr == "sign"
                     for c in ast.walk(n.value))]
    assert lines, "EntropyAttack has no sign step any more: update change_entropy_step"
    text = path.read_text().splitlines(keepends=True)
    text[lines[0] - 1] = text[lines[0] - 1].replace(".sign()", ".sign() * 0.5", 1)
    path.write_text("".join(text))


# ------------------------------------------------------------------------------------------------ tests
_BASE: dict = {}


@pytest.fixture
def base_keys(tmp_path_factory):
    """The keys of the package as it is (computed once per session: other test modules use them too)."""
    if not _BASE:
        _SNAPSHOT.append(copy_package(tmp_path_factory.mktemp("snapshot")))
        _BASE.update(keys_of(copy_package(tmp_path_factory.mktemp("base"))))
        assert len(set(_BASE.values())) > 1, "every experiment got the same key"
    return dict(_BASE)


def _changed(before: dict, after: dict) -> set[str]:
    assert before.keys() == after.keys()
    return {k for k in before if before[k] != after[k]}


def test_every_experiment_is_fingerprinted(base_keys):
    """The representative calls cover every ``@experiment`` of the chapters (a new one must be added)."""
    covered = {k.partition("[")[0] for k in base_keys}
    assert covered == every_experiment()


def test_docstring_and_comment_edits_change_no_key(base_keys, tmp_path):
    root = copy_package(tmp_path)
    edits = sum(edit_docstrings_and_comments(p) for p in sorted(root.rglob("*.py")))
    assert edits > 500
    assert _changed(base_keys, keys_of(root)) == set()


def test_figures_widgets_and_progress_bars_change_no_key(base_keys, tmp_path):
    root = copy_package(tmp_path)
    for name in ("plots.py", "widgets.py", "progress.py"):
        add_code(root / name)
    assert _changed(base_keys, keys_of(root)) == set()


def test_the_entropy_step_changes_exactly_the_results_that_use_it(base_keys, tmp_path):
    root = copy_package(tmp_path)
    change_entropy_step(root)
    changed = _changed(base_keys, keys_of(root))
    assert {"entropy_attacks.attack_images", "tv_defense.evaluate"} <= changed
    assert not {"getting_started.robustness", "split_computing.image_rates"} & changed
    assert changed == USES_ENTROPY_ATTACK


def test_a_new_corruption_changes_no_result_that_does_not_use_it(base_keys, tmp_path):
    root = copy_package(tmp_path)
    with open(root / "corruptions.py", "a") as f:
        f.write('\n\n@_register("digital", stochastic=False)\ndef posterize(x, severity, seed):\n'
                '    return torch.floor(x * (2 ** (6 - severity))) / (2 ** (6 - severity))\n')
    assert _changed(base_keys, keys_of(root)) == set()


#: experiments cheap enough to run here on untrained models (a few seconds in all), one or more per chapter
TRACED = ("getting_started.robustness", "split_computing.image_rates", "entropy_attacks.attack_images",
          "tv_defense.tuning_frame", "heterogeneous_ensembles.crafted[cwa]", "compressed_domain_shift.evaluate_all")


def test_the_code_an_experiment_runs_is_in_its_key(tmp_env):
    """Run experiments under a profiler: every robustnb function that runs (but the figures, widgets and
    progress bars, and what they call) is in the key: its own part, its class's or enclosing function's, or its
    whole module. A dependency the static reach misses fails here."""
    import inspect

    import robustnb
    from robustnb import cache

    pkg = str(Path(robustnb.__file__).resolve().parent)
    excluded = tuple(os.path.join(pkg, *m.split(".")[1:]) for m in cache.NOT_IN_KEYS)
    calls = representative_calls()
    for _, kwargs in calls.values():
        for v in kwargs.values():
            for m in (v.values() if isinstance(v, dict) else [v]):
                if hasattr(m, "entropy_model") and hasattr(m, "update"):
                    m.update(force=True)  # the coder's tables (untrained models)
    for label in TRACED:
        f, kwargs = calls[label]
        bound = inspect.signature(f.uncached).bind(**kwargs)
        bound.apply_defaults()
        parts = set(cache.code_parts(f.uncached, bound.arguments))
        ran: set = set()

        def profile(frame, event, arg):
            code = frame.f_code
            if event != "call" or not code.co_filename.startswith(pkg) or code.co_name == "<module>":
                return
            caller = frame.f_back
            while caller is not None:  # called by a progress bar or a figure: not the result's code
                if caller.f_code.co_filename.startswith(excluded):
                    return
                caller = caller.f_back
            ran.add((code.co_filename, code.co_qualname))

        sys.setprofile(profile)
        try:
            f.uncached(*bound.args, **bound.kwargs)
        finally:
            sys.setprofile(None)
        missing = []
        for filename, qualname in sorted(ran):
            module = ".".join(["robustnb", *Path(os.path.relpath(filename, pkg)).with_suffix("").parts])
            module = module.removesuffix(".__init__")
            if filename.startswith(excluded):
                continue
            pieces = qualname.split(".")
            candidates = {f"{module}:{'.'.join(pieces[:k])}" for k in range(1, len(pieces) + 1)} | {f"{module}:*"}
            if candidates & cache._NOT_CODE:
                continue
            if not any(p == c or p.startswith(c + " of ") for p in parts for c in candidates):
                missing.append(f"{module}:{qualname}")
        assert len(ran) > 10 and not missing, f"{label} ran code that is not in its key: {missing}"


if __name__ == "__main__":
    import robustnb

    assert Path(robustnb.__file__).resolve().parent == Path(sys.argv[2]).resolve(), robustnb.__file__
    Path(sys.argv[1]).write_text(json.dumps(fingerprints(), indent=1, sort_keys=True))
