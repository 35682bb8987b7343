"""Runtimes: ONNX export matches torch, int8 keeps top-1, mixed precision keeps float layers,
materialize bakes in parametrizations without touching the original."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from prunetune.errors import ConfigError, UnknownNameError
from prunetune.runtimes import (
    RUNTIMES,
    Runner,
    make_runner,
    materialize,
    measure_fps,
    node_module,
    onnx_file_runner,
    onnx_nodes_of,
    quantize_onnx_int8,
    to_onnx,
)

COMPUTE_INT8_OPS = {"QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "ConvInteger"}


def net(c1: int, c2: int, hidden: int = 64) -> nn.Sequential:
    """The MNIST Net's shape with `c1`/`c2` filters (what pruning leaves), smaller hidden layer."""
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(c2 * 28 * 28, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    ).eval()


class Block(nn.Module):
    def __init__(self, c: int, mid: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = nn.Conv2d(mid, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


def pruned_resnet() -> nn.Module:
    """A residual net with odd, pruned-looking widths and non-trivial batch-norm statistics."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1),
        nn.ReLU(),
        Block(5, 3),
        Block(5, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 10),
    )
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


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


def calibration(n: int = 4, shape: tuple[int, ...] = (1, 28, 28)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(16, *shape, generator=g) for _ in range(n)]


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda: net(16, 32), (1, 28, 28)),
        (lambda: net(4, 2), (1, 28, 28)),
        (lambda: net(1, 1), (1, 28, 28)),
        (pruned_resnet, (3, 32, 32)),
    ],
    ids=["net16-32", "net4-2", "net1-1", "pruned-resnet"],
)
def test_onnxruntime_matches_torch_at_any_batch(build, shape, batch):
    torch.manual_seed(0)
    model = build()
    runner = make_runner(model, "onnxruntime", torch.randn(1, *shape))  # exported at batch 1
    x = torch.randn(batch, *shape)
    with torch.no_grad():
        expected = model(x)
    out = runner(x)
    assert out.shape == (batch, 10)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_torchvision_resnet18_exports_and_matches():
    from prunetune.models import build_for

    torch.manual_seed(0)
    model = build_for("resnet18", (3, 32, 32), 10).eval()
    runner = make_runner(model, "onnxruntime", torch.randn(1, 3, 32, 32))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(runner(x), model(x), atol=1e-4, rtol=1e-4)


def test_torch_runner_matches_model_and_restores_threads():
    model = net(4, 2)
    before = torch.get_num_threads()
    threads = 2 if before == 1 else 1
    runner = make_runner(model, "torch", torch.randn(1, 1, 28, 28), threads=threads)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(runner(x), model(x))
    assert torch.get_num_threads() == before
    assert (runner.runtime, runner.threads, runner.kernels) == ("torch", threads, ())


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


def test_float_onnxruntime_has_no_quantized_kernels():
    runner = make_runner(net(4, 2), "onnxruntime", torch.randn(1, 1, 28, 28))
    assert runner.kernels == ()


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


def test_onnx_file_runner_infers_its_runtime(tmp_path):
    model = net(4, 2)
    fp32 = to_onnx(model, torch.randn(1, 1, 28, 28), tmp_path / "model.onnx")
    int8 = quantize_onnx_int8(fp32, calibration(), path=tmp_path / "model.int8.onnx")
    float_runner, int8_runner = onnx_file_runner(fp32), onnx_file_runner(int8, threads=1)
    assert (float_runner.runtime, int8_runner.runtime) == ("onnxruntime", "onnxruntime-int8")
    assert "QLinearConv" in int8_runner.kernels
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(float_runner(x), model(x), atol=1e-4, rtol=1e-4)


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


def test_layer_bits_32_runs_float_and_lower_bits_run_int8():
    model = net(8, 4)
    example = torch.randn(1, 1, 28, 28)
    mixed = make_runner(
        model,
        "onnxruntime-int8",
        example,
        calibration_batches=calibration(),
        layer_bits={"0": 32, "2": 4, "5": 32, "7": 8},
    )
    full = make_runner(model, "onnxruntime-int8", example, calibration_batches=calibration())
    float_ops = {"Conv", "FusedConv", "Gemm", "FusedGemm"}
    assert not float_ops & set(full.op_types), full.op_types
    assert {"QLinearConv", "QGemm"} <= set(full.kernels)
    # conv "0" and linear "5" stay float; conv "2" (4 bits -> int8) and linear "7" run int8
    assert {"QLinearConv", "QGemm"} <= set(mixed.kernels)
    assert {"Conv", "FusedConv"} & set(mixed.op_types) and {"Gemm", "FusedGemm"} & set(
        mixed.op_types
    )
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(mixed(x), model(x), atol=0.1, rtol=0.1)


def test_exclude_names_map_torch_layers_to_onnx_nodes():
    fp32 = to_onnx(pruned_resnet(), torch.randn(1, 3, 32, 32))
    assert onnx_nodes_of(fp32, ["2.conv1", "6"]) == ["/2/conv1/Conv", "/6/Gemm"]
    assert onnx_nodes_of(fp32, ["/3/conv2/Conv"]) == ["/3/conv2/Conv"]
    with pytest.raises(ConfigError, match="no node"):
        onnx_nodes_of(fp32, ["2.bn1"])  # batch norm is folded into the conv


@pytest.mark.parametrize(
    "name, module",
    [
        ("/0/Conv", "0"),
        ("/conv1/Conv", "conv1"),
        ("/layer1/layer1.0/conv1/Conv", "layer1.0.conv1"),
        ("/layer2/layer2.0/downsample/downsample.0/Conv", "layer2.0.downsample.0"),
        ("/features/features.3/Conv", "features.3"),
    ],
)
def test_node_module(name, module):
    assert node_module(name) == module


def test_unknown_runtime():
    with pytest.raises(UnknownNameError, match="unknown runtime 'tensorrt'"):
        make_runner(net(1, 1), "tensorrt", torch.randn(1, 1, 28, 28))
    assert RUNTIMES == ("torch", "onnxruntime", "onnxruntime-int8")


def test_int8_needs_calibration():
    with pytest.raises(ValueError, match="calibration"):
        make_runner(net(1, 1), "onnxruntime-int8", torch.randn(1, 1, 28, 28))


class Rounded(nn.Module):
    """A hand-made weight fake-quant: round to a 0.05 grid."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.round(w / 0.05) * 0.05


def test_materialize_bakes_parametrizations_and_drops_hooks():
    torch.manual_seed(0)
    model = net(4, 2)
    parametrize.register_parametrization(model[0], "weight", Rounded())
    model[2].register_forward_pre_hook(
        lambda module, args: (args[0] * 0,)
    )  # fake "activation quant"
    effective = model[0].weight.detach().clone()

    plain = materialize(model)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    assert type(plain[0]) is nn.Conv2d
    assert all(not m._forward_pre_hooks for m in plain.modules())
    torch.testing.assert_close(plain[0].weight, effective)
    # the original is untouched (deepcopy shares the injected Parametrized class with it)
    assert parametrize.is_parametrized(model[0])
    torch.testing.assert_close(model[0].weight, effective)
    assert len(model[2]._forward_pre_hooks) == 1


def test_onnx_export_uses_effective_weights_without_simulation_hooks():
    torch.manual_seed(0)
    model = net(4, 2)
    parametrize.register_parametrization(model[0], "weight", Rounded())
    model[2].register_forward_pre_hook(lambda module, args: (args[0] * 2,))
    runner = make_runner(model, "onnxruntime", torch.randn(1, 1, 28, 28))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        expected, simulated = materialize(model)(x), model(x)
    assert not torch.allclose(expected, simulated, atol=1e-3)
    torch.testing.assert_close(runner(x), expected, atol=1e-4, rtol=1e-4)


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


def test_export_emits_no_warnings():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        to_onnx(net(2, 2), torch.randn(1, 1, 28, 28))
    assert not caught, [str(w.message)[:80] for w in caught]


def test_measure_fps_interleaves_runners_of_one_thread_count():
    example = torch.randn(1, 1, 28, 28)
    model = net(4, 2)
    runners: dict[str, Runner] = {
        "torch": make_runner(model, "torch", example),
        "ort": make_runner(model, "onnxruntime", example),
    }
    timings = measure_fps(runners, example, repeats=3, warmup=1, sample_s=0.002)
    assert {k: t.runtime for k, t in timings.items()} == {"torch": "torch", "ort": "onnxruntime"}
    assert all(t.fps > 0 and t.batch_size == 1 and t.threads == 1 for t in timings.values())
    runners["two"] = make_runner(model, "torch", example, threads=2)
    with pytest.raises(ValueError, match="thread count"):
        measure_fps(runners, example, repeats=3)
