"""Classifiers used across the book, built from torchvision and adapted to small inputs.

Every model takes images in ``[0, 1]`` and normalises them itself (first layer :class:`Normalize`), so
attacks, corruptions and defenses all work in pixel space. For inputs of 64 px or less (CIFAR-10's 32x32,
Fashion-MNIST's 28x28 grey images, Office-31 at 32 or 64 px) the ImageNet stems are replaced by the usual CIFAR
stems (3x3 stride-1 first convolution, no max-pool); for larger inputs (Office-31) the torchvision architectures
are used as they are, optionally with ImageNet-pretrained weights (needs a download: Colab, not the offline
machines). Grey images get a 1-channel first convolution. No input is padded or resized: every architecture
takes square images of 8 px and more as they are (8 px: the smallest size the Office-31 loader makes) except
VGG under 32 px, whose five 2x2 max-pools would floor 28 px to 14, 7, 3, 1 and then nothing; there its max-pools
round up (``ceil_mode``: 28 px goes to 14, 7, 4, 2, 1, the maps 32 px has from the third pool on). At 32 px and
more VGG is unchanged, as is every other architecture at every size.
"""

from __future__ import annotations

import functools

import torch
import torchvision
from torch import nn

from robustnb import registry
from robustnb.config import ConfigError


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, as a layer so that the model's input stays in [0, 1]."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class SmallCNN(nn.Module):
    """A small VGG-style network (three conv blocks): the quick model of ``smoke`` runs and d2l-style demos."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 32):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                 nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                 nn.MaxPool2d(2))

        self.features = nn.Sequential(block(in_channels, width), block(width, 2 * width), block(2 * width, 4 * width))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


class NarrowResNet(torchvision.models.ResNet):
    """torchvision's ResNet with BasicBlocks (``layers`` blocks per stage) at stage widths ``width``, ``2 width``,
    ``4 width``, ``8 width`` instead of 64 to 512: ``resnet10_w16`` (one block per stage, widths 16 to 128) is a
    ResNet sized for a 2-core CPU. The stem, blocks, initialisation and ``forward`` are torchvision's."""

    def __init__(self, layers=(1, 1, 1, 1), width: int = 16, num_classes: int = 1000, weights=None,
                 zero_init_residual: bool = False):
        if weights is not None:
            raise ConfigError("the narrow ResNets have no pretrained weights: pass pretrained=False.")
        nn.Module.__init__(self)
        self._norm_layer, self.inplanes, self.dilation, self.groups, self.base_width = nn.BatchNorm2d, width, 1, 1, 64
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1, self.relu, self.maxpool = nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        block = torchvision.models.resnet.BasicBlock
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8 * width, num_classes)
        for m in self.modules():  # torchvision's ResNet initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:  # torchvision's option: every block starts as the identity
            for m in self.modules():
                if isinstance(m, torchvision.models.resnet.BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)


#: the narrow VGG: VGG-11's layout (configuration "A": 8 convolutions, 5 max-pools) at a quarter of its widths
VGG11_W16 = [16, "M", 32, "M", 64, 64, "M", 128, 128, "M", 128, 128, "M"]


def vgg11_w16(weights=None, num_classes: int = 1000) -> torchvision.models.VGG:
    """torchvision's VGG (with BatchNorm, :func:`torchvision.models.vgg.make_layers`) on :data:`VGG11_W16`,
    widths 16 to 128 instead of 64 to 512, with a global-average-pool head (``c -> c -> classes``, ``c`` = 128)
    at every input size: a VGG sized for a 2-core CPU."""
    if weights is not None:
        raise ConfigError("vgg11_w16 has no pretrained weights: pass pretrained=False.")
    net = torchvision.models.VGG(torchvision.models.vgg.make_layers(VGG11_W16, batch_norm=True), num_classes)
    c = VGG11_W16[-2]
    net.avgpool = nn.AdaptiveAvgPool2d(1)
    net.classifier = nn.Sequential(nn.Linear(c, c), nn.ReLU(True), nn.Dropout(0.3), nn.Linear(c, num_classes))
    return net


class MobileNetV2Half(torchvision.models.MobileNetV2):
    """torchvision's MobileNetV2 at width multiplier 0.5 (its inverted-residual blocks with half the channels; the
    last 1x1 convolution keeps 1,280), which keeps its stride-2 stem on small images (32 px: maps of 16 px and
    down, where the CIFAR stem of :func:`_first_conv_to` would keep 32 px): a MobileNet sized for a 2-core CPU,
    about the small CNN's cost per image. It trains in float32 (bfloat16 autocast is slower for its depthwise
    convolutions on the CPU, as for MobileNetV2)."""

    small_input_stem_stride = 2

    def __init__(self, num_classes: int = 1000, weights=None):
        if weights is not None:
            raise ConfigError("mobilenet_v2_x0_5 has no pretrained weights here: pass pretrained=False.")
        super().__init__(num_classes=num_classes, width_mult=0.5)


registry.ARCHITECTURES.add("cnn", SmallCNN)
for _name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet_v2", "vgg11",
              "regnet_x_400mf", "densenet121"):
    registry.ARCHITECTURES.add(_name, getattr(torchvision.models, _name if _name != "vgg11" else "vgg11_bn"))
#: architectures sized for a 2-core CPU (the heterogeneous chapter's ``cpu`` nodes): distinct families, each about
#: the small CNN's cost per image
NARROW = ("vgg11_w16", "resnet10_w16", "mobilenet_v2_x0_5")
registry.ARCHITECTURES.add("vgg11_w16", vgg11_w16)
registry.ARCHITECTURES.add("resnet10_w16", functools.partial(NarrowResNet, (1, 1, 1, 1), 16))
registry.ARCHITECTURES.add("mobilenet_v2_x0_5", MobileNetV2Half)


