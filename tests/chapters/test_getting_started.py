"""The getting-started chapter's module (robustnb.chapters.getting_started): config and frames."""

from dataclasses import replace

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
                ("pgd", 0.0): clean[None], ("fgsm", 2 / 255): clean[None]}
    images, eps = ch.example_stack(examples, "pgd")
    assert images.shape == (3, 3, 3, 4, 4) and eps == [0.0, 2.0, 8.0]
    assert torch.allclose(images[2, 1], (0.5 + 4 * torch.full((3, 4, 4), 8 / 255)).clamp(0, 1))
    with pytest.raises(ValueError, match="epsilon 0"):
        ch.example_stack({k: v for k, v in examples.items() if k[1] != 0}, "pgd")


def test_the_attack_figure_shows_one_photo_clean_perturbed_and_attacked():
    """The slider's three panels come from ONE attacked image: at epsilon 0 the perturbation is zero (uniform
    grey) and the clean and adversarial panels are equal; at every budget the adversarial image stays within
    epsilon of the clean one (a different photo would not)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)).eval()
    data = ImageDataset("toy", torch.randint(0, 255, (24, 3, 8, 8), dtype=torch.uint8), torch.arange(24) % 3,
                        ["a", "b", "c"], (0.5,) * 3, (0.5,) * 3)
    cfg = ch.BaselineConfig.from_preset("smoke")
    _, examples = ch.robustness.uncached(replace(cfg, n_attack=12), model, data, n_examples=2)
    images, eps = ch.example_stack(examples, "pgd", index=1)
    assert eps[0] == 0
    clean, delta, adv = images[0]
    assert torch.equal(clean, adv) and torch.equal(delta, torch.full_like(delta, 0.5))
    for row, e in zip(images[1:], eps[1:]):
        assert torch.equal(row[0], clean)
        assert (row[2] - row[0]).abs().max() <= e / 255 + 1e-6
