"""Model factory: `create_model(name, in_channels=, num_classes=, input_size=)`.

Names: a registered zoo factory (`prunetune models` lists them), `torchvision:NAME` for any
torchvision classification builder (untrained, first conv adapted to the channel count),
`timm:NAME` for any timm architecture (untrained; needs the optional `timm` package), or
`package.module:function` for a user's own factory (imported only when written that way; files
never name one on their own authority, see `registry.is_user_model`). This module sits above the
leaf registry and the zoo (importing it registers the zoo).
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Callable

from torch import nn

from prunetune.errors import ConfigError, UnknownNameError
from prunetune.models import zoo
from prunetune.models.registry import MODELS, is_user_model

USER_MODEL = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
MAX_MODEL_NAME = 200
FACTORY_ARGS = ("in_channels", "num_classes", "input_size")


def create_model(
    name: str, *, in_channels: int, num_classes: int, input_size: tuple[int, int]
) -> nn.Module:
    """Build an untrained model for inputs of shape (in_channels, *input_size)."""
    if name.startswith("torchvision:"):
        validate_model_name(name)
        return zoo.torchvision_model(name.split(":", 1)[1], in_channels, num_classes, input_size)
    if name.startswith("timm:"):
        validate_model_name(name)
        import timm

        return timm.create_model(
            name.split(":", 1)[1], pretrained=False, num_classes=num_classes, in_chans=in_channels
        )
    if is_user_model(name):
        return _user_model(name, in_channels, num_classes, input_size)
    return MODELS.get(name)(in_channels=in_channels, num_classes=num_classes, input_size=input_size)


def user_factory(spec: str) -> Callable[..., object]:
    """The function named by `package.module:function`, imported but not called. ConfigError (one
    line) unless the spec is a dotted module path and an identifier, the module imports, and the
    attribute is a callable whose required parameters are all among FACTORY_ARGS (so a function
    such as os:system or builtins:eval, which needs other arguments, is never called)."""
    if len(spec) > MAX_MODEL_NAME or USER_MODEL.fullmatch(spec) is None:
        shown = repr(spec) if len(spec) <= 80 else repr(spec[:80]) + "..."
        raise ConfigError(
            f"user model {shown} must be package.module:function (dotted identifiers, "
            f"at most {MAX_MODEL_NAME} characters)"
        )
    module_name, _, fn_name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
    except Exception as exc:  # ImportError, AttributeError, or whatever the module raises on import
        raise ConfigError(f"cannot load user model {spec!r}: {_one_line(exc)}") from None
    if not callable(fn):
        raise ConfigError(f"user model {spec!r} is a {type(fn).__name__}, not a function")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        raise ConfigError(
            f"user model {spec!r}: cannot read its parameters; name a Python function"
        ) from None
    required = [
        n
        for n, p in params.items()
        if p.default is p.empty
        and n not in FACTORY_ARGS
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise ConfigError(
            f"user model {spec!r} requires {', '.join(required)}: a model factory may only "
            f"require {', '.join(FACTORY_ARGS)}"
        )
    return fn


def _user_model(
    spec: str, in_channels: int, num_classes: int, input_size: tuple[int, int]
) -> nn.Module:
    """Call the user's factory with the FACTORY_ARGS it takes; ConfigError (one line) when it
    raises or exits, or returns anything but a torch.nn.Module."""
    fn = user_factory(spec)
    offered = {"in_channels": in_channels, "num_classes": num_classes, "input_size": input_size}
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    try:
        model = fn(**{k: v for k, v in offered.items() if takes_any or k in params})
    except (Exception, SystemExit) as exc:
        raise ConfigError(f"user model {spec!r} raised {_one_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"user model {spec!r} returned {type(model).__name__}, not a torch.nn.Module"
        )
    _check_forward(model, (1, in_channels, *input_size), f"user model {spec!r}")
    return model


def _check_forward(model: nn.Module, shape: tuple[int, ...], what: str) -> None:
    """One forward pass of `model` (eval mode, no gradients, its mode restored) on zeros of
    `shape`: ConfigError, one line, when it raises or returns anything but one tensor."""
    import torch

    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(shape))
    except Exception as exc:  # noqa: BLE001 - the user's model: one line
        raise ConfigError(f"{what} fails on an input of shape {shape}: {_one_line(exc)}") from None
    finally:
        model.train(was_training)
    check_single_output(out, what)


def check_single_output(out: object, what: str) -> None:
    """ConfigError, one line, unless a model's forward returned one tensor: prunetune counts,
    prunes, scores, times and exports a model whose output is its class scores. A tuple or dict
    (auxiliary heads, HuggingFace-style outputs) is refused rather than guessed at."""
    import torch

    if isinstance(out, torch.Tensor):
        return
    raise ConfigError(
        f"{what}'s forward returns a {type(out).__name__}, not one tensor: "
        f"prunetune needs "
        "a model whose forward returns its class scores as one tensor; wrap it so "
        "that "
        "forward returns that tensor (e.g. out[0] or out['logits'])"
    )


def _one_line(exc: BaseException) -> str:
    """`Type: first line of the message` (at most 200 characters of it)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


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
    elif ":" in name:
        user_factory(name)
    else:
        MODELS.get(name)
