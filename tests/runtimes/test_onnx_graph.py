"""ONNX graphs (prunetune.runtimes.onnx_graph): export without warnings, torch layer names mapped
to the nodes the exporter made of them."""

from __future__ import annotations

import pytest
import torch

from prunetune.errors import ConfigError
from prunetune.runtimes import node_module, onnx_nodes_of, to_onnx
from tests.runtimes.nets import net, pruned_resnet


def test_exclude_names_map_torch_layers_to_onnx_nodes():
    fp32 = to_onnx(pruned_resnet(), torch.randn(1, 3, 32, 32))
    assert onnx_nodes_of(fp32, ["2.conv1", "6"]) == ["/2/conv1/Conv", "/6/Gemm"]
    assert onnx_nodes_of(fp32, ["/3/conv2/Conv"]) == ["/3/conv2/Conv"]
    with pytest.raises(ConfigError, match="no node"):
        onnx_nodes_of(fp32, ["2.bn1"])  # batch norm is folded into the conv


@pytest.mark.parametrize(
    "name, module",
    [
        ("/0/Conv", "0"),
        ("/conv1/Conv", "conv1"),
        ("/layer1/layer1.0/conv1/Conv", "layer1.0.conv1"),
        ("/layer2/layer2.0/downsample/downsample.0/Conv", "layer2.0.downsample.0"),
        ("/features/features.3/Conv", "features.3"),
    ],
)
def test_node_module(name, module):
    assert node_module(name) == module


def test_export_emits_no_warnings():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        to_onnx(net(2, 2), torch.randn(1, 1, 28, 28))
    assert not caught, [str(w.message)[:80] for w in caught]
