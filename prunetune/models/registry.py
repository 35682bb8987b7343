"""The model registry, a leaf: zoo names -> factories, and the name forms (no model code here).

Names: a registered zoo factory (`prunetune models` lists them), `torchvision:NAME`, `timm:NAME`,
or `package.module:function` for a user's own factory. Building any of them is
`prunetune.models.factory.create_model`, the module above this one and the zoo.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from prunetune.registry import Registry

ModelFactory = Callable[..., nn.Module]
LIBRARY_PREFIXES = ("torchvision:", "timm:")
MODELS: Registry[ModelFactory] = Registry("model")


def register_model(fn: ModelFactory) -> ModelFactory:
    """Register a zoo factory `fn(in_channels, num_classes, input_size) -> nn.Module` by its
    name."""
    return MODELS.register(fn.__name__)(fn)


def is_user_model(name: str) -> bool:
    """True for a `package.module:function` name: building it imports and runs that code."""
    return ":" in name and not name.startswith(LIBRARY_PREFIXES)


def model_names() -> list[str]:
    """The registered zoo names, sorted."""
    return MODELS.names()
