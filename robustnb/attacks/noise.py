"""Salt & pepper noise attack: a gradient-free, decision-based attack in torchattacks' ``Attack`` style.

Like foolbox's ``SaltAndPepperNoiseAttack`` (Rauber et al.), it only queries the model's predicted label:
for each image it adds salt-and-pepper noise with a growing probability ``p`` (the fraction of pixels set
to black or white; with ``across_channels=True`` a pixel's channels all become 0 or all become 1) until
the prediction changes. The search is repeated ``repeats`` times with fresh noise (each repeat only
searches up to 1.2 times the smallest successful ``p`` so far, as foolbox does), and the successful
noise with the smallest L2 norm is kept. ``budgets`` adds probabilities to every search grid (those up to
the grid's maximum): the densities at which accuracy is reported are then tried exactly, instead of only
the nearest grid point above them (with ``steps=20, max_p=0.5`` the first density tried is 0.025, so a budget
of 0.01 would never be tried on a first repeat and accuracy at it would be clean accuracy by construction). No gradient is needed, so it also attacks models that cannot be
differentiated, such as int8-quantized ones.

No library on the package registry ships this attack for PyTorch (foolbox 3 is not installed here and
torchattacks has no noise attack), hence this module. Images are in ``[0, 1]``; changed pixels become
exactly 0 or 1. After ``attack(x, y)``, ``attack.last_min_p`` holds, per image, the smallest noise
probability that fooled the model (``0`` when the clean image is already misclassified, ``inf`` when
no tried ``p`` succeeded), and ``attack.last_fraction`` the fraction of pixels actually changed.

:func:`sign_noise` is the other noise of the package: the random sign-noise *null* of the rate attacks, an
L-inf perturbation of the same size as an attack's that no gradient chose.
"""

from __future__ import annotations

import contextlib
import io
import math

import torch
from torch import nn
from torchattacks.attack import Attack

from robustnb import registry
from robustnb.attacks.base import CheckedAttack, check_epsilon, check_seed
from robustnb.checks import check_images
from robustnb.checks import check_flag, check_number, one_or_more


@registry.ATTACKS.register("salt_pepper", group="noise")
class SaltAndPepper(CheckedAttack, Attack):
    r"""Salt & pepper noise attack (foolbox's ``SaltAndPepperNoiseAttack``, repeated linear search).

    Arguments:
        model: the classifier (images in [0, 1]).
        steps: noise probabilities tried per repeat, linearly spaced in ``(0, max_p]``.
        repeats: independent searches with fresh noise; the best (smallest L2) success is kept.
        max_p: the largest probability tried (foolbox: 1, every pixel replaced).
        across_channels: replace whole pixels (all channels) rather than single channel values.
        seed: seed of the noise (a local generator; the global RNG is left alone).
        budgets: probabilities always on the grid (those ``<= max_p``), e.g. the budgets accuracy is reported at.

    Shape: images ``(N, C, H, W)`` in ``[0, 1]``, labels ``(N,)``; returns the adversarial images (the
    clean image where no success was found).
    """

    def __init__(self, model: nn.Module, steps: int = 100, repeats: int = 3, max_p: float = 1.0,
                 across_channels: bool = True, seed: int = 0, budgets=()):
        with contextlib.redirect_stdout(io.StringIO()):  # torchattacks prints when a model has no parameters
            super().__init__("SaltAndPepper", model)
        self.steps = check_number(steps, "steps", 1, None, integer=True, hi_open=True)
        self.repeats = check_number(repeats, "repeats", 1, None, integer=True, hi_open=True)
        self.max_p = check_number(max_p, "max_p", 0.0, 1.0, lo_open=True)
        self.across_channels = check_flag(across_channels, "across_channels")
        self.seed = check_number(seed, "seed", 0, None, integer=True, hi_open=True)
        budgets = tuple(check_number(b, "budgets", 0.0, 1.0, lo_open=True)
                        for b in one_or_more(budgets, "budgets"))
        self.budgets = tuple(sorted(set(budgets)))
        if self.device is None:  # int8 models have no parameters: use a buffer's device, else the CPU
            buf = next(model.buffers(), None)
            self.device = buf.device if buf is not None else torch.device("cpu")
        self.supported_mode = ["default"]
        self.last_min_p = self.last_fraction = None

    def grid(self, max_p: torch.Tensor | float | None = None) -> torch.Tensor:
        """The probabilities one search tries, in order, for each maximum in ``max_p`` (shape ``(n, k)``):
        ``steps`` linearly spaced values in ``(0, max_p]`` plus every budget ``<= max_p`` (a budget above the
        maximum is replaced by the maximum, i.e. tried again with fresh noise)."""
        m = torch.as_tensor(self.max_p if max_p is None else max_p, dtype=torch.float64).reshape(-1, 1)
        lin = m * torch.arange(1, self.steps + 1, dtype=torch.float64) / self.steps
        if self.budgets:
            b = torch.tensor(self.budgets, dtype=torch.float64).expand(len(m), -1)
            lin = torch.cat([lin, torch.minimum(b, m)], 1).sort(1).values
        return lin

    @torch.no_grad()
    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.get_logits(x).argmax(1)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        n = len(images)
        if n == 0:
            self.last_min_p = self.last_fraction = torch.zeros(0)
            return images
        g = torch.Generator().manual_seed(self.seed)
        best = images.clone()
        best_norm = torch.full((n,), math.inf, device=self.device)
        best_p = torch.full((n,), math.inf, device=self.device, dtype=torch.float64)  # exact grid values
        wrong = self._predict(images) != labels
        best_norm[wrong] = 0.0
        best_p[wrong] = 0.0
        max_p = torch.full((n,), self.max_p, device=self.device)
        noise_shape = (1 if self.across_channels else images.shape[1],) + tuple(images.shape[2:])
        for _ in range(self.repeats):
            todo = ~wrong  # images already misclassified need no noise
            grid = self.grid(max_p.cpu())
            for k in range(grid.shape[1]):
                if not todo.any():
                    break
                idx = todo.nonzero().flatten()
                p64 = grid[idx.cpu(), k].to(self.device)
                p = p64.to(images.dtype).view(-1, 1, 1, 1)
                u = torch.rand((len(idx),) + noise_shape, generator=g).to(self.device)
                x = images[idx]
                x = torch.where(u < p / 2, torch.zeros_like(x), x)
                x = torch.where(u >= 1 - p / 2, torch.ones_like(x), x)
                fooled = self._predict(x) != labels[idx]
                norm = (x - images[idx]).flatten(1).norm(dim=1)
                better = fooled & (norm < best_norm[idx])
                bi = idx[better]
                best[bi] = x[better]
                best_norm[bi] = norm[better]
                done = idx[fooled]
                best_p[done] = torch.minimum(best_p[done], p64[fooled])
                todo[done] = False
                # as foolbox: later repeats only search up to 1.2x the best probability found
                max_p[done] = torch.minimum(max_p[done], (best_p[done] * 1.2).clamp(max=self.max_p).to(max_p.dtype))
        self.last_min_p = best_p.cpu()
        self.last_fraction = ((best != images).any(1).flatten(1).float().mean(1)).cpu()
        return best


