"""The entropy attack does its per-step work once: the encoder, and a defense in front of it,
run once per step on the N images; only the entropy model runs on the latent repeated ``draws`` times, and
the classifier only when the objective reads the logits. The gradients and adversarial images must be those
of the old objective (kept here as the reference: the full forward of ``x.repeat(draws, 1, 1, 1)``).

Models: untrained resnet split models with the smoke preset's density width (the numbers compared do not
depend on training), in eval mode, as the attack sees them."""

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustnb import defenses as D
from robustnb.attacks.adaptive import AdaptiveEntropyAttack, DefendedModel
from robustnb.attacks.entropy import EntropyAttack, has_split_path
from robustnb.split import SplitTrainConfig, build_split_model
from robustnb.split.rate import bits

ENTROPY_MODELS = ("factorized", "hyperprior")
#: float tolerance, relative to the gradient's largest entry (the encoder on N images and on the draws * N
#: repeated ones, and the sums over the draws in another order, differ by float32 rounding)
GRAD_RTOL = 1e-5


# ----------------------------------------------------------------------------- the old objective (reference)
def old_objective(attack, x, clean_pred=None):
    """``EntropyAttack.objective`` before encoding once per step: the whole model on ``draws`` copies of the batch."""
    out = attack.model(x.repeat(attack.draws, 1, 1, 1), noise=True)
    lik = out["likelihoods"]
    elements = sum(v[0].numel() for v in lik.values())
    obj = (bits(lik) / elements).mean()
    if clean_pred is not None:
        obj = obj - attack.label_weight * F.cross_entropy(out["logits"], clean_pred.repeat(attack.draws))
    return obj


class OldEntropyAttack(EntropyAttack):
    """The entropy attack with the old objective (same PGD loop, same RNG handling)."""

    def objective(self, x, clean_pred=None):
        return old_objective(self, x, clean_pred)


# ----------------------------------------------------------------------------- models and defenses
_MODELS = {}


def split_model(entropy_model: str):
    if entropy_model not in _MODELS:
        torch.manual_seed(0)
        init_scale = SplitTrainConfig.from_preset("smoke").init_scale
        _MODELS[entropy_model] = build_split_model("resnet", entropy_model, init_scale=init_scale).eval()
    return _MODELS[entropy_model]


def images(n=4, seed=0):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


class SmoothBitMap(D.BitMap):
    """The model's bit map with a *deterministic* differentiable stand-in for the noise-relaxed one (the squared
    latent summed over channels): the mask's backward pass without random numbers, so that the old and the new
    objective can be compared draw for draw through the object mask too."""

    def soft(self, t):
        return (self.model.encode(t) ** 2).sum(1)


def wrap(m, kind: str, through_mask: bool = False):
    """The model the attack receives: bare, or behind a defense (disentangled: mask gradient off by default)."""
    if kind == "bare":
        return m
    if kind == "global_tv":
        return DefendedModel(m, D.GlobalTV(0.05, n_iter=20))
    if kind == "gaussian_blur":
        return DefendedModel(m, D.GaussianBlur(0.8))
    if kind == "jpeg":
        return DefendedModel(m, D.JPEG(75))  # BPDA
    bit_map = SmoothBitMap(m) if kind == "disentangled_smooth" else D.model_bit_map(m)
    d = D.make_defense("disentangled_tv", bit_map, lambda_tv=0.05, n_iter=20)
    return DefendedModel(m, d, through_mask=through_mask)


def gradient(objective, attack, x, clean_pred=None, seed=0):
    torch.manual_seed(seed)
    xr = x.clone().requires_grad_(True)
    return torch.autograd.grad(objective(attack, xr, clean_pred), xr)[0]


def assert_same_gradient(new, old):
    torch.testing.assert_close(new, old, atol=GRAD_RTOL * float(old.abs().max()), rtol=GRAD_RTOL)


def assert_other_gradient(a, b):
    assert not torch.allclose(a, b, atol=1e-3 * float(b.abs().max()), rtol=1e-3)


def clean_prediction(model, x):
    with torch.no_grad():
        return model(x, noise=False)["logits"].argmax(1)


