"""The `full` preset's own code paths, run at miniature size (no GPU, no download): ImageNet-pretrained
weights loaded by torchvision's real code from a file the test places where torchvision looks for it, every
split architecture with the paper's 16 noise draws, ten voting nodes, and each chapter's `full` config."""

import importlib

import pytest
import torch
import torchvision

from robustnb import book, ensembles
from robustnb.attacks import EntropyAttack, check_in_ball
from robustnb.config import PRESETS
from robustnb.models import build_classifier
from robustnb.registry import SPLIT_ARCHITECTURES, VOTES
from robustnb.split import build_split_model


def test_pretrained_weights_load_through_torchvision_from_its_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    reference = torchvision.models.resnet18()
    torch.nn.init.constant_(reference.conv1.weight, 0.123)
    target = tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)  # the file torchvision would have downloaded
    model = build_classifier("resnet18", num_classes=31, image_size=224, pretrained=True)
    net = model[1]
    assert torch.all(net.conv1.weight == 0.123), "the ImageNet stem's weights come from the file"
    assert net.fc.out_features == 31 and net.conv1.stride == (2, 2)  # head replaced, ImageNet stem kept
    assert model(torch.rand(1, 3, 224, 224)).shape == (1, 31)


@pytest.mark.parametrize("arch", SPLIT_ARCHITECTURES.names())
def test_every_split_architecture_with_the_papers_sixteen_draws(arch):
    torch.manual_seed(0)
    m = build_split_model(arch, "hyperprior").eval()
    x = torch.rand(2, 3, 32, 32)
    adv = EntropyAttack(m, eps=8 / 255, steps=2, draws=16)(x)
    check_in_ball(adv, x, 8 / 255)


def test_ten_nodes_vote_and_shard():
    labels = torch.arange(10).repeat(40)
    shards = ensembles.make_shards(labels, 10, 40, "disjoint", seed=0)
    assert len(shards) == 10 and len(torch.cat(shards).unique()) == 400
    logits = torch.randn(10, 5, 10)
    for vote in VOTES.names():
        assert ensembles.aggregate(logits, vote).shape == (5,)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_chapter_config_builds_at_every_preset(preset):
    for nb in book.chapters():
        mod = importlib.import_module(f"robustnb.chapters.{nb.stem}")
        configs = [v for v in vars(mod).values() if isinstance(v, type) and hasattr(v, "from_preset")
                   and v.__module__ == mod.__name__]
        assert configs, f"{nb.stem} has no config class"
        for cls in configs:
            cls.from_preset(preset)
