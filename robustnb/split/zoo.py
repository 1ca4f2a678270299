"""The cached zoo of trained split models: how they are trained at each preset, and the one loader.

Training: ``CE + lambda * bpp`` (:func:`robustnb.split.rate.rate_bpp`) through :func:`robustnb.train.fit`.
Stage 1 trains one base model per (architecture, entropy model) with the smallest lambda; stage 2 fine-tunes
a copy of it for each lambda (a warm start, cheaper than training every lambda from scratch; the paper's
recipe starts from a distilled student in the same two-stage way). Both stages are cached by their full spec
(:func:`robustnb.cache.cached`). :func:`get_split_model` returns one model, :func:`load_split_models` a dict
of them; every chapter that needs split models calls these.

No split model at any preset trains on the tuning hold-out (:func:`tuning_holdout`:
:data:`TUNING_HOLDOUT_PER_CLASS` training images per class), which chapters may use to choose settings on
images the models have not fitted (the TV defense does); they train on :func:`training_pool`.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import torch

from robustnb import data, registry
from robustnb.cache import cached, data_spec
from robustnb.checks import check_number, one_or_more
from robustnb.config import ConfigError, Run, pick
from robustnb.jobs import Execution, ModelJob, as_execution, ray_session, run_jobs  # noqa: F401
from robustnb.progress import tqdm
from robustnb.split.model import (DENSITY_INIT_SCALE, LAMBDAS, SplitModel, build_split_model, check_entropy_model,
                                  check_split_arch)
from robustnb.split.rate import rate_bpp
from robustnb.train import TrainConfig, fit, speed_options


# --------------------------------------------------------------------------------------- the tuning hold-out
#: CIFAR-10 training images per class that no split model trains on, at any preset (1,000 in all): per class,
#: the last ones of the class in the training split's order. Per class rather than "the last 1,000 images":
#: the offline JPEG archive is decoded sorted by class (``robustnb.data``), so its last 1,000 are all trucks.
TUNING_HOLDOUT_PER_CLASS = 100


def holdout_mask(labels: torch.Tensor, per_class: int = TUNING_HOLDOUT_PER_CLASS) -> torch.Tensor:
    """Boolean mask over a training split: True for the last ``per_class`` items of every class (in order)."""
    labels = torch.as_tensor(labels)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique():
        idx = torch.nonzero(labels == c).flatten()
        mask[idx[max(len(idx) - per_class, 0):]] = True
    return mask


def training_pool() -> data.ImageDataset:
    """The CIFAR-10 training images the split models may train on: the training split minus
    :func:`tuning_holdout` (49,000 images)."""
    train = data.load_cifar10("train")
    return train.select(torch.nonzero(~holdout_mask(train.labels)).flatten())


def tuning_holdout() -> data.ImageDataset:
    """The training images held out of every split model's training set (:data:`TUNING_HOLDOUT_PER_CLASS`
    per class): for tuning a chapter's settings out of sample; the test split stays for the measurements."""
    train = data.load_cifar10("train")
    return train.select(torch.nonzero(holdout_mask(train.labels)).flatten())


# ---------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class SplitTrainConfig:
    """How the split models are trained at a preset (shared by every chapter that uses them)."""

    n_train: int
    base: TrainConfig  # stage 1: one model per (arch, entropy model), lambda = min(LAMBDAS)
    finetune: TrainConfig  # stage 2: per lambda, from the stage-1 weights
    latent_channels: int = 24
    init_scale: float = DENSITY_INIT_SCALE  # initial width of the factorized densities (SplitModel)

    @classmethod
    def from_preset(cls, preset: str, seed: int = 0) -> "SplitTrainConfig":
        # smoke: seconds, yet enough that the bitstream depends on the image and the entropy attack raises the
        # real bytes (one optimizer step left every image at the same bytes: nothing to test). The factorized
        # density starts at init_scale 1, near the latents' scale: from CompressAI's +-10 its 24 Adam steps move
        # it by about lr * steps = 0.05, so it stayed flat over the latents and every image cost the same bytes
        # (and the attack none more)
        # cpu: the whole training pool (50,000 images less the 1,000 of the tuning hold-out) under bfloat16
        # autocast + channels-last (train.speed_options) beat 20,000 images in float32 at about the same time
        # (measured on all 50,000: 77.4% after 6 base epochs in 319 s on 2 cores)
        base = TrainConfig(epochs=pick(preset, smoke=2, cpu=8, full=40), batch_size=128, optimizer="adam",
                           lr=2e-3, weight_decay=0.0, scheduler="cosine", seed=seed, **speed_options(preset))
        fine = base.replace(epochs=pick(preset, smoke=1, cpu=1, full=10), lr=1e-3)
        return cls(n_train=pick(preset, smoke=1024, cpu=49_000, full=49_000), base=base, finetune=fine,
                   init_scale=pick(preset, smoke=1.0, cpu=DENSITY_INIT_SCALE, full=DENSITY_INIT_SCALE))


