"""Natural corruptions ("unintentional interference") for image batches.

Each corruption mimics something that happens to an image on its way from the scene to the model
without anyone meaning harm: sensor noise, a lens out of focus, a shaking camera, fog, snow, a bad
exposure, lossy compression, a low-resolution sensor, a wrong white balance. The definitions and
the five severity levels follow Hendrycks & Dietterich, *Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations* (ICLR 2019), using the **CIFAR-10-C** constants
(``make_cifar_c.py``) wherever they differ from ImageNet-C. Spatial sizes (blur radii, snow flakes,
motion streaks) are given for 32x32 images and scaled by ``max(1, min(H, W) / 32)``, so a
224x224 image is corrupted the way a 32x32 one is, only at a finer sampling (28x28 Fashion-MNIST
gets the 32x32 kernels as they are). Resolution changes (``pixelate``, ``low_resolution``) are
fractions of the image size anyway; non-spatial constants (noise levels, JPEG quality, contrast)
are CIFAR-10-C's at every size, which makes e.g. JPEG milder on large images than ImageNet-C's.
``snow`` is ImageNet-C's snow itself (not a frost stand-in: frost needs photographs of frost).
``low_resolution`` and ``color_cast`` are not in ImageNet-C; their constants are documented on the
functions.

Every function has the signature ``f(x, severity=3, seed=0) -> Tensor``:

* ``x`` is a float tensor ``(N, C, H, W)`` in ``[0, 1]`` with ``C`` 1 or 3;
* the result is a new tensor of the same shape, dtype and device, clamped to ``[0, 1]``;
* random draws come from a local ``torch.Generator`` / ``numpy.random.default_rng`` seeded with
  ``seed`` (global RNG state is never read or changed), so a call is deterministic for a seed.

Use :func:`corrupt` (by name, validated) or :func:`corruption_grid` (names x severities, for tidy DataFrames;
every registered one: ``registry.CORRUPTIONS.names()``)::

    rows = [{"corruption": n, "severity": s, "acc": accuracy(model, xc, y)}
            for n, s, xc in corruption_grid(x, ("fog", "jpeg"), severities=(1, 3, 5))]
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from robustnb import registry
from robustnb.checks import check_choice, check_images, check_number, one_or_more
from robustnb.config import ConfigError

__all__ = [
    "CORRUPTION_GROUPS", "STOCHASTIC", "SEVERITIES", "corrupt", "corruption_grid",
    "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise",
    "defocus_blur", "motion_blur", "gaussian_blur",
    "fog", "snow", "brightness", "contrast",
    "jpeg", "pixelate", "low_resolution", "color_cast",
]

SEVERITIES = (1, 2, 3, 4, 5)
#: the groups a corruption is registered in (its registry entry's ``group``)
GROUPS = ("noise", "blur", "weather", "digital")


# ------------------------------------------------------------------------------------ validation
def _check_severity(severity) -> int:
    if isinstance(severity, bool) or not isinstance(severity, numbers.Integral) \
            or not 1 <= int(severity) <= 5:
        raise ConfigError(f"severity must be an int in 1..5 (allowed: {list(SEVERITIES)}), "
                          f"got {severity!r}")
    return int(severity)


def _check_severities(severities) -> list[int]:
    """One severity or a sequence of them, as a list of ints in 1..5 (:func:`robustnb.checks.one_or_more`)."""
    return [_check_severity(s) for s in one_or_more(severities, "severities")]


def _check_seed(seed) -> int:
    return check_number(seed, "seed", 0, None, integer=True, hi_open=True)


def _check_input(x) -> None:
    check_images(x, "x")


def _maker(corruption):
    """A corruption's maker: ``(severity=3, seed=0)`` -> the function ``x -> corrupted x`` (the arguments checked
    at once)."""
    def make(severity: int = 3, seed: int = 0):
        severity, seed = _check_severity(severity), _check_seed(seed)
        return functools.partial(corruption, severity=severity, seed=seed)

    return make


def _register(group: str, stochastic: bool):
    """Register a corruption: validate inputs, compute in float32/64, return clamped, same dtype. Its group and
    whether its output depends on ``seed`` live in its registry entry only (:data:`CORRUPTION_GROUPS` and
    :data:`STOCHASTIC` are views of them), so an experiment's key holds the corruptions it names and no list of
    all of them."""
    check_choice(group, "group", GROUPS)

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(x: torch.Tensor, severity: int = 3, seed: int = 0) -> torch.Tensor:
            _check_input(x)
            severity = _check_severity(severity)
            seed = _check_seed(seed)
            if len(x) == 0:
                return x.clone()
            work = x if x.dtype in (torch.float32, torch.float64) else x.float()
            out = fn(work, severity, seed)
            return out.clamp(0.0, 1.0).to(dtype=x.dtype, device=x.device)

        registry.CORRUPTIONS.add(fn.__name__, wrapper, maker=_maker(wrapper), group=group, stochastic=stochastic)
        return wrapper

    return deco


# ------------------------------------------------------------------------------------- helpers
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(x: torch.Tensor, g: torch.Generator, shape=None) -> torch.Tensor:
    shape = x.shape if shape is None else shape
    return torch.randn(shape, generator=g, dtype=x.dtype).to(x.device)


def _rand(x: torch.Tensor, g: torch.Generator, shape=None) -> torch.Tensor:
    shape = x.shape if shape is None else shape
    return torch.rand(shape, generator=g, dtype=x.dtype).to(x.device)


def _scale(x: torch.Tensor) -> float:
    """Pixels per CIFAR pixel (spatial constants are for 32x32 images; never below 1)."""
    return max(1.0, min(x.shape[-2:]) / 32.0)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma (what ``cv2.COLOR_RGB2GRAY`` computes), shape (N, 1, H, W)."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve each channel with a (K, K) kernel, or image i with kernel[i] for (N, K, K).

    FFT-based, so large kernels (motion streaks at 224 px) and per-image kernels cost the same as
    small shared ones. Borders are mirrored (``reflect``, like OpenCV's default).
    """
    k = kernel.to(dtype=x.dtype, device=x.device)
    if k.dim() == 2:
        k = k[None]
    K = k.shape[-1]
    r = K // 2
    H, W = x.shape[-2:]
    if r >= min(H, W):  # a kernel larger than the image: crop it (mass outside is renormalised)
        r = min(H, W) - 1
        c = K // 2
        k = k[:, c - r:c + r + 1, c - r:c + r + 1]
        k = k / k.sum(dim=(-2, -1), keepdim=True)
        K = 2 * r + 1
    if r == 0:
        return x * k.view(-1, 1, 1, 1)
    xp = F.pad(x, (r, r, r, r), mode="reflect")
    s = xp.shape[-2:]
    Xf = torch.fft.rfft2(xp, s=s)
    Kf = torch.fft.rfft2(k[:, None], s=s)  # (1 or N, 1, ...) broadcasts over channels
    y = torch.fft.irfft2(Xf * Kf, s=s)
    return y[..., 2 * r:2 * r + H, 2 * r:2 * r + W]


