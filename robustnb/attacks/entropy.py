"""The entropy attack: perturb an image within an L-inf ball so that its latent costs as many bits as possible.

Threat model: the attacker controls the input of the edge device (or the scene in front of its camera) and
knows the edge encoder and the entropy model (white box). Goal: make the edge device send more bits, which
costs bandwidth, energy and latency, optionally without changing the prediction (stealthy). Objective:

    max_{||delta||_inf <= eps, x + delta in [0, 1]}  E_u [ R(x + delta; u) ],   R = sum -log2 p(y_hat)

where the rounding of the latent is relaxed to additive uniform noise ``u`` (the entropy model's
training mode) so the rate has a gradient, and the expectation is estimated with ``draws`` noise samples
per step. PGD with sign steps, projected on the ball and the [0, 1] box after every step. No library ships
this attack; it is a :class:`torchattacks.attack.Attack` so that it runs like the others.

Work per step: the noise enters after the encoder, so the encoder (the larger half of the forward pass, and
any preprocessing defense in front of it, ``robustnb.attacks.adaptive``) runs **once** per step on the ``N``
images; only the entropy model runs on the latent repeated ``draws`` times (``model.entropy(y_rep,
noise=True)``), and the cloud classifier only when the objective reads the logits (``keep_label``). The noise
is drawn on a tensor of the same shape, in the same order, as in a full forward of the repeated batch, so the
gradient is that of ``model(x.repeat(draws, 1, 1, 1), noise=True)`` up to float rounding. A model without
its own ``encode`` / ``entropy`` / ``classify`` (:func:`has_split_path`) gets that full forward.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
import torchattacks

from robustnb import registry
from robustnb.attacks.base import CheckedAttack, check_epsilon, check_step, check_steps, perturb
from robustnb.checks import check_flag, check_number
from robustnb.split.rate import bits


@registry.ATTACKS.register("entropy", group="rate", norm="Linf")
class EntropyAttack(CheckedAttack, torchattacks.attack.Attack):
    """L-inf PGD that maximises the estimated bitrate of a :class:`robustnb.split.SplitModel`.

    Arguments: ``eps`` (L-inf radius in [0, 1] units, e.g. 8/255), ``steps`` (20 in the paper), ``draws``
    (noise samples averaged per step, 16 in the paper), ``alpha`` (step size; default ``2.5 * eps / steps``),
    ``random_start`` (start from a uniform point in the ball), ``keep_label`` (stealthy variant: also
    maximise the log-probability of the clean prediction, weighted by ``label_weight``).
    The objective is the mean over the batch of bits per latent element (so step sizes do not depend on
    the latent size). ``labels`` are ignored (the attack needs none; the stealthy variant keeps the
    model's own clean prediction; when given they must be one per image).

    Shape: images ``(N, C, H, W)`` in ``[0, 1]``; returns adversarial images of the same shape, within
    ``eps`` of the input in L-inf and inside ``[0, 1]``.

    Examples::

        >>> model = robustnb.split.get_split_model("resnet", "hyperprior", 0.04, run)
        >>> attack = EntropyAttack(model, eps=8/255, steps=20, draws=16)
        >>> x_adv = attack(images)                      # labels are not needed
        >>> rate.real_bytes(model, x_adv).mean() / rate.real_bytes(model, images).mean()
    """

    needs_labels = False  # labels given are checked (one per image) and ignored

    def __init__(self, model, eps: float = 8 / 255, steps: int = 20, draws: int = 16, alpha: float | None = None,
                 random_start: bool = False, keep_label: bool = False, label_weight: float = 1.0, seed: int = 0):
        super().__init__("EntropyAttack", model)
        self.eps = check_epsilon(eps)
        self.steps = check_steps(steps)
        self.draws = check_steps(draws, "draws", minimum=1)
        self.alpha = check_step(alpha) if alpha is not None else 2.5 * self.eps / max(self.steps, 1)
        self.random_start = check_flag(random_start, "random_start")
        self.keep_label = check_flag(keep_label, "keep_label")
        self.label_weight = check_number(label_weight, "label_weight", 0.0, None, hi_open=True)
        self.seed = check_steps(seed, "seed")
        self.supported_mode = ["default"]

    def objective(self, x: torch.Tensor, clean_pred: torch.Tensor | None = None) -> torch.Tensor:
        """Mean bits per latent element under the noise relaxation, averaged over ``draws`` (minus CE if stealthy).

        ``x``: images ``(N, C, H, W)``; ``clean_pred``: ``(N,)`` class indices (stealthy variant) or ``None``.
        Returns a scalar. The encoder runs once on ``x`` and the entropy model on its latent repeated ``draws``
        times (rows ``d * N + i`` = draw ``d`` of image ``i``, the order of ``x.repeat(draws, 1, 1, 1)``); the
        classifier runs (on every draw's noisy latent) only when ``clean_pred`` is given. A model without the
        split path (:func:`has_split_path`) runs its full forward on ``x`` repeated ``draws`` times instead."""
        m, split = self.model, has_split_path(self.model)
        if split:
            y_hat, lik = m.entropy(_repeat(m.encode(x), self.draws), noise=True)
        else:
            out = m(_repeat(x, self.draws), noise=True)
            lik = out["likelihoods"]
        elements = sum(v[0].numel() for v in lik.values())
        obj = (bits(lik) / elements).mean()
        if clean_pred is not None:
            logits = m.classify(y_hat) if split else out["logits"]
            obj = obj - self.label_weight * F.cross_entropy(logits, _repeat(clean_pred, self.draws))
        return obj

    def forward(self, images, labels=None):
        images = images.clone().detach().to(self.device)
        if self.eps == 0 or self.steps == 0 or len(images) == 0:
            return images
        with torch.random.fork_rng(devices=[]):  # reproducible noise draws without touching the global RNG
            torch.manual_seed(self.seed)
            return self._pgd(images)

    def _pgd(self, images):
        clean_pred = None
        if self.keep_label:
            with torch.no_grad():
                clean_pred = self.model(images, noise=False)["logits"].argmax(1)
        adv = images.clone()
        if self.random_start:
            noise = (torch.rand(images.shape) * 2 - 1) * self.eps
            adv = (adv + noise.to(self.device)).clamp(0, 1)
        for _ in range(self.steps):
            adv.requires_grad_(True)
            obj = self.objective(adv, clean_pred)
            grad = torch.autograd.grad(obj, adv)[0]
            with torch.no_grad():
                adv = adv + self.alpha * grad.sign()
                adv = torch.min(torch.max(adv, images - self.eps), images + self.eps).clamp(0, 1)
            adv = adv.detach()
        return adv


#: what a model needs for the once-per-step objective: ``encode(x) -> y``, ``entropy(y, noise) -> (y_hat,
#: likelihoods)``, ``classify(y_hat) -> logits`` (:class:`robustnb.split.SplitModel`)
SPLIT_PATH = ("encode", "entropy", "classify")


def has_split_path(model) -> bool:
    """Whether ``model`` runs ``classify(entropy(encode(x)))`` itself: its class (or instance) defines the three
    methods of :data:`SPLIT_PATH`. Looked up statically (:func:`inspect.getattr_static`), so a wrapper whose
    ``__getattr__`` forwards ``encode`` to an inner model -- and would skip whatever the wrapper does in front
    of it -- does not count. A class that defines them for some instances only (a wrapper around a model with
    or without them, :class:`robustnb.attacks.adaptive.DefendedModel`) says so with a ``split_path`` property."""
    if not all(callable(inspect.getattr_static(model, name, None)) for name in SPLIT_PATH):
        return False
    declared = inspect.getattr_static(type(model), "split_path", None)
    return bool(model.split_path) if declared is not None else True


def _repeat(t: torch.Tensor, n: int) -> torch.Tensor:
    """``t`` stacked ``n`` times along the batch dimension (``t.repeat(n, 1, ...)``): row ``d * N + i`` is ``t[i]``."""
    return t.repeat(n, *[1] * (t.dim() - 1))


def entropy_attack(model, x: torch.Tensor, eps: float, steps: int = 20, draws: int = 16, *,
                   keep_label: bool = False, seed: int = 0, batch_size: int = 128) -> torch.Tensor:
    """The entropy attack over a large tensor in batches of ``batch_size`` (CPU result, same order): the one
    runner every chapter uses. ``eps`` in [0, 1] units (``8/255``)."""
    atk = EntropyAttack(model, eps=eps, steps=steps, draws=draws, keep_label=keep_label, seed=seed)
    return perturb(atk, x, None, batch_size=batch_size, desc="entropy attack")
