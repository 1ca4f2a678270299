"""Chapter ``book/split_computing.ipynb``: split models with a learned entropy model, and their real bitrate.

* :func:`tradeoff` accuracy and real bytes per image for every trained ``(arch, entropy model, lambda)``;
* :func:`rate_agreement` estimated vs real rate and decompress-vs-forward agreement
  (:func:`robustnb.split.rate.rate_agreement`);
* :func:`per_image_rates` the two rates per image, and :func:`bit_map_view` one image's bit allocation.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import torch
from tqdm.auto import tqdm

from robustnb import data, plots
from robustnb.config import Run, pick
from robustnb.split import load_split_models, model_grid, rate
from robustnb.train import accuracy


@dataclass(frozen=True)
class SplitComputingConfig:
    archs: tuple[str, ...]
    entropy_models: tuple[str, ...]
    lambdas: tuple[float, ...]
    n_test: int

    @classmethod
    def from_preset(cls, preset: str, seed: int = 0) -> "SplitComputingConfig":
        archs, entropy_models, lambdas = model_grid(preset)
        return cls(archs=archs, entropy_models=entropy_models, lambdas=lambdas,
                   n_test=pick(preset, smoke=32, cpu=1000, full=10_000))


def load_test(cfg: SplitComputingConfig, seed: int = 0) -> data.ImageDataset:
    return data.load_cifar10("test").subset(cfg.n_test, seed)


def load_models(cfg: SplitComputingConfig, run: Run) -> dict:
    """``{(arch, entropy_model, lambda): SplitModel}``: trained on first use, then from the model cache."""
    return load_split_models(cfg.archs, cfg.entropy_models, cfg.lambdas, run)


def _key_cols(key) -> dict:
    arch, em, lam = key
    return {"arch": arch, "entropy_model": em, "lambda": lam}


def tradeoff(cfg: SplitComputingConfig, models: dict, test_set) -> pd.DataFrame:
    """Accuracy vs rate per model: real and estimated bytes per image, bits per pixel, test accuracy."""
    x, y = test_set.tensors()
    rows = []
    for key, m in tqdm(models.items(), desc="rate/accuracy", leave=False):
        real = rate.real_bytes(m, x)
        est = rate.estimated_bits(m, x) / 8
        rows.append({**_key_cols(key), "accuracy": accuracy(m, (x, y)), "real_bytes": float(real.mean()),
                     "est_bytes": float(est.mean()), "bpp": float(rate.bpp(real * 8, x.shape).mean()),
                     "train_seconds": m.robustnb_info.get("train_seconds", 0.0)})
    return pd.DataFrame(rows)


def rate_agreement(cfg: SplitComputingConfig, models: dict, test_set) -> pd.DataFrame:
    """Estimated vs real rate per model (see :func:`robustnb.split.rate.rate_agreement`)."""
    x, _ = test_set.tensors()
    return rate.rate_agreement(models, x)


def per_image_rates(models: dict, key, test_set, n: int = 500) -> pd.DataFrame:
    """Per-image estimated and real bytes for one model (for the scatter of the two)."""
    x, _ = test_set.tensors(n)
    m = models[key]
    return pd.DataFrame({"est_bytes": (rate.estimated_bits(m, x) / 8).numpy(),
                         "real_bytes": rate.real_bytes(m, x).numpy(), **_key_cols(key)})


def bit_map_view(model, x: torch.Tensor, title: str = "") -> go.Figure:
    """One clean image and where its bits go (the entropy-attack chapter's panel, with no attack)."""
    x = x[:1]
    b = float(rate.real_bytes(model, x)[0])
    maps = rate.bit_map(model, x).repeat(2, 1, 1)
    return plots.attack_panel(x[0], x[0], maps, b, b, title=f"{title} epsilon 0/255: {b:.0f} -> {b:.0f} bytes (+0.0 %)")
