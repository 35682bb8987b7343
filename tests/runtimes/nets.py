"""Small nets and inputs the runtime tests share: the MNIST Net's shape at pruned widths, a residual
net with pruned-looking widths, seeded calibration batches, a hand-made weight fake-quant."""

from __future__ import annotations

import torch
from torch import nn

COMPUTE_INT8_OPS = {"QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "ConvInteger"}


def net(c1: int, c2: int, hidden: int = 64) -> nn.Sequential:
    """The MNIST Net's shape with `c1`/`c2` filters (what pruning leaves), smaller hidden layer."""
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(c2 * 28 * 28, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    ).eval()


class Block(nn.Module):
    def __init__(self, c: int, mid: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = nn.Conv2d(mid, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


def pruned_resnet() -> nn.Module:
    """A residual net with odd, pruned-looking widths and non-trivial batch-norm statistics."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1),
        nn.ReLU(),
        Block(5, 3),
        Block(5, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 10),
    )
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def calibration(n: int = 4, shape: tuple[int, ...] = (1, 28, 28)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(16, *shape, generator=g) for _ in range(n)]


class Rounded(nn.Module):
    """A hand-made weight fake-quant: round to a 0.05 grid."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.round(w / 0.05) * 0.05
