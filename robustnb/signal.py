"""Signal processing on image batches ``(N, C, H, W)`` in ``[0, 1]``: FFT filters, spectra, and the TV solver.

Frequencies are radial, in cycles per pixel (0.5 is the Nyquist frequency along an axis, :data:`F_MAX` =
sqrt(0.5) the corner of the spectrum).

* :func:`radial_frequency`, :func:`frequency_mask`, :func:`lowpass`, :func:`highpass`, :func:`split`
  (``low + high == x`` exactly), :func:`filtered` (displayable), :func:`band_filter`;
* :func:`radial_spectrum`, :func:`high_frequency_share` (one cutoff) and :func:`high_frequency_shares` (several,
  for a sensitivity table), :func:`plane_share_above` (the share a white spectrum has above a cutoff: the null),
  :func:`local_energy` (high-frequency energy pooled to a grid, to compare with a bit map),
  :func:`total_variation`, :func:`center_mask` and :func:`ring_mask` (the outer ring of a latent grid, whose
  receptive fields reach into the encoder's zero padding);
* :func:`tv_denoise`: total-variation denoising by Chambolle's dual projection, written in torch so that it can
  be unrolled and differentiated (checked against scikit-image's :func:`tv_skimage` in the tests).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from skimage.restoration import denoise_tv_bregman, denoise_tv_chambolle

from robustnb.config import ConfigError

F_MAX = math.sqrt(0.5)  #: the largest radial frequency of a sampled image (cycles per pixel)
FILTER_KINDS = ("ideal", "gaussian")



# ------------------------------------------------------------------------------------------ basics
def _check_images(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"expected an image batch (N, C, H, W), got {getattr(x, 'shape', type(x).__name__)}")
    return x


def check_cutoff(cutoff) -> float:
    try:
        c = float(cutoff)
    except (TypeError, ValueError):
        raise ConfigError(f"cutoff must be a number in [0, {F_MAX:.4f}] cycles/pixel, got {cutoff!r}") from None
    if not (0.0 <= c <= F_MAX + 1e-9):
        raise ConfigError(f"cutoff={c:g} is out of range: allowed is [0, {F_MAX:.4f}] cycles/pixel "
                          f"(0.5 = Nyquist along an axis, {F_MAX:.4f} = the corner of the spectrum).")
    return c


def radial_frequency(h: int, w: int, device=None) -> torch.Tensor:
    """``(h, w)`` grid of radial frequencies sqrt(fx^2 + fy^2) in cycles per pixel, in ``torch.fft`` order."""
    fy = torch.fft.fftfreq(h, device=device)
    fx = torch.fft.fftfreq(w, device=device)
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def frequency_mask(h: int, w: int, cutoff: float, kind: str = "ideal", device=None) -> torch.Tensor:
    """Low-pass transfer function on the FFT grid: ``1`` inside ``cutoff`` for ``ideal``, a Gaussian
    ``exp(-r^2 / (2 sigma^2))`` with ``sigma = cutoff`` for ``gaussian`` (the -4.3 dB point at the cutoff)."""
    c = check_cutoff(cutoff)
    if kind not in FILTER_KINDS:
        raise ConfigError(f"Unknown filter kind {kind!r}: choose one of {FILTER_KINDS}.")
    r = radial_frequency(h, w, device)
    if kind == "ideal":
        return (r <= c + 1e-9).float()
    if c == 0:
        return (r == 0).float()
    return torch.exp(-(r ** 2) / (2 * c ** 2))


def lowpass(x: torch.Tensor, cutoff: float, kind: str = "ideal") -> torch.Tensor:
    """Keep the frequencies below ``cutoff`` (cycles/pixel). ``cutoff >= F_MAX`` (ideal) is the identity,
    ``cutoff = 0`` leaves the per-channel mean. Not clamped: see :func:`filtered` for a displayable image."""
    _check_images(x)
    m = frequency_mask(x.shape[-2], x.shape[-1], cutoff, kind, x.device)
    if kind == "ideal" and bool(m.all()):
        return x.clone()
    return torch.fft.ifft2(torch.fft.fft2(x) * m).real.to(x.dtype)


def highpass(x: torch.Tensor, cutoff: float, kind: str = "ideal") -> torch.Tensor:
    """The residual ``x - lowpass(x, cutoff)`` (zero mean, not an image by itself)."""
    return x - lowpass(x, cutoff, kind)


def split(x: torch.Tensor, cutoff: float, kind: str = "gaussian") -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)`` with ``low + high == x`` exactly (the high part is defined as the residual)."""
    low = lowpass(x, cutoff, kind)
    return low, x - low


