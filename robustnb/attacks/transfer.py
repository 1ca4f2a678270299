"""Transfer attacks crafted on an ensemble of surrogate models: MI-FGSM, SAM, CSE and CWA.

An attacker who cannot query the target trains its own *surrogate* models and crafts adversarial
examples on them, hoping they *transfer*. Four attacks, all untargeted, L-inf, in pixel space ``[0, 1]``:

``mifgsm``
    MI-FGSM (Dong et al., CVPR 2018) from torchattacks, run on :class:`LogitEnsemble` (the mean of the
    surrogates' logits): the classic baseline.
``sam``, ``cse``, ``cwa``
    The ensemble attacks of Chen et al., *Rethinking Model Ensemble in Transfer-based Adversarial Attacks*
    (ICLR 2024), written here as ``torchattacks.attack.Attack`` subclasses because no library ships them.
    CWA (*Common Weakness Attack*) = SAM (flat regions of the ensemble loss) + CSE (gradients of the
    surrogates that agree, i.e. a high cosine similarity).

The update rules (one outer step ``t``, ``x_t`` the current image, ``x_0`` the clean one, ``L`` the
cross-entropy, ``L_ens`` the cross-entropy of the mean logits, ``Pi`` the projection onto the epsilon ball
and ``[0, 1]``; momentum ``m`` starts at 0, ``mu`` is the decay)::

    SAM:  x_r = Pi(x_t - r * sign(grad L_ens(x_t)))                       # flattening step *down* the loss
          g   = grad L_ens(x_r)
          m   = mu * m + g / ||g||_1
          x_{t+1} = Pi(x_t + alpha * sign(m))

    CSE:  x^0 = x_t
          for i = 1..n (surrogates one by one):                          # inner pass
              g_i = grad L(f_i(x^{i-1}))
              v   = mu * v + g_i / ||g_i||_2                             # inner momentum (kept across t)
              x^i = Pi(x^{i-1} + beta * v)
          d = x^n - x_t                                                   # total displacement
          m = mu * m + d / ||d||_1
          x_{t+1} = Pi(x_t + alpha * sign(m))                             # MI-FGSM-style outer update

    CWA:  x_r = Pi(x_t - r * sign(grad L_ens(x_t)))                       # SAM's flattening step
          CSE's inner pass starting from x^0 = x_r
          d = x^n - x_t  (displacement from the point *before* flattening)
          m = mu * m + d / ||d||_1
          x_{t+1} = Pi(x_t + alpha * sign(m))

What the book uses, next to the authors' code (``MI_SAM`` in ``SharpnessAware.py``,
``MI_CosineSimilarityEncourager`` and ``MI_CommonWeakness`` in ``CommonWeakness.py`` of
github.com/huanranchen/AdversarialAttacks, read at commit 1e29ebe). The update rules above are theirs; the
step sizes and two details differ, on purpose:

============================  =====================================  ===========================================
setting                       authors' code (ImageNet, eps 16/255)   this book
============================  =====================================  ===========================================
outer step of SAM             ``step_size`` = 16/255/5                alpha = eps/5
outer step of CSE and CWA     ``end_attack``'s ``ksi`` = 16/255/5,    alpha = eps/5 (the same step as SAM's)
                              fixed: the class's ``step_size`` is
                              not used, whatever the epsilon
reverse (flattening) step     16/255/10 (SAM), 16/255/15 (CWA)        eps/10 (SAM), eps/15 (CWA)
inner step beta               50 (CSE), 250 (CWA), for 224x224x3      250 * sqrt(d / 150528) for both, d input
                                                                      values (CIFAR-10: 250 * 0.14 = 35)
ensemble loss                 cross-entropy of the *summed* logits    of the *mean* logits (sign steps unchanged)
outer L1 normalisation        SAM per image; CSE/CWA over the whole   per image for all three
                              batch
SAM's second gradient         accumulates onto the first (``x.grad``  the gradient at the flattened point alone
                              is not cleared between the two steps)
============================  =====================================  ===========================================

Why: every default of the authors' code is an absolute number set for epsilon 16/255; the chapters attack at
8/255 and sweep epsilon, and fixed steps would make the attack at a small budget a two-step sign attack and
at 16/255 the authors' one. Steps proportional to epsilon equal the authors' at 16/255 and keep the same
number of steps to cross the ball at every budget. beta is scaled to the input size so that the inner step
per pixel is the authors' (CWA's 250; CSE therefore takes a larger inner step than the authors' 50, the same
as CWA's, so that the two differ only by SAM's flattening step, which is the comparison Chen et al. draw).
Per-image normalisation makes an image's update independent of its batch mates (with the whole-batch L1
norm the result would depend on the batch size, which differs between presets). At eps 16/255 on 224x224
images, SAM and CWA here take the authors' step sizes; CSE's inner step is 5x theirs.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from robustnb import registry
from robustnb.attacks.base import CheckedAttack, check_epsilon, check_step, check_steps, checked
from robustnb.checks import one_or_more
from robustnb.config import ConfigError

registry.TRANSFER_ATTACKS.add("mifgsm", checked(torchattacks.MIFGSM))  # run on the LogitEnsemble of the surrogates


def surrogate_list(models, name: str = "surrogates") -> list[nn.Module]:
    """One model or several as a list of models (:func:`robustnb.checks.one_or_more`): a single classifier is an
    ensemble of one, never its layers; anything but models, or none, is refused naming ``name``."""
    return one_or_more(models, name, nn.Module, empty=False, what="model")

_IMAGENET_DIM = 3 * 224 * 224


class LogitEnsemble(nn.Module):
    """The mean of several models' logits, as one module (the surrogate ensemble of MI-FGSM)."""

    def __init__(self, models: Sequence[nn.Module] | nn.Module):
        super().__init__()
        self.members = nn.ModuleList(surrogate_list(models, "models"))

    def forward(self, x):
        return torch.stack([m(x) for m in self.members]).mean(0)


