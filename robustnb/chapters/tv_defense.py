"""Chapter ``book/tv_defense.ipynb``: the disentangled, object-aware TV defense against entropy attacks.

The defenses themselves are :mod:`robustnb.defenses` (the TV solver :func:`robustnb.signal.tv_denoise`), the
attacks :mod:`robustnb.attacks.entropy` and :mod:`robustnb.attacks.adaptive`. This module holds the chapter's
config, its experiments (tidy frames), the paper comparison, the verdict and the explorer.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from robustnb import data, plots, widgets
from robustnb.attacks import adaptive_entropy_attack, entropy_attack
from robustnb.config import pick
from robustnb.corruptions import corrupt
from robustnb.defenses import (DEFENSES, DefenseSettings, apply, grad_cam, likelihood_mask, make_defense,
                               mask_agreement, model_bit_map)
from robustnb.split import ENTROPY_MODELS, LAMBDAS, load_split_models, rate
from robustnb.train import accuracy, predict


# ------------------------------------------------------------------------------------------ the study
@dataclass(frozen=True)
class DefenseConfig:
    """Sizes of the defense chapter. The split models are those of the entropy-attack chapters (same
    ``robustnb.split.load_split_models`` calls, from the model cache) at one lambda."""

    arch: str
    entropy_models: tuple[str, ...]
    lam: float
    n_images: int
    eps_255: tuple[float, ...]
    attack_steps: int
    attack_draws: int
    corruption: str
    severity: int
    lambda_tv_grid: tuple[float, ...]
    settings: DefenseSettings = DefenseSettings()

    @classmethod
    def from_preset(cls, preset: str, seed: int = 0) -> "DefenseConfig":
        return cls(
            arch=pick(preset, smoke="vgg", cpu="resnet", full="resnet"),
            entropy_models=ENTROPY_MODELS,
            lam=pick(preset, smoke=min(LAMBDAS), cpu=LAMBDAS[1], full=LAMBDAS[1]),
            n_images=pick(preset, smoke=4, cpu=64, full=1000),
            eps_255=pick(preset, smoke=(8.0,), cpu=(2.0, 8.0), full=(2.0, 8.0)),
            attack_steps=pick(preset, smoke=1, cpu=10, full=20),
            attack_draws=pick(preset, smoke=1, cpu=2, full=16),
            corruption="shot_noise",
            severity=3,
            lambda_tv_grid=pick(preset, smoke=(0.0, 0.05), cpu=(0.0, 0.01, 0.02, 0.05, 0.1, 0.2),
                                full=(0.0, 0.01, 0.02, 0.05, 0.1, 0.2)),
            settings=DefenseSettings(n_iter=pick(preset, smoke=10, cpu=50, full=100)),
        )


def load_models(cfg: DefenseConfig, run) -> dict:
    """``{entropy_model: SplitModel}`` at ``cfg.lam`` from the model cache."""
    models = load_split_models((cfg.arch,), cfg.entropy_models, (cfg.lam,), run)
    return {em: m for (_, em, _), m in models.items()}


def defenses_for(model, cfg: DefenseConfig) -> dict:
    """Every registered defense with the chapter's settings (the disentangled one uses ``model``'s bit map)."""
    return {n: make_defense(n, model_bit_map(model), cfg.settings) for n in DEFENSES}


def _metrics(model, x, y) -> dict:
    return {"bytes": float(rate.real_bytes(model, x).mean()), "accuracy": accuracy(model, (x, y))}


def _attack(model, x, eps_255, cfg: DefenseConfig, defense=None, mode="auto"):
    if defense is None:
        return entropy_attack(model, x, eps_255 / 255, cfg.attack_steps, cfg.attack_draws)
    return adaptive_entropy_attack(model, defense, x, eps_255 / 255, cfg.attack_steps, cfg.attack_draws, mode=mode)


def cifar_images(cfg: DefenseConfig, run):
    """``(x, y)``: the chapter's test images (``data.cifar10_test_images``)."""
    return data.cifar10_test_images(cfg.n_images, run.seed)


