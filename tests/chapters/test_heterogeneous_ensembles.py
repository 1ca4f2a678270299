"""The heterogeneous-ensemble study's bookkeeping (robustnb.chapters.heterogeneous_ensembles): labels follow the attacked images."""

from types import SimpleNamespace

import pandas as pd
import torch
from torch import nn

from robustnb.chapters import heterogeneous_ensembles as H
from robustnb.data import ImageDataset

N_CLASSES = 4


class LabelReader(nn.Module):
    """A perfect classifier for images whose pixels all equal ``20 * label`` (uint8)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.robustnb_info = {"history": pd.DataFrame({"train_acc": [1.0]})}

    def forward(self, x):
        label = (x.mean(dim=(1, 2, 3)) * 255 / 20).round().long()
        return nn.functional.one_hot(label, N_CLASSES).float() + 0 * self.dummy


def _sorted_test_set(per_class=10):
    labels = torch.arange(N_CLASSES).repeat_interleave(per_class)  # 0,0,...,1,1,...: first items are all class 0
    images = (labels * 20).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    return ImageDataset("toy", images, labels, [str(c) for c in range(N_CLASSES)], (0.5,) * 3, (0.25,) * 3)


def test_robust_accuracy_uses_the_labels_of_the_attacked_images():
    test = _sorted_test_set()
    cfg = H.HeteroConfig.from_preset("smoke", n_values=(1,), n_test=len(test), n_attack=12)
    splits = H.Splits(pool=test, attacker=test, test=test)
    x, y = H.attack_set(cfg, splits)
    assert len(y) == 12 and len(y.unique()) == N_CLASSES, "the attacked images are a stratified subset"
    # an "attack" that changes nothing: a perfect classifier must keep 100% robust accuracy on it
    adv = {("clean", 0): x, ("mifgsm", 8): x.clone()}
    nodes = {"ENS": [SimpleNamespace(key="node0", arch="cnn")]}
    frame = H.evaluate_grid(cfg, nodes, {"node0": LabelReader()}, splits, adv)
    assert set(frame["vote"]) == set(cfg.votes)
    assert (frame["clean_acc"] == 1.0).all()
    assert (frame["robust_acc"] == 1.0).all(), frame[["vote", "robust_acc"]]
    assert (frame["success_rate"] == 0.0).all()
