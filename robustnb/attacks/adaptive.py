"""Adaptive entropy attacks: an attacker who knows the preprocessing defense.

A defense ``d`` in front of a split model ``m`` is only evaluated honestly against an attacker who attacks
``m(d(x))`` itself (Athalye, Carlini & Wagner 2018). Two ways to get gradients through ``d``:

* **BPDA** (backward pass differentiable approximation): the forward pass runs the real defense, the backward
  pass treats it as the identity (:func:`bpda`). Works for anything, including JPEG and bit-depth reduction.
* **unrolled**: differentiate through the defense's own computation (the torch Chambolle iterations of
  ``robustnb.signal.tv_denoise``, the Gaussian blur, the FFT split). The object mask of the disentangled
  defense is differentiated too (``through_mask=True``, the default): BPDA on its bit map, whose forward value
  is the defender's real bit map and whose backward pass is that of the noise-relaxed bit map
  (``robustnb.defenses.likelihood_mask``). The defender itself computes the mask without gradients.

:func:`adaptive_entropy_attack` can restart the attack from random points of the ball (``restarts``) and keeps,
per image, the candidate whose *defended* image costs the most real bytes (best of restarts).

Every defense here is deterministic, so expectation over transformation (EOT) is not needed beyond the
entropy attack's own averaging of the gradient over quantisation-noise draws (which *is* EOT over the only
random part of the pipeline).

:class:`AdaptiveEntropyAttack` is the entropy attack (``robustnb.attacks.entropy.EntropyAttack``, PGD on the
rate within an L-inf ball) run on :class:`DefendedModel` ``= m o d``.
"""

from __future__ import annotations

import copy

import torch
import torchattacks
from torch import nn

from robustnb import registry
from robustnb.attacks.base import CheckedAttack, attack_parameters, check_steps, perturb
from robustnb.attacks.entropy import EntropyAttack
from robustnb.checks import check_choice, check_flag
from robustnb.config import ConfigError
from robustnb.split import rate

GRADIENT_MODES = ("auto", "bpda", "unrolled")


