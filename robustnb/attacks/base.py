"""What every attack shares: the epsilon check, the ball/box check and the batched runner.

Images are in ``[0, 1]`` and epsilon is an L-inf radius in the same units (``8/255``).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from robustnb.checks import check_images, check_number
from robustnb.progress import note

EPS_MAX = 64 / 255  # the largest L-inf radius any chapter uses is 32/255; 64/255 leaves room


def check_epsilon(eps, name: str = "epsilon", max_eps: float = EPS_MAX) -> float:
    """Return ``eps`` as a float in ``[0, max_eps]`` or raise a clear error (with a hint for 8 vs 8/255)."""
    try:
        return check_number(eps, name, 0.0, max_eps)
    except Exception as e:
        value = eps if isinstance(eps, (int, float)) and not isinstance(eps, bool) else None
        hint = f" Did you mean {value:g}/255 = {value / 255:.4f}?" if value is not None and 1 <= value <= 255 else ""
        raise type(e)(f"{e} Epsilon is an L-inf radius for pixel values in [0, 1]: 0 to "
                      f"{round(max_eps * 255)}/255 = {max_eps:.4f}.{hint}") from None


def check_step(alpha, name: str = "alpha") -> float:
    """A step size: a finite number >= 0."""
    return check_number(alpha, name, 0.0, None, hi_open=True)


def check_steps(steps, name: str = "steps", minimum: int = 0) -> int:
    """A number of iterations: an integer >= ``minimum``."""
    return check_number(steps, name, minimum, None, integer=True)


def check_in_ball(x_adv: torch.Tensor, x: torch.Tensor, eps: float, tol: float = 1e-6) -> None:
    """Assert the L-inf ball and the [0, 1] box (used by tests and after every custom attack)."""
    if x_adv.numel() == 0:
        return
    if (x_adv - x).abs().max() > eps + tol or x_adv.min() < -tol or x_adv.max() > 1 + tol:
        raise AssertionError("adversarial example left the epsilon ball or [0, 1]")


def perturb(attack, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 256,
            desc: str | None = None) -> torch.Tensor:
    """Run ``attack(x, y)`` over ``x`` in batches (CPU result, same order); an empty batch comes back empty.
    ``y`` may be ``None`` for attacks that need no labels (they get zeros)."""
    check_images(x)
    if y is None:
        y = torch.zeros(len(x), dtype=torch.long)
    outs = []
    starts = range(0, len(x), batch_size)
    name = desc or type(attack).__name__
    for k, i in enumerate(tqdm(starts, desc=name, leave=False, disable=len(starts) < 2)):
        note(f"attacking: {name} batch {k + 1}/{len(starts)}")
        outs.append(attack(x[i:i + batch_size], y[i:i + batch_size]).detach().cpu())
    return torch.cat(outs) if outs else x.clone()
