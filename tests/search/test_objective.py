"""The trial pipeline's pieces (prunetune.search.objective) that need no search: per-trial seeds
and BitOPs. (Trials themselves: every search test.)"""

from __future__ import annotations

import pytest
import torch

from prunetune.compress import CompressionConfig, compress
from prunetune.measure import count_macs
from prunetune.models import build_for
from prunetune.search.objective import _bitops, trial_seed

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MNIST_NET_LAYER_MACS = {"0": 112_896, "2": 3_612_672, "5": 25_690_112, "7": 10_240}


def test_trial_seeds_are_fixed_distinct_and_in_range():
    seeds = [trial_seed(study, n) for study in (0, 1, 2**31 - 2) for n in range(200)]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2**31 - 1 for s in seeds)
    assert trial_seed(0, 0) == 17 and trial_seed(1, 2) == 1_000_003 + 2 * 7919 + 17


def test_bitops_fall_with_the_bit_width():
    model = build_for("mnist_net", (1, 28, 28), 10)
    example = torch.zeros(1, 1, 28, 28)
    ops = {}
    for bits in (8, 32):
        config = CompressionConfig(bits={n: bits for n in MNIST_NET_LAYER_MACS})
        macs, per = count_macs(compress(model, config, example), example, per_module=True)
        ops[bits] = _bitops(per, config.bits, macs)
    assert ops[32] == 29_425_920 * 32 * 32
    assert ops[8] == 29_425_920 * 8 * 8


def test_macs_outside_the_counted_layers_count_as_float_bitops():
    # 100 MACs no counted layer holds stay at 32 x 32 bits
    assert _bitops({"a": 10}, {"a": 4}, 110) == 10 * 4 * 8 + 100 * 32 * 32
    assert _bitops({"a": 10}, {"a": 32}, 10) == 10 * 32 * 32
