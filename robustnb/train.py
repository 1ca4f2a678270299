"""The one training loop of the book, and the one accuracy.

``fit`` trains any module whose forward returns logits (or a dict with ``"logits"``, or a tuple whose first
item is the logits) with cross-entropy plus optional weighted *extra terms* (a rate term, a distillation
term ...). Optimizer and scheduler are chosen by name. Modules with a CompressAI-style ``aux_loss()`` get the
auxiliary optimizer of their entropy-bottleneck quantiles automatically.

Trained models are cached by :func:`robustnb.cache.cached` (:func:`train_classifier` does both).
:func:`predict` gives logits in batches and :func:`accuracy` the top-1 accuracy: every accuracy in the package
is computed by it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Mapping

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from robustnb import cpus
from robustnb.cache import cached, data_spec
from robustnb.checks import check_number
from robustnb.config import ConfigError, check_seed, pick, training_precision
from robustnb.models import for_dataset
from robustnb.progress import note, tqdm

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULERS = ("none", "cosine", "step", "onecycle")
PRECISIONS = ("fp32", "bf16")
SPEED_DEFAULTS = {"precision": "fp32", "channels_last": False}
#: batches between two looks at the machine's load when the thread count adapts (robustnb.cpus.threads_now)
ADAPT_EVERY = 25

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
    precision: str = "fp32"  # "bf16": bfloat16 autocast of the forward pass (loss, BatchNorm stats, optimizer: fp32)
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
FP32_FASTER_ON_CPU = ("mobilenet_v2",)


def speed_for(arch: str, speed: Mapping) -> dict:
    """A preset's speed options for one architecture: float32 instead of bf16 for :data:`FP32_FASTER_ON_CPU`."""
    out = dict(speed)
    if arch in FP32_FASTER_ON_CPU and out.get("precision") == "bf16":
        out["precision"] = "fp32"
    return out


def speed_options(preset: str) -> dict:
    """The training speed options of a preset, for ``TrainConfig(**speed_options(preset))``.

    ``cpu`` trains in the channels-last layout, under bfloat16 autocast where the CPU computes bfloat16 natively
    and in float32 elsewhere (:func:`robustnb.config.training_precision`; the run line says which; ``python -m
    robustnb.bench --speed`` measures images/s and accuracy per setting on your machine; :func:`speed_for` adapts
    it per architecture); ``smoke`` keeps float32 (its outputs are the ones nbval checks) and so does ``full``
    (not yet run on a GPU: float32 is the path tested there).
    """
    precision = training_precision(preset)
    fast = {"precision": precision, "channels_last": True} if precision == "bf16" else {"channels_last": True}
    return dict(pick(preset, smoke={}, cpu=fast, full={}))


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


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
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


def augment_batch(x: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (reflect padding) and horizontal flip, the standard CIFAR augmentation, for a whole batch
    at once (one gather instead of a Python loop over images)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (n, 1, h, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (n, 1, 1, w)
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
    flip = torch.rand(n, generator=g) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), out.flip(3), out)


def _batches(data, batch_size: int, shuffle: bool, g: torch.Generator | None = None):
    """Yield float ``(x, y)`` batches from an ImageDataset (uint8 storage) or an ``(x, y)`` tensor pair."""
    if isinstance(data, (tuple, list)):
        x, y = data
        to_float = (lambda t: t.float().div(255)) if x.dtype == torch.uint8 else (lambda t: t)
    else:
        x, y = data.images, data.labels
        to_float = lambda t: t.float().div(255)  # noqa: E731
    n = len(y)
    order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        yield to_float(x[idx]), y[idx]


