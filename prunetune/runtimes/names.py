"""The runtimes a search can time a model on: their names and descriptions."""

from __future__ import annotations

from prunetune.errors import UnknownNameError

RUNTIME_DESCRIPTIONS: dict[str, str] = {
    "torch": "PyTorch eager fp32 (inference mode)",
    "onnxruntime": "ONNX Runtime CPU, fp32, all graph optimisations",
    "onnxruntime-int8": "ONNX Runtime CPU, static int8 (QDQ, per-channel weights); bits < 8 run as "
    "int8, 32-bit layers stay float",
}
RUNTIMES: tuple[str, ...] = tuple(RUNTIME_DESCRIPTIONS)
INT8_BITS = 8  # on the int8 runtime a layer above this bit-width (32 = float) stays float


def check_runtime(name: str) -> str:
    """Return `name` if it is a known runtime, else raise UnknownNameError."""
    if name not in RUNTIMES:
        raise UnknownNameError("runtime", name, RUNTIMES)
    return name
