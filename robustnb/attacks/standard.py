"""The standard attacks, from torchattacks, chosen by name; and the accuracy-vs-epsilon experiment.

``make_attack("pgd", model, 8/255)`` builds a torchattacks attack from :data:`robustnb.registry.ATTACKS`;
:func:`robustness_curve` runs a list of them over a list of epsilons and returns a tidy frame.

Example::

    >>> atk = make_attack("pgd", model, eps=8/255, steps=10)   # torchattacks.PGD, alpha = eps / 4
    >>> x_adv = perturb(atk, x, y)                             # batched, back on the CPU
"""

from __future__ import annotations

from collections.abc import Mapping

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
    "pgd_l2": (torchattacks.PGDL2, "L2", True),
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
    """A standard torchattacks attack by name (one of :data:`STANDARD`: ``fgsm``, ``pgd``, ...) with the book's
    defaults (:func:`_standard_maker`); calling it checks the images and labels
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


def robustness_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons, attacks=None,
                     batch_size: int = 256, keep_examples: int = 0, **attack_kw):
    """Accuracy under each attack at each epsilon, as a tidy frame. ``attacks`` is one name or a sequence
    (default FGSM and PGD); ``epsilons`` one radius or a sequence (for every attack), or a mapping
    ``{attack: radii}`` (then ``attacks`` defaults to its keys). Each radius is in its attack's norm
    (:func:`robustnb.attacks.base.budget`: ``8/255`` under L-inf, ``0.5`` under L2) and checked against it.

    Returns ``(frame, examples)``: the frame has columns ``attack, epsilon, eps_255, accuracy`` (``eps_255``: the
    L-inf radius in 1/255 units, NaN for an attack of another norm, whose radius is ``epsilon``; label either with
    :func:`robustnb.attacks.base.eps_label`); ``examples`` maps ``(attack, epsilon)`` to the first
    ``keep_examples`` adversarial images.
    """
    check_images(x)
    check_labels(y, x)
    if isinstance(epsilons, Mapping):
        attacks = one_or_more(tuple(epsilons) if attacks is None else attacks, "attacks", str, empty=False)
        missing = [a for a in attacks if a not in epsilons]
        if missing:
            raise ConfigError(f"epsilons gives radii for {sorted(epsilons)}, not for the attacks {missing}.")
        grid = {a: one_or_more(epsilons[a], f"epsilons[{a!r}]", empty=False) for a in attacks}
    else:
        attacks = one_or_more(("fgsm", "pgd") if attacks is None else attacks, "attacks", str, empty=False)
        grid = dict.fromkeys(attacks, one_or_more(epsilons, "epsilons", empty=False))
    norms = {}
    for name in attacks:  # each epsilon within its attack's own budget
        norms[name], _ = budget(registry.ATTACKS.check(name))
        grid[name] = [check_epsilon(e, norm=norms[name]) for e in grid[name]]
    batch_size = check_number(batch_size, "batch_size", 1, None, integer=True)
    keep_examples = check_number(keep_examples, "keep_examples", 0, None, integer=True)
    for name in attacks:  # every attack's settings are checked before the first one runs
        make_attack(name, model, grid[name][0], **attack_kw)
    model.eval()
    rows, examples = [], {}
    for name in attacks:
        for eps in tqdm(grid[name], desc=f"{name} sweep", leave=False):
            x_adv = x if eps == 0 else perturb(make_attack(name, model, eps, **attack_kw), x, y, batch_size)
            rows.append({"attack": name, "epsilon": eps,
                         "eps_255": round(eps * 255, 3) if norms[name] == "Linf" else float("nan"),
                         "accuracy": accuracy(model, (x_adv, y), batch_size)})
            if keep_examples:
                examples[(name, eps)] = x_adv[:keep_examples].clone()
    return pd.DataFrame(rows), examples
