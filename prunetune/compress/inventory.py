"""What can be compressed in a model: its prunable channel groups and its quantizable layers.

The inventory is what a search space is derived from: one pruning ratio per group, one bit-width
per quantizable layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from prunetune.compress.graph import ROOT_TYPES, analyse, tied_layers
from prunetune.measure import count_macs


@dataclass(frozen=True)
class PrunableGroup:
    """Channels that are removed together.

    name: module name of the group's root layer (its first conv/linear in module order), the key
    for `prune(ratios={name: ...})`. channels: output channels of the root. divisor: kept channels
    are a multiple of it (grouped convolutions; else 1). layers: every named layer the group
    touches (outputs or inputs: convs, linears, batch norms). kind: "conv", "linear", "residual"
    (several layers coupled by element-wise ops such as residual adds), "depthwise-coupled" or
    "grouped". macs_share: fraction of the model's MACs in the conv/linear layers the group
    touches, i.e. the MACs that shrink when it is pruned (shares overlap and do not sum to 1)."""

    name: str
    kind: str
    channels: int
    macs_share: float
    layers: tuple[str, ...]
    divisor: int = 1


@dataclass(frozen=True)
class QuantLayer:
    """A Conv2d or Linear layer that can get its own weight bit-width. kind: "conv",
    "depthwise", "grouped" or "linear"; params: weights + bias; macs: per image."""

    name: str
    kind: str
    params: int
    macs: int


@dataclass(frozen=True)
class Inventory:
    """Prunable groups (module order), quantizable layers, and the conv/linear layers left
    unpruned with the reason (e.g. the classifier: "produces the model output"; layers with tied
    weights: pruning or a bit-width of their own would untie them, so they are neither pruned
    nor quantizable)."""

    groups: list[PrunableGroup]
    quant_layers: list[QuantLayer]
    skipped: list[tuple[str, str]]
    total_macs: int

    def group(self, name: str) -> PrunableGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)


def inventory(model: nn.Module, example_input: torch.Tensor) -> Inventory:
    """Analyse `model` on `example_input` (a batch, e.g. torch.zeros(1, C, H, W)). The model is
    traced in eval mode and left in the mode it was in; nothing else changes."""
    analysis = analyse(model, example_input)
    macs = layer_macs(model, example_input)
    total = count_macs(model, example_input)
    groups = [
        PrunableGroup(
            g.name,
            g.kind,
            g.channels,
            sum(macs.get(layer, 0) for layer in g.layers) / total if total else 0.0,
            g.layers,
            g.divisor,
        )
        for g in analysis.prunable
    ]
    tied = tied_layers(model)  # kept float: a bit-width of their own would untie them
    quant = [
        QuantLayer(name, _layer_kind(m), sum(p.numel() for p in m.parameters()), macs.get(name, 0))
        for name, m in model.named_modules()
        if isinstance(m, ROOT_TYPES) and name not in tied
    ]
    return Inventory(groups, quant, list(analysis.skipped), int(total))


@torch.no_grad()
def layer_macs(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """MACs per image of every Conv2d/Linear layer (summed over calls), from the output shapes of
    one eval-mode forward pass: conv = outputs x in_channels/groups x kernel area; linear =
    outputs x in_features."""
    macs: dict[str, int] = {}
    batch = example_input.shape[0]

    def hook(name: str):
        def record(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            per_output = (
                module.in_features
                if isinstance(module, nn.Linear)
                else module.in_channels
                // module.groups
                * module.kernel_size[0]
                * module.kernel_size[1]
            )
            macs[name] = macs.get(name, 0) + out.numel() // batch * per_output

        return record

    handles = [
        m.register_forward_hook(hook(n))
        for n, m in model.named_modules()
        if isinstance(m, ROOT_TYPES)
    ]
    was_training = model.training
    try:
        model.eval()
        model(example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return macs


def _layer_kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    if module.groups == 1:
        return "conv"
    return "depthwise" if module.groups == module.in_channels == module.out_channels else "grouped"
