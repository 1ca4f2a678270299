"""Split models with entropy models, and the entropy attack (tiny models, synthetic images)."""

import pytest
import torch
import torch.nn.functional as F

from robustnb.split import rate
from robustnb.attacks import check_in_ball
from robustnb.attacks.entropy import EntropyAttack
from robustnb.config import ConfigError
from robustnb.registry import ENTROPY_MODELS, SPLIT_ARCHITECTURES
from robustnb.split import SplitModel, build_split_model
from robustnb.split.rate import rate_bpp


def smooth_images(n, seed=0):
    """Low-frequency random images (upsampled 4x4 noise): 'natural-ish' inputs a rate-trained model learns."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 4, 4, generator=g)
    return F.interpolate(small, size=32, mode="bilinear", align_corners=False).clamp(0, 1)


def trained_tiny(entropy_model, steps=60):
    """A vgg split model trained briefly on smooth images (label = brighter than average) with a rate term."""
    torch.manual_seed(0)
    m = SplitModel("vgg", entropy_model, latent_channels=8)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    m.train()
    for i in range(steps):
        x = smooth_images(8, seed=i)
        y = (x.mean((1, 2, 3)) > 0.5).long()
        out = m(x)
        loss = F.cross_entropy(out["logits"], y) + 2.0 * rate_bpp(m, x, y, out) + m.aux_loss() * 1e-3
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    m.update(force=True)
    return m


@pytest.fixture(scope="module", params=ENTROPY_MODELS.names())
def model(request):
    return trained_tiny(request.param)


@pytest.mark.parametrize("arch", SPLIT_ARCHITECTURES.names())
@pytest.mark.parametrize("em", ENTROPY_MODELS.names())
def test_every_split_model_runs_and_decodes_exactly(arch, em):
    torch.manual_seed(0)
    m = SplitModel(arch, em).eval()
    m.update(force=True)
    x = torch.rand(4, 3, 32, 32)
    out = m(x)
    assert out["logits"].shape == (4, 10)
    assert set(out["likelihoods"]) == ({"y"} if em == "factorized" else {"y", "z"})
    assert out["latent"].shape == (4, 24, 8, 8)
    c = m.compress(x)
    assert len(c["strings"]) == (1 if em == "factorized" else 2) and len(c["strings"][0]) == 4
    torch.testing.assert_close(m.decompress(c["strings"], c["shape"]), out["logits"], atol=1e-4, rtol=1e-4)


def test_unknown_names_raise_clear_errors():
    with pytest.raises(ConfigError, match="'gmm'.*factorized"):
        SplitModel("vgg", "gmm")
    with pytest.raises(ConfigError, match="'alexnet'.*resnet"):
        build_split_model("alexnet", "factorized")


def test_state_dict_roundtrip_keeps_the_coder(model):
    x = smooth_images(6, seed=99)
    fresh = SplitModel("vgg", model.entropy_model, latent_channels=8)
    fresh.load_state_dict(model.state_dict())  # CompressionModel resizes the CDF buffers
    fresh.eval()
    a, b = model.compress(x), fresh.compress(x)
    assert a["strings"] == b["strings"]


def test_constant_image_costs_fewer_bits_than_noise(model):
    # noise at the latent's scale (one random value per 4x4 block): i.i.d. pixel noise averages out in the
    # pooling of a briefly trained encoder, block noise survives it as it would in a model trained on photos
    const = torch.full((8, 3, 32, 32), 0.5)
    g = torch.Generator().manual_seed(1)
    noise = F.interpolate(torch.rand(8, 3, 8, 8, generator=g), size=32, mode="nearest")
    assert rate.real_bytes(model, const).mean() < rate.real_bytes(model, noise).mean()
    assert rate.estimated_bits(model, const).mean() < rate.estimated_bits(model, noise).mean()


def test_attack_stays_in_ball_and_box_and_raises_the_rate(model):
    x = smooth_images(8, seed=123)
    eps = 8 / 255
    for keep in (False, True):
        adv = EntropyAttack(model, eps=eps, steps=5, draws=2, keep_label=keep)(x)
        check_in_ball(adv, x, eps)
        assert (adv - x).abs().max() > eps / 2  # it moved
    adv = EntropyAttack(model, eps=eps, steps=5, draws=2)(x)
    assert rate.estimated_bits(model, adv).mean() > rate.estimated_bits(model, x).mean()


def test_attack_with_random_start_stays_in_ball(model):
    x = torch.rand(4, 3, 32, 32)
    eps = 16 / 255
    adv = EntropyAttack(model, eps=eps, steps=3, draws=1, random_start=True)(x)
    check_in_ball(adv, x, eps)


def test_eps_zero_changes_nothing(model):
    x = smooth_images(4, seed=5)
    assert torch.equal(EntropyAttack(model, eps=0.0, steps=3, draws=2)(x), x)


def test_attack_is_deterministic(model):
    x = smooth_images(4, seed=6)
    a = EntropyAttack(model, eps=4 / 255, steps=3, draws=2, seed=3)(x)
    b = EntropyAttack(model, eps=4 / 255, steps=3, draws=2, seed=3)(x)
    assert torch.equal(a, b)


def test_bad_epsilon_and_settings_raise(model):
    with pytest.raises(ConfigError, match="8/255"):
        EntropyAttack(model, eps=8)
    with pytest.raises(ConfigError):
        EntropyAttack(model, eps=-0.1)
    with pytest.raises(ConfigError, match="draws"):
        EntropyAttack(model, eps=2 / 255, draws=0)


def test_logits_view_predicts_like_the_wire_and_passes_gradients(model):
    """PGD needs a gradient through the rounded latent: the logits view rounds in the forward pass (the
    eval-mode prediction) and is straight-through in the backward pass."""
    x = smooth_images(4, seed=7).requires_grad_(True)
    view = model.logits_model()
    logits = view(x)
    torch.testing.assert_close(logits, model(x)["logits"])
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_a_standard_attack_on_the_logits_view_leaves_the_model_in_eval_mode(model):
    from robustnb.attacks import make_attack

    model.eval()
    x = smooth_images(2)
    make_attack("pgd", model.logits_model(), 4 / 255, steps=1)(x, torch.zeros(2, dtype=torch.long))
    assert not model.training, "torchattacks restored the wrapper's (training) mode onto the split model"
