"""Runners: callables taking a float batch (any device) and returning CPU logits, one per runtime
(`make_runner`), and a runner of an exported ONNX file (`onnx_file_runner`)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

from prunetune.measure import torch_threads
from prunetune.runtimes.int8 import quantize_onnx_int8
from prunetune.runtimes.materialize import materialize
from prunetune.runtimes.names import INT8_BITS, check_runtime
from prunetune.runtimes.onnx_graph import INPUT_NAME, OUTPUT_NAME, to_onnx

# Op types (default, com.microsoft and NCHWc domains) that carry quantized data or integer math.
_QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "QGemm",
        "MatMulInteger",
        "ConvInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "QLinearAdd",
        "QLinearMul",
        "QLinearAveragePool",
        "QLinearGlobalAveragePool",
        "QLinearConcat",
        "QLinearSigmoid",
        "QLinearLeakyRelu",
        "QLinearSoftmax",
        "QLinearReduceMean",
        "QLinearWhere",
        "QAttention",
        "QEmbedLayerNormalization",
        "NhwcQLinearConv",
        "QLinearConvTranspose",
    }
)
# ORT's WeightBiasQuantization quantizes the float weights of any Conv/Gemm/MatMul fed by a
# DequantizeLinear, i.e. it would run layers excluded from quantization (32 bits) as int8 anyway.
# (Unknown optimizer names are ignored by ORT, so this is safe across versions.)
_DISABLED_ORT_OPTIMIZERS = ["WeightBiasQuantization"]


class Runner:
    """Callable: float input batch (any device) -> logits as a CPU tensor.

    Attributes: `runtime` (a name in RUNTIMES), `threads` (intra-op threads while running),
    `kernels` (sorted quantized op types in the graph that runs; empty for float runtimes).
    """

    runtime: str
    threads: int
    kernels: tuple[str, ...] = ()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        kernels = f", kernels={list(self.kernels)}" if self.kernels else ""
        return f"{type(self).__name__}(runtime={self.runtime!r}, threads={self.threads}{kernels})"


class TorchRunner(Runner):
    """Eager fp32 on the model's device (CUDA when its parameters are there)."""

    def __init__(self, model: nn.Module, *, threads: int) -> None:
        self.runtime, self.threads = "torch", threads
        self.model = materialize(model)
        first = next(self.model.parameters(), None)
        self.device = first.device if first is not None else torch.device("cpu")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch_threads(self.threads), torch.inference_mode():
            return self.model(x.to(self.device)).cpu()


class OnnxRuntimeRunner(Runner):
    """An ONNX Runtime CPU session of an ONNX model (bytes or file): `threads` intra-op threads,
    one inter-op thread, all graph optimisations. `op_types` (all) and `kernels` (quantized) are
    read from the optimised graph ORT saves at session creation, i.e. the graph that runs.
    Without `runtime`, it is "onnxruntime-int8" if the graph has quantized ops, else
    "onnxruntime"."""

    def __init__(
        self, onnx_model: bytes | str | Path, *, threads: int, runtime: str | None = None
    ) -> None:
        import onnxruntime as ort

        self.threads = threads
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only (saving an NCHWc-optimised graph warns)
        with tempfile.TemporaryDirectory(prefix="prunetune-ort-") as tmp:
            optimized = Path(tmp) / "optimized.onnx"
            options.optimized_model_filepath = str(optimized)
            source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
            self.session = ort.InferenceSession(
                source,
                options,
                providers=["CPUExecutionProvider"],
                disabled_optimizers=_DISABLED_ORT_OPTIMIZERS,
            )
            graph = onnx.load(str(optimized), load_external_data=False).graph
        self.op_types: tuple[str, ...] = tuple(sorted({n.op_type for n in graph.node}))
        self.kernels = tuple(op for op in self.op_types if op in _QUANTIZED_OPS)
        self.runtime = runtime or ("onnxruntime-int8" if self.kernels else "onnxruntime")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        feed = {INPUT_NAME: x.detach().to("cpu", torch.float32).contiguous().numpy()}
        return torch.from_numpy(self.session.run([OUTPUT_NAME], feed)[0])


def onnx_file_runner(path: str | Path, *, threads: int = 1) -> OnnxRuntimeRunner:
    """A Runner of an exported ONNX file (fp32 or int8, e.g. from `to_onnx` or
    `quantize_onnx_int8`); its runtime name is inferred from the graph."""
    return OnnxRuntimeRunner(Path(path), threads=threads)


def make_runner(
    model: nn.Module,
    runtime: str,
    example_input: torch.Tensor,
    *,
    threads: int = 1,
    calibration_batches: Sequence[torch.Tensor] | None = None,
    layer_bits: Mapping[str, int] | None = None,
) -> Runner:
    """A Runner of `model` on `runtime` (see RUNTIMES).

    `example_input` fixes the input shape for export (the batch dimension stays dynamic).
    For "onnxruntime-int8", `calibration_batches` is required, and `layer_bits` (torch layer
    name -> bit-width) keeps the layers above 8 bits (32 = float) float; every other weighted
    layer, named or not, runs int8 (bits < 8 run as int8). Float runtimes ignore both.
    Raises UnknownNameError for an unknown runtime.
    """
    check_runtime(runtime)
    if runtime == "torch":
        return TorchRunner(model, threads=threads)
    fp32 = to_onnx(model, example_input)
    if runtime == "onnxruntime":
        return OnnxRuntimeRunner(fp32, runtime=runtime, threads=threads)
    if calibration_batches is None:
        raise ValueError("runtime 'onnxruntime-int8' needs calibration_batches")
    keep_float = [name for name, bits in (layer_bits or {}).items() if bits > INT8_BITS]
    int8 = quantize_onnx_int8(fp32, calibration_batches, exclude=keep_float)
    return OnnxRuntimeRunner(int8, runtime=runtime, threads=threads)
