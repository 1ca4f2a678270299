"""Entropy-coded split computing: an edge encoder, a learned entropy model, a cloud decoder and classifier.

A :class:`SplitModel` cuts a classifier in two. The **edge** part (``stem`` + ``g_a``) turns an image into a
small latent ``y`` (8x8xC for 32x32 inputs); the **entropy model** quantises it and gives every symbol a
probability, so it can be sent with an entropy coder (CompressAI's rANS) in about ``-log2 p`` bits; the
**cloud** part (``g_s`` + ``tail``) decodes the latent and classifies. Two entropy models from CompressAI:

* ``factorized``: :class:`compressai.entropy_models.EntropyBottleneck`, one learned density per channel,
  the same for every image (Balle et al. 2017);
* ``hyperprior``: a mean-scale hyperprior (Minnen et al. 2018): a hyper-encoder sends side information
  ``z`` (through its own EntropyBottleneck) from which the decoder predicts a mean and a scale per latent
  element, used by :class:`compressai.entropy_models.GaussianConditional`. The density adapts to the image,
  which is exactly what the entropy attack exploits.

Three backbone families adapted to 32x32 inputs, split after their first stage (16x16 features):
``resnet`` (torchvision ``BasicBlock``), ``mobilenet_v2`` (torchvision MobileNetV2, width 0.5) and ``vgg``
(the VGG-style :class:`robustnb.models.SmallCNN`).

Training: ``CE + lambda * bpp`` (bits per input pixel from the likelihoods) through
:func:`robustnb.train.fit`. Stage 1 trains one base model per (architecture, entropy model) with the
smallest lambda; stage 2 fine-tunes a copy of it for each lambda (a warm start, cheaper than training
every lambda from scratch; the paper's recipe starts from a distilled student in the same two-stage way).
Both stages are cached by their full spec; :func:`get_split_model` is what the chapters call.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
import torchvision
with warnings.catch_warnings():
    # compressai.models imports torch_geometric, which calls the deprecated torch.jit.script at import time
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional
    from compressai.layers import GDN
    from compressai.models import CompressionModel
from torch import nn

from robustnb.config import ConfigError, Run, pick
from robustnb.models import Normalize, SmallCNN
from robustnb.train import TrainConfig, cached, dataset_fingerprint, fit

ENTROPY_MODELS = ("factorized", "hyperprior")
SPLIT_ARCHITECTURES = ("resnet", "mobilenet_v2", "vgg")
#: the four rate weights (loss = CE + lambda * bits per input pixel), from "send everything" to "send little"
LAMBDAS = (0.01, 0.04, 0.16, 0.64)


def check_entropy_model(name) -> str:
    if name not in ENTROPY_MODELS:
        raise ConfigError(f"Unknown entropy model {name!r}: choose one of {', '.join(map(repr, ENTROPY_MODELS))}.")
    return name


def check_split_arch(name) -> str:
    if name not in SPLIT_ARCHITECTURES:
        raise ConfigError(f"Unknown split architecture {name!r}: choose one of "
                          f"{', '.join(map(repr, SPLIT_ARCHITECTURES))}.")
    return name


# ------------------------------------------------------------------------------------------- backbones
def _backbone(arch: str, num_classes: int, in_channels: int) -> tuple[nn.Module, nn.Module, int]:
    """``(stem, tail, channels)``: stem maps a 32x32 image to ``channels`` x 16x16 features, tail to logits."""
    if arch == "resnet":
        from torchvision.models.resnet import BasicBlock

        def block(cin, cout, stride):
            down = None
            if stride != 1 or cin != cout:
                down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            return BasicBlock(cin, cout, stride, down)

        stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                             block(16, 16, 1), block(16, 32, 2))
        tail = nn.Sequential(block(32, 64, 2), block(64, 128, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(128, num_classes))
        return stem, tail, 32
    if arch == "mobilenet_v2":
        net = torchvision.models.mobilenet_v2(num_classes=num_classes, width_mult=0.5)
        conv = net.features[0][0]
        net.features[0][0] = nn.Conv2d(in_channels, conv.out_channels, 3, 1, 1, bias=False)  # stride 1 for 32x32
        stem = net.features[:4]  # stem, t1-c16 block, the two c24 blocks (stride 2): 16x16
        channels = net.features[3].out_channels
        tail = nn.Sequential(net.features[4:], nn.AdaptiveAvgPool2d(1), nn.Flatten(), net.classifier)
        return stem, tail, channels
    if arch == "vgg":
        net = SmallCNN(num_classes, in_channels, width=24)
        stem = net.features[0]  # conv-conv-pool: 32 x 16x16
        tail = nn.Sequential(net.features[1:], net.pool, nn.Flatten(), net.fc)
        return stem, tail, 24
    raise ConfigError(f"Unknown split architecture {arch!r}: choose one of {SPLIT_ARCHITECTURES}.")


def _conv(cin, cout, k=3, s=1):
    return nn.Conv2d(cin, cout, k, s, k // 2)


def _deconv(cin, cout):
    """2x upsampling: a convolution to 4x the channels, then a pixel shuffle (faster than a transposed conv on CPUs)."""
    return nn.Sequential(_conv(cin, 4 * cout), nn.PixelShuffle(2))


# ------------------------------------------------------------------------------------------ the model
class SplitModel(CompressionModel):
    """Edge encoder -> entropy model -> cloud decoder + classifier; images in [0, 1].

    ``forward(x, noise=None)`` returns ``{"logits", "likelihoods": {"y"[, "z"]}, "latent", "y"}``; ``latent``
    is the quantised latent ``y_hat`` the cloud receives (noisy in training mode), ``y`` the encoder output.
    ``noise`` overrides the entropy model's mode: ``True`` adds uniform noise instead of rounding (the
    training-time relaxation, used by the entropy attack), ``False`` rounds, ``None`` follows ``self.training``.
    ``compress(x)`` gives the real rANS byte strings, ``decompress(strings, shape)`` the logits.
    """

    def __init__(self, arch: str = "resnet", entropy_model: str = "factorized", num_classes: int = 10,
                 in_channels: int = 3, latent_channels: int = 24, hyper_channels: int = 16,
                 mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
        super().__init__()
        self.arch = check_split_arch(arch)
        self.entropy_model = check_entropy_model(entropy_model)
        self.latent_channels = latent_channels
        self.normalize = Normalize(mean, std)
        stem, tail, ch = _backbone(arch, num_classes, in_channels)
        self.stem, self.tail = stem, tail
        # edge bottleneck: 16x16 features -> C x 8x8 latent; cloud: back to the tail's 16x16 features
        self.g_a = nn.Sequential(_conv(ch, 48), GDN(48), _conv(48, latent_channels, 3, 2))
        self.g_s = nn.Sequential(_conv(latent_channels, 4 * 32), nn.PixelShuffle(2), GDN(32, inverse=True),
                                 _conv(32, ch), nn.BatchNorm2d(ch), nn.ReLU(inplace=True))
        if entropy_model == "factorized":
            self.entropy_bottleneck = EntropyBottleneck(latent_channels)
        else:
            m, n = latent_channels, hyper_channels
            self.h_a = nn.Sequential(_conv(m, n), nn.LeakyReLU(inplace=True), _conv(n, n, 3, 2))
            self.h_s = nn.Sequential(_deconv(n, n), nn.LeakyReLU(inplace=True), _conv(n, 2 * m))
            self.entropy_bottleneck = EntropyBottleneck(n)
            self.gaussian_conditional = GaussianConditional(None)

    # edge side -------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The edge encoder: image in [0, 1] -> latent ``y`` (before quantisation)."""
        return self.g_a(self.stem(self.normalize(x)))

    def _gaussian_params(self, z_hat):
        scales, means = self.h_s(z_hat).chunk(2, 1)
        return scales, means

    def entropy(self, y: torch.Tensor, noise: bool | None = None):
        """``(y_hat, likelihoods)`` for a latent, in the entropy model's training (noise) or eval mode."""
        if self.entropy_model == "factorized":
            y_hat, y_lik = self.entropy_bottleneck(y, training=noise)
            return y_hat, {"y": y_lik}
        z = self.h_a(y)
        z_hat, z_lik = self.entropy_bottleneck(z, training=noise)
        scales, means = self._gaussian_params(z_hat)
        y_hat, y_lik = self.gaussian_conditional(y, scales, means=means, training=noise)
        return y_hat, {"y": y_lik, "z": z_lik}

    # cloud side ------------------------------------------------------------------------------
    def classify(self, y_hat: torch.Tensor) -> torch.Tensor:
        """The cloud part: (quantised) latent -> logits."""
        return self.tail(self.g_s(y_hat))

    def forward(self, x: torch.Tensor, noise: bool | None = None) -> dict:
        y = self.encode(x)
        y_hat, likelihoods = self.entropy(y, noise)
        return {"logits": self.classify(y_hat), "likelihoods": likelihoods, "latent": y_hat, "y": y}

    # the real bitstream ----------------------------------------------------------------------
    @torch.no_grad()
    def compress(self, x: torch.Tensor) -> dict:
        """Real rANS coding: ``{"strings": [y_strings(, z_strings)], "shape": latent (h, w)}``, one bytes per image."""
        y = self.encode(x)
        if self.entropy_model == "factorized":
            return {"strings": [self.entropy_bottleneck.compress(y)], "shape": tuple(y.shape[-2:])}
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        scales, means = self._gaussian_params(z_hat)
        indexes = self.gaussian_conditional.build_indexes(scales)
        y_strings = self.gaussian_conditional.compress(y, indexes, means=means)
        return {"strings": [y_strings, z_strings], "shape": tuple(z.shape[-2:])}

    @torch.no_grad()
    def decompress_latent(self, strings, shape) -> torch.Tensor:
        """Decode the bitstream back to the quantised latent ``y_hat`` (what the cloud sees)."""
        if self.entropy_model == "factorized":
            return self.entropy_bottleneck.decompress(strings[0], shape)
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        scales, means = self._gaussian_params(z_hat)
        indexes = self.gaussian_conditional.build_indexes(scales)
        return self.gaussian_conditional.decompress(strings[0], indexes, means=means)

    @torch.no_grad()
    def decompress(self, strings, shape) -> torch.Tensor:
        """Bitstream -> logits (the cloud's prediction from what was sent)."""
        return self.classify(self.decompress_latent(strings, shape))

    def logits_model(self) -> nn.Module:
        """A view of this model whose forward returns only the logits (for torchattacks' PGD and friends)."""
        return LogitsOnly(self)


