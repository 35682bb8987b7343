"""Checks that fail one trial (never the search) with a UserFunctionError naming the cause: a
train_fn that changed the model's architecture, an eval_fn that returned no objective's metric."""

from __future__ import annotations

from torch import nn

from prunetune.search.objectives import get_objective
from prunetune.search.workload import UserFunctionError


def architecture(model: nn.Module) -> tuple:
    """What a compressed-model file rebuilds: every module's name, type and settings (its
    extra_repr: strides, paddings, ...), every parameter's and buffer's name and shape."""
    modules = tuple(
        (name, f"{type(m).__name__}({m.extra_repr()})") for name, m in model.named_modules()
    )
    tensors = tuple((name, tuple(t.shape)) for name, t in model.state_dict().items())
    return modules, tensors


def check_architecture(before: tuple, model: nn.Module) -> None:
    """UserFunctionError, naming the first difference, when fine-tuning (a user's train_fn)
    changed the model's architecture: its weights file could not be rebuilt as the model that
    was measured, so the trial fails (alone) instead of the reload at the end of the search."""
    after = architecture(model)
    if after == before:
        return
    for kind, old, new in (("module", before[0], after[0]), ("tensor", before[1], after[1])):
        diff = sorted(set(old) ^ set(new))
        if diff:
            name = diff[0][0] or "(the model itself)"
            raise UserFunctionError(
                f"train_fn changed the model's architecture ({kind} {name!r}: "
                f"{dict(old).get(diff[0][0])} -> {dict(new).get(diff[0][0])}); "
                "it must fine-tune the weights in place, keeping every layer "
                "and shape"
            )
    raise UserFunctionError(
        "train_fn changed the order of the model's layers; it must fine-tune the weights in place"
    )


def missing_objectives(objectives: list[str], metrics: dict) -> None:
    """UserFunctionError when `metrics` lacks an objective's metric (a user metric eval_fn did not
    return): the trial fails with that reason instead of the search stopping at `tell`."""
    missing = [o for o in objectives if get_objective(o).key not in metrics]
    if missing:
        keys = ", ".join(repr(get_objective(o).key) for o in missing)
        raise UserFunctionError(
            f"eval_fn returned no {keys} (named as objective); it returned {sorted(metrics)}"
        )