class _EnsembleTransferAttack(CheckedAttack, torchattacks.attack.Attack):
    """Shared parts of SAM / CSE / CWA: parameters, projection and the two kinds of steps; calling one checks
    the images and labels (:class:`robustnb.attacks.base.CheckedAttack`)."""

    use_flatten = False
    use_inner = False
    reverse_fraction = 15  # the default reverse step is eps / reverse_fraction (SAM: 10, CWA: 15)

    def __init__(self, models: Sequence[nn.Module], eps: float = 8 / 255, alpha: float | None = None,
                 steps: int = 10, decay: float = 1.0, reverse_step: float | None = None,
                 inner_step: float | None = None):
        models = surrogate_list(models, "models")
        ensemble = LogitEnsemble(models)
        super().__init__(type(self).__name__, ensemble)
        self.models = models
        self.eps = check_epsilon(eps, "eps")
        self.alpha = self.eps / 5 if alpha is None else check_step(alpha, "alpha")
        self.reverse_step = (self.eps / self.reverse_fraction if reverse_step is None
                             else check_step(reverse_step, "reverse_step"))
        self.inner_step = None if inner_step is None else check_step(inner_step, "inner_step")
        self.steps, self.decay = check_steps(steps), check_step(decay, "decay")
        self.supported_mode = ["default"]

    # -------------------------------------------------------------------------------- helpers
    def _project(self, x, x0):
        return torch.min(torch.max(x, x0 - self.eps), x0 + self.eps).clamp(0, 1).detach()

    @staticmethod
    def _grad(fn, x, y):
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(fn(x), y)
        return torch.autograd.grad(loss, x)[0].detach()

    @staticmethod
    def _norm(t, p):
        return t.flatten(1).norm(p=p, dim=1).clamp_min(1e-12).view(-1, *([1] * (t.ndim - 1)))

    def _beta(self, x):
        if self.inner_step is not None:
            return float(self.inner_step)
        return 250.0 * math.sqrt(x[0].numel() / _IMAGENET_DIM)

    # -------------------------------------------------------------------------------- attack
    def forward(self, images, labels):
        if len(images) == 0:
            return images.clone()
        x0 = images.clone().detach().to(self.device)
        y = labels.clone().detach().to(self.device)
        x = x0.clone()
        outer = torch.zeros_like(x0)
        inner = torch.zeros_like(x0)
        beta = self._beta(x0)
        for _ in range(self.steps):
            start = x
            if self.use_flatten:  # SAM: a step *down* the ensemble loss, to a flatter point
                x = self._project(x - self.reverse_step * self._grad(self.get_logits, x, y).sign(), x0)
            if self.use_inner:  # CSE: one pass over the surrogates with L2-normalised inner momentum
                for model in self.models:
                    g = self._grad(model, x, y)
                    inner = self.decay * inner + g / self._norm(g, 2)
                    x = self._project(x + beta * inner, x0)
                direction = x - start
            else:  # SAM alone: the ensemble gradient at the flattened point
                direction = self._grad(self.get_logits, x, y)
            outer = self.decay * outer + direction / self._norm(direction, 1)
            x = self._project(start + self.alpha * outer.sign(), x0)
        return x