# ----------------------------------------------------------------------------- same numbers as before
@pytest.mark.parametrize("kind", ["bare", "global_tv", "gaussian_blur", "disentangled", "jpeg"])
@pytest.mark.parametrize("keep_label", [False, True])
@pytest.mark.parametrize("entropy_model", ENTROPY_MODELS)
def test_gradient_and_adversarial_images_equal_the_old_ones(entropy_model, keep_label, kind):
    m = split_model(entropy_model)
    model, x = wrap(m, kind), images()
    assert has_split_path(model)
    atk = EntropyAttack(model, eps=8 / 255, steps=3, draws=4, keep_label=keep_label)
    cp = clean_prediction(model, x) if keep_label else None
    old, new = gradient(old_objective, atk, x, cp), gradient(EntropyAttack.objective, atk, x, cp)
    assert old.abs().max() > 0 and (old != 0).float().mean() > 0.5  # a real gradient, not the trivial one
    assert_same_gradient(new, old)
    kw = dict(eps=8 / 255, steps=3, draws=4, keep_label=keep_label, seed=1)
    adv_old, adv_new = OldEntropyAttack(model, **kw)(x), EntropyAttack(model, **kw)(x)
    assert not torch.equal(adv_old, x)
    torch.testing.assert_close(adv_new, adv_old, atol=1e-6, rtol=0)  # a flipped gradient sign moves 2 * alpha


def test_gradient_through_the_object_mask_equals_the_old_one_on_the_deterministic_path():
    """Through the mask (mask_gradient on) with a deterministic soft bit map: draw for draw the old gradient.
    (The hyperprior model: the untrained factorized model's latents all round to zero, its bit map is flat and
    its mask zero, so there would be no mask gradient to compare.)"""
    m = split_model("hyperprior")
    model, x = wrap(m, "disentangled_smooth", through_mask=True), images()
    assert model.defense.mask_gradient
    atk = EntropyAttack(model, draws=4)
    old, new = gradient(old_objective, atk, x), gradient(EntropyAttack.objective, atk, x)
    assert_same_gradient(new, old)
    no_mask = gradient(EntropyAttack.objective, EntropyAttack(wrap(m, "disentangled_smooth"), draws=4), x)
    assert_other_gradient(no_mask, old)  # the mask's part is in the comparison


def test_gradient_through_the_noisy_object_mask_with_one_draw_is_the_old_one():
    """With the real noise-relaxed bit map the mask draws its noise once per step (not per draw): with one draw
    the random numbers are the same as before, in the same order, so the gradient is too. (With more draws the
    mask's noise is shared by the draws; independent of the entropy noise, so the expectation is unchanged.)"""
    m = split_model("hyperprior")
    model, x = wrap(m, "disentangled", through_mask=True), images()
    atk = EntropyAttack(model, draws=1)
    old, new = gradient(old_objective, atk, x), gradient(EntropyAttack.objective, atk, x)
    assert_same_gradient(new, old)
    other_seed = gradient(EntropyAttack.objective, atk, x, seed=1)
    assert_other_gradient(other_seed, old)  # the noise does enter the gradient


# ----------------------------------------------------------------------------- work done once per step
class Counter:
    """Forward hooks counting the calls of a module and the batch sizes it saw."""

    def __init__(self, module):
        self.batches = []
        self.handle = module.register_forward_hook(lambda mod, inp, out: self.batches.append(len(inp[0])))


@pytest.mark.parametrize("kind", ["bare", "global_tv"])
@pytest.mark.parametrize("keep_label", [False, True])
def test_encoder_runs_once_per_step_and_the_tail_only_for_the_logits(kind, keep_label):
    m = split_model("hyperprior")
    model, x = wrap(m, kind), images(3)
    steps, draws = 3, 5
    enc, tail, ent = Counter(m.stem), Counter(m.tail), Counter(m.h_a)
    defense = Counter(model.defense) if kind != "bare" else None
    try:
        EntropyAttack(model, eps=4 / 255, steps=steps, draws=draws, keep_label=keep_label)(x)
    finally:
        for c in (enc, tail, ent) + ((defense,) if defense else ()):
            c.handle.remove()
    clean = [len(x)] if keep_label else []  # the stealthy variant's clean prediction: one full forward
    assert enc.batches == clean + [len(x)] * steps
    assert ent.batches == clean + [draws * len(x)] * steps  # the noise is still drawn per draw
    assert tail.batches == (clean + [draws * len(x)] * steps if keep_label else [])
    if defense:
        assert defense.batches == clean + [len(x)] * steps


