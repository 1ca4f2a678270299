"""The real-data paths, run on small files written in each dataset's official format.

Offline, Fashion-MNIST and Office-31 are missing, so the chapters skip Fashion-MNIST and use the CIFAR-10
stand-in for Office-31: without these tests no chapter ever ran on data of their shapes (28x28 grey images;
photos of 300x300, 1000x1000 and 640x480 pixels), and VGG-11 crashed on Fashion-MNIST where it can be
downloaded. Here every architecture takes every input size the chapters give it, and the two chapters run end
to end on synthetic Fashion-MNIST idx files and a synthetic Office-31 tree (marked ``chapters``: slow-ish).
"""

import dataclasses
import gzip
import struct

import numpy as np
import pandas as pd
import pytest
import torch

from robustnb import data, models, registry
from robustnb.config import Run
from test_data import OFFICE31_SIZES, write_cifar_batches, write_office31

ARCHS = registry.ARCHITECTURES.names()


# ------------------------------------------------------------------------------------- architectures
def _office31_inputs():
    """``(id, 3, build size, input size, 31)`` of the compressed chapter's Office-31 models at every preset: its
    ``build`` asks for 65 px or more with ``imagenet_stem`` (the ImageNet stem) and feeds ``image_size``."""
    from robustnb.chapters.compressed_domain_shift import StudyConfig

    out = []
    for preset in ("smoke", "cpu", "full"):
        cfg = StudyConfig.from_preset(preset)
        s = cfg.image_size
        out.append((f"office31-{preset}-3x{s}", 3, max(s, 65) if cfg.imagenet_stem else s, s, 31))
    return out


#: (id, in_channels, image_size given to build_classifier, input size, classes): every input a chapter gives
INPUTS = [("fashion_mnist-1x28", 1, 28, 28, 10), ("cifar10-3x32", 3, 32, 32, 10), *_office31_inputs(),
          ("odd-1x20", 1, 20, 20, 10)]  # a size that is neither a multiple of 32 nor Fashion-MNIST's


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("case, channels, build_size, size, classes", INPUTS, ids=[i[0] for i in INPUTS])
def test_every_architecture_takes_every_input_size(arch, case, channels, build_size, size, classes):
    torch.manual_seed(0)
    m = models.build_classifier(arch, classes, channels, build_size).eval()
    with torch.no_grad():
        out = m(torch.rand(2, channels, size, size))
    assert out.shape == (2, classes) and torch.isfinite(out).all()


def test_vgg_on_grey_28x28_trains_and_keeps_its_32x32_layout():
    """VGG-11's five max-pools take 28 px to nothing; they round up there (28, 14, 7, 4, 2, 1), and only there."""
    m = models.build_classifier("vgg11", 10, 1, 28, mean=(0.3,), std=(0.35,)).train()
    loss = torch.nn.functional.cross_entropy(m(torch.rand(4, 1, 28, 28)), torch.arange(4))
    loss.backward()
    assert torch.isfinite(loss)
    pools = [p for p in m.modules() if isinstance(p, torch.nn.MaxPool2d)]
    assert len(pools) == 5 and all(p.ceil_mode for p in pools)
    for size in (32, 64, 224):  # what the CIFAR-10 and Office-31 models (and their caches) always had
        net = models.build_classifier("vgg11", 10, 3, size)
        pools = [p for p in net.modules() if isinstance(p, torch.nn.MaxPool2d)]
        assert len(pools) == 5 and not any(p.ceil_mode for p in pools)


