"""Estimated vs real rate, bit maps (tiny untrained split models; no dataset needed)."""

import pytest
import torch

from robustnb.split import rate
from robustnb.registry import ENTROPY_MODELS
from robustnb.split import SplitModel


@pytest.fixture(scope="module", params=ENTROPY_MODELS.names())
def model(request):
    torch.manual_seed(0)
    m = SplitModel("vgg", request.param, latent_channels=8).eval()
    m.update(force=True)
    return m


def test_estimated_bits_shape_and_gradient(model):
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    bits = rate.estimated_bits(model, x, training_noise=True)
    assert bits.shape == (3,) and (bits > 0).all()
    bits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    plain = rate.estimated_bits(model, x.detach())
    assert plain.shape == (3,) and not plain.requires_grad


def test_real_bytes_match_estimate_up_to_a_small_constant(model):
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    est = rate.estimated_bits(model, x) / 8
    streams = rate.stream_bytes(model, x)
    real = rate.real_bytes(model, x)
    assert streams.shape == (16, 1 if model.entropy_model == "factorized" else 2)
    torch.testing.assert_close(streams.sum(1), real)
    assert (real > 0).all()
    assert abs(real.mean() - est.mean()) <= 0.05 * est.mean() + 8 * streams.shape[1]


def test_bit_map_sums_to_latent_bits(model):
    x = torch.rand(2, 3, 32, 32)
    bm = rate.bit_map(model, x)
    assert bm.shape == (2, 8, 8)
    y_bits = (-torch.log2(model(x)["likelihoods"]["y"])).flatten(1).sum(1)
    torch.testing.assert_close(bm.flatten(1).sum(1), y_bits.detach(), rtol=1e-4, atol=1e-3)


def test_bpp_and_rate_agreement_frame(model):
    assert float(rate.bpp(torch.tensor(1024.0), (3, 32, 32))) == 1.0
    x = torch.rand(8, 3, 32, 32)
    df = rate.rate_agreement({("vgg", model.entropy_model, 0.1): model}, x)
    assert len(df) == 1 and df["top1_agreement"].iloc[0] == 1.0
    assert df["max_abs_logit_diff"].iloc[0] < 1e-4
    assert {"est_bytes", "real_bytes", "per_stream_const_bytes", "within_5pct_plus_const"} <= set(df.columns)


def test_coded_strings_bytes_and_decode(model):
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    c = rate.coded(model, x, batch_size=2)
    assert len(c) == 5 and len(c.strings) == (1 if model.entropy_model == "factorized" else 2)
    assert c.stream_bytes.shape == (5, len(c.strings))
    torch.testing.assert_close(c.real_bytes, rate.real_bytes(model, x))
    assert c.batch(1, 3) == [s[1:3] for s in c.strings]
    assert rate.decode_agreement(model, x)["top1_agreement"] == 1.0


def test_empty_batch(model):
    x = torch.rand(0, 3, 32, 32)
    assert rate.coded(model, x).stream_bytes.shape == (0, 1)
    assert rate.real_bytes(model, x).shape == (0,)
    assert rate.decode_agreement(model, x) == {"max_abs_logit_diff": 0.0, "top1_agreement": 1.0}


def test_location_bits_is_the_per_location_view_of_bits():
    """``rate.location_bits`` sums to ``rate.bits`` of the same stream, and its floor keeps a zero probability
    finite (the defense's differentiable map relies on it)."""
    lik = torch.rand(3, 4, 5, 6) * 0.9 + 0.05
    per_location = rate.location_bits(lik)
    assert per_location.shape == (3, 5, 6)
    torch.testing.assert_close(per_location.flatten(1).sum(1), rate.bits({"y": lik}))
    lik[0, 0, 0, 0] = 0.0
    assert torch.isinf(rate.location_bits(lik)[0, 0, 0])
    assert torch.isfinite(rate.location_bits(lik, floor=1e-9)).all()
