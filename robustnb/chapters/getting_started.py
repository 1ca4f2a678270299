"""Chapter ``book/getting_started.ipynb``: a CIFAR-10 baseline classifier and its robustness to FGSM / PGD.

Everything the chapter shows comes from these functions: ``BaselineConfig.from_preset`` picks sizes,
``train_baseline`` trains (or loads from the model cache) the classifier, and the other functions turn
the model into tidy frames that ``robustnb.plots`` draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

import numpy as np

from robustnb import attacks, data, plots, stats, widgets
from robustnb.cache import experiment
from robustnb.config import Run, pick
from robustnb.mechanisms import make
from robustnb.train import TrainConfig, predict, speed_options, train_classifier


#: numbers the prose may type: none (the chapter tests no paper claim; everything measured is glued)
QUOTED_NUMBERS: tuple[str, ...] = ()


@dataclass(frozen=True)
class BaselineConfig:
    arch: str
    n_train: int
    n_test: int
    n_attack: int
    epsilons_255: tuple[float, ...]
    l2_epsilons: tuple[float, ...]  #: PGD-L2's radii (L2 norms of the perturbation, pixels in [0, 1])
    train: TrainConfig

    @classmethod
    def from_preset(cls, preset: str, seed: int = 0) -> "BaselineConfig":
        return cls(
            arch=pick(preset, smoke="cnn", cpu="cnn", full="resnet18"),
            n_train=pick(preset, smoke=1_000, cpu=50_000, full=50_000),
            n_test=pick(preset, smoke=200, cpu=2_000, full=10_000),
            n_attack=pick(preset, smoke=64, cpu=500, full=2_000),
            epsilons_255=pick(preset, smoke=(0, 2, 8), cpu=(0, 1, 2, 4, 8, 16), full=(0, 1, 2, 4, 8, 16)),
            l2_epsilons=pick(preset, smoke=(0, 0.5), cpu=(0, 0.25, 0.5, 1.0), full=(0, 0.25, 0.5, 1.0)),
            train=TrainConfig(epochs=pick(preset, smoke=1, cpu=6, full=30), batch_size=128, lr=0.05,
                              optimizer="sgd", scheduler="cosine", seed=seed,
                              label_smoothing=pick(preset, smoke=0.0, cpu=0.1, full=0.1), **speed_options(preset)),
        )


def load_data(cfg: BaselineConfig, seed: int = 0) -> tuple[data.ImageDataset, data.ImageDataset]:
    """Stratified CIFAR-10 subsets of the sizes the preset asks for."""
    return data.load_cifar10("train").subset(cfg.n_train, seed), data.load_cifar10("test").subset(cfg.n_test, seed)


def train_baseline(cfg: BaselineConfig, run: Run, train_set=None, test_set=None):
    """The baseline classifier, trained through ``robustnb.train`` (cached by its full config)."""
    if train_set is None or test_set is None:
        train_set, test_set = load_data(cfg, run.seed)
    return train_classifier(cfg.arch, train_set, cfg.train, device=run.device, eval_data=test_set)


def learning_curves(model) -> pd.DataFrame:
    """The training history in long form: ``epoch, metric, value``."""
    hist = model.robustnb_info["history"]
    cols = [c for c in ("train_acc", "eval_acc") if c in hist]
    return hist.melt(id_vars="epoch", value_vars=cols, var_name="metric", value_name="accuracy")


def confusion(model, test_set) -> pd.DataFrame:
    """Confusion matrix as a tidy frame: ``true, predicted, rate`` (rows sum to 1)."""
    pred = predict(model, test_set).argmax(1)
    k = test_set.num_classes
    counts = torch.bincount(test_set.labels * k + pred, minlength=k * k).view(k, k).float()
    rates = counts / counts.sum(1, keepdim=True).clamp(min=1)
    names = test_set.classes
    return pd.DataFrame([{"true": names[i], "predicted": names[j], "rate": float(rates[i, j])}
                         for i in range(k) for j in range(k)])


@experiment
def robustness(cfg: BaselineConfig, model, test_set, n_examples: int = 4):
    """FGSM and PGD accuracy over the L-inf epsilon grid, PGD-L2 over its L2 radii; returns ``(frame, examples)``
    (see attacks.robustness_curve)."""
    x, y = test_set.tensors(cfg.n_attack)
    eps = [e / 255 for e in cfg.epsilons_255]
    return attacks.robustness_curve(model, x, y, {"fgsm": eps, "pgd": eps, "pgd_l2": list(cfg.l2_epsilons)},
                                    keep_examples=n_examples)


def example_stack(examples: dict, attack: str, index: int = 0):
    """One attacked test image at every kept epsilon, stacked ``(S, 3, ...)``: clean | perturbation | adversarial.

    ``examples`` is :func:`robustness`'s second value; the clean image is the same photo at epsilon 0 (where
    ``robustness_curve`` keeps the unattacked images), so the perturbation is ``adv - clean`` of one image, zero at
    epsilon 0. It is shown amplified around grey (``0.5 + 4 * delta``) so small budgets stay visible.
    Returns ``(images, eps_255_values)`` for ``plots.image_slider``.
    """
    keys = sorted(e for (a, e) in examples if a == attack)
    if not keys or keys[0] != 0:
        raise ValueError(f"example_stack needs the {attack!r} examples at epsilon 0 (the clean images); "
                         f"kept epsilons: {[round(e * 255, 2) for e in keys]}")
    clean = examples[(attack, 0)][index]
    rows = []
    for eps in keys:
        adv = examples[(attack, eps)][index]
        rows.append(torch.stack([clean, (0.5 + 4 * (adv - clean)).clamp(0, 1), adv]))
    return torch.stack(rows), [round(e * 255, 2) for e in keys]


def explore(model, test_set, epsilons_255=(0, 1, 2, 4, 8, 16), n_images: int = 6):
    """Live explorer: an epsilon slider and a test image picker; shows PGD examples and predictions."""
    x, y = test_set.tensors(n_images)

    def show(epsilon, attack):
        x_adv = x if epsilon == 0 else make("attack", attack, model, eps=epsilon)(x, y)
        pred = predict(model, x_adv).argmax(1)
        titles = [f"{test_set.classes[p]}{'' if p == t else ' ✗'}" for p, t in zip(pred.tolist(), y.tolist())]
        title = f"{attack.upper()} at epsilon {attacks.eps_label(epsilon)}: predictions (✗ = wrong)"
        return plots.image_grid(x_adv, titles=titles, cols=n_images, title=title)

    return widgets.explorer(show, epsilon=widgets.epsilon_slider(epsilons_255),
                            attack=widgets.choice(["fgsm", "pgd"], "attack"))


def _share_ci(accuracy: float, n: int) -> stats.Estimate:
    """Bootstrap interval of an accuracy measured on ``n`` images (the mean of as many 0/1 hits)."""
    hits = np.zeros(n)
    hits[:round(accuracy * n)] = 1
    return stats.mean_ci(hits)


def summary(cfg: BaselineConfig, model, test_set, curve: pd.DataFrame) -> dict[str, str]:
    """The numbers the chapter's prose quotes, formatted with their 95% intervals (glued by ``book.record``)."""
    correct = (predict(model, test_set).argmax(1) == test_set.labels).float().numpy()
    hist = model.robustnb_info["history"]
    out = {"gs_clean_acc": stats.mean_ci(correct).fmt(), "gs_n_test": f"{len(test_set):,}",
           "gs_n_attack": f"{cfg.n_attack:,}", "gs_n_train": f"{cfg.n_train:,}",
           "gs_epochs": f"{cfg.train.epochs} epoch{'s' if cfg.train.epochs != 1 else ''}",
           "gs_train_seconds": f"{float(hist['seconds'].sum()):.0f} s" if "seconds" in hist else "n/a"}
    for row in curve.itertuples():  # gs_pgd_8 (8/255 under L-inf), gs_pgd_l2_0.5 (an L2 radius)
        size = row.eps_255 if attacks.budget(row.attack)[0] == "Linf" else row.epsilon
        out[f"gs_{row.attack}_{size:g}"] = _share_ci(row.accuracy, cfg.n_attack).fmt()
    l2 = curve[curve.attack == "pgd_l2"].set_index("epsilon")["accuracy"]
    if len(l2) > 1 and l2.iloc[0] > 0:
        out["gs_l2_finding"] = "; ".join(f"at an L2 radius of {r:g} it keeps {a / l2.iloc[0]:.0%} of the clean "
                                         "accuracy" for r, a in l2.iloc[1:].items())
    pgd = curve[curve.attack == "pgd"].set_index("eps_255")["accuracy"]
    clean = float(pgd.loc[0]) if 0 in pgd.index else float("nan")
    small = min((e for e in pgd.index if e > 0), default=None)
    if small is not None and clean > 0:
        out["gs_finding"] = (f"PGD at {small:g}/255 leaves {pgd.loc[small] / clean:.0%} of the clean accuracy on these "
                             f"images, and at {max(pgd.index):g}/255 {pgd.loc[max(pgd.index)] / clean:.0%}")
    else:
        out["gs_finding"] = "the model is too weak at this preset for the attack to remove accuracy"
    both = curve.pivot_table(index="eps_255", columns="attack", values="accuracy")
    if {"fgsm", "pgd"} <= set(both.columns):
        weaker = [e for e in both.index if both.loc[e, "pgd"] > both.loc[e, "fgsm"]]
        out["gs_pgd_vs_fgsm"] = ("PGD, the iterated attack, leaves no more accuracy than the one-step FGSM at any "
                                 "budget" if not weaker else "PGD leaves more accuracy than FGSM at "
                                 + ", ".join(f"{e:g}/255" for e in weaker) + " (too few images, or too few steps)")
    return out


# ------------------------------------------------------------------------------------------ without Jupyter
def reproduce(run: Run) -> pd.DataFrame:
    """The chapter's measurements without Jupyter: the calls ``book/getting_started.ipynb`` makes on its way
    to the numbers its prose quotes. The chapter tests no paper claim, so the table is those numbers, one row
    each (``number``, ``ours``: the name the prose glues and the value, with its 95% interval where it has one).

    ``python -m robustnb reproduce getting_started`` runs this (:mod:`robustnb.cli`). It makes the notebook's
    own calls, in its order and with its config, so the book and the command read and fill the same experiment
    cache (``ROBUSTNB_CACHE``) and give the same table at the same preset and seed."""
    cfg = BaselineConfig.from_preset(run.preset, run.seed)
    train_set, test_set = load_data(cfg, run.seed)
    model = train_baseline(cfg, run, train_set, test_set)
    curve, _ = robustness(cfg, model, test_set)
    numbers = summary(cfg, model, test_set, curve)
    return pd.DataFrame({"number": list(numbers), "ours": list(numbers.values())})