class LogitsOnly(nn.Module):
    """Wraps a :class:`SplitModel` so that ``forward(x)`` returns the logits, differentiably.

    The forward value is the eval-mode prediction (the latent is rounded, as on the wire), but rounding has
    a zero gradient, which would leave a gradient attack such as PGD with nothing but its random start. The
    backward pass therefore treats the rounding as the identity (a straight-through estimator, i.e. BPDA).
    """

    def __init__(self, model: SplitModel):
        super().__init__()
        self.model = model

    def forward(self, x):
        m = self.model
        y = m.encode(x)
        y_hat, _ = m.entropy(y, noise=False)
        return m.classify(y + (y_hat - y).detach())


def build_split_model(arch: str, entropy_model: str, data=None, **kw) -> SplitModel:
    """An untrained :class:`SplitModel`; with ``data`` (an ImageDataset) classes, channels and normalisation follow it."""
    check_split_arch(arch)
    check_entropy_model(entropy_model)
    if data is not None:
        kw.setdefault("num_classes", data.num_classes)
        kw.setdefault("in_channels", data.image_shape[0])
        kw.setdefault("mean", data.mean)
        kw.setdefault("std", data.std)
    return SplitModel(arch, entropy_model, **kw)


# --------------------------------------------------------------------------------------------- rate term
def rate_bpp(model: SplitModel, x, y, out) -> torch.Tensor:
    """The training rate term: mean over the batch of bits per input pixel, from the likelihoods."""
    pixels = x.shape[-2] * x.shape[-1]
    bits = sum((-torch.log2(lik)).flatten(1).sum(1) for lik in out["likelihoods"].values())
    return bits.mean() / pixels


