"""The on-disk cache (robustnb.cache): trains once, verifies what it loads, never leaves half-written files."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from robustnb import cache, train
from test_train import CFG, toy_data, toy_model


# ---------------------------------------------------------------------------------------------- cache
def test_cache_trains_once_then_loads(tmp_env):
    calls = []
    spec = {"model": "toy", "epochs": 5}

    def fit_it(model):
        calls.append(1)
        return train.fit(model, toy_data(), CFG)

    m1 = cache.cached("toy", spec, toy_model, fit_it)
    m2 = cache.cached("toy", spec, toy_model, fit_it)
    assert len(calls) == 1 and not m1.robustnb_info["from_cache"] and m2.robustnb_info["from_cache"]
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))
    assert isinstance(m2.robustnb_info["history"], pd.DataFrame) and len(m2.robustnb_info["history"]) == 5
    # another spec is another key
    cache.cached("toy", {**spec, "epochs": 6}, toy_model, fit_it)
    assert len(calls) == 2
    assert cache.cache_key(spec) != cache.cache_key({**spec, "epochs": 6})
    # checkpoints load with weights_only=True
    payload = torch.load(m2.robustnb_info["path"], weights_only=True)
    assert set(payload) >= {"state_dict", "spec", "history"}


def test_corrupt_checkpoint_is_not_trusted(tmp_env):
    spec = {"model": "toy"}
    path = cache.cache_path("toy", spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half a checkpoint")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m = cache.cached("toy", spec, toy_model, lambda mm: train.fit(mm, toy_data(), CFG))
    assert not m.robustnb_info["from_cache"] and any("retraining" in str(x.message) for x in w)
    assert cache.cached("toy", spec, toy_model, lambda mm: 1 / 0).robustnb_info["from_cache"]


def test_killed_save_leaves_no_checkpoint(tmp_env, monkeypatch):
    spec = {"model": "toy", "crash": True}

    def crash(*a, **k):
        raise KeyboardInterrupt  # the run is killed while writing

    monkeypatch.setattr(cache.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.cached("toy", spec, toy_model, lambda m: None)
    folder = cache.cache_path("toy", spec).parent
    assert list(folder.iterdir()) == []  # neither a target nor a temporary file is left


# --------------------------------------------------------------------------------------------- results
def _fake_package(root):
    pkg = root / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "chapter.py").write_text("from pkg import mech\nfrom pkg.sub import leaf\nimport numpy\n")
    (pkg / "mech.py").write_text("from . import base\nX = 1\n")
    (pkg / "base.py").write_text("Y = 2\n")
    (pkg / "sub" / "leaf.py").write_text("from ..base import Y\n")
    (pkg / "other.py").write_text("Z = 3\n")
    return pkg


def test_code_fingerprint_follows_imports_only(tmp_path):
    pkg = _fake_package(tmp_path)
    names = {str(p.relative_to(pkg)) for p in cache.module_sources("pkg.chapter", "pkg", pkg)}
    assert names == {"chapter.py", "mech.py", "base.py", "sub/__init__.py", "sub/leaf.py", "__init__.py"}
    before = cache.code_fingerprint("pkg.chapter", "pkg", pkg)
    (pkg / "other.py").write_text("Z = 4\n")  # not imported: same fingerprint
    assert cache.code_fingerprint("pkg.chapter", "pkg", pkg) == before
    (pkg / "base.py").write_text("Y = 3\n")  # imported through a relative import: new fingerprint
    assert cache.code_fingerprint("pkg.chapter", "pkg", pkg) != before
    # the real package: a chapter depends on its mechanisms, not on the other chapters
    real = {p.name for p in cache.module_sources("robustnb.chapters.entropy_attacks")}
    assert {"entropy_attacks.py", "entropy.py", "rate.py", "train.py"} <= real
    assert not {"tv_defense.py", "distributed.py", "compression.py"} & real


CALLS = []


@cache.experiment
def _toy_experiment(cfg, model, x, n: int = 3):
    CALLS.append(n)
    out = model(x).detach()
    frame = pd.DataFrame({"i": range(n), "v": [float(cfg["scale"]) * k for k in range(n)],
                          "hits": [out[0].numpy()] * n})
    return frame, {("pgd", 8 / 255): out, "note": "ok"}, [1.5, None]


def _model():
    m = torch.nn.Linear(2, 2)
    m.robustnb_info = {"key": "abc"}
    return m


def test_experiment_results_are_cached_by_arguments(tmp_env):
    CALLS.clear()
    m, x = _model(), torch.ones(4, 2)
    first = _toy_experiment({"scale": 2}, m, x)
    again = _toy_experiment({"scale": 2}, m, x)
    assert CALLS == [3]
    pd.testing.assert_frame_equal(first[0], again[0])
    assert torch.equal(first[1][("pgd", 8 / 255)], again[1][("pgd", 8 / 255)]) and again[2] == [1.5, None]
    _toy_experiment({"scale": 3}, m, x)  # another config
    _toy_experiment({"scale": 2}, m, x + 1)  # other inputs
    _toy_experiment({"scale": 2}, m, x, n=4)
    m2 = _model()
    m2.robustnb_info = {"key": "another model"}
    _toy_experiment({"scale": 2}, m2, x)
    assert CALLS == [3, 3, 3, 4, 3]
    _toy_experiment({"scale": 2}, m, x, cache=False)
    assert CALLS == [3, 3, 3, 4, 3, 3]


def test_experiment_recomputes_after_a_code_change(tmp_env, monkeypatch):
    CALLS.clear()
    m, x = _model(), torch.ones(4, 2)
    _toy_experiment({"scale": 2}, m, x)
    monkeypatch.setattr(cache, "code_fingerprint", lambda module: "edited")
    _toy_experiment({"scale": 2}, m, x)
    assert CALLS == [3, 3]


def test_experiment_never_trusts_a_damaged_or_unfinished_result(tmp_env):
    CALLS.clear()
    m, x = _model(), torch.ones(4, 2)
    _toy_experiment({"scale": 2}, m, x)
    folder = next((tmp_env[1] / "results").iterdir())
    frame_file = folder / "frame0.parquet"
    frame_file.write_bytes(frame_file.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match="recomputing"):
        out = _toy_experiment({"scale": 2}, m, x)
    assert CALLS == [3, 3] and len(out[0]) == 3
    (folder / "manifest.json").unlink()  # a run killed before its manifest: its files are not read
    _toy_experiment({"scale": 2}, m, x)
    assert CALLS == [3, 3, 3]


def test_experiment_computes_uncached_when_it_cannot_name_an_input(tmp_env):
    CALLS.clear()
    bare = torch.nn.Linear(2, 2)  # not made by the cache: no key
    _toy_experiment({"scale": 2}, bare, torch.ones(4, 2))
    _toy_experiment({"scale": 2}, bare, torch.ones(4, 2))
    assert CALLS == [3, 3] and not (tmp_env[1] / "results").exists()
    with pytest.raises(cache.Unnameable, match="cannot describe a object"):
        cache.describe(object())


@cache.experiment
def _random_experiment(n: int):
    return {"torch": torch.rand(n), "numpy": torch.from_numpy(np.random.rand(n))}


def test_experiment_randomness_is_a_function_of_its_inputs(tmp_env):
    """The same inputs give the same draws whatever ran before (a test or another chapter), cached or not;
    the caller's generators continue as if nothing had run."""
    torch.manual_seed(1)
    np.random.seed(1)
    a = _random_experiment(5, cache=False)
    after_torch, after_numpy = torch.rand(1), np.random.rand()
    torch.manual_seed(1)
    np.random.seed(1)
    assert torch.rand(1) == after_torch and np.random.rand() == after_numpy  # caller's RNG untouched
    torch.manual_seed(99)
    b = _random_experiment(5)
    assert torch.equal(a["torch"], b["torch"]) and torch.equal(a["numpy"], b["numpy"])
    assert not torch.equal(_random_experiment(6)["torch"][:5], a["torch"])  # other inputs, other draws
