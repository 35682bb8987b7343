"""Run a float (possibly pruned) torch model on a named runtime, and time it there.

A search optimises FPS on the runtime the user deploys to, because the winner depends on it
(bench/results/fps.md: int8 speeds up the base MNIST Net ~3.5x; ONNX Runtime fp32 runs the small
pruned Nets ~2x faster than torch eager). Runtimes:

- ``torch``: eager fp32 under ``torch.inference_mode``, with the runner's thread count.
- ``onnxruntime``: the model exported to fp32 ONNX (`to_onnx`), ONNX Runtime CPU, all graph
  optimisations.
- ``onnxruntime-int8``: that ONNX model statically quantized by ONNX Runtime
  (`quantize_onnx_int8`: QDQ, per-channel int8 weights, uint8 activations, MinMax calibration),
  which ORT fuses into QLinearConv / QGemm kernels. Bit-widths below 8 run as int8: no CPU
  library runs sub-8-bit convolutions faster, so such widths are an accuracy/size simulation and
  their speed is measured at int8. Layers above 8 bits (32 = float) stay float.

Every runtime runs the model's *effective* float weights (`materialize`): weight fake-quant
parametrizations are baked in and simulation hooks dropped. A `Runner` is a callable taking a
float batch (any device) and returning CPU logits; `measure_fps` times several runners side by
side under the protocol of `prunetune.measure`.

ONNX export uses the TorchScript exporter (``dynamo=False``, its deprecation warning silenced):
a search exports every trial and it is much cheaper per call than the dynamo exporter (measured:
(4,2) Net 0.03 s against 1.1 s, ResNet-18 at 32 px 0.28 s against 2.6 s, the 100 MB base Net
0.8 s against 1.35 s; both match torch to 1e-6). Its node names also keep torch module paths
(``/layer1/layer1.0/conv1/Conv``), which maps torch layer bit-widths onto ONNX nodes; the dynamo
exporter names a conv with folded batch norm after the batch norm.

The package: `names` (the runtimes), `materialize`, `onnx_graph` (export, node names), `int8`
(ONNX Runtime static quantization), `runners`, `timing` (`measure_fps`).
"""

from __future__ import annotations

from prunetune.runtimes.int8 import quantize_onnx_int8
from prunetune.runtimes.materialize import materialize
from prunetune.runtimes.names import INT8_BITS, RUNTIME_DESCRIPTIONS, RUNTIMES, check_runtime
from prunetune.runtimes.onnx_graph import node_module, onnx_nodes_of, to_onnx
from prunetune.runtimes.runners import Runner, make_runner, onnx_file_runner
from prunetune.runtimes.timing import SAMPLE_S, measure_fps

__all__ = [
    "INT8_BITS",
    "RUNTIMES",
    "RUNTIME_DESCRIPTIONS",
    "SAMPLE_S",
    "Runner",
    "check_runtime",
    "make_runner",
    "materialize",
    "measure_fps",
    "node_module",
    "onnx_file_runner",
    "onnx_nodes_of",
    "quantize_onnx_int8",
    "to_onnx",
]
