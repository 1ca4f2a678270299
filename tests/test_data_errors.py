"""Damaged data gives a clear error (dataset, file, member, fetch command), never a raw decoder error."""

import os
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from robustnb import data
from robustnb.config import ConfigError
from robustnb.data import DatasetNotFoundError
from test_data import _add, _jpeg, write_cifar_batches, write_cifar_jpg_archive, write_office31

HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>Quota exceeded</title></head>\n"
             b"<body><p>Too many users have viewed or downloaded this file recently.</p></body></html>\n")


def damaged(fn, *args, **kw):
    """The error ``fn`` raises: a :class:`data.DatasetCorruptError` (a ValueError), nothing raw."""
    with pytest.raises(ValueError) as e:
        fn(*args, **kw)
    assert isinstance(e.value, data.DatasetCorruptError), repr(e.value)
    return e.value


def assert_clear(err, name, path, root, member=None):
    msg = str(err)
    assert f"'{name}'" in msg and str(path) in msg, msg
    assert data.FETCH_COMMAND.format(name=name, root=root) in msg, msg
    if member is not None:
        assert member in msg, msg
    assert err.name == name and Path(err.path) == Path(path)


# ------------------------------------------------------------------------------------ CIFAR-10 archive
def test_truncated_cifar_archive(tmp_env):
    root, _ = tmp_env
    write_cifar_jpg_archive(root)
    archive = root / data.CIFAR10_ARCHIVE
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    for split in ("train", "test"):
        assert_clear(damaged(data.load_cifar10, split, download=False), "cifar10", archive, root)
    assert not list(root.rglob("*.tmp"))


def test_html_page_saved_as_cifar_archive(tmp_env, no_download):
    root, _ = tmp_env
    archive = root / data.CIFAR10_ARCHIVE
    archive.write_bytes(HTML_PAGE)
    err = damaged(data.load_cifar10, "test", download=False)
    assert_clear(err, "cifar10", archive, root)
    # the download is not tried either: the file the user put there has to be replaced
    err = damaged(data.load_cifar10, "test", download=True)
    assert_clear(err, "cifar10", archive, root)


@pytest.mark.parametrize("bad", ["garbage", "truncated"])
def test_corrupt_jpeg_in_cifar_archive_names_the_member(tmp_env, bad):
    root, cache = tmp_env
    archive = root / data.CIFAR10_ARCHIVE
    good = _jpeg(np.full((32, 32, 3), 100, np.uint8))
    payload = b"\x00not a jpeg at all" * 10 if bad == "garbage" else _jpeg(
        np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))[:300]
    with tarfile.open(archive, "w:gz") as tar:
        for c in data.CIFAR10_CLASSES:
            _add(tar, f"test/{c}/0000.jpg", payload if c == "dog" else good)
    err = damaged(data.load_cifar10, "test", download=False)
    assert_clear(err, "cifar10", archive, root, member="test/dog/0000.jpg")
    assert err.member == "test/dog/0000.jpg"
    assert not list(cache.rglob("cifar10-jpg-*"))  # nothing half-decoded is cached


def test_cifar_archive_with_a_missing_class_is_rejected(tmp_env):
    root, _ = tmp_env
    archive = root / data.CIFAR10_ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:  # as if cut off after 'horse'
        for c in data.CIFAR10_CLASSES[:8]:
            _add(tar, f"test/{c}/0000.jpg", _jpeg(np.full((32, 32, 3), 9, np.uint8)))
    err = damaged(data.load_cifar10, "test", download=False)
    assert_clear(err, "cifar10", archive, root)
    assert "ship" in str(err) and "truck" in str(err)


# ----------------------------------------------------------------------- CIFAR-10 python batches folder
def half_extract(root):
    """What an interrupted extraction leaves: the first files, the one being written cut short."""
    folder = write_cifar_batches(root)
    (folder / "data_batch_3").write_bytes((folder / "data_batch_3").read_bytes()[:1000])
    for name in ("data_batch_4", "data_batch_5"):
        (folder / name).unlink()
    (folder / "test_batch").write_bytes(b"")
    return folder


def test_half_extracted_batches_do_not_win_over_a_good_archive(tmp_env):
    root, _ = tmp_env
    write_cifar_jpg_archive(root)
    good = {s: data.load_cifar10(s, download=False) for s in ("train", "test")}
    folder = half_extract(root)
    for split in ("train", "test"):
        with pytest.warns(UserWarning, match="cifar-10-batches-py") as w:
            ds = data.load_cifar10(split, download=False)
        assert str(folder) in str(w[0].message) and data.CIFAR10_ARCHIVE in str(w[0].message)
        assert "JPEG" in ds.source
        assert torch.equal(ds.images, good[split].images) and torch.equal(ds.labels, good[split].labels)


def test_half_extracted_batches_without_archive(tmp_env, no_download):
    root, _ = tmp_env
    folder = half_extract(root)
    for split, bad in (("train", "data_batch_3"), ("test", "test_batch")):
        for download in (False, True):
            err = damaged(data.load_cifar10, split, download=download)
            assert_clear(err, "cifar10", folder, root)
            assert bad in str(err)


def test_batches_with_wrong_content(tmp_env):
    root, _ = tmp_env
    folder = write_cifar_batches(root)
    (folder / "test_batch").write_bytes(pickle.dumps({"labels": [1, 2]}))
    assert "test_batch" in str(damaged(data.load_cifar10, "test", download=False))
    (folder / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 2, 3]}))
    assert "test_batch" in str(damaged(data.load_cifar10, "test", download=False))
    (folder / "test_batch").write_bytes(HTML_PAGE)
    assert "test_batch" in str(damaged(data.load_cifar10, "test", download=False))


