"""Source and target domains for the domain-shift experiments: Office-31, or an offline stand-in.

**Office-31** (Saenko et al., 2010) has three domains of the same 31 office objects: ``amazon`` (product
photos on white background), ``webcam`` (low-resolution, noisy webcam shots) and ``dslr`` (high-resolution
DSLR photos, often out of focus or differently exposed). A model is trained on one domain (the *source*)
and evaluated on the others (the *targets*). :func:`load_domains` uses it whenever
:func:`robustnb.data.find_office31` finds it.

Office-31 cannot be downloaded on the machines that build and test this book. Then (and only then)
:func:`load_domains` builds an **offline stand-in, which is not Office-31**: CIFAR-10 is the source, and
two *camera-like* target domains are made from the CIFAR-10 test images with
:mod:`robustnb.corruptions`, imitating what distinguishes Office-31's cameras:

* ``webcam_like``: a low-resolution sensor, sensor noise, a white-balance colour cast and JPEG
  compression (:data:`DOMAIN_RECIPES` lists the corruptions and severities);
* ``dslr_like``: a lens out of focus (defocus blur) and an exposure change (over-exposure).

Every target image is the corrupted version of the matching source test image (paired), so accuracy
differences between domains come from the shift alone. Shifts are deterministic for a seed: each step
of a recipe gets its own seed derived from the domain name, the step and ``seed``, and the result is
rounded to 8-bit like a stored photo.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import pandas as pd
import torch

from robustnb import data as rdata
from robustnb.config import ConfigError
from robustnb.corruptions import corrupt

#: Corruption recipes of the stand-in target domains: ``(corruption name, severity)`` applied in order.
DOMAIN_RECIPES: dict[str, tuple[tuple[str, int], ...]] = {
    "webcam_like": (("low_resolution", 2), ("gaussian_noise", 2), ("color_cast", 3), ("jpeg", 4)),
    "dslr_like": (("defocus_blur", 3), ("brightness", 4)),
}
STAND_IN_DOMAINS = tuple(DOMAIN_RECIPES)
OFFICE31_SOURCE = "amazon"

STAND_IN_NOTICE = (
    "Office-31 was not found, so this run uses the OFFLINE STAND-IN, not Office-31: CIFAR-10 is the source "
    "domain and the targets are camera-like shifts of the CIFAR-10 test images "
    "(webcam_like: low resolution + sensor noise + colour cast + JPEG; dslr_like: defocus + exposure change). "
    "Numbers are not comparable with the paper's Office-31 numbers."
)


def _step_seed(domain: str, step: int, seed: int) -> int:
    return (zlib.crc32(f"{domain}/{step}".encode()) + 7919 * int(seed)) % (2**31 - 1)


def shift(x: torch.Tensor, domain: str, seed: int = 0) -> torch.Tensor:
    """Apply the stand-in ``domain``'s recipe to ``x`` (N, C, H, W) in [0, 1]; deterministic for ``seed``.

    The result is rounded to 8-bit levels (as a stored camera image would be).
    """

    if domain not in DOMAIN_RECIPES:
        raise ConfigError(f"Unknown shifted domain {domain!r}: choose one of {', '.join(map(repr, DOMAIN_RECIPES))}.")
    out = x
    for i, (name, severity) in enumerate(DOMAIN_RECIPES[domain]):
        out = corrupt(out, name, severity, seed=_step_seed(domain, i, seed))
    return (out * 255).round() / 255


def shifted_dataset(ds: rdata.ImageDataset, domain: str, seed: int = 0, batch_size: int = 512) -> rdata.ImageDataset:
    """A copy of ``ds`` with every image shifted to ``domain`` (uint8 storage, same labels and order).

    Batches are shifted with seeds derived from ``seed`` and the batch index, so the result depends only
    on ``ds``, ``domain``, ``seed`` and ``batch_size``.
    """
    chunks = []
    for b, i in enumerate(range(0, len(ds), batch_size)):
        xb = ds.images[i:i + batch_size].float().div(255)
        chunks.append((shift(xb, domain, seed * 100_003 + b) * 255).round().to(torch.uint8))
    images = torch.cat(chunks) if chunks else ds.images.clone()
    return rdata.ImageDataset(f"{ds.name}/{domain}", images, ds.labels.clone(), ds.classes, ds.mean, ds.std,
                              f"{domain} stand-in shift of {ds.name}", {"domain": domain, "shift_seed": seed})


@dataclass
class Domains:
    """The training set of the source domain and the evaluation sets of every domain (source first)."""

    train: rdata.ImageDataset
    eval: dict[str, rdata.ImageDataset]
    source: str
    stand_in: bool
    notice: str
    meta: dict = field(default_factory=dict)

    @property
    def targets(self) -> list[str]:
        return [d for d in self.eval if d != self.source]

    def summary(self):
        """A small frame: domain, role, images, classes, where the images come from."""
        rows = [{"domain": self.source, "role": "source (train)", "images": len(self.train),
                 "classes": self.train.num_classes, "from": self.train.source}]
        rows += [{"domain": d, "role": "source (test)" if d == self.source else "target", "images": len(ds),
                  "classes": ds.num_classes, "from": ds.source} for d, ds in self.eval.items()]
        return pd.DataFrame(rows)


def _split_stratified(ds: rdata.ImageDataset, test_fraction: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    test_idx = []
    for c in ds.labels.unique():
        idx = (ds.labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        test_idx.append(idx[:max(1, round(len(idx) * test_fraction))] if len(idx) > 1 else idx[:0])
    test = torch.cat(test_idx).sort().values
    mask = torch.ones(len(ds), dtype=torch.bool)
    mask[test] = False
    return ds.select(mask.nonzero().flatten()), ds.select(test)


def load_office31_domains(image_size: int = 224, n_train: int | None = None, n_eval: int | None = None,
                          seed: int = 0, root=None, source: str = OFFICE31_SOURCE,
                          test_fraction: float = 0.2) -> Domains:
    """Office-31: ``source`` split into train / held-out test (stratified), the other two domains as targets."""
    if source not in rdata.OFFICE31_DOMAINS:
        raise ConfigError(f"Unknown Office-31 domain {source!r}: choose one of {rdata.OFFICE31_DOMAINS}.")
    full = rdata.load_office31(source, image_size, root)
    train, test = _split_stratified(full, test_fraction, seed)
    evals = {source: test.subset(n_eval, seed)}
    for d in rdata.OFFICE31_DOMAINS:
        if d != source:
            evals[d] = rdata.load_office31(d, image_size, root).subset(n_eval, seed)
    return Domains(train.subset(n_train, seed), evals, source, False,
                   f"Office-31 found at {rdata.find_office31(root)}: source {source!r}, targets "
                   f"{[d for d in evals if d != source]}.")


def load_cifar10_stand_in(n_train: int | None = None, n_eval: int | None = None, seed: int = 0) -> Domains:
    """The offline stand-in: CIFAR-10 train subset as source, its test subset clean and shifted."""
    train = rdata.load_cifar10("train").subset(n_train, seed)
    test = rdata.load_cifar10("test").subset(n_eval, seed)
    evals = {"cifar10": test}
    for d in DOMAIN_RECIPES:
        evals[d] = shifted_dataset(test, d, seed)
    return Domains(train, evals, "cifar10", True, STAND_IN_NOTICE, {"recipes": DOMAIN_RECIPES})


def load_domains(image_size: int = 224, n_train: int | None = None, n_eval: int | None = None, seed: int = 0,
                 root=None) -> Domains:
    """Office-31 when it is on disk, else the CIFAR-10 camera-shift stand-in (``Domains.stand_in`` says which)."""
    if rdata.find_office31(root) is not None:
        return load_office31_domains(image_size, n_train, n_eval, seed, root)
    return load_cifar10_stand_in(n_train, n_eval, seed)


def recipes_frame():
    """The stand-in recipes as a tidy frame: domain, step, corruption, severity."""
    return pd.DataFrame([{"domain": d, "step": i + 1, "corruption": n, "severity": s}
                         for d, steps in DOMAIN_RECIPES.items() for i, (n, s) in enumerate(steps)])
