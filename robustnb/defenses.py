"""Input-side defenses against entropy (bit-rate) attacks, above all the *disentangled object-aware TV* defense.

The disentangled defense (Zhang et al., *Resilience of Entropy Model in Distributed Neural Networks*, part 2):

1. split the input into a low-frequency part and a high-frequency residual (:func:`robustnb.signal.split`,
   the two parts sum back to the input);
2. locate the object: the entropy model spends many bits (low likelihood) on it, so the bit map
   (``robustnb.split.rate.bit_map``) upsampled to the image and scaled to [0, 1] is the object mask (:func:`likelihood_mask`;
   a Grad-CAM map on the cloud classifier is the comparison, :func:`grad_cam`);
3. total-variation denoising (:func:`robustnb.signal.tv_denoise`, Chambolle's dual projection written in torch so that it can
   be unrolled and differentiated) with a per-pixel weight ``lambda_TV`` that is strong on the background and
   on the high-frequency residual and gentle on the object (:func:`tv_weight_map`);
4. recombine (clamped to [0, 1]) and encode.

That is the paper's description; the authors' public code (``Restuccia-Group/EntropyR``, ``defense.py`` and
``utils.denoise``) runs something else, implemented here from reading it as :class:`AuthorsTV`
(``authors_tv``, :func:`authors_denoise`): there is no frequency split in it (the DCT mask that filters
nothing is in their adaptive *attack*, ``adaptive.LowFreqAtk``); the weight is the mean over channels of the
latent likelihoods, upsampled (nearest) to the image, so the update is strongest where the image is cheap;
and the update, ``x_new += step * mask * ((x - x_new) + reg * (d_rows + d_cols))`` with forward differences,
is a linear, one-sided first-difference step (it blurs and shifts the image towards the top left), not a TV
step; finally ``x_new = x`` aliases the input, so the fidelity term ``x - x_new`` is always zero and the
caller's image is overwritten. Their constants (100 iterations, ``reg`` 0.1, step 0.15) were set for 224 px
ImageNet images. :class:`AuthorsTVRepaired` (``authors_tv_repaired``) is the same update on a copy, so the
fidelity term pulls towards the input.

Our disentangled defense follows the paper: the fidelity term is the usual ``1/2 ||u - f||^2`` (weight 0 gives
back the input exactly; tests check it), the low/high split is a real Gaussian FFT low-pass, and the mask is
computed from the low-frequency part of the input by default (the perturbation lives mostly at high
frequencies, and the entropy attack spreads bits over the whole image, which would otherwise blur the object
mask; ``mask_source="input"`` uses the raw input instead).

Baselines on the same inputs (registered in :data:`robustnb.registry.DEFENSES`; :func:`make_defense`): ``none``, ``global_tv`` (uniform TV
weight, not object-aware, the idea of ART's ``TotalVarMin``), ``gaussian_blur``, ``jpeg`` re-encoding,
``bit_depth`` reduction, ``disentangled_tv``, and the authors' code as it runs (``authors_tv``) and repaired
(``authors_tv_repaired``). Every defense is an ``nn.Module`` ``x -> x'`` with a ``differentiable`` flag
(``False`` means an adaptive attacker needs BPDA, see ``robustnb.attacks.adaptive``). :data:`STRENGTHS` names
each defense's strength (the :class:`DefenseSettings` field a comparison sweeps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import nn
from torchvision.io import decode_jpeg, encode_jpeg

from robustnb import registry
from robustnb.checks import check_flag, check_images, check_labels, check_number
from robustnb.config import ConfigError
from robustnb.signal import check_cutoff, split, tv_denoise
from robustnb.split import rate

MASK_SOURCES = ("low", "input")


class BitMap:
    """``x -> rate.bit_map(model, x)``: the bit map of a split model, as the disentangled defense's mask source.

    Calling it gives the defender's map (real rounding, no gradient). :meth:`soft` is the same map under the
    entropy model's noise relaxation *with* gradients (what an adaptive attacker differentiates; see
    :func:`likelihood_mask` with ``grad=True``)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, t):
        return rate.bit_map(self.model, t)

    def soft(self, t):
        """Bits per latent location ``(N, h, w)`` under additive uniform noise, differentiable in ``t``."""
        return rate.location_bits(self.likelihoods(t, noise=True), floor=1e-9)

    def likelihoods(self, t, noise: bool = False):
        """The latent's likelihoods ``(N, C, h, w)``: real rounding (``noise=False``, what the coder uses) or the
        noise relaxation (differentiable in ``t``)."""
        return self.model(t, noise=noise)["likelihoods"]["y"]


