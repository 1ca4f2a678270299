"""Salt & pepper noise attack: box, pixel values, success, determinism, models without parameters."""

import pytest
import torch
from torch import nn

from robustnb.attacks.noise import SaltAndPepper, accuracy_at_budgets
from robustnb.config import ConfigError


class DarkPixelCounter(nn.Module):
    """Predicts class 1 when more than 10% of the pixels are black, else class 0 (no parameters)."""

    def forward(self, x):
        frac = (x.amax(1) == 0).float().flatten(1).mean(1)
        return torch.stack([0.1 - frac, frac - 0.1], 1)


def _images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.2 + 0.6 * torch.rand(n, 3, 8, 8, generator=g)  # no pixel is 0 or 1 yet


def test_stays_in_box_and_only_sets_pixels_to_0_or_1():
    x = _images()
    y = torch.zeros(len(x), dtype=torch.long)
    atk = SaltAndPepper(DarkPixelCounter(), steps=40, repeats=2, seed=1)
    adv = atk(x, y)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    changed = (adv != x)
    assert changed.any()
    assert torch.all((adv[changed] == 0) | (adv[changed] == 1))
    # across channels: a changed pixel is black or white in every channel
    pix = changed.any(1)
    vals = adv.permute(0, 2, 3, 1)[pix]
    assert torch.all((vals == 0).all(1) | (vals == 1).all(1))


def test_finds_misclassification_and_minimal_density():
    x = _images()
    y = torch.zeros(len(x), dtype=torch.long)
    model = DarkPixelCounter()
    atk = SaltAndPepper(model, steps=50, repeats=3, seed=0)
    adv = atk(x, y)
    assert (model(adv).argmax(1) != y).all()
    # black pixels appear with probability p/2: flipping needs > 10% black, so p is around 0.2
    assert torch.all(atk.last_min_p > 0.08) and torch.all(atk.last_min_p < 0.6)
    acc = accuracy_at_budgets(atk.last_min_p, [0.01, 0.1, 0.9])
    assert acc[0.01] == 1.0 and acc[0.9] == 0.0 and acc[0.01] >= acc[0.1] >= acc[0.9]


def test_already_wrong_images_are_left_alone_and_unbreakable_ones_report_inf():
    x = _images(4)
    y = torch.tensor([1, 1, 0, 0])  # the first two are already misclassified (model says 0)
    atk = SaltAndPepper(DarkPixelCounter(), steps=5, repeats=1, max_p=0.05)  # too little noise to flip
    adv = atk(x, y)
    assert torch.equal(adv[:2], x[:2]) and torch.equal(adv[2:], x[2:])
    assert atk.last_min_p[:2].tolist() == [0.0, 0.0]
    assert torch.isinf(atk.last_min_p[2:]).all()


def test_deterministic_for_a_seed():
    x = _images()
    y = torch.zeros(len(x), dtype=torch.long)
    a = SaltAndPepper(DarkPixelCounter(), steps=20, seed=3)(x, y)
    b = SaltAndPepper(DarkPixelCounter(), steps=20, seed=3)(x, y)
    assert torch.equal(a, b)


def test_bad_arguments():
    with pytest.raises(ConfigError):
        SaltAndPepper(DarkPixelCounter(), steps=0)
    with pytest.raises(ConfigError):
        SaltAndPepper(DarkPixelCounter(), max_p=1.5)
    with pytest.raises(ValueError):
        SaltAndPepper(DarkPixelCounter())(torch.full((1, 3, 4, 4), 2.0), torch.zeros(1, dtype=torch.long))


class AnyBlackPixel(nn.Module):
    """Predicts class 1 as soon as one pixel is black (no parameters): fooled by very light noise."""

    def forward(self, x):
        frac = (x.amax(1) == 0).float().flatten(1).mean(1)
        return torch.stack([1e-6 - frac, frac - 1e-6], 1)


