"""Training helpers on tiny real models: batch-norm recalibration."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from prunetune.data import BalancedSubsetSampler
from prunetune.models import evaluate, recalibrate_bn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n: int = 400) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 4
    x = torch.randn(n, 1, 6, 6, generator=g) + 3.0 * y.view(-1, 1, 1, 1)  # class = brightness
    return TensorDataset(x, y)


def test_recalibration_restores_statistics_that_no_longer_match():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 3, 3, padding=1)
    model = nn.Sequential(conv, nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(108, 4))
    data = _data()
    bn = model[1]
    bn.running_mean.fill_(50.0)  # stale, as after pruning and a few fine-tune steps
    bn.running_var.fill_(0.01)
    sampler = BalancedSubsetSampler(data.tensors[1], per_class=100, seed=0)
    assert recalibrate_bn(model, data, sampler=sampler, batch_size=50) == 1
    with torch.no_grad():
        acts = conv(data.tensors[0])  # all 400 images were sampled, in 8 equal batches
    # the average of the batches' means is the mean; of their variances, close to the variance
    assert torch.allclose(bn.running_mean, acts.mean(dim=(0, 2, 3)), atol=1e-4)
    assert torch.allclose(bn.running_var, acts.var(dim=(0, 2, 3)), rtol=0.05)
    assert bn.momentum == 0.1 and not model.training
    assert evaluate(model, data)["accuracy"] >= 0  # runs in eval mode afterwards


def test_a_model_without_batch_norm_is_left_alone():
    class Untouchable(nn.Module):
        def forward(self, x):
            raise AssertionError("no forward pass expected")

    data = _data(40)
    sampler = BalancedSubsetSampler(data.tensors[1], per_class=10, seed=0)
    assert recalibrate_bn(nn.Sequential(nn.Linear(4, 4), Untouchable()), data, sampler=sampler) == 0
