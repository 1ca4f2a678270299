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
