"""The frequency-analysis chapter's experiments (robustnb.chapters.frequency_analysis) on known rates."""

import pytest
import torch

from robustnb import signal as S
from robustnb.chapters import frequency_analysis as Fq
from robustnb.config import ConfigError


def test_cutoff_sweep_and_band_shares_with_a_known_rate():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 16, 16, generator=g)
    rate_fn = lambda t: (t - t.mean(dim=(-2, -1), keepdim=True)).pow(2).flatten(1).sum(1)  # noqa: E731
    sw = Fq.cutoff_sweep(rate_fn, {"clean": x}, [0.1, S.F_MAX])
    full = sw[(sw["filter"] == "low-pass") & (sw["cutoff"] == S.F_MAX)]["rate_ratio"].iloc[0]
    assert full == pytest.approx(1.0)
    shares = Fq.band_shares(rate_fn, {"clean": x}, edges=(0.1, 0.25))
    assert shares["share"].sum() == pytest.approx(1.0)
    assert shares["power_share"].sum() == pytest.approx(1.0, abs=1e-6)
    v = Fq.claim_verdict(sw.assign(lam=1), cutoff=0.1, by=("lam",))
    assert v.shape[0] == 1 and "claim_holds" in v


def test_bit_allocation_center_and_correlation():
    x = torch.full((2, 3, 32, 32), 0.5)
    x[:, :, 8:24, 8:24] += 0.3 * torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    x = x.clamp(0, 1)
    bitmap = lambda t: S.local_energy(t, (8, 8))  # noqa: E731  bits follow HF energy exactly
    df = Fq.bit_allocation(bitmap, {"clean": x})
    assert (df["object_ratio"] > 1).all() and (df["hf_corr"] > 0.99).all()
    assert S.center_mask(8, 8).sum() == 16


def test_natural_images_shape():
    imgs, names = Fq.natural_images(("astronaut", "coffee"), size=48)
    assert imgs.shape == (2, 3, 48, 48) and imgs.min() >= 0 and imgs.max() <= 1 and names == ["astronaut", "coffee"]
    with pytest.raises(ConfigError):
        Fq.natural_images(("lena",))