def filtered(x: torch.Tensor, cutoff: float, band: str = "low", kind: str = "ideal") -> torch.Tensor:
    """A displayable filtered image in [0, 1]: ``band="low"`` is the low-pass image, ``band="high"`` the
    high-frequency residual on top of the image's per-channel mean (so a flat image stays flat)."""
    if band == "low":
        out = lowpass(x, cutoff, kind)
    elif band == "high":
        out = highpass(x, cutoff, kind) + x.mean(dim=(-2, -1), keepdim=True)
    else:
        raise ConfigError(f"Unknown band {band!r}: choose 'low' or 'high'.")
    return out.clamp(0, 1)


def band_filter(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Only the frequencies in the ring ``lo < r <= hi`` (ideal masks); zero mean unless ``lo == 0``."""
    return lowpass(x, hi) - lowpass(x, lo) if lo > 0 else lowpass(x, hi)


def radial_spectrum(x: torch.Tensor, n_bins: int | None = None, remove_mean: bool = True):
    """Radially averaged power spectrum: ``(freqs, power)`` with ``power`` of shape ``(N, n_bins)``.

    Power is ``|FFT|^2 / (H W)`` averaged over channels and over the ring of each bin (bins of equal width
    from 0 to :data:`F_MAX`; default ``min(H, W) // 2`` bins). ``remove_mean`` drops the DC term first, so the
    first bin is not dominated by the image's brightness.
    """
    _check_images(x)
    h, w = x.shape[-2:]
    n_bins = n_bins or max(2, min(h, w) // 2)
    if remove_mean:
        x = x - x.mean(dim=(-2, -1), keepdim=True)
    p = (torch.fft.fft2(x.double()).abs() ** 2 / (h * w)).mean(1)  # (N, H, W)
    r = radial_frequency(h, w, x.device).double()
    edges = torch.linspace(0, F_MAX + 1e-9, n_bins + 1, dtype=torch.float64)
    idx = torch.bucketize(r.flatten(), edges[1:-1], right=True)
    counts = torch.bincount(idx, minlength=n_bins).clamp(min=1)
    flat = p.reshape(p.shape[0], -1)
    sums = torch.zeros(p.shape[0], n_bins, dtype=torch.float64).index_add_(1, idx, flat)
    centers = 0.5 * (edges[1:] + edges[:-1])
    return centers.float(), (sums / counts).float()


def high_frequency_share(x: torch.Tensor, cutoff: float = 0.25, remove_mean: bool = True) -> torch.Tensor:
    """Per image, the fraction of the (mean-removed) power above ``cutoff`` cycles/pixel: ``(N,)``."""
    check_cutoff(cutoff)
    if remove_mean:
        x = x - x.mean(dim=(-2, -1), keepdim=True)
    p = (torch.fft.fft2(x.double()).abs() ** 2).sum(1)
    r = radial_frequency(*x.shape[-2:], device=x.device)
    hi = (p * (r > cutoff)).flatten(1).sum(1)
    return (hi / p.flatten(1).sum(1).clamp_min(1e-20)).float()


def high_frequency_shares(x: torch.Tensor, cutoffs, remove_mean: bool = True) -> torch.Tensor:
    """:func:`high_frequency_share` at each of ``cutoffs`` (cycles/pixel, each checked by :func:`check_cutoff`):
    ``(N, len(cutoffs))``, column ``k`` the fraction of each image's power above ``cutoffs[k]``."""
    _check_images(x)
    cs = [check_cutoff(c) for c in cutoffs]
    if not cs:
        raise ConfigError("cutoffs must name at least one cutoff in cycles/pixel, e.g. (0.15, 0.25, 0.35).")
    if remove_mean:
        x = x - x.mean(dim=(-2, -1), keepdim=True)
    p = (torch.fft.fft2(x.double()).abs() ** 2).sum(1).flatten(1)  # (N, H*W)
    r = radial_frequency(*x.shape[-2:], device=x.device).flatten()
    total = p.sum(1).clamp_min(1e-20)
    return torch.stack([(p * (r > c)).sum(1) / total for c in cs], 1).float()


def plane_share_above(h: int, w: int, cutoff: float) -> float:
    """The share of an ``h`` x ``w`` image's frequency plane (its FFT grid) above radial ``cutoff`` cycles/pixel,
    the DC term left out: the expected :func:`high_frequency_share` of white noise (a random-sign perturbation),
    what any broadband perturbation has above the cutoff without favouring high frequencies. About 0.80 above
    0.25 for 32 x 32 (the disc of radius 0.25 covers pi/16 of the plane)."""
    c = check_cutoff(cutoff)
    r = radial_frequency(h, w).flatten()[1:]  # without the DC term (removed with the mean)
    return float((r > c).float().mean())


def local_energy(x: torch.Tensor, size: tuple[int, int], cutoff: float = 0.25) -> torch.Tensor:
    """Energy of the high-frequency residual (above ``cutoff``) averaged over the cells of a ``size`` grid:
    ``(N, h, w)``, comparable location by location with the entropy model's bit map."""
    e = highpass(x, cutoff).pow(2).sum(1, keepdim=True)
    return F.adaptive_avg_pool2d(e, size)[:, 0]


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Isotropic total variation per image (forward differences, sum over channels and pixels): ``(N,)``."""
    gx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1))
    gy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    return torch.sqrt(gx ** 2 + gy ** 2).flatten(1).sum(1)


def center_mask(h: int, w: int, fraction: float = 0.5) -> torch.Tensor:
    """A ``(h, w)`` boolean box covering the central ``fraction`` of each side: the "object" proxy for
    CIFAR-10, whose objects are roughly centred (no segmentation masks ship with it)."""
    m = torch.zeros(h, w, dtype=torch.bool)
    bh, bw = max(1, round(h * fraction)), max(1, round(w * fraction))
    t, l = (h - bh) // 2, (w - bw) // 2
    m[t:t + bh, l:l + bw] = True
    return m


def ring_mask(h: int, w: int, width: int = 1) -> torch.Tensor:
    """A ``(h, w)`` boolean mask of the outer ``width`` rows and columns of a grid: on a latent grid, the locations
    whose receptive fields reach furthest into the encoder's zero padding, so their bits measure the padding as
    much as the image. ``width = 0`` is an empty mask."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 0 or 2 * width > min(h, w):
        raise ConfigError(f"ring width must be an integer in 0..{min(h, w) // 2} for a {h} x {w} grid, got {width!r}.")
    m = torch.zeros(h, w, dtype=torch.bool)
    if width:
        m[:width], m[-width:], m[:, :width], m[:, -width:] = True, True, True, True
    return m


# ------------------------------------------------------------------------------------ TV denoising
def _grad(u):
    gx = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1))
    gy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    return gx, gy


