"""Chapter ``book/frequency_analysis.ipynb``: which frequencies (and which pixels) cost the entropy model's bits?

The filters, spectra and masks are :mod:`robustnb.signal`; this module holds the chapter's experiments. They
take a ``rate_fn(x) -> (N,)`` bits (or ``(bits, logits)``; :func:`bits_and_logits`) and return tidy frames:

* :func:`spectra` (spectra of inputs and of perturbations), :func:`cutoff_sweep` (mean rate after low- and
  high-pass filtering), :func:`filter_rates` (the same, per image, at one cutoff), :func:`band_shares` (bits
  added by each frequency band, as a share of the full rate), :func:`bit_allocation` (object vs background
  bits, and the correlation of bits with local high-frequency energy, per image);
* the paper's claims (:data:`PAPER_CLAIMS`) judged with 95% intervals over images: :func:`removed_share`
  (the share of the attack's extra bits a low-pass removes), :func:`claims` (one row per claim, verdicts by
  :func:`robustnb.stats.verdict`), :func:`claims_by_model` (the same estimators per model, for context),
  :func:`numbers` (formatted numbers for the prose), :func:`world_claims` (the claims on constructed worlds);
* :class:`FrequencyConfig`, :func:`study` run everything for the split models of the entropy-attack chapter.

Data: the offline CIFAR-10 archive is a JPEG re-encoding at quality 75, so its high frequencies are already
partly removed; every verdict here holds for JPEG-filtered images.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import skimage.data
import torch
import torch.nn.functional as F

from robustnb import data, plots, registry, stats, widgets
from robustnb.attacks import entropy_attack
from robustnb.cache import experiment
from robustnb.config import ConfigError, pick
from robustnb.mechanisms import make
from robustnb.progress import tqdm
from robustnb.signal import F_MAX, center_mask, filtered, local_energy, radial_frequency, radial_spectrum
from robustnb.split import LAMBDAS, load_split_models, rate

CUTOFF = 0.25  #: the cutoff (cycles/pixel) of the claims' low- and high-pass filters

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
    """The share of the rate ``R(x)`` each frequency band accounts for, by adding bands from low to high.

    With ``R(c)`` the mean rate of ``lowpass(x, c)`` (clamped to [0, 1]), a first row ``band="flat"`` is the
    flat image (``c = 0``, the per-channel mean) with ``R(0)`` bits, and band ``(c_{k-1}, c_k]`` is credited
    with ``R(c_k) - R(c_{k-1})``; the last band ends at :data:`F_MAX` (the full image). ``share`` divides by
    the full rate ``R(x)``: the shares of the flat row and of the bands add up to one, so ``share`` *is* the
    share of the rate (a negative share means adding the band *lowered* the rate). ``share_above_flat``
    divides by ``R(x) - R(flat)`` instead: the share of the bits the bands add on top of the flat image (a
    small residual when the flat image already costs most of the rate). ``power_share`` is the band's share
    of the image's (mean-removed) power, to compare "share of bits" with "share of signal" (zero for flat).
    Columns: ``condition, band, lo, hi, bits_added, share, share_above_flat, power_share``.
    """
    cuts = [0.0] + [float(e) for e in edges if 0 < e < F_MAX] + [F_MAX]
    rows = []
    for name, x in inputs.items():
        n = len(x)
        bits = _measure(rate_fn, torch.cat([filtered(x, c, "low") for c in cuts]))[0]
        rates = [float(bits[k * n:(k + 1) * n].mean()) for k in range(len(cuts))]
        full, above = rates[-1], rates[-1] - rates[0]
        xm = x - x.mean(dim=(-2, -1), keepdim=True)
        p = (torch.fft.fft2(xm.double()).abs() ** 2).sum(1).mean(0)
        r = radial_frequency(*x.shape[-2:])
        ptot = float(p.sum())
        rows.append({"condition": name, "band": "flat", "lo": 0.0, "hi": 0.0, "bits_added": rates[0],
                     "share": rates[0] / full if full else float("nan"), "share_above_flat": float("nan"),
                     "power_share": 0.0})
        for k in range(1, len(cuts)):
            lo, hi = cuts[k - 1], cuts[k]
            pw = float((p * ((r > lo) & (r <= hi + 1e-9))).sum()) / ptot if ptot else float("nan")
            added = rates[k] - rates[k - 1]
            rows.append({"condition": name, "band": f"{lo:.3g}-{hi:.3g}", "lo": lo, "hi": hi, "bits_added": added,
                         "share": added / full if full else float("nan"),
                         "share_above_flat": added / above if above else float("nan"), "power_share": pw})
    return pd.DataFrame(rows)


def filter_rates(rate_fn: RateFn, inputs: Mapping[str, torch.Tensor], cutoff: float = CUTOFF) -> pd.DataFrame:
    """Per image, the rate unfiltered, after a low-pass and after a high-pass at ``cutoff`` (:func:`filtered`):
    the per-image values behind the claims' intervals. Columns: ``condition, image, bits, bits_lowpass,
    bits_highpass``."""
    rows = []
    for name, x in inputs.items():
        n = len(x)
        bits = _measure(rate_fn, torch.cat([x, filtered(x, cutoff, "low"), filtered(x, cutoff, "high")]))[0]
        for i in range(n):
            rows.append({"condition": name, "image": i, "bits": float(bits[i]), "bits_lowpass": float(bits[n + i]),
                         "bits_highpass": float(bits[2 * n + i])})
    return pd.DataFrame(rows)


def bit_allocation(bit_map_fn: Callable[[torch.Tensor], torch.Tensor], inputs: Mapping[str, torch.Tensor],
                   object_fraction: float = 0.5, cutoff: float = CUTOFF) -> pd.DataFrame:
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


# ------------------------------------------------------------------------------------------ the claims
CHAPTER = "frequency_analysis"
MOSTLY = 0.5  #: "mostly": the removed share of the attack's extra bits must exceed one half
MODEL_KEYS = ("entropy_model", "lam")

PAPER_CLAIMS: dict[str, stats.PaperClaim] = {
    "fa_attack_bits_high_frequency": stats.PaperClaim(
        claim="The entropy attack's extra bits are mostly high-frequency content",
        paper="qualitative: the attack works by injecting high-frequency content (no number; 'mostly' = more than "
              "half, the book's bound)",
        source="Zhang et al., frequency analysis of the entropy attack (figures)",
        measure=f"removed share: the bits a {CUTOFF} cycles/pixel low-pass removes from attacked inputs minus those it "
                "removes from the clean ones, over the bits the attack added (pooled over images and models, "
                "paired bootstrap); 'mostly' = the whole interval above one half",
        form="at_least", paper_value=MOSTLY, signed=False, worlds=(0.85, 0.2)),
    "fa_clean_bits_high_frequency": stats.PaperClaim(
        claim="High-frequency content largely drives the entropy-based compression (clean images)",
        paper="'high-frequency content largely drives the entropy-based compression' (TL;DR; no number, so judged "
              "for direction: the high frequencies cost more of the rate than the low ones)",
        source="TL;DR (../shared/papers); Zhang et al., frequency analysis (figures)",
        measure=f"per clean image, the rate lost by removing the frequencies above {CUTOFF} cycles/pixel minus the rate "
                "lost by removing those below, as a fraction of its rate (averaged over models; paired bootstrap "
                "over images)",
        form="increase", role="primary", worlds=(0.3, -0.3)),
    "fa_bits_follow_hf_energy": stats.PaperClaim(
        claim="The bits go where the local high-frequency energy is",
        paper="qualitative: bit maps follow high-frequency content (no number)",
        source="Zhang et al., frequency analysis (figures)",
        measure="rank correlation, location by location, between the bit map and the local energy above "
                f"{CUTOFF} cycles/pixel; mean over clean images (averaged over models; bootstrap over images)",
        form="increase", scale=1.0, unit="", digits=2, worlds=(0.3, -0.2)),
    "fa_bits_on_object": stats.PaperClaim(
        claim="The entropy model spends more bits on the object than on the background",
        paper="qualitative: the basis of the object-aware defense (no number)",
        source="Zhang et al., spatial analysis behind the object-aware TV defense (figures)",
        measure="bits per latent location on the central box over those on the border, minus one (central box as "
                "the object proxy); mean over clean images (averaged over models; bootstrap over images)",
        form="increase", worlds=(0.3, -0.2)),
}

#: numbers the prose may type: the book's fixed settings (the papers give no numbers for these claims)
QUOTED_NUMBERS: tuple[str, ...] = (f"{CUTOFF:g}", "50%", "80%")  # the cutoff; "mostly" = above one half; power
#: replicates (test images) with which every claim must read "inconclusive at this size": fewer than
#: ``stats.MIN_ITEMS``, the fewest images a bootstrap over images decides anything on
TOO_FEW = 10


def _per_image(frame: pd.DataFrame, condition: str, cols) -> pd.DataFrame:
    """``cols`` of ``condition`` per image, averaged over the models (rows indexed by image)."""
    f = frame[frame["condition"] == condition]
    return f.groupby("image", sort=True)[list(cols)].mean()


def attacked_condition(frame: pd.DataFrame) -> str:
    """The name of the entropy-attacked input set (``"attacked <eps>/255"``)."""
    names = [c for c in frame["condition"].unique() if str(c).startswith("attacked")]
    if len(names) != 1:
        raise ValueError(f"expected one attacked condition, got {names}")
    return names[0]


def removed_share(per_image: pd.DataFrame, attacked: str | None = None, clean: str = "clean",
                  seed: int = 0) -> stats.Estimate:
    """The share of the attack's extra bits that a low-pass removes, net of what it removes from clean images.

    With per-image rates (:func:`filter_rates`, averaged over the models present) ``R`` unfiltered and
    ``R_lp`` after the low-pass, pooled over the images:
    ``removed = sum[(R(adv) - R_lp(adv)) - (R(clean) - R_lp(clean))] / sum[R(adv) - R(clean)]``
    (1 = the low-pass removes exactly the bits the attack added, 0 = it removes no more from attacked inputs
    than from clean ones). Interval: :func:`robustnb.stats.ratio_ci` over the images (paired). Not defined
    (NaN) when the attack added no bits on average.
    """
    attacked = attacked or attacked_condition(per_image)
    cols = ("bits", "bits_lowpass")
    c, a = _per_image(per_image, clean, cols), _per_image(per_image, attacked, cols)
    a = a.loc[c.index]
    extra = (a["bits"] - c["bits"]).to_numpy()
    removed = ((a["bits"] - a["bits_lowpass"]) - (c["bits"] - c["bits_lowpass"])).to_numpy()
    if len(extra) == 0 or extra.mean() <= 0:
        return stats.Estimate(float("nan"), float("nan"), float("nan"), len(extra))
    return stats.ratio_ci(extra, removed, seed).shifted(1)


@dataclass(frozen=True)
class FrequencyStudy:
    """The chapter's measurements, each a tidy frame with ``entropy_model``, ``lam`` and ``model`` columns.

    ``sweep`` (:func:`cutoff_sweep`), ``bands`` (:func:`band_shares`), ``alloc`` (:func:`bit_allocation`),
    ``spectra`` (:func:`spectra`), ``per_image`` (:func:`filter_rates` at :data:`CUTOFF`); ``inputs``: the images
    of each condition for the last model (clean, corrupted, attacked)."""
    per_image: pd.DataFrame = field(default_factory=pd.DataFrame)
    alloc: pd.DataFrame = field(default_factory=pd.DataFrame)
    sweep: pd.DataFrame = field(default_factory=pd.DataFrame)
    bands: pd.DataFrame = field(default_factory=pd.DataFrame)
    spectra: pd.DataFrame = field(default_factory=pd.DataFrame)
    inputs: dict = field(default_factory=dict)

    def of_model(self, model: str) -> "FrequencyStudy":
        """The frames restricted to one model (its ``model`` label)."""
        frames = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "inputs"}
        return FrequencyStudy(**{k: v[v["model"] == model] if "model" in v else v for k, v in frames.items()},
                              inputs=self.inputs)


def claim_estimates(res: FrequencyStudy, seed: int = 0) -> dict[str, stats.Estimate]:
    """The estimate behind each claim of :data:`PAPER_CLAIMS`, from :func:`study`'s ``per_image`` and
    ``alloc`` frames (per image, averaged over the models present)."""
    pi, alloc = res.per_image, res.alloc
    clean = _per_image(pi, "clean", ("bits", "bits_lowpass", "bits_highpass"))
    drop_lp = 1 - clean["bits_lowpass"] / clean["bits"]
    drop_hp = 1 - clean["bits_highpass"] / clean["bits"]
    a = _per_image(alloc, "clean", ("hf_corr", "object_ratio"))
    return {
        "fa_attack_bits_high_frequency": removed_share(pi, seed=seed),
        "fa_clean_bits_high_frequency": stats.paired_diff_ci(drop_hp.to_numpy(), drop_lp.to_numpy(), seed),
        "fa_bits_follow_hf_energy": stats.mean_ci(a["hf_corr"].to_numpy(), seed),
        "fa_bits_on_object": stats.mean_ci(a["object_ratio"].to_numpy() - 1, seed),
    }


def claims(res: FrequencyStudy, seed: int = 0) -> pd.DataFrame:
    """The paper-vs-ours table: one row per claim of :data:`PAPER_CLAIMS` (columns
    :data:`robustnb.stats.CLAIM_COLUMNS`), verdicts by :func:`robustnb.stats.verdict` on 95% intervals over
    the test images (see each claim's ``measure``). The attack claim ("mostly") is a lower bound: the removed
    share's interval must lie above :data:`MOSTLY`."""
    return stats.claims_table(CHAPTER, PAPER_CLAIMS, claim_estimates(res, seed))


#: the paper's world of :func:`world_claims`: each claim's measured quantity (removed share, clean high- minus
#: low-frequency rate loss, bits-vs-energy correlation, object ratio - 1)
WORLD = {"fa_attack_bits_high_frequency": 0.85, "fa_clean_bits_high_frequency": 0.3, "fa_bits_follow_hf_energy": 0.3,
         "fa_bits_on_object": 0.3}


def world_claims(claim_id: str, truth: float, replicates: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The claims table (:func:`claims`) of a synthetic :class:`FrequencyStudy` (its ``per_image`` and ``alloc``
    frames) at the ``cpu`` preset's shapes (every entropy model x lambda of :class:`FrequencyConfig`, its
    ``n_images`` test images; ``replicates`` images instead), in which claim ``claim_id``'s measured quantity has
    true value ``truth`` and the others their :data:`WORLD` value. Realistic noise: clean bits vary by about 30%
    from image to image and 10% more per model, the attack adds 50% with 30% spread, and every per-image effect
    has a shared per-image part (sd 0.15), a per-model offset (sd 0.05, centred) and per-model noise (sd 0.1)."""
    world = {**WORLD, claim_id: truth}
    cfg = FrequencyConfig.from_preset("cpu")
    n = replicates or cfg.n_images
    rng = np.random.default_rng(seed)
    models = [(em, lam) for em in cfg.entropy_models for lam in cfg.lambdas]
    offsets = {cid: (lambda o: o - o.mean())(rng.normal(0, 0.05, len(models))) for cid in world}
    shared = {cid: rng.normal(0, 0.15, n) for cid in world}
    image = rng.lognormal(0, 0.3, n)
    attacked = f"attacked {cfg.eps_255:g}/255"
    per_image, alloc = [], []
    for j, (em, lam) in enumerate(models):
        def effect(cid, sd=0.1):
            return world[cid] + offsets[cid][j] + shared[cid] + rng.normal(0, sd, n)

        tag = {"entropy_model": em, "lam": lam, "model": f"{em}, lambda={lam:g}"}
        clean = 2000 * 0.7 ** j * image * rng.lognormal(0, 0.1, n)
        d = effect("fa_clean_bits_high_frequency")
        lp, hp = clean * np.clip(0.55 - d / 2, 0.01, 0.99), clean * np.clip(0.55 + d / 2, 0.01, 0.99)
        extra = 0.5 * clean * rng.lognormal(-0.045, 0.3, n)
        adv = clean + extra
        adv_lp = adv - (clean - lp) - effect("fa_attack_bits_high_frequency") * extra
        for cond, (b, blp, bhp) in {"clean": (clean, lp, hp), "shot_noise": (1.3 * clean, 1.3 * lp, 1.3 * hp),
                                    "defocus_blur": (0.7 * clean, 0.7 * lp, 0.7 * hp),
                                    attacked: (adv, adv_lp, adv - (clean - hp))}.items():
            per_image.append(pd.DataFrame({"condition": cond, "image": np.arange(n), "bits": b, "bits_lowpass": blp,
                                           "bits_highpass": bhp, **tag}))
        ratio = np.clip(1 + effect("fa_bits_on_object", 0.2), 0.05, None)
        alloc.append(pd.DataFrame({"condition": "clean", "image": np.arange(n), "bits": clean,
                                   "object_bits_per_loc": ratio, "background_bits_per_loc": 1.0, "object_ratio": ratio,
                                   "hf_corr": np.clip(effect("fa_bits_follow_hf_energy", 0.2), -1, 1), **tag}))
    return claims(FrequencyStudy(per_image=pd.concat(per_image, ignore_index=True),
                                 alloc=pd.concat(alloc, ignore_index=True)))


def claims_by_model(res: FrequencyStudy, seed: int = 0) -> pd.DataFrame:
    """:func:`claims` for each model alone (context: which models carry a pooled verdict). Columns
    ``model`` and :data:`robustnb.stats.CLAIM_COLUMNS`."""
    out = []
    for model, _ in res.per_image.groupby("model", sort=False):
        out.append(claims(res.of_model(model), seed).assign(model=model))
    df = pd.concat(out, ignore_index=True)
    return df[["model"] + list(stats.CLAIM_COLUMNS)]


def _pct_range(v: pd.Series) -> str:
    """``"6.4%"`` or ``"6.4-10.2%"`` (the range of ``v`` over models, in percent)."""
    if v.empty:
        return "n/a"
    lo, hi = f"{100 * v.min():.1f}", f"{100 * v.max():.1f}"
    return f"{lo}%" if lo == hi else f"{lo}-{hi}%"


def numbers(res: FrequencyStudy, seed: int = 0) -> dict[str, str]:
    """Formatted numbers for the prose (glued by :func:`robustnb.book.record`): the attack's and shot noise's
    rate overheads (:func:`robustnb.stats.ratio_ci`), the rate a low-pass at :data:`CUTOFF` keeps of clean and
    of attacked inputs (mean per-image ratio, bootstrap), the share of the rate and of the signal power of the
    bands above :data:`CUTOFF` (range over models), the shot noise / attack perturbation power, and sizes."""
    pi = res.per_image
    attacked = attacked_condition(pi)
    clean = _per_image(pi, "clean", ("bits", "bits_lowpass"))
    out = {}
    for key, cond in (("fa_attack_overhead", attacked), ("fa_shot_overhead", "shot_noise"),
                      ("fa_blur_overhead", "defocus_blur")):
        if (pi["condition"] == cond).any():
            other = _per_image(pi, cond, ("bits",)).loc[clean.index]
            out[key] = stats.ratio_ci(clean["bits"].to_numpy(), other["bits"].to_numpy(), seed).fmt(signed=True)
        else:
            out[key] = "n/a"
    for key, cond in (("fa_lowpass_keeps_clean", "clean"), ("fa_lowpass_keeps_attacked", attacked)):
        d = _per_image(pi, cond, ("bits", "bits_lowpass"))
        out[key] = stats.mean_ci((d["bits_lowpass"] / d["bits"]).to_numpy(), seed).fmt()
    bd = res.bands
    bd = bd[(bd["condition"] == "clean") & (bd["lo"] >= CUTOFF - 1e-9)].groupby("model", sort=False)
    bits_share, power_share = bd["share"].sum(), bd["power_share"].sum()
    out["fa_hf_bit_share"], out["fa_hf_power_share"] = _pct_range(bits_share), _pct_range(power_share)
    sp = res.spectra
    sp = sp[(sp["signal"] == "perturbation") & (sp["model"] == sp["model"].iloc[-1])]
    pw = sp.groupby("condition")["power"].sum()
    out["fa_shot_vs_attack_power"] = (f"{pw['shot_noise'] / pw[attacked]:.1f}x"
                                      if "shot_noise" in pw and pw.get(attacked, 0) > 0 else "n/a")
    out["fa_n_images"] = str(int(pi["image"].nunique()))
    out["fa_n_models"] = str(int(pi["model"].nunique()))
    return out


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
    def from_preset(cls, preset: str) -> "FrequencyConfig":
        return cls(
            arch=pick(preset, smoke="vgg", cpu="resnet", full="resnet"),
            entropy_models=registry.ENTROPY_MODELS.names(),
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
        out[c] = make("corruption", c, severity=cfg.severity)(x)
    out[f"attacked {cfg.eps_255:g}/255"] = entropy_attack(model, x, cfg.eps_255 / 255, cfg.attack_steps,
                                                          cfg.attack_draws)
    return out


@experiment
def measurements(cfg: FrequencyConfig, models: dict, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Every measurement of the chapter, for every model, as the fields of :class:`FrequencyStudy` (a dict: what
    the result cache stores); :func:`study` returns it typed."""
    sweeps, bands, allocs, specs, per_image = [], [], [], [], []
    inputs = {}
    for (em, lam), model in tqdm(models.items(), desc="models", leave=False):
        inputs = make_inputs(cfg, model, x)
        rate_fn = bits_and_logits(model)
        tag = {"entropy_model": em, "lam": lam, "model": f"{em}, lambda={lam:g}"}
        sweeps.append(cutoff_sweep(rate_fn, inputs, cfg.cutoffs, y).assign(**tag))
        bands.append(band_shares(rate_fn, inputs, cfg.band_edges).assign(**tag))
        per_image.append(filter_rates(rate_fn, inputs, CUTOFF).assign(**tag))
        allocs.append(bit_allocation(lambda t, m=model: rate.bit_map(m, t), inputs).assign(**tag))
        specs.append(spectra(inputs).assign(**tag))
    return {"sweep": pd.concat(sweeps, ignore_index=True), "bands": pd.concat(bands, ignore_index=True),
            "alloc": pd.concat(allocs, ignore_index=True), "spectra": pd.concat(specs, ignore_index=True),
            "per_image": pd.concat(per_image, ignore_index=True), "inputs": inputs}


def study(cfg: FrequencyConfig, models: dict, x: torch.Tensor, y: torch.Tensor, cache: bool = True) -> FrequencyStudy:
    """Every measurement of the chapter, for every model (cached: :func:`measurements`)."""
    return FrequencyStudy(**measurements(cfg, models, x, y, cache=cache))


def summary(res: "FrequencyStudy", cutoff: float = CUTOFF) -> pd.DataFrame:
    """Per model and condition: mean bits, object/background bit ratio, bits-vs-HF-energy correlation and the
    rate kept after a low-pass at ``cutoff`` (``lowpass_keeps``)."""
    a = res.alloc.groupby(["entropy_model", "lam", "condition"], sort=False)[["bits", "object_ratio", "hf_corr"]].mean()
    s = res.sweep
    s = s[(s["filter"] == "low-pass") & ((s["cutoff"] - cutoff).abs() < 1e-6)]
    keep = s.set_index(["entropy_model", "lam", "condition"])["rate_ratio"].rename("lowpass_keeps")
    return a.join(keep).reset_index()


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


def setup_text(cfg: FrequencyConfig, res: FrequencyStudy) -> str:
    """What ran, in words, for the prose (glued): models, images and attack of this build's preset."""
    pi = res.per_image
    n_lam, draws = len(cfg.lambdas), cfg.attack_draws
    return (f"{pi['model'].nunique()} {cfg.arch.upper()} split models of the entropy-attack chapters "
            f"({len(cfg.entropy_models)} entropy models x {n_lam} rate weight{'s' if n_lam > 1 else ''}), "
            f"{pi['image'].nunique()} CIFAR-10 test images, entropy attack at {cfg.eps_255:g}/255 with "
            f"{cfg.attack_steps} steps x {draws} draw{'s' if draws > 1 else ''}")


# ------------------------------------------------------------------------------------------ without Jupyter
def reproduce(run) -> pd.DataFrame:
    """The chapter's claims table without Jupyter (:func:`claims`, columns
    :data:`robustnb.stats.CLAIM_COLUMNS`): the calls ``book/frequency_analysis.ipynb`` makes on its way to it.

    ``python -m robustnb reproduce frequency_analysis`` runs this (:mod:`robustnb.cli`). It makes the notebook's
    own calls, in its order and with its config, so the book and the command read and fill the same experiment
    cache (``ROBUSTNB_CACHE``) and give the same table at the same preset and seed."""
    cfg = FrequencyConfig.from_preset(run.preset)
    models = load_models(cfg, run)
    x, y = cifar_images(cfg, run)
    res = study(cfg, models, x, y)
    return claims(res)
