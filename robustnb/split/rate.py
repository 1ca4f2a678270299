"""The bitrate of an entropy-coded split model, two ways.

* **Estimated**: the entropy model assigns each quantised latent symbol a probability ``p``; an ideal
  entropy coder spends ``-log2 p`` bits on it. :func:`bits` is the one place that turns likelihoods into
  bits (every rate term, attack objective and bit count in the package calls it); :func:`estimated_bits` sums that per image (latent ``y`` and,
  for the hyperprior, the side information ``z``). With ``training_noise=True`` it uses the training-time
  relaxation (uniform noise instead of rounding), which is differentiable: the entropy attack ascends it.
* **Real**: :func:`real_bytes` runs CompressAI's rANS coder (``model.compress``) and counts the bytes on the
  wire per image. It exceeds the estimate by a small constant per stream (the coder flushes its 32-bit
  state, pads to whole 32-bit words, and codes out-of-range symbols with an escape) plus a small relative
  cost of the 16-bit quantised CDF tables.

:func:`rate_bpp` is the training rate term (bits per input pixel). :func:`bit_map` gives the bits per latent location (summed over channels), the picture of *where* an
image spends its bits; :func:`rate_agreement` is the experiment comparing the two ways per model.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from robustnb.checks import check_images

BATCH = 256


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def bits(likelihoods: dict) -> torch.Tensor:
    """Bits per image ``(N,)`` from a model output's ``likelihoods`` dict: ``sum -log2 p`` over every symbol of
    every stream (``y`` and, for the hyperprior, ``z``). Differentiable."""
    return sum((-torch.log2(lik)).flatten(1).sum(1) for lik in likelihoods.values())


def rate_bpp(model: nn.Module, x, y, out) -> torch.Tensor:
    """The training rate term (a ``fit`` extra term): mean over the batch of bits per input pixel."""
    return bits(out["likelihoods"]).mean() / (x.shape[-2] * x.shape[-1])


def estimated_bits(model: nn.Module, x: torch.Tensor, training_noise: bool = False,
                   batch_size: int = BATCH) -> torch.Tensor:
    """Estimated bits per image ``(N,)``: sum of ``-log2`` likelihoods of every latent symbol (y and z).

    Differentiable when ``x`` requires grad (then computed in one batch, on x's device); otherwise computed
    without gradients in batches and returned on the CPU. ``training_noise`` selects the entropy model's
    training-mode relaxation (uniform noise) instead of rounding.
    """
    check_images(x)
    if x.requires_grad and torch.is_grad_enabled():
        return bits(model(x, noise=training_noise)["likelihoods"])
    dev = _device(model)
    with torch.no_grad():
        return torch.cat([bits(model(x[i:i + batch_size].to(dev), noise=training_noise)["likelihoods"]).cpu()
                          for i in range(0, len(x), batch_size)]) if len(x) else torch.zeros(0)


def stream_bytes(model: nn.Module, x: torch.Tensor, batch_size: int = BATCH) -> torch.Tensor:
    """Real bytes per image and per stream ``(N, S)`` (S = 1 for factorized, 2 = [y, z] for the hyperprior)."""
    check_images(x)
    dev = _device(model)
    rows = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            strings = model.compress(x[i:i + batch_size].to(dev))["strings"]
            rows.append(torch.tensor([[len(s) for s in per_image] for per_image in zip(*strings)],
                                     dtype=torch.float32))
    return torch.cat(rows) if rows else torch.zeros(0, 1)


def real_bytes(model: nn.Module, x: torch.Tensor, batch_size: int = BATCH) -> torch.Tensor:
    """Bytes on the wire per image ``(N,)``: the lengths of CompressAI's rANS strings (all streams)."""
    return stream_bytes(model, x, batch_size).sum(1)


def bit_map(model: nn.Module, x: torch.Tensor, batch_size: int = BATCH) -> torch.Tensor:
    """Bits per latent location ``(N, h, w)`` (the latent ``y``, summed over channels; side info excluded)."""
    check_images(x)
    dev = _device(model)
    with torch.no_grad():
        if len(x) == 0:  # an empty batch: an empty map of the latent's size
            return torch.zeros((0,) + tuple(model.encode(torch.zeros((1,) + tuple(x.shape[1:]), device=dev)).shape[-2:]))
        maps = [(-torch.log2(model(x[i:i + batch_size].to(dev), noise=False)["likelihoods"]["y"])).sum(1).cpu()
                for i in range(0, len(x), batch_size)]
    return torch.cat(maps)


def bpp(bits: torch.Tensor, image_shape) -> torch.Tensor:
    """Bits per input pixel: ``bits / (H * W)`` for images of shape ``(C, H, W)`` or ``(H, W)``."""
    h, w = tuple(image_shape)[-2:]
    return bits / (h * w)


@torch.no_grad()
def decode_agreement(model: nn.Module, x: torch.Tensor, batch_size: int = BATCH) -> dict:
    """Compress, decompress and compare with the forward pass: max |logit difference| and top-1 agreement.
    ``x``: images ``(N, C, H, W)`` in [0, 1] (checked)."""
    check_images(x)
    dev = _device(model)
    diffs, agree = [], []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(dev)
        ref = model(xb, noise=False)["logits"]
        c = model.compress(xb)
        dec = model.decompress(c["strings"], c["shape"])
        diffs.append((dec - ref).abs().amax().item())
        agree.append((dec.argmax(1) == ref.argmax(1)).float().cpu())
    return {"max_abs_logit_diff": max(diffs) if diffs else 0.0,
            "top1_agreement": float(torch.cat(agree).mean()) if agree else 1.0}


def rate_agreement(models: dict, x: torch.Tensor, tolerance: float = 0.05) -> pd.DataFrame:
    """Estimated vs real rate per model: one row per ``(arch, entropy_model, lambda)``.

    ``models`` maps a key tuple ``(arch, entropy_model, lambda)`` to a trained split model. Columns: mean
    estimated and real bytes per image, their ratio, the measured per-stream constant (mean real minus
    estimated bytes, divided by the number of streams), the relative gap once that constant is removed,
    whether it is within ``tolerance``, and the decompress-vs-forward agreement.
    """
    rows = []
    for (arch, em, lam), model in models.items():
        est = estimated_bits(model, x) / 8
        streams = stream_bytes(model, x)
        real = streams.sum(1)
        n_streams = streams.shape[1]
        const = float((real - est).mean()) / n_streams
        rel_gap = float(real.mean() - est.mean()) / float(est.mean())
        # the acceptance check: real within 5 % of the estimate plus a per-stream constant of at most 8 bytes
        within = abs(float(real.mean()) - float(est.mean())) <= tolerance * float(est.mean()) + 8 * n_streams
        rows.append({"arch": arch, "entropy_model": em, "lambda": lam, "streams": n_streams,
                     "est_bytes": float(est.mean()), "real_bytes": float(real.mean()),
                     "real_over_est": float(real.mean() / est.mean()), "per_stream_const_bytes": const,
                     "rel_gap": rel_gap, "within_5pct_plus_const": bool(within), **decode_agreement(model, x)})
    return pd.DataFrame(rows)