class _BPDA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fn):
        with torch.no_grad():
            return fn(x.detach()).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def bpda(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` forward, identity backward."""
    return _BPDA.apply(x, fn)


class DefendedModel(nn.Module):
    """``model(defense(x))`` with gradients by BPDA or by unrolling the defense (``mode``).

    ``mode="auto"`` unrolls differentiable defenses (``defense.differentiable``) and uses BPDA for the others.
    ``through_mask``: when unrolling a defense with an object mask (``mask_gradient`` attribute), differentiate
    through the mask too (on a shallow copy of the defense; the caller's defense is left as it is).
    ``forward(x, **kw)`` passes keyword arguments (e.g. ``noise=True``) on to the model and returns its output.
    """

    def __init__(self, model: nn.Module, defense: nn.Module, mode: str = "auto", through_mask: bool = True):
        super().__init__()
        check_choice(mode, "mode (the gradient through the defense)", GRADIENT_MODES)
        through_mask = check_flag(through_mask, "through_mask")
        if mode == "unrolled" and not getattr(defense, "differentiable", True):
            raise ConfigError(f"{type(defense).__name__} is not differentiable: use mode='bpda'.")
        self.model, self.defense = model, defense
        # mirror the model's mode: torchattacks restores the *wrapper's* mode after an attack, and a fresh
        # nn.Module is in training mode, which would leave the split model in training mode afterwards
        self.train(model.training)
        self.mode = ("unrolled" if getattr(defense, "differentiable", True) else "bpda") if mode == "auto" else mode
        if self.mode == "unrolled" and through_mask and hasattr(defense, "mask_gradient"):
            defense = copy.copy(defense)
            defense.mask_gradient = True
            self.defense = defense

    def preprocess(self, x):
        return bpda(self.defense, x) if self.mode == "bpda" else self.defense(x)

    def forward(self, x, **kw):
        return self.model(self.preprocess(x), **kw)

    def __getattr__(self, name):  # expose the split model's attributes (entropy models, compress ...)
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)


@registry.ATTACKS.register("adaptive_entropy", group="rate",
                           settings=[p for p in attack_parameters(EntropyAttack)])
class AdaptiveEntropyAttack(CheckedAttack, torchattacks.attack.Attack):
    """The entropy attack against ``defense`` in front of ``model`` (BPDA / unrolled gradients).

    Keyword arguments go to ``EntropyAttack`` (``eps``, ``steps``, ``draws`` ...). The adversarial
    image is returned *before* the defense: the defender then applies the defense to it as usual.

    Examples::

        >>> defense = robustnb.defenses.make_defense("disentangled_tv", robustnb.defenses.model_bit_map(model))
        >>> attack = AdaptiveEntropyAttack(model, defense, mode="auto", eps=8/255, steps=20, draws=16)
        >>> x_adv = attack(images)
        >>> rate.real_bytes(model, defense(x_adv)).mean()      # what the defended pipeline sends
    """

    needs_labels = False  # the entropy attack needs none; labels given are checked (one per image)

    def __init__(self, model: nn.Module, defense: nn.Module, mode: str = "auto", through_mask: bool = True,
                 **attack_kw):
        unknown = [k for k in attack_kw if k not in attack_parameters(EntropyAttack)]
        if unknown:
            raise ConfigError(f"AdaptiveEntropyAttack takes no setting {', '.join(map(repr, unknown))}: allowed are "
                              f"'mode', 'through_mask' and the entropy attack's "
                              f"{', '.join(map(repr, attack_parameters(EntropyAttack)))}.")
        if not callable(defense):
            raise ConfigError(f"defense must be a defense (robustnb.defenses.make_defense(...)), got {defense!r}.")
        self.defended = DefendedModel(model, defense, mode, through_mask)
        super().__init__("AdaptiveEntropyAttack", self.defended)
        self.inner = EntropyAttack(self.defended, **attack_kw)
        self.mode = self.defended.mode
        self.supported_mode = ["default"]

    def forward(self, images, labels=None):
        return self.inner(images, labels)


def defended_bytes(model, defense, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Real bytes per image of ``model`` on ``defense(x)`` (the defender's pipeline, no gradients)."""
    with torch.no_grad():
        xd = torch.cat([defense(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]) if len(x) else x
    return rate.real_bytes(model, xd)


def best_per_image(candidates, scores) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the candidate with the highest score: ``candidates`` a list of ``(N, ...)`` tensors,
    ``scores`` a list of ``(N,)``; returns ``(best (N, ...), index of the chosen candidate (N,))``."""
    s = torch.stack([torch.as_tensor(t, dtype=torch.float32) for t in scores])
    idx = s.argmax(0)
    c = torch.stack(list(candidates))
    return c[idx, torch.arange(c.shape[1])], idx


def adaptive_entropy_attack(model, defense, x: torch.Tensor, eps: float, steps: int = 20, draws: int = 16, *,
                            mode: str = "auto", restarts: int = 0, through_mask: bool = True,
                            batch_size: int = 32) -> torch.Tensor:
    """:class:`AdaptiveEntropyAttack` over a large tensor in batches (small ones by default: unrolling the TV
    solver keeps every iteration for the backward pass). With ``restarts`` > 0 the attack runs again from
    ``restarts`` random starts in the ball (seeds 1, 2, ...) and each image keeps the candidate whose defended
    image costs the most real bytes (:func:`defended_bytes`, :func:`best_per_image`)."""
    restarts = check_steps(restarts, "restarts")
    cands = []
    for r in range(restarts + 1):
        atk = AdaptiveEntropyAttack(model, defense, mode=mode, through_mask=through_mask, eps=eps, steps=steps,
                                    draws=draws, random_start=r > 0, seed=r)
        cands.append(perturb(atk, x, None, batch_size=batch_size, desc=f"adaptive attack ({r})"))
    if len(cands) == 1:
        return cands[0]
    return best_per_image(cands, [defended_bytes(model, defense, c) for c in cands])[0]
