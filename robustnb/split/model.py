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
import weakref

import torch
import torchvision
with warnings.catch_warnings():
    # compressai.models imports torch_geometric, which calls the deprecated torch.jit.script at import time
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
    from compressai.entropy_models import EntropyBottleneck, EntropyModel, GaussianConditional
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


# ------------------------------------------------------------------------------------------ the rANS coder
# CompressAI's ``EntropyModel.compress`` calls its rANS coder once per image and hands it the entropy model's
# whole quantised CDF table as Python lists each time (the hyperprior's GaussianConditional: 64 x 3,133 int32,
# converted twice per image, once by ``tolist`` and once more into C++). The coder reads a table row only where
# an index points to it, and in that row only up to its length (``cdf_length``); so the functions below keep the
# table as trimmed Python lists once per entropy model (rebuilt when ``update()`` replaces or a load rewrites its
# buffers) and give each image only the rows it uses, its indexes renumbered to match. Every row handed over is
# the same list of numbers, so the coder takes the same steps and writes the same bytes as CompressAI's own
# ``compress`` (``tests/test_fast_coding.py`` checks it byte for byte, escape-coded symbols included).

#: per entropy model: ((buffer, its _version) for the cdf, length and offset buffers), (rows, lengths, offsets)
_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _coder_tables(em) -> tuple[list[list[int]], list[int], list[int]]:
    """``(rows, lengths, offsets)`` of an updated CompressAI entropy model as Python lists: each quantised CDF
    row cut to its length. Built once and memoised until one of the three buffers is replaced or changed."""
    key = tuple((t, t._version) for t in (em._quantized_cdf, em._cdf_length, em._offset))
    hit = _TABLES.get(em)
    if hit is not None and all(a is b and u == v for (a, u), (b, v) in zip(hit[0], key)):
        return hit[1]
    em._check_cdf_size()
    em._check_cdf_length()
    em._check_offsets_size()
    lengths = em._cdf_length.reshape(-1).int().tolist()
    offsets = em._offset.reshape(-1).int().tolist()
    rows = [row[:n] for row, n in zip(em._quantized_cdf.tolist(), lengths)]
    _TABLES[em] = (key, (rows, lengths, offsets))
    return rows, lengths, offsets


def _fast_coder(em) -> bool:
    """Whether the entropy model codes with CompressAI's rANS coder (``"ans"``, the default), which the fast path
    drives; another coder goes through CompressAI's own methods."""
    return getattr(em.entropy_coder, "name", None) == "ans"


def _per_image_tables(em, indexes: torch.Tensor):
    """For indexes ``(N, M)``: ``(local, tables)`` where ``local`` is each image's indexes as a list renumbered
    into ``tables[i] = (rows, lengths, offsets)``, the rows image ``i`` uses (the whole table when that is no
    bigger than one image's symbols: then the indexes stay as they are)."""
    rows, lengths, offsets = _coder_tables(em)
    n, m = indexes.shape
    idx = indexes.detach().cpu().long()
    if m and (int(idx.min()) < 0 or int(idx.max()) >= len(rows)):
        raise ValueError(f"CDF indexes must lie in [0, {len(rows) - 1}] (the entropy model's table rows), got "
                         f"[{int(idx.min())}, {int(idx.max())}]")
    if sum(lengths) <= m:  # a small table (the factorized densities): hand it over whole
        whole = (rows, lengths, offsets)
        return idx.tolist(), [whole] * n
    used = torch.zeros(n, len(rows), dtype=torch.bool)
    used.scatter_(1, idx, True)
    local = (used.cumsum(1) - 1).gather(1, idx).tolist()
    counts = used.sum(1).tolist()
    ids = used.nonzero()[:, 1].tolist()
    tables, start = [], 0
    for k in counts:
        r = ids[start:start + k]
        start += k
        tables.append(([rows[j] for j in r], [lengths[j] for j in r], [offsets[j] for j in r]))
    return local, tables


def _encode(em, symbols: torch.Tensor, indexes: torch.Tensor) -> list[bytes]:
    """One rANS string per image from integer symbols and their CDF indexes (both ``(N, ...)``, same shape)."""
    n = symbols.size(0)
    local, tables = _per_image_tables(em, indexes.reshape(n, -1))
    sym = symbols.reshape(n, -1).int().cpu().tolist()
    encode = em.entropy_coder.encode_with_indexes
    return [encode(s, i, *t) for s, i, t in zip(sym, local, tables)]


