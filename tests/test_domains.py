"""Domains: deterministic camera-like shifts, the Office-31 path and the stand-in fallback."""

import numpy as np
import pytest
import torch

from robustnb import data as rdata
from robustnb import domains as D
from robustnb.config import ConfigError


def _x(n=4, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("domain", D.STAND_IN_DOMAINS)
def test_shift_is_deterministic_for_a_seed(domain):
    x = _x()
    a, b = D.shift(x, domain, seed=5), D.shift(x, domain, seed=5)
    assert torch.equal(a, b)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.allclose(a * 255, (a * 255).round(), atol=1e-4)  # 8-bit levels, like a stored photo
    assert (a - x).abs().mean() > 0.01  # it really shifts the images


def test_webcam_shift_depends_on_the_seed():
    x = _x()
    assert not torch.equal(D.shift(x, "webcam_like", seed=0), D.shift(x, "webcam_like", seed=1))


def test_unknown_domain_is_refused():
    with pytest.raises(ConfigError, match="webcam_like"):
        D.shift(_x(), "webcam")


def _tiny_dataset(n=20, size=16):
    g = torch.Generator().manual_seed(0)
    imgs = (torch.rand(n, 3, size, size, generator=g) * 255).to(torch.uint8)
    return rdata.ImageDataset("cifar10", imgs, torch.arange(n) % 10, list(rdata.CIFAR10_CLASSES),
                              rdata.CIFAR10_MEAN, rdata.CIFAR10_STD, "generated")


def test_shifted_dataset_is_paired_and_deterministic():
    ds = _tiny_dataset()
    a, b = D.shifted_dataset(ds, "dslr_like", seed=2, batch_size=8), D.shifted_dataset(ds, "dslr_like", seed=2, batch_size=8)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, ds.labels)
    assert a.images.dtype == torch.uint8 and a.name == "cifar10/dslr_like"


def test_stand_in_is_used_and_announced_without_office31(tmp_env, monkeypatch):
    monkeypatch.setattr(rdata, "load_cifar10", lambda split="train", **kw: _tiny_dataset())
    doms = D.load_domains(n_train=10, n_eval=10)
    assert doms.stand_in and "STAND-IN" in doms.notice and "not Office-31" in doms.notice
    assert list(doms.eval) == ["cifar10", "webcam_like", "dslr_like"] and doms.targets == ["webcam_like", "dslr_like"]
    assert torch.equal(doms.eval["webcam_like"].labels, doms.eval["cifar10"].labels)


def _office_tree(root, classes=("back_pack", "mug", "trash_can"), per_class=5):
    from PIL import Image

    rng = np.random.default_rng(0)
    for d in rdata.OFFICE31_DOMAINS:
        for c in classes:
            folder = root / d / "images" / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"frame_{i:04d}.jpg")


def test_office31_is_used_when_present_with_the_standard_class_order(tmp_env):
    data_dir, _ = tmp_env
    _office_tree(data_dir / "office31")
    doms = D.load_domains(image_size=16)
    assert not doms.stand_in and doms.source == "amazon" and sorted(doms.targets) == ["dslr", "webcam"]
    assert doms.train.classes == rdata.OFFICE31_CLASSES and len(doms.train.classes) == 31
    idx = {rdata.OFFICE31_CLASSES.index(c) for c in ("back_pack", "mug", "trash_can")}
    assert set(doms.eval["webcam"].labels.tolist()) == idx == {0, 17, 30}
    assert doms.eval["dslr"].image_shape == (3, 16, 16)
    # the source domain is split into disjoint train and test parts (stratified: one test image per class)
    assert len(doms.train) + len(doms.eval["amazon"]) == 15 and len(doms.eval["amazon"]) == 3
