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
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import onnx
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune

from prunetune.errors import ConfigError, UnknownNameError
from prunetune.measure import Timing, time_interleaved, torch_threads

RUNTIME_DESCRIPTIONS: dict[str, str] = {
    "torch": "PyTorch eager fp32 (inference mode)",
    "onnxruntime": "ONNX Runtime CPU, fp32, all graph optimisations",
    "onnxruntime-int8": "ONNX Runtime CPU, static int8 (QDQ, per-channel weights); bits < 8 run as "
    "int8, 32-bit layers stay float",
}
RUNTIMES: tuple[str, ...] = tuple(RUNTIME_DESCRIPTIONS)

INPUT_NAME, OUTPUT_NAME = "input", "logits"
INT8_BITS = 8  # on the int8 runtime a layer above this bit-width (32 = float) stays float
SAMPLE_S = 0.05  # seconds per timing sample in measure_fps (see there)

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
# Weighted ops whose weight a torch layer name refers to.
_WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def check_runtime(name: str) -> str:
    """Return `name` if it is a known runtime, else raise UnknownNameError."""
    if name not in RUNTIMES:
        raise UnknownNameError("runtime", name, RUNTIMES)
    return name


# --------------------------------------------------------------------------- materialize / export


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


def to_onnx(
    model: nn.Module, example_input: torch.Tensor, path: str | Path | None = None
) -> bytes | Path:
    """Export the materialized model to fp32 ONNX with a dynamic batch dimension.

    Input is named "input", output "logits"; node names keep torch module paths. The export runs
    on CPU. Returns the serialized model, or `path` after writing it there. The exporter's
    deprecation and tracer warnings are silenced.
    """
    model = materialize(model).cpu()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example_input.detach().cpu(),),
            buffer,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    data = buffer.getvalue()
    if path is None:
        return data
    path = Path(path)
    path.write_bytes(data)
    return path


def _load(onnx_model: bytes | str | Path) -> onnx.ModelProto:
    if isinstance(onnx_model, bytes):
        return onnx.load_from_string(onnx_model)
    return onnx.load(str(onnx_model))


def node_module(node_name: str) -> str:
    """The torch module path of a node named by the TorchScript exporter:
    "/layer1/layer1.0/downsample/downsample.0/Conv" -> "layer1.0.downsample.0", "/0/Conv" -> "0".
    (Scopes of container children repeat their parent's name, hence the prefix stripping.)"""
    scopes = node_name.strip("/").split("/")[:-1]
    parts: list[str] = []
    for i, scope in enumerate(scopes):
        parts.append(scope.removeprefix(scopes[i - 1] + ".") if i else scope)
    return ".".join(parts)


def onnx_nodes_of(
    onnx_model: bytes | str | Path | onnx.ModelProto, names: Iterable[str]
) -> list[str]:
    """ONNX node names for `names`, each an ONNX node name or a torch layer name (all Conv / Gemm /
    MatMul nodes of that module). Raises ConfigError for a name that matches no node."""
    graph = (onnx_model if isinstance(onnx_model, onnx.ModelProto) else _load(onnx_model)).graph
    by_module: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type in _WEIGHTED_OPS:
            by_module.setdefault(node_module(node.name), []).append(node.name)
    all_nodes = {node.name for node in graph.node}
    out: list[str] = []
    for name in names:
        if name in all_nodes:
            out.append(name)
        elif name in by_module:
            out.extend(by_module[name])
        else:
            raise ConfigError(
                f"layer {name!r} matches no node of the ONNX graph; weighted layers: "
                f"{', '.join(sorted(by_module))}"
            )
    return out


# --------------------------------------------------------------------------------- quantization


def _inline_identity_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace Identity nodes that copy an initializer by a copy of that initializer, in place.

    The TorchScript exporter shares equal constants (e.g. the zero biases of convs with folded
    batch norm) through Identity nodes; a conv whose bias is not an initializer is left float by
    ONNX Runtime's QDQ fusion. (`quant_pre_process` would fix it too, at seconds per big model.)
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    outputs = {out.name for out in graph.output}
    kept = []
    for node in graph.node:
        if (
            node.op_type == "Identity"
            and node.input[0] in initializers
            and node.output[0] not in outputs
        ):
            copied = onnx.TensorProto()
            copied.CopyFrom(initializers[node.input[0]])
            copied.name = node.output[0]
            graph.initializer.append(copied)
        else:
            kept.append(node)
    if len(kept) < len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)
    return model


class _DropRecordsFrom(logging.Filter):
    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = str(directory)

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.startswith(self.directory)


