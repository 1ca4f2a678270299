"""Compression: structured pruning, the KD loss, int8 quantization (tiny models, no dataset)."""

import pytest
import torch
import torch.nn.functional as F

from robustnb import compression as C
from robustnb.config import ConfigError
from robustnb.models import build_classifier, count_parameters


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return build_classifier("cnn", width=32).eval()


def test_pruned_model_is_smaller_with_the_same_output_shape(cnn):
    x = torch.rand(4, 3, 32, 32)
    pruned = C.prune_l1(cnn, 0.5, x[:2])
    assert count_parameters(pruned) < 0.4 * count_parameters(cnn)
    assert pruned(x).shape == cnn(x).shape == (4, 10)
    convs = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].out_channels == 16  # half the filters of the first layer are gone
    assert count_parameters(cnn) == count_parameters(build_classifier("cnn", width=32))  # original untouched


def test_pruning_keeps_the_filters_with_the_largest_l1_norm(cnn):
    x = torch.rand(2, 3, 32, 32)
    conv = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)][0]
    norms = conv.weight.detach().abs().flatten(1).sum(1)
    kept = [m for m in C.prune_l1(cnn, 0.5, x).modules() if isinstance(m, torch.nn.Conv2d)][0].weight
    # every kept filter is one of the original filters with the 8 largest L1 norms
    top = conv.weight[norms.argsort(descending=True)[:16]]
    for w in kept:
        assert any(torch.allclose(w, t) for t in top)


def test_pruning_ratio_is_checked(cnn):
    with pytest.raises(ConfigError, match="pruning ratio"):
        C.prune_l1(cnn, 1.2, torch.rand(2, 3, 32, 32))


def test_ratio_for_parameters_hits_the_target():
    x = torch.rand(2, 3, 32, 32)
    target = count_parameters(build_classifier("cnn", width=16)) // 3
    r = C.ratio_for_parameters(lambda: build_classifier("cnn", width=16), target, x)
    n = count_parameters(C.prune_l1(build_classifier("cnn", width=16), r, x))
    assert abs(n - target) < 0.1 * target


def test_kd_terms_give_the_hinton_loss():
    torch.manual_seed(1)
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    T, alpha = 3.0, 0.7
    teacher = lambda x: t  # noqa: E731
    terms = C.kd_terms(torch.nn.Identity(), T, alpha)
    terms["kd"] = (terms["kd"][0], lambda m, x, y_, out: C.kd_loss(out, teacher(x), T))
    total = F.cross_entropy(s, y) + sum(w * fn(None, None, y, s) for w, fn in terms.values())
    kl = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean")
    assert torch.allclose(total, (1 - alpha) * F.cross_entropy(s, y) + alpha * T * T * kl, atol=1e-5)
    assert C.kd_loss(t, t, T).abs() < 1e-6
    with pytest.raises(ConfigError):
        C.kd_terms(torch.nn.Identity(), 4.0, 1.5)


def test_int8_model_shape_size_and_kernels(cnn):
    x = torch.rand(32, 3, 32, 32)
    q = C.quantize_int8(cnn, x)
    out = q(x[:4])
    assert out.shape == (4, 10) and out.dtype == torch.float32
    assert C.state_dict_bytes(cnn) / C.state_dict_bytes(q) >= 3.5
    ops = C.int8_kernels(q, x[:2])
    assert {"quantized::conv2d_relu", "quantized::linear"} <= set(ops[ops.int8].op)
    assert not any(op == "aten::conv2d" for op in ops.op)  # no fp32 convolution ran
    # int8 logits stay close to fp32 logits (calibrated on the same images)
    with torch.no_grad():
        ref = cnn(x[:4])
    assert (out - ref).abs().max() < 0.25 * ref.abs().max() + 0.1
    with pytest.raises(RuntimeError):  # not differentiable: the reason attacks are transferred
        xg = x[:2].clone().requires_grad_(True)
        q(xg).sum().backward()


def test_int8_activations_use_all_8_bits(cnn):
    """The input quantizer spreads the calibrated range over 256 levels, not 128: torch's ``x86`` mapping
    (``reduce_range=True``) would double the step and cost the deeper ResNets many points of accuracy."""
    x = torch.rand(64, 3, 32, 32)
    q = C.quantize_int8(cnn, x)
    z = cnn[0](x)
    width = float(z.max() - z.min())
    scale = float(q[1].features_0_0_input_scale_0)
    assert 0.8 * width / 255 < scale < 1.2 * width / 255  # 7-bit activations would give width / 127
    assert float(C.quantize_int8(cnn, x, backend="x86")[1].features_0_0_input_scale_0) > 1.8 * width / 255


def test_int8_model_is_named_after_its_parent_and_calibration(cnn):
    """Results computed from an int8 model are cached under a key naming its fp32 parent and calibration."""
    x = torch.rand(16, 3, 32, 32)
    assert not hasattr(C.quantize_int8(cnn, x), "robustnb_info")  # a model the cache did not make: no name
    cnn.robustnb_info = {"key": "parent"}
    k1 = C.quantize_int8(cnn, x).robustnb_info["key"]
    assert C.quantize_int8(cnn, x).robustnb_info["key"] == k1
    assert C.quantize_int8(cnn, x * 0.9).robustnb_info["key"] != k1
    cnn.robustnb_info = {"key": "another parent"}
    assert C.quantize_int8(cnn, x).robustnb_info["key"] != k1


def test_int8_own_gradient_is_zero_and_bpda_takes_the_fp32_gradient(cnn):
    """The two white-box paths into an int8 model: its own gradient (exactly zero: the masked attack; FGSM
    returns the clean image) and BPDA (int8 value forward, the fp32 parent's gradient backward)."""
    from robustnb.attacks import make_attack

    x = torch.rand(16, 3, 32, 32)
    q = C.quantize_int8(cnn, x)
    y = cnn(x[:4]).argmax(1)
    own, bpda = C.int8_own_gradient(q), C.int8_bpda(q, cnn)
    with torch.no_grad():
        ref = q(x[:4])
    for wrapped in (own, bpda):
        assert torch.equal(wrapped(x[:4]).detach(), ref)  # both attack the int8 decision itself
    xg = x[:4].clone().requires_grad_(True)
    F.cross_entropy(own(xg), y).backward()
    assert torch.count_nonzero(xg.grad) == 0
    xb, xf = x[:4].clone().requires_grad_(True), x[:4].clone().requires_grad_(True)
    F.cross_entropy(bpda(xb), y).backward()
    # the fp32 gradient of the loss taken at the int8 logits: softmax(int8) - onehot, through the fp32 Jacobian
    p = torch.softmax(ref, 1) - F.one_hot(y, 10).float()
    (cnn(xf) * p / 4).sum().backward()
    assert torch.allclose(xb.grad, xf.grad, atol=1e-6) and xb.grad.abs().sum() > 0
    assert torch.equal(make_attack("fgsm", own, 4 / 255)(x[:4], y), x[:4])  # masked: sign(0) = 0
    assert not torch.equal(make_attack("fgsm", bpda, 4 / 255)(x[:4], y), x[:4])
