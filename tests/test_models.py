import pytest
import torch

from robustnb import models
from robustnb.config import ConfigError


@pytest.mark.parametrize("arch", ["cnn", "resnet18", "mobilenet_v2", "vgg11", "regnet_x_400mf"])
def test_small_input_architectures(arch):
    m = models.build_classifier(arch, num_classes=7, image_size=32).eval()
    with torch.no_grad():
        assert m(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_grey_inputs_and_larger_images():
    m = models.build_classifier("resnet18", 10, in_channels=1, image_size=28, mean=(0.3,), std=(0.3,)).eval()
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    m = models.build_classifier("resnet34", 31, image_size=96).eval()
    assert m(torch.rand(1, 3, 96, 96)).shape == (1, 31)


def test_normalize_layer_and_errors():
    n = models.Normalize((0.5,), (0.25,))
    assert torch.allclose(n(torch.full((1, 1, 2, 2), 0.75)), torch.ones(1, 1, 2, 2))
    with pytest.raises(ConfigError, match="'alexnet'"):
        models.build_classifier("alexnet")
    with pytest.raises(ConfigError):
        models.build_classifier("cnn", in_channels=1, mean=(0.1, 0.2, 0.3))


@pytest.mark.parametrize("arch,last_bn", [("resnet18", "bn2"), ("resnet50", "bn3")])
def test_zero_init_residual_starts_every_block_as_the_identity(arch, last_bn):
    m = models.build_classifier(arch, image_size=64, zero_init_residual=True)
    blocks = [b for b in m.modules() if hasattr(b, last_bn) and hasattr(b, "conv1")]
    assert len(blocks) >= 8 and all(getattr(b, last_bn).weight.abs().sum() == 0 for b in blocks)
    plain = models.build_classifier(arch, image_size=64)
    assert all(getattr(b, last_bn).weight.abs().sum() > 0 for b in plain.modules()
               if hasattr(b, last_bn) and hasattr(b, "conv1"))
    with pytest.raises(ConfigError, match="'vgg11'"):
        models.build_classifier("vgg11", zero_init_residual=True)
    with pytest.raises(ConfigError, match="pretrained"):
        models.build_classifier("resnet18", pretrained=True, zero_init_residual=True)


@pytest.mark.parametrize("arch", models.NARROW)
def test_narrow_architectures_are_torchvision_families_at_the_small_cnns_cost(arch):
    """The 2-core architectures: registered, built from torchvision's classes, grey / 28 px inputs too, and about
    the small CNN's forward cost per image (within 2x of it at 32 px; VGG-11 costs 15x)."""
    from torch.utils.flop_counter import FlopCounterMode

    import torchvision

    def flops(name, **kw):
        m = models.build_classifier(name, 10, image_size=32, **kw).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as c:
            assert m(torch.rand(1, 3, 32, 32)).shape == (1, 10)
        return c.get_total_flops(), m

    cost, m = flops(arch)
    small_cnn, _ = flops("cnn", width=16)
    assert cost < 2 * small_cnn < flops("vgg11")[0] / 4
    assert isinstance(m[1], (torchvision.models.VGG, torchvision.models.ResNet, torchvision.models.MobileNetV2))
    grey = models.build_classifier(arch, 10, in_channels=1, image_size=28, mean=(0.3,), std=(0.3,)).eval()
    with torch.no_grad():
        assert grey(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ConfigError, match="pretrained"):
        models.build_classifier(arch, pretrained=True)
