"""Attacks: torchattacks for the standard ones, and the attacks no library ships, in its ``Attack`` style.

Images are in ``[0, 1]`` and epsilon is an L-inf radius in the same units (``8/255``). ``make_attack``
builds a torchattacks attack by name; ``perturb`` runs any attack over a large tensor in batches with a
progress bar; ``robustness_curve`` is the accuracy-vs-epsilon experiment as a tidy frame.

Sub-modules add attacks that no library has (each a ``torchattacks.attack.Attack`` subclass, so they
work with the same calls): ``robustnb.attacks.entropy`` (bit-rate attacks on entropy models),
``robustnb.attacks.transfer`` (ensemble transfer attacks), ``robustnb.attacks.noise`` (salt & pepper).
"""

from __future__ import annotations

import math

import pandas as pd
import torch
import torchattacks
from torch import nn
from tqdm.auto import tqdm

from robustnb.config import ConfigError

EPS_MAX = 64 / 255  # the largest L-inf radius any chapter uses is 32/255; 64/255 leaves room
STANDARD_ATTACKS = {
    "fgsm": torchattacks.FGSM,
    "pgd": torchattacks.PGD,
    "mifgsm": torchattacks.MIFGSM,
    "bim": torchattacks.BIM,
    "autoattack": torchattacks.AutoAttack,
}


def check_epsilon(eps, name: str = "epsilon", max_eps: float = EPS_MAX) -> float:
    """Return ``eps`` as a float in ``[0, max_eps]`` or raise a clear error (with a hint for 8 vs 8/255)."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number in [0, {max_eps:.4f}] (e.g. 8/255), got {eps!r}.") from None
    if not math.isfinite(value) or value < 0 or value > max_eps:
        hint = f" Did you mean {value:g}/255 = {value / 255:.4f}?" if 1 <= value <= 255 else ""
        raise ConfigError(
            f"{name}={value:g} is out of range: allowed is [0, {max_eps:.4f}] "
            f"(0 to {round(max_eps * 255)}/255, pixel values in [0, 1]).{hint}"
        )
    return value


def check_in_ball(x_adv: torch.Tensor, x: torch.Tensor, eps: float, tol: float = 1e-6) -> None:
    """Assert the L-inf ball and the [0, 1] box (used by tests and after every custom attack)."""
    if (x_adv - x).abs().max() > eps + tol or x_adv.min() < -tol or x_adv.max() > 1 + tol:
        raise AssertionError("adversarial example left the epsilon ball or [0, 1]")


def make_attack(name: str, model: nn.Module, eps: float, **kw) -> torchattacks.attack.Attack:
    """A torchattacks attack by name (``fgsm``, ``pgd``, ``mifgsm``, ``bim``, ``autoattack``).

    Iterative attacks default to the usual step ``alpha = eps / 4`` (at least 1/255 when eps > 0) and
    10 steps; pass ``alpha=`` / ``steps=`` to change them.
    """
    key = name.lower()
    if key not in STANDARD_ATTACKS:
        raise ConfigError(f"Unknown attack {name!r}: choose one of {', '.join(STANDARD_ATTACKS)}.")
    eps = check_epsilon(eps)
    cls = STANDARD_ATTACKS[key]
    if key in ("pgd", "mifgsm", "bim"):
        kw.setdefault("alpha", max(eps / 4, 1 / 255) if eps > 0 else 0.0)
        kw.setdefault("steps", 10)
    if key == "autoattack":
        kw.setdefault("n_classes", _num_classes(model))
    return cls(model, eps=eps, **kw)


def _num_classes(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return last.out_features


def perturb(attack, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256, desc: str | None = None) -> torch.Tensor:
    """Run ``attack(x, y)`` over ``x`` in batches (CPU result, same order)."""
    outs = []
    starts = range(0, len(x), batch_size)
    for i in tqdm(starts, desc=desc or f"{type(attack).__name__}", leave=False, disable=len(starts) < 2):
        outs.append(attack(x[i:i + batch_size], y[i:i + batch_size]).detach().cpu())
    return torch.cat(outs) if outs else x.clone()


@torch.no_grad()
def _accuracy(model, x, y, batch_size=256) -> float:
    device = next(model.parameters()).device
    hits = sum(int((model(x[i:i + batch_size].to(device)).argmax(1).cpu() == y[i:i + batch_size]).sum())
               for i in range(0, len(x), batch_size))
    return hits / max(len(y), 1)


def robustness_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons, attacks=("fgsm", "pgd"),
                     batch_size: int = 256, keep_examples: int = 0, **attack_kw):
    """Accuracy under each attack at each epsilon, as a tidy frame.

    Returns ``(frame, examples)``: the frame has columns ``attack, epsilon, eps_255, accuracy``;
    ``examples`` maps ``(attack, epsilon)`` to the first ``keep_examples`` adversarial images.
    """
    model.eval()
    rows, examples = [], {}
    for name in attacks:
        for eps in tqdm(list(epsilons), desc=f"{name} sweep", leave=False):
            eps = check_epsilon(eps)
            x_adv = x if eps == 0 else perturb(make_attack(name, model, eps, **attack_kw), x, y, batch_size)
            rows.append({"attack": name, "epsilon": eps, "eps_255": round(eps * 255, 3),
                         "accuracy": _accuracy(model, x_adv, y, batch_size)})
            if keep_examples:
                examples[(name, eps)] = x_adv[:keep_examples].clone()
    return pd.DataFrame(rows), examples
