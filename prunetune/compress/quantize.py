"""Per-layer bit-widths, simulated for accuracy (fake quantization) and counted for size.

Nothing here makes a model faster: PyTorch runs no conv below 8 bits faster on CPU. The simulation
answers "how accurate is this model with b-bit weights", `size_bytes` answers "how big is it at
its true bit-widths"; speed is measured on an int8 runtime elsewhere.

- Weights: per-output-channel symmetric fake quantization, scale = max|w| / (2^(b-1) - 1), values
  round(w / scale) * scale with round(w / scale) in [-(2^(b-1) - 1), 2^(b-1) - 1], so at most
  2^b - 1 distinct values per output channel. Attached with torch.nn.utils.parametrize (the float
  weight stays the trained parameter, state_dict key `<layer>.parametrizations.weight.original`);
  the straight-through estimator passes the gradient unchanged to the float weight, so
  fine-tuning works.
- Activations: the input of every quantized layer is fake-quantized per tensor, asymmetric
  (affine) over [min(lo, 0), max(hi, 0)] with `act_bits`, straight-through inside the range and
  zero gradient outside it. The range (lo, hi) is a running one: in training mode every batch
  updates an exponential moving average (momentum 0.1; the first batch sets it); in eval mode the
  stored range is used, or the batch's own range while none has been observed yet (call
  `calibrate_activations` after quantizing a model you will not fine-tune). The range is a
  buffer, so it is saved and loaded with the state_dict.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from prunetune.errors import ConfigError

ALLOWED_BITS = (2, 3, 4, 5, 6, 7, 8, 32)
FLOAT_BITS = 32
QUANT_TYPES = (nn.Conv2d, nn.Linear)


class _RoundSTE(torch.autograd.Function):
    """round() forward, identity backward (straight-through estimator)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


class WeightFakeQuant(nn.Module):
    """Parametrization: per-output-channel symmetric `bits`-bit fake quantization with STE."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        qmax = 2 ** (self.bits - 1) - 1
        amax = weight.detach().abs().amax(dim=tuple(range(1, weight.dim())), keepdim=True)
        scale = (amax / qmax).clamp_min(torch.finfo(weight.dtype).tiny)
        # |weight / scale| <= qmax up to rounding error, so no clamp (whose gradient would be 0 at
        # the extreme weights): the straight-through gradient is exactly the float gradient
        return _RoundSTE.apply(weight / scale) * scale

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class ActFakeQuant(nn.Module):
    """Per-tensor asymmetric activation fake quantization with a running range (see the module
    docstring). `calibrating` makes eval-mode calls update the range too."""

    def __init__(self, bits: int = 8, momentum: float = 0.1) -> None:
        super().__init__()
        self.bits, self.momentum, self.calibrating = bits, momentum, False
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))
        self.register_buffer("observed", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.calibrating:
            self._observe(x.detach())
            lo, hi = self.lo, self.hi
        elif bool(self.observed):
            lo, hi = self.lo, self.hi
        else:
            lo, hi = x.detach().amin(), x.detach().amax()
        levels = 2**self.bits - 1
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
        scale = ((hi - lo) / levels).clamp_min(torch.finfo(x.dtype).tiny)
        zero = torch.round(-lo / scale)
        q = torch.clamp(_RoundSTE.apply(x / scale) + zero, 0, levels)
        return (q - zero) * scale

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        lo, hi = x.amin(), x.amax()
        if bool(self.observed):
            lo, hi = torch.lerp(self.lo, lo, self.momentum), torch.lerp(self.hi, hi, self.momentum)
        self.lo.copy_(lo)
        self.hi.copy_(hi)
        self.observed.fill_(True)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


def _quantize_input(module: nn.Module, args: tuple) -> tuple:
    return (module.input_quant(args[0]), *args[1:])


def quant_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers a bit-width can be given to: every Conv2d and Linear, by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QUANT_TYPES)}


def check_bits(value: object, what: str, allowed: tuple[int, ...] = ALLOWED_BITS) -> int:
    """A bit-width as int; ConfigError unless it is one of `allowed`."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
        raise ConfigError(
            f"bit-width for {what} must be one of {', '.join(map(str, allowed))}, got {value!r}"
        )
    return value


