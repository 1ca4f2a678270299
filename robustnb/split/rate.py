"""The bitrate of an entropy-coded split model, two ways.

* **Estimated**: the entropy model assigns each quantised latent symbol a probability ``p``; an ideal
  entropy coder spends ``-log2 p`` bits on it. :func:`bits` (per image) and :func:`location_bits` (per
  latent location) are the one place that turns likelihoods into bits: every rate term, attack objective, bit map
  and bit count in the package calls them; :func:`estimated_bits` sums that per image (latent ``y`` and, for the
  hyperprior, the side information ``z``). With ``training_noise=True`` it uses the training-time
  relaxation (uniform noise instead of rounding), which is differentiable: the entropy attack ascends it.
* **Real**: :func:`real_bytes` runs CompressAI's rANS coder (``model.compress``) and counts the bytes on the
  wire per image. It exceeds the estimate by a small constant per stream (the coder flushes its 32-bit
  state, pads to whole 32-bit words, and codes out-of-range symbols with an escape) plus a small relative
  cost of the 16-bit quantised CDF tables. :meth:`robustnb.split.SplitModel.compress` writes the very bytes of
  CompressAI's own ``compress`` but hands the coder only the CDF rows each image uses, so real bytes cost about
  what the estimate does (:func:`coding_speed` measures both; ``python -m robustnb.bench --coding``).
  :func:`coded` codes images once and keeps the strings, so that several measurements (bytes per stream,
  :func:`decode_agreement`) share one coding.

:func:`rate_bpp` is the training rate term (bits per input pixel). :func:`bit_map` gives the bits per latent location (summed over channels), the picture of *where* an
image spends its bits; :func:`rate_agreement` is the experiment comparing the two ways per model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from robustnb.checks import check_images, check_labels

BATCH = 256


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def bits(likelihoods: dict) -> torch.Tensor:
    """Bits per image ``(N,)`` from a model output's ``likelihoods`` dict: ``sum -log2 p`` over every symbol of
    every stream (``y`` and, for the hyperprior, ``z``). Differentiable."""
    return sum((-torch.log2(lik)).flatten(1).sum(1) for lik in likelihoods.values())


def location_bits(likelihood: torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """Bits per latent location ``(N, h, w)`` of one stream's likelihoods ``(N, C, h, w)``: ``-log2 p`` summed over
    the channels (the map :func:`bits` sums). ``floor`` > 0 clamps ``p`` from below first, so that a
    differentiable map stays finite. Differentiable."""
    return (-torch.log2(likelihood.clamp_min(floor) if floor else likelihood)).sum(1)


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


@dataclass(frozen=True)
class Coded:
    """What the rANS coder puts on the wire for a set of images (:func:`coded`).

    ``strings``: one list per stream (``[y]`` factorized, ``[y, z]`` hyperprior) of one ``bytes`` per image;
    ``shape``: what ``model.decompress`` takes with them (the latent's or side information's ``(h, w)``, the
    same for every batch: the images share one size).
    """

    strings: tuple
    shape: tuple

    def __len__(self) -> int:
        return len(self.strings[0]) if self.strings else 0

    @property
    def stream_bytes(self) -> torch.Tensor:
        """Bytes per image and per stream ``(N, S)`` (float32)."""
        if len(self) == 0:
            return torch.zeros(0, max(len(self.strings), 1))
        return torch.tensor([[len(s) for s in per_image] for per_image in zip(*self.strings)], dtype=torch.float32)

    @property
    def real_bytes(self) -> torch.Tensor:
        """Bytes on the wire per image ``(N,)``, all streams."""
        return self.stream_bytes.sum(1)

    def batch(self, start: int, stop: int) -> list:
        """The strings of images ``start:stop``, per stream (what ``model.decompress`` takes)."""
        return [s[start:stop] for s in self.strings]


def coded(model: nn.Module, x: torch.Tensor, batch_size: int = BATCH) -> Coded:
    """Code every image of ``x`` ``(N, C, H, W)`` in [0, 1] (checked) once with ``model.compress`` (CompressAI's
    rANS coder: :meth:`robustnb.split.SplitModel.compress`), in batches: the strings and the bytes per image.
    Measure several things from one coding (:func:`decode_agreement` takes the result)."""
    check_images(x)
    dev = _device(model)
    strings, shape = None, ()
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            c = model.compress(x[i:i + batch_size].to(dev))
            strings = [[] for _ in c["strings"]] if strings is None else strings
            for acc, s in zip(strings, c["strings"]):
                acc.extend(s)
            shape = tuple(c["shape"])
    return Coded(tuple(strings) if strings is not None else ([],), shape)


def stream_bytes(model: nn.Module, x: torch.Tensor, batch_size: int = BATCH) -> torch.Tensor:
    """Real bytes per image and per stream ``(N, S)`` (S = 1 for factorized, 2 = [y, z] for the hyperprior)."""
    return coded(model, x, batch_size).stream_bytes


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
        maps = [location_bits(model(x[i:i + batch_size].to(dev), noise=False)["likelihoods"]["y"]).cpu()
                for i in range(0, len(x), batch_size)]
    return torch.cat(maps)


def bpp(bits: torch.Tensor, image_shape) -> torch.Tensor:
    """Bits per input pixel: ``bits / (H * W)`` for images of shape ``(C, H, W)`` or ``(H, W)``."""
    h, w = tuple(image_shape)[-2:]
    return bits / (h * w)


def decode_agreement(model: nn.Module, x: torch.Tensor, batch_size: int = BATCH) -> dict:
    """Compress, decompress and compare with the forward pass: max |logit difference| and top-1 agreement, over
    :func:`measure`'s rows (each image coded and decoded once). ``x``: images ``(N, C, H, W)`` in [0, 1]
    (checked)."""
    frame = measure(model, x, batch_size=batch_size, decode=True)
    return {"max_abs_logit_diff": float(frame["logit_diff"].max()) if len(frame) else 0.0,
            "top1_agreement": float(frame["decoded_agrees"].mean()) if len(frame) else 1.0}


@torch.no_grad()
def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = BATCH,
            decode: bool = True) -> pd.DataFrame:
    """Everything the chapters read per image, from one pass: per batch one encoder pass shared by the forward
    pass and ``compress`` (``SplitModel.compress_latent``) and, with ``decode``, one ``decompress``. One row per image of ``x`` ``(N, C, H, W)`` in [0, 1]
    (checked): ``image`` (its index), ``real_bytes`` (all streams), ``streams``, ``est_bytes``, ``decoded_agrees``
    (the decoded bitstream's top-1 equals the forward pass's), ``logit_diff`` (max |decoded - forward| logit; these
    two only with ``decode``) and, with labels ``y``, ``correct`` (0/1, the forward pass's prediction, which is what the bitstream decodes to)."""
    check_images(x)
    if y is not None:
        check_labels(y, x)
    dev = _device(model)
    est, strings, shape, diffs, agree, preds = [], None, (), [], [], []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(dev)
        if hasattr(model, "compress_latent"):  # one encoder pass for the forward pass and the bitstream
            latent = model.encode(xb)
            y_hat, likelihoods = model.entropy(latent, noise=False)
            out = {"logits": model.classify(y_hat), "likelihoods": likelihoods}
            c = model.compress_latent(latent)
        else:
            out, c = model(xb, noise=False), model.compress(xb)
        est.append(bits(out["likelihoods"]).cpu())
        strings = [[] for _ in c["strings"]] if strings is None else strings
        for acc, st in zip(strings, c["strings"]):
            acc.extend(st)
        shape, ref = tuple(c["shape"]), out["logits"]
        if decode:
            dec = model.decompress(c["strings"], shape)
            diffs.append((dec - ref).abs().flatten(1).amax(1).cpu())
            agree.append((dec.argmax(1) == ref.argmax(1)).float().cpu())
        preds.append(ref.argmax(1).cpu())
    columns = ["image", "real_bytes", "streams", "est_bytes"] + (["decoded_agrees", "logit_diff"] if decode else []) + (
        ["correct"] if y is not None else [])
    if not len(x):
        return pd.DataFrame(columns=columns)
    streams = Coded(tuple(strings), shape).stream_bytes
    frame = pd.DataFrame({"image": np.arange(len(x)), "real_bytes": streams.sum(1).numpy(),
                          "streams": streams.shape[1], "est_bytes": torch.cat(est).numpy() / 8})
    if decode:
        frame["decoded_agrees"], frame["logit_diff"] = torch.cat(agree).numpy(), torch.cat(diffs).numpy()
    if y is not None:
        frame["correct"] = (torch.cat(preds) == y.cpu()).float().numpy()
    return frame


#: the columns naming a model in :func:`agreement_table`'s input and output
MODEL_COLUMNS = ("arch", "entropy_model", "lambda")


def agreement_table(images: pd.DataFrame, tolerance: float = 0.05) -> pd.DataFrame:
    """Estimated vs real rate per model from per-image rows (:func:`measure`'s columns and
    :data:`MODEL_COLUMNS`): one row per model. Columns: mean estimated and real bytes per image, their ratio,
    the measured per-stream constant (mean real minus estimated bytes, divided by the number of streams), the
    relative gap, whether real is within ``tolerance`` of the estimate plus at most 8 bytes per stream, and the
    decompress-vs-forward agreement (max |logit difference|, top-1 agreement)."""
    rows = []
    for (arch, em, lam), g in images.groupby(list(MODEL_COLUMNS), sort=False):
        est, real, n_streams = g["est_bytes"], g["real_bytes"], int(g["streams"].iloc[0])
        const = float((real - est).mean()) / n_streams
        rel_gap = float(real.mean() - est.mean()) / float(est.mean())
        # the acceptance check: real within 5 % of the estimate plus a per-stream constant of at most 8 bytes
        within = abs(float(real.mean()) - float(est.mean())) <= tolerance * float(est.mean()) + 8 * n_streams
        rows.append({"arch": arch, "entropy_model": em, "lambda": lam, "streams": n_streams,
                     "est_bytes": float(est.mean()), "real_bytes": float(real.mean()),
                     "real_over_est": float(real.mean() / est.mean()), "per_stream_const_bytes": const,
                     "rel_gap": rel_gap, "within_5pct_plus_const": bool(within),
                     "max_abs_logit_diff": float(g["logit_diff"].max()),
                     "top1_agreement": float(g["decoded_agrees"].mean())})
    return pd.DataFrame(rows)


def rate_agreement(models: dict, x: torch.Tensor, tolerance: float = 0.05) -> pd.DataFrame:
    """Estimated vs real rate per model (:func:`agreement_table`): ``models`` maps a key tuple
    ``(arch, entropy_model, lambda)`` to a trained split model; each image is coded and decoded once per model
    (:func:`measure`)."""
    frames = [measure(model, x).assign(arch=arch, entropy_model=em, **{"lambda": lam})
              for (arch, em, lam), model in models.items()]
    return agreement_table(pd.concat(frames, ignore_index=True), tolerance) if frames else pd.DataFrame()


def _best_ms_per_image(fn, n: int, repeats: int) -> float:
    """The fastest of ``repeats`` runs of ``fn()``, in milliseconds per image of ``n``."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best / max(n, 1)


@torch.no_grad()
def coding_speed(model: nn.Module, x: torch.Tensor, batch_size: int = BATCH, repeats: int = 3,
                 reference: bool = True) -> dict:
    """What real bytes cost next to the estimate, on images ``x`` ``(N, C, H, W)`` in [0, 1] (checked).

    Milliseconds per image, the best of ``repeats`` timed runs after a warm-up, on the threads torch has:
    ``estimate_ms`` (:func:`estimated_bits`: the forward pass), ``real_ms`` (:func:`coded`: encoder, side
    information and rANS coding), ``decode_ms`` (``model.decompress`` of those strings, classifier included);
    with ``reference``, where the model has :meth:`robustnb.split.SplitModel.compress_reference`, also
    ``compressai_ms`` (the same coding through CompressAI's own ``compress``: one whole-table conversion per
    image) and ``identical`` (whether its strings equal :func:`coded`'s byte for byte). And
    ``real_over_estimate``, ``images``, ``threads``."""
    check_images(x)
    n, dev = len(x), _device(model)
    estimated_bits(model, x[:2], batch_size=batch_size)  # warm-up (and the memoised CDF tables)
    coded(model, x[:2], batch_size)
    out = {"images": n, "threads": torch.get_num_threads()}
    out["estimate_ms"] = _best_ms_per_image(lambda: estimated_bits(model, x, batch_size=batch_size), n, repeats)
    out["real_ms"] = _best_ms_per_image(lambda: coded(model, x, batch_size), n, repeats)
    c = coded(model, x, batch_size)
    out["real_over_estimate"] = out["real_ms"] / out["estimate_ms"]
    out["decode_ms"] = _best_ms_per_image(
        lambda: [model.decompress(c.batch(i, i + batch_size), c.shape) for i in range(0, n, batch_size)], n, repeats)
    if reference and hasattr(model, "compress_reference"):
        def compressai():
            return [model.compress_reference(x[i:i + batch_size].to(dev)) for i in range(0, n, batch_size)]
        out["compressai_ms"] = _best_ms_per_image(compressai, n, repeats)
        ref = compressai()
        out["identical"] = all(list(s) == c.batch(i * batch_size, (i + 1) * batch_size)[k]
                               for i, r in enumerate(ref) for k, s in enumerate(r["strings"]))
    return out
