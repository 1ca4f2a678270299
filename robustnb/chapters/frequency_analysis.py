"""Chapter ``book/frequency_analysis.ipynb``: which frequencies (and which pixels) cost the entropy model's bits?

The filters, spectra and masks are :mod:`robustnb.signal`; this module holds the chapter's experiments. They
take a ``rate_fn(x) -> (N,)`` bits (or ``(bits, logits)``; :func:`bits_and_logits`) and return tidy frames:

* :func:`spectra` (spectra of inputs and of perturbations), :func:`cutoff_sweep` (rate after low- and
  high-pass filtering), :func:`band_shares` (bits added by each frequency band), :func:`bit_allocation`
  (object vs background bits, and the correlation of bits with local high-frequency energy),
  :func:`claim_verdict` (does high-frequency content drive the rate?);
* :class:`FrequencyConfig`, :func:`study` run everything for the split models of the entropy-attack chapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import skimage.data
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from robustnb import data, plots, widgets
from robustnb.attacks import entropy_attack
from robustnb.config import ConfigError, pick
from robustnb.corruptions import corrupt
from robustnb.signal import F_MAX, center_mask, filtered, local_energy, radial_frequency, radial_spectrum
from robustnb.split import ENTROPY_MODELS, LAMBDAS, load_split_models, rate

RateFn = Callable[[torch.Tensor], torch.Tensor]


def _corr(a: np.ndarray, b: np.ndarray, rank: bool = True) -> float:
    if rank:
        a, b = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


# ------------------------------------------------------------------------------------ experiments
def _measure(rate_fn: RateFn, x: torch.Tensor, batch_size: int = 512):
    """``rate_fn`` over ``x`` in batches: ``(bits (N,), logits or None)``; ``rate_fn`` may return the bits or a
    ``(bits, logits)`` pair (one forward pass for both)."""
    bits, logits = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out = rate_fn(x[i:i + batch_size])
            if isinstance(out, tuple):
                out, lg = out
                logits.append(lg.detach().float().cpu())
            bits.append(out.detach().float().cpu())
    return torch.cat(bits), (torch.cat(logits) if logits else None)


def _mean_bits(rate_fn: RateFn, x: torch.Tensor) -> float:
    return float(_measure(rate_fn, x)[0].mean())


def bits_and_logits(model) -> RateFn:
    """``x -> (estimated bits (N,), logits)`` from one eval-mode forward pass of a split model."""
    def fn(x):
        dev = next(model.parameters()).device
        out = model(x.to(dev), noise=False)
        return rate.bits(out["likelihoods"]).cpu(), out["logits"].cpu()

    return fn


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


def cutoff_sweep(rate_fn: RateFn, inputs: Mapping[str, torch.Tensor], cutoffs,
                 labels: torch.Tensor | None = None) -> pd.DataFrame:
    """Rate of each input set after low-pass and after high-pass filtering (:func:`filtered`) at each cutoff.

    ``rate_fn(x)`` returns bits ``(N,)`` or ``(bits, logits)`` (then, with ``labels``, accuracy is reported).
    Columns: ``condition, filter (low-pass|high-pass), cutoff, bits, bits_unfiltered, rate_ratio`` (bits /
    unfiltered bits of the same inputs) and ``accuracy`` when available. All filtered copies of a set go
    through ``rate_fn`` as one large batch.
    """
    rows = []
    settings = [("low", "low-pass", c) for c in cutoffs] + [("high", "high-pass", c) for c in cutoffs]
    for name, x in inputs.items():
        n = len(x)
        batch = torch.cat([x] + [filtered(x, c, band) for band, _, c in settings])
        bits, logits = _measure(rate_fn, batch)
        full = float(bits[:n].mean())
        for k, (band, label, c) in enumerate(settings, start=1):
            b = float(bits[k * n:(k + 1) * n].mean())
            row = {"condition": name, "filter": label, "cutoff": float(c), "bits": b,
                   "bits_unfiltered": full, "rate_ratio": b / full if full else float("nan")}
            if logits is not None and labels is not None:
                row["accuracy"] = float((logits[k * n:(k + 1) * n].argmax(1) == labels).float().mean())
                row["accuracy_unfiltered"] = float((logits[:n].argmax(1) == labels).float().mean())
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
        n = len(x)
        bits = _measure(rate_fn, torch.cat([filtered(x, c, "low") for c in cuts]))[0]
        rates = [float(bits[k * n:(k + 1) * n].mean()) for k in range(len(cuts))]
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
                  condition: str = "clean", by=("entropy_model", "lam"), bands: pd.DataFrame | None = None) -> pd.DataFrame:
    """Does high-frequency content drive the bitrate? One row per model (the ``by`` columns).

    At ``cutoff``: ``drop_lowpass`` = rate lost when the high frequencies are removed, ``drop_highpass`` = rate
    lost when the low frequencies are removed (both as a fraction of the unfiltered rate). The claim
    *holds* when removing the high frequencies costs more bits than removing the low ones
    (``drop_lowpass > drop_highpass``) and, if ``alloc`` is given, bits also go where the local high-frequency
    energy is (mean rank correlation ``hf_corr > 0.3``). With ``bands`` (:func:`band_shares`), two more
    columns for context: the share of the bits added by the bands above ``cutoff`` (``hf_bit_share``) and
    their share of the signal power (``hf_power_share``); bits far above power mean high frequencies are
    expensive per unit of signal.
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
        if bands is not None:
            bd = bands[(bands["condition"] == condition) & (bands["lo"] >= cutoff - 1e-9)]
            for b_, v in zip(by, key):
                bd = bd[bd[b_] == v]
            row["hf_bit_share"] = float(bd["share"].sum())
            row["hf_power_share"] = float(bd["power_share"].sum())
        row["claim_holds"] = bool(holds)
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------- natural photos
NATURAL_IMAGES = ("astronaut", "chelsea", "coffee", "rocket")