def accuracy_at_budgets(min_p: torch.Tensor, budgets) -> dict[float, float]:
    """Accuracy under salt & pepper noise of probability ``<= b`` for each budget ``b``.

    An image counts as correct at budget ``b`` when the attack needed more than ``b`` (``min_p > b``).
    Since the search is stochastic, these are upper bounds on the true robust accuracy.
    """
    budgets = [check_number(b, "budgets", 0.0, 1.0) for b in one_or_more(budgets, "budgets")]
    return {float(b): float((min_p > b).float().mean()) for b in budgets}


def correct_at_budget(min_p: torch.Tensor, budget: float) -> torch.Tensor:
    """Per image, 1 when salt & pepper noise of probability ``<= budget`` did not fool the model (0/1 floats)."""
    return (min_p > budget).float()


def sign_noise(x: torch.Tensor, eps: float, seed: int = 0) -> torch.Tensor:
    """The random sign-noise null of an L-inf attack: ``clamp(x + eps * s, 0, 1)`` with ``s`` = +1 or -1 with
    probability one half, independently for every image, channel and pixel.

    It is the perturbation an attack of radius ``eps`` would make if the signs of its step were random: same
    budget, same +-eps amplitude at every pixel (except where the [0, 1] box clips it), no gradient. Its spectrum
    is white, so its power above a radial cutoff ``c`` is the share of the frequency plane above ``c``
    (:func:`robustnb.signal.plane_share_above`; about 80% above 0.25 cycles/pixel). It is EntropyR's own noise
    baseline (``experiment_adv.py``, ``--attack noise``: ``torch.randn_like(x).sign() * eps``, clamped to [0, 1]).

    Args:
        x: images ``(N, C, H, W)`` in ``[0, 1]``.
        eps: the L-inf radius in ``[0, 1]`` units (``8/255``).
        seed: seed of a local generator (the global RNG is left alone); the same seed and shape give the same
            signs, so every model of a chapter sees the same noisy images.

    Returns the noisy images, same shape and dtype as ``x``, on ``x``'s device, within ``eps`` of ``x`` and in
    ``[0, 1]``.

    Examples::

        >>> x_null = sign_noise(images, 8 / 255)
        >>> rate.real_bytes(model, x_null).mean() / rate.real_bytes(model, images).mean() - 1   # the null's overhead
    """
    check_images(x)
    eps = check_epsilon(eps)
    seed = check_seed(seed)
    g = torch.Generator().manual_seed(0 if seed is None else seed)
    s = torch.randint(0, 2, tuple(x.shape), generator=g).mul_(2).sub_(1).to(device=x.device, dtype=x.dtype)
    return (x + eps * s).clamp(0, 1)
