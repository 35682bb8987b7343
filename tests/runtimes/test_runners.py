"""Runners (prunetune.runtimes.runners): ONNX Runtime matches torch at any batch, the torch runner
restores threads, a file's runner knows its runtime, mixed precision keeps float layers, the
export runs the effective weights; unknown runtimes and uncalibrated int8 refused."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrize

from prunetune.errors import UnknownNameError
from prunetune.runtimes import (
    RUNTIMES,
    make_runner,
    materialize,
    onnx_file_runner,
    quantize_onnx_int8,
    to_onnx,
)
from tests.runtimes.nets import Rounded, calibration, net, pruned_resnet


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


def test_float_onnxruntime_has_no_quantized_kernels():
    runner = make_runner(net(4, 2), "onnxruntime", torch.randn(1, 1, 28, 28))
    assert runner.kernels == ()


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


def test_unknown_runtime():
    with pytest.raises(UnknownNameError, match="unknown runtime 'tensorrt'"):
        make_runner(net(1, 1), "tensorrt", torch.randn(1, 1, 28, 28))
    assert RUNTIMES == ("torch", "onnxruntime", "onnxruntime-int8")


def test_int8_needs_calibration():
    with pytest.raises(ValueError, match="calibration"):
        make_runner(net(1, 1), "onnxruntime-int8", torch.randn(1, 1, 28, 28))


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