def _div(px, py):
    """The negative adjoint of :func:`_grad` (Neumann boundary): ``<grad u, p> = -<u, div p>``."""
    dx = px - F.pad(px[..., :, :-1], (1, 0))
    dy = py - F.pad(py[..., :-1, :], (0, 0, 1, 0))
    return dx + dy


def tv_denoise(f: torch.Tensor, weight, n_iter: int = 50, tau: float = 0.25) -> torch.Tensor:
    """Total-variation denoising, Chambolle's dual projection in torch (differentiable when unrolled).

    Solves ``min_u 1/2 ||u - f||^2 + sum_i w_i |(grad u)_i|`` per channel (isotropic TV, Neumann boundary),
    where ``weight`` is a number or a tensor broadcastable to ``f`` (a per-pixel ``lambda_TV`` map). The dual
    ``q`` with ``|q_i| <= w_i`` is updated by projected gradient steps ``q <- P(q + tau grad(f + div q))``
    (``tau <= 1/4`` converges) and ``u = f + div q``. ``weight = 0`` returns ``f`` exactly.
    """
    if not isinstance(weight, torch.Tensor):
        weight = float(weight)
        if weight < 0 or not math.isfinite(weight):
            raise ConfigError(f"TV weight must be a finite number >= 0, got {weight!r}")
        if weight == 0:
            return f.clone()
        w = torch.full_like(f[:, :1], weight)
    else:
        if bool((weight < 0).any()):
            raise ConfigError("TV weight map must be >= 0 everywhere")
        w = weight.to(f)
    if not 0 < tau <= 0.25:
        raise ConfigError(f"tau must be in (0, 0.25] for convergence, got {tau}")
    qx = torch.zeros_like(f)
    qy = torch.zeros_like(f)
    for _ in range(int(n_iter)):
        gx, gy = _grad(f + _div(qx, qy))
        qx, qy = qx + tau * gx, qy + tau * gy
        norm = torch.sqrt(qx ** 2 + qy ** 2 + 1e-20)  # smooth at 0: finite gradients when unrolled
        scale = torch.clamp(w / norm, max=1.0)
        qx, qy = qx * scale, qy * scale
    return f + _div(qx, qy)


def tv_skimage(x: torch.Tensor, weight: float, method: str = "chambolle") -> torch.Tensor:
    """scikit-image's ``denoise_tv_chambolle`` / ``denoise_tv_bregman`` per image (reference implementation;
    ``weight`` is scikit-image's: for Bregman it is the fidelity weight, larger = *less* smoothing)."""
    if method not in ("chambolle", "bregman"):
        raise ConfigError(f"Unknown TV method {method!r}: choose 'chambolle' or 'bregman'.")
    out = []
    for img in x.detach().cpu().permute(0, 2, 3, 1).double().numpy():
        if method == "chambolle":
            out.append(denoise_tv_chambolle(img, weight=weight, channel_axis=-1))
        else:
            out.append(denoise_tv_bregman(img, weight=weight, channel_axis=-1))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x)
