"""Architectures outside prunetune's zoo, written as a user would (issue 22's unseen-model check):
`--model unseen_nets:regnet` with bench/ on the import path."""

from __future__ import annotations

import torch.nn as nn
import torchvision


def regnet(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """torchvision's RegNetX-400MF (grouped 3x3 convs, 4 stages) for small grey images: a stride-1
    3x3 stem for `in_channels` channels, `num_classes` outputs, trained from scratch."""
    model = torchvision.models.regnet_x_400mf(num_classes=num_classes)
    model.stem[0] = nn.Conv2d(in_channels, 32, kernel_size=3, stride=1, padding=1, bias=False)
    return model
