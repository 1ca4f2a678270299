"""What every attack shares: the input checks of a call, the epsilon check, the ball/box check and the batched
runner.

Images are in ``[0, 1]`` and epsilon is a radius in the same units (``8/255``), in the norm the attack's registry
entry declares (:func:`budget`; L-inf unless it says otherwise, :data:`NORMS`). Every attack the package
hands out checks its inputs when called (:class:`CheckedAttack`): the package's own attacks inherit it, and the
torchattacks classes are registered through :func:`checked`, a subclass whose call does the same, so
``make_attack("pgd", model, 8/255)(x, y)`` refuses 0-255, HWC, 2-D or NaN images and labels of another length
with :class:`robustnb.config.ConfigError` instead of a traceback from inside torch.

Every parameter of an attack is checked where the attack is made, whichever library implements it: the
package's attacks check theirs in ``__init__``; a torchattacks class wrapped by :func:`checked` checks each of
its parameters with :data:`TORCHATTACKS_PARAMETERS` (a NaN step size, a fractional or negative number of steps,
a string for a flag are refused naming the parameter and its allowed range, instead of all-NaN images or an
error deep inside torchattacks).
"""

from __future__ import annotations

import inspect

import torch

from robustnb import registry
from robustnb.checks import check_choice, check_flag, check_images, check_labels, check_number
from robustnb.config import ConfigError, ConfigTypeError
from robustnb.progress import note, tqdm

EPS_MAX = 64 / 255  # the largest L-inf radius any chapter uses is 32/255; 64/255 leaves room
#: an attack's budget is its registry entry's (``norm=`` in ``registry.ATTACKS.add``/``register``, L-inf when not
#: given): the norm -> the largest radius it accepts, in [0, 1] pixel units (an L2 radius of 8 is a change of 0.14
#: per value of a 3 x 32 x 32 image)
NORMS = {"Linf": EPS_MAX, "L2": 8.0}


class CheckedAttack:
    """Mixin for a :class:`torchattacks.attack.Attack`: calling the attack checks ``images``
    (:func:`robustnb.checks.check_images`, and of the model's float dtype) and ``labels`` (one integer label per
    image, :func:`robustnb.checks.check_labels`) before the attack runs.

    ``needs_labels``: the attack cannot run without labels (untargeted attacks on the true labels); otherwise
    labels may be ``None`` and are checked when given. ``pass_empty``: an empty batch comes back as an empty copy
    without running the attack (for attacks whose own code does not handle it).
    """

    needs_labels = True
    pass_empty = False

    def __call__(self, images, labels=None, *args, **kwargs):
        check_images(images)
        weight = next(self.model.parameters(), None)  # int8 models have none
        if weight is not None and torch.is_floating_point(weight) and images.dtype != weight.dtype:
            raise ConfigTypeError(f"images are {images.dtype} but the model computes in {weight.dtype}: convert them "
                                  f"with images.to({weight.dtype}).")
        if labels is None and self.needs_labels:
            raise ConfigError(f"{type(self).__name__} needs labels: call it as attack(images, labels) with one "
                              f"class index per image ({len(images)} images).")
        if labels is not None:
            check_labels(labels, images)
        if self.pass_empty and len(images) == 0:
            return images.clone()
        return super().__call__(images, labels, *args, **kwargs)


def check_norm(norm, name: str = "norm") -> str:
    """One of :data:`NORMS`' names."""
    return check_choice(norm, name, tuple(NORMS))


def budget(attack: str) -> tuple[str, float]:
    """``(norm, largest epsilon)`` of the attack registered as ``attack`` (its entry's ``norm``, L-inf when the
    entry declares none)."""
    norm = check_norm(registry.ATTACKS.meta(attack).get("norm", "Linf"), f"the norm of attack {attack!r}")
    return norm, NORMS[norm]


def check_epsilon(eps, name: str = "epsilon", max_eps: float | None = None, norm: str = "Linf") -> float:
    """Return ``eps`` as a float in ``[0, max_eps]`` (default: the ``norm``'s largest radius, :data:`NORMS`) or
    raise a clear error naming the norm (with a hint for 8 vs 8/255 under L-inf)."""
    norm = check_norm(norm)
    max_eps = NORMS[norm] if max_eps is None else max_eps
    try:
        return check_number(eps, name, 0.0, max_eps)
    except Exception as e:
        value = eps if isinstance(eps, (int, float)) and not isinstance(eps, bool) else None
        hint = (f" Did you mean {value:g}/255 = {value / 255:.4f}?"
                if norm == "Linf" and value is not None and 1 <= value <= 255 else "")
        top = f"{round(max_eps * 255)}/255 = {max_eps:.4f}" if norm == "Linf" else f"{max_eps:g}"
        raise type(e)(f"{e} Epsilon is an {norm.replace('inf', '-inf')} radius for pixel values in [0, 1]: 0 to "
                      f"{top}.{hint}") from None


def check_step(alpha, name: str = "alpha") -> float:
    """A step size: a finite number >= 0."""
    return check_number(alpha, name, 0.0, None, hi_open=True)


def check_steps(steps, name: str = "steps", minimum: int = 0) -> int:
    """A number of iterations: an integer >= ``minimum``."""
    return check_number(steps, name, minimum, None, integer=True, hi_open=True)


def check_seed(seed, name: str = "seed") -> int | None:
    """A seed: ``None`` or an integer >= 0."""
    return None if seed is None else check_steps(seed, name)