# ---------------------------------------------------------------------------------------------- train
@dataclass
class _Optimizers:
    """The optimizer and schedule of a training run, and the entropy model's auxiliary optimizer (its quantile
    parameters, when the model has an ``aux_loss``)."""
    opt: torch.optim.Optimizer
    sched: Any
    aux: torch.optim.Optimizer | None

    @classmethod
    def for_model(cls, model: nn.Module, cfg: "TrainConfig", steps_per_epoch: int) -> "_Optimizers":
        aux_params = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
        aux_ids = {id(p) for p in aux_params}
        params = [p for p in model.parameters() if p.requires_grad and id(p) not in aux_ids]
        opt = make_optimizer(params, cfg)
        aux = torch.optim.Adam(aux_params, lr=1e-3) if aux_params and hasattr(model, "aux_loss") else None
        return cls(opt, make_scheduler(opt, cfg, steps_per_epoch), aux)


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: "TrainConfig", opts: _Optimizers,
                extra_terms: Mapping[str, tuple[float, LossTerm]], sums: dict) -> int:
    """One optimizer step on a batch: loss ``CE + sum(weight * term)`` (under bf16 autocast when configured),
    the schedule's step and the auxiliary optimizer's; adds the batch's loss terms to ``sums`` and returns how
    many of its images the model got right."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        out = model(x)
    logits = logits_of(out).float()
    ce = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    loss = ce
    for name, (weight, fn) in extra_terms.items():
        term = fn(model, x, y, out)
        sums[name] += float(term.detach()) * len(y)
        loss = loss + weight * term
    opts.opt.zero_grad(set_to_none=True)
    loss.backward()
    opts.opt.step()
    if opts.sched is not None:
        opts.sched.step()
    if opts.aux is not None:
        opts.aux.zero_grad(set_to_none=True)
        model.aux_loss().backward()
        opts.aux.step()
    sums["loss"] += float(loss.detach()) * len(y)
    sums["ce"] += float(ce.detach()) * len(y)
    return int((logits.argmax(1) == y).sum())


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
    extra_terms = dict(extra_terms or {})
    model.to(device)
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    n = len(data[1]) if isinstance(data, (tuple, list)) else len(data)
    opts = _Optimizers.for_model(model, cfg, (n + cfg.batch_size - 1) // cfg.batch_size)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    rows = []
    note(f"{desc}: epoch 1/{cfg.epochs} started", every=0)
    bar = tqdm(range(cfg.epochs), desc=desc, leave=False)
    threads = torch.get_num_threads()
    for epoch in bar:
        model.train()
        t0 = time.perf_counter()
        sums = {"loss": 0.0, "ce": 0.0, **{k: 0.0 for k in extra_terms}}
        correct = seen = 0
        for step, (x, y) in enumerate(_batches(data, cfg.batch_size, True, g)):
            if device.type == "cpu" and cpus.adaptive() and step % ADAPT_EVERY == 0:
                torch.set_num_threads(cpus.threads_now(threads))  # fewer threads while other programs run
            if cfg.augment:
                x = augment_batch(x, g)
            x, y = x.to(device).contiguous(memory_format=layout), y.to(device)
            correct += _train_step(model, x, y, cfg, opts, extra_terms, sums)
            seen += len(y)
        note(f"{desc}: epoch {epoch + 1}/{cfg.epochs} done", every=0)
        row = {"epoch": epoch + 1, **{k: v / max(seen, 1) for k, v in sums.items()},
               "train_acc": correct / max(seen, 1), "seconds": time.perf_counter() - t0}
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
def predict(model: nn.Module, data, batch_size: int = 256, device: torch.device | str | None = None) -> torch.Tensor:
    """Logits for an ImageDataset, an ``(x, y)`` pair or a bare tensor ``x`` (returned on the CPU)."""
    if isinstance(data, torch.Tensor):
        data = (data, torch.zeros(len(data), dtype=torch.long))
    if device is None:  # int8 models have no parameters: then the CPU
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    outs = [logits_of(model(x.to(device))).float().cpu() for x, _ in _batches(data, batch_size, False)]
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


def accuracy(model: nn.Module, data, batch_size: int = 256, device=None) -> float:
    """Top-1 accuracy on an ImageDataset or an ``(x, y)`` pair (NaN for no images): the package's one accuracy."""
    y = data[1] if isinstance(data, (tuple, list)) else data.labels
    if len(y) == 0:
        return float("nan")
    return float((predict(model, data, batch_size, device).argmax(1) == y.cpu()).float().mean())


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
