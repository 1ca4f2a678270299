"""Presets, device selection, seeding and folders.

A *preset* selects experiment sizes: ``smoke`` (CI: seconds per chapter, barely trained models),
``cpu`` (the default: meaningful results on a 2-core laptop CPU in minutes) and ``full`` (paper scale
on one GPU). Every chapter starts with::

    run = robustnb.setup(preset, seed=seed, device=device)

where ``preset`` comes from the chapter's papermill ``parameters`` cell. ``None`` means "use the
``ROBUSTNB_PRESET`` environment variable, else ``cpu``", so ``ROBUSTNB_PRESET=smoke jupyter-book build .``
builds the whole book at smoke size.

Folders (created on first use):

* ``ROBUSTNB_DATA``  datasets (default ``~/.cache/robustnb/data``); may be read-only.
* ``ROBUSTNB_CACHE`` trained models and decoded datasets (default ``~/.cache/robustnb/cache``).
"""

from __future__ import annotations

import numbers
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from robustnb import cpus

PRESETS = ("smoke", "cpu", "full")
DEFAULT_PRESET = "cpu"
DEVICES = ("auto", "cpu", "cuda", "mps")


class ConfigError(ValueError):
    """A configuration value or an input is not one of the allowed ones (the message names both)."""


class ConfigTypeError(ConfigError, TypeError):
    """An input has the wrong type (a list instead of a tensor, uint8 instead of float images)."""


