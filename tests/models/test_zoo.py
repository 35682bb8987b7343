"""The model zoo (prunetune.models.zoo): every factory builds for small grey and colour inputs,
with the documented sizes."""

from __future__ import annotations

import pytest
import torch

from prunetune.measure import count_macs
from prunetune.models.registry import MODELS, model_names
from prunetune.models.zoo import mnist_net, torchvision_model

SMALL = ("mnist_net", "lenet5", "lenet300_100", "cifar_cnn", "tiny_cnn")


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_small_nets_build_for_grey_and_colour_inputs(name, shape):
    model = MODELS.get(name)(in_channels=shape[0], num_classes=7, input_size=shape[1:]).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, *shape)).shape == (2, 7)


def test_every_registered_name_is_tested_or_a_torchvision_adaptation():
    assert set(model_names()) == {*SMALL, "resnet18", "mobilenet_v2", "vgg16_bn"}


def test_mnist_net_has_the_documented_size():
    model = mnist_net(1, 10, (28, 28))
    assert sum(p.numel() for p in model.parameters()) == 25_706_186
    assert count_macs(model, torch.zeros(1, 1, 28, 28)) == 29_425_920


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "vgg16_bn"])
def test_torchvision_nets_take_one_channel_small_inputs(name):
    model = MODELS.get(name)(in_channels=1, num_classes=10, input_size=(16, 16)).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 16, 16)).shape == (1, 10)


def test_any_torchvision_builder_gets_its_first_conv_adapted():
    model = torchvision_model("squeezenet1_0", 1, 5, (64, 64)).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 5)