def _gaussian_kernel(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    r = max(int(truncate * sigma + 0.5), 1)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = torch.outer(g, g)
    return k / k.sum()


def _motion_kernel(n: int, radius: float, sigma: float, angles_deg: torch.Tensor) -> torch.Tensor:
    """ImageMagick ``MotionBlurImage`` kernels, one per angle: ``(n, K, K)``.

    A one-sided streak of ``2*ceil(radius)+1`` taps (cut at 4 sigma) along the angle, weighted
    ``exp(-i^2 / 2 sigma^2)``; taps off the pixel grid are splatted bilinearly.
    """
    taps = min(2 * math.ceil(radius) + 1, math.ceil(4 * sigma) + 1)
    i = torch.arange(taps, dtype=torch.float64)
    w = torch.exp(-i ** 2 / (2 * sigma ** 2))
    w = w / w.sum()
    R = taps  # grid half-size (one more than needed, so the bilinear +1 neighbour fits)
    K = 2 * R + 1
    th = torch.deg2rad(angles_deg.to(torch.float64))[:, None]
    px, py = R + i * torch.cos(th), R + i * torch.sin(th)  # (n, taps), column / row
    x0, y0 = px.floor(), py.floor()
    fx, fy = px - x0, py - y0
    kern = torch.zeros(n, K * K, dtype=torch.float64)
    for dx, dy, ww in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                       (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        idx = ((y0 + dy) * K + (x0 + dx)).long()
        kern.scatter_add_(1, idx, w * ww)
    return kern.view(n, K, K)


def _clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """Zoom into the centre by ``zoom`` (>= 1) and crop back to the input size (bilinear)."""
    H, W = x.shape[-2:]
    ch, cw = max(1, math.ceil(H / zoom)), max(1, math.ceil(W / zoom))
    top, left = (H - ch) // 2, (W - cw) // 2
    crop = x[..., top:top + ch, left:left + cw]
    return F.interpolate(crop, size=(H, W), mode="bilinear", align_corners=False)


def _plasma_fractal(n: int, mapsize: int, wibbledecay: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Diamond-square plasma fractals in [0, 1], ``(n, mapsize, mapsize)`` (ImageNet-C's code,
    batched over a leading axis)."""
    assert mapsize & (mapsize - 1) == 0, "mapsize must be a power of 2"
    m = np.zeros((n, mapsize, mapsize))
    stepsize, wibble = mapsize, 100.0

    def wibbledmean(a):
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)

    while stepsize >= 2:
        h = stepsize // 2
        # squares
        corner = m[:, 0::stepsize, 0::stepsize]
        sq = corner + np.roll(corner, -1, axis=1)
        sq = sq + np.roll(sq, -1, axis=2)
        m[:, h::stepsize, h::stepsize] = wibbledmean(sq)
        # diamonds
        dr = m[:, h::stepsize, h::stepsize]
        ul = m[:, 0::stepsize, 0::stepsize]
        lt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=2)
        m[:, 0::stepsize, h::stepsize] = wibbledmean(lt)
        tt = dr + np.roll(dr, 1, axis=2) + ul + np.roll(ul, -1, axis=1)
        m[:, h::stepsize, 0::stepsize] = wibbledmean(tt)
        stepsize //= 2
        wibble /= wibbledecay
    m -= m.min(axis=(1, 2), keepdims=True)
    return m / m.max(axis=(1, 2), keepdims=True)


# ---------------------------------------------------------------------------------------- noise
@_register("noise", stochastic=True)
def gaussian_noise(x, severity=3, seed=0):
    """Additive Gaussian sensor noise (read/thermal noise in low light)."""
    c = [0.04, 0.06, 0.08, 0.09, 0.10][severity - 1]
    return x + c * _randn(x, _gen(seed))


@_register("noise", stochastic=True)
def shot_noise(x, severity=3, seed=0):
    """Poisson photon (shot) noise: few photons per pixel, as in dim light."""
    c = [500, 250, 100, 75, 50][severity - 1]
    lam = (x * c).double().cpu()
    return (torch.poisson(lam, generator=_gen(seed)) / c).to(x.dtype).to(x.device)


@_register("noise", stochastic=True)
def impulse_noise(x, severity=3, seed=0):
    """Salt-and-pepper impulse noise: dead / stuck pixels and bit errors in transmission."""
    amount = [0.01, 0.02, 0.03, 0.05, 0.07][severity - 1]
    u = _rand(x, _gen(seed))
    out = x.clone()
    out[u < amount / 2] = 1.0
    out[(u >= amount / 2) & (u < amount)] = 0.0
    return out


@_register("noise", stochastic=True)
def speckle_noise(x, severity=3, seed=0):
    """Multiplicative speckle noise, its strength proportional to intensity (coherent imaging)."""
    c = [0.06, 0.10, 0.12, 0.16, 0.20][severity - 1]
    return x + x * c * _randn(x, _gen(seed))


# ----------------------------------------------------------------------------------------- blur
def _disk_radius(radius: float) -> float:
    """Radius of the continuous disk with the same second moment as ImageNet-C's aliased disk.

    ImageNet-C's disk is ``X^2 + Y^2 <= r^2`` on the integer grid: at 32 px a radius below 1 is a
    single pixel, radius 1 a 5-pixel cross, 1.5 a 3x3 square. Scaling ``r`` itself by the image
    size would lose that aliasing (and the severity order), so the *effective* disk is scaled:
    ``2 * sqrt(per-axis variance)``, which gives back the very same integer disk at 32 px.
    """
    t = torch.arange(-math.floor(radius), math.floor(radius) + 1, dtype=torch.float64)
    inside = (t[:, None] ** 2 + t[None, :] ** 2) <= radius ** 2
    var = (t[:, None] ** 2 * inside).sum() / inside.sum()
    return 2.0 * math.sqrt(float(var))


@_register("blur", stochastic=False)
def defocus_blur(x, severity=3, seed=0):
    """Out-of-focus lens: convolution with an (anti-aliased) disk, the circle of confusion."""
    radius, alias = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)][severity - 1]
    s = _scale(x)
    radius, alias = _disk_radius(radius) * s, alias * s
    ga = _gaussian_kernel(alias)
    r = math.ceil(radius) + ga.shape[-1] // 2
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius ** 2 + 1e-9).double()
    kernel = F.conv2d(disk[None, None], ga[None, None], padding=ga.shape[-1] // 2)[0, 0]
    return _filter2d(x, kernel / kernel.sum())


@_register("blur", stochastic=True)
def motion_blur(x, severity=3, seed=0):
    """Camera shake / moving camera: a one-sided streak kernel at a random angle per image."""
    radius, sigma = [(10, 1.0), (10, 1.5), (10, 2.0), (10, 2.5), (12, 3.0)][severity - 1]
    s = _scale(x)
    angles = torch.empty(x.shape[0], dtype=torch.float64).uniform_(-45, 45, generator=_gen(seed))
    return _filter2d(x, _motion_kernel(x.shape[0], radius * s, sigma * s, angles))


@_register("blur", stochastic=False)
def gaussian_blur(x, severity=3, seed=0):
    """Gaussian blur: a soft lens, atmospheric turbulence or a smeared sensor."""
    sigma = [0.4, 0.6, 0.7, 0.8, 1.0][severity - 1] * _scale(x)
    return _filter2d(x, _gaussian_kernel(sigma))


# -------------------------------------------------------------------------------------- weather
@_register("weather", stochastic=True)
def fog(x, severity=3, seed=0):
    """Fog / haze: a smooth plasma-fractal veil added, contrast reduced."""
    c, decay = [(0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)][severity - 1]
    N, _, H, W = x.shape
    mapsize = 1 << (max(H, W) - 1).bit_length()  # next power of two >= max(H, W)
    plasma = _plasma_fractal(N, mapsize, decay, np.random.default_rng(seed))[:, None, :H, :W]
    veil = torch.from_numpy(plasma).to(dtype=x.dtype, device=x.device)
    mx = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + c * veil) * mx / (mx + c)


@_register("weather", stochastic=True)
def snow(x, severity=3, seed=0):
    """Falling snow: bright flakes motion-streaked by wind, over a whitened, brightened scene.

    ImageNet-C's snow: a thresholded, zoomed Gaussian field (flakes), motion-blurred at a random
    angle in [-135, -45] degrees, added once as is and once rotated by 180 degrees; the scene is
    first blended towards ``max(x, 1.5 * gray + 0.5)``. For grayscale inputs gray is x itself.
    """
    loc, scale, zoom, thr, mrad, msig, blend = [
        (0.10, 0.2, 1.00, 0.60, 8, 3, 0.95), (0.10, 0.2, 1.00, 0.50, 10, 4, 0.90),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.90), (0.25, 0.3, 2.25, 0.60, 12, 6, 0.85),
        (0.30, 0.3, 1.25, 0.65, 14, 12, 0.80)][severity - 1]
    N, _, H, W = x.shape
    s = _scale(x)
    g = _gen(seed)
    layer = loc + scale * _randn(x, g, (N, 1, H, W))
    layer = _clipped_zoom(layer, zoom * s)
    layer = torch.where(layer < thr, torch.zeros_like(layer), layer).clamp(0, 1)
    angles = torch.empty(N, dtype=torch.float64).uniform_(-135, -45, generator=g)
    layer = _filter2d(layer, _motion_kernel(N, mrad * s, msig * s, angles)).clamp(0, 1)
    x = blend * x + (1 - blend) * torch.maximum(x, _gray(x) * 1.5 + 0.5)
    return x + layer + torch.rot90(layer, 2, dims=(-2, -1))


@_register("weather", stochastic=False)
def brightness(x, severity=3, seed=0):
    """Over-exposure / strong daylight: the HSV value channel shifted up (hue, saturation kept)."""
    c = [0.05, 0.10, 0.15, 0.20, 0.30][severity - 1]
    v = x.amax(dim=1, keepdim=True)  # HSV value; rgb = v * f(h, s), so scaling v keeps h and s
    v_new = (v + c).clamp(0, 1)
    return torch.where(v > 0, x * (v_new / v.clamp_min(1e-12)), v_new.expand_as(x))


@_register("weather", stochastic=False)
def contrast(x, severity=3, seed=0):
    """Low contrast (haze, dull light, a washed-out display): pixels pulled to the channel mean."""
    c = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1]
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * c + mean


# -------------------------------------------------------------------------------------- digital
@_register("digital", stochastic=False)
def jpeg(x, severity=3, seed=0):
    """Lossy JPEG compression artifacts (blocking, ringing, colour bleeding), quality 80..40."""
    quality = [80, 65, 58, 50, 40][severity - 1]
    u8 = (x.detach().cpu() * 255).round().to(torch.uint8)
    blobs = encode_jpeg(list(u8), quality=quality)
    imgs = decode_jpeg(blobs, mode=ImageReadMode.UNCHANGED)
    return (torch.stack(imgs).to(x.dtype) / 255).to(x.device)


@_register("digital", stochastic=False)
def pixelate(x, severity=3, seed=0):
    """Pixelation: box-downsampling then nearest upsampling (blocky digital zoom / low bitrate)."""
    c = [0.95, 0.90, 0.85, 0.75, 0.65][severity - 1]
    H, W = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, int(H * c)), max(1, int(W * c))), mode="area")
    return F.interpolate(small, size=(H, W), mode="nearest")


@_register("digital", stochastic=False)
def low_resolution(x, severity=3, seed=0):
    """Low-resolution sensor or far-away object: antialiased downsampling by 1.5x..4x, then
    bilinear upsampling to the input size (not in ImageNet-C; factors 1.5, 2, 2.5, 3, 4)."""
    f = [1.5, 2.0, 2.5, 3.0, 4.0][severity - 1]
    H, W = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, round(H / f)), max(1, round(W / f))),
                          mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)


@_register("digital", stochastic=True)
def color_cast(x, severity=3, seed=0):
    """Camera white-balance error: per-channel gains (warm/cool cast plus green/magenta tint).

    Not in ImageNet-C. Gains are ``exp(c * t)`` for red and ``exp(-c * t)`` for blue, with
    ``|t|`` uniform in [0.5, 1] and a random sign (warm or cool cast, per image), and
    ``exp(c * u / 2)`` for green, ``u`` uniform in [-1, 1] (tint); ``c = 0.05, 0.1, 0.15, 0.2,
    0.3``, so severities never overlap. Grayscale images get the exposure gain ``exp(c * t)``.
    """
    c = [0.05, 0.10, 0.15, 0.20, 0.30][severity - 1]
    N = x.shape[0]
    g = _gen(seed)
    sign = torch.randint(0, 2, (N,), generator=g).double() * 2 - 1
    t = sign * (0.5 + 0.5 * torch.rand(N, generator=g, dtype=torch.float64))
    u = torch.rand(N, generator=g, dtype=torch.float64) * 2 - 1
    if x.shape[1] == 3:
        logg = torch.stack([c * t, c * u / 2, -c * t], dim=1)
    else:
        logg = (c * t)[:, None]
    gains = torch.exp(logg).to(dtype=x.dtype, device=x.device)[:, :, None, None]
    return x * gains


# ------------------------------------------------------------------------------------ front door
def _check_name(name) -> str:
    return registry.CORRUPTIONS.check(name)


def corrupt(x: torch.Tensor, name: str, severity: int = 3, seed: int = 0) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` (1..5) to a batch ``x`` (N, C, H, W) in [0, 1]."""
    return registry.CORRUPTIONS.make(name, severity, seed)(x)


def corruption_grid(x: torch.Tensor, names: Iterable[str] | str,
                    severities: Iterable[int] | int = (1, 3, 5),
                    seed: int = 0) -> Iterator[tuple[str, int, torch.Tensor]]:
    """Yield ``(name, severity, corrupted x)`` for every name x severity.

    ``names`` and ``severities`` are one value or a sequence (every corruption: ``registry.CORRUPTIONS.names()``;
    named, so that an experiment's key holds the corruptions it uses, not every registered one). Names,
    severities, ``seed`` and ``x`` are validated before the first item is produced.
    """
    names = [_check_name(n) for n in one_or_more(names, "names")]
    severities = _check_severities(severities)
    seed = _check_seed(seed)
    _check_input(x)

    def gen():
        for n in names:
            for s in severities:
                yield n, s, registry.CORRUPTIONS.get(n)(x, s, seed)

    return gen()


#: the registered corruptions by group, and the names whose output depends on ``seed`` (the others are
#: deterministic functions of the image): views of the registry entries, as registered above
CORRUPTION_GROUPS: dict[str, list[str]] = {g: list(registry.CORRUPTIONS.names(group=g)) for g in GROUPS}
STOCHASTIC: frozenset[str] = frozenset(n for n in registry.CORRUPTIONS.names()
                                       if registry.CORRUPTIONS.meta(n)["stochastic"])
