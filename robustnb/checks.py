"""Input checks shared by every public entry point: image batches and numeric settings.

One check per kind of input, each raising :class:`robustnb.config.ConfigError` with the bad value and the
allowed range, so a mistake fails at the call that made it instead of deep inside torch or CompressAI:

* :func:`check_images`: a float tensor ``(N, C, H, W)`` with values in ``[0, 1]``, finite; ``N = 0`` is allowed
  (entry points return an empty batch for it). Catches 0-255 images, HWC layout, single images without the
  batch dimension, integer dtypes and NaNs. Reading the values back is a host-device synchronisation, so on a GPU
  only the shape and dtype are checked unless the caller asks for the values (``values=True``, once per batch at
  an entry point) or :func:`check_device_values` is on: a split model's encoder checks its input on every
  forward, and a sync there would stall the GPU at each training step.
* :func:`check_labels`: one integer class index per image (the lengths of images and labels must agree).
* :func:`check_number`: a real number (not a bool, not NaN), finite unless allowed, inside an interval,
  integral where it must be (Python and NumPy integers alike).
* :func:`check_flag` (a real ``True``/``False``, not the string ``"no"``) and :func:`check_choice` (one of a few
  names).
* :func:`one_or_more`: the one rule for an argument that takes one value or several: a single value (a name, a
  number, a model, a job) is a sequence of one, never iterated by character or by layer; a mapping, or an item
  of the wrong type, is refused naming the argument.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from robustnb.config import ConfigError, ConfigTypeError

IMAGE_CHANNELS = (1, 3)
_STATE = {"device_values": False}


def check_device_values(on: bool) -> None:
    """Check the values of images on a GPU too, at every :func:`check_images` (a host sync each: for debugging)."""
    _STATE["device_values"] = check_flag(on, "on")


def check_images(x, name: str = "images", values: bool | None = None) -> torch.Tensor:
    """Return ``x`` if it is a batch of images ``(N, C, H, W)`` in ``[0, 1]`` (C = 1 or 3), else raise.

    The shape, channels and dtype are always checked (no computation). The values (finite, in ``[0, 1]``) are
    read when ``values`` is True, and by default (``None``) for tensors on the CPU only, or on every device while
    :func:`check_device_values` is on: reading them from a GPU waits for all its queued work.
    """
    if not isinstance(x, torch.Tensor):
        raise ConfigTypeError(f"{name} must be a torch.Tensor of shape (N, C, H, W) in [0, 1], got {type(x).__name__}.")
    if x.dim() != 4:
        hint = " (a single image? use x[None] to add the batch dimension)" if x.dim() == 3 else ""
        raise ConfigError(f"{name} must be 4-D (N, C, H, W), got shape {tuple(x.shape)}{hint}.")
    if x.shape[1] not in IMAGE_CHANNELS:
        hint = " (channels last? use x.permute(0, 3, 1, 2))" if x.shape[-1] in IMAGE_CHANNELS else ""
        raise ConfigError(f"{name} must have 1 or 3 channels in dimension 1 (N, C, H, W), got shape "
                          f"{tuple(x.shape)}{hint}.")
    if not torch.is_floating_point(x):
        raise ConfigTypeError(f"{name} must be a float tensor with values in [0, 1], got dtype {x.dtype} "
                          "(for uint8 images use x.float() / 255).")
    if x.numel() == 0:
        return x
    if values is None:
        values = x.device.type == "cpu" or _STATE["device_values"]
    if not values or x.device.type == "meta":
        return x
    with torch.no_grad():  # one pass and one device sync: min and max are NaN / inf whenever a value is
        lo, hi = (float(v) for v in torch.stack(torch.aminmax(x.detach())).float().tolist())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        with torch.no_grad():
            nans, infs = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
        what = ", ".join(f"{k} {w}" for k, w in ((nans, "NaN"), (infs, "infinite")) if k)
        raise ConfigError(f"{name} must be finite with values in [0, 1], got {what} value(s).")
    if lo < -1e-6 or hi > 1 + 1e-6:
        hint = " (0-255 images? divide by 255)" if hi > 1.5 else ""
        raise ConfigError(f"{name} must have values in [0, 1], got [{lo:.4g}, {hi:.4g}]{hint}.")
    return x


def check_labels(labels, images, name: str = "labels", images_name: str = "images") -> torch.Tensor:
    """Return ``labels`` if it is one class index per image of ``images``: an integer tensor ``(N,)`` with
    ``N = len(images)`` and no negative value; else raise naming both lengths (or the bad dtype / shape)."""
    n = len(images)
    if not isinstance(labels, torch.Tensor):
        raise ConfigTypeError(f"{name} must be a torch.Tensor of {n} class indices (one per image), got "
                              f"{type(labels).__name__}.")
    if labels.dim() != 1:
        raise ConfigError(f"{name} must be 1-D (one class index per image), got shape {tuple(labels.shape)}.")
    if len(labels) != n:
        raise ConfigError(f"{name} and {images_name} must have the same length (one label per image), got "
                          f"{len(labels)} {name} for {n} {images_name}.")
    if torch.is_floating_point(labels) or torch.is_complex(labels) or labels.dtype == torch.bool:
        raise ConfigTypeError(f"{name} must be integer class indices (torch.long), got dtype {labels.dtype}.")
    if len(labels) and int(labels.min()) < 0:
        raise ConfigError(f"{name} must be class indices >= 0, got {int(labels.min())}.")
    return labels


def check_number(value, name: str, lo: float | None = None, hi: float | None = None, *, integer: bool = False,
                 lo_open: bool = False, hi_open: bool = False):
    """Return ``value`` as ``int`` (``integer=True``) or ``float`` if it lies in the interval, else raise.

    Bounds are inclusive unless ``lo_open`` / ``hi_open``; ``None`` means unbounded, and an open unbounded
    side (``[0, inf)``) excludes infinity itself. Booleans, strings and NaN are always rejected.
    """
    interval = (f"{'(' if lo_open else '['}{'-inf' if lo is None else f'{lo:g}'}, "
                f"{'inf' if hi is None else f'{hi:g}'}{')' if hi_open else ']'}")
    what = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool:
            value = value.item()
        else:
            raise ConfigError(f"{name} must be {what} in {interval}, got {value!r}.")
    if integer:
        if not isinstance(value, numbers.Integral):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"{name} must be {what} in {interval}, got {value!r}.")
        value = int(value)
    else:
        value = float(value)
        if math.isnan(value):
            raise ConfigError(f"{name} must be {what} in {interval}, got nan.")
    bad = ((lo is not None and (value < lo or (lo_open and value == lo)))
           or (hi is not None and (value > hi or (hi_open and value == hi)))
           or (not integer and math.isinf(value)
               and ((value > 0 and hi is None and hi_open) or (value < 0 and lo is None and lo_open))))
    if bad:
        raise ConfigError(f"{name}={value!r} is out of range: allowed is {interval}.")
    return value


def check_flag(value, name: str) -> bool:
    """Return ``value`` if it is ``True`` or ``False`` (a NumPy bool too), else raise: ``bool("no")`` is True."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise ConfigError(f"{name} must be True or False, got {value!r}.")


