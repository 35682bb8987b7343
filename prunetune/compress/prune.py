"""Structured pruning: output channels (filters) physically removed from a copy of a model.

Every layer coupled to a removed channel shrinks with it (batch norms, the next layers' inputs, the
first linear after a flatten, residual adds, concatenations, depthwise and grouped convolutions),
so the result is a smaller dense model: fewer MACs, fewer parameters, faster on any runtime.

The number of channels a group keeps depends only on (ratio, round_to) -- see `kept_channels` --
never on the importance criterion or the data, so a pruned model's structure can be rebuilt from
its configuration alone and its saved state_dict loaded into it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from prunetune.compress.graph import Analysis, analyse
from prunetune.compress.importance import accumulate_gradients, get_importance
from prunetune.errors import ConfigError


@dataclass(frozen=True)
class PruneReport:
    """What `prune` did, attached to the pruned model as `prunetune_report`.

    `channels` maps every prunable group to (channels before, channels kept); `skipped` lists the
    conv/linear layers left unpruned with the reason (the classifier, layers coupled through ops
    torch-pruning cannot map, groups whose pruning failed)."""

    channels: dict[str, tuple[int, int]]
    skipped: tuple[tuple[str, str], ...]
    importance: str
    round_to: int

    @property
    def kept(self) -> dict[str, int]:
        return {name: after for name, (_, after) in self.channels.items()}


def check_ratio(value: object, what: str) -> float:
    """A pruning ratio as float; ConfigError unless it is a number in [0, 1)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0.0 <= value < 1.0
    ):
        raise ConfigError(f"pruning ratio for {what} must be a number in [0, 1), got {value!r}")
    return float(value)


def kept_channels(channels: int, ratio: float, round_to: int = 1, divisor: int = 1) -> int:
    """Channels a group of `channels` keeps at `ratio`: round-half-up of channels * (1 - ratio), at
    least 1; then rounded to the nearest multiple of lcm(round_to, divisor) (divisor: the groups of
    a grouped convolution), at least one multiple and at most the largest multiple <= channels.
    A ratio of 0 keeps every channel. When no multiple fits, round_to is not applied (and a group
    with a divisor keeps all its channels)."""
    if ratio == 0:
        return channels
    keep = max(1, math.floor(channels * (1.0 - ratio) + 0.5))
    step = math.lcm(round_to, divisor)
    top = channels // step * step
    if step == 1:
        return keep
    if top == 0:
        return channels if divisor > 1 else keep
    return min(top, max(step, step * math.floor(keep / step + 0.5)))


def prune(
    model: nn.Module,
    ratios: float | Mapping[str, float],
    example_input: torch.Tensor,
    *,
    importance: str = "l2",
    round_to: int = 1,
    data: Iterable | None = None,
    seed: int = 0,
) -> nn.Module:
    """A pruned deep copy of `model` (the model itself is untouched).

    ratios: one float for every prunable group, or {group name: ratio} (groups not named keep all
    their channels); group names are those of `inventory(model, example_input).groups`. Each ratio
    must be in [0, 1). importance: a registered criterion (`l1`, `l2`, `taylor`, `bn_scale`,
    `random`); `taylor` needs `data`, an iterable of (x, y) batches. seed: for `random`.

    Raises ConfigError for a bad ratio, round_to or group name (the message lists the valid
    groups) and for a model that is already quantized or masked; UnknownNameError for an unknown
    criterion. `example_input` (a batch) only fixes shapes; its values do not matter. Layers
    torch-pruning cannot handle are left unpruned instead of failing: see
    `pruned.prunetune_report` (a PruneReport)."""
    _check_float_model(model)
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ConfigError(f"round_to must be a positive integer, got {round_to!r}")
    criterion = get_importance(importance, seed=seed)
    work = copy.deepcopy(model)
    analysis = analyse(work, example_input)
    targets = resolve_ratios(ratios, analysis)
    counts = {
        g.name: kept_channels(g.channels, targets.get(g.name, 0.0), round_to, g.divisor)
        for g in analysis.prunable
    }
    plan = _plan(work, analysis, counts, criterion, data)
    expected = _output_shapes(work, example_input)
    pruned, failed = _execute(model, work, analysis, plan, counts, example_input, expected)
    pruned.train(model.training)
    pruned.prunetune_report = _report(analysis, counts, failed, importance, round_to)
    return pruned


def _plan(
    work: nn.Module, analysis: Analysis, counts: dict[str, int], criterion, data: Iterable | None
) -> dict:
    """{group name: channels to remove} of the groups that lose channels, ranked by `criterion`
    (gradients accumulated on `work` first when it needs them, and cleared after)."""
    todo = [g for g in analysis.prunable if counts[g.name] < g.channels]
    if todo and criterion.needs_gradients:
        accumulate_gradients(work, data)
    plan = {
        g.name: _channels_to_remove(
            criterion(g.full_group, g.name), g.channels, counts[g.name], g.divisor
        )
        for g in todo
    }
    for p in work.parameters():
        p.grad = None
    return plan


