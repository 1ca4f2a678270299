"""Chapter ``book/split_computing.ipynb``: split models with a learned entropy model, and their real bitrate.

* :func:`tradeoff` accuracy and real bytes per image for every trained ``(arch, entropy model, lambda)``;
* :func:`rate_agreement` estimated vs real rate and decompress-vs-forward agreement
  (:func:`robustnb.split.rate.rate_agreement`);
* :func:`per_image_rates` the two rates per image, and :func:`bit_map_view` one image's bit allocation;
* :func:`image_rates` per image and per model: real and estimated bytes, streams, 0/1 correctness (what the
  claims resample), and :func:`claims` the chapter's verdicts on :data:`PAPER_CLAIMS` with 95% intervals
  (set-up checks, not counted), and :func:`world_claims` the same claims on constructed worlds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from robustnb import data, plots, stats
from robustnb.cache import experiment
from robustnb.config import Run, pick
from robustnb.progress import tqdm
from robustnb.split import key_columns, load_split_models, model_grid, rate

CHAPTER = "split_computing"
STREAM_MARGIN_BYTES = 8.0  # "a small constant": at most 8 bytes per stream (rANS flush + 32-bit word padding)

# The one place where this chapter types the paper's figures (Zhang, Abdi, Rifat, Restuccia, *Resilience of
# Entropy Model in Distributed Neural Networks*): the paper's set-up, not its attack (next chapter). Every row is a
# set-up check (role "setup"): it says the split models and the coder work as the method describes, and is not
# evidence about the paper's findings, so the ledger does not count it.
_LAMBDA_WHY = ("true by the training objective: CE + lambda * rate puts more weight on the rate as lambda grows, "
               "so a larger lambda sending fewer bytes says the training worked, not that the paper is right")
_STREAM_WHY = ("the coder working: an rANS coder writes the entropy model's estimate plus a flush and word "
               "padding per stream, so this checks the book's coder, not a finding of the paper")
_NAMES = {"factorized": ("Factorized prior", "Factorized prior"), "hyperprior": ("Mean-scale hyperprior", "Hyperprior")}


def _lambda_claim(em: str) -> stats.PaperClaim:
    return stats.PaperClaim(
        claim=f"{_NAMES[em][0]}: a larger lambda buys fewer bytes on the wire (set-up check)",
        paper="rate falls as lambda grows (the CE + lambda * rate trade-off)", source="method: training objective",
        measure="real bytes per image, largest vs smallest lambda, paired over images (ratio - 1)", form="decrease",
        role="setup", why=_LAMBDA_WHY, worlds=(-0.4, 0.2))


def _stream_claim(em: str) -> stats.PaperClaim:
    return stats.PaperClaim(
        claim=f"{_NAMES[em][1]}: real bytes = the entropy model's estimate plus a small constant per stream "
              "(set-up check)",
        paper="rates reported as coded bytes (a clean rate of 9.62 KB per image: not in our summary)",
        source="experiments: set-up",
        measure="(real - estimated bytes) per stream, smallest lambda, mean over images; 'small' = within 8 bytes "
                "(the book's bound)",
        form="no_change", margin=STREAM_MARGIN_BYTES, unit=" bytes", scale=1.0, role="setup", why=_STREAM_WHY,
        worlds=(4.0, 20.0))


PAPER_CLAIMS: dict[str, stats.PaperClaim] = {
    **{f"sc_lambda_rate_{em}": _lambda_claim(em) for em in _NAMES},
    "sc_hyperprior_fewer_bytes": stats.PaperClaim(
        claim="The hyperprior sends fewer bytes than the factorized prior at the same lambda (set-up check)",
        paper="the hyperprior's image-adaptive density is the stronger entropy model", source="method: entropy models",
        measure="real bytes per image averaged over the lambda grid, hyperprior vs factorized, paired over images "
                "(ratio - 1)", form="decrease", role="setup",
        why="what the stronger entropy model is trained to do (both minimise the same rate term): a check that "
            "both entropy models trained, not one of the paper's findings",
        worlds=(-0.3, 0.2)),
    **{f"sc_stream_constant_{em}": _stream_claim(em) for em in _NAMES},
}
# Numbers the prose may type: the paper's figures and the book's fixed settings.
QUOTED_NUMBERS = ("9.62 KB", "5 %", "8 bytes", "95%")
#: replicates (test images) with which every claim must read "inconclusive at this size": fewer than
#: ``stats.MIN_ITEMS``, the fewest images a bootstrap over images decides anything on
TOO_FEW = 10


@dataclass(frozen=True)
class SplitComputingConfig:
    archs: tuple[str, ...]
    entropy_models: tuple[str, ...]
    lambdas: tuple[float, ...]
    n_test: int

    @classmethod
    def from_preset(cls, preset: str) -> "SplitComputingConfig":
        archs, entropy_models, lambdas = model_grid(preset)
        return cls(archs=archs, entropy_models=entropy_models, lambdas=lambdas,
                   n_test=pick(preset, smoke=32, cpu=1000, full=10_000))


def load_test(cfg: SplitComputingConfig, seed: int = 0) -> data.ImageDataset:
    return data.load_cifar10("test").subset(cfg.n_test, seed)


def load_models(cfg: SplitComputingConfig, run: Run) -> dict:
    """``{(arch, entropy_model, lambda): SplitModel}``: trained on first use, then from the model cache."""
    return load_split_models(cfg.archs, cfg.entropy_models, cfg.lambdas, run)


@experiment
def image_rates(cfg: SplitComputingConfig, models: dict, test_set) -> pd.DataFrame:
    """One row per (model, test image): real and estimated bytes, number of streams, 0/1 correctness.

    The same images for every model (``image`` is the index in the test subset), so models can be compared
    image by image (paired)."""
    x, y = test_set.tensors()
    frames = []
    for key, m in tqdm(models.items(), desc="rate/accuracy", leave=False):
        m.eval()
        # one forward pass, one compress and one decompress per image: rate, estimate, accuracy and decoding
        frames.append(rate.measure(m, x, y).assign(**key_columns(key),
                                                   train_seconds=m.robustnb_info.get("train_seconds", 0.0)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def tradeoff(cfg: SplitComputingConfig, models: dict, test_set, images: pd.DataFrame | None = None) -> pd.DataFrame:
    """Accuracy vs rate per model: real and estimated bytes per image, bits per pixel, test accuracy (the means
    of :func:`image_rates`, which is computed here unless given)."""
    if images is None:
        images = image_rates(cfg, models, test_set)
    h, w = test_set.image_shape[-2:]
    out = (images.groupby(["arch", "entropy_model", "lambda"], sort=False)
           .agg(accuracy=("correct", "mean"), real_bytes=("real_bytes", "mean"), est_bytes=("est_bytes", "mean"),
                train_seconds=("train_seconds", "first")).reset_index())
    out.insert(6, "bpp", out["real_bytes"] * 8 / (h * w))
    return out


def _select(images: pd.DataFrame, arch: str, em: str, lam: float | None = None) -> pd.DataFrame:
    t = images[(images["arch"] == arch) & (images["entropy_model"] == em)]
    if lam is not None:
        t = t[np.isclose(t["lambda"], lam)]
    return t.sort_values("image")


def claim_estimates(images: pd.DataFrame, arch: str | None = None) -> dict[str, stats.Estimate]:
    """The estimate behind every claim of :data:`PAPER_CLAIMS` (claim id -> :class:`~robustnb.stats.Estimate`),
    for one architecture (the first in ``images`` by default). A claim the grid cannot measure (one lambda
    only, one entropy model only) gets an all-NaN estimate, which reads "inconclusive at this size"."""
    arch = arch if arch is not None else images["arch"].iloc[0]
    lams = sorted(images.loc[images["arch"] == arch, "lambda"].unique())
    out = {}
    for em in ("factorized", "hyperprior"):
        lo = _select(images, arch, em, lams[0]) if lams else pd.DataFrame()
        hi = _select(images, arch, em, lams[-1]) if lams else pd.DataFrame()
        out[f"sc_lambda_rate_{em}"] = (stats.ratio_ci(lo["real_bytes"], hi["real_bytes"])
                                       if len(lams) > 1 and len(lo) and len(hi) else stats.unmeasured())
        out[f"sc_stream_constant_{em}"] = (stats.paired_diff_ci(lo["est_bytes"] / lo["streams"],
                                                                lo["real_bytes"] / lo["streams"])
                                           if len(lo) else stats.unmeasured())
    per_image = {em: _select(images, arch, em).groupby("image")["real_bytes"].mean() for em in ("factorized", "hyperprior")}
    fa, hp = per_image["factorized"], per_image["hyperprior"]
    out["sc_hyperprior_fewer_bytes"] = (stats.ratio_ci(fa.to_numpy(), hp.reindex(fa.index).to_numpy())
                                        if len(fa) and len(hp) == len(fa) else stats.unmeasured())
    return out


def claims(images: pd.DataFrame, arch: str | None = None) -> pd.DataFrame:
    """The chapter's claims table (columns :data:`robustnb.stats.CLAIM_COLUMNS`, one row per claim of
    :data:`PAPER_CLAIMS`), verdicts by :func:`robustnb.stats.verdict`."""
    return stats.claims_table(CHAPTER, PAPER_CLAIMS, claim_estimates(images, arch))


#: the baseline world of :func:`world_claims` (each set-up check's measured quantity, in its units): bytes fall by
#: 40% from the smallest to the largest lambda, the hyperprior sends 30% fewer bytes than the factorized prior,
#: and the coder adds 4 bytes per stream to the estimate
WORLD = {"sc_lambda_rate_factorized": -0.4, "sc_lambda_rate_hyperprior": -0.4, "sc_hyperprior_fewer_bytes": -0.3,
         "sc_stream_constant_factorized": 4.0, "sc_stream_constant_hyperprior": 4.0}


def world_claims(claim_id: str, truth: float, replicates: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The claims table (:func:`claims`) of a synthetic :func:`image_rates` frame at the ``cpu`` preset's shapes
    (its architectures, entropy models, lambda grid and ``n_test`` images; ``replicates`` images instead), in
    which claim ``claim_id``'s measured quantity has true value ``truth`` and the others their :data:`WORLD`
    value. Realistic noise: an image's bytes vary by about 30% from image to image (shared by the models, as
    image content is), each model's bytes by 10% more per image, the coder's constant by about 1.5 bytes per
    image, and correctness is 0/1 (70% accuracy)."""
    world = {**WORLD, claim_id: truth}
    cfg = SplitComputingConfig.from_preset("cpu")
    n = replicates or cfg.n_test
    rng = np.random.default_rng(seed)
    base = 300 * rng.lognormal(0, 0.3, n)
    rows = []
    for arch in cfg.archs:
        for em, streams in (("factorized", 1), ("hyperprior", 2)):
            f = 1 + world["sc_hyperprior_fewer_bytes"] if em == "hyperprior" else 1.0
            for k, lam in enumerate(cfg.lambdas):
                scale = (1 + world[f"sc_lambda_rate_{em}"]) ** (k / max(len(cfg.lambdas) - 1, 1))
                real = base * f * scale * rng.lognormal(-0.005, 0.1, n)
                gap = streams * world[f"sc_stream_constant_{em}"] + rng.normal(0, 1.5, n)
                rows.append(pd.DataFrame({"arch": arch, "entropy_model": em, "lambda": lam, "image": np.arange(n),
                                          "real_bytes": real, "est_bytes": real - gap, "streams": streams,
                                          "correct": (rng.random(n) < 0.7).astype(float), "train_seconds": 0.0}))
    return claims(pd.concat(rows, ignore_index=True))


