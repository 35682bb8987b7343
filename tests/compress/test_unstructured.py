"""Unstructured magnitude pruning (Deep Compression stage 1): thresholds, sparsity, frozen zeros."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prunetune.compress import (
    apply_quantization,
    freeze_zeros,
    global_magnitude_prune,
    magnitude_prune,
    sparsity,
)
from prunetune.errors import ConfigError


def _lenet() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(400, 300),
        nn.ReLU(),
        nn.Linear(300, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )


@pytest.mark.parametrize("q", [0.25, 0.7, 1.0])
def test_threshold_rule_zeroes_weights_below_q_std(q):
    model = _lenet()
    with torch.no_grad():
        model[1].weight.normal_(0, 0.05)
    w = model[1].weight.detach().clone()
    result = magnitude_prune(model, q)
    expected = (w.abs() < q * w.std()).float().mean().item()
    assert result["1"] == pytest.approx(expected)
    assert result["1"] == pytest.approx(math.erf(q / math.sqrt(2)), abs=0.01)  # Gaussian weights
    survivors = model[1].weight != 0
    assert torch.equal(model[1].weight[survivors], w[survivors])


def test_threshold_per_layer_only_touches_named_layers():
    model = _lenet()
    result = magnitude_prune(model, {"3": 0.5})
    assert set(result) == {"3"} and result["3"] > 0.2
    assert sparsity(model)["1"] == 0.0 and sparsity(model)["5"] == 0.0


def test_global_pruning_hits_the_target_exactly_and_favours_large_layers():
    model = _lenet()
    with torch.no_grad():
        model[5].weight.mul_(10)  # a layer with large weights loses fewer
    result = global_magnitude_prune(model, 0.6)
    total = sum(model[i].weight.numel() for i in (1, 3, 5))
    zeros = sum(int((model[i].weight == 0).sum()) for i in (1, 3, 5))
    assert zeros == round(0.6 * total)
    assert result["5"] < 0.6 < result["1"]


def test_frozen_zeros_survive_optimizer_steps():
    model = _lenet()
    magnitude_prune(model, 0.8)
    freeze_zeros(model)
    zero_before = {i: model[i].weight.detach() == 0 for i in (1, 3, 5)}
    weights_before = model[1].weight.detach().clone()
    for opt in (
        torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-2),
        torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1),
    ):
        for _ in range(3):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(
                model(torch.randn(16, 400)), torch.randint(0, 10, (16,))
            )
            loss.backward()
            assert (model[1].parametrizations.weight.original.grad[zero_before[1]] == 0).all()
            opt.step()
    for i, zero in zero_before.items():
        assert (model[i].weight[zero] == 0).all()
    assert not torch.equal(model[1].weight, weights_before)  # the others did train
    assert {"1.parametrizations.weight.0.mask", "1.parametrizations.weight.original"} <= set(
        model.state_dict()
    )


def test_pruning_again_grows_the_frozen_mask():
    model = _lenet()
    first = magnitude_prune(model, 0.3)["1"]
    freeze_zeros(model)
    second = magnitude_prune(model, 1.0)["1"]
    assert second > first
    assert torch.equal(model[1].parametrizations.weight[0].mask, model[1].weight != 0)


def test_bad_values_raise_config_error():
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        global_magnitude_prune(_lenet(), 1.0)
    with pytest.raises(ConfigError, match=">= 0"):
        magnitude_prune(_lenet(), -1.0)
    with pytest.raises(ConfigError, match="unknown layer 'fc'"):
        magnitude_prune(_lenet(), {"fc": 1.0})
    with pytest.raises(ConfigError, match="before quantization"):
        magnitude_prune(apply_quantization(_lenet(), 4), 1.0)