def test_good_batches_still_win_over_the_archive(tmp_env, recwarn):
    root, _ = tmp_env
    write_cifar_jpg_archive(root)
    write_cifar_batches(root)
    ds = data.load_cifar10("test", download=False)
    assert "official" in ds.source and len(ds) == 6
    assert not [w for w in recwarn if "cifar" in str(w.message).lower()]


# ------------------------------------------------------------------------------------------- Office-31
def test_corrupt_jpeg_in_office31(tmp_env):
    root, _ = tmp_env
    write_office31(root / "office31")
    bad = root / "office31" / "dslr" / "images" / "mug" / "frame_0001.jpg"
    bad.write_bytes(HTML_PAGE)
    err = damaged(data.load_office31, "dslr", image_size=16)
    assert str(bad) in str(err) and "get_data.py office31" in str(err) and err.name == "office31"


def test_bad_office31_archive_via_get_data(tmp_env, tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "data_scripts"))
    try:
        import get_data
    finally:
        sys.path.pop(0)
    page = tmp_path / "domain_adaptation_images.tar.gz"
    page.write_bytes(HTML_PAGE)
    for archive in (page, tmp_path / "missing.tar.gz"):
        monkeypatch.setattr(sys, "argv", ["get_data.py", "office31", "--archive", str(archive)])
        assert get_data.main() == 1
        err = capsys.readouterr().err
        assert str(archive) in err and "office31" in err and "Traceback" not in err
    with pytest.raises(ValueError) as e:
        data.fetch("office31", archive=page)
    assert isinstance(e.value, data.DatasetCorruptError) and str(page) in str(e.value)


# ------------------------------------------------------------------------------ failed downloads, cache
def test_failed_fashion_mnist_download_leaves_no_empty_folder(tmp_env, tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    root, _ = tmp_env

    def offline(self):  # what torchvision does on a machine without internet
        os.makedirs(self.raw_folder, exist_ok=True)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: network unreachable (test)")

    monkeypatch.setattr(tvd.FashionMNIST, "download", offline)
    with pytest.raises(DatasetNotFoundError, match="get_data.py fashion_mnist"):
        data.load_fashion_mnist("train")
    assert list(root.iterdir()) == []
    fresh = tmp_path / "fresh" / "data"
    with pytest.raises(DatasetNotFoundError):
        data.fetch("fashion_mnist", root=fresh)
    assert not (tmp_path / "fresh").exists()
    # folders that were there before are kept
    (root / "FashionMNIST").mkdir()
    with pytest.raises(DatasetNotFoundError):
        data.load_fashion_mnist("test")
    assert [p.name for p in root.iterdir()] == ["FashionMNIST"] and not list((root / "FashionMNIST").iterdir())


def test_atomic_save_npz_leaves_no_tmp_file(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "x.npz"
    data._atomic_save_npz(path, x=np.arange(3))

    def disk_full(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data.np, "savez", disk_full)
    with pytest.raises(OSError, match="No space"):
        data._atomic_save_npz(path, x=np.arange(5))
    assert [p.name for p in path.parent.iterdir()] == ["x.npz"]
    assert data._load_npz(path)["x"].tolist() == [0, 1, 2]  # the previous file is untouched


# ------------------------------------------------------------------------------------ subset arguments
def small():
    y = torch.arange(10).repeat_interleave(5)
    return data.ImageDataset("t", torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1).expand(50, 1, 2, 2).clone(),
                             y, list("abcdefghij"), (0.5,), (0.5,))


@pytest.mark.parametrize("n", [-5, -1, 2.5, 3.0, True, False, "5", np.float64(3), [3]])
def test_subset_rejects_bad_n(n):
    ds = small()
    for call in (ds.subset, ds.tensors):
        with pytest.raises(ConfigError) as e:
            call(n)
        msg = str(e.value)
        assert repr(n) in msg and "0..50" in msg and "None" in msg, msg


@pytest.mark.parametrize("seed", [1.5, "1", None, True])
def test_subset_rejects_bad_seed(seed):
    with pytest.raises(ConfigError, match="seed"):
        small().subset(10, seed=seed)


def test_subset_accepts_numpy_integers_and_keeps_its_documented_behaviour():
    ds = small()
    ref = ds.subset(20, seed=3)
    for n, seed in ((np.int64(20), np.int64(3)), (np.int32(20), 3), (20, np.uint8(3)), (torch.tensor(20), 3)):
        sub = ds.subset(n, seed=seed)
        assert torch.equal(sub.labels, ref.labels) and torch.equal(sub.images, ref.images)
        x, y = ds.tensors(n, seed)
        assert torch.equal(y, ref.labels) and torch.equal(x, ref.images.float() / 255)
    assert ds.subset(None) is ds and ds.subset(50) is ds and ds.subset(10**6) is ds  # None or too large: all
    assert len(ds.subset(0)) == 0 and len(ds.subset(np.int64(0))) == 0
    assert len(ds.tensors(np.int64(7))[0]) == 7
    batches = [b[1].tolist() for b in ds.loader(np.int64(16), shuffle=True, seed=np.int64(2))]
    assert batches == [b[1].tolist() for b in ds.loader(16, shuffle=True, seed=2)] and len(batches) == 4


def test_office31_image_size_accepts_numpy_integers(tmp_env):
    root, _ = tmp_env
    write_office31(root / "office31")
    ds = data.load_office31("webcam", image_size=np.int64(24))
    assert ds.image_shape == (3, 24, 24)
    with pytest.raises(ConfigError, match="image_size"):
        data.load_office31("webcam", image_size=True)