# -------------------------------------------------------------------------------------- Fashion-MNIST
def write_fashion_mnist_gz(root, n_train=300, n_test=100, seed=0):
    """The four official gzipped idx files (``train-images-idx3-ubyte.gz``, ...) in ``<root>/FashionMNIST/raw``,
    as published (torchvision's download decompresses them next to the ``.gz``). 28x28 grey images of 10
    classes that a small network can tell apart: a bright horizontal band whose height is the class, on noise."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 + 2 * c:4 + 2 * c, 3:25] = 230
        with gzip.open(raw / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        with gzip.open(raw / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + labels.tobytes())
        out[prefix] = images, labels
    return out


def test_fashion_mnist_reads_the_official_gzipped_idx_files(tmp_env, no_download):
    root, _ = tmp_env
    written = write_fashion_mnist_gz(root, 30, 20)
    train = data.load_fashion_mnist("train", download=False)
    assert train.image_shape == (1, 28, 28) and len(train) == 30 and train.num_classes == 10
    assert np.array_equal(train.images[:, 0].numpy(), written["train"][0])
    assert np.array_equal(train.labels.numpy(), written["train"][1])
    assert len(data.load_fashion_mnist("test")) == 20  # download=True: the files are there, nothing is fetched

    from robustnb.chapters import heterogeneous_ensembles as he

    assert he.fashion_mnist_available(download=False)


@pytest.mark.chapters
def test_heterogeneous_fashion_mnist_study_with_the_cpu_architectures(tmp_env, no_download, monkeypatch):
    """The chapter's Fashion-MNIST study at ``smoke`` sizes, with the ``cpu`` preset's surrogates (a VGG-11 among
    them) and nodes of every architecture the study and the ``cpu`` preset use, end to end in this process."""
    from robustnb import distributed as D
    from robustnb.chapters import heterogeneous_ensembles as he

    root, _ = tmp_env
    write_fashion_mnist_gz(root, n_train=300, n_test=100)
    cpu = he.HeteroConfig.from_preset("cpu")
    study_archs = ("cnn", "regnet_x_400mf", "mobilenet_v2")  # fashion_mnist_study's own
    archs = tuple(dict.fromkeys(study_archs + cpu.archs))
    assert "vgg11_w16" in archs and any(a == "vgg11" for a, _ in cpu.surrogates)
    studies, run_study = [], he.run_study

    def spy(*a, **k):  # keeps the study, whose frame the table is made from
        studies.append(run_study(*a, **k))
        return studies[-1]

    monkeypatch.setattr(he, "run_study", spy)
    run = Run(preset="smoke", seed=0, device=torch.device("cpu"))
    # N = 1, and N = one node per architecture (the "all" axis gives node i archs[i]); 1 epoch per node, with
    # the cpu preset's speed options (channels-last, bfloat16 where the CPU has it)
    table = he.fashion_mnist_study(run, D.Execution("local"), archs=archs, surrogates=cpu.surrogates, speed=cpu.speed,
                                   n_values=(1, len(archs)), pool=40 * len(archs), n_attacker=80, n_test=60,
                                   n_attack=24, sweep_eps_255=(8,), attack_steps=2, tune_trials=1)
    assert isinstance(table, pd.DataFrame) and len(table)
    (study,) = studies
    cfg, frame = study.cfg, study.frame
    assert cfg.dataset == "fashion_mnist" and cfg.archs == archs and cfg.surrogates == cpu.surrogates
    assert {s.arch for s in study.nodes["all"]} == set(archs)
    assert set(frame.instantiation) == set(cfg.axes) and set(frame.attack) == set(cfg.attacks)
    assert np.isfinite(frame[["clean_acc", "robust_acc"]].to_numpy()).all()
    assert frame[["clean_acc", "robust_acc"]].stack().between(0, 1).all()
    # each instantiation on its own clean-correct mask, the sensitivity reading on one shared mask per round (at
    # these toy sizes a mask may be empty: then its accuracy is NaN, never a number computed on no images)
    assert frame.groupby("seed").n_shared.nunique().eq(1).all()
    assert (frame.n_shared <= frame.n_clean_correct).all()
    for metric, count in (("robust_acc_cc", "n_clean_correct"), ("robust_acc_shared", "n_shared")):
        assert np.isfinite(frame[frame[count] > 0][metric].to_numpy()).all()
        assert frame[frame[count] == 0][metric].isna().all()
    assert np.isfinite(table.clean.to_numpy()).all()


def test_a_damaged_gzipped_idx_file_is_named(tmp_env, no_download):
    root, _ = tmp_env
    write_fashion_mnist_gz(root, 20, 10)
    bad = root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:40])  # cut short
    with pytest.raises(data.DatasetCorruptError, match="train-images-idx3-ubyte.gz") as e:
        data.load_fashion_mnist("train")
    assert "get_data.py fashion_mnist" in str(e.value)
    assert not list(bad.parent.glob("*.tmp")) and not (bad.parent / "train-images-idx3-ubyte").exists()


# ------------------------------------------------------------------------------------------ Office-31
@pytest.mark.chapters
def test_compressed_chapter_on_office31_photos_with_the_cpu_resnets(tmp_env, no_download):
    """The compressed chapter's steps, as its notebook makes them, on an Office-31 tree of JPEGs at the real
    domains' sizes, with the ``cpu`` preset's ResNets at 64 px with the ImageNet stem (smoke sizes otherwise)."""
    from robustnb.chapters import compressed_domain_shift as ch
    from robustnb.compression import int8_kernels
    from robustnb.jobs import Execution

    root, _ = tmp_env
    write_office31(root / "office31", ("back_pack", "mug", "ruler", "trash_can"), per_class=5, sizes=OFFICE31_SIZES)
    cpu = ch.StudyConfig.from_preset("cpu")
    cfg = dataclasses.replace(
        ch.StudyConfig.from_preset("smoke"), base_archs=cpu.base_archs, teacher_archs=cpu.teacher_archs,
        quantize_archs=cpu.quantize_archs, image_size=cpu.image_size, imagenet_stem=cpu.imagenet_stem,
        epochs=tuple((a, 1) for a in cpu.base_archs), n_eval=8, n_attack=4, n_calibration=8, latency_batch=4,
        prune_ratios=(0.3, 0.5), pgd_steps=2, sp_steps=4)
    assert cfg.base_archs == ("resnet18", "resnet34") and cfg.image_size == 64 and cfg.imagenet_stem
    run = Run(preset="smoke", seed=0, device=torch.device("cpu"))

    doms = ch.load_domains(cfg)
    assert not doms.stand_in and doms.source == "amazon" and set(doms.eval) == set(data.OFFICE31_DOMAINS)
    assert doms.train.image_shape == (3, 64, 64) and doms.train.num_classes == 31
    assert len(doms.summary()) == 4 and len(ch.domain_examples(doms, n=2)[1]) == 6
    zoo = ch.train_bases(cfg, run, doms, Execution("local"))
    assert set(zoo.attackers) == set(cfg.base_archs)
    assert len(ch.attacker_accuracy(cfg, zoo, doms)) == 3 * len(cfg.base_archs)
    assert len(ch.one_model(cfg, zoo, doms, n=4)) == 2 * 3
    zoo = ch.compress_all(cfg, run, doms, zoo)
    methods = zoo.frame().method.value_counts()
    assert methods.to_dict() == {"baseline": 2, "pruned": 2 + 1, "distilled": 1, "distilled (size-matched)": 1,
                                 "int8": 2}
    int8 = ch.int8_report(cfg, zoo, doms)
    assert len(int8) == 2 and np.isfinite(int8[["fp32_acc", "int8_acc", "size_ratio"]].to_numpy()).all()
    q = next(iter(zoo.fp32_of))
    int8_kernels(zoo.models[q], doms.eval[doms.source].tensors(2)[0])
    results = ch.evaluate_all(cfg, zoo, doms)
    assert set(results.domain) == set(data.OFFICE31_DOMAINS) and set(results.model) == set(zoo.models)
    assert np.isfinite(results.accuracy.to_numpy()).all() and results.accuracy.between(0, 1).all()
    assert len(ch.results_table(results)) == len(zoo.models) * 3
    assert len(ch.int8_attack_table(results)) == 2 * len(cfg.quantize_archs)
    assert len(ch.robustness_summary(results)) == len(zoo.models)
    claims = ch.claims(results, cfg)
    assert len(claims) >= 8 and set(ch.claim_numbers(results, cfg)) >= {"cd_n_eval", "cd_bases_source"}


# ------------------------------------------------------------------------------------------- CIFAR-10
def test_cifar10_chapters_load_the_official_batches(tmp_env, no_download):
    """The CIFAR-10 chapters' own data calls (the loader itself: test_data.py) on the official python batches,
    which CI and Colab download, where the offline machines have the JPEG archive."""
    from robustnb import domains
    from robustnb.chapters import heterogeneous_ensembles as he

    root, _ = tmp_env
    write_cifar_batches(root, n_per_batch=150)
    x, y = data.cifar10_test_images(16)
    assert x.shape == (16, 3, 32, 32) and 0 <= x.min() and x.max() <= 1 and y.dtype == torch.long
    splits = he.load_splits(he.HeteroConfig.from_preset("smoke"))
    assert len(splits.pool) == 400 and "official" in splits.pool.source and splits.test.image_shape == (3, 32, 32)
    doms = domains.load_domains(32, 64, 32)
    assert doms.stand_in and "official" in doms.train.source and len(doms.eval["webcam_like"]) == 32
