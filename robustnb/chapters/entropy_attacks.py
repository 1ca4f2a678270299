"""Chapter ``book/entropy_attacks.ipynb``: entropy attacks inflate the bitrate; corruptions shift it.

* :func:`attack_grid` the entropy attack (:mod:`robustnb.attacks.entropy`; and its stealthy variant) over the
  epsilon grid, and an ordinary accuracy attack (torchattacks PGD) for comparison: real bytes before/after,
  overhead %, accuracy;
* :func:`corruption_effects` natural corruptions (:mod:`robustnb.corruptions`) and their effect on rate/accuracy;
* :func:`explore` a live widget: an image, its entropy-attack perturbation and its bit-allocation map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from tqdm.auto import tqdm

from robustnb import attacks, corruptions, data, plots, widgets
from robustnb.attacks import entropy_attack
from robustnb.config import Run, pick
from robustnb.split import load_split_models, model_grid, rate
from robustnb.train import accuracy

CORRUPTIONS_STUDIED = ("fog", "snow", "brightness", "motion_blur", "defocus_blur", "gaussian_noise",
                       "shot_noise", "jpeg")


@dataclass(frozen=True)
class EntropyAttacksConfig:
    archs: tuple[str, ...]
    entropy_models: tuple[str, ...]
    lambdas: tuple[float, ...]
    n_test: int
    n_attack: int
    eps_255: tuple[float, ...]
    steps: int
    draws: int
    pgd_eps_255: tuple[float, ...]
    stealthy_eps_255: tuple[float, ...]
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]

    @classmethod
    def from_preset(cls, preset: str, seed: int = 0) -> "EntropyAttacksConfig":
        archs, entropy_models, lambdas = model_grid(preset)
        return cls(
            archs=archs,
            entropy_models=entropy_models,
            lambdas=lambdas,
            n_test=pick(preset, smoke=32, cpu=1000, full=10_000),
            n_attack=pick(preset, smoke=4, cpu=32, full=1000),
            eps_255=pick(preset, smoke=(0, 8), cpu=(0, 2, 4, 8, 16, 32), full=(0, 2, 4, 8, 16, 32)),
            steps=pick(preset, smoke=2, cpu=10, full=20),
            draws=pick(preset, smoke=1, cpu=2, full=16),
            pgd_eps_255=pick(preset, smoke=(8,), cpu=(8, 16), full=(2, 4, 8, 16, 32)),
            stealthy_eps_255=pick(preset, smoke=(8,), cpu=(8,), full=(8, 16)),
            corruptions=pick(preset, smoke=("shot_noise", "defocus_blur"), cpu=CORRUPTIONS_STUDIED,
                             full=CORRUPTIONS_STUDIED),
            severities=pick(preset, smoke=(3,), cpu=(1, 3, 5), full=(1, 2, 3, 4, 5)),
        )


def load_test(cfg: EntropyAttacksConfig, seed: int = 0) -> data.ImageDataset:
    return data.load_cifar10("test").subset(cfg.n_test, seed)


def load_models(cfg: EntropyAttacksConfig, run: Run) -> dict:
    """``{(arch, entropy_model, lambda): SplitModel}``: trained on first use, then from the model cache."""
    return load_split_models(cfg.archs, cfg.entropy_models, cfg.lambdas, run)


def _key_cols(key) -> dict:
    arch, em, lam = key
    return {"arch": arch, "entropy_model": em, "lambda": lam}


def _attack_row(key, m, attack, eps_255, x, y, x_adv, clean_bytes, clean_acc) -> dict:
    adv_bytes = float(rate.real_bytes(m, x_adv).mean())
    return {**_key_cols(key), "attack": attack, "eps_255": float(eps_255), "real_bytes_clean": clean_bytes,
            "real_bytes_adv": adv_bytes, "overhead_pct": 100 * (adv_bytes / clean_bytes - 1),
            "est_bytes_adv": float((rate.estimated_bits(m, x_adv) / 8).mean()),
            "acc_clean": clean_acc, "acc_adv": accuracy(m, (x_adv, y)),
            "linf": float((x_adv - x).abs().max())}


def attack_grid(cfg: EntropyAttacksConfig, models: dict, test_set) -> pd.DataFrame:
    """Entropy attack over the epsilon grid (plus stealthy variant and PGD) for every model; one row each.

    ``overhead_pct = 100 * (real_bytes_adv / real_bytes_clean - 1)`` on the same images.
    """
    x, y = test_set.tensors(cfg.n_attack)
    rows = []
    for key, m in tqdm(models.items(), desc="attacks", leave=False):
        clean_bytes = float(rate.real_bytes(m, x).mean())
        clean_acc = accuracy(m, (x, y))
        for eps in cfg.eps_255:
            adv = x if eps == 0 else entropy_attack(m, x, eps / 255, cfg.steps, cfg.draws)
            rows.append(_attack_row(key, m, "entropy", eps, x, y, adv, clean_bytes, clean_acc))
        for eps in cfg.stealthy_eps_255:
            adv = entropy_attack(m, x, eps / 255, cfg.steps, cfg.draws, keep_label=True)
            rows.append(_attack_row(key, m, "entropy (keep label)", eps, x, y, adv, clean_bytes, clean_acc))
        for eps in cfg.pgd_eps_255:
            adv = attacks.make_attack("pgd", m.logits_model(), eps / 255, steps=cfg.steps)(x, y)
            rows.append(_attack_row(key, m, "PGD (accuracy)", eps, x, y, adv, clean_bytes, clean_acc))
    return pd.DataFrame(rows)


def overhead_table(grid: pd.DataFrame, eps_255: float = 8) -> pd.DataFrame:
    """The headline table at one epsilon: overhead and accuracy before/after, per model and attack."""
    t = grid[grid["eps_255"] == eps_255]
    cols = ["arch", "entropy_model", "lambda", "attack", "real_bytes_clean", "real_bytes_adv", "overhead_pct",
            "acc_clean", "acc_adv"]
    return t[cols].sort_values(["arch", "entropy_model", "lambda", "attack"]).reset_index(drop=True)


def monotonicity(grid: pd.DataFrame) -> pd.DataFrame:
    """Per model: does the entropy attack's real rate grow with epsilon (non-decreasing)?"""
    e = grid[grid["attack"] == "entropy"].sort_values("eps_255")
    out = (e.groupby(["arch", "entropy_model", "lambda"], sort=False)["real_bytes_adv"]
           .apply(lambda s: bool(np.all(np.diff(s.to_numpy()) >= 0))).rename("monotone").reset_index())
    return out


