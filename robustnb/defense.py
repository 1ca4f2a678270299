"""Input-side defenses against entropy (bit-rate) attacks, above all the *disentangled object-aware TV* defense.

The disentangled defense (Zhang et al., *Resilience of Entropy Model in Distributed Neural Networks*, part 2):

1. split the input into a low-frequency part and a high-frequency residual (:func:`robustnb.frequency.split`,
   the two parts sum back to the input);
2. locate the object: the entropy model spends many bits (low likelihood) on it, so the bit map
   (``rate.bit_map``) upsampled to the image and scaled to [0, 1] is the object mask (:func:`likelihood_mask`;
   a Grad-CAM map on the cloud classifier is the comparison, :func:`grad_cam`);
3. total-variation denoising (:func:`tv_denoise`, Chambolle's dual projection written in torch so that it can
   be unrolled and differentiated) with a per-pixel weight ``lambda_TV`` that is strong on the background and
   on the high-frequency residual and gentle on the object (:func:`tv_weight_map`);
4. recombine (clamped to [0, 1]) and encode.

Where this differs from the authors' public code: there, the TV update's fidelity term is always zero and the
DCT mask filters nothing, so the code does not do what the paper describes. Here the fidelity term is the
usual ``1/2 ||u - f||^2`` (weight 0 gives back the input exactly; tests check it), the low/high split is a real
Gaussian FFT low-pass, and the mask is computed from the low-frequency part of the input by default (the
perturbation lives mostly at high frequencies, and the entropy attack spreads bits over the whole image,
which would otherwise blur the object mask; ``mask_source="input"`` uses the raw input instead).

Baselines on the same inputs (:data:`DEFENSES`, :func:`make_defense`): ``none``, ``global_tv`` (uniform TV
weight, not object-aware, the idea of ART's ``TotalVarMin``), ``gaussian_blur``, ``jpeg`` re-encoding,
``bit_depth`` reduction, and ``disentangled_tv``. Every defense is an ``nn.Module`` ``x -> x'`` with a
``differentiable`` flag (``False`` means an adaptive attacker needs BPDA, see ``robustnb.attacks.adaptive``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from robustnb.config import ConfigError
from robustnb.frequency import _check_cutoff, split, total_variation

DEFENSES = ("none", "global_tv", "gaussian_blur", "jpeg", "bit_depth", "disentangled_tv")
MASK_SOURCES = ("low", "input")


# ----------------------------------------------------------------------------------- TV denoising
def _grad(u):
    gx = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1))
    gy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    return gx, gy


def _div(px, py):
    """The negative adjoint of :func:`_grad` (Neumann boundary): ``<grad u, p> = -<u, div p>``."""
    dx = px - F.pad(px[..., :, :-1], (1, 0))
    dy = py - F.pad(py[..., :-1, :], (0, 0, 1, 0))
    return dx + dy


def tv_denoise(f: torch.Tensor, weight, n_iter: int = 50, tau: float = 0.25) -> torch.Tensor:
    """Total-variation denoising, Chambolle's dual projection in torch (differentiable when unrolled).

    Solves ``min_u 1/2 ||u - f||^2 + sum_i w_i |(grad u)_i|`` per channel (isotropic TV, Neumann boundary),
    where ``weight`` is a number or a tensor broadcastable to ``f`` (a per-pixel ``lambda_TV`` map). The dual
    ``q`` with ``|q_i| <= w_i`` is updated by projected gradient steps ``q <- P(q + tau grad(f + div q))``
    (``tau <= 1/4`` converges) and ``u = f + div q``. ``weight = 0`` returns ``f`` exactly.
    """
    if not isinstance(weight, torch.Tensor):
        weight = float(weight)
        if weight < 0 or not math.isfinite(weight):
            raise ConfigError(f"TV weight must be a finite number >= 0, got {weight!r}")
        if weight == 0:
            return f.clone()
        w = torch.full_like(f[:, :1], weight)
    else:
        if bool((weight < 0).any()):
            raise ConfigError("TV weight map must be >= 0 everywhere")
        w = weight.to(f)
    if not 0 < tau <= 0.25:
        raise ConfigError(f"tau must be in (0, 0.25] for convergence, got {tau}")
    qx = torch.zeros_like(f)
    qy = torch.zeros_like(f)
    for _ in range(int(n_iter)):
        gx, gy = _grad(f + _div(qx, qy))
        qx, qy = qx + tau * gx, qy + tau * gy
        norm = torch.sqrt(qx ** 2 + qy ** 2 + 1e-20)  # smooth at 0: finite gradients when unrolled
        scale = torch.clamp(w / norm, max=1.0)
        qx, qy = qx * scale, qy * scale
    return f + _div(qx, qy)


def tv_skimage(x: torch.Tensor, weight: float, method: str = "chambolle") -> torch.Tensor:
    """scikit-image's ``denoise_tv_chambolle`` / ``denoise_tv_bregman`` per image (reference implementation;
    ``weight`` is scikit-image's: for Bregman it is the fidelity weight, larger = *less* smoothing)."""
    from skimage.restoration import denoise_tv_bregman, denoise_tv_chambolle

    if method not in ("chambolle", "bregman"):
        raise ConfigError(f"Unknown TV method {method!r}: choose 'chambolle' or 'bregman'.")
    out = []
    for img in x.detach().cpu().permute(0, 2, 3, 1).double().numpy():
        if method == "chambolle":
            out.append(denoise_tv_chambolle(img, weight=weight, channel_axis=-1))
        else:
            out.append(denoise_tv_bregman(img, weight=weight, channel_axis=-1))
    import numpy as np

    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x)


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


