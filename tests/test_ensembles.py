"""Aggregation, shards, node training through the cache, and tuning (robustnb.ensembles)."""

import json

import pytest
import torch

from robustnb import ensembles as E
from robustnb.config import ConfigError
from robustnb.data import ImageDataset


def _stack(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_majority_vote_on_known_logits():
    # 3 nodes, 2 images, 3 classes: image 0 gets votes (1, 1, 0) -> tie; image 1 votes (2, 2, 2) -> class 2
    logits = torch.stack([
        _stack([5.0, 0.0, 0.0], [0.0, 0.0, 3.0]),
        _stack([0.0, 5.0, 0.0], [0.0, 0.0, 1.0]),
        _stack([4.0, 0.0, 0.0], [0.0, 2.0, 0.0]),
    ])
    assert E.majority_vote(logits).tolist() == [0, 2]


def test_ties_broken_by_mean_probability_then_lowest_index():
    # votes 1-1: class 1 has the higher mean softmax probability -> 1
    logits = torch.stack([_stack([1.0, 0.0, 0.0]), _stack([0.0, 9.0, 0.0])])
    assert E.majority_vote(logits).tolist() == [1]
    # votes 1-1 and exactly the same mean probability -> the lower index
    logits = torch.stack([_stack([0.0, 0.0, 3.0]), _stack([0.0, 3.0, 0.0])])
    assert E.majority_vote(logits).tolist() == [1]


def test_weighted_and_soft_votes():
    logits = torch.stack([_stack([5.0, 0.0]), _stack([0.0, 1.0]), _stack([0.0, 1.0])])
    assert E.aggregate(logits, "hard").tolist() == [1]
    assert E.aggregate(logits, "weighted", [3.0, 1.0, 1.0]).tolist() == [0]
    assert E.aggregate(logits, "soft").tolist() == [0]  # one confident node outweighs two unsure ones
    with pytest.raises(ConfigError, match="Unknown vote 'mean'"):
        E.aggregate(logits, "mean")
    with pytest.raises(ConfigError, match="weights must be 3"):
        E.aggregate(logits, "weighted", [1.0, 2.0])


def test_ensemble_module_matches_aggregate():
    torch.manual_seed(0)
    nodes = [torch.nn.Linear(5, 4) for _ in range(3)]
    x = torch.randn(16, 5)
    stacked = torch.stack([m(x) for m in nodes])
    for vote in E.VOTES:
        assert torch.equal(E.Ensemble(nodes, vote)(x).argmax(1), E.aggregate(stacked, vote))


def test_shards():
    labels = torch.arange(200) % 10
    shared = E.make_shards(labels, 4, 30, "shared")
    disjoint = E.make_shards(labels, 4, 30, "disjoint")
    assert all(torch.equal(s, shared[0]) for s in shared) and torch.equal(shared[0], disjoint[0])
    flat = torch.cat(disjoint)
    assert len(flat) == 120 and len(flat.unique()) == 120
    d1, d2 = E.make_shards(labels, 4, 30, "dirichlet", seed=3), E.make_shards(labels, 4, 30, "dirichlet", seed=3)
    assert all(torch.equal(a, b) for a, b in zip(d1, d2))
    flat = torch.cat(d1)
    assert len(flat) == 120 and len(flat.unique()) == 120 and min(len(s) for s in d1) >= 10
    with pytest.raises(ConfigError, match="Unknown shard mode 'iid'"):
        E.make_shards(labels, 4, 30, "iid")
    with pytest.raises(ConfigError, match="n_nodes"):
        E.make_shards(labels, 10, 30, "disjoint")


def _tiny_dataset(n=64):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (n,), generator=g)
    x = (y.view(-1, 1, 1, 1) * 120 + torch.randint(0, 60, (n, 3, 8, 8), generator=g)).to(torch.uint8)
    return ImageDataset("tiny", x, y, ["a", "b"], (0.5,) * 3, (0.25,) * 3)


def _node(seed=0, **train):
    cfg = E.default_train("sgd", "cosine", epochs=1, batch_size=32, seed=seed).replace(augment=False, **train)
    return E.NodeSpec("cnn", cfg, _tiny_dataset(), (("width", 4),), label=f"n{seed}")


def test_train_nodes_local_uses_the_cache(tmp_env):
    a, b, a_again = _node(0), _node(1), _node(0)
    assert a.key == a_again.key and a.key != b.key and a.key != _node(0, lr=0.01).key
    models = E.train_nodes([a, b, a_again], backend="local")
    assert set(models) == {a.key, b.key}
    assert not models[a.key].robustnb_info["from_cache"]
    again = E.train_nodes([a], backend="local")
    assert again[a.key].robustnb_info["from_cache"]
    with pytest.raises(ConfigError, match="Unknown backend 'spark'"):
        E.train_nodes([a], backend="spark")


def test_tune_node_local_is_cached_and_in_range(tmp_env):
    _, cache = tmp_env
    node = _node(0)
    best = E.tune_node(node, trials=2, max_epochs=1, backend="local")
    lo, hi = E.LR_RANGES["sgd"]
    assert lo <= best["lr"] <= hi and 0.8 <= best["momentum"] <= 0.95 and 0.0 <= best["val_acc"] <= 1.0
    files = list((cache / "tuning").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == best
    assert E.tune_node(node, trials=2, max_epochs=1, backend="local") == best
    assert E.tuned(node, best).train.lr == best["lr"]