#: the check of every parameter a torchattacks class registered here takes (besides the model), with its allowed
#: range: :func:`checked` refuses to wrap a class with a parameter missing here
TORCHATTACKS_PARAMETERS = {
    "eps": check_epsilon,
    "alpha": check_step,                                                    # step size, [0, inf)
    "steps": check_steps,                                                   # 0: the clean (or random-start) images
    "decay": check_step,                                                    # MI-FGSM's momentum decay, [0, inf)
    "random_start": check_flag,
    "norm": lambda v, name: check_choice(v, name, ("Linf",)),               # AutoAttack's: its entry is L-inf
    "eps_for_division": lambda v, name: check_number(v, name, 0.0, 1.0, lo_open=True),  # PGDL2's guard
    "version": lambda v, name: check_choice(v, name, ("standard", "plus", "rand")),
    "n_classes": lambda v, name: check_number(v, name, 2, None, integer=True),
    "seed": check_seed,
    "verbose": check_flag,
}


#: per torchattacks class, checks that replace those of :data:`TORCHATTACKS_PARAMETERS`: BIM's ``steps=0`` means
#: "choose the number of steps from epsilon", not zero steps, so it is refused there
CLASS_PARAMETERS = {"BIM": {"steps": lambda v, name: check_steps(v, name, minimum=1)}}


def attack_parameters(cls: type) -> tuple[str, ...]:
    """The parameters of attack class ``cls`` after the model (or surrogates), in order."""
    return tuple(list(inspect.signature(cls.__init__).parameters)[2:])


def checked(cls: type, needs_labels: bool = True, norm: str = "Linf") -> type:
    """A subclass of the torchattacks attack class ``cls`` that checks its parameters when made
    (:data:`TORCHATTACKS_PARAMETERS`, epsilon as a ``norm`` radius; an unknown one is refused naming the allowed
    ones) and its inputs when called (:class:`CheckedAttack`); same name, same arguments, ``isinstance(attack,
    cls)`` holds."""
    signature = inspect.signature(cls.__init__)
    params = attack_parameters(cls)
    norm = check_norm(norm)
    checks = {**TORCHATTACKS_PARAMETERS, **CLASS_PARAMETERS.get(cls.__name__, {}),
              "eps": lambda v, name: check_epsilon(v, name, norm=norm)}
    unchecked = [p for p in params if p not in TORCHATTACKS_PARAMETERS]
    if unchecked:
        raise TypeError(f"{cls.__name__}'s parameters {unchecked} have no check in TORCHATTACKS_PARAMETERS.")

    def __init__(self, model, *args, **kw):
        unknown = [k for k in kw if k not in params]
        if unknown:
            raise ConfigError(f"{cls.__name__} takes no setting {', '.join(map(repr, unknown))}: allowed are "
                              f"{', '.join(map(repr, params))}.")
        try:
            bound = signature.bind(self, model, *args, **kw)
        except TypeError as e:
            raise ConfigTypeError(f"{cls.__name__}: {e} (its parameters: {', '.join(params)}).") from None
        for name in params:
            if name in bound.arguments:
                bound.arguments[name] = checks[name](bound.arguments[name], name)
        cls.__init__(*bound.args, **bound.kwargs)

    return type(cls.__name__, (CheckedAttack, cls),
                {"__module__": __name__, "__doc__": cls.__doc__, "__qualname__": cls.__qualname__,
                 "__init__": __init__, "__signature__": signature.replace(
                     parameters=list(signature.parameters.values())[1:]),
                 "needs_labels": needs_labels, "pass_empty": True})


def check_in_ball(x_adv: torch.Tensor, x: torch.Tensor, eps: float, tol: float = 1e-6, norm: str = "Linf") -> None:
    """Assert the ``norm`` ball of radius ``eps`` around each image (an attack's norm: :func:`budget`) and the
    [0, 1] box (used by tests and after every custom attack)."""
    norm = check_norm(norm)
    if x_adv.numel() == 0:
        return
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "Linf" else delta.norm(dim=1)
    if size.max() > eps + tol or x_adv.min() < -tol or x_adv.max() > 1 + tol:
        raise AssertionError(f"adversarial example left the {norm} ball of radius {eps:g} ({size.max():g}) or [0, 1]")


def eps_label(eps: float, norm: str = "Linf") -> str:
    """A radius as the book writes it: L-inf in 1/255 units (``8/255``, ``0``), other norms as the number
    (``0.5``)."""
    if check_norm(norm) != "Linf" or eps == 0:
        return f"{eps:g}"
    return f"{round(eps * 255, 3):g}/255"


def perturb(attack, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 256,
            desc: str | None = None) -> torch.Tensor:
    """Run ``attack(x, y)`` over ``x`` in batches (CPU result, same order); an empty batch comes back empty.
    ``y`` may be ``None`` for attacks that need no labels (they get zeros); otherwise one label per image."""
    check_images(x)
    batch_size = check_number(batch_size, "batch_size", 1, None, integer=True)
    if y is None:
        y = torch.zeros(len(x), dtype=torch.long)
    check_labels(y, x)
    outs = []
    starts = range(0, len(x), batch_size)
    name = desc or type(attack).__name__
    for k, i in enumerate(tqdm(starts, desc=name, leave=False, disable=len(starts) < 2)):
        note(f"attacking: {name} batch {k + 1}/{len(starts)}")
        outs.append(attack(x[i:i + batch_size], y[i:i + batch_size]).detach().cpu())
    return torch.cat(outs) if outs else x.clone()
