"""Speed and the base model's reference (prunetune.search.speed): the base's metrics with the run
context beside them (never a user metric in its place), a trial timed side by side with the base."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunetune.compress import CompressionConfig, compress, inventory
from prunetune.config import SearchSettings
from prunetune.measure import count_macs
from prunetune.models import BaseModel
from prunetune.search.records import is_context
from prunetune.search.setup import SearchSetup
from prunetune.search.speed import measure_base, measure_speed
from prunetune.search.workload import UserWorkload
from prunetune.spaces import SearchSpace

pytestmark = pytest.mark.usefixtures("one_torch_thread")
X = torch.zeros(1, 1, 8, 8)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # the quiet lock's own folder
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 10)
    ).eval()
    metrics = {"val_accuracy": 0.9, "test_accuracy": 0.8, "user_metrics": {"confidence": 0.7}}
    return SearchSetup(
        config=SearchSettings.from_flat(threads=1, fps_repeats=3),
        bundle=None,
        base=BaseModel(model, {"metrics": metrics, "num_classes": 10}, None),
        space=SearchSpace.from_inventory(inventory(model, X)),
        base_metrics={},
        weights_dir=tmp_path,
        skipped_layers=[],
        workload=UserWorkload(lambda m: None, lambda m: {"accuracy": 0.0}),
        example=X,
    )


def test_the_base_reference_is_its_metrics_with_the_run_context_beside_them(setup):
    base = measure_base(setup)
    context = {k: v for k, v in base.items() if is_context(k)}
    assert {"runtime", "threads", "device", "load_1m", "cpus"} <= set(context)
    assert (context["runtime"], context["threads"], context["device"]) == ("torch", 1, "cpu")
    macs = count_macs(setup.base.model, X)
    assert base["macs"] == macs and base["flops"] == 2 * macs and base["bitops"] == macs * 1024
    assert (base["accuracy"], base["test_accuracy"], base["confidence"]) == (0.9, 0.8, 0.7)
    assert base["speedup"] == 1.0 and base["fps"] > 0


def test_a_trial_is_timed_beside_the_base_and_its_load_goes_to_the_context(setup):
    config = CompressionConfig(ratios={"0": 0.5})
    small = compress(setup.base.model, config, X)
    context: dict = {}
    speed = measure_speed(setup, small, config, seed=0, context=context)
    assert set(speed) == {"fps", "latency_ms", "fps_spread", "speedup"} and speed["speedup"] > 0
    assert {"load_1m", "cpus"} <= set(context) and all(is_context(k) for k in context)
