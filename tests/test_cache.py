"""The on-disk cache (robustnb.cache): trains once, verifies what it loads, never leaves half-written files."""

import warnings

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