def test_budgets_are_on_the_search_grid():
    atk = SaltAndPepper(DarkPixelCounter(), steps=20, max_p=0.5, budgets=(0.01, 0.05))
    grid = atk.grid()[0]
    for b in (0.01, 0.05):
        assert torch.isclose(grid, torch.tensor(b, dtype=grid.dtype)).any()
    assert torch.all(grid[1:] >= grid[:-1]) and grid.max() == 0.5
    # a later repeat's smaller maximum keeps the budgets below it
    assert torch.isclose(atk.grid(0.03)[0], torch.tensor(0.01, dtype=torch.float64)).any()


def test_light_budget_is_really_tried():
    """Old grid (20 steps up to 0.5) started at 0.025: accuracy at 0.01 was clean accuracy by construction."""
    g = torch.Generator().manual_seed(0)
    x = 0.2 + 0.6 * torch.rand(8, 3, 32, 32, generator=g)
    y = torch.zeros(len(x), dtype=torch.long)
    old = SaltAndPepper(AnyBlackPixel(), steps=20, repeats=1, max_p=0.5, seed=0)
    old(x, y)
    assert accuracy_at_budgets(old.last_min_p, [0.01])[0.01] == 1.0
    new = SaltAndPepper(AnyBlackPixel(), steps=20, repeats=1, max_p=0.5, seed=0, budgets=(0.01, 0.05))
    new(x, y)
    assert accuracy_at_budgets(new.last_min_p, [0.01])[0.01] < 0.5
    # an image fooled exactly at a budget counts as fooled at that budget
    assert (new.last_min_p == 0.01).any()
    assert accuracy_at_budgets(new.last_min_p, [0.05])[0.05] == 0.0


# ------------------------------------------------------------------------------ the random sign-noise null
def test_sign_noise_is_plus_or_minus_epsilon_inside_the_box():
    from robustnb.attacks.noise import sign_noise

    x = _images(4)  # in [0.2, 0.8]: epsilon never clips
    out = sign_noise(x, 8 / 255, seed=1)
    d = out - x
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.allclose(d.abs(), torch.full_like(d, 8 / 255), atol=1e-6)  # every value moved by +-epsilon
    assert 0.4 < float((d > 0).float().mean()) < 0.6  # signs half and half
    edge = torch.cat([torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)])
    clipped = sign_noise(edge, 8 / 255)
    assert clipped.min() >= 0 and clipped.max() <= 1 and (clipped - edge).abs().max() <= 8 / 255 + 1e-7


def test_sign_noise_is_seeded_and_leaves_the_global_rng_alone():
    from robustnb.attacks.noise import sign_noise

    x = _images(3)
    state = torch.random.get_rng_state()
    a, b, c = sign_noise(x, 4 / 255, seed=5), sign_noise(x, 4 / 255, seed=5), sign_noise(x, 4 / 255, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(state, torch.random.get_rng_state())


def test_sign_noise_is_white_so_its_high_frequency_share_is_the_planes():
    """The null of the frequency chapter: about 80% of a sign perturbation's power lies above 0.25 cycles/pixel
    because about 80% of the frequency plane does, not because anything favours high frequencies."""
    from robustnb import signal
    from robustnb.attacks.noise import sign_noise

    x = 0.1 + 0.8 * torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    shares = signal.high_frequency_shares(sign_noise(x, 8 / 255) - x, (0.15, 0.25, 0.35)).mean(0)
    plane = torch.tensor([signal.plane_share_above(32, 32, c) for c in (0.15, 0.25, 0.35)])
    assert torch.allclose(shares, plane, atol=0.01)
    assert 0.78 < float(plane[1]) < 0.83


def test_sign_noise_refuses_bad_arguments():
    from robustnb.attacks.noise import sign_noise

    with pytest.raises(ConfigError, match="Did you mean 8/255"):
        sign_noise(_images(1), 8)
    with pytest.raises(ConfigError):
        sign_noise(_images(1), 4 / 255, seed=-1)
    with pytest.raises(ConfigError):
        sign_noise(torch.rand(3, 8, 8), 4 / 255)
