"""The entropy-coded split model: an edge encoder, a learned entropy model, a cloud decoder and classifier.

A :class:`SplitModel` cuts a classifier in two. The **edge** part (``stem`` + ``g_a``) turns an image into a
small latent ``y`` (8x8xC for 32x32 inputs); the **entropy model** quantises it and gives every symbol a
probability, so it can be sent with an entropy coder (CompressAI's rANS) in about ``-log2 p`` bits; the
**cloud** part (``g_s`` + ``tail``) decodes the latent and classifies. Two entropy models from CompressAI
(registry :data:`robustnb.registry.ENTROPY_MODELS`):

* ``factorized``: :class:`compressai.entropy_models.EntropyBottleneck`, one learned density per channel,
  the same for every image (Balle et al. 2017);
* ``hyperprior``: a mean-scale hyperprior (Minnen et al. 2018): a hyper-encoder sends side information
  ``z`` (through its own EntropyBottleneck) from which the decoder predicts a mean and a scale per latent
  element, used by :class:`compressai.entropy_models.GaussianConditional`. The density adapts to the image,
  which is exactly what the entropy attack exploits.

Three backbone families adapted to 32x32 inputs, split after their first stage (16x16 features), registered
in :data:`robustnb.registry.SPLIT_ARCHITECTURES`: ``resnet`` (torchvision ``BasicBlock``), ``mobilenet_v2``
(torchvision MobileNetV2, width 0.5) and ``vgg`` (the VGG-style :class:`robustnb.models.SmallCNN`).
"""

from __future__ import annotations

import warnings

import torch
import torchvision
with warnings.catch_warnings():
    # compressai.models imports torch_geometric, which calls the deprecated torch.jit.script at import time
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional
    from compressai.layers import GDN
    from compressai.models import CompressionModel
from torch import nn

from robustnb import registry
from robustnb.checks import check_images, check_number
from robustnb.config import ConfigError
from robustnb.models import Normalize, SmallCNN
from torchvision.models.resnet import BasicBlock

#: what CompressAI's EntropyModel takes through the classes' **kwargs (declared so that the registry checks them)
_ENTROPY_MODEL_SETTINGS = ("likelihood_bound", "entropy_coder", "entropy_coder_precision")
registry.ENTROPY_MODELS.add("factorized", EntropyBottleneck, description="one learned density per channel",
                            settings=_ENTROPY_MODEL_SETTINGS)
registry.ENTROPY_MODELS.add("hyperprior", GaussianConditional, description="mean-scale hyperprior",
                            settings=_ENTROPY_MODEL_SETTINGS)
#: the initial width of the learned factorized densities (CompressAI's ``EntropyBottleneck`` default: values
#: spread over about +-10); a smaller one starts the density near the scale of an untrained encoder's latents
DENSITY_INIT_SCALE = 10.0
#: the four rate weights (loss = CE + lambda * bits per input pixel), from "send everything" to "send little"
LAMBDAS = (0.01, 0.04, 0.16, 0.64)


def check_entropy_model(name) -> str:
    return registry.ENTROPY_MODELS.check(name)


def check_split_arch(name) -> str:
    return registry.SPLIT_ARCHITECTURES.check(name)


# ------------------------------------------------------------------------------------------- backbones
@registry.SPLIT_ARCHITECTURES.register("resnet")
def _resnet(num_classes: int, in_channels: int) -> tuple[nn.Module, nn.Module, int]:
    """``(stem, tail, channels)``: stem maps a 32x32 image to ``channels`` x 16x16 features, tail to logits."""
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


@registry.SPLIT_ARCHITECTURES.register("mobilenet_v2")
def _mobilenet_v2(num_classes: int, in_channels: int) -> tuple[nn.Module, nn.Module, int]:
    net = torchvision.models.mobilenet_v2(num_classes=num_classes, width_mult=0.5)
    conv = net.features[0][0]
    net.features[0][0] = nn.Conv2d(in_channels, conv.out_channels, 3, 1, 1, bias=False)  # stride 1 for 32x32
    stem = net.features[:4]  # stem, t1-c16 block, the two c24 blocks (stride 2): 16x16
    channels = net.features[3].out_channels
    tail = nn.Sequential(net.features[4:], nn.AdaptiveAvgPool2d(1), nn.Flatten(), net.classifier)
    return stem, tail, channels