def _first_conv_to(model: nn.Module, in_channels: int, small_input: bool, image_size: int = 32) -> None:
    """Replace the stem for grey inputs and/or small images (torchvision ResNet / RegNet / MobileNet / VGG /
    DenseNet); a VGG for images under 32 px also gets max-pools that round up (see the module docstring)."""
    if isinstance(model, torchvision.models.ResNet):
        if small_input or in_channels != 3:
            stride = 1 if small_input else 2
            k, p = (3, 1) if small_input else (7, 3)
            model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, k, stride, p, bias=False)
        if small_input:
            model.maxpool = nn.Identity()
    elif isinstance(model, torchvision.models.MobileNetV2):
        conv = model.features[0][0]
        stride = getattr(model, "small_input_stem_stride", 1) if small_input else 2
        model.features[0][0] = nn.Conv2d(in_channels, conv.out_channels, 3, stride, 1, bias=False)
    elif isinstance(model, torchvision.models.RegNet):
        conv = model.stem[0]
        model.stem[0] = nn.Conv2d(in_channels, conv.out_channels, 3, 1 if small_input else 2, 1, bias=False)
    elif isinstance(model, torchvision.models.VGG):
        conv = model.features[0]
        model.features[0] = nn.Conv2d(in_channels, conv.out_channels, 3, padding=1)
        pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
        if image_size < 2 ** len(pools):  # floor halving would pool the map away: round up (>= 1 pixel)
            for pool in pools:
                pool.ceil_mode = True
        if small_input:
            model.avgpool = nn.AdaptiveAvgPool2d(1)
            c = [m for m in model.features if isinstance(m, nn.Conv2d)][-1].out_channels  # 512 for VGG-11
            model.classifier = nn.Sequential(nn.Linear(c, c), nn.ReLU(True), nn.Dropout(0.3),
                                             nn.Linear(c, model.classifier[-1].out_features))
    elif isinstance(model, torchvision.models.DenseNet):
        conv = model.features.conv0
        if small_input or in_channels != 3:
            model.features.conv0 = nn.Conv2d(in_channels, conv.out_channels, 3 if small_input else 7,
                                             1 if small_input else 2, 1 if small_input else 3, bias=False)
        if small_input:
            model.features.pool0 = nn.Identity()


def build_classifier(arch: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                     mean=None, std=None, pretrained: bool = False, width: int = 32,
                     zero_init_residual: bool = False) -> nn.Sequential:
    """``Normalize`` followed by the named architecture, ready for ``image_size`` inputs (square images of
    ``image_size`` px; 64 px or less: the small-input stems of the module docstring, and a VGG under 32 px with
    max-pools that round up).

    ``pretrained=True`` loads torchvision's ImageNet weights (a download) and replaces the head;
    it needs 3-channel inputs and keeps the ImageNet stem, so use it with 64 px or larger images.
    ``zero_init_residual=True`` (ResNets trained from scratch) is torchvision's option that starts the last
    BatchNorm of every residual block at zero, so each block starts as the identity (Goyal et al., 2017):
    deep ResNets then train in few steps.
    """
    ctor = registry.ARCHITECTURES.get(arch)
    mean = mean if mean is not None else (0.5,) * in_channels
    std = std if std is not None else (0.5,) * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise ConfigError(f"mean/std need {in_channels} values, got {mean} / {std}.")
    small = image_size <= 64 and not pretrained
    if arch == "cnn":
        net = SmallCNN(num_classes, in_channels, width)
    else:
        weights = "DEFAULT" if pretrained else None
        if pretrained and in_channels != 3:
            raise ConfigError("pretrained ImageNet weights need 3-channel inputs.")
        extra = {}
        if zero_init_residual:
            if not arch.startswith(("resnet", "wide_resnet", "resnext")):
                raise ConfigError(f"zero_init_residual is a ResNet option; {arch!r} has no residual blocks "
                                  "to zero-initialise (use it with resnet18, resnet34, resnet50, ...).")
            if pretrained:
                raise ConfigError("zero_init_residual only affects a network trained from scratch; "
                                  "with pretrained=True the ImageNet weights replace it (pass one or the other).")
            extra["zero_init_residual"] = True
        net = ctor(weights=weights, **extra)
        _first_conv_to(net, in_channels, small, image_size)
        _replace_head(net, num_classes)
    return nn.Sequential(Normalize(mean, std), net)


for _arch in registry.ARCHITECTURES.names():
    registry.ARCHITECTURES.set_maker(_arch, functools.partial(build_classifier, _arch))


def _replace_head(net: nn.Module, num_classes: int) -> None:
    if hasattr(net, "fc") and isinstance(net.fc, nn.Linear):
        net.fc = nn.Linear(net.fc.in_features, num_classes)
    elif hasattr(net, "classifier"):
        head = net.classifier
        if isinstance(head, nn.Linear):
            net.classifier = nn.Linear(head.in_features, num_classes)
        else:
            last = max(i for i, m in enumerate(head) if isinstance(m, nn.Linear))
            head[last] = nn.Linear(head[last].in_features, num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def for_dataset(arch: str, dataset, **kw) -> nn.Sequential:
    """``build_classifier`` with classes, channels, size and normalisation taken from an ImageDataset."""
    c, h, _ = dataset.image_shape
    return build_classifier(arch, dataset.num_classes, c, h, dataset.mean, dataset.std, **kw)
