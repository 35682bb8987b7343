"""The dependency floors and ceilings in pyproject.toml are true: the installed versions satisfy
them, the features the floors stand for exist, prunetune uses no private name of optuna, mlflow,
ray or torch_pruning beyond the listed ones (an AST scan of the package), and those are still
there. A new release that moves one fails here, by name, instead of deep inside a search."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
PACKAGE = PYPROJECT.parent / "prunetune"


def requirements() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


@pytest.mark.parametrize("req", requirements(), ids=lambda r: r.name)
def test_installed_versions_satisfy_pyproject(req):
    installed = metadata.version(req.name)
    assert req.specifier.contains(installed, prereleases=True), (
        f"{req.name} {installed} not in {req.specifier}"
    )


def test_the_floors_stand_for_features_the_code_calls():
    import optuna
    import torch_pruning

    # optuna >= 5.0: constraints are set on the trial (absent from 4.x wheels)
    assert hasattr(optuna.trial.Trial, "set_constraint")
    # torch-pruning >= 1.6: the dependency graph traces channels-last permutes (ConvNeXt)
    assert hasattr(torch_pruning.DependencyGraph, "build_dependency")


def test_the_private_internals_behind_the_ceilings_are_still_there():
    """Each one is used on purpose (see ALLOWED and the comment in pyproject.toml); a release that
    drops one needs a code change, and the ceiling keeps users from meeting it first."""
    import torch_pruning

    assert hasattr(torch_pruning.DependencyGraph, "_trace")  # compress/graph.py SafeDependencyGraph


# The private names of the packages below that prunetune may use, each with why ("ideally none").
ALLOWED = {
    "torch_pruning.DependencyGraph._trace": "compress/graph.py: SafeDependencyGraph checks the "
    "traced graph before torch-pruning builds its index mappings; build_dependency has no hook",
}
CHECKED = ("optuna", "mlflow", "ray", "torch_pruning")
# Private attributes of objects of other libraries (never of CHECKED): the scan cannot see an
# object's type, so every private attribute that prunetune does not define itself is named here.
OTHER_LIBRARIES = {
    "_forward_hooks": "torch.nn.Module",
    "_forward_pre_hooks": "torch.nn.Module",
    "_tensor_name": "torch.nn.utils.prune.BasePruningMethod",
    "_input_metadata": "torch autograd node",
    "_saved_dims": "torch autograd node (permute)",
    "_saved_dim*": "torch autograd node (transpose: _saved_dim0, _saved_dim1)",
    "_replace": "urllib.parse.SplitResult (a namedtuple: _replace is its public API)",
}


def test_no_private_api_of_optuna_mlflow_ray_or_torch_pruning_beyond_the_allowed():
    """An AST scan of prunetune/: private (`_x`, not dunder) names imported from, reached through
    or overridden in a class of optuna / mlflow / ray / torch_pruning, and private attributes of
    objects that prunetune does not define and OTHER_LIBRARIES does not place in another library.
    Anything found must be in ALLOWED, and everything listed must still be found."""
    from tests.private_api import scan

    found, unknown = scan(PACKAGE, CHECKED)
    assert unknown <= OTHER_LIBRARIES.keys(), (
        f"private attributes of unknown objects: "
        f"{sorted(unknown - OTHER_LIBRARIES.keys())} (an optuna/mlflow/ray/torch_pruning object's?)"
    )
    assert found == ALLOWED.keys(), (
        f"not allowed: {sorted(found - ALLOWED.keys())}; "
        f"allowed but no longer used: {sorted(ALLOWED.keys() - found)}"
    )
    assert unknown == OTHER_LIBRARIES.keys(), (
        f"no longer used: {sorted(OTHER_LIBRARIES.keys() - unknown)}"
    )


def test_the_scan_finds_each_kind_of_private_use(tmp_path):
    """The scan itself: an import, an attribute path, an override, an unknown object's private
    attribute and a getattr by name are found; prunetune's own private names are not."""
    from tests.private_api import scan

    (tmp_path / "m.py").write_text(
        "import optuna\nimport torch_pruning as tp\nfrom mlflow.store import _x\n"
        "from ray.tune import Searcher\nfrom torch import nn\n"
        "class S(Searcher):\n    def _own(self): ...\n"
        "class Mine:\n    _mine = 1\n"
        "def f(study, m):\n    m._mine\n    nn.modules.conv._ConvNd\n"
        "    return study._storage, tp.ops._ConcatOp, getattr(m, '_hidden', None)\n"
    )
    found, unknown = scan(tmp_path, CHECKED)
    assert found == {"mlflow.store._x", "ray.tune.Searcher._own", "torch_pruning.ops._ConcatOp"}
    assert unknown == {"_storage", "_hidden"}
