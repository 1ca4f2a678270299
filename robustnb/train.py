"""The one training loop of the book, and the one accuracy.

``fit`` trains any module whose forward returns logits (or a dict with ``"logits"``, or a tuple whose first
item is the logits) with cross-entropy plus optional weighted *extra terms* (a rate term, a distillation
term ...). Optimizer and scheduler are chosen by name. Modules with a CompressAI-style ``aux_loss()`` get the
auxiliary optimizer of their entropy-bottleneck quantiles automatically.

Trained models are cached by :func:`robustnb.cache.cached` (:func:`train_classifier` does both).
:func:`predict` gives logits in batches and :func:`accuracy` the top-1 accuracy: every accuracy in the package
is computed by it.

On a GPU the loop keeps the GPU busy: the training images (``uint8``) are copied to the device once per run when
they fit (:data:`RESIDENT_SHARE` of its free memory; else each batch is gathered into pinned host memory and
copied without blocking), and each batch is gathered, cropped, flipped and converted to float there in one
indexing, from random draws made on the CPU with the run's generator in the same order as a CPU run, so a run's
crops and flips do not depend on the device. A step never waits for the device: the loss terms and the correct
count add up in a tensor on the device, read once per epoch. Mixed precision follows the device
(:func:`robustnb.config.training_precision`): bfloat16 autocast where the device computes it natively, float16
autocast with :class:`torch.amp.GradScaler` on CUDA GPUs without bfloat16 (a T4); CUDA runs with
``cudnn.benchmark``. Evaluation (:func:`predict`, :func:`accuracy`) runs in batches of :data:`EVAL_BATCH` on the
device with its images moved there once.
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Iterable, Mapping

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from robustnb import cpus
from robustnb.cache import cached, data_spec
from robustnb.checks import check_number
from robustnb.config import (TRAINING_PRECISIONS, ConfigError, check_seed, current_device, pick,
                             training_precision)
from robustnb.models import for_dataset
from robustnb.progress import note, tqdm

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULERS = ("none", "cosine", "step", "onecycle")
PRECISIONS = TRAINING_PRECISIONS  # fp32, bf16 (autocast), fp16 (autocast + GradScaler)
#: the autocast dtype of each mixed precision
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
SPEED_DEFAULTS = {"precision": "fp32", "channels_last": False}
#: batches between two looks at the machine's load when the thread count adapts (robustnb.cpus.threads_now)
ADAPT_EVERY = 25
#: pixels of reflect padding before the random crop (the standard CIFAR augmentation)
CROP_PAD = 4
#: the largest share of an accelerator's free memory the training or evaluation images may take to be copied
#: there whole; larger sets stay in host memory and travel batch by batch (pinned, non-blocking)
RESIDENT_SHARE = 0.25
#: evaluation batch size per device type (the CPU's 256 keeps the logits the book's checked outputs were made with)
EVAL_BATCH = {"cpu": 256, "other": 1024}

LossTerm = Callable[[nn.Module, torch.Tensor, torch.Tensor, Any], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Everything about *how* a model is trained (the cache key includes all of it)."""

    epochs: int = 5
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    scheduler: str = "cosine"
    augment: bool = True
    label_smoothing: float = 0.0
    seed: int = 0
    # "bf16": bfloat16 autocast of the forward pass (loss, BatchNorm stats, optimizer: fp32); "fp16": float16
    # autocast with a gradient scaler (GPUs without bfloat16, such as a T4)
    precision: str = "fp32"
    channels_last: bool = False  # NHWC memory layout (faster convolutions on CPUs with oneDNN)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"Unknown optimizer {self.optimizer!r}: choose one of {OPTIMIZERS}.")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"Unknown scheduler {self.scheduler!r}: choose one of {SCHEDULERS}.")
        checked = {
            "epochs": check_number(self.epochs, "epochs", 0, None, integer=True),
            "batch_size": check_number(self.batch_size, "batch_size", 1, None, integer=True),
            "lr": check_number(self.lr, "lr", 0, None, lo_open=True, hi_open=True),
            "momentum": check_number(self.momentum, "momentum", 0, 1, hi_open=True),
            "weight_decay": check_number(self.weight_decay, "weight_decay", 0, None, hi_open=True),
            "label_smoothing": check_number(self.label_smoothing, "label_smoothing", 0, 1, hi_open=True),
            "seed": check_seed(self.seed),
        }
        if self.precision not in PRECISIONS:
            raise ConfigError(f"Unknown precision {self.precision!r}: choose one of {PRECISIONS}.")
        for flag in ("augment", "channels_last"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag} must be True or False, got {getattr(self, flag)!r}.")
        for k, v in checked.items():  # numpy integers etc. become plain Python numbers (stable cache keys)
            object.__setattr__(self, k, v)

    def replace(self, **changes) -> "TrainConfig":
        return replace(self, **changes)

    def as_dict(self) -> dict:
        """The fields, for cache keys; the speed options are left out at their defaults, so models trained
        before they existed keep their keys."""
        d = asdict(self)
        for k, default in SPEED_DEFAULTS.items():
            if d[k] == default:
                del d[k]
        return d