def _train_set(cfg: SplitTrainConfig, seed: int):
    """The split models' training set: ``cfg.n_train`` images of :func:`training_pool` (never the hold-out);
    selected once per process (a grid's recipes, and the recipes a Ray worker unpickles, share it)."""
    return _pool_subset(cfg.n_train, seed)


@functools.lru_cache(maxsize=2)
def _pool_subset(n: int, seed: int) -> data.ImageDataset:
    return training_pool().subset(n, seed)


def _check_lambda(lam) -> float:
    """A rate weight: a finite number >= 0 (the book uses :data:`LAMBDAS`)."""
    try:
        return check_number(lam, "lambda", 0.0, None, hi_open=True)
    except ConfigError as e:
        raise ConfigError(f"{e} The book trains lambda in {LAMBDAS}.") from None


@dataclass(frozen=True)
class _Recipe:
    """How the split model ``(arch, entropy_model, lambda)`` of a preset is trained: the training set, the model's
    arguments, and the cache names and specs of its two stages (the base at the smallest lambda, then the lambda
    fine-tune)."""
    arch: str
    entropy_model: str
    lam: float
    cfg: SplitTrainConfig
    seed: int
    train_set: data.ImageDataset
    model_kw: dict

    @classmethod
    def of(cls, arch: str, entropy_model: str, lam: float, preset: str, seed: int) -> "_Recipe":
        check_split_arch(arch)
        check_entropy_model(entropy_model)
        cfg = SplitTrainConfig.from_preset(preset, seed)
        model_kw = {"latent_channels": cfg.latent_channels}
        if cfg.init_scale != DENSITY_INIT_SCALE:  # only when not the default: models trained before keep their keys
            model_kw["init_scale"] = cfg.init_scale
        return cls(arch, entropy_model, _check_lambda(lam), cfg, seed, _train_set(cfg, seed), model_kw)

    def __reduce__(self):
        """Pickled without its training set (150 MB at ``cpu``), which the receiving process selects again from
        the data on its disk: a Ray task carries the recipe, not a copy of the images."""
        return _recipe, (self.arch, self.entropy_model, self.lam, self.cfg, self.seed, self.model_kw)

    def build(self) -> SplitModel:
        return build_split_model(self.arch, self.entropy_model, self.train_set, **self.model_kw)

    @property
    def base_name_spec(self) -> tuple[str, dict]:
        spec = {"kind": "split-base", "arch": self.arch, "entropy_model": self.entropy_model, "lambda": min(LAMBDAS),
                **data_spec(self.train_set), "model_kw": self.model_kw, "train": self.cfg.base.as_dict()}
        return f"split-{self.arch}-{self.entropy_model}-base", spec

    @property
    def name_spec(self) -> tuple[str, dict]:
        spec = {"kind": "split", "base": self.base_name_spec[1], "lambda": self.lam,
                "finetune": self.cfg.finetune.as_dict()}
        return f"split-{self.arch}-{self.entropy_model}-lam{self.lam:g}", spec


def _recipe(arch, entropy_model, lam, cfg, seed, model_kw) -> _Recipe:
    return _Recipe(arch, entropy_model, lam, cfg, seed, _train_set(cfg, seed), model_kw)


def _base(r: _Recipe, device, verbose: bool = True) -> SplitModel:
    """Stage 1: the base model at the smallest lambda, trained (or loaded) through the model cache."""
    lam0 = min(LAMBDAS)

    def train_base(m):
        hist = fit(m, r.train_set, r.cfg.base, device=device, extra_terms={"rate": (lam0, rate_bpp)},
                   desc=f"split {r.arch}/{r.entropy_model} base")
        m.update(force=True)
        return hist

    return cached(*r.base_name_spec, r.build, train_base, device=device, verbose=verbose)


def _finetuned(r: _Recipe, device, verbose: bool = True) -> SplitModel:
    """Stage 2: the base fine-tuned at ``r.lam``, trained (or loaded) through the model cache."""
    def train_fine(m):
        m.load_state_dict(copy.deepcopy(_base(r, device, verbose).state_dict()))
        hist = fit(m, r.train_set, r.cfg.finetune, device=device, extra_terms={"rate": (r.lam, rate_bpp)},
                   desc=f"split {r.arch}/{r.entropy_model} lambda={r.lam:g}")
        m.update(force=True)
        return hist

    return cached(*r.name_spec, r.build, train_fine, device=device, verbose=verbose)


