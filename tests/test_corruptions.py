"""Natural corruptions: shapes, ranges, determinism, severity order, blur physics, validation."""

import pytest
import torch
import torch.nn.functional as F

from robustnb import corruptions as C
from robustnb.corruptions import CORRUPTION_GROUPS, STOCHASTIC, corrupt, corruption_grid
from robustnb.registry import CORRUPTIONS

NAMES = sorted(CORRUPTIONS)


def _images(shape, seed=0):
    """Smooth random images with some texture (closer to photos than i.i.d. noise)."""
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    low = torch.rand(n, c, 6, 6, generator=g)
    smooth = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)
    return (0.8 * smooth + 0.2 * torch.rand(shape, generator=g)).clamp(0, 1)


X_RGB = _images((4, 3, 32, 32))
X_GRAY = _images((2, 1, 28, 28), seed=1)


def _mean_abs_laplacian(x):
    lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3)
    n, c, h, w = x.shape
    return F.conv2d(x.reshape(n * c, 1, h, w), lap).abs().mean().item()


def test_registry_and_groups():
    expected = {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "defocus_blur",
                "motion_blur", "gaussian_blur", "fog", "snow", "brightness", "contrast", "jpeg",
                "pixelate", "low_resolution", "color_cast"}
    assert expected <= set(CORRUPTIONS)
    assert set(CORRUPTION_GROUPS) == {"noise", "blur", "weather", "digital"}
    grouped = [n for names in CORRUPTION_GROUPS.values() for n in names]
    assert sorted(grouped) == NAMES  # every corruption in exactly one group
    assert STOCHASTIC <= set(CORRUPTIONS)
    for name, fn in CORRUPTIONS.items():
        assert fn.__doc__ and fn.__doc__.strip(), name


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("x", [X_RGB, X_GRAY], ids=["rgb32", "gray28"])
def test_shape_range_determinism(name, x):
    before = x.clone()
    y = corrupt(x, name, severity=5, seed=3)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert y.min() >= 0 and y.max() <= 1 and torch.isfinite(y).all()
    assert torch.equal(x, before), "input modified in place"
    assert y.data_ptr() != x.data_ptr()
    assert not torch.equal(y, x), "severity 5 left the image unchanged"
    assert torch.equal(y, corrupt(x, name, severity=5, seed=3)), "not deterministic for a seed"
    other = corrupt(x, name, severity=5, seed=4)
    if name in STOCHASTIC:
        assert not torch.equal(y, other), "seed has no effect"
    else:
        assert torch.equal(y, other)


def test_global_rng_untouched():
    state = torch.get_rng_state()
    a = torch.rand(3)
    torch.set_rng_state(state)
    for name in STOCHASTIC:
        corrupt(X_RGB, name, 2, seed=0)
    assert torch.equal(torch.rand(3), a)


def test_float64_and_half_keep_dtype():
    for dt in (torch.float64, torch.bfloat16):
        y = corrupt(X_RGB.to(dt), "defocus_blur", 3)
        assert y.dtype == dt and y.shape == X_RGB.shape


@pytest.mark.parametrize("name", ["gaussian_noise", "defocus_blur", "jpeg", "contrast"])
def test_severity_monotone(name):
    change = [(corrupt(X_RGB, name, s, seed=0) - X_RGB).abs().mean().item() for s in range(1, 6)]
    assert all(a < b for a, b in zip(change, change[1:])), change


@pytest.mark.parametrize("name", CORRUPTION_GROUPS["blur"])
def test_blur_removes_high_frequencies(name):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    for sev in (1, 5):
        assert _mean_abs_laplacian(corrupt(x, name, sev)) < 0.8 * _mean_abs_laplacian(x)
    assert _mean_abs_laplacian(corrupt(x, name, 5)) < _mean_abs_laplacian(corrupt(x, name, 1))


def test_larger_images_and_kernel_scaling():
    x = _images((1, 3, 96, 96))
    for name in ("defocus_blur", "motion_blur", "snow", "fog"):
        y = corrupt(x, name, 5)
        assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    # blur kernels scale with image size: blurring a 3x upsampled image, then downsampling,
    # is close to blurring the small image (an unscaled kernel would blur 3x less)
    small = _images((2, 3, 32, 32))
    big = F.interpolate(small, size=(96, 96), mode="bilinear", align_corners=False)
    for name in CORRUPTION_GROUPS["blur"]:
        on_small = corrupt(small, name, 5)
        on_big = F.interpolate(corrupt(big, name, 5), size=(32, 32), mode="area")
        effect = (on_small - small).abs().mean()
        assert (on_big - on_small).abs().mean() < 0.25 * effect, name


def test_brightness_keeps_hue_contrast_keeps_mean():
    y = corrupt(X_RGB, "brightness", 3)
    assert (y.amax(1) >= X_RGB.amax(1) - 1e-6).all()
    # channel order by intensity is kept (hue unchanged), up to ties from clipping at 1
    unclipped = (X_RGB.amax(1, keepdim=True) + 0.15 < 1).expand_as(X_RGB)
    assert torch.equal(X_RGB.argmax(1)[unclipped[:, 0]], y.argmax(1)[unclipped[:, 0]])
    z = corrupt(X_RGB, "contrast", 5)
    assert torch.allclose(z.mean((2, 3)), X_RGB.mean((2, 3)), atol=1e-5)
    assert z.std() < X_RGB.std()


def test_bad_name():
    with pytest.raises(ValueError) as err:
        corrupt(X_RGB, "rain", 3)
    msg = str(err.value)
    assert "rain" in msg and "gaussian_noise" in msg and "jpeg" in msg


@pytest.mark.parametrize("sev", [0, 6, -1, 2.5, True, "3"])
def test_bad_severity(sev):
    with pytest.raises(ValueError) as err:
        corrupt(X_RGB, "gaussian_noise", sev)
    msg = str(err.value)
    assert repr(sev) in msg and "1..5" in msg


def test_bad_input():
    with pytest.raises(ValueError, match="4-D"):
        corrupt(X_RGB[0], "contrast", 1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt(X_RGB * 255, "contrast", 1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt(X_RGB - 0.5, "contrast", 1)
    with pytest.raises(ValueError, match="channels"):
        corrupt(torch.rand(1, 2, 8, 8), "contrast", 1)
    with pytest.raises(TypeError):
        corrupt((X_RGB * 255).to(torch.uint8), "contrast", 1)
    # the functions validate too, not only corrupt()
    with pytest.raises(ValueError):
        C.jpeg(X_RGB, severity=9)


def test_corruption_grid():
    rows = list(corruption_grid(X_GRAY, names=["jpeg", "fog"], severities=(1, 5), seed=2))
    assert [(n, s) for n, s, _ in rows] == [("jpeg", 1), ("jpeg", 5), ("fog", 1), ("fog", 5)]
    assert torch.equal(rows[3][2], corrupt(X_GRAY, "fog", 5, seed=2))
    everything = corruption_grid(X_GRAY[:1], CORRUPTIONS.names(), severities=(3,))
    assert [n for n, _, _ in everything] == list(CORRUPTIONS)
    with pytest.raises(ValueError, match="nope"):  # validated eagerly, before iterating
        corruption_grid(X_GRAY, names=["fog", "nope"])
    with pytest.raises(ValueError, match="7"):
        corruption_grid(X_GRAY, "fog", severities=(1, 7))