def test_the_old_objective_ran_the_encoder_per_draw():
    """The counting test above can fail: the reference objective runs the encoder on every draw."""
    m = split_model("factorized")
    enc, tail = Counter(m.stem), Counter(m.tail)
    try:
        OldEntropyAttack(m, eps=4 / 255, steps=2, draws=3)(images(2))
    finally:
        enc.handle.remove()
        tail.handle.remove()
    assert enc.batches == [6, 6] and tail.batches == [6, 6]


# ----------------------------------------------------------------------------- models without the split path
class FakeSplit(nn.Module):
    """A model with only ``forward(x, noise)`` (no encode / entropy / classify)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Conv2d(3, 4, 4, stride=4)
        self.head = nn.Linear(4, 10)

    def forward(self, x, noise=None):
        z = self.enc(x)
        z = z + (torch.rand_like(z) - 0.5 if noise else 0)
        return {"latent": z, "logits": self.head(z.mean(dim=(2, 3))), "likelihoods": {"y": torch.sigmoid(z)}}


class Forwarding(nn.Module):
    """A wrapper that preprocesses the image and forwards other attributes (``encode`` too) to the model."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, **kw):
        return self.model(1 - x, **kw)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)


@pytest.mark.parametrize("make", [lambda m: FakeSplit(), Forwarding,
                                  lambda m: DefendedModel(FakeSplit(), D.GlobalTV(0.05, 5))],
                         ids=["no split path", "forwarding wrapper", "defended model without split path"])
@pytest.mark.parametrize("keep_label", [False, True])
def test_a_model_without_the_split_path_gets_the_full_forward(make, keep_label):
    model, x = make(split_model("factorized")).eval(), images(3)
    assert not has_split_path(model)
    cp = clean_prediction(model, x) if keep_label else None
    atk = EntropyAttack(model, draws=3, keep_label=keep_label)
    torch.testing.assert_close(gradient(EntropyAttack.objective, atk, x, cp), gradient(old_objective, atk, x, cp),
                               atol=0, rtol=0)


def test_defended_model_encode_runs_the_defense_and_refuses_to_skip_it():
    m, d = split_model("factorized"), D.GlobalTV(0.05, 10)
    dm, x = DefendedModel(m, d), images(2)
    with torch.no_grad():
        assert torch.equal(dm.encode(x), m.encode(d(x)))
        assert not torch.allclose(dm.encode(x), m.encode(x))  # not the bare encoder
    assert dm.split_path and has_split_path(dm)
    with pytest.raises(AttributeError, match="past the defense"):
        dm.compress(x)
    assert dm.entropy_bottleneck is m.entropy_bottleneck  # other attributes are still the model's


def test_adaptive_attack_through_the_mask_runs_and_is_deterministic():
    m = split_model("hyperprior")
    d = D.make_defense("disentangled_tv", D.model_bit_map(m), lambda_tv=0.05, n_iter=10)
    x = images(2)
    a = AdaptiveEntropyAttack(m, d, eps=4 / 255, steps=2, draws=3, seed=2)(x)
    b = AdaptiveEntropyAttack(m, d, eps=4 / 255, steps=2, draws=3, seed=2)(x)
    assert torch.equal(a, b) and not torch.equal(a, x) and not m.training


# ----------------------------------------------------------------------------- speed
def _attack_seconds(attack_cls, model, x, draws, repeats=3):
    best = float("inf")
    for _ in range(repeats):  # the fastest of a few runs: the machine may be shared
        t = time.perf_counter()
        attack_cls(model, eps=8 / 255, steps=2, draws=draws)(x)
        best = min(best, time.perf_counter() - t)
    return best


def test_sixteen_draws_cost_a_few_times_one_draw():
    """16 draws vs 1 draw, 32 images, 2 steps, one thread, hyperprior model: was ~19x (the encoder per draw)."""
    m, x = split_model("hyperprior"), images(32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        new = _attack_seconds(EntropyAttack, m, x, 16) / _attack_seconds(EntropyAttack, m, x, 1)
        old = _attack_seconds(OldEntropyAttack, m, x, 16, 1) / _attack_seconds(OldEntropyAttack, m, x, 1, 1)
    finally:
        torch.set_num_threads(threads)
    print(f"\n16 draws / 1 draw (32 images, 2 steps, 1 thread): {new:.2f}x now, {old:.2f}x with the old objective")
    assert new < 6.0 and new < old
