"""Channel groups of a traced model (prunetune.compress.graph): plain, residual and grouped
groups, what is left alone and why, the caller's model left as it was, tied weights."""

from __future__ import annotations

import torch
from torch import nn

from prunetune.compress.graph import analyse, build_graph, tied_layers

X = torch.zeros(1, 3, 8, 8)


class Residual(nn.Module):
    """conv a feeds an add with conv c's output: a and c lose the same channels."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 4, 3, padding=1)
        self.c = nn.Conv2d(4, 8, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.a(x))
        return self.head(torch.relu(a + self.c(torch.relu(self.b(a)))).mean((2, 3)))


def _groups(model: nn.Module) -> dict[str, tuple]:
    analysis = analyse(model.eval(), X)
    return {g.name: (g.kind, g.channels, g.divisor, g.out_layers) for g in analysis.prunable}


def test_a_residual_add_couples_its_inputs_and_the_classifier_is_left_alone():
    assert _groups(Residual()) == {
        "a": ("residual", 8, 1, ("a", "c")),  # c is pruned with a, in a's group
        "b": ("conv", 4, 1, ("b",)),
    }
    assert analyse(Residual().eval(), X).skipped == [("head", "produces the model output")]


def test_a_grouped_convolution_keeps_multiples_of_its_groups():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=2), nn.Flatten(), nn.LazyLinear(5)
    )
    model(X)
    assert _groups(model)["0"] == ("grouped", 8, 2, ("0",))


def test_tracing_leaves_the_callers_model_as_it_was():
    model = Residual().train()
    model.a.weight.requires_grad_(False)
    build_graph(model, X)
    assert model.training and not model.a.weight.requires_grad and model.b.weight.requires_grad


def test_a_model_whose_trace_fails_has_every_layer_skipped_with_the_reason():
    class Fails(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            raise RuntimeError("no tracing today")

    analysis = analyse(Fails(), X)
    assert analysis.groups == [] and analysis.skipped[0][0] == "conv"
    assert "dependency tracing failed (RuntimeError: no tracing today)" in analysis.skipped[0][1]


def test_tied_layers_map_to_a_layer_they_share_with():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
    model[2].weight = model[0].weight
    assert tied_layers(model) == {"0": "2", "2": "0"}
    assert tied_layers(nn.Sequential(nn.Linear(2, 2))) == {}