def resolve_bits(
    model: nn.Module, bits: int | Mapping[str, int], allowed: tuple[int, ...] = ALLOWED_BITS
) -> dict[str, int]:
    """{layer name: bits} for every quantizable layer: one int for all, or a mapping (layers not
    named stay at 32 = float). ConfigError for unknown layer names or bit-widths not allowed."""
    names = list(quant_layers(model))
    if not isinstance(bits, Mapping):
        return dict.fromkeys(names, check_bits(bits, "every layer", allowed))
    out = dict.fromkeys(names, FLOAT_BITS)
    for name, value in bits.items():
        if name not in out:
            raise ConfigError(
                f"unknown layer {name!r} for a bit-width; quantizable layers: {', '.join(names)}"
            )
        out[name] = check_bits(value, f"layer {name!r}", allowed)
    return out


def apply_quantization(
    model: nn.Module, bits: int | Mapping[str, int], *, act_bits: int = 8
) -> nn.Module:
    """Attach weight fake quantization at `bits` (one int, or {layer: bits}; 32 = float, untouched)
    and `act_bits` activation fake quantization of each quantized layer's input (32 = none).
    IN PLACE: returns the same model. Bit-widths must be in ALLOWED_BITS; a layer can be quantized
    once (ConfigError otherwise). Prune before quantizing: pruning needs the float model."""
    act_bits = check_bits(act_bits, "activations")
    layers = quant_layers(model)
    plan = {name: b for name, b in resolve_bits(model, bits).items() if b != FLOAT_BITS}
    if twice := [name for name in plan if is_quantized(layers[name])]:
        raise ConfigError(f"layers already quantized: {', '.join(twice)}")
    for name, b in plan.items():
        layer = layers[name]
        parametrize.register_parametrization(layer, "weight", WeightFakeQuant(b))
        if act_bits != FLOAT_BITS:
            layer.input_quant = ActFakeQuant(act_bits)
            layer.register_forward_pre_hook(_quantize_input)
    return model


def is_quantized(layer: nn.Module) -> bool:
    return parametrize.is_parametrized(layer, "weight") and any(
        isinstance(p, WeightFakeQuant) for p in layer.parametrizations.weight
    )


@torch.no_grad()
def calibrate_activations(model: nn.Module, data: Iterable, *, batches: int = 8) -> int:
    """Observe activation ranges on up to `batches` batches (x or (x, y)) in eval mode, so batch
    norm statistics stay as they are. Returns the number of batches used."""
    quants = [m for m in model.modules() if isinstance(m, ActFakeQuant)]
    was_training = model.training
    model.eval()
    used = 0
    try:
        for q in quants:
            q.calibrating = True
        for batch in itertools.islice(data, batches):
            model(batch[0] if isinstance(batch, (tuple, list)) else batch)
            used += 1
    finally:
        for q in quants:
            q.calibrating = False
        model.train(was_training)
    return used


def size_bytes(model: nn.Module, bits: int | Mapping[str, int]) -> int:
    """Packed size of `model` at the given weight bit-widths (the model may be float or already
    fake-quantized; only its shapes matter):

        quantized layer (b < 32): ceil(weight.numel() * b / 8) + 4 * out_channels (fp32 scales)
                                  + 4 * bias.numel()
        everything else:          4 bytes per element of every floating-point parameter and
                                  buffer (float layers, batch-norm weights and running stats, ...)

    Not counted: integer buffers (num_batches_tracked, masks, indices) and the activation ranges
    of the simulation (two floats per quantized layer)."""
    resolved = resolve_bits(model, bits)

    def layer_bytes(name: str, weight: torch.Tensor) -> int | None:
        b = resolved[name]
        return None if b == FLOAT_BITS else math.ceil(weight.numel() * b / 8) + 4 * weight.shape[0]

    return packed_size_bytes(model, layer_bytes)


def packed_size_bytes(
    model: nn.Module, weight_bytes: Callable[[str, torch.Tensor], int | None]
) -> int:
    """4 bytes per floating-point element of `model`, except each Conv2d/Linear weight for which
    `weight_bytes(name, weight)` returns a size (the weight as the layer computes it, whatever
    parametrization stores it). Activation-range buffers of the simulation are not counted."""
    layers = quant_layers(model)
    total = 0
    for name, layer in layers.items():
        with torch.no_grad():
            weight = layer.weight
        packed = weight_bytes(name, weight)
        total += 4 * weight.numel() if packed is None else packed
        if layer.bias is not None:
            total += 4 * layer.bias.numel()
    for key, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
        if tensor.is_floating_point() and _owner(key, layers) is None:
            total += 4 * tensor.numel()
    return total


def _owner(key: str, layers: Mapping[str, nn.Module]) -> str | None:
    """The conv/linear layer a parameter/buffer name belongs to (incl. its parametrizations and
    activation quantizer), or None."""
    parts = key.split(".")
    for i in range(len(parts) - 1, -1, -1):
        prefix = ".".join(parts[:i])
        if prefix in layers:
            return prefix
    return None
