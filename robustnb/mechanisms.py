"""``make(kind, name, ...)``: the one call that builds anything the book chooses by name.

Every attack, transfer attack, defense, corruption, architecture and vote is registered by name in
:mod:`robustnb.registry` with its *maker*; this module imports the modules that fill the registries and looks the
name up, so an unknown name fails with the list of the registered ones, and a new entry is usable everywhere once
its module registers it::

    >>> make("attack", "pgd", model, eps=8/255, steps=10)            # a torchattacks PGD, alpha = eps / 4
    >>> make("attack", "entropy", split_model, eps=8/255, steps=10, draws=2)
    >>> make("transfer attack", "cwa", surrogates, eps=8/255, steps=10)
    >>> make("defense", "disentangled_tv", model_bit_map(model), settings)
    >>> make("corruption", "fog", severity=3)(images)                # a function of the images
    >>> make("architecture", "resnet18", 10, 3, 32)                  # robustnb.models.build_classifier
    >>> make("vote", "hard")                                         # the voting function

The arguments after the name go to the entry's maker; see :data:`SIGNATURES` for each kind. A setting the maker
does not take is refused before anything is built, naming it and the allowed ones (:func:`settings`)::

    >>> make("defense", "jpeg", qualty=50)
    robustnb.config.ConfigError: Unknown setting 'qualty' (did you mean 'quality'?) for defense 'jpeg': allowed
    are 'bit_map_fn', 'settings', 'quality'.
"""

from __future__ import annotations

from typing import Any

from robustnb import attacks, corruptions, defenses, ensembles, models, registry  # noqa: F401  (fill the registries)
from robustnb.config import ConfigError

KINDS: dict[str, registry.Registry] = {
    "attack": registry.ATTACKS,
    "transfer attack": registry.TRANSFER_ATTACKS,
    "defense": registry.DEFENSES,
    "corruption": registry.CORRUPTIONS,
    "architecture": registry.ARCHITECTURES,
    "vote": registry.VOTES,
}
#: what each kind's maker takes, and what it returns
SIGNATURES = {
    "attack": "(model, eps=..., **settings) -> a torchattacks Attack (salt_pepper takes no eps; adaptive_entropy "
              "takes defense=...)",
    "transfer attack": "(surrogates, eps=8/255, steps=10, alpha=None, decay=1.0, **settings) -> a torchattacks Attack",
    "defense": "(bit_map_fn=None, settings=None, **overrides) -> a Defense (an nn.Module)",
    "corruption": "(severity=3, seed=0) -> a function images -> corrupted images",
    "architecture": "(num_classes=10, in_channels=3, image_size=32, mean=None, std=None, **settings) -> nn.Sequential",
    "vote": "(weights=None) -> the voting function (logits, weights=None) -> scores",
}


def make(kind: str, name: str, *args, **settings) -> Any:
    """Build registry ``kind``'s entry ``name`` with its maker (see :data:`SIGNATURES`)."""
    if kind not in KINDS:
        raise ConfigError(f"Unknown kind {kind!r}: choose one of {', '.join(map(repr, KINDS))}.")
    return KINDS[kind].make(name, *args, **settings)


def settings(kind: str, name: str) -> tuple[str, ...]:
    """The keyword settings registry ``kind``'s entry ``name`` takes (:meth:`robustnb.registry.Registry.settings`)."""
    if kind not in KINDS:
        raise ConfigError(f"Unknown kind {kind!r}: choose one of {', '.join(map(repr, KINDS))}.")
    return KINDS[kind].settings(name)


def names(kind: str, **where) -> tuple[str, ...]:
    """The registered names of ``kind`` (``names("attack", group="rate")``)."""
    if kind not in KINDS:
        raise ConfigError(f"Unknown kind {kind!r}: choose one of {', '.join(map(repr, KINDS))}.")
    return KINDS[kind].names(**where)
