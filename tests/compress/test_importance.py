"""Channel importance criteria (prunetune.compress.importance), seen through what `prune` keeps on
a net whose channel scores are set by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunetune.compress import prune
from prunetune.compress.importance import IMPORTANCES, accumulate_gradients, get_importance
from prunetune.errors import ConfigError, UnknownNameError

X = torch.zeros(1, 1, 6, 6)


def _net(batch_norm: bool = False) -> nn.Sequential:
    """conv(1->8) [bn] relu conv(8->4) pool flatten linear: filter i of the first conv has weights
    i + 1, the second conv reads every channel with the same weight, so the magnitude of channel i
    grows with i; the batch norm's scales run the other way."""
    layers = [nn.Conv2d(1, 8, 3, padding=1, bias=False)]
    layers += [nn.BatchNorm2d(8)] if batch_norm else []
    layers += [nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    net = nn.Sequential(*layers, nn.Linear(4, 3)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.arange(1.0, 9.0).view(8, 1, 1, 1).expand(8, 1, 3, 3))
        net[-4].weight.fill_(0.1)
        if batch_norm:
            net[1].weight.copy_(torch.arange(8.0, 0.0, -1.0))
    return net


def _kept(net: nn.Sequential, importance: str, seed: int = 0) -> list[int]:
    """Which of the first conv's filters the pruned copy kept (by their weight value - 1)."""
    pruned = prune(net, {"0": 0.5}, X, importance=importance, seed=seed)
    return sorted(int(w) - 1 for w in pruned[0].weight[:, 0, 0, 0].tolist())


@pytest.mark.parametrize("importance", ["l1", "l2"])
def test_magnitude_criteria_keep_the_largest_filters(importance):
    assert _kept(_net(), importance) == [4, 5, 6, 7]


def test_bn_scale_keeps_the_largest_scales_and_falls_back_to_l1_without_batch_norm():
    assert _kept(_net(batch_norm=True), "bn_scale") == [0, 1, 2, 3]
    assert _kept(_net(), "bn_scale") == [4, 5, 6, 7]


def test_random_choice_is_seeded():
    assert _kept(_net(), "random", seed=1) == _kept(_net(), "random", seed=1)
    assert len({tuple(_kept(_net(), "random", seed=s)) for s in range(6)}) > 1


def test_criteria_are_registered_by_name():
    assert set(IMPORTANCES.names()) == {"bn_scale", "l1", "l2", "random", "taylor"}
    assert get_importance("taylor").needs_gradients and not get_importance("l2").needs_gradients
    with pytest.raises(UnknownNameError, match="unknown importance criterion 'l3'"):
        get_importance("l3")


def test_taylor_gradients_come_from_labelled_batches_and_leave_the_mode_alone():
    net = _net().train()
    batches = [(torch.randn(2, 1, 6, 6), torch.tensor([0, 2]))] * 3
    assert accumulate_gradients(net, batches, max_batches=2) == 2
    assert net.training and net[0].weight.grad is not None
    with pytest.raises(ConfigError, match="needs data"):
        accumulate_gradients(net, None)
    with pytest.raises(ConfigError, match="at least one"):
        accumulate_gradients(net, [])
