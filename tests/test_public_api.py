"""`prunetune.__all__` is what its docstrings say in any import order: each name is the function or
class its module defines (never a module that an import of a subpackage put in its place), and the
cheap functions work when called. Checked in a fresh interpreter that takes every public name
before any subpackage is imported, then imports every subpackage and module of prunetune (the
order that once turned `prunetune.compress` into a module): the names are still the same objects,
and each is then checked and called."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import prunetune

REPO = Path(__file__).resolve().parent.parent

# one fresh interpreter: every module first, then every public name
CHECK = r"""
import importlib, inspect, pkgutil, warnings
import torch
from torch import nn
import prunetune

first = {name: getattr(prunetune, name) for name in prunetune.__all__}  # before any subpackage
for info in pkgutil.walk_packages(prunetune.__path__, "prunetune."):
    if info.name != "prunetune.__main__":
        importlib.import_module(info.name)
changed = [name for name in prunetune.__all__ if getattr(prunetune, name) is not first[name]]
assert not changed, f"importing the subpackages replaced prunetune.{changed}"

kinds = {}
for name in prunetune.__all__:
    obj = getattr(prunetune, name)
    assert not inspect.ismodule(obj), f"prunetune.{name} is a module"
    if name != "__version__":  # the object its module defines, documented
        assert obj is getattr(importlib.import_module(obj.__module__), obj.__name__), name
        assert obj.__doc__ and obj.__doc__.strip(), f"prunetune.{name} has no docstring"
    kinds[name] = "class" if inspect.isclass(obj) else "function" if inspect.isfunction(obj) \
        else type(obj).__name__

model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
x = torch.randn(1, 1, 12, 12)
config = prunetune.CompressionConfig(ratios={"0": 0.5})
small = prunetune.compress_model(model, config, x)
assert small is not model and small[0].out_channels == 4
assert prunetune.prune(model, 0.5, x)[0].out_channels == 4
assert 0 < prunetune.count_macs(small, x) < prunetune.count_macs(model, x)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    old = prunetune.compress(model, config, x)  # the name before compress_model: still works
assert old[0].out_channels == 4 and caught[0].category is DeprecationWarning
assert prunetune.compress.inventory is not None  # and the subpackage is the subpackage
for name in ("export_model", "load_compressed", "run_search"):  # too costly to call here
    inspect.signature(getattr(prunetune, name))
print(sorted(kinds.items()))
"""


def test_every_public_name_is_what_its_docstring_says_after_every_import():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", CHECK],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    kinds = dict(eval(proc.stdout.strip().splitlines()[-1]))  # noqa: S307 - our own repr
    assert kinds == {
        "CompressionConfig": "class",
        "SearchRun": "class",
        "__version__": "str",
        "compress_model": "function",
        "count_macs": "function",
        "export_model": "function",
        "load_compressed": "function",
        "prune": "function",
        "run_search": "function",
    }


def test_no_public_name_is_also_a_module_name():
    """The rule behind the test above: a submodule named like a public name replaces it on the
    package as soon as anything imports that submodule."""
    modules = {info.name for info in pkgutil.iter_modules(prunetune.__path__)}
    assert not modules & set(prunetune.__all__)
