"""Static int8 quantization of an fp32 ONNX model with ONNX Runtime (`quantize_onnx_int8`)."""

from __future__ import annotations

import contextlib
import functools
import logging
import platform
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import onnx
import torch

from prunetune.runtimes.onnx_graph import INPUT_NAME, bytes_or_file, load_onnx, onnx_nodes_of


@functools.cache
def saturates_u8s8() -> bool:
    """Whether ONNX Runtime's u8 x s8 int8 kernels can saturate on this CPU: an x86 CPU without
    VNNI runs them with VPMADDUBSW, whose 16-bit sums clamp (ONNX Runtime's quantization docs;
    on an AVX2-only EPYC the int8 export's top-1 agreement with fp32 fell below the verification's
    bar). VNNI (avx512_vnni, avx_vnni) and non-x86 CPUs do not; an x86 CPU whose flags cannot be
    read (no /proc/cpuinfo) is assumed to."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return True
    return not ({"avx512_vnni", "avx_vnni"} & set(flags))


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
    `_inline_identity_initializers`) is done directly; on the base Net it cost 2.3 s. Weights
    are 7-bit where u8 x s8 saturates (`saturates_u8s8`), as ONNX Runtime's docs advise.
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
    model = _inline_identity_initializers(load_onnx(onnx_model))
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
                reduce_range=saturates_u8s8(),
                nodes_to_exclude=nodes_to_exclude,
            )
        data = out.read_bytes()
    return bytes_or_file(data, path)