@contextlib.contextmanager
def _quiet_ort_quantization() -> Iterator[None]:
    """Silence onnxruntime.quantization, which logs through the root logger (and would call
    logging.basicConfig() on an unconfigured root, leaving a handler behind)."""
    import onnxruntime.quantization

    root = logging.getLogger()
    guard = logging.NullHandler()
    drop = _DropRecordsFrom(Path(onnxruntime.quantization.__file__).parent)
    root.addHandler(guard)
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
        root.removeHandler(guard)


def quantize_onnx_int8(
    onnx_model: bytes | str | Path,
    calibration_batches: Sequence[torch.Tensor],
    *,
    exclude: Iterable[str] = (),
    path: str | Path | None = None,
) -> bytes | Path:
    """Statically quantize an fp32 ONNX model (from `to_onnx`) with ONNX Runtime.

    QDQ format, per-channel symmetric int8 weights, uint8 activations (u8 x s8 is the native
    VNNI dot product; s8 activations measured 10-15 % slower on the base Net at batch 1; QDQ and
    QOperator formats end in the same fused kernels), MinMax ranges from `calibration_batches`
    (float tensors shaped like the model input). `exclude` names ONNX nodes or torch layers (see
    `onnx_nodes_of`) to keep float, e.g. layers at 32 bits in a mixed-precision config. ONNX
    Runtime fuses the Q/DQ pairs into QLinearConv / QGemm when a session loads the result.
    `quant_pre_process` is not run: its one useful effect here (inlining shared constants, see
    `_inline_identity_initializers`) is done directly; on the base Net it cost 2.3 s.
    Returns the serialized model, or `path` after writing it there.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if not calibration_batches:
        raise ValueError("int8 quantization needs at least one calibration batch")
    model = _inline_identity_initializers(_load(onnx_model))
    nodes_to_exclude = onnx_nodes_of(model, exclude)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(calibration_batches)

        def get_next(self) -> dict | None:
            batch = next(self._batches, None)
            if batch is None:
                return None
            return {INPUT_NAME: batch.detach().to("cpu", torch.float32).contiguous().numpy()}

    with tempfile.TemporaryDirectory(prefix="prunetune-int8-") as tmp:
        out = Path(tmp) / "int8.onnx"
        with _quiet_ort_quantization():
            quantize_static(
                model,
                out,
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=nodes_to_exclude,
            )
        data = out.read_bytes()
    if path is None:
        return data
    path = Path(path)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------- runners


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
        threads = (
            contextlib.nullcontext()
            if torch.get_num_threads() == self.threads
            else torch_threads(self.threads)
        )
        with threads, torch.inference_mode():
            return self.model(x.to(self.device)).cpu()


class OnnxRuntimeRunner(Runner):
    """An ONNX Runtime CPU session of an ONNX model (bytes or file): `threads` intra-op threads,
    one inter-op thread, all graph optimisations. `op_types` (all) and `kernels` (quantized) are
    read from the optimised graph ORT saves at session creation, i.e. the graph that runs.
    Without `runtime`, it is "onnxruntime-int8" if the graph has quantized ops, else "onnxruntime"."""

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


def measure_fps(
    candidates: Mapping[str, Runner],
    example_input: torch.Tensor,
    *,
    repeats: int = 21,
    warmup: int = 5,
    sample_s: float = SAMPLE_S,
) -> dict[str, Timing]:
    """Time runners side by side on `example_input` (its batch size is the batch): interleaved
    sample by sample (`prunetune.measure.time_interleaved`), each sample the mean of enough calls
    to last `sample_s`. All runners must use the same thread count.

    Why 50 ms samples: a model's first calls after another model ran are slow while its weights
    return to the caches (a (4,2) Net took 1.2 ms, then ~0.2 ms after ~10 calls, when it ran
    after the base Net). With 2 ms samples, interleaving with the base Net inflated the (4,2)
    Net's latency 3.4x (speedup 7x instead of 23x); 20 ms samples: +28 %; 50 ms: +6 %.
    Cost: about len(candidates) x repeats x sample_s.
    """
    threads = {runner.threads for runner in candidates.values()}
    if len(threads) != 1:
        raise ValueError(
            f"runners measured together must share one thread count, got {sorted(threads)}"
        )
    fns = {name: (lambda r=runner: r(example_input)) for name, runner in candidates.items()}
    return time_interleaved(
        fns,
        runtime={name: r.runtime for name, r in candidates.items()},
        threads=threads.pop(),
        batch_size=int(example_input.shape[0]),
        warmup=warmup,
        repeats=repeats,
        target_sample_s=sample_s,
    )