def likelihood_mask(bit_map_fn, x: torch.Tensor, cutoff: float = 0.15, source: str = "low") -> torch.Tensor:
    """Object mask from the entropy model: bits per latent location (``-log2`` likelihood; many bits = the
    object), upsampled to the image and scaled per image to [0, 1]. Shape ``(N, 1, H, W)``.

    ``bit_map_fn(x) -> (N, h, w)`` is ``lambda x: rate.bit_map(model, x)``; ``source="low"`` computes it on the
    low-frequency part of ``x`` (see the module notes), ``"input"`` on ``x`` itself.
    """
    if source not in MASK_SOURCES:
        raise ConfigError(f"Unknown mask source {source!r}: choose one of {MASK_SOURCES}.")
    src = split(x, cutoff)[0].clamp(0, 1) if source == "low" else x
    with torch.no_grad():
        bits = bit_map_fn(src).detach().float()
    return _normalise(upsample_map(bits, x.shape[-2:]).to(x.device))


def grad_cam(model, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Grad-CAM on the cloud classifier, taken at the transmitted latent: ``relu(sum_c a_c A_c)`` with
    ``a_c`` the spatial mean of d logit / d A_c for the predicted (or ``target``) class; upsampled and scaled
    to [0, 1], shape ``(N, 1, H, W)``. ``model(x)`` must return ``{"logits", "latent"}`` with the latent in
    the graph of the logits."""
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


class Defense(nn.Module):
    """A preprocessing defense ``x -> x'`` (both in [0, 1]); ``differentiable`` says whether autograd
    through it is meaningful (otherwise adaptive attacks use BPDA)."""

    differentiable = True
    name = "none"

    def forward(self, x):  # identity
        return x


class GlobalTV(Defense):
    """TV denoising with one weight everywhere (not object-aware), the classic TV-minimisation defense."""

    name = "global_tv"

    def __init__(self, weight: float = 0.05, n_iter: int = 50):
        super().__init__()
        self.weight, self.n_iter = float(weight), int(n_iter)

    def forward(self, x):
        return tv_denoise(x, self.weight, self.n_iter).clamp(0, 1)


class GaussianBlur(Defense):
    name = "gaussian_blur"

    def __init__(self, sigma: float = 0.8):
        super().__init__()
        self.sigma = float(sigma)

    def forward(self, x):
        if self.sigma <= 0:
            return x
        import torchvision.transforms.functional as TF

        k = 2 * math.ceil(3 * self.sigma) + 1
        return TF.gaussian_blur(x, [k, k], [self.sigma, self.sigma])


class JPEG(Defense):
    """JPEG re-encoding (torchvision's libjpeg); not differentiable."""

    name = "jpeg"
    differentiable = False

    def __init__(self, quality: int = 75):
        super().__init__()
        self.quality = int(quality)

    def forward(self, x):
        from torchvision.io import decode_jpeg, encode_jpeg

        u8 = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
        imgs = decode_jpeg(encode_jpeg(list(u8), quality=self.quality))
        return (torch.stack(imgs).float() / 255).to(x)


class BitDepth(Defense):
    """Bit-depth reduction (feature squeezing) to ``bits`` bits per channel; not differentiable."""

    name = "bit_depth"
    differentiable = False

    def __init__(self, bits: int = 4):
        super().__init__()
        self.bits = int(bits)

    def forward(self, x):
        levels = 2 ** self.bits - 1
        return torch.round(x * levels) / levels


class DisentangledTV(Defense):
    """The disentangled, object-aware TV defense (see the module docstring).

    ``lambda_tv`` is the background weight of the low-frequency part; the object gets ``object_factor *
    lambda_tv``; the high-frequency residual gets ``hf_factor`` times the weight of the low part at the same
    pixel. ``bit_map_fn`` (``lambda x: rate.bit_map(model, x)``) locates the object; the mask is treated as a
    constant (no gradient flows through it). ``forward_parts`` returns the intermediate images too.
    """

    name = "disentangled_tv"

    def __init__(self, bit_map_fn, lambda_tv: float = 0.01, cutoff: float = 0.15, object_factor: float = 0.25,
                 hf_factor: float = 4.0, n_iter: int = 50, mask_source: str = "low"):
        super().__init__()
        self.bit_map_fn = bit_map_fn
        self.lambda_tv, self.cutoff = float(lambda_tv), _check_cutoff(cutoff)
        self.object_factor, self.hf_factor = float(object_factor), float(hf_factor)
        self.n_iter, self.mask_source = int(n_iter), mask_source
        if self.lambda_tv < 0 or self.object_factor < 0 or self.hf_factor < 0:
            raise ConfigError("lambda_tv, object_factor and hf_factor must be >= 0")
        if mask_source not in MASK_SOURCES:
            raise ConfigError(f"Unknown mask source {mask_source!r}: choose one of {MASK_SOURCES}.")

    def mask(self, x):
        return likelihood_mask(self.bit_map_fn, x, self.cutoff, self.mask_source)

    def forward_parts(self, x) -> dict:
        low, high = split(x, self.cutoff)
        mask = self.mask(x.detach())
        w = tv_weight_map(mask, self.lambda_tv, self.object_factor)
        low_d = tv_denoise(low, w, self.n_iter)
        high_d = tv_denoise(high, self.hf_factor * w, self.n_iter)
        return {"low": low, "high": high, "mask": mask, "weight": w, "low_denoised": low_d,
                "high_denoised": high_d, "output": (low_d + high_d).clamp(0, 1)}

    def forward(self, x):
        if self.lambda_tv == 0:
            return x
        return self.forward_parts(x)["output"]


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


def make_defense(name: str, bit_map_fn=None, settings: DefenseSettings | None = None, **overrides) -> Defense:
    """A defense by name (:data:`DEFENSES`). ``disentangled_tv`` needs ``bit_map_fn``."""
    s = settings or DefenseSettings()
    if name not in DEFENSES:
        raise ConfigError(f"Unknown defense {name!r}: choose one of {', '.join(DEFENSES)}.")
    if name == "none":
        return Defense()
    if name == "global_tv":
        return GlobalTV(overrides.get("weight", s.global_tv), s.n_iter)
    if name == "gaussian_blur":
        return GaussianBlur(overrides.get("sigma", s.gaussian_blur))
    if name == "jpeg":
        return JPEG(overrides.get("quality", s.jpeg))
    if name == "bit_depth":
        return BitDepth(overrides.get("bits", s.bit_depth))
    if bit_map_fn is None:
        raise ConfigError("the disentangled_tv defense needs bit_map_fn (lambda x: rate.bit_map(model, x))")
    kw = dict(lambda_tv=s.lambda_tv, cutoff=s.cutoff, object_factor=s.object_factor, hf_factor=s.hf_factor,
              n_iter=s.n_iter, mask_source=s.mask_source)
    kw.update(overrides)
    return DisentangledTV(bit_map_fn, **kw)


def apply(defense: Defense, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Run a defense over a large tensor in batches, without gradients."""
    with torch.no_grad():
        return torch.cat([defense(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]) if len(x) else x


# ------------------------------------------------------------------------------------------ the study
@dataclass(frozen=True)
class DefenseConfig:
    """Sizes of the defense chapter. The split models are those of the entropy-attack chapters (same
    ``robustnb.entropy.get_split_model`` calls, from the model cache) at one lambda."""

    arch: str
    entropy_models: tuple[str, ...]
    lam: float
    n_images: int
    eps_255: tuple[float, ...]
    attack_steps: int
    attack_draws: int
    corruption: str
    severity: int
    lambda_tv_grid: tuple[float, ...]
    settings: DefenseSettings = DefenseSettings()

    @classmethod
    def from_preset(cls, preset: str, seed: int = 0) -> "DefenseConfig":
        from robustnb import entropy
        from robustnb.config import pick

        return cls(
            arch=pick(preset, smoke="vgg", cpu="resnet", full="resnet"),
            entropy_models=entropy.ENTROPY_MODELS,
            lam=pick(preset, smoke=min(entropy.LAMBDAS), cpu=entropy.LAMBDAS[1], full=entropy.LAMBDAS[1]),
            n_images=pick(preset, smoke=4, cpu=64, full=1000),
            eps_255=pick(preset, smoke=(8.0,), cpu=(2.0, 8.0), full=(2.0, 8.0)),
            attack_steps=pick(preset, smoke=1, cpu=10, full=20),
            attack_draws=pick(preset, smoke=1, cpu=2, full=16),
            corruption="shot_noise",
            severity=3,
            lambda_tv_grid=pick(preset, smoke=(0.0, 0.05), cpu=(0.0, 0.01, 0.02, 0.05, 0.1, 0.2),
                                full=(0.0, 0.01, 0.02, 0.05, 0.1, 0.2)),
            settings=DefenseSettings(n_iter=pick(preset, smoke=10, cpu=50, full=100)),
        )


def load_models(cfg: DefenseConfig, run) -> dict:
    """``{entropy_model: SplitModel}`` at ``cfg.lam`` from the model cache."""
    from robustnb.entropy import get_split_model

    return {em: get_split_model(cfg.arch, em, cfg.lam, run) for em in cfg.entropy_models}


def bit_map_fn(model):
    from robustnb import rate

    return lambda t: rate.bit_map(model, t)


def defenses_for(model, cfg: DefenseConfig) -> dict:
    """Every defense of :data:`DEFENSES` with the chapter's settings (the disentangled one uses ``model``)."""
    return {n: make_defense(n, bit_map_fn(model), cfg.settings) for n in DEFENSES}


def _metrics(model, x, y) -> dict:
    from robustnb import rate
    from robustnb.train import predict

    b = rate.real_bytes(model, x)
    return {"bytes": float(b.mean()), "accuracy": float((predict(model, x).argmax(1) == y).float().mean())}


def _attack(model, x, eps_255, cfg: DefenseConfig, defense=None, mode="auto"):
    from robustnb.attacks import perturb
    from robustnb.attacks.adaptive import AdaptiveEntropyAttack
    from robustnb.attacks.entropy import EntropyAttack

    kw = dict(eps=eps_255 / 255, steps=cfg.attack_steps, draws=cfg.attack_draws)
    atk = EntropyAttack(model, **kw) if defense is None else AdaptiveEntropyAttack(model, defense, mode=mode, **kw)
    # unrolling the TV solver keeps every iteration for the backward pass: smaller batches for adaptive attacks
    return perturb(atk, x, torch.zeros(len(x), dtype=torch.long), batch_size=128 if defense is None else 32,
                   desc="adaptive attack" if defense is not None else "entropy attack")


def cifar_images(cfg: DefenseConfig, run):
    """``(x, y)``: the first ``n_images`` of a stratified CIFAR-10 test subset."""
    from robustnb import data

    return data.load_cifar10("test").subset(max(cfg.n_images, 10), run.seed).tensors(cfg.n_images)


def evaluate(cfg: DefenseConfig, models: dict, x: torch.Tensor, y: torch.Tensor):
    """The chapter's table: for each entropy model, defense and input (clean, corrupted, entropy-attacked
    at each epsilon, adaptive-attacked), the real bytes per image, the overhead vs the *undefended clean*
    bytes and the accuracy. Adaptive attacks unroll differentiable defenses and use BPDA for the others; the
    disentangled defense is also attacked with BPDA (``input = "adaptive (BPDA)"``).
    Returns ``(frame, attacked)``: columns ``entropy_model, defense, input, eps_255, bytes, overhead,
    accuracy``; ``attacked[em]`` are the (non-adaptive) entropy-attacked images at the first epsilon.
    """
    from robustnb.corruptions import corrupt
    from tqdm.auto import tqdm

    rows, attacked = [], {}
    for em, model in models.items():
        defs = defenses_for(model, cfg)
        clean_bytes = _metrics(model, x, y)["bytes"]
        sets = [("clean", 0.0, x), (cfg.corruption, 0.0, corrupt(x, cfg.corruption, cfg.severity))]
        for eps in cfg.eps_255:
            sets.append(("attacked", eps, _attack(model, x, eps, cfg)))
        attacked[em] = next(xa for kind, _, xa in sets if kind == "attacked")
        for name, d in tqdm(defs.items(), desc=f"{em}: defenses", leave=False):
            own = list(sets)
            if name != "none":
                for eps in cfg.eps_255:
                    own.append(("adaptive", eps, _attack(model, x, eps, cfg, d)))
                    if name == "disentangled_tv":
                        own.append(("adaptive (BPDA)", eps, _attack(model, x, eps, cfg, d, mode="bpda")))
            else:
                own += [("adaptive", eps, xa) for (kind, eps, xa) in sets if kind == "attacked"]
            for kind, eps, xin in own:
                m = _metrics(model, apply(d, xin), y)
                rows.append({"entropy_model": em, "defense": name, "input": kind, "eps_255": eps, **m,
                             "overhead": m["bytes"] / clean_bytes - 1})
    return pd.DataFrame(rows), attacked


def overhead_table(df: pd.DataFrame, eps_255: float) -> pd.DataFrame:
    """Wide table: one row per (entropy model, defense); overhead % and accuracy % per input at ``eps_255``."""
    d = df[(df["eps_255"] == 0) | (df["eps_255"] == eps_255)].copy()
    d["overhead %"] = (100 * d["overhead"]).round(1)
    d["accuracy %"] = (100 * d["accuracy"]).round(1)
    w = d.pivot_table(index=["entropy_model", "defense"], columns="input", values=["overhead %", "accuracy %"],
                      sort=False)
    w.columns = [f"{inp}: {m}" for m, inp in w.columns]
    return w.reset_index()


def lambda_tv_sweep(cfg: DefenseConfig, models: dict, x, y, attacked: dict) -> pd.DataFrame:
    """Rate/accuracy trade-off of the disentangled defense over ``cfg.lambda_tv_grid`` on clean and attacked
    inputs (``attacked[em]`` = entropy-attacked ``x``). Columns: ``entropy_model, lambda_tv, input, bytes,
    overhead, accuracy``."""
    rows = []
    for em, model in models.items():
        clean_bytes = _metrics(model, x, y)["bytes"]
        for lt in cfg.lambda_tv_grid:
            d = make_defense("disentangled_tv", bit_map_fn(model), cfg.settings, lambda_tv=lt)
            for kind, xin in (("clean", x), ("attacked", attacked[em])):
                m = _metrics(model, apply(d, xin), y)
                rows.append({"entropy_model": em, "lambda_tv": lt, "input": kind, **m,
                             "overhead": m["bytes"] / clean_bytes - 1})
    return pd.DataFrame(rows)


def mask_comparison(models: dict, x: torch.Tensor, settings: DefenseSettings = DefenseSettings()) -> pd.DataFrame:
    """Likelihood mask vs Grad-CAM per image and entropy model (rank correlation, top-half IoU)."""
    out = []
    for em, model in models.items():
        lm = likelihood_mask(bit_map_fn(model), x, settings.cutoff, settings.mask_source)
        out.append(mask_agreement(lm, grad_cam(model, x)).assign(entropy_model=em))
    return pd.concat(out, ignore_index=True)


def parts_stack(model, x: torch.Tensor, settings: DefenseSettings = DefenseSettings()):
    """Images for ``plots.image_grid``: per input image, input | low | high (x4 around grey) | mask |
    Grad-CAM | defended. Returns ``(images (6N, 3, H, W), titles)``."""
    d = make_defense("disentangled_tv", bit_map_fn(model), settings)
    with torch.no_grad():
        p = d.forward_parts(x)
    cam = grad_cam(model, x)
    rows, titles = [], []
    for i in range(len(x)):
        rows += [x[i], p["low"][i].clamp(0, 1), (0.5 + 4 * p["high"][i]).clamp(0, 1), p["mask"][i].expand(3, -1, -1),
                 cam[i].expand(3, -1, -1), p["output"][i]]
        titles += ["input", "low frequencies", "high residual x4", "likelihood mask", "Grad-CAM", "defended"]
    return torch.stack(rows), titles


#: the paper's headline (mean-scale hyperprior on ImageNet, epsilon 2/255): KB per image
PAPER = {"clean_kb": 9.62, "attacked_kb": 12.35, "defended_kb": 8.76, "accuracy_cost_points": 2.0}


def paper_comparison(df: pd.DataFrame, eps_255: float, entropy_model: str = "hyperprior") -> pd.DataFrame:
    """The paper's headline next to ours (overheads vs undefended clean data; accuracy in %)."""
    d = df[(df["entropy_model"] == entropy_model)]

    def get(defense, inp, col, eps=eps_255):
        r = d[(d["defense"] == defense) & (d["input"] == inp) & ((d["eps_255"] == eps) | (inp == "clean"))]
        return float(r[col].iloc[0]) if len(r) else float("nan")

    clean_acc = get("none", "clean", "accuracy")
    p = PAPER
    rows = [
        {"quantity": "attacked, no defense: rate vs clean", "paper": f"{p['attacked_kb'] / p['clean_kb'] - 1:+.1%}",
         "ours": f"{get('none', 'attacked', 'overhead'):+.1%}"},
        {"quantity": "attacked, disentangled TV: rate vs clean", "paper": f"{p['defended_kb'] / p['clean_kb'] - 1:+.1%}",
         "ours": f"{get('disentangled_tv', 'attacked', 'overhead'):+.1%}"},
        {"quantity": "adaptive attack, disentangled TV: rate vs clean", "paper": "not reported",
         "ours": f"{max(get('disentangled_tv', 'adaptive', 'overhead'), get('disentangled_tv', 'adaptive (BPDA)', 'overhead')):+.1%}"},
        {"quantity": "clean accuracy cost of the defense (points)", "paper": f"about -{p['accuracy_cost_points']:g}",
         "ours": f"{100 * (get('disentangled_tv', 'clean', 'accuracy') - clean_acc):+.1f}"},
        {"quantity": "attacked accuracy, disentangled TV vs clean undefended (points)", "paper": f"about -{p['accuracy_cost_points']:g}",
         "ours": f"{100 * (get('disentangled_tv', 'attacked', 'accuracy') - clean_acc):+.1f}"},
    ]
    return pd.DataFrame(rows).assign(entropy_model=entropy_model, eps_255=eps_255)


def verdict(df: pd.DataFrame) -> list[str]:
    """Plain sentences computed from the measured table (nothing hard-coded): per entropy model and epsilon,
    the overhead the attack reaches with and without the disentangled defense, against an adaptive attacker,
    and which defense leaves the smallest adaptive overhead."""
    out = []
    for (em, eps), g in df[df["eps_255"] > 0].groupby(["entropy_model", "eps_255"], sort=False):
        def ov(defense, inp):
            r = g[(g["defense"] == defense) & (g["input"] == inp)]["overhead"]
            return float(r.max()) if len(r) else float("nan")

        adapt = g[g["input"].str.startswith("adaptive")].groupby("defense")["overhead"].max()
        best = adapt.idxmin()
        dis_adapt = max(ov("disentangled_tv", "adaptive"), ov("disentangled_tv", "adaptive (BPDA)"))
        out.append(
            f"{em}, eps {eps:g}/255: the entropy attack adds {ov('none', 'attacked'):+.1%} bytes; with the disentangled "
            f"TV defense the attacked input costs {ov('disentangled_tv', 'attacked'):+.1%} vs clean, and "
            f"{dis_adapt:+.1%} against the adaptive attacker (worst of unrolled and BPDA). "
            f"Smallest worst-case adaptive overhead: {best} ({adapt[best]:+.1%}).")
    return out


def explore(models: dict, x: torch.Tensor, y: torch.Tensor, attacked: dict, cfg: DefenseConfig, n_images: int = 4):
    """Live explorer: entropy model, input (clean / attacked) and lambda_TV; shows the defended images with
    their real bytes and predictions."""
    from robustnb import plots, rate, widgets
    from robustnb.train import predict

    def show(entropy_model, inp, lambda_tv):
        m = models[entropy_model]
        xin = (x if inp == "clean" else attacked[entropy_model])[:n_images]
        d = make_defense("disentangled_tv", bit_map_fn(m), cfg.settings, lambda_tv=lambda_tv)
        xd = apply(d, xin)
        b0, b1 = rate.real_bytes(m, x[:n_images]), rate.real_bytes(m, xd)
        pred = predict(m, xd).argmax(1)
        titles = [f"{int(a)} B{'' if p == t else ' (wrong)'}" for a, p, t in zip(b1.tolist(), pred.tolist(), y[:n_images].tolist())]
        return plots.image_grid(torch.cat([xin, xd]), titles=[f"input ({int(a)} B clean)" for a in b0.tolist()] + titles,
                                cols=n_images, title=f"{entropy_model}, {inp}, lambda_TV={lambda_tv:g}: "
                                f"{float(b1.mean() / b0.mean() - 1):+.1%} bytes vs clean")

    return widgets.explorer(show, entropy_model=widgets.choice(list(models), "entropy model"),
                            inp=widgets.choice(["clean", "attacked"], "input"),
                            lambda_tv=widgets.lambda_slider(cfg.lambda_tv_grid, "lambda_TV",
                                                            value=cfg.settings.lambda_tv if cfg.settings.lambda_tv in cfg.lambda_tv_grid else None))
