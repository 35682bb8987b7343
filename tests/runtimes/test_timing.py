"""Runners timed side by side (prunetune.runtimes.timing.measure_fps): one timing per runner, at
the example's batch size and the runners' one thread count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunetune.runtimes import make_runner
from prunetune.runtimes.timing import measure_fps

pytestmark = pytest.mark.usefixtures("one_torch_thread")
X = torch.zeros(2, 1, 8, 8)


def _net(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, width, 3), nn.Flatten(), nn.LazyLinear(3)).eval()


def test_runners_are_timed_side_by_side_at_the_examples_batch():
    small, big = _net(2), _net(64)
    for model in (small, big):
        model(X)  # materialise the lazy layer
    runners = {"small": make_runner(small, "torch", X), "big": make_runner(big, "torch", X)}
    timings = measure_fps(runners, X, repeats=3, warmup=1, sample_s=0.005)
    assert set(timings) == {"small", "big"}
    for t in timings.values():
        assert (t.runtime, t.threads, t.batch_size, t.repeats) == ("torch", 1, 2, 3)
        assert t.fps > 0 and t.p25_ms <= t.median_ms <= t.p75_ms


def test_runners_of_other_thread_counts_are_not_timed_together():
    model = _net(2)
    model(X)
    runners = {"a": make_runner(model, "torch", X), "b": make_runner(model, "torch", X, threads=2)}
    with pytest.raises(ValueError, match=r"share one thread count, got \[1, 2\]"):
        measure_fps(runners, X)
