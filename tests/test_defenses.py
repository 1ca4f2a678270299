"""robustnb.defenses (and the TV solver of robustnb.signal): object masks, the disentangled defense, the
baselines, and adaptive attacks through them."""

import pytest
import torch

from robustnb import defenses as D
from robustnb import registry
from robustnb.config import ConfigError
from robustnb.signal import local_energy, split, total_variation, tv_denoise, tv_skimage


@pytest.fixture
def x():
    g = torch.Generator().manual_seed(0)
    base = torch.linspace(0.1, 0.7, 32).expand(2, 3, 32, 32)
    return (base + 0.15 * torch.randn(2, 3, 32, 32, generator=g)).clamp(0, 1)


def bitmap(t):  # a stand-in for rate.bit_map: "bits" follow local high-frequency energy on a 8x8 grid
    return local_energy(t, (8, 8), 0.1) * 100


@pytest.mark.parametrize("w", [0.02, 0.1])
def test_tv_lowers_total_variation_and_solves_the_tv_problem(x, w):
    u = tv_denoise(x, w, n_iter=200)
    assert (total_variation(u) < total_variation(x)).all()
    objective = lambda v: 0.5 * ((v - x) ** 2).sum() + w * total_variation(v).sum()  # noqa: E731
    ref = tv_skimage(x, w)  # scikit-image solves the same problem
    assert objective(u) <= objective(ref) * 1.001
    assert objective(u) < objective(x)


def test_tv_weight_zero_is_identity(x):
    assert torch.equal(tv_denoise(x, 0.0), x)
    assert torch.equal(tv_denoise(x, torch.zeros(2, 1, 32, 32)), x)
    assert torch.equal(D.make_defense("disentangled_tv", bitmap, lambda_tv=0.0)(x), x)


def test_tv_weight_map_smooths_only_where_asked(x):
    w = torch.zeros(2, 1, 32, 32)
    w[..., :, 16:] = 0.2
    u = tv_denoise(x, w, n_iter=100)
    left_change = (u - x)[..., :, :12].abs().mean()
    right_change = (u - x)[..., :, 20:].abs().mean()
    assert right_change > 10 * left_change


def test_tv_is_differentiable_when_unrolled(x):
    xr = x.clone().requires_grad_(True)
    tv_denoise(xr, 0.05, n_iter=10).sum().backward()
    assert xr.grad is not None and torch.isfinite(xr.grad).all()


def test_object_mask_range_and_shape(x):
    for source in D.MASK_SOURCES:
        m = D.likelihood_mask(bitmap, x, source=source)
        assert m.shape == (2, 1, 32, 32) and m.min() >= 0 and m.max() <= 1
        assert m.max() == 1 and m.min() == 0  # scaled per image


def test_object_mask_finds_the_busy_region():
    g = torch.Generator().manual_seed(1)
    img = torch.full((1, 3, 32, 32), 0.5)
    img[..., 8:24, 8:24] += 0.3 * torch.randn(1, 3, 16, 16, generator=g)
    m = D.likelihood_mask(bitmap, img.clamp(0, 1), source="input")
    assert m[..., 12:20, 12:20].mean() > 0.8 and m[..., :4, :].mean() < 0.2


def test_grad_cam_range_and_shape(x):
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = torch.nn.Conv2d(3, 4, 4, stride=4)
            self.head = torch.nn.Linear(4, 10)

        def forward(self, t):
            z = self.enc(t)
            return {"latent": z, "logits": self.head(z.mean(dim=(2, 3)))}

    torch.manual_seed(0)
    cam = D.grad_cam(Tiny(), x)
    assert cam.shape == (2, 1, 32, 32) and cam.min() >= 0 and cam.max() <= 1
    agree = D.mask_agreement(cam, cam)
    assert (agree["rank_corr"] > 0.99).all() and (agree["top_half_iou"] == 1).all()