#: architectures whose bfloat16-autocast training step is slower than float32 on the CPU, so ``speed_for`` trains
#: them in float32 (channels-last kept). Measured (one thread, batch 64, 32 px, channels-last, SGD step, Intel Xeon
#: with AVX-512 BF16, 2026-12-03): MobileNetV2 117 img/s in bf16, 177 in fp32 (its depthwise convolutions);
#: VGG-11 187 vs 102 and the small CNN 2,229 vs 1,310 stay in bf16.
FP32_FASTER_ON_CPU = ("mobilenet_v2", "mobilenet_v2_x0_5")


def speed_for(arch: str, speed: Mapping, device: torch.device | str | None = None) -> dict:
    """A preset's speed options for one architecture: float32 instead of bf16 for :data:`FP32_FASTER_ON_CPU` when
    training on the CPU (``device``, default the run's: :func:`robustnb.config.current_device`)."""
    out = dict(speed)
    device = current_device() if device is None else torch.device(device)
    if device.type == "cpu" and arch in FP32_FASTER_ON_CPU and out.get("precision") == "bf16":
        out["precision"] = "fp32"
    return out


def speed_options(preset: str, device: torch.device | str | None = None) -> dict:
    """The training speed options of a preset on ``device`` (default: the run's, set by ``robustnb.setup``), for
    ``TrainConfig(**speed_options(preset))``.

    ``cpu`` trains in the channels-last layout under the device's mixed precision
    (:func:`robustnb.config.training_precision`; the run line says which): on the CPU bfloat16 autocast where it
    computes bfloat16 natively and float32 elsewhere (``python -m robustnb.bench --speed`` measures images/s and
    accuracy per setting on your machine; :func:`speed_for` adapts it per architecture); on a CUDA GPU bfloat16
    (sm_80 on) or float16 with a gradient scaler (a T4). ``full`` does the same on a CUDA GPU and keeps float32
    on the CPU; ``smoke`` keeps float32 everywhere (its outputs are the ones nbval checks).
    """
    device = current_device() if device is None else torch.device(device)
    precision = training_precision(preset, device)
    fast = {"precision": precision, "channels_last": True} if precision != "fp32" else {"channels_last": True}
    return dict(pick(preset, smoke={}, cpu=fast, full=fast if device.type == "cuda" else {}))


@contextmanager
def channels_last(models: Iterable[nn.Module], on: bool = True):
    """Run a block with ``models`` in the channels-last (NHWC) layout, then back in the default one. Measured on
    the book's 2-core CPU (oneDNN): the entropy chapter's attacks and measurements 17% faster. Convolutions then
    sum in another order, so a result moves by floating-point noise, which an iterated sign-gradient attack can
    amplify per image (the entropy chapter at ``cpu``: the byte counts of 70% of the PGD-attacked images changed,
    by a median 4 bytes of about 220, those of 26 of the 7,200 entropy-attacked images; every mean by at most
    0.2%; no prediction and no corrupted image's count changed). ``on=False``: nothing changes (``smoke``, whose
    outputs nbval checks, keeps its layout)."""
    models = list(models) if on else []
    for m in models:
        m.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for m in models:
            m.to(memory_format=torch.contiguous_format)


