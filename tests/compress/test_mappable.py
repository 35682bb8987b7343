"""Which traced ops channel indices map through (prunetune.compress.mappable): element-wise and
reducing ops do, a pixel shuffle does not (its reason names the shapes), a permute to
channels-last opens a region whose ops are judged on their last dimension."""

from __future__ import annotations

import torch
from torch import nn

from prunetune.compress.graph import build_graph
from prunetune.compress.mappable import channels_last_regions, unmappable


class Shuffled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.shuffle = nn.Conv2d(3, 8, 3, padding=1), nn.PixelShuffle(2)
        self.conv2, self.fc = nn.Conv2d(2, 4, 3), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv2(self.shuffle(self.conv(x))).mean((2, 3)))


class ChannelsLast(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm, self.fc = (
            nn.Conv2d(3, 8, 3, padding=1),
            nn.LayerNorm(8),
            nn.Linear(8, 2),
        )

    def forward(self, x):
        return self.fc(self.norm(self.conv(x).permute(0, 2, 3, 1)).mean((1, 2)))


def _ops(model: nn.Module) -> dict[str, object]:
    """The traced op nodes of `model` by their autograd name (PermuteBackward0, ...)."""
    graph = build_graph(model.eval(), torch.zeros(1, 3, 8, 8))
    return {n.grad_fn.name(): n for n in graph.module2node.values() if "ElementWise" in n.name}


def test_a_pixel_shuffle_cannot_be_mapped_and_says_why_and_a_mean_can():
    ops = _ops(Shuffled())
    assert unmappable(ops["PixelShuffleBackward0"]) == (
        "PixelShuffleBackward0 [1, 8, 8, 8] -> [1, 2, 16, 16]"
    )
    assert unmappable(ops["MeanBackward1"]) is None


def test_a_permute_to_channels_last_opens_a_region():
    model = ChannelsLast()
    graph = build_graph(model.eval(), torch.zeros(1, 3, 8, 8))
    region, problems = channels_last_regions(list(graph.module2node.values()))
    assert problems == {} and graph.module2node[model.norm] in region
    permute = _ops(model)["PermuteBackward0"]
    assert unmappable(permute) is None  # into channels-last: the region maps it
    assert unmappable(permute, channels_last=True) == "PermuteBackward0 moves the channel dimension"