def natural_images(names=NATURAL_IMAGES, size: int = 256) -> tuple[torch.Tensor, list[str]]:
    """scikit-image's sample photographs, centre-cropped to a square and resized to ``size`` x ``size``:
    ``(N, 3, size, size)`` in [0, 1] and their names."""
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


# ------------------------------------------------------------------------------------------- the study
CORRUPTIONS_SHOWN = ("shot_noise", "defocus_blur")


@dataclass(frozen=True)
class FrequencyConfig:
    """Sizes of the frequency-analysis chapter. The split models are those of the entropy-attack chapters
    (same ``robustnb.split.load_split_models`` calls, so they come from the model cache)."""

    arch: str
    entropy_models: tuple[str, ...]
    lambdas: tuple[float, ...]
    n_images: int
    eps_255: float
    attack_steps: int
    attack_draws: int
    cutoffs: tuple[float, ...]
    band_edges: tuple[float, ...]
    corruptions: tuple[str, ...]
    severity: int
    photo_size: int

    @classmethod
    def from_preset(cls, preset: str, seed: int = 0) -> "FrequencyConfig":
        return cls(
            arch=pick(preset, smoke="vgg", cpu="resnet", full="resnet"),
            entropy_models=ENTROPY_MODELS,
            lambdas=pick(preset, smoke=(min(LAMBDAS),), cpu=tuple(LAMBDAS), full=tuple(LAMBDAS)),
            n_images=pick(preset, smoke=16, cpu=64, full=1000),
            eps_255=8.0,
            attack_steps=pick(preset, smoke=2, cpu=10, full=20),
            attack_draws=pick(preset, smoke=1, cpu=2, full=16),
            cutoffs=pick(preset, smoke=(0.1, 0.25, F_MAX), cpu=(0.03, 0.06, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, F_MAX),
                         full=(0.03, 0.06, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, F_MAX)),
            band_edges=(0.0625, 0.125, 0.25, 0.375, 0.5),
            corruptions=CORRUPTIONS_SHOWN,
            severity=3,
            photo_size=pick(preset, smoke=64, cpu=256, full=512),
        )


def load_models(cfg: FrequencyConfig, run) -> dict:
    """``{(entropy_model, lambda): SplitModel}`` from the model cache (trained on first use)."""
    models = load_split_models((cfg.arch,), cfg.entropy_models, cfg.lambdas, run)
    return {(em, lam): m for (_, em, lam), m in models.items()}


def cifar_images(cfg: FrequencyConfig, run) -> tuple[torch.Tensor, torch.Tensor]:
    """The chapter's test images: ``data.cifar10_test_images(n_images, seed)``."""
    return data.cifar10_test_images(cfg.n_images, run.seed)


