"""Votes and shards (robustnb.ensembles)."""

import pytest
import torch

from robustnb import ensembles as E
from robustnb import registry
from robustnb.config import ConfigError


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
    for vote in registry.VOTES.names():
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


def test_weighted_vote_is_per_sample_softmax_confidence():
    """The authors' weighted vote: each node's vote counts its softmax confidence on that image.

    Image 0: node A says 0 with confidence e^3 / (e^3 + 2) = 0.909; nodes B and C say 1, each with confidence
    e^0.1 / (e^0.1 + 2) = 0.356, together 0.712 < 0.909 -> 0 (the hard vote says 1).
    Image 1: the same nodes, but A is unsure (0.356 for 0) and B, C sure (0.909 each for 1) -> 1.
    """
    a = _stack([3.0, 0.0, 0.0], [0.1, 0.0, 0.0])
    b = _stack([0.0, 0.1, 0.0], [0.0, 3.0, 0.0])
    logits = torch.stack([a, b, b.clone()])
    conf_a0 = torch.e ** 3 / (torch.e ** 3 + 2)
    conf_b0 = torch.e ** 0.1 / (torch.e ** 0.1 + 2)
    assert conf_a0 > 2 * conf_b0  # the hand computation behind the expected labels
    assert E.aggregate(logits, "hard").tolist() == [1, 1]
    assert E.aggregate(logits, "weighted").tolist() == [0, 1]
    scores = E.vote_scores(logits, "weighted")
    assert scores.argmax(1).tolist() == [0, 1]
    # constant per-node weights multiply the per-sample confidence: weighting B and C by 2 flips image 0
    assert E.aggregate(logits, "weighted", [1.0, 2.0, 2.0]).tolist() == [1, 1]
