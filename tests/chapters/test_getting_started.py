"""The getting-started chapter's module (robustnb.chapters.getting_started): config and frames."""

import pandas as pd
import pytest
import torch
from torch import nn

from robustnb.chapters import getting_started as ch
from robustnb.config import PRESETS
from robustnb.data import ImageDataset


@pytest.mark.parametrize("preset", PRESETS)
def test_config_for_every_preset(preset):
    cfg = ch.BaselineConfig.from_preset(preset)
    assert cfg.n_train > 0 and cfg.n_test > 0 and 0 in cfg.epsilons_255


def test_learning_curves_and_confusion():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    model.robustnb_info = {"history": pd.DataFrame({"epoch": [1, 2], "train_acc": [0.5, 0.7], "eval_acc": [0.4, 0.6]})}
    curves = ch.learning_curves(model)
    assert list(curves.columns) == ["epoch", "metric", "accuracy"] and len(curves) == 4
    data = ImageDataset("toy", torch.randint(0, 255, (6, 3, 2, 2), dtype=torch.uint8), torch.tensor([0, 1] * 3),
                        ["a", "b"], (0.5,) * 3, (0.5,) * 3)
    conf = ch.confusion(model, data)
    assert len(conf) == 4 and conf.groupby("true")["rate"].sum().round(6).eq(1).all()


def test_example_stack_orders_by_epsilon():
    clean = torch.full((3, 4, 4), 0.5)
    examples = {("pgd", 8 / 255): clean[None] + 8 / 255, ("pgd", 2 / 255): clean[None] + 2 / 255,
                ("fgsm", 2 / 255): clean[None]}
    images, eps = ch.example_stack(examples, "pgd", clean)
    assert images.shape == (2, 3, 3, 4, 4) and eps == [2.0, 8.0]
    assert torch.allclose(images[1, 1], (0.5 + 4 * torch.full((3, 4, 4), 8 / 255)).clamp(0, 1))