def check_choice(value, name: str, choices) -> str:
    """Return ``value`` if it is one of ``choices``, else raise naming them."""
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}.")
    return value


#: values that are one item even though Python can iterate them: a name (by character), a model (nn.Sequential:
#: by layer), a tensor with one value
_ATOMS = (str, bytes, numbers.Number)


def one_or_more(value, name: str, item: type | tuple[type, ...] | None = None, *, empty: bool = True,
                what: str | None = None) -> list:
    """``value`` as a list: one value (a string, a number, a 0-d tensor, an ``nn.Module`` other than an
    ``nn.ModuleList``, or anything of type ``item``) becomes a list of one; a sequence, set, generator, 1-d
    tensor or ``nn.ModuleList`` becomes the list of its items. The package's one rule for arguments that take
    one value or several (attack names, epsilons, surrogate models, jobs, nodes ...): never iterated by
    character or by layer.

    Refused with :class:`~robustnb.config.ConfigError` naming ``name``: ``None``, a mapping (its keys or its
    values? say which with ``list(d.values())``), an item that is not an ``item``, and (``empty=False``) no item.
    ``what`` names an item in the messages (default: the type's name).
    """
    what = what or (" or ".join(t.__name__ for t in (item if isinstance(item, tuple) else (item,))) if item
                    else "value")
    what = f"an {what}" if what[0].lower() in "aeiou" else f"a {what}"
    if value is None:
        raise ConfigTypeError(f"{name} must be {what} or a sequence of them, got None.")
    if isinstance(value, Mapping):
        raise ConfigTypeError(f"{name} must be {what} or a sequence of them, got a {type(value).__name__} (pass "
                              f"list(d.values()) or list(d) to say which).")
    if isinstance(value, nn.ModuleList):
        single = False
    else:
        single = (isinstance(value, _ATOMS) or getattr(value, "ndim", None) == 0 or isinstance(value, nn.Module)
                  or (item is not None and isinstance(value, item) and not isinstance(value, (list, tuple)))
                  or not isinstance(value, Iterable))
    items = [value] if single else list(value)
    if item is not None:
        for i, v in enumerate(items):
            if not isinstance(v, item):
                where = "" if single else f" at position {i}"
                raise ConfigTypeError(f"{name} must be {what} or a sequence of them, got {type(v).__name__}"
                                      f"{where}: {v!r:.80}.")
    if not empty and not items:
        raise ConfigError(f"{name} needs at least one {what.split(' ', 1)[1]}, got none.")
    return items


__all__ = ["check_images", "check_device_values", "check_labels", "check_number", "check_flag", "check_choice",
           "one_or_more"]