@registry.SPLIT_ARCHITECTURES.register("vgg")
def _vgg(num_classes: int, in_channels: int) -> tuple[nn.Module, nn.Module, int]:
    net = SmallCNN(num_classes, in_channels, width=24)
    stem = net.features[0]  # conv-conv-pool: 32 x 16x16
    tail = nn.Sequential(net.features[1:], net.pool, nn.Flatten(), net.fc)
    return stem, tail, 24




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
    ``init_scale``: the initial width of the factorized densities (``EntropyBottleneck(init_scale=...)``; the
    factorized model's latent density and the hyperprior's side-information density).
    """

    def __init__(self, arch: str = "resnet", entropy_model: str = "factorized", num_classes: int = 10,
                 in_channels: int = 3, latent_channels: int = 24, hyper_channels: int = 16,
                 mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), init_scale: float = DENSITY_INIT_SCALE):
        super().__init__()
        self.arch = check_split_arch(arch)
        self.entropy_model = check_entropy_model(entropy_model)
        self.latent_channels = latent_channels
        self.normalize = Normalize(mean, std)
        stem, tail, ch = registry.SPLIT_ARCHITECTURES.get(arch)(num_classes, in_channels)
        self.stem, self.tail = stem, tail
        # edge bottleneck: 16x16 features -> C x 8x8 latent; cloud: back to the tail's 16x16 features
        self.g_a = nn.Sequential(_conv(ch, 48), GDN(48), _conv(48, latent_channels, 3, 2))
        self.g_s = nn.Sequential(_conv(latent_channels, 4 * 32), nn.PixelShuffle(2), GDN(32, inverse=True),
                                 _conv(32, ch), nn.BatchNorm2d(ch), nn.ReLU(inplace=True))
        self.init_scale = check_number(init_scale, "init_scale", 0.0, None, lo_open=True, hi_open=True)
        if entropy_model == "factorized":
            self.entropy_bottleneck = EntropyBottleneck(latent_channels, init_scale=self.init_scale)
        else:
            m, n = latent_channels, hyper_channels
            self.h_a = nn.Sequential(_conv(m, n), nn.LeakyReLU(inplace=True), _conv(n, n, 3, 2))
            self.h_s = nn.Sequential(_deconv(n, n), nn.LeakyReLU(inplace=True), _conv(n, 2 * m))
            self.entropy_bottleneck = EntropyBottleneck(n, init_scale=self.init_scale)
            self.gaussian_conditional = GaussianConditional(None)

    # edge side -------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The edge encoder: images ``(N, C, H, W)`` in [0, 1] (checked, :func:`robustnb.checks.check_images`) ->
        latent ``y`` (before quantisation). Every path from an image (forward, compress) starts here."""
        check_images(x)
        return self.g_a(self.stem(self.normalize(x)))

    def _gaussian_params(self, z_hat):
        scales, means = self.h_s(z_hat).chunk(2, 1)
        return scales, means

    def entropy(self, y: torch.Tensor, noise: bool | None = None):
        """``(y_hat, likelihoods)`` for a latent, in the entropy model's training (noise) or eval mode. Always
        in float32, also under a bfloat16 autocast: the likelihoods are the rate."""
        with torch.autocast(y.device.type, enabled=False):
            return self._entropy(y.float(), noise)

    def _entropy(self, y: torch.Tensor, noise: bool | None):
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
    @staticmethod
    def _check_finite(t: torch.Tensor, name: str) -> torch.Tensor:
        """Refuse a non-finite tensor before it reaches the rANS coder: CompressAI casts NaN to a huge integer
        symbol and its escape coding of that symbol never ends (a NaN pixel used to hang ``compress``)."""
        if t.numel() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ConfigError(f"{name} has {bad} non-finite value(s) (NaN or inf): the rANS coder needs finite "
                              "values. The images were checked to be finite in [0, 1], so the model's weights are "
                              "not finite (a diverged training run?).")
        return t

    @torch.no_grad()
    def compress(self, x: torch.Tensor) -> dict:
        """Real rANS coding: ``{"strings": [y_strings(, z_strings)], "shape": latent (h, w)}``, one bytes per image.

        ``x``: images ``(N, C, H, W)`` in [0, 1] (checked). A non-finite latent is refused with
        :class:`robustnb.config.ConfigError` before the coder runs."""
        y = self._check_finite(self.encode(x), "the latent y")
        if self.entropy_model == "factorized":
            return {"strings": [self.entropy_bottleneck.compress(y)], "shape": tuple(y.shape[-2:])}
        z = self._check_finite(self.h_a(y), "the hyper-latent z")
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        scales, means = self._gaussian_params(z_hat)
        self._check_finite(torch.cat([scales, means]), "the predicted scales and means")
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
        # mirror the model's mode: torchattacks restores the *wrapper's* mode after an attack, and a fresh
        # nn.Module is in training mode, which would leave the split model in training mode afterwards
        self.train(model.training)

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
