"""Building models by name (prunetune.models.factory): zoo, torchvision and user factories, names
checked before anything is built, one-tensor outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunetune.errors import ConfigError, UnknownNameError
from prunetune.models.factory import (
    check_single_output,
    create_model,
    user_factory,
    validate_model_name,
)

HERE = __name__  # this module, importable by name: its factories below are user models


def grey_net(in_channels: int, num_classes: int) -> nn.Module:
    """A user factory taking two of the three factory arguments."""
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.Flatten(), nn.LazyLinear(num_classes))


def any_net(**kwargs) -> nn.Module:
    any_net.got = kwargs
    return nn.Sequential(nn.Flatten(), nn.Linear(kwargs["in_channels"] * 8 * 8, 2))


def needs_more(in_channels: int, depth: int) -> nn.Module:
    raise AssertionError("never called: depth is not a factory argument")


def not_a_model(in_channels: int) -> str:
    return "a string"


def two_outputs(num_classes: int) -> nn.Module:
    class Two(nn.Module):
        def forward(self, x):
            return x, x

    return Two()


NOT_CALLABLE = 3


def test_zoo_and_torchvision_names_build_for_the_input():
    model = create_model("tiny_cnn", in_channels=1, num_classes=4, input_size=(8, 8)).eval()
    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 4)
    vision = create_model("torchvision:resnet18", in_channels=1, num_classes=3, input_size=(32, 32))
    assert vision.eval()(torch.zeros(1, 1, 32, 32)).shape == (1, 3)


def test_a_user_factory_gets_the_arguments_it_takes():
    model = create_model(f"{HERE}:grey_net", in_channels=1, num_classes=5, input_size=(8, 8))
    assert model.eval()(torch.zeros(1, 1, 8, 8)).shape == (1, 5)
    create_model(f"{HERE}:any_net", in_channels=1, num_classes=2, input_size=(8, 8))
    assert any_net.got == {"in_channels": 1, "num_classes": 2, "input_size": (8, 8)}


@pytest.mark.parametrize(
    "spec, message",
    [
        ("os.path", "must be package.module:function"),
        ("a-b:c", "must be package.module:function"),
        ("x" * 150 + ":" + "y" * 60, "at most 200 characters"),
        ("no_such_module_xyz:f", "cannot load user model .*ModuleNotFoundError"),
        (f"{HERE}:missing", "cannot load user model .*AttributeError"),
        (f"{HERE}:NOT_CALLABLE", "is a int, not a function"),
        (f"{HERE}:needs_more", "requires depth: a model factory may only require"),
        ("os:system", "requires command"),
    ],
)
def test_bad_user_factories_are_one_line_errors_without_being_called(spec, message):
    with pytest.raises(ConfigError, match=message) as info:
        user_factory(spec)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "name, message",
    [
        (f"{HERE}:not_a_model", "returned str, not a torch.nn.Module"),
        (f"{HERE}:two_outputs", "forward returns a tuple, not one tensor"),
    ],
)
def test_a_user_factory_must_return_a_one_output_module(name, message):
    with pytest.raises(ConfigError, match=message):
        create_model(name, in_channels=1, num_classes=2, input_size=(8, 8))


def test_names_are_checked_without_building():
    validate_model_name("mnist_net")
    validate_model_name("torchvision:resnet18")
    validate_model_name(f"{HERE}:grey_net")
    with pytest.raises(UnknownNameError, match="unknown model 'resnet9'"):
        validate_model_name("resnet9")
    with pytest.raises(UnknownNameError, match="unknown torchvision model 'resnet9'"):
        validate_model_name("torchvision:resnet9")


def test_only_one_tensor_is_a_models_output():
    check_single_output(torch.zeros(1, 3), "m")
    for out in ((torch.zeros(1),), {"logits": torch.zeros(1)}, None):
        with pytest.raises(ConfigError, match=f"m's forward returns a {type(out).__name__}"):
            check_single_output(out, "m")