# ---------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class SplitTrainConfig:
    """How the split models are trained at a preset (shared by every chapter that uses them)."""

    n_train: int
    base: TrainConfig  # stage 1: one model per (arch, entropy model), lambda = min(LAMBDAS)
    finetune: TrainConfig  # stage 2: per lambda, from the stage-1 weights
    latent_channels: int = 24

    @classmethod
    def from_preset(cls, preset: str, seed: int = 0) -> "SplitTrainConfig":
        base = TrainConfig(epochs=pick(preset, smoke=1, cpu=8, full=40), batch_size=128, optimizer="adam",
                           lr=2e-3, weight_decay=0.0, scheduler="cosine", seed=seed)
        fine = base.replace(epochs=pick(preset, smoke=1, cpu=1, full=10), lr=1e-3)
        return cls(n_train=pick(preset, smoke=128, cpu=20_000, full=50_000), base=base, finetune=fine)


def _train_set(cfg: SplitTrainConfig, seed: int):
    from robustnb import data

    return data.load_cifar10("train").subset(cfg.n_train, seed)


def _check_lambda(lam) -> float:
    try:
        lam = float(lam)
    except (TypeError, ValueError):
        raise ConfigError(f"lambda must be a non-negative number (e.g. one of {LAMBDAS}), got {lam!r}.") from None
    if not lam >= 0:
        raise ConfigError(f"lambda must be a non-negative number (e.g. one of {LAMBDAS}), got {lam!r}.")
    return lam


