"""Datasets: CIFAR-10, Fashion-MNIST and Office-31, as in-memory image tensors with class names.

Every loader returns an :class:`ImageDataset`: ``uint8`` images ``(N, C, H, W)`` kept compactly in memory,
``int64`` labels, the class names in the dataset's standard order, and the channel mean/std used to
normalise inputs. Items come out as ``float32`` in ``[0, 1]``: attacks and corruptions work in pixel
space, and every model normalises its input itself (:class:`robustnb.models.Normalize`), as is usual in
robustness work (epsilon = 8/255 means 8 grey levels).

Where the data comes from (never random data as a silent fallback):

* **CIFAR-10**: the official python batches (``<data>/cifar-10-batches-py``, torchvision's download); else
  the offline JPEG archive ``cifar10-jpg.tar.gz`` (``train|test/<class>/NNNN.jpg``) found in the data
  folder, decoded once and cached; else torchvision's official download.
* **Fashion-MNIST**: torchvision (official idx files under ``<data>/FashionMNIST/raw``, decompressed there
  from the published ``*.gz`` files if only those are there), downloading if needed.
* **Office-31**: the standard extracted layout ``<root>/{amazon,dslr,webcam}/images/<class>/*.jpg``;
  ``python data_scripts/get_data.py office31`` fetches and extracts it.

A dataset that is missing and cannot be downloaded raises :class:`DatasetNotFoundError`, which names the
dataset, the folders searched and the command that fetches it. A dataset file that is there but damaged
(a truncated archive, an HTML error page saved under the archive's name, a corrupt image, a half-extracted
folder) raises :class:`DatasetCorruptError`, which names the dataset, the file (and the archive member)
and the same command. Half-extracted official CIFAR-10 batches do not win over a good offline archive:
they are skipped with a warning.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import operator
import os
import pickle
import socket
import tarfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import CIFAR10, FashionMNIST

from robustnb.checks import check_labels
from robustnb.config import ConfigError, ConfigTypeError, cache_dir, data_dir
from robustnb.progress import tqdm

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
OFFICE31_DOMAINS = ("amazon", "dslr", "webcam")
OFFICE31_CLASSES = [
    "back_pack", "bike", "bike_helmet", "bookcase", "bottle", "calculator", "desk_chair", "desk_lamp",
    "desktop_computer", "file_cabinet", "headphones", "keyboard", "laptop_computer", "letter_tray",
    "mobile_phone", "monitor", "mouse", "mug", "paper_notebook", "pen", "phone", "printer", "projector",
    "punchers", "ring_binder", "ruler", "scissors", "speaker", "stapler", "tape_dispenser", "trash_can",
]
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SPLITS = ("train", "test")
DATASETS = ("cifar10", "fashion_mnist", "office31")
FETCH_COMMAND = "python data_scripts/get_data.py {name} --root {root}"


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk and could not be downloaded.

    ``root`` is the ``--root`` of the fetch command in the message (default: the data folder). ``given_root``:
    the ``root=`` the caller passed to the loader, if any; the message then names it instead of suggesting
    ``ROBUSTNB_DATA`` (which a given root overrides), and ``where`` may say where the command puts the files."""

    def __init__(self, name: str, searched, reason: str = "", root: Path | None = None,
                 given_root: Path | None = None, where: str = ""):
        searched = [str(p) for p in searched]
        root = root or data_dir()
        if given_root is not None:
            tail = (f"\n({where + '; ' if where else ''}you gave root={str(given_root)!r}: pass root= the folder "
                    "that holds it, or leave root out to use ROBUSTNB_DATA).")
        else:
            tail = "\n(or point ROBUSTNB_DATA at the folder that holds it)."
        msg = (
            f"Dataset {name!r} not found. Searched: {', '.join(searched) or '(nothing)'}."
            + (f" {reason}" if reason else "")
            + f"\nFetch it with:  {FETCH_COMMAND.format(name=name, root=root)}"
            + tail
        )
        super().__init__(msg)
        self.name, self.searched, self.reason = name, searched, reason