# -------------------------------------------------------------------------------------------- helpers
def logits_of(out) -> torch.Tensor:
    """The logits in a model output: a tensor, ``out["logits"]`` or ``out[0]``."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        return out["logits"]
    if isinstance(out, (tuple, list)):
        return out[0]
    raise TypeError(f"cannot find logits in a model output of type {type(out).__name__}")


#: optimizers with a fused implementation that takes a gradient scaler's scale and inf flag itself (no host sync)
FUSED_OPTIMIZERS = ("sgd", "adam", "adamw")


def make_optimizer(params, cfg: TrainConfig, fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` names; ``fused`` (for :data:`FUSED_OPTIMIZERS`): the fused kernels, which a
    :class:`torch.amp.GradScaler` drives without reading its inf flag back to the host."""
    kw = {"fused": True} if fused and cfg.optimizer in FUSED_OPTIMIZERS else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.momentum > 0, **kw)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kw)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kw)
    return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """A per-*step* scheduler (``None`` for ``"none"``)."""
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(opt, max(1, total // 3), gamma=0.1)
    if cfg.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)
    return None


def augment_draws(n: int, g: torch.Generator, pad: int = CROP_PAD) -> torch.Tensor:
    """The random draws of the augmentation of ``n`` images, on the CPU from ``g``: ``(3, n)`` int64 rows ``dx``,
    ``dy`` (crop offsets in ``0..2 * pad``) and ``flip`` (1: mirror), drawn in this order (x offsets, y offsets,
    flips), the order every run of the book has used, so a run's crops do not depend on its device."""
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    return torch.stack([dx, dy, flip.long()])


def _reflect(q: torch.Tensor, size: int) -> torch.Tensor:
    """Indices into a side of ``size`` pixels for positions ``q`` in ``[-size + 1, 2 * size - 2]`` reflected at the
    border without repeating it (``F.pad(mode="reflect")``: ``-1 -> 1``, ``size -> size - 2``)."""
    q = q.abs()
    return torch.where(q > size - 1, 2 * (size - 1) - q, q)


def gather_batch(images: torch.Tensor, idx: torch.Tensor, draws: torch.Tensor | None = None,
                 pad: int = CROP_PAD) -> torch.Tensor:
    """Images ``idx`` of ``images`` ``(N, C, H, W)`` as float in [0, 1] (``uint8`` is divided by 255), cropped and
    flipped by ``draws`` (:func:`augment_draws`, one column per index; None: as they are) in one indexing on the
    images' device: the crop of the reflect-padded image at ``(dy, dx)``, mirrored where ``flip``. ``idx`` and
    ``draws`` live on the images' device. Returns ``(len(idx), C, H, W)``."""
    if draws is None:
        out = images[idx]
    else:
        _, c, h, w = images.shape
        dx, dy, flip = draws
        dev = images.device
        j = torch.arange(w, device=dev)
        rows = _reflect(dy[:, None] + torch.arange(h, device=dev) - pad, h)  # (n, h)
        cols = _reflect(dx[:, None] + torch.where(flip[:, None].bool(), w - 1 - j, j) - pad, w)  # (n, w)
        out = images[idx[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                     rows[:, None, :, None], cols[:, None, None, :]]
    return out.float().div(255) if out.dtype == torch.uint8 else out


def augment_batch(x: torch.Tensor, g: torch.Generator, pad: int = CROP_PAD) -> torch.Tensor:
    """Random crop (reflect padding) and horizontal flip, the standard CIFAR augmentation, for a whole batch
    ``(N, C, H, W)`` at once (:func:`augment_draws` from ``g``, then one gather: :func:`gather_batch`)."""
    draws = augment_draws(len(x), g, pad).to(x.device)
    return gather_batch(x, torch.arange(len(x), device=x.device), draws, pad)


def _images_labels(data) -> tuple[torch.Tensor, torch.Tensor]:
    """The image and label tensors of an ImageDataset (uint8 storage) or an ``(x, y)`` tensor pair."""
    if isinstance(data, (tuple, list)):
        return data[0], data[1]
    return data.images, data.labels


def _fits(t: torch.Tensor, device: torch.device) -> bool:
    """Whether ``t`` may be copied to ``device`` whole: always on the CPU and unified-memory devices, on CUDA when
    it takes at most :data:`RESIDENT_SHARE` of the free memory."""
    if t.device == device or device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return t.numel() * t.element_size() <= RESIDENT_SHARE * free


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; a host tensor bound for CUDA goes through pinned memory without blocking the host (the
    copy is queued on the stream that later uses it). Copies back to the CPU block (their data is read next)."""
    if t.device == device:
        return t
    if device.type == "cpu":
        return t.to(device)
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def prepare_device(device: torch.device) -> None:
    """Per-device settings of the training and evaluation loops: ``cudnn.benchmark`` on CUDA (fixed shapes, so the
    fastest convolution algorithm is timed once per shape)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


class DeviceImages:
    """The images and labels of a training or evaluation set for a run on ``device``, and the batches made from
    them (:func:`gather_batch`).

    The labels always go to the device; the images (``uint8`` for an ImageDataset: a quarter of float's bytes) too
    when they fit (:func:`_fits`; ``resident`` forces the choice): then a batch is one indexing on the device.
    Otherwise they stay in host memory, each batch is gathered there into pinned memory, copied without blocking,
    and cropped on the device.
    """

    def __init__(self, data, device: torch.device | str, resident: bool | None = None):
        images, labels = _images_labels(data)
        self.device = torch.device(device)
        self.resident = _fits(images, self.device) if resident is None else bool(resident)
        self.images = _to_device(images, self.device) if self.resident else images
        self.labels = _to_device(labels, self.device)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: torch.Tensor, idx_host: torch.Tensor | None = None,
              draws: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The float images ``(n, C, H, W)`` and labels ``(n,)`` of indices ``idx`` (on the device; ``idx_host``:
        the same on the CPU, used when the images stay there), augmented by ``draws`` (on the device)."""
        if self.resident:
            return gather_batch(self.images, idx, draws), self.labels[idx]
        host = idx.cpu() if idx_host is None else idx_host
        if self.device.type == "cuda":  # gathered straight into pinned memory (freed only once copied)
            part = torch.empty((len(host), *self.images.shape[1:]), dtype=self.images.dtype, pin_memory=True)
            part = torch.index_select(self.images, 0, host, out=part).to(self.device, non_blocking=True)
        else:
            part = _to_device(self.images.index_select(0, host), self.device)
        return gather_batch(part, torch.arange(len(part), device=self.device), draws), self.labels[idx]


# ---------------------------------------------------------------------------------------------- train
def use_grad_scaler(precision: str) -> bool:
    """Whether training in ``precision`` scales its loss (:class:`torch.amp.GradScaler`): float16 only (its
    5-bit exponent underflows small gradients; bfloat16 has float32's range)."""
    return precision == "fp16"


@dataclass
class _Optimizers:
    """The optimizer and schedule of a training run, the entropy model's auxiliary optimizer (its quantile
    parameters, when the model has an ``aux_loss``) and, for float16, the gradient scaler (the optimizer is then
    fused where torch has it, :data:`FUSED_OPTIMIZERS`, so the scaler's step needs no host sync)."""
    opt: torch.optim.Optimizer
    sched: Any
    aux: torch.optim.Optimizer | None
    scaler: torch.amp.GradScaler | None = None

    @classmethod
    def for_model(cls, model: nn.Module, cfg: "TrainConfig", steps_per_epoch: int,
                  device: torch.device | str = "cpu") -> "_Optimizers":
        aux_params = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
        aux_ids = {id(p) for p in aux_params}
        params = [p for p in model.parameters() if p.requires_grad and id(p) not in aux_ids]
        scale = use_grad_scaler(cfg.precision)
        opt = make_optimizer(params, cfg, fused=scale)
        aux = torch.optim.Adam(aux_params, lr=1e-3) if aux_params and hasattr(model, "aux_loss") else None
        scaler = torch.amp.GradScaler(torch.device(device).type) if scale else None
        return cls(opt, make_scheduler(opt, cfg, steps_per_epoch), aux, scaler)


def _stats_dtype(device: torch.device) -> torch.dtype:
    """The dtype the per-epoch sums add up in: float64 (as Python floats did), float32 where the device has no
    float64 (Apple MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: "TrainConfig", opts: _Optimizers,
                extra_terms: Mapping[str, tuple[float, LossTerm]]) -> torch.Tensor:
    """One optimizer step on a batch: loss ``CE + sum(weight * term)`` (under the autocast of ``cfg.precision``,
    float16 through the gradient scaler), the schedule's step and the auxiliary optimizer's.

    Returns the batch's statistics as a tensor on the device, without waiting for it: ``(3 + len(extra_terms),)``
    = loss, CE and each extra term summed over the batch (mean x batch size), then the number of images the
    model got right; the caller adds them up and reads them once per epoch.
    """
    amp = AUTOCAST_DTYPES.get(cfg.precision)
    with torch.autocast(x.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        out = model(x)
    logits = logits_of(out).float()
    ce = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    loss = ce
    terms = []
    for weight, fn in extra_terms.values():
        term = fn(model, x, y, out)
        terms.append(term.detach())
        loss = loss + weight * term
    opts.opt.zero_grad(set_to_none=True)
    if opts.scaler is None:
        loss.backward()
        opts.opt.step()
    else:
        opts.scaler.scale(loss).backward()
        opts.scaler.step(opts.opt)  # skipped (and the scale lowered) when a gradient is inf or NaN
        opts.scaler.update()
    if opts.sched is not None and opts.scaler is not None:
        with warnings.catch_warnings():  # a step the scaler skipped is not a schedule called too early
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            opts.sched.step()
    elif opts.sched is not None:
        opts.sched.step()
    if opts.aux is not None:
        opts.aux.zero_grad(set_to_none=True)
        model.aux_loss().backward()
        opts.aux.step()
    dtype = _stats_dtype(x.device)
    sums = torch.stack([t.to(dtype).reshape(()) for t in (loss.detach(), ce.detach(), *terms)]) * len(y)
    correct = (logits.argmax(1) == y).sum().to(dtype)
    return torch.cat([sums, correct[None]])


def fit(model: nn.Module, data, cfg: TrainConfig, *, device: torch.device | str = "cpu",
        extra_terms: Mapping[str, tuple[float, LossTerm]] | None = None, eval_data=None,
        desc: str = "training", on_epoch: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """Train ``model`` in place; returns the per-epoch history as a tidy DataFrame.

    ``extra_terms`` maps a name to ``(weight, fn)`` with ``fn(model, x, y, out) -> scalar tensor``; the
    loss is ``CE + sum(weight * fn(...))`` and each term's mean is logged. ``eval_data`` (an ImageDataset
    or ``(x, y)``) adds a held-out accuracy column. ``on_epoch(row)`` is called with each epoch's row (a
    tuning trial reports its validation accuracy through it).
    """
    device = torch.device(device)
    prepare_device(device)
    extra_terms = dict(extra_terms or {})
    model.to(device)
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    images = DeviceImages(data, device)
    n = len(images)
    if cfg.augment and n and min(images.images.shape[-2:]) <= CROP_PAD:
        raise ConfigError(f"augment=True crops images padded by {CROP_PAD} pixels (reflected), which needs images "
                          f"larger than {CROP_PAD} x {CROP_PAD}; got {tuple(images.images.shape[-2:])}: use "
                          "augment=False.")
    opts = _Optimizers.for_model(model, cfg, (n + cfg.batch_size - 1) // cfg.batch_size, device)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    names = ["loss", "ce", *extra_terms]
    rows = []
    note(f"{desc}: epoch 1/{cfg.epochs} started", every=0)
    bar = tqdm(range(cfg.epochs), desc=desc, leave=False)
    threads = torch.get_num_threads()
    for epoch in bar:
        model.train()
        t0 = time.perf_counter()
        # the epoch's random draws, on the CPU in the order of every earlier run: the order, then per batch the
        # crops and flips (augment_draws); then on the device in one copy
        order = torch.randperm(n, generator=g)
        draws = torch.cat([augment_draws(len(order[i:i + cfg.batch_size]), g) for i in range(0, n, cfg.batch_size)],
                          dim=1) if cfg.augment and n else None
        on_device = _to_device(order if draws is None else torch.cat([order[None], draws]), device)
        order_dev, draws_dev = (on_device, None) if draws is None else (on_device[0], on_device[1:])
        stats = torch.zeros(len(names) + 1, dtype=_stats_dtype(device), device=device)
        for step, i in enumerate(range(0, n, cfg.batch_size)):
            if device.type == "cpu" and cpus.adaptive() and step % ADAPT_EVERY == 0:
                torch.set_num_threads(cpus.threads_now(threads))  # fewer threads while other programs run
            part = slice(i, i + cfg.batch_size)
            x, y = images.batch(order_dev[part], order[part], None if draws_dev is None else draws_dev[:, part])
            x = x.contiguous(memory_format=layout)
            stats += _train_step(model, x, y, cfg, opts, extra_terms)
        totals = stats.tolist()  # the epoch's one wait for the device
        note(f"{desc}: epoch {epoch + 1}/{cfg.epochs} done", every=0)
        row = {"epoch": epoch + 1, **{k: v / max(n, 1) for k, v in zip(names, totals)},
               "train_acc": totals[-1] / max(n, 1), "seconds": time.perf_counter() - t0}
        if eval_data is not None:
            row["eval_acc"] = accuracy(model, eval_data, device=device)
        rows.append(row)
        if on_epoch is not None:
            on_epoch(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['train_acc']:.3f}")
    torch.set_num_threads(threads)
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    return pd.DataFrame(rows)


@torch.no_grad()
def _logits(model: nn.Module, data, batch_size: int | None, device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The float logits ``(N, classes)`` of ``data`` and its labels, both on the evaluation device (``device``,
    else the model's: int8 models have no parameters, then the CPU), in batches of ``batch_size`` (None:
    :data:`EVAL_BATCH` for the device) with no wait for the device between them; None for no images."""
    if isinstance(data, torch.Tensor):
        data = (data, torch.zeros(len(data), dtype=torch.long))
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    prepare_device(device)
    images = DeviceImages(data, device)
    n = len(images)
    if n == 0:
        return None
    size = batch_size or EVAL_BATCH.get(device.type, EVAL_BATCH["other"])
    was_training = model.training
    model.eval()
    order = torch.arange(n)
    order_dev = _to_device(order, device)
    outs = [logits_of(model(images.batch(order_dev[i:i + size], order[i:i + size])[0])).float()
            for i in range(0, n, size)]
    model.train(was_training)
    return torch.cat(outs), images.labels


def predict(model: nn.Module, data, batch_size: int | None = None,
            device: torch.device | str | None = None) -> torch.Tensor:
    """Logits for an ImageDataset, an ``(x, y)`` pair or a bare tensor ``x`` (returned on the CPU), computed on
    ``device`` (default: the model's) in batches of ``batch_size`` (default :data:`EVAL_BATCH`: 256 on the CPU,
    1,024 on a GPU)."""
    out = _logits(model, data, batch_size, device)
    return torch.empty(0) if out is None else out[0].cpu()


def accuracy(model: nn.Module, data, batch_size: int | None = None, device=None) -> float:
    """Top-1 accuracy on an ImageDataset or an ``(x, y)`` pair (NaN for no images): the package's one accuracy.
    Computed on the evaluation device (:func:`predict`'s), read back once."""
    out = _logits(model, data, batch_size, device)
    if out is None:
        return float("nan")
    logits, y = out
    return float((logits.argmax(1) == y).float().mean())


# ------------------------------------------------------------------------------------------- classifiers
def classifier_spec(arch: str, data, cfg: TrainConfig, model_kw: Mapping | None = None, **extra) -> dict:
    """The cache spec of a classifier trained by :func:`fit` on ``data``: every node, surrogate and baseline."""
    return {"kind": "classifier", "arch": arch, **data_spec(data), "train": cfg.as_dict(),
            "model_kw": dict(model_kw or {}), **extra}


def train_classifier(arch: str, data, cfg: TrainConfig, device="cpu", eval_data=None, name: str | None = None,
                     extra_spec: Mapping | None = None, **model_kw) -> nn.Module:
    """Build ``arch`` for ``data`` (:func:`robustnb.models.for_dataset`), train it with :func:`fit`, cache it."""
    spec = classifier_spec(arch, data, cfg, model_kw, **(extra_spec or {}))
    return cached(name or f"{data.name.replace('/', '_')}-{arch}", spec,
                  build=lambda: for_dataset(arch, data, **model_kw),
                  train=lambda m: fit(m, data, cfg, device=device, eval_data=eval_data, desc=f"training {arch}"),
                  device=device)
