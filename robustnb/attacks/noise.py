"""Salt & pepper noise attack: a gradient-free, decision-based attack in torchattacks' ``Attack`` style.

Like foolbox's ``SaltAndPepperNoiseAttack`` (Rauber et al.), it only queries the model's predicted label:
for each image it adds salt-and-pepper noise with a growing probability ``p`` (the fraction of pixels set
to black or white; with ``across_channels=True`` a pixel's channels all become 0 or all become 1) until
the prediction changes. The search is repeated ``repeats`` times with fresh noise (each repeat only
searches up to 1.2 times the smallest successful ``p`` so far, as foolbox does), and the successful
noise with the smallest L2 norm is kept. No gradient is needed, so it also attacks models that cannot be
differentiated, such as int8-quantized ones.

No library on the package registry ships this attack for PyTorch (foolbox 3 is not installed here and
torchattacks has no noise attack), hence this module. Images are in ``[0, 1]``; changed pixels become
exactly 0 or 1. After ``attack(x, y)``, ``attack.last_min_p`` holds, per image, the smallest noise
probability that fooled the model (``0`` when the clean image is already misclassified, ``inf`` when
no tried ``p`` succeeded), and ``attack.last_fraction`` the fraction of pixels actually changed.
"""

from __future__ import annotations

import contextlib
import io
import math

import torch
from torch import nn
from torchattacks.attack import Attack

from robustnb import registry
from robustnb.checks import check_images
from robustnb.config import ConfigError


@registry.ATTACKS.register("salt_pepper", group="noise")
class SaltAndPepper(Attack):
    r"""Salt & pepper noise attack (foolbox's ``SaltAndPepperNoiseAttack``, repeated linear search).

    Arguments:
        model: the classifier (images in [0, 1]).
        steps: noise probabilities tried per repeat, linearly spaced in ``(0, max_p]``.
        repeats: independent searches with fresh noise; the best (smallest L2) success is kept.
        max_p: the largest probability tried (foolbox: 1, every pixel replaced).
        across_channels: replace whole pixels (all channels) rather than single channel values.
        seed: seed of the noise (a local generator; the global RNG is left alone).

    Shape: images ``(N, C, H, W)`` in ``[0, 1]``, labels ``(N,)``; returns the adversarial images (the
    clean image where no success was found).
    """

    def __init__(self, model: nn.Module, steps: int = 100, repeats: int = 3, max_p: float = 1.0,
                 across_channels: bool = True, seed: int = 0):
        with contextlib.redirect_stdout(io.StringIO()):  # torchattacks prints when a model has no parameters
            super().__init__("SaltAndPepper", model)
        if not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"steps must be a positive integer, got {steps!r}.")
        if not isinstance(repeats, int) or repeats < 1:
            raise ConfigError(f"repeats must be a positive integer, got {repeats!r}.")
        if not (isinstance(max_p, (int, float)) and 0 < max_p <= 1):
            raise ConfigError(f"max_p must be in (0, 1], got {max_p!r}.")
        self.steps, self.repeats, self.max_p = steps, repeats, float(max_p)
        self.across_channels, self.seed = across_channels, seed
        if self.device is None:  # int8 models have no parameters: use a buffer's device, else the CPU
            buf = next(model.buffers(), None)
            self.device = buf.device if buf is not None else torch.device("cpu")
        self.supported_mode = ["default"]
        self.last_min_p = self.last_fraction = None

    @torch.no_grad()
    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.get_logits(x).argmax(1)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_images(images)
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        n = len(images)
        if n == 0:
            self.last_min_p = self.last_fraction = torch.zeros(0)
            return images
        g = torch.Generator().manual_seed(self.seed)
        best = images.clone()
        best_norm = torch.full((n,), math.inf, device=self.device)
        best_p = torch.full((n,), math.inf, device=self.device)
        wrong = self._predict(images) != labels
        best_norm[wrong] = 0.0
        best_p[wrong] = 0.0
        max_p = torch.full((n,), self.max_p, device=self.device)
        noise_shape = (1 if self.across_channels else images.shape[1],) + tuple(images.shape[2:])
        for _ in range(self.repeats):
            todo = ~wrong  # images already misclassified need no noise
            for k in range(1, self.steps + 1):
                if not todo.any():
                    break
                idx = todo.nonzero().flatten()
                p = (max_p[idx] * k / self.steps).view(-1, 1, 1, 1)
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
                best_p[done] = torch.minimum(best_p[done], p.flatten()[fooled])
                todo[done] = False
                # as foolbox: later repeats only search up to 1.2x the best probability found
                max_p[done] = torch.minimum(max_p[done], (best_p[done] * 1.2).clamp(max=self.max_p))
        self.last_min_p = best_p.cpu()
        self.last_fraction = ((best != images).any(1).flatten(1).float().mean(1)).cpu()
        return best


def accuracy_at_budgets(min_p: torch.Tensor, budgets) -> dict[float, float]:
    """Accuracy under salt & pepper noise of probability ``<= b`` for each budget ``b``.

    An image counts as correct at budget ``b`` when the attack needed more than ``b`` (``min_p > b``).
    Since the search is stochastic, these are upper bounds on the true robust accuracy.
    """
    return {float(b): float((min_p > b).float().mean()) for b in budgets}