class DatasetCorruptError(ValueError):
    """A dataset file is on disk but damaged: truncated, not in the expected format, or a bad image inside."""

    def __init__(self, name: str, path, reason: str, member: str | None = None, root: Path | None = None):
        root = root or data_dir()
        where = f"{path}" + (f", member {member!r}," if member else "")
        msg = (
            f"Dataset {name!r}: {where} is damaged or incomplete: {reason}"
            + f"\nDelete or replace it, and fetch the dataset again with:  {FETCH_COMMAND.format(name=name, root=root)}"
        )
        super().__init__(msg)
        self.name, self.path, self.member, self.reason = name, Path(path), member, reason


def _as_int(value, what: str, allowed: str) -> int:
    """``value`` as a Python int (numpy and 0-d torch integers too); bools, floats and strings are refused."""
    if not isinstance(value, (bool, np.bool_)) and not (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise ConfigError(f"{what} must be {allowed}, got {value!r}.")


@dataclass
class ImageDataset(Dataset):
    """Images as ``uint8 (N, C, H, W)`` plus labels and class names; items are float in [0, 1]."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8 or self.images.ndim != 4:
            got = (f"{self.images.dtype} {tuple(self.images.shape)}" if isinstance(self.images, torch.Tensor)
                   else type(self.images).__name__)
            raise ConfigTypeError(f"images must be a uint8 tensor (N, C, H, W) with values 0-255, got {got}.")
        check_labels(self.labels, self.images)
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i].float().div_(255), self.labels[i]

    def __repr__(self) -> str:
        return (f"ImageDataset({self.name!r}, n={len(self)}, shape={tuple(self.images.shape[1:])}, "
                f"classes={len(self.classes)}, source={self.source!r})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def subset(self, n: int | None, seed: int = 0) -> "ImageDataset":
        """A class-stratified random subset of ``n`` items (all items if ``n`` is None or too large).

        ``n`` is None or an integer ``>= 0`` and ``seed`` an integer (numpy integers too); anything else
        (a negative ``n``, a float, a bool) raises :class:`~robustnb.config.ConfigError`.
        """
        if n is not None:
            n = _as_int(n, "subset size n", f"an integer in 0..{len(self)} (larger takes all items) or None")
            if n < 0:
                raise ConfigError(f"subset size n must be an integer in 0..{len(self)} (larger takes all items) "
                                  f"or None, got {n!r}.")
        seed = _as_int(seed, "seed", "an integer")
        if n is None or n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self), generator=g)
        labels = self.labels[order]
        rank = torch.empty_like(order)  # position of each item within its class, in shuffled order
        for c in labels.unique():
            mask = labels == c
            rank[mask] = torch.arange(int(mask.sum()))
        # take rank 0 of every class, then rank 1, ...: small subsets stay class-balanced
        idx = order[torch.argsort(rank * len(self) + torch.arange(len(self)))][:n].sort().values
        return self.select(idx)

    def select(self, idx) -> "ImageDataset":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return ImageDataset(self.name, self.images[idx], self.labels[idx], self.classes, self.mean, self.std,
                            self.source, dict(self.meta))

    def tensors(self, n: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` with x float in [0, 1]: handy for attacks and small evaluations."""
        ds = self.subset(n, seed)
        return ds.images.float().div_(255), ds.labels.clone()

    def loader(self, batch_size: int = 128, shuffle: bool = False, seed: int = 0) -> DataLoader:
        batch_size = _as_int(batch_size, "batch_size", "a positive integer")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
        g = torch.Generator().manual_seed(_as_int(seed, "seed", "an integer"))
        return DataLoader(self, batch_size=batch_size, shuffle=shuffle, generator=g, num_workers=0,
                          collate_fn=_collate)


def _collate(batch):
    xs, ys = zip(*batch)
    return torch.stack(xs), torch.stack(ys)


# ----------------------------------------------------------------------------------------------- helpers
def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"Unknown split {split!r}: choose one of {SPLITS}.")


def _atomic_save_npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # disk full, interrupted ...: no half-written file left behind
        tmp.unlink(missing_ok=True)
        raise


def _load_npz(path: Path):
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception:  # a damaged cache file is ours: decode again
        return None


