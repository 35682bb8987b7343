"""Verifying an exported file (prunetune.export.verify): its runtime's outputs against the float
PyTorch model's, judged by a float tolerance or (int8) top-1 agreement; test accuracy through it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunetune.export.inputs import ExportInputs
from prunetune.export.verify import ModuleRunner, file_runner, verify
from prunetune.runtimes import make_runner
from tests.export.builders import export_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 3)).eval()


def _inputs(model: nn.Module, test_set=None) -> ExportInputs:
    xs = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return export_inputs(model, xs, test_set=test_set)


def test_a_file_with_the_models_outputs_passes_within_the_float_tolerance():
    model = _net()
    run = make_runner(model, "onnxruntime", torch.zeros(1, 1, 8, 8))
    checked, tested = verify(run, model, _inputs(model), int8=False)
    assert checked.outputs_match and checked.max_abs_diff <= checked.tolerance
    assert (checked.images, checked.inputs, checked.top1_agreement) == (16, "test images", 1.0)
    assert tested is None  # no test set


def test_other_logits_fail_a_float_export_and_pass_an_int8_one_with_the_same_top1():
    model, other = _net(), _net()
    with torch.no_grad():
        other[2].bias += 0.5  # every logit shifted alike: other outputs, the same top-1
    run = ModuleRunner(other, runtime="torch", threads=1)
    float_check, _ = verify(run, model, _inputs(model), int8=False)
    assert not float_check.outputs_match and float_check.max_abs_diff == pytest.approx(0.5)
    int8_check, _ = verify(run, model, _inputs(model), int8=True)
    assert int8_check.tolerance is None and int8_check.top1_agreement == 1.0
    assert int8_check.outputs_match  # int8 logits differ by rounding: top-1 agreement decides


def test_test_accuracy_is_measured_through_the_file():
    model = _net()
    xs = _inputs(model).verify
    with torch.no_grad():
        labels = model(xs).argmax(1)
    test_set = torch.utils.data.TensorDataset(xs, labels)
    run = ModuleRunner(model, runtime="torch", threads=1)
    _, tested = verify(run, model, _inputs(model, test_set), int8=False)
    assert tested == 1.0


def test_a_state_dict_file_runs_through_the_exports_loader(tmp_path):
    model = _net()
    run = file_runner(tmp_path / "compressed.pt", "state-dict", 1, load=lambda path: model)
    assert isinstance(run, ModuleRunner) and run.module is model and run.runtime == "torch"
