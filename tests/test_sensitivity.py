"""The layer sensitivity scan (prunetune.sensitivity): each group pruned alone without fine-tuning,
and the space narrowed to the ratios whose accuracy drop stayed within the budget."""

from __future__ import annotations

import pytest
import torch

from prunetune.data import create_dataset
from prunetune.measure import count_macs
from prunetune.models import build_for
from prunetune.sensitivity import narrow, plot, scan
from prunetune.spaces.space import GroupSpec, SearchSpace

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_each_group_is_pruned_alone_and_compared_with_the_base(tmp_path):
    bundle = create_dataset("digits")
    torch.manual_seed(0)
    model = build_for("tiny_cnn", bundle).eval()
    rows = scan(model, bundle, ["0", "3"], [0.0, 0.5])
    assert [(r["group"], r["ratio"]) for r in rows] == [
        ("0", 0.0),
        ("0", 0.5),
        ("3", 0.0),
        ("3", 0.5),
    ]
    full = count_macs(model, bundle.example_input(1))
    assert rows[0]["macs"] == full and rows[0]["drop"] == 0.0  # ratio 0: the base itself
    assert rows[1]["macs"] < full and rows[3]["macs"] < full
    assert all(r["drop"] == pytest.approx(rows[0]["accuracy"] - r["accuracy"]) for r in rows)
    given = scan(model, bundle, ["0"], [0.0], base_accuracy=1.0)
    assert given[0]["drop"] == pytest.approx(1.0 - rows[0]["accuracy"])
    assert plot(rows, tmp_path / "s.png", title="t").read_bytes().startswith(b"\x89PNG")


def test_narrowing_keeps_the_largest_ratio_within_the_drop():
    space = SearchSpace(
        groups={"a": GroupSpec(8, 0.5, 0.1, 0.9), "b": GroupSpec(8, 0.5, 0.2, 0.6)},
        quant_layers=["a", "b"],
    )
    rows = [
        {"group": "a", "ratio": 0.3, "drop": 0.01},
        {"group": "a", "ratio": 0.5, "drop": 0.02},
        {"group": "a", "ratio": 0.7, "drop": 0.20},
        {"group": "b", "ratio": 0.8, "drop": 0.00},  # beyond the space's own upper end: capped
    ]
    narrowed = narrow(space, rows, max_drop=0.05)
    assert {n: (g.low, g.high) for n, g in narrowed.groups.items()} == {
        "a": (0.1, 0.5),
        "b": (0.2, 0.6),
    }
    none_within = narrow(space, rows, max_drop=0.001)
    assert none_within.groups["a"].high == 0.1  # the lower bound: nothing passed
