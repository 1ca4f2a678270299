"""The entropy-attack chapter's module (robustnb.chapters.entropy_attacks): config and the grid's frames."""

import pandas as pd
import pytest

from robustnb.chapters import entropy_attacks as ch
from robustnb.config import PRESETS
from robustnb.split import model_grid


@pytest.mark.parametrize("preset", PRESETS)
def test_config_for_every_preset(preset):
    cfg = ch.EntropyAttacksConfig.from_preset(preset)
    assert (cfg.archs, cfg.entropy_models, cfg.lambdas) == model_grid(preset)
    assert 0 in cfg.eps_255 and 8 in cfg.eps_255 and cfg.n_attack <= cfg.n_test


def _grid(adv_bytes):
    return pd.DataFrame([{"arch": "vgg", "entropy_model": "hyperprior", "lambda": 0.01, "attack": "entropy",
                          "eps_255": float(e), "real_bytes_clean": 100.0, "real_bytes_adv": b,
                          "overhead_pct": b - 100.0, "acc_clean": 0.5, "acc_adv": 0.5}
                         for e, b in zip((0, 2, 8), adv_bytes)])


def test_monotonicity_and_overhead_table():
    assert ch.monotonicity(_grid([100.0, 110.0, 130.0]))["monotone"].tolist() == [True]
    assert ch.monotonicity(_grid([100.0, 120.0, 115.0]))["monotone"].tolist() == [False]
    table = ch.overhead_table(_grid([100.0, 110.0, 130.0]), eps_255=8)
    assert len(table) == 1 and table["overhead_pct"].iloc[0] == 30.0


@pytest.mark.chapters
def test_smoke_models_are_trained_enough_that_the_attack_raises_the_bytes():
    """The smoke preset's split models must not be degenerate: CI relies on them to notice a broken attack or
    rate pipeline (one optimizer step used to give every image the same bitstream)."""
    from robustnb import config, data
    from robustnb.attacks import entropy_attack
    from robustnb.split import get_split_model, rate

    run = config.setup("smoke", verbose=False)
    x, _ = data.cifar10_test_images(8, 0)
    m = get_split_model("vgg", "hyperprior", 0.01, run, verbose=False)
    clean = rate.real_bytes(m, x)
    assert clean.std() > 0, "every image costs the same bytes: the model ignores its input"
    adv = entropy_attack(m, x, 8 / 255, steps=2, draws=1)
    assert rate.real_bytes(m, adv).mean() > clean.mean()