def get_split_model(arch: str, entropy_model: str, lam: float, run: Run, *, preset: str | None = None,
                    verbose: bool = True) -> SplitModel:
    """The trained split model for ``(arch, entropy_model, lambda)`` at ``preset`` (default ``run.preset``).

    Trains (stage 1 base, then the lambda fine-tune) or loads both from the model cache; the CDF tables
    are refreshed (``update(force=True)``) so ``compress()`` works. Eval mode, on ``run.device``.
    """
    preset = preset or run.preset
    r = _Recipe.of(arch, entropy_model, lam, preset, run.seed)
    model = _finetuned(r, run.device, verbose)
    model.update(force=True)
    model.eval()
    model.robustnb_info.update({"arch": arch, "entropy_model": entropy_model, "lambda": r.lam, "preset": preset})
    return model


def model_grid(preset: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[float, ...]]:
    """``(archs, entropy_models, lambdas)`` of the split models every chapter uses at ``preset`` (one grid,
    so the chapters share their models through the cache)."""
    archs = pick(preset, smoke=("vgg",), cpu=("resnet",), full=registry.SPLIT_ARCHITECTURES.names())
    return archs, registry.ENTROPY_MODELS.names(), pick(preset, smoke=(LAMBDAS[0],), cpu=LAMBDAS, full=LAMBDAS)


def _grid(archs, entropy_models, lambdas) -> tuple[list[str], list[str], list[float]]:
    """The grid's names and lambdas, each one value or a sequence (:func:`robustnb.checks.one_or_more`: one name is
    a grid of one, never its letters), all checked before anything trains."""
    return ([check_split_arch(a) for a in one_or_more(archs, "archs", str, empty=False, what="architecture name")],
            [check_entropy_model(e) for e in one_or_more(entropy_models, "entropy_models", str, empty=False,
                                                         what="entropy model name")],
            [_check_lambda(lam) for lam in one_or_more(lambdas, "lambdas", empty=False)])


def split_jobs(archs, entropy_models, lambdas, run: Run) -> list[ModelJob]:
    """The split models of a grid as :class:`robustnb.jobs.ModelJob` objects (on the CPU): one base per
    (architecture, entropy model), and each lambda's fine-tune, which needs its base."""
    archs, entropy_models, lambdas = _grid(archs, entropy_models, lambdas)
    jobs = []
    for arch in archs:
        for em in entropy_models:
            for lam in lambdas:
                r = _Recipe.of(arch, em, lam, run.preset, run.seed)
                base = ModelJob(*r.base_name_spec, functools.partial(_base, r, "cpu", False),
                                cost=float(r.cfg.base.epochs))
                jobs.append(ModelJob(*r.name_spec, functools.partial(_finetuned, r, "cpu", False), needs=(base,),
                                     cost=float(r.cfg.finetune.epochs)))
    return jobs


def load_split_models(archs, entropy_models, lambdas, run: Run, verbose: bool = False,
                      ex: Execution | None = None) -> dict:
    """``{(arch, entropy_model, lambda): SplitModel}`` for every combination (trained once, then cached). With
    ``ex`` on Ray (the default at ``cpu`` and ``full`` on the CPU: :meth:`robustnb.jobs.Execution.for_run`), the
    models not cached yet train first as Ray tasks (:func:`split_jobs`, :func:`robustnb.jobs.run_jobs`): the two
    bases side by side, then the fine-tunes; ``ex=Execution("local")`` (or ``ex="local"``) trains them here, one
    after another. ``archs``, ``entropy_models`` and ``lambdas`` are each one value or a sequence."""
    archs, entropy_models, lambdas = _grid(archs, entropy_models, lambdas)
    ex = as_execution(ex, run)
    if ex.backend == "ray":
        with ray_session(ex):
            run_jobs(split_jobs(archs, entropy_models, lambdas, run), ex, desc="split models")
    keys = [(a, em, lam) for a in archs for em in entropy_models for lam in lambdas]
    return {k: get_split_model(*k, run, verbose=verbose) for k in tqdm(keys, desc="split models", leave=False)}


def key_columns(key) -> dict:
    """The frame columns of a zoo key ``(arch, entropy_model, lambda)``."""
    arch, em, lam = key
    return {"arch": arch, "entropy_model": em, "lambda": lam}