def _fingerprint(path: Path) -> str:
    st = path.stat()
    return hashlib.sha1(f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:12]


def _decode_image(data: bytes, size: int | None = None, channels: int = 3) -> np.ndarray:
    img = Image.open(io.BytesIO(data)).convert("RGB" if channels == 3 else "L")
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


# ----------------------------------------------------------------------------------------------- CIFAR-10
CIFAR10_ARCHIVE = "cifar10-jpg.tar.gz"


CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def _cifar_batches_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a complete set of official batches (cheap checks, all files), or None.

    A pickle always ends with the STOP opcode ``.``: a file cut short by an interrupted extraction does not.
    """
    problems = []
    for name in CIFAR10_BATCHES + ("batches.meta",):
        path = folder / name
        if not path.is_file():
            if name != "batches.meta":  # optional: the standard class names are used without it
                problems.append(f"{name} is missing")
            continue
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                f.seek(max(size - 1, 0))
                last = f.read(1)
        except OSError as e:
            problems.append(f"{name} cannot be read ({type(e).__name__}: {e})")
            continue
        if size == 0:
            problems.append(f"{name} is empty")
        elif last != b".":
            problems.append(f"{name} is cut short or not a pickle ({size:,} bytes)")
    return "; ".join(problems) or None


def _read_cifar_batches(folder: Path, split: str, root: Path | None = None):
    """Read the official python batches (``data_batch_1..5`` / ``test_batch`` and ``batches.meta``).

    A file that is missing or does not hold what the official files hold raises :class:`DatasetCorruptError`.
    """
    problem = _cifar_batches_problem(folder)
    if problem:
        raise DatasetCorruptError("cifar10", folder, f"{problem} (an interrupted download or extraction?).",
                                  root=root)
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for name in files:
        try:
            with open(folder / name, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
            if y.shape != (len(x),) or len(x) == 0 or y.min() < 0 or y.max() >= len(CIFAR10_CLASSES):
                raise ValueError(f"{len(x)} images (3x32x32) but labels of shape {y.shape} "
                                 f"in {y.min() if y.size else '-'}..{y.max() if y.size else '-'}")
        except Exception as e:  # truncated, an HTML page, another pickle ...: whatever it is, say which file
            raise DatasetCorruptError("cifar10", folder, f"{name} is not an official CIFAR-10 batch "
                                      f"({type(e).__name__}: {e}).", root=root) from e
        xs.append(x)
        ys.append(y)
    classes = CIFAR10_CLASSES
    meta = folder / "batches.meta"
    if meta.exists():
        try:
            with open(meta, "rb") as f:
                classes = list(pickle.load(f, encoding="latin1")["label_names"])
        except Exception as e:
            raise DatasetCorruptError("cifar10", folder, f"batches.meta is not the official class list "
                                      f"({type(e).__name__}: {e}).", root=root) from e
    return np.concatenate(xs), np.concatenate(ys), classes


def _decode_cifar_archive(archive: Path, split: str, root: Path | None = None):
    """Decode ``<split>/<class>/*.jpg`` members of the offline archive once; cache the arrays.

    A damaged archive or image raises :class:`DatasetCorruptError` (with the member); nothing is cached then.
    """
    cache = cache_dir() / "datasets" / f"cifar10-jpg-{_fingerprint(archive)}-{split}.npz"
    cached = _load_npz(cache) if cache.exists() else None
    if cached is not None:
        return cached["x"], cached["y"]
    index = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
    items = []

    def damaged(reason: str, member: str | None = None) -> DatasetCorruptError:
        return DatasetCorruptError("cifar10", archive, reason, member, root)

    member = None  # the member being read when the archive itself turns out to be damaged
    try:
        with tarfile.open(archive, "r:*") as tar:
            for m in tqdm(tar, desc=f"decoding CIFAR-10 {split} (once)", unit=" files", mininterval=1):
                member = m.name
                parts = Path(m.name).parts
                if not m.isfile() or len(parts) < 3 or parts[-3] != split or not m.name.lower().endswith((".jpg", ".jpeg", ".png")):
                    continue
                if parts[-2] not in index:
                    raise damaged(f"unknown CIFAR-10 class folder {parts[-2]!r} (expected {split}/<class>/NNNN.jpg "
                                  f"with the 10 CIFAR-10 classes).", m.name)
                payload = tar.extractfile(m).read()
                try:
                    img = _decode_image(payload, 32)
                except Exception as e:  # UnidentifiedImageError, truncated JPEG, ...
                    raise damaged(f"not a readable image ({type(e).__name__}: {e}).", m.name) from e
                items.append((parts[-2], parts[-1], img))
    except DatasetCorruptError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:  # truncated, an HTML page, not gzip ...
        where = f" (last member reached: {member!r})" if member else ""
        raise damaged(f"not a readable .tar.gz archive{where} ({type(e).__name__}: {e}). "
                      "A truncated download or an error page saved under the archive's name?") from e
    if not items:
        raise damaged(f"it holds no {split}/<class>/*.jpg images.")
    missing = [c for c in CIFAR10_CLASSES if c not in {t[0] for t in items}]
    if missing:
        raise damaged(f"it holds no {split} images of the classes {missing} (a truncated archive?).")
    items.sort(key=lambda t: (index[t[0]], t[1]))
    x = np.stack([t[2] for t in items])
    y = np.array([index[t[0]] for t in items], dtype=np.int64)
    _atomic_save_npz(cache, x=x, y=y)
    return x, y


def load_cifar10(split: str = "train", root: str | Path | None = None, download: bool = True) -> ImageDataset:
    """CIFAR-10 ``train`` (50,000) or ``test`` (10,000) images, 32x32 RGB, 10 classes."""
    _check_split(split)
    given = Path(root) if root is not None else None
    root = given or data_dir()
    official = root / "cifar-10-batches-py"
    archive = next((p for p in (root / CIFAR10_ARCHIVE, root / "cifar10" / CIFAR10_ARCHIVE) if p.exists()), None)
    problem = _cifar_batches_problem(official) if official.exists() else None
    if (problem or not official.exists()) and archive is None and download:
        try:  # torchvision checks the batches' checksums and downloads and extracts them again
            _download("cifar10", root)
        except DatasetNotFoundError as e:
            if not problem:
                raise
            raise DatasetCorruptError("cifar10", official, f"{problem}; fetching it again failed too "
                                      f"({e.reason})", root=root) from None
    x = None
    if official.exists():
        try:
            x, y, classes = _read_cifar_batches(official, split, root)
            source = f"official CIFAR-10 python batches ({official})"
        except DatasetCorruptError as e:
            if archive is None:
                raise
            warnings.warn(f"Skipping the damaged CIFAR-10 folder {official}: {e.reason} Reading the offline "
                          f"archive {archive} instead (delete the folder to silence this warning).", stacklevel=2)
    if x is None and archive is not None:
        x, y = _decode_cifar_archive(archive, split, root)
        classes = CIFAR10_CLASSES
        source = f"offline JPEG re-encoding of CIFAR-10 ({archive.name}); pixels differ slightly from the official files"
    elif x is None:
        raise DatasetNotFoundError("cifar10", [official, root / CIFAR10_ARCHIVE],
                                   "Neither the official batches nor the offline archive are there (download disabled).",
                                   root, given_root=given)
    return ImageDataset("cifar10", torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y), classes,
                        CIFAR10_MEAN, CIFAR10_STD, source)


# ------------------------------------------------------------------------------------------ Fashion-MNIST
FASHION_MNIST_FILES = tuple(f"{split}-{kind}-idx{n}-ubyte" for split in ("train", "t10k")
                            for kind, n in (("images", 3), ("labels", 1)))


def _gunzip_fashion_mnist(raw: Path, root: Path | None = None) -> None:
    """Decompress each published ``<file>.gz`` in ``raw`` that is there without its decompressed copy (what
    torchvision reads; its download leaves both). A damaged ``.gz`` raises :class:`DatasetCorruptError`."""
    for name in FASHION_MNIST_FILES:
        gz, out = raw / f"{name}.gz", raw / name
        if out.exists() or not gz.is_file():
            continue
        try:
            payload = gzip.decompress(gz.read_bytes())
        except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise DatasetCorruptError("fashion_mnist", gz, f"not a readable gzip file ({type(e).__name__}: {e}).",
                                      root=root) from e
        tmp = out.with_name(f".{name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(payload)
            os.replace(tmp, out)
        except BaseException:  # no half-written file that would then be taken for the data
            tmp.unlink(missing_ok=True)
            raise


def load_fashion_mnist(split: str = "train", root: str | Path | None = None, download: bool = True) -> ImageDataset:
    """Fashion-MNIST ``train`` (60,000) or ``test`` (10,000), 28x28 grey, from the official idx files."""
    _check_split(split)
    given = Path(root) if root is not None else None
    root = given or data_dir()
    raw = root / "FashionMNIST" / "raw"
    _gunzip_fashion_mnist(raw, root)
    try:
        ds = FashionMNIST(str(root), train=split == "train", download=False)
    except RuntimeError:
        if not download:
            raise DatasetNotFoundError("fashion_mnist", [raw], "The idx files are not there (download disabled).",
                                       root, given_root=given) from None
        _download("fashion_mnist", root)
        ds = FashionMNIST(str(root), train=split == "train", download=False)
    return ImageDataset("fashion_mnist", ds.data.unsqueeze(1).contiguous(), ds.targets, list(ds.classes),
                        FASHION_MNIST_MEAN, FASHION_MNIST_STD, f"official idx files ({raw})")


# ---------------------------------------------------------------------------------------------- Office-31
def office31_roots(root: str | Path | None = None) -> list[Path]:
    """Candidate Office-31 folders: ``root`` if given, else the usual names under the data folder."""
    if root is not None:
        return [Path(root)]
    base = data_dir()
    return [base / "office31", base / "Office31", base / "office-31", base / "domain_adaptation_images"]


def find_office31(root: str | Path | None = None) -> Path | None:
    for cand in office31_roots(root):
        if all((cand / d / "images").is_dir() for d in OFFICE31_DOMAINS):
            return cand
    return None


def _office31_fetch_root(root: str | Path | None) -> tuple[Path | None, str]:
    """``(--root of the fetch command, where it puts the files)`` for an Office-31 ``root=`` (the folder that
    holds ``{amazon,dslr,webcam}``): the command extracts into ``<its --root>/office31``, so its ``--root`` is the
    given folder's parent. ``(None, "")`` when no root was given (the data folder)."""
    if root is None:
        return None, ""
    root = Path(root)
    target = root.parent / "office31"
    where = f"it extracts into {target}" + ("" if target == root else f", so then load with root={str(target)!r}")
    return root.parent, where


def _decode_office31_file(path: Path, size: int, root: str | Path | None = None) -> np.ndarray:
    try:
        return _decode_image(path.read_bytes(), size)
    except Exception as e:  # UnidentifiedImageError, truncated JPEG, unreadable file ...
        raise DatasetCorruptError("office31", path, f"not a readable image ({type(e).__name__}: {e}).",
                                  root=_office31_fetch_root(root)[0]) from e


def load_office31(domain: str, image_size: int = 224, root: str | Path | None = None) -> ImageDataset:
    """One Office-31 domain (``amazon`` 2,817, ``dslr`` 498, ``webcam`` 795 images), resized to a square.

    Decoded once per ``image_size`` and cached. Class indices follow the standard (alphabetical) order
    of the 31 class folders, also when a domain lacks a class.
    """
    if domain not in OFFICE31_DOMAINS:
        raise ConfigError(f"Unknown Office-31 domain {domain!r}: choose one of {OFFICE31_DOMAINS}.")
    size = _as_int(image_size, "image_size", "an integer in [8, 512]")
    if not 8 <= size <= 512:
        raise ConfigError(f"image_size must be an integer in [8, 512], got {image_size!r}.")
    image_size = size
    found = find_office31(root)
    fetch_root, where = _office31_fetch_root(root)
    given = Path(root) if root is not None else None
    if found is None:
        searched = office31_roots(root)
        raise DatasetNotFoundError("office31", searched,
                                   "Expected <root>/{amazon,dslr,webcam}/images/<class>/*.jpg (31 classes).",
                                   fetch_root, given_root=given, where=where)
    folder = found / domain / "images"
    files = sorted(p for p in folder.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    unknown = sorted({p.parent.name for p in files} - set(OFFICE31_CLASSES))
    if unknown:
        raise ValueError(f"{folder}: unknown Office-31 class folders {unknown}; expected the 31 standard classes.")
    if not files:
        raise DatasetNotFoundError("office31", [folder], f"No images in the {domain!r} domain.", fetch_root,
                                   given_root=given, where=where)
    key = hashlib.sha1("|".join(f"{p}:{p.stat().st_size}" for p in files).encode()).hexdigest()[:12]
    cache = cache_dir() / "datasets" / f"office31-{domain}-{image_size}-{key}.npz"
    cached = _load_npz(cache) if cache.exists() else None
    if cached is None:
        index = {c: i for i, c in enumerate(OFFICE31_CLASSES)}
        x = np.stack([_decode_office31_file(p, image_size, root)
                      for p in tqdm(files, desc=f"decoding Office-31 {domain} (once)", mininterval=1)])
        y = np.array([index[p.parent.name] for p in files], dtype=np.int64)
        _atomic_save_npz(cache, x=x, y=y)
    else:
        x, y = cached["x"], cached["y"]
    return ImageDataset(f"office31/{domain}", torch.from_numpy(x), torch.from_numpy(y), list(OFFICE31_CLASSES),
                        IMAGENET_MEAN, IMAGENET_STD, f"Office-31 {domain} ({folder})", {"domain": domain})


def install_office31_archive(archive: str | Path, root: str | Path) -> Path:
    """Extract the official ``domain_adaptation_images.tar.gz`` into ``root`` (refuses to overwrite)."""
    archive, root = Path(archive), Path(root)
    if not archive.is_file():
        raise DatasetNotFoundError("office31", [archive], "The archive file given does not exist.", root.parent)

    def damaged(reason: str, member: str | None = None) -> DatasetCorruptError:
        return DatasetCorruptError("office31", archive, reason, member, root.parent)

    unreadable = (tarfile.TarError, EOFError, OSError, zlib.error)
    hint = "A truncated download, or an error page saved under the archive's name?"
    try:
        tar = tarfile.open(archive, "r:*")
    except unreadable as e:
        raise damaged(f"not a readable .tar.gz archive ({type(e).__name__}: {e}). {hint}") from e
    with tar:
        try:  # reads the whole archive: a damaged one fails here, before anything is written
            members = [m for m in tar.getmembers() if m.isfile()]
        except unreadable as e:
            raise damaged(f"not a readable .tar.gz archive ({type(e).__name__}: {e}). {hint}") from e
        for m in members:
            parts = Path(m.name).parts
            if ".." in parts or Path(m.name).is_absolute():
                raise ValueError(f"unsafe path in archive: {m.name}")
        for m in tqdm(members, desc="extracting Office-31"):
            parts = Path(m.name).parts
            i = next((k for k, p in enumerate(parts) if p in OFFICE31_DOMAINS), None)
            if i is None:
                continue
            dest = root.joinpath(*parts[i:])
            if dest.exists():
                continue  # never overwrite what is already there
            try:
                with tar.extractfile(m) as src:
                    payload = src.read()
            except unreadable as e:
                raise damaged(f"the member cannot be read ({type(e).__name__}: {e}). {hint}", m.name) from e
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            try:  # a failed write leaves no partial image (which would then never be overwritten)
                tmp.write_bytes(payload)
                os.replace(tmp, dest)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
    if find_office31(root) is None:
        raise damaged("it does not contain the Office-31 layout <domain>/images/<class>/*.jpg.")
    return root


# ---------------------------------------------------------------------------------------------- download
OFFICE31_URL = "https://drive.google.com/uc?id=0B4IapRTv9pJ1WGZVd1VDMmhwdlE"  # domain_adaptation_images.tar.gz


def _missing_dirs(paths) -> list[Path]:
    """The folders among ``paths`` and their parents that do not exist yet, deepest first."""
    missing = set()
    for p in paths:
        p = Path(p).absolute()
        while not p.exists() and p.parent != p:
            missing.add(p)
            p = p.parent
    return sorted(missing, key=lambda p: len(p.parts), reverse=True)


def _remove_empty_dirs(created) -> None:
    """Remove the folders in ``created`` (new ones, see :func:`_missing_dirs`) that are empty, and empty ones below."""
    for top in created:
        if top.is_dir() and not top.is_symlink():
            for folder, _, _ in os.walk(top, topdown=False):  # everything under a new folder is new
                try:
                    os.rmdir(folder)
                except OSError:  # not empty: keep it and what it holds
                    pass


def _download(name: str, root: Path, timeout: float = 30.0) -> None:
    """Official download; any failure becomes a :class:`DatasetNotFoundError` with the fetch command."""
    targets = {"cifar10": [root / "cifar-10-batches-py"], "fashion_mnist": [root / "FashionMNIST" / "raw"],
               "office31": [root / "office31"]}.get(name, [])
    created = _missing_dirs([root, *targets])  # removed again, if still empty, when the download fails
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        root.mkdir(parents=True, exist_ok=True)
        if name == "cifar10":
            CIFAR10(str(root), train=True, download=True)
        elif name == "fashion_mnist":
            FashionMNIST(str(root), train=True, download=True)
            FashionMNIST(str(root), train=False, download=True)
        elif name == "office31":
            archive = root / "domain_adaptation_images.tar.gz"
            if not archive.exists():
                try:
                    import gdown  # Google Drive needs a confirm step that gdown handles
                except ImportError as e:
                    raise RuntimeError("Office-31 is hosted on Google Drive: `pip install gdown` first, "
                                       f"or download {OFFICE31_URL} by hand and pass --archive") from e
                gdown.download(OFFICE31_URL, str(archive), quiet=False)
            install_office31_archive(archive, root / "office31")
        else:
            raise ConfigError(f"Unknown dataset {name!r}: choose one of {DATASETS}.")
    except (ConfigError, DatasetNotFoundError, DatasetCorruptError):
        _remove_empty_dirs(created)
        raise
    except Exception as e:  # offline, read-only folder, bad checksum ...
        _remove_empty_dirs(created)
        searched = {"cifar10": [root / "cifar-10-batches-py", root / CIFAR10_ARCHIVE],
                    "fashion_mnist": [root / "FashionMNIST" / "raw"],
                    "office31": office31_roots(None)}[name]
        raise DatasetNotFoundError(name, searched, f"Download failed: {type(e).__name__}: {e}", root) from None
    finally:
        socket.setdefaulttimeout(old)


def fetch(name: str, root: str | Path | None = None, archive: str | Path | None = None) -> Path:
    """Download (or, with ``archive``, install from a local archive) a dataset into ``root``."""
    if name not in DATASETS:
        raise ConfigError(f"Unknown dataset {name!r}: choose one of {DATASETS}.")
    root = Path(root) if root is not None else data_dir()
    if archive is not None:
        if name != "office31":
            raise ConfigError("--archive is only for office31 (CIFAR-10 archives are read in place).")
        return install_office31_archive(archive, root / "office31")
    _download(name, root)
    return root


def load(name: str, split: str = "train", **kw) -> ImageDataset:
    """Dispatch by name: ``load("cifar10", "test")``, ``load("office31", domain="amazon")``."""
    if name == "cifar10":
        return load_cifar10(split, **kw)
    if name == "fashion_mnist":
        return load_fashion_mnist(split, **kw)
    if name == "office31":
        return load_office31(**kw)
    raise ConfigError(f"Unknown dataset {name!r}: choose one of {DATASETS}.")


def cifar10_test_images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``: the first ``n`` images of a stratified CIFAR-10 test subset (the images several chapters
    measure on; at least 10 are drawn so that every class can appear)."""
    return load_cifar10("test").subset(max(n, 10), seed).tensors(n)