def evaluate(cfg: DefenseConfig, models: dict, x: torch.Tensor, y: torch.Tensor):
    """The chapter's table: for each entropy model, defense and input (clean, corrupted, entropy-attacked
    at each epsilon, adaptive-attacked), the real bytes per image, the overhead vs the *undefended clean*
    bytes and the accuracy. Adaptive attacks unroll differentiable defenses and use BPDA for the others; the
    disentangled defense is also attacked with BPDA (``input = "adaptive (BPDA)"``).
    Returns ``(frame, attacked)``: columns ``entropy_model, defense, input, eps_255, bytes, overhead,
    accuracy``; ``attacked[em]`` are the (non-adaptive) entropy-attacked images at the first epsilon.
    """
    rows, attacked = [], {}
    for em, model in models.items():
        defs = defenses_for(model, cfg)
        clean_bytes = _metrics(model, x, y)["bytes"]
        sets = [("clean", 0.0, x), (cfg.corruption, 0.0, corrupt(x, cfg.corruption, cfg.severity))]
        for eps in cfg.eps_255:
            sets.append(("attacked", eps, _attack(model, x, eps, cfg)))
        attacked[em] = next(xa for kind, _, xa in sets if kind == "attacked")
        for name, d in tqdm(defs.items(), desc=f"{em}: defenses", leave=False):
            own = list(sets)
            if name != "none":
                for eps in cfg.eps_255:
                    own.append(("adaptive", eps, _attack(model, x, eps, cfg, d)))
                    if name == "disentangled_tv":
                        own.append(("adaptive (BPDA)", eps, _attack(model, x, eps, cfg, d, mode="bpda")))
            else:
                own += [("adaptive", eps, xa) for (kind, eps, xa) in sets if kind == "attacked"]
            for kind, eps, xin in own:
                m = _metrics(model, apply(d, xin), y)
                rows.append({"entropy_model": em, "defense": name, "input": kind, "eps_255": eps, **m,
                             "overhead": m["bytes"] / clean_bytes - 1})
    return pd.DataFrame(rows), attacked


def overhead_table(df: pd.DataFrame, eps_255: float) -> pd.DataFrame:
    """Wide table: one row per (entropy model, defense); overhead % and accuracy % per input at ``eps_255``."""
    d = df[(df["eps_255"] == 0) | (df["eps_255"] == eps_255)].copy()
    d["overhead %"] = (100 * d["overhead"]).round(1)
    d["accuracy %"] = (100 * d["accuracy"]).round(1)
    w = d.pivot_table(index=["entropy_model", "defense"], columns="input", values=["overhead %", "accuracy %"],
                      sort=False)
    w.columns = [f"{inp}: {m}" for m, inp in w.columns]
    return w.reset_index()


def lambda_tv_sweep(cfg: DefenseConfig, models: dict, x, y, attacked: dict) -> pd.DataFrame:
    """Rate/accuracy trade-off of the disentangled defense over ``cfg.lambda_tv_grid`` on clean and attacked
    inputs (``attacked[em]`` = entropy-attacked ``x``). Columns: ``entropy_model, lambda_tv, input, bytes,
    overhead, accuracy``."""
    rows = []
    for em, model in models.items():
        clean_bytes = _metrics(model, x, y)["bytes"]
        for lt in cfg.lambda_tv_grid:
            d = make_defense("disentangled_tv", model_bit_map(model), cfg.settings, lambda_tv=lt)
            for kind, xin in (("clean", x), ("attacked", attacked[em])):
                m = _metrics(model, apply(d, xin), y)
                rows.append({"entropy_model": em, "lambda_tv": lt, "input": kind, **m,
                             "overhead": m["bytes"] / clean_bytes - 1})
    return pd.DataFrame(rows)


def mask_comparison(models: dict, x: torch.Tensor, settings: DefenseSettings = DefenseSettings()) -> pd.DataFrame:
    """Likelihood mask vs Grad-CAM per image and entropy model (rank correlation, top-half IoU)."""
    out = []
    for em, model in models.items():
        lm = likelihood_mask(model_bit_map(model), x, settings.cutoff, settings.mask_source)
        out.append(mask_agreement(lm, grad_cam(model, x)).assign(entropy_model=em))
    return pd.concat(out, ignore_index=True)


def parts_stack(model, x: torch.Tensor, settings: DefenseSettings = DefenseSettings()):
    """Images for ``plots.image_grid``: per input image, input | low | high (x4 around grey) | mask |
    Grad-CAM | defended. Returns ``(images (6N, 3, H, W), titles)``."""
    d = make_defense("disentangled_tv", model_bit_map(model), settings)
    with torch.no_grad():
        p = d.forward_parts(x)
    cam = grad_cam(model, x)
    rows, titles = [], []
    for i in range(len(x)):
        rows += [x[i], p["low"][i].clamp(0, 1), (0.5 + 4 * p["high"][i]).clamp(0, 1), p["mask"][i].expand(3, -1, -1),
                 cam[i].expand(3, -1, -1), p["output"][i]]
        titles += ["input", "low frequencies", "high residual x4", "likelihood mask", "Grad-CAM", "defended"]
    return torch.stack(rows), titles


#: the paper's headline (mean-scale hyperprior on ImageNet, epsilon 2/255): KB per image
PAPER = {"clean_kb": 9.62, "attacked_kb": 12.35, "defended_kb": 8.76, "accuracy_cost_points": 2.0}


