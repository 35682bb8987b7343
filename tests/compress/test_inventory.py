"""What a model offers to compress (prunetune.compress.inventory): prunable groups with their MAC
shares, quantizable layers, layers left alone with the reason; MACs per layer, counted by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunetune.compress import inventory
from prunetune.compress.inventory import layer_macs

X = torch.zeros(1, 1, 8, 8)
# per image at 8x8: conv 0 8 x 1 x 9 x 64, conv 2 16 x 8 x 9 x 64, linear 6 16 x 10
MACS = {"0": 4608, "2": 73728, "6": 160}


def _net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def test_layer_macs_by_hand():
    assert layer_macs(_net(), X) == MACS


def test_groups_layers_and_what_is_left_alone():
    net = _net().train()
    inv = inventory(net, X)
    total = sum(MACS.values())
    assert inv.total_macs == total and net.training  # its mode is left as it was
    assert [(g.name, g.kind, g.channels, g.divisor) for g in inv.groups] == [
        ("0", "conv", 8, 1),
        ("2", "conv", 16, 1),
    ]
    # a group's MACs: its own layer's and the next layer's (which reads its channels)
    assert inv.group("0").macs_share == pytest.approx((MACS["0"] + MACS["2"]) / total)
    assert inv.group("2").macs_share == pytest.approx((MACS["2"] + MACS["6"]) / total)
    assert [(q.name, q.kind, q.params, q.macs) for q in inv.quant_layers] == [
        ("0", "conv", 80, MACS["0"]),
        ("2", "conv", 1168, MACS["2"]),
        ("6", "linear", 170, MACS["6"]),
    ]
    assert inv.skipped == [("6", "produces the model output")]
    with pytest.raises(KeyError):
        inv.group("6")


def test_tied_weights_are_neither_pruned_nor_quantized_alone():
    net = _net()
    net.insert(3, nn.Conv2d(16, 16, 1))
    net.insert(4, nn.Conv2d(16, 16, 1))
    net[4].weight = net[3].weight  # tied
    inv = inventory(net, X)
    assert not {"3", "4"} & {q.name for q in inv.quant_layers}
    assert not {"3", "4"} & {g.name for g in inv.groups}
