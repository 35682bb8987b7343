"""K-means weight sharing (Deep Compression stage 2): levels, inits, centroid gradients, size."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunetune.compress import (
    KMEANS_INITS,
    apply_quantization,
    freeze_zeros,
    kmeans_size_bytes,
    magnitude_prune,
    share_weights,
)
from prunetune.compress.kmeans import kmeans_1d
from prunetune.compress.unstructured import ZeroMask
from prunetune.errors import ConfigError


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 50)
    )


@pytest.mark.parametrize("init", KMEANS_INITS)
@pytest.mark.parametrize("bits", [1, 2, 3, 5])
def test_each_layer_holds_at_most_2_pow_b_values(init, bits):
    model = _model()
    before = model[0].weight.detach().clone()
    share_weights(model, bits, init=init)
    for layer in (model[0], model[4]):
        assert torch.unique(layer.weight.detach()).numel() <= 2**bits
        assert layer.parametrizations.weight.original.shape == (2**bits,)
    # sharing approximates the weights: clearly better than a single shared value
    error = (model[0].weight.detach() - before).pow(2).mean()
    assert error < 0.5 * before.var()


def test_kmeans_1d_recovers_separated_clusters():
    values = torch.cat([torch.full((50,), -1.0), torch.full((30,), 0.5), torch.full((20,), 2.0)])
    values = values + 0.01 * torch.randn(100, generator=torch.Generator().manual_seed(0))
    for init in KMEANS_INITS:
        centroids, labels = kmeans_1d(values, 3, init=init)
        expected = torch.stack([values[:50].mean(), values[50:80].mean(), values[80:].mean()])
        torch.testing.assert_close(centroids, expected, msg=init)
        assert labels.tolist() == [0] * 50 + [1] * 30 + [2] * 20


def test_linear_init_keeps_the_few_large_weights():
    values = torch.cat(
        [torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 0.1, torch.tensor([3.0])]
    )
    linear, _ = kmeans_1d(values, 4, init="linear", iters=0)  # the initial assignment's means
    density, _ = kmeans_1d(values, 4, init="density", iters=0)
    assert linear.max() == pytest.approx(3.0) and density.max() < 1.0


def test_pruned_zeros_stay_zero_and_are_not_clustered():
    model = _model()
    magnitude_prune(model, 1.0)
    freeze_zeros(model)
    zeros = model[4].weight.detach() == 0
    share_weights(model, 2, init="density")
    w = model[4].weight.detach()
    assert torch.equal(w == 0, zeros)
    assert torch.unique(w[~zeros]).numel() <= 4


def test_sharing_a_deep_copy_leaves_the_original_alone():
    original = _model()
    magnitude_prune(original, 0.5)
    freeze_zeros(original)
    before = original[4].weight.detach().clone()
    share_weights(copy.deepcopy(original), 2)
    assert torch.equal(original[4].weight, before)
    assert isinstance(original[4].parametrizations.weight[0], ZeroMask)


def test_centroids_receive_the_summed_gradient_of_their_weights():
    model = _model()
    share_weights(model, {"4": 3})
    layer = model[4]
    weight = layer.weight  # computed from the codebook, inside autograd
    weight.retain_grad()
    nn.functional.linear(torch.randn(6, 8), weight, layer.bias).pow(2).sum().backward()
    labels = layer.parametrizations.weight[0].labels.long()
    expected = torch.zeros(8).index_add_(0, labels.flatten(), weight.grad.flatten())
    torch.testing.assert_close(layer.parametrizations.weight.original.grad, expected)
    assert not hasattr(model[0], "parametrizations")  # only the named layer is shared


def test_size_accounting_by_hand():
    model = _model()  # conv 8x3x3x3 = 216 weights + 8 bias; linear 8x50 = 400 weights + 50 bias
    linear_float = 4 * (400 + 50)
    assert kmeans_size_bytes(model, {"0": 2}) == (54 + 4 * 4 + 4 * 8) + linear_float
    assert kmeans_size_bytes(model, 5) == (135 + 4 * 32 + 32) + (250 + 4 * 32 + 200)
    share_weights(model, 5)  # the same once shared
    assert kmeans_size_bytes(model, 5) == (135 + 4 * 32 + 32) + (250 + 4 * 32 + 200)


def test_bad_settings_raise_config_error():
    with pytest.raises(ConfigError, match="k-means init 'kmeans\\+\\+'"):
        share_weights(_model(), 3, init="kmeans++")
    with pytest.raises(ConfigError, match="bit-width"):
        share_weights(_model(), 9)
    with pytest.raises(ConfigError, match="bit-width"):
        share_weights(_model(), {"0": 0})
    with pytest.raises(ConfigError, match="already quantized"):
        share_weights(apply_quantization(_model(), 4), 3)