def _report(
    analysis: Analysis,
    counts: dict[str, int],
    failed: dict[str, str],
    importance: str,
    round_to: int,
) -> PruneReport:
    """What a prune did: channels before and after per group (a group torch-pruning failed on
    keeps all), and the layers left unpruned with the reason."""
    out_layers = {g.name: g.out_layers for g in analysis.groups}
    skipped = list(analysis.skipped) + [
        (layer, reason) for name, reason in failed.items() for layer in out_layers[name]
    ]
    kept = {
        g.name: (g.channels, g.channels if g.name in failed else counts[g.name])
        for g in analysis.prunable
    }
    return PruneReport(kept, tuple(skipped), importance, round_to)


def resolve_ratios(ratios: float | Mapping[str, float], analysis: Analysis) -> dict[str, float]:
    """{group name: ratio} for the prunable groups; ConfigError for bad names or values."""
    names = [g.name for g in analysis.prunable]
    if not isinstance(ratios, Mapping):
        ratio = check_ratio(ratios, "every group")
        return {name: ratio for name in names}
    out = {}
    for name, value in ratios.items():
        if name not in names:
            raise ConfigError(_unknown_group(name, analysis))
        out[name] = check_ratio(value, f"group {name!r}")
    return out


def _unknown_group(name: object, analysis: Analysis) -> str:
    valid = [g.name for g in analysis.prunable]
    listing = (
        f"prunable groups: {', '.join(valid)}" if valid else "this model has no prunable group"
    )
    reasons = dict(analysis.skipped)
    if name in reasons:
        return f"layer {name!r} cannot be pruned: {reasons[name]}; {listing}"
    for g in analysis.prunable:
        if name in g.out_layers:
            return (
                f"layer {name!r} is pruned together with its group {g.name!r}: give the ratio for "
                f"{g.name!r}; {listing}"
            )
    return f"unknown pruning group {name!r}; {listing}"


def _check_float_model(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module):
            raise ConfigError(
                f"layer {name!r} is already quantized, weight-shared or masked: prune the "
                f"float model first, then quantize"
            )


def _channels_to_remove(scores: torch.Tensor, channels: int, keep: int, divisor: int) -> list[int]:
    """The lowest-scored channels (ties: lower index first). With a divisor (grouped convs), scores
    are averaged over the convolution groups and the same positions go in every group."""
    per_group = channels // divisor
    local = scores.reshape(divisor, per_group).mean(0) if divisor > 1 else scores
    drop = torch.argsort(local, stable=True)[: (channels - keep) // divisor].tolist()
    return sorted(g * per_group + i for g in range(divisor) for i in drop)


class _GroupFailed(Exception):
    def __init__(self, name: str | None, reason: str) -> None:
        super().__init__(reason)
        self.name, self.reason = name, reason


def _execute(
    model: nn.Module,
    work: nn.Module,
    analysis: Analysis,
    plan: dict[str, list[int]],
    counts: dict[str, int],
    example_input: torch.Tensor,
    expected: list[tuple[int, ...]],
) -> tuple[nn.Module, dict[str, str]]:
    """Apply the plan to `work`. If a group fails (an exception, a broken forward pass), start over
    from a fresh copy of `model`, checking the forward pass after every group, and leave the
    failing groups unpruned. Returns the pruned model and {failed group: reason}."""
    failed: dict[str, str] = {}
    careful = False
    while True:
        try:
            _apply(
                {k: v for k, v in plan.items() if k not in failed},
                work,
                analysis,
                counts,
                example_input,
                expected,
                careful,
            )
            return work, failed
        except _GroupFailed as exc:
            if exc.name is None:
                careful = True
            else:
                failed[exc.name] = exc.reason
        work = copy.deepcopy(model)
        analysis = analyse(work, example_input)


def _apply(
    plan: dict[str, list[int]],
    work: nn.Module,
    analysis: Analysis,
    counts: dict[str, int],
    example_input: torch.Tensor,
    expected: list[tuple[int, ...]],
    careful: bool,
) -> None:
    graph, groups = analysis.graph, {g.name: g for g in analysis.groups}
    for name, idxs in plan.items():
        root = groups[name].root
        try:
            pruner = graph.get_pruner_of_module(root)
            graph.get_pruning_group(root, pruner.prune_out_channels, idxs).prune()
        except Exception as exc:  # noqa: BLE001 - reported, the group stays unpruned
            raise _GroupFailed(
                name, f"pruning failed ({type(exc).__name__}: {str(exc)[:160]})"
            ) from None
        width = pruner.get_out_channels(root)
        if width != counts[name]:
            raise _GroupFailed(
                name, f"torch-pruning kept {width} channels instead of {counts[name]}"
            )
        if careful and (problem := _forward_problem(work, example_input, expected)):
            raise _GroupFailed(name, f"pruning broke the forward pass ({problem})")
    if not careful and _forward_problem(work, example_input, expected):
        raise _GroupFailed(None, "forward pass broken")


def _forward_problem(
    model: nn.Module, example_input: torch.Tensor, expected: list[tuple[int, ...]]
) -> str | None:
    try:
        shapes = _output_shapes(model, example_input)
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {str(exc)[:160]}"
    return None if shapes == expected else f"output shapes {shapes} instead of {expected}"


@torch.no_grad()
def _output_shapes(model: nn.Module, example_input: torch.Tensor) -> list[tuple[int, ...]]:
    was_training = model.training
    model.eval()
    try:
        return [tuple(t.shape) for t in _tensors(model(example_input))]
    finally:
        model.train(was_training)


def _tensors(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _tensors(item)]
    return []