def get_split_model(arch: str, entropy_model: str, lam: float, run: Run, *, preset: str | None = None,
                    verbose: bool = True) -> SplitModel:
    """The trained split model for ``(arch, entropy_model, lambda)`` at ``preset`` (default ``run.preset``).

    Trains (stage 1 base, then the lambda fine-tune) or loads both from the model cache; the CDF tables
    are refreshed (``update(force=True)``) so ``compress()`` works. Eval mode, on ``run.device``.
    """
    check_split_arch(arch)
    check_entropy_model(entropy_model)
    lam = _check_lambda(lam)
    preset = preset or run.preset
    cfg = SplitTrainConfig.from_preset(preset, run.seed)
    train_set = _train_set(cfg, run.seed)
    data_spec = {"data": train_set.name, "n": len(train_set), "data_fp": dataset_fingerprint(train_set)}
    model_kw = {"latent_channels": cfg.latent_channels}
    lam0 = min(LAMBDAS)

    def build():
        return build_split_model(arch, entropy_model, train_set, **model_kw)

    base_spec = {"kind": "split-base", "arch": arch, "entropy_model": entropy_model, "lambda": lam0,
                 **data_spec, "model_kw": model_kw, "train": cfg.base.as_dict()}

    def train_base(m):
        hist = fit(m, train_set, cfg.base, device=run.device, extra_terms={"rate": (lam0, rate_bpp)},
                   desc=f"split {arch}/{entropy_model} base")
        m.update(force=True)
        return hist

    base = cached(f"split-{arch}-{entropy_model}-base", base_spec, build, train_base, device=run.device,
                  verbose=verbose)
    spec = {"kind": "split", "base": base_spec, "lambda": lam, "finetune": cfg.finetune.as_dict()}

    def train_fine(m):
        m.load_state_dict(copy.deepcopy(base.state_dict()))
        hist = fit(m, train_set, cfg.finetune, device=run.device, extra_terms={"rate": (lam, rate_bpp)},
                   desc=f"split {arch}/{entropy_model} lambda={lam:g}")
        m.update(force=True)
        return hist

    model = cached(f"split-{arch}-{entropy_model}-lam{lam:g}", spec, build, train_fine, device=run.device,
                   verbose=verbose)
    model.update(force=True)
    model.eval()
    model.robustnb_info.update({"arch": arch, "entropy_model": entropy_model, "lambda": lam, "preset": preset})
    return model
