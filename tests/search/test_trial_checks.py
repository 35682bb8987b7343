"""Checks that fail one trial with the cause (prunetune.search.trial_checks): a train_fn that
changed the model's architecture, an eval_fn that returned no objective's metric. (A search in
which such a trial fails alone: tests/search/test_python_api.py.)"""

from __future__ import annotations

import pytest
from torch import nn

from prunetune.search.trial_checks import architecture, check_architecture, missing_objectives
from prunetune.search.workload import UserFunctionError


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 2))


def test_fine_tuned_weights_keep_the_architecture():
    model = _net()
    before = architecture(model)
    for p in model.parameters():
        p.data.add_(1.0)
    check_architecture(before, model)


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda m: m.__setitem__(3, nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 2))), "'3'"),
        (lambda m: setattr(m[0], "stride", (2, 2)), "module '0'"),
        (lambda m: setattr(m[3], "weight", nn.Parameter(m[3].weight[:, :8])), "tensor '3.weight'"),
    ],
    ids=["new head", "stride", "weight shape"],
)
def test_a_changed_architecture_fails_the_trial_naming_the_difference(change, named):
    model = _net()
    before = architecture(model)
    change(model)
    with pytest.raises(
        UserFunctionError, match=f"train_fn changed the model's architecture .*{named}"
    ):
        check_architecture(before, model)


def test_an_objective_metric_eval_fn_did_not_return_fails_the_trial():
    missing_objectives(["accuracy", "map:maximize"], {"accuracy": 0.9, "map": 0.5})
    missing_objectives(["size"], {"size_bytes": 10})  # a standard objective's own key
    with pytest.raises(
        UserFunctionError, match=r"eval_fn returned no 'map' \(named as objective\)"
    ):
        missing_objectives(["accuracy", "map:maximize"], {"accuracy": 0.9, "loss": 1.0})