def numbers(images: pd.DataFrame, agree: pd.DataFrame | None = None, arch: str | None = None) -> dict[str, str]:
    """Formatted numbers the prose inserts with glue (besides the claims): the accuracy change from the smallest
    to the largest lambda and the relative gap real/estimated - 1 per entropy model, and the decoding check."""
    arch = arch if arch is not None else images["arch"].iloc[0]
    lams = sorted(images.loc[images["arch"] == arch, "lambda"].unique())
    out = {"sc_n_images": f"{images['image'].nunique():,}", "sc_arch": str(arch),
           "sc_lambdas": ", ".join(f"{lam:g}" for lam in lams)}
    for em in ("factorized", "hyperprior"):
        lo, hi = _select(images, arch, em, lams[0]), _select(images, arch, em, lams[-1])
        acc = stats.paired_diff_ci(lo["correct"], hi["correct"]) if len(lams) > 1 and len(lo) else stats.unmeasured()
        out[f"sc_acc_change_{em}"] = acc.fmt(100, 1, " points", signed=True)
        out[f"sc_clean_acc_{em}"] = stats.mean_ci(lo["correct"]).fmt(100, 1, "%")
        out[f"sc_clean_bytes_{em}"] = stats.mean_ci(lo["real_bytes"]).fmt(1, 1, " bytes")
        out[f"sc_rel_gap_{em}"] = stats.ratio_ci(lo["est_bytes"], lo["real_bytes"]).fmt(100, 1, "%", signed=True)
        top = _select(images, arch, em, lams[-1])
        out[f"sc_rel_gap_top_{em}"] = stats.ratio_ci(top["est_bytes"], top["real_bytes"]).fmt(100, 1, "%", signed=True)
    if agree is not None and len(agree):
        out["sc_decode"] = (f"largest logit difference {agree['max_abs_logit_diff'].max():.2g}, lowest top-1 "
                            f"agreement {agree['top1_agreement'].min():.3f} over {len(agree)} models")
    return out


