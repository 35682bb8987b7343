"""One compression configuration and the pipeline that applies it (prunetune.compress.config):
validation, JSON round trip, names checked against the model, the base left alone, the size."""

from __future__ import annotations

import json

import pytest
import torch

from prunetune.compress import CompressionConfig, compress, compressed_size_bytes, size_bytes
from prunetune.compress.kmeans import kmeans_size_bytes
from prunetune.compress.quantize import quant_layers
from prunetune.compress.unstructured import sparsity
from prunetune.errors import ConfigError
from prunetune.measure import count_macs
from prunetune.models import build_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_config_round_trips_through_json():
    config = CompressionConfig(
        ratios={"0": 0.75, "2": 0.9375},
        bits={"5": 4, "7": 8},
        importance="taylor",
        round_to=2,
        act_bits=8,
        unstructured_sparsity=0.5,
    )
    again = CompressionConfig.from_dict(json.loads(json.dumps(config.as_dict())))
    assert again == config


@pytest.mark.parametrize(
    "change, message",
    [
        ({"ratios": {"0": 1.0}}, r"\[0, 1\)"),
        ({"ratios": {"0": -0.2}}, r"\[0, 1\)"),
        ({"ratios": [0.5]}, "mapping"),
        ({"bits": {"0": 9}}, "bit-width"),
        ({"bits": {"0": 3.5}}, "bit-width"),
        ({"act_bits": 1}, "bit-width for activations"),
        ({"importance": "magic"}, "unknown importance criterion 'magic'; known: bn_scale, l1"),
        ({"round_to": 0}, "round_to"),
        ({"unstructured_sparsity": 0.5, "unstructured_q": 1.0}, "not both"),
        ({"unstructured_sparsity": 1.2}, "unstructured_sparsity"),
        ({"kmeans_bits": 4, "bits": {"0": 4}}, "give one of them"),
        ({"kmeans_bits": 12}, "bit-width"),
        ({"kmeans_init": "best"}, "k-means init"),
        ({"ratio": {}}, "unknown compression config keys: ratio"),
    ],
)
def test_invalid_configs_raise_config_error(change, message):
    with pytest.raises(ConfigError, match=message):
        CompressionConfig.from_dict(change)


def test_compress_checks_names_against_the_model_and_leaves_the_base_alone():
    base = build_for("tiny_cnn", (1, 8, 8), 4)
    x = torch.zeros(1, 1, 8, 8)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    with pytest.raises(ConfigError, match="unknown pruning group 'conv9'"):
        compress(base, CompressionConfig(ratios={"conv9": 0.5}), x)
    with pytest.raises(ConfigError, match="unknown layer 'conv9' for a bit-width"):
        compress(base, CompressionConfig(bits={"conv9": 4}), x)
    small = compress(base, CompressionConfig(ratios={"0": 0.5, "3": 0.5}, bits={"0": 4, "8": 8}), x)
    assert count_macs(small, x) < count_macs(base, x)
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())
    assert (
        compressed_size_bytes(small, CompressionConfig(bits={"0": 4, "8": 8}))
        == size_bytes(small, {"0": 4, "8": 8})
        < size_bytes(small, 32)
    )


def test_unstructured_and_kmeans_steps_follow_the_pruning():
    torch.manual_seed(0)
    base = build_for("tiny_cnn", (1, 8, 8), 4)
    x = torch.zeros(1, 1, 8, 8)
    sparse = compress(base, CompressionConfig(ratios={"0": 0.5}, unstructured_sparsity=0.5), x)
    sizes = {name: layer.weight.numel() for name, layer in quant_layers(sparse).items()}
    zeros = sum(sparsity(sparse)[name] * n for name, n in sizes.items())
    assert sparse[0].out_channels == 4 and zeros / sum(sizes.values()) == pytest.approx(
        0.5, abs=0.01
    )
    shared = compress(base, CompressionConfig(kmeans_bits=2), x)
    assert all(len(torch.unique(shared[i].weight)) <= 4 for i in (0, 3))
    config = CompressionConfig(kmeans_bits=2)
    assert compressed_size_bytes(shared, config) == kmeans_size_bytes(shared, 2)
