"""A model's effective float weights (`materialize`): what every runtime runs and every export
writes (weight fake-quant baked in, simulation hooks dropped)."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune


def materialize(model: nn.Module) -> nn.Module:
    """A deep copy of `model` in eval mode that computes with its effective float weights only.

    On the copy (the original is never modified):
    - every torch parametrization (e.g. weight fake-quant) is removed with its current value left
      in place (`remove_parametrizations(..., leave_parametrized=True)`);
    - torch.nn.utils.prune reparametrizations are made permanent (weight = orig x mask);
    - all forward pre-hooks and forward hooks are dropped (activation fake-quant and observers);
    - torch.ao FakeQuantize / observer submodules are replaced by nn.Identity.
    """
    copied = copy.deepcopy(model).eval()
    for module in list(copied.modules()):
        if parametrize.is_parametrized(module):
            # deepcopy shares the dynamically injected Parametrized* class with the original and
            # remove_parametrizations deletes the property from that class: give the copy its own.
            cls = type(module)
            module.__class__ = type(
                cls.__name__,
                cls.__bases__,
                {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")},
            )
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
        module._forward_pre_hooks.clear()
        module._forward_hooks.clear()
        for name, child in list(module.named_children()):
            if isinstance(
                child, (torch.ao.quantization.FakeQuantizeBase, torch.ao.quantization.ObserverBase)
            ):
                setattr(module, name, nn.Identity())
    return copied
