"""The model zoo: plain factory functions named after what they build.

Every factory takes (in_channels, num_classes, input_size) so one zoo serves 1x8x8 digits, 1x28x28
MNIST and 3x32x32 CIFAR. torchvision builders are adapted to small inputs (see each docstring).
"""

from __future__ import annotations

import math

import torch
import torchvision
from torch import nn

from prunetune.models.registry import register_model


def _flat_features(features: nn.Module, in_channels: int, input_size: tuple[int, int]) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, in_channels, *input_size)).numel())


@register_model
def mnist_net(in_channels: int, num_classes: int, input_size: tuple[int, int]) -> nn.Module:
    """The "Net" of the classic MNIST filter-pruning write-up: two 3x3 convs (16, 32 filters, no
    pooling) and a 1024-unit hidden layer. 29,425,920 MACs and 25,706,186 params at 1x28x28."""
    h, w = input_size
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * h * w, 1024),
        nn.ReLU(),
        nn.Linear(1024, num_classes),
    )


@register_model
def lenet5(in_channels: int, num_classes: int, input_size: tuple[int, int]) -> nn.Module:
    """
    LeNet-5 (6 and 16 5x5 filters, 120-84 hidden units); the first conv pads by 2 as for MNIST.
    """
    features = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2 if min(input_size) < 16 else 0),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    n = _flat_features(features, in_channels, input_size)
    return nn.Sequential(
        *features,
        nn.Linear(n, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


@register_model
def lenet300_100(in_channels: int, num_classes: int, input_size: tuple[int, int]) -> nn.Module:
    """LeNet-300-100, the fully connected net of Deep Compression (hidden units are prunable)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * input_size[0] * input_size[1], 300),
        nn.ReLU(),
        nn.Linear(300, 100),
        nn.ReLU(),
        nn.Linear(100, num_classes),
    )


@register_model
def cifar_cnn(in_channels: int, num_classes: int, input_size: tuple[int, int]) -> nn.Module:
    """
    A small VGG-style CIFAR CNN: 32-32-pool-64-64-pool convs with batch norm, 256 hidden units.
    """

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    features = nn.Sequential(
        *block(in_channels, 32),
        *block(32, 32),
        nn.MaxPool2d(2),
        *block(32, 64),
        *block(64, 64),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    n = _flat_features(features, in_channels, input_size)
    return nn.Sequential(*features, nn.Linear(n, 256), nn.ReLU(), nn.Linear(256, num_classes))


def _is_small(input_size: tuple[int, int]) -> bool:
    return min(input_size) < 100


def _replace_first_conv(
    model: nn.Module, in_channels: int, *, stride: int | None = None, kernel: int | None = None
) -> None:
    """Swap the first Conv2d for one with `in_channels` inputs (and optionally a smaller stem)."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                k = kernel or child.kernel_size[0]
                new = nn.Conv2d(
                    in_channels,
                    child.out_channels,
                    k,
                    stride=stride or child.stride,
                    padding=k // 2 if kernel else child.padding,
                    bias=child.bias is not None,
                )
                setattr(parent, name, new)
                return
    raise ValueError("model has no Conv2d to adapt")


@register_model
def resnet18(in_channels: int, num_classes: int, input_size: tuple[int, int]) -> nn.Module:
    """torchvision ResNet-18. For inputs under 100 px the 7x7/2 stem becomes 3x3/1 (the max-pool is
    kept), so 28-32 px images end at 2x2 after layer4 instead of vanishing."""
    m = torchvision.models.resnet18(num_classes=num_classes)
    if _is_small(input_size):
        _replace_first_conv(m, in_channels, stride=1, kernel=3)
    elif in_channels != 3:
        _replace_first_conv(m, in_channels)
    return m


@register_model
def mobilenet_v2(in_channels: int, num_classes: int, input_size: tuple[int, int]) -> nn.Module:
    """torchvision MobileNetV2; for inputs under 100 px the stem stride is 1 (32 px ends at 2x2)."""
    m = torchvision.models.mobilenet_v2(num_classes=num_classes)
    if _is_small(input_size) or in_channels != 3:
        _replace_first_conv(m, in_channels, stride=1 if _is_small(input_size) else None)
    return m


@register_model
def vgg16_bn(in_channels: int, num_classes: int, input_size: tuple[int, int]) -> nn.Module:
    """torchvision VGG16-BN. For small inputs: max-pools that would shrink the map below 1x1 are
    dropped, and the 4096-wide classifier becomes global pooling + 512-512-classes."""
    m = torchvision.models.vgg16_bn(num_classes=num_classes)
    if in_channels != 3:
        _replace_first_conv(m, in_channels)
    if _is_small(input_size):
        allowed = int(math.log2(min(input_size)))
        layers, pools = [], 0
        for layer in m.features:
            if isinstance(layer, nn.MaxPool2d):
                pools += 1
                if pools > allowed:
                    continue
            layers.append(layer)
        m.features = nn.Sequential(*layers)
        m.avgpool = nn.AdaptiveAvgPool2d(1)
        m.classifier = nn.Sequential(
            nn.Linear(512, 512), nn.ReLU(True), nn.Dropout(0.5), nn.Linear(512, num_classes)
        )
    return m


def torchvision_model(
    name: str, in_channels: int, num_classes: int, input_size: tuple[int, int]
) -> nn.Module:
    """Any torchvision classification builder by name, untrained, first conv adapted to
    `in_channels`; no other change (pick inputs large enough for its down-sampling). The name is
    not checked here: `factory.create_model` validates `torchvision:NAME` first."""
    m = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if in_channels != 3:
        _replace_first_conv(m, in_channels)
    return m


@register_model
def tiny_cnn(in_channels: int, num_classes: int, input_size: tuple[int, int]) -> nn.Module:
    """A two-conv net with batch norm and pooling (8 and 16 filters): for fast tests and demos."""
    features = nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    n = _flat_features(features, in_channels, input_size)
    return nn.Sequential(*features, nn.Linear(n, 32), nn.ReLU(), nn.Linear(32, num_classes))