def rate_agreement(images: pd.DataFrame) -> pd.DataFrame:
    """Estimated vs real rate per model (:func:`robustnb.split.rate.agreement_table`), from :func:`image_rates`'
    rows: every image was coded and decoded once there."""
    return rate.agreement_table(images)


def per_image_rates(images: pd.DataFrame, key, n: int = 500) -> pd.DataFrame:
    """Per-image estimated and real bytes of one model on the first ``n`` test images (for the scatter of the
    two), from :func:`image_rates`' rows."""
    cols = key_columns(key)
    sel = images[(images["image"] < n) & np.logical_and.reduce([images[c] == v for c, v in cols.items()])]
    return sel[["est_bytes", "real_bytes", *cols]].reset_index(drop=True)


def bit_map_view(model, x: torch.Tensor, title: str = "") -> go.Figure:
    """One clean image and where its bits go (no attack: the entropy-attack chapter's panel adds one)."""
    x = x[:1]
    b = float(rate.real_bytes(model, x)[0])
    return plots.bit_panel(x[0], rate.bit_map(model, x)[0], b, title=f"{title} {b:.0f} bytes")


# ------------------------------------------------------------------------------------------ without Jupyter
def reproduce(run: Run) -> pd.DataFrame:
    """The chapter's claims table without Jupyter (:func:`claims`, columns
    :data:`robustnb.stats.CLAIM_COLUMNS`): the calls ``book/split_computing.ipynb`` makes on its way to it.

    ``python -m robustnb reproduce split_computing`` runs this (:mod:`robustnb.cli`). It makes the notebook's
    own calls, in its order and with its config, so the book and the command read and fill the same experiment
    cache (``ROBUSTNB_CACHE``) and give the same table at the same preset and seed."""
    cfg = SplitComputingConfig.from_preset(run.preset)
    test_set = load_test(cfg, run.seed)
    models = load_models(cfg, run)
    images = image_rates(cfg, models, test_set)
    return claims(images)