@registry.TRANSFER_ATTACKS.register("sam")
class SAM(_EnsembleTransferAttack):
    """MI-SAM: flatten (step down the ensemble loss), then an MI-FGSM step with the gradient found there."""

    use_flatten, use_inner = True, False
    reverse_fraction = 10  # MI_SAM's reverse step is eps/10 in the authors' code (CWA's is eps/15)


@registry.TRANSFER_ATTACKS.register("cse")
class CSE(_EnsembleTransferAttack):
    """MI-CSE: surrogates one by one with an L2-normalised inner momentum, then an MI-FGSM outer step."""

    use_flatten, use_inner = False, True


@registry.TRANSFER_ATTACKS.register("cwa")
class CWA(_EnsembleTransferAttack):
    """Common Weakness Attack = SAM's flattening step + CSE's inner pass + MI-FGSM outer update."""

    use_flatten, use_inner = True, True


def _transfer_maker(key: str):
    """The maker of transfer attack ``key``: ``(surrogates, eps=8/255, steps=10, alpha=None, decay=1.0, **kw)``.

    ``alpha`` (outer step) defaults to ``eps / 5`` for all four (the authors' 16/255/5 at eps 16/255; see
    the module docstring for how the book's steps relate to theirs); ``kw`` goes to
    SAM/CSE/CWA (``reverse_step``, ``inner_step``). The surrogates are put in eval mode."""
    def make(surrogates: Sequence[nn.Module] | nn.Module, eps: float = 8 / 255, steps: int = 10,
             alpha: float | None = None, decay: float = 1.0, **kw) -> torchattacks.attack.Attack:
        eps = check_epsilon(eps, "eps")
        alpha = eps / 5 if alpha is None else check_step(alpha, "alpha")
        steps, decay = check_steps(steps), check_step(decay, "decay")
        surrogates = surrogate_list(surrogates)
        for m in surrogates:
            m.eval()
        if key == "mifgsm":
            if kw:
                raise ConfigError(f"mifgsm takes no extra arguments {sorted(kw)}.")
            return registry.TRANSFER_ATTACKS.get("mifgsm")(LogitEnsemble(surrogates), eps=eps, alpha=alpha,
                                                           steps=steps, decay=decay)
        return registry.TRANSFER_ATTACKS.get(key)(surrogates, eps=eps, alpha=alpha, steps=steps, decay=decay, **kw)

    return make


for _key in registry.TRANSFER_ATTACKS.names():
    registry.TRANSFER_ATTACKS.set_maker(_key, _transfer_maker(_key),
                                        settings=() if _key == "mifgsm" else ("reverse_step", "inner_step"))


def make_transfer_attack(name: str, surrogates: Sequence[nn.Module], eps: float = 8 / 255, steps: int = 10,
                         alpha: float | None = None, decay: float = 1.0, **kw) -> torchattacks.attack.Attack:
    """A transfer attack on a list of surrogate models by name: ``mifgsm``, ``sam``, ``cse`` or ``cwa``
    (:func:`_transfer_maker`; the same as ``robustnb.mechanisms.make("transfer attack", name, surrogates, ...)``)."""
    key = registry.TRANSFER_ATTACKS.check(name.lower() if isinstance(name, str) else name)
    return registry.TRANSFER_ATTACKS.make(key, surrogates, eps=eps, steps=steps, alpha=alpha, decay=decay, **kw)
