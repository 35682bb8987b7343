"""What the trials of one search share (prunetune.search.setup.SearchSetup): picklable without its
runners, the Python API's in-memory base told from the CLI's, the example input either way."""

from __future__ import annotations

import pickle

import torch
from torch import nn

from prunetune.data import create_dataset
from prunetune.models import BaseModel
from prunetune.search.setup import SearchSetup
from prunetune.search.workload import UserWorkload


def _train(model: nn.Module) -> None:
    """A train_fn that leaves the model as it is (module level: a setup pickles with it)."""


def _evaluate(model: nn.Module) -> dict:
    return {"accuracy": 0.0}


def _setup(tmp_path, bundle=None, example=None) -> SearchSetup:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    workload = UserWorkload(_train, _evaluate)
    return SearchSetup(
        config=None,  # nothing here reads the search's settings
        bundle=bundle,
        base=BaseModel(model, {"num_classes": 10}, None),
        space=None,
        base_metrics={"accuracy": 0.9},
        weights_dir=tmp_path,
        skipped_layers=[],
        workload=workload,
        example=example,
    )


def test_a_setup_travels_without_its_runners(tmp_path):
    setup = _setup(tmp_path, example=torch.ones(1, 1, 8, 8))
    setup.runners[("torch", 1)] = object()  # an ONNX Runtime session would not pickle
    again = pickle.loads(pickle.dumps(setup))
    assert again.runners == {} and setup.runners  # the sender keeps its own
    assert again.base_metrics == {"accuracy": 0.9} and torch.equal(again.example, setup.example)


def test_the_example_input_is_the_callers_or_one_of_the_data_sets_shape(tmp_path):
    mine = _setup(tmp_path, example=torch.ones(1, 1, 8, 8))
    assert mine.in_memory and torch.equal(mine.example_input(), torch.ones(1, 1, 8, 8))
    cli = _setup(tmp_path, bundle=create_dataset("digits"))
    assert not cli.in_memory and cli.example_input().shape == (1, 1, 8, 8)
