import os
from pathlib import Path

import pytest

import robustnb  # noqa: F401  (first: sets OpenMP's passive wait policy before any test module loads torch)

ROOT = Path(__file__).resolve().parent.parent


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
