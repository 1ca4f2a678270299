"""Ensembles of independently trained nodes: how their predictions are combined, and how data is sharded.

At inference the nodes' predictions are aggregated (:func:`aggregate`, :class:`Ensemble`; votes registered
in :data:`robustnb.registry.VOTES`):

``hard``      majority vote of the nodes' top-1 labels;
``weighted``  the authors' confidence-weighted vote: node ``i``'s vote for its top-1 label on image ``b``
              counts its softmax confidence ``max_c softmax(z_i[b])_c`` on that image (per sample), times
              ``weights[i]`` when constant per-node weights are given as well;
``soft``      arg-max of the (weighted) mean of the nodes' softmax outputs.

**Ties** in a (weighted) majority vote are broken deterministically: among the tied labels the one with
the highest mean softmax probability over the nodes wins; if that is tied too (exactly), the lowest class
index wins.

Shards (:func:`make_shards`) come from one pool of ``n_nodes * per_node`` images: ``shared`` (every node
gets the same first ``per_node`` images, i.e. shard 0 of the disjoint split), ``disjoint`` (IID, no
overlap) or ``dirichlet`` (non-IID: per class, the images are split over the nodes in proportions drawn
from Dirichlet(alpha), alpha = 0.9 as in the paper). An instantiation with N nodes uses shards 0..N-1, so
the nodes of a smaller instantiation are the first nodes of a larger one and come from the model cache.

Training the nodes (locally or on Ray) and tuning them is :mod:`robustnb.distributed`.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustnb import registry
from robustnb.checks import one_or_more
from robustnb.config import ConfigError

for _vote in ("hard", "soft", "weighted"):
    registry.VOTES.add(_vote, _vote)  # its maker (below): the voting function of that rule
SHARD_MODES = ("shared", "disjoint", "dirichlet")


# ------------------------------------------------------------------------------------------- voting
def _check_vote(vote: str) -> None:
    registry.VOTES.check(vote)


def _weights(weights, n: int, device) -> torch.Tensor:
    if weights is None:
        return torch.ones(n, device=device)
    w = torch.as_tensor(weights, dtype=torch.float32, device=device).flatten()
    if len(w) != n or (w < 0).any() or not torch.isfinite(w).all() or w.sum() <= 0:
        raise ConfigError(f"weights must be {n} finite non-negative numbers (not all 0), got {weights!r}.")
    return w


def vote_scores(logits: torch.Tensor, vote: str = "hard", weights=None) -> torch.Tensor:
    """Scores ``(B, C)`` whose arg-max is the aggregated decision of the stacked ``logits (M, B, C)``.

    ``hard`` / ``weighted``: the vote count (``weighted``: each vote counts the node's softmax confidence on
    that image, times ``weights[i]`` if given) plus a tie-breaker smaller than any vote difference (a one-hot
    of the decision plus half the mean probability); ``soft``: the (weighted) mean softmax.
    """
    _check_vote(vote)
    if logits.ndim != 3:
        raise ValueError(f"logits must be stacked as (models, batch, classes), got shape {tuple(logits.shape)}")
    m, _, c = logits.shape
    w = _weights(weights if vote != "hard" else None, m, logits.device)
    p = F.softmax(logits.float(), -1)
    probs = (p * w.view(-1, 1, 1)).sum(0) / w.sum()
    if vote == "soft":
        return probs
    per_vote = w.view(-1, 1).expand(m, logits.shape[1])  # (M, B): what each node's vote counts on each image
    if vote == "weighted":
        per_vote = per_vote * p.max(-1).values  # per-sample softmax confidence of the node's own label
    votes = (F.one_hot(logits.argmax(-1), c).float() * per_vote.unsqueeze(-1)).sum(0)
    tol = 1e-6 * per_vote.sum(0, keepdim=True).T
    tied = votes >= votes.max(1, keepdim=True).values - tol
    decision = torch.where(tied, probs, torch.full_like(probs, -1.0)).argmax(1)  # first max = lowest index
    return F.one_hot(decision, c).float() + 0.5 * probs


def _vote_maker(vote: str):
    """The maker of vote ``vote``: ``(weights=None)`` -> the voting function ``(logits, weights=None) -> scores``
    (:func:`vote_scores` with that rule; ``weights`` given here are its default)."""
    def make(weights=None):
        if weights is None:
            return functools.partial(vote_scores, vote=vote)
        return functools.partial(vote_scores, vote=vote, weights=weights)

    return make


for _vote in registry.VOTES.names():
    registry.VOTES.set_maker(_vote, _vote_maker(_vote))


def aggregate(logits: torch.Tensor, vote: str = "hard", weights=None) -> torch.Tensor:
    """The ensemble's labels ``(B,)`` from stacked node logits ``(M, B, C)`` (see the module doc for ties)."""
    return vote_scores(logits, vote, weights).argmax(1)


