"""Model registry: `create_model(name, in_channels=, num_classes=, input_size=)`.

Names: a registered zoo factory (`prunetune models` lists them), `torchvision:NAME` for any
torchvision classification builder (untrained, first conv adapted to the channel count),
`timm:NAME` for any timm architecture (untrained; needs the optional `timm` package), or
`package.module:function` for a user's own factory (imported only when written that way; files
never name one on their own authority, see `is_user_model`).
"""
from __future__ import annotations

import importlib
import inspect
from typing import Callable

from torch import nn

from prunetune.errors import ConfigError, UnknownNameError
from prunetune.registry import Registry

ModelFactory = Callable[..., nn.Module]
LIBRARY_PREFIXES = ("torchvision:", "timm:")
MODELS: Registry[ModelFactory] = Registry("model")


def register_model(fn: ModelFactory) -> ModelFactory:
    """Register a zoo factory `fn(in_channels, num_classes, input_size) -> nn.Module` by its name."""
    return MODELS.register(fn.__name__)(fn)


def create_model(name: str, *, in_channels: int, num_classes: int,
                 input_size: tuple[int, int]) -> nn.Module:
    """Build an untrained model for inputs of shape (in_channels, *input_size)."""
    if name.startswith("torchvision:"):
        from prunetune.models.zoo import torchvision_model

        return torchvision_model(name.split(":", 1)[1], in_channels, num_classes, input_size)
    if name.startswith("timm:"):
        validate_model_name(name)
        import timm

        return timm.create_model(name.split(":", 1)[1], pretrained=False, num_classes=num_classes,
                                 in_chans=in_channels)
    if is_user_model(name):
        return _user_model(name, in_channels, num_classes, input_size)
    return MODELS.get(name)(in_channels=in_channels, num_classes=num_classes, input_size=input_size)


def is_user_model(name: str) -> bool:
    """True for a `package.module:function` name: building it imports and runs that code."""
    return ":" in name and not name.startswith(LIBRARY_PREFIXES)


def _user_model(spec: str, in_channels: int, num_classes: int, input_size: tuple[int, int]) -> nn.Module:
    module_name, _, fn_name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load user model {spec!r}: {exc}") from None
    offered = {"in_channels": in_channels, "num_classes": num_classes, "input_size": input_size}
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    model = fn(**{k: v for k, v in offered.items() if takes_any or k in params})
    if not isinstance(model, nn.Module):
        raise ConfigError(f"user model {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def model_names() -> list[str]:
    return MODELS.names()


def validate_model_name(name: str) -> None:
    """Raise a clear error for a name that cannot be built (without building it)."""
    if name.startswith("torchvision:"):
        import torchvision

        known = torchvision.models.list_models(module=torchvision.models)
        if name.split(":", 1)[1] not in known:
            raise UnknownNameError("torchvision model", name.split(":", 1)[1], known)
    elif name.startswith("timm:"):
        try:
            import timm
        except ImportError:
            raise ConfigError(f"{name!r} needs the timm package (pip install timm)") from None
        if not timm.is_model(name.split(":", 1)[1]):
            raise UnknownNameError("timm model", name.split(":", 1)[1], timm.list_models())
    elif ":" not in name:
        MODELS.get(name)