def make_inputs(cfg: FrequencyConfig, model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Clean, corrupted (each of ``cfg.corruptions`` at ``cfg.severity``) and entropy-attacked inputs."""
    out = {"clean": x}
    for c in cfg.corruptions:
        out[c] = corrupt(x, c, cfg.severity)
    out[f"attacked {cfg.eps_255:g}/255"] = entropy_attack(model, x, cfg.eps_255 / 255, cfg.attack_steps,
                                                          cfg.attack_draws)
    return out


def study(cfg: FrequencyConfig, models: dict, x: torch.Tensor, y: torch.Tensor) -> dict[str, pd.DataFrame]:
    """Every measurement of the chapter, for every model: ``{"sweep", "bands", "alloc", "spectra"}`` frames
    with ``entropy_model`` and ``lam`` columns (and the inputs of the last model under ``"inputs"``)."""
    sweeps, bands, allocs, specs = [], [], [], []
    inputs = {}
    for (em, lam), model in tqdm(models.items(), desc="models", leave=False):
        inputs = make_inputs(cfg, model, x)
        rate_fn = bits_and_logits(model)
        tag = {"entropy_model": em, "lam": lam, "model": f"{em}, lambda={lam:g}"}
        sweeps.append(cutoff_sweep(rate_fn, inputs, cfg.cutoffs, y).assign(**tag))
        bands.append(band_shares(rate_fn, inputs, cfg.band_edges).assign(**tag))
        allocs.append(bit_allocation(lambda t, m=model: rate.bit_map(m, t), inputs).assign(**tag))
        specs.append(spectra(inputs).assign(**tag))
    return {"sweep": pd.concat(sweeps, ignore_index=True), "bands": pd.concat(bands, ignore_index=True),
            "alloc": pd.concat(allocs, ignore_index=True), "spectra": pd.concat(specs, ignore_index=True),
            "inputs": inputs}


def summary(res: dict, cutoff: float = 0.25) -> pd.DataFrame:
    """Per model and condition: mean bits, object/background bit ratio, bits-vs-HF-energy correlation and the
    rate kept after a low-pass at ``cutoff`` (``lowpass_keeps``)."""
    a = res["alloc"].groupby(["entropy_model", "lam", "condition"], sort=False)[["bits", "object_ratio", "hf_corr"]].mean()
    s = res["sweep"]
    s = s[(s["filter"] == "low-pass") & ((s["cutoff"] - cutoff).abs() < 1e-6)]
    keep = s.set_index(["entropy_model", "lam", "condition"])["rate_ratio"].rename("lowpass_keeps")
    return a.join(keep).reset_index()


def photo_bit_maps(models: dict, photos: torch.Tensor) -> dict:
    """Bit maps of the sample photographs for each model: ``{(entropy_model, lambda): (N, h, w)}``."""
    return {k: rate.bit_map(m, photos, batch_size=2) for k, m in models.items()}


def explore(models: dict, inputs: dict, cutoffs, n_images: int = 8):
    """Live explorer: pick a model, an input set, an image and a low-pass cutoff; shows the filtered image, its
    bit map and the bits before and after filtering."""
    def show(model_key, condition, image, cutoff):
        m = models[model_key]
        x = inputs[condition][image:image + 1]
        xf = filtered(x, cutoff, "low")
        maps = torch.cat([rate.bit_map(m, x), rate.bit_map(m, xf)])
        bits = rate.estimated_bits(m, torch.cat([x, xf]))
        imgs = torch.cat([x, xf, plots.colorize(maps, x.shape[-2:])])
        titles = ["input", f"low-pass {cutoff:.3g}", f"bit map: {bits[0]:.0f} bits", f"bit map: {bits[1]:.0f} bits"]
        return plots.image_grid(imgs, titles=titles, cols=4,
                                title=f"{model_key[0]}, lambda={model_key[1]:g}: rate kept {bits[1] / bits[0]:.0%}")

    keys = list(models)
    return widgets.explorer(
        show, model_key=widgets.choice([(f"{em}, lambda={lam:g}", (em, lam)) for em, lam in keys], "model"),
        condition=widgets.choice(list(inputs), "input"),
        image=widgets.choice(list(range(min(n_images, len(next(iter(inputs.values())))))), "image"),
        cutoff=widgets.lambda_slider(cutoffs, "cutoff", value=cutoffs[len(cutoffs) // 2]))


def filter_stack(img: torch.Tensor, cutoffs):
    """For ``plots.image_slider``: per cutoff, the image | its low-pass | its high-pass (on the mean)."""
    x = img[None]
    return torch.stack([torch.cat([x, filtered(x, c, "low"), filtered(x, c, "high")]) for c in cutoffs])


def bit_map_stack(model, inputs: dict, n: int = 4):
    """Images and titles for ``plots.image_grid``: for each input set, ``n`` images and then their bit maps."""
    imgs, titles = [], []
    for name, x in inputs.items():
        xs = x[:n]
        maps = rate.bit_map(model, xs)
        imgs += [xs, plots.colorize(maps, xs.shape[-2:])]
        titles += [name] * n + [f"{float(b):.0f} bits" for b in maps.flatten(1).sum(1)]
    return torch.cat(imgs), titles


def photo_stack(models: dict, photos: torch.Tensor, names):
    """Photos and their bit maps under each model: images and titles for ``plots.image_grid``."""
    imgs, titles = [photos], list(names)
    for (em, lam), m in models.items():
        maps = rate.bit_map(m, photos, batch_size=2)
        imgs.append(plots.colorize(maps, photos.shape[-2:]))
        titles += [f"{em}, lambda={lam:g}: {float(b) / 8 / 1024:.1f} KB" for b in maps.flatten(1).sum(1)]
    return torch.cat(imgs), titles


def verdict_text(verdict: pd.DataFrame) -> list[str]:
    """The claim test in sentences, computed from :func:`claim_verdict`'s frame."""
    out = []
    for _, r in verdict.iterrows():
        who = ", ".join(f"{k}={r[k]}" for k in ("entropy_model", "lam") if k in r)
        out.append(f"{who}: removing frequencies above {r['cutoff']:.2f} cycles/pixel cuts the rate by "
                   f"{r['drop_lowpass']:.1%}, removing those below by {r['drop_highpass']:.1%}"
                   + (f"; bits vs local high-frequency energy: rank correlation {r['hf_corr']:.2f}" if "hf_corr" in r else "")
                   + (f"; bands above {r['cutoff']:.2f} add {r['hf_bit_share']:.0%} of the bits for {r['hf_power_share']:.1%} "
                      "of the signal power" if "hf_bit_share" in r else "")
                   + f" -> the claim {'HOLDS' if r['claim_holds'] else 'does NOT hold'}.")
    return out
