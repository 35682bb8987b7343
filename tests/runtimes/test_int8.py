"""Static int8 (prunetune.runtimes.int8): a trained model keeps its top-1, excluded layers stay
float, convs whose folded biases are shared still quantize, and nothing is printed."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from prunetune.runtimes import make_runner, quantize_onnx_int8, to_onnx
from tests.runtimes.nets import COMPUTE_INT8_OPS, calibration, net


@pytest.fixture(scope="module")
def mnist():
    from prunetune.data import create_dataset

    return create_dataset("mnist5k")


@pytest.fixture(scope="module")
def trained_tiny(mnist):
    from prunetune.models import Recipe, build_for, train

    model = build_for("tiny_cnn", mnist.input_shape, mnist.num_classes)
    train(model, mnist.train, Recipe(epochs=1), seed=0, device=torch.device("cpu"))
    return model.eval()


def test_int8_keeps_top1_of_a_trained_model(mnist, trained_tiny):
    x_train, _ = mnist.train.tensors()
    x_val, _ = mnist.val.tensors()
    x_val = x_val[:200]
    runner = make_runner(
        trained_tiny,
        "onnxruntime-int8",
        mnist.example_input(1),
        calibration_batches=list(x_train[:128].split(32)),
    )
    with torch.no_grad():
        fp32 = trained_tiny(x_val).argmax(1)
    agreement = (runner(x_val).argmax(1) == fp32).float().mean().item()
    assert agreement >= 0.95
    assert runner.runtime == "onnxruntime-int8"
    assert COMPUTE_INT8_OPS & set(runner.kernels), runner.kernels
    assert list(runner.kernels) == sorted(runner.kernels)


def test_exclude_keeps_a_layer_float():
    model = net(8, 4)
    fp32 = to_onnx(model, torch.randn(1, 1, 28, 28))
    graph = onnx.load_from_string(quantize_onnx_int8(fp32, calibration(), exclude=["2"])).graph
    float_weights = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    produced_by = {out: n.op_type for n in graph.node for out in n.output}
    convs = {n.name: n for n in graph.node if n.op_type == "Conv"}
    kept, quantized = convs["/2/Conv"], convs["/0/Conv"]
    assert kept.input[1] in float_weights  # weight read straight from a float initializer
    assert produced_by[quantized.input[1]] == "DequantizeLinear"


def test_int8_quantizes_convs_whose_folded_bias_is_shared():
    """Untrained batch norms fold to equal biases, which the exporter shares through Identity
    nodes; every conv must still run as QLinearConv."""
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 24 * 24, 10),
    ).eval()
    runner = make_runner(
        model, "onnxruntime-int8", torch.randn(1, 1, 28, 28), calibration_batches=calibration()
    )
    assert not {"Conv", "FusedConv", "Gemm", "FusedGemm"} & set(runner.op_types), runner.op_types


QUIET_SCRIPT = """
import logging, torch
from torch import nn
from prunetune.runtimes import quantize_onnx_int8, to_onnx
model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 26 * 26, 10))
quantize_onnx_int8(to_onnx(model, torch.randn(1, 1, 28, 28)), [torch.randn(4, 1, 28, 28)])
assert not logging.getLogger().handlers, logging.getLogger().handlers
"""


def test_export_and_quantization_are_quiet():
    """In a fresh process (no logging configured, as under the CLI): nothing printed, and no
    handler left on the root logger by onnxruntime.quantization's logging.warning calls."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", QUIET_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
