"""Runners timed side by side (prunetune.runtimes.timing.measure_fps): one timing per runner in its
own runtime, at the example's batch size and the runners' one thread count."""

from __future__ import annotations

import pytest
import torch

from prunetune.runtimes import Runner, make_runner
from prunetune.runtimes.timing import measure_fps
from tests.runtimes.nets import net

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_measure_fps_interleaves_runners_of_one_thread_count():
    example = torch.randn(2, 1, 28, 28)
    model = net(4, 2)
    runners: dict[str, Runner] = {
        "torch": make_runner(model, "torch", example),
        "ort": make_runner(model, "onnxruntime", example),
    }
    timings = measure_fps(runners, example, repeats=3, warmup=1, sample_s=0.002)
    assert {k: t.runtime for k, t in timings.items()} == {"torch": "torch", "ort": "onnxruntime"}
    for t in timings.values():
        assert (t.threads, t.batch_size, t.repeats) == (1, 2, 3)
        assert t.fps > 0 and t.p25_ms <= t.median_ms <= t.p75_ms
    runners["two"] = make_runner(model, "torch", example, threads=2)
    with pytest.raises(ValueError, match=r"share one thread count, got \[1, 2\]"):
        measure_fps(runners, example, repeats=3)
