"""Spectra and FFT filters of robustnb.signal: identities, known values, [0, 1], errors."""

import math

import pytest
import torch

from robustnb import signal as Fq
from robustnb.config import ConfigError


@pytest.fixture
def x():
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, 3, 32, 32, generator=g)


def test_lowpass_full_cutoff_is_identity(x):
    assert torch.equal(Fq.lowpass(x, Fq.F_MAX), x)
    # just below F_MAX only the corner frequency (-1/2, -1/2), a checkerboard, is removed
    diff = x - Fq.lowpass(x, 0.7)
    checker = (-1.0) ** (torch.arange(32)[:, None] + torch.arange(32)[None, :])
    coef = (diff * checker).mean(dim=(-2, -1), keepdim=True)
    assert torch.allclose(diff, coef * checker, atol=1e-5)


def test_lowpass_zero_cutoff_leaves_the_mean(x):
    lp = Fq.lowpass(x, 0.0)
    assert torch.allclose(lp, x.mean(dim=(-2, -1), keepdim=True).expand_as(x), atol=1e-5)


@pytest.mark.parametrize("kind", Fq.FILTER_KINDS)
@pytest.mark.parametrize("cutoff", [0.0, 0.1, 0.3, Fq.F_MAX])
def test_split_sums_back(x, kind, cutoff):
    low, high = Fq.split(x, cutoff, kind)
    assert torch.allclose(low + high, x, atol=1e-6)


def test_lowpass_is_a_projection_and_removes_a_high_sinusoid():
    t = torch.arange(32).float()
    fine = 0.5 + 0.25 * torch.cos(2 * math.pi * 0.375 * t)  # 0.375 cycles/pixel along x
    coarse = 0.5 + 0.25 * torch.cos(2 * math.pi * (2 / 32) * t)
    img = torch.stack([fine.expand(32, 32)] * 3)[None]
    assert torch.allclose(Fq.lowpass(img, 0.25), torch.full_like(img, 0.5), atol=1e-5)
    img2 = torch.stack([coarse.expand(32, 32)] * 3)[None]
    assert torch.allclose(Fq.lowpass(img2, 0.25), img2, atol=1e-5)
    lp = Fq.lowpass(img + img2 - 0.5, 0.25)
    assert torch.allclose(Fq.lowpass(lp, 0.25), lp, atol=1e-5)  # idempotent


def test_radial_spectrum_peaks_at_the_sinusoid_frequency():
    t = torch.arange(64).float()
    img = (0.5 + 0.4 * torch.cos(2 * math.pi * 0.25 * t)).expand(1, 1, 64, 64)
    f, p = Fq.radial_spectrum(img)
    assert p.shape == (1, len(f))
    assert abs(float(f[p[0].argmax()]) - 0.25) <= float(f[1] - f[0])


def test_parseval_and_high_frequency_share(x):
    xm = x - x.mean(dim=(-2, -1), keepdim=True)
    power = (torch.fft.fft2(xm.double()).abs() ** 2).sum() / (32 * 32)
    assert torch.isclose(power, (xm.double() ** 2).sum(), rtol=1e-6)
    share = Fq.high_frequency_share(x, 0.25)
    assert share.shape == (3,) and ((share > 0) & (share < 1)).all()
    smooth = Fq.lowpass(x, 0.1)
    assert (Fq.high_frequency_share(smooth, 0.25) < 1e-6).all()


def test_filtered_is_an_image(x):
    for band in ("low", "high"):
        out = Fq.filtered(x, 0.2, band)
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(Fq.filtered(flat, 0.2, "high"), flat, atol=1e-6)


def test_total_variation_known_values():
    step = torch.zeros(1, 1, 4, 4)
    step[..., 2:] = 1.0
    assert float(Fq.total_variation(step)) == pytest.approx(4.0)
    assert float(Fq.total_variation(torch.ones(1, 3, 8, 8))) == 0.0


def test_bad_cutoff_and_band_raise(x):
    with pytest.raises(ConfigError, match="cutoff"):
        Fq.lowpass(x, 0.9)
    with pytest.raises(ConfigError, match="band"):
        Fq.filtered(x, 0.2, "mid")
    with pytest.raises(ConfigError, match="filter kind"):
        Fq.lowpass(x, 0.2, "butterworth")


def test_high_frequency_shares_at_several_cutoffs_match_one_at_a_time(x):
    cs = (0.15, 0.25, 0.35)
    many = Fq.high_frequency_shares(x, cs)
    assert many.shape == (len(x), 3)
    for k, c in enumerate(cs):
        assert torch.allclose(many[:, k], Fq.high_frequency_share(x, c), atol=1e-6)
    assert torch.all(many[:, 0] >= many[:, 1]) and torch.all(many[:, 1] >= many[:, 2])  # less above a higher cutoff
    with pytest.raises(ConfigError):
        Fq.high_frequency_shares(x, (0.25, 0.9))
    with pytest.raises(ConfigError):
        Fq.high_frequency_shares(x, ())


def test_plane_share_above_counts_the_fft_grid():
    assert Fq.plane_share_above(32, 32, 0.0) == 1.0 and Fq.plane_share_above(32, 32, Fq.F_MAX) == 0.0
    # the disc of radius 0.25 covers about pi/16 of the unit frequency square
    assert Fq.plane_share_above(32, 32, 0.25) == pytest.approx(1 - math.pi / 16, abs=0.01)
    assert Fq.plane_share_above(32, 32, 0.15) > Fq.plane_share_above(32, 32, 0.25) > Fq.plane_share_above(32, 32, 0.35)


def test_ring_mask_is_the_outer_ring():
    m = Fq.ring_mask(8, 8)
    assert m.sum() == 28 and m[0].all() and m[-1].all() and m[:, 0].all() and m[:, -1].all() and not m[1:-1, 1:-1].any()
    assert Fq.ring_mask(8, 8, 2).sum() == 64 - 16 and not Fq.ring_mask(8, 8, 0).any()
    assert not (Fq.ring_mask(8, 8) & Fq.center_mask(8, 8)).any()
    for bad in (-1, 5, 1.5, True):
        with pytest.raises(ConfigError):
            Fq.ring_mask(8, 8, bad)
