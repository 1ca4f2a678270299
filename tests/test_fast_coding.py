"""The fast rANS path (robustnb.split.model's coder functions, SplitModel.compress/decompress, rate.coded):
byte for byte CompressAI's own ``compress``, decodable, and about as cheap as the estimate.

The reference is always CompressAI's class method called on our entropy model
(``EntropyBottleneck.compress(eb, ...)``, ``GaussianConditional.compress(gc, ...)``), never our own code.
Untrained smoke split models; their encoders are scaled up so that the latents use many symbols and, for the
hyperprior, most rows of the Gaussian CDF table (an untrained encoder's latent rounds to all zeros).
"""

import time

import pytest
import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional

from robustnb.registry import ENTROPY_MODELS
from robustnb.split import rate
from robustnb.split.model import (bottleneck_compress, bottleneck_decompress, build_split_model, entropy_compress,
                                  entropy_decompress, scale_indexes)


def _model(entropy_model: str, seed: int = 0):
    torch.manual_seed(seed)
    m = build_split_model("vgg", entropy_model).eval()
    with torch.no_grad():  # wider latents: many symbols, many CDF rows (see the module docstring)
        m.g_a[-1].weight.mul_(40)
        if entropy_model == "hyperprior":
            m.h_a[-1].weight.mul_(10)
            m.h_s[-1].weight.mul_(30)
    m.update(force=True)
    return m


@pytest.fixture(scope="module", params=ENTROPY_MODELS.names())
def model(request):
    return _model(request.param)


