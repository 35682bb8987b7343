"""The Conv2d/Linear layers of an export (prunetune.export.layers): which run int8 in an --int8
file and the card's per-layer table."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunetune.compress import CompressionConfig, compress
from prunetune.errors import PrunetuneError
from prunetune.export.layers import check_int8, layer_rows, runs_int8
from tests.search.studies import record


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(288, 4))


def test_int8_files_run_layers_of_8_bits_or_less_and_unnamed_ones_int8():
    bits = {"0": 4, "3": 32}
    assert runs_int8("0", bits, int8=True) and runs_int8("other", bits, int8=True)
    assert not runs_int8("3", bits, int8=True) and not runs_int8("0", bits, int8=False)


def test_the_card_lists_each_layers_channels_bits_and_how_it_runs():
    base, x = _net(), torch.zeros(1, 1, 8, 8)
    small = compress(base, CompressionConfig(ratios={"0": 0.5}), x)
    rows = layer_rows(base, small, {"0": 8, "3": 32}, int8=True)
    assert [
        (r.layer, r.type, r.base_channels, r.kept_channels, r.bits, r.runs_as) for r in rows
    ] == [
        ("0", "Conv2d", 8, 4, 8, "int8"),
        ("3", "Linear", 4, 4, 32, "float32"),
    ]


def test_int8_of_a_trial_with_every_layer_float_is_refused():
    config = CompressionConfig(bits={"0": 32, "3": 32})
    with pytest.raises(PrunetuneError, match="trial 3 keeps every layer float"):
        check_int8(_net(), config, record(3), int8=True)
    check_int8(_net(), config, record(3), int8=False)
    check_int8(_net(), CompressionConfig(bits={"0": 8, "3": 32}), record(3), int8=True)
