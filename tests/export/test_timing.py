"""An exported file timed next to the base model exported the same way
(prunetune.export.timing.time_next_to_base): the base file in its own runtime, its size, both
timings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunetune.compress import CompressionConfig, compress
from prunetune.export.timing import time_next_to_base
from prunetune.runtimes import make_runner
from tests.export.builders import export_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")
X = torch.zeros(1, 1, 8, 8)


def test_the_compressed_runner_is_timed_beside_the_base_file():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(288, 3)).eval()
    small = compress(base, CompressionConfig(ratios={"0": 0.5}), X).eval()
    inputs = export_inputs(base, X)
    run = make_runner(small, "onnxruntime", X)
    base_run, size, timings = time_next_to_base(run, inputs, "onnx", {}, repeats=3)
    assert base_run.runtime == "onnxruntime" and base_run.threads == 1
    assert size > 288 * 3 * 4  # the base file holds at least the float head
    assert set(timings) == {"compressed", "base"} and all(t.fps > 0 for t in timings.values())
    with torch.no_grad():
        torch.testing.assert_close(base_run(X), base(X), atol=1e-4, rtol=1e-4)
