"""Chapter ``book/frequency_analysis.ipynb``: which frequencies (and which pixels) cost the entropy model's bits?

The filters, spectra and masks are :mod:`robustnb.signal`; this module holds the chapter's experiments. They
take a ``rate_fn(x) -> (N,)`` bits (or ``(bits, logits)``; :func:`bits_and_logits`) and return tidy frames:

* :func:`spectra` (spectra of inputs and of perturbations), :func:`cutoff_sweep` (mean rate after low- and
  high-pass filtering), :func:`filter_rates` (the same, per image, at one cutoff), :func:`band_shares` (bits
  added by each frequency band, as a share of the full rate), :func:`bit_allocation` (object vs border bits,
  the border without the latent's outer ring that sees the zero padding, and the correlation of bits with local
  high-frequency energy, per image), :func:`perturbation_shares` (each perturbation's power above each cutoff);
* the null: random sign noise of the attack's size (:func:`robustnb.attacks.noise.sign_noise`) is an input set
  of its own, so every measurement of the attack has the same measurement of a perturbation no gradient chose
  beside it; :func:`hf_sensitivity` reads the attack's and the null's high-frequency shares at the three cutoffs
  :data:`SENSITIVITY_CUTOFFS`;
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
from robustnb.attacks.noise import sign_noise
from robustnb.cache import experiment
from robustnb.config import ConfigError, pick
from robustnb.mechanisms import make
from robustnb.progress import tqdm
from robustnb.signal import (F_MAX, center_mask, filtered, high_frequency_shares, local_energy, plane_share_above,
                             radial_frequency, radial_spectrum, ring_mask)
from robustnb.split import LAMBDAS, load_split_models, rate

CUTOFF = 0.25  #: the cutoff (cycles/pixel) of the claims' low- and high-pass filters
#: the cutoffs (cycles/pixel) of the sensitivity table (:func:`hf_sensitivity`): the claims' one and one on each side
#: (the share of the 32 x 32 frequency plane above them: about 93%, 81% and 61%)
SENSITIVITY_CUTOFFS = (0.15, CUTOFF, 0.35)
#: latent locations of the outer ring left out of the object/border comparison (their receptive fields reach into
#: the encoder's zero padding: a border that includes them compares the object with the padding as much as with the
#: image's background)
PADDING_RING = 1
NULL = "sign noise"  #: the name prefix of the null's input set (``"sign noise 8/255"``)

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
                   object_fraction: float = 0.5, cutoff: float = CUTOFF, ring: int = PADDING_RING) -> pd.DataFrame:
    """Where the bits go, per image: object (central box, :func:`center_mask`) vs border bits per latent
    location, and the rank correlation between the bit map and the local high-frequency energy.

    The border is the grid outside the central box *and* inside the outer ``ring`` locations
    (:func:`robustnb.signal.ring_mask`): the outer ring's receptive fields reach into the encoder's zero padding,
    so its bits measure the padding (a sharp edge against black) as much as the image's background.
    ``bit_map_fn(x) -> (N, h, w)`` bits per latent location (``rate.bit_map(model, x)``).
    Columns: ``condition, image, bits, object_bits_per_loc, background_bits_per_loc`` (the border without the
    ring), ``ring_bits_per_loc``, ``object_ratio`` (object over border without the ring, the claim's),
    ``object_ratio_with_ring`` (object over everything outside the box, ring included: the earlier reading),
    ``hf_corr``. A grid too small to keep a border inside the ring gives NaN ratios.
    """
    rows = []
    for name, x in inputs.items():
        with torch.no_grad():
            b = bit_map_fn(x).detach().float().cpu()
        h, w = b.shape[-2:]
        obj = center_mask(h, w, object_fraction)
        edge = ring_mask(h, w, ring) & ~obj
        border, outside = ~obj & ~edge, ~obj
        energy = local_energy(x.cpu(), (h, w), cutoff)
        for i in range(len(b)):
            ob = float(b[i][obj].mean())
            bg, rg, out = (float(b[i][m].mean()) if m.any() else float("nan") for m in (border, edge, outside))
            rows.append({"condition": name, "image": i, "bits": float(b[i].sum()),
                         "object_bits_per_loc": ob, "background_bits_per_loc": bg, "ring_bits_per_loc": rg,
                         "object_ratio": ob / bg if bg else float("nan"),
                         "object_ratio_with_ring": ob / out if out else float("nan"),
                         "hf_corr": _corr(b[i].flatten().numpy(), energy[i].flatten().numpy())})
    return pd.DataFrame(rows)


def perturbation_shares(inputs: Mapping[str, torch.Tensor], cutoffs=SENSITIVITY_CUTOFFS,
                        reference: str = "clean") -> pd.DataFrame:
    """Per image, the share of each perturbation's (mean-removed) power above each cutoff
    (:func:`robustnb.signal.high_frequency_shares` of ``x - inputs[reference]``), beside ``plane_share``: the share
    of the frequency plane above the cutoff, what white noise has there (:func:`robustnb.signal.plane_share_above`).
    Columns: ``condition, image, cutoff, power_share, plane_share``; one row per input set other than
    ``reference``, image and cutoff."""
    ref = inputs[reference]
    rows = []
    for name, x in inputs.items():
        if name == reference:
            continue
        shares = high_frequency_shares(x - ref, cutoffs).numpy()
        for k, c in enumerate(cutoffs):
            rows.append(pd.DataFrame({"condition": name, "image": np.arange(len(x)), "cutoff": float(c),
                                      "power_share": shares[:, k],
                                      "plane_share": plane_share_above(*x.shape[-2:], c)}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["condition", "image", "cutoff", "power_share", "plane_share"])


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
                f"the object proxy; the border without the latent's outer ring of {PADDING_RING} location, whose "
                "receptive fields see the encoder's zero padding); mean over clean images (averaged over models; "
                "bootstrap over images)",
        form="increase", worlds=(0.3, -0.2)),
    "fa_attack_bits_hf_vs_noise": stats.PaperClaim(
        claim="The attack's extra bits are more high-frequency than those of random sign noise of the same size",
        paper="qualitative: the attack works by injecting high-frequency content (no number). Judged against a "
              "null: the band above the cutoff covers most of the frequency plane, so any broadband perturbation "
              "looks 'mostly high-frequency'; the null is random sign noise at the attack's epsilon (EntropyR's "
              "own noise baseline), and 'more' = the difference above zero",
        source="Zhang et al., frequency analysis (figures); EntropyR experiment_adv.py (--attack noise)",
        measure=f"the removed share (the claim above, low-pass at {CUTOFF} cycles/pixel) of the attacked inputs "
                "minus that of sign noise at the same epsilon, on the same images (pooled over images and models, "
                "paired bootstrap); undefined, hence inconclusive, where the noise adds no bits",
        form="greater", worlds=(0.3, -0.1)),
    "fa_attack_power_hf_vs_noise": stats.PaperClaim(
        claim="The attack's perturbation puts more of its power at high frequencies than random sign noise",
        paper="qualitative: the attack works by injecting high-frequency content (no number). Random sign noise "
              "is white: its share above the cutoff is the share of the frequency plane there (about 80% above "
              "0.25), so only a perturbation above that favours high frequencies",
        source="Zhang et al., frequency analysis (figures); EntropyR experiment_adv.py (--attack noise)",
        measure=f"per image, the share of the attack's perturbation power above {CUTOFF} cycles/pixel minus that of "
                "sign noise at the same epsilon (averaged over models; paired bootstrap over images)",
        form="greater", worlds=(0.1, -0.2)),
}
#: the claims judged against the random sign-noise null (they need its input set; without it, inconclusive)
NULL_CLAIMS = ("fa_attack_bits_hf_vs_noise", "fa_attack_power_hf_vs_noise")

#: numbers the prose may type: the book's fixed settings (the papers give no numbers for these claims)
QUOTED_NUMBERS: tuple[str, ...] = (f"{CUTOFF:g}", "50%", "80%",  # the cutoff; "mostly" = above one half; power
                                   *(f"{c:g}" for c in SENSITIVITY_CUTOFFS))  # the sensitivity table's cutoffs
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


def null_condition(frame: pd.DataFrame) -> str | None:
    """The name of the sign-noise null's input set (``"sign noise <eps>/255"``), or None when the frame has none."""
    names = [c for c in frame["condition"].unique() if str(c).startswith(NULL)] if len(frame) else []
    if len(names) > 1:
        raise ValueError(f"expected at most one null condition, got {names}")
    return names[0] if names else None


def _pooled_removed(cb, clp, xb, xlp) -> float:
    """The pooled removed share of one input set (see :func:`removed_share`); NaN when it added no bits."""
    extra = float(np.mean(xb - cb))
    return float(np.mean((xb - xlp) - (cb - clp)) / extra) if extra > 0 else float("nan")


def removed_share_difference(per_image: pd.DataFrame, attacked: str | None = None, null: str | None = None,
                             clean: str = "clean", seed: int = 0) -> stats.Estimate:
    """The removed share (:func:`removed_share`) of ``attacked`` minus that of ``null`` (default: the sign-noise
    input set), on the same images, with a paired bootstrap over the images (all six per-image rates resampled
    together). NaN (inconclusive) when the null is missing or either input set added no bits on average."""
    attacked = attacked or attacked_condition(per_image)
    null = null or null_condition(per_image)
    if null is None:
        return stats.unmeasured()
    cols = ("bits", "bits_lowpass")
    c = _per_image(per_image, clean, cols)
    a, z = (_per_image(per_image, cond, cols).reindex(c.index) for cond in (attacked, null))

    def stat(cb, clp, ab, alp, nb, nlp):
        return _pooled_removed(cb, clp, ab, alp) - _pooled_removed(cb, clp, nb, nlp)

    samples = (c["bits"], c["bits_lowpass"], a["bits"], a["bits_lowpass"], z["bits"], z["bits_lowpass"])
    return stats.paired_stat_ci(tuple(v.to_numpy() for v in samples), stat, seed)


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
    ``spectra`` (:func:`spectra`), ``per_image`` (:func:`filter_rates` at :data:`CUTOFF`), ``per_cutoff``
    (:func:`filter_rates` at each of :data:`SENSITIVITY_CUTOFFS`, with a ``cutoff`` column), ``shares``
    (:func:`perturbation_shares`); ``inputs``: the images of each condition for the last model (clean,
    corrupted, attacked, the sign-noise null)."""
    per_image: pd.DataFrame = field(default_factory=pd.DataFrame)
    alloc: pd.DataFrame = field(default_factory=pd.DataFrame)
    sweep: pd.DataFrame = field(default_factory=pd.DataFrame)
    bands: pd.DataFrame = field(default_factory=pd.DataFrame)
    spectra: pd.DataFrame = field(default_factory=pd.DataFrame)
    per_cutoff: pd.DataFrame = field(default_factory=pd.DataFrame)
    shares: pd.DataFrame = field(default_factory=pd.DataFrame)
    inputs: dict = field(default_factory=dict)

    def of_model(self, model: str) -> "FrequencyStudy":
        """The frames restricted to one model (its ``model`` label)."""
        frames = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "inputs"}
        return FrequencyStudy(**{k: v[v["model"] == model] if "model" in v else v for k, v in frames.items()},
                              inputs=self.inputs)


def _power_shares(shares: pd.DataFrame, condition: str | None, cutoff: float) -> pd.Series:
    """Per image (averaged over the models), the share of ``condition``'s perturbation power above ``cutoff``."""
    if condition is None or not len(shares):
        return pd.Series(dtype=float)
    f = shares[np.isclose(shares["cutoff"], cutoff)]
    return _per_image(f, condition, ("power_share",))["power_share"]


def power_share_difference(shares: pd.DataFrame, attacked: str, null: str | None, cutoff: float = CUTOFF,
                           seed: int = 0) -> stats.Estimate:
    """Per image, the attack's perturbation power share above ``cutoff`` minus the null's (both averaged over the
    models), with a paired bootstrap over the images; NaN when either is missing."""
    a, z = _power_shares(shares, attacked, cutoff), _power_shares(shares, null, cutoff)
    if not len(a) or not len(z):
        return stats.unmeasured()
    z = z.reindex(a.index)
    return stats.paired_diff_ci(z.to_numpy(), a.to_numpy(), seed)


def claim_estimates(res: FrequencyStudy, seed: int = 0) -> dict[str, stats.Estimate]:
    """The estimate behind each claim of :data:`PAPER_CLAIMS`, from :func:`study`'s ``per_image``, ``alloc`` and
    ``shares`` frames (per image, averaged over the models present). The claims against the null
    (:data:`NULL_CLAIMS`) are inconclusive where the frames have no sign-noise input set."""
    pi, alloc = res.per_image, res.alloc
    clean = _per_image(pi, "clean", ("bits", "bits_lowpass", "bits_highpass"))
    drop_lp = 1 - clean["bits_lowpass"] / clean["bits"]
    drop_hp = 1 - clean["bits_highpass"] / clean["bits"]
    a = _per_image(alloc, "clean", ("hf_corr", "object_ratio"))
    attacked, null = attacked_condition(pi), null_condition(pi)
    return {
        "fa_attack_bits_high_frequency": removed_share(pi, seed=seed),
        "fa_clean_bits_high_frequency": stats.paired_diff_ci(drop_hp.to_numpy(), drop_lp.to_numpy(), seed),
        "fa_bits_follow_hf_energy": stats.mean_ci(a["hf_corr"].to_numpy(), seed),
        "fa_bits_on_object": stats.mean_ci(a["object_ratio"].to_numpy() - 1, seed),
        "fa_attack_bits_hf_vs_noise": removed_share_difference(pi, attacked, null, seed=seed),
        "fa_attack_power_hf_vs_noise": power_share_difference(res.shares, attacked, null, CUTOFF, seed),
    }


def hf_sensitivity(res: FrequencyStudy, seed: int = 0) -> pd.DataFrame:
    """The attack's high-frequency shares beside the null's at each cutoff of ``res.per_cutoff`` (the three
    :data:`SENSITIVITY_CUTOFFS`): one row per cutoff, quantity and input set, with 95% intervals over the images.

    Quantities: ``"extra bits removed"`` (the removed share of :func:`removed_share`, a low-pass at the cutoff)
    and ``"perturbation power above"`` (:func:`perturbation_shares`); input sets: the attack, the sign-noise null
    and ``"attack - null"`` (paired over the images). ``plane_share`` is the share of the frequency plane above the
    cutoff, what a white (broadband) perturbation puts there. Columns: ``cutoff, plane_share, quantity,
    condition, value, low, high, n, ours`` (``ours``: the value and interval in percent, formatted)."""
    pc, sh = res.per_cutoff, res.shares
    if not len(pc):
        return pd.DataFrame(columns=["cutoff", "plane_share", "quantity", "condition", "value", "low", "high", "n",
                                     "ours"])
    attacked, null = attacked_condition(pc), null_condition(pc)
    rows = []
    for c in sorted(pc["cutoff"].unique()):
        f = pc[np.isclose(pc["cutoff"], c)]
        plane = (float(sh.loc[np.isclose(sh["cutoff"], c), "plane_share"].iloc[0])
                 if len(sh) and np.isclose(sh["cutoff"], c).any() else float("nan"))
        a_pw, n_pw = _power_shares(sh, attacked, c), _power_shares(sh, null, c)
        ests = {("extra bits removed", attacked): removed_share(f, attacked, seed=seed),
                ("extra bits removed", null): removed_share(f, null, seed=seed) if null else stats.unmeasured(),
                ("extra bits removed", "attack - null"): removed_share_difference(f, attacked, null, seed=seed),
                ("perturbation power above", attacked): stats.mean_ci(a_pw.to_numpy(), seed),
                ("perturbation power above", null): stats.mean_ci(n_pw.to_numpy(), seed),
                ("perturbation power above", "attack - null"): power_share_difference(sh, attacked, null, c, seed)}
        for (quantity, cond), e in ests.items():
            if cond is None:
                continue
            rows.append({"cutoff": float(c), "plane_share": plane, "quantity": quantity, "condition": cond,
                         "value": e.value, "low": e.low, "high": e.high, "n": e.n,
                         "ours": e.fmt(signed=cond == "attack - null")})
    return pd.DataFrame(rows)


def claims(res: FrequencyStudy, seed: int = 0) -> pd.DataFrame:
    """The paper-vs-ours table: one row per claim of :data:`PAPER_CLAIMS` (columns
    :data:`robustnb.stats.CLAIM_COLUMNS`), verdicts by :func:`robustnb.stats.verdict` on 95% intervals over
    the test images (see each claim's ``measure``). The attack claim ("mostly") is a lower bound: the removed
    share's interval must lie above :data:`MOSTLY`."""
    return stats.claims_table(CHAPTER, PAPER_CLAIMS, claim_estimates(res, seed))


#: the paper's world of :func:`world_claims`: each claim's measured quantity (removed share, clean high- minus
#: low-frequency rate loss, bits-vs-energy correlation, object ratio - 1)
#: and, against the sign-noise null, the attack's removed share minus the null's and the attack's perturbation power
#: share above the cutoff minus the null's (white: the plane's share)
WORLD = {"fa_attack_bits_high_frequency": 0.85, "fa_clean_bits_high_frequency": 0.3, "fa_bits_follow_hf_energy": 0.3,
         "fa_bits_on_object": 0.3, "fa_attack_bits_hf_vs_noise": 0.3, "fa_attack_power_hf_vs_noise": 0.1}


def world_claims(claim_id: str, truth: float, replicates: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The claims table (:func:`claims`) of a synthetic :class:`FrequencyStudy` (its ``per_image``, ``alloc`` and
    ``shares`` frames) at the ``cpu`` preset's shapes (every entropy model x lambda of :class:`FrequencyConfig`, its
    ``n_images`` test images; ``replicates`` images instead), in which claim ``claim_id``'s measured quantity has
    true value ``truth`` and the others their :data:`WORLD` value. Realistic noise: clean bits vary by about 30%
    from image to image and 10% more per model, the attack adds 50% with 30% spread, and every per-image effect
    has a shared per-image part (sd 0.15), a per-model offset (sd 0.05, centred) and per-model noise (sd 0.1). The
    sign-noise null adds 20% with 30% spread, of which a low-pass removes the attack's share minus the claimed
    difference; its perturbation puts the plane's share of its power above each cutoff (sd 0.01 per image), the
    attack's that plus the claimed difference."""
    world = {**WORLD, claim_id: truth}
    cfg = FrequencyConfig.from_preset("cpu")
    n = replicates or cfg.n_images
    rng = np.random.default_rng(seed)
    models = [(em, lam) for em in cfg.entropy_models for lam in cfg.lambdas]
    offsets = {cid: (lambda o: o - o.mean())(rng.normal(0, 0.05, len(models))) for cid in world}
    shared = {cid: rng.normal(0, 0.15, n) for cid in world}
    image = rng.lognormal(0, 0.3, n)
    attacked, null = f"attacked {cfg.eps_255:g}/255", f"{NULL} {cfg.eps_255:g}/255"
    per_image, alloc, shares = [], [], []
    for j, (em, lam) in enumerate(models):
        def effect(cid, sd=0.1):
            return world[cid] + offsets[cid][j] + shared[cid] + rng.normal(0, sd, n)

        tag = {"entropy_model": em, "lam": lam, "model": f"{em}, lambda={lam:g}"}
        clean = 2000 * 0.7 ** j * image * rng.lognormal(0, 0.1, n)
        d = effect("fa_clean_bits_high_frequency")
        lp, hp = clean * np.clip(0.55 - d / 2, 0.01, 0.99), clean * np.clip(0.55 + d / 2, 0.01, 0.99)
        extra = 0.5 * clean * rng.lognormal(-0.045, 0.3, n)
        adv = clean + extra
        removed = effect("fa_attack_bits_high_frequency")
        adv_lp = adv - (clean - lp) - removed * extra
        null_extra = 0.2 * clean * rng.lognormal(-0.045, 0.3, n)
        noisy = clean + null_extra
        noisy_lp = noisy - (clean - lp) - (removed - effect("fa_attack_bits_hf_vs_noise")) * null_extra
        for cond, (b, blp, bhp) in {"clean": (clean, lp, hp), "shot_noise": (1.3 * clean, 1.3 * lp, 1.3 * hp),
                                    "defocus_blur": (0.7 * clean, 0.7 * lp, 0.7 * hp),
                                    attacked: (adv, adv_lp, adv - (clean - hp)),
                                    null: (noisy, noisy_lp, noisy - (clean - hp))}.items():
            per_image.append(pd.DataFrame({"condition": cond, "image": np.arange(n), "bits": b, "bits_lowpass": blp,
                                           "bits_highpass": bhp, **tag}))
        ratio = np.clip(1 + effect("fa_bits_on_object", 0.2), 0.05, None)
        alloc.append(pd.DataFrame({"condition": "clean", "image": np.arange(n), "bits": clean,
                                   "object_bits_per_loc": ratio, "background_bits_per_loc": 1.0, "object_ratio": ratio,
                                   "hf_corr": np.clip(effect("fa_bits_follow_hf_energy", 0.2), -1, 1), **tag}))
        gap = effect("fa_attack_power_hf_vs_noise")
        for c in cfg.sensitivity_cutoffs:
            plane = plane_share_above(32, 32, c)
            white = plane + rng.normal(0, 0.01, n)
            for cond, share in ((null, white), (attacked, white + gap)):
                shares.append(pd.DataFrame({"condition": cond, "image": np.arange(n), "cutoff": float(c),
                                            "power_share": share, "plane_share": plane, **tag}))
    return claims(FrequencyStudy(per_image=pd.concat(per_image, ignore_index=True),
                                 alloc=pd.concat(alloc, ignore_index=True),
                                 shares=pd.concat(shares, ignore_index=True)))


def claims_by_model(res: FrequencyStudy, seed: int = 0) -> pd.DataFrame:
    """:func:`claims` for each model alone (context: which models carry a pooled verdict). Columns
    ``model`` and :data:`robustnb.stats.CLAIM_COLUMNS`."""
    out = []
    for model, _ in res.per_image.groupby("model", sort=False):
        out.append(claims(res.of_model(model), seed).assign(model=model))
    df = pd.concat(out, ignore_index=True)
    return df[["model"] + list(stats.CLAIM_COLUMNS)]


def _pct_range(v: pd.Series) -> str:
    """``"6.4%"`` or ``"6.4% to 10.2%"`` (the range of ``v`` over models, in percent; "to", so that a negative
    end reads as one, "-1.7% to 3.9%", not "-1.7-3.9%")."""
    if v.empty:
        return "n/a"
    lo, hi = f"{100 * v.min():.1f}", f"{100 * v.max():.1f}"
    return f"{lo}%" if lo == hi else f"{lo}% to {hi}%"


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
    if "object_ratio_with_ring" in res.alloc:
        a = _per_image(res.alloc, "clean", ("object_ratio_with_ring",))
        out["fa_object_ratio_with_ring"] = stats.mean_ci(a["object_ratio_with_ring"].to_numpy() - 1, seed).fmt(
            signed=True)
    null = null_condition(pi)
    if null is not None:
        out.update(null_numbers(res, seed))
    return out


def _tag(cutoff: float) -> str:
    """``0.15 -> "15"``: a cutoff in a glue name."""
    return f"{round(100 * cutoff):02d}"


def sensitivity_lines(sens: pd.DataFrame) -> pd.DataFrame:
    """For a figure of :func:`hf_sensitivity`: the attack's and the null's shares per cutoff and quantity, and the
    frequency plane's share above each cutoff as a third line (``condition = "white (the plane's share)"``) beside
    the power shares. Columns ``cutoff, quantity, condition, value``."""
    cols = ["cutoff", "quantity", "condition", "value"]
    shown = sens[sens["condition"] != "attack - null"][cols]
    plane = (sens.drop_duplicates("cutoff")[["cutoff", "plane_share"]].rename(columns={"plane_share": "value"})
             .assign(quantity="perturbation power above", condition="white (the plane's share)"))
    return pd.concat([shown, plane[cols]], ignore_index=True)


def null_numbers(res: FrequencyStudy, seed: int = 0) -> dict[str, str]:
    """Formatted numbers on the sign-noise null for the prose: its name and rate overhead, its removed share, and
    per cutoff of :func:`hf_sensitivity` (``fa_<quantity>_<cutoff x 100>_<attack|null|diff>``, quantity
    ``removed`` or ``power``; ``fa_plane_<cutoff x 100>``: the share of the frequency plane above the cutoff)."""
    pi = res.per_image
    null = null_condition(pi)
    clean = _per_image(pi, "clean", ("bits",))
    other = _per_image(pi, null, ("bits",)).reindex(clean.index)
    out = {"fa_null": null,
           "fa_null_overhead": stats.ratio_ci(clean["bits"].to_numpy(), other["bits"].to_numpy(), seed).fmt(
               signed=True),
           "fa_null_removed": removed_share(pi, null, seed=seed).fmt()}
    attacked = attacked_condition(pi)
    who = {attacked: "attack", null: "null", "attack - null": "diff"}
    for r in hf_sensitivity(res, seed).itertuples():
        q = "removed" if r.quantity == "extra bits removed" else "power"
        out[f"fa_{q}_{_tag(r.cutoff)}_{who[r.condition]}"] = r.ours
        out[f"fa_plane_{_tag(r.cutoff)}"] = f"{100 * r.plane_share:.1f}%" if np.isfinite(r.plane_share) else "n/a"
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
    sensitivity_cutoffs: tuple[float, ...]
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
            sensitivity_cutoffs=SENSITIVITY_CUTOFFS,
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
    """Clean, corrupted (each of ``cfg.corruptions`` at ``cfg.severity``), entropy-attacked inputs and the null:
    random sign noise at the attack's epsilon (:func:`robustnb.attacks.noise.sign_noise`, the same noise for every
    model)."""
    out = {"clean": x}
    for c in cfg.corruptions:
        out[c] = make("corruption", c, severity=cfg.severity)(x)
    out[f"attacked {cfg.eps_255:g}/255"] = entropy_attack(model, x, cfg.eps_255 / 255, cfg.attack_steps,
                                                          cfg.attack_draws)
    out[f"{NULL} {cfg.eps_255:g}/255"] = sign_noise(x, cfg.eps_255 / 255)
    return out


@experiment
def measurements(cfg: FrequencyConfig, models: dict, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Every measurement of the chapter, for every model, as the fields of :class:`FrequencyStudy` (a dict: what
    the result cache stores); :func:`study` returns it typed."""
    sweeps, bands, allocs, specs, per_image, per_cutoff, shares = [], [], [], [], [], [], []
    inputs = {}
    for (em, lam), model in tqdm(models.items(), desc="models", leave=False):
        inputs = make_inputs(cfg, model, x)
        rate_fn = bits_and_logits(model)
        tag = {"entropy_model": em, "lam": lam, "model": f"{em}, lambda={lam:g}"}
        sweeps.append(cutoff_sweep(rate_fn, inputs, cfg.cutoffs, y).assign(**tag))
        bands.append(band_shares(rate_fn, inputs, cfg.band_edges).assign(**tag))
        per_image.append(filter_rates(rate_fn, inputs, CUTOFF).assign(**tag))
        per_cutoff += [(per_image[-1] if c == CUTOFF else filter_rates(rate_fn, inputs, c).assign(**tag))
                       .assign(cutoff=float(c)) for c in cfg.sensitivity_cutoffs]
        shares.append(perturbation_shares(inputs, cfg.sensitivity_cutoffs).assign(**tag))
        allocs.append(bit_allocation(lambda t, m=model: rate.bit_map(m, t), inputs).assign(**tag))
        specs.append(spectra(inputs).assign(**tag))
    return {"sweep": pd.concat(sweeps, ignore_index=True), "bands": pd.concat(bands, ignore_index=True),
            "alloc": pd.concat(allocs, ignore_index=True), "spectra": pd.concat(specs, ignore_index=True),
            "per_image": pd.concat(per_image, ignore_index=True),
            "per_cutoff": pd.concat(per_cutoff, ignore_index=True), "shares": pd.concat(shares, ignore_index=True),
            "inputs": inputs}


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
            f"{cfg.attack_steps} steps x {draws} draw{'s' if draws > 1 else ''}, and random sign noise at the same "
            f"epsilon as the null")


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
