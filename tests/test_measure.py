"""MAC counting: the total and per-layer figures keyed by the model's own module names."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from prunetune.cli import main
from prunetune.compress import CompressionConfig, compress
from prunetune.measure import count_macs
from prunetune.models import build_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MNIST_NET_LAYER_MACS = {
    "0": 112_896,
    "2": 3_612_672,
    "5": 25_690_112,
    "7": 10_240,
}  # conv1 conv2 fc1 fc2


@pytest.mark.parametrize(
    "name, shape",
    [("mnist_net", (1, 28, 28)), ("resnet18", (3, 32, 32)), ("mobilenet_v2", (3, 32, 32))],
)
def test_per_layer_macs_sum_to_the_total_under_the_models_own_names(name, shape):
    model = build_for(name, shape, 10)
    total, per = count_macs(model, torch.zeros(2, *shape), per_module=True)
    modules = dict(model.named_modules())
    assert per and all(isinstance(modules[n], nn.Conv2d | nn.Linear) for n in per)
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert set(per) == set(convs)  # these models have MACs only in conv/linear layers
    assert sum(per.values()) == total


class _Attention(nn.Module):
    """A parent doing a bare matmul in its own forward: MACs outside any leaf layer."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        return y @ y.transpose(-1, -2)


def test_per_layer_macs_leave_only_the_non_layer_remainder_and_survive_wrappers():
    wrapped = nn.Sequential(nn.ModuleDict({"att": _Attention()})["att"])
    total, per = count_macs(wrapped, torch.zeros(1, 4, 8), per_module=True)
    assert per == {"0.proj": 4 * 8 * 8}
    assert total - sum(per.values()) == 4 * 8 * 4  # the (4x8) @ (8x4) matmul


def test_fake_quantized_layers_keep_their_names_and_macs():
    model = build_for("tiny_cnn", (1, 8, 8), 10)
    example = torch.zeros(1, 1, 8, 8)
    _, float_per = count_macs(model, example, per_module=True)
    small = compress(model, CompressionConfig(bits={n: 8 for n in float_per}), example)
    assert count_macs(small, example, per_module=True)[1] == float_per


def test_info_json_shows_each_layers_macs(capsys):
    assert main(["info", "--model", "mnist_net", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    macs = {x["layer"]: x["macs"] for x in data["layers"] if x["macs"]}
    assert macs == MNIST_NET_LAYER_MACS
    assert sum(macs.values()) == data["macs"] == 29_425_920
