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
random part of the pipeline; the object mask's noise-relaxed backward pass draws once per step, see
:class:`DefendedModel`). The defense runs once per attack step, not once per draw: the attack repeats its
output's latent over the draws (:meth:`DefendedModel.encode`).

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
from robustnb.attacks.entropy import EntropyAttack, has_split_path
from robustnb.checks import check_choice, check_flag
from robustnb.config import ConfigError
from robustnb.split import rate

GRADIENT_MODES = ("auto", "bpda", "unrolled")
#: the model's methods that take an image: :class:`DefendedModel` defines its own (defense first) or refuses them,
#: never forwards them to the bare model
SKIPS_DEFENSE = ("encode", "compress")


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

    The split path, for the entropy attack's once-per-step objective (``robustnb.attacks.entropy``):
    ``encode(x)`` is ``model.encode(defense(x))`` (the defense, then the edge encoder), ``entropy`` and
    ``classify`` are the model's; ``split_path`` says whether the model has them. So the attack runs the
    defense (the TV solvers, the object mask) once per step and repeats the latent over its noise draws.
    Randomness inside the defense changes with it: the disentangled defense's object mask, differentiated
    through (``through_mask``), takes its backward pass from the noise-relaxed bit map
    (``robustnb.defenses.likelihood_mask`` / ``BitMap.soft``), which now draws its noise once per step for the
    ``N`` images, shared by all ``draws``, instead of once per draw. Its forward value (the real bit map) is
    unchanged, and since that noise is independent of the entropy model's, the expected gradient is too (one
    draw gives the same numbers as before); the variance of the mask's part of the gradient is that of one
    draw. Every other defense here is deterministic: the gradient is the old one up to float rounding.
    Attributes other than these are the model's (``__getattr__``), except those that would take an image
    past the defense (:data:`SKIPS_DEFENSE`), which are refused.
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

    # the split path (robustnb.attacks.entropy.has_split_path): defined here, never forwarded by __getattr__,
    # so that encode cannot reach the bare model's encoder past the defense
    @property
    def split_path(self) -> bool:
        """Whether the wrapped model has ``encode`` / ``entropy`` / ``classify`` (a :class:`robustnb.split.SplitModel`
        does)."""
        return has_split_path(self.model)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The defense, then the model's edge encoder: images ``(N, C, H, W)`` in [0, 1] -> latent ``y`` of
        ``defense(x)``, with gradients through the defense by :attr:`mode`."""
        return self.model.encode(self.preprocess(x))

    def entropy(self, y: torch.Tensor, noise: bool | None = None):
        """The model's entropy model on a latent: ``(y_hat, likelihoods)`` (``SplitModel.entropy``)."""
        return self.model.entropy(y, noise)

    def classify(self, y_hat: torch.Tensor) -> torch.Tensor:
        """The model's cloud part: (quantised) latent -> logits (``SplitModel.classify``)."""
        return self.model.classify(y_hat)

    def __getattr__(self, name):  # expose the split model's attributes (entropy models, update ...)
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in SKIPS_DEFENSE:
                raise AttributeError(f"DefendedModel does not forward {name!r} to the bare model: it would take the "
                                     f"image past the defense. Call model.{name}(defense(x)) for what the defended "
                                     "pipeline does.") from None
            return getattr(super().__getattr__("model"), name)


@registry.ATTACKS.register("adaptive_entropy", group="rate", norm="Linf",
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
