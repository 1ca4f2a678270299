"""The standard attacks, from torchattacks, chosen by name; and the accuracy-vs-epsilon experiment.

``make_attack("pgd", model, 8/255)`` builds a torchattacks attack from :data:`robustnb.registry.ATTACKS`;
:func:`robustness_curve` runs a list of them over a list of epsilons and returns a tidy frame.

Example::

    >>> atk = make_attack("pgd", model, eps=8/255, steps=10)   # torchattacks.PGD, alpha = eps / 4
    >>> x_adv = perturb(atk, x, y)                             # batched, back on the CPU
"""

from __future__ import annotations

import pandas as pd
import torch
import torchattacks
from torch import nn

from robustnb import registry
from robustnb.config import ConfigError
from robustnb.attacks.base import attack_parameters, budget, check_epsilon, checked, perturb
from robustnb.checks import check_images, check_labels, check_number, one_or_more
from robustnb.progress import tqdm
from robustnb.train import accuracy

#: the torchattacks attacks registered here: name -> (class, norm of its budget, iterative: it takes a step size
#: ``alpha`` and a number of ``steps``). A new one is a row here.
STANDARD_ATTACKS = {
    "fgsm": (torchattacks.FGSM, "Linf", False),
    "pgd": (torchattacks.PGD, "Linf", True),
    "mifgsm": (torchattacks.MIFGSM, "Linf", True),
    "bim": (torchattacks.BIM, "Linf", True),
    "autoattack": (torchattacks.AutoAttack, "Linf", False),
}
STANDARD = tuple(STANDARD_ATTACKS)  #: their names


def _standard_maker(key: str, cls: type):
    """The maker of a standard attack: epsilon checked against its entry's budget
    (:func:`robustnb.attacks.base.budget`); iterative attacks default to the usual step ``alpha = eps / 4`` (at
    least 1/255 when eps > 0 under L-inf) and 10 steps; AutoAttack to the model's number of classes."""
    def make(model: nn.Module, eps: float, **kw) -> torchattacks.attack.Attack:
        norm, _ = budget(key)
        eps = check_epsilon(eps, norm=norm)
        if registry.ATTACKS.meta(key)["iterative"]:
            floor = 1 / 255 if norm == "Linf" else 0.0
            kw.setdefault("alpha", max(eps / 4, floor) if eps > 0 else 0.0)
            kw.setdefault("steps", 10)
        if key == "autoattack":
            kw.setdefault("n_classes", _num_classes(model))
        return cls(model, eps=eps, **kw)

    return make


for _name, (_cls, _norm, _iterative) in STANDARD_ATTACKS.items():
    _checked_cls = checked(_cls, norm=_norm)  # the torchattacks class, checking its parameters and its inputs
    registry.ATTACKS.add(_name, _checked_cls, maker=_standard_maker(_name, _checked_cls), group="standard",
                         norm=_norm, iterative=_iterative, settings=[p for p in attack_parameters(_cls) if p != "eps"])


def make_attack(name: str, model: nn.Module, eps: float, **kw) -> torchattacks.attack.Attack:
    """A standard torchattacks attack by name (``fgsm``, ``pgd``, ``mifgsm``, ``bim``, ``autoattack``) with the
    book's defaults (:func:`_standard_maker`); calling it checks the images and labels
    (:func:`robustnb.attacks.base.checked`). Every attack, of any group: :func:`robustnb.mechanisms.make`."""
    key = registry.ATTACKS.check(name.lower() if isinstance(name, str) else name)
    if key not in registry.ATTACKS.names(group="standard"):
        raise ConfigError(f"{name!r} is not a standard attack: make_attack takes one of "
                          f"{', '.join(map(repr, registry.ATTACKS.names(group='standard')))}; build the others with "
                          f"robustnb.mechanisms.make('attack', {name!r}, ...).")
    return registry.ATTACKS.make(key, model, eps, **kw)


def _num_classes(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return last.out_features


def robustness_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons, attacks=("fgsm", "pgd"),
                     batch_size: int = 256, keep_examples: int = 0, **attack_kw):
    """Accuracy under each attack at each epsilon, as a tidy frame. ``attacks`` and ``epsilons`` are one value
    or a sequence (:func:`robustnb.checks.one_or_more`).

    Returns ``(frame, examples)``: the frame has columns ``attack, epsilon, eps_255, accuracy``;
    ``examples`` maps ``(attack, epsilon)`` to the first ``keep_examples`` adversarial images.
    """
    check_images(x)
    check_labels(y, x)
    attacks = one_or_more(attacks, "attacks", str, empty=False)
    epsilons = one_or_more(epsilons, "epsilons", empty=False)
    for name in attacks:  # each epsilon within each attack's own budget
        norm, _ = budget(registry.ATTACKS.check(name))
        epsilons = [check_epsilon(e, norm=norm) for e in epsilons]
    batch_size = check_number(batch_size, "batch_size", 1, None, integer=True)
    keep_examples = check_number(keep_examples, "keep_examples", 0, None, integer=True)
    for name in attacks:  # every attack's settings are checked before the first one runs
        make_attack(name, model, epsilons[0], **attack_kw)
    model.eval()
    rows, examples = [], {}
    for name in attacks:
        for eps in tqdm(epsilons, desc=f"{name} sweep", leave=False):
            x_adv = x if eps == 0 else perturb(make_attack(name, model, eps, **attack_kw), x, y, batch_size)
            rows.append({"attack": name, "epsilon": eps, "eps_255": round(eps * 255, 3),
                         "accuracy": accuracy(model, (x_adv, y), batch_size)})
            if keep_examples:
                examples[(name, eps)] = x_adv[:keep_examples].clone()
    return pd.DataFrame(rows), examples
