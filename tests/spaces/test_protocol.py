"""Every space a strategy makes implements prunetune.spaces.Space, and no runner branches on a
space's class: what differs (a sweep's grid sampler, its end) is asked of the space itself."""

from __future__ import annotations

import ast
from pathlib import Path

import optuna
import pytest
import torch

from prunetune.compress import inventory
from prunetune.config import SearchSettings
from prunetune.models.factory import create_model
from prunetune.search.strategies import make_space
from prunetune.spaces import SearchSpace, Space

PACKAGE = Path(__file__).resolve().parents[2] / "prunetune"
SPACE_CLASSES = {"SearchSpace", "AllocationSpace", "SweepSpace", "TargetSpace"}


@pytest.mark.parametrize(
    ("strategy", "extra"),
    [
        ("targets", {}),
        ("search", {}),
        ("uniform", {}),
        ("global", {}),
        ("search", {"parametrization": "allocation"}),
    ],
)
def test_each_strategy_space_is_a_space_and_decodes_what_it_suggests(strategy, extra):
    torch.manual_seed(0)  # the same untrained weights in any process
    model = create_model("mnist_net", in_channels=1, num_classes=10, input_size=(28, 28)).eval()
    x = torch.zeros(1, 1, 28, 28)
    inner = SearchSpace.from_inventory(inventory(model, x), ratio_min=0.5, bits=[32, 8])
    space = make_space(SearchSettings.from_flat(strategy=strategy, **extra), inner, model, x, None)
    assert isinstance(space, Space), type(space)
    study = optuna.create_study(directions=["maximize"], sampler=space.sampler(0))
    assert space.exhausted(study) is False
    if strategy == "targets":  # full trials are enqueued by the planner: their params are explicit
        # a candidate may miss the target (channels too coarse): ask for another, as the planner
        for _ in range(20):
            candidate = space.suggest_candidate(study.ask())
            params = space.candidate_params(candidate, space.targets[0])
            if params is not None:
                break
    else:
        params = space.suggest(study.ask())
    assert set(space.decode(params).ratios) == set(inner.groups)


def test_no_module_branches_on_a_space_class():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "isinstance"
                and len(node.args) == 2
            ):
                names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                if names & SPACE_CLASSES:
                    offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, offenders
