"""K-means weight sharing: the second stage of Deep Compression (Han et al. 2016).

The weights of each Conv2d/Linear layer are clustered into 2^b shared values (a codebook of
float32 centroids) and stored as b-bit indices. This shrinks STORAGE only; it does NOT reduce
FLOPs, MACs or dense-runtime latency/FPS: the layer still runs a dense float convolution.

Initialisations (Han et al. compare them): `forgy` (random weights of the layer), `density`
(the weights' quantiles at (i + 0.5) / k: centroids crowd where weights are dense) and `linear`
(evenly spaced between min and max; keeps the few large weights best, their recommendation).

Call order: (unstructured pruning + `freeze_zeros`, optional) -> `share_weights` -> fine-tune
(each centroid receives the summed gradient of its weights, as in the paper; masked zeros stay
zero and are not clustered) -> `kmeans_size_bytes`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from prunetune.compress.quantize import FLOAT_BITS, packed_size_bytes, quant_layers, resolve_bits
from prunetune.compress.unstructured import ZeroMask
from prunetune.errors import ConfigError

KMEANS_INITS = ("forgy", "density", "linear")
KMEANS_BITS = (1, 2, 3, 4, 5, 6, 7, 8)


def kmeans_1d(
    values: torch.Tensor, k: int, *, init: str = "linear", iters: int = 30, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's algorithm on the flattened `values`: (centroids, labels) with exactly k ascending
    centroids (duplicates or unused ones when there are fewer distinct values) and int64 labels
    in [0, k), shaped like `values`. Each used centroid is the mean of its values. In 1-D the
    nearest centroid is found by bisection on the midpoints, so a pass costs O(n log k)."""
    if init not in KMEANS_INITS:
        raise ConfigError(f"unknown k-means init {init!r}; known: {', '.join(KMEANS_INITS)}")
    flat = values.detach().flatten().float()
    if flat.numel() == 0:
        return torch.zeros(k), torch.zeros(values.shape, dtype=torch.long)
    ordered = flat.sort().values
    if init == "linear":
        centroids = torch.linspace(float(ordered[0]), float(ordered[-1]), k)
    elif init == "density":
        quantiles = (torch.arange(k, dtype=torch.float32) + 0.5) / k
        centroids = ordered[(quantiles * (flat.numel() - 1)).round().long()]
    else:
        picks = flat[
            torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(seed))[:k]
        ]
        centroids = torch.cat([picks, picks[-1:].expand(k - picks.numel())])
    centroids = centroids.sort().values
    for _ in range(iters):
        labels = torch.bucketize(flat, (centroids[1:] + centroids[:-1]) / 2)
        updated = _means(flat, labels, centroids)
        if torch.equal(updated, centroids):
            break
        centroids = updated.sort().values
    labels = torch.bucketize(flat, (centroids[1:] + centroids[:-1]) / 2)
    return _means(flat, labels, centroids), labels.view(values.shape)


def _means(flat: torch.Tensor, labels: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    k = fallback.numel()
    sums = torch.zeros(k, dtype=flat.dtype).index_add_(0, labels, flat)
    counts = torch.bincount(labels, minlength=k)
    return torch.where(counts > 0, sums / counts.clamp_min(1), fallback)


class SharedWeights(nn.Module):
    """Parametrization codebook -> codebook[labels] (x mask). The layer's stored parameter becomes
    the codebook (2^b floats, `<layer>.parametrizations.weight.original`); labels (uint8) and the
    optional zero mask are buffers. right_inverse maps a weight to the mean of each cluster."""

    def __init__(self, labels: torch.Tensor, mask: torch.Tensor | None, size: int) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("labels", labels.to(torch.uint8))
        self.register_buffer("mask", None if mask is None else mask.bool())

    def forward(self, codebook: torch.Tensor) -> torch.Tensor:
        weight = codebook[self.labels.long()]
        return weight if self.mask is None else weight * self.mask

    @torch.no_grad()
    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        labels = self.labels.long().flatten()
        values = weight.flatten()
        if self.mask is not None:
            keep = self.mask.flatten()
            labels, values = labels[keep], values[keep]
        return _means(values, labels, torch.zeros(self.size, dtype=weight.dtype))


def share_weights(
    model: nn.Module,
    bits: int | Mapping[str, int],
    *,
    init: str = "linear",
    iters: int = 30,
    seed: int = 0,
) -> nn.Module:
    """Cluster the weights of each Conv2d/Linear layer into 2^b shared values (bits: one int for
    every layer, or {layer: b} for some; b in 1..8, 32 = leave the layer alone). IN PLACE; returns
    the model. A layer with frozen zeros (unstructured.freeze_zeros) clusters only its nonzero
    weights and keeps its zeros, so it holds at most 2^b nonzero values; otherwise at most 2^b
    values. ConfigError for quantized or already shared layers."""
    if init not in KMEANS_INITS:
        raise ConfigError(f"unknown k-means init {init!r}; known: {', '.join(KMEANS_INITS)}")
    layers = quant_layers(model)
    plan = {
        n: b
        for n, b in resolve_bits(model, bits, KMEANS_BITS + (FLOAT_BITS,)).items()
        if b != FLOAT_BITS
    }
    masks = {name: _zero_mask(name, layers[name]) for name in plan}
    for name, b in plan.items():
        layer, mask = layers[name], masks[name]
        if mask is not None:
            _remove_mask(layer)
        weight = layer.weight.detach()
        _, labels = kmeans_1d(
            weight if mask is None else weight[mask], 2**b, init=init, iters=iters, seed=seed
        )
        full = torch.zeros(weight.shape, dtype=torch.long)
        full[... if mask is None else mask] = labels
        parametrize.register_parametrization(
            layer, "weight", SharedWeights(full, mask, 2**b), unsafe=True
        )
    return model


def _remove_mask(layer: nn.Module) -> None:
    """Drop the layer's ZeroMask, leaving the masked weight. A deep copy shares torch's injected
    Parametrized* class with its original and removal deletes the weight property from that
    class, which would break the original: so the layer first gets a class of its own."""
    cls = type(layer)
    layer.__class__ = type(
        cls.__name__,
        cls.__bases__,
        {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")},
    )
    parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)


def _zero_mask(name: str, layer: nn.Module) -> torch.Tensor | None:
    if not parametrize.is_parametrized(layer, "weight"):
        return None
    chain = list(layer.parametrizations.weight)
    if len(chain) == 1 and isinstance(chain[0], ZeroMask):
        return chain[0].mask.clone()
    raise ConfigError(f"layer {name!r} is already quantized or weight-shared")


def kmeans_size_bytes(model: nn.Module, bits: int | Mapping[str, int]) -> int:
    """Storage with k-means weight sharing at `bits` (as for `share_weights`):

        shared layer (b <= 8): ceil(weight.numel() * b / 8) index bytes + 4 * 2^b (fp32 codebook)
                               + 4 * bias.numel()
        everything else:       4 bytes per floating-point element (see quantize.packed_size_bytes)

    Indices are counted dense (one per weight, zeros included): Han et al.'s sparse format with
    relative indices would be smaller for heavily pruned layers."""
    resolved = resolve_bits(model, bits, KMEANS_BITS + (FLOAT_BITS,))

    def layer_bytes(name: str, weight: torch.Tensor) -> int | None:
        b = resolved[name]
        return None if b == FLOAT_BITS else math.ceil(weight.numel() * b / 8) + 4 * 2**b

    return packed_size_bytes(model, layer_bytes)
