"""The model registry (prunetune.models.registry): zoo names and the name forms."""

from __future__ import annotations

import pytest

from prunetune.models.registry import MODELS, is_user_model, model_names


def test_the_zoo_registers_its_factories_by_name():
    import prunetune.models.zoo  # noqa: F401 - registers the zoo

    assert {"mnist_net", "lenet5", "tiny_cnn", "resnet18", "vgg16_bn"} <= set(model_names())
    assert model_names() == sorted(model_names()) and MODELS.get("tiny_cnn").__name__ == "tiny_cnn"


@pytest.mark.parametrize(
    "name, user",
    [
        ("mypkg.nets:build", True),
        ("build:net", True),
        ("torchvision:resnet18", False),
        ("timm:resnet18", False),
        ("mnist_net", False),
    ],
)
def test_only_package_function_names_are_user_models(name, user):
    assert is_user_model(name) is user