def paper_comparison(df: pd.DataFrame, eps_255: float, entropy_model: str = "hyperprior") -> pd.DataFrame:
    """The paper's headline next to ours (overheads vs undefended clean data; accuracy in %)."""
    d = df[(df["entropy_model"] == entropy_model)]

    def get(defense, inp, col, eps=eps_255):
        r = d[(d["defense"] == defense) & (d["input"] == inp) & ((d["eps_255"] == eps) | (inp == "clean"))]
        return float(r[col].iloc[0]) if len(r) else float("nan")

    clean_acc = get("none", "clean", "accuracy")
    p = PAPER
    rows = [
        {"quantity": "attacked, no defense: rate vs clean", "paper": f"{p['attacked_kb'] / p['clean_kb'] - 1:+.1%}",
         "ours": f"{get('none', 'attacked', 'overhead'):+.1%}"},
        {"quantity": "attacked, disentangled TV: rate vs clean", "paper": f"{p['defended_kb'] / p['clean_kb'] - 1:+.1%}",
         "ours": f"{get('disentangled_tv', 'attacked', 'overhead'):+.1%}"},
        {"quantity": "adaptive attack, disentangled TV: rate vs clean", "paper": "not reported",
         "ours": f"{max(get('disentangled_tv', 'adaptive', 'overhead'), get('disentangled_tv', 'adaptive (BPDA)', 'overhead')):+.1%}"},
        {"quantity": "clean accuracy cost of the defense (points)", "paper": f"about -{p['accuracy_cost_points']:g}",
         "ours": f"{100 * (get('disentangled_tv', 'clean', 'accuracy') - clean_acc):+.1f}"},
        {"quantity": "attacked accuracy, disentangled TV vs clean undefended (points)", "paper": f"about -{p['accuracy_cost_points']:g}",
         "ours": f"{100 * (get('disentangled_tv', 'attacked', 'accuracy') - clean_acc):+.1f}"},
    ]
    return pd.DataFrame(rows).assign(entropy_model=entropy_model, eps_255=eps_255)


def verdict(df: pd.DataFrame) -> list[str]:
    """Plain sentences computed from the measured table (nothing hard-coded): per entropy model and epsilon,
    the overhead the attack reaches with and without the disentangled defense, against an adaptive attacker,
    and which defense leaves the smallest adaptive overhead."""
    out = []
    for (em, eps), g in df[df["eps_255"] > 0].groupby(["entropy_model", "eps_255"], sort=False):
        def ov(defense, inp):
            r = g[(g["defense"] == defense) & (g["input"] == inp)]["overhead"]
            return float(r.max()) if len(r) else float("nan")

        adapt = g[g["input"].str.startswith("adaptive")].groupby("defense")["overhead"].max()
        best = adapt.idxmin()
        dis_adapt = max(ov("disentangled_tv", "adaptive"), ov("disentangled_tv", "adaptive (BPDA)"))
        out.append(
            f"{em}, eps {eps:g}/255: the entropy attack adds {ov('none', 'attacked'):+.1%} bytes; with the disentangled "
            f"TV defense the attacked input costs {ov('disentangled_tv', 'attacked'):+.1%} vs clean, and "
            f"{dis_adapt:+.1%} against the adaptive attacker (worst of unrolled and BPDA). "
            f"Smallest worst-case adaptive overhead: {best} ({adapt[best]:+.1%}).")
    return out


def explore(models: dict, x: torch.Tensor, y: torch.Tensor, attacked: dict, cfg: DefenseConfig, n_images: int = 4):
    """Live explorer: entropy model, input (clean / attacked) and lambda_TV; shows the defended images with
    their real bytes and predictions."""
    def show(entropy_model, inp, lambda_tv):
        m = models[entropy_model]
        xin = (x if inp == "clean" else attacked[entropy_model])[:n_images]
        d = make_defense("disentangled_tv", model_bit_map(m), cfg.settings, lambda_tv=lambda_tv)
        xd = apply(d, xin)
        b0, b1 = rate.real_bytes(m, x[:n_images]), rate.real_bytes(m, xd)
        pred = predict(m, xd).argmax(1)
        titles = [f"{int(a)} B{'' if p == t else ' (wrong)'}" for a, p, t in zip(b1.tolist(), pred.tolist(), y[:n_images].tolist())]
        return plots.image_grid(torch.cat([xin, xd]), titles=[f"input ({int(a)} B clean)" for a in b0.tolist()] + titles,
                                cols=n_images, title=f"{entropy_model}, {inp}, lambda_TV={lambda_tv:g}: "
                                f"{float(b1.mean() / b0.mean() - 1):+.1%} bytes vs clean")

    return widgets.explorer(show, entropy_model=widgets.choice(list(models), "entropy model"),
                            inp=widgets.choice(["clean", "attacked"], "input"),
                            lambda_tv=widgets.lambda_slider(cfg.lambda_tv_grid, "lambda_TV",
                                                            value=cfg.settings.lambda_tv if cfg.settings.lambda_tv in cfg.lambda_tv_grid else None))
