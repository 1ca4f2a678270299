import os
from pathlib import Path

import pytest

import robustnb  # noqa: F401  (first: sets OpenMP's passive wait policy before any test module loads torch)

ROOT = Path(__file__).resolve().parent.parent


def toy_split_models_and_data(n: int = 6):
    """Two untrained vgg split models (factorized, hyperprior; lambda 0.01 in the key) with their coders' tables,
    and ``n`` random 32 x 32 images of ten classes: the chapters' per-image measurements on something small."""
    import torch

    from robustnb.data import ImageDataset
    from robustnb.split import build_split_model

    torch.manual_seed(0)
    models = {}
    for em in ("factorized", "hyperprior"):
        m = build_split_model("vgg", em).eval()
        m.update(force=True)
        models[("vgg", em, 0.01)] = m
    data = ImageDataset("toy", torch.randint(0, 255, (n, 3, 32, 32), dtype=torch.uint8), torch.arange(n) % 10,
                        [str(i) for i in range(10)], (0.5,) * 3, (0.5,) * 3)
    return models, data


@pytest.fixture
def tmp_env(tmp_path, monkeypatch):
    """Empty data and cache folders, so a test sees only the files it makes."""
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    monkeypatch.setenv("ROBUSTNB_DATA", str(data))
    monkeypatch.setenv("ROBUSTNB_CACHE", str(cache))
    return data, cache


@pytest.fixture
def no_download(monkeypatch):
    """Make every official download fail at once, as on a machine without internet."""
    import torchvision.datasets as tvd

    def boom(*a, **k):
        raise RuntimeError("network unreachable (test)")

    monkeypatch.setattr(tvd.CIFAR10, "download", boom)
    monkeypatch.setattr(tvd.FashionMNIST, "download", boom)
