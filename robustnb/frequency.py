"""Frequency analysis of the entropy-coded bitrate: which frequencies (and which pixels) cost the bits?

Building blocks (pure functions on image batches ``(N, C, H, W)`` in ``[0, 1]``):

* :func:`radial_frequency`, :func:`radial_spectrum`: the power spectrum averaged over rings of equal spatial
  frequency (in cycles per pixel; 0.5 is the Nyquist frequency along an axis, :data:`F_MAX` = sqrt(0.5) the
  corner of the spectrum).
* :func:`lowpass`, :func:`highpass`, :func:`split`: ideal (or Gaussian) FFT masks with a cutoff in cycles per
  pixel. ``lowpass(x, F_MAX)`` is the identity; ``split(x, c)`` returns ``(low, high)`` with ``low + high == x``.
  :func:`filtered` is the same filtering made displayable (the mean is kept, values clamped to [0, 1]).
* :func:`local_energy`: the energy of the high-frequency residual pooled to the latent grid, to compare with the
  entropy model's bit map.

Experiments take a ``rate_fn(x) -> (N,)`` bits (for instance ``lambda x: rate.estimated_bits(model, x)``) or a
split model, and return tidy frames that ``robustnb.plots`` draws:

* :func:`spectra` (spectra of inputs and of perturbations), :func:`cutoff_sweep` (rate after low- and
  high-pass filtering), :func:`band_shares` (the share of the rate each frequency band accounts for),
  :func:`bit_allocation` (object vs background bits, and the correlation of bits with local high-frequency
  energy), :func:`claim_verdict` (does high-frequency content drive the rate?).
* :class:`FrequencyConfig`, :func:`study` run everything for the split models of the entropy-attack chapter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from robustnb.config import ConfigError, pick

F_MAX = math.sqrt(0.5)  #: the largest radial frequency of a sampled image (cycles per pixel)
FILTER_KINDS = ("ideal", "gaussian")

RateFn = Callable[[torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------------------ basics
def _check_images(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"expected an image batch (N, C, H, W), got {getattr(x, 'shape', type(x).__name__)}")
    return x


def _check_cutoff(cutoff) -> float:
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
    c = _check_cutoff(cutoff)
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
    _check_cutoff(cutoff)
    if remove_mean:
        x = x - x.mean(dim=(-2, -1), keepdim=True)
    p = (torch.fft.fft2(x.double()).abs() ** 2).sum(1)
    r = radial_frequency(*x.shape[-2:], device=x.device)
    hi = (p * (r > cutoff)).flatten(1).sum(1)
    return (hi / p.flatten(1).sum(1).clamp_min(1e-20)).float()


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


def _corr(a: np.ndarray, b: np.ndarray, rank: bool = True) -> float:
    if rank:
        a, b = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def center_mask(h: int, w: int, fraction: float = 0.5) -> torch.Tensor:
    """A ``(h, w)`` boolean box covering the central ``fraction`` of each side: the "object" proxy for
    CIFAR-10, whose objects are roughly centred (no segmentation masks ship with it)."""
    m = torch.zeros(h, w, dtype=torch.bool)
    bh, bw = max(1, round(h * fraction)), max(1, round(w * fraction))
    t, l = (h - bh) // 2, (w - bw) // 2
    m[t:t + bh, l:l + bw] = True
    return m


# ------------------------------------------------------------------------------------ experiments
def _mean_bits(rate_fn: RateFn, x: torch.Tensor, batch_size: int = 256) -> float:
    with torch.no_grad():
        return float(torch.cat([rate_fn(x[i:i + batch_size]).detach().float().cpu()
                                for i in range(0, len(x), batch_size)]).mean())


def spectra(inputs: Mapping[str, torch.Tensor], reference: str | None = "clean", n_bins: int | None = None) -> pd.DataFrame:
    """Radial spectra of each input set and, when ``reference`` is given, of each set's difference to it
    (the perturbation). Columns: ``condition, signal (image|perturbation), frequency, power``."""
    rows = []
    ref = inputs.get(reference) if reference else None
    for name, x in inputs.items():
        sig = [("image", x, True)]
        if ref is not None and name != reference:
            sig.append(("perturbation", x - ref, False))
        for kind, t, rm in sig:
            f, p = radial_spectrum(t, n_bins, remove_mean=rm)
            for fi, pi in zip(f.tolist(), p.mean(0).tolist()):
                rows.append({"condition": name, "signal": kind, "frequency": fi, "power": pi})
    return pd.DataFrame(rows)


def cutoff_sweep(rate_fn: RateFn, inputs: Mapping[str, torch.Tensor], cutoffs, acc_fn=None,
                 labels: torch.Tensor | None = None) -> pd.DataFrame:
    """Rate of each input set after low-pass and after high-pass filtering (:func:`filtered`) at each cutoff.

    Columns: ``condition, filter (low-pass|high-pass), cutoff, bits, bits_unfiltered, rate_ratio`` (bits /
    unfiltered bits of the same inputs), ``accuracy`` when ``acc_fn(x, labels) -> float`` is given.
    """
    rows = []
    for name, x in inputs.items():
        full = _mean_bits(rate_fn, x)
        for band, label in (("low", "low-pass"), ("high", "high-pass")):
            for c in cutoffs:
                xf = filtered(x, c, band)
                bits = _mean_bits(rate_fn, xf)
                row = {"condition": name, "filter": label, "cutoff": float(c), "bits": bits,
                       "bits_unfiltered": full, "rate_ratio": bits / full if full else float("nan")}
                if acc_fn is not None:
                    row["accuracy"] = acc_fn(xf, labels)
                rows.append(row)
    return pd.DataFrame(rows)


def band_shares(rate_fn: RateFn, inputs: Mapping[str, torch.Tensor], edges=(0.0625, 0.125, 0.25, 0.375, 0.5)) -> pd.DataFrame:
    """The share of the rate each frequency band accounts for, by adding bands from low to high.

    With ``R(c)`` the rate of ``lowpass(x, c)`` (clamped to [0, 1]), band ``(c_{k-1}, c_k]`` is credited with
    ``R(c_k) - R(c_{k-1})``; the first band starts from the flat image (``c = 0``) and the last ends at
    :data:`F_MAX` (the full image), so the credits add up to ``R(x) - R(flat)``; ``share`` divides by that
    sum (a negative share means adding the band *lowered* the rate). Alongside, ``power_share`` is the band's
    share of the image's (mean-removed) power, to compare "share of bits" with "share of signal".
    Columns: ``condition, band, lo, hi, bits_added, share, power_share``.
    """
    cuts = [0.0] + [float(e) for e in edges if 0 < e < F_MAX] + [F_MAX]
    rows = []
    for name, x in inputs.items():
        rates = [_mean_bits(rate_fn, filtered(x, c, "low")) for c in cuts]
        total = rates[-1] - rates[0]
        xm = x - x.mean(dim=(-2, -1), keepdim=True)
        p = (torch.fft.fft2(xm.double()).abs() ** 2).sum(1).mean(0)
        r = radial_frequency(*x.shape[-2:])
        ptot = float(p.sum())
        for k in range(1, len(cuts)):
            lo, hi = cuts[k - 1], cuts[k]
            pw = float((p * ((r > lo) & (r <= hi + 1e-9))).sum()) / ptot if ptot else float("nan")
            rows.append({"condition": name, "band": f"{lo:.3g}-{hi:.3g}", "lo": lo, "hi": hi,
                         "bits_added": rates[k] - rates[k - 1],
                         "share": (rates[k] - rates[k - 1]) / total if total else float("nan"),
                         "power_share": pw})
    return pd.DataFrame(rows)


def bit_allocation(bit_map_fn: Callable[[torch.Tensor], torch.Tensor], inputs: Mapping[str, torch.Tensor],
                   object_fraction: float = 0.5, cutoff: float = 0.25) -> pd.DataFrame:
    """Where the bits go, per image: object (central box, :func:`center_mask`) vs background bits per latent
    location, and the rank correlation between the bit map and the local high-frequency energy.

    ``bit_map_fn(x) -> (N, h, w)`` bits per latent location (``rate.bit_map(model, x)``).
    Columns: ``condition, image, bits, object_bits_per_loc, background_bits_per_loc, object_ratio, hf_corr``.
    """
    rows = []
    for name, x in inputs.items():
        with torch.no_grad():
            b = bit_map_fn(x).detach().float().cpu()
        h, w = b.shape[-2:]
        obj = center_mask(h, w, object_fraction)
        energy = local_energy(x.cpu(), (h, w), cutoff)
        for i in range(len(b)):
            ob, bg = float(b[i][obj].mean()), float(b[i][~obj].mean()) if (~obj).any() else float("nan")
            rows.append({"condition": name, "image": i, "bits": float(b[i].sum()),
                         "object_bits_per_loc": ob, "background_bits_per_loc": bg,
                         "object_ratio": ob / bg if bg else float("nan"),
                         "hf_corr": _corr(b[i].flatten().numpy(), energy[i].flatten().numpy())})
    return pd.DataFrame(rows)


def claim_verdict(sweep: pd.DataFrame, alloc: pd.DataFrame | None = None, cutoff: float = 0.25,
                  condition: str = "clean", by=("entropy_model", "lam")) -> pd.DataFrame:
    """Does high-frequency content drive the bitrate? One row per model (the ``by`` columns).

    At ``cutoff``: ``drop_lowpass`` = rate lost when the high frequencies are removed, ``drop_highpass`` = rate
    lost when the low frequencies are removed (both as a fraction of the unfiltered rate). The claim
    *holds* when removing the high frequencies costs more bits than removing the low ones
    (``drop_lowpass > drop_highpass``) and, if ``alloc`` is given, bits also go where the local high-frequency
    energy is (mean rank correlation ``hf_corr > 0.3``).
    """
    by = [b for b in by if b in sweep.columns]
    s = sweep[(sweep["condition"] == condition)]
    s = s.loc[(s["cutoff"] - cutoff).abs() == (s["cutoff"] - cutoff).abs().min()]
    rows = []
    for key, g in (s.groupby(by, sort=False) if by else [((), s)]):
        key = key if isinstance(key, tuple) else (key,)
        lp = g[g["filter"] == "low-pass"]["rate_ratio"].mean()
        hp = g[g["filter"] == "high-pass"]["rate_ratio"].mean()
        row = dict(zip(by, key))
        row.update({"cutoff": float(g["cutoff"].iloc[0]), "drop_lowpass": 1 - lp, "drop_highpass": 1 - hp})
        holds = row["drop_lowpass"] > row["drop_highpass"]
        if alloc is not None:
            a = alloc[alloc["condition"] == condition]
            for b_, v in zip(by, key):
                a = a[a[b_] == v]
            row["hf_corr"] = float(a["hf_corr"].mean())
            holds = holds and row["hf_corr"] > 0.3
        row["claim_holds"] = bool(holds)
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------- natural photos
NATURAL_IMAGES = ("astronaut", "chelsea", "coffee", "rocket")


def natural_images(names=NATURAL_IMAGES, size: int = 256) -> tuple[torch.Tensor, list[str]]:
    """scikit-image's sample photographs, centre-cropped to a square and resized to ``size`` x ``size``:
    ``(N, 3, size, size)`` in [0, 1] and their names."""
    import skimage.data

    out = []
    for n in names:
        if n not in NATURAL_IMAGES:
            raise ConfigError(f"Unknown sample image {n!r}: choose from {NATURAL_IMAGES}.")
        a = torch.from_numpy(np.ascontiguousarray(getattr(skimage.data, n)())).float().div(255)
        a = a.permute(2, 0, 1)[:3]
        h, w = a.shape[-2:]
        s = min(h, w)
        a = a[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        out.append(F.interpolate(a[None], size=(size, size), mode="bilinear", antialias=True,
                                 align_corners=False)[0].clamp(0, 1))
    return torch.stack(out), list(names)