def entropy_compress(em, inputs: torch.Tensor, indexes: torch.Tensor, means: torch.Tensor | None = None) -> list[bytes]:
    """``EntropyModel.compress(em, inputs, indexes, means)`` (CompressAI), the same bytes, cheaper.

    ``inputs``: the latent ``(N, C, ...)``; ``indexes``: its CDF row per element (same shape, int);
    ``means``: subtracted before rounding (or ``None``). One byte string per image."""
    if not _fast_coder(em):
        return EntropyModel.compress(em, inputs, indexes, means)
    if inputs.dim() < 2:
        raise ValueError("Invalid `inputs` size. Expected a tensor with at least 2 dimensions.")
    if inputs.size() != indexes.size():
        raise ValueError("`inputs` and `indexes` should have the same size.")
    return _encode(em, em.quantize(inputs, "symbols", means), indexes)


def entropy_decompress(em, strings, indexes: torch.Tensor, dtype: torch.dtype = torch.float,
                       means: torch.Tensor | None = None) -> torch.Tensor:
    """``EntropyModel.decompress(em, strings, indexes, dtype, means)`` (CompressAI), cheaper: the dequantised
    latent, shaped like ``indexes`` ``(N, C, ...)``, from one byte string per image."""
    if not _fast_coder(em):
        return EntropyModel.decompress(em, strings, indexes, dtype, means)
    if not isinstance(strings, (tuple, list)):
        raise ValueError("Invalid `strings` parameter type.")
    if len(strings) != indexes.size(0) or indexes.dim() < 2:
        raise ValueError(f"Invalid strings or indexes parameters: {len(strings)} strings, indexes of shape "
                         f"{tuple(indexes.shape)} (one string per row of at least 2-D indexes)")
    if means is not None and means.size()[:2] != indexes.size()[:2]:
        raise ValueError("Invalid means or indexes parameters")
    n = len(strings)
    local, tables = _per_image_tables(em, indexes.reshape(n, -1))
    decode = em.entropy_coder.decode_with_indexes
    values = [decode(s, i, *t) for s, i, t in zip(strings, local, tables)]
    outputs = torch.tensor(values, dtype=torch.int32).reshape(indexes.size()).to(em._quantized_cdf.device)
    return em.dequantize(outputs, means, dtype)


