"""Baseline strategies run through the search's own trial pipeline (`--strategy`).

`targets` (the default) builds the front at MACs targets (prunetune.spaces.targets and
prunetune.search.targets); `search` searches the per-group space as it is. The others replace the
space by a one-parameter *sweep* (prunetune.spaces.sweep.SweepSpace): each trial picks one target
from a grid, `StrategyAllocation` turns it into per-group ratios, and the trial is fine-tuned,
measured, stored and logged exactly like a search trial (same `run_trial`, same study, same MLflow
runs).

- `uniform`: the target is one ratio for every prunable group (clamped to each group's range).
- `global`: the target is torch-pruning's global pruning ratio: its pruner ranks the channels of
  all groups together (`global_pruning=True`, group L2 magnitude, per-group mean normalisation),
  so where a target lands is torch-pruning's decision; prunetune then removes those counts.
- `sensitivity`: the target is a mean ratio; each group's ratio is the target times a weight that
  is larger for groups whose accuracy drops less when pruned alone (`prunetune.sensitivity`),
  normalised so that the MACs-weighted mean of the weights is 1.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from prunetune.spaces import SearchSpace
from prunetune.spaces.allocation import AllocationSpace
from prunetune.spaces.sweep import SweepSpace

SENSITIVITY_RATIOS = (0.5, 0.8)  # the scan behind `sensitivity`: each group alone at these ratios
SENSITIVITY_VAL_IMAGES = 250  # ... scored on this many validation images (no fine-tuning)


@dataclass
class StrategyAllocation:
    """A baseline strategy's per-group ratios at a sweep target (a SweepSpace's `allocate`):
    `uniform` the target everywhere, `global` torch-pruning's global ranking, `sensitivity` the
    target times the group's sensitivity weight (the scan runs on first use). Picklable (Ray ships
    it to workers)."""

    strategy: str
    inner: SearchSpace
    model: nn.Module | None = None
    example: torch.Tensor | None = None
    bundle: object | None = None
    _weights: dict | None = field(default=None, repr=False)

    def __call__(self, target: float) -> dict[str, float]:
        searched = [n for n, g in self.inner.groups.items() if g.high > 0.0]
        if self.strategy == "uniform":
            return {n: target for n in searched}
        if self.strategy == "global":
            return global_ratios(self.model, self.example, self.inner, target)
        if self._weights is None:
            self._weights = sensitivity_weights(self.model, self.bundle, self.inner)
        return {n: target * w for n, w in self._weights.items()}


def make_space(cfg, space: SearchSpace, model: nn.Module, example: torch.Tensor, bundle):
    """The space of cfg.plan.strategy: `space` itself for `search`, its TargetSpace for `targets`
    (prunetune.spaces.targets), else its SweepSpace over the ratio grid (multiples of the step
    from the groups' lowest ratio, above 0, to their highest)."""
    if cfg.plan.strategy == "search":
        return AllocationSpace(space) if cfg.plan.parametrization == "allocation" else space
    if cfg.plan.strategy == "targets":
        from prunetune.compress import inventory
        from prunetune.spaces.targets import make_target_space

        return make_target_space(space, model, example, inventory(model, example), cfg.plan.targets)
    searched = [g for g in space.groups.values() if g.high > 0.0]
    high = max((g.high for g in searched), default=0.0)
    low = min((g.low for g in searched), default=0.0)
    step = space.ratio_step
    first = max(1, math.ceil(low / step - 1e-9))  # targets from the ranges' lowest ratio (above 0)
    grid = [round(step * i, 6) for i in range(first, int(high / step + 1e-9) + 1)] or [0.0]
    allocate = StrategyAllocation(
        cfg.plan.strategy, space, model=model, example=example, bundle=bundle
    )
    return SweepSpace(cfg.plan.strategy, space, grid, allocate)


def global_ratios(
    model: nn.Module, example: torch.Tensor, space: SearchSpace, target: float
) -> dict[str, float]:
    """Per-group ratios torch-pruning's global ranking gives at pruning ratio `target`: its
    MetaPruner with global_pruning=True on a copy of `model`, the layers prunetune leaves alone
    ignored, each group capped at the space's largest ratio."""
    import torch_pruning as tp

    from prunetune.compress.graph import analyse

    work = copy.deepcopy(model).eval()
    analysis = analyse(work, example)
    modules = dict(work.named_modules())
    prunable = {g.name for g in analysis.prunable if g.name in space.groups}
    ignored = [
        m
        for n, m in modules.items()
        if isinstance(m, nn.Conv2d | nn.Linear)
        and not any(n in g.out_layers for g in analysis.prunable if g.name in prunable)
    ]
    before = {g.name: g.channels for g in analysis.prunable if g.name in prunable}
    p = 1 if space.importance[0] == "l1" else 2
    cap = max((space.groups[n].high for n in prunable), default=0.0)
    pruner = tp.pruner.MetaPruner(
        work,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=p),
        pruning_ratio=target,
        global_pruning=True,
        max_pruning_ratio=cap,
        ignored_layers=ignored,
    )
    pruner.step()
    out = {}
    for name, channels in before.items():
        root = modules[name]
        kept = root.out_channels if isinstance(root, nn.Conv2d) else root.out_features
        out[name] = 1.0 - kept / channels
    return out


def sensitivity_weights(model: nn.Module, bundle, space: SearchSpace) -> dict[str, float]:
    """Weight per searched group: 1 / (mean accuracy drop when pruned alone + 0.01), scaled so the
    MACs-weighted mean weight is 1 (a target t then prunes about t of the MACs-weighted
    channels)."""
    from torch.utils.data import Subset

    from prunetune import sensitivity

    groups = [n for n, g in space.groups.items() if g.high > 0.0]
    val = Subset(bundle.val, range(min(SENSITIVITY_VAL_IMAGES, len(bundle.val))))
    rows = sensitivity.scan(
        model,
        _Bundle(bundle, val),
        groups,
        list(SENSITIVITY_RATIOS),
        importance=space.importance[0],
    )
    drop = {
        g: sum(max(r["drop"], 0.0) for r in rows if r["group"] == g) / len(SENSITIVITY_RATIOS)
        for g in groups
    }
    raw = {g: 1.0 / (drop[g] + 0.01) for g in groups}
    shares = {g: max(space.groups[g].macs_share, 1e-6) for g in groups}
    mean = sum(raw[g] * shares[g] for g in groups) / sum(shares.values())
    return {g: raw[g] / mean for g in groups}


class _Bundle:
    """A DataBundle seen through another validation split (the scan reads .val and
    example_input)."""

    def __init__(self, bundle, val) -> None:
        self._bundle, self.val = bundle, val

    def example_input(self, n: int) -> torch.Tensor:
        return self._bundle.example_input(n)