def majority_vote(logits: torch.Tensor, weights=None) -> torch.Tensor:
    """Hard (or, with ``weights``, weighted) majority vote over stacked logits ``(M, B, C)``."""
    return aggregate(logits, "hard" if weights is None else "weighted", weights)


class Ensemble(nn.Module):
    """Nodes aggregated at inference: ``forward`` returns :func:`vote_scores` (arg-max = the decision)."""

    def __init__(self, models: Sequence[nn.Module] | nn.Module, vote: str = "hard", weights=None):
        super().__init__()
        _check_vote(vote)
        models = one_or_more(models, "models", nn.Module, empty=False, what="model")  # one model: a node, not layers
        self.nodes = nn.ModuleList(models)
        self.vote = vote
        self.weights = None if weights is None else [float(v) for v in _weights(weights, len(models), "cpu")]

    def forward(self, x):
        return vote_scores(torch.stack([m(x) for m in self.nodes]), self.vote, self.weights)


# ------------------------------------------------------------------------------------------- shards
def make_shards(labels: torch.Tensor, n_nodes: int, per_node: int, mode: str = "disjoint", seed: int = 0,
                alpha: float = 0.9, min_size: int = 10) -> list[torch.Tensor]:
    """Index tensors into a pool of ``n_nodes * per_node`` items (``labels`` = the pool's labels)."""
    if mode not in SHARD_MODES:
        raise ConfigError(f"Unknown shard mode {mode!r}: choose one of {', '.join(map(repr, SHARD_MODES))}.")
    if n_nodes < 1 or per_node < 1 or n_nodes * per_node > len(labels):
        raise ConfigError(f"need 1 <= n_nodes, 1 <= per_node and n_nodes * per_node <= {len(labels)} pool items, "
                          f"got n_nodes={n_nodes}, per_node={per_node}.")
    g = torch.Generator().manual_seed(seed)
    pool = torch.randperm(len(labels), generator=g)[: n_nodes * per_node]
    if mode == "shared":
        return [pool[:per_node].sort().values for _ in range(n_nodes)]
    if mode == "disjoint":
        return [pool[i * per_node:(i + 1) * per_node].sort().values for i in range(n_nodes)]
    rng = np.random.default_rng(seed)
    y = labels[pool].numpy()
    for _ in range(100):  # resample until every node has at least min_size items (Hsu et al., 2019)
        parts: list[list[int]] = [[] for _ in range(n_nodes)]
        for c in np.unique(y):
            idx = pool.numpy()[y == c]
            idx = idx[rng.permutation(len(idx))]
            cuts = (np.cumsum(rng.dirichlet([alpha] * n_nodes)) * len(idx)).astype(int)[:-1]
            for i, part in enumerate(np.split(idx, cuts)):
                parts[i].extend(part.tolist())
        if min(len(p) for p in parts) >= min(min_size, per_node):
            return [torch.tensor(sorted(p), dtype=torch.long) for p in parts]
    raise RuntimeError(f"could not draw Dirichlet({alpha}) shards with >= {min_size} items per node")


__all__ = ["SHARD_MODES", "vote_scores", "aggregate", "majority_vote", "Ensemble", "make_shards"]