def model_bit_map(model) -> BitMap:
    """The bit map of a split model as the disentangled defense's mask source (:class:`BitMap`)."""
    return BitMap(model)


# -------------------------------------------------------------------------------- object masks
def _normalise(m: torch.Tensor, lo_q: float = 0.05, hi_q: float = 0.95) -> torch.Tensor:
    """Per image, map the ``lo_q`` quantile to 0 and the ``hi_q`` quantile to 1, clamp to [0, 1]."""
    flat = m.flatten(1)
    lo = flat.quantile(lo_q, dim=1).view(-1, *[1] * (m.dim() - 1))
    hi = flat.quantile(hi_q, dim=1).view(-1, *[1] * (m.dim() - 1))
    return ((m - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)


def upsample_map(m: torch.Tensor, size) -> torch.Tensor:
    """``(N, h, w)`` map -> ``(N, 1, H, W)`` by bilinear interpolation."""
    return F.interpolate(m[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)


def likelihood_mask(bit_map_fn, x: torch.Tensor, cutoff: float = 0.15, source: str = "low",
                    grad: bool = False) -> torch.Tensor:
    """Object mask from the entropy model: bits per latent location (``-log2`` likelihood; many bits = the
    object), upsampled to the image and scaled per image to [0, 1]. Shape ``(N, 1, H, W)``.

    ``bit_map_fn(x) -> (N, h, w)`` is :func:`model_bit_map` (``rate.bit_map(model, x)``); ``source="low"``
    computes it on the low-frequency part of ``x`` (see the module notes), ``"input"`` on ``x`` itself.

    ``grad=False`` (the defender): the mask is a constant. ``grad=True`` (an adaptive attacker): BPDA on the bit
    map -- the forward value is still the real bit map (the mask the defender computes), the backward pass is
    that of ``bit_map_fn.soft`` (the noise-relaxed bit map, differentiable; a plain function without ``soft``
    is called again with gradients enabled).
    """
    check_images(x)
    if source not in MASK_SOURCES:
        raise ConfigError(f"Unknown mask source {source!r}: choose one of {MASK_SOURCES}.")
    src = split(x, cutoff)[0].clamp(0, 1) if source == "low" else x
    with torch.no_grad():
        bits = bit_map_fn(src.detach()).detach().float()
    if grad and torch.is_grad_enabled():
        soft = getattr(bit_map_fn, "soft", bit_map_fn)(src).float()
        bits = soft + (bits.to(soft.device) - soft).detach()  # real value forward, soft gradient backward
    return _normalise(upsample_map(bits, x.shape[-2:]).to(x.device))


def grad_cam(model, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Grad-CAM on the cloud classifier, taken at the transmitted latent: ``relu(sum_c a_c A_c)`` with
    ``a_c`` the spatial mean of d logit / d A_c for the predicted (or ``target``) class; upsampled and scaled
    to [0, 1], shape ``(N, 1, H, W)``. ``model(x)`` must return ``{"logits", "latent"}`` with the latent in
    the graph of the logits."""
    check_images(x)
    if target is not None:
        check_labels(target, x, "target")
    with torch.enable_grad():
        out = model(x.detach())
        a, logits = out["latent"], out["logits"]
        cls = logits.argmax(1) if target is None else target
        score = logits.gather(1, cls[:, None]).sum()
        (g,) = torch.autograd.grad(score, a)
    cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1)).detach()
    return _normalise(upsample_map(cam, x.shape[-2:]), 0.0, 1.0)


def mask_agreement(m1: torch.Tensor, m2: torch.Tensor) -> pd.DataFrame:
    """Per image, the rank correlation between two masks and the overlap (IoU) of their top halves."""
    rows = []
    for i in range(len(m1)):
        a, b = m1[i].flatten(), m2[i].flatten()
        ra, rb = a.argsort().argsort().float(), b.argsort().argsort().float()
        corr = float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])
        ta, tb = a >= a.median(), b >= b.median()
        iou = float((ta & tb).sum()) / max(1, int((ta | tb).sum()))
        rows.append({"image": i, "rank_corr": corr, "top_half_iou": iou})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------- defenses
def tv_weight_map(mask: torch.Tensor, lambda_tv: float, object_factor: float) -> torch.Tensor:
    """Per-pixel TV weight: ``lambda_tv`` on the background (mask 0), ``object_factor * lambda_tv`` on the
    object (mask 1), linear in between."""
    return lambda_tv * ((1 - mask) + object_factor * mask)


@registry.DEFENSES.register("none")
class Defense(nn.Module):
    """A preprocessing defense ``x -> x'`` (both in [0, 1]); ``differentiable`` says whether autograd
    through it is meaningful (otherwise adaptive attacks use BPDA)."""

    differentiable = True
    name = "none"

    def forward(self, x):
        """Check the input (:func:`robustnb.checks.check_images`); an empty batch comes back empty."""
        check_images(x)
        return x.clone() if len(x) == 0 else self.transform(x)

    def transform(self, x):  # the identity; subclasses replace it
        return x


@registry.DEFENSES.register("global_tv")
class GlobalTV(Defense):
    """TV denoising with one weight everywhere (not object-aware), the classic TV-minimisation defense."""

    name = "global_tv"

    def __init__(self, weight: float = 0.05, n_iter: int = 50):
        super().__init__()
        self.weight = check_number(weight, "TV weight", 0.0, None, hi_open=True)
        self.n_iter = check_number(n_iter, "n_iter", 0, None, integer=True)

    def transform(self, x):
        return tv_denoise(x, self.weight, self.n_iter).clamp(0, 1)


@registry.DEFENSES.register("gaussian_blur")
class GaussianBlur(Defense):
    name = "gaussian_blur"

    def __init__(self, sigma: float = 0.8):
        super().__init__()
        self.sigma = check_number(sigma, "sigma", 0.0, 20.0)

    def transform(self, x):
        if self.sigma <= 0:
            return x
        k = 2 * math.ceil(3 * self.sigma) + 1
        return TF.gaussian_blur(x, [k, k], [self.sigma, self.sigma])


@registry.DEFENSES.register("jpeg")
class JPEG(Defense):
    """JPEG re-encoding (torchvision's libjpeg); not differentiable."""

    name = "jpeg"
    differentiable = False

    def __init__(self, quality: int = 75):
        super().__init__()
        self.quality = check_number(quality, "JPEG quality", 1, 100, integer=True)

    def transform(self, x):
        u8 = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
        imgs = decode_jpeg(encode_jpeg(list(u8), quality=self.quality))
        return (torch.stack(imgs).float() / 255).to(x)


@registry.DEFENSES.register("bit_depth")
class BitDepth(Defense):
    """Bit-depth reduction (feature squeezing) to ``bits`` bits per channel; not differentiable."""

    name = "bit_depth"
    differentiable = False

    def __init__(self, bits: int = 4):
        super().__init__()
        self.bits = check_number(bits, "bits", 1, 16, integer=True)

    def transform(self, x):
        levels = 2 ** self.bits - 1
        return torch.round(x * levels) / levels


@registry.DEFENSES.register("disentangled_tv")
class DisentangledTV(Defense):
    """The disentangled, object-aware TV defense (see the module docstring).

    ``lambda_tv`` is the background weight of the low-frequency part; the object gets ``object_factor *
    lambda_tv``; the high-frequency residual gets ``hf_factor`` times the weight of the low part at the same
    pixel. ``bit_map_fn`` (:func:`model_bit_map`) locates the object. For the defender the mask is a constant;
    ``mask_gradient = True`` (set by an adaptive attacker, ``robustnb.attacks.adaptive``) lets gradients flow
    through it too (BPDA on the bit map, see :func:`likelihood_mask`; the forward value is unchanged).
    ``forward_parts`` returns the intermediate images too.
    """

    mask_gradient = False

    name = "disentangled_tv"

    def __init__(self, bit_map_fn, lambda_tv: float = 0.01, cutoff: float = 0.15, object_factor: float = 0.25,
                 hf_factor: float = 4.0, n_iter: int = 50, mask_source: str = "low"):
        super().__init__()
        self.bit_map_fn = bit_map_fn
        self.lambda_tv = check_number(lambda_tv, "lambda_tv", 0.0, None, hi_open=True)
        self.cutoff = check_cutoff(cutoff)
        self.object_factor = check_number(object_factor, "object_factor", 0.0, None, hi_open=True)
        self.hf_factor = check_number(hf_factor, "hf_factor", 0.0, None, hi_open=True)
        self.n_iter, self.mask_source = check_number(n_iter, "n_iter", 0, None, integer=True), mask_source
        if mask_source not in MASK_SOURCES:
            raise ConfigError(f"Unknown mask source {mask_source!r}: choose one of {MASK_SOURCES}.")

    def mask(self, x):
        return likelihood_mask(self.bit_map_fn, x, self.cutoff, self.mask_source, grad=self.mask_gradient)

    def forward_parts(self, x) -> dict:
        check_images(x)
        low, high = split(x, self.cutoff)
        mask = self.mask(x if self.mask_gradient else x.detach())
        w = tv_weight_map(mask, self.lambda_tv, self.object_factor)
        low_d = tv_denoise(low, w, self.n_iter)
        high_d = tv_denoise(high, self.hf_factor * w, self.n_iter)
        return {"low": low, "high": high, "mask": mask, "weight": w, "low_denoised": low_d,
                "high_denoised": high_d, "output": (low_d + high_d).clamp(0, 1)}

    def transform(self, x):
        if self.lambda_tv == 0:
            return x
        return self.forward_parts(x)["output"]


# ------------------------------------------------------------- the authors' public defense, as it runs
#: the constants of the authors' defense script (``denoise(xadv, 100, 0.1, 0.15, mask)`` in their ``defense.py``),
#: chosen for 224 x 224 ImageNet images: iterations, ``reg`` (the weight of the difference term) and step size
AUTHORS_ITERATIONS, AUTHORS_REG, AUTHORS_STEP = 100, 0.1, 0.15


def forward_differences(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d_rows, d_cols)`` of images ``(..., H, W)``: ``u[i+1, j] - u[i, j]`` and ``u[i, j+1] - u[i, j]``, zero in
    the last row (column). The convention of ``torchmetrics.functional.image.image_gradients``, which the
    authors' ``denoise`` calls (its first output is the row difference, whatever the names there say)."""
    d_rows = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    d_cols = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1, 0, 0))
    return d_rows, d_cols


def authors_denoise(x: torch.Tensor, iterations: int, reg: float, step: float, weight: torch.Tensor,
                    alias: bool = True) -> torch.Tensor:
    """The update of the authors' ``utils.denoise`` (EntropyR), written from reading it:
    ``u <- u + step * weight * ((x - u) + reg * (d_rows(u) + d_cols(u)))``, ``iterations`` times, from ``u = x``.

    ``alias=True`` is their code: the iterate *is* the input tensor (``x_new = x``) and is updated in place, so
    the fidelity term ``x - u`` is zero at every step and ``x`` itself is overwritten with the result (the
    returned tensor is ``x``). What remains is a linear, one-sided step: each pixel moves towards its lower and
    right neighbours by ``step * reg * weight`` per iteration (a blur that also shifts the image up and left).
    ``alias=False`` is the repair: the iterate is a copy, ``x`` is left as it is, and the fidelity term pulls the
    iterate back towards it (the iteration then converges to a mild, fixed smoothing).

    ``x``: images ``(N, C, H, W)``; ``weight``: broadcastable to ``x`` (their per-pixel likelihood map). With
    ``alias=True`` and gradients, ``x`` must not be a leaf that requires grad (autograd refuses to overwrite one):
    pass a copy, as :class:`AuthorsTV` does."""
    u = x if alias else x.clone()
    for _ in range(iterations):
        d_rows, d_cols = forward_differences(u)
        u += step * weight * ((x - u) + reg * (d_rows + d_cols))
    return u


def likelihood_weight(bit_map_fn, x: torch.Tensor, grad: bool = False) -> torch.Tensor:
    """The authors' weight map ``(N, 1, H, W)``: the mean over channels of the latent likelihoods ``p(y_hat)``
    (real rounding), upsampled to the image by nearest neighbour, per image (their script runs one image at a
    time and also averages over the batch). Near 1 where the image is cheap to code (the background), small
    where it costs bits. ``bit_map_fn`` is :func:`model_bit_map` (its ``likelihoods``); a plain bit-map function
    ``x -> (N, h, w)`` stands for one channel, ``p = 2 ** -bits``. ``grad=True``: BPDA as in
    :func:`likelihood_mask` (forward the real map, backward the noise-relaxed one)."""
    check_images(x)
    lik = getattr(bit_map_fn, "likelihoods", None)

    def weight(t, noise):
        p = lik(t, noise=noise) if lik is not None else 2.0 ** -(
            getattr(bit_map_fn, "soft", bit_map_fn) if noise else bit_map_fn)(t)[:, None]
        return p.float().mean(1, keepdim=True)

    with torch.no_grad():
        w = weight(x.detach(), False).to(x.device)
    if grad and torch.is_grad_enabled():
        soft = weight(x, True).to(x.device)
        w = soft + (w - soft).detach()
    return F.interpolate(w, size=tuple(x.shape[-2:]), mode="nearest")


@registry.DEFENSES.register("authors_tv")
class AuthorsTV(Defense):
    """The authors' public defense as their code runs it (:func:`authors_denoise` with ``alias=True``, weight
    :func:`likelihood_weight`): no frequency split, zero fidelity term, a linear one-sided update; their
    constants by default (:data:`AUTHORS_ITERATIONS`, :data:`AUTHORS_REG`, :data:`AUTHORS_STEP`). Differentiable
    (an adaptive attacker unrolls it; ``mask_gradient`` as for :class:`DisentangledTV`).

    ``in_place=False`` (the default) runs their update on a copy, so the caller's tensor survives: their script
    never reads the input again, while this package's attacks and :func:`apply` do; the values are theirs
    either way. ``in_place=True`` overwrites the caller's images as their code does."""

    name = "authors_tv"
    repaired = False
    mask_gradient = False

    def __init__(self, bit_map_fn, iterations: int = AUTHORS_ITERATIONS, reg: float = AUTHORS_REG,
                 step: float = AUTHORS_STEP, in_place: bool = False):
        super().__init__()
        self.bit_map_fn = bit_map_fn
        self.iterations = check_number(iterations, "iterations", 0, None, integer=True)
        self.reg = check_number(reg, "reg", 0.0, None, hi_open=True)
        self.step = check_number(step, "step", 0.0, 1.0)
        self.in_place = check_flag(in_place, "in_place")

    def weight(self, x):
        return likelihood_weight(self.bit_map_fn, x, grad=self.mask_gradient)

    def transform(self, x):
        w = self.weight(x if self.mask_gradient else x.detach())
        target = x if (self.in_place and not self.repaired) else x.clone()
        return authors_denoise(target, self.iterations, self.reg, self.step, w, alias=not self.repaired)


@registry.DEFENSES.register("authors_tv_repaired")
class AuthorsTVRepaired(AuthorsTV):
    """:class:`AuthorsTV` with the aliasing repaired (:func:`authors_denoise` with ``alias=False``): the iterate
    is a copy, the fidelity term works, the input is never overwritten. Same weight, update and constants."""

    name = "authors_tv_repaired"
    repaired = True


@dataclass(frozen=True)
class DefenseSettings:
    """One strength per defense (the defaults used in the chapter's table)."""

    global_tv: float = 0.05        # TV weight
    gaussian_blur: float = 0.8     # sigma in pixels
    jpeg: int = 75                 # quality
    bit_depth: int = 4             # bits per channel
    lambda_tv: float = 0.01        # disentangled: background weight (0.05 cost 39 points of accuracy at cpu)
    cutoff: float = 0.15           # disentangled: low/high split (cycles/pixel)
    object_factor: float = 0.25
    hf_factor: float = 4.0
    n_iter: int = 50
    mask_source: str = "low"
    authors_iterations: int = AUTHORS_ITERATIONS  # the authors' defense (and repaired): their constants
    authors_reg: float = AUTHORS_REG
    authors_step: float = AUTHORS_STEP


#: each defense's strength: ``(DefenseSettings field, label)``; the comparison sweeps it (the disentangled
#: defense's other settings, the authors' ``reg`` and step stay as they are)
STRENGTHS = {"global_tv": ("global_tv", "TV weight"), "gaussian_blur": ("gaussian_blur", "sigma (px)"),
             "jpeg": ("jpeg", "JPEG quality"), "bit_depth": ("bit_depth", "bits per channel"),
             "disentangled_tv": ("lambda_tv", "lambda_TV"), "authors_tv": ("authors_iterations", "iterations"),
             "authors_tv_repaired": ("authors_iterations", "iterations")}


def _makers() -> dict:
    """Each defense's maker: ``(bit_map_fn=None, settings=None, **overrides)``, the strengths of ``settings``
    (:class:`DefenseSettings`) unless ``overrides`` replace them; with the names of the overrides each takes
    (``robustnb.registry.Registry.make`` refuses any other, so a misspelt one is never dropped)."""
    def single(cls, field, arg, *extra):
        def make(bit_map_fn=None, settings: DefenseSettings | None = None, **overrides):
            s = settings or DefenseSettings()
            kw = {arg: getattr(s, field), **{e: getattr(s, e) for e in extra}}
            unknown = [k for k in overrides if k not in kw]
            if unknown:
                raise ConfigError(f"the {cls.name} defense takes no setting {', '.join(map(repr, unknown))}: "
                                  f"allowed are {', '.join(map(repr, kw))}.")
            return cls(**{**kw, **overrides})
        return make, (arg, *extra)

    def disentangled(bit_map_fn=None, settings: DefenseSettings | None = None, **overrides):
        if bit_map_fn is None:
            raise ConfigError("the disentangled_tv defense needs bit_map_fn (robustnb.defenses.model_bit_map(model))")
        s = settings or DefenseSettings()
        kw = dict(lambda_tv=s.lambda_tv, cutoff=s.cutoff, object_factor=s.object_factor, hf_factor=s.hf_factor,
                  n_iter=s.n_iter, mask_source=s.mask_source)
        kw.update(overrides)
        return DisentangledTV(bit_map_fn, **kw)

    def authors(cls):
        def make(bit_map_fn=None, settings: DefenseSettings | None = None, **overrides):
            if bit_map_fn is None:
                raise ConfigError(f"the {cls.name} defense needs bit_map_fn "
                                  "(robustnb.defenses.model_bit_map(model)): its weight is the latent likelihood")
            s = settings or DefenseSettings()
            kw = dict(iterations=s.authors_iterations, reg=s.authors_reg, step=s.authors_step)
            return cls(bit_map_fn, **{**kw, **overrides})
        return make, ("iterations", "reg", "step", "in_place")

    return {"none": (lambda bit_map_fn=None, settings=None: Defense(), ()),
            "global_tv": single(GlobalTV, "global_tv", "weight", "n_iter"),
            "gaussian_blur": single(GaussianBlur, "gaussian_blur", "sigma"),
            "jpeg": single(JPEG, "jpeg", "quality"),
            "bit_depth": single(BitDepth, "bit_depth", "bits"),
            "disentangled_tv": (disentangled, ("lambda_tv", "cutoff", "object_factor", "hf_factor", "n_iter",
                                               "mask_source")),
            "authors_tv": authors(AuthorsTV), "authors_tv_repaired": authors(AuthorsTVRepaired)}


for _name, (_maker, _settings) in _makers().items():
    registry.DEFENSES.set_maker(_name, _maker, settings=_settings)


def strength(name: str, settings: "DefenseSettings") -> float:
    """Defense ``name``'s strength in ``settings`` (its :data:`STRENGTHS` field); ``none`` has none (nan)."""
    return float(getattr(settings, STRENGTHS[name][0])) if name in STRENGTHS else float("nan")


def make_defense(name: str, bit_map_fn=None, settings: DefenseSettings | None = None, **overrides) -> Defense:
    """A defense by name (:data:`robustnb.registry.DEFENSES`) with the strengths of ``settings``;
    ``overrides`` replace single arguments (``weight`` and ``n_iter``, ``sigma``, ``quality``, ``bits``, the
    disentangled defense's keyword arguments, or the authors' ``iterations``, ``reg``, ``step``, ``in_place``);
    any other is refused, naming the allowed ones. ``disentangled_tv``, ``authors_tv`` and
    ``authors_tv_repaired`` need ``bit_map_fn`` (:func:`model_bit_map`). The same as
    ``robustnb.mechanisms.make("defense", name, bit_map_fn, settings, ...)``."""
    return registry.DEFENSES.make(name, bit_map_fn, settings, **overrides)


def apply(defense: Defense, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Run a defense over a large tensor in batches, without gradients. ``x`` is never changed: a defense that
    writes into its input (``AuthorsTV(in_place=True)``) gets a copy of each batch."""
    check_images(x)
    copy = getattr(defense, "in_place", False)
    with torch.no_grad():
        return torch.cat([defense(x[i:i + batch_size].clone() if copy else x[i:i + batch_size])
                          for i in range(0, len(x), batch_size)]) if len(x) else x

