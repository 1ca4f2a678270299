"""The split-computing chapter's module (robustnb.chapters.split_computing): config, rate frames."""

import pytest
import torch

from robustnb.chapters import split_computing as ch
from robustnb.config import PRESETS
from robustnb.data import ImageDataset
from robustnb.split import build_split_model, model_grid


@pytest.mark.parametrize("preset", PRESETS)
def test_config_uses_the_shared_model_grid(preset):
    cfg = ch.SplitComputingConfig.from_preset(preset)
    assert (cfg.archs, cfg.entropy_models, cfg.lambdas) == model_grid(preset)


def test_tradeoff_and_per_image_rates_on_untrained_models():
    torch.manual_seed(0)
    models = {}
    for em in ("factorized", "hyperprior"):
        m = build_split_model("vgg", em).eval()
        m.update(force=True)
        m.robustnb_info = {"train_seconds": 0.0}
        models[("vgg", em, 0.01)] = m
    data = ImageDataset("toy", torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8), torch.arange(8) % 10,
                        [str(i) for i in range(10)], (0.5,) * 3, (0.5,) * 3)
    trade = ch.tradeoff(ch.SplitComputingConfig.from_preset("smoke"), models, data)
    assert len(trade) == 2 and (trade["real_bytes"] > 0).all() and trade["accuracy"].between(0, 1).all()
    per = ch.per_image_rates(models, ("vgg", "hyperprior", 0.01), data, n=5)
    assert len(per) == 5 and (per["real_bytes"] >= per["est_bytes"] - 1).all()
    fig = ch.bit_map_view(models[("vgg", "factorized", 0.01)], data.tensors(1)[0])
    assert len(fig.data) == 4