def _bottleneck_indexes_medians(eb: EntropyBottleneck, size) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``EntropyBottleneck.compress``/``decompress`` build for a latent of ``size`` ``(N, C, ...)``: the
    channel index of every element and the channel medians, expanded over the batch."""
    indexes = eb._build_indexes(size)
    spatial = len(size) - 2
    medians = eb._extend_ndims(eb._get_medians().detach(), spatial)
    return indexes, medians.expand(size[0], *([-1] * (spatial + 1)))


def bottleneck_compress(eb: EntropyBottleneck, x: torch.Tensor) -> tuple[list[bytes], torch.Tensor]:
    """``(strings, x_hat)``: ``EntropyBottleneck.compress(eb, x)``'s strings (the same bytes) and the
    dequantised latent that decoding them gives (``EntropyBottleneck.decompress``), without decoding."""
    if not _fast_coder(eb):
        strings = EntropyBottleneck.compress(eb, x)
        return strings, EntropyBottleneck.decompress(eb, strings, x.shape[2:])
    indexes, medians = _bottleneck_indexes_medians(eb, x.size())
    symbols = eb.quantize(x, "symbols", medians)
    return _encode(eb, symbols, indexes), eb.dequantize(symbols.to(eb._quantized_cdf.device), medians, medians.dtype)


def bottleneck_decompress(eb: EntropyBottleneck, strings, size) -> torch.Tensor:
    """``EntropyBottleneck.decompress(eb, strings, size)``, cheaper: latent ``(len(strings), C, *size)``."""
    if not _fast_coder(eb):
        return EntropyBottleneck.decompress(eb, strings, size)
    indexes, medians = _bottleneck_indexes_medians(eb, (len(strings), eb._quantized_cdf.size(0), *size))
    return entropy_decompress(eb, strings, indexes.to(eb._quantized_cdf.device), medians.dtype, medians)


def scale_indexes(gc: GaussianConditional, scales: torch.Tensor) -> torch.Tensor:
    """``GaussianConditional.build_indexes(gc, scales)`` in one search instead of a pass per scale-table entry:
    the CDF row of each scale, the number of table entries (but the last) below the bounded scale. int32."""
    if gc.scale_table.numel() == 0:
        raise ValueError("Uninitialized scale table. Run update() first")
    return torch.bucketize(gc.lower_bound_scale(scales), gc.scale_table[:-1], right=False).int()


# ------------------------------------------------------------------------------------------ the model
class SplitModel(CompressionModel):
    """Edge encoder -> entropy model -> cloud decoder + classifier; images in [0, 1].

    ``forward(x, noise=None)`` returns ``{"logits", "likelihoods": {"y"[, "z"]}, "latent", "y"}``; ``latent``
    is the quantised latent ``y_hat`` the cloud receives (noisy in training mode), ``y`` the encoder output.
    ``noise`` overrides the entropy model's mode: ``True`` adds uniform noise instead of rounding (the
    training-time relaxation, used by the entropy attack), ``False`` rounds, ``None`` follows ``self.training``.
    ``compress(x)`` gives the real rANS byte strings (byte for byte those of CompressAI's own ``compress``,
    :meth:`compress_reference`, at a fraction of its cost), ``decompress(strings, shape)`` the logits.
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
        :class:`robustnb.config.ConfigError` before the coder runs. The strings are byte for byte those of
        CompressAI's own ``compress`` (:meth:`compress_reference`), at a fraction of its cost
        (:func:`entropy_compress`); the side information ``z`` is dequantised from its symbols, which is what
        decoding its string gives."""
        return self.compress_latent(self.encode(x))

    @torch.no_grad()
    def compress_latent(self, y: torch.Tensor) -> dict:
        """:meth:`compress` from the encoder's output ``y`` (``encode(x)``), for a caller that already has it
        (one encoder pass for the forward pass and the bitstream: :func:`robustnb.split.rate.measure`)."""
        y = self._check_finite(y, "the latent y")
        if self.entropy_model == "factorized":
            return {"strings": [bottleneck_compress(self.entropy_bottleneck, y)[0]], "shape": tuple(y.shape[-2:])}
        z = self._check_finite(self.h_a(y), "the hyper-latent z")
        z_strings, z_hat = bottleneck_compress(self.entropy_bottleneck, z)
        scales, means = self._gaussian_params(z_hat)
        self._check_finite(torch.cat([scales, means]), "the predicted scales and means")
        indexes = scale_indexes(self.gaussian_conditional, scales)
        y_strings = entropy_compress(self.gaussian_conditional, y, indexes, means=means)
        return {"strings": [y_strings, z_strings], "shape": tuple(z.shape[-2:])}

    @torch.no_grad()
    def compress_reference(self, x: torch.Tensor) -> dict:
        """:meth:`compress` through CompressAI's own ``compress``/``decompress`` methods and ``build_indexes``
        (each image's call converts the entropy model's whole CDF table to Python lists): the reference the fast
        coder is tested against (same strings) and timed against (:func:`robustnb.split.rate.coding_speed`)."""
        y = self._check_finite(self.encode(x), "the latent y")
        if self.entropy_model == "factorized":
            return {"strings": [EntropyBottleneck.compress(self.entropy_bottleneck, y)], "shape": tuple(y.shape[-2:])}
        z = self._check_finite(self.h_a(y), "the hyper-latent z")
        z_strings = EntropyBottleneck.compress(self.entropy_bottleneck, z)
        z_hat = EntropyBottleneck.decompress(self.entropy_bottleneck, z_strings, z.shape[-2:])
        scales, means = self._gaussian_params(z_hat)
        self._check_finite(torch.cat([scales, means]), "the predicted scales and means")
        indexes = GaussianConditional.build_indexes(self.gaussian_conditional, scales)
        y_strings = GaussianConditional.compress(self.gaussian_conditional, y, indexes, means=means)
        return {"strings": [y_strings, z_strings], "shape": tuple(z.shape[-2:])}

    @torch.no_grad()
    def decompress_latent(self, strings, shape) -> torch.Tensor:
        """Decode the bitstream back to the quantised latent ``y_hat`` (what the cloud sees): ``strings`` as
        :meth:`compress` gives them, ``shape`` its ``"shape"``."""
        if self.entropy_model == "factorized":
            return bottleneck_decompress(self.entropy_bottleneck, strings[0], shape)
        z_hat = bottleneck_decompress(self.entropy_bottleneck, strings[1], shape)
        scales, means = self._gaussian_params(z_hat)
        indexes = scale_indexes(self.gaussian_conditional, scales)
        return entropy_decompress(self.gaussian_conditional, strings[0], indexes, means=means)

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
