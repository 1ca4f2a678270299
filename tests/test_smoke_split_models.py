"""The smoke preset's factorized split model is trained enough to test the rate pipeline with: its bytes depend
on the photo and the entropy attack raises them (``tests/chapters/test_entropy_attacks.py`` says the same of the
hyperprior model). With CompressAI's initial density (+-10) its few smoke steps left the density flat over the
latents: every photo cost the same bytes and the attack none more, so CI could not notice a broken factorized
rate path. Numerics differ with the number of torch threads; the margins hold at 1 and 2 threads."""

import pytest

from robustnb.split import SplitTrainConfig, build_split_model


def test_the_smoke_factorized_density_starts_near_the_latent_scale():
    smoke, cpu = SplitTrainConfig.from_preset("smoke"), SplitTrainConfig.from_preset("cpu")
    assert smoke.init_scale < cpu.init_scale
    model = build_split_model("vgg", "factorized", init_scale=smoke.init_scale)
    assert model.entropy_bottleneck.init_scale == smoke.init_scale
    assert build_split_model("vgg", "factorized").entropy_bottleneck.init_scale == cpu.init_scale


@pytest.mark.chapters
def test_smoke_factorized_model_bytes_depend_on_the_photo_and_the_attack_raises_them():
    from robustnb import config, data
    from robustnb.attacks import entropy_attack
    from robustnb.split import get_split_model, rate

    run = config.setup("smoke", verbose=False)
    x, _ = data.cifar10_test_images(8, 0)
    m = get_split_model("vgg", "factorized", 0.01, run, verbose=False)
    clean = rate.real_bytes(m, x)
    spread = float(clean.max() - clean.min()) / float(clean.mean())
    assert spread > 0.05, f"every photo costs about the same bytes: {clean.tolist()}"
    adv = rate.real_bytes(m, entropy_attack(m, x, 8 / 255, steps=2, draws=1))
    assert adv.mean() > 1.03 * clean.mean(), (clean.tolist(), adv.tolist())