def _images(n: int, kind: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.rand(n, 3, 32, 32, generator=g)
    if kind == "extreme":  # saturated high-frequency patterns: the latents far out in the tails
        return (torch.rand(n, 3, 32, 32, generator=g) > 0.5).float()
    raise ValueError(kind)


def _adversarial(model, x: torch.Tensor, steps: int = 3, eps: float = 16 / 255) -> torch.Tensor:
    """A few signed-gradient steps up the estimated rate (an entropy attack in miniature)."""
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        grad, = torch.autograd.grad(rate.estimated_bits(model, adv, training_noise=True).sum(), adv)
        adv = (x + (adv.detach() + eps / 2 * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)
    return adv.detach()


# ------------------------------------------------------------------------------------ entropy-model level
@pytest.mark.parametrize("n", [1, 7, 256])
def test_bottleneck_strings_identical_with_escapes(model, n):
    eb = model.entropy_bottleneck
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, eb.channels, 4, 4, generator=g) * 6
    x[:, :, 0, 0] = torch.randn(n, eb.channels, generator=g) * 1e4  # far past the table: escape coding
    strings, x_hat = bottleneck_compress(eb, x)
    assert strings == EntropyBottleneck.compress(eb, x)
    assert torch.equal(x_hat, EntropyBottleneck.decompress(eb, strings, x.shape[2:]))
    assert torch.equal(bottleneck_decompress(eb, strings, x.shape[2:]), x_hat)


@pytest.mark.parametrize("n", [1, 7, 256])
def test_gaussian_strings_identical_over_the_whole_table(n):
    gc = _model("hyperprior").gaussian_conditional
    g = torch.Generator().manual_seed(n)
    shape = (n, 24, 8, 8)
    table = gc.scale_table
    scales = torch.exp(torch.empty(shape).uniform_(-3.5, 6.0, generator=g))  # 0.03 .. 400: every row and past
    scales.view(-1)[: len(table)] = table[: min(len(table), scales.numel())]  # exactly on the table's entries
    means = torch.randn(shape, generator=g) * 5
    y = means + torch.randn(shape, generator=g) * scales
    y.view(-1)[::97] = torch.randn(y.view(-1)[::97].shape, generator=g) * 1e5  # out-of-range symbols: escapes
    indexes = GaussianConditional.build_indexes(gc, scales)
    assert torch.equal(scale_indexes(gc, scales), indexes)
    assert len(indexes.unique()) == len(table) or n == 1
    strings = entropy_compress(gc, y, indexes, means=means)
    assert strings == GaussianConditional.compress(gc, y, indexes, means=means)
    decoded = entropy_decompress(gc, strings, indexes, means=means)
    assert torch.equal(decoded, GaussianConditional.decompress(gc, strings, indexes, means=means))
    assert torch.equal(decoded, gc.quantize(y, "dequantize", means))


def test_memo_follows_the_tables():
    """The Python copy of the CDF tables is rebuilt after update() replaces them and after an in-place write."""
    m = _model("factorized")
    eb = m.entropy_bottleneck
    x = torch.randn(3, eb.channels, 4, 4) * 8
    bottleneck_compress(eb, x)  # memoise
    with torch.no_grad():
        eb.quantiles[:, 0, 0] -= 5  # a wider table
        eb.quantiles[:, 0, 2] += 5
    eb.update(force=True)
    assert bottleneck_compress(eb, x)[0] == EntropyBottleneck.compress(eb, x)
    # in place (as load_state_dict writes): channels 0 and 1 swap their densities
    assert not torch.equal(eb._quantized_cdf[0], eb._quantized_cdf[1])
    before = bottleneck_compress(eb, x)[0]
    with torch.no_grad():
        for t in (eb._quantized_cdf, eb._cdf_length, eb._offset):
            t[[0, 1]] = t[[1, 0]].clone()
    after = bottleneck_compress(eb, x)[0]
    assert after == EntropyBottleneck.compress(eb, x) and after != before


def test_bad_indexes_refused():
    gc = _model("hyperprior").gaussian_conditional
    y = torch.zeros(2, 4, 3, 3)
    with pytest.raises(ValueError, match="CDF indexes must lie in"):
        entropy_compress(gc, y, torch.full(y.shape, len(gc.scale_table), dtype=torch.int32))
    with pytest.raises(ValueError, match="same size"):
        entropy_compress(gc, y, torch.zeros(2, 4, 3, 2, dtype=torch.int32))


def test_other_coder_goes_through_compressai(monkeypatch):
    m = _model("factorized")
    eb = m.entropy_bottleneck
    x = torch.randn(2, eb.channels, 4, 4) * 5
    calls = []
    orig = EntropyBottleneck.compress
    monkeypatch.setattr(EntropyBottleneck, "compress", lambda self, *a: calls.append(1) or orig(self, *a))
    monkeypatch.setattr(eb.entropy_coder, "name", "rangecoder")
    strings, _ = bottleneck_compress(eb, x)
    assert calls and strings == orig(eb, x)


# ------------------------------------------------------------------------------------------ model level
@pytest.mark.parametrize("kind, n", [("random", 1), ("random", 7), ("random", 256), ("extreme", 1), ("extreme", 7),
                                     ("adversarial", 7)])
def test_model_strings_identical_and_decodable(model, kind, n):
    x = _images(n, "random" if kind == "adversarial" else kind, seed=n)
    if kind == "adversarial":
        x = _adversarial(model, x)
    ours, ref = model.compress(x), model.compress_reference(x)
    assert ours["shape"] == ref["shape"] and ours["strings"] == ref["strings"]
    with torch.no_grad():
        out = model(x, noise=False)
        latent = model.decompress_latent(ours["strings"], ours["shape"])
        assert torch.equal(latent, out["latent"])  # lossless: the rounded latent the forward pass uses
        torch.testing.assert_close(model.decompress(ours["strings"], ours["shape"]), out["logits"], rtol=0, atol=1e-5)


def test_no_image_is_handed_the_whole_gaussian_table(monkeypatch):
    """The cost CompressAI pays per image: its whole CDF table (64 x 3,133 for the Gaussian). The fast path
    hands over only the rows an image uses, trimmed to their lengths."""
    m = _model("hyperprior")
    gc = m.gaussian_conditional
    x = _images(8, "random")
    handed = []
    encode = gc.entropy_coder.encode_with_indexes

    def counting(symbols, indexes, cdfs, sizes, offsets):
        handed.append((sum(len(r) for r in cdfs), len(cdfs), len(set(indexes))))
        return encode(symbols, indexes, cdfs, sizes, offsets)

    monkeypatch.setattr(gc.entropy_coder, "encode_with_indexes", counting)
    m.compress(x)
    assert len(handed) == len(x)
    assert all(n_ints < gc._quantized_cdf.numel() // 4 and rows == used for n_ints, rows, used in handed)


# ------------------------------------------------------------------------------------------- rate level
class _Counting(torch.nn.Module):
    """A split model that counts the images it compresses and decompresses."""

    def __init__(self, m):
        super().__init__()
        self.m, self.compressed, self.decompressed = m, 0, 0

    def forward(self, x, noise=None):
        return self.m(x, noise=noise)

    def compress(self, x):
        self.compressed += len(x)
        return self.m.compress(x)

    def decompress(self, strings, shape):
        self.decompressed += len(strings[0])
        return self.m.decompress(strings, shape)


def test_rate_agreement_codes_each_image_once(model):
    x = _images(10, "random")
    counting = _Counting(model)
    df = rate.rate_agreement({("vgg", model.entropy_model, 0.1): counting}, x)
    assert counting.compressed == len(x) and counting.decompressed == len(x)
    assert df["top1_agreement"].iloc[0] == 1.0 and df["max_abs_logit_diff"].iloc[0] < 1e-4
    assert df["real_bytes"].iloc[0] == pytest.approx(float(rate.real_bytes(model, x).mean()))
    assert df["est_bytes"].iloc[0] == pytest.approx(float((rate.estimated_bits(model, x) / 8).mean()))


def test_coded_shared_by_measurements(model):
    x = _images(9, "random")
    counting = _Counting(model)
    c = rate.coded(counting, x, batch_size=4)
    assert counting.compressed == len(x) and len(c) == len(x)
    torch.testing.assert_close(c.stream_bytes, rate.stream_bytes(model, x))
    agreement = rate.decode_agreement(counting, x, batch_size=4)
    assert counting.compressed == 2 * len(x) and counting.decompressed == len(x)  # each image once per call
    assert agreement == rate.decode_agreement(model, x, batch_size=4)


def test_real_bytes_cost_about_the_estimate(model):
    """On 256 images, one thread: real coding at most 2x the estimate's time per image (CompressAI's own
    compress took 6.5x for the hyperprior)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        speed = rate.coding_speed(model, _images(256, "random"), repeats=3, reference=False)
    finally:
        torch.set_num_threads(threads)
    assert speed["real_ms"] <= 2 * speed["estimate_ms"], speed