def _check_choice(kind: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(
            f"Unknown {kind} {value!r}: choose one of {', '.join(map(repr, allowed))}."
        )


def resolve_preset(preset: str | None = None) -> str:
    """Return the preset to use: the argument, else ``$ROBUSTNB_PRESET``, else ``cpu``."""
    source = "argument"
    if preset is None or preset == "":
        preset = os.environ.get("ROBUSTNB_PRESET") or DEFAULT_PRESET
        source = "ROBUSTNB_PRESET" if os.environ.get("ROBUSTNB_PRESET") else "default"
    preset = str(preset).strip()
    if preset not in PRESETS:
        where = " (from the ROBUSTNB_PRESET environment variable)" if source == "ROBUSTNB_PRESET" else ""
        raise ConfigError(
            f"Unknown preset {preset!r}{where}: choose one of {', '.join(map(repr, PRESETS))} "
            "(smoke = CI-sized, cpu = laptop-sized default, full = paper scale on a GPU)."
        )
    return preset


def pick(preset: str, **by_preset):
    """Choose a value by preset: ``pick(run.preset, smoke=2, cpu=20, full=200)``."""
    preset = resolve_preset(preset)
    missing = [p for p in PRESETS if p not in by_preset]
    if missing:
        raise ConfigError(f"pick() needs a value for every preset; missing {missing}.")
    return by_preset[preset]


#: the training precisions: float32, bfloat16 autocast, float16 autocast with a gradient scaler
TRAINING_PRECISIONS = ("fp32", "bf16", "fp16")
#: the first CUDA compute capability with bfloat16 tensor cores (Ampere, sm_80); a T4 (sm_75, Colab's GPU) and a
#: V100 (sm_70) emulate bfloat16 through float32, so they train in float16 instead
CUDA_BF16_CAPABILITY = (8, 0)
_CURRENT = {"device": torch.device("cpu")}


def precision_for(preset: str, device_type: str, bf16_native: bool) -> str:
    """The precision a preset trains in on a kind of device (a pure rule, so tests can ask for any machine):

    * ``smoke``: ``fp32`` everywhere (its outputs are the ones nbval compares);
    * the CPU: ``bf16`` at ``cpu`` where the CPU computes bfloat16 natively, else ``fp32``; ``full`` ``fp32``;
    * CUDA, at ``cpu`` and ``full``: ``bf16`` where the GPU has bfloat16 tensor cores, else ``fp16`` (autocast
      with :class:`torch.amp.GradScaler`: a T4 runs float16 at 8x its float32 rate and bfloat16 not at all);
    * other devices (Apple MPS): ``fp32``.
    """
    if resolve_preset(preset) == "smoke":
        return "fp32"
    if device_type == "cpu":
        return pick(preset, smoke="fp32", cpu="bf16" if bf16_native else "fp32", full="fp32")
    if device_type == "cuda":
        return "bf16" if bf16_native else "fp16"
    return "fp32"


def cuda_bf16(capability: tuple[int, int]) -> bool:
    """Whether a CUDA GPU of this compute capability ``(major, minor)`` computes bfloat16 natively (sm_80 on)."""
    return tuple(capability) >= CUDA_BF16_CAPABILITY


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 natively: the CPU's flags (:func:`robustnb.cpus.native_bf16`), a CUDA
    GPU's compute capability (:func:`cuda_bf16`); False elsewhere."""
    device = torch.device(device)
    if device.type == "cpu":
        return cpus.native_bf16()
    if device.type == "cuda":
        return cuda_bf16(torch.cuda.get_device_capability(device))
    return False


def current_device() -> torch.device:
    """The device of the last :func:`setup` (the CPU before any): what :func:`training_precision` and
    ``robustnb.train.speed_options`` choose for when no device is named."""
    return _CURRENT["device"]


def training_precision(preset: str, device: str | torch.device | None = None) -> str:
    """The precision a preset trains in on ``device`` (default: the run's, :func:`current_device`):
    :func:`precision_for` with the device's bfloat16 support (:func:`native_bf16`). On the CPU: ``bf16``
    (autocast) at ``cpu`` where the CPU computes bfloat16 natively, else ``fp32``; ``smoke`` and ``full``
    train in ``fp32``."""
    device = current_device() if device is None else torch.device(device)
    return precision_for(preset, device.type, native_bf16(device))


def get_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` picks CUDA when available (Colab, a workstation), then Apple MPS, else the CPU.

    Allowed: ``None``/``""``/``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``, each optionally with a device index
    (``"cuda:1"``), or a :class:`torch.device`; anything else raises :class:`ConfigError` naming the value.
    """
    if isinstance(device, torch.device):
        return device
    device = "auto" if device in (None, "") else str(device).strip()
    base, sep, index = device.partition(":")
    _check_choice("device", base, DEVICES)
    forms = "'auto', 'cpu', 'cuda', 'mps', 'cuda:N' (N a device index >= 0) or a torch.device"
    if sep and (base == "auto" or not index.isdigit()):
        raise ConfigError(f"Unknown device {device!r}: choose one of {forms}.")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but CUDA is not available here; use 'auto' or 'cpu'.")
    mps = getattr(torch.backends, "mps", None)
    if base == "mps" and not (mps is not None and mps.is_available()):
        raise ConfigError(f"device {device!r} was asked for but Apple MPS is not available here; use 'auto' or 'cpu'.")
    try:
        return torch.device(device)
    except RuntimeError as e:  # an index torch refuses
        raise ConfigError(f"Invalid device {device!r} ({e}): choose one of {forms}.") from None


def check_seed(seed) -> int:
    """A seed: a non-negative integer (Python or NumPy), returned as ``int``."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a torch.Generator seeded the same way."""
    seed = check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _folder(env: str, default: Path) -> Path:
    value = os.environ.get(env)
    return Path(value).expanduser().resolve() if value else default


def data_dir() -> Path:
    """Where datasets live (``$ROBUSTNB_DATA``, default ``~/.cache/robustnb/data``)."""
    return _folder("ROBUSTNB_DATA", Path.home() / ".cache" / "robustnb" / "data")


def cache_dir() -> Path:
    """Where trained models and decoded datasets are cached (``$ROBUSTNB_CACHE``)."""
    path = _folder("ROBUSTNB_CACHE", Path.home() / ".cache" / "robustnb" / "cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


def in_colab() -> bool:
    return "google.colab" in sys.modules


@dataclass(frozen=True)
class Run:
    """What a chapter runs with: its preset, seed and device (and where data and models live)."""

    preset: str
    seed: int
    device: torch.device
    data: Path = field(default_factory=data_dir)
    cache: Path = field(default_factory=cache_dir)

    def pick(self, **by_preset):
        """``run.pick(smoke=..., cpu=..., full=...)``: the value for this run's preset."""
        return pick(self.preset, **by_preset)

    def __str__(self) -> str:
        """The run line under ``robustnb.setup``: preset, seed, device and threads; the data and cache folders
        (home shortened to ``~``) only in an interactive session, so that a page executed by a book build,
        papermill or nbval does not publish the folders of the machine that built it."""
        precision = training_precision(self.preset, self.device)
        why = {"bf16": f" (native on this {'CPU' if self.device.type == 'cpu' else 'GPU'})",
               "fp16": " (autocast with a gradient scaler: this GPU has no bfloat16)"}.get(precision, "")
        line = (f"robustnb run: preset={self.preset!r}, seed={self.seed}, device={self.device}, "
                f"torch threads={torch.get_num_threads()}, training in {precision}{why}")
        if not interactive():
            return line

        def short(p: Path) -> str:
            home = Path.home()
            return f"~/{p.relative_to(home)}" if p.is_relative_to(home) and p != home else str(p)

        return f"{line}\n  data:  {short(self.data)}\n  cache: {short(self.cache)}"


def _kernel():
    """The IPython kernel this code runs in, or None (plain Python)."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return getattr(shell, "kernel", None)


def executed_kernel() -> bool:
    """Whether this code runs in a kernel that executes a notebook for nobody watching: nbclient, behind
    jupyter-book, papermill and nbval, sends ``allow_stdin=False`` with each cell (Jupyter, Colab and VS Code
    send True)."""
    kernel = _kernel()
    if kernel is None:
        return False
    parent = kernel.get_parent() if hasattr(kernel, "get_parent") else getattr(kernel, "_parent_header", {})
    return not bool((parent or {}).get("content", {}).get("allow_stdin", False))


def interactive() -> bool:
    """A person is watching: a kernel whose front end accepts input, or Python at a terminal."""
    if _kernel() is not None:
        return not executed_kernel()
    return sys.stdin is not None and sys.stdin.isatty()


def setup(preset: str | None = None, seed: int = 0, device: str = "auto", verbose: bool = True) -> Run:
    """Resolve preset and device, seed everything, and return a :class:`Run`.

    Raises :class:`ConfigError` at once for an unknown preset or device.
    """
    run = Run(preset=resolve_preset(preset), seed=check_seed(seed), device=get_device(device))
    _CURRENT["device"] = run.device
    seed_everything(run.seed)
    if torch.get_num_threads() > cpus.usable_cpus():  # torch loaded before robustnb could set OMP_NUM_THREADS
        torch.set_num_threads(cpus.usable_cpus())
    cpus.set_adaptive(run.preset != "smoke")  # smoke: a fixed thread count, so its checked outputs repeat
    if verbose:
        print(run)
        if cpus.late_note():
            print(cpus.late_note())
    return run
