"""ONNX export (`to_onnx`: the TorchScript exporter, whose node names keep torch module paths) and
the mapping of torch layer names onto ONNX nodes."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable
from pathlib import Path

import onnx
import torch
from torch import nn

from prunetune.errors import ConfigError
from prunetune.runtimes.materialize import materialize

INPUT_NAME, OUTPUT_NAME = "input", "logits"
# Weighted ops whose weight a torch layer name refers to.
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


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
    return bytes_or_file(buffer.getvalue(), path)


def bytes_or_file(data: bytes, path: str | Path | None) -> bytes | Path:
    """`data` itself when `path` is None, else `path` after writing `data` there."""
    if path is None:
        return data
    path = Path(path)
    path.write_bytes(data)
    return path


def load_onnx(onnx_model: bytes | str | Path) -> onnx.ModelProto:
    """An ONNX model from its bytes or file."""
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
    graph = (onnx_model if isinstance(onnx_model, onnx.ModelProto) else load_onnx(onnx_model)).graph
    by_module: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type in WEIGHTED_OPS:
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
