"""A model as it runs (prunetune.runtimes.materialize): parametrizations baked into plain weights,
simulation hooks dropped, the original untouched."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from prunetune.runtimes import materialize
from tests.runtimes.nets import Rounded, net


def test_materialize_bakes_parametrizations_and_drops_hooks():
    torch.manual_seed(0)
    model = net(4, 2)
    parametrize.register_parametrization(model[0], "weight", Rounded())
    model[2].register_forward_pre_hook(
        lambda module, args: (args[0] * 0,)
    )  # fake "activation quant"
    effective = model[0].weight.detach().clone()

    plain = materialize(model)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    assert type(plain[0]) is nn.Conv2d
    assert all(not m._forward_pre_hooks for m in plain.modules())
    torch.testing.assert_close(plain[0].weight, effective)
    # the original is untouched (deepcopy shares the injected Parametrized class with it)
    assert parametrize.is_parametrized(model[0])
    torch.testing.assert_close(model[0].weight, effective)
    assert len(model[2]._forward_pre_hooks) == 1
