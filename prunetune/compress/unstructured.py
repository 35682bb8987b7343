"""Unstructured (weight-level) magnitude pruning: the first stage of Deep Compression (Han et al.).

It zeroes individual weights of Conv2d/Linear layers. This shrinks STORAGE only (in a sparse
format, or with k-means weight sharing on top); it does NOT reduce FLOPs, MACs or dense-runtime
latency/FPS, because a dense kernel still multiplies the zeros. For speed, use structured `prune`.

Call order: zero weights (`magnitude_prune`, q x std per layer, or `global_magnitude_prune` to a
target sparsity), then `freeze_zeros` before fine-tuning so the zeros stay zeros. Both pruning
functions can run again on a frozen model (Han's iterative prune / retrain loop): the masks then
grow with the new zeros.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from prunetune.compress.quantize import quant_layers
from prunetune.errors import ConfigError


class ZeroMask(nn.Module):
    """Parametrization `weight * mask`: masked weights read as zero and get zero gradient, so no
    optimizer step (momentum, weight decay) can revive them. The mask is a bool buffer, saved and
    loaded with the state_dict."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.bool())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def magnitude_prune(model: nn.Module, q: float | Mapping[str, float]) -> dict[str, float]:
    """Han et al.'s rule: in each layer, zero every weight with |w| < q x std(layer's weights).
    q: one value for every Conv2d/Linear layer, or {layer: q} for some. IN PLACE. For Gaussian
    weights q = 1 zeroes about 68 %. Returns {layer: fraction of zero weights afterwards}."""
    layers = quant_layers(model)
    targets = dict.fromkeys(layers, q) if not isinstance(q, Mapping) else dict(q)
    for name, value in targets.items():
        if name not in layers:
            raise ConfigError(
                f"unknown layer {name!r} for magnitude pruning; layers: {', '.join(layers)}"
            )
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise ConfigError(
                f"magnitude-pruning q for layer {name!r} must be a number >= 0, got {value!r}"
            )
    for name, value in targets.items():
        weight = layers[name].weight.detach()
        _zero(name, layers[name], weight.abs() >= value * weight.std())
    return {name: _zero_fraction(layers[name]) for name in targets}


def global_magnitude_prune(model: nn.Module, sparsity: float) -> dict[str, float]:
    """Global L1 unstructured pruning: zero the round(sparsity x N) weights of smallest |w| among
    all N weights of all Conv2d/Linear layers together (existing zeros count), so layers with
    small weights lose more. sparsity in [0, 1). IN PLACE. Returns {layer: zero fraction}."""
    if (
        isinstance(sparsity, bool)
        or not isinstance(sparsity, (int, float))
        or not 0 <= sparsity < 1
    ):
        raise ConfigError(f"unstructured sparsity must be a number in [0, 1), got {sparsity!r}")
    layers = quant_layers(model)
    magnitudes = [layer.weight.detach().abs().flatten() for layer in layers.values()]
    flat = torch.cat(magnitudes)
    k = round(sparsity * flat.numel())
    if k > 0:
        threshold = flat.kthvalue(k).values
        drop = flat < threshold
        ties = torch.nonzero(flat == threshold).flatten()[: k - int(drop.sum())]
        drop[ties] = True
        for (name, layer), part in zip(
            layers.items(), torch.split(drop, [m.numel() for m in magnitudes])
        ):
            _zero(name, layer, ~part.view_as(layer.weight))
    return {name: _zero_fraction(layer) for name, layer in layers.items()}


def freeze_zeros(model: nn.Module) -> nn.Module:
    """Keep the zero weights of every Conv2d/Linear layer at zero from now on (a ZeroMask
    parametrization; layers already masked keep theirs). IN PLACE; returns the model. Call it
    before fine-tuning a magnitude-pruned model and before quantization or k-means."""
    for name, layer in quant_layers(model).items():
        if _mask_of(name, layer) is None:
            keep = layer.weight.detach() != 0
            parametrize.register_parametrization(layer, "weight", ZeroMask(keep))
    return model


def sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of zero weights of every Conv2d/Linear layer (as the layer computes its weight)."""
    return {name: _zero_fraction(layer) for name, layer in quant_layers(model).items()}


def _mask_of(name: str, layer: nn.Module) -> ZeroMask | None:
    """The layer's ZeroMask, None if its weight is plain; ConfigError if it is quantized or
    weight-shared (unstructured pruning comes before those)."""
    if not parametrize.is_parametrized(layer, "weight"):
        return None
    chain = list(layer.parametrizations.weight)
    if len(chain) == 1 and isinstance(chain[0], ZeroMask):
        return chain[0]
    raise ConfigError(
        f"layer {name!r} is already quantized or weight-shared: apply unstructured "
        f"pruning before quantization and k-means"
    )


@torch.no_grad()
def _zero(name: str, layer: nn.Module, keep: torch.Tensor) -> None:
    mask = _mask_of(name, layer)
    if mask is None:
        layer.weight.mul_(keep)
    else:
        layer.parametrizations.weight.original.mul_(keep)
        mask.mask &= keep


@torch.no_grad()
def _zero_fraction(layer: nn.Module) -> float:
    weight = layer.weight
    return float((weight == 0).sum()) / weight.numel()
