"""The dependency floors and ceilings in pyproject.toml are true: the installed versions satisfy
them, the features the floors stand for exist, and every private internal prunetune relies on
(the reason for a ceiling) is still there. A new release that moves one fails here, by name,
instead of deep inside a search."""
from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def requirements() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


@pytest.mark.parametrize("req", requirements(), ids=lambda r: r.name)
def test_installed_versions_satisfy_pyproject(req):
    installed = metadata.version(req.name)
    assert req.specifier.contains(installed, prereleases=True), f"{req.name} {installed} not in {req.specifier}"


def test_the_floors_stand_for_features_the_code_calls():
    import optuna
    import torch_pruning

    # optuna >= 5.0: constraints are set on the trial (absent from 4.x wheels)
    assert hasattr(optuna.trial.Trial, "set_constraint")
    # torch-pruning >= 1.6: the dependency graph traces channels-last permutes (ConvNeXt)
    assert hasattr(torch_pruning.DependencyGraph, "build_dependency")


def test_the_private_internals_behind_the_ceilings_are_still_there():
    """Each one is used on purpose (see the comment in pyproject.toml); a release that drops one
    needs a code change, and the ceiling keeps users from meeting it first."""
    import optuna
    import torch_pruning
    from ray.tune.search.optuna import OptunaSearch

    study = optuna.create_study(storage=optuna.storages.RDBStorage("sqlite:///:memory:"))
    trial = study.ask()
    assert hasattr(study, "_storage") and hasattr(trial, "_trial_id")  # search/study.py recovery
    assert hasattr(study._storage, "_backend")  # study.storage_url: the RDB URL behind the cache
    assert hasattr(torch_pruning.DependencyGraph, "_trace")  # compress/graph.py SafeDependencyGraph
    for name in ("_ElementWiseOp", "_ConcatOp", "_SplitOp", "_ReshapeOp", "_UnbindOp", "_ExpandOp",
                 "_SliceOp", "_OutputOp"):
        assert hasattr(torch_pruning.ops, name), name  # compress/graph.py _OP_CLASSES
    searcher = OptunaSearch(space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="m", mode="max")
    assert hasattr(searcher, "_ot_trials") and hasattr(searcher, "_ot_study")  # search/ray_runner.py