def corruption_effects(cfg: EntropyAttacksConfig, models: dict, test_set) -> pd.DataFrame:
    """Natural corruptions x severities: real bytes, overhead % and accuracy per model."""
    x, y = test_set.tensors(min(cfg.n_test, 4 * cfg.n_attack))
    rows = []
    for key, m in tqdm(models.items(), desc="corruptions", leave=False):
        clean_bytes = float(rate.real_bytes(m, x).mean())
        clean_acc = accuracy(m, (x, y))
        for name, sev, xc in corruptions.corruption_grid(x, cfg.corruptions, cfg.severities):
            b = float(rate.real_bytes(m, xc).mean())
            rows.append({**_key_cols(key), "corruption": name, "severity": sev, "real_bytes_clean": clean_bytes,
                         "real_bytes": b, "overhead_pct": 100 * (b / clean_bytes - 1), "acc_clean": clean_acc,
                         "accuracy": accuracy(m, (xc, y))})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- explorer
def attack_view(model, x: torch.Tensor, eps_255: float, steps: int, draws: int, title: str = "") -> go.Figure:
    """One image: adversarial image, perturbation (x4 around grey), clean and adversarial bit maps."""
    x = x[:1]
    adv = x if eps_255 == 0 else entropy_attack(model, x, eps_255 / 255, steps, draws)
    b0, b1 = float(rate.real_bytes(model, x)[0]), float(rate.real_bytes(model, adv)[0])
    maps = torch.cat([rate.bit_map(model, x), rate.bit_map(model, adv)])
    return plots.attack_panel(x[0], adv[0], maps, b0, b1, title=f"{title} epsilon {eps_255:g}/255: {b0:.0f} -> "
                              f"{b1:.0f} bytes ({100 * (b1 / b0 - 1):+.1f} %)")


def explore(cfg: EntropyAttacksConfig, models: dict, test_set, index: int = 0):
    """Live explorer: epsilon, lambda and entropy-model controls over one test image (needs a kernel)."""
    x, _ = test_set.tensors(index + 1)
    arch = cfg.archs[0]

    def show(epsilon, lam, entropy_model):
        m = models[(arch, entropy_model, lam)]
        return attack_view(m, x[index:index + 1], round(epsilon * 255, 3), cfg.steps, cfg.draws,
                           title=f"{arch} / {entropy_model} / lambda {lam:g}:")

    return widgets.explorer(show, epsilon=widgets.epsilon_slider(cfg.eps_255, value=8 if 8 in cfg.eps_255 else None),
                            lam=widgets.lambda_slider(cfg.lambdas),
                            entropy_model=widgets.choice(list(cfg.entropy_models), "entropy model"))
