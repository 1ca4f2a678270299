"""The loaders read small files that these tests write in each dataset's official format."""

import io
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from robustnb import data
from robustnb.data import DatasetNotFoundError


def _jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


# ---------------------------------------------------------------------------------------------- CIFAR
def write_cifar_batches(root, n_per_batch=6):
    """The official python format: pickled dicts in cifar-10-batches-py/."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 "labels": list(rng.integers(0, 10, n_per_batch))}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": data.CIFAR10_CLASSES}))
    return folder


def test_cifar10_official_batches(tmp_env):
    root, _ = tmp_env
    write_cifar_batches(root)
    train, test = data.load_cifar10("train", download=False), data.load_cifar10("test", download=False)
    assert len(train) == 30 and len(test) == 6
    assert train.images.shape[1:] == (3, 32, 32) and train.images.dtype == torch.uint8
    assert train.classes == data.CIFAR10_CLASSES and "official" in train.source
    x, y = train[0]
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and y.dtype == torch.long


def write_cifar_jpg_archive(root, per_class=2):
    rng = np.random.default_rng(1)
    with tarfile.open(root / data.CIFAR10_ARCHIVE, "w:gz") as tar:
        for split in ("train", "test"):
            for c in data.CIFAR10_CLASSES:
                for i in range(per_class):
                    img = np.full((32, 32, 3), 20 * data.CIFAR10_CLASSES.index(c), np.uint8)
                    img[:4] = rng.integers(0, 256, (4, 32, 3), dtype=np.uint8)
                    _add(tar, f"{split}/{c}/{i:04d}.jpg", _jpeg(img))


def test_cifar10_offline_archive_is_decoded_once(tmp_env, monkeypatch):
    root, cache = tmp_env
    write_cifar_jpg_archive(root)
    test = data.load_cifar10("test", download=False)
    assert len(test) == 20 and sorted(test.labels.tolist()) == sorted(list(range(10)) * 2)
    assert "JPEG" in test.source
    # the class of an image is its folder: the flat colour written for it survives JPEG
    cls = test.labels[0].item()
    assert abs(test.images[0, :, 16:, :].float().mean().item() - 20 * cls) < 3
    assert list((cache / "datasets").glob("cifar10-jpg-*-test.npz"))

    def no_tar(*a, **k):
        raise AssertionError("archive decoded twice")

    monkeypatch.setattr(data.tarfile, "open", no_tar)
    again = data.load_cifar10("test", download=False)
    assert torch.equal(again.images, test.images)


def test_missing_cifar10_names_dataset_folders_and_command(tmp_env, no_download):
    root, _ = tmp_env
    for download in (False, True):
        with pytest.raises(DatasetNotFoundError) as e:
            data.load_cifar10("train", download=download)
        msg = str(e.value)
        assert "'cifar10'" in msg and str(root) in msg
        assert "python data_scripts/get_data.py cifar10" in msg


def test_unknown_split_and_dataset():
    with pytest.raises(ValueError, match="'val'"):
        data.load_cifar10("val")
    with pytest.raises(ValueError, match="'svhn'"):
        data.load("svhn")


# -------------------------------------------------------------------------------------- Fashion-MNIST
def write_idx(folder, prefix, n):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return images, labels


def test_fashion_mnist_idx_files(tmp_env):
    root, _ = tmp_env
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images, labels = write_idx(raw, "train", 12)
    write_idx(raw, "t10k", 5)
    train = data.load_fashion_mnist("train", download=False)
    assert len(train) == 12 and train.image_shape == (1, 28, 28)
    assert np.array_equal(train.images[:, 0].numpy(), images) and np.array_equal(train.labels.numpy(), labels)
    assert train.classes[0] == "T-shirt/top" and len(train.classes) == 10
    assert len(data.load_fashion_mnist("test", download=False)) == 5


def test_missing_fashion_mnist(tmp_env, no_download):
    with pytest.raises(DatasetNotFoundError, match="get_data.py fashion_mnist"):
        data.load_fashion_mnist("train")


# ------------------------------------------------------------------------------------------ Office-31
#: (width, height) of the real Office-31 photos in each domain
OFFICE31_SIZES = {"amazon": (300, 300), "dslr": (1000, 1000), "webcam": (640, 480)}


def write_office31(root, classes=("back_pack", "mug", "trash_can"), per_class=2, size=(40, 30), sizes=None):
    """``<root>/{amazon,dslr,webcam}/images/<class>/frame_NNNN.jpg``: noise JPEGs of ``size`` (width, height), or
    of ``sizes[domain]`` (e.g. :data:`OFFICE31_SIZES`)."""
    rng = np.random.default_rng(3)
    for d in data.OFFICE31_DOMAINS:
        w, h = (sizes or {}).get(d, size)
        for c in classes:
            folder = root / d / "images" / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                (folder / f"frame_{i:04d}.jpg").write_bytes(_jpeg(arr))
    return root


def test_office31_tree(tmp_env):
    root, _ = tmp_env
    write_office31(root / "office31")
    ds = data.load_office31("webcam", image_size=24)
    assert len(data.OFFICE31_CLASSES) == 31 and ds.classes == data.OFFICE31_CLASSES
    assert data.OFFICE31_CLASSES == sorted(data.OFFICE31_CLASSES)  # the standard order is alphabetical
    assert ds.image_shape == (3, 24, 24) and len(ds) == 6
    idx = [data.OFFICE31_CLASSES.index(c) for c in ("back_pack", "mug", "trash_can")]
    assert sorted(set(ds.labels.tolist())) == idx
    assert ds.meta["domain"] == "webcam"


def test_office31_archive_install_and_missing(tmp_env, tmp_path):
    root, _ = tmp_env
    with pytest.raises(DatasetNotFoundError) as e:
        data.load_office31("amazon")
    assert "office31" in str(e.value) and "get_data.py office31" in str(e.value)
    with pytest.raises(ValueError, match="'clipart'"):
        data.load_office31("clipart")
    src = write_office31(tmp_path / "src")
    archive = tmp_path / "domain_adaptation_images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="domain_adaptation_images")
    # a file the user already has is never overwritten
    mine = root / "office31" / "amazon" / "images" / "mug" / "frame_0000.jpg"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"mine")
    data.fetch("office31", archive=archive)
    assert mine.read_bytes() == b"mine"
    assert (root / "office31" / "dslr" / "images" / "mug" / "frame_0001.jpg").exists()


# -------------------------------------------------------------------------------------------- subsets
def test_subset_is_stratified_and_deterministic():
    y = torch.arange(10).repeat_interleave(50)
    ds = data.ImageDataset("t", torch.zeros(500, 1, 4, 4, dtype=torch.uint8), y, list("abcdefghij"), (0.5,), (0.5,))
    sub = ds.subset(30, seed=1)
    assert sub.labels.bincount().tolist() == [3] * 10
    assert torch.equal(sub.labels, ds.subset(30, seed=1).labels)
    x, yy = ds.tensors(20)
    assert x.shape == (20, 1, 4, 4) and x.dtype == torch.float32
