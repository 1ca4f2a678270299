"""One registry for everything the book chooses by name: attacks, defenses, corruptions, architectures.

A :class:`Registry` maps names to objects (classes or factories). Entries are added with the ``register``
decorator (or ``add``); :meth:`Registry.get` returns the entry or raises the package's one error for an
unknown name, naming the bad value and every allowed one::

    >>> from robustnb.registry import ATTACKS
    >>> ATTACKS.get("fsgm")
    Traceback (most recent call last):
    ...
    robustnb.config.ConfigError: Unknown attack 'fsgm': choose one of 'fgsm', 'pgd', ...

Each entry has a *maker*, the one way to build it: the registered object itself (a class, a function) unless the
module registering it gives another, e.g. one that fills in the book's default steps. :meth:`Registry.make` calls
it; chapters build everything chosen by name through :func:`robustnb.mechanisms.make` (``make("attack", "pgd",
model, eps=8/255)``), which also imports the modules that fill the registries.

:meth:`Registry.make` refuses a setting the maker does not take, naming it and the allowed ones, before anything
is built: the allowed settings are the maker's named parameters, and for a maker that passes ``**settings`` on,
the names its module declares (``add(..., settings=(...))``), so a misspelt setting is never dropped silently.

The registries themselves live here, empty; each mechanism module fills its own on import
(``robustnb.attacks`` the attacks, ``robustnb.defenses`` the defenses, ...), so this module depends on
nothing but :mod:`robustnb.config`. No other module binds a registry's name to anything else: read the names
with ``registry.DEFENSES.names()``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from typing import Any, Callable, Iterator

from robustnb.config import ConfigError


class Registry(Mapping):
    """Names -> objects, in registration order, with one error message for unknown names.

    A read-only mapping (``items()``, ``len``, ``in`` ...); unlike ``dict.get``, :meth:`get` and ``[]`` raise
    :class:`ConfigError` for an unknown name instead of returning a default."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._meta: dict[str, dict] = {}
        self._makers: dict[str, Callable[..., Any]] = {}
        self._declared: dict[str, tuple[str, ...] | None] = {}

    def register(self, name: str, maker: Callable[..., Any] | None = None, settings=None,
                 **meta) -> Callable[[Any], Any]:
        """Decorator: ``@REGISTRY.register("pgd")`` above a class or function adds it under ``name``.

        Keyword arguments are stored as metadata (:meth:`meta`), e.g. ``group="noise"``; ``maker`` and
        ``settings`` as in :meth:`add`."""
        def deco(obj):
            self.add(name, obj, maker=maker, settings=settings, **meta)
            return obj

        return deco

    def add(self, name: str, obj: Any, maker: Callable[..., Any] | None = None, settings=None, **meta) -> Any:
        """Register ``obj`` under ``name``; :meth:`make` builds it with ``maker`` (default: ``obj`` itself).

        ``settings``: the keyword names a maker with ``**kwargs`` takes beyond its named parameters (what it
        passes on); :meth:`make` refuses any other."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{self.kind} names must be non-empty strings, got {name!r}.")
        if name in self._entries:
            raise ConfigError(f"{self.kind} {name!r} is registered twice.")
        self._entries[name] = obj
        self._meta[name] = dict(meta)
        self._makers[name] = maker if maker is not None else obj
        self._declared[name] = None if settings is None else tuple(settings)
        return obj

    def set_maker(self, name: str, maker: Callable[..., Any], settings=None) -> None:
        """Give an entry registered earlier its maker (for makers defined after the entry's class); ``settings``
        as in :meth:`add`."""
        self._makers[self.check(name)] = maker
        self._declared[name] = None if settings is None else tuple(settings)

    def settings(self, name) -> tuple[str, ...] | None:
        """The keyword settings entry ``name``'s maker takes: its named parameters, and for a maker with
        ``**kwargs`` the names declared with it. ``None`` when a maker with ``**kwargs`` declared none (then
        :meth:`make` cannot check them; every entry of the package declares them)."""
        maker = self._makers[self.check(name)]
        try:
            params = list(inspect.signature(maker).parameters.values())
        except (TypeError, ValueError):  # a builtin without a signature
            params = []
        named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        open_ended = any(p.kind == p.VAR_KEYWORD for p in params) or not params
        declared = self._declared.get(name)
        if open_ended and declared is None:
            return None
        return tuple(dict.fromkeys([*named, *(declared or ())]))

    def make(self, name, *args, **settings) -> Any:
        """Build entry ``name``: its maker called with ``args`` and ``settings``, after checking that the maker
        takes every setting given (else :class:`ConfigError` naming the unknown ones and the allowed ones)."""
        name = self.check(name)
        allowed = self.settings(name)
        unknown = [k for k in settings if allowed is not None and k not in allowed]
        if unknown:
            hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(k, allowed, 1))
                     else repr(k) for k in unknown]
            raise ConfigError(f"Unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(hints)} for {self.kind} "
                              f"{name!r}: allowed are {', '.join(map(repr, allowed)) or 'none'}.")
        return self._makers[name](*args, **settings)

    def check(self, name) -> str:
        """Return ``name`` if it is registered, else raise :class:`ConfigError` listing the allowed names."""
        if not isinstance(name, str) or name not in self._entries:
            raise ConfigError(f"Unknown {self.kind} {name!r}: choose one of {', '.join(map(repr, self._entries))}.")
        return name

    def get(self, name) -> Any:
        """The entry registered as ``name``. There is no default: an unknown name raises :class:`ConfigError`
        listing the allowed ones, so a misspelt name never falls back to something else."""
        return self._entries[self.check(name)]

    __getitem__ = get

    def meta(self, name) -> dict:
        return dict(self._meta[self.check(name)])

    def names(self, **where) -> tuple[str, ...]:
        """Registered names in order; ``names(group="noise")`` keeps those whose metadata match."""
        return tuple(n for n in self._entries if all(self._meta[n].get(k) == v for k, v in where.items()))

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


ATTACKS = Registry("attack")
TRANSFER_ATTACKS = Registry("transfer attack")
DEFENSES = Registry("defense")
CORRUPTIONS = Registry("corruption")
ARCHITECTURES = Registry("architecture")
SPLIT_ARCHITECTURES = Registry("split architecture")
ENTROPY_MODELS = Registry("entropy model")
VOTES = Registry("vote")

__all__ = ["Registry", "ATTACKS", "TRANSFER_ATTACKS", "DEFENSES", "CORRUPTIONS", "ARCHITECTURES", "SPLIT_ARCHITECTURES",
           "ENTROPY_MODELS", "VOTES"]