def test_disentangled_defense_parts(x):
    d = D.make_defense("disentangled_tv", bitmap, lambda_tv=0.05)
    parts = d.forward_parts(x)
    assert torch.allclose(parts["low"] + parts["high"], x, atol=1e-6)
    out = parts["output"]
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert (total_variation(out) < total_variation(x)).all()
    # gentle on the object: the weight map is lambda on the background, object_factor * lambda on the object
    w = parts["weight"]
    assert float(w.max()) <= 0.05 + 1e-7 and float(w.min()) >= 0.25 * 0.05 - 1e-7
    assert torch.equal(d(x), out) and torch.equal(d(x), d(x))  # deterministic


@pytest.mark.parametrize("name", registry.DEFENSES.names())
def test_every_defense_keeps_shape_and_range(x, name):
    out = D.make_defense(name, bitmap)(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    if name == "none":
        assert torch.equal(out, x)
    else:
        assert not torch.equal(out, x)


def test_bit_depth_and_jpeg_values(x):
    out = D.BitDepth(1)(x)
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert not D.JPEG.differentiable and D.GlobalTV.differentiable


def test_bad_settings_raise(x):
    with pytest.raises(ConfigError, match="Unknown defense"):
        D.make_defense("median")
    with pytest.raises(ConfigError, match="bit_map_fn"):
        D.make_defense("disentangled_tv")
    with pytest.raises(ConfigError, match="weight"):
        tv_denoise(x, -1.0)
    with pytest.raises(ConfigError, match="mask source"):
        D.likelihood_mask(bitmap, x, source="cam")


# --------------------------------------------------------------------------- adaptive attacks (BPDA)
class _FakeSplit(torch.nn.Module):
    """A stand-in split model: likelihoods from a conv, logits from a linear head (noise arg accepted)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.enc = torch.nn.Conv2d(3, 4, 4, stride=4)
        self.head = torch.nn.Linear(4, 10)

    def forward(self, x, noise=None):
        z = self.enc(x)
        return {"latent": z, "logits": self.head(z.mean(dim=(2, 3))),
                "likelihoods": {"y": torch.sigmoid(z).clamp(1e-6, 1)}}


def test_bpda_is_identity_backward(x):
    from robustnb.attacks.adaptive import bpda

    xr = x.clone().requires_grad_(True)
    out = bpda(D.BitDepth(2), xr)
    assert torch.equal(out, D.BitDepth(2)(x))
    (out * 3).sum().backward()
    assert torch.allclose(xr.grad, torch.full_like(x, 3.0))


def test_defended_model_modes_and_eval_mode_kept(x):
    from robustnb.attacks.adaptive import DefendedModel

    m = _FakeSplit().eval()
    assert DefendedModel(m, D.JPEG()).mode == "bpda" and DefendedModel(m, D.GlobalTV()).mode == "unrolled"
    with pytest.raises(ConfigError):
        DefendedModel(m, D.JPEG(), mode="unrolled")
    assert not DefendedModel(m, D.GlobalTV()).training  # mirrors the model: torchattacks restores this mode


@pytest.mark.parametrize("name", ["global_tv", "jpeg", "disentangled_tv"])
def test_adaptive_attack_stays_in_the_ball_and_keeps_eval_mode(x, name):
    pytest.importorskip("robustnb.attacks.entropy")
    from robustnb.attacks import check_in_ball
    from robustnb.attacks.adaptive import AdaptiveEntropyAttack

    m = _FakeSplit().eval()
    d = D.make_defense(name, bitmap, D.DefenseSettings(n_iter=5))
    atk = AdaptiveEntropyAttack(m, d, eps=4 / 255, steps=2, draws=1)
    adv = atk(x, torch.zeros(len(x), dtype=torch.long))
    check_in_ball(adv, x, 4 / 255)
    assert not torch.equal(adv, x) and not m.training
    assert torch.equal(AdaptiveEntropyAttack(m, d, eps=0.0, steps=2, draws=1)(x), x)


# ------------------------------------------------- adaptive attacks through the object mask, with restarts
def test_mask_gradient_is_bpda_on_the_bit_map(x):
    """The defender's mask is a constant; an adaptive attacker (mask_gradient) gets a gradient through it
    while the forward value stays the defender's."""
    d = D.make_defense("disentangled_tv", bitmap, lambda_tv=0.05, n_iter=5)
    assert d.mask_gradient is False
    grads, wts = {}, torch.rand(x.shape, generator=torch.Generator().manual_seed(2))
    for flag in (False, True):
        d.mask_gradient = flag
        xr = x.clone().requires_grad_(True)
        m = d.mask(xr)
        assert torch.equal(m.detach(), D.likelihood_mask(bitmap, x, d.cutoff))  # same forward value
        assert m.requires_grad is flag
        (d(xr) * wts).sum().backward()
        grads[flag] = xr.grad.clone()
    assert not torch.allclose(grads[False], grads[True])  # the mask contributes to the attacker's gradient


def test_model_bit_map_soft_is_differentiable(x):
    m = _FakeSplit().eval()
    bm = D.model_bit_map(m)
    xr = x.clone().requires_grad_(True)
    soft = bm.soft(xr)
    assert soft.shape == bm(x).shape
    soft.sum().backward()
    assert xr.grad is not None and xr.grad.abs().sum() > 0
    with torch.no_grad():  # BPDA: the mask's forward value is the real (no-noise) bit map
        assert torch.equal(D.likelihood_mask(bm, x, grad=True), D.likelihood_mask(bm, x))


def test_adaptive_attacker_differentiates_through_the_mask_on_a_copy(x):
    from robustnb.attacks.adaptive import DefendedModel

    m = _FakeSplit().eval()
    d = D.make_defense("disentangled_tv", D.model_bit_map(m), D.DefenseSettings(n_iter=5))
    dm = DefendedModel(m, d)
    assert dm.mode == "unrolled" and dm.defense.mask_gradient and not d.mask_gradient
    assert not DefendedModel(m, d, through_mask=False).defense.mask_gradient
    assert DefendedModel(m, d, mode="bpda").defense is d


def test_restarts_keep_the_costliest_candidate_per_image(x, monkeypatch):
    from robustnb.attacks import adaptive as A

    best, idx = A.best_per_image([torch.zeros(2, 3), torch.ones(2, 3)], [torch.tensor([5., 1.]), torch.tensor([2., 9.])])
    assert idx.tolist() == [0, 1] and best[0].eq(0).all() and best[1].eq(1).all()

    m = _FakeSplit().eval()
    d = D.make_defense("global_tv", bitmap, D.DefenseSettings(n_iter=3))
    calls = []

    def fake_bytes(model, defense, t, batch_size=256):  # restart r scores r + 1 on image 0, -(r + 1) on image 1
        r = len(calls)
        calls.append(t.clone())
        return torch.tensor([r + 1.0, -(r + 1.0)])

    monkeypatch.setattr(A, "defended_bytes", fake_bytes)
    out = A.adaptive_entropy_attack(m, d, x, 4 / 255, steps=2, draws=1, restarts=2)
    assert len(calls) == 3 and not torch.equal(calls[0], calls[1])  # random restarts differ from the first run
    assert torch.equal(out[0], calls[2][0]) and torch.equal(out[1], calls[0][1])
    assert torch.equal(A.adaptive_entropy_attack(m, d, x, 4 / 255, steps=2, draws=1), calls[0])


def test_every_defense_names_its_strength():
    """Each registered defense but the identity has a strength (``STRENGTHS``), a field of ``DefenseSettings``
    that its maker reads: changing the field changes the defense built."""
    from dataclasses import replace

    s = D.DefenseSettings()
    assert set(D.STRENGTHS) == set(registry.DEFENSES.names()) - {"none"}
    for name, (field, label) in D.STRENGTHS.items():
        assert hasattr(s, field) and label and D.strength(name, s) == float(getattr(s, field))
        value = getattr(s, field)
        other = replace(s, **{field: type(value)(value * 2 if field != "jpeg" else 50)})
        a, b = D.make_defense(name, bitmap, s), D.make_defense(name, bitmap, other)
        assert vars(a) != vars(b), f"{name}: the strength field {field} does not reach the defense"
