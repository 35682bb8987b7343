"""One compression configuration (what a search trial proposes) and the pipeline that applies it.

`compress(base, config, example_input)` = structured `prune` (a copy) -> optional unstructured
magnitude pruning with frozen zeros -> optional k-means weight sharing -> per-layer fake
quantization. The structure of the result depends only on the config, so `artifact.py` can
rebuild it and load saved weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from prunetune.compress.importance import IMPORTANCES
from prunetune.compress.kmeans import KMEANS_BITS, KMEANS_INITS, kmeans_size_bytes, share_weights
from prunetune.compress.prune import check_ratio, prune
from prunetune.compress.quantize import FLOAT_BITS, apply_quantization, check_bits, size_bytes
from prunetune.compress.unstructured import freeze_zeros, global_magnitude_prune, magnitude_prune
from prunetune.errors import ConfigError


@dataclass(frozen=True)
class CompressionConfig:
    """A validated, JSON-able compression configuration (ConfigError on any bad value; layer and
    group names are checked against the model by `compress`).

    ratios: {prunable group: ratio in [0, 1)} (see `inventory`); groups not named keep all channels.
    bits: {Conv2d/Linear layer: weight bits in ALLOWED_BITS}; layers not named stay float.
    importance: registered criterion choosing which channels go (`l2`, `l1`, `taylor`, ...).
    round_to: kept channels are rounded to a multiple of it.
    act_bits: bit-width of the inputs of quantized layers (32 = not quantized).
    unstructured_sparsity: global magnitude pruning to this fraction of zero weights, or None.
    unstructured_q: Han et al.'s per-layer rule, zero |w| < q x std, or None (not both).
    kmeans_bits: k-means weight sharing of every Conv2d/Linear layer with 2^b values, or None;
    excludes `bits` (both would quantize the same weights). kmeans_init: forgy | density | linear.
    """

    ratios: dict[str, float] = field(default_factory=dict)
    bits: dict[str, int] = field(default_factory=dict)
    importance: str = "l2"
    round_to: int = 1
    act_bits: int = 8
    unstructured_sparsity: float | None = None
    unstructured_q: float | None = None
    kmeans_bits: int | None = None
    kmeans_init: str = "linear"

    def __post_init__(self) -> None:
        for name, kind in (("ratios", "pruning ratios"), ("bits", "bit-widths")):
            value = getattr(self, name)
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                raise ConfigError(
                    f"{kind} must be a mapping of layer/group names to values, got {value!r}"
                )
        object.__setattr__(
            self, "ratios", {k: check_ratio(v, f"group {k!r}") for k, v in self.ratios.items()}
        )
        object.__setattr__(
            self, "bits", {k: check_bits(v, f"layer {k!r}") for k, v in self.bits.items()}
        )
        if self.importance not in IMPORTANCES:
            raise ConfigError(
                f"unknown importance criterion {self.importance!r}; known: "
                f"{', '.join(IMPORTANCES.names())}"
            )
        if (
            isinstance(self.round_to, bool)
            or not isinstance(self.round_to, int)
            or self.round_to < 1
        ):
            raise ConfigError(f"round_to must be a positive integer, got {self.round_to!r}")
        check_bits(self.act_bits, "activations")
        if self.unstructured_sparsity is not None and self.unstructured_q is not None:
            raise ConfigError("give unstructured_sparsity or unstructured_q, not both")
        if self.unstructured_sparsity is not None:
            _check_number(self.unstructured_sparsity, "unstructured_sparsity", upper=1.0)
        if self.unstructured_q is not None:
            _check_number(self.unstructured_q, "unstructured_q", upper=math.inf)
        if self.kmeans_bits is not None:
            check_bits(self.kmeans_bits, "k-means weight sharing", KMEANS_BITS)
            if any(b != FLOAT_BITS for b in self.bits.values()):
                raise ConfigError(
                    "kmeans_bits and bits both quantize the weights: give one of them"
                )
        if self.kmeans_init not in KMEANS_INITS:
            raise ConfigError(
                f"unknown k-means init {self.kmeans_init!r}; known: {', '.join(KMEANS_INITS)}"
            )

    def as_dict(self) -> dict:
        """Plain JSON-able dict (round-trips through `from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> CompressionConfig:
        """Build and validate; unknown keys raise ConfigError."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a compression config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - known):
            raise ConfigError(
                f"unknown compression config keys: {', '.join(map(str, unknown))}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(**{k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()})


def _check_number(value: object, what: str, *, upper: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 <= value < upper
    ):
        raise ConfigError(f"{what} must be a number in [0, {upper}), got {value!r}")


def compress(
    base_model: nn.Module,
    config: CompressionConfig,
    example_input: torch.Tensor,
    *,
    data: Iterable | None = None,
    seed: int = 0,
) -> nn.Module:
    """A compressed copy of `base_model` (untouched): pruned with `config.ratios` (criterion
    `config.importance`, which may need `data`), then unstructured pruning with its zeros frozen,
    k-means weight sharing and fake quantization as configured. The result is ready to fine-tune
    and carries `prunetune_report` (see `prune`). ConfigError for names not in the model."""
    model = prune(
        base_model,
        config.ratios,
        example_input,
        importance=config.importance,
        round_to=config.round_to,
        data=data,
        seed=seed,
    )
    if config.unstructured_q is not None:
        magnitude_prune(model, config.unstructured_q)
        freeze_zeros(model)
    elif config.unstructured_sparsity is not None:
        global_magnitude_prune(model, config.unstructured_sparsity)
        freeze_zeros(model)
    if config.kmeans_bits is not None:
        share_weights(model, config.kmeans_bits, init=config.kmeans_init, seed=seed)
    if config.bits:  # also checks the layer names of float (32-bit) entries
        apply_quantization(model, config.bits, act_bits=config.act_bits)
    return model


def compressed_size_bytes(model: nn.Module, config: CompressionConfig) -> int:
    """Storage of a model compressed with `config` at its true bit-widths: k-means indices and
    codebooks if `kmeans_bits`, else the packed `bits` (see size_bytes). Zeros of unstructured
    pruning are stored densely (no sparse-format credit)."""
    if config.kmeans_bits is not None:
        return kmeans_size_bytes(model, config.kmeans_bits)
    return size_bytes(model, config.bits)
