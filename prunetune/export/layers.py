"""The Conv2d/Linear layers of an export: which run int8 in an --int8 file, and the card's
per-layer table (channels kept, weight bits, how the file runs each)."""

from __future__ import annotations

from torch import nn

from prunetune.compress import CompressionConfig
from prunetune.errors import PrunetuneError
from prunetune.export.card import Layer
from prunetune.runtimes import INT8_BITS
from prunetune.search.records import TrialRecord


def runs_int8(layer: str, bits: dict[str, int], int8: bool) -> bool:
    """Whether an --int8 export runs `layer` int8: as on the search's onnxruntime-int8 runtime,
    every Conv2d/Linear layer at <= 8 bits or not named in the trial's `bits`; layers above stay
    float."""
    return int8 and bits.get(layer, INT8_BITS) <= INT8_BITS


def _weighted(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def _width(module: nn.Module) -> int:
    return getattr(module, "out_channels", getattr(module, "out_features", 0))


def layer_rows(
    base: nn.Module, compressed: nn.Module, bits: dict[str, int], *, int8: bool
) -> list[Layer]:
    """Per Conv2d/Linear layer: output channels of the base and of the compressed model, the trial's
    weight bits (32 = float) and how the exported file runs it (int8 | float32)."""
    widths = {n: _width(m) for n, m in _weighted(base).items()}
    return [
        Layer(
            layer=n,
            type=type(m).__name__,
            base_channels=widths.get(n),
            kept_channels=_width(m),
            bits=bits.get(n, 32),
            runs_as="int8" if runs_int8(n, bits, int8) else "float32",
        )
        for n, m in _weighted(compressed).items()
    ]


def check_int8(model: nn.Module, config: CompressionConfig, rec: TrialRecord, int8: bool) -> None:
    """PrunetuneError for --int8 on a trial whose layers are all float (nothing to quantize)."""
    if int8 and not any(runs_int8(n, config.bits, int8) for n in _weighted(model)):
        raise PrunetuneError(
            f"trial {rec.number} keeps every layer float (32 bits), so --int8 would quantize "
            f"nothing: export it without --int8, or choose a trial with layers at 8 bits or less"
        )
